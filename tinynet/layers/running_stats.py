"""The running mean and variance of the batch-norm stages (BatchNorm,
MeanOnlyBatchNorm, BatchNorm2d), kept on the stage's backend as one float64
vector `_running` = [mean; var] and updated there (tinynet.kernels.running_stats),
so that a training step on the GPU copies no statistics back.

`stage.running_mean` / `stage.running_var` read as host float64 copies (on the
GPU, a copy back when read: checkpoints, folding, tests) and are set by
assignment (`stage.running_var = v`); changing entries of a copy read earlier
changes nothing.
"""
import numpy as np

from tinynet.kernels import running_stats as K


class RunningStats:
    """Mixin: `_init_running(C)` in __init__, `_bind_running(bk)` in bind,
    `_update_running(mu, var, N)` in a training forward (N values per entry),
    `_running_eval(dt)` -> (mu, s) backend vectors for an evaluation forward."""

    def _init_running(self, C):
        self._C, self._running, self._running_bk = C, np.concatenate([np.zeros(C), np.ones(C)]), None

    def _bind_running(self, bk):
        host = self._running_host()
        self._running, self._running_bk = bk.asarray(host), bk

    def _running_host(self):
        bk = self._running_bk
        return np.array(self._running if bk is None else bk.to_host(self._running), dtype=np.float64, copy=True)

    def _set_running(self, part, value):
        C = self._C
        value = np.asarray(value, dtype=np.float64)
        if value.shape != (C,):
            raise ValueError(f"{self!r}: running statistics have shape ({C},), got {value.shape}")
        view = self._running[:C] if part == 0 else self._running[C:]
        if self._running_bk is None:
            view[...] = value
        else:
            self._running_bk.copy_into(view, value)

    @property
    def running_mean(self):
        return self._running_host()[:self._C]

    @running_mean.setter
    def running_mean(self, value):
        self._set_running(0, value)

    @property
    def running_var(self):
        return self._running_host()[self._C:]

    @running_var.setter
    def running_var(self, value):
        self._set_running(1, value)

    def _update_running(self, mu, var, N, has_var=True):
        self.bk.launch(K, "running_update", self._C, self._running, mu, var, float(self.momentum), int(N),
                       bool(has_var))

    def _running_eval(self, dt):
        mu, s = self.bk.empty(self._C, dt), self.bk.empty(self._C, dt)
        self.bk.launch(K, "running_eval", self._C, self._running, mu, s, dt.type(self.eps))
        return mu, s
