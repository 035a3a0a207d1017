"""Adagrad with torch's learning-rate decay and initial accumulator."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np

from ._functional import add_weight_decay, as_real, in_runs
from .adam import scalar_step
from .optimizer import Optimizer

__all__ = ["Adagrad"]


class Adagrad(Optimizer):
    r"""``torch.optim.Adagrad``. With ``t = state['step']`` after incrementing:

    .. code-block:: text

        g = -g if maximize;  g = g + weight_decay * theta    (if weight_decay != 0)
        clr = lr / (1 + (t - 1) * lr_decay)
        s = s + g * g                                        ('sum', starts at initial_accumulator_value)
        theta -= clr * g / (sqrt(s) + eps)

    Like torch, the state of every parameter is created by the constructor (and by
    ``add_param_group``), so ``state_dict()`` lists it before the first step.
    """

    _HYPER: ClassVar[dict[str, str]] = {
        "lr": "non_negative", "lr_decay": "non_negative", "eps": "non_negative",
        "weight_decay": "non_negative", "initial_accumulator_value": "non_negative", "foreach": "foreach",
        "maximize": "flag", "differentiable": "unsupported", "fused": "unsupported"}

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, lr_decay: float = 0, weight_decay: float = 0,
                 initial_accumulator_value: float = 0, eps: float = 1e-10, foreach: bool | None = None, *,
                 maximize: bool = False, differentiable: bool = False, fused: bool | None = None) -> None:
        defaults = {"lr": lr, "lr_decay": lr_decay, "eps": eps, "weight_decay": weight_decay,
                    "initial_accumulator_value": initial_accumulator_value, "foreach": foreach,
                    "maximize": maximize, "differentiable": differentiable, "fused": fused}
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        for param in self.param_groups[-1]["params"]:
            self.state[param] = self._init_state(param.numpy(), self.param_groups[-1])

    def _state_kinds(self, group: dict[str, Any]) -> dict[str, str]:
        return {"step": "scalar", "sum": "param"}

    def _init_state(self, param: np.ndarray, group: dict[str, Any]) -> dict[str, np.ndarray]:
        # torch fills with the constructor's value (its defaults), not the group's
        value = float(self.defaults["initial_accumulator_value"])
        fill = complex(value, value) if param.dtype.kind == "c" else value
        return {"step": scalar_step(), "sum": np.full_like(param, fill)}

    def _update(self, theta: np.ndarray, grad: np.ndarray, state: dict[str, Any],
                group: dict[str, Any]) -> None:
        state["step"] += 1
        step = float(state["step"])
        grad = as_real(add_weight_decay(grad, theta, group))
        clr = float(group["lr"]) / (1 + (step - 1) * float(group["lr_decay"]))
        eps = float(group["eps"])

        def update(theta: np.ndarray, grad: np.ndarray, state_sum: np.ndarray) -> None:
            state_sum += grad * grad
            std = np.sqrt(state_sum)
            std += eps
            theta += -clr * (grad / std)

        in_runs(update, as_real(theta), grad, as_real(state["sum"]))
