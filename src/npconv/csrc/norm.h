/* Batch norm per channel, one copy per (element type, ISA): kernels.h includes this file once per
 * combination with T and SFX defined, inside the ISA's `#pragma GCC target` region.
 *
 * Layout: x, y, gy, gx (N, C, S) C-contiguous; a channel is N rows of S elements, C * S apart.
 * stats (3, C): mean, biased variance, invstd = 1 / sqrt(var + eps). Statistics accumulate in double
 * (float32 inputs widened), the variance centred on a first-pass mean and corrected by the centred
 * sum (npconv.kernels.pointwise's formulas); the elementwise passes run in T on the channel's rows
 * while they are in cache. Channels are independent: a NaN or inf reaches only its own channel.
 */

typedef double FN(dvec) __attribute__((vector_size(VBYTES)));
typedef T FN(nvec) __attribute__((vector_size(VBYTES / 8 * TSIZE)));
#define DVEC FN(dvec)
#define DL ((ptrdiff_t)(VBYTES / 8))

/* DL values of T from p as doubles. */
static inline DVEC FN(bn_wide)(const T *p)
{
    FN(nvec) v;
    memcpy(&v, p, sizeof v);
    return __builtin_convertvector(v, DVEC);
}

static inline double FN(bn_total)(DVEC v)
{
    double s = 0;
    for (ptrdiff_t l = 0; l < DL; l++) s += v[l];
    return s;
}

/* One channel's N rows of S elements (rows `stride` apart): out[0] = sum(x - centre), out[1] =
 * sum((x - centre)**2) (only with `squares`). */
static void FN(bn_moments)(const T *x, ptrdiff_t rows, ptrdiff_t stride, ptrdiff_t len, double centre, int squares,
                           double *out)
{
    const DVEC m = centre - (DVEC){0};
    DVEC s0 = {0}, s1 = {0}, q0 = {0}, q1 = {0};
    double s = 0, q = 0;
    for (ptrdiff_t r = 0; r < rows; r++) {
        const T *p = x + r * stride;
        ptrdiff_t i = 0;
        if (squares) {
            for (; i + 2 * DL <= len; i += 2 * DL) {
                const DVEC d0 = FN(bn_wide)(p + i) - m, d1 = FN(bn_wide)(p + i + DL) - m;
                s0 += d0;
                s1 += d1;
                q0 += d0 * d0;
                q1 += d1 * d1;
            }
            for (; i < len; i++) {
                const double d = (double)p[i] - centre;
                s += d;
                q += d * d;
            }
        } else {
            for (; i + 2 * DL <= len; i += 2 * DL) {
                s0 += FN(bn_wide)(p + i);
                s1 += FN(bn_wide)(p + i + DL);
            }
            for (; i < len; i++) s += (double)p[i];
        }
    }
    out[0] = s + FN(bn_total)(s0 + s1);
    out[1] = q + FN(bn_total)(q0 + q1);
}

/* out[0] = sum(g), out[1] = sum(g * (x - centre)) over one channel's rows of g and x. */
static void FN(bn_dot)(const T *g, const T *x, ptrdiff_t rows, ptrdiff_t stride, ptrdiff_t len, double centre,
                       double *out)
{
    const DVEC m = centre - (DVEC){0};
    DVEC s0 = {0}, s1 = {0}, d0 = {0}, d1 = {0};
    double s = 0, d = 0;
    for (ptrdiff_t r = 0; r < rows; r++) {
        const T *gp = g + r * stride, *xp = x + r * stride;
        ptrdiff_t i = 0;
        for (; i + 2 * DL <= len; i += 2 * DL) {
            const DVEC g0 = FN(bn_wide)(gp + i), g1 = FN(bn_wide)(gp + i + DL);
            s0 += g0;
            s1 += g1;
            d0 += g0 * (FN(bn_wide)(xp + i) - m);
            d1 += g1 * (FN(bn_wide)(xp + i + DL) - m);
        }
        for (; i < len; i++) {
            s += (double)gp[i];
            d += (double)gp[i] * ((double)xp[i] - centre);
        }
    }
    out[0] = s + FN(bn_total)(s0 + s1);
    out[1] = d + FN(bn_total)(d0 + d1);
}

/* Over one channel's rows: out = (x - m) * a + b without g; with g and x: out = g * k + (x - m) * a + b;
 * with g alone (x NULL): out = g * k (an inf in x must not reach it as inf * 0). */
static void FN(bn_affine)(const T *g, const T *x, T *out, ptrdiff_t rows, ptrdiff_t stride, ptrdiff_t len, T k,
                          T m, T a, T b)
{
    const V kv = FN(splat)(k), mv = FN(splat)(m), av = FN(splat)(a), bv = FN(splat)(b);
    for (ptrdiff_t r = 0; r < rows; r++) {
        const T *xp = x ? x + r * stride : NULL, *gp = g ? g + r * stride : NULL;
        T *op = out + r * stride;
        ptrdiff_t i = 0;
        if (gp && xp) {
            for (; i + VL <= len; i += VL)
                FN(store)(op + i, FN(load)(gp + i) * kv + (FN(load)(xp + i) - mv) * av + bv);
            for (; i < len; i++) op[i] = gp[i] * k + (xp[i] - m) * a + b;
        } else if (gp) {
            for (; i + VL <= len; i += VL) FN(store)(op + i, FN(load)(gp + i) * kv);
            for (; i < len; i++) op[i] = gp[i] * k;
        } else {
            for (; i + VL <= len; i += VL) FN(store)(op + i, (FN(load)(xp + i) - mv) * av + bv);
            for (; i < len; i++) op[i] = (xp[i] - m) * a + b;
        }
    }
}

/* Channels [start, stop): with `training` the batch statistics into stats, else stats' mean and
 * invstd are read; then y = (x - mean) * weight * invstd + bias (weight, bias may be NULL). */
static void FN(batch_norm_forward)(const T *x, T *y, const T *w, const T *b, T *stats, const bn_geom *g,
                                   int training, double eps, ptrdiff_t start, ptrdiff_t stop)
{
    const ptrdiff_t stride = g->c * g->s;
    const double count = (double)(g->n * g->s);
    for (ptrdiff_t c = start; c < stop; c++) {
        const T *xc = x + c * g->s;
        double mean, invstd;
        if (training) {
            double first[2], second[2];
            FN(bn_moments)(xc, g->n, stride, g->s, 0.0, 0, first);
            const double centre = first[0] / count;
            FN(bn_moments)(xc, g->n, stride, g->s, centre, 1, second);
            const double shift = second[0] / count; /* the first pass's rounding error */
            double var = second[1] / count - shift * shift;
            var = var < 0 ? 0 : var; /* NaN stays NaN */
            mean = isfinite(centre) ? centre + shift : centre; /* an inf's mean stays inf (inf - inf: NaN) */
            invstd = 1.0 / sqrt(var + eps);
            stats[c] = (T)mean;
            stats[g->c + c] = (T)var;
            stats[2 * g->c + c] = (T)invstd;
        } else {
            mean = stats[c];
            invstd = stats[2 * g->c + c];
        }
        const T scale = (T)(w ? (double)w[c] * invstd : invstd);
        FN(bn_affine)(NULL, xc, y + c * g->s, g->n, stride, g->s, 0, (T)mean, scale, b ? b[c] : 0);
    }
}

/* Channels [start, stop) of the backward pass with stats' mean and invstd: sums (2, C) = (sum gy,
 * sum gy * (x - mean) * invstd) (grad_bias, grad_weight; skipped when sums is NULL and not
 * training); gx (if not NULL) = a * (gy - mean(gy) - xhat * mean(gy * xhat)) with training, else
 * a * gy, a = weight * invstd. */
static void FN(batch_norm_backward)(const T *gy, const T *x, T *gx, const T *w, const T *stats, T *sums,
                                    const bn_geom *g, int training, ptrdiff_t start, ptrdiff_t stop)
{
    const ptrdiff_t stride = g->c * g->s;
    const double count = (double)(g->n * g->s);
    for (ptrdiff_t c = start; c < stop; c++) {
        const ptrdiff_t at = c * g->s;
        const double mean = stats[c], invstd = stats[2 * g->c + c];
        double dot[2] = {0, 0};
        if (sums || training) FN(bn_dot)(gy + at, x + at, g->n, stride, g->s, mean, dot);
        if (sums) {
            sums[c] = (T)dot[0];
            sums[g->c + c] = (T)(dot[1] * invstd);
        }
        if (!gx) continue;
        const double a = w ? (double)w[c] * invstd : invstd;
        if (training)
            FN(bn_affine)(gy + at, x + at, gx + at, g->n, stride, g->s, (T)a, (T)mean,
                          (T)(-a * invstd * invstd * dot[1] / count), (T)(-a * dot[0] / count));
        else
            FN(bn_affine)(gy + at, NULL, gx + at, g->n, stride, g->s, (T)a, 0, 0, 0);
    }
}

#undef DVEC
#undef DL
