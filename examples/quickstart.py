"""Quick start: build each of npconv's twelve convolution layers, run forward and backward, print shapes.

    python examples/quickstart.py

Every layer takes torch's arguments and gives torch's shapes; only NumPy (and SciPy) are needed.
"""

from __future__ import annotations

import numpy as np

import npconv
from npconv import nn


def main() -> None:
    npconv.manual_seed(0)
    rng = np.random.default_rng(0)
    layers = [
        nn.Conv1d(4, 8, kernel_size=3, padding="same", padding_mode="reflect"),
        nn.Conv2d(4, 8, kernel_size=3, stride=2, padding=1, groups=2),
        nn.Conv3d(4, 8, (1, 3, 3), dilation=(1, 2, 2), padding=(0, 2, 2), padding_mode="circular"),
        nn.ConvTranspose1d(4, 8, kernel_size=4, stride=2, padding=1),
        nn.ConvTranspose2d(4, 8, kernel_size=3, stride=2, padding=1, output_padding=1),
        nn.ConvTranspose3d(4, 8, kernel_size=2, stride=2, bias=False),
        nn.LazyConv1d(8, kernel_size=3),
        nn.LazyConv2d(8, kernel_size=3, padding="valid"),
        nn.LazyConv3d(8, kernel_size=3, padding=1),
        nn.LazyConvTranspose1d(8, kernel_size=3, stride=3),
        nn.LazyConvTranspose2d(8, kernel_size=2, stride=2),
        nn.LazyConvTranspose3d(8, kernel_size=3, padding=1),
    ]
    spatial = {1: (16,), 2: (12, 12), 3: (6, 8, 8)}
    for layer in layers:
        nd = len(layer.kernel_size)
        x = npconv.tensor(rng.standard_normal((2, 4) + spatial[nd]).astype(np.float32), requires_grad=True)
        name = type(layer).__name__
        y = layer(x)  # a Lazy* layer infers in_channels=4 here and becomes the plain layer
        y.sum().backward()
        bias = "none" if layer.bias is None else str(layer.bias.grad.shape)
        print(f"{name:<20} {str(x.shape):<18} -> {str(y.shape):<18} "
              f"grads: input {x.grad.shape}, weight {layer.weight.grad.shape}, bias {bias}")
        print(f"    {layer!r}")
    up = nn.ConvTranspose2d(8, 4, kernel_size=3, stride=2, padding=1)
    y = up(np.zeros((1, 8, 6, 6), np.float32), output_size=[12, 12])
    print("ConvTranspose2d(8, 4, 3, stride=2, padding=1) with output_size=[12, 12]:", y.shape)


if __name__ == "__main__":
    main()
