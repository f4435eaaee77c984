"""Hyperbolic tangent stage: t = tanh z; f' = 1 - t^2; f'' = -2t(1 - t^2)."""
from tinynet.layers.activation import Activation


class Tanh(Activation):
    kind = "tanh"
