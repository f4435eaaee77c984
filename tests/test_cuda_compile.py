"""Compile every CUDA kernel of tinynet.kernels to PTX for compute capability
8.0 with explicit float32 signatures: the check the CUDA simulator cannot do
(typing and lowering by the real compiler, numba-cuda's NVVM). Needs no GPU
and no driver: `cuda.compile_ptx(kernel, signature, cc=(8, 0))`.

Also checks the float32 rule of TOOLCHAIN.md: a float32 kernel whose CPU twin
computes in float32 must contain no float64 arithmetic in its PTX (a bare
`0.0` or `1 - x` would put one there). The loss kernels and dot are float64 on
purpose (their CPU twins accumulate in float64) and are exempt.

Runs in the normal suite; skipped inside the simulator (compile_ptx is not
available there) and where numba-cuda / NVVM cannot compile.
"""
import re

import numba
import pytest

if numba.config.ENABLE_CUDASIM:
    pytest.skip("compile_ptx does not exist in the CUDA simulator (NUMBA_ENABLE_CUDASIM=1); "
                "run this file in a process without it", allow_module_level=True)

from numba import boolean, cuda, float32, float64  # noqa: E402

from tinynet.kernels import activations as act  # noqa: E402
from tinynet.kernels import conv as cv  # noqa: E402
from tinynet.kernels import linalg as la  # noqa: E402
from tinynet.kernels import losses as ls  # noqa: E402
from tinynet.kernels import optim as op  # noqa: E402

M = float32[:, :]      # any-layout 2-D (views, slices)
MC = float32[:, ::1]   # C-contiguous 2-D (what the backend allocates)
V = float32[:]
S = float32

# (id, kernel, signature, float32-only PTX expected)
CASES = [
    ("matmul_nn", la.matmul_nn_cuda, (M, M, M), True),
    ("matmul_nn_C", la.matmul_nn_cuda, (MC, MC, MC), True),
    ("matmul_nt", la.matmul_nt_cuda, (M, M, M), True),
    ("matmul_tn", la.matmul_tn_cuda, (M, M, M), True),
    ("matmul_tt", la.matmul_tt_cuda, (M, M, M), True),
    ("add_bias", la.add_bias_cuda, (M, V), True),
    ("col_sum", la.col_sum_cuda, (M, V), True),
    ("append_ones", la.append_ones_cuda, (M, M), True),
    ("axpy", la.axpy_cuda, (S, V, V), True),
    ("scale", la.scale_cuda, (S, V), True),
    ("dot", la.dot_cuda, (V, V, float64[:]), False),
    ("mse", ls.mse_cuda, (M, M, S, V, M), False),
    ("bce", ls.bce_cuda, (M, M, S, S, V, M), False),
    ("softmax_ce", ls.softmax_ce_cuda, (M, M, S, V, M), False),
    ("softmax", ls.softmax_cuda, (M, M), False),
    ("momentum", op.momentum_cuda, (V, V, V, S, S, boolean), True),
    ("rmsprop", op.rmsprop_cuda, (V, V, V, S, S, S), True),
    ("adam", op.adam_cuda, (V, V, V, V, S, S, S, S, S, S), True),
]
for _f in ("sigmoid", "tanh", "relu"):
    CASES += [
        (f"{_f}_fwd", getattr(act, f"{_f}_fwd_cuda"), (M, M), True),
        (f"{_f}_mul_d1", getattr(act, f"{_f}_mul_d1_cuda"), (M, M, M), True),
        (f"{_f}_d2", getattr(act, f"{_f}_d2_cuda"), (M, M), True),
    ]

# ---- image stages (issue 11): conv; pooling and BatchNorm2d add their sections below
I = numba.int64
GEOM = (I,) * 11      # C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo
CASES += [
    ("im2col", cv.im2col_cuda, (M, M) + GEOM, True),
    ("col2im", cv.col2im_cuda, (M, M) + GEOM, True),
    ("chw_to_rows", cv.chw_to_rows_cuda, (M, M, I), True),
    ("conv_fwd", cv.conv_fwd_cuda, (M, M, V, M) + GEOM, True),
    ("conv_wgrad", cv.conv_wgrad_cuda, (M, M, M, V) + GEOM, True),
    ("conv_igrad", cv.conv_igrad_cuda, (M, M, M) + GEOM, True),
]
KERNEL_MODULES = [la, act, ls, op, cv]
# BatchNorm2d
from tinynet.kernels import batchnorm2d as bn2  # noqa: E402
CASES += [
    ("channel_stats", bn2.channel_stats_cuda, (M, V, V, V, S, I), True),
    ("bn_forward", bn2.bn_forward_cuda, (M, V, V, V, V, M, M, I), True),
    ("channel_sums", bn2.channel_sums_cuda, (M, M, V, V, I), True),
    ("bn_center_scale", bn2.bn_center_scale_cuda, (M, M, V, V, V, V, M, S, I), True),
    ("bn_affine", bn2.bn_affine_cuda, (M, V, V, M, I, boolean), True),
]
KERNEL_MODULES += [bn2]
# pooling
from tinynet.kernels import pool as pl  # noqa: E402
PGEOM = (I,) * 9      # C, H, W, kh, kw, sh, sw, Ho, Wo
A64 = numba.int64[:, :]
CASES += [
    ("maxpool_fwd", pl.maxpool_fwd_cuda, (M, M, A64) + PGEOM, True),
    ("maxpool_bwd", pl.maxpool_bwd_cuda, (M, A64, M) + PGEOM, True),
    ("maxpool_jvp", pl.maxpool_jvp_cuda, (M, A64, M), True),
    ("avgpool_fwd", pl.avgpool_fwd_cuda, (M, M) + PGEOM, True),
    ("avgpool_bwd", pl.avgpool_bwd_cuda, (M, M) + PGEOM, True),
]
KERNEL_MODULES += [pl]
# ---- end of the image-stage sections

_F64_OP = re.compile(r"^\s*[a-z][\w.]*\.f64\b", re.M)   # an instruction on f64 operands


def _compile(kernel, sig):
    try:
        ptx, _ = cuda.compile_ptx(kernel, sig, cc=(8, 0))
    except (OSError, ImportError) as e:   # NVVM library or numba-cuda's wheels missing
        pytest.skip(f"cannot compile PTX here ({type(e).__name__}: {e}); "
                    "install numba-cuda[cu13] (pip install -e '.[cuda]')")
    except Exception as e:
        if "NVVM" in str(e) or "libnvvm" in str(e):
            pytest.skip(f"NVVM unavailable: {e}; install numba-cuda[cu13]")
        raise
    return ptx


@pytest.mark.parametrize("kernel, sig, f32_only", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_compiles_to_ptx_sm80(kernel, sig, f32_only):
    ptx = _compile(kernel, sig)
    assert ".target sm_80" in ptx
    assert ".entry" in ptx
    if f32_only:
        f64 = _F64_OP.findall(ptx)
        assert not f64, f"float32 kernel has float64 arithmetic in its PTX: {f64[:5]}"


def test_every_cuda_kernel_is_checked():
    """A new @cuda.jit kernel in tinynet.kernels must be added to CASES."""
    names = {c[1].__name__ if hasattr(c[1], "__name__") else c[1].py_func.__name__ for c in CASES}
    for mod in KERNEL_MODULES:
        for name in dir(mod):
            if name.endswith("_cuda"):
                assert name in names, f"{mod.__name__}.{name} has no compile check"


def test_cuda_device_without_gpu_says_what_to_do():
    """On a machine with no GPU (and no simulator), device='cuda' fails with a
    message naming both ways out."""
    if cuda.is_available():
        pytest.skip("a GPU is present: device='cuda' works here")
    from tinynet.backend import get_backend
    with pytest.raises(RuntimeError, match=r"needs an NVIDIA GPU with a driver, or NUMBA_ENABLE_CUDASIM=1"):
        get_backend("cuda")


def test_cuda_backend_has_the_cpu_backend_methods():
    """Same public methods, same parameters (importing the module needs no GPU)."""
    import inspect

    from tinynet.backend import CPUBackend
    from tinynet.cuda_backend import CUDABackend

    def methods(cls):
        return {n: inspect.signature(f) for n, f in vars(cls).items()
                if callable(f) and not n.startswith("_")}

    cpu_m, gpu_m = methods(CPUBackend), methods(CUDABackend)
    missing = set(cpu_m) - set(gpu_m)
    assert not missing, f"CUDABackend lacks {sorted(missing)}: add them (and their @cuda.jit kernels)"
    for name in set(cpu_m) & set(gpu_m):
        assert list(gpu_m[name].parameters) == list(cpu_m[name].parameters), name
