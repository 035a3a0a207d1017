"""Adam's and AdamW's update: the compiled core's one pass (where it runs) bit for bit the whole-array
rule of torch's formula in NumPy, over one range and split across the workers, every option; which
parameters the compiled SGD and Adam steps take."""

from __future__ import annotations

import numpy as np
import pytest

import npconv
from npconv import backends
from npconv.kernels import pointwise
from optim_steps import step_with

SETTINGS = [
    ("Adam", dict()),
    ("Adam", dict(weight_decay=0.1, amsgrad=True)),
    ("Adam", dict(betas=(0.3, 0.95), maximize=True)),  # 1 - beta1 >= 0.5: lerp's other side
    ("AdamW", dict()),
    ("AdamW", dict(weight_decay=0.3, amsgrad=True, maximize=True, eps=1e-3)),
]


def _whole_array_adam(theta, grads, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                      maximize=False, decoupled=False, state=None):
    """torch's Adam rule on whole arrays, one NumPy operation at a time (the reference): theta and the
    averages m, v after the steps."""
    m, v, vmax = state if state is not None else (np.zeros_like(theta),) * 3
    m, v, vmax = m.copy(), v.copy(), vmax.copy()
    beta1, beta2 = betas
    for step, g in enumerate(grads, start=1):
        g = -g if maximize else g
        if weight_decay and decoupled:
            theta *= 1 - lr * weight_decay
        elif weight_decay:
            g = g + weight_decay * theta
        w = 1 - beta1
        if abs(w) < 0.5:
            m += w * (g - m)
        else:
            m[...] = g - (g - m) * (1 - w)
        v *= beta2
        v += (1 - beta2) * g * g
        if amsgrad:
            np.maximum(vmax, v, out=vmax)
        denom = np.sqrt(vmax if amsgrad else v) / (1 - beta2**step) ** 0.5
        denom += eps
        theta += -(lr / (1 - beta1**step)) * m / denom
    return theta, m, v


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name, settings", SETTINGS)
@pytest.mark.parametrize("size, dtype", [
    (2 * pointwise.PARALLEL_CORE_MIN_SIZE + 5, np.float32),  # split across the workers
    (1000 + 3, np.float64),  # one range; a tail under a vector
    (13, np.float32),  # under a vector: the scalar loop only
])
def test_the_update_equals_the_whole_array_rule(name, settings, threads, size, dtype):
    rng = np.random.default_rng(3)
    start = rng.standard_normal(size).astype(dtype)
    grads = [rng.standard_normal(size).astype(dtype) for _ in range(3)]
    grads[1][::7] = 0  # exact zeros in the averages
    param = npconv.nn.Parameter(start.copy())
    optimizer = getattr(npconv.optim, name)([param], lr=0.01, **settings)
    step_with(optimizer, param, grads, threads)
    kwargs = dict(settings, decoupled=name == "AdamW")
    if name == "AdamW":
        kwargs.setdefault("weight_decay", 1e-2)
    expected, m, v = _whole_array_adam(start.copy(), grads, lr=0.01, **kwargs)
    np.testing.assert_array_equal(param.numpy(), expected)
    state = optimizer.state[param]
    np.testing.assert_array_equal(np.asarray(state["exp_avg"]), m)
    np.testing.assert_array_equal(np.asarray(state["exp_avg_sq"]), v)


def test_nan_and_inf_propagate_as_in_numpy():
    """A NaN or inf in the gradient reaches the same elements, amsgrad's maximum keeping the NaN."""
    rng = np.random.default_rng(5)
    start = rng.standard_normal(300).astype(np.float32)
    g = rng.standard_normal(300).astype(np.float32)
    g[[3, 40, 200]] = [np.nan, np.inf, -np.inf]
    param = npconv.nn.Parameter(start.copy())
    optimizer = npconv.optim.Adam([param], lr=0.01, amsgrad=True)
    for _ in range(2):
        param.grad = npconv.tensor(g.copy())
        optimizer.step()
    expected = _whole_array_adam(start.copy(), [g, g], lr=0.01, amsgrad=True)[0]
    np.testing.assert_array_equal(param.numpy(), expected)
    assert np.isnan(param.numpy()[[3, 40, 200]]).all()


@pytest.mark.skipif(not backends.core.available, reason="the compiled core is not built")
def test_the_kernel_keeps_a_nan_maximum_as_numpy_does():
    """amsgrad's running maximum keeps a NaN it holds (np.maximum's rule) where the new average is
    finite: a state loaded with NaN, in the vector lanes and the scalar tail."""
    rng = np.random.default_rng(6)
    size = 37
    theta, g = rng.standard_normal(size), rng.standard_normal(size)
    m, v = rng.standard_normal(size), rng.random(size)
    vmax = v + rng.random(size)
    vmax[[2, 20, 36]] = np.nan
    expected = _whole_array_adam(theta.copy(), [g], lr=0.01, amsgrad=True, state=(m, v, vmax))[0]
    got, state = theta.copy(), [m.copy(), v.copy(), vmax.copy()]
    assert pointwise.adam_step(got, g, *state, 0.01, (0.9, 0.999), 1e-8, 0.0, False, False, 1.0)
    np.testing.assert_array_equal(got, expected)
    assert np.isnan(state[2][[2, 20, 36]]).all() and np.isnan(got[[2, 20, 36]]).all()


@pytest.mark.parametrize("kernel, make", [
    ("sgd_step", lambda p: npconv.optim.SGD(p, lr=0.1, momentum=0.9)),
    ("adam_step", lambda p: npconv.optim.AdamW(p, lr=0.1, amsgrad=True)),
])
def test_the_compiled_core_takes_the_update(monkeypatch, kernel, make):
    """With the compiled core, float32/float64 C-contiguous parameters take its one-pass update on
    every step, the first included; another layout (a transposed view's gradient) runs NumPy's."""
    calls = []
    original = getattr(pointwise, kernel)
    monkeypatch.setattr(pointwise, kernel, lambda *a: calls.append(original(*a)) or calls[-1])
    param = npconv.nn.Parameter(np.ones((40, 30), np.float32))
    optimizer = make([param])
    step_with(optimizer, param, [np.full((40, 30), 0.5, np.float32)] * 2, 1)
    step_with(optimizer, param, [np.full((30, 40), 0.5, np.float32).T], 1)
    assert calls == [backends.core.available] * 2 + [False]
