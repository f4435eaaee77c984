"""The theory of SG of seed 003 (Bottou, Curtis, Nocedal, "Optimization Methods
for Large-Scale Machine Learning", SIAM Review 2018, section 4), as code:

  tinynet.theory.sg        the bounds of theorems 4.6 and 4.7, the stepsize
                           conditions (4.13)/(4.18), the halving protocol,
                           minibatching, the extrapolation of F*
  tinynet.theory.problems  strongly convex problems whose constants L, c, mu,
                           mu_G, M, M_V, M_G are known exactly (a noisy
                           quadratic; L2-regularized least squares on a finite
                           sum), with exact expected optimality gaps

benchmarks/sg_theory.py measures the bounds against SG runs on both.
"""
from tinynet.theory import problems, sg  # noqa: F401

__all__ = ["sg", "problems"]
