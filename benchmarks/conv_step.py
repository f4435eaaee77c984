"""One training step of the slides' CIFAR-10 CNN (batch 128, float32):
tinynet's SGD step next to the same step in PyTorch CPU (same threads, same
weights), next to the numpy GEMM-only time of the step's im2col / linear
products, and tinynet's KFAC and UBP steps as ratios to its SGD step, all
measured in one run, interleaved, medians over repeats.

The network (seed 003, the slides' whitening vs batch-norm experiment):
  C6(5x5)-ReLU-MaxPool(2x2)-C16(5x5)-ReLU-Flatten-F84-ReLU-F16-ReLU-F10,
  input (3, 32, 32), softmax cross-entropy; build_model("cifar-cnn") when the
  registry has it, else the same Sequential written here.
Data: one random batch of CIFAR shape (uniform [0, 1) pixels, random labels).

Each contender runs in its own child process (PyTorch's OpenMP threads spin
after a parallel region and would slow an OpenBLAS call that follows them in
the same process), in alternating rounds so that machine noise hits all alike.
KFAC (stats_every=10, T=100) is timed over blocks of `--kfac-steps` (>= 100)
consecutive steps, so its amortized statistics and inversions are in the mean;
each block is one sample. Each worker reports its peak resident memory
(ru_maxrss). `--profile` adds tinynet's per-kernel table (tinynet.backend.Profile)
for one SGD step.

    python benchmarks/conv_step.py [--repeats 30] [--rounds 3] [--kfac-steps 100] [--profile]
                                   [--out benchmarks/results/conv_step.md]

Targets (issue 11): tinynet SGD <= 1.5x PyTorch (then better); KFAC <= 2.5x
tinynet's SGD step. Reports the CPU, the BLAS library and the OpenBLAS kernel
each pool runs (numpy's and scipy's, which Numba's np.dot calls): compare runs
only with the same setting.
"""
import argparse
import os
import resource
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench_env import blas_info, cpu_info, torch_threads  # noqa: E402  (benchmarks/, next to this script)

N = 128
SHAPE = (3, 32, 32)
CLASSES = 10
# (C, O, H, k) of the two convolutions; the linear sizes after them
CONVS = [(3, 6, 32, 5), (6, 16, 14, 5)]
FCS = [1600, 84, 16, 10]


# -------------------------------------------------------------------- the network

def build_net(seed=0):
    """tinynet's cifar-cnn (float32, CPU)."""
    from tinynet.models import MODELS
    if "cifar-cnn" in MODELS:
        from tinynet.models import build_model
        return build_model("cifar-cnn", dtype=np.float32, seed=seed)
    import tinynet as tn
    return tn.Sequential([tn.Conv2d(3, 6, 5), tn.ReLU(), tn.MaxPool2d(2), tn.Conv2d(6, 16, 5), tn.ReLU(),
                          tn.Flatten(), tn.Linear(1600, 84), tn.ReLU(), tn.Linear(84, 16), tn.ReLU(),
                          tn.Linear(16, 10)], tn.SoftmaxCrossEntropyLoss(), input_shape=SHAPE,
                         dtype=np.float32, seed=seed)


def batch(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 1, (N, int(np.prod(SHAPE)))).astype(np.float32)
    Y = rng.integers(0, CLASSES, N)
    return X, Y


def torch_model(net):
    """torch.nn twin of `net` with its weights (flat layout: vec(W) column-major, then b)."""
    import torch
    from tinynet.layers import Conv2d, Linear
    m = torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(6, 16, 5), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(1600, 84), torch.nn.ReLU(), torch.nn.Linear(84, 16), torch.nn.ReLU(),
        torch.nn.Linear(16, 10))
    theta = net.get_flat()
    ours = [(s, net.offsets[i]) for i, s in enumerate(net.layers) if isinstance(s, (Conv2d, Linear))]
    theirs = [t for t in m if isinstance(t, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        for (s, (a, b)), t in zip(ours, theirs):
            o = t.weight.shape[0]
            k = t.weight[0].numel()
            W = theta[a:a + k * o].reshape(k, o).T            # (O, K): column-major vec(W)
            t.weight.copy_(torch.from_numpy(np.ascontiguousarray(W)).reshape(t.weight.shape))
            t.bias.copy_(torch.from_numpy(theta[a + k * o:b].copy()))
    return m


# ------------------------------------------------------------------------ the contenders
def tinynet_step():
    from tinynet.optim import SGD
    net = build_net()
    X, Y = batch()
    opt = SGD(net, 0.01)
    return lambda: opt.step(X, Y)


def kfac_step():
    from tinynet.optim import KFAC
    net = build_net()
    X, Y = batch()
    opt = KFAC(net, stats_every=10, T=100)
    return lambda: opt.step(X, Y)


def ubp_step():
    from tinynet.optim import UBP
    net = build_net()
    X, Y = batch()
    opt = UBP(net, 0.01)
    return lambda: opt.step(X, Y)


def torch_step():
    import torch
    torch.set_num_threads(torch_threads())
    model = torch_model(build_net())
    X, Y = batch()
    Xt = torch.from_numpy(X).reshape(N, *SHAPE)
    Yt = torch.from_numpy(Y)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    lossf = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = lossf(model(Xt), Yt)
        loss.backward()
        opt.step()
        return loss.item()
    return step


def gemm_shapes():
    """(m, k, n) of each product of an SGD step, the convolutions on their
    im2col patch rows (m = N * positions): forward U W^T, weight gradient U^T B,
    input gradient B W (not for the first layer)."""
    fwd, wgrad, igrad = [], [], []
    for i, (C, O, H, k) in enumerate(CONVS):
        m, K = N * (H - k + 1) ** 2, C * k * k
        fwd.append((m, K, O))
        wgrad.append((K, m, O))
        if i > 0:
            igrad.append((m, O, K))
    for a, b in zip(FCS[:-1], FCS[1:]):
        fwd.append((N, a, b))
        wgrad.append((a, N, b))
        igrad.append((N, b, a))
    return fwd, wgrad, igrad


def gemm_only():
    """The step's products with numpy, in tinynet's operand layouts (patch rows
    C-ordered (m, K), the weight gradient as a transposed-operand product)."""
    rng = np.random.default_rng(0)
    fwd, wgrad, igrad = gemm_shapes()
    ops = []
    for (m, k, n) in fwd:
        ops.append((rng.random((m, k), dtype=np.float32), rng.random((k, n), dtype=np.float32),
                    np.empty((m, n), np.float32), False))
    for (k, m, n) in wgrad:        # out (k, n) = A^T B with A (m, k) stored as patch rows
        ops.append((rng.random((m, k), dtype=np.float32), rng.random((m, n), dtype=np.float32),
                    np.empty((k, n), np.float32), True))
    for (m, k, n) in igrad:
        ops.append((rng.random((m, k), dtype=np.float32), rng.random((k, n), dtype=np.float32),
                    np.empty((m, n), np.float32), False))

    def run():
        for A, B, out, ta in ops:
            np.dot(A.T if ta else A, B, out)
    flops = sum(2 * m * k * n for (m, k, n) in fwd + igrad) + sum(2 * m * k * n for (k, m, n) in wgrad)
    return run, flops


WORKERS = {"tinynet": tinynet_step, "pytorch": torch_step, "gemm": lambda: gemm_only()[0],
           "kfac": kfac_step, "ubp": ubp_step}
NAMES = {"tinynet": "tinynet SGD", "pytorch": "PyTorch SGD", "gemm": "GEMM-only (numpy)",
         "kfac": "tinynet KFAC (amortized)", "ubp": "tinynet UBP"}


def worker(name, repeats, block):
    """Prints 'T t1 t2 ...' (seconds per step) and 'RSS <MB>', or 'ERROR <text>'."""
    try:
        f = WORKERS[name]()
        for _ in range(5):          # warm-up: compile, caches, thread pools
            f()
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(block):
                f()
            ts.append((time.perf_counter() - t0) / block)
    except Exception as e:     # the row stays in the table with the error
        print(f"ERROR {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        return
    print("T " + " ".join(f"{t:.6f}" for t in ts))
    print(f"RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}")


def same_loss():
    """First-step loss of tinynet and of the PyTorch twin on the benchmark batch
    (checks that the same network and weights are compared)."""
    import torch
    net = build_net()
    X, Y = batch()
    a = float(net.loss(X, Y))
    with torch.no_grad():
        b = float(torch.nn.functional.cross_entropy(
            torch_model(net)(torch.from_numpy(X).reshape(N, *SHAPE)), torch.from_numpy(Y)))
    return a, b


def profile_rows(steps=20):
    """Per-kernel seconds per SGD step (tinynet.backend.Profile), after warm-up."""
    from tinynet.backend import Profile
    from tinynet.optim import SGD
    net = build_net()
    X, Y = batch()
    opt = SGD(net, 0.01)
    for _ in range(5):
        opt.step(X, Y)
    net.bk.profile = Profile()
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.step(X, Y)
    wall = (time.perf_counter() - t0) / steps
    rows = net.bk.profile.rows()
    net.bk.profile = None
    return rows, wall, steps


# ------------------------------------------------------------------------ main
def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30, help="timed steps per round (SGD, PyTorch, GEMM, UBP)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--kfac-steps", type=int, default=100, help="KFAC steps per timed block (>= T = 100)")
    ap.add_argument("--only", default="tinynet,pytorch,gemm,kfac,ubp",
                    help="comma-separated contenders (default: all)")
    ap.add_argument("--profile", action="store_true", help="add tinynet's per-kernel table")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--block", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "conv_step.md"))
    args = ap.parse_args()

    if args.worker:
        worker(args.worker, args.repeats, args.block)
        return

    which = [w for w in args.only.split(",") if w]
    times = {w: [] for w in which}
    rss, errors = {}, {}
    for _ in range(args.rounds):
        for w in which:
            if w in errors:
                continue
            reps, block = (1, args.kfac_steps) if w == "kfac" else (args.repeats, 1)
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", w,
                                  "--repeats", str(reps), "--block", str(block)],
                                 capture_output=True, text=True)
            lines = out.stdout.strip().splitlines()
            err = next((ln[6:] for ln in lines if ln.startswith("ERROR ")), None)
            if out.returncode != 0 or err is not None:
                errors[w] = err or (out.stderr.strip().splitlines() or ["exit %d" % out.returncode])[-1]
                continue
            for ln in lines:
                if ln.startswith("T "):
                    times[w] += [float(t) for t in ln[2:].split()]
                elif ln.startswith("RSS "):
                    rss[w] = max(rss.get(w, 0.0), float(ln[4:]))

    med = {w: float(np.median(v)) * 1e3 for w, v in times.items() if v}
    q = {w: (float(np.percentile(v, 25)) * 1e3, float(np.percentile(v, 75)) * 1e3) for w, v in times.items() if v}
    fwd, wgrad, igrad = gemm_shapes()
    flops = gemm_only()[1]
    try:
        la, lb = same_loss()
        check = f"first-step loss tinynet {la:.6f}, PyTorch {lb:.6f} (same weights)"
    except Exception as e:
        check = f"loss check failed: {type(e).__name__}: {e}"

    def ratio(w, ref):
        return f"{med[w] / med[ref]:.2f}" if w in med and ref in med else "-"

    cmd = f"python benchmarks/conv_step.py --repeats {args.repeats} --rounds {args.rounds} --kfac-steps {args.kfac_steps}"
    if args.only != ap.get_default("only"):
        cmd += f" --only {args.only}"
    if args.profile:
        cmd += " --profile"
    coretype = os.environ.get("OPENBLAS_CORETYPE", "(unset: auto-detected)")
    lines = [
        "# Training step time, the slides' CIFAR-10 CNN, batch 128, float32",
        "",
        "C6(5x5)-ReLU-MaxPool(2x2)-C16(5x5)-ReLU-Flatten-F84-ReLU-F16-ReLU-F10, input (3, 32, 32), "
        "softmax cross-entropy, one random batch of CIFAR shape.",
        "",
        f"Command: `{cmd}` (each contender in its own process, {args.rounds} alternating rounds; KFAC "
        f"stats_every=10, T=100, one sample = the mean of {args.kfac_steps} consecutive steps).",
        f"CPU: {cpu_info()}. BLAS: {blas_info()}; OPENBLAS_CORETYPE={coretype}; "
        f"PyTorch threads {torch_threads()}.",
        "",
        "| what | median ms | IQR ms | samples | x tinynet SGD | x PyTorch | x GEMM-only | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for w in which:
        if w in errors:
            lines.append(f"| {NAMES[w]} | error: {errors[w]} | | | | | | |")
            continue
        if w not in med:
            continue
        lines.append(f"| {NAMES[w]} | {med[w]:.2f} | {q[w][0]:.2f}-{q[w][1]:.2f} | {len(times[w])} | "
                     f"{ratio(w, 'tinynet')} | {ratio(w, 'pytorch')} | {ratio(w, 'gemm')} | {rss.get(w, 0):.0f} |")
    lines += ["", f"GEMM-only: {len(fwd) + len(wgrad) + len(igrad)} products, {flops / 1e9:.3f} GFLOP per step "
              f"(forward {sum(2 * a * b * c for a, b, c in fwd) / 1e9:.3f}, weight gradients "
              f"{sum(2 * a * b * c for a, b, c in wgrad) / 1e9:.3f}, input gradients "
              f"{sum(2 * a * b * c for a, b, c in igrad) / 1e9:.3f})"
              + (f", {flops / med['gemm'] / 1e6:.1f} GFLOP/s in the GEMM-only run." if "gemm" in med else "."),
              f"Check: {check}.", ""]
    t = []
    if "tinynet" in med and "pytorch" in med:
        t.append(f"tinynet SGD <= 1.5x PyTorch: {'met' if med['tinynet'] <= 1.5 * med['pytorch'] else 'NOT met'} "
                 f"({med['tinynet'] / med['pytorch']:.2f}x)")
    if "kfac" in med and "tinynet" in med:
        t.append(f"KFAC <= 2.5x tinynet SGD: {'met' if med['kfac'] <= 2.5 * med['tinynet'] else 'NOT met'} "
                 f"({med['kfac'] / med['tinynet']:.2f}x)")
    elif "kfac" in errors:
        t.append("KFAC <= 2.5x tinynet SGD: not measured (KFAC raised)")
    if t:
        lines.append("Targets (issue 11): " + "; ".join(t) + ".")

    if args.profile:
        rows, wall, steps = profile_rows()
        total = sum(r["total_s"] for r in rows) / steps
        lines += ["", f"## tinynet SGD step by kernel (tinynet.backend.Profile, mean of {steps} steps)", "",
                  f"Step {wall * 1e3:.2f} ms with the profile on; kernels {total * 1e3:.2f} ms, the rest "
                  f"(Python, allocation) {(wall - total) * 1e3:.2f} ms.", "",
                  "| kernel | calls / step | ms / step | GFLOP/s | GB/s |", "|---|---:|---:|---:|---:|"]
        for r in rows:
            lines.append(f"| {r['kernel']} | {r['calls'] / steps:.0f} | {r['total_s'] / steps * 1e3:.3f} | "
                         f"{r['gflops']:.1f} | {r['gbytes']:.1f} |")

    text = "\n".join(lines)
    print(text)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        fh.write(text + "\n")


if __name__ == "__main__":
    main()
