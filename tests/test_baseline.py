"""`tinynet train --baseline sgd` (issue 13, part 1): the same model, initialization,
minibatches and number of updates with SGD at its default lr, and the two
training losses side by side."""
import json

import numpy as np

from faults import TINY, cli
from tinynet.data import load_dataset
from tinynet.models import build_model
from tinynet.optim import build_optimizer
from tinynet.train import TrainConfig, read_metrics, train


def test_baseline_is_sgd_over_the_same_updates(tmp_path):
    out = tmp_path / "run"
    p = cli(TINY + ["--optimizer", "ubp", "--lr", "0.3", "--steps", "20", "--eval-every", "10",
                    "--out", str(out), "--baseline", "sgd"])
    assert p.returncode == 0, p.stderr
    base = out / "baseline-sgd"
    conf = json.loads((base / "config.json").read_text())
    assert conf["meta"]["optimizer"] == "sgd" and conf["meta"]["baseline_of"] == "ubp"
    assert conf["hyperparameters"]["lr"] == 0.01 and conf["trainer"]["steps"] == 20
    mine, theirs = read_metrics(out / "metrics.csv"), read_metrics(base / "metrics.csv")
    assert [r["step"] for r in theirs] == [0, 10, 20]
    assert mine[0]["train_loss"] == theirs[0]["train_loss"]                # the same initialization
    # the baseline is plain SGD: an independent in-process run gives its numbers
    net = build_model("tiny-mlp", dtype=np.float32, seed=0)
    data = {"train": load_dataset("mnist7-labels", "train"), "test": load_dataset("mnist7-labels", "test")}
    ref = train(net, build_optimizer("sgd", net, 0.01), data,
                TrainConfig(batch_size=50, steps=20, eval_every=10, eval_subset=300, seed=0, progress=False))
    assert theirs[-1]["train_loss"] == ref.train_loss
    # the table: one line per common evaluation, then the verdict on stdout
    for r, s in zip(mine, theirs):
        assert f"{r['step']:>8}  {r['train_loss']:>12.6g}  {s['train_loss']:>12.6g}" in p.stderr
    a, b = mine[-1]["train_loss"], theirs[-1]["train_loss"]
    assert f"after 20 updates ubp {'lower' if a < b else 'higher'} than sgd" in p.stdout


def test_baseline_resumes_with_the_run(tmp_path):
    out = tmp_path / "run"
    args = TINY + ["--optimizer", "ubp", "--eval-every", "10", "--out", str(out), "--baseline", "sgd"]
    assert cli(args + ["--steps", "10"]).returncode == 0
    p = cli(args + ["--steps", "20", "--resume"])
    assert p.returncode == 0, p.stderr
    assert [r["step"] for r in read_metrics(out / "baseline-sgd" / "metrics.csv")] == [0, 10, 20]


def test_no_baseline_by_default(tmp_path):
    p = cli(TINY + ["--steps", "5", "--out", str(tmp_path / "r")])
    assert p.returncode == 0 and not (tmp_path / "r" / "baseline-sgd").exists()
