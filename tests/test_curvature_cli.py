"""`tinynet inspect`: the matrices it writes are tinynet.curvature's, --list and
--check report what they say, and the size guard reaches the user as an error."""
import numpy as np
import pytest
from click.testing import CliRunner

from cli.inspect import build, inspect, load
from tinynet import curvature as cv

SPEC = "mlp:3-2-2:tanh"


def run(*args):
    return CliRunner().invoke(inspect, list(args), catch_exceptions=False)


def example(spec=SPEC, n=1):
    net, ds = build(spec, 0)
    X, Y = load(net, ds, "train", None, 0, n, 0)
    return net, X, Y


@pytest.mark.parametrize("name", ["M", "N", "D_x", "D_x_shift", "D_b", "B_b", "D_xx", "D_xz", "D_zx", "D_zz", "H"])
def test_npz_holds_the_seed_matrix(tmp_path, name):
    out = tmp_path / "m.npz"
    r = run("--model", SPEC, "--matrix", name, "--out", str(out))
    assert r.exit_code == 0, r.output
    net, X, Y = example()
    ref = getattr(cv.matrices(net, X[0], Y[0]), name)
    with np.load(out) as z:
        assert np.array_equal(z[name], ref)
        assert z["row_blocks"].sum() == ref.shape[0] and z["col_blocks"].sum() == ref.shape[1]


@pytest.mark.parametrize("name,fn", [("H", cv.hessian), ("G", cv.gauss_newton), ("F", cv.fisher)])
def test_batch_matrices_txt_and_png(tmp_path, name, fn):
    out = tmp_path / "m.txt"
    assert run("--model", SPEC, "--matrix", name, "--batch", "4", "--out", str(out)).exit_code == 0
    net, X, Y = example(n=4)
    ref = fn(net, X, Y) if name != "F" else fn(net, X)
    assert np.allclose(np.loadtxt(out), ref, rtol=1e-9, atol=1e-12)
    png = tmp_path / "m.png"
    assert run("--model", SPEC, "--matrix", name, "--out", str(png)).exit_code == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_list_and_check():
    r = run("--model", SPEC, "--list")
    assert r.exit_code == 0
    for name in ("M ", "N ", "D_x_shift", "B_b", "D_zz", "H ", "G ", "F "):
        assert name in r.output
    assert "(7, 7)" in r.output            # M: a_1..a_4 = 2 + 2 + 2 + 1
    r = run("--model", SPEC, "--check")
    assert r.exit_code == 0
    rels = [float(line.rsplit("relative ", 1)[1].rstrip(")")) for line in r.output.splitlines() if "relative" in line]
    assert len(rels) == 2 and rels[0] < 1e-6 and rels[1] < 1e-12     # finite differences, torch


def test_errors_reach_the_user():
    r = CliRunner().invoke(inspect, ["--model", "mnist-mlp", "--matrix", "G", "--data-dir", "/nonexistent"])
    assert r.exit_code != 0 and "79,510 parameters" in r.output and "hvp" in r.output
    r = CliRunner().invoke(inspect, ["--model", "mlp:3-x", "--list"])
    assert r.exit_code != 0 and "integers" in r.output
    r = CliRunner().invoke(inspect, ["--model", SPEC, "--matrix", "M", "--out", "m.pdf"])
    assert r.exit_code != 0 and ".png, .npz or .txt" in r.output
