"""Seed 001's alignment criterion and the teacher-student task: the cosine
against its formula, the task's minimizer, and the Newton direction pointing
at the minimizer near it (the Hessian check uses torch autograd)."""
import numpy as np
import pytest
import torch

from tinynet.alignment import METHODS, TeacherStudent, alignment, alignment_along_run, directions
from tinynet.optim import SGD
from torch_ref import theta_of, torch_loss_fn


def test_alignment_is_cosine_to_minimizer():
    d, x, xs = np.array([1.0, 0.0]), np.array([1.0, 1.0]), np.array([2.0, 2.0])
    assert alignment(d, x, xs) == pytest.approx(1 / np.sqrt(2), rel=1e-14)
    assert alignment(-d, x, xs) == pytest.approx(-1 / np.sqrt(2), rel=1e-14)
    assert alignment(xs - x, x, xs) == pytest.approx(1.0, rel=1e-14)
    assert np.isnan(alignment(np.zeros(2), x, xs)) and np.isnan(alignment(d, x, x))


def test_alignment_checks_shapes():
    with pytest.raises(ValueError, match="vectors of one length"):
        alignment(np.ones(3), np.ones(2), np.ones(2))


def test_teacher_is_a_zero_loss_minimizer():
    task = TeacherStudent(sizes=(3, 5, 2), n=40, seed=2)
    task.student.set_flat(task.x_star)
    assert task.student.loss(task.X, task.Y) == 0.0
    np.testing.assert_allclose(task.student.gradient(task.X, task.Y), 0.0, atol=1e-15)
    far = TeacherStudent(sizes=(3, 5, 2), n=40, seed=2)
    assert far.student.loss(far.X, far.Y) > 1e-3                # the student starts elsewhere


@pytest.mark.parametrize("perturb, tol", [(1e-4, 1e-2), (1e-5, 1e-4)], ids=["r1e-4", "r1e-5"])
def test_newton_direction_points_at_minimizer_nearby(perturb, tol):
    """1 - alignment shrinks like ||x - x*||^2 (it is 1.8e-3 and 2e-5 here);
    the Hessian's smallest eigenvalue is ~1e-3, so at ||x - x*|| ~ 1e-3 the
    residual term of H already bends the Newton direction (0.90)."""
    task = TeacherStudent(sizes=(3, 5, 2), n=64, seed=0, perturb=perturb)
    dirs = directions(task.student, task.X, task.Y, methods=("sgd", "hessian", "gn"), eps=0.0)
    # exact Newton: -H^{-1} g with H from torch autograd, independent of tinynet.curvature
    f = torch_loss_fn(task.student, task.X, task.Y)
    th = theta_of(task.student)
    H = torch.func.hessian(f)(th).numpy()
    g = torch.func.grad(f)(th).numpy()
    newton = -np.linalg.solve(H, g)
    np.testing.assert_allclose(dirs["hessian"], newton, rtol=1e-8, atol=1e-12)
    a = task.alignment(newton)
    assert a > 1 - tol
    assert task.alignment(dirs["gn"]) > 1 - tol                  # GN = H at a zero-residual minimum
    assert task.alignment(dirs["sgd"]) < a                        # the gradient is worse aligned


def test_alignment_along_run_records_every_method():
    task = TeacherStudent(sizes=(3, 4, 2), n=32, seed=1)
    rec = alignment_along_run(task, SGD(task.student, 0.05), steps=3)
    assert set(rec) == {"loss", "distance", *METHODS}
    assert all(len(v) == 3 for v in rec.values())
    assert all(-1 <= c <= 1 for m in METHODS for c in rec[m])
    assert rec["loss"][2] < rec["loss"][0]
    with pytest.raises(ValueError, match="task.student"):
        alignment_along_run(task, SGD(TeacherStudent(sizes=(3, 4, 2)).student, 0.1), steps=1)


def test_alignment_along_run_stops_below_min_loss():
    from tinynet.optim import GaussNewton
    task = TeacherStudent(sizes=(3, 4, 2), n=64, seed=1, perturb=0.05)
    rec = alignment_along_run(task, GaussNewton(task.student, 1.0, eps=1e-6), steps=50, min_loss=1e-20)
    assert len(rec["loss"]) < 50 and rec["loss"][-1] < 1e-20 <= min(rec["loss"][:-1])
