"""Conv2d, each contract method against torch autograd in float64 (relative
error <= 1e-10): the reference is torch.nn.functional.conv2d with weight =
W.reshape(O, C, kh, kw), the flat parameter slice read in the DESIGN.md layout
[vec(W) column-major; b], image rows the C-major flattening of NCHW.

  forward, vjp (input and parameter gradient), jvp (torch.func.jvp), jac_x /
  jac_z per example (torch.func.jacrev), the explicit second derivatives, and
  hvp_x / hvp_z against their definition: the derivative of the vjp
  (grad_x <f, b>, grad_z <f, b>) along a direction (dz, dx); the *_many host
  methods against the single-direction ones.

Cases: stride 1 / 2, padding 0 / 1, non-square kernels, strides and paddings,
several channels, a 1x1 kernel, a kernel as large as the padded input. Bad
input: one clear ValueError each.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tinynet as tn
from tinynet.backend import get_backend

torch.set_default_dtype(torch.float64)
RTOL = 1e-10
N = 3           # examples per batch

# (C, O, (H, W), kernel, stride, padding)
CASES = {
    "c1o2-5x5-k3-s1-p0": (1, 2, (5, 5), 3, 1, 0),
    "c2o3-5x5-k3-s1-p1": (2, 3, (5, 5), 3, 1, 1),
    "c2o2-5x5-k3-s2-p1": (2, 2, (5, 5), 3, 2, 1),
    "c1o2-7x7-k3-s2-p0": (1, 2, (7, 7), 3, 2, 0),
    "c3o2-4x7-k2x3-s1x2-p1x0": (3, 2, (4, 7), (2, 3), (1, 2), (1, 0)),
    "c2o2-5x4-k3x2-s2x1-p0x1": (2, 2, (5, 4), (3, 2), (2, 1), (0, 1)),
    "c3o2-3x4-k1-s1-p0": (3, 2, (3, 4), 1, 1, 0),
    "c2o2-3x3-k5-s1-p1-one-position": (2, 2, (3, 3), 5, 1, 1),
}
IDS = list(CASES)


def rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-300)


class Case:
    """A Conv2d bound to the CPU backend with a random float64 slice, a batch Z,
    its forward context, and the torch reference f(z, x) written from the
    definition."""

    def __init__(self, name):
        self.name = name
        C, O, (H, W), kernel, stride, padding = CASES[name]
        self.rng = np.random.default_rng(sum(map(ord, name)))
        self.stage = tn.Conv2d(C, O, kernel, stride, padding)
        self.out_shape = self.stage.set_input_shape((C, H, W))
        self.theta = self.rng.standard_normal(self.stage.n_params)
        self.stage.bind(get_backend("cpu"), self.theta)
        self.Z = self.rng.standard_normal((N, C * H * W))
        self.out, self.ctx = self.stage.forward(self.Z)
        kh, kw = (kernel, kernel) if np.isscalar(kernel) else kernel
        k = O * C * kh * kw

        def f(z, x):
            Wm = x[:k].reshape(C * kh * kw, O).T          # (O, K) from column-major vec(W)
            y = F.conv2d(z.reshape(-1, C, H, W), Wm.reshape(O, C, kh, kw), x[k:],
                         stride=stride, padding=padding)
            return y.reshape(z.shape[0], -1)

        self.f = f
        self.zt, self.xt = torch.tensor(self.Z), torch.tensor(self.theta)
        self.d_in, self.d_out, self.p = C * H * W, int(np.prod(self.out_shape)), self.stage.n_params

    def randn(self, *shape):
        return self.rng.standard_normal(shape)


@pytest.fixture(params=IDS)
def case(request):
    return Case(request.param)


def test_layout_and_shape(case):
    s = case.stage
    assert s.W.shape == (s.out_channels, s.K)
    assert np.array_equal(s.W, case.theta[:s.K * s.out_channels].reshape(s.out_channels, s.K, order="F"))
    assert np.array_equal(s.b, case.theta[s.K * s.out_channels:])
    ref = case.f(case.zt, case.xt)
    assert case.out.shape == (N, case.d_out) == tuple(ref.reshape(N, -1).shape)


def test_forward(case):
    assert rel(case.out, case.f(case.zt, case.xt).numpy()) <= RTOL


def test_vjp(case):
    B = case.randn(N, case.d_out)
    grad = np.zeros(case.p)
    b_in = case.stage.vjp(case.ctx, B, grad)
    z, x = case.zt.clone().requires_grad_(True), case.xt.clone().requires_grad_(True)
    (case.f(z, x) * torch.tensor(B)).sum().backward()
    assert rel(b_in, z.grad.numpy()) <= RTOL
    assert rel(grad, x.grad.numpy()) <= RTOL            # [vec(dW) column-major; db], batch-summed
    # need_b_in=False writes the same gradient and returns None
    grad2 = np.zeros(case.p)
    assert case.stage.vjp(case.ctx, B, grad2, need_b_in=False) is None
    assert np.array_equal(grad2, grad)


@pytest.mark.parametrize("which", ["both", "dz-only", "dx-only", "none"])
def test_jvp(case, which):
    dZ = case.randn(N, case.d_in) if which in ("both", "dz-only") else None
    dx = case.randn(case.p) if which in ("both", "dx-only") else None
    got = case.stage.jvp(case.ctx, dZ, dx)
    tz = torch.zeros_like(case.zt) if dZ is None else torch.tensor(dZ)
    tx = torch.zeros_like(case.xt) if dx is None else torch.tensor(dx)
    _, ref = torch.func.jvp(case.f, (case.zt, case.xt), (tz, tx))
    if which == "none":
        assert got.shape == (N, case.d_out) and not np.any(got)
    else:
        assert rel(got, ref.numpy()) <= RTOL


def test_jacobians_per_example(case):
    Jz, Jx = case.stage.jac_z(case.ctx), case.stage.jac_x(case.ctx)
    assert Jz.shape == (N, case.d_out, case.d_in) and Jx.shape == (N, case.d_out, case.p)
    for i in range(N):
        jz, jx = torch.func.jacrev(case.f, argnums=(0, 1))(case.zt[i:i + 1], case.xt)
        assert rel(Jz[i], jz[0, :, 0, :].numpy()) <= RTOL, f"jac_z, example {i}"
        assert rel(Jx[i], jx[0].numpy()) <= RTOL, f"jac_x, example {i}"


def test_explicit_second_derivatives(case):
    """hess_zx[i, o, x, m] = d^2 out_o / dx dz_m (and hess_xz its transpose);
    hess_xx and hess_zz are 0: a convolution is bilinear in (z, x)."""
    s, i = case.stage, 1
    f1 = lambda z, x: case.f(z[None], x)[0]                                   # noqa: E731
    T = torch.func.jacfwd(torch.func.jacrev(f1, argnums=1), argnums=0)(case.zt[i], case.xt)   # (out, p, in)
    assert rel(s.hess_zx(case.ctx)[i], T.numpy()) <= RTOL
    assert rel(s.hess_xz(case.ctx)[i], T.numpy().transpose(0, 2, 1)) <= RTOL
    assert s.hess_xx(case.ctx).shape == (N, case.d_out, case.p, case.p) and not np.any(s.hess_xx(case.ctx))
    assert s.hess_zz(case.ctx).shape == (N, case.d_out, case.d_in, case.d_in) and not np.any(s.hess_zz(case.ctx))


def _vjp_derivative(case, B, dZ, dx):
    """Torch: d/dt at 0 of (grad_z <f, B>, grad_x <f, B>) at (Z + t dZ, x + t dx):
    the definitions of hvp_z (per example) and hvp_x (batch-summed)."""
    Bt = torch.tensor(B)

    def vjp(z, x):
        return torch.func.vjp(case.f, z, x)[1](Bt)

    tz = torch.zeros_like(case.zt) if dZ is None else torch.tensor(dZ)
    tx = torch.zeros_like(case.xt) if dx is None else torch.tensor(dx)
    _, (dz_ref, dx_ref) = torch.func.jvp(vjp, (case.zt, case.xt), (tz, tx))
    return dz_ref.numpy(), dx_ref.numpy()


@pytest.mark.parametrize("which", ["both", "dz-only", "dx-only"])
def test_hvp_x_and_hvp_z(case, which):
    B = case.randn(N, case.d_out)
    dZ = case.randn(N, case.d_in) if which != "dx-only" else None
    dx = case.randn(case.p) if which != "dz-only" else None
    hz_ref, hx_ref = _vjp_derivative(case, B, dZ, dx)
    acc0 = case.randn(case.p)
    acc = case.stage.hvp_x(case.ctx, B, dZ, dx, acc0.copy())        # accumulates into acc
    if dZ is None:
        assert np.array_equal(acc, acc0) and not np.any(hx_ref)
    else:
        assert rel(acc - acc0, hx_ref) <= RTOL
    hz = case.stage.hvp_z(case.ctx, B, dZ, dx)
    if dx is None:
        assert hz is None and not np.any(hz_ref)
    else:
        assert rel(hz, hz_ref) <= RTOL


CD = 3          # directions for the *_many methods


def test_jvp_many_matches_jvp(case):
    s = case.stage
    dZ, dX = case.randn(CD, N, case.d_in), case.randn(CD, case.p)
    for args in [(dZ, dX), (dZ, None), (None, dX)]:
        got = s.jvp_many(case.ctx, *args)
        assert got.shape == (CD, N, case.d_out)
        for c in range(CD):
            ref = s.jvp(case.ctx, *(None if a is None else a[c] for a in args))
            assert rel(got[c], ref) <= RTOL


def test_vjp_many_matches_vjp(case):
    s = case.stage
    Wv = case.randn(CD, N, case.d_out)
    dZ, gX = s.vjp_many(case.ctx, Wv)
    assert dZ.shape == (CD, N, case.d_in) and gX.shape == (CD, case.p)
    for c in range(CD):
        grad = np.zeros(case.p)
        b_in = s.vjp(case.ctx, Wv[c], grad)
        assert rel(dZ[c], b_in) <= RTOL
        assert rel(gX[c], grad) <= RTOL
    none, gX2 = s.vjp_many(case.ctx, Wv, need_in=False)
    assert none is None and np.array_equal(gX2, gX)


def test_hvp_many_match_single(case):
    s = case.stage
    B = case.randn(N, case.d_out)
    dZ, dX = case.randn(CD, N, case.d_in), case.randn(CD, case.p)
    hx, hz = s.hvp_x_many(case.ctx, B, dZ, dX), s.hvp_z_many(case.ctx, B, dZ, dX)
    assert hx.shape == (CD, case.p) and hz.shape == (CD, N, case.d_in)
    for c in range(CD):
        assert rel(hx[c], s.hvp_x(case.ctx, B, dZ[c], dX[c], np.zeros(case.p))) <= RTOL
        assert rel(hz[c], s.hvp_z(case.ctx, B, dZ[c], dX[c])) <= RTOL
    assert s.hvp_x_many(case.ctx, B, None, dX) is None
    assert s.hvp_z_many(case.ctx, B, dZ, None) is None


def test_kronecker_rows_are_torch_unfold_patches(case):
    """The chapter-6 hook: kron_rows = U (n*P, K), U[e*P + p, k] = F.unfold(x)[e, k, p]
    (the patches in weight.reshape(O, -1) column order); kron_signal = the output
    signal as one row per position, B_r[e*P + p, o] = b_out[e, o, p]."""
    C, O, (H, W), kernel, stride, padding = CASES[case.name]
    ref = F.unfold(case.zt.reshape(N, C, H, W), kernel, padding=padding, stride=stride)   # (n, K, P)
    U = case.stage.kron_rows(case.ctx)
    assert np.array_equal(U, ref.transpose(1, 2).reshape(-1, case.stage.K).numpy())
    B = case.randn(N, case.d_out)
    Br = B.reshape(N, O, -1).transpose(0, 2, 1).reshape(-1, O)
    assert np.array_equal(case.stage.kron_signal(case.ctx, B), Br)


def test_jacobian_after_a_new_input_shape():
    """The explicit pieces follow set_input_shape: a stage given a second shape
    (after its Jacobians were computed for the first) has the new Jacobian."""
    a, b = Case("c2o3-5x5-k3-s1-p1"), Case("c3o2-4x7-k2x3-s1x2-p1x0")
    s = a.stage
    s.jac_z(a.ctx)
    s2 = tn.Conv2d(2, 3, 3, 1, 1)
    s2.set_input_shape((2, 4, 6))
    s.set_input_shape((2, 4, 6))
    theta = b.rng.standard_normal(s.n_params)
    for st in (s, s2):
        st.bind(get_backend("cpu"), theta)
    Z = b.rng.standard_normal((2, 2 * 4 * 6))
    assert np.array_equal(s.jac_z(s.forward(Z)[1]), s2.jac_z(s2.forward(Z)[1]))
    assert np.array_equal(s.hess_zx(s.forward(Z)[1]), s2.hess_zx(s2.forward(Z)[1]))


def test_jvp_many_without_directions_is_none(case):
    assert case.stage.jvp_many(case.ctx, None, None) is None


# ---------------------------------------------------------------- bad input

def _net(layers, input_shape):
    return tn.Sequential(layers, tn.SoftmaxCrossEntropyLoss(), dtype=np.float64, input_shape=input_shape)


def test_rows_of_the_wrong_width_for_input_shape():
    net = _net([tn.Conv2d(1, 2, 3), tn.Flatten(), tn.Linear(2 * 3 * 3, 3)], (1, 5, 5))
    with pytest.raises(ValueError, match=r"inputs must have shape \(n, 25\) \(examples of shape \(1, 5, 5\)"):
        net.loss(np.zeros((2, 36)), np.array([0, 1]))      # rows of a 6x6 image


def test_kernel_larger_than_padded_input():
    with pytest.raises(ValueError, match=r"kernel height 6 is larger than the padded input height 5 "
                                         r"\(= 3 \+ 2 x padding 1\)"):
        _net([tn.Conv2d(1, 2, 6, padding=1), tn.Flatten(), tn.Linear(2, 3)], (1, 3, 3))


def test_channels_mismatch():
    with pytest.raises(ValueError, match=r"stage 0 \(Conv2d\(3, 2, 3\)\).*expects 3 input channels, receives 1"):
        _net([tn.Conv2d(3, 2, 3), tn.Flatten(), tn.Linear(18, 3)], (1, 5, 5))


def test_non_integer_output_size():
    with pytest.raises(ValueError, match=r"output width \(6 - 3\) / 2 \+ 1 is not an integer"):
        _net([tn.Conv2d(1, 2, 3, stride=2), tn.Flatten(), tn.Linear(8, 3)], (1, 5, 6))


def test_linear_after_image_stage_without_flatten():
    with pytest.raises(ValueError, match=r"stage 1 \(Linear\(18, 3\)\).*receives examples of shape "
                                         r"\(2, 3, 3\); put Flatten\(\) before it"):
        _net([tn.Conv2d(1, 2, 3), tn.Linear(18, 3)], (1, 5, 5))


def test_conv_first_without_input_shape():
    with pytest.raises(ValueError, match=r"needs the image size: give input_shape=\(C, H, W\)"):
        tn.Sequential([tn.Conv2d(1, 2, 3), tn.Flatten(), tn.Linear(18, 3)], tn.MSELoss())
