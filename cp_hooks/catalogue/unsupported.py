"""Classes tried and found impossible to express as a plan with the present core (the reason, precisely)."""

ENTRIES = []

UNSUPPORTED = {
    "SanaTransformer2DModel": (
        "its self-attention is ReLU linear attention (global sums over all keys computed with matmuls, not SDPA, "
        "so nothing routes them), and its feed-forward (GLUMBConv) reshapes the tokens to (height, width) for a "
        "3x3 depthwise convolution; both need every token of the image, so a plan could only gather around each "
        "of them and nothing would run in parallel"
    ),
    "Cosmos3OmniTransformer": (
        "packed dual-pathway sequences with grouped-query attention and ragged lengths; diffusers itself says "
        "its context parallelism cannot be a declarative plan (it uses shard/gather callbacks instead)"
    ),
    "HunyuanVideo15Transformer3DModel": (
        "its attention processor turns the text padding mask into a (batch, 1, S, S) query x key mask "
        "(mask[q] & mask[k]) inside the processor, after every point a plan can reach, and cp_hooks accepts only "
        "key-padding masks; every block attends with it. Supporting it needs the core to recognise that outer "
        "product as a key-padding mask (the rows of padded queries are fully masked)"
    ),
}
