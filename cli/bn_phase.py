"""`tinynet train --bn-epochs K`: seed 003's mitigation for the whitening
reparametrization's fast-moving statistics ("a few epochs of batch
normalization first, then whitening"). The model is first trained for K epochs
with a full batch-norm stage after each hidden layer (SGD at --bn-lr), in the
run folder OUT/bn-phase; BN is then folded into the layers before it
(tinynet.fold: the running statistics carried over into W and b, the function
unchanged in evaluation mode), and the chosen --optimizer (the whitening
reparametrization `reparam` in the slides) continues from those weights in OUT.
The main run's --steps / --epochs / budgets count its own phase only.

Resume: each phase resumes its own folder; a finished BN phase is not trained
again (its checkpoint gives the same folded weights), an interrupted one
continues, and the main run starts once the BN phase is done."""
import dataclasses
import os

import numpy as np

from tinynet.fold import fold_batchnorm
from tinynet.models import build_model
from tinynet.optim import build_optimizer
from tinynet.train import train as run_training
from tinynet.train.rundir import RUN_FILES

SUBDIR = "bn-phase"


class BNPhaseStopped(Exception):
    """The BN phase ended before its epochs (interrupted or diverged): `result` says how."""

    def __init__(self, result):
        super().__init__(result.message)
        self.result = result


def check_bn_phase(kw, given, out):
    """Refuse a bad --bn-epochs / --bn-lr setting, or a run folder that would be
    overwritten, before anything is trained (the trainer's own check of a held
    folder, rundir.RUN_FILES, would come only after the BN phase had run)."""
    if not kw["bn_epochs"] > 0:
        raise ValueError(f"--bn-epochs must be > 0 (epochs of the BN phase), got {kw['bn_epochs']:g}")
    if kw["bn_lr"] is not None and not kw["bn_lr"] > 0:
        raise ValueError(f"--bn-lr must be > 0, got {kw['bn_lr']:g}")
    if given.get("batchnorm"):
        raise ValueError("--bn-epochs trains its own batch-norm phase and folds it away: leave --batchnorm out")
    if kw["distributed"] != "none":
        raise ValueError("--bn-epochs runs in one process: leave it out under --distributed mpi")
    phase = os.path.join(out, SUBDIR)
    if not kw["resume"] and not kw["overwrite"]:
        for folder in (out, phase):
            held = [f for f in RUN_FILES if os.path.exists(os.path.join(folder, f))]
            if held:
                raise ValueError(f"run directory {folder} already holds a run ({', '.join(held)}): pass --resume "
                                 f"to continue it or --overwrite to replace it, or choose another --out")


def run_bn_phase(kw, given, cfg, data, echo):
    """Train the BN phase (or take its finished run), fold it; returns
    (the folded network, the phase's TrainResult)."""
    phase = os.path.join(cfg.out, SUBDIR)
    net = build_model(kw["model"], dtype=np.dtype(kw["dtype"]).type, seed=kw["seed"], device=kw["device"],
                      alpha=kw["init_scale"], **{**given, "batchnorm": "full"})
    opt = build_optimizer("sgd", net, kw["bn_lr"], defaults={"seed": kw["seed"]})
    resume = cfg.resume and os.path.exists(os.path.join(phase, "config.json"))
    meta = {**cfg.meta, "optimizer": "sgd", "lr": opt.lr, "options": {}, "batchnorm": "full",
            "bn_phase_of": cfg.meta.get("optimizer")}
    pcfg = dataclasses.replace(cfg, steps=None, epochs=float(kw["bn_epochs"]), time_budget=None, wall_budget=None,
                               out=phase, resume=resume, overwrite=cfg.overwrite and not resume,
                               from_last_good=False, meta=meta)
    echo(f"BN phase: {kw['bn_epochs']:g} epoch(s) of SGD lr={opt.lr:g} with batch normalization, run directory "
         f"{phase}; then BN folded into the layers and {cfg.meta.get('optimizer')} from there", err=True)
    res = run_training(net, opt, data, pcfg)
    if res.stop_reason != "epochs":
        raise BNPhaseStopped(res)
    folded = fold_batchnorm(net)
    echo(f"BN phase done: step {res.step}, training loss {res.train_loss:.6g}; folded into "
         f"{folded.n_params:,} parameters", err=True)
    return folded, res
