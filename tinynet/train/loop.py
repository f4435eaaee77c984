"""The training loop: minibatch SG as in the slides' generic algorithm (seed 003:
draw a minibatch, step, repeat), with what a benchmark run needs around it.

One function per event, so each fault has one place:
  _open            the run folder: lock, new / resume / restart, config.json
  _evaluate_and_save   an evaluation row, the divergence checks, the checkpoint
  _loop            steps, stop criteria, signals (tinynet.train.signals)
  _finish          the final evaluation and checkpoint, result.json
"""
import json
import math
import sys
import time
from dataclasses import asdict

import numpy as np

from tinynet.backend_base import DeviceValue
from tinynet.distributed.comm import LOCAL, RankFailed
from tinynet.distributed.failure import on_every_rank
from tinynet.distributed.sharding import shard_bounds
from tinynet.distributed.support import check_distributable
from tinynet.train.config import CHANGEABLE_ON_RESTART, FIXED_ON_RESUME, TrainConfig, TrainResult
from tinynet.train.divergence import DivergenceMonitor
from tinynet.train.environment import describe
from tinynet.train.evaluation import evaluate, subset
from tinynet.train.files import CheckpointError, MetricsWriter, load_checkpoint, save_checkpoint
from tinynet.train.rundir import CHECKPOINT, LAST_GOOD, METRICS, RunDir
from tinynet.train.signals import StopSignals


def train(net, optimizer, data, config=None, comm=None, **overrides):
    """Train `net` with `optimizer` (built on net) on data["train"], evaluating on
    data.get("test"). `config` is a TrainConfig (fields may also be given as
    keyword arguments). Returns a TrainResult.

    - comm: data-parallel ranks (tinynet.distributed, e.g. get_comm("mpi") under
      mpirun): every rank runs this call on the same data and seed; each takes
      its shard of every global minibatch of batch_size rows and the optimizer
      reduces what it sums over examples, so P ranks make one process's
      updates. Rank 0 alone writes the run folder and prints; the state it
      opens (new or resumed) is broadcast to the others.

    - data: {"train": (X, Y), "test": (X, Y) or None}, host arrays; Y is X itself
      for an autoencoder, int class ids (n,) for a classifier (adds an error rate).
    - minibatches: each epoch a permutation of the training rows drawn from a
      numpy Generator seeded with `config.seed`; batches are consecutive slices,
      the incomplete tail is dropped (every step sees `batch_size` examples).
    - stop: after `steps` updates, `epochs` passes, or `time_budget` seconds of
      training time, whichever comes first, counting the whole run (resumes too).
    - evaluation every `eval_every` updates (and at 0 and at the end); its time
      is not counted in `seconds`.
    - the run folder `out` (tinynet.train.rundir): locked while in use; resume
      continues it exactly (2 x 50 steps resumed equal 100 steps bit for bit).
    - divergence (tinynet.train.divergence) stops the run; last_good.npz keeps
      the state of the last evaluation that passed the checks, and
      `resume=True, from_last_good=True` restarts from it with changed
      optimizer settings.
    - SIGINT / SIGTERM / SIGHUP stop at the next step boundary with a checkpoint.
    """
    cfg = config or TrainConfig()
    if overrides:
        cfg = TrainConfig(**{**asdict(cfg), **overrides})
    cfg.check()
    comm = LOCAL if comm is None else comm
    try:                          # the same checks on the same inputs: every rank raises alike
        _check_data(net, optimizer, data, cfg)
        check_distributable(net, optimizer, comm, cfg.batch_size)
        session = _Session(net, optimizer, data, cfg, comm)
    except Exception as e:
        raise on_every_rank(e)
    guard, optimizer.guard = optimizer.guard, "inputs"   # a non-finite loss stops the run next step
    net.comm, old_comm = comm, net.comm
    try:
        return session.run()
    finally:
        optimizer.guard = guard
        net.comm = old_comm
        session.close()


def _check_data(net, optimizer, data, cfg):
    if optimizer.net is not net:
        raise ValueError("the optimizer was built on another network")
    Xtr, Ytr = data["train"]
    n = Xtr.shape[0]
    if Xtr.ndim != 2 or Xtr.shape[1] != net.n_in:
        raise ValueError(f"training inputs must have shape (n, {net.n_in}) (examples of shape "
                         f"{net.input_shape} flattened C-major), got {Xtr.shape}: the data does not "
                         f"match the model's input_shape")
    if n == 0:
        raise ValueError("the training set is empty")
    if Ytr.shape[0] != n:
        raise ValueError(f"{n} training inputs but {Ytr.shape[0]} targets")
    if cfg.batch_size > n:
        raise ValueError(f"batch_size {cfg.batch_size} exceeds the {n} training examples")
    for name, pair in (("training", data["train"]), ("test", data.get("test"))):
        if pair is None:
            continue
        for what, A in (("inputs", pair[0]), ("targets", pair[1])):
            if np.issubdtype(A.dtype, np.floating) and not np.isfinite(np.sum(A, dtype=np.float64)):
                row = int(np.argmax(~np.isfinite(A).reshape(A.shape[0], -1).all(axis=1)))
                raise ValueError(f"the {name} {what} contain non-finite values (first at row {row}): "
                                 f"clean the data before training")


class _Session:
    """One call of train(): the trainer state `st` (everything a resume needs
    besides parameters and optimizer), the run folder, the metrics."""

    def __init__(self, net, optimizer, data, cfg, comm=LOCAL):
        self.net, self.opt, self.data, self.cfg = net, optimizer, data, cfg
        self.comm = comm
        self.shard = shard_bounds(comm.rank, comm.size, cfg.batch_size)   # this rank's rows of a batch
        Xtr, Ytr = data["train"]
        self.autoencode = Ytr is Xtr
        self.n = Xtr.shape[0]
        self.steps_per_epoch = self.n // cfg.batch_size
        self.max_steps = math.inf if cfg.steps is None else int(cfg.steps)
        if cfg.epochs is not None:
            self.max_steps = min(self.max_steps, math.ceil(cfg.epochs * self.steps_per_epoch))
        self.log = sys.stderr if cfg.progress and comm.rank == 0 else None
        self.rng = np.random.default_rng(cfg.seed)
        self.st = dict(step=0, pos=0, perm=None, seconds=0.0, batch_loss_sum=0.0, batch_loss_count=0,
                       last_good_step=None)
        self.monitor = DivergenceMonitor(cfg.divergence_factor, cfg.norm_factor, cfg.regress_patience)
        self.rd = RunDir(cfg.out) if cfg.out and comm.rank == 0 else None      # rank 0 writes
        self.shown = 0                # length of the progress line on screen
        self.session_steps, self.session_seconds = 0, 0.0
        self.session_evals, self.session_eval_seconds = 0, 0.0
        self.started = time.perf_counter()          # the wall clock of this call (wall_budget)
        erng = np.random.default_rng([cfg.seed, 1])    # the fixed evaluation subsets
        self.train_eval = subset(Xtr, Ytr, cfg.eval_subset, erng, self.autoencode)
        test = data.get("test")
        self.test_eval = None if test is None else subset(test[0], test[1], cfg.eval_subset, erng,
                                                          test[1] is test[0])

    def close(self):
        if self.rd is not None:
            self.rd.close()

    # -- the run folder -------------------------------------------------------------------------
    def _open(self):
        """Lock and prepare the folder; restore the state when resuming; write
        config.json. Returns the metrics rows to keep."""
        cfg, rd = self.cfg, self.rd
        mode = rd.open(cfg.resume, cfg.overwrite, cfg.from_last_good)
        for note in rd.notes:
            self._say(f"{cfg.out}: {note}")
        rows, resumed, restarts = [], [], []
        if mode != "new":
            old, changed = self._check_resume_config(mode == "restart")
            resumed = old.get("resumed", []) + [time.strftime("%Y-%m-%dT%H:%M:%S")]
            restarts = old.get("restarts", [])
            if mode == "restart":
                attempt = rd.archive_attempt()
                restarts.append(dict(time=resumed[-1], attempt=attempt, changed=changed))
            self._restore(rd.file(CHECKPOINT), restart=mode == "restart")
            if mode == "restart":
                restarts[-1]["from_step"] = self.st["step"]
            rows = rd.metrics_rows(self.st["step"])
        test = self.data.get("test")
        conf = dict(trainer={k: v for k, v in asdict(cfg).items() if k not in ("meta", "command")},
                    meta=cfg.meta, n_params=self.net.n_params, dtype=self.net.dtype.name,
                    device=self.net.device, network=repr(self.net), optimizer=type(self.opt).__name__,
                    hyperparameters=self.opt.hyperparameters or {"lr": self.opt.lr},
                    n_train=self.n, n_test=None if test is None else test[0].shape[0],
                    resumed=resumed, restarts=restarts, environment=describe(), command=cfg.command,
                    distributed=dict(kind=self.comm.kind, ranks=self.comm.size))
        rd.write_config(conf)
        self.metrics = MetricsWriter(rd.file(METRICS), rows)
        if mode == "new":
            self._checkpoint(good=True)        # resumable from the first moment on
        return rows

    def _check_resume_config(self, restart):
        old = self.rd.read_config()
        cfg, net = self.cfg, self.net
        diffs, changed = [], {}
        for k in FIXED_ON_RESUME:
            if old.get("trainer", {}).get(k) != getattr(cfg, k):
                diffs.append(f"{k}: {old.get('trainer', {}).get(k)!r} -> {getattr(cfg, k)!r}")
        old_meta = old.get("meta", {})
        for k in sorted(set(old_meta) | set(cfg.meta)):
            a, b = old_meta.get(k), json.loads(json.dumps(cfg.meta.get(k)))
            if a != b:
                if restart and k in CHANGEABLE_ON_RESTART:
                    changed[k] = [a, b]
                else:
                    diffs.append(f"{k}: {a!r} -> {b!r}")
        if old.get("n_params") != net.n_params:
            diffs.append(f"n_params: {old.get('n_params')} -> {net.n_params}")
        if diffs:
            allowed = (" (a restart --from-last-good may change only the optimizer's settings: "
                       + ", ".join(CHANGEABLE_ON_RESTART) + ")") if restart else \
                " (to change the optimizer's settings, restart from the last good checkpoint: --from-last-good)"
            raise ValueError(f"cannot resume {cfg.out}: the settings differ from the original run "
                             f"({'; '.join(diffs)}); use the original settings{allowed}")
        return old, changed

    def _restore(self, path, restart):
        theta, opt_state, tstate = load_checkpoint(path)
        if theta.shape != (self.net.n_params,):
            raise CheckpointError(f"checkpoint {path} holds {theta.size} parameters, the model has "
                                  f"{self.net.n_params}: it belongs to another model")
        lr = self.opt.lr
        try:
            self.net.set_flat(theta)
            self.opt.load_state_dict(opt_state)
            self.rng.bit_generator.state = json.loads(tstate.pop("rng"))
            buffers = tstate.pop("buffers", None)
            if buffers is not None:         # checkpoints from before buffers were kept have none
                self.net.load_buffers(buffers)
            monitor = tstate.pop("monitor", None) or dict(initial_loss=tstate.pop("initial_loss", None))
            tstate.pop("initial_loss", None)
            self.st.update(tstate)
        except (KeyError, ValueError, TypeError) as e:
            raise CheckpointError(f"checkpoint {path} is incomplete or from another optimizer "
                                  f"({type(e).__name__}: {e})") from None
        self.monitor.state.update(monitor)
        if restart:
            self.opt.lr = lr                   # the restart's settings, not the diverged attempt's
            self.monitor.state.update(last_fingerprint=None, regressions=0)

    def _checkpoint(self, good):
        if self.rd is None:
            return
        tstate = dict(self.st)
        if good:
            tstate["last_good_step"] = self.st["step"]
        tstate["rng"] = json.dumps(self.rng.bit_generator.state)
        tstate["monitor"] = {k: v for k, v in self.monitor.state.items()}
        tstate["buffers"] = self.net.buffers()          # BatchNorm's running statistics, ...
        theta, opt_state = self.net.get_flat(), self.opt.state_dict()
        self.rd.save(lambda p: save_checkpoint(p, theta, opt_state, tstate), good)
        if good:
            self.st["last_good_step"] = self.st["step"]

    def _back_to_last_good(self):
        theta, opt_state, tstate = load_checkpoint(self.rd.file(LAST_GOOD))
        self.net.set_flat(theta)
        self.opt.load_state_dict(opt_state)
        if tstate.get("buffers") is not None:
            self.net.load_buffers(tstate["buffers"])

    # -- evaluation -----------------------------------------------------------------------------
    def _evaluate_and_save(self, save=True):
        """Evaluate, add the metrics row, run the divergence checks, checkpoint.
        Returns what shows divergence, or None."""
        net, cfg, st = self.net, self.cfg, self.st
        t0 = time.perf_counter()
        if self.comm.size > 1:
            self._check_ranks_agree()
        tr_loss, _ = evaluate(net, *self.train_eval, cfg.eval_chunk, self.autoencode)
        te_loss = te_err = None
        if self.test_eval is not None:
            te_loss, te_err = evaluate(net, *self.test_eval, cfg.eval_chunk,
                                       self.test_eval[1] is self.test_eval[0])
        bl = st["batch_loss_sum"] / st["batch_loss_count"] if st["batch_loss_count"] else None
        st["batch_loss_sum"], st["batch_loss_count"] = 0.0, 0
        row = dict(step=st["step"], epoch=st["step"] / self.steps_per_epoch, seconds=st["seconds"],
                   train_loss=tr_loss, test_loss=te_loss, test_error=te_err, batch_loss=bl,
                   **_scalar_metrics(self.opt.metrics), **self._comm_metrics())
        self.metrics.add(row)
        self.session_evals += 1
        self.session_eval_seconds += time.perf_counter() - t0
        self._print_row(row)
        good, seen = self.monitor.on_eval(net.get_flat(), tr_loss)
        if seen is None and save:
            self._checkpoint(good)
        return seen

    def _comm_metrics(self):
        """comm_bytes: mean bytes this rank sent per step since the last row;
        comm_bytes_total: since the start of this call (data-parallel only)."""
        if self.comm.size == 1:
            return {}
        acc = self.comm.account
        total, steps = sum(acc.total.values()), acc.steps
        last = getattr(self, "_comm_last", (0, 0))
        self._comm_last = (total, steps)
        per = (total - last[0]) / (steps - last[1]) if steps > last[1] else 0.0
        return dict(comm_bytes=per, comm_bytes_total=float(total))

    # -- the loop -------------------------------------------------------------------------------
    def run(self):
        reason = message = seen = None
        in_step = False
        with StopSignals() as stop:       # from the first file on: a stop request waits for a step boundary
            rows = self._open_all()
            if self.rd is None:
                self.metrics = MetricsWriter(None, rows)    # other ranks: rank 0's rows (the same decisions)
            try:
                if self.st["step"] == 0 and not rows:
                    seen = self._evaluate_and_save()
                if seen is None:
                    reason, message, seen, in_step = self._loop(stop)
            except KeyboardInterrupt:
                # a second Ctrl-C: stop at once
                reason, in_step = "interrupted", self._in_step
                message = (f"interrupted during step {self.st['step'] + 1}; " +
                           (f"the checkpoint {self.rd.file(CHECKPOINT)} of the last evaluation is kept"
                            if self.rd else "the parameters may hold a partial update")) if in_step else \
                    f"interrupted at step {self.st['step']}"
            if seen is None and reason == "interrupted" and stop.flag and not in_step:
                message = f"stopped by {stop.name} at step {self.st['step']}"
            # still inside: a signal now waits until the final files are written
            return self._finish(reason, message, seen, in_step, stop.name if stop.flag else None)

    _in_step = False
    _over = dict(time=False, wall=False)

    # -- data-parallel ranks (tinynet.distributed) -----------------------------------------------
    def _open_all(self):
        """Rank 0 opens the run folder (_open); the state it holds then (new or
        resumed) goes to every other rank, pickled once. A failure on rank 0 is
        sent too, so that the others raise instead of waiting."""
        comm = self.comm
        if comm.size == 1:
            return self._open() if self.rd else []
        state = error = None
        rows = []
        if comm.rank == 0:
            try:
                rows = self._open() if self.rd else []
                state = dict(theta=np.array(self.net.get_flat()), opt=self.opt.state_dict(), st=dict(self.st),
                             rng=self.rng.bit_generator.state, monitor=dict(self.monitor.state),
                             buffers=self.net.buffers(), rows=rows)
            except Exception as e:                       # noqa: BLE001 - re-raised below
                error = e
        state = comm.bcast_object(state if error is None else dict(error=f"{type(error).__name__}: {error}"))
        if error is not None:
            raise on_every_rank(error)
        if "error" in state:
            raise on_every_rank(RankFailed(f"rank 0 could not open the run: {state['error']}"))
        if comm.rank != 0:
            self.net.set_flat(state["theta"])
            self.opt.load_state_dict(state["opt"])
            self.st.update(state["st"])
            self.rng.bit_generator.state = state["rng"]
            self.monitor.state.update(state["monitor"])
            self.net.load_buffers(state["buffers"])
            rows = state["rows"]
        return rows

    def _agree(self, stop):
        """One decision for all ranks: a signal or a spent budget on any rank stops
        every rank at the same step (a 24-byte all-reduce per step)."""
        cfg, st = self.cfg, self.st
        over_t = cfg.time_budget is not None and st["seconds"] >= cfg.time_budget
        over_w = cfg.wall_budget is not None and time.perf_counter() - self.started >= cfg.wall_budget
        f = self.comm.allreduce_max([float(stop.received or 0), float(over_t), float(over_w)], "control")
        if f[0] and not stop.flag:
            stop.received = int(f[0])           # another rank's signal
        self._over = dict(time=bool(f[1]), wall=bool(f[2]))

    def _check_ranks_agree(self):
        """At each evaluation: every rank holds the same parameters (the reductions
        give each rank the same numbers; a mismatch would be a bug, not noise)."""
        theta = np.asarray(self.net.get_flat(), dtype=np.float64)
        h = float(np.sum(theta * np.cos(np.arange(theta.size))))
        f = self.comm.allreduce_max([h, -h], "control")
        if f[0] != -f[1]:
            raise RuntimeError(f"the ranks' parameters differ at step {self.st['step']} "
                               f"(checksums {-f[1]!r} .. {f[0]!r}): a reduction is missing")

    def _loop(self, stop):
        """Steps until a stop criterion, a signal or divergence. Returns
        (reason, message, seen, in_step)."""
        st, cfg, opt, net = self.st, self.cfg, self.opt, self.net
        Xtr, Ytr = self.data["train"]
        last_print = time.perf_counter()
        while True:
            if self.comm.size > 1:
                self._agree(stop)
            if st["step"] >= self.max_steps:
                reason = "steps" if cfg.steps is not None and st["step"] >= cfg.steps else "epochs"
                return reason, f"reached {st['step']} steps ({st['step'] / self.steps_per_epoch:.2f} epochs)", \
                    None, False
            if (cfg.time_budget is not None and st["seconds"] >= cfg.time_budget) or self._over["time"]:
                return "time", f"time budget of {cfg.time_budget:g} s of training spent", None, False
            if (cfg.wall_budget is not None and time.perf_counter() - self.started >= cfg.wall_budget) \
                    or self._over["wall"]:
                return "wall", f"wall budget of {cfg.wall_budget:g} s spent", None, False
            if stop.flag:
                return "interrupted", f"interrupted at step {st['step']}", None, False
            t0 = time.perf_counter()
            idx = _next_batch(st, self.rng, self.n, cfg.batch_size)[self.shard[0]:self.shard[1]]
            Xb = net.as_input(Xtr[idx])
            Yb = Xb if self.autoencode else net.as_target(Ytr[idx])
            self._in_step = True
            try:
                loss = float(opt.step(Xb, Yb))
            except FloatingPointError as e:          # the optimizer refused non-finite parameters
                self._in_step = False
                st["step"] += 1
                return "diverged", None, str(e), False
            self._in_step = False
            dt = time.perf_counter() - t0
            st["seconds"] += dt
            self.session_seconds += dt
            st["step"] += 1
            self.session_steps += 1
            self.comm.account.end_step()
            seen = self.monitor.on_step(loss)
            if seen is not None:
                return "diverged", None, seen, False
            st["batch_loss_sum"] += loss
            st["batch_loss_count"] += 1
            if self.log and time.perf_counter() - last_print >= cfg.progress_interval:
                last_print = time.perf_counter()
                self._print_progress(loss)
            if st["step"] % cfg.eval_every == 0:
                seen = self._evaluate_and_save()
                if seen is not None:
                    return "diverged", None, seen, False

    def _finish(self, reason, message, seen, in_step, signal_name):
        st, rd = self.st, self.rd
        if reason in ("steps", "epochs", "time", "wall", "interrupted") and not in_step and seen is None:
            at_end = self.metrics.rows and self.metrics.rows[-1]["step"] == st["step"]
            if reason != "interrupted" and not at_end:
                seen = self._evaluate_and_save()
                if seen is not None:
                    reason = "diverged"
            elif rd is not None and not at_end:
                self._checkpoint(good=False)       # no evaluation here: not known to be good
            if seen is None and rd is not None:
                message += f"; checkpoint {rd.file(CHECKPOINT)}"
        divergence = None
        if seen is not None:
            reason = "diverged"
            divergence = dict(step=st["step"], seen=seen)
            good = st["last_good_step"]
            message = f"diverged at step {st['step']}: {seen}"
            if rd is not None and good is not None:
                self._back_to_last_good()
                message += (f"; the last good checkpoint (step {good}) is {rd.file(LAST_GOOD)} (the network "
                            f"now holds it): restart from it with --resume --from-last-good and a smaller --lr")
            else:
                message += "; try a smaller learning rate"
        last = self.metrics.rows[-1] if self.metrics.rows else {}
        result = TrainResult(
            stop_reason=reason, message=message, step=st["step"], epoch=st["step"] / self.steps_per_epoch,
            seconds=st["seconds"],
            steps_per_second=self.session_steps / self.session_seconds if self.session_seconds else 0.0,
            initial_loss=self.monitor.state["initial_loss"], train_loss=last.get("train_loss"),
            test_loss=last.get("test_loss"), test_error=last.get("test_error"), history=list(self.metrics.rows),
            run_dir=self.cfg.out, signal=signal_name, divergence=divergence, last_good_step=st["last_good_step"],
            eval_seconds=self.session_eval_seconds)
        if rd is not None:
            rd.write_result({k: v for k, v in asdict(result).items() if k != "history"})
        if self.log:
            print(("\n" if self.shown else "") + message, file=self.log, flush=True)
        return result

    # -- progress -------------------------------------------------------------------------------
    def _say(self, text):
        if self.log:
            print(text, file=self.log, flush=True)

    def _print_row(self, row):
        if not self.log:
            return
        msg = f"step {row['step']:>7}  epoch {row['epoch']:6.2f}  {row['seconds']:8.1f}s  train {row['train_loss']:.6g}"
        if row["test_loss"] is not None:
            msg += f"  test {row['test_loss']:.6g}"
        if row["test_error"] is not None:
            msg += f"  error {100 * row['test_error']:.2f}%"
        print("\r" + msg.ljust(self.shown), file=self.log, flush=True)
        self.shown = 0

    def _print_progress(self, loss):
        """step k/N pct  loss  steps/s  training and evaluation seconds  ETA."""
        st = self.st
        total = "" if self.max_steps == math.inf else f"/{self.max_steps}"
        done, eta = self._progress()
        pct = "" if done is None else f" {100 * done:3.0f}%"
        line = (f"step {st['step']}{total}{pct}  loss {loss:.6g}  "
                f"{self.session_steps / max(self.session_seconds, 1e-9):.1f} steps/s  "
                f"train {st['seconds']:.1f}s  eval {self.session_eval_seconds:.1f}s"
                + ("" if eta is None else f"  ETA {_clock(eta)}"))
        print("\r" + line.ljust(self.shown), end="", file=self.log, flush=True)
        self.shown = len(line)

    def _progress(self):
        """(fraction done, seconds left) by the nearest stop criterion, or Nones."""
        st, cfg = self.st, self.cfg
        rate = self.session_steps / self.session_seconds if self.session_seconds > 0 else None
        per_eval = self.session_eval_seconds / self.session_evals if self.session_evals else 0.0
        done, left = [], []
        if self.max_steps != math.inf and rate:
            rem = max(0, self.max_steps - st["step"])
            done.append(st["step"] / self.max_steps)
            left.append(rem / rate + (rem // cfg.eval_every + 1) * per_eval)
        if cfg.time_budget is not None and rate:
            rem_t = max(0.0, cfg.time_budget - st["seconds"])
            done.append(st["seconds"] / cfg.time_budget)
            left.append(rem_t + (rem_t * rate // cfg.eval_every + 1) * per_eval)
        if cfg.wall_budget is not None:
            wall = time.perf_counter() - self.started
            done.append(wall / cfg.wall_budget)
            left.append(max(0.0, cfg.wall_budget - wall))
        if not left:
            return None, None
        i = min(range(len(left)), key=left.__getitem__)
        return min(1.0, done[i]), left[i]


def _next_batch(st, rng, n, batch_size):
    """Row indices of the next minibatch: the next slice of this epoch's
    permutation, or the first slice of a new one when fewer than batch_size
    rows are left (the tail is dropped)."""
    if st["perm"] is None or st["pos"] + batch_size > n:
        st["perm"], st["pos"] = rng.permutation(n), 0
    idx = st["perm"][st["pos"]:st["pos"] + batch_size]
    st["pos"] += batch_size
    return idx


def _scalar_metrics(metrics):
    out = {}
    for k, v in (metrics or {}).items():
        if isinstance(v, (bool, int, float, np.integer, np.floating, DeviceValue)) or \
                (isinstance(v, np.ndarray) and v.size == 1):
            out[k] = float(v)
    return out


def _clock(seconds):
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
