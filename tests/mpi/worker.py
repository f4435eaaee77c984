"""One data-parallel training run for tests/mpi: `mpirun -n P python worker.py
SPEC.json` (or run() in the test process for one rank). SPEC: optimizer name
and options, steps, out (run folder or null), resume, result (where rank 0
writes theta and the communication account as .npz / .json), and test hooks:
"pidfile" (each rank writes its pid there, suffixed by rank), "fail_rank" /
"fail_step" (that rank raises at that step), "sleep" (seconds per step, so a
test can kill a rank mid-run)."""
import json
import os
import sys
import time

import numpy as np

from tinynet.distributed import get_comm
from tinynet.distributed.failure import ending_every_rank_on_failure
from tinynet.layers import (BatchNorm, BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, MeanOnlyBatchNorm, Sigmoid,
                            Tanh)
from tinynet.losses import MSELoss, SoftmaxCrossEntropyLoss
from tinynet.network import Sequential
from tinynet.optim import build_optimizer
from tinynet.train import TrainConfig, train


def problem(kind="autoencoder"):
    """A small float64 net and data: a 12-6-3-6-12 autoencoder on uniform data
    (kind "batchnorm" / "mean-only": with that batch norm after the first
    layer), a 12-8-4 classifier (softmax cross-entropy) on random labels, or
    "cnn": tinynet.models.tiny_cnn (two convolutions, a pooling) on random images,
    "cnn-bn": a convolution with BatchNorm2d."""
    rng = np.random.default_rng(0)
    X = rng.random((96, 12))
    if kind == "cnn":                     # tinynet.models.tiny_cnn on random 7x7 images
        from tinynet.models import tiny_cnn
        y = rng.integers(0, 10, size=96)
        return tiny_cnn(dtype=np.float64, seed=1), {"train": (rng.random((96, 49)), y), "test": None}
    if kind == "cnn-bn":                  # a convolution with BatchNorm2d (synchronized)
        y = rng.integers(0, 10, size=96)
        net = Sequential([Conv2d(1, 2, 2), BatchNorm2d(2), Tanh(), MaxPool2d(2), Flatten(), Linear(18, 10)],
                         SoftmaxCrossEntropyLoss(), dtype=np.float64, seed=1, input_shape=(1, 7, 7))
        return net, {"train": (rng.random((96, 49)), y), "test": None}
    if kind == "classifier":
        y = rng.integers(0, 4, size=96)
        net = Sequential([Linear(12, 8), Tanh(), Linear(8, 4)], SoftmaxCrossEntropyLoss(),
                         dtype=np.float64, seed=1)
        return net, {"train": (X, y), "test": None}
    bn = {"batchnorm": [BatchNorm(6)], "mean-only": [MeanOnlyBatchNorm(6)]}.get(kind, [])
    net = Sequential([Linear(12, 6), *bn, Tanh(), Linear(6, 3), Sigmoid(), Linear(3, 6), Tanh(), Linear(6, 12)],
                     MSELoss(), dtype=np.float64, seed=1)
    return net, {"train": (X, X), "test": None}


class _Hooks:
    """Wraps optimizer.step for the fault tests."""

    def __init__(self, opt, comm, spec):
        self.opt, self.comm, self.spec = opt, comm, spec
        self.inner = opt.step

    def __call__(self, X, Y):
        if self.spec.get("fail_rank") == self.comm.rank and self.opt.k == self.spec.get("fail_step"):
            raise RuntimeError(f"injected failure on rank {self.comm.rank} at update {self.opt.k + 1}")
        if self.spec.get("sleep"):
            time.sleep(self.spec["sleep"])
        return self.inner(X, Y)


def run(spec, comm):
    net, data = problem(spec.get("problem", "autoencoder"))
    opts = dict(spec.get("options", {}))
    opt = build_optimizer(spec["optimizer"], net, opts.pop("lr", 0.1), **opts)
    opt.step = _Hooks(opt, comm, spec)
    if spec.get("pidfile"):
        with open(f"{spec['pidfile']}.{comm.rank}", "w") as f:
            f.write(str(os.getpid()))
    cfg = TrainConfig(batch_size=spec.get("batch_size", 24), steps=spec["steps"], eval_every=spec.get("eval_every", 3),
                      progress=False, seed=3, out=spec.get("out"), resume=spec.get("resume", False))
    res = train(net, opt, data, cfg, comm=comm)
    return net, res


def main(path):
    with open(path) as f:
        spec = json.load(f)
    comm = get_comm("mpi")
    with ending_every_rank_on_failure(comm):
        net, res = run(spec, comm)
    if comm.rank == 0 and spec.get("result"):
        np.save(spec["result"] + ".npy", net.get_flat())
        with open(spec["result"] + ".json", "w") as f:
            json.dump(dict(ranks=comm.size, steps=comm.account.steps, total=comm.account.total,
                           calls=comm.account.calls, steps_with=comm.account.steps_with,
                           stop_reason=res.stop_reason, step=res.step, train_loss=res.train_loss,
                           buffers={k: np.asarray(v).tolist() for k, v in net.buffers().items()}), f)


if __name__ == "__main__":
    main(sys.argv[1])
