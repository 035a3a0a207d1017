"""Adam and AdamW with torch's update order, bias correction and ``eps`` placement."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np

from .. import dtypes
from ..kernels import pointwise
from ._functional import as_real, in_runs, lerp_
from .optimizer import Optimizer

__all__ = ["Adam", "AdamW"]

#: the hyper-parameters of Adam-like optimizers and their checks
ADAM_HYPER = {"lr": "non_negative", "betas": "betas", "eps": "non_negative", "weight_decay": "non_negative",
              "maximize": "flag", "foreach": "foreach", "capturable": "unsupported",
              "differentiable": "unsupported", "decoupled_weight_decay": "flag"}


def scalar_dtype() -> np.dtype:
    """The dtype of an optimizer's scalar state (``step``, NAdam's ``mu_product``): float64 where the
    default dtype is float64, else float32 (torch's ``_get_scalar_dtype``)."""
    return np.dtype(np.float64 if dtypes.get_default_dtype().dtype == np.float64 else np.float32)


def scalar_step() -> np.ndarray:
    """A fresh ``state['step']``: a 0-d array of :func:`scalar_dtype`, as torch's."""
    return np.array(0.0, dtype=scalar_dtype())


def apply_weight_decay(theta: np.ndarray, grad: np.ndarray, group: dict[str, Any]) -> np.ndarray:
    """``-g`` if maximize; then decoupled decay ``theta *= 1 - lr * wd`` or L2 decay ``g + wd * theta``."""
    if group["maximize"]:
        grad = -grad
    weight_decay = float(group["weight_decay"])
    if weight_decay != 0:
        if group.get("decoupled_weight_decay"):
            theta *= 1 - float(group["lr"]) * weight_decay
        else:
            grad = grad + weight_decay * theta
    return grad


class Adam(Optimizer):
    r"""``torch.optim.Adam``. For each parameter, with ``t = state['step']`` after incrementing:

    .. code-block:: text

        g = -g if maximize
        theta *= 1 - lr * weight_decay        (decoupled_weight_decay, i.e. AdamW)
        g = g + weight_decay * theta          (otherwise, if weight_decay != 0)
        m = lerp(m, g, 1 - beta1)             ('exp_avg')
        v = beta2 * v + (1 - beta2) * g * g   ('exp_avg_sq'; per real component for complex)
        v_max = max(v_max, v)                 ('max_exp_avg_sq', if amsgrad; used instead of v)
        denom = sqrt(v) / sqrt(1 - beta2**t) + eps
        theta -= lr / (1 - beta1**t) * m / denom
    """

    _HYPER: ClassVar[dict[str, str]] = {**ADAM_HYPER, "amsgrad": "flag", "fused": "unsupported"}

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0, amsgrad: bool = False, *,
                 foreach: bool | None = None, maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None,
                 decoupled_weight_decay: bool = False) -> None:
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "amsgrad": amsgrad,
                    "maximize": maximize, "foreach": foreach, "capturable": capturable,
                    "differentiable": differentiable, "fused": fused,
                    "decoupled_weight_decay": decoupled_weight_decay}
        super().__init__(params, defaults)

    def _state_kinds(self, group: dict[str, Any]) -> dict[str, str]:
        kinds = {"step": "scalar", "exp_avg": "param", "exp_avg_sq": "param"}
        if group["amsgrad"]:
            kinds["max_exp_avg_sq"] = "param"
        return kinds

    def _optional_state(self) -> frozenset[str]:
        return frozenset({"max_exp_avg_sq"})

    def _init_state(self, param: np.ndarray, group: dict[str, Any]) -> dict[str, np.ndarray]:
        state = {"step": scalar_step(), "exp_avg": np.zeros_like(param), "exp_avg_sq": np.zeros_like(param)}
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = np.zeros_like(param)
        return state

    def _update(self, theta: np.ndarray, grad: np.ndarray, state: dict[str, Any],
                group: dict[str, Any]) -> None:
        lr, eps = float(group["lr"]), float(group["eps"])
        beta1, beta2 = (float(b) for b in group["betas"])
        state["step"] += 1
        most = as_real(state["max_exp_avg_sq"]) if group["amsgrad"] else None
        if pointwise.adam_step(as_real(theta), as_real(grad), as_real(state["exp_avg"]),
                               as_real(state["exp_avg_sq"]), most, lr, (beta1, beta2), eps,
                               float(group["weight_decay"]), bool(group.get("decoupled_weight_decay")),
                               bool(group["maximize"]), float(state["step"])):
            return
        grad = as_real(apply_weight_decay(theta, grad, group))
        step = float(state["step"])
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        step_size = -(lr / (1 - beta1**step))

        def update(theta: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray, exp_avg_sq: np.ndarray,
                   max_exp_avg_sq: np.ndarray | None) -> None:
            lerp_(exp_avg, grad, 1 - beta1)
            exp_avg_sq *= beta2
            exp_avg_sq += (1 - beta2) * grad * grad
            if max_exp_avg_sq is not None:
                np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
                denom = np.sqrt(max_exp_avg_sq) / bias_correction2_sqrt
            else:
                denom = np.sqrt(exp_avg_sq) / bias_correction2_sqrt
            denom += eps
            theta += step_size * exp_avg / denom

        in_runs(update, as_real(theta), grad, as_real(state["exp_avg"]), as_real(state["exp_avg_sq"]), most)


class AdamW(Adam):
    """``torch.optim.AdamW``: Adam with decoupled weight decay (default ``weight_decay=1e-2``)."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False, foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
                         capturable=capturable, differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
