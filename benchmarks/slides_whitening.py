"""Seed 003's CIFAR-10 experiment: SG with a common stepsize, per-layer
1/sqrt(share x fanin) stepsizes, batch normalization, the whitening
reparametrization, and a few epochs of BN then whitening, on the slides' CNN
C6(5x5)-P(2x2)-C16(5x5)-F84-F16-F10 (`cifar-cnn`, real CIFAR-10, per-channel
standardized, float32, batch 128).

Each method runs at every stepsize of its small grid for --epochs epochs; the
best stepsize (lowest final training cost) is drawn: training cost against
epochs and against seconds, with a table. BN-then-whitening trains with BN at
BN's best stepsize for --bn-epochs epochs, folds BN into the layers
(tinynet.fold: its statistics carried over into the weights), then continues
with whitening at whitening's best stepsize. Runs are independent processes'
worth of work done one after another here; give --methods to split them.

    OPENBLAS_NUM_THREADS=1 python benchmarks/slides_whitening.py --epochs 3 \
        --data-dir ../shared/data/cifar10 --out benchmarks/results
"""
import argparse
import json
import os
import platform
import time

import numpy as np

from tinynet.data import load_dataset
from tinynet.fold import fold_batchnorm
from tinynet.models import build_model
from tinynet.optim import SGD, QuasiDiagonal
from tinynet.train import TrainConfig, train

HERE = os.path.dirname(os.path.abspath(__file__))
# stepsize grids, from a calibration on 100 steps (the notes in results/slides_whitening.md)
# (training cost after 150 steps: sgd-share-fanin 1.93 at lr 1, 1.95 at 3, 2.11 at 10; bn 1.50 at 0.3 and 1;
# whitening 1.55 at 1, 1.51 at 3, diverged at 10)
GRIDS = {"sgd": [0.03, 0.1, 0.3], "share-fanin": [0.3, 1.0, 3.0], "bn": [0.1, 0.3, 1.0],
         "whitening": [1.0, 3.0, 6.0]}


def _data(data_dir):
    tr = load_dataset("cifar10-standardized", "train", data_dir)
    te = load_dataset("cifar10-standardized", "test", data_dir)
    return {"train": tr, "test": te}


def _optimizer(method, net, lr, wd=0.0):
    if method == "sgd" or method == "bn":
        return SGD(net, lr, weight_decay=wd)
    if method == "share-fanin":
        return SGD(net, lr, lr_scaling="share-fanin", weight_decay=wd)
    if method == "whitening":
        return QuasiDiagonal(net, lr, weight_decay=wd)
    raise ValueError(method)


def _cfg(a, steps, eval_every=None):
    return TrainConfig(batch_size=128, steps=steps, eval_every=eval_every or max(1, steps // (2 * a.epochs)),
                       eval_subset=a.eval_subset, seed=0, progress=False)


def run_one(method, lr, a, data, steps):
    net = build_model("cifar-cnn", dtype=np.float32, seed=0, batchnorm="full" if method == "bn" else None)
    res = train(net, _optimizer(method, net, lr, a.weight_decay), data, _cfg(a, steps))
    return dict(method=method, lr=lr, stop=res.stop_reason, history=res.history, seconds=res.seconds,
                weight_decay=a.weight_decay)


def _best_lrs(folder, pattern="slides_whitening_runs"):
    """method -> the stepsize with the lowest final training cost in the sweep files."""
    pool = []
    for name in sorted(os.listdir(folder)):
        if name.startswith(pattern) and name.endswith(".json"):
            with open(os.path.join(folder, name)) as f:
                pool += json.load(f)["runs"]
    best = {}
    for r in pool:
        if r["stop"] == "steps" and (r["method"] not in best or
                                     r["history"][-1]["train_loss"] < best[r["method"]]["history"][-1]["train_loss"]):
            best[r["method"]] = r
    return {m: r["lr"] for m, r in best.items()}


def run_bn_then_whitening(lr_bn, lr_w, a, data, steps_per_epoch):
    net = build_model("cifar-cnn", dtype=np.float32, seed=0, batchnorm="full")
    k1 = int(a.bn_epochs * steps_per_epoch)
    every = max(1, int(a.epochs * steps_per_epoch) // (2 * a.epochs))     # the other runs' evaluation points
    r1 = train(net, SGD(net, lr_bn), data, _cfg(a, k1, every))
    folded = fold_batchnorm(net)
    k2 = int(a.epochs * steps_per_epoch) - k1
    cfg = _cfg(a, k2, every)
    cfg.seed = 1                   # a new data order for the second phase (its own generator)
    r2 = train(folded, QuasiDiagonal(folded, lr_w), data, cfg)
    hist = [dict(h) for h in r1.history]
    for h in r2.history[1:]:
        h = dict(h)
        h["step"] += k1
        h["seconds"] += r1.seconds
        hist.append(h)
    return dict(method="bn-then-whitening", lr=f"{lr_bn}/{lr_w}", stop=r2.stop_reason if r1.stop_reason ==
                "steps" else r1.stop_reason, history=hist, seconds=r1.seconds + r2.seconds)


def report(folder):
    """slides_whitening.md and .png from the runs JSON files in `folder`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    runs, metas = [], []
    for name in sorted(os.listdir(folder)):
        if name.startswith("slides_whitening_runs") and name.endswith(".json"):
            with open(os.path.join(folder, name)) as f:
                d = json.load(f)
            runs += d["runs"]
            metas.append(d["meta"])
    order = ["sgd", "share-fanin", "bn", "whitening", "bn-then-whitening"]
    names = {"sgd": "SG, common stepsize", "share-fanin": "SG, per-layer 1/sqrt(share x fanin)",
             "bn": "SG + batch normalization", "whitening": "whitening reparametrization",
             "bn-then-whitening": "BN, then whitening"}
    best = {}
    for m in order:
        ok = [r for r in runs if r["method"] == m and r["stop"] == "steps"]
        if ok:
            best[m] = min(ok, key=lambda r: r["history"][-1]["train_loss"])
    meta = metas[0]
    lines = ["# Seed 003's CIFAR-10 experiment: SG, per-layer stepsizes, BN, whitening, BN then whitening", "",
             f"`cifar-cnn` (C6(5x5)-P(2x2)-C16(5x5)-F84-F16-F10, ReLU), real CIFAR-10 (the 2 training batches "
             f"present: 20,000 images; test 10,000), float32, batch 128, {meta['epochs']:g} epochs "
             f"({meta['steps']} steps) per run, costs on {meta['eval_subset']}-image subsets; "
             f"BN-then-whitening: {meta['bn_epochs']:g} epoch of BN, then BN folded into the layers "
             f"(tinynet.fold) and whitening. 1 BLAS thread per run, 2 runs side by side on 2 shared cores "
             f"(other jobs running). Command: `python benchmarks/slides_whitening.py --epochs "
             f"{meta['epochs']:g} --methods ... --tag ...` then `--report`.", "",
             "| method | stepsizes tried (final training cost) | best | training cost at epoch 1 / 2 / ... | "
             "test error | training s |", "|---|---|---|---|---|---|"]
    for m in order:
        if not any(r["method"] == m for r in runs):
            continue
        tried = ", ".join(f"{r['lr']}: " + (f"{r['history'][-1]['train_loss']:.3f}" if r["stop"] == "steps"
                                             else r["stop"]) for r in runs if r["method"] == m)
        if m not in best:
            lines.append(f"| {names[m]} | {tried} | - | - | - | - |")
            continue
        r = best[m]
        spe = meta["steps"] / meta["epochs"]
        at = [h for h in r["history"] if h["step"] > 0 and abs(h["step"] / spe - round(h["step"] / spe)) < 1e-9]
        lines.append(f"| {names[m]} | {tried} | {r['lr']} | " + " / ".join(f"{h['train_loss']:.3f}" for h in at)
                     + f" | {100 * r['history'][-1]['test_error']:.1f}% | {r['seconds']:.0f} |")
    long = []
    for name in sorted(os.listdir(folder)):
        if name.startswith("slides_whitening_long") and name.endswith(".json"):
            with open(os.path.join(folder, name)) as f:
                d = json.load(f)
            long += [dict(r, epochs=d["meta"]["epochs"], steps=d["meta"]["steps"]) for r in d["runs"]]
    if long:
        lines += ["", f"Then each method once more at its best stepsize, for {long[0]['epochs']:g} epochs "
                  f"(`--long`; `--weight-decay` for the L2 rows):", "",
                  "| method | lr | L2 | training cost after 1 / 5 / 10 / ... epochs | final test loss | "
                  "test error | training s |", "|---|---|---|---|---|---|---|"]
        for r in long:
            spe = r["steps"] / r["epochs"]
            marks = [e for e in (1, 5, 10, 15, 20, 30, 40) if e <= r["epochs"]]
            cost = {round(h["step"] / spe, 6): h["train_loss"] for h in r["history"]}
            at = " / ".join(f"{cost[float(e)]:.3f}" if float(e) in cost else "-" for e in marks)
            last = r["history"][-1]
            lines.append(f"| {names[r['method']]} | {r['lr']} | {r.get('weight_decay') or 0:g} | {at} | "
                         f"{last['test_loss']:.3f} | {100 * last['test_error']:.1f}% | {r['seconds']:.0f} |")
        best = {r["method"] + (" + L2" if r.get("weight_decay") else ""): r for r in long}
        names.update({k: names[k.split(" + ")[0]] + " + L2" for k in best if " + L2" in k})
        meta = dict(meta, steps=long[0]["steps"], epochs=long[0]["epochs"])
    with open(os.path.join(folder, "slides_whitening.md"), "w") as f:
        f.write("\n".join(lines) + "\n\n![curves](slides_whitening.png)\n")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    for m, r in best.items():
        spe = meta["steps"] / meta["epochs"]
        xs = [h["step"] / spe for h in r["history"]]
        ts = [h["seconds"] for h in r["history"]]
        ys = [h["train_loss"] for h in r["history"]]
        axes[0].plot(xs, ys, marker=".", label=f"{names[m]} (lr {r['lr']})")
        axes[1].plot(ts, ys, marker=".")
    for ax, xl in zip(axes, ("epochs", "training time (s)")):
        ax.set_xlabel(xl)
        ax.set_ylabel("training cross-entropy (nats)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    fig.legend(loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    fig.suptitle("cifar-cnn on CIFAR-10: each method at its best stepsize", fontsize=10)
    fig.savefig(os.path.join(folder, "slides_whitening.png"), dpi=120)


def long_runs(a):
    data = _data(a.data_dir)
    spe = data["train"][0].shape[0] // 128
    best = _best_lrs(a.out)
    runs = []
    for m in a.methods.split(","):
        if m == "bn-then-whitening":
            r = run_bn_then_whitening(best["bn"], best["whitening"], a, data, spe)
        else:
            r = run_one(m, best[m], a, data, int(a.epochs * spe))
        runs.append(r)
        print(f"long {m} lr {r['lr']} wd {a.weight_decay}: {r['stop']}, training cost "
              f"{r['history'][-1]['train_loss']:.4f}, test error {r['history'][-1]['test_error']}", flush=True)
    meta = dict(epochs=a.epochs, bn_epochs=a.bn_epochs, steps=int(a.epochs * spe), eval_subset=a.eval_subset,
                weight_decay=a.weight_decay)
    with open(os.path.join(a.out, f"slides_whitening_long{a.tag}.json"), "w") as f:
        json.dump(dict(meta=meta, runs=runs), f, default=float)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--bn-epochs", type=float, default=1.0)
    ap.add_argument("--eval-subset", type=int, default=5000)
    ap.add_argument("--data-dir", default=os.environ.get("TINYNET_DATA") or
                    os.path.join(HERE, "..", "..", "shared", "data", "cifar10"))
    ap.add_argument("--methods", default="sgd,share-fanin,bn,whitening,bn-then-whitening")
    ap.add_argument("--steps", type=int, default=None, help="override: steps per run (calibration)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--tag", default="")
    ap.add_argument("--lrs", default=None, help="stepsizes to try instead of the method's grid (comma-separated)")
    ap.add_argument("--report", action="store_true", help="only write the table and plot from --out's runs")
    ap.add_argument("--long", action="store_true",
                    help="run each of --methods once, at the best stepsize of the sweep files in --out")
    ap.add_argument("--weight-decay", type=float, default=0.0, help="L2 regularization (the slides' sanity check)")
    a = ap.parse_args()
    if a.report:
        return report(a.out)
    if a.long:
        return long_runs(a)
    data = _data(a.data_dir)
    spe = data["train"][0].shape[0] // 128
    steps = a.steps or int(a.epochs * spe)
    runs = []
    t0 = time.time()
    methods = a.methods.split(",")
    for m in methods:
        if m == "bn-then-whitening":
            continue
        for lr in ([float(x) for x in a.lrs.split(",")] if a.lrs else GRIDS[m]):
            r = run_one(m, lr, a, data, steps)
            runs.append(r)
            print(f"{m} lr {lr}: {r['stop']}, final training cost {r['history'][-1]['train_loss']:.4f}, "
                  f"{r['seconds']:.0f} s", flush=True)
    if "bn-then-whitening" in methods:
        best = {}
        for m in ("bn", "whitening"):
            pool = [r for r in runs if r["method"] == m]
            for name in sorted(os.listdir(a.out)) if not pool else []:    # the other processes' runs
                if name.startswith("slides_whitening_runs") and name.endswith(".json"):
                    with open(os.path.join(a.out, name)) as f:
                        pool += [r for r in json.load(f)["runs"] if r["method"] == m]
            ok = [r for r in pool if r["stop"] == "steps"]
            best[m] = min(ok, key=lambda r: r["history"][-1]["train_loss"])["lr"] if ok else GRIDS[m][1]
        r = run_bn_then_whitening(best["bn"], best["whitening"], a, data, spe)
        runs.append(r)
        print(f"bn-then-whitening {r['lr']}: {r['stop']}, final training cost "
              f"{r['history'][-1]['train_loss']:.4f}, {r['seconds']:.0f} s", flush=True)
    meta = dict(epochs=a.epochs, bn_epochs=a.bn_epochs, steps=steps, eval_subset=a.eval_subset,
                cpu=platform.processor() or platform.machine(), wall_s=time.time() - t0,
                blas_threads=os.environ.get("OPENBLAS_NUM_THREADS"))
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, f"slides_whitening_runs{a.tag}.json"), "w") as f:
        json.dump(dict(meta=meta, runs=runs), f, default=float)


if __name__ == "__main__":
    main()
