"""Grid search (thesis 2.3): every combination of fixed values per axis, linear
or logarithmic spacing as the axis says (Space: lin / log / int / choice)."""
import itertools
import math

from tinynet.tune.space import SpaceError


def grid_counts(space, trials):
    """Points per axis: an axis's own `:K`, every value of a choice axis, and an
    even share of the trials for the others (floor of the n-th root, at most the
    axis's distinct values)."""
    counts = [a.grid_points if a.grid_points is not None else
              (a.n_values if a.kind == "choice" else None) for a in space.axes]
    fixed = math.prod(c for c in counts if c is not None)
    free = [j for j, c in enumerate(counts) if c is None]
    if free:
        k = max(1, int(math.floor((trials / fixed) ** (1.0 / len(free)) + 1e-9)))
        for j in free:
            counts[j] = int(min(k, space.axes[j].n_values))
    return counts


def grid_points(space, trials):
    """The grid, first axis slowest. Its size is at most `trials` (a grid cut
    short is no grid: too many fixed points is an error)."""
    counts = grid_counts(space, trials)
    values = [a.grid(k) for a, k in zip(space.axes, counts)]
    size = math.prod(len(v) for v in values)
    if size > trials:
        shape = " x ".join(str(len(v)) for v in values)
        raise SpaceError(f"the grid has {shape} = {size} points but only {trials} trials were asked: "
                         f"raise the trials or lower the axes' grid point counts")
    return [dict(zip(space.names, combo)) for combo in itertools.product(*values)]
