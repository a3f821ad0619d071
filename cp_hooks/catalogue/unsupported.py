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
}
