"""LayerNorm, InstanceNorm1d/2d/3d, LocalResponseNorm, F.normalize and F.cosine_similarity against torch."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npconv
import npconv.nn as nn
import npconv.nn.functional as F
from torch_oracle import close, compare, torch_module

DTYPES = [np.float64, np.float32]


def _x(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("shape", "normalized"), [((4, 6), (6,)), ((2, 3, 4, 5), (4, 5)), ((3, 5), (3, 5)), ((7,), 7)]
)
@pytest.mark.parametrize("affine", ["both", "weight", "none"])
def test_layer_norm_matches_torch(shape, normalized, affine, dtype):
    torch = torch_module()
    ns = (normalized,) if isinstance(normalized, int) else normalized
    inputs = [_x(shape, dtype)]
    if affine != "none":
        inputs.append(_x(ns, dtype, 1) + 1)
    if affine == "both":
        inputs.append(_x(ns, dtype, 2))
    compare(
        lambda x, *p: F.layer_norm(x, normalized, *p, eps=1e-4),
        lambda x, *p: torch.nn.functional.layer_norm(x, ns, *p, eps=1e-4),
        inputs,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 5), (2, 3, 4, 4), (1, 2, 2, 3, 2)])
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("track", [False, True])
def test_instance_norm_modules_match_torch(shape, affine, track, dtype):
    torch = torch_module()
    nd = len(shape) - 2
    ours = getattr(nn, f"InstanceNorm{nd}d")(3, affine=affine, track_running_stats=track, dtype=dtype)
    theirs = getattr(torch.nn, f"InstanceNorm{nd}d")(
        3, affine=affine, track_running_stats=track, dtype=getattr(torch, np.dtype(dtype).name)
    )
    if affine:
        with torch.no_grad():
            theirs.weight.copy_(torch.linspace(0.5, 1.5, 3))
            theirs.bias.copy_(torch.linspace(-1, 1, 3))
        ours.weight.numpy()[...] = theirs.weight.detach().numpy()
        ours.bias.numpy()[...] = theirs.bias.detach().numpy()
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    shape = (shape[0], 3) + shape[2:]
    x = _x(shape, dtype) * 2 + 1
    compare(ours, theirs, [x])
    if affine:
        for name in ("weight", "bias"):
            close(getattr(ours, name).grad, getattr(theirs, name).grad, f"grad {name}")
    if track:
        for name in ("running_mean", "running_var"):
            close(getattr(ours, name), getattr(theirs, name), name)
        ours.eval(), theirs.eval()
        compare(ours, theirs, [x])
    compare(ours, theirs, [x[0]])  # unbatched


def test_instance_norm_functional_errors_and_eval_statistics():
    torch = torch_module()
    x = _x((2, 3, 4), np.float64)
    rm, rv = np.array([0.1, -0.2, 0.3]), np.array([1.5, 0.5, 2.0])
    compare(
        lambda t: F.instance_norm(t, npconv.tensor(rm), npconv.tensor(rv), use_input_stats=False),
        lambda t: torch.nn.functional.instance_norm(
            t, torch.from_numpy(rm), torch.from_numpy(rv), use_input_stats=False
        ),
        [x],
    )
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        F.instance_norm(npconv.tensor(np.ones((2, 3, 1))))
    with pytest.raises(ValueError, match="running_mean"):
        F.instance_norm(npconv.tensor(x), running_mean=npconv.tensor(np.zeros(2)))
    with pytest.raises(ValueError, match="num_features"):
        nn.InstanceNorm1d(3, affine=True)(npconv.tensor(np.ones((2, 4, 5))))
    with pytest.raises(ValueError, match="2D or 3D"):
        nn.InstanceNorm1d(3)(npconv.tensor(np.ones((2, 3, 4, 5))))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nn.InstanceNorm1d(3)(npconv.tensor(np.ones((2, 4, 5))))
    assert any("does not match num_features" in str(w.message) for w in caught)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 5, 4), (2, 6, 3, 3), (1, 4, 2, 3, 2)])
@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_local_response_norm_matches_torch(shape, size, dtype):
    torch = torch_module()
    ours, theirs = (
        nn.LocalResponseNorm(size, 1e-2, 0.6, 2.0),
        torch.nn.LocalResponseNorm(size, 1e-2, 0.6, 2.0),
    )
    assert repr(ours) == repr(theirs)
    compare(ours, theirs, [_x(shape, dtype)])


@settings(max_examples=30, deadline=None)
@given(
    shape=st.sampled_from([(3, 4), (2, 3, 4), (5,), (2, 1, 3)]),
    p=st.sampled_from([2.0, 1.0, 3.0, 0.5, 1.5, float("inf"), 0.0]),
    dim=st.integers(-3, 2),
    zero=st.booleans(),
)
def test_normalize_matches_torch(shape, p, dim, zero):
    torch = torch_module()
    if not -len(shape) <= dim < len(shape):
        with pytest.raises(IndexError):
            F.normalize(npconv.tensor(np.ones(shape)), p, dim)
        return
    x = _x(shape, np.float64)
    if zero:
        x[..., 0] = 0.0  # a zero row along some dim (norm 0 -> clamp at eps)
        x.flat[1] = 0.0
    compare(lambda t: F.normalize(t, p, dim), lambda t: torch.nn.functional.normalize(t, p, dim), [x])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("s1", "s2", "dim"), [((4, 5), (4, 5), 1), ((3, 4), (4,), -1), ((2, 3, 4), (2, 1, 4), 0), ((5,), (5,), 0)]
)
def test_cosine_similarity_matches_torch(s1, s2, dim, dtype):
    torch = torch_module()
    a, b = _x(s1, dtype), _x(s2, dtype, 1)
    a.reshape(-1)[: s1[-1]] = 0.0  # a zero vector: the eps clamp
    compare(
        lambda u, v: F.cosine_similarity(u, v, dim),
        lambda u, v: torch.nn.functional.cosine_similarity(u, v, dim),
        [a, b],
    )


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: F.layer_norm(npconv.tensor(np.ones((2, 3))), [4]), ValueError),
        (
            lambda: F.layer_norm(npconv.tensor(np.ones((2, 4))), [4], weight=npconv.tensor(np.ones(3))),
            ValueError,
        ),
        (
            lambda: F.layer_norm(npconv.tensor(np.ones((2, 4))), [4], bias=npconv.tensor(np.ones(3))),
            ValueError,
        ),
        (lambda: F.layer_norm(npconv.tensor(np.ones((2, 4))), 4.5), TypeError),
        (lambda: F.local_response_norm(npconv.tensor(np.ones((2, 3))), 2), ValueError),
        (
            lambda: F.cosine_similarity(npconv.tensor(np.ones((2, 3))), npconv.tensor(np.ones((2, 4)))),
            ValueError,
        ),
        (
            lambda: F.cosine_similarity(
                npconv.tensor(np.ones((2, 3))), npconv.tensor(np.ones((2, 3))), dim=2
            ),
            IndexError,
        ),
        (lambda: F.normalize(npconv.tensor(np.ones((2, 3))), out=npconv.tensor(np.ones((2, 3)))), ValueError),
    ],
)
def test_bad_arguments_are_rejected(call, error):
    with pytest.raises(error):
        call()


def test_layer_norm_module_matches_torch():
    torch = torch_module()
    for args, kwargs in [((4,), {}), (((3, 4),), {"elementwise_affine": False}), ((4,), {"bias": False})]:
        ours, theirs = nn.LayerNorm(*args, **kwargs), torch.nn.LayerNorm(*args, **kwargs)
        assert repr(ours) == repr(theirs)
        assert list(ours.state_dict()) == list(theirs.state_dict())
        compare(ours, theirs, [_x((2, 3, 4), np.float32)])


@pytest.mark.parametrize("shape, groups", [((1, 2, 1, 1), 2), ((1, 1), 1), ((1, 4), 4)])
def test_group_norm_refuses_one_value_per_group_as_torch(shape, groups):
    torch = torch_module()
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        torch.nn.functional.group_norm(torch.ones(shape), groups)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        F.group_norm(npconv.ones(shape), groups)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        nn.GroupNorm(groups, shape[1])(npconv.ones(shape))
    assert F.group_norm(npconv.ones((2,) + shape[1:]), groups).shape == (2,) + shape[1:]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_norm_running_mean_of_an_infinite_value_is_infinite_as_torchs(dtype):
    torch = torch_module()
    x = np.array([[1.0, 2.0], [np.inf, 3.0], [0.5, 1.0]], dtype)
    for sign in (1, -1):
        ours_rm, ours_rv = npconv.tensor(np.zeros(2, dtype)), npconv.tensor(np.ones(2, dtype))
        theirs_rm, theirs_rv = torch.zeros(2, dtype=getattr(torch, np.dtype(dtype).name)), \
            torch.ones(2, dtype=getattr(torch, np.dtype(dtype).name))
        F.batch_norm(npconv.tensor(sign * x), ours_rm, ours_rv, training=True)
        torch.nn.functional.batch_norm(torch.from_numpy(sign * x), theirs_rm, theirs_rv, training=True)
        np.testing.assert_allclose(ours_rm.numpy(), theirs_rm.numpy(), rtol=1e-6)
        assert ours_rm.numpy()[0] == sign * np.inf


def test_a_batchnorm_state_dict_without_num_batches_tracked_loads_as_torchs():
    torch = torch_module()
    for lib in (npconv, torch):
        bn = lib.nn.BatchNorm2d(3)
        bn.num_batches_tracked.fill_(5) if lib is torch else bn.num_batches_tracked.numpy().fill(5)
        state = {k: v for k, v in bn.state_dict().items() if k != "num_batches_tracked"}
        result = bn.load_state_dict(state)
        assert result.missing_keys == [] and result.unexpected_keys == []
        assert int(bn.num_batches_tracked) == 5  # kept
    with pytest.raises(ValueError, match="Missing key"):
        nn.BatchNorm2d(3).load_state_dict({"weight": np.ones(3, np.float32)})
