"""A Sequential model with a frozen stem, an exponential moving average of the weights
(`p.mul_(decay).add_(...)` under torch.no_grad()), WGAN-style `.data.clamp_` and `.data.copy_`."""

import copy
import os

import numpy as np
import torch
import torch.nn as nn


class ModelEMA:
    def __init__(self, model, decay=0.9):
        self.module = copy.deepcopy(model)
        self.module.eval()
        self.decay = decay
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for ema_v, model_v in zip(self.module.state_dict().values(), model.state_dict().values()):
            if ema_v.dtype.is_floating_point:
                ema_v.mul_(self.decay).add_(model_v.detach(), alpha=1 - self.decay)
            else:
                ema_v.copy_(model_v)


def build():
    return nn.Sequential(
        nn.Conv2d(2, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(inplace=True),
        nn.Conv2d(6, 6, 3, padding=1, groups=3),
        nn.Hardswish(),
        nn.Conv2d(6, 8, 3, stride=2),
        nn.PReLU(8),
        nn.Flatten(),
        nn.Linear(8 * 3 * 3, 4),
    )


def run(dtype_name, weights_path):
    dtype = getattr(torch, dtype_name)
    device = torch.device("cpu")
    rng = np.random.default_rng(8)
    x = torch.from_numpy(rng.standard_normal((5, 2, 8, 8))).to(device=device, dtype=dtype)
    target = torch.from_numpy(rng.standard_normal((5, 4))).to(dtype)

    model = build()
    if os.path.exists(weights_path):
        model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
    else:
        torch.save(model.state_dict(), weights_path)
    model = model.to(device, dtype)

    # freeze the stem
    for p in model[0].parameters():
        p.requires_grad_(False)
    model[1].requires_grad_(False)
    # shrink the last layer's weights in place, keep its bias from the first layer's statistics
    model[8].weight.data.mul_(0.5)
    model[8].bias.data.copy_(model[0].bias.data[:4])

    ema = ModelEMA(model, decay=0.8)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.05)
    losses = []
    for step in range(3):
        out = model(x)
        loss = nn.functional.smooth_l1_loss(out, target, beta=0.5)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        for p in model[3].parameters():
            p.data.clamp_(-0.2, 0.2)
        ema.update(model)
        losses.append(loss.item())
    with torch.no_grad():
        ema_out = ema.module(x)
    frozen_grads = [p.grad for p in model[0].parameters()]
    return {
        "losses": losses,
        "ema_out": ema_out,
        "ema_state": ema.module.state_dict(),
        "state": model.state_dict(),
        "grads": {n: p.grad for n, p in model.named_parameters() if p.requires_grad},
        "frozen_grads_are_none": all(g is None for g in frozen_grads),
        "n_trainable": len(trainable),
        "adamw": optimizer.state_dict(),
    }
