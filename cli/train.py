"""`tinynet train`: build a model and an optimizer, load its dataset, and run
tinynet.train.train.

Options come in two groups:
- RUN_OPTIONS: every run (model, data, stop criteria, evaluation, output),
  with the models' architecture options (--batchnorm, --pool, --second-pool),
  each accepted only by the models whose tinynet.models.MODEL_OPTIONS name it
  and recorded, defaults included, as "model_options" in config.json's meta;
- METHOD_OPTIONS: hyperparameters of particular optimizers, one marked section
  per method. Each is passed to tinynet.optim.build_optimizer only when the
  user sets it, and an option the chosen optimizer does not take is an error.
  To add a method's options, add a section there: the option's name must be
  the parameter name of the optimizer's __init__ (--cg-iters -> cg_iters).

Exit status: 0 when a stop criterion is reached; 1 for a run-folder or file
problem (locked, unwritable, full disk, damaged checkpoint: one line says
which); 2 for a usage error (bad option or value, nothing is written); 3 when
the run diverged (last_good.npz keeps the last good state; `--resume
--from-last-good` restarts from it); 128 + the signal number when stopped by
SIGINT (130), SIGHUP (129) or SIGTERM (143), with a final checkpoint.
"""
import os
import signal
import sys
import time

import click
import numpy as np
from click.core import ParameterSource

from tinynet.data import DataError, load_dataset
from tinynet.distributed.comm import RankFailed, get_comm
from tinynet.distributed.failure import ending_every_rank_on_failure
from tinynet.models import DATASET, MODEL_OPTIONS, MODELS, build_model, model_options
from tinynet.optim import OPTIMIZERS, SCHEDULES, build_optimizer
from tinynet.train import CheckpointError, RunExistsError, RunFileError, RunLockedError, TrainConfig
from tinynet.train import train as run_training
from cli.baseline import run_baseline
from cli.bn_phase import SUBDIR as BN_SUBDIR, BNPhaseStopped, check_bn_phase, run_bn_phase
from cli.train_help import TrainCommand, check_method_options, show_defaults

DEFAULT_STEPS = 1000      # when none of --steps / --epochs / --time-budget is given

RUN_OPTIONS = [
    click.option("--model", default="mnist-autoencoder", show_default=True,
                 help=f"one of: {', '.join(MODELS)}"),
    click.option("--optimizer", default="sgd", show_default=True,
                 help=f"one of: {', '.join(OPTIMIZERS)}"),
    click.option("--lr", type=float, default=None,
                 help="learning rate (default: per optimizer, tinynet.optim.DEFAULT_LR or its own)"),
    click.option("--batch-size", type=int, default=200, show_default=True),
    click.option("--steps", type=int, default=None,
                 help=f"stop after this many updates (default {DEFAULT_STEPS} if no other stop is given)"),
    click.option("--epochs", type=float, default=None, help="stop after this many passes over the data"),
    click.option("--time-budget", type=float, default=None,
                 help="stop after this many seconds of training time, the thesis's budget (evaluation "
                      "and checkpoints excluded; counted over resumes)"),
    click.option("--wall-budget", type=float, default=None,
                 help="stop after this many seconds of wall time of this command (evaluation included): "
                      "a scheduler's limit"),
    click.option("--eval-every", type=int, default=100, show_default=True,
                 help="evaluate train and test loss every N updates"),
    click.option("--eval-subset", type=int, default=None,
                 help="evaluate on a fixed seeded subset of N rows of each set (default: all)"),
    click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True),
    click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True),
    click.option("--seed", type=int, default=0, show_default=True,
                 help="initialization, minibatch order and any randomness of the optimizer"),
    click.option("--out", type=click.Path(file_okay=False), default=None,
                 help="run directory (default runs/MODEL-OPTIMIZER-TIME)"),
    click.option("--resume", is_flag=True, help="continue the run in --out from its checkpoint"),
    click.option("--from-last-good", is_flag=True,
                 help="with --resume: restart from last_good.npz (after a divergence); the optimizer's "
                      "settings (--lr, method options) may change, the diverged attempt is kept in attempt-K/"),
    click.option("--overwrite", is_flag=True, help="replace the run in --out"),
    click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                 help="data folder (MNIST: default the packaged copy; CIFAR-10: default $TINYNET_DATA)"),
    click.option("--init-scale", type=float, default=None,
                 help="alpha of the initialization: Var W = alpha x Glorot's (He's before a ReLU) variance "
                      "(thesis 2.4.2; default 1)"),
    click.option("--divergence-factor", type=float, default=100.0, show_default=True,
                 help="diverged when the minibatch loss exceeds this multiple of the initial loss"),
    click.option("--norm-factor", type=float, default=100.0, show_default=True,
                 help="diverged when the parameter norm exceeds this multiple of its initial value "
                      "(bounded losses: saturated units)"),
    click.option("--quiet", "-q", is_flag=True, help="no progress line"),
    click.option("--verbose", "-v", is_flag=True,
                 help="with --distributed mpi: print what each step communicates (bytes by kind, per step "
                      "and per amortized step)"),
    click.option("--baseline", type=click.Choice(["none", "sgd"]), default="none", show_default=True,
                 help="after the run, train the same model from the same initialization over the same "
                      "minibatches and number of updates with SGD at its default lr (OUT/baseline-sgd), "
                      "and print the two training losses update by update"),
    # issue 15: seed 003's "a few epochs of batch normalization first, then whitening"
    click.option("--bn-epochs", type=float, default=None,
                 help="first train this many epochs with batch normalization (SGD at --bn-lr, in OUT/bn-phase), "
                      "fold BN into the layers, then continue with --optimizer (the slides: reparam)"),
    click.option("--bn-lr", type=float, default=None, help="[--bn-epochs] SGD's lr in the BN phase (default: SGD's)"),
    # issue 19: data-parallel over MPI
    click.option("--distributed", type=click.Choice(["none", "mpi"]), default="none", show_default=True,
                 help="mpi: one rank per process started by `mpirun -n P` (or srun); each rank trains on its "
                      "1/P of every --batch-size minibatch, gradients and curvature statistics all-reduced "
                      "(the same updates as one process); rank 0 writes the run folder"),
    click.option("--show-defaults", is_flag=True,
                 help="print the settings the chosen --optimizer would use (defaults and the options "
                      "given) and exit"),
    # issue 6: batch-norm baselines of thesis figures 6.1-6.3
    click.option("--batchnorm", type=click.Choice(["full", "mean-only"]), default=None,
                 help="batch-norm stage after each hidden Linear layer of the named model "
                      "(cifar-cnn: full only, BatchNorm2d after each convolution too)"),
    # issue 11: the architecture choices of the CNNs (tinynet.models.MODEL_OPTIONS)
    click.option("--pool", type=click.Choice(["max", "avg"]), default=None,
                 help="[cifar-cnn, tiny-cnn] kind of the 2x2 pooling stages (default max)"),
    click.option("--second-pool/--no-second-pool", default=None,
                 help="[cifar-cnn] a second 2x2 pooling after C16 (400 features into F84, as LeNet-5) "
                      "instead of the slides' single one (1600; the default)"),
]
MODEL_OPTION_FLAGS = {"batchnorm": "--batchnorm", "pool": "--pool", "second_pool": "--second-pool"}

METHOD_OPTIONS = [
    # ---- SGD (seed 003: momentum, Nesterov, stepsize schedules) ---------------------------
    click.option("--momentum", type=float, default=None, help="[sgd, ubp] heavy-ball momentum mu in [0, 1)"),
    click.option("--nesterov", is_flag=True, default=None, help="[sgd] Nesterov's variant of momentum"),
    click.option("--schedule", type=click.Choice(list(SCHEDULES)), default=None,
                 help="[sgd] stepsize schedule: constant, inverse beta/(gamma+k), halving"),
    click.option("--schedule-gamma", type=float, default=None, help="[sgd] gamma of the inverse schedule"),
    click.option("--schedule-period", type=int, default=None,
                 help="[sgd] updates between halvings of the halving schedule"),
    click.option("--weight-decay", type=float, default=None,
                 help="[sgd, reparam] L2 regularization: the gradient of loss + (VALUE / 2) ||w||^2"),
    click.option("--lr-scaling", type=click.Choice(["none", "share-fanin"]), default=None,
                 help="[sgd] per-layer stepsizes lr / sqrt(share x fanin) (seed 003's 1990's-style network)"),
    # ---- RMSProp / Adam ----------------------------------------------------------------------
    click.option("--rho", type=float, default=None, help="[rmsprop, twist] decay of the squared-gradient average (twist: of the normalizer and E(g_j^2))"),
    click.option("--beta1", type=float, default=None, help="[adam] decay of the gradient average"),
    click.option("--beta2", type=float, default=None, help="[adam] decay of the squared-gradient average"),
    click.option("--eps", type=float, default=None,
                 help="[rmsprop, adam: added to the root; newton, gn, hessian-precond: Tikhonov damping; "
                      "natural: the KL scale epsilon of thesis 3.2.2; acp, nnn: added to C; kfac: factored damping; "
                      "twist: added to E(g_j^2) of --metric neuron; reparam: added to Var x_i]"),
    # ---- add the options of further methods below, one section per method ---------------------
    # ---- Newton family: newton, gn, natural, hf, hessian-precond (issue 5; thesis chapter 3) ----
    click.option("--curvature", type=click.Choice(["hessian", "gn", "fisher"]), default=None,
                 help="[newton: hessian/gn/fisher; hf: gn/hessian] the curvature matrix C"),
    click.option("--structure", type=click.Choice(["full", "block"]), default=None,
                 help="[newton, gn, natural] full matrix or per-layer block-diagonal (thesis 3.1.5)"),
    click.option("--large-blocks", type=click.Choice(["refuse", "cg"]), default=None,
                 help="[newton, gn, natural] --structure block: a block above the size guard is refused "
                      "(default) or solved approximately by CG over block-restricted products"),
    click.option("--fisher-kind", type=click.Choice(["exact", "mc", "empirical"]), default=None,
                 help="[newton --curvature fisher, natural] exact, Monte-Carlo sampled or empirical Fisher"),
    click.option("--fisher-samples", type=int, default=None, help="[newton, natural] draws per example of the mc Fisher"),
    click.option("--growth", type=float, default=None,
                 help="[newton, gn, hessian-precond] factor by which the damping grows while C + eps I is not PD"),
    click.option("--damping", type=float, default=None, help="[hf] initial Levenberg-Marquardt damping lambda"),
    click.option("--cg-iters", type=int, default=None, help="[hf, hessian-precond] CG iteration cap"),
    click.option("--cg-tol", type=float, default=None, help="[hf, hessian-precond] CG relative residual tolerance"),
    click.option("--progress-tol", type=float, default=None, help="[hf] Martens's relative-progress CG stop"),
    click.option("--cg-check-every", type=int, default=None,
                 help="[hf] read CG's stop flag from the device every this many iterations (same result; "
                      "fewer waits, up to this many - 1 unused products after the stop)"),
    click.option("--warm-start", type=float, default=None, help="[hf] decay of the previous CG solution used as start"),
    click.option("--backtrack/--no-backtrack", default=None, help="[hf] CG backtracking over kept iterates"),
    click.option("--line-search/--no-line-search", default=None, help="[hf] Armijo backtracking line search"),
    click.option("--adapt-damping/--no-adapt-damping", default=None, help="[hf] Levenberg-Marquardt damping rule"),
    click.option("--curvature-fraction", type=float, default=None,
                 help="[hf] share of the minibatch used for the curvature products"),
    click.option("--solver", type=click.Choice(["auto", "dense", "cg"]), default=None,
                 help="[hessian-precond] dense Cholesky or CG on Hessian-vector products"),
    # ---- centered, acp, kfac, nnn (issue 6; thesis chapter 6) -----------------------------------
    click.option("--amortize", "T", type=int, default=None,
                 help="[acp, kfac, nnn] amortization T: statistics / inverses every T updates (thesis 6.5.2: 100)"),
    click.option("--acp-alpha", "alpha", type=str, default=None,
                 help="[acp] fixed alpha (a number) or 'heuristic' (max squared pre-activation gradient, 6.3.2)"),
    click.option("--acp-step-scale", "step_scale", type=click.Choice(["alpha", "none"]), default=None,
                 help="[acp] 'alpha': the step is lr/alpha (algorithm 4 as printed, the default); "
                      "'none': lr (the local criterion of 6.1)"),
    click.option("--kfac-curvature", type=click.Choice(["gn", "fisher", "empirical"]), default=None,
                 help="[kfac] Gauss-Newton (D from the loss), Monte-Carlo Fisher (sampled targets) or the "
                      "empirical Fisher (the minibatch's targets: the thesis's cheaper GN, 3.4)"),
    click.option("--stats-every", type=int, default=None,
                 help="[kfac] updates between factor statistics (running averages)"),
    click.option("--kl-clip", type=str, default=None,
                 help="[kfac] trust region: scale each update so that lr^2 g^T (A⊗G)^-1 g <= VALUE "
                      "(default 0.01); 'none' for the plain step"),
    # ---- natural gradient with a twist (issue 15; seed 003) --------------------------------------
    click.option("--metric", type=click.Choice(["identity", "neuron", "gn", "fisher"]), default=None,
                 help="[twist] G = I, the per-neuron E[g_j^2] I of the 1990's-style network, or the exact "
                      "block-diagonal Gauss-Newton / empirical Fisher (small nets)"),
    click.option("--normalizer", type=click.Choice(["global", "layer", "neuron", "weight"]), default=None,
                 help="[twist] blocks of the normalizer 1/sqrt(mu + E[g^T G^-1 g])"),
    click.option("--mu", type=float, default=None, help="[twist] mu under the normalizer's square root"),
    # ---- the quasi-diagonal / whitening reparametrization (issue 15; seed 003) -------------------
    click.option("--center/--no-center", default=None, help="[reparam] mu = the running mean of each input"),
    click.option("--scale", type=click.Choice(["variance", "none"]), default=None,
                 help="[reparam] alpha_i^2 = 1 / (Var x_i + eps), or alpha = 1"),
    click.option("--beta", type=click.Choice(["share-fanin", "one"]), default=None,
                 help="[reparam] beta_j^2 = 1 / sqrt(share x fanin), or beta = 1"),
    click.option("--rate", type=float, default=None,
                 help="[reparam] rate of the running averages of the inputs' mean and variance"),
    # ---- UBP (issue 4; thesis chapter 5, algorithm 2) -------------------------------------------
    click.option("--ubp-mode", type=click.Choice(["matrix_free", "explicit"]), default=None,
                 help="[ubp] J_i v by forward/reverse passes (default) or per-example Jacobians stored"),
    click.option("--ubp-curvature", type=click.Choice(["gn", "exact"]), default=None,
                 help="[ubp] Gauss-Newton J^T D J (default) or the exact d2l/da2 of thesis 5.2"),
    click.option("--ubp-clip", type=float, default=None,
                 help="[ubp] bound ||correction|| <= X ||signal|| per layer (thesis 5.5)"),
]


def _apply(options):
    def deco(f):
        for opt in reversed(options):
            f = opt(f)
        return f
    return deco


def _option_names(options):
    def dummy():
        pass
    return [p.name for p in _apply(options)(dummy).__click_params__]


METHOD_OPTION_NAMES = _option_names(METHOD_OPTIONS)
TrainCommand.method_names = tuple(METHOD_OPTION_NAMES)
# what the closing summary says about a model's numbers (measured here, or published)
CONTEXT = {
    "mnist-autoencoder": "the ~52.8 plateau is the mean image (every digit reconstructed alike); below it the "
                         "net reconstructs digits. Published after 750k updates of batch 200 on a GPU "
                         "(Sutskever et al. 2013, table 1): SGD 2.1, HF 1.4, NAG 0.73",
}
# settings that are not taken from config.json when resuming
_NOT_FROM_CONFIG = ("out", "resume", "overwrite", "from_last_good", "quiet", "show_defaults", "verbose",
                    "distributed", "baseline")


def _model_options(model, given):
    """The architecture options of `model` (tinynet.models.model_options, defaults
    filled in) after checking the ones the user set: issue 6's --batchnorm and
    issue 11's --pool / --second-pool are accepted only by the models of
    MODEL_OPTIONS that take them."""
    for k in given:
        if k not in MODEL_OPTIONS[model]:
            takes = ", ".join(MODEL_OPTION_FLAGS[o] for o in MODEL_OPTIONS[model]) or "none"
            raise click.UsageError(f"{MODEL_OPTION_FLAGS[k]}: model {model} takes no such option "
                                   f"(its architecture options: {takes})")
    try:
        return model_options(model, **given)
    except ValueError as e:
        raise click.UsageError(str(e))


def _older_run_with_defaults(out, resume, model, model_opts):
    """True when resuming a run folder written before model options were recorded
    (its config.json has no meta.model_options) with the model's defaults: then
    the key is left out, so that the resume check compares like with like."""
    import json
    path = os.path.join(out, "config.json")
    if not resume or not os.path.exists(path):
        return False
    try:
        with open(path) as f:
            old = json.load(f).get("meta", {})
    except (OSError, ValueError):
        return False          # the trainer reports an unreadable config itself
    return "model_options" not in old and model_opts == model_options(model)


def _given(ctx, name):
    return ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def _settings_from_config(ctx, kw):
    """--resume: every setting the user did not give comes from the run's
    config.json ("command": the settings of the command that made it), so that
    `tinynet train --out R --resume` alone continues the run. Returns the method
    options recorded there (python names)."""
    import json
    path = os.path.join(kw["out"], "config.json")
    if not os.path.exists(path):          # a --bn-epochs run stopped in its BN phase carries the command
        path = os.path.join(kw["out"], BN_SUBDIR, "config.json")
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            conf = json.load(f)
    except (OSError, ValueError) as e:
        raise click.ClickException(f"run configuration {path} is damaged ({e}); it cannot be resumed")
    saved = conf.get("command") or {}
    for k, v in saved.get("settings", {}).items():
        if k in kw and k not in _NOT_FROM_CONFIG and k not in METHOD_OPTION_NAMES and not _given(ctx, k):
            kw[k] = v
    return dict(saved.get("method_options", {}))


@click.command("train", cls=TrainCommand)
@_apply(RUN_OPTIONS)
@_apply(METHOD_OPTIONS)
@click.pass_context
def train(ctx, **kw):
    """Train a model; metrics, config and checkpoints go to the run directory.

    With --resume, settings not given are taken from the run's config.json."""
    recorded = _settings_from_config(ctx, kw) if kw["resume"] and kw["out"] else {}
    model, opt_name = kw["model"], kw["optimizer"]
    if model not in MODELS:
        raise click.BadParameter(f"unknown model {model!r}; available: {', '.join(MODELS)}",
                                 param_hint="--model")
    if opt_name not in OPTIMIZERS:
        raise click.BadParameter(f"unknown optimizer {opt_name!r}; available: {', '.join(OPTIMIZERS)}",
                                 param_hint="--optimizer")
    # method options the user set (explicitly, on the command line or by environment)
    explicit = {**recorded, **{name: kw[name] for name in METHOD_OPTION_NAMES if _given(ctx, name)}}
    method_params = [p for p in ctx.command.params if p.name in METHOD_OPTION_NAMES]
    check_method_options(opt_name, [k for k in explicit if k != "lr"], method_params)
    if kw["show_defaults"]:
        for line in show_defaults(opt_name, kw["lr"], explicit, method_params):
            click.echo(line)
        return

    try:
        comm = get_comm(kw["distributed"])
    except RuntimeError as e:             # no mpi4py / MPI library
        raise click.UsageError(str(e))
    if comm.size > 1 and kw["baseline"] != "none":
        raise click.UsageError("--baseline runs in one process: leave it out under --distributed mpi")
    if comm.rank != 0:
        kw["quiet"] = True                # rank 0 speaks for the run
    echo = click.echo if comm.rank == 0 else (lambda *a, **k: None)

    dataset = DATASET[model]
    given = {k: kw[k] for k in MODEL_OPTION_FLAGS if kw[k] is not None}
    model_opts = _model_options(model, given)          # before reading any data
    try:
        data = {"train": load_dataset(dataset, "train", kw["data_dir"]),
                "test": load_dataset(dataset, "test", kw["data_dir"])}
    except DataError as e:
        raise click.ClickException(str(e))

    dtype = np.dtype(kw["dtype"]).type
    if kw["init_scale"] is not None and not kw["init_scale"] > 0:
        raise click.BadParameter(f"must be > 0, got {kw['init_scale']:g}", param_hint="--init-scale")
    try:
        net = build_model(model, dtype=dtype, seed=kw["seed"], device=kw["device"], alpha=kw["init_scale"],
                          **given)
    except RuntimeError as e:             # --device cuda without a GPU
        raise click.UsageError(str(e))
    try:
        opt = build_optimizer(opt_name, net, kw["lr"], defaults={"seed": kw["seed"]}, **explicit)
    except (ValueError, TypeError) as e:
        raise click.UsageError(str(e))

    steps = kw["steps"]
    if steps is None and kw["epochs"] is None and kw["time_budget"] is None and kw["wall_budget"] is None:
        steps = DEFAULT_STEPS
    out = kw["out"] or os.path.join("runs", f"{model}-{opt_name}-{time.strftime('%Y%m%d-%H%M%S')}")
    meta = dict(model=model, dataset=dataset, optimizer=opt_name, lr=opt.lr, dtype=kw["dtype"],
                options={k: v for k, v in explicit.items()})
    if kw["init_scale"] is not None:
        meta["init_scale"] = kw["init_scale"]
    if model_opts and not _older_run_with_defaults(out, kw["resume"], model, model_opts):
        meta["model_options"] = model_opts   # the architecture, defaults included (resume checks it)
    command = dict(settings={k: v for k, v in kw.items()
                             if k not in _NOT_FROM_CONFIG and k not in METHOD_OPTION_NAMES},
                   method_options=explicit)
    command["settings"]["steps"] = steps
    cfg = TrainConfig(batch_size=kw["batch_size"], steps=steps, epochs=kw["epochs"],
                      time_budget=kw["time_budget"], wall_budget=kw["wall_budget"], eval_every=kw["eval_every"],
                      eval_subset=kw["eval_subset"], seed=kw["seed"], out=out, resume=kw["resume"],
                      from_last_good=kw["from_last_good"], overwrite=kw["overwrite"],
                      divergence_factor=kw["divergence_factor"], norm_factor=kw["norm_factor"],
                      progress=not kw["quiet"], meta=meta, command=command)
    try:
        cfg.check()
        if kw["bn_epochs"] is not None:
            check_bn_phase(kw, given, out)
        elif kw["bn_lr"] is not None:
            raise ValueError("--bn-lr is the lr of the --bn-epochs phase: give --bn-epochs too")
    except ValueError as e:
        raise click.UsageError(str(e))
    if kw["bn_epochs"] is not None:
        try:
            net, _ = run_bn_phase(kw, given, cfg, data, echo)
        except BNPhaseStopped as e:
            echo(f"BN phase {e.result.stop_reason}: {e.result.message}", err=True)
            if e.result.stop_reason == "interrupted":
                echo(f"  continue it with: tinynet train --out {out} --resume", err=True)
                sys.exit(128 + getattr(signal, e.result.signal or "SIGINT"))
            sys.exit(3)
        except (RunExistsError, RunLockedError, RunFileError, CheckpointError, ValueError) as e:
            raise click.ClickException(f"--bn-epochs: {e}")
        opt = build_optimizer(opt_name, net, kw["lr"], defaults={"seed": kw["seed"]}, **explicit)
        cfg.resume = kw["resume"] and os.path.exists(os.path.join(out, "config.json"))
        meta["lr"] = opt.lr
        meta["bn_phase"] = dict(epochs=kw["bn_epochs"], lr=kw["bn_lr"], folder=BN_SUBDIR)
    n_train, n_test = data["train"][0].shape[0], data["test"][0].shape[0]
    arch = "".join(f", {k}={v}" for k, v in model_opts.items() if v is not None and v is not False)
    if comm.size > 1:
        echo(f"data-parallel over {comm.size} MPI ranks: {kw['batch_size'] // comm.size} rows of each batch "
             f"of {kw['batch_size']} per rank", err=True)
    echo(f"{model} ({net.n_params:,} parameters{arch}, {kw['dtype']}, {net.device}) on {dataset}: "
               f"{n_train:,} train / {n_test:,} test; {opt_name} lr={opt.lr:g}"
               + "".join(f" {k}={v}" for k, v in explicit.items()) + f"; run directory {out}", err=True)
    try:
        with ending_every_rank_on_failure(comm, "tinynet train"):   # one rank's failure ends every rank
            result = run_training(net, opt, data, cfg, comm=comm)
    except RankFailed:
        sys.exit(1)                       # rank 0 could not open the run and says why itself
    except RunExistsError:
        raise click.ClickException(f"run directory {out} already holds a run: pass --resume to continue it "
                                   f"or --overwrite to replace it, or choose another --out")
    except (RunLockedError, RunFileError, CheckpointError) as e:
        raise click.ClickException(str(e))
    except ValueError as e:
        raise click.ClickException(str(e))

    if kw["verbose"] and comm.size > 1:
        echo(f"communication, rank 0's payload per step ({comm.account.steps} steps in this call):\n"
             + comm.account.table(), err=True)
    first = result.history[0]["train_loss"] if result.history else float("nan")
    summary = (f"{result.stop_reason}: step {result.step}, training loss {first:.6g} -> "
               f"{result.train_loss:.6g}" if result.train_loss is not None else f"{result.stop_reason}")
    echo(summary + f"; {result.steps_per_second:.1f} steps/s, {result.seconds:.1f} s of training "
               f"+ {result.eval_seconds:.1f} s of evaluation")
    if result.stop_reason != "diverged" and not kw["quiet"]:
        if model in CONTEXT:
            echo(f"  for scale: {CONTEXT[model]}", err=True)
        echo(f"  curves and checkpoint in {out}; draw them with: tinynet plot {out}", err=True)
    if kw["baseline"] != "none" and result.stop_reason not in ("diverged", "interrupted"):
        try:
            run_baseline(kw["baseline"], kw, given, cfg, data, result, echo)
        except (RunExistsError, RunLockedError, RunFileError, CheckpointError, ValueError) as e:
            raise click.ClickException(f"--baseline {kw['baseline']}: {e}")
    if result.stop_reason == "diverged":
        if kw["quiet"]:
            echo(result.message, err=True)
        sys.exit(3)
    if result.stop_reason == "interrupted":
        sys.exit(128 + getattr(signal, result.signal or "SIGINT"))
