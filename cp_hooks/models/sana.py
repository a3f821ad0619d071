"""Sana (SanaTransformer2DModel): not served, see the reason below."""

ENTRIES = []

UNSUPPORTED = {
    "SanaTransformer2DModel": (
        "its self-attention is ReLU linear attention (global sums over all keys computed with matmuls, not SDPA, "
        "so nothing routes them), and its feed-forward (GLUMBConv) reshapes the tokens to (height, width) for a "
        "3x3 depthwise convolution; both need every token of the image, so a plan could only gather around each "
        "of them and nothing would run in parallel"
    ),
}
