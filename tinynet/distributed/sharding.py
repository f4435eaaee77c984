"""Shards of a global minibatch, and random draws that do not depend on P.

Rank r of P takes the rows [r b, (r+1) b) of each global batch of B = P b rows
(B must divide by P). Monte-Carlo curvature (KFAC's sampled GN rows and Fisher
targets) draws random numbers per example; `RowShardedGenerator` makes a
rank's draws the rows of its shard in the draws one process would make for
the whole batch, so that P ranks sample exactly what one process samples.
"""
import numpy as np


def shard_bounds(rank, size, n):
    """(lo, hi) of rank's rows in a global batch of n rows."""
    if n % size:
        raise ValueError(f"the global batch of {n} rows does not divide over {size} ranks: "
                         f"choose a --batch-size that is a multiple of {size}")
    b = n // size
    return rank * b, (rank + 1) * b


class RowShardedGenerator:
    """Wraps a numpy Generator (shared state on every rank): a draw whose first
    dimension is the local batch `b` is made for the global batch instead and
    sliced to this rank's rows; the generator advances as in one process."""

    def __init__(self, rng, rank, size):
        self.rng, self.rank, self.size = rng, rank, size

    def _draw(self, fn, shape, **kw):
        shape = tuple(np.atleast_1d(shape))
        b = shape[0]
        full = fn((b * self.size,) + shape[1:], **kw)
        return full[self.rank * b:(self.rank + 1) * b]

    def standard_normal(self, size, **kw):
        return self._draw(self.rng.standard_normal, size, **kw)

    def random(self, size, **kw):
        return self._draw(self.rng.random, size, **kw)

    @property
    def bit_generator(self):
        return self.rng.bit_generator


def sharded(rng, comm):
    """rng itself in one process, else its RowShardedGenerator view."""
    return rng if comm.size == 1 else RowShardedGenerator(rng, comm.rank, comm.size)
