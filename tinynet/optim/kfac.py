"""KFAC, Kronecker-factored approximate curvature (thesis 6.4.1, after Martens
and Grosse 2015), for the Gauss-Newton matrix or the Fisher.

Index legend: n batch, i / o a layer's fan-in / fan-out; H1 = [H 1] (n, i+1)
its input rows with the bias column LAST (the flat layout is [vec(W); b],
J_theta = (h^T 1) ⊗ J_a, thesis 6.2.1), B (n, o) = (1/n) grad_a l_i. The
layers are the stages with Kronecker rows (tinynet.optim.stats): Linear, and
Conv2d with its im2col patch rows in place of the batch (n*P rows for P
output positions) and KFC's factors (Grosse and Martens 2016: A summed over
positions, G averaged over them); the formulas below hold with n the rows.

Per layer the curvature block is approximated by A ⊗ G (6.4.1, 6.2.2):
  A = E[(h^T 1)^T (h^T 1)] = [E h h^T, E h; E h^T, 1]   ((i+1) x (i+1): W and b
      kept apart as the thesis writes them, the bias in the last row/column)
  G = E[J_a^T D J_a]   (D from the loss: "gn"; sampled targets: "fisher";
      the minibatch's own targets, the empirical Fisher: "empirical", which
      is the thesis's "KFAC for GN" on the cross-entropy, 3.4 and 6.5.3.4;
      see tinynet.optim.stats)
Statistics every `stats_every` updates, kept as running averages (rho);
factored Tikhonov damping (Martens and Grosse, 6.3): A ⊗ G + eps I is
replaced by (A + pi sqrt(eps) I) ⊗ (G + sqrt(eps)/pi I) with
pi = sqrt((tr A / (i+1)) / (tr G / o)); inverses every T updates.

Update, with Gamma = [grad W, grad b] = B^T H1 (o, i+1):
  [dW db] = - lr nu G_d^{-1} Gamma A_d^{-1},  i.e. vec = -lr nu (A_d ⊗ G_d)^{-1} vec(Gamma),
computed per layer by the cheaper of two routes (route="auto"):
  "batch":    (B G_d^{-1})^T (H1 A_d^{-1}), the inverses applied to the batch
              matrices before the GEMM, which then replaces the weight-gradient
              GEMM and accumulates into theta (bk.matmul_acc, BLAS beta = 1):
              2n((i+1)^2 + o^2 + (i+1)o) flops, plus 2n^2(o+i+1) for the
              trust region; cheaper when the batch n is smaller than the layer;
  "gradient": Gamma first (read from the flat gradient that the layer's own
              vjp writes: for a Conv2d its fused kernel, no patch rows), then
              A_d^{-1} Gamma^T G_d^{-1}:
              2(n i o + (i+1)^2 o + (i+1) o^2) flops, and the trust region is
              one dot product; cheaper for narrow layers (the 30-unit code
              layer of the autoencoder, the 100-unit layers of the CIFAR MLP,
              whose 3073 x 3073 A_d would cost 2n(i+1)^2 = 3.8 GFLOP a step on
              the batch route and half that here).
nu = min(1, sqrt(kl_clip / (lr^2 sum_layers vec(Gamma)^T (A_d ⊗ G_d)^{-1} vec(Gamma))))
is the trust region of tinynet.optim.trust_region (Ba, Grosse and Martens's KL
clipping); kl_clip=None gives the plain step of the thesis (nu = 1).

Defaults lr = 1, eps = 1e-3, kl_clip = 1e-2, from benchmarks/chapter6_sweep.py
(MNIST autoencoder, batch 200, stats every 10, inverses every T = 100; loss
after 1500 updates): eps 1e-3 with kl_clip 1e-2 reached 8.1 and eps 1e-2 with
kl_clip 0.1 reached 6.8, against 45 for SGD's best lr. Without the clip,
eps = 0.1 diverged within the first updates, and eps = 1 (stable) damps the
curvature away, so that KFAC trails SGD (46.7). With the clip active (nu
stays between 1e-4 and 2e-2 on that run) the step is normalized,
-sqrt(kl_clip / q) (A_d ⊗ G_d)^{-1} g, and lr no longer matters.

Data-parallel over P ranks (net.comm, tinynet.distributed): the sampled rows
are each rank's shard of one process's draw; the statistics are the ranks'
raw sums S_A, S_B, all-reduced as upper triangles (RunningFactors.update_reduced);
the inverses are computed round-robin and broadcast (_invert); the update is
the all-reduced sum of each rank's share of the preconditioned gradient, with
q from one more scalar (_update_reduced). Routes are chosen for a rank's rows.

Where the statistics live (`factors`): "host" gathers them on the host in
float64 (tinynet.optim.stats: kfac_sums, RunningFactors); "device" keeps them
on the network's backend (tinynet.optim.device_factors: the GEMMs S_A, S_B and
the running averages there, so only the amortized inversion reads them down);
"auto" (the default) is "device" on a GPU in one process, "host" otherwise.
Both compute the same numbers (tests/test_device_factors.py). In one process
the trust region's q and nu stay on the backend too (a float64 vector,
tinynet.kernels.scalars: bk.dot_acc, the kl_clip_factor kernel, bk.axpy_s), so a step
without statistics or inversion copies only its loss back from a GPU
(tests/cuda/test_scalars_cuda.py); metrics kl_nu and kl_q are read from the
device when someone reads them. On the CPU the numbers are bit for bit those
of host floats.
"""
import copy

import numpy as np

from tinynet.distributed.comm import pack_upper, unpack_upper
from tinynet.distributed.sharding import sharded
from tinynet.kernels import scalars as _sc
from tinynet.optim.base import Optimizer, check_range
from tinynet.optim.device_factors import DeviceRunningFactors, device_kfac_sums
from tinynet.optim.stats import (RunningFactors, damped_inverse, forward_backward_bk,
                                 kfac_sums, other_stages_sgd, shares)
from tinynet.optim.trust_region import clip_factor, layer_q


def factored_damping(A, G, eps):
    """(pi sqrt(eps), sqrt(eps)/pi): the damping added to A and to G."""
    pi = np.sqrt((np.trace(A) / A.shape[0]) / max(np.trace(G) / G.shape[0], 1e-300))
    g = np.sqrt(eps)
    return pi * g, g / pi


class KFAC(Optimizer):
    name = "kfac"
    distributable = True     # factor sums, inversions and the update reduced over net.comm (_update_reduced)

    def __init__(self, net, lr=1.0, curvature="gn", eps=1e-3, T=100, stats_every=10, rho=0.95,
                 seed=0, exact=False, kfac_curvature=None, kl_clip=1e-2, route="auto", factors="auto"):
        super().__init__(net, lr)
        if kfac_curvature is not None:          # the CLI's --kfac-curvature
            curvature = kfac_curvature
        if curvature not in ("gn", "fisher", "empirical"):
            raise ValueError(f"KFAC: curvature must be 'gn', 'fisher' or 'empirical', got {curvature!r}")
        if isinstance(kl_clip, str):             # the CLI's --kl-clip VALUE|none
            try:
                kl_clip = None if kl_clip.lower() == "none" else float(kl_clip)
            except ValueError:
                raise ValueError(f"KFAC: kl_clip must be a positive number or 'none', got {kl_clip!r}") from None
        if kl_clip is not None and not kl_clip > 0:
            raise ValueError(f"KFAC: kl_clip must be positive (or None / 'none' for no clipping), got {kl_clip}")
        if route not in ("auto", "batch", "gradient"):
            raise ValueError(f"KFAC: route must be 'auto', 'batch' or 'gradient', got {route!r}")
        if factors not in ("auto", "host", "device"):
            raise ValueError(f"KFAC: factors must be 'auto', 'host' or 'device', got {factors!r}")
        if factors == "device" and net.comm.size > 1:
            raise ValueError("KFAC: factors='device' is single-process; over MPI the factors are "
                             "reduced on the host (use factors='auto' or 'host')")
        check_range("KFAC", "eps", eps, 0, lo_open=True)
        check_range("KFAC", "T", T, 1, integer=True)
        check_range("KFAC", "stats_every", stats_every, 1, integer=True)
        check_range("KFAC", "rho", rho, 0, 1, hi_open=True)       # the running factors' decay
        if kl_clip is not None:
            check_range("KFAC", "kl_clip", kl_clip, 0, lo_open=True)
        self.curvature, self.eps, self.route = curvature, float(eps), route
        self.kl_clip = None if kl_clip is None else float(kl_clip)
        self.T, self.stats_every, self.exact = int(T), int(stats_every), bool(exact)
        self.rng = np.random.default_rng(seed)
        if factors == "auto":
            factors = "device" if self.bk.name != "cpu" and net.comm.size == 1 else "host"
        self.factor_store = factors
        self.running = DeviceRunningFactors(self.bk, rho) if factors == "device" else RunningFactors(rho)
        self.inverses = {}
        self.dampings = {}       # Kronecker index -> (pi sqrt(eps), sqrt(eps)/pi) of the current inverses
        self._grad = self.bk.zeros(net.n_params, net.dtype)
        self._shares = shares(net)
        self._acc = None         # [q, nu] of the trust region (_scalars)

    @property
    def factors(self):
        """{Kronecker index: (A, G)} running averages (host float64)."""
        return self.running.value

    def last_matrices(self):
        """What the last step applied, host float64 (empty before the first step):
        per Kronecker layer, keyed "block{l}/NAME" with l its block index
        (curvature.block_slices): A, G (the running factors), A_damped_inv =
        (A + pi sqrt(eps) I)^{-1}, G_damped_inv = (G + sqrt(eps)/pi I)^{-1},
        damping_A, damping_G; and "kl_nu", the trust-region factor nu."""
        out = {}
        blocks = {i: l for l, (i, _) in enumerate(self.net.slices())}
        for i, (A, G) in self.factors.items():
            key = f"block{blocks[i]}/"
            out[key + "A"], out[key + "G"] = np.array(A, dtype=np.float64), np.array(G, dtype=np.float64)
            if i in self.inverses:
                Ai, Gi = self.inverses[i]
                out[key + "A_damped_inv"] = np.array(self.bk.to_host(Ai), dtype=np.float64)
                out[key + "G_damped_inv"] = np.array(self.bk.to_host(Gi), dtype=np.float64)
            if i in self.dampings:
                out[key + "damping_A"], out[key + "damping_G"] = (np.array(v) for v in self.dampings[i])
        if "kl_nu" in self.metrics:
            out["kl_nu"] = np.array(float(self.metrics["kl_nu"]))
        return out

    def state_dict(self):
        """k, lr, the running factors, the current inverses and the sampling
        generator's state (resume bit-for-bit)."""
        st = super().state_dict()
        st["factors"] = {str(i): [A.copy(), G.copy()] for i, (A, G) in self.factors.items()}
        st["inverses"] = {str(i): [np.array(self.bk.to_host(m)) for m in v] for i, v in self.inverses.items()}
        st["rng"] = copy.deepcopy(self.rng.bit_generator.state)
        return st

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.running.load(state.get("factors", {}))
        self.inverses = {}
        for i, v in state.get("inverses", {}).items():
            v = [np.asarray(m, dtype=self.net.dtype) for m in v]
            if len(v) == 3:       # older checkpoints kept A_d^{-1} split as (top rows, last row)
                v = [np.vstack([v[0], v[1][None, :]]), v[2]]
            self.inverses[int(i)] = tuple(self.bk.asarray(m) for m in v)
        if "rng" in state:
            self.rng.bit_generator.state = state["rng"]

    def _update_reduced(self, loss, routes, ctxs, Bs):
        """The update from P ranks' shards (routes chosen for this rank's rows, so
        the batch route's cost falls with P). A batch-route layer's
        preconditioned gradient D = (1/P) ([H 1] A_d^{-1})^T (B G_d^{-1}) is
        linear in the rows: each rank forms its shard's part and one all-reduce
        ("gradient") sums them, together with the plain gradient slices of the
        other layers and stages and the loss: |theta| + 1 numbers, as for SGD.
        The trust region's q = sum_layers <Gamma, D> then needs, for a batch-route
        layer, <Gamma_r, D> = <B_r / P, [H_r 1] D> from each rank, one more
        all-reduce of one number ("trust-region")."""
        net, bk, comm = self.net, self.bk, self.net.comm
        P = comm.size
        D, rows = {}, {}
        for i, route in routes.items():
            if route == "batch":                     # D written where the layer's gradient would be
                Ainv, Ginv = self.inverses[i]
                a, c = net.offsets[i]
                H1 = bk.append_ones(net.layers[i].kron_rows(ctxs[i]))          # [H 1] (n, i+1)
                HA = bk.matmul(H1, Ainv, tb=True)
                BG = bk.matmul(Bs[i], Ginv, tb=True)
                D[i] = self._grad[a:c].reshape(HA.shape[1], BG.shape[1])    # (i+1, o) = [dW^T; db^T] layout
                bk.matmul(HA, BG, out=D[i], ta=True)
                rows[i] = H1
        # one contiguous vector: D of the batch-route layers, the plain gradient elsewhere
        loss = comm.mean_gradient(bk, self._grad, loss)
        q_all, q_mine = 0.0, 0.0
        for i, route in routes.items():
            a, c = net.offsets[i]
            s = net.layers[i]
            if route == "gradient":
                Ainv, Ginv = self.inverses[i]
                GammaT = self._grad[a:c].reshape(s.fan_in + 1, s.fan_out)
                D[i] = bk.matmul(bk.matmul(Ainv, GammaT), Ginv)
                if self.kl_clip is not None:
                    q_all += bk.dot(GammaT.reshape(-1), D[i].reshape(-1))
            elif self.kl_clip is not None:          # <Gamma_r, D> = <B_r / P, [H_r 1] D>
                q_mine += bk.dot(Bs[i].reshape(-1), bk.matmul(rows[i], D[i]).reshape(-1)) / P
        if self.kl_clip is not None:
            box_q = np.array([q_mine])
            comm.allreduce_sum([box_q], "trust-region")
            q_all += float(box_q[0])
        nu = clip_factor(q_all, self.lr, self.kl_clip)
        for i in routes:
            a, c = net.offsets[i]
            bk.axpy(-self.lr * nu, D[i].reshape(-1), net.theta[a:c])
        self.metrics.update(kl_nu=nu, kl_q=q_all)
        other_stages_sgd(net, self._grad, self.lr)
        self.k += 1
        return loss

    def _invert(self, comm):
        """The damped inverses of every layer's factors. Over P ranks, layer j's
        pair is inverted by rank j mod P (round-robin) and broadcast from it as
        upper triangles ("inverses": sum over layers ((i+1)(i+2) + o(o+1)) / 2
        numbers), so the O(d^3) work of an inversion step is spread."""
        net, bk = self.net, self.bk
        for j, (i, (A, G)) in enumerate(sorted(self.running.upper.items())):  # damped_inverse reads upper triangles
            dA, dG = factored_damping(A, G, self.eps)
            self.dampings[i] = (dA, dG)
            owner = j % comm.size
            if owner == comm.rank:
                pair = [damped_inverse(A, dA, net.dtype), damped_inverse(G, dG, net.dtype)]
            else:
                pair = [np.empty(A.shape, net.dtype), np.empty(G.shape, net.dtype)]
            if comm.size > 1:
                for m, M in enumerate(pair):
                    up = pack_upper(M)
                    comm.bcast(up, owner, "inverses")
                    pair[m] = unpack_upper(up, M.shape[0])
            self.inverses[i] = (bk.asarray(pair[0]), bk.asarray(pair[1]))

    def _route(self, n, i, o):
        """"batch" or "gradient" for a layer (n batch, i inputs, o outputs): the
        route of fewer flops, trust-region products included (module docstring)."""
        if self.route != "auto":
            return self.route
        batch = n * ((i + 1) * i + o * o + (i + 1) * o) + (n * n * (o + i + 1) if self.kl_clip else 0)
        grad = n * i * o + (i + 1) ** 2 * o + (i + 1) * o * o
        return "batch" if batch < grad else "gradient"

    def step(self, X, Y):
        net, bk, comm = self.net, self.bk, self.net.comm
        n = X.shape[0]
        routes = {i: self._route(n * sh, net.layers[i].fan_in, net.layers[i].fan_out)
                  for i, sh in self._shares.items()}
        # gradient-route layers take Gamma^T from the flat gradient their own vjp
        # writes (no rows formed); batch-route layers get their signal rows B
        by_grad = {i for i, r in routes.items() if r == "gradient"}
        loss, ctxs, lctx, Bs = forward_backward_bk(net, X, Y, self._grad, by_grad)
        if self.k % self.stats_every == 0:
            # sampled rows: each rank draws its shard's rows of one process's draw
            if self.factor_store == "device":
                sums = device_kfac_sums(net, ctxs, lctx, self.curvature, self.rng, self.exact)
            else:
                sums = kfac_sums(net, ctxs, lctx, self.curvature, sharded(self.rng, comm), self.exact)
            self.running.update(sums, self._shares, comm)
        if self.k % self.T == 0 or not self.inverses:
            self._invert(comm)
        if comm.size > 1:
            return self._update_reduced(loss, routes, ctxs, Bs)
        # every layer's preconditioned factors first: nu needs q of all layers
        # before any update is applied. q and nu stay in a float64 backend
        # vector acc = [q, nu] (tinynet.kernels.scalars): on the GPU a host float
        # per layer would be a copy back and a wait for the device each time
        acc, clip = self._scalars(), self.kl_clip is not None
        bk.fill(acc[0:1] if clip else acc[1:2], 0.0 if clip else 1.0)   # q from 0, or nu = 1 without the clip
        pending = []
        for i, route in routes.items():
            Ainv, Ginv = self.inverses[i]
            if route == "batch":
                B = Bs[i]
                H = net.layers[i].kron_rows(ctxs[i])                          # (m, i): batch or patch rows
                # the inverses are symmetric, so M = M^T: the transposed-operand
                # products (tb=True) are the same numbers through BLAS's faster
                # packing path (about 10% of a KFAC step on the autoencoder)
                H1 = bk.append_ones(H)                                        # [H 1], (n, i+1)
                HA = bk.matmul(H1, Ainv, tb=True)                             # [H 1] A_d^{-1}, (n, i+1)
                BG = bk.matmul(B, Ginv, tb=True)                              # B G_d^{-1}, (n, o)
                if clip:
                    layer_q(bk, B, BG, H1, HA, acc=acc)
                pending.append((i, HA, BG))
            else:
                a, c = net.offsets[i]
                s = net.layers[i]
                GammaT = self._grad[a:c].reshape(s.fan_in + 1, s.fan_out)     # [grad W^T; grad b^T]
                Dt = bk.matmul(bk.matmul(Ainv, GammaT), Ginv)                 # A_d^{-1} Gamma^T G_d^{-1}
                if clip:
                    bk.dot_acc(GammaT.reshape(-1), Dt.reshape(-1), acc, 0)
                pending.append((i, Dt, None))
        if clip:
            bk.launch(_sc, "kl_clip_factor", 1, acc, float(self.lr), float(self.kl_clip))   # acc[1] = nu
        for i, P, BG in pending:
            a, c = net.offsets[i]                                             # rows: vec(W) col-major, then b
            if BG is None:
                bk.axpy_s(-self.lr, acc, 1, P.reshape(-1), net.theta[a:c])
            else:                                                             # [W^T; b^T] += -lr nu (H1 A_d^-1)^T (B G_d^-1)
                view = net.theta[a:c].reshape(P.shape[1], BG.shape[1])
                bk.matmul_acc_s(P, BG, view, -self.lr, acc, 1, ta=True)
        # read when someone reads them (the trainer, at its evaluations): on the
        # GPU bk.value defers the copy back
        self.metrics.update(kl_nu=bk.value(acc, 1), kl_q=bk.value(acc, 0))
        other_stages_sgd(net, self._grad, self.lr)
        self.k += 1
        return loss

    def _scalars(self):
        """acc = [q, nu] of the trust region, a float64 backend vector made once
        (kl_q = 0 without the clip)."""
        if self._acc is None:
            self._acc = self.bk.asarray(np.array([0.0, 1.0]))
        return self._acc
