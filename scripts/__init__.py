"""Developer scripts (docs generators)."""
