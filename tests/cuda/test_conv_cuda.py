"""The convolution kernels (tinynet/kernels/conv.py) under the CUDA simulator:
each @cuda.jit twin launched through CUDABackend.launch equals its CPU @njit
twin (the row layout: im2col, col2im, chw_to_rows; the products
of the training path, which read the image rows directly: conv_fwd,
conv_wgrad, conv_igrad, also against im2col-based references) for stride /
padding / non-square cases, float32 and float64; and a Conv2d stage bound to the CUDA backend gives the same
forward, vjp, jvp, hvp_x, hvp_z and Kronecker rows as on the CPU.

Tiny shapes: the simulator runs ~10^4 threads/s. The copies (im2col and the
two layouts) must agree exactly; col2im sums in another order on the device
(a gather per input pixel), so 1e-12 relative in float64, 1e-6 in float32.
"""
import numpy as np
import pytest

from tinynet.backend import CPUBackend
from tinynet.cuda_backend import CUDABackend
from tinynet.kernels import conv as K
from tinynet.layers import Conv2d
from tinynet.layers.conv2d import conv_output_size

cpu = CPUBackend()
gpu = CUDABackend()
DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]

# (n, C, H, W, kh, kw, sh, sw, ph, pw)
GEOMETRIES = {
    "n2-c1-4x4-k3-s1-p0": (2, 1, 4, 4, 3, 3, 1, 1, 0, 0),
    "n1-c2-4x4-k3-s1-p1": (1, 2, 4, 4, 3, 3, 1, 1, 1, 1),
    "n2-c2-5x5-k3-s2-p1": (2, 2, 5, 5, 3, 3, 2, 2, 1, 1),
    "n1-c3-4x5-k2x3-s1x2-p1x0": (1, 3, 4, 5, 2, 3, 1, 2, 1, 0),
    "n2-c1-3x3-k5-s1-p1-one-position": (2, 1, 3, 3, 5, 5, 1, 1, 1, 1),
}


def geometry(name):
    """(n, kernel args C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo)."""
    n, C, H, W, kh, kw, sh, sw, ph, pw = GEOMETRIES[name]
    Ho = conv_output_size(H, kh, sh, ph, "test", "height")
    Wo = conv_output_size(W, kw, sw, pw, "test", "width")
    return n, (C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo)


def tol(dtype):
    return 1e-6 if dtype == np.float32 else 1e-12


def run_both(name, inp, out_shape, *extra):
    """The kernel pair `name` through both backends: (CPU result, device result
    copied to the host). The device output starts as NaN so that an entry the
    kernel fails to write shows."""
    ref = np.full(out_shape, np.nan, dtype=inp.dtype)
    cpu.launch(K, name, ref.size, inp, ref, *extra)
    dev = gpu.asarray(np.full(out_shape, np.nan, dtype=inp.dtype))
    gpu.launch(K, name, dev.size, gpu.asarray(inp), dev, *extra)
    got = gpu.to_host(dev)
    assert got.dtype == inp.dtype and not np.isnan(got).any() and not np.isnan(ref).any()
    return ref, got


@pytest.mark.parametrize("geo", list(GEOMETRIES))
@pytest.mark.parametrize("dtype", DTYPES)
def test_im2col_and_col2im(geo, dtype):
    n, g = geometry(geo)
    C, H, W, kh, kw = g[:5]
    P, Kp = g[-2] * g[-1], C * kh * kw
    rng = np.random.default_rng(1)
    X = rng.standard_normal((n, C * H * W)).astype(dtype)
    ref, got = run_both("im2col", X, (n * P, Kp), *g)
    np.testing.assert_array_equal(got, ref)
    dU = rng.standard_normal((n * P, Kp)).astype(dtype)
    ref, got = run_both("col2im", dU, (n, C * H * W), *g)
    np.testing.assert_allclose(got, ref, rtol=tol(dtype), atol=tol(dtype))


@pytest.mark.parametrize("n, P, O", [(2, 4, 3), (1, 9, 2), (3, 1, 5)], ids=["n2-P4-O3", "n1-P9-O2", "n3-P1-O5"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_layout_chw_to_rows(n, P, O, dtype):
    rng = np.random.default_rng(2)
    Y = rng.standard_normal((n, O * P)).astype(dtype)
    back, back_dev = run_both("chw_to_rows", Y, (n * P, O), P)
    np.testing.assert_array_equal(back_dev, back)
    np.testing.assert_array_equal(back, Y.reshape(n, O, P).transpose(0, 2, 1).reshape(n * P, O))


class Out:
    """An output argument of a kernel call, NaN-filled so that an entry the
    kernel fails to write shows."""

    def __init__(self, *shape):
        self.shape = shape


def _both(name, count, args, dtype):
    """Kernel `name` on both backends; `args` are host arrays, ints and Out
    placeholders: ([CPU outputs], [device outputs copied to the host])."""
    outs_c, args_c, outs_g, args_g = [], [], [], []
    for a in args:
        if isinstance(a, Out):
            o = np.full(a.shape, np.nan, dtype=dtype)
            outs_c.append(o)
            outs_g.append(gpu.asarray(o.copy()))
            args_c.append(o)
            args_g.append(outs_g[-1])
        else:
            args_c.append(a)
            args_g.append(gpu.asarray(a) if isinstance(a, np.ndarray) else a)
    cpu.launch(K, name, count, *args_c)
    gpu.launch(K, name, count, *args_g)
    outs_g = [gpu.to_host(o) for o in outs_g]
    for c, g in zip(outs_c, outs_g):
        assert g.dtype == np.dtype(dtype) and not np.isnan(g).any() and not np.isnan(c).any()
    return outs_c, outs_g


@pytest.mark.parametrize("geo", list(GEOMETRIES))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("O", [1, 5], ids=["O1", "O5"])      # O5: the four-way unrolled sums and a remainder
def test_conv_products(geo, dtype, O):
    """conv_fwd (U W^T + 1 b^T in the image layout), conv_wgrad (U^T B_r, 1^T B_r)
    and conv_igrad (col2im(B_r W)): device == CPU twin, and both == the same
    products written with im2col and col2im (sums in another
    order: 1e-12 / 1e-5 relative)."""
    n, g = geometry(geo)
    C, H, W, kh, kw = g[:5]
    P, Kp = g[-2] * g[-1], C * kh * kw
    rng = np.random.default_rng(5)
    X = rng.standard_normal((n, C * H * W)).astype(dtype)
    WT = rng.standard_normal((Kp, O)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    B = rng.standard_normal((n, O * P)).astype(dtype)
    t = 1e-5 if dtype == np.float32 else 1e-12

    def close(got, ref):
        np.testing.assert_allclose(got, ref, rtol=t, atol=t * np.abs(ref).max())

    U = np.empty((n * P, Kp), dtype=dtype)
    cpu.launch(K, "im2col", U.size, X, U, *g)
    Br = np.empty((n * P, O), dtype=dtype)
    cpu.launch(K, "chw_to_rows", Br.size, B, Br, P)
    Yref = (U @ WT + b).reshape(n, P, O).transpose(0, 2, 1).reshape(n, O * P)
    dXref = np.empty((n, C * H * W), dtype=dtype)
    cpu.launch(K, "col2im", dXref.size, np.ascontiguousarray(Br @ WT.T), dXref, *g)

    (Y,), (Yg,) = _both("conv_fwd", n * O * P, (X, WT, b, Out(n, O * P)) + g, dtype)
    close(Y, Yref)
    close(Yg, Y)
    (gW, gb), (gWg, gbg) = _both("conv_wgrad", Kp * O + O, (X, B, Out(Kp, O), Out(O)) + g, dtype)
    close(gW, U.T @ Br)
    close(gb, Br.sum(axis=0))
    close(gWg, gW)
    close(gbg, gb)
    (dX,), (dXg,) = _both("conv_igrad", n * C * H * W, (B, WT, Out(n, C * H * W)) + g, dtype)
    close(dX, dXref)
    close(dXg, dX)


# ---------------------------------------------------------------- the stage on both backends

# (n, C, O, (H, W), kernel, stride, padding); n*P and K at most 16, so that each
# product is one 16x16 matmul tile (the simulator's cost is in the matmul blocks)
STAGES = {
    "n1-c1o2-3x3-k3-s1-p1": (1, 1, 2, (3, 3), 3, 1, 1),
    "n1-c1o2-5x5-k3-s2-p1": (1, 1, 2, (5, 5), 3, 2, 1),
    "n2-c2o3-3x5-k2x3-s1x2-p1x0": (2, 2, 3, (3, 5), (2, 3), (1, 2), (1, 0)),
}


def bound_pair(name, dtype):
    n, C, O, (H, W), kernel, stride, padding = STAGES[name]
    stages = []
    rng = np.random.default_rng(3)
    theta = rng.standard_normal(Conv2d(C, O, kernel, stride, padding).n_params).astype(dtype)
    for bk in (cpu, gpu):
        s = Conv2d(C, O, kernel, stride, padding)
        s.set_input_shape((C, H, W))
        s.bind(bk, bk.asarray(theta.copy()))
        stages.append(s)
    return stages, rng, n, C * H * W


@pytest.mark.parametrize("name", list(STAGES))
@pytest.mark.parametrize("dtype", DTYPES)
def test_stage_on_cuda_equals_cpu(name, dtype):
    (sc, sg), rng, n, d_in = bound_pair(name, dtype)
    t = 1e-5 if dtype == np.float32 else 1e-12

    def same(got_dev, ref):
        got = gpu.to_host(got_dev)
        assert got.dtype == np.dtype(dtype) and got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=t, atol=t * np.abs(ref).max())

    Z = rng.standard_normal((n, d_in)).astype(dtype)
    oc, cc = sc.forward(Z)
    og, cg = sg.forward(gpu.asarray(Z))
    same(og, oc)
    B = rng.standard_normal(oc.shape).astype(dtype)
    gc, gg = np.zeros(sc.n_params, dtype), gpu.zeros(sg.n_params, dtype)
    same(sg.vjp(cg, gpu.asarray(B), gg), sc.vjp(cc, B, gc))
    same(gg, gc)
    dZ = rng.standard_normal(Z.shape).astype(dtype)
    dx = rng.standard_normal(sc.n_params).astype(dtype)
    same(sg.jvp(cg, gpu.asarray(dZ), gpu.asarray(dx)), sc.jvp(cc, dZ, dx))
    same(sg.jvp(cg, None, gpu.asarray(dx)), sc.jvp(cc, None, dx))
    acc_c = sc.hvp_x(cc, B, dZ, dx, np.zeros(sc.n_params, dtype))
    acc_g = sg.hvp_x(cg, gpu.asarray(B), gpu.asarray(dZ), gpu.asarray(dx), gpu.zeros(sg.n_params, dtype))
    same(acc_g, acc_c)
    same(sg.hvp_z(cg, gpu.asarray(B), gpu.asarray(dZ), gpu.asarray(dx)), sc.hvp_z(cc, B, dZ, dx))
    same(sg.kron_rows(cg), sc.kron_rows(cc))
    same(sg.kron_signal(cg, gpu.asarray(B)), sc.kron_signal(cc, B))
