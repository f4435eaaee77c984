"""CUDA backend: arrays are Numba device arrays, kernels the `@cuda.jit` twins
in tinynet.kernels (same meaning and argument order as the CPU `@njit` ones).

The method set and semantics are those of `CPUBackend` (tinynet/backend.py;
both derive from tinynet/backend_base.py, and neither imports the other);
what differs is only where the data lives:

- every array a method takes or returns stays on the device; `to_host`, `dot`
  and `sum` are the only methods that bring numbers back (the last two return
  a host float, as on the CPU), so a training step's forward, loss, backward
  and update run on the device and only the scalar batch loss comes back;
- launch configurations are computed here from the shapes (`_grid1`: one
  thread per entry, at most 256 per block; matmul: TILE x TILE blocks);
- kernel timing for `Profile` uses CUDA events (`_clock_start` /
  `_clock_stop`): the time the device spent between the two records, which on
  a kernel's first call also contains its JIT compilation. Under the
  simulator (NUMBA_ENABLE_CUDASIM=1) events carry no time, and since simulated
  launches are synchronous the host clock of `Backend` is used instead.
  Host <-> device copies are timed too when profiling ("memcpy.htod",
  "memcpy.dtoh"): they are what part of a step moving to the device saves.

Device memory comes from tinynet.cuda_pool's caching allocator (installed
when the backend is built, before the first CUDA context; TINYNET_CUDA_POOL=0
keeps Numba's own allocator): a step's arrays reuse the blocks the previous
step freed, with no cuMemAlloc / cuMemFree and so no device synchronization.

Operand layouts: matmul accepts any 2-D view (kernels index through strides);
an F-contiguous operand (the transposed view of a C-contiguous array) is
turned back into its C-contiguous transpose with the transpose flag flipped,
which is the same product and lets the kernel read coalesced rows.
"""
import numpy as np
import numba
from numba import cuda

from tinynet import cuda_pool
from tinynet.backend_base import Backend, DeviceValue
from tinynet.kernels import activations as _act
from tinynet.kernels import linalg as _la
from tinynet.kernels import losses as _loss
from tinynet.kernels import optim as _opt
from tinynet.kernels import scalars as _sc
from tinynet.kernels import second_order as _so

SIMULATOR = bool(numba.config.ENABLE_CUDASIM)
TPB = 256   # threads per block of the elementwise / per-row / per-column kernels

_ACT_CUDA = {
    "sigmoid": (_act.sigmoid_fwd_cuda, _act.sigmoid_mul_d1_cuda, _act.sigmoid_d2_cuda),
    "tanh": (_act.tanh_fwd_cuda, _act.tanh_mul_d1_cuda, _act.tanh_d2_cuda),
    "relu": (_act.relu_fwd_cuda, _act.relu_mul_d1_cuda, _act.relu_d2_cuda),
}
_LOSS_CUDA = {"mse": _loss.mse_cuda, "bce": _loss.bce_cuda, "softmax_ce": _loss.softmax_ce_cuda}
_MATMUL_CUDA = {(False, False): _la.matmul_nn_cuda, (False, True): _la.matmul_nt_cuda,
                (True, False): _la.matmul_tn_cuda, (True, True): _la.matmul_tt_cuda}


def _grid1(count):
    """(blocks, threads) covering `count` entries with one thread each: a
    multiple of 32 threads (whole warps), at most TPB per block. Small arrays
    get small blocks, which also keeps the simulator's thread count down."""
    tpb = min(TPB, 32 * ((count + 31) // 32))
    return (count + tpb - 1) // tpb, tpb


def _is_device(a):
    return getattr(a, "__cuda_ndarray__", False) is True


def _transposed_view(A):
    """A.T of a 2-D device array as a view (no copy). Numba's DeviceNDArray.T
    launches a copying transpose kernel; the simulator's is a numpy view."""
    if SIMULATOR:
        return A.T
    from numba.cuda.cudadrv.devicearray import DeviceNDArray
    return DeviceNDArray(shape=A.shape[::-1], strides=A.strides[::-1], dtype=A.dtype,
                         gpu_data=A.gpu_data)


def _c_operand(A, t):
    """(A', t') with op_t'(A') == op_t(A) and A' C-contiguous when A is an
    F-contiguous view (e.g. W.T of a C-ordered W)."""
    if A.ndim == 2 and not A.is_c_contiguous() and A.is_f_contiguous():
        return _transposed_view(A), not t
    return A, t


class CUDABackend(Backend):
    """Arrays are numba device arrays; kernels are the `@cuda.jit` functions of
    tinynet.kernels. Needs an NVIDIA GPU with a driver, or the simulator."""

    name = "cuda"

    def __init__(self):
        cuda_pool.install()       # before the first context: Numba fixes its memory manager then
        if not SIMULATOR and not cuda.is_available():
            raise RuntimeError(
                "device='cuda' needs an NVIDIA GPU with a driver, or NUMBA_ENABLE_CUDASIM=1 "
                "for the simulator (set before numba is imported); use device='cpu' otherwise")
        self._no_bias = {}        # dtype -> the 1-entry `b` of the matmul epilogues that do not read it

    # -- timing (CUDA events) ------------------------------------------------------
    def _clock_start(self):
        if SIMULATOR:
            return super()._clock_start()
        start = cuda.event(timing=True)
        start.record()
        return start

    def _clock_stop(self, start):
        if SIMULATOR:
            return super()._clock_stop(start)
        stop = cuda.event(timing=True)
        stop.record()
        stop.synchronize()
        return start.elapsed_time(stop) / 1e3      # ms -> s

    def _launch(self, name, kernel, count, args, flops=0.0, nbytes=0.0):
        """Launch an elementwise / per-row kernel with one thread per entry."""
        if count == 0:
            return
        blocks, tpb = _grid1(count)
        self._run(name, kernel[blocks, tpb], args, flops, nbytes)

    def _launch_pair(self, module, name, count, args, flops, nbytes):
        self._launch(name, getattr(module, name + "_cuda"), count, args, flops, nbytes)

    @property
    def memory_pool(self):
        """The caching allocator of tinynet.cuda_pool serving this context, or None
        (simulator, TINYNET_CUDA_POOL=0, or another memory manager)."""
        return cuda_pool.current_pool()

    # -- arrays -----------------------------------------------------------------
    def empty(self, shape, dtype):
        return cuda.device_array(shape, dtype=dtype)

    def zeros(self, shape, dtype):
        """Zeros written on the device (fill kernel): no host array is uploaded."""
        out = cuda.device_array(shape, dtype=dtype)
        if out.size:
            flat = out.reshape(out.size)
            self._launch("fill", _la.fill_cuda, out.size, (flat, flat.dtype.type(0)), nbytes=out.nbytes)
        return out

    def asarray(self, a, dtype=None):
        """Host array -> device array (C-contiguous, given dtype). A device
        array of that dtype is returned as it is when C-contiguous; other
        device arrays (another dtype, strided) are converted through the host,
        which is off the hot path (the network's own arrays never need it)."""
        if _is_device(a):
            if (dtype is None or np.dtype(dtype) == a.dtype) and a.is_c_contiguous():
                return a
            a = a.copy_to_host()
        h = np.ascontiguousarray(a, dtype=dtype)
        if self._profile is None:
            return cuda.to_device(h)
        return self._run("memcpy.htod", cuda.to_device, (h,), nbytes=h.nbytes)

    def to_host(self, a):
        if not _is_device(a):
            return np.asarray(a)
        if self._profile is None:
            return a.copy_to_host()
        return self._run("memcpy.dtoh", a.copy_to_host, (), nbytes=a.nbytes)

    def copy(self, a):
        out = cuda.device_array(a.shape, dtype=a.dtype)
        out.copy_to_device(a)
        return out

    def copy_into(self, dst, src):
        """dst[...] = src, src on the device (same shape and dtype) or on the host."""
        if _is_device(src):
            if tuple(src.shape) != tuple(dst.shape) or src.dtype != dst.dtype:
                raise ValueError(f"copy_into: source {tuple(src.shape)} {src.dtype} does not match "
                                 f"destination {tuple(dst.shape)} {dst.dtype}")
            dst.copy_to_device(src)
        else:
            host = np.broadcast_to(np.asarray(src, dtype=dst.dtype), tuple(dst.shape))
            dst.copy_to_device(np.ascontiguousarray(host))

    def synchronize(self):
        cuda.synchronize()

    # -- linear algebra -----------------------------------------------------------
    def matmul(self, A, B, out=None, ta=False, tb=False):
        """out = op(A) @ op(B), op = transpose where ta / tb is set."""
        m, n, k = self._matmul_shape(A, B, out, ta, tb)
        if out is None:
            out = cuda.device_array((m, n), dtype=A.dtype)
        # k == 0 runs no tile step: every entry of out is written as 0, like np.dot
        return self._gemm("matmul", A, B, out, ta, tb, 1.0, _la.STORE, None, 2.0 * m * n * k)

    def _gemm(self, name, A, B, out, ta, tb, alpha, mode, b, flops):
        """One launch of the tiled matmul kernels with epilogue `mode` (linalg.STORE,
        ACCUMULATE or BIAS)."""
        m, n = out.shape
        if m == 0 or n == 0:
            return out
        A, ta = _c_operand(A, ta)
        B, tb = _c_operand(B, tb)
        T = _la.TILE
        grid = ((n + T - 1) // T, (m + T - 1) // T)
        b = self._unused_bias(out.dtype) if b is None else b
        self._run(name, _MATMUL_CUDA[ta, tb][grid, (T, T)], (A, B, out, out.dtype.type(alpha), mode, b), flops=flops)
        return out

    def matmul_bias(self, A, B, b, out=None):
        """out = A @ B + b (b added to every row), in one launch: the matmul
        kernels' bias epilogue (the Backend default is matmul, then add_bias)."""
        m, n, k = self._matmul_shape(A, B, out, False, False)
        if tuple(b.shape) != (n,) or b.dtype != A.dtype:
            raise ValueError(f"matmul_bias: b must be ({n},) {A.dtype}, got {tuple(b.shape)} {b.dtype}")
        if out is None:
            out = cuda.device_array((m, n), dtype=A.dtype)
        return self._gemm("matmul_bias", A, B, out, False, False, 1.0, _la.BIAS, b, 2.0 * m * n * k + m * n)

    def _unused_bias(self, dtype):
        """The `b` argument of the matmul kernels' epilogues that do not read it."""
        dtype = np.dtype(dtype)
        if dtype not in self._no_bias:
            self._no_bias[dtype] = cuda.device_array(1, dtype=dtype)
        return self._no_bias[dtype]

    def matmul_acc(self, A, B, out, alpha=1.0, ta=False, tb=False, scratch=None):
        """out += alpha op(A) @ op(B), in place, in one launch: the matmul
        kernels' accumulating epilogue (as the CPU's one BLAS call with beta = 1).
        scratch: unused here (the CPU fallback's buffer for the product)."""
        m, n, k = self._matmul_shape(A, B, out, ta, tb)
        if not out.is_c_contiguous() or out.dtype != A.dtype:
            raise ValueError(f"matmul_acc: out must be C-contiguous {A.dtype}, got {out.dtype}")
        if k == 0:
            return out
        return self._gemm("matmul_acc", A, B, out, ta, tb, alpha, _la.ACCUMULATE, None, 2.0 * m * n * k)

    def add_bias(self, A, b):
        self._launch("add_bias", _la.add_bias_cuda, A.size, (A, b), nbytes=2 * A.nbytes)
        return A

    def append_ones(self, H, out=None):
        """[H 1]: H (m, n) with a column of ones appended, (m, n + 1)."""
        if out is None:
            out = cuda.device_array((H.shape[0], H.shape[1] + 1), dtype=H.dtype)
        self._launch("append_ones", _la.append_ones_cuda, out.size, (H, out),
                     nbytes=H.nbytes + out.nbytes)
        return out

    def col_sum(self, A, out=None):
        if out is None:
            out = cuda.device_array(A.shape[1], dtype=A.dtype)
        self._launch("col_sum", _la.col_sum_cuda, A.shape[1], (A, out), nbytes=A.nbytes)
        return out

    def col_sum_axpy(self, a, A, out, y):
        """out = the column sums of A, then y += a out, in one launch."""
        self._launch("col_sum_axpy", _la.col_sum_axpy_cuda, A.shape[1], (y.dtype.type(a), A, out, y),
                     nbytes=A.nbytes + 3 * out.nbytes)
        return y

    def axpy(self, a, x, y):
        """y += a x for flat vectors."""
        self._launch("axpy", _la.axpy_cuda, x.shape[0], (y.dtype.type(a), x, y),
                     nbytes=3 * x.nbytes)
        return y

    def scale(self, a, x):
        self._launch("scale", _la.scale_cuda, x.shape[0], (x.dtype.type(a), x),
                     nbytes=2 * x.nbytes)
        return x

    def dot(self, x, y):
        """sum_i x[i] y[i] as a host float (float64 partial sums per block,
        added on the host: one small transfer, the same on every run)."""
        n = x.shape[0]
        if n == 0:
            return 0.0
        T = _la.DOT_TPB
        blocks = min((n + T - 1) // T, 1024)
        partial = cuda.device_array(blocks, dtype=np.float64)
        self._run("dot", _la.dot_cuda[blocks, T], (x, y, partial), nbytes=2 * x.nbytes)
        return float(np.sum(partial.copy_to_host()))

    # -- per-step scalars kept in a float64 device vector (tinynet.kernels.scalars) --
    def fill(self, x, v):
        """x[...] = v in place (fill kernel)."""
        if x.size:
            flat = x.reshape(x.size)
            self._launch("fill", _la.fill_cuda, x.size, (flat, flat.dtype.type(v)), nbytes=x.nbytes)
        return x

    def value(self, vec, i):
        """vec[i], copied to the host only when read (DeviceValue): a per-step
        diagnostic costs no copy back on the steps nobody reads it."""
        return DeviceValue(vec, i)

    def dot_acc(self, x, y, acc, i=0):
        """acc[i] += sum_i x[i] y[i] on the device: dot_cuda's per-block partials
        added in order by one thread (sum_into_cuda); nothing comes back."""
        n = x.shape[0]
        if n == 0:
            return
        T = _la.DOT_TPB
        blocks = min((n + T - 1) // T, 1024)
        partial = cuda.device_array(blocks, dtype=np.float64)
        self._run("dot", _la.dot_cuda[blocks, T], (x, y, partial), nbytes=2 * x.nbytes)
        self._run("sum_into", _sc.sum_into_cuda[1, 1], (partial, acc, int(i)))

    def axpy_s(self, c, s, j, x, y):
        """y += (c s[j]) x, the coefficient read on the device from s."""
        self._launch("axpy_s", _sc.axpy_s_cuda, x.shape[0], (float(c), s, int(j), x, y), nbytes=3 * x.nbytes)
        return y

    def scale_s(self, s, j, x):
        """x *= s[j], the factor read on the device from s."""
        self._launch("scale_s", _sc.scale_s_cuda, x.shape[0], (s, int(j), x), nbytes=2 * x.nbytes)
        return x

    def matmul_acc_s(self, A, B, out, c, s, j, ta=False, tb=False, scratch=None):
        """matmul_acc with alpha = c s[j] read on the device: the product, then axpy_s."""
        m, n, _ = self._matmul_shape(A, B, out, ta, tb)
        if not out.is_c_contiguous() or out.dtype != A.dtype:
            raise ValueError(f"matmul_acc_s: out must be C-contiguous {A.dtype}, got {out.dtype}")
        P = self.matmul(A, B, out=None if scratch is None else scratch.reshape(m, n), ta=ta, tb=tb)
        self.axpy_s(c, s, j, P.reshape(m * n), out.reshape(m * n))
        return out

    # -- activations ---------------------------------------------------------------
    def act_fwd(self, kind, Z, out=None):
        out = cuda.device_array(Z.shape, dtype=Z.dtype) if out is None else out
        self._launch(kind + "_fwd", _ACT_CUDA[kind][0], Z.size, (Z, out), nbytes=2 * Z.nbytes)
        return out

    def act_mul_d1(self, kind, S, G, out=None):
        """out = f'(z) * G, f' written from the forward output S."""
        out = cuda.device_array(G.shape, dtype=G.dtype) if out is None else out
        self._launch(kind + "_mul_d1", _ACT_CUDA[kind][1], S.size, (S, G, out),
                     nbytes=3 * G.nbytes)
        return out

    def act_d2(self, kind, S, out=None):
        out = cuda.device_array(S.shape, dtype=S.dtype) if out is None else out
        self._launch(kind + "_d2", _ACT_CUDA[kind][2], S.size, (S, out), nbytes=2 * S.nbytes)
        return out

    def act_d2_mul(self, kind, S, B, V, out=None):
        """out = f''(z) * B * V, f'' written from the forward output S."""
        out = cuda.device_array(V.shape, dtype=V.dtype) if out is None else out
        fn = {"sigmoid": _so.sigmoid_d2_mul_cuda, "tanh": _so.tanh_d2_mul_cuda,
              "relu": _so.relu_d2_mul_cuda}[kind]
        self._launch(kind + "_d2_mul", fn, S.size, (S, B, V, out), nbytes=4 * V.nbytes)
        return out

    def mul(self, x, y, out=None):
        """out = x * y elementwise (same shapes)."""
        out = cuda.device_array(x.shape, dtype=x.dtype) if out is None else out
        self._launch("mul", _so.mul_cuda, x.size, (x.reshape(-1), y.reshape(-1), out.reshape(-1)),
                     nbytes=3 * x.nbytes)
        return out

    def loss_hess_vp(self, kind, F, Y, V, scale, eps=0.0, fisher=False, out=None):
        """out = scale * D_i V_i per row (see CPUBackend.loss_hess_vp)."""
        out = cuda.device_array(V.shape, dtype=V.dtype) if out is None else out
        t = F.dtype.type
        if kind == "mse":
            self.copy_into(out, V)
            self.scale(2 * scale, out.reshape(-1))
        elif kind == "bce":
            self._launch("bce_hess_vp", _so.bce_hess_vp_cuda, F.size,
                         (F, Y, V, t(scale), t(eps), bool(fisher), out), nbytes=4 * V.nbytes)
        elif kind == "softmax_ce":
            self._launch("softmax_hess_vp", _so.softmax_hess_vp_cuda, F.shape[0],
                         (F, Y, V, t(scale), bool(fisher), out), nbytes=4 * V.nbytes)
        else:
            raise ValueError(f"unknown loss kernel {kind!r}")
        return out

    # -- losses ----------------------------------------------------------------------
    def loss(self, kind, F, Y, scale, eps=0.0):
        """Per-example losses l (n,) and scaled output gradient G (n, k), on the device."""
        if kind not in _LOSS_CUDA:
            raise ValueError(f"unknown loss kernel {kind!r}")
        n = F.shape[0]
        l = cuda.device_array(n, dtype=F.dtype)
        G = cuda.device_array(F.shape, dtype=F.dtype)
        s = F.dtype.type(scale)
        args = (F, Y, s, F.dtype.type(eps), l, G) if kind == "bce" else (F, Y, s, l, G)
        self._launch(kind, _LOSS_CUDA[kind], n, args, nbytes=3 * F.nbytes)
        return l, G

    def softmax(self, F, out=None):
        out = cuda.device_array(F.shape, dtype=F.dtype) if out is None else out
        self._launch("softmax", _loss.softmax_cuda, F.shape[0], (F, out), nbytes=2 * F.nbytes)
        return out

    # -- optimizer updates (flat vectors, in place; see tinynet.kernels.optim) ------
    def momentum_update(self, x, v, g, lr, mu, nesterov):
        t = x.dtype.type
        self._launch("momentum", _opt.momentum_cuda, x.shape[0],
                     (x, v, g, t(lr), t(mu), bool(nesterov)), nbytes=5 * x.nbytes)

    def rmsprop_update(self, x, r, g, lr, rho, eps):
        t = x.dtype.type
        self._launch("rmsprop", _opt.rmsprop_cuda, x.shape[0], (x, r, g, t(lr), t(rho), t(eps)),
                     nbytes=5 * x.nbytes)

    def adam_update(self, x, m, v, g, lr, b1, b2, eps, c1, c2):
        t = x.dtype.type
        self._launch("adam", _opt.adam_cuda, x.shape[0],
                     (x, m, v, g, t(lr), t(b1), t(b2), t(eps), t(c1), t(c2)), nbytes=7 * x.nbytes)

    def sum(self, x):
        """Sum of a (small) array, as a host float: the per-example losses come
        back (one transfer) and are added in float64 in the CPU backend's order."""
        return float(np.sum(self.to_host(x), dtype=np.float64))
