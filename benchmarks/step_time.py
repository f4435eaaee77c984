"""One SGD step on mnist-autoencoder (batch 200, float32): tinynet next to the
same step in PyTorch CPU (same threads) and next to the numpy GEMM-only time of
the step's 23 GEMMs, measured in one run, interleaved, medians over repeats.
Each contender runs in its own child process (PyTorch's OpenMP threads spin
after a parallel region and would slow an OpenBLAS call that follows them in
the same process), in alternating rounds so that machine noise hits all alike.
The ratios are paired: each round's median of one contender over the same
round's median of the other, then the median over rounds (on a shared machine
the step time drifts by 20% between rounds; a ratio within a round drifts less).
Also the peak resident memory of a short training run at batch 200 (a child
process running `tinynet train`-equivalent code).

    python benchmarks/step_time.py [--repeats 15] [--rounds 6] [--out benchmarks/results/step_time.md]

Two tinynet rows: `SGD(net)` as constructed (guard="full": a copy of theta
before the step and a finiteness reduction after it, which PyTorch does not
do) and with guard="inputs", the setting `tinynet train` runs with.

Targets (issue 2): tinynet <= PyTorch; tinynet <= 1.5x GEMM-only; peak memory < 1.5 GB.
Targets (issue 18): tinynet <= 1.2x GEMM-only and <= 0.8x PyTorch.
Reports OPENBLAS_CORETYPE and the BLAS libraries with their kernels (numpy's, and
scipy's, which Numba's np.dot calls): compare runs only with the same setting.
"""
import argparse
import os
import subprocess
import sys
import time

import numpy as np

from bench_env import blas_info, cpu_info, torch_threads  # benchmarks/, next to this script

SIZES = [784, 1000, 500, 250, 30, 250, 500, 1000, 784]
N = 200


def tinynet_step(guard="full"):
    from tinynet.models import mnist_autoencoder
    from tinynet.optim import SGD
    net = mnist_autoencoder(dtype=np.float32, seed=0)
    X = np.random.default_rng(0).uniform(0, 1, (N, 784)).astype(np.float32)
    opt = SGD(net, 0.01)
    opt.guard = guard
    return lambda: opt.step(X, X)


def torch_step():
    import torch
    torch.set_num_threads(torch_threads())
    layers = []
    for i in range(8):
        layers.append(torch.nn.Linear(SIZES[i], SIZES[i + 1]))
        if SIZES[i + 1] != 30:
            layers.append(torch.nn.Sigmoid())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    X = torch.rand(N, 784)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = ((model(X) - X) ** 2).sum(1).mean()
        loss.backward()
        opt.step()
        return loss.item()
    return step


def gemm_only():
    """The step's GEMMs with numpy: forward (8), weight gradients (8), input
    gradients of layers 2..8 (7)."""
    rng = np.random.default_rng(0)
    H = [rng.random((N, s), dtype=np.float32) for s in SIZES]
    W = [rng.random((SIZES[i + 1], SIZES[i]), dtype=np.float32) for i in range(8)]
    gW = [np.empty((SIZES[i], SIZES[i + 1]), np.float32) for i in range(8)]

    def run():
        for i in range(8):
            np.dot(H[i], W[i].T, H[i + 1])
        for i in range(7, -1, -1):
            np.dot(H[i].T, H[i + 1], gW[i])
            if i > 0:
                np.dot(H[i + 1], W[i], H[i])
    flops = sum(2 * N * SIZES[i] * SIZES[i + 1] for i in range(8)) * 2 + \
        sum(2 * N * SIZES[i] * SIZES[i + 1] for i in range(1, 8))
    return run, flops


def peak_memory_mb(steps=30):
    code = (
        "import numpy as np, resource\n"
        "from tinynet.models import mnist_autoencoder\n"
        "from tinynet.optim import SGD\n"
        "from tinynet.data import load_mnist\n"
        "X, _ = load_mnist('train')\n"
        "net = mnist_autoencoder(); opt = SGD(net, 0.01)\n"
        f"for k in range({steps}):\n"
        "    b = X[(k * 200) % 59800:(k * 200) % 59800 + 200]\n"
        "    opt.step(b, b)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        return f"failed: {out.stderr.strip().splitlines()[-1]}"
    return float(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "step_time.md"))
    args = ap.parse_args()

    if args.worker:
        f = {"tinynet": tinynet_step, "tinynet-inputs": lambda: tinynet_step("inputs"), "pytorch": torch_step,
             "gemm": lambda: gemm_only()[0]}[args.worker]()
        for _ in range(5):          # warm-up: compile, caches, thread pools
            f()
        ts = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
        print(" ".join(f"{t:.6f}" for t in ts))
        return

    names = {"tinynet": "tinynet", "tinynet-inputs": "tinynet, guard=inputs (tinynet train)",
             "pytorch": "pytorch", "gemm": "gemm-only (numpy)"}
    rounds = {k: [] for k in names.values()}          # per round: that round's step times
    order = list(names)
    for r in range(args.rounds):
        for w in order[r % len(order):] + order[:r % len(order)]:   # rotated: no contender always follows another
            out = subprocess.run([sys.executable, __file__, "--worker", w, "--repeats", str(args.repeats)],
                                 capture_output=True, text=True, check=True)
            rounds[names[w]].append(np.array([float(t) for t in out.stdout.split()]))
    times = {k: np.concatenate(v) for k, v in rounds.items()}
    flops = gemm_only()[1]
    med = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
    q = {k: (float(np.percentile(v, 25)) * 1e3, float(np.percentile(v, 75)) * 1e3) for k, v in times.items()}

    def ratio(k, ref):
        """Median over rounds of (k's median / ref's median in the same round), and the range."""
        r = [np.median(a) / np.median(b) for a, b in zip(rounds[k], rounds[ref])]
        return float(np.median(r)), float(min(r)), float(max(r))
    G, P = "gemm-only (numpy)", "pytorch"
    mem = peak_memory_mb()

    coretype = os.environ.get("OPENBLAS_CORETYPE", "(unset: auto-detected)")
    lines = [
        "# SGD step time, mnist-autoencoder, batch 200, float32",
        "",
        f"Command: `python benchmarks/step_time.py --repeats {args.repeats} --rounds {args.rounds}` "
        f"(each contender in its own process, {args.rounds} rounds in rotated order); BLAS: {blas_info()}; "
        f"OPENBLAS_CORETYPE={coretype}; OPENBLAS_NUM_THREADS="
        f"{os.environ.get('OPENBLAS_NUM_THREADS', '(unset)')}; PyTorch threads {torch_threads()}; CPU: {cpu_info()}.",
        "",
        "Ratios: the median over rounds of the ratio of the two contenders' medians in each round "
        "(paired), with the range over rounds.",
        "",
        "| what | median ms | IQR ms | x GEMM-only | x PyTorch |",
        "|---|---:|---:|---:|---:|",
    ]
    for k in times:
        (rg, lg, hg), (rp, lp, hp) = ratio(k, G), ratio(k, P)
        lines.append(f"| {k} | {med[k]:.2f} | {q[k][0]:.2f}-{q[k][1]:.2f} | "
                     f"{rg:.2f} ({lg:.2f}-{hg:.2f}) | {rp:.2f} ({lp:.2f}-{hp:.2f}) |")
    lines += ["", f"GEMM FLOPs per step: {flops / 1e9:.3f} GFLOP "
              f"({flops / med[G] / 1e6:.0f} GFLOP/s in the GEMM-only run).",
              f"Peak RSS of a 30-step training run on real MNIST (batch 200): {mem if isinstance(mem, str) else f'{mem:.0f} MB'}.",
              "",
              f"Targets: tinynet <= PyTorch: {'met' if ratio('tinynet', P)[0] <= 1 else 'NOT met'}; "
              f"tinynet <= 1.5x GEMM-only: {'met' if ratio('tinynet', G)[0] <= 1.5 else 'NOT met'}; "
              f"peak memory < 1.5 GB: {'met' if not isinstance(mem, str) and mem < 1536 else 'NOT met'}.",
              ""]
    for k in ("tinynet", "tinynet, guard=inputs (tinynet train)"):
        rg, rp = ratio(k, G)[0], ratio(k, P)[0]
        lines.append(f"Targets (issue 18), {k}: <= 1.2x GEMM-only: {'met' if rg <= 1.2 else 'NOT met'} "
                     f"({rg:.2f}x); <= 0.8x PyTorch: {'met' if rp <= 0.8 else 'NOT met'} ({rp:.2f}x).")
    text = "\n".join(lines)
    print(text)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        fh.write(text + "\n")


if __name__ == "__main__":
    main()
