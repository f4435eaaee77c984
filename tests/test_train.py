"""The trainer: exact resume, divergence guard, time budget, epochs and
shuffling, metrics.csv / config.json, refusing to overwrite, Ctrl-C."""
import csv
import json
import signal

import numpy as np
import pytest

from tinynet.data import load_dataset
from tinynet.models import build_model
from tinynet.optim import build_optimizer
from tinynet.train import (CHECKPOINT, CONFIG, LAST_GOOD, METRICS, RunExistsError, RunFileError, TrainConfig, evaluate,
                           load_checkpoint, train)

N_TRAIN, N_TEST, BATCH = 1000, 500, 50          # 20 steps per epoch


@pytest.fixture(scope="module")
def data():
    X, y = load_dataset("mnist7-labels", "train")
    Xt, yt = load_dataset("mnist7-labels", "test")
    return {"train": (X[:N_TRAIN], y[:N_TRAIN]), "test": (Xt[:N_TEST], yt[:N_TEST])}


def make(optimizer="sgd", dtype=np.float64, lr=0.1, **options):
    net = build_model("tiny-mlp", dtype=dtype, seed=3)
    return net, build_optimizer(optimizer, net, lr, **options)


def run(data, out, steps, optimizer="sgd", dtype=np.float64, lr=0.1, options=None, **cfg):
    net, opt = make(optimizer, dtype, lr, **(options or {}))
    cfg = TrainConfig(**{**dict(steps=steps, batch_size=BATCH, eval_every=20, seed=5, out=str(out),
                                progress=False), **cfg})
    return net, opt, train(net, opt, data, cfg)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


SETTINGS = {
    "sgd-f64": ("sgd", np.float64, 0.1, {}),
    "sgd-f32": ("sgd", np.float32, 0.1, {}),
    "nesterov-inverse-f64": ("sgd", np.float64, 0.1,
                             dict(momentum=0.9, nesterov=True, schedule="inverse", schedule_gamma=30.0)),
    "adam-f32": ("adam", np.float32, 0.01, {}),
}


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_resume_is_exact(data, tmp_path, setting):
    """2 x 50 steps with resume == 100 steps straight, bit for bit; 50 is in the
    middle of the third epoch, so the permutation and position must survive."""
    opt_name, dtype, lr, options = SETTINGS[setting]
    net_a, opt_a, res_a = run(data, tmp_path / "straight", 100, opt_name, dtype, lr, options, eval_every=25)
    run(data, tmp_path / "split", 50, opt_name, dtype, lr, options, eval_every=25)
    net_b, opt_b, res_b = run(data, tmp_path / "split", 100, opt_name, dtype, lr, options, eval_every=25,
                              resume=True)
    assert res_a.step == res_b.step == 100
    assert np.array_equal(net_a.get_flat(), net_b.get_flat())
    sa, sb = opt_a.state_dict(), opt_b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert np.array_equal(sa[k], sb[k]), k
    # identical metrics apart from the clock
    ra, rb = _rows(tmp_path / "straight" / METRICS), _rows(tmp_path / "split" / METRICS)
    assert [r["step"] for r in ra] == ["0", "25", "50", "75", "100"]
    for x, y in zip(ra, rb):
        for col in ("step", "train_loss", "test_loss", "test_error", "batch_loss"):
            assert float(x[col] or "nan") == pytest.approx(float(y[col] or "nan"), rel=0, abs=0, nan_ok=True)


def test_epochs_visit_every_row_once(data):
    """Each epoch is a permutation of the training rows, different per epoch."""
    net, opt = make()
    seen = []
    step = opt.step

    def recording(X, Y):
        seen.append(np.asarray(X).sum(axis=1))        # identifies the rows
        return step(X, Y)

    opt.step = recording
    res = train(net, opt, data, TrainConfig(epochs=2, batch_size=BATCH, eval_every=1000, progress=False))
    assert res.stop_reason == "epochs" and res.step == 2 * (N_TRAIN // BATCH)
    sums = data["train"][0].astype(np.float64).sum(axis=1)
    e1, e2 = np.concatenate(seen[:20]), np.concatenate(seen[20:])
    assert np.allclose(np.sort(e1), np.sort(sums)) and np.allclose(np.sort(e2), np.sort(sums))
    assert not np.allclose(e1, e2)


def test_divergence_keeps_last_good_checkpoint(data, tmp_path):
    """A large lr (the loss climbs past the initial one): the run stops with
    "diverged", and last_good.npz holds the parameters of the last evaluation
    that passed the checks, equal to a clean run to that step."""
    net, opt, res = run(data, tmp_path / "bad", 500, lr=10.0, eval_every=2)
    assert res.stop_reason == "diverged"
    assert "diverged at step" in res.message and "last good checkpoint" in res.message
    theta, opt_state, tstate = load_checkpoint(str(tmp_path / "bad" / LAST_GOOD))
    assert np.all(np.isfinite(theta))
    good = tstate["step"]
    assert good == res.last_good_step and 0 < good < res.step and good % 2 == 0
    net_c, _, _ = run(data, tmp_path / "clean", good, lr=10.0, eval_every=2)
    assert np.array_equal(theta, net_c.get_flat())


def test_divergence_on_nan(data, tmp_path):
    net, opt = make()
    step = opt.step

    def poisoned(X, Y):
        loss = step(X, Y)
        return float("nan") if opt.k == 7 else loss

    opt.step = poisoned
    res = train(net, opt, data, TrainConfig(steps=50, batch_size=BATCH, eval_every=5, out=str(tmp_path / "r"),
                                            progress=False))
    assert res.stop_reason == "diverged" and res.step == 7 and "not finite" in res.message
    assert load_checkpoint(str(tmp_path / "r" / CHECKPOINT))[2]["step"] == 5


def test_time_budget(data):
    net, opt = make()
    res = train(net, opt, data, TrainConfig(time_budget=0.3, batch_size=BATCH, eval_every=10, progress=False))
    assert res.stop_reason == "time"
    assert 0.3 <= res.seconds < 0.3 + 2.0      # stops after the step that crosses the budget (a step ~1 ms)
    assert res.step > 1
    # evaluation time is not training time: the clock column never decreases and
    # ends at the result's training seconds
    secs = [r["seconds"] for r in res.history]
    assert secs == sorted(secs) and secs[-1] == res.seconds


def test_metrics_and_config(data, tmp_path):
    out = tmp_path / "run"
    net, opt, res = run(data, out, 45, eval_every=20, options=dict(momentum=0.5),
                        meta=dict(model="tiny-mlp", optimizer="sgd"))
    rows = _rows(out / METRICS)
    assert list(rows[0])[:7] == ["step", "epoch", "seconds", "train_loss", "test_loss", "test_error", "batch_loss"]
    assert "lr" in rows[0]                      # the optimizer's metrics dict
    assert [int(r["step"]) for r in rows] == [0, 20, 40, 45]
    # the last row's losses are the losses of the final parameters, recomputed here
    Xtr, ytr = data["train"]
    Xte, yte = data["test"]
    F = net.forward(Xte)
    p = np.exp(F - F.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    test_loss = -np.mean(np.log(p[np.arange(N_TEST), yte]))
    assert float(rows[-1]["test_loss"]) == pytest.approx(test_loss, rel=1e-10)
    assert float(rows[-1]["test_error"]) == np.mean(F.argmax(axis=1) != yte)
    assert float(rows[-1]["train_loss"]) == pytest.approx(net.loss(Xtr, ytr), rel=1e-10)
    assert float(rows[1]["epoch"]) == 1.0
    assert rows[0]["batch_loss"] == "" and float(rows[1]["batch_loss"]) > 0
    conf = json.loads((out / CONFIG).read_text())
    assert conf["trainer"]["batch_size"] == BATCH and conf["trainer"]["steps"] == 45
    assert conf["meta"] == {"model": "tiny-mlp", "optimizer": "sgd"}
    assert conf["n_params"] == net.n_params and conf["n_train"] == N_TRAIN and conf["dtype"] == "float64"
    assert json.loads((out / "result.json").read_text())["stop_reason"] == "steps"


def test_eval_subset_is_fixed_and_seeded(data):
    """With eval_subset, the step-0 losses are those of a seeded subset of rows."""
    net, opt = make()
    res = train(net, opt, data, TrainConfig(steps=1, batch_size=BATCH, eval_subset=100, seed=5, progress=False))
    full, _ = evaluate(make()[0], *data["train"])      # same initial parameters, all rows
    assert res.history[0]["train_loss"] != pytest.approx(full, rel=1e-12)
    res2 = train(*make(), data, TrainConfig(steps=1, batch_size=BATCH, eval_subset=100, seed=5, progress=False))
    assert res2.history[0]["train_loss"] == res.history[0]["train_loss"]


def test_refuses_to_overwrite(data, tmp_path):
    out = tmp_path / "run"
    run(data, out, 5)
    with pytest.raises(RunExistsError, match="already holds a run"):
        run(data, out, 5)
    _, _, res = run(data, out, 7, overwrite=True)
    assert res.step == 7 and [r["step"] for r in res.history] == [0, 7]
    with pytest.raises(RunFileError, match="cannot resume"):
        run(data, tmp_path / "empty", 5, resume=True)
    with pytest.raises(ValueError, match="seed"):
        run(data, out, 10, resume=True, seed=6)


def test_ctrl_c_saves_and_resumes(data, tmp_path):
    """SIGINT during step 10: that step completes, a checkpoint is written, and
    resuming gives the same parameters as a run that was never interrupted."""
    # as at a terminal: Python's own Ctrl-C handler (a test started by `nohup` or `&`
    # inherits SIGINT ignored, which the trainer then leaves ignored)
    caller = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _ctrl_c_saves_and_resumes(data, tmp_path)
    finally:
        signal.signal(signal.SIGINT, caller)


def test_ignored_sigint_stays_ignored(data, tmp_path):
    """Under nohup SIGINT is SIG_IGN: the trainer installs no handler for it, so
    the run goes on, and the disposition is the same afterwards."""
    caller = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        net, opt = make()
        step = opt.step

        def interrupted(X, Y):
            if opt.k == 3:
                signal.raise_signal(signal.SIGINT)
            return step(X, Y)

        opt.step = interrupted
        res = train(net, opt, data, TrainConfig(steps=10, batch_size=BATCH, progress=False))
        assert res.stop_reason == "steps" and res.step == 10
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, caller)


def _ctrl_c_saves_and_resumes(data, tmp_path):
    before = signal.getsignal(signal.SIGINT)
    net, opt = make()
    step = opt.step

    def interrupted(X, Y):
        if opt.k == 9:
            signal.raise_signal(signal.SIGINT)
        return step(X, Y)

    opt.step = interrupted
    out = tmp_path / "r"
    cfg = TrainConfig(steps=30, batch_size=BATCH, eval_every=20, seed=5, out=str(out), progress=False)
    res = train(net, opt, data, cfg)
    assert res.stop_reason == "interrupted" and res.step == 10
    assert load_checkpoint(str(out / CHECKPOINT))[2]["step"] == 10
    net2, opt2 = make()
    train(net2, opt2, data, TrainConfig(**{**cfg.__dict__, "resume": True}))
    net3, _, _ = run(data, tmp_path / "straight", 30)
    assert np.array_equal(net2.get_flat(), net3.get_flat())
    assert signal.getsignal(signal.SIGINT) is before          # train() puts the caller's handler back


def test_bad_config(data):
    net, opt = make()
    with pytest.raises(ValueError, match="stop criterion"):
        train(net, opt, data, TrainConfig())
    with pytest.raises(ValueError, match="batch_size"):
        train(net, opt, data, TrainConfig(steps=1, batch_size=N_TRAIN + 1))
    other, _ = make()
    with pytest.raises(ValueError, match="another network"):
        train(other, opt, data, TrainConfig(steps=1))


def test_evaluate_uses_eval_mode_and_keeps_batchnorm_statistics():
    """Evaluation runs batch norm on its running statistics, leaves them
    unchanged, and restores training mode afterwards."""
    from tinynet.layers.batchnorm import BatchNorm
    from tinynet.models import mlp
    from tinynet.train import evaluate
    import tinynet as tn
    net = mlp([5, 4, 3], "tanh", tn.SoftmaxCrossEntropyLoss(), dtype=np.float64, batchnorm="full")
    bn = next(s for s in net.layers if isinstance(s, BatchNorm))
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 5)) + 3.0, rng.integers(0, 3, 40)
    before = bn.running_mean.copy(), bn.running_var.copy()
    loss, err = evaluate(net, X, y)
    assert np.array_equal(bn.running_mean, before[0]) and np.array_equal(bn.running_var, before[1])
    assert all(s.training for s in net.layers)
    net.train(False)
    ref = net.loss(X, y)
    assert loss == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize("stage", ["batchnorm", "zca-pi"])
def test_resume_keeps_running_statistics(data, tmp_path, stage):
    """BatchNorm's running statistics (and a ZCA stage's running estimates and
    power-iteration generator) are state outside theta: a resumed run must
    evaluate, and train, exactly as the uninterrupted one."""
    import tinynet as tn
    from tinynet.models import mlp

    def build():
        if stage == "batchnorm":
            return mlp([49, 16, 10], "tanh", tn.SoftmaxCrossEntropyLoss(), dtype=np.float64, batchnorm="full",
                       seed=3)
        return tn.Sequential([tn.Linear(49, 8), tn.ZCAWhitening(8, groups=2, backward="pi", pi_iters=5),
                              tn.Tanh(), tn.Linear(8, 10)], tn.SoftmaxCrossEntropyLoss(), dtype=np.float64, seed=3)

    def go(out, steps, resume=False):
        net = build()
        opt = build_optimizer("sgd", net, 0.1)
        res = train(net, opt, data, TrainConfig(steps=steps, batch_size=BATCH, eval_every=10, seed=5,
                                                out=str(out), progress=False, resume=resume))
        return net, res

    net_a, res_a = go(tmp_path / "straight", 40)
    go(tmp_path / "split", 20)
    net_b, res_b = go(tmp_path / "split", 40, resume=True)
    assert np.array_equal(net_a.get_flat(), net_b.get_flat())
    assert [r["train_loss"] for r in res_a.history] == [r["train_loss"] for r in res_b.history]
    assert all(np.array_equal(v, net_b.buffers()[k]) if isinstance(v, np.ndarray) else v == net_b.buffers()[k]
               for k, v in net_a.buffers().items())
