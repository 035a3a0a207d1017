/* 2-D max pooling, one copy per (element type, ISA): kernels.h includes this file once per
 * combination with T and SFX defined, inside the ISA's `#pragma GCC target` region.
 *
 * Layout: planes (P, H, W) C-contiguous; y and arg (P, OH, OW); arg holds the flat kernel offset
 * kh * KW + kw of each window's maximum (npconv.kernels.pool's convention). Rules (torch's CPU
 * kernel, and the NumPy reference): padding never wins; taps in order, a tap replaces the maximum
 * when it is greater or NaN (so the last NaN is kept); a window whose in-bounds values are all -inf
 * (or that has none) gives -inf at its first in-bounds offset (from the low side).
 */

/* First kernel offset k with start + k * d >= 0, and the end of the offsets with start + k * d < n. */
static inline void FN(mp_taps)(ptrdiff_t start, ptrdiff_t n, ptrdiff_t k, ptrdiff_t d, ptrdiff_t *k0, ptrdiff_t *k1)
{
    *k0 = start < 0 ? (-start + d - 1) / d : 0;
    const ptrdiff_t end = n - start > 0 ? (n - start + d - 1) / d : 0;
    *k1 = end < k ? end : k;
}

typedef int32_t FN(i32v) __attribute__((vector_size(VBYTES / TSIZE * 4)));

/* One tap over outputs [j0, j1) of a row: the tap replaces the maximum when greater or NaN (and its
 * offset `code` goes to `at` unless at is NULL). Strides 1 and 2 (compile-time constants at their call
 * sites) take whole vectors for the outputs below `vend`, whose loads stay inside the row. */
static inline __attribute__((always_inline)) void
FN(mp_tap)(const T *src, ptrdiff_t stride, ptrdiff_t vend, T *best, int32_t *at, ptrdiff_t j0, ptrdiff_t j1,
           int32_t code)
{
    ptrdiff_t j = j0;
    if ((stride == 1 || stride == 2) && vend - j0 >= VL) {
        const FN(i32v) cv = (FN(i32v)){0} + code;
        for (ptrdiff_t next = j0; next < vend; next = j + VL) {
            /* the last vector overlaps the previous one: a tap taken twice changes nothing */
            j = next + VL <= vend ? next : vend - VL;
            const V v = stride == 1 ? FN(load)(src + j) : FN(even)(src + 2 * j);
            const V bv = FN(load)(best + j);
            const IV take = (v > bv) | (v != v);
            FN(store)(best + j, (V)(((IV)v & take) | ((IV)bv & ~take)));
            if (at) {
                const FN(i32v) t32 = __builtin_convertvector(take, FN(i32v));
                FN(i32v) av;
                memcpy(&av, at + j, sizeof av);
                av = (cv & t32) | (av & ~t32);
                memcpy(at + j, &av, sizeof av);
            }
        }
        j = vend;
    }
    for (; j < j1; j++) {
        const T v = src[j * stride];
        const int take = (v > best[j]) | (v != v);
        best[j] = take ? v : best[j];
        if (at) at[j] = take ? code : at[j];
    }
}

/* Values only (no argmax) at strides 1 and 2, output-stationary: a block of VL outputs takes every
 * tap in offset order in a register and is stored once (sweeping tap by tap reloaded and restored
 * the row's maxima per tap, and an overlapping last vector's store stalled the next tap's load:
 * 64x112x112 3x3/2 on AVX-512 ~500 us, slower than AVX2). Outputs [ja, jb) read inside the row at
 * every tap (with stride 2's extra odd element); the others take the same rule one by one. */
#define MP_BLOCKS 4
static void FN(mp_row_values)(const T *xp, T *best, const mp_geom *g, ptrdiff_t hs, ptrdiff_t kh0, ptrdiff_t kh1,
                              ptrdiff_t ja, ptrdiff_t jb)
{
    for (ptrdiff_t j = 0; j < g->ow; j++) {
        if (j == ja && jb - ja >= VL) j = jb;
        if (j >= g->ow) break;
        T m = -(T)INFINITY;
        for (ptrdiff_t a = kh0; a < kh1; a++) {
            const T *row = xp + (hs + a * g->dh) * g->w;
            for (ptrdiff_t b = 0; b < g->kw; b++) {
                const ptrdiff_t c = j * g->sw - g->pw + b * g->dw;
                if (c < 0 || c >= g->w) continue;
                const T v = row[c];
                m = (v > m) | (v != v) ? v : m;
            }
        }
        best[j] = m;
    }
    if (jb - ja < VL) return;
    /* MP_BLOCKS blocks at a time: each maximum is a chain of compare-and-select through the taps,
     * latency-bound alone; blocks past jb repeat the last one (the same values stored twice) */
    for (ptrdiff_t next = ja; next < jb;) {
        ptrdiff_t j[MP_BLOCKS];
        for (int q = 0; q < MP_BLOCKS; q++) {
            j[q] = next + VL <= jb ? next : jb - VL;
            next = next + VL <= jb ? next + VL : jb;
        }
        V m[MP_BLOCKS];
        for (int q = 0; q < MP_BLOCKS; q++) m[q] = FN(splat)(-(T)INFINITY);
        for (ptrdiff_t a = kh0; a < kh1; a++) {
            const T *src = xp + (hs + a * g->dh) * g->w - g->pw;
            for (ptrdiff_t b = 0; b < g->kw; b++)
                for (int q = 0; q < MP_BLOCKS; q++) {
                    const T *at = src + j[q] * g->sw + b * g->dw;
                    const V v = g->sw == 1 ? FN(load)(at) : FN(even)(at);
                    const IV take = (v > m[q]) | (v != v);
                    m[q] = (V)(((IV)v & take) | ((IV)m[q] & ~take));
                }
        }
        for (int q = 0; q < MP_BLOCKS; q++) FN(store)(best + j[q], m[q]);
    }
}

/* Values only, separable (the plane holds no NaN and no -0.0: equal values are then the same bits, so the
 * maximum of a window in any order is the taps' rule's): per output row, the column maxima of its
 * input rows into `cols` (input column c at cols[c + PW], -inf outside the input), then the KW taps
 * along the row from there: KH loads per input vector plus KW per output vector, where the taps' sweep
 * took KH * KW per output vector and the edge outputs one by one. */
#define MP_COLS 4096
static int FN(mp_plain)(const T *xp, ptrdiff_t n)
{ /* no NaN and no -0.0 among n values */
    const IV sign = (IV){0} + ((TI)1 << (TSIZE * 8 - 1));
    IV bad = (IV){0};
    ptrdiff_t i = 0;
    for (; i + VL <= n; i += VL) {
        const V v = FN(load)(xp + i);
        bad |= (v != v) | ((IV)v == sign);
    }
    for (int l = 0; l < VL; l++)
        if (bad[l]) return 0;
    for (; i < n; i++) {
        TI bits;
        memcpy(&bits, xp + i, sizeof bits);
        if (xp[i] != xp[i] || bits == ((TI)1 << (TSIZE * 8 - 1))) return 0;
    }
    return 1;
}

/* Whether mp_row_separable runs this geometry: strides 1 and 2 along the row, VL outputs or more, and
 * the row's columns (with the taps' reach and stride 2's extra odd value) within MP_COLS. */
static int FN(mp_separable_fits)(const mp_geom *g)
{
    return (g->sw == 1 || g->sw == 2) && g->ow >= VL && (g->ow - 1) * g->sw + (g->kw - 1) * g->dw + 2 <= MP_COLS;
}

/* max(m, v) lane by lane, v where greater (no NaN among the values: mp_plain). */
static inline __attribute__((always_inline)) V FN(mp_max)(V m, V v)
{
    const IV take = v > m;
    return (V)(((IV)v & take) | ((IV)m & ~take));
}

static void FN(mp_row_separable)(const T *xp, T *best, const mp_geom *g, ptrdiff_t hs, ptrdiff_t kh0, ptrdiff_t kh1,
                                 T *cols)
{
    const ptrdiff_t len = (g->ow - 1) * g->sw + (g->kw - 1) * g->dw + 2; /* cols[0, len): columns -PW.. */
    const ptrdiff_t c1 = len - g->pw < g->w ? len - g->pw : g->w;        /* input columns [0, c1) */
    for (ptrdiff_t c = 0; c < g->pw && c < len; c++) cols[c] = -(T)INFINITY;
    for (ptrdiff_t c = g->pw + (c1 > 0 ? c1 : 0); c < len; c++) cols[c] = -(T)INFINITY;
    T *mid = cols + g->pw;
    ptrdiff_t c = 0;
    for (; c + VL <= c1; c += VL) {
        V m = FN(splat)(-(T)INFINITY);
        for (ptrdiff_t a = kh0; a < kh1; a++) m = FN(mp_max)(m, FN(load)(xp + (hs + a * g->dh) * g->w + c));
        FN(store)(mid + c, m);
    }
    for (; c < c1; c++) {
        T m = -(T)INFINITY;
        for (ptrdiff_t a = kh0; a < kh1; a++) {
            const T v = xp[(hs + a * g->dh) * g->w + c];
            m = v > m ? v : m;
        }
        mid[c] = m;
    }
    /* the last block overlaps the one before it (the same values stored twice) */
    for (ptrdiff_t next = 0; next < g->ow; next += VL) {
        const ptrdiff_t j = next + VL <= g->ow ? next : g->ow - VL;
        V m = FN(splat)(-(T)INFINITY);
        for (ptrdiff_t b = 0; b < g->kw; b++) {
            const T *at = cols + j * g->sw + b * g->dw;
            m = FN(mp_max)(m, g->sw == 1 ? FN(load)(at) : FN(even)(at));
        }
        FN(store)(best + j, m);
    }
}

/* Row by row: every output of the row starts at -inf with its first in-bounds offset, then the taps
 * (kh, kw) in offset order each sweep the outputs whose window has that tap inside the input. arg
 * NULL: the values alone (no graph needs the argmax). Output rows [r0, r1) of planes [start, stop)
 * (workers splitting one image's rows read the input rows their band reads, no others). */
static void FN(max_pool_forward)(const T *x, T *y, int32_t *arg, const mp_geom *g, ptrdiff_t start, ptrdiff_t stop,
                                 ptrdiff_t r0, ptrdiff_t r1)
{
    const ptrdiff_t in_plane = g->h * g->w, out_plane = g->oh * g->ow;
    /* outputs whose every tap reads inside the row: j * SW - PW >= 0 and
     * j * SW - PW + (KW - 1) * DW + SW - 1 <= W - 1 */
    const ptrdiff_t ja = (g->pw + g->sw - 1) / g->sw, reach = g->w - g->sw + g->pw - (g->kw - 1) * g->dw;
    ptrdiff_t jb = reach >= 0 ? reach / g->sw + 1 : 0;
    jb = jb < g->ow ? jb : g->ow;
    const int by_block = !arg && (g->sw == 1 || g->sw == 2) && jb - ja >= VL;
    const int separable = !arg && FN(mp_separable_fits)(g);
    T cols[separable ? MP_COLS : 1];
    /* the input rows [h0, h1) the output rows read: the plain check covers those alone */
    const ptrdiff_t h0 = r0 * g->sh - g->ph > 0 ? r0 * g->sh - g->ph : 0;
    ptrdiff_t h1 = r1 > r0 ? (r1 - 1) * g->sh - g->ph + (g->kh - 1) * g->dh + 1 : h0;
    h1 = h1 < g->h ? h1 : g->h;
    for (ptrdiff_t p = start; p < stop; p++) {
        const T *xp = x + p * in_plane;
        const int plain = separable && h1 > h0 && FN(mp_plain)(xp + h0 * g->w, (h1 - h0) * g->w);
        for (ptrdiff_t i = r0; i < r1; i++) {
            T *best = y + p * out_plane + i * g->ow;
            int32_t *at = arg ? arg + p * out_plane + i * g->ow : NULL;
            const ptrdiff_t hs = i * g->sh - g->ph;
            ptrdiff_t kh0, kh1;
            FN(mp_taps)(hs, g->h, g->kh, g->dh, &kh0, &kh1);
            if (plain) {
                FN(mp_row_separable)(xp, best, g, hs, kh0, kh1, cols);
                continue;
            }
            if (by_block) {
                FN(mp_row_values)(xp, best, g, hs, kh0, kh1, ja, jb);
                continue;
            }
            for (ptrdiff_t j = 0; j < g->ow; j++) best[j] = -(T)INFINITY;
            for (ptrdiff_t j = 0; at && j < g->ow; j++) {
                const ptrdiff_t ws = j * g->sw - g->pw; /* first in-bounds kw: a division only left of the input */
                at[j] = (int32_t)(kh0 * g->kw + (ws < 0 ? (-ws + g->dw - 1) / g->dw : 0));
            }
            for (ptrdiff_t a = kh0; a < kh1; a++) {
                const T *row = xp + (hs + a * g->dh) * g->w;
                for (ptrdiff_t b = 0; b < g->kw; b++) {
                    /* outputs j with 0 <= j * SW - PW + b * DW < W */
                    const ptrdiff_t shift = b * g->dw - g->pw;
                    ptrdiff_t j0 = shift < 0 ? (-shift + g->sw - 1) / g->sw : 0;
                    ptrdiff_t j1 = g->w - shift > 0 ? (g->w - shift + g->sw - 1) / g->sw : 0;
                    j1 = j1 < g->ow ? j1 : g->ow;
                    if (j0 >= j1) continue;
                    const T *src = row + shift;
                    const int32_t code = (int32_t)(a * g->kw + b);
                    /* stride 2: the vector loads end at src[2 * j + 2 * VL - 1], inside the row */
                    const ptrdiff_t half = (g->w - shift) / 2, vend2 = half < j1 ? half : j1;
                    if (g->sw == 1 && at)
                        FN(mp_tap)(src, 1, j1, best, at, j0, j1, code);
                    else if (g->sw == 1)
                        FN(mp_tap)(src, 1, j1, best, NULL, j0, j1, code);
                    else if (g->sw == 2 && at)
                        FN(mp_tap)(src, 2, vend2, best, at, j0, j1, code);
                    else if (g->sw == 2)
                        FN(mp_tap)(src, 2, vend2, best, NULL, j0, j1, code);
                    else
                        FN(mp_tap)(src, g->sw, 0, best, at, j0, j1, code);
                }
            }
        }
    }
}

/* gx planes [start, stop) = 0, then gy added at each window's argmax (offsets outside the input
 * dropped, as the reference's crop of its padded result). */
static void FN(max_pool_backward)(const T *gy, const int32_t *arg, T *gx, const mp_geom *g, ptrdiff_t start,
                                  ptrdiff_t stop)
{
    const ptrdiff_t in_plane = g->h * g->w, out_plane = g->oh * g->ow;
    for (ptrdiff_t p = start; p < stop; p++) {
        const T *gp = gy + p * out_plane;
        const int32_t *ap = arg + p * out_plane;
        T *xp = gx + p * in_plane;
        memset(xp, 0, (size_t)in_plane * sizeof(T));
        for (ptrdiff_t i = 0; i < g->oh; i++) {
            const ptrdiff_t hs = i * g->sh - g->ph;
            for (ptrdiff_t j = 0; j < g->ow; j++) {
                const ptrdiff_t at = ap[i * g->ow + j];
                const ptrdiff_t r = hs + at / g->kw * g->dh, c = j * g->sw - g->pw + at % g->kw * g->dw;
                if (at >= 0 && r >= 0 && r < g->h && c >= 0 && c < g->w) xp[r * g->w + c] += gp[i * g->ow + j];
            }
        }
    }
}

/* y[r] = (sum of x[r * count, (r + 1) * count)) / count for rows [start, stop): global average pooling
 * of (N, C, *in) planes, on the workers (NumPy's matrix-vector product ran on one thread, reading the
 * last layer's output from the other core's cache). Sums in the element type, VL lanes then the tail. */
static void FN(row_means)(const T *x, T *y, ptrdiff_t count, ptrdiff_t start, ptrdiff_t stop)
{
    const ptrdiff_t cv = count / VL * VL;
    for (ptrdiff_t r = start; r < stop; r++) {
        const T *row = x + r * count;
        V acc = FN(splat)(0);
        for (ptrdiff_t p = 0; p < cv; p += VL) acc += FN(load)(row + p);
        T s = FN(hsum)(acc);
        for (ptrdiff_t p = cv; p < count; p++) s += row[p];
        y[r] = s / (T)count;
    }
}
