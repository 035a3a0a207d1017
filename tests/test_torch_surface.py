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
