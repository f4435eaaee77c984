"""The trainer's settings (TrainConfig) and what a run returns (TrainResult)."""
from dataclasses import dataclass, field

# trainer settings that change the numbers of a run: a resume must keep them
FIXED_ON_RESUME = ("batch_size", "seed", "eval_subset")
# meta entries a restart from the last good checkpoint may change (the optimizer's settings)
CHANGEABLE_ON_RESTART = ("lr", "options")


@dataclass
class TrainConfig:
    batch_size: int = 200
    steps: int | None = None
    epochs: float | None = None
    time_budget: float | None = None     # seconds of training time (evaluation excluded), whole run
    wall_budget: float | None = None     # seconds of wall time of this call (evaluation included)
    eval_every: int = 100
    eval_subset: int | None = None       # rows of each set used for evaluation (None: all)
    eval_chunk: int = 2000               # rows per forward pass during evaluation
    seed: int = 0
    out: str | None = None               # run directory (None: nothing written)
    resume: bool = False
    from_last_good: bool = False         # with resume: restart from last_good.npz, optimizer settings may change
    overwrite: bool = False
    divergence_factor: float = 100.0     # minibatch loss > this x the initial loss: diverged
    norm_factor: float = 100.0           # parameter norm > this x max(1, initial norm): diverged
    regress_patience: int = 2            # evaluations in a row above the initial and the best loss
    progress: bool = True                # progress line and evaluation lines on stderr
    progress_interval: float = 0.5
    meta: dict = field(default_factory=dict)   # model / optimizer description, saved in config.json
    command: dict | None = None          # the CLI settings that made the run (recorded, not compared)

    def check(self):
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size}")
        if self.steps is None and self.epochs is None and self.time_budget is None and self.wall_budget is None:
            raise ValueError("give a stop criterion: steps, epochs, time_budget or wall_budget")
        for name in ("steps", "epochs", "time_budget", "wall_budget"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ValueError(f"{name} must be positive, got {v}")
        if self.eval_every < 1:
            raise ValueError(f"eval_every must be >= 1, got {self.eval_every}")
        if self.eval_subset is not None and self.eval_subset < 1:
            raise ValueError(f"eval_subset must be >= 1, got {self.eval_subset}")
        if self.eval_chunk < 1:
            raise ValueError(f"eval_chunk must be >= 1, got {self.eval_chunk}")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other")
        if self.from_last_good and not self.resume:
            raise ValueError("from_last_good (--from-last-good) restarts an existing run: give resume too")
        if not self.divergence_factor > 1:
            raise ValueError(f"divergence_factor must be > 1, got {self.divergence_factor}")
        if not self.norm_factor > 1:
            raise ValueError(f"norm_factor must be > 1, got {self.norm_factor}")
        if self.regress_patience < 1:
            raise ValueError(f"regress_patience must be >= 1, got {self.regress_patience}")


@dataclass
class TrainResult:
    stop_reason: str            # "steps", "epochs", "time", "wall", "diverged", "interrupted"
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
    signal: str | None = None   # SIGINT / SIGTERM / SIGHUP when interrupted by one
    divergence: dict | None = None   # {"step", "seen"} when diverged
    last_good_step: int | None = None
    eval_seconds: float = 0.0   # evaluation time in this call (not in `seconds`)

    def __repr__(self):
        first = self.history[0]["train_loss"] if self.history else None
        loss = (f", training loss {first:.6g} -> {self.train_loss:.6g}"
                if first is not None and self.train_loss is not None else "")
        test = f", test loss {self.test_loss:.6g}" if self.test_loss is not None else ""
        err = f", test error {100 * self.test_error:.2f}%" if self.test_error is not None else ""
        where = f", run_dir={self.run_dir!r}" if self.run_dir else ""
        return (f"TrainResult({self.stop_reason}: step {self.step}{loss}{test}{err}, {self.seconds:.1f} s "
                f"of training, {len(self.history)} evaluations{where})")
