"""The one script a session with a lent GPU runs (issue 18): every GPU check and
benchmark of tinynet in one call, results written as JSON + markdown.

    python3 benchmarks/gpu_step.py [--out DIR] [--budget 450]     # on the GPU machine
    python benchmarks/gpu_step.py --dry-run                       # here: simulator, tiny sizes

On the device machine (python3 there has numba, numba-cuda, scipy, click,
pytest and torch): from the repository root,

    PYTHONUNBUFFERED=1 PYTHONPATH=. python3 benchmarks/gpu_step.py --out $OUT

Sections, in this order, each bounded and saved as soon as it ends (a run
stopped at its time limit keeps what it had):
  env       versions, the GPU's name, compute capability, memory
  gemm      tinynet's CUDA matmul (out = A @ B, and the A @ B^T, A^T @ B variants
            the step uses) at n = 1024, 2048, 3072, 4096 float32: TFLOP/s next to
            cuBLAS fp32 (torch.mm, TF32 off) on the same GPU, and the relative
            error against it
  launch    launch overhead: a 1-element axpy launched 2000 times as a bare numba
            kernel, through the backend (bk.axpy), and torch's add_ for reference
  steps     the MNIST autoencoder step (784-1000-500-250-30-250-500-1000-784,
            float32) at batch 200 and 1000 for SGD, UBP and KFAC on tinynet's
            CUDA backend, and the same SGD step in PyTorch (TF32 off) in the
            same run; UBP and KFAC also as multiples of that PyTorch SGD step;
            the first steps' losses and parameters compared with tinynet's CPU
            backend (same seed)
  pool      the caching allocator (tinynet.cuda_pool) on and off in one process,
            alternating rounds: the SGD, UBP and KFAC steps at batch 200, the
            driver allocations per step, and theta bit for bit after 3 steps
  profile   `tinynet profile`'s rows (tinynet.profiler) for the three steps at
            batch 200: where the device time goes, kernel by kernel
  tests     every CUDA test on the hardware (TINYNET_CUDA_HARDWARE=1 pytest
            tests/cuda -m cudasim) and the PTX compile check
            (tests/test_cuda_compile.py), with what time the budget leaves

Files: DIR/gpu_step.json (everything), DIR/gpu_step.md (tables),
DIR/gpu_tests.log (pytest's output). DIR: --out, else $OUT, else
benchmarks/results/gpu (a dry run: /tmp/tinynet_gpu_step_dry). The summary
is printed last (the device tool returns the end of the output).

--dry-run (or NUMBA_ENABLE_CUDASIM=1) runs everything on a machine without a
GPU under Numba's CUDA simulator at tiny sizes (re-executing itself with the
variable set, which must be set before numba is imported), with PyTorch on
the CPU: it checks the script, not the speed.
Targets (issue 18): the GEMM >= 40% of cuBLAS fp32 at 4096; the SGD step within
3x of PyTorch's, then 2x.
"""
import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)           # tinynet importable without installing it (the GPU machine)

AE_SIZES = [784, 1000, 500, 250, 30, 250, 500, 1000, 784]
TINY_SIZES = [6, 4, 3, 4, 6]      # the dry run: the simulator runs ~1e4 threads/s
OPTIMIZERS = ["sgd", "ubp", "kfac"]


class Run:
    """Results so far, the time budget, and the files they are saved to."""

    def __init__(self, out, budget, tiny):
        self.out, self.budget, self.tiny = out, budget, tiny
        self.t0 = time.perf_counter()
        self.res = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "tiny": tiny,
                    "sections": {}}
        os.makedirs(out, exist_ok=True)

    def left(self):
        return self.budget - (time.perf_counter() - self.t0)

    def section(self, name, fn, *args):
        t = time.perf_counter()
        print(f"== {name} (budget left {self.left():.0f} s)", flush=True)
        try:
            data = fn(self, *args)
            status = "ok"
        except Exception as e:           # keep going: the other sections still measure
            data = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
            status = "error"
            print(data["traceback"], flush=True)
        data["seconds"] = time.perf_counter() - t
        data["status"] = status
        self.res["sections"][name] = data
        self.save()
        return data

    def save(self):
        self.res["seconds"] = time.perf_counter() - self.t0
        with open(os.path.join(self.out, "gpu_step.json"), "w") as f:
            json.dump(self.res, f, indent=1, default=str)
        with open(os.path.join(self.out, "gpu_step.md"), "w") as f:
            f.write(markdown(self.res))


# -- helpers -------------------------------------------------------------------------------
def torch_setup(sim):
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    dev = "cuda" if (not sim and torch.cuda.is_available()) else "cpu"
    return torch, dev


def _sync_torch(torch, dev):
    if dev == "cuda":
        torch.cuda.synchronize()


def wall(fn, sync, reps):
    """Seconds per call of fn, over `reps` calls between two synchronizations."""
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    sync()
    return (time.perf_counter() - t0) / reps


def median_steps(step, sync, steps):
    ts = []
    for _ in range(steps):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts


def autoencoder(sizes, device, dtype):
    """The thesis's autoencoder (tinynet.models.mnist_autoencoder) at other sizes:
    logistic hidden units, a linear code layer (the smallest), logistic output, MSE."""
    from tinynet.layers import Identity, Linear, Sigmoid
    from tinynet.losses import MSELoss
    from tinynet.models import mnist_autoencoder
    from tinynet.network import Sequential
    if sizes == AE_SIZES:
        return mnist_autoencoder(dtype=dtype, seed=0, device=device)
    code = min(sizes)
    layers = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [Linear(a, b), Identity() if b == code else Sigmoid()]
    return Sequential(layers, MSELoss(), dtype=dtype, seed=0, device=device)


# -- sections --------------------------------------------------------------------------------
def sec_env(run):
    import numba
    import numpy as np
    from numba import cuda
    d = {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
         "simulator": bool(numba.config.ENABLE_CUDASIM), "machine": platform.machine(),
         "cpus": os.cpu_count()}
    try:
        import importlib.metadata as md
        d["numba_cuda"] = md.version("numba-cuda")
    except Exception:
        d["numba_cuda"] = None
    try:
        import torch
        d["torch"] = torch.__version__
        d["torch_cuda"] = torch.cuda.is_available()
    except ImportError:
        d["torch"] = None
    from tinynet import cuda_pool
    d["memory_pool"] = cuda_pool.install()      # before the first context (see main)
    if not numba.config.ENABLE_CUDASIM:
        dev = cuda.get_current_device()
        name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
        free, total = cuda.current_context().get_memory_info()
        d.update(gpu=name, compute_capability=list(dev.compute_capability), memory_gb=total / 1e9,
                 multiprocessors=dev.MULTIPROCESSOR_COUNT)
        try:
            d["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.sm,clocks.max.sm",
                                          "--format=csv,noheader"], capture_output=True, text=True,
                                         timeout=20).stdout.strip()
        except Exception as e:
            d["driver"] = f"nvidia-smi: {e}"
    else:
        d["gpu"] = "CUDA simulator"
    try:
        with open(os.path.join(ROOT, ".git", "HEAD")) as f:
            d["git_head"] = f.read().strip()
    except OSError:
        d["git_head"] = None
    print(json.dumps(d), flush=True)
    return d


def sec_gemm(run, sim):
    import numpy as np
    from tinynet.backend import get_backend
    torch, tdev = torch_setup(sim)
    bk = get_backend("cuda")
    sizes = [16] if run.tiny else [1024, 2048, 3072, 4096]
    rows = []
    rng = np.random.default_rng(0)
    for n in sizes:
        for ta, tb in ((False, False), (False, True), (True, False)):
            if (ta or tb) and n not in (sizes[0], sizes[-1]):
                continue
            if run.left() < 30:
                rows.append(dict(n=n, skipped="budget"))
                continue
            A = rng.standard_normal((n, n)).astype(np.float32)
            B = rng.standard_normal((n, n)).astype(np.float32)
            dA, dB = bk.asarray(A), bk.asarray(B)
            out = bk.empty((n, n), np.float32)
            bk.matmul(dA, dB, out=out, ta=ta, tb=tb)           # compile
            reps = 1 if run.tiny else max(2, int(2e12 / (2 * n ** 3)))
            t = wall(lambda: bk.matmul(dA, dB, out=out, ta=ta, tb=tb), bk.synchronize, reps)
            tA = torch.from_numpy(A).to(tdev)
            tB = torch.from_numpy(B).to(tdev)
            opA = tA.T if ta else tA
            opB = tB.T if tb else tB
            ref = torch.mm(opA, opB)
            tt = wall(lambda: torch.mm(opA, opB, out=ref), lambda: _sync_torch(torch, tdev), reps)
            C = bk.to_host(out)
            R = ref.cpu().numpy()
            err = float(np.linalg.norm(C - R) / np.linalg.norm(R))
            flop = 2.0 * n ** 3
            row = dict(n=n, op=("A^T" if ta else "A") + " @ " + ("B^T" if tb else "B"),
                       tinynet_ms=t * 1e3, tinynet_tflops=flop / t / 1e12,
                       cublas_ms=tt * 1e3, cublas_tflops=flop / tt / 1e12, ratio=tt / t, rel_error=err)
            if not (ta or tb):
                # the register-blocked candidate (tinynet.kernels.gemm), not yet the backend's
                from tinynet.kernels import gemm
                grid, threads = gemm.launch(n, n)
                k = gemm.matmul_nn_rb_cuda[grid, threads]
                out2 = bk.asarray(np.full((n, n), np.nan, np.float32))
                k(dA, dB, out2)
                t2 = wall(lambda: k(dA, dB, out2), bk.synchronize, reps)
                C2 = bk.to_host(out2)
                row.update(rb_ms=t2 * 1e3, rb_tflops=flop / t2 / 1e12, rb_ratio=tt / t2,
                           rb_rel_error=float(np.linalg.norm(C2 - R) / np.linalg.norm(R)))
            rows.append(row)
            print(row, flush=True)
    big = [r for r in rows if r.get("n") == sizes[-1] and r.get("op") == "A @ B"]
    return {"rows": rows, "torch_device": tdev,
            "target_40pct_at_max_n": (big[0]["ratio"] >= 0.4) if big else None,
            "target_40pct_at_max_n_rb": (big[0]["rb_ratio"] >= 0.4) if big and "rb_ratio" in big[0] else None}


def sec_launch(run, sim):
    import numpy as np
    from numba import cuda
    from tinynet.backend import get_backend
    from tinynet.kernels import linalg as la
    torch, tdev = torch_setup(sim)
    bk = get_backend("cuda")
    reps = 20 if run.tiny else 2000
    x = bk.asarray(np.ones(1, np.float32))
    y = bk.asarray(np.zeros(1, np.float32))
    a = np.float32(1e-3)
    k = la.axpy_cuda[1, 32]
    k(a, x, y)
    bk.axpy(1e-3, x, y)
    d = {"reps": reps,
         "numba_raw_us": wall(lambda: k(a, x, y), cuda.synchronize, reps) * 1e6,
         "backend_axpy_us": wall(lambda: bk.axpy(1e-3, x, y), cuda.synchronize, reps) * 1e6}
    tx = torch.ones(1, device=tdev)
    ty = torch.zeros(1, device=tdev)
    ty.add_(tx, alpha=1e-3)
    d["torch_add_us"] = wall(lambda: ty.add_(tx, alpha=1e-3), lambda: _sync_torch(torch, tdev), reps) * 1e6
    d["torch_device"] = tdev
    # a launch followed by a device->host copy of one scalar (what a per-step host
    # round trip costs)
    d["launch_plus_dtoh_us"] = wall(lambda: (k(a, x, y), y.copy_to_host()), cuda.synchronize,
                                    max(2, reps // 10)) * 1e6
    print(d, flush=True)
    return d


def _torch_sgd_step(torch, dev, sizes, batch):
    layers = []
    code = min(sizes)
    for a, b in zip(sizes, sizes[1:]):
        layers.append(torch.nn.Linear(a, b))
        if b != code:
            layers.append(torch.nn.Sigmoid())
    model = torch.nn.Sequential(*layers).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    g = torch.Generator(device="cpu").manual_seed(0)
    Xs = [torch.rand(batch, sizes[0], generator=g).to(dev) for _ in range(4)]
    state = {"k": 0}

    def step():
        X = Xs[state["k"] % 4]
        state["k"] += 1
        opt.zero_grad(set_to_none=True)
        loss = ((model(X) - X) ** 2).sum(1).mean()
        loss.backward()
        opt.step()
        return loss.item()
    return step


def _tinynet_step(name, sizes, batch, device):
    import numpy as np
    from tinynet.optim import build_optimizer
    net = autoencoder(sizes, device, np.float32)
    opt = build_optimizer(name, net, None, defaults={"seed": 0})
    rng = np.random.default_rng(0)
    Xs = [net.as_input(rng.uniform(0, 1, (batch, sizes[0])).astype(np.float32)) for _ in range(4)]
    state = {"k": 0}

    def step():
        X = Xs[state["k"] % 4]
        state["k"] += 1
        return opt.step(X, X)
    return net, opt, step


def sec_steps(run, sim):
    import numpy as np
    from tinynet.backend import get_backend
    torch, tdev = torch_setup(sim)
    bk = get_backend("cuda")
    sizes = TINY_SIZES if run.tiny else AE_SIZES
    batches = [4] if run.tiny else [200, 1000]
    warm, steps = (1, 1) if run.tiny else (3, 20)
    rows, checks = [], []
    for batch in batches:
        tstep = _torch_sgd_step(torch, tdev, sizes, batch)
        for _ in range(warm):
            tstep()
        tt = median_steps(tstep, lambda: _sync_torch(torch, tdev), steps)
        torch_ms = float(np.median(tt)) * 1e3
        rows.append(dict(batch=batch, what="pytorch sgd", median_ms=torch_ms, mean_ms=float(np.mean(tt)) * 1e3,
                         device=tdev))
        for name in OPTIMIZERS:
            if run.left() < 60:
                rows.append(dict(batch=batch, what=f"tinynet {name}", skipped="budget"))
                continue
            _, _, step = _tinynet_step(name, sizes, batch, "cuda")
            t0 = time.perf_counter()
            for _ in range(warm):
                step()
            bk.synchronize()
            first = time.perf_counter() - t0
            ts = median_steps(step, bk.synchronize, steps)
            med = float(np.median(ts)) * 1e3
            row = dict(batch=batch, what=f"tinynet {name}", median_ms=med, mean_ms=float(np.mean(ts)) * 1e3,
                       min_ms=ts[0] * 1e3, max_ms=ts[-1] * 1e3, warmup_s=first, x_pytorch_sgd=med / torch_ms)
            rows.append(row)
            print(row, flush=True)
    # the same first steps on the CPU backend: losses and parameters agree?
    batch = batches[0]
    for name in OPTIMIZERS:
        if run.left() < 45:
            checks.append(dict(optimizer=name, skipped="budget"))
            continue
        out = {}
        for device in ("cpu", "cuda"):
            net, _, step = _tinynet_step(name, sizes, batch, device)
            losses = [float(step()) for _ in range(1 if run.tiny else 3)]
            out[device] = (losses, np.asarray(net.bk.to_host(net.theta), dtype=np.float64))
        (lc, xc), (lg, xg) = out["cpu"], out["cuda"]
        rel_l = max(abs(a - b) / max(abs(a), 1e-30) for a, b in zip(lc, lg))
        rel_x = float(np.linalg.norm(xc - xg) / np.linalg.norm(xc))
        checks.append(dict(optimizer=name, batch=batch, losses_cpu=lc, losses_cuda=lg, loss_rel_diff=rel_l,
                           theta_rel_diff=rel_x, agree=bool(rel_l < 1e-3 and rel_x < 1e-3)))
        print(checks[-1], flush=True)
    sgd = [r for r in rows if r.get("what") == "tinynet sgd" and "median_ms" in r]
    return {"rows": rows, "cpu_agreement": checks, "torch_device": tdev,
            "sgd_within_3x": all(r["x_pytorch_sgd"] <= 3 for r in sgd) if sgd else None,
            "sgd_within_2x": all(r["x_pytorch_sgd"] <= 2 for r in sgd) if sgd else None}


def sec_pool(run, sim):
    """Steps with tinynet.cuda_pool's caching on and off (CachingMemoryManager.caching:
    off allocates and frees as Numba's own manager does), alternating rounds in one
    process so that clocks and load hit both alike."""
    import numpy as np
    from tinynet import cuda_pool
    from tinynet.backend import get_backend
    bk = get_backend("cuda")
    pool = bk.memory_pool
    sizes = TINY_SIZES if run.tiny else AE_SIZES
    batch = 4 if run.tiny else 200
    warm, rounds, per = (1, 2, 1) if run.tiny else (2, 6, 5)
    cls = cuda_pool.CachingMemoryManager
    names = OPTIMIZERS[:1] if run.tiny else OPTIMIZERS       # the dry run checks the code path only

    def set_caching(on):
        if pool is not None:
            cls.caching = on
            if not on:
                pool.empty_cache()

    rows, bits = [], []
    try:
        for name in names:
            if run.left() < 60:
                rows.append(dict(optimizer=name, skipped="budget"))
                continue
            _, _, step = _tinynet_step(name, sizes, batch, "cuda")
            for _ in range(warm):
                step()
            times = {True: [], False: []}
            allocs = {True: 0, False: 0}
            for r in range(rounds):
                for on in ((True, False) if r % 2 == 0 else (False, True)):
                    set_caching(on)
                    step()                      # the first step after a switch fills (or empties) the cache
                    m0 = pool.misses if pool is not None else 0
                    times[on] += median_steps(step, bk.synchronize, per)
                    allocs[on] += (pool.misses - m0) if pool is not None else 0
            on_ms, off_ms = (float(np.median(times[k])) * 1e3 for k in (True, False))
            row = dict(optimizer=name, batch=batch, pool_ms=on_ms, numba_alloc_ms=off_ms, off_over_on=off_ms / on_ms,
                       driver_allocs_per_step_pool=allocs[True] / (rounds * per),
                       driver_allocs_per_step_numba=allocs[False] / (rounds * per))
            rows.append(row)
            print(row, flush=True)
        for name in names:                      # the arithmetic cannot see where memory came from
            if run.left() < 45:
                bits.append(dict(optimizer=name, skipped="budget"))
                continue
            thetas = {}
            for on in (True, False):
                set_caching(on)
                net, _, step = _tinynet_step(name, sizes, batch, "cuda")
                for _ in range(3):
                    step()
                thetas[on] = np.asarray(net.bk.to_host(net.theta))
            bits.append(dict(optimizer=name, identical=bool(np.array_equal(thetas[True], thetas[False]))))
            print(bits[-1], flush=True)
    finally:
        set_caching(True)
    return {"installed": pool is not None, "stats": pool.stats() if pool is not None else None,
            "rows": rows, "bits": bits}


def sec_profile(run, sim):
    from tinynet.profiler import profile_steps
    sizes = TINY_SIZES if run.tiny else AE_SIZES
    batch = 4 if run.tiny else 200
    warm, steps = (0, 1) if run.tiny else (2, 10)
    out = {}
    for name in OPTIMIZERS:
        if run.left() < 45:
            out[name] = {"skipped": "budget"}
            continue
        net, opt, _ = _tinynet_step(name, sizes, batch, "cuda")
        import numpy as np
        rng = np.random.default_rng(1)
        bs = [(X, X) for X in (net.as_input(rng.uniform(0, 1, (batch, sizes[0])).astype(np.float32))
                               for _ in range(4))]
        r = profile_steps(net, opt, bs, steps=steps, warmup=warm, untimed=not run.tiny)
        r.update(model="mnist-autoencoder" if sizes == AE_SIZES else f"autoencoder{sizes}", optimizer=name,
                 batch=batch)
        out[name] = r
        print(f"{name}: step {r['step_ms']:.3f} ms profiled, {_f(r['step_ms_untimed'], '.3f')} ms untimed; top: "
              + ", ".join(f"{k['name']} {k['total_ms']:.2f}" for k in r["kernels"][:5]), flush=True)
    return {"profiles": out}


def _pytest_summary(text):
    m = re.findall(r"=+ (.*?) in [\d.]+s", text)
    return m[-1] if m else text.strip().splitlines()[-1] if text.strip() else ""


def sec_tests(run, sim):
    log = os.path.join(run.out, "gpu_tests.log")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if sim:
        # the dry run checks the command lines: collect everything, run one test
        cmds = [("cuda tests (collect only, simulator)",
                 [sys.executable, "-m", "pytest", "-q", "--collect-only", "-m", "cudasim", "tests/cuda"], env),
                ("cuda tests: profile counts launches (simulator)",
                 [sys.executable, "-m", "pytest", "-q", "-m", "cudasim", "tests/cuda/test_kernels_cuda.py",
                  "-k", "profile_counts_launches"], env)]
    else:
        henv = dict(env, TINYNET_CUDA_HARDWARE="1")
        henv.pop("NUMBA_ENABLE_CUDASIM", None)
        cmds = [("cuda tests on the hardware",
                 [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cudasim", "tests/cuda"],
                 henv),
                ("PTX compile check",
                 [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cuda_compile.py"],
                 dict(env, NUMBA_ENABLE_CUDASIM="0"))]
    out = []
    with open(log, "w") as f:
        for what, cmd, e in cmds:
            limit = run.left() - 10
            if limit < 20:
                out.append(dict(what=what, skipped="budget"))
                continue
            t0 = time.perf_counter()
            try:
                p = subprocess.run(cmd, cwd=ROOT, env=e, capture_output=True, text=True, timeout=limit)
                text, rc = p.stdout + p.stderr, p.returncode
            except subprocess.TimeoutExpired as x:
                text = (x.stdout or b"").decode() if isinstance(x.stdout, bytes) else (x.stdout or "")
                text += f"\n[timed out after {limit:.0f} s]"
                rc = None
            f.write(f"### {what}: {' '.join(cmd)}\n{text}\n")
            f.flush()
            fails = re.findall(r"^(?:FAILED|ERROR) (\S+)", text, re.M)
            out.append(dict(what=what, rc=rc, summary=_pytest_summary(text), failed=fails[:50],
                            seconds=time.perf_counter() - t0))
            print(out[-1], flush=True)
    return {"runs": out, "log": "gpu_tests.log"}


# -- report ------------------------------------------------------------------------------------
def _f(v, fmt=".2f"):
    return "-" if v is None else format(v, fmt)


def _md_rows(rows, label, ncols, cells):
    """Markdown table rows: `label(r)` (which may fill several columns), then
    `cells(r)`; a skipped row says why and leaves its other cells empty."""
    out = []
    for r in rows:
        first = label(r)
        if "skipped" in r:
            pad = ncols - first.count("|") - 2
            out.append(f"| {first} | skipped ({r['skipped']}) |" + " |" * pad)
        else:
            out.append("| " + " | ".join([first] + cells(r)) + " |")
    return out


def markdown(res):
    S = res["sections"]
    env = S.get("env", {})
    L = ["# tinynet on a GPU: benchmarks/gpu_step.py", "",
         f"Run {res['started']}{' (DRY RUN: simulator, tiny sizes; no speed meaning)' if res['tiny'] else ''}; "
         f"GPU {env.get('gpu')} (cc {env.get('compute_capability')}), driver/clocks {env.get('driver')}; "
         f"numba {env.get('numba')}, numba-cuda {env.get('numba_cuda')}, torch {env.get('torch')}, "
         f"python {env.get('python')}; {res.get('seconds', 0):.0f} s in all.", ""]
    ps = res.get("pool_smoke")
    if ps is not None:
        verdict = "ok" if ps["ok"] else "FAILED, so this run used `TINYNET_CUDA_POOL=0`: " + ps["output"][-500:]
        L += [f"Caching allocator smoke test (child process): {verdict}", ""]
    g = S.get("gemm", {})
    if g.get("rows"):
        L += ["## GEMM, float32 (tinynet's CUDA kernels vs cuBLAS through torch.mm, TF32 off)", "",
              "`tiled`: the backend's 16x16 shared-memory kernels (linalg.matmul_*_cuda); `reg.`: the "
              "register-blocked candidate (kernels/gemm.py, 64x64 tiles, 4x4 per thread), A @ B only.", "",
              "| n | op | tiled ms | tiled TFLOP/s | tiled / cuBLAS | reg. TFLOP/s | reg. / cuBLAS | cuBLAS TFLOP/s "
              "| rel. error tiled, reg. |",
              "|---:|---|---:|---:|---:|---:|---:|---:|---|"]
        for r in g["rows"]:
            if "skipped" in r:
                continue
            L.append(f"| {r['n']} | {r['op']} | {_f(r['tinynet_ms'], '.3f')} | {_f(r['tinynet_tflops'])} | "
                     f"{_f(100 * r['ratio'], '.1f')}% | {_f(r.get('rb_tflops'))} | "
                     f"{_f(100 * r['rb_ratio'], '.1f') + '%' if 'rb_ratio' in r else '-'} | "
                     f"{_f(r['cublas_tflops'])} | {_f(r['rel_error'], '.1e')}, {_f(r.get('rb_rel_error'), '.1e')} |")
        L += ["", f"Target >= 40% of cuBLAS at the largest n: tiled {g.get('target_40pct_at_max_n')}, "
                  f"register-blocked {g.get('target_40pct_at_max_n_rb')}.", ""]
    la = S.get("launch", {})
    if "numba_raw_us" in la:
        L += ["## Launch overhead (1-element kernel, host wall time per launch)", "",
              "| bare numba launch | through bk.axpy | torch add_ | launch + 4-byte device->host copy |",
              "|---:|---:|---:|---:|",
              f"| {_f(la['numba_raw_us'], '.1f')} us | {_f(la['backend_axpy_us'], '.1f')} us | "
              f"{_f(la['torch_add_us'], '.1f')} us | {_f(la['launch_plus_dtoh_us'], '.1f')} us |", ""]
    st = S.get("steps", {})
    if st.get("rows"):
        L += ["## MNIST autoencoder step, float32 (median over the timed steps)", "",
              "| batch | what | median ms | mean ms | x PyTorch SGD |", "|---:|---|---:|---:|---:|"]
        L += _md_rows(st["rows"], lambda r: f"{r['batch']} | {r['what']}", 5,
                      lambda r: [_f(r['median_ms'], '.3f'), _f(r['mean_ms'], '.3f'), _f(r.get('x_pytorch_sgd', 1.0))])
        L += ["", f"SGD within 3x of PyTorch: {st.get('sgd_within_3x')}; within 2x: {st.get('sgd_within_2x')}.", ""]
        if st.get("cpu_agreement"):
            L += ["CUDA vs CPU backend, first 3 steps (same seed): "
                  + "; ".join(f"{c['optimizer']}: loss rel. diff {_f(c.get('loss_rel_diff'), '.1e')}, "
                              f"theta rel. diff {_f(c.get('theta_rel_diff'), '.1e')}"
                              for c in st["cpu_agreement"] if "skipped" not in c), ""]
    po = S.get("pool", {})
    if po.get("rows"):
        L += ["## Caching allocator (tinynet.cuda_pool) on and off, batch 200, median step", "",
              f"Installed: {po.get('installed')}. Off = Numba's own allocator (cuMemAlloc per array, "
              "cuMemFree 10 at a time).", "",
              "| optimizer | pool ms | Numba's allocator ms | off / on | driver allocations per step, pool | "
              "same, Numba's |", "|---|---:|---:|---:|---:|---:|"]
        L += _md_rows(po["rows"], lambda r: r["optimizer"], 6,
                      lambda r: [_f(r['pool_ms'], '.3f'), _f(r['numba_alloc_ms'], '.3f'), _f(r['off_over_on']),
                                 _f(r['driver_allocs_per_step_pool'], '.1f'),
                                 _f(r['driver_allocs_per_step_numba'], '.1f')])
        L += ["", "Theta after 3 steps, pool on vs off, bit for bit: "
              + ", ".join(f"{b['optimizer']} {b.get('identical', b.get('skipped'))}" for b in po.get("bits", [])),
              ""]
    pr = S.get("profile", {}).get("profiles", {})
    if pr:
        from tinynet.profiler import format_table
        L += ["## Profiles on the GPU (tinynet.profiler; CUDA events, one sync per kernel)", ""]
        for name, r in pr.items():
            if "kernels" in r:
                L += [f"### {name}", "", format_table(r, top=12, markdown=True), ""]
    te = S.get("tests", {})
    if te.get("runs"):
        L += ["## Tests", ""] + [f"- {r['what']}: {r.get('summary', r.get('skipped'))}"
                                 + (f"; failed: {', '.join(r['failed'][:10])}" if r.get("failed") else "")
                                 for r in te["runs"]] + [""]
    errs = [f"- {k}: {v['error']}" for k, v in S.items() if v.get("status") == "error"]
    if errs:
        L += ["## Errors", ""] + errs + [""]
    return "\n".join(L) + "\n"


def summary(res):
    S = res["sections"]
    ps = res.get("pool_smoke")
    lines = [] if ps is None else [f"pool smoke test: {'ok' if ps['ok'] else 'FAILED: ' + ps['output'][-300:]}"]
    lines += [f"gpu_step: {res.get('seconds', 0):.0f} s; sections: "
             + ", ".join(f"{k} {v['status']} ({v['seconds']:.0f} s)" for k, v in S.items())]
    for r in S.get("gemm", {}).get("rows", []):
        if "ratio" in r:
            lines.append(f"gemm n={r['n']} {r['op']}: tiled {r['tinynet_tflops']:.2f} TFLOP/s "
                         f"({100 * r['ratio']:.1f}% of cuBLAS {r['cublas_tflops']:.2f}), err {r['rel_error']:.1e}"
                         + (f"; reg. {r['rb_tflops']:.2f} ({100 * r['rb_ratio']:.1f}%), err {r['rb_rel_error']:.1e}"
                            if "rb_ratio" in r else ""))
    la = S.get("launch", {})
    if "numba_raw_us" in la:
        lines.append(f"launch: numba {la['numba_raw_us']:.1f} us, bk.axpy {la['backend_axpy_us']:.1f} us, "
                     f"torch {la['torch_add_us']:.1f} us")
    for r in S.get("steps", {}).get("rows", []):
        if "median_ms" in r:
            lines.append(f"step batch {r['batch']} {r['what']}: {r['median_ms']:.3f} ms"
                         + (f" ({r['x_pytorch_sgd']:.2f}x pytorch sgd)" if "x_pytorch_sgd" in r else ""))
    for r in S.get("pool", {}).get("rows", []):
        if "pool_ms" in r:
            lines.append(f"pool {r['optimizer']}: {r['pool_ms']:.3f} ms on, {r['numba_alloc_ms']:.3f} ms off "
                         f"({r['off_over_on']:.2f}x), driver allocs/step {r['driver_allocs_per_step_pool']:.1f} "
                         f"vs {r['driver_allocs_per_step_numba']:.1f}")
    for b in S.get("pool", {}).get("bits", []):
        lines.append(f"pool bits {b['optimizer']}: {b.get('identical', b.get('skipped'))}")
    for c in S.get("steps", {}).get("cpu_agreement", []):
        if "agree" in c:
            lines.append(f"cpu agreement {c['optimizer']}: {c['agree']} (loss {c['loss_rel_diff']:.1e}, "
                         f"theta {c['theta_rel_diff']:.1e})")
    for r in S.get("tests", {}).get("runs", []):
        lines.append(f"tests {r['what']}: {r.get('summary', r.get('skipped'))}")
    return "\n".join(lines)


POOL_SMOKE = """
import gc, numpy as np
from numba import cuda
from tinynet import cuda_pool
assert cuda_pool.install(), "not installed"
a = cuda.to_device(np.arange(1000, dtype=np.float32))
addr = a.device_ctypes_pointer.value
del a
gc.collect()
b = cuda.device_array(1000, np.float32)
b.copy_to_device(np.ones(1000, np.float32))
assert b.device_ctypes_pointer.value == addr, "block not reused"
assert float(b.copy_to_host().sum()) == 1000.0
pool = cuda_pool.current_pool()
print(pool.stats())
assert pool.hits == 1
"""


def _pool_smoke():
    """The caching allocator on this GPU in a child process: install, allocate, free,
    reuse, copy both ways."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TINYNET_CUDA_POOL", None)
    try:
        p = subprocess.run([sys.executable, "-c", POOL_SMOKE], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=120)
        out = dict(ok=p.returncode == 0, output=(p.stdout + p.stderr)[-2000:])
    except Exception as e:
        out = dict(ok=False, output=f"{type(e).__name__}: {e}")
    print(f"pool smoke test: {'ok' if out['ok'] else 'FAILED, running with Numba allocator'}: "
          f"{out['output'].strip().splitlines()[-1] if out['output'].strip() else ''}", flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="results folder (default $OUT, else benchmarks/results/gpu)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds for the whole run; sections that would not fit are skipped "
                         "(default 450; a dry run 1200)")
    ap.add_argument("--dry-run", action="store_true",
                    help="no GPU: run everything under the CUDA simulator at tiny sizes")
    ap.add_argument("--sections", default="env,gemm,launch,steps,pool,profile,tests")
    args = ap.parse_args()
    sim_env = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
    if args.dry_run and not sim_env:
        # the simulator must be chosen before numba is imported: start again with it
        env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
        sys.exit(subprocess.call([sys.executable, os.path.abspath(__file__)] + sys.argv[1:], env=env))
    import numba
    sim = bool(numba.config.ENABLE_CUDASIM)
    tiny = sim or args.dry_run
    out = args.out or os.environ.get("OUT") or (
        "/tmp/tinynet_gpu_step_dry" if tiny else os.path.join(ROOT, "benchmarks", "results", "gpu"))
    if not sim:
        from numba import cuda
        if not cuda.is_available():
            print("gpu_step: no CUDA GPU here (numba.cuda.is_available() is False); use --dry-run", file=sys.stderr)
            sys.exit(2)
    pool_smoke = None
    if not sim:
        # the caching allocator has never run on a GPU before this script: try it in a child
        # first, and fall back to Numba's allocator (for this run and its test processes) if it
        # fails, so that the rest still measures
        pool_smoke = _pool_smoke()
        if not pool_smoke["ok"]:
            os.environ["TINYNET_CUDA_POOL"] = "0"
        from tinynet import cuda_pool
        cuda_pool.install()          # Numba fixes the memory manager with the first context
    run = Run(out, args.budget or (1200.0 if tiny else 450.0), tiny)
    run.res["pool_smoke"] = pool_smoke
    table = {"env": (sec_env,), "gemm": (sec_gemm, sim), "launch": (sec_launch, sim),
             "steps": (sec_steps, sim), "pool": (sec_pool, sim), "profile": (sec_profile, sim), "tests": (sec_tests, sim)}
    for name in args.sections.split(","):
        if name not in table:
            print(f"gpu_step: unknown section {name!r}; choose from {', '.join(table)}", file=sys.stderr)
            sys.exit(2)
        fn, *rest = table[name]
        run.section(name, fn, *rest)
    run.save()
    print(f"\nresults in {out}: gpu_step.json, gpu_step.md, gpu_tests.log\n")
    print(summary(run.res))


if __name__ == "__main__":
    main()
