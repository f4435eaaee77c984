"""tinynet.tune: the search space, grid / random / biased random search (thesis
algorithm 1), the results file and its resume, worker processes."""
import csv
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tinynet import tune
from tinynet.tune.brs import acceptance, brs_point, estimate, model_costs
from tinynet.tune.grid import grid_counts, grid_points
from tinynet.tune.space import Space, SpaceError


# -- objectives (module level: picklable for the worker processes) -----------------------------
def valley(p):
    """A tilted valley in (log10 lr, log10 scale), as thesis figure 2.2: the best
    lr grows with the init scale; minimum 1 at lr = 1e-2, scale = 1, and a
    plateau at 2 away from the valley, as a training loss that saturates."""
    u, v = math.log10(p["lr"]), math.log10(p["scale"])
    return 2.0 - math.exp(-(u - v + 2.0) ** 2 / 0.5 - (u + v + 2.0) ** 2 / 20.0)


def valley_diverging(p):
    """The valley, diverging (inf) for lr > 1 and failing (an exception) for scale > 30."""
    if p["scale"] > 30:
        raise RuntimeError("the network blew up")
    return math.inf if p["lr"] > 1 else valley(p)


VALLEY = "lr=log:1e-5:100,scale=log:0.01:100"
OPTIMUM = np.array([-2.0, 0.0])


# -- the space ------------------------------------------------------------------------------------
def test_space_parse_and_coordinates():
    sp = Space.parse("lr=log:1e-4:1, x=lin:-1:1 ,n=int:1:4:3,act=choice:tanh|relu|2")
    assert sp.names == ["lr", "x", "n", "act"]
    lr, x, n, act = sp.axes
    assert lr.u_range == (-4.0, 0.0) and x.u_range == (-1.0, 1.0) and n.grid_points == 3
    assert act.choices == ("tanh", "relu", 2)                 # numbers read as numbers
    np.testing.assert_allclose(sp.to_u({"lr": 1e-2, "x": 0.5, "n": 3, "act": "relu"}), [-2, 0.5, 3, 1])
    assert Space.parse(sp.spec()).spec() == sp.spec()
    rng = np.random.default_rng(0)
    pts = [sp.sample(rng) for _ in range(2000)]
    u = np.array([math.log10(p["lr"]) for p in pts])
    assert u.min() >= -4 and u.max() <= 0 and abs(u.mean() + 2) < 0.1    # log-uniform: uniform in log10
    assert {p["n"] for p in pts} == {1, 2, 3, 4} and {p["act"] for p in pts} == {"tanh", "relu", 2}
    assert all(isinstance(p["n"], int) for p in pts)


@pytest.mark.parametrize("text,msg", [
    ("", "empty"),
    ("lr", "name=kind:args"),
    ("lr=cube:1:2", "unknown kind 'cube'"),
    ("lr=log:0:1", "LOW > 0"),
    ("lr=lin:2:1", "LOW < HIGH"),
    ("lr=lin:a:1", "not a number"),
    ("lr=lin:1", "lin:LOW:HIGH"),
    ("n=int:0.5:3", "integer bounds"),
    ("n=int:1:3:0", "grid point count"),
    ("a=choice:", "choice needs values"),
    ("a=choice:x|x", "listed twice"),
    ("lr=log:1e-3:1,lr=lin:0:1", "given twice"),
], ids=["empty", "no-kind", "unknown-kind", "log-zero", "reversed", "nan-bound", "one-bound", "int-float",
        "grid-zero", "choice-empty", "choice-dup", "dup-axis"])
def test_space_errors(text, msg):
    with pytest.raises(SpaceError, match=msg):
        Space.parse(text)


def test_space_check_refuses_outside_values():
    sp = Space.parse("lr=log:1e-3:1,a=choice:tanh|relu")
    assert sp.check({"lr": "0.01", "a": "relu"}) == {"lr": 0.01, "a": "relu"}
    with pytest.raises(SpaceError, match="outside"):
        sp.check({"lr": 2.0, "a": "relu"})
    with pytest.raises(SpaceError, match="not one of"):
        sp.check({"lr": 0.01, "a": "elu"})
    with pytest.raises(SpaceError, match="missing value for a"):
        sp.check({"lr": 0.01})


# -- grid ---------------------------------------------------------------------------------------------
def test_grid_is_cell_centred_and_spends_the_trials_evenly():
    sp = Space.parse("lr=log:1e-7:100,p=lin:10:20")          # thesis figure 4.1's axes
    pts = grid_points(sp, 100)
    assert grid_counts(sp, 100) == [10, 10] and len(pts) == 100
    np.testing.assert_allclose(sorted({math.log10(p["lr"]) for p in pts}), -7 + 0.9 * (np.arange(10) + 0.5))
    np.testing.assert_allclose(sorted({p["p"] for p in pts}), 10.5 + np.arange(10))
    assert grid_counts(sp, 50) == [7, 7]
    sp2 = Space.parse("lr=log:1e-3:1:4,act=choice:tanh|relu,x=lin:0:1")
    assert grid_counts(sp2, 40) == [4, 2, 5]
    with pytest.raises(SpaceError, match="4 x 2 = 8 points but only 6 trials"):
        grid_points(Space.parse("lr=log:1e-3:1:4,act=choice:tanh|relu"), 6)
    assert [p["n"] for p in grid_points(Space.parse("n=int:1:3"), 10)] == [1, 2, 3]


# -- biased random search: algorithm 1 ---------------------------------------------------------------
@pytest.mark.parametrize("c_est,c_min,c_max,p", [
    (2.0, 1.0, 5.0, 0.75), (5.0, 1.0, 5.0, 0.0), (1.0, 1.0, 5.0, 1.0), (26.7, 26.6, 27.6, 0.9),
    (3.0, 3.0, 3.0, 1.0)], ids=["interior", "worst", "best", "table-scale", "flat-history"])
def test_acceptance_probability(c_est, c_min, c_max, p):
    """Algorithm 1 line 7: p = (c_max - c_est) / (c_max - c_min)."""
    assert acceptance(c_est, c_min, c_max) == pytest.approx(p, abs=1e-12)


def test_one_nearest_neighbour_in_log_coordinates():
    sp = Space.parse("lr=log:1e-4:1,a=choice:tanh|relu")
    U = np.array([sp.to_u({"lr": 1e-3, "a": "tanh"}), sp.to_u({"lr": 1e-1, "a": "tanh"})])
    c = np.array([5.0, 1.0])
    # lr = 0.02 is nearer 1e-3 on a linear axis (0.019 < 0.08) but nearer 1e-1 in log10 (0.3 < 1.3)
    assert estimate(sp, U, c, {"lr": 0.02, "a": "tanh"}) == 1.0
    assert estimate(sp, U, c, {"lr": 3e-3, "a": "tanh"}) == 5.0
    # a different choice adds 1 to the distance: from (0.02, tanh), (1e-3, tanh) is at 1.30 and
    # (1e-1, relu) at sqrt(0.70^2 + 1) = 1.22
    U2 = np.vstack([U[:1], sp.to_u({"lr": 0.1, "a": "relu"})])
    assert estimate(sp, U2, c, {"lr": 0.02, "a": "tanh"}) == 1.0
    assert estimate(sp, U2, c, {"lr": 0.01, "a": "tanh"}) == 5.0      # 1.0 against sqrt(2)
    np.testing.assert_allclose(model_costs([3.0, math.inf, math.nan, 1.0]), [3, 3, 3, 1])
    assert model_costs([math.inf, math.nan]) is None


def test_brs_accepts_in_proportion_to_p():
    """1-D history at u = 0.2 (cost 0), 0.5 (cost 0.5), 0.8 (cost 1): the 1-NN cells
    are [0, .35), [.35, .65), [.65, 1] with p = 1, 0.5, 0; accepted draws fall in
    them in proportion 0.35 : 0.15 : 0."""
    sp = Space.parse("x=lin:0:1")
    hist = [({"x": 0.2}, 0.0), ({"x": 0.5}, 0.5), ({"x": 0.8}, 1.0)]
    xs, draws = [], []
    for i in range(3000):
        p, d = brs_point(sp, hist, seed=1, index=i)
        xs.append(p["x"])
        draws.append(d)
    xs = np.array(xs)
    assert xs.max() < 0.65                                    # p = 0 next to the worst point
    assert np.mean(xs < 0.35) == pytest.approx(0.35 / 0.5, abs=0.03)
    assert np.mean(draws) == pytest.approx(1 / 0.5, rel=0.06)    # acceptance rate = 0.35 + 0.5 x 0.3
    # a diverged trial (inf) counts as the worst finite cost: its cell is never sampled
    h_inf = [({"x": 0.2}, 0.0), ({"x": 0.5}, 1.0), ({"x": 0.8}, math.inf)]
    assert max(brs_point(sp, h_inf, 2, i)[0]["x"] for i in range(300)) < 0.35


def test_brs_concentrates_near_the_optimum_more_than_random_search():
    """On the tilted valley, over 8 seeds of 100 trials: the fraction of samples
    within 0.5 (log10 units) of the optimum (random search: the disc's share of
    the space, 2.8%), and the best cost found."""
    frac, best = {"random": [], "brs": []}, {"random": [], "brs": []}
    for seed in range(8):
        for m in frac:
            res = tune.search(valley, VALLEY, method=m, trials=100, seed=seed)
            U = np.array([res.space.to_u(t.params) for t in res])
            frac[m].append(np.mean(np.linalg.norm(U - OPTIMUM, axis=1) < 0.5))
            best[m].append(res.best.cost)
    assert np.mean(frac["random"]) == pytest.approx(math.pi * 0.25 / 28, abs=0.02)
    assert np.mean(frac["brs"]) > 2.5 * np.mean(frac["random"])
    assert np.mean(best["brs"]) < np.mean(best["random"])


# -- search ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["grid", "random", "brs"])
def test_search_api_plain_function(method):
    calls = []

    def f(p):
        calls.append(dict(p))
        return (p["x"] - 0.3) ** 2

    res = tune.search(f, "x=lin:-1:1", method=method, trials=20, seed=3)
    assert [t.index for t in res] == list(range(20)) and [t.params for t in res] == calls
    assert all(t.cost == pytest.approx((t.params["x"] - 0.3) ** 2) for t in res)
    assert res.best.cost == min(t.cost for t in res)
    again = tune.search(f, "x=lin:-1:1", method=method, trials=20, seed=3)
    assert [t.params for t in again] == [t.params for t in res]          # seeded
    if method != "grid":
        other = tune.search(f, "x=lin:-1:1", method=method, trials=20, seed=4)
        assert [t.params for t in other] != [t.params for t in res]


def test_diverged_and_failed_trials_are_recorded_and_the_search_goes_on():
    res = tune.search(valley_diverging, VALLEY, method="brs", trials=60, seed=0)
    st = {s: [t for t in res if t.status == s] for s in ("ok", "diverged", "failed")}
    assert len(res) == 60 and st["ok"] and st["diverged"] and st["failed"]
    assert all(t.params["lr"] > 1 and t.cost == math.inf for t in st["diverged"])
    assert all(math.isnan(t.cost) and "blew up" in t.error for t in st["failed"])
    assert res.best.status == "ok" and res.best.params["lr"] <= 1
    # biased random search avoids what it has seen diverge: fewer bad trials than random search
    rnd = tune.search(valley_diverging, VALLEY, method="random", trials=60, seed=0)
    assert sum(not t.ok for t in res) < sum(not t.ok for t in rnd)


def test_objective_returning_garbage_is_a_failed_trial():
    res = tune.search(lambda p: "oops", "x=lin:0:1", method="random", trials=2)
    assert [t.status for t in res] == ["failed", "failed"] and "not a number" in res[0].error
    with pytest.raises(ValueError, match="unknown search method"):
        tune.search(valley, VALLEY, method="bayes", trials=3)
    with pytest.raises(ValueError, match="trials must be a positive integer"):
        tune.search(valley, VALLEY, method="random", trials=0)


# -- results file and resume -----------------------------------------------------------------------
def _rows(path):
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


class _Stop:
    def __init__(self, at):
        self.at, self.n = at, 0

    def __call__(self, p):
        if self.n == self.at:
            raise KeyboardInterrupt
        self.n += 1
        return valley_diverging(p)


@pytest.mark.parametrize("method", ["grid", "random", "brs"])
def test_interrupted_search_resumed_equals_uninterrupted(tmp_path, method):
    full = tmp_path / "full.csv"
    ref = tune.search(valley_diverging, VALLEY, method=method, trials=30, seed=5, results=str(full))
    part = tmp_path / "part.csv"
    with pytest.raises(KeyboardInterrupt):
        tune.search(_Stop(11), VALLEY, method=method, trials=30, seed=5, results=str(part))
    assert len(_rows(part)) == 11
    res = tune.search(valley_diverging, VALLEY, method=method, trials=30, seed=5, results=str(part), resume=True)
    assert _rows(part) == _rows(full)
    assert [(t.params, t.status) for t in res] == [(t.params, t.status) for t in ref]


def test_resume_repairs_a_cut_line_and_refuses_another_search(tmp_path):
    path = tmp_path / "r.csv"
    tune.search(valley, VALLEY, method="brs", trials=8, seed=1, results=str(path))
    ref = _rows(path)
    text = path.read_text()
    path.write_text(text[:text.rfind("\n", 0, len(text) - 1) + 1] + "7,ok,1.2")   # last row cut by a crash
    tune.search(valley, VALLEY, method="brs", trials=8, seed=1, results=str(path), resume=True)
    assert _rows(path) == ref
    with pytest.raises(FileExistsError, match="already exists"):
        tune.search(valley, VALLEY, method="brs", trials=8, seed=1, results=str(path))
    with pytest.raises(SpaceError, match="another search: seed"):
        tune.search(valley, VALLEY, method="brs", trials=8, seed=2, results=str(path), resume=True)
    with pytest.raises(SpaceError, match="another search: space"):
        tune.search(valley, "lr=log:1e-5:10,scale=log:0.01:100", method="brs", trials=8, seed=1,
                    results=str(path), resume=True)
    # more trials of the same random / brs search extend it
    more = tune.search(valley, VALLEY, method="brs", trials=12, seed=1, results=str(path), resume=True)
    assert len(more) == 12 and _rows(path)[:8] == ref


def test_killed_search_resumed_gives_the_same_file(tmp_path):
    """kill -9 in the middle of a search (a process that writes rows as it goes),
    then resume: the file equals an uninterrupted search's (seconds aside)."""
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_tune import valley_diverging, VALLEY
        from tinynet import tune
        def slow(p):
            time.sleep(0.05)
            return valley_diverging(p)
        tune.search(slow, VALLEY, method="brs", trials=40, seed=7, results=sys.argv[1],
                    resume=len(sys.argv) > 2)
    """)
    path = tmp_path / "k.csv"
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)])
    deadline = time.time() + 60
    while time.time() < deadline and (not path.exists() or len(path.read_text().splitlines()) < 10):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n = len(_rows(path))
    assert 9 <= n < 40
    subprocess.run([sys.executable, "-c", script, str(path), "resume"], check=True)
    tune.search(valley_diverging, VALLEY, method="brs", trials=40, seed=7, results=str(tmp_path / "ref.csv"))
    assert _rows(path) == _rows(tmp_path / "ref.csv")


# -- worker processes ---------------------------------------------------------------------------------
def test_parallel_search_is_reproducible(tmp_path):
    """jobs = 2: random search equals the sequential one; brs (trial i from the
    trials before i - 1) gives the same trials on every run and its own resume."""
    seq = tune.search(valley_diverging, VALLEY, method="random", trials=12, seed=2)
    par = tune.search(valley_diverging, VALLEY, method="random", trials=12, seed=2, jobs=2)
    assert [(t.params, t.status) for t in par] == [(t.params, t.status) for t in seq]
    a = tune.search(valley_diverging, VALLEY, method="brs", trials=16, seed=2, jobs=2,
                    results=str(tmp_path / "a.csv"))
    with pytest.raises(KeyboardInterrupt):
        tune.search(_Stop(9), VALLEY, method="brs", trials=16, seed=2, jobs=1,
                    results=str(tmp_path / "b.csv"))
    # the lag of two jobs is part of the search: a jobs=1 file does not resume as jobs=2
    with pytest.raises(SpaceError, match="jobs"):
        tune.search(valley_diverging, VALLEY, method="brs", trials=16, seed=2, jobs=2,
                    results=str(tmp_path / "b.csv"), resume=True)
    b = tune.search(valley_diverging, VALLEY, method="brs", trials=16, seed=2, jobs=2)
    assert [t.params for t in a] == [t.params for t in b]
    assert [t.params for t in a] != [t.params for t in tune.search(valley_diverging, VALLEY, method="brs",
                                                                  trials=16, seed=2)]
    with pytest.raises(TypeError, match="picklable"):
        tune.search(lambda p: 0.0, VALLEY, method="random", trials=2, jobs=2)


def crashy(p):
    """Kills its own process (as a segfault in native code would) for x > 0.7."""
    if p["x"] > 0.7:
        os.kill(os.getpid(), signal.SIGKILL)
    return p["x"] ** 2


@pytest.mark.slow   # three pools of spawned workers: ~15 s
def test_a_trial_that_kills_its_worker_fails_alone():
    """Grid x = 0.125, 0.375, 0.625, 0.875: the last kills its worker while the
    third runs beside it; the third is rerun alone and keeps its result."""
    res = tune.search(crashy, "x=lin:0:1", method="grid", trials=4, seed=0, jobs=2)
    bad = [t for t in res if t.params["x"] > 0.7]
    assert len(bad) == 1 and all(t.status == "failed" and "killed its worker" in t.error for t in bad)
    assert all(t.status == "ok" and t.cost == t.params["x"] ** 2 for t in res if t.params["x"] <= 0.7)
