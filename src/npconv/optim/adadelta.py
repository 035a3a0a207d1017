"""Adadelta with torch's ``eps`` placement inside both square roots."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np

from ._functional import add_weight_decay, as_real, in_runs
from .adam import scalar_step
from .optimizer import Optimizer

__all__ = ["Adadelta"]


class Adadelta(Optimizer):
    r"""``torch.optim.Adadelta``. For each parameter (per real component for complex ones):

    .. code-block:: text

        g = -g if maximize;  g = g + weight_decay * theta    (if weight_decay != 0)
        v = rho * v + (1 - rho) * g * g                      ('square_avg')
        delta = sqrt(u + eps) / sqrt(v + eps) * g
        u = rho * u + (1 - rho) * delta * delta              ('acc_delta')
        theta -= lr * delta
    """

    _HYPER: ClassVar[dict[str, str]] = {
        "lr": "non_negative", "rho": "unit_interval", "eps": "non_negative", "weight_decay": "non_negative",
        "maximize": "flag", "capturable": "unsupported", "foreach": "foreach",
        "differentiable": "unsupported"}

    def __init__(self, params: Iterable[Any], lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
                 weight_decay: float = 0, foreach: bool | None = None, *, capturable: bool = False,
                 maximize: bool = False, differentiable: bool = False) -> None:
        defaults = {"lr": lr, "rho": rho, "eps": eps, "weight_decay": weight_decay, "maximize": maximize,
                    "capturable": capturable, "foreach": foreach, "differentiable": differentiable}
        super().__init__(params, defaults)

    def _state_kinds(self, group: dict[str, Any]) -> dict[str, str]:
        return {"step": "scalar", "square_avg": "param", "acc_delta": "param"}

    def _init_state(self, param: np.ndarray, group: dict[str, Any]) -> dict[str, np.ndarray]:
        return {"step": scalar_step(), "square_avg": np.zeros_like(param), "acc_delta": np.zeros_like(param)}

    def _update(self, theta: np.ndarray, grad: np.ndarray, state: dict[str, Any],
                group: dict[str, Any]) -> None:
        rho, eps = float(group["rho"]), float(group["eps"])
        state["step"] += 1
        grad = as_real(add_weight_decay(grad, theta, group))
        lr = float(group["lr"])

        def update(theta: np.ndarray, grad: np.ndarray, square_avg: np.ndarray,
                   acc_delta: np.ndarray) -> None:
            square_avg *= rho
            square_avg += (1 - rho) * grad * grad
            std = np.sqrt(square_avg + eps)
            delta = np.sqrt(acc_delta + eps)
            delta /= std
            delta *= grad
            acc_delta *= rho
            acc_delta += (1 - rho) * delta * delta
            theta[...] += -lr * delta

        in_runs(update, as_real(theta), grad, as_real(state["square_avg"]), as_real(state["acc_delta"]))
