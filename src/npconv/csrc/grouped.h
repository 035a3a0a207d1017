/* Direct 2-D grouped convolution with few channels per group, one copy per (element type, ISA):
 * kernels.h includes this file after depthwise.h (whose helpers it uses: fill_phases, dot; the
 * vector load/store/splat come from kernels.h) with the same T, TSIZE, TI, VBYTES and SFX.
 *
 * Layout: NCHW, C-contiguous; x (N, G*Cg, H, W), weight (G*Og, Cg, KH, KW), output (N, G*Og, OH, OW).
 * Each input plane of a group is copied once into its zero-padded polyphase form (as the depthwise
 * kernel does), so tap t of channel ci is one constant shift off[ci*K + t] of a flat "wide" output
 * position (rows of Qw columns). The forward is then an implicit GEMM: a block of GP_OB output
 * channels x GP_NB vectors of positions accumulates in registers over all Cg*K (channel, tap)
 * pairs, each pair one vector load per position vector shared by the GP_OB channels.
 */

/* Register blocks: 32 vector registers at 64 bytes (8 x 3 accumulators), 16 below. GP_OB must
 * not exceed GP_MAX_OB (core.c sizes the scratch with it). */
#if VBYTES == 64
#define GP_OB 8
#define GP_NB 3
#define GP_WO 4
#define GP_WT 5
#else
#define GP_OB 4
#define GP_NB 3
#define GP_WO 3
#define GP_WT 3
#endif

/* wide[j][m + i*VL] = act(init[j] + sum_u wp[u][j] * src[off[u] + m + i*VL]) for j < GP_OB, i < GP_NB (act
 * as FN(activate); the forward's own is 0: it activates its copies out) */
static inline __attribute__((always_inline)) void
FN(gp_block)(T *wide, ptrdiff_t wide_n, ptrdiff_t m, const T *src, const ptrdiff_t *off, ptrdiff_t pairs,
             const T *wp, const T *init, int act, T lo, T hi)
{
    V acc[GP_OB][GP_NB];
    for (int j = 0; j < GP_OB; j++)
        for (int i = 0; i < GP_NB; i++) acc[j][i] = FN(splat)(init[j]);
    for (ptrdiff_t u = 0; u < pairs; u++) {
        const T *s = src + off[u] + m;
        V l[GP_NB];
        for (int i = 0; i < GP_NB; i++) l[i] = FN(load)(s + i * VL);
        const T *wu = wp + u * GP_OB;
        for (int j = 0; j < GP_OB; j++) {
            const V wj = FN(splat)(wu[j]);
            for (int i = 0; i < GP_NB; i++) acc[j][i] += wj * l[i];
        }
    }
    for (int j = 0; j < GP_OB; j++)
        for (int i = 0; i < GP_NB; i++) FN(store)(wide + j * wide_n + m + i * VL, FN(activate)(acc[j][i], act, lo, hi));
}

/* The cg input planes of one item (xg, in_plane apart) into their polyphase planes (chan apart), phase rows
 * [lo, hi). */
static inline void FN(gp_fill)(T *planes, const T *xg, ptrdiff_t cg, ptrdiff_t chan, ptrdiff_t in_plane,
                               const dw_geom *d, const dw_phases *ph, ptrdiff_t lo, ptrdiff_t hi)
{
    for (ptrdiff_t ci = 0; ci < cg; ci++) FN(fill_phase_rows)(planes + ci * chan, xg + ci * in_plane, d, ph, lo, hi);
}

/* Forward of items [start, stop) (item = image * G + group), output rows [r0, r1) of each, into
 * y = act(conv + bias), bias (G*Og) or NULL, the activation (act, lo, hi as in activate) applied to each
 * plane's rows as they are copied out. A band of rows zeroes and fills only the phase rows it reads
 * (workers claiming bands of one image's rows read their part of it); the positions past the band's
 * last row that its last register block reads feed junk lanes only. */
static int FN(gp_forward)(const T *x, const T *w, const T *bias, T *y, T *scratch, const gp_geom *g,
                          ptrdiff_t start, ptrdiff_t stop, int act, double lo_d, double hi_d, ptrdiff_t r0,
                          ptrdiff_t r1)
{
    const T lo = (T)lo_d, hi = (T)hi_d;
    dw_geom d;
    dw_phases ph;
    gp_layout lay;
    gp_forward_layout(g, &d, &ph, &lay);
    const ptrdiff_t k = g->kh * g->kw, pairs = g->cg * k, in_plane = g->h * g->w, out_plane = g->oh * g->ow;
    T *wide = scratch + g->cg * lay.chan;     /* GP_OB planes of lay.wide_n */
    T *wp = wide + GP_MAX_OB * lay.wide_n;    /* packed weights (Cg*K, GP_OB) */
    ptrdiff_t *shift = malloc((size_t)k * sizeof(*shift));
    ptrdiff_t *off = malloc((size_t)pairs * sizeof(*off));
    if (!shift || !off) {
        free(shift), free(off);
        return -1;
    }
    dw_forward_shifts(&d, &ph, shift);
    for (ptrdiff_t ci = 0; ci < g->cg; ci++)
        for (ptrdiff_t t = 0; t < k; t++) off[ci * k + t] = ci * lay.chan + shift[t];
    const ptrdiff_t step = GP_NB * VL, m0 = r0 * ph.qw, m1 = r1 * ph.qw;
    /* phase rows read: from the band's first wide position to its last register block's end */
    ptrdiff_t reach = 0;
    for (ptrdiff_t t = 0; t < k; t++) reach = shift[t] % ph.plane > reach ? shift[t] % ph.plane : reach;
    const ptrdiff_t last = m0 + ((m1 - m0 + step - 1) / step) * step - 1 + reach;
    const ptrdiff_t rows_lo = r0, rows_hi = last / ph.qw + 1;
    for (ptrdiff_t ci = 0; ci < g->cg; ci++) FN(clear_phase_rows)(scratch + ci * lay.chan, &ph, rows_lo, rows_hi);
    const ptrdiff_t steps = (m1 - m0 + step - 1) / step, blocks = (g->og + GP_OB - 1) / GP_OB;
    for (ptrdiff_t item = start; item < stop; item++) {
        const ptrdiff_t n = item / g->g, gr = item % g->g;
        const T *xg = x + (n * g->g + gr) * g->cg * in_plane;
        /* the first item's planes here; each next item's right after this one's last block read them (still
         * in L1: filled after the copy out, whose rows pushed them out, the fill's stores stalled) */
        if (item == start) FN(gp_fill)(scratch, xg, g->cg, lay.chan, in_plane, &d, &ph, rows_lo, rows_hi);
        /* the next item's input and each block's output planes come from memory in a layer of a network:
         * a share of their lines is prefetched per register block, spread over the item's products */
        const char *next = item + 1 < stop ? (const char *)(xg + g->cg * in_plane) : NULL;
        const ptrdiff_t next_lines = (g->cg * in_plane * (ptrdiff_t)sizeof(T) + 63) / 64;
        const ptrdiff_t next_per = (next_lines + steps * blocks - 1) / (steps * blocks);
        ptrdiff_t next_at = 0;
        for (ptrdiff_t o0 = 0; o0 < g->og; o0 += GP_OB) {
            const ptrdiff_t nb = g->og - o0 < GP_OB ? g->og - o0 : GP_OB, o = gr * g->og + o0;
            T init[GP_OB];
            for (ptrdiff_t j = 0; j < GP_OB; j++) init[j] = j < nb && bias ? bias[o + j] : (T)0;
            for (ptrdiff_t u = 0; u < pairs; u++) /* missing channels of the last block: zero weights */
                for (ptrdiff_t j = 0; j < GP_OB; j++) wp[u * GP_OB + j] = j < nb ? w[(o + j) * pairs + u] : (T)0;
            /* the band's rows of each of the block's output planes */
            const char *out = (const char *)(y + (n * g->g * g->og + o) * out_plane + r0 * g->ow);
            const ptrdiff_t plane_bytes = out_plane * (ptrdiff_t)sizeof(T);
            const ptrdiff_t band_lines = ((r1 - r0) * g->ow * (ptrdiff_t)sizeof(T) + 63) / 64;
            const ptrdiff_t out_lines = nb * band_lines, out_per = (out_lines + steps - 1) / steps;
            ptrdiff_t out_at = 0, at_plane = 0, at_line = 0; /* out_at = at_plane * band_lines + at_line */
            for (ptrdiff_t m = m0; m < m1; m += step) {
                for (ptrdiff_t i = 0; i < out_per && out_at < out_lines; i++, out_at++) {
                    __builtin_prefetch(out + at_plane * plane_bytes + at_line * 64, 1, 2);
                    if (++at_line == band_lines) at_line = 0, at_plane++; /* no division per line */
                }
                for (ptrdiff_t i = 0; next && i < next_per && next_at < next_lines; i++, next_at++)
                    __builtin_prefetch(next + next_at * 64, 0, 2);
                FN(gp_block)(wide, lay.wide_n, m, scratch, off, pairs, wp, init, GC_ACT_NONE, (T)0, (T)0);
            }
            if (o0 + GP_OB >= g->og && item + 1 < stop) /* the item's last block: its planes are free */
                FN(gp_fill)(scratch, xg + g->cg * in_plane, g->cg, lay.chan, in_plane, &d, &ph, rows_lo, rows_hi);
            for (ptrdiff_t j = 0; j < nb; j++) {
                T *yo = y + (n * g->g * g->og + o + j) * out_plane + r0 * g->ow;
                const T *src = wide + j * lay.wide_n + m0;
                if (ph.qw == g->ow)
                    memcpy(yo, src, (size_t)((r1 - r0) * g->ow) * sizeof(T));
                else
                    for (ptrdiff_t r = 0; r < r1 - r0; r++) /* vector moves: a libc call per short row cost 8% */
                        FN(copy_short)(yo + r * g->ow, src + r * ph.qw, g->ow);
                FN(activate_run)(yo, (r1 - r0) * g->ow, act, lo, hi); /* the rows are still in cache */
            }
        }
    }
    free(shift), free(off);
    return 0;
}

/* acc[j][t] += sum_m gyw[j][m] * src[t][m] over m < n (a multiple of VL) */
static inline __attribute__((always_inline)) void
FN(gp_gw_block)(V acc[GP_WO][GP_WT], const T *const *gyw, const T *const *src, ptrdiff_t n)
{
    for (ptrdiff_t m = 0; m < n; m += VL) {
        V gv[GP_WO], sv[GP_WT];
        for (int j = 0; j < GP_WO; j++) gv[j] = FN(load)(gyw[j] + m);
        for (int t = 0; t < GP_WT; t++) sv[t] = FN(load)(src[t] + m);
        for (int j = 0; j < GP_WO; j++)
            for (int t = 0; t < GP_WT; t++) acc[j][t] += gv[j] * sv[t];
    }
}

/* Positions per pass of one block of output channels over the taps where the kernel has more than
 * two tap blocks: its GP_WO gy rows and the input phases' rows they read stay in L1 while every tap
 * block runs over them (whole rows at once, each tap block streamed both from L2); with fewer tap
 * blocks, or up to this many positions, one pass (the accumulators' loads and stores cost more). */
#define GP_GW_CHUNK (64 * VL)

/* Weight gradient of groups [start, stop) into gw (G*Og, Cg, KH, KW): per group and image, the Cg
 * input planes in polyphase form and the Og gy planes in the wide layout (junk columns zero), then
 * blocks of GP_WO output channels x GP_WT taps of one input channel accumulate over the positions,
 * GP_GW_CHUNK at a time for all the taps (the vector accumulators kept in `accs` between chunks: each
 * lane sums its positions in the same order as in one pass), and are summed per image into double.
 * Groups are independent: worker threads share no accumulator. A non-finite block sum is recomputed
 * per (channel, tap) row by row with the junk lanes masked (an inf in a pixel no tap reads must not
 * become 0 * inf = NaN). */
static int FN(gp_grad_weight)(const T *x, const T *gy, T *gw, T *scratch, const gp_geom *g, ptrdiff_t start,
                              ptrdiff_t stop)
{
    dw_geom d;
    dw_phases ph;
    gp_layout lay;
    gp_forward_layout(g, &d, &ph, &lay);
    const ptrdiff_t k = g->kh * g->kw, in_plane = g->h * g->w, out_plane = g->oh * g->ow;
    const ptrdiff_t kpad = (k + GP_WT - 1) / GP_WT * GP_WT;
    T *gyw = scratch + g->cg * lay.chan; /* Og + 1 planes of lay.gy_n (the last one all zero) */
    ptrdiff_t *shift = malloc((size_t)kpad * sizeof(*shift));
    double *sum = malloc((size_t)(g->og * g->cg * k) * sizeof(*sum));
    T *accs = malloc((size_t)(GP_WO * kpad * VL) * sizeof(T)); /* (j, tap) vector accumulators */
    if (!shift || !sum || !accs) {
        free(shift), free(sum), free(accs);
        return -1;
    }
    dw_forward_shifts(&d, &ph, shift);
    for (ptrdiff_t t = k; t < kpad; t++) shift[t] = shift[0]; /* a block's missing taps: read, never kept */
    const ptrdiff_t n_wide = lay.gy_n; /* positions rounded up to whole vectors */
    const ptrdiff_t chunk = kpad > 2 * GP_WT && n_wide > GP_GW_CHUNK ? GP_GW_CHUNK : n_wide;
    T *zero = gyw + g->og * lay.gy_n;
    memset(zero, 0, (size_t)lay.gy_n * sizeof(T));
    for (ptrdiff_t ci = 0; ci < g->cg; ci++) FN(clear_phases)(scratch + ci * lay.chan, &ph);
    for (ptrdiff_t gr = start; gr < stop; gr++) {
        memset(sum, 0, (size_t)(g->og * g->cg * k) * sizeof(*sum));
        for (ptrdiff_t n = 0; n < g->n; n++) {
            const T *xg = x + (n * g->g + gr) * g->cg * in_plane;
            const T *gyg = gy + (n * g->g + gr) * g->og * out_plane;
            for (ptrdiff_t ci = 0; ci < g->cg; ci++)
                FN(fill_phases)(scratch + ci * lay.chan, xg + ci * in_plane, &d, &ph);
            for (ptrdiff_t j = 0; j < g->og; j++) {
                T *dst = gyw + j * lay.gy_n;
                memset(dst, 0, (size_t)lay.gy_n * sizeof(T));
                for (ptrdiff_t r = 0; r < g->oh; r++)
                    memcpy(dst + r * ph.qw, gyg + j * out_plane + r * g->ow, (size_t)g->ow * sizeof(T));
            }
            for (ptrdiff_t ci = 0; ci < g->cg; ci++) {
                const T *xc = scratch + ci * lay.chan;
                for (ptrdiff_t j0 = 0; j0 < g->og; j0 += GP_WO) {
                    const T *gp[GP_WO];
                    for (ptrdiff_t j = 0; j < GP_WO; j++) gp[j] = j0 + j < g->og ? gyw + (j0 + j) * lay.gy_n : zero;
                    for (ptrdiff_t m0 = 0; m0 < n_wide; m0 += chunk) {
                        const ptrdiff_t len = n_wide - m0 < chunk ? n_wide - m0 : chunk;
                        const int first = m0 == 0, last = m0 + len == n_wide;
                        const T *gm[GP_WO];
                        for (int j = 0; j < GP_WO; j++) gm[j] = gp[j] + m0;
                        for (ptrdiff_t t0 = 0; t0 < k; t0 += GP_WT) {
                            const T *sp[GP_WT];
                            for (int t = 0; t < GP_WT; t++) sp[t] = xc + shift[t0 + t] + m0;
                            V acc[GP_WO][GP_WT];
                            for (int j = 0; j < GP_WO; j++)
                                for (int t = 0; t < GP_WT; t++)
                                    acc[j][t] = first ? (V){0} : FN(load)(accs + (j * kpad + t0 + t) * VL);
                            FN(gp_gw_block)(acc, gm, sp, len);
                            if (!last) {
                                for (int j = 0; j < GP_WO; j++)
                                    for (int t = 0; t < GP_WT; t++) FN(store)(accs + (j * kpad + t0 + t) * VL, acc[j][t]);
                                continue;
                            }
                            for (ptrdiff_t j = 0; j < GP_WO && j0 + j < g->og; j++)
                                for (ptrdiff_t t = 0; t < GP_WT && t0 + t < k; t++) {
                                    T s = FN(hsum)(acc[j][t]); /* non-finite if any lane is */
                                    if (!isfinite(s)) { /* junk columns read x values no tap reads: redo exactly */
                                        V a = {0};
                                        const T *tap = xc + shift[t0 + t];
                                        FN(dot)(&a, gyg + (j0 + j) * out_plane, g->oh, g->ow, &tap, ph.qw, 1);
                                        s = FN(hsum)(a);
                                    }
                                    sum[((j0 + j) * g->cg + ci) * k + t0 + t] += (double)s;
                                }
                        }
                    }
                }
            }
        }
        for (ptrdiff_t i = 0; i < g->og * g->cg * k; i++) gw[gr * g->og * g->cg * k + i] = (T)sum[i];
    }
    free(shift), free(sum), free(accs);
    return 0;
}

#undef GP_WO
#undef GP_WT
#undef GP_GW_CHUNK
