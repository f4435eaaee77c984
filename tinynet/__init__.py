"""tinynet: a from-scratch engine for second-order optimization of deep nets,
with Numba kernels (`@njit` on the CPU, `@cuda.jit` on NVIDIA GPUs) and every
matrix of the math explicit and checkable. See DESIGN.md and README.md."""
from tinynet.backend import get_backend
from tinynet.layers import AvgPool2d, BatchNorm, BatchNorm2d, Conv2d, Flatten, Identity, Linear, MaxPool2d, MeanOnlyBatchNorm, ReLU, Sigmoid, Stage, Tanh
from tinynet.layers import PCADenoising, ZCAWhitening
from tinynet.losses import BCELoss, Loss, MSELoss, SoftmaxCrossEntropyLoss
from tinynet.network import Sequential

from tinynet import curvature, models, optim, train  # noqa: E402  (tn.optim, tn.train, ... after `import tinynet as tn`)

__version__ = "0.1.0"

__all__ = [
    "Sequential", "Stage", "Linear", "Conv2d", "MaxPool2d", "AvgPool2d", "Flatten", "BatchNorm", "BatchNorm2d", "MeanOnlyBatchNorm", "Sigmoid", "Tanh", "ReLU", "Identity",
    "ZCAWhitening", "PCADenoising",
    "Loss", "MSELoss", "BCELoss", "SoftmaxCrossEntropyLoss", "get_backend",
    "curvature", "optim", "models", "train",
]
