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
    "HunyuanVideoTransformer3DModel": (
        "the text padding mask is needed whole by the token refiner (a query x key mask and a masked mean over "
        "the text) and split by the blocks (`forward` builds their [video, text] mask from the *local* lengths "
        "and `encoder_attention_mask.sum()`), but it is one forward input; it needs a plan spec that gathers a "
        "module's input (a small core addition), not yet available"
    ),
    "LTXVideoTransformer3DModel": (
        "its processor expands the text padding mask to (batch, heads, 1, keys) before attention, and cp_hooks "
        "refuses masks with a heads dimension (it cannot tell a per-head mask from a repeated one without "
        "reading values); needs the core to accept head-repeated key-padding masks"
    ),
}
