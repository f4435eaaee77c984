"""benchmarks/long_run.py's machinery on a tiny random stand-in for MNIST:
the CPU-time budget, the full-set marks, divergence, and the report."""
import importlib.util
import json
import os

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def long_run(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYNET_LONG_RUN_DIR", str(tmp_path / "runs"))
    spec = importlib.util.spec_from_file_location("long_run", os.path.join(HERE, "..", "benchmarks", "long_run.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class TinyData:
    def __init__(self):
        rng = np.random.default_rng(0)
        self.Xtr = rng.random((400, 784), dtype=np.float32)
        self.Xte = rng.random((200, 784), dtype=np.float32)
        self.sub_tr, self.sub_te = self.Xtr[:100], self.Xte[:100]


def test_budget_marks_and_curve(long_run):
    hist, full, status = long_run.train("SGD momentum", {"lr": 0.01}, TinyData(), seconds=1.2, full_marks=(0.01,))
    assert status == "ok"
    h = np.array(hist)
    assert h[-1, 1] >= 1.2 and np.all(np.diff(h[:, 0]) > 0)      # CPU budget spent, updates increase
    assert full[0][0] == 0.01 and full[0][2] >= 0.6                # the 0.01-minute mark, taken on time
    assert full[-1][1] == h[-1, 0]                                 # the final full-set row is at the end
    # training moved the net: the final full-set loss is below the initial subset loss
    assert np.isfinite(full[-1][3]) and full[-1][3] < h[0, 3]


def test_divergence_stops_the_run(long_run, monkeypatch):
    # the autoencoder's sigmoid bounds its loss, so a diverged run shows as non-finite: stand in for that
    calls = []
    real = long_run.loss_on

    def loss_on(net, X):
        calls.append(1)
        return float("nan") if len(calls) > 6 else real(net, X)

    monkeypatch.setattr(long_run, "loss_on", loss_on)
    hist, full, status = long_run.train("SGD", {"lr": 0.01}, TinyData(), seconds=30.0)
    assert status == f"diverged at update {hist[-1][0]} (subset training loss nan)"
    assert len(hist) == 4 and hist[-1][1] < 30.0 and full == []


def test_report_reads_runs(long_run, tmp_path):
    os.makedirs(long_run.RUNS)
    for m, loss in (("SGD momentum", 50.0), ("KFAC-GN", 20.0)):
        rec = {"method": m, "minutes": 2 if m == "KFAC-GN" else 8, "params": {"lr": 0.1}, "status": "ok",
               "finished": True, "hist": [[0, 0, 0, 190, 190], [10, 1, 1, loss, loss]],
               "full": [[2, 5, 120, loss + 5, loss + 6], [8, 10, 480, loss, loss + 1]], "tune": [],
               "machine": {"cpu": "x", "blas": "y"}}
        with open(os.path.join(long_run.RUNS, long_run.slug(m) + ".json"), "w") as f:
            json.dump(rec, f)
    long_run.report()
    md = open(tmp_path / "runs" / ".." / "long_run.md").read()
    assert "SGD with momentum after 8 minutes: training loss 50.000" in md
    assert "| KFAC-GN | 25.000 | yes |" in md
    # the claims table is computed: KFAC-GN at 2 min (25) below SGD momentum at 8 (50), and at
    # 2 min against SGD momentum's 55
    assert "| best: KFAC-GN 25.000; SGD momentum 50.000 at 8 min | reached |" in md
    assert "KFAC-GN 25.000 against SGD momentum 55.000 at 2 min | reproduced |" in md


def test_acp_alpha_trace(long_run):
    """Part 3: the heuristic alphas of each layer are traced at every evaluation, bottom first."""
    trace = []
    hist, _, status = long_run.train("ACP heuristic alpha", {"lr": 0.03, "eps": 0.1}, TinyData(), seconds=0.5,
                                     trace=trace)
    assert status == "ok" and len(trace) >= 1
    assert [row[0] for row in trace] == [row[0] for row in hist if row[0] > 0]   # none before the first step
    n_linear = 8                                       # the autoencoder's eight Linear layers
    assert all(len(row) == 1 + n_linear and all(a >= 1e-4 for a in row[1:]) for row in trace)  # alpha_floor


def test_report_centering_claims_and_alpha_trace(long_run, tmp_path):
    """Parts 3-4: figure 6.1's claims computed from the runs, and the alpha trace table and figure."""
    os.makedirs(long_run.RUNS)
    # full-set training loss at 1 and 15 min
    losses = {"SGD": (40.0, 10.0), "mean-only BN + SGD": (30.0, 8.0), "centered": (45.0, 9.5),
              "ACP fixed alpha": (20.0, 3.0), "ACP heuristic alpha": (25.0, 3.2)}
    for m, (l1, l15) in losses.items():
        rec = {"method": m, "minutes": 15, "params": {"lr": 0.1, "eps": 0.1}, "status": "ok", "finished": True,
               "hist": [[0, 0, 0, 190, 190], [10, 1, 1, l15, l15]],
               "full": [[1, 5, 60, l1, l1], [15, 10, 900, l15, l15 + 1]], "tune": [],
               "machine": {"cpu": "x", "blas": "y"}}
        if m == "ACP heuristic alpha":
            rec["alpha_trace"] = [[k] + [1e-4 * (1 + k)] * 8 for k in (1, 100, 1000, 5000)]
            hand = {**rec, "method": HAND, "space": None, "params": {}, "fixed": long_run.METHODS[HAND][1]}
            with open(os.path.join(long_run.RUNS, long_run.slug(HAND) + ".json"), "w") as f:
                json.dump(hand, f)
        with open(os.path.join(long_run.RUNS, long_run.slug(m) + ".json"), "w") as f:
            json.dump(rec, f)
    long_run.report()
    md = open(tmp_path / "runs" / ".." / "long_run.md").read()
    assert "| mean-only BN + SGD 30.000 against SGD 40.000 at 1 min | reproduced |" in md
    assert "| centered 9.500 against SGD 10.000 at 15 min | reproduced |" in md          # within 10%
    assert "mean-only BN + SGD 8.000, centered 9.500, SGD 10.000 | reproduced |" in md
    assert "| ACP fixed alpha 3.000, best centered 8.000 at 15 min | reproduced |" in md
    # the heuristic at 3.2 is within 10% of the best preconditioner (ACP fixed, 3.0)
    assert "ACP heuristic alpha 3.200 at 15 min, rank 2 of 2 preconditioners (best ACP fixed alpha 3.000) | reproduced" in md
    # trace rows at the first, ~100th, ~1000th and last evaluation; damping = eps / alpha
    assert "| ACP heuristic alpha | 100 | 0.0101 | 0.0101 | 0.0101 | 0.0101 | 9.9 | 9.9 |" in md
    assert "| ACP heuristic alpha | 5000 | 0.5 | 0.5 | 0.5 | 0.5 | 0.2 | 0.2 |" in md
    assert os.path.exists(tmp_path / "runs" / ".." / "long_run_alpha.png")
    # a run without a search shows its hand-picked hyperparameters, and its trace's damping uses them
    assert f"| {HAND} | hand-picked: lr 0.03, eps 0.1 | ok |" in md
    assert f"- {HAND}: no search (hand-picked: lr 0.03, eps 0.1)" in md
    assert f"| {HAND} | 100 | 0.0101 | 0.0101 | 0.0101 | 0.0101 | 9.9 | 9.9 |" in md


HAND = "ACP heuristic alpha (hand-picked lr 0.03, eps 0.1)"
