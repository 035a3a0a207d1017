/* One copy of every kernel for one (element type, ISA): core.c includes this file once per
 * combination with T (float/double), TSIZE (its size), TI (the same-sized signed integer), VBYTES
 * (vector width in bytes) and SFX (name suffix) defined, inside a `#pragma GCC target` region for the
 * ISA. The vector type and its load/store/broadcast are defined here once for all kernel headers.
 */

#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SFX)

typedef T FN(vec) __attribute__((vector_size(VBYTES)));
typedef TI FN(ivec) __attribute__((vector_size(VBYTES)));
#define V FN(vec)
#define IV FN(ivec)
#define VL ((ptrdiff_t)(VBYTES / sizeof(T)))

/* Unaligned loads/stores through memcpy compile to single vector moves. */
static inline V FN(load)(const T *p) { V v; memcpy(&v, p, sizeof v); return v; }
static inline void FN(store)(T *p, V v) { memcpy(p, &v, sizeof v); }

/* d[0, n) = s[0, n) and d[0, n) = 0 for the packing kernels' short rows without a libc call (GCC made
 * their element loops memmove/memset calls, one per row of a few values): whole vectors, the last one
 * overlapping the one before; below a vector two overlapping fixed-size moves. d and s do not overlap. */
static inline __attribute__((always_inline)) void FN(copy_short)(T *restrict d, const T *restrict s, ptrdiff_t n)
{
    if (n >= VL) {
        ptrdiff_t t = 0;
        for (; t + VL <= n; t += VL) FN(store)(d + t, FN(load)(s + t));
        if (t < n) FN(store)(d + n - VL, FN(load)(s + n - VL));
        return;
    }
    char *dc = (char *)d;
    const char *sc = (const char *)s;
    const size_t b = (size_t)n * sizeof(T);
    if (b >= 32) {
        memcpy(dc, sc, 32);
        memcpy(dc + b - 32, sc + b - 32, 32);
    } else if (b >= 16) {
        memcpy(dc, sc, 16);
        memcpy(dc + b - 16, sc + b - 16, 16);
    } else if (b >= 8) {
        memcpy(dc, sc, 8);
        memcpy(dc + b - 8, sc + b - 8, 8);
    } else if (b >= 4) {
        memcpy(dc, sc, 4);
        memcpy(dc + b - 4, sc + b - 4, 4);
    }
}

static inline __attribute__((always_inline)) void FN(zero_short)(T *d, ptrdiff_t n)
{
    if (n >= VL) {
        ptrdiff_t t = 0;
        for (; t + VL <= n; t += VL) FN(store)(d + t, (V){0});
        if (t < n) FN(store)(d + n - VL, (V){0});
        return;
    }
    char *dc = (char *)d;
    const size_t b = (size_t)n * sizeof(T);
    if (b >= 32) {
        memset(dc, 0, 32);
        memset(dc + b - 32, 0, 32);
    } else if (b >= 16) {
        memset(dc, 0, 16);
        memset(dc + b - 16, 0, 16);
    } else if (b >= 8) {
        memset(dc, 0, 8);
        memset(dc + b - 8, 0, 8);
    } else if (b >= 4) {
        memset(dc, 0, 4);
        memset(dc + b - 4, 0, 4);
    }
}
static inline V FN(splat)(T s)
{ /* an initializer list is one broadcast; a lane loop became 16 masked inserts at 64 bytes */
#if VBYTES / TSIZE == 2
    return (V){s, s};
#elif VBYTES / TSIZE == 4
    return (V){s, s, s, s};
#elif VBYTES / TSIZE == 8
    return (V){s, s, s, s, s, s, s, s};
#elif VBYTES / TSIZE == 16
    return (V){s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s};
#else
#error "unsupported vector width"
#endif
}

/* {0, 1, ..., VL - 1}, from a constant: shuffle indices computed from it take a few vector
 * operations, where a lane-by-lane loop became a broadcast and a mask move per lane. */
static const TI FN(iota_table)[16] __attribute__((aligned(64))) = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
static inline IV FN(iota)(void) { IV v; memcpy(&v, FN(iota_table), sizeof v); return v; }

/* r (VL rows of VL lanes) transposed in place: stage h swaps index bit h between row and lane
 * (row r, lane l with bit h set <-> row r + h, lane l - h), two-vector shuffles only. The shuffles'
 * lane indices are computed from iota (built lane by lane in the loop, GCC assembled them with ~30
 * broadcasts and mask moves per stage at every call: more instructions than the shuffles). */
static inline __attribute__((always_inline)) void FN(transpose)(V r[VL])
{
    const IV l = FN(iota)();
#pragma GCC unroll 8
    for (ptrdiff_t h = 1; h < VL; h *= 2) {
        /* lane l of the pair's first: (l & h) ? VL + l - h (b's lane l - h) : l; of its second: + h */
        const IV lo = l + (((l & (TI)h) != 0) & (TI)(VL - h)), hi = lo + (TI)h;
#pragma GCC unroll 16
        for (ptrdiff_t i = 0; i < VL; i++) {
            if (i & h) continue;
            const V a = r[i], b = r[i + h];
            r[i] = __builtin_shuffle(a, b, lo);
            r[i + h] = __builtin_shuffle(a, b, hi);
        }
    }
}

/* p[0], p[2], ..., p[2 * (VL - 1)] (reads up to p[2 * VL - 1]). */
static inline __attribute__((always_inline)) V FN(even)(const T *p)
{
    const V a = FN(load)(p), b = FN(load)(p + VL);
#if VBYTES / TSIZE == 2
    return __builtin_shuffle(a, b, (IV){0, 2});
#elif VBYTES / TSIZE == 4
    return __builtin_shuffle(a, b, (IV){0, 2, 4, 6});
#elif VBYTES / TSIZE == 8
    return __builtin_shuffle(a, b, (IV){0, 2, 4, 6, 8, 10, 12, 14});
#else
    return __builtin_shuffle(a, b, (IV){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30});
#endif
}

#if TSIZE == 4
/* lanes of b where m is set, else of a */
static inline __attribute__((always_inline)) V FN(vselect)(IV m, V b, V a) { return (V)(((IV)b & m) | ((IV)a & ~m)); }

/* exp(a) for a in [-87.3, 88.7228317] (the callers clamp; NaN passes), Cephes' expf: a = n ln2 + r,
 * |r| <= ln2 / 2, exp(r) by its polynomial, times 2^n from the exponent bits (2^127 * 2 for n = 128). */
static inline __attribute__((always_inline)) V FN(vexp)(V a)
{
    const V magic = FN(splat)(12582912.0f); /* 1.5 * 2^23: (t + magic) - magic rounds t to an integer */
    const V n = (a * FN(splat)(1.44269504088896341f) + magic) - magic;
    V r = a - n * FN(splat)(0.693359375f);
    r = r - n * FN(splat)(-2.12194440e-4f);
    V p = FN(splat)(1.9875691500E-4f);
    p = p * r + FN(splat)(1.3981999507E-3f);
    p = p * r + FN(splat)(8.3334519073E-3f);
    p = p * r + FN(splat)(4.1665795894E-2f);
    p = p * r + FN(splat)(1.6666665459E-1f);
    p = p * r + FN(splat)(5.0000001201E-1f);
    p = p * (r * r) + r + FN(splat)(1.0f);
    const IV ni = __builtin_convertvector(n, IV), top = ni > 127;
    const V e = p * (V)((ni - (top & 1) + 127) << 23);
    return FN(vselect)(top, e + e, e);
}

/* exp(-v) as the SiLU and sigmoid need it: inf past float32's range (88.7228317 is the last argument with a
 * finite exp), below -87.3 its value there (1 + it is 1); NaN stays NaN */
static inline __attribute__((always_inline)) V FN(exp_neg)(V v)
{
    const V a = -v, hi = FN(splat)(88.7228317f), lo = FN(splat)(-87.3f);
    const IV over = a > hi;
    const V e = FN(vexp)(FN(vselect)(a < lo, lo, FN(vselect)(over, hi, a)));
    return FN(vselect)(over, FN(splat)(__builtin_inff()), e);
}
#endif

/* SiLU x / (1 + exp(-x)) lane by lane, as the silu op's pass (elementwise.h logistic_run) computes it:
 * float32 with exp_neg, float64 with libm's exp. */
static inline __attribute__((always_inline)) V FN(silu_lanes)(V v)
{
#if TSIZE == 4
    return v / (FN(splat)(1.0f) + FN(exp_neg)(v));
#else
    V r;
    for (int l = 0; l < (int)VL; l++) r[l] = v[l] / (1 + exp(-v[l]));
    return r;
#endif
}

/* silu_lanes out of line, called by the kernels' stores: its exp inlined into every store loop made
 * MobileNetV2's ReLU6 kernels 8% slower and the core 1.3 MB larger (loops copied per activation). */
static __attribute__((noinline)) V FN(silu_call)(V v) { return FN(silu_lanes)(v); }

/* The activation of a fused epilogue (npconv.kernels.pointwise.Activation codes): 1 ReLU as
 * np.maximum(v, 0) (NaN stays NaN, -0.0 becomes 0), 2 Hardtanh as np.clip(v, lo, hi) (NaN and -0.0
 * pass), 3 SiLU (silu_call), 0 none. */
static inline __attribute__((always_inline)) V FN(activate)(V v, int act, T lo, T hi)
{
    if (act == 1) return (V)((IV)v & ((v > 0) | (v != v)));
    if (act == 2) {
        const V l = FN(splat)(lo), h = FN(splat)(hi);
        IV below = v < l;
        v = (V)(((IV)l & below) | ((IV)v & ~below));
        IV above = v > h;
        return (V)(((IV)h & above) | ((IV)v & ~above));
    }
    if (__builtin_expect(act == 3, 0)) return FN(silu_call)(v);
    return v;
}

/* CALL, an expression reading `act_k`, run with act_k the activation code act as a constant: one inlined
 * copy per activation for register blocks that activate in their stores (with a runtime one GCC kept
 * their accumulators in memory: docs/performance.md, "Zen 4, session 38"). */
#define WITH_CONST_ACT(act, CALL)                                                                        \
    do {                                                                                                \
        if ((act) == GC_ACT_NONE) {                                                                     \
            const int act_k = GC_ACT_NONE;                                                              \
            CALL;                                                                                       \
        } else if ((act) == GC_ACT_RELU) {                                                              \
            const int act_k = GC_ACT_RELU;                                                              \
            CALL;                                                                                       \
        } else if ((act) == GC_ACT_SILU) {                                                              \
            const int act_k = GC_ACT_SILU;                                                              \
            CALL;                                                                                       \
        } else {                                                                                        \
            const int act_k = GC_ACT_HARDTANH;                                                          \
            CALL;                                                                                       \
        }                                                                                               \
    } while (0)

/* d[j] = activate(d[j] + r[j]) for j < n (act as FN(activate)): a residual addition fused after a kernel's
 * stores, the same IEEE addition and activation as those run after the convolution. */
static inline void FN(add_activate_run)(T *d, const T *r, ptrdiff_t n, int act, T lo, T hi)
{
    ptrdiff_t j = 0;
    for (; j + VL <= n; j += VL) FN(store)(d + j, FN(activate)(FN(load)(d + j) + FN(load)(r + j), act, lo, hi));
    for (; j < n; j++) { /* as FN(activate), value by value */
        T v = d[j] + r[j];
        if (act == 1) {
            v = v > 0 || v != v ? v : (T)0;
        } else if (act == 2) {
            v = v < lo ? lo : v;
            v = v > hi ? hi : v;
        } else if (act == 3) {
            v = FN(silu_lanes)(FN(splat)(v))[0];
        }
        d[j] = v;
    }
}

/* The sum of a vector's lanes as a tree of halves (lane l with l + VL/2, then VL/4, ...: independent
 * vector adds; a lane-by-lane loop into a double was a dependent chain of VL conversions and adds that
 * cost more than a 28x28 plane's dot products in grad_weight). Lane shuffles, not halves copied out
 * through memory: taking the vector's address made GCC keep a caller's accumulators on the stack
 * across its whole loop (linear_rows at 8 rows ran 5x slower, docs/performance.md). */
static inline __attribute__((always_inline)) T FN(hsum)(V a)
{
    const IV l = FN(iota)();
#pragma GCC unroll 4
    for (ptrdiff_t h = VL / 2; h >= 2; h /= 2) a += __builtin_shuffle(a, (l + (TI)h) & (TI)(VL - 1));
    return a[0] + a[1];
}

#include "gemm.h"
#include "depthwise.h"
#include "grouped.h"
#include "pool.h"
#include "norm.h"
#include "elementwise.h"
#include "linear.h"
#include "im2col.h"
#include "winograd.h"
#include "spectral.h"
#include "block.h"

#undef WITH_CONST_ACT
#undef GP_OB /* grouped.h's register block, used by block.h's stem too */
#undef GP_NB

#undef GM_MR
#undef GM_NV
#undef GM_NR
#undef GM_MC
#undef GM_DJ
#undef GM_DOT_MAX
#undef V
#undef IV
#undef VL
#undef FN
#undef CAT
#undef CAT_
