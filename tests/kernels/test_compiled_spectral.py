"""FFT convolution's per-frequency channel products on the compiled core (``npconv._core.spectral_mix``,
used by ``npconv.kernels.fft._mix``) on every ISA variant this CPU runs, against a complex128 einsum;
the separable kernel spectrum against ``rfftn`` of the explicitly placed kernel; the FFT passes with
channel mixing against torch; and the extension's guards."""

from __future__ import annotations

import numpy as np
import pytest

import npconv
from npconv import backends
from npconv.geometry import ConvGeometry
from npconv.kernels import fft

pytestmark = pytest.mark.skipif(not backends.core.available,
                                reason=f"compiled core not in use: {backends.core.reason}")

_REAL = {np.complex64: np.float32, np.complex128: np.float64}


def _complex(rng: np.random.Generator, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


def _mix(a: np.ndarray, b: np.ndarray, geometry: tuple[int, ...], spans: list[tuple[int, int]]) -> np.ndarray:
    core = backends.core.module
    real = _REAL[a.dtype.type]
    n, groups, ni, nj, f = geometry[:5]
    out = np.full((n, groups, nj, f), np.nan, a.dtype)
    scratch = np.empty(core.spectral_mix_scratch(geometry, np.dtype(real).itemsize), real)
    for lo, hi in spans:
        core.spectral_mix(backends.core.isa_index, a.view(real), b.view(real), out.view(real), scratch,
                          geometry, lo, hi)
    return out


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1), (3, 2, 5, 7, 13), (5, 1, 9, 6, 37), (2, 3, 3, 2, 70)],
                         ids=lambda s: "x".join(map(str, s)))
def test_spectral_mix_matches_einsum(isa, dtype, shape):
    n, groups, ni, nj, f = shape
    rng = np.random.default_rng(sum(shape))
    a = _complex(rng, (n, groups, ni, f), dtype)
    b = _complex(rng, (groups, nj, ni, f), dtype)  # rows (g, j, i): the forward's (O, C)
    tolerance = 2e-6 if dtype == np.complex64 else 1e-13
    for conj in (0, 1):
        expected = np.einsum("ngif,gjif->ngjf", a.astype(np.complex128),
                             np.conj(b) if conj else b.astype(np.complex128))
        scale = np.abs(expected).max()
        for transposed in (False, True):
            if transposed:  # rows (g, i, j): the adjoint reads the (O, C) rows transposed
                stored, strides = np.ascontiguousarray(b.transpose(0, 2, 1, 3)), (1, nj)
            else:
                stored, strides = b, (ni, 1)
            geometry = (n, groups, ni, nj, f, *strides, conj)
            whole = _mix(a, stored, geometry, [(0, f)])
            assert np.abs(whole - expected).max() <= tolerance * scale
            # any split of the frequencies gives the same values bitwise (vector lanes and the tail agree)
            for cut in sorted({1, f // 3, f // 2, f - 1} - {0, f}):
                np.testing.assert_array_equal(_mix(a, stored, geometry, [(0, cut), (cut, f)]), whole)


def test_fft_mix_on_the_core_matches_numpy(isa, parallel, monkeypatch):
    """fft._mix's compiled path (threads split the frequencies) against its NumPy path."""
    monkeypatch.setattr(fft, "MIX_THREAD_MACS", 1)
    rng = np.random.default_rng(3)
    a = _complex(rng, (3, 2 * 4, 9, 5), np.complex64)
    b = _complex(rng, (2 * 6, 4, 9, 5), np.complex64)
    for conj, transposed in ((True, False), (False, True)):
        operand = a if not transposed else _complex(rng, (3, 2 * 6, 9, 5), np.complex64)
        compiled = fft._mix(operand, b, 2, conj, transposed)
        with monkeypatch.context() as patch:
            patch.setattr(fft, "_COMPLEX_CORE", ())  # the NumPy path
            reference = fft._mix(operand, b, 2, conj, transposed)
        assert compiled.shape == reference.shape
        assert np.abs(compiled - reference).max() <= 2e-6 * np.abs(reference).max()


@pytest.mark.parametrize("nd,kernel,dilation", [(1, (5,), (2,)), (2, (3, 4), (1, 2)), (2, (13, 13), (1, 1)),
                                                (3, (2, 3, 2), (2, 1, 1))])
def test_kernel_spectrum_is_rfftn_of_the_placed_kernel(nd, kernel, dilation):
    import scipy.fft

    rng = np.random.default_rng(nd)
    geom = ConvGeometry(kernel, (1,) * nd, tuple((k // 2, k // 2) for k in kernel), dilation, 1)
    w = rng.standard_normal((3, 2) + kernel)
    lengths = tuple(e + 4 + i for i, e in enumerate(geom.extent))
    for shift in (None, tuple(k // 2 for k in kernel)):
        placed = np.zeros(w.shape[:2] + lengths)
        index = np.ix_(*[(np.arange(k) * d - (shift[i] if shift else 0)) % size
                         for i, (k, d, size) in enumerate(zip(kernel, dilation, lengths, strict=True))])
        placed[(slice(None), slice(None)) + index] = w
        expected = scipy.fft.rfftn(placed, axes=tuple(range(2, 2 + nd)))
        got = fft._kernel_spectrum(w, geom, lengths, np.dtype(np.float64), shift)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())


@pytest.mark.parametrize("groups,cg,og", [(1, 3, 5), (2, 4, 3)])
def test_fft_passes_with_channel_mixing_match_torch(isa, parallel, torch, groups, cg, og):
    """The forward and grad_input of a grouped large-kernel convolution (several channels per group:
    the compiled mix) forced onto the FFT, against torch in float64 and float32."""
    rng = np.random.default_rng(groups)
    for dtype, tolerance in ((np.float64, 1e-10), (np.float32, 2e-5)):
        x = rng.standard_normal((2, groups * cg, 19, 23)).astype(dtype)
        w = rng.standard_normal((groups * og, cg, 9, 8)).astype(dtype)
        conv = dict(stride=(1, 2), padding=(4, 3), dilation=(1, 2), groups=groups)
        with npconv.backends.conv.force({"forward": "fft", "grad_input": "fft"}):
            xn, wn = npconv.tensor(x, requires_grad=True), npconv.tensor(w)
            y = npconv.nn.functional.conv2d(xn, wn, **conv)
            y.backward(npconv.tensor(np.ones(y.shape, dtype)))
        xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w)
        yt = torch.nn.functional.conv2d(xt, wt, **conv)
        yt.backward(torch.ones_like(yt))
        for got, expected in ((y.numpy(), yt.detach().numpy()), (xn.grad.numpy(), xt.grad.numpy())):
            assert np.linalg.norm(got - expected) <= tolerance * np.linalg.norm(expected)


def test_extension_rejects_bad_arguments():
    core, isa = backends.core.module, backends.core.isa_index
    geometry = (1, 1, 2, 3, 4, 2, 1, 1)
    a, b, out = np.zeros(16, np.float32), np.zeros(48, np.float32), np.zeros(24, np.float32)
    scratch = np.zeros(core.spectral_mix_scratch(geometry, 4), np.float32)
    core.spectral_mix(isa, a, b, out, scratch, geometry, 0, 4)
    with pytest.raises(ValueError, match="strides reach outside"):
        core.spectral_mix(isa, a, b, out, scratch, (1, 1, 2, 3, 4, 3, 1, 1), 0, 4)
    with pytest.raises(ValueError, match="frequency range"):
        core.spectral_mix(isa, a, b, out, scratch, geometry, 2, 5)
    with pytest.raises(ValueError, match="out has 20 elements"):
        core.spectral_mix(isa, a, b, out[:20], scratch, geometry, 0, 4)
    with pytest.raises(ValueError, match="scratch has"):
        core.spectral_mix(isa, a, b, out, scratch[:-1], geometry, 0, 4)
    with pytest.raises(ValueError, match="value 7 out of range"):
        core.spectral_mix(isa, a, b, out, scratch, (1, 1, 2, 3, 4, 2, 1, 2), 0, 4)
    with pytest.raises(TypeError, match="same element type"):
        core.spectral_mix(isa, a, b.astype(np.float64), out, scratch, geometry, 0, 4)
    with pytest.raises(TypeError, match="8 ints"):
        core.spectral_mix_scratch((1, 1, 2), 4)
    with pytest.raises(ValueError, match="itemsize"):
        core.spectral_mix_scratch(geometry, 2)


def _guarded(values: np.ndarray) -> tuple[np.ndarray, object]:
    """A copy of ``values`` ending exactly where an inaccessible page begins (a read past its end
    faults), and the mapping that holds it."""
    import ctypes
    import mmap

    page = mmap.PAGESIZE
    size = -(-values.nbytes // page) * page
    area = mmap.mmap(-1, size + page, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(area))
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.mprotect(ctypes.c_void_p(base + size), ctypes.c_size_t(page), 0) == 0  # PROT_NONE
    array = np.frombuffer(area, np.uint8, values.nbytes, size - values.nbytes).view(values.dtype)
    array = array.reshape(values.shape)
    array[...] = values
    return array, area


@pytest.mark.parametrize("transposed", [False, True])
def test_spectral_mix_reads_nothing_past_its_operands(isa, transposed):
    """Every operand ends at an inaccessible page: the last partial vector of a range (and of the rows)
    must not read past the data (a tail that did crashed the adjoint's 64 -> 32 channel mix)."""
    rng = np.random.default_rng(5)
    n, ni, nj, f = 3, 6, 5, 29
    a = _complex(rng, (n, 1, ni, f), np.complex64)
    b = _complex(rng, (1, nj, ni, f), np.complex64)
    stored, strides = (np.ascontiguousarray(b.transpose(0, 2, 1, 3)), (1, nj)) if transposed else (b, (ni, 1))
    geometry = (n, 1, ni, nj, f, *strides, 0)
    expected = np.einsum("ngif,gjif->ngjf", a.astype(np.complex128), b.astype(np.complex128))
    ga, keep_a = _guarded(a)
    gb, keep_b = _guarded(stored)
    for spans in ([(0, f)], [(0, 13), (13, f)], [(5, 6), (6, f), (0, 5)]):
        got = _mix(ga, gb, geometry, spans)
        assert np.abs(got - expected).max() <= 2e-6 * np.abs(expected).max()
    del ga, gb
    keep_a.close()
    keep_b.close()


def test_dense_rule_takes_the_fft_where_a_fresh_spectrum_pays():
    """fft.recommended's dense clause: 64 -> 64 channels at 32x32, batch 4: 13x13 forward and
    grad_input on the FFT, grad_weight and 11x11 on the GEMM; a kernel spectrum too large for one
    block (128 channels) and batch 1 stay on the GEMM."""
    from npconv.kernels import plan

    def choices(n, c, size, k):
        geom = ConvGeometry.create((k, k), 1, k // 2, 1, 1, ndim=2)
        return [plan.choose(p, (n, c, size, size), (c, c, k, k), geom, np.dtype(np.float32))
                for p in ("forward", "grad_input", "grad_weight")]

    assert choices(4, 64, 32, 13) == ["fft", "fft", "gemm"]
    assert choices(8, 32, 64, 9) == ["fft", "fft", "gemm"]
    assert choices(4, 64, 32, 11) == ["gemm"] * 3
    assert choices(8, 64, 56, 7) == ["gemm"] * 3
    assert choices(4, 128, 32, 13) == ["gemm"] * 3
    assert choices(1, 64, 32, 13) == ["gemm"] * 3


def test_dense_fft_layer_matches_torch_and_follows_weight_changes(parallel, torch, monkeypatch):
    """A 13x13 Conv2d the planner runs on the FFT, against torch in float64 and float32 (outputs
    and every gradient); the kept kernel spectrum follows in-place weight changes (a sign flip of
    one zero, -0.0, counts) and is dropped beyond its byte bound."""
    monkeypatch.setattr(fft, "MIX_THREAD_MACS", 1)
    rng = np.random.default_rng(13)
    for dtype, tolerance in ((np.float64, 1e-10), (np.float32, 2e-5)):
        fft.clear_spectra()
        x = rng.standard_normal((4, 64, 32, 32)).astype(dtype)
        conv = npconv.nn.Conv2d(64, 64, 13, padding=6).to(getattr(npconv, np.dtype(dtype).name))
        tconv = torch.nn.Conv2d(64, 64, 13, padding=6).to(getattr(torch, np.dtype(dtype).name))
        with torch.no_grad():
            tconv.weight.copy_(torch.from_numpy(conv.weight.numpy()))
            tconv.bias.copy_(torch.from_numpy(conv.bias.numpy()))
        xn, xt = npconv.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        y, yt = conv(xn), tconv(xt)
        gy = rng.standard_normal(y.shape).astype(dtype)
        y.backward(npconv.tensor(gy))
        yt.backward(torch.from_numpy(gy))
        pairs = [(y.detach().numpy(), yt.detach().numpy()), (xn.grad.numpy(), xt.grad.numpy()),
                 (conv.weight.grad.numpy(), tconv.weight.grad.numpy()),
                 (conv.bias.grad.numpy(), tconv.bias.grad.numpy())]
        for got, expected in pairs:
            assert np.linalg.norm(got - expected) <= tolerance * np.linalg.norm(expected)
        if dtype == np.float32:  # float64's spectra take two blocks: the GEMM runs it
            assert len(fft._spectra) == 2  # the forward's (shifted) and grad_input's spectra
        with npconv.no_grad():
            conv.weight.numpy()[3, 5, 6, 6] += 1.0  # in place: the same array
            with torch.no_grad():
                tconv.weight[3, 5, 6, 6] += 1.0
            expected = tconv(xt).detach().numpy()
            got = conv(npconv.tensor(x)).numpy()
            assert np.linalg.norm(got - expected) <= tolerance * np.linalg.norm(expected)
    monkeypatch.setattr(fft, "SPECTRUM_CACHE_BYTES", 1 << 20)
    fft.clear_spectra()
    with npconv.no_grad():
        conv(npconv.tensor(x))
    assert len(fft._spectra) == 0  # 34 MB spectra are not kept under a 1 MiB bound


def test_kept_spectrum_compares_bits():
    """A weight equal in value but not in bits (-0.0 for 0.0) gets its own spectrum."""
    fft.clear_spectra()
    geom = ConvGeometry.create((9, 9), 1, 4, 1, 1, ndim=2)
    w = np.zeros((2, 5, 9, 9))
    first = fft._kernel_block(w.reshape(1, 2, 5, 9, 9), geom, (20, 20), np.dtype(np.float64), keep=True)
    again = fft._kernel_block(w.reshape(1, 2, 5, 9, 9), geom, (20, 20), np.dtype(np.float64), keep=True)
    assert again is first
    w[0, 0, 0, 0] = -0.0
    changed = fft._kernel_block(w.reshape(1, 2, 5, 9, 9), geom, (20, 20), np.dtype(np.float64), keep=True)
    assert changed is not first
    assert not first.flags.writeable
    fft.clear_spectra()
