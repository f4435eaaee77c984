"""What the CPU and CUDA backends share: the `Backend` interface, the kernel
timing hook and the `Profile` it fills, the timed host-call helper, and the
registry `get_backend`. Neither backend module imports the other; both import
this one (tinynet/backend.py: CPUBackend; tinynet/cuda_backend.py: CUDABackend).

Timing (DESIGN.md "Kernels"): every kernel dispatch goes through
`Backend._run(name, fn, args, flops, nbytes)`. With no Profile attached
(`bk.profile is None`, the default) `_run` is one attribute test and the call:
nothing is measured, allocated or synchronized. With `bk.profile = Profile()`
each call is bracketed by the device's clock (`_clock_start` / `_clock_stop`:
a monotonic host clock on the CPU, whose kernels are synchronous; CUDA events
on the GPU, synchronized at the stop) and its seconds, FLOPs and bytes are
added to the profile under `name`.

Host BLAS/LAPACK work done outside any backend (the amortized factorizations
of KFAC, ACP, NNN and the Newton family: Cholesky, eigendecompositions,
inverses, and the host statistics kernels) goes through
`host_call("host.NAME", fn, *args)`, timed by the host clock into the profile
of the backend whose profile was attached last, while it stays attached (host
work has no device; one process has one host). Off, it is one global test and
the call.
"""
import time
import weakref
from collections import defaultdict

import numpy as np

_HOST_OWNER = None        # weakref to the backend whose profile host_call reports to


def _host_profile():
    o = _HOST_OWNER
    bk = None if o is None else o()
    return None if bk is None else bk._profile


def host_call(name, fn, *args, flops=0.0, nbytes=0.0, **kwargs):
    """fn(*args, **kwargs), timed as kernel `name` (by convention "host.eigh",
    "host.potrf", ...) when a profile is attached to a backend."""
    if _HOST_OWNER is None:
        return fn(*args, **kwargs)
    p = _host_profile()
    if p is None:
        return fn(*args, **kwargs)
    t0 = time.perf_counter()
    r = fn(*args, **kwargs)
    p.add(name, time.perf_counter() - t0, flops, nbytes, start=t0)
    return r


class Profile:
    """Per-kernel call counts, total seconds and work (flops, bytes).

    `events`: None (default), or a list that then receives one
    (name, start_s, seconds, flops, nbytes) tuple per timed call, start on the
    host's perf_counter clock (the Chrome trace of `tinynet profile --trace`)."""

    def __init__(self):
        self.calls = defaultdict(int)
        self.seconds = defaultdict(float)
        self.flops = defaultdict(float)
        self.bytes = defaultdict(float)
        self.events = None

    def add(self, name, seconds, flops=0.0, nbytes=0.0, start=None):
        self.calls[name] += 1
        self.seconds[name] += seconds
        self.flops[name] += flops
        self.bytes[name] += nbytes
        if self.events is not None:
            self.events.append((name, start, seconds, flops, nbytes))

    def reset(self):
        """Forget every count (e.g. after warm-up steps); keeps `events` on or off."""
        for d in (self.calls, self.seconds, self.flops, self.bytes):
            d.clear()
        if self.events is not None:
            self.events = []

    @property
    def total_seconds(self):
        return float(sum(self.seconds.values()))

    def rows(self):
        """One dict per kernel, most time first."""
        out = []
        for name in sorted(self.seconds, key=self.seconds.get, reverse=True):
            s, c = self.seconds[name], self.calls[name]
            out.append(dict(kernel=name, calls=c, total_s=s, mean_s=s / c,
                            flops=self.flops[name], nbytes=self.bytes[name],
                            gflops=self.flops[name] / s / 1e9 if s > 0 else 0.0,
                            gbytes=self.bytes[name] / s / 1e9 if s > 0 else 0.0))
        return out


class Backend:
    """Interface shared by the CPU and CUDA backends (see CPUBackend for the meaning
    of each method). `kernels` maps an operation name to the device's kernel."""

    name = "abstract"
    _profile = None

    # -- timing ---------------------------------------------------------------
    @property
    def profile(self):
        """The attached Profile, or None (timing off, the default)."""
        return self._profile

    @profile.setter
    def profile(self, p):
        global _HOST_OWNER
        if p is not None and not isinstance(p, Profile):
            raise TypeError(f"profile must be a tinynet Profile or None, got {type(p).__name__}")
        self._profile = p
        if p is not None:
            _HOST_OWNER = weakref.ref(self)
        elif _HOST_OWNER is not None and _HOST_OWNER() is self:
            _HOST_OWNER = None

    def _run(self, name, fn, args, flops=0.0, nbytes=0.0):
        """fn(*args): the one path of every kernel dispatch, timed when a profile
        is attached (its host start time kept for trace events)."""
        p = self._profile
        if p is None:
            return fn(*args)
        h = time.perf_counter()
        t0 = self._clock_start()
        r = fn(*args)
        p.add(name, self._clock_stop(t0), flops, nbytes, start=h)
        return r

    def _clock_start(self):
        return time.perf_counter()

    def _clock_stop(self, t0):
        return time.perf_counter() - t0

    def launch(self, module, name, count, *args, flops=0.0, nbytes=0.0):
        """Run the kernel pair `name` of kernel module `module` (its `name_cpu`
        or `name_cuda` twin, by device) on `args`; `count` is the number of
        entries the kernel writes (one CUDA thread each; the CPU twin loops
        itself). The generic dispatch of the stages' own kernels (conv,
        pooling, BatchNorm2d), so a new stage needs no backend method."""
        return self._launch_pair(module, name, count, args, flops, nbytes)

    def matmul_bias(self, A, B, b, out=None):
        """out = A @ B + b, b (n,) added to every row (a Linear stage's forward):
        matmul, then add_bias (the CUDA backend does both in one launch)."""
        if tuple(b.shape) != (B.shape[1],):
            raise ValueError(f"matmul_bias: b has shape {tuple(b.shape)}, the product has {B.shape[1]} columns")
        return self.add_bias(self.matmul(A, B, out=out), b)

    @staticmethod
    def _matmul_shape(A, B, out, ta, tb):
        """(m, n, k) of op(A) @ op(B), checking the operands and `out`."""
        m = A.shape[1] if ta else A.shape[0]
        k = A.shape[0] if ta else A.shape[1]
        n = B.shape[0] if tb else B.shape[1]
        kb = B.shape[1] if tb else B.shape[0]
        if k != kb:
            raise ValueError(f"matmul: inner sizes differ ({k} vs {kb})")
        if A.dtype != B.dtype:
            raise ValueError(f"matmul: operands have dtypes {A.dtype} and {B.dtype}; convert one")
        if out is not None and tuple(out.shape) != (m, n):
            raise ValueError(f"matmul: out has shape {tuple(out.shape)}, the product is {(m, n)}")
        return m, n, k


class DeviceValue:
    """Entry i of a device vector, copied to the host when read: float(v) or
    numpy (np.asarray(v)). The vector may be overwritten by a
    later step: read it before the next one (optim.metrics are overwritten
    every step, and the trainer reads them between steps)."""

    def __init__(self, vec, i):
        self.vec, self.i = vec, i

    def __float__(self):
        return float(self.vec[self.i: self.i + 1].copy_to_host()[0])

    def __array__(self, dtype=None, copy=None):
        return np.asarray(float(self), dtype=dtype)

    def __repr__(self):
        return f"DeviceValue({float(self)!r})"


_BACKENDS = {}


def get_backend(name="cpu"):
    """The backend registered under `name` ("cpu" or "cuda"), created once."""
    if isinstance(name, Backend):
        return name
    if name not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {name!r}: choose 'cpu' or 'cuda'")
    if name not in _BACKENDS:
        if name == "cpu":
            from tinynet.backend import CPUBackend
            _BACKENDS[name] = CPUBackend()
        else:
            from tinynet.cuda_backend import CUDABackend  # imports numba.cuda lazily
            _BACKENDS[name] = CUDABackend()
    return _BACKENDS[name]
