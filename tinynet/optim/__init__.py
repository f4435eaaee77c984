"""Optimizers, one file per method, all with `step(X, Y) -> loss`.
Registry: `OPTIMIZERS` (CLI name -> class). Later methods add their entry here."""
from tinynet.optim.acp import ACP
from tinynet.optim.adam import Adam
from tinynet.optim.base import Optimizer
from tinynet.optim.centered import Centered
from tinynet.optim.hessian_precond import HessianPreconditioner
from tinynet.optim.hf import HessianFree
from tinynet.optim.kfac import KFAC
from tinynet.optim.natural import NaturalGradient
from tinynet.optim.newton import GaussNewton, Newton
from tinynet.optim.nnn import NNN
from tinynet.optim.rmsprop import RMSProp
from tinynet.optim.schedules import SCHEDULES, make_schedule
from tinynet.optim.sgd import SGD
from tinynet.optim.twist import NaturalTwist
from tinynet.optim.reparam import QuasiDiagonal
from tinynet.optim.ubp import UBP

OPTIMIZERS = {"sgd": SGD, "rmsprop": RMSProp, "adam": Adam, "ubp": UBP,
              # Newton family (issue 5)
              "newton": Newton, "gn": GaussNewton, "natural": NaturalGradient, "hf": HessianFree,
              "hessian-precond": HessianPreconditioner,
              # Kronecker / covariance preconditioners (issue 6)
              "centered": Centered, "acp": ACP, "kfac": KFAC, "nnn": NNN,
              # seed 003 (issue 15)
              "twist": NaturalTwist, "reparam": QuasiDiagonal}

__all__ = ["Optimizer", "NaturalTwist", "QuasiDiagonal", "Centered", "ACP", "KFAC", "NNN", "Newton", "GaussNewton", "NaturalGradient", "HessianFree", "HessianPreconditioner",
           "UBP", "SGD", "RMSProp", "Adam", "OPTIMIZERS", "SCHEDULES", "make_schedule",
           "DEFAULT_LR", "build_optimizer", "hyperparameters"]

# lr when none is given (the CLI's --lr); a class not listed here uses the
# default of its own __init__ (Adam, RMSProp, the Newton family), if it has one.
# sgd 0.01: on the MNIST autoencoder (batch 200) 0.003-0.1 all leave the
# initial loss (~193) for the ~53 plateau within 50 steps; 0.01 was lowest at 150.
# ubp 0.01: same setting, real MNIST, 300 steps: 193 -> 52.6 (as SGD 0.01); at
# 0.03 the top layer's correction grows (ratio 0.2 -> 0.6) and the loss climbs
# back to ~59, at 0.1 it stalls at ~87, at 0.3 it diverges (thesis 5.5).
DEFAULT_LR = {"sgd": 0.01, "ubp": 0.01}


def build_optimizer(name, net, lr=None, *, defaults=None, **options):
    """`OPTIMIZERS[name](net, lr, **options)`, checked.

    options: the ones the user set (None values count as unset); each must be
    a parameter of the class's __init__, else ValueError naming the option and
    listing the ones it takes. `schedule` ("constant" / "inverse" / "halving")
    with `schedule_gamma` / `schedule_period` becomes a schedule object
    (make_schedule) for a class that takes `schedule`. defaults: passed only
    where accepted (e.g. the run's seed). lr None: DEFAULT_LR or the class's own.
    """
    import inspect
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; available: {', '.join(sorted(OPTIMIZERS))}")
    cls = OPTIMIZERS[name]
    params = inspect.signature(cls.__init__).parameters
    takes = [p for p in params if p not in ("self", "net", "lr")
             and params[p].kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    options = {k: v for k, v in options.items() if v is not None}
    if lr is None:
        lr = DEFAULT_LR.get(name)
        if lr is None and "lr" in params and params["lr"].default is not inspect.Parameter.empty:
            lr = params["lr"].default
        if lr is None:
            raise ValueError(f"optimizer {name!r} has no default learning rate: give lr (--lr)")
    sched = {k: options.pop(k) for k in ("schedule", "schedule_gamma", "schedule_period") if k in options}
    if sched:
        kind = sched.get("schedule", "constant")
        if "schedule_gamma" in sched and kind != "inverse":
            raise ValueError("schedule_gamma (--schedule-gamma) applies to the 'inverse' schedule only")
        if "schedule_period" in sched and kind != "halving":
            raise ValueError("schedule_period (--schedule-period) applies to the 'halving' schedule only")
        options["schedule"] = make_schedule(kind, lr, gamma=sched.get("schedule_gamma"),
                                            period=sched.get("schedule_period"))
    unknown = [k for k in options if k not in takes]
    if unknown:
        raise ValueError(f"optimizer {name!r} ({cls.__name__}) does not take {', '.join(unknown)}; "
                         f"its parameters: {', '.join(takes) or 'none'}")
    for k, v in (defaults or {}).items():
        if k in takes and k not in options:
            options[k] = v
    opt = cls(net, lr=lr, **options)
    opt.hyperparameters = hyperparameters(name, lr, {**options, **sched})
    return opt


def hyperparameters(name, lr=None, options=None):
    """Every parameter of OPTIMIZERS[name].__init__ with the value a run uses:
    the given `options` (python names) over the class's defaults, lr resolved
    as build_optimizer does; JSON-safe (objects by their repr). What config.json
    records as "hyperparameters" and `tinynet train --show-defaults` prints."""
    import inspect
    cls = OPTIMIZERS[name]
    params = inspect.signature(cls.__init__).parameters
    if lr is None:
        lr = DEFAULT_LR.get(name, params["lr"].default if "lr" in params else None)
        if lr is inspect.Parameter.empty:
            lr = None
    out = {"lr": lr}
    for p, spec in params.items():
        if p in ("self", "net", "lr") or spec.kind in (inspect.Parameter.VAR_POSITIONAL,
                                                         inspect.Parameter.VAR_KEYWORD):
            continue
        v = (options or {}).get(p, spec.default)
        out[p] = v if v is None or isinstance(v, (bool, int, float, str)) else repr(v)
    for k, v in (options or {}).items():          # CLI-only names such as schedule_gamma
        if k not in out:
            out[k] = v if v is None or isinstance(v, (bool, int, float, str)) else repr(v)
    return out
