"""Fault injection for the trainer's tests (tests/test_train_faults.py).

- `cli(args, fsize=None)`: `tinynet train ...` in a child process, optionally
  with RLIMIT_FSIZE = fsize bytes (SIGXFSZ ignored, so a write past the limit
  fails with EFBIG as on a full disk, instead of killing the process).
- `start(args)` / `wait_rows(run, k)`: a background run, and a wait until its
  metrics.csv holds k rows (the run is past its k-th evaluation), to send it a
  signal or kill -9 at a step boundary of the test's choosing.
- `snapshot(folder)` / `assert_unchanged(before, folder)`: the bytes of every
  file in a folder, to show that a refused command touched nothing.
- `tiny_run(...)`: the trainer in-process on the 7x7 MNIST classifier.
"""
import os
import resource
import signal
import subprocess
import sys
import time

import numpy as np

from tinynet.data import load_dataset
from tinynet.models import build_model
from tinynet.optim import build_optimizer
from tinynet.train import METRICS, TrainConfig, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["train", "--model", "tiny-mlp", "--batch-size", "50", "--eval-subset", "300", "-q"]
N_TRAIN, BATCH = 1000, 50


def _env():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    return env


def _limits(fsize):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    return apply


def cli(args, fsize=None, timeout=300):
    """Run `tinynet ARGS` in a child process; returns CompletedProcess (text)."""
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=_env(), text=True,
                          capture_output=True, timeout=timeout,
                          preexec_fn=_limits(fsize) if fsize is not None else None)


def _terminal_dispositions():
    # as started from a terminal, even when the tests run under nohup or `&` (SIGHUP / SIGINT ignored)
    for s in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(s, signal.SIG_DFL)


def start(args):
    """`tinynet ARGS` in the background (its own session, so signals reach it alone)."""
    return subprocess.Popen([sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=_terminal_dispositions)


def rows(run):
    try:
        with open(os.path.join(run, METRICS)) as f:
            return max(0, sum(1 for line in f if line.endswith("\n")) - 1)
    except FileNotFoundError:
        return 0


def wait_rows(run, k, proc=None, timeout=120):
    """Wait until run/metrics.csv holds at least k complete rows."""
    t0 = time.time()
    while rows(run) < k:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended early (exit {proc.returncode}): {proc.stderr.read()}")
        if time.time() - t0 > timeout:
            raise AssertionError(f"{run}: fewer than {k} metrics rows after {timeout} s")
        time.sleep(0.02)


def snapshot(folder):
    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            p = os.path.join(dirpath, name)
            with open(p, "rb") as f:
                out[os.path.relpath(p, folder)] = f.read()
    return out


def assert_unchanged(before, folder, ignore=(".lock",)):
    after = snapshot(folder)
    keys = {k for k in set(before) | set(after) if os.path.basename(k) not in ignore}
    changed = sorted(k for k in keys if before.get(k) != after.get(k))
    assert not changed, f"files changed: {changed}"


def tiny_data():
    X, y = load_dataset("mnist7-labels", "train")
    Xt, yt = load_dataset("mnist7-labels", "test")
    return {"train": (X[:N_TRAIN], y[:N_TRAIN]), "test": (Xt[:300], yt[:300])}


def tiny_run(data, out, steps, optimizer="sgd", lr=0.1, options=None, net_seed=3, **cfg):
    net = build_model("tiny-mlp", dtype=np.float64, seed=net_seed)
    opt = build_optimizer(optimizer, net, lr, **(options or {}))
    cfg = TrainConfig(**{**dict(steps=steps, batch_size=BATCH, eval_every=10, seed=5,
                                out=None if out is None else str(out), progress=False), **cfg})
    return net, opt, train(net, opt, data, cfg)
