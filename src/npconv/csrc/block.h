/* A fused inverted residual block (MobileNetV2's 1x1 expansion -> 3x3 depthwise -> 1x1 projection,
 * + the block's input), one copy per (element type, ISA): kernels.h includes this file after gemm.h
 * and depthwise.h. Unfused, the expansion writes a tensor cexp/cin times the block's input that the
 * depthwise reads back from memory (MobileNetV2's 112x112 and 56x56 stages: 2-5 MB a layer). Here a
 * worker takes a band of output rows in tiles of g->tile rows: it expands the tile's input rows into
 * zero-padded rows of its scratch (rows the previous tile expanded are moved, not recomputed), runs
 * the depthwise rows from them, and projects the tile's rows into y: the expanded values never leave
 * the worker's cache. Each stage is the unfused kernel's own arithmetic (FN(gemm), the depthwise row
 * kernels, the residual added after the projection's bias), so the results match the unfused layers'
 * except where a product's columns take a different path (dot products: rounding). In the expansion's
 * place a block can take the network's stem (expand 2: MobileNetV2's 3x3 stride-2 convolution of the
 * image), computed by grouped.h's register blocks straight into E's rows (ir_stem_rows), so the stem's
 * output, the network's largest tensor (12.8 MB at batch 8), is not written either. Rows are moved,
 * copied and zeroed with kernels.h's copy_short/zero_short: a libc call per channel's row cost 4-5% of
 * MobileNetV2 at batch 1.
 * float32 on the vector ISAs (FN(gemm) exists there); elsewhere ir_forward reports -2. */

#if VBYTES >= 32 && TSIZE == 4
/* Rows of 4-15 columns at 16 lanes (MobileNetV2's 14x14 and 7x7 blocks; the caller decides which it
 * fuses): one vector per output row (stride 1: depthwise.h's narrow_rows3 over the padded rows;
 * stride 2: ir_s2_narrow), its spare lanes landing on the next rows of the tile's scratch (D has a
 * vector of slack after its last row). */
static int FN(ir_narrow)(const ir_geom *g) { return VL >= 16 && g->ow < VL && g->ow >= 4; }

/* Stride-2 output rows r and (pair) r + 1 of rows of ow < VL columns into dc (pitch ow) from the
 * padded rows rp[0 .. 2 * pair + 2]: s2_rows's taps for one vector from column 0, stored whole in
 * order (row r's spare lanes are overwritten by row r + 1 and the next rows). */
static inline __attribute__((always_inline)) void FN(ir_s2_narrow)(T *dc, ptrdiff_t r, ptrdiff_t ow, int pair,
                                                                    const T *const *rp, const V *wv, V init, int act,
                                                                    T lo, T hi)
{
    const IV even = FN(iota)() * 2, odd = even + 1, next = FN(iota)() + 1;
    V a[2] = {init, init};
#pragma GCC unroll 5
    for (int i = 0; i < 3 + 2 * pair; i++) {
        const T *s = rp[i];
        const V l0 = FN(load)(s), l1 = FN(load)(s + VL), l2 = FN(load)(s + 2 * VL);
        const V t0 = __builtin_shuffle(l0, l1, even), t1 = __builtin_shuffle(l0, l1, odd);
        const V t2 = __builtin_shuffle(t0, l2, next);
#pragma GCC unroll 2
        for (int q = 0; q < 2; q++) {
            const int kh = i - 2 * q;
            if (kh < 0 || kh > 2) continue;
            a[q] += wv[3 * kh] * t0;
            a[q] += wv[3 * kh + 1] * t1;
            a[q] += wv[3 * kh + 2] * t2;
        }
    }
    FN(store)(dc + r * ow, FN(activate)(a[0], act, lo, hi));
    if (pair) FN(store)(dc + (r + 1) * ow, FN(activate)(a[1], act, lo, hi));
}

/* The depthwise rows this ISA's kernels can take (the row kernels need at least a vector of outputs,
 * or the narrow rows above). */
static int FN(ir_fits)(const ir_geom *g)
{
    if (g->expand == 2 && (g->cexp % GP_OB || g->cin * 9 > IR_STEM_MAX_PAIRS)) return 0; /* whole register blocks */
    return g->ow >= VL ? g->stride == 1 || VL >= 16 || g->ow >= 2 * VL : FN(ir_narrow)(g);
}

/* The stem's output rows [a, b) into E's rows a - lo.. (channel stride es, pitch w + 2, column c at c + 1),
 * as grouped.h's forward computes them (the same sums in the same order): the image's input rows those
 * rows read in polyphase form (planes: ir_stem_phases, rows of E's pitch), then per block of GP_OB
 * channels (weights packed as wp, one block's pairs x GP_OB after another) the register blocks of
 * positions, activated, stored straight into E: a position's row and column are E's, the wide rows' two
 * junk columns land on E's padding columns and the last block's junk positions past row b in E's rows
 * or channel slack after it. Then the padding columns of rows [a, b) are zeroed (rows past b the caller
 * zeroes). */
static void FN(ir_stem_rows)(const T *xn, const T *wp, const T *b1, T *e, ptrdiff_t es, T *planes, const ir_geom *g,
                             ptrdiff_t lo, ptrdiff_t a, ptrdiff_t b)
{
    dw_geom d;
    dw_phases ph;
    ir_stem_phases(g, &d, &ph);
    const ptrdiff_t pitch = ph.qw, chan = ph.count * ph.plane, pairs = g->cin * 9, step = GP_NB * VL;
    ptrdiff_t shift[9], off[IR_STEM_MAX_PAIRS], reach = 0;
    dw_forward_shifts(&d, &ph, shift);
    for (int t = 0; t < 9; t++) reach = shift[t] % ph.plane > reach ? shift[t] % ph.plane : reach;
    for (ptrdiff_t ci = 0; ci < g->cin; ci++)
        for (int t = 0; t < 9; t++) off[ci * 9 + t] = ci * chan + shift[t];
    const ptrdiff_t m0 = a * pitch, m1 = b * pitch, steps = (m1 - m0 + step - 1) / step;
    const ptrdiff_t rows_hi = (m0 + steps * step - 1 + reach) / pitch + 1; /* phase rows the blocks read */
    for (ptrdiff_t ci = 0; ci < g->cin; ci++) {
        FN(clear_phase_rows)(planes + ci * chan, &ph, a, rows_hi);
        FN(fill_phase_rows)(planes + ci * chan, xn + ci * g->xh * g->xw, &d, &ph, a, rows_hi);
    }
    const T lo0 = (T)g->lo[0], hi0 = (T)g->hi[0];
    for (ptrdiff_t o0 = 0; o0 < g->cexp; o0 += GP_OB) {
        T init[GP_OB];
        for (int j = 0; j < GP_OB; j++) init[j] = b1 ? b1[o0 + j] : (T)0;
        for (ptrdiff_t m = m0; m < m1; m += step)
            WITH_CONST_ACT(g->act[0], FN(gp_block)(e + o0 * es + 1 + (m - lo * pitch), es, 0, planes + m, off, pairs,
                                                   wp + o0 * pairs, init, act_k, lo0, hi0));
    }
    for (ptrdiff_t c = 0; c < g->cexp; c++)
        for (ptrdiff_t row = a; row < b; row++) {
            T *er = e + c * es + (row - lo) * pitch;
            er[0] = er[pitch - 1] = 0;
        }
}

/* One item: output rows [r0, r1) of image `img`. E: cexp channels of ir_in_rows padded rows (pitch
 * ir_pitch, the input's column c at column c + 1; padding cells zero on entry); D: the depthwise
 * rows of a tile. */
static void FN(ir_item)(const T *x, const T *w1, const T *b1, const T *wd, const T *bd, const T *w2, const T *b2,
                        const T *res, T *y, T *e, T *d, T *xp, T *pack, const ir_geom *g, ptrdiff_t img, ptrdiff_t r0,
                        ptrdiff_t r1)
{
    const ptrdiff_t pitch = ir_pitch(g), es = ir_e_stride(g), xs = es, s = g->stride;
    const ptrdiff_t hw = g->h * g->w, ohw = g->oh * g->ow;
    const T *xn = x + img * g->cin * g->xh * g->xw;
    T *yn = y + img * g->cout * ohw;
    const T *rn = res ? res + img * g->cout * ohw : NULL;
    const T lo0 = (T)g->lo[0], hi0 = (T)g->hi[0], lo1 = (T)g->lo[1], hi1 = (T)g->hi[1];
    const T lo2 = (T)g->lo[2], hi2 = (T)g->hi[2];
    ptrdiff_t held = 0, held_lo = 0; /* E's rows 0..held-1 hold input rows held_lo.. */
    for (ptrdiff_t o0 = r0; o0 < r1; o0 += g->tile) {
        const ptrdiff_t nr = r1 - o0 < g->tile ? r1 - o0 : g->tile, lo = s * o0 - 1, nin = s * (nr - 1) + 3;
        ptrdiff_t keep = 0;
        if (held && lo >= held_lo && lo < held_lo + held) { /* the previous tile's last rows: moved */
            keep = held_lo + held - lo;
            keep = keep < nin ? keep : nin;
            for (ptrdiff_t c = 0; c < g->cexp; c++) /* row by row upwards: a row is read before it is written */
                for (ptrdiff_t i = 0; i < keep; i++)
                    FN(copy_short)(e + c * es + i * pitch, e + c * es + (lo - held_lo + i) * pitch, pitch);
        }
        /* rows [keep, nin) of E: the image's rows [a, b) among them expanded (or copied), the others the
         * zero padding above and below the image */
        const ptrdiff_t a = lo + keep > 0 ? lo + keep : 0, b = lo + nin < g->h ? lo + nin : g->h;
        if (b > a && g->expand == 2) FN(ir_stem_rows)(xn, w1, b1, e, es, xp, g, lo, a, b);
        for (ptrdiff_t i = keep; i < nin; i++) /* after the stem's rows: its last positions' junk lands here */
            if (lo + i < 0 || lo + i >= g->h)
                for (ptrdiff_t c = 0; c < g->cexp; c++) FN(zero_short)(e + c * es + i * pitch, pitch);
        if (b > a && !g->expand) {
            for (ptrdiff_t c = 0; c < g->cexp; c++)
                for (ptrdiff_t row = a; row < b; row++)
                    FN(copy_short)(e + c * es + (row - lo) * pitch + 1, xn + c * hw + row * g->w, g->w);
        } else if (b > a && g->expand == 1 && g->w % VL == 0) { /* whole vectors per row: each row's product in place */
            for (ptrdiff_t row = a; row < b; row++)
                FN(gemm)(0, 0, g->cexp, g->w, g->cin, (T)1, w1, g->cin, xn + row * g->w, hw, (T)0,
                         e + (row - lo) * pitch + 1, es, pack, b1, g->act[0], lo0, hi0);
        } else if (b > a && g->expand == 1) {
            /* the input rows copied into xp's zero-padded rows (E's pitch) and expanded in one product
             * straight into E's rows, padding columns included (act(bias) there: zeroed after). Per-row
             * products of 56 columns ran a third of them as dot products; a product into a contiguous
             * buffer then copied into E's rows cost the copy of cexp rows where this copies cin. */
            for (ptrdiff_t c = 0; c < g->cin; c++)
                for (ptrdiff_t row = a; row < b; row++)
                    FN(copy_short)(xp + c * xs + (row - a) * pitch + 1, xn + c * hw + row * g->w, g->w);
            FN(gemm)(0, 0, g->cexp, (b - a) * pitch, g->cin, (T)1, w1, g->cin, xp, xs, (T)0, e + (a - lo) * pitch, es,
                     pack, b1, g->act[0], lo0, hi0);
            for (ptrdiff_t c = 0; c < g->cexp; c++)
                for (ptrdiff_t row = a; row < b; row++) {
                    T *er = e + c * es + (row - lo) * pitch;
                    er[0] = er[pitch - 1] = 0; /* pitch = w + 2: one padding column each side (a loop
                                                * over the right one was a memset call per row: 2.5%
                                                * of MobileNetV2 at batch 1) */
                }
        }
        held = nin, held_lo = lo;
        for (ptrdiff_t c = 0; c < g->cexp; c++) {
            const T *ec = e + c * es, *wc = wd + c * 9;
            T *dc = d + c * nr * g->ow;
            const T init = bd ? bd[c] : (T)0;
            if (s == 1 && g->ow < VL) {
                const dw_geom tg = {.oh = nr, .ow = g->ow, .dw = 1}; /* the fields narrow_rows3 reads */
                V wv[9];
                for (int t = 0; t < 9; t++) wv[t] = FN(splat)(wc[t]);
                FN(narrow_rows3)(dc, &tg, ec, pitch, wv, FN(splat)(init), g->act[1], lo1, hi1);
                continue;
            }
            if (s == 1) {
                static const ptrdiff_t cs[3] = {0, 1, 2};
                FN(shared_rows_3)(dc, nr, g->ow, ec, cs, pitch, wc, init, g->act[1], lo1, hi1);
                continue;
            }
            V wv[9];
            for (int t = 0; t < 9; t++) wv[t] = FN(splat)(wc[t]);
            for (ptrdiff_t r = 0; r < nr; r += 2) {
                const int pair = r + 1 < nr;
                const T *rp[5];
                for (int i = 0; i < 3 + 2 * pair; i++) rp[i] = ec + (2 * r + i) * pitch;
                if (g->ow < VL)
                    FN(ir_s2_narrow)(dc, r, g->ow, pair, rp, wv, FN(splat)(init), g->act[1], lo1, hi1);
                else
                    FN(s2_rows)(dc + r * g->ow, g->ow, pair, rp, wv, FN(splat)(init), g->act[1], lo1, hi1);
            }
        }
        T *yt = yn + o0 * g->ow;
        FN(gemm)(0, 0, g->cout, nr * g->ow, g->cexp, (T)1, w2, g->cexp, d, nr * g->ow, (T)0, yt, ohw, pack, b2,
                 g->residual ? 0 : g->act[2], lo2, hi2);
        if (!g->residual) continue;
        for (ptrdiff_t c = 0; c < g->cout; c++) { /* the residual after the bias, as the unfused addition */
            T *yc = yt + c * ohw;
            FN(add_arrays)(yc, rn + c * ohw + o0 * g->ow, yc, 0, nr * g->ow);
            FN(activate_run)(yc, nr * g->ow, g->act[2], lo2, hi2);
        }
    }
}
#endif

/* Items [start, stop) (see ir_geom) of x (N, cin, H, W) into y (N, cout, OH, OW); w1 (cexp, cin) and
 * b1 (or NULL) the expansion's (ignored without one), wd (cexp, 9) and bd the depthwise's, w2 (cout,
 * cexp) and b2 the projection's, res (laid out as y) or NULL. Returns 0, or -2 where this variant or
 * the geometry is not one the kernel takes (the caller asks ir_supported first). */
static int FN(ir_forward)(const T *x, const T *w1, const T *b1, const T *wd, const T *bd, const T *w2, const T *b2,
                          const T *res, T *y, T *scratch, const ir_geom *g, ptrdiff_t start, ptrdiff_t stop)
{
#if VBYTES >= 32 && TSIZE == 4
    if (!FN(ir_fits)(g)) return -2;
    if (start >= stop) return 0;
    const ptrdiff_t e_size = ir_e_size(g), xp_size = ir_xp_size(g);
    T *e = scratch, *xp = e + e_size, *d = xp + xp_size, *pack = d + ir_d_size(g);
    /* the padding columns (and E's slack) zero; the rows between are written per tile */
    const ptrdiff_t pitch = ir_pitch(g), rows = ir_in_rows(g);
    if (g->expand == 2) { /* E zero (its channel slack too: read by junk lanes); the stem's weights packed */
        memset(e, 0, (size_t)e_size * sizeof(T));
        const ptrdiff_t pairs = g->cin * 9;
        T *wp = xp + ir_stem_planes(g);
        for (ptrdiff_t o0 = 0; o0 < g->cexp; o0 += GP_OB)
            for (ptrdiff_t u = 0; u < pairs; u++)
                for (int j = 0; j < GP_OB; j++) wp[o0 * pairs + u * GP_OB + j] = w1[(o0 + j) * pairs + u];
        w1 = wp;
    } else {
        for (ptrdiff_t r = 0; r < (g->cexp + (xp_size ? g->cin : 0)) * rows; r++) {
            T *row = (r < g->cexp * rows ? e : xp - g->cexp * rows * pitch) + r * pitch;
            row[0] = row[pitch - 1] = 0;
        }
        memset(e + g->cexp * rows * pitch, 0, (size_t)(e_size - g->cexp * rows * pitch) * sizeof(T));
    }
    for (ptrdiff_t item = start; item < stop; item++) {
        const ptrdiff_t img = item / g->bands, band = item % g->bands;
        const ptrdiff_t r0 = band * g->oh / g->bands, r1 = (band + 1) * g->oh / g->bands;
        FN(ir_item)(x, w1, b1, wd, bd, w2, b2, res, y, e, d, xp, pack, g, img, r0, r1);
    }
    return 0;
#else
    (void)x, (void)w1, (void)b1, (void)wd, (void)bd, (void)w2, (void)b2, (void)res, (void)y, (void)scratch, (void)g,
        (void)start, (void)stop;
    return -2;
#endif
}
