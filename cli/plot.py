"""`tinynet plot RUN... [--x updates|time] [--columns C,...] [--out fig.png]`:
the curves of several runs, as the thesis draws them (loss against updates or
against training seconds), labelled from each run's config.json, one panel per
metric kind, runs that differ only by their seed as a mean line and a band
(tinynet.plotting.runs says what each rule is).

`tinynet plot SEARCH...` with `tinynet tune` folders draws their scatter plots
side by side instead (thesis figures 2.2 and 4.1, tinynet.tune.plot)."""
import os

import click

from tinynet.train import RunFileError

COLUMNS = ("train_loss", "test_loss", "batch_loss", "test_error")


def _columns(given, runs):
    """The columns asked for (repeatable, or comma-separated), checked against the runs' files."""
    cols = [c.strip() for g in given for c in g.split(",") if c.strip()] or ["train_loss"]
    present = set(COLUMNS).union(*(r.columns for r in runs))
    for c in cols:
        if c not in present:
            raise click.BadParameter(f"no run has a column {c!r}; the columns are "
                                     f"{', '.join(sorted(present - {'step', 'epoch', 'seconds'}))}",
                                     param_hint="--columns")
    return list(dict.fromkeys(cols))


@click.command("plot")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--x", "x_axis", type=click.Choice(["updates", "time"]), default="updates", show_default=True,
              help="horizontal axis: updates (steps) or training seconds")
@click.option("--columns", "--y", "columns", multiple=True, metavar="C[,C...]",
              help="curve(s) per run, repeatable or comma-separated: train_loss (default), test_loss, "
                   "batch_loss (the mean minibatch loss between evaluations), test_error, or any "
                   "other column of metrics.csv")
@click.option("--out", type=click.Path(dir_okay=False), default="fig.png", show_default=True)
@click.option("--title", default=None, help="figure title (default: the models and datasets, and the "
                                            "settings shared by every run)")
@click.option("--linear", is_flag=True, help="linear instead of log-scale loss axes")
@click.option("--band", type=click.Choice(["minmax", "std"]), default="minmax", show_default=True,
              help="band around the mean of runs that differ only by their seed: min-max or +-1 std")
@click.option("--each-seed", is_flag=True, help="draw runs that differ only by their seed one by one")
def plot(runs, x_axis, columns, out, title, linear, band, each_seed):
    """Draw the curves (metrics.csv) of the RUN directories: one panel per metric
    kind (losses of different kinds never share an axis), labels from each run's
    config.json (optimizer, lr, key options), runs equal but for the seed as a
    mean line and a band, the legend below the panels."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tinynet.plotting.runs import figure, read_run

    if all(os.path.exists(os.path.join(r, "tune.json")) for r in runs):
        return _plot_searches(runs, out, title)
    try:
        loaded = [read_run(r) for r in dict.fromkeys(runs)]
    except RunFileError as e:
        raise click.ClickException(str(e))
    cols = _columns(columns, loaded)
    try:
        fig, drawn, notes = figure(loaded, cols, x=x_axis, band=band, title=title, log=not linear,
                                   by_seed=not each_seed)
    except ValueError as e:
        raise click.ClickException(str(e))
    for note in notes:
        click.echo(note, err=True)
    try:
        fig.savefig(out, dpi=120)
    except OSError as e:
        raise click.ClickException(f"cannot write {out}: {e.strerror or e}")
    finally:
        plt.close(fig)
    click.echo(f"wrote {out} ({drawn} curve(s), {len(fig.axes)} panel(s))")


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
