"""The optimizer interface every method shares.

An optimizer is built on a network (`Optimizer(net, lr, ...)`) and exposes
`step(X, Y) -> loss`: one update from the minibatch (X, Y), returning the
minibatch loss at the parameters *before* the update. It owns whatever passes
it needs (forward, backward, curvature products). `state_dict()` /
`load_state_dict()` carry everything needed to resume bit-for-bit (host
arrays and numbers); `metrics` holds optional per-step diagnostics that the
trainer writes next to the loss.

Every subclass's `step` is guarded (`_guard_step`, installed by
__init_subclass__, so no method can forget it): a minibatch holding NaN or
inf is refused before anything changes (one reduction of X and of Y), and,
with `guard = "full"` (the default), a step that would leave a non-finite
parameter puts the parameters back as they were and raises NonFiniteError
(one copy of theta kept, one reduction of it after the step: 2-8% of a step
on the MNIST autoencoder at one thread, SGD 2.4%, KFAC 5.5%, Adam 8%,
benchmarks/guard_overhead.py). tinynet.train
sets `guard = "inputs"`: it stops on the next step's non-finite loss and never
writes such parameters to a checkpoint, so it need not pay for the copy.
Arrays already on a GPU are not checked: each check would be a device-to-host
round trip, and a step returns only its loss to the host (the trainer's checks
of that loss and of the evaluations still apply).
Hyperparameters are checked in each constructor with `check_range`, whose
message names the option, its `tinynet train` flag and the valid range.
"""
import functools
import math

import numpy as np

from tinynet.network import all_finite as _all_finite

# python name -> `tinynet train` flag where they differ (cli/train.py)
FLAGS = {"T": "--amortize", "alpha": "--acp-alpha", "step_scale": "--acp-step-scale"}


class NonFiniteError(FloatingPointError):
    """A step would have written non-finite parameters; they were not written."""


def check_range(who, name, value, lo=None, hi=None, *, lo_open=False, hi_open=False, integer=False):
    """Raise ValueError unless `value` is a finite number (an integer when
    `integer`) in the interval [lo, hi] (open ends where asked). The message
    is one line: who, the option and its flag, the interval, the value."""
    flag = FLAGS.get(name, "--" + name.replace("_", "-"))
    left = "-inf" if lo is None else f"{lo:g}"
    right = "inf" if hi is None else f"{hi:g}"
    interval = f"{'(' if lo_open or lo is None else '['}{left}, {right}{')' if hi_open or hi is None else ']'}"
    kind = "an integer" if integer else "a number"
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: {name} ({flag}) must be {kind} in {interval}, got {value!r}") from None
    ok = math.isfinite(v) and (not integer or v == int(v))
    if ok and lo is not None:
        ok = v > lo if lo_open else v >= lo
    if ok and hi is not None:
        ok = v < hi if hi_open else v <= hi
    if not ok:
        raise ValueError(f"{who}: {name} ({flag}) must be {kind} in {interval}, got {value!r}")
    return int(v) if integer else v


def _guard_step(step):
    @functools.wraps(step)
    def guarded(self, X, Y):
        if self._stepping:                     # a subclass calling super().step(): guarded once
            return step(self, X, Y)
        who = type(self).__name__
        for what, A in (("inputs X", X), ("targets Y", Y)):
            if not _all_finite(A):
                raise ValueError(f"{who}.step: the {what} contain NaN or inf; nothing was changed "
                                 f"(clean the batch)")
        if self.guard != "full" or not isinstance(self.net.theta, np.ndarray):
            return step(self, X, Y)
        theta = self.net.theta
        if self._theta_before is None:
            self._theta_before = self.bk.zeros(theta.shape[0], theta.dtype)
        self.bk.copy_into(self._theta_before, theta)
        k = self.k
        self._stepping = True
        try:
            loss = step(self, X, Y)
        finally:
            self._stepping = False
        if not _all_finite(theta):
            self.bk.copy_into(theta, self._theta_before)
            self.k = k
            raise NonFiniteError(f"{who}, update {k + 1}: the update would make parameters non-finite "
                                 f"(minibatch loss {float(loss):.6g}); the parameters were put back, the "
                                 f"optimizer's own state may be damaged: restart from a checkpoint with a "
                                 f"smaller lr")
        return loss
    guarded.unguarded = step
    return guarded


class Optimizer:
    name = "optimizer"
    _stepping = False
    _theta_before = None
    guard = "full"          # or "inputs": only the batch is checked (see the module docstring)
    hyperparameters = None  # the resolved settings, set by tinynet.optim.build_optimizer
    # True where every batch statistic the step uses is reduced across net.comm
    # (data-parallel ranks, tinynet.distributed): the gradient-only methods get
    # it from Sequential.loss_and_gradient, KFAC, ACP and UBP reduce their own
    distributable = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "step" in cls.__dict__ and not hasattr(cls.__dict__["step"], "unguarded"):
            cls.step = _guard_step(cls.__dict__["step"])

    def __init__(self, net, lr):
        check_range(type(self).__name__, "lr", lr, 0, lo_open=True)
        self.net = net
        self.bk = net.bk
        self.lr = float(lr)
        self.k = 0                 # updates done
        self.metrics = {}

    def step(self, X, Y):
        raise NotImplementedError

    def _vectors(self):
        """name -> backend vector of the optimizer's state, for checkpoints."""
        return {}

    def state_dict(self):
        return {"k": self.k, "lr": self.lr,
                **{name: np.array(self.bk.to_host(v)) for name, v in self._vectors().items()}}

    def load_state_dict(self, state):
        self.k = int(state["k"])
        self.lr = float(state["lr"])
        for name, v in self._vectors().items():
            self.bk.copy_into(v, self.bk.asarray(np.asarray(state[name]), v.dtype))


class DirectionOptimizer(Optimizer):
    """An optimizer whose update is x <- x + lr d, with the direction d from
    `direction(X, Y) -> (loss, g, d)` (host arrays): the Newton family, natural
    gradient and the seed-001 preconditioner, which alignment tools also query
    for d without stepping."""

    def direction(self, X, Y):
        raise NotImplementedError

    def step(self, X, Y):
        loss, _, d = self.direction(X, Y)
        self.bk.axpy(self.lr, self.bk.asarray(d, self.net.dtype), self.net.theta)
        self.k += 1
        return loss
