/* npconv._core's kernels for the avx2 variant (float32 and float64): see shared.h and variant.h. */
#include "shared.h"
#if NPCONV_X86
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define VARIANT_VBYTES 32
#define VARIANT_F32 f32_avx2
#define VARIANT_F64 f64_avx2
#define VARIANT_TABLE npconv_kernels_avx2
#include "variant.h"
#pragma GCC pop_options
#endif
