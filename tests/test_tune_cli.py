"""`tinynet tune` through click's CliRunner (jobs 1: in-process) on tiny-mlp:
the folder it writes, the best trial's command reproducing its loss exactly,
diverged trials, resume, usage errors, and `tinynet plot` of search folders."""
import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from cli.main import main

SPACE = "lr=log:1e-3:3,init_scale=log:0.1:10"
BASE = ["tune", "--model", "tiny-mlp", "--optimizer", "sgd", "--steps", "15", "--eval-subset", "300",
        "--jobs", "1", "--seed", "3"]


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def search_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tune") / "s"
    r = invoke(*BASE, "--space", SPACE, "--method", "brs", "--trials", "6", "--out", str(d), "--",
               "--batch-size", "50")
    return d, r


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_tune_writes_the_folder_and_the_reproducing_command(search_dir, tmp_path):
    d, r = search_dir
    assert r.exit_code == 0, r.output
    for name in ("tune.json", "trials.csv", "trials.csv.json", "best.json", "scatter.png"):
        assert (d / name).exists(), name
    rows = _rows(d / "trials.csv")
    assert [int(x["index"]) for x in rows] == list(range(6))
    assert all(x["status"] == "ok" and float(x["cost"]) == float(x["train_loss"]) for x in rows)
    best = json.loads((d / "best.json").read_text())
    assert best["best_cost"] == min(float(x["cost"]) for x in rows)
    assert f"[6/6]" in r.output and "ETA" in r.output and "reproduce: tinynet train" in r.output
    # the printed command, run as it is, gives the trial's loss exactly
    argv = shlex.split(best["command"])[1:] + ["--out", str(tmp_path / "rerun"), "-q"]
    assert "--batch-size" in argv and "--init-scale" in argv
    rr = invoke(*argv)
    assert rr.exit_code == 0, rr.output
    res = json.loads((tmp_path / "rerun" / "result.json").read_text())
    assert res["train_loss"] == best["best_cost"]


def test_tune_resume_extends_and_refuses_changed_settings(search_dir):
    d, _ = search_dir
    r = invoke(*BASE, "--space", SPACE, "--method", "brs", "--trials", "8", "--out", str(d), "--resume", "--",
               "--batch-size", "50")
    assert r.exit_code == 0, r.output
    assert "resuming after 6 trials" in r.output and len(_rows(d / "trials.csv")) == 8
    r = invoke(*BASE, "--space", SPACE, "--method", "random", "--trials", "8", "--out", str(d), "--resume",
               "--", "--batch-size", "50")
    assert r.exit_code == 2 and "method 'brs' (now 'random')" in r.output
    r = invoke(*BASE, "--space", SPACE, "--trials", "8", "--out", str(d), "--", "--batch-size", "50")
    assert r.exit_code == 2 and "already holds a search" in r.output


def test_plot_draws_search_folders(search_dir, tmp_path):
    d, _ = search_dir
    out = tmp_path / "s.png"
    r = invoke("plot", str(d), str(d), "--out", str(out))
    assert r.exit_code == 0, r.output
    assert out.stat().st_size > 10_000 and "2 search(es)" in r.output


def test_diverged_trials_are_recorded(tmp_path):
    r = invoke(*BASE, "--space", "lr=log:1e5:1e7", "--method", "random", "--trials", "3",
               "--out", str(tmp_path / "d"), "-q")
    assert r.exit_code == 0, r.output
    rows = _rows(tmp_path / "d" / "trials.csv")
    assert [x["status"] for x in rows] == ["diverged"] * 3 and all(x["cost"] == "inf" for x in rows)
    assert "3 diverged" in r.output and "no trial finished with a finite cost" in r.output


@pytest.mark.parametrize("args,msg", [
    (["--space", "lr=cube:1:2"], "unknown kind 'cube'"),
    (["--space", "rho=lin:0:0.9"], "rho: not a hyperparameter of sgd"),
    (["--space", "lr=log:1e-3:1", "--", "--beta1", "0.9"], "does not take --beta1"),
    (["--space", "lr=log:1e-3:1", "--", "--lr", "0.1"], "both searched"),
    (["--space", "lr=log:1e-3:1", "--", "--steps", "5"], "--steps: set by tinynet tune itself"),
    (["--space", "lr=log:1e-3:1", "--", "--no-such"], "No such option"),
    (["--space", "init_scale=log:0.1:1", "--method", "grid", "--", "--init-scale", "2"], "both searched"),
], ids=["bad-space", "unknown-hyperparameter", "option-of-another-method", "searched-and-fixed",
        "tune-owned-option", "unknown-train-option", "init-scale-twice"])
def test_usage_errors(tmp_path, args, msg):
    r = invoke(*BASE, "--out", str(tmp_path / "u"), *args)
    assert r.exit_code == 2, r.output
    assert msg in r.output
    assert not (tmp_path / "u").exists()         # nothing written for a refused search


@pytest.mark.slow    # two spawned workers, each loading MNIST: ~10 s
def test_worker_processes_give_the_in_process_results(tmp_path):
    """--jobs 2 (training runs in spawned workers, one BLAS thread each) records
    the same trials and losses as --jobs 1: random search's points do not
    depend on the history, and a CPU training run is deterministic."""
    rows = {}
    for jobs in ("1", "2"):
        args = list(BASE)
        args[args.index("--jobs") + 1] = jobs
        r = invoke(*args, "--space", SPACE, "--method", "random", "--trials", "4", "--out", str(tmp_path / jobs),
                   "-q", "--", "--batch-size", "50")
        assert r.exit_code == 0, r.output
        rows[jobs] = [{k: v for k, v in x.items() if k != "seconds"} for x in _rows(tmp_path / jobs / "trials.csv")]
    assert rows["1"] == rows["2"] and len(rows["1"]) == 4


# -- stopping a parallel search (found timing the README tour: workers outlived a SIGTERM) --------
def _children(pid):
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        kids.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return kids


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_or_killed_parallel_search_leaves_no_worker(tmp_path, sig):
    from faults import ROOT, _env, _terminal_dispositions
    d = tmp_path / "s"
    args = [sys.executable, "-m", "cli.main", *[a if a != "1" else "2" for a in BASE], "--space", SPACE,
            "--trials", "200", "--out", str(d), "--", "--batch-size", "50"]
    p = subprocess.Popen(args, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True, preexec_fn=_terminal_dispositions)
    try:
        deadline = time.time() + 120
        while not ((d / "trials.csv").exists() and len(_rows(d / "trials.csv")) >= 1):
            assert p.poll() is None and time.time() < deadline, p.communicate()[1][-2000:]
            time.sleep(0.2)
        workers = [k for k in _children(p.pid) if _alive(k)]
        assert len(workers) >= 2
        os.kill(p.pid, sig)                       # the driver alone, as `kill PID` does
        p.communicate(timeout=60)
        assert p.returncode == -sig                   # the driver's default action: it ends at once
        t0 = time.time()
        while any(_alive(w) for w in workers) and time.time() - t0 < 10:
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers), "workers outlived their driver"
    finally:
        if p.poll() is None:
            p.kill()
