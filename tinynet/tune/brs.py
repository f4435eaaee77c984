"""Biased random search, thesis algorithm 1 (section 4.2).

    repeat:                                      (one trial)
        a ~ U(D)                                 line 5: a random point of the space
        c_est <- M(H, a)                         line 6: 1-nearest-neighbour cost model
        p <- (c_max - c_est) / (c_max - c_min)   line 7: c_max, c_min over the history H
        accept a with probability p              lines 8-11, else draw again
    run(a); H <- H + (a, result)                 lines 13-14

M is a 1-nearest-neighbour regressor (Altman 1992): the cost of the closest
point of the history, distances in the space's coordinates (Space.distances:
log axes in log10). A trial that diverged or failed (cost inf / NaN) counts as
the worst finite cost of the history, so p = 0 next to it. With an empty
history, or c_max = c_min, every draw is accepted (p = 1), as in random search.

Trial i draws from the stream random search's trial i uses (random_search.
trial_rng(seed, i)): with the same seed, a biased and a plain random search are
paired (common random numbers). Where BRS accepts its first draw it runs the
very point random search runs, so the two differ only where BRS rejects.
"""
import math

import numpy as np

from tinynet.tune.random_search import trial_rng

MAX_DRAWS = 100_000   # a draw is accepted with p > 0 somewhere; this only bounds pathological cases


def model_costs(costs):
    """The history's costs as the model sees them: non-finite -> the worst finite one."""
    c = np.asarray(costs, dtype=float)
    finite = np.isfinite(c)
    if not finite.any():
        return None
    worst = c[finite].max()
    return np.where(finite, c, worst)


def estimate(space, U, c, params):
    """M(H, a): the cost of a's nearest neighbour in the history (first one on a tie)."""
    d = space.distances(space.to_u(params), U)
    return float(c[int(np.argmin(d))])


def acceptance(c_est, c_min, c_max):
    """p = (c_max - c_est) / (c_max - c_min), algorithm 1 line 7; 1 when c_max = c_min."""
    if not c_max > c_min:
        return 1.0
    return min(1.0, max(0.0, (c_max - c_est) / (c_max - c_min)))


def brs_point(space, history, seed, index, max_draws=MAX_DRAWS):
    """The point of trial `index` given `history` (list of (params, cost)): draws
    from U(D) until one is accepted. Returns (params, number of draws). After
    max_draws rejections the draw with the lowest estimate is taken (never
    reached with a finite p > 0 region of fair size; said in the count)."""
    rng = trial_rng(seed, index)
    c = model_costs([cost for _, cost in history]) if history else None
    if c is None:
        return space.sample(rng), 1
    U = np.array([space.to_u(p) for p, _ in history])
    c_min, c_max = float(c.min()), float(c.max())
    best = (math.inf, None)
    for draw in range(1, max_draws + 1):
        a = space.sample(rng)
        c_est = estimate(space, U, c, a)
        if rng.uniform() < acceptance(c_est, c_min, c_max):
            return a, draw
        if c_est < best[0]:
            best = (c_est, a)
    return best[1], max_draws
