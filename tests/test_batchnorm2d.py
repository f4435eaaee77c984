"""BatchNorm2d against torch.nn.functional.batch_norm (float64, same weights):
forward in training and evaluation, the running statistics after a few steps,
vjp (input and parameter parts), jvp (torch.func.jvp), jac_x, jac_z (eval) and
the coupled jac_z_batch, a conv net's gradient, and the errors."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import jacrev, jvp

from tinynet.backend import get_backend
from tinynet.layers import BatchNorm2d, Conv2d, Flatten, Linear, Tanh
from tinynet.losses import MSELoss
from tinynet.network import Sequential

EPS, MOM = 1e-5, 0.1
SHAPES = [   # (n, C, H, W)
    pytest.param((4, 3, 2, 3), id="n4-c3-2x3"),
    pytest.param((1, 2, 2, 2), id="n1-c2-2x2"),     # one example: the positions carry the statistics
    pytest.param((5, 2, 1, 1), id="n5-c2-1x1"),     # 1x1 images: BatchNorm1d's case
]
MODES = [pytest.param(True, id="train"), pytest.param(False, id="eval")]


def make_stage(shape, rng, training):
    n, C, H, W = shape
    st = BatchNorm2d(C, eps=EPS, momentum=MOM)
    st.set_input_shape((C, H, W))
    p = rng.standard_normal(2 * C)
    st.bind(get_backend("cpu"), p.copy())
    st.running_mean = rng.standard_normal(C)
    st.running_var = rng.random(C) + 0.5
    st.training = training
    Z = rng.standard_normal((n, C * H * W)) * 3 + 1
    return st, p, Z


def torch_bn(shape, training, rm, rv):
    """(z rows, params) -> output rows, torch.nn.functional.batch_norm on NCHW."""
    n, C, H, W = shape

    def f(z, p):
        out = F.batch_norm(z.reshape(-1, C, H, W),
                           None if training else torch.tensor(rm), None if training else torch.tensor(rv),
                           p[:C], p[C:], training=training, momentum=MOM, eps=EPS)
        return out.reshape(z.shape[0], -1)
    return f


@pytest.mark.parametrize("training", MODES)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_vjp_jvp_against_torch(shape, training):
    rng = np.random.default_rng(0)
    st, p, Z = make_stage(shape, rng, training)
    f = torch_bn(shape, training, st.running_mean.copy(), st.running_var.copy())
    out, ctx = st.forward(Z)
    zt, pt = torch.tensor(Z, requires_grad=True), torch.tensor(p, requires_grad=True)
    ref = f(zt, pt)
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-12, atol=1e-12)
    # vjp: input part and parameter part
    b = rng.standard_normal(Z.shape)
    gz, gp = torch.autograd.grad((ref * torch.tensor(b)).sum(), (zt, pt))
    grad = np.full(st.n_params, np.nan)
    np.testing.assert_allclose(st.vjp(ctx, b, grad), gz.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grad, gp.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(st.vjp(ctx, b), gz.numpy(), rtol=1e-10, atol=1e-12)    # grad=None
    grad2 = np.zeros(st.n_params)
    assert st.vjp(ctx, b, grad2, need_b_in=False) is None
    np.testing.assert_allclose(grad2, gp.numpy(), rtol=1e-10, atol=1e-12)
    # jvp, both parts and each alone
    dz, dp = rng.standard_normal(Z.shape), rng.standard_normal(st.n_params)
    z0, p0 = zt.detach(), pt.detach()
    _, both = jvp(f, (z0, p0), (torch.tensor(dz), torch.tensor(dp)))
    _, only_z = jvp(lambda z: f(z, p0), (z0,), (torch.tensor(dz),))
    _, only_p = jvp(lambda q: f(z0, q), (p0,), (torch.tensor(dp),))
    np.testing.assert_allclose(st.jvp(ctx, dz, dp), both.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(st.jvp(ctx, dz, None), only_z.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(st.jvp(ctx, None, dp), only_p.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(st.jvp(ctx, None, None), np.zeros(Z.shape))


@pytest.mark.parametrize("training", MODES)
@pytest.mark.parametrize("shape", SHAPES)
def test_jacobians_against_torch(shape, training):
    rng = np.random.default_rng(1)
    st, p, Z = make_stage(shape, rng, training)
    f = torch_bn(shape, training, st.running_mean.copy(), st.running_var.copy())
    _, ctx = st.forward(Z)
    zt, pt = torch.tensor(Z), torch.tensor(p)
    n = Z.shape[0]
    Jp = jacrev(f, argnums=1)(zt, pt).numpy()          # (n, D, 2C): the parameters are shared
    np.testing.assert_allclose(st.jac_x(ctx), Jp, rtol=1e-10, atol=1e-12)
    Jz = jacrev(f, argnums=0)(zt, pt).numpy()          # (n, D, n, D)
    np.testing.assert_allclose(st.jac_z_batch(ctx), Jz, rtol=1e-10, atol=1e-12)
    if training:
        with pytest.raises(NotImplementedError, match=r"BatchNorm2d\(\d\) in training mode couples the examples"):
            st.jac_z(ctx)
    else:
        np.testing.assert_allclose(st.jac_z(ctx), Jz[np.arange(n), :, np.arange(n), :], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_running_statistics_follow_torch(shape):
    """Three training steps update the running mean / variance (unbiased, m = n*H*W)
    as torch's buffers; evaluation then normalizes with them and leaves them alone."""
    rng = np.random.default_rng(2)
    n, C, H, W = shape
    st, p, _ = make_stage(shape, rng, True)
    rm, rv = torch.tensor(st.running_mean), torch.tensor(st.running_var)
    pt = torch.tensor(p)
    for step in range(3):
        Z = rng.standard_normal((n, C * H * W)) * (step + 1) - step
        st.forward(Z)
        F.batch_norm(torch.tensor(Z).reshape(n, C, H, W), rm, rv, pt[:C], pt[C:],
                     training=True, momentum=MOM, eps=EPS)
        np.testing.assert_allclose(st.running_mean, rm.numpy(), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(st.running_var, rv.numpy(), rtol=1e-12, atol=1e-15)
    st.training = False
    Z = rng.standard_normal((n, C * H * W))
    out, _ = st.forward(Z)
    ref = F.batch_norm(torch.tensor(Z).reshape(n, C, H, W), rm, rv, pt[:C], pt[C:],
                       training=False, momentum=MOM, eps=EPS)
    np.testing.assert_allclose(out, ref.reshape(n, -1).numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(st.running_mean, rm.numpy(), rtol=1e-12, atol=1e-15)   # untouched


def test_float32_forward_and_vjp_match_float64():
    rng = np.random.default_rng(3)
    st, p, Z = make_stage((4, 3, 2, 3), rng, True)
    out64, ctx64 = st.forward(Z)
    b = rng.standard_normal(Z.shape)
    g64 = st.vjp(ctx64, b)
    st.bind(get_backend("cpu"), p.astype(np.float32))
    out32, ctx32 = st.forward(Z.astype(np.float32))
    g32 = st.vjp(ctx32, b.astype(np.float32))
    assert out32.dtype == np.float32 and g32.dtype == np.float32
    np.testing.assert_allclose(out32, out64, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-5)


def test_conv_net_gradient_against_torch():
    """Conv2d -> BatchNorm2d -> Tanh -> Flatten -> Linear: the full gradient in
    training mode and the output in evaluation mode against torch."""
    rng = np.random.default_rng(4)
    n, C, H, W, O = 3, 2, 4, 4, 3
    net = Sequential([Conv2d(C, O, 3), BatchNorm2d(O), Tanh(), Flatten(), Linear(O * 4, 2)],
                     MSELoss(), dtype=np.float64, input_shape=(C, H, W))
    th = net.get_flat()
    th[O * C * 9 + O:O * C * 9 + 3 * O] = rng.standard_normal(2 * O)     # gamma, beta away from 1, 0
    net.set_flat(th)
    X, Y = rng.standard_normal((n, C * H * W)), rng.standard_normal((n, 2))
    k = O * C * 9

    def out(t, training, rm=None, rv=None):
        Wc = t[:k].reshape(C * 9, O).T.reshape(O, C, 3, 3)        # column-major vec(W)
        h = F.conv2d(torch.tensor(X).reshape(n, C, H, W), Wc, t[k:k + O])
        h = F.batch_norm(h, rm, rv, t[k + O:k + 2 * O], t[k + 2 * O:k + 3 * O], training=training,
                         momentum=MOM, eps=EPS)
        h = torch.tanh(h).reshape(n, -1)
        a = k + 3 * O
        return h @ t[a:a + 24].reshape(O * 4, 2) + t[a + 24:]

    def L(t):
        return ((out(t, True) - torch.tensor(Y)) ** 2).sum(1).mean()
    np.testing.assert_allclose(net.gradient(X, Y), torch.func.grad(L)(torch.tensor(th)).numpy(),
                               rtol=1e-10, atol=1e-12)
    bn = net.layers[1]
    net.train(False)
    ref = out(torch.tensor(th), False, torch.tensor(bn.running_mean), torch.tensor(bn.running_var))
    np.testing.assert_allclose(net.forward(X), ref.numpy(), rtol=1e-12, atol=1e-12)


# -- errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize("make, match", [
    pytest.param(lambda: BatchNorm2d(0), r"BatchNorm2d\(0\): the number of channels", id="no-channels"),
    pytest.param(lambda: BatchNorm2d(2.5), r"positive integer", id="fractional-channels"),
    pytest.param(lambda: BatchNorm2d(2, momentum=0), r"momentum must lie in \(0, 1\]", id="momentum"),
    pytest.param(lambda: BatchNorm2d(3).set_input_shape((12,)),
                 r"BatchNorm2d\(3\) takes images of shape \(C, H, W\) but receives examples of shape "
                 r"\(12,\); for vectors use BatchNorm\(12\)", id="vector-input"),
    pytest.param(lambda: BatchNorm2d(3).set_input_shape((2, 4, 4)),
                 r"BatchNorm2d\(3\) expects 3 channels, receives 2 \(input shape \(2, 4, 4\)\)",
                 id="channel-mismatch"),
    pytest.param(lambda: Sequential([Linear(4, 6), BatchNorm2d(6)], MSELoss()),
                 r"stage 1 \(BatchNorm2d\(6\)\) cannot take its input of shape \(6,\)", id="in-a-vector-net"),
    pytest.param(lambda: Sequential([BatchNorm2d(2), Flatten()], MSELoss()),
                 r"BatchNorm2d\(2\) needs the image size: give input_shape", id="first-without-shape"),
])
def test_construction_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_forward_errors():
    st = BatchNorm2d(2)
    st.bind(get_backend("cpu"), np.r_[np.ones(2), np.zeros(2)])
    with pytest.raises(ValueError, match=r"image size is unknown; call set_input_shape"):
        st.forward(np.zeros((3, 8)))
    st.set_input_shape((2, 2, 2))
    with pytest.raises(ValueError, match=r"BatchNorm2d\(2\): input must have shape \(n, 8\) \(examples of "
                                         r"shape \(2, 2, 2\), flattened C-major\), got \(3, 6\)"):
        st.forward(np.zeros((3, 6)))
    st.set_input_shape((2, 1, 1))
    with pytest.raises(ValueError, match=r"at least 2 values per channel in training mode \(n \* H \* W = 1\)"):
        st.forward(np.zeros((1, 2)))
    st.training = False
    out, _ = st.forward(np.ones((1, 2)))         # evaluation: one value is fine
    np.testing.assert_allclose(out, np.ones((1, 2)) / np.sqrt(1 + 1e-5))
