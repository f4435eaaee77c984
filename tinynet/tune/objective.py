"""A tinynet training run as a search objective: what `tinynet tune` runs per trial.

`TrainObjective(model, optimizer, steps, ...)(params)` builds the model (fresh
initialization from `seed`), the optimizer and a TrainConfig with nothing
written to disk, trains, and returns an Outcome whose cost is the final loss
on the training set (the thesis's criterion, 4.1.1: the empirical risk after a
fixed budget) or on the test set (`cost="test"`).

The names in `params` are those of `tinynet train`'s options, underscored:
  lr                     the optimizer's learning rate
  init_scale             alpha of the initialization: Var W = alpha x Glorot's / He's (thesis 2.4.2)
  batch_size             the minibatch size
  batchnorm, pool, ...   the model's architecture options (tinynet.models.MODEL_OPTIONS)
  anything else          an optimizer hyperparameter (its __init__ name: momentum, eps, T, alpha, ...)
"""
import math
from dataclasses import dataclass, field

import numpy as np

from tinynet.tune.search import Outcome

INFO_COLUMNS = ("train_loss", "test_loss", "test_error", "steps", "stop_reason")
RUN_PARAMS = ("lr", "init_scale", "batch_size")   # the trial's run settings; other names: model / optimizer
_DATA = {}     # per process: (dataset, data_dir) -> data, read once for all the trials a worker runs


def _data(dataset, data_dir):
    from tinynet.data import load_dataset
    key = (dataset, data_dir)
    if key not in _DATA:
        _DATA[key] = {"train": load_dataset(dataset, "train", data_dir),
                      "test": load_dataset(dataset, "test", data_dir)}
    return _DATA[key]


@dataclass
class TrainObjective:
    model: str = "mnist-autoencoder"
    optimizer: str = "sgd"
    steps: int | None = 100
    time_budget: float | None = None
    batch_size: int = 200
    seed: int = 0
    dtype: str = "float32"
    eval_subset: int | None = None
    cost: str = "train"                                   # "train" or "test"
    options: dict = field(default_factory=dict)           # fixed optimizer options
    model_options: dict = field(default_factory=dict)     # fixed architecture options
    init_scale: float | None = None
    lr: float | None = None
    data_dir: str | None = None
    divergence_factor: float = 100.0

    def __post_init__(self):
        if self.cost not in ("train", "test"):
            raise ValueError(f"cost must be 'train' or 'test', got {self.cost!r}")

    def split(self, params):
        """params -> (lr, init_scale, batch_size, model options, optimizer options)."""
        from tinynet.models import MODEL_OPTIONS
        arch = dict(self.model_options)
        opts = dict(self.options)
        lr, scale, bs = self.lr, self.init_scale, self.batch_size
        for k, v in params.items():      # RUN_PARAMS first
            if k == "lr":
                lr = float(v)
            elif k == "init_scale":
                scale = float(v)
            elif k == "batch_size":
                bs = int(v)
            elif k in MODEL_OPTIONS.get(self.model, {}):
                arch[k] = v
            else:
                opts[k] = v
        return lr, scale, bs, arch, opts

    def build(self, params):
        """(net, optimizer, config) of one trial; ValueError for a bad option."""
        from tinynet.models import build_model
        from tinynet.optim import build_optimizer
        from tinynet.train import TrainConfig
        lr, scale, bs, arch, opts = self.split(params)
        if scale is not None and not scale > 0:
            raise ValueError(f"init_scale must be > 0, got {scale}")
        net = build_model(self.model, dtype=np.dtype(self.dtype).type, seed=self.seed, alpha=scale, **arch)
        opt = build_optimizer(self.optimizer, net, lr, defaults={"seed": self.seed}, **opts)
        cfg = TrainConfig(batch_size=bs, steps=self.steps, time_budget=self.time_budget,
                          eval_every=max(1, int(self.steps or 10 ** 9)), eval_subset=self.eval_subset,
                          seed=self.seed, out=None, progress=False, divergence_factor=self.divergence_factor)
        return net, opt, cfg

    def __call__(self, params):
        from tinynet.models import DATASET
        from tinynet.train import train
        net, opt, cfg = self.build(params)
        res = train(net, opt, _data(DATASET[self.model], self.data_dir), cfg)
        info = {"train_loss": res.train_loss, "test_loss": res.test_loss, "test_error": res.test_error,
                "steps": res.step, "stop_reason": res.stop_reason}
        cost = res.train_loss if self.cost == "train" else res.test_loss
        if res.stop_reason == "diverged" or cost is None or not math.isfinite(cost):
            return Outcome(math.inf, "diverged", info, error=res.message.splitlines()[0] if res.message else "")
        if res.stop_reason == "interrupted":
            raise KeyboardInterrupt   # not a result: the trial is run again on resume
        return Outcome(float(cost), "ok", info)
