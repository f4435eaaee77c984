"""When a run has diverged: checks that work for bounded and unbounded losses.

A factor on the initial loss alone sees only unbounded losses blowing up. The
MNIST autoencoder's sigmoid + squared error is bounded: SGD at lr 1000 drives
every sigmoid into saturation within 25 steps, its gradient underflows to 0,
and the loss freezes at 93.2 (below the initial 193) with the parameter norm
1,458x its initial value; KFAC without its KL clip at lr 100 ends near 2x the
initial loss. So a run is declared diverged when any of these is seen:

every step (the minibatch loss is there anyway):
  - the minibatch loss is not finite;
  - the minibatch loss exceeds `factor` x the initial loss (unbounded losses);
at each evaluation (a few reductions of theta):
  - a parameter is not finite;
  - the parameter norm exceeds `norm_factor` x max(1, its initial value);
  - the training loss stopped moving (relative change <= 1e-7 since the last
    evaluation) while the parameter norm grew past `stall_norm_factor` (10) x
    its initial value: saturated units (on a 49-32-8-32-49 sigmoid
    autoencoder, SGD at lr 100 freezes at norm 41x, lr 10 trains at 4.4x);
  - the parameters stopped moving (bitwise: norm, sum and training loss equal
    to the previous evaluation's) while the loss is above the best so far:
    a dead network (a converged one sits at its best);
  - the training loss regressed past both the initial loss and 1.1 x the best
    evaluation so far, `patience` evaluations in a row (noise does not persist).

An evaluation that passes every check is "good": its checkpoint becomes
last_good.npz, the state a diverged run falls back to.
"""
import math

import numpy as np


class DivergenceMonitor:
    def __init__(self, factor=100.0, norm_factor=100.0, patience=2, stall_norm_factor=10.0, state=None):
        self.factor, self.norm_factor, self.patience = factor, norm_factor, patience
        self.stall_norm_factor = min(stall_norm_factor, norm_factor)
        # what a resume needs (saved in the trainer state of each checkpoint)
        self.state = dict(initial_loss=None, initial_norm=None, best_eval=None, regressions=0,
                          last_fingerprint=None)
        if state:
            self.state.update(state)

    def on_step(self, loss):
        """None, or what was seen that shows divergence."""
        s = self.state
        if not math.isfinite(loss):
            return f"the minibatch loss is not finite ({loss})"
        if s["initial_loss"] is None:
            s["initial_loss"] = loss
        if s["initial_loss"] > 0 and loss > self.factor * s["initial_loss"]:
            return (f"the minibatch loss {loss:.6g} exceeds {self.factor:g} x the initial loss "
                    f"{s['initial_loss']:.6g}")
        return None

    def on_eval(self, theta, train_loss):
        """(good, seen): `seen` is None or what shows divergence; `good` says
        whether this evaluation's state may become the last good checkpoint.
        theta: host parameter vector."""
        s = self.state
        t64 = theta.astype(np.float64, copy=False)
        with np.errstate(over="ignore", invalid="ignore"):
            total = float(np.sum(t64))
        bad = 0 if math.isfinite(total) else int(np.count_nonzero(~np.isfinite(theta)))
        if bad:
            return False, f"{bad} of the {theta.size} parameters are not finite"
        if not math.isfinite(train_loss):
            return False, f"the training loss is not finite ({train_loss})"
        with np.errstate(over="ignore"):
            norm = float(np.sqrt(np.dot(t64, t64)))       # inf for finite but huge parameters
        if s["initial_norm"] is None:
            s["initial_norm"] = norm
        if s["initial_loss"] is None:
            s["initial_loss"] = train_loss
        ref = max(1.0, s["initial_norm"])
        if norm > self.norm_factor * ref:
            return False, (f"the parameter norm {norm:.4g} exceeds {self.norm_factor:g} x its initial "
                           f"value {s['initial_norm']:.4g} (saturated or exploding units)")
        best = s["best_eval"]
        fingerprint = [norm, total, train_loss]
        previous = s["last_fingerprint"]
        frozen = previous == fingerprint
        s["last_fingerprint"] = fingerprint
        if previous is not None and abs(train_loss - previous[2]) <= 1e-7 * abs(train_loss) \
                and norm > self.stall_norm_factor * ref:
            return False, (f"the training loss stopped moving ({previous[2]:.9g} -> {train_loss:.9g}) while "
                           f"the parameter norm grew to {norm / s['initial_norm']:.3g} x its initial value "
                           f"(saturated units, zero gradient)")
        if frozen and best is not None and train_loss > best * (1 + 1e-3):
            return False, (f"the parameters stopped moving (bitwise) at training loss {train_loss:.6g}, "
                           f"above the best {best:.6g}: the units are saturated, the gradient is zero")
        if best is not None and train_loss > s["initial_loss"] and train_loss > 1.1 * best:
            s["regressions"] += 1
            if s["regressions"] >= self.patience:
                return False, (f"the training loss {train_loss:.6g} is above the initial loss "
                               f"{s['initial_loss']:.6g} and the best {best:.6g}, "
                               f"{s['regressions']} evaluations in a row")
            return False, None
        s["regressions"] = 0
        s["best_eval"] = train_loss if best is None else min(best, train_loss)
        return True, None
