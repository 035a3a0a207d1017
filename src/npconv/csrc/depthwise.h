/* Direct 2-D depthwise convolution, one copy per (element type, ISA): kernels.h includes this file
 * once per combination with T (float/double), TSIZE (its size), TI (the same-sized signed integer),
 * VBYTES (vector width in bytes) and SFX (name suffix) defined, inside a `#pragma GCC target`
 * region for the ISA.
 *
 * Layout: NCHW, C-contiguous; weight (C*M, 1, KH, KW); output channel c*M + j reads input channel c.
 * Each input plane is copied once into its zero-padded polyphase form (SH*SW phase planes, see
 * dw_phases in core.c): every tap of every stride and dilation is then one constant shift of a flat
 * "wide" output (rows of Qw columns, the last Qw - OW of them junk), so a whole plane is one long
 * stencil of shifted vector loads, and the valid columns are copied out at the end.
 */

/* Lines of the first 32 KB of count values: what the prefetches below bring of the next plane(s). */
static inline ptrdiff_t FN(prefetch_lines)(ptrdiff_t count)
{
    const ptrdiff_t bytes = count * (ptrdiff_t)sizeof(T);
    return ((bytes < 32768 ? bytes : 32768) + 63) / 64;
}

/* The next plane(s) on their way to the cache while this one computes: to read (into L1; the copy-in
 * stalled on them: measured 1.1-1.5x, before the stride-1 forward's rows were copied by vector moves;
 * that one is faster without it now), or to write (toward L2: a layer's output is cold in a network,
 * each line read from memory before its first store; docs/performance.md). */
static inline void FN(prefetch_for)(const T *p, ptrdiff_t count, int write)
{
    const char *b = (const char *)p;
    const ptrdiff_t lines = FN(prefetch_lines)(count);
    for (ptrdiff_t i = 0; i < lines; i++) {
        if (write)
            __builtin_prefetch(b + i * 64, 1, 2);
        else
            __builtin_prefetch(b + i * 64, 0, 3);
    }
}
static inline void FN(prefetch)(const T *p, ptrdiff_t count) { FN(prefetch_for)(p, count, 0); }
static inline void FN(prefetch_out)(const T *p, ptrdiff_t count) { FN(prefetch_for)(p, count, 1); }

/* prefetch_out spread: `per` of the lines from line *at on each call (p NULL: none), where all at once
 * stalled on the line fill buffers (the depthwise forward's row paths). */
static inline void FN(prefetch_out_share)(const T *p, ptrdiff_t lines, ptrdiff_t per, ptrdiff_t *at)
{
    for (ptrdiff_t i = 0; p && i < per && *at < lines; i++, (*at)++)
        __builtin_prefetch((const char *)p + *at * 64, 1, 2);
}

/* The same for lines to read. */
static inline void FN(prefetch_in_share)(const T *p, ptrdiff_t lines, ptrdiff_t per, ptrdiff_t *at)
{
    for (ptrdiff_t i = 0; p && i < per && *at < lines; i++, (*at)++)
        __builtin_prefetch((const char *)p + *at * 64, 0, 2);
}

/* The activation over n values in place (the epilogue of the paths that do not fuse it into their
 * stores; the plane is still in cache). */
static void FN(activate_run)(T *p, ptrdiff_t n, int act, T lo, T hi)
{
    if (!act) return;
    ptrdiff_t m = 0;
    for (; m + VL <= n; m += VL) FN(store)(p + m, FN(activate)(FN(load)(p + m), act, lo, hi));
    if (m < n) {
        T tmp[VL] = {0};
        memcpy(tmp, p + m, (size_t)(n - m) * sizeof(T));
        FN(store)(tmp, FN(activate)(FN(load)(tmp), act, lo, hi));
        memcpy(p + m, tmp, (size_t)(n - m) * sizeof(T));
    }
}

/* out[m] = init + sum_t wt[t] * src[t][m] for m < n; 4 vectors per step keep 4 independent FMA
 * chains in flight (one chain is latency-bound). Reads up to 4*VL - 1 elements past n (row slack). */
static inline __attribute__((always_inline)) void
FN(stencil_body)(T *out, ptrdiff_t n, const T *const *src, const T *wt, int taps, T init)
{
    for (ptrdiff_t m = 0; m < n; m += 4 * VL) {
        V a0 = FN(splat)(init), a1 = a0, a2 = a0, a3 = a0;
        for (int t = 0; t < taps; t++) {
            const V w = FN(splat)(wt[t]);
            const T *s = src[t] + m;
            a0 += w * FN(load)(s);
            a1 += w * FN(load)(s + VL);
            a2 += w * FN(load)(s + 2 * VL);
            a3 += w * FN(load)(s + 3 * VL);
        }
        if (m + 4 * VL <= n) {
            FN(store)(out + m, a0);
            FN(store)(out + m + VL, a1);
            FN(store)(out + m + 2 * VL, a2);
            FN(store)(out + m + 3 * VL, a3);
        } else { /* last, partial block: only the real outputs are written */
            T tmp[4 * VL];
            FN(store)(tmp, a0);
            FN(store)(tmp + VL, a1);
            FN(store)(tmp + 2 * VL, a2);
            FN(store)(tmp + 3 * VL, a3);
            memcpy(out + m, tmp, (size_t)(n - m) * sizeof(T));
        }
    }
}

/* Narrow rows (n <= VL): one vector, so tiny planes do not compute 4x junk lanes. */
static inline __attribute__((always_inline)) void
FN(stencil_narrow)(T *out, ptrdiff_t n, const T *const *src, const T *wt, int taps, T init)
{
    V a = FN(splat)(init);
    for (int t = 0; t < taps; t++)
        a += FN(splat)(wt[t]) * FN(load)(src[t]);
    T tmp[VL];
    FN(store)(tmp, a);
    memcpy(out, tmp, (size_t)n * sizeof(T));
}

/* The tap count as a compile-time constant unrolls the tap loop and keeps weights in registers
 * (runtime-bounded tap loops measured 2-3x slower in the prototypes). */
static void FN(stencil)(T *out, ptrdiff_t n, const T *const *src, const T *wt, int taps, T init)
{
    if (n <= VL) {
        FN(stencil_narrow)(out, n, src, wt, taps, init);
        return;
    }
    switch (taps) {
    case 9: FN(stencil_body)(out, n, src, wt, 9, init); break;
    case 6: FN(stencil_body)(out, n, src, wt, 6, init); break;
    case 3: FN(stencil_body)(out, n, src, wt, 3, init); break;
    case 25: FN(stencil_body)(out, n, src, wt, 25, init); break;
    case 49: FN(stencil_body)(out, n, src, wt, 49, init); break;
    default: FN(stencil_body)(out, n, src, wt, taps, init); break;
    }
}

/* Output rows of n >= VL outputs: out[m] = init + sum_t wt[t] * src[t][off + m], whole vectors only
 * (the last block shifted back to end at n, recomputing a few outputs), stored straight into the
 * row: no junk columns, no partial stores, no copy-out. NV (1-4) vectors per block, R (1-2) rows
 * (R * NV independent FMA chains: one row's 4 were latency-bound, measured 1.3-2x slower). */
#define DW_ROW_BLOCK(R, NV, at)                                                                 \
    do {                                                                                        \
        ptrdiff_t q[4] = {(at), (at) + VL, (at) + 2 * VL, (at) + 3 * VL};                       \
        for (int i = 0; i < 4; i++) q[i] = q[i] < n - VL ? q[i] : n - VL;                       \
        V a[R][NV];                                                                             \
        for (int r = 0; r < (R); r++)                                                           \
            for (int i = 0; i < (NV); i++) a[r][i] = FN(splat)(init);                           \
        for (int t = 0; t < taps; t++) {                                                        \
            const T *s = src[t] + off;                                                          \
            for (int r = 0; r < (R); r++)                                                       \
                for (int i = 0; i < (NV); i++) a[r][i] += wv[t] * FN(load)(s + r * pitch + q[i]); \
        }                                                                                       \
        for (int r = 0; r < (R); r++)                                                           \
            for (int i = 0; i < (NV); i++) FN(store)(out + r * n + q[i], FN(activate)(a[r][i], act, lo, hi)); \
    } while (0)

#define DW_ROW_BODY(R)                                                                          \
    static inline __attribute__((always_inline)) void FN(CAT(row_body, R))(                     \
        T *out, ptrdiff_t n, const T *const *src, ptrdiff_t off, ptrdiff_t pitch, const V *wv,  \
        int taps, T init, int act, T lo, T hi)                                                  \
    {                                                                                           \
        ptrdiff_t m = 0;                                                                        \
        for (; m + 4 * VL <= n; m += 4 * VL) DW_ROW_BLOCK(R, 4, m);                             \
        switch ((n - m + VL - 1) / VL) {                                                        \
        case 4: DW_ROW_BLOCK(R, 4, m); break;                                                   \
        case 3: DW_ROW_BLOCK(R, 3, m); break;                                                   \
        case 2: DW_ROW_BLOCK(R, 2, m); break;                                                   \
        case 1: DW_ROW_BLOCK(R, 1, m); break;                                                   \
        default: break;                                                                         \
        }                                                                                       \
    }
DW_ROW_BODY(1)
DW_ROW_BODY(2)
#undef DW_ROW_BODY
#undef DW_ROW_BLOCK

/* rows [0, rows) of out (row pitch n) from src rows at pitch `pitch`: the tap count as a constant */
static void FN(stencil_rows)(T *out, ptrdiff_t rows, ptrdiff_t n, const T *const *src, ptrdiff_t pitch,
                             const T *wt, int taps, T init, int act, T lo, T hi)
{
    /* weights splatted once per plane (constant tap counts keep them in registers); rows in pairs */
#define DW_ROWS(K)                                                                               \
    do {                                                                                         \
        V wv[DW_ROW_TAPS];                                                                       \
        for (int t = 0; t < (K); t++) wv[t] = FN(splat)(wt[t]);                                  \
        ptrdiff_t r = 0;                                                                         \
        for (; r + 2 <= rows; r += 2) FN(row_body_2)(out + r * n, n, src, r * pitch, pitch, wv, K, init, act, lo, hi); \
        if (r < rows) FN(row_body_1)(out + r * n, n, src, r * pitch, pitch, wv, K, init, act, lo, hi); \
    } while (0)
    switch (taps) {
    case 9: DW_ROWS(9); break;
    case 6: DW_ROWS(6); break;
    case 3: DW_ROWS(3); break;
    case 25: DW_ROWS(25); break;
    case 49: DW_ROWS(49); break;
    default: DW_ROWS(taps); break; /* at most DW_ROW_TAPS (the caller's rule) */
    }
#undef DW_ROWS
}

/* Stride 1, dilation 1 along the rows (the phase rows are the padded rows): output row r + 1's tap
 * (kh, kw) reads what row r's tap (kh + 1, kw) reads, so R output rows load each of their KH + R - 1
 * input rows once per column tap ((KH + R - 1) * KW loads per R vectors instead of R * KH * KW),
 * every loop unrolled so the weights and the R x NV accumulators stay in registers. base is tap
 * (0, 0)'s source, cs[kw] the column offset of tap (0, kw). */
#define DW_PRAGMA(x) _Pragma(#x)
#define DW_SHARED_BLOCK(KH, KW, R, NV, U, at)                                                           \
    do {                                                                                                \
        ptrdiff_t q[NV];                                                                                \
        for (int v = 0; v < (NV); v++) q[v] = (at) + v * VL < n - VL ? (at) + v * VL : n - VL;          \
        V a[R][NV];                                                                                     \
        for (int r = 0; r < (R); r++)                                                                   \
            for (int v = 0; v < (NV); v++) a[r][v] = vinit;                                             \
        DW_PRAGMA(GCC unroll U) for (int i = 0; i < (KH) + (R) - 1; i++)                                \
        _Pragma("GCC unroll 8") for (int kw = 0; kw < (KW); kw++)                                       \
        {                                                                                               \
            const T *s = base + off + i * pitch + cs[kw];                                               \
            V l[NV];                                                                                    \
            for (int v = 0; v < (NV); v++) l[v] = FN(load)(s + q[v]);                                   \
            _Pragma("GCC unroll 8") for (int r = 0; r < (R); r++)                                       \
                if (i - r >= 0 && i - r < (KH))                                                         \
                    for (int v = 0; v < (NV); v++) a[r][v] += wv[(i - r) * (KW) + kw] * l[v];           \
        }                                                                                               \
        for (int r = 0; r < (R); r++)                                                                   \
            for (int v = 0; v < (NV); v++) FN(store)(out + r * n + q[v], FN(activate)(a[r][v], act, lo, hi)); \
    } while (0)

/* One band of R rows: whole blocks of NV vectors, the ragged end as one block of fewer vectors. */
#define DW_SHARED_BAND(KH, KW, R, NV, U)                                                                \
    do {                                                                                                \
        ptrdiff_t m = 0;                                                                                \
        for (; m + (NV) * VL <= n; m += (NV) * VL) DW_SHARED_BLOCK(KH, KW, R, NV, U, m);                \
        switch ((n - m + VL - 1) / VL) { /* at most NV */                                               \
        case 4: DW_SHARED_BLOCK(KH, KW, R, 4, U, m); break;                                             \
        case 3: DW_SHARED_BLOCK(KH, KW, R, 3, U, m); break;                                             \
        case 2: DW_SHARED_BLOCK(KH, KW, R, 2, U, m); break;                                             \
        case 1: DW_SHARED_BLOCK(KH, KW, R, 1, U, m); break;                                             \
        default: break;                                                                                 \
        }                                                                                               \
    } while (0)

/* The body is inlined once per activation (WITH_CONST_ACT): with a runtime one the 3x3 rows ran 6-9% slower. */
#define DW_SHARED_ROWS(KH, KW, R, NV, U)                                                                \
    static inline __attribute__((always_inline)) void FN(CAT(shared_body, KH))(                         \
        T *out0, ptrdiff_t rows, ptrdiff_t n, const T *base, const ptrdiff_t *cs, ptrdiff_t pitch,      \
        const T *wt, T init, int act, T lo, T hi)                                                       \
    {                                                                                                   \
        V wv[(KH) * (KW)];                                                                              \
        for (int t = 0; t < (KH) * (KW); t++) wv[t] = FN(splat)(wt[t]);                                 \
        const V vinit = FN(splat)(init);                                                                \
        ptrdiff_t r = 0;                                                                                \
        for (; r + (R) <= rows; r += (R)) {                                                             \
            T *out = out0 + r * n;                                                                      \
            const ptrdiff_t off = r * pitch;                                                            \
            DW_SHARED_BAND(KH, KW, R, NV, U);                                                           \
        }                                                                                               \
        for (; r < rows; r++) {                                                                         \
            T *out = out0 + r * n;                                                                      \
            const ptrdiff_t off = r * pitch;                                                            \
            DW_SHARED_BAND(KH, KW, 1, NV, U);                                                           \
        }                                                                                               \
    }                                                                                                   \
    static void FN(CAT(shared_rows, KH))(T *out0, ptrdiff_t rows, ptrdiff_t n, const T *base,           \
                                         const ptrdiff_t *cs, ptrdiff_t pitch, const T *wt, T init,     \
                                         int act, T lo, T hi)                                           \
    {                                                                                                   \
        WITH_CONST_ACT(act, FN(CAT(shared_body, KH))(out0, rows, n, base, cs, pitch, wt, init, act_k, lo, hi)); \
    }
/* Register blocks per kernel size (rows, vectors per row, unrolling of the input-row loop): at 64
 * bytes (32 registers) 3x3 and 5x5 keep every weight and 16 / 8 accumulators in registers; 7x7's 49
 * weights cannot be, nor 5x5's below 64 bytes (16 registers), so those keep the row loop rolled with
 * the weights read from the stack (unrolled, they spilled: 7x7 1.2x slower). Measured on the Zen 5
 * machine, docs/performance.md. */
#if TSIZE == 4 /* float64 takes stencil_rows: its shared-load blocks were half of its build time (performance.md) */
#if VBYTES == 64
DW_SHARED_ROWS(3, 3, 4, 4, 16)
DW_SHARED_ROWS(5, 5, 4, 2, 16)
DW_SHARED_ROWS(7, 7, 2, 4, 1)
#else
DW_SHARED_ROWS(3, 3, 2, 2, 16)
DW_SHARED_ROWS(5, 5, 2, 4, 1)
DW_SHARED_ROWS(7, 7, 2, 4, 1)
#endif
#endif
#undef DW_SHARED_ROWS
#undef DW_SHARED_BAND
#undef DW_SHARED_BLOCK
#undef DW_PRAGMA

/* rows x n outputs from `taps` taps (source rows at pitch `pitch`): the shared-load pairs (float32) when
 * `shareable` (the taps are one KH x KW kernel in row-major order, tap (kh + 1, kw) reading one row
 * below tap (kh, kw)) and the kernel is a square 3/5/7, else stencil_rows. */
static void FN(tap_rows)(T *out, ptrdiff_t rows, ptrdiff_t n, const T *const *src, ptrdiff_t pitch, const T *wt,
                         int taps, ptrdiff_t kh, ptrdiff_t kw, int shareable, T init, int act, T lo, T hi)
{
#if TSIZE == 4
    if (shareable && taps == kh * kw && kh == kw && (kh == 3 || kh == 5 || kh == 7)) {
        ptrdiff_t cs[7];
        for (ptrdiff_t c = 0; c < kw; c++) cs[c] = src[c] - src[0];
        switch (kh) {
        case 3: FN(shared_rows_3)(out, rows, n, src[0], cs, pitch, wt, init, act, lo, hi); return;
        case 5: FN(shared_rows_5)(out, rows, n, src[0], cs, pitch, wt, init, act, lo, hi); return;
        default: FN(shared_rows_7)(out, rows, n, src[0], cs, pitch, wt, init, act, lo, hi); return;
        }
    }
#else
    (void)kh, (void)kw, (void)shareable;
#endif
    FN(stencil_rows)(out, rows, n, src, pitch, wt, taps, init, act, lo, hi);
}

/* acc[t] += sum over the plane of gy[oh][ow] * src[t][oh * pitch + ow] (vector lanes kept apart;
 * the caller reduces). Lanes past OW are zeroed on both operands: they must not read values (an inf
 * there would turn 0 * inf into a NaN the convolution never computes). */
static inline __attribute__((always_inline)) void
FN(dot_body)(V *acc, const T *gy, ptrdiff_t oh, ptrdiff_t ow, const T *const *src, ptrdiff_t pitch, int taps)
{
    const ptrdiff_t full = ow / VL * VL, rest = ow - full;
    const IV mask = FN(iota)() < (TI)rest;
    for (ptrdiff_t r = 0; r < oh; r++) {
        const T *g = gy + r * ow;
        const ptrdiff_t base = r * pitch;
        for (ptrdiff_t m = 0; m < full; m += VL) {
            const V gv = FN(load)(g + m);
            for (int t = 0; t < taps; t++) acc[t] += gv * FN(load)(src[t] + base + m);
        }
        if (rest) {
            V gv = {0};
            memcpy(&gv, g + full, (size_t)rest * sizeof(T)); /* never read past gy's end */
            for (int t = 0; t < taps; t++)
                acc[t] += gv * (V)((IV)FN(load)(src[t] + base + full) & mask);
        }
    }
}

static void FN(dot)(V *acc, const T *gy, ptrdiff_t oh, ptrdiff_t ow, const T *const *src, ptrdiff_t pitch,
                    int taps)
{
    if (taps == 9) { /* a constant count keeps the accumulators in registers */
        V a[9];
        for (int t = 0; t < 9; t++) a[t] = acc[t];
        FN(dot_body)(a, gy, oh, ow, src, pitch, 9);
        for (int t = 0; t < 9; t++) acc[t] = a[t];
    } else {
        FN(dot_body)(acc, gy, oh, ow, src, pitch, taps);
    }
}

/* acc[t] += g[m] * src[t][m] for m < n (n a multiple of VL; g zero in the junk columns): the flat
 * form of dot_body for a gy plane copied into the wide layout, without a ragged end per row. */
static inline __attribute__((always_inline)) void
FN(dot_flat_body)(V *acc, const T *g, ptrdiff_t n, const T *const *src, int taps)
{
    for (ptrdiff_t m = 0; m < n; m += VL) {
        const V gv = FN(load)(g + m);
        for (int t = 0; t < taps; t++) acc[t] += gv * FN(load)(src[t] + m);
    }
}

static void FN(dot_flat)(V *acc, const T *g, ptrdiff_t n, const T *const *src, int taps)
{
    if (taps == 9) { /* a constant count keeps the accumulators in registers */
        V a[9];
        for (int t = 0; t < 9; t++) a[t] = acc[t];
        FN(dot_flat_body)(a, g, n, src, 9);
        for (int t = 0; t < 9; t++) acc[t] = a[t];
    } else {
        FN(dot_flat_body)(acc, g, n, src, taps);
    }
}

/* Stride 2: split input row xr into the two column phases of a padded row (padded column
 * pc = iw + PW goes to phase pc % 2 at pc / 2), the whole vectors by shuffles (a scalar strided
 * copy per element cost as much as the stencil). Only columns < 2 * qw are written. */
static void FN(deinterleave)(T *odd, T *even, const T *xr, const dw_geom *g, ptrdiff_t qw)
{
    const IV lo = FN(iota)() * 2, hi = lo + 1; /* even and odd lanes of the pair (a, b) */
    if (g->w >= 2 * VL && g->w <= 2 * qw - g->pw) {
        /* every column is read (the common case): x[2j] goes to phase pw % 2 at j + pw / 2, x[2j + 1]
         * to the other at j + (pw + 1) / 2; whole pairs of vectors, the ragged end as one pair ending
         * at the last even count (rewriting a few), an odd width's last column alone */
        T *even_lanes = g->pw & 1 ? odd : even, *odd_lanes = g->pw & 1 ? even : odd;
        even_lanes += g->pw / 2, odd_lanes += (g->pw + 1) / 2;
        const ptrdiff_t pairs = g->w & ~(ptrdiff_t)1;
        for (ptrdiff_t at = 0;; at += 2 * VL) {
            if (at + 2 * VL > pairs) {
                if (at >= pairs) break;
                at = pairs - 2 * VL;
            }
            const V a = FN(load)(xr + at), b = FN(load)(xr + at + VL);
            FN(store)(even_lanes + at / 2, __builtin_shuffle(a, b, lo));
            FN(store)(odd_lanes + at / 2, __builtin_shuffle(a, b, hi));
        }
        if (g->w & 1) even_lanes[(g->w - 1) / 2] = xr[g->w - 1];
        return;
    }
    ptrdiff_t iw = 0;
    const ptrdiff_t stop = g->w < 2 * qw - g->pw ? g->w : 2 * qw - g->pw;
    if (g->pw & 1 && iw < stop) { /* input column 0 is odd: it starts phase 1 */
        odd[g->pw / 2] = xr[0];
        iw = 1;
    }
    for (ptrdiff_t last = 0; iw + 2 * VL <= stop; iw += 2 * VL) {
        const V a = FN(load)(xr + iw), b = FN(load)(xr + iw + VL);
        const ptrdiff_t at = (iw + g->pw) / 2;
        FN(store)(even + at, __builtin_shuffle(a, b, lo));
        FN(store)(odd + at, __builtin_shuffle(a, b, hi));
        /* the ragged end as one more block ending at stop (or one before, keeping the parity),
         * rewriting a few columns: a scalar tail cost as much as the whole stencil */
        if (!last && iw + 4 * VL > stop && iw + 2 * VL < stop) {
            const ptrdiff_t final = stop - 2 * VL - ((stop - 2 * VL - iw) & 1); /* same parity as iw */
            if (final > iw) {
                iw = final - 2 * VL;
                last = 1;
            }
        }
    }
    for (; iw < stop; iw++) {
        const ptrdiff_t pc = iw + g->pw;
        (pc & 1 ? odd : even)[pc / 2] = xr[iw];
    }
}

/* dst[2b] = even[b], dst[2b + 1] = odd[b] for 2b (+ 1) < w, whole vectors by shuffles. */
static void FN(interleave)(T *dst, const T *even, const T *odd, ptrdiff_t w)
{
    const IV l = FN(iota)(); /* lanes of (even, odd) for the first and second half of a pair of outputs */
    const IV lo = (l >> 1) + (l & 1) * (TI)VL, hi = lo + (TI)(VL / 2);
    ptrdiff_t b = 0;
    for (; 2 * b + 2 * VL <= w; b += VL) {
        const V e = FN(load)(even + b), o = FN(load)(odd + b);
        FN(store)(dst + 2 * b, __builtin_shuffle(e, o, lo));
        FN(store)(dst + 2 * b + VL, __builtin_shuffle(e, o, hi));
    }
    if (b > 0 && 2 * b < w) { /* the ragged end as one block ending at w (or w - 1), rewriting a few */
        b = (w - 2 * VL) / 2;
        const V e = FN(load)(even + b), o = FN(load)(odd + b);
        FN(store)(dst + 2 * b, __builtin_shuffle(e, o, lo));
        FN(store)(dst + 2 * b + VL, __builtin_shuffle(e, o, hi));
        b += VL;
    }
    for (; 2 * b < w; b++) {
        dst[2 * b] = even[b];
        if (2 * b + 1 < w) dst[2 * b + 1] = odd[b];
    }
}

/* Copy plane x (H, W) into its zero-padded polyphase form: phase (rh, rw) holds padded rows
 * rh, rh + SH, ... and columns rw, rw + SW, ... as a (Qh, Qw) plane at ph->plane * (rh*SW + rw);
 * padded (row, column) = input (row + PH, column + PW). Writes only the elements that hold input
 * values, the same ones for every plane of one geometry: the caller zeroes dst once (clear_phases)
 * and fills plane after plane into it (a memset per plane cost 7% of the 3x3 forward). */
static void FN(clear_phases)(T *dst, const dw_phases *ph)
{
    memset(dst, 0, (size_t)(ph->count * ph->plane) * sizeof(T));
}

/* clear_phases for phase rows [lo, hi) of every phase plane only (a band's padding cells; what lies
 * beyond them is read by no output the band keeps). A band reaching the last row clears the plane's
 * slack after it too: its junk lanes read there, and stale memory read as floats is often subnormal
 * (a pointer's high half), a microcode assist per operation (the grouped 32 x 8 forward 2.8x slower). */
static void FN(clear_phase_rows)(T *dst, const dw_phases *ph, ptrdiff_t lo, ptrdiff_t hi)
{
    const ptrdiff_t end = hi >= ph->qh ? ph->plane : hi * ph->qw;
    if (end <= lo * ph->qw) return;
    for (ptrdiff_t p = 0; p < ph->count; p++)
        memset(dst + p * ph->plane + lo * ph->qw, 0, (size_t)(end - lo * ph->qw) * sizeof(T));
}

/* fill_phases for phase rows [lo, hi) only (a worker's band of output rows reads no others). */
static void FN(fill_phase_rows)(T *dst, const T *x, const dw_geom *g, const dw_phases *ph, ptrdiff_t lo, ptrdiff_t hi)
{
    if (hi > ph->qh) hi = ph->qh;
    for (ptrdiff_t rh = 0; rh < g->sh; rh++)
        for (ptrdiff_t rw = 0; rw < g->sw; rw++) {
            T *plane = dst + ph->plane * (rh * g->sw + rw);
            /* first phase row / column inside the input, and the input row / column it holds */
            ptrdiff_t a0 = 0, ih = rh - g->ph;
            for (; ih < 0; ih += g->sh) a0++;
            if (a0 < lo) ih += (lo - a0) * g->sh, a0 = lo;
            ptrdiff_t b0 = 0, iw0 = rw - g->pw;
            for (; iw0 < 0; iw0 += g->sw) b0++;
            for (ptrdiff_t a = a0; a < hi && ih < g->h; a++, ih += g->sh) {
                const T *xr = x + ih * g->w;
                T *row = plane + a * ph->qw;
                if (g->sw == 1) {
                    ptrdiff_t count = g->w < ph->qw - b0 ? g->w : ph->qw - b0;
                    FN(copy_short)(row + b0, xr, count);
                } else if (g->sw == 2) { /* both column phases at once (by vector shuffles) */
                    if (rw == 0) FN(deinterleave)(plane + ph->plane + a * ph->qw, row, xr, g, ph->qw);
                } else {
                    ptrdiff_t b = b0;
                    for (ptrdiff_t iw = iw0; iw < g->w && b < ph->qw; iw += g->sw) row[b++] = xr[iw];
                }
            }
        }
}

static void FN(fill_phases)(T *dst, const T *x, const dw_geom *g, const dw_phases *ph)
{
    FN(fill_phase_rows)(dst, x, g, ph, 0, ph->qh);
}

/* Narrow planes (OW < VL), one output channel per input channel: a vector holds one position of VL
 * consecutive planes (lane c: plane p0 + c, channel (p0 + c) % C), so every lane is an output and
 * every tap is one vector load, where a plane's own rows filled 7 or 14 of 16 lanes (960x7x7 planes:
 * 85 us on the row path). The block's planes are transposed into a zero-padded (HP, WP) grid of
 * vectors, DW_LANES_POS positions are computed at a time (independent FMA chains), and the results
 * transposed back into y. Lanes past the block's planes are computed from stale values and never
 * stored. pad's padding cells are zero (the caller zeroes it once per call). */
#if VBYTES == 64
#define DW_LANES_POS 8
#else
#define DW_LANES_POS 4 /* 16 registers: 4 accumulators beside the weights */
#endif

static inline __attribute__((always_inline)) void FN(lanes_positions)(T *out, const T *pad, const ptrdiff_t *base,
                                                                      ptrdiff_t npos, const ptrdiff_t *toff,
                                                                      const V *wv, int taps, V init, int act,
                                                                      T lo, T hi)
{
    for (ptrdiff_t p = 0; p < npos; p += DW_LANES_POS) {
        ptrdiff_t q[DW_LANES_POS]; /* the last block ends at npos, recomputing a few positions */
        for (int i = 0; i < DW_LANES_POS; i++) q[i] = p + i < npos ? p + i : npos - 1;
        const T *cell[DW_LANES_POS]; /* one pointer per position: each load is pointer + tap offset */
        V a[DW_LANES_POS];
        for (int i = 0; i < DW_LANES_POS; i++) cell[i] = pad + base[q[i]], a[i] = init;
        for (int t = 0; t < taps; t++) {
            const V wt = wv[t];
            const ptrdiff_t o = toff[t];
            for (int i = 0; i < DW_LANES_POS; i++) a[i] += wt * FN(load)(cell[i] + o);
        }
        for (int i = 0; i < DW_LANES_POS; i++) FN(store)(out + q[i] * VL, FN(activate)(a[i], act, lo, hi));
    }
}

static void FN(dw_forward_lanes)(const T *x, const T *w, const T *bias, T *y, T *scratch, const dw_geom *g,
                                 ptrdiff_t start, ptrdiff_t stop, int act, T lo, T hi, const ptrdiff_t *base,
                                 ptrdiff_t *toff, ptrdiff_t *cell)
{
    ptrdiff_t hp, wp;
    dw_extent(g, &hp, &wp);
    const ptrdiff_t k = g->kh * g->kw, npos = g->oh * g->ow, plane = g->h * g->w;
    const ptrdiff_t rows = g->h < hp - g->ph ? g->h : hp - g->ph, cols = g->w < wp - g->pw ? g->w : wp - g->pw;
    T *pad = scratch, *out = pad + hp * wp * VL, *wbuf = out + npos * VL;
    memset(pad, 0, (size_t)(hp * wp * VL) * sizeof(T));
    for (ptrdiff_t t = 0; t < k; t++) toff[t] = ((t / g->kw) * g->dh * wp + (t % g->kw) * g->dw) * VL;
    for (ptrdiff_t i = 0; i < plane; i++) { /* input position -> its padded cell, -1 where never read */
        const ptrdiff_t ih = i / g->w, iw = i % g->w;
        cell[i] = ih < rows && iw < cols ? ((ih + g->ph) * wp + iw + g->pw) * VL : -1;
    }
    for (ptrdiff_t p0 = start; p0 < stop; p0 += VL) {
        const ptrdiff_t lanes = stop - p0 < VL ? stop - p0 : VL;
        if (p0 + VL < stop) FN(prefetch_out)(y + (p0 + VL) * npos, (stop - p0 - VL < VL ? stop - p0 - VL : VL) * npos);
        if (plane >= VL) { /* VL x VL tiles (planes x positions), the last one ending at the plane's end */
            for (ptrdiff_t t0 = 0; t0 < plane; t0 += VL) {
                const ptrdiff_t at = t0 + VL <= plane ? t0 : plane - VL;
                V r[VL];
                for (ptrdiff_t c = 0; c < VL; c++) r[c] = FN(load)(x + (p0 + (c < lanes ? c : 0)) * plane + at);
                FN(transpose)(r);
                for (ptrdiff_t j = 0; j < VL; j++)
                    if (cell[at + j] >= 0) FN(store)(pad + cell[at + j], r[j]);
            }
        } else {
            for (ptrdiff_t c = 0; c < lanes; c++) {
                const T *xp = x + (p0 + c) * plane;
                for (ptrdiff_t ih = 0; ih < rows; ih++)
                    for (ptrdiff_t iw = 0; iw < cols; iw++)
                        pad[((ih + g->ph) * wp + iw + g->pw) * VL + c] = xp[ih * g->w + iw];
            }
        }
        V wv[DW_ROW_TAPS], init = FN(splat)(0);
        T lane_init[VL];
        for (ptrdiff_t c = 0; c < VL; c++) {
            const ptrdiff_t ch = (p0 + (c < lanes ? c : 0)) % g->c;
            for (ptrdiff_t t = 0; t < k; t++) wbuf[t * VL + c] = w[ch * k + t];
            lane_init[c] = bias ? bias[ch] : (T)0;
        }
        for (ptrdiff_t t = 0; t < k; t++) wv[t] = FN(load)(wbuf + t * VL);
        init = FN(load)(lane_init);
        switch (k) { /* a constant tap count keeps the weights in registers */
        case 9: FN(lanes_positions)(out, pad, base, npos, toff, wv, 9, init, act, lo, hi); break;
        case 25: FN(lanes_positions)(out, pad, base, npos, toff, wv, 25, init, act, lo, hi); break;
        default: FN(lanes_positions)(out, pad, base, npos, toff, wv, (int)k, init, act, lo, hi); break;
        }
        if (npos >= VL) {
            for (ptrdiff_t t0 = 0; t0 < npos; t0 += VL) {
                const ptrdiff_t at = t0 + VL <= npos ? t0 : npos - VL;
                V r[VL];
                for (ptrdiff_t j = 0; j < VL; j++) r[j] = FN(load)(out + (at + j) * VL);
                FN(transpose)(r);
                for (ptrdiff_t c = 0; c < lanes; c++) FN(store)(y + (p0 + c) * npos + at, r[c]);
            }
        } else {
            for (ptrdiff_t c = 0; c < lanes; c++) {
                T *yp = y + (p0 + c) * npos;
                for (ptrdiff_t q = 0; q < npos; q++) yp[q] = out[q * VL + c];
            }
        }
    }
}
#undef DW_LANES_POS

/* 3x3 stride-1 planes (row dilation 1) whose output rows fill most of a 16-lane vector (13-16 columns:
 * 14x14 and 16x16 planes, float32 on AVX-512; AVX2's 7x7 measured level with the lanes path, 43-44 us
 * against 46 for 960 planes, so 8-lane vectors keep it): each output row is one vector of taps over the
 * zero-padded plane (the phases layout of stride 1, pitch Qw = OW + 2*DW), activated and stored
 * straight into y; DW_NARROW_ROWS rows at a time, each padded row's three shifted vectors loaded once
 * for the rows it reaches. Where the lanes path transposed VL planes in and out around the same FMAs
 * (576x14x14, one thread: 557-572 -> 458-483 us) or the row path copied rows and wrote a wide plane
 * (256x16x16: 268-272 -> 227); narrower rows and other kernels stay there (docs/performance.md). */
#define DW_NARROW_ROWS 4

static int FN(dw_narrow_wins)(const dw_geom *g)
{
    return VL >= 16 && g->sh == 1 && g->sw == 1 && g->kh == 3 && g->kw == 3 && g->dh == 1 && g->ow <= VL &&
           4 * g->ow > 3 * VL;
}

/* Input plane x (H, W) into the zero-padded stride-1 plane dst (pitch Qw, zeroed once by the caller):
 * a row of at most VL columns is one vector whose lanes past the row are cleared, so the cells they
 * land on (this row's right padding, the next padded row's first cells, which that row's own copy
 * writes after) stay zero or get their values; wider rows, and the plane's last rows, whose vector
 * would read past it, go through copy_short. */
static void FN(fill_padded)(T *dst, const T *x, const dw_geom *g, const dw_phases *ph)
{
    const ptrdiff_t count = dw_columns_read(g, ph->qw), plane = g->h * g->w;
    if (count <= 0) return; /* a left padding past every column the taps read */
    const IV keep = FN(iota)() < (TI)count;
    for (ptrdiff_t ih = 0; ih < g->h && ih + g->ph < ph->qh; ih++) {
        const T *xr = x + ih * g->w;
        T *row = dst + (ih + g->ph) * ph->qw + g->pw;
        if (count < VL && ih * g->w + VL <= plane)
            FN(store)(row, (V)((IV)FN(load)(xr) & keep));
        else
            FN(copy_short)(row, xr, count);
    }
}

/* Row r0 + i of yo = act(a[i]) for i < nr: a whole vector where it stays inside the plane (its lanes
 * past the row land on the next rows, stored after it), else value by value. */
static inline __attribute__((always_inline)) void FN(narrow_store)(T *yo, ptrdiff_t r0, ptrdiff_t nr, ptrdiff_t ow,
                                                                    ptrdiff_t plane_out, const V *a, int act, T lo, T hi)
{
#pragma GCC unroll 4
    for (ptrdiff_t i = 0; i < DW_NARROW_ROWS; i++) {
        if (i >= nr) break;
        const V v = FN(activate)(a[i], act, lo, hi);
        T *dst = yo + (r0 + i) * ow;
        if ((r0 + i) * ow + VL <= plane_out) {
            FN(store)(dst, v);
        } else {
            T tmp[VL];
            FN(store)(tmp, v);
            FN(copy_short)(dst, tmp, ow < VL ? ow : VL); /* narrow rows: ow < VL */
        }
    }
}

/* narrow_rows for a 3x3 kernel of row dilation 1 (column dilation dw): the block's DW_NARROW_ROWS + 2
 * padded rows are each loaded once per column tap and added into every output row they reach. The
 * padded plane has Qh = OH + 2 rows and one more of slack: the rows past the block's last valid one
 * stay inside it. */
static inline __attribute__((always_inline)) void FN(narrow_rows3)(T *yo, const dw_geom *g, const T *pad, ptrdiff_t qw,
                                                                    const V *wv, V init, int act, T lo, T hi)
{
    const ptrdiff_t oh = g->oh, ow = g->ow, plane_out = oh * ow, d = g->dw;
    for (ptrdiff_t r0 = 0; r0 < oh; r0 += DW_NARROW_ROWS) {
        const ptrdiff_t nr = oh - r0 < DW_NARROW_ROWS ? oh - r0 : DW_NARROW_ROWS;
        V a[DW_NARROW_ROWS];
#pragma GCC unroll 4
        for (int i = 0; i < DW_NARROW_ROWS; i++) a[i] = init;
#pragma GCC unroll 6
        for (int ir = 0; ir < DW_NARROW_ROWS + 2; ir++) {
            const ptrdiff_t row = r0 + ir < oh + 2 ? r0 + ir : oh + 1; /* past the plane: a row never stored */
            const T *src = pad + row * qw;
            const V v0 = FN(load)(src), v1 = FN(load)(src + d), v2 = FN(load)(src + 2 * d);
#pragma GCC unroll 4
            for (int i = 0; i < DW_NARROW_ROWS; i++) {
                const int dr = ir - i;
                if (dr < 0 || dr > 2) continue;
                a[i] += wv[3 * dr] * v0;
                a[i] += wv[3 * dr + 1] * v1;
                a[i] += wv[3 * dr + 2] * v2;
            }
        }
        FN(narrow_store)(yo, r0, nr, ow, plane_out, a, act, lo, hi);
    }
}

static void FN(dw_forward_narrow)(const T *x, const T *w, const T *bias, T *y, T *scratch, const dw_geom *g,
                                  const dw_phases *ph, ptrdiff_t start, ptrdiff_t stop, int act, T lo, T hi)
{
    const ptrdiff_t plane_out = g->oh * g->ow;
    FN(clear_phases)(scratch, ph);
    for (ptrdiff_t p = start; p < stop; p++) {
        const ptrdiff_t n = p / g->c, c = p % g->c;
        if (p + 1 < stop) FN(prefetch_out)(y + (p + 1) * g->m * plane_out, g->m * plane_out);
        FN(fill_padded)(scratch, x + p * g->h * g->w, g, ph);
        for (ptrdiff_t j = 0; j < g->m; j++) {
            const ptrdiff_t o = c * g->m + j;
            T *yo = y + (n * g->c * g->m + o) * plane_out;
            const V init = FN(splat)(bias ? bias[o] : (T)0);
            V wv[9];
            for (ptrdiff_t t = 0; t < 9; t++) wv[t] = FN(splat)(w[o * 9 + t]);
            FN(narrow_rows3)(yo, g, scratch, ph->qw, wv, init, act, lo, hi);
        }
    }
}
#undef DW_NARROW_ROWS

/* 3x3 stride-2 planes (dilation 1) of at least VL output columns: output vector j0 of a row reads
 * padded columns 2*j0 .. 2*j0 + 2*VL, so its three column taps are the even and odd lanes of two
 * vectors and the even lanes shifted by one (two-source shuffles): no polyphase split. The padded
 * input rows are copied into a ring of DW_S2_SLOTS rows that stays in L1 (shared.h, dw_s2_pitch),
 * each once, as the output rows reach them; padding rows read a row of zeros. A whole padded plane
 * cost as much to write as the taps to compute (96x112x112 -> 56, one thread: docs/performance.md).
 * Output rows in pairs share their middle input row; blocks of 2 rows x 2 vectors (x 1 and x 4
 * measured slower), the ragged end as one block of 1 or 2 vectors ending at OW. The next output plane is
 * prefetched a share per pair of rows (as the stride-1 row path: 96x112 -> 56 0.94-0.97x). */
static int FN(dw_s2_wins)(const dw_geom *g)
{
    return VBYTES >= 32 && dw_s2_fits(g) && g->ow >= VL && (VL >= 16 || g->ow >= 2 * VL);
}

#define DW_S2_BLOCK(R, NV, at)                                                                          \
    do {                                                                                                \
        ptrdiff_t q[NV];                                                                                \
        for (int v = 0; v < (NV); v++) q[v] = (at) + v * VL < ow - VL ? (at) + v * VL : ow - VL;        \
        V a[R][NV];                                                                                     \
        for (int r = 0; r < (R); r++)                                                                   \
            for (int v = 0; v < (NV); v++) a[r][v] = init;                                              \
        _Pragma("GCC unroll 5") for (int i = 0; i < 2 * (R) + 1; i++)                                   \
        {                                                                                               \
            _Pragma("GCC unroll 2") for (int v = 0; v < (NV); v++)                                      \
            {                                                                                           \
                const T *s = rp[i] + 2 * q[v];                                                          \
                const V l0 = FN(load)(s), l1 = FN(load)(s + VL), l2 = FN(load)(s + 2 * VL);             \
                const V t0 = __builtin_shuffle(l0, l1, even), t1 = __builtin_shuffle(l0, l1, odd);     \
                const V t2 = __builtin_shuffle(t0, l2, next);                                           \
                _Pragma("GCC unroll 2") for (int r = 0; r < (R); r++)                                   \
                {                                                                                       \
                    const int kh = i - 2 * r;                                                           \
                    if (kh < 0 || kh > 2) continue;                                                     \
                    a[r][v] += wv[3 * kh] * t0;                                                         \
                    a[r][v] += wv[3 * kh + 1] * t1;                                                     \
                    a[r][v] += wv[3 * kh + 2] * t2;                                                     \
                }                                                                                       \
            }                                                                                           \
        }                                                                                               \
        for (int r = 0; r < (R); r++)                                                                   \
            for (int v = 0; v < (NV); v++) FN(store)(out + r * ow + q[v], FN(activate)(a[r][v], act, lo, hi)); \
    } while (0)

/* Output rows r0 .. r0 + R - 1 of one plane (row pitch OW) from the padded rows rp[0 .. 2R]. */
static inline __attribute__((always_inline)) void FN(s2_rows)(T *out, ptrdiff_t ow, int pair, const T *const *rp,
                                                               const V *wv, V init, int act, T lo, T hi)
{
    const IV even = FN(iota)() * 2, odd = even + 1, next = FN(iota)() + 1;
    ptrdiff_t m = 0;
    if (pair) {
        for (; m + 2 * VL <= ow; m += 2 * VL) DW_S2_BLOCK(2, 2, m);
        if (m + VL < ow) DW_S2_BLOCK(2, 2, m);
        else if (m < ow) DW_S2_BLOCK(2, 1, m);
    } else {
        for (; m + 2 * VL <= ow; m += 2 * VL) DW_S2_BLOCK(1, 2, m);
        if (m + VL < ow) DW_S2_BLOCK(1, 2, m);
        else if (m < ow) DW_S2_BLOCK(1, 1, m);
    }
}
#undef DW_S2_BLOCK

static void FN(dw_forward_s2)(const T *x, const T *w, const T *bias, T *y, T *scratch, const dw_geom *g,
                              ptrdiff_t start, ptrdiff_t stop, int act, T lo, T hi)
{
    ptrdiff_t hp, wp;
    dw_extent(g, &hp, &wp);
    const ptrdiff_t pitch = dw_s2_pitch(g), plane_out = g->oh * g->ow;
    const ptrdiff_t count = dw_columns_read(g, wp);
    const T *zero = scratch + DW_S2_SLOTS * pitch;
    memset(scratch, 0, (size_t)((DW_S2_SLOTS + 1) * pitch) * sizeof(T)); /* padding cells stay zero */
    for (ptrdiff_t p = start; p < stop; p++) {
        const ptrdiff_t n = p / g->c, c = p % g->c;
        const T *xp = x + p * g->h * g->w;
        const T *next = p + 1 < stop ? y + (p + 1) * g->m * plane_out : NULL;
        const ptrdiff_t lines = FN(prefetch_lines)(g->m * plane_out), per = (lines * 2 + g->oh - 1) / g->oh;
        ptrdiff_t at = 0;
        ptrdiff_t filled = 0; /* padded rows below this one have their ring row */
        for (ptrdiff_t r0 = 0; r0 < g->oh; r0 += 2) {
            FN(prefetch_out_share)(next, lines, per, &at);
            const int pair = r0 + 1 < g->oh;
            const T *rp[5];
            for (ptrdiff_t i = 0; i < 3 + 2 * pair; i++) {
                const ptrdiff_t pr = 2 * r0 + i, ih = pr - g->ph;
                T *slot = scratch + pr % DW_S2_SLOTS * pitch;
                if (ih < 0 || ih >= g->h || count <= 0) {
                    rp[i] = zero;
                    continue;
                }
                if (pr >= filled) FN(copy_short)(slot + g->pw, xp + ih * g->w, count);
                rp[i] = slot;
            }
            filled = 2 * r0 + 3 + 2 * pair;
            for (ptrdiff_t j = 0; j < g->m; j++) {
                const ptrdiff_t o = c * g->m + j;
                V wv[9];
                for (ptrdiff_t t = 0; t < 9; t++) wv[t] = FN(splat)(w[o * 9 + t]);
                FN(s2_rows)(y + (n * g->c * g->m + o) * plane_out + r0 * g->ow, g->ow, pair, rp, wv,
                            FN(splat)(bias ? bias[o] : (T)0), act, lo, hi);
            }
        }
    }
}

/* Planes in the lanes where the rows take less than a vector, and strided rows under two vectors
 * (there the lanes also save the phase split; stride-1 rows keep the row path's shared loads, which
 * won from one vector up: docs/performance.md, "Planes in the lanes"); dw_forward asks dw_s2_wins
 * first. */
static int FN(dw_lanes_wins)(const dw_geom *g)
{
    return dw_lanes_fit(g) && (g->ow < VL || ((g->sh > 1 || g->sw > 1) && g->ow < 2 * VL));
}

/* Output rows per band of the row path: each band prefetches its share of the next output plane (the
 * whole plane at once stalled on the line fill buffers: 3x3 128x56 batch 8 0.85-0.86x, 5x5 0.92-0.95x). */
#define DW_PF_ROWS 16
#define DW_PF_IN_MIN 2048           /* values of an input plane from which the stride-1 rows prefetch the next */
#define DW_PF_IN_RANGE (1 << 19)    /* ... and of the planes of a call's range (2 MB of float32) */
/* Forward of planes [start, stop) (plane p = image p / C, channel p % C) into y (N, C*M, OH, OW):
 * y = act(conv + bias), bias (C*M) or NULL, the activation (act, lo, hi as in activate) applied as
 * each output row block is stored. */
static int FN(dw_forward)(const T *x, const T *w, const T *bias, T *y, T *scratch, const dw_geom *g,
                          ptrdiff_t start, ptrdiff_t stop, int act, double lo_d, double hi_d)
{
    const T lo = (T)lo_d, hi = (T)hi_d;
    dw_phases ph;
    dw_forward_phases(g, &ph);
    const ptrdiff_t k = g->kh * g->kw, plane_out = g->oh * g->ow;
    if (FN(dw_narrow_wins)(g)) {
        FN(dw_forward_narrow)(x, w, bias, y, scratch, g, &ph, start, stop, act, lo, hi);
        return 0;
    }
    if (FN(dw_s2_wins)(g)) {
        FN(dw_forward_s2)(x, w, bias, y, scratch, g, start, stop, act, lo, hi);
        return 0;
    }
    if (FN(dw_lanes_wins)(g)) {
        ptrdiff_t *base = malloc((size_t)(plane_out + k + g->h * g->w) * sizeof(*base));
        if (!base) return -1;
        ptrdiff_t hp, wp;
        dw_extent(g, &hp, &wp);
        for (ptrdiff_t q = 0; q < plane_out; q++) base[q] = ((q / g->ow) * g->sh * wp + q % g->ow * g->sw) * VL;
        FN(dw_forward_lanes)(x, w, bias, y, scratch, g, start, stop, act, lo, hi, base, base + plane_out,
                             base + plane_out + k);
        free(base);
        return 0;
    }
    T *wide = scratch + ph.count * ph.plane; /* (OH, Qw) output rows */
    const T **src = malloc((size_t)k * sizeof(*src));
    ptrdiff_t *shift = malloc((size_t)k * sizeof(*shift));
    if (!src || !shift) {
        free(src), free(shift);
        return -1;
    }
    dw_forward_shifts(g, &ph, shift);
    FN(clear_phases)(scratch, &ph);
    for (ptrdiff_t p = start; p < stop; p++) {
        const ptrdiff_t n = p / g->c, c = p % g->c;
        /* strided: the next plane on its way while this one computes (3x3/2 128x56, one thread:
         * 0.71-1.16 -> 0.59-0.64 ms); stride 1 ran faster without it (the row copies stream well
         * on their own: 3x3 1.03-1.15 -> 0.88-0.94 ms, 5x5 1.77-1.82 -> 1.62-1.71) */
        if (g->sw > 1 && p + 1 < stop) FN(prefetch)(x + (p + 1) * g->h * g->w, g->h * g->w);
        const int rows_path = ph.qw != g->ow && g->ow >= VL && k <= DW_ROW_TAPS;
        if (p + 1 < stop && !rows_path) FN(prefetch_out)(y + (p + 1) * g->m * plane_out, g->m * plane_out);
        FN(fill_phases)(scratch, x + p * g->h * g->w, g, &ph);
        for (ptrdiff_t t = 0; t < k; t++) src[t] = scratch + shift[t];
        for (ptrdiff_t j = 0; j < g->m; j++) {
            const ptrdiff_t o = c * g->m + j;
            T *yo = y + (n * g->c * g->m + o) * plane_out;
            const T init = bias ? bias[o] : (T)0;
            if (rows_path) { /* rows straight into y, no junk; bands of DW_PF_ROWS rows */
                const T *next = p + 1 < stop ? yo + g->m * plane_out : NULL;
                const ptrdiff_t band = DW_PF_ROWS, lines = FN(prefetch_lines)(plane_out);
                const ptrdiff_t per = (lines * band + g->oh - 1) / g->oh;
                ptrdiff_t at = 0;
                /* stride 1: the next plane's input too where planes are large and the range's input outgrows L2
                 * (batch 8 at 56x56, two threads: 5x5 0.92x the time, 3x3 0.88x; 28x28 planes 1.05x, one image's
                 * 56x56 planes, warm in L3, 1.07x: left to the hardware), a share per band */
                const T *next_x = g->sw == 1 && j == 0 && p + 1 < stop && g->h * g->w >= DW_PF_IN_MIN &&
                                          (stop - start) * g->h * g->w >= DW_PF_IN_RANGE
                                      ? x + (p + 1) * g->h * g->w : NULL;
                const ptrdiff_t in_lines = FN(prefetch_lines)(g->h * g->w);
                const ptrdiff_t in_per = (in_lines * band + g->oh - 1) / g->oh;
                ptrdiff_t in_at = 0;
                for (ptrdiff_t r = 0; r < g->oh; r += band) {
                    const ptrdiff_t nr = g->oh - r < band ? g->oh - r : band;
                    FN(prefetch_out_share)(next, lines, per, &at);
                    FN(prefetch_in_share)(next_x, in_lines, in_per, &in_at);
                    const T *sr[DW_ROW_TAPS];
                    for (ptrdiff_t t = 0; t < k; t++) sr[t] = src[t] + r * ph.qw;
                    FN(tap_rows)(yo + r * g->ow, nr, g->ow, sr, ph.qw, w + o * k, (int)k, g->kh, g->kw,
                                 g->sh == 1 && g->dh == 1, init, act, lo, hi);
                }
                continue;
            }
            const int direct = ph.qw == g->ow; /* no junk columns: write straight into y */
            FN(stencil)(direct ? yo : wide, g->oh * ph.qw, src, w + o * k, (int)k, init);
            if (!direct)
                for (ptrdiff_t oh = 0; oh < g->oh; oh++)
                    FN(copy_short)(yo + oh * g->ow, wide + oh * ph.qw, g->ow);
            FN(activate_run)(yo, plane_out, act, lo, hi);
        }
    }
    free(src), free(shift);
    return 0;
}

/* 3-d forward of (image, channel) pairs [start, stop) of x (N, C, D, H, W) into y (N, C*M, OD, OH, OW):
 * g the 2-d geometry of one depth slice (its N, C, M the call's), dp (D, OD, KD, SD, DD, PD) the depth's,
 * w (C*M, 1, KD, KH, KW). Each input slice of a pair in its polyphase form once (the 2-d row path's), then
 * every output slice one stencil of KD * KH * KW taps over slices z * SD + j * DD - PD (a zero slice
 * outside), its wide rows copied into y and activated. Scratch: dw3_scratch. */
static int FN(dw3_forward)(const T *x, const T *w, const T *bias, T *y, T *scratch, const dw_geom *g,
                           const ptrdiff_t *dp, ptrdiff_t start, ptrdiff_t stop, int act, double lo_d, double hi_d)
{
    const T lo = (T)lo_d, hi = (T)hi_d;
    dw_phases ph;
    dw_forward_phases(g, &ph);
    const ptrdiff_t d = dp[0], od = dp[1], kd = dp[2], k2 = g->kh * g->kw, k = kd * k2;
    const ptrdiff_t slice = ph.count * ph.plane, plane_in = g->h * g->w, plane_out = g->oh * g->ow;
    T *zero = scratch, *slices = scratch + slice, *wide = slices + d * slice;
    const T **src = malloc((size_t)k * sizeof(*src));
    ptrdiff_t *shift = malloc((size_t)k2 * sizeof(*shift));
    if (!src || !shift) {
        free(src), free(shift);
        return -1;
    }
    dw_forward_shifts(g, &ph, shift);
    for (ptrdiff_t s = 0; s <= d; s++) FN(clear_phases)(scratch + s * slice, &ph);
    const int direct = ph.qw == g->ow; /* no junk columns: the stencil writes straight into y */
    for (ptrdiff_t p = start; p < stop; p++) {
        const ptrdiff_t n = p / g->c, c = p % g->c;
        for (ptrdiff_t s = 0; s < d; s++) FN(fill_phases)(slices + s * slice, x + (p * d + s) * plane_in, g, &ph);
        for (ptrdiff_t j = 0; j < g->m; j++) {
            const ptrdiff_t o = c * g->m + j;
            const T init = bias ? bias[o] : (T)0;
            for (ptrdiff_t z = 0; z < od; z++) {
                T *yo = y + ((n * g->c * g->m + o) * od + z) * plane_out;
                for (ptrdiff_t q = 0; q < kd; q++) {
                    const ptrdiff_t s = z * dp[3] + q * dp[4] - dp[5];
                    const T *base = s >= 0 && s < d ? slices + s * slice : zero;
                    for (ptrdiff_t t = 0; t < k2; t++) src[q * k2 + t] = base + shift[t];
                }
                FN(stencil)(direct ? yo : wide, g->oh * ph.qw, src, w + o * k, (int)k, init);
                if (!direct)
                    for (ptrdiff_t oh = 0; oh < g->oh; oh++) FN(copy_short)(yo + oh * g->ow, wide + oh * ph.qw, g->ow);
                FN(activate_run)(yo, plane_out, act, lo, hi);
            }
        }
    }
    free(src), free(shift);
    return 0;
}

/* Input gradient of planes [start, stop) into gx (N, C, H, W) from gy (N, C*M, OH, OW), as a
 * polyphase gather: padded input (ihp, iwp) = (qh*SH + rh, qw*SW + rw) receives tap (kh, kw) exactly
 * when kh*DH = th*SH + rh and kw*DW = tw*SW + rw, from gy[qh - th][qw - tw]. The gy planes are
 * copied with Th rows and Tw columns of zeros in front (and zeros after), so each input phase is one
 * flat stencil over them; the phase is then interleaved into gx. */
static int FN(dw_grad_input)(const T *gy, const T *w, const T *bias, T *gx, T *scratch,
                             const dw_geom *g, ptrdiff_t start, ptrdiff_t stop, int act, double lo_d, double hi_d)
{
    const T lo = (T)lo_d, hi = (T)hi_d;
    dw_gx_layout lay;
    dw_grad_input_layout(g, &lay);
    const ptrdiff_t k = g->kh * g->kw, plane_out = g->oh * g->ow, cap = g->m * k;
    /* input phases, rows of L columns each (stride 2: both column phases kept for interleaving) */
    T *wide = scratch + g->m * lay.plane;
    const ptrdiff_t wide_len = dw_gx_wide_len(g, &lay);
    const T **src = malloc((size_t)cap * sizeof(*src));
    T *wt = malloc((size_t)cap * sizeof(*wt));
    if (!src || !wt) {
        free(src), free(wt);
        return -1;
    }
    for (ptrdiff_t p = start; p < stop; p++) {
        const ptrdiff_t n = p / g->c, c = p % g->c;
        const T init = bias ? bias[c] : (T)0;
        if (p + 1 < stop) FN(prefetch)(gy + (p + 1) * g->m * plane_out, g->m * plane_out);
        for (ptrdiff_t j = 0; j < g->m; j++) {
            const T *gyo = gy + (n * g->c * g->m + c * g->m + j) * plane_out;
            T *plane = scratch + j * lay.plane;
            memset(plane, 0, (size_t)lay.plane * sizeof(T));
            for (ptrdiff_t oh = 0; oh < g->oh; oh++)
                FN(copy_short)(plane + (lay.th + oh) * lay.len + lay.tw, gyo + oh * g->ow, g->ow);
        }
        T *gxp = gx + p * g->h * g->w;
        int fused = 0; /* the activation applied at the stores (else over the plane at the end) */
        for (ptrdiff_t rh = 0; rh < g->sh; rh++) {
            /* input rows of phase rh: i0, i0 + SH, ... (padded row / SH from qh0) */
            const ptrdiff_t i0 = ((rh - g->ph) % g->sh + g->sh) % g->sh;
            if (i0 >= g->h) continue;
            const ptrdiff_t rows = (g->h - i0 + g->sh - 1) / g->sh, qh0 = (i0 + g->ph) / g->sh;
            for (ptrdiff_t rw = 0; rw < g->sw; rw++) {
                const ptrdiff_t j0 = ((rw - g->pw) % g->sw + g->sw) % g->sw;
                if (j0 >= g->w) continue;
                const ptrdiff_t cols = (g->w - j0 + g->sw - 1) / g->sw, qw0 = (j0 + g->pw) / g->sw;
                int taps = 0;
                for (ptrdiff_t kh = 0; kh < g->kh; kh++) {
                    if (kh * g->dh % g->sh != rh) continue;
                    const ptrdiff_t th = kh * g->dh / g->sh;
                    for (ptrdiff_t kw = 0; kw < g->kw; kw++) {
                        if (kw * g->dw % g->sw != rw) continue;
                        const ptrdiff_t off = (qh0 + lay.th - th) * lay.len + qw0 + lay.tw - kw * g->dw / g->sw;
                        for (ptrdiff_t j = 0; j < g->m; j++) {
                            src[taps] = scratch + j * lay.plane + off;
                            wt[taps++] = w[(c * g->m + j) * k + kh * g->kw + kw];
                        }
                    }
                }
                if (g->sh == 1 && g->sw == 1 && lay.len != g->w && g->w >= VL && taps && taps <= DW_ROW_TAPS) {
                    if (g->m == 1 && g->dh == 1) { /* taps reversed: source rows ascend, as in the forward */
                        for (int t = 0; t < taps / 2; t++) {
                            const T *ps = src[t];
                            const T pw = wt[t];
                            src[t] = src[taps - 1 - t], wt[t] = wt[taps - 1 - t];
                            src[taps - 1 - t] = ps, wt[taps - 1 - t] = pw;
                        }
                    }
                    FN(tap_rows)(gxp, g->h, g->w, src, lay.len, wt, taps, g->kh, g->kw, g->m == 1 && g->dh == 1, init,
                                 act, lo, hi);
                    fused = 1;
                    continue; /* rows straight into gx, no copy-out */
                }
                const int direct = g->sh == 1 && g->sw == 1 && lay.len == g->w;
                T *out = direct ? gxp : wide + rw * wide_len;
                if (taps)
                    FN(stencil)(out, rows * lay.len, src, wt, taps, init);
                else
                    for (ptrdiff_t m = 0; m < rows * lay.len; m++) out[m] = init;
                if (direct || (g->sw == 2 && g->w > 1)) continue; /* stride 2: interleaved below */
                for (ptrdiff_t a = 0; a < rows; a++) {
                    T *dst = gxp + (i0 + a * g->sh) * g->w + j0;
                    const T *row = out + a * lay.len;
                    if (g->sw == 1)
                        FN(copy_short)(dst, row, cols);
                    else
                        for (ptrdiff_t b = 0; b < cols; b++) dst[b * g->sw] = row[b];
                }
            }
            if (g->sw == 2 && g->w > 1) { /* the phase holding column 0 gives the even columns */
                const T *even = wide + (g->pw & 1) * wide_len, *odd = wide + (1 - (g->pw & 1)) * wide_len;
                for (ptrdiff_t a = 0; a < rows; a++)
                    FN(interleave)(gxp + (i0 + a * g->sh) * g->w, even + a * lay.len, odd + a * lay.len, g->w);
            }
        }
        if (!fused) FN(activate_run)(gxp, g->h * g->w, act, lo, hi);
    }
    free(src), free(wt);
    return 0;
}

/* Weight gradient of channels [start, stop) into gw (C*M, 1, KH, KW): per channel, every image's
 * polyphase planes once, vector accumulators per tap for each (image, output channel) plane, reduced
 * into double sums; channels are independent, so worker threads never share an accumulator. */
static int FN(dw_grad_weight)(const T *x, const T *gy, T *gw, T *scratch, const dw_geom *g,
                              ptrdiff_t start, ptrdiff_t stop)
{
    dw_phases ph;
    dw_forward_phases(g, &ph);
    const ptrdiff_t k = g->kh * g->kw, plane_out = g->oh * g->ow;
    const T **src = malloc((size_t)k * sizeof(*src));
    ptrdiff_t *shift = malloc((size_t)k * sizeof(*shift));
    V *acc = aligned_alloc(64, ((size_t)k * sizeof(V) + 63) / 64 * 64); /* vectors need their alignment */
    double *sum = malloc((size_t)(g->m * k) * sizeof(*sum));
    if (!src || !shift || !acc || !sum) {
        free(src), free(shift), free(acc), free(sum);
        return -1;
    }
    dw_forward_shifts(g, &ph, shift);
    for (ptrdiff_t t = 0; t < k; t++) src[t] = scratch + shift[t];
    FN(clear_phases)(scratch, &ph);
    /* gy plane in the wide layout (rows of Qw, junk columns zero), rounded up to whole vectors */
    T *wide = scratch + ph.count * ph.plane;
    const ptrdiff_t n_wide = (g->oh * ph.qw + VL - 1) / VL * VL;
    for (ptrdiff_t c = start; c < stop; c++) {
        memset(sum, 0, (size_t)(g->m * k) * sizeof(*sum));
        for (ptrdiff_t n = 0; n < g->n; n++) {
            const ptrdiff_t next = n + 1 < g->n ? n + 1 : (c + 1 < stop ? 0 : -1), nc = n + 1 < g->n ? c : c + 1;
            if (next >= 0) {
                FN(prefetch)(x + (next * g->c + nc) * g->h * g->w, g->h * g->w);
                FN(prefetch)(gy + (next * g->c * g->m + nc * g->m) * plane_out, g->m * plane_out);
            }
            FN(fill_phases)(scratch, x + (n * g->c + c) * g->h * g->w, g, &ph);
            for (ptrdiff_t j = 0; j < g->m; j++) {
                const T *gyo = gy + (n * g->c * g->m + c * g->m + j) * plane_out;
                const V zero = {0};
                for (ptrdiff_t t = 0; t < k; t++) acc[t] = zero;
                memset(wide, 0, (size_t)n_wide * sizeof(T));
                for (ptrdiff_t oh = 0; oh < g->oh; oh++)
                    memcpy(wide + oh * ph.qw, gyo + oh * g->ow, (size_t)g->ow * sizeof(T));
                FN(dot_flat)(acc, wide, n_wide, src, (int)k);
                int finite = 1; /* an inf or NaN lane makes its tap's sum non-finite */
                for (ptrdiff_t t = 0; t < k; t++) finite &= isfinite(FN(hsum)(acc[t]));
                if (!finite) { /* junk columns read x values no tap reads (0 * inf): redo exactly */
                    for (ptrdiff_t t = 0; t < k; t++) acc[t] = zero;
                    FN(dot)(acc, gyo, g->oh, g->ow, src, ph.qw, (int)k);
                }
                for (ptrdiff_t t = 0; t < k; t++) sum[j * k + t] += (double)FN(hsum)(acc[t]);
            }
        }
        for (ptrdiff_t i = 0; i < g->m * k; i++) gw[c * g->m * k + i] = (T)sum[i];
    }
    free(src), free(shift), free(acc), free(sum);
    return 0;
}

