"""``Optimizer``: parameter groups, per-parameter state and torch's state-dict format.

An optimizer holds ``param_groups`` (a list of dicts: ``'params'`` plus the hyper-parameters,
filled in from ``defaults``) and ``state`` (a dict from each Parameter to a dict of ndarrays).
``state_dict()`` replaces the parameters by their running index over all groups, exactly as
``torch.optim.Optimizer.state_dict`` does, so ``{'state': {0: {...}, ...}, 'param_groups':
[{'lr': ..., 'params': [0, 1]}, ...]}`` round-trips between npconv and torch (via
:func:`npconv.load_torch` or after converting tensors with ``.numpy()``).

Subclasses implement ``step()`` and update ``p.data`` in place from ``p.grad.data``.
"""

from __future__ import annotations

import copy
import numbers
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from ..tensor import Tensor, enable_grad

__all__ = ["Optimizer", "required"]


class _RequiredParameter:
    """Marks a hyper-parameter every parameter group must give (``lr`` of SGD in old torch)."""

    def __repr__(self) -> str:
        return "<required parameter>"


required = _RequiredParameter()


def _check_non_negative(value: Any, name: str) -> None:
    """``value`` must be a real number >= 0 (the checks torch makes on lr, eps, weight decay...)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if not value >= 0.0:
        raise ValueError(f"Invalid {name}: {value} (expected a value >= 0)")


class Optimizer:
    """Base class of the optimizers: ``Optimizer(params, defaults)``.

    ``params`` is an iterable of Parameters, of ``(name, Parameter)`` pairs (as given by
    ``module.named_parameters()``) or of dicts defining parameter groups.
    """

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        if isinstance(params, Tensor):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of Tensors or dicts, "
                f"but got {type(params).__name__}"
            )
        if isinstance(params, (set, frozenset)):
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, but the ordering "
                "of tensors in sets will change between runs. Please use a list instead."
            )
        self.defaults = defaults
        self.state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        self.param_groups: list[dict[str, Any]] = []
        param_groups = list(params)
        if len(param_groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for param_group in param_groups:
            self.add_param_group(param_group)

    def __getstate__(self) -> dict[str, Any]:
        return {"defaults": self.defaults, "state": self.state, "param_groups": self.param_groups}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        text = type(self).__name__ + " ("
        for index, group in enumerate(self.param_groups):
            text += f"\nParameter Group {index}\n"
            for key in sorted(group.keys()):
                if key != "params":
                    text += f"    {key}: {group[key]}\n"
        return text + ")"

    # -- groups -----------------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group ``{'params': [...], **options}``; missing options come from ``defaults``."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError("param_group must have a 'params' entry")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, but the ordering "
                "of tensors in sets will change between runs. Please use a list instead."
            )
        else:
            params = list(params)
        tensors, names = [], []
        for item in params:
            if isinstance(item, tuple):
                if len(item) != 2:
                    raise TypeError(f"a named parameter must be a (name, Parameter) pair, got {item!r}")
                names.append(item[0])
                item = item[1]
            tensors.append(item)
        if names and len(names) != len(tensors):
            raise ValueError(
                "all optimizer params should be with/without names. Some param names are missing"
            )
        for tensor in tensors:
            if not isinstance(tensor, Tensor):
                raise TypeError(
                    f"optimizer can only optimize Tensors, but one of the params is {type(tensor).__name__}"
                )
            if not tensor.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor")
        group = dict(param_group)
        group["params"] = tensors
        if names:
            group["param_names"] = names
        for name, default in self.defaults.items():
            if default is required and name not in group:
                raise ValueError(
                    f"parameter group didn't specify a value of required optimization parameter {name}"
                )
            group.setdefault(name, default)
        if len({id(t) for t in tensors}) != len(tensors):
            raise ValueError("optimizer contains a parameter group with duplicate parameters")
        existing = {id(p) for g in self.param_groups for p in g["params"]}
        if existing & {id(t) for t in tensors}:
            raise ValueError("some parameters appear in more than one parameter group")
        if self.param_groups and ("param_names" in group) != ("param_names" in self.param_groups[0]):
            raise ValueError(
                "all optimizer param groups should be with/without names. "
                f"cannot add param group {'with' if names else 'without'} names to the optimizer"
            )
        self.param_groups.append(group)

    # -- gradients and steps ----------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset every parameter's ``.grad`` to None (or, with ``set_to_none=False``, to zeros)."""
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                if set_to_none:
                    param.grad = None
                else:
                    param.grad.data[...] = 0

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        raise NotImplementedError

    @staticmethod
    def _evaluate_closure(closure: Callable[[], Any] | None) -> Any:
        if closure is None:
            return None
        with enable_grad():
            return closure()

    def _params_with_grad(self, group: dict[str, Any]) -> Iterable[tuple[Tensor, np.ndarray]]:
        """The group's parameters that received a gradient, with that gradient's ndarray."""
        for param in group["params"]:
            if param.grad is None:
                continue
            grad = param.grad.data
            if grad.shape != param.data.shape:
                raise ValueError(
                    f"a parameter of shape {param.data.shape} has a gradient of shape {grad.shape}"
                )
            yield param, grad

    # -- state dict -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """``{'state': {index: {name: ndarray}}, 'param_groups': [{..., 'params': [index]}]}``.

        Indices number the parameters in group order. Like torch, the state's arrays are the
        optimizer's own (not copies): copy them if you keep the dict while training goes on.
        """
        index_of: dict[int, int] = {}
        start = 0

        def pack(group: dict[str, Any]) -> dict[str, Any]:
            nonlocal start
            packed = {k: v for k, v in group.items() if k != "params"}
            for i, p in enumerate(group["params"], start):
                index_of.setdefault(id(p), i)
            packed["params"] = [index_of[id(p)] for p in group["params"]]
            start += len(packed["params"])
            return packed

        groups = [pack(g) for g in self.param_groups]
        state = {(index_of[id(k)] if isinstance(k, Tensor) else k): v for k, v in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a dict from :meth:`state_dict` (npconv's or torch's, tensors as ndarrays).

        Hyper-parameters of each group are replaced by the saved ones; state arrays are copied
        and floating ones cast to their parameter's dtype (except ``'step'``). Nothing changes
        when the dict does not fit (a ``ValueError`` names the mismatch).
        """
        if not isinstance(state_dict, Mapping) or not {"state", "param_groups"} <= state_dict.keys():
            raise ValueError("optimizer state_dict must be a mapping with 'state' and 'param_groups' entries")
        groups = self.param_groups
        saved_groups = copy.deepcopy(list(state_dict["param_groups"]))
        if len(groups) != len(saved_groups):
            raise ValueError(
                "loaded state dict has a different number of parameter groups: "
                f"{len(saved_groups)} saved, {len(groups)} in the optimizer"
            )
        for index, (group, saved) in enumerate(zip(groups, saved_groups, strict=True)):
            if len(group["params"]) != len(saved.get("params", ())):
                raise ValueError(
                    "loaded state dict contains a parameter group that doesn't match the size of "
                    f"optimizer's group: group {index} has {len(saved.get('params', ()))} saved parameters, "
                    f"the optimizer's has {len(group['params'])}"
                )
        id_map = {saved_id: param for group, saved in zip(groups, saved_groups, strict=True)
                  for saved_id, param in zip(saved["params"], group["params"], strict=True)}
        state: defaultdict[Any, dict[str, Any]] = defaultdict(dict)
        for key, value in state_dict["state"].items():
            if key in id_map:
                param = id_map[key]
                state[param] = _cast_state(param, value, f"state[{key!r}]")
            else:
                state[key] = copy.deepcopy(value)
        for group, saved in zip(groups, saved_groups, strict=True):
            saved["params"] = group["params"]
            if "param_names" in group and "param_names" not in saved:
                saved["param_names"] = group["param_names"]
        self.__setstate__({"state": state, "param_groups": saved_groups})


def _cast_state(param: Tensor, value: Any, where: str, key: str | None = None) -> Any:
    """Deep-copy one parameter's saved state, casting arrays like torch's ``_cast``."""
    if isinstance(value, Tensor):
        value = value.data
    if isinstance(value, np.ndarray):
        if key == "step":
            return np.array(value, dtype=value.dtype if value.dtype.kind == "f" else np.float32)
        if value.shape != param.data.shape:
            raise ValueError(
                f"optimizer {where}[{key!r}] has shape {value.shape}, "
                f"but its parameter has shape {param.data.shape}"
            )
        if param.data.dtype.kind == "f" and value.dtype.kind in "fiub":
            return value.astype(param.data.dtype, copy=True)
        return value.copy()
    if isinstance(value, dict):
        return {k: _cast_state(param, v, where, k) for k, v in value.items()}
    if key == "step" and isinstance(value, numbers.Real):
        return np.array(value, dtype=np.float32)
    if isinstance(value, (list, tuple)):
        return type(value)(_cast_state(param, v, where) for v in value)
    return copy.deepcopy(value)
