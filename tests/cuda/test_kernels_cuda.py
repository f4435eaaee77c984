"""Every @cuda.jit kernel against its CPU @njit twin, through the two backends
(so the CUDA launch configurations are exercised too), on tiny shapes that
include ragged edges: a shape that is not a multiple of the matmul tile or of a
warp, several blocks, strided and transposed views. float32 and float64.

Tolerances: float64 1e-12 relative (the twins compute the same expression;
only the summation order of matmul / dot and FMA contraction on a real GPU
differ); float32 1e-5, or 2e-6 for elementwise maps.
"""
import numpy as np
import pytest
from numba import cuda

from tinynet.backend import CPUBackend, Profile
from tinynet.cuda_backend import CUDABackend

cpu = CPUBackend()
gpu = CUDABackend()
DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]


def rtol(dtype, f32=1e-5):
    return f32 if dtype == np.float32 else 1e-12


def rand(rng, shape, dtype, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


def both(a):
    """(host array, device copy)."""
    return a, gpu.asarray(a)


def check(got_dev, ref, dtype, f32=1e-5, atol=0.0):
    got = gpu.to_host(got_dev)
    assert got.dtype == np.dtype(dtype)
    assert got.shape == np.shape(ref)
    np.testing.assert_allclose(got, ref, rtol=rtol(dtype, f32), atol=atol)


# ---------------------------------------------------------------- matmul

MATMUL_SHAPES = [  # (m, k, n)
    pytest.param((5, 7, 3), id="5x7@7x3"),
    pytest.param((17, 33, 18), id="17x33@33x18"),   # 2x2 blocks, 3 ragged tile steps
    pytest.param((1, 1, 1), id="1x1@1x1"),
    pytest.param((3, 0, 2), id="k0"),               # empty inner dimension: zeros
]


@pytest.mark.parametrize("shape", MATMUL_SHAPES)
@pytest.mark.parametrize("ta, tb", [(False, False), (False, True), (True, False), (True, True)],
                         ids=["nn", "nt", "tn", "tt"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul(shape, ta, tb, dtype):
    m, k, n = shape
    rng = np.random.default_rng(m * 100 + k + 7 * n)
    A = rand(rng, (k, m) if ta else (m, k), dtype)
    B = rand(rng, (n, k) if tb else (k, n), dtype)
    ref = cpu.matmul(A, B, ta=ta, tb=tb)
    got = gpu.matmul(gpu.asarray(A), gpu.asarray(B), ta=ta, tb=tb)
    check(got, ref, dtype, atol=1e-6 if dtype == np.float32 else 1e-14)


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_views_as_linear_passes_them(dtype):
    """Linear's operands: W^T as a reshaped slice of a flat parameter vector,
    the weight gradient written into a slice of a flat gradient vector, a
    transposed (F-contiguous) view, and a strided column slice."""
    rng = np.random.default_rng(3)
    n_in, n_out, batch = 7, 5, 9
    theta = rand(rng, 3 + n_in * n_out + n_out, dtype)
    H = rand(rng, (batch, n_in), dtype)
    Bo = rand(rng, (batch, n_out), dtype)
    d_theta = gpu.asarray(theta)
    WT_h = theta[3:3 + n_in * n_out].reshape(n_in, n_out)
    WT_d = d_theta[3:3 + n_in * n_out].reshape(n_in, n_out)
    dH, dBo = gpu.asarray(H), gpu.asarray(Bo)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    # forward A = H W^T, input gradient B W (= B (W^T)^T)
    check(gpu.matmul(dH, WT_d), H @ WT_h, dtype, atol=tol)
    check(gpu.matmul(dBo, WT_d, tb=True), Bo @ WT_h.T, dtype, atol=tol)
    # weight gradient H^T B written into a view of a flat vector
    grad = gpu.zeros(n_in * n_out + n_out, dtype)
    gWT = grad[:n_in * n_out].reshape(n_in, n_out)
    gpu.matmul(dH, dBo, out=gWT, ta=True)
    g = gpu.to_host(grad)
    np.testing.assert_allclose(g[:n_in * n_out].reshape(n_in, n_out), H.T @ Bo, rtol=tol, atol=tol)
    assert not np.any(g[n_in * n_out:])            # nothing written past the view
    # an F-contiguous operand (A.T of a C-contiguous array), both flag settings
    check(gpu.matmul(dH.T, dBo), H.T @ Bo, dtype, atol=tol)
    check(gpu.matmul(dH.T, dH.T, ta=True), H @ H.T, dtype, atol=tol)
    # a strided, non-contiguous view
    check(gpu.matmul(dH[:, ::2], WT_d[::2, :]), H[:, ::2] @ WT_h[::2, :], dtype, atol=tol)


@pytest.mark.parametrize("ta, tb", [(False, False), (True, False), (True, True)], ids=["nn", "tn", "tt"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_acc_into_a_view_of_a_flat_vector(ta, tb, dtype):
    """out += alpha op(A) op(B) on a reshaped slice of a flat vector (KFAC's
    update of its theta slice), as the CPU backend's fused BLAS call."""
    rng = np.random.default_rng(5)
    m, k, n = 17, 9, 18
    A = rand(rng, (k, m) if ta else (m, k), dtype)
    B = rand(rng, (n, k) if tb else (k, n), dtype)
    flat = rand(rng, 2 + m * n + 3, dtype)
    ref = flat.copy()
    cpu.matmul_acc(A, B, ref[2:2 + m * n].reshape(m, n), -0.3, ta=ta, tb=tb)
    d = gpu.asarray(flat)
    gpu.matmul_acc(gpu.asarray(A), gpu.asarray(B), d[2:2 + m * n].reshape(m, n), -0.3, ta=ta, tb=tb)
    check(d, ref, dtype, atol=1e-6 if dtype == np.float32 else 1e-14)
    np.testing.assert_array_equal(gpu.to_host(d)[:2], flat[:2])         # nothing written outside the view
    np.testing.assert_array_equal(gpu.to_host(d)[2 + m * n:], flat[2 + m * n:])


@pytest.mark.parametrize("ta, tb", [(False, False), (False, True), (True, False), (True, True)],
                         ids=["nn", "nt", "tn", "tt"])
def test_matmul_acc_is_one_launch_with_the_bits_of_product_then_axpy(monkeypatch, ta, tb):
    """The matmul kernels' accumulating epilogue: one launch, no device
    allocation, scratch untouched, and in float32 the same bits as the product
    stored and then an axpy (what the backend did before the epilogue)."""
    rng = np.random.default_rng(6)
    m, k, n = 6, 5, 4
    A = rand(rng, (k, m) if ta else (m, k), np.float32)
    B = rand(rng, (n, k) if tb else (k, n), np.float32)
    out0 = rand(rng, (m, n), np.float32)
    dA, dB = gpu.asarray(A), gpu.asarray(B)
    d_out, scratch = gpu.asarray(out0), gpu.zeros(m * n, np.float32)
    allocated = []
    real = cuda.device_array
    monkeypatch.setattr(cuda, "device_array", lambda *a, **k: allocated.append(a) or real(*a, **k))
    gpu.profile = Profile()
    try:
        gpu.matmul_acc(dA, dB, d_out, -0.5, ta=ta, tb=tb, scratch=scratch)
        launches = dict(gpu.profile.calls)
    finally:
        gpu.profile = None
    monkeypatch.setattr(cuda, "device_array", real)
    assert allocated == [] and launches == {"matmul_acc": 1}
    assert not np.any(gpu.to_host(scratch))
    two = gpu.asarray(out0)
    P = gpu.matmul(dA, dB, ta=ta, tb=tb)
    gpu.axpy(-0.5, P.reshape(m * n), two.reshape(m * n))
    np.testing.assert_array_equal(gpu.to_host(d_out), gpu.to_host(two))
    opA = A.T if ta else A
    opB = B.T if tb else B
    check(d_out, out0 - 0.5 * (opA.astype(np.float64) @ opB), np.float32, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_bias_is_one_launch_with_the_bits_of_matmul_then_add_bias(dtype):
    """A Linear stage's forward, out = H W^T + b, through the bias epilogue;
    also into a given out and with an F-contiguous (transposed-view) operand."""
    rng = np.random.default_rng(8)
    H, WT, b = rand(rng, (7, 5), dtype), rand(rng, (5, 18), dtype), rand(rng, 18, dtype)
    dH, dWT, db = gpu.asarray(H), gpu.asarray(WT), gpu.asarray(b)
    gpu.profile = Profile()
    try:
        got = gpu.matmul_bias(dH, dWT, db)
        launches = dict(gpu.profile.calls)
    finally:
        gpu.profile = None
    assert launches == {"matmul_bias": 1}
    two = gpu.add_bias(gpu.matmul(dH, dWT), db)
    np.testing.assert_array_equal(gpu.to_host(got), gpu.to_host(two))
    check(got, cpu.matmul_bias(H, WT, b), dtype)
    out = gpu.asarray(np.full((7, 18), np.nan, dtype))
    gpu.matmul_bias(dH, dWT, db, out=out)
    np.testing.assert_array_equal(gpu.to_host(out), gpu.to_host(two))
    WT_F = gpu.asarray(np.ascontiguousarray(WT.T)).T            # F-contiguous view of the same matrix
    np.testing.assert_array_equal(gpu.to_host(gpu.matmul_bias(dH, WT_F, db)), gpu.to_host(two))
    with pytest.raises(ValueError, match="matmul_bias: b must be"):
        gpu.matmul_bias(dH, dWT, gpu.asarray(b[:5]))
    with pytest.raises(ValueError, match="matmul_bias: b has shape"):
        cpu.matmul_bias(H, WT, b[:5])


def test_matmul_rejects_bad_shapes_and_dtypes():
    A = gpu.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="inner sizes differ"):
        gpu.matmul(A, gpu.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="dtypes"):
        gpu.matmul(A, gpu.zeros((4, 2), np.float64))
    with pytest.raises(ValueError, match="out has shape"):
        gpu.matmul(A, gpu.zeros((4, 2), np.float32), out=gpu.zeros((3, 3), np.float32))


# ---------------------------------------------------------------- bias, sums, vectors

SHAPES_2D = [pytest.param((5, 7), id="5x7"), pytest.param((17, 33), id="17x33")]


@pytest.mark.parametrize("shape", SHAPES_2D)
@pytest.mark.parametrize("dtype", DTYPES)
def test_add_bias_col_sum(shape, dtype):
    rng = np.random.default_rng(shape[0])
    A, b = rand(rng, shape, dtype), rand(rng, shape[1], dtype)
    check(gpu.add_bias(gpu.asarray(A), gpu.asarray(b)), cpu.add_bias(A.copy(), b), dtype, f32=0)
    # same summation order as the CPU twin: equal to the last bit in float32 too
    check(gpu.col_sum(gpu.asarray(A)), cpu.col_sum(A), dtype, f32=0)
    check(gpu.append_ones(gpu.asarray(A)), np.hstack([A, np.ones((shape[0], 1), dtype)]), dtype, f32=0)


@pytest.mark.parametrize("shape", SHAPES_2D)
@pytest.mark.parametrize("dtype", DTYPES)
def test_col_sum_axpy_equals_the_cpu_and_col_sum_then_axpy(shape, dtype):
    """A bias's gradient and SGD step in one launch: the CPU twin's bits, and
    the bits of the two launches it replaces."""
    rng = np.random.default_rng(shape[1])
    A, y0 = rand(rng, shape, dtype), rand(rng, shape[1], dtype)
    out, y = np.zeros(shape[1], dtype), y0.copy()
    cpu.col_sum_axpy(-0.3, A, out, y)
    d_out, d_y, dA = gpu.zeros(shape[1], dtype), gpu.asarray(y0), gpu.asarray(A)
    gpu.col_sum_axpy(-0.3, dA, d_out, d_y)
    check(d_out, out, dtype, f32=0)
    check(d_y, y, dtype, f32=0)
    two = gpu.asarray(y0)
    gpu.axpy(-0.3, gpu.col_sum(dA), two)
    np.testing.assert_array_equal(gpu.to_host(d_y), gpu.to_host(two))


@pytest.mark.parametrize("n", [pytest.param(37, id="n37"), pytest.param(300, id="n300")])
@pytest.mark.parametrize("dtype", DTYPES)
def test_axpy_scale_dot(n, dtype):
    rng = np.random.default_rng(n)
    x, y = rand(rng, n, dtype), rand(rng, n, dtype)
    check(gpu.axpy(-0.3, gpu.asarray(x), gpu.asarray(y)), cpu.axpy(-0.3, x, y.copy()), dtype, f32=0)
    check(gpu.scale(1.7, gpu.asarray(x)), cpu.scale(1.7, x.copy()), dtype, f32=0)
    # both accumulate in float64: equal up to the summation order
    assert gpu.dot(gpu.asarray(x), gpu.asarray(y)) == pytest.approx(
        cpu.dot(x, y), rel=1e-13, abs=1e-13 * float(np.abs(x) @ np.abs(y)))


def test_dot_many_blocks():
    """n = 1000: four blocks, a ragged last block, a partial sum per block."""
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal(1000), rng.standard_normal(1000)
    assert gpu.dot(gpu.asarray(x), gpu.asarray(y)) == pytest.approx(x @ y, rel=1e-13)


# ---------------------------------------------------------------- activations


@pytest.mark.parametrize("kind", ["sigmoid", "tanh", "relu"])
@pytest.mark.parametrize("shape", SHAPES_2D)
@pytest.mark.parametrize("dtype", DTYPES)
def test_activations(kind, shape, dtype):
    rng = np.random.default_rng(len(kind) + shape[0])
    Z = rand(rng, shape, dtype, scale=4.0)
    Z[0, :3] = [0, 30, -30]            # relu's kink; saturation of sigmoid and tanh
    G = rand(rng, shape, dtype)
    S = cpu.act_fwd(kind, Z)           # float32 sigmoid: the CPU's fast-exp kernel (4e-7)
    dS = gpu.act_fwd(kind, gpu.asarray(Z))
    check(dS, S, dtype, f32=2e-6, atol=1e-30)
    # derivatives from the same forward output on both sides
    dS = gpu.asarray(S)
    check(gpu.act_mul_d1(kind, dS, gpu.asarray(G)), cpu.act_mul_d1(kind, S, G), dtype, f32=2e-6)
    check(gpu.act_d2(kind, dS), cpu.act_d2(kind, S), dtype, f32=2e-6, atol=1e-30)


# ---------------------------------------------------------------- losses


def _targets(kind, rng, shape, dtype):
    n, k = shape
    if kind == "mse":
        return rand(rng, shape, dtype)
    if kind == "bce":
        return rng.uniform(0, 1, shape).astype(dtype)
    Y = np.zeros(shape, dtype)
    Y[np.arange(n), rng.integers(0, k, n)] = 1
    Y[-1] = rng.uniform(0, 1, k)     # a soft-label row: sum_j y_j != 1
    return Y


def _outputs(kind, rng, shape, dtype):
    if kind == "bce":
        F = rng.uniform(0.01, 0.99, shape).astype(dtype)
        F[0, :2] = [0.0, 1.0]          # clipped to [eps, 1 - eps]
        return F
    return rand(rng, shape, dtype, scale=3.0)


@pytest.mark.parametrize("kind", ["mse", "bce", "softmax_ce"])
@pytest.mark.parametrize("shape", [pytest.param((6, 4), id="6x4"), pytest.param((33, 17), id="33x17")])
@pytest.mark.parametrize("dtype", DTYPES)
def test_losses(kind, shape, dtype):
    rng = np.random.default_rng(len(kind) * 10 + shape[0])
    F, Y = _outputs(kind, rng, shape, dtype), _targets(kind, rng, shape, dtype)
    eps = 1e-7 if dtype == np.float32 else 1e-15
    scale = 1.0 / shape[0]
    l_ref, G_ref = cpu.loss(kind, F, Y, scale, eps=eps)
    l, G = gpu.loss(kind, gpu.asarray(F), gpu.asarray(Y), scale, eps=eps)
    check(l, l_ref, dtype)
    check(G, G_ref, dtype)
    assert gpu.sum(l) == pytest.approx(cpu.sum(l_ref), rel=rtol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax(dtype):
    rng = np.random.default_rng(8)
    F = rand(rng, (9, 5), dtype, scale=10.0)
    check(gpu.softmax(gpu.asarray(F)), cpu.softmax(F), dtype, atol=1e-30)


def test_unknown_loss_kernel():
    with pytest.raises(ValueError, match="unknown loss kernel"):
        gpu.loss("hinge", gpu.zeros((2, 2), np.float32), gpu.zeros((2, 2), np.float32), 1.0)


# ---------------------------------------------------------------- optimizer updates


@pytest.mark.parametrize("rule", ["momentum", "nesterov", "rmsprop", "adam"])
@pytest.mark.parametrize("n", [pytest.param(37, id="n37"), pytest.param(300, id="n300")])
@pytest.mark.parametrize("dtype", DTYPES)
def test_optimizer_updates(rule, n, dtype):
    rng = np.random.default_rng(n + len(rule))
    x, g = rand(rng, n, dtype), rand(rng, n, dtype)
    s1 = rand(rng, n, dtype)
    s2 = np.abs(rand(rng, n, dtype))       # second moments are non-negative
    host = [x.copy(), s1.copy(), s2.copy()]
    dev = [gpu.asarray(a) for a in host]
    dg = gpu.asarray(g)
    for bk, (xx, a, b), gg in ((cpu, host, g), (gpu, dev, dg)):
        for _ in range(2):                 # two steps: the state feeds back
            if rule in ("momentum", "nesterov"):
                bk.momentum_update(xx, a, gg, 0.1, 0.9, rule == "nesterov")
            elif rule == "rmsprop":
                bk.rmsprop_update(xx, b, gg, 0.01, 0.9, 1e-8)
            else:
                bk.adam_update(xx, a, b, gg, 0.01, 0.9, 0.999, 1e-8, 0.1, 0.001)
    for d, h in zip(dev, host):
        check(d, h, dtype, f32=2e-6)


# ---------------------------------------------------------------- arrays and profiling


def test_array_methods():
    a = np.arange(12, dtype=np.float64).reshape(3, 4)
    d = gpu.asarray(a, np.float32)
    assert d.dtype == np.float32 and tuple(d.shape) == (3, 4)
    assert gpu.asarray(d) is d                      # already a C-contiguous device array
    assert gpu.asarray(d, np.float64).dtype == np.float64
    np.testing.assert_array_equal(gpu.to_host(d), a)
    c = gpu.copy(d)
    gpu.scale(2.0, c.reshape(-1))
    np.testing.assert_array_equal(gpu.to_host(d), a)   # the copy is independent
    gpu.copy_into(d, c)
    np.testing.assert_array_equal(gpu.to_host(d), 2 * a)
    gpu.copy_into(d, a)                              # from the host
    np.testing.assert_array_equal(gpu.to_host(d), a)
    with pytest.raises(ValueError, match="does not match"):
        gpu.copy_into(d, gpu.zeros((4, 3), np.float32))
    assert not np.any(gpu.to_host(gpu.zeros((2, 5), np.float64)))
    assert tuple(gpu.empty((2, 5), np.float32).shape) == (2, 5)
    assert gpu.sum(d) == pytest.approx(a.sum())
    gpu.synchronize()


def test_profile_counts_launches():
    bk = CUDABackend()
    bk.profile = Profile()
    A = bk.asarray(np.ones((5, 7), np.float32))
    B = bk.asarray(np.ones((7, 3), np.float32))
    bk.matmul(A, B)
    bk.matmul(A, B)
    bk.act_fwd("tanh", A)
    rows = {r["kernel"]: r for r in bk.profile.rows()}
    assert rows["matmul"]["calls"] == 2 and rows["tanh_fwd"]["calls"] == 1
    assert rows["matmul"]["total_s"] > 0
    assert bk.profile.flops["matmul"] == 2 * (2.0 * 5 * 3 * 7)
