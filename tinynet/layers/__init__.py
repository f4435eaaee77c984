"""Stages, one file per kind. Registry: `STAGES` maps the names the CLI and the
model builders use to the classes."""
from tinynet.layers.base import Stage
from tinynet.layers.batchnorm import BatchNorm, MeanOnlyBatchNorm
from tinynet.layers.batchnorm2d import BatchNorm2d
from tinynet.layers.conv2d import Conv2d
from tinynet.layers.flatten import Flatten
from tinynet.layers.identity import Identity
from tinynet.layers.linear import Linear
from tinynet.layers.maxpool2d import MaxPool2d
from tinynet.layers.avgpool2d import AvgPool2d
from tinynet.layers.relu import ReLU
from tinynet.layers.sigmoid import Sigmoid
from tinynet.layers.tanh import Tanh
from tinynet.layers.zca import ZCAWhitening
from tinynet.layers.pca import PCADenoising

ACTIVATIONS = {"sigmoid": Sigmoid, "tanh": Tanh, "relu": ReLU, "identity": Identity}
STAGES = dict(linear=Linear, **ACTIVATIONS)
STAGES.update({"batchnorm": BatchNorm, "mean-only-batchnorm": MeanOnlyBatchNorm})   # issue 6
STAGES.update({"conv2d": Conv2d, "flatten": Flatten})   # issue 11
STAGES.update({"maxpool2d": MaxPool2d, "avgpool2d": AvgPool2d})   # issue 11
STAGES["batchnorm2d"] = BatchNorm2d   # issue 11
STAGES.update({"zca": ZCAWhitening, "pca": PCADenoising})   # issue 16

__all__ = ["Stage", "Conv2d", "MaxPool2d", "AvgPool2d", "Flatten", "BatchNorm", "BatchNorm2d", "MeanOnlyBatchNorm", "Linear", "Sigmoid", "Tanh", "ReLU", "Identity", "ZCAWhitening", "PCADenoising", "ACTIVATIONS", "STAGES"]
