"""benchmarks/ubp_long.py's machinery on random stand-in images: one run of
each method with the seed's minibatch order, the pairing by seed, the
comparison helpers, and the report (with its hand-written reading kept)."""
import importlib.util
import json
import os

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def ubl(tmp_path, monkeypatch):
    monkeypatch.setenv("UBP_LONG_OUT", str(tmp_path / "ubp_long"))
    spec = importlib.util.spec_from_file_location("ubp_long", os.path.join(HERE, "..", "benchmarks", "ubp_long.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_runs_pair_by_seed_and_report(ubl, tmp_path):
    rng = np.random.default_rng(0)
    X = rng.random((600, 784), dtype=np.float32)
    os.makedirs(ubl.OUT)
    for name in ("equal-sgd-s0", "equal-ubp-s0"):
        spec = dict(ubl.RUNS[name], updates=12)
        res = ubl.run_one(name, spec, X, X[:100])
        assert res["status"] == "ok" and [e[0] for e in res["evals"]] == [0, 1, 2, 5, 10, 12]
        assert len(res["rho"]) == 12
        with open(os.path.join(ubl.OUT, name + ".json"), "w") as f:
            json.dump(res, f)
    R = ubl.load()
    assert (max(R["equal-ubp-s0"]["rho"]) > 0) and max(R["equal-sgd-s0"]["rho"]) == 0
    # the same start: the loss before any update is the same net's
    assert R["equal-ubp-s0"]["evals"][0][2] == R["equal-sgd-s0"]["evals"][0][2]
    (_, seed, sgd, ubp), = ubl.pairs(R, "equal", "seed")
    assert seed == 0 and sgd["spec"]["method"] == "sgd" and ubp["spec"]["method"] == "ubp"
    md = os.path.join(os.path.dirname(ubl.OUT), "ubp_long.md")
    ubl.report()
    with open(md, "a") as f:
        f.write("\n" + ubl.READING + ", kept)\nnotes\n")
    ubl.report()
    text = open(md).read()
    assert "## Both at lr 0.01" in text and text.count(ubl.READING) == 1 and text.endswith("notes\n")
    assert os.path.exists(os.path.join(os.path.dirname(ubl.OUT), "ubp_long.png"))


def test_first_below(ubl):
    run = lambda vals: {"evals": [(k, 0.0, v) for k, v in vals]}   # noqa: E731
    sgd = run([(1, 10.0), (2, 9.0), (5, 8.0), (10, 7.0)])
    assert ubl.first_below(sgd, run([(1, 11.0), (2, 8.5), (5, 7.0), (10, 6.0)])) == 2
    assert ubl.first_below(sgd, run([(1, 9.0), (2, 9.5), (5, 9.0), (10, 8.0)])) is None
