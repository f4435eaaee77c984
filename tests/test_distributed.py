"""The pieces of data-parallel training that need no MPI (issue 19): sharded
random draws, upper-triangle packing, the byte account, and the refusals of
runs that would not give one process's updates. The runs themselves are in
tests/mpi (marker mpi, under mpirun)."""
import sys

import numpy as np
import pytest

from tinynet.distributed import (LOCAL, CommAccount, RowShardedGenerator, check_distributable, get_comm,
                                 pack_upper, shard_bounds, supported, unpack_upper)
from tinynet.layers import BatchNorm, Linear, Tanh, ZCAWhitening
from tinynet.losses import MSELoss
from tinynet.network import Sequential
from tinynet.optim import build_optimizer


class TwoRanks:
    """Stands for rank 0 of 2 where only the size is read."""
    rank, size = 0, 2


def test_sharded_draws_are_the_rows_of_one_process_draw():
    full = np.random.default_rng(5)
    want_n, want_u = full.standard_normal((8, 3)), full.random((8, 1))
    parts_n, parts_u, states = [], [], []
    for r in range(4):
        g = RowShardedGenerator(np.random.default_rng(5), r, 4)
        parts_n.append(g.standard_normal((2, 3)))
        parts_u.append(g.random((2, 1)))
        states.append(g.bit_generator.state["state"]["state"])
    np.testing.assert_array_equal(np.vstack(parts_n), want_n)
    np.testing.assert_array_equal(np.vstack(parts_u), want_u)
    assert len(set(states)) == 1 and states[0] == full.bit_generator.state["state"]["state"]


def test_shard_bounds():
    assert [shard_bounds(r, 4, 200) for r in range(4)] == [(0, 50), (50, 100), (100, 150), (150, 200)]
    with pytest.raises(ValueError, match="multiple of 3"):
        shard_bounds(0, 3, 200)


def test_upper_triangle_round_trip():
    A = np.random.default_rng(0).standard_normal((5, 5))
    S = A + A.T
    v = pack_upper(S)
    assert v.shape == (15,)
    np.testing.assert_array_equal(unpack_upper(v, 5), S)


def test_account():
    acc = CommAccount()
    for k in range(10):
        acc.add("gradient", 100)
        if k % 5 == 0:
            acc.add("factors", 1000)
        acc.end_step()
    rows = {r[0]: r for r in acc.summary()}
    assert rows["gradient"][1:] == (10, 10, 100.0, 100.0)
    assert rows["factors"][1:] == (2, 2, 1000.0, 200.0)
    assert acc.last_step_bytes() == 100
    assert "factors" in acc.table()


def _net(mixing=None):
    layers = [Linear(6, 4)] + ([mixing] if mixing else []) + [Tanh(), Linear(4, 6)]
    return Sequential(layers, MSELoss(), dtype=np.float64, seed=0)


def test_refusals_say_why():
    net = _net()
    with pytest.raises(ValueError, match="optimizer 'hf' does not reduce.*supported: .*kfac"):
        check_distributable(net, build_optimizer("hf", net, 1.0), TwoRanks(), 20)
    with pytest.raises(ValueError, match="--batch-size 21 does not divide over 2 ranks"):
        check_distributable(net, build_optimizer("sgd", net, 0.1), TwoRanks(), 21)
    zca = _net(ZCAWhitening(4))
    with pytest.raises(ValueError, match=r"stage 1 \(ZCAWhitening.*mixes the rows of a batch"):
        check_distributable(zca, build_optimizer("sgd", zca, 0.1), TwoRanks(), 20)
    bn = _net(BatchNorm(4))                                   # synchronized: its statistics are reduced
    check_distributable(bn, build_optimizer("sgd", bn, 0.1), TwoRanks(), 20)
    assert bn.layers[1].comm is LOCAL
    bn.comm = TwoRanks()
    assert isinstance(bn.layers[1].comm, TwoRanks)
    check_distributable(net, build_optimizer("hf", net, 1.0), LOCAL, 21)       # one process: anything goes
    assert {"sgd", "adam", "rmsprop", "kfac", "acp", "ubp"} <= set(supported())


def test_get_comm():
    assert get_comm("none") is LOCAL and get_comm(None) is LOCAL
    assert net_comm_default() is LOCAL
    with pytest.raises(ValueError, match="unknown distributed mode 'tcp'"):
        get_comm("tcp")


def net_comm_default():
    return _net().comm


def test_mpi_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)          # import fails as if not installed
    with pytest.raises(RuntimeError, match=r"pip install -e \"\.\[mpi\]\""):
        get_comm("mpi")


def test_local_comm_is_the_identity():
    g = np.arange(4.0)
    assert LOCAL.allreduce_sum([g], "gradient")[0] is g
    assert LOCAL.mean_gradient(None, g, 2.5) == 2.5 and g.tolist() == [0, 1, 2, 3]
