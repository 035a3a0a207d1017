"""A 3-D volume classifier (Conv3d, BatchNorm3d, MaxPool3d, AdaptiveAvgPool3d), SGD + CosineAnnealingLR,
and an @torch.inference_mode() predictor."""

import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class VolumeNet(nn.Module):
    def __init__(self, in_channels=1, num_classes=3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(in_channels, 4, kernel_size=3, padding=1),
            nn.BatchNorm3d(4),
            nn.ReLU(inplace=True),
            nn.MaxPool3d(2),
            nn.Conv3d(4, 8, kernel_size=3, padding=1, stride=(1, 2, 1)),
            nn.BatchNorm3d(8),
            nn.ReLU(inplace=True),
            nn.Dropout3d(p=0.0),
        )
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        x = self.features(x)
        x = self.pool(x).flatten(1)
        return self.head(x)


@torch.inference_mode()
def predict(model, volumes, device):
    model.eval()
    logits = model(volumes.to(device))
    probs = F.softmax(logits, dim=-1)
    return torch.clamp(probs, min=1e-3, max=1 - 1e-3), probs.argmax(-1)


def run(dtype_name, weights_path):
    dtype = getattr(torch, dtype_name)
    device = torch.device("cpu")
    rng = np.random.default_rng(6)
    volumes = torch.from_numpy(rng.standard_normal((4, 1, 8, 8, 8))).to(dtype)
    labels = torch.from_numpy(rng.integers(0, 3, (4,)).astype(np.float64))  # labels stored as floats
    model = VolumeNet().to(device)
    if os.path.exists(weights_path):
        model.load_state_dict(torch.load(weights_path, map_location=device, weights_only=True))
    else:
        torch.save(model.state_dict(), weights_path)
    model.to(dtype)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, dampening=0.1)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=4, eta_min=1e-3)
    losses = []
    model.train()
    for epoch in range(3):
        optimizer.zero_grad()
        logits = model(volumes)
        loss = F.cross_entropy(logits, labels.long())
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss)
    probs, pred = predict(model, volumes, device)
    return {"losses": [loss.detach() for loss in losses], "probs": probs, "pred": pred,
            "inference": probs.is_inference(), "grads": {n: p.grad for n, p in model.named_parameters()},
            "buffers": {n: b for n, b in model.named_buffers()}, "params": list(model.parameters()),
            "scheduler": scheduler.state_dict(), "optimizer": optimizer.state_dict()}
