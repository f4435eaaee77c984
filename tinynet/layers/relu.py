"""Rectifier stage: r = max(z, 0); f' = [z > 0] (0 at z = 0); f'' = 0."""
from tinynet.layers.activation import Activation


class ReLU(Activation):
    kind = "relu"
