"""Curvature speed: dense Hessian assembly against torch.func.hessian, and the
matrix-free Hessian-vector product against one gradient.

  1. Dense H of the batch-mean loss (float64, tanh MLPs with softmax-CE, batch 32)
     for a ~500- and a ~5,000-parameter network: tinynet.curvature.hessian vs
     torch.func.hessian of the same function (tests/torch_ref.py mirror); the
     two matrices are compared (max relative difference).
  2. mnist-autoencoder, batch 200, float32: hvp and gvp time as a multiple of
     one gradient (net.loss_and_gradient), the three timed in interleaved rounds
     so that load on the shared machine hits them alike.

  3. Exact block assembly (tinynet.curvature.hessian_block / gauss_newton_block,
     issue 17), float64, batch 32: on the ~5,000-parameter net, each diagonal
     block, one off-diagonal block and all diagonal blocks (diagonal_blocks)
     against the dense route (curvature.hessian, then slicing) and
     torch.func.hessian of the loss as a function of that one layer's
     parameters; on cifar-mlp (torch: from the layer's input, forward-over-
     reverse products vmapped over chunks of 512 directions) (379,010 parameters, full H refused by the
     guard) one 10,100-parameter hidden block, the same torch reference, and
     one block-diagonal Gauss-Newton step (GaussNewton(structure="block", large_blocks="cg"):
     eight blocks assembled, the 307,300-parameter first block by CG).
  4. Top-10 Hessian eigenvalues of mnist-autoencoder (float64, batch 100):
     scipy eigsh (Lanczos) over tinynet's hvp, the same eigsh over a
     torch.func hvp (forward-over-reverse of the torch mirror), and, when the
     pyhessian package imports, PyHessian's power iteration with deflation
     (top_n=10, maxIter=50 to keep the run short, its default tol=1e-3) on an
     nn.Sequential mirror.

Medians over repeats; ratios measured in this run only. Writes
benchmarks/results/curvature.md and curvature.png (and curvature_blocks.png,
curvature_spectrum.png).
Usage: python benchmarks/curvature.py [--quick] [--threads N] [--no-spectrum]

--threads (default 1) sets the BLAS threads (OPENBLAS_NUM_THREADS, before numpy
is imported) and torch's threads alike. One thread is the default because on
the shared 2-core machine multi-threaded BLAS and OpenMP spin-wait against the
other jobs, which scrambles wall-time ratios (runs with 2 threads gave hvp /
gradient anywhere from 1.4x to 2.9x; with 1 thread the ratio is steady).
"""
import os
import platform
import sys
import time

THREADS = int(sys.argv[sys.argv.index("--threads") + 1]) if "--threads" in sys.argv else 1
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(THREADS)

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import torch  # noqa: E402

from tinynet import curvature as cv  # noqa: E402
from tinynet.losses import SoftmaxCrossEntropyLoss  # noqa: E402
from tinynet.models import build_model, mlp  # noqa: E402
from torch_ref import theta_of, torch_loss_fn  # noqa: E402

torch.set_num_threads(THREADS)

DENSE_NETS = {"~500 params": [16, 20, 8, 4], "~5,000 params": [40, 64, 32, 10]}


def timed(fn):
    t = time.perf_counter()
    r = fn()
    return time.perf_counter() - t, r


def timed_cpu(fn):
    """(wall seconds, CPU seconds of this process): on a shared machine the CPU
    time is less disturbed by the other jobs than the wall time."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def dense_rows(repeats):
    rows = []
    for name, sizes in DENSE_NETS.items():
        net = mlp(sizes, "tanh", SoftmaxCrossEntropyLoss(), dtype=np.float64, seed=0)
        rng = np.random.default_rng(0)
        X = rng.standard_normal((32, sizes[0]))
        Y = rng.integers(0, sizes[-1], 32)
        f, th = torch_loss_fn(net, X, Y), theta_of(net)
        hess = torch.func.hessian(f)
        H_t = hess(th).numpy()                 # warm-up (first call compiles)
        H_n = cv.hessian(net, X, Y)
        tn, tt = [], []
        for _ in range(repeats):               # interleaved
            tn.append(timed(lambda: cv.hessian(net, X, Y))[0])
            tt.append(timed(lambda: hess(th))[0])
        diff = np.abs(H_n - H_t).max() / np.abs(H_t).max()
        rows.append(dict(name=name, sizes=sizes, P=net.n_params, tinynet=np.median(tn),
                         torch=np.median(tt), diff=diff))
        print(f"dense H {name} ({net.n_params} params): tinynet {np.median(tn) * 1e3:.1f} ms, "
              f"torch {np.median(tt) * 1e3:.1f} ms, max rel diff {diff:.1e}", flush=True)
    return rows


def hvp_rows(rounds):
    net = build_model("mnist-autoencoder", dtype=np.float32, seed=0)
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (200, 784)).astype(np.float32)
    v = rng.standard_normal(net.n_params).astype(np.float32)
    fns = {"gradient": lambda: net.loss_and_gradient(X, X),
           "hvp": lambda: cv.hvp(net, X, X, v),
           "gvp": lambda: cv.gvp(net, X, X, v)}
    for f in fns.values():
        f()
    times = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            w, c = timed_cpu(f)
            times[k].append(w)
            cpu[k].append(c)
    g, gc = np.array(times["gradient"]), np.array(cpu["gradient"])
    out = {k: dict(median=np.median(t), ratio=np.median(t) / np.median(g),
                   round_ratio=np.median(np.array(t) / g),
                   cpu=np.median(cpu[k]), cpu_ratio=np.median(cpu[k]) / np.median(gc)) for k, t in times.items()}
    for k, r in out.items():
        print(f"{k}: {r['median'] * 1e3:.1f} ms = {r['ratio']:.2f} x gradient "
              f"(median of per-round ratios {r['round_ratio']:.2f}; CPU time {r['cpu'] * 1e3:.1f} ms = "
              f"{r['cpu_ratio']:.2f} x)", flush=True)
    return out, net.n_params


def median_time(fn, repeats):
    fn()                                          # warm-up (Numba compiles, torch traces)
    return float(np.median([timed(fn)[0] for _ in range(repeats)]))


def torch_layer_hessian(net, X, Y, s):
    """torch.func.hessian of the batch-mean loss as a function of theta[s] only."""
    f, th = torch_loss_fn(net, X, Y), theta_of(net).detach()
    pre, post = th[:s.start], th[s.stop:]
    hess = torch.func.hessian(lambda x: f(torch.cat([pre, x, post])))
    return hess, th[s].clone()


def torch_layer_hessian_from_input(net, X, Y, i, chunk=512):
    """For a big layer (net.layers[i], a Linear of an MLP with softmax-CE):
    torch.func's Hessian of the loss as a function of that layer's parameters,
    with the layer's input computed once (the stages below do not depend on
    them), as forward-over-reverse products vmapped over chunks of `chunk`
    unit vectors (torch.func.hessian = jacfwd(jacrev) vmaps all p at once).
    Differentiating the full-theta function instead made every stage below
    the layer batched over the directions (over 20 min for 10,100 directions
    here)."""
    from tinynet.layers import Linear, ReLU
    _, ctxs = net.forward_ctx(X)
    H0 = torch.tensor(np.asarray(ctxs[i][0], dtype=np.float64))       # the layer's input rows
    th = theta_of(net).detach()
    lab = torch.tensor(np.asarray(Y))
    s = net.layers[i]
    a, b = net.offsets[i]

    def f(x):
        h = H0 @ x[:s.n_in * s.n_out].reshape(s.n_in, s.n_out) + x[s.n_in * s.n_out:]
        for st, (a2, b2) in zip(net.layers[i + 1:], net.offsets[i + 1:]):
            if isinstance(st, Linear):
                k = st.n_in * st.n_out
                h = h @ th[a2:a2 + k].reshape(st.n_in, st.n_out) + th[a2 + k:b2]
            elif isinstance(st, ReLU):
                h = torch.relu(h)
            else:
                raise NotImplementedError(repr(st))
        return -torch.log_softmax(h, 1)[torch.arange(h.shape[0]), lab].mean()
    grad = torch.func.grad(f)
    x = th[a:b].clone()
    p = x.shape[0]
    hv = torch.func.vmap(lambda u: torch.func.jvp(grad, (x,), (u,))[1])
    out = np.empty((p, p))
    for c in range(0, p, chunk):
        e = min(p, c + chunk)
        E = torch.zeros((e - c, p), dtype=torch.float64)
        E[torch.arange(e - c), torch.arange(c, e)] = 1.0
        out[c:e] = hv(E).numpy()
    return out


def block_rows(repeats, quick):
    """Section 3: block assembly timings (module docstring)."""
    sizes = DENSE_NETS["~5,000 params"]
    net = mlp(sizes, "tanh", SoftmaxCrossEntropyLoss(), dtype=np.float64, seed=0)
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((32, sizes[0])), rng.integers(0, sizes[-1], 32)
    slices = [s for _, s in cv.block_slices(net)]
    H = cv.hessian(net, X, Y)
    t_dense = median_time(lambda: cv.hessian(net, X, Y), repeats)
    rows = []
    for l, k in [(l, l) for l in range(len(slices))] + [(0, 1)]:
        B = cv.hessian_block(net, X, Y, l, k)
        t_h = median_time(lambda: cv.hessian_block(net, X, Y, l, k), repeats)
        t_g = median_time(lambda: cv.gauss_newton_block(net, X, Y, l, k), repeats)
        row = dict(net=f"{'-'.join(map(str, sizes))} ({net.n_params:,})", block=f"({l}, {k})",
                   shape=B.shape, hessian=t_h, gn=t_g, dense=t_dense,
                   diff=float(np.abs(B - H[slices[l], slices[k]]).max() / np.abs(H).max()), torch=None)
        if l == k:
            hess, x = torch_layer_hessian(net, X, Y, slices[l])
            Ht = hess(x).numpy()
            row["torch"] = median_time(lambda: hess(x), repeats)
            row["torch_diff"] = float(np.abs(B - Ht).max() / np.abs(Ht).max())
        rows.append(row)
        print(f"block {row['block']} {B.shape} of {row['net']}: H {t_h * 1e3:.1f} ms, G {t_g * 1e3:.1f} ms, "
              f"dense H {t_dense * 1e3:.1f} ms, torch {row['torch'] and row['torch'] * 1e3}", flush=True)
    t_all = median_time(lambda: list(cv.diagonal_blocks(net, X, Y, "hessian")), repeats)
    rows.append(dict(net=rows[0]["net"], block="all diagonal", shape=None, hessian=t_all,
                     gn=median_time(lambda: list(cv.diagonal_blocks(net, X, Y, "gn")), repeats),
                     dense=t_dense, diff=None, torch=None))
    print(f"all diagonal blocks: H {t_all * 1e3:.1f} ms", flush=True)

    big = build_model("cifar-mlp", dtype=np.float64, seed=0)
    rng = np.random.default_rng(0)
    Xc, Yc = rng.standard_normal((32, 3072)), rng.integers(0, 10, 32)
    l = 4
    s = cv.block_slices(big)[l][1]
    t_h, B = timed(lambda: cv.hessian_block(big, Xc, Yc, l))
    t_g, _ = timed(lambda: cv.gauss_newton_block(big, Xc, Yc, l))
    row = dict(net=f"cifar-mlp ({big.n_params:,})", block=f"({l}, {l})", shape=B.shape, hessian=t_h, gn=t_g,
               dense=None, diff=None, torch=None)
    try:
        cv.check_dense(big)
    except cv.DenseTooLarge as e:
        row["refused"] = str(e).split(". Use")[0]
    if not quick:
        row["torch"], Ht = timed(lambda: torch_layer_hessian_from_input(big, Xc, Yc, cv.block_slices(big)[l][0]))
        row["torch_diff"] = float(np.abs(B - Ht).max() / np.abs(Ht).max())
        del Ht
    del B
    rows.append(row)
    print(f"cifar-mlp block {l}: H {t_h:.1f} s, G {t_g:.1f} s, torch {row['torch']}", flush=True)
    step = None
    if not quick:
        from tinynet.optim import GaussNewton
        opt = GaussNewton(big, 1.0, structure="block", eps=1e-3, large_blocks="cg")
        step, _ = timed(lambda: opt.step(Xc, Yc))
        step = dict(seconds=step, plan=opt.plan, metrics=dict(opt.metrics))
        print(f"cifar-mlp GN block step: {step['seconds']:.1f} s, plan {opt.plan}, {opt.metrics}", flush=True)
    return rows, step


def torch_mirror(net):
    """nn.Sequential with the autoencoder's weights (Linear, Sigmoid / Identity)."""
    from tinynet.layers import Identity, Linear, Sigmoid
    mods = []
    for st in net.layers:
        if isinstance(st, Linear):
            m = torch.nn.Linear(st.n_in, st.n_out).double()
            with torch.no_grad():
                m.weight.copy_(torch.tensor(np.array(st.W)))
                m.bias.copy_(torch.tensor(np.array(st.b)))
            mods.append(m)
        elif isinstance(st, Sigmoid):
            mods.append(torch.nn.Sigmoid())
        elif not isinstance(st, Identity):
            raise NotImplementedError(repr(st))
    return torch.nn.Sequential(*mods)


def spectrum_rows(k=10, n=100, pyhessian_iters=50):
    """Section 4: top-k Hessian eigenvalues of the autoencoder, three ways."""
    from scipy.sparse.linalg import LinearOperator, eigsh
    from tinynet.data import load_dataset
    net = build_model("mnist-autoencoder", dtype=np.float64, seed=0)
    X = np.asarray(load_dataset("mnist-autoencode", "train")[0][:n], dtype=np.float64)
    P = net.n_params
    out = {}
    info = {}
    t, w = timed(lambda: cv.top_eigenvalues(net, X, X, "hessian", k=k, info=info))
    out["tinynet hvp + scipy eigsh (Lanczos)"] = dict(values=w, seconds=t, products=info["matvecs"])
    print(f"tinynet Lanczos: {t:.1f} s, {info['matvecs']} hvps: {w}", flush=True)

    f, th = torch_loss_fn(net, X, X), theta_of(net).detach()
    gradf = torch.func.grad(f)
    count = {"n": 0}

    def mv(v):
        count["n"] += 1
        return torch.func.jvp(gradf, (th,), (torch.tensor(np.asarray(v).ravel()),))[1].numpy()
    op = LinearOperator((P, P), matvec=mv, dtype=np.float64)
    v0 = np.random.default_rng(0).standard_normal(P)
    t, w = timed(lambda: np.sort(eigsh(op, k=k, which="LA", v0=v0, return_eigenvectors=False))[::-1])
    out["torch.func hvp + scipy eigsh (Lanczos)"] = dict(values=w, seconds=t, products=count["n"])
    print(f"torch Lanczos: {t:.1f} s, {count['n']} hvps: {w}", flush=True)
    try:
        from pyhessian import hessian as PyHessian
    except ImportError:
        print("pyhessian does not import: skipped", flush=True)
    else:
        torch.manual_seed(0)
        model = torch_mirror(net)
        Xt = torch.tensor(X)
        hs = PyHessian(model, lambda o, t: ((o - t) ** 2).sum(1).mean(), data=(Xt, Xt), cuda=False)
        t, (vals, _) = timed(lambda: hs.eigenvalues(maxIter=pyhessian_iters, top_n=k))
        out[f"PyHessian power iteration (top_n={k}, maxIter={pyhessian_iters}, tol=1e-3)"] = dict(
            values=np.array(vals), seconds=t, products=None)
        print(f"PyHessian: {t:.1f} s: {vals}", flush=True)
    return out, P


def write(dense, hv, P_ae, args, blocks=None, step=None, spec=None, P_spec=None):
    res = os.path.join(HERE, "results")
    os.makedirs(res, exist_ok=True)
    lines = [
        "# Curvature: dense Hessian vs torch.func.hessian, hvp vs one gradient, exact blocks, spectra", "",
        f"Command: `python benchmarks/curvature.py{' '.join([''] + args)}` "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}). Machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores shared with other jobs (TOOLCHAIN.md: numbers vary ~20%; compare ratios), "
        f"OpenBLAS default kernels (OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}), "
        f"{THREADS} BLAS thread(s), torch {torch.__version__} with {torch.get_num_threads()} thread(s) "
        f"(see the script's docstring for why one). Medians over interleaved repeats.", "",
        "## 1. Dense Hessian of the batch-mean loss (float64, tanh MLP, softmax-CE, batch 32)", "",
        "| net | sizes | params | tinynet `curvature.hessian` | `torch.func.hessian` | torch / tinynet | max rel diff |",
        "|---|---|---|---|---|---|---|"]
    for r in dense:
        lines.append(f"| {r['name']} | {'-'.join(map(str, r['sizes']))} | {r['P']:,} | {r['tinynet'] * 1e3:.1f} ms | "
                     f"{r['torch'] * 1e3:.1f} ms | {r['torch'] / r['tinynet']:.1f}x | {r['diff']:.1e} |")
    lines += ["", "Target: tinynet faster than torch on both: "
              + ("met." if all(r["tinynet"] < r["torch"] for r in dense) else "NOT met."), "",
              "With 2 threads on this loaded machine torch's OpenMP threads spin-wait and its times grow "
              "5-40x (earlier runs: 1.0 s and 5.0 s vs tinynet's 11 ms and 0.8 s); tinynet stayed faster there too.", "",
              f"## 2. Matrix-free products on mnist-autoencoder ({P_ae:,} params), batch 200, float32", "",
              "| product | median wall time | x one gradient (ratio of medians) | median of per-round ratios "
              "| median CPU time | x one gradient (CPU time) |",
              "|---|---|---|---|---|---|"]
    for k, r in hv.items():
        lines.append(f"| {k} | {r['median'] * 1e3:.1f} ms | {r['ratio']:.2f} | {r['round_ratio']:.2f} "
                     f"| {r['cpu'] * 1e3:.1f} ms | {r['cpu_ratio']:.2f} |")
    lines += ["", "Target: hvp <= 3x one gradient: "
              + ("met" if max(hv["hvp"]["ratio"], hv["hvp"]["cpu_ratio"]) <= 3 else "NOT met")
              + " (wall and CPU-time ratios).", "",
              "hvp = one forward pass, one forward-mode pass (N^{-1}) and one reverse pass carrying two "
              "vectors (b and M^{-1} u); by GEMM flops about 2.4x a gradient (the first layer needs no "
              "input-side products). gvp = forward, forward-mode, one reverse pass.", "",
              "![timings](curvature.png)", ""]
    if blocks:
        lines += ["## 3. Exact curvature blocks without the full matrix (float64, batch 32)", "",
                  "`hessian_block` / `gauss_newton_block`: p_k directions through the forward-mode and "
                  "reverse passes, rows of block l kept (tinynet/curvature/block.py). Dense route: "
                  "`curvature.hessian` of all P, then slicing. torch: `torch.func.hessian` of the loss as a "
                  "function of that layer's parameters only.", "",
                  "| net (params) | block (l, k) | shape | `hessian_block` | `gauss_newton_block` | dense H + slice "
                  "| torch.func.hessian, one layer | rel diff vs dense slice | rel diff vs torch |",
                  "|---|---|---|---|---|---|---|---|---|"]

        def ms(t):
            return "-" if t is None else (f"{t * 1e3:.1f} ms" if t < 1 else f"{t:.2f} s")
        for r in blocks:
            dense_cell = ms(r["dense"]) if r["dense"] is not None else "refused: " + r.get("refused", "")
            lines.append(f"| {r['net']} | {r['block']} | {r['shape'] or '-'} | {ms(r['hessian'])} | {ms(r['gn'])} | "
                         f"{dense_cell} | {ms(r['torch'])} | "
                         f"{'-' if r['diff'] is None else format(r['diff'], '.1e')} | "
                         f"{format(r['torch_diff'], '.1e') if 'torch_diff' in r else '-'} |")
        if step:
            m = step["metrics"]
            lines += ["", f"cifar-mlp, one `GaussNewton(structure=\"block\", eps=1e-3, large_blocks=\"cg\")` step at batch 32: "
                      f"{step['seconds']:.1f} s (blocks {step['plan'][0]} assembled and Cholesky-solved one at a "
                      f"time, block(s) {step['plan'][1]} by CG: {m.get('cg_iters')} gvp products; "
                      f"pd {m.get('pd')}, step norm {m.get('step_norm'):.3g})."]
        lines.append("")
    if spec:
        lines += [f"## 4. Top-10 Hessian eigenvalues of mnist-autoencoder ({P_spec:,} params), float64, batch 100 "
                  "(MNIST train 0..99), at the seed-0 initialization", "",
                  "| method | time | products | eigenvalues (descending) |", "|---|---|---|---|"]
        for name, r in spec.items():
            lines.append(f"| {name} | {r['seconds']:.1f} s | {r['products'] if r['products'] else '-'} | "
                         + ", ".join(f"{v:.6g}" for v in r["values"]) + " |")
        ref = list(spec.values())[0]["values"]
        for name, r in list(spec.items())[1:]:
            d = np.abs(np.sort(r["values"])[::-1] - ref).max() / np.abs(ref).max()
            lines.append(f"\nmax |difference| / max |eigenvalue| of {name} vs tinynet's Lanczos: {d:.1e}")
        top = np.sort(ref)[::-1]
        spread = (top[0] - top[-1]) / abs(top[0])
        lines += ["", "PyHessian's power iteration finds the eigenvalues of largest magnitude one at a time with "
                  "deflation and stops at a relative change of 1e-3 between iterations; when the top eigenvalues "
                  f"are clustered (here the ten lie within {100 * spread:.2g}% of each other) that stopping rule "
                  "fires on Rayleigh quotients of mixtures of eigenvectors, so its values sit below the Lanczos "
                  "ones and come out unordered. Lanczos (ARPACK, machine-precision tolerance) returns the 10 "
                  "largest algebraic eigenvalues; a cluster also makes it need many products. PyHessian is not "
                  "a project dependency (`pip install pyhessian`; skipped when it does not import).", "",
                  "![spectrum](curvature_spectrum.png)", ""]
    with open(os.path.join(res, "curvature.md"), "w") as fh:
        fh.write("\n".join(lines))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    x = np.arange(len(dense))
    a1.bar(x - 0.2, [r["tinynet"] * 1e3 for r in dense], 0.4, label="tinynet")
    a1.bar(x + 0.2, [r["torch"] * 1e3 for r in dense], 0.4, label="torch.func.hessian")
    a1.set_xticks(x, [f"{r['P']:,} params" for r in dense])
    a1.set_yscale("log")
    a1.set_ylabel("ms (log)")
    a1.set_title("dense Hessian, batch 32, float64")
    a1.legend()
    a2.bar(list(hv), [r["ratio"] for r in hv.values()], color=["gray", "C0", "C1"])
    a2.axhline(3, color="r", ls="--", label="target 3x")
    a2.set_ylabel("time / one gradient")
    a2.set_title("mnist-autoencoder, batch 200, float32")
    a2.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(res, "curvature.png"), dpi=110)
    plt.close(fig)
    if spec:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for j, (name, r) in enumerate(spec.items()):
            ax.plot(np.arange(1, len(r["values"]) + 1), np.sort(r["values"])[::-1], marker="ox^"[j % 3],
                    ls="-" if j == 0 else "none", label=f"{name} ({r['seconds']:.0f} s)")
        ax.set_yscale("log")
        ax.set_xlabel("index")
        ax.set_ylabel("eigenvalue")
        ax.set_title(f"mnist-autoencoder Hessian, top {len(ref)} eigenvalues (batch 100, float64)", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        fig.savefig(os.path.join(res, "curvature_spectrum.png"), dpi=110)
        plt.close(fig)


def main(args):
    quick = "--quick" in args
    dense = dense_rows(3 if quick else 7)
    hv, P = hvp_rows(5 if quick else 25)
    blocks, step = block_rows(3 if quick else 5, quick)
    spec, P_spec = spectrum_rows() if "--no-spectrum" not in args else (None, None)
    write(dense, hv, P, args, blocks, step, spec, P_spec)


if __name__ == "__main__":
    main(sys.argv[1:])
