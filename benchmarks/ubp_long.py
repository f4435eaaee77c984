"""Issue 20 part 2: figure 5.1 (UBP against SGD per update) over 10^4 updates
and several seeds, and the four suspects of the non-reproduction: equal lr,
the correction's scaling with batch size, `clip`, and momentum.

  OPENBLAS_NUM_THREADS=1 python benchmarks/ubp_long.py [--workers 2] [--only GROUP,...]
  python benchmarks/ubp_long.py --report     # ubp_long.md and ubp_long.png from the saved runs

MNIST autoencoder (real data, float32), CPU backend, one BLAS / Numba thread
per run, `--workers` runs side by side. Every run is one subprocess (`--one
NAME`) writing results/ubp_long/NAME.json when it ends; a finished run is not
run again (`--rerun` to redo). Seed s sets both the initialization
(build_model(seed=s)) and the minibatch order (a permutation per epoch from
default_rng(100 + s)), so SGD and UBP of one seed see the same minibatches
from the same start. Measured: the loss on a fixed 5000-image training subset
(squared error summed over pixels, mean over examples) at geometric updates and
every 500, and UBP's correction ratio rho = max_l ||C_l|| / ||B_l|| at every
update (thesis 5.5).

Groups (RUNS):
- tuned: SGD at lr 0.28 and UBP at lr 0.00439, the lrs tinynet.tune picked
  for the long runs (results/long_run.md: 4 x 60 s, the same budget each),
  10^4 updates, seeds 0, 1, 2;
- equal: both at lr 0.01 (UBP's default and stable there), seeds 0, 1;
- momentum: heavy ball mu = 0.9 for both at lr 0.001 (an effective step
  lr / (1 - mu) = 0.01, as in `equal`), 3000 updates, seeds 0, 1;
- batch: lr 0.01 at batch 20, 50, 200, 1000, 300 updates, seed 0;
- clip: UBP at lr 0.03 (where the correction fails, results/ubp_equal_lr.md)
  with clip None, 0.5, 0.2, 0.05, and SGD, 1000 updates, seed 0.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ubp import load_images  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.environ.get("UBP_LONG_OUT", os.path.join(HERE, "results", "ubp_long"))   # env: smoke tests
TUNED = {"sgd": 0.28, "ubp": 0.00439}


def _runs():
    """name -> settings of every run, longest first (for the workers' balance)."""
    R = {}
    for s in (0, 1, 2):
        for m in ("ubp", "sgd"):
            R[f"tuned-{m}-s{s}"] = dict(group="tuned", method=m, lr=TUNED[m], seed=s, batch=200, updates=10000)
    for s in (0, 1):
        for m in ("ubp", "sgd"):
            R[f"equal-{m}-s{s}"] = dict(group="equal", method=m, lr=0.01, seed=s, batch=200, updates=10000)
    for s in (0, 1):
        for m in ("ubp", "sgd"):
            R[f"momentum-{m}-s{s}"] = dict(group="momentum", method=m, lr=0.001, momentum=0.9, seed=s,
                                           batch=200, updates=3000)
    for c in (None, 0.5, 0.2, 0.05):
        R[f"clip-ubp-{c}"] = dict(group="clip", method="ubp", lr=0.03, clip=c, seed=0, batch=200, updates=1000)
    R["clip-sgd"] = dict(group="clip", method="sgd", lr=0.03, seed=0, batch=200, updates=1000)
    for b in (1000, 200, 50, 20):
        for m in ("ubp", "sgd"):
            R[f"batch-{m}-b{b}"] = dict(group="batch", method=m, lr=0.01, seed=0, batch=b, updates=300)
    return R


RUNS = _runs()


def marks(updates):
    ks = {m * 10 ** e for e in range(7) for m in (1, 2, 5) if m * 10 ** e <= updates}
    return sorted(ks | set(range(500, updates + 1, 500)) | {updates})


def run_one(name, spec, X, Xeval):
    from tinynet.models import build_model
    from tinynet.optim import SGD, UBP
    net = build_model("mnist-autoencoder", seed=spec["seed"])
    mu = spec.get("momentum", 0.0)
    if spec["method"] == "sgd":
        opt = SGD(net, spec["lr"], momentum=mu)
    else:
        opt = UBP(net, spec["lr"], clip=spec.get("clip"), momentum=mu)
    rng = np.random.default_rng(100 + spec["seed"])
    n, updates = spec["batch"], spec["updates"]
    per_epoch = len(X) // n
    ks, evals, rho, rho_layers = set(marks(updates)), [], [], []
    perm, secs, status = None, 0.0, "ok"

    def subset_loss():
        return float(np.mean([net.loss(Xeval[j:j + 1000], Xeval[j:j + 1000]) for j in range(0, len(Xeval), 1000)]))

    evals.append((0, 0.0, subset_loss()))
    for k in range(updates):
        if k % per_epoch == 0:
            perm = rng.permutation(len(X))
        idx = perm[(k % per_epoch) * n:(k % per_epoch + 1) * n]
        t = time.process_time()
        loss = opt.step(X[idx], X[idx])
        secs += time.process_time() - t
        rho.append(float(f"{opt.metrics.get('correction_ratio', 0.0):.4g}"))
        if not np.isfinite(loss):
            status = f"diverged at update {k + 1}"
            break
        if k + 1 in ks:
            evals.append((k + 1, secs, subset_loss()))
            if spec["method"] == "ubp":
                rho_layers.append((k + 1, {str(t_): r for t_, r in opt.last_ratios.items()}))
    return {"name": name, "spec": spec, "status": status, "evals": evals, "rho": rho,
            "rho_layers": rho_layers, "cpu_s": secs}


def _save(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def drive(names, workers, rerun, extra=()):
    os.makedirs(OUT, exist_ok=True)
    todo = [n for n in names if rerun or not os.path.exists(os.path.join(OUT, n + ".json"))]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")
    running = []
    while todo or running:
        while todo and len(running) < workers:
            n = todo.pop(0)
            log = open(os.path.join(OUT, n + ".log"), "w")
            running.append((n, subprocess.Popen([sys.executable, __file__, "--one", n, *extra], env=env, stdout=log,
                                                stderr=subprocess.STDOUT), log))
            print(f"started {n}", flush=True)
        time.sleep(2)
        for r in list(running):
            if r[1].poll() is not None:
                r[2].close()
                running.remove(r)
                print(f"finished {r[0]} rc={r[1].returncode}", flush=True)


# ------------------------------------------------------------------ report
def load(group=None):
    out = {}
    for n, spec in RUNS.items():
        p = os.path.join(OUT, n + ".json")
        if (group is None or spec["group"] == group) and os.path.exists(p):
            with open(p) as f:
                out[n] = json.load(f)
    return out


def at(run, k):
    """Subset loss at update k (None where the run has no evaluation there)."""
    for kk, _, v in run["evals"]:
        if kk == k:
            return v
    return None


def pairs(R, group, key):
    """[(key value, seed, sgd run, ubp run)] of a group, paired by seed (or by key)."""
    out = []
    for n, r in R.items():
        s = r["spec"]
        if s["group"] == group and s["method"] == "ubp":
            twin = [q for q in R.values() if q["spec"]["group"] == group and q["spec"]["method"] == "sgd"
                    and q["spec"]["seed"] == s["seed"] and q["spec"]["batch"] == s["batch"]]
            if twin:
                out.append((s.get(key), s["seed"], twin[0], r))
    return out


def first_below(sgd, ubp):
    """The first evaluated update from which UBP's loss stays below SGD's to the end, or None."""
    ks = [k for k, _, _ in ubp["evals"] if at(sgd, k) is not None and k > 0]
    below = [at(ubp, k) < at(sgd, k) for k in ks]
    for i in range(len(ks)):
        if all(below[i:]):
            return ks[i]
    return None


def _fmt(v, d=2):
    return "" if v is None else f"{v:.{d}f}"


def seed_table(R, group, ks, lines):
    ps = sorted(pairs(R, group, "seed"), key=lambda p: p[1])
    lines += ["| seed | method | lr | " + " | ".join(f"k={k}" for k in ks) + " | UBP below SGD from | max rho | CPU s |",
              "|---:|---|---:|" + "---:|" * len(ks) + "---|---:|---:|"]
    ratios = {k: [] for k in ks}
    for _, seed, sgd, ubp in ps:
        for r in (sgd, ubp):
            sp = r["spec"]
            mu = f", mu {sp['momentum']}" if sp.get("momentum") else ""
            cell = "" if r is sgd else (str(first_below(sgd, ubp) or "never"))
            rho = "" if r is sgd else f"{max(r['rho']):.3g}"
            lines.append(f"| {seed} | {sp['method'].upper()}{mu} | {sp['lr']:g} | "
                         + " | ".join(_fmt(at(r, k)) for k in ks) + f" | {cell} | {rho} | {r['cpu_s']:.0f} |")
        for k in ks:
            if at(ubp, k) is not None and at(sgd, k) is not None:
                ratios[k].append(at(ubp, k) / at(sgd, k))
    lines.append("| all | UBP / SGD, mean (min-max) | | " + " | ".join(
        f"{np.mean(v):.3f} ({min(v):.3f}-{max(v):.3f})" if v else "" for v in ratios.values()) + " | | | |")
    return ps, ratios


READING = "## Reading (written by hand after the runs"


def report():
    R = load()
    if not R:
        raise SystemExit(f"no runs in {OUT}: run the benchmark first")
    lines = ["# UBP against SGD per update, long runs (issue 20 part 2, thesis figure 5.1)", "",
             "Command: `OPENBLAS_NUM_THREADS=1 python benchmarks/ubp_long.py --workers 2`; report: "
             "`python benchmarks/ubp_long.py --report`. MNIST autoencoder, real data, float32, one BLAS thread "
             "per run; the same initialization and minibatches for SGD and UBP of one seed. Loss: squared error "
             "summed over pixels, mean over examples, on a fixed 5000-image training subset after k updates. "
             "rho: UBP's largest correction ratio ||C|| / ||B|| over the layers (thesis 5.5). Machine: "
             f"{_cpu()}.", "", "![ubp long](ubp_long.png)", ""]
    claims = []
    ks = [1, 10, 100, 1000, 3000, 5000, 10000]
    lines += ["## Each at its tuned lr (SGD 0.28, UBP 0.00439: tinynet.tune's picks for the long runs), "
              "10^4 updates", ""]
    ps, ratios = seed_table(R, "tuned", ks, lines)
    if ps:
        last = [p for p in ratios if ratios[p]][-1]
        wins = sum(v < 1 for v in ratios[last])
        claims.append(("thesis figure 5.1: UBP below SGD per update, each at its best lr (here: tuned lr, "
                       f"at update {last}, {len(ratios[last])} seeds)",
                       f"UBP / SGD {np.mean(ratios[last]):.3f} (range {min(ratios[last]):.3f}-"
                       f"{max(ratios[last]):.3f}); UBP lower in {wins} of {len(ratios[last])} seeds",
                       "reproduced" if wins == len(ratios[last]) else "not reproduced"))
    lines += ["", "## Both at lr 0.01, 10^4 updates", ""]
    ps, ratios = seed_table(R, "equal", ks, lines)
    if ps:
        early = {k: v for k, v in ratios.items() if v and k <= 100}
        best_k = min(early, key=lambda k: np.mean(early[k])) if early else None
        last = [p for p in ratios if ratios[p]][-1]
        claims.append(("figure 5.1 at equal lr: UBP below SGD per update (here: lr 0.01, at update "
                       f"{last}, {len(ratios[last])} seeds)",
                       f"UBP / SGD {np.mean(ratios[last]):.4f} at {last}; largest gap early: "
                       f"{np.mean(early[best_k]):.3f} at k={best_k}" if best_k else
                       f"UBP / SGD {np.mean(ratios[last]):.4f}",
                       "reproduced" if all(v < 0.99 for v in ratios[last]) else "not reproduced"))
    lines += ["", "## With momentum 0.9 for both, lr 0.001, 3000 updates", ""]
    ps, ratios = seed_table(R, "momentum", [1, 10, 100, 500, 1000, 2000, 3000], lines)
    if ps:
        last = [p for p in ratios if ratios[p]][-1]
        claims.append(("UBP with momentum below SGD with momentum per update (lr 0.001, mu 0.9, "
                       f"at update {last})", f"UBP / SGD {np.mean(ratios[last]):.4f}, {len(ratios[last])} seeds",
                       "UBP lower" if all(v < 0.99 for v in ratios[last]) else "UBP not lower"))
    lines += ["", "## The correction against batch size (lr 0.01, 300 updates, seed 0)", "",
              "tinynet's update is the batch *mean* (lr / n) sum_i; the thesis's algorithm 2 sums "
              "(lines 11-12: lambda sum_i), so at a fixed lambda its step, and its correction, grow with n. "
              "The last column is the lr of the summed convention that gives the same step: lr / n.", "",
              "| batch | rho at k=1 | median rho | max rho | UBP / SGD at k=10 | at k=100 | at k=300 | "
              "equal thesis lambda |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for b, _, sgd, ubp in sorted(pairs(R, "batch", "batch"), key=lambda p: p[0]):
        rr = [at(ubp, k) / at(sgd, k) if at(ubp, k) and at(sgd, k) else None for k in (10, 100, 300)]
        lines.append(f"| {b} | {ubp['rho'][0]:.3g} | {np.median(ubp['rho']):.3g} | {max(ubp['rho']):.3g} | "
                     + " | ".join(_fmt(v, 3) for v in rr) + f" | {0.01 / b:.2g} |")
    bp = sorted(pairs(R, "batch", "batch"), key=lambda p: p[0])
    if len(bp) > 1:
        (b0, _, _, u0), (b1, _, _, u1) = bp[0], bp[-1]
        claims.append((f"the correction ratio does not grow with the batch at a fixed (mean) lr: batch {b0} to {b1}",
                       f"median rho {np.median(u0['rho']):.3g} -> {np.median(u1['rho']):.3g}",
                       "holds" if np.median(u1["rho"]) <= 1.25 * np.median(u0["rho"]) else "does not hold"))
    clip = load("clip")
    if clip:
        lines += ["", "## clip at lr 0.03 (1000 updates, seed 0)", "",
                  "| run | " + " | ".join(f"k={k}" for k in (10, 100, 200, 500, 1000)) + " | max rho | status |",
                  "|---|" + "---:|" * 5 + "---:|---|"]
        for n, r in clip.items():
            s = r["spec"]
            label = "SGD" if s["method"] == "sgd" else f"UBP clip {s.get('clip')}"
            lines.append(f"| {label} | " + " | ".join(_fmt(at(r, k)) for k in (10, 100, 200, 500, 1000))
                         + f" | {max(r['rho']):.3g} | {r['status']} |")
        sgd = next((r for r in clip.values() if r["spec"]["method"] == "sgd"), None)
        for r in clip.values():
            s = r["spec"]
            lo, hi = at(r, 100), at(r, s["updates"])
            if s["method"] == "ubp" and lo and hi and sgd and at(sgd, s["updates"]):
                claims.append((f"thesis 5.5: the correction's explosion controlled by clip={s.get('clip')} "
                               f"(lr 0.03; here: no climb from update 100 to {s['updates']}, and not above SGD)",
                               f"{lo:.2f} at 100, {hi:.2f} at {s['updates']}; SGD {at(sgd, s['updates']):.2f}",
                               "controlled" if hi <= lo and hi <= at(sgd, s["updates"]) else "not controlled"))
    lines += ["", "## The claims, as measured here (computed from the runs on record)", "",
              "| claim | measured | verdict |", "|---|---|---|"]
    lines += [f"| {c} | {m} | {v} |" for c, m, v in claims]
    path = os.path.join(os.path.dirname(OUT), "ubp_long.md")
    kept = ""
    if os.path.exists(path):                 # the hand-written reading below the tables survives a rerun
        with open(path) as f:
            old = f.read()
        if READING in old:
            kept = "\n" + old[old.index(READING):]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n" + kept)
    _figure(R)
    print("\n".join(lines))


def _cpu():
    try:
        with open("/proc/cpuinfo") as f:
            name = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        name = "unknown CPU"
    import numpy
    cfg = numpy.show_config(mode="dicts") if hasattr(numpy, "show_config") else {}
    blas = cfg.get("Build Dependencies", {}).get("blas", {}) if isinstance(cfg, dict) else {}
    return f"{name}, BLAS {blas.get('name', '?')} {blas.get('version', '')}".strip()


def _figure(R):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    colors = {"sgd": "tab:blue", "ubp": "tab:orange"}
    for ax, group, title in ((axes[0, 0], "tuned", "each at its tuned lr (SGD 0.28, UBP 0.00439)"),
                             (axes[0, 1], "equal", "both at lr 0.01"),
                             (axes[1, 0], "momentum", "momentum 0.9, lr 0.001")):
        for r in R.values():
            s = r["spec"]
            if s["group"] != group:
                continue
            k = [e[0] for e in r["evals"] if e[0] > 0]
            v = [e[2] for e in r["evals"] if e[0] > 0]
            ax.plot(k, v, color=colors[s["method"]], alpha=0.8, ls=("-", "--", ":")[s["seed"] % 3],
                    label=f"{s['method'].upper()} seed {s['seed']}")
        ax.set(xscale="log", yscale="log", xlabel="updates", ylabel="training loss (5000-image subset)",
               title=title)
        ax.legend(fontsize=7)
    ax = axes[1, 1]
    for r in R.values():
        s = r["spec"]
        if s["group"] == "batch" and s["method"] == "ubp":
            ax.plot(np.arange(1, len(r["rho"]) + 1), r["rho"], label=f"batch {s['batch']}")
    ax.set(xscale="log", yscale="log", xlabel="updates", ylabel="rho = max_l ||C|| / ||B||",
           title="UBP's correction ratio at lr 0.01 against batch size")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(os.path.dirname(OUT), "ubp_long.png"), dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", default=None, help="comma-separated groups or run names")
    ap.add_argument("--rerun", action="store_true")
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--updates", type=int, default=None, help="override every run's updates (smoke tests)")
    a = ap.parse_args()
    if a.report:
        return report()
    if a.updates:
        for spec in RUNS.values():
            spec["updates"] = a.updates
    if a.one:
        X = load_images()
        Xeval = X[np.random.default_rng(2).choice(len(X), 5000, replace=False)]
        res = run_one(a.one, RUNS[a.one], X, Xeval)
        os.makedirs(OUT, exist_ok=True)
        _save(os.path.join(OUT, a.one + ".json"), res)
        print(f"{a.one}: {res['status']}, final {res['evals'][-1]}, {res['cpu_s']:.0f} s", flush=True)
        return
    names = list(RUNS)
    if a.only:
        want = set(a.only.split(","))
        names = [n for n in names if n in want or RUNS[n]["group"] in want]
        if not names:
            raise SystemExit(f"--only {a.only}: no such group or run; groups: "
                             f"{sorted({s['group'] for s in RUNS.values()})}")
    drive(names, a.workers, a.rerun, ("--updates", str(a.updates)) if a.updates else ())


if __name__ == "__main__":
    main()
