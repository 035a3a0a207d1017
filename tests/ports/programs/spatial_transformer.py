"""The PyTorch spatial transformer tutorial: a localisation net whose last layer is initialised to the
identity transform through `.weight.data.zero_()` / `.bias.data.copy_(torch.tensor(...))`, then
F.affine_grid + F.grid_sample."""

import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim


class Net(nn.Module):
    def __init__(self):
        super(Net, self).__init__()
        self.conv1 = nn.Conv2d(1, 4, kernel_size=5)
        self.conv2 = nn.Conv2d(4, 8, kernel_size=3)
        self.conv2_drop = nn.Dropout2d(p=0.0)
        self.fc1 = nn.Linear(32, 16)
        self.fc2 = nn.Linear(16, 10)

        # Spatial transformer localization-network
        self.localization = nn.Sequential(
            nn.Conv2d(1, 4, kernel_size=3),
            nn.MaxPool2d(2, stride=2),
            nn.ReLU(True),
            nn.Conv2d(4, 6, kernel_size=3),
            nn.MaxPool2d(2, stride=2),
            nn.ReLU(True)
        )

        # Regressor for the 3 * 2 affine matrix
        self.fc_loc = nn.Sequential(
            nn.Linear(6 * 2 * 2, 16),
            nn.ReLU(True),
            nn.Linear(16, 3 * 2)
        )

        # Initialize the weights/bias with identity transformation
        self.fc_loc[2].weight.data.zero_()
        self.fc_loc[2].bias.data.copy_(torch.tensor([1, 0, 0, 0, 1, 0], dtype=torch.float))

    # Spatial transformer network forward function
    def stn(self, x):
        xs = self.localization(x)
        xs = xs.view(-1, 6 * 2 * 2)
        theta = self.fc_loc(xs)
        theta = theta.view(-1, 2, 3)

        grid = F.affine_grid(theta, x.size(), align_corners=False)
        x = F.grid_sample(x, grid, align_corners=False)

        return x

    def forward(self, x):
        # transform the input
        x = self.stn(x)

        # Perform the usual forward pass
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = x.view(-1, 32)
        x = F.relu(self.fc1(x))
        x = F.dropout(x, training=self.training, p=0.0)
        x = self.fc2(x)
        return F.log_softmax(x, dim=1)


def run(dtype_name, weights_path):
    dtype = getattr(torch, dtype_name)
    device = torch.device("cpu")
    rng = np.random.default_rng(9)
    data = torch.from_numpy(rng.random((6, 1, 16, 16))).to(dtype)
    target = torch.from_numpy(rng.integers(0, 10, 6))
    model = Net().to(device)
    identity_bias = model.fc_loc[2].bias.detach().clone()
    zero_weight = model.fc_loc[2].weight.abs().sum().item()
    if os.path.exists(weights_path):
        model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
    else:
        # perturb the identity so the sampler's gradients are not all at the pixel centres
        with torch.no_grad():
            model.fc_loc[2].weight.normal_(0, 0.05)
            model.fc_loc[2].bias.add_(torch.randn(6) * 0.1)
        torch.save(model.state_dict(), weights_path)
    model.to(dtype)
    optimizer = optim.SGD(model.parameters(), lr=0.01)
    model.train()
    losses = []
    for step in range(2):
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        model.eval()
        transformed = model.stn(data).cpu()
    return {"identity_bias": identity_bias, "zero_weight": zero_weight, "losses": losses,
            "output": output, "transformed": transformed,
            "grads": {n: p.grad for n, p in model.named_parameters()}, "params": model.state_dict()}
