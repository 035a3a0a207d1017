"""Layers and utilities a torch user probe found missing, compared with torch 2.13: the hook-based
``nn.utils.spectral_norm`` / ``weight_norm`` (and ``remove_*``), ``nn.init.orthogonal_``, ``F.relu_``,
``F.leaky_relu_``, SELU, LogSigmoid, Softmax2d, AlphaDropout, CosineSimilarity, PairwiseDistance,
TripletMarginLoss, MaxUnpool1d/2d/3d and LazyLinear (values, gradients, repr, state_dict keys, errors)."""

import warnings

import numpy as np
import pytest

import npconv
import npconv.nn as nn
import npconv.nn.functional as F


def _t(torch, a, grad=True):
    return torch.tensor(a, requires_grad=grad)


def _n(a, grad=True):
    return npconv.tensor(a, requires_grad=grad)


def _state_from_torch(module):
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def _close(a, b, rtol=1e-10, atol=1e-12):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


# -- hook-based spectral_norm / weight_norm --------------------------------------------------------
def _pair(torch, kind, norm, **kw):
    make = {"conv": (lambda lib: lib.Conv2d(3, 4, 3)), "convt": (lambda lib: lib.ConvTranspose2d(3, 4, 3)),
            "linear": (lambda lib: lib.Linear(6, 5))}[kind]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        tm = getattr(torch.nn.utils, norm)(make(torch.nn).double(), **kw)
        nm = getattr(nn.utils, norm)(make(nn).to(npconv.float64), **kw)
    return tm, nm


@pytest.mark.parametrize("kind", ["conv", "convt", "linear"])
@pytest.mark.parametrize("training", [True, False])
def test_spectral_norm_matches_torch_over_several_calls(torch, kind, training):
    tm, nm = _pair(torch, kind, "spectral_norm", n_power_iterations=2)
    assert list(nm.state_dict()) == list(tm.state_dict()) == ["bias", "weight_orig", "weight_u", "weight_v"]
    assert [k for k, _ in nm.named_parameters()] == ["bias", "weight_orig"]
    nm.load_state_dict(_state_from_torch(tm))  # torch's checkpoint keys load as they are
    tm.train(training)
    nm.train(training)
    rng = np.random.default_rng(0)
    shape = (2, 6) if kind == "linear" else (2, 3, 6, 6)
    for _ in range(3):
        x = rng.standard_normal(shape)
        yt, yn = tm(torch.tensor(x)), nm(npconv.tensor(x))
        _close(yn.detach().numpy(), yt.detach().numpy())
        _close(nm.weight.detach().numpy(), tm.weight.detach().numpy())
        (yt ** 2).sum().backward()
        (yn ** 2).sum().backward()
        for name in ("weight_u", "weight_v"):  # the power iteration updates the buffers as torch's
            _close(getattr(nm, name).numpy(), getattr(tm, name).numpy())
    for name in ("weight_orig", "bias"):
        _close(getattr(nm, name).grad.numpy(), getattr(tm, name).grad.numpy(), rtol=1e-9)


def test_spectral_norm_float32_and_default_dim(torch):
    torch.manual_seed(0)
    tm = torch.nn.utils.spectral_norm(torch.nn.ConvTranspose1d(2, 5, 3))
    nm = nn.utils.spectral_norm(nn.ConvTranspose1d(2, 5, 3))
    assert tm.weight_u.shape == (5,) and tuple(nm.weight_u.shape) == (5,)  # dim=1 for transposed convs
    assert abs(float(np.linalg.norm(nm.weight_u.numpy())) - 1) < 1e-6
    nm.load_state_dict(_state_from_torch(tm))
    x = np.random.default_rng(1).standard_normal((2, 2, 7)).astype(np.float32)
    for _ in range(2):
        yt, yn = tm(torch.tensor(x)), nm(npconv.tensor(x))
        _close(yn.detach().numpy(), yt.detach().numpy(), rtol=1e-5, atol=1e-6)
        yt.sum().backward()
        yn.sum().backward()
    _close(nm.weight_orig.grad.numpy(), tm.weight_orig.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_spectral_norm_sigma_converges_to_the_largest_singular_value():
    m = nn.utils.spectral_norm(nn.Linear(8, 6).to(npconv.float64), n_power_iterations=5)
    rng = np.random.default_rng(13)
    left, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    right, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    m.weight_orig.numpy()[...] = left @ np.diag([3.0, 1.5, 1, 0.5, 0.2, 0.1]) @ right[:6]
    for _ in range(10):
        m(npconv.zeros(1, 8, dtype=npconv.float64))
    assert abs(np.linalg.svd(m.weight.detach().numpy(), compute_uv=False)[0] - 1) < 1e-10
    m.eval()  # no power iteration: the buffers stay
    u = m.weight_u.numpy().copy()
    m(npconv.zeros(1, 8, dtype=npconv.float64))
    np.testing.assert_array_equal(m.weight_u.numpy(), u)


def test_remove_spectral_norm_and_errors(torch):
    tm, nm = _pair(torch, "conv", "spectral_norm")
    nm.load_state_dict(_state_from_torch(tm))
    tm.eval()
    nm.eval()
    expected = tm(torch.ones(1, 3, 5, 5, dtype=torch.float64)).detach().numpy()
    torch.nn.utils.remove_spectral_norm(tm)
    assert nn.utils.remove_spectral_norm(nm) is nm
    assert list(nm.state_dict()) == list(tm.state_dict()) == ["bias", "weight"]
    assert isinstance(nm.weight, nn.Parameter) and len(nm._forward_pre_hooks) == 0
    _close(nm(npconv.ones(1, 3, 5, 5, dtype=npconv.float64)).detach().numpy(), expected)
    with pytest.raises(ValueError, match="spectral_norm of 'weight' not found"):
        nn.utils.remove_spectral_norm(nm)
    with pytest.raises(ValueError, match="n_power_iterations"):
        nn.utils.spectral_norm(nn.Linear(2, 2), n_power_iterations=0)
    with pytest.raises(ValueError, match="nope"):
        nn.utils.spectral_norm(nn.Linear(2, 2), name="nope")
    twice = nn.utils.spectral_norm(nn.Linear(2, 2))
    with pytest.raises(RuntimeError, match="two spectral_norm hooks"):
        nn.utils.spectral_norm(twice)
    with pytest.raises(ValueError, match="uninitialized"):
        nn.utils.spectral_norm(nn.LazyLinear(3))


@pytest.mark.parametrize("dim", [0, 1, None])
def test_weight_norm_matches_torch(torch, dim):
    tm, nm = _pair(torch, "conv", "weight_norm", dim=dim)
    assert list(nm.state_dict()) == list(tm.state_dict()) == ["bias", "weight_g", "weight_v"]
    assert tuple(nm.weight_g.shape) == tuple(tm.weight_g.shape)
    nm.load_state_dict(_state_from_torch(tm))
    rng = np.random.default_rng(2)
    for _ in range(2):
        x = rng.standard_normal((2, 3, 5, 5))
        yt, yn = tm(torch.tensor(x)), nm(npconv.tensor(x))
        _close(yn.detach().numpy(), yt.detach().numpy())
        (yt ** 2).sum().backward()
        (yn ** 2).sum().backward()
    for name in ("weight_g", "weight_v", "bias"):
        _close(getattr(nm, name).grad.numpy(), getattr(tm, name).grad.numpy(), rtol=1e-9)
    torch.nn.utils.remove_weight_norm(tm)
    nn.utils.remove_weight_norm(nm)
    assert list(nm.state_dict()) == list(tm.state_dict()) == ["bias", "weight"]
    _close(nm.weight.detach().numpy(), tm.weight.detach().numpy())


def test_weight_norm_warns_and_refuses_bad_calls():
    with pytest.warns(FutureWarning, match="parametrizations.weight_norm"):
        m = nn.utils.weight_norm(nn.Linear(3, 2))
    with pytest.raises(RuntimeError, match="two weight_norm hooks"), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        nn.utils.weight_norm(m)
    with pytest.raises(ValueError, match="weight_norm of 'bias' not found"):
        nn.utils.remove_weight_norm(m, "bias")
    with pytest.raises(ValueError, match="nope"), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        nn.utils.weight_norm(nn.Linear(2, 2), name="nope")


# -- init.orthogonal_ ------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(3, 7), (7, 3), (4, 2, 3, 3), (5, 5)])
def test_orthogonal_is_semi_orthogonal_times_gain(shape):
    w = npconv.empty(*shape, dtype=npconv.float64)
    assert nn.init.orthogonal_(w, gain=1.5) is w
    m = w.numpy().reshape(shape[0], -1)
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    _close(gram, 2.25 * np.eye(min(m.shape)), atol=1e-12)


def test_orthogonal_is_haar_distributed_and_reproducible():
    # Haar measure: each entry has mean 0 and variance 1/n; without torch's sign correction Q's
    # diagonal is biased (numpy's Householder QR gives a negative first column's top entry).
    n, draws = 4, 3000
    rng = np.random.default_rng(3)
    samples = np.stack([nn.init.orthogonal_(npconv.empty(n, n, dtype=npconv.float64), generator=rng).numpy()
                        for _ in range(draws)])
    assert np.abs(samples.mean(axis=0)).max() < 0.05
    assert np.abs(samples.var(axis=0) - 1 / n).max() < 0.03
    a = nn.init.orthogonal_(npconv.empty(3, 5), generator=np.random.default_rng(7)).numpy()
    b = nn.init.orthogonal_(npconv.empty(3, 5), generator=np.random.default_rng(7)).numpy()
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="2 or more dimensions"):
        nn.init.orthogonal_(npconv.empty(4))


# -- activations -----------------------------------------------------------------------------------
def _grad_parity(torch, fn_t, fn_n, arrays, rtol=1e-10, atol=1e-12, **kw):
    ts, ns = [_t(torch, a) for a in arrays], [_n(a) for a in arrays]
    yt, yn = fn_t(*ts, **kw), fn_n(*ns, **kw)
    _close(yn.detach().numpy(), yt.detach().numpy(), rtol, atol)
    g = np.random.default_rng(4).standard_normal(tuple(yt.shape)).astype(arrays[0].dtype)
    yt.backward(torch.tensor(g))
    yn.backward(npconv.tensor(g))
    for a, b in zip(ts, ns, strict=True):
        _close(b.grad.numpy(), a.grad.numpy(), rtol, atol)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-5)])
@pytest.mark.parametrize("name", ["selu", "logsigmoid"])
def test_selu_logsigmoid_match_torch(torch, name, dtype, tol):
    x = np.concatenate([np.random.default_rng(5).standard_normal(30) * 6, [0.0, -30, 30, -700, 700]])
    _grad_parity(torch, getattr(torch.nn.functional, name), getattr(F, name), [x.astype(dtype)], tol, tol)


def test_inplace_relu_leaky_relu_selu(torch):
    x = np.random.default_rng(6).standard_normal((3, 4))
    for fn, args in (("relu_", ()), ("leaky_relu_", (0.2,))):
        a, b = torch.tensor(x), npconv.tensor(x)
        assert getattr(F, fn)(b, *args) is b
        getattr(torch.nn.functional, fn)(a, *args)
        _close(b.numpy(), a.numpy())
    leaf = _n(x)
    with pytest.raises(RuntimeError):
        F.relu_(leaf)
    xt, xn = _t(torch, x), _n(x)
    yt, yn = torch.nn.functional.selu(xt * 1, inplace=True), F.selu(xn * 1, inplace=True)
    yt.sum().backward()
    yn.sum().backward()
    _close(yn.detach().numpy(), yt.detach().numpy())
    _close(xn.grad.numpy(), xt.grad.numpy())
    with pytest.raises(TypeError, match="negative_slope"):
        F.leaky_relu_(npconv.tensor(x), "0.1")


def test_module_reprs_match_torch(torch):
    pairs = [("SELU", ()), ("SELU", (True,)), ("LogSigmoid", ()), ("Softmax2d", ()), ("AlphaDropout", (0.2,)),
             ("AlphaDropout", (0.3, True)), ("CosineSimilarity", (0, 1e-6)), ("PairwiseDistance", (1.0,)),
             ("TripletMarginLoss", (0.5, 1.0)), ("MaxUnpool1d", (2,)), ("MaxUnpool2d", (3, 2, 1)),
             ("MaxUnpool3d", ((2, 2, 1),)), ("LazyLinear", (4,)), ("LazyLinear", (4, False))]
    for name, args in pairs:
        assert repr(getattr(nn, name)(*args)) == repr(getattr(torch.nn, name)(*args)), name
    assert nn.PairwiseDistance(3.0).norm == torch.nn.PairwiseDistance(3.0).norm == 3.0


def test_softmax2d(torch):
    x = np.random.default_rng(7).standard_normal((2, 3, 4, 5))
    for a in (x, x[0]):
        _grad_parity(torch, torch.nn.Softmax2d(), nn.Softmax2d(), [a])
    with pytest.raises(ValueError, match="3D or 4D"):
        nn.Softmax2d()(npconv.ones(3, 4))


def test_alpha_dropout_keeps_mean_and_variance(torch):
    x = np.random.default_rng(8).standard_normal(400_000).astype(np.float32)
    for p in (0.1, 0.5):
        y = F.alpha_dropout(npconv.tensor(x), p, training=True).numpy()
        assert abs(y.mean()) < 0.01 and abs(y.std() - 1) < 0.01
        yt = torch.nn.functional.alpha_dropout(torch.tensor(x), p, training=True).numpy()
        # dropped elements take one value (SELU's saturation, rescaled), as torch's
        dropped = -1.7580993408473766 / np.sqrt((1.7580993408473766 ** 2 * p + 1) * (1 - p)) * (1 - p)
        for out in (y, yt):
            frac = np.isclose(out, dropped, atol=1e-6).mean()
            assert abs(frac - p) < 0.01
    layer = nn.AlphaDropout(0.5)
    ones = npconv.ones(1000)
    assert not np.array_equal(layer(ones).numpy(), ones.numpy())
    layer.eval()
    assert layer(ones) is ones
    assert F.alpha_dropout(ones, 0.5) is ones  # training=False by default, as torch's
    np.testing.assert_array_equal(F.alpha_dropout(ones, 1.0, True).numpy(), np.zeros(1000))
    xn = _n(x[:100].astype(np.float64))
    y = F.alpha_dropout(xn, 0.3, True)
    y.sum().backward()
    scale = 1 / np.sqrt((1.7580993408473766 ** 2 * 0.3 + 1) * 0.7)
    kept = ~np.isclose(xn.grad.numpy(), 0)
    _close(xn.grad.numpy()[kept], scale)
    _close(y.detach().numpy()[kept], x[:100][kept] * scale + 1.7580993408473766 * scale * 0.3)
    with pytest.raises(ValueError, match="between 0 and 1"):
        F.alpha_dropout(ones, 1.5, True)
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.AlphaDropout(-0.1)


# -- distances and the triplet loss --------------------------------------------------------------------
def test_cosine_similarity_and_pairwise_distance_modules(torch):
    rng = np.random.default_rng(9)
    a, b = rng.standard_normal((4, 6)), rng.standard_normal((4, 6))
    _grad_parity(torch, torch.nn.CosineSimilarity(0), nn.CosineSimilarity(0), [a, b])
    for p, keepdim in ((2.0, False), (1.0, True), (3.0, False)):
        _grad_parity(torch, torch.nn.PairwiseDistance(p, 1e-3, keepdim),
                     nn.PairwiseDistance(p, 1e-3, keepdim), [a, b])
    _grad_parity(torch, torch.nn.functional.pairwise_distance, F.pairwise_distance, [a, b[0]])
    _grad_parity(torch, torch.nn.functional.pairwise_distance, F.pairwise_distance,
                 [a.astype(np.float32), b.astype(np.float32)], 1e-5, 1e-6)
    with pytest.raises(ValueError, match="broadcast"):
        F.pairwise_distance(npconv.ones(3, 4), npconv.ones(2, 4))


@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("p", [1.0, 2.0])
def test_triplet_margin_loss_matches_torch(torch, swap, reduction, p):
    rng = np.random.default_rng(10)
    arrays = [rng.standard_normal((6, 5)) for _ in range(3)]
    _grad_parity(torch, torch.nn.TripletMarginLoss(0.7, p, swap=swap, reduction=reduction),
                 nn.TripletMarginLoss(0.7, p, swap=swap, reduction=reduction), arrays)


def test_triplet_margin_loss_errors(torch):
    a = npconv.ones(2, 3)
    with pytest.raises(ValueError, match="margin must be greater than 0"):
        F.triplet_margin_loss(a, a, a, margin=0.0)
    with pytest.raises(ValueError, match="greater than 0"):
        nn.TripletMarginLoss(margin=-1.0)
    with pytest.raises(ValueError, match="same number of dimensions"):
        F.triplet_margin_loss(a, a, npconv.ones(3))
    with pytest.raises(ValueError, match="reduction"):
        F.triplet_margin_loss(a, a, a, reduction="avg")


# -- max unpooling -------------------------------------------------------------------------------------
@pytest.mark.parametrize("nd,shape,kw", [
    (1, (2, 3, 12), {"kernel_size": 2}),
    (1, (3, 12), {"kernel_size": 3, "stride": 3}),
    (2, (2, 3, 7, 9), {"kernel_size": 3, "stride": 2, "padding": 1}),
    (2, (3, 6, 8), {"kernel_size": 2}),
    (3, (1, 2, 4, 6, 8), {"kernel_size": 2}),
])
def test_max_unpool_matches_torch(torch, nd, shape, kw):
    x = np.random.default_rng(11).standard_normal(shape)
    pooled_n, idx_n = getattr(F, f"max_pool{nd}d")(npconv.tensor(x), return_indices=True, **kw)
    pool_t = getattr(torch.nn.functional, f"max_pool{nd}d")
    pooled_t, idx_t = pool_t(torch.tensor(x), return_indices=True, **kw)
    np.testing.assert_array_equal(idx_n.numpy(), idx_t.numpy())  # the indices npconv produces are torch's
    kwargs = dict(kw, output_size=shape[-nd:])
    _grad_parity(torch, lambda y: getattr(torch.nn.functional, f"max_unpool{nd}d")(y, idx_t, **kwargs),
                 lambda y: getattr(F, f"max_unpool{nd}d")(y, idx_n, **kwargs), [pooled_t.numpy()])
    layer_t = getattr(torch.nn, f"MaxUnpool{nd}d")(kw["kernel_size"], kw.get("stride"), kw.get("padding", 0))
    layer_n = getattr(nn, f"MaxUnpool{nd}d")(kw["kernel_size"], kw.get("stride"), kw.get("padding", 0))
    full = list(x.shape) if x.ndim == nd + 2 else list(x.shape[-nd:])  # N and C may be named if batched
    yt = layer_t(pooled_t, idx_t, output_size=full)
    yn = layer_n(npconv.tensor(pooled_t.numpy()), idx_n, output_size=full)
    _close(yn.numpy(), yt.numpy())
    if "padding" not in kw:  # the default output size
        _close(layer_n(npconv.tensor(pooled_t.numpy()), idx_n).numpy(), layer_t(pooled_t, idx_t).numpy())


def test_max_unpool_errors():
    y, idx = F.max_pool2d(npconv.ones(1, 1, 4, 4), 2, return_indices=True)
    with pytest.raises(ValueError, match="invalid output_size"):
        F.max_unpool2d(y, idx, 2, output_size=(9, 9))
    with pytest.raises(ValueError, match="2 or 4 elements"):
        F.max_unpool2d(y, idx, 2, output_size=(4, 4, 4))
    with pytest.raises(ValueError, match="indices"):
        F.max_unpool2d(y, idx.reshape(1, 1, 4, 1), 2)
    with pytest.raises(TypeError, match="int64"):
        F.max_unpool2d(y, idx.to(npconv.int32), 2)
    with pytest.raises(ValueError, match="invalid max index"):
        F.max_unpool2d(y, idx + 100, 2)
    with pytest.raises(ValueError, match="3D or 4D"):
        F.max_unpool2d(npconv.ones(4), npconv.zeros(4, dtype=npconv.int64), 2)


# -- LazyLinear --------------------------------------------------------------------------------------
def test_lazy_linear_infers_in_features_and_becomes_linear(torch):
    m = nn.LazyLinear(3, dtype=npconv.float64)
    assert m.has_uninitialized_params() and m.in_features == 0
    x = np.random.default_rng(12).standard_normal((2, 5))
    y = m(npconv.tensor(x))
    assert type(m) is nn.Linear and m.in_features == 5 and tuple(m.weight.shape) == (3, 5)
    assert repr(m) == repr(torch.nn.Linear(5, 3))
    _close(y.detach().numpy(), x @ m.weight.detach().numpy().T + m.bias.detach().numpy())
    bound = 1 / np.sqrt(5)
    assert np.abs(m.weight.detach().numpy()).max() <= bound and np.abs(m.bias.detach().numpy()).max() <= bound
    assert nn.LazyLinear(2, bias=False)(npconv.ones(4, 7)).shape == (4, 2)


def test_lazy_linear_loads_a_torch_checkpoint(torch):
    source = torch.nn.Linear(4, 3)
    m = nn.LazyLinear(3)
    m.load_state_dict(_state_from_torch(source))
    assert type(m) is nn.Linear and m.in_features == 4
    x = np.ones((2, 4), np.float32)
    _close(m(npconv.tensor(x)).detach().numpy(), source(torch.tensor(x)).detach().numpy(), 1e-6, 1e-6)
    with pytest.raises(ValueError):
        nn.LazyLinear(3).load_state_dict({"weight": np.ones((2, 4), np.float32),
                                          "bias": np.ones(3, np.float32)})
