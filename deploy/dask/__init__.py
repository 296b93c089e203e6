"""Package data: deploy/dask (see inversa.resources)."""
