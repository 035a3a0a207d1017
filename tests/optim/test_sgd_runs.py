"""SGD's update of large parameters in runs over the worker threads: bit for bit the whole-array
rule, and torch's values."""

from __future__ import annotations

import numpy as np
import pytest

import npconv
from npconv.kernels import pointwise
from npconv.optim import _functional
from npconv.optim._functional import RUN
from optim_steps import step_with

SETTINGS = [dict(momentum=0.9), dict(momentum=0.9, dampening=0.3), dict(momentum=0.8, nesterov=True),
            dict(momentum=0.9, weight_decay=1e-2, maximize=True), dict()]


def _whole_array_sgd(theta, grads, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                     maximize=False):
    """torch's SGD rule on whole arrays (the reference the runs must equal)."""
    buffer = None
    for g in grads:
        g = -g if maximize else g
        if weight_decay:
            g = g + weight_decay * theta
        if momentum:
            if buffer is None:
                buffer = g.copy()
            else:
                buffer *= momentum
                buffer += (1 - dampening) * g
            g = g + momentum * buffer if nesterov else buffer
        theta -= lr * g
    return theta


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("settings", SETTINGS)
@pytest.mark.parametrize("size, dtype", [
    (3 * RUN + 17, np.float32),  # several runs and a short last one (one range on the compiled core)
    (2 * pointwise.PARALLEL_CORE_MIN_SIZE + 5, np.float32),  # split across the workers there
    (2 * pointwise.PARALLEL_CORE_MIN_SIZE + 3, np.float64),
    (13, np.float32),  # under a vector: the kernel's scalar loop
])
def test_runs_equal_the_whole_array_rule(settings, threads, size, dtype):
    """The update (the compiled core's one pass where it runs, else the NumPy runs) equals the
    whole-array rule bit for bit, its products and sums each rounded (no fused multiply-add)."""
    rng = np.random.default_rng(0)
    shape = (size,)
    start = rng.standard_normal(shape).astype(dtype)
    grads = [rng.standard_normal(shape).astype(dtype) for _ in range(3)]
    param = npconv.nn.Parameter(start.copy())
    optimizer = npconv.optim.SGD([param], lr=0.05, **settings)
    step_with(optimizer, param, grads, threads)
    expected = _whole_array_sgd(start.copy(), grads, 0.05, **settings)
    np.testing.assert_array_equal(param.numpy(), expected)


@pytest.mark.parametrize("settings", SETTINGS[:3])
def test_runs_match_torch(torch, settings):
    rng = np.random.default_rng(1)
    start = rng.standard_normal((64, 32, 9, 9))  # float64, 165888 elements: runs
    grads = [rng.standard_normal(start.shape) for _ in range(3)]
    param = npconv.nn.Parameter(start.copy())
    optimizer = npconv.optim.SGD([param], lr=0.1, **settings)
    reference = torch.nn.Parameter(torch.tensor(start))
    torch_optimizer = torch.optim.SGD([reference], lr=0.1, **settings)
    for g in grads:
        param.grad = npconv.tensor(g.copy())
        optimizer.step()
        reference.grad = torch.tensor(g)
        torch_optimizer.step()
    np.testing.assert_allclose(param.numpy(), reference.detach().numpy(), rtol=1e-13, atol=1e-13)



@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name, settings", [
    ("RMSprop", dict(momentum=0.9, centered=True, weight_decay=0.01)), ("RMSprop", dict()),
    ("Adagrad", dict(lr_decay=0.01)), ("Adadelta", dict(weight_decay=0.1)), ("Adamax", dict(maximize=True)),
    ("NAdam", dict(weight_decay=0.01)), ("RAdam", dict()), ("Adam", dict(amsgrad=True)),
])
@pytest.mark.parametrize("dtype", [np.float32, np.complex64])
def test_other_optimizers_in_runs_equal_their_whole_array_update(monkeypatch, name, settings, threads, dtype):
    """The element-wise optimizers update large parameters in runs over the worker threads (their
    temporaries run-sized): bit for bit their update on whole arrays (RUN beyond any size), complex
    parameters through their real views. (Adam: NumPy's runs where the compiled step is not used.)"""
    rng = np.random.default_rng(4)
    shape = (3 * RUN + 17,)
    def draw() -> np.ndarray:
        values = rng.standard_normal(shape)
        return (values + 1j * rng.standard_normal(shape) if dtype == np.complex64 else values).astype(dtype)

    start, grads = draw(), [draw() for _ in range(12)]  # RAdam rectifies after step 5
    results = []
    for run in (RUN, 1 << 40):
        monkeypatch.setattr(_functional, "RUN", run)
        monkeypatch.setattr(pointwise, "adam_step", lambda *a: False)
        param = npconv.nn.Parameter(start.copy())
        step_with(getattr(npconv.optim, name)([param], lr=0.01, **settings), param, grads, threads)
        results.append(param.numpy())
    np.testing.assert_array_equal(results[0], results[1])
