"""Ideogram 4 (Ideogram4Transformer2DModel): not served, see the reason below (needs a change in cp_hooks' core).

The model runs one packed sequence [left-padded text, image] per sample, and its attention mask is built in
`forward` from `segment_ids` as `seg[q] == seg[k]` (B, 1, S, S): Ideogram4Pipeline's conditional call gives the
padding segment -1, so padding tokens attend only to each other and the prompt and image only to themselves.
That mask varies along queries, so it cannot travel with key blocks. Splitting `segment_ids` with the tokens
is not a way out: each rank would build only its diagonal block of the mask, and a rank holding one segment
sees an all-True block that reads as "no mask" — a silently wrong result whenever the padding and the prompt
fall on different ranks. (The unconditional, image-only call has a single segment and would be exact, but a
plan is per class and cannot tell the two calls apart.)
"""

ENTRIES = []

UNSUPPORTED = {
    "Ideogram4Transformer2DModel": (
        "its packed [left-padded text, image] sequence is masked by segment equality seg[q] == seg[k], built in "
        "forward (the pipeline's text padding is its own segment), a mask that varies along queries; split segment "
        "ids would give each rank only its diagonal block, silently wrong when a rank holds a single segment "
        "(needs: segment-id attention masks in the Ulysses and ring kernels, per-token segment ids carried with "
        "the query and key blocks)"
    ),
}
