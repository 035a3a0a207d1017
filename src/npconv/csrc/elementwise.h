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


/* The logistic passes, one element's arithmetic (kind a constant after inlining): LG_SIGMOID 1 / (1 + exp(-x)),
 * LG_SILU x / (1 + exp(-x)) (torch's formula: -inf gives NaN), LG_SILU_GRAD torch's silu_backward
 * g * (s * (1 + x * (1 - s))) with s the sigmoid, from the saved input. NaN stays NaN. */
#ifndef NPCONV_LG_KINDS /* once for every (element type, ISA) copy */
#define NPCONV_LG_KINDS
enum { LG_SIGMOID, LG_SILU, LG_SILU_GRAD };
#endif
#if TSIZE == 4
static inline __attribute__((always_inline)) V FN(logistic_lanes)(V v, V g, int kind)
{
    const V one = FN(splat)(1.0f), d = one + FN(exp_neg)(v);
    if (kind == LG_SILU) return v / d;
    const V s = one / d;
    return kind == LG_SIGMOID ? s : g * (s * (one + v * (one - s)));
}
#endif

/* y = the logistic pass `kind` of x (and g for LG_SILU_GRAD; y may be x or g): float32 in vectors (the last,
 * partial vector through a copy, so every element gets the same arithmetic), float64 by libm. */
static inline __attribute__((always_inline)) void FN(logistic_run)(const T *x, const T *g, T *y, ptrdiff_t start,
                                                                   ptrdiff_t stop, int kind)
{
#if TSIZE == 4
    ptrdiff_t i = start;
    for (; i + VL <= stop; i += VL)
        FN(store)(y + i, FN(logistic_lanes)(FN(load)(x + i), g ? FN(load)(g + i) : (V){0}, kind));
    if (i < stop) {
        T tx[VL] = {0}, tg[VL] = {0};
        memcpy(tx, x + i, (size_t)(stop - i) * sizeof(T));
        if (g) memcpy(tg, g + i, (size_t)(stop - i) * sizeof(T));
        FN(store)(tx, FN(logistic_lanes)(FN(load)(tx), FN(load)(tg), kind));
        memcpy(y + i, tx, (size_t)(stop - i) * sizeof(T));
    }
#else
    for (ptrdiff_t i = start; i < stop; i++) {
        const T d = 1 + exp(-x[i]), s = 1 / d;
        y[i] = kind == LG_SILU ? x[i] / d : kind == LG_SIGMOID ? s : g[i] * (s * (1 + x[i] * (1 - s)));
    }
#endif
}

static void FN(silu_forward)(const T *x, T *y, ptrdiff_t start, ptrdiff_t stop)
{
    FN(logistic_run)(x, NULL, y, start, stop, LG_SILU);
}
static void FN(sigmoid_forward)(const T *x, T *y, ptrdiff_t start, ptrdiff_t stop)
{
    FN(logistic_run)(x, NULL, y, start, stop, LG_SIGMOID);
}
static void FN(silu_backward)(const T *g, const T *x, T *gx, ptrdiff_t start, ptrdiff_t stop)
{
    FN(logistic_run)(x, g, gx, start, stop, LG_SILU_GRAD);
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

/* One torch.optim.Adam / AdamW step over [start, stop) of a parameter t with gradient g, averages m
 * ('exp_avg') and v ('exp_avg_sq') and, with amsgrad, vmax ('max_exp_avg_sq'; else NULL), in optim/adam.py's
 * order: g = -g (ADAM_MAXIMIZE); t = t * decay (ADAM_DECOUPLED) or g = g + wd * t (ADAM_L2); m = lerp(m, g,
 * w) (torch's two-sided formula, ADAM_LERP_LOW: |w| < 0.5); v = v * beta2 + ((1 - beta2) * g) * g; vmax =
 * max(vmax, v) (NaN propagating, as np.maximum); d = sqrt(vmax or v) / bc2 + eps; t = t + (step * m) / d.
 * p: {wd, decay, w, 1 - w, beta2, 1 - beta2, bc2, eps, step}, each cast to T as NumPy casts a Python
 * float against a T array. Every operation rounded on its own (no fused multiply-add; sqrt and
 * division IEEE): NumPy's whole-array values bit for bit, in one pass instead of ten. */
#ifndef ADAM_MAXIMIZE
#define ADAM_MAXIMIZE 1
#define ADAM_DECOUPLED 2
#define ADAM_L2 4
#define ADAM_LERP_LOW 8
#endif
/* sqrt of each lane (correctly rounded; GCC makes the lane loop one vector square root) */
static inline __attribute__((always_inline)) V FN(vsqrt)(V x)
{
    V r;
#pragma GCC unroll 16
    for (int l = 0; l < VL; l++) r[l] = TSIZE == 4 ? __builtin_sqrtf((float)x[l]) : (T)__builtin_sqrt((double)x[l]);
    return r;
}

/* one element of adam_step, as a vector of lanes (S V, the element loop) or a value (S T, the tail) */
#define ADAM_ONE(S, gv, tv, mv, sv, mx, has_max)                                                           \
    do {                                                                                                  \
        if (maximize) gv = -gv;                                                                           \
        if (decoupled) tv = tv * decay;                                                                   \
        else if (l2) gv = gv + wd * tv;                                                                   \
        const S diff = gv - mv;                                                                           \
        mv = low ? mv + w * diff : gv - diff * w1;                                                        \
        sv = sv * b2;                                                                                     \
        sv = sv + (b2c * gv) * gv;                                                                        \
        S s_ = sv;                                                                                        \
        if (has_max) s_ = mx = ADAM_MAX(mx, sv);                                                          \
        S d_ = ADAM_SQRT(s_) / bc2;                                                                       \
        d_ = d_ + eps;                                                                                    \
        tv = tv + (step * mv) / d_;                                                                       \
    } while (0)

__attribute__((optimize("fp-contract=off"))) static void FN(adam_step)(T *t, const T *g, T *m, T *v, T *vmax,
                                                                       ptrdiff_t start, ptrdiff_t stop,
                                                                       const double p[9], int flags)
{
    const T wd = (T)p[0], decay = (T)p[1], w = (T)p[2], w1 = (T)p[3], b2 = (T)p[4], b2c = (T)p[5];
    const T bc2 = (T)p[6], eps = (T)p[7], step = (T)p[8];
    const int maximize = flags & ADAM_MAXIMIZE, decoupled = flags & ADAM_DECOUPLED, l2 = flags & ADAM_L2;
    const int low = flags & ADAM_LERP_LOW;
    ptrdiff_t i = start;
    for (; i + VL <= stop; i += VL) {
        V gv = FN(load)(g + i), tv = FN(load)(t + i), mv = FN(load)(m + i), sv = FN(load)(v + i);
        V mx = vmax ? FN(load)(vmax + i) : sv;
#define ADAM_SQRT(x) FN(vsqrt)(x)
#define ADAM_MAX(a, b) ((V)(((IV)(a) & (((a) >= (b)) | ((a) != (a)))) | ((IV)(b) & ~(((a) >= (b)) | ((a) != (a))))))
        ADAM_ONE(V, gv, tv, mv, sv, mx, vmax != NULL);
#undef ADAM_SQRT
#undef ADAM_MAX
        FN(store)(m + i, mv);
        FN(store)(v + i, sv);
        if (vmax) FN(store)(vmax + i, mx);
        FN(store)(t + i, tv);
    }
    for (; i < stop; i++) {
        T gv = g[i], tv = t[i], mv = m[i], sv = v[i];
        T mx = vmax ? vmax[i] : sv;
#define ADAM_SQRT(x) (TSIZE == 4 ? (T)__builtin_sqrtf((float)(x)) : (T)__builtin_sqrt((double)(x)))
#define ADAM_MAX(a, b) (((a) >= (b) || (a) != (a)) ? (a) : (b)) /* np.maximum: NaN from either side */
        ADAM_ONE(T, gv, tv, mv, sv, mx, vmax != NULL);
#undef ADAM_SQRT
#undef ADAM_MAX
        m[i] = mv, v[i] = sv, t[i] = tv;
        if (vmax) vmax[i] = mx;
    }
}
#undef ADAM_ONE

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
