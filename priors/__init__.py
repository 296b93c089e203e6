"""Package data: priors (see inversa.resources)."""
