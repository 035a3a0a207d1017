"""Adamax (Adam with the infinity norm) with torch's ``eps`` placement."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np

from ._functional import add_weight_decay, as_real, in_runs, lerp_
from .adam import scalar_step
from .optimizer import Optimizer

__all__ = ["Adamax"]


class Adamax(Optimizer):
    r"""``torch.optim.Adamax``. With ``t = state['step']`` after incrementing (per real component):

    .. code-block:: text

        g = -g if maximize;  g = g + weight_decay * theta    (if weight_decay != 0)
        m = lerp(m, g, 1 - beta1)                            ('exp_avg')
        u = max(beta2 * u, |g| + eps)                        ('exp_inf')
        theta -= lr / (1 - beta1**t) * m / u
    """

    _HYPER: ClassVar[dict[str, str]] = {
        "lr": "non_negative", "betas": "betas", "eps": "non_negative", "weight_decay": "non_negative",
        "foreach": "foreach", "maximize": "flag", "differentiable": "unsupported",
        "capturable": "unsupported"}

    def __init__(self, params: Iterable[Any], lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0, foreach: bool | None = None, *,
                 maximize: bool = False, differentiable: bool = False, capturable: bool = False) -> None:
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "foreach": foreach,
                    "maximize": maximize, "differentiable": differentiable, "capturable": capturable}
        super().__init__(params, defaults)

    def _state_kinds(self, group: dict[str, Any]) -> dict[str, str]:
        return {"step": "scalar", "exp_avg": "param", "exp_inf": "param"}

    def _init_state(self, param: np.ndarray, group: dict[str, Any]) -> dict[str, np.ndarray]:
        return {"step": scalar_step(), "exp_avg": np.zeros_like(param), "exp_inf": np.zeros_like(param)}

    def _update(self, theta: np.ndarray, grad: np.ndarray, state: dict[str, Any],
                group: dict[str, Any]) -> None:
        beta1, beta2 = (float(b) for b in group["betas"])
        grad = as_real(add_weight_decay(grad, theta, group))
        state["step"] += 1
        eps = float(group["eps"])
        clr = float(group["lr"]) / (1 - beta1 ** float(state["step"]))

        def update(theta: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray, exp_inf: np.ndarray) -> None:
            lerp_(exp_avg, grad, 1 - beta1)
            exp_inf *= beta2
            norm = np.abs(grad)
            norm += eps
            np.maximum(exp_inf, norm, out=exp_inf)
            theta[...] += -clr * (exp_avg / exp_inf)

        in_runs(update, as_real(theta), grad, as_real(state["exp_avg"]), as_real(state["exp_inf"]))
