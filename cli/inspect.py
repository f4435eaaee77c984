"""`tinynet inspect`: print, plot or save any matrix of the math for a small net.

  tinynet inspect --model tiny-mlp --list
  tinynet inspect --model tiny-mlp --matrix M --example 0 --out M.png
  tinynet inspect --model tiny-mlp --matrix H --batch 16 --out H.npz
  tinynet inspect --model mlp:3-2-2:tanh --matrix D_zz --out -          (text to stdout)
  tinynet inspect --model tiny-mlp --check
  tinynet inspect --model tiny-cnn --matrix G --batch 8 --out G.png   (a 216-parameter CNN)

  tinynet inspect --model tiny-mlp --matrix kron_vs_exact --layer 1 --batch 32 --out k.png
  tinynet inspect --model cifar-mlp --matrix H_block --layer 3 --batch 32 --out h.png   (10,100 x 10,100)
  tinynet inspect --model mnist-autoencoder --matrix H --spectrum --top-k 10 --batch 200

Matrices: seed 001's M, N, D_x, D_x_shift, D_b, B_b, D_xx, D_xz, D_zx, D_zz, T1-T4
and H for one example (tinynet.curvature.matrices); H, G (Gauss-Newton) and F
(Fisher) of the batch-mean loss over --batch examples starting at --example;
the chapter-6 and block matrices of --layer L (and --layer2 K): kfac_A, kfac_G,
cov, H_block, G_block, F_block, kron_vs_exact (tinynet.curvature.block and
.kronecker; L, K are block indices: positions among the stages WITH parameters,
as `--list` shows them). A heatmap of a matrix wider than 600 is a down-sampled
view (means of f x f tiles) and the full matrix goes to the .npz beside it.
--spectrum prints and plots eigenvalues instead: dense eigvalsh of the matrix,
or, for H / G / F too big for the dense guard (or with --lanczos), the --top-k
largest by scipy's Lanczos (eigsh) over hvp / gvp / fvp (tinynet.curvature.spectrum).
--model takes a name of tinynet.models.MODELS or `mlp:SIZES[:ACT[:LOSS]]`
(e.g. mlp:3-2-2:tanh:mse) for a small MLP: with 49 or 784 inputs it reads
MNIST (7x7 pooled / full), with any other input size seeded random data.
The network is built in float64 at its initialization (--seed).
Block labels name the stages by class and rank (Conv2d 1, MaxPool2d 1,
Linear 1, ...): the parameter blocks of H, G, F as "Conv2d 1 (W)", "Conv2d 1 (b)";
seed 001's blocks as "x1 Conv2d 1", "z3 MaxPool2d 1". Heatmap colours (--scale):
symlog by default (linear within a threshold taken from the data), linear, or
one scale per block (tinynet.plotting.scales). --check's torch reference mirrors Linear, Conv2d,
MaxPool2d, AvgPool2d, Flatten and the activations from their definitions.
"""
import os
import re

import click
import numpy as np

from tinynet import curvature as cv
from tinynet.plotting.scales import SCALES

SEED_MATRICES = ("M", "N", "D_x", "D_x_shift", "D_b", "B_b", "D_xx", "D_xz", "D_zx", "D_zz",
                 "T1", "T2", "T3", "T4", "H")
BATCH_MATRICES = {"H": "the Hessian of the batch-mean loss (tinynet.curvature.hessian)",
                  "G": "Gauss-Newton mean_i J_i^T D(f_i, y_i) J_i, D = d2l/df2 (thesis table 3.I)",
                  "F": "Fisher mean_i J_i^T D(f_i) J_i of the predictive distribution (table 3.II)"}
CHAPTER6 = {
    "kfac_A": "KFAC activation factor A = E[(h^T 1)^T (h^T 1)] of the layer, bias last (thesis 6.2.2)",
    "kfac_G": "KFAC output factor G = E[J_a^T D J_a] of the layer (6.2.2; --kfac-curvature gn: exact, "
              "fisher: sampled targets)",
    "cov": "input covariance C = E[(h - mu)(h - mu)^T] of the layer (6.1.1); the mean mu is in the .npz",
    "H_block": "exact Hessian block H_lk between --layer l and --layer2 k (tinynet.curvature.hessian_block)",
    "G_block": "exact Gauss-Newton block G_lk (tinynet.curvature.gauss_newton_block)",
    "F_block": "exact Fisher block F_lk (tinynet.curvature.fisher_block, --fisher-kind)",
    "kron_vs_exact": "KFAC's A ⊗ G beside the exact GN (or Fisher) block it approximates, and their difference",
}
CHOICES = list(SEED_MATRICES) + ["G", "F"] + list(CHAPTER6)
MAX_PIXELS = 600          # heatmaps wider than this are down-sampled views


def build(model, seed):
    """(net, (X, Y) loader) for a MODELS name or an mlp:SIZES[:ACT[:LOSS]] spec."""
    from tinynet.models import DATASET, MODELS, build_model, mlp
    if model in MODELS:
        net = build_model(model, dtype=np.float64, seed=seed)
        return net, DATASET[model]
    if not model.startswith("mlp:"):
        raise click.BadParameter(f"unknown model {model!r}; use one of {', '.join(sorted(MODELS))} "
                                 f"or mlp:SIZES[:ACT[:LOSS]] such as mlp:3-2-2:tanh", param_hint="--model")
    from tinynet.losses import LOSSES
    parts = model.split(":")
    try:
        sizes = [int(s) for s in parts[1].split("-")]
    except ValueError:
        raise click.BadParameter(f"sizes of {model!r} must be integers joined by '-'", param_hint="--model")
    act = parts[2] if len(parts) > 2 else "tanh"
    loss = parts[3] if len(parts) > 3 else "softmax_ce"
    if len(sizes) < 2 or act not in ("sigmoid", "tanh", "relu", "identity") or loss not in LOSSES:
        raise click.BadParameter(f"bad spec {model!r}: mlp:SIZES[:ACT[:LOSS]] with >= 2 sizes, ACT one of "
                                 f"sigmoid tanh relu identity, LOSS one of {', '.join(LOSSES)}",
                                 param_hint="--model")
    net = mlp(sizes, act, LOSSES[loss](), out_activation="sigmoid" if loss == "bce" else None,
              dtype=np.float64, seed=seed)
    dataset = {49: "mnist7-labels", 784: "mnist-labels"}.get(sizes[0]) if loss == "softmax_ce" else None
    return net, dataset or "random"


def load(net, dataset, split, data_dir, start, count, seed):
    """Examples start .. start+count-1 of the dataset (or seeded random data)."""
    if dataset == "random":
        rng = np.random.default_rng(seed + 1)
        n = start + count
        X = rng.standard_normal((n, net.n_in))
        kind = type(net.loss_stage).__name__
        if kind == "SoftmaxCrossEntropyLoss":
            Y = rng.integers(0, net.n_out, n)
        elif kind == "BCELoss":
            Y = (rng.uniform(size=(n, net.n_out)) < 0.5).astype(float)
        else:
            Y = rng.standard_normal((n, net.n_out))
    else:
        from tinynet.data import load_dataset
        X, Y = load_dataset(dataset, split, data_dir)
    if start < 0 or count < 1 or start + count > X.shape[0]:
        raise click.BadParameter(f"examples {start}..{start + count - 1} are outside the {X.shape[0]} "
                                 f"of this dataset split", param_hint="--example/--batch")
    return np.asarray(X[start:start + count], dtype=np.float64), np.asarray(Y[start:start + count])


def stage_names(net):
    """Names of the stages f_1 .. f_L, the loss last: each stage by its class and
    its rank among the stages of that class ("Conv2d 1", "MaxPool2d 1",
    "Linear 1", "Tanh 2", ...; seed 001's stage index l is the position in
    this list, from 1)."""
    seen, names = {}, []
    for s in net.layers:
        kind = type(s).__name__
        seen[kind] = seen.get(kind, 0) + 1
        names.append(f"{kind} {seen[kind]}")
    return names + ["loss"]


def param_blocks(stage, n):
    """[(part, size)] of a stage's n parameters in the flat layout: Linear and
    Conv2d [vec(W); b] (DESIGN.md), batch norm [gamma; beta] (beta alone when
    mean-only), any other stage one part "theta"."""
    from tinynet.layers import BatchNorm, BatchNorm2d, MeanOnlyBatchNorm
    if hasattr(stage, "split") and hasattr(stage, "W"):
        nw = stage.split(np.zeros(n))[0].size
        return [("W", nw), ("b", n - nw)]
    if isinstance(stage, MeanOnlyBatchNorm) or (isinstance(stage, BatchNorm) and not stage.has_scale):
        return [("beta", n)]
    if isinstance(stage, (BatchNorm, BatchNorm2d)) and n % 2 == 0:
        return [("gamma", n // 2), ("beta", n // 2)]
    return [("theta", n)]


def stage_labels(net):
    """Block sizes and labels of the flat parameter vector: each part of each
    stage with parameters, named by the stage and the part ("Conv2d 1 (W)",
    "Conv2d 1 (b)", "BatchNorm 1 (gamma)"; param_blocks)."""
    names = stage_names(net)
    sizes, labels = [], []
    for i, s in net.slices():
        for part, size in param_blocks(net.layers[i], s.stop - s.start):
            sizes.append(size)
            labels.append(f"{names[i]} ({part})")
    return sizes, labels


_SEED_LABEL = re.compile(r"^(x|z|dz)(\d+)$|f(\d+)$")


def name_seed_labels(net, labels):
    """Seed 001's block labels with the stage names: x_l, z_l, and the f_l of
    the vec(d grad f_l) blocks name stage l (1-based, the loss last); dz_l is the
    output of stage l (dz0: the input)."""
    names = ["input"] + stage_names(net)

    def one(label):
        m = _SEED_LABEL.search(label)
        if m is None:
            return label
        l = int(m.group(2) if m.group(2) is not None else m.group(3))
        return f"{label} {names[l]}" if 0 <= l < len(names) else label
    return [one(label) for label in labels]


def compute(net, name, X, Y, fisher_kind, seed):
    """(array, row block sizes, col block sizes, row labels, col labels, meaning)."""
    if name in ("G", "F") or (name == "H" and X.shape[0] > 1):
        sizes, labels = stage_labels(net)
        if name == "H":
            A = cv.hessian(net, X, Y)
        elif name == "G":
            A = cv.gauss_newton(net, X, Y)
        else:
            A = cv.fisher(net, X, kind=fisher_kind, Y=Y, seed=seed)
        return A, sizes, sizes, labels, labels, BATCH_MATRICES[name] + f", batch of {X.shape[0]}"
    m = cv.matrices(net, X[0], Y[0])
    rows, cols, rl, cl = m.blocks(name)
    rl, cl = name_seed_labels(net, rl), name_seed_labels(net, cl)
    return getattr(m, name) if not name.startswith("T") else m.terms[int(name[1]) - 1], \
        rows, cols, rl, cl, cv.NAMES[name]


def downsample(A, f):
    """Means of the f x f tiles of A (the last tiles may be partial)."""
    h, w = A.shape
    H, W = -(-h // f), -(-w // f)
    pad = np.full((H * f, W * f), np.nan)
    pad[:h, :w] = A
    return np.nanmean(pad.reshape(H, f, W, f), axis=(1, 3))


def block_axis(net, l):
    """(sizes, labels) of block l's parameters: its parts ("Linear 2 (W)",
    "Linear 2 (b)"; param_blocks)."""
    names = stage_names(net)
    i, s = cv.block_index(net, l, "--layer")
    parts = param_blocks(net.layers[i], s.stop - s.start)
    return [size for _, size in parts], [f"{names[i]} ({part})" for part, _ in parts]


def compute_chapter6(net, name, X, Y, layer, layer2, kfac_curvature, fisher_kind, seed):
    """(array, row sizes, col sizes, row labels, col labels, meaning, extra arrays, panels)."""
    names = stage_names(net)
    k = layer if layer2 is None else layer2
    batch = f", batch of {X.shape[0]}"
    if name in ("H_block", "G_block", "F_block"):
        if name == "H_block":
            A = cv.hessian_block(net, X, Y, layer, k)
        elif name == "G_block":
            A = cv.gauss_newton_block(net, X, Y, layer, k)
        else:
            A = cv.fisher_block(net, X, layer, k, kind=fisher_kind, Y=Y, seed=seed)
        (rows, rl), (cols, cl) = block_axis(net, layer), block_axis(net, k)
        return A, rows, cols, rl, cl, CHAPTER6[name] + f" (l={layer}, k={k}){batch}", {}, None
    if layer2 is not None:
        raise click.BadParameter(f"--layer2 applies to H_block, G_block and F_block, not {name}",
                                 param_hint="--layer2")
    try:
        i = cv.kronecker.kron_stage(net, layer, f"--matrix {name}")
    except (ValueError, IndexError, TypeError) as e:
        raise click.BadParameter(str(e), param_hint="--layer")
    st, nm = net.layers[i], names[i]
    fin, fout = st.fan_in, st.fan_out
    what = "patch" if st.share > 1 else "h"
    l = int(layer) % len(cv.block_slices(net))
    if name == "cov":
        mu, C = cv.input_moments(net, X)[l]
        return C, [fin], [fin], [f"{nm} {what}"], [f"{nm} {what}"], CHAPTER6[name] + batch, {"mu": mu}, None
    if name in ("kfac_A", "kfac_G"):
        A, G = cv.kfac_factors(net, X, Y, kfac_curvature, exact=True, seed=seed)[l]
        if name == "kfac_A":
            return (np.asarray(A, dtype=np.float64), [fin, 1], [fin, 1], [f"{nm} {what}", "1 (bias)"],
                    [f"{nm} {what}", "1 (bias)"], CHAPTER6[name] + batch, {}, None)
        return (np.asarray(G, dtype=np.float64), [fout], [fout], [f"{nm} a"], [f"{nm} a"],
                CHAPTER6[name] + f" ({kfac_curvature}){batch}", {}, None)
    r = cv.kron_vs_exact(net, X, Y, l, kfac_curvature, seed=seed)
    rows, labels = block_axis(net, l)
    rel = np.abs(r["diff"]).max() / (np.abs(r["exact"]).max() or 1.0)
    meaning = CHAPTER6[name] + f" ({kfac_curvature}){batch}; max |diff| / max |exact| = {rel:.2e}"
    panels = [("A ⊗ G (KFAC)", r["kron"]), ("exact block", r["exact"]), ("A ⊗ G - exact", r["diff"])]
    return r["diff"], rows, rows, labels, labels, meaning, {k: r[k] for k in ("A", "G", "kron", "exact")}, panels


def spectrum(A):
    """(values, what): eigenvalues of a symmetric A (descending), else its singular values."""
    A = np.asarray(A, dtype=np.float64)
    if A.shape[0] == A.shape[1] and np.allclose(A, A.T, rtol=1e-10, atol=1e-12 * (np.abs(A).max() or 1.0)):
        return cv.eigenvalues(A), "eigenvalues (dense eigvalsh)"
    return np.linalg.svd(A, compute_uv=False), "singular values (the matrix is not symmetric)"


def show_spectrum(w, what, name, meaning, out, title, top_k):
    k = min(top_k, len(w))
    neg = int(np.sum(w < 0))
    big = float(np.abs(w).max()) if len(w) else 0.0
    nz = np.abs(w[np.abs(w) > len(w) * np.finfo(np.float64).eps * big])    # above round-off
    cond = (big / nz.min()) if nz.size else float("inf")
    with np.printoptions(precision=6, linewidth=160):
        click.echo(f"{name}: {len(w)} {what} - {meaning}")
        click.echo(f"largest {k}: {w[:k]}")
        if len(w) > k and "Lanczos" not in what:
            click.echo(f"smallest {k}: {w[-k:]}")
        click.echo(f"negative: {neg}; max |value| / min |value| above round-off = {cond:.3e}")
    if out is None:
        return
    if out.endswith(".npz"):
        np.savez(out, eigenvalues=w)
    elif out == "-" or out.endswith(".txt"):
        if out == "-":
            click.echo("\n".join(f"{v:.10g}" for v in w))
        else:
            np.savetxt(out, w, fmt="%.10g", header=f"{name} {what}: {meaning}")
    elif out.endswith(".png"):
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(7, 4.5))
        ax.plot(np.arange(1, len(w) + 1), w, marker="." if len(w) <= 200 else None, lw=1)
        lin = float(nz.min()) if nz.size else 1.0
        ax.set_yscale("symlog", linthresh=max(lin, 1e-12 * float(np.abs(w).max() or 1.0)))
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xlabel("index (descending)")
        ax.set_ylabel("value (symlog)")
        ax.set_title(title + f"\n{what}; {neg} negative, ratio {cond:.2e}", fontsize=9)
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        fig.savefig(out, dpi=120)
        plt.close(fig)
    else:
        raise click.BadParameter("--out must end in .png, .npz or .txt (or be - for stdout)", param_hint="--out")
    if out != "-":
        click.echo(f"wrote the {what} of {name} to {os.path.abspath(out)}")


def heatmap_figure(A, rows, cols, rlabels, clabels, title, scale="symlog", panels=None):
    """A matplotlib Figure of A (or of the (name, matrix) `panels` side by side,
    each with its own colour scale) with its block grid and labels, coloured by
    `scale` (tinynet.plotting.scales: symlog, linear or block)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    if not panels:
        fig, ax = plt.subplots(figsize=_figsize(A.shape))
        _panel(fig, ax, A, rows, cols, rlabels, clabels, title, scale)
        fig.tight_layout()
        return fig
    w, h = _figsize(panels[0][1].shape)
    fig, axes = plt.subplots(1, len(panels), figsize=(min(24, w * len(panels) * 0.75), h))
    for ax, (name, P) in zip(axes, panels):
        _panel(fig, ax, P, rows, cols, rlabels, clabels, name, scale)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def heatmap(A, rows, cols, rlabels, clabels, title, path, scale="symlog", panels=None):
    import matplotlib.pyplot as plt
    fig = heatmap_figure(A, rows, cols, rlabels, clabels, title, scale, panels)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _figsize(shape):
    h, w = shape
    aspect = min(4.0, max(0.25, h / max(w, 1)))
    return 9, max(3.5, min(14, 8 * aspect))


def _panel(fig, ax, A, rows, cols, rlabels, clabels, title, scale="symlog"):
    from tinynet.plotting.scales import block_scaled, norm, symlog_ticks
    maxima = None
    if scale == "block":                          # scaled before any down-sampling: every block fills [-1, 1]
        A, maxima = block_scaled(A, rows, cols)
    f = -(-max(A.shape) // MAX_PIXELS)
    vmax = None
    if f > 1:                                     # a down-sampled view; the .npz has every entry
        A = downsample(A, f)
        rows, cols = [r / f for r in rows], [c / f for c in cols]
        title += f"\n(down-sampled view: means of {f} x {f} tiles"
        if scale == "linear":
            # a few large tiles would leave the rest white: clip the colours at the 99.5th percentile
            vmax = float(np.percentile(np.abs(A), 99.5)) or float(np.abs(A).max()) or 1.0
            title += f"; colours clipped at |value| {vmax:.2g}, the 99.5th percentile"
        title += ")"
    nrm, what = norm(A, scale, vmax)
    im = ax.imshow(A, cmap="RdBu_r", norm=nrm, interpolation="nearest", aspect="auto")
    cb = fig.colorbar(im, ax=ax, shrink=0.8)
    if scale == "symlog":
        cb.set_ticks(symlog_ticks(nrm))
    cb.set_label("entry / max |entry| of its block" if scale == "block" else "entry", fontsize=8)
    ro, co = np.cumsum([0] + list(rows)), np.cumsum([0] + list(cols))
    for r in ro[1:-1]:
        ax.axhline(r - 0.5, color="k", lw=0.6)
    for c in co[1:-1]:
        ax.axvline(c - 0.5, color="k", lw=0.6)
    keep_r = [i for i in range(len(rows)) if rows[i] > 0]
    keep_c = [i for i in range(len(cols)) if cols[i] > 0]
    ax.set_yticks([(ro[i] + ro[i + 1]) / 2 - 0.5 for i in keep_r], [rlabels[i] for i in keep_r], fontsize=7)
    ax.set_xticks([(co[i] + co[i + 1]) / 2 - 0.5 for i in keep_c], [clabels[i] for i in keep_c],
                  fontsize=7, rotation=60, ha="right")
    if maxima is not None:                        # each block's divisor, on blocks big enough to hold it
        big_r, big_c = 0.06 * ro[-1], 0.06 * co[-1]
        for i in keep_r:
            for j in keep_c:
                if rows[i] >= big_r and cols[j] >= big_c:
                    ax.text((co[j] + co[j + 1]) / 2 - 0.5, (ro[i] + ro[i + 1]) / 2 - 0.5,
                            f"max {maxima[i, j]:.2g}", ha="center", va="center", fontsize=6, color="0.15")
    ax.set_title(f"{title}\n{what}", fontsize=9)


def write(A, rows, cols, rlabels, clabels, name, meaning, out, title, extra=None, panels=None, scale="symlog"):
    """Write A (or, for .png with `panels`, the panels side by side) to `out`;
    extra: more named arrays for the .npz; scale: the heatmap's colour scale.
    A .png of a matrix wider than MAX_PIXELS also writes the full arrays to
    the .npz beside it."""
    extra = dict(extra or {})
    if out == "-" or out.endswith(".txt"):
        header = (f"{name} {A.shape[0]}x{A.shape[1]}: {meaning}\nrow blocks "
                  + ", ".join(f"{l}:{s}" for l, s in zip(rlabels, rows)) + "\ncolumn blocks "
                  + ", ".join(f"{l}:{s}" for l, s in zip(clabels, cols)))
        if out == "-":
            click.echo(header)
            with np.printoptions(linewidth=200, precision=4, suppress=True, threshold=A.size + 1):
                click.echo(np.array2string(A))
        else:
            np.savetxt(out, A, fmt="%.10g", header=header)
    elif out.endswith(".npz"):
        np.savez(out, **{name: A, "row_blocks": np.array(rows), "col_blocks": np.array(cols),
                         "row_labels": np.array(rlabels), "col_labels": np.array(clabels)}, **extra)
    elif out.endswith(".png"):
        heatmap(A, rows, cols, rlabels, clabels, title, out, scale, panels)
        if max(A.shape) > MAX_PIXELS:
            full = out[:-4] + ".npz"
            write(A, rows, cols, rlabels, clabels, name, meaning, full, title, extra)
            click.echo(f"the heatmap is a down-sampled view; every entry is in {os.path.abspath(full)}")
    else:
        raise click.BadParameter("--out must end in .png, .npz or .txt (or be - for stdout)", param_hint="--out")


def fd_hessian(net, X, Y, eps=1e-5):
    """Central differences of backprop's gradient, column by column (float64)."""
    theta = net.get_flat()
    H = np.empty((net.n_params, net.n_params))
    for j in range(net.n_params):
        e = theta.copy()
        e[j] += eps
        net.set_flat(e)
        gp = net.gradient(X, Y)
        e[j] -= 2 * eps
        net.set_flat(e)
        H[:, j] = (gp - net.gradient(X, Y)) / (2 * eps)
    net.set_flat(theta)
    return H


def torch_hessian(net, X, Y):
    """torch.func.hessian of a torch mirror of the net, written from the stages'
    definitions and DESIGN.md's layouts, not from tinynet's code (None without
    torch). Image stages reshape the C-major rows to (n, C, H, W) with
    net.shapes and call torch.nn.functional: conv2d with weight
    W.reshape(O, C, kh, kw) (W = vec^-1 column-major of the stage's slice),
    max_pool2d / avg_pool2d (stride defaults to the kernel, no padding)."""
    try:
        import torch
        import torch.nn.functional as tF
    except ImportError:
        return None
    from tinynet.layers import AvgPool2d, Conv2d, Flatten, Identity, Linear, MaxPool2d, ReLU, Sigmoid, Tanh
    from tinynet.losses import BCELoss, MSELoss, SoftmaxCrossEntropyLoss
    acts = {Sigmoid: torch.sigmoid, Tanh: torch.tanh, ReLU: torch.relu, Identity: lambda z: z}
    pools = {MaxPool2d: tF.max_pool2d, AvgPool2d: tF.avg_pool2d}
    for s in list(net.layers) + [net.loss_stage]:
        if not isinstance(s, (Linear, Conv2d, Flatten, MSELoss, BCELoss, SoftmaxCrossEntropyLoss)) \
                and type(s) not in acts and type(s) not in pools:
            raise NotImplementedError(f"no torch mirror for {s!r}")
    Xt = torch.tensor(X, dtype=torch.float64)
    Yt = torch.tensor(net.loss_stage.prepare_targets(Y, net.n_out, np.float64))

    def f(theta):
        h = Xt
        for l, (s, (a, b)) in enumerate(zip(net.layers, net.offsets)):
            if isinstance(s, Linear):
                k = s.n_in * s.n_out
                h = h @ theta[a:a + k].reshape(s.n_in, s.n_out) + theta[a + k:b]
            elif isinstance(s, Conv2d):
                C, H, W = net.shapes[l]
                O, K = s.out_channels, C * s.kh * s.kw
                weight = theta[a:a + K * O].reshape(K, O).T.reshape(O, C, s.kh, s.kw)
                h = tF.conv2d(h.reshape(-1, C, H, W), weight, theta[a + K * O:b],
                              stride=(s.sh, s.sw), padding=(s.ph, s.pw)).reshape(h.shape[0], -1)
            elif type(s) in pools:
                h = pools[type(s)](h.reshape((-1,) + tuple(net.shapes[l])), (s.kh, s.kw),
                                   (s.sh, s.sw)).reshape(h.shape[0], -1)
            elif isinstance(s, Flatten):
                pass                                    # rows are already C-major flat
            else:
                h = acts[type(s)](h)
        if isinstance(net.loss_stage, MSELoss):
            return ((h - Yt) ** 2).sum(1).mean()
        if isinstance(net.loss_stage, BCELoss):
            return -(Yt * torch.log(h) + (1 - Yt) * torch.log(1 - h)).sum(1).mean()
        return -(Yt * torch.log_softmax(h, 1)).sum(1).mean()
    return torch.func.hessian(f)(torch.tensor(net.get_flat())).numpy()


def list_chapter6(net):
    click.echo(f"\nblocks (--layer / --layer2 L: positions among the stages with parameters):")
    names = stage_names(net)
    for l, (i, s) in enumerate(cv.block_slices(net)):
        click.echo(f"  {l}: {names[i]} (net.layers[{i}] {net.layers[i]!r}), {s.stop - s.start:,} parameters")
    click.echo(f"\n{'name':<14} {'layer':>5} {'shape':>18}  meaning (batch over --batch examples; chapter 6)")
    for l, (i, s) in enumerate(cv.block_slices(net)):
        p = s.stop - s.start
        click.echo(f"{'H_block':<14} {l:>5} {str((p, p)):>18}  {CHAPTER6['H_block']} (G_block, F_block alike)")
        if l in cv.kron_layers(net):
            st = net.layers[i]
            for name, shape in (("kfac_A", (st.fan_in + 1,) * 2), ("kfac_G", (st.fan_out,) * 2),
                                ("cov", (st.fan_in,) * 2), ("kron_vs_exact", (p, p))):
                click.echo(f"{name:<14} {l:>5} {str(shape):>18}  {CHAPTER6[name]}")
    click.echo("\n--spectrum: eigenvalues of any of them; H / G / F of a big net: top-k by Lanczos (eigsh)")


def list_matrices(net, X, Y):
    m = cv.matrices(net, X[0], Y[0])
    click.echo(f"{net!r}: {net.n_params} parameters; stages f_1..f_{len(m.p)} = " + ", ".join(m.stages))
    click.echo(f"activation sizes a_0..a_L = {m.a}; parameter sizes p_1..p_L = {m.p}\n")
    click.echo(f"{'name':<10} {'shape':>13}  meaning (one example; seed 001)")
    for name in SEED_MATRICES:
        A = getattr(m, name) if not name.startswith("T") else m.terms[int(name[1]) - 1]
        click.echo(f"{name:<10} {str(A.shape):>13}  {cv.NAMES[name]}")
    click.echo(f"{'b':<10} {str(tuple(len(b) for b in m.b)):>13}  backward vectors b_1..b_L, M b = e_L")
    click.echo(f"\n{'name':<10} {'shape':>13}  meaning (batch mean over --batch examples)")
    for name, meaning in BATCH_MATRICES.items():
        click.echo(f"{name:<10} {str((net.n_params, net.n_params)):>13}  {meaning}")
    list_chapter6(net)


@click.command("inspect")
@click.option("--model", default="tiny-mlp", show_default=True,
              help="a MODELS name, or mlp:SIZES[:ACT[:LOSS]] (e.g. mlp:3-2-2:tanh)")
@click.option("--matrix", type=click.Choice(CHOICES), default="H", show_default=True,
              help="seed 001's matrices (one example), H / G / F (batch mean), "
                   "or the chapter-6 / block matrices of --layer")
@click.option("--example", type=int, default=0, show_default=True, help="index of the (first) example")
@click.option("--batch", type=int, default=1, show_default=True,
              help="examples in the batch for H, G, F (H with --batch 1 is seed 001's H)")
@click.option("--split", type=click.Choice(["train", "test"]), default="train", show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="dataset folder")
@click.option("--seed", type=int, default=0, show_default=True, help="initialization seed of the network")
@click.option("--fisher-kind", type=click.Choice(list(cv.FISHER_KINDS)), default="exact", show_default=True)
@click.option("--out", default=None, help="FILE.png (heatmap), FILE.npz, FILE.txt, or - (text to stdout)")
@click.option("--list", "list_", is_flag=True, help="list every matrix with its shape and meaning")
@click.option("--check", is_flag=True,
              help="largest difference between the assembled H and finite-difference / torch references")
@click.option("--layer", type=int, default=0, show_default=True,
              help="block index l of the chapter-6 / block matrices (see --list)")
@click.option("--layer2", type=int, default=None, help="block index k of H_block / G_block / F_block (default l)")
@click.option("--kfac-curvature", type=click.Choice(["gn", "fisher"]), default="gn", show_default=True,
              help="G of kfac_G / kron_vs_exact: exact GN, or the Fisher from sampled targets")
@click.option("--spectrum", "spectrum_", is_flag=True, help="eigenvalues of the matrix instead of its entries")
@click.option("--top-k", type=int, default=10, show_default=True, help="eigenvalues printed; Lanczos computes these")
@click.option("--lanczos", is_flag=True, help="--spectrum of H / G / F by Lanczos even when the dense matrix fits")
@click.option("--scale", type=click.Choice(SCALES), default="symlog", show_default=True,
              help="heatmap colours: symlog (linear within a threshold taken from the data, the 5% quantile "
                   "of the nonzero |entries|), linear, or block (each block divided by its max |entry|)")
def inspect(model, matrix, example, batch, split, data_dir, seed, fisher_kind, out, list_, check,
            layer, layer2, kfac_curvature, spectrum_, top_k, lanczos, scale):
    """Print, plot or save a matrix of the math (seed 001, thesis ch. 3 and 6), or its spectrum."""
    net, dataset = build(model, seed)
    try:
        from tinynet.curvature.seed import dense_bytes
        chapter6 = matrix in CHAPTER6
        by_lanczos = spectrum_ and matrix in ("H", "G", "F")
        if by_lanczos and not lanczos:
            try:
                cv.check_dense(net, what="the dense matrix")
            except cv.DenseTooLarge:
                by_lanczos = True
            else:
                by_lanczos = False
        if not (chapter6 or by_lanczos or list_):
            cv.check_dense(net, nbytes=max(dense_bytes(net), 2 * 8 * net.n_params ** 2),
                           what="the dense matrices of `tinynet inspect`")        # before reading any data
        X, Y = load(net, dataset, split, data_dir, example, batch, seed)
        if list_:
            try:
                cv.check_dense(net, nbytes=max(dense_bytes(net), 2 * 8 * net.n_params ** 2),
                               what="the dense matrices of `tinynet inspect`")
            except cv.DenseTooLarge as e:
                click.echo(f"{net!r}: {net.n_params:,} parameters; seed 001's matrices and the full H, G, F "
                           f"are not listed: {e}")
                list_chapter6(net)
            else:
                list_matrices(net, X, Y)
            return
        if by_lanczos:
            cname = {"H": "hessian", "G": "gn", "F": "fisher"}[matrix]
            info = {}
            w = cv.top_eigenvalues(net, X, Y, cname, k=top_k, info=info)
            title = f"{matrix} ({model}, examples {example}..{example + batch - 1})"
            show_spectrum(w, f"largest eigenvalues (Lanczos, scipy eigsh, {info['matvecs']} products)", matrix,
                          BATCH_MATRICES[matrix] + f", batch of {batch}", out, title, top_k)
            return
        if check:
            H = cv.hessian(net, X, Y) if batch > 1 else cv.matrices(net, X[0], Y[0]).H
            scale = np.abs(H).max()
            click.echo(f"{net!r}, {net.n_params} parameters, examples {example}..{example + batch - 1}: "
                       f"max |H| = {scale:.3e}")
            Hf = fd_hessian(net, X, Y)
            d = np.abs(H - Hf).max()
            click.echo(f"finite differences (central, eps 1e-5): max |H - H_fd| = {d:.3e} (relative {d / scale:.1e})")
            try:
                Ht = torch_hessian(net, X, Y)
            except NotImplementedError as e:
                click.echo(f"torch autograd: {e}, skipped")
            else:
                _report_torch(H, Ht, scale)
            return
        extra, panels = {}, None
        if chapter6:
            A, rows, cols, rl, cl, meaning, extra, panels = compute_chapter6(
                net, matrix, X, Y, layer, layer2, kfac_curvature, fisher_kind, seed)
        else:
            A, rows, cols, rl, cl, meaning = compute(net, matrix, X, Y, fisher_kind, seed)
    except cv.DenseTooLarge as e:
        raise click.ClickException(f"{model}: {e}")
    except (IndexError, TypeError) as e:
        raise click.BadParameter(str(e), param_hint="--layer/--layer2")
    if spectrum_:
        title = f"{matrix} {A.shape[0]}x{A.shape[1]} ({model}, example {example}" + \
            (f"..{example + batch - 1})" if batch > 1 else ")")
        if matrix == "kron_vs_exact":          # the two matrices whose spectra matter, side by side
            for key in ("kron", "exact"):
                w, what = spectrum(extra[key])
                stem, ext = os.path.splitext(out) if out not in (None, "-") else (None, None)
                show_spectrum(w, what, f"{matrix}:{key}", meaning, out if stem is None else f"{stem}_{key}{ext}",
                              title + f" {key}", top_k)
            return
        w, what = spectrum(A)
        show_spectrum(w, what, matrix, meaning, out, title, top_k)
        return
    _show(A, rows, cols, rl, cl, matrix, meaning, model, example, batch, out, extra, panels, scale)


def _report_torch(H, Ht, scale):
    if Ht is None:
        click.echo("torch autograd: torch is not installed, skipped")
    else:
        d = np.abs(H - Ht).max()
        click.echo(f"torch.func.hessian: max |H - H_torch| = {d:.3e} (relative {d / scale:.1e})")


def _show(A, rows, cols, rl, cl, matrix, meaning, model, example, batch, out, extra=None, panels=None,
          scale="symlog"):
    title = f"{matrix} {A.shape[0]}x{A.shape[1]} ({model}, example {example}" + \
            (f"..{example + batch - 1})" if batch > 1 and (matrix in ("H", "G", "F") or matrix in CHAPTER6)
             else ")") + f"\n{meaning}"
    if out is None:
        click.echo(f"{matrix}: shape {A.shape}, max |entry| {np.abs(A).max():.4e}, "
                   f"nonzeros {np.count_nonzero(A)} - {meaning}\n(use --out FILE.png|.npz|.txt or --out - to see it)")
        return
    write(A, rows, cols, rl, cl, matrix, meaning, out, title, extra, panels, scale)
    if out != "-":
        click.echo(f"wrote {matrix} {A.shape} to {os.path.abspath(out)}")
