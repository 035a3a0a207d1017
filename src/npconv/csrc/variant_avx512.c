/* npconv._core's kernels for the avx512 variant (float32 and float64): see shared.h and variant.h. */
#include "shared.h"
#if NPCONV_X86
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,fma")
#define VARIANT_VBYTES 64
#define VARIANT_F32 f32_avx512
#define VARIANT_F64 f64_avx512
#define VARIANT_TABLE npconv_kernels_avx512
#include "variant.h"
#pragma GCC pop_options
#endif
