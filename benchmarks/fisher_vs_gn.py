"""Issue 20 part 5 (thesis 6.5.3.4): KFAC with the Fisher against KFAC with
Gauss-Newton on CIFAR-10, over several seeds, with error bars.

  python benchmarks/fisher_vs_gn.py [--models cifar-mlp,cifar-cnn] [--seeds 5] [--seconds 150]
                                    [--tune-trials 4] [--tune-seconds 20] [--jobs 2]
  python benchmarks/fisher_vs_gn.py --report      # tables and figure from the saved runs

The thesis (6.5.3.4, figure 6.3): "the natural gradient version performs much
better than the GN version, with respect to both the number of updates and
the wallclock time" on its CIFAR-10 MLP. The methods differ only in the
curvature behind the output-side factor G of each layer (tinynet.optim.kfac):
"gn" takes J^T D J from the loss's Hessian in the logits, D = diag(p) - p p^T,
which for the softmax cross-entropy is the exact Fisher; "fisher" samples it
(targets drawn from the model's predictive distribution, one per example);
"empirical" uses the minibatch's own targets, the empirical Fisher, which is
what the thesis's "KFAC for GN" computed (its 3.4 "cheaper Gauss-Newton": the
GN with the softmax inside the network equals the gradient outer product).
The claim is judged on the pair (empirical, Fisher), and (GN, Fisher) shown.

For each model (cifar-mlp on the raw pixels, minibatch 200 as in the thesis;
cifar-cnn, the slides' CNN on per-channel standardized pixels, minibatch
128) and each curvature: KFAC lr 1, T = 100, statistics every 10 updates;
eps and kl_clip picked by tinynet.tune (biased random search, seed 0,
`--tune-trials` trials of `--tune-seconds`, the same budget for both; cost:
the training loss on a fixed 5000-image subset; the trials use seed 0), then
`--seeds` runs (seeds 1..S: the initialization and the minibatch order; the
two curvatures see the same ones for the same seed, so seeds pair) of
`--seconds` each. Clock: process CPU time inside optimizer.step, one BLAS /
Numba thread per run (as benchmarks/long_run.py). Evaluations off the clock:
loss and error on fixed 5000-image train / test subsets at log-spaced
updates and every 15 s, on the full sets (the 20,000 training images on
disk, 10,000 test) at the end.

One subprocess per (model, curvature) writes results/fisher_vs_gn/<slug>.json
after every run (a restart skips finished seeds); its search goes to
<slug>.tune.csv, resumable. `--report` writes results/fisher_vs_gn.md and
fisher_vs_gn.png.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tinynet.train.environment import describe
from tinynet.train.files import atomic_json
from tinynet.tune.workers import THREAD_VARS

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
RUNS = os.environ.get("TINYNET_FISHER_GN_DIR") or os.path.join(RESULTS, "fisher_vs_gn")
SUBSET = 5000
EVAL_SECONDS = 15.0
# model -> (dataset, minibatch)
MODELS = {"cifar-mlp": ("cifar10", 200), "cifar-cnn": ("cifar10-standardized", 128)}
CURVATURES = {"KFAC-GN": "gn", "KFAC-Fisher": "fisher", "KFAC-empirical": "empirical"}
# (baseline, Fisher) pairs of the claim. tinynet's "gn" for the softmax cross-entropy has D = diag(p) - p p^T,
# the exact Fisher of the predictive distribution, which "fisher" samples; the thesis's "KFAC for GN" took
# its G from the gradient (its 3.4 "cheaper GN", the GN with the softmax inside the network): the
# empirical Fisher, "empirical" here. So the thesis's comparison is the second pair.
PAIRS = [("KFAC-GN", "KFAC-Fisher"), ("KFAC-empirical", "KFAC-Fisher")]
FIXED = dict(lr=1.0, T=100, stats_every=10)
SPACE = "eps=log:1e-4:1e-1,kl_clip=log:1e-3:1e-1"


def slug(model, method):
    return f"{model}_{method}".lower().replace("-", "_")


class Data:
    def __init__(self, model):
        from tinynet.data import load_dataset
        name, self.batch = MODELS[model]
        self.Xtr, self.Ytr = (np.ascontiguousarray(a) for a in load_dataset(name, "train"))
        self.Xte, self.Yte = (np.ascontiguousarray(a) for a in load_dataset(name, "test"))
        rng = np.random.default_rng(1)
        self.sub_tr = rng.choice(len(self.Xtr), SUBSET, replace=False)
        self.sub_te = rng.choice(len(self.Xte), SUBSET, replace=False)


def make(model, method, params, seed):
    from tinynet.models import build_model
    from tinynet.optim import OPTIMIZERS
    net = build_model(model, seed=seed)
    options = {**FIXED, "curvature": CURVATURES[method], **params}
    return net, OPTIMIZERS["kfac"](net, options.pop("lr"), **options)


def measure(net, X, Y, chunk=2500):
    """(mean loss, error rate) over X in eval mode."""
    net.train(False)
    loss = wrong = 0.0
    for i in range(0, len(X), chunk):
        F, _ = net.forward_ctx(X[i:i + chunk])
        value, _ = net.loss_stage.forward(F, net.as_target(Y[i:i + chunk]))
        loss += float(value) * len(F)
        wrong += float(np.sum(np.argmax(net.bk.to_host(F), 1) != Y[i:i + chunk]))
    net.train(True)
    return loss / len(X), wrong / len(X)


def train(model, method, params, data, seconds, seed, curve=True):
    """`seconds` of CPU time in optimizer.step; (rows [updates, cpu s, train
    loss, train err, test loss, test err] on the subsets, full-set row [updates,
    train loss, train err, test loss, test err] or None, status)."""
    warm_net, warm_opt = make(model, method, params, seed)
    warm_opt.step(data.Xtr[:data.batch], data.Ytr[:data.batch])     # compile off the clock
    del warm_net, warm_opt
    net, opt = make(model, method, params, seed)
    rng = np.random.default_rng(seed)
    hist, status, cpu, k = [], "ok", 0.0, 0
    next_k, next_t = (0, 0.0) if curve else (math.inf, math.inf)
    while True:
        done = cpu >= seconds
        if k >= next_k or cpu >= next_t or done:
            tr = measure(net, data.Xtr[data.sub_tr], data.Ytr[data.sub_tr])
            te = measure(net, data.Xte[data.sub_te], data.Yte[data.sub_te])
            hist.append([k, cpu, *tr, *te])
            if not math.isfinite(tr[0]):
                status = f"diverged at update {k}"
                break
            next_k, next_t = (max(k + 1, int(k * 1.25)), cpu + EVAL_SECONDS) if curve else (math.inf, math.inf)
        if done:
            break
        idx = rng.integers(0, len(data.Xtr), data.batch)
        c0 = time.process_time()
        opt.step(data.Xtr[idx], data.Ytr[idx])
        cpu += time.process_time() - c0
        k += 1
    full = None
    if status == "ok" and curve:
        full = [k, *measure(net, data.Xtr, data.Ytr), *measure(net, data.Xte, data.Yte)]
    return hist, full, status


def run_one(model, method, seeds, seconds, tune_trials, tune_seconds):
    from tinynet.tune import Outcome, search
    os.makedirs(RUNS, exist_ok=True)
    path = os.path.join(RUNS, slug(model, method) + ".json")
    data = Data(model)

    def objective(params):
        hist, _, status = train(model, method, params, data, tune_seconds, seed=0, curve=False)
        return Outcome(hist[-1][2] if status == "ok" else math.inf, info={"updates": hist[-1][0]})

    csv = os.path.join(RUNS, slug(model, method) + ".tune.csv")
    res = search(objective, SPACE, method="brs", trials=tune_trials, seed=0, results=csv,
                 resume=os.path.exists(csv), info_columns=("updates",))
    record = {"model": model, "method": method, "fixed": FIXED, "space": SPACE, "batch": data.batch,
              "tune_trials": tune_trials, "tune_seconds": tune_seconds, "seconds": seconds,
              "machine": describe(), "tune": [{"params": t.params, "cost": t.cost, "status": t.status} for t in res],
              "runs": {}}
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        if old.get("seconds") == seconds and old.get("tune_trials") == tune_trials:
            record["runs"] = old.get("runs", {})
    if res.best is None:
        atomic_json(path, {**record, "params": None, "status": "every search trial diverged"})
        return
    record["params"] = res.best.params
    print(f"{model} {method}: picked {res.best.params} (cost {res.best.cost:.4g})", flush=True)
    for seed in range(1, seeds + 1):
        if str(seed) in record["runs"]:
            continue
        hist, full, status = train(model, method, res.best.params, data, seconds, seed)
        record["runs"][str(seed)] = {"hist": hist, "full": full, "status": status}
        atomic_json(path, record)
        print(f"{model} {method} seed {seed}: {status}, {hist[-1][0]} updates, "
              f"subset train loss {hist[-1][2]:.4g}, test err {hist[-1][5]:.3f}", flush=True)
    atomic_json(path, {**record, "finished": True})


def drive(args):
    os.makedirs(RUNS, exist_ok=True)
    models = [m.strip() for m in args.models.split(",")]
    for m in models:
        if m not in MODELS:
            sys.exit(f"fisher_vs_gn.py: unknown model {m!r}; known: {', '.join(MODELS)}")
    data_dir = args.data_dir or os.environ.get("TINYNET_DATA") or os.path.normpath(
        os.path.join(HERE, "..", "..", "shared", "data", "cifar10"))     # DESIGN.md: ../shared/data/ beside the repo
    if not os.path.isdir(data_dir):
        sys.exit(f"fisher_vs_gn.py: CIFAR-10 folder {data_dir} does not exist: pass --data-dir DIR "
                 "or set TINYNET_DATA=DIR")
    env = {**os.environ, **{v: "1" for v in THREAD_VARS}, "PYTHONUNBUFFERED": "1", "TINYNET_DATA": data_dir}
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)

    def job(mm):
        model, method = mm
        cmd = [sys.executable, os.path.abspath(__file__), "--one", model, method, "--seeds", str(args.seeds),
               "--seconds", str(args.seconds), "--tune-trials", str(args.tune_trials),
               "--tune-seconds", str(args.tune_seconds)]
        with open(os.path.join(RUNS, slug(model, method) + ".log"), "a") as log:
            return subprocess.call(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)

    curvs = [c.strip() for c in args.curvatures.split(",")]
    for c in curvs:
        if c not in CURVATURES:
            sys.exit(f"fisher_vs_gn.py: unknown curvature {c!r}; known: {', '.join(CURVATURES)}")
    jobs = [(m, c) for m in models for c in curvs]
    with ThreadPoolExecutor(args.jobs) as pool:
        codes = dict(zip(jobs, pool.map(job, jobs)))
    bad = {f"{m} {c}": code for (m, c), code in codes.items() if code}
    if bad:
        print(f"fisher_vs_gn.py: runs that failed (see {RUNS}/<slug>.log): {bad}", file=sys.stderr)
    report()
    return 1 if bad else 0


# --- the report ---------------------------------------------------------------

def load():
    recs = {}
    for model in MODELS:
        for method in CURVATURES:
            path = os.path.join(RUNS, slug(model, method) + ".json")
            if os.path.exists(path):
                with open(path) as f:
                    recs[(model, method)] = json.load(f)
    return recs


def finals(rec, col):
    """{seed: value} of a full-set column (1 train loss, 2 train err, 3 test loss, 4 test err)."""
    return {s: r["full"][col] for s, r in rec.get("runs", {}).items() if r.get("full")}


def curve_at(rec, x, xcol, ycol=2):
    """{seed: subset value (column ycol, default training loss) at x of column xcol (0 updates, 1 CPU
    seconds)}, log-interpolated between evaluations; seeds whose run stops before x are left out."""
    out = {}
    for seed, run in rec.get("runs", {}).items():
        h = np.array(run["hist"], dtype=float)
        h = h[h[:, xcol] > 0]
        if len(h) and h[0, xcol] <= x <= h[-1, xcol]:
            out[seed] = float(np.exp(np.interp(np.log(x), np.log(h[:, xcol]), np.log(h[:, ycol]))))
    return out


def reached(rec, level, xcol):
    """{seed: first updates (xcol 0) or CPU seconds (xcol 1) at which the subset training loss is <= level}."""
    out = {}
    for seed, run in rec.get("runs", {}).items():
        h = np.array(run["hist"], dtype=float)
        hit = np.nonzero(h[:, 2] <= level)[0]
        if len(hit):
            out[seed] = float(h[hit[0], xcol])
    return out


def paired(gn, fi):
    """Fisher minus GN over the seeds both have: (mean, standard error, n, seeds where Fisher is lower)."""
    seeds = sorted(set(gn) & set(fi), key=int)
    d = np.array([fi[s] - gn[s] for s in seeds])
    if len(d) == 0:
        return None
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else math.nan
    return float(d.mean()), se, len(d), int(np.sum(d < 0))


def verdict(p, base="GN"):
    """Fisher "clearly ahead": lower on average by more than two standard errors of the paired difference."""
    if p is None or p[2] < 2:
        return "too few seeds"
    mean, se, n, wins = p
    if mean < -2 * se:
        return f"Fisher ahead ({wins}/{n} seeds)"
    if mean > 2 * se:
        return f"{base} ahead ({n - wins}/{n} seeds)"
    return f"no difference beyond 2 SE (Fisher lower in {wins}/{n})"


def plot(recs, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = sorted({m for m, _ in recs}, key=list(MODELS).index)
    f, ax = plt.subplots(len(models), 3, figsize=(15, 4.2 * len(models)), squeeze=False)
    for r, model in enumerate(models):
        for method, color in zip(CURVATURES, ("tab:red", "tab:purple", "tab:gray")):
            rec = recs.get((model, method))
            if not rec:
                continue
            curves = [np.array(run["hist"], dtype=float) for run in rec["runs"].values()]
            if not curves:
                continue
            grid = np.geomspace(1, min(c[-1, 0] for c in curves), 60)
            for c_ax, (col, x_of) in zip(ax[r], ((2, 0), (5, 0), (2, 1))):
                xs = [c[c[:, 0] >= 1] for c in curves]
                if x_of == 0:
                    ys = np.array([np.interp(grid, c[:, 0], c[:, col]) for c in xs])
                    x = grid
                else:
                    x = np.linspace(max(c[0, 1] for c in xs), min(c[-1, 1] for c in xs), 60)
                    ys = np.array([np.interp(x, c[:, 1], c[:, col]) for c in xs])
                m, s = ys.mean(0), ys.std(0, ddof=1) if len(ys) > 1 else 0 * ys[0]
                c_ax.plot(x, m, color=color, label=f"{method} ({len(ys)} seeds, mean ± 1 sd)")
                c_ax.fill_between(x, m - s, m + s, color=color, alpha=0.2)
        for c_ax, (xl, yl) in zip(ax[r], (("updates", "training loss"), ("updates", "test error"),
                                          ("training seconds (CPU, one thread)", "training loss"))):
            c_ax.set_xscale("log")
            c_ax.set_xlabel(xl)
            c_ax.set_ylabel(f"{yl} ({SUBSET}-image subset)")
            c_ax.set_title(model)
            c_ax.grid(True, which="both", alpha=0.3)
            if "loss" in yl:
                c_ax.set_yscale("log")
        ax[r, 0].legend(fontsize=8)
    f.tight_layout()
    f.savefig(path, dpi=90)
    plt.close(f)


def _machines(recs):
    """Where each model's runs ran: CPU times compare only within one machine."""
    by_model = {}
    for (model, _), r in recs.items():
        m = r.get("machine", {})
        by_model.setdefault(model, set()).add(f"{m.get('cpu')}, BLAS {m.get('blas')}")
    parts = []
    for model, ms in by_model.items():
        note = " (MIXED: its CPU-time comparisons do not hold)" if len(ms) > 1 else ""
        parts.append(f"{model} on {' / '.join(sorted(ms))}{note}")
    return "; ".join(parts)


def report():
    recs = load()
    if not recs:
        print(f"fisher_vs_gn.py: no runs on record in {RUNS}", file=sys.stderr)
        return
    plot(recs, os.path.join(os.path.dirname(RUNS), "fisher_vs_gn.png"))
    any_rec = next(iter(recs.values()))
    seeds = max(len(r.get("runs", {})) for r in recs.values())
    lines = ["# KFAC with the Fisher against KFAC with Gauss-Newton on CIFAR-10 (issue 20 part 5, thesis 6.5.3.4)",
             "",
             f"Command: `python benchmarks/fisher_vs_gn.py --models {','.join(sorted({m for m, _ in recs}, key=list(MODELS).index))} "
             f"--seeds {seeds} --seconds {any_rec.get('seconds'):g} --tune-trials {any_rec.get('tune_trials')} "
             f"--tune-seconds {any_rec.get('tune_seconds'):g}`; report: `python benchmarks/fisher_vs_gn.py --report`.",
             "",
             f"Machine: {_machines(recs)}; one BLAS / Numba thread per run. KFAC lr 1, "
             "T = 100, statistics every 10; eps and kl_clip by a biased random search per model and curvature "
             f"(`{SPACE}`); clock: CPU time inside optimizer.step. Full sets: the 20,000 CIFAR-10 training images "
             "on disk and the 10,000 test images. Seeds pair: the same seed gives both curvatures the same "
             "initialization and minibatch order.", "",
             "![Fisher vs GN](fisher_vs_gn.png)", "",
             "## At the end of the budget, full sets (mean ± sd over seeds)", "",
             "| model | curvature | picked | updates | train loss | train err | test loss | test err |",
             "|---|---|---|---:|---:|---:|---:|---:|"]

    def ms(vals, pct=False):
        v = np.array(list(vals), dtype=float)
        if not len(v):
            return ""
        k, d = (100, 2) if pct else (1, 3)
        sd = f" ± {k * v.std(ddof=1):.{d}f}" if len(v) > 1 else ""
        return f"{k * v.mean():.{d}f}{sd}" + ("%" if pct else "")

    for (model, method), rec in recs.items():
        runs = [r for r in rec.get("runs", {}).values() if r.get("full")]
        p = rec.get("params") or {}
        cells = ([f"{np.mean([r['full'][0] for r in runs]):.0f}" if runs else ""]     # mean updates
                 + [ms((r["full"][c] for r in runs), pct=c in (2, 4)) for c in (1, 2, 3, 4)])
        lines.append(f"| {model} | {method} | eps {p.get('eps', 0):.3g}, kl_clip {p.get('kl_clip', 0):.3g} | "
                     + " | ".join(cells) + " |")
    lines += ["", "## The claim: Fisher clearly ahead (paired over seeds: Fisher − baseline, mean ± SE; "
              "the thesis's GN is KFAC-empirical here)", "",
              "| model | baseline | quantity | Fisher − baseline | verdict |", "|---|---|---|---:|---|"]
    for model in MODELS:
        for base, fisher in PAIRS:
            gn, fi = recs.get((model, base)), recs.get((model, fisher))
            if not (gn and fi):
                continue
            for col, what in ((1, "train loss"), (2, "train error"), (3, "test loss"), (4, "test error")):
                p = paired(finals(gn, col), finals(fi, col))
                if p:
                    k = 100 if col in (2, 4) else 1
                    lines.append(f"| {model} | {base} | {what} | {k * p[0]:+.3f} ± {k * p[1]:.3f}"
                                 f"{' pts' if k == 100 else ''} | {verdict(p, base)} |")
    lines += ["", "## Along the way: the subset training loss at fractions of the budget, and the time to a level "
              "(paired, Fisher − baseline; lower is better for Fisher)", "",
              "| model | baseline | quantity | baseline | Fisher | Fisher − baseline | verdict |",
              "|---|---|---|---:|---:|---:|---|"]
    for model, (base, fisher) in ((m, pr) for m in MODELS for pr in PAIRS):
        gn, fi = recs.get((model, base)), recs.get((model, fisher))
        if not (gn and fi):
            continue
        budget = gn.get("seconds") or 0
        rows = [(f"training loss at {f * budget:g} s", curve_at(gn, f * budget, 1), curve_at(fi, f * budget, 1))
                for f in (0.1, 0.3, 1.0)]
        for level in (1.0, 0.3):
            rows += [(f"CPU seconds to training loss {level:g}", reached(gn, level, 1), reached(fi, level, 1)),
                     (f"updates to training loss {level:g}", reached(gn, level, 0), reached(fi, level, 0))]
        for what, a, b in rows:
            p = paired(a, b)
            if p:
                lines.append(f"| {model} | {base} | {what} | {np.mean(list(a.values())):.4g} | "
                             f"{np.mean(list(b.values())):.4g} | "
                             f"{p[0]:+.4g} ± {p[1]:.2g} | {verdict(p, base)} |")
    lines += ["", "## Searches (cost: subset training loss after the trial's budget, seed 0)", ""]
    for (model, method), rec in recs.items():
        trials = "; ".join(f"eps {t['params']['eps']:.3g}, kl_clip {t['params']['kl_clip']:.3g}: {t['cost']:.4g}"
                           for t in rec.get("tune", []))
        lines.append(f"- {model} {method} ({rec.get('tune_trials')} x {rec.get('tune_seconds')} s): {trials}")
    lines.append("")
    with open(os.path.join(os.path.dirname(RUNS), "fisher_vs_gn.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="cifar-mlp,cifar-cnn", help=f"comma-separated, of: {', '.join(MODELS)}")
    ap.add_argument("--curvatures", default=",".join(CURVATURES), help=f"comma-separated, of: {', '.join(CURVATURES)}")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=150.0, help="training seconds (CPU) per run")
    ap.add_argument("--tune-trials", type=int, default=4)
    ap.add_argument("--tune-seconds", type=float, default=20.0)
    ap.add_argument("--jobs", type=int, default=2, help="runs side by side (one thread each)")
    ap.add_argument("--data-dir", default=None,
                    help="CIFAR-10 folder (default $TINYNET_DATA, else ../shared/data/cifar10 beside the repository)")
    ap.add_argument("--report", action="store_true", help="only write the report from the saved runs")
    ap.add_argument("--one", nargs=2, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        run_one(*args.one, args.seeds, args.seconds, args.tune_trials, args.tune_seconds)
        return 0
    if args.report:
        report()
        return 0
    return drive(args)


if __name__ == "__main__":
    sys.exit(main())
