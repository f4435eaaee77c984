"""Backends: the one place that knows which device arrays live on.

A backend owns array creation, host/device transfers and kernel dispatch, so
stages and optimizers call `bk.matmul(...)`, `bk.act_fwd(...)` and never test
which device they are on. Every dispatch goes through `Backend._run`, which is
also where kernel launches are timed when a `Profile` is attached.

This module holds the CPU backend; the interface, the timing hook, `Profile`
and the registry live in tinynet/backend_base.py (shared with
tinynet/cuda_backend.py, which does not import this module) and are
re-exported here: `from tinynet.backend import Backend, Profile, get_backend`.

Registry: `get_backend("cpu")`, `get_backend("cuda")`.
"""
import numpy as np

from tinynet.backend_base import Backend, Profile, get_backend, host_call  # noqa: F401  (re-exported)

from tinynet.kernels import activations as _act
from tinynet.kernels import blas as _blas
from tinynet.kernels import linalg as _la
from tinynet.kernels import losses as _loss
from tinynet.kernels import optim as _opt
from tinynet.kernels import scalars as _sc
from tinynet.kernels import second_order as _so

ACTIVATIONS = ("sigmoid", "tanh", "relu")


def _numpy_blas(A, out):
    """Whether a product goes to numpy's OpenBLAS (tinynet.kernels.blas): where
    it was found, for float32 / float64, into a C-contiguous out."""
    return _blas.AVAILABLE and out.flags.c_contiguous and out.dtype == A.dtype and \
        out.dtype in (np.float32, np.float64)


def _c_operand(M, t):
    """(C-contiguous array, transpose flag) for a C or F layout: an F-contiguous
    M is the transpose of the C-contiguous M.T."""
    return (M, t) if M.flags.c_contiguous else (M.T, not t)


class CPUBackend(Backend):
    """Arrays are numpy arrays; kernels are the `@njit` functions of tinynet.kernels."""

    name = "cpu"

    def _launch_pair(self, module, name, count, args, flops, nbytes):
        return self._run(name, getattr(module, name + "_cpu"), args, flops, nbytes)

    # -- arrays -----------------------------------------------------------------
    def empty(self, shape, dtype):
        return np.empty(shape, dtype=dtype)

    def zeros(self, shape, dtype):
        return np.zeros(shape, dtype=dtype)

    def asarray(self, a, dtype=None):
        """Host array -> backend array (C-contiguous, given dtype)."""
        return np.ascontiguousarray(a, dtype=dtype)

    def to_host(self, a):
        return np.asarray(a)

    def copy(self, a):
        return a.copy()

    def copy_into(self, dst, src):
        dst[...] = src

    def synchronize(self):
        pass

    # -- linear algebra -----------------------------------------------------------
    def matmul(self, A, B, out=None, ta=False, tb=False):
        """out = op(A) @ op(B), op = transpose where ta / tb is set."""
        m, n, k = self._matmul_shape(A, B, out, ta, tb)
        if out is None:
            out = np.empty((m, n), dtype=A.dtype)
        if m == 0 or n == 0 or k == 0:          # as np.dot: zeros (Numba's np.dot asserts on k = 0)
            out[...] = 0
            return out
        # a strided view (e.g. some columns of an array) is copied, so BLAS only
        # ever sees C or F layouts (one call, no slow fallback)
        A, B = (M if M.flags.c_contiguous or M.flags.f_contiguous else np.ascontiguousarray(M) for M in (A, B))
        if _numpy_blas(A, out):
            (A, ta), (B, tb) = _c_operand(A, ta), _c_operand(B, tb)
            self._run("matmul", _blas.gemm, (A, B, out, ta, tb, 1.0, 0.0), flops=2.0 * m * n * k)
            return out
        fn = (_la.matmul_tt_cpu if tb else _la.matmul_tn_cpu) if ta else \
             (_la.matmul_nt_cpu if tb else _la.matmul_nn_cpu)
        self._run("matmul", fn, (A, B, out), flops=2.0 * m * n * k)
        return out

    def matmul_acc(self, A, B, out, alpha=1.0, ta=False, tb=False, scratch=None):
        """out += alpha op(A) @ op(B), in place (out C-contiguous): one BLAS gemm
        with beta = 1 instead of a product and an axpy (so `scratch`, where a
        backend without a fused kernel may put the product, is not used)."""
        m, n, k = self._matmul_shape(A, B, out, ta, tb)
        if not out.flags.c_contiguous or out.dtype != A.dtype:
            raise ValueError(f"matmul_acc: out must be C-contiguous {A.dtype}, got {out.dtype} "
                             f"{'C' if out.flags.c_contiguous else 'strided'}")
        if m == 0 or n == 0 or k == 0:
            return out
        A, B = (np.ascontiguousarray(M) for M in (A, B))
        if _numpy_blas(A, out):
            self._run("matmul_acc", _blas.gemm, (A, B, out, bool(ta), bool(tb), float(alpha), 1.0),
                      flops=2.0 * m * n * k)
            return out
        self._run("matmul_acc", _la.matmul_acc_cpu, (A, B, out, float(alpha), bool(ta), bool(tb)),
                  flops=2.0 * m * n * k)
        return out

    def add_bias(self, A, b):
        self._run("add_bias", _la.add_bias_cpu, (A, b), nbytes=2 * A.nbytes)
        return A

    def append_ones(self, H, out=None):
        """[H 1]: H (m, n) with a column of ones appended, (m, n + 1)."""
        if out is None:
            out = np.empty((H.shape[0], H.shape[1] + 1), dtype=H.dtype)
        self._run("append_ones", _la.append_ones_cpu, (H, out), nbytes=H.nbytes + out.nbytes)
        return out

    def col_sum(self, A, out=None):
        if out is None:
            out = np.empty(A.shape[1], dtype=A.dtype)
        self._run("col_sum", _la.col_sum_cpu, (A, out), nbytes=A.nbytes)
        return out

    def col_sum_axpy(self, a, A, out, y):
        """out = the column sums of A, then y += a out (a bias's gradient and SGD step)."""
        self._run("col_sum_axpy", _la.col_sum_axpy_cpu, (y.dtype.type(a), A, out, y),
                  nbytes=A.nbytes + 3 * out.nbytes)
        return y

    def axpy(self, a, x, y):
        """y += a x for flat vectors."""
        self._run("axpy", _la.axpy_cpu, (y.dtype.type(a), x, y), nbytes=3 * x.nbytes)
        return y

    def scale(self, a, x):
        self._run("scale", _la.scale_cpu, (x.dtype.type(a), x), nbytes=2 * x.nbytes)
        return x

    def dot(self, x, y):
        return float(self._run("dot", _la.dot_cpu, (x, y), nbytes=2 * x.nbytes))

    # -- per-step scalars kept in a float64 backend vector (tinynet.kernels.scalars) --
    def fill(self, x, v):
        """x[...] = v in place."""
        x[...] = v
        return x

    def value(self, vec, i):
        """vec[i] as a host float (bk.value on the GPU defers the copy)."""
        return float(vec[i])

    def dot_acc(self, x, y, acc, i=0):
        """acc[i] += sum_i x[i] y[i] (acc a float64 backend vector): a dot that
        stays on the device (on the CPU the same float64 add as `q += bk.dot`)."""
        acc[i] += self.dot(x, y)

    def axpy_s(self, c, s, j, x, y):
        """y += (c s[j]) x, the coefficient read from the backend vector s."""
        self._run("axpy_s", _sc.axpy_s_cpu, (float(c), s, int(j), x, y), nbytes=3 * x.nbytes)
        return y

    def scale_s(self, s, j, x):
        """x *= s[j], the factor read from the backend vector s."""
        self._run("scale_s", _sc.scale_s_cpu, (s, int(j), x), nbytes=2 * x.nbytes)
        return x

    def matmul_acc_s(self, A, B, out, c, s, j, ta=False, tb=False, scratch=None):
        """matmul_acc with alpha = c s[j] read from the backend vector s (here
        a host read: BLAS takes alpha as a host number)."""
        return self.matmul_acc(A, B, out, alpha=c * float(s[j]), ta=ta, tb=tb, scratch=scratch)

    # -- activations ---------------------------------------------------------------
    def act_fwd(self, kind, Z, out=None):
        out = np.empty_like(Z) if out is None else out
        fn = _act.sigmoid_fwd_f32_cpu if kind == "sigmoid" and Z.dtype == np.float32 else _ACT_CPU[kind][0]
        self._run(kind + "_fwd", fn, (Z, out), nbytes=2 * Z.nbytes)
        return out

    def act_mul_d1(self, kind, S, G, out=None):
        """out = f'(z) * G, f' written from the forward output S."""
        out = np.empty_like(G) if out is None else out
        self._run(kind + "_mul_d1", _ACT_CPU[kind][1], (S, G, out), nbytes=3 * G.nbytes)
        return out

    def act_d2(self, kind, S, out=None):
        out = np.empty_like(S) if out is None else out
        self._run(kind + "_d2", _ACT_CPU[kind][2], (S, out), nbytes=2 * S.nbytes)
        return out

    # -- second-order products (tinynet.kernels.second_order; used by tinynet.curvature) --
    def act_d2_mul(self, kind, S, B, V, out=None):
        """out = f''(z) * B * V, f'' written from the forward output S."""
        out = np.empty_like(V) if out is None else out
        fn = {"sigmoid": _so.sigmoid_d2_mul_cpu, "tanh": _so.tanh_d2_mul_cpu,
              "relu": _so.relu_d2_mul_cpu}[kind]
        self._run(kind + "_d2_mul", fn, (S, B, V, out), nbytes=4 * V.nbytes)
        return out

    def mul(self, x, y, out=None):
        """out = x * y elementwise (same shapes)."""
        out = np.empty_like(x) if out is None else out
        self._run("mul", _so.mul_cpu, (x.reshape(-1), y.reshape(-1), out.reshape(-1)), nbytes=3 * x.nbytes)
        return out

    def loss_hess_vp(self, kind, F, Y, V, scale, eps=0.0, fisher=False, out=None):
        """out = scale * D_i V_i per row, D_i = d2l/df2 (or the Fisher's D(f) when
        `fisher`) of loss `kind` at output row F_i, target Y_i."""
        out = np.empty_like(V) if out is None else out
        t = F.dtype.type
        if kind == "mse":
            self._run("mse_hess_vp", np.multiply, (V, t(2 * scale), out), nbytes=2 * V.nbytes)
        elif kind == "bce":
            self._run("bce_hess_vp", _so.bce_hess_vp_cpu, (F, Y, V, t(scale), t(eps), bool(fisher), out),
                      nbytes=4 * V.nbytes)
        elif kind == "softmax_ce":
            self._run("softmax_hess_vp", _so.softmax_hess_vp_cpu, (F, Y, V, t(scale), bool(fisher), out),
                      nbytes=4 * V.nbytes)
        else:
            raise ValueError(f"unknown loss kernel {kind!r}")
        return out

    # -- losses ----------------------------------------------------------------------
    def loss(self, kind, F, Y, scale, eps=0.0):
        """Per-example losses l (n,) and scaled output gradient G (n, k)."""
        n = F.shape[0]
        l = np.empty(n, dtype=F.dtype)
        G = np.empty_like(F)
        s = F.dtype.type(scale)
        if kind == "mse":
            self._run("mse", _loss.mse_cpu, (F, Y, s, l, G), nbytes=3 * F.nbytes)
        elif kind == "bce":
            self._run("bce", _loss.bce_cpu, (F, Y, s, F.dtype.type(eps), l, G), nbytes=3 * F.nbytes)
        elif kind == "softmax_ce":
            self._run("softmax_ce", _loss.softmax_ce_cpu, (F, Y, s, l, G), nbytes=3 * F.nbytes)
        else:
            raise ValueError(f"unknown loss kernel {kind!r}")
        return l, G

    def softmax(self, F, out=None):
        out = np.empty_like(F) if out is None else out
        self._run("softmax", _loss.softmax_cpu, (F, out), nbytes=2 * F.nbytes)
        return out

    # -- optimizer updates (flat vectors, in place; see tinynet.kernels.optim) ------
    def momentum_update(self, x, v, g, lr, mu, nesterov):
        t = x.dtype.type
        self._run("momentum", _opt.momentum_cpu, (x, v, g, t(lr), t(mu), bool(nesterov)), nbytes=5 * x.nbytes)

    def rmsprop_update(self, x, r, g, lr, rho, eps):
        t = x.dtype.type
        self._run("rmsprop", _opt.rmsprop_cpu, (x, r, g, t(lr), t(rho), t(eps)), nbytes=5 * x.nbytes)

    def adam_update(self, x, m, v, g, lr, b1, b2, eps, c1, c2):
        t = x.dtype.type
        self._run("adam", _opt.adam_cpu, (x, m, v, g, t(lr), t(b1), t(b2), t(eps), t(c1), t(c2)),
                  nbytes=7 * x.nbytes)

    def sum(self, x):
        """Sum of a (small) array, as a host float."""
        return float(np.sum(x, dtype=np.float64))


_ACT_CPU = {
    "sigmoid": (_act.sigmoid_fwd_cpu, _act.sigmoid_mul_d1_cpu, _act.sigmoid_d2_cpu),
    "tanh": (_act.tanh_fwd_cpu, _act.tanh_mul_d1_cpu, _act.tanh_d2_cpu),
    "relu": (_act.relu_fwd_cpu, _act.relu_mul_d1_cpu, _act.relu_d2_cpu),
}
