"""Copies between host and device per optimizer step, for every optimizer of
tinynet.optim.OPTIMIZERS on device="cuda" (issue 18: no host round trip inside
a step). Counts cuda.to_device / copy_to_device from host arrays (up) and
copy_to_host (down) during steps 4, 5 and 6 of a tiny tanh MLP (7-5-3, squared
error, batch 6, float32, data already on the device), and prints one row per
optimizer: the counts per step and the shapes of the first copies.

    NUMBA_ENABLE_CUDASIM=1 python benchmarks/device_copies.py [NAME ...]   # simulator, any machine
    python benchmarks/device_copies.py                                     # on a GPU

A step that copies only its loss back reads (0, 1). Writes
benchmarks/results/device_copies.md unless names are given.
"""
import sys
from pathlib import Path

import numba
import numpy as np
from numba import cuda

from tinynet.layers import Linear, Tanh
from tinynet.losses import MSELoss
from tinynet.network import Sequential
from tinynet.optim import OPTIMIZERS

LR = {"sgd": 0.1, "ubp": 0.1}              # the optimizers without a default lr


class Copies:
    """Counts (and the shapes of) host<->device copies while installed."""

    def __init__(self, device_array_type):
        self.up, self.down, self.shapes = 0, 0, []
        self._orig = (cuda.to_device, device_array_type.copy_to_host, device_array_type.copy_to_device)
        self._type = device_array_type
        to_device, copy_to_host, copy_to_device = self._orig

        def up(a, *r, **k):
            self.up += 1
            self.shapes.append(("up", np.shape(a)))
            return to_device(a, *r, **k)

        def down(arr, *r, **k):
            self.down += 1
            self.shapes.append(("down", tuple(arr.shape)))
            return copy_to_host(arr, *r, **k)

        def up_into(arr, src, *r, **k):
            if not getattr(src, "__cuda_ndarray__", False):     # device->device is no transfer
                self.up += 1
                self.shapes.append(("up", np.shape(src)))
            return copy_to_device(arr, src, *r, **k)

        cuda.to_device, device_array_type.copy_to_host, device_array_type.copy_to_device = up, down, up_into

    def remove(self):
        cuda.to_device, self._type.copy_to_host, self._type.copy_to_device = self._orig


def survey(name, warmup=3, steps=3):
    rng = np.random.default_rng(1)
    net = Sequential([Linear(7, 5), Tanh(), Linear(5, 3)], MSELoss(), dtype=np.float32, seed=4, device="cuda")
    opt = OPTIMIZERS[name](net, LR[name]) if name in LR else OPTIMIZERS[name](net)
    X = net.bk.asarray(rng.standard_normal((6, 7)).astype(np.float32))
    Y = net.bk.asarray(rng.standard_normal((6, 3)).astype(np.float32))
    for _ in range(warmup):
        opt.step(X, Y)
    counts, shapes = [], []
    for _ in range(steps):
        c = Copies(type(X))
        try:
            opt.step(X, Y)
        finally:
            c.remove()
        counts.append((c.up, c.down))
        shapes = c.shapes
    return counts, shapes


def main(names):
    rows = ["| optimizer | (up, down) per step, steps 4-6 | first copies of step 6 |", "|---|---|---|"]
    for name in names:
        try:
            counts, shapes = survey(name)
            first = ", ".join(f"{d} {s}" for d, s in shapes[:6]) + (" ..." if len(shapes) > 6 else "")
            rows.append(f"| {name} | {', '.join(map(str, counts))} | {first} |")
        except Exception as e:                       # a row per optimizer, whatever happens to one
            rows.append(f"| {name} | failed: {type(e).__name__}: {str(e)[:120]} | |")
        print(rows[-1], flush=True)
    return rows


if __name__ == "__main__":
    names = sys.argv[1:] or sorted(OPTIMIZERS)
    rows = main(names)
    if not sys.argv[1:]:
        where = "CUDA simulator" if numba.config.ENABLE_CUDASIM else "GPU"
        out = Path(__file__).resolve().parent / "results" / "device_copies.md"
        out.write_text(f"# Host<->device copies per step ({where}; `python benchmarks/device_copies.py`)\n\n"
                       + "\n".join(rows) + "\n")
        print(f"wrote {out}")
