"""``Optimizer``: parameter groups, per-parameter state and torch's state-dict format.

An optimizer holds ``param_groups`` (a list of dicts: ``'params'`` plus the hyper-parameters,
filled in from ``defaults``) and ``state`` (a dict from each Parameter to a dict of ndarrays).
``state_dict()`` replaces the parameters by their running index over all groups, exactly as
``torch.optim.Optimizer.state_dict`` does, so ``{'state': {0: {...}, ...}, 'param_groups':
[{'lr': ..., 'params': [0, 1]}, ...]}`` round-trips between npconv and torch.

A subclass declares its hyper-parameters (``_HYPER``: name -> kind of check), the state it keeps
(``_state_kinds``) and implements ``_init_state`` and ``_update`` for one parameter. The base
class validates every group, gradient and state entry *before* it updates anything, so a step or
a ``load_state_dict`` that raises leaves parameters and state unchanged.
"""

from __future__ import annotations

import copy
import numbers
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from ..tensor import Tensor, enable_grad

__all__ = ["Optimizer", "required"]


class _RequiredParameter:
    """Marks a hyper-parameter every parameter group must give (``lr`` of SGD in old torch)."""

    def __repr__(self) -> str:
        return "<required parameter>"


required = _RequiredParameter()

_UNORDERED = ("optimizer parameters need to be organized in ordered collections, but the ordering "
              "of tensors in sets will change between runs. Please use a list instead.")
# torch's wording of the non-negative checks ("Invalid learning rate: -1")
_LABELS = {"lr": "learning rate", "eps": "epsilon value"}


def _is_real(value: Any) -> bool:
    if isinstance(value, (Tensor, np.ndarray)):
        return np.size(value) == 1 and np.asarray(getattr(value, "data", value)).dtype.kind in "fiu"
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _check_non_negative(value: Any, name: str) -> None:
    """``value`` must be a real number >= 0 (the checks torch makes on lr, eps, weight decay...)."""
    label = _LABELS.get(name, f"{name} value")
    if not _is_real(value):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if not float(value) >= 0.0:
        raise ValueError(f"Invalid {label}: {value} (expected a value >= 0)")


def _check_unit_interval(value: Any, name: str) -> None:
    if not _is_real(value):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"Invalid {name} value: {value} (expected 0 <= {name} <= 1)")


def _check_betas(value: Any, name: str) -> None:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name} must be a pair of floats, got {value!r}")
    for index, beta in enumerate(value):
        if not _is_real(beta):
            raise TypeError(f"{name}[{index}] must be a real number, got {beta!r}")
        if not 0.0 <= float(beta) < 1.0:
            raise ValueError(f"Invalid beta parameter at index {index}: {beta} (expected 0 <= beta < 1)")


def _check_flag(value: Any, name: str) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r}")


def _check_foreach(value: Any, name: str) -> None:
    # foreach only picks torch's implementation: every choice gives npconv's (identical) result
    if value is not None and not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be None or a bool, got {value!r}")


def _check_unsupported(value: Any, name: str) -> None:
    """capturable/differentiable/fused: torch's defaults are accepted, anything else refused."""
    if value is None or value is False:
        return
    raise ValueError(f"npconv optimizers do not support {name}={value!r} (CUDA graphs, fused kernels and "
                     "differentiable optimizer steps are torch features); leave it at its default")


def _check_positive_int(value: Any, name: str) -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"Invalid {name} value: {value} (expected an int >= 1)")


_CHECKS: dict[str, Callable[[Any, str], None]] = {
    "positive_int": _check_positive_int, "non_negative": _check_non_negative,
    "unit_interval": _check_unit_interval, "betas": _check_betas,
    "flag": _check_flag, "foreach": _check_foreach, "unsupported": _check_unsupported,
}


class Optimizer:
    """Base class of the optimizers: ``Optimizer(params, defaults)``.

    ``params`` is an iterable of Parameters, of ``(name, Parameter)`` pairs (as given by
    ``module.named_parameters()``) or of dicts defining parameter groups.
    """

    #: hyper-parameter name -> kind of check (a key of ``_CHECKS``); torch's flags included
    _HYPER: ClassVar[dict[str, str]] = {}

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        if isinstance(params, Tensor):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of Tensors or dicts, "
                f"but got {type(params).__name__}"
            )
        if isinstance(params, (set, frozenset)):
            raise TypeError(_UNORDERED)
        self._check_group(defaults, where="")
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

    # -- subclass contract ------------------------------------------------------------------
    def _state_kinds(self, group: dict[str, Any]) -> dict[str, str]:
        """The state one parameter of ``group`` keeps: name -> 'param' (shaped like it) or 'scalar'."""
        return {}

    def _optional_state(self) -> frozenset[str]:
        """State names this optimizer may hold for a parameter although its group does not need them."""
        return frozenset()

    def _init_state(self, param: np.ndarray, group: dict[str, Any]) -> dict[str, np.ndarray]:
        """Fresh state for one parameter (called on its first step)."""
        return {}

    def _update(self, theta: np.ndarray, grad: np.ndarray, state: dict[str, Any],
                group: dict[str, Any]) -> None:
        """Update ``theta`` (the parameter's array) in place from ``grad``."""
        raise NotImplementedError

    def _check_group(self, group: Mapping[str, Any], where: str = "") -> None:
        """Every hyper-parameter the group gives must pass its check (torch's messages)."""
        for name, kind in self._HYPER.items():
            if name in group and group[name] is not required:
                try:
                    _CHECKS[kind](group[name], name)
                except (TypeError, ValueError) as error:
                    if not where:
                        raise
                    raise type(error)(f"{where}: {error}") from None

    # -- groups -----------------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group ``{'params': [...], **options}``; missing options come from ``defaults``."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError("param_group must have a 'params' entry")
        tensors, names = _split_named(param_group["params"])
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
        self._check_group(group, where=f"param_groups[{len(self.param_groups)}]")
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
                    param.grad.numpy()[...] = 0

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; return ``closure()``'s loss if given.

        Every group, gradient and state entry is checked first: a step that raises changes nothing.
        """
        loss = self._evaluate_closure(closure)
        work = [(group, self._checked_gradients(i, group)) for i, group in enumerate(self.param_groups)]
        for group, pairs in work:
            for param, grad in pairs:
                state = self.state.get(param)
                if not state:
                    state = self._init_state(param.numpy(), group)
                self._update(param.numpy(), grad, state, group)
                if state:  # one that keeps nothing (SGD without momentum) gets no entry, as in torch
                    self.state[param] = state
        return loss

    @staticmethod
    def _evaluate_closure(closure: Callable[[], Any] | None) -> Any:
        if closure is None:
            return None
        with enable_grad():
            return closure()

    def _checked_gradients(self, index: int, group: dict[str, Any]) -> list[tuple[Tensor, np.ndarray]]:
        """The group's parameters that have a gradient, with that gradient's array, all validated."""
        self._check_group(group, where=f"param_groups[{index}]")
        kinds = self._state_kinds(group)
        pairs = []
        for position, param in enumerate(group["params"]):
            if param.grad is None:
                continue
            where = f"param_groups[{index}]['params'][{position}]"
            theta = param.numpy()
            grad = np.asarray(param.grad.numpy())
            if theta.dtype.kind not in "fc":
                raise TypeError(f"{where} must be a floating point or complex parameter, got {theta.dtype}")
            if grad.shape != theta.shape:
                raise ValueError(
                    f"{where}: a parameter of shape {theta.shape} has a gradient of shape {grad.shape}")
            if not np.can_cast(grad.dtype, theta.dtype, "same_kind"):
                raise TypeError(f"{where}: a {theta.dtype} parameter has a {grad.dtype} gradient")
            if not theta.flags.writeable:
                raise ValueError(f"{where}: the parameter's array is read-only (cannot be updated in place)")
            state = self.state.get(param)
            if state:
                _check_state_entry(state, kinds, self._optional_state(), theta, where)
            pairs.append((param, grad.astype(theta.dtype, copy=False)))
        return pairs

    # -- state dict -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """``{'state': {index: {name: Tensor}}, 'param_groups': [{..., 'params': [index]}]}``.

        Indices number the parameters in group order. Like torch, the state's tensors share memory
        with the optimizer's own arrays (not copies): copy them if you keep the dict while training.
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
        state = {(index_of[id(k)] if isinstance(k, Tensor) else k):
                 {name: Tensor(v) if isinstance(v, np.ndarray) else v for name, v in entry.items()}
                 for k, entry in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a dict from :meth:`state_dict` (npconv's or torch's; Tensors, ndarrays or torch tensors).

        Hyper-parameters of each group are replaced by the saved ones (missing ones keep their
        current value); state arrays are copied and cast to their parameter's dtype (``'step'``
        stays float32). The whole dict is validated first: when it does not fit (wrong layout,
        shapes, unknown state names, invalid hyper-parameters) a ``ValueError``/``TypeError`` names
        the mismatch and nothing changes.
        """
        saved_groups = self._validated_groups(state_dict)
        pairs = zip(self.param_groups, state_dict["param_groups"], strict=True)
        id_map = {saved_id: param for group, saved in pairs
                  for saved_id, param in zip(saved["params"], group["params"], strict=True)}
        saved_state = state_dict["state"]
        if not isinstance(saved_state, Mapping):
            raise TypeError(
                f"optimizer state_dict['state'] must be a mapping, got {type(saved_state).__name__}")
        group_of = {id(p): g for g in saved_groups for p in g["params"]}
        state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        for key, entry in saved_state.items():
            if key not in id_map:
                raise ValueError(f"optimizer state_dict['state'] has an entry {key!r} naming no parameter "
                                 f"of its param_groups (indices {sorted(id_map)})")
            param = id_map[key]
            where = f"state_dict['state'][{key!r}]"
            if not isinstance(entry, Mapping):
                raise TypeError(f"optimizer {where} must be a mapping, got {type(entry).__name__}")
            cast = self._loaded_state_entry(param, entry, group_of[id(param)], where)
            if cast:
                state[param] = cast
        self.__setstate__({"state": state, "param_groups": saved_groups})

    def _loaded_state_entry(self, param: Tensor, entry: Mapping[str, Any], group: dict[str, Any],
                            where: str) -> dict[str, Any]:
        """A validated, cast copy of one parameter's saved state (an optimizer with other state overrides)."""
        cast = {name: _cast_state_value(param.numpy(), name, value, where) for name, value in entry.items()}
        if cast:
            _check_state_entry(cast, self._state_kinds(group), self._optional_state(), param.numpy(), where)
        return cast

    def _validated_groups(self, state_dict: Any) -> list[dict[str, Any]]:
        """The saved param_groups merged over the current ones, each checked like a new group."""
        if not isinstance(state_dict, Mapping) or not {"state", "param_groups"} <= state_dict.keys():
            raise ValueError("optimizer state_dict must be a mapping with 'state' and 'param_groups', got "
                             + (f"keys {sorted(map(str, state_dict))}" if isinstance(state_dict, Mapping)
                                else type(state_dict).__name__))
        saved_groups = state_dict["param_groups"]
        if not isinstance(saved_groups, Sequence) or isinstance(saved_groups, (str, bytes)):
            raise TypeError(
                f"optimizer state_dict['param_groups'] must be a list, got {type(saved_groups).__name__}")
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                "loaded state dict has a different number of parameter groups: "
                f"{len(saved_groups)} saved, {len(self.param_groups)} in the optimizer"
            )
        merged_groups, seen_ids = [], set()
        for index, (group, saved) in enumerate(zip(self.param_groups, saved_groups, strict=True)):
            where = f"state_dict['param_groups'][{index}]"
            if not isinstance(saved, Mapping) or "params" not in saved:
                raise TypeError(f"optimizer {where} must be a mapping with 'params', got {saved!r:.60}")
            ids = saved["params"]
            if not isinstance(ids, Sequence) or isinstance(ids, (str, bytes)):
                raise TypeError(f"optimizer {where}['params'] must be a list of ints, got {ids!r:.80}")
            if len(ids) != len(group["params"]):
                raise ValueError(
                    "loaded state dict contains a parameter group that doesn't match the size of "
                    f"optimizer's group: group {index} has {len(ids)} saved parameters, "
                    f"the optimizer's has {len(group['params'])}"
                )
            for saved_id in ids:
                if not isinstance(saved_id, numbers.Integral) or isinstance(saved_id, bool):
                    raise TypeError(f"optimizer {where}['params'] must hold int indices, got {saved_id!r}")
                if saved_id in seen_ids:
                    raise ValueError(f"optimizer {where}['params'] repeats the index {saved_id}")
                seen_ids.add(saved_id)
            merged = {k: v for k, v in group.items() if k not in ("params", "param_names")}
            merged.update(copy.deepcopy({k: v for k, v in saved.items() if k != "params"}))
            if "betas" in merged and isinstance(merged["betas"], list):
                merged["betas"] = tuple(merged["betas"])
            self._check_group(merged, where=f"optimizer {where}")
            merged["params"] = group["params"]
            if "param_names" not in merged and "param_names" in group:
                merged["param_names"] = group["param_names"]
            merged_groups.append(merged)
        return merged_groups


def _split_named(params: Any) -> tuple[list[Tensor], list[str]]:
    """``params`` of a group as (tensors, names); names only when given as (name, tensor) pairs."""
    if isinstance(params, Tensor):
        params = [params]
    elif isinstance(params, (set, frozenset)):
        raise TypeError(_UNORDERED)
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
        raise ValueError("all optimizer params should be with/without names. Some param names are missing")
    for tensor in tensors:
        if not isinstance(tensor, Tensor):
            raise TypeError(
                f"optimizer can only optimize Tensors, but one of the params is {type(tensor).__name__}")
        if not tensor.is_leaf:
            raise ValueError("can't optimize a non-leaf Tensor")
    return tensors, names


def _as_numeric(value: Any, where: str) -> np.ndarray:
    """A saved state value (Tensor, ndarray, torch tensor or number) as an ndarray, or a TypeError."""
    if isinstance(value, Tensor):
        return value.numpy()
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor
        return np.asarray(value.detach().cpu().numpy())
    if isinstance(value, np.ndarray) or (isinstance(value, numbers.Number) and not isinstance(value, bool)):
        array = np.asarray(value)
        if array.dtype.kind in "fciu":
            return array
    raise TypeError(f"optimizer {where} must be a Tensor, an array or a number, got {type(value).__name__}")


def _cast_state_value(param: np.ndarray, name: str, value: Any, where: str) -> np.ndarray:
    """A copy of one saved state value, cast like torch's ``_process_value_according_to_param_policy``."""
    array = _as_numeric(value, f"{where}[{name!r}]")
    if name == "step":
        return np.array(array, dtype=array.dtype if array.dtype.kind == "f" else np.float32)
    if array.dtype.kind == "c" and param.dtype.kind != "c":
        raise TypeError(f"optimizer {where}[{name!r}] is complex but its parameter is {param.dtype}")
    return np.array(array, dtype=param.dtype)


def _check_state_entry(entry: Mapping[str, Any], kinds: dict[str, str], optional: frozenset[str],
                       param: np.ndarray, where: str) -> None:
    """A parameter's state must hold every name its group needs, each with its shape (and no others)."""
    for name in entry:
        if name not in kinds and name not in optional:
            raise ValueError(f"optimizer {where} has an unknown state entry {name!r} "
                             f"(expected {sorted(kinds)})")
    for name in kinds:
        if name not in entry:
            raise ValueError(f"optimizer {where} lacks the state entry {name!r} (has {sorted(entry)})")
    for name, value in entry.items():
        kind = kinds.get(name, "param" if name != "step" else "scalar")
        array = np.asarray(value)
        if kind == "param" and array.shape != param.shape:
            raise ValueError(f"optimizer {where}[{name!r}] has shape {array.shape}, "
                             f"but its parameter has shape {param.shape}")
        if kind == "scalar" and array.size != 1:
            raise ValueError(f"optimizer {where}[{name!r}] must be a scalar, got shape {array.shape}")
        if name == "step" and not (np.isfinite(array).all() and (array >= 0).all()):
            raise ValueError(f"optimizer {where}['step'] must be a finite count >= 0, got {array!r}")
