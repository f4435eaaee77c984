"""`tinynet plot` (tinynet.plotting.runs) and the heatmaps of `tinynet inspect`
(tinynet.plotting.scales, cli/inspect.py's labels): labels from config.json,
one panel per metric kind, seeds as mean +- band, the legend outside the data,
batch_loss drawable; --scale linear|symlog|block, block labels with the stage
and the parameter, a readable SeedMatrices. The figures are inspected through
matplotlib (Agg): axes, their labels, the drawn data."""
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402
from matplotlib.colors import Normalize, SymLogNorm  # noqa: E402

import tinynet as tn  # noqa: E402
from cli.inspect import heatmap_figure, stage_labels  # noqa: E402
from cli.main import main  # noqa: E402
from tinynet import curvature as cv  # noqa: E402
from tinynet.plotting import runs as pr  # noqa: E402
from tinynet.plotting import scales  # noqa: E402
from tinynet.train import CONFIG, METRICS, MetricsWriter, TrainConfig, train  # noqa: E402
from tinynet.train.files import atomic_json  # noqa: E402

NETWORK = {"SoftmaxCrossEntropyLoss": "Sequential([Linear(49, 8), Tanh(), Linear(8, 10)], "
                                      "SoftmaxCrossEntropyLoss(), dtype=float32, device='cpu')",
           "MSELoss": "Sequential([Linear(784, 30), Sigmoid(), Linear(30, 784)], MSELoss(), "
                      "dtype=float32, device='cpu')"}
STEPS = [0, 10, 20, 30]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def fake_run(folder, losses, *, model="tiny-mlp", dataset="mnist7-labels", optimizer="sgd", lr=0.1,
             options=None, seed=0, loss="SoftmaxCrossEntropyLoss", batch_size=200, errors=None,
             batch_losses=None, config=True):
    """A run folder as tinynet.train writes it (MetricsWriter, atomic_json), with
    the given per-evaluation train losses at STEPS."""
    os.makedirs(folder)
    if config:
        atomic_json(os.path.join(folder, CONFIG), dict(
            trainer=dict(batch_size=batch_size, steps=STEPS[-1], eval_every=10, seed=seed, out=str(folder)),
            meta=dict(model=model, dataset=dataset, optimizer=optimizer, lr=lr, dtype="float32",
                      options=options or {}),
            network=NETWORK[loss], optimizer=optimizer.upper(), n_params=1, resumed=[], restarts=[]))
    w = MetricsWriter(os.path.join(folder, METRICS), [])
    for i, (step, v) in enumerate(zip(STEPS, losses)):
        w.add(dict(step=step, epoch=step / 100, seconds=0.01 * step + 0.001 * seed, train_loss=v,
                   test_loss=1.1 * v, test_error=None if errors is None else errors[i],
                   batch_loss=None if batch_losses is None or i == 0 else batch_losses[i]))
    return str(folder)


def legend_texts(fig):
    return [t.get_text() for t in fig.legends[0].get_texts()]


def lines_of(ax):
    return [ln for ln in ax.get_lines() if len(ln.get_xdata())]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# -- tinynet plot ------------------------------------------------------------------------------
def test_labels_come_from_the_config_not_the_folder(tmp_path):
    a = fake_run(tmp_path / "tiny-mlp-sgd-20261202-031500", [2.3, 2.0, 1.8, 1.7], options={"momentum": 0.9})
    b = fake_run(tmp_path / "tiny-mlp-kfac-20261202-031501", [2.3, 1.5, 1.2, 1.0], optimizer="kfac", lr=1.0,
                 options={"eps": 1e-3, "T": 100, "kl_clip": 0.01, "stats_every": 10, "nesterov": False})
    fig, n, _ = pr.figure([pr.read_run(a), pr.read_run(b)])
    assert n == 2
    assert legend_texts(fig) == ["sgd lr=0.1 momentum=0.9", "kfac lr=1 eps=0.001 T=100 kl_clip=0.01"]
    assert "tiny-mlp on mnist7-labels" in fig._suptitle.get_text()


def test_equal_labels_get_what_differs_then_the_folder(tmp_path):
    a = fake_run(tmp_path / "a", [2.3, 2.0, 1.8, 1.7], batch_size=50)
    b = fake_run(tmp_path / "b", [2.3, 2.1, 1.9, 1.8], batch_size=200)
    c = fake_run(tmp_path / "c", [2.3, 2.2, 2.0, 1.9], config=False)
    d = fake_run(tmp_path / "d", [2.3, 2.2, 2.1, 2.0], config=False)
    fig, _, _ = pr.figure([pr.read_run(p) for p in (a, b, c, d)])
    assert legend_texts(fig) == ["sgd lr=0.1 batch_size=50", "sgd lr=0.1 batch_size=200", "c", "d"]
    # the models differ (one run has no model): each label names its model
    e = fake_run(tmp_path / "e", [2.3, 2.0, 1.8, 1.7], model="tiny-cnn")
    fig, _, _ = pr.figure([pr.read_run(a), pr.read_run(e)])
    assert legend_texts(fig) == ["tiny-mlp: sgd lr=0.1", "tiny-cnn: sgd lr=0.1"]


def test_one_panel_per_metric_kind_never_two_loss_kinds_on_one_axis(tmp_path):
    ce = fake_run(tmp_path / "ce", [2.3, 2.0, 1.8, 1.7], errors=[0.9, 0.6, 0.5, 0.4])
    ce2 = fake_run(tmp_path / "ce2", [2.3, 1.9, 1.6, 1.4], model="tiny-cnn", errors=[0.9, 0.5, 0.4, 0.3])
    mse = fake_run(tmp_path / "mse", [52.8, 40.0, 30.0, 25.0], model="mnist-autoencoder",
                   dataset="mnist-autoencode", loss="MSELoss")
    fig, n, notes = pr.figure([pr.read_run(p) for p in (ce, ce2, mse)], ["train_loss", "test_error"])
    by_label = {ax.get_ylabel().replace("\n", " "): ax for ax in fig.axes}     # long labels on two lines
    assert set(by_label) == {"cross-entropy (nats)", "squared error (sum over outputs, mean over examples)",
                             "error rate (fraction of examples misclassified)"}
    assert n == 5 and notes == [f"{mse}: no test_error values, skipped"]
    mse_ax = by_label["squared error (sum over outputs, mean over examples)"]
    # the two models with a cross-entropy share the panel; the MSE run is alone on its own axis
    assert [list(ln.get_ydata()) for ln in lines_of(mse_ax)] == [[52.8, 40.0, 30.0, 25.0]]
    assert sorted(ln.get_ydata()[-1] for ln in lines_of(by_label["cross-entropy (nats)"])) == [1.4, 1.7]
    assert by_label["cross-entropy (nats)"].get_yscale() == "log"
    assert by_label["error rate (fraction of examples misclassified)"].get_yscale() == "linear"
    assert all(ax.get_xlabel() == "updates" for ax in fig.axes)
    fig, _, _ = pr.figure([pr.read_run(ce)], x="time", title="my title")
    assert fig.axes[0].get_xlabel() == "training time (s)" and fig._suptitle.get_text() == "my title"
    np.testing.assert_allclose(lines_of(fig.axes[0])[0].get_xdata(), [0.01 * s for s in STEPS])


def test_runs_that_differ_by_seed_are_a_mean_and_a_band(tmp_path):
    L = np.array([[2.3, 2.0, 1.8, 1.7], [2.4, 2.2, 1.9, 1.5], [2.2, 1.9, 1.6, 1.6]])
    seeds = [fake_run(tmp_path / f"s{i}", L[i], seed=i) for i in range(3)]
    other = fake_run(tmp_path / "lr", [2.3, 2.2, 2.1, 2.0], lr=0.01)
    runs = [pr.read_run(p) for p in seeds + [other]]
    fig, n, _ = pr.figure(runs)
    ax = fig.axes[0]
    assert n == 2 and len(lines_of(ax)) == 2
    np.testing.assert_allclose(lines_of(ax)[0].get_ydata(), L.mean(axis=0))
    band = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(band) == 1
    verts = band[0].get_paths()[0].vertices
    np.testing.assert_allclose(verts[:, 1].max(), L.max(), rtol=1e-12)
    np.testing.assert_allclose(verts[:, 1].min(), L.min(), rtol=1e-12)
    texts = legend_texts(fig)
    assert "mean of 3 runs (seeds 0, 1, 2)" in texts[0] and "min-max" in texts[0] and texts[1] == "sgd lr=0.01"
    fig, _, _ = pr.figure(runs, band="std")
    verts = [c for c in fig.axes[0].collections if isinstance(c, PolyCollection)][0].get_paths()[0].vertices
    hi = L.mean(axis=0) + L.std(axis=0, ddof=1)
    np.testing.assert_allclose(verts[:, 1].max(), hi.max(), rtol=1e-12)
    assert "+- 1 std" in legend_texts(fig)[0]
    fig, n, _ = pr.figure(runs, by_seed=False)
    assert n == 4 and legend_texts(fig)[:3] == ["sgd lr=0.1 seed=0", "sgd lr=0.1 seed=1", "sgd lr=0.1 seed=2"]


def test_the_legend_is_outside_every_panel(tmp_path):
    a = fake_run(tmp_path / "a", [2.3, 2.0, 1.8, 1.7], errors=[0.9, 0.6, 0.5, 0.4], batch_losses=[0, 2.1, 1.9, 1.8])
    b = fake_run(tmp_path / "b", [2.3, 1.5, 1.2, 1.0], optimizer="adam", lr=1e-3, errors=[0.9, 0.5, 0.3, 0.2])
    fig, _, _ = pr.figure([pr.read_run(a), pr.read_run(b)], ["train_loss", "batch_loss", "test_error"])
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    leg = fig.legends[0].get_window_extent(r)
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert not leg.overlaps(ax.get_window_extent(r)), ax.get_ylabel()
    # the loss panel holds two columns: the legend names their line styles
    assert legend_texts(fig)[-2:] == ["training loss", "minibatch loss (mean since the previous evaluation)"]


def _real_run(out, loss, seed=0):
    """20 steps of a 4-3 net on seeded data through tinynet.train.train."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((64, 4))
    if loss == "mse":
        Y, lossf = rng.standard_normal((64, 3)), tn.MSELoss()
    else:
        Y, lossf = rng.integers(0, 3, 64), tn.SoftmaxCrossEntropyLoss()
    net = tn.Sequential([tn.Linear(4, 3)], lossf, dtype=np.float64, seed=seed)
    opt = tn.optim.SGD(net, lr=0.05, momentum=0.5)
    meta = dict(model="linear-4-3", dataset="random", optimizer="sgd", lr=0.05, options={"momentum": 0.5})
    train(net, opt, {"train": (X, Y), "test": (X[:16], Y[:16])},
          TrainConfig(batch_size=16, steps=20, eval_every=5, seed=seed, out=str(out), progress=False, meta=meta))
    return str(out)


def test_real_runs_batch_loss_and_loss_kinds_through_the_cli(tmp_path):
    runs = [_real_run(tmp_path / "mse", "mse"), _real_run(tmp_path / "ce0", "ce"), _real_run(tmp_path / "ce1", "ce", 1)]
    out = tmp_path / "f.png"
    r = invoke("plot", *runs, "--columns", "train_loss,batch_loss", "--out", out)
    assert r.exit_code == 0, r.output
    assert "4 curve(s), 2 panel(s)" in r.output         # (mse, ce seeds 0+1) x (train_loss, batch_loss)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loaded = [pr.read_run(p) for p in runs]
    fig, n, _ = pr.figure(loaded, ["batch_loss"])
    ylabels = sorted(ax.get_ylabel().replace("\n", " ") for ax in fig.axes)
    assert n == 2 and ylabels == ["cross-entropy (nats)", "squared error (sum over outputs, mean over examples)"]
    mse_ax = [ax for ax in fig.axes if ax.get_ylabel().startswith("squared")][0]
    want = [(row["step"], row["batch_loss"]) for row in loaded[0].rows if row["batch_loss"] is not None]
    assert [s for s, _ in want] == [5, 10, 15, 20]
    line = lines_of(mse_ax)[0]
    np.testing.assert_array_equal(line.get_xdata(), [s for s, _ in want])
    np.testing.assert_array_equal(line.get_ydata(), [v for _, v in want])
    assert "sgd lr=0.05 momentum=0.5" in legend_texts(fig)[0]
    assert any("mean of 2 runs (seeds 0, 1)" in t for t in legend_texts(fig))


def test_plot_column_errors_are_one_line(tmp_path):
    a = fake_run(tmp_path / "a", [2.3, 2.0, 1.8, 1.7])
    r = invoke("plot", a, "--columns", "train_loss,nonsense", "--out", tmp_path / "f.png")
    assert r.exit_code == 2 and "no run has a column 'nonsense'" in r.output and "batch_loss" in r.output
    r = invoke("plot", a, "--y", "test_error", "--out", tmp_path / "f.png")
    assert r.exit_code == 1 and "nothing to plot" in r.output and not (tmp_path / "f.png").exists()
    (tmp_path / "a" / CONFIG).write_text('{"meta": ')
    r = invoke("plot", a, "--out", tmp_path / "f.png")
    assert r.exit_code == 1 and "damaged" in r.output


# -- tinynet inspect ---------------------------------------------------------------------------
def _blocky():
    """A 12 x 12 matrix with 2 x 2 blocks of magnitudes 1e2, 1, 1e-2 and 0."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((12, 12))
    A[:6, :6] *= 1e2
    A[6:, :6] *= 1e-2
    A[:6, 6:] = 0.0
    return A, [6, 6], [6, 6], ["p (W)", "p (b)"], ["p (W)", "p (b)"]


def test_symlog_threshold_is_a_small_quantile_of_the_entries():
    rng = np.random.default_rng(3)
    A = rng.choice([-1.0, 1.0], (20, 20)) * 10.0 ** rng.uniform(-3, 0, (20, 20))
    A[:5] = 0.0                                   # zeros do not count
    t = scales.symlog_threshold(A)
    nz = np.abs(A[A != 0])
    assert np.isclose(np.mean(nz <= t), 0.05, atol=1 / nz.size)
    # a spread over more than DECADES decades: floored at max * 10^-6
    B = np.diag(10.0 ** -np.arange(12.0))
    assert scales.symlog_threshold(B) == 1e-6
    assert scales.symlog_threshold(np.zeros((3, 3))) == 1.0


@pytest.mark.parametrize("scale", scales.SCALES)
def test_heatmap_scales(scale):
    A, rows, cols, rl, cl = _blocky()
    fig = heatmap_figure(A, rows, cols, rl, cl, "A", scale)
    im = fig.axes[0].images[0]
    data = np.asarray(im.get_array())
    nrm = im.norm
    if scale == "linear":
        assert type(nrm) is Normalize and nrm.vmax == np.abs(A).max() == -nrm.vmin
        np.testing.assert_array_equal(data, A)
    elif scale == "symlog":
        assert isinstance(nrm, SymLogNorm) and nrm.vmax == np.abs(A).max()
        assert nrm.linthresh == scales.symlog_threshold(A)
        # the 1e-2 block spans a visible part of the colour range, unlike on a linear scale
        assert np.abs(nrm(A[6:, :6]) - 0.5).max() > 0.15
        assert np.abs(Normalize(-nrm.vmax, nrm.vmax)(A[6:, :6]) - 0.5).max() < 1e-3
    else:
        assert (nrm.vmin, nrm.vmax) == (-1.0, 1.0)
        for (r, c) in ((0, 0), (6, 0), (6, 6)):
            blk = A[r:r + 6, c:c + 6]
            np.testing.assert_allclose(data[r:r + 6, c:c + 6], blk / np.abs(blk).max(), rtol=1e-14)
        assert not data[:6, 6:].any()
        texts = sorted(t.get_text() for t in fig.axes[0].texts)
        assert texts == sorted(f"max {np.abs(A[r:r + 6, c:c + 6]).max():.2g}"
                               for r in (0, 6) for c in (0, 6))
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == rl


def test_inspect_scale_option_and_block_labels(tmp_path):
    out = tmp_path / "h.png"
    r = invoke("inspect", "--model", "mlp:3-2-2:tanh", "--matrix", "H", "--batch", "4", "--scale", "block",
               "--out", out)
    assert r.exit_code == 0 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", r.output
    r = invoke("inspect", "--model", "mlp:3-2-2:tanh", "--matrix", "H", "--scale", "log", "--out", out)
    assert r.exit_code == 2 and "--scale" in r.output
    r = invoke("inspect", "--model", "mlp:3-2-2:tanh", "--matrix", "G", "--batch", "4", "--out", tmp_path / "g.npz")
    assert r.exit_code == 0, r.output
    with np.load(tmp_path / "g.npz") as z:
        assert list(z["row_labels"]) == ["Linear 1 (W)", "Linear 1 (b)", "Linear 2 (W)", "Linear 2 (b)"]
        assert list(z["row_blocks"]) == [6, 2, 4, 2]


def test_block_labels_name_the_stage_and_the_parameter():
    net = tn.Sequential([tn.Linear(4, 3), tn.BatchNorm(3), tn.Tanh(), tn.Linear(3, 3), tn.MeanOnlyBatchNorm(3),
                         tn.Linear(3, 2)], tn.MSELoss(), dtype=np.float64)
    sizes, labels = stage_labels(net)
    assert labels == ["Linear 1 (W)", "Linear 1 (b)", "BatchNorm 1 (gamma)", "BatchNorm 1 (beta)",
                      "Linear 2 (W)", "Linear 2 (b)", "MeanOnlyBatchNorm 1 (beta)", "Linear 3 (W)", "Linear 3 (b)"]
    assert sizes == [12, 3, 3, 3, 9, 3, 3, 6, 2] and sum(sizes) == net.n_params


def test_seed_matrices_print_their_names_and_shapes():
    net = tn.Sequential([tn.Linear(4, 5), tn.Tanh(), tn.Linear(5, 3)], tn.SoftmaxCrossEntropyLoss(),
                        dtype=np.float64)
    m = cv.matrices(net, np.ones(4), 1)
    text = repr(m)
    for name, A in m.as_dict().items():
        if name.startswith("b_"):
            continue
        assert f"{name} {A.shape}" in text, name
    assert "Linear(4, 5), Tanh(), Linear(5, 3), SoftmaxCrossEntropyLoss()" in text
    assert f"{[len(b) for b in m.b]}" in text and "a_0..a_L = [4, 5, 5, 3, 1]" in text


# -- benchmarks/thesis_fig6.py's data folder ----------------------------------------------------
def test_thesis_fig6_data_folder_is_relative_to_the_repository(tmp_path, monkeypatch):
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks")
    monkeypatch.syspath_prepend(here)
    sys.modules.pop("thesis_fig6", None)
    import thesis_fig6
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TINYNET_DATA", raising=False)
    repo = os.path.dirname(os.path.abspath(here))
    want = os.path.normpath(os.path.join(repo, "..", "shared", "data", "cifar10"))
    if os.path.isdir(want):
        assert thesis_fig6.cifar_dir(None) == want
    else:
        with pytest.raises(SystemExit, match="does not exist"):
            thesis_fig6.cifar_dir(None)
    monkeypatch.setenv("TINYNET_DATA", str(tmp_path))
    assert thesis_fig6.cifar_dir(None) == str(tmp_path)
    with pytest.raises(SystemExit, match=r"missing \(--data-dir\) does not exist.*--skip-cifar"):
        thesis_fig6.cifar_dir("missing")
    assert not os.path.isabs(thesis_fig6.DEFAULT_CIFAR)
