"""`tinynet profile`: per-kernel timing of optimizer steps (tinynet.profiler over
the backend's timing hook), as a table like torch.profiler's
key_averages().table(), and optionally as CSV / JSON and a Chrome trace.

    tinynet profile --model mnist-autoencoder --optimizer kfac --device cpu --steps 100
    tinynet profile --optimizer sgd --steps 20 --out table.json --trace trace.json

The model and the optimizer are built as `tinynet train` builds them
(tinynet.models.build_model, tinynet.optim.build_optimizer with the run's
seed); an optimizer's hyperparameters are given as `-o NAME=VALUE` (the
parameter names of its __init__, e.g. `-o T=100 -o stats_every=10`). The
minibatches are drawn from the model's dataset (a seeded permutation, as in
training) and put on the device before the steps are timed, so that the
step time is the optimizer step alone.

Errors are one line on stderr and exit status 2 (bad option, no GPU for
--device cuda, missing data).
"""
import json
import os
import sys

import click
import numpy as np

from tinynet.models import DATASET, MODELS, build_model
from tinynet.optim import OPTIMIZERS, build_optimizer
from tinynet.profiler import format_table, profile_steps, to_csv, to_json


def _fail(msg):
    click.echo(f"tinynet profile: error: {msg}", err=True)
    sys.exit(2)


def _value(text):
    """-o VALUE as the CLI would give it: int, float, bool, none, else the string."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def _options(pairs):
    out = {}
    for p in pairs:
        if "=" not in p:
            _fail(f"-o {p!r}: write NAME=VALUE (a parameter of the optimizer's __init__, e.g. -o T=100)")
        k, v = p.split("=", 1)
        out[k.strip().replace("-", "_")] = _value(v.strip())
    return out


def cuda_unavailable():
    """None when device='cuda' can run here (a GPU with a driver, or the
    simulator), else the reason, one line."""
    try:
        from numba import config, cuda
        if config.ENABLE_CUDASIM or cuda.is_available():
            return None
    except Exception as e:   # numba-cuda without its runtime libraries
        return f"--device cuda: numba.cuda cannot start ({type(e).__name__}: {e})"
    return ("--device cuda: no NVIDIA GPU with a driver on this machine (numba.cuda.is_available() is False); "
            "use --device cpu, or NUMBA_ENABLE_CUDASIM=1 for the (slow) simulator")


def make_batches(net, model, batch, count, seed, data_dir=None, synthetic=False):
    """`count` minibatches (X, Y) of `batch` rows on the net's device: consecutive
    slices of a seeded permutation of the model's training set (the trainer's
    order), or uniform random inputs with `synthetic` (labels: random classes)."""
    autoencode = DATASET[model] == "mnist-autoencode"
    rng = np.random.default_rng(seed)
    if synthetic:
        X = rng.uniform(0.0, 1.0, (batch * count, net.n_in))
        Y = X if autoencode else rng.integers(0, net.n_out, batch * count)
    else:
        from tinynet.data import DataError, load_dataset
        try:
            X, Y = load_dataset(DATASET[model], "train", data_dir)
        except (DataError, FileNotFoundError, OSError) as e:
            _fail(f"{DATASET[model]} data: {str(e).splitlines()[0]} (give --data-dir, or --synthetic for random inputs)")
    n = X.shape[0]
    if batch > n:
        _fail(f"--batch {batch}: the training set has only {n} rows")
    perm = rng.permutation(n)
    out = []
    for c in range(count):
        a = (c * batch) % (n - batch + 1)
        idx = perm[a:a + batch]
        Xb = net.as_input(np.ascontiguousarray(X[idx]))
        Yb = Xb if autoencode else net.as_target(np.asarray(Y)[idx])
        out.append((Xb, Yb))
    return out


@click.command("profile")
@click.option("--model", default="mnist-autoencoder", show_default=True, help=f"one of: {', '.join(MODELS)}")
@click.option("--optimizer", default="sgd", show_default=True, help=f"one of: {', '.join(OPTIMIZERS)}")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda")
@click.option("--steps", type=int, default=20, show_default=True,
              help="profiled steps (amortized work shows at its share when this covers its period, "
                   "e.g. --steps 100 for KFAC's T=100)")
@click.option("--batch", type=int, default=200, show_default=True, help="minibatch rows")
@click.option("--warmup", type=int, default=2, show_default=True,
              help="untimed steps first (JIT compilation, first factorizations)")
@click.option("--dtype", default="float32", show_default=True, help="float32 or float64")
@click.option("--lr", type=float, default=None, help="learning rate (default: the optimizer's, as in train)")
@click.option("--option", "-o", "opts", multiple=True, metavar="NAME=VALUE",
              help="an optimizer hyperparameter (its __init__ name), repeatable: -o T=100 -o stats_every=10")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="data folder (as in train; MNIST ships with the package)")
@click.option("--synthetic", is_flag=True, help="uniform random inputs instead of the dataset")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="also write the table to FILE: .json (the fixed JSON form) or .csv")
@click.option("--trace", type=click.Path(dir_okay=False), default=None,
              help="write a Chrome-trace JSON of one more step (open in Perfetto or chrome://tracing)")
@click.option("--top", type=int, default=None, help="print only the N most expensive rows")
@click.option("--no-untimed", is_flag=True,
              help="skip the reference steps with timing off (halves the run time)")
def profile(model, optimizer, device, steps, batch, warmup, dtype, lr, opts, seed, data_dir, synthetic,
            out, trace, top, no_untimed):
    """Time every kernel of N optimizer steps: calls, ms per step, achieved GFLOP/s or GB/s
    against the device's peak, and the step time no kernel covers."""
    if model not in MODELS:
        _fail(f"--model {model!r}: unknown; available: {', '.join(MODELS)}")
    if optimizer not in OPTIMIZERS:
        _fail(f"--optimizer {optimizer!r}: unknown; available: {', '.join(OPTIMIZERS)}")
    if device not in ("cpu", "cuda"):
        _fail(f"--device {device!r}: choose cpu or cuda")
    if dtype not in ("float32", "float64"):
        _fail(f"--dtype {dtype!r}: choose float32 or float64")
    for flag, v, lo in (("--steps", steps, 1), ("--batch", batch, 1), ("--warmup", warmup, 0)):
        if v < lo:
            _fail(f"{flag} must be >= {lo}, got {v}")
    if out is not None and os.path.splitext(out)[1].lower() not in (".json", ".csv"):
        _fail(f"--out {out}: the file name must end in .json or .csv")
    if device == "cuda":
        why = cuda_unavailable()
        if why:
            _fail(why)
    options = _options(opts)
    try:
        net = build_model(model, dtype=np.dtype(dtype).type, seed=seed, device=device)
    except RuntimeError as e:                 # the CUDA backend's own refusal
        _fail(str(e).splitlines()[0])
    try:
        opt = build_optimizer(optimizer, net, lr, defaults={"seed": seed}, **options)
    except (ValueError, TypeError) as e:
        _fail(str(e).splitlines()[0] + (" (here given as -o NAME=VALUE)" if options else ""))
    count = min(warmup + (1 if no_untimed else 2) * steps + (1 if trace else 0), 32)
    batches = make_batches(net, model, batch, count, seed, data_dir, synthetic)
    result = profile_steps(net, opt, batches, steps=steps, warmup=warmup, untimed=not no_untimed,
                           trace=trace is not None)
    result.update(model=model, optimizer=optimizer, batch=batch, lr=opt.lr, options=options, seed=seed,
                  synthetic=bool(synthetic))
    click.echo(format_table(result, top=top), nl=False)
    if out is not None:
        text = to_json(result) + "\n" if out.lower().endswith(".json") else to_csv(result)
        _write(out, text)
        click.echo(f"table written to {out}", err=True)
    if trace is not None:
        _write(trace, json.dumps(result["trace"]))
        click.echo(f"trace of one step written to {trace} (open in https://ui.perfetto.dev or chrome://tracing)",
                   err=True)


def _write(path, text):
    d = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(d, exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        _fail(f"cannot write {path}: {e.strerror or e}")
