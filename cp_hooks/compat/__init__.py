"""Composition with the diffusers stack: caches, offloading, sequential guidance, diffusers' configs."""
