"""Is kernel timing free when off? The optimizer step (mnist-autoencoder,
batch 200, float32, CPU) with the backend before the timing hook moved to
tinynet/backend_base.py (issue 18) next to the same step after it, timing off,
and after it with a Profile attached (the cost of profiling), measured in one
run: each contender in its own child process (PYTHONPATH = its source tree),
many short alternating rounds, so that the machine's load (2 shared cores)
hits every contender alike; per contender the median, the 10th percentile and
the minimum over all timed steps (the low percentiles are the least disturbed
by other processes; KFAC's amortized steps sit in the upper tail). The main
figure is paired in one process (`paired_worker`): the same optimizer stepped
alternately through the old and the new CPUBackend class, which the load
cannot tell apart.

    python benchmarks/timing_overhead.py [--paired-rounds 20] [--repeats 15] [--rounds 4] [--optimizers sgd,kfac]

The trees: "before" is `git archive HEAD` (read-only: no git state changes);
"after" is that same tree with this change's files copied over it from the
working tree (CHANGED below), so that nothing else in the working tree (other
work in progress) enters the comparison. --before / --after take other trees.
Threads: OMP_NUM_THREADS / OPENBLAS_NUM_THREADS as set by the caller (the
table says which).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHANGED = ["tinynet/backend.py", "tinynet/backend_base.py", "tinynet/cuda_backend.py",
           "tinynet/profiler.py", "tinynet/optim/stats.py"]
N = 200


def _old_backend_module(before_tree):
    """The `before` tree's tinynet/backend.py as a module of its own (over this
    process's kernels): its CPUBackend is the class before the change."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("tinynet_backend_before",
                                                  os.path.join(before_tree, "tinynet", "backend.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def dispatch_worker(before_tree, rounds=30, calls=50_000):
    """Nanoseconds per call of the backend's dispatch path with timing off:
    bk.scale on a 1-element vector (the kernel itself is a few ns), through this
    tree's CPU backend and the `before` tree's, alternately in one process,
    `rounds` loops of `calls` calls each. Prints the medians (after, before) and
    the median of the paired differences. The per-step cost of the hook is that
    difference times the kernel calls of a step."""
    from tinynet.backend import get_backend
    bks = {"after": get_backend("cpu"), "before": _old_backend_module(before_tree).CPUBackend()}
    x = np.ones(1, np.float32)

    def loop(bk):
        t0 = time.perf_counter()
        for _ in range(calls):
            bk.scale(1.0, x)
        return (time.perf_counter() - t0) / calls
    for bk in bks.values():
        loop(bk)
    res = []
    for r in range(rounds):
        order = ("after", "before") if r % 2 == 0 else ("before", "after")
        t = {name: loop(bks[name]) for name in order}
        res.append((t["after"], t["before"]))
    res = np.array(res)
    print(f"{np.median(res[:, 0]):.9f} {np.median(res[:, 1]):.9f} {np.median(res[:, 0] - res[:, 1]):.9f}")


def paired_worker(optimizer, before_tree, rounds, steps, warmup):
    """Paired in one process (so that the machine's load drifts alike for both):
    one network and optimizer, stepped alternately through the CPU backend of
    this tree and the CPUBackend class of the `before` tree's backend.py
    (loaded as a module of its own over the same kernels), `steps` steps each,
    in `rounds` rounds of alternating order. Prints one line per round: the
    median step time after, before."""
    from tinynet.models import mnist_autoencoder
    from tinynet.optim import build_optimizer
    old_mod = _old_backend_module(before_tree)
    net = mnist_autoencoder(dtype=np.float32, seed=0)
    opt = build_optimizer(optimizer, net, None, defaults={"seed": 0})
    backends = {"after": net.bk, "before": old_mod.CPUBackend()}
    assert type(backends["before"]).__module__ == "tinynet_backend_before"
    rng = np.random.default_rng(0)
    batches = [rng.uniform(0, 1, (N, 784)).astype(np.float32) for _ in range(8)]
    k = 0

    def run(name, count):
        nonlocal k
        bk = backends[name]
        net.bk = opt.bk = bk
        net._bind()
        ts = []
        for _ in range(count):
            X = batches[k % len(batches)]
            k += 1
            t0 = time.perf_counter()
            opt.step(X, X)
            ts.append(time.perf_counter() - t0)
        return ts
    run("after", warmup)
    run("before", warmup)
    for r in range(rounds):
        order = ("after", "before") if r % 2 == 0 else ("before", "after")
        res = {name: float(np.median(run(name, steps))) for name in order}
        print(f"{res['after']:.6f} {res['before']:.6f}", flush=True)


def worker(optimizer, profiled, repeats, warmup):
    from tinynet.models import mnist_autoencoder
    from tinynet.optim import build_optimizer
    net = mnist_autoencoder(dtype=np.float32, seed=0)
    opt = build_optimizer(optimizer, net, None, defaults={"seed": 0})
    rng = np.random.default_rng(0)
    batches = [rng.uniform(0, 1, (N, 784)).astype(np.float32) for _ in range(8)]
    if profiled:
        from tinynet.backend import Profile
        net.bk.profile = Profile()
    ts = []
    for k in range(warmup + repeats):
        X = batches[k % len(batches)]
        t0 = time.perf_counter()
        opt.step(X, X)
        if k >= warmup:
            ts.append(time.perf_counter() - t0)
    print(" ".join(f"{t:.6f}" for t in ts))


def make_trees(base):
    before, after = os.path.join(base, "before"), os.path.join(base, "after")
    for d in (before, after):
        os.makedirs(d)
        arch = subprocess.run(["git", "-C", ROOT, "archive", "HEAD"], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", d], input=arch, check=True)
    for f in CHANGED:
        shutil.copy(os.path.join(ROOT, f), os.path.join(after, f))
    return before, after


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--paired-rounds", type=int, default=20)
    ap.add_argument("--optimizers", default="sgd,kfac")
    ap.add_argument("--before", help="source tree before the change (default: git archive HEAD)")
    ap.add_argument("--after", help="source tree after it (default: HEAD + the changed files)")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "timing_overhead.md"))
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        if args.worker[0] == "paired":
            paired_worker(args.worker[1], os.environ["TIMING_BEFORE_TREE"], args.rounds, args.repeats,
                          args.warmup)
        elif args.worker[0] == "dispatch":
            dispatch_worker(os.environ["TIMING_BEFORE_TREE"])
        else:
            worker(args.worker[0], args.worker[1] == "on", args.repeats, args.warmup)
        return

    tmp = None
    if args.before is None or args.after is None:
        tmp = tempfile.mkdtemp(prefix="tinynet-timing-")
        before, after = make_trees(tmp)
    before = args.before or before
    after = args.after or after
    contenders = {"before, timing off": (before, "off"), "after, timing off": (after, "off"),
                  "after, profile attached": (after, "on")}
    opts = args.optimizers.split(",")
    times = {(o, c): [] for o in opts for c in contenders}
    paired = {}
    try:
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", "dispatch", "off"],
                             capture_output=True, text=True, cwd=after, check=True,
                             env=dict(os.environ, PYTHONPATH=after, TIMING_BEFORE_TREE=before))
        da, db, dd = (float(v) for v in out.stdout.split())
        for o in opts:
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", "paired", o,
                                  "--rounds", str(args.paired_rounds), "--repeats", "5", "--warmup", "3"],
                                 capture_output=True, text=True, cwd=after,
                                 env=dict(os.environ, PYTHONPATH=after, TIMING_BEFORE_TREE=before))
            if out.returncode != 0:
                raise SystemExit(f"paired {o} failed:\n{out.stderr}")
            paired[o] = np.array([[float(v) for v in line.split()] for line in out.stdout.split("\n") if line])
        for _ in range(args.rounds):
            for o in opts:
                for c, (tree, mode) in contenders.items():
                    env = dict(os.environ, PYTHONPATH=tree)
                    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", o, mode,
                                          "--repeats", str(args.repeats), "--warmup", str(args.warmup)],
                                         capture_output=True, text=True, env=env, cwd=tree)
                    if out.returncode != 0:
                        raise SystemExit(f"{c} {o} failed:\n{out.stderr}")
                    times[o, c] += [float(t) for t in out.stdout.split()]
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    threads = os.environ.get("OMP_NUM_THREADS", "(unset)"), os.environ.get("OPENBLAS_NUM_THREADS", "(unset)")
    lines = ["# Kernel timing when off: step time before and after the timing hook moved to backend_base.py",
             "",
             f"Command: `python benchmarks/timing_overhead.py --paired-rounds {args.paired_rounds} "
             f"--rounds {args.rounds} --repeats {args.repeats} --optimizers {args.optimizers}`; "
             f"mnist-autoencoder, batch 200, float32, CPU; "
             f"OMP_NUM_THREADS={threads[0]}, OPENBLAS_NUM_THREADS={threads[1]}, "
             f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}; {os.cpu_count()} cores "
             f"(shared: load average {os.getloadavg()[0]:.1f} at the end).",
             "",
             "## Paired in one process (the main figure)",
             "",
             "The same network and optimizer stepped alternately through the CPU backend after the change "
             "and the CPUBackend class of the tree before it (its backend.py loaded as a module of its own, "
             f"over the same kernels): {args.paired_rounds} rounds of 5 steps each, in alternating order; per "
             "round the ratio of the two median steps.",
             "",
             "| optimizer | after ms (median of rounds) | before ms | after / before: median | IQR of the ratios |",
             "|---|---:|---:|---:|---:|"]
    for o, pr in paired.items():
        ratio = pr[:, 0] / pr[:, 1]
        lines.append(f"| {o} | {np.median(pr[:, 0]) * 1e3:.2f} | {np.median(pr[:, 1]) * 1e3:.2f} | "
                     f"{np.median(ratio):.3f} | {np.percentile(ratio, 25):.3f}-{np.percentile(ratio, 75):.3f} |")
    lines += ["", "## Dispatch cost per kernel call, timing off",
              "", "bk.scale on a 1-element vector through both CPUBackend classes alternately in one process, "
              f"30 rounds of 50,000 calls: after {da * 1e9:.0f} ns, before {db * 1e9:.0f} ns (medians); median "
              f"paired difference {dd * 1e9:+.0f} ns a call. An SGD step of the autoencoder makes about 55 kernel "
              f"calls: {dd * 55 * 1e3:+.4f} ms a step.",
              "", "## Separate processes",
              "", f"Whole trees, each contender in its own process, {args.rounds} alternating rounds of "
              f"{args.repeats} steps (more exposed to the machine's load than the paired figure):", "",
              "| optimizer | contender | median ms | p10 ms | min ms | x before (median) | x before (p10) | x before (min) |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for o in opts:
        ref = np.array(times[o, "before, timing off"])
        if not ref.size:
            continue
        for c in contenders:
            t = np.array(times[o, c])
            st = [np.median(t), np.percentile(t, 10), t.min()]
            rf = [np.median(ref), np.percentile(ref, 10), ref.min()]
            lines.append(f"| {o} | {c} | " + " | ".join(f"{v * 1e3:.2f}" for v in st) + " | "
                         + " | ".join(f"{a / b:.3f}" for a, b in zip(st, rf)) + " |")
    lines += ["", "Target (issue 18): after, timing off = before (ratio 1.00 within the machine's noise)."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
