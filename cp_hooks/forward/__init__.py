"""The per-forward machinery: hooks on modules, the forward context, split / gather with autograd, cfg."""
