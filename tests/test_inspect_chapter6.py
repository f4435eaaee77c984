"""`tinynet inspect` for the chapter-6 and block matrices and for spectra: what
it writes is tinynet.curvature's (the .npz against the library call on the
same net and batch), big heatmaps are down-sampled views with every entry in
the .npz, --list names the blocks, and --spectrum's Lanczos top eigenvalues
(scipy eigsh over hvp / gvp / fvp) equal dense eigvalsh."""
import numpy as np
import pytest
from click.testing import CliRunner

from cli.inspect import build, inspect, load
from tinynet import curvature as cv

SPEC = "mlp:5-4-4-3:tanh"          # random data; blocks 0, 1, 2 of 24, 20, 15 parameters
N = 12


def run(*args, ok=True):
    r = CliRunner().invoke(inspect, list(args), catch_exceptions=False)
    if ok:
        assert r.exit_code == 0, r.output
    return r


def batch(spec=SPEC, n=N):
    net, ds = build(spec, 0)
    X, Y = load(net, ds, "train", None, 0, n, 0)
    return net, X, Y


CASES = {
    "kfac_A-layer1": (["--matrix", "kfac_A", "--layer", "1"], lambda net, X, Y: cv.kfac_factors(net, X, Y)[1][0]),
    "kfac_G-layer2": (["--matrix", "kfac_G", "--layer", "2"], lambda net, X, Y: cv.kfac_factors(net, X, Y)[2][1]),
    "kfac_G-fisher": (["--matrix", "kfac_G", "--layer", "0", "--kfac-curvature", "fisher"],
                      lambda net, X, Y: cv.kfac_factors(net, X, Y, "fisher", seed=0)[0][1]),
    "cov-layer1": (["--matrix", "cov", "--layer", "1"], lambda net, X, Y: cv.input_moments(net, X)[1][1]),
    "H_block-0-2": (["--matrix", "H_block", "--layer", "0", "--layer2", "2"],
                    lambda net, X, Y: cv.hessian_block(net, X, Y, 0, 2)),
    "G_block-1": (["--matrix", "G_block", "--layer", "1"], lambda net, X, Y: cv.gauss_newton_block(net, X, Y, 1)),
    "F_block-2-1": (["--matrix", "F_block", "--layer", "2", "--layer2", "1"],
                    lambda net, X, Y: cv.fisher_block(net, X, 2, 1)),
    "kron_vs_exact-1": (["--matrix", "kron_vs_exact", "--layer", "1"],
                        lambda net, X, Y: cv.kron_vs_exact(net, X, Y, 1)["diff"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_npz_holds_the_library_matrix(tmp_path, case):
    args, ref = CASES[case]
    out = tmp_path / "m.npz"
    run("--model", SPEC, "--batch", str(N), *args, "--out", str(out))
    name = args[1]
    net, X, Y = batch()
    np.testing.assert_allclose(np.load(out)[name], ref(net, X, Y), rtol=1e-12, atol=1e-14)


def test_kron_vs_exact_npz_and_png(tmp_path):
    out = tmp_path / "k.npz"
    run("--model", SPEC, "--batch", str(N), "--matrix", "kron_vs_exact", "--layer", "0", "--out", str(out))
    z = np.load(out)
    np.testing.assert_allclose(z["kron"], np.kron(z["A"], z["G"]), rtol=1e-13)
    np.testing.assert_allclose(z["kron_vs_exact"], z["kron"] - z["exact"], rtol=1e-13)
    net, X, Y = batch()
    np.testing.assert_allclose(z["exact"], cv.gauss_newton_block(net, X, Y, 0), rtol=1e-12, atol=1e-14)
    png = tmp_path / "k.png"
    run("--model", SPEC, "--batch", str(N), "--matrix", "kron_vs_exact", "--layer", "0", "--out", str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_big_heatmap_is_a_downsampled_view_with_the_full_matrix_in_the_npz(tmp_path):
    spec = "mlp:40-24-3:tanh"                      # block 0: 40*24 + 24 = 984 parameters (> 600 pixels)
    png = tmp_path / "h.png"
    r = run("--model", spec, "--batch", "4", "--matrix", "H_block", "--layer", "0", "--out", str(png))
    assert "down-sampled" in r.output and png.exists()
    net, X, Y = batch(spec, 4)
    H = np.load(tmp_path / "h.npz")["H_block"]
    assert H.shape == (984, 984)
    np.testing.assert_allclose(H, cv.hessian_block(net, X, Y, 0), rtol=1e-12, atol=1e-14)


def test_list_names_the_blocks_and_the_chapter6_matrices():
    r = run("--model", SPEC, "--list")
    for text in ("0: Linear 1", "2: Linear 3", "kfac_A", "kfac_G", "cov", "H_block", "kron_vs_exact", "(5, 5)", "(24, 24)"):
        assert text in r.output, text


@pytest.mark.parametrize("matrix,curvature", [("H", "hessian"), ("G", "gn"), ("F", "fisher")])
def test_lanczos_spectrum_equals_dense_eigvalsh(tmp_path, matrix, curvature):
    out = tmp_path / "w.npz"
    r = run("--model", SPEC, "--batch", str(N), "--matrix", matrix, "--spectrum", "--lanczos", "--top-k", "6",
            "--out", str(out))
    assert "Lanczos" in r.output
    net, X, Y = batch()
    dense = {"H": cv.hessian, "G": cv.gauss_newton, "F": lambda n, X, Y: cv.fisher(n, X)}[matrix](net, X, Y)
    ref = np.linalg.eigvalsh(dense)[::-1][:6]
    w = np.load(out)["eigenvalues"]
    np.testing.assert_allclose(w, ref, rtol=1e-8, atol=1e-10 * np.abs(ref).max())
    np.testing.assert_allclose(cv.top_eigenvalues(net, X, Y, curvature, k=6), ref, rtol=1e-8,
                               atol=1e-10 * np.abs(ref).max())


def test_spectrum_falls_back_to_lanczos_when_the_dense_guard_refuses(monkeypatch):
    monkeypatch.setenv("TINYNET_DENSE_MAX_BYTES", "1000")
    r = run("--model", SPEC, "--batch", str(N), "--matrix", "G", "--spectrum", "--top-k", "3")
    assert "Lanczos" in r.output
    r = run("--model", SPEC, "--batch", str(N), "--matrix", "G", ok=False)
    assert r.exit_code != 0 and "needs" in r.output


def test_block_spectrum_is_the_dense_eigvalsh_of_the_block(tmp_path):
    out = tmp_path / "w.txt"
    run("--model", SPEC, "--batch", str(N), "--matrix", "H_block", "--layer", "1", "--spectrum", "--out", str(out))
    net, X, Y = batch()
    ref = np.linalg.eigvalsh(cv.hessian_block(net, X, Y, 1))[::-1]
    np.testing.assert_allclose(np.loadtxt(out), ref, rtol=1e-8, atol=1e-9 * np.abs(ref).max())   # %.10g text


@pytest.mark.parametrize("args,text", [
    (["--matrix", "kfac_A", "--layer", "7"], "out of range"),
    (["--matrix", "cov", "--layer", "0", "--layer2", "1"], "--layer2 applies"),
    (["--matrix", "H_block", "--layer", "-9"], "block indices 0..2"),
], ids=["layer-out-of-range", "layer2-on-a-factor", "block-out-of-range"])
def test_bad_layers_reach_the_user(args, text):
    r = run("--model", SPEC, "--batch", "4", *args, ok=False)
    assert r.exit_code != 0 and text in r.output
