"""A NumPy reference for convolution, transposed convolution and padding: the torch-free oracle.

In the style of JAX's ``lax_reference``: a few lines of NumPy written for clarity (one einsum per
kernel tap), sharing no code with npconv. Shapes as in torch: ``x (N, C, *in)``, a convolution
weight ``(O, C/groups, *k)``, a transposed convolution weight ``(C, O/groups, *k)``.
``padding`` is an int, one int per spatial dim, one ``(lo, hi)`` pair per dim, or ``"valid"`` /
``"same"`` (torch's split: the smaller half before); negative widths crop.
"""

from __future__ import annotations

import itertools

import numpy as np

#: np.pad's mode for each of npconv's padding modes
PAD_MODES = {"zeros": "constant", "constant": "constant", "reflect": "reflect", "replicate": "edge",
             "circular": "wrap", "symmetric": "symmetric"}


def _per_dim(value, nd: int) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * nd


def pad_pairs(padding, kernel, dilation) -> tuple[tuple[int, int], ...]:
    """One ``(lo, hi)`` pair per spatial dim for any of the padding forms above."""
    nd = len(kernel)
    if padding == "valid":
        return ((0, 0),) * nd
    if padding == "same":
        totals = [d * (k - 1) for k, d in zip(kernel, _per_dim(dilation, nd), strict=True)]
        return tuple((t // 2, t - t // 2) for t in totals)
    return tuple(p if isinstance(p, (tuple, list)) else (p, p) for p in _per_dim(padding, nd))


def pad(x: np.ndarray, pads, mode: str = "zeros", value: float = 0.0) -> np.ndarray:
    """``x`` padded on its last ``len(pads)`` axes by ``(lo, hi)`` pairs (negative: cropped)."""
    lead = [(0, 0)] * (x.ndim - len(pads))
    grow = lead + [(max(lo, 0), max(hi, 0)) for lo, hi in pads]
    kwargs = {"constant_values": value} if PAD_MODES[mode] == "constant" else {}
    out = np.pad(x, grow, mode=PAD_MODES[mode], **kwargs)
    crop = tuple(slice(None) for _ in lead) + tuple(
        slice(max(-lo, 0), n - max(-hi, 0)) for (lo, hi), n in zip(pads, out.shape[len(lead):], strict=True))
    return out[crop]


def pad_grad(g: np.ndarray, size, pads, mode: str = "zeros") -> np.ndarray:
    """The adjoint of :func:`pad` (its gradient): each padded element's gradient added back to the
    input element it copies, by NumPy's index map of ``mode`` along each axis."""
    for axis, ((lo, hi), n) in enumerate(zip(pads, size, strict=True)):
        axis += g.ndim - len(pads)
        source = pad(np.arange(n), [(lo, hi)], "zeros" if PAD_MODES[mode] == "constant" else mode, -1)
        out = np.zeros(g.shape[:axis] + (n,) + g.shape[axis + 1:], g.dtype)
        kept = source >= 0  # constant padding reads no input
        np.add.at(np.moveaxis(out, axis, 0), source[kept], np.moveaxis(g, axis, 0)[kept])
        g = out
    return g


def _taps(xp: np.ndarray, kernel, stride, dilation, out):
    """For each kernel offset ``k``: ``k`` and ``xp[..., i*s + k*d]`` over output positions ``i``."""
    for offset in itertools.product(*(range(k) for k in kernel)):
        index = tuple(slice(j * d, j * d + (m - 1) * s + 1, s)
                      for j, d, m, s in zip(offset, dilation, out, stride, strict=True))
        yield offset, xp[(Ellipsis,) + index]


def conv(x: np.ndarray, w: np.ndarray, bias=None, stride=1, padding=0, dilation=1, groups: int = 1,
         padding_mode: str = "zeros") -> np.ndarray:
    """Cross-correlation ``y[n, g*Og + o, i] = b + sum_{c, k} w[g*Og + o, c, k] xp[n, g*Cg + c, i*s + k*d]``
    with ``xp = pad(x, padding, padding_mode)``."""
    nd = w.ndim - 2
    stride, dilation = _per_dim(stride, nd), _per_dim(dilation, nd)
    xp = pad(x, pad_pairs(padding, w.shape[2:], dilation), padding_mode)
    out = tuple((n - d * (k - 1) - 1) // s + 1
                for n, k, s, d in zip(xp.shape[2:], w.shape[2:], stride, dilation, strict=True))
    n, (o, cg) = x.shape[0], w.shape[:2]
    xg = xp.reshape((n, groups, cg) + xp.shape[2:])
    wg = w.reshape((groups, o // groups, cg) + w.shape[2:])
    y = np.zeros((n, groups, o // groups) + out, np.result_type(x, w))
    for offset, window in _taps(xg, w.shape[2:], stride, dilation, out):
        y += np.einsum("ngc...,goc->ngo...", window, wg[(Ellipsis,) + offset])
    y = y.reshape((n, o) + out)
    return y if bias is None else y + np.reshape(bias, (-1,) + (1,) * nd)


def dilate(x: np.ndarray, stride) -> np.ndarray:
    """``x`` with ``s - 1`` zeros between neighbours along each spatial axis."""
    nd = x.ndim - 2
    stride = _per_dim(stride, nd)
    out = np.zeros(x.shape[:2] + tuple((n - 1) * s + 1 for n, s in zip(x.shape[2:], stride, strict=True)),
                   x.dtype)
    out[(Ellipsis,) + tuple(slice(None, None, s) for s in stride)] = x
    return out


def conv_transpose(x: np.ndarray, w: np.ndarray, bias=None, stride=1, padding=0, output_padding=0,
                   groups: int = 1, dilation=1) -> np.ndarray:
    """Transposed convolution as a convolution of the input dilated by ``stride`` with the flipped,
    in/out-swapped kernel, padded ``d*(k-1) - lo`` before and ``d*(k-1) - hi + output_padding`` after."""
    nd = w.ndim - 2
    kernel = w.shape[2:]
    dilation, output_padding = _per_dim(dilation, nd), _per_dim(output_padding, nd)
    pads = pad_pairs(padding, kernel, dilation)
    c, og = w.shape[:2]
    flipped = w[(Ellipsis,) + (slice(None, None, -1),) * nd]
    flipped = flipped.reshape((groups, c // groups, og) + kernel).swapaxes(1, 2)
    flipped = flipped.reshape((og * groups, c // groups) + kernel)
    full = tuple((d * (k - 1) - lo, d * (k - 1) - hi + op)
                 for k, d, (lo, hi), op in zip(kernel, dilation, pads, output_padding, strict=True))
    return conv(dilate(x, stride), flipped, bias, 1, full, dilation, groups)


def conv_grad_input(gy: np.ndarray, w: np.ndarray, input_size, stride=1, padding=0, dilation=1,
                    groups: int = 1) -> np.ndarray:
    """``d<conv(x, w), gy>/dx`` for zero padding: the transposed convolution of ``gy`` whose output
    padding restores ``input_size`` (rows the strides skip get zero)."""
    nd = w.ndim - 2
    stride, dilation = _per_dim(stride, nd), _per_dim(dilation, nd)
    pads = pad_pairs(padding, w.shape[2:], dilation)
    covered = [(m - 1) * s - lo - hi + d * (k - 1) + 1 for m, s, (lo, hi), d, k in
               zip(gy.shape[2:], stride, pads, dilation, w.shape[2:], strict=True)]
    output_padding = [n - c for n, c in zip(input_size, covered, strict=True)]
    return conv_transpose(gy, w, None, stride, pads, output_padding, groups, dilation)


def conv_grad_weight(x: np.ndarray, gy: np.ndarray, kernel, stride=1, padding=0, dilation=1,
                     groups: int = 1) -> np.ndarray:
    """``d<conv(x, w), gy>/dw[o, c, k] = sum_{n, i} gy[n, o, i] xp[n, g*Cg + c, i*s + k*d]`` (zeros)."""
    nd = len(kernel)
    stride, dilation = _per_dim(stride, nd), _per_dim(dilation, nd)
    xp = pad(x, pad_pairs(padding, kernel, dilation))
    n, c = x.shape[:2]
    o, out = gy.shape[1], gy.shape[2:]
    xg = xp.reshape((n, groups, c // groups) + xp.shape[2:])
    gyg = gy.reshape((n, groups, o // groups, -1))
    gw = np.zeros((groups, o // groups, c // groups) + tuple(kernel), np.result_type(x, gy))
    for offset, window in _taps(xg, kernel, stride, dilation, out):
        window = window.reshape((n, groups, c // groups, -1))
        gw[(Ellipsis,) + offset] = np.einsum("ngcp,ngop->goc", window, gyg)
    return gw.reshape((o, c // groups) + tuple(kernel))


def conv_passes(x: np.ndarray, w: np.ndarray, gy: np.ndarray, geom) -> tuple[np.ndarray, ...]:
    """``y = conv(x, w)``, ``d<y, gy>/dx`` and ``d<y, gy>/dw`` for a ConvGeometry with zero padding
    ``geom.pads(x's size)``, computed in double precision and returned in ``x``'s dtype (for complex
    operands the transposes, not the adjoints: pass conjugates for ``J^H gy``)."""
    wide = np.result_type(x, w, gy, np.float64)
    xw, ww, gyw = (np.asarray(a, wide) for a in (x, w, gy))
    args = (geom.stride, geom.pads(x.shape[2:]), geom.dilation, geom.groups)
    y = conv(xw, ww, None, *args)
    gx = conv_grad_input(gyw, ww, x.shape[2:], *args)
    gw = conv_grad_weight(xw, gyw, w.shape[2:], *args)
    return y.astype(x.dtype), gx.astype(x.dtype), gw.astype(x.dtype)
