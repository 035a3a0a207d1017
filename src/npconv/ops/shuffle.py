"""Pixel shuffle and its inverse: pure permutations of ``(*, C, H, W)`` (each is the other's backward).

``pixel_shuffle(r)``: ``(*, C r^2, H, W) -> (*, C, H r, W r)`` with
``y[..., c, h r + i, w r + j] = x[..., c r^2 + i r + j, h, w]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..tensor import Tensor, as_array, make_result

__all__ = ["pixel_shuffle", "pixel_unshuffle", "shuffle_array", "unshuffle_array"]


def shuffle_array(x: np.ndarray, r: int) -> np.ndarray:
    *lead, c, h, w = x.shape
    c_out = c // (r * r)
    y = x.reshape(*lead, c_out, r, r, h, w)
    k = len(lead)
    y = y.transpose(*range(k), k, k + 3, k + 1, k + 4, k + 2)  # (*, C, H, r, W, r)
    return np.ascontiguousarray(y).reshape(*lead, c_out, h * r, w * r)


def unshuffle_array(x: np.ndarray, r: int) -> np.ndarray:
    *lead, c, h, w = x.shape
    y = x.reshape(*lead, c, h // r, r, w // r, r)
    k = len(lead)
    y = y.transpose(*range(k), k, k + 2, k + 4, k + 1, k + 3)  # (*, C, r, r, H/r, W/r)
    return np.ascontiguousarray(y).reshape(*lead, c * r * r, h // r, w // r)


def pixel_shuffle(x: Any, upscale_factor: int) -> Tensor:
    r = upscale_factor
    return make_result(shuffle_array(as_array(x), r), (x,), lambda g: (unshuffle_array(g, r),),
                       "PixelShuffleBackward0")


def pixel_unshuffle(x: Any, downscale_factor: int) -> Tensor:
    r = downscale_factor
    return make_result(unshuffle_array(as_array(x), r), (x,), lambda g: (shuffle_array(g, r),),
                       "PixelUnshuffleBackward0")
