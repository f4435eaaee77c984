"""A caching allocator for device memory: a Numba EMM plugin (issue 18).

Why. Numba's own allocator calls `cuMemAlloc` for every device array and
queues its frees, running them with `cuMemFree` once more than
`CUDA_DEALLOCS_COUNT` (10) are pending. `cuMemFree` synchronizes the device,
so a step that makes 31 device arrays (SGD on the autoencoder; UBP makes 150,
KFAC 55; `benchmarks/device_copies.py`) pays 31 driver
allocations and about 3 device synchronizations, the host waiting each time
for the kernels it had queued. A training step makes the same shapes every
step, so a cache of freed blocks keyed by size serves every step after the
first from memory it already holds: no driver call, no synchronization.
PyTorch's and CuPy's caching allocators work this way.

Why it is safe. tinynet queues every kernel and every copy on the legacy
default stream, which runs work in the order it was queued. A block given back
while a kernel queued earlier still reads it can only be written by work
queued later, so reuse needs no event and no wait. (A program that runs
tinynet's arrays on other streams should switch the pool off: TINYNET_CUDA_POOL=0.)

Sizes are rounded up to 512 bytes, `cuMemAlloc`'s own alignment, so that
arrays a few bytes apart share blocks. A freed block waits in the cache until
a request of its size comes; when `cuMemAlloc` runs out of memory, every
cached block is freed and the allocation is tried again. `empty_cache()`
frees them on demand.

Installing. `install()` (called by the CUDA backend when it is built) makes
this the memory manager of the CUDA contexts created afterwards, unless the
simulator runs, TINYNET_CUDA_POOL=0 is set, the user chose another manager
(NUMBA_CUDA_MEMORY_MANAGER), or a context already exists (Numba fixes its
manager when the first context is made: import tinynet.cuda_backend, or call
install(), before touching the GPU). `NUMBA_CUDA_MEMORY_MANAGER=tinynet.cuda_pool`
installs it too. `CachingMemoryManager.caching = False` makes it allocate and
free as Numba's own manager does, so that both can be timed in one process
(`benchmarks/gpu_step.py`, section pool).
"""
import os
import weakref
from collections import defaultdict

import numba

BLOCK = 512        # bytes: the granule sizes are rounded up to

SIMULATOR = bool(numba.config.ENABLE_CUDASIM)


def block_bytes(size):
    """The size of the block that serves a request of `size` bytes."""
    return -(-int(size) // BLOCK) * BLOCK


def enabled_by_env():
    return os.environ.get("TINYNET_CUDA_POOL", "1").strip().lower() not in ("0", "off", "false", "no")


def install():
    """Make CachingMemoryManager Numba's memory manager if that is still possible
    and wanted (see the module docstring). Returns True when it is (or already
    was) the manager contexts get, False otherwise."""
    if SIMULATOR or not enabled_by_env():
        return False
    from numba.cuda.core import config
    from numba.cuda.cudadrv import driver
    current = driver._memory_manager
    if current is CachingMemoryManager:
        return True
    if current is not None or config.CUDA_MEMORY_MANAGER != "default":
        return False              # a context exists already, or the user chose a manager
    driver.set_memory_manager(CachingMemoryManager)
    return True


def current_pool():
    """The CachingMemoryManager of the current CUDA context, or None (another
    manager, the simulator, or no GPU)."""
    if SIMULATOR:
        return None
    from numba import cuda
    mm = getattr(cuda.current_context(), "memory_manager", None)
    return mm if isinstance(mm, CachingMemoryManager) else None


if not SIMULATOR:
    from numba.cuda.cudadrv.driver import (AutoFreePointer, CudaAPIError, GetIpcHandleMixin,
                                           HostOnlyCUDAMemoryManager, MemoryInfo, _SizeNotSet, binding,
                                           driver as _driver)

    def _cu_alloc(nbytes):
        return _driver.cuMemAlloc(nbytes)

    def _cu_free(ptr):
        _driver.cuMemFree(ptr)

    def _cu_mem_info():
        return _driver.cuMemGetInfo()

    class CachingMemoryManager(GetIpcHandleMixin, HostOnlyCUDAMemoryManager):
        """Device blocks cached by size for reuse (module docstring); pinned and
        mapped host memory are left to Numba's HostOnlyCUDAMemoryManager.

        Counters: `hits` (requests served from the cache), `misses` (requests
        that called cuMemAlloc), `held_bytes` (allocated from the driver and not
        yet freed: in use or cached), `cached_bytes` (the free part of that),
        `peak_held_bytes`, `released` (blocks given back to the driver)."""

        caching = True       # class-wide switch: False allocates and frees like Numba's own manager

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._free = defaultdict(list)      # block bytes -> device pointers free for reuse
            self._generation = 0                # bumped by reset(): older blocks died with the context
            self.hits = self.misses = self.released = 0
            self.held_bytes = self.peak_held_bytes = 0

        @property
        def cached_bytes(self):
            return sum(nbytes * len(ptrs) for nbytes, ptrs in self._free.items())

        @property
        def interface_version(self):
            return 1

        def initialize(self):
            # what Numba's manager does: the pending host deallocations need the capacity
            if self.deallocations.memory_capacity == _SizeNotSet:
                self.deallocations.memory_capacity = self.get_memory_info().total

        def get_memory_info(self):
            free, total = _cu_mem_info()
            return MemoryInfo(free=free, total=total)

        def stats(self):
            return dict(hits=self.hits, misses=self.misses, released=self.released,
                        held_bytes=self.held_bytes, cached_bytes=self.cached_bytes,
                        peak_held_bytes=self.peak_held_bytes,
                        cached_blocks=sum(len(v) for v in self._free.values()))

        # -- allocation ----------------------------------------------------------------
        def _fresh(self, nbytes):
            try:
                ptr = _cu_alloc(nbytes)
            except CudaAPIError as e:
                if e.code != binding.CUresult.CUDA_ERROR_OUT_OF_MEMORY:
                    raise
                self.empty_cache()
                self.deallocations.clear()
                ptr = _cu_alloc(nbytes)
            self.misses += 1
            self.held_bytes += nbytes
            self.peak_held_bytes = max(self.peak_held_bytes, self.held_bytes)
            return ptr

        def memalloc(self, size):
            caching = type(self).caching
            nbytes = block_bytes(size) if caching else int(size)
            free = self._free.get(nbytes) if caching else None
            if free:
                ptr = free.pop()
                self.hits += 1
            else:
                ptr = self._fresh(nbytes)
            key = int(ptr)
            mem = AutoFreePointer(weakref.proxy(self.context), ptr, size,
                                  finalizer=_give_back(weakref.ref(self), ptr, key, nbytes, self._generation,
                                                       caching))
            self.allocations[key] = mem
            return mem.own()

        def _take_back(self, ptr, key, nbytes, generation, caching):
            """A block's last reference is gone (its finalizer)."""
            self.allocations.pop(key, None)
            if generation != self._generation:
                return                          # freed with its context by reset()
            if caching and type(self).caching:
                self._free[nbytes].append(ptr)
            else:                               # Numba's way: queued, freed 10 at a time
                self.held_bytes -= nbytes
                self.released += 1
                self.deallocations.add_item(_cu_free, ptr, nbytes)

        def empty_cache(self):
            """Give every cached (free) block back to the driver."""
            for nbytes, ptrs in self._free.items():
                while ptrs:
                    _cu_free(ptrs.pop())
                    self.held_bytes -= nbytes
                    self.released += 1
            self._free.clear()

        def reset(self):
            """The context is being reset: free the cached blocks; blocks still in
            use are freed with the context and forgotten here."""
            self.empty_cache()
            self._generation += 1
            self.held_bytes = 0
            super().reset()

    def _give_back(pool_ref, ptr, key, nbytes, generation, caching):
        def finalize():
            pool = pool_ref()
            if pool is not None:
                pool._take_back(ptr, key, nbytes, generation, caching)
        return finalize

    _numba_memory_manager = CachingMemoryManager      # for NUMBA_CUDA_MEMORY_MANAGER=tinynet.cuda_pool
else:
    CachingMemoryManager = None
