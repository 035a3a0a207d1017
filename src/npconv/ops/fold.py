"""Sliding-window extraction (``unfold``, im2col) and its adjoint (``fold``, col2im), on the
convolution core's window machinery (:func:`npconv.kernels.gemm.windows`, ``ConvGeometry.tap_region``).

``unfold``: ``x (N, C, *in) -> (N, C * prod(k), L)``, row ``c * prod(k) + flat(offset)`` and column
``flat(o)`` hold ``xp[n, c, o * stride + offset * dilation]`` of the zero-padded input.
``fold`` sums each column back onto those positions (overlaps add) and crops the padding.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..geometry import ConvGeometry
from ..kernels.gemm import windows
from ..kernels.padding import pad_array
from ..tensor import Tensor, as_array, make_result

__all__ = ["im2col", "col2im", "unfold", "fold"]


def _padded(x: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    pads = geom.pads(x.shape[2:])
    return pad_array(x, pads) if any(lo or hi for lo, hi in pads) else x


def im2col(x: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """The windows of ``x (N, C, *in)`` as columns ``(N, C * prod(k), L)``."""
    out_size = geom.output_size(x.shape[2:])
    view = windows(_padded(x, geom), geom, out_size)  # (N, C, *out, *k)
    nd = geom.ndim
    order = (0, 1) + tuple(range(2 + nd, 2 + 2 * nd)) + tuple(range(2, 2 + nd))
    cols = view.transpose(order)  # (N, C, *k, *out)
    return np.ascontiguousarray(cols).reshape(x.shape[0], -1, int(np.prod(out_size)))


def col2im(cols: np.ndarray, geom: ConvGeometry, output_size: Sequence[int]) -> np.ndarray:
    """Adjoint of :func:`im2col` for an image of spatial ``output_size``: ``(N, C * prod(k), L) ->
    (N, C, *output_size)``, overlapping window entries summed."""
    n = cols.shape[0]
    kernel = geom.kernel_size
    blocks = geom.output_size(output_size)
    per = cols.reshape((n, -1) + kernel + blocks)
    image = np.zeros((n, per.shape[1]) + geom.padded_size(output_size), dtype=cols.dtype)
    lead = (slice(None), slice(None))
    for offset in itertools.product(*(range(k) for k in kernel)):
        image[lead + geom.tap_region(offset, blocks)] += per[lead + offset]
    return np.ascontiguousarray(image[lead + geom.interior(output_size)])


def unfold(x: Any, geom: ConvGeometry) -> Tensor:
    """Differentiable :func:`im2col` of batched ``x``; its backward is :func:`col2im`."""
    data = as_array(x)
    size = data.shape[2:]
    return make_result(im2col(data, geom), (x,), lambda g: (col2im(g, geom, size),), "Im2ColBackward0")


def fold(cols: Any, geom: ConvGeometry, output_size: Sequence[int]) -> Tensor:
    """Differentiable :func:`col2im`; its backward is :func:`im2col`."""
    size = tuple(output_size)
    return make_result(col2im(as_array(cols), geom, size), (cols,), lambda g: (im2col(g, geom),),
                       "Col2ImBackward0")
