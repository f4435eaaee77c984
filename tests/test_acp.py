"""ACP (thesis algorithm 4): with the statistics from the update's own minibatch
(T = 1) the update is the exact minimizer of the local criterion of 6.1,
  min_{dW, db} 1/n sum_i ||dW h_i + db + lr g_i||^2 + eps' ||dW||^2,
g_i = dl_i/da_i, eps' = eps / alpha; checked against a dense least-squares solve."""
import numpy as np
import pytest
import torch
from torch.func import jacrev

from tinynet.layers import Linear, Sigmoid, Tanh
from tinynet.losses import MSELoss, SoftmaxCrossEntropyLoss
from tinynet.network import Sequential
from tinynet.optim.acp import ACP
from tinynet.optim.stats import kron_indices
from torch_ref import theta_of, torch_loss_of_output, torch_output_fn


def make_case(name, n=9, seed=0):
    rng = np.random.default_rng(seed)
    if name == "tanh-mse":
        net = Sequential([Linear(4, 5), Tanh(), Linear(5, 3)], MSELoss(), dtype=np.float64, seed=seed)
        Y = rng.standard_normal((n, 3))
    else:
        net = Sequential([Linear(4, 6), Sigmoid(), Linear(6, 3)], SoftmaxCrossEntropyLoss(),
                         dtype=np.float64, seed=seed)
        Y = rng.integers(0, 3, n)
    return net, rng.standard_normal((n, 4)) + 0.5, Y


def preact_grads(net, X, Y):
    """{Linear index: g (n, o)}, g_i = dl_i/da_i = J_a,i^T dl_i/dF_i from torch."""
    th = theta_of(net)
    J = jacrev(torch_output_fn(net, X))(th).numpy()
    F = torch_output_fn(net, X)(th).detach()
    L = torch_loss_of_output(net.loss_stage, Y, net.n_out)
    gF = len(X) * torch.func.grad(L)(F).numpy()
    out = {}
    for i in kron_indices(net):
        a, c = net.offsets[i]
        kb = a + net.layers[i].n_in * net.layers[i].n_out
        out[i] = np.einsum("nkp,nk->np", J[:, :, kb:c], gF)
    return out


def local_criterion_solution(H, g, lr, eps):
    """Dense least squares over x = [vec(dW); db] (column-major vec)."""
    n, i = H.shape
    o = g.shape[1]
    rows = [np.kron(np.r_[H[m], 1.0][None, :], np.eye(o)) / np.sqrt(n) for m in range(n)]
    rhs = [-lr * g[m] / np.sqrt(n) for m in range(n)]
    reg = np.c_[np.sqrt(eps) * np.eye(o * i), np.zeros((o * i, o))]   # eps ||dW||^2, b free
    Mat = np.vstack(rows + [reg])
    r = np.concatenate(rhs + [np.zeros(o * i)])
    return np.linalg.lstsq(Mat, r, rcond=None)[0]


@pytest.mark.parametrize("route", ["batch", "gradient"])
@pytest.mark.parametrize("case", ["tanh-mse", "sigmoid-softmax"])
@pytest.mark.parametrize("alpha", [1.0, 0.25, "heuristic"], ids=["alpha1", "alpha0.25", "heuristic"])
@pytest.mark.parametrize("step_scale", ["alpha", "none"])
def test_acp_update_solves_local_criterion(case, alpha, route, step_scale):
    """step_scale "none": the criterion's minimizer at lr; "alpha" (algorithm 4's
    lambda/alpha): the same at lr/alpha, the criterion being linear in lr."""
    net, X, Y = make_case(case)
    lr, eps = 0.1, 1e-2
    _, ctxs = net.forward_ctx(X)
    H = {i: np.array(ctxs[i][0]) for i in kron_indices(net)}
    g = preact_grads(net, X, Y)
    th0 = net.get_flat()
    opt = ACP(net, lr, eps=eps, T=1, alpha=alpha, alpha_floor=1e-3, route=route, step_scale=step_scale)
    opt.step(X, Y)
    d = net.get_flat() - th0
    for i in kron_indices(net):
        a_ = (np.max(g[i] ** 2) + 1e-3) if alpha == "heuristic" else alpha
        assert opt.alphas[i] == pytest.approx(a_, rel=1e-12)
        a, c = net.offsets[i]
        lr_ = lr / a_ if step_scale == "alpha" else lr
        np.testing.assert_allclose(d[a:c], local_criterion_solution(H[i], g[i], lr_, eps / a_),
                                   rtol=1e-8, atol=1e-12)


def test_acp_amortizes_inverse():
    """inv_C is recomputed only every T updates."""
    net, X, Y = make_case("tanh-mse")
    opt = ACP(net, 0.1, T=3)
    opt.step(X, Y)
    first = {i: m.copy() for i, m in opt.inv_C.items()}
    opt.step(X + 1.0, Y)
    opt.step(X + 2.0, Y)
    for i in first:
        np.testing.assert_array_equal(opt.inv_C[i], first[i])
    opt.step(X + 3.0, Y)
    assert any(not np.array_equal(opt.inv_C[i], first[i]) for i in first)


def test_acp_rejects_bad_alpha():
    net, _, _ = make_case("tanh-mse")
    with pytest.raises(ValueError, match="alpha"):
        ACP(net, 0.1, alpha="sometimes")
    with pytest.raises(ValueError, match="alpha"):
        ACP(net, 0.1, alpha=-1.0)
    with pytest.raises(ValueError, match="step_scale"):
        ACP(net, 0.1, step_scale="sqrt")


@pytest.mark.parametrize("args", [
    ["--optimizer", "acp", "--acp-alpha", "heuristic", "--amortize", "5", "--eps", "0.1", "--lr", "0.03"],
    ["--optimizer", "acp", "--acp-alpha", "heuristic", "--acp-step-scale", "none", "--amortize", "5",
     "--eps", "0.01"],
    ["--optimizer", "kfac", "--kfac-curvature", "fisher", "--amortize", "5", "--stats-every", "2"],
    ["--optimizer", "kfac", "--kl-clip", "none", "--lr", "0.1", "--eps", "1"],
    ["--optimizer", "kfac", "--kl-clip", "0.03"],
    ["--optimizer", "nnn", "--amortize", "5"],
    ["--optimizer", "centered"],
    ["--optimizer", "sgd", "--batchnorm", "mean-only"],
], ids=["acp-heuristic", "acp-heuristic-unscaled", "kfac-fisher", "kfac-no-clip", "kfac-clip", "nnn", "centered", "sgd-meanonly-bn"])
def test_cli_train_chapter6_options(args, tmp_path):
    from click.testing import CliRunner
    from cli.main import main
    res = CliRunner().invoke(main, ["train", "--model", "tiny-mlp", "--steps", "6", "--eval-every", "3",
                                    "--eval-subset", "200", "--batch-size", "20", "--quiet",
                                    "--out", str(tmp_path / "run")] + args)
    assert res.exit_code == 0, res.output


def test_cli_kfac_kl_clip_is_recorded_and_checked(tmp_path):
    """--kl-clip reaches the optimizer (its nu goes to metrics.csv); a bad value is a usage error."""
    import csv
    from click.testing import CliRunner
    from cli.main import main
    base = ["train", "--model", "tiny-mlp", "--steps", "4", "--eval-every", "2", "--eval-subset", "100",
            "--batch-size", "20", "--quiet", "--optimizer", "kfac"]
    res = CliRunner().invoke(main, base + ["--kl-clip", "1e-6", "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    with open(tmp_path / "a" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert 0 < float(rows[-1]["kl_nu"]) < 1
    res = CliRunner().invoke(main, base + ["--kl-clip", "large", "--out", str(tmp_path / "b")])
    assert res.exit_code != 0 and "kl_clip must be a positive number or 'none'" in res.output
