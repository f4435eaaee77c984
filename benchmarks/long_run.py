"""Issue 20 part 1: long runs on the MNIST autoencoder at the thesis's budgets.

  python benchmarks/long_run.py [--minutes 15] [--long-minutes 60] [--tune-trials 6]
                                [--tune-seconds 45] [--jobs 2] [--methods A,B,...]
  python benchmarks/long_run.py --report          # tables and figures from the saved runs

Real MNIST (60k train, 10k test), float32, minibatch 200, CPU backend. Every
run has one BLAS / Numba thread; `--jobs` runs go side by side. For each method:

1. Hyperparameters by tinynet.tune (biased random search, thesis algorithm 1,
   seed 0) over the method's space in METHODS: `--tune-trials` trials of
   `--tune-seconds` of training each, the same budget for every method; the
   cost is the training loss on a fixed 5000-image subset at the end.
2. One run of `--minutes` of training time (`--long-minutes` for SGD with
   momentum, the reference of the goal) with the picked hyperparameters.

The clock is the process's CPU time spent inside `optimizer.step` (one thread,
so CPU time = time on a core): two runs side by side, or other work on the
machine, do not shorten each other's budgets the way wall time would. Wall time
is recorded beside it. The first step (Numba compilation) is taken on a
throwaway copy before the clock starts. Evaluations are excluded from the
clock: the loss on fixed 5000-image train / test subsets at log-spaced updates
and every 30 s, and on the full 60k / 10k sets at 1, 5, 15 and 60 minutes and at
the end. The loss is tinynet's MSELoss: squared error summed over the 784 pixels,
mean over examples (DESIGN.md).

Each method's run is one subprocess (`--one NAME`) writing
results/long_run/<slug>.json (atomically, after every evaluation) and its
search to <slug>.tune.csv (resumable: a restarted run skips finished trials;
a finished run is not run again unless --rerun). `--report` writes
results/long_run.md and long_run.png.
"""
import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np

from tinynet.train.environment import describe
from tinynet.train.files import atomic_json
from tinynet.tune.workers import THREAD_VARS

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
RUNS = os.environ.get("TINYNET_LONG_RUN_DIR") or os.path.join(RESULTS, "long_run")   # env: trial runs elsewhere
BATCH = 200
SUBSET = 5000
MARKS_MIN = (1, 5, 15, 60)          # full-set evaluations (minutes of training time)
EVAL_SECONDS = 30.0

_KFAC = "eps=log:1e-3:1e-1,kl_clip=log:1e-3:1e-1"
# name -> (optimizer, fixed options, batchnorm, search space). Ranges: a decade or
# more around what the short runs found (results/thesis_fig6.md, ubp.md,
# chapter6_sweep.md); momentum 0.9 divides plain SGD's good lr (0.3-0.5) by ~10.
METHODS = {
    "SGD momentum": ("sgd", dict(momentum=0.9), None, "lr=log:0.003:0.3"),
    "SGD Nesterov": ("sgd", dict(momentum=0.9, nesterov=True), None, "lr=log:0.003:0.3"),
    "Adam": ("adam", {}, None, "lr=log:1e-4:1e-2"),
    "UBP": ("ubp", {}, None, "lr=log:0.001:0.1"),
    "HF": ("hf", {}, None, "damping=log:1e-3:10,cg_iters=int:5:50"),
    "KFAC-GN": ("kfac", dict(lr=1.0, T=100, stats_every=10, curvature="gn"), None, _KFAC),
    "KFAC-Fisher": ("kfac", dict(lr=1.0, T=100, stats_every=10, curvature="fisher"), None, _KFAC),
    "ACP fixed alpha": ("acp", dict(T=100, alpha=1.0), None, "lr=log:0.03:1,eps=log:0.01:0.3"),
    "BN + SGD": ("sgd", {}, "full", "lr=log:0.01:0.3"),
    # parts 2-4 of the issue (not in the default list)
    "SGD": ("sgd", {}, None, "lr=log:0.03:1"),
    # part 3: algorithm 4 as printed (step lr/alpha; the fixed-alpha space, so the two meet at the same
    # search points), and this repository's earlier reading (step lr, the local criterion of 6.1)
    "ACP heuristic alpha": ("acp", dict(T=100, alpha="heuristic", step_scale="alpha"), None,
                            "lr=log:0.03:1,eps=log:0.01:0.3"),
    "ACP heuristic alpha (unscaled step)": ("acp", dict(T=100, alpha="heuristic", step_scale="none"), None,
                                           "lr=log:0.03:1,eps=log:3e-3:0.1"),
    # a diagnostic, not a search: where eps/alpha dominates C (the lowest layers, alpha at its floor) the
    # printed step is ~(lr/eps) x the centered gradient, so lr/eps ~0.3 is plain SGD's good lr; the
    # search's 4 draws above all have lr/eps >= 1. Space None: the fixed options are the hyperparameters.
    "ACP heuristic alpha (hand-picked lr 0.03, eps 0.1)": (
        "acp", dict(T=100, alpha="heuristic", step_scale="alpha", lr=0.03, eps=0.1), None, None),
    "mean-only BN + SGD": ("sgd", {}, "mean-only", "lr=log:0.01:0.3"),
    "centered": ("centered", {}, None, "lr=log:0.1:1"),
}
DEFAULT_METHODS = ["SGD momentum", "SGD Nesterov", "Adam", "UBP", "HF", "KFAC-GN", "KFAC-Fisher",
                   "ACP fixed alpha", "BN + SGD"]
REFERENCE = "SGD momentum"          # the goal: a preconditioner at 15 min below this at 60
PRECONDITIONERS = ["UBP", "HF", "KFAC-GN", "KFAC-Fisher", "ACP fixed alpha", "ACP heuristic alpha",
                   "ACP heuristic alpha (unscaled step)"]

# published final training errors for this autoencoder (784-1000-500-250-30, same
# loss: squared error summed over pixels, mean over examples), Sutskever et al.
# 2013 table 1, 750k updates of batch 200 on a GPU
PUBLISHED = [("SGD (Sutskever et al. 2013, table 1)", 2.1),
             ("best NAG (Sutskever et al. 2013, table 1)", 0.73),
             ("HF (Martens 2010, as quoted in Sutskever et al. 2013)", 1.4),
             ("hybrid HF (Sutskever et al. 2013, table 1)", 0.69)]


def slug(name):
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


# --- one method: search, then the long run (in its own process) -------------

class Data:
    def __init__(self):
        from tinynet.data import load_dataset
        self.Xtr = np.ascontiguousarray(load_dataset("mnist-autoencode", "train")[0])
        self.Xte = np.ascontiguousarray(load_dataset("mnist-autoencode", "test")[0])
        rng = np.random.default_rng(1)
        self.sub_tr = np.ascontiguousarray(self.Xtr[rng.choice(len(self.Xtr), SUBSET, replace=False)])
        self.sub_te = np.ascontiguousarray(self.Xte[rng.choice(len(self.Xte), SUBSET, replace=False)])


def make(method, params, seed=0):
    from tinynet.models import build_model
    from tinynet.optim import OPTIMIZERS
    opt_name, fixed, bn, _ = METHODS[method]
    net = build_model("mnist-autoencoder", seed=seed, **({"batchnorm": bn} if bn else {}))
    options = {**fixed, **params}
    lr = options.pop("lr", None)
    cls = OPTIMIZERS[opt_name]
    opt = cls(net, lr, **options) if lr is not None else cls(net, **options)
    return net, opt


def loss_on(net, X, chunk=10000):
    """Mean per-example loss over X (eval mode), in chunks to bound memory."""
    net.train(False)
    total = 0.0
    for i in range(0, len(X), chunk):
        Xi = X[i:i + chunk]
        F, _ = net.forward_ctx(Xi)
        value, _ = net.loss_stage.forward(F, net.as_target(Xi))
        total += float(value) * len(Xi)
    net.train(True)
    return total / len(X)


def train(method, params, data, seconds, seed=0, full_marks=(), on_eval=None, curve=True, trace=None):
    """Train for `seconds` of CPU time in optimizer.step (curve=False: evaluate
    at the end only, for the search's trials); returns (history rows
    [updates, cpu s, wall s, subset train loss, subset test loss], full-set rows
    [minutes mark, updates, cpu s, train loss, test loss], status). `trace`, a
    list: at each evaluation, [updates, alpha of each Kronecker layer, bottom
    first] is appended for an optimizer with per-layer alphas (ACP; issue 20
    part 3); its damping is eps / alpha."""
    warm_net, warm_opt = make(method, params, seed)
    warm_opt.step(data.Xtr[:BATCH], data.Xtr[:BATCH])          # compile off the clock
    del warm_net, warm_opt
    net, opt = make(method, params, seed)
    rng = np.random.default_rng(seed)
    hist, full = [], []
    marks = [m for m in full_marks if 60 * m <= seconds + 1e-9]
    cpu = wall = 0.0
    k, next_k, next_t, status = 0, 0 if curve else math.inf, 0.0 if curve else math.inf, "ok"

    def evaluate():
        hist.append([k, cpu, wall, loss_on(net, data.sub_tr), loss_on(net, data.sub_te)])
        if trace is not None and getattr(opt, "alphas", None):
            trace.append([k] + [float(opt.alphas[i]) for i in sorted(opt.alphas)])
        if on_eval is not None:
            on_eval(hist, full, status)

    while True:
        done = cpu >= seconds
        while marks and (cpu >= 60 * marks[0] or done):
            full.append([marks.pop(0), k, cpu, loss_on(net, data.Xtr), loss_on(net, data.Xte)])
        if k >= next_k or cpu >= next_t or done:
            evaluate()
            last = hist[-1][3]
            if not math.isfinite(last) or last > 1e6:
                status = f"diverged at update {k} (subset training loss {last:.4g})"
                break
            next_k = max(k + 1, int(k * 1.25)) if curve else math.inf
            next_t = cpu + EVAL_SECONDS if curve else math.inf
        if done:
            break
        idx = rng.integers(0, len(data.Xtr), BATCH)
        X = data.Xtr[idx]
        c0, w0 = time.process_time(), time.perf_counter()
        opt.step(X, X)
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
        k += 1
    if status == "ok" and (not full or full[-1][1] != k):
        full.append([cpu / 60, k, cpu, loss_on(net, data.Xtr), loss_on(net, data.Xte)])
    if on_eval is not None:
        on_eval(hist, full, status)
    return hist, full, status


class TuneObjective:
    def __init__(self, method, data, seconds):
        self.method, self.data, self.seconds = method, data, seconds

    def __call__(self, params):
        from tinynet.tune import Outcome
        hist, _, status = train(self.method, params, self.data, self.seconds, curve=False)
        cost = hist[-1][3] if status == "ok" else math.inf
        return Outcome(cost, info={"updates": hist[-1][0]})


def run_one(method, minutes, tune_trials, tune_seconds):
    from tinynet.tune import search
    os.makedirs(RUNS, exist_ok=True)
    path = os.path.join(RUNS, slug(method) + ".json")
    data = Data()
    t0 = time.time()
    space = METHODS[method][3]
    csv = os.path.join(RUNS, slug(method) + ".tune.csv")
    if space is None:                                   # hand-picked: no search
        res, best = [], SimpleNamespace(params={}, cost=math.nan)
    else:
        res = search(TuneObjective(method, data, tune_seconds), space, method="brs", trials=tune_trials, seed=0,
                     results=csv, resume=os.path.exists(csv),
                     info_columns=("updates",))
        best = res.best
    record = {"method": method, "optimizer": METHODS[method][0], "fixed": METHODS[method][1],
              "batchnorm": METHODS[method][2], "space": space, "tune_trials": tune_trials,
              "tune_seconds": tune_seconds, "minutes": minutes, "machine": describe(),
              "tune": [{"params": t.params, "cost": t.cost, "status": t.status} for t in res],
              "tune_wall_s": time.time() - t0}
    if best is None:
        record.update(status="every search trial diverged", params=None, hist=[], full=[])
        atomic_json(path, record)
        return
    record["params"] = best.params
    print(f"{method}: picked {best.params} (cost {best.cost:.4g}); training {minutes} min", flush=True)

    trace = []
    if METHODS[method][0] == "acp":
        record["alpha_trace_columns"] = "updates, then alpha of each layer (bottom first); damping = eps / alpha"

    def save(hist, full, status):
        atomic_json(path, {**record, "hist": hist, "full": full, "status": status, "finished": False,
                           **({"alpha_trace": trace} if trace else {})})

    marks = sorted(set(MARKS_MIN) | {minutes})          # the run's own budget is always a mark
    hist, full, status = train(method, best.params, data, 60 * minutes, full_marks=marks, on_eval=save,
                               trace=trace)
    atomic_json(path, {**record, "hist": hist, "full": full, "status": status, "finished": True,
                      "wall_s": time.time() - t0, **({"alpha_trace": trace} if trace else {})})
    print(f"{method}: {status}, {hist[-1][0]} updates, full train loss "
          f"{full[-1][3] if full else float('nan'):.4g}", flush=True)


# --- the driver: every method as a subprocess, `jobs` at a time -------------

def drive(args):
    os.makedirs(RUNS, exist_ok=True)
    methods = [m.strip() for m in args.methods.split(",")] if args.methods else DEFAULT_METHODS
    for m in methods:
        if m not in METHODS:
            sys.exit(f"long_run.py: unknown method {m!r}; known: {', '.join(METHODS)}")
    env = {**os.environ, **{v: "1" for v in THREAD_VARS}, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)

    def minutes(m):
        return args.long_minutes if m == REFERENCE else args.minutes

    def job(m):
        path = os.path.join(RUNS, slug(m) + ".json")
        if not args.rerun and os.path.exists(path):
            with open(path) as f:
                rec = json.load(f)
            if rec.get("finished") and rec.get("minutes") == minutes(m):
                print(f"{m}: finished run on record, skipped (--rerun to run again)", flush=True)
                return 0
        cmd = [sys.executable, os.path.abspath(__file__), "--one", m, "--minutes", str(minutes(m)),
               "--tune-trials", str(args.tune_trials), "--tune-seconds", str(args.tune_seconds)]
        with open(os.path.join(RUNS, slug(m) + ".log"), "a") as log:
            return subprocess.call(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)

    order = sorted(methods, key=lambda m: -minutes(m))          # longest first: the pool ends together
    with ThreadPoolExecutor(args.jobs) as pool:
        codes = dict(zip(order, pool.map(job, order)))
    bad = {m: c for m, c in codes.items() if c}
    if bad:
        print(f"long_run.py: runs that failed (see {RUNS}/<slug>.log): {bad}", file=sys.stderr)
    report()
    return 1 if bad else 0


# --- the report ---------------------------------------------------------------

def load_runs():
    runs = {}
    for m in METHODS:
        path = os.path.join(RUNS, slug(m) + ".json")
        if os.path.exists(path):
            with open(path) as f:
                runs[m] = json.load(f)
    return runs


def fmt_params(p, rec=None):
    """The picked hyperparameters; for a run without a search (space None), the hand-picked ones."""
    if rec is not None and rec.get("space") is None and not p:
        p = {k: v for k, v in (rec.get("fixed") or {}).items() if k in ("lr", "eps")}
        return "hand-picked: " + fmt_params(p)
    return ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in (p or {}).items())


def at_minutes(rec, minute):
    """(train, test, updates) on the full sets at a minutes mark, or None."""
    for row in rec.get("full", []):
        if abs(row[0] - minute) < 1e-9:
            return row[3], row[4], row[1]
    return None


def at_updates(rec, k):
    """Subset training loss at update k, interpolated in log-log between evaluations (None outside)."""
    h = np.array(rec.get("hist") or [], dtype=float)
    if not len(h) or k < 1 or k > h[-1, 0]:
        return None
    h = h[h[:, 0] >= 1]
    return float(np.exp(np.interp(np.log(k), np.log(h[:, 0]), np.log(h[:, 3]))))


def claims(runs, short_m, long_m):
    """(claim, what was measured, verdict) rows computed from the runs on record."""
    rows = []

    def full(m, minute):
        return at_minutes(runs[m], minute) if m in runs else None

    ref_long, ref_short = full(REFERENCE, long_m), full(REFERENCE, short_m)
    pre = {m: full(m, short_m) for m in PRECONDITIONERS if full(m, short_m)}
    if ref_long and pre:
        best = min(pre, key=lambda m: pre[m][0])
        rows.append((f"issue 20's goal: a tinynet preconditioner after {short_m:g} min below SGD with momentum "
                     f"after {long_m:g} min",
                     f"best: {best} {pre[best][0]:.3f}; SGD momentum {ref_long[0]:.3f} at {long_m:g} min",
                     "reached" if pre[best][0] < ref_long[0] else "not reached"))
    if ref_short:
        for m, claim in (("KFAC-GN", "Martens & Grosse 2015: KFAC well ahead of SGD with momentum in time"),
                         ("KFAC-Fisher", "Martens & Grosse 2015: KFAC well ahead of SGD with momentum in time"),
                         ("BN + SGD", "thesis figure 6.1: BN + SGD ahead of SGD early"),
                         ("SGD Nesterov", "Sutskever et al. 2013: Nesterov at least as good as momentum")):
            v = full(m, short_m)
            if v:
                rows.append((claim, f"{m} {v[0]:.3f} against SGD momentum {ref_short[0]:.3f} at {short_m:g} min",
                             "reproduced" if v[0] <= ref_short[0] else "not reproduced"))
    order = sorted(pre, key=lambda m: pre[m][0])
    for m in ("ACP fixed alpha", "ACP heuristic alpha", "ACP heuristic alpha (unscaled step)"):
        if m in pre and len(pre) > 1:
            rank = order.index(m) + 1
            rows.append((f"thesis figure 6.2: ACP ({m[4:]}) among the best second-order methods in time "
                         "(here: rank 1, or within 10% of the best)",
                         f"{m} {pre[m][0]:.3f} at {short_m:g} min, rank {rank} of {len(order)} preconditioners "
                         f"(best {order[0]} {pre[order[0]][0]:.3f})",
                         "reproduced" if pre[m][0] <= 1.1 * pre[order[0]][0] else "not reproduced"))
    rows += centering_claims(full, short_m)
    base = "SGD" if "SGD" in runs else REFERENCE       # the thesis compares with plain SGD
    if "UBP" in runs and base in runs:
        k = runs["UBP"]["hist"][-1][0] if runs["UBP"].get("hist") else 0
        a, b = at_updates(runs["UBP"], k), at_updates(runs[base], k)
        if a and b:
            what = "plain SGD" if base == "SGD" else "SGD momentum (not the thesis's plain SGD)"
            rows.append(("thesis figure 5.1: UBP below SGD per update (there: plain SGD, to 3x10^5 updates; "
                         "10^4 updates over seeds, equal lr, momentum, batch size, clip: results/ubp_long.md)",
                         f"at update {k}: UBP {a:.3f}, {what} {b:.3f} (subset)",
                         "reproduced" if a < b else "not reproduced"))
    if ref_long:
        rows.append(("Sutskever et al. 2013 table 1: SGD 2.1 after 750k updates",
                     f"SGD momentum {ref_long[0]:.3f} after {ref_long[2]} updates ({long_m:g} min)",
                     (f"below it, in {750000 / ref_long[2]:.2g}x fewer updates (theirs is plain SGD, this "
                      f"momentum 0.9)" if ref_long[0] <= 2.1 else
                      "not comparable at this budget" if ref_long[2] < 750000 else "not reproduced")))
    return rows


def centering_claims(full, short_m):
    """Part 4, thesis figure 6.1 and 6.5.3's reading of it: plain SGD, mean-only BN + SGD, centered GD,
    ACP (fixed alpha), each after the same search; full-set training loss."""
    rows = []
    sgd1, mob1 = full("SGD", 1), full("mean-only BN + SGD", 1)
    if sgd1 and mob1:
        rows.append(("thesis figure 6.1: mean-only BN ahead of SGD early",
                     f"mean-only BN + SGD {mob1[0]:.3f} against SGD {sgd1[0]:.3f} at 1 min",
                     "reproduced" if mob1[0] < sgd1[0] else "not reproduced"))
    end = {m: full(m, short_m) for m in ("SGD", "mean-only BN + SGD", "centered", "ACP fixed alpha")}
    end = {m: v[0] for m, v in end.items() if v}
    if {"SGD", "centered"} <= set(end):
        rows.append(("thesis 6.5.3: centered GD does not improve on SGD (here: not more than 10% below it)",
                     f"centered {end['centered']:.3f} against SGD {end['SGD']:.3f} at {short_m:g} min",
                     "reproduced" if end["centered"] >= 0.9 * end["SGD"] else "not reproduced"))
    if {"SGD", "centered", "mean-only BN + SGD"} <= set(end):
        best = min(("SGD", "centered", "mean-only BN + SGD"), key=end.get)
        rows.append(("thesis 6.5.3: mean-only BN the best of the centering methods (and SGD)",
                     f"at {short_m:g} min: " + ", ".join(f"{m} {end[m]:.3f}" for m in
                                                         ("mean-only BN + SGD", "centered", "SGD")),
                     "reproduced" if best == "mean-only BN + SGD" else "not reproduced"))
    cen = [end[m] for m in ("centered", "mean-only BN + SGD") if m in end]
    if "ACP fixed alpha" in end and cen:
        rows.append(("thesis 6.5.3: full ACP outperforms the centered methods by a large margin (here: below "
                     "half the best of them)",
                     f"ACP fixed alpha {end['ACP fixed alpha']:.3f}, best centered {min(cen):.3f} at {short_m:g} min",
                     "reproduced" if end["ACP fixed alpha"] < 0.5 * min(cen) else "not reproduced"))
    return rows


def alpha_traces(runs):
    """{method: (trace array [updates, alpha per layer...], eps)} of the ACP runs with a trace."""
    return {m: (np.array(r["alpha_trace"], dtype=float),
                (r.get("params") or {}).get("eps", (r.get("fixed") or {}).get("eps")))
            for m, r in runs.items() if r.get("alpha_trace")}


def plot_alphas(traces, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    f, ax = plt.subplots(1, len(traces), figsize=(6.5 * len(traces), 4.5), squeeze=False)
    for a, (m, (tr, eps)) in zip(ax[0], traces.items()):
        for layer in range(1, tr.shape[1]):
            a.plot(tr[:, 0], tr[:, layer], label=f"layer {layer}")
        a.axhline(1e-4, color="k", ls=":", lw=1, label="alpha_floor 1e-4")
        a.set_xscale("log")
        a.set_yscale("log")
        a.set_xlabel("updates")
        a.set_ylabel("alpha (damping = eps / alpha)")
        a.set_title(f"{m}, eps {eps:.3g}" if eps else m, fontsize=9)
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=7)
    f.tight_layout()
    f.savefig(path, dpi=90)
    plt.close(f)


def alpha_section(runs):
    """Part 3's report: the heuristic alphas and damping of the lowest layers (and the top one) over the run."""
    traces = alpha_traces(runs)
    if not traces:
        return []
    plot_alphas(traces, os.path.join(os.path.dirname(RUNS), "long_run_alpha.png"))
    lines = ["## The heuristic alpha (issue 20 part 3): alpha and damping eps / alpha per layer over the run", "",
             "![alpha over the run](long_run_alpha.png)", "",
             "alpha = max over the minibatch and outputs of (dl/da)^2, plus alpha_floor 1e-4 (6.5.3.3), taken at "
             "each amortization (every 100 updates); layer 1 is the bottom (784 -> 1000), layer 8 the top. "
             "\"unscaled step\": this repository's earlier reading, the step lr (C + eps/alpha I)^-1 g; the "
             "other: algorithm 4 as printed, (lr / alpha) (C + eps/alpha I)^-1 g.", "",
             "| method | updates | alpha layer 1 | alpha layer 2 | alpha layer 3 | alpha top | "
             "damping layer 1 | damping top |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for m, (tr, eps) in traces.items():
        picks = sorted({int(np.argmin(np.abs(tr[:, 0] - k))) for k in (tr[0, 0], 100, 1000, 10000, tr[-1, 0])})
        for j in picks:
            row = tr[j]
            dmp = [f"{eps / row[c]:.3g}" if eps else "" for c in (1, -1)]
            lines.append(f"| {m} | {int(row[0])} | " + " | ".join(f"{row[c]:.3g}" for c in (1, 2, 3, -1))
                         + " | " + " | ".join(dmp) + " |")
    return lines + [""]


def plot(runs, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    f, ax = plt.subplots(2, 2, figsize=(12, 9))
    for m, rec in runs.items():
        h = np.array(rec.get("hist") or [[0, 0, 0, np.nan, np.nan]], dtype=float)
        lab = f"{m} ({fmt_params(rec.get('params'), rec)})"
        keep = h[:, 0] > 0
        for col, (row_ax, y) in enumerate(((ax[0], 3), (ax[1], 4))):
            row_ax[0].plot(h[keep, 0], h[keep, y], label=lab)
            row_ax[1].plot(h[keep, 1], h[keep, y], label=lab)
    for r, what in enumerate(("training", "test")):
        ax[r, 0].set_xlabel("updates")
        ax[r, 1].set_xlabel("training seconds (CPU time in step, one thread)")
        for a in ax[r]:
            a.set_xscale("log")
            a.set_yscale("log")
            a.set_ylabel(f"{what} squared error ({SUBSET}-image subset)")
            a.grid(True, which="both", alpha=0.3)
    ax[0, 0].legend(fontsize=7)
    f.suptitle(f"MNIST autoencoder, minibatch {BATCH}, float32, one CPU thread per run")
    f.tight_layout()
    f.savefig(path, dpi=90)
    plt.close(f)


def report():
    runs = load_runs()
    if not runs:
        print(f"long_run.py: no runs on record in {RUNS}", file=sys.stderr)
        return
    plot(runs, os.path.join(os.path.dirname(RUNS), "long_run.png"))
    any_rec = next(iter(runs.values()))
    marks = sorted({row[0] for rec in runs.values() for row in rec.get("full", [])
                    if any(abs(row[0] - m) < 1e-9 for m in MARKS_MIN) or abs(row[0] - rec.get("minutes", -1)) < 1e-9})
    mach = any_rec.get("machine", {})
    ref = runs.get(REFERENCE)
    long_m = ref.get("minutes") if ref else 60
    short_m = next((r.get("minutes") for m, r in runs.items() if m != REFERENCE), 15)
    lines = ["# Long runs on the MNIST autoencoder (issue 20 part 1)", "",
             f"Command: `python benchmarks/long_run.py --minutes {short_m:g} --long-minutes {long_m:g} "
             f"--tune-trials {any_rec.get('tune_trials')} --tune-seconds {any_rec.get('tune_seconds')}`; "
             "report: `python benchmarks/long_run.py --report`.", "",
             f"Machine: {mach.get('cpu')}, BLAS {mach.get('blas')}, one BLAS / Numba thread per run, two runs "
             "side by side. Clock: CPU time inside optimizer.step. Real MNIST, float32, minibatch 200. "
             "Loss: squared error summed over pixels, mean over examples, on the full 60k training and 10k "
             "test sets at each mark.", "",
             "![long runs](long_run.png)", "",
             "## Training / test loss on the full sets at each mark (minutes of training time)", "",
             "| method | picked by tinynet.tune | status | updates at end | "
             + " | ".join(f"{m:g} min train / test" for m in marks) + " |",
             "|---|---|---|---:|" + "---:|" * len(marks)]
    for m, rec in runs.items():
        cells = []
        for mk in marks:
            v = at_minutes(rec, mk)
            cells.append(f"{v[0]:.3f} / {v[1]:.3f}" if v else "")
        end = rec["hist"][-1][0] if rec.get("hist") else 0
        st = rec.get("status", "") + ("" if rec.get("finished", True) else " (running)")
        lines.append(f"| {m} | {fmt_params(rec.get('params'), rec)} | {st} | {end} | " + " | ".join(cells) + " |")
    lines += ["", "## Published figures for this autoencoder (same squared error)", "",
              "| method | training error |", "|---|---:|"]
    lines += [f"| {n} | {v} |" for n, v in PUBLISHED]
    lines += ["", "Sutskever et al. 2013 trained for 750k updates of batch 200 on a GPU; 15 minutes here is "
              "10^4 to 10^5 updates.", ""]
    ref60 = at_minutes(ref, long_m) if ref else None
    lines += [f"## Goal: a preconditioner at {short_m:g} minutes below SGD with momentum at {long_m:g} "
              "(the issue's budgets: 15 and 60)", ""]
    if ref60:
        rows = []
        for m in PRECONDITIONERS:
            v = at_minutes(runs[m], short_m) if m in runs else None
            if v:
                rows.append(f"| {m} | {v[0]:.3f} | {'yes' if v[0] < ref60[0] else 'no'} |")
        lines += [f"SGD with momentum after {long_m:g} minutes: training loss {ref60[0]:.3f} ({ref60[2]} updates).",
                  "", f"| preconditioner | train loss at {short_m:g} min | below |", "|---|---:|---|"] + rows
    else:
        lines.append("SGD with momentum's 60-minute run is not on record yet.")
    lines += ["", "## The claims, as measured here (computed from the runs on record)", "",
              "| claim | measured | verdict |", "|---|---|---|"]
    lines += [f"| {c} | {m} | {v} |" for c, m, v in claims(runs, short_m, long_m)]
    lines += [""] + alpha_section(runs)
    lines += ["## Searches (biased random search, seed 0; cost: subset training loss after the trial's budget)",
              ""]
    for m, rec in runs.items():
        if rec.get("space") is None:
            lines.append(f"- {m}: no search ({fmt_params(None, rec)})")
            continue
        trials = "; ".join(f"{fmt_params(t['params'])}: {t['cost']:.4g}" for t in rec.get("tune", []))
        lines.append(f"- {m} ({rec.get('tune_trials')} x {rec.get('tune_seconds')} s over `{rec.get('space')}`): "
                     f"{trials}")
    lines.append("")
    with open(os.path.join(os.path.dirname(RUNS), "long_run.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=15.0, help="training minutes per run (default 15)")
    ap.add_argument("--long-minutes", type=float, default=60.0, help=f"training minutes of {REFERENCE} (default 60)")
    ap.add_argument("--tune-trials", type=int, default=6)
    ap.add_argument("--tune-seconds", type=float, default=45.0, help="training seconds per search trial")
    ap.add_argument("--jobs", type=int, default=2, help="runs side by side (one thread each)")
    ap.add_argument("--methods", default=None, help=f"comma-separated, of: {', '.join(METHODS)}")
    ap.add_argument("--rerun", action="store_true", help="run again methods whose finished run is on record")
    ap.add_argument("--report", action="store_true", help="only write the report from the saved runs")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        run_one(args.one, args.minutes, args.tune_trials, args.tune_seconds)
        return 0
    if args.report:
        report()
        return 0
    return drive(args)


if __name__ == "__main__":
    sys.exit(main())
