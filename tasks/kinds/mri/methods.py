"""MRI reconstruction methods: the samplers an MRI recipe may name (tasks/core/methods.py does the work).

Every one works on the real view of the SENSE operator (docs/conventions.md, "MRI"): zero-filled
and CG-SENSE are the classical baselines, ``cs`` is L1-wavelet compressed sensing, and the
diffusion samplers draw posterior samples with a prior on complex images (real and imaginary
parts as two channels).
"""

from __future__ import annotations

from inversa.tasks.core.methods import MethodCatalogue

MRI_METHODS = MethodCatalogue(("zero-filled", "cg-sense", "cs", "dds", "dps", "flowdps", "vble", "pnp-hvae",
                                "vae-langevin"), example_prior="priors/mri-brain-64")
