"""Matrix products with torch's gradients: ``matmul`` (``@``), ``mm``, ``bmm``, ``dot``, ``einsum``.

The gradient of ``x @ y`` is ``g @ y^H`` and ``x^H @ g`` (conjugate transposes), summed back over
broadcast batch dims; ``einsum``'s gradient for each operand is the einsum of the output gradient
with the other operands, mapped back to that operand's subscripts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd import as_array, conj, make_result, sum_to_shape
from .elementwise import _grad_to, _operands

__all__ = ["matmul", "mm", "bmm", "dot", "einsum"]


def matmul(input: Any, other: Any) -> Any:
    """``input @ other`` with NumPy/torch broadcasting of batch dims (1-D operands are vectors)."""
    _, (x, y) = _operands(input, other)
    if x.ndim == 0 or y.ndim == 0:
        raise RuntimeError(
            f"both arguments to matmul need to be at least 1D, but they are {x.ndim}D and {y.ndim}D"
        )
    try:
        out = np.matmul(x, y)
    except ValueError as error:
        raise RuntimeError(f"mat1 and mat2 shapes cannot be multiplied ({x.shape} and {y.shape})") from error
    xs, ys = as_array(input), as_array(other)

    def backward(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # treat 1-d operands as (1, k) and (k, 1) matrices; restore the axes g lacks
        xx = x[None, :] if x.ndim == 1 else x
        yy = y[:, None] if y.ndim == 1 else y
        gg = np.asarray(g)
        if y.ndim == 1:
            gg = np.expand_dims(gg, -1)
        if x.ndim == 1:
            gg = np.expand_dims(gg, -2)
        gx = np.matmul(gg, conj(np.swapaxes(yy, -1, -2)))
        gy = np.matmul(conj(np.swapaxes(xx, -1, -2)), gg)
        if x.ndim == 1:
            gx = gx[..., 0, :]
        if y.ndim == 1:
            gy = gy[..., 0]
        return _grad_to(gx, xs), _grad_to(gy, ys)

    return make_result(
        out, (input, other), backward, "MmBackward0" if x.ndim == y.ndim == 2 else "MatmulBackward0"
    )


def mm(input: Any, mat2: Any) -> Any:
    x, y = as_array(input), as_array(mat2)
    if x.ndim != 2 or y.ndim != 2:
        raise RuntimeError(f"mm: both arguments must be 2-D matrices, but got {x.ndim}-D and {y.ndim}-D")
    return matmul(input, mat2)


def bmm(input: Any, mat2: Any) -> Any:
    x, y = as_array(input), as_array(mat2)
    if x.ndim != 3 or y.ndim != 3:
        raise RuntimeError(
            f"bmm: both arguments must be 3-D batches of matrices, but got {x.ndim}-D and {y.ndim}-D"
        )
    if x.shape[0] != y.shape[0]:
        raise RuntimeError(f"bmm: batch sizes must match, but got {x.shape[0]} and {y.shape[0]}")
    return matmul(input, mat2)


def dot(input: Any, other: Any) -> Any:
    x, y = as_array(input), as_array(other)
    if x.ndim != 1 or y.ndim != 1:
        raise RuntimeError(f"1D tensors expected, but got {x.ndim}D and {y.ndim}D tensors")
    if x.dtype != y.dtype:
        raise RuntimeError(
            f"dot : expected both vectors to have same dtype, but found {x.dtype} and {y.dtype}"
        )
    return matmul(input, other)


def einsum(equation: str, *operands: Any) -> Any:
    """``numpy.einsum(equation, ...)`` with gradients (explicit or implicit output, ``...`` allowed)."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    if not isinstance(equation, str):
        raise TypeError(f"einsum equation must be a str, but got {type(equation).__name__}")
    _, arrays = _operands(*operands)
    equation = equation.replace(" ", "")
    try:
        out = np.asarray(np.einsum(equation, *arrays, optimize=len(arrays) > 2))
    except ValueError as error:
        raise RuntimeError(f"einsum(): {error}") from error
    inputs_spec, _, output_spec = equation.partition("->")
    specs = inputs_spec.split(",")
    if "->" not in equation:
        letters = sorted({c for c in inputs_spec if c.isalpha() and inputs_spec.count(c) == 1})
        output_spec = ("..." if "..." in inputs_spec else "") + "".join(letters)
    originals = [as_array(o) for o in operands]

    def backward(g: np.ndarray) -> list[np.ndarray]:
        grads = []
        for i, spec in enumerate(specs):
            others = [conj(a) for j, a in enumerate(arrays) if j != i]
            other_specs = [s for j, s in enumerate(specs) if j != i]
            target = spec
            if len(set(target.replace("...", ""))) != len(target.replace("...", "")):
                raise RuntimeError(
                    "npconv's einsum backward does not support repeated subscripts in one operand"
                )
            # letters of the operand that appear nowhere else are summed out: broadcast them back
            known = set(output_spec) | set("".join(other_specs))
            missing = [c for c in target.replace("...", "") if c not in known]
            sub = (
                ",".join([output_spec, *other_specs]) + "->" + "".join(c for c in target if c not in missing)
            )
            if "..." in target:
                sub = ",".join([output_spec, *other_specs]) + "->" + target.replace("".join(missing), "")
            partial = np.einsum(sub, g, *others)
            if missing:
                shape = list(partial.shape)
                full_shape = arrays[i].shape
                expand = [k for k, c in enumerate(target.replace("...", "")) if c in missing]
                for k in expand:
                    partial = np.expand_dims(partial, k)
                partial = np.broadcast_to(partial, full_shape)
                del shape
            grads.append(_grad_to(sum_to_shape(partial, arrays[i].shape), originals[i]))
        return grads

    return make_result(out, operands, backward, "EinsumBackward0")
