"""In-place ops under autograd and leaf-gradient accumulation (npconv/autograd.py).

In-place ops write into the target's memory and save what their backward reads as torch does: the
target's new values (``relu_``), a copy of its old values (``mul_``/``div_`` when ``other`` requires
grad) or nothing (``add_``/``sub_``), with version counters making a later change of a saved tensor
an error at backward. The first accumulation into ``leaf.grad`` adopts an unshared gradient array.
Torch is the oracle for gradients and errors.
"""

from __future__ import annotations

import weakref

import numpy as np
import pytest

import npconv


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


_RNG = np.random.default_rng(7)
_X = _RNG.standard_normal((3, 4))
_W = _RNG.standard_normal((3, 4))
_B = _RNG.standard_normal(4)
_WEIGHTS = _RNG.standard_normal((3, 4))


def _iadd(h, other):
    h += other
    return h


def _isub(h, other):
    h -= other
    return h


def _imul(h, other):
    h *= other
    return h


def _itruediv(h, other):
    h /= other
    return h


# each case: (lib, h = x * 1.5 (a non-leaf), w (3, 4) leaf, b (4,) leaf) -> the tensor the ops ended in
CHAINS = {
    "relu_": lambda lib, h, w, b: h.relu_(),
    "functional_relu": lambda lib, h, w, b: lib.nn.functional.relu(h, inplace=True),
    "module_relu": lambda lib, h, w, b: lib.nn.ReLU(inplace=True)(h),
    "add_": lambda lib, h, w, b: h.add_(w),
    "add_alpha": lambda lib, h, w, b: h.add_(w, alpha=-0.7),
    "iadd_broadcast": lambda lib, h, w, b: _iadd(h, b),
    "add_scalar": lambda lib, h, w, b: h.add_(2.5).mul_(w),
    "sub_alpha_broadcast": lambda lib, h, w, b: h.sub_(b, alpha=1.3),
    "isub": lambda lib, h, w, b: _isub(h, w * w),
    "mul_": lambda lib, h, w, b: h.mul_(w),
    "imul_broadcast": lambda lib, h, w, b: _imul(h, b),
    "mul_scalar": lambda lib, h, w, b: h.mul_(-1.5).add_(w),
    "div_": lambda lib, h, w, b: h.div_(w.exp() + 1),
    "itruediv_broadcast": lambda lib, h, w, b: _itruediv(h, b * b + 1),
    "div_scalar": lambda lib, h, w, b: h.div_(4.0).mul_(b),
    # the target changes again after ops that kept a copy of it or saved nothing: allowed (torch too)
    "mul_then_target_modified": lambda lib, h, w, b: h.mul_(w).add_(1.0).mul_(w),
    "div_then_target_modified": lambda lib, h, w, b: h.div_(w * w + 1).mul_(b).relu_(),
    "add_then_relu_then_read": lambda lib, h, w, b: h.add_(w).relu_() * h.detach().sum(),
    "resnet_block": lambda lib, h, w, b: _iadd(lib.nn.ReLU(inplace=True)(h * w) * b, h).relu_(),
    "target_without_grad": lambda lib, h, w, b: lib.zeros(3, 4, dtype=w.dtype).add_(w).mul_(b).relu_(),
    # an operand aliasing the target through .data (its own version counter): the backward reads its
    # memory as it is then, in torch too
    "mul_by_own_data": lambda lib, h, w, b: h.mul_(h.data).add_(w),
    "clamp_": lambda lib, h, w, b: h.clamp_(-0.5, 0.8).mul_(w),
    "clamp_tensor_bounds": lambda lib, h, w, b: h.clamp_(b * 0.5 - 0.5, b * 0 + 0.8),
    "neg_": lambda lib, h, w, b: h.neg_().mul_(w),
    "exp_": lambda lib, h, w, b: (h * 0.5).exp_() * w,
    "sqrt_": lambda lib, h, w, b: (h * h + 0.5).sqrt_(),
    "sigmoid_": lambda lib, h, w, b: h.add_(w).sigmoid_(),
    "tanh_": lambda lib, h, w, b: h.mul_(b).tanh_(),
    "leaky_relu_inplace": lambda lib, h, w, b: lib.nn.functional.leaky_relu(h.add_(w), 0.1, inplace=True),
    "leaky_relu_module_zero_slope": lambda lib, h, w, b: lib.nn.LeakyReLU(0.0, inplace=True)(h.mul_(b)),
    "elu_inplace": lambda lib, h, w, b: lib.nn.functional.elu(h.sub_(w), 0.7, inplace=True),
    "elu_module_zero_alpha": lambda lib, h, w, b: lib.nn.ELU(0.0, inplace=True)(h.mul_(w)),
    # hardtanh_ keeps a copy of its input (torch's too), so changing its result afterwards is allowed
    "relu6_then_modified": lambda lib, h, w, b: lib.nn.ReLU6(inplace=True)(h.mul_(w)).add_(b).mul_(w),
    "hardtanh_inplace": lambda lib, h, w, b: lib.nn.functional.hardtanh(h.add_(w), -0.5, 0.8, inplace=True),
    "hardtanh_at_its_bounds": lambda lib, h, w, b: lib.nn.functional.hardtanh(
        h.sub_(h.detach()).add_(w.detach().sign()), -1.0, 1.0, inplace=True),  # exactly -1 and 1: gradient 0
    "in_place_on_in_place": lambda lib, h, w, b: h.add_(b).sub_(w).div_(b.exp()).mul_(w).relu_(),
}


def _run_chain(lib, chain, dtype):
    x = lib.tensor(_X.astype(dtype), requires_grad=True)
    w = lib.tensor(_W.astype(dtype), requires_grad=True)
    b = lib.tensor(_B.astype(dtype), requires_grad=True)
    h = x * 1.5
    out = chain(lib, h, w, b)
    (out * lib.tensor(_WEIGHTS.astype(dtype))).sum().backward()
    grads = [t.grad for t in (x, w, b)]
    return out.detach().numpy().copy(), [None if g is None else g.numpy().copy() for g in grads]


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-10), (np.float32, 2e-5)])
@pytest.mark.parametrize("name", sorted(CHAINS))
def test_gradients_through_inplace_ops_match_torch(name, dtype, tol, torch):
    ours, our_grads = _run_chain(npconv, CHAINS[name], dtype)
    theirs, their_grads = _run_chain(torch, CHAINS[name], dtype)
    np.testing.assert_allclose(ours, theirs, rtol=tol, atol=tol)
    for mine, expected in zip(our_grads, their_grads, strict=True):
        assert (mine is None) == (expected is None)
        if expected is not None:
            np.testing.assert_allclose(mine, expected, rtol=tol, atol=tol)


def test_inplace_ops_write_into_the_targets_memory():
    x = npconv.tensor(_X, requires_grad=True)
    h = x * 1.5
    array, version = h.numpy(), h._version
    view = h.detach()[1]  # shares the memory and the version counter
    out = h.relu_().add_(npconv.tensor(_B)).mul_(2.0)
    assert out is h and h.numpy() is array and view._version is version
    np.testing.assert_array_equal(view.numpy(), (np.maximum(_X[1] * 1.5, 0) + _B) * 2.0)
    assert h._version.value == 3


# each case modifies, after the op, a tensor that op's backward reads: torch raises at backward
ERRORS = {
    "relu_result_then_add_": lambda lib, h, w: h.relu_().add_(1.0),
    "relu_result_then_detached_write": lambda lib, h, w: _write_detached(h.relu_()),
    "functional_relu_then_sub_": lambda lib, h, w: lib.nn.functional.relu(h, inplace=True).sub_(w),
    "saved_input_then_relu_": lambda lib, h, w: ((h * w).sum(), h.relu_())[0],
    "mul_other_modified": lambda lib, h, w: _modify_other(h, w, "mul_"),
    "div_other_modified": lambda lib, h, w: _modify_other(h, w, "div_"),
    "self_times_self": lambda lib, h, w: h.mul_(h),
    "exp_result_then_mul_": lambda lib, h, w: h.exp_().mul_(w),
    "sqrt_result_then_detached_write": lambda lib, h, w: _write_detached((h * h + 1).sqrt_()),
    "sigmoid_result_then_add_": lambda lib, h, w: h.sigmoid_().add_(1.0),
    "tanh_result_then_relu_": lambda lib, h, w: h.tanh_().relu_(),
    "leaky_relu_result_then_mul_": lambda lib, h, w: lib.nn.LeakyReLU(0.2, inplace=True)(h).mul_(w),
    "elu_result_then_add_": lambda lib, h, w: lib.nn.ELU(1.0, inplace=True)(h).add_(w),
    "clamp_input_then_add_": lambda lib, h, w: ((h.clamp(-0.5, 0.5) * w), h.add_(1.0))[0],
}


def _write_detached(h):
    h.detach().mul_(2.0)  # shares the version counter (torch too)
    return h


def _modify_other(h, w, op):
    other = w * 1 + 2
    out = getattr(h, op)(other)
    other.add_(1.0)
    return out


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_modifying_what_a_backward_saved_is_an_error_like_torch(name, torch):
    for lib in (torch, npconv):
        x = lib.tensor(_X, requires_grad=True)
        w = lib.tensor(_W, requires_grad=True)
        with pytest.raises(RuntimeError, match="modified by an inplace operation|modified in place"):
            # npconv refuses a tensor written through a detached alias when it is used (torch: at backward)
            ERRORS[name](lib, x * 1.5, w).sum().backward()


@pytest.mark.parametrize("name", ["leaky_relu", "elu"])
def test_inplace_leaky_relu_and_elu_with_a_negative_slope_have_no_backward_like_torch(name, torch):
    results = []
    for lib in (torch, npconv):
        x = lib.tensor(_X, requires_grad=True)
        h = getattr(lib.nn.functional, name)(x * 1.5, -0.3, inplace=True)  # the forward runs
        results.append(h.detach().numpy().copy())
        with pytest.raises(RuntimeError, match="negative slope"):
            h.sum().backward()
        with lib.no_grad():
            results.append(getattr(lib.nn.functional, name)(x * 1.5, -0.3, inplace=True).numpy().copy())
    for ours, theirs in zip(results[2:], results[:2], strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-15, atol=0)  # elu: torch's exp may differ by an ulp


def test_the_error_names_the_modified_tensor_and_versions():
    x = npconv.tensor(_X, requires_grad=True)
    h = (x * 1.5).relu_()
    h.add_(1.0)
    with pytest.raises(RuntimeError) as error:
        h.sum().backward()
    message = str(error.value)
    assert "[float64 tensor [3, 4]]" in message and "ReluBackward0" in message
    assert "is at version 2; expected version 1" in message


INPLACE_ON_LEAF = {
    "relu_": lambda lib, t: t.relu_(),
    "functional_relu": lambda lib, t: lib.nn.functional.relu(t, inplace=True),
    "module_relu": lambda lib, t: lib.nn.ReLU(inplace=True)(t),
    "add_": lambda lib, t: t.add_(1.0),
    "iadd": lambda lib, t: _iadd(t, lib.ones(3, 4, dtype=t.dtype)),
    "sub_": lambda lib, t: t.sub_(t.detach(), alpha=2),
    "mul_": lambda lib, t: t.mul_(2.0),
    "div_": lambda lib, t: t.div_(lib.ones(4, dtype=t.dtype)),
}


@pytest.mark.parametrize("name", sorted(INPLACE_ON_LEAF))
def test_inplace_on_a_leaf_that_requires_grad_is_refused_like_torch(name, torch):
    for lib in (torch, npconv):
        leaf = lib.tensor(_X, requires_grad=True)
        with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
            INPLACE_ON_LEAF[name](lib, leaf)
        np.testing.assert_array_equal(leaf.detach().numpy(), _X)  # the rejected call changed nothing
        assert leaf.is_leaf and leaf.grad_fn is None
        with lib.no_grad():
            INPLACE_ON_LEAF[name](lib, leaf)
        assert leaf.is_leaf and leaf.requires_grad
    results = []
    for lib in (torch, npconv):
        leaf = lib.tensor(_X, requires_grad=True)
        with lib.no_grad():
            INPLACE_ON_LEAF[name](lib, leaf)
        results.append(leaf.detach().numpy().copy())
    np.testing.assert_allclose(*results, rtol=1e-15, atol=0)


def test_inplace_on_views(torch):
    # a view of a tensor that requires grad: torch rewrites the base's graph, npconv refuses clearly
    h = npconv.tensor(_X, requires_grad=True) * 1.0
    with pytest.raises(RuntimeError, match="in-place operations on a view"):
        h[0].relu_()
    with pytest.raises(RuntimeError, match="in-place operations on a view"):
        h.view(12)[:4].add_(1.0)
    np.testing.assert_array_equal(h.detach().numpy(), _X)
    # a gradient recorded into a view of a tensor without grad: torch makes the base part of the graph;
    # npconv refuses (before, the base silently missed the gradient)
    w = npconv.tensor(_W[0], requires_grad=True)
    base = npconv.zeros(3, 4, dtype=npconv.float64)
    for write in (lambda v: v.copy_(w * 3), lambda v: v.add_(w), lambda v: v.mul_(w)):
        with pytest.raises(RuntimeError, match="in-place operations on a view"):
            write(base[1])
        assert not base.requires_grad and base._version.value == 0
    base[1] = w * 3  # index assignment on the base records the gradient, as in torch
    (base * npconv.tensor(_WEIGHTS)).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), 3 * _WEIGHTS[1], rtol=1e-15)
    # a view without grad is written through into its base (no graph), as in torch
    for lib in (torch, npconv):
        base = lib.tensor(_X.copy())
        base[1].relu_()
        base.view(12)[:4].mul_(2.0)
        np.testing.assert_array_equal(
            base.numpy(), np.concatenate([_X[:1] * 2, np.maximum(_X[1:2], 0), _X[2:]]))
    # a tensor saved through a view, modified through the base: the backward raises in both
    for lib in (torch, npconv):
        h = lib.tensor(_X, requires_grad=True) * 1.0
        view = h.view(12)
        loss = (view * view).sum()
        h.relu_()
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            loss.backward()


def test_tensor_hooks_before_and_after_inplace_ops_fire_like_torch(torch):
    seen = {}
    for lib in (torch, npconv):
        records = seen[lib.__name__] = []
        x = lib.tensor(_X, requires_grad=True)
        w = lib.tensor(_W, requires_grad=True)
        h = x * 1.5
        h.register_hook(lambda g, r=records: r.append(("before", g.numpy().copy())))
        h.mul_(w)
        h.register_hook(lambda g, r=records: r.append(("after mul_", g.numpy().copy())))
        h.relu_()
        h.register_hook(lambda g, r=records: r.append(("after relu_", g.numpy().copy())))
        w.register_hook(lambda g: g * 3)  # a leaf hook replacing the gradient
        (h * lib.tensor(_WEIGHTS)).sum().backward()
        records.append(("w.grad", w.grad.numpy().copy()))
        records.append(("x.grad", x.grad.numpy().copy()))
    assert [name for name, _ in seen["npconv"]] == [name for name, _ in seen["torch"]]
    for (_, ours), (_, theirs) in zip(seen["npconv"], seen["torch"], strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)


# -- leaf gradients: the first accumulation adopts an unshared array ---------------------------------
class _Given(npconv.autograd.Function):
    """Identity forward; the backward returns ``ctx.arrays`` (chosen by the test) as the gradients."""

    arrays: tuple = ()

    @staticmethod
    def forward(ctx, *inputs):
        return sum(t * 1 for t in inputs)

    @staticmethod
    def backward(ctx, grad):
        return tuple(npconv.Tensor(a) for a in _Given.arrays)


def test_the_first_accumulation_adopts_an_unshared_gradient():
    w = npconv.tensor(_W, requires_grad=True)
    made = []

    class Fresh(npconv.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            return t * 2

        @staticmethod
        def backward(ctx, grad):
            array = grad.numpy() * 2 + 1
            made.append(weakref.ref(array))
            return npconv.Tensor(array)

    Fresh.apply(w).sum().backward()
    assert made[0]() is w.grad.numpy()  # adopted, not copied
    np.testing.assert_array_equal(w.grad.numpy(), np.full(_W.shape, 3.0))
    Fresh.apply(w).sum().backward()  # later passes add into it
    np.testing.assert_array_equal(w.grad.numpy(), np.full(_W.shape, 6.0))


def _has_memory_of_its_own(array):
    return array.flags.owndata or (array.base.flags.owndata and array.base.nbytes == array.nbytes)


def test_a_fresh_reshaped_gradient_is_adopted_and_halves_of_one_array_are_copied():
    """A conv's weight gradient is a reshape of the product it was computed in: adopted. Two views
    of one fresh array (e.g. a batch norm's weight and bias gradients): copied, each its own memory;
    a reshape of an array something else holds: copied."""
    made, held = [], np.full(12, 0.5)

    class Views(npconv.autograd.Function):
        @staticmethod
        def forward(ctx, a, b, c):
            return a * 1 + b * 1 + c * 1

        @staticmethod
        def backward(ctx, grad):
            product = np.arange(12.0) + 1
            made.append(weakref.ref(product))
            halves = np.arange(24.0).reshape(2, 3, 4)
            return (npconv.Tensor(product.reshape(3, 4)), npconv.Tensor(halves[0]),
                    npconv.Tensor(held.reshape(3, 4)))

    a, b, c = (npconv.tensor(v, requires_grad=True) for v in (_X, _W, _W))
    Views.apply(a, b, c).sum().backward()
    assert made[0]() is not None and a.grad.numpy().base is made[0]()
    np.testing.assert_array_equal(a.grad.numpy(), np.arange(1.0, 13.0).reshape(3, 4))
    assert _has_memory_of_its_own(b.grad.numpy())  # not a view keeping the whole (2, 3, 4) array
    np.testing.assert_array_equal(b.grad.numpy(), np.arange(12.0).reshape(3, 4))
    assert not np.shares_memory(c.grad.numpy(), held)
    c.grad.numpy()[...] = 7.0
    np.testing.assert_array_equal(held, np.full(12, 0.5))


def test_the_same_gradient_array_for_two_leaves_is_never_shared():
    a = npconv.tensor(_X, requires_grad=True)
    b = npconv.tensor(_W, requires_grad=True)
    (a + b).sum().backward()  # AddBackward gives both the same array
    assert not np.shares_memory(a.grad.numpy(), b.grad.numpy())
    a.grad.numpy()[...] += 1  # an update of one (e.g. by an optimizer) leaves the other alone
    np.testing.assert_array_equal(b.grad.numpy(), np.ones(_W.shape))
    a.grad = b.grad = None
    shared = np.full(_X.shape, 0.5)
    _Given.arrays = (shared, shared)
    _Given.apply(a, b).sum().backward()
    assert not np.shares_memory(a.grad.numpy(), b.grad.numpy())
    assert not np.shares_memory(a.grad.numpy(), shared) and not np.shares_memory(b.grad.numpy(), shared)
    np.testing.assert_array_equal(a.grad.numpy(), shared)
    np.testing.assert_array_equal(b.grad.numpy(), shared)


def test_gradients_referenced_elsewhere_are_copied():
    # an expanded leaf's gradient is a broadcast view, a view's gradient is part of a bigger array
    x = npconv.tensor(_B, requires_grad=True)
    (x.expand(3, 4) * npconv.tensor(_WEIGHTS)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), _WEIGHTS.sum(0), rtol=1e-15)
    assert x.grad.numpy().flags.writeable and _has_memory_of_its_own(x.grad.numpy())
    # a gradient the user holds (the seed of a leaf root, an array kept by a hook)
    w = npconv.tensor(_W, requires_grad=True)
    seed = npconv.tensor(np.full(_W.shape, 2.0))
    w.backward(seed)
    assert not np.shares_memory(w.grad.numpy(), seed.numpy())
    kept = []
    v = npconv.tensor(_W, requires_grad=True)
    v.register_hook(kept.append)
    (v * 3).sum().backward()
    (v * 3).sum().backward()
    np.testing.assert_array_equal(kept[0].numpy(), np.full(_W.shape, 3.0))  # not the accumulated 6
    np.testing.assert_array_equal(v.grad.numpy(), np.full(_W.shape, 6.0))
    # a fresh view of an array something else holds
    held = np.zeros((2, 3, 4))

    class SliceOfHeld(npconv.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            return t * 1

        @staticmethod
        def backward(ctx, grad):
            return npconv.Tensor(held[1])

    s = npconv.tensor(_X, requires_grad=True)
    SliceOfHeld.apply(s).sum().backward()
    assert not np.shares_memory(s.grad.numpy(), held)
    # an array a retained graph returns again on every pass
    constant = np.full(_X.shape, 0.25)
    _Given.arrays = (constant,)
    u = npconv.tensor(_X, requires_grad=True)
    loss = _Given.apply(u).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    np.testing.assert_array_equal(constant, np.full(_X.shape, 0.25))
    np.testing.assert_array_equal(u.grad.numpy(), np.full(_X.shape, 0.5))


def test_a_conv_block_with_inplace_ops_accumulates_like_torch(torch):
    rng = np.random.default_rng(3)
    data = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    weight = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    results = []
    for lib in (torch, npconv):
        lib.manual_seed(0)
        conv = lib.nn.Conv2d(3, 4, 3, padding=1)
        with lib.no_grad():
            conv.weight.copy_(lib.tensor(weight))
            conv.bias.copy_(lib.tensor(np.arange(4, dtype=np.float32)))
        x = lib.tensor(data)
        conv.zero_grad(set_to_none=True)
        for _ in range(2):  # a fresh .grad, then one added into
            out = conv(x)
            out += x.sum(1, keepdim=True)
            lib.nn.functional.relu(out, inplace=True).sum().backward()
        results.append([conv.weight.grad.numpy().copy(), conv.bias.grad.numpy().copy()])
    for ours, theirs in zip(*results, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
