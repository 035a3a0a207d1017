/* npconv's own packed GEMM, one copy per (element type, ISA): kernels.h includes this file with T,
 * TSIZE, TI, VBYTES and SFX defined inside a `#pragma GCC target` region.
 *
 * Row-major C (m x n, ldc) = alpha * op(A) @ op(B) + beta * C (beta == 0: C is not read), op(A) m x k
 * (stored k x m when trans_a), op(B) k x n (stored n x k when trans_b: packed through VL x VL register
 * transposes; not with trans_a, which goes to the BLAS). The loops are the classic ones (Goto / BLIS): n in GM_NC blocks, k in GM_KC blocks (B's
 * block packed into column panels GM_NR wide, the last one rounded up to whole vectors), m in GM_MC
 * blocks, then a register tile per (GM_MR rows, column panel): per k step, nv vector loads of the B
 * panel and GM_MR broadcasts of A's values feed GM_MR * nv fused multiply-adds. A is read where it
 * is (its few rows per tile stay in L1; packing it cost a quarter of Winograd's small products); the
 * tiles of a block's first column panel prefetch the next tile's rows of A.
 * With at most GM_DIRECT_ROWS rows of A, B is read in place too (gm_block_direct).
 * Single-threaded (callers run it on their worker threads); the caller owns the packing buffer
 * (GM_SCRATCH elements, blocking constants in blas.h). float32 on the vector ISAs (VBYTES >= 32)
 * uses it; float64 and the generic build call the BLAS.
 */

#if VBYTES >= 32 && TSIZE == 4
#if VBYTES == 64 /* 32 vector registers: 8 x 3 accumulators (8 rows: channel counts are multiples of 8) */
#define GM_MR 8
#else /* 16 registers: 4 x 3 accumulators */
#define GM_MR 4
#endif
#define GM_NV 3
#define GM_NR (GM_NV * VL)
#define GM_MC (GM_MC_MAX / GM_MR * GM_MR)
#define GM_DJ 3 /* columns per dot-product pass: GM_MR * GM_DJ accumulators */
#define GM_DOT_MAX (VL / 2)

/* The tile's loop: acc (GM_MR x nv vectors) = A (kc steps) @ B (kc rows of nv*VL values, row pitch bs:
 * nv*VL in a packed panel, the matrix's own pitch where B is read in place), A_VALUE(i) row i's value
 * at the current step, ADVANCE moving A to the next step; one loop for gm_tile's three addressings.
 * ahead (NULL: none): the kc rows (pitch bs, GM_NR values each) to prefetch, one per step. apf (NULL:
 * none): the next row tile's A (apf_rows rows of kc contiguous values, pitch apf_rs), one line per step. */
#define GM_TILE_LOOP(A_VALUE, ADVANCE)                                                                   \
    do {                                                                                                \
        _Pragma("GCC unroll 16") for (int i = 0; i < GM_MR; i++)                                        \
        _Pragma("GCC unroll 4") for (int v = 0; v < nv; v++) acc[i][v] = (V){0};                        \
        for (ptrdiff_t p = 0; p < kc; p++) {                                                            \
            V bv[GM_NV];                                                                                \
            _Pragma("GCC unroll 4") for (int v = 0; v < nv; v++) bv[v] = FN(load)(b + v * VL);          \
            if (apf) { /* a line of the next row tile's A per step, toward L2 (see gm_panel) */          \
                const ptrdiff_t at_ = p / GM_MR * (64 / TSIZE), i_ = p % GM_MR;                         \
                if (i_ < apf_rows && at_ < kc + 64 / TSIZE)                                             \
                    __builtin_prefetch(apf + i_ * apf_rs + (at_ < kc ? at_ : kc - 1), 0, 2);            \
            }                                                                                           \
            if (ahead) { /* the same row of a panel ahead, toward L2 (see gm_block_direct) */           \
                const T *q = ahead + p * bs;                                                            \
                _Pragma("GCC unroll 4") for (int o = 0; o < GM_NR; o += 64 / TSIZE)                     \
                    __builtin_prefetch(q + o, 0, 2);                                                    \
                __builtin_prefetch(q + GM_NR - 1, 0, 2);                                                \
            }                                                                                           \
            _Pragma("GCC unroll 16") for (int i = 0; i < GM_MR; i++)                                    \
            {                                                                                           \
                const V ai = FN(splat)(A_VALUE(i));                                                     \
                _Pragma("GCC unroll 4") for (int v = 0; v < nv; v++) acc[i][v] += ai * bv[v];           \
            }                                                                                           \
            ADVANCE;                                                                                    \
            b += bs;                                                                                    \
        }                                                                                               \
    } while (0)

/* acc (GM_MR x nv vectors) = rows row[i] (kc values each, pitch cs) @ B; nv and cs constants after
 * inlining. */
static inline __attribute__((always_inline)) void FN(gm_tile_rows)(ptrdiff_t kc, const T *const row[GM_MR],
                                                                     ptrdiff_t cs, const T *restrict b, ptrdiff_t bs,
                                                                     V acc[GM_MR][GM_NV], int nv, const T *ahead,
                                                                     const T *apf, ptrdiff_t apf_rows, ptrdiff_t apf_rs)
{
    ptrdiff_t at = 0;
#define GM_A_ROWS(i) row[i][at]
    GM_TILE_LOOP(GM_A_ROWS, at += cs);
#undef GM_A_ROWS
}

/* acc (GM_MR x nv vectors) = A rows (kc deep) @ b_pack (kc x nv*VL); nv a constant after inlining.
 * A is read in place, no packing: row i at a + i * rs (clamped to the valid rows: the copies'
 * products are not stored), step p at + p * cs. rs == 1 (A stored k x m: a step's values are
 * contiguous) and whole tiles of contiguous rows (cs == 1) get loops of their own: the latter reads
 * rows 0-3 and 4-7 from two bases as base[0], base[rs], base[2 * rs], base[3 * rs], where eight row
 * pointers left GCC three of them on the stack, updated in memory every step. */
static inline __attribute__((always_inline)) void FN(gm_tile)(ptrdiff_t kc, const T *restrict a, ptrdiff_t rs,
                                                                ptrdiff_t cs, ptrdiff_t rows, const T *restrict b,
                                                                ptrdiff_t bs, V acc[GM_MR][GM_NV], int nv,
                                                                const T *ahead, const T *apf, ptrdiff_t apf_rows)
{
    const ptrdiff_t apf_rs = rs;
    if (rs == 1 && rows == GM_MR) {
#define GM_A_CONTIGUOUS(i) a[i]
        GM_TILE_LOOP(GM_A_CONTIGUOUS, a += cs);
#undef GM_A_CONTIGUOUS
        return;
    }
    if (cs == 1 && rows == GM_MR) {
        const ptrdiff_t rs3 = 3 * rs;
        const T *a0 = a, *a4 = a + (GM_MR > 4 ? 4 * rs : 0);
#define GM_A_TWO_BASES(i) ((i) < 4 ? a0 : a4)[((i) & 3) == 0 ? 0 : ((i) & 3) == 1 ? rs : ((i) & 3) == 2 ? 2 * rs : rs3]
        GM_TILE_LOOP(GM_A_TWO_BASES, (a0++, a4++));
#undef GM_A_TWO_BASES
        return;
    }
    const T *row[GM_MR];
#pragma GCC unroll 16
    for (int i = 0; i < GM_MR; i++) row[i] = a + (i < rows ? i : 0) * rs;
    FN(gm_tile_rows)(kc, row, cs, b, bs, acc, nv, ahead, apf, apf_rows, apf_rs);
}
#undef GM_TILE_LOOP

/* C tile (rows x cols of it valid) = alpha * acc + beta * C, then (last k block) the epilogue:
 * + bias[row], act 1 ReLU (as np.maximum(v, 0)), 2 clamp to [lo, hi] (as np.clip). */
static inline __attribute__((always_inline)) void FN(gm_store)(T *c, ptrdiff_t ldc, ptrdiff_t rows, ptrdiff_t cols,
                                                                 V acc[GM_MR][GM_NV], int nv, T alpha, T beta,
                                                                 const T *bias, int act, T lo, T hi)
{
    const V va = FN(splat)(alpha), vb = FN(splat)(beta);
#pragma GCC unroll 16
    for (int i = 0; i < GM_MR; i++) {
        if (i >= rows) break;
        T *dst = c + i * ldc;
        const V bi = FN(splat)(bias ? bias[i] : (T)0);
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) {
            const ptrdiff_t j = v * VL;
            const int whole = j + VL <= cols;
            V r = alpha == 1 ? acc[i][v] : va * acc[i][v];
            if (beta != 0) {
                V old;
                if (whole) {
                    old = FN(load)(dst + j);
                } else {
                    T lane[VL] __attribute__((aligned(VBYTES))) = {0};
                    for (ptrdiff_t l = 0; l < cols - j; l++) lane[l] = dst[j + l];
                    old = FN(load)(lane);
                }
                r += vb * old;
            }
            if (bias) r += bi;
            r = FN(activate)(r, act, lo, hi);
            if (whole) {
                FN(store)(dst + j, r);
            } else {
                T lane[VL] __attribute__((aligned(VBYTES)));
                FN(store)(lane, r);
                for (ptrdiff_t l = 0; l < cols - j && l < VL; l++) dst[j + l] = lane[l];
            }
        }
    }
}

/* Dot products of rows row[i] (kc values, contiguous) with nj columns bt[j * kc ...] into dot[i][j0 + j];
 * nj a constant after inlining. */
static inline __attribute__((always_inline)) void FN(gm_dot_cols)(ptrdiff_t kc, const T *const row[GM_MR],
                                                                    const T *bt, T dot[GM_MR][VL], ptrdiff_t j0,
                                                                    int nj)
{
    const ptrdiff_t kv = kc / VL * VL;
    V acc[GM_MR][GM_DJ];
#pragma GCC unroll 16
    for (int i = 0; i < GM_MR; i++)
#pragma GCC unroll 4
        for (int j = 0; j < nj; j++) acc[i][j] = (V){0};
    for (ptrdiff_t p = 0; p < kv; p += VL) {
        V bv[GM_DJ];
#pragma GCC unroll 4
        for (int j = 0; j < nj; j++) bv[j] = FN(load)(bt + (j0 + j) * kc + p);
#pragma GCC unroll 16
        for (int i = 0; i < GM_MR; i++) {
            const V ai = FN(load)(row[i] + p);
#pragma GCC unroll 4
            for (int j = 0; j < nj; j++) acc[i][j] += ai * bv[j];
        }
    }
    for (int i = 0; i < GM_MR; i++)
        for (int j = 0; j < nj; j++) {
            T s = FN(hsum)(acc[i][j]);
            for (ptrdiff_t p = kv; p < kc; p++) s += row[i][p] * bt[(j0 + j) * kc + p];
            dot[i][j0 + j] = s;
        }
}

/* C (m x rem, ldc; rem < VL) = alpha * A[:, :kc] @ Bt^T + beta * C, then the epilogue as gm_store: a
 * ragged panel's last rem columns as dot products along k (A's rows contiguous, cs == 1; column j of B
 * at bt + j * kc), where a broadcast tile would spend a whole vector of lanes on them. */
static void FN(gm_dots)(ptrdiff_t m, ptrdiff_t kc, const T *a, ptrdiff_t rs, const T *bt, ptrdiff_t rem, T *c,
                        ptrdiff_t ldc, T alpha, T beta, const T *bias, int act, T lo, T hi)
{
    for (ptrdiff_t r = 0; r < m; r += GM_MR) {
        const ptrdiff_t rows = m - r < GM_MR ? m - r : GM_MR;
        const T *row[GM_MR];
#pragma GCC unroll 16
        for (int i = 0; i < GM_MR; i++) row[i] = a + (r + (i < rows ? i : 0)) * rs;
        T dot[GM_MR][VL];
        ptrdiff_t j0 = 0;
        for (; j0 + GM_DJ <= rem; j0 += GM_DJ) FN(gm_dot_cols)(kc, row, bt, dot, j0, GM_DJ);
        if (rem - j0 == 2) FN(gm_dot_cols)(kc, row, bt, dot, j0, 2);
        else if (rem - j0 == 1) FN(gm_dot_cols)(kc, row, bt, dot, j0, 1);
        for (ptrdiff_t i = 0; i < rows; i++) /* gm_store's epilogue, one value at a time */
            for (ptrdiff_t j = 0; j < rem; j++) {
                T *dst = c + (r + i) * ldc + j, v = alpha == 1 ? dot[i][j] : alpha * dot[i][j];
                if (beta != 0) v += beta * *dst;
                if (bias) v += bias[r + i];
                *dst = FN(activate)(FN(splat)(v), act, lo, hi)[0];
            }
    }
}

/* Width (elements) of the column panel starting at s of an nc-column block: GM_NR, the last one
 * rounded up to whole vectors. */
static inline ptrdiff_t FN(gm_width)(ptrdiff_t nc, ptrdiff_t s)
{
    const ptrdiff_t left = nc - s;
    return left >= GM_NR ? GM_NR : (left + VL - 1) / VL * VL;
}

/* Pack rows row[0..kc) (nc elements each) into column panels (gm_width wide, zero columns past nc);
 * the panel starting at column s begins at dst + s * kc. */
static void FN(gm_pack_rows)(T *restrict dst, const T *const *row, ptrdiff_t kc, ptrdiff_t nc)
{
    for (ptrdiff_t s = 0; s < nc; s += GM_NR) {
        const ptrdiff_t wd = FN(gm_width)(nc, s), cols = nc - s < wd ? nc - s : wd;
        if (cols == GM_NR) {
            for (ptrdiff_t p = 0; p < kc; p++)
#pragma GCC unroll 4
                for (int v = 0; v < GM_NV; v++) FN(store)(dst + p * GM_NR + v * VL, FN(load)(row[p] + s + v * VL));
        } else {
            for (ptrdiff_t p = 0; p < kc; p++) {
                ptrdiff_t j = 0;
                for (; j < cols; j++) dst[p * wd + j] = row[p][s + j];
                for (; j < wd; j++) dst[p * wd + j] = 0;
            }
        }
        dst += kc * wd;
    }
}

/* Pack B[p0:p0+kc, j0:j0+nc] (row pitch ldb) as gm_pack_rows does. */
static void FN(gm_pack_b)(T *restrict dst, const T *b, ptrdiff_t ldb, ptrdiff_t p0, ptrdiff_t kc, ptrdiff_t j0,
                          ptrdiff_t nc)
{
    const T *row[GM_KC];
    for (ptrdiff_t p = 0; p < kc; p++) row[p] = b + (p0 + p) * ldb + j0;
    FN(gm_pack_rows)(dst, row, kc, nc);
}

/* Pack B[p0:p0+kc, j0:j0+nc] of a B stored transposed (B[p][j] = bt[j * ldb + p]) as gm_pack_rows
 * does: VL columns x VL k steps at a time through a register transpose, the rest value by value. */
static void FN(gm_pack_bt)(T *restrict dst, const T *bt, ptrdiff_t ldb, ptrdiff_t p0, ptrdiff_t kc, ptrdiff_t j0,
                           ptrdiff_t nc)
{
    const ptrdiff_t kv = kc / VL * VL;
    for (ptrdiff_t s = 0; s < nc; s += GM_NR) {
        const ptrdiff_t wd = FN(gm_width)(nc, s), cols = nc - s < wd ? nc - s : wd;
        for (ptrdiff_t v = 0; v < wd; v += VL) {
            const T *src = bt + (j0 + s + v) * ldb + p0;
            if (cols - v >= VL) {
                for (ptrdiff_t p = 0; p < kv; p += VL) {
                    V r[VL];
                    for (ptrdiff_t l = 0; l < VL; l++) r[l] = FN(load)(src + l * ldb + p);
                    FN(transpose)(r);
                    for (ptrdiff_t l = 0; l < VL; l++) FN(store)(dst + (p + l) * wd + v, r[l]);
                }
                for (ptrdiff_t p = kv; p < kc; p++)
                    for (ptrdiff_t l = 0; l < VL; l++) dst[p * wd + v + l] = src[l * ldb + p];
            } else {
                for (ptrdiff_t p = 0; p < kc; p++)
                    for (ptrdiff_t l = 0; l < VL; l++) dst[p * wd + v + l] = l < cols - v ? src[l * ldb + p] : 0;
            }
        }
        dst += kc * wd;
    }
}

/* The rows of A a tile at row r of mc prefetches for the next one (*rows of them): the next tile's,
 * or after's (after_rows, 0: none) past the last; NULL where after is (no prefetch). */
static inline const T *FN(gm_next_tile)(const T *a, ptrdiff_t rs, ptrdiff_t r, ptrdiff_t mc, const T *after,
                                        ptrdiff_t after_rows, ptrdiff_t *rows)
{
    if (r + GM_MR < mc) {
        *rows = mc - r - GM_MR < GM_MR ? mc - r - GM_MR : GM_MR;
        return after ? a + (r + GM_MR) * rs : NULL;
    }
    *rows = after_rows;
    return after;
}

/* One panel's tiles for nv vectors of columns (nv constant after inlining): rows [0, mc) of A, the
 * panel's rows at pitch bs. cnext (NULL: none): the next panel's C, whose lines in a tile's rows the
 * tile prefetches (a layer's output is cold in a network: each line comes from memory before its
 * first store, and the dozens of row streams are more than the hardware prefetcher follows). */
static inline __attribute__((always_inline)) void FN(gm_panel)(ptrdiff_t kc, ptrdiff_t mc, const T *a, ptrdiff_t rs,
                                                                 ptrdiff_t cs, const T *bp, ptrdiff_t bs, T *c, ptrdiff_t ldc,
                                                                 ptrdiff_t cols, int nv, T alpha, T beta,
                                                                 const T *bias, int act, T lo, T hi, const T *ahead,
                                                                 const T *after, ptrdiff_t after_rows, const T *cnext)
{
    for (ptrdiff_t r = 0; r < mc; r += GM_MR) {
        const ptrdiff_t rows = mc - r < GM_MR ? mc - r : GM_MR;
        if (cnext) /* toward L2, for writing */
            for (ptrdiff_t i = 0; i < rows; i++) {
                const char *q = (const char *)(cnext + (r + i) * ldc), *end = (const char *)(cnext + (r + i) * ldc + GM_NR);
                for (q = (const char *)((uintptr_t)q & ~(uintptr_t)63); q < end; q += 64) __builtin_prefetch(q, 1, 2);
            }
        /* after (NULL: no prefetch of A): the after_rows rows of A following these (0: none); each tile
         * prefetches the next tile's rows while it runs (rows of A contiguous only) */
        ptrdiff_t next_rows;
        const T *next = FN(gm_next_tile)(a, rs, r, mc, cs == 1 ? after : NULL, after_rows, &next_rows);
        V acc[GM_MR][GM_NV];
        FN(gm_tile)(kc, a + r * rs, rs, cs, rows, bp, bs, acc, nv, r ? NULL : ahead, next, next_rows);
        FN(gm_store)(c + r * ldc, ldc, rows, cols, acc, nv, alpha, beta, bias ? bias + r : NULL, act, lo, hi);
    }
}

/* gm_panel at 1, 2 and 3 vectors, out of line: one copy of each for all of gm_block's and gm_block_direct's
 * call sites (inlined at each, they were half of the AVX-512 unit's compile time: docs/performance.md). */
#define GM_PANEL_NV(nv)                                                                                    \
    static __attribute__((noinline)) void FN(CAT(gm_panel, nv))(                                            \
        ptrdiff_t kc, ptrdiff_t mc, const T *a, ptrdiff_t rs, ptrdiff_t cs, const T *bp, ptrdiff_t bs, T *c,    \
        ptrdiff_t ldc, ptrdiff_t cols, T alpha, T beta, const T *bias, int act, T lo, T hi, const T *ahead,    \
        const T *after, ptrdiff_t after_rows, const T *cnext)                                               \
    {                                                                                                       \
        FN(gm_panel)(kc, mc, a, rs, cs, bp, bs, c, ldc, cols, nv, alpha, beta, bias, act, lo, hi, ahead, after, \
                     after_rows, cnext);                                                                    \
    }
GM_PANEL_NV(1)
GM_PANEL_NV(2)
GM_PANEL_NV(3)
#undef GM_PANEL_NV

/* gm_panel for a panel wd elements wide (GM_NR, 2 or 1 vectors), its rows at pitch bs. */
static inline void FN(gm_panel_of)(ptrdiff_t wd, ptrdiff_t kc, ptrdiff_t mc, const T *a, ptrdiff_t rs, ptrdiff_t cs,
                                   const T *bp, ptrdiff_t bs, T *c, ptrdiff_t ldc, ptrdiff_t cols, T alpha, T beta,
                                   const T *bias, int act, T lo, T hi, const T *ahead, const T *after,
                                   ptrdiff_t after_rows, const T *cnext)
{
    if (wd == GM_NR)
        FN(CAT(gm_panel, GM_NV))(kc, mc, a, rs, cs, bp, bs, c, ldc, cols, alpha, beta, bias, act, lo, hi, ahead, after,
                                 after_rows, cnext);
#if GM_NV > 2
    else if (wd == 2 * VL)
        FN(gm_panel_2)(kc, mc, a, rs, cs, bp, bs, c, ldc, cols, alpha, beta, bias, act, lo, hi, NULL, after,
                       after_rows, cnext);
#endif
    else
        FN(gm_panel_1)(kc, mc, a, rs, cs, bp, bs, c, ldc, cols, alpha, beta, bias, act, lo, hi, NULL, after,
                       after_rows, cnext);
}

/* The last panel of a block's whole vectors (gm_panel_of: wd selects the vector count, pitch bs) and the
 * block's rem leftover columns (gm_dots, column j at bt + j * kc, C at cr) a row tile at a time, so the
 * dot products read A's rows from L1 right after the tile did. */
static inline __attribute__((always_inline)) void FN(gm_panel_dots)(ptrdiff_t wd, ptrdiff_t kc, ptrdiff_t mc,
                                                                      const T *a, ptrdiff_t rs, ptrdiff_t cs,
                                                                      const T *bp, ptrdiff_t bs, T *c, const T *bt,
                                                                      ptrdiff_t rem, T *cr, ptrdiff_t ldc, T alpha,
                                                                      T beta, const T *bias, int act, T lo, T hi,
                                                                      const T *after, ptrdiff_t after_rows)
{
    for (ptrdiff_t r = 0; r < mc; r += GM_MR) {
        const ptrdiff_t rows = mc - r < GM_MR ? mc - r : GM_MR;
        const T *br = bias ? bias + r : NULL;
        ptrdiff_t next_rows;
        const T *next = FN(gm_next_tile)(a, rs, r, mc, after, after_rows, &next_rows);
        if (wd)
            FN(gm_panel_of)(wd, kc, rows, a + r * rs, rs, cs, bp, bs, c + r * ldc, ldc, wd, alpha, beta, br, act, lo,
                            hi, NULL, next, next_rows, NULL);
        FN(gm_dots)(rows, kc, a + r * rs, rs, bt, rem, cr + r * ldc, ldc, alpha, beta, br, act, lo, hi);
    }
}

/* Columns left over after a block's whole vectors that go to gm_dots (0: none): A's rows contiguous, a depth
 * that fits bt, at most VL / 2 of them (VL / 4 beside a one-vector tile, itself bound by loads); past that
 * a vector of the tile costs less (measured in docs/performance.md). */
static inline ptrdiff_t FN(gm_dot_cols_of)(ptrdiff_t nc, ptrdiff_t kc, ptrdiff_t cs)
{
    const ptrdiff_t rem = nc % VL;
    return cs == 1 && kc <= GM_KC && rem <= (nc - rem == VL ? VL / 4 : GM_DOT_MAX) ? rem : 0;
}

/* C (m x nc, ldc) = alpha * A[:, :kc] @ B + beta * C, then the epilogue (bias may be NULL), with
 * B already packed in column panels (gm_pack_rows's layout with panel s at panels + s * depth:
 * depth kc for one packed block, or the whole depth when rows [koff, koff + kc) of deeper panels
 * are used); A as in gm_tile. */
static void FN(gm_block)(ptrdiff_t m, ptrdiff_t nc, ptrdiff_t kc, const T *a, ptrdiff_t rs, ptrdiff_t cs,
                         const T *panels, ptrdiff_t depth, ptrdiff_t koff, T *c, ptrdiff_t ldc, T alpha, T beta,
                         const T *bias, int act, T lo, T hi)
{
    const ptrdiff_t rem = FN(gm_dot_cols_of)(nc, kc, cs), body = nc - rem;
    T bt[GM_DOT_MAX * GM_KC] __attribute__((aligned(VBYTES)));
    if (rem) { /* the leftover columns' values, transposed */
        const ptrdiff_t s = body / GM_NR * GM_NR, wd = FN(gm_width)(nc, s);
        const T *bp = panels + s * depth + koff * wd + body - s;
        for (ptrdiff_t j = 0; j < rem; j++)
            for (ptrdiff_t p = 0; p < kc; p++) bt[j * kc + p] = bp[p * wd + j];
    }
    for (ptrdiff_t i0 = 0; i0 < m; i0 += GM_MC) { /* A's MC x KC block stays in L2 */
        const ptrdiff_t mc = m - i0 < GM_MC ? m - i0 : GM_MC;
        const T *ab = a + i0 * rs, *bis = bias ? bias + i0 : NULL;
        T *ci = c + i0 * ldc;
        /* A is read in place: the first panel's tiles, A's first touch (a layer's weights, cold from
         * memory), prefetch the next tile's rows, the last one the next block's first (if any) */
        const T *after = i0 + mc < m ? a + (i0 + mc) * rs : ab;
        const ptrdiff_t after_rows = i0 + mc < m ? (m - i0 - mc < GM_MR ? m - i0 - mc : GM_MR) : 0;
        if (!body)
            FN(gm_panel_dots)(0, kc, mc, ab, rs, cs, NULL, 0, ci, bt, rem, ci, ldc, alpha, beta, bis, act, lo, hi, NULL,
                              0);
        for (ptrdiff_t s = 0; s < body; s += GM_NR) {
            /* panels packed over nc columns (pitch wd); the tiles cover the body's (wb <= wd) */
            const ptrdiff_t wd = FN(gm_width)(nc, s), wb = FN(gm_width)(body, s), cols = body - s < wb ? body - s : wb;
            const T *bp = panels + s * depth + koff * wd;
            if (rem && s + wb >= body)
                FN(gm_panel_dots)(wb, kc, mc, ab, rs, cs, bp, wd, ci + s, bt, rem, ci + body, ldc, alpha, beta, bis,
                                  act, lo, hi, s ? NULL : after, after_rows);
            else
                FN(gm_panel_of)(wb, kc, mc, ab, rs, cs, bp, wd, ci + s, ldc, cols, alpha, beta, bis, act, lo, hi, NULL,
                                s ? NULL : after, after_rows, s + GM_NR < body ? ci + s + GM_NR : NULL);
        }
    }
}

/* gm_block with B[:kc, :nc] read where it is (row pitch ldb) instead of packed: whole-vector panels
 * straight from B's rows, a ragged last panel packed into scratch (its rows end inside the panel).
 * For few rows of A, where packing B cost as much as the products (each packed value fed only
 * m / GM_MR tiles), measured in docs/performance.md. */
static void FN(gm_block_direct)(ptrdiff_t m, ptrdiff_t nc, ptrdiff_t kc, const T *a, ptrdiff_t rs, ptrdiff_t cs,
                                const T *b, ptrdiff_t ldb, T *scratch, T *c, ptrdiff_t ldc, T alpha, T beta,
                                const T *bias, int act, T lo, T hi)
{
    const ptrdiff_t rem = FN(gm_dot_cols_of)(nc, kc, cs), body = nc - rem;
    T bt[GM_DOT_MAX * GM_KC] __attribute__((aligned(VBYTES)));
    for (ptrdiff_t j = 0; j < rem; j++) /* the leftover columns' values, transposed */
        for (ptrdiff_t p = 0; p < kc; p++) bt[j * kc + p] = b[p * ldb + body + j];
    if (!body) FN(gm_panel_dots)(0, kc, m, a, rs, cs, NULL, 0, c, bt, rem, c, ldc, alpha, beta, bias, act, lo, hi, NULL, 0);
    for (ptrdiff_t s = 0; s < body; s += GM_NR) {
        const ptrdiff_t wd = FN(gm_width)(body, s), cols = body - s < wd ? body - s : wd;
        const T *bp = b + s;
        ptrdiff_t bs = ldb;
        if (rem && s + wd >= body) {
            FN(gm_panel_dots)(wd, kc, m, a, rs, cs, bp, bs, c + s, bt, rem, c + body, ldc, alpha, beta, bias, act, lo,
                              hi, s ? NULL : a, 0);
            continue;
        }
        if (cols < wd) {
            const T *row[GM_KC];
            for (ptrdiff_t p = 0; p < kc; p++) row[p] = b + p * ldb + s;
            FN(gm_pack_rows)(scratch, row, kc, cols);
            bp = scratch, bs = wd;
        }
        /* B's kc rows lie ldb apart: past a dozen or so streams the hardware prefetcher lets each row's
         * lines come from L3 or memory on demand (MobileNetV2's 1x1 layers at batch 8 ran at a third
         * of their in-cache speed), so the first row tile prefetches the panel two ahead */
        const T *ahead = bp == b + s && s + 3 * GM_NR <= body ? b + s + 2 * GM_NR : NULL;
        FN(gm_panel_of)(wd, kc, m, a, rs, cs, bp, bs, c + s, ldc, cols, alpha, beta, bias, act, lo, hi, ahead,
                        s ? NULL : a, 0, s + GM_NR < body ? c + s + GM_NR : NULL);
    }
}

/* At 32-byte vectors a transposed A (stored k x m, pitch lda) whose pitch is a multiple of 2 KiB is
 * copied block by block into rows first: a tile's successive k steps, lda apart, all fall into one or
 * two L1 sets (4K aliasing). The 64-byte tiles read twice the values per step and lost to the copy. */
static inline int FN(gm_aliased)(int trans_a, ptrdiff_t lda)
{
    return VBYTES == 32 && trans_a && ((size_t)lda * sizeof(T)) % 2048 == 0;
}

/* dst (rows x kc, pitch kc) = rows [0, rows) of A stored k x m (a[p * lda + i]), k steps [0, kc). */
static void FN(gm_pack_at)(T *restrict dst, const T *a, ptrdiff_t lda, ptrdiff_t rows, ptrdiff_t kc)
{
    for (ptrdiff_t p0 = 0; p0 < kc; p0 += 8) /* blocks of 8 k steps (8 source lines, one L1 set) x VL rows */
        for (ptrdiff_t i0 = 0; i0 < rows; i0 += VL)
            for (ptrdiff_t p = p0; p < p0 + 8 && p < kc; p++)
                for (ptrdiff_t i = i0; i < i0 + VL && i < rows; i++) dst[i * kc + p] = a[p * lda + i];
}

/* The GEMM described at the top, with an epilogue on the result: + bias[i] for row i (bias may be
 * NULL), then act (0 none, 1 ReLU, 2 clamp to [lo, hi]). scratch holds GM_SCRATCH elements. */
static void FN(gemm)(int trans_a, int trans_b, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, T alpha, const T *a,
                     ptrdiff_t lda, const T *b, ptrdiff_t ldb, T beta, T *c, ptrdiff_t ldc, T *scratch, const T *bias,
                     int act, T lo, T hi)
{
    const ptrdiff_t rs = trans_a ? 1 : lda, cs = trans_a ? lda : 1;
    if (m <= 0 || n <= 0) return;
    if (k <= 0) { /* op(A) @ B is zero: the epilogue on beta * C, a 0-deep tile at a time */
        for (ptrdiff_t j0 = 0; j0 < n; j0 += GM_NR)
            for (ptrdiff_t i0 = 0; i0 < m; i0 += GM_MR) {
                V acc[GM_MR][GM_NV];
                FN(gm_tile)(0, a, rs, cs, 1, b, 0, acc, GM_NV, NULL, NULL, 0);
                FN(gm_store)(c + i0 * ldc + j0, ldc, m - i0 < GM_MR ? m - i0 : GM_MR, n - j0 < GM_NR ? n - j0 : GM_NR,
                             acc, GM_NV, alpha, beta, bias ? bias + i0 : NULL, act, lo, hi);
            }
        return;
    }
    for (ptrdiff_t j0 = 0; j0 < n; j0 += GM_NC) {
        const ptrdiff_t nc = n - j0 < GM_NC ? n - j0 : GM_NC;
        for (ptrdiff_t p0 = 0; p0 < k; p0 += GM_KC) {
            const ptrdiff_t kc = k - p0 < GM_KC ? k - p0 : GM_KC;
            const int last = p0 + kc >= k;
            const T be = p0 == 0 ? beta : 1, *bi = last ? bias : NULL;
            const int ac = last ? act : 0;
            if (trans_b) { /* (not with trans_a: see FN(mm)) */
                FN(gm_pack_bt)(scratch, b, ldb, p0, kc, j0, nc);
                FN(gm_block)(m, nc, kc, a + p0, lda, 1, scratch, kc, 0, c + j0, ldc, alpha, be, bi, ac, lo, hi);
                continue;
            }
            if (FN(gm_aliased)(trans_a, lda)) { /* A's blocks copied into rows (pitch kc) */
                T *ap = scratch + (ptrdiff_t)GM_KC * GM_NC;
                if (m > GM_DIRECT_ROWS) FN(gm_pack_b)(scratch, b, ldb, p0, kc, j0, nc);
                for (ptrdiff_t i0 = 0; i0 < m; i0 += GM_MC) {
                    const ptrdiff_t mc = m - i0 < GM_MC ? m - i0 : GM_MC;
                    FN(gm_pack_at)(ap, a + p0 * lda + i0, lda, mc, kc);
                    if (m <= GM_DIRECT_ROWS)
                        FN(gm_block_direct)(mc, nc, kc, ap, kc, 1, b + p0 * ldb + j0, ldb, scratch, c + i0 * ldc + j0,
                                            ldc, alpha, be, bi ? bi + i0 : NULL, ac, lo, hi);
                    else
                        FN(gm_block)(mc, nc, kc, ap, kc, 1, scratch, kc, 0, c + i0 * ldc + j0, ldc, alpha, be,
                                     bi ? bi + i0 : NULL, ac, lo, hi);
                }
                continue;
            }
            if (m <= GM_DIRECT_ROWS) {
                FN(gm_block_direct)(m, nc, kc, a + p0 * cs, rs, cs, b + p0 * ldb + j0, ldb, scratch, c + j0, ldc,
                                    alpha, be, bi, ac, lo, hi);
                continue;
            }
            FN(gm_pack_b)(scratch, b, ldb, p0, kc, j0, nc);
            FN(gm_block)(m, nc, kc, a + p0 * cs, rs, cs, scratch, kc, 0, c + j0, ldc, alpha, be, bi, ac, lo, hi);
        }
    }
}

#endif /* VBYTES >= 32 && TSIZE == 4 (GM_MR, GM_NV, GM_NR, GM_MC: undefined at the end of kernels.h) */

/* C = alpha * op(A) @ op(B) + beta * C (the contract of gemm_rm): npconv's gemm for float32 on the
 * vector ISAs when fns->own is set (pack: GM_SCRATCH elements), else SciPy's BLAS. With bias or act,
 * npconv's gemm also applies the epilogue (+ bias[i] on row i, then act; see FN(gemm)) and returns
 * 1; a return of 0 leaves it to the caller. */
static inline int FN(mm)(const gemm_fns *fns, T *pack, int trans_a, int trans_b, ptrdiff_t m, ptrdiff_t n,
                         ptrdiff_t k, double alpha, const T *a, ptrdiff_t lda, const T *b, ptrdiff_t ldb,
                         double beta, T *c, ptrdiff_t ldc, const T *bias, int act, double lo, double hi)
{
#if VBYTES >= 32 && TSIZE == 4
    if (fns->own && !(trans_a && trans_b)) {
        FN(gemm)(trans_a, trans_b, m, n, k, (T)alpha, a, lda, b, ldb, (T)beta, c, ldc, pack, bias, act, (T)lo, (T)hi);
        return 1;
    }
#endif
    (void)pack, (void)bias, (void)act, (void)lo, (void)hi;
    gemm_rm(fns, TSIZE, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return 0;
}
