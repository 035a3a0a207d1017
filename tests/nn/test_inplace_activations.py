"""``inplace=True`` on activations and dropouts writes into the input like torch (parity of values,
gradients through the in-place op, and torch's refusal for a leaf that requires grad)."""

import numpy as np
import pytest

import npconv
import npconv.nn as nn
import npconv.nn.functional as F

# (module name, constructor args, functional name, functional args)
CASES = [
    ("ReLU", (), "relu", ()),
    ("ReLU6", (), "relu6", ()),
    ("LeakyReLU", (0.2,), "leaky_relu", (0.2,)),
    ("ELU", (0.7,), "elu", (0.7,)),
    ("Hardtanh", (-0.5, 1.5), "hardtanh", (-0.5, 1.5)),
    ("Hardswish", (), "hardswish", ()),
    ("Hardsigmoid", (), "hardsigmoid", ()),
    ("SiLU", (), "silu", ()),
    ("Mish", (), "mish", ()),
]


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def _input():
    return np.random.default_rng(0).standard_normal((2, 3, 4, 5)) * 4


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("form", ["module", "functional"])
def test_inplace_writes_into_the_input_and_differentiates_like_torch(case, form, torch):
    name, args, fname, fargs = case
    values = _input()
    results = {}
    for lib in (npconv, torch):
        leaf = lib.tensor(values, requires_grad=True)
        x = leaf * 1.5  # a non-leaf: in-place is allowed
        if form == "module":
            y = getattr(lib.nn, name)(*args, inplace=True)(x)
        else:
            functional = F if lib is npconv else torch.nn.functional
            y = getattr(functional, fname)(x, *fargs, inplace=True)
        assert y is x
        (y * y).sum().backward()
        results[lib.__name__] = (x.detach().numpy().copy(), leaf.grad.numpy().copy())
    np.testing.assert_allclose(results["npconv"][0], results["torch"][0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(results["npconv"][1], results["torch"][1], rtol=1e-12, atol=1e-14)
    out_of_place = getattr(F, fname)(npconv.tensor(values * 1.5), *fargs).numpy()
    np.testing.assert_array_equal(results["npconv"][0], out_of_place)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_inplace_on_a_leaf_that_requires_grad_is_refused_and_changes_nothing(case, torch):
    name, args, _, _ = case
    for lib in (npconv, torch):
        leaf = lib.tensor(_input(), requires_grad=True)
        with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
            getattr(lib.nn, name)(*args, inplace=True)(leaf)
        np.testing.assert_array_equal(leaf.detach().numpy(), _input())


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_inplace_without_grad_modifies_the_tensor(case):
    name, args, fname, fargs = case
    x = npconv.tensor(_input())
    expected = getattr(F, fname)(npconv.tensor(_input()), *fargs).numpy()
    with npconv.no_grad():
        y = getattr(nn, name)(*args, inplace=True)(x)
    assert y is x
    np.testing.assert_array_equal(x.numpy(), expected)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_repr_with_inplace_is_torchs(case, torch):
    name, args, _, _ = case
    assert repr(getattr(nn, name)(*args, inplace=True)) == repr(getattr(torch.nn, name)(*args, inplace=True))


@pytest.mark.parametrize("name, shape", [("Dropout", (4, 6)), ("Dropout1d", (3, 4, 6)), ("Dropout1d", (4, 6)),
                                         ("Dropout2d", (2, 3, 4, 4)), ("Dropout3d", (3, 2, 2, 2)),
                                         ("Dropout3d", (2, 3, 2, 2, 2))])
def test_inplace_dropout_writes_the_same_mask_into_the_input(name, shape):
    values = np.random.default_rng(1).random(shape) + 1  # no zeros: a zero marks a dropped element
    npconv.manual_seed(5)
    expected = getattr(nn, name)(0.5)(npconv.tensor(values)).numpy()
    npconv.manual_seed(5)
    leaf = npconv.tensor(values, requires_grad=True)
    x = leaf * 1
    y = getattr(nn, name)(0.5, inplace=True)(x)
    assert y is x
    np.testing.assert_array_equal(x.numpy(), expected)
    y.sum().backward()
    np.testing.assert_array_equal(leaf.grad.numpy(), expected / values)  # the mask times 1 / (1 - p)
    evaluated = getattr(nn, name)(0.5, inplace=True).eval()
    z = npconv.tensor(values)
    assert evaluated(z) is z and np.array_equal(z.numpy(), values)


def test_inplace_flag_must_be_a_bool():
    with pytest.raises(TypeError, match="inplace"):
        F.hardtanh(npconv.ones(3), inplace="yes")
    with pytest.raises(TypeError, match="inplace"):
        F.dropout2d(npconv.ones(2, 3, 4), inplace=1.5)
