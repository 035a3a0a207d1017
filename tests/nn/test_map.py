"""Connection-table convolutions (``Conv{1,2,3}dMap``, ``ConvTranspose{1,2,3}dMap`` and functional forms).

References (torch): ``tables.full`` vs a dense conv with the reshaped weight, ``one_to_one`` vs a
depthwise conv, random tables vs a per-connection loop of conv / conv_transpose; transposed
padding modes vs torch autograd's input gradient of the padded per-connection conv. Both
evaluation methods ('dense' and 'sparse') are checked against the references.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import npconv
import npconv.nn as nn
import npconv.nn.functional as F
from torch_oracle import assert_close, to_torch, torch_module, torch_pad

CONV_MAP = {1: F.conv1d_map, 2: F.conv2d_map, 3: F.conv3d_map}
TRANSPOSE_MAP = {1: F.conv_transpose1d_map, 2: F.conv_transpose2d_map, 3: F.conv_transpose3d_map}
MAP_MODULES = {1: nn.Conv1dMap, 2: nn.Conv2dMap, 3: nn.Conv3dMap}
TRANSPOSE_MODULES = {1: nn.ConvTranspose1dMap, 2: nn.ConvTranspose2dMap, 3: nn.ConvTranspose3dMap}
METHODS = ["dense", "sparse"]
MODES = ["zeros", "reflect", "replicate", "circular", "symmetric"]


# -- torch references ------------------------------------------------------------------------
def torch_map_loop(xt, wt, bt, table, out_channels, stride, pads, dilation, mode):
    """``y[:, o] = b[o] + sum_{k: table[k,1]=o} conv(pad(x)[:, table[k,0]], w[k])``, one conv per row."""
    torch = torch_module()
    nd = xt.ndim - 2
    xp = torch_pad(xt, pads, mode)
    planes = [None] * out_channels
    for k, (i, o) in enumerate(table):
        conv = getattr(torch.nn.functional, f"conv{nd}d")
        term = conv(xp[:, i : i + 1], wt[k][None, None], stride=stride, dilation=dilation)
        planes[o] = term if planes[o] is None else planes[o] + term
    shape = next(p for p in planes if p is not None).shape
    planes = [torch.zeros(shape, dtype=xt.dtype) if p is None else p for p in planes]
    y = torch.cat(planes, dim=1)
    return y if bt is None else y + bt.reshape((-1,) + (1,) * nd)


def torch_transpose_loop(xt, wt, bt, table, out_channels, stride, padding, output_padding, dilation):
    """``y[:, o] = b[o] + sum_{k: table[k,1]=o} conv_transpose(x[:, table[k,0]], w[k])``."""
    torch = torch_module()
    nd = xt.ndim - 2
    planes = [None] * out_channels
    for k, (i, o) in enumerate(table):
        term = getattr(torch.nn.functional, f"conv_transpose{nd}d")(
            xt[:, i : i + 1],
            wt[k][None, None],
            stride=stride,
            padding=padding,
            output_padding=output_padding,
            dilation=dilation,
        )
        planes[o] = term if planes[o] is None else planes[o] + term
    shape = next(p for p in planes if p is not None).shape
    planes = [torch.zeros(shape, dtype=xt.dtype) if p is None else p for p in planes]
    y = torch.cat(planes, dim=1)
    return y if bt is None else y + bt.reshape((-1,) + (1,) * nd)


def _random_table(rng, n_in, n_out, density):
    """Distinct (input, output) rows, about ``density`` of all pairs, at least one row, shuffled."""
    pairs = [(i, o) for o in range(n_out) for i in range(n_in) if rng.random() < density]
    if not pairs:
        pairs = [(int(rng.integers(n_in)), int(rng.integers(n_out)))]
    table = np.array(pairs, dtype=np.int64)
    return table[rng.permutation(len(table))]


def _compare(ours: dict, theirs: dict, y, y_ref, dtype, seed, what):
    assert_close(y, y_ref, dtype, f"output {what}")
    gy = np.random.default_rng(seed).standard_normal(tuple(y_ref.shape)).astype(dtype)
    y.backward(gy)
    y_ref.backward(to_torch(gy))
    for name in ours:
        if ours[name] is not None:
            assert_close(ours[name].grad, theirs[name].grad, dtype, f"gradient in {name} {what}")


def _tensors(arrays: dict, dtype):
    arrays = {k: None if a is None else a.astype(dtype) for k, a in arrays.items()}
    ours = {k: None if a is None else nn.Parameter(a) for k, a in arrays.items()}
    theirs = {k: None if a is None else to_torch(a, requires_grad=True) for k, a in arrays.items()}
    return ours, theirs


# -- forward and gradients against torch -----------------------------------------------------
@st.composite
def map_cases(draw, nd, transposed):
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    n_in, n_out = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    table = _random_table(rng, n_in, n_out, draw(st.sampled_from([0.2, 0.5, 1.0])))
    out_channels = n_out + draw(st.integers(0, 1))  # maybe one plane no row feeds
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    padding = tuple(draw(st.integers(0, 1)) for _ in range(nd))
    extent = [d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True)]
    cap = 6 if nd < 3 else 4
    if transposed:
        out_pad = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation, strict=True))
        in_size = tuple(draw(st.integers(1, cap - 1)) for _ in range(nd))
        # keep the output positive: (in - 1) * s - 2p + e + op >= 1
        in_size = tuple(max(i, 1 + (2 * p) // s) for i, p, s in zip(in_size, padding, stride, strict=True))
        extra = dict(output_padding=out_pad)
    else:
        low = [max(e - 2 * p, p + 1, 1) for e, p in zip(extent, padding, strict=True)]
        in_size = tuple(draw(st.integers(lw, max(lw, cap))) for lw in low)
        extra = dict(padding_mode=draw(st.sampled_from(MODES)))
    n = draw(st.integers(1, 2))
    c = n_in + draw(st.integers(0, 1))  # maybe an input plane no row reads
    arrays = dict(
        input=rng.standard_normal((n, c) + in_size),
        weight=rng.standard_normal((len(table),) + kernel),
        bias=rng.standard_normal(out_channels) if draw(st.booleans()) else None,
    )
    kwargs = (
        dict(
            stride=stride,
            padding=padding,
            dilation=dilation,
            out_channels=out_channels,
            method=draw(st.sampled_from(METHODS + ["auto"])),
        )
        | extra
    )
    return arrays, table, kwargs


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("nd", [1, 2, 3])
@given(data=st.data())
def test_map_matches_per_connection_loop(nd, dtype, data):
    arrays, table, kwargs = data.draw(map_cases(nd, transposed=False))
    ours, theirs = _tensors(arrays, dtype)
    y = CONV_MAP[nd](ours["input"], ours["weight"], table, ours["bias"], **kwargs)
    y_ref = torch_map_loop(
        theirs["input"],
        theirs["weight"],
        theirs["bias"],
        table,
        kwargs["out_channels"],
        kwargs["stride"],
        [(p, p) for p in kwargs["padding"]],
        kwargs["dilation"],
        kwargs["padding_mode"],
    )
    _compare(ours, theirs, y, y_ref, dtype, 0, f"{kwargs} {table.tolist()}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("nd", [1, 2, 3])
@given(data=st.data())
def test_transpose_map_matches_per_connection_loop(nd, dtype, data):
    arrays, table, kwargs = data.draw(map_cases(nd, transposed=True))
    ours, theirs = _tensors(arrays, dtype)
    y = TRANSPOSE_MAP[nd](ours["input"], ours["weight"], table, ours["bias"], **kwargs)
    y_ref = torch_transpose_loop(
        theirs["input"],
        theirs["weight"],
        theirs["bias"],
        table,
        kwargs["out_channels"],
        kwargs["stride"],
        kwargs["padding"],
        kwargs["output_padding"],
        kwargs["dilation"],
    )
    _compare(ours, theirs, y, y_ref, dtype, 1, f"{kwargs} {table.tolist()}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_full_table_is_the_dense_conv(nd, method, dtype, torch):
    rng = np.random.default_rng(nd)
    c, o = 3, 4
    kernel = (3, 2, 2)[:nd]
    arrays = dict(
        input=rng.standard_normal((2, c) + (7, 6, 5)[:nd]),
        weight=rng.standard_normal((c * o,) + kernel),
        bias=rng.standard_normal(o),
    )
    ours, theirs = _tensors(arrays, dtype)
    kwargs = dict(stride=2, padding=1, dilation=(2, 1, 1)[:nd])
    y = CONV_MAP[nd](
        ours["input"], ours["weight"], nn.tables.full(c, o), ours["bias"], method=method, **kwargs
    )
    y_ref = getattr(torch.nn.functional, f"conv{nd}d")(
        theirs["input"], theirs["weight"].reshape((o, c) + kernel), theirs["bias"], **kwargs
    )
    _compare(ours, theirs, y, y_ref, dtype, 2, f"full {method}")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_full_table_transposed_is_the_dense_conv_transpose(nd, method, torch):
    rng = np.random.default_rng(nd)
    c, o = 3, 2
    kernel = (3, 2, 2)[:nd]
    arrays = dict(
        input=rng.standard_normal((2, c) + (4, 3, 3)[:nd]),
        weight=rng.standard_normal((c * o,) + kernel),
        bias=rng.standard_normal(o),
    )
    ours, theirs = _tensors(arrays, np.float64)
    # full(c, o) is output-major: row o * c + i = (i, o); torch's transposed weight is (C_in, C_out, *k)
    dense = theirs["weight"].reshape((o, c) + kernel).transpose(0, 1)
    kwargs = dict(stride=2, padding=1, output_padding=1)
    y = TRANSPOSE_MAP[nd](
        ours["input"], ours["weight"], nn.tables.full(c, o), ours["bias"], method=method, **kwargs
    )
    conv_transpose = getattr(torch.nn.functional, f"conv_transpose{nd}d")
    y_ref = conv_transpose(theirs["input"], dense, theirs["bias"], **kwargs)
    _compare(ours, theirs, y, y_ref, np.float64, 3, f"full transposed {method}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", ["zeros", "circular"])
def test_one_to_one_is_depthwise(method, mode, dtype, torch):
    TF = torch.nn.functional
    rng = np.random.default_rng(5)
    c = 5
    arrays = dict(
        input=rng.standard_normal((2, c, 7, 6)),
        weight=rng.standard_normal((c, 3, 3)),
        bias=rng.standard_normal(c),
    )
    ours, theirs = _tensors(arrays, dtype)
    layer = nn.Conv2dMap(nn.tables.one_to_one(c), 3, padding=1, padding_mode=mode, method=method, dtype=dtype)
    layer.weight, layer.bias = ours["weight"], ours["bias"]
    y = layer(ours["input"])
    padded = TF.pad(theirs["input"], (1, 1, 1, 1), mode="constant" if mode == "zeros" else mode)
    y_ref = TF.conv2d(padded, theirs["weight"][:, None], theirs["bias"], groups=c)
    _compare(ours, theirs, y, y_ref, dtype, 4, f"one_to_one {method} {mode}")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular", "symmetric"])
@pytest.mark.parametrize("nd", [1, 2])
def test_transposed_padding_mode_is_the_adjoint_of_the_padded_map_conv(nd, mode, method, torch):
    """ConvTranspose*Map with mode m == torch autograd's input gradient of the padded Map conv
    with the table's columns swapped (and the bias added); gradients through it too."""
    rng = np.random.default_rng(11)
    table = _random_table(rng, 3, 4, 0.5)
    out_channels, stride, padding, dilation, out_pad = 4, 2, 1, 1, 1
    in_size = (3, 4)[:nd]
    out_size = tuple((n - 1) * stride - 2 * padding + 3 + out_pad for n in in_size)
    arrays = dict(
        input=rng.standard_normal((2, 3) + in_size),
        weight=rng.standard_normal((len(table),) + (3,) * nd),
        bias=rng.standard_normal(out_channels),
    )
    ours, theirs = _tensors(arrays, np.float64)
    layer = TRANSPOSE_MODULES[nd](
        table,
        3,
        stride,
        padding,
        out_pad,
        padding_mode=mode,
        method=method,
        in_channels=3,
        out_channels=out_channels,
        dtype=np.float64,
    )
    layer.weight, layer.bias = ours["weight"], ours["bias"]
    y = layer(ours["input"])
    z = torch.zeros((2, out_channels) + out_size, dtype=torch.float64, requires_grad=True)
    swapped = table[:, ::-1]
    conv_of_z = torch_map_loop(
        z, theirs["weight"], None, swapped, 3, stride, [(padding, padding)] * nd, dilation, mode
    )
    (adjoint,) = torch.autograd.grad(conv_of_z, z, grad_outputs=theirs["input"], create_graph=True)
    y_ref = adjoint + theirs["bias"].reshape((-1,) + (1,) * nd)
    _compare(ours, theirs, y, y_ref, np.float64, 6, f"adjoint {mode} {method}")


def test_output_size_argument_and_unbatched_input():
    rng = np.random.default_rng(2)
    table = nn.tables.random(3, 2, 2, seed=0)
    layer = nn.ConvTranspose2dMap(table, 3, stride=2, padding=1, dtype=np.float64)
    x = rng.standard_normal((3, 4, 5))  # unbatched
    y = layer(x, output_size=(8, 10))
    assert y.shape == (2, 8, 10)
    ref = torch_transpose_loop(
        to_torch(x[None]), to_torch(layer.weight.numpy()), to_torch(layer.bias.numpy()), table, 2, 2, 1,
        (1, 1), 1,
    )[0]
    assert_close(y, ref, np.float64)
    assert layer(x, output_size=[2, 7, 9]).shape == (2, 7, 9)
    with pytest.raises(ValueError, match="output size"):
        layer(x, output_size=(12, 10))


def test_unfed_output_plane_gets_its_bias_and_weights_get_the_only_gradients():
    table = np.array([[0, 0], [1, 2]])
    layer = nn.Conv2dMap(table, 2, out_channels=4, dtype=np.float64)
    with npconv.no_grad():
        layer.bias.numpy()[...] = [1.0, 2.0, 3.0, 4.0]
    x = npconv.tensor(np.random.default_rng(0).standard_normal((2, 2, 4, 4)), requires_grad=True)
    y = layer(x)
    np.testing.assert_array_equal(y.numpy()[:, 1], 2.0)
    np.testing.assert_array_equal(y.numpy()[:, 3], 4.0)
    y.sum().backward()
    assert layer.weight.grad.shape == (2, 2, 2)
    assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"]
    assert set(layer.state_dict()) == {"weight", "bias", "connection_table"}


def test_map_finite_differences():
    """Central differences: sparse and dense map convs and a circular transposed map."""
    rng = np.random.default_rng(9)
    table = _random_table(rng, 3, 3, 0.6)
    cases = [
        (
            F.conv2d_map,
            dict(stride=(2, 1), padding=1, padding_mode="replicate", method="sparse"),
            (2, 3, 6, 5),
        ),
        (F.conv2d_map, dict(stride=1, padding=(0, 1), dilation=2, method="dense"), (1, 3, 6, 5)),
        (
            F.conv_transpose2d_map,
            dict(stride=2, padding=1, output_padding=1, padding_mode="circular", method="sparse"),
            (2, 3, 3, 4),
        ),
    ]
    for fn, kwargs, shape in cases:
        x, w, b = rng.standard_normal(shape), rng.standard_normal((len(table), 3, 2)), rng.standard_normal(3)
        tensors = [npconv.tensor(a, requires_grad=True) for a in (x, w, b)]
        y = fn(tensors[0], tensors[1], table, tensors[2], **kwargs)
        gy = rng.standard_normal(y.shape)
        y.backward(gy)

        def loss(xa, wa, ba, fn=fn, kwargs=kwargs, gy=gy):
            with npconv.no_grad():
                return float(np.sum(fn(xa, wa, table, ba, **kwargs).numpy() * gy))

        eps = 1e-6
        for position, (array, tensor) in enumerate(zip((x, w, b), tensors, strict=True)):
            for flat in rng.choice(array.size, size=min(array.size, 8), replace=False):
                plus, minus = [a.copy() for a in (x, w, b)], [a.copy() for a in (x, w, b)]
                plus[position].flat[flat] += eps
                minus[position].flat[flat] -= eps
                numeric = (loss(*plus) - loss(*minus)) / (2 * eps)
                assert math.isclose(numeric, tensor.grad.numpy().flat[flat], rel_tol=1e-6, abs_tol=1e-8), (
                    fn,
                    kwargs,
                )


# -- modules: init, repr ---------------------------------------------------------------------
def test_init_bounds_per_output_plane():
    npconv.manual_seed(0)
    table = np.array([[i, 0] for i in range(8)] + [[0, 1]])  # plane 0 has fan-in 8, plane 1 fan-in 1
    layer = nn.Conv2dMap(table, (3, 2), out_channels=3)
    bounds = [1 / math.sqrt(6 * 8), 1 / math.sqrt(6 * 1)]
    wide = np.abs(layer.weight.numpy()[:8])
    assert wide.max() <= bounds[0] and wide.max() > 0.8 * bounds[0]
    assert np.abs(layer.weight.numpy()[8]).max() <= bounds[1]
    assert np.abs(layer.weight.numpy()[8]).max() > bounds[0]  # drawn from the wider interval
    assert abs(layer.bias.numpy()[0]) <= bounds[0] and abs(layer.bias.numpy()[1]) <= bounds[1]
    assert layer.bias.numpy()[2] == 0  # a plane no row feeds: fan-in 0
    npconv.manual_seed(0)
    again = nn.Conv2dMap(table, (3, 2), out_channels=3)
    np.testing.assert_array_equal(again.weight.numpy(), layer.weight.numpy())


def test_reprs():
    layer = nn.Conv2dMap(nn.tables.random(4, 6, 4, seed=0), 3)
    assert (
        repr(layer)
        == "Conv2dMap(connections=24, in_channels=4, out_channels=6, kernel_size=(3, 3), stride=(1, 1))"
    )
    layer = nn.ConvTranspose1dMap(
        nn.tables.one_to_one(3), 4, stride=2, padding=1, output_padding=1, bias=False, padding_mode="circular"
    )
    assert repr(layer) == (
        "ConvTranspose1dMap(connections=3, in_channels=3, out_channels=3, kernel_size=(4,), "
        "stride=(2,), padding=(1,), output_padding=(1,), bias=False, padding_mode=circular)"
    )
    layer = nn.Conv3dMap(nn.tables.full(2, 2), 3, dilation=2, in_channels=5, method="sparse")
    assert repr(layer) == (
        "Conv3dMap(connections=4, in_channels=5, out_channels=2, kernel_size=(3, 3, 3), "
        "stride=(1, 1, 1), dilation=(2, 2, 2), method=sparse)"
    )


# -- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "table, kwargs, error, match",
    [
        ([[0, 0], [1, 1], [0, 0]], {}, ValueError, "duplicate"),
        ([[0, 0], [-1, 1]], {}, ValueError, "non-negative"),
        ([[0, 0], [3, 1]], dict(in_channels=2), ValueError, "in_channels=2 is too small.*>= 4"),
        ([[0, 0], [1, 5]], dict(out_channels=3), ValueError, "out_channels=3 is too small.*>= 6"),
        (np.zeros((3, 3), dtype=int), {}, ValueError, r"shape \(K, 2\)"),
        (np.zeros((0, 2), dtype=int), {}, ValueError, r"K >= 1"),
        ([0, 1], {}, ValueError, r"shape \(K, 2\)"),
        (np.array([[0.0, 1.0]]), {}, TypeError, "integer"),
        ([[True, False]], {}, TypeError, "integer"),
        ([[0, 1], [2]], {}, ValueError, r"shape \(K, 2\)"),
        ([[0, 1]], dict(in_channels="2"), TypeError, "in_channels"),
        ([[0, 1]], dict(padding_mode="wrap"), ValueError, "padding_mode"),
        ([[0, 1]], dict(method="fast"), ValueError, "method"),
    ],
)
def test_bad_tables_and_arguments(table, kwargs, error, match):
    with pytest.raises(error, match=match):
        nn.Conv2dMap(table, 3, **kwargs)


def test_bad_forward_inputs():
    layer = nn.Conv2dMap(nn.tables.full(2, 3), 3)
    with pytest.raises(ValueError, match="in_channels=2"):
        layer(np.zeros((1, 3, 5, 5), np.float32))
    with pytest.raises(TypeError, match="float64"):
        layer(np.zeros((1, 2, 5, 5), np.float64))
    with pytest.raises(ValueError, match="4D"):
        layer(np.zeros((5, 5), np.float32))
    with pytest.raises(ValueError, match="Kernel size can't be greater"):
        layer(np.zeros((1, 2, 2, 2), np.float32))
    x = np.zeros((1, 2, 5, 5))
    table = nn.tables.full(2, 3)
    with pytest.raises(ValueError, match="one kernel per connection"):
        F.conv2d_map(x, np.zeros((5, 3, 3)), table)
    with pytest.raises(ValueError, match="input plane 2"):
        F.conv2d_map(x, np.zeros((1, 3, 3)), [[2, 0]])
    with pytest.raises(ValueError, match="out_channels=2 is too small"):
        F.conv2d_map(x, np.zeros((6, 3, 3)), table, np.zeros(2))
    with pytest.raises(ValueError, match=r"bias must have shape \(3,\)"):
        F.conv2d_map(x, np.zeros((6, 3, 3)), table, np.zeros(4), out_channels=3)
    with pytest.raises(ValueError, match="3-dimensional"):
        F.conv2d_map(x, np.zeros((6, 3)), table)
    with pytest.raises(ValueError, match="output padding|output_padding"):
        F.conv_transpose2d_map(x, np.zeros((6, 3, 3)), table, output_padding=1)


@pytest.mark.parametrize("method", ["auto", *METHODS])
@pytest.mark.parametrize("transposed", [False, True])
def test_nan_and_inf_reach_only_the_connected_outputs(method, transposed, torch):
    """Every method keeps the table's locality: a NaN or an inf in an input plane reaches only the
    outputs connected to it and only the positions whose windows read it, as torch's per-connection
    loop (the dense method's zero weights would spread it to every output: it runs sparse then)."""
    rng = np.random.default_rng(5)
    table = np.array([[0, 0], [1, 1], [2, 1], [0, 2]])
    x = rng.standard_normal((2, 3, 9, 10)).astype(np.float32)
    x[0, 1, 4, 4] = np.nan
    x[1, 2, 0, 9] = np.inf
    w = rng.standard_normal((4, 3, 3)).astype(np.float32)
    xt, wt = to_torch(x), to_torch(w)
    if transposed:
        y = F.conv_transpose2d_map(npconv.tensor(x), npconv.tensor(w), table, out_channels=3, method=method)
        y_ref = torch_transpose_loop(xt, wt, None, table, 3, 1, 0, 0, 1).numpy()
    else:
        y = F.conv2d_map(npconv.tensor(x), npconv.tensor(w), table, padding=1, out_channels=3, method=method)
        y_ref = torch_map_loop(xt, wt, None, table, 3, 1, [(1, 1), (1, 1)], 1, "zeros").numpy()
    y = y.numpy()
    for test in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(test(y), test(y_ref))
    assert np.isfinite(y_ref[:, 0]).all() and np.isnan(y_ref[0, 1]).any()
    finite = np.isfinite(y_ref)
    np.testing.assert_allclose(y[finite], y_ref[finite], rtol=1e-5, atol=1e-5)


def test_auto_method_follows_the_engines_crossover(monkeypatch):
    """``'auto'`` runs the dense method from :func:`npconv.ops.local.dense_fraction` on: the compiled
    depthwise kernel's crossover (``0.41 * taps / (taps + 32)``: 9% for 3x3) where the planner runs the
    sparse method's depthwise convolution on it in 1-d/2-d, 5% otherwise (3-d here: its compiled forward's
    crossover measured lower)."""
    from npconv import backends
    from npconv.geometry import ConvGeometry
    from npconv.ops import local

    dense_calls: list[int] = []
    scatter = local._dense_weight
    monkeypatch.setattr(local, "_dense_weight", lambda *a: dense_calls.append(1) or scatter(*a))
    rng = np.random.default_rng(2)
    table = nn.tables.random(16, 16, 1, seed=0)  # 16 of 256 pairs: 6.25%
    for nd, size in ((2, (12, 12)), (3, (5, 5, 5))):
        geom = ConvGeometry.create(3, 1, 1, 1, 1, ndim=nd)
        x = rng.standard_normal((2, 16) + size).astype(np.float32)
        compiled = nd == 2 and backends.core.available
        expected = local.DENSE_MAC_COST * 3**nd / (3**nd + local.SPARSE_PLANE_COST) if compiled else 0.05
        assert local.dense_fraction(x.shape, (3,) * nd, 16, geom, np.float32) == pytest.approx(expected)
        dense_calls.clear()
        w = npconv.tensor(rng.standard_normal((16,) + (3,) * nd).astype(np.float32))
        CONV_MAP[nd](npconv.tensor(x), w, table, padding=1)
        assert bool(dense_calls) == (not compiled)  # 6.25%: sparse on the compiled kernel, dense on NumPy
        monkeypatch.setattr(local, "DENSE_MAC_COST", 0.0)
        monkeypatch.setattr(local, "DENSE_FRACTION", 0.0)
        local._dense_fraction.cache_clear()
        dense_calls.clear()
        w = npconv.tensor(rng.standard_normal((16,) + (3,) * nd).astype(np.float32))
        CONV_MAP[nd](npconv.tensor(x), w, table, padding=1)
        assert dense_calls
        monkeypatch.undo()
        monkeypatch.setattr(local, "_dense_weight", lambda *a: dense_calls.append(1) or scatter(*a))
        local._dense_fraction.cache_clear()
