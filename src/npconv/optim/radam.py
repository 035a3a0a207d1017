"""RAdam (rectified Adam) with torch's variance-rectification threshold."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np

from ._functional import as_real, in_runs, lerp_
from .adam import ADAM_HYPER, apply_weight_decay, scalar_step
from .optimizer import Optimizer

__all__ = ["RAdam"]


class RAdam(Optimizer):
    r"""``torch.optim.RAdam``. With ``t = state['step']`` after incrementing (per real component):

    .. code-block:: text

        g = -g if maximize; decoupled or L2 weight decay as in Adam
        m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g * g
        rho_inf = 2 / (1 - beta2) - 1;  rho_t = rho_inf - 2 t beta2**t / (1 - beta2**t)
        r = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
        theta -= lr * m / (1 - beta1**t) * sqrt(1 - beta2**t) / (sqrt(v) + eps) * r   (if rho_t > 5)
        theta -= lr * m / (1 - beta1**t)                                               (otherwise)
    """

    _HYPER: ClassVar[dict[str, str]] = dict(ADAM_HYPER)

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0, decoupled_weight_decay: bool = False, *,
                 foreach: bool | None = None, maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False) -> None:
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "maximize": maximize,
                    "foreach": foreach, "capturable": capturable,
                    "decoupled_weight_decay": decoupled_weight_decay, "differentiable": differentiable}
        super().__init__(params, defaults)

    def _state_kinds(self, group: dict[str, Any]) -> dict[str, str]:
        return {"step": "scalar", "exp_avg": "param", "exp_avg_sq": "param"}

    def _init_state(self, param: np.ndarray, group: dict[str, Any]) -> dict[str, np.ndarray]:
        return {"step": scalar_step(), "exp_avg": np.zeros_like(param), "exp_avg_sq": np.zeros_like(param)}

    def _update(self, theta: np.ndarray, grad: np.ndarray, state: dict[str, Any],
                group: dict[str, Any]) -> None:
        lr, eps = float(group["lr"]), float(group["eps"])
        beta1, beta2 = (float(b) for b in group["betas"])
        state["step"] += 1
        grad = as_real(apply_weight_decay(theta, grad, group))
        step = float(state["step"])
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 * step * (beta2**step) / bias_correction2
        rect = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5 \
            if rho_t > 5.0 else None

        def update(theta: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray, exp_avg_sq: np.ndarray) -> None:
            lerp_(exp_avg, grad, 1 - beta1)
            exp_avg_sq *= beta2
            exp_avg_sq += (1 - beta2) * grad * grad
            corrected = exp_avg / bias_correction1
            if rect is not None:
                denom = np.sqrt(exp_avg_sq)
                denom += eps
                adaptive = (bias_correction2**0.5) * np.reciprocal(denom)
                theta -= corrected * lr * adaptive * rect
            else:
                theta -= corrected * lr

        in_runs(update, as_real(theta), grad, as_real(state["exp_avg"]), as_real(state["exp_avg_sq"]))
