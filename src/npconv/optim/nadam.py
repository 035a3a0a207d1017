"""NAdam (Adam with Nesterov momentum and momentum decay) with torch's ``mu_product`` (float32, or float64
under a float64 default dtype)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np

from ._functional import as_real, in_runs, lerp_
from .adam import ADAM_HYPER, apply_weight_decay, scalar_dtype, scalar_step
from .optimizer import Optimizer

__all__ = ["NAdam"]


class NAdam(Optimizer):
    r"""``torch.optim.NAdam``. With ``t = state['step']`` after incrementing (per real component):

    .. code-block:: text

        g = -g if maximize; decoupled or L2 weight decay as in Adam
        mu_t = beta1 * (1 - 0.5 * 0.96**(t * momentum_decay)),  mu_{t+1} likewise
        P = P * mu_t                                       ('mu_product', a scalar like torch's)
        m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g * g
        denom = sqrt(v / (1 - beta2**t)) + eps
        theta -= lr * (1 - mu_t) / (1 - P) * g / denom + lr * mu_{t+1} / (1 - P * mu_{t+1}) * m / denom
    """

    _HYPER: ClassVar[dict[str, str]] = {**ADAM_HYPER, "momentum_decay": "non_negative"}

    def __init__(self, params: Iterable[Any], lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0, momentum_decay: float = 4e-3,
                 decoupled_weight_decay: bool = False, *, foreach: bool | None = None, maximize: bool = False,
                 capturable: bool = False, differentiable: bool = False) -> None:
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
                    "momentum_decay": momentum_decay, "decoupled_weight_decay": decoupled_weight_decay,
                    "maximize": maximize, "foreach": foreach, "capturable": capturable,
                    "differentiable": differentiable}
        super().__init__(params, defaults)

    def _state_kinds(self, group: dict[str, Any]) -> dict[str, str]:
        return {"step": "scalar", "mu_product": "scalar", "exp_avg": "param", "exp_avg_sq": "param"}

    def _init_state(self, param: np.ndarray, group: dict[str, Any]) -> dict[str, np.ndarray]:
        return {"step": scalar_step(), "mu_product": np.array(1.0, dtype=scalar_dtype()),
                "exp_avg": np.zeros_like(param), "exp_avg_sq": np.zeros_like(param)}

    def _update(self, theta: np.ndarray, grad: np.ndarray, state: dict[str, Any],
                group: dict[str, Any]) -> None:
        lr, eps, momentum_decay = float(group["lr"]), float(group["eps"]), float(group["momentum_decay"])
        beta1, beta2 = (float(b) for b in group["betas"])
        state["step"] += 1
        step = float(state["step"])
        grad = as_real(apply_weight_decay(theta, grad, group))
        mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * momentum_decay)))
        mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * momentum_decay)))
        state["mu_product"] *= mu
        mu_product = float(state["mu_product"])
        bias_correction2 = 1 - beta2**step
        grad_step = -lr * (1.0 - mu) / (1.0 - mu_product)
        avg_step = (-lr * mu_next) / (1.0 - mu_product * mu_next)

        def update(theta: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray, exp_avg_sq: np.ndarray) -> None:
            lerp_(exp_avg, grad, 1 - beta1)
            exp_avg_sq *= beta2
            exp_avg_sq += (1 - beta2) * grad * grad
            denom = np.sqrt(exp_avg_sq / bias_correction2)
            denom += eps
            theta += grad_step * (grad / denom)
            theta += avg_step * (exp_avg / denom)

        in_runs(update, as_real(theta), grad, as_real(state["exp_avg"]), as_real(state["exp_avg_sq"]))
