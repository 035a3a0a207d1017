"""Adam and AdamW with torch's update order, bias correction and ``eps`` placement."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .optimizer import Optimizer, _check_non_negative

__all__ = ["Adam", "AdamW"]


def _as_real(array: np.ndarray) -> np.ndarray:
    """A complex array as interleaved real/imaginary parts (torch's ``view_as_real``)."""
    return array.view(array.real.dtype) if array.dtype.kind == "c" else array


def _lerp_(start: np.ndarray, end: np.ndarray, weight: float) -> None:
    """``start.lerp_(end, weight)`` with torch's two-sided formula (exact at weight 0 and 1)."""
    if abs(weight) < 0.5:
        start += weight * (end - start)
    else:
        start[...] = end - (end - start) * (1 - weight)


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

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0, amsgrad: bool = False, *,
                 foreach: bool | None = None, maximize: bool = False,
                 decoupled_weight_decay: bool = False) -> None:
        _check_non_negative(lr, "learning rate")
        _check_non_negative(eps, "epsilon value")
        _check_non_negative(weight_decay, "weight_decay value")
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair of floats, got {betas!r}")
        for index, beta in enumerate(betas):
            if not isinstance(beta, numbers.Real) or not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {index}: {beta} (expected 0 <= beta < 1)")
        defaults = {"lr": lr, "betas": tuple(float(b) for b in betas), "eps": eps,
                    "weight_decay": weight_decay, "amsgrad": amsgrad, "maximize": maximize,
                    "foreach": foreach, "decoupled_weight_decay": decoupled_weight_decay}
        super().__init__(params, defaults)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; return ``closure()``'s loss if given."""
        loss = self._evaluate_closure(closure)
        for group in self.param_groups:
            lr, eps, amsgrad = group["lr"], group["eps"], group["amsgrad"]
            weight_decay = group["weight_decay"]
            beta1, beta2 = group["betas"]
            for param, grad in self._params_with_grad(group):
                state = self.state[param]
                if len(state) == 0:
                    state["step"] = np.array(0.0, dtype=np.float32)
                    state["exp_avg"] = np.zeros_like(param.data)
                    state["exp_avg_sq"] = np.zeros_like(param.data)
                    if amsgrad:
                        state["max_exp_avg_sq"] = np.zeros_like(param.data)
                if group["maximize"]:
                    grad = -grad
                state["step"] += 1
                if weight_decay != 0:
                    if group["decoupled_weight_decay"]:
                        param.data *= 1 - lr * weight_decay
                    else:
                        grad = grad + weight_decay * param.data
                grad = _as_real(grad)
                theta = _as_real(param.data)
                exp_avg = _as_real(state["exp_avg"])
                exp_avg_sq = _as_real(state["exp_avg_sq"])
                _lerp_(exp_avg, grad, 1 - beta1)
                exp_avg_sq *= beta2
                exp_avg_sq += (1 - beta2) * grad * grad
                step = float(state["step"])
                bias_correction1 = 1 - beta1**step
                bias_correction2_sqrt = (1 - beta2**step) ** 0.5
                step_size = lr / bias_correction1
                if amsgrad:
                    max_exp_avg_sq = _as_real(state["max_exp_avg_sq"])
                    np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
                    denom = np.sqrt(max_exp_avg_sq) / bias_correction2_sqrt
                else:
                    denom = np.sqrt(exp_avg_sq) / bias_correction2_sqrt
                denom += eps
                theta += -step_size * exp_avg / denom
        return loss


class AdamW(Adam):
    """``torch.optim.AdamW``: Adam with decoupled weight decay (default ``weight_decay=1e-2``)."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False, foreach: bool | None = None) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
                         decoupled_weight_decay=True)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
