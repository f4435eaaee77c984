"""The poster's table 1 (seed 004) in tinynet, on a machine-sized scale: a small
CIFAR-10 conv net with a ZCA whitening layer after its first convolution, for
backward = svd / pi / hybrid and group sizes d = 4, 8, 16, 32, 64 (64 channels),
several seeds per cell: minimum and mean test error of the runs that succeed, and
the success rate (a run fails when a gradient is refused or not finite (EDError),
or the loss becomes NaN or diverges, > 10). With --table2, the poster's table 2
setting instead: BatchNorm2d vs PCA denoising (k = 8 of 64 channels, one group)
with PI, SVD and hybrid backward.

Net (the authors use ResNet18 for 350 epochs; this is what 2 shared CPU cores allow):
  Conv2d(3, 64, 4, stride 2, pad 1) -> ZCAWhitening(64, groups=64/d) -> ReLU -> MaxPool2d(2)
  -> Conv2d(64, 32, 4, stride 2, pad 1) -> ReLU -> Flatten -> Linear(512, 10), softmax CE,
SGD with momentum 0.9, lr 0.02, batch 64, float32, standardized CIFAR-10 (the training
batches present in the data folder); test error on the first `--test` test images.

  OMP_NUM_THREADS=1 python benchmarks/poster_table1.py --steps 200 --seeds 3
writes benchmarks/results/poster_table1.md, poster_table1_loss.png and the runs'
losses in poster_table1_runs.json (`--replot that.json` redraws the plot).
"""
import argparse
import json
import math
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import tinynet as tn  # noqa: E402
from tinynet.data import load_cifar10_standardized  # noqa: E402
from tinynet.ed import EDError  # noqa: E402

RES = os.path.join(os.path.dirname(__file__), "results")


def build(norm, seed):
    """norm: ("zca", rule, d) | ("pca", rule, k) | ("bn",)."""
    if norm[0] == "zca":
        st = tn.ZCAWhitening(64, groups=64 // norm[2], backward=norm[1], seed=seed)
    elif norm[0] == "pca":
        st = tn.PCADenoising(64, norm[2], groups=1, backward=norm[1], seed=seed)
    else:
        st = tn.BatchNorm2d(64)
    layers = [tn.Conv2d(3, 64, 4, stride=2, padding=1), st, tn.ReLU(), tn.MaxPool2d(2),
              tn.Conv2d(64, 32, 4, stride=2, padding=1), tn.ReLU(), tn.Flatten(), tn.Linear(512, 10)]
    return tn.Sequential(layers, tn.SoftmaxCrossEntropyLoss(), input_shape=(3, 32, 32), seed=seed)


def run(norm, seed, steps, batch, lr, data):
    Xtr, ytr, Xte, yte = data
    net = build(norm, seed)
    opt = tn.optim.SGD(net, lr=lr, momentum=0.9)
    rng = np.random.default_rng(seed)
    losses = []
    try:
        for _ in range(steps):
            idx = rng.integers(0, Xtr.shape[0], batch)
            loss = float(opt.step(Xtr[idx], ytr[idx]))
            losses.append(loss)
            if not math.isfinite(loss) or loss > 10:
                return dict(ok=False, why="diverged" if math.isfinite(loss) else "NaN loss", losses=losses)
    except (EDError, FloatingPointError) as e:
        return dict(ok=False, why=f"EDError: {str(e)[:60]}", losses=losses)
    net.train(False)
    err = []
    for a in range(0, Xte.shape[0], 500):
        out = net.forward(Xte[a:a + 500])
        if not np.all(np.isfinite(out)):
            return dict(ok=False, why="NaN output", losses=losses)
        err.append(np.argmax(out, 1) != yte[a:a + 500])
    return dict(ok=True, err=100 * float(np.concatenate(err).mean()), losses=losses)


def cell_text(rs):
    ok = [r["err"] for r in rs if r["ok"]]
    rate = 100 * len(ok) / len(rs)
    if not ok:
        return "-", f"{rate:.0f}%"
    mm = f"{min(ok):.1f}, {np.mean(ok):.1f} ± {np.std(ok):.1f}" if len(ok) > 1 else f"{ok[0]:.1f}, -"
    return mm, f"{rate:.0f}%"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--dims", default="4,8,16,32,64")
    ap.add_argument("--rules", default="svd,pi,hybrid")
    ap.add_argument("--table2", action="store_true")
    ap.add_argument("--data-dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cifar10"))
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Xtr, ytr = load_cifar10_standardized("train", a.data_dir)
        Xte, yte = load_cifar10_standardized("test", a.data_dir)
    data = (Xtr, ytr, Xte[:a.test], yte[:a.test])
    a.n_train = Xtr.shape[0]
    if a.table2:
        cells = [("bn",), ("pca", "pi", 8), ("pca", "svd", 8), ("pca", "hybrid", 8)]
    else:
        dims = [int(x) for x in a.dims.split(",")]
        cells = [("zca", rule, d) for rule in a.rules.split(",") for d in dims]
    t0 = time.perf_counter()
    results = {}
    for c in cells:
        results[c] = []
        for s in range(a.seeds):
            t = time.perf_counter()
            r = run(c, s, a.steps, a.batch, a.lr, data)
            results[c].append(r)
            print(f"{c} seed {s}: {'err %.1f%%' % r['err'] if r['ok'] else 'FAILED ' + r['why']} "
                  f"({time.perf_counter() - t:.0f} s, {len(r['losses'])} steps)", flush=True)
    secs = time.perf_counter() - t0
    name = "poster_table2" if a.table2 else "poster_table1"
    write(a, cells, results, secs, a.out or os.path.join(RES, name + ".md"), name)


def write(a, cells, results, secs, path, name):
    cmd = (f"OMP_NUM_THREADS=1 python benchmarks/poster_table1.py --steps {a.steps} --seeds {a.seeds} "
           f"--batch {a.batch} --lr {a.lr} --test {a.test}" + (" --table2" if a.table2 else f" --dims {a.dims} --rules {a.rules}"))
    L = [f"# {'Table 2 (PCA denoising)' if a.table2 else 'Table 1 (ZCA whitening)'} of seed 004, machine-sized", "",
         f"`{cmd}` ({secs / 60:.1f} min). Net: Conv(3->64, 4x4, s2) -> norm -> ReLU -> MaxPool2 -> "
         "Conv(64->32, 4x4, s2) -> ReLU -> Linear(512, 10); SGD momentum 0.9, float32; "
         f"{a.steps} steps of batch {a.batch} ({a.steps * a.batch / a.n_train:.2f} passes over the {a.n_train:,} "
         "training images present), "
         f"test error (%) on {a.test} test images; {a.seeds} seeds per cell. A run fails on an EDError "
         "(refused or non-finite ED gradient), a NaN or a loss > 10. The authors: ResNet18, 350 epochs, "
         "15 runs per cell (errors ~4.5%): the scale differs by orders of magnitude, so compare success "
         "rates and orderings, not error levels.", ""]
    if a.table2:
        L += ["| method | min, mean ± std error | success |", "|---|---|---|"]
        for c in cells:
            mm, rate = cell_text(results[c])
            L.append(f"| {'BN' if c[0] == 'bn' else 'PCA(' + c[1] + ')'} | {mm} | {rate} |")
    else:
        dims = sorted({c[2] for c in cells})
        L += ["| method | | " + " | ".join(f"d={d}" for d in dims) + " |", "|---|---|" + "---|" * len(dims)]
        for rule in a.rules.split(","):
            txt = [cell_text(results[("zca", rule, d)]) for d in dims]
            L.append(f"| {rule} | min, mean | " + " | ".join(t[0] for t in txt) + " |")
            L.append(f"| | success | " + " | ".join(t[1] for t in txt) + " |")
    L += ["", "Failures: " + ("; ".join(f"{c} seed {i}: {r['why']} at step {len(r['losses'])}"
                                         for c in cells for i, r in enumerate(results[c]) if not r["ok"]) or "none")]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write("\n".join(L) + "\n")
    with open(path.replace(".md", "_runs.json"), "w") as fh:      # every run's losses, to re-plot
        json.dump([dict(cell=list(c), seed=i, **r) for c in cells for i, r in enumerate(results[c])], fh)
    plot(cells, results, path.replace(".md", "_loss.png"))
    print("\n".join(L))


def plot(cells, results, out):
    """Training loss (10-step mean) of seed 0 per cell: colour = d, line style = rule."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors, styles = {}, {"svd": ":", "pi": "--", "hybrid": "-", "bn": "-."}
    for c in cells:
        r = results[c][0]
        sm = np.convolve(r["losses"], np.ones(10) / 10, mode="valid") if len(r["losses"]) >= 10 else r["losses"]
        key = c[2] if len(c) > 2 else c[0]
        colors.setdefault(key, f"C{len(colors)}")
        rule = c[1] if len(c) > 1 else "bn"
        label = (f"{rule}, d={c[2]}" if c[0] == "zca" else " ".join(map(str, c))) + ("" if r["ok"] else " (failed)")
        ax.plot(sm, styles[rule], color=colors[key], label=label)
    ax.set(xlabel="step", ylabel="training loss (10-step mean), seed 0", ylim=(1.4, 3.0))
    ax.legend(fontsize=6, ncol=3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def replot(runs_json):
    """Redraw a results file's loss plot from its _runs.json."""
    with open(runs_json) as fh:
        runs = json.load(fh)
    results = {}
    for r in runs:
        results.setdefault(tuple(r["cell"]), []).append(r)
    plot(list(results), results, runs_json.replace("_runs.json", "_loss.png"))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--replot":
        replot(sys.argv[2])
        sys.exit()
    main()
