"""inversa: uncertainty-aware reconstruction pipelines for scientific inverse problems.

One installed namespace over the repository's top-level folders (pyproject.toml maps them):
``inversa.data`` (measurements in, results out), ``inversa.models`` (the science),
``inversa.tasks`` (application code per problem kind and the Prefect tasks around it),
``inversa.flows`` (Prefect flows and the command line), and the shipped resources
``inversa.recipes``, ``inversa.priors`` and ``inversa.deploy`` (found through
``inversa.resources``, so an installed wheel works outside a checkout).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("inversa")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
