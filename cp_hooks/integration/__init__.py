"""Routing a model's attention calls into context-parallel attention (diffusers processors, plain SDPA)."""
