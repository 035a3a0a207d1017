"""Upsampling a periodic 2-D field with ``ConvTranspose2d(padding_mode='circular')``.

A field on a torus (periodic in both directions) is upsampled 2x by a transposed convolution.
With ``padding_mode='circular'`` the overhanging border of the output wraps around instead of
being cropped, so the result is exactly what the same layer gives on an infinitely tiled field.
The script checks this three ways and prints the errors:

1. against the zero-padded layer applied to a 3x3 tiling of the field (central block),
2. shift equivariance: rolling the input by one coarse cell rolls the output by two fine cells,
3. the adjoint identity ``<conv_circular(u), v> == <u, conv_transpose_circular(v)>``.

Run: ``python examples/periodic_field.py``
"""

from __future__ import annotations

import numpy as np

import npconv
from npconv import nn
from npconv.nn import functional as F


def periodic_field(size: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth random field on a ``size x size`` torus, shape ``(1, 1, size, size)``."""
    coords = 2 * np.pi * np.arange(size) / size
    field = np.zeros((size, size))
    for kx, ky in [(1, 0), (0, 2), (1, 1), (3, 2)]:
        phase = rng.uniform(0, 2 * np.pi)
        field += rng.standard_normal() * np.cos(kx * coords[:, None] + ky * coords[None, :] + phase)
    return field[None, None]


def main() -> None:
    npconv.manual_seed(0)
    rng = np.random.default_rng(0)
    coarse = periodic_field(8, rng)

    # stride 2, kernel 4, padding 1: 8 x 8 -> 16 x 16; padding 1 on each side wraps around
    up = nn.ConvTranspose2d(1, 1, kernel_size=4, stride=2, padding=1, padding_mode="circular",
                            dtype=np.float64)
    fine = up(coarse).numpy()
    print(f"{up}\ncoarse {coarse.shape} -> fine {fine.shape}")

    # 1. the same kernel, zero padding, on a 3x3 tiling; its central 16 x 16 block (after the
    #    padding offset) sees neighbours on every side, exactly like the circular layer
    tiled = np.tile(coarse, (1, 1, 3, 3))
    full = F.conv_transpose(tiled, up.weight, up.bias, stride=2, padding=0).numpy()
    offset = 2 * coarse.shape[-1] + 1  # one tile (stride * 8) plus the padding
    central = full[:, :, offset:offset + 16, offset:offset + 16]
    tiling_error = np.abs(fine - central).max()
    zero_padded = F.conv_transpose(coarse, up.weight, up.bias, stride=2, padding=1).numpy()
    print(f"circular vs tiled field:       max |diff| = {tiling_error:.2e}")
    print(f"zero padding vs tiled field:   max |diff| = {np.abs(zero_padded - central).max():.2e} "
          "(the border is wrong without wrap-around)")

    # 2. periodic -> exactly shift-equivariant: one coarse cell is two fine cells
    shifted = up(np.roll(coarse, (1, -1), axis=(2, 3))).numpy()
    shift_error = np.abs(shifted - np.roll(fine, (2, -2), axis=(2, 3))).max()
    print(f"shift equivariance:            max |diff| = {shift_error:.2e}")

    # 3. ConvTranspose with mode m is the adjoint of Conv with mode m (same kernel and geometry)
    u = rng.standard_normal((1, 1, 16, 16))
    v = rng.standard_normal((1, 1, 8, 8))
    conv_u = F.conv(u, up.weight, None, stride=2, padding=1, padding_mode="circular").numpy()
    transposed_v = F.conv_transpose(v, up.weight, None, stride=2, padding=1, padding_mode="circular").numpy()
    lhs, rhs = float(np.sum(conv_u * v)), float(np.sum(u * transposed_v))
    print(f"adjoint identity:              <conv(u), v> = {lhs:.12f}, <u, convT(v)> = {rhs:.12f}")

    ok = tiling_error < 1e-12 and shift_error < 1e-12 and abs(lhs - rhs) < 1e-10 * max(1.0, abs(lhs))
    print("check:", "OK - the wrap-around is exact" if ok else "FAILED")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
