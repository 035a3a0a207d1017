/* Winograd F(4x4, 3x3) for 2-D 3x3 stride-1 dilation-1 convolutions, one copy per (element type,
 * ISA): kernels.h includes this file once per combination with T, TSIZE, TI, VBYTES and SFX defined,
 * inside a `#pragma GCC target` region for the ISA (as depthwise.h).
 *
 * y[n, o] = A^T [ sum_c U[., o, c] (.) (B^T d[n, c] B) ] A per 4x4 output tile (d: the 6x6 input
 * tile), interpolation points 0, 1, -1, 1/2, -2, inf (npconv.kernels.winograd.transform_matrices;
 * the transforms below are those matrices written out). A work item is a range [t0, t1) of the flat
 * tile grid (image, tile row, tile column): tiles of several images share one GEMM.
 *
 * Per item: (1) input transform per (channel, run of up to WG_RUN tiles, across tile rows and
 * images), vectorized over the tiles: the tiles' 6 input rows side by side are split into 4 column
 * phases (phase p holds columns 4t + p, zero padding written in place, no padded copy of the image),
 * B^T combines the rows, then the columns (columns 4 and 5 of a tile are the next tile's phases 0
 * and 1, at a tile row's end the columns after it), giving V[36][C][tiles]; (2) 36 GEMMs per group
 * M[k] (O, tiles) = U[k] (O, C) @ V[k] (C, tiles) through the core's matrix product (float32:
 * summed over channel blocks, see winograd.CHANNEL_BLOCK); (3) output transform A^T . A per
 * (channel, run), bias and clamp, interleaved into the rows of y. A dilated convolution runs as one
 * call per output phase, reading and writing the phase's strided elements (wg_geom). A grouped call
 * runs the three steps group by group (wg_forward_groups), its products for up to WG_SMALL_CG channels
 * per group in registers (wg_small_product).
 */

/* B^T (6 x 6) of transform_matrices(4) applied to d0..d5. */
static inline __attribute__((always_inline)) void FN(wg_bt6)(V *o, const V *d)
{
    o[0] = d[0] - (T)1.5 * d[1] - (T)2 * d[2] + (T)1.5 * d[3] + d[4];
    o[1] = (T)0.5 * d[2] - d[1] + (T)2.5 * d[3] + d[4];
    o[2] = d[1] - (T)2.5 * d[2] + (T)0.5 * d[3] + d[4];
    o[3] = (T)2 * (d[3] - d[1]) - d[2] + d[4];
    o[4] = (T)0.5 * (d[1] - d[3]) - d[2] + d[4];
    o[5] = d[1] - (T)1.5 * d[2] - (T)2 * d[3] + (T)1.5 * d[4] + d[5];
}

/* A^T (4 x 6) applied to m0..m5. */
static inline __attribute__((always_inline)) void FN(wg_at6)(V *o, const V *m)
{
    const V s12 = m[1] + m[2], d12 = m[1] - m[2];
    o[0] = m[0] + s12 + m[3] + m[4];
    o[1] = d12 + (T)0.5 * m[3] - (T)2 * m[4];
    o[2] = s12 + (T)0.25 * m[3] + (T)4 * m[4];
    o[3] = d12 + (T)0.125 * m[3] - (T)8 * m[4] + m[5];
}

#define WVLC (VBYTES / TSIZE)
#if WVLC == 16
#define WG_LANES(M) M(0), M(1), M(2), M(3), M(4), M(5), M(6), M(7), M(8), M(9), M(10), M(11), M(12), M(13), M(14), M(15)
#elif WVLC == 8
#define WG_LANES(M) M(0), M(1), M(2), M(3), M(4), M(5), M(6), M(7)
#elif WVLC == 4
#define WG_LANES(M) M(0), M(1), M(2), M(3)
#elif WVLC == 2
#define WG_LANES(M) M(0), M(1)
#else
#error "unsupported vector width"
#endif
/* phase WG_P of the first half of a concatenated pair (a|b): lanes i < VL/2 take element 4i + WG_P */
#define WG_HALF(i) ((4 * (i) + WG_P) & (2 * WVLC - 1))
/* interleaving two vectors a|b: lanes (a[m], b[m]) for m in the first / second half */
#define WG_ZIP_LO(i) (((i) & 1) * WVLC + (i) / 2)
#define WG_ZIP_HI(i) (((i) & 1) * WVLC + WVLC / 2 + (i) / 2)
/* pairs of two zipped vectors a|b alternated: (a[2m], a[2m + 1], b[2m], b[2m + 1]) for the first / second
 * quarter of pairs m */
#define WG_PAIRS(i, base) ((i) % 4 < 2 ? 2 * ((base) + (i) / 4) + (i) % 4 : WVLC + 2 * ((base) + (i) / 4) + (i) % 4 - 2)
#define WG_PAIRS_0(i) WG_PAIRS(i, 0)
#define WG_PAIRS_1(i) WG_PAIRS(i, WVLC / 4)
/* the low halves of two vectors side by side */
#define WG_JOIN(i) ((i) < WVLC / 2 ? (i) : (i) + WVLC / 2)

/* Phase p of 4 * VL consecutive elements: out[i] = src[4i + p]. */
static inline __attribute__((always_inline)) V FN(wg_phase)(const T *src, int p)
{
    const V a = FN(load)(src), b = FN(load)(src + VL), c = FN(load)(src + 2 * VL),
             d = FN(load)(src + 3 * VL);
    const IV join = {WG_LANES(WG_JOIN)};
#define WG_P 0
    const IV m0 = {WG_LANES(WG_HALF)};
#undef WG_P
#define WG_P 1
    const IV m1 = {WG_LANES(WG_HALF)};
#undef WG_P
#define WG_P 2
    const IV m2 = {WG_LANES(WG_HALF)};
#undef WG_P
#define WG_P 3
    const IV m3 = {WG_LANES(WG_HALF)};
#undef WG_P
    const IV m = p == 0 ? m0 : p == 1 ? m1 : p == 2 ? m2 : m3;
    return __builtin_shuffle(__builtin_shuffle(a, b, m), __builtin_shuffle(c, d, m), join);
}

/* dst[j - j0] = src[(j - pw) * d] (0 outside [0, w), or everywhere when src is NULL) for j in [j0, j1):
 * a short segment of a zero-padded input row (loops, not libc calls: most segments are a few values);
 * d > 1: one phase of a dilated row (im2col.h's gather, GC(gather) = FN(gather)). */
static inline void FN(wg_pad_seg)(T *restrict dst, const T *restrict src, ptrdiff_t w, ptrdiff_t pw, ptrdiff_t d,
                                  ptrdiff_t j0, ptrdiff_t j1)
{
    ptrdiff_t i0 = pw > j0 ? pw : j0, i1 = w + pw < j1 ? w + pw : j1;
    if (!src || i1 < i0) i0 = i1 = j1;
    for (ptrdiff_t j = j0; j < i0; j++) dst[j - j0] = 0;
    if (i1 > i0) FN(gather)(dst + (i0 - j0), src + (i0 - pw) * d, i1 - i0, d);
    for (ptrdiff_t j = i1; j < j1; j++) dst[j - j0] = 0;
}

/* The segment of a run starting at flat tile t: its image, tile row ty and tile columns [a, b) (to the
 * tile row's end or the run's, `left` tiles). */
static inline void FN(wg_segment)(const wg_geom *g, ptrdiff_t t, ptrdiff_t left, ptrdiff_t *image, ptrdiff_t *ty,
                                  ptrdiff_t *a, ptrdiff_t *b)
{
    const ptrdiff_t per_image = g->th * g->tw;
    *image = t / per_image, *ty = t % per_image / g->tw, *a = t % g->tw;
    *b = *a + left < g->tw ? *a + left : g->tw;
}

/* Row transform of one padded input column jc of the 6 input rows from ih0 (scalar): o[k] = sum_r
 * B^T[k][r] x_pad[ih0 + r][jc], for the one column a run's vectors do not hold (see wg_input_run). */
static void FN(wg_column)(const T *xc, const wg_geom *g, ptrdiff_t ih0, ptrdiff_t jc, T *o)
{
    V d[6] = {{0}}, r[6];
    const ptrdiff_t ic = jc - g->pw;
    for (int k = 0; k < 6; k++) {
        const ptrdiff_t ih = ih0 + k;
        if (ih >= 0 && ih < g->h && ic >= 0 && ic < g->w) d[k][0] = xc[ih * g->xrow + ic * g->dw];
    }
    FN(wg_bt6)(r, d);
    for (int k = 0; k < 6; k++) o[k] = r[k][0];
}

/* Input transform of the L tiles [s, s + L) of the flat tile grid (image, tile row, tile column; L <=
 * WG_RUN) of channel plane xc (image 0's; images xs apart) into V columns [col, col + L), vectorized
 * over the run's tiles whichever tile rows and images they are in (a 14x14 image's 16 tiles fill one
 * 16-lane vector, not four).
 * rb: 6 rows of rs, tile l's padded input columns 4tx..4tx+3 at 4l (segments of tile rows side by
 * side); tr: the row transform, 6 rows k x 6 column offsets q of ps: q < 4 are phases of rb, q = 4, 5
 * (columns 4tx + 4, 4tx + 5) are phases 0, 1 of the next tile, but at a segment's last tile the
 * columns after it (wg_column). Lanes past L compute zeros and land in columns the next run owns. */
static void FN(wg_input_run)(const T *xc, ptrdiff_t xs, const wg_geom *g, ptrdiff_t s, ptrdiff_t L, T *v,
                             ptrdiff_t vstride, ptrdiff_t col, T *rb, ptrdiff_t rs, T *tr, ptrdiff_t ps)
{
    const ptrdiff_t le = (L + VL - 1) / VL * VL;
    ptrdiff_t n, ty, a, b;
    for (ptrdiff_t l = 0; l < L; l += b - a) {
        FN(wg_segment)(g, s + l, L - l, &n, &ty, &a, &b);
        const T *xn = xc + n * xs;
        for (int r = 0; r < 6; r++) {
            const ptrdiff_t ih = 4 * ty + r - g->ph;
            FN(wg_pad_seg)(rb + r * rs + 4 * l, ih >= 0 && ih < g->h ? xn + ih * g->xrow : NULL, g->w, g->pw, g->dw,
                           4 * a, 4 * b);
        }
    }
    for (int r = 0; r < 6; r++)
        for (ptrdiff_t j = 4 * L; j < 4 * le; j++) rb[r * rs + j] = 0;
    /* rows: tr[k][p][t] = sum_r B^T[k][r] row_r[4t + p] */
    for (ptrdiff_t t = 0; t < le; t += VL)
        for (int p = 0; p < 4; p++) {
            V d[6], o[6];
            for (int r = 0; r < 6; r++) d[r] = FN(wg_phase)(rb + r * rs + 4 * t, p);
            FN(wg_bt6)(o, d);
            for (int k = 0; k < 6; k++) FN(store)(tr + (k * 6 + p) * ps + t, o[k]);
        }
    for (int k = 0; k < 6; k++)
        for (int p = 0; p < 2; p++) {
            tr[(k * 6 + p) * ps + le] = 0; /* read by the last lane below */
            T *dst = tr + (k * 6 + 4 + p) * ps;
            const T *src = tr + (k * 6 + p) * ps + 1;
            for (ptrdiff_t t = 0; t < le; t += VL) FN(store)(dst + t, FN(load)(src + t));
        }
    for (ptrdiff_t l = 0; l < L; l += b - a) { /* each segment's last tile reads the columns after it */
        FN(wg_segment)(g, s + l, L - l, &n, &ty, &a, &b);
        for (int p = 0; p < 2; p++) {
            T o[6];
            FN(wg_column)(xc + n * xs, g, 4 * ty - g->ph, 4 * b + p, o);
            for (int k = 0; k < 6; k++) tr[(k * 6 + 4 + p) * ps + l + (b - a) - 1] = o[k];
        }
    }
    /* columns: V[k * 6 + k2][col + t] = sum_q B^T[k2][q] tr[k][q][t] */
    for (int k = 0; k < 6; k++)
        for (ptrdiff_t t = 0; t < le; t += VL) {
            V d[6], o[6];
            for (int q = 0; q < 6; q++) d[q] = FN(load)(tr + (k * 6 + q) * ps + t);
            FN(wg_bt6)(o, d);
            T *dst = v + (ptrdiff_t)(k * 6) * vstride + col + t;
            for (int k2 = 0; k2 < 6; k2++) FN(store)(dst + k2 * vstride, o[k2]);
        }
}

/* V of tiles [t0, t1), channels [c0, c1): channel c's rows at v + (c - first) * ntp, the 36 points vk apart
 * (the whole call's V[36][C][NTP], or a group's); the input transform channel by channel; within a channel
 * runs go left to right, so a run's junk lanes land in columns the next run (or the padding after the
 * tiles) owns. rb (pitch rs), tr (pitch ps): wg_input_run's buffers. */
static void FN(wg_inputs)(const T *x, const wg_geom *g, ptrdiff_t t0, ptrdiff_t t1, T *v, ptrdiff_t ntp, ptrdiff_t vk,
                          ptrdiff_t first, T *rb, ptrdiff_t rs, T *tr, ptrdiff_t ps, ptrdiff_t c0, ptrdiff_t c1)
{
    for (ptrdiff_t c = c0; c < c1; c++)
        for (ptrdiff_t t = t0; t < t1; t += WG_RUN) {
            const ptrdiff_t len = t1 - t < WG_RUN ? t1 - t : WG_RUN;
            FN(wg_input_run)(x + g->xoff + c * g->xplane, g->c * g->xplane, g, t, len, v + (c - first) * ntp, vk,
                             t - t0, rb, rs, tr, ps);
        }
}

/* Output transform of the L tiles [s, s + L) of the flat tile grid of channel plane yo (image 0's;
 * images ys apart) from M columns [col, ...), plus bias, then act: 0 none, 1 ReLU (as
 * np.maximum(v, 0): NaN stays NaN, -0.0 becomes 0), 2 hardtanh (as np.clip(v, lo, hi): NaN and -0.0
 * pass), the codes of pointwise.Activation; each vector's tiles interleaved into the rows of y
 * segment by segment (tile rows). q: 4 x VL. */
static void FN(wg_output_run)(const T *mo, ptrdiff_t mstride, ptrdiff_t col, T *yo, ptrdiff_t ys, const wg_geom *g,
                              ptrdiff_t s, ptrdiff_t L, T bias, int act, T lo, T hi, T *q)
{
    const V vb = FN(splat)(bias);
    for (ptrdiff_t t = 0; t < L; t += VL) {
        const ptrdiff_t nv = L - t < VL ? L - t : VL;
        /* lanes past the tiles zeroed: the products left those columns of M unwritten, and stale memory
         * read as floats is often subnormal (a microcode assist per operation: the 64x56 forward 1.2x) */
        const IV keep = FN(iota)() < (TI)nv;
        V r[4][6];
        for (int k2 = 0; k2 < 6; k2++) {
            V m[6], o[4];
            for (int k = 0; k < 6; k++)
                m[k] = (V)((IV)FN(load)(mo + (ptrdiff_t)(k * 6 + k2) * mstride + col + t) & keep);
            FN(wg_at6)(o, m);
            for (int i = 0; i < 4; i++) r[i][k2] = o[i];
        }
        /* the vector's segments (a tile row's tiles each): image, tile row, first lane, columns [c0, c1) */
        ptrdiff_t sn[WVLC], sty[WVLC], slane[WVLC], sc0[WVLC], sc1[WVLC], segs = 0;
        for (ptrdiff_t lane = 0, n, ty, a, b; lane < nv; lane += b - a, segs++) {
            FN(wg_segment)(g, s + t + lane, nv - lane, &n, &ty, &a, &b);
            sn[segs] = n, sty[segs] = ty, slane[segs] = lane, sc0[segs] = 4 * a, sc1[segs] = 4 * b < g->ow ? 4 * b : g->ow;
        }
        for (int i = 0; i < 4; i++) {
            V o[4];
            FN(wg_at6)(o, r[i]);
            for (int j = 0; j < 4; j++) o[j] = FN(activate)(o[j] + vb, act, lo, hi);
#if WVLC >= 4
            if (g->dw == 1) { /* q[4m + j] = o[j][m]: a 4 x VL transpose by shuffles, then each segment one move */
                const IV lo2 = {WG_LANES(WG_ZIP_LO)}, hi2 = {WG_LANES(WG_ZIP_HI)}, q0 = {WG_LANES(WG_PAIRS_0)},
                         q1 = {WG_LANES(WG_PAIRS_1)};
                const V a0 = __builtin_shuffle(o[0], o[1], lo2), a1 = __builtin_shuffle(o[0], o[1], hi2);
                const V b0 = __builtin_shuffle(o[2], o[3], lo2), b1 = __builtin_shuffle(o[2], o[3], hi2);
                FN(store)(q, __builtin_shuffle(a0, b0, q0));
                FN(store)(q + VL, __builtin_shuffle(a0, b0, q1));
                FN(store)(q + 2 * VL, __builtin_shuffle(a1, b1, q0));
                FN(store)(q + 3 * VL, __builtin_shuffle(a1, b1, q1));
                for (ptrdiff_t e = 0; e < segs; e++) {
                    const ptrdiff_t row = 4 * sty[e] + i;
                    if (row < g->oh)
                        FN(copy_short)(yo + sn[e] * ys + row * g->yrow + sc0[e], q + 4 * slane[e], sc1[e] - sc0[e]);
                }
                continue;
            }
#endif
            for (int j = 0; j < 4; j++) FN(store)(q + j * VL, o[j]);
            for (ptrdiff_t e = 0; e < segs; e++) {
                const ptrdiff_t row = 4 * sty[e] + i, c0 = sc0[e], c1 = sc1[e];
                const T *src = q + slane[e];
                if (row >= g->oh) continue;
                T *dst = yo + sn[e] * ys + row * g->yrow;
                for (ptrdiff_t c = c0; c < c1; c++) dst[c * g->dw] = src[((c - c0) & 3) * VL + ((c - c0) >> 2)];
            }
        }
    }
}

/* y = act(y + r) over the outputs of flat tiles [t0, t1) of one channel plane (yo, ro: image 0's plane,
 * images ys apart, rows ow apart: an undilated y): per image, the first and last tile rows' parts row by
 * row and the whole tile rows between as one range, right after the output transform wrote them (in
 * cache). Segment by segment in the scatter (a tile row's row each) cost more than the separate addition
 * where rows are short (14x14 and 28x28 planes at batch 8, docs/performance.md). */
static void FN(wg_residual_tiles)(T *yo, const T *ro, ptrdiff_t ys, const wg_geom *g, ptrdiff_t t0, ptrdiff_t t1, int act,
                                  T lo, T hi)
{
    const ptrdiff_t per_image = g->th * g->tw, W = g->ow, rows = g->oh;
    for (ptrdiff_t t = t0; t < t1;) {
        const ptrdiff_t n = t / per_image, a = t % per_image, b = t1 - t < per_image - a ? a + (t1 - t) : per_image;
        T *y = yo + n * ys;
        const T *r = ro + n * ys;
        /* tiles [a, b) of image n: tile rows ty0..ty1 (the last one up to tile column b1, exclusive) */
        const ptrdiff_t ty0 = a / g->tw, a0 = a % g->tw, ty1 = (b - 1) / g->tw, b1 = (b - 1) % g->tw + 1;
        ptrdiff_t full0 = ty0, full1 = ty1 + 1; /* whole tile rows [full0, full1) */
        if (a0 || (ty0 == ty1 && b1 < g->tw)) { /* the first tile row's part: columns [4 a0, 4 c1) */
            const ptrdiff_t c1 = ty0 == ty1 ? b1 : g->tw, x0 = 4 * a0, x1 = 4 * c1 < W ? 4 * c1 : W;
            for (ptrdiff_t row = 4 * ty0; row < 4 * ty0 + 4 && row < rows; row++)
                FN(add_activate_run)(y + row * W + x0, r + row * W + x0, x1 - x0, act, lo, hi);
            full0 = ty0 + 1;
        }
        if (ty1 >= full0 && b1 < g->tw) { /* the last tile row's part: columns [0, 4 b1) */
            const ptrdiff_t x1 = 4 * b1 < W ? 4 * b1 : W;
            for (ptrdiff_t row = 4 * ty1; row < 4 * ty1 + 4 && row < rows; row++)
                FN(add_activate_run)(y + row * W, r + row * W, x1, act, lo, hi);
            full1 = ty1;
        }
        if (full1 > full0) { /* whole rows: one range */
            const ptrdiff_t r0 = 4 * full0, r1 = 4 * full1 < rows ? 4 * full1 : rows;
            FN(add_activate_run)(y + r0 * W, r + r0 * W, (r1 - r0) * W, act, lo, hi);
        }
        t += b - a;
    }
}

/* Output channels [o0, o1) of tiles [t0, t1) from M: channel o's rows at mm + (o - first) * ntp, the 36 points
 * mk apart; bias, then act (or, with res, y = act(y + res) right after each channel's transform). q: 4 x VL. */
static void FN(wg_outputs)(const T *mm, ptrdiff_t ntp, ptrdiff_t mk, ptrdiff_t first, const T *bias, T *y,
                           const wg_geom *g, ptrdiff_t t0, ptrdiff_t t1, ptrdiff_t o0, ptrdiff_t o1, int act, T lo,
                           T hi, const T *res, T *q)
{
    for (ptrdiff_t o = o0; o < o1; o++) {
        T *yo = y + g->yoff + o * g->yplane;
        for (ptrdiff_t t = t0; t < t1; t += WG_RUN) {
            const ptrdiff_t len = t1 - t < WG_RUN ? t1 - t : WG_RUN;
            FN(wg_output_run)(mm + (o - first) * ntp, mk, t - t0, yo, g->o * g->yplane, g, t, len,
                              bias ? bias[o] : (T)0, res ? 0 : act, lo, hi, q);
        }
        if (res) FN(wg_residual_tiles)(yo, res + g->yoff + o * g->yplane, g->o * g->yplane, g, t0, t1, act, lo, hi);
    }
}

/* Most input channels per group whose products run in wg_small_block: a GEMM call per group and point
 * (packing its operands) cost more than these products. */
#define WG_SMALL_CG 16

/* M[j][t .. t + nv VL) = sum_c wp[c][j] V[c][t ..) for j < GP_OB (stored for j < rows): one register
 * block of a group's product at one point, the channel sum in order. */
static inline __attribute__((always_inline)) void FN(wg_small_block)(const T *wp, ptrdiff_t cg, const T *v, ptrdiff_t vs,
                                                                   T *m, ptrdiff_t ms, ptrdiff_t rows, ptrdiff_t t,
                                                                   const int nv)
{
    V acc[GP_OB][GP_NB];
    for (int j = 0; j < GP_OB; j++)
        for (int i = 0; i < nv; i++) acc[j][i] = FN(splat)((T)0);
    for (ptrdiff_t c = 0; c < cg; c++) {
        V l[GP_NB];
        for (int i = 0; i < nv; i++) l[i] = FN(load)(v + c * vs + t + i * VL);
        for (int j = 0; j < GP_OB; j++) {
            const V uj = FN(splat)(wp[c * GP_OB + j]);
            for (int i = 0; i < nv; i++) acc[j][i] += uj * l[i];
        }
    }
    for (ptrdiff_t j = 0; j < rows; j++)
        for (int i = 0; i < nv; i++) FN(store)(m + j * ms + t + i * VL, acc[j][i]);
}

/* M (og x nt, rows ms apart) = U (og x cg, rows cg apart) @ V (cg x nt, rows vs apart), one group at one
 * point, cg <= WG_SMALL_CG: blocks of GP_OB output channels (weights packed, missing rows zero) x GP_NB
 * vectors of tiles; columns to nt rounded up to whole vectors (V's are written there, M's unread). */
static void FN(wg_small_product)(const T *u, ptrdiff_t og, ptrdiff_t cg, const T *v, ptrdiff_t vs, T *m, ptrdiff_t ms,
                                 ptrdiff_t nt)
{
    T wp[WG_SMALL_CG * GP_OB];
    const ptrdiff_t cols = (nt + VL - 1) / VL * VL, step = GP_NB * VL;
    for (ptrdiff_t o0 = 0; o0 < og; o0 += GP_OB) {
        const ptrdiff_t rows = og - o0 < GP_OB ? og - o0 : GP_OB;
        for (ptrdiff_t c = 0; c < cg; c++)
            for (ptrdiff_t j = 0; j < GP_OB; j++) wp[c * GP_OB + j] = j < rows ? u[(o0 + j) * cg + c] : (T)0;
        ptrdiff_t t = 0;
        for (; t + step <= cols; t += step) FN(wg_small_block)(wp, cg, v, vs, m + o0 * ms, ms, rows, t, GP_NB);
        for (; t < cols; t += VL) FN(wg_small_block)(wp, cg, v, vs, m + o0 * ms, ms, rows, t, 1);
    }
}

/* winograd_forward of a grouped call, group by group: its Cg input channels' V (36 x Cg x NTP), the 36
 * products into its M (36 x Og x NTP), its Og output channels, while they are in cache (the whole call's
 * V and M, 36 (C + O) values per tile, are far beyond L2 at batch 8). */
static void FN(wg_forward_groups)(const gemm_fns *fns, const T *x, const T *u, const T *bias, T *y, T *s,
                                  const wg_geom *g, ptrdiff_t t0, ptrdiff_t t1, int act, T lo, T hi, const T *res)
{
    wg_layout L;
    wg_scratch_layout(g, &L);
    T *v = s + L.v, *mm = s + L.m, *rb = s + L.rb, *tr = s + L.tr, *q = s + L.q;
    const ptrdiff_t nt = t1 - t0, cg = g->c / g->groups, og = g->o / g->groups, ntp = L.ntp;
    const ptrdiff_t block = g->cblock > 0 && g->cblock < cg ? g->cblock : cg;
    for (ptrdiff_t gi = 0; gi < g->groups; gi++) {
        FN(wg_inputs)(x, g, t0, t1, v, ntp, cg * ntp, gi * cg, rb, L.rs, tr, L.ps, gi * cg, (gi + 1) * cg);
        for (ptrdiff_t k = 0; k < 36; k++) {
            const T *uk = u + (k * g->o + gi * og) * cg;
            if (cg <= WG_SMALL_CG) {
                FN(wg_small_product)(uk, og, cg, v + k * cg * ntp, ntp, mm + k * og * ntp, ntp, nt);
                continue;
            }
            for (ptrdiff_t c0 = 0; c0 < cg; c0 += block) {
                const ptrdiff_t kc = cg - c0 < block ? cg - c0 : block;
                FN(mm)(fns, s + L.pack, 0, 0, og, nt, kc, 1.0, uk + c0, cg, v + (k * cg + c0) * ntp, ntp,
                        c0 ? 1.0 : 0.0, mm + k * og * ntp, ntp, NULL, 0, 0, 0);
            }
        }
        FN(wg_outputs)(mm, ntp, og * ntp, gi * og, bias, y, g, t0, t1, gi * og, (gi + 1) * og, act, lo, hi, res, q);
    }
}

/* Tiles [t0, t1) of the flat grid (n, ty, tx); scratch as wg_scratch lays it out. st (NULL: the whole
 * call) splits a call of at most CAP tiles whose output channels the workers share: stage 1 transforms
 * the input channels [c0, c1) into st->v (one worker's scratch, its V), stage 2 runs the products and the
 * output transform from it (each worker's input transform of every channel was a third of its time). res
 * (NULL: none): y = act(y + res), res laid out as y, each output run's segments while in cache. */
static void FN(winograd_forward)(const gemm_fns *fns, const T *x, const T *u, const T *bias, T *y, T *s,
                                 const wg_geom *g, ptrdiff_t t0, ptrdiff_t t1, int act, T lo, T hi,
                                 const wg_stage *st, const T *res)
{
    wg_layout L;
    wg_scratch_layout(g, &L);
    const int stage = st ? st->stage : 0;
    T *v = stage ? (T *)st->v : s + L.v, *mm = s + L.m, *rb = s + L.rb, *tr = s + L.tr, *q = s + L.q;
    const ptrdiff_t nt = t1 - t0, cg = g->c / g->groups, og = g->o / g->groups;
    if (nt <= 0) return;
    if (!st && g->groups > 1) {
        FN(wg_forward_groups)(fns, x, u, bias, y, s, g, t0, t1, act, lo, hi, res);
        return;
    }
    /* (1) input transform */
    if (stage != 2)
        FN(wg_inputs)(x, g, t0, t1, v, L.ntp, g->c * L.ntp, 0, rb, L.rs, tr, L.ps, stage ? st->c0 : 0,
                      stage ? st->c1 : g->c);
    if (stage == 1) return;
    /* (2) M[k] = U[k] @ V[k] per group, float32 summed over channel blocks */
    const ptrdiff_t block = g->cblock > 0 && g->cblock < cg ? g->cblock : cg;
    for (ptrdiff_t k = 0; k < 36; k++)
        for (ptrdiff_t gi = 0; gi < g->groups; gi++)
            for (ptrdiff_t c0 = 0; c0 < cg; c0 += block) {
                const ptrdiff_t kc = cg - c0 < block ? cg - c0 : block;
                FN(mm)(fns, s + L.pack, 0, 0, og, nt, kc, 1.0, u + (k * g->o + gi * og) * cg + c0, cg,
                        v + (k * g->c + gi * cg + c0) * L.ntp, L.ntp, c0 ? 1.0 : 0.0,
                        mm + (k * g->o + gi * og) * L.ntp, L.ntp, NULL, 0, 0, 0);
            }
    /* (3) output transform, bias, activation */
    FN(wg_outputs)(mm, L.ntp, g->o * L.ntp, 0, bias, y, g, t0, t1, 0, g->o, act, lo, hi, res, q);
}

/* V rows of the padded input slices [s0, s1) of an item whose first output slice is z0 (slice sl's channel
 * c at row (sl - z0) * C + c), tiles [t0, t1); a depth-padding slice's rows zero (winograd3d_forward). */
static void FN(wg3_slices)(const T *x, const wg_geom *g, const ptrdiff_t *dp, ptrdiff_t cin, ptrdiff_t z0,
                           ptrdiff_t s0, ptrdiff_t s1, ptrdiff_t t0, ptrdiff_t t1, T *v, ptrdiff_t ntp, ptrdiff_t vk,
                           T *rb, ptrdiff_t rs, T *tr, ptrdiff_t ps)
{
    for (ptrdiff_t sl = s0; sl < s1; sl++) {
        const ptrdiff_t r = sl - dp[2];
        T *vs = v + (sl - z0) * cin * ntp;
        for (ptrdiff_t c = 0; c < cin; c++) {
            if (r < 0 || r >= dp[0]) {
                for (int k = 0; k < 36; k++) memset(vs + c * ntp + k * vk, 0, (size_t)ntp * sizeof(T));
                continue;
            }
            for (ptrdiff_t t = t0; t < t1; t += WG_RUN)
                FN(wg_input_run)(x + (c * dp[0] + r) * g->xplane, 0, g, t, t1 - t < WG_RUN ? t1 - t : WG_RUN,
                                 vs + c * ntp, vk, t - t0, rb, rs, tr, ps);
        }
    }
}

/* A 3-d (KD, 3, 3) convolution of one image, Winograd within each depth slice, direct along the depth:
 * output depth slices [z0, z1) over tiles [t0, t1) of one slice's tile grid. x (C, D, H, W) and y (O, OD,
 * OH, OW) are the image's own; u (36, O, KD * C), w[o, c, j] at column j * C + c; dp (D, KD, PD): the
 * input depth, the kernel depth and the low depth padding (output slice z reads padded slices z .. z + KD
 * - 1, input slice z + j - PD). g: one slice's 2-d call (N 1; its C the V rows the scratch holds, at least
 * (z1 - z0 + KD - 1) * C; its yplane y's channel step OD * OH * OW). V keeps the item's padded slices,
 * each transformed once, just before the first output slice that reads it (the KD of a slice are
 * consecutive rows: one product of KD * C columns of U, float32 over channel blocks as the 2-d call's);
 * a padding slice's rows are zeros. */
static void FN(winograd3d_forward)(const gemm_fns *fns, const T *x, const T *u, const T *bias, T *y, T *s,
                                   const wg_geom *g, const ptrdiff_t *dp, ptrdiff_t cin, ptrdiff_t z0,
                                   ptrdiff_t z1, ptrdiff_t t0, ptrdiff_t t1, int act, T lo, T hi)
{
    wg_layout L;
    wg_scratch_layout(g, &L);
    T *v = s + L.v, *mm = s + L.m, *q = s + L.q;
    const ptrdiff_t kd = dp[1], nt = t1 - t0, kc = kd * cin, vk = g->c * L.ntp, oplane = g->oh * g->ow;
    const ptrdiff_t block = g->cblock > 0 && g->cblock < kc ? g->cblock : kc;
    if (nt <= 0) return;
    for (ptrdiff_t z = z0; z < z1; z++) {
        FN(wg3_slices)(x, g, dp, cin, z0, z == z0 ? z0 : z + kd - 1, z + kd, t0, t1, v, L.ntp, vk, s + L.rb, L.rs,
                       s + L.tr, L.ps);
        const T *vz = v + (z - z0) * cin * L.ntp;
        for (ptrdiff_t k = 0; k < 36; k++)
            for (ptrdiff_t c0 = 0; c0 < kc; c0 += block)
                FN(mm)(fns, s + L.pack, 0, 0, g->o, nt, kc - c0 < block ? kc - c0 : block, 1.0,
                       u + k * g->o * kc + c0, kc, vz + k * vk + c0 * L.ntp, L.ntp, c0 ? 1.0 : 0.0,
                       mm + k * g->o * L.ntp, L.ntp, NULL, 0, 0, 0);
        FN(wg_outputs)(mm, L.ntp, g->o * L.ntp, 0, bias, y + z * oplane, g, t0, t1, 0, g->o, act, lo, hi, NULL, q);
    }
}

/* A (6 x 4, the transpose of wg_at6's A^T) applied to g0..g3: a 4x4 gy tile's rows or columns. */
static inline __attribute__((always_inline)) void FN(wg_a6)(V *o, const V *g)
{
    o[0] = g[0];
    o[1] = g[0] + g[1] + g[2] + g[3];
    o[2] = g[0] - g[1] + g[2] - g[3];
    o[3] = g[0] + (T)0.5 * g[1] + (T)0.25 * g[2] + (T)0.125 * g[3];
    o[4] = g[0] - (T)2 * g[1] + (T)4 * g[2] - (T)8 * g[3];
    o[5] = g[3];
}

/* GY[k][o][t - t0] (36 x O x ntp) = A gy A^T of the 4x4 gy tiles [t0, t1) of output channels [o0, o1)
 * (zeros past OH, OW): per channel and run of tiles, the tiles' 4 gy rows copied side by side into rb
 * (pitch rs), split into the 4 column phases (wg_phase), A applied down the columns, then along. gy's
 * channel planes g->yplane apart, its images O of them. */
static void FN(wg_gy_tiles)(const T *gy, const wg_geom *g, ptrdiff_t t0, ptrdiff_t t1, ptrdiff_t o0, ptrdiff_t o1,
                            T *gyt, ptrdiff_t ntp, T *rb, ptrdiff_t rs)
{
    const ptrdiff_t ys = g->o * g->yplane;
    for (ptrdiff_t o = o0; o < o1; o++) {
        const T *yo = gy + g->yoff + o * g->yplane;
        for (ptrdiff_t t = t0; t < t1; t += WG_RUN) {
            const ptrdiff_t len = t1 - t < WG_RUN ? t1 - t : WG_RUN, le = (len + VL - 1) / VL * VL;
            ptrdiff_t n, ty, a, b;
            for (ptrdiff_t l = 0; l < len; l += b - a) {
                FN(wg_segment)(g, t + l, len - l, &n, &ty, &a, &b);
                for (int i = 0; i < 4; i++) {
                    const ptrdiff_t row = 4 * ty + i;
                    FN(wg_pad_seg)(rb + i * rs + 4 * l, row < g->oh ? yo + n * ys + row * g->yrow : NULL, g->ow, 0,
                                   g->dw, 4 * a, 4 * b);
                }
            }
            for (int i = 0; i < 4; i++)
                for (ptrdiff_t j = 4 * len; j < 4 * le; j++) rb[i * rs + j] = 0;
            for (ptrdiff_t tv = 0; tv < le; tv += VL) {
                V cols[6][4];
                for (int j = 0; j < 4; j++) {
                    V d[4], o6[6];
                    for (int i = 0; i < 4; i++) d[i] = FN(wg_phase)(rb + i * rs + 4 * tv, j);
                    FN(wg_a6)(o6, d);
                    for (int k = 0; k < 6; k++) cols[k][j] = o6[k];
                }
                for (int k = 0; k < 6; k++) {
                    V o6[6];
                    FN(wg_a6)(o6, cols[k]);
                    for (int k2 = 0; k2 < 6; k2++)
                        FN(store)(gyt + ((k * 6 + k2) * g->o + o) * ntp + (t - t0) + tv, o6[k2]);
                }
            }
        }
    }
}

/* grad_weight, the forward's adjoint in U: acc[k][o][c] (36 x O x C/G, float64) += sum over the tiles
 * [t0, t1) of GY[k][o][t] * V[k][c][t] (within each group), GY = A gy A^T of the 4x4 gy tiles (zeros
 * past OH, OW), V = B^T d B of the input tiles (wg_input_run); gw = G^T acc G is the caller's. Each
 * call's products (at most CAP tiles deep) are summed in T, then added into the float64 accumulator
 * (float32 sums over all of a batch's tiles lost accuracy: docs/performance.md); a dilated call is one
 * output phase, as the forward's (wg_geom); first: 1 store the products instead of adding them, 2 write
 * them in T into acc (then 36 x O x C/G values of T: an accumulator of a single call, whose float64
 * values would be these exactly). Only output channels [o0, o1) (all of them, or a range of an ungrouped call: workers
 * taking the output channels of few tiles each write their own rows of one accumulator). scratch as
 * wg_grad_weight_layout lays it out. st (NULL: the whole call) splits a call whose output channels the
 * workers share, as the forward's: stage 1 transforms input channels [c0, c1) into st->v (one worker's
 * scratch, its V), stage 2 runs the rest from it. */
static void FN(winograd_grad_weight)(const gemm_fns *fns, const T *x, const T *gy, double *acc, T *s,
                                     const wg_geom *g, ptrdiff_t t0, ptrdiff_t t1, ptrdiff_t o0, ptrdiff_t o1,
                                     int first, const wg_stage *st)
{
    wg_gw_layout L;
    wg_grad_weight_layout(g, &L);
    const int stage = st ? st->stage : 0;
    T *v = stage ? (T *)st->v : s + L.v, *gyt = s + L.gy, *rb = s + L.rb, *tr = s + L.tr, *mf = s + L.mf;
    const ptrdiff_t nt = t1 - t0, cg = g->c / g->groups, og = g->o / g->groups;
    if (nt <= 0) return;
    if (stage != 2)
        FN(wg_inputs)(x, g, t0, t1, v, L.ntp, g->c * L.ntp, 0, rb, L.rs, tr, L.ps, stage ? st->c0 : 0,
                      stage ? st->c1 : g->c);
    if (stage == 1) return;
    FN(wg_gy_tiles)(gy, g, t0, t1, o0, o1, gyt, L.ntp, rb, L.rs);
    for (ptrdiff_t k = 0; k < 36; k++)
        for (ptrdiff_t gi = 0; gi < g->groups; gi++) {
            const ptrdiff_t lo = gi * og > o0 ? gi * og : o0, hi = (gi + 1) * og < o1 ? (gi + 1) * og : o1;
            if (hi <= lo) continue;
            T *prod = first == 2 ? (T *)acc + (k * g->o + lo) * cg : mf; /* 2: the products are the sums */
            FN(mm)(fns, s + L.pack, 0, 1, hi - lo, cg, nt, 1.0, gyt + (k * g->o + lo) * L.ntp, L.ntp,
                   v + (k * g->c + gi * cg) * L.ntp, L.ntp, 0.0, prod, cg, NULL, 0, 0, 0);
            if (first == 2) continue;
            double *a = acc + (k * g->o + lo) * cg;
            if (first)
                for (ptrdiff_t i = 0; i < (hi - lo) * cg; i++) a[i] = (double)mf[i];
            else
                for (ptrdiff_t i = 0; i < (hi - lo) * cg; i++) a[i] += (double)mf[i];
        }
}

/* grad_weight of a 3-d (KD, 3, 3) convolution, winograd3d_forward's adjoint in U: acc[k][o][j * C + c]
 * (36 x O x KD * C, float64) += sum over output slices [z0, z1) and tiles [t0, t1) of one image of GY_z[k][o][t]
 * V[k][(z + j - PD, c)][t], GY_z = A gy A^T of output slice z's tiles; each slice's product summed in T, then
 * added (first: the item's first product stored) into the accumulator. x, gy (O, OD, OH, OW), g, dp, cin as
 * winograd3d_forward's; scratch as wg_grad_weight_layout lays it out. */
static void FN(winograd3d_grad_weight)(const gemm_fns *fns, const T *x, const T *gy, double *acc, T *s,
                                       const wg_geom *g, const ptrdiff_t *dp, ptrdiff_t cin, ptrdiff_t z0,
                                       ptrdiff_t z1, ptrdiff_t t0, ptrdiff_t t1, int first)
{
    wg_gw_layout L;
    wg_grad_weight_layout(g, &L);
    T *v = s + L.v, *gyt = s + L.gy, *mf = s + L.mf;
    const ptrdiff_t kd = dp[1], nt = t1 - t0, kc = kd * cin, vk = g->c * L.ntp, oplane = g->oh * g->ow;
    if (nt <= 0) return;
    for (ptrdiff_t z = z0; z < z1; z++) {
        FN(wg3_slices)(x, g, dp, cin, z0, z == z0 ? z0 : z + kd - 1, z + kd, t0, t1, v, L.ntp, vk, s + L.rb, L.rs,
                       s + L.tr, L.ps);
        FN(wg_gy_tiles)(gy + z * oplane, g, t0, t1, 0, g->o, gyt, L.ntp, s + L.rb, L.rs);
        const T *vz = v + (z - z0) * cin * L.ntp;
        for (ptrdiff_t k = 0; k < 36; k++) {
            FN(mm)(fns, s + L.pack, 0, 1, g->o, kc, nt, 1.0, gyt + k * g->o * L.ntp, L.ntp, vz + k * vk, L.ntp, 0.0,
                   mf, kc, NULL, 0, 0, 0);
            double *a = acc + k * g->o * kc;
            if (first && z == z0)
                for (ptrdiff_t i = 0; i < g->o * kc; i++) a[i] = (double)mf[i];
            else
                for (ptrdiff_t i = 0; i < g->o * kc; i++) a[i] += (double)mf[i];
        }
    }
}

/* grad_weight's last step, channel pairs [p0, p1) of `pairs`: gw[p] (3 x 3) = G^T M_p G, M_p (6 x 6) the sum
 * of the nacc accumulators (36 x pairs each, one after another; float64, or T where acc_t) at p, added in
 * their order. A block of pairs at a time: its 36 rows of each accumulator read once, in double (G as in
 * winograd_weight). */
#define WG_FB 64
#define WG_GT(o0, o1, o2, m0, m1, m2, m3, m4, m5)                                          \
    do {                                                                                  \
        const double d_ = ((m1) - (m2)) * (1.0 / 3.0);                                    \
        o0 = (m0) + d_ - (16.0 / 15.0) * (m3) + (1.0 / 15.0) * (m4);                      \
        o1 = ((m1) + (m2)) * (1.0 / 3.0) - (8.0 / 15.0) * (m3) - (2.0 / 15.0) * (m4);     \
        o2 = d_ - (4.0 / 15.0) * (m3) + (4.0 / 15.0) * (m4) + (m5);                       \
    } while (0)
static void FN(winograd_gw_finish)(const void *acc, int acc_t, ptrdiff_t nacc, ptrdiff_t pairs, T *gw,
                                   ptrdiff_t p0, ptrdiff_t p1)
{
    double m[36][WG_FB], t[18][WG_FB], r[9][WG_FB];
    for (ptrdiff_t p = p0; p < p1; p += WG_FB) {
        const ptrdiff_t nb = p1 - p < WG_FB ? p1 - p : WG_FB;
        for (int k = 0; k < 36; k++) {
            if (acc_t) {
                const T *s = (const T *)acc + k * pairs + p;
                for (ptrdiff_t l = 0; l < nb; l++) m[k][l] = (double)s[l];
                for (ptrdiff_t a = 1; a < nacc; a++)
                    for (ptrdiff_t l = 0; l < nb; l++) m[k][l] += (double)s[a * 36 * pairs + l];
                continue;
            }
            const double *s = (const double *)acc + k * pairs + p;
            for (ptrdiff_t l = 0; l < nb; l++) m[k][l] = s[l];
            for (ptrdiff_t a = 1; a < nacc; a++)
                for (ptrdiff_t l = 0; l < nb; l++) m[k][l] += s[a * 36 * pairs + l];
        }
        for (int a = 0; a < 6; a++) /* t[a][j] = (M G)[a][j]: G^T down each row of M */
            for (ptrdiff_t l = 0; l < nb; l++)
                WG_GT(t[a * 3][l], t[a * 3 + 1][l], t[a * 3 + 2][l], m[a * 6][l], m[a * 6 + 1][l], m[a * 6 + 2][l],
                      m[a * 6 + 3][l], m[a * 6 + 4][l], m[a * 6 + 5][l]);
        for (int j = 0; j < 3; j++) /* r[i][j] = (G^T t)[i][j] */
            for (ptrdiff_t l = 0; l < nb; l++)
                WG_GT(r[j][l], r[3 + j][l], r[6 + j][l], t[j][l], t[3 + j][l], t[6 + j][l], t[9 + j][l],
                      t[12 + j][l], t[15 + j][l]);
        for (ptrdiff_t l = 0; l < nb; l++)
            for (int q = 0; q < 9; q++) gw[(p + l) * 9 + q] = (T)r[q][l];
    }
}
#undef WG_GT
#undef WG_FB

/* U[k][p] = (G g_p G^T)[k] for the 3x3 kernels g_p = w[9p .. 9p + 9), p in [p0, p1) of P: the
 * weight transform (G of transform_matrices(4): rows 1 0 0 | 1/3 1/3 1/3 | -1/3 1/3 -1/3 |
 * -16/15 -8/15 -4/15 | 1/15 -2/15 4/15 | 0 0 1), VL kernels at a time, the last block partial. */
#define WG_WCHUNK (8 * WVLC) /* kernels staged before their 36 rows of U are written */
static void FN(winograd_weight)(const T *w, T *u, ptrdiff_t count, ptrdiff_t p0, ptrdiff_t p1)
{
    T ub[36 * WG_WCHUNK]; /* U rows of a chunk: 36 short sequential copies instead of 36 interleaved
                             streams count apart (same cache set for count a multiple of 1024) */
    for (ptrdiff_t p = p0; p < p1; p += VL) {
        const ptrdiff_t nv = p1 - p < VL ? p1 - p : VL, at = (p - p0) % WG_WCHUNK;
        V g[9], t[6][3];
        for (int j = 0; j < 9; j++) {
            T lane[WVLC] = {0};
            for (ptrdiff_t l = 0; l < nv; l++) lane[l] = w[(p + l) * 9 + j];
            g[j] = FN(load)(lane);
        }
        /* t = G g (6 x 3), then U = t G^T (6 x 6); the same six rows of G each time */
#define WG_G6(o, a, b, c)                                                                   \
    do {                                                                                    \
        const V s_ = (a) + (c);                                                            \
        o[0] = (a);                                                                         \
        o[1] = (s_ + (b)) * (T)(1.0 / 3.0);                                                 \
        o[2] = ((b) - s_) * (T)(1.0 / 3.0);                                                 \
        o[3] = -((T)(16.0 / 15.0) * (a) + (T)(8.0 / 15.0) * (b) + (T)(4.0 / 15.0) * (c));   \
        o[4] = (T)(1.0 / 15.0) * (a) - (T)(2.0 / 15.0) * (b) + (T)(4.0 / 15.0) * (c);       \
        o[5] = (c);                                                                         \
    } while (0)
        for (int j = 0; j < 3; j++) {
            V col[6];
            WG_G6(col, g[j], g[3 + j], g[6 + j]);
            for (int i = 0; i < 6; i++) t[i][j] = col[i];
        }
        for (int i = 0; i < 6; i++) {
            V row[6];
            WG_G6(row, t[i][0], t[i][1], t[i][2]);
            for (int m = 0; m < 6; m++) FN(store)(ub + (i * 6 + m) * WG_WCHUNK + at, row[m]);
        }
#undef WG_G6
        if (at + VL == WG_WCHUNK || p + nv == p1) {
            const ptrdiff_t first = p - at, len = at + nv;
            for (int k = 0; k < 36; k++) memcpy(u + k * count + first, ub + k * WG_WCHUNK, (size_t)len * sizeof(T));
        }
    }
}
#undef WG_WCHUNK

#undef WG_SMALL_CG
#undef WG_LANES
#undef WG_ZIP_LO
#undef WG_ZIP_HI
#undef WG_PAIRS
#undef WG_PAIRS_0
#undef WG_PAIRS_1
#undef WG_HALF
#undef WG_JOIN
#undef WVLC
