/* What core.c (the bindings) and the variant_*.c translation units (the kernels, one per ISA, so
 * that the build compiles them in parallel) share: the call geometries and their derived sizes, the
 * BLAS interface, the kernels' function types and one variant's table of them. */
#ifndef NPCONV_SHARED_H
#define NPCONV_SHARED_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#pragma GCC diagnostic ignored "-Wunused-function" /* each unit uses some of the helpers */

#if defined(__x86_64__) && defined(__GNUC__)
#define NPCONV_X86 1
#else
#define NPCONV_X86 0
#endif

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>
#include <time.h>
#include <sched.h>

/* Sizes of one depthwise call: x (N, C, H, W), weight (C*M, 1, KH, KW), output (N, C*M, OH, OW),
 * stride (SH, SW), dilation (DH, DW), low zero padding (PH, PW); high padding is implied by OH/OW. */
typedef struct {
    ptrdiff_t n, c, m, h, w, oh, ow, kh, kw, sh, sw, dh, dw, ph, pw;
} dw_geom;

/* Sizes of one 2-D max pooling call: planes (P, H, W) -> (P, OH, OW), kernel (KH, KW), stride,
 * dilation, low padding (PH, PW); the high side (padding, ceil_mode) is implied by OH/OW. */
typedef struct {
    ptrdiff_t planes, h, w, oh, ow, kh, kw, sh, sw, dh, dw, ph, pw;
} mp_geom;

/* Sizes of one batch norm call: (N, C, S) C-contiguous, S the product of the spatial sizes. */
typedef struct {
    ptrdiff_t n, c, s;
} bn_geom;

/* Geometry values and plane sizes the kernels accept: products of two stay far inside ptrdiff_t. */
#define DW_MAX_VALUE ((ptrdiff_t)1 << 24)
#define DW_MAX_PLANE ((ptrdiff_t)1 << 28)

/* Slack in elements after every flat plane: the widest variant reads up to 4 vectors of 64 bytes
 * past the last output it computes (4 vectors of it are computed at once). */
#define DW_SLACK 64

/* Kernels up to this many taps run the row-by-row forward stencil (splatted weights on the stack). */
#define DW_ROW_TAPS 64

/* The polyphase form of a zero-padded input plane: SH*SW phase planes of (Qh, Qw), each followed
 * by slack; the padded extent is what the output reads, (OH-1)*S + (K-1)*D + 1 per axis. */
typedef struct {
    ptrdiff_t qh, qw, plane, count;
} dw_phases;

/* The zero-padded extent the outputs read, (OH-1)*S + (K-1)*D + 1 rows (hp) and columns (wp). */
static void dw_extent(const dw_geom *g, ptrdiff_t *hp, ptrdiff_t *wp)
{
    *hp = (g->oh - 1) * g->sh + (g->kh - 1) * g->dh + 1;
    *wp = (g->ow - 1) * g->sw + (g->kw - 1) * g->dw + 1;
}

static void dw_forward_phases(const dw_geom *g, dw_phases *ph)
{
    ptrdiff_t hp, wp;
    dw_extent(g, &hp, &wp);
    ph->qh = (hp + g->sh - 1) / g->sh;
    ph->qw = (wp + g->sw - 1) / g->sw;
    ph->plane = (ph->qh + 1) * ph->qw + DW_SLACK; /* junk columns of the last row read one row on */
    ph->count = g->sh * g->sw;
}

/* Tap (kh, kw) of output (oh, ow) reads phase (kh*DH % SH, kw*DW % SW) at (oh + kh*DH / SH,
 * ow + kw*DW / SW): a constant flat shift of the wide output position oh * Qw + ow. */
static void dw_forward_shifts(const dw_geom *g, const dw_phases *ph, ptrdiff_t *shift)
{
    for (ptrdiff_t kh = 0; kh < g->kh; kh++)
        for (ptrdiff_t kw = 0; kw < g->kw; kw++) {
            const ptrdiff_t a = kh * g->dh, b = kw * g->dw;
            shift[kh * g->kw + kw] = ph->plane * (a % g->sh * g->sw + b % g->sw) + a / g->sh * ph->qw + b / g->sw;
        }
}

/* grad_input: the gy planes with Th rows and Tw columns of zeros in front, rows of L columns,
 * enough rows and columns after for every input phase's flat stencil. */
typedef struct {
    ptrdiff_t th, tw, len, rows, plane;
} dw_gx_layout;

static void dw_grad_input_layout(const dw_geom *g, dw_gx_layout *lay)
{
    const ptrdiff_t qh_max = (g->h - 1 + g->ph) / g->sh, qw_max = (g->w - 1 + g->pw) / g->sw;
    lay->th = (g->kh - 1) * g->dh / g->sh;
    lay->tw = (g->kw - 1) * g->dw / g->sw;
    lay->len = lay->tw + (g->ow > qw_max + 1 ? g->ow : qw_max + 1);
    lay->rows = lay->th + (g->oh > qh_max + 1 ? g->oh : qh_max + 1);
    lay->plane = (lay->rows + 1) * lay->len + DW_SLACK; /* junk columns of the last row read one row on */
}

/* One input phase of the grad_input result: ceil(H / SH) rows of L columns, plus slack. */
static ptrdiff_t dw_gx_wide_len(const dw_geom *g, const dw_gx_layout *lay)
{
    return (g->h + g->sh - 1) / g->sh * lay->len + DW_SLACK;
}

/* Whether the forward may run its planes in the vector lanes (depthwise.h's dw_forward_lanes): one
 * output channel per input channel, the zero-padded plane (HP x WP positions), the input plane (its
 * position table) and the taps small enough for its vectors of up to DW_LANES elements, and output
 * rows under 2 * DW_LANES (the most any variant takes there: dw_lanes_wins). */
#define DW_LANES 16
#define DW_LANES_MAX_GRID 4096
static int dw_lanes_fit(const dw_geom *g)
{
    ptrdiff_t hp, wp;
    dw_extent(g, &hp, &wp);
    return g->m == 1 && g->ow < 2 * DW_LANES && g->kh * g->kw <= DW_ROW_TAPS && hp * wp <= DW_LANES_MAX_GRID &&
           g->oh * g->ow <= DW_LANES_MAX_GRID && g->h * g->w <= 4 * DW_LANES_MAX_GRID;
}

/* Input columns a zero-padded row of `width` columns holds (the rest lie past it, never read): at
 * most W, from column PW on. */
static ptrdiff_t dw_columns_read(const dw_geom *g, ptrdiff_t width)
{
    return g->w < width - g->pw ? g->w : width - g->pw;
}

/* The stride-2 3x3 forward (depthwise.h's dw_forward_s2): a ring of DW_S2_SLOTS zero-padded input
 * rows (the 5 a pair of output rows reads, and the next one) and a row of zeros, each row at least
 * WP + DW_LANES elements (the last tap vector reads one vector past column 2 * OW), rounded to 16. */
#define DW_S2_SLOTS 6
static int dw_s2_fits(const dw_geom *g)
{
    return g->sh == 2 && g->sw == 2 && g->kh == 3 && g->kw == 3 && g->dh == 1 && g->dw == 1;
}

static ptrdiff_t dw_s2_pitch(const dw_geom *g)
{
    ptrdiff_t hp, wp;
    dw_extent(g, &hp, &wp);
    return (wp + DW_LANES + 15) / 16 * 16;
}

/* Scratch elements each pass needs per call (the caller allocates them, one buffer per thread). */
static ptrdiff_t dw_scratch(int pass, const dw_geom *g)
{
    if (pass == 1) {
        dw_gx_layout lay;
        dw_grad_input_layout(g, &lay);
        return g->m * lay.plane + g->sw * dw_gx_wide_len(g, &lay);
    }
    dw_phases ph;
    dw_forward_phases(g, &ph);
    ptrdiff_t rows = ph.count * ph.plane + g->oh * ph.qw + DW_SLACK; /* + the wide output (gy for grad_weight) */
    if (pass == 0 && dw_s2_fits(g) && (DW_S2_SLOTS + 1) * dw_s2_pitch(g) > rows)
        rows = (DW_S2_SLOTS + 1) * dw_s2_pitch(g);
    if (pass == 0 && dw_lanes_fit(g)) { /* the lanes forward: padded grid, outputs, weights, in vectors */
        ptrdiff_t hp, wp;
        dw_extent(g, &hp, &wp);
        const ptrdiff_t lanes = (hp * wp + g->oh * g->ow + g->kh * g->kw) * DW_LANES;
        return lanes > rows ? lanes : rows;
    }
    return rows;
}

/* Scratch elements of one 3-d depthwise forward call (dw3_forward): a zero slice and the D input slices in
 * their polyphase form, then the wide output rows. */
static ptrdiff_t dw3_scratch(const dw_geom *g, ptrdiff_t d)
{
    dw_phases ph;
    dw_forward_phases(g, &ph);
    return (d + 1) * ph.count * ph.plane + g->oh * ph.qw + DW_SLACK;
}

/* Sizes of one grouped call: x (N, G*Cg, H, W), weight (G*Og, Cg, KH, KW), output (N, G*Og, OH, OW),
 * stride, dilation, low zero padding as for dw_geom. */
typedef struct {
    ptrdiff_t n, g, cg, og, h, w, oh, ow, kh, kw, sh, sw, dh, dw, ph, pw;
} gp_geom;

/* The largest output-channel register block of any variant (grouped.h's GP_OB). */
#define GP_MAX_OB 8

/* Per-channel polyphase scratch (chan elements), the wide forward output per block channel
 * (wide_n >= positions + one register block) and the wide gy planes of grad_weight (gy_n: the
 * positions rounded up to 16 elements, a whole number of vectors of every variant). */
typedef struct {
    ptrdiff_t chan, wide_n, gy_n;
} gp_layout;

static void gp_forward_layout(const gp_geom *g, dw_geom *d, dw_phases *ph, gp_layout *lay)
{
    *d = (dw_geom){g->n, g->g * g->cg, 1, g->h, g->w, g->oh, g->ow, g->kh, g->kw, g->sh, g->sw, g->dh, g->dw,
                   g->ph, g->pw};
    dw_forward_phases(d, ph);
    const ptrdiff_t npos = g->oh * ph->qw;
    lay->chan = ph->count * ph->plane;
    lay->wide_n = npos + DW_SLACK;
    lay->gy_n = (npos + 15) / 16 * 16;
}

/* Scratch elements per call: pass 0 forward, 2 grad_weight (grad_input runs as a forward). */
static ptrdiff_t gp_scratch(int pass, const gp_geom *g)
{
    dw_geom d;
    dw_phases ph;
    gp_layout lay;
    gp_forward_layout(g, &d, &ph, &lay);
    if (pass == 2) return g->cg * lay.chan + (g->og + 1) * lay.gy_n;
    return g->cg * lay.chan + GP_MAX_OB * lay.wide_n + g->cg * g->kh * g->kw * GP_MAX_OB;
}

#include "blas.h"

/* Sizes of one Winograd F(4x4, 3x3) call: x (N, C, H, W), transformed weight U (36, O, C/G),
 * output (N, O, OH, OW), low zero padding (PH, PW) (the high side is implied by OH/OW), groups G;
 * tile grid (N, TH, TW) of 4x4 output tiles; at most CAP tiles per call; float32 GEMMs summed over
 * blocks of CBLOCK input channels (0: one block). The images may be one phase of a dilation (DH, DW):
 * x's element (i, j) is x_full[X0H + DH i][X0W + DW j] of planes XH x XW, y's (q, r) is
 * y_full[Y0H + DH q][Y0W + DW r] of planes YH x YW (DH = DW = 1, X0 = Y0 = 0: the arrays themselves). */
typedef struct {
    ptrdiff_t n, c, h, w, o, oh, ow, ph, pw, groups, cap, cblock, dh, dw, xh, xw, x0h, x0w, yh, yw, y0h, y0w;
    /* derived */
    ptrdiff_t th, tw, xplane, xrow, xoff, yplane, yrow, yoff;
} wg_geom;

/* Tiles per run of the transforms (tiles of one image, across its tile rows). */
#define WG_RUN 64

/* Scratch offsets (elements): V (36, C, NTP), M (36, O, NTP), 6 zero-padded input rows of RS,
 * their row transform (6 x 6 column offsets of PS), the output staging (4 x 16), the gemm's packing
 * buffer (GM_SCRATCH). NTP leaves a vector of
 * slack after the last tile (junk lanes of the transforms); offsets are multiples of 16 elements. */
typedef struct {
    ptrdiff_t ntp, ps, rs, v, m, rb, tr, q, pack, total;
} wg_layout;

static void wg_scratch_layout(const wg_geom *g, wg_layout *L)
{
    L->ntp = (g->cap + 16 + 15) / 16 * 16;
    L->ps = WG_RUN + 32; /* a run's tiles rounded up to a vector of 16, and the column after */
    L->rs = 4 * L->ps;   /* 4 columns per tile */
    L->v = 0;
    L->m = 36 * g->c * L->ntp;
    L->rb = L->m + 36 * g->o * L->ntp;
    L->tr = L->rb + 6 * L->rs;
    L->q = L->tr + 36 * L->ps;
    L->pack = L->q + 64;
    L->total = L->pack + GM_SCRATCH;
}

/* The grad_weight call's scratch (winograd_grad_weight): V as the forward's, GY (36 x O x NTP) where the
 * forward keeps M, the input transform's rows, the gy tiles' staging (16 x 16), one product's
 * (O/G x C/G) result, the gemm's packing buffer. */
typedef struct {
    ptrdiff_t ntp, ps, rs, v, gy, rb, tr, q, mf, pack, total;
} wg_gw_layout;

static void wg_grad_weight_layout(const wg_geom *g, wg_gw_layout *L)
{
    wg_layout f;
    wg_scratch_layout(g, &f);
    L->ntp = f.ntp, L->ps = f.ps, L->rs = f.rs, L->v = f.v, L->gy = f.m, L->rb = f.rb, L->tr = f.tr;
    L->q = f.q;
    L->mf = L->q + 256;
    L->pack = L->mf + ((g->o / g->groups) * (g->c / g->groups) + 15) / 16 * 16;
    L->total = L->pack + GM_SCRATCH;
}


#ifndef NPCONV_IM2COL_COMMON
#define NPCONV_IM2COL_COMMON

/* Sizes of one call. Spatial triples are (D, H, W); `band` output positions per item (grad_input:
 * per gemm inside an item; row shift: rows of the shift axis per item), `images` per item (> 1:
 * chunks of whole images, forward/grad_weight), `chunk` input channels per grad_input item, `shift`
 * 0 or 1 + the row-shift axis (forward/grad_weight, stride 1 along it: the columns cover the
 * trailing axes of a slab of input rows and kernel row j is the column block j * d * R). */
typedef struct {
    ptrdiff_t n, c, o, groups;
    ptrdiff_t in[3], out[3], k[3], s[3], d[3], p[3];
    ptrdiff_t band, images, chunk, shift, implicit;
    /* derived */
    ptrdiff_t cg, og, taps, ck, len, plane, bands, chunks, direct;
    ptrdiff_t axis, ka, ckr, rowlen, halo; /* row shift: axis, its taps, Cg*K/ka, R, (ka - 1) * d */
    ptrdiff_t ext[3], lines, maxoff, srows, nqmax; /* implicit: padded extents, output lines, reach, slab
                                                       rows, positions per item */
} gc_geom;

enum { GC_FORWARD, GC_GRAD_INPUT, GC_GRAD_WEIGHT };
/* Epilogue activations, the codes of npconv.kernels.pointwise.Activation: none, ReLU, Hardtanh
 * (clamp to [lo, hi]; ReLU6 is [0, 6]). */
enum { GC_ACT_NONE, GC_ACT_RELU, GC_ACT_HARDTANH, GC_ACT_SILU };

/* Input positions along axis a (zero padding included) that `count` consecutive outputs read: the extent of
 * their windows. */
static inline ptrdiff_t gc_reach(const gc_geom *g, int a, ptrdiff_t count)
{
    return (count - 1) * g->s[a] + (g->k[a] - 1) * g->d[a] + 1;
}

/* The direct lanes forward (implicit 3) splits each group's og output channels into `chunk` parts, at
 * multiples of 16 channels but the last; its items are (part, image, band of rows), part-major, so that a
 * worker's contiguous range of items is mostly one part (whose weight it transposes once). */
static inline void gc_direct_part(const gc_geom *g, ptrdiff_t part, ptrdiff_t *c0, ptrdiff_t *c1)
{
    *c0 = g->og * part / g->chunk / 16 * 16;
    *c1 = part + 1 == g->chunk ? g->og : g->og * (part + 1) / g->chunk / 16 * 16;
}

static inline void gc_direct_item(const gc_geom *g, ptrdiff_t item, ptrdiff_t *part, ptrdiff_t *n, ptrdiff_t *l0,
                                  ptrdiff_t *l1)
{
    const ptrdiff_t per_part = g->n * g->bands, rest = item % per_part;
    *part = item / per_part, *n = rest / g->bands, *l0 = rest % g->bands * g->band;
    *l1 = g->lines - *l0 < g->band ? g->lines : *l0 + g->band;
}

/* Columns of the direct forward's transposed weight: a part's channels in whole vectors (16 at most past them). */
static inline ptrdiff_t gc_direct_width(const gc_geom *g) { return g->og / g->chunk + 32; }

/* Work items of a pass. */
static ptrdiff_t gc_items(int pass, const gc_geom *g)
{
    if (g->implicit == 3) return g->chunk * g->n * g->bands;
    if (pass == GC_GRAD_INPUT) return (g->n + g->images - 1) / g->images * g->groups * g->chunks;
    if (g->images > 1) return (g->n + g->images - 1) / g->images;
    return g->n * g->bands;
}

/* The output written by forward item `item` (gc_forward's items): images [n0, n0 + nb), flat positions
 * [p0, p1) of every output channel's plane. */
static inline void gc_forward_region(const gc_geom *g, ptrdiff_t item, ptrdiff_t *n0, ptrdiff_t *nb, ptrdiff_t *p0,
                                     ptrdiff_t *p1)
{
    *nb = 1;
    if (g->implicit == 3) { /* (part, image, band of rows): every channel's positions of the band */
        ptrdiff_t part, l0, l1;
        gc_direct_item(g, item, &part, n0, &l0, &l1);
        *p0 = l0 * g->out[2], *p1 = l1 * g->out[2];
    } else if (g->implicit) { /* bands of output lines */
        const ptrdiff_t l0 = item % g->bands * g->band, l1 = g->lines - l0 < g->band ? g->lines : l0 + g->band;
        *n0 = item / g->bands, *p0 = l0 * g->out[2], *p1 = l1 * g->out[2];
    } else if (g->images > 1) { /* whole images */
        *n0 = item * g->images, *nb = g->n - *n0 < g->images ? g->n - *n0 : g->images;
        *p0 = 0, *p1 = g->len;
    } else if (g->shift) { /* bands of rows along the shift axis */
        const ptrdiff_t r0 = item % g->bands * g->band;
        const ptrdiff_t rows = g->out[g->axis] - r0 < g->band ? g->out[g->axis] - r0 : g->band;
        *n0 = item / g->bands, *p0 = r0 * g->rowlen, *p1 = (r0 + rows) * g->rowlen;
    } else { /* bands of positions */
        const ptrdiff_t q0 = item % g->bands * g->band;
        *n0 = item / g->bands, *p0 = q0, *p1 = g->len - q0 < g->band ? g->len : q0 + g->band;
    }
}

/* Derived sizes (after the caller's checks that the products fit). */
static void gc_derive(gc_geom *g)
{
    g->cg = g->c / g->groups, g->og = g->o / g->groups;
    g->plane = g->in[0] * g->in[1] * g->in[2];
    g->len = g->out[0] * g->out[1] * g->out[2];
    g->taps = g->k[0] * g->k[1] * g->k[2];
    g->ck = g->cg * g->taps;
    g->axis = g->shift ? g->shift - 1 : 0;
    g->ka = g->shift ? g->k[g->axis] : 1;
    g->ckr = g->ck / g->ka;
    g->rowlen = g->axis == 0 ? g->out[1] * g->out[2] : g->out[2];
    g->halo = g->shift ? (g->ka - 1) * g->d[g->axis] : 0;
    g->bands = g->shift ? (g->out[g->axis] + g->band - 1) / g->band : (g->len + g->band - 1) / g->band;
    g->chunks = (g->cg + g->chunk - 1) / g->chunk;
    if (g->implicit == 3) { /* the direct lanes forward (1-d/2-d): bands of output rows, each slab row ext[2] long */
        g->ext[0] = 1;
        g->ext[1] = gc_reach(g, 1, g->out[1]);
        g->ext[2] = gc_reach(g, 2, g->out[2]);
        g->lines = g->out[1];
        g->bands = (g->lines + g->band - 1) / g->band;
        g->srows = gc_reach(g, 1, g->band);
    } else if (g->implicit) { /* lines of the last axis; 3-d bands are whole planes (checked by the binding) */
        for (int a = 0; a < 3; a++) g->ext[a] = g->out[a] + (g->k[a] - 1) * g->d[a];
        g->lines = g->out[0] * g->out[1];
        g->bands = (g->lines + g->band - 1) / g->band;
        g->maxoff = ((g->k[0] - 1) * g->d[0] * g->ext[1] + (g->k[1] - 1) * g->d[1]) * g->ext[2] +
                    (g->k[2] - 1) * g->d[2];
        /* one padded plane (1-d, 2-d): bands of lines; else (3-d, also with one output plane) whole planes */
        g->srows = g->ext[0] == 1 ? g->band + (g->k[1] - 1) * g->d[1]
                                  : (g->band / g->out[1] + (g->k[0] - 1) * g->d[0]) * g->ext[1];
        g->nqmax = (g->ext[0] == 1 ? g->band : g->band / g->out[1] * g->ext[1]) * g->ext[2];
    }
    g->direct = g->taps == 1 && g->s[0] == 1 && g->s[1] == 1 && g->s[2] == 1 && !g->p[0] && !g->p[1] && !g->p[2] &&
                g->in[0] == g->out[0] && g->in[1] == g->out[1] && g->in[2] == g->out[2];
}

/* Scratch elements of a pass's columns; the gemm's packing buffer (GM_SCRATCH) follows them. */
/* grad_input's col2im buffer with stride 2 and at least 4 taps along the last axis (two or more
 * additions per input column and row of taps: fewer did not pay for the buffer's zeroing and
 * interleaving, docs/performance.md): one channel plane, each row's even and odd columns apart
 * (GC(unpack)); 0 otherwise. */
static ptrdiff_t gc_phase_elements(const gc_geom *g)
{
    return g->s[2] == 2 && g->k[2] >= 4 && !g->direct ? g->in[0] * g->in[1] * 2 * ((g->in[2] + 1) / 2) : 0;
}

/* A small image's zero-padded channel plane: the extent the outputs read (ext = (out - 1) * s + (k - 1)
 * * d + 1 per axis), the last axis split into its s phases (phase q holds columns q, q + s, ...: a tap's
 * row is then out2-long contiguous runs of one phase), at most GC_PAD_MAX values; 0 for larger ones,
 * the direct case or the implicit GEMM. The image chunks' packing uses one per image (GC(pad_plane));
 * grad_input's col2im its own (gc_phased_elements). */
#define GC_PAD_MAX 1024
typedef struct {
    ptrdiff_t e0, e1, w2; /* padded rows (e0 x e1) and columns per phase (w2 x s2 columns in all) */
    ptrdiff_t n[3];       /* input positions an output reads along each axis: i + p inside the extent */
} gc_padded;

static void gc_padded_of(const gc_geom *g, gc_padded *pd)
{
    pd->e0 = gc_reach(g, 0, g->out[0]);
    pd->e1 = gc_reach(g, 1, g->out[1]);
    pd->w2 = (gc_reach(g, 2, g->out[2]) + g->s[2] - 1) / g->s[2];
    const ptrdiff_t ext[3] = {pd->e0, pd->e1, pd->w2 * g->s[2]};
    for (int a = 0; a < 3; a++) pd->n[a] = ext[a] - g->p[a] < g->in[a] ? ext[a] - g->p[a] : g->in[a];
}

static ptrdiff_t gc_pad_elements(const gc_geom *g)
{
    if (g->direct || g->implicit) return 0;
    gc_padded pd;
    gc_padded_of(g, &pd);
    const ptrdiff_t e = pd.e0 * pd.e1 * pd.w2 * g->s[2];
    return e <= GC_PAD_MAX ? e : 0;
}


/* grad_input's col2im of whole images (GC(unpack_phased)): one channel's zero-padded extent (ext = (out
 * - 1) * s + (k - 1) * d + 1 per axis, rounded up to whole strides) as s0 * s1 * s2 phase planes, where
 * each tap's rows are contiguous runs. With unit strides (one plane) for small images only, an extent
 * of at most GC_PAD_MAX values (a 4x4 image's 36 segments paid more in their bounds than in their
 * additions; larger ones mostly run as the adjoint's forward); with strides up to GC_PHASED_MAX values
 * and only where the taps overlap along some axis (a 1x1 or 2x2 kernel at stride 2 gives each input
 * value at most one addition: zeroing and reading back the planes cost 1.25x the direct scatter,
 * docs/performance.md). 0 otherwise, and for the direct case. */
#define GC_PHASED_MAX ((ptrdiff_t)1 << 16)
static ptrdiff_t gc_phased_elements(const gc_geom *g)
{
    if (g->direct || g->implicit) return 0;
    const int unit = g->s[0] == 1 && g->s[1] == 1 && g->s[2] == 1;
    int overlap = 0;
    for (int a = 0; a < 3; a++) overlap |= (g->k[a] - 1) * g->d[a] + 1 > g->s[a];
    if (!unit && !overlap) return 0;
    const ptrdiff_t limit = unit ? GC_PAD_MAX : GC_PHASED_MAX;
    ptrdiff_t e = 1;
    for (int a = 0; a < 3; a++) {
        const ptrdiff_t ext = gc_reach(g, a, g->out[a]);
        e *= (ext + g->s[a] - 1) / g->s[a] * g->s[a];
        if (e > limit) return 0;
    }
    return e;
}

static ptrdiff_t gc_pack_offset(int pass, const gc_geom *g)
{
    if (g->implicit == 3) /* the slab, a part's transposed weight (ck x gc_direct_width) and ck offsets */
        return g->cg * g->srows * g->ext[2] + g->ck * (gc_direct_width(g) + 2) + 2;
    if (g->implicit) /* the slab; grad_weight's gy^T panels after it */
        return g->cg * g->srows * g->ext[2] + (pass == GC_FORWARD ? 0 : (g->og + 16) * g->nqmax);
    if (pass == GC_GRAD_INPUT) /* the columns; with chunks of images, of all of them, and their gy side by
                                * side; then the col2im phase buffer */
        return (g->images > 1 ? (g->chunk * g->taps + g->og) * g->images * g->len
                              : g->direct ? 0 : g->chunk * g->taps * g->band) + gc_phase_elements(g) +
               gc_phased_elements(g);
    if (g->images > 1) /* forward: the columns in the gemm's panels (the last rounded up), a row, the product;
                        * then each image's zero-padded channel plane (gc_pad_elements) */
        return (pass == GC_FORWARD ? g->ck * (g->images * g->len + 16) + (1 + g->og) * g->images * g->len
                                   : (g->ck + g->og) * g->images * g->len) + g->images * gc_pad_elements(g);
    if (g->shift) return g->ckr * (g->band + g->halo) * g->rowlen;
    if (g->direct) return 0;
    /* forward: the columns in the gemm's panels (the last rounded up to a vector) and one row */
    return pass == GC_FORWARD ? g->ck * (g->band + 16) + g->band : g->ck * g->band;
}

/* Scratch elements one call of a pass needs (the caller allocates them, one buffer per thread). */
/* Columns of the forward's sums staged in scratch after the packing buffer (0: none): a product of several
 * depth blocks over a band of positions smaller than the image (the implicit GEMM's column blocks, at most GM_NC; im2col's and
 * a 1x1 image's bands up to GM_NC) accumulates there and is written to y once with the epilogue. Accumulated in y, the
 * workers' items of one image, which share a line of each channel's output row at their border, traded
 * those lines at every depth block (256x14 3x3 at batch 1 on two threads: 0.86x the time). */
static ptrdiff_t gc_staged_sums(int pass, const gc_geom *g)
{
    if (pass != GC_FORWARD || g->ck <= GM_KC || g->images > 1 || g->shift || g->implicit == 3) return 0;
    if (g->implicit) /* an item's positions, where items are bands of an image's lines */
        return g->band >= g->lines ? 0 : g->band * g->out[2] < GM_NC ? g->band * g->out[2] : GM_NC;
    return g->band < g->len && g->band <= GM_NC ? g->band : 0;
}

static ptrdiff_t gc_scratch(int pass, const gc_geom *g)
{
    if (g->implicit == 3) return gc_pack_offset(pass, g); /* no gemm */
    return gc_pack_offset(pass, g) + GM_SCRATCH + g->og * gc_staged_sums(pass, g);
}

#endif /* NPCONV_IM2COL_COMMON */
/* ---- dispatch tables ---------------------------------------------------------------------- */

typedef int (*dw_fwd_fn)(const void *, const void *, const void *, void *, void *, const dw_geom *,
                         ptrdiff_t, ptrdiff_t, int, double, double);
typedef int (*dw_gw_fn)(const void *, const void *, void *, void *, const dw_geom *, ptrdiff_t, ptrdiff_t);

/* the 3-d depthwise forward: dw_fwd_fn's arguments with the depth (D, OD, KD, SD, DD, PD) after the geometry */
typedef int (*dw3_fwd_fn)(const void *, const void *, const void *, void *, void *, const dw_geom *,
                          const ptrdiff_t *, ptrdiff_t, ptrdiff_t, int, double, double);

typedef struct {
    dw_fwd_fn forward, grad_input;
    dw_gw_fn grad_weight;
    dw3_fwd_fn forward3d;
} dw_kernels;


typedef int (*gp_fwd_fn)(const void *, const void *, const void *, void *, void *, const gp_geom *, ptrdiff_t,
                         ptrdiff_t, int, double, double, ptrdiff_t, ptrdiff_t);
typedef int (*gp_gw_fn)(const void *, const void *, void *, void *, const gp_geom *, ptrdiff_t, ptrdiff_t);

typedef struct {
    gp_fwd_fn forward;
    gp_gw_fn grad_weight;
} gp_kernels;


typedef void (*mp_fwd_fn)(const void *, void *, int32_t *, const mp_geom *, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                          ptrdiff_t);
typedef void (*mp_bwd_fn)(const void *, const int32_t *, void *, const mp_geom *, ptrdiff_t, ptrdiff_t);

typedef struct {
    mp_fwd_fn forward;
    mp_bwd_fn backward;
} mp_kernels;


/* One stage of a Winograd forward whose workers share its output channels (winograd_forward): 1 the input
 * transform of channels [c0, c1) into v (a worker's scratch, the V region), 2 the products and output
 * transform from v. */
typedef struct {
    int stage;
    ptrdiff_t c0, c1;
    void *v;
} wg_stage;

typedef void (*wg_fwd_fn)(const gemm_fns *, const void *, const void *, const void *, void *, void *,
                          const wg_geom *, ptrdiff_t, ptrdiff_t, int, double, double, const wg_stage *, const void *);

/* winograd3d_forward: (fns, x, u, bias, y, scratch, g, (D, KD, PD), C, z0, z1, t0, t1, act, lo, hi) */
typedef void (*wg3_fwd_fn)(const gemm_fns *, const void *, const void *, const void *, void *, void *,
                           const wg_geom *, const ptrdiff_t *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                           int, double, double);
/* winograd3d_grad_weight: (fns, x, gy, acc, scratch, g, (D, KD, PD), C, z0, z1, t0, t1, first) */
typedef void (*wg3_gw_fn)(const gemm_fns *, const void *, const void *, double *, void *, const wg_geom *,
                          const ptrdiff_t *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, int);
typedef void (*wg_weight_fn)(const void *, void *, ptrdiff_t, ptrdiff_t, ptrdiff_t);
typedef void (*wg_finish_fn)(const void *, int, ptrdiff_t, ptrdiff_t, void *, ptrdiff_t, ptrdiff_t);
typedef void (*wg_gw_fn)(const gemm_fns *, const void *, const void *, double *, void *, const wg_geom *, ptrdiff_t,
                         ptrdiff_t, ptrdiff_t, ptrdiff_t, int, const wg_stage *);




typedef void (*bn_fwd_fn)(const void *, void *, const void *, const void *, void *, const bn_geom *, int, double,
                          ptrdiff_t, ptrdiff_t);
typedef void (*bn_bwd_fn)(const void *, const void *, void *, const void *, const void *, void *, const bn_geom *,
                          int, ptrdiff_t, ptrdiff_t);
typedef struct {
    bn_fwd_fn forward;
    bn_bwd_fn backward;
} bn_kernels;
typedef void (*ew_fn)(const void *, const void *, void *, ptrdiff_t, ptrdiff_t);
typedef void (*sgd_fn)(void *, const void *, void *, ptrdiff_t, ptrdiff_t, const double *, int);
typedef void (*adam_fn)(void *, const void *, void *, void *, void *, ptrdiff_t, ptrdiff_t, const double *, int);
typedef void (*gc_fwd_fn)(const gemm_fns *, const void *, const void *, const void *, void *, void *,
                          const gc_geom *, ptrdiff_t, ptrdiff_t, int, double, double);
typedef void (*gc_gw_fn)(const gemm_fns *, const void *, const void *, void *, void *, const gc_geom *, ptrdiff_t,
                         ptrdiff_t, int);
/* a forward item's residual pass: y = act(y + res) over the item's output region (gc_forward_region) */
typedef void (*gc_res_fn)(const gc_geom *, void *, const void *, ptrdiff_t, int, double, double);
typedef struct {
    gc_fwd_fn forward, grad_input;
    gc_gw_fn grad_weight;
    gc_res_fn residual;
} gc_kernels;
typedef void (*vr_fn)(const void *, ptrdiff_t, ptrdiff_t, double *);
typedef void (*lr_fn)(const void *, const void *, void *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t);
typedef void (*rm_fn)(const void *, void *, ptrdiff_t, ptrdiff_t, ptrdiff_t);
/* spectral_mix's shape (spectral.h): n images, ng groups, ni inputs and nj outputs per group, nf complex
 * values per row, b's row strides sj and si, conj 1 to conjugate b. */
typedef struct {
    ptrdiff_t n, ng, ni, nj, nf, sj, si;
    int conj;
} sm_geom;
typedef void (*sm_fn)(const void *, const void *, void *, void *, const sm_geom *, ptrdiff_t, ptrdiff_t);
/* spectral_mix's packed chunk: SM_FV_MAX vectors of frequencies of every row of a and of SM_JB_MAX rows
 * of b; its scratch in elements of any type and vector width (64 bytes: the widest) */
#define SM_FV_MAX 8
#define SM_JB_MAX 2
static inline ptrdiff_t sm_scratch(const sm_geom *g, ptrdiff_t itemsize)
{
    return (g->n + SM_JB_MAX) * g->ni * SM_FV_MAX * (64 / itemsize);
}
/* A fused inverted residual block (block.h): 1x1 expansion (optional) -> 3x3 depthwise (padding 1,
 * stride 1 or 2) -> 1x1 projection (+ residual), each with its bias and activation (0 none, 1 ReLU,
 * 2 clamp to [lo, hi]; act[2] applies after the residual). Items: image * bands + band, band b taking
 * output rows [b * oh / bands, (b + 1) * oh / bands); tile: output rows computed at a time. expand 2: the
 * network's stem instead of the expansion, a 3x3 convolution of stride 2 and padding 1 of the input
 * (N, cin, xh, xw) whose output (h, w) the depthwise reads (expand 0 and 1: xh == h, xw == w). */
typedef struct {
    ptrdiff_t n, cin, cexp, cout, h, w, oh, ow, stride, bands, tile;
    int expand, residual;
    int act[3];
    double lo[3], hi[3];
    ptrdiff_t xh, xw;
} ir_geom;
/* Row pitch of the expanded rows: the input's W columns between zero padding columns. The stride-2
 * row kernels read up to 3 * VL columns from a row's start (VL at most DW_LANES), past the row's end
 * into the next rows (or E's slack) in lanes they never store. */
static inline ptrdiff_t ir_pitch(const ir_geom *g) { return g->w + 2; }
static inline ptrdiff_t ir_in_rows(const ir_geom *g) { return g->stride * (g->tile - 1) + 3; }
static inline ptrdiff_t ir_round(ptrdiff_t n) { return (n + 15) / 16 * 16; }
/* E's channel stride: its rows, and with a stem the 3 * DW_LANES positions past them that the stem's
 * last register block of positions stores (junk, zeroed after). */
static inline ptrdiff_t ir_e_stride(const ir_geom *g)
{
    return ir_in_rows(g) * ir_pitch(g) + (g->expand == 2 ? 3 * DW_LANES : 0);
}
/* The stem's input in polyphase form (grouped.h's, rows of E's pitch: a stem output row's positions are
 * E's row's, its two junk columns E's padding) and its register blocks' packed weights. */
#define IR_STEM_MAX_PAIRS 64
static void ir_stem_phases(const ir_geom *g, dw_geom *d, dw_phases *ph)
{
    *d = (dw_geom){g->n, g->cin, 1, g->xh, g->xw, g->h, g->w, 3, 3, 2, 2, 1, 1, 1, 1};
    dw_forward_phases(d, ph);
    ph->qw = ir_pitch(g); /* >= the natural w + 1 */
    ph->plane = (ph->qh + 1) * ph->qw + DW_SLACK;
}
static inline ptrdiff_t ir_stem_weights(const ir_geom *g)
{
    return (g->cexp + GP_MAX_OB - 1) / GP_MAX_OB * GP_MAX_OB * g->cin * 9;
}
/* The stem's phase planes at the start of xp (the packed weights follow them). */
static inline ptrdiff_t ir_stem_planes(const ir_geom *g)
{
    dw_geom d;
    dw_phases ph;
    ir_stem_phases(g, &d, &ph);
    return ir_round(g->cin * ph.count * ph.plane);
}
/* E (cexp channels of ir_e_stride, then slack) and xp: the input's rows before the expansion (cin
 * channels like E's, for widths that are not whole vectors), or the stem's phase planes and weights */
static inline ptrdiff_t ir_e_size(const ir_geom *g) { return ir_round(g->cexp * ir_e_stride(g) + 3 * DW_LANES); }
static inline ptrdiff_t ir_xp_size(const ir_geom *g)
{
    if (g->expand == 2) return ir_stem_planes(g) + ir_round(ir_stem_weights(g));
    return g->expand ? ir_round(g->cin * ir_in_rows(g) * ir_pitch(g)) : 0;
}
/* D: the depthwise rows of a tile, then a vector of slack (narrow rows store whole vectors) */
static inline ptrdiff_t ir_d_size(const ir_geom *g) { return ir_round(g->cexp * g->tile * g->ow + DW_LANES); }
/* scratch elements: E, xp, the depthwise rows, the GEMMs' packing (B blocks of at most GM_KC x
 * (GM_NC + a panel)) */
static inline ptrdiff_t ir_scratch(const ir_geom *g)
{
    return ir_e_size(g) + ir_xp_size(g) + ir_d_size(g) + (ptrdiff_t)GM_KC * (GM_NC + 3 * DW_LANES);
}
typedef int (*ir_fn)(const void *, const void *, const void *, const void *, const void *, const void *,
                     const void *, const void *, void *, void *, const ir_geom *, ptrdiff_t, ptrdiff_t);

typedef int (*mm_fn)(const gemm_fns *, void *, int, int, ptrdiff_t, ptrdiff_t, ptrdiff_t, double, const void *,
                     ptrdiff_t, const void *, ptrdiff_t, double, void *, ptrdiff_t, const void *, int, double, double);

/* One ISA variant's kernels, [0] float32 and [1] float64 (each variant_*.c defines one). */
typedef struct {
    dw_kernels dw[2];
    gp_kernels gp[2];
    mp_kernels mp[2];
    bn_kernels bn[2];
    ew_fn ew[2][6]; /* [0] relu forward (x, -, y), [1] relu backward (g, y, gx), [2] add (a, b, out), [3] silu
                       forward (x, -, y), [4] sigmoid forward (x, -, y), [5] silu backward (g, x, gx) */
    gc_kernels gc[2];
    mm_fn mm[2];
    wg_weight_fn wg_weight[2];
    wg_fwd_fn wg[2];
    wg3_fwd_fn wg3[2]; /* 3-d (KD, 3, 3): Winograd in each depth slice, direct along the depth */
    wg3_gw_fn wg3_gw[2]; /* and its grad_weight */
    wg_gw_fn wg_gw[2]; /* Winograd grad_weight: products summed into a float64 accumulator */
    wg_finish_fn wg_finish[2]; /* and gw = G^T (sum of the accumulators) G */
    vr_fn vr[2]; /* value_range: max |v|, any NaN of a flat range */
    sm_fn sm[2]; /* spectral_mix: FFT convolution's per-frequency channel products */
    lr_fn lr[2]; /* linear_rows: a few rows of a linear layer's product */
    rm_fn rm[2]; /* row_means: global average pooling */
    ir_fn ir; /* float32 fused inverted residual block (NULL where the variant has no own GEMM) */
    sgd_fn sgd[2]; /* sgd_step: one optimizer step of a parameter range */
    adam_fn adam[2]; /* adam_step: the same for Adam / AdamW */
} isa_kernels;

/* the tables link the units, nothing outside the extension */
#if defined(__GNUC__)
#define NPCONV_INTERNAL __attribute__((visibility("hidden")))
#else
#define NPCONV_INTERNAL
#endif
extern NPCONV_INTERNAL const isa_kernels npconv_kernels_generic;
#if NPCONV_X86
extern NPCONV_INTERNAL const isa_kernels npconv_kernels_avx2;
extern NPCONV_INTERNAL const isa_kernels npconv_kernels_avx512;
#endif

#endif /* NPCONV_SHARED_H */
