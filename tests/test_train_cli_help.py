"""First contact with `tinynet train` (issue 13, parts 2-4): help grouped by
method with each method's defaults, --show-defaults, errors that name real
flags, config.json with the resolved settings and the machine, --resume from
config.json alone, progress with a percentage and ETA, --wall-budget, the
Python API's names and readable result objects."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

import tinynet as tn
from cli.main import main
from faults import TINY, tiny_data, tiny_run
from tinynet.train import CONFIG, TrainConfig, load_checkpoint, train

CHECKPOINT = "checkpoint.npz"


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_help_is_grouped_by_method_with_its_defaults():
    out = invoke("train", "--help").output
    assert "Run options:" in out
    kfac = out[out.index("kfac (KFAC"):out.index("nnn (NNN")]
    assert "--amortize INTEGER" in kfac and "[default: 100]" in kfac and "[default: 0.001]" in kfac
    assert "--momentum" not in kfac and "--curvature CHOICE" not in kfac      # --kfac-curvature instead
    adam = out[out.index("adam (Adam"):out.index("ubp (UBP")]
    assert "--beta1 FLOAT" in adam and "[default: 0.9]" in adam and "[default: 1e-08]" in adam
    assert "added to the root" in adam                   # that method's meaning of --eps
    assert "sgd (SGD; --lr default 0.01)" in out


def test_show_defaults(tmp_path):
    r = invoke("train", "--optimizer", "kfac", "--eps", "0.01", "--show-defaults", "--out", tmp_path / "x")
    assert r.exit_code == 0 and not (tmp_path / "x").exists()
    lines = dict(line.split(None, 1) for line in r.output.splitlines()[1:] if line.startswith("  --"))
    assert lines["--amortize"].strip() == "100" and lines["--eps"].strip() == "0.01  (set)"
    assert lines["--kl-clip"].strip() == "0.01" and lines["--kfac-curvature"].strip() == "gn"


def test_errors_name_real_flags(tmp_path):
    r = invoke(*TINY, "--optimizer", "kfac", "--momentum", "0.9", "--steps", "1", "--out", tmp_path / "x")
    assert r.exit_code == 2 and "does not take --momentum" in r.output
    assert "--amortize" in r.output and "--T" not in r.output and "--exact" not in r.output
    assert "--route" not in r.output and not (tmp_path / "x").exists()


def test_config_records_the_resolved_settings_and_the_machine(tmp_path):
    out = tmp_path / "r"
    assert invoke(*TINY, "--optimizer", "kfac", "--steps", "3", "--eval-every", "3", "--out", out).exit_code == 0
    conf = json.loads((out / CONFIG).read_text())
    hp = conf["hyperparameters"]
    assert hp["lr"] == 1.0 and hp["eps"] == 1e-3 and hp["T"] == 100 and hp["kl_clip"] == 1e-2
    assert hp["stats_every"] == 10 and hp["curvature"] == "gn"
    env = conf["environment"]
    assert env["numpy"] == np.__version__ and env["tinynet"] == tn.__version__ and env["cpu"]
    assert "git_commit" in env and "blas_threads" in env
    assert conf["command"]["settings"]["model"] == "tiny-mlp"


def test_resume_takes_the_settings_from_config(tmp_path):
    """`--out R --resume --steps 20` alone continues an Adam run with its beta1
    and batch size, and ends where a straight 20-step run ends."""
    out = tmp_path / "r"
    args = [*TINY, "--optimizer", "adam", "--beta1", "0.8", "--lr", "0.01", "--eval-every", "5"]
    assert invoke(*args, "--steps", "10", "--out", out).exit_code == 0
    r = invoke("train", "--out", out, "--resume", "--steps", "20", "-q")
    assert r.exit_code == 0, r.output
    conf = json.loads((out / CONFIG).read_text())
    assert conf["meta"]["options"] == {"beta1": 0.8} and conf["trainer"]["batch_size"] == 50
    straight = tmp_path / "s"
    assert invoke(*args, "--steps", "20", "--out", straight).exit_code == 0
    assert np.array_equal(load_checkpoint(str(out / CHECKPOINT))[0], load_checkpoint(str(straight / CHECKPOINT))[0])
    # a setting given on the resume that changes the run is still refused
    r = invoke("train", "--out", out, "--resume", "--steps", "30", "--batch-size", "20", "-q")
    assert r.exit_code == 1 and "batch_size" in r.output


def test_progress_line_has_percentage_eta_and_evaluation_time(capsys):
    data = tiny_data()
    net = tn.models.build_model("tiny-mlp", dtype=np.float64, seed=3)
    opt = tn.optim.build_optimizer("sgd", net, 0.1)
    train(net, opt, data, TrainConfig(steps=60, batch_size=50, eval_every=20, progress=True,
                                      progress_interval=0.0))
    err = capsys.readouterr().err
    line = [seg for seg in err.split("\r") if seg.startswith("step 30/60")][0]
    assert " 50%" in line and "ETA 0:" in line and "eval " in line and "train " in line


def test_wall_budget_stops_the_run():
    data = tiny_data()
    _, _, res = tiny_run(data, None, 10 ** 7, wall_budget=0.5, eval_every=50)
    assert res.stop_reason == "wall" and res.step > 1 and "wall budget" in res.message


def test_python_api_names_and_reprs(tmp_path):
    for name in ("optim", "curvature", "models", "train", "Sequential", "ZCAWhitening"):
        assert hasattr(tn, name), name
    data = tiny_data()
    _, _, res = tiny_run(data, tmp_path / "r", 20)
    text = repr(res)
    assert text.startswith("TrainResult(steps: step 20, training loss") and "history" not in text
    assert len(text) < 300
