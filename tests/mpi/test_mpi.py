"""Data-parallel training (issue 19): 2 ranks with global batch B make the
updates of one process with batch B (float64, 1e-10), over steps that include
statistics and inversion steps; the bytes sent match the analytic count;
resume across ranks; a failing or killed rank ends the run within seconds."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tinynet.distributed.comm import LOCAL
import worker
from mpirun import HERE, mpi_available, mpi_env, mpirun_cmd, run_worker  # noqa: F401 - the fixture

pytestmark = [pytest.mark.mpi, pytest.mark.usefixtures("mpi_available")]

# (optimizer, options, problem): T=3 / stats_every=2 put inversions at updates
# 1, 4, 7 and statistics at 1, 3, 5, 7 of the 8 steps
CASES = [
    ("sgd", dict(lr=0.1, momentum=0.9), "autoencoder"),
    ("adam", dict(lr=0.01), "autoencoder"),
    ("kfac", dict(lr=0.1, T=3, stats_every=2, kfac_curvature="gn"), "autoencoder"),
    ("kfac", dict(lr=0.1, T=3, stats_every=2, kfac_curvature="fisher"), "autoencoder"),
    ("kfac", dict(lr=0.1, T=3, stats_every=2, kfac_curvature="fisher", kl_clip="none"), "classifier"),
    # the batch route: each rank's share of the preconditioned gradient, all-reduced
    ("kfac", dict(lr=0.1, T=3, stats_every=2, route="batch"), "autoencoder"),
    ("kfac", dict(lr=0.1, T=3, stats_every=2, route="batch", kfac_curvature="fisher", kl_clip="none"),
     "classifier"),
    ("acp", dict(lr=0.1, T=3), "autoencoder"),
    ("acp", dict(lr=0.05, T=3, alpha="heuristic"), "classifier"),
    ("acp", dict(lr=0.1, T=3, route="batch"), "autoencoder"),
    # synchronized batch norm: batch statistics over every rank's rows
    ("sgd", dict(lr=0.1), "batchnorm"),
    ("kfac", dict(lr=0.1, T=3, stats_every=2), "batchnorm"),
    ("acp", dict(lr=0.1, T=3), "mean-only"),
    ("centered", dict(lr=0.1), "autoencoder"),
    ("nnn", dict(lr=0.05, T=3, eps=0.1), "autoencoder"),
    ("nnn", dict(lr=0.05, T=3, eps=0.1), "classifier"),
    # convolutions: patch rows (KFC factors, A summed over positions)
    ("sgd", dict(lr=0.1), "cnn"),
    ("kfac", dict(lr=0.1, T=3, stats_every=2, kfac_curvature="fisher"), "cnn"),
    ("acp", dict(lr=0.1, T=3), "cnn"),
    ("ubp", dict(lr=0.1), "cnn"),
    ("sgd", dict(lr=0.1, momentum=0.5), "cnn-bn"),
    ("kfac", dict(lr=0.1, T=3, stats_every=2), "cnn-bn"),
    ("ubp", dict(lr=0.1), "autoencoder"),
    ("ubp", dict(lr=0.1, ubp_curvature="exact", ubp_clip=0.05), "autoencoder"),
    ("ubp", dict(lr=0.1, ubp_mode="explicit"), "classifier"),
]


def one_process(spec, buffers=False):
    net, res = worker.run(spec, LOCAL)
    return (np.array(net.get_flat()), res) + ((net.buffers(),) if buffers else ())


@pytest.mark.parametrize("name,options,problem", CASES, ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(CASES)])
def test_two_ranks_equal_one_process(tmp_path, name, options, problem):
    spec = dict(optimizer=name, options=options, problem=problem, steps=8, batch_size=24)
    theta1, res1, buffers1 = one_process(spec, buffers=True)
    _, info, result = run_worker(tmp_path, spec)
    theta2 = np.load(result + ".npy")
    assert info["ranks"] == 2 and info["step"] == 8 == res1.step
    start, _ = worker.problem(problem)
    assert np.abs(theta1 - np.array(start.get_flat())).max() > 1e-3       # the runs did move
    np.testing.assert_allclose(theta2, theta1, rtol=0, atol=1e-10)
    assert info["train_loss"] == pytest.approx(res1.train_loss, rel=1e-10)   # evaluation: running statistics
    assert set(info["buffers"]) == set(buffers1)
    for k, v in buffers1.items():                                # BatchNorm(2d)'s running statistics
        np.testing.assert_allclose(info["buffers"][k], v, rtol=0, atol=1e-10)


def _kron_layers(net):
    return [(s.fan_in, s.fan_out) for s in net.layers if hasattr(s, "kron_rows")]


def test_bytes_match_the_analytic_count(tmp_path):
    """Gradient: |theta| + 1 (the loss) float64 per step; factors: sum over layers
    ((i+1)(i+2) + o(o+1)) / 2 float64 per statistics step; inverses: rank 0
    broadcasts the upper triangles of the layers it owns (every other layer)."""
    spec = dict(optimizer="kfac", options=dict(lr=0.1, T=3, stats_every=2), steps=8, batch_size=24)
    _, info, _ = run_worker(tmp_path, spec)
    net, _ = worker.problem()
    layers = _kron_layers(net)
    tri = lambda d: d * (d + 1) // 2
    assert info["total"]["gradient"] == 8 * (net.n_params + 1) * 8
    assert info["steps_with"]["factors"] == 4
    assert info["total"]["factors"] == 4 * 8 * sum(tri(i + 1) + tri(o) for i, o in layers)
    own = [l for j, l in enumerate(layers) if j % 2 == 0]
    assert info["steps_with"]["inverses"] == 3
    assert info["total"]["inverses"] == 3 * 8 * sum(tri(i + 1) + tri(o) for i, o in own)


def test_resume_across_ranks(tmp_path):
    """4 steps on 2 ranks, resumed for 4 more on 2 ranks, and resumed again in
    one process for 4 more: the same parameters as 12 steps in one process."""
    base = dict(optimizer="kfac", options=dict(lr=0.1, T=3, stats_every=2, kfac_curvature="fisher"),
                batch_size=24, eval_every=2)
    theta_ref, _ = one_process(dict(base, steps=12))
    out = str(tmp_path / "run")
    run_worker(tmp_path, dict(base, steps=4, out=out))
    _, info, result = run_worker(tmp_path, dict(base, steps=8, out=out, resume=True))
    assert info["step"] == 8
    # resuming a run that has reached its steps: every rank sees rank 0's rows and stops at once
    p, info, _ = run_worker(tmp_path, dict(base, steps=8, out=out, resume=True), timeout=60)
    assert info["step"] == 8 and info["stop_reason"] == "steps"
    conf = json.load(open(os.path.join(out, "config.json")))
    assert conf["distributed"] == {"kind": "mpi", "ranks": 2} and len(conf["resumed"]) == 2
    net, res = worker.run(dict(base, steps=12, out=out, resume=True), LOCAL)
    assert res.step == 12
    np.testing.assert_allclose(np.array(net.get_flat()), theta_ref, rtol=0, atol=1e-10)
    steps = [int(l.split(",")[0]) for l in open(os.path.join(out, "metrics.csv")).read().splitlines()[1:]]
    assert steps == list(range(0, 13, 2))           # rank 0 alone wrote the rows, none twice


def test_a_failing_rank_ends_every_rank(tmp_path):
    spec = dict(optimizer="sgd", steps=10_000, fail_rank=1, fail_step=5, out=str(tmp_path / "run"))
    t0 = time.time()
    p, _, _ = run_worker(tmp_path, spec, check=False, timeout=120)
    assert p.returncode != 0
    assert time.time() - t0 < 60
    assert "rank 1 of 2 failed (RuntimeError: injected failure on rank 1 at update 6)" in p.stderr
    assert os.path.exists(tmp_path / "run" / "checkpoint.npz")          # rank 0's last checkpoint is kept


def test_a_killed_rank_ends_every_rank(tmp_path):
    pid = str(tmp_path / "pid")
    spec = dict(optimizer="sgd", steps=100_000, sleep=0.02, pidfile=pid, out=str(tmp_path / "run"),
                result=str(tmp_path / "never"))
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    p = subprocess.Popen(mpirun_cmd(2, sys.executable, os.path.join(HERE, "worker.py"), str(path)),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=mpi_env())
    try:
        deadline = time.time() + 120
        while not (os.path.exists(pid + ".1") and os.path.exists(tmp_path / "run" / "metrics.csv")):
            assert p.poll() is None and time.time() < deadline, "the run did not start"
            time.sleep(0.2)
        time.sleep(1.0)                              # mid-run: ranks in their steps
        os.kill(int(open(pid + ".1").read()), signal.SIGKILL)
        t0 = time.time()
        out, err = p.communicate(timeout=60)
        assert time.time() - t0 < 30
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode != 0
    assert "signal 9" in (out + err) or "Killed" in (out + err), (out + err)[-2000:]
    assert not os.path.exists(tmp_path / "never.json")


def test_cli_two_ranks_verbose_and_resume(tmp_path):
    """`mpirun -n 2 tinynet train --distributed mpi --verbose` on the packaged
    MNIST, then --resume: one set of files, written by rank 0; the byte table."""
    out = str(tmp_path / "run")
    cmd = [sys.executable, "-m", "cli.main", "train", "--distributed", "mpi", "--optimizer", "kfac",
           "--steps", "4", "--eval-every", "2", "--eval-subset", "200", "--batch-size", "100",
           "--stats-every", "2", "--amortize", "2", "--out", out, "--verbose", "--quiet"]
    p = subprocess.run(mpirun_cmd(2, *cmd), capture_output=True, text=True, env=mpi_env(), timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "data-parallel over 2 MPI ranks: 50 rows of each batch of 100 per rank" in p.stderr
    assert p.stderr.count("reached 4 steps") <= 1 and "factors" in p.stderr and "inverses" in p.stderr
    assert p.stdout.count("steps: step 4") == 1                     # rank 0 alone reports
    p = subprocess.run(mpirun_cmd(2, *[c if c != "4" else "6" for c in cmd], "--resume"),
                       capture_output=True, text=True, env=mpi_env(), timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.load(open(os.path.join(out, "result.json")))
    assert res["step"] == 6
    header = open(os.path.join(out, "metrics.csv")).readline()
    assert "comm_bytes" in header


def test_sigterm_to_mpirun_stops_every_rank_at_one_step(tmp_path):
    """SLURM's stop: mpirun forwards SIGTERM, the ranks agree on the step, rank 0
    writes the final checkpoint and result.json."""
    out = tmp_path / "run"
    spec = dict(optimizer="sgd", steps=100_000, sleep=0.01, out=str(out), eval_every=50,
                result=str(tmp_path / "res"))
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    p = subprocess.Popen(mpirun_cmd(2, sys.executable, os.path.join(HERE, "worker.py"), str(path)),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=mpi_env())
    deadline = time.time() + 120
    while not (out / "metrics.csv").exists() or len((out / "metrics.csv").read_text().splitlines()) < 3:
        assert p.poll() is None and time.time() < deadline, p.communicate()[1][-2000:]
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=60)
    res = json.loads((out / "result.json").read_text())
    assert res["stop_reason"] == "interrupted" and res["signal"] == "SIGTERM"
    info = json.loads((tmp_path / "res.json").read_text())
    assert info["step"] == res["step"] > 0
