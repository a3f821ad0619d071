"""The only code that patches torch or diffusers (see the docstring of each module)."""
