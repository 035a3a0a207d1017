"""Train a small CNN on scikit-learn's 8x8 handwritten digits, save it, load it back, evaluate.

    pip install 'npconv[demo]'          # scikit-learn for the data, safetensors for the weights
    python examples/train_digits.py

The same network as ``python -m npconv demo``, written out as plain user code: torch's names,
torch's training loop, NumPy underneath. Takes a few seconds and reaches ~99% held-out accuracy.
"""

import numpy as np
from sklearn.datasets import load_digits

import npconv
import npconv.nn.functional as F
from npconv import nn, optim

npconv.manual_seed(0)
rng = np.random.default_rng(0)

digits = load_digits()
x = (digits.images[:, None] / 16.0).astype(np.float32)  # (1797, 1, 8, 8) in [0, 1]
y = digits.target.astype(np.int64)
order = rng.permutation(len(y))
test, train = order[:360], order[360:]

model = nn.Sequential(
    nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),  # 16 x 4 x 4
    nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),  # 32 x 2 x 2
    nn.Flatten(), nn.Linear(32 * 2 * 2, 10),
)
optimizer = optim.Adam(model.parameters(), lr=1e-2)
scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.3)

for epoch in range(8):
    model.train()
    for batch in np.array_split(rng.permutation(train), len(train) // 32):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(npconv.tensor(x[batch])), y[batch])
        loss.backward()
        optimizer.step()
    scheduler.step()
    print(f"epoch {epoch + 1}: last batch loss {loss.item():.4f}, lr {scheduler.get_last_lr()[0]:.4g}")

npconv.save(model.state_dict(), "digits_cnn.safetensors")

restored = nn.Sequential(
    nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(32 * 2 * 2, 10),
)
restored.load_state_dict(npconv.load("digits_cnn.safetensors"))
restored.eval()
with npconv.no_grad():
    predicted = restored(npconv.tensor(x[test])).argmax(dim=1).numpy()
print(f"held-out accuracy of the reloaded model: {np.mean(predicted == y[test]):.2%}")
