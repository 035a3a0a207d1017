/* A linear layer's product for a few rows, one copy per (element type, ISA): kernels.h includes this
 * file once per combination with T and SFX defined, inside the ISA's `#pragma GCC target` region.
 *
 * y (R, M) = x (R, K) @ w (M, K)^T for output columns [start, stop), all C-contiguous. Its cost is
 * reading w once (a classifier's 1000x1280 weight: 5 MB, cold in a network), so the callers split the
 * columns, i.e. w's rows, over the threads; four rows of w at a time share each vector of x.
 */

static void FN(linear_rows)(const T *x, const T *w, T *y, ptrdiff_t rows, ptrdiff_t k, ptrdiff_t m,
                            ptrdiff_t start, ptrdiff_t stop)
{
    const ptrdiff_t kv = k / VL * VL;
    for (ptrdiff_t j = start; j < stop; j += 4) {
        const ptrdiff_t nj = stop - j < 4 ? stop - j : 4;
        const T *w0 = w + j * k; /* rows past stop repeat w0: computed, never stored */
        const T *w1 = nj > 1 ? w0 + k : w0, *w2 = nj > 2 ? w0 + 2 * k : w0, *w3 = nj > 3 ? w0 + 3 * k : w0;
        /* the next four rows of w (contiguous after these) on their way while these are read: a network's
         * classifier weight comes from memory (docs/performance.md) */
        const T *next = j + 4 < stop ? w0 + 4 * k : NULL;
        for (ptrdiff_t r = 0; r < rows; r++) {
            const T *xr = x + r * k;
            V a0 = FN(splat)(0), a1 = a0, a2 = a0, a3 = a0;
            for (ptrdiff_t p = 0; p < kv; p += VL) {
                if (next && r == 0)
                    for (int o = 0; o < 4; o++) __builtin_prefetch(next + 4 * p + o * VL, 0, 3);
                const V xv = FN(load)(xr + p);
                a0 += FN(load)(w0 + p) * xv;
                a1 += FN(load)(w1 + p) * xv;
                a2 += FN(load)(w2 + p) * xv;
                a3 += FN(load)(w3 + p) * xv;
            }
            T s[4] = {FN(hsum)(a0), FN(hsum)(a1), FN(hsum)(a2), FN(hsum)(a3)};
            for (ptrdiff_t p = kv; p < k; p++) {
                s[0] += w0[p] * xr[p];
                s[1] += w1[p] * xr[p];
                s[2] += w2[p] * xr[p];
                s[3] += w3[p] * xr[p];
            }
            for (ptrdiff_t i = 0; i < nj; i++) y[r * m + j + i] = s[i];
        }
    }
}
