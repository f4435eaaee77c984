"""`tinynet train --baseline sgd`: after the run, the same model, initialization,
data order and number of updates with plain SGD at its default lr, written to
OUT/baseline-sgd, and a per-update comparison of the two (issue 13: the main
command, `tinynet train --optimizer ubp`, shows what UBP does against SGD over
the same updates, the comparison of the thesis's figure 5.1)."""
import dataclasses
import os

import numpy as np

from tinynet.models import build_model
from tinynet.optim import build_optimizer
from tinynet.train import train as run_training

BASELINES = ("none", "sgd")
# a model's known plateau (tinynet.train's summary context): both runs near it learned nothing yet
PLATEAU = {"mnist-autoencoder": 52.8}


def run_baseline(kind, kw, given, cfg, data, result, echo):
    """Run the baseline to result.step updates; print and return the comparison
    rows [(step, method loss, baseline loss)] at the evaluations both made."""
    net = build_model(kw["model"], dtype=np.dtype(kw["dtype"]).type, seed=kw["seed"], device=kw["device"],
                      alpha=kw["init_scale"], **given)
    opt = build_optimizer(kind, net, None, defaults={"seed": kw["seed"]})
    out = os.path.join(cfg.out, f"baseline-{kind}")
    resume = cfg.resume and os.path.exists(os.path.join(out, "config.json"))
    meta = {**cfg.meta, "optimizer": kind, "lr": opt.lr, "options": {}, "baseline_of": cfg.meta.get("optimizer")}
    bcfg = dataclasses.replace(cfg, steps=result.step, epochs=None, time_budget=None, wall_budget=None, out=out,
                               resume=resume, overwrite=cfg.overwrite and not resume, from_last_good=False,
                               progress=False, meta=meta, command=None)
    echo(f"baseline: {kind} lr={opt.lr:g} for the same {result.step} updates (same initialization and "
         f"minibatches), run directory {out}", err=True)
    base = run_training(net, opt, data, bcfg)
    mine = {r["step"]: r["train_loss"] for r in result.history}
    rows = [(r["step"], mine[r["step"]], r["train_loss"]) for r in base.history if r["step"] in mine]
    name = cfg.meta.get("optimizer", "method")
    echo(f"{'update':>8}  {name:>12}  {kind:>12}  {name}/{kind}", err=True)
    for step, a, b in rows:
        echo(f"{step:>8}  {a:>12.6g}  {b:>12.6g}  {a / b:>8.4f}", err=True)
    if rows:
        step, a, b = rows[-1]
        verdict = (f"after {step} updates {name} {'lower' if a < b else 'higher'} than {kind} by "
                   f"{abs(1 - a / b) * 100:.2g}% ({a:.6g} against {b:.6g})")
        plateau = PLATEAU.get(kw["model"])
        if plateau is not None and min(a, b) > 0.98 * plateau:
            verdict += (f"; both are still on the ~{plateau} plateau, so these {step} updates cannot tell "
                        f"them apart")
        echo(verdict)
    echo(f"  draw both: tinynet plot {cfg.out} {out}", err=True)
    return rows
