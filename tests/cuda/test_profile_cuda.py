"""The profile on the CUDA backend (issue 18), under the simulator (tiny shapes:
it runs ~1e4 threads/s): launches and host<->device copies are timed, the rows
add up to the step, and timing changes no result bit."""
import numpy as np

from tinynet.backend import Profile
from tinynet.cuda_backend import CUDABackend
from tinynet.losses import MSELoss
from tinynet.models import mlp
from tinynet.optim import SGD
from tinynet.profiler import UNCOVERED, profile_steps


def _net():
    return mlp([4, 3, 4], "sigmoid", MSELoss(), out_activation="sigmoid", dtype=np.float32, seed=0,
               device="cuda")


def _X(net):
    return net.as_input(np.random.default_rng(0).uniform(0, 1, (2, 4)).astype(np.float32))


def test_copies_are_timed_when_profiling_only():
    bk = CUDABackend()
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    d = bk.asarray(a)                     # untimed: no profile
    bk.profile = p = Profile()
    try:
        d2 = bk.asarray(a)
        np.testing.assert_array_equal(bk.to_host(d2), a)
        np.testing.assert_array_equal(bk.to_host(d), a)
    finally:
        bk.profile = None
    assert p.calls["memcpy.htod"] == 1 and p.calls["memcpy.dtoh"] == 2
    assert p.bytes["memcpy.htod"] == a.nbytes


def test_cuda_profile_rows_add_up_and_change_no_bit():
    net = _net()
    X = _X(net)
    r = profile_steps(net, SGD(net, 0.1), [(X, X)], steps=1, warmup=0, untimed=False,
                      peaks=dict(flops=None, bytes=None, source="simulator"))
    names = {k["name"] for k in r["kernels"]}
    assert {"matmul", "matmul_acc", "matmul_bias", "sigmoid_fwd", "col_sum_axpy", UNCOVERED} <= names
    assert r["device"] == "cuda"
    total = sum(k["total_ms"] for k in r["kernels"])
    assert abs(total - r["step_ms"]) <= 0.05 * r["step_ms"]
    assert sum(k["total_ms"] for k in r["kernels"] if k["name"] != UNCOVERED) <= 1.05 * r["step_ms"]
    # the same step untimed: the same bits
    ref = _net()
    SGD(ref, 0.1).step(_X(ref), _X(ref))
    assert np.asarray(ref.bk.to_host(ref.theta)).tobytes() == np.asarray(net.bk.to_host(net.theta)).tobytes()
