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

/* One torch.optim.SGD step over [start, stop) of a parameter t with gradient g (weight decay and maximize
 * already in it) and momentum buffer b (NULL: momentum 0): b = momentum * b + keep * g (keep = 1 -
 * dampening; not on the first step, where the caller made b a copy of g), d = g + momentum * b
 * (nesterov) or b (or g without a buffer), t = t - lr * d. Each product and sum rounded on its own, as
 * optim/sgd.py's NumPy update does (no fused multiply-add: the same values bit for bit); one pass over
 * the three arrays instead of its three to four (flags: SGD_FIRST, SGD_NESTEROV, SGD_KEEP). */
#ifndef SGD_FIRST
#define SGD_FIRST 1
#define SGD_NESTEROV 2
#define SGD_KEEP 4 /* keep != 1: b += keep * g, else b += g */
#endif
__attribute__((optimize("fp-contract=off"))) static void FN(sgd_step)(T *t, const T *g, T *b, ptrdiff_t start,
                                                                      ptrdiff_t stop, const double p[3], int flags)
{
    const T lr = (T)p[0], mom = (T)p[1], keep = (T)p[2];
    const int first = flags & SGD_FIRST, nesterov = flags & SGD_NESTEROV, scaled = flags & SGD_KEEP;
    const V vlr = FN(splat)(lr), vmom = FN(splat)(mom), vkeep = FN(splat)(keep);
    ptrdiff_t i = start;
    for (; i + VL <= stop; i += VL) {
        const V gv = FN(load)(g + i);
        V d = gv;
        if (b) {
            V bv = FN(load)(b + i);
            if (!first) {
                bv = bv * vmom;
                bv = bv + (scaled ? vkeep * gv : gv);
                FN(store)(b + i, bv);
            }
            d = nesterov ? gv + vmom * bv : bv;
        }
        FN(store)(t + i, FN(load)(t + i) - vlr * d);
    }
    for (; i < stop; i++) {
        T d = g[i];
        if (b) {
            if (!first) {
                T bv = b[i] * mom;
                bv = bv + (scaled ? keep * g[i] : g[i]);
                b[i] = bv;
            }
            d = nesterov ? g[i] + mom * b[i] : b[i];
        }
        t[i] = t[i] - lr * d;
    }
}

/* out[0] = max |v| of x[start, stop) (inf if an inf; meaningless with a NaN), out[1] = 1 if any value is NaN:
 * the value range npconv.kernels.numerics checks before a non-local algorithm, in one pass. On the bits:
 * with the sign cleared, the order of floats is the order of their bit patterns as integers, and every
 * NaN's is above inf's, so one integer max per vector gives both (compare-and-blend on floats, a max and
 * a min, ran at half NumPy's max). Four vector accumulators keep independent chains. */
static void FN(value_range)(const T *x, ptrdiff_t start, ptrdiff_t stop, double out[2])
{
    const TI magnitude = (TI)(((uint64_t)1 << (8 * TSIZE - 1)) - 1);
    const TI inf_bits = (TI)((TSIZE == 8 ? (uint64_t)0x7ff : (uint64_t)0xff) << (TSIZE == 8 ? 52 : 23));
    const IV keep = (IV)FN(splat)(0) + magnitude;
    IV top[4] = {keep & 0, keep & 0, keep & 0, keep & 0};
    ptrdiff_t i = start;
    for (; i + 4 * VL <= stop; i += 4 * VL)
        for (int q = 0; q < 4; q++) {
            IV a;
            memcpy(&a, x + i + q * VL, sizeof a);
            a &= keep;
            const IV up = a > top[q];
            top[q] = (a & up) | (top[q] & ~up);
        }
    TI m = 0;
    for (int q = 0; q < 4; q++)
        for (int c = 0; c < VL; c++) m = top[q][c] > m ? top[q][c] : m;
    for (; i < stop; i++) {
        TI a;
        memcpy(&a, x + i, sizeof a);
        a &= magnitude;
        m = a > m ? a : m;
    }
    T v;
    memcpy(&v, &m, sizeof v);
    out[0] = (double)v, out[1] = m > inf_bits;
}
