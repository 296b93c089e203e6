"""Package data: recipes (see inversa.resources)."""
