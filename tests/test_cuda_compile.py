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
    ("matmul_nn", la.matmul_nn_cuda, (M, M, M, S, numba.int64, V), True),
    ("matmul_nn_C", la.matmul_nn_cuda, (MC, MC, MC, S, numba.int64, V), True),
    ("matmul_nt", la.matmul_nt_cuda, (M, M, M, S, numba.int64, V), True),
    ("matmul_tn", la.matmul_tn_cuda, (M, M, M, S, numba.int64, V), True),
    ("matmul_tt", la.matmul_tt_cuda, (M, M, M, S, numba.int64, V), True),
    ("add_bias", la.add_bias_cuda, (M, V), True),
    ("col_sum", la.col_sum_cuda, (M, V), True),
    ("col_sum_axpy", la.col_sum_axpy_cuda, (S, M, V, V), True),
    ("append_ones", la.append_ones_cuda, (M, M), True),
    ("axpy", la.axpy_cuda, (S, V, V), True),
    ("scale", la.scale_cuda, (S, V), True),
    ("fill", la.fill_cuda, (V, S), True),
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
# ---- curvature products and chapter-6 statistics (issue 18: these were not checked)
from tinynet.kernels import second_order as so  # noqa: E402
from tinynet.kernels import stats as st  # noqa: E402
D = float64[:, :]
CASES += [
    ("sigmoid_d2_mul", so.sigmoid_d2_mul_cuda, (M, M, M, M), True),
    ("tanh_d2_mul", so.tanh_d2_mul_cuda, (M, M, M, M), True),
    ("relu_d2_mul", so.relu_d2_mul_cuda, (M, M, M, M), True),
    ("mul", so.mul_cuda, (V, V, V), True),
    ("bce_hess_vp", so.bce_hess_vp_cuda, (M, M, M, S, S, boolean, M), True),
    ("softmax_hess_vp", so.softmax_hess_vp_cuda, (M, M, M, S, boolean, M), True),
    ("col_mean", st.col_mean_cuda, (M, V), True),
    ("running_upper", st.running_upper_cuda, (M, M, S, S), True),
    ("running_upper_f64", st.running_upper_cuda, (D, D, float64, float64), False),
    ("running_upper_f64_f32", st.running_upper_cuda, (D, M, float64, float64), False),   # device factors
    ("kfac_bias_running_f64_f32", st.kfac_bias_running_cuda, (D, V, float64, float64), False),
]
KERNEL_MODULES += [so, st]
# ---- the register-blocked GEMM candidate (issue 18, part 4)
from tinynet.kernels import gemm as gm  # noqa: E402
CASES += [
    ("matmul_nn_rb", gm.matmul_nn_rb_cuda, (M, M, M), True),
    ("matmul_nn_rb_C", gm.matmul_nn_rb_cuda, (MC, MC, MC), True),
    ("matmul_nn_rb_f64", gm.matmul_nn_rb_cuda, (D, D, D), False),
]
KERNEL_MODULES += [gm]

# ---- seed 004's eigendecomposition kernels (issue 16)
from tinynet.kernels import ed as edk  # noqa: E402
T3, T4, I32 = float32[:, :, :], float32[:, :, :, :], numba.int32[:]
CASES += [
    ("channel_mean", edk.channel_mean_cuda, (M, V, I), True),
    ("group_outer", edk.group_outer_cuda, (M, V, M, V, T3, S, S, I), True),
    ("group_sym", edk.group_sym_cuda, (T3, T3), True),
    ("group_apply", edk.group_apply_cuda, (M, V, T3, V, M, S, I, boolean), True),
    ("assemble", edk.assemble_cuda, (T3, M, T3), True),
    ("weights_vjp", edk.weights_vjp_cuda, (T3, T3, M, M, T3, M), True),
    ("weights_jvp", edk.weights_jvp_cuda, (T3, T3, M, M, M, T3), True),
    ("spectral_vjp", edk.spectral_vjp_cuda, (T3, M, T3, M, T3, T4, I), True),
    ("spectral_jvp", edk.spectral_jvp_cuda, (T3, M, T3, T3, M, T4, I), True),
    ("pi_forward", edk.pi_forward_cuda, (T3, T3, T4, T3, M, T4, I32), True),
    ("pi_vjp", edk.pi_vjp_cuda, (T3, T4, M, T3, M, T3, I, T4, T3), True),
    ("pi_jvp", edk.pi_jvp_cuda, (T3, T4, M, T3, T3, M, I, T4, T3), True),
]
KERNEL_MODULES += [edk]

# ---- KFAC's curvature rows on the device (issue 18 part 4): float64 on purpose,
# as the host path they replace (probabilities cast to float64)
from tinynet.kernels import sampling as smp  # noqa: E402
CASES += [
    ("softmax_sqrt_d_rows", smp.softmax_sqrt_d_rows_cuda, (M, M, D, M), False),
    ("softmax_sample", smp.softmax_sample_cuda, (M, float64[:], M), False),
    ("bce_sqrt_d_rows", smp.bce_sqrt_d_rows_cuda, (M, M, D, M, float32, float32), False),
    ("bce_sample", smp.bce_sample_cuda, (M, D, M, float32, float32), False),
    ("unit_column", smp.unit_column_cuda, (M, numba.int64, float64), False),
    ("gauss_sample", smp.gauss_sample_cuda, (M, D, float64, M), False),
]
KERNEL_MODULES += [smp]

# ---- per-step scalars kept on the device (KFAC's trust region): q and nu are
# float64 as the host floats they replace; axpy_s forms its float64 coefficient
# once, then updates the float32 vector (its one f64 multiply is that product)
from tinynet.kernels import scalars as sc  # noqa: E402
CASES += [
    ("kl_clip_factor", sc.kl_clip_factor_cuda, (float64[:], float64, float64), False),
    ("axpy_s", sc.axpy_s_cuda, (float64, float64[:], I, V, V), False),
    ("sum_into", sc.sum_into_cuda, (float64[:], float64[:], I), False),
    ("ratio_clip", sc.ratio_clip_cuda, (float64[:], I, float64, boolean), False),
    ("scale_s", sc.scale_s_cuda, (float64[:], I, V), False),
]
KERNEL_MODULES += [sc]

# ---- conjugate gradient's scalars on the device (Hessian-free): float64 as
# the host floats they replace; axpy_if / scale_if update the float32 vectors
# with a coefficient formed once in float64
from tinynet.kernels import cg as cgk  # noqa: E402
CASES += [
    ("cg_start", cgk.cg_start_cuda, (float64[:], I, float64, I), False),
    ("cg_step_length", cgk.cg_step_length_cuda, (float64[:],), False),
    ("cg_direction", cgk.cg_direction_cuda, (float64[:],), False),
    ("cg_stop_rules", cgk.cg_stop_rules_cuda, (float64[:], I, I, boolean, float64, float64, I), False),
    ("cg_axpy_if", cgk.cg_axpy_if_cuda, (float64, float64[:], I, V, V), False),
    ("cg_scale_if", cgk.cg_scale_if_cuda, (float64[:], I, V), False),
]
KERNEL_MODULES += [cgk]

# ---- batch norm's running statistics on the device: the update in float64 (as
# the host numpy code it replaces), the evaluation statistics in the batch's dtype
from tinynet.kernels import running_stats as rsk  # noqa: E402
CASES += [
    ("running_update", rsk.running_update_cuda, (float64[:], V, V, float64, I, boolean), False),
    ("running_eval", rsk.running_eval_cuda, (float64[:], V, V, float32), False),
]
KERNEL_MODULES += [rsk]

# ---- the quasi-diagonal reparametrization's update (seed 003): float64 entries
# as the host expression it replaces, rounded once into the float32 parameters
from tinynet.kernels import reparam as rpk  # noqa: E402
CASES += [
    ("qd_update", rpk.qd_update_cuda, (V, float64[:], float64[:], float64[:], float64, V, float64[:]), False),
    ("qd_observe", rpk.qd_observe_cuda, (M, float64[:], float64, boolean), False),
    ("qd_vectors", rpk.qd_vectors_cuda, (float64[:], boolean, boolean, float64, float64[:], float64[:]), False),
]
KERNEL_MODULES += [rpk]

# ---- natural gradient with a twist (identity / neuron metrics): float64 statistics
from tinynet.kernels import twist as twk  # noqa: E402
I64 = numba.int64[:]
CASES += [
    ("twist_g2", twk.twist_g2_cuda, (M, numba.int64, float64, float64[:]), False),
    ("twist_den", twk.twist_den_cuda, (float64[:], float64, float64[:]), False),
    ("twist_partial", twk.twist_partial_cuda, (V, float64[:], I64, I64, float64[:]), False),
    ("twist_norm", twk.twist_norm_cuda, (float64[:], I64, float64, float64, float64[:], float64[:]), False),
    ("twist_apply", twk.twist_apply_cuda, (V, float64[:], I64, float64[:], float64, V, boolean), False),
    ("twist_apply_direction", twk.twist_apply_cuda, (V, float64[:], I64, float64[:], float64, float64[:], boolean),
     False),
]
KERNEL_MODULES += [twk]

# ---- ACP's heuristic alpha from the device's signal rows (float32 in, float32 max)
CASES += [
    ("sq_max", st.sq_max_cuda, (V, S, V), True),
]

_F64_OP = re.compile(r"^\s*[a-z][\w.]*\.f64\b", re.M)   # an instruction on f64 operands


class _SM80:
    compute_capability = (8, 0)


def _compile(kernel, sig):
    """PTX of kernel at signature sig for sm_80. A kernel that calls
    @cuda.jit(device=True) functions compiles them for the current device's
    compute capability, which needs a driver: without a GPU that lookup is
    answered with sm_80 (TOOLCHAIN.md)."""
    from unittest import mock

    import numba.cuda.dispatcher as disp
    patch = mock.patch.object(disp, "get_current_device", lambda: _SM80()) if not cuda.is_available() \
        else mock.patch.object(disp, "get_current_device", disp.get_current_device)
    try:
        with patch:
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


def _kernel_name(k):
    return k.__name__ if hasattr(k, "__name__") else k.py_func.__name__


def test_every_cuda_kernel_is_checked():
    """A new @cuda.jit kernel in tinynet.kernels must be added to CASES."""
    names = {(c[1].py_func.__module__, _kernel_name(c[1])) for c in CASES}
    for mod in KERNEL_MODULES:
        for name in dir(mod):
            if name.endswith("_cuda"):
                assert (mod.__name__, name) in names, f"{mod.__name__}.{name} has no compile check"


def test_every_kernel_module_is_listed():
    """Every module of tinynet.kernels that defines @cuda.jit kernels is in
    KERNEL_MODULES (so that the test above sees its kernels)."""
    import importlib
    import pkgutil

    import tinynet.kernels as pkg
    from numba.cuda.dispatcher import CUDADispatcher
    listed = {m.__name__ for m in KERNEL_MODULES}
    for info in pkgutil.iter_modules(pkg.__path__):
        mod = importlib.import_module(f"{pkg.__name__}.{info.name}")
        kernels = [n for n, v in vars(mod).items() if isinstance(v, CUDADispatcher) and n.endswith("_cuda")]
        assert not kernels or mod.__name__ in listed, \
            f"{mod.__name__} defines @cuda.jit kernels {sorted(kernels)[:4]}... with no compile check: add a CASES section"


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


def test_register_blocked_gemm_keeps_its_tile_in_registers():
    """The 4 x 4 accumulator tile is a local array: it must not spill to local
    memory (that would cost a memory round trip per FMA)."""
    ptx = _compile(gm.matmul_nn_rb_cuda, (MC, MC, MC))
    assert "ld.local" not in ptx and "st.local" not in ptx


def test_kernels_cast_with_np_float64_not_float():
    """Numba types float(x) of a float32 x as float32 (on the CPU and in CUDA
    kernels; the simulator, plain Python, gives float64), so a kernel meaning
    "this sum in float64" must write np.float64(x)."""
    import inspect
    import pkgutil

    import tinynet.kernels as pkg
    bare = re.compile(r"(?<![\w.])float\(")
    for info in pkgutil.iter_modules(pkg.__path__):
        src = inspect.getsource(__import__(f"{pkg.__name__}.{info.name}", fromlist=["_"]))
        hits = [line.strip() for line in src.splitlines() if bare.search(line.split("#")[0])]
        assert not hits, f"tinynet.kernels.{info.name}: {hits[:3]}"


def test_float32_products_of_float64_casts_are_float64():
    """qd_observe's sum of squares of float32 rows runs in float64 (mul.f64)."""
    ptx = _compile(rpk.qd_observe_cuda, (M, float64[:], float64, boolean))
    assert "cvt.f64.f32" in ptx and "mul.f64" in ptx and "mul.f32" not in ptx
