"""Surface a torch program touches, found by the ports suite: ``Tensor.data``, inference tensors, and
dtype/Size/device objects in checkpoints (parity with torch 2.13)."""

import numpy as np
import pytest

import npconv
import npconv.nn as nn


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


# -- Tensor.data -----------------------------------------------------------------------------------
def test_data_is_a_detached_tensor_sharing_storage_with_its_own_version(torch):
    for lib in (npconv, torch):
        p = (lib.nn.Parameter if lib is torch else nn.Parameter)(lib.ones(2, 3))
        version = p._version
        d = p.data
        assert type(d) is lib.Tensor and not d.requires_grad and d.is_leaf and d.grad_fn is None
        d.mul_(3).add_(1)  # no "leaf Variable that requires grad" error: .data is outside the graph
        np.testing.assert_array_equal(p.detach().numpy(), np.full((2, 3), 4.0))
        assert p._version == version  # autograd does not see writes through .data
        p.data.normal_(0.0, 0.02)
        assert float(p.detach().abs().max()) < 0.2 and float(p.detach().abs().max()) > 0
        p.data.clamp_(-0.01, 0.01)
        assert float(p.detach().abs().max()) <= 0.01
        p.data.copy_(lib.arange(6.0).reshape(2, 3))
        p.data.zero_()
        assert float(p.detach().abs().sum()) == 0
        p.data = lib.ones(4)  # the setter replaces the values (shape may change)
        assert tuple(p.shape) == (4,) and p.requires_grad


def test_writes_through_data_are_not_seen_by_a_saved_tensor_check(torch):
    for lib in (npconv, torch):
        w = lib.ones(3, requires_grad=True)
        y = (w * w).sum()
        w.data.mul_(2)  # torch gives a silently different gradient here, and no error: so do we
        y.backward()
        np.testing.assert_array_equal(w.grad.numpy(), np.full(3, 4.0))


def test_dcgan_weights_init_modifies_the_parameters():
    def weights_init(m):
        if m.__class__.__name__.find("Conv") != -1:
            m.weight.data.normal_(0.0, 0.02)
        elif m.__class__.__name__.find("BatchNorm") != -1:
            m.weight.data.normal_(1.0, 0.02)
            m.bias.data.fill_(0)

    npconv.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 64, 4), nn.BatchNorm2d(64))
    model[1].bias.data.fill_(5)
    model.apply(weights_init)
    assert abs(float(model[0].weight.detach().std()) - 0.02) < 0.002
    assert abs(float(model[1].weight.detach().mean()) - 1.0) < 0.01
    assert float(model[1].bias.detach().abs().sum()) == 0


# -- inference tensors -----------------------------------------------------------------------------
def test_inference_tensors_like_torch(torch):
    for lib in (npconv, torch):
        w = lib.ones(3, requires_grad=True)
        with lib.inference_mode():
            x = lib.ones(3) * 2
            assert x.is_inference() and x.add_(1) is x  # in-place inside inference mode is fine
        assert x.is_inference() and x.detach().is_inference() and not w.is_inference()
        assert not lib.ones(1).is_inference()
        with pytest.raises(RuntimeError, match="Inference tensors cannot be saved for backward"):
            w * x
        with pytest.raises(RuntimeError, match="Inplace update to inference tensor outside InferenceMode"):
            x.mul_(2)
        if lib is npconv:  # torch 2.13 writes before it raises; a refused call changes nothing here
            np.testing.assert_array_equal(x.numpy(), np.full(3, 3.0))
        (w * x.clone()).sum().backward()  # a clone is a normal tensor
        np.testing.assert_array_equal(w.grad.numpy(), x.numpy())


def test_inference_mode_decorator_and_false_mode():
    @npconv.inference_mode()
    def predict(x):
        return x * 2

    assert predict(npconv.ones(2)).is_inference()
    with npconv.inference_mode():
        with npconv.inference_mode(False):
            assert not npconv.ones(2).is_inference()


# -- dtype, Size and device objects in checkpoints --------------------------------------------------
def test_dtype_size_device_round_trip_through_torch_files(torch, tmp_path):
    path = tmp_path / "objects.pt"
    npconv.save({"dtype": npconv.float16, "np": np.dtype(np.int64), "size": npconv.zeros(2, 3).shape,
                 "device": npconv.device("cpu"), "w": npconv.ones(2)}, path)
    theirs = torch.load(path, weights_only=True)
    assert theirs["dtype"] is torch.float16 and theirs["np"] is torch.int64
    assert type(theirs["size"]) is torch.Size and theirs["size"] == (2, 3)
    assert theirs["device"] == torch.device("cpu")
    torch.save({"dtype": torch.float64, "size": torch.Size([4, 5]), "device": torch.device("cpu"),
                "cuda": torch.device("cuda", 1)}, path)
    ours = npconv.load(path, weights_only=True)
    assert isinstance(ours["dtype"], npconv.dtype) and ours["dtype"] == npconv.float64
    assert repr(ours["dtype"]) == repr(torch.float64)
    assert isinstance(ours["size"], npconv.Size) and ours["size"] == (4, 5)
    assert ours["device"] == npconv.device("cpu") and ours["cuda"] == npconv.device("cuda:1")
    assert repr(ours["size"]) == repr(torch.Size([4, 5]))


# -- torch's legacy constructors -------------------------------------------------------------------
@pytest.mark.parametrize("call", ["Tensor()", "Tensor(2, 3)", "Tensor(0, 4)", "Tensor(Size([2, 3]))",
                                  "Tensor([1, 2, 3])", "Tensor([[1.5, 2], [3, 4]])", "Tensor((3,))",
                                  "FloatTensor(2)", "FloatTensor([1, 2])", "DoubleTensor([1, 2])",
                                  "LongTensor([1.0, 2.0])", "LongTensor(3, 1)", "IntTensor([7])",
                                  "ByteTensor([1, 255])", "BoolTensor([0, 1])", "HalfTensor([1, 2])",
                                  "ShortTensor([1])", "CharTensor([-1])"])
def test_legacy_constructors_like_torch(torch, call):
    def run(lib):
        return eval("lib." + call.replace("Size(", "lib.Size("), {"lib": lib})

    ours, theirs = run(npconv), run(torch)
    assert tuple(ours.shape) == tuple(theirs.shape)
    assert str(ours.dtype) == str(theirs.dtype)
    if "[" in call and "Size" not in call:  # data, not an uninitialised size
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    assert ours.type() == theirs.type()


def test_legacy_types_are_dtype_checks_and_a_parameter_takes_a_legacy_tensor(torch):
    for lib in (npconv, torch):
        x, n = lib.zeros(2), lib.zeros(2, dtype=lib.int64)
        assert isinstance(x, lib.FloatTensor) and not isinstance(x, lib.LongTensor)
        assert isinstance(n, lib.LongTensor) and not isinstance(n, lib.FloatTensor)
        assert isinstance(x, lib.Tensor) and not isinstance(np.zeros(2, np.float32), lib.FloatTensor)
    p = nn.Parameter(npconv.Tensor(3, 4))
    assert p.shape == (3, 4) and p.dtype == npconv.float32 and p.requires_grad
    nn.init.kaiming_uniform_(p)
    assert np.isfinite(p.detach().numpy()).all()
    with npconv.no_grad():
        npconv.set_default_dtype(npconv.float64)
        try:
            assert npconv.Tensor([1, 2]).dtype == npconv.float64 and npconv.Tensor(2).dtype == npconv.float64
        finally:
            npconv.set_default_dtype(npconv.float32)


def test_tensor_of_an_array_or_tensor_wraps_it_without_a_copy():
    a = np.arange(4, dtype=np.int64)
    t = npconv.Tensor(a)
    assert t.numpy() is a  # npconv's own results are made this way: dtype and memory kept
    assert npconv.Tensor(t).numpy() is a


@pytest.mark.parametrize("call, message", [("Tensor(2, -1)", "negative dimension -1"),
                                           ("Tensor('ab')", "expected sizes as ints"),
                                           ("Tensor(2.5)", "expected sizes as ints"),
                                           ("FloatTensor([1, 'x'])", "FloatTensor(): data must be a"),
                                           ("Tensor(2, [1])", "expected sizes as ints")])
def test_legacy_constructors_reject_what_torch_rejects(call, message):
    with pytest.raises((TypeError, RuntimeError), match=message.replace("(", r"\(").replace(")", r"\)")):
        eval("npconv." + call, {"npconv": npconv})


# -- Tensor.contiguous -----------------------------------------------------------------------------
def test_contiguous_copies_a_strided_tensor_and_returns_a_contiguous_one_itself(torch):
    for lib in (npconv, torch):
        x = lib.arange(6.0).reshape(2, 3)
        assert x.contiguous() is x
        y = x.t().contiguous()
        assert y.is_contiguous() and y.shape == (3, 2)
        y.add_(100)  # a copy: the source is unchanged
        np.testing.assert_array_equal(x.numpy(), np.arange(6.0).reshape(2, 3))
    assert npconv.arange(6.0).reshape(2, 3).t().contiguous().numpy().flags.c_contiguous


def test_contiguous_passes_gradients_like_torch(torch):
    data = np.random.default_rng(0).standard_normal((4, 3))
    grads = []
    for lib in (npconv, torch):
        x = lib.tensor(data, requires_grad=True)
        y = x.t().contiguous()
        assert y.grad_fn is not None and y.grad_fn.name() == "CloneBackward0"
        (y * lib.arange(12.0, dtype=lib.float64).reshape(3, 4)).sum().backward()
        grads.append(x.grad.numpy())
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12)


# -- setup lines of torch programs: cuDNN switches, deterministic algorithms -----------------------
def test_cudnn_and_mps_switches_exist_and_change_nothing():
    import npconv.backends.cudnn as cudnn

    assert cudnn is npconv.backends.cudnn and not cudnn.is_available() and cudnn.version() is None
    assert not npconv.backends.mps.is_available() and not npconv.backends.mps.is_built()
    saved = (cudnn.benchmark, cudnn.deterministic)
    try:
        cudnn.benchmark, cudnn.deterministic = True, True
        assert not npconv.backends.conv.benchmark  # npconv's own timed choice stays off
    finally:
        cudnn.benchmark, cudnn.deterministic = saved


def test_deterministic_algorithms_turn_off_timed_choices():
    from npconv.kernels import plan

    x = npconv.randn(1, 3, 12, 12)
    conv = nn.Conv2d(3, 4, 3)
    assert not npconv.are_deterministic_algorithms_enabled()
    npconv.backends.conv.benchmark = True
    plan.clear_cache()
    try:
        npconv.use_deterministic_algorithms(True, warn_only=True)
        assert npconv.are_deterministic_algorithms_enabled()
        assert npconv.is_deterministic_algorithms_warn_only_enabled()
        first = conv(x).detach().numpy().copy()
        assert npconv.backends.conv.benchmark_cache == {}  # nothing timed
        np.testing.assert_array_equal(conv(x).detach().numpy(), first)
        npconv.use_deterministic_algorithms(False)
        conv(x)
        assert npconv.backends.conv.benchmark_cache  # timed again once allowed
    finally:
        npconv.use_deterministic_algorithms(False)
        npconv.backends.conv.benchmark = False
        npconv.backends.conv.clear_cache()
        plan.clear_cache()


@pytest.mark.parametrize("args, kwargs, name", [((1,), {}, "mode"), (("yes",), {}, "mode"),
                                                ((True,), {"warn_only": 1}, "warn_only")])
def test_deterministic_algorithms_reject_non_bools(args, kwargs, name):
    with pytest.raises(TypeError, match=f"bool for {name}"):
        npconv.use_deterministic_algorithms(*args, **kwargs)
    assert not npconv.are_deterministic_algorithms_enabled()


# -- torch.compile ---------------------------------------------------------------------------------
def test_compile_returns_the_model_and_checks_torchs_arguments(torch):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    x = npconv.randn(1, 1, 6, 6)
    compiled = npconv.compile(model, mode="max-autotune", dynamic=False)
    assert compiled is model
    np.testing.assert_array_equal(compiled(x).detach().numpy(), model(x).detach().numpy())

    @npconv.compile(fullgraph=True)
    def double(t):
        return t * 2

    assert float(double(npconv.ones(1))) == 2.0 and not npconv.compiler.is_compiling()
    assert npconv.compiler.disable(len) is len
    for lib in (npconv, torch):
        with pytest.raises(RuntimeError, match="Unrecognized mode"):
            lib.compile(model if lib is npconv else torch.nn.ReLU(), mode="fastest")
        with pytest.raises(RuntimeError, match="Either mode or options"):
            lib.compile(len, mode="default", options={})
    with pytest.raises(TypeError, match="fullgraph must be a bool"):
        npconv.compile(model, fullgraph="yes")
    with pytest.raises(RuntimeError, match="expects a callable"):
        npconv.compile(3)


# -- mixed precision switched off ------------------------------------------------------------------
def test_disabled_amp_lines_run_and_an_enabled_one_is_refused(torch):
    model = nn.Linear(3, 2)
    opt = npconv.optim.SGD(model.parameters(), lr=0.1)
    before = model.weight.detach().numpy().copy()
    scaler = npconv.amp.GradScaler("cpu", enabled=False)
    for autocast in (npconv.autocast(device_type="cpu", enabled=False),
                     npconv.amp.autocast("cuda", enabled=False), npconv.cuda.amp.autocast(enabled=False)):
        with autocast:
            loss = model(npconv.ones(4, 3)).sum()
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
    assert not np.array_equal(model.weight.detach().numpy(), before)  # the steps ran
    assert scaler.get_scale() == 1.0 and scaler.state_dict() == {} and not scaler.is_enabled()
    ours_scaler = npconv.cuda.amp.GradScaler(enabled=False)
    theirs = torch.amp.GradScaler("cpu", enabled=False)
    assert ours_scaler.get_scale() == theirs.get_scale() and ours_scaler.state_dict() == theirs.state_dict()
    for make in (lambda: npconv.autocast("cpu"), lambda: npconv.amp.GradScaler(),
                 lambda: npconv.cuda.amp.GradScaler()):
        with pytest.raises(ValueError, match="enabled must be False"):
            make()
    with pytest.raises(TypeError, match="enabled must be a bool"):
        npconv.autocast("cpu", enabled=1)
