/* The per-frequency channel mixing of FFT convolution, one copy per (element type, ISA): kernels.h
 * includes this file with T, TSIZE, TI, VBYTES and SFX defined inside the ISA's target region.
 *
 * Complex values are interleaved (re, im) pairs of T. With rows of F complex values:
 *   out[n, g, j, f] = sum_i a[n, g, i, f] * op(b[g, j, i])[f],  f in [f0, f1),
 * a row (n, g, i) at ((n * G + g) * I + i) * F, out row (n, g, j) at ((n * G + g) * J + j) * F, b row
 * (g, j, i) at (g * I * J + j * sj + i * si) * F (sj, si: the forward's (O, C) rows, sj = I, si = 1;
 * the adjoint's (O, C) read transposed, sj = 1, si = J); op conjugates b when conj is set.
 * Frequencies split across threads without any shared output; the result at a frequency is the same
 * whichever range holds it (a range's last, partial vector is computed from zero-padded copies by the
 * same lanes).
 */

#if VBYTES == 64 /* 32 registers: 4 x 2 x 2 accumulators, 4 + 4 operands */
#define SM_NB 4
#define SM_JB 2
#elif VBYTES == 32 /* 16 registers: 2 x 2 x 2 accumulators */
#define SM_NB 2
#define SM_JB 2
#else
#define SM_NB 2
#define SM_JB 1
#endif
#define SM_CL (VL / 2) /* complex values per vector */
/* Vectors of frequencies per packed chunk (SM_FV_MAX in shared.h): the product loop reads packed
 * runs; reading the rows in place (a new line of another row per load) ran at 11-15 G multiply-adds/s. */
#define SM_FV SM_FV_MAX

/* acc1 += a * (re b, re b), acc2 += (im a, re a) * (im b, im b) per pair; the result is
 * acc1 + (+-acc2.re, -+acc2.im): (re, im) = conj ? (a1r + a2r, a1i - a2i) : (a1r - a2r, a1i + a2i). */
static inline __attribute__((always_inline)) V FN(sm_combine)(V acc1, V acc2, int conj)
{
    V sign;
    for (ptrdiff_t l = 0; l < VL; l++) sign[l] = (l & 1) != conj ? (T)1 : (T)-1;
    return acc1 + sign * acc2;
}

/* Copy rows (count of them, row k at base + k * stride) over nv vectors from complex value f into
 * dst[v][k]: each vector of frequencies a contiguous run of `count` vectors for the product loop. A
 * last vector past f1 takes the values before f1 and zeros (rows end there). */
static inline void FN(sm_pack)(T *dst, const T *base, ptrdiff_t count, ptrdiff_t stride, ptrdiff_t f, ptrdiff_t nv,
                               ptrdiff_t f1)
{
    const ptrdiff_t whole = f + nv * SM_CL <= f1 ? nv : nv - 1, rest = 2 * (f1 - f - whole * SM_CL);
    for (ptrdiff_t k = 0; k < count; k++) {
        for (ptrdiff_t v = 0; v < whole; v++)
            FN(store)(dst + (v * count + k) * VL, FN(load)(base + k * stride + 2 * (f + v * SM_CL)));
        if (whole < nv) {
            T lane[VL] = {0};
            memcpy(lane, base + k * stride + 2 * (f + whole * SM_CL), (size_t)rest * sizeof(T));
            FN(store)(dst + (whole * count + k) * VL, FN(load)(lane));
        }
    }
}

/* scratch: sm_scratch(g) elements (the packed chunk of a and of one block of b's rows) */
static void FN(spectral_mix)(const T *a, const T *b, T *out, T *scratch, const sm_geom *g, ptrdiff_t f0,
                             ptrdiff_t f1)
{
    IV swap, dup_re, dup_im;
#pragma GCC unroll 16
    for (ptrdiff_t l = 0; l < VL; l++) swap[l] = l ^ 1, dup_re[l] = l & ~(ptrdiff_t)1, dup_im[l] = l | 1;
    const ptrdiff_t row = 2 * g->nf, ni = g->ni; /* T values per row */
    T *apack = scratch, *bpack = scratch + g->n * ni * SM_FV * VL;
    for (ptrdiff_t grp = 0; grp < g->ng; grp++) {
        const T *bg = b + grp * ni * g->nj * row;
        for (ptrdiff_t c0 = f0; c0 < f1; c0 += SM_FV * SM_CL) {
            const ptrdiff_t left = (f1 - c0 + SM_CL - 1) / SM_CL, nv = left < SM_FV ? left : SM_FV;
            for (ptrdiff_t n = 0; n < g->n; n++) /* apack[n][v][i] */
                FN(sm_pack)(apack + n * nv * ni * VL, a + (n * g->ng + grp) * ni * row, ni, row, c0, nv, f1);
            for (ptrdiff_t j0 = 0; j0 < g->nj; j0 += SM_JB) {
                const T *br[SM_JB];
                for (int q = 0; q < SM_JB; q++) { /* rows past nj repeat the last one: computed, not stored */
                    const ptrdiff_t j = j0 + q < g->nj ? j0 + q : g->nj - 1;
                    FN(sm_pack)(bpack + q * nv * ni * VL, bg + j * g->sj * row, ni, g->si * row, c0, nv, f1);
                    br[q] = bpack + q * nv * ni * VL;
                }
                for (ptrdiff_t n0 = 0; n0 < g->n; n0 += SM_NB) {
                    const T *ar[SM_NB];
                    for (int p = 0; p < SM_NB; p++)
                        ar[p] = apack + (n0 + p < g->n ? n0 + p : g->n - 1) * nv * ni * VL;
                    for (ptrdiff_t v = 0; v < nv; v++) {
                        V acc1[SM_NB][SM_JB], acc2[SM_NB][SM_JB];
#pragma GCC unroll 8
                        for (int p = 0; p < SM_NB; p++)
#pragma GCC unroll 8
                            for (int q = 0; q < SM_JB; q++) acc1[p][q] = acc2[p][q] = (V){0};
                        const ptrdiff_t at = v * ni * VL;
                        for (ptrdiff_t i = 0; i < ni; i++) {
                            V bre[SM_JB], bim[SM_JB];
#pragma GCC unroll 8
                            for (int q = 0; q < SM_JB; q++) {
                                const V bv = FN(load)(br[q] + at + i * VL);
                                bre[q] = __builtin_shuffle(bv, dup_re);
                                bim[q] = __builtin_shuffle(bv, dup_im);
                            }
#pragma GCC unroll 8
                            for (int p = 0; p < SM_NB; p++) {
                                const V av = FN(load)(ar[p] + at + i * VL), as = __builtin_shuffle(av, swap);
#pragma GCC unroll 8
                                for (int q = 0; q < SM_JB; q++) {
                                    acc1[p][q] += av * bre[q];
                                    acc2[p][q] += as * bim[q];
                                }
                            }
                        }
                        const ptrdiff_t f = c0 + v * SM_CL, width = f1 - f < SM_CL ? f1 - f : SM_CL;
                        for (int p = 0; p < SM_NB && n0 + p < g->n; p++)
                            for (int q = 0; q < SM_JB && j0 + q < g->nj; q++) {
                                T *dst = out + (((n0 + p) * g->ng + grp) * g->nj + j0 + q) * row + 2 * f;
                                const V r = FN(sm_combine)(acc1[p][q], acc2[p][q], g->conj);
                                if (width == SM_CL) {
                                    FN(store)(dst, r);
                                } else { /* the row ends inside this vector */
                                    T lane[VL];
                                    FN(store)(lane, r);
                                    memcpy(dst, lane, (size_t)(2 * width) * sizeof(T));
                                }
                            }
                    }
                }
            }
        }
    }
}

#undef SM_NB
#undef SM_JB
#undef SM_CL
#undef SM_FV
