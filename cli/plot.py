"""`tinynet plot RUN... --x updates|time --out fig.png`: the loss curves of
several runs on one log-scale figure, as the thesis draws them (loss against
updates or against training seconds).

`tinynet plot SEARCH...` with `tinynet tune` folders draws their scatter plots
side by side instead (thesis figures 2.2 and 4.1, tinynet.tune.plot)."""
import math
import os

import click

from tinynet.train import METRICS, RunFileError, read_metrics

COLUMNS = ("train_loss", "test_loss", "batch_loss", "test_error")


@click.command("plot")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--x", "x_axis", type=click.Choice(["updates", "time"]), default="updates", show_default=True,
              help="horizontal axis: updates (steps) or training seconds")
@click.option("--y", "columns", type=click.Choice(COLUMNS), multiple=True,
              help="curve(s) per run (repeatable; default train_loss)")
@click.option("--out", type=click.Path(dir_okay=False), default="fig.png", show_default=True)
@click.option("--title", default=None)
@click.option("--linear", is_flag=True, help="linear instead of log-scale y")
def plot(runs, x_axis, columns, out, title, linear):
    """Overlay the loss curves (metrics.csv) of the RUN directories."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if all(os.path.exists(os.path.join(r, "tune.json")) for r in runs):
        return _plot_searches(runs, out, title)
    columns = columns or ("train_loss",)
    xkey = "step" if x_axis == "updates" else "seconds"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = 0
    for i, run in enumerate(runs):
        path = os.path.join(run, METRICS)
        if not os.path.exists(path):
            raise click.ClickException(f"{run}: no {METRICS} (is it a run directory?)")
        try:
            rows = read_metrics(path)
        except RunFileError as e:
            raise click.ClickException(str(e))
        if rows and xkey not in rows[0]:
            raise click.ClickException(f"{path} has no {xkey!r} column: it is not a tinynet metrics file")
        name = os.path.basename(os.path.normpath(run))
        for col in columns:
            pts = [(r[xkey], r[col]) for r in rows if r.get(col) is not None and math.isfinite(r[col])
                   and (linear or r[col] > 0)]
            if not pts:
                click.echo(f"{run}: no {col} values, skipped", err=True)
                continue
            label = name if len(columns) == 1 else f"{name} {col}"
            # one color per run; the test curve dashed beside its training curve
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=label, color=f"C{i % 10}",
                    linestyle="-" if len(columns) == 1 or col != "test_loss" else "--")
            drawn += 1
    if not drawn:
        raise click.ClickException("nothing to plot")
    if not linear:
        ax.set_yscale("log")
    ax.set_xlabel("updates" if x_axis == "updates" else "training time (s)")
    ax.set_ylabel(columns[0] if len(columns) == 1 else "loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    click.echo(f"wrote {out} ({drawn} curve(s))")


def _plot_searches(folders, out, title):
    from tinynet.tune.plot import read_search, scatter
    searches, titles, costs = [], [], set()
    for folder in folders:
        try:
            res, settings = read_search(folder)
        except (OSError, ValueError, KeyError) as e:
            raise click.ClickException(f"{folder}: cannot read the search ({e})")
        if not len(res):
            raise click.ClickException(f"{folder}: the search has no finished trial yet")
        searches.append(res)
        costs.add(settings.get("cost", "train"))
        titles.append(f"{settings['method']} search, {len(res)} trials: {settings['optimizer']} on {settings['model']}")
    if title:
        titles = [title] * len(titles) if len(titles) == 1 else [f"{title}: {t}" for t in titles]
    scatter(searches, out, titles=titles, cost_label="final " + "/".join(sorted(costs)) + " loss")
    click.echo(f"wrote {out} ({len(searches)} search(es))")
