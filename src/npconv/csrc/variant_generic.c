/* npconv._core's kernels for the generic variant (float32 and float64): see shared.h and variant.h. */
#include "shared.h"
#define VARIANT_VBYTES 16
#define VARIANT_F32 f32_generic
#define VARIANT_F64 f64_generic
#define VARIANT_TABLE npconv_kernels_generic
#include "variant.h"
