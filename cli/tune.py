"""`tinynet tune`: a hyperparameter search over `tinynet train` runs (thesis 2.3, 4.2).

    tinynet tune --model mnist-autoencoder --optimizer sgd \\
        --space 'lr=log:1e-4:10,init_scale=log:0.01:100' --method brs --trials 100 --steps 100 \\
        --jobs 2 --out runs/tune-sgd [-- --momentum 0.9]

Each trial is a training run from a fresh initialization (tinynet.tune.objective),
with the space's values and, after `--`, any fixed `tinynet train` options; its
cost is the final training loss (--cost test: the test loss). The run folder:
  tune.json          the search's settings and the fixed train options
  trials.csv         one row per trial: hyperparameters, cost, train / test loss, seconds, status
  trials.csv.json    the settings a resume checks against
  best.json          the best trial and the `tinynet train` command that reproduces it
  scatter.png        the trials over the first two axes, colour = cost (thesis figure 4.1)
Ctrl-C stops the search, keeping every finished trial; `--resume` continues it.

Exit status: 0 done, 2 usage error, 130 interrupted.
"""
import json
import math
import os
import shlex
import sys
import time

import click
import numpy as np
from click.core import ParameterSource

from tinynet.models import MODEL_OPTIONS, MODELS
from tinynet.optim import OPTIMIZERS
from tinynet.tune.objective import RUN_PARAMS
from tinynet.tune.search import atomic_json

TUNE, TRIALS, BEST, SCATTER = "tune.json", "trials.csv", "best.json", "scatter.png"


def _train_flags():
    """python name -> `tinynet train` flag (T -> --amortize, alpha -> --acp-alpha, ...)."""
    from cli.train import train
    return {p.name: p.opts[0] for p in train.params if p.opts}


def _fixed_train_options(model, optimizer, args):
    """The `tinynet train` options after `--`, parsed and checked by train's own
    parser: (run settings, method options, model options) as python names."""
    from cli.train import METHOD_OPTION_NAMES, MODEL_OPTION_FLAGS, train
    argv = ["--model", model, "--optimizer", optimizer] + list(args)
    try:
        ctx = train.make_context("train", argv, resilient_parsing=False)
    except click.exceptions.Exit:
        raise click.UsageError("the options after -- are `tinynet train` options (see tinynet train --help)")
    except click.ClickException as e:
        raise click.UsageError(f"in the tinynet train options after --: {e.format_message()}")
    given = {k for k, v in ctx.params.items()
             if ctx.get_parameter_source(k) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}
    owned = {"steps", "time_budget", "seed", "out", "resume", "overwrite", "quiet",
             "eval_every", "epochs", "eval_subset", "dtype", "device", "data_dir"}
    given -= {"model", "optimizer"}     # ours, passed to train's parser above
    clash = sorted(given & owned)
    if clash:
        flags = _train_flags()
        raise click.UsageError(f"{', '.join(flags[k] for k in clash)}: set by tinynet tune itself "
                               f"(use tune's own option), not after --")
    method = {k: ctx.params[k] for k in given if k in METHOD_OPTION_NAMES}
    from cli.train_help import check_method_options
    check_method_options(optimizer, list(method), [p for p in train.params if p.name in METHOD_OPTION_NAMES])
    arch = {k: ctx.params[k] for k in given if k in MODEL_OPTION_FLAGS}
    run = {k: ctx.params[k] for k in given if k in ("lr", "batch_size", "init_scale", "divergence_factor")}
    return run, method, arch


def _command(model, optimizer, params, fixed_args, steps, time_budget, seed, dtype, data_dir, eval_subset):
    """The `tinynet train` command that reruns one trial."""
    flags = _train_flags()
    parts = ["tinynet", "train", "--model", model, "--optimizer", optimizer]
    for k, v in params.items():
        flag = flags.get(k, "--" + k.replace("_", "-"))
        if isinstance(v, bool):
            parts.append(flag if v else "--no-" + flag[2:])
        else:
            parts += [flag, repr(v) if isinstance(v, float) else str(v)]   # repr: the trial's exact value
    parts += list(fixed_args)
    if steps is not None:
        parts += ["--steps", str(steps)]
    if time_budget is not None:
        parts += ["--time-budget", f"{time_budget:g}"]
    if eval_subset is not None:
        parts += ["--eval-subset", str(eval_subset)]
    parts += ["--seed", str(seed)]
    if dtype != "float32":
        parts += ["--dtype", dtype]
    if data_dir:
        parts += ["--data-dir", data_dir]
    return shlex.join(parts)


def _eta(seconds):
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class _Progress:
    """One line per finished trial on stderr: trials done, this trial, best so far, ETA."""

    def __init__(self, quiet, first):
        self.t0, self.first, self.quiet = time.perf_counter(), first, quiet

    def __call__(self, t, done, total, best):
        if self.quiet:
            return
        ran = done - self.first
        rate = (time.perf_counter() - self.t0) / ran if ran else math.nan
        what = f"{t.cost:.5g}" if t.ok else t.status
        vals = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
        b = f"best {best.cost:.5g} (#{best.index})" if best else "best -"
        click.echo(f"[{done:>{len(str(total))}}/{total}] #{t.index} {what:>9} ({vals}) | {b} | "
                   f"{t.seconds:.1f} s | ETA {_eta(rate * (total - done))}", err=True)


@click.command("tune")
@click.option("--model", default="mnist-autoencoder", show_default=True, help=f"one of: {', '.join(MODELS)}")
@click.option("--optimizer", default="sgd", show_default=True, help=f"one of: {', '.join(OPTIMIZERS)}")
@click.option("--space", required=True,
              help="the axes, e.g. 'lr=log:1e-4:1,init_scale=log:0.1:10,momentum=lin:0:0.99': "
                   "lin|log|int:LOW:HIGH[:GRID_POINTS] or choice:A|B; names are tinynet train's options "
                   "with underscores (lr, init_scale, batch_size, eps, T, ...)")
@click.option("--method", type=click.Choice(["grid", "random", "brs"]), default="brs", show_default=True,
              help="grid search, random search, or biased random search (thesis algorithm 1)")
@click.option("--trials", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="updates per trial (default 100 unless --time-budget is given)")
@click.option("--time-budget", type=float, default=None, help="seconds of training per trial")
@click.option("--cost", type=click.Choice(["train", "test"]), default="train", show_default=True,
              help="the final loss that is minimized: on the training set (the thesis) or the test set")
@click.option("--eval-subset", type=click.IntRange(min=1), default=None,
              help="final loss on a fixed seeded subset of N rows (default: the whole set)")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="trials run at a time in worker processes, one BLAS thread each (default: the CPUs)")
@click.option("--seed", type=int, default=0, show_default=True,
              help="the search's draws and every trial's initialization and minibatch order")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="search folder (default runs/tune-MODEL-OPTIMIZER-METHOD-TIME)")
@click.option("--resume", is_flag=True, help="continue the search in --out from its trials.csv")
@click.option("--quiet", "-q", is_flag=True, help="no line per trial")
@click.argument("train_args", nargs=-1, type=click.UNPROCESSED)
def tune(model, optimizer, space, method, trials, steps, time_budget, cost, eval_subset, jobs, seed, dtype,
         data_dir, out, resume, quiet, train_args):
    """Search hyperparameters of `tinynet train` (fixed train options after --)."""
    from tinynet import tune as tn_tune
    from tinynet.tune.objective import INFO_COLUMNS, TrainObjective

    if model not in MODELS:
        raise click.BadParameter(f"unknown model {model!r}; available: {', '.join(MODELS)}", param_hint="--model")
    if optimizer not in OPTIMIZERS:
        raise click.BadParameter(f"unknown optimizer {optimizer!r}; available: {', '.join(OPTIMIZERS)}",
                                 param_hint="--optimizer")
    if time_budget is not None and not time_budget > 0:
        raise click.BadParameter(f"must be > 0, got {time_budget:g}", param_hint="--time-budget")
    if steps is None and time_budget is None:
        steps = 100
    try:
        sp = tn_tune.Space.parse(space)
    except tn_tune.SpaceError as e:
        raise click.BadParameter(str(e), param_hint="--space")
    run, method_opts, arch = _fixed_train_options(model, optimizer, train_args)
    overlap = [n for n in sp.names if n in run or n in method_opts or n in arch]
    if overlap:
        raise click.UsageError(f"{', '.join(overlap)}: both searched (--space) and fixed (after --)")
    objective = TrainObjective(model=model, optimizer=optimizer, steps=steps, time_budget=time_budget,
                               batch_size=run.get("batch_size", 200), seed=seed, dtype=dtype,
                               eval_subset=eval_subset, cost=cost, options=method_opts, model_options=arch,
                               init_scale=run.get("init_scale"), lr=run.get("lr"), data_dir=data_dir,
                               divergence_factor=run.get("divergence_factor", 100.0))
    _check_names(sp, model, optimizer)
    try:   # every option of the search builds (a bad name or value fails here, not in 100 trials)
        objective.build(sp.sample(np.random.default_rng(0)))
    except (ValueError, TypeError) as e:
        raise click.UsageError(f"a trial of this search cannot be built: {e}")

    jobs = jobs or len(os.sched_getaffinity(0))
    out = out or os.path.join("runs", f"tune-{model}-{optimizer}-{method}-{time.strftime('%Y%m%d-%H%M%S')}")
    results = os.path.join(out, TRIALS)
    settings = dict(model=model, optimizer=optimizer, space=sp.spec(), method=method, trials=trials, steps=steps,
                    time_budget=time_budget, cost=cost, eval_subset=eval_subset, seed=seed, dtype=dtype,
                    jobs=jobs, train_args=list(train_args), data_dir=data_dir)
    _prepare_folder(out, resume, settings)
    first = 0
    if resume:
        from tinynet.tune.search import ResultsFile
        try:
            first = len(ResultsFile(results, sp).read())
        except (OSError, ValueError) as e:
            raise click.ClickException(str(e))
    click.echo(f"{method} search of {trials} trials over {sp.spec()} for {optimizer} on {model} "
               f"({steps if steps else f'{time_budget:g} s'}{' updates' if steps else ''} per trial, "
               f"{jobs} job(s)); folder {out}" + (f"; resuming after {first} trials" if resume else ""), err=True)
    try:
        res = tn_tune.search(objective, sp, method=method, trials=trials, seed=seed, jobs=jobs, results=results,
                             resume=resume, progress=_Progress(quiet, first), info_columns=INFO_COLUMNS)
    except KeyboardInterrupt:
        click.echo(f"interrupted: the finished trials are in {results}; continue with the same command "
                   f"and --resume --out {out}", err=True)
        sys.exit(130)
    except (ValueError, OSError) as e:
        raise click.ClickException(str(e))
    _report(res, out, objective, settings, train_args)


def _check_names(sp, model, optimizer):
    import inspect as _inspect
    takes = set(_inspect.signature(OPTIMIZERS[optimizer].__init__).parameters) - {"self", "net"}
    takes |= {"schedule_gamma", "schedule_period"} if "schedule" in takes else set()
    known = takes | set(RUN_PARAMS) | set(MODEL_OPTIONS.get(model, {}))
    bad = [n for n in sp.names if n not in known]
    if bad:
        raise click.BadParameter(f"{', '.join(bad)}: not a hyperparameter of {optimizer} on {model} "
                                 f"(these are: {', '.join(sorted(known))})", param_hint="--space")


def _prepare_folder(out, resume, settings):
    path = os.path.join(out, TUNE)
    if resume:
        if not os.path.exists(path):
            raise click.UsageError(f"--resume: {out} holds no search ({TUNE} missing)")
        try:
            with open(path) as f:
                old = json.load(f)
        except (OSError, ValueError) as e:
            raise click.ClickException(f"cannot read {path}: {e}")
        differ = [k for k in settings if k != "trials" and old.get(k) != settings[k]]
        if differ:
            raise click.UsageError(f"--resume: {out} was searched with other settings: " + "; ".join(
                f"{k} {old.get(k)!r} (now {settings[k]!r})" for k in differ))
        atomic_json(path, settings)
        return
    if os.path.exists(path) or os.path.exists(os.path.join(out, TRIALS)):
        raise click.UsageError(f"{out} already holds a search: pass --resume to continue it or choose another --out")
    try:
        os.makedirs(out, exist_ok=True)
        atomic_json(path, settings)
    except OSError as e:
        raise click.ClickException(f"cannot write the search folder {out}: {e.strerror or e}")


def _report(res, out, objective, settings, train_args):
    from tinynet.tune.plot import scatter
    counts = {s: sum(t.status == s for t in res) for s in ("ok", "diverged", "failed")}
    best = res.best
    summary = dict(trials=len(res), **counts)
    if best is not None:
        cmd = _command(settings["model"], settings["optimizer"], best.params, train_args, settings["steps"],
                       settings["time_budget"], settings["seed"], settings["dtype"], settings["data_dir"],
                       settings["eval_subset"])
        summary.update(best_index=best.index, best_cost=best.cost, best_params=best.params, best_info=best.info,
                       command=cmd)
    atomic_json(os.path.join(out, BEST), summary)
    try:
        scatter([res], os.path.join(out, SCATTER), titles=[f"{settings['method']}: {settings['optimizer']} "
                                                           f"on {settings['model']}"],
                cost_label=f"final {settings['cost']} loss")
    except Exception as e:   # noqa: BLE001  (a figure is not worth the results)
        click.echo(f"could not draw {SCATTER}: {e}", err=True)
    click.echo(f"{len(res)} trials: {counts['ok']} ok, {counts['diverged']} diverged, {counts['failed']} failed; "
               f"results in {os.path.join(out, TRIALS)}")
    if best is None:
        click.echo("no trial finished with a finite cost: widen or move the space", err=True)
        return
    vals = ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items())
    click.echo(f"best: trial {best.index}, cost {best.cost:.6g} ({vals})")
    click.echo(f"reproduce: {summary['command']}")
