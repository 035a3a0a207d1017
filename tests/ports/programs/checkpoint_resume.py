"""An Adam + StepLR training loop that checkpoints to a temporary directory and resumes from it
(torch.save of model/optimizer/scheduler state, torch.load(path, map_location='cpu', weights_only=True))."""

import os
import tempfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from torch.utils.data import DataLoader, TensorDataset


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 8, 3)
        self.fc1 = nn.Linear(8 * 2 * 2, 24)
        self.fc2 = nn.Linear(24, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)  # flatten all dimensions except batch
        x = F.relu(self.fc1(x))
        x = self.fc2(x)
        return x


def train_epochs(model, optimizer, scheduler, loader, epochs, dtype):
    criterion = nn.CrossEntropyLoss()
    losses = []
    for epoch in range(epochs):
        running_loss = 0.0
        for i, data in enumerate(loader, 0):
            inputs, labels = data
            optimizer.zero_grad()
            outputs = model(inputs.to(dtype))
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
        scheduler.step()
        losses.append(running_loss)
    return losses


def run(dtype_name, weights_path):
    dtype = getattr(torch, dtype_name)
    rng = np.random.default_rng(7)
    x = torch.tensor(rng.standard_normal((16, 3, 16, 16)), dtype=torch.float32)
    y = torch.tensor(rng.integers(0, 10, 16), dtype=torch.long)
    loader = DataLoader(TensorDataset(x, y), batch_size=4, shuffle=False, drop_last=True)

    net = SmallCNN()
    if os.path.exists(weights_path):
        net.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
    else:
        torch.save(net.state_dict(), weights_path)
    net.to(dtype)
    optimizer = optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
    scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    losses = train_epochs(net, optimizer, scheduler, loader, 2, dtype)

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "checkpoint.pth")
        torch.save({
            "epoch": 2,
            "model_state_dict": net.state_dict(),
            "optimizer_state_dict": optimizer.state_dict(),
            "scheduler_state_dict": scheduler.state_dict(),
            "loss": losses[-1],
        }, path)
        resumed = SmallCNN().to(dtype)
        resumed_optimizer = optim.Adam(resumed.parameters(), lr=1e-3, weight_decay=1e-4)
        resumed_scheduler = optim.lr_scheduler.StepLR(resumed_optimizer, step_size=1, gamma=0.5)
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        resumed.load_state_dict(checkpoint["model_state_dict"])
        resumed_optimizer.load_state_dict(checkpoint["optimizer_state_dict"])
        resumed_scheduler.load_state_dict(checkpoint["scheduler_state_dict"])
        epoch = checkpoint["epoch"]
        saved_loss = checkpoint["loss"]

    continued = train_epochs(net, optimizer, scheduler, loader, 1, dtype)
    resumed_losses = train_epochs(resumed, resumed_optimizer, resumed_scheduler, loader, 1, dtype)
    same = all(torch.equal(a, b) for a, b in zip(net.parameters(), resumed.parameters()))
    return {"losses": losses, "continued": continued, "resumed": resumed_losses, "epoch": epoch,
            "saved_loss": saved_loss, "same": same, "state": resumed.state_dict(),
            "optimizer": resumed_optimizer.state_dict(), "lr": resumed_scheduler.get_last_lr(),
            "grads": [p.grad for p in resumed.parameters()]}
