"""Package data: deploy (see inversa.resources)."""
