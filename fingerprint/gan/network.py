"""Small multilayer perceptrons in numpy, with their gradients and Adam.

The generator and the discriminator are each a stack of dense layers (leaky
ReLU between them). That is all the GAN needs at this size, and it keeps
the package free of a deep-learning framework: forward, backward and the
optimiser are a hundred lines of matrix products.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

LEAK = 0.2


@dataclass
class Mlp:
    """Dense layers ``weights[i]`` (in x out) and ``biases[i]``; leaky ReLU between, ``output`` at the end.

    An optional fixed ``basis`` (rows x components) maps the last layer's
    output, read as (components x columns), to (rows x columns) before the
    output function: the generator's patches are combinations of a few slow
    temporal shapes per mel band.
    """

    weights: list[np.ndarray]
    biases: list[np.ndarray]
    output: str  # "tanh" (generator: patches in [-1, 1]) or "linear" (discriminator: a logit)
    basis: np.ndarray | None = None

    @classmethod
    def initialised(
        cls, sizes: list[int], output: str, rng: np.random.Generator, basis: np.ndarray | None = None
    ) -> "Mlp":
        """He-initialised layers of the given sizes (input first)."""
        weights = [
            (rng.standard_normal((a, b)) * np.sqrt(2.0 / a)).astype(np.float32) for a, b in zip(sizes[:-1], sizes[1:])
        ]
        return cls(weights, [np.zeros(b, np.float32) for b in sizes[1:]], output, basis)

    @property
    def parameters(self) -> list[np.ndarray]:
        return [*self.weights, *self.biases]

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Output and the activations ``backward`` needs (the input of every layer)."""
        inputs = []
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            inputs.append(x)
            x = x @ w + b
            if i < len(self.weights) - 1:
                x = np.where(x > 0, x, LEAK * x)
        if self.basis is not None:
            x = (self.basis @ x.reshape(x.shape[0], self.basis.shape[1], -1)).reshape(x.shape[0], -1)
        if self.output == "tanh":
            x = np.tanh(x)
        return x, inputs

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)[0]

    def backward(self, out: np.ndarray, inputs: list[np.ndarray], grad_out: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Gradients of the parameters (in ``parameters`` order) and of the input, given d loss / d output."""
        grad = grad_out * (1.0 - out**2) if self.output == "tanh" else grad_out
        if self.basis is not None:
            grad = (self.basis.T @ grad.reshape(grad.shape[0], self.basis.shape[0], -1)).reshape(grad.shape[0], -1)
        grad_w: list[np.ndarray] = [np.empty(0)] * len(self.weights)
        grad_b: list[np.ndarray] = [np.empty(0)] * len(self.weights)
        for i in range(len(self.weights) - 1, -1, -1):
            grad_w[i] = inputs[i].T @ grad
            grad_b[i] = grad.sum(axis=0)
            grad = grad @ self.weights[i].T
            if i > 0:
                pre = inputs[i]  # the activated output of layer i - 1: its sign is the pre-activation's
                grad = np.where(pre > 0, grad, LEAK * grad)
        return [*grad_w, *grad_b], grad


@dataclass
class Adam:
    """Adam (Kingma and Ba) over a fixed list of parameter arrays, updated in place."""

    parameters: list[np.ndarray]
    learning_rate: float
    beta1: float = 0.5
    beta2: float = 0.999
    eps: float = 1e-8
    step: int = 0
    _m: list[np.ndarray] = field(default_factory=list)
    _v: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._m = [np.zeros_like(p) for p in self.parameters]
        self._v = [np.zeros_like(p) for p in self.parameters]

    def update(self, grads: list[np.ndarray]) -> None:
        self.step += 1
        correction1 = 1.0 - self.beta1**self.step
        correction2 = 1.0 - self.beta2**self.step
        for p, g, m, v in zip(self.parameters, grads, self._m, self._v):
            m *= self.beta1
            m += (1.0 - self.beta1) * g
            v *= self.beta2
            v += (1.0 - self.beta2) * g * g
            p -= (self.learning_rate * (m / correction1) / (np.sqrt(v / correction2) + self.eps)).astype(p.dtype)
