"""Sequential: the pipeline z_l = f_l(z_{l-1}; x_l) of seed 001 with the loss as
its last, parameter-free stage.

The parameters of all stages live in one flat backend vector `theta`
(DESIGN.md layout: stages in pipeline order, per Linear vec(W) column-major
then b); each stage holds views of its slice, and the gradient is written by
the stages straight into the matching slices of one flat gradient vector.
"""
import numpy as np

from tinynet.backend import get_backend
from tinynet.distributed.comm import LOCAL
from tinynet.layers.activation import Activation
from tinynet.layers.base import Stage
from tinynet.losses.base import Loss


class Sequential:
    """`Sequential(layers, loss, dtype=np.float32, seed=0, device="cpu",
    init="auto", alpha=None, input_shape=None)`.

    input_shape: the shape of one input example, (d,) or (C, H, W) for images
    (rows are the C-major flattening, PyTorch's x.reshape(n, -1) of NCHW).
    Default: (n_in,) of the first stage that declares n_in (a Linear layer).
    Each stage maps its input shape to an output shape (`shapes`); a stage
    that cannot take the shape it receives is a ValueError at construction.

    init: "auto" (He before ReLU, Glorot otherwise), "glorot" or "he"; alpha
    scales the initial variance (thesis 2.4.2).
    """

    def __init__(self, layers, loss, dtype=np.float32, seed=0, device="cpu",
                 init="auto", alpha=None, input_shape=None):
        self.layers = list(layers)
        if not self.layers:
            raise ValueError("Sequential needs at least one layer")
        for s in self.layers:
            if not isinstance(s, Stage) or isinstance(s, Loss):
                raise TypeError(f"{s!r} is not a stage (a loss goes in the `loss` argument)")
        if not isinstance(loss, Loss):
            raise TypeError(f"loss must be a tinynet loss stage, got {loss!r}")
        self.loss_stage = loss
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")
        self.bk = get_backend(device)
        self.device = self.bk.name
        self.seed = seed

        self.offsets = []   # (start, stop) of each stage's slice of theta
        pos = 0
        for s in self.layers:
            self.offsets.append((pos, pos + s.n_params))
            pos += s.n_params
        self.n_params = pos
        self.input_shape = self._input_shape(input_shape)
        self.shapes = [self.input_shape]      # shapes[l]: one example entering stage l; shapes[-1]: the output
        for i, s in enumerate(self.layers):
            try:
                self.shapes.append(tuple(s.set_input_shape(self.shapes[-1])))
            except ValueError as e:
                raise ValueError(f"Sequential: stage {i} ({s!r}) cannot take its input of shape "
                                 f"{self.shapes[-1]}: {e}") from None
        self.sizes = [int(np.prod(sh)) for sh in self.shapes]    # features per row at each stage boundary
        self.n_in, self.n_out = self.sizes[0], self.sizes[-1]

        rng = np.random.default_rng(seed)
        host = np.empty(self.n_params, dtype=self.dtype)
        for i, s in enumerate(self.layers):
            a, b = self.offsets[i]
            nxt = next((t.kind for t in self.layers[i + 1:] if isinstance(t, Activation)), None)
            host[a:b] = s.init_params(rng, self.dtype, next_activation=nxt, alpha=alpha, scheme=init)
        self.theta = self.bk.asarray(host, self.dtype)
        self._bind()
        self._grad = None
        self.comm = LOCAL             # one process (the property below)

    def _input_shape(self, input_shape):
        if input_shape is not None:
            shape = (int(input_shape),) if np.isscalar(input_shape) else tuple(int(d) for d in input_shape)
            if not shape or min(shape) < 1:
                raise ValueError(f"Sequential: input_shape must be positive sizes, e.g. (3, 32, 32), got {input_shape!r}")
            return shape
        for s in self.layers:
            if getattr(s, "needs_input_shape", False):
                raise ValueError(f"Sequential: {s!r} needs the image size: give input_shape=(C, H, W)")
            if hasattr(s, "n_in"):
                return (s.n_in,)
        raise ValueError("Sequential: no stage declares its input size; give input_shape=(d,) or (C, H, W)")

    def _bind(self):
        self.loss_stage.bind(self.bk, None)
        for s, (a, b) in zip(self.layers, self.offsets):
            s.bind(self.bk, self.theta[a:b])

    @property
    def comm(self):
        """The ranks this network trains on (tinynet.distributed): the gradient of
        loss_and_gradient is the mean over their shards, and the stages that
        reduce batch statistics (BatchNorm) see it too. LOCAL in one process."""
        return self._comm

    @comm.setter
    def comm(self, comm):
        self._comm = comm
        for s in self.layers:
            if s.reduces_batch:
                s.comm = comm

    def __repr__(self):
        body = ", ".join(repr(s) for s in self.layers)
        return f"Sequential([{body}], {self.loss_stage!r}, dtype={self.dtype.name}, device={self.device!r})"

    # -- parameters -------------------------------------------------------------
    def get_flat(self):
        """Host copy of the flat parameter vector."""
        return np.array(self.bk.to_host(self.theta), dtype=self.dtype, copy=True)

    def set_flat(self, x):
        x = np.asarray(x)
        if x.shape != (self.n_params,):
            raise ValueError(f"set_flat: expected a vector of {self.n_params} parameters, got shape {x.shape}")
        self.bk.copy_into(self.theta, self.bk.asarray(x, self.dtype))

    def buffers(self):
        """{"STAGE_INDEX/NAME": value}: every stage's non-parameter state (Stage.buffers)."""
        return {f"{i}/{k}": v for i, s in enumerate(self.layers) for k, v in s.buffers().items()}

    def load_buffers(self, state):
        for i, s in enumerate(self.layers):
            mine = {k.split("/", 1)[1]: v for k, v in state.items() if k.split("/", 1)[0] == str(i)}
            if s.buffer_names:
                missing = [k for k in s.buffer_names if k not in mine]
                if missing:
                    raise ValueError(f"stage {i} ({s!r}): no saved {', '.join(missing)}")
                s.load_buffers(mine)

    def slices(self):
        """(stage index, slice) for each stage with parameters."""
        return [(i, slice(a, b)) for i, (a, b) in enumerate(self.offsets) if b > a]

    def train(self, mode=True):
        for s in self.layers:
            s.training = mode
        return self

    # -- inputs -------------------------------------------------------------------
    def as_input(self, X):
        """Host or backend batch -> backend (n, n_in) array of the net's dtype."""
        if self.bk.name == "cpu" or isinstance(X, np.ndarray):
            X = np.asarray(X)
            if X.ndim != 2 or X.shape[1] != self.n_in:
                raise ValueError(f"inputs must have shape (n, {self.n_in}) (examples of shape "
                                 f"{self.input_shape}, flattened C-major), got {X.shape}")
            if X.shape[0] == 0:
                raise ValueError("the batch is empty (0 rows): give at least one example")
            _check_finite(X, "inputs")
            return self.bk.asarray(X, self.dtype)
        return X

    def as_target(self, Y):
        if self.bk.name == "cpu" or isinstance(Y, np.ndarray):
            Y = np.asarray(Y) if not hasattr(Y, "__cuda_array_interface__") else Y
            if isinstance(Y, np.ndarray):
                _check_finite(Y, "targets")
            return self.bk.asarray(self.loss_stage.prepare_targets(Y, self.n_out, self.dtype))
        return Y

    # -- passes -----------------------------------------------------------------------
    def forward_ctx(self, X):
        """Forward through the stages (not the loss): (output, [ctx per stage])."""
        z = self.as_input(X)
        ctxs = []
        for s in self.layers:
            z, ctx = s.forward(z)
            ctxs.append(ctx)
        return z, ctxs

    def forward(self, X):
        """Network output (before the loss), host array (n, n_out)."""
        return self.bk.to_host(self.forward_ctx(X)[0])

    def loss(self, X, Y):
        F, _ = self.forward_ctx(X)
        value, _ = self.loss_stage.forward(F, self.as_target(Y))
        return value

    def backward(self, ctxs, b, grad, sgd_alpha=None):
        """Reverse pass from b = d loss / d output: writes the flat gradient into
        `grad` (backend vector) and returns it. With `sgd_alpha`, plain SGD's step
        theta -= sgd_alpha grad rides in the pass: each stage moves its own
        parameters as soon as its gradient is formed (Stage.vjp_sgd; `grad` is
        then scratch), so the flat gradient is never assembled and read back."""
        first = next((i for i, (a, c) in enumerate(self.offsets) if c > a), len(self.layers))
        for i in range(len(self.layers) - 1, -1, -1):
            a, c = self.offsets[i]
            if c > a and sgd_alpha is not None:
                b = self.layers[i].vjp_sgd(ctxs[i], b, self.theta[a:c], grad[a:c], sgd_alpha, need_b_in=i > first)
            else:
                b = self.layers[i].vjp(ctxs[i], b, grad[a:c] if c > a else None, need_b_in=i > first)
            if b is None:
                break
        return grad

    def _grad_buffer(self):
        """The flat gradient vector reused between calls."""
        if self._grad is None:
            self._grad = self.bk.zeros(self.n_params, self.dtype)
        return self._grad

    def loss_and_sgd_update(self, X, Y, alpha):
        """Plain SGD's step theta -= alpha grad, inside the reverse pass
        (backward with sgd_alpha). Returns the batch-mean loss before the step.
        One process only: across ranks the gradient must be all-reduced first
        (loss_and_gradient)."""
        if self.comm.size > 1:
            raise ValueError("loss_and_sgd_update runs in one process; across ranks use "
                             "loss_and_gradient, which all-reduces the gradient")
        F, ctxs = self.forward_ctx(X)
        value, lctx = self.loss_stage.forward(F, self.as_target(Y))
        self.backward(ctxs, self.loss_stage.vjp(lctx), self._grad_buffer(), sgd_alpha=alpha)
        return value

    def loss_and_gradient(self, X, Y, out=None):
        """(batch-mean loss as a float, flat gradient as a backend vector).
        The gradient vector is reused between calls unless `out` is given.
        Data-parallel (self.comm over P ranks, X this rank's shard): both are
        the means over the global batch, all-reduced."""
        return self.loss_gradient_contexts(X, Y, out)[:2]

    def loss_gradient_contexts(self, X, Y, out=None):
        """loss_and_gradient plus its forward pass's contexts: (value, gradient,
        [ctx per stage], loss ctx), for a caller that linearizes at the same
        parameters next (tinynet.curvature.products.product_at)."""
        F, ctxs = self.forward_ctx(X)
        value, lctx = self.loss_stage.forward(F, self.as_target(Y))
        if out is None:
            out = self._grad_buffer()
        self.backward(ctxs, self.loss_stage.vjp(lctx), out)
        if self.comm.size > 1:
            value = self.comm.mean_gradient(self.bk, out, value)
        return value, out, ctxs, lctx

    def gradient(self, X, Y):
        """Flat gradient of the batch-mean loss, host array (DESIGN.md layout)."""
        return np.array(self.bk.to_host(self.loss_and_gradient(X, Y)[1]), copy=True)

    def jvp(self, ctxs, dx, dz0=None):
        """Forward-mode pass (seed 001: dz_l = grad_x f_l dx_l + grad_z f_l dz_{l-1},
        the N^{-1} forward substitution): directional derivative of the network
        output along the flat parameter direction dx (backend vector)."""
        dz = dz0
        for s, (a, c), ctx in zip(self.layers, self.offsets, ctxs):
            dz = s.jvp(ctx, dz, dx[a:c] if c > a else None)
        return dz


def all_finite(A):
    """True unless the host array A holds NaN or inf, in one reduction (device
    arrays and integer arrays: True, they are not checked here)."""
    if not isinstance(A, np.ndarray) or not np.issubdtype(A.dtype, np.floating):
        return True
    flat = A.reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.dot(flat, flat)):                # NaN and inf survive a sum of squares
            return True
    return bool(np.isfinite(flat).all())                   # the squares overflowed: look closer


def _check_finite(A, what):
    """NaN in, NaN forever: refuse a non-finite batch at the entry points
    (loss, gradient, forward, every pass that takes X or Y) with one reduction."""
    if not all_finite(A):
        bad = int(np.count_nonzero(~np.isfinite(A)))
        raise ValueError(f"the {what} contain {bad} NaN or inf value(s): clean the batch "
                         f"(nothing was computed)")
