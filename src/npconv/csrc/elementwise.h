/* Elementwise passes over flat element ranges [start, stop), one copy per (element type, ISA):
 * kernels.h includes this file once per combination with T and SFX defined, inside the ISA's
 * `#pragma GCC target` region. Arrays are C-contiguous; the output may be the input (in place).
 */

/* y = relu(x) as npconv's relu op (np.maximum(x, 0)) and the fused epilogues: NaN stays NaN, -0.0
 * becomes 0 (torch keeps -0.0; docs/compiled-core.md). */
static void FN(relu_forward)(const T *x, T *y, ptrdiff_t start, ptrdiff_t stop)
{
    ptrdiff_t i = start;
    for (; i + VL <= stop; i += VL) FN(store)(y + i, FN(activate)(FN(load)(x + i), 1, 0, 0));
    for (; i < stop; i++) y[i] = (x[i] > 0 || x[i] != x[i]) ? x[i] : 0;
}

/* gx = g where y > 0 or y is NaN, else 0 (y the ReLU's output; torch's threshold_backward: an inf or
 * NaN of g where the ReLU is inactive gives 0). */
static void FN(relu_backward)(const T *g, const T *y, T *gx, ptrdiff_t start, ptrdiff_t stop)
{
    ptrdiff_t i = start;
    for (; i + VL <= stop; i += VL) {
        const V v = FN(load)(y + i);
        FN(store)(gx + i, (V)((IV)FN(load)(g + i) & ((v > 0) | (v != v))));
    }
    for (; i < stop; i++) gx[i] = (y[i] > 0 || y[i] != y[i]) ? g[i] : 0;
}

/* out = a + b (out may be a or b): the residual adds of the networks, on the workers. */
static void FN(add_arrays)(const T *a, const T *b, T *out, ptrdiff_t start, ptrdiff_t stop)
{
    ptrdiff_t i = start;
    for (; i + VL <= stop; i += VL) FN(store)(out + i, FN(load)(a + i) + FN(load)(b + i));
    for (; i < stop; i++) out[i] = a[i] + b[i];
}

/* out[0] = max, out[1] = min of x[start, stop) (NaN ignored), out[2] = 1 if any value is NaN, else 0:
 * the value range npconv.kernels.numerics checks before a non-local algorithm, in one pass (NumPy's
 * max and min are two). Four vector accumulators each keep independent compare-select chains. */
static void FN(value_range)(const T *x, ptrdiff_t start, ptrdiff_t stop, double out[3])
{
    const V neg = FN(splat)(-(T)INFINITY), pos = FN(splat)((T)INFINITY);
    V hi[4] = {neg, neg, neg, neg}, lo[4] = {pos, pos, pos, pos};
    IV nan = (IV)FN(splat)(0);
    ptrdiff_t i = start;
    for (; i + 4 * VL <= stop; i += 4 * VL)
        for (int q = 0; q < 4; q++) {
            const V v = FN(load)(x + i + q * VL);
            const IV up = v > hi[q], down = v < lo[q];
            hi[q] = (V)(((IV)v & up) | ((IV)hi[q] & ~up));
            lo[q] = (V)(((IV)v & down) | ((IV)lo[q] & ~down));
            nan |= v != v;
        }
    T h = -(T)INFINITY, l = (T)INFINITY;
    int any_nan = 0;
    for (int q = 0; q < 4; q++)
        for (int c = 0; c < VL; c++) {
            h = hi[q][c] > h ? hi[q][c] : h;
            l = lo[q][c] < l ? lo[q][c] : l;
            any_nan |= nan[c] != 0;
        }
    for (; i < stop; i++) {
        const T v = x[i];
        h = v > h ? v : h;
        l = v < l ? v : l;
        any_nan |= v != v;
    }
    out[0] = (double)h, out[1] = (double)l, out[2] = any_nan;
}
