"""Data-parallel scaling on this machine (issue 19): steps/s of SGD and KFAC on
the MNIST autoencoder (784-1000-500-250-30-250-500-1000-784, float32, global
batch 200) in one process and on 2 MPI ranks; the bytes each step sends,
measured by the communicator's account, against the analytic count; and
MPI_Allreduce throughput from 1 KB to 64 MB.

    python benchmarks/mpi_scaling.py [--steps 100] [--out benchmarks/results/mpi_scaling.md]

Each configuration runs in its own `mpirun -n P` child, one after another:
  P=1, 1 thread     the reference (the same work as each of 2 ranks' halves, twice)
  P=1, 2 threads    one process using both cores through BLAS
  P=2, 1 thread     two ranks, 100 rows each, one BLAS thread each
Inputs are uniform random pixels (the step's cost does not depend on them).
KFAC runs with its defaults (statistics every 10 updates, inverses every
T = 100): the timed window holds 10 statistics steps and one inversion step.

Analytic count per rank (numbers; float32 network, float64 factors):
  gradient   |theta| float32 + the loss (one float64), every step
  factors    sum over layers ((i+1)(i+2) + o(o+1)) / 2 float64, every stats step
  inverses   the same triangles in float32, broadcast by their owner rank
             (layer j by rank j mod P), every T steps: summed over the ranks
  trust-region  one float64 per step (KFAC's q from the batch-route layers)
  control    3 float64 per step (stop signals / budgets agreed) and 2 per evaluation
             (in tinynet.train only; this script times bare optimizer steps)
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = [784, 1000, 500, 250, 30, 250, 500, 1000, 784]
BATCH = 200


def _tri(d):
    return d * (d + 1) // 2


def analytic(n_params, T_steps, stats_steps, inv_steps):
    layers = list(zip(SIZES[:-1], SIZES[1:]))
    factors = 8 * sum(_tri(i + 1) + _tri(o) for i, o in layers)
    inverses = 4 * sum(_tri(i + 1) + _tri(o) for i, o in layers)
    return dict(gradient=4 * n_params + 8, factors=factors, inverses=inverses, **{"trust-region": 8})


# -- children (under mpirun) ---------------------------------------------------------------------
def child_steps(method, steps, warmup):
    from tinynet.distributed import get_comm
    from tinynet.models import mnist_autoencoder
    from tinynet.optim import build_optimizer
    comm = get_comm("mpi")
    net = mnist_autoencoder(dtype=np.float32, seed=0)
    net.comm = comm
    opt = build_optimizer(method, net, None)
    X = np.random.default_rng(0).uniform(0, 1, (BATCH, 784)).astype(np.float32)
    b = BATCH // comm.size
    Xs = np.ascontiguousarray(X[comm.rank * b:(comm.rank + 1) * b])
    for _ in range(warmup):
        opt.step(Xs, Xs)
        comm.account.end_step()
    comm.account.reset()
    comm.barrier()
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.step(Xs, Xs)
        comm.account.end_step()
    comm.barrier()
    dt = time.perf_counter() - t0
    acc = comm.account
    mine = dict(total=acc.total, steps_with=acc.steps_with, calls=acc.calls)
    every = comm.comm.gather(mine, root=0) if comm.size > 1 else [mine]
    if comm.rank == 0:
        print("RESULT " + json.dumps(dict(method=method, ranks=comm.size, steps=steps, seconds=dt,
                                          steps_per_s=steps / dt, n_params=net.n_params, accounts=every)))


def child_allreduce():
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    rows = []
    for nbytes in [2 ** k for k in range(10, 27, 2)]:          # 1 KB .. 64 MB
        buf = np.ones(nbytes // 4, dtype=np.float32)
        reps = max(3, min(200, int(2e8 // nbytes)))
        comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)          # warm-up
        times = []
        for _ in range(reps):
            comm.Barrier()
            t0 = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            times.append(time.perf_counter() - t0)
        t = float(np.median(times))
        p = comm.Get_size()
        rows.append(dict(bytes=nbytes, reps=reps, seconds=t, algbw=nbytes / t / 1e9,
                         busbw=2 * (p - 1) / p * nbytes / t / 1e9))
    if comm.Get_rank() == 0:
        print("RESULT " + json.dumps(rows))


# -- driver ----------------------------------------------------------------------------------------
def mpirun(n, threads, *args, timeout=1800):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               NUMBA_NUM_THREADS=str(threads), PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = ["mpirun", "-n", str(n), "--oversubscribe", "--bind-to", "none", sys.executable, os.path.abspath(__file__),
           *args]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stderr[-3000:]}")
    line = next(l for l in p.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "mpi_scaling.md"))
    ap.add_argument("--child", choices=["steps", "allreduce"])
    ap.add_argument("--method", default="sgd")
    a = ap.parse_args()
    if a.child == "steps":
        return child_steps(a.method, a.steps, a.warmup)
    if a.child == "allreduce":
        return child_allreduce()

    from tinynet.train.environment import describe
    env = describe()
    runs = []
    for method in ("sgd", "kfac"):
        for n, threads in ((1, 1), (1, 2), (2, 1)):
            r = mpirun(n, threads, "--child", "steps", "--method", method, "--steps", str(a.steps),
                       "--warmup", str(a.warmup))
            r["threads"] = threads
            runs.append(r)
            print(f"{method} P={n} threads={threads}: {r['steps_per_s']:.2f} steps/s", flush=True)
    ar = mpirun(2, 1, "--child", "allreduce")

    lines = ["# Data-parallel scaling on one machine (issue 19)", "",
             f"`python benchmarks/mpi_scaling.py --steps {a.steps}`; CPU {env.get('cpu')}, "
             f"{os.cpu_count()} cores, BLAS {env.get('blas')}; "
             f"MNIST autoencoder, float32, global batch {BATCH}, {a.steps} timed steps after {a.warmup}.", "",
             "## Steps per second", "",
             "| method | P=1, 1 thread | P=1, 2 threads | P=2 ranks x 1 thread | P=2 / (P=1, 1 thread) | P=2 / (P=1, 2 threads) |",
             "|---|---|---|---|---|---|"]
    for method in ("sgd", "kfac"):
        r = {(x["ranks"], x["threads"]): x["steps_per_s"] for x in runs if x["method"] == method}
        lines.append(f"| {method} | {r[1, 1]:.2f} | {r[1, 2]:.2f} | {r[2, 1]:.2f} | {r[2, 1] / r[1, 1]:.2f}x | "
                     f"{r[2, 1] / r[1, 2]:.2f}x |")
    lines += ["", "## Bytes per step, measured (P = 2) against the analytic count", "",
              "| method | what | steps it occurs on | measured bytes on such a step (all ranks' payload) | "
              "analytic | per step, amortized |", "|---|---|---|---|---|---|"]
    for r in runs:
        if r["ranks"] != 2:
            continue
        exp = analytic(r["n_params"], None, None, None)
        tags = sorted({t for acc in r["accounts"] for t in acc["total"]})
        for tag in tags:
            k = max(acc["steps_with"].get(tag, 0) for acc in r["accounts"])
            tot = r["accounts"][0]["total"].get(tag, 0)
            if tag == "inverses":            # a broadcast is counted at its root: sum the owners
                tot = sum(acc["total"].get(tag, 0) for acc in r["accounts"])
            per = tot / k if k else 0
            want = exp.get(tag)
            lines.append(f"| {r['method']} | {tag} | {k} of {r['steps']} | {per:,.0f} | "
                         f"{'' if want is None else f'{want:,}'} | {tot / r['steps']:,.0f} |")
    lines += ["", "## MPI_Allreduce (2 ranks, shared memory, float32 sum in place)", "",
              "| bytes | median time | algorithm bandwidth | bus bandwidth 2(P-1)/P |", "|---|---|---|---|"]
    for x in ar:
        lines.append(f"| {x['bytes']:,} | {x['seconds'] * 1e6:,.1f} us | {x['algbw']:.2f} GB/s | {x['busbw']:.2f} GB/s |")
    text = "\n".join(lines) + "\n"
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        f.write(text)
    with open(os.path.splitext(a.out)[0] + ".json", "w") as f:
        json.dump(dict(runs=runs, allreduce=ar, environment=env), f, indent=1)
    print(text)


if __name__ == "__main__":
    main()
