"""`tinynet inspect`: print, plot or save any matrix of the math for a small net.

  tinynet inspect --model tiny-mlp --list
  tinynet inspect --model tiny-mlp --matrix M --example 0 --out M.png
  tinynet inspect --model tiny-mlp --matrix H --batch 16 --out H.npz
  tinynet inspect --model mlp:3-2-2:tanh --matrix D_zz --out -          (text to stdout)
  tinynet inspect --model tiny-mlp --check
  tinynet inspect --model tiny-cnn --matrix G --batch 8 --out G.png   (a 216-parameter CNN)

Matrices: seed 001's M, N, D_x, D_x_shift, D_b, B_b, D_xx, D_xz, D_zx, D_zz, T1-T4
and H for one example (tinynet.curvature.matrices); H, G (Gauss-Newton) and F
(Fisher) of the batch-mean loss over --batch examples starting at --example.
--model takes a name of tinynet.models.MODELS or `mlp:SIZES[:ACT[:LOSS]]`
(e.g. mlp:3-2-2:tanh:mse) for a small MLP: with 49 or 784 inputs it reads
MNIST (7x7 pooled / full), with any other input size seeded random data.
The network is built in float64 at its initialization (--seed).
Block labels name the stages by kind and rank (conv1, pool1, fc1, ...): the
parameter blocks of H, G, F as "conv1 W", "conv1 b"; seed 001's blocks as
"x1 conv1", "z3 pool1". --check's torch reference mirrors Linear, Conv2d,
MaxPool2d, AvgPool2d, Flatten and the activations from their definitions.
"""
import os
import re

import click
import numpy as np

from tinynet import curvature as cv

SEED_MATRICES = ("M", "N", "D_x", "D_x_shift", "D_b", "B_b", "D_xx", "D_xz", "D_zx", "D_zz",
                 "T1", "T2", "T3", "T4", "H")
BATCH_MATRICES = {"H": "the Hessian of the batch-mean loss (tinynet.curvature.hessian)",
                  "G": "Gauss-Newton mean_i J_i^T D(f_i, y_i) J_i, D = d2l/df2 (thesis table 3.I)",
                  "F": "Fisher mean_i J_i^T D(f_i) J_i of the predictive distribution (table 3.II)"}
CHOICES = list(SEED_MATRICES) + ["G", "F"]


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
    """Names of the stages f_1 .. f_L, the loss last: each stage by its kind and
    its rank among the stages of that kind (conv1, pool1, conv2, fc1, bn1,
    relu1, ...; seed 001's stage index l is the position in this list, from 1)."""
    from tinynet.layers import AvgPool2d, BatchNorm, BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, \
        MeanOnlyBatchNorm
    from tinynet.layers.activation import Activation
    kinds = {Conv2d: "conv", Linear: "fc", MaxPool2d: "pool", AvgPool2d: "pool", BatchNorm: "bn",
             MeanOnlyBatchNorm: "bn", BatchNorm2d: "bn2d", Flatten: "flatten"}
    seen, names = {}, []
    for s in net.layers:
        kind = kinds.get(type(s)) or (s.kind if isinstance(s, Activation) else type(s).__name__.lower())
        seen[kind] = seen.get(kind, 0) + 1
        names.append(f"{kind}{seen[kind]}")
    return names + ["loss"]


def stage_labels(net):
    """Block sizes and labels of the flat parameter vector: for each stage with
    parameters its W and b blocks (Linear, Conv2d: "conv1 W", "conv1 b"; the
    [vec(W); b] layout of DESIGN.md), or one block named by the stage ("bn1")."""
    names = stage_names(net)
    sizes, labels = [], []
    for i, s in net.slices():
        stage, n = net.layers[i], s.stop - s.start
        if hasattr(stage, "split") and hasattr(stage, "W"):
            nw = stage.split(np.zeros(n))[0].size
            sizes += [nw, n - nw]
            labels += [f"{names[i]} W", f"{names[i]} b"]
        else:
            sizes.append(n)
            labels.append(names[i])
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


def heatmap(A, rows, cols, rlabels, clabels, title, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    h, w = A.shape
    aspect = min(4.0, max(0.25, h / max(w, 1)))
    fig, ax = plt.subplots(figsize=(9, max(3.5, min(14, 8 * aspect))))
    vmax = float(np.abs(A).max()) or 1.0          # symmetric colour scale around 0
    im = ax.imshow(A, cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest", aspect="auto")
    fig.colorbar(im, ax=ax, shrink=0.8)
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
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(A, rows, cols, rlabels, clabels, name, meaning, out, title):
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
                         "row_labels": np.array(rlabels), "col_labels": np.array(clabels)})
    elif out.endswith(".png"):
        heatmap(A, rows, cols, rlabels, clabels, title, out)
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


@click.command("inspect")
@click.option("--model", default="tiny-mlp", show_default=True,
              help="a MODELS name, or mlp:SIZES[:ACT[:LOSS]] (e.g. mlp:3-2-2:tanh)")
@click.option("--matrix", type=click.Choice(CHOICES), default="H", show_default=True,
              help="seed 001's matrices (one example), or H / G / F (batch mean)")
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
def inspect(model, matrix, example, batch, split, data_dir, seed, fisher_kind, out, list_, check):
    """Print, plot or save a matrix of the math (seed 001, thesis ch. 3) for a small net."""
    net, dataset = build(model, seed)
    try:
        from tinynet.curvature.seed import dense_bytes
        cv.check_dense(net, nbytes=max(dense_bytes(net), 2 * 8 * net.n_params ** 2),
                       what="the dense matrices of `tinynet inspect`")        # before reading any data
        X, Y = load(net, dataset, split, data_dir, example, batch, seed)
        if list_:
            list_matrices(net, X, Y)
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
        A, rows, cols, rl, cl, meaning = compute(net, matrix, X, Y, fisher_kind, seed)
    except cv.DenseTooLarge as e:
        raise click.ClickException(f"{model}: {e}")
    _show(A, rows, cols, rl, cl, matrix, meaning, model, example, batch, out)


def _report_torch(H, Ht, scale):
    if Ht is None:
        click.echo("torch autograd: torch is not installed, skipped")
    else:
        d = np.abs(H - Ht).max()
        click.echo(f"torch.func.hessian: max |H - H_torch| = {d:.3e} (relative {d / scale:.1e})")


def _show(A, rows, cols, rl, cl, matrix, meaning, model, example, batch, out):
    title = f"{matrix} {A.shape[0]}x{A.shape[1]} ({model}, example {example}" + \
            (f"..{example + batch - 1})" if batch > 1 and matrix in ("H", "G", "F") else ")") + f"\n{meaning}"
    if out is None:
        click.echo(f"{matrix}: shape {A.shape}, max |entry| {np.abs(A).max():.4e}, "
                   f"nonzeros {np.count_nonzero(A)} - {meaning}\n(use --out FILE.png|.npz|.txt or --out - to see it)")
        return
    write(A, rows, cols, rl, cl, matrix, meaning, out, title)
    if out != "-":
        click.echo(f"wrote {matrix} {A.shape} to {os.path.abspath(out)}")
