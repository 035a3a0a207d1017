"""Transfer learning: a pretrained backbone checkpoint loaded with strict=False, a new head, parameter
groups with their own learning rates, OneCycleLR, gradient accumulation and clip_grad_value_."""

import os

import numpy as np
import torch
from torch import nn, optim
from torch.nn import functional as F


class Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8),
                                  nn.SiLU(inplace=True))
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8),
                                   nn.GELU(), nn.Conv2d(8, 12, 1), nn.GroupNorm(3, 12), nn.ELU(inplace=True))
        self.fc = nn.Linear(12, 1000)

    def forward(self, x):
        x = self.block(self.stem(x))
        x = F.adaptive_avg_pool2d(x, 1)
        return self.fc(torch.flatten(x, 1))


def run(dtype_name, weights_path):
    dtype = getattr(torch, dtype_name)
    rng = np.random.default_rng(10)
    images = torch.from_numpy(rng.standard_normal((8, 3, 12, 12)).astype(np.float32))
    labels = torch.from_numpy(rng.integers(0, 5, 8))
    model = Backbone()
    if os.path.exists(weights_path):
        pretrained = torch.load(weights_path, map_location="cpu", weights_only=True)
    else:
        pretrained = model.state_dict()
        torch.save(pretrained, weights_path)
    pretrained = {k: v for k, v in pretrained.items() if not k.startswith("fc.")}
    model.fc = nn.Linear(12, 5)
    with torch.no_grad():
        model.fc.weight.copy_(torch.linspace(-0.2, 0.2, 60, dtype=torch.float64).reshape(5, 12))
        model.fc.bias.zero_()
    missing, unexpected = model.load_state_dict(pretrained, strict=False)
    model = model.to(dtype)

    backbone_params = [p for n, p in model.named_parameters() if not n.startswith("fc.")]
    optimizer = optim.SGD([
        {"params": backbone_params, "lr": 1e-3},
        {"params": model.fc.parameters()},
    ], lr=1e-2, momentum=0.9)
    scheduler = optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[1e-2, 1e-1], total_steps=4)
    accumulation_steps = 2
    losses, lrs = [], []
    optimizer.zero_grad()
    for i in range(4):
        batch = slice(2 * i, 2 * i + 2)
        outputs = model(images[batch].to(dtype))
        loss = F.cross_entropy(outputs, labels[batch]) / accumulation_steps
        loss.backward()
        losses.append(loss.item())
        if (i + 1) % accumulation_steps == 0:
            nn.utils.clip_grad_value_(model.parameters(), clip_value=0.05)
            grads = [p.grad.clone() for p in model.parameters()]
            optimizer.step()
            optimizer.zero_grad()
        scheduler.step()
        lrs.append([group["lr"] for group in optimizer.param_groups])
    return {"missing": sorted(missing), "unexpected": list(unexpected), "losses": losses, "lrs": lrs,
            "grads": grads, "state": model.state_dict(), "momentum": optimizer.state_dict()["state"],
            "groups": [g["momentum"] for g in optimizer.param_groups]}
