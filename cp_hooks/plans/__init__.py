"""Plans: specs, the registry, name resolution, and one file per model family."""
