"""The PyTorch MNIST example (examples/mnist/main.py), shrunk: random 12x12 digits, Adadelta + StepLR."""

import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from torch.optim.lr_scheduler import StepLR
from torch.utils.data import DataLoader, TensorDataset


class Net(nn.Module):
    def __init__(self, dropout=(0.25, 0.5)):
        super(Net, self).__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, 1)
        self.conv2 = nn.Conv2d(8, 16, 3, 1)
        self.dropout1 = nn.Dropout(dropout[0])
        self.dropout2 = nn.Dropout(dropout[1])
        self.fc1 = nn.Linear(256, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = self.conv1(x)
        x = F.relu(x)
        x = self.conv2(x)
        x = F.relu(x)
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = self.fc1(x)
        x = F.relu(x)
        x = self.dropout2(x)
        x = self.fc2(x)
        output = F.log_softmax(x, dim=1)
        return output


def train(model, device, train_loader, optimizer, epoch, losses):
    model.train()
    for batch_idx, (data, target) in enumerate(train_loader):
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())


def test(model, device, test_loader):
    model.eval()
    test_loss = 0
    correct = 0
    with torch.no_grad():
        for data, target in test_loader:
            data, target = data.to(device), target.to(device)
            output = model(data)
            test_loss += F.nll_loss(output, target, reduction='sum').item()  # sum up batch loss
            pred = output.argmax(dim=1, keepdim=True)  # get the index of the max log-probability
            correct += pred.eq(target.view_as(pred)).sum().item()
    test_loss /= len(test_loader.dataset)
    return test_loss, correct, output


def run(dtype_name, weights_path):
    dtype = getattr(torch, dtype_name)
    torch.manual_seed(1)
    use_cuda = torch.cuda.is_available()
    device = torch.device("cuda" if use_cuda else "cpu")
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.random((48, 1, 12, 12))).to(dtype)
    images = (images - 0.1307) / 0.3081
    labels = torch.from_numpy(rng.integers(0, 10, 48))
    dataset1 = TensorDataset(images[:32], labels[:32])
    dataset2 = TensorDataset(images[32:], labels[32:])
    train_loader = DataLoader(dataset1, batch_size=8)
    test_loader = DataLoader(dataset2, batch_size=10)

    model = Net(dropout=(0.0, 0.0)).to(device)
    if os.path.exists(weights_path):
        model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
    else:
        torch.save(model.state_dict(), weights_path)
    model = model.to(dtype)
    optimizer = optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = StepLR(optimizer, step_size=1, gamma=0.7)
    losses, lrs = [], []
    for epoch in range(1, 3):
        train(model, device, train_loader, optimizer, epoch, losses)
        test_loss, correct, output = test(model, device, test_loader)
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
    return {
        "losses": losses,
        "test_loss": test_loss,
        "correct": correct,
        "last_output": output,
        "lr": lrs,
        "grads": {n: p.grad for n, p in model.named_parameters()},
        "params": model.state_dict(),
        "optimizer": optimizer.state_dict()["state"],
    }
