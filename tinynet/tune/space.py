"""Search spaces: the domain D of thesis algorithm 1, written as the CLI's `--space`.

    'lr=log:1e-4:1,alpha=log:0.1:10,x=lin:-1:1,depth=int:1:4,act=choice:tanh|relu'

One axis per comma-separated entry, `name=kind:args`:
  lin:lo:hi      uniform on [lo, hi]
  log:lo:hi      log-uniform on [lo, hi] (0 < lo < hi)
  int:lo:hi      uniform on the integers lo..hi (inclusive)
  choice:a|b|c   one of the listed values (numbers are read as numbers)
A fourth field `:K` on lin / log / int sets that axis's number of grid points
(grid search); without it the grid spreads the trials evenly over the axes.

Each axis has coordinates u, where the search's geometry lives: u = x for lin
and int, u = log10 x for log, u = the index of the value for choice. Sampling
U(D) (algorithm 1, line 5) is uniform in u; the 1-nearest-neighbour model of
biased random search measures Euclidean distance in u (thesis 4.2: "log axes
in log"), with a choice axis contributing 0 (same value) or 1 (different).
"""
import math
from dataclasses import dataclass

import numpy as np

KINDS = ("lin", "log", "int", "choice")


class SpaceError(ValueError):
    """A malformed --space string or an out-of-range value."""


def _number(s, what):
    try:
        return float(s)
    except ValueError:
        raise SpaceError(f"{what}: {s!r} is not a number") from None


def _value(s):
    """A choice value: int, then float, else the string itself."""
    for cast in (int, float):
        try:
            return cast(s)
        except ValueError:
            pass
    return s


@dataclass(frozen=True)
class Axis:
    name: str
    kind: str
    lo: float = 0.0
    hi: float = 0.0
    choices: tuple = ()
    grid_points: int | None = None

    # -- coordinates u ------------------------------------------------------------------------
    @property
    def u_range(self):
        if self.kind == "log":
            return math.log10(self.lo), math.log10(self.hi)
        if self.kind == "choice":
            return 0.0, float(len(self.choices) - 1)
        return float(self.lo), float(self.hi)

    def to_u(self, x):
        if self.kind == "log":
            return math.log10(x)
        if self.kind == "choice":
            return float(self.choices.index(x))
        return float(x)

    def from_u(self, u):
        if self.kind == "log":
            return float(10.0 ** u)
        if self.kind == "int":
            return int(round(u))
        if self.kind == "choice":
            return self.choices[int(round(u))]
        return float(u)

    # -- the domain ---------------------------------------------------------------------------
    def sample(self, rng):
        if self.kind == "int":
            return int(rng.integers(int(self.lo), int(self.hi) + 1))
        if self.kind == "choice":
            return self.choices[int(rng.integers(len(self.choices)))]
        a, b = self.u_range
        return self.from_u(rng.uniform(a, b))

    def grid(self, k):
        """k values: cell centres in u for lin / log (the thesis's figure 4.1 puts
        none on the boundary), every value for choice, distinct integers for int."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int":
            n = int(self.hi) - int(self.lo) + 1
            if k >= n:
                return list(range(int(self.lo), int(self.hi) + 1))
            return sorted({int(round(v)) for v in np.linspace(self.lo, self.hi, k)})
        a, b = self.u_range
        return [self.from_u(a + (b - a) * (j + 0.5) / k) for j in range(k)]

    @property
    def n_values(self):
        """How many distinct values the axis has (inf for continuous axes)."""
        if self.kind == "choice":
            return len(self.choices)
        if self.kind == "int":
            return int(self.hi) - int(self.lo) + 1
        return math.inf

    def check(self, x):
        """x as this axis's value type, or SpaceError if it is outside the domain."""
        if self.kind == "choice":
            v = _value(x) if isinstance(x, str) else x
            if v not in self.choices:
                raise SpaceError(f"{self.name}={x!r} is not one of {'|'.join(map(str, self.choices))}")
            return v
        v = float(x)
        a, b = self.u_range
        tol = 1e-9 * max(1.0, b - a)     # values written to a results file and read back
        if not (v > 0 or self.kind != "log") or not a - tol <= self.to_u(v) <= b + tol:
            raise SpaceError(f"{self.name}={x!r} is outside [{self.lo:g}, {self.hi:g}]")
        return int(round(v)) if self.kind == "int" else v

    def spec(self):
        if self.kind == "choice":
            body = "choice:" + "|".join(map(str, self.choices))
        else:
            body = f"{self.kind}:{self.lo:g}:{self.hi:g}"
            if self.grid_points is not None:
                body += f":{self.grid_points}"
        return f"{self.name}={body}"


class Space:
    """The ordered axes of a search; `Space.parse('lr=log:1e-4:1,...')`."""

    def __init__(self, axes):
        names = [a.name for a in axes]
        if not axes:
            raise SpaceError("the search space has no axis")
        if len(set(names)) != len(names):
            raise SpaceError(f"an axis is given twice in the search space: {', '.join(names)}")
        self.axes = tuple(axes)

    @classmethod
    def parse(cls, text):
        if isinstance(text, Space):
            return text
        if not isinstance(text, str) or not text.strip():
            raise SpaceError("the search space is empty: give e.g. 'lr=log:1e-4:1,x=lin:-1:1'")
        axes = []
        for entry in text.split(","):
            entry = entry.strip()
            name, eq, body = entry.partition("=")
            name = name.strip()
            if not eq or not name or not body:
                raise SpaceError(f"search space entry {entry!r}: write name=kind:args, e.g. lr=log:1e-4:1")
            if not name.replace("_", "").replace("-", "").isalnum():
                raise SpaceError(f"search space entry {entry!r}: {name!r} is not a parameter name")
            kind, _, args = body.partition(":")
            axes.append(_axis(name.replace("-", "_"), kind.strip(), args, entry))
        return cls(axes)

    @property
    def names(self):
        return [a.name for a in self.axes]

    def __len__(self):
        return len(self.axes)

    def spec(self):
        return ",".join(a.spec() for a in self.axes)

    def __repr__(self):
        return f"Space({self.spec()!r})"

    def sample(self, rng):
        return {a.name: a.sample(rng) for a in self.axes}

    def to_u(self, params):
        return np.array([a.to_u(params[a.name]) for a in self.axes], dtype=float)

    def check(self, params):
        """params with every axis present and inside its domain (values typed)."""
        missing = [a.name for a in self.axes if a.name not in params]
        if missing:
            raise SpaceError(f"missing value for {', '.join(missing)}")
        return {a.name: a.check(params[a.name]) for a in self.axes}

    def distances(self, u, U):
        """Euclidean distances in u from one point u (d,) to each row of U (n, d);
        a choice axis counts 0 for the same value and 1 for a different one."""
        diff = np.abs(U - u[None, :])
        for j, a in enumerate(self.axes):
            if a.kind == "choice":
                diff[:, j] = (diff[:, j] > 0.5).astype(float)
        return np.sqrt((diff ** 2).sum(axis=1))


def _axis(name, kind, args, entry):
    if kind not in KINDS:
        raise SpaceError(f"search space entry {entry!r}: unknown kind {kind!r} (choose {', '.join(KINDS)})")
    if kind == "choice":
        values = tuple(_value(v.strip()) for v in args.split("|") if v.strip())
        if not values:
            raise SpaceError(f"search space entry {entry!r}: choice needs values, e.g. choice:tanh|relu")
        if len(set(values)) != len(values):
            raise SpaceError(f"search space entry {entry!r}: a choice is listed twice")
        return Axis(name, kind, choices=values)
    parts = args.split(":")
    if len(parts) not in (2, 3):
        raise SpaceError(f"search space entry {entry!r}: write {kind}:LOW:HIGH (optionally :GRID_POINTS)")
    lo, hi = (_number(p, f"search space entry {entry!r}") for p in parts[:2])
    if not (math.isfinite(lo) and math.isfinite(hi)) or not lo < hi:
        raise SpaceError(f"search space entry {entry!r}: need finite LOW < HIGH, got {lo:g} and {hi:g}")
    if kind == "log" and lo <= 0:
        raise SpaceError(f"search space entry {entry!r}: a log axis needs LOW > 0, got {lo:g}")
    if kind == "int" and (lo != int(lo) or hi != int(hi)):
        raise SpaceError(f"search space entry {entry!r}: an int axis needs integer bounds")
    k = None
    if len(parts) == 3:
        kf = _number(parts[2], f"search space entry {entry!r}")
        if kf != int(kf) or kf < 1:
            raise SpaceError(f"search space entry {entry!r}: the grid point count must be an integer >= 1")
        k = int(kf)
    return Axis(name, kind, lo, hi, grid_points=k)
