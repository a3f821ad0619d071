"""HiDream-I1 (HiDreamImageTransformer2DModel): not served, see the reason below."""

ENTRIES = []

UNSUPPORTED = {
    "HiDreamImageTransformer2DModel": (
        "the pipeline passes 4-D latents, which `forward` patchifies (a method, not a module) into image tokens, "
        "image position ids and, for non-square images, a padding mask, and concatenates the ids with the text's "
        "before the one rotary module sees them: the dual-stream blocks attend over the local [image, text] "
        "shards, so their rotary table (one [image, text] tensor) would need its image and text parts split "
        "separately, which no ContextParallelInput can do; splitting the concatenated tensor as a whole puts "
        "image rows against text tokens (needs: a split spec for one tensor that holds several token streams back "
        "to back, splitting each stream like its tokens and concatenating the shards, e.g. "
        "ContextParallelInput(split_dim=1, segments=...) with the stream lengths read from other inputs)"
    ),
}
