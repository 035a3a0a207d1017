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

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ConvGeometry", "PADDING_STRINGS", "normalize_tuple", "normalize_padding"]

PADDING_STRINGS = ("valid", "same", "same_lower")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def normalize_tuple(value: Any, ndim: int, name: str, minimum: int | None = None) -> tuple[int, ...]:
    """``value`` (an int or a sequence of ``ndim`` ints) as a tuple of ``ndim`` ints, validated."""
    if _is_int(value):
        result = (int(value),) * ndim
    elif isinstance(value, Sequence) and not isinstance(value, str):
        if not all(_is_int(v) for v in value):
            raise TypeError(f"{name} must be an int or a tuple of {ndim} ints, got {value!r}")
        result = tuple(int(v) for v in value)
        if len(result) == 1 and ndim != 1:
            result = result * ndim
        if len(result) != ndim:
            raise ValueError(
                f"{name} must be an int or a tuple of {ndim} ints for a {ndim}-d convolution, "
                f"got {value!r} ({len(result)} values)"
            )
    else:
        raise TypeError(f"{name} must be an int or a tuple of {ndim} ints, got {value!r}")
    if minimum is not None and any(v < minimum for v in result):
        kind = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{name} must be {kind} (>= {minimum}), got {value!r}")
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
            raise ValueError(
                f"{name} given per side must be {ndim} (lo, hi) pairs, got {value!r}"
            )
        if not all(_is_int(v) for pair in value for v in pair):
            raise TypeError(f"{name} pairs must hold ints, got {value!r}")
        pairs = tuple((int(lo), int(hi)) for lo, hi in value)
    else:
        pairs = tuple((p, p) for p in normalize_tuple(value, ndim, name))
    if any(v < 0 for pair in pairs for v in pair):
        raise ValueError(f"{name} must be non-negative, got {value!r}")
    return pairs


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
            if _is_int(kernel_size):
                raise ValueError("the number of spatial dimensions cannot be inferred from an int "
                                 "kernel_size")
            ndim = len(kernel_size)
        if ndim < 1:
            raise ValueError(f"a convolution needs at least 1 spatial dimension, got {ndim}")
        kernel = normalize_tuple(kernel_size, ndim, "kernel_size", minimum=1)
        strides = normalize_tuple(stride, ndim, "stride", minimum=1)
        dilations = normalize_tuple(dilation, ndim, "dilation", minimum=1)
        pads = normalize_padding(padding, ndim)
        if not _is_int(groups):
            raise TypeError(f"groups must be an int, got {groups!r}")
        if groups <= 0:
            raise ValueError(f"groups must be a positive integer, got {groups}")
        out_pad = normalize_tuple(output_padding, ndim, "output_padding", minimum=0)
        if transposed:
            if isinstance(pads, str) and pads != "valid":
                raise ValueError(
                    f"padding={pads!r} is not supported for transposed convolutions; "
                    "give explicit padding (and output_padding or output_size)"
                )
            for i, (op, s, d) in enumerate(zip(out_pad, strides, dilations, strict=True)):
                if op >= s and op >= d:
                    raise ValueError(
                        f"output_padding must be smaller than either stride or dilation, got "
                        f"output_padding={out_pad}, stride={strides}, dilation={dilations} (dimension {i})"
                    )
        elif any(out_pad):
            raise ValueError(f"output_padding is only for transposed convolutions, got {out_pad}")
        return cls(kernel, strides, pads, dilations, int(groups), out_pad)

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

    def output_size(self, input_size: Sequence[int]) -> tuple[int, ...]:
        """Spatial output size of the convolution for spatial ``input_size``.

        Raises ValueError when the padded input is smaller than the dilated kernel.
        """
        pads = self.pads(input_size)
        padded = tuple(n + lo + hi for n, (lo, hi) in zip(input_size, pads, strict=True))
        if any(p < e for p, e in zip(padded, self.extent, strict=True)):
            raise ValueError(
                f"Calculated padded input size per channel: ({' x '.join(map(str, padded))}). "
                f"Kernel size: ({' x '.join(map(str, self.extent))}). "
                "Kernel size can't be greater than actual input size"
            )
        return tuple((p - e) // s + 1 for p, e, s in zip(padded, self.extent, self.stride, strict=True))

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
                or not all(_is_int(v) for v in output_size)):
            raise TypeError(f"output_size must be a sequence of ints (or None), got {output_size!r}")
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
