"""A locally connected layer learns a position-dependent filter that a convolution cannot.

    python examples/locally_connected.py

The "camera" below blurs horizontally on the left of the image and vertically on the right, with a
smooth transition - a spatially varying point-spread function, as lenses have towards the edges.
``nn.Conv2dLocal`` (Lua Torch's SpatialConvolutionLocal: one 3x3 filter per output pixel) learns
it from examples; ``nn.Conv2d`` (one filter shared by all pixels) can only learn the average blur.
"""

import numpy as np

import npconv
from npconv import nn, optim

SIZE, STEPS = 16, 300
rng = np.random.default_rng(0)
npconv.manual_seed(0)

# the true operator: at column x, mix of a horizontal and a vertical 3-tap blur
horizontal = np.zeros((3, 3))
horizontal[1] = [0.25, 0.5, 0.25]
vertical = horizontal.T
share = np.linspace(0.0, 1.0, SIZE)  # 0 = fully horizontal (left) .. 1 = fully vertical (right)
kernels = (1 - share)[:, None, None] * horizontal + share[:, None, None] * vertical  # (W, 3, 3)


def camera(images: np.ndarray) -> np.ndarray:
    padded = np.pad(images, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros_like(images)
    for p in range(3):
        for q in range(3):
            out += kernels[:, p, q] * padded[:, :, p:p + SIZE, q:q + SIZE]
    return out


def fit(layer: nn.Module) -> float:
    optimizer = optim.Adam(layer.parameters(), lr=0.02)
    scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=STEPS)
    for _ in range(STEPS):
        scenes = rng.standard_normal((16, 1, SIZE, SIZE)).astype(np.float32)
        optimizer.zero_grad()
        loss = ((layer(npconv.tensor(scenes)) - npconv.tensor(camera(scenes))) ** 2).mean()
        loss.backward()
        optimizer.step()
        scheduler.step()
    scenes = rng.standard_normal((64, 1, SIZE, SIZE)).astype(np.float32)
    with npconv.no_grad():
        return float(((layer(npconv.tensor(scenes)).numpy() - camera(scenes)) ** 2).mean())


local = nn.Conv2dLocal(1, 1, input_size=(SIZE, SIZE), kernel_size=3, padding=1)
shared = nn.Conv2d(1, 1, kernel_size=3, padding=1)
print(local)
print(f"parameters: Conv2dLocal {sum(p.numel() for p in local.parameters())}, "
      f"Conv2d {sum(p.numel() for p in shared.parameters())}")
print(f"test mean squared error after {STEPS} Adam steps:")
print(f"  Conv2dLocal (a filter per pixel): {fit(local):.2e}")
print(f"  Conv2d      (one shared filter):  {fit(shared):.2e}")

# learned filters near the left edge, at the centre and near the right edge of the middle row
# (not on the border itself: taps that only ever read the zero padding get no gradient)
for x in (1, SIZE // 2, SIZE - 2):
    print(f"learned filter at column {x}:\n{np.round(local.weight.numpy()[SIZE // 2, x, 0, 0], 2)}")
