"""tinynet.cuda_pool, the caching device allocator, against a fake CUDA driver:
the allocator's bookkeeping runs here with Numba's real pointer, ownership and
device-array classes; only cuMemAlloc / cuMemFree / cuMemGetInfo are fakes
(no GPU on CI: the simulator bypasses memory managers entirely). On a GPU,
benchmarks/gpu_step.py runs all CUDA tests with the pool installed and times
steps with it on and off."""
import gc
import logging
import sys

import numba
import numpy as np
import pytest

import tinynet.cuda_pool as cp

pytestmark = pytest.mark.skipif(numba.config.ENABLE_CUDASIM, reason="the simulator has no memory managers")

if not numba.config.ENABLE_CUDASIM:
    from numba.cuda.cudadrv import driver as nd
    from numba.cuda.cudadrv.devicearray import DeviceNDArray
    from numba.cuda.cudadrv.driver import CudaAPIError, binding


class FakeDriver:
    """Device addresses that are never reused by the 'driver' itself, so a
    reused address can only come from the pool; an optional capacity makes
    cuMemAlloc fail with CUDA_ERROR_OUT_OF_MEMORY like the real one."""

    def __init__(self, capacity=None):
        self.next, self.live, self.allocs, self.frees = 1 << 20, {}, [], []
        self.capacity = capacity

    def alloc(self, n):
        if self.capacity is not None and sum(self.live.values()) + n > self.capacity:
            raise CudaAPIError(binding.CUresult.CUDA_ERROR_OUT_OF_MEMORY, "out of memory")
        a = self.next
        self.next += n + 4096
        self.live[a] = n
        self.allocs.append(n)
        return binding.CUdeviceptr(a)

    def free(self, ptr):
        a = int(ptr)
        assert a in self.live, "double free or foreign pointer"
        del self.live[a]
        self.frees.append(a)


class Ctx:
    """Stands for numba's Context: the pointers keep a weak proxy to it."""


@pytest.fixture
def fake(monkeypatch):
    f = FakeDriver()
    monkeypatch.setattr(cp, "_cu_alloc", f.alloc)
    monkeypatch.setattr(cp, "_cu_free", f.free)
    monkeypatch.setattr(cp, "_cu_mem_info", lambda: (1 << 30, 1 << 31))
    monkeypatch.setattr(cp.CachingMemoryManager, "caching", True)
    if not hasattr(nd, "_logger"):          # made when the real driver initializes
        monkeypatch.setattr(nd, "_logger", logging.getLogger("numba.cuda.cudadrv.driver"), raising=False)
    return f


@pytest.fixture
def pool(fake):
    ctx = Ctx()
    mm = cp.CachingMemoryManager(context=ctx)
    mm.initialize()
    mm._ctx = ctx              # keep the context alive as long as the manager
    return mm


def _array(mm, n, dtype=np.float32):
    itemsize = np.dtype(dtype).itemsize
    return DeviceNDArray((n,), (itemsize,), dtype, gpu_data=mm.memalloc(n * itemsize))


def _addr(a):
    return a.device_ctypes_pointer.value


def test_block_bytes_rounds_up_to_512():
    assert [cp.block_bytes(n) for n in (1, 511, 512, 513, 40_000)] == [512, 512, 512, 1024, 40_448]


def test_a_freed_array_block_serves_the_next_array_of_its_size(pool, fake):
    a = _array(pool, 1000)
    addr = _addr(a)
    assert pool.stats()["misses"] == 1 and pool.held_bytes == 4096 and fake.allocs == [4096]
    del a
    gc.collect()
    assert pool.cached_bytes == 4096 and pool.stats()["cached_blocks"] == 1 and fake.frees == []
    b = _array(pool, 1000)
    assert _addr(b) == addr
    assert (pool.hits, pool.misses, fake.allocs) == (1, 1, [4096])
    assert pool.cached_bytes == 0 and pool.held_bytes == 4096


def test_sizes_within_one_block_share_it_and_others_do_not(pool, fake):
    a = _array(pool, 250)                 # 1000 bytes -> a 1024-byte block
    addr = _addr(a)
    del a
    gc.collect()
    b = _array(pool, 255)                 # 1020 bytes: same block
    assert _addr(b) == addr
    c = _array(pool, 258)                 # 1032 bytes: a 1536-byte block, new
    assert _addr(c) != addr and fake.allocs == [1024, 1536]


def test_a_training_loop_allocates_from_the_driver_only_in_its_first_step(pool, fake):
    shapes = [200 * 1000, 200 * 500, 200 * 250, 200 * 30, 784 * 1000, 1000]
    for step in range(5):
        live = [_array(pool, n) for n in shapes]     # the step's arrays, then freed together
        temps = [_array(pool, n) for n in shapes[:3]]
        del temps
        gc.collect()
        del live
        gc.collect()
        if step == 0:
            first = len(fake.allocs)
    assert len(fake.allocs) == first == len(shapes) + 3      # the temporaries live beside the step's arrays
    assert pool.hits == 5 * (len(shapes) + 3) - first and fake.frees == []


def test_a_view_keeps_its_block_out_of_the_cache(pool, fake):
    mem = pool.memalloc(2048)
    view = mem.view(512, 1024)
    del mem
    gc.collect()
    assert pool.cached_bytes == 0
    del view
    gc.collect()
    assert pool.cached_bytes == 2048


def test_caching_off_allocates_and_frees_as_numba_does(pool, fake, monkeypatch):
    monkeypatch.setattr(cp.CachingMemoryManager, "caching", False)
    addrs = set()
    for _ in range(12):
        a = _array(pool, 100)
        addrs.add(_addr(a))
        del a
        gc.collect()
    # every request called the driver, at its exact size; frees queue and run once
    # more than CUDA_DEALLOCS_COUNT are pending
    assert len(addrs) == 12 and fake.allocs == [400] * 12
    from numba.cuda.core import config
    assert len(fake.frees) == config.CUDA_DEALLOCS_COUNT + 1
    assert pool.hits == 0 and pool.cached_bytes == 0


def test_switching_caching_off_frees_cached_blocks_on_their_next_release(pool, fake, monkeypatch):
    a = _array(pool, 100)
    monkeypatch.setattr(cp.CachingMemoryManager, "caching", False)
    del a
    gc.collect()
    assert pool.cached_bytes == 0 and pool.released == 1


def test_out_of_memory_frees_the_cache_and_retries(fake, monkeypatch):
    f = FakeDriver(capacity=8192)
    monkeypatch.setattr(cp, "_cu_alloc", f.alloc)
    monkeypatch.setattr(cp, "_cu_free", f.free)
    monkeypatch.setattr(cp, "_cu_mem_info", lambda: (8192, 8192))
    ctx = Ctx()
    mm = cp.CachingMemoryManager(context=ctx)
    mm.initialize()
    a, b = mm.memalloc(4096), mm.memalloc(4096)
    del a, b
    gc.collect()
    assert mm.cached_bytes == 8192
    c = mm.memalloc(6000)                  # no 6144-byte block cached, the device is full
    assert mm.cached_bytes == 0 and len(f.frees) == 2 and mm.held_bytes == 6144
    with pytest.raises(CudaAPIError):      # still too big once the cache is empty: the driver's error
        mm.memalloc(4096)
    del c


def test_errors_other_than_out_of_memory_are_not_swallowed(pool, monkeypatch):
    def broken(n):
        raise CudaAPIError(binding.CUresult.CUDA_ERROR_INVALID_VALUE, "invalid value")
    monkeypatch.setattr(cp, "_cu_alloc", broken)
    with pytest.raises(CudaAPIError, match="invalid value"):
        pool.memalloc(100)


def test_empty_cache_gives_free_blocks_back(pool, fake):
    keep = _array(pool, 10)
    a, b = _array(pool, 1000), _array(pool, 2000)
    del a, b
    gc.collect()
    pool.empty_cache()
    assert len(fake.frees) == 2 and pool.cached_bytes == 0 and pool.held_bytes == 512
    assert _addr(keep) in fake.live


def test_reset_frees_the_cache_and_forgets_blocks_in_use(pool, fake):
    a, b = _array(pool, 100), _array(pool, 100)
    del b
    gc.collect()
    pool.reset()
    assert len(fake.frees) == 1 and pool.held_bytes == 0
    del a                                   # freed with the context: neither cached nor freed again
    gc.collect()
    assert pool.cached_bytes == 0 and len(fake.frees) == 1 and not pool.allocations


def test_a_block_outliving_its_pool_is_dropped_quietly(fake, monkeypatch):
    raised = []                             # a finalizer's exception is not raised, only reported here
    monkeypatch.setattr(sys, "unraisablehook", raised.append)
    ctx = Ctx()
    mm = cp.CachingMemoryManager(context=ctx)
    mm.initialize()
    mem = mm.memalloc(100)
    del mm
    gc.collect()
    del mem
    gc.collect()                            # the finalizer finds no pool: nothing to do, no error
    assert raised == [] and fake.frees == [] and len(fake.live) == 1


def test_memory_info_and_interface_version(pool):
    info = pool.get_memory_info()
    assert (info.free, info.total) == (1 << 30, 1 << 31) and pool.interface_version == 1


def test_install_makes_it_the_manager_of_new_contexts_only(monkeypatch):
    from numba.cuda.core import config
    monkeypatch.setattr(nd, "_memory_manager", None)
    monkeypatch.setattr(config, "CUDA_MEMORY_MANAGER", "default")
    monkeypatch.delenv("TINYNET_CUDA_POOL", raising=False)
    assert cp.install() and nd._memory_manager is cp.CachingMemoryManager
    assert cp.install()                                            # idempotent
    monkeypatch.setattr(nd, "_memory_manager", nd.NumbaCUDAMemoryManager)  # a context came first
    assert not cp.install() and nd._memory_manager is nd.NumbaCUDAMemoryManager


def test_install_respects_the_switch_and_the_users_manager(monkeypatch):
    from numba.cuda.core import config
    monkeypatch.setattr(nd, "_memory_manager", None)
    monkeypatch.setattr(config, "CUDA_MEMORY_MANAGER", "default")
    for off in ("0", "off", "false"):
        monkeypatch.setenv("TINYNET_CUDA_POOL", off)
        assert not cp.install() and nd._memory_manager is None
    monkeypatch.setenv("TINYNET_CUDA_POOL", "1")
    monkeypatch.setattr(config, "CUDA_MEMORY_MANAGER", "rmm")
    assert not cp.install() and nd._memory_manager is None


def test_the_plugin_module_attribute_numba_looks_for():
    assert cp._numba_memory_manager is cp.CachingMemoryManager
