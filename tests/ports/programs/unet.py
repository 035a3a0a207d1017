"""milesial/Pytorch-UNet's model (bilinear Upsample or ConvTranspose2d, F.pad, torch.cat) with BCE + Dice."""

import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class DoubleConv(nn.Module):
    """(convolution => [BN] => ReLU) * 2"""

    def __init__(self, in_channels, out_channels, mid_channels=None):
        super().__init__()
        if not mid_channels:
            mid_channels = out_channels
        self.double_conv = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True)
        )

    def forward(self, x):
        return self.double_conv(x)


class Down(nn.Module):
    """Downscaling with maxpool then double conv"""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.maxpool_conv = nn.Sequential(
            nn.MaxPool2d(2),
            DoubleConv(in_channels, out_channels)
        )

    def forward(self, x):
        return self.maxpool_conv(x)


class Up(nn.Module):
    """Upscaling then double conv"""

    def __init__(self, in_channels, out_channels, bilinear=True):
        super().__init__()

        # if bilinear, use the normal convolutions to reduce the number of channels
        if bilinear:
            self.up = nn.Upsample(scale_factor=2, mode='bilinear', align_corners=True)
            self.conv = DoubleConv(in_channels, out_channels, in_channels // 2)
        else:
            self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)
            self.conv = DoubleConv(in_channels, out_channels)

    def forward(self, x1, x2):
        x1 = self.up(x1)
        # input is CHW
        diffY = x2.size()[2] - x1.size()[2]
        diffX = x2.size()[3] - x1.size()[3]

        x1 = F.pad(x1, [diffX // 2, diffX - diffX // 2,
                        diffY // 2, diffY - diffY // 2])
        x = torch.cat([x2, x1], dim=1)
        return self.conv(x)


class OutConv(nn.Module):
    def __init__(self, in_channels, out_channels):
        super(OutConv, self).__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x):
        return self.conv(x)


class UNet(nn.Module):
    def __init__(self, n_channels, n_classes, bilinear=False, base=4):
        super(UNet, self).__init__()
        self.n_channels = n_channels
        self.n_classes = n_classes
        self.bilinear = bilinear

        self.inc = (DoubleConv(n_channels, base))
        self.down1 = (Down(base, base * 2))
        factor = 2 if bilinear else 1
        self.down2 = (Down(base * 2, base * 4 // factor))
        self.up1 = (Up(base * 4, base * 2 // factor, bilinear))
        self.up2 = (Up(base * 2, base, bilinear))
        self.outc = (OutConv(base, n_classes))

    def forward(self, x):
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x = self.up1(x3, x2)
        x = self.up2(x, x1)
        logits = self.outc(x)
        return logits


def dice_coeff(input, target, reduce_batch_first=False, epsilon=1e-6):
    # Average of Dice coefficient for all batches, or for a single mask
    assert input.size() == target.size()
    assert input.dim() == 3 or not reduce_batch_first

    sum_dim = (-1, -2) if input.dim() == 2 or not reduce_batch_first else (-1, -2, -3)

    inter = 2 * (input * target).sum(dim=sum_dim)
    sets_sum = input.sum(dim=sum_dim) + target.sum(dim=sum_dim)
    sets_sum = torch.where(sets_sum == 0, inter, sets_sum)

    dice = (inter + epsilon) / (sets_sum + epsilon)
    return dice.mean()


def dice_loss(input, target):
    return 1 - dice_coeff(input, target, reduce_batch_first=True)


def run(dtype_name, weights_path):
    dtype = getattr(torch, dtype_name)
    rng = np.random.default_rng(3)
    images = torch.as_tensor(rng.standard_normal((2, 3, 18, 18)), dtype=dtype)
    true_masks = torch.as_tensor(rng.random((2, 18, 18)) > 0.5).float().to(dtype)
    results = {}
    models = {"transposed": UNet(3, 1, bilinear=False), "bilinear": UNet(3, 1, bilinear=True)}
    if os.path.exists(weights_path):
        checkpoint = torch.load(weights_path, map_location="cpu", weights_only=True)
        for key, model in models.items():
            model.load_state_dict(checkpoint[key])
    else:
        torch.save({key: model.state_dict() for key, model in models.items()}, weights_path)
    for key, model in models.items():
        model.to(dtype=dtype)
        optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-3, weight_decay=1e-8, momentum=0.999,
                                        foreach=True)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, 'max', patience=0)
        criterion = nn.BCEWithLogitsLoss()
        losses = []
        for step in range(2):
            masks_pred = model(images)
            loss = criterion(masks_pred.squeeze(1), true_masks)
            loss += dice_loss(F.sigmoid(masks_pred.squeeze(1)), true_masks)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
            model.eval()
            with torch.no_grad():
                mask_pred = (F.sigmoid(model(images)) > 0.5).float()
                score = dice_coeff(mask_pred.squeeze(1), true_masks, reduce_batch_first=False)
            scheduler.step(score)
            model.train()
        up = F.interpolate(masks_pred, scale_factor=2, mode="bilinear", align_corners=False)
        results[key] = {"losses": losses, "score": score, "pred": masks_pred, "up": up,
                        "lr": optimizer.param_groups[0]["lr"], "state": model.state_dict(),
                        "grads": {n: p.grad for n, p in model.named_parameters()}}
    return results
