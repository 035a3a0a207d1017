"""npconv.backends.memory: the cache of freed array memory in force inside module calls.

A block is reused only after NumPy freed it, so whatever a caller still holds (a result, a view of
it, a buffer export) keeps its values; results are bitwise those computed without the cache."""

from __future__ import annotations

import concurrent.futures
import os
import threading

import numpy as np
import pytest

import npconv
from npconv import backends

nn = npconv.nn
memory = backends.memory
pytestmark = pytest.mark.skipif(not memory.available, reason=f"no memory cache: {memory.reason}")

BLOCK = 2 * 32 * 48 * 48 * 4  # bytes of the model's output (float32), above the cache's min_size


def _handler_name() -> str:
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    return multiarray.get_handler_name()


@pytest.fixture
def model():
    npconv.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(32, 32, 1))


@pytest.fixture
def limit():
    """Restores the cache's settings after a test changes them; starts from an empty cache."""
    saved = memory.cache_limit, memory.min_size
    memory.empty_cache()
    yield
    memory.cache_limit, memory.min_size = saved
    memory.empty_cache()


def _input(seed: int) -> npconv.Tensor:
    return npconv.from_numpy(np.random.default_rng(seed).standard_normal((2, 3, 48, 48)).astype(np.float32))


def test_results_are_those_without_the_cache_and_never_overwritten(model, limit, torch):
    """Results kept across many calls (which reuse freed blocks) keep their values, equal bitwise to
    the same calls without the cache and close to torch's."""
    inputs = [_input(seed) for seed in range(6)]
    memory.cache_limit = 0
    with npconv.no_grad():
        expected = [model(x).numpy().copy() for x in inputs]
    memory.cache_limit = 64 << 20
    kept = []
    with npconv.no_grad():
        for i, x in enumerate(inputs):
            y = model(x)
            kept.append(y)
            for _ in range(2):  # freed results of the same size: the blocks the cache hands out
                model(inputs[(i + 1) % len(inputs)])
    assert memory.stats()["hits"] > 0
    for y, e in zip(kept, expected, strict=True):
        np.testing.assert_array_equal(y.numpy(), e)
    tnn = torch.nn
    tm = tnn.Sequential(tnn.Conv2d(3, 32, 3, padding=1), tnn.ReLU(), tnn.Conv2d(32, 32, 1))
    with torch.no_grad():
        for ours, theirs in zip(model.parameters(), tm.parameters(), strict=True):
            theirs.copy_(torch.from_numpy(ours.numpy()))
        reference = tm(torch.from_numpy(inputs[0].numpy())).numpy()
    np.testing.assert_allclose(kept[0].numpy(), reference, rtol=1e-4, atol=1e-5)


def test_a_freed_block_is_reused_and_a_referenced_one_is_not(limit):
    model = nn.Conv2d(3, 32, 3, padding=1)  # one result of its size per call
    x = _input(0)
    with npconv.no_grad():
        model(x)  # warm up: every intermediate size was allocated and freed once
        y = model(x)
        address = y.numpy().ctypes.data
        del y
        assert model(x).numpy().ctypes.data == address  # the freed result's block, reused
        y = model(x)
        holders = [y.numpy()[1], memoryview(y.numpy()), np.asarray(y)]  # a view, a buffer, an array
        values = y.numpy().copy()
        address = y.numpy().ctypes.data
        del y
        for _ in range(3):
            assert model(x).numpy().ctypes.data != address
        for holder in holders:
            np.testing.assert_array_equal(np.asarray(holder), values[1] if holder.ndim == 3 else values)


def test_a_larger_block_freed_last_serves_a_smaller_request(limit):
    """A request takes the held block freed last among those of its size up to 4 times larger (the
    one likeliest in the CPU's cache); that block comes back with its whole size, also after NumPy
    resized the array or the minimum size changed, and serves a request of its own size again."""
    previous = memory.module.enter()
    try:
        big = np.empty(1 << 20, np.uint8)
        address = big.ctypes.data
        del big
        assert memory.cached_bytes() == 1 << 20
        small = np.empty(600 << 10, np.uint8)  # a smaller request: the freed block, now in use
        assert small.ctypes.data == address and memory.cached_bytes() == 0
        small[:] = 7
        del small
        assert memory.cached_bytes() == 1 << 20  # back with its whole size
        tiny = np.empty(200 << 10, np.uint8)  # under a quarter of it: not this block
        assert tiny.ctypes.data != address and memory.cached_bytes() == 1 << 20
        del tiny
        again = np.empty(1 << 20, np.uint8)
        assert again.ctypes.data == address
        again[:] = 1  # the whole block is usable
        del again
        resized = np.empty(600 << 10, np.uint8)
        assert resized.ctypes.data == address
        resized.resize(700 << 10, refcheck=False)  # NumPy's realloc: freed later with the new size
        resized[:] = 3
        del resized
        lent = np.empty(600 << 10, np.uint8)  # whichever block: freed after min_size rose above it
        memory.min_size = 1 << 21
        del lent
        assert memory.cached_bytes() == 0
        memory.min_size = 1 << 17
        for size in (700 << 10, 1 << 20, 600 << 10):
            a = np.empty(size, np.uint8)
            a[:] = 5
            del a
    finally:
        if previous is not None:
            memory.module.restore(previous)


def test_the_cache_is_in_force_only_inside_module_calls(model, limit):
    seen = []
    model.register_forward_hook(lambda module, args, out: seen.append(_handler_name()))
    before = _handler_name()
    with npconv.no_grad():
        model(_input(1))
    assert seen == ["npconv_cache"] and _handler_name() == before

    class Failing(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        Failing()(_input(1))
    assert _handler_name() == before


def test_backward_passes_allocate_through_the_cache(model, limit):
    """The autograd engine puts the cache in force for the pass (a tensor hook runs inside it) and
    restores NumPy's allocator after it, also when a hook raises."""
    x = _input(5).requires_grad_(True)
    y = model(x)
    seen = []
    y.register_hook(lambda g: seen.append(_handler_name()))
    before = _handler_name()
    y.sum().backward()
    assert seen == ["npconv_cache"] and _handler_name() == before
    z = model(x)

    def failing(g):
        raise RuntimeError("hook failed")

    z.register_hook(failing)
    with pytest.raises(RuntimeError, match="hook failed"):
        npconv.autograd.grad(z.sum(), [x])
    assert _handler_name() == before


def test_hooks_and_autograd_with_the_cache(model, limit):
    calls = []
    model[0].register_forward_pre_hook(lambda module, args: calls.append("pre"))
    model[0].register_forward_hook(lambda module, args, out: calls.append("post"))
    x = _input(2)
    memory.cache_limit = 0
    x.requires_grad_(True)
    model(x).sum().backward()
    expected_grad = x.grad.numpy().copy()
    memory.cache_limit = 64 << 20
    for _ in range(3):
        x.grad = None
        model(x).sum().backward()
        np.testing.assert_array_equal(x.grad.numpy(), expected_grad)
    assert calls == ["pre", "post"] * 4


def test_limit_evicts_and_min_size_applies(model, limit):
    memory.cache_limit = BLOCK  # room for one output-sized block
    x = _input(3)
    with npconv.no_grad():
        for _ in range(3):
            model(x)
    assert 0 < memory.cached_bytes() <= BLOCK
    memory.min_size = 1 << 40  # nothing is large enough: nothing is held
    assert memory.cached_bytes() == 0
    with npconv.no_grad():
        model(x)
    assert memory.cached_bytes() == 0
    memory.min_size = 1 << 17
    memory.cache_limit = 0
    with npconv.no_grad():
        model(x)
    assert memory.cached_bytes() == 0 and memory.stats()["blocks"] == 0


@pytest.mark.parametrize(("name", "value", "error"), [
    ("cache_limit", -1, ValueError), ("cache_limit", 1.5, TypeError), ("cache_limit", True, TypeError),
    ("min_size", 0, ValueError), ("min_size", "1", TypeError), ("cache_limit", 2**63, ValueError)])
def test_bad_settings_are_refused_and_change_nothing(name, value, error, limit):
    before = memory.cache_limit, memory.min_size
    with pytest.raises(error, match=f"memory.{name}"):
        setattr(memory, name, value)
    assert (memory.cache_limit, memory.min_size) == before


def test_threads_calling_modules_concurrently(model, limit):
    """Concurrent calls from two threads, each reusing blocks the other freed, give the results of
    single calls (up to rounding: the kernels split work differently when called from two threads)."""
    inputs = [_input(seed) for seed in range(8)]
    with npconv.no_grad():
        expected = [model(x).numpy().copy() for x in inputs]

    def run(i: int) -> np.ndarray:
        with npconv.no_grad():
            return model(inputs[i]).numpy()

    barrier = threading.Barrier(2)

    def twice(i: int) -> list[np.ndarray]:
        barrier.wait()
        return [run(i), run((i + 4) % 8)]

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for _ in range(3):
            results = list(pool.map(twice, range(2)))
            for i, (a, b) in enumerate(results):
                np.testing.assert_allclose(a, expected[i], rtol=1e-5, atol=1e-5)
                np.testing.assert_allclose(b, expected[(i + 4) % 8], rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_allocates_through_the_cache(model, limit):
    with npconv.no_grad():
        expected = model(_input(4)).numpy().copy()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run the model, report equality through the pipe
        try:
            with npconv.no_grad():
                ok = all(np.array_equal(model(_input(4)).numpy(), expected) for _ in range(3))
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    os.close(read)
    os.waitpid(pid, 0)


_USER_HANDLERS: list = []


def _install_user_handler():
    """Install, through NumPy's C API (ctypes), a handler named ``user_handler`` that allocates with
    NumPy's default functions; returns ``restore()``."""
    import ctypes

    multiarray = np._core._multiarray_umath if hasattr(np, "_core") else np.core._multiarray_umath
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    new_capsule = ctypes.pythonapi.PyCapsule_New
    new_capsule.restype = ctypes.py_object
    new_capsule.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    table = ctypes.cast(get_pointer(multiarray._ARRAY_API, None), ctypes.POINTER(ctypes.c_void_p))
    set_handler = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.py_object)(table[304])  # PyDataMem_SetHandler

    class Allocator(ctypes.Structure):
        _fields_ = [(name, ctypes.c_void_p) for name in ("ctx", "malloc", "calloc", "realloc", "free")]

    class Handler(ctypes.Structure):
        _fields_ = [("name", ctypes.c_char * 127), ("version", ctypes.c_uint8), ("allocator", Allocator)]

    # PyDataMem_DefaultHandler
    default = ctypes.cast(table[306], ctypes.POINTER(ctypes.py_object)).contents.value
    functions = ctypes.cast(get_pointer(default, b"mem_handler"), ctypes.POINTER(Handler)).contents.allocator
    user = Handler(b"user_handler", 1, Allocator(functions.ctx, functions.malloc, functions.calloc,
                                                   functions.realloc, functions.free))
    previous = set_handler(new_capsule(ctypes.addressof(user), b"mem_handler", None))

    _USER_HANDLERS.append(user)  # arrays it allocated free through it, whenever: kept alive for good
    return lambda: set_handler(previous)


def test_a_handler_the_user_installed_stays_in_force(model, limit):
    seen = []
    model.register_forward_hook(lambda module, args, out: seen.append(_handler_name()))
    restore = _install_user_handler()
    try:
        with npconv.no_grad():
            y = model(_input(6))
        assert seen == ["user_handler"] and _handler_name() == "user_handler"
    finally:
        restore()
    del y
    with npconv.no_grad():
        model(_input(6))
    assert seen[-1] == "npconv_cache"
