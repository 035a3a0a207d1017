/* npconv._core's kernels for the generic variant (float32 and float64): see shared.h and kernels.h. */
#include "shared.h"


#define T float
#define TSIZE 4
#define TI int32_t
#define VBYTES 16
#define SFX f32_generic
#include "kernels.h"
#undef T
#undef TSIZE
#undef TI
#undef VBYTES
#undef SFX
#define T double
#define TSIZE 8
#define TI int64_t
#define VBYTES 16
#define SFX f64_generic
#include "kernels.h"
#undef T
#undef TSIZE
#undef TI
#undef VBYTES
#undef SFX
#define VARIANT_F32 f32_generic
#define VARIANT_F64 f64_generic
#define VARIANT_TABLE npconv_kernels_generic
#include "variant_table.h"


