"""Fold an eval-mode BatchNorm into the preceding convolution or linear layer, as
``torch.nn.utils.fusion``: ``w' = w * gamma / sqrt(var + eps)`` (per output channel),
``b' = (b - mean) * gamma / sqrt(var + eps) + beta``; and :func:`optimize_for_inference`, which
does that and fuses activations over a whole model (as ``torch.jit.optimize_for_inference``)."""

from __future__ import annotations

import ast
import copy
import functools
import inspect
import textwrap
from typing import Any

import numpy as np

from ...tensor import Tensor, as_array
from ..modules.batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d
from ..modules.container import Sequential
from ..modules.conv import (
    Conv1d,
    Conv2d,
    Conv3d,
    ConvNd,
    ConvTranspose1d,
    ConvTranspose2d,
    ConvTranspose3d,
    ConvTransposeNd,
)
from ..modules.fused import ChunkedSequential, ConvActivation, fusable_activation
from ..modules.lazy import LazyModuleMixin
from ..modules.linear import Identity
from ..modules.module import Module, has_call_hooks
from ..parameter import Parameter
from .parametrize import is_parametrized

__all__ = ["fuse_conv_bn_eval", "fuse_conv_bn_weights", "fuse_linear_bn_eval", "fuse_linear_bn_weights",
           "optimize_for_inference"]


def _array(value: Any) -> np.ndarray | None:
    return None if value is None else as_array(value)


def fuse_conv_bn_weights(conv_w: Any, conv_b: Any, bn_rm: Any, bn_rv: Any, bn_eps: float, bn_w: Any,
                         bn_b: Any, transpose: bool = False) -> tuple[Parameter, Parameter]:
    """Fused ``(weight, bias)`` Parameters of a conv followed by a BatchNorm with these statistics."""
    w, rm, rv = as_array(conv_w), as_array(bn_rm), as_array(bn_rv)
    b = _array(conv_b)
    weight_dtype = w.dtype
    bias_dtype = b.dtype if b is not None else weight_dtype
    b = np.zeros_like(rm) if b is None else b
    gamma = np.ones_like(rm) if bn_w is None else as_array(bn_w)
    beta = np.zeros_like(rm) if bn_b is None else as_array(bn_b)
    inv_std = 1 / np.sqrt(rv + rv.dtype.type(bn_eps))
    shape = [1, -1] + [1] * (w.ndim - 2) if transpose else [-1, 1] + [1] * (w.ndim - 2)
    fused_w = (w * (gamma * inv_std).reshape(shape)).astype(weight_dtype, copy=False)
    fused_b = ((b - rm) * inv_std * gamma + beta).astype(bias_dtype, copy=False)
    requires_w = conv_w.requires_grad if isinstance(conv_w, Tensor) else True
    requires_b = conv_b.requires_grad if isinstance(conv_b, Tensor) else requires_w
    return Parameter(fused_w, requires_w), Parameter(fused_b, requires_b)


def _check_eval(a: Any, b: Any) -> None:
    if a.training or b.training:
        raise ValueError("Fusion only for eval! Call .eval() on both modules first")
    if b.running_mean is None or b.running_var is None:
        raise ValueError("fusion needs the BatchNorm's running statistics (track_running_stats=True)")


def fuse_conv_bn_eval(conv: Any, bn: Any, transpose: bool = False) -> Any:
    """A copy of ``conv`` whose output equals ``bn(conv(x))`` in eval mode."""
    _check_eval(conv, bn)
    fused = _copy_but_params(conv)
    fused.weight, fused.bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var,
                                                    bn.eps, bn.weight, bn.bias, transpose)
    return fused


def _copy_but_params(module: Any) -> Any:
    """A deep copy of ``module`` that shares its ``weight`` and ``bias`` (the caller replaces both: copying
    them first would only be thrown away)."""
    memo = {id(p): p for p in (module.weight, module.bias) if p is not None}
    return copy.deepcopy(module, memo)


def fuse_linear_bn_weights(linear_w: Any, linear_b: Any, bn_rm: Any, bn_rv: Any, bn_eps: float, bn_w: Any,
                           bn_b: Any) -> tuple[Parameter, Parameter]:
    """Fused ``(weight, bias)`` of a Linear followed by a BatchNorm1d with these statistics."""
    return fuse_conv_bn_weights(linear_w, linear_b, bn_rm, bn_rv, bn_eps, bn_w, bn_b)


def fuse_linear_bn_eval(linear: Any, bn: Any) -> Any:
    """A copy of ``linear`` whose output equals ``bn(linear(x))`` in eval mode."""
    _check_eval(linear, bn)
    if linear.out_features != bn.num_features:
        raise ValueError("To fuse, linear.out_features must equal bn.num_features")
    fused = _copy_but_params(linear)
    fused.weight, fused.bias = fuse_linear_bn_weights(linear.weight, linear.bias, bn.running_mean,
                                                      bn.running_var, bn.eps, bn.weight, bn.bias)
    return fused


def optimize_for_inference(model: Module) -> Module:
    """An eval-mode copy of ``model`` for inference: BatchNorm folded into the preceding convolution,
    activations fused into the convolution's output pass, parameters not requiring grad.

    ``model`` itself is left unchanged. What is fused (everything else is kept as it is):

    * in every ``Sequential`` (or subclass that keeps ``Sequential.forward``): a convolution followed
      by a ``BatchNorm1d/2d/3d`` with running statistics and ``num_features == out_channels``
      (folded, :func:`fuse_conv_bn_eval`), then by a ``ReLU``, ``ReLU6``/``Hardtanh`` or ``SiLU``
      (a :class:`~npconv.nn.ConvActivation`); a convolution directly followed by one of these
      activations is fused too. The consumed modules become ``Identity`` (indices stay);
    * in other modules, torchvision's naming: a convolution child ``conv<S>`` and a BatchNorm child
      ``bn<S>`` with the same suffix (``conv1``/``bn1`` in ResNet and its blocks) are folded, the
      BatchNorm becomes ``Identity``, where the module's ``forward`` (read from its source, with every
      method it reaches through ``self``) provably applies ``bn<S>`` to the output of ``conv<S>`` and
      to nothing else: ``self.bn<S>(self.conv<S>(...))``, or ``v = self.conv<S>(...)`` directly
      followed by ``v = self.bn<S>(v)``, each module referenced once. A pre-activation block (``bn1``
      before ``conv1``), a source that cannot be read, or ``self`` leaving that code (passed to a
      function, ``super()``, a property) keeps the BatchNorms. A ``ReLU``, ``ReLU6``/``Hardtanh`` or
      ``SiLU`` child applied to such a pair's output and referenced nowhere else
      (``self.relu(self.bn1(self.conv1(x)))`` in ResNet's stem, or the next statement
      ``v = self.relu(v)``) is fused into the folded convolution too (a ``ConvActivation``; the
      activation child becomes ``Identity``); torchvision's blocks share their ``relu`` with the
      residual path and keep it.

    A plain ``Sequential`` left holding convolutions and otherwise only ``ConvActivation``,
    ReLU/Hardtanh/SiLU, ``Identity`` and ``Sequential`` containers of these becomes a
    :class:`~npconv.nn.ChunkedSequential` (its class only: children, names and hooks kept), which runs
    a batch with large intermediate results in chunks of images (MobileNetV2's inverted residual
    blocks).

    Modules with hooks, parametrized or uninitialized (lazy) convolutions, grouped transposed
    convolutions (their BatchNorm is kept) and BatchNorms without
    running statistics (which normalise with batch statistics in eval mode) are not fused. Outputs
    equal ``model.eval()``'s within the rounding of the folded weights (float32 ~1e-6 relative). The
    result is for inference: it has no BatchNorm left to train.
    """
    if not isinstance(model, Module):
        raise TypeError(f"optimize_for_inference: model must be an npconv.nn.Module, got "
                        f"{type(model).__name__}")
    optimized = copy.deepcopy(model).eval()
    for module in list(optimized.modules()):
        if isinstance(module, Sequential) and type(module).forward is Sequential.forward:
            _fuse_sequential(module)
        elif not isinstance(module, ConvActivation):
            _fuse_named_pairs(module)
    for module in list(optimized.modules()):
        if type(module) is Sequential and ChunkedSequential.runs_per_image(module):
            module.__class__ = ChunkedSequential  # children, names and hooks kept
    optimized.requires_grad_(False)
    return optimized


_TRANSPOSED = (ConvTranspose1d, ConvTranspose2d, ConvTranspose3d, ConvTransposeNd)
_CONVOLUTIONS = (Conv1d, Conv2d, Conv3d, ConvNd, *_TRANSPOSED)  # their lazy forms are subclasses
_BATCHNORMS = (BatchNorm1d, BatchNorm2d, BatchNorm3d)


def _fusable_conv(module: Any) -> bool:
    return (isinstance(module, _CONVOLUTIONS) and not has_call_hooks(module) and not is_parametrized(module)
            and not (isinstance(module, LazyModuleMixin) and module.has_uninitialized_params()))


def _foldable(conv: Any, bn: Any) -> bool:
    # a grouped transposed weight (C_in, C_out/groups, *k) does not scale per output channel on one axis
    return (_fusable_conv(conv) and isinstance(bn, _BATCHNORMS) and not has_call_hooks(bn)
            and bn.running_mean is not None and bn.running_var is not None
            and bn.num_features == conv.out_channels
            and not (isinstance(conv, _TRANSPOSED) and conv.groups > 1))


def _fold(conv: Any, bn: Any) -> Any:
    return fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, _TRANSPOSED))


def _fuse_sequential(sequential: Sequential) -> None:
    children = sequential._modules
    names = list(children)
    i = 0
    while i < len(names):
        conv = children[names[i]]
        if not _fusable_conv(conv):
            i += 1
            continue
        j = i + 1
        if j < len(names) and _foldable(conv, children[names[j]]):
            conv = _fold(conv, children[names[j]])
            children[names[j]] = Identity()
            j += 1
        activation = children[names[j]] if j < len(names) else None
        if activation is not None and fusable_activation(activation) and not has_call_hooks(activation):
            conv = ConvActivation(conv, activation)
            children[names[j]] = Identity()
            j += 1
        children[names[i]] = conv
        i = j


def _fuse_named_pairs(module: Module) -> None:
    children = module._modules
    pairs = [(name, "bn" + name[len("conv"):]) for name in children
             if name.startswith("conv") and "bn" + name[len("conv"):] in children]
    if not pairs:
        return
    composed, activated = _composed_pairs(type(module))
    for name, partner in pairs:
        if (name, partner) in composed and _foldable(children[name], children[partner]):
            children[name] = _fold(children[name], children[partner])
            children[partner] = Identity()
            activation = activated.get(name)
            if (activation is not None and children.get(activation) is not None
                    and fusable_activation(children[activation])
                    and not has_call_hooks(children[activation]) and _fusable_conv(children[name])):
                children[name] = ConvActivation(children[name], children[activation])
                children[activation] = Identity()


@functools.lru_cache(maxsize=256)
def _composed_pairs(cls: type) -> tuple[frozenset[tuple[str, str]], dict[str, str]]:
    """The ``(conv<S>, bn<S>)`` attribute pairs that ``cls.forward`` (with every method it reaches on
    ``self``) provably composes as ``bn<S>(conv<S>(...))`` with no other use of either, and for such a
    ``conv<S>`` the attribute ``act`` applied to that and to nothing else, ``act(bn<S>(conv<S>(...)))``
    (``{conv<S>: act}``): see :func:`optimize_for_inference`. Empty where a source cannot be read, or
    where ``self`` leaves the methods' sight (passed to a function, ``super()``, a property)."""
    functions = _reached_methods(cls)
    if not functions:
        return frozenset(), {}
    uses: dict[str, int] = {}
    composed: set[tuple[str, str]] = set()
    for function in functions:
        for node in ast.walk(function):
            name = _self_attribute(node, function)
            if name is not None:
                uses[name] = uses.get(name, 0) + 1
            if isinstance(node, ast.Call):  # self.bn<S>(self.conv<S>(...)), self.act(self.bn<S>(...))
                outer, inner = _self_call(node, function), None
                if outer is not None and len(node.args) == 1 and isinstance(node.args[0], ast.Call):
                    inner = _self_call(node.args[0], function)
                if outer and inner:
                    composed.add((inner, outer))
            for field in ("body", "orelse", "finalbody"):  # v = self.conv<S>(...); v = self.bn<S>(v)
                statements = getattr(node, field, None)
                if isinstance(statements, list):
                    composed.update(_assigned_pairs(statements, function))
    pairs = frozenset((conv, bn) for conv, bn in composed
                      if conv.startswith("conv") and bn == "bn" + conv[len("conv"):] and uses.get(conv) == 1
                      and uses.get(bn) == 1)
    activated = {conv: act for conv, bn in pairs for inner, act in composed
                 if inner == bn and act not in (conv, bn) and uses.get(act) == 1}
    return pairs, activated


def _reached_methods(cls: type) -> list[ast.FunctionDef]:
    """The parsed ``forward`` of ``cls`` and every method it reaches through ``self.<method>``
    (transitively); empty where one cannot be read, ``self`` escapes one of them, or one reads a
    property, class- or static method (code the analysis would not see)."""
    functions: list[ast.FunctionDef] = []
    pending, seen = ["forward"], set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        tree = _method_tree(cls, name)
        if tree is None or len(seen) > _MAX_METHODS or _self_escapes(tree):
            return []
        functions.append(tree)
        for node in ast.walk(tree):
            attribute = _self_attribute(node, tree)
            if attribute is None:
                continue
            if attribute in _REGISTRIES:  # self._modules['conv1'], self.__dict__: submodules out of sight
                return []
            static = inspect.getattr_static(cls, attribute, None)
            if static is not None and static is inspect.getattr_static(Module, attribute, None):
                return []  # Module's own machinery (children(), modules(), apply(), ...) reaches submodules
            if inspect.isfunction(static):
                pending.append(attribute)
            elif isinstance(static, (property, classmethod, staticmethod)):
                return []
    return functions


#: Methods :func:`_reached_methods` reads at most before giving up (no fold).
_MAX_METHODS = 32
#: A module's registries: a method reading one reaches submodules by other names than ``self.<name>``.
_REGISTRIES = frozenset({"_modules", "_parameters", "_buffers", "__dict__"})


def _self_escapes(function: ast.FunctionDef) -> bool:
    """Whether ``self`` is used other than as ``self.X`` (passed on, aliased) or ``super()`` is called."""
    self_name = function.args.args[0].arg
    attribute_bases = {id(node.value) for node in ast.walk(function) if isinstance(node, ast.Attribute)}
    for node in ast.walk(function):
        if isinstance(node, ast.Name) and node.id == self_name and id(node) not in attribute_bases:
            return True
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super":
            return True
    return False


def _method_tree(cls: type, name: str) -> ast.FunctionDef | None:
    """The parsed source of method ``name`` of ``cls`` (None where it cannot be read)."""
    try:
        source = textwrap.dedent(inspect.getsource(getattr(cls, name)))
        tree = ast.parse(source).body[0]
    except (OSError, TypeError, SyntaxError, IndexError, AttributeError):
        return None
    if not isinstance(tree, ast.FunctionDef) or not tree.args.args:
        return None
    return tree


def _self_attribute(node: ast.AST, function: ast.FunctionDef) -> str | None:
    """``X`` where ``node`` is ``self.X`` (``self``: the method's first parameter)."""
    if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id == function.args.args[0].arg):
        return node.attr
    return None


def _self_call(node: ast.Call, function: ast.FunctionDef) -> str | None:
    """``X`` where ``node`` is ``self.X(...)`` without keywords or starred arguments."""
    if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
        return None
    return _self_attribute(node.func, function)


def _assigned_pairs(statements: list, function: ast.FunctionDef) -> set[tuple[str, str]]:
    """``(conv, bn)`` for each ``v = self.conv(...)`` directly followed by ``v = self.bn(v)``."""
    pairs = set()
    for first, second in zip(statements[:-1], statements[1:], strict=True):
        if not (isinstance(first, ast.Assign) and isinstance(second, ast.Assign)
                and len(first.targets) == 1 and len(second.targets) == 1
                and isinstance(first.targets[0], ast.Name) and isinstance(second.targets[0], ast.Name)
                and first.targets[0].id == second.targets[0].id
                and isinstance(first.value, ast.Call) and isinstance(second.value, ast.Call)):
            continue
        conv, bn = _self_call(first.value, function), _self_call(second.value, function)
        argument = second.value.args[0] if len(second.value.args) == 1 else None
        if (conv and bn and isinstance(argument, ast.Name) and argument.id == first.targets[0].id):
            pairs.add((conv, bn))
    return pairs
