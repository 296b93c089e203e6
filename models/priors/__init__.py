"""Diffusion priors: noise schedules kept apart from the denoisers that use them.

A sampler needs only a denoiser ``denoiser(x_t, sigma) -> x0_hat`` (``x_t`` of shape
``(B, H, W)``, ``sigma`` a scalar or ``(B,)`` tensor, variance-exploding convention
``x_t = x0 + sigma * eps``) and a list of noise levels; any network (``DiffusionPrior``: a
U-Net with EDM preconditioning, in physical units), or the exact Gaussian denoiser used as a
prior with a known answer, can stand behind that call.
"""

from .gaussian_denoiser import GaussianDenoiser
from .families import FAMILY_NAMES, PriorFamily, family, family_of, prior_from_checkpoint
from .prior import DiffusionPrior, build_denoiser
from .schedule import ddim_step, epsilon_from_x0, sigmas
from .training import Trainer, TrainingConfig, edm_loss
from .unet import EDMDenoiser, UNet, UNetConfig

__all__ = ["DiffusionPrior", "EDMDenoiser", "GaussianDenoiser", "Trainer", "TrainingConfig", "UNet", "UNetConfig",
           "build_denoiser", "ddim_step", "edm_loss", "epsilon_from_x0", "sigmas",
           "FAMILY_NAMES", "PriorFamily", "family", "family_of", "prior_from_checkpoint"]
