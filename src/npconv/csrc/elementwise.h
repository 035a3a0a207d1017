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
