"""`search(objective, space, method, trials, seed)`: the driver of every search.

Trial i's point comes from its method (grid.py, random_search.py, brs.py) and,
for biased random search, from the history of the trials before it. With
`jobs` > 1 the trials run in worker processes (workers.py) and trial i is
proposed from trials 0 .. i - jobs, the ones that must have finished when
`jobs` trials run at a time: the search is then the same for a given seed and
jobs whatever order the workers finish in (jobs = 1 is algorithm 1 as printed).

An objective returns a float cost (inf or NaN: diverged) or an Outcome with a
status and extra columns; an exception in it is a failed trial. Diverged and
failed trials are recorded and count as the worst cost for the search's model
and for `best`; the search goes on.

`results=PATH` appends each trial to a CSV as it finishes (in index order, one
flushed and fsynced line per trial, so a crash loses at most the line being
written) with the search's settings beside it in PATH + ".json"; `resume=True`
re-reads it, checks that it is the same search, and runs only what is missing.
"""
import csv
import json
import math
import os
import time
from dataclasses import dataclass, field

from tinynet.train.files import atomic_json  # noqa: F401  (the one atomic JSON writer; cli/tune imports it here)
from tinynet.tune.brs import MAX_DRAWS, brs_point
from tinynet.tune.grid import grid_points
from tinynet.tune.random_search import random_point
from tinynet.tune.space import Space, SpaceError

METHODS = ("grid", "random", "brs")
STATUSES = ("ok", "diverged", "failed")
BASE_COLUMNS = ["index", "status", "cost", "seconds", "draws"]


@dataclass
class Outcome:
    """What an objective may return instead of a bare float."""
    cost: float
    status: str | None = None          # None: "ok" if cost is finite, else "diverged"
    info: dict = field(default_factory=dict)   # extra columns (e.g. train_loss, test_loss)
    error: str = ""


@dataclass
class Trial:
    index: int
    params: dict
    cost: float
    status: str = "ok"
    seconds: float = 0.0
    draws: int = 1                     # points drawn before one was accepted (brs)
    info: dict = field(default_factory=dict)
    error: str = ""

    @property
    def ok(self):
        return self.status == "ok" and math.isfinite(self.cost)


class SearchResult(list):
    """The trials in the order they ran (a list), with `.best` and the settings."""

    def __init__(self, trials, space, method, seed):
        super().__init__(trials)
        self.space, self.method, self.seed = space, method, seed

    @property
    def best(self):
        good = [t for t in self if t.ok]
        return min(good, key=lambda t: (t.cost, t.index)) if good else None


def _outcome(value):
    if isinstance(value, Outcome):
        out = value
    else:
        try:
            out = Outcome(float(value))
        except (TypeError, ValueError):
            return Outcome(math.nan, "failed", error=f"the objective returned {value!r}, not a number")
    if out.status is None:
        out.status = "ok" if math.isfinite(out.cost) else "diverged"
    if out.status not in STATUSES:
        raise ValueError(f"unknown trial status {out.status!r} (one of {', '.join(STATUSES)})")
    return out


def run_objective(objective, params):
    """One trial: (Outcome, seconds). An exception is a failed trial, not the end
    of the search; KeyboardInterrupt still stops everything."""
    t0 = time.perf_counter()
    try:
        out = _outcome(objective(dict(params)))
    except Exception as e:   # noqa: BLE001  (any error of a user's objective is that trial's failure)
        out = Outcome(math.nan, "failed", error=f"{type(e).__name__}: {e}".splitlines()[0][:500])
    return out, time.perf_counter() - t0


class _Proposer:
    """Trial i's point, deterministic in (space, method, trials, seed, jobs) and,
    for brs, in the costs of trials 0 .. i - jobs."""

    def __init__(self, space, method, trials, seed, jobs, max_draws):
        self.space, self.method, self.seed, self.jobs, self.max_draws = space, method, seed, jobs, max_draws
        self.grid = grid_points(space, trials) if method == "grid" else None

    def ready(self, i, done):
        """Whether trial i's history is complete."""
        return self.method != "brs" or all(j in done for j in range(i - self.jobs + 1))

    def propose(self, i, done):
        if self.method == "grid":
            return self.grid[i], 1
        if self.method == "random":
            return random_point(self.space, self.seed, i), 1
        history = [(done[j].params, done[j].cost) for j in range(max(0, i - self.jobs + 1))]
        return brs_point(self.space, history, self.seed, i, self.max_draws)


# -- the results file ----------------------------------------------------------------------------
def _settings(space, method, trials, seed, jobs):
    return {"space": space.spec(), "method": method, "trials": trials, "seed": seed, "jobs": jobs}


def _cell(v):
    if isinstance(v, float):
        return repr(v)       # full precision: a resumed search re-reads exactly what ran
    return "" if v is None else str(v)


class ResultsFile:
    """CSV of the trials, one row per trial in index order."""

    def __init__(self, path, space, info_columns=()):
        self.path, self.space = path, space
        self.columns = BASE_COLUMNS + space.names + list(info_columns) + ["error"]

    def write_header(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerow(self.columns)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def append(self, t):
        row = {"index": t.index, "status": t.status, "cost": float(t.cost), "seconds": round(t.seconds, 3),
               "draws": t.draws, "error": t.error, **t.params, **t.info}
        extra = [k for k in row if k not in self.columns]
        if extra:     # an objective's info columns are fixed by its first trial
            row["error"] = (t.error + "; " if t.error else "") + "dropped columns " + ", ".join(extra)
        line = _csv_line([_cell(row.get(c)) for c in self.columns])
        with open(self.path, "a", newline="") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def read(self, repair=True):
        """The recorded trials; a last line cut short by a crash is dropped (and,
        with repair, removed from the file, before a resume appends to it)."""
        with open(self.path, newline="") as f:
            text = f.read()
        if text and not text.endswith("\n"):
            text = text[:text.rfind("\n") + 1]
            if repair:
                self._rewrite(text)
        if not text.strip():
            return []
        return self._parse(text)

    def _rewrite(self, keep):
        tmp = self.path + ".tmp"
        with open(tmp, "w", newline="") as f:
            f.write(keep)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def _parse(self, text):
        rows = list(csv.DictReader(text.splitlines()))
        header = next(csv.reader(text.splitlines()[:1]))
        missing = [c for c in BASE_COLUMNS + self.space.names if c not in header]
        if missing:
            raise SpaceError(f"{self.path} is not the results file of this search "
                             f"(no column {', '.join(missing)})")
        self.columns = header
        trials = []
        for k, r in enumerate(rows):
            try:
                info = {c: _read_number(r[c]) for c in header
                        if c not in BASE_COLUMNS + self.space.names + ["error"]}
                trials.append(Trial(index=int(r["index"]), params=self.space.check(
                    {n: r[n] for n in self.space.names}), cost=float(r["cost"]), status=r["status"],
                    seconds=float(r["seconds"]), draws=int(r["draws"]), info=info, error=r.get("error", "")))
            except (KeyError, ValueError, TypeError) as e:
                raise SpaceError(f"{self.path}, row {k + 2}: cannot read the trial ({e}); "
                                 f"fix or remove that row to resume") from None
            if trials[-1].index != k:
                raise SpaceError(f"{self.path}, row {k + 2}: trial {trials[-1].index} where trial {k} "
                                 f"was expected; the file is not one search's results")
        return trials


def _read_number(s):
    try:
        return float(s)
    except ValueError:
        return s


def _csv_line(cells):
    import io
    buf = io.StringIO()
    csv.writer(buf).writerow(cells)
    return buf.getvalue()


def _same_params(a, b):
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, float) or isinstance(y, float):
            if not math.isclose(float(x), float(y), rel_tol=1e-12, abs_tol=1e-300):
                return False
        elif x != y:
            return False
    return True


# -- the driver ----------------------------------------------------------------------------------
def search(objective, space, method="grid", trials=None, seed=0, *, jobs=1, results=None, resume=False,
           progress=None, info_columns=(), max_draws=MAX_DRAWS):
    """Run `trials` trials of `objective` over `space`; returns the trials in the
    order they ran (a SearchResult: a list of Trial with .params, .cost, ...,
    and .best).

    objective: callable(dict of hyperparameters) -> float cost (inf or NaN for a
        diverged trial) or Outcome. With jobs > 1 it must be picklable (a
        module-level function or an instance of a module-level class).
    space: a Space or its string, e.g. 'lr=log:1e-4:1,x=lin:-1:1' (space.py).
    method: "grid", "random" or "brs" (biased random search, thesis algorithm 1).
    trials: the number of trials; for grid, the grid is the largest even grid
        within it (grid.py).
    seed: every random draw of the search derives from it.
    jobs: worker processes (1: in this process).
    results / resume: the CSV of trials (see the module docstring).
    progress: callable(trial, trials_done, trials_total, best) after each trial.
    info_columns: names of the Outcome.info entries to record in the CSV.
    """
    space = Space.parse(space)
    if method not in METHODS:
        raise ValueError(f"unknown search method {method!r}: choose grid, random or brs")
    if trials is None or int(trials) != trials or trials < 1:
        raise ValueError(f"trials must be a positive integer, got {trials!r}")
    if int(jobs) != jobs or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    if not callable(objective):
        raise TypeError("objective must be a callable taking a dict of hyperparameters")
    trials, jobs, seed = int(trials), int(jobs), int(seed)
    proposer = _Proposer(space, method, trials, seed, jobs, max_draws)
    if method == "grid":
        trials = len(proposer.grid)
    done, rfile = {}, None
    if results is not None:
        rfile = ResultsFile(str(results), space, info_columns)
        done = _open_results(rfile, space, method, trials, seed, jobs, resume, proposer)

    def record(t):
        done[t.index] = t
        if progress is not None:
            progress(t, len(done), trials, SearchResult(done.values(), space, method, seed).best)

    if jobs == 1:
        for i in range(len(done), trials):
            params, draws = proposer.propose(i, done)
            out, secs = run_objective(objective, params)
            t = Trial(i, params, float(out.cost), out.status, secs, draws, dict(out.info), out.error)
            if rfile:
                rfile.append(t)
            record(t)
    else:
        from tinynet.tune.workers import run_parallel
        run_parallel(objective, proposer, trials, jobs, done, rfile, record)
    return SearchResult([done[i] for i in range(trials)], space, method, seed)


def _open_results(rfile, space, method, trials, seed, jobs, resume, proposer):
    settings = _settings(space, method, trials, seed, jobs)
    side = rfile.path + ".json"
    if not resume:
        if os.path.exists(rfile.path):
            raise FileExistsError(f"{rfile.path} already exists: resume the search (resume=True, --resume) "
                                  f"or choose another results file")
        atomic_json(side, settings)
        rfile.write_header()
        return {}
    if not os.path.exists(rfile.path):
        raise FileNotFoundError(f"no results file {rfile.path} to resume; start the search without resume")
    try:
        with open(side) as f:
            old = json.load(f)
    except (OSError, ValueError) as e:
        raise SpaceError(f"cannot read the search settings {side} ({e}): the results file cannot be "
                         f"checked against this search") from None
    differ = [k for k in settings if k != "trials" and old.get(k) != settings[k]]
    if method == "grid" and old.get("trials") != trials:
        differ.append("trials")
    if differ:
        was = ", ".join(f"{k}={old.get(k)!r} (now {settings[k]!r})" for k in differ)
        raise SpaceError(f"{rfile.path} holds another search: {was}")
    done = {}
    for t in rfile.read():
        if t.index >= trials:
            break
        expect, _ = proposer.propose(t.index, done)
        if not _same_params(t.params, expect):
            raise SpaceError(f"{rfile.path}, trial {t.index}: recorded {t.params} but this search "
                             f"draws {expect}; the file is not this search's results")
        done[t.index] = t
    return done
