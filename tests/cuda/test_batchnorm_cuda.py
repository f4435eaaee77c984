"""BatchNorm and MeanOnlyBatchNorm (1-D) on device="cuda" equal the CPU stage:
their per-step work is BatchNorm2d's kernel pairs with one position per
channel, so on the GPU a forward or backward pass moves no (n, d) array
through the host (only the running statistics, d-vectors, come back)."""
import numpy as np
import pytest

from test_train_cuda import _Transfers
from tinynet.backend import get_backend
from tinynet.layers import BatchNorm, Linear, MeanOnlyBatchNorm, Tanh
from tinynet.losses import MSELoss
from tinynet.network import Sequential
from tinynet.optim import SGD

cpu, gpu = get_backend("cpu"), get_backend("cuda")


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("cls", [BatchNorm, MeanOnlyBatchNorm])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stage_on_cuda_matches_cpu(cls, dtype, training):
    """forward (twice: the running statistics), vjp with the parameter gradient, jvp."""
    rng = np.random.default_rng(5)
    n, d = 4, 3
    k = cls(d).n_params
    p = rng.standard_normal(k).astype(dtype)
    stages = []
    for bk in (cpu, gpu):
        st = cls(d)
        st.set_input_shape((d,))
        st.bind(bk, bk.asarray(p))
        st.running_mean, st.running_var = np.array([0.5, -1.0, 0.2]), np.array([2.0, 0.7, 1.1])
        st.training = training
        stages.append(st)
    Z = [(2.0 * rng.standard_normal((n, d)) + 1.0).astype(dtype) for _ in range(2)]
    b, dz, dp = (rng.standard_normal(s).astype(dtype) for s in ((n, d), (n, d), k))
    res = []
    for st, bk in zip(stages, (cpu, gpu)):
        st.forward(bk.asarray(Z[0]))
        out, ctx = st.forward(bk.asarray(Z[1]))
        grad = bk.zeros(k, dtype)
        b_in = st.vjp(ctx, bk.asarray(b), grad)
        dout = st.jvp(ctx, bk.asarray(dz), bk.asarray(dp))
        res.append([bk.to_host(a) for a in (out, b_in, grad, dout)] + [st.running_mean, st.running_var])
    tol = dict(rtol=2e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    for c, g in zip(*res):
        np.testing.assert_allclose(g, c, **tol)


@pytest.mark.parametrize("cls", [BatchNorm, MeanOnlyBatchNorm], ids=["bn", "mean-only"])
def test_sgd_step_moves_nothing_more_than_without_batch_norm(monkeypatch, cls):
    """An SGD step of a net with one batch-norm stage copies exactly what the
    same net without it copies (the loss back): the running mean and variance
    are updated on the device (tinynet.layers.running_stats). An evaluation
    forward copies nothing to the device either."""
    counts = {}
    for with_bn in (False, True):
        stages = [Linear(5, 4), *([cls(4)] if with_bn else []), Tanh(), Linear(4, 3)]
        net = Sequential(stages, MSELoss(), dtype=np.float32, seed=2, device="cuda")
        rng = np.random.default_rng(0)
        dX = net.bk.asarray(rng.standard_normal((6, 5)).astype(np.float32))
        dY = net.bk.asarray(rng.standard_normal((6, 3)).astype(np.float32))
        opt = SGD(net, 0.1)
        opt.step(dX, dY)
        t = _Transfers(monkeypatch, type(dX))
        opt.step(dX, dY)
        net.train(False)
        net.forward_ctx(dX)
        counts[with_bn] = (t.h2d, t.d2h)
        monkeypatch.undo()
    assert counts[True] == counts[False] == (0, 1)
