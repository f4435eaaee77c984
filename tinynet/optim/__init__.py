"""Optimizers, one file per method, all with `step(X, Y) -> loss`.
Registry: `OPTIMIZERS` (CLI name -> class). Later methods add their entry here."""
from tinynet.optim.adam import Adam
from tinynet.optim.base import Optimizer
from tinynet.optim.rmsprop import RMSProp
from tinynet.optim.schedules import SCHEDULES, make_schedule
from tinynet.optim.sgd import SGD

OPTIMIZERS = {"sgd": SGD, "rmsprop": RMSProp, "adam": Adam}

__all__ = ["Optimizer", "SGD", "RMSProp", "Adam", "OPTIMIZERS", "SCHEDULES", "make_schedule"]
