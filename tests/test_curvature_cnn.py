"""The curvature engine on tiny CNNs (float64), each quantity against its
definition built from torch autograd of the independent mirror
(tests/torch_ref.py: F.conv2d / max_pool2d / avg_pool2d on the rows reshaped
to NCHW):

  gradient and loss           torch.func.grad
  curvature.hessian           torch.func.hessian of the batch-mean loss
  curvature.gauss_newton      mean_i J_i^T D_i J_i, J from torch.func.jacrev of the
                              outputs, D_i = d2 l_i / df_i^2 by torch.func.hessian
  curvature.fisher("exact")   mean_i J_i^T E_{y~p(y|f_i)}[g g^T] J_i, g = dl(f_i, y)/df
                              (softmax: the sum over classes; MSE: l = -log N(y; f, I/2))
  hvp / gvp / fvp             the dense references times random directions
  curvature.matrices          seed 001's H of one example = its dense Hessian,
                              D_x M^{-1} e_L = its gradient

Nets (195, 88 and 137 parameters), each with softmax cross-entropy and MSE:
  conv-relu-maxpool-conv-flatten-linear     the issue's tiny CNN
  conv_s2p1-tanh-avgpool-conv-flatten-linear a stride-2 padded conv and average pooling
  conv-sigmoid-conv_k2x1-flatten-linear     no pooling, a non-square kernel
Relative error = max |A - A_ref| / max |A_ref| <= 1e-10.
"""
import numpy as np
import pytest
import torch

import tinynet as tn
from tinynet import curvature as cv
from torch_ref import theta_of, torch_loss_fn, torch_loss_of_output, torch_output_fn

TOL = 1e-10
N = 4           # examples per batch


def conv_relu_maxpool(k):
    # (2, 8, 8) -> conv 3x3 (4, 6, 6) -> maxpool 2 (4, 3, 3) -> conv 2x2 (4, 2, 2) -> 16 -> k
    return [tn.Conv2d(2, 4, 3), tn.ReLU(), tn.MaxPool2d(2), tn.Conv2d(4, 4, 2), tn.Flatten(),
            tn.Linear(16, k)], (2, 8, 8)


def conv_s2p1_avgpool(k):
    # (1, 7, 7) -> conv 3x3 stride 2 padding 1 (4, 4, 4) -> avgpool 2 (4, 2, 2) -> conv 2x1 (3, 1, 2) -> 6 -> k
    return [tn.Conv2d(1, 4, 3, stride=2, padding=1), tn.Tanh(), tn.AvgPool2d(2), tn.Conv2d(4, 3, (2, 1)),
            tn.Flatten(), tn.Linear(6, k)], (1, 7, 7)


def conv_sigmoid_conv(k):
    # (1, 6, 5) -> conv 3x3 padding 1 (3, 6, 5) -> conv 2x1 stride (2, 1) (2, 3, 5) -> 30 -> k
    return [tn.Conv2d(1, 3, 3, padding=1), tn.Sigmoid(), tn.Conv2d(3, 2, (2, 1), stride=(2, 1)), tn.Flatten(),
            tn.Linear(30, k)], (1, 6, 5)


NETS = {
    "conv-relu-maxpool-conv-flatten-linear": conv_relu_maxpool,
    "conv_s2p1-tanh-avgpool-conv-flatten-linear": conv_s2p1_avgpool,
    "conv-sigmoid-conv_k2x1-flatten-linear": conv_sigmoid_conv,
}
LOSSES = {"softmax_ce": tn.SoftmaxCrossEntropyLoss, "mse": tn.MSELoss}
CASES = [(a, loss) for a in NETS for loss in LOSSES]
IDS = [f"{a}-{loss}" for a, loss in CASES]


def make(arch, loss, n=N, seed=0):
    """(net, X, Y) with random parameters (biases too) and inputs, float64."""
    k = 3
    layers, shape = NETS[arch](k)
    net = tn.Sequential(layers, LOSSES[loss](), dtype=np.float64, seed=seed, input_shape=shape)
    rng = np.random.default_rng(seed + 1)
    # the He / Glorot init scaled down, random biases: outputs O(1), a softmax far from saturation
    net.set_flat(0.6 * net.get_flat() + 0.2 * rng.standard_normal(net.n_params))
    X = rng.standard_normal((n, net.n_in))
    Y = rng.integers(0, k, n) if loss == "softmax_ce" else rng.standard_normal((n, k))
    return net, X, Y


def rel(A, B):
    A, B = np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64)
    assert A.shape == B.shape, (A.shape, B.shape)
    return np.abs(A - B).max() / np.abs(B).max()


def torch_hessian(net, X, Y):
    return torch.func.hessian(torch_loss_fn(net, X, Y))(theta_of(net)).numpy()


def torch_jacobian(net, X):
    """J (n, k, P) of the outputs and the outputs F (n, k), by autograd."""
    out = torch_output_fn(net, X)
    th = theta_of(net)
    return torch.func.jacrev(out)(th).numpy(), out(th).detach().numpy()


def loss_hessian_in_f(net, F, Y):
    """D_i = d2 l_i / df_i^2 (n, k, k) from the torch loss of the outputs."""
    n, k = F.shape
    L = torch_loss_of_output(net.loss_stage, Y, k)
    Hf = torch.func.hessian(lambda f: n * L(f))(torch.tensor(F)).numpy()
    return np.stack([Hf[i, :, i, :] for i in range(n)])


def fisher_in_f(loss, F):
    """D(f_i) = E_{y ~ p(y|f_i)}[g g^T], g = dl(f_i, y)/df, per example (n, k, k)."""
    n, k = F.shape
    if loss == "softmax_ce":
        D = np.zeros((n, k, k))
        for i in range(n):
            f = torch.tensor(F[i])
            p = torch.softmax(f, 0).numpy()
            for c in range(k):                   # exact expectation: the sum over the k classes
                g = torch.func.grad(lambda t: -torch.log_softmax(t, 0)[c])(f).numpy()
                D[i] += p[c] * np.outer(g, g)
        return D
    # l = ||f - y||^2 = -log N(y; f, I/2) + const: g = 2(f - y), E[g g^T] = 4 Cov(y) = 2 I
    return np.broadcast_to(4 * 0.5 * np.eye(k), (n, k, k))


def mean_JtDJ(J, D):
    return np.einsum("nkp,nkj,njq->pq", J, D, J) / J.shape[0]


@pytest.fixture(params=CASES, ids=IDS)
def problem(request):
    return request.param, make(*request.param)


def test_loss_and_gradient(problem):
    _, (net, X, Y) = problem
    f = torch_loss_fn(net, X, Y)
    th = theta_of(net).requires_grad_(True)
    ref = f(th)
    ref.backward()
    assert abs(net.loss(X, Y) - ref.item()) <= TOL * abs(ref.item())
    assert rel(net.gradient(X, Y), th.grad.numpy()) <= TOL


def test_hessian_and_hvp(problem):
    _, (net, X, Y) = problem
    H_ref = torch_hessian(net, X, Y)
    assert rel(cv.hessian(net, X, Y), H_ref) <= TOL
    v = np.random.default_rng(5).standard_normal(net.n_params)
    assert rel(cv.hvp(net, X, Y, v), H_ref @ v) <= TOL


def test_gauss_newton_and_gvp(problem):
    _, (net, X, Y) = problem
    J, F = torch_jacobian(net, X)
    G_ref = mean_JtDJ(J, loss_hessian_in_f(net, F, Y))
    assert rel(cv.gauss_newton(net, X, Y), G_ref) <= TOL
    assert rel(cv.output_jacobian(net, X), J) <= TOL
    v = np.random.default_rng(6).standard_normal(net.n_params)
    assert rel(cv.gvp(net, X, Y, v), G_ref @ v) <= TOL


def test_exact_fisher_and_fvp(problem):
    (_, loss), (net, X, Y) = problem
    J, F = torch_jacobian(net, X)
    F_ref = mean_JtDJ(J, fisher_in_f(loss, F))
    assert rel(cv.fisher(net, X, kind="exact"), F_ref) <= TOL
    v = np.random.default_rng(7).standard_normal(net.n_params)
    assert rel(cv.fvp(net, X, None, v), F_ref @ v) <= TOL


def test_seed_matrices_of_one_example(problem):
    """Seed 001's assembly H = D_b(D_xx + D_zx N^{-1} D_x↘) + D_x M^{-1} B_b(...)
    from the stages' explicit pieces equals the dense Hessian of that example's
    loss; D_x M^{-1} e_L is its gradient."""
    _, (net, X, Y) = problem
    x0, y0 = X[:1], Y[:1]
    m = cv.matrices(net, x0[0], y0[0])
    assert rel(m.H, torch_hessian(net, x0, y0)) <= TOL
    th = theta_of(net)
    assert rel(m.gradient, torch.func.grad(torch_loss_fn(net, x0, y0))(th).numpy()) <= TOL
