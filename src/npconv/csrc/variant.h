/* One ISA variant's kernels and their table, included by variant_*.c inside the variant's target
 * pragma with VARIANT_VBYTES (vector bytes), VARIANT_F32 / VARIANT_F64 (the kernels' name suffixes)
 * and VARIANT_TABLE (the table's name) defined: kernels.h once per element type, then the table. */
#define T float
#define TSIZE 4
#define TI int32_t
#define VBYTES VARIANT_VBYTES
#define SFX VARIANT_F32
#include "kernels.h"
#undef T
#undef TSIZE
#undef TI
#undef VBYTES
#undef SFX
#define T double
#define TSIZE 8
#define TI int64_t
#define VBYTES VARIANT_VBYTES
#define SFX VARIANT_F64
#include "kernels.h"
#undef T
#undef TSIZE
#undef TI
#undef VBYTES
#undef SFX

#define VT_CAT_(a, b) a##_##b
#define VT_CAT(a, b) VT_CAT_(a, b)

/* float32 / float64 take their clamp bounds as their own type: one adapter per copy */
#define WG_ADAPT(sfx, T)                                                                                   \
    static void VT_CAT(wg_forward, sfx)(const gemm_fns *f, const void *x, const void *u, const void *b,      \
                                        void *y, void *s, const wg_geom *g, ptrdiff_t t0, ptrdiff_t t1,      \
                                        int act, double lo, double hi, const wg_stage *st, const void *r)   \
    {                                                                                                       \
        VT_CAT(winograd_forward, sfx)(f, (const T *)x, (const T *)u, (const T *)b, (T *)y, (T *)s, g, t0,    \
                                      t1, act, (T)lo, (T)hi, st, (const T *)r);                             \
    }
#define WG3_ADAPT(sfx, T)                                                                                  \
    static void VT_CAT(wg3_forward, sfx)(const gemm_fns *f, const void *x, const void *u, const void *b,     \
                                         void *y, void *s, const wg_geom *g, const ptrdiff_t *dp,            \
                                         ptrdiff_t cin, ptrdiff_t z0, ptrdiff_t z1, ptrdiff_t t0,            \
                                         ptrdiff_t t1, int act, double lo, double hi)                        \
    {                                                                                                       \
        VT_CAT(winograd3d_forward, sfx)(f, (const T *)x, (const T *)u, (const T *)b, (T *)y, (T *)s, g, dp, \
                                        cin, z0, z1, t0, t1, act, (T)lo, (T)hi);                            \
    }
/* the one-input passes f(x, y) (relu, silu, sigmoid forward) take the second pointer as their output:
 * adapt each to the table's two-input shape as f2 */
#define EW_ADAPT(f, sfx, T)                                                                                \
    static void VT_CAT(f##2, sfx)(const void *x, const void *unused, void *y, ptrdiff_t a, ptrdiff_t b)      \
    {                                                                                                       \
        (void)unused;                                                                                       \
        VT_CAT(f, sfx)((const T *)x, (T *)y, a, b);                                                         \
    }
WG_ADAPT(VARIANT_F32, float)
WG_ADAPT(VARIANT_F64, double)
WG3_ADAPT(VARIANT_F32, float)
WG3_ADAPT(VARIANT_F64, double)
EW_ADAPT(relu_forward, VARIANT_F32, float)
EW_ADAPT(relu_forward, VARIANT_F64, double)
EW_ADAPT(silu_forward, VARIANT_F32, float)
EW_ADAPT(silu_forward, VARIANT_F64, double)
EW_ADAPT(sigmoid_forward, VARIANT_F32, float)
EW_ADAPT(sigmoid_forward, VARIANT_F64, double)

#define VT_DW(sfx) {(dw_fwd_fn)VT_CAT(dw_forward, sfx), (dw_fwd_fn)VT_CAT(dw_grad_input, sfx), \
                    (dw_gw_fn)VT_CAT(dw_grad_weight, sfx), (dw3_fwd_fn)VT_CAT(dw3_forward, sfx)}
#define VT_GP(sfx) {(gp_fwd_fn)VT_CAT(gp_forward, sfx), (gp_gw_fn)VT_CAT(gp_grad_weight, sfx)}
#define VT_MP(sfx) {(mp_fwd_fn)VT_CAT(max_pool_forward, sfx), (mp_bwd_fn)VT_CAT(max_pool_backward, sfx)}
#define VT_BN(sfx) {(bn_fwd_fn)VT_CAT(batch_norm_forward, sfx), (bn_bwd_fn)VT_CAT(batch_norm_backward, sfx)}
#define VT_EW(sfx) {VT_CAT(relu_forward2, sfx), (ew_fn)VT_CAT(relu_backward, sfx), (ew_fn)VT_CAT(add_arrays, sfx), \
                    VT_CAT(silu_forward2, sfx), VT_CAT(sigmoid_forward2, sfx), (ew_fn)VT_CAT(silu_backward, sfx)}
#define VT_GC(sfx) {(gc_fwd_fn)VT_CAT(gc_forward, sfx), (gc_fwd_fn)VT_CAT(gc_grad_input, sfx), \
                    (gc_gw_fn)VT_CAT(gc_grad_weight, sfx), (gc_res_fn)VT_CAT(gc_residual, sfx)}

NPCONV_INTERNAL const isa_kernels VARIANT_TABLE = {
    .dw = {VT_DW(VARIANT_F32), VT_DW(VARIANT_F64)},
    .gp = {VT_GP(VARIANT_F32), VT_GP(VARIANT_F64)},
    .mp = {VT_MP(VARIANT_F32), VT_MP(VARIANT_F64)},
    .bn = {VT_BN(VARIANT_F32), VT_BN(VARIANT_F64)},
    .ew = {VT_EW(VARIANT_F32), VT_EW(VARIANT_F64)},
    .gc = {VT_GC(VARIANT_F32), VT_GC(VARIANT_F64)},
    .mm = {(mm_fn)VT_CAT(mm, VARIANT_F32), (mm_fn)VT_CAT(mm, VARIANT_F64)},
    .wg_weight = {(wg_weight_fn)VT_CAT(winograd_weight, VARIANT_F32), (wg_weight_fn)VT_CAT(winograd_weight, VARIANT_F64)},
    .wg = {VT_CAT(wg_forward, VARIANT_F32), VT_CAT(wg_forward, VARIANT_F64)},
    .wg3 = {VT_CAT(wg3_forward, VARIANT_F32), VT_CAT(wg3_forward, VARIANT_F64)},
    .wg3_gw = {(wg3_gw_fn)VT_CAT(winograd3d_grad_weight, VARIANT_F32),
               (wg3_gw_fn)VT_CAT(winograd3d_grad_weight, VARIANT_F64)},
    .wg_gw = {(wg_gw_fn)VT_CAT(winograd_grad_weight, VARIANT_F32), (wg_gw_fn)VT_CAT(winograd_grad_weight, VARIANT_F64)},
    .wg_finish = {(wg_finish_fn)VT_CAT(winograd_gw_finish, VARIANT_F32),
                  (wg_finish_fn)VT_CAT(winograd_gw_finish, VARIANT_F64)},
    .vr = {(vr_fn)VT_CAT(value_range, VARIANT_F32), (vr_fn)VT_CAT(value_range, VARIANT_F64)},
    .sm = {(sm_fn)VT_CAT(spectral_mix, VARIANT_F32), (sm_fn)VT_CAT(spectral_mix, VARIANT_F64)},
    .lr = {(lr_fn)VT_CAT(linear_rows, VARIANT_F32), (lr_fn)VT_CAT(linear_rows, VARIANT_F64)},
    .rm = {(rm_fn)VT_CAT(row_means, VARIANT_F32), (rm_fn)VT_CAT(row_means, VARIANT_F64)},
    .ir = (ir_fn)VT_CAT(ir_forward, VARIANT_F32),
    .sgd = {(sgd_fn)VT_CAT(sgd_step, VARIANT_F32), (sgd_fn)VT_CAT(sgd_step, VARIANT_F64)},
    .adam = {(adam_fn)VT_CAT(adam_step, VARIANT_F32), (adam_fn)VT_CAT(adam_step, VARIANT_F64)},
};
