"""A WaveNet-style 1-D model: dilated causal convs, gated tanh*sigmoid units, residual and skip 1x1 convs,
mu-law targets, Adam with gradient clipping."""

import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def mu_law_encode(audio, quantization_channels=16):
    mu = quantization_channels - 1
    safe_audio_abs = torch.clamp(torch.abs(audio), max=1.0)
    magnitude = torch.log1p(mu * safe_audio_abs) / np.log1p(mu)
    signal = torch.sign(audio) * magnitude
    return ((signal + 1) / 2 * mu + 0.5).long()


class CausalConv1d(nn.Conv1d):
    def __init__(self, in_channels, out_channels, kernel_size, dilation=1, **kwargs):
        self.__padding = (kernel_size - 1) * dilation
        super().__init__(in_channels, out_channels, kernel_size, padding=self.__padding, dilation=dilation,
                         **kwargs)

    def forward(self, input):
        result = super().forward(input)
        if self.__padding != 0:
            return result[:, :, :-self.__padding]
        return result


class ResidualBlock(nn.Module):
    def __init__(self, residual_channels, skip_channels, dilation):
        super().__init__()
        self.filter_conv = CausalConv1d(residual_channels, residual_channels, 2, dilation=dilation)
        self.gate_conv = CausalConv1d(residual_channels, residual_channels, 2, dilation=dilation)
        self.residual_conv = nn.Conv1d(residual_channels, residual_channels, 1)
        self.skip_conv = nn.Conv1d(residual_channels, skip_channels, 1)

    def forward(self, x):
        z = torch.tanh(self.filter_conv(x)) * torch.sigmoid(self.gate_conv(x))
        skip = self.skip_conv(z)
        return self.residual_conv(z) + x, skip


class WaveNet(nn.Module):
    def __init__(self, classes=16, residual_channels=8, skip_channels=12, dilations=(1, 2, 4, 8, 1, 2)):
        super().__init__()
        self.classes = classes
        self.start = nn.Conv1d(classes, residual_channels, 1)
        self.blocks = nn.ModuleList([ResidualBlock(residual_channels, skip_channels, d) for d in dilations])
        self.end1 = nn.Conv1d(skip_channels, skip_channels, 1)
        self.end2 = nn.Conv1d(skip_channels, classes, 1)
        self.receptive_field = sum(dilations) + 1

    def forward(self, x):
        x = self.start(x)
        skips = 0
        for block in self.blocks:
            x, skip = block(x)
            skips = skips + skip
        out = F.relu(skips)
        out = F.relu(self.end1(out))
        return self.end2(out)


def run(dtype_name, weights_path):
    dtype = getattr(torch, dtype_name)
    rng = np.random.default_rng(5)
    t = np.arange(64)
    audio = np.sin(t[None, :] * rng.uniform(0.1, 0.5, (3, 1))) * rng.uniform(0.3, 1.2, (3, 1))
    audio = torch.from_numpy(audio + 0.05 * rng.standard_normal((3, 64)))
    quantized = mu_law_encode(audio, 16)
    model = WaveNet()
    if os.path.exists(weights_path):
        model.load_state_dict(torch.load(weights_path, weights_only=True))
    else:
        torch.save(model.state_dict(), weights_path)
    model.to(dtype)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, amsgrad=True)
    inputs = F.one_hot(quantized[:, :-1], num_classes=16).permute(0, 2, 1).to(dtype)
    targets = quantized[:, 1:]
    losses = []
    for step in range(3):
        logits = model(inputs)
        loss = F.cross_entropy(logits[:, :, model.receptive_field:], targets[:, model.receptive_field:])
        optimizer.zero_grad()
        loss.backward()
        total_norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5)
        optimizer.step()
        losses.append([loss.item(), total_norm.item()])
    # greedy generation of a few samples
    model.eval()
    generated = quantized[:1, :20].clone()
    with torch.no_grad():
        for _ in range(4):
            x = F.one_hot(generated, 16).transpose(1, 2).to(dtype)
            probs = F.softmax(model(x)[:, :, -1], dim=1)
            generated = torch.cat([generated, probs.argmax(dim=1, keepdim=True)], dim=1)
    return {"quantized": quantized, "losses": losses, "logits": logits, "generated": generated,
            "grads": [p.grad for p in model.parameters()], "state": model.state_dict(),
            "adam": optimizer.state_dict()["state"]}
