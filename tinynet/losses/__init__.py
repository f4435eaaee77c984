"""Loss stages, one file per kind. Registry: `LOSSES`."""
from tinynet.losses.base import Loss
from tinynet.losses.bce import BCELoss
from tinynet.losses.mse import MSELoss
from tinynet.losses.softmax_ce import SoftmaxCrossEntropyLoss

LOSSES = {"mse": MSELoss, "bce": BCELoss, "softmax_ce": SoftmaxCrossEntropyLoss}

__all__ = ["Loss", "MSELoss", "BCELoss", "SoftmaxCrossEntropyLoss", "LOSSES"]
