"""The training loop: minibatch SG as in the slides' generic algorithm (seed 003:
draw a minibatch, step, repeat), with what a benchmark run needs around it.

  train(net, optimizer, data, config) -> TrainResult

- data: {"train": (X, Y), "test": (X, Y) or None}, host arrays; Y is X itself for
  an autoencoder, int class ids (n,) for a classifier (which adds an error rate).
- minibatches: each epoch a permutation of the training rows drawn from a
  numpy Generator seeded with `config.seed`; batches are consecutive slices of
  it, the incomplete tail is dropped (every step sees `batch_size` examples).
- stop: after `steps` updates, `epochs` passes, or `time_budget` seconds of
  training time (the thesis's benchmark: lowest training loss after a fixed
  time), whichever comes first; all three count the whole run, resumes included.
- evaluation every `eval_every` updates (and at 0 and at the end): the loss on
  the training and test sets, whole or a fixed seeded subset of `eval_subset`
  rows, and the test error rate of a classifier; evaluation time is not counted
  in `seconds`.
- run directory `out`: config.json, metrics.csv (one row per evaluation),
  checkpoint.npz (written atomically at each evaluation: parameters, optimizer
  state_dict, trainer state with the generator's state), result.json. An
  existing run is never overwritten unless `overwrite`; `resume` continues it
  exactly (on the CPU, 2 x 50 steps resumed equal 100 steps bit for bit).
- divergence guard: a non-finite loss, or a minibatch loss above
  `divergence_factor` x the initial loss, stops the run; the last checkpoint,
  written before the divergence, is kept.
- Ctrl-C: the step in progress finishes, a checkpoint is written, and the run
  stops with stop_reason "interrupted" (a second Ctrl-C aborts at once; a
  checkpoint is then written only if no step was in progress).
"""
import csv
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field

import numpy as np

CONFIG, METRICS, CHECKPOINT, RESULT = "config.json", "metrics.csv", "checkpoint.npz", "result.json"
BASE_COLUMNS = ["step", "epoch", "seconds", "train_loss", "test_loss", "test_error", "batch_loss"]
# trainer settings that change the numbers of a run: a resume must keep them
_FIXED_ON_RESUME = ("batch_size", "seed", "eval_subset")


class RunExistsError(Exception):
    """The run directory already holds a run (pass resume or overwrite)."""


@dataclass
class TrainConfig:
    batch_size: int = 200
    steps: int | None = None
    epochs: float | None = None
    time_budget: float | None = None     # seconds of training time
    eval_every: int = 100
    eval_subset: int | None = None       # rows of each set used for evaluation (None: all)
    eval_chunk: int = 2000               # rows per forward pass during evaluation
    seed: int = 0
    out: str | None = None               # run directory (None: nothing written)
    resume: bool = False
    overwrite: bool = False
    divergence_factor: float = 100.0
    progress: bool = True                # progress line and evaluation lines on stderr
    progress_interval: float = 0.5
    meta: dict = field(default_factory=dict)   # model / optimizer description, saved in config.json

    def check(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.steps is None and self.epochs is None and self.time_budget is None:
            raise ValueError("give a stop criterion: steps, epochs or time_budget")
        for name in ("steps", "epochs", "time_budget"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ValueError(f"{name} must be positive, got {v}")
        if self.eval_every < 1:
            raise ValueError(f"eval_every must be >= 1, got {self.eval_every}")
        if self.eval_subset is not None and self.eval_subset < 1:
            raise ValueError(f"eval_subset must be >= 1, got {self.eval_subset}")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other")
        if not self.divergence_factor > 1:
            raise ValueError(f"divergence_factor must be > 1, got {self.divergence_factor}")


@dataclass
class TrainResult:
    stop_reason: str            # "steps", "epochs", "time", "diverged", "interrupted"
    message: str
    step: int
    epoch: float
    seconds: float              # training time of the whole run
    steps_per_second: float     # in this call
    initial_loss: float | None
    train_loss: float | None    # at the last evaluation
    test_loss: float | None
    test_error: float | None
    history: list = field(default_factory=list)
    run_dir: str | None = None


# -- checkpoints -----------------------------------------------------------------------------
def _flatten(obj, prefix, arrays):
    """A JSON skeleton of obj with each array replaced by {"__array__": key}."""
    if isinstance(obj, np.ndarray):
        arrays[prefix] = obj
        return {"__array__": prefix}
    if isinstance(obj, dict):
        return {str(k): _flatten(v, f"{prefix}/{k}", arrays) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_flatten(v, f"{prefix}/{i}", arrays) for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"checkpoint: cannot store {type(obj).__name__} at {prefix!r} "
                    f"(state_dict values must be arrays, numbers, strings, lists or dicts)")


def _unflatten(skel, arrays):
    if isinstance(skel, dict):
        if set(skel) == {"__array__"}:
            return arrays[skel["__array__"]]
        return {k: _unflatten(v, arrays) for k, v in skel.items()}
    if isinstance(skel, list):
        return [_unflatten(v, arrays) for v in skel]
    return skel


def save_checkpoint(path, theta, optimizer_state, trainer_state):
    """Write the checkpoint atomically: a temporary file in the same folder,
    flushed to disk, then renamed over `path` (os.replace)."""
    arrays = {"theta": np.asarray(theta)}
    skel = {"optimizer": _flatten(optimizer_state, "optimizer", arrays),
            "trainer": _flatten(trainer_state, "trainer", arrays)}
    arrays["skeleton"] = np.array(json.dumps(skel))
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path):
    """(theta, optimizer_state, trainer_state) from a checkpoint file."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    skel = json.loads(str(arrays.pop("skeleton")))
    return arrays["theta"], _unflatten(skel["optimizer"], arrays), _unflatten(skel["trainer"], arrays)


# -- metrics file ----------------------------------------------------------------------------
def read_metrics(path):
    """Rows of a metrics.csv as dicts of floats (None for empty cells)."""
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            row = {k: (float(v) if v not in ("", None) else None) for k, v in r.items()}
            row["step"] = int(row["step"])
            rows.append(row)
    return rows


class _MetricsWriter:
    """metrics.csv, one row per evaluation; the header grows when the optimizer
    reports a new metric (then the file is rewritten, it is small)."""

    def __init__(self, path, rows):
        self.path, self.rows = path, list(rows)
        self.columns = list(BASE_COLUMNS)
        for r in self.rows:
            self._grow(r)
        if path is not None:
            self._rewrite()

    def _grow(self, row):
        new = [k for k in row if k not in self.columns]
        self.columns += new
        return bool(new)

    def _rewrite(self):
        with open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, self.columns)
            w.writeheader()
            for r in self.rows:
                w.writerow({k: _cell(r.get(k)) for k in self.columns})

    def add(self, row):
        self.rows.append(row)
        if self._grow(row) or self.path is None:
            if self.path is not None:
                self._rewrite()
            return
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.columns).writerow({k: _cell(row.get(k)) for k in self.columns})


def _cell(v):
    return "" if v is None else repr(float(v)) if isinstance(v, (float, np.floating)) else v


# -- evaluation ------------------------------------------------------------------------------
def evaluate(net, X, Y, chunk=2000, autoencode=False):
    """(mean loss, error rate or None) of net on (X, Y), in chunks of rows.
    The error rate is computed when Y holds integer class ids. Stages run in
    eval mode (batch norm uses its running statistics and leaves them alone);
    the previous mode is restored."""
    modes = [s.training for s in net.layers]
    net.train(False)
    try:
        return _evaluate(net, X, Y, chunk, autoencode)
    finally:
        for s, m in zip(net.layers, modes):
            s.training = m


def _evaluate(net, X, Y, chunk, autoencode):
    classify = Y.ndim == 1 and np.issubdtype(Y.dtype, np.integer)
    n = X.shape[0]
    total, wrong = 0.0, 0
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        Xc = net.as_input(X[a:b])
        Yc = Xc if autoencode else net.as_target(Y[a:b])
        F, _ = net.forward_ctx(Xc)
        value, _ = net.loss_stage.forward(F, Yc)
        total += float(value) * (b - a)
        if classify:
            wrong += int(np.count_nonzero(np.argmax(net.bk.to_host(F), axis=1) != Y[a:b]))
    return total / n, (wrong / n if classify else None)


def _scalar_metrics(metrics):
    out = {}
    for k, v in (metrics or {}).items():
        if isinstance(v, (bool, int, float, np.integer, np.floating)) or \
                (isinstance(v, np.ndarray) and v.size == 1):
            out[k] = float(v)
    return out


# -- the loop --------------------------------------------------------------------------------
class _Interrupt:
    """First Ctrl-C sets a flag the loop checks after each step; the previous
    handler comes back, so a second Ctrl-C raises KeyboardInterrupt at once."""

    def __init__(self):
        self.flag = False
        self.previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        self.flag = True
        signal.signal(signal.SIGINT, self.previous)

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


def _prepare_run_dir(cfg):
    """Create / check the run directory; returns the checkpoint path to resume
    from or None."""
    out = cfg.out
    ckpt = os.path.join(out, CHECKPOINT)
    existing = [f for f in (CONFIG, METRICS, CHECKPOINT, RESULT) if os.path.exists(os.path.join(out, f))]
    if cfg.resume:
        if not os.path.exists(ckpt):
            raise FileNotFoundError(f"cannot resume: {ckpt} does not exist (start the run without resume)")
        return ckpt
    if existing:
        if not cfg.overwrite:
            raise RunExistsError(f"run directory {out} already holds a run ({', '.join(existing)}); "
                                 f"pass resume=True to continue it or overwrite=True to replace it")
        for f in existing:
            os.remove(os.path.join(out, f))
    os.makedirs(out, exist_ok=True)
    return None


def _check_resume_config(out, cfg, net):
    with open(os.path.join(out, CONFIG)) as f:
        old = json.load(f)
    diffs = []
    for k in _FIXED_ON_RESUME:
        if old["trainer"].get(k) != getattr(cfg, k):
            diffs.append(f"{k}: {old['trainer'].get(k)!r} -> {getattr(cfg, k)!r}")
    for k in set(old.get("meta", {})) | set(cfg.meta):
        a, b = old.get("meta", {}).get(k), json.loads(json.dumps(cfg.meta.get(k)))
        if a != b:
            diffs.append(f"{k}: {a!r} -> {b!r}")
    if old.get("n_params") != net.n_params:
        diffs.append(f"n_params: {old.get('n_params')} -> {net.n_params}")
    if diffs:
        raise ValueError(f"cannot resume {out}: the settings differ from the original run "
                         f"({'; '.join(diffs)}); use the original settings")
    return old


def _open_run(cfg, net, optimizer, rng, st, data):
    """Prepare cfg.out, restore net, optimizer, generator and trainer state `st`
    from its checkpoint when resuming, write config.json; returns the metrics
    rows to keep (those up to the checkpoint's step)."""
    resume_from = _prepare_run_dir(cfg)
    rows, resumed = [], []
    if resume_from:
        old = _check_resume_config(cfg.out, cfg, net)
        resumed = old.get("resumed", []) + [time.strftime("%Y-%m-%dT%H:%M:%S")]
        theta, opt_state, tstate = load_checkpoint(resume_from)
        net.set_flat(theta)
        optimizer.load_state_dict(opt_state)
        rng.bit_generator.state = json.loads(tstate.pop("rng"))
        st.update(tstate)
        if os.path.exists(os.path.join(cfg.out, METRICS)):
            rows = [r for r in read_metrics(os.path.join(cfg.out, METRICS)) if r["step"] <= st["step"]]
    test = data.get("test")
    conf = dict(trainer={k: v for k, v in asdict(cfg).items() if k != "meta"},
                meta=cfg.meta, n_params=net.n_params, dtype=net.dtype.name, device=net.device,
                network=repr(net), optimizer=type(optimizer).__name__, n_train=data["train"][0].shape[0],
                n_test=None if test is None else test[0].shape[0], resumed=resumed)
    with open(os.path.join(cfg.out, CONFIG), "w") as f:
        json.dump(conf, f, indent=2, default=str)
    return rows


def _next_batch(st, rng, n, batch_size):
    """Row indices of the next minibatch: the next slice of this epoch's
    permutation, or the first slice of a new one when fewer than batch_size
    rows are left (the tail is dropped)."""
    if st["perm"] is None or st["pos"] + batch_size > n:
        st["perm"], st["pos"] = rng.permutation(n), 0
    idx = st["perm"][st["pos"]:st["pos"] + batch_size]
    st["pos"] += batch_size
    return idx


def _subset(X, Y, k, rng, autoencode):
    if k is None or k >= X.shape[0]:
        return X, Y
    idx = np.sort(rng.choice(X.shape[0], size=k, replace=False))
    Xs = X[idx]
    return Xs, (Xs if autoencode else Y[idx])


def train(net, optimizer, data, config=None, **overrides):
    """Train `net` with `optimizer` (built on net) on data["train"], evaluating on
    data.get("test"). `config` is a TrainConfig (fields may also be given as
    keyword arguments). Returns a TrainResult."""
    cfg = config or TrainConfig()
    if overrides:
        cfg = TrainConfig(**{**asdict(cfg), **overrides})
    cfg.check()
    if optimizer.net is not net:
        raise ValueError("the optimizer was built on another network")
    Xtr, Ytr = data["train"]
    test = data.get("test")
    n = Xtr.shape[0]
    if Xtr.ndim != 2 or Xtr.shape[1] != net.n_in:
        raise ValueError(f"training inputs must have shape (n, {net.n_in}) (examples of shape "
                         f"{net.input_shape} flattened C-major), got {Xtr.shape}: the data does not "
                         f"match the model's input_shape")
    if Ytr.shape[0] != n:
        raise ValueError(f"{n} training inputs but {Ytr.shape[0]} targets")
    if cfg.batch_size > n:
        raise ValueError(f"batch_size {cfg.batch_size} exceeds the {n} training examples")
    autoencode = Ytr is Xtr
    steps_per_epoch = n // cfg.batch_size
    max_steps = math.inf if cfg.steps is None else int(cfg.steps)
    if cfg.epochs is not None:
        max_steps = min(max_steps, math.ceil(cfg.epochs * steps_per_epoch))
    log = sys.stderr if cfg.progress else None

    # trainer state (everything a resume needs besides parameters and optimizer)
    rng = np.random.default_rng(cfg.seed)
    st = dict(step=0, pos=0, perm=None, seconds=0.0, initial_loss=None, batch_loss_sum=0.0,
              batch_loss_count=0)
    rows = _open_run(cfg, net, optimizer, rng, st, data) if cfg.out else []
    ckpt_path = os.path.join(cfg.out, CHECKPOINT) if cfg.out else None
    metrics = _MetricsWriter(os.path.join(cfg.out, METRICS) if cfg.out else None, rows)

    erng = np.random.default_rng([cfg.seed, 1])    # the fixed evaluation subsets
    train_eval = _subset(Xtr, Ytr, cfg.eval_subset, erng, autoencode)
    test_eval = None if test is None else _subset(test[0], test[1], cfg.eval_subset, erng, test[1] is test[0])

    def checkpoint():
        if ckpt_path:
            tstate = {k: v for k, v in st.items()}
            tstate["rng"] = json.dumps(rng.bit_generator.state)
            save_checkpoint(ckpt_path, net.get_flat(), optimizer.state_dict(), tstate)

    def do_eval():
        tr_loss, _ = evaluate(net, *train_eval, cfg.eval_chunk, autoencode)
        te_loss = te_err = None
        if test_eval is not None:
            te_loss, te_err = evaluate(net, *test_eval, cfg.eval_chunk, test_eval[1] is test_eval[0])
        bl = st["batch_loss_sum"] / st["batch_loss_count"] if st["batch_loss_count"] else None
        st["batch_loss_sum"], st["batch_loss_count"] = 0.0, 0
        row = dict(step=st["step"], epoch=st["step"] / steps_per_epoch, seconds=st["seconds"],
                   train_loss=tr_loss, test_loss=te_loss, test_error=te_err, batch_loss=bl,
                   **_scalar_metrics(optimizer.metrics))
        metrics.add(row)
        if log:
            msg = f"step {row['step']:>7}  epoch {row['epoch']:6.2f}  {row['seconds']:8.1f}s  train {tr_loss:.6g}"
            if te_loss is not None:
                msg += f"  test {te_loss:.6g}"
            if te_err is not None:
                msg += f"  error {100 * te_err:.2f}%"
            print("\r" + msg.ljust(shown[0]), file=log, flush=True)
            shown[0] = 0
        return row

    reason, message = None, ""
    shown = [0]          # length of the progress line on screen
    session_steps, session_seconds = 0, 0.0
    in_step = False
    if st["step"] == 0 and not metrics.rows:
        row = do_eval()
        if math.isfinite(row["train_loss"]):
            st["initial_loss"] = row["train_loss"]
        checkpoint()
    last_print = time.perf_counter()
    try:
        with _Interrupt() as interrupt:
            while True:
                if st["step"] >= max_steps:
                    reason = "steps" if cfg.steps is not None and st["step"] >= cfg.steps else "epochs"
                    message = f"reached {st['step']} steps ({st['step'] / steps_per_epoch:.2f} epochs)"
                    break
                if cfg.time_budget is not None and st["seconds"] >= cfg.time_budget:
                    reason, message = "time", f"time budget of {cfg.time_budget:g} s spent"
                    break
                if interrupt.flag:
                    reason, message = "interrupted", f"interrupted at step {st['step']}"
                    break
                t0 = time.perf_counter()
                idx = _next_batch(st, rng, n, cfg.batch_size)
                Xb = net.as_input(Xtr[idx])
                Yb = Xb if autoencode else net.as_target(Ytr[idx])
                in_step = True
                loss = float(optimizer.step(Xb, Yb))
                in_step = False
                dt = time.perf_counter() - t0
                st["seconds"] += dt
                session_seconds += dt
                st["step"] += 1
                session_steps += 1
                if st["initial_loss"] is None and math.isfinite(loss):
                    st["initial_loss"] = loss
                if not math.isfinite(loss) or (st["initial_loss"] > 0 and
                                               loss > cfg.divergence_factor * st["initial_loss"]):
                    reason = "diverged"
                    message = (f"diverged at step {st['step']}: minibatch loss {loss:.6g} "
                               + ("is not finite" if not math.isfinite(loss) else
                                  f"> {cfg.divergence_factor:g} x the initial loss {st['initial_loss']:.6g}")
                               + (f"; the last good checkpoint ({ckpt_path}) is kept" if ckpt_path else "")
                               + "; try a smaller learning rate")
                    break
                st["batch_loss_sum"] += loss
                st["batch_loss_count"] += 1
                if log and time.perf_counter() - last_print >= cfg.progress_interval:
                    last_print = time.perf_counter()
                    total = "" if max_steps == math.inf else f"/{max_steps}"
                    line = (f"step {st['step']}{total}  loss {loss:.6g}  "
                            f"{session_steps / max(session_seconds, 1e-9):.1f} steps/s  {st['seconds']:.1f}s")
                    print("\r" + line.ljust(shown[0]), end="", file=log, flush=True)
                    shown[0] = len(line)
                if st["step"] % cfg.eval_every == 0:
                    row = do_eval()
                    if not math.isfinite(row["train_loss"]):
                        reason = "diverged"
                        message = (f"diverged at step {st['step']}: training loss {row['train_loss']} "
                                   f"is not finite" + (f"; the last good checkpoint ({ckpt_path}) is kept"
                                                       if ckpt_path else ""))
                        break
                    checkpoint()
    except KeyboardInterrupt:
        reason = "interrupted"
        if in_step:
            message = (f"interrupted during step {st['step'] + 1}; "
                       + (f"the checkpoint {ckpt_path} of the last evaluation is kept" if ckpt_path else
                          "the parameters may hold a partial update"))
        else:
            message = f"interrupted at step {st['step']}"

    if reason in ("steps", "epochs", "time", "interrupted") and not in_step:
        if reason != "interrupted" and (not metrics.rows or metrics.rows[-1]["step"] != st["step"]):
            do_eval()
        checkpoint()
        if ckpt_path:
            message += f"; checkpoint {ckpt_path}"
    last = metrics.rows[-1] if metrics.rows else {}
    result = TrainResult(
        stop_reason=reason, message=message, step=st["step"], epoch=st["step"] / steps_per_epoch,
        seconds=st["seconds"], steps_per_second=session_steps / session_seconds if session_seconds else 0.0,
        initial_loss=st["initial_loss"], train_loss=last.get("train_loss"), test_loss=last.get("test_loss"),
        test_error=last.get("test_error"), history=list(metrics.rows), run_dir=cfg.out)
    if cfg.out:
        with open(os.path.join(cfg.out, RESULT), "w") as f:
            json.dump({k: v for k, v in asdict(result).items() if k != "history"}, f, indent=2)
    if log:
        print(("\n" if shown[0] else "") + message, file=log, flush=True)
    return result
