"""Seed 001's criterion for a preconditioner: the step should point at the
minimizer. Alignment of a direction, a teacher-student task where the
minimizer is known, and the alignment of the SGD, Gauss-Newton,
natural-gradient and Hessian directions along a training run.

Index legend: p parameters; x (p,) the student's flat parameters, x_star (p,)
the teacher's (a global minimizer: the student reproduces the teacher and
reaches zero loss there); d (p,) a step direction; n examples, d_in inputs.

  alignment(d, x, x_star) = d^T (x_star - x) / (||d|| ||x_star - x||)

Directions compared (all -M^{-1} g, g the full-batch gradient of the task):
  sgd      M = I
  gn       M = G + eps I                     (thesis 3.1.3-3.1.4)
  natural  M = (I + (lr/eps_nat) F) / lr     (thesis 3.2.2, exact Fisher)
  hessian  M = H + eps I                     (seed 001 / thesis 3.1.3; the
           damping fallback of newton_direction when indefinite)
Near x_star the exact Newton direction is x_star - x up to O(||x - x_star||^2),
so its alignment tends to 1.
"""
import numpy as np

from tinynet.losses import MSELoss
from tinynet.models import mlp
from tinynet.optim.newton import dense_curvature, newton_direction

METHODS = ("sgd", "gn", "natural", "hessian")


def alignment(direction, x, x_star):
    """Cosine of the angle between `direction` and x_star - x (seed 001);
    nan when either vector is zero."""
    d, x, x_star = (np.asarray(v, dtype=np.float64) for v in (direction, x, x_star))
    if not (d.ndim == 1 and d.shape == x.shape == x_star.shape):
        raise ValueError(f"alignment: direction, x and x_star must be vectors of one length, "
                         f"got {d.shape}, {x.shape}, {x_star.shape}")
    e = x_star - x
    nd, ne = np.linalg.norm(d), np.linalg.norm(e)
    if nd == 0 or ne == 0:
        return float("nan")
    return float(d @ e / (nd * ne))


class TeacherStudent:
    """A student network fitting a teacher of the same architecture on random
    Gaussian inputs, squared error. Attributes: teacher, student (Sequential),
    X (n, d_in), Y = teacher(X) (n, k), x_star = teacher's flat parameters.

    `TeacherStudent(sizes=(4, 6, 2), activation="tanh", n=128, seed=0,
    perturb=None, dtype=np.float64)`: the student starts from its own random
    initialization (seed + 1), or, with perturb=r, from x_star + r * z with z
    standard normal (a point near the minimizer)."""

    def __init__(self, sizes=(4, 6, 2), activation="tanh", n=128, seed=0, perturb=None,
                 dtype=np.float64):
        sizes = tuple(int(s) for s in sizes)
        if len(sizes) < 2 or n < 1:
            raise ValueError(f"TeacherStudent: need at least 2 layer sizes and n >= 1, got {sizes}, n={n}")
        rng = np.random.default_rng(seed)
        self.teacher = mlp(sizes, activation, MSELoss(), dtype=dtype, seed=seed)
        self.student = mlp(sizes, activation, MSELoss(), dtype=dtype, seed=seed + 1)
        self.x_star = self.teacher.get_flat()
        # biases of the teacher are non-zero so that no parameter sits at a symmetric point
        self.x_star = self.x_star + 0.1 * rng.standard_normal(self.x_star.shape).astype(dtype)
        self.teacher.set_flat(self.x_star)
        if perturb is not None:
            self.student.set_flat(self.x_star + perturb * rng.standard_normal(self.x_star.shape))
        self.X = rng.standard_normal((n, sizes[0])).astype(dtype)
        self.Y = self.teacher.forward(self.X)

    def alignment(self, direction):
        return alignment(direction, self.student.get_flat(), self.x_star)


def directions(net, X, Y, methods=METHODS, eps=1e-4, nat_lr=1.0, nat_eps=1e-3):
    """name -> direction (host, p) at the network's current parameters, each
    computed with the shared `newton_direction` (see the module docstring)."""
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"directions: unknown methods {bad}; choose from {', '.join(METHODS)}")
    g = np.asarray(net.gradient(X, Y), dtype=np.float64)
    out = {}
    for m in methods:
        if m == "sgd":
            out[m] = -g
        elif m == "gn":
            out[m] = newton_direction(g, dense_curvature(net, X, Y, "gn"), eps)[0]
        elif m == "hessian":
            out[m] = newton_direction(g, dense_curvature(net, X, Y, "hessian"), eps)[0]
        else:
            F = dense_curvature(net, X, Y, "fisher", "exact")
            out[m] = nat_lr * newton_direction(g, (nat_lr / nat_eps) * np.asarray(F), 1.0)[0]
    return out


def alignment_along_run(task, optimizer, steps, methods=METHODS, eps=1e-4, nat_lr=1.0, nat_eps=1e-3,
                        min_loss=None):
    """Train task.student with `optimizer` (built on it) for `steps` full-batch
    updates; before each update record the loss, ||x - x_star|| and the
    alignment of each method's direction. Stops early once the loss is below
    `min_loss` (there the gradient is round-off and so are the cosines).
    Returns a dict of lists."""
    if optimizer.net is not task.student:
        raise ValueError("alignment_along_run: the optimizer must be built on task.student")
    rec = {"loss": [], "distance": [], **{m: [] for m in methods}}
    for _ in range(int(steps)):
        if min_loss is not None and rec["loss"] and rec["loss"][-1] < min_loss:
            break
        x = task.student.get_flat()
        dirs = directions(task.student, task.X, task.Y, methods, eps, nat_lr, nat_eps)
        for m in methods:
            rec[m].append(alignment(dirs[m], x, task.x_star))
        rec["distance"].append(float(np.linalg.norm(x - task.x_star)))
        rec["loss"].append(float(optimizer.step(task.X, task.Y)))
    return rec
