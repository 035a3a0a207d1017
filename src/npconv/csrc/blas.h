/* The kernels' matrix product: SciPy's BLAS gemm or npconv's own (gemm.h), called with the GIL released.
 *
 * The routines come from `scipy.linalg.cython_blas.__pyx_capi__` (Fortran sgemm/dgemm of the
 * OpenBLAS SciPy ships): the Python side passes the two capsules with every call that needs them
 * (`npconv.kernels.blas.gemm_routines()`), so the core keeps no global state and links no BLAS.
 * The caller holds BLAS to one thread (npconv's worker threads do), so kernels on both workers
 * never start OpenBLAS's spinning pool.
 */

typedef void (*sgemm_fn)(char *, char *, int *, int *, int *, float *, float *, int *, float *, int *, float *,
                         float *, int *);
typedef void (*dgemm_fn)(char *, char *, int *, int *, int *, double *, double *, int *, double *, int *,
                         double *, double *, int *);

/* own: the vector ISAs multiply with npconv's gemm (gemm.h) instead of the BLAS. */
typedef struct {
    sgemm_fn sgemm;
    dgemm_fn dgemm;
    int own;
} gemm_fns;

/* npconv's gemm blocking (elements): a KC x NR panel of B stays in L1 while A's MC x KC block
 * streams from L2; GM_SCRATCH is the packing buffer of one call (B's KC x NC block, then a
 * transposed A's MC x KC block), any ISA. */
#define GM_KC 256
#define GM_NC 768
#define GM_MC_MAX 256
#define GM_SCRATCH ((ptrdiff_t)GM_KC * GM_NC + (ptrdiff_t)GM_MC_MAX * GM_KC)
/* npconv's gemm reads B in place (no packing) for at most this many rows of A (blas.h: tunable at
 * build time; measured in docs/performance.md). */
#ifndef GM_DIRECT_ROWS
#define GM_DIRECT_ROWS 160
#endif

/* Largest matrix dimension or leading dimension gemm_rm accepts (Fortran BLAS takes int). */
#define GEMM_MAX_DIM ((ptrdiff_t)INT32_MAX)

/* obj: (sgemm capsule, dgemm capsule, own) with the capsules as cython_blas exports them and own
 * a bool (npconv's gemm on the vector ISAs). */
static int parse_gemm_fns(PyObject *obj, gemm_fns *g)
{
    PyObject *s, *d;
    int own;
    if (!PyArg_ParseTuple(obj, "OOp;gemm routines must be (sgemm capsule, dgemm capsule, own: bool)", &s, &d, &own))
        return -1;
    g->own = own;
    if (!PyCapsule_CheckExact(s) || !PyCapsule_CheckExact(d)) {
        PyErr_SetString(PyExc_TypeError, "gemm routines must be (sgemm capsule, dgemm capsule, own: bool)");
        return -1;
    }
    g->sgemm = (sgemm_fn)PyCapsule_GetPointer(s, PyCapsule_GetName(s));
    g->dgemm = (dgemm_fn)PyCapsule_GetPointer(d, PyCapsule_GetName(d));
    return g->sgemm && g->dgemm ? 0 : -1;
}

/* Row-major C (m x n, leading dimension ldc) = alpha * op(A) @ op(B) + beta * C, where op(A) is
 * m x k (A stored k x m when trans_a), op(B) k x n; tsize 4 is float32, 8 float64. Row-major is
 * column-major transposed, so BLAS computes C^T = op(B)^T op(A)^T. Sizes must not exceed
 * GEMM_MAX_DIM (callers tile). */
static void gemm_rm(const gemm_fns *g, int tsize, int trans_a, int trans_b, ptrdiff_t m, ptrdiff_t n,
                    ptrdiff_t k, double alpha, const void *a, ptrdiff_t lda, const void *b, ptrdiff_t ldb,
                    double beta, void *c, ptrdiff_t ldc)
{
    char ta = trans_b ? 'T' : 'N', tb = trans_a ? 'T' : 'N';
    int im = (int)n, in = (int)m, ik = (int)k;
    int ia = ldb > 1 ? (int)ldb : 1, ib = lda > 1 ? (int)lda : 1, ic = ldc > 1 ? (int)ldc : 1;
    if (m == 0 || n == 0) return;
    if (tsize == 4) {
        float fa = (float)alpha, fb = (float)beta;
        g->sgemm(&ta, &tb, &im, &in, &ik, &fa, (float *)b, &ia, (float *)a, &ib, &fb, (float *)c, &ic);
    } else {
        g->dgemm(&ta, &tb, &im, &in, &ik, &alpha, (double *)b, &ia, (double *)a, &ib, &beta, (double *)c, &ic);
    }
}
