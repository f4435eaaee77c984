"""A run never lies and never loses work (issue 12), one section per fault class:

1. divergence on bounded and unbounded losses; last_good.npz; restart from it
2. run files written atomically (injected ENOSPC, RLIMIT_FSIZE); --overwrite
3. the lock (a second user refused, a stale lock taken over)
4. SIGTERM / SIGHUP / SIGINT at step boundaries and during the first evaluation
5. hyperparameter ranges checked before any folder exists
6. NaN in, refused at the entry points; a step never writes non-finite parameters
7. one-line errors for the faults a user meets

Child-process cases (full disk via RLIMIT_FSIZE, a real SIGTERM, two processes,
kill -9 during writes) use tests/faults.py; the longer ones are marked slow.
"""
import errno
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import tinynet as tn
from cli.main import main
from faults import (BATCH, TINY, assert_unchanged, cli, rows, snapshot, start, tiny_data, tiny_run,
                    wait_rows)
from tinynet.data import load_dataset
from tinynet.models import build_model, mlp
from tinynet.optim import OPTIMIZERS, SGD, build_optimizer
from tinynet.optim.base import NonFiniteError
from tinynet.train import (CHECKPOINT, CONFIG, LAST_GOOD, LOCK, METRICS, RESULT, CheckpointError,
                           DivergenceMonitor, RunDir, RunFileError, RunLockedError, TrainConfig,
                           load_checkpoint, read_metrics, train)


@pytest.fixture(scope="module")
def data():
    return tiny_data()


@pytest.fixture
def terminal_signals():
    """The dispositions of a terminal session: a test started by `nohup` or `&`
    inherits SIGHUP / SIGINT ignored, which the trainer then rightly leaves
    ignored. The caller's dispositions come back afterwards."""
    wanted = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL,
              signal.SIGHUP: signal.SIG_DFL}
    before = {s: signal.signal(s, h) for s, h in wanted.items()}
    yield
    for s, h in before.items():
        signal.signal(s, h)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def one_line_error(r):
    """The CLI's error output is one line starting 'Error: ' (no traceback)."""
    lines = [ln for ln in r.output.strip().splitlines() if ln.startswith("Error")]
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    return lines[0]


def _result(out):
    with open(os.path.join(out, RESULT)) as f:
        return json.load(f)


# -- 1. divergence ------------------------------------------------------------------------------
def _sigmoid_autoencoder(seed=1):
    """49-32-8-32-49, sigmoid units and output, squared error: a bounded loss."""
    return mlp([49, 32, 8, 32, 49], "sigmoid", tn.MSELoss(), out_activation="sigmoid",
               dtype=np.float64, seed=seed)


@pytest.mark.parametrize("lr, seen, good", [(1000.0, "parameter norm", 0), (100.0, "stopped moving", 10)])
def test_bounded_loss_divergence_is_caught(data, tmp_path, lr, seen, good):
    """SGD drives the sigmoids into saturation: the loss freezes at a finite
    value below the initial one (the old 100x-the-initial-loss guard exited 0
    here). The run must stop as diverged, keep last_good.npz, leave the
    network holding it, and say where it is. (A stall is seen by comparing two
    evaluations, so its last good state is the first of the two.)"""
    X = data["train"][0]
    net = _sigmoid_autoencoder()
    theta0 = net.get_flat()
    opt = build_optimizer("sgd", net, lr)
    out = tmp_path / "r"
    res = train(net, opt, {"train": (X, X)}, TrainConfig(steps=300, batch_size=BATCH, eval_every=10,
                                                         out=str(out), progress=False))
    assert res.stop_reason == "diverged" and seen in res.message and res.step <= 30
    assert res.last_good_step == good and str(out / LAST_GOOD) in res.message and "--from-last-good" in res.message
    theta, _, tstate = load_checkpoint(str(out / LAST_GOOD))
    assert tstate["step"] == good and (good > 0 or np.array_equal(theta, theta0))
    assert np.array_equal(net.get_flat(), theta)                  # the network is back at the good state
    assert load_checkpoint(str(out / CHECKPOINT))[2]["step"] == good   # the dead state was not written
    r = _result(out)
    assert r["stop_reason"] == "diverged" and seen in r["divergence"]["seen"] and r["last_good_step"] == good


def test_regression_past_the_initial_loss(data, tmp_path):
    """Cross-entropy at lr 10 climbs back above the initial loss: caught after
    two evaluations in a row; last_good.npz equals a clean run to its step."""
    net, opt, res = tiny_run(data, tmp_path / "bad", 500, lr=10.0, eval_every=2)
    assert res.stop_reason == "diverged" and "evaluations in a row" in res.message
    good = res.last_good_step
    assert 0 < good < res.step
    theta, _, tstate = load_checkpoint(str(tmp_path / "bad" / LAST_GOOD))
    assert tstate["step"] == good
    net_c, _, _ = tiny_run(data, tmp_path / "clean", good, lr=10.0, eval_every=2)
    assert np.array_equal(theta, net_c.get_flat())


def test_non_finite_parameters_written_by_a_step(data, tmp_path):
    class Poisoning(SGD):
        def step(self, X, Y):
            loss = super().step(X, Y)
            if self.k == 7:
                self.net.theta[3] = np.nan
            return loss

    net = build_model("tiny-mlp", dtype=np.float64, seed=3)
    res = train(net, Poisoning(net, 0.1), data, TrainConfig(steps=50, batch_size=BATCH, eval_every=5,
                                                            out=str(tmp_path / "r"), progress=False))
    assert res.stop_reason == "diverged" and res.step == 8 and "not finite" in res.message
    assert res.last_good_step == 5 and np.all(np.isfinite(net.get_flat()))


def test_monitor_checks_one_by_one():
    rng = np.random.default_rng(0)
    theta = rng.standard_normal(100)
    m = DivergenceMonitor(factor=10.0)
    assert m.on_eval(theta, 5.0) == (True, None)
    assert m.on_step(4.0) is None and "exceeds 10 x the initial loss" in m.on_step(51.0)
    assert "not finite" in m.on_step(float("inf"))
    bad = theta.copy()
    bad[[3, 7]] = np.nan
    assert "2 of the 100 parameters are not finite" in m.on_eval(bad, 1.0)[1]
    assert "parameter norm" in m.on_eval(theta * 101, 1.0)[1]
    huge = np.full(100, 1e300)                  # finite, but its squares overflow
    assert "parameter norm" in m.on_eval(huge, 1.0)[1]
    m = DivergenceMonitor()
    m.on_eval(theta, 5.0)
    assert m.on_eval(theta * 1.01, 2.0) == (True, None)
    assert m.on_eval(theta * 1.01, 3.0) == (True, None)              # moved, below the initial loss
    assert m.on_eval(theta * 1.01, 3.0)[1].startswith("the parameters stopped moving")
    m = DivergenceMonitor()
    m.on_eval(theta, 5.0)
    assert m.on_eval(theta * 12, 4.0) == (True, None)
    assert "stopped moving" in m.on_eval(theta * 12.0000001, 4.0)[1]   # stalled with a grown norm
    m = DivergenceMonitor(patience=2)
    m.on_eval(theta, 5.0)
    m.on_eval(theta * 1.1, 2.0)
    assert m.on_eval(theta * 1.2, 6.0) == (False, None)              # one regression: not good, not yet
    assert m.on_eval(theta * 1.3, 2.5) == (True, None)               # back: the count restarts
    m.on_eval(theta * 1.4, 6.0)
    assert "2 evaluations in a row" in m.on_eval(theta * 1.5, 7.0)[1]


def test_a_converged_run_is_not_divergence(data, tmp_path):
    """The checks do not fire on healthy runs: SGD, Adam, KFAC on the classifier."""
    for name, lr in (("sgd", 0.3), ("adam", 0.01), ("kfac", 0.3)):
        _, _, res = tiny_run(data, tmp_path / name, 200, name, lr, eval_every=10)
        assert res.stop_reason == "steps", (name, res.message)


def test_resume_refused_after_divergence_and_restart_from_last_good(data, tmp_path):
    out = tmp_path / "r"
    r = invoke(*TINY, "--lr", "10", "--steps", "200", "--eval-every", "2", "--dtype", "float64", "--out", out)
    assert r.exit_code == 3 and "--from-last-good" in r.output
    good = _result(out)["last_good_step"]
    before = snapshot(out)
    r = invoke(*TINY, "--lr", "10", "--steps", "200", "--eval-every", "2", "--dtype", "float64", "--out", out,
               "--resume")
    assert r.exit_code == 1 and "diverged" in one_line_error(r) and "--from-last-good" in r.output
    assert_unchanged(before, out)
    # only the optimizer's settings may change in a restart
    r = invoke(*TINY, "--lr", "0.1", "--steps", "200", "--eval-every", "2", "--dtype", "float64", "--out", out,
               "--resume", "--from-last-good", "--seed", "9")
    assert r.exit_code == 1 and "seed" in one_line_error(r)
    assert_unchanged(before, out)
    r = invoke(*TINY, "--lr", "0.1", "--steps", "40", "--eval-every", "2", "--dtype", "float64", "--out", out,
               "--resume", "--from-last-good")
    assert r.exit_code == 0, r.output
    res = _result(out)
    assert res["stop_reason"] == "steps" and res["step"] == 40
    steps = [m["step"] for m in read_metrics(str(out / METRICS))]
    assert steps == list(range(0, 41, 2))
    old = read_metrics(str(out / "attempt-1" / METRICS))             # the diverged attempt is kept whole
    assert [m["step"] for m in old][-1] > good
    kept = [m for m in read_metrics(str(out / METRICS)) if m["step"] <= good]
    assert kept == [m for m in old if m["step"] <= good]
    assert _result(out / "attempt-1")["stop_reason"] == "diverged"
    with open(out / CONFIG) as f:
        conf = json.load(f)
    assert conf["restarts"][0]["from_step"] == good and conf["restarts"][0]["changed"]["lr"] == [10.0, 0.1]
    assert np.all(np.isfinite(load_checkpoint(str(out / CHECKPOINT))[0]))


# -- 2. atomic files --------------------------------------------------------------------------------
class _FailingFsync:
    """os.fsync in tinynet.train.files raises ENOSPC from its n-th call on."""

    def __init__(self, n):
        self.n, self.calls = n, 0

    def __call__(self, fd):
        self.calls += 1
        if self.calls >= self.n:
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.fsync(fd)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_full_disk_during_resume_keeps_the_run(data, tmp_path, monkeypatch, n):
    """A resume whose n-th file write hits a full disk: one RunFileError, the
    run's files still whole (config parses, metrics rows intact, checkpoint
    equal to before, no temporary file left), and a later resume completes the
    run exactly as if nothing had happened."""
    out = tmp_path / "r"
    tiny_run(data, out, 20)
    ckpt = (out / CHECKPOINT).read_bytes()
    old_rows = read_metrics(str(out / METRICS))
    import tinynet.train.files as files
    monkeypatch.setattr(files.os, "fsync", _FailingFsync(n))
    with pytest.raises(RunFileError, match="disk is full"):
        tiny_run(data, out, 60, resume=True)
    monkeypatch.undo()
    json.loads((out / CONFIG).read_text())
    now = read_metrics(str(out / METRICS))
    assert now[:len(old_rows)] == old_rows
    assert load_checkpoint(str(out / CHECKPOINT))[2]["step"] in {m["step"] for m in now}
    if load_checkpoint(str(out / CHECKPOINT))[2]["step"] == 20:
        assert (out / CHECKPOINT).read_bytes() == ckpt
    assert not [f for f in os.listdir(out) if ".tmp-" in f]
    net, _, res = tiny_run(data, out, 60, resume=True)
    straight, _, _ = tiny_run(data, tmp_path / "straight", 60)
    assert res.step == 60 and np.array_equal(net.get_flat(), straight.get_flat())
    assert [m["step"] for m in read_metrics(str(out / METRICS))] == [0, 10, 20, 30, 40, 50, 60]


def test_full_disk_rlimit_in_a_child_process(tmp_path):
    """The real thing: RLIMIT_FSIZE below the checkpoint's size on a resume.
    One line on stderr, exit 1, the checkpoint byte for byte as before."""
    out = tmp_path / "r"
    args = TINY + ["--steps", "20", "--eval-every", "10", "--out", str(out)]
    assert invoke(*args).exit_code == 0
    ckpt = (out / CHECKPOINT).read_bytes()
    args[args.index("--steps") + 1] = "40"
    p = cli(args + ["--resume"], fsize=len(ckpt) // 2)
    assert p.returncode == 1, p.stderr
    err = [ln for ln in p.stderr.strip().splitlines() if ln.startswith("Error")]
    assert len(err) == 1 and "disk is full" in err[0] and "Traceback" not in p.stderr
    assert (out / CHECKPOINT).read_bytes() == ckpt
    assert not [f for f in os.listdir(out) if ".tmp-" in f]
    assert invoke(*args, "--resume").exit_code == 0
    assert _result(out)["step"] == 40


def test_overwrite_deletes_only_tinynets_files(data, tmp_path):
    out = tmp_path / "r"
    tiny_run(data, out, 10)
    (out / "notes.txt").write_text("mine")
    (out / "figs").mkdir()
    (out / "figs" / "a.png").write_bytes(b"png")
    (out / "attempt-1").mkdir()
    (out / "attempt-1" / METRICS).write_text("step\n")
    _, _, res = tiny_run(data, out, 5, overwrite=True)
    assert res.step == 5 and (out / "notes.txt").read_text() == "mine" and (out / "figs" / "a.png").exists()
    assert not (out / "attempt-1").exists()


def test_stray_temporaries_are_removed(data, tmp_path, capsys):
    out = tmp_path / "r"
    tiny_run(data, out, 10)
    (out / ".checkpoint.npz.tmp-99999").write_bytes(b"half a checkpoint")
    tiny_run(data, out, 20, resume=True, progress=True)
    assert not (out / ".checkpoint.npz.tmp-99999").exists()
    assert "temporary file" in capsys.readouterr().err


def test_cut_last_metrics_row_is_ignored(data, tmp_path):
    out = tmp_path / "r"
    tiny_run(data, out, 20)
    with open(out / METRICS, "a") as f:
        f.write("30,0.5,0.1,2.2")                       # a crash in the middle of an append
    assert [m["step"] for m in read_metrics(str(out / METRICS))] == [0, 10, 20]
    _, _, res = tiny_run(data, out, 30, resume=True)
    assert [m["step"] for m in read_metrics(str(out / METRICS))] == [0, 10, 20, 30]


# -- 3. the lock ------------------------------------------------------------------------------------
def test_second_user_of_a_run_folder_is_refused(data, tmp_path):
    out = tmp_path / "r"
    tiny_run(data, out, 10)
    before = snapshot(out)
    holder = RunDir(str(out))
    holder.open(resume=True, overwrite=False)
    try:
        with pytest.raises(RunLockedError, match=f"in use by process {os.getpid()}"):
            tiny_run(data, out, 20, resume=True)
        with pytest.raises(RunLockedError):
            tiny_run(data, out, 20, overwrite=True)
    finally:
        holder.close()
    assert_unchanged(before, out)
    assert tiny_run(data, out, 20, resume=True)[2].step == 20       # free again


def test_stale_lock_is_taken_over(data, tmp_path, capsys):
    out = tmp_path / "r"
    tiny_run(data, out, 10)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket
    (out / LOCK).write_text(json.dumps(dict(pid=dead.pid, host=socket.gethostname(), started="then")))
    _, _, res = tiny_run(data, out, 20, resume=True, progress=True)
    assert res.step == 20 and f"stale lock of process {dead.pid}" in capsys.readouterr().err
    assert (out / LOCK).read_text() == ""                            # released clean


@pytest.mark.slow
def test_two_processes_on_one_folder(tmp_path):
    out = tmp_path / "r"
    p = start(TINY + ["--steps", "100000", "--eval-every", "20", "--out", str(out)])
    try:
        wait_rows(out, 2, p)
        before = rows(out)
        q = cli(TINY + ["--steps", "100000", "--eval-every", "20", "--out", str(out), "--resume"])
        assert q.returncode == 1 and f"in use by process {p.pid}" in q.stderr
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)
    assert p.returncode == 128 + signal.SIGTERM
    assert rows(out) >= before


# -- 4. signals -----------------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signal_stops_at_the_step_boundary(data, tmp_path, sig, terminal_signals):
    before = signal.getsignal(sig)
    net, opt = build_model("tiny-mlp", dtype=np.float64, seed=3), None
    opt = build_optimizer("sgd", net, 0.1)
    step = opt.step

    def signalled(X, Y):
        if opt.k == 12:
            signal.raise_signal(sig)
        return step(X, Y)

    opt.step = signalled
    out = tmp_path / "r"
    cfg = TrainConfig(steps=40, batch_size=BATCH, eval_every=10, seed=5, out=str(out), progress=False)
    res = train(net, opt, data, cfg)
    assert res.stop_reason == "interrupted" and res.step == 13 and res.signal == signal.Signals(sig).name
    assert _result(out)["signal"] == signal.Signals(sig).name
    assert load_checkpoint(str(out / CHECKPOINT))[2]["step"] == 13
    assert load_checkpoint(str(out / LAST_GOOD))[2]["step"] == 10           # not evaluated at 13
    assert signal.getsignal(sig) is before
    net2, _, res2 = tiny_run(data, out, 40, resume=True)
    straight, _, _ = tiny_run(data, tmp_path / "straight", 40)
    assert np.array_equal(net2.get_flat(), straight.get_flat())


def test_ctrl_c_during_the_first_evaluation_leaves_a_resumable_run(data, tmp_path, monkeypatch, terminal_signals):
    import tinynet.train.loop as loop
    real = loop.evaluate
    calls = []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 1:
            signal.raise_signal(signal.SIGINT)
        return real(*a, **k)

    monkeypatch.setattr(loop, "evaluate", interrupted)
    out = tmp_path / "r"
    _, _, res = tiny_run(data, out, 30)
    monkeypatch.undo()
    assert res.stop_reason == "interrupted" and res.step == 0
    with pytest.raises(Exception, match="already holds a run"):
        tiny_run(data, out, 30)
    net, _, res = tiny_run(data, out, 30, resume=True)
    straight, _, _ = tiny_run(data, tmp_path / "straight", 30)
    assert res.step == 30 and np.array_equal(net.get_flat(), straight.get_flat())


def test_a_run_stopped_before_its_first_checkpoint_starts_afresh(data, tmp_path):
    """A folder holding only config.json (a process killed between its first two
    writes) is accepted by resume, which starts the run from scratch."""
    out = tmp_path / "r"
    tiny_run(data, out, 10)
    for f in (CHECKPOINT, LAST_GOOD, METRICS, RESULT):
        os.remove(out / f)
    net, _, res = tiny_run(data, out, 10, resume=True)
    straight, _, _ = tiny_run(data, tmp_path / "straight", 10)
    assert res.step == 10 and np.array_equal(net.get_flat(), straight.get_flat())


def test_second_ctrl_c_inside_a_step_keeps_the_evaluated_checkpoint(data, tmp_path, terminal_signals):
    net = build_model("tiny-mlp", dtype=np.float64, seed=3)
    opt = build_optimizer("sgd", net, 0.1)
    step = opt.step

    def twice(X, Y):
        if opt.k == 14:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
        return step(X, Y)

    opt.step = twice
    out = tmp_path / "r"
    res = train(net, opt, data, TrainConfig(steps=40, batch_size=BATCH, eval_every=10, seed=5, out=str(out),
                                            progress=False))
    assert res.stop_reason == "interrupted" and "during step 15" in res.message
    assert load_checkpoint(str(out / CHECKPOINT))[2]["step"] == 10
    assert _result(out)["stop_reason"] == "interrupted"


def test_sigterm_to_a_child_process(tmp_path):
    """kill -TERM of a real `tinynet train`: exit 143 at a step boundary, the
    final checkpoint and result.json written, and the resumed run equal to one
    never stopped."""
    out = tmp_path / "r"
    args = TINY + ["--steps", "3000", "--eval-every", "25", "--out", str(out)]
    p = start(args)
    wait_rows(out, 2, p)
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=60)
    assert p.returncode == 143, p.stderr.read()
    res = _result(out)
    assert res["stop_reason"] == "interrupted" and res["signal"] == "SIGTERM"
    stopped = res["step"]
    assert load_checkpoint(str(out / CHECKPOINT))[2]["step"] == stopped < 3000
    args[args.index("--steps") + 1] = str(stopped + 30)
    assert invoke(*args, "--resume").exit_code == 0
    straight = tmp_path / "s"
    args[args.index("--out") + 1] = str(straight)
    assert invoke(*args).exit_code == 0
    assert np.array_equal(load_checkpoint(str(out / CHECKPOINT))[0], load_checkpoint(str(straight / CHECKPOINT))[0])


@pytest.mark.slow
def test_kill_9_and_signals_at_random_boundaries(tmp_path):
    """kill -9 at random moments (during writes too) and SIGTERM/SIGHUP at random
    step boundaries, then resume: every time the folder is resumable and the
    finished run equals one never stopped."""
    rng = np.random.default_rng(0)
    out = tmp_path / "r"
    total = 2000
    args = TINY + ["--steps", str(total), "--eval-every", "5", "--out", str(out)]
    first = True
    for k in range(6):
        had = rows(out)
        p = start(args + ([] if first else ["--resume"]))
        first = False
        try:
            wait_rows(out, had + 1, p)
        except AssertionError:
            assert p.returncode == 0                      # the run had finished
            break
        import time
        time.sleep(float(rng.uniform(0.0, 1.5)))
        sig = [signal.SIGKILL, signal.SIGTERM, signal.SIGHUP][k % 3]
        if p.poll() is None:
            p.send_signal(sig)
        p.wait(timeout=60)
        load_checkpoint(str(out / CHECKPOINT))
        read_metrics(str(out / METRICS))
        if sig != signal.SIGKILL and p.returncode != 0:
            if p.returncode == -sig:           # it came after train() had returned: the run was complete
                assert _result(out)["stop_reason"] == "steps" and _result(out)["step"] == total
                break
            assert p.returncode == 128 + sig, p.stderr.read()
    assert invoke(*args, "--resume").exit_code in (0, 1)
    if _result(out)["step"] != total:
        assert invoke(*args, "--resume").exit_code == 0
    straight = tmp_path / "s"
    args[args.index("--out") + 1] = str(straight)
    assert invoke(*args).exit_code == 0
    assert np.array_equal(load_checkpoint(str(out / CHECKPOINT))[0], load_checkpoint(str(straight / CHECKPOINT))[0])


# -- 5. hyperparameters -----------------------------------------------------------------------------
BAD_OPTIONS = [
    ("adam", ["--beta1", "1"], "--beta1"), ("adam", ["--beta1", "-3"], "--beta1"),
    ("adam", ["--beta2", "7"], "--beta2"), ("adam", ["--eps", "-1"], "--eps"),
    ("rmsprop", ["--rho", "2"], "--rho"), ("rmsprop", ["--eps", "0"], "--eps"),
    ("sgd", ["--momentum", "1"], "momentum"), ("sgd", ["--lr", "-1"], "--lr"), ("sgd", ["--lr", "nan"], "--lr"),
    ("sgd", ["--lr", "inf"], "--lr"), ("sgd", ["--schedule", "inverse", "--schedule-gamma", "-1"], "--schedule-gamma"),
    ("sgd", ["--schedule", "halving", "--schedule-period", "0"], "--schedule-period"),
    ("kfac", ["--amortize", "0"], "--amortize"), ("kfac", ["--eps", "0"], "--eps"), ("kfac", ["--rho", "1"], "--rho"),
    ("kfac", ["--stats-every", "0"], "stats_every"), ("acp", ["--acp-alpha", "-1"], "alpha"),
    ("nnn", ["--eps", "-1"], "--eps"), ("hf", ["--cg-iters", "0"], "cg_iters"),
    ("hf", ["--warm-start", "1"], "warm_start"), ("newton", ["--growth", "1"], "--growth"),
    ("ubp", ["--ubp-clip", "-1"], "clip"),
]


@pytest.mark.parametrize("optimizer, options, names", BAD_OPTIONS)
def test_bad_hyperparameter_is_refused_before_any_folder(tmp_path, optimizer, options, names):
    out = tmp_path / "never"
    r = invoke(*TINY, "--optimizer", optimizer, *options, "--steps", "1", "--out", out)
    assert r.exit_code == 2 and names in r.output and "must" in r.output, r.output
    assert "Traceback" not in r.output and not out.exists()


@pytest.mark.parametrize("options", [["--batch-size", "0"], ["--eval-every", "0"], ["--steps", "-5"],
                                     ["--time-budget", "0"], ["--eval-subset", "0"]])
def test_bad_trainer_setting_is_refused_before_any_folder(tmp_path, options):
    out = tmp_path / "never"
    args = list(TINY)
    if "--batch-size" in options:
        i = args.index("--batch-size")
        del args[i:i + 2]
    r = invoke(*args, *options, "--out", out)
    assert r.exit_code == 2 and "must be" in r.output and not out.exists(), r.output


# -- 6. NaN in ----------------------------------------------------------------------------------
def _batch(n=20, nan_in="X"):
    X, y = load_dataset("mnist7-labels", "train")
    X, y = X[:n].astype(np.float64), y[:n]
    if nan_in == "X":
        X = X.copy()
        X[3, 5] = np.nan
    return X, y


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_step_on_a_nan_batch_changes_nothing(name):
    net = build_model("tiny-mlp", dtype=np.float64, seed=3)
    opt = build_optimizer(name, net, 0.01 if name in ("sgd", "ubp") else None)
    X, y = _batch()
    theta = net.get_flat()
    with pytest.raises(ValueError, match="NaN or inf"):
        opt.step(X, y)
    assert np.array_equal(net.get_flat(), theta) and opt.k == 0
    Xc = np.nan_to_num(X)
    opt.step(Xc, y)                                      # a clean batch still works afterwards
    assert opt.k == 1 and np.all(np.isfinite(net.get_flat()))


def test_autoencoder_targets_with_inf_are_refused():
    net = _sigmoid_autoencoder()
    X, _ = _batch(nan_in=None)
    Y = X.copy()
    Y[0, 0] = np.inf
    with pytest.raises(ValueError, match="targets Y contain NaN or inf"):
        build_optimizer("adam", net).step(X, Y)


def test_entry_points_refuse_nan():
    net = build_model("tiny-mlp", dtype=np.float64, seed=3)
    X, y = _batch()
    v = np.ones(net.n_params)
    for fn in (lambda: net.loss(X, y), lambda: net.gradient(X, y), lambda: net.forward(X),
               lambda: tn.curvature.hvp(net, X, y, v), lambda: tn.curvature.gvp(net, X, y, v)):
        with pytest.raises(ValueError, match="NaN or inf"):
            fn()
    Xc = np.nan_to_num(X)
    v[2] = np.nan
    with pytest.raises(ValueError, match="v contains NaN"):
        tn.curvature.hvp(net, Xc, y, v)
    with pytest.raises(ValueError, match="batch is empty"):
        net.loss(Xc[:0], y[:0])


def test_step_that_overflows_writes_nothing():
    """lr 1e308 sends the parameters to inf: the step is undone, k is not
    counted, and NonFiniteError says so; huge but finite parameters are no
    false alarm."""
    net = build_model("tiny-mlp", dtype=np.float64, seed=3)
    X, y = _batch(nan_in=None)
    theta = net.get_flat()
    linear = mlp([49, 5], "tanh", tn.MSELoss(), dtype=np.float64, seed=0)
    theta_l = linear.get_flat()
    opt = SGD(linear, 1e300)
    with pytest.raises(NonFiniteError, match="non-finite"):
        opt.step(X * 1e20, np.zeros((X.shape[0], 5)))    # finite inputs, gradient ~1e40: lr g = inf
    assert np.array_equal(linear.get_flat(), theta_l) and opt.k == 0
    net.set_flat(np.full(net.n_params, 1e200))
    SGD(net, 1e-300).step(X, y)                          # finite, squares overflow: still accepted

    class Poisoning(SGD):
        def step(self, X, Y):
            loss = super().step(X, Y)
            self.net.theta[0] = np.inf
            return loss

    net.set_flat(theta)
    with pytest.raises(NonFiniteError):
        Poisoning(net, 0.1).step(X, y)
    assert np.array_equal(net.get_flat(), theta)


# -- 7. one-line errors -------------------------------------------------------------------------
def test_out_that_cannot_be_a_folder(tmp_path):
    f = tmp_path / "file"
    f.write_text("mine")
    r = invoke(*TINY, "--steps", "1", "--out", f / "sub")
    assert r.exit_code == 1 and "cannot create run directory" in one_line_error(r)
    r = invoke(*TINY, "--steps", "1", "--out", "/proc/tinynet-run")
    assert r.exit_code == 1 and "run directory" in one_line_error(r)
    r = invoke(*TINY, "--steps", "1", "--out", f)
    assert r.exit_code == 2 and f.read_text() == "mine"


def test_cuda_without_a_gpu_is_a_usage_error(tmp_path):
    pytest.importorskip("numba")
    from numba import cuda
    if cuda.is_available():
        pytest.skip("a GPU is present")
    r = invoke(*TINY, "--steps", "1", "--device", "cuda", "--out", tmp_path / "x")
    assert r.exit_code == 2 and "GPU" in r.output and not (tmp_path / "x").exists()


@pytest.mark.parametrize("damage", ["truncated", "not-npz", "no-skeleton", "wrong-size", "config"])
def test_damaged_run_files_give_one_line(data, tmp_path, damage):
    out = tmp_path / "r"
    args = TINY + ["--steps", "10", "--eval-every", "5", "--out", out]
    assert invoke(*args).exit_code == 0
    ck = out / CHECKPOINT
    if damage == "truncated":
        ck.write_bytes(ck.read_bytes()[:1000])
    elif damage == "not-npz":
        ck.write_text("hello")
    elif damage == "no-skeleton":
        np.savez(str(ck), theta=np.zeros(524, np.float32))
    elif damage == "wrong-size":
        z = dict(np.load(ck))
        z["theta"] = z["theta"][:10]
        with open(ck, "wb") as fh:
            np.savez(fh, **z)
    else:
        (out / CONFIG).write_text('{"trainer": {"batch')
    before = snapshot(out)
    args[args.index("--steps") + 1] = "20"
    r = invoke(*args, "--resume")
    line = one_line_error(r)
    assert r.exit_code == 1 and ("damaged" in line or "incomplete" in line or "another model" in line), line
    assert_unchanged(before, out)


@pytest.mark.parametrize("content", ["garbage\x00\x01", "a,b\n1,2\n", "step,seconds\n1,2,3\n", ""])
def test_plot_of_a_malformed_metrics_file(tmp_path, content):
    run = tmp_path / "run"
    run.mkdir()
    (run / METRICS).write_text(content)
    r = invoke("plot", run, "--out", tmp_path / "f.png")
    assert r.exit_code == 1 and "metrics" in one_line_error(r) and not (tmp_path / "f.png").exists()
