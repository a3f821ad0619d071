"""OmniGen (OmniGenTransformer2DModel): not served, see the reason below (needs a change in cp_hooks' core).

OmniGenPipeline's processor builds a (B, S, S) attention mask over [condition tokens, time token, image
tokens]: causal over the condition and time tokens, bidirectional within the image, with left padding masked
both ways (`OmniGenMultiModalProcessor.create_mask`). `forward` turns it into an additive (B, 1, S, S) mask for
every block. It varies along queries, so it cannot be split with key blocks (only key-padding masks can).
"""

ENTRIES = []

UNSUPPORTED = {
    "OmniGenTransformer2DModel": (
        "the pipeline's attention mask is block-causal, (B, S, S): causal over the condition and time tokens, "
        "bidirectional within the image, padding masked both ways; it varies along queries (needs: general "
        "query x key masks in the Ulysses and ring kernels, the mask's rows split with the queries and its "
        "columns carried with the key blocks)"
    ),
}
