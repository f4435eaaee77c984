"""tinynet: a from-scratch engine for second-order optimization of deep nets,
with Numba kernels (`@njit` on the CPU, `@cuda.jit` on NVIDIA GPUs) and every
matrix of the math explicit and checkable. See DESIGN.md and README.md."""
from tinynet.backend import get_backend
from tinynet.layers import Identity, Linear, ReLU, Sigmoid, Stage, Tanh
from tinynet.losses import BCELoss, Loss, MSELoss, SoftmaxCrossEntropyLoss
from tinynet.network import Sequential

__version__ = "0.1.0"

__all__ = [
    "Sequential", "Stage", "Linear", "Sigmoid", "Tanh", "ReLU", "Identity",
    "Loss", "MSELoss", "BCELoss", "SoftmaxCrossEntropyLoss", "get_backend",
]
