"""tinynet.cuda_pool on a real GPU (TINYNET_CUDA_HARDWARE=1; benchmarks/gpu_step.py
runs it): after the first step a training step takes every device array from
the cache, and where memory comes from changes no bit of the result. Under the
simulator there is no memory manager to test (it skips);
tests/test_cuda_pool.py checks the pool's bookkeeping against a fake driver on
every machine."""
import numba
import numpy as np
import pytest

from tinynet import cuda_pool
from tinynet.layers import Linear, Tanh
from tinynet.losses import MSELoss
from tinynet.network import Sequential
from tinynet.optim import KFAC, SGD, UBP

pytestmark = pytest.mark.skipif(numba.config.ENABLE_CUDASIM or not cuda_pool.enabled_by_env(),
                                reason="the simulator has no memory manager (tests/test_cuda_pool.py "
                                       "checks the pool against a fake driver); or TINYNET_CUDA_POOL=0")

OPTS = {"sgd": lambda net: SGD(net, 0.1), "ubp": lambda net: UBP(net, 0.1), "kfac": lambda net: KFAC(net)}


def _build(name, seed=4):
    net = Sequential([Linear(7, 5), Tanh(), Linear(5, 3)], MSELoss(), dtype=np.float32, seed=seed, device="cuda")
    opt = OPTS[name](net)
    rng = np.random.default_rng(1)
    X = net.bk.asarray(rng.standard_normal((6, 7)).astype(np.float32))
    Y = net.bk.asarray(rng.standard_normal((6, 3)).astype(np.float32))
    return net, opt, X, Y


@pytest.mark.parametrize("name", sorted(OPTS))
def test_steps_after_the_first_allocate_nothing_from_the_driver(name):
    net, opt, X, Y = _build(name)
    pool = net.bk.memory_pool
    assert pool is not None, "the CUDA backend did not install tinynet.cuda_pool before the first context"
    for _ in range(2):
        opt.step(X, Y)
    misses, hits = pool.misses, pool.hits
    for _ in range(3):
        opt.step(X, Y)
    assert pool.misses == misses and pool.hits > hits


@pytest.mark.parametrize("name", sorted(OPTS))
def test_the_result_does_not_depend_on_where_memory_comes_from(name, monkeypatch):
    thetas = []
    for caching in (True, False):
        monkeypatch.setattr(cuda_pool.CachingMemoryManager, "caching", caching)
        net, opt, X, Y = _build(name)
        if not caching:
            net.bk.memory_pool.empty_cache()
        for _ in range(3):
            opt.step(X, Y)
        thetas.append(net.bk.to_host(net.theta))
    assert np.array_equal(thetas[0], thetas[1])
