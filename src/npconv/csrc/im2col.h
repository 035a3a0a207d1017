/* The GEMM (im2col) convolution's tile pipeline, 1-d/2-d/3-d, any groups, stride, dilation and zero
 * padding. The first part (types, sizes) is compiled once; the kernels below it once per (element
 * type, ISA): kernels.h includes this file with T, TSIZE and SFX defined inside a `#pragma GCC target`
 * region, like depthwise.h.
 *
 * Layout: NC(D)HW, C-contiguous; weight (O, C/G, *k). Spatial sizes are padded to 3 axes with
 * leading 1s (a 1-d convolution is D = H = 1). A work item is a band of output positions of one
 * image, a chunk of whole small images, or (grad_input) a range of input channels of one image:
 *
 * - forward: per group, the im2col columns of the band are packed straight from x (zero padding,
 *   stride and dilation resolved while packing, no padded copy) into the caller's scratch
 *   (Cg*K x band), one gemm writes W[g] @ cols into y, and the epilogue adds the bias and clamps
 *   (optional activation) while the tile is in cache;
 * - grad_weight: the same packing, gw[g] += gy_band @ cols^T (beta = 1 into the caller's
 *   per-worker accumulator, items in a fixed order);
 * - grad_input: per band, cols = W[g]^T @ gy_band, then col2im adds the columns into gx (the
 *   adjoint of the packing); an item owns its gx channels, so items never write the same memory.
 * A 1x1 stride-1 unpadded convolution packs nothing: x, gy and gx are gemm operands as they are.
 */

/* (gc_geom and the sizes every variant shares: shared.h) */

#define GC_CAT_(a, b) a##_##b
#define GC_CAT(a, b) GC_CAT_(a, b)
#define GC(name) GC_CAT(name, SFX)

/* dst[j] = src[j * s] for j < n (s = 1 gets its own loop so the compiler vectorizes it). Stride 2 in
 * whole vectors of even values while their loads end before src[2 * (n - 1)], the last vector
 * overlapping the one before (segments are short: a scalar tail was a large part of them); nothing past
 * the last value taken is read. */
static inline void GC(gather)(T *restrict dst, const T *restrict src, ptrdiff_t n, ptrdiff_t s)
{
    if (s == 1) {
        FN(copy_short)(dst, src, n);
    } else if (s == 2) {
        ptrdiff_t j = 0;
        if (n > VL) {
            for (; j + VL < n; j += VL) FN(store)(dst + j, FN(even)(src + 2 * j));
            FN(store)(dst + n - 1 - VL, FN(even)(src + 2 * (n - 1 - VL)));
            j = n - 1;
        }
        for (; j < n; j++) dst[j] = src[2 * j];
    } else {
        for (ptrdiff_t j = 0; j < n; j++) dst[j] = src[j * s];
    }
}

/* dst[j * s] += src[j] for j < n. */
static inline void GC(scatter_add)(T *restrict dst, const T *restrict src, ptrdiff_t n, ptrdiff_t s)
{
    if (s == 1)
        for (ptrdiff_t j = 0; j < n; j++) dst[j] += src[j];
    else if (s == 2)
        for (ptrdiff_t j = 0; j < n; j++) dst[2 * j] += src[j];
    else
        for (ptrdiff_t j = 0; j < n; j++) dst[j * s] += src[j];
}

/* ceil(a / s) for a >= 0, s >= 1: unit and 2 strides without a division (a row's setup divided several
 * times; 2304 short rows of a 3x3/2 layer's columns spent more there than in their copies). */
static inline ptrdiff_t GC(ceil_div)(ptrdiff_t a, ptrdiff_t s)
{
    return s == 1 ? a : s == 2 ? (a + 1) >> 1 : (a + s - 1) / s;
}

/* Output position p0 as (o0, o1, o2): once per packing call, not per row. */
static inline void GC(position)(const gc_geom *g, ptrdiff_t p0, ptrdiff_t at[3])
{
    const ptrdiff_t t = p0 / g->out[2];
    at[2] = p0 % g->out[2];
    at[1] = t % g->out[1];
    at[0] = t / g->out[1];
}

/* One im2col row (channel plane xc, kernel offset (a, b, e)) over output positions [p0, p0 + cnt),
 * p0 = (at[0], at[1], at[2]) (GC(position)): with add == 0 row[t] = x value read by position p0 + t (0
 * where it reads padding); with add == 1 the adjoint, xc[...] += row[t] for the reads inside the input,
 * or with phase (stride 2 along the last axis) the same sums into the row's even or odd half of phase
 * (GC(unpack)), contiguous there. Positions walk row segments of the last output axis; the in-bounds
 * part of a segment is one contiguous range [jlo, jhi). */
static inline __attribute__((always_inline)) void
GC(row)(T *restrict row, T *xc, const gc_geom *g, ptrdiff_t a, ptrdiff_t b, ptrdiff_t e, const ptrdiff_t at[3],
        ptrdiff_t cnt, int add, T *phase)
{
    const ptrdiff_t out1 = g->out[1], out2 = g->out[2], in0 = g->in[0], in1 = g->in[1], in2 = g->in[2];
    const ptrdiff_t s2 = g->s[2], off2 = e * g->d[2] - g->p[2];
    /* the in-bounds range of a whole row segment (o2 = 0), the same for every row */
    ptrdiff_t full_hi = off2 < in2 ? GC(ceil_div)(in2 - off2, s2) : 0;
    if (full_hi > out2) full_hi = out2;
    ptrdiff_t full_lo = off2 >= 0 ? 0 : GC(ceil_div)(-off2, s2);
    if (full_lo > full_hi) full_lo = full_hi;
    ptrdiff_t o2 = at[2], o1 = at[1], o0 = at[0];
    for (ptrdiff_t done = 0; done < cnt;) {
        const ptrdiff_t seg = out2 - o2 < cnt - done ? out2 - o2 : cnt - done;
        const ptrdiff_t i0 = o0 * g->s[0] - g->p[0] + a * g->d[0], i1 = o1 * g->s[1] - g->p[1] + b * g->d[1];
        T *r = row + done;
        if (i0 < 0 || i0 >= in0 || i1 < 0 || i1 >= in1) {
            if (!add) FN(zero_short)(r, seg);
        } else {
            /* input column of segment position j: base + j * s2, inside for j in [jlo, jhi) */
            const ptrdiff_t base = o2 * s2 + off2;
            ptrdiff_t jlo, jhi;
            if (o2 == 0) {
                jhi = full_hi < seg ? full_hi : seg;
                jlo = full_lo < jhi ? full_lo : jhi;
            } else {
                jlo = base >= 0 ? 0 : GC(ceil_div)(-base, s2);
                jhi = base < in2 ? GC(ceil_div)(in2 - base, s2) : 0;
                if (jhi > seg) jhi = seg;
                if (jlo > jhi) jlo = jhi;
            }
            T *xr = xc + (i0 * in1 + i1) * in2 + base;
            if (add && phase) { /* input column q = base + 2 j: half q & 1 of the row, element q >> 1 */
                const ptrdiff_t q = base + 2 * jlo, half = (in2 + 1) / 2;
                T *restrict pr = phase + ((i0 * in1 + i1) * 2 + (q & 1)) * half + (q >> 1);
                const T *restrict src = r + jlo;
                for (ptrdiff_t j = 0; j < jhi - jlo; j++) pr[j] += src[j];
            } else if (add) {
                GC(scatter_add)(xr + jlo * s2, r + jlo, jhi - jlo, s2);
            } else {
                for (ptrdiff_t j = 0; j < jlo; j++) r[j] = 0; /* a few padding columns: no call */
                GC(gather)(r + jlo, xr + jlo * s2, jhi - jlo, s2);
                for (ptrdiff_t j = jhi; j < seg; j++) r[j] = 0;
            }
        }
        done += seg;
        o2 = 0;
        if (++o1 == out1) {
            o1 = 0;
            o0++;
        }
    }
}

/* cols (nch*K x cnt, row pitch ld) = im2col of channels x[0:nch] over positions [p0, p0 + cnt). */
static void GC(pack)(T *cols, ptrdiff_t ld, const T *x, ptrdiff_t nch, const gc_geom *g, ptrdiff_t p0,
                     ptrdiff_t cnt)
{
    T *row = cols;
    ptrdiff_t at[3];
    GC(position)(g, p0, at);
    for (ptrdiff_t c = 0; c < nch; c++)
        for (ptrdiff_t a = 0; a < g->k[0]; a++)
            for (ptrdiff_t b = 0; b < g->k[1]; b++)
                for (ptrdiff_t e = 0; e < g->k[2]; e++, row += ld)
                    GC(row)(row, (T *)x + c * g->plane, g, a, b, e, at, cnt, 0, NULL);
}

/* Whole images (gc_pad_elements): plane = channel xc zero-padded to the extent the outputs read, its
 * last axis split into phases (column j of padded row r at plane[((j % s2) * E0E1 + r) * W2 + j / s2]),
 * so that a tap's im2col row is out2-long runs of one phase at the tap's offset, copied without bounds. */
static void GC(pad_plane)(T *plane, const T *xc, const gc_geom *g, const gc_padded *pd)
{
    const ptrdiff_t s2 = g->s[2], e2 = pd->w2 * s2, rows = pd->e0 * pd->e1;
    const ptrdiff_t n0 = pd->n[0], n1 = pd->n[1], n2 = pd->n[2];
    memset(plane, 0, (size_t)(rows * e2) * sizeof(T));
    if (s2 == 1) { /* one phase: rows copied as they are (a small image's plane: its setup counts) */
        for (ptrdiff_t i0 = 0; i0 < n0; i0++)
            for (ptrdiff_t i1 = 0; i1 < n1; i1++)
                FN(copy_short)(plane + ((i0 + g->p[0]) * pd->e1 + i1 + g->p[1]) * pd->w2 + g->p[2],
                               xc + (i0 * g->in[1] + i1) * g->in[2], n2);
        return;
    }
    for (ptrdiff_t q = 0; q < s2; q++) { /* phase q: padded columns j = q + s2 t, input columns j - p2 */
        const ptrdiff_t j0 = g->p[2] + ((q - g->p[2]) % s2 + s2) % s2, count = (g->p[2] + n2 - j0 + s2 - 1) / s2;
        if (count <= 0) continue;
        T *dq = plane + q * rows * pd->w2 + j0 / s2;
        for (ptrdiff_t i0 = 0; i0 < n0; i0++)
            for (ptrdiff_t i1 = 0; i1 < n1; i1++) {
                const ptrdiff_t r = (i0 + g->p[0]) * pd->e1 + i1 + g->p[1];
                const T *src = xc + (i0 * g->in[1] + i1) * g->in[2] + j0 - g->p[2];
                GC(gather)(dq + r * pd->w2, src, count, s2);
            }
    }
}

/* row (len positions) = the im2col row of tap (a, b, e) from a GC(pad_plane) plane. */
static inline void GC(padded_row)(T *restrict row, const T *plane, const gc_geom *g, const gc_padded *pd,
                                  ptrdiff_t a, ptrdiff_t b, ptrdiff_t e)
{
    const ptrdiff_t out0 = g->out[0], out1 = g->out[1], out2 = g->out[2], w2 = pd->w2, s2 = g->s[2];
    const ptrdiff_t col = e * g->d[2], q = s2 == 1 ? 0 : col % s2;
    const ptrdiff_t step1 = g->s[1] * w2, step0 = g->s[0] * pd->e1 * w2;
    const T *line0 = plane + q * pd->e0 * pd->e1 * w2 + (s2 == 1 ? col : col / s2) +
                     (a * g->d[0] * pd->e1 + b * g->d[1]) * w2;
    for (ptrdiff_t o0 = 0; o0 < out0; o0++) {
        const T *line = line0 + o0 * step0;
        for (ptrdiff_t o1 = 0; o1 < out1; o1++, row += out2, line += step1) FN(copy_short)(row, line, out2);
    }
}

/* GC(pack) of a whole image (p0 = 0, cnt = len), through a padded plane per channel where `plane` is
 * given (scratch of gc_pad_elements): the same values, no per-segment bounds. */
static void GC(pack_image)(T *cols, ptrdiff_t ld, const T *x, ptrdiff_t nch, const gc_geom *g, T *plane)
{
    if (!plane) {
        GC(pack)(cols, ld, x, nch, g, 0, g->len);
        return;
    }
    T *row = cols;
    gc_padded pd;
    gc_padded_of(g, &pd);
    for (ptrdiff_t c = 0; c < nch; c++) {
        GC(pad_plane)(plane, x + c * g->plane, g, &pd);
        for (ptrdiff_t a = 0; a < g->k[0]; a++)
            for (ptrdiff_t b = 0; b < g->k[1]; b++)
                for (ptrdiff_t e = 0; e < g->k[2]; e++, row += ld) GC(padded_row)(row, plane, g, &pd, a, b, e);
    }
}

#if VBYTES >= 32 && TSIZE == 4
/* Rows [r0, r1) of the im2col columns of GC(pack) (nch*K x cnt) straight into npconv's gemm panels
 * (panel s at panels + s * (r1 - r0), gm_pack_rows's layout: one KC block, packed right before its
 * products so it stays in L2), each row through the L1-sized buffer row (cnt); with `images` > 1
 * (p0 = 0, cnt = whole images), those images' columns side by side (image i at x + i * istride), as
 * GC(pack) of each into one matrix, without that matrix. */
static void GC(pack_panels)(T *panels, T *row, const T *x, const gc_geom *g, ptrdiff_t p0, ptrdiff_t cnt,
                            ptrdiff_t images, ptrdiff_t istride, ptrdiff_t r0, ptrdiff_t r1, T *planes)
{
    const ptrdiff_t depth = r1 - r0, per = cnt / images, k12 = g->k[1] * g->k[2], pe = gc_pad_elements(g);
    ptrdiff_t at[3];
    GC(position)(g, p0, at);
    /* row r0's (channel, tap (a, b, e)), then stepped per row: no divisions per row */
    ptrdiff_t c = r0 / g->taps, t = r0 % g->taps, a = t / k12, b = t / g->k[2] % g->k[1], e = t % g->k[2];
    /* planes (whole images, pe > 0): each image's padded plane of channel c, made when c is reached */
    ptrdiff_t padded = -1;
    gc_padded pd;
    gc_padded_of(g, &pd);
    for (ptrdiff_t r = r0; r < r1; r++) {
        if (planes && c != padded) {
            for (ptrdiff_t i = 0; i < images; i++)
                GC(pad_plane)(planes + i * pe, x + i * istride + c * g->plane, g, &pd);
            padded = c;
        }
        for (ptrdiff_t i = 0; i < images; i++)
            if (planes)
                GC(padded_row)(row + i * per, planes + i * pe, g, &pd, a, b, e);
            else
                GC(row)(row + i * per, (T *)x + i * istride + c * g->plane, g, a, b, e, at, per, 0, NULL);
        for (ptrdiff_t s = 0; s < cnt; s += GM_NR) {
            const ptrdiff_t wd = FN(gm_width)(cnt, s), cols = cnt - s < wd ? cnt - s : wd;
            T *dst = panels + s * depth + (r - r0) * wd;
            if (cols == GM_NR) {
#pragma GCC unroll 4
                for (int v = 0; v < GM_NV; v++) FN(store)(dst + v * VL, FN(load)(row + s + v * VL));
            } else {
                FN(copy_short)(dst, row + s, cols);
                FN(zero_short)(dst + cols, wd - cols);
            }
        }
        if (++e == g->k[2]) {
            e = 0;
            if (++b == g->k[1]) {
                b = 0;
                if (++a == g->k[0]) {
                    a = 0;
                    c++;
                }
            }
        }
    }
}
#endif

/* Row shift: cols (nch*K/ka x (rows + halo)*R) = im2col over the axes after the shift axis of
 * the input rows read by output rows [r0, r0 + rows) (stride 1 along it, kernel offset 0). */
static void GC(pack_shift)(T *cols, const T *x, ptrdiff_t nch, const gc_geom *g, ptrdiff_t r0, ptrdiff_t rows)
{
    gc_geom slab = *g; /* output rows [0, rows + halo) of the slab read input rows r0 - p + t */
    const ptrdiff_t A = g->axis, srows = rows + g->halo, ld = srows * g->rowlen;
    slab.out[A] = srows;
    slab.p[A] = g->p[A] - r0;
    slab.k[A] = 1;
    const ptrdiff_t origin[3] = {0, 0, 0};
    T *row = cols;
    for (ptrdiff_t c = 0; c < nch; c++)
        for (ptrdiff_t a = 0; a < slab.k[0]; a++)
            for (ptrdiff_t b = 0; b < slab.k[1]; b++)
                for (ptrdiff_t e = 0; e < slab.k[2]; e++, row += ld)
                    GC(row)(row, (T *)x + c * g->plane, &slab, a, b, e, origin, ld, 0, NULL);
}

/* d[2k] += ev[k], d[2k + 1] += od[k] for the n values of d. */
static inline void GC(interleave_row_add)(T *restrict d, const T *ev, const T *od, ptrdiff_t n)
{
    const ptrdiff_t pairs = n / 2;
    ptrdiff_t k = 0;
#if VBYTES >= 32
    const IV l = FN(iota)(), lo = (l >> 1) + ((l & 1) * (TI)VL), hi = lo + (TI)(VL / 2);
    for (; k + VL <= pairs; k += VL) { /* 2 VL outputs: lanes alternate even, odd */
        const V e = FN(load)(ev + k), o = FN(load)(od + k);
        FN(store)(d + 2 * k, FN(load)(d + 2 * k) + __builtin_shuffle(e, o, lo));
        FN(store)(d + 2 * k + VL, FN(load)(d + 2 * k + VL) + __builtin_shuffle(e, o, hi));
    }
#endif
    for (; k < pairs; k++) {
        d[2 * k] += ev[k];
        d[2 * k + 1] += od[k];
    }
    if (n & 1) d[n - 1] += ev[pairs];
}

/* gx rows [r0, r1) (flat over the first two input axes, in2 values each) += their even and odd halves
 * in phase (rows of 2 * half values: even elements, then odd), interleaved back. */
static void GC(interleave_add)(T *gx, const T *phase, ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t in2)
{
    const ptrdiff_t half = (in2 + 1) / 2;
    for (ptrdiff_t r = r0; r < r1; r++) {
        const T *ev = phase + r * 2 * half;
        GC(interleave_row_add)(gx + r * in2, ev, ev + half, in2);
    }
}

/* d[0, n) += s[0, n): whole vectors, then the rest in halves and quarters of one and single values
 * (a last whole vector overlapping the one just stored read it back before its store had left:
 * store forwarding failed on every row, two thirds of the col2im's time). */
#if VBYTES / TSIZE >= 8
typedef T GC(half) __attribute__((vector_size(VBYTES / 2)));
typedef T GC(quarter) __attribute__((vector_size(VBYTES / 4)));
#endif
static inline __attribute__((always_inline)) void GC(add_run)(T *restrict d, const T *restrict s, ptrdiff_t n)
{
    ptrdiff_t t = 0;
    for (; t + VL <= n; t += VL) FN(store)(d + t, FN(load)(d + t) + FN(load)(s + t));
#if VBYTES / TSIZE >= 8
#define GC_ADD_PART(type, width)                                                                        \
    if (t + (width) <= n) {                                                                             \
        type a, b;                                                                                      \
        memcpy(&a, d + t, sizeof a), memcpy(&b, s + t, sizeof b);                                       \
        a += b;                                                                                         \
        memcpy(d + t, &a, sizeof a);                                                                    \
        t += (width);                                                                                   \
    }
    GC_ADD_PART(GC(half), VL / 2)
    GC_ADD_PART(GC(quarter), VL / 4)
#undef GC_ADD_PART
#endif
    for (; t < n; t++) d[t] += s[t];
}

/* GC(unpack) of whole images (p0 = 0, cnt = len) through ph (gc_phased_elements): per channel each
 * tap's column row is added output row by output row into the zero-padded extent's phase plane of the
 * tap's offset (phase (t d) mod s, at (t d) / s; one plane with unit strides: contiguous runs, no
 * bounds: padding positions absorb what the forward read from padding), then the input's positions
 * into gx (zeroed by the caller; the last axis's phases interleaved by shuffles at stride 2). Each gx
 * value gets the same additions in the same order (from 0) as in GC(unpack): the result is its bit for
 * bit, where that path paid bounds per output row (a 4x4 image's 36 segments) and, at stride 2, a
 * scalar scatter (a fifth of a ConvTranspose 4x4/2's time). */
static void GC(unpack_phased)(T *gx, const T *cols, ptrdiff_t ld, ptrdiff_t nch, const gc_geom *g, T *ph)
{
    ptrdiff_t q[3], n[3];
    for (int a = 0; a < 3; a++) {
        const ptrdiff_t ext = gc_reach(g, a, g->out[a]);
        q[a] = (ext + g->s[a] - 1) / g->s[a];
        n[a] = ext - g->p[a] < g->in[a] ? ext - g->p[a] : g->in[a]; /* the input positions reached */
    }
    const ptrdiff_t s0 = g->s[0], s1 = g->s[1], s2 = g->s[2], plane = q[0] * q[1] * q[2];
    const ptrdiff_t out0 = g->out[0], out1 = g->out[1], out2 = g->out[2];
    const T *row = cols;
    for (ptrdiff_t c = 0; c < nch; c++) {
        memset(ph, 0, (size_t)(s0 * s1 * s2 * plane) * sizeof(T));
        for (ptrdiff_t a = 0; a < g->k[0]; a++)
            for (ptrdiff_t b = 0; b < g->k[1]; b++)
                for (ptrdiff_t e = 0; e < g->k[2]; e++, row += ld) {
                    const ptrdiff_t ta = a * g->d[0], tb = b * g->d[1], te = e * g->d[2];
                    T *base = ph + ((ta % s0 * s1 + tb % s1) * s2 + te % s2) * plane +
                              ((ta / s0) * q[1] + tb / s1) * q[2] + te / s2;
                    const T *src = row;
                    for (ptrdiff_t o0 = 0; o0 < out0; o0++)
                        for (ptrdiff_t o1 = 0; o1 < out1; o1++, src += out2)
                            GC(add_run)(base + (o0 * q[1] + o1) * q[2], src, out2);
                }
        T *xc = gx + c * g->plane;
        const ptrdiff_t p2 = g->p[2];
        for (ptrdiff_t i0 = 0; i0 < n[0]; i0++)
            for (ptrdiff_t i1 = 0; i1 < n[1]; i1++) {
                const ptrdiff_t pa = i0 + g->p[0], pb = i1 + g->p[1];
                /* the row's phase-0 plane along the last axis; phase r2 at + r2 * plane */
                const T *pr = ph + (pa % s0 * s1 + pb % s1) * s2 * plane + ((pa / s0) * q[1] + pb / s1) * q[2];
                T *d = xc + (i0 * g->in[1] + i1) * g->in[2];
                if (s2 == 1) {
                    const T *sr = pr + p2;
                    for (ptrdiff_t j = 0; j < n[2]; j++) d[j] += sr[j];
                } else if (s2 == 2) { /* input column 2k at padded 2k + p2, 2k + 1 at 2k + 1 + p2 */
                    GC(interleave_row_add)(d, pr + p2 % 2 * plane + p2 / 2, pr + (p2 + 1) % 2 * plane + (p2 + 1) / 2,
                                           n[2]);
                } else {
                    for (ptrdiff_t j = 0; j < n[2]; j++) d[j] += pr[(j + p2) % s2 * plane + (j + p2) / s2];
                }
            }
    }
}

/* gx[0:nch] += col2im(cols (nch*K x cnt, row pitch ld)) over positions [p0, p0 + cnt). With phase (not
 * NULL: gc_phase_elements) each channel's sums first go into phase, the even and odd input columns of
 * each row apart, where a row's additions are contiguous (the stride-2 scatter is a scalar loop, a fifth
 * of a ConvTranspose 4x4/2), then into gx interleaved; each element gets its additions in the same
 * order. */
static void GC(unpack)(T *gx, const T *cols, ptrdiff_t ld, ptrdiff_t nch, const gc_geom *g, ptrdiff_t p0,
                       ptrdiff_t cnt, T *phase)
{
    T *row = (T *)cols;
    ptrdiff_t at[3];
    GC(position)(g, p0, at);
    ptrdiff_t r0 = 0, r1 = g->in[0] * g->in[1]; /* the flat input rows the positions reach */
    if (phase) {
        const ptrdiff_t last = p0 + cnt - 1, t = last / g->out[2], l1 = t % g->out[1], l0 = t / g->out[1];
        if (at[0] == l0) { /* one plane of the first axis: its rows along the second */
            const ptrdiff_t i0 = l0 * g->s[0] - g->p[0], k0 = (g->k[0] - 1) * g->d[0];
            ptrdiff_t lo = at[1] * g->s[1] - g->p[1], hi = l1 * g->s[1] - g->p[1] + (g->k[1] - 1) * g->d[1] + 1;
            lo = lo < 0 ? 0 : lo, hi = hi > g->in[1] ? g->in[1] : hi;
            if (k0 == 0 && i0 >= 0 && i0 < g->in[0] && lo < hi) r0 = i0 * g->in[1] + lo, r1 = i0 * g->in[1] + hi;
        }
    }
    const ptrdiff_t half = (g->in[2] + 1) / 2;
    for (ptrdiff_t c = 0; c < nch; c++) {
        T *xc = gx + c * g->plane;
        if (phase) memset(phase + r0 * 2 * half, 0, (size_t)((r1 - r0) * 2 * half) * sizeof(T));
        for (ptrdiff_t a = 0; a < g->k[0]; a++)
            for (ptrdiff_t b = 0; b < g->k[1]; b++)
                for (ptrdiff_t e = 0; e < g->k[2]; e++, row += ld)
                    GC(row)(row, xc, g, a, b, e, at, cnt, 1, phase);
        if (phase) GC(interleave_add)(xc, phase, r0, r1, g->in[2]);
    }
}

/* dst[r][j] = act(src[r][j] + bias[r]) for a rows x cnt tile (dst may be src). */
static void GC(epilogue)(T *dst, ptrdiff_t ldd, const T *src, ptrdiff_t lds, ptrdiff_t rows, ptrdiff_t cnt,
                         const T *bias, int act, T lo, T hi)
{
    for (ptrdiff_t r = 0; r < rows; r++) {
        T *restrict d = dst + r * ldd;
        const T *s = src + r * lds;
        const T bv = bias ? bias[r] : (T)0;
        if (act == GC_ACT_RELU) { /* as np.maximum(v, 0): NaN stays NaN, -0.0 becomes 0 */
            for (ptrdiff_t j = 0; j < cnt; j++) {
                const T v = s[j] + bv;
                d[j] = v > 0 || v != v ? v : (T)0;
            }
        } else if (act == GC_ACT_HARDTANH) { /* as np.clip: NaN and -0.0 pass */
            for (ptrdiff_t j = 0; j < cnt; j++) {
                T v = s[j] + bv;
                v = v < lo ? lo : v;
                d[j] = v > hi ? hi : v;
            }
        } else if (act == GC_ACT_SILU) {
            for (ptrdiff_t j = 0; j < cnt; j++) d[j] = s[j] + bv;
            FN(activate_run)(d, cnt, act, lo, hi);
        } else if (bias || d != s) {
            for (ptrdiff_t j = 0; j < cnt; j++) d[j] = s[j] + bv;
        }
    }
}

#if VBYTES >= 32 && TSIZE == 4
/* Implicit GEMM (float32 on the vector ISAs, stride 1): no im2col. An item (image, band of output
 * lines) copies its input rows once into a zero-padded slab (extents ext: the padded image cut to
 * what the outputs read); in the slab's flattened coordinates q the output at q reads q + off(tap)
 * for every tap, so a row (channel, tap) of the columns over a block of positions is a run of the
 * slab at a fixed offset. Only output positions are computed: the padded grid's junk positions (past
 * out on the last axis, and in 3-d past out on the middle one) are skipped when the forward packs its
 * columns and read as zeros of gy by grad_weight. */

/* The item's image n, positions [qa, qa + nq) and slab (padded rows from ra, slen per channel). */
typedef struct {
    ptrdiff_t n, qa, nq, ra, slen;
} GC(span);

static void GC(implicit_span)(const gc_geom *g, ptrdiff_t item, GC(span) *sp)
{
    const ptrdiff_t E1 = g->ext[1], E2 = g->ext[2], out1 = g->out[1];
    const ptrdiff_t l0 = item % g->bands * g->band, l1 = g->lines - l0 < g->band ? g->lines : l0 + g->band;
    const ptrdiff_t ra = l0 / out1 * E1 + l0 % out1, rl = (l1 - 1) / out1 * E1 + (l1 - 1) % out1;
    sp->n = item / g->bands;
    sp->ra = ra;
    sp->qa = ra * E2;
    sp->nq = (rl - ra) * E2 + g->out[2];
    sp->slen = ((sp->qa + sp->nq - 1 + g->maxoff) / E2 + 1 - ra) * E2;
}

/* dst (width values) = one zero-padded slab row: column j holds input column j - p2 of row src, zero where
 * that is padding; all zeros for a padding row (src NULL). */
static inline void GC(slab_row)(T *dst, const T *src, const gc_geom *g, ptrdiff_t width)
{
    const ptrdiff_t lo = g->p[2] < width ? g->p[2] : width;
    const ptrdiff_t end = g->p[2] + g->in[2] < width ? g->p[2] + g->in[2] : width, hi = end > lo ? end : lo;
    if (!src) {
        FN(zero_short)(dst, width);
        return;
    }
    FN(zero_short)(dst, lo);
    if (hi > lo) FN(copy_short)(dst + lo, src, hi - lo);
    FN(zero_short)(dst + hi, width - hi);
}

/* slab (cg x slen) = the zero-padded input rows of the span's image, channels xg[0:cg]. */
static void GC(implicit_slab)(T *slab, const T *xg, const gc_geom *g, const GC(span) *sp)
{
    const ptrdiff_t E1 = g->ext[1], E2 = g->ext[2], rows = sp->slen / E2;
    for (ptrdiff_t c = 0; c < g->cg; c++)
        for (ptrdiff_t r = sp->ra; r < sp->ra + rows; r++) {
            const ptrdiff_t i0 = r / E1 - g->p[0], i1 = r % E1 - g->p[1];
            const int inside = i0 >= 0 && i0 < g->in[0] && i1 >= 0 && i1 < g->in[1];
            GC(slab_row)(slab + c * sp->slen + (r - sp->ra) * E2,
                         inside ? xg + c * g->plane + (i0 * g->in[1] + i1) * g->in[2] : NULL, g, E2);
        }
}

/* The slab run of column row r = (channel, tap (a, b, e)) at position 0 of the span. */
static inline const T *GC(implicit_row)(const T *slab, const gc_geom *g, const GC(span) *sp, ptrdiff_t r)
{
    const ptrdiff_t c = r / g->taps, t = r % g->taps;
    const ptrdiff_t e = t % g->k[2], b = t / g->k[2] % g->k[1], a = t / g->k[2] / g->k[1];
    return slab + c * sp->slen + (a * g->d[0] * g->ext[1] + b * g->d[1]) * g->ext[2] + e * g->d[2];
}

/* forward, valid positions only: the item's outputs are lines [l0, l1) of out2 positions, y's positions
 * l0 * out2 + v for v in [0, (l1 - l0) * out2), contiguous in y. A block of GM_NC of them is packed
 * from slab runs (a run: one output line's positions inside one panel) into the gemm's panels and
 * multiplied straight into y with the epilogue: no junk position is computed or staged. */

static void GC(implicit_pack_valid)(T *restrict dst, const T *const *row, ptrdiff_t kc, ptrdiff_t nc,
                                    const ptrdiff_t *runs, ptrdiff_t nruns)
{
    ptrdiff_t r = 0;
    for (ptrdiff_t s = 0; s < nc; s += GM_NR) {
        const ptrdiff_t wd = FN(gm_width)(nc, s), cols = nc - s < wd ? nc - s : wd;
        ptrdiff_t r1 = r;
        while (r1 < nruns && runs[3 * r1] < s + wd) r1++;
        /* a run at a time down all kc rows (its decoding once per run, not per row); right to left, so a
         * short run's whole vector may spill into the columns of the runs left of it, written after */
        for (ptrdiff_t i = r1 - 1; i >= r; i--) {
            const ptrdiff_t col = runs[3 * i] - s, q = runs[3 * i + 1], len = runs[3 * i + 2];
            T *restrict d = dst + col;
            if (len == VL) {
                for (ptrdiff_t p = 0; p < kc; p++) FN(store)(d + p * wd, FN(load)(row[p] + q));
            } else if (len == 2 * VL) {
                for (ptrdiff_t p = 0; p < kc; p++) {
                    FN(store)(d + p * wd, FN(load)(row[p] + q));
                    FN(store)(d + p * wd + VL, FN(load)(row[p] + q + VL));
                }
            } else if (len > VL) {
                for (ptrdiff_t p = 0; p < kc; p++) FN(copy_short)(d + p * wd, row[p] + q, len);
            } else if (col + len >= VL && q + len >= VL) { /* one vector ending at the run's end */
                for (ptrdiff_t p = 0; p < kc; p++)
                    FN(store)(d + p * wd + len - VL, FN(load)(row[p] + q + len - VL));
            } else {
                for (ptrdiff_t p = 0; p < kc; p++) FN(copy_short)(d + p * wd, row[p] + q, len);
            }
        }
        for (ptrdiff_t p = 0; p < kc && cols < wd; p++) FN(zero_short)(dst + p * wd + cols, wd - cols);
        r = r1;
        dst += kc * wd;
    }
}

/* Forward with the output channels on the vector lanes (geometry implicit == 2, for up to GL_BLOCKS passes
 * of GL_NV vectors of output channels per group: 3-12% faster than packing up to there). A register tile is
 * tw consecutive slab positions x nv vectors of channels; per column row k (channel, tap) it broadcasts the tw input values at the tap's
 * offset and multiplies them by row k of the group's transposed weight wt (ck x ogp, zero past og):
 * nothing of the input is packed (the packed path packs every column row for M / GM_MR tiles only).
 * Tiles cover each output line's valid positions only (the junk past out on the last axis cost ~6% on 32^3). */
#if VBYTES == 64
#define GL_NV 3     /* vectors of channels per pass */
#define GL_ACC 24   /* accumulators of a tile (of 32 registers: nv weights besides) */
#define GL_BLOCKS 8 /* passes over the positions: up to 384 channels (more lost on small planes) */
#else
#define GL_NV 2     /* (tiles of 3 positions x 4 vectors ran as fast on 32 channels) */
#define GL_ACC 12   /* of 16 registers: nv weights and a broadcast besides */
#define GL_BLOCKS 16 /* up to 256 channels as passes of 16 */
#endif
#define GL_MIN_DEPTH 128 /* fewer column rows: a tile's transposed store costs more than packing saves */

/* Scratch elements the lanes forward needs after the slab: wt (ck x one pass's channels) and the offsets
 * (2 per row, aligned); 0 where the group's channels need more than GL_BLOCKS
 * passes, the rows are too few or the room exceeds the pack area. */
static inline ptrdiff_t GC(lanes_room)(const gc_geom *g)
{
    const ptrdiff_t cb = GL_NV * VL, need = g->ck * cb + 2 * g->ck + 2;
    return g->implicit == 2 && g->og <= GL_BLOCKS * cb && g->ck >= GL_MIN_DEPTH && need <= GM_SCRATCH ? need : 0;
}

/* tb (tw x ogp) = act(x tile @ wt + bias): tw positions from base, s apart, row k's values at base + offs[k];
 * nv, tw and s constants after inlining. pf (NULL: none): pf_lines lines from pf prefetched, one per row. */
static inline __attribute__((always_inline)) void GC(lanes_tile)(const T *base, const ptrdiff_t *offs, ptrdiff_t ck,
                                                                   const T *wt, ptrdiff_t ogp, const T *bvec, int act,
                                                                   T lo, T hi, T *tb, int nv, int tw, int s,
                                                                   const char *pf, ptrdiff_t pf_lines)
{
    V acc[GL_ACC];
#pragma GCC unroll 24
    for (int a = 0; a < tw * nv; a++) acc[a] = (V){0};
    for (ptrdiff_t k = 0; k < ck; k++) {
        if (pf && k < pf_lines) __builtin_prefetch(pf + k * 64, 0, 2);
        const T *src = base + offs[k], *wk = wt + k * ogp;
        V wv[GL_NV];
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) wv[v] = FN(load)(wk + v * VL);
#pragma GCC unroll 24
        for (int i = 0; i < tw; i++) {
            const V xi = FN(splat)(src[i * s]);
#pragma GCC unroll 4
            for (int v = 0; v < nv; v++) acc[i * nv + v] += xi * wv[v];
        }
    }
#pragma GCC unroll 24
    for (int i = 0; i < tw; i++)
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++)
            FN(store)(tb + i * ogp + v * VL, FN(activate)(acc[i * nv + v] + FN(load)(bvec + v * VL), act, lo, hi));
}

#define GD_TILE(nv_, tw_, s_)                                                                                  \
    case tw_:                                                                                                  \
        GC(lanes_tile)(base, offs, ck, wt, ogp, bvec, act, lo, hi, tb, nv_, tw_, s_, pf, pf_lines);            \
        return;
#define GD_TILES4(nv_, a, s_) GD_TILE(nv_, a, s_) GD_TILE(nv_, a + 1, s_) GD_TILE(nv_, a + 2, s_) GD_TILE(nv_, a + 3, s_)
#define GD_TILES12(nv_, a, s_) GD_TILES4(nv_, a, s_) GD_TILES4(nv_, a + 4, s_) GD_TILES4(nv_, a + 8, s_)

static void GC(direct_tile)(const T *base, const ptrdiff_t *offs, ptrdiff_t ck, const T *wt, ptrdiff_t ogp,
                            const T *bvec, int act, T lo, T hi, T *tb, int nv, int tw, int s, const char *pf,
                            ptrdiff_t pf_lines)
{
#if GL_ACC == 24
    if (nv == 3 && s == 1) switch (tw) { GD_TILES4(3, 1, 1) GD_TILES4(3, 5, 1) }
    if (nv == 3 && s == 2) switch (tw) { GD_TILES4(3, 1, 2) GD_TILES4(3, 5, 2) }
    if (nv == 2 && s == 1) switch (tw) { GD_TILES12(2, 1, 1) }
    if (nv == 2 && s == 2) switch (tw) { GD_TILES12(2, 1, 2) }
    if (nv == 1 && s == 1) switch (tw) { GD_TILES12(1, 1, 1) GD_TILES12(1, 13, 1) }
    if (nv == 1 && s == 2) switch (tw) { GD_TILES12(1, 1, 2) GD_TILES12(1, 13, 2) }
#else
    if (nv == 2 && s == 1) switch (tw) { GD_TILES4(2, 1, 1) GD_TILE(2, 5, 1) GD_TILE(2, 6, 1) }
    if (nv == 2 && s == 2) switch (tw) { GD_TILES4(2, 1, 2) GD_TILE(2, 5, 2) GD_TILE(2, 6, 2) }
    if (nv == 1 && s == 1) switch (tw) { GD_TILES12(1, 1, 1) }
    if (nv == 1 && s == 2) switch (tw) { GD_TILES12(1, 1, 2) }
#endif
}
#undef GD_TILES12
#undef GD_TILES4
#undef GD_TILE

/* Tiles of an output line of out2 positions for blocks of nv vectors: the line split evenly into tiles of at
 * most GL_ACC / nv positions (the first ones one position more). */
static inline ptrdiff_t GC(line_tiles)(ptrdiff_t out2, int nv) { return (out2 + GL_ACC / nv - 1) / (GL_ACC / nv); }

/* One output line of a block of og channels (nv vectors, ogp lanes; wt its transposed weight, bvec its bias):
 * yl[m * len + j] = act(conv + bias) for m < og, j < out2, output j's inputs at line + j * s + offs[k], in
 * line_tiles tiles, each stored into y transposed. next (NULL: none): before each tile, up to per of next's
 * next_lines lines prefetched, from line *at on. */
static void GC(lanes_line)(const T *line, int s, const ptrdiff_t *offs, ptrdiff_t ck, const T *wt, ptrdiff_t ogp,
                           ptrdiff_t og, const T *bvec, int act, T lo, T hi, int nv, T *yl, ptrdiff_t len,
                           ptrdiff_t out2, const char *next, ptrdiff_t next_lines, ptrdiff_t per, ptrdiff_t *at)
{
    T tb[GL_ACC * VL] __attribute__((aligned(VBYTES)));
    const ptrdiff_t tiles = GC(line_tiles)(out2, nv);
    for (ptrdiff_t t = 0, i = 0; i < tiles; i++) {
        const int tw = (int)(out2 / tiles + (i < out2 % tiles));
        const ptrdiff_t pf_lines = next ? (next_lines - *at < per ? next_lines - *at : per) : 0;
        GC(direct_tile)(line + t * s, offs, ck, wt, ogp, bvec, act, lo, hi, tb, nv, tw, s,
                        pf_lines > 0 ? next + *at * 64 : NULL, pf_lines);
        *at += pf_lines;
        for (ptrdiff_t m = 0; m < og; m++)
            for (int j = 0; j < tw; j++) yl[m * len + t + j] = tb[j * ogp + m];
        t += tw;
    }
}

/* One group of an item (its slab made): yg (og x len, at the item's first line) = act(conv + bias). Per
 * output line, tiles of at most GL_ACC / nv positions (the line split evenly) over its valid positions only. */
static void GC(lanes_forward)(const T *slab, const T *wg, const T *bg, T *yg, T *room, const gc_geom *g,
                              const GC(span) *sp, ptrdiff_t l0, ptrdiff_t l1, int act, T lo, T hi)
{
    const ptrdiff_t ck = g->ck, len = g->len, cb = GL_NV * VL;
    const ptrdiff_t E1 = g->ext[1], E2 = g->ext[2], out1 = g->out[1], out2 = g->out[2];
    T *wt = room;
    ptrdiff_t *offs = (ptrdiff_t *)(((uintptr_t)(room + ck * cb) + sizeof(ptrdiff_t) - 1) &
                                    ~(uintptr_t)(sizeof(ptrdiff_t) - 1));
    for (ptrdiff_t k = 0; k < ck; k++) offs[k] = GC(implicit_row)(slab, g, sp, k) - slab;
    T bvec[GL_NV * VL] __attribute__((aligned(VBYTES)));
    /* blocks of channels (the group's vectors split evenly into as few blocks of at most GL_NV as hold
     * them): one pass over the positions each */
    const ptrdiff_t vecs = (g->og + VL - 1) / VL, blocks = (vecs + GL_NV - 1) / GL_NV;
    for (ptrdiff_t bi = 0, m0 = 0; bi < blocks; bi++) {
        const int nv = (int)(vecs / blocks + (bi < vecs % blocks));
        const ptrdiff_t ogp = nv * VL, og = g->og - m0 < ogp ? g->og - m0 : ogp;
        FN(gm_pack_bt)(wt, wg, ck, 0, ck, m0, og); /* (ck x ogp): the block's rows transposed */
        for (ptrdiff_t m = 0; m < ogp; m++) bvec[m] = bg && m < og ? bg[m0 + m] : (T)0;
        for (ptrdiff_t l = l0, none = 0; l < l1; l++)
            GC(lanes_line)(slab + ((l / out1) * E1 + l % out1) * E2 - sp->qa, 1, offs, ck, wt, ogp, og, bvec, act, lo,
                           hi, nv, yg + m0 * len + (l - l0) * out2, len, out2, NULL, 0, 0, &none);
        m0 += og;
    }
}

/* Forward with the output channels on the lanes, the input read in place (geometry implicit == 3: 1-d/2-d,
 * any stride and dilation, stride 1 or 2 along the rows): an item (part of the output channels, image, band
 * of output rows) copies the input rows its band reads into a zero-padded slab (ext[2] columns: exactly what
 * the outputs read), then per block of the part's channels (split evenly into blocks of at most GL_NV
 * vectors) and output row, register tiles
 * of tw consecutive outputs (the row split evenly into tiles of at most GL_ACC / nv) broadcast each (channel,
 * tap)'s input values where they lie and multiply the block's row of the transposed weight: no im2col, no
 * stride gather, no junk position; the tile's outputs go to y transposed. */
/* The item's rows [l0, l1) of image n: the input rows they read, zero padded, into slab (cg x srows x W). */
static void GC(direct_slab)(T *slab, const T *xg, const gc_geom *g, ptrdiff_t l0, ptrdiff_t l1)
{
    const ptrdiff_t W = g->ext[2], slen = g->srows * W, rows = gc_reach(g, 1, l1 - l0);
    for (ptrdiff_t c = 0; c < g->cg; c++)
        for (ptrdiff_t r = 0; r < rows; r++) {
            const ptrdiff_t i1 = l0 * g->s[1] + r - g->p[1];
            GC(slab_row)(slab + c * slen + r * W, i1 >= 0 && i1 < g->in[1] ? xg + c * g->plane + i1 * g->in[2] : NULL,
                         g, W);
        }
}

/* Items [start, stop) (gc_direct_item: part-major). The weight of a part's channels is transposed once per
 * (part, group) a run of items reaches, block after block (ck x block vectors each) into wt. */
static void GC(direct_forward)(const T *x, const T *w, const T *bias, T *y, T *scratch, const gc_geom *g,
                               ptrdiff_t start, ptrdiff_t stop, int act, T lo, T hi)
{
    const ptrdiff_t W = g->ext[2], s1 = g->s[1], s2 = g->s[2], out2 = g->out[2], len = g->len, ck = g->ck;
    const ptrdiff_t slen = g->srows * W;
    T *slab = scratch, *wt = scratch + g->cg * slen;
    ptrdiff_t *offs = (ptrdiff_t *)(((uintptr_t)(wt + ck * gc_direct_width(g)) + sizeof(ptrdiff_t) - 1) &
                                    ~(uintptr_t)(sizeof(ptrdiff_t) - 1));
    for (ptrdiff_t k = 0; k < ck; k++) {
        const ptrdiff_t c = k / g->taps, t = k % g->taps;
        offs[k] = c * slen + t / g->k[2] * g->d[1] * W + t % g->k[2] * g->d[2];
    }
    T bvec[GL_NV * VL] __attribute__((aligned(VBYTES)));
    ptrdiff_t made = -1; /* the (part, group) whose weight wt holds */
    for (ptrdiff_t item = start; item < stop; item++) {
        ptrdiff_t part, n, l0, l1, c0, c1;
        gc_direct_item(g, item, &part, &n, &l0, &l1);
        gc_direct_part(g, part, &c0, &c1);
        /* blocks of channels: the part's vectors split evenly into as few blocks of at most GL_NV as hold them */
        const ptrdiff_t vecs = (c1 - c0 + VL - 1) / VL, blocks = (vecs + GL_NV - 1) / GL_NV;
        for (ptrdiff_t grp = 0; grp < g->groups && c1 > c0; grp++) {
            GC(direct_slab)(slab, x + (n * g->c + grp * g->cg) * g->plane, g, l0, l1);
            const T *wg = w + grp * g->og * ck, *bg = bias ? bias + grp * g->og : NULL;
            T *yg = y + (n * g->o + grp * g->og) * len;
            const int fresh = made != part * g->groups + grp;
            made = part * g->groups + grp;
            T *wb = wt;
            for (ptrdiff_t bi = 0, m0 = c0; bi < blocks; bi++) {
                const int nv = (int)(vecs / blocks + (bi < vecs % blocks));
                const ptrdiff_t ogp = nv * VL, og = c1 - m0 < ogp ? c1 - m0 : ogp, tiles = GC(line_tiles)(out2, nv);
                if (fresh) FN(gm_pack_bt)(wb, wg, ck, 0, ck, m0, og); /* (ck x ogp): the block's rows transposed */
                /* the next block's weight rows (contiguous in w) come from memory in a network: a share of their
                 * lines prefetched before each tile, so that its transposition finds them in cache */
                const char *next = fresh && bi + 1 < blocks ? (const char *)(wg + (m0 + og) * ck) : NULL;
                const ptrdiff_t next_lines = next ? ((c1 - m0 - og < ogp ? c1 - m0 - og : ogp) * ck * TSIZE + 63) / 64 : 0;
                const ptrdiff_t next_per = (next_lines + (l1 - l0) * tiles - 1) / ((l1 - l0) * tiles);
                ptrdiff_t next_at = 0;
                for (ptrdiff_t m = 0; m < ogp; m++) bvec[m] = bg && m < og ? bg[m0 + m] : (T)0;
                for (ptrdiff_t l = l0; l < l1; l++)
                    GC(lanes_line)(slab + (l - l0) * s1 * W, (int)s2, offs, ck, wb, ogp, og, bvec, act, lo, hi, nv,
                                   yg + m0 * len + l * out2, len, out2, next, next_lines, next_per, &next_at);
                wb += ck * ogp;
                m0 += og;
            }
        }
    }
}

#undef GL_ACC
#undef GL_NV
#undef GL_BLOCKS
#undef GL_MIN_DEPTH

/* dst rows (cnt values each, pitch ldd) = act(src rows (pitch lds) + bias[r]) (bias NULL: nothing added),
 * gm_store's epilogue on sums staged in scratch. */
static void GC(store_rows)(T *dst, ptrdiff_t ldd, const T *src, ptrdiff_t lds, ptrdiff_t rows, ptrdiff_t cnt,
                           const T *bias, int act, T lo, T hi)
{
    for (ptrdiff_t r = 0; r < rows; r++) {
        T *restrict d = dst + r * ldd;
        const T *s = src + r * lds;
        const V bv = FN(splat)(bias ? bias[r] : (T)0);
        ptrdiff_t j = 0;
        for (; j + VL <= cnt; j += VL) {
            V v = FN(load)(s + j);
            if (bias) v += bv;
            FN(store)(d + j, FN(activate)(v, act, lo, hi));
        }
        for (; j < cnt; j++) {
            T v = s[j];
            if (bias) v += bias[r];
            d[j] = FN(activate)(FN(splat)(v), act, lo, hi)[0];
        }
    }
}

static void GC(gc_implicit_forward)(const T *x, const T *w, const T *bias, T *y, T *scratch, const gc_geom *g,
                                    ptrdiff_t item, int act, T lo, T hi)
{
    const ptrdiff_t E1 = g->ext[1], E2 = g->ext[2], out1 = g->out[1], out2 = g->out[2];
    const ptrdiff_t l0 = item % g->bands * g->band, l1 = g->lines - l0 < g->band ? g->lines : l0 + g->band;
    const ptrdiff_t nv = (l1 - l0) * out2;
    GC(span) sp;
    GC(implicit_span)(g, item, &sp);
    T *slab = scratch, *pack = scratch + g->cg * g->srows * E2;
    const T *row[GM_KC];
    ptrdiff_t runs[3 * (GM_NC + GM_NC / GM_NR + 2)];
    for (ptrdiff_t grp = 0; grp < g->groups; grp++) {
        GC(implicit_slab)(slab, x + (sp.n * g->c + grp * g->cg) * g->plane, g, &sp);
        const T *wg = w + grp * g->og * g->ck, *bg = bias ? bias + grp * g->og : NULL;
        T *yg = y + (sp.n * g->o + grp * g->og) * g->len + l0 * out2;
        if (GC(lanes_room)(g)) {
            GC(lanes_forward)(slab, wg, bg, yg, pack, g, &sp, l0, l1, act, lo, hi);
            continue;
        }
        for (ptrdiff_t v0 = 0; v0 < nv; v0 += GM_NC) {
            const ptrdiff_t nc = nv - v0 < GM_NC ? nv - v0 : GM_NC;
            /* the block's runs: column, slab offset (from the span's first position), length */
            ptrdiff_t nruns = 0;
            for (ptrdiff_t j = 0; j < nc;) {
                const ptrdiff_t v = v0 + j, line = l0 + v / out2, o2 = v % out2;
                const ptrdiff_t to_line = out2 - o2, to_panel = GM_NR - j % GM_NR;
                ptrdiff_t len = to_line < to_panel ? to_line : to_panel;
                if (len > nc - j) len = nc - j;
                runs[3 * nruns] = j;
                runs[3 * nruns + 1] = ((line / out1) * E1 + line % out1) * E2 + o2 - sp.qa;
                runs[3 * nruns + 2] = len;
                nruns++;
                j += len;
            }
            /* several depth blocks: their sums in scratch, y written once (gc_staged_sums) */
            T *sums = gc_staged_sums(GC_FORWARD, g) ? pack + GM_SCRATCH : NULL;
            for (ptrdiff_t p0 = 0; p0 < g->ck; p0 += GM_KC) {
                const ptrdiff_t kc = g->ck - p0 < GM_KC ? g->ck - p0 : GM_KC;
                const int last = p0 + kc >= g->ck && !sums;
                for (ptrdiff_t p = 0; p < kc; p++) row[p] = GC(implicit_row)(slab, g, &sp, p0 + p);
                GC(implicit_pack_valid)(pack, row, kc, nc, runs, nruns);
                FN(gm_block)(g->og, nc, kc, wg + p0, g->ck, 1, pack, kc, 0, sums ? sums : yg + v0, sums ? nc : g->len, 1,
                             p0 ? 1 : 0, last ? bg : NULL, last ? act : 0, lo, hi);
            }
            if (sums) GC(store_rows)(yg + v0, g->len, sums, nc, g->og, nc, bg, act, lo, hi);
        }
    }
}

#define GC_GW_RUN 512

/* grad_weight: gw^T (Cg*K x og) += cols (Cg*K x nq) @ gy^T (nq x og) per item and group. gy^T is
 * packed once per item into the gemm's column panels over o (zeros at the junk positions), the
 * columns are read in place as the product's A (GM_MR slab runs per tile), and each register tile
 * (GM_MR rows x a panel) runs over all nq positions and is added transposed into gw. */
static void GC(gc_implicit_grad_weight)(const T *x, const T *gy, T *gw, T *scratch, const gc_geom *g,
                                        ptrdiff_t item, int fresh)
{
    const ptrdiff_t E1 = g->ext[1], E2 = g->ext[2], out1 = g->out[1], out2 = g->out[2], og = g->og;
    GC(span) sp;
    GC(implicit_span)(g, item, &sp);
    T *slab = scratch, *bt = scratch + g->cg * g->srows * E2;
    for (ptrdiff_t grp = 0; grp < g->groups; grp++) {
        GC(implicit_slab)(slab, x + (sp.n * g->c + grp * g->cg) * g->plane, g, &sp);
        /* gy^T panels: panel s (columns o in [s, s + wd)) at bt + s * nq, element (q, j) at q * wd + j */
        const T *gyg = gy + (sp.n * g->o + grp * og) * g->len;
        for (ptrdiff_t s = 0; s < og; s += GM_NR) {
            const ptrdiff_t wd = FN(gm_width)(og, s), cols = og - s < wd ? og - s : wd;
            T *panel = bt + s * sp.nq;
            memset(panel, 0, (size_t)(sp.nq * wd) * sizeof(T));
            for (ptrdiff_t q = sp.qa; q < sp.qa + sp.nq;) {
                const ptrdiff_t r = q / E2, o2 = q % E2, left = sp.qa + sp.nq - q;
                const ptrdiff_t run = E2 - o2 < left ? E2 - o2 : left;
                const ptrdiff_t o1 = r % E1, o0 = r / E1;
                if (o2 < out2 && o1 < out1) {
                    const ptrdiff_t cnt = out2 - o2 < run ? out2 - o2 : run;
                    /* the run's cnt positions x cols channels transposed (register transposes) */
                    FN(gm_pack_bt)(panel + (q - sp.qa) * wd, gyg + (o0 * out1 + o1) * out2 + o2, g->len, 0, cnt, s,
                                   cols);
                }
                q += run;
            }
        }
        T *gwg = gw + grp * og * g->ck;
        for (ptrdiff_t r0 = 0; r0 < g->ck; r0 += GM_MR) {
            const ptrdiff_t rows = g->ck - r0 < GM_MR ? g->ck - r0 : GM_MR;
            const T *rp[GM_MR];
            for (ptrdiff_t i = 0; i < GM_MR; i++) rp[i] = GC(implicit_row)(slab, g, &sp, r0 + (i < rows ? i : 0));
            for (ptrdiff_t s = 0; s < og; s += GM_NR) {
                const ptrdiff_t wd = FN(gm_width)(og, s), cols = og - s < wd ? og - s : wd;
                /* the valid positions only (a junk position may read an x value its tap never
                 * multiplies: 0 * inf would leak NaN), each output line in runs of at most GC_GW_RUN
                 * per register tile, summed in sum (two-level sums keep long items' float32 error
                 * near the im2col path's) */
                V sum[GM_MR][GM_NV] = {{{0}}};
                for (ptrdiff_t q0 = 0; q0 < sp.nq; q0 += E2) { /* padded rows: their first out2 positions */
                    if ((sp.qa + q0) / E2 % E1 >= out1) continue; /* a junk row between 3-d planes */
                    for (ptrdiff_t qs = q0; qs < q0 + out2; qs += GC_GW_RUN) {
                        const ptrdiff_t len = q0 + out2 - qs < GC_GW_RUN ? q0 + out2 - qs : GC_GW_RUN;
                        const T *rq[GM_MR], *bq = bt + s * sp.nq + qs * wd;
                        for (int i = 0; i < GM_MR; i++) rq[i] = rp[i] + qs;
                        V acc[GM_MR][GM_NV] = {{{0}}}; /* vectors past a narrow panel's stay 0 */
                        if (wd == GM_NR)
                            FN(gm_tile_rows)(len, rq, 1, bq, GM_NR, acc, GM_NV, NULL, NULL, 0, 0);
#if GM_NV > 2
                        else if (wd == 2 * VL)
                            FN(gm_tile_rows)(len, rq, 1, bq, 2 * VL, acc, 2, NULL, NULL, 0, 0);
#endif
                        else
                            FN(gm_tile_rows)(len, rq, 1, bq, VL, acc, 1, NULL, NULL, 0, 0);
                        for (int i = 0; i < GM_MR; i++)
                            for (int v = 0; v < GM_NV; v++) sum[i][v] += acc[i][v];
                    }
                }
                for (ptrdiff_t i = 0; i < rows; i++) {
                    T lane[GM_NR];
                    for (int v = 0; v < GM_NV; v++) FN(store)(lane + v * VL, sum[i][v]);
                    if (fresh)
                        for (ptrdiff_t j = 0; j < cols; j++) gwg[(s + j) * g->ck + r0 + i] = lane[j];
                    else
                        for (ptrdiff_t j = 0; j < cols; j++) gwg[(s + j) * g->ck + r0 + i] += lane[j];
                }
            }
        }
    }
}
#endif

/* forward items [start, stop): y = act(conv(x, w) + bias). */
static void GC(gc_forward)(const gemm_fns *fns, const T *x, const T *w, const T *bias, T *y, T *scratch,
                           const gc_geom *g, ptrdiff_t start, ptrdiff_t stop, int act, double lo_d, double hi_d)
{
    const ptrdiff_t L = g->len, cg = g->cg, og = g->og, ck = g->ck;
    const T lo = (T)lo_d, hi = (T)hi_d;
    T *pack = scratch + gc_pack_offset(GC_FORWARD, g);
    /* chunks of whole images: a padded plane per image before pack (gc_pad_elements; NULL: none) */
    const ptrdiff_t pe = g->images > 1 ? gc_pad_elements(g) : 0;
    T *planes = pe ? pack - g->images * pe : NULL;
    for (ptrdiff_t item = start; item < stop; item++) {
#if VBYTES >= 32 && TSIZE == 4
        if (g->implicit == 3) {
            GC(direct_forward)(x, w, bias, y, scratch, g, item, stop, act, lo, hi);
            break;
        }
        if (g->implicit) {
            GC(gc_implicit_forward)(x, w, bias, y, scratch, g, item, act, lo, hi);
            continue;
        }
#endif
        if (g->images > 1) { /* whole images: one gemm over their columns side by side */
            const ptrdiff_t n0 = item * g->images, nb = g->n - n0 < g->images ? g->n - n0 : g->images;
            T *cols = scratch, *prod = scratch + ck * nb * L;
#if VBYTES >= 32 && TSIZE == 4
            if (!g->direct && fns->own) { /* their columns straight into the gemm's panels */
                const ptrdiff_t cnt = nb * L;
                T *row = scratch + ck * (cnt + 16);
                prod = row + cnt;
                for (ptrdiff_t grp = 0; grp < g->groups; grp++) {
                    for (ptrdiff_t k0 = 0; k0 < ck; k0 += GM_KC) {
                        const ptrdiff_t kc = ck - k0 < GM_KC ? ck - k0 : GM_KC;
                        GC(pack_panels)(scratch, row, x + (n0 * g->c + grp * cg) * g->plane, g, 0, cnt, nb,
                                        g->c * g->plane, k0, k0 + kc, planes);
                        FN(gm_block)(og, cnt, kc, w + grp * og * ck + k0, ck, 1, scratch, kc, 0, prod, cnt, 1,
                                     k0 ? 1 : 0, NULL, 0, 0, 0);
                    }
                    for (ptrdiff_t i = 0; i < nb; i++)
                        GC(epilogue)(y + ((n0 + i) * g->o + grp * og) * L, L, prod + i * L, cnt, og, L,
                                     bias ? bias + grp * og : NULL, act, lo, hi);
                }
                continue;
            }
#endif
            for (ptrdiff_t grp = 0; grp < g->groups; grp++) {
                for (ptrdiff_t i = 0; i < nb; i++)
                    GC(pack_image)(cols + i * L, nb * L, x + ((n0 + i) * g->c + grp * cg) * g->plane, cg, g, planes);
                GC(mm)(fns, pack, 0, 0, og, nb * L, ck, 1.0, w + grp * og * ck, ck, cols, nb * L, 0.0, prod,
                        nb * L, NULL, 0, 0, 0);
                for (ptrdiff_t i = 0; i < nb; i++)
                    GC(epilogue)(y + ((n0 + i) * g->o + grp * og) * L, L, prod + i * L, nb * L, og, L,
                                 bias ? bias + grp * og : NULL, act, lo, hi);
            }
            continue;
        }
        if (g->shift) { /* ka gemms over column blocks of one packed slab, summed in y */
            const ptrdiff_t n = item / g->bands, r0 = item % g->bands * g->band, R = g->rowlen;
            const ptrdiff_t rows = g->out[g->axis] - r0 < g->band ? g->out[g->axis] - r0 : g->band;
            const ptrdiff_t cnt = rows * R, ld = (rows + g->halo) * R, step = g->d[g->axis] * R;
            for (ptrdiff_t grp = 0; grp < g->groups; grp++) {
                T *yg = y + (n * g->o + grp * og) * L + r0 * R;
                GC(pack_shift)(scratch, x + (n * g->c + grp * cg) * g->plane, cg, g, r0, rows);
                const T *bg = bias ? bias + grp * og : NULL;
                int fused = 0;
                for (ptrdiff_t j = 0; j < g->ka; j++) { /* weight (ka, O, Cg*K/ka); the epilogue on the last */
                    const int last = j == g->ka - 1;
                    fused = GC(mm)(fns, pack, 0, 0, og, cnt, g->ckr, 1.0, w + (j * g->o + grp * og) * g->ckr, g->ckr,
                                   scratch + j * step, ld, j ? 1.0 : 0.0, yg, L, last ? bg : NULL, last ? act : 0,
                                   lo, hi);
                }
                if ((bias || act) && !fused) GC(epilogue)(yg, L, yg, L, og, cnt, bg, act, lo, hi);
            }
            continue;
        }
        const ptrdiff_t n = item / g->bands, p0 = item % g->bands * g->band;
        const ptrdiff_t cnt = L - p0 < g->band ? L - p0 : g->band;
        for (ptrdiff_t grp = 0; grp < g->groups; grp++) {
            const T *xg = x + (n * g->c + grp * cg) * g->plane;
            T *yg = y + (n * g->o + grp * og) * L + p0;
            const T *cols = xg + p0;
            ptrdiff_t ldb = L;
            const T *bg = bias ? bias + grp * og : NULL;
#if VBYTES >= 32 && TSIZE == 4
            if (!g->direct && fns->own) { /* im2col straight into npconv's gemm panels, no second packing */
                T *sums = gc_staged_sums(GC_FORWARD, g) ? pack + GM_SCRATCH : NULL; /* as the implicit forward */
                for (ptrdiff_t k0 = 0; k0 < ck; k0 += GM_KC) {
                    const ptrdiff_t kc = ck - k0 < GM_KC ? ck - k0 : GM_KC;
                    const int last = k0 + kc >= ck && !sums;
                    GC(pack_panels)(scratch, scratch + ck * (cnt + 16), xg, g, p0, cnt, 1, 0, k0, k0 + kc, NULL);
                    FN(gm_block)(og, cnt, kc, w + grp * og * ck + k0, ck, 1, scratch, kc, 0, sums ? sums : yg,
                                 sums ? cnt : L, 1, k0 ? 1 : 0, last ? bg : NULL, last ? act : 0, lo, hi);
                }
                if (sums) GC(store_rows)(yg, L, sums, cnt, og, cnt, bg, act, lo, hi);
                continue;
            }
#endif
#if VBYTES >= 32 && TSIZE == 4
            if (g->direct && fns->own && gc_staged_sums(GC_FORWARD, g)) { /* a 1x1 image read in place, sums staged */
                T *sums = pack + GM_SCRATCH;
                GC(mm)(fns, pack, 0, 0, og, cnt, ck, 1.0, w + grp * og * ck, ck, cols, ldb, 0.0, sums, cnt, NULL, 0, 0,
                       0);
                GC(store_rows)(yg, L, sums, cnt, og, cnt, bg, act, lo, hi);
                continue;
            }
#endif
            if (!g->direct) {
                GC(pack)(scratch, cnt, xg, cg, g, p0, cnt);
                cols = scratch;
                ldb = cnt;
            }
            if (!GC(mm)(fns, pack, 0, 0, og, cnt, ck, 1.0, w + grp * og * ck, ck, cols, ldb, 0.0, yg, L, bg, act, lo,
                        hi) &&
                (bias || act))
                GC(epilogue)(yg, L, yg, L, og, cnt, bg, act, lo, hi);
        }
    }
}

/* y = act(y + res) over forward item `item`'s output (gc_forward_region), res laid out as y: a residual
 * addition fused into the convolution, run right after the item (its output still in cache) with the
 * item's own activation deferred to here; the same IEEE additions and activation as the addition and
 * activation run after the convolution. */
static void GC(gc_residual)(const gc_geom *g, T *y, const T *res, ptrdiff_t item, int act, double lo_d, double hi_d)
{
    const T lo = (T)lo_d, hi = (T)hi_d;
    ptrdiff_t n0, nb, p0, p1;
    gc_forward_region(g, item, &n0, &nb, &p0, &p1);
    ptrdiff_t c0 = 0, c1 = g->og; /* each group's output channels the item writes: a direct part's, else all */
    if (g->implicit == 3) {
        ptrdiff_t part, n, l0, l1;
        gc_direct_item(g, item, &part, &n, &l0, &l1);
        gc_direct_part(g, part, &c0, &c1);
    }
    for (ptrdiff_t n = n0; n < n0 + nb; n++)
        for (ptrdiff_t grp = 0; grp < g->groups; grp++)
            for (ptrdiff_t o = grp * g->og + c0; o < grp * g->og + c1; o++) {
                const ptrdiff_t at = (n * g->o + o) * g->len + p0;
                FN(add_activate_run)(y + at, res + at, p1 - p0, act, lo, hi);
            }
}

/* grad_weight items [start, stop): gw (O, Cg*K) += sum over the items' positions of gy @ cols^T; fresh:
 * gw = that sum (the first item's products write gw, beta 0: its old values are never read; zeros for
 * an empty range). Every item writes all of gw. */
static void GC(gc_grad_weight)(const gemm_fns *fns, const T *x, const T *gy, T *gw, T *scratch,
                               const gc_geom *g, ptrdiff_t start, ptrdiff_t stop, int fresh)
{
    const ptrdiff_t L = g->len, cg = g->cg, og = g->og, ck = g->ck;
    T *pack = scratch + gc_pack_offset(GC_GRAD_WEIGHT, g);
    const ptrdiff_t pe = g->images > 1 ? gc_pad_elements(g) : 0; /* as gc_forward's */
    T *planes = pe ? pack - g->images * pe : NULL;
    if (fresh && start >= stop) memset(gw, 0, (size_t)(g->o * ck) * sizeof(T));
    for (ptrdiff_t item = start; item < stop; item++) {
        const int first = fresh && item == start;
        const double beta = first ? 0.0 : 1.0;
#if VBYTES >= 32 && TSIZE == 4
        if (g->implicit) {
            GC(gc_implicit_grad_weight)(x, gy, gw, scratch, g, item, first);
            continue;
        }
#endif
        if (g->images > 1) { /* the chunk's gy gathered side by side too: one gemm with k = nb * L */
            const ptrdiff_t n0 = item * g->images, nb = g->n - n0 < g->images ? g->n - n0 : g->images;
            T *cols = scratch, *gyc = scratch + ck * nb * L;
            for (ptrdiff_t grp = 0; grp < g->groups; grp++) {
                for (ptrdiff_t i = 0; i < nb; i++) {
                    GC(pack_image)(cols + i * L, nb * L, x + ((n0 + i) * g->c + grp * cg) * g->plane, cg, g, planes);
                    const T *src = gy + ((n0 + i) * g->o + grp * og) * L;
                    for (ptrdiff_t r = 0; r < og; r++) memcpy(gyc + r * nb * L + i * L, src + r * L, (size_t)L * sizeof(T));
                }
                GC(mm)(fns, pack, 0, 1, og, ck, nb * L, 1.0, gyc, nb * L, cols, nb * L, beta, gw + grp * og * ck, ck, NULL,
                       0, 0, 0);
            }
            continue;
        }
        if (g->shift) { /* gw (ka, O, Cg*K/ka): row j += gy_tile @ (column block j)^T */
            const ptrdiff_t n = item / g->bands, r0 = item % g->bands * g->band, R = g->rowlen;
            const ptrdiff_t rows = g->out[g->axis] - r0 < g->band ? g->out[g->axis] - r0 : g->band;
            const ptrdiff_t cnt = rows * R, ld = (rows + g->halo) * R, step = g->d[g->axis] * R;
            for (ptrdiff_t grp = 0; grp < g->groups; grp++) {
                GC(pack_shift)(scratch, x + (n * g->c + grp * cg) * g->plane, cg, g, r0, rows);
                for (ptrdiff_t j = 0; j < g->ka; j++)
                    GC(mm)(fns, pack, 0, 1, og, g->ckr, cnt, 1.0, gy + (n * g->o + grp * og) * L + r0 * R, L,
                            scratch + j * step, ld, beta, gw + (j * g->o + grp * og) * g->ckr, g->ckr, NULL, 0, 0, 0);
            }
            continue;
        }
        const ptrdiff_t n = item / g->bands, p0 = item % g->bands * g->band;
        const ptrdiff_t cnt = L - p0 < g->band ? L - p0 : g->band;
        for (ptrdiff_t grp = 0; grp < g->groups; grp++) {
            const T *xg = x + (n * g->c + grp * cg) * g->plane;
            const T *cols = xg + p0;
            ptrdiff_t ldb = L;
            if (!g->direct) {
                GC(pack)(scratch, cnt, xg, cg, g, p0, cnt);
                cols = scratch;
                ldb = cnt;
            }
            GC(mm)(fns, pack, 0, 1, og, ck, cnt, 1.0, gy + (n * g->o + grp * og) * L + p0, L, cols, ldb, beta,
                    gw + grp * og * ck, ck, NULL, 0, 0, 0);
        }
    }
}

/* grad_input items [start, stop): gx = act(conv^T(gy, w) + bias); item = (image, group, channel chunk). */
static void GC(gc_grad_input)(const gemm_fns *fns, const T *gy, const T *w, const T *bias, T *gx, T *scratch,
                              const gc_geom *g, ptrdiff_t start, ptrdiff_t stop, int act, double lo_d, double hi_d)
{
    const ptrdiff_t L = g->len, og = g->og, ck = g->ck, K = g->taps;
    const T lo = (T)lo_d, hi = (T)hi_d;
    T *pack = scratch + gc_pack_offset(GC_GRAD_INPUT, g);
    T *phase = gc_phase_elements(g) ? pack - gc_phase_elements(g) : NULL;
    T *phased = gc_phased_elements(g) ? pack - gc_phase_elements(g) - gc_phased_elements(g) : NULL;
    for (ptrdiff_t item = start; item < stop; item++) {
        const ptrdiff_t q = item % g->chunks, grp = item / g->chunks % g->groups, n = item / g->chunks / g->groups;
        const ptrdiff_t c0 = q * g->chunk, nc = g->cg - c0 < g->chunk ? g->cg - c0 : g->chunk;
        const T *wq = w + grp * og * ck + c0 * K; /* W[g][:, c0*K:(c0+nc)*K], (og x nc*K), pitch ck */
        if (g->images > 1) { /* a chunk of whole small images: their gy side by side, one product, col2im each */
            const ptrdiff_t n0 = n * g->images, nb = g->n - n0 < g->images ? g->n - n0 : g->images, cnt = nb * L;
            T *gyp = scratch + g->chunk * K * g->images * L; /* (og x cnt) after the columns (nc*K x cnt) */
            for (ptrdiff_t o = 0; o < og; o++)
                for (ptrdiff_t i = 0; i < nb; i++)
                    memcpy(gyp + o * cnt + i * L, gy + ((n0 + i) * g->o + grp * og + o) * L, (size_t)L * sizeof(T));
            GC(mm)(fns, pack, 1, 0, nc * K, cnt, og, 1.0, wq, ck, gyp, cnt, 0.0, scratch, cnt, NULL, 0, 0, 0);
            for (ptrdiff_t i = 0; i < nb; i++) {
                T *gxc = gx + ((n0 + i) * g->c + grp * g->cg + c0) * g->plane;
                memset(gxc, 0, (size_t)(nc * g->plane) * sizeof(T));
                if (phased)
                    GC(unpack_phased)(gxc, scratch + i * L, cnt, nc, g, phased);
                else
                    GC(unpack)(gxc, scratch + i * L, cnt, nc, g, 0, L, phase);
                if (bias || act)
                    GC(epilogue)(gxc, g->plane, gxc, g->plane, nc, g->plane, bias ? bias + grp * g->cg + c0 : NULL, act,
                                 lo, hi);
            }
            continue;
        }
        T *gxc = gx + (n * g->c + grp * g->cg + c0) * g->plane;
        const T *gyg = gy + (n * g->o + grp * og) * L;
        if (!g->direct) memset(gxc, 0, (size_t)(nc * g->plane) * sizeof(T));
        for (ptrdiff_t p0 = 0; p0 < L; p0 += g->band) {
            const ptrdiff_t cnt = L - p0 < g->band ? L - p0 : g->band;
            if (g->direct) { /* gx positions are the output positions */
                GC(mm)(fns, pack, 1, 0, nc * K, cnt, og, 1.0, wq, ck, gyg + p0, L, 0.0, gxc + p0, L, NULL, 0, 0, 0);
            } else {
                GC(mm)(fns, pack, 1, 0, nc * K, cnt, og, 1.0, wq, ck, gyg + p0, L, 0.0, scratch, cnt, NULL, 0, 0, 0);
                if (phased && cnt == L)
                    GC(unpack_phased)(gxc, scratch, cnt, nc, g, phased);
                else
                    GC(unpack)(gxc, scratch, cnt, nc, g, p0, cnt, phase);
            }
        }
        if (bias || act)
            GC(epilogue)(gxc, g->plane, gxc, g->plane, nc, g->plane, bias ? bias + grp * g->cg + c0 : NULL, act, lo,
                         hi);
    }
}

#undef GC
