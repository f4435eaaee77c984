"""`tinynet train --bn-epochs K` (issue 15 part 3; seed 003's "a few epochs of
batch normalization first, then whitening"): K epochs of SGD with BN in
OUT/bn-phase, BN folded into the layers, then the chosen optimizer in OUT."""
import json

import numpy as np

from faults import TINY, cli
from tinynet.data import load_dataset
from tinynet.fold import fold_batchnorm
from tinynet.models import build_model
from tinynet.optim import build_optimizer
from tinynet.train import TrainConfig, read_metrics, train

BN = ["--optimizer", "reparam", "--bn-epochs", "0.02", "--eval-every", "10"]   # 0.02 epoch = 24 steps


def test_bn_then_reparam_equals_the_two_phases_in_process(tmp_path):
    out = tmp_path / "run"
    p = cli(TINY + BN + ["--steps", "10", "--out", str(out)])
    assert p.returncode == 0, p.stderr
    phase, main = read_metrics(out / "bn-phase" / "metrics.csv"), read_metrics(out / "metrics.csv")
    assert phase[-1]["step"] == 24 and main[-1]["step"] == 10
    conf = json.loads((out / "bn-phase" / "config.json").read_text())
    assert conf["meta"]["batchnorm"] == "full" and conf["meta"]["bn_phase_of"] == "reparam"
    assert json.loads((out / "config.json").read_text())["meta"]["bn_phase"]["epochs"] == 0.02
    # folding keeps the function: the main run starts where the BN phase ended
    assert abs(main[0]["train_loss"] - phase[-1]["train_loss"]) < 1e-5 * phase[-1]["train_loss"]
    # an independent in-process run of the two phases gives the same numbers
    data = {"train": load_dataset("mnist7-labels", "train"), "test": load_dataset("mnist7-labels", "test")}
    net = build_model("tiny-mlp", dtype=np.float32, seed=0, batchnorm="full")
    cfg = dict(batch_size=50, eval_every=10, eval_subset=300, seed=0, progress=False)
    r1 = train(net, build_optimizer("sgd", net, None), data, TrainConfig(epochs=0.02, **cfg))
    assert r1.train_loss == phase[-1]["train_loss"]
    folded = fold_batchnorm(net)
    assert all(type(s).__name__ != "BatchNorm" for s in folded.layers)
    r2 = train(folded, build_optimizer("reparam", folded, None), data, TrainConfig(steps=10, **cfg))
    assert r2.train_loss == main[-1]["train_loss"]


def test_bn_phase_resumes_and_is_not_trained_twice(tmp_path):
    out = tmp_path / "run"
    assert cli(TINY + BN + ["--steps", "10", "--out", str(out)]).returncode == 0
    before = (out / "bn-phase" / "metrics.csv").read_text()
    p = cli(["train", "--out", str(out), "--resume", "--steps", "20", "-q"])       # settings from config.json
    assert p.returncode == 0, p.stderr
    assert (out / "bn-phase" / "metrics.csv").read_text() == before
    assert [r["step"] for r in read_metrics(out / "metrics.csv")] == [0, 10, 20]


def test_bad_bn_phase_settings_are_refused_before_training(tmp_path):
    for extra, msg in ((["--bn-epochs", "0"], "--bn-epochs must be > 0"),
                       (["--bn-lr", "0.1"], "give --bn-epochs too"),
                       (["--bn-epochs", "1", "--batchnorm", "full"], "leave --batchnorm out")):
        p = cli(TINY + ["--steps", "5", "--out", str(tmp_path / "x")] + extra)
        assert p.returncode == 2 and msg in p.stderr, p.stderr
    out = tmp_path / "held"
    assert cli(TINY + ["--steps", "5", "--out", str(out)]).returncode == 0
    kept = (out / "metrics.csv").read_text()
    p = cli(TINY + BN + ["--steps", "5", "--out", str(out)])
    assert p.returncode == 2 and "already holds a run" in p.stderr
    assert (out / "metrics.csv").read_text() == kept and not (out / "bn-phase").exists()
