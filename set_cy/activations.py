"""Activation functions on feature-major buffers (``n_units x batch``), applied in place.

Each activation computes its output from the pre-activation in place and, in the backward pass,
multiplies an incoming gradient (with respect to its output) by its derivative, in place. What the
derivative needs is kept in the output itself where it determines the derivative (ReLU, sigmoid,
tanh); All-ReLU with a negative left slope keeps a one-byte sign mask.
"""
import numpy as np

__all__ = ["Activation", "ReLU", "LeakyReLU", "AllReLU", "Sigmoid", "Tanh", "make_activation",
           "ACTIVATIONS", "softmax_inplace"]


class Activation:
    """Base class: ``forward(z)`` turns ``z`` into the output in place and returns a state for backward."""

    name = "identity"

    def forward(self, z):
        return None

    def backward(self, grad, out, state):
        """Multiply ``grad`` (dL/d output) in place by the derivative, given the output ``out``."""

    def __repr__(self):
        return f"{type(self).__name__}()"


class ReLU(Activation):
    """``max(x, 0)``."""

    name = "relu"

    def forward(self, z):
        np.maximum(z, 0, out=z)

    def backward(self, grad, out, state):
        grad *= out > 0


class LeakyReLU(Activation):
    """``x`` for ``x > 0``, ``alpha * x`` otherwise (``0 < alpha``); the output's sign gives the branch."""

    name = "leaky_relu"

    def __init__(self, alpha=0.01):
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0 for leaky_relu, got {alpha}")
        self.alpha = float(alpha)

    def forward(self, z):
        np.multiply(z, np.where(z > 0, 1, self.alpha).astype(z.dtype), out=z)

    def backward(self, grad, out, state):
        grad *= np.where(out > 0, 1, self.alpha).astype(grad.dtype)

    def __repr__(self):
        return f"LeakyReLU(alpha={self.alpha})"


class AllReLU(Activation):
    """All-ReLU (alternated left ReLU): ``x`` for ``x > 0``, ``slope * x`` otherwise.

    The slope of the left branch alternates in sign from one hidden layer to the next: ``-alpha`` on
    layers with an even index, ``+alpha`` on odd ones (Curci, Mocanu and Pechenizkiy, "Truly Sparse
    Neural Networks at Scale", 2021). With a negative slope the output is non-negative on both
    branches, so the sign of the input is kept as a byte mask.
    """

    name = "all_relu"

    def __init__(self, alpha=0.6, layer_index=0):
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0 for all_relu, got {alpha}")
        self.alpha = float(alpha)
        self.layer_index = int(layer_index)
        self.slope = -self.alpha if self.layer_index % 2 == 0 else self.alpha

    def forward(self, z):
        positive = z > 0
        np.multiply(z, np.where(positive, 1, self.slope).astype(z.dtype), out=z)
        return positive

    def backward(self, grad, out, state):
        grad *= np.where(state, 1, self.slope).astype(grad.dtype)

    def __repr__(self):
        return f"AllReLU(alpha={self.alpha}, layer_index={self.layer_index})"


class Sigmoid(Activation):
    """``1 / (1 + exp(-x))``."""

    name = "sigmoid"

    def forward(self, z):
        # 1 / (1 + exp(-z)), without overflow warnings for large |z|
        np.negative(z, out=z)
        np.clip(z, -80 if z.dtype == np.float32 else -700, None, out=z)
        np.exp(z, out=z)
        z += 1
        np.reciprocal(z, out=z)

    def backward(self, grad, out, state):
        grad *= out * (1 - out)


class Tanh(Activation):
    """``tanh(x)``."""

    name = "tanh"

    def forward(self, z):
        np.tanh(z, out=z)

    def backward(self, grad, out, state):
        grad *= 1 - out * out


#: The names :func:`make_activation` accepts (``activation=`` of the networks and the CLI).
ACTIVATIONS = ("relu", "leaky_relu", "all_relu", "sigmoid", "tanh")


def make_activation(name, layer_index=0, alpha=None):
    """Activation object for a hidden layer by name (one of ``ACTIVATIONS``)."""
    if name == "relu":
        return ReLU()
    if name == "leaky_relu":
        return LeakyReLU(0.01 if alpha is None else alpha)
    if name == "all_relu":
        return AllReLU(0.6 if alpha is None else alpha, layer_index)
    if name == "sigmoid":
        return Sigmoid()
    if name == "tanh":
        return Tanh()
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {name!r}")


def softmax_inplace(z):
    """Softmax over the units (axis 0) of a feature-major ``(n_classes, batch)`` block, in place.

    Stable: the largest logit of each sample is subtracted first.
    """
    z -= z.max(axis=0, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=0, keepdims=True)
    return z
