"""Random search (thesis 2.3, Bergstra and Bengio 2012): each trial an
independent draw from U(D), uniform in each axis's coordinates (log-uniform on
a log axis)."""
import numpy as np


def trial_rng(seed, index):
    """The random stream of trial `index`: one per trial, so that a resumed
    search draws exactly what the uninterrupted one drew."""
    return np.random.default_rng([int(seed), int(index)])


def random_point(space, seed, index):
    return space.sample(trial_rng(seed, index))
