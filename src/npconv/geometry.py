"""Convolution geometry: the one place that normalises arguments and owns every size formula.

For each spatial dimension with input size ``n``, kernel ``k``, stride ``s``, dilation ``d`` and
padding ``(lo, hi)``:

* effective kernel extent   ``e = d * (k - 1) + 1``
* convolution output size   ``out = (n + lo + hi - e) // s + 1``
* transposed output size    ``(n - 1) * s - lo - hi + e + output_padding``
* ``'same'`` (SAME_UPPER)   ``out = ceil(n / s)``, total padding
  ``t = max(0, (out - 1) * s + e - n)``, ``lo = t // 2``, ``hi = t - lo`` (for ``s == 1`` this is
  torch's ``'same'``); ``'same_lower'`` puts the odd element on the low side.
* pooling output size        ``out = floor_or_ceil((n + lo + hi - e) / s) + 1`` (see
  :meth:`ConvGeometry.pool_output_size` for ``ceil_mode``)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .checks import INT64_MAX, check_int, is_int, must, shape_text

__all__ = [
    "ConvGeometry", "PADDING_STRINGS", "PADDING_MODES", "PAD_MODES", "normalize_tuple", "normalize_padding",
    "check_padding_mode", "pad_mode", "check_pad_widths",
]

PADDING_STRINGS = ("valid", "same", "same_lower")
# The one padding-mode table: a layer's ``padding_mode`` -> the mode of ``F.pad`` and the kernels.
PADDING_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular",
                 "symmetric": "symmetric"}
PAD_MODES = tuple(dict.fromkeys(PADDING_MODES.values()))  # F.pad's modes


def normalize_tuple(value: Any, ndim: int, name: str, minimum: int | None = None,
                    expand: bool = True) -> tuple[int, ...]:
    """``value`` (an int or a sequence of ``ndim`` ints; with ``expand`` one value in a sequence stands
    for all, as torch's convolutions read a stride, padding or dilation) as a tuple of ``ndim`` ints in
    ``[minimum, 2**63 - 1]``: TypeError for a non-int, ValueError for a wrong length or value."""
    expected = f"be an int or a tuple of {ndim} ints"
    if is_int(value):
        result = (int(value),) * ndim
    elif isinstance(value, Sequence) and not isinstance(value, str):
        if not all(is_int(v) for v in value):
            raise TypeError(must(name, expected, repr(value)))
        result = tuple(int(v) for v in value)
        if len(result) == 1 and ndim != 1 and expand:
            result = result * ndim
        if len(result) != ndim:
            raise ValueError(must(name, f"{expected} for a {ndim}-d convolution",
                                  f"{value!r} ({len(result)} values)"))
    else:
        raise TypeError(must(name, expected, repr(value)))
    if minimum is not None and any(v < minimum for v in result):
        kind = "positive" if minimum == 1 else "non-negative"
        raise ValueError(must(name, f"be {kind} (>= {minimum})", repr(value)))
    if any(abs(v) > INT64_MAX for v in result):
        raise ValueError(must(name, "hold values of at most 2**63 - 1", repr(value)))
    return result


def normalize_padding(value: Any, ndim: int, name: str = "padding") -> str | tuple[tuple[int, int], ...]:
    """A padding string, or one ``(lo, hi)`` pair per spatial dimension.

    Accepts an int, a tuple of ``ndim`` ints (symmetric), a tuple of ``ndim`` pairs (per side),
    or one of ``'valid'``, ``'same'``, ``'same_lower'``.
    """
    if isinstance(value, str):
        if value not in PADDING_STRINGS:
            raise ValueError(f"Invalid padding string {value!r}, should be one of {set(PADDING_STRINGS[:2])}"
                             f" (or 'same_lower')")
        return value
    if isinstance(value, Sequence) and value and all(
        isinstance(v, Sequence) and not isinstance(v, str) for v in value
    ):
        if len(value) != ndim or any(len(v) != 2 for v in value):
            raise ValueError(must(name, f"be {ndim} (lo, hi) pairs when given per side", repr(value)))
        if not all(is_int(v) for pair in value for v in pair):
            raise TypeError(must(name, "hold ints in its (lo, hi) pairs", repr(value)))
        pairs = tuple((int(lo), int(hi)) for lo, hi in value)
        if any(v > INT64_MAX for pair in pairs for v in pair):
            raise ValueError(must(name, "hold values of at most 2**63 - 1", repr(value)))
    else:
        pairs = tuple((p, p) for p in normalize_tuple(value, ndim, name))
    if any(v < 0 for pair in pairs for v in pair):
        raise ValueError(must(name, "be non-negative", repr(value)))
    return pairs


def check_padding_mode(padding_mode: Any) -> str:
    """``padding_mode`` if it is a key of :data:`PADDING_MODES`, else ValueError."""
    if not isinstance(padding_mode, str) or padding_mode not in PADDING_MODES:
        modes = "{" + ", ".join(repr(m) for m in PADDING_MODES) + "}"
        raise ValueError(must("padding_mode", f"be one of {modes}", f"padding_mode={padding_mode!r}"))
    return padding_mode


def pad_mode(mode: Any) -> str:
    """The :data:`PAD_MODES` name of a layer's ``padding_mode`` or an ``F.pad`` mode, else ValueError."""
    if isinstance(mode, str) and mode in PAD_MODES:
        return mode
    if isinstance(mode, str) and mode in PADDING_MODES:
        return PADDING_MODES[mode]
    raise ValueError(f"Unsupported padding mode: {mode!r}; expected one of {list(PAD_MODES)}")


def check_pad_widths(lo: int, hi: int, size: int, dim: int, shape: Sequence[int], mode: str,
                     tensor_name: str = "input") -> None:
    """ValueError unless padding dimension ``dim`` (of ``size``) by ``(lo, hi)`` in ``mode`` is valid.

    ``mode`` is a layer's ``padding_mode`` or an ``F.pad`` mode. Negative pads crop
    (constant/circular crop first, the other modes pad first, as torch). ``reflect`` needs
    ``lo, hi < size`` (torch's rule); circular and symmetric may be wider than the input
    (wrapping/mirroring more than once).
    """
    mode = pad_mode(mode)
    where = f"at dimension {dim} of {tensor_name} {shape_text(shape)}"
    if mode == "reflect" and ((lo > 0 and lo >= size) or (hi > 0 and hi >= size)):
        raise ValueError(f"Padding size should be less than the corresponding input dimension, but got: "
                         f"padding ({lo}, {hi}) {where}")
    cropped = size - max(-lo, 0) - max(-hi, 0)
    if mode in ("constant", "circular") and cropped < 0:
        raise ValueError(must("negative padding", f"crop at most the size {size} {where}", f"({lo}, {hi})"))
    if mode != "constant" and (lo > 0 or hi > 0) and (cropped if mode == "circular" else size) <= 0:
        raise ValueError(must(f"{mode} padding", f"have a non-empty dimension to copy {where}",
                              f"padding ({lo}, {hi}) of an empty dimension"))
    if size + lo + hi < 0:
        raise ValueError(f"The input size {size}, plus negative padding {lo} and {hi} resulted in a "
                         f"negative output size, which is invalid. Check dimension {dim} of your input.")


#: Input sizes whose window counts a geometry keeps (``ConvGeometry.window_counts``: a ChunkedSequential
#: asks for its layers' output sizes on every batched call).
_KNOWN_SIZES = 64


@dataclass(frozen=True)
class ConvGeometry:
    """Validated N-d convolution arguments and their size formulas.

    ``padding`` is either a string from :data:`PADDING_STRINGS` (resolved per input size by
    :meth:`pads`) or one ``(lo, hi)`` pair per spatial dimension.
    """

    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: str | tuple[tuple[int, int], ...]
    dilation: tuple[int, ...]
    groups: int = 1
    output_padding: tuple[int, ...] = ()

    @classmethod
    def for_pooling(cls, kernel_size: Any, stride: Any, padding: Any, dilation: Any,
                    ndim: int) -> ConvGeometry:
        """A pooling window's geometry: ``stride`` None (or empty) is ``kernel_size``, as in torch; a
        string padding is refused (pooling pads by numbers only)."""
        if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0):
            stride = kernel_size
        if isinstance(padding, str):
            raise TypeError(f"padding must be an int or a tuple of {ndim} ints for pooling, got {padding!r}")
        return cls.create(kernel_size, stride, padding, dilation, ndim=ndim)

    @classmethod
    def create(
        cls,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: Any = 1,
        output_padding: Any = 0,
        ndim: int | None = None,
        transposed: bool = False,
    ) -> ConvGeometry:
        if ndim is None:
            if is_int(kernel_size):
                raise ValueError(must("kernel_size", "be a tuple when the number of spatial dimensions is "
                                      "not given", repr(kernel_size)))
            ndim = len(kernel_size)
        if ndim < 1:
            raise ValueError(must("a convolution", "have at least 1 spatial dimension", ndim))
        # one value in a sequence is no kernel size of a 2-d or 3-d layer (torch builds a weight of the wrong
        # rank that its forward rejects)
        kernel = normalize_tuple(kernel_size, ndim, "kernel_size", minimum=1, expand=False)
        strides = normalize_tuple(stride, ndim, "stride", minimum=1)
        dilations = normalize_tuple(dilation, ndim, "dilation", minimum=1)
        pads = normalize_padding(padding, ndim)
        groups = check_int(groups, "groups", minimum=1)
        out_pad = normalize_tuple(output_padding, ndim, "output_padding", minimum=0)
        if not transposed and any(out_pad):
            raise ValueError(must("output_padding", "be 0 except for transposed convolutions", out_pad))
        if transposed and isinstance(pads, str) and pads != "valid":
            raise ValueError(
                f"padding={pads!r} is not supported for transposed convolutions; "
                "give explicit padding (and output_padding or output_size)"
            )
        geometry = cls(kernel, strides, pads, dilations, groups, out_pad)
        if transposed:
            geometry.check_output_padding(out_pad)
        return geometry

    # -- derived quantities -----------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.kernel_size)

    @property
    def extent(self) -> tuple[int, ...]:
        """Effective (dilated) kernel size per dimension: ``d * (k - 1) + 1``."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel_size, self.dilation, strict=True))

    @property
    def is_string_padding(self) -> bool:
        return isinstance(self.padding, str)

    def pads(self, input_size: Sequence[int] | None = None) -> tuple[tuple[int, int], ...]:
        """The ``(lo, hi)`` zero/mode padding per dimension for an input of ``input_size``."""
        if not isinstance(self.padding, str):
            return self.padding
        if self.padding == "valid":
            return ((0, 0),) * self.ndim
        if all(s == 1 for s in self.stride):
            input_size = input_size or (1,) * self.ndim  # independent of the input for stride 1
        if input_size is None:
            raise ValueError(f"padding={self.padding!r} with stride > 1 depends on the input size")
        pairs = []
        for n, e, s in zip(input_size, self.extent, self.stride, strict=True):
            out = -(-n // s)
            total = max(0, (out - 1) * s + e - n)
            small = total // 2
            pairs.append((small, total - small) if self.padding == "same" else (total - small, small))
        return tuple(pairs)

    def symmetric_padding(self) -> tuple[int, ...] | None:
        """Padding as torch stores it (one int per dim) when symmetric and explicit, else None."""
        if isinstance(self.padding, str) or any(lo != hi for lo, hi in self.padding):
            return None
        return tuple(lo for lo, _ in self.padding)

    def window_counts(self, input_size: Sequence[int]) -> tuple[int, ...]:
        """Windows per dimension, ``(padded - extent) // stride + 1``, or 0 where the padded input is
        smaller than the dilated kernel (the caller words the refusal: convolution, unfold, fold)."""
        key = tuple(input_size)
        known = self.__dict__.get("_counts")  # the geometry is frozen: its answers are too
        if known is None:
            known = {}
            object.__setattr__(self, "_counts", known)
        counts = known.get(key)
        if counts is None:
            padded = self.padded_size(key)
            counts = tuple((p - e) // s + 1 if p >= e else 0
                           for p, e, s in zip(padded, self.extent, self.stride, strict=True))
            if len(known) < _KNOWN_SIZES:
                known[key] = counts
        return counts

    def output_size(self, input_size: Sequence[int]) -> tuple[int, ...]:
        """Spatial output size of the convolution for spatial ``input_size``.

        Raises ValueError when the padded input is smaller than the dilated kernel.
        """
        counts = self.window_counts(input_size)
        if min(counts, default=1) < 1:
            padded = self.padded_size(input_size)
            raise ValueError(
                f"Calculated padded input size per channel: ({' x '.join(map(str, padded))}). "
                f"Kernel size: ({' x '.join(map(str, self.extent))}). "
                "Kernel size can't be greater than actual input size"
            )
        return counts

    def multiply_adds(self, x_shape: Sequence[int], w_shape: Sequence[int]) -> int:
        """Multiply-adds of a direct forward: ``N * prod(output size) * O * C/groups * prod(kernel)`` for
        ``x (N, C, *in)`` and ``w (O, C/groups, *k)``."""
        return (x_shape[0] * math.prod(self.output_size(x_shape[2:])) * w_shape[0] * w_shape[1]
                * math.prod(self.kernel_size))

    def pool_output_size(self, input_size: Sequence[int], ceil_mode: bool = False) -> tuple[int, ...]:
        """Spatial output size of a pooling window (torch's ``pooling_output_shape``).

        With symmetric padding ``p`` and extent ``e``:
        ``out = floor_or_ceil((n + 2p - e) / s) + 1``; with ``ceil_mode`` the last window must
        start inside the input or the left padding, else ``out -= 1``. Requires ``p <= k // 2``.
        """
        pads = self.pads(input_size)
        sizes = []
        for n, (lo, hi), e, s, k in zip(input_size, pads, self.extent, self.stride, self.kernel_size,
                                        strict=True):
            if lo > k // 2 or hi > k // 2:
                raise ValueError(
                    f"pad should be smaller than or equal to half of kernel size, but got "
                    f"padding={self.symmetric_padding() or self.padding} and kernel_size={self.kernel_size}"
                )
            span = n + lo + hi - e
            out = (-(-span // s) if ceil_mode else span // s) + 1
            if ceil_mode and (out - 1) * s >= n + lo:
                out -= 1
            sizes.append(out)
        if any(o < 1 for o in sizes):
            raise ValueError(
                f"Given input size: ({'x'.join(map(str, input_size))}). Calculated output size: "
                f"({'x'.join(map(str, sizes))}). Output size is too small"
            )
        return tuple(sizes)

    def tap_region(self, offset: Sequence[int], out_size: Sequence[int],
                   first_output: Sequence[int] | None = None) -> tuple[slice, ...]:
        """Spatial slices of the padded input that kernel tap ``offset`` reads for every output.

        Output ``o`` (counted from ``first_output``, default 0) reads padded position
        ``(first + o) * stride + offset * dilation``.
        """
        first = first_output or (0,) * self.ndim
        return tuple(
            slice(i * d + f * s, i * d + (f + m - 1) * s + 1, s)
            for i, d, m, s, f in zip(offset, self.dilation, out_size, self.stride, first, strict=True)
        )

    def tap_reads(
        self, offset: Sequence[int], input_size: Sequence[int], out_size: Sequence[int],
        first_output: Sequence[int] | None = None,
    ) -> tuple[tuple[slice, ...], tuple[slice, ...]] | None:
        """The outputs whose tap ``offset`` reads the unpadded input, and what they read.

        Returns ``(outputs, inputs)``: spatial slices of the outputs (counted from ``first_output``)
        and the matching strided slices of the input (``o * stride + offset * dilation - lo``), or
        None when every read of this tap falls in the zero padding. Copying only these never
        materialises padding, whatever its size.
        """
        first = first_output or (0,) * self.ndim
        outputs, inputs = [], []
        for i, d, s, (lo, _), n, m, f in zip(offset, self.dilation, self.stride, self.pads(input_size),
                                               input_size, out_size, first, strict=True):
            p0 = f * s + i * d - lo  # input position read by the first output
            j0 = max(0, -(p0 // s))
            j1 = min(m, -(-(n - p0) // s))
            if j1 <= j0:
                return None
            outputs.append(slice(j0, j1))
            inputs.append(slice(p0 + j0 * s, p0 + (j1 - 1) * s + 1, s))
        return tuple(outputs), tuple(inputs)

    def fits(self, x_shape: Sequence[int], w_shape: Sequence[int]) -> bool:
        """Whether input ``x_shape (N, C, *in)`` and weight ``w_shape (O, C/groups, *k)`` make a
        valid, non-empty call of this convolution (every output size >= 1)."""
        nd = self.ndim
        if len(x_shape) != nd + 2 or len(w_shape) != nd + 2 or min(x_shape) < 1:
            return False
        if x_shape[1] != w_shape[1] * self.groups or w_shape[0] % self.groups:
            return False
        if tuple(w_shape[2:]) != self.kernel_size:
            return False
        try:
            return min(self.output_size(x_shape[2:])) >= 1
        except ValueError:
            return False

    def transposed_size_range(self, input_size: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Smallest and largest valid transposed output sizes (output_padding 0 and stride - 1)."""
        pads = self.pads(input_size)
        smallest = tuple(
            (n - 1) * s - lo - hi + e
            for n, s, (lo, hi), e in zip(input_size, self.stride, pads, self.extent, strict=True)
        )
        largest = tuple(m + s - 1 for m, s in zip(smallest, self.stride, strict=True))
        return smallest, largest

    def output_padding_for(
        self, input_size: Sequence[int], output_size: Sequence[int] | None, batched_rank: int | None = None
    ) -> tuple[int, ...]:
        """torch's ``_output_padding``: the output_padding giving ``output_size`` (or the stored one)."""
        if output_size is None:
            return self.output_padding
        if hasattr(output_size, "tolist") and not isinstance(output_size, str):  # ndarray, torch.Size
            output_size = output_size.tolist() if getattr(output_size, "ndim", 1) == 1 else output_size
        if (not isinstance(output_size, Sequence) or isinstance(output_size, str)
                or not all(is_int(v) for v in output_size)):
            raise TypeError(must("output_size", "be a sequence of ints (or None)", repr(output_size)))
        output_size = [int(v) for v in output_size]
        nd = self.ndim
        non_spatial = 2 if batched_rank is None or batched_rank == nd + 2 else 1
        if len(output_size) == non_spatial + nd:
            output_size = output_size[non_spatial:]
        if len(output_size) != nd:
            rank = batched_rank if batched_rank is not None else nd + 2
            raise ValueError(
                f"ConvTranspose{nd}D: for {rank}D input, output_size must have {nd} "
                f"or {non_spatial + nd} elements (got {len(output_size)})"
            )
        smallest, largest = self.transposed_size_range(input_size)
        for size, low, high in zip(output_size, smallest, largest, strict=True):
            if size < low or size > high:
                raise ValueError(
                    f"requested an output size of {output_size}, but valid sizes range "
                    f"from {list(smallest)} to {list(largest)} (for an input of {tuple(input_size)})"
                )
        return tuple(o - m for o, m in zip(output_size, smallest, strict=True))

    def transposed_output_size(
        self, input_size: Sequence[int], output_padding: Sequence[int] | None = None
    ) -> tuple[int, ...]:
        """Spatial output size of the transposed convolution for spatial ``input_size``."""
        smallest, _ = self.transposed_size_range(input_size)
        extra = self.output_padding if output_padding is None else tuple(output_padding)
        size = tuple(m + op for m, op in zip(smallest, extra, strict=True))
        if any(v < 1 for v in size):
            raise ValueError(
                f"the transposed convolution's output size {size} is not positive for an input of "
                f"{tuple(input_size)} (padding too large)"
            )
        return size

    def with_padding(self, padding: Any) -> ConvGeometry:
        return ConvGeometry(self.kernel_size, self.stride, normalize_padding(padding, self.ndim),
                            self.dilation, self.groups, self.output_padding)

    # -- derived quantities of the kernels (padded grid, strided positions, stride-1 adjoint) ------
    def padded_size(self, input_size: Sequence[int]) -> tuple[int, ...]:
        """Spatial size of the padded input: ``n + lo + hi`` per dimension."""
        pads = self.pads(input_size)
        return tuple(int(n) + lo + hi for n, (lo, hi) in zip(input_size, pads, strict=True))

    def interior(self, input_size: Sequence[int]) -> tuple[slice, ...]:
        """Spatial slices of the padded grid where the unpadded input sits: ``lo .. lo + n``."""
        pads = self.pads(input_size)
        return tuple(slice(lo, lo + int(n)) for n, (lo, _) in zip(input_size, pads, strict=True))

    def strided_positions(self, out_size: Sequence[int]) -> tuple[slice, ...]:
        """Spatial slices of the stride-1 grid holding the ``out_size`` strided outputs:
        ``0, s, ..., (m - 1) * s`` per dimension (subsample a stride-1 result, spread ``gy``)."""
        return tuple(slice(0, (m - 1) * s + 1, s) for m, s in zip(out_size, self.stride, strict=True))

    def spread_size(self, out_size: Sequence[int]) -> tuple[int, ...]:
        """Size of the stride-1 grid spanned by ``out_size`` strided outputs: ``(m - 1) * s + 1``."""
        return tuple((m - 1) * s + 1 for m, s in zip(out_size, self.stride, strict=True))

    def stride1_adjoint(self, input_size: Sequence[int],
                        out_size: Sequence[int]) -> tuple[ConvGeometry, tuple[slice, ...]]:
        """For stride 1: the geometry and the crop of ``gy`` that make ``grad_input`` a forward pass.

        ``gx = forward(gy[crop], flipped kernel, adjoint)``: padding ``(e - 1 - lo, e - 1 - hi)``
        per dimension, a negative amount cropping ``gy`` instead (``crop`` holds the spatial slices).
        """
        if any(s != 1 for s in self.stride):
            raise ValueError(f"the stride-1 adjoint needs stride 1, got stride={self.stride}")
        pads, crop = [], []
        for e, (lo, hi), m in zip(self.extent, self.pads(input_size), out_size, strict=True):
            new_lo, new_hi = e - 1 - lo, e - 1 - hi
            crop.append(slice(max(0, -new_lo), int(m) - max(0, -new_hi)))
            pads.append((max(0, new_lo), max(0, new_hi)))
        adjoint = ConvGeometry(self.kernel_size, self.stride, tuple(pads), self.dilation, self.groups)
        return adjoint, tuple(crop)

    # -- front-end rules: argument checks and the padding the ops add ------------------------
    def check_output_padding(self, output_padding: Sequence[int]) -> tuple[int, ...]:
        """``output_padding`` (one int per dimension) if each value is in ``[0, max(stride, dilation))``
        (torch's rule), else ValueError."""
        output_padding = tuple(output_padding)
        for i, (op, s, d) in enumerate(zip(output_padding, self.stride, self.dilation, strict=True)):
            if op < 0 or (op >= s and op >= d):
                raise ValueError(must(
                    "output_padding", "be smaller than either stride or dilation",
                    f"output_padding={output_padding}, stride={self.stride}, dilation={self.dilation} "
                    f"(dimension {i})"))
        return output_padding

    def check_mode_padding(self, shape: Sequence[int], padding_mode: str, tensor_name: str = "input") -> None:
        """ValueError unless this geometry's padding of a batched ``shape (N, C, *in)`` is valid in
        ``padding_mode`` (:func:`check_pad_widths` per spatial dimension)."""
        if padding_mode == "zeros":
            return
        for i, ((lo, hi), size) in enumerate(zip(self.pads(shape[2:]), shape[2:], strict=True)):
            check_pad_widths(lo, hi, size, i + 2, shape, padding_mode, tensor_name)

    def pool_padding(self, input_size: Sequence[int], ceil_mode: bool = False
                     ) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]]:
        """Pooling output size and the ``(lo, hi)`` padding that makes every window fit in the padded
        input: ``hi`` grows to ``(out - 1) * s + e - n - lo`` where a ``ceil_mode`` window overhangs."""
        out = self.pool_output_size(input_size, ceil_mode)
        pads = tuple(
            (lo, max(hi, (o - 1) * s + e - n - lo))
            for n, o, (lo, hi), s, e in zip(input_size, out, self.pads(input_size), self.stride, self.extent,
                                            strict=True)
        )
        return out, pads

    def transposed_input_padding(self, input_size: Sequence[int], output_size: Sequence[int]
                                 ) -> tuple[tuple[int, int], ...]:
        """The ``(0, extra)`` zeros a transposed convolution's input needs so that it has the size of
        the convolution output of ``output_size`` (``extra > 0`` when output_padding >= stride,
        allowed while < dilation); the passes are then exact adjoints."""
        conv_size = self.output_size(output_size)
        return tuple((0, m - n) for m, n in zip(conv_size, input_size, strict=True))
