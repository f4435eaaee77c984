"""Curves of training runs (`tinynet plot RUN...`), drawn from the run folders
that tinynet.train writes (tinynet/train/rundir.py): metrics.csv gives the
numbers, config.json says what each curve is.

    runs = [read_run(p) for p in paths]
    fig, n_curves, notes = figure(runs, ["train_loss", "batch_loss"], x="updates")

- Labels come from config.json's "meta": the optimizer, its lr and its key
  options (KEY_OPTIONS, shown unless off: 0, False or None), the model when the
  runs use several. Settings shared by every run go to the title instead. When
  two labels are equal, both get the settings in which those runs differ, and
  the folder name as the last resort (a run without config.json is labelled by
  its folder name).
- One panel per metric kind. A loss column (train_loss, test_loss, batch_loss)
  has the kind of the network's loss stage (the "network" repr in
  config.json): losses of different kinds never share an axis, and an error
  rate never shares one with a loss. Runs of different models share a panel
  when their losses are of one kind; in a panel the line style names the column.
- Runs whose config.json agree in everything but the seed (and the bookkeeping
  of IGNORED_TOP / IGNORED_TRAINER) form one group, drawn as the mean over the
  seeds at the evaluations they all have, with a band (BANDS: min-max or +-1
  standard deviation); the legend says which.
- batch_loss, the mean minibatch loss over the steps since the previous
  evaluation (the trainer's per-step losses, logged at each evaluation), is
  drawn at the step that closes its window.
"""
import json
import math
import os
import re

import numpy as np

from tinynet.train import CONFIG, METRICS, RunFileError, read_metrics
from tinynet.train.files import read_json

# y-axis names of the losses (DESIGN.md: per-example loss l_i, batch loss = mean over examples)
LOSS_UNITS = {
    "MSELoss": "squared error (sum over outputs, mean over examples)",
    "SoftmaxCrossEntropyLoss": "cross-entropy (nats)",
    "BCELoss": "binary cross-entropy (nats, sum over outputs, mean over examples)",
}
LOSS_COLUMNS = {"train_loss": "training loss", "test_loss": "test loss",
                "batch_loss": "minibatch loss (mean since the previous evaluation)"}
ERROR_COLUMNS = {"test_error": "test error"}
COLUMNS = tuple(LOSS_COLUMNS) + tuple(ERROR_COLUMNS)
STYLE = {"train_loss": "-", "test_loss": "--", "batch_loss": ":", "test_error": "-"}
# optimizer options worth a place in every label (when set to something other than off)
KEY_OPTIONS = ("momentum", "nesterov", "schedule", "curvature", "structure", "eps", "damping", "T",
               "alpha", "kl_clip", "clip")
X_AXES = {"updates": ("step", "updates"), "time": ("seconds", "training time (s)")}
BANDS = {"minmax": "band: min-max over the seeds", "std": "band: mean +- 1 std over the seeds"}
# config.json entries that do not change the numbers of a run (seeds are dropped at every depth)
# (tinynet.train.loop writes them: "command" repeats meta and trainer with the folder's name)
IGNORED_TOP = ("resumed", "restarts", "environment", "command")
IGNORED_TRAINER = ("seed", "out", "resume", "overwrite", "from_last_good", "progress", "progress_interval")
_LOSS_OF_NETWORK = re.compile(r"\],\s*(\w+)\(")      # Sequential([...], MSELoss(), ...)
_MISSING = object()


class Run:
    """One run folder: `rows` of metrics.csv (dicts, tinynet.train.read_metrics)
    and its `config` (config.json, {} when the folder has none)."""

    def __init__(self, path, rows, config):
        self.path, self.rows, self.config = path, rows, config or {}
        self.name = os.path.basename(os.path.normpath(path))

    @property
    def meta(self):
        return self.config.get("meta") or {}

    @property
    def seed(self):
        return (self.config.get("trainer") or {}).get("seed")

    @property
    def loss_kind(self):
        """Class name of the network's loss stage ("MSELoss", ...), or None."""
        m = _LOSS_OF_NETWORK.search(str(self.config.get("network", "")))
        return m.group(1) if m else None

    @property
    def columns(self):
        return list(self.rows[0]) if self.rows else []

    def __repr__(self):
        return f"Run({self.path!r}, {len(self.rows)} evaluations, {label_parts(settings(self))})"


def read_run(path):
    """A Run from folder `path`; a missing or malformed metrics.csv or a damaged
    config.json raises RunFileError (one line)."""
    mpath = os.path.join(path, METRICS)
    if not os.path.exists(mpath):
        raise RunFileError(f"{path}: no {METRICS} (is it a run directory?)")
    rows = read_metrics(mpath)
    cpath = os.path.join(path, CONFIG)
    config = read_json(cpath, "run configuration") if os.path.exists(cpath) else None
    if config is not None and not isinstance(config, dict):
        raise RunFileError(f"run configuration {cpath} is damaged: it is not a JSON object")
    return Run(path, rows, config)


# -- what a run is: labels, groups, titles ------------------------------------------------------
def settings(run):
    """The run's settings as one flat, ordered dict (label order): model,
    optimizer, lr, the optimizer's options, the model's options, the other
    meta entries, the trainer's settings that change the numbers, the seed."""
    m, t = run.meta, run.config.get("trainer") or {}
    s = {"model": m.get("model"), "optimizer": m.get("optimizer") or run.config.get("optimizer") or run.name,
         "lr": m.get("lr")}
    for k, v in sorted((m.get("options") or {}).items()):
        s[k] = v
    for k, v in sorted((m.get("model_options") or {}).items()):
        s[k if k not in s else f"model.{k}"] = v
    for k, v in m.items():
        if k not in ("model", "optimizer", "lr", "options", "model_options") and k not in s:
            s[k] = v
    for k in ("batch_size", "steps", "epochs", "time_budget", "eval_every", "eval_subset"):
        if t.get(k) is not None:
            s[k] = t[k]
    if run.config.get("device") is not None and "device" not in s:
        s["device"] = run.config["device"]
    s["seed"] = run.seed
    return {k: v for k, v in s.items() if v is not None or k in (m.get("options") or {})}


def _fmt(v):
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"), sort_keys=True)
    return "none" if v is None else str(v)


def _off(v):
    return v is None or v is False or (isinstance(v, (int, float)) and not isinstance(v, bool) and v == 0)


def label_parts(s, show_model=False):
    """The base label of settings `s`: [model:] optimizer lr=.. key options."""
    parts = ([f"{s['model']}:"] if show_model and s.get("model") else []) + [str(s.get("optimizer"))]
    if s.get("lr") is not None:
        parts.append(f"lr={_fmt(s['lr'])}")
    parts += [f"{k}={_fmt(s[k])}" for k in KEY_OPTIONS if k in s and not _off(s[k])]
    return " ".join(parts)


def labels(setting_list, names):
    """One label per settings dict; equal labels get what differs among their
    runs, then the folder names (`names`) if they are still equal."""
    show_model = len({s["model"] for s in setting_list if s.get("model")}) > 1
    labs = [label_parts(s, show_model) for s in setting_list]
    base = ("model", "optimizer", "lr") + KEY_OPTIONS
    for lab in sorted(set(labs)):
        idx = [i for i, x in enumerate(labs) if x == lab]
        if len(idx) < 2:
            continue
        keys = []
        for i in idx:
            keys += [k for k in setting_list[i] if k not in keys and k not in base]
        differ = [k for k in keys
                  if len({_fmt(setting_list[i].get(k, _MISSING)) for i in idx}) > 1]
        for i in idx:
            extra = [f"{k}={_fmt(setting_list[i][k])}" for k in differ if k in setting_list[i]]
            labs[i] = " ".join([lab] + extra)
    counts = {x: labs.count(x) for x in labs}
    return [f"{x} ({n})" if counts[x] > 1 else x for x, n in zip(labs, names)]


def _drop_seeds(obj):
    if isinstance(obj, dict):
        return {k: _drop_seeds(v) for k, v in obj.items() if k != "seed"}
    if isinstance(obj, list):
        return [_drop_seeds(v) for v in obj]
    return obj


def identity(run):
    """What must agree for two runs to be seeds of one setting: config.json
    without its seeds and bookkeeping (a run without config.json is its own)."""
    if not run.config:
        return ("folder", os.path.realpath(run.path))
    c = {k: v for k, v in run.config.items() if k not in IGNORED_TOP}
    c["trainer"] = {k: v for k, v in (c.get("trainer") or {}).items() if k not in IGNORED_TRAINER}
    return json.dumps(_drop_seeds(c), sort_keys=True, default=str)


def group_runs(runs, by_seed=True):
    """Lists of runs, in the order first seen: runs equal but for the seed
    together when by_seed, else one run per group."""
    if not by_seed:
        return [[r] for r in runs]
    groups = {}
    for r in runs:
        groups.setdefault(identity(r), []).append(r)
    return list(groups.values())


def default_title(runs):
    models = list(dict.fromkeys(r.meta.get("model") for r in runs if r.meta.get("model")))
    data = list(dict.fromkeys(r.meta.get("dataset") for r in runs if r.meta.get("dataset")))
    if not models:
        return "training curves"
    return ", ".join(models) + (" on " + ", ".join(data) if data else "")


def _shared_settings(setting_list):
    """Settings equal in every run and not in the labels (for the title)."""
    skip = ("model", "optimizer", "lr", "seed", "dataset") + KEY_OPTIONS
    first = setting_list[0]
    return {k: v for k, v in first.items()
            if k not in skip and all(_fmt(s.get(k, _MISSING)) == _fmt(v) for s in setting_list[1:])}


# -- metric kinds ------------------------------------------------------------------------------
def metric_kind(run, column):
    """The kind of axis a column goes on: ("loss", loss class or None),
    ("error",) or ("column", name)."""
    if column in LOSS_COLUMNS:
        return ("loss", run.loss_kind)
    if column in ERROR_COLUMNS:
        return ("error",)
    return ("column", column)


def kind_ylabel(kind):
    if kind[0] == "loss":
        if kind[1] is None:
            return "loss (kind unknown: the run has no config.json)"
        return LOSS_UNITS.get(kind[1], f"loss ({kind[1]})")
    if kind[0] == "error":
        return "error rate (fraction of examples misclassified)"
    return kind[1]


def column_name(column):
    return LOSS_COLUMNS.get(column) or ERROR_COLUMNS.get(column) or column


# -- the figure --------------------------------------------------------------------------------
def _points(run, column, xkey, positive):
    """{step: (x, y)} of the finite values of `column` (positive ones only on a log axis)."""
    out = {}
    for r in run.rows:
        y, x = r.get(column), r.get(xkey)
        if y is None or x is None or not math.isfinite(y) or (positive and not y > 0):
            continue
        out[r["step"]] = (x, y)
    return out


def _curve(group, column, xkey, positive, band):
    """(x, mean, lo, hi, runs used) over the steps that every run of the group
    with values has; lo = hi = None for a single run."""
    pts = [p for p in (_points(r, column, xkey, positive) for r in group) if p]
    if not pts:
        return None
    steps = sorted(set.intersection(*(set(p) for p in pts)))
    if not steps:
        return None
    X = np.array([[p[s][0] for s in steps] for p in pts])
    Y = np.array([[p[s][1] for s in steps] for p in pts])
    x, mean = X.mean(axis=0), Y.mean(axis=0)
    if len(pts) == 1:
        return x, mean, None, None, 1
    if band == "std":
        sd = Y.std(axis=0, ddof=1)
        lo, hi = mean - sd, mean + sd
        if positive:                       # a log axis cannot show a band below zero
            lo = np.maximum(lo, Y.min(axis=0) * 0.5)
    else:
        lo, hi = Y.min(axis=0), Y.max(axis=0)
    return x, mean, lo, hi, len(pts)


def _plain_log_ticks(ax):
    """Tick labels 2, 3, 0.5 instead of 2x10^0 on a log axis spanning less than two decades."""
    from matplotlib.ticker import FuncFormatter
    lo, hi = ax.get_ylim()
    if lo > 0 and hi / lo < 100:
        fmt = FuncFormatter(lambda v, _: f"{v:.3g}")
        ax.yaxis.set_major_formatter(fmt)
        ax.yaxis.set_minor_formatter(fmt)
        ax.tick_params(axis="y", which="minor", labelsize=7)


def figure(runs, columns=("train_loss",), x="updates", band="minmax", title=None, log=True, by_seed=True):
    """(matplotlib Figure, number of curves drawn, notes) for the runs: one
    panel per metric kind, a shared legend below the panels. log: log-scale
    loss axes (error rates and other columns stay linear). Raises ValueError
    when there is nothing to draw."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    if x not in X_AXES:
        raise ValueError(f"x must be one of {', '.join(X_AXES)}, got {x!r}")
    if band not in BANDS:
        raise ValueError(f"band must be one of {', '.join(BANDS)}, got {band!r}")
    xkey, xlabel = X_AXES[x]
    for r in runs:
        if r.rows and xkey not in r.rows[0]:
            raise ValueError(f"{os.path.join(r.path, METRICS)} has no {xkey!r} column: "
                             f"it is not a tinynet metrics file")
    groups = group_runs(runs, by_seed)
    gsettings = []
    for g in groups:
        s = settings(g[0])
        if len(g) > 1:
            s.pop("seed", None)
        gsettings.append(s)
    glabels = labels(gsettings, [g[0].name if len(g) == 1 else g[0].name + ", ..." for g in groups])

    notes, curves = [], []           # curves: (kind, group index, column, curve)
    for gi, g in enumerate(groups):
        for col in columns:
            kind = metric_kind(g[0], col)
            positive = log and kind[0] == "loss"
            c = _curve(g, col, xkey, positive, band)
            if c is None:
                notes.append(f"{', '.join(r.path for r in g)}: no {col} values, skipped")
                continue
            if c[4] < len(g):
                notes.append(f"{glabels[gi]}: {len(g) - c[4]} of {len(g)} runs have no {col} values")
            curves.append((kind, gi, col, c))
    if not curves:
        raise ValueError("nothing to plot")

    kinds = list(dict.fromkeys(k for k, *_ in curves))
    ncols = min(3, len(kinds))
    nrows = -(-len(kinds) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(6.4, 4.8 * ncols), 4.2 * nrows + 0.9), squeeze=False,
                             layout="constrained")
    axes = axes.ravel()
    for ax in axes[len(kinds):]:
        ax.remove()
    panel = dict(zip(kinds, axes))
    several_models = len({s["model"] for s in gsettings if s.get("model")}) > 1
    for kind, ax in panel.items():
        mine = [c for c in curves if c[0] == kind]
        for _, gi, col, (xs, mean, lo, hi, n) in mine:
            color = f"C{gi % 10}"
            ax.plot(xs, mean, color=color, linestyle=STYLE.get(col, "-"),
                    lw=1.0 if col == "batch_loss" else 1.6, marker="." if len(xs) <= 30 else None, ms=4)
            if lo is not None:
                ax.fill_between(xs, lo, hi, color=color, alpha=0.18, lw=0)
        cols = list(dict.fromkeys(c[2] for c in mine))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(kind_ylabel(kind).replace(" (", "\n(", 1) if len(kind_ylabel(kind)) > 30
                      else kind_ylabel(kind))
        if log and kind[0] == "loss":
            ax.set_yscale("log")
            _plain_log_ticks(ax)
        ax.grid(True, which="both", alpha=0.3)
        what = " / ".join(column_name(c).split(" (")[0] for c in cols)
        models = list(dict.fromkeys(str(gsettings[c[1]].get("model")) for c in mine))
        ax.set_title(what + (f" ({', '.join(models)})" if several_models else ""), fontsize=9)

    handles, texts = [], []
    for gi, g in enumerate(groups):
        if not any(c[1] == gi for c in curves):
            continue
        handles.append(Line2D([], [], color=f"C{gi % 10}", lw=1.6))
        seeds = ", ".join(_fmt(r.seed) for r in g)
        texts.append(glabels[gi] if len(g) == 1 else
                     f"{glabels[gi]}\n  mean of {len(g)} runs (seeds {seeds}); {BANDS[band]}")
    shared_cols = []                   # columns that share a panel: the line style tells them apart
    for kind in kinds:
        cols = list(dict.fromkeys(c[2] for c in curves if c[0] == kind))
        shared_cols += [c for c in cols if len(cols) > 1 and c not in shared_cols]
    if len({STYLE.get(c, "-") for c in shared_cols}) > 1:
        for col in shared_cols:
            handles.append(Line2D([], [], color="0.3", linestyle=STYLE.get(col, "-"), lw=1.4))
            texts.append(column_name(col))
    # below the panels: never over the data or the title, and as wide as the figure
    fig.legend(handles, texts, loc="outside lower center", ncols=min(3, len(texts)), fontsize=8, frameon=False)
    shared = _shared_settings(gsettings)
    sub = ", ".join(f"{k}={_fmt(v)}" for k, v in shared.items()
                    if v is not None and k not in ("dtype", "device", "eval_subset"))
    fig.suptitle((title or default_title(runs)) + (f"\n{sub}" if sub and title is None else ""), fontsize=10)
    return fig, len(curves), notes
