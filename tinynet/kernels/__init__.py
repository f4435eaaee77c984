"""Kernel pairs: a CPU `@njit` and a GPU `@cuda.jit` function with one meaning,
side by side in each module. Layers never call these directly: they go through
a backend (`tinynet.backend`), which picks the device's twin.

CPU kernels whose loops divide (activations, losses, optim, second_order,
batchnorm2d, pool) are compiled with `error_model="numpy"`: IEEE division
(x / 0 is inf or nan, caught by the optimizers' finiteness guards) instead of
Numba's default Python model, whose per-element ZeroDivisionError branch keeps
LLVM from vectorizing the loop (the float32 sigmoid ran 3x slower with it).
The arithmetic is the same, so the results are bit-identical to the default
model's."""
