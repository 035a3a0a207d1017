"""Stochastic gradient descent with torch's momentum, dampening, Nesterov and weight decay."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import numpy as np

from ..kernels import pointwise
from ._functional import add_weight_decay, in_runs
from .optimizer import Optimizer

__all__ = ["SGD"]


class SGD(Optimizer):
    r"""``torch.optim.SGD``: for each parameter :math:`\theta` with gradient :math:`g`

    .. code-block:: text

        g = -g if maximize
        g = g + weight_decay * theta                    (if weight_decay != 0)
        b = g (first step)  or  momentum * b + (1 - dampening) * g   (if momentum != 0)
        g = g + momentum * b if nesterov else b
        theta = theta - lr * g

    The momentum buffer ``b`` is ``state[p]['momentum_buffer']``.
    """

    _HYPER: ClassVar[dict[str, str]] = {
        "lr": "non_negative", "momentum": "non_negative", "dampening": "non_negative",
        "weight_decay": "non_negative", "nesterov": "flag", "maximize": "flag", "foreach": "foreach",
        "differentiable": "unsupported", "fused": "unsupported"}

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0, dampening: float = 0,
                 weight_decay: float = 0, nesterov: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None, differentiable: bool = False,
                 fused: bool | None = None) -> None:
        defaults = {"lr": lr, "momentum": momentum, "dampening": dampening, "weight_decay": weight_decay,
                    "nesterov": nesterov, "maximize": maximize, "foreach": foreach,
                    "differentiable": differentiable, "fused": fused}
        super().__init__(params, defaults)

    def _check_group(self, group: Mapping[str, Any], where: str = "") -> None:
        super()._check_group(group, where)
        if group.get("nesterov") and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                f"{where + ': ' if where else ''}Nesterov momentum requires a momentum and zero dampening, "
                f"got momentum={group['momentum']}, dampening={group['dampening']}"
            )

    def _state_kinds(self, group: dict[str, Any]) -> dict[str, str]:
        return {"momentum_buffer": "param"} if group["momentum"] != 0 else {}

    def _optional_state(self) -> frozenset[str]:
        return frozenset({"momentum_buffer"})

    def _update(self, theta: np.ndarray, grad: np.ndarray, state: dict[str, Any],
                group: dict[str, Any]) -> None:
        grad = add_weight_decay(grad, theta, group)
        momentum = float(group["momentum"])
        buffer = state.get("momentum_buffer") if momentum != 0 else None
        first = momentum != 0 and buffer is None
        if first:
            buffer = state["momentum_buffer"] = np.array(grad, copy=True)
        lr, keep, nesterov = float(group["lr"]), 1 - float(group["dampening"]), group["nesterov"]
        if pointwise.sgd_step(theta, grad, buffer, lr, momentum, keep, nesterov, first):
            return

        def update(g: np.ndarray, t: np.ndarray, b: np.ndarray | None) -> None:
            if b is not None:
                if not first:
                    b *= momentum
                    b += g if keep == 1 else keep * g  # keep == 1: the same values without a temporary
                g = g + momentum * b if nesterov else b
            t -= lr * g

        in_runs(update, grad, theta, buffer)

