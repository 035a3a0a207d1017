"""The autograd engine (npconv/autograd.py): graph, grad modes, hooks, in-place rules, threads.

Torch is the oracle where a number is compared; the engine's own rules (version counters, thread
safety, errors) are checked without torch.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import npconv
from npconv import nn


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def _t(values, dtype=np.float64, requires_grad=True):
    return npconv.tensor(np.asarray(values, dtype=dtype), requires_grad=requires_grad)


# -- one implementation per op: Tensor methods are the functional ops ------------------------------
def test_tensor_methods_are_the_functional_ops():
    for name in (
        "relu",
        "sigmoid",
        "tanh",
        "softmax",
        "log_softmax",
        "sum",
        "mean",
        "exp",
        "clamp",
        "matmul",
        "flatten",
        "unsqueeze",
        "topk",
        "sort",
        "cumsum",
        "flip",
        "roll",
        "where",
    ):
        method = getattr(npconv.Tensor, name)
        if name != "where":  # Tensor.where(condition, other) reorders torch.where(condition, self, other)
            assert method is getattr(npconv, name), name


def test_relu_of_nan_matches_torch_values_and_gradient(torch):
    values = [float("nan"), -1.0, 2.0, 0.0]
    for call in (lambda t: t.relu(), lambda t: npconv.relu(t), lambda t: nn.functional.relu(t)):
        x = _t(values)
        y = call(x)
        y.backward(np.ones(4))
        xt = torch.tensor(values, dtype=torch.float64, requires_grad=True)
        yt = torch.relu(xt)
        yt.backward(torch.ones(4, dtype=torch.float64))
        np.testing.assert_array_equal(y.numpy(), yt.detach().numpy())
        np.testing.assert_array_equal(x.grad.numpy(), xt.grad.numpy())


def test_sigmoid_is_one_formula_and_matches_torch(torch):
    data = np.array([-800.0, -30.0, -1.0, 0.0, 1.0, 30.0, 800.0])
    for dtype in (np.float64, np.float32):
        x = _t(data, dtype)
        y = x.sigmoid()
        y.backward(np.ones(7, dtype))
        xt = torch.tensor(data.astype(dtype), requires_grad=True)
        yt = torch.sigmoid(xt)
        yt.backward(torch.ones(7, dtype=xt.dtype))
        np.testing.assert_allclose(
            y.numpy(), yt.detach().numpy(), rtol=1e-6 if dtype == np.float32 else 1e-14
        )
        np.testing.assert_allclose(
            x.grad.numpy(), xt.grad.numpy(), rtol=1e-6 if dtype == np.float32 else 1e-14
        )
        np.testing.assert_array_equal(npconv.sigmoid(x).numpy(), nn.functional.sigmoid(x).numpy())


# -- graph structure -------------------------------------------------------------------------------
def test_grad_fn_is_a_node_with_name_and_next_functions():
    x = _t([1.0, 2.0])
    w = _t([3.0, 4.0])
    y = (x * w).sum()
    assert y.grad_fn.name() == "SumBackward0"
    ((mul, _),) = y.grad_fn.next_functions
    assert mul.name() == "MulBackward0"
    leaves = [f.variable for f, _ in mul.next_functions]
    assert leaves[0] is x and leaves[1] is w
    assert (x * 2).grad_fn.next_functions[1] == (None, 0)
    assert x.grad_fn is None and npconv.tensor([1.0]).grad_fn is None


def test_backward_sorts_a_diamond_topologically(torch):
    # x feeds two branches that meet again: each node must run after all its consumers
    for lib in (npconv, torch):
        x = lib.tensor([0.5, -1.5, 2.0], dtype=lib.float64, requires_grad=True)
        a = x.exp()
        b = a * x
        c = a.sigmoid() + b.tanh() * a
        c.sum().backward()
        if lib is npconv:
            ours = x.grad.numpy()
        else:
            np.testing.assert_allclose(ours, x.grad.numpy(), rtol=1e-12)


# -- grad modes ------------------------------------------------------------------------------------
def test_grad_modes_as_context_managers_and_decorators():
    x = _t([1.0])
    with npconv.no_grad():
        assert not (x * 2).requires_grad
        with npconv.enable_grad():
            assert (x * 2).requires_grad
    with npconv.inference_mode():
        assert not (x * 2).requires_grad and npconv.is_inference_mode_enabled()
    assert not npconv.is_inference_mode_enabled()

    @npconv.inference_mode()
    def infer(t):
        return t * 2

    @npconv.no_grad
    def bare(t):
        return t * 2

    assert not infer(x).requires_grad and not bare(x).requires_grad and (x * 2).requires_grad
    with npconv.inference_mode(False):
        assert (x * 2).requires_grad
    npconv.set_grad_enabled(False)
    try:
        assert not npconv.is_grad_enabled()
    finally:
        npconv.set_grad_enabled(True)
    with npconv.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    assert npconv.is_grad_enabled()


def test_grad_mode_is_per_thread():
    seen = []
    with npconv.no_grad():
        thread = threading.Thread(target=lambda: seen.append(npconv.is_grad_enabled()))
        thread.start()
        thread.join()
    assert seen == [True]


# -- hooks, retain_grad, autograd.grad, Function ---------------------------------------------------
def test_hooks_and_retain_grad(torch):
    results = {}
    for lib in (npconv, torch):
        x = lib.tensor([1.0, -2.0, 3.0], dtype=lib.float64, requires_grad=True)
        x.register_hook(lambda g: g * 3)
        h = x * x
        h.retain_grad()
        seen = []
        h.register_hook(seen.append)
        handle = h.register_hook(lambda g: g * 100)
        handle.remove()
        (h * 2).sum().backward()
        results[lib.__name__] = (x.grad.numpy().copy(), h.grad.numpy().copy(), seen[0].numpy().copy())
    for ours, theirs in zip(results["npconv"], results["torch"], strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-14)


def test_post_accumulate_grad_hook_sees_the_new_grad():
    x = _t([1.0, 2.0])
    seen = []
    x.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.numpy().copy()))
    (x * 3).sum().backward()
    np.testing.assert_array_equal(seen[0], [3.0, 3.0])


def test_autograd_grad_returns_gradients_without_touching_grad(torch):
    x = _t([1.0, 2.0, 3.0])
    w = _t([0.5, -1.0, 2.0])
    h = x * w
    y = (h.exp() * x).sum()
    gx, gh = npconv.autograd.grad(y, [x, h], retain_graph=True)
    assert x.grad is None and w.grad is None
    xt = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True)
    wt = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    ht = xt * wt
    yt = (ht.exp() * xt).sum()
    gxt, ght = torch.autograd.grad(yt, [xt, ht])
    np.testing.assert_allclose(gx.numpy(), gxt.numpy(), rtol=1e-13)
    np.testing.assert_allclose(gh.numpy(), ght.numpy(), rtol=1e-13)
    unused = _t([1.0])
    with pytest.raises(RuntimeError, match="not have been used"):
        npconv.autograd.grad(y, [unused], retain_graph=True)
    assert npconv.autograd.grad(y, [unused], allow_unused=True, retain_graph=True) == (None,)
    with pytest.raises(NotImplementedError, match="create_graph"):
        npconv.autograd.grad(y, [x], create_graph=True)


class _Cube(npconv.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.save_for_backward(x)
        ctx.scale = scale
        return x * x * x * scale

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * 3 * x * x * ctx.scale, None


def test_custom_function_with_save_for_backward(torch):
    x = _t([1.0, -2.0, 0.5])
    y = _Cube.apply(x, 2.0)
    assert y.grad_fn.name() == "_CubeBackward" and y.requires_grad
    (y * y).sum().backward()
    xt = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
    ((xt**3 * 2) ** 2).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-13)
    with npconv.no_grad():
        assert not _Cube.apply(x, 1.0).requires_grad
    x2 = _t([1.0])
    y2 = _Cube.apply(x2, 1.0)
    x2.numpy()[...] = 5.0  # .data bypasses the version counter, as torch's .data does
    with npconv.no_grad():
        x2.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y2.backward(np.ones(1))


# -- in-place operations ---------------------------------------------------------------------------
def test_inplace_on_a_non_leaf_like_a_resnet_block(torch):
    rng = np.random.default_rng(0)
    x, identity_w = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    grads = {}
    for lib in (npconv, torch):
        xa = lib.tensor(x, requires_grad=True)
        wa = lib.tensor(identity_w, requires_grad=True)
        out = xa * 2
        out += wa * xa  # torchvision's `out += identity`
        out = lib.relu(out) * 1  # relu saves its output: modifying it would be an error (torch too)
        out.mul_(3)
        out.sub_(wa, alpha=0.5)
        out.div_(xa.exp() + 1)
        out.clamp_(-0.5, 2.0)
        out.sum().backward()
        grads[lib.__name__] = (out.detach().numpy(), xa.grad.numpy(), wa.grad.numpy())
    for ours, theirs in zip(grads["npconv"], grads["torch"], strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)


def test_relu_inplace_modifies_the_input_like_torch(torch):
    data = np.array([[-1.0, 2.0], [3.0, -4.0]])
    for relu in (lambda t: nn.functional.relu(t, inplace=True), nn.ReLU(inplace=True), lambda t: t.relu_()):
        x = _t(data)
        h = x * 1.5
        y = relu(h)
        assert y is h and h.numpy().min() == 0.0
        y.sum().backward()
        np.testing.assert_array_equal(x.grad.numpy(), np.where(data > 0, 1.5, 0.0))
    xt = torch.tensor(data, requires_grad=True)
    ht = xt * 1.5
    torch.nn.functional.relu(ht, inplace=True).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), xt.grad.numpy())


def test_inplace_rules_match_torch():
    leaf = _t([1.0, 2.0])
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        leaf.add_(1)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        leaf += 1
    np.testing.assert_array_equal(leaf.numpy(), [1.0, 2.0])  # the rejected call changed nothing
    param = nn.Parameter(npconv.ones(3))
    with npconv.no_grad():
        param.mul_(0.5).add_(npconv.ones(3), alpha=2.0)
        param -= 0.25
    np.testing.assert_array_equal(param.numpy(), [2.25] * 3)
    assert param.is_leaf and param.requires_grad
    plain = npconv.zeros(2)
    plain.add_(leaf)  # a tensor without grad takes the graph of an in-place op on one with grad
    assert plain.requires_grad and not plain.is_leaf
    (plain * 3).sum().backward()
    np.testing.assert_array_equal(leaf.grad.numpy(), [3.0, 3.0])


@pytest.mark.parametrize("case", ["exp_output", "mul_input", "view_of_saved", "optimizer_before_backward"])
def test_modifying_a_saved_tensor_in_place_is_an_error_at_backward(case, torch):
    """Where torch raises, npconv raises; it never returns a silently wrong gradient."""
    for lib in (torch, npconv):
        x = lib.tensor([0.5, 1.5], dtype=lib.float64, requires_grad=True)
        if case == "exp_output":
            y = x.exp()
            loss = y.sum()
            y.add_(1)
        elif case == "mul_input":
            h = x * 2
            loss = (h * h).sum()
            h.mul_(3)
        elif case == "view_of_saved":
            h = x * 2
            loss = (h * x).sum()
            if lib is npconv:  # npconv refuses in-place ops on views of tensors that require grad
                with pytest.raises(RuntimeError, match="in-place operations on a view"):
                    h.view(-1)[0:1].mul_(2)
                h.detach().view(-1)[0:1].mul_(2)  # shares the version counter, as in torch
            else:
                h.view(-1)[0:1].mul_(2)
        else:
            w = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
            loss = (w * x).sum()
            with lib.no_grad():
                w.sub_(0.1)
        with pytest.raises(RuntimeError, match="modified by an inplace operation|view"):
            loss.backward()


def test_inplace_not_saved_is_allowed_like_torch(torch):
    results = []
    for lib in (torch, npconv):
        x = lib.tensor([0.5, 1.5], dtype=lib.float64, requires_grad=True)
        h = x * 2
        loss = (h + 1).sum()  # add saves nothing
        h.mul_(3)
        loss.backward()
        results.append(x.grad.numpy().copy())
    np.testing.assert_array_equal(*results)


def test_setitem_records_a_gradient(torch):
    results = []
    for lib in (torch, npconv):
        x = lib.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=lib.float64, requires_grad=True)
        v = lib.tensor([10.0, 20.0], dtype=lib.float64, requires_grad=True)
        h = x * 1
        h[0] = v * 2
        (h * h).sum().backward()
        results.append((h.detach().numpy().copy(), x.grad.numpy().copy(), v.grad.numpy().copy()))
    for theirs, ours in zip(*results, strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_negative_step_slicing_is_a_clear_error():
    x = npconv.arange(6)
    with pytest.raises(ValueError, match="step must be greater than zero"):
        x[::-1]
    with pytest.raises(ValueError, match="step must be greater than zero"):
        x.reshape(2, 3)[:, ::-2]


# -- threads ---------------------------------------------------------------------------------------
def test_concurrent_backward_into_shared_leaves_is_exact():
    """4 threads x 200 backward passes into one shared Linear accumulate exactly 800 passes' gradient."""
    layer = nn.Linear(8, 4, dtype=np.float64)
    x = npconv.tensor(np.random.default_rng(0).standard_normal((3, 8)))
    layer(x).sum().backward()
    one_weight, one_bias = layer.weight.grad.numpy().copy(), layer.bias.grad.numpy().copy()
    layer.zero_grad()
    barrier = threading.Barrier(4)
    errors = []

    def work() -> None:
        try:
            barrier.wait()
            for _ in range(200):
                layer(x).sum().backward()
        except Exception as error:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    np.testing.assert_allclose(layer.weight.grad.numpy(), 800 * one_weight, rtol=1e-12)
    np.testing.assert_allclose(layer.bias.grad.numpy(), 800 * one_bias, rtol=1e-12)


# -- dims out of range -----------------------------------------------------------------------------
def _beyond(dim: int) -> int:
    """Out of range for ops that accept one more dim than the input has (unsqueeze, stack)."""
    return dim + 1 if dim >= 0 else dim - 1


DIM_CALLS = {
    "sum": lambda t, d: t.sum(d),
    "mean": lambda t, d: t.mean(d),
    "unsqueeze": lambda t, d: t.unsqueeze(_beyond(d)),
    "squeeze": lambda t, d: t.squeeze(d),
    "max": lambda t, d: t.max(d),
    "min": lambda t, d: t.min(d),
    "argmax": lambda t, d: t.argmax(d),
    "softmax": lambda t, d: t.softmax(d),
    "cumsum": lambda t, d: t.cumsum(d),
    "flatten": lambda t, d: t.flatten(d),
    "transpose": lambda t, d: t.transpose(0, d),
    "permute": lambda t, d: t.permute(0, d),
    "size": lambda t, d: t.size(d),
    "var": lambda t, d: t.var(d),
    "std": lambda t, d: t.std(d),
    "norm": lambda t, d: t.norm(dim=d),
    "topk": lambda t, d: t.topk(1, d),
    "sort": lambda t, d: t.sort(d),
    "flip": lambda t, d: t.flip(d),
    "roll": lambda t, d: t.roll(1, d),
    "narrow": lambda t, d: t.narrow(d, 0, 1),
    "split": lambda t, d: t.split(1, d),
    "chunk": lambda t, d: t.chunk(2, d),
    "gather": lambda t, d: t.gather(d, npconv.zeros(2, 3, dtype=npconv.long)),
    "index_select": lambda t, d: t.index_select(d, npconv.tensor([0])),
    "cat": lambda t, d: npconv.cat([t, t], d),
    "stack": lambda t, d: npconv.stack([t, t], _beyond(d)),
    "log_softmax": lambda t, d: t.log_softmax(d),
    "unbind": lambda t, d: t.unbind(d),
    "unfold": lambda t, d: t.unfold(d, 1, 1),
    "all": lambda t, d: t.all(d),
    "any": lambda t, d: t.any(d),
    "logsumexp": lambda t, d: t.logsumexp(d),
    "prod": lambda t, d: t.prod(d),
    "argsort": lambda t, d: t.argsort(d),
    "amax": lambda t, d: t.amax(d),
}


@pytest.mark.parametrize("name", sorted(DIM_CALLS))
@pytest.mark.parametrize("dim", [5, -3, 2])
def test_dim_out_of_range_is_torchs_index_error(name, dim, torch):
    x = npconv.ones(2, 3)
    with pytest.raises(
        IndexError,
        match=r"Dimension out of range \(expected to be in range of \[-[23], [12]\], but got -?\d\)",
    ):
        DIM_CALLS[name](x, dim)
    with pytest.raises(IndexError, match="Dimension out of range"):
        DIM_CALLS[name](torch.ones(2, 3), dim) if name not in (
            "gather",
            "index_select",
            "cat",
            "stack",
        ) else {
            "gather": lambda: torch.ones(2, 3).gather(dim, torch.zeros(2, 3, dtype=torch.long)),
            "index_select": lambda: torch.ones(2, 3).index_select(dim, torch.tensor([0])),
            "cat": lambda: torch.cat([torch.ones(2, 3)] * 2, dim),
            "stack": lambda: torch.stack([torch.ones(2, 3)] * 2, _beyond(dim)),
        }[name]()
