"""Linear forward models (``LinearOperator``) and the CT projectors; see docs/conventions.md."""

from inversa.models.physics.base import Gradient2D, Identity, LinearOperator, MatrixOperator
from inversa.models.physics.espirit import espirit_maps
from inversa.models.physics.mri import SenseOperator, channels_to_image, fft2c, ifft2c, image_to_channels
from inversa.models.physics.tomography import CTGeometry, FanBeam2D, ParallelBeam2D, Tomography2D, ct_operator

__all__ = [
    "LinearOperator", "MatrixOperator", "Identity", "Gradient2D",
    "CTGeometry", "Tomography2D", "ParallelBeam2D", "FanBeam2D", "ct_operator",
    "SenseOperator", "fft2c", "ifft2c", "image_to_channels", "channels_to_image", "espirit_maps",
]
