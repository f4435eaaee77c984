"""MaxPool2d and AvgPool2d, each contract method against torch autograd in
float64 (relative error <= 1e-10): the reference is
torch.nn.functional.max_pool2d / avg_pool2d on the rows reshaped to NCHW.

  forward (and, for max, the argmax index against torch's return_indices,
  also with ties: the first max in row-major window order), vjp (the input
  gradient), jvp (torch.func.jvp), jac_z per example (torch.func.jacrev),
  the zero second-order pieces, the *_many host methods against the
  single-direction ones, float32 keeping its dtype, a small conv net's
  gradient through the pooling stage against torch.

Random inputs are standard normal, so windows have no ties (with probability
one) and max pooling is differentiable there. Cases: square and non-square
kernels, the default stride (= kernel), stride < kernel (overlapping windows,
so one input can be the max of several windows), stride > kernel (inputs in
no window), several channels, a single window, a 1x1 kernel. Bad input: one
clear ValueError each.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tinynet as tn
from tinynet.backend import get_backend
from tinynet.layers import STAGES
from torch_ref import torch_loss_fn

torch.set_default_dtype(torch.float64)
RTOL = 1e-10
N = 3           # examples per batch
CD = 3          # directions for the *_many methods

KINDS = {"max": (tn.MaxPool2d, F.max_pool2d), "avg": (tn.AvgPool2d, F.avg_pool2d)}

# (C, (H, W), kernel, stride)
GEOMETRIES = {
    "c1-4x4-k2": (1, (4, 4), 2, None),
    "c3-7x7-k3-s2-overlap": (3, (7, 7), 3, 2),
    "c2-4x6-k2x3": (2, (4, 6), (2, 3), None),
    "c2-5x4-k3x2-s1x2-overlap": (2, (5, 4), (3, 2), (1, 2)),
    "c2-5x5-k2-s3-gaps": (2, (5, 5), 2, 3),
    "c2-3x3-k3-one-window": (2, (3, 3), 3, None),
    "c1-5x3-k1-s2": (1, (5, 3), 1, 2),
}
IDS = [f"{k}-{g}" for k in KINDS for g in GEOMETRIES]


def rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-300)


class Case:
    """A pooling stage bound to the CPU backend, a float64 batch Z, its forward
    context, and the torch reference f(z) on rows."""

    def __init__(self, name, dtype=np.float64):
        kind, geom = name.split("-", 1)
        C, (H, W), kernel, stride = GEOMETRIES[geom]
        cls, fn = KINDS[kind]
        self.kind, self.C, self.H, self.W = kind, C, H, W
        self.rng = np.random.default_rng(sum(map(ord, name)))
        self.stage = cls(kernel, stride)
        self.out_shape = self.stage.set_input_shape((C, H, W))
        self.stage.bind(get_backend("cpu"), np.zeros(0, dtype=dtype))
        self.Z = self.rng.standard_normal((N, C * H * W)).astype(dtype)
        self.out, self.ctx = self.stage.forward(self.Z)
        self.kernel, self.stride = kernel, kernel if stride is None else stride

        def f(z):
            y = fn(z.reshape(-1, C, H, W), self.kernel, self.stride)
            return y.reshape(z.shape[0], -1)

        self.f = f
        self.zt = torch.tensor(self.Z, dtype=torch.float64)
        self.d_in, self.d_out = C * H * W, int(np.prod(self.out_shape))

    def randn(self, *shape):
        return self.rng.standard_normal(shape)


@pytest.fixture(params=IDS)
def case(request):
    return Case(request.param)


def test_output_shape(case):
    ref4 = KINDS[case.kind][1](case.zt.reshape(N, case.C, case.H, case.W), case.kernel, case.stride)
    assert case.out_shape == tuple(ref4.shape[1:])                     # (C, Ho, Wo)
    assert case.out.shape == (N, case.d_out) == (N, ref4[0].numel())
    assert case.out.dtype == np.float64


def test_forward(case):
    assert rel(case.out, case.f(case.zt).numpy()) <= RTOL


def _torch_argmax_columns(z4, kernel, stride):
    """torch's return_indices (flat within each H x W plane) as columns of the
    C-major row: c*H*W + index."""
    _, idx = F.max_pool2d(z4, kernel, stride, return_indices=True)
    n, C, H, W = z4.shape
    return (idx + torch.arange(C).reshape(1, C, 1, 1) * H * W).reshape(n, -1).numpy()


@pytest.mark.parametrize("geom", list(GEOMETRIES))
def test_maxpool_argmax_is_torchs_index(geom):
    case = Case("max-" + geom)
    z4 = case.zt.reshape(N, case.C, case.H, case.W)
    assert np.array_equal(case.stage.argmax(case.ctx), _torch_argmax_columns(z4, case.kernel, case.stride))


@pytest.mark.parametrize("geom", ["c2-4x6-k2x3", "c2-5x4-k3x2-s1x2-overlap", "c3-7x7-k3-s2-overlap"])
def test_maxpool_ties_take_the_first_max_like_torch(geom):
    """Inputs in {0, 1}: most windows hold several maxima. The argmax (and so
    the vjp, which scatters to it) is torch's: the first max in row-major
    window order."""
    case = Case("max-" + geom)
    Z = case.rng.integers(0, 2, size=case.Z.shape).astype(np.float64)
    out, ctx = case.stage.forward(Z)
    z4 = torch.tensor(Z).reshape(N, case.C, case.H, case.W)
    A = case.stage.argmax(ctx)
    assert np.array_equal(A, _torch_argmax_columns(z4, case.kernel, case.stride))
    B = case.randn(N, case.d_out)
    z = torch.tensor(Z).requires_grad_(True)
    (case.f(z) * torch.tensor(B)).sum().backward()
    assert rel(case.stage.vjp(ctx, B), z.grad.numpy()) <= RTOL


def test_maxpool_nan_propagates_like_torch():
    s = tn.MaxPool2d(2)
    s.set_input_shape((1, 2, 4))
    s.bind(get_backend("cpu"), np.zeros(0))
    Z = np.array([[np.nan, 1.0, 3.0, 2.0, 0.0, np.nan, 5.0, 4.0]])
    out, ctx = s.forward(Z)
    ref, idx = F.max_pool2d(torch.tensor(Z).reshape(1, 1, 2, 4), 2, return_indices=True)
    assert np.array_equal(out, ref.reshape(1, -1).numpy(), equal_nan=True)
    assert np.array_equal(s.argmax(ctx), idx.reshape(1, -1).numpy())


def test_vjp(case):
    B = case.randn(N, case.d_out)
    b_in = case.stage.vjp(case.ctx, B)
    z = case.zt.clone().requires_grad_(True)
    (case.f(z) * torch.tensor(B)).sum().backward()
    assert rel(b_in, z.grad.numpy()) <= RTOL
    assert case.stage.vjp(case.ctx, B, None, need_b_in=False) is None


def test_jvp(case):
    dZ = case.randn(N, case.d_in)
    got = case.stage.jvp(case.ctx, dZ, None)
    _, ref = torch.func.jvp(case.f, (case.zt,), (torch.tensor(dZ),))
    assert rel(got, ref.numpy()) <= RTOL
    zero = case.stage.jvp(case.ctx, None, None)
    assert zero.shape == (N, case.d_out) and not np.any(zero)


def test_jacobians_per_example(case):
    Jz, Jx = case.stage.jac_z(case.ctx), case.stage.jac_x(case.ctx)
    assert Jz.shape == (N, case.d_out, case.d_in) and Jx.shape == (N, case.d_out, 0)
    for i in range(N):
        jz = torch.func.jacrev(case.f)(case.zt[i:i + 1])
        assert rel(Jz[i], jz[0, :, 0, :].numpy()) <= RTOL, f"jac_z, example {i}"


def test_second_order_pieces_are_zero(case):
    """No parameters and piecewise linear: every piece is 0, of the contract's
    shape; hvp_x adds nothing to acc, hvp_z (and the *_many versions) say 0
    with None."""
    s, ctx, o, d = case.stage, case.ctx, case.d_out, case.d_in
    for name, shape in [("hess_xx", (N, o, 0, 0)), ("hess_zx", (N, o, 0, d)),
                        ("hess_xz", (N, o, d, 0)), ("hess_zz", (N, o, d, d))]:
        T = getattr(s, name)(ctx)
        assert T.shape == shape and not np.any(T), name
    B, dZ = case.randn(N, o), case.randn(N, d)
    acc = np.zeros(0)
    assert s.hvp_x(ctx, B, dZ, None, acc) is acc
    assert s.hvp_z(ctx, B, dZ, None) is None
    assert s.hvp_x_many(ctx, B, case.randn(CD, N, d), None) is None
    assert s.hvp_z_many(ctx, B, case.randn(CD, N, d), None) is None


def test_second_derivative_is_zero_in_torch(case):
    """The torch side of the claim above: d/dz of the vjp <f, b> along dz is 0
    at this (tie-free) point."""
    Bt = torch.tensor(case.randn(N, case.d_out))

    def vjp(z):
        return torch.func.vjp(case.f, z)[1](Bt)[0]

    _, h = torch.func.jvp(vjp, (case.zt,), (torch.tensor(case.randn(N, case.d_in)),))
    assert not torch.any(h)


def test_jvp_many_matches_jvp(case):
    s = case.stage
    dZ = case.randn(CD, N, case.d_in)
    got = s.jvp_many(case.ctx, dZ, None)
    assert got.shape == (CD, N, case.d_out)
    for c in range(CD):
        assert rel(got[c], s.jvp(case.ctx, dZ[c], None)) <= RTOL
    assert s.jvp_many(case.ctx, None, None) is None


def test_vjp_many_matches_vjp(case):
    s = case.stage
    Wv = case.randn(CD, N, case.d_out)
    dZ, gX = s.vjp_many(case.ctx, Wv)
    assert dZ.shape == (CD, N, case.d_in) and gX is None
    for c in range(CD):
        assert rel(dZ[c], s.vjp(case.ctx, Wv[c])) <= RTOL
    assert s.vjp_many(case.ctx, Wv, need_in=False) == (None, None)


@pytest.mark.parametrize("name", ["max-c3-7x7-k3-s2-overlap", "avg-c2-5x4-k3x2-s1x2-overlap"])
def test_float32_keeps_its_dtype(name):
    c32, c64 = Case(name, np.float32), Case(name)
    assert c32.out.dtype == np.float32
    assert rel(c32.out, c64.out) <= 1e-6
    B = c64.randn(N, c64.d_out)
    b32 = c32.stage.vjp(c32.ctx, B.astype(np.float32))
    assert b32.dtype == np.float32
    assert rel(b32, c64.stage.vjp(c64.ctx, B)) <= 1e-6
    dz32 = c32.stage.jvp(c32.ctx, c32.Z, None)
    assert dz32.dtype == np.float32
    if c32.kind == "max":
        assert c32.stage.argmax(c32.ctx).dtype == np.int64


@pytest.mark.parametrize("kind", list(KINDS))
def test_network_gradient_through_pooling(kind):
    """conv-relu-pool-flatten-linear: the loss gradient equals torch autograd of
    the same net written from the definitions (tests/torch_ref.py)."""
    pool = KINDS[kind][0]((2, 3), stride=(1, 3))
    net = tn.Sequential([tn.Conv2d(2, 3, 2), tn.ReLU(), pool, tn.Flatten(), tn.Linear(3 * 4 * 2, 3)],
                        tn.SoftmaxCrossEntropyLoss(), dtype=np.float64, input_shape=(2, 6, 7), seed=3)
    rng = np.random.default_rng(7)
    X, Y = rng.standard_normal((4, 2 * 6 * 7)), rng.integers(0, 3, size=4)
    th = torch.tensor(net.get_flat().astype(np.float64), requires_grad=True)
    torch_loss_fn(net, X, Y)(th).backward()
    assert rel(net.gradient(X, Y), th.grad.numpy()) <= RTOL


# ---------------------------------------------------------------- registry and bad input

def test_registered_and_exported():
    assert STAGES["maxpool2d"] is tn.MaxPool2d and STAGES["avgpool2d"] is tn.AvgPool2d
    assert "MaxPool2d" in tn.__all__ and "AvgPool2d" in tn.__all__
    assert repr(tn.MaxPool2d(2)) == "MaxPool2d(2)"
    assert repr(tn.AvgPool2d((2, 3), stride=1)) == "AvgPool2d((2, 3), stride=1)"


@pytest.mark.parametrize("kind", list(KINDS))
def test_non_image_input(kind):
    name = KINDS[kind][0].__name__
    with pytest.raises(ValueError, match=rf"{name}\(2\) takes images of shape \(C, H, W\) but receives "
                                         r"examples of shape \(8,\)"):
        KINDS[kind][0](2).set_input_shape((8,))


@pytest.mark.parametrize("kind", list(KINDS))
def test_kernel_larger_than_input(kind):
    name = KINDS[kind][0].__name__
    with pytest.raises(ValueError, match=rf"{name}\(\(3, 4\)\) on input shape \(1, 3, 3\): kernel width 4 "
                                         r"is larger than the padded input width 3"):
        KINDS[kind][0]((3, 4)).set_input_shape((1, 3, 3))


@pytest.mark.parametrize("kind", list(KINDS))
def test_non_integer_output_size(kind):
    name = KINDS[kind][0].__name__
    with pytest.raises(ValueError, match=rf"{name}\(3, stride=2\) on input shape \(1, 5, 6\): the output "
                                         r"width \(6 - 3\) / 2 \+ 1 is not an integer"):
        KINDS[kind][0](3, stride=2).set_input_shape((1, 5, 6))


@pytest.mark.parametrize("kind", list(KINDS))
def test_bad_kernel_size(kind):
    cls = KINDS[kind][0]
    with pytest.raises(ValueError, match=rf"{cls.__name__}: kernel_size must be an int or a pair, got \(2, 2, 2\)"):
        cls((2, 2, 2))
    with pytest.raises(ValueError, match=rf"{cls.__name__}\(0\): kernel_size and stride must be >= 1"):
        cls(0)


def test_sequential_names_the_pooling_stage():
    with pytest.raises(ValueError, match=r"stage 1 \(MaxPool2d\(2\)\) cannot take its input of shape \(2, 3, 3\)"
                                         r".*output height \(3 - 2\) / 2 \+ 1 is not an integer"):
        tn.Sequential([tn.Conv2d(1, 2, 3), tn.MaxPool2d(2), tn.Flatten(), tn.Linear(2, 3)], tn.MSELoss(),
                      input_shape=(1, 5, 5))


def test_pooling_first_without_input_shape():
    with pytest.raises(ValueError, match=r"AvgPool2d\(2\) needs the image size: give input_shape=\(C, H, W\)"):
        tn.Sequential([tn.AvgPool2d(2), tn.Flatten(), tn.Linear(4, 3)], tn.MSELoss())
