"""Copies between host and device per optimizer step, for every optimizer of
tinynet.optim.OPTIMIZERS on device="cuda" (issue 18: no host round trip inside
a step). Counts cuda.to_device / copy_to_device from host arrays (up) and
copy_to_host (down) during steps 4, 5 and 6 of a tiny tanh MLP (7-5-3, squared
error, batch 6, float32, data already on the device), and prints one row per
optimizer: the counts per step and the shapes of the first copies.

    NUMBA_ENABLE_CUDASIM=1 python benchmarks/device_copies.py [NAME ...]   # simulator, any machine
    python benchmarks/device_copies.py                                     # on a GPU

A step that copies only its loss back reads (0, 1). Also counted, per step:
the device arrays made (cuda.device_array / cuda.to_device: on a GPU each is a
cuMemAlloc under Numba's own allocator, a cache hit under tinynet.cuda_pool)
and the kernels launched through the backend; and the same two counts for
SGD, UBP and KFAC on a net of the MNIST autoencoder's depth (8 Linear
stages, 7 logistic; widths 6-5-4-3-2-3-4-5-6: the counts depend on depth, not
width). Writes benchmarks/results/device_copies.md unless names are given.
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


class Made:
    """Counts the device arrays made and the kernels launched while installed."""

    def __init__(self, bk):
        self.arrays, self.launches = 0, 0
        self._bk, self._orig = bk, (cuda.device_array, cuda.to_device, type(bk)._run)
        device_array, to_device, run = self._orig

        def made(*a, **k):
            self.arrays += 1
            return device_array(*a, **k)

        def made_up(*a, **k):
            self.arrays += 1
            return to_device(*a, **k)

        def launched(bk_, name, *a, **k):
            if not name.startswith("memcpy."):
                self.launches += 1
            return run(bk_, name, *a, **k)
        cuda.device_array, cuda.to_device, type(bk)._run = made, made_up, launched

    def remove(self):
        cuda.device_array, cuda.to_device, type(self._bk)._run = self._orig


def survey(name, warmup=3, steps=3, net=None):
    rng = np.random.default_rng(1)
    if net is None:
        net = Sequential([Linear(7, 5), Tanh(), Linear(5, 3)], MSELoss(), dtype=np.float32, seed=4, device="cuda")
    opt = OPTIMIZERS[name](net, LR[name]) if name in LR else OPTIMIZERS[name](net)
    n_in, n_out = net.layers[0].n_in, net.layers[-1].n_out
    X = net.bk.asarray(rng.standard_normal((6, n_in)).astype(np.float32))
    Y = net.bk.asarray(rng.standard_normal((6, n_out)).astype(np.float32))
    for _ in range(warmup):
        opt.step(X, Y)
    counts, shapes, made = [], [], []
    for _ in range(steps):
        c = Copies(type(X))
        m = Made(net.bk)
        try:
            opt.step(X, Y)
        finally:
            m.remove()
            c.remove()
        counts.append((c.up, c.down))
        made.append((m.arrays, m.launches))
        shapes = c.shapes
    return counts, shapes, made


def autoencoder_depth():
    from tinynet.layers import Sigmoid
    sizes = [6, 5, 4, 3, 2, 3, 4, 5, 6]
    layers = []
    for i in range(8):
        layers.append(Linear(sizes[i], sizes[i + 1]))
        if i < 7:
            layers.append(Sigmoid())
    return Sequential(layers, MSELoss(), dtype=np.float32, seed=0, device="cuda")


def main(names, deep=("sgd", "ubp", "kfac")):
    rows = ["| optimizer | (up, down) per step, steps 4-6 | device arrays made, kernels launched per step "
            "| first copies of step 6 |", "|---|---|---|---|"]
    for name in names:
        try:
            counts, shapes, made = survey(name)
            first = ", ".join(f"{d} {s}" for d, s in shapes[:6]) + (" ..." if len(shapes) > 6 else "")
            rows.append(f"| {name} | {', '.join(map(str, counts))} | {', '.join(map(str, made))} | {first} |")
        except Exception as e:                       # a row per optimizer, whatever happens to one
            rows.append(f"| {name} | failed: {type(e).__name__}: {str(e)[:120]} | | |")
        print(rows[-1], flush=True)
    rows += ["", "The autoencoder's depth (8 Linear stages, widths 6-5-4-3-2-3-4-5-6, batch 6):", "",
             "| optimizer | (up, down) per step | device arrays made, kernels launched per step |", "|---|---|---|"]
    for name in deep:
        if name not in names:
            continue
        try:
            counts, _, made = survey(name, net=autoencoder_depth())
            rows.append(f"| {name} | {', '.join(map(str, counts))} | {', '.join(map(str, made))} |")
        except Exception as e:
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
