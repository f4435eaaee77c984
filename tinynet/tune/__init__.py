"""Hyperparameter search (thesis 2.3 and 4.2): grid, random and biased random
search (algorithm 1) over any objective.

    from tinynet import tune
    trials = tune.search(lambda p: (p["x"] - 0.3) ** 2, "x=lin:-1:1", method="brs", trials=50, seed=0)
    trials.best.params, trials.best.cost

space.py    the search space string and its coordinates
grid.py, random_search.py, brs.py   the three methods
search.py   the driver: history, results CSV, resume
workers.py  trials in worker processes
objective.py  a tinynet training run as an objective (what `tinynet tune` runs)
"""
from tinynet.tune.brs import acceptance, brs_point, estimate
from tinynet.tune.grid import grid_points
from tinynet.tune.search import METHODS, Outcome, SearchResult, Trial, search
from tinynet.tune.space import Axis, Space, SpaceError

__all__ = ["search", "Space", "Axis", "SpaceError", "Trial", "Outcome", "SearchResult", "METHODS",
           "acceptance", "estimate", "brs_point", "grid_points"]
