"""Kernel pairs: a CPU `@njit` and a GPU `@cuda.jit` function with one meaning,
side by side in each module. Layers never call these directly: they go through
a backend (`tinynet.backend`), which picks the device's twin."""
