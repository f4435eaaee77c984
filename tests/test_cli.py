"""The `tinynet` command through click's CliRunner: train, plot, data verify,
and the messages for unknown models, optimizers and options."""
import csv
import os

import pytest
from click.testing import CliRunner

from cli.main import main
from tinynet.data import checksums
from tinynet.models import MODELS
from tinynet.optim import OPTIMIZERS

SHARED = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))

TINY = ["train", "--model", "tiny-mlp", "--batch-size", "50", "--eval-subset", "300", "-q"]


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    a = invoke(*TINY, "--steps", "30", "--eval-every", "10", "--lr", "0.1", "--out", str(d / "sgd"))
    b = invoke(*TINY, "--steps", "30", "--eval-every", "10", "--optimizer", "adam", "--out", str(d / "adam"))
    return d, a, b


def test_train_tiny(two_runs):
    d, a, b = two_runs
    assert a.exit_code == 0, a.output
    assert b.exit_code == 0, b.output
    assert "steps: step 30" in a.output and "steps/s" in a.output
    with open(d / "sgd" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["0", "10", "20", "30"]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    for name in ("config.json", "checkpoint.npz", "result.json"):
        assert (d / "sgd" / name).exists()


def test_train_refuses_existing_then_resumes(two_runs):
    d = two_runs[0]
    r = invoke(*TINY, "--steps", "40", "--eval-every", "10", "--lr", "0.1", "--out", str(d / "sgd"))
    assert r.exit_code != 0 and "--resume" in r.output and "--overwrite" in r.output
    r = invoke(*TINY, "--steps", "40", "--eval-every", "10", "--lr", "0.1", "--out", str(d / "sgd"), "--resume")
    assert r.exit_code == 0, r.output
    assert "step 40" in r.output


@pytest.mark.parametrize("x", ["updates", "time"])
def test_plot_two_runs(two_runs, tmp_path, x):
    d = two_runs[0]
    out = tmp_path / "fig.png"
    r = invoke("plot", str(d / "sgd"), str(d / "adam"), "--x", x, "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "2 curve(s)" in r.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000


def test_plot_not_a_run(tmp_path):
    r = invoke("plot", str(tmp_path), "--out", str(tmp_path / "f.png"))
    assert r.exit_code != 0 and "metrics.csv" in r.output


def test_data_verify_packaged(monkeypatch):
    monkeypatch.delenv("TINYNET_DATA", raising=False)
    r = invoke("data", "verify")
    assert r.exit_code == 0, r.output
    assert sum(line.endswith("  ok") for line in r.output.splitlines()) == 4
    assert "4 file(s) ok" in r.output


@pytest.mark.skipif(not os.path.isdir(SHARED), reason="shared/data not present")
def test_data_verify_shared():
    r = invoke("data", "verify", "--data-dir", SHARED)
    assert r.exit_code == 0, r.output
    assert "test_batch" in r.output and "data_batch_3" in r.output and "missing" in r.output


def test_data_verify_corrupt(tmp_path):
    d = tmp_path / "mnist"
    d.mkdir()
    src = os.path.join(os.path.dirname(checksums.__file__), "mnist", "t10k-labels-idx1-ubyte.gz")
    data = bytearray(open(src, "rb").read())
    data[100] ^= 0xFF
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(bytes(data))
    r = invoke("data", "verify", "--data-dir", str(tmp_path))
    assert r.exit_code == 1
    assert "BAD" in r.output and checksums.BY_NAME["t10k-labels-idx1-ubyte.gz"].sha256 in r.output


def test_unknown_model_lists_models():
    r = invoke("train", "--model", "resnet")
    assert r.exit_code == 2
    assert "unknown model 'resnet'" in r.output
    assert all(m in r.output for m in MODELS)


def test_unknown_optimizer_lists_optimizers():
    r = invoke("train", "--optimizer", "lbfgs")
    assert r.exit_code == 2
    assert "unknown optimizer 'lbfgs'" in r.output
    assert all(o in r.output for o in OPTIMIZERS)


def test_option_the_optimizer_does_not_take(tmp_path):
    r = invoke(*TINY, "--optimizer", "adam", "--momentum", "0.9", "--steps", "1", "--out", str(tmp_path / "x"))
    assert r.exit_code == 2
    assert "does not take --momentum" in r.output and "--beta1" in r.output


def test_diverged_exit_code(tmp_path):
    r = invoke(*TINY, "--lr", "1000", "--steps", "100", "--out", str(tmp_path / "d"))
    assert r.exit_code == 3
    assert "diverged" in r.output
