"""Run a PyTorch-trained CNN with npconv: read its ``.pt`` checkpoint without torch.

    python examples/load_torch_checkpoint.py              # makes a checkpoint with torch, if installed
    python examples/load_torch_checkpoint.py model.pt     # or reads yours (a state_dict of this net)

``npconv.load_torch`` parses the zip + pickle format of ``torch.save`` with a restricted unpickler:
only tensors, storages and plain Python containers are admitted, nothing in the file is executed
(the promise of ``torch.load(weights_only=True)``). The state dict then loads into the same
architecture written with npconv's layers, which computes the same outputs.
"""

import sys

import numpy as np

import npconv
from npconv import nn


def npconv_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(16, 10),
    )


def make_torch_checkpoint(path: str, x: np.ndarray):
    """Train the same architecture in torch for a few steps, save it, return torch's eval outputs."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10),
    )
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for _ in range(20):  # fit random labels: just to move weights and BatchNorm statistics
        optimizer.zero_grad()
        batch = torch.randn(32, 1, 12, 12)
        torch.nn.functional.cross_entropy(net(batch), torch.randint(0, 10, (32,))).backward()
        optimizer.step()
    torch.save(net.state_dict(), path)
    with torch.no_grad():
        return net.eval()(torch.from_numpy(x)).numpy()


def main() -> None:
    x = np.random.default_rng(0).standard_normal((4, 1, 12, 12)).astype(np.float32)
    expected = None
    if len(sys.argv) > 1:
        path = sys.argv[1]
    else:
        try:
            import torch  # noqa: F401
        except ImportError:
            print("torch is not installed, so this example cannot make a checkpoint to read.\n"
                  "Give it one instead: python examples/load_torch_checkpoint.py model.pt, where model.pt\n"
                  "holds torch.save(net.state_dict()) of the network in npconv_net(). npconv itself never\n"
                  "needs torch: npconv.load_torch(path) returns the state dict as NumPy arrays.")
            return
        path = "torch_cnn.pt"
        expected = make_torch_checkpoint(path, x)
        print(f"torch wrote {path}")

    state_dict = npconv.load_torch(path)  # OrderedDict of ndarrays; no torch import, no code run
    for name, array in state_dict.items():
        print(f"  {name:28s} {str(array.dtype):8s} {array.shape}")
    model = npconv_net()
    model.load_state_dict(state_dict)
    model.eval()
    with npconv.no_grad():
        logits = model(npconv.tensor(x)).numpy()
    print("npconv predictions:", logits.argmax(axis=1))
    if expected is not None:
        print("torch  predictions:", expected.argmax(axis=1))
        print(f"largest difference from torch's logits: {np.abs(logits - expected).max():.2e}")


if __name__ == "__main__":
    main()
