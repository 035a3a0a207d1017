/* npconv._core's kernels for the avx512 variant (float32 and float64): see shared.h and kernels.h. */
#include "shared.h"
#if NPCONV_X86
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,fma")
#define T float
#define TSIZE 4
#define TI int32_t
#define VBYTES 64
#define SFX f32_avx512
#include "kernels.h"
#undef T
#undef TSIZE
#undef TI
#undef VBYTES
#undef SFX
#define T double
#define TSIZE 8
#define TI int64_t
#define VBYTES 64
#define SFX f64_avx512
#include "kernels.h"
#undef T
#undef TSIZE
#undef TI
#undef VBYTES
#undef SFX
#define VARIANT_F32 f32_avx512
#define VARIANT_F64 f64_avx512
#define VARIANT_TABLE npconv_kernels_avx512
#include "variant_table.h"
#pragma GCC pop_options
#endif
