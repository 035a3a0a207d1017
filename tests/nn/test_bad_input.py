"""Bad arguments and inputs: npconv rejects what torch rejects, with ValueError/TypeError naming the
argument and the expected/actual values; a rejected call changes nothing; nothing else escapes.

Deliberate extensions (issue 5) are not errors here: ``padding='same'`` with a stride, padding modes
on transposed convolutions, the ``'symmetric'`` mode, per-side padding pairs and circular padding
wider than the input.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npconv
import npconv.nn.functional as F
from npconv import nn
from torch_oracle import torch_module

pytestmark = pytest.mark.filterwarnings("ignore:Initializing zero-element tensors is a no-op")

X2 = np.zeros((1, 2, 5, 5), np.float32)


def _torch_rejects(call) -> None:
    with pytest.raises(Exception):  # noqa: B017 - torch's exception types vary (RuntimeError, ...)
        call()


# -- construction ----------------------------------------------------------------------------------
# (id, npconv/torch class name, args, kwargs, exception, message regex); torch must reject the same
# arguments, at construction or at the first forward (npconv rejects them at construction)
CONSTRUCTION = [
    (
        "kernel_size tuple too long",
        "Conv2d",
        (2, 2, (3, 3, 3)),
        {},
        ValueError,
        r"kernel_size must be an int or a tuple of 2 ints .*got \(3, 3, 3\)",
    ),
    (
        "kernel_size tuple too short",
        "Conv3d",
        (2, 2, (3, 3)),
        {},
        ValueError,
        r"kernel_size .* tuple of 3 ints .*got \(3, 3\)",
    ),
    ("kernel_size zero", "Conv1d", (2, 2, 0), {}, ValueError, r"kernel_size must be positive .*got 0"),
    ("kernel_size float", "Conv2d", (2, 2, 2.5), {}, TypeError, r"kernel_size .* ints, but got 2.5"),
    ("kernel_size string", "Conv2d", (2, 2, "3"), {}, TypeError, r"kernel_size .* got '3'"),
    ("stride zero", "Conv2d", (2, 2, 3), dict(stride=0), ValueError, r"stride must be positive .*got 0"),
    (
        "stride negative",
        "Conv2d",
        (2, 2, 3),
        dict(stride=(1, -1)),
        ValueError,
        r"stride must be positive .*got \(1, -1\)",
    ),
    (
        "stride tuple length",
        "Conv1d",
        (2, 2, 3),
        dict(stride=(1, 2)),
        ValueError,
        r"stride must be an int or a tuple of 1 ints .*got \(1, 2\)",
    ),
    (
        "dilation zero",
        "Conv3d",
        (2, 2, 3),
        dict(dilation=0),
        ValueError,
        r"dilation must be positive .*got 0",
    ),
    (
        "dilation negative transposed",
        "ConvTranspose2d",
        (2, 2, 3),
        dict(dilation=-2),
        ValueError,
        r"dilation must be positive .*got -2",
    ),
    (
        "padding negative",
        "Conv2d",
        (2, 2, 3),
        dict(padding=-1),
        ValueError,
        r"padding must be non-negative, but got -1",
    ),
    (
        "padding negative in tuple",
        "ConvTranspose1d",
        (2, 2, 3),
        dict(padding=(-1,)),
        ValueError,
        r"padding must be non-negative, but got \(-1,\)",
    ),
    (
        "padding string",
        "Conv2d",
        (2, 2, 3),
        dict(padding="full"),
        ValueError,
        r"Invalid padding string 'full'",
    ),
    ("padding float", "Conv2d", (2, 2, 3), dict(padding=1.5), TypeError, r"padding .* got 1.5"),
    (
        "padding_mode",
        "Conv2d",
        (2, 2, 3),
        dict(padding_mode="mirror"),
        ValueError,
        r"padding_mode must be one of .*but got padding_mode='mirror'",
    ),
    (
        "groups in_channels",
        "Conv2d",
        (3, 2, 3),
        dict(groups=2),
        ValueError,
        r"in_channels must be divisible by groups, got in_channels=3, groups=2",
    ),
    (
        "groups out_channels",
        "ConvTranspose2d",
        (2, 3, 3),
        dict(groups=2),
        ValueError,
        r"out_channels must be divisible by groups, got out_channels=3, groups=2",
    ),
    (
        "groups zero",
        "Conv1d",
        (2, 2, 3),
        dict(groups=0),
        ValueError,
        r"groups must be positive, but got 0",
    ),
    (
        "in_channels negative",
        "Conv2d",
        (-1, 2, 3),
        {},
        ValueError,
        r"in_channels must be non-negative, but got -1",
    ),
    ("out_channels float", "Conv2d", (2, 2.0, 3), {}, TypeError, r"out_channels must be an int, but got 2.0"),
    (
        "output_padding too large",
        "ConvTranspose2d",
        (2, 2, 3),
        dict(stride=2, output_padding=2),
        ValueError,
        r"output_padding must be smaller than either stride or dilation, but got output_padding=\(2, 2\), "
        r"stride=\(2, 2\), dilation=\(1, 1\)",
    ),
    (
        "output_padding negative",
        "ConvTranspose1d",
        (2, 2, 3),
        dict(output_padding=-1, stride=2),
        ValueError,
        r"output_padding must be non-negative .*got -1",
    ),
    (
        "device",
        "Conv2d",
        (2, 2, 3),
        dict(device="cuda"),
        ValueError,
        r"device must be None or 'cpu', got 'cuda'",
    ),
    (
        "same on transposed",
        "ConvTranspose2d",
        (2, 2, 3),
        dict(padding="same"),
        ValueError,
        r"padding='same' is not supported for transposed convolutions",
    ),
]


@pytest.mark.parametrize("case", CONSTRUCTION, ids=lambda c: c[0])
def test_construction_rejects_what_torch_rejects(case):
    _, name, args, kwargs, error, match = case
    with pytest.raises(error, match=match):
        getattr(nn, name)(*args, **kwargs)


@pytest.mark.parametrize("case", CONSTRUCTION, ids=lambda c: c[0])
def test_torch_rejects_the_construction_cases(case, torch):
    _, name, args, kwargs, _, _ = case
    nd = int(name[-2])

    def torch_build_and_run():
        layer = getattr(torch.nn, name)(*args, **kwargs)
        layer(torch.zeros((1, layer.in_channels) + (7,) * nd))

    _torch_rejects(torch_build_and_run)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_, "int16", object])
def test_non_float_dtype_is_a_type_error(dtype):
    with pytest.raises(TypeError, match=r"dtype must be a floating point or complex dtype, but got"):
        nn.Conv2d(2, 2, 3, dtype=dtype)


def test_unknown_dtype_name_is_a_type_error():
    with pytest.raises(TypeError, match=r"dtype must be a NumPy dtype or its name, got 'floaty'"):
        nn.ConvTranspose1d(2, 2, 3, dtype="floaty")


def test_accepted_dtype_forms():
    for dtype in (np.float64, "float64", "torch.float64", np.dtype("float64")):
        assert nn.Conv1d(1, 1, 1, dtype=dtype).weight.dtype == np.float64
    assert nn.Conv1d(1, 1, 1, device="cpu").weight.dtype == np.float32


# -- forward ------------------------------------------------------------------------------------------
def _conv2d():
    return nn.Conv2d(2, 4, 3), lambda: torch_module().nn.Conv2d(2, 4, 3)


def _transposed2d():
    return nn.ConvTranspose2d(2, 4, 3, stride=2), lambda: torch_module().nn.ConvTranspose2d(2, 4, 3, stride=2)


# (id, factory of (npconv layer, builder of torch's layer), input, forward kwargs, exception, message regex)
FORWARD = [
    (
        "rank too high",
        _conv2d,
        np.zeros((1, 1, 2, 5, 5), np.float32),
        {},
        ValueError,
        r"Expected 3D \(unbatched\) or 4D \(batched\) input to conv2d, "
        r"but got input of size: \[1, 1, 2, 5, 5\]",
    ),
    (
        "rank too low",
        _conv2d,
        np.zeros((5, 5), np.float32),
        {},
        ValueError,
        r"Expected 3D \(unbatched\) or 4D \(batched\) input to conv2d, but got input of size: \[5, 5\]",
    ),
    (
        "channels",
        _conv2d,
        np.zeros((1, 3, 5, 5), np.float32),
        {},
        ValueError,
        r"expected input\[1, 3, 5, 5\] to have 2 channels, but got 3 channels instead",
    ),
    (
        "channels unbatched",
        _conv2d,
        np.zeros((3, 5, 5), np.float32),
        {},
        ValueError,
        r"to have 2 channels, but got 3 channels instead",
    ),
    (
        "integer input",
        _conv2d,
        np.zeros((1, 2, 5, 5), np.int64),
        {},
        TypeError,
        r"input must have a floating point or complex dtype, but got int64",
    ),
    (
        "bool input",
        _conv2d,
        np.zeros((1, 2, 5, 5), np.bool_),
        {},
        TypeError,
        r"input must have a floating point or complex dtype, but got bool",
    ),
    (
        "dtype mismatch",
        _conv2d,
        np.zeros((1, 2, 5, 5), np.float64),
        {},
        TypeError,
        r"input type \(float64\) and weight type \(float32\) should be the same",
    ),
    (
        "kernel larger than input",
        _conv2d,
        np.zeros((1, 2, 2, 5), np.float32),
        {},
        ValueError,
        r"Calculated padded input size per channel: \(2 x 5\). Kernel size: \(3 x 3\). "
        r"Kernel size can't be greater than actual input size",
    ),
    (
        "reflect padding wider than input",
        lambda: (
            nn.Conv1d(1, 1, 3, padding=3, padding_mode="reflect"),
            lambda: torch_module().nn.Conv1d(1, 1, 3, padding=3, padding_mode="reflect"),
        ),
        np.zeros((1, 1, 3), np.float32),
        {},
        ValueError,
        r"Padding size should be less than the corresponding input",
    ),
    (
        "transposed channels",
        _transposed2d,
        np.zeros((1, 3, 3, 3), np.float32),
        {},
        ValueError,
        r"Given transposed=1, weight of size \[2, 4, 3, 3\], expected input\[1, 3, 3, 3\] to have 2 channels",
    ),
    (
        "transposed integer input",
        _transposed2d,
        np.zeros((1, 2, 3, 3), np.int32),
        {},
        TypeError,
        r"input must have a floating point or complex dtype, but got int32",
    ),
    (
        "output_size length",
        _transposed2d,
        np.zeros((1, 2, 3, 3), np.float32),
        dict(output_size=[7]),
        ValueError,
        r"ConvTranspose2D: for 4D input, output_size must have 2 or 4 elements \(got 1\)",
    ),
    (
        "output_size too large",
        _transposed2d,
        np.zeros((1, 2, 3, 3), np.float32),
        dict(output_size=[9, 7]),
        ValueError,
        r"requested an output size of \[9, 7\], but valid sizes range from \[7, 7\] to \[8, 8\]",
    ),
    (
        "output_size too small",
        _transposed2d,
        np.zeros((1, 2, 3, 3), np.float32),
        dict(output_size=[6, 7]),
        ValueError,
        r"requested an output size of \[6, 7\], but valid sizes range from \[7, 7\] to \[8, 8\]",
    ),
    (
        "output_size not ints",
        _transposed2d,
        np.zeros((1, 2, 3, 3), np.float32),
        dict(output_size=[7.5, 7]),
        TypeError,
        r"output_size must be a sequence of ints \(or None\), but got \[7.5, 7\]",
    ),
    (
        "output_size int",
        _transposed2d,
        np.zeros((1, 2, 3, 3), np.float32),
        dict(output_size=7),
        TypeError,
        r"output_size must be a sequence of ints \(or None\), but got 7",
    ),
    (
        "output_size with bad input rank",
        _transposed2d,
        np.zeros((2, 3), np.float32),
        dict(output_size=[7, 7]),
        ValueError,
        r"Expected 3D \(unbatched\) or 4D \(batched\) input to conv_transpose2d",
    ),
    (
        "transposed output not positive",
        lambda: (nn.ConvTranspose1d(1, 1, 1, padding=2),
                 lambda: torch_module().nn.ConvTranspose1d(1, 1, 1, padding=2)),
        np.zeros((1, 1, 3), np.float32),
        {},
        ValueError,
        r"output size \(-1,\) is not positive .*padding",
    ),
]


@pytest.mark.parametrize("case", FORWARD, ids=lambda c: c[0])
def test_forward_rejects_what_torch_rejects_and_changes_nothing(case):
    _, factory, x, kwargs, error, match = case
    ours, _ = factory()
    before = {k: np.array(v) for k, v in ours.state_dict().items()}
    for value in (x, npconv.Tensor(x)):
        with pytest.raises(error, match=match):
            ours(value, **kwargs)
    for key, value in ours.state_dict().items():
        assert np.array_equal(value, before[key]) and value.dtype == before[key].dtype, key
    assert ours.weight.grad is None and ours.bias.grad is None


@pytest.mark.parametrize("case", FORWARD, ids=lambda c: c[0])
def test_torch_rejects_the_forward_cases(case, torch):
    _, factory, x, kwargs, _, _ = case
    theirs = factory()[1]()
    _torch_rejects(lambda: theirs(torch.from_numpy(x), **kwargs))


@pytest.mark.parametrize(
    "value", ["abc", None, {"a": 1}, 3, np.array(["x", "y"])], ids=["str", "None", "dict", "int", "str-array"]
)
def test_non_numeric_input_is_a_type_error(value):
    layer = nn.Conv1d(1, 1, 1)
    with pytest.raises(TypeError, match="input"):
        layer(value)


# -- functional ---------------------------------------------------------------------------------------
W2 = np.zeros((2, 2, 3, 3), np.float32)
FUNCTIONAL = [
    (
        "weight rank",
        lambda m: m.conv2d(X2, np.zeros((2, 2, 3), np.float32)),
        ValueError,
        r"conv2d weight must be 4-dimensional .*but got weight of size \[2, 2, 3\]",
    ),
    (
        "bias shape",
        lambda m: m.conv2d(X2, W2, np.zeros(3, np.float32)),
        ValueError,
        r"expected bias to be 1-dimensional with 2 elements, but got bias of size \[3\]",
    ),
    (
        "bias dtype",
        lambda m: m.conv2d(X2, W2, np.zeros(2, np.float64)),
        TypeError,
        r"input type \(float32\) and bias type \(float64\) should be the same",
    ),
    (
        "groups not dividing weight",
        lambda m: m.conv2d(X2, np.zeros((3, 1, 3, 3), np.float32), groups=2),
        ValueError,
        r"Given groups=2, expected weight to be divisible by 2 at dimension 0",
    ),
    (
        "groups channels",
        lambda m: m.conv2d(X2, np.zeros((2, 1, 3, 3), np.float32), groups=1),
        ValueError,
        r"expected input\[1, 2, 5, 5\] to have 1 channels, but got 2 channels instead",
    ),
    ("stride zero", lambda m: m.conv2d(X2, W2, stride=0), ValueError, r"stride must be positive .*got 0"),
    ("padding negative", lambda m: m.conv2d(X2, W2, padding=-1), ValueError, r"padding must be non-negative"),
    (
        "padding string",
        lambda m: m.conv1d(X2[0], W2[..., 0], padding="full"),
        ValueError,
        r"Invalid padding string 'full'",
    ),
    (
        "dilation zero",
        lambda m: m.conv3d(X2[None], W2[None], dilation=0),
        ValueError,
        r"dilation must be positive .*got 0",
    ),
    (
        "integer weight",
        lambda m: m.conv2d(X2, W2.astype(np.int32)),
        TypeError,
        r"weight must have a floating point or complex dtype, but got int32",
    ),
    (
        "dtype mismatch",
        lambda m: m.conv2d(X2.astype(np.float64), W2),
        TypeError,
        r"input type \(float64\) and weight type \(float32\) should be the same",
    ),
    (
        "transposed output_padding",
        lambda m: m.conv_transpose2d(X2, W2, stride=2, output_padding=2),
        ValueError,
        r"output_padding must be smaller than either stride or dilation",
    ),
    (
        "transposed groups",
        lambda m: m.conv_transpose2d(X2, W2, groups=3),
        ValueError,
        r"Given groups=3, expected weight to be at least 3 at dimension 0",
    ),
    (
        "transposed channels",
        lambda m: m.conv_transpose1d(X2[0, :, 0], np.zeros((3, 2, 2), np.float32)),
        ValueError,
        r"expected input\[1, 2, 5\] to have 3 channels, but got 2 channels instead",
    ),
    ("pad odd length", lambda m: m.pad(X2, (1,)), ValueError, r"Padding length must be divisible by 2"),
    (
        "pad too long",
        lambda m: m.pad(X2, (1,) * 10),
        ValueError,
        r"Padding length should be less than or equal to two times the input dimension "
        r"but got padding length 10",
    ),
    ("pad mode", lambda m: m.pad(X2, (1, 1), mode="wrap"), ValueError, r"Unsupported padding mode: 'wrap'"),
    (
        "pad reflect too wide",
        lambda m: m.pad(X2, (5, 1), mode="reflect"),
        ValueError,
        r"Padding size should be less than the corresponding input dimension, but got: padding \(5, 1\)",
    ),
    (
        "pad value with reflect",
        lambda m: m.pad(X2, (1, 1), mode="reflect", value=1.0),
        ValueError,
        r"Padding mode \"reflect\" doesn't take in value argument",
    ),
    (
        "pad not ints",
        lambda m: m.pad(X2, (1.5, 1)),
        TypeError,
        r"pad must be a sequence of ints, but got \(1.5, 1\)",
    ),
    ("pad None", lambda m: m.pad(X2, None), TypeError, r"pad must be a sequence of ints, but got None"),
    ("pad crops everything", lambda m: m.pad(X2, (-3, -3)), ValueError, r"\(-3, -3\)"),
    (
        "pad replicate of empty",
        lambda m: m.pad(np.zeros((1, 2, 0), np.float32), (1, 1), mode="replicate"),
        ValueError,
        r"replicate padding must have a non-empty dimension to copy .*but got padding \(1, 1\) of an empty",
    ),
]


def _as_torch(value):
    torch = torch_module()
    return torch.from_numpy(value) if isinstance(value, np.ndarray) else value


class _TorchF:
    """torch.nn.functional with ndarray arguments converted (to run FUNCTIONAL's calls in torch)."""

    def __getattr__(self, name):
        torch = torch_module()
        TF = torch.nn.functional
        fn = getattr(TF, name)
        return lambda *args, **kwargs: fn(*[_as_torch(a) for a in args], **kwargs)


@pytest.mark.parametrize("case", FUNCTIONAL, ids=lambda c: c[0])
def test_functional_rejects_what_torch_rejects(case):
    _, call, error, match = case
    with pytest.raises(error, match=match):
        call(F)


@pytest.mark.parametrize("case", FUNCTIONAL, ids=lambda c: c[0])
def test_torch_rejects_the_functional_cases(case, torch):
    _torch_rejects(lambda: case[1](_TorchF()))


# -- lazy modules: a rejected first call leaves them uninitialised -------------------------------------
@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((2, 5, 5), np.float32)[None, None],  # wrong rank
        np.zeros((1, 3, 5, 5), np.float32),  # 3 channels, groups=2
        np.zeros((1, 2, 5, 5), np.int64),  # integer input
        np.zeros((1, 2, 5, 5), np.float64),  # dtype differs from the module's float32
        np.zeros((1, 2, 1, 5), np.float32),  # smaller than the kernel
    ],
    ids=["rank", "groups", "integer", "dtype", "too-small"],
)
def test_rejected_first_call_leaves_lazy_module_uninitialised(bad):
    lazy = nn.LazyConv2d(4, 3, groups=2)
    with pytest.raises((ValueError, TypeError)):
        lazy(bad)
    assert type(lazy) is nn.LazyConv2d and lazy.has_uninitialized_params() and lazy.in_channels == 0
    assert lazy(np.zeros((1, 2, 5, 5), np.float32)).shape == (1, 4, 3, 3)


def test_rejected_first_call_with_reflect_padding_leaves_lazy_module_uninitialised():
    lazy = nn.LazyConv1d(2, 3, padding=3, padding_mode="reflect")
    with pytest.raises(ValueError, match="Padding size should be less than the corresponding input"):
        lazy(np.zeros((1, 2, 3), np.float32))
    assert type(lazy) is nn.LazyConv1d and lazy.has_uninitialized_params()


def test_rejected_first_call_leaves_lazy_transposed_module_uninitialised():
    lazy = nn.LazyConvTranspose1d(2, 3, stride=2)
    with pytest.raises(ValueError, match="requested an output size of"):
        lazy(np.zeros((1, 2, 4), np.float32), output_size=[20])
    assert type(lazy) is nn.LazyConvTranspose1d and lazy.has_uninitialized_params()
    assert lazy(np.zeros((1, 2, 4), np.float32), output_size=[10]).shape == (1, 2, 10)


# -- extensions are accepted (not errors) ------------------------------------------------------------
def test_documented_extensions_are_accepted():
    x = np.zeros((1, 2, 5, 5), np.float32)
    assert nn.Conv2d(2, 2, 3, stride=2, padding="same")(x).shape == (1, 2, 3, 3)
    assert nn.ConvTranspose2d(2, 2, 3, padding_mode="reflect", padding=1)(x).shape == (1, 2, 5, 5)
    assert nn.Conv2d(2, 2, 3, padding_mode="symmetric", padding=1)(x).shape == (1, 2, 5, 5)
    assert nn.Conv2d(2, 2, 3, padding=((1, 0), (0, 2)))(x).shape == (1, 2, 4, 5)
    assert nn.Conv2d(2, 2, 3, padding=7, padding_mode="circular")(x).shape == (1, 2, 17, 17)


# -- garbage never escapes as anything but ValueError/TypeError ---------------------------------------
_SCALARS = st.one_of(
    st.integers(-2, 4),
    st.floats(-2, 4),
    st.just(float("nan")),
    st.booleans(),
    st.none(),
    st.sampled_from(["same", "valid", "same_lower", "full", "zeros", "", "reflect", "circular"]),
    st.just(np.int64(2)),
    st.just(1j),
)
_PAIRS = st.lists(st.tuples(st.integers(-1, 3), st.integers(-1, 3)), min_size=1, max_size=3).map(tuple)
_GARBAGE = st.one_of(
    _SCALARS,
    st.lists(_SCALARS, max_size=4).map(tuple),
    st.lists(st.integers(-1, 4), min_size=1, max_size=4),
    _PAIRS,
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
    st.just(np.array([2, 2])),
)
LAYERS = ["Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"]
VALID = dict(in_channels=2, out_channels=2, kernel_size=2, stride=1, padding=0, dilation=1, groups=1,
             padding_mode="zeros", output_padding=0, dtype="float32", bias=True, output_size=None)


@st.composite
def garbled_arguments(draw, names):
    """Valid arguments with one to three of them replaced by garbage."""
    arguments = dict(VALID)
    for name in draw(st.sets(st.sampled_from(sorted(names)), min_size=1, max_size=3)):
        if name == "dtype":
            arguments[name] = draw(st.sampled_from(["float64", "int8", "x", None, 3, np.complex64, object]))
        else:
            arguments[name] = draw(_GARBAGE)
    return arguments


@settings(max_examples=80)
@given(name=st.sampled_from(LAYERS), arguments=garbled_arguments(set(VALID)),
       input_shape=st.one_of(st.lists(st.integers(0, 4), max_size=6), st.just(None)),
       input_dtype=st.sampled_from([np.float32, np.float64, np.int32, np.complex64, np.bool_]))
def test_garbage_raises_only_value_or_type_errors(name, arguments, input_shape, input_dtype):
    """Construction and forward with garbled arguments or input: a result, or ValueError/TypeError."""
    arguments = dict(arguments)
    output_size = arguments.pop("output_size")
    if "Transpose" not in name:
        arguments.pop("output_padding")
    nd = int(name[-2])
    try:
        layer = getattr(nn, name)(**arguments)
    except (ValueError, TypeError):
        return
    before = {k: np.array(v) for k, v in layer.state_dict().items()}
    if input_shape is None:  # a plausible input
        input_shape = [2, 2] + [4] * nd
    floating = input_dtype in (np.float32, np.float64)
    x = npconv.tensor(np.ones(input_shape, input_dtype), requires_grad=floating)
    forward_kwargs = dict(output_size=output_size) if "Transpose" in name else {}
    try:
        y = layer(x, **forward_kwargs)
    except (ValueError, TypeError):
        for key, value in layer.state_dict().items():
            assert np.array_equal(value, before[key])
        return
    if y.requires_grad:
        y.sum().backward()


FUNCTIONAL_VALID = dict(stride=1, padding=0, dilation=1, groups=1, output_padding=0, bias=None)


@settings(max_examples=80)
@given(transposed=st.booleans(), nd=st.integers(1, 3), arguments=garbled_arguments(set(FUNCTIONAL_VALID)),
       weight_shape=st.one_of(st.just(None), st.lists(st.integers(0, 3), max_size=6)),
       input_shape=st.one_of(st.just(None), st.lists(st.integers(0, 4), max_size=6)))
def test_functional_garbage_raises_only_value_or_type_errors(transposed, nd, arguments, weight_shape,
                                                             input_shape):
    x = np.ones([1, 2] + [4] * nd if input_shape is None else input_shape)
    w = np.ones([2, 2] + [2] * nd if weight_shape is None else weight_shape)
    b = arguments["bias"]
    b = np.ones(b) if isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 4 else b
    kwargs = {k: arguments[k] for k in ("stride", "padding", "dilation", "groups")}
    try:
        if transposed:
            F.conv_transpose(x, w, b, output_padding=arguments["output_padding"], **kwargs)
        else:
            F.conv(x, w, b, **kwargs)
    except (ValueError, TypeError):
        pass


@settings(max_examples=60)
@given(pad=st.one_of(_GARBAGE, st.lists(st.integers(-5, 5), max_size=8)), mode=st.one_of(
    st.sampled_from(["constant", "reflect", "replicate", "circular", "symmetric"]), _GARBAGE),
    value=st.one_of(st.none(), st.floats(-1, 1), _GARBAGE),
    shape=st.lists(st.integers(0, 4), min_size=1, max_size=5))  # 0-d: see test_functional_conv's xfail
def test_pad_garbage_raises_only_value_or_type_errors(pad, mode, value, shape):
    x = npconv.tensor(np.ones(shape), requires_grad=True)
    try:
        y = F.pad(x, pad, mode=mode, value=value)
    except (ValueError, TypeError):
        return
    y.sum().backward()
    assert x.grad.shape == x.shape
