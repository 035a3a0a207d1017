"""L-BFGS with torch's two-loop recursion, step-size rule and strong-Wolfe line search."""

from __future__ import annotations

import copy
import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import numpy as np

from ..tensor import Tensor, enable_grad, no_grad
from .optimizer import Optimizer, _as_numeric

__all__ = ["LBFGS"]


def _cubic_interpolate(x1: float, f1: float, g1: float, x2: float, f2: float, g2: float,
                       bounds: tuple[float, float] | None = None) -> float:
    """Minimiser of the cubic through (x1, f1, g1) and (x2, f2, g2), clamped to ``bounds``."""
    xmin_bound, xmax_bound = bounds if bounds is not None else ((x1, x2) if x1 <= x2 else (x2, x1))
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1**2 - g1 * g2
    if d2_square >= 0:
        d2 = np.sqrt(d2_square)
        if x1 <= x2:
            min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        return min(max(min_pos, xmin_bound), xmax_bound)
    return (xmin_bound + xmax_bound) / 2.0


def _strong_wolfe(obj_func: Callable[[Any, Any, np.ndarray], tuple[float, np.ndarray]], x: Any, t: Any,
                  d: np.ndarray, f: float, g: np.ndarray, gtd: Any, c1: float = 1e-4, c2: float = 0.9,
                  tolerance_change: float = 1e-9, max_ls: int = 25) -> tuple[float, np.ndarray, Any, int]:
    """torch's bracketing + zoom line search (Nocedal & Wright, algorithms 3.5 and 3.6)."""
    d_norm = np.abs(d).max()
    g = g.copy()
    f_new, g_new = obj_func(x, t, d)
    ls_func_evals = 1
    gtd_new = g_new.dot(d)
    t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
    done = False
    ls_iter = 0
    while ls_iter < max_ls:
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new.copy()], [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new.copy()], [gtd_prev, gtd_new]
            break
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        tmp = t
        t = _cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(min_step, max_step))
        t_prev, f_prev, g_prev, gtd_prev = tmp, f_new, g_new.copy(), gtd_new
        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = g_new.dot(d)
        ls_iter += 1
    if ls_iter == max_ls:
        bracket, bracket_f, bracket_g = [0, t], [f, f_new], [g, g_new]
    insuf_progress = False
    low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = _cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0],
                               bracket[1], bracket_f[1], bracket_gtd[1])
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insuf_progress or t >= max(bracket) or t <= min(bracket):
                closer_to_max = abs(t - max(bracket)) < abs(t - min(bracket))
                t = max(bracket) - eps if closer_to_max else min(bracket) + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False
        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = g_new.dot(d)
        ls_iter += 1
        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:
            bracket[high_pos], bracket_f[high_pos] = t, f_new
            bracket_g[high_pos], bracket_gtd[high_pos] = g_new.copy(), gtd_new
            low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:
                bracket[high_pos], bracket_f[high_pos] = bracket[low_pos], bracket_f[low_pos]
                bracket_g[high_pos], bracket_gtd[high_pos] = bracket_g[low_pos], bracket_gtd[low_pos]
            bracket[low_pos], bracket_f[low_pos] = t, f_new
            bracket_g[low_pos], bracket_gtd[low_pos] = g_new.copy(), gtd_new
    return bracket_f[low_pos], bracket_g[low_pos], bracket[low_pos], ls_func_evals


class LBFGS(Optimizer):
    """``torch.optim.LBFGS``: ``step(closure)`` runs up to ``max_iter`` quasi-Newton iterations on the
    flattened parameters (one group only), evaluating ``closure`` at most ``max_eval`` times.

    Directions come from the two-loop recursion over the last ``history_size`` curvature pairs;
    the step is ``lr`` (the first time ``min(1, 1/|g|_1) * lr``), or found by the strong-Wolfe line
    search with ``line_search_fn='strong_wolfe'``. Stops early when ``max|g| <= tolerance_grad`` or
    the step or loss change falls below ``tolerance_change``. All state lives under the first
    parameter, as in torch. If the closure raises, the parameters and state are restored.
    """

    _HYPER: ClassVar[dict[str, str]] = {
        "lr": "non_negative", "max_iter": "positive_int", "max_eval": "positive_int",
        "tolerance_grad": "non_negative", "tolerance_change": "non_negative", "history_size": "positive_int"}
    _STATE_NUMBERS = ("func_evals", "n_iter", "t", "H_diag", "prev_loss")
    _STATE_VECTORS = ("d", "prev_flat_grad")
    _STATE_LISTS = ("old_dirs", "old_stps", "ro", "al")

    def __init__(self, params: Iterable[Any], lr: float = 1, max_iter: int = 20, max_eval: int | None = None,
                 tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9, history_size: int = 100,
                 line_search_fn: str | None = None) -> None:
        if max_eval is None and isinstance(max_iter, numbers.Integral):
            max_eval = max_iter * 5 // 4
        defaults = {"lr": lr, "max_iter": max_iter, "max_eval": max_eval, "tolerance_grad": tolerance_grad,
                    "tolerance_change": tolerance_change, "history_size": history_size,
                    "line_search_fn": line_search_fn}
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")
        self._params = self.param_groups[0]["params"]

    def _check_group(self, group: Mapping[str, Any], where: str = "") -> None:
        super()._check_group(group, where)
        if group.get("line_search_fn") not in (None, "strong_wolfe"):
            raise ValueError(f"{where + ': ' if where else ''}line_search_fn must be None or 'strong_wolfe', "
                             f"got {group['line_search_fn']!r}")

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if self.param_groups:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")
        super().add_param_group(param_group)

    # -- flat views of the parameters ---------------------------------------------------------------
    def _numel(self) -> int:
        return sum(p.numpy().size * (2 if p.numpy().dtype.kind == "c" else 1) for p in self._params)

    def _gather_flat_grad(self) -> np.ndarray:
        views = []
        for p in self._params:
            if p.grad is None:
                view = np.zeros(p.numpy().size, dtype=p.numpy().dtype)
            else:
                grad = np.asarray(p.grad.numpy())
                if grad.shape != p.numpy().shape:
                    raise ValueError(f"LBFGS: a parameter of shape {p.numpy().shape} has a gradient of shape "
                                     f"{grad.shape}")
                view = grad.astype(p.numpy().dtype, copy=False).reshape(-1)
            views.append(view.view(view.real.dtype) if view.dtype.kind == "c" else view)
        return np.concatenate(views)

    def _add_grad(self, step_size: Any, update: np.ndarray) -> None:
        offset = 0
        for p in self._params:
            theta = p.numpy().view(p.numpy().real.dtype) if p.numpy().dtype.kind == "c" else p.numpy()
            numel = theta.size
            theta += step_size * update[offset:offset + numel].reshape(theta.shape)
            offset += numel

    def _clone_param(self) -> list[np.ndarray]:
        return [p.numpy().copy() for p in self._params]

    def _set_param(self, params_data: list[np.ndarray]) -> None:
        for p, data in zip(self._params, params_data, strict=True):
            p.numpy()[...] = data

    def _directional_evaluate(self, closure: Callable[[], Any], x: list[np.ndarray], t: Any,
                              d: np.ndarray) -> tuple[float, np.ndarray]:
        self._add_grad(t, d)
        loss = float(closure())
        flat_grad = self._gather_flat_grad()
        self._set_param(x)
        return loss, flat_grad

    # -- the step -------------------------------------------------------------------------------------
    def step(self, closure: Callable[[], Any]) -> Any:  # type: ignore[override]
        """Run the iterations; return the closure's first loss. ``closure`` is required."""
        if not callable(closure):
            raise TypeError(f"LBFGS.step needs a closure that re-evaluates the model, got {closure!r}")
        group = self.param_groups[0]
        self._check_group(group, where="param_groups[0]")
        for position, p in enumerate(self._params):
            if p.numpy().dtype.kind not in "fc" or not p.numpy().flags.writeable:
                raise ValueError(f"LBFGS: param_groups[0]['params'][{position}] must be a writable floating "
                                 "point or complex array")
        saved_params = self._clone_param()
        saved_state = copy.deepcopy(self.state.get(self._params[0], {}))
        try:
            with no_grad():
                return self._iterate(enable_grad()(closure), group)
        except BaseException:
            self._set_param(saved_params)
            self.state[self._params[0]] = saved_state
            raise

    def _iterate(self, closure: Callable[[], Any], group: dict[str, Any]) -> Any:
        lr = float(group["lr"])
        max_iter, max_eval = group["max_iter"], group["max_eval"]
        tolerance_grad, tolerance_change = group["tolerance_grad"], group["tolerance_change"]
        line_search_fn, history_size = group["line_search_fn"], group["history_size"]
        state = self.state[self._params[0]]
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)
        orig_loss = closure()
        loss = float(orig_loss)
        current_evals = 1
        state["func_evals"] += 1
        flat_grad = self._gather_flat_grad()
        if np.abs(flat_grad).max() <= tolerance_grad:
            return orig_loss
        d, t = state.get("d"), state.get("t")
        old_dirs, old_stps, ro = state.get("old_dirs"), state.get("old_stps"), state.get("ro")
        h_diag, prev_flat_grad = state.get("H_diag"), state.get("prev_flat_grad")
        prev_loss = state.get("prev_loss")
        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1
            if state["n_iter"] == 1:
                d = -flat_grad
                old_dirs, old_stps, ro = [], [], []
                h_diag = 1
            else:
                y = flat_grad - prev_flat_grad
                s = d * t
                ys = y.dot(s)
                if ys > 1e-10:
                    if len(old_dirs) == history_size:
                        old_dirs.pop(0)
                        old_stps.pop(0)
                        ro.pop(0)
                    old_dirs.append(y)
                    old_stps.append(s)
                    ro.append(1.0 / ys)
                    h_diag = ys / y.dot(y)
                num_old = len(old_dirs)
                if "al" not in state:
                    state["al"] = [None] * history_size
                al = state["al"]
                q = -flat_grad
                for i in range(num_old - 1, -1, -1):
                    al[i] = old_stps[i].dot(q) * ro[i]
                    q += -float(al[i]) * old_dirs[i]
                d = r = q * h_diag
                for i in range(num_old):
                    be_i = old_dirs[i].dot(r) * ro[i]
                    r += float(al[i] - be_i) * old_stps[i]
            if prev_flat_grad is None:
                prev_flat_grad = flat_grad.copy()
            else:
                prev_flat_grad[...] = flat_grad
            prev_loss = loss
            t = min(1.0, 1.0 / np.abs(flat_grad).sum()) * lr if state["n_iter"] == 1 else lr
            gtd = flat_grad.dot(d)
            if gtd > -tolerance_change:
                break
            ls_func_evals = 0
            if line_search_fn is not None:
                x_init = self._clone_param()

                def obj_func(x: Any, t: Any, d: np.ndarray) -> tuple[float, np.ndarray]:
                    return self._directional_evaluate(closure, x, t, d)

                loss, flat_grad, t, ls_func_evals = _strong_wolfe(
                    obj_func, x_init, t, d, loss, flat_grad, gtd, max_ls=max_eval - current_evals)
                self._add_grad(t, d)
                opt_cond = np.abs(flat_grad).max() <= tolerance_grad
            else:
                self._add_grad(t, d)
                if n_iter != max_iter:
                    loss = float(closure())
                    flat_grad = self._gather_flat_grad()
                    opt_cond = np.abs(flat_grad).max() <= tolerance_grad
                    ls_func_evals = 1
            current_evals += ls_func_evals
            state["func_evals"] += ls_func_evals
            if n_iter == max_iter or current_evals >= max_eval or opt_cond:
                break
            if np.abs(d * t).max() <= tolerance_change or abs(loss - prev_loss) < tolerance_change:
                break
        state.update(d=d, t=t, old_dirs=old_dirs, old_stps=old_stps, ro=ro, H_diag=h_diag,
                     prev_flat_grad=prev_flat_grad, prev_loss=prev_loss)
        return orig_loss

    # -- state dict -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        packed = super().state_dict()
        for entry in packed["state"].values():
            for name in self._STATE_LISTS:
                if isinstance(entry.get(name), list):
                    entry[name] = [Tensor(np.asarray(v)) if v is not None else None for v in entry[name]]
        return packed

    def _loaded_state_entry(self, param: Tensor, entry: Mapping[str, Any], group: dict[str, Any],
                            where: str) -> dict[str, Any]:
        """LBFGS keeps flat vectors and histories under the first parameter: check each against its size."""
        if not entry:
            return {}
        if param is not self._params[0]:
            raise ValueError(f"optimizer {where}: LBFGS keeps its state under the first parameter only")
        numel, dtype = self._numel(), param.numpy().real.dtype
        known = set(self._STATE_NUMBERS + self._STATE_VECTORS + self._STATE_LISTS)
        unknown = sorted(set(map(str, entry)) - known)
        if unknown:
            raise ValueError(
                f"optimizer {where} has unknown state entries {unknown} (expected {sorted(known)})")
        out: dict[str, Any] = {}
        for name, value in entry.items():
            label = f"{where}[{name!r}]"
            if name in self._STATE_NUMBERS:
                array = _as_numeric(value, label)
                if array.size != 1:
                    raise ValueError(f"optimizer {label} must be a number, got shape {array.shape}")
                counter = name in ("func_evals", "n_iter")
                out[name] = int(array) if counter else array.reshape(()).astype(dtype)[()]
            elif name in self._STATE_VECTORS:
                out[name] = _flat_vector(value, numel, dtype, label)
            else:
                if not isinstance(value, (list, tuple)):
                    raise TypeError(f"optimizer {label} must be a list, got {type(value).__name__}")
                vectors = name in ("old_dirs", "old_stps")
                out[name] = [None if v is None and name == "al" else
                             (_flat_vector(v, numel, dtype, f"{label}[{i}]") if vectors
                              else _scalar(v, dtype, f"{label}[{i}]"))
                             for i, v in enumerate(value)]
        histories = [len(out[name]) for name in ("old_dirs", "old_stps", "ro") if name in out]
        if len(set(histories)) > 1 or any(h > group["history_size"] for h in histories):
            raise ValueError(f"optimizer {where}: old_dirs, old_stps and ro must have one common length "
                             f"<= history_size={group['history_size']}, got {histories}")
        return out


def _scalar(value: Any, dtype: np.dtype, label: str) -> Any:
    array = _as_numeric(value, label)
    if array.size != 1:
        raise ValueError(f"optimizer {label} must be a number, got shape {array.shape}")
    return array.reshape(()).astype(dtype)[()]


def _flat_vector(value: Any, numel: int, dtype: np.dtype, label: str) -> np.ndarray:
    array = _as_numeric(value, label)
    if array.shape != (numel,):
        raise ValueError(f"optimizer {label} must be a flat vector of the {numel} parameter values, "
                         f"got shape {array.shape}")
    return np.array(array, dtype=dtype)
