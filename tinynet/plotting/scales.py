"""Colour scales of matrix heatmaps (`tinynet inspect --scale`).

A curvature matrix often spans many decades: a few large entries (the
last layer's block of a Hessian, the bias rows of a KFAC factor) set a linear
scale, and every other block looks blank. Three scales, all symmetric about 0
(diverging colour map, white = 0):

  linear  colour proportional to the entry, saturating at +-vmax
  symlog  linear within +-linthresh, logarithmic beyond it (matplotlib's
          SymLogNorm); linthresh from the data: the QUANTILE of the nonzero
          |entries|, at least 10^-DECADES x the largest one
  block   each (row block, column block) tile divided by its own largest
          |entry|, so every block fills the colour range; the divisors are
          written on the tiles (and returned)
"""
import numpy as np

SCALES = ("symlog", "linear", "block")
QUANTILE = 0.05
DECADES = 6


def symlog_threshold(A, quantile=QUANTILE, decades=DECADES):
    """linthresh of a symlog scale for A: the `quantile` of its nonzero finite
    |entries|, at least max |entry| x 10^-decades (1.0 for an all-zero A)."""
    a = np.abs(np.asarray(A, dtype=np.float64))
    a = a[np.isfinite(a) & (a > 0)]
    if not a.size:
        return 1.0
    return float(max(np.quantile(a, quantile), a.max() * 10.0 ** -decades))


def block_maxima(A, rows, cols):
    """(len(rows), len(cols)) array of max |entry| of each block (0 for an empty one)."""
    ro, co = np.cumsum([0] + list(rows)), np.cumsum([0] + list(cols))
    out = np.zeros((len(rows), len(cols)))
    for i in range(len(rows)):
        for j in range(len(cols)):
            tile = A[ro[i]:ro[i + 1], co[j]:co[j + 1]]
            out[i, j] = float(np.nanmax(np.abs(tile))) if tile.size else 0.0
    return out


def block_scaled(A, rows, cols):
    """(A with each block divided by its largest |entry| (zero blocks stay zero),
    the block maxima of block_maxima)."""
    A = np.asarray(A, dtype=np.float64)
    m = block_maxima(A, rows, cols)
    ro, co = np.cumsum([0] + list(rows)), np.cumsum([0] + list(cols))
    out = np.zeros_like(A)
    for i in range(len(rows)):
        for j in range(len(cols)):
            if m[i, j] > 0:
                out[ro[i]:ro[i + 1], co[j]:co[j + 1]] = A[ro[i]:ro[i + 1], co[j]:co[j + 1]] / m[i, j]
    return out, m


def norm(A, scale, vmax=None):
    """(matplotlib Normalize, a few words for the title) of heatmap data A
    under `scale` ("linear" or "symlog"; "block" data is already in [-1, 1]).
    vmax: the colour limit (default max |A|)."""
    from matplotlib.colors import Normalize, SymLogNorm
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    finite = np.abs(A[np.isfinite(A)])
    vmax = float(vmax if vmax is not None else (finite.max() if finite.size else 0.0)) or 1.0
    if scale == "block":
        return Normalize(-1.0, 1.0), "colours: each block / its max |entry| (written on the block)"
    if scale == "linear":
        return Normalize(-vmax, vmax), "colours: linear"
    t = min(symlog_threshold(A), vmax)
    return (SymLogNorm(linthresh=t, vmin=-vmax, vmax=vmax, base=10),
            f"colours: symlog, linear within +-{t:.2g}")


def symlog_ticks(nrm, most=4):
    """Colour-bar ticks of a SymLogNorm: 0 and +-10^k from linthresh to vmax, at most `most` per side."""
    t, vmax = nrm.linthresh, nrm.vmax
    lo, hi = int(np.ceil(np.log10(t))), int(np.floor(np.log10(vmax)))
    ks = list(range(lo, hi + 1))
    if len(ks) > most:
        step = -(-len(ks) // most)
        ks = ks[::-1][::step][::-1]
    pos = [10.0 ** k for k in ks]
    return [-v for v in pos[::-1]] + [0.0] + pos
