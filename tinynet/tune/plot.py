"""The thesis's search scatter plots (figures 2.2 and 4.1): the trials of a search
over two of its axes (log axes drawn in log10), colour = final cost, the
1-nearest-neighbour cost landscape of biased random search behind them, the
best trial starred and diverged / failed trials as red crosses apart from the
colour scale. Several searches side by side share one colour scale.

    scatter([trials_grid, trials_random, trials_brs], "fig.png", titles=[...])

A one-axis search is drawn as cost against that axis.
"""
import numpy as np

from tinynet.tune.brs import model_costs


def _label(axis):
    return f"{axis.name} (log10)" if axis.kind == "log" else axis.name


def _color_norm(costs):
    from matplotlib.colors import LogNorm, Normalize
    lo, hi = float(np.min(costs)), float(np.max(costs))
    if lo > 0 and hi / lo > 10:
        return LogNorm(lo, hi)
    return Normalize(lo, hi if hi > lo else lo + 1)


def _landscape(ax, space, trials, norm, cmap, res=120):
    """The 1-NN model M(H, a) on a grid of the two axes' coordinates (thesis figure 4.1's background)."""
    c = model_costs([t.cost for t in trials])
    if c is None or len(space) != 2:
        return
    U = np.array([space.to_u(t.params) for t in trials])
    (a0, b0), (a1, b1) = space.axes[0].u_range, space.axes[1].u_range
    g0, g1 = np.linspace(a0, b0, res), np.linspace(a1, b1, res)
    G = np.stack(np.meshgrid(g0, g1), axis=-1).reshape(-1, 2)
    diff = np.abs(G[:, None, :] - U[None, :, :])
    for j, a in enumerate(space.axes):
        if a.kind == "choice":
            diff[:, :, j] = diff[:, :, j] > 0.5
    near = np.argmin((diff ** 2).sum(-1), axis=1)
    ax.imshow(c[near].reshape(res, res), origin="lower", extent=(a0, b0, a1, b1), aspect="auto",
              cmap=cmap, norm=norm, alpha=0.45, interpolation="nearest")


def scatter(searches, out, titles=None, cost_label="cost", landscape=True):
    """Draw each search (a list of Trial with .space, as search() returns) in its
    own panel; writes `out` (png). Returns the figure's path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    searches = [s for s in searches if len(s)]
    if not searches:
        raise ValueError("no trials to plot")
    good = np.array([t.cost for s in searches for t in s if t.ok])
    n = len(searches)
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n + 1.2, 4.2), squeeze=False)
    cmap = plt.get_cmap("viridis")
    norm = _color_norm(good) if good.size else None
    for k, (s, ax) in enumerate(zip(searches, axes[0])):
        space = s.space
        ok = [t for t in s if t.ok]
        bad = [t for t in s if not t.ok]
        if len(space) == 1:
            a = space.axes[0]
            ax.scatter([a.to_u(t.params[a.name]) for t in ok], [t.cost for t in ok], c=[t.cost for t in ok],
                       cmap=cmap, norm=norm, edgecolors="k", s=36)
            if norm is not None and norm.__class__.__name__ == "LogNorm":
                ax.set_yscale("log")
            ax.set_xlabel(_label(a))
            ax.set_ylabel(cost_label)
            for t in bad:
                ax.axvline(a.to_u(t.params[a.name]), color="r", lw=0.6, alpha=0.5)
        else:
            a0, a1 = space.axes[:2]
            if landscape and norm is not None and len(space) == 2:
                _landscape(ax, space, list(s), norm, cmap)
            xy = lambda t: (a0.to_u(t.params[a0.name]), a1.to_u(t.params[a1.name]))  # noqa: E731
            if ok:
                P = np.array([xy(t) for t in ok])
                ax.scatter(P[:, 0], P[:, 1], c=[t.cost for t in ok], cmap=cmap, norm=norm, edgecolors="k",
                           s=40, linewidths=0.8, zorder=3)
            if bad:
                Q = np.array([xy(t) for t in bad])
                ax.scatter(Q[:, 0], Q[:, 1], marker="x", color="red", s=40, zorder=3,
                           label=f"diverged / failed ({len(bad)})")
            (x0, x1), (y0, y1) = a0.u_range, a1.u_range
            ax.set_xlim(x0, x1)
            ax.set_ylim(y0, y1)
            ax.set_xlabel(_label(a0))
            ax.set_ylabel(_label(a1) + ("" if len(space) == 2 else f" (of {len(space)} axes)"))
        best = s.best if hasattr(s, "best") else None
        if best is not None:
            if len(space) == 1:
                bx, by = space.axes[0].to_u(best.params[space.axes[0].name]), best.cost
            else:
                bx, by = xy(best)
            ax.scatter([bx], [by], marker="*", s=260, color="red", edgecolors="white", zorder=4,
                       label=f"best {best.cost:.4g}")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper right", fontsize=8, framealpha=0.85)
        ax.set_title(titles[k] if titles else f"{s.method} ({len(s)} trials)", fontsize=10)
    if norm is not None:
        sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
        fig.colorbar(sm, ax=list(axes[0]), label=cost_label, shrink=0.9)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out


def read_search(folder):
    """A `tinynet tune` folder's trials as a SearchResult (for `tinynet plot`)."""
    import json
    import os

    from tinynet.tune.search import ResultsFile, SearchResult
    from tinynet.tune.space import Space
    with open(os.path.join(folder, "tune.json")) as f:
        settings = json.load(f)
    space = Space.parse(settings["space"])
    trials = ResultsFile(os.path.join(folder, "trials.csv"), space).read(repair=False)
    return SearchResult(trials, space, settings["method"], settings["seed"]), settings

