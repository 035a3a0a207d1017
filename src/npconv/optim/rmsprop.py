"""RMSprop with torch's centring, momentum and ``eps`` placement."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np

from ._functional import add_weight_decay, as_real, in_runs, lerp_
from .adam import scalar_step
from .optimizer import Optimizer

__all__ = ["RMSprop"]


class RMSprop(Optimizer):
    r"""``torch.optim.RMSprop``. For each parameter (per real component for complex ones):

    .. code-block:: text

        g = -g if maximize;  g = g + weight_decay * theta      (if weight_decay != 0)
        v = alpha * v + (1 - alpha) * g * g                    ('square_avg')
        m = lerp(m, g, 1 - alpha); avg = sqrt(v - m * m) + eps ('grad_avg', if centered)
        avg = sqrt(v) + eps                                    (otherwise)
        b = momentum * b + g / avg; theta -= lr * b            ('momentum_buffer', if momentum > 0)
        theta -= lr * g / avg                                  (otherwise)
    """

    _HYPER: ClassVar[dict[str, str]] = {
        "lr": "non_negative", "momentum": "non_negative", "alpha": "non_negative", "eps": "non_negative",
        "centered": "flag", "weight_decay": "non_negative", "capturable": "unsupported",
        "foreach": "foreach", "maximize": "flag", "differentiable": "unsupported"}

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0, momentum: float = 0, centered: bool = False,
                 capturable: bool = False, foreach: bool | None = None, maximize: bool = False,
                 differentiable: bool = False) -> None:
        defaults = {"lr": lr, "momentum": momentum, "alpha": alpha, "eps": eps, "centered": centered,
                    "weight_decay": weight_decay, "capturable": capturable, "foreach": foreach,
                    "maximize": maximize, "differentiable": differentiable}
        super().__init__(params, defaults)

    def _state_kinds(self, group: dict[str, Any]) -> dict[str, str]:
        kinds = {"step": "scalar", "square_avg": "param"}
        if group["momentum"] > 0:
            kinds["momentum_buffer"] = "param"
        if group["centered"]:
            kinds["grad_avg"] = "param"
        return kinds

    def _optional_state(self) -> frozenset[str]:
        return frozenset({"momentum_buffer", "grad_avg"})

    def _init_state(self, param: np.ndarray, group: dict[str, Any]) -> dict[str, np.ndarray]:
        return {"step": scalar_step(),
                **{name: np.zeros_like(param) for name in self._state_kinds(group) if name != "step"}}

    def _update(self, theta: np.ndarray, grad: np.ndarray, state: dict[str, Any],
                group: dict[str, Any]) -> None:
        alpha, eps, momentum = float(group["alpha"]), float(group["eps"]), float(group["momentum"])
        lr = float(group["lr"])
        grad = as_real(add_weight_decay(grad, theta, group))
        state["step"] += 1

        def update(theta: np.ndarray, grad: np.ndarray, square_avg: np.ndarray, grad_avg: np.ndarray | None,
                   buffer: np.ndarray | None) -> None:
            square_avg *= alpha
            square_avg += (1 - alpha) * grad * grad
            if grad_avg is not None:
                lerp_(grad_avg, grad, 1 - alpha)
                avg = np.sqrt(square_avg - grad_avg * grad_avg)
            else:
                avg = np.sqrt(square_avg)
            avg += eps
            if buffer is not None:
                buffer *= momentum
                buffer += grad / avg
                theta -= lr * buffer
            else:
                theta += -lr * (grad / avg)

        in_runs(update, as_real(theta), grad, as_real(state["square_avg"]),
                as_real(state["grad_avg"]) if group["centered"] else None,
                as_real(state["momentum_buffer"]) if momentum > 0 else None)
