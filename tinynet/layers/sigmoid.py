"""Logistic sigmoid stage: s = 1 / (1 + e^{-z}); f' = s(1-s); f'' = s(1-s)(1-2s)."""
from tinynet.layers.activation import Activation


class Sigmoid(Activation):
    kind = "sigmoid"
