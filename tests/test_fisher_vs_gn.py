"""benchmarks/fisher_vs_gn.py's machinery on a tiny random stand-in for
CIFAR-10: the CPU-time budget and curve, the paired comparison over seeds
and its verdict, and the report."""
import importlib.util
import json
import os

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def fvg(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYNET_FISHER_GN_DIR", str(tmp_path / "runs"))
    spec = importlib.util.spec_from_file_location("fisher_vs_gn",
                                                  os.path.join(HERE, "..", "benchmarks", "fisher_vs_gn.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class TinyData:
    batch = 20

    def __init__(self):
        rng = np.random.default_rng(0)
        self.Xtr = rng.random((120, 3072), dtype=np.float32)
        self.Ytr = rng.integers(0, 10, 120)
        self.Xte = rng.random((60, 3072), dtype=np.float32)
        self.Yte = rng.integers(0, 10, 60)
        self.sub_tr, self.sub_te = np.arange(50), np.arange(40)


@pytest.mark.parametrize("method", ["KFAC-GN", "KFAC-Fisher", "KFAC-empirical"])
def test_budget_curve_and_full_row(fvg, method):
    hist, full, status = fvg.train("cifar-mlp", method, {"eps": 0.01, "kl_clip": 0.01}, TinyData(), 1.0, seed=1)
    h = np.array(hist)
    assert status == "ok" and h[-1, 1] >= 1.0 and np.all(np.diff(h[:, 0]) > 0)
    assert full[0] == h[-1, 0] and 0 <= full[2] <= 1 and 0 <= full[4] <= 1
    assert full[1] < h[0, 2]                        # the full training set's loss fell from the initial one


def test_paired_difference_and_verdict(fvg):
    gn = {"1": 1.0, "2": 1.2, "3": 0.9, "4": 1.1, "5": 1.0}
    fi = {"1": 0.8, "2": 1.0, "3": 0.8, "4": 0.85, "5": 0.9, "6": 0.1}       # seed 6 has no GN pair
    d = np.array([fi[s] - gn[s] for s in "12345"])
    mean, se, n, wins = fvg.paired(gn, fi)
    assert (n, wins) == (5, 5)
    assert mean == pytest.approx(d.mean()) and se == pytest.approx(d.std(ddof=1) / np.sqrt(5))
    assert fvg.verdict((mean, se, n, wins)) == "Fisher ahead (5/5 seeds)"
    mixed = {"1": 1.1, "2": 1.1, "3": 0.8, "4": 1.2, "5": 0.95}
    assert fvg.verdict(fvg.paired(gn, mixed)).startswith("no difference beyond 2 SE")
    assert fvg.verdict(fvg.paired(fi, gn)) == "GN ahead (5/5 seeds)"
    assert fvg.verdict(fvg.paired({"1": 1.0}, {"1": 0.5})) == "too few seeds"


def test_report_reads_runs(fvg, tmp_path):
    os.makedirs(fvg.RUNS)
    for method, base in (("KFAC-GN", 1.0), ("KFAC-Fisher", 0.7)):
        runs = {str(s): {"hist": [[0, 0, 2.3, 0.9, 2.3, 0.9], [5, 1, base + 0.01 * s, 0.3, 1.5, 0.5]],
                         "full": [5, base + 0.01 * s, 0.3, 1.5 + 0.01 * s, 0.5], "status": "ok"} for s in range(1, 4)}
        rec = {"model": "cifar-mlp", "method": method, "params": {"eps": 0.01, "kl_clip": 0.01}, "seconds": 1,
               "tune_trials": 2, "tune_seconds": 1, "tune": [], "runs": runs, "machine": {"cpu": "x", "blas": "y"}}
        with open(os.path.join(fvg.RUNS, fvg.slug("cifar-mlp", method) + ".json"), "w") as f:
            json.dump(rec, f)
    fvg.report()
    md = open(tmp_path / "runs" / ".." / "fisher_vs_gn.md").read()
    assert "| cifar-mlp | KFAC-Fisher | eps 0.01, kl_clip 0.01 | 5 | 0.720 ± 0.010 |" in md
    assert "| cifar-mlp | KFAC-GN | train loss | -0.300 ± 0.000 | Fisher ahead (3/3 seeds) |" in md
    assert "| cifar-mlp | KFAC-GN | test loss | +0.000 ± 0.000 |" in md
    # the thesis's pair (empirical, Fisher) is left out while the empirical run is not on record
    assert "| cifar-mlp | KFAC-empirical |" not in md
    # along the way: the loss at the budget's end, from the curves (0.7 + 0.01 s, mean over seeds 1-3)
    assert "| cifar-mlp | KFAC-GN | training loss at 1 s | 1.02 | 0.72 | -0.3 ± 0 | Fisher ahead (3/3 seeds) |" in md
