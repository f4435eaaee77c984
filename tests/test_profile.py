"""`tinynet profile` and the backend's timing hook (issue 18): the per-kernel
rows add up to the measured step, no timed region is counted twice, timing
changes no result bit, host LAPACK calls are timed, the JSON / CSV forms, the
Chrome trace, and the CLI's errors."""
import csv
import io
import json

import numpy as np
import pytest
from click.testing import CliRunner

from cli.profile import profile as profile_cmd
from tinynet import backend_base
from tinynet.backend import Profile, get_backend
from tinynet.losses import MSELoss
from tinynet.models import mlp
from tinynet.optim import build_optimizer
from tinynet.profiler import UNCOVERED, format_table, profile_steps, to_csv, to_json

PEAKS = dict(flops=1e11, bytes=1e10, source="test")   # skip the start-up measurement
SIZES = [96, 160, 128, 96]       # three Linear layers: 3 forward + 3 weight + 2 input GEMMs per SGD step
N = 64
OPTS = {"sgd": {}, "kfac": dict(T=2, stats_every=1), "ubp": {}, "nnn": dict(T=2)}


def _net(dtype=np.float32):
    return mlp(SIZES, "sigmoid", MSELoss(), out_activation="sigmoid", dtype=dtype, seed=3)


def _batches(count=6):
    rng = np.random.default_rng(1)
    return [(X, X) for X in (rng.uniform(0, 1, (N, SIZES[0])).astype(np.float32) for _ in range(count))]


@pytest.fixture(autouse=True)
def _detached():
    """Every test leaves the shared CPU backend with timing off."""
    yield
    get_backend("cpu").profile = None
    assert backend_base._host_profile() is None


def _profile(name, steps=3, trace=False):
    net = _net()
    opt = build_optimizer(name, net, 0.05, **OPTS[name])
    return profile_steps(net, opt, _batches(), steps=steps, warmup=1, untimed=False, trace=trace, peaks=PEAKS)


@pytest.mark.parametrize("name", ["sgd", "kfac"])
def test_rows_add_up_to_the_step_and_nothing_is_counted_twice(name):
    r = _profile(name, trace=True)
    rows = r["kernels"]
    total = sum(k["total_ms"] for k in rows)
    assert abs(total - r["step_ms"]) <= 0.05 * r["step_ms"]
    # the kernels alone cannot exceed the step: a nested timed region (a kernel
    # timed inside another) would count its time twice and break this
    kernels = [k for k in rows if k["name"] != UNCOVERED]
    assert sum(k["total_ms"] for k in kernels) <= 1.05 * r["step_ms"]
    assert all(k["total_ms"] >= 0 and k["mean_us"] >= 0 for k in kernels)
    # in the trace of one step the timed calls lie inside the step, one after another
    ev = [e for e in r["trace"]["traceEvents"] if e["ph"] == "X" and e["name"] != "step"]
    step = next(e for e in r["trace"]["traceEvents"] if e["name"] == "step")
    assert ev, "no kernel event in the trace"
    end = 0.0
    for e in sorted(ev, key=lambda e: e["ts"]):
        assert e["ts"] >= end - 1e-3 and e["dur"] >= 0
        end = e["ts"] + e["dur"]
    assert end <= step["dur"] + 1e-3


def test_calls_are_per_step_and_match_the_network():
    """Plain SGD on 3 Linear layers, its update fused into the reverse pass: 3
    forward and 2 input-gradient GEMMs, 3 weight-gradient GEMMs accumulating into
    theta (matmul_acc), 3 bias column sums each with its axpy (col_sum_axpy) per
    step, whatever the number of profiled steps; flops of the GEMMs from their shapes."""
    r = _profile("sgd", steps=4)
    by = {k["name"]: k for k in r["kernels"]}
    assert by["matmul"]["calls"] == 5 and by["matmul"]["total_calls"] == 20
    assert by["matmul_acc"]["calls"] == 3 and by["matmul_acc"]["total_calls"] == 12
    assert by["col_sum_axpy"]["calls"] == 3
    assert "col_sum" not in by and "axpy" not in by
    assert by[UNCOVERED]["calls"] == 1
    pairs = list(zip(SIZES, SIZES[1:]))
    flops = {"matmul": sum(2 * N * a * b for a, b in pairs) + sum(2 * N * a * b for a, b in pairs[1:]),
             "matmul_acc": sum(2 * N * a * b for a, b in pairs)}
    for name, f in flops.items():
        m = by[name]
        assert m["gflops"] == pytest.approx(f / (m["total_ms"] * 1e-3) / 1e9, rel=1e-9)
        assert m["peak_fraction"] == pytest.approx(m["gflops"] * 1e9 / PEAKS["flops"])
    assert "gbps" in by["sigmoid_fwd"] and "gflops" not in by["sigmoid_fwd"]


def test_host_lapack_calls_of_the_amortized_steps_are_timed():
    kfac = {k["name"]: k for k in _profile("kfac", steps=2)["kernels"]}
    for name in ("host.potrf", "host.potri", "host.kfac_A_running", "host.running_update_upper", "host.gram"):
        assert name in kfac, f"{name} missing from {sorted(kfac)}"
    # T=2, 2 steps after 1 warm-up: one inversion step, one (i+1)x(i+1) and one o x o factor per layer
    assert kfac["host.potrf"]["total_calls"] == 2 * (len(SIZES) - 1)
    nnn = {k["name"] for k in _profile("nnn", steps=2)["kernels"]}
    assert {"host.eigh", "host.centered_cov"} <= nnn


@pytest.mark.parametrize("name", sorted(OPTS))
def test_timing_changes_no_result_bit(name):
    """The same steps with a Profile attached and without: bitwise equal
    parameters and losses."""
    runs = []
    for timed in (False, True, False):
        net = _net()
        opt = build_optimizer(name, net, 0.05, **OPTS[name])
        net.bk.profile = Profile() if timed else None
        losses = [opt.step(X, Y) for X, Y in _batches(4)]
        if timed:
            assert net.bk.profile.calls["matmul"] > 0
        net.bk.profile = None
        runs.append((np.asarray(net.bk.to_host(net.theta)).copy(), losses))
    for theta, losses in runs[1:]:
        assert theta.tobytes() == runs[0][0].tobytes()
        assert losses == runs[0][1]


def test_timing_is_off_by_default_and_detaches():
    bk = get_backend("cpu")
    assert bk.profile is None and backend_base._host_profile() is None
    p = Profile()
    bk.profile = p
    assert backend_base._host_profile() is p
    assert backend_base.host_call("host.x", np.add, 1, 2) == 3
    assert p.calls["host.x"] == 1
    bk.profile = None
    assert backend_base.host_call("host.x", np.add, 1, 2) == 3
    assert p.calls["host.x"] == 1                        # not counted once detached
    with pytest.raises(TypeError, match="Profile or None"):
        bk.profile = {}
    # host calls report to a backend that still has its profile, and still exists
    import gc

    from tinynet.backend import CPUBackend
    other = CPUBackend()
    other.profile = Profile()
    assert backend_base._host_profile() is other.profile
    del other
    gc.collect()
    assert backend_base._host_profile() is None


def test_imports_of_the_backend_pieces():
    """The old import paths still work; the CUDA backend module does not import
    the CPU one (they share tinynet.backend_base)."""
    import ast
    import inspect as ins

    import tinynet.backend as b
    import tinynet.cuda_backend as cb
    assert b.Profile is backend_base.Profile and b.Backend is backend_base.Backend
    assert b.get_backend is backend_base.get_backend
    for mod, other in ((cb, "tinynet.backend"), (b, "tinynet.cuda_backend")):
        tree = ast.parse(ins.getsource(mod))
        names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | \
                {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert other not in names, f"{mod.__name__} imports {other}"


def _check_schema(doc):
    assert doc["device"] == "cpu"
    assert isinstance(doc["step_ms"], float) and doc["step_ms"] > 0
    rows = doc["kernels"]
    names = [r["name"] for r in rows]
    assert len(set(names)) == len(names) and names.count(UNCOVERED) == 1
    for r in rows:
        assert {"name", "calls", "total_ms", "mean_us", "share"} <= set(r), r
        assert ("gflops" in r) != ("gbps" in r), r
    ms = [r["total_ms"] for r in rows]
    assert ms == sorted(ms, reverse=True)
    assert abs(sum(ms) - doc["step_ms"]) <= 0.05 * doc["step_ms"]
    assert sum(r["share"] for r in rows) == pytest.approx(1.0, abs=1e-9)


def test_cli_json_csv_and_trace(tmp_path):
    args = ["--model", "tiny-mlp", "--optimizer", "sgd", "--steps", "2", "--warmup", "1", "--batch", "16",
            "--synthetic", "--no-untimed"]
    res = CliRunner().invoke(profile_cmd, args + ["--out", str(tmp_path / "t.json"),
                                                  "--trace", str(tmp_path / "tr.json")])
    assert res.exit_code == 0, res.output
    assert "matmul" in res.stdout and UNCOVERED in res.stdout and "Step:" in res.stdout
    doc = json.loads((tmp_path / "t.json").read_text())
    _check_schema(doc)
    assert doc["model"] == "tiny-mlp" and doc["steps"] == 2 and doc["batch"] == 16
    tr = json.loads((tmp_path / "tr.json").read_text())
    xs = [e for e in tr["traceEvents"] if e["ph"] == "X"]
    assert {"step", "matmul"} <= {e["name"] for e in xs}
    assert all({"name", "ts", "dur", "pid", "tid"} <= set(e) for e in xs)

    res = CliRunner().invoke(profile_cmd, args + ["--out", str(tmp_path / "t.csv")])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO((tmp_path / "t.csv").read_text())))
    assert rows[0].keys() >= {"name", "calls", "total_ms", "mean_us", "share", "gflops", "gbps"}
    assert UNCOVERED in [r["name"] for r in rows]


def test_outputs_of_one_result_agree():
    r = _profile("sgd", steps=2)
    r.update(model="m", optimizer="sgd", batch=N)
    doc = json.loads(to_json(r))
    _check_schema(doc)
    rows = list(csv.DictReader(io.StringIO(to_csv(r))))
    assert [x["name"] for x in rows] == [k["name"] for k in doc["kernels"]]
    text = format_table(r, top=3)
    assert "more)" in text and text.splitlines()[2].split()[0] == "Name"
    md = format_table(r, markdown=True)
    assert "| `matmul` |" in md


@pytest.mark.parametrize("args, match", [
    (["--model", "nope"], "--model 'nope': unknown"),
    (["--optimizer", "nope"], "--optimizer 'nope': unknown"),
    (["--device", "tpu"], "--device 'tpu'"),
    (["--steps", "0"], "--steps must be >= 1"),
    (["--out", "table.txt"], "must end in .json or .csv"),
    (["-o", "T"], "write NAME=VALUE"),
    (["--optimizer", "sgd", "-o", "T=3"], "does not take"),
])
def test_cli_errors_are_one_line_exit_2(args, match):
    res = CliRunner().invoke(profile_cmd, args + ["--synthetic", "--model", "tiny-mlp"] if "--model" not in args
                             else args + ["--synthetic"])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and match in lines[0], res.stderr


def test_cli_cuda_without_gpu_is_one_line_exit_2():
    from numba import cuda
    if cuda.is_available():
        pytest.skip("a GPU (or the simulator) is present here")
    res = CliRunner().invoke(profile_cmd, ["--device", "cuda", "--synthetic", "--steps", "1"])
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "--device cuda: no NVIDIA GPU" in lines[0], res.stderr


def test_registered_in_the_tinynet_command():
    from cli.main import main
    assert main.commands["profile"] is profile_cmd
