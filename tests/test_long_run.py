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
