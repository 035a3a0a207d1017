/* A linear layer's product for a few rows, one copy per (element type, ISA): kernels.h includes this
 * file once per combination with T and SFX defined, inside the ISA's `#pragma GCC target` region.
 *
 * y (R, M) = x (R, K) @ w (M, K)^T for output columns [start, stop), all C-contiguous. Its cost is
 * reading w once (a classifier's 1000x1280 weight: 5 MB, cold in a network), so the callers split the
 * columns, i.e. w's rows, over the threads; a tile of four rows of w and four rows of x shares each loaded
 * vector (sixteen accumulators).
 */

/* s[r][i] = x row r . w row i for r < NR (a constant after inlining), i < 4; `next` (NULL: none) the four
 * rows of w after these, prefetched while these are read. */
static inline __attribute__((always_inline)) void FN(linear_tile)(const T *const xr[4], const T *const wr[4],
                                                                  ptrdiff_t k, const T *next, T s[4][4], int NR)
{
    const ptrdiff_t kv = k / VL * VL;
    V a[4][4];
    for (int r = 0; r < NR; r++)
        for (int i = 0; i < 4; i++) a[r][i] = FN(splat)(0);
    for (ptrdiff_t p = 0; p < kv; p += VL) {
        if (next)
            for (int o = 0; o < 4; o++) __builtin_prefetch(next + 4 * p + o * VL, 0, 3);
        V wv[4];
        for (int i = 0; i < 4; i++) wv[i] = FN(load)(wr[i] + p);
        for (int r = 0; r < NR; r++) {
            const V xv = FN(load)(xr[r] + p);
            for (int i = 0; i < 4; i++) a[r][i] += wv[i] * xv;
        }
    }
    for (int r = 0; r < NR; r++)
        for (int i = 0; i < 4; i++) {
            s[r][i] = FN(hsum)(a[r][i]);
            for (ptrdiff_t p = kv; p < k; p++) s[r][i] += wr[i][p] * xr[r][p];
        }
}

static void FN(linear_rows)(const T *x, const T *w, T *y, ptrdiff_t rows, ptrdiff_t k, ptrdiff_t m,
                            ptrdiff_t start, ptrdiff_t stop)
{
    for (ptrdiff_t j = start; j < stop; j += 4) {
        const ptrdiff_t nj = stop - j < 4 ? stop - j : 4;
        const T *wr[4]; /* rows past stop repeat the first: computed, never stored */
        for (int i = 0; i < 4; i++) wr[i] = w + (j + (i < nj ? i : 0)) * k;
        /* the next four rows of w (contiguous after these) on their way while these are read: a network's
         * classifier weight comes from memory (docs/performance.md) */
        const T *next = j + 4 < stop ? wr[0] + 4 * k : NULL;
        for (ptrdiff_t r0 = 0; r0 < rows; r0 += 4) { /* up to four rows of x share each vector of w */
            const ptrdiff_t nr = rows - r0 < 4 ? rows - r0 : 4;
            const T *xr[4]; /* rows past the last repeat the first: computed, never stored */
            for (int r = 0; r < 4; r++) xr[r] = x + (r0 + (r < nr ? r : 0)) * k;
            T s[4][4];
            if (nr == 1)
                FN(linear_tile)(xr, wr, k, r0 ? NULL : next, s, 1);
            else
                FN(linear_tile)(xr, wr, k, r0 ? NULL : next, s, 4);
            for (ptrdiff_t r = 0; r < nr; r++)
                for (ptrdiff_t i = 0; i < nj; i++) y[(r0 + r) * m + j + i] = s[r][i];
        }
    }
}
