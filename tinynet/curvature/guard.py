"""Size guard for dense curvature: refuse a network whose matrices would not fit.

A dense curvature matrix of a network with P parameters is P x P float64
(8 P^2 bytes); the assembly holds a few of them (the matrix, a column block of
work arrays, a symmetrized copy), counted as `DENSE_COPIES`. The limit is
`max_bytes` when given, else the environment variable TINYNET_DENSE_MAX_BYTES,
else `DEFAULT_MAX_BYTES` (2 GiB).
"""
import os

DEFAULT_MAX_BYTES = 2 * 2**30
DENSE_COPIES = 2


class DenseTooLarge(ValueError):
    """Raised by the dense assembly for a network above the size limit."""


def max_dense_bytes(max_bytes=None):
    """The byte limit in force (argument, then TINYNET_DENSE_MAX_BYTES, then 2 GiB)."""
    if max_bytes is not None:
        return int(max_bytes)
    env = os.environ.get("TINYNET_DENSE_MAX_BYTES")
    if env:
        try:
            return int(float(env))
        except ValueError:
            raise ValueError(f"TINYNET_DENSE_MAX_BYTES must be a number of bytes, got {env!r}") from None
    return DEFAULT_MAX_BYTES


def _fmt(nbytes):
    for unit, k in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= k:
            return f"{nbytes / k:.1f} {unit}"
    return f"{nbytes} B"


def check_dense(net, max_bytes=None, nbytes=None, what="dense curvature"):
    """Raise DenseTooLarge unless `what` for `net` fits under the limit.

    nbytes: the bytes the caller will allocate; default DENSE_COPIES P x P
    float64 matrices. Returns the bytes needed. Optimizers call it once at
    construction to refuse a dense method early.
    """
    P = int(net.n_params)
    need = DENSE_COPIES * 8 * P * P if nbytes is None else int(nbytes)
    limit = max_dense_bytes(max_bytes)
    if need > limit:
        raise DenseTooLarge(
            f"{what} for a network of {P:,} parameters needs {_fmt(need)} ({need:,} bytes), "
            f"above the limit of {_fmt(limit)}. Use the matrix-free products "
            f"tinynet.curvature.hvp / gvp / fvp (they never form the matrix), or raise the "
            f"limit with max_bytes=... or TINYNET_DENSE_MAX_BYTES.")
    return need
