"""Cosmos: Cosmos 3 Omni is not served, see the reason below."""

ENTRIES = []

UNSUPPORTED = {
    "Cosmos3OmniTransformer": (
        "packed dual-pathway sequences with grouped-query attention and ragged lengths; diffusers itself says "
        "its context parallelism cannot be a declarative plan (it uses shard/gather callbacks instead)"
    ),
}
