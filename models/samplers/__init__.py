"""Reconstruction methods behind one interface (``Sampler.sample``), looked up by recipe name.

Point estimates (FBP, Tikhonov by CGLS, TV by primal-dual; for MRI zero-filled, CG-SENSE and
L1-wavelet CS) and posterior samplers answer the same call with the same ``SampleResult``, so
the pipeline treats them alike; ``REGISTRY`` maps a recipe's method name to the class whose
constructor keywords are the method's parameters. Samplers built on a trained prior take it by
the keyword their class names (``prior_param``: ``denoiser=`` for diffusion, ``flow=`` for
FlowDPS, ``vae=`` for the VAE methods); turning a recipe's checkpoint path into that prior is
file work and belongs to ``tasks.core.methods``, so the registry holds classes only.
"""

from .base import SampleResult, Sampler, StepCallback
from .cgls import Tikhonov
from .diffusion import DDS, DPS, DiffusionSampler, REDDiff
from .fbp import FBP, fbp_reconstruct
from .flow import FlowDPS
from .gaussian import GaussianPosterior
from .mri import CGSense, L1WaveletCS, ZeroFilled
from .tv import TV
from .vae import VBLE, LatentLangevin, PnPHVAE, VAESampler

REGISTRY: dict[str, type[Sampler]] = {
    FBP.name: FBP,
    Tikhonov.name: Tikhonov,
    TV.name: TV,
    GaussianPosterior.name: GaussianPosterior,
    DPS.name: DPS,
    DDS.name: DDS,
    REDDiff.name: REDDiff,
    FlowDPS.name: FlowDPS,
    VBLE.name: VBLE,
    PnPHVAE.name: PnPHVAE,
    LatentLangevin.name: LatentLangevin,
    ZeroFilled.name: ZeroFilled,
    CGSense.name: CGSense,
    L1WaveletCS.name: L1WaveletCS,
}

__all__ = [
    "REGISTRY", "Sampler", "SampleResult", "StepCallback", "FBP", "fbp_reconstruct", "GaussianPosterior",
    "Tikhonov", "TV", "DiffusionSampler", "DPS", "DDS", "REDDiff", "ZeroFilled", "CGSense", "L1WaveletCS",
    "FlowDPS", "VAESampler", "VBLE", "PnPHVAE", "LatentLangevin",
]
