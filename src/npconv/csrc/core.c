/* npconv._core: npconv's compiled kernels (see docs/compiled-core.md).
 *
 * Every kernel source is compiled once per ISA variant (generic; on x86-64 also AVX2+FMA and
 * AVX-512F/VL/BW/DQ) and element type, one translation unit per variant (variant_*.c, each
 * exporting its table of kernels to this file, which holds the Python bindings; the build compiles
 * the units in parallel); Python picks the variant (`isa` argument) from available_isas(), which
 * asks the CPU once. Kernels are single-threaded over a range of planes,
 * release the GIL, write only into buffers the caller passes, and keep no global state: npconv's
 * worker threads call them concurrently, and a forked child inherits nothing to repair.
 */

#include "shared.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>
#include <time.h>
#include <sched.h>

enum { ISA_GENERIC, ISA_AVX2, ISA_AVX512, ISA_COUNT };
static const char *const ISA_NAMES[ISA_COUNT] = {"generic", "avx2", "avx512"};

/* [isa]: the variant's kernels (NULL where this build has none) */
static const isa_kernels *const KERNELS[ISA_COUNT] = {
    &npconv_kernels_generic,
#if NPCONV_X86
    &npconv_kernels_avx2,
    &npconv_kernels_avx512,
#else
    NULL,
    NULL,
#endif
};

static int isa_supported(int isa)
{
    if (isa == ISA_GENERIC) return 1;
#if NPCONV_X86
    __builtin_cpu_init();
    if (isa == ISA_AVX2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (isa == ISA_AVX512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("fma");
#endif
    return 0;
}

/* ---- Python bindings ---------------------------------------------------------------------- */

static PyObject *available_isas(PyObject *self, PyObject *unused)
{
    PyObject *names = PyList_New(0);
    if (!names) return NULL;
    for (int isa = 0; isa < ISA_COUNT; isa++) {
        if (!isa_supported(isa)) continue;
        PyObject *name = PyUnicode_FromString(ISA_NAMES[isa]);
        if (!name || PyList_Append(names, name) < 0) {
            Py_XDECREF(name);
            Py_DECREF(names);
            return NULL;
        }
        Py_DECREF(name);
    }
    PyObject *result = PyList_AsTuple(names);
    Py_DECREF(names);
    return result;
}

/* The calling thread's x86 MXCSR "denormal operand" flag (sticky: set by any SSE/AVX arithmetic on a
 * subnormal input since it was last cleared), then cleared if asked; None where there is no MXCSR. For
 * tests: a kernel whose junk lanes read stale scratch (often subnormal as floats) runs up to 3x slower. */
static PyObject *subnormal_operands(PyObject *self, PyObject *args)
{
    int clear = 0;
    if (!PyArg_ParseTuple(args, "|p", &clear)) return NULL;
#if defined(__x86_64__) || defined(__i386__)
    unsigned int csr;
    __asm__ volatile("stmxcsr %0" : "=m"(csr));
    const int seen = (csr & 0x2u) != 0; /* DE */
    if (clear) {
        unsigned int cleared = csr & ~0x3fu; /* every exception flag: the others are as sticky */
        __asm__ volatile("ldmxcsr %0" : : "m"(cleared));
    }
    return PyBool_FromLong(seen);
#else
    (void)clear;
    Py_RETURN_NONE;
#endif
}

static int check_geom(const dw_geom *g);

/* v[0, count) = the ints of a geometry tuple (TypeError naming its fields otherwise), value i at least
 * 1 where low[i] is '1' and 0 where it is '0', and at most `high` (every binding's geometry parser). */
static int geometry_ints(PyObject *seq, int count, const char *fields, const char *low, ptrdiff_t high,
                         ptrdiff_t *v)
{
    if (!PyTuple_Check(seq) || PyTuple_GET_SIZE(seq) != count) {
        PyErr_Format(PyExc_TypeError, "geometry must be a tuple of %d ints (%s)", count, fields);
        return -1;
    }
    for (int i = 0; i < count; i++) {
        v[i] = PyLong_AsSsize_t(PyTuple_GET_ITEM(seq, i));
        if (v[i] == -1 && PyErr_Occurred()) return -1;
        if (v[i] < low[i] - '0' || v[i] > high) {
            PyErr_Format(PyExc_ValueError, "geometry value %d out of range: %zd", i, v[i]);
            return -1;
        }
    }
    return 0;
}

static int parse_geom(PyObject *seq, dw_geom *g)
{
    ptrdiff_t v[15];
    if (geometry_ints(seq, 15, "N, C, M, H, W, OH, OW, KH, KW, SH, SW, DH, DW, PH, PW", "111111111111100",
                      DW_MAX_VALUE, v) < 0)
        return -1;
    *g = (dw_geom){v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], v[13], v[14]};
    return check_geom(g);
}

/* The limits every plane kernel relies on (a Python exception when one is broken). */
static int check_geom(const dw_geom *g)
{
    if (g->m * g->kh * g->kw > ((ptrdiff_t)1 << 30)) {
        PyErr_SetString(PyExc_ValueError, "geometry: too many taps per plane");
        return -1;
    }
    /* Scratch and float32 in-plane indices (int32) stay small: every phase holds >= 1 element, so a
     * stride beyond the read extent, or a huge plane, is refused (the NumPy variant runs those). */
    ptrdiff_t hp, wp;
    dw_extent(g, &hp, &wp);
    if (hp > DW_MAX_PLANE || wp > DW_MAX_PLANE || hp * wp > DW_MAX_PLANE || g->sh * g->sw > hp * wp + g->h * g->w ||
        g->h * g->w > DW_MAX_PLANE || g->oh * g->ow > DW_MAX_PLANE || dw_scratch(0, g) > 4 * DW_MAX_PLANE ||
        dw_scratch(1, g) > 4 * DW_MAX_PLANE) {
        PyErr_SetString(PyExc_ValueError, "geometry: plane, stride or scratch too large for the compiled kernel");
        return -1;
    }
    return 0;
}

/* A C-contiguous buffer of obj and its element format without the native byte-order prefix. */
static const char *acquire_buffer(PyObject *obj, int writable, Py_buffer *view)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return NULL;
    const char *f = view->format ? view->format : "B";
    return (f[0] == '=' || f[0] == '<' || f[0] == '@') ? f + 1 : f;
}

/* Buffers: C-contiguous, element type float32 ('f') or float64 ('d'), exactly `count` elements. */
static int get_buffer(PyObject *obj, int writable, Py_buffer *view, const char *what)
{
    const char *f = acquire_buffer(obj, writable, view);
    if (!f) return -1;
    if (!((f[0] == 'f' && view->itemsize == 4) || (f[0] == 'd' && view->itemsize == 8)) || f[1]) {
        PyErr_Format(PyExc_TypeError, "%s must hold float32 or float64, got format %s", what, view->format);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static int check_count(const Py_buffer *view, ptrdiff_t count, int at_least, const char *what)
{
    const ptrdiff_t have = view->len / view->itemsize;
    if (at_least ? have < count : have != count) {
        PyErr_Format(PyExc_ValueError, "%s has %zd elements, expected %s%zd", what, have, at_least ? ">= " : "",
                     count);
        return -1;
    }
    return 0;
}

/* The float buffers of one kernel call: acquired in order, each checked (float32/float64, one element
 * type for all, exactly `count` elements or at least that many), released together. */
enum { BUF_WRITABLE = 1, BUF_OPTIONAL = 2, BUF_AT_LEAST = 4, BUF_MAX = 10 };

typedef struct {
    Py_buffer view[BUF_MAX];
    int held[BUF_MAX];
    int count;
} buffer_set;

static void release_buffers(buffer_set *set)
{
    for (int i = 0; i < set->count; i++)
        if (set->held[i]) PyBuffer_Release(&set->view[i]);
}

/* objs[i] may be None where flags[i] has BUF_OPTIONAL (its view stays empty, buf NULL). */
static int acquire_buffers(buffer_set *set, int n, PyObject *const objs[], const char *const names[],
                           const int flags[], const ptrdiff_t counts[])
{
    Py_ssize_t itemsize = 0;
    memset(set, 0, sizeof *set);
    set->count = n;
    for (int i = 0; i < n; i++) {
        if ((flags[i] & BUF_OPTIONAL) && objs[i] == Py_None) continue;
        if (get_buffer(objs[i], flags[i] & BUF_WRITABLE, &set->view[i], names[i]) < 0) goto fail;
        set->held[i] = 1;
        if (itemsize && set->view[i].itemsize != itemsize) {
            PyErr_SetString(PyExc_TypeError, "all buffers must have the same element type");
            goto fail;
        }
        itemsize = set->view[i].itemsize;
    }
    for (int i = 0; i < n; i++)
        if (set->held[i] && check_count(&set->view[i], counts[i], flags[i] & BUF_AT_LEAST, names[i]) < 0) goto fail;
    return 0;
fail:
    release_buffers(set);
    return -1;
}

/* A work range [start, stop) of `limit` items (`what`: planes, channels, ...). */
static int check_range(Py_ssize_t start, Py_ssize_t stop, Py_ssize_t limit, const char *what)
{
    if (start < 0 || stop > limit || start > stop) {
        PyErr_Format(PyExc_ValueError, "%s range [%zd, %zd) outside [0, %zd)", what, start, stop, limit);
        return -1;
    }
    return 0;
}

static int check_isa(int isa)
{
    if (isa < 0 || isa >= ISA_COUNT || !isa_supported(isa) || !KERNELS[isa]) {
        PyErr_Format(PyExc_ValueError, "ISA variant %d is not available on this CPU/build", isa);
        return -1;
    }
    return 0;
}

static PyObject *scratch_size(PyObject *self, PyObject *args)
{
    int pass;
    PyObject *geom;
    dw_geom g;
    if (!PyArg_ParseTuple(args, "iO", &pass, &geom) || parse_geom(geom, &g) < 0) return NULL;
    return PyLong_FromSsize_t(dw_scratch(pass, &g));
}

/* An output epilogue's activation: 0 none, 1 relu, 2 hardtanh clamped to [lo, hi], 3 silu. */
static int check_act(int act, double lo, double hi)
{
    if (act < 0 || act > 3) {
        PyErr_Format(PyExc_ValueError, "act must be 0 (none), 1 (relu), 2 (hardtanh) or 3 (silu), got %d", act);
        return -1;
    }
    if (act == 2 && !(lo <= hi)) {
        PyErr_Format(PyExc_ValueError, "clamp bounds must satisfy lo <= hi, got [%g, %g]", lo, hi);
        return -1;
    }
    return 0;
}

/* A prepared kernel call (a "job"): arguments parsed and checked and buffers held with the GIL, run
 * later by any thread without it. npconv's worker threads run the jobs they are posted inside their
 * wait loop (team_wait), never taking the GIL: a worker that had to take the GIL from the caller
 * blocked on it, and that hand-off cost 25-35 us per call on the 2-vCPU machines. */
typedef struct kernel_job kernel_job;
struct kernel_job {
    void (*run)(kernel_job *);     /* no GIL; sets failed (a kernel's own allocation failed) */
    void (*release)(kernel_job *); /* with the GIL: drop the buffers */
    int failed;
    Py_ssize_t *range; /* the job's own [start, stop) of items, for a shared range (NULL: none) */
    int64_t *next;     /* shared range (jobs_share): the next unclaimed item, NULL: run [start, stop) once */
    Py_ssize_t chunk, end;
};

/* Run a job: its own range once, or, sharing a range with other jobs of one call, runs of `chunk`
 * items claimed from it until none are left (a worker that starts late or runs on a slower CPU then
 * takes fewer). Every item is run exactly once whichever job claims it. */
static void job_execute(kernel_job *job)
{
    if (!job->next) {
        job->run(job);
        return;
    }
    for (;;) {
        const int64_t at = __atomic_fetch_add(job->next, (int64_t)job->chunk, __ATOMIC_RELAXED);
        if (at >= job->end) return;
        job->range[0] = (Py_ssize_t)at;
        job->range[1] = job->end - at > job->chunk ? (Py_ssize_t)at + job->chunk : job->end;
        job->run(job);
        if (job->failed) return;
    }
}

static const char JOB_CAPSULE[] = "npconv._core.job";

static void job_capsule_free(PyObject *capsule)
{
    kernel_job *job = PyCapsule_GetPointer(capsule, JOB_CAPSULE);
    if (!job) return;
    job->release(job);
    PyMem_RawFree(job);
}

/* A binding's end: run the parsed job now (GIL released) or hand it out as a capsule (prepare). */
static PyObject *run_or_wrap(kernel_job *job, int prepare)
{
    if (!prepare) {
        Py_BEGIN_ALLOW_THREADS
        job_execute(job);
        Py_END_ALLOW_THREADS
        const int failed = job->failed;
        job->release(job);
        if (failed) return PyErr_NoMemory();
        Py_RETURN_NONE;
    }
    PyObject *capsule = PyCapsule_New(job, JOB_CAPSULE, job_capsule_free);
    if (!capsule) {
        job->release(job);
        PyMem_RawFree(job);
    }
    return capsule;
}

/* Storage for a binding's job: the caller's stack for a call, the heap for a prepared job. */
static void *job_storage(void *local, size_t size, int prepare)
{
    if (!prepare) return local;
    void *heap = PyMem_RawMalloc(size);
    if (!heap) PyErr_NoMemory();
    return heap;
}

static void job_storage_free(void *job, void *local)
{
    if (job != local) PyMem_RawFree(job);
}

static kernel_job *get_job(PyObject *capsule)
{
    kernel_job *job = PyCapsule_GetPointer(capsule, JOB_CAPSULE);
    if (!job) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "expected a job of npconv._core, got %.100s", Py_TYPE(capsule)->tp_name);
    }
    return job;
}

/* job_run(job): run a prepared job on this thread, GIL released (it may run any number of times). */
static PyObject *job_run(PyObject *self, PyObject *capsule)
{
    kernel_job *job = get_job(capsule);
    if (!job) return NULL;
    Py_BEGIN_ALLOW_THREADS
    job_execute(job);
    Py_END_ALLOW_THREADS
    if (job->failed) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* jobs_check(jobs): MemoryError if a kernel's own allocation failed in the last run of any of them
 * (jobs run by a worker report nothing else). */
static PyObject *jobs_check(PyObject *self, PyObject *seq)
{
    PyObject *fast = PySequence_Fast(seq, "jobs must be a sequence of jobs");
    if (!fast) return NULL;
    int failed = 0;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(fast); i++) {
        kernel_job *job = get_job(PySequence_Fast_GET_ITEM(fast, i));
        if (!job) {
            Py_DECREF(fast);
            return NULL;
        }
        failed |= job->failed;
    }
    Py_DECREF(fast);
    if (failed) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static int get_flags(PyObject *obj, Py_ssize_t index, Py_buffer *view);

/* jobs_share(jobs, counter, chunk): the jobs (of one kernel call, each prepared over the same item
 * range [start, stop)) share that range: each run claims runs of `chunk` items from counter[0] (an
 * int64 buffer the caller keeps alive and owns for the call; set to start here) until none are left.
 * Only for kernels whose items write disjoint outputs (who runs an item never changes its result). */
static PyObject *jobs_share(PyObject *self, PyObject *args)
{
    PyObject *seq, *counter_o;
    Py_ssize_t chunk;
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "OOn", &seq, &counter_o, &chunk)) return NULL;
    if (chunk < 1) {
        PyErr_Format(PyExc_ValueError, "chunk must be at least 1, got %zd", chunk);
        return NULL;
    }
    if (get_flags(counter_o, 0, &view) < 0) return NULL;
    PyObject *fast = PySequence_Fast(seq, "jobs must be a sequence of jobs");
    if (!fast) {
        PyBuffer_Release(&view);
        return NULL;
    }
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    Py_ssize_t start = 0, stop = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        kernel_job *job = get_job(PySequence_Fast_GET_ITEM(fast, i));
        if (!job) goto fail;
        if (!job->range) {
            PyErr_SetString(PyExc_ValueError, "jobs_share: this kind of job has no item range to share");
            goto fail;
        }
        if (i == 0) start = job->range[0], stop = job->range[1];
        if (job->range[0] != start || job->range[1] != stop) {
            PyErr_Format(PyExc_ValueError, "jobs_share: every job must cover [%zd, %zd), job %zd covers [%zd, %zd)",
                         start, stop, i, job->range[0], job->range[1]);
            goto fail;
        }
    }
    int64_t *next = (int64_t *)view.buf;
    *next = start;
    for (Py_ssize_t i = 0; i < n; i++) {
        kernel_job *job = get_job(PySequence_Fast_GET_ITEM(fast, i));
        job->next = next, job->chunk = chunk, job->end = stop;
    }
    Py_DECREF(fast);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
fail:
    Py_DECREF(fast);
    PyBuffer_Release(&view);
    return NULL;
}

/* A depthwise or grouped kernel call over a range of planes / items / channels / groups (its buffers
 * one buffer_set): forward and grad_input with an epilogue, or grad_weight. */
enum { PLANE_DW_STENCIL, PLANE_DW_GRAD_WEIGHT, PLANE_GP_FORWARD, PLANE_GP_GRAD_WEIGHT, PLANE_DW3_FORWARD };

typedef struct {
    kernel_job base;
    int kind, act;
    double lo, hi;
    Py_ssize_t start, stop;
    Py_ssize_t r0, r1; /* the grouped forward's output rows (adjacent: a one-item call's shared range) */
    ptrdiff_t depth[6]; /* the 3-d depthwise forward's (D, OD, KD, SD, DD, PD) */
    union {
        dw_geom dw;
        gp_geom gp;
    } g;
    union {
        dw_fwd_fn dw_stencil;
        dw3_fwd_fn dw3_forward;
        dw_gw_fn dw_grad_weight;
        gp_fwd_fn gp_forward;
        gp_gw_fn gp_grad_weight;
    } fn;
    buffer_set b;
} plane_job;

static void plane_job_run(kernel_job *job)
{
    plane_job *j = (plane_job *)job;
    void *v[5];
    for (int i = 0; i < 5; i++) v[i] = j->b.view[i].buf;
    int rc = 0;
    switch (j->kind) {
    case PLANE_DW_STENCIL:
        rc = j->fn.dw_stencil(v[0], v[1], v[2], v[3], v[4], &j->g.dw, j->start, j->stop, j->act, j->lo, j->hi);
        break;
    case PLANE_DW_GRAD_WEIGHT:
        rc = j->fn.dw_grad_weight(v[0], v[1], v[2], v[3], &j->g.dw, j->start, j->stop);
        break;
    case PLANE_GP_FORWARD:
        rc = j->fn.gp_forward(v[0], v[1], v[2], v[3], v[4], &j->g.gp, j->start, j->stop, j->act, j->lo, j->hi, j->r0,
                              j->r1);
        break;
    case PLANE_DW3_FORWARD:
        rc = j->fn.dw3_forward(v[0], v[1], v[2], v[3], v[4], &j->g.dw, j->depth, j->start, j->stop, j->act, j->lo,
                               j->hi);
        break;
    default:
        rc = j->fn.gp_grad_weight(v[0], v[1], v[2], v[3], &j->g.gp, j->start, j->stop);
    }
    job->failed = rc < 0;
}

static void plane_job_release(kernel_job *job) { release_buffers(&((plane_job *)job)->b); }

/* The plane kernels' common end: `spec` (kind, geometry, range, epilogue) with its buffers acquired,
 * the kernel of the buffers' element type picked (pass 1: the depthwise grad_input), run or wrapped. */
static PyObject *plane_job_start(const plane_job *spec, int isa, int pass, int prepare, int n, PyObject *const objs[],
                                 const char *const names[], const int flags[], const ptrdiff_t counts[])
{
    plane_job local, *j = job_storage(&local, sizeof local, prepare);
    if (!j) return NULL;
    *j = *spec;
    j->base = (kernel_job){plane_job_run, plane_job_release, 0};
    /* start, stop: adjacent; a grouped forward of one item shares its output rows instead */
    j->base.range = j->kind == PLANE_GP_FORWARD && j->stop - j->start == 1 ? &j->r0 : &j->start;
    if (acquire_buffers(&j->b, n, objs, names, flags, counts) < 0) {
        job_storage_free(j, &local);
        return NULL;
    }
    const int wide = j->b.view[0].itemsize == 8;
    const isa_kernels *k = KERNELS[isa];
    switch (j->kind) {
    case PLANE_DW_STENCIL:
        j->fn.dw_stencil = pass ? k->dw[wide].grad_input : k->dw[wide].forward;
        break;
    case PLANE_DW_GRAD_WEIGHT:
        j->fn.dw_grad_weight = k->dw[wide].grad_weight;
        break;
    case PLANE_DW3_FORWARD:
        j->fn.dw3_forward = k->dw[wide].forward3d;
        break;
    case PLANE_GP_FORWARD:
        j->fn.gp_forward = k->gp[wide].forward;
        break;
    default:
        j->fn.gp_grad_weight = k->gp[wide].grad_weight;
    }
    return run_or_wrap(&j->base, prepare);
}

/* forward / grad_input share one shape: (isa, src, w, bias|None, out, scratch, geom, start, stop[, act,
 * lo, hi]): out = act(conv + bias) (prepare: as a job). */
static PyObject *run_stencil_pass(PyObject *args, int pass, int prepare)
{
    int isa, act = 0;
    double lo = 0.0, hi = 0.0;
    PyObject *objs[5], *geom;
    Py_ssize_t start, stop;
    dw_geom g;
    if (!PyArg_ParseTuple(args, "iOOOOOOnn|idd", &isa, &objs[0], &objs[1], &objs[2], &objs[3], &objs[4], &geom,
                          &start, &stop, &act, &lo, &hi))
        return NULL;
    if (check_isa(isa) < 0 || parse_geom(geom, &g) < 0 || check_act(act, lo, hi) < 0) return NULL;
    static const char *const names[5] = {"input", "weight", "bias", "output", "scratch"};
    static const int flags[5] = {0, 0, BUF_OPTIONAL, BUF_WRITABLE, BUF_WRITABLE | BUF_AT_LEAST};
    const ptrdiff_t in_n = g.n * g.c * g.h * g.w, out_n = g.n * g.c * g.m * g.oh * g.ow;
    const ptrdiff_t counts[5] = {pass ? out_n : in_n, g.c * g.m * g.kh * g.kw, pass ? g.c : g.c * g.m,
                                 pass ? in_n : out_n, dw_scratch(pass, &g)};
    if (check_range(start, stop, g.n * g.c, "plane") < 0) return NULL;
    const plane_job spec = {.kind = PLANE_DW_STENCIL, .act = act, .lo = lo, .hi = hi, .start = start, .stop = stop,
                            .g.dw = g};
    return plane_job_start(&spec, isa, pass, prepare, 5, objs, names, flags, counts);
}

/* A 3-d depthwise call's depth (D, OD, KD, SD, DD, PD) checked against its slice geometry g (dw3_forward). */
static int parse_depth(PyObject *seq, const dw_geom *g, ptrdiff_t *dv)
{
    if (geometry_ints(seq, 6, "D, OD, KD, SD, DD, PD", "111110", DW_MAX_VALUE, dv) < 0) return -1;
    ptrdiff_t a;
    if (__builtin_mul_overflow(dv[0] + 1, dw3_scratch(g, 0), &a) || a > 4 * DW_MAX_PLANE ||
        dv[2] * g->kh * g->kw > DW_MAX_VALUE) {
        PyErr_SetString(PyExc_ValueError, "depth: the slices' scratch or the taps too large for the compiled kernel");
        return -1;
    }
    return 0;
}

/* (isa, x, w, bias|None, y, scratch, geom, depth, start, stop[, act, lo, hi]): (image, channel) pairs
 * [start, stop) of a 3-d depthwise forward (dw3_forward): geom one depth slice's 2-d geometry, depth (D, OD,
 * KD, SD, DD, PD). */
static PyObject *run_dw3_forward(PyObject *args, int prepare)
{
    int isa, act = 0;
    double lo = 0.0, hi = 0.0;
    PyObject *objs[5], *geom, *depth;
    Py_ssize_t start, stop;
    dw_geom g;
    ptrdiff_t dv[6];
    if (!PyArg_ParseTuple(args, "iOOOOOOOnn|idd", &isa, &objs[0], &objs[1], &objs[2], &objs[3], &objs[4], &geom,
                          &depth, &start, &stop, &act, &lo, &hi))
        return NULL;
    if (check_isa(isa) < 0 || parse_geom(geom, &g) < 0 || parse_depth(depth, &g, dv) < 0 || check_act(act, lo, hi) < 0)
        return NULL;
    static const char *const names[5] = {"input", "weight", "bias", "output", "scratch"};
    static const int flags[5] = {0, 0, BUF_OPTIONAL, BUF_WRITABLE, BUF_WRITABLE | BUF_AT_LEAST};
    ptrdiff_t in_n, out_n;
    if (__builtin_mul_overflow(g.n * g.c * g.h * g.w, dv[0], &in_n) ||
        __builtin_mul_overflow(g.n * g.c * g.m * g.oh * g.ow, dv[1], &out_n)) {
        PyErr_SetString(PyExc_ValueError, "depth: the arrays too large for the compiled kernel");
        return NULL;
    }
    const ptrdiff_t counts[5] = {in_n, g.c * g.m * dv[2] * g.kh * g.kw, g.c * g.m, out_n, dw3_scratch(&g, dv[0])};
    if (check_range(start, stop, g.n * g.c, "plane") < 0) return NULL;
    plane_job spec = {.kind = PLANE_DW3_FORWARD, .act = act, .lo = lo, .hi = hi, .start = start, .stop = stop,
                      .g.dw = g};
    memcpy(spec.depth, dv, sizeof spec.depth);
    return plane_job_start(&spec, isa, 0, prepare, 5, objs, names, flags, counts);
}

static PyObject *dw3d_forward(PyObject *self, PyObject *args) { return run_dw3_forward(args, 0); }
static PyObject *dw3d_forward_job(PyObject *self, PyObject *args) { return run_dw3_forward(args, 1); }

/* (geometry, depth) -> scratch elements of one depthwise3d_forward call. */
static PyObject *dw3d_scratch(PyObject *self, PyObject *args)
{
    PyObject *geom, *depth;
    dw_geom g;
    ptrdiff_t dv[6];
    if (!PyArg_ParseTuple(args, "OO", &geom, &depth) || parse_geom(geom, &g) < 0 || parse_depth(depth, &g, dv) < 0)
        return NULL;
    return PyLong_FromSsize_t(dw3_scratch(&g, dv[0]));
}

static PyObject *dw2d_forward(PyObject *self, PyObject *args) { return run_stencil_pass(args, 0, 0); }
static PyObject *dw2d_grad_input(PyObject *self, PyObject *args) { return run_stencil_pass(args, 1, 0); }
static PyObject *dw2d_forward_job(PyObject *self, PyObject *args) { return run_stencil_pass(args, 0, 1); }
static PyObject *dw2d_grad_input_job(PyObject *self, PyObject *args) { return run_stencil_pass(args, 1, 1); }

/* (isa, x, gy, gw, scratch, geom, channel_start, channel_stop) */
static PyObject *dw2d_gw_call(PyObject *args, int prepare)
{
    int isa;
    PyObject *objs[4], *geom;
    Py_ssize_t start, stop;
    dw_geom g;
    if (!PyArg_ParseTuple(args, "iOOOOOnn", &isa, &objs[0], &objs[1], &objs[2], &objs[3], &geom, &start, &stop))
        return NULL;
    if (check_isa(isa) < 0 || parse_geom(geom, &g) < 0 || check_range(start, stop, g.c, "channel") < 0) return NULL;
    static const char *const names[4] = {"input", "grad_output", "grad_weight", "scratch"};
    static const int flags[4] = {0, 0, BUF_WRITABLE, BUF_WRITABLE | BUF_AT_LEAST};
    const ptrdiff_t counts[4] = {g.n * g.c * g.h * g.w, g.n * g.c * g.m * g.oh * g.ow, g.c * g.m * g.kh * g.kw,
                                 dw_scratch(2, &g)};
    const plane_job spec = {.kind = PLANE_DW_GRAD_WEIGHT, .start = start, .stop = stop, .g.dw = g};
    return plane_job_start(&spec, isa, 0, prepare, 4, objs, names, flags, counts);
}

static PyObject *dw2d_grad_weight(PyObject *self, PyObject *args) { return dw2d_gw_call(args, 0); }
static PyObject *dw2d_grad_weight_job(PyObject *self, PyObject *args) { return dw2d_gw_call(args, 1); }

static int parse_gp_geom(PyObject *seq, gp_geom *g)
{
    ptrdiff_t v[16];
    if (geometry_ints(seq, 16, "N, G, Cg, Og, H, W, OH, OW, KH, KW, SH, SW, DH, DW, PH, PW", "1111111111111100",
                      DW_MAX_VALUE, v) < 0)
        return -1;
    *g = (gp_geom){v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], v[13], v[14],
                   v[15]};
    const dw_geom d = {g->n, 1, 1, g->h, g->w, g->oh, g->ow, g->kh, g->kw, g->sh, g->sw, g->dh, g->dw, g->ph, g->pw};
    if (check_geom(&d) < 0) return -1;
    if (g->g * g->cg > DW_MAX_VALUE || g->g * g->og > DW_MAX_VALUE || g->cg * g->og * g->kh * g->kw > ((ptrdiff_t)1 << 30) ||
        gp_scratch(0, g) > 4 * DW_MAX_PLANE || gp_scratch(2, g) > 4 * DW_MAX_PLANE) {
        PyErr_SetString(PyExc_ValueError, "geometry: channels or scratch too large for the compiled kernel");
        return -1;
    }
    return 0;
}

static PyObject *gp_scratch_size(PyObject *self, PyObject *args)
{
    int pass;
    PyObject *geom;
    gp_geom g;
    if (!PyArg_ParseTuple(args, "iO", &pass, &geom) || parse_gp_geom(geom, &g) < 0) return NULL;
    if (pass != 0 && pass != 2) {
        PyErr_Format(PyExc_ValueError, "pass must be 0 (forward) or 2 (grad_weight), got %d", pass);
        return NULL;
    }
    return PyLong_FromSsize_t(gp_scratch(pass, &g));
}

/* (isa, x, w, bias|None, y, scratch, geom, start, stop[, act, lo, hi[, row_start, row_stop]]): items (image * G +
 * group) [start, stop), output rows [row_start, row_stop) of each (default all), of y = act(conv + bias). The
 * job of one item shares (jobs_share) its rows: each claim fills and computes only its band of them. */
static PyObject *gp2d_call(PyObject *args, int prepare)
{
    int isa, act = 0;
    double lo = 0.0, hi = 0.0;
    PyObject *objs[5], *geom;
    Py_ssize_t start, stop, r0 = 0, r1 = -1;
    gp_geom g;
    if (!PyArg_ParseTuple(args, "iOOOOOOnn|iddnn", &isa, &objs[0], &objs[1], &objs[2], &objs[3], &objs[4], &geom,
                          &start, &stop, &act, &lo, &hi, &r0, &r1))
        return NULL;
    if (check_isa(isa) < 0 || parse_gp_geom(geom, &g) < 0 || check_act(act, lo, hi) < 0) return NULL;
    if (r1 == -1 && r0 == 0) r1 = g.oh;
    if (check_range(r0, r1, g.oh, "row") < 0) return NULL;
    static const char *const names[5] = {"input", "weight", "bias", "output", "scratch"};
    static const int flags[5] = {0, 0, BUF_OPTIONAL, BUF_WRITABLE, BUF_WRITABLE | BUF_AT_LEAST};
    const ptrdiff_t counts[5] = {g.n * g.g * g.cg * g.h * g.w, g.g * g.og * g.cg * g.kh * g.kw, g.g * g.og,
                                 g.n * g.g * g.og * g.oh * g.ow, gp_scratch(0, &g)};
    if (check_range(start, stop, g.n * g.g, "item") < 0) return NULL;
    const plane_job spec = {.kind = PLANE_GP_FORWARD, .act = act, .lo = lo, .hi = hi, .start = start, .stop = stop,
                            .r0 = r0, .r1 = r1, .g.gp = g};
    return plane_job_start(&spec, isa, 0, prepare, 5, objs, names, flags, counts);
}

static PyObject *gp2d_forward(PyObject *self, PyObject *args) { return gp2d_call(args, 0); }
static PyObject *gp2d_forward_job(PyObject *self, PyObject *args) { return gp2d_call(args, 1); }

/* (isa, x, gy, gw, scratch, geom, group_start, group_stop) */
static PyObject *gp2d_gw_call(PyObject *args, int prepare)
{
    int isa;
    PyObject *objs[4], *geom;
    Py_ssize_t start, stop;
    gp_geom g;
    if (!PyArg_ParseTuple(args, "iOOOOOnn", &isa, &objs[0], &objs[1], &objs[2], &objs[3], &geom, &start, &stop))
        return NULL;
    if (check_isa(isa) < 0 || parse_gp_geom(geom, &g) < 0 || check_range(start, stop, g.g, "group") < 0) return NULL;
    static const char *const names[4] = {"input", "grad_output", "grad_weight", "scratch"};
    static const int flags[4] = {0, 0, BUF_WRITABLE, BUF_WRITABLE | BUF_AT_LEAST};
    const ptrdiff_t counts[4] = {g.n * g.g * g.cg * g.h * g.w, g.n * g.g * g.og * g.oh * g.ow,
                                 g.g * g.og * g.cg * g.kh * g.kw, gp_scratch(2, &g)};
    const plane_job spec = {.kind = PLANE_GP_GRAD_WEIGHT, .start = start, .stop = stop, .g.gp = g};
    return plane_job_start(&spec, isa, 0, prepare, 4, objs, names, flags, counts);
}

static PyObject *gp2d_grad_weight(PyObject *self, PyObject *args) { return gp2d_gw_call(args, 0); }
static PyObject *gp2d_grad_weight_job(PyObject *self, PyObject *args) { return gp2d_gw_call(args, 1); }

static int parse_pool_geom(PyObject *seq, mp_geom *g)
{
    ptrdiff_t v[13];
    if (geometry_ints(seq, 13, "P, H, W, OH, OW, KH, KW, SH, SW, DH, DW, PH, PW", "0000011111100", DW_MAX_VALUE,
                      v) < 0)
        return -1;
    *g = (mp_geom){v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12]};
    /* products of two values stay below 2**48; every index the kernels form below 2**62 */
    if (g->kh * g->kw > ((ptrdiff_t)1 << 30) || g->h * g->w > DW_MAX_PLANE || g->oh * g->ow > DW_MAX_PLANE) {
        PyErr_SetString(PyExc_ValueError, "geometry: planes or kernel too large for the compiled kernel");
        return -1;
    }
    return 0;
}

static int get_int32_buffer(PyObject *obj, int writable, Py_buffer *view, const char *what)
{
    const char *f = acquire_buffer(obj, writable, view);
    if (!f) return -1;
    if (!((f[0] == 'i' || f[0] == 'l') && view->itemsize == 4) || f[1]) {
        PyErr_Format(PyExc_TypeError, "%s must hold int32, got format %s", what, view->format);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* pass 0: (isa, x, y, arg, geom, start, stop[, row0, row1]): output rows [row0, row1) (default all) of
 * planes [start, stop); pass 1: (isa, gy, arg, gx, geom, start, stop). */
typedef struct {
    kernel_job base;
    int pass, have_arg;
    mp_geom g;
    const mp_kernels *k;
    Py_ssize_t start, stop, row0, row1;
    Py_buffer src, dst, arg;
} mp_job;

static void mp_job_run(kernel_job *job)
{
    mp_job *j = (mp_job *)job;
    if (j->pass)
        j->k->backward(j->src.buf, (const int32_t *)j->arg.buf, j->dst.buf, &j->g, j->start, j->stop);
    else
        j->k->forward(j->src.buf, j->dst.buf, j->have_arg ? (int32_t *)j->arg.buf : NULL, &j->g, j->start, j->stop,
                      j->row0, j->row1);
}

static void mp_job_release(kernel_job *job)
{
    mp_job *j = (mp_job *)job;
    if (j->have_arg) PyBuffer_Release(&j->arg);
    PyBuffer_Release(&j->dst);
    PyBuffer_Release(&j->src);
}

static PyObject *run_max_pool(PyObject *args, int pass, int prepare)
{
    int isa;
    PyObject *a_o, *b_o, *c_o, *geom;
    Py_ssize_t start, stop, row0 = 0, row1 = 0;
    mp_geom g;
    if (!PyArg_ParseTuple(args, pass ? "iOOOOnn" : "iOOOOnn|nn", &isa, &a_o, &b_o, &c_o, &geom, &start, &stop, &row0,
                          &row1))
        return NULL;
    if (check_isa(isa) < 0 || parse_pool_geom(geom, &g) < 0 || check_range(start, stop, g.planes, "plane") < 0)
        return NULL;
    if (PyTuple_GET_SIZE(args) < 9) row1 = g.oh; /* no row range given: every row */
    if (check_range(row0, row1, g.oh, "output row") < 0) return NULL;
    /* forward: values x, y and indices arg; backward: values gy, gx and indices arg */
    PyObject *src_o = a_o, *dst_o = pass ? c_o : b_o, *arg_o = pass ? b_o : c_o;
    const int have_arg = pass || arg_o != Py_None; /* forward: arg None computes the values alone */
    mp_job local, *j = job_storage(&local, sizeof local, prepare);
    if (!j) return NULL;
    *j = (mp_job){.base = {mp_job_run, mp_job_release, 0}, .pass = pass, .have_arg = have_arg, .g = g,
                  .start = start, .stop = stop, .row0 = row0, .row1 = row1};
    if (get_buffer(src_o, 0, &j->src, pass ? "grad_output" : "input") < 0) goto free_job;
    if (get_buffer(dst_o, 1, &j->dst, pass ? "grad_input" : "output") < 0) goto release_src;
    if (have_arg && get_int32_buffer(arg_o, !pass, &j->arg, "arg") < 0) goto release_dst;
    if (j->dst.itemsize != j->src.itemsize) {
        PyErr_SetString(PyExc_TypeError, "input and output must have the same element type");
        goto release_arg;
    }
    const ptrdiff_t in_n = g.planes * g.h * g.w, out_n = g.planes * g.oh * g.ow;
    if (check_count(&j->src, pass ? out_n : in_n, 0, pass ? "grad_output" : "input") < 0 ||
        check_count(&j->dst, pass ? in_n : out_n, 0, pass ? "grad_input" : "output") < 0 ||
        (have_arg && check_count(&j->arg, out_n, 0, "arg") < 0))
        goto release_arg;
    j->k = &KERNELS[isa]->mp[j->src.itemsize == 8];
    return run_or_wrap(&j->base, prepare);
release_arg:
    if (have_arg) PyBuffer_Release(&j->arg);
release_dst:
    PyBuffer_Release(&j->dst);
release_src:
    PyBuffer_Release(&j->src);
free_job:
    job_storage_free(j, &local);
    return NULL;
}

/* op 0: relu forward (isa, x, y, start, stop); op 1: relu backward (isa, g, y, gx, start, stop); op 2: add
 * (isa, a, b, out, start, stop); op 3 / 4: silu / sigmoid forward (isa, x, y, start, stop); op 5: silu
 * backward (isa, g, x, gx, start, stop); elements [start, stop) of equally long flat buffers. */
#define EW_THREE(op) ((op) == 1 || (op) == 2 || (op) == 5)
typedef struct {
    kernel_job base;
    int op;
    ew_fn fn;
    Py_ssize_t start, stop;
    buffer_set b;
} ew_job;

static void ew_job_run(kernel_job *job)
{
    ew_job *j = (ew_job *)job;
    if (EW_THREE(j->op))
        j->fn(j->b.view[0].buf, j->b.view[1].buf, j->b.view[2].buf, j->start, j->stop);
    else
        j->fn(j->b.view[0].buf, NULL, j->b.view[1].buf, j->start, j->stop);
}

static void ew_job_release(kernel_job *job) { release_buffers(&((ew_job *)job)->b); }

static PyObject *run_elementwise(PyObject *args, int op, int prepare)
{
    int isa;
    PyObject *objs[3];
    Py_ssize_t start, stop;
    if (!(EW_THREE(op) ? PyArg_ParseTuple(args, "iOOOnn", &isa, &objs[0], &objs[1], &objs[2], &start, &stop)
                       : PyArg_ParseTuple(args, "iOOnn", &isa, &objs[0], &objs[1], &start, &stop)) ||
        check_isa(isa) < 0)
        return NULL;
    static const char *const names[6][3] = {{"input", "output", ""},
                                            {"grad_output", "output", "grad_input"},
                                            {"input", "other", "output"},
                                            {"input", "output", ""},
                                            {"input", "output", ""},
                                            {"grad_output", "input", "grad_input"}};
    static const int flags[6][3] = {{0, BUF_WRITABLE, 0}, {0, 0, BUF_WRITABLE}, {0, 0, BUF_WRITABLE},
                                    {0, BUF_WRITABLE, 0}, {0, BUF_WRITABLE, 0}, {0, 0, BUF_WRITABLE}};
    const int n = EW_THREE(op) ? 3 : 2;
    Py_buffer first; /* the element count of the first buffer is every buffer's */
    if (get_buffer(objs[0], 0, &first, names[op][0]) < 0) return NULL;
    const ptrdiff_t count = first.len / first.itemsize;
    PyBuffer_Release(&first);
    if (check_range(start, stop, count, "element") < 0) return NULL;
    const ptrdiff_t counts[3] = {count, count, count};
    ew_job local, *j = job_storage(&local, sizeof local, prepare);
    if (!j) return NULL;
    *j = (ew_job){.base = {ew_job_run, ew_job_release, 0}, .op = op, .start = start, .stop = stop};
    if (acquire_buffers(&j->b, n, objs, names[op], flags[op], counts) < 0) {
        job_storage_free(j, &local);
        return NULL;
    }
    j->fn = KERNELS[isa]->ew[j->b.view[0].itemsize == 8][op];
    return run_or_wrap(&j->base, prepare);
}

/* sgd_step(isa, theta, grad, buffer or None, start, stop, lr, momentum, keep, flags): elements [start,
 * stop) of theta (and buffer) updated in place (elementwise.h sgd_step). */
typedef struct {
    kernel_job base;
    sgd_fn fn;
    Py_ssize_t start, stop;
    double p[3];
    int flags;
    buffer_set b;
} sgd_job;

static void sgd_job_run(kernel_job *job)
{
    sgd_job *j = (sgd_job *)job;
    j->fn(j->b.view[0].buf, j->b.view[1].buf, j->b.view[2].buf, j->start, j->stop, j->p, j->flags);
}

static void sgd_job_release(kernel_job *job) { release_buffers(&((sgd_job *)job)->b); }

static PyObject *sgd_call(PyObject *args, int prepare)
{
    int isa, flags;
    PyObject *objs[3];
    Py_ssize_t start, stop;
    double p[3];
    if (!PyArg_ParseTuple(args, "iOOOnndddi", &isa, &objs[0], &objs[1], &objs[2], &start, &stop, &p[0], &p[1], &p[2],
                          &flags) ||
        check_isa(isa) < 0)
        return NULL;
    if (flags < 0 || flags > 7) {
        PyErr_Format(PyExc_ValueError, "flags must be in [0, 7], got %d", flags);
        return NULL;
    }
    static const char *const names[3] = {"theta", "grad", "buffer"};
    static const int bflags[3] = {BUF_WRITABLE, 0, BUF_WRITABLE | BUF_OPTIONAL};
    Py_buffer first;
    if (get_buffer(objs[0], 0, &first, names[0]) < 0) return NULL;
    const ptrdiff_t count = first.len / first.itemsize;
    PyBuffer_Release(&first);
    if (check_range(start, stop, count, "element") < 0) return NULL;
    const ptrdiff_t counts[3] = {count, count, count};
    sgd_job local, *j = job_storage(&local, sizeof local, prepare);
    if (!j) return NULL;
    *j = (sgd_job){.base = {sgd_job_run, sgd_job_release, 0}, .start = start, .stop = stop, .p = {p[0], p[1], p[2]},
                   .flags = flags};
    if (acquire_buffers(&j->b, 3, objs, names, bflags, counts) < 0) {
        job_storage_free(j, &local);
        return NULL;
    }
    j->fn = KERNELS[isa]->sgd[j->b.view[0].itemsize == 8];
    return run_or_wrap(&j->base, prepare);
}

static PyObject *sgd_step(PyObject *self, PyObject *args) { return sgd_call(args, 0); }
static PyObject *sgd_step_job(PyObject *self, PyObject *args) { return sgd_call(args, 1); }

/* adam_step(isa, theta, grad, exp_avg, exp_avg_sq, max_exp_avg_sq or None, start, stop, params (9 floats),
 * flags): elements [start, stop) of one Adam / AdamW step in place (elementwise.h adam_step). */
typedef struct {
    kernel_job base;
    adam_fn fn;
    Py_ssize_t start, stop;
    double p[9];
    int flags;
    buffer_set b;
} adam_job;

static void adam_job_run(kernel_job *job)
{
    adam_job *j = (adam_job *)job;
    j->fn(j->b.view[0].buf, j->b.view[1].buf, j->b.view[2].buf, j->b.view[3].buf, j->b.view[4].buf, j->start,
          j->stop, j->p, j->flags);
}

static void adam_job_release(kernel_job *job) { release_buffers(&((adam_job *)job)->b); }

static PyObject *adam_call(PyObject *args, int prepare)
{
    int isa, flags;
    PyObject *objs[5];
    Py_ssize_t start, stop;
    double p[9];
    if (!PyArg_ParseTuple(args, "iOOOOOnn(ddddddddd)i", &isa, &objs[0], &objs[1], &objs[2], &objs[3], &objs[4],
                          &start, &stop, &p[0], &p[1], &p[2], &p[3], &p[4], &p[5], &p[6], &p[7], &p[8], &flags) ||
        check_isa(isa) < 0)
        return NULL;
    if (flags < 0 || flags > 15) {
        PyErr_Format(PyExc_ValueError, "flags must be in [0, 15], got %d", flags);
        return NULL;
    }
    static const char *const names[5] = {"theta", "grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
    static const int bflags[5] = {BUF_WRITABLE, 0, BUF_WRITABLE, BUF_WRITABLE, BUF_WRITABLE | BUF_OPTIONAL};
    Py_buffer first;
    if (get_buffer(objs[0], 0, &first, names[0]) < 0) return NULL;
    const ptrdiff_t count = first.len / first.itemsize;
    PyBuffer_Release(&first);
    if (check_range(start, stop, count, "element") < 0) return NULL;
    const ptrdiff_t counts[5] = {count, count, count, count, count};
    adam_job local, *j = job_storage(&local, sizeof local, prepare);
    if (!j) return NULL;
    *j = (adam_job){.base = {adam_job_run, adam_job_release, 0}, .start = start, .stop = stop, .flags = flags};
    memcpy(j->p, p, sizeof p);
    if (acquire_buffers(&j->b, 5, objs, names, bflags, counts) < 0) {
        job_storage_free(j, &local);
        return NULL;
    }
    j->fn = KERNELS[isa]->adam[j->b.view[0].itemsize == 8];
    return run_or_wrap(&j->base, prepare);
}

static PyObject *adam_step(PyObject *self, PyObject *args) { return adam_call(args, 0); }
static PyObject *adam_step_job(PyObject *self, PyObject *args) { return adam_call(args, 1); }

/* out (G, Cg, Og, K) = w (G, Og, Cg, K) with the two channel axes swapped and every kernel's K taps
 * reversed (the kernel whose forward correlation is w's adjoint). Tiles of AK_TILE x AK_TILE kernels
 * keep both sides' lines in cache (NumPy's strided copy of a 512x512x3x3 weight: 1.75 ms); the common
 * tap counts get a copy with K a constant (unrolled: the loop over a runtime K cost 3x the copy). */
#define AK_TILE 16
#define AK_COPY(T, K)                                                                                  \
    for (ptrdiff_t grp = 0; grp < g; grp++)                                                            \
        for (ptrdiff_t o0 = 0; o0 < og; o0 += AK_TILE)                                                 \
            for (ptrdiff_t c0 = 0; c0 < cg; c0 += AK_TILE)                                             \
                for (ptrdiff_t c = c0; c < c0 + AK_TILE && c < cg; c++)                                \
                    for (ptrdiff_t o = o0; o < o0 + AK_TILE && o < og; o++) {                          \
                        const T *src = (const T *)w + ((grp * og + o) * cg + c) * (K);                 \
                        T *dst = (T *)out + ((grp * cg + c) * og + o) * (K);                           \
                        for (ptrdiff_t t = 0; t < (K); t++) dst[t] = src[(K) - 1 - t];                 \
                    }
/* AK_COPY for float32 3x3 kernels: each kernel's 9 taps reversed as two 4-lane shuffles and one value */
typedef float ak_v4 __attribute__((vector_size(16)));
typedef int32_t ak_i4 __attribute__((vector_size(16)));
static void ak_copy9_f32(const void *w, void *out, ptrdiff_t g, ptrdiff_t og, ptrdiff_t cg)
{
    const ak_i4 rev = {3, 2, 1, 0};
    for (ptrdiff_t grp = 0; grp < g; grp++)
        for (ptrdiff_t o0 = 0; o0 < og; o0 += AK_TILE)
            for (ptrdiff_t c0 = 0; c0 < cg; c0 += AK_TILE)
                for (ptrdiff_t c = c0; c < c0 + AK_TILE && c < cg; c++)
                    for (ptrdiff_t o = o0; o < o0 + AK_TILE && o < og; o++) {
                        const float *src = (const float *)w + ((grp * og + o) * cg + c) * 9;
                        float *dst = (float *)out + ((grp * cg + c) * og + o) * 9;
                        ak_v4 a, b;
                        memcpy(&a, src + 5, sizeof a);
                        memcpy(&b, src + 1, sizeof b);
                        a = __builtin_shuffle(a, rev);
                        b = __builtin_shuffle(b, rev);
                        memcpy(dst, &a, sizeof a);
                        memcpy(dst + 4, &b, sizeof b);
                        dst[8] = src[0];
                    }
}

#define AK_CASES(T)                                                                                    \
    switch (k) {                                                                                       \
    case 1: AK_COPY(T, 1) break;                                                                       \
    case 3: AK_COPY(T, 3) break;                                                                       \
    case 9: if (sizeof(T) == 4) ak_copy9_f32(w, out, g, og, cg); else { AK_COPY(T, 9) } break;         \
    case 25: AK_COPY(T, 25) break;                                                                     \
    case 27: AK_COPY(T, 27) break;                                                                     \
    default: AK_COPY(T, k) break;                                                                      \
    }

static void adjoint_kernel_copy(const void *w, void *out, ptrdiff_t g, ptrdiff_t og, ptrdiff_t cg, ptrdiff_t k,
                                Py_ssize_t itemsize)
{
    if (itemsize == 8) {
        AK_CASES(double)
    } else {
        AK_CASES(float)
    }
}
#undef AK_CASES
#undef AK_COPY

/* adjoint_kernel(w, out, groups, og, cg, taps): see adjoint_kernel_copy */
static PyObject *adjoint_kernel(PyObject *self, PyObject *args)
{
    PyObject *objs[2];
    Py_ssize_t g, og, cg, k;
    if (!PyArg_ParseTuple(args, "OOnnnn", &objs[0], &objs[1], &g, &og, &cg, &k)) return NULL;
    if (g < 1 || og < 0 || cg < 0 || k < 1 || (og && cg && (g > PY_SSIZE_T_MAX / og / cg / k))) {
        PyErr_Format(PyExc_ValueError, "adjoint_kernel: sizes must be groups >= 1, og >= 0, cg >= 0, taps >= 1 "
                     "with a representable product, got %zd, %zd, %zd, %zd", g, og, cg, k);
        return NULL;
    }
    static const char *const names[2] = {"weight", "output"};
    static const int flags[2] = {0, BUF_WRITABLE};
    const ptrdiff_t count = g * og * cg * k, counts[2] = {count, count};
    buffer_set b;
    if (acquire_buffers(&b, 2, objs, names, flags, counts) < 0) return NULL;
    Py_BEGIN_ALLOW_THREADS
    adjoint_kernel_copy(b.view[0].buf, b.view[1].buf, g, og, cg, k, b.view[0].itemsize);
    Py_END_ALLOW_THREADS
    release_buffers(&b);
    Py_RETURN_NONE;
}

/* The k-th smallest (0-based) of n >= 1 keys (reordered): the bit patterns of non-negative doubles (no
 * NaN), whose order as integers is theirs as numbers. Radix selection a byte at a time from the top: count
 * the candidates' digits, keep the bucket holding the k-th (compacted without branches), go on with its
 * rank there: at most 8 passes over shrinking candidates whatever the values (a quickselect's
 * data-dependent branches, their history cold in a network, cost 1.2-1.6% of ResNet-18 at batch 1 more;
 * and it has quadratic inputs). */
static uint64_t select_kth(uint64_t *keys, ptrdiff_t n, ptrdiff_t k)
{
    for (int shift = 56; shift >= 0 && n > 1; shift -= 8) {
        ptrdiff_t count[256] = {0};
        for (ptrdiff_t i = 0; i < n; i++) count[keys[i] >> shift & 255]++;
        unsigned b = 0;
        while (k >= count[b]) k -= count[b++];
        ptrdiff_t m = 0;
        for (ptrdiff_t i = 0; i < n; i++) {
            const uint64_t key = keys[i];
            keys[m] = key;
            m += (key >> shift & 255) == b;
        }
        n = m;
    }
    return keys[0]; /* one candidate left, or equal ones */
}

/* value_range(isa, a, sample, quantile) -> (peak, any NaN, bulk): a's max |v| (inf with an inf; meaningless
 * with a NaN) in one pass (GIL released), and the bulk scale of npconv.kernels.numerics: of the first `sample`
 * values of a[::step]
 * (step = max(1, len // sample)), the k-th smallest magnitude, k = int(quantile * (count - 1)); bulk
 * is 0 when a holds a NaN or an inf, or is all zeros (the caller needs no scale then). */
static PyObject *value_range(PyObject *self, PyObject *args)
{
    int isa;
    PyObject *obj;
    Py_ssize_t sample;
    double quantile;
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "iOnd", &isa, &obj, &sample, &quantile) || check_isa(isa) < 0) return NULL;
    if (sample < 1 || !(quantile >= 0.0 && quantile <= 1.0)) {
        PyErr_Format(PyExc_ValueError, "value_range: sample must be >= 1 and quantile in [0, 1], got %zd and %g",
                     sample, quantile);
        return NULL;
    }
    if (get_buffer(obj, 0, &view, "a") < 0) return NULL;
    const ptrdiff_t n = view.len / view.itemsize;
    const int f64 = view.itemsize == 8;
    double r[2] = {0.0, 0.0}, bulk = 0.0;
    uint64_t *mags = NULL;
    int scaled = 0; /* finite, not all zeros: the bulk scale is wanted */
    Py_BEGIN_ALLOW_THREADS
    if (n) KERNELS[isa]->vr[f64](view.buf, 0, n, r);
    scaled = n && !r[1] && isfinite(r[0]) && r[0] > 0.0;
    if (scaled) {
        const ptrdiff_t step = n / sample > 1 ? n / sample : 1;
        ptrdiff_t count = (n + step - 1) / step;
        count = count < sample ? count : sample;
        mags = malloc((size_t)count * sizeof(*mags));
        if (mags) {
            for (ptrdiff_t i = 0; i < count; i++) {
                const double v = f64 ? fabs(((const double *)view.buf)[i * step])
                                     : fabs((double)((const float *)view.buf)[i * step]);
                memcpy(&mags[i], &v, sizeof v);
            }
            const uint64_t key = select_kth(mags, count, (ptrdiff_t)(quantile * (double)(count - 1)));
            memcpy(&bulk, &key, sizeof bulk);
        }
    }
    Py_END_ALLOW_THREADS
    const int failed = scaled && !mags;
    free(mags);
    PyBuffer_Release(&view);
    if (failed) return PyErr_NoMemory();
    return Py_BuildValue("dOd", r[0], r[1] ? Py_True : Py_False, bulk);
}

/* value_range_part(isa, a, out, start, stop): out[0:2] = (max |v|, 1 if any NaN else 0) of elements
 * [start, stop) of a flat float32/float64 buffer, out of a's element type (the peak is one of a's values):
 * value_range's pass over one part of a buffer split across threads (npconv.kernels.numerics). */
typedef struct {
    kernel_job base;
    vr_fn fn;
    Py_ssize_t start, stop;
    buffer_set b;
} vr_job;

static void vr_job_run(kernel_job *job)
{
    vr_job *j = (vr_job *)job;
    double r[2] = {0.0, 0.0};
    if (j->stop > j->start) j->fn(j->b.view[0].buf, j->start, j->stop, r);
    if (j->b.view[1].itemsize == 8) {
        double *out = j->b.view[1].buf;
        out[0] = r[0], out[1] = r[1];
    } else {
        float *out = j->b.view[1].buf;
        out[0] = (float)r[0], out[1] = (float)r[1];
    }
}

static void vr_job_release(kernel_job *job) { release_buffers(&((vr_job *)job)->b); }

static PyObject *run_value_range_part(PyObject *args, int prepare)
{
    int isa;
    PyObject *objs[2];
    Py_ssize_t start, stop;
    if (!PyArg_ParseTuple(args, "iOOnn", &isa, &objs[0], &objs[1], &start, &stop) || check_isa(isa) < 0)
        return NULL;
    Py_buffer first; /* the element count of the first buffer is the range's limit */
    if (get_buffer(objs[0], 0, &first, "a") < 0) return NULL;
    const ptrdiff_t count = first.len / first.itemsize;
    PyBuffer_Release(&first);
    if (check_range(start, stop, count, "element") < 0) return NULL;
    static const char *const names[2] = {"a", "out"};
    static const int flags[2] = {0, BUF_WRITABLE};
    const ptrdiff_t counts[2] = {count, 2};
    vr_job local, *j = job_storage(&local, sizeof local, prepare);
    if (!j) return NULL;
    *j = (vr_job){.base = {vr_job_run, vr_job_release, 0}, .start = start, .stop = stop};
    if (acquire_buffers(&j->b, 2, objs, names, flags, counts) < 0) {
        job_storage_free(j, &local);
        return NULL;
    }
    j->fn = KERNELS[isa]->vr[j->b.view[0].itemsize == 8];
    return run_or_wrap(&j->base, prepare);
}

static PyObject *value_range_part(PyObject *self, PyObject *args) { return run_value_range_part(args, 0); }
static PyObject *value_range_part_job(PyObject *self, PyObject *args) { return run_value_range_part(args, 1); }

/* linear_rows(isa, x, w, y, rows, k, m, start, stop): y (rows, m) columns [start, stop) of x (rows, k) @
 * w (m, k)^T, float32/float64 C-contiguous buffers of one element type (linear.h). */
typedef struct {
    kernel_job base;
    lr_fn fn;
    Py_ssize_t rows, k, m, start, stop;
    buffer_set b;
} lr_job;

static void lr_job_run(kernel_job *job)
{
    lr_job *j = (lr_job *)job;
    if (j->stop > j->start) j->fn(j->b.view[0].buf, j->b.view[1].buf, j->b.view[2].buf, j->rows, j->k, j->m, j->start, j->stop);
}

static void lr_job_release(kernel_job *job) { release_buffers(&((lr_job *)job)->b); }

static PyObject *run_linear_rows(PyObject *args, int prepare)
{
    int isa;
    PyObject *objs[3];
    Py_ssize_t rows, k, m, start, stop, xn, wn, yn;
    if (!PyArg_ParseTuple(args, "iOOOnnnnn", &isa, &objs[0], &objs[1], &objs[2], &rows, &k, &m, &start, &stop) ||
        check_isa(isa) < 0)
        return NULL;
    if (rows < 0 || k < 0 || m < 0 || __builtin_mul_overflow(rows, k, &xn) || __builtin_mul_overflow(m, k, &wn) ||
        __builtin_mul_overflow(rows, m, &yn)) {
        PyErr_Format(PyExc_ValueError, "linear_rows: rows, k and m must be non-negative sizes, got %zd, %zd, %zd",
                     rows, k, m);
        return NULL;
    }
    if (check_range(start, stop, m, "column") < 0) return NULL;
    static const char *const names[3] = {"x", "w", "y"};
    static const int flags[3] = {0, 0, BUF_WRITABLE};
    const ptrdiff_t counts[3] = {xn, wn, yn};
    lr_job local, *j = job_storage(&local, sizeof local, prepare);
    if (!j) return NULL;
    *j = (lr_job){.base = {lr_job_run, lr_job_release, 0}, .rows = rows, .k = k, .m = m, .start = start, .stop = stop};
    if (acquire_buffers(&j->b, 3, objs, names, flags, counts) < 0) {
        job_storage_free(j, &local);
        return NULL;
    }
    j->fn = KERNELS[isa]->lr[j->b.view[0].itemsize == 8];
    return run_or_wrap(&j->base, prepare);
}

static PyObject *linear_rows(PyObject *self, PyObject *args) { return run_linear_rows(args, 0); }
static PyObject *linear_rows_job(PyObject *self, PyObject *args) { return run_linear_rows(args, 1); }

/* row_means(isa, x, y, rows, count, start, stop): y[r] = mean of x[r * count, (r + 1) * count) for rows
 * [start, stop) of y (rows), float32/float64 C-contiguous buffers of one element type (pool.h). */
typedef struct {
    kernel_job base;
    rm_fn fn;
    Py_ssize_t count, start, stop;
    buffer_set b;
} rm_job;

static void rm_job_run(kernel_job *job)
{
    rm_job *j = (rm_job *)job;
    if (j->stop > j->start) j->fn(j->b.view[0].buf, j->b.view[1].buf, j->count, j->start, j->stop);
}

static void rm_job_release(kernel_job *job) { release_buffers(&((rm_job *)job)->b); }

static PyObject *run_row_means(PyObject *args, int prepare)
{
    int isa;
    PyObject *objs[2];
    Py_ssize_t count, start, stop, rows, xn;
    if (!PyArg_ParseTuple(args, "iOOnnnn", &isa, &objs[0], &objs[1], &rows, &count, &start, &stop) ||
        check_isa(isa) < 0)
        return NULL;
    if (rows < 0 || count < 1 || __builtin_mul_overflow(rows, count, &xn)) {
        PyErr_Format(PyExc_ValueError, "row_means: rows must be a non-negative and count a positive size, got "
                     "%zd, %zd", rows, count);
        return NULL;
    }
    if (check_range(start, stop, rows, "row") < 0) return NULL;
    static const char *const names[2] = {"x", "y"};
    static const int flags[2] = {0, BUF_WRITABLE};
    const ptrdiff_t counts[2] = {xn, rows};
    rm_job local, *j = job_storage(&local, sizeof local, prepare);
    if (!j) return NULL;
    *j = (rm_job){.base = {rm_job_run, rm_job_release, 0}, .count = count, .start = start, .stop = stop};
    if (acquire_buffers(&j->b, 2, objs, names, flags, counts) < 0) {
        job_storage_free(j, &local);
        return NULL;
    }
    j->fn = KERNELS[isa]->rm[j->b.view[0].itemsize == 8];
    return run_or_wrap(&j->base, prepare);
}

static PyObject *row_means(PyObject *self, PyObject *args) { return run_row_means(args, 0); }
static PyObject *row_means_job(PyObject *self, PyObject *args) { return run_row_means(args, 1); }

/* The fused inverted residual block (block.h): geometry (N, Cin, Cexp, Cout, H, W, OH, OW, stride, bands,
 * tile, expand, residual, act0, act1, act2, XH, XW) and the clamp bounds (lo0, hi0, lo1, hi1, lo2, hi2). */
static int parse_ir_geom(PyObject *seq, PyObject *bounds, ir_geom *g)
{
    ptrdiff_t v[18];
    if (geometry_ints(seq, 18, "N, Cin, Cexp, Cout, H, W, OH, OW, stride, bands, tile, expand, residual, act0, act1, "
                      "act2, XH, XW", "111111111110000011", DW_MAX_VALUE, v) < 0)
        return -1;
    *g = (ir_geom){v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], (int)v[11], (int)v[12],
                   {(int)v[13], (int)v[14], (int)v[15]}, {0, 0, 0}, {0, 0, 0}, v[16], v[17]};
    if (!PyArg_ParseTuple(bounds, "dddddd", &g->lo[0], &g->hi[0], &g->lo[1], &g->hi[1], &g->lo[2], &g->hi[2]))
        return -1;
    for (int i = 0; i < 3; i++)
        if (check_act(g->act[i], g->lo[i], g->hi[i]) < 0) return -1;
    const int stem = g->expand == 2;
    if ((g->stride != 1 && g->stride != 2) || g->expand > 2 || g->residual > 1 || (!g->expand && g->cexp != g->cin) ||
        g->oh != (g->h - 1) / g->stride + 1 || g->ow != (g->w - 1) / g->stride + 1 || g->bands > g->oh ||
        g->h != (stem ? (g->xh - 1) / 2 + 1 : g->xh) || g->w != (stem ? (g->xw - 1) / 2 + 1 : g->xw)) {
        PyErr_SetString(PyExc_ValueError, "geometry: not an inverted residual block (3x3 depthwise, padding 1, "
                        "stride 1 or 2, Cexp == Cin without an expansion; bands <= OH; XH, XW the input's H, W, or "
                        "with a stem (expand 2: 3x3, stride 2, padding 1) H, W its output's)");
        return -1;
    }
    ptrdiff_t e;
    if (__builtin_mul_overflow(g->cexp, ir_in_rows(g) * ir_pitch(g), &e) || g->h * g->w > DW_MAX_PLANE ||
        g->xh * g->xw > DW_MAX_PLANE || ir_scratch(g) > 4 * DW_MAX_PLANE || g->cexp * g->cin > ((ptrdiff_t)1 << 30) ||
        g->cexp * g->cout > ((ptrdiff_t)1 << 30)) {
        PyErr_SetString(PyExc_ValueError, "geometry: channels, plane or scratch too large for the compiled kernel");
        return -1;
    }
    return 0;
}

static PyObject *ir_scratch_size(PyObject *self, PyObject *args)
{
    PyObject *geom, *bounds;
    ir_geom g;
    if (!PyArg_ParseTuple(args, "OO", &geom, &bounds) || parse_ir_geom(geom, bounds, &g) < 0) return NULL;
    return PyLong_FromSsize_t(ir_scratch(&g));
}

typedef struct {
    kernel_job base;
    ir_fn fn;
    ir_geom g;
    Py_ssize_t start, stop;
    buffer_set b;
} ir_job;

static void ir_job_run(kernel_job *job)
{
    ir_job *j = (ir_job *)job;
    void *v[10];
    for (int i = 0; i < 10; i++) v[i] = j->b.view[i].buf;
    job->failed = j->fn(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], &j->g, j->start, j->stop) < 0;
}

static void ir_job_release(kernel_job *job) { release_buffers(&((ir_job *)job)->b); }

/* Whether the variant's float32 kernel takes the block (an empty item range only checks it). */
static int ir_takes(int isa, const ir_geom *g)
{
    return KERNELS[isa]->ir != NULL &&
           KERNELS[isa]->ir(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, g, 0, 0) == 0;
}

/* ir_supported(isa, geometry, bounds) -> whether the variant's kernel takes the block (float32) */
static PyObject *ir_supported(PyObject *self, PyObject *args)
{
    int isa;
    PyObject *geom, *bounds;
    ir_geom g;
    if (!PyArg_ParseTuple(args, "iOO", &isa, &geom, &bounds) || check_isa(isa) < 0 ||
        parse_ir_geom(geom, bounds, &g) < 0)
        return NULL;
    return PyBool_FromLong(ir_takes(isa, &g));
}

/* (isa, x, w1|None, b1|None, wd, bd|None, w2, b2|None, res|None, y, scratch, geometry, bounds, start, stop) */
static PyObject *ir_call(PyObject *args, int prepare)
{
    int isa;
    PyObject *objs[10], *geom, *bounds;
    Py_ssize_t start, stop;
    ir_geom g;
    if (!PyArg_ParseTuple(args, "iOOOOOOOOOOOOnn", &isa, &objs[0], &objs[1], &objs[2], &objs[3], &objs[4], &objs[5],
                          &objs[6], &objs[7], &objs[8], &objs[9], &geom, &bounds, &start, &stop) ||
        check_isa(isa) < 0 || parse_ir_geom(geom, bounds, &g) < 0 || check_range(start, stop, g.n * g.bands, "item") < 0)
        return NULL;
    if ((objs[1] == Py_None) == (g.expand != 0) || (objs[7] == Py_None) == (g.residual != 0)) {
        PyErr_SetString(PyExc_ValueError, "the expansion weight and the residual must be given exactly when the "
                        "geometry has them");
        return NULL;
    }
    static const char *const names[10] = {"input", "expand_weight", "expand_bias", "depthwise_weight",
                                          "depthwise_bias", "project_weight", "project_bias", "residual", "output",
                                          "scratch"};
    static const int flags[10] = {0, BUF_OPTIONAL, BUF_OPTIONAL, 0, BUF_OPTIONAL, 0, BUF_OPTIONAL, BUF_OPTIONAL,
                                  BUF_WRITABLE, BUF_WRITABLE | BUF_AT_LEAST};
    const ptrdiff_t counts[10] = {g.n * g.cin * g.xh * g.xw, g.cexp * g.cin * (g.expand == 2 ? 9 : 1), g.cexp,
                                  g.cexp * 9, g.cexp, g.cout * g.cexp, g.cout, g.n * g.cout * g.oh * g.ow,
                                  g.n * g.cout * g.oh * g.ow, ir_scratch(&g)};
    ir_job local, *j = job_storage(&local, sizeof local, prepare);
    if (!j) return NULL;
    *j = (ir_job){.base = {ir_job_run, ir_job_release, 0}, .g = g, .start = start, .stop = stop};
    j->base.range = &j->start;
    if (acquire_buffers(&j->b, 10, objs, names, flags, counts) < 0) {
        job_storage_free(j, &local);
        return NULL;
    }
    if (j->b.view[0].itemsize != 4 || !ir_takes(isa, &g)) {
        release_buffers(&j->b);
        job_storage_free(j, &local);
        PyErr_SetString(PyExc_ValueError, "the fused block kernel takes float32 on a vector variant whose row "
                        "kernels fit the output width (ir_supported)");
        return NULL;
    }
    j->fn = KERNELS[isa]->ir;
    return run_or_wrap(&j->base, prepare);
}

static PyObject *ir_forward(PyObject *self, PyObject *args) { return ir_call(args, 0); }
static PyObject *ir_forward_job(PyObject *self, PyObject *args) { return ir_call(args, 1); }

/* spectral_mix(isa, a, b, out, scratch, (N, G, I, J, F, sj, si, conj), f0, f1): complex values [f0, f1)
 * of every row of out (N, G, J, F) = sum_i a (N, G, I, F) * op(b (G, rows of F)) (spectral.h), each
 * buffer a float32/float64 view of interleaved complex values (2 F reals per row); scratch at least
 * spectral_mix_scratch(geometry, itemsize) elements. */
typedef struct {
    kernel_job base;
    sm_fn fn;
    sm_geom g;
    Py_ssize_t start, stop;
    buffer_set b;
} sm_job;

static void sm_job_run(kernel_job *job)
{
    sm_job *j = (sm_job *)job;
    j->fn(j->b.view[0].buf, j->b.view[1].buf, j->b.view[2].buf, j->b.view[3].buf, &j->g, j->start, j->stop);
}

static void sm_job_release(kernel_job *job) { release_buffers(&((sm_job *)job)->b); }

static int parse_sm_geom(PyObject *geom, sm_geom *out)
{
    ptrdiff_t v[8];
    if (geometry_ints(geom, 8, "N, G, I, J, F, sj, si, conj", "11111110", DW_MAX_VALUE, v) < 0) return -1;
    if (v[7] > 1) {
        PyErr_Format(PyExc_ValueError, "geometry value 7 out of range: %zd", v[7]);
        return -1;
    }
    const sm_geom g = {v[0], v[1], v[2], v[3], v[4], v[5], v[6], (int)v[7]};
    /* b's largest row index, (I - 1) si + (J - 1) sj, must stay inside a group's I J rows */
    ptrdiff_t rows, b_rows, bound;
    if (__builtin_mul_overflow(g.n * g.ng, g.ni > g.nj ? g.ni : g.nj, &rows) ||
        __builtin_mul_overflow(g.ng * g.ni, g.nj, &b_rows) ||
        __builtin_mul_overflow(rows > b_rows ? rows : b_rows, 2 * g.nf, &bound) ||
        __builtin_mul_overflow(g.n + SM_JB_MAX, g.ni * SM_FV_MAX * 16, &bound) ||
        (g.ni - 1) * g.si + (g.nj - 1) * g.sj >= g.ni * g.nj) {
        PyErr_SetString(PyExc_ValueError, "geometry: b's strides reach outside a group's rows, or sizes overflow");
        return -1;
    }
    *out = g;
    return 0;
}

static PyObject *sm_scratch_size(PyObject *self, PyObject *args)
{
    PyObject *geom;
    Py_ssize_t itemsize;
    sm_geom g;
    if (!PyArg_ParseTuple(args, "On", &geom, &itemsize) || parse_sm_geom(geom, &g) < 0) return NULL;
    if (itemsize != 4 && itemsize != 8) {
        PyErr_Format(PyExc_ValueError, "itemsize must be 4 or 8, got %zd", itemsize);
        return NULL;
    }
    return PyLong_FromSsize_t(sm_scratch(&g, itemsize));
}

static PyObject *sm_call(PyObject *args, int prepare)
{
    int isa;
    PyObject *objs[4], *geom;
    Py_ssize_t start, stop;
    sm_geom g;
    if (!PyArg_ParseTuple(args, "iOOOOOnn", &isa, &objs[0], &objs[1], &objs[2], &objs[3], &geom, &start, &stop) ||
        check_isa(isa) < 0 || parse_sm_geom(geom, &g) < 0 || check_range(start, stop, g.nf, "frequency") < 0)
        return NULL;
    static const char *const names[4] = {"a", "b", "out", "scratch"};
    static const int flags[4] = {0, 0, BUF_WRITABLE, BUF_WRITABLE | BUF_AT_LEAST};
    Py_buffer first; /* the scratch count depends on the element size */
    if (get_buffer(objs[0], 0, &first, names[0]) < 0) return NULL;
    const Py_ssize_t itemsize = first.itemsize;
    PyBuffer_Release(&first);
    const ptrdiff_t counts[4] = {g.n * g.ng * g.ni * 2 * g.nf, g.ng * g.ni * g.nj * 2 * g.nf,
                                 g.n * g.ng * g.nj * 2 * g.nf, sm_scratch(&g, itemsize)};
    sm_job local, *j = job_storage(&local, sizeof local, prepare);
    if (!j) return NULL;
    *j = (sm_job){.base = {sm_job_run, sm_job_release, 0}, .g = g, .start = start, .stop = stop};
    if (acquire_buffers(&j->b, 4, objs, names, flags, counts) < 0) {
        job_storage_free(j, &local);
        return NULL;
    }
    j->fn = KERNELS[isa]->sm[j->b.view[0].itemsize == 8];
    return run_or_wrap(&j->base, prepare);
}

static PyObject *spectral_mix(PyObject *self, PyObject *args) { return sm_call(args, 0); }
static PyObject *spectral_mix_job(PyObject *self, PyObject *args) { return sm_call(args, 1); }

/* each elementwise op's binding and its _job twin */
#define EW_BINDINGS(name, op)                                                                          \
    static PyObject *name(PyObject *self, PyObject *args) { return run_elementwise(args, op, 0); }     \
    static PyObject *name##_job(PyObject *self, PyObject *args) { return run_elementwise(args, op, 1); }
EW_BINDINGS(relu_fwd, 0)
EW_BINDINGS(relu_bwd, 1)
EW_BINDINGS(add_arrays, 2)
EW_BINDINGS(silu_fwd, 3)
EW_BINDINGS(sigmoid_fwd, 4)
EW_BINDINGS(silu_bwd, 5)

/* (N, C, S) -> g; the element count N * C * S fits ptrdiff_t. */
static int parse_bn_geom(PyObject *seq, bn_geom *g)
{
    ptrdiff_t v[3], total;
    if (geometry_ints(seq, 3, "N, C, S", "000", PTRDIFF_MAX, v) < 0) return -1;
    if (__builtin_mul_overflow(v[0], v[1], &total) || __builtin_mul_overflow(total, v[2], &total)) {
        PyErr_SetString(PyExc_ValueError, "geometry: N * C * S overflows");
        return -1;
    }
    *g = (bn_geom){v[0], v[1], v[2]};
    return 0;
}

/* (isa, x, y, weight, bias, stats, geometry, training, eps, start, stop) */
typedef struct {
    kernel_job base;
    int backward, training;
    double eps;
    bn_geom g;
    bn_fwd_fn forward;
    bn_bwd_fn grad;
    Py_ssize_t start, stop;
    buffer_set b;
} bn_job;

static void bn_job_run(kernel_job *job)
{
    bn_job *j = (bn_job *)job;
    void *const *v = (void *const[]){j->b.view[0].buf, j->b.view[1].buf, j->b.view[2].buf, j->b.view[3].buf,
                                     j->b.view[4].buf, j->b.view[5].buf};
    if (j->backward)
        j->grad(v[0], v[1], v[2], v[3], v[4], v[5], &j->g, j->training, j->start, j->stop);
    else
        j->forward(v[0], v[1], v[2], v[3], v[4], &j->g, j->training, j->eps, j->start, j->stop);
}

static void bn_job_release(kernel_job *job) { release_buffers(&((bn_job *)job)->b); }

/* forward (isa, x, y, weight, bias, stats, geometry, training, eps, start, stop);
 * backward (isa, gy, x, gx, weight, stats, sums, geometry, training, start, stop) */
static PyObject *bn_call(PyObject *args, int backward, int prepare)
{
    int isa, training;
    double eps = 0.0;
    PyObject *objs[6] = {NULL}, *geom;
    Py_ssize_t start, stop;
    bn_geom g;
    if (!(backward ? PyArg_ParseTuple(args, "iOOOOOOOpnn", &isa, &objs[0], &objs[1], &objs[2], &objs[3], &objs[4],
                                      &objs[5], &geom, &training, &start, &stop)
                   : PyArg_ParseTuple(args, "iOOOOOOpdnn", &isa, &objs[0], &objs[1], &objs[2], &objs[3], &objs[4],
                                      &geom, &training, &eps, &start, &stop)))
        return NULL;
    if (check_isa(isa) < 0 || parse_bn_geom(geom, &g) < 0 || check_range(start, stop, g.c, "channel") < 0)
        return NULL;
    static const char *const names[2][6] = {{"input", "output", "weight", "bias", "stats", ""},
                                            {"grad_output", "input", "grad_input", "weight", "stats", "sums"}};
    const int flags[2][6] = {{0, BUF_WRITABLE, BUF_OPTIONAL, BUF_OPTIONAL, training ? BUF_WRITABLE : 0, 0},
                             {0, 0, BUF_WRITABLE | BUF_OPTIONAL, BUF_OPTIONAL, 0, BUF_WRITABLE | BUF_OPTIONAL}};
    const ptrdiff_t all = g.n * g.c * g.s;
    const ptrdiff_t counts[2][6] = {{all, all, g.c, g.c, 3 * g.c, 0}, {all, all, all, g.c, 3 * g.c, 2 * g.c}};
    bn_job local, *j = job_storage(&local, sizeof local, prepare);
    if (!j) return NULL;
    *j = (bn_job){.base = {bn_job_run, bn_job_release, 0}, .backward = backward, .training = training, .eps = eps,
                  .g = g, .start = start, .stop = stop};
    if (acquire_buffers(&j->b, backward ? 6 : 5, objs, names[backward], flags[backward], counts[backward]) < 0) {
        job_storage_free(j, &local);
        return NULL;
    }
    const bn_kernels *k = &KERNELS[isa]->bn[j->b.view[0].itemsize == 8];
    j->forward = k->forward;
    j->grad = k->backward;
    return run_or_wrap(&j->base, prepare);
}

static PyObject *bn_forward(PyObject *self, PyObject *args) { return bn_call(args, 0, 0); }
static PyObject *bn_backward(PyObject *self, PyObject *args) { return bn_call(args, 1, 0); }
static PyObject *bn_forward_job(PyObject *self, PyObject *args) { return bn_call(args, 0, 1); }
static PyObject *bn_backward_job(PyObject *self, PyObject *args) { return bn_call(args, 1, 1); }

/* (N, C, H, W, O, OH, OW, PH, PW, G, CAP, CBLOCK, DH, DW, XH, XW, X0H, X0W, YH, YW, Y0H, Y0W) -> g; every
 * buffer size it implies fits ptrdiff_t, the phase's elements lie inside the full planes. */
static int parse_wg_geom(PyObject *seq, wg_geom *g)
{
    ptrdiff_t v[22];
    if (geometry_ints(seq, 22, "N, C, H, W, O, OH, OW, PH, PW, G, CAP, CBLOCK, DH, DW, XH, XW, X0H, X0W, YH, YW, Y0H, Y0W",
                      "1111111001101111001100", DW_MAX_VALUE, v) < 0)
        return -1;
    *g = (wg_geom){v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], v[13], v[14],
                   v[15], v[16], v[17], v[18], v[19], v[20], v[21], 0, 0, 0, 0, 0, 0, 0, 0};
    g->th = (g->oh + 3) / 4;
    g->tw = (g->ow + 3) / 4;
    if (g->c % g->groups || g->o % g->groups) {
        PyErr_SetString(PyExc_ValueError, "geometry: groups must divide the input and output channels");
        return -1;
    }
    if (g->x0h + g->dh * (g->h - 1) >= g->xh || g->x0w + g->dw * (g->w - 1) >= g->xw ||
        g->y0h + g->dh * (g->oh - 1) >= g->yh || g->y0w + g->dw * (g->ow - 1) >= g->yw ||
        g->xh * g->xw > DW_MAX_PLANE || g->yh * g->yw > DW_MAX_PLANE) {
        PyErr_SetString(PyExc_ValueError, "geometry: the phase's planes must lie inside the full planes");
        return -1;
    }
    g->xplane = g->xh * g->xw, g->xrow = g->dh * g->xw, g->xoff = g->x0h * g->xw + g->x0w;
    g->yplane = g->yh * g->yw, g->yrow = g->dh * g->yw, g->yoff = g->y0h * g->yw + g->y0w;
    ptrdiff_t a, b;
    wg_layout L;
    wg_scratch_layout(g, &L); /* each term below 2**24 * 2**24 * 36 */
    if (g->h * g->w > DW_MAX_PLANE || g->oh * g->ow > DW_MAX_PLANE || __builtin_mul_overflow(g->n, g->c, &a) ||
        __builtin_mul_overflow(a, g->xplane, &a) || __builtin_mul_overflow(g->n, g->o, &b) ||
        __builtin_mul_overflow(b, g->yplane, &b) || __builtin_mul_overflow(g->n, g->th * g->tw, &a) ||
        L.total > ((ptrdiff_t)1 << 40)) {
        PyErr_SetString(PyExc_ValueError, "geometry: planes or scratch too large for the compiled kernel");
        return -1;
    }
    return 0;
}

static PyObject *wg_scratch_size(PyObject *self, PyObject *args)
{
    PyObject *geom;
    wg_geom g;
    wg_layout L;
    if (!PyArg_ParseTuple(args, "O", &geom) || parse_wg_geom(geom, &g) < 0) return NULL;
    wg_scratch_layout(&g, &L);
    return PyLong_FromSsize_t(L.total);
}

/* (isa, w, u, start, stop[, seen]): kernels [start, stop) of w (P, 3, 3) -> U (36, P), the weight
 * transform. With seen (the values U was made from, w's shape; the caller keeps U = transform(seen)):
 * a range whose bytes equal seen's is left as it is, else transformed and copied into seen. */
typedef struct {
    kernel_job base;
    wg_weight_fn fn;
    ptrdiff_t count;
    Py_ssize_t start, stop;
    Py_buffer w, u, seen;
} wgw_job;

static void wgw_job_run(kernel_job *job)
{
    wgw_job *j = (wgw_job *)job;
    const size_t first = (size_t)j->start * 9 * (size_t)j->w.itemsize, bytes = (size_t)(j->stop - j->start) * 9 *
                                                                             (size_t)j->w.itemsize;
    const int kept = j->seen.obj != NULL; /* acquired (a buffer of no elements may have no address) */
    if (kept && !memcmp((char *)j->w.buf + first, (char *)j->seen.buf + first, bytes)) return;
    j->fn(j->w.buf, j->u.buf, j->count, j->start, j->stop);
    if (kept) memcpy((char *)j->seen.buf + first, (char *)j->w.buf + first, bytes);
}

static void wgw_job_release(kernel_job *job)
{
    wgw_job *j = (wgw_job *)job;
    if (j->seen.obj) PyBuffer_Release(&j->seen);
    PyBuffer_Release(&j->u);
    PyBuffer_Release(&j->w);
}

static PyObject *wg2d_weight_call(PyObject *args, int prepare)
{
    int isa;
    PyObject *w_o, *u_o, *seen_o = Py_None;
    Py_ssize_t start, stop;
    if (!PyArg_ParseTuple(args, "iOOnn|O", &isa, &w_o, &u_o, &start, &stop, &seen_o) || check_isa(isa) < 0)
        return NULL;
    wgw_job local, *j = job_storage(&local, sizeof local, prepare);
    if (!j) return NULL;
    *j = (wgw_job){.base = {wgw_job_run, wgw_job_release, 0}, .start = start, .stop = stop};
    if (get_buffer(w_o, 0, &j->w, "weight") < 0) goto free_job;
    if (get_buffer(u_o, 1, &j->u, "transformed weight") < 0) goto release_w;
    if (seen_o != Py_None && get_buffer(seen_o, 1, &j->seen, "seen weight") < 0) goto release_u;
    j->count = j->w.len / j->w.itemsize / 9;
    if (j->u.itemsize != j->w.itemsize || (j->seen.obj && j->seen.itemsize != j->w.itemsize)) {
        PyErr_SetString(PyExc_TypeError, "all buffers must have the same element type");
        goto release_seen;
    }
    if (check_count(&j->w, 9 * j->count, 0, "weight") < 0 ||
        check_count(&j->u, 36 * j->count, 0, "transformed weight") < 0 ||
        (j->seen.obj && check_count(&j->seen, 9 * j->count, 0, "seen weight") < 0) ||
        check_range(start, stop, j->count, "kernel") < 0)
        goto release_seen;
    j->fn = KERNELS[isa]->wg_weight[j->w.itemsize == 8];
    return run_or_wrap(&j->base, prepare);
release_seen:
    if (j->seen.obj) PyBuffer_Release(&j->seen);
release_u:
    PyBuffer_Release(&j->u);
release_w:
    PyBuffer_Release(&j->w);
free_job:
    job_storage_free(j, &local);
    return NULL;
}

static PyObject *wg2d_weight(PyObject *self, PyObject *args) { return wg2d_weight_call(args, 0); }
static PyObject *wg2d_weight_job(PyObject *self, PyObject *args) { return wg2d_weight_call(args, 1); }

/* A staged Winograd call's shared scratch v (wg_stage): writable, of the call's element type, at least
 * `count` elements (the V region of its layout). */
static int get_stage_scratch(PyObject *v_o, Py_ssize_t itemsize, ptrdiff_t count, Py_buffer *v)
{
    if (get_buffer(v_o, 1, v, "shared scratch") < 0) return -1;
    if (v->itemsize != itemsize || check_count(v, count, 1, "shared scratch") < 0) {
        if (v->itemsize != itemsize) PyErr_SetString(PyExc_TypeError, "all buffers must have the same element type");
        PyBuffer_Release(v);
        return -1;
    }
    return 0;
}

/* (isa, routines, x, u, bias|None, y, scratch, geom, start, stop, act, lo, hi[, stage, v, c0, c1,
 * residual]): tiles [start, stop) of y; after the bias, act 1 applies ReLU, 2 hardtanh(lo, hi). stage 1 / 2
 * (wg_stage, at most CAP tiles): only the input transform of channels [c0, c1) into v's V region, or only
 * the rest from it (v: a scratch of this geometry). residual (None: none, laid out as y): y = act(y +
 * residual), the addition before the activation (winograd_forward). */
typedef struct {
    kernel_job base;
    int act, have_b, have_r;
    double lo, hi;
    Py_ssize_t start, stop;
    wg_geom g;
    gemm_fns fns;
    wg_fwd_fn fn;
    wg_stage st;
    Py_buffer x, u, b, y, s, v, r;
} wg_job;

static void wg_job_run(kernel_job *job)
{
    wg_job *j = (wg_job *)job;
    const wg_stage *st = j->st.stage ? &j->st : NULL;
    for (Py_ssize_t at = j->start; at < j->stop; at += j->g.cap) /* the kernel runs at most CAP tiles */
        j->fn(&j->fns, j->x.buf, j->u.buf, j->have_b ? j->b.buf : NULL, j->y.buf, j->s.buf, &j->g, at,
              j->stop - at > j->g.cap ? at + j->g.cap : j->stop, j->act, j->lo, j->hi, st, j->have_r ? j->r.buf : NULL);
}

static void wg_job_release(kernel_job *job)
{
    wg_job *j = (wg_job *)job;
    if (j->have_r) PyBuffer_Release(&j->r);
    if (j->st.stage) PyBuffer_Release(&j->v);
    PyBuffer_Release(&j->s);
    PyBuffer_Release(&j->y);
    if (j->have_b) PyBuffer_Release(&j->b);
    PyBuffer_Release(&j->u);
    PyBuffer_Release(&j->x);
}

static PyObject *wg2d_call(PyObject *args, int prepare)
{
    int isa, act, stage = 0;
    PyObject *fns_o, *x_o, *u_o, *b_o, *y_o, *s_o, *geom, *v_o = Py_None, *r_o = Py_None;
    Py_ssize_t start, stop, c0 = 0, c1 = 0;
    double lo, hi;
    wg_geom g;
    gemm_fns fns;
    if (!PyArg_ParseTuple(args, "iOOOOOOOnnidd|iOnnO", &isa, &fns_o, &x_o, &u_o, &b_o, &y_o, &s_o, &geom, &start,
                          &stop, &act, &lo, &hi, &stage, &v_o, &c0, &c1, &r_o))
        return NULL;
    if (check_isa(isa) < 0 || parse_gemm_fns(fns_o, &fns) < 0 || parse_wg_geom(geom, &g) < 0 ||
        check_act(act, lo, hi) < 0)
        return NULL;
    if (check_range(start, stop, g.n * g.th * g.tw, "tile") < 0) return NULL;
    if (stage < 0 || stage > 2 || (stage && (v_o == Py_None || stop - start > g.cap)) ||
        (stage == 1 && (c0 < 0 || c0 > c1 || c1 > g.c))) {
        PyErr_Format(PyExc_ValueError, "winograd stage must be 0, or 1 / 2 with a shared scratch over at most %zd "
                     "tiles (got %zd) and 0 <= c0 <= c1 <= %zd for stage 1; got stage %d, c0 %zd, c1 %zd",
                     (Py_ssize_t)g.cap, stop - start, (Py_ssize_t)g.c, stage, c0, c1);
        return NULL;
    }
    const int have_b = b_o != Py_None, have_r = r_o != Py_None;
    if (have_r && (g.dh != 1 || g.dw != 1 || g.yrow != g.ow)) {
        PyErr_SetString(PyExc_ValueError, "winograd: a residual only with an undilated geometry whose output rows "
                                          "are whole (dh = dw = 1, row pitch = output width)");
        return NULL;
    }
    wg_job local, *j = job_storage(&local, sizeof local, prepare);
    if (!j) return NULL;
    *j = (wg_job){.base = {wg_job_run, wg_job_release, 0}, .act = act, .have_b = have_b, .lo = lo, .hi = hi,
                  .start = start, .stop = stop, .g = g, .fns = fns, .st = {stage, c0, c1, NULL}, .have_r = have_r};
    if (!stage) j->base.range = &j->start; /* a staged call's jobs all run the same tiles */
    if (get_buffer(x_o, 0, &j->x, "input") < 0) goto free_job;
    if (get_buffer(u_o, 0, &j->u, "transformed weight") < 0) goto release_x;
    if (have_b && get_buffer(b_o, 0, &j->b, "bias") < 0) goto release_u;
    if (get_buffer(y_o, 1, &j->y, "output") < 0) goto release_b;
    if (get_buffer(s_o, 1, &j->s, "scratch") < 0) goto release_y;
    if (have_r && get_buffer(r_o, 0, &j->r, "residual") < 0) goto release_s;
    const Py_ssize_t size = j->x.itemsize;
    if (j->u.itemsize != size || j->y.itemsize != size || j->s.itemsize != size ||
        (have_b && j->b.itemsize != size) || (have_r && j->r.itemsize != size)) {
        PyErr_SetString(PyExc_TypeError, "all buffers must have the same element type");
        goto release_r;
    }
    wg_layout L;
    wg_scratch_layout(&g, &L);
    if (check_count(&j->x, g.n * g.c * g.xplane, 0, "input") < 0 ||
        check_count(&j->u, 36 * g.o * (g.c / g.groups), 0, "transformed weight") < 0 ||
        check_count(&j->y, g.n * g.o * g.yplane, 0, "output") < 0 ||
        check_count(&j->s, L.total, 1, "scratch") < 0 || (have_b && check_count(&j->b, g.o, 0, "bias") < 0) ||
        (have_r && check_count(&j->r, g.n * g.o * g.yplane, 0, "residual") < 0))
        goto release_r;
    if (stage) {
        if (get_stage_scratch(v_o, size, L.m, &j->v) < 0) goto release_r;
        j->st.v = j->v.buf;
    }
    j->fn = KERNELS[isa]->wg[size == 8];
    return run_or_wrap(&j->base, prepare);
release_r:
    if (have_r) PyBuffer_Release(&j->r);
release_s:
    PyBuffer_Release(&j->s);
release_y:
    PyBuffer_Release(&j->y);
release_b:
    if (have_b) PyBuffer_Release(&j->b);
release_u:
    PyBuffer_Release(&j->u);
release_x:
    PyBuffer_Release(&j->x);
free_job:
    job_storage_free(j, &local);
    return NULL;
}

/* (isa, routines, x, u, bias|None, y, scratch, geom, depth, z0, z1, t0, t1, act, lo, hi): output depth
 * slices [z0, z1) x tiles [t0, t1) of one image of a 3-d (KD, 3, 3) convolution (winograd3d_forward).
 * x (C, D, H, W), y (O, OD, OH, OW), u (36, O, KD * C); geom: one slice's 2-d geometry (N 1, one group, no
 * dilation, its C the V rows of the scratch: at least (z1 - z0 + KD - 1) * C; its H, W, OH, OW, PH, PW the
 * slice's); depth (D, OD, KD, PD, C). */
typedef struct {
    kernel_job base;
    int act, have_b;
    double lo, hi;
    Py_ssize_t z0, z1, t0, t1;
    ptrdiff_t dp[3], cin;
    wg_geom g;
    gemm_fns fns;
    wg3_fwd_fn fn;
    Py_buffer x, u, b, y, s;
} wg3_job;

static void wg3_job_run(kernel_job *job)
{
    wg3_job *j = (wg3_job *)job;
    j->fn(&j->fns, j->x.buf, j->u.buf, j->have_b ? j->b.buf : NULL, j->y.buf, j->s.buf, &j->g, j->dp, j->cin, j->z0,
          j->z1, j->t0, j->t1, j->act, j->lo, j->hi);
}

static void wg3_job_release(kernel_job *job)
{
    wg3_job *j = (wg3_job *)job;
    PyBuffer_Release(&j->s);
    PyBuffer_Release(&j->y);
    if (j->have_b) PyBuffer_Release(&j->b);
    PyBuffer_Release(&j->u);
    PyBuffer_Release(&j->x);
}

/* A 3-d call's geometry, depth and item (winograd3d_forward / _grad_weight) checked; g's yplane set to y's
 * channel step. *xn, *yn, *un: the elements x, y (gy) and U hold. */
static int wg3_parse(PyObject *geom, PyObject *depth, Py_ssize_t z0, Py_ssize_t z1, Py_ssize_t t0, Py_ssize_t t1,
                     wg_geom *g, ptrdiff_t *dv, ptrdiff_t *xn, ptrdiff_t *yn, ptrdiff_t *un)
{
    if (parse_wg_geom(geom, g) < 0 || geometry_ints(depth, 5, "D, OD, KD, PD, C", "11101", DW_MAX_VALUE, dv) < 0)
        return -1;
    const ptrdiff_t d = dv[0], od = dv[1], kd = dv[2], cin = dv[4];
    if (g->n != 1 || g->groups != 1 || g->dh != 1 || g->dw != 1 || g->xh != g->h || g->xw != g->w ||
        g->yh != g->oh || g->yw != g->ow || g->x0h || g->x0w || g->y0h || g->y0w ||
        __builtin_mul_overflow(cin * d, g->xplane, xn) || __builtin_mul_overflow(g->o * od, g->oh * g->ow, yn) ||
        __builtin_mul_overflow(36 * g->o, kd * cin, un)) {
        PyErr_SetString(PyExc_ValueError, "winograd3d: the geometry must be one whole undilated slice of one group "
                                          "(N 1, G 1, DH = DW = 1, full planes), its arrays within ptrdiff_t");
        return -1;
    }
    if (check_range(z0, z1, od, "output slice") < 0 || check_range(t0, t1, g->th * g->tw, "tile") < 0) return -1;
    if ((z1 - z0 + kd - 1) * cin > g->c || t1 - t0 > g->cap) {
        PyErr_Format(PyExc_ValueError, "winograd3d: %zd output slices of %zd tiles need %zd V rows and at most CAP "
                     "tiles; the geometry holds %zd rows, CAP %zd", z1 - z0, t1 - t0, (z1 - z0 + kd - 1) * cin,
                     (Py_ssize_t)g->c, (Py_ssize_t)g->cap);
        return -1;
    }
    g->yplane = od * g->oh * g->ow; /* y's channel step: its planes are (OD, OH, OW) */
    return 0;
}

static PyObject *wg3d_call(PyObject *args, int prepare)
{
    int isa, act;
    PyObject *fns_o, *x_o, *u_o, *b_o, *y_o, *s_o, *geom, *depth;
    Py_ssize_t z0, z1, t0, t1;
    double lo, hi;
    wg_geom g;
    gemm_fns fns;
    ptrdiff_t dv[5], xn, yn, un;
    if (!PyArg_ParseTuple(args, "iOOOOOOOOnnnnidd", &isa, &fns_o, &x_o, &u_o, &b_o, &y_o, &s_o, &geom, &depth, &z0,
                          &z1, &t0, &t1, &act, &lo, &hi))
        return NULL;
    if (check_isa(isa) < 0 || parse_gemm_fns(fns_o, &fns) < 0 || check_act(act, lo, hi) < 0 ||
        wg3_parse(geom, depth, z0, z1, t0, t1, &g, dv, &xn, &yn, &un) < 0)
        return NULL;
    const ptrdiff_t d = dv[0], kd = dv[2], cin = dv[4];
    const int have_b = b_o != Py_None;
    wg3_job local, *j = job_storage(&local, sizeof local, prepare);
    if (!j) return NULL;
    *j = (wg3_job){.base = {wg3_job_run, wg3_job_release, 0}, .act = act, .have_b = have_b, .lo = lo, .hi = hi,
                   .z0 = z0, .z1 = z1, .t0 = t0, .t1 = t1, .dp = {d, kd, dv[3]}, .cin = cin, .g = g, .fns = fns};
    if (get_buffer(x_o, 0, &j->x, "input") < 0) goto free_job;
    if (get_buffer(u_o, 0, &j->u, "transformed weight") < 0) goto release_x;
    if (have_b && get_buffer(b_o, 0, &j->b, "bias") < 0) goto release_u;
    if (get_buffer(y_o, 1, &j->y, "output") < 0) goto release_b;
    if (get_buffer(s_o, 1, &j->s, "scratch") < 0) goto release_y;
    const Py_ssize_t size = j->x.itemsize;
    if (j->u.itemsize != size || j->y.itemsize != size || j->s.itemsize != size ||
        (have_b && j->b.itemsize != size)) {
        PyErr_SetString(PyExc_TypeError, "all buffers must have the same element type");
        goto release_s;
    }
    wg_layout L;
    wg_scratch_layout(&g, &L);
    if (check_count(&j->x, xn, 0, "input") < 0 || check_count(&j->u, un, 0, "transformed weight") < 0 ||
        check_count(&j->y, yn, 0, "output") < 0 || check_count(&j->s, L.total, 1, "scratch") < 0 ||
        (have_b && check_count(&j->b, g.o, 0, "bias") < 0))
        goto release_s;
    j->fn = KERNELS[isa]->wg3[size == 8];
    return run_or_wrap(&j->base, prepare);
release_s:
    PyBuffer_Release(&j->s);
release_y:
    PyBuffer_Release(&j->y);
release_b:
    if (have_b) PyBuffer_Release(&j->b);
release_u:
    PyBuffer_Release(&j->u);
release_x:
    PyBuffer_Release(&j->x);
free_job:
    job_storage_free(j, &local);
    return NULL;
}

static PyObject *wg3d_forward(PyObject *self, PyObject *args) { return wg3d_call(args, 0); }
static PyObject *wg3d_forward_job(PyObject *self, PyObject *args) { return wg3d_call(args, 1); }

/* (isa, routines, x, gy, acc, scratch, geom, depth, z0, z1, t0, t1, first): the products of output slices
 * [z0, z1) x tiles [t0, t1) of one image of a 3-d (KD, 3, 3) convolution added (first: the first stored)
 * into acc (36, O, KD * C) float64 (winograd3d_grad_weight); x, gy (O, OD, OH, OW), geom, depth as
 * winograd3d_forward's; scratch: winograd2d_grad_weight_scratch(geom) elements. */
typedef struct {
    kernel_job base;
    int first;
    Py_ssize_t z0, z1, t0, t1;
    ptrdiff_t dp[3], cin;
    wg_geom g;
    gemm_fns fns;
    wg3_gw_fn fn;
    Py_buffer x, gy, acc, s;
} wg3gw_job;

static void wg3gw_job_run(kernel_job *job)
{
    wg3gw_job *j = (wg3gw_job *)job;
    j->fn(&j->fns, j->x.buf, j->gy.buf, j->acc.buf, j->s.buf, &j->g, j->dp, j->cin, j->z0, j->z1, j->t0, j->t1,
          j->first);
}

static void wg3gw_job_release(kernel_job *job)
{
    wg3gw_job *j = (wg3gw_job *)job;
    PyBuffer_Release(&j->s);
    PyBuffer_Release(&j->acc);
    PyBuffer_Release(&j->gy);
    PyBuffer_Release(&j->x);
}

static PyObject *wg3d_gw_call(PyObject *args, int prepare)
{
    int isa, first;
    PyObject *fns_o, *x_o, *gy_o, *acc_o, *s_o, *geom, *depth;
    Py_ssize_t z0, z1, t0, t1;
    wg_geom g;
    gemm_fns fns;
    ptrdiff_t dv[5], xn, yn, un;
    if (!PyArg_ParseTuple(args, "iOOOOOOOnnnnp", &isa, &fns_o, &x_o, &gy_o, &acc_o, &s_o, &geom, &depth, &z0, &z1,
                          &t0, &t1, &first))
        return NULL;
    if (check_isa(isa) < 0 || parse_gemm_fns(fns_o, &fns) < 0 ||
        wg3_parse(geom, depth, z0, z1, t0, t1, &g, dv, &xn, &yn, &un) < 0)
        return NULL;
    wg3gw_job local, *j = job_storage(&local, sizeof local, prepare);
    if (!j) return NULL;
    *j = (wg3gw_job){.base = {wg3gw_job_run, wg3gw_job_release, 0}, .first = first, .z0 = z0, .z1 = z1, .t0 = t0,
                     .t1 = t1, .dp = {dv[0], dv[2], dv[3]}, .cin = dv[4], .g = g, .fns = fns};
    if (get_buffer(x_o, 0, &j->x, "input") < 0) goto free_job;
    if (get_buffer(gy_o, 0, &j->gy, "output gradient") < 0) goto release_x;
    if (get_buffer(acc_o, 1, &j->acc, "accumulator") < 0) goto release_gy;
    if (get_buffer(s_o, 1, &j->s, "scratch") < 0) goto release_acc;
    const Py_ssize_t size = j->x.itemsize;
    if (j->gy.itemsize != size || j->s.itemsize != size || j->acc.itemsize != 8) {
        PyErr_SetString(PyExc_TypeError, "x, gy and scratch must have one element type, the accumulator float64");
        goto release_s;
    }
    wg_gw_layout L;
    wg_grad_weight_layout(&g, &L);
    if (check_count(&j->x, xn, 0, "input") < 0 || check_count(&j->gy, yn, 0, "output gradient") < 0 ||
        check_count(&j->acc, un, 0, "accumulator") < 0 || check_count(&j->s, L.total, 1, "scratch") < 0)
        goto release_s;
    j->fn = KERNELS[isa]->wg3_gw[size == 8];
    return run_or_wrap(&j->base, prepare);
release_s:
    PyBuffer_Release(&j->s);
release_acc:
    PyBuffer_Release(&j->acc);
release_gy:
    PyBuffer_Release(&j->gy);
release_x:
    PyBuffer_Release(&j->x);
free_job:
    job_storage_free(j, &local);
    return NULL;
}

static PyObject *wg3d_gw(PyObject *self, PyObject *args) { return wg3d_gw_call(args, 0); }
static PyObject *wg3d_gw_job(PyObject *self, PyObject *args) { return wg3d_gw_call(args, 1); }

static PyObject *wg2d_forward(PyObject *self, PyObject *args) { return wg2d_call(args, 0); }
static PyObject *wg2d_forward_job(PyObject *self, PyObject *args) { return wg2d_call(args, 1); }

/* (geometry) -> scratch elements of one winograd2d_grad_weight call. */
static PyObject *wg_gw_scratch_size(PyObject *self, PyObject *args)
{
    PyObject *geom;
    wg_geom g;
    wg_gw_layout L;
    if (!PyArg_ParseTuple(args, "O", &geom) || parse_wg_geom(geom, &g) < 0) return NULL;
    wg_grad_weight_layout(&g, &L);
    return PyLong_FromSsize_t(L.total);
}

/* winograd2d_grad_weight_finish(isa, acc, gw, accumulators, start, stop): gw[p] = G^T M_p G for channel pairs
 * [start, stop), M the sum of the first `accumulators` (36 x pairs) blocks of acc (float64, or gw's element
 * type: winograd2d_grad_weight's first = 2), gw (pairs, 3, 3) float32/float64 (winograd.h winograd_gw_finish). */
typedef struct {
    kernel_job base;
    wg_finish_fn fn;
    Py_ssize_t accumulators, pairs, start, stop;
    Py_buffer acc, gw;
} wg_finish_job;

static void wg_finish_job_run(kernel_job *job)
{
    wg_finish_job *j = (wg_finish_job *)job;
    j->fn(j->acc.buf, j->acc.itemsize != 8, j->accumulators, j->pairs, j->gw.buf, j->start, j->stop);
}

static void wg_finish_job_release(kernel_job *job)
{
    wg_finish_job *j = (wg_finish_job *)job;
    PyBuffer_Release(&j->gw);
    PyBuffer_Release(&j->acc);
}

static PyObject *wg2d_finish_call(PyObject *args, int prepare)
{
    int isa;
    PyObject *acc_o, *gw_o;
    Py_ssize_t accumulators, start, stop;
    if (!PyArg_ParseTuple(args, "iOOnnn", &isa, &acc_o, &gw_o, &accumulators, &start, &stop) || check_isa(isa) < 0)
        return NULL;
    if (accumulators < 1) {
        PyErr_Format(PyExc_ValueError, "accumulators must be at least 1, got %zd", accumulators);
        return NULL;
    }
    wg_finish_job local, *j = job_storage(&local, sizeof local, prepare);
    if (!j) return NULL;
    *j = (wg_finish_job){.base = {wg_finish_job_run, wg_finish_job_release, 0}, .accumulators = accumulators,
                         .start = start, .stop = stop};
    if (get_buffer(acc_o, 0, &j->acc, "accumulator") < 0) goto free_job;
    if (get_buffer(gw_o, 1, &j->gw, "grad_weight") < 0) goto release_acc;
    if (j->acc.itemsize != 8 && j->acc.itemsize != j->gw.itemsize) {
        PyErr_SetString(PyExc_TypeError, "accumulator must hold float64 or grad_weight's element type");
        goto release_gw;
    }
    const ptrdiff_t gw_count = j->gw.len / j->gw.itemsize;
    if (gw_count % 9) {
        PyErr_Format(PyExc_ValueError, "grad_weight must hold 9 values per channel pair, got %zd", gw_count);
        goto release_gw;
    }
    j->pairs = gw_count / 9;
    if (check_range(start, stop, j->pairs, "channel pair") < 0 ||
        check_count(&j->acc, accumulators * 36 * j->pairs, 1, "accumulator") < 0)
        goto release_gw;
    j->fn = KERNELS[isa]->wg_finish[j->gw.itemsize == 8];
    return run_or_wrap(&j->base, prepare);
release_gw:
    PyBuffer_Release(&j->gw);
release_acc:
    PyBuffer_Release(&j->acc);
free_job:
    job_storage_free(j, &local);
    return NULL;
}

static PyObject *wg2d_finish(PyObject *self, PyObject *args) { return wg2d_finish_call(args, 0); }
static PyObject *wg2d_finish_job(PyObject *self, PyObject *args) { return wg2d_finish_call(args, 1); }

/* (isa, routines, x, gy, acc, scratch, geom, start, stop, o0, o1, first[, stage, v, c0, c1]): tiles
 * [start, stop) of the grad_weight, the products of output channels [o0, o1) added into acc (36 x O x C/G,
 * float64), or stored there when first is 1, or written in the input's element type into acc of that type
 * when first is 2 (a dilated geometry: one output phase, as the forward's). stage 1 / 2 as
 * winograd2d_forward's: only the input transform of channels [c0, c1) into v's V region, or only the rest
 * from it (v: a scratch of this geometry). */
typedef struct {
    kernel_job base;
    int first;
    Py_ssize_t start, stop, o0, o1;
    wg_geom g;
    gemm_fns fns;
    wg_gw_fn fn;
    wg_stage st;
    Py_buffer x, gy, acc, s, v;
} wg_gw_job;

static void wg_gw_job_run(kernel_job *job)
{
    wg_gw_job *j = (wg_gw_job *)job;
    j->fn(&j->fns, j->x.buf, j->gy.buf, (double *)j->acc.buf, j->s.buf, &j->g, j->start, j->stop, j->o0, j->o1,
          j->first, j->st.stage ? &j->st : NULL);
}

static void wg_gw_job_release(kernel_job *job)
{
    wg_gw_job *j = (wg_gw_job *)job;
    if (j->st.stage) PyBuffer_Release(&j->v);
    PyBuffer_Release(&j->s);
    PyBuffer_Release(&j->acc);
    PyBuffer_Release(&j->gy);
    PyBuffer_Release(&j->x);
}

static PyObject *wg2d_gw_call(PyObject *args, int prepare)
{
    int isa, stage = 0;
    PyObject *fns_o, *x_o, *gy_o, *acc_o, *s_o, *geom, *v_o = Py_None;
    Py_ssize_t start, stop, o0, o1, c0 = 0, c1 = 0;
    int first;
    wg_geom g;
    gemm_fns fns;
    if (!PyArg_ParseTuple(args, "iOOOOOOnnnni|iOnn", &isa, &fns_o, &x_o, &gy_o, &acc_o, &s_o, &geom, &start, &stop,
                          &o0, &o1, &first, &stage, &v_o, &c0, &c1))
        return NULL;
    if (first < 0 || first > 2) {
        PyErr_Format(PyExc_ValueError, "first must be 0, 1 or 2, got %d", first);
        return NULL;
    }
    if (check_isa(isa) < 0 || parse_gemm_fns(fns_o, &fns) < 0 || parse_wg_geom(geom, &g) < 0) return NULL;
    if (check_range(start, stop, g.n * g.th * g.tw, "tile") < 0) return NULL;
    if (o0 < 0 || o1 > g.o || o0 >= o1) {
        PyErr_Format(PyExc_ValueError, "output channel range [%zd, %zd) empty or outside [0, %zd)", o0, o1, g.o);
        return NULL;
    }
    if (stage < 0 || stage > 2 || (stage && v_o == Py_None) || (stage == 1 && (c0 < 0 || c0 > c1 || c1 > g.c))) {
        PyErr_Format(PyExc_ValueError, "winograd grad_weight stage must be 0, or 1 / 2 with a shared scratch and "
                     "0 <= c0 <= c1 <= %zd for stage 1; got stage %d, c0 %zd, c1 %zd", (Py_ssize_t)g.c, stage, c0, c1);
        return NULL;
    }
    wg_gw_job local, *j = job_storage(&local, sizeof local, prepare);
    if (!j) return NULL;
    *j = (wg_gw_job){.base = {wg_gw_job_run, wg_gw_job_release, 0}, .first = first, .start = start, .stop = stop,
                     .o0 = o0, .o1 = o1, .g = g, .fns = fns, .st = {stage, c0, c1, NULL}};
    if (get_buffer(x_o, 0, &j->x, "input") < 0) goto free_job;
    if (get_buffer(gy_o, 0, &j->gy, "grad_output") < 0) goto release_x;
    if (get_buffer(acc_o, 1, &j->acc, "accumulator") < 0) goto release_gy;
    if (get_buffer(s_o, 1, &j->s, "scratch") < 0) goto release_acc;
    const Py_ssize_t size = j->x.itemsize;
    if (j->gy.itemsize != size || j->s.itemsize != size) {
        PyErr_SetString(PyExc_TypeError, "input, grad_output and scratch must have the same element type");
        goto release_s;
    }
    if (j->acc.itemsize != (first == 2 ? size : 8)) {
        PyErr_SetString(PyExc_TypeError, first == 2 ? "accumulator must hold the input's element type (first = 2)"
                                                    : "accumulator must hold float64");
        goto release_s;
    }
    wg_gw_layout L;
    wg_grad_weight_layout(&g, &L);
    if (check_count(&j->x, g.n * g.c * g.xplane, 0, "input") < 0 ||
        check_count(&j->gy, g.n * g.o * g.yplane, 0, "grad_output") < 0 ||
        check_count(&j->acc, 36 * g.o * (g.c / g.groups), 0, "accumulator") < 0 ||
        check_count(&j->s, L.total, 1, "scratch") < 0)
        goto release_s;
    if (stage) {
        if (get_stage_scratch(v_o, size, L.gy, &j->v) < 0) goto release_s;
        j->st.v = j->v.buf;
    }
    j->fn = KERNELS[isa]->wg_gw[size == 8];
    return run_or_wrap(&j->base, prepare);
release_s:
    PyBuffer_Release(&j->s);
release_acc:
    PyBuffer_Release(&j->acc);
release_gy:
    PyBuffer_Release(&j->gy);
release_x:
    PyBuffer_Release(&j->x);
free_job:
    job_storage_free(j, &local);
    return NULL;
}

static PyObject *wg2d_gw(PyObject *self, PyObject *args) { return wg2d_gw_call(args, 0); }
static PyObject *wg2d_gw_job(PyObject *self, PyObject *args) { return wg2d_gw_call(args, 1); }

/* A job running other jobs in order (a worker's several work items). */
typedef struct {
    kernel_job base;
    PyObject *items; /* a tuple of job capsules */
    kernel_job **jobs;
    Py_ssize_t count;
} chain_job;

static void chain_job_run(kernel_job *job)
{
    chain_job *j = (chain_job *)job;
    job->failed = 0;
    for (Py_ssize_t i = 0; i < j->count; i++) {
        job_execute(j->jobs[i]);
        job->failed |= j->jobs[i]->failed;
    }
}

static void chain_job_release(kernel_job *job)
{
    chain_job *j = (chain_job *)job;
    PyMem_RawFree(j->jobs);
    Py_DECREF(j->items);
}

/* job_chain(jobs) -> job running them in order */
static PyObject *job_chain(PyObject *self, PyObject *seq)
{
    PyObject *items = PySequence_Tuple(seq);
    if (!items) return NULL;
    const Py_ssize_t count = PyTuple_GET_SIZE(items);
    chain_job *j = PyMem_RawMalloc(sizeof *j);
    kernel_job **jobs = PyMem_RawMalloc((size_t)(count ? count : 1) * sizeof *jobs);
    if (!j || !jobs) {
        PyMem_RawFree(j);
        PyMem_RawFree(jobs);
        Py_DECREF(items);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < count; i++)
        if (!(jobs[i] = get_job(PyTuple_GET_ITEM(items, i)))) {
            PyMem_RawFree(j);
            PyMem_RawFree(jobs);
            Py_DECREF(items);
            return NULL;
        }
    *j = (chain_job){.base = {chain_job_run, chain_job_release, 0}, .items = items, .jobs = jobs, .count = count};
    return run_or_wrap(&j->base, 1);
}

static PyObject *mp2d_forward(PyObject *self, PyObject *args) { return run_max_pool(args, 0, 0); }
static PyObject *mp2d_backward(PyObject *self, PyObject *args) { return run_max_pool(args, 1, 0); }
static PyObject *mp2d_forward_job(PyObject *self, PyObject *args) { return run_max_pool(args, 0, 1); }
static PyObject *mp2d_backward_job(PyObject *self, PyObject *args) { return run_max_pool(args, 1, 1); }

/* (isa, routines, trans_a, trans_b, alpha, a, b, beta, c): c = alpha * op(a) @ op(b) + beta * c
 * through the kernels' matrix product (npconv's gemm or the BLAS, as routines' own flag says), for
 * 2-D C-contiguous float32/float64 arrays of one type (tests the product alone). */
static PyObject *gemm(PyObject *self, PyObject *args)
{
    PyObject *fns_o, *a_o, *b_o, *c_o;
    int isa, ta, tb;
    double alpha, beta;
    gemm_fns fns;
    if (!PyArg_ParseTuple(args, "iOppdOOdO", &isa, &fns_o, &ta, &tb, &alpha, &a_o, &b_o, &beta, &c_o) ||
        check_isa(isa) < 0 || parse_gemm_fns(fns_o, &fns) < 0)
        return NULL;
    Py_buffer a, b, c;
    int ok = 0;
    if (get_buffer(a_o, 0, &a, "a") < 0) return NULL;
    if (get_buffer(b_o, 0, &b, "b") < 0) goto release_a;
    if (get_buffer(c_o, 1, &c, "c") < 0) goto release_b;
    if (a.ndim != 2 || b.ndim != 2 || c.ndim != 2 || a.itemsize != c.itemsize || b.itemsize != c.itemsize) {
        PyErr_SetString(PyExc_ValueError, "a, b and c must be 2-D arrays of one element type");
        goto release_c;
    }
    const ptrdiff_t m = c.shape[0], n = c.shape[1], k = ta ? a.shape[0] : a.shape[1];
    if ((ta ? a.shape[1] : a.shape[0]) != m || (tb ? b.shape[1] : b.shape[0]) != k || (tb ? b.shape[0] : b.shape[1]) != n) {
        PyErr_SetString(PyExc_ValueError, "shapes of op(a), op(b) and c do not match");
        goto release_c;
    }
    if (a.shape[0] > GEMM_MAX_DIM || a.shape[1] > GEMM_MAX_DIM || b.shape[0] > GEMM_MAX_DIM ||
        b.shape[1] > GEMM_MAX_DIM || m > GEMM_MAX_DIM || n > GEMM_MAX_DIM) {
        PyErr_SetString(PyExc_ValueError, "matrix dimensions must fit a 32-bit int");
        goto release_c;
    }
    void *pack = PyMem_RawMalloc((size_t)GM_SCRATCH * (size_t)c.itemsize);
    if (!pack) {
        PyErr_NoMemory();
        goto release_c;
    }
    mm_fn fn = KERNELS[isa]->mm[c.itemsize == 8];
    Py_BEGIN_ALLOW_THREADS
    fn(&fns, pack, ta, tb, m, n, k, alpha, a.buf, a.shape[1], b.buf, b.shape[1], beta, c.buf, c.shape[1], NULL, 0, 0.0, 0.0);
    Py_END_ALLOW_THREADS
    PyMem_RawFree(pack);
    ok = 1;
release_c:
    PyBuffer_Release(&c);
release_b:
    PyBuffer_Release(&b);
release_a:
    PyBuffer_Release(&a);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

/* ---- GEMM convolution (im2col.h) ---------------------------------------------------------- */

#define GC_GEOM_LEN 27
/* Every geometry value and every gemm dimension fits a Fortran int; window reads stay far inside
 * ptrdiff_t ((out - 1) * s, (k - 1) * d and the padding below 2**48). */
#define GC_MAX_REACH ((ptrdiff_t)1 << 48)

static int gc_mul(ptrdiff_t a, ptrdiff_t b, ptrdiff_t *r) { return __builtin_mul_overflow(a, b, r); }

/* geometry: (N, C, O, G, D, H, W, OD, OH, OW, KD, KH, KW, SD, SH, SW, DD, DH, DW, PD, PH, PW, band,
 * images, chunk, shift); spatial triples with leading 1s for 1-d and 2-d; PD/PH/PW the low zero
 * padding; shift 0, or 1 + the row-shift axis (0 or 1). */
static int parse_gc_geom(PyObject *seq, gc_geom *g)
{
    ptrdiff_t v[GC_GEOM_LEN];
    if (geometry_ints(seq, GC_GEOM_LEN, "N, C, O, G, D, H, W, OD, OH, OW, KD, KH, KW, SD, SH, SW, DD, DH, DW, PD, "
                      "PH, PW, band, images, chunk, shift, implicit", "111111111111111111100011100", GEMM_MAX_DIM, v) < 0)
        return -1;
    if (v[26] > 3) { /* implicit: 0 no, 1 the packed implicit GEMM, 2 the forward's channels on the lanes, 3 the
                      * direct lanes forward (1-d/2-d, any stride) */
        PyErr_Format(PyExc_ValueError, "geometry value 26 out of range: %zd", v[26]);
        return -1;
    }
    memset(g, 0, sizeof *g);
    g->n = v[0], g->c = v[1], g->o = v[2], g->groups = v[3];
    for (int a = 0; a < 3; a++) {
        g->in[a] = v[4 + a], g->out[a] = v[7 + a], g->k[a] = v[10 + a];
        g->s[a] = v[13 + a], g->d[a] = v[16 + a], g->p[a] = v[19 + a];
    }
    g->band = v[22], g->images = v[23], g->chunk = v[24], g->shift = v[25], g->implicit = v[26];
    if (g->c % g->groups || g->o % g->groups) {
        PyErr_SetString(PyExc_ValueError, "geometry: channels not divisible by groups");
        return -1;
    }
    g->cg = g->c / g->groups, g->og = g->o / g->groups;  /* gc_derive sets the rest below */
    ptrdiff_t t0, t1, t2;
    int bad = 0;
    for (int a = 0; a < 3; a++)
        bad |= (g->out[a] - 1) * g->s[a] > GC_MAX_REACH || (g->k[a] - 1) * g->d[a] > GC_MAX_REACH ||
               g->p[a] > GC_MAX_REACH;
    bad |= gc_mul(g->in[0], g->in[1], &t0) || gc_mul(t0, g->in[2], &g->plane);
    bad |= gc_mul(g->out[0], g->out[1], &t0) || gc_mul(t0, g->out[2], &g->len);
    bad |= gc_mul(g->k[0], g->k[1], &t0) || gc_mul(t0, g->k[2], &g->taps) || gc_mul(g->cg, g->taps, &g->ck);
    /* the operands' element counts (checked against the buffers) and the scratch size */
    bad |= gc_mul(g->n * 1, g->c, &t0) || gc_mul(t0, g->plane, &t1);
    bad |= gc_mul(g->n, g->o, &t0) || gc_mul(t0, g->len, &t1) || gc_mul(g->o, g->ck, &t2);
    bad |= gc_mul(g->ck + g->og, g->images, &t0) || gc_mul(t0, g->len, &t1);
    bad |= gc_mul(g->chunk, g->taps, &t0) || gc_mul(t0, g->band, &t1) || gc_mul(g->ck, g->band, &t2);
    bad |= g->len > GEMM_MAX_DIM || g->ck > GEMM_MAX_DIM || g->images * g->len > GEMM_MAX_DIM ||
           g->chunk * g->taps > GEMM_MAX_DIM;
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "geometry: sizes too large for the compiled GEMM kernel");
        return -1;
    }
    /* row shift along axis A: stride 1 there, the axes before it trivial, one image per item */
    const ptrdiff_t A = g->shift - 1;
    if (g->shift > 2 || (g->shift && (g->s[A] != 1 || g->images > 1 || (A == 1 && (g->out[0] != 1 || g->k[0] != 1))))) {
        PyErr_SetString(PyExc_ValueError, "geometry: the row shift needs stride 1 along its axis, trivial axes "
                                          "before it and one image per item");
        return -1;
    }
    if ((g->shift ? g->band > g->out[A] : g->band > g->len) || g->images > g->n ||
        g->chunk > (g->implicit == 3 ? g->og : g->cg)) { /* the direct forward's chunk: parts of og */
        PyErr_SetString(PyExc_ValueError, "geometry: band, images or chunk beyond the call's sizes");
        return -1;
    }
    gc_derive(g);
    /* implicit GEMM: stride 1, bands of output lines (whole planes where the padded extent has several), one
     * image per item */
    if (g->implicit == 3 && (g->in[0] != 1 || g->k[0] != 1 || g->s[2] > 2 || g->shift || g->images > 1 ||
                             g->band > g->out[1])) {
        PyErr_SetString(PyExc_ValueError, "geometry: the direct lanes forward needs 1-d or 2-d, stride 1 or 2 along "
                                          "the last axis, one image per item and bands of output rows");
        return -1;
    }
    if (g->implicit && g->implicit != 3 && (g->s[0] != 1 || g->s[1] != 1 || g->s[2] != 1 || g->shift || g->images > 1 ||
                        g->band > g->out[0] * g->out[1] || (g->ext[0] > 1 && g->band % g->out[1]))) {
        PyErr_SetString(PyExc_ValueError, "geometry: the implicit GEMM needs stride 1, one image per item and bands "
                                          "of output lines (whole planes in 3-d)");
        return -1;
    }
    if (g->implicit) { /* the slab (Cg x srows x ext2) and the padded grid's positions */
        ptrdiff_t t3, t4;
        if (gc_mul(g->ext[0], g->ext[1], &t3) || gc_mul(t3, g->ext[2], &t4) || t4 > GEMM_MAX_DIM ||
            gc_mul(g->srows, g->ext[2], &t3) || gc_mul(t3, g->cg, &t4) || gc_mul(g->og, GM_NC, &t3) ||
            gc_mul(g->og + 16, g->nqmax, &t3)) {
            PyErr_SetString(PyExc_ValueError, "geometry: sizes too large for the compiled GEMM kernel");
            return -1;
        }
    }
    if (g->shift) { /* the slab's columns: Cg*K/ka x (band + halo) * R */
        ptrdiff_t t3;
        if (g->halo > GEMM_MAX_DIM || gc_mul(g->band + g->halo, g->rowlen, &t3) || t3 > GEMM_MAX_DIM ||
            gc_mul(t3, g->ckr, &t3)) {
            PyErr_SetString(PyExc_ValueError, "geometry: sizes too large for the compiled GEMM kernel");
            return -1;
        }
    }
    return 0;
}

/* gemm_conv_plan(pass, geometry) -> (scratch elements, work items) */
static PyObject *gc_plan(PyObject *self, PyObject *args)
{
    int pass;
    PyObject *geom;
    gc_geom g;
    if (!PyArg_ParseTuple(args, "iO", &pass, &geom) || parse_gc_geom(geom, &g) < 0) return NULL;
    if (pass < GC_FORWARD || pass > GC_GRAD_WEIGHT) {
        PyErr_Format(PyExc_ValueError, "pass must be 0, 1 or 2, got %d", pass);
        return NULL;
    }
    if (g.implicit == 3 && pass != GC_FORWARD) {
        PyErr_SetString(PyExc_ValueError, "the direct lanes forward runs the forward pass only");
        return NULL;
    }
    if (g.implicit && pass == GC_GRAD_INPUT) {
        PyErr_SetString(PyExc_ValueError, "the implicit GEMM runs the forward and grad_weight passes only");
        return NULL;
    }
    return Py_BuildValue("nn", gc_scratch(pass, &g), gc_items(pass, &g));
}

typedef struct {
    kernel_job base;
    int isa, pass, act, have_b, have_res, fresh;
    double lo, hi;
    Py_ssize_t start, stop;
    gc_geom g;
    gemm_fns fns;
    Py_buffer a, b, bias, out, s, res;
} gc_job;

static void gc_job_run(kernel_job *job)
{
    gc_job *j = (gc_job *)job;
    const gc_kernels *k = &KERNELS[j->isa]->gc[j->a.itemsize == 8];
    const void *bias = j->have_b ? j->bias.buf : NULL;
    if (j->pass == GC_GRAD_WEIGHT)
        k->grad_weight(&j->fns, j->a.buf, j->b.buf, j->out.buf, j->s.buf, &j->g, j->start, j->stop, j->fresh);
    else if (j->have_res) /* item by item, each one's residual pass while its output is in cache */
        for (Py_ssize_t item = j->start; item < j->stop; item++) {
            k->forward(&j->fns, j->a.buf, j->b.buf, bias, j->out.buf, j->s.buf, &j->g, item, item + 1, GC_ACT_NONE,
                       0.0, 0.0);
            k->residual(&j->g, j->out.buf, j->res.buf, item, j->act, j->lo, j->hi);
        }
    else
        (j->pass == GC_FORWARD ? k->forward : k->grad_input)(&j->fns, j->a.buf, j->b.buf, bias, j->out.buf, j->s.buf,
                                                               &j->g, j->start, j->stop, j->act, j->lo, j->hi);
}

static void gc_job_release(kernel_job *job)
{
    gc_job *j = (gc_job *)job;
    if (j->have_res) PyBuffer_Release(&j->res);
    PyBuffer_Release(&j->s);
    PyBuffer_Release(&j->out);
    if (j->have_b) PyBuffer_Release(&j->bias);
    PyBuffer_Release(&j->b);
    PyBuffer_Release(&j->a);
}

/* gemm_conv(isa, pass, routines, a, b, bias|None, out, scratch, geometry, start, stop, act, lo, hi[, res[, fresh]]):
 * forward (a, b) = (x, w) -> out = y; grad_input (gy, w) -> gx; grad_weight (x, gy) -> out = gw += ...
 * res (forward only, laid out as y, sharing no memory with out or scratch): y = act(conv + bias + res),
 * the residual added to each item's output before the activation; fresh (grad_weight only, res None):
 * out = the range's sum instead of out += it, out's old values never read (no zeroed accumulator; such a
 * job's range cannot be shared). prepare: the same call as a job for job_run / a worker. */
static PyObject *gc_call(PyObject *args, int prepare)
{
    int isa, pass, act, fresh = 0;
    PyObject *fns_o, *a_o, *b_o, *bias_o, *out_o, *s_o, *geom, *res_o = Py_None;
    Py_ssize_t start, stop;
    double lo, hi;
    gc_geom g;
    gemm_fns fns;
    if (!PyArg_ParseTuple(args, "iiOOOOOOOnnidd|Op", &isa, &pass, &fns_o, &a_o, &b_o, &bias_o, &out_o, &s_o, &geom,
                          &start, &stop, &act, &lo, &hi, &res_o, &fresh))
        return NULL;
    if (check_isa(isa) < 0 || parse_gc_geom(geom, &g) < 0 || parse_gemm_fns(fns_o, &fns) < 0) return NULL;
    if (pass < GC_FORWARD || pass > GC_GRAD_WEIGHT) {
        PyErr_Format(PyExc_ValueError, "pass must be 0, 1 or 2, got %d", pass);
        return NULL;
    }
    if (g.implicit && (pass == GC_GRAD_INPUT || (g.implicit == 3 && pass != GC_FORWARD) || isa == ISA_GENERIC)) {
        PyErr_SetString(PyExc_ValueError, "the implicit GEMM runs the forward and grad_weight passes (the direct lanes "
                                          "forward the forward) on the avx2 and avx512 builds only");
        return NULL;
    }
    const int have_b = bias_o != Py_None, have_res = res_o != Py_None;
    if (have_res && pass != GC_FORWARD) {
        PyErr_SetString(PyExc_ValueError, "only the forward pass takes a residual");
        return NULL;
    }
    if (fresh && pass != GC_GRAD_WEIGHT) {
        PyErr_SetString(PyExc_ValueError, "only the grad_weight pass takes fresh");
        return NULL;
    }
    if (check_act(act, lo, hi) < 0) return NULL;
    if (act != GC_ACT_NONE && pass == GC_GRAD_WEIGHT) {
        PyErr_SetString(PyExc_ValueError, "grad_weight takes no activation");
        return NULL;
    }
    if (have_b && pass == GC_GRAD_WEIGHT) {
        PyErr_SetString(PyExc_ValueError, "grad_weight takes no bias");
        return NULL;
    }
    const ptrdiff_t items = gc_items(pass, &g);
    if (check_range(start, stop, items, "item") < 0) return NULL;
    static const char *const A_NAMES[3] = {"input", "grad_output", "input"};
    static const char *const B_NAMES[3] = {"weight", "weight", "grad_output"};
    static const char *const OUT_NAMES[3] = {"output", "grad_input", "grad_weight"};
    const ptrdiff_t xn = g.n * g.c * g.plane, yn = g.n * g.o * g.len, wn = g.o * g.ck;
    const ptrdiff_t a_n = pass == GC_GRAD_INPUT ? yn : xn, b_n = pass == GC_GRAD_WEIGHT ? yn : wn;
    const ptrdiff_t out_n = pass == GC_FORWARD ? yn : pass == GC_GRAD_INPUT ? xn : wn;
    gc_job local, *j = job_storage(&local, sizeof local, prepare);
    if (!j) return NULL;
    *j = (gc_job){.base = {gc_job_run, gc_job_release, 0}, .isa = isa, .pass = pass, .act = act, .have_b = have_b,
                  .have_res = have_res, .fresh = fresh, .lo = lo, .hi = hi, .start = start, .stop = stop, .g = g,
                  .fns = fns};
    j->base.range = fresh ? NULL : &j->start; /* a fresh range is one sum: not run in claimed pieces */
    if (get_buffer(a_o, 0, &j->a, A_NAMES[pass]) < 0) goto free_job;
    if (get_buffer(b_o, 0, &j->b, B_NAMES[pass]) < 0) goto release_a;
    if (have_b && get_buffer(bias_o, 0, &j->bias, "bias") < 0) goto release_b;
    if (get_buffer(out_o, 1, &j->out, OUT_NAMES[pass]) < 0) goto release_bias;
    if (get_buffer(s_o, 1, &j->s, "scratch") < 0) goto release_out;
    if (have_res && get_buffer(res_o, 0, &j->res, "residual") < 0) goto release_s_only;
    const Py_ssize_t size = j->a.itemsize;
    if (j->b.itemsize != size || j->out.itemsize != size || j->s.itemsize != size ||
        (have_b && j->bias.itemsize != size) || (have_res && j->res.itemsize != size)) {
        PyErr_SetString(PyExc_TypeError, "all buffers must have the same element type");
        goto release_s;
    }
    if (g.implicit && size != 4) {
        PyErr_SetString(PyExc_TypeError, "the implicit GEMM takes float32 buffers only");
        goto release_s;
    }
    if (check_count(&j->a, a_n, 0, A_NAMES[pass]) < 0 || check_count(&j->b, b_n, 0, B_NAMES[pass]) < 0 ||
        check_count(&j->out, out_n, 0, OUT_NAMES[pass]) < 0 ||
        check_count(&j->s, gc_scratch(pass, &g), 1, "scratch") < 0 ||
        (have_b && check_count(&j->bias, pass == GC_FORWARD ? g.o : g.c, 0, "bias") < 0) ||
        (have_res && check_count(&j->res, yn, 0, "residual") < 0))
        goto release_s;
    /* the kernels read the operands while writing out and scratch: they must not share memory */
    {
        const char *bufs[6] = {j->a.buf, j->b.buf, have_b ? j->bias.buf : NULL, j->out.buf, j->s.buf,
                               have_res ? j->res.buf : NULL};
        const ptrdiff_t lens[6] = {j->a.len, j->b.len, have_b ? j->bias.len : 0, j->out.len, j->s.len,
                                   have_res ? j->res.len : 0};
        for (int i = 3; i < 5; i++)
            for (int m = 0; m < 6; m++)
                if (m != i && lens[i] && lens[m] && bufs[i] < bufs[m] + lens[m] && bufs[m] < bufs[i] + lens[i]) {
                    PyErr_SetString(PyExc_ValueError, "output and scratch must not overlap other buffers");
                    goto release_s;
                }
    }
    return run_or_wrap(&j->base, prepare);
release_s:
    if (have_res) PyBuffer_Release(&j->res);
release_s_only:
    PyBuffer_Release(&j->s);
release_out:
    PyBuffer_Release(&j->out);
release_bias:
    if (have_b) PyBuffer_Release(&j->bias);
release_b:
    PyBuffer_Release(&j->b);
release_a:
    PyBuffer_Release(&j->a);
free_job:
    job_storage_free(j, &local);
    return NULL;
}

static PyObject *gc_run(PyObject *self, PyObject *args) { return gc_call(args, 0); }
static PyObject *gc_job_new(PyObject *self, PyObject *args) { return gc_call(args, 1); }

/* Thread hand-off flags (npconv.kernels.workspace): the caller posts work by storing a sequence
 * number into a caller-owned int64 buffer and the worker threads spin on it with the GIL released
 * for a bounded time before blocking; a futex wake-up of a sleeping thread costs 20-80 us on the
 * 2-vCPU machines measured, as much as a whole small convolution. */
static int get_flags(PyObject *obj, Py_ssize_t index, Py_buffer *view)
{
    const char *f = acquire_buffer(obj, 1, view);
    if (!f) return -1;
    if (!((f[0] == 'q' || f[0] == 'l') && view->itemsize == 8) || f[1]) {
        PyErr_Format(PyExc_TypeError, "flags must hold int64, got format %s", view->format);
        PyBuffer_Release(view);
        return -1;
    }
    if (((uintptr_t)view->buf & 7) || index < 0 || index >= view->len / 8) {
        PyErr_Format(PyExc_ValueError, "flag index %zd outside [0, %zd) or buffer not 8-byte aligned", index,
                     view->len / 8);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static inline void spin_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + 1e-9 * (double)(t.tv_nsec - t0->tv_nsec);
}

/* Without the GIL: wait while *flag == seen, spinning about `seconds`; then return the value seen, or
 * with poll > 0 keep polling every `poll` seconds (at most 1 ms) until it changes. */
static int64_t wait_while(const int64_t *flag, int64_t seen, double seconds, double poll)
{
    const struct timespec nap = {0, (long)(poll > 0 ? (poll < 1e-3 ? poll : 1e-3) * 1e9 : 0)};
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (unsigned i = 1, late = 0;; i++) {
        const int64_t value = __atomic_load_n(flag, __ATOMIC_ACQUIRE);
        if (value != seen) return value;
        if (!late && (i & 63) == 0 && seconds_since(&t0) >= seconds) {
            if (poll <= 0) return value;
            late = 1;
        }
        if (late)
            nanosleep(&nap, NULL);
        else if (i < 1024)
            spin_pause();
        else
            sched_yield(); /* after a few microseconds: a thread sharing this CPU (another process, our
                              other side) runs first, so spinning never starves the thread it waits for */
    }
}

/* flag_wait(flags, index, seen, seconds[, store_index, store_value, poll]): with the GIL released, first
 * flags[store_index] = store_value (when store_index >= 0: a worker reports its finished call only
 * once it no longer holds the GIL, so the caller takes it uncontended), then spin while
 * flags[index] == seen for about `seconds`; with poll > 0, keep polling every `poll` seconds instead
 * of returning (the caller waiting for its workers). */
static PyObject *flag_wait(PyObject *self, PyObject *args)
{
    PyObject *obj;
    Py_ssize_t index, store_index = -1;
    long long seen, store_value = 0;
    double seconds, poll = 0.0;
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "OnLd|nLd", &obj, &index, &seen, &seconds, &store_index, &store_value, &poll) ||
        get_flags(obj, index, &view) < 0)
        return NULL;
    if (store_index >= view.len / 8) {
        PyErr_Format(PyExc_ValueError, "store_index %zd outside [0, %zd)", store_index, view.len / 8);
        PyBuffer_Release(&view);
        return NULL;
    }
    int64_t *flags = (int64_t *)view.buf, value;
    Py_BEGIN_ALLOW_THREADS
    if (store_index >= 0) __atomic_store_n(flags + store_index, (int64_t)store_value, __ATOMIC_RELEASE);
    value = wait_while(flags + index, seen, seconds, poll);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return PyLong_FromLongLong(value);
}

static PyObject *flag_store(PyObject *self, PyObject *args)
{
    PyObject *obj;
    Py_ssize_t index;
    long long value;
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "OnL", &obj, &index, &value) || get_flags(obj, index, &view) < 0) return NULL;
    __atomic_store_n((int64_t *)view.buf + index, (int64_t)value, __ATOMIC_RELEASE);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

/* job_post(flags, post, slot, value, job|None): flags[slot] = the job's address (0: a Python job), then
 * flags[post] = value (release store). The caller keeps the job alive until the worker reports it done. */
static PyObject *job_post(PyObject *self, PyObject *args)
{
    PyObject *obj, *capsule;
    Py_ssize_t post, slot;
    long long value;
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "OnnLO", &obj, &post, &slot, &value, &capsule)) return NULL;
    kernel_job *job = NULL;
    if (capsule != Py_None && !(job = get_job(capsule))) return NULL;
    if (get_flags(obj, post > slot ? post : slot, &view) < 0) return NULL;
    if (post < 0 || slot < 0 || post == slot) {
        PyErr_Format(PyExc_ValueError, "post %zd and slot %zd must be distinct flag indices", post, slot);
        PyBuffer_Release(&view);
        return NULL;
    }
    int64_t *flags = (int64_t *)view.buf;
    __atomic_store_n(flags + slot, (int64_t)(intptr_t)job, __ATOMIC_RELAXED);
    __atomic_store_n(flags + post, (int64_t)value, __ATOMIC_RELEASE);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

/* A worker's claim on the job of call `value` (flags[claim] holds the last call claimed, by the worker or
 * by a caller stealing it in team_join; call numbers grow): 1 if this thread took it, 0 if the other one
 * did (then the job may be gone and is not touched). */
static int claim_call(int64_t *claim, int64_t value)
{
    int64_t c = __atomic_load_n(claim, __ATOMIC_ACQUIRE);
    while (c < value)
        if (__atomic_compare_exchange_n(claim, &c, value, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) return 1;
    return 0;
}

/* team_wait(flags, post, done, slot, claim, seen, seconds, report) -> (value, fresh): a worker's wait. With
 * the GIL released: flags[done] = seen first if report (the Python job it just ran); then, while spinning
 * for about `seconds` with no new post: every post whose flags[slot] holds a job is claimed in
 * flags[claim] (claim_call; the caller may have taken a job its worker had not started), run right here if
 * this worker got it (no GIL), and reported done at once either way, restarting the spin. Returns (post
 * value, 1) for a post to run in Python (no job, or a stop value <= 0), (seen, 0) once it spun without one. */
static PyObject *team_wait(PyObject *self, PyObject *args)
{
    PyObject *obj;
    Py_ssize_t post, done, slot, claim;
    long long seen_in;
    double seconds;
    int report;
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "OnnnnLdp", &obj, &post, &done, &slot, &claim, &seen_in, &seconds, &report))
        return NULL;
    Py_ssize_t top = post > done ? post : done;
    top = top > slot ? top : slot;
    if (get_flags(obj, top > claim ? top : claim, &view) < 0) return NULL;
    if (post < 0 || done < 0 || slot < 0 || claim < 0 || post == done || post == slot || done == slot ||
        claim == post || claim == done || claim == slot) {
        PyErr_Format(PyExc_ValueError, "post %zd, done %zd, slot %zd and claim %zd must be distinct flag indices",
                     post, done, slot, claim);
        PyBuffer_Release(&view);
        return NULL;
    }
    int64_t *flags = (int64_t *)view.buf, seen = seen_in, value = seen;
    int fresh = 0;
    Py_BEGIN_ALLOW_THREADS
    if (report) __atomic_store_n(flags + done, seen, __ATOMIC_RELEASE);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (unsigned i = 1;; i++) {
        value = __atomic_load_n(flags + post, __ATOMIC_ACQUIRE);
        if (value != seen) {
            kernel_job *job = (kernel_job *)(intptr_t)__atomic_load_n(flags + slot, __ATOMIC_RELAXED);
            if (value <= 0 || !job) {
                fresh = 1;
                break;
            }
            if (claim_call(flags + claim, value)) job_execute(job);
            __atomic_store_n(flags + done, value, __ATOMIC_RELEASE);
            seen = value;
            i = 0;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            continue;
        }
        if ((i & 63) == 0 && seconds_since(&t0) >= seconds) break;
        if (i < 1024)
            spin_pause();
        else
            sched_yield(); /* as in flag_wait: never starve a thread sharing this CPU */
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return Py_BuildValue("Li", (long long)value, fresh);
}

/* The jobs of a team call: a sequence of at least two prepared jobs, and flags holding a post and a
 * done flag for each worker 1 .. len - 1 (worker k: post 2k * stride, its slot post + 1, its claim post + 2,
 * done (2k + 1) * stride, as npconv.kernels.workspace lays them out). NULL (an error set) otherwise. */
static PyObject *team_jobs(PyObject *obj, PyObject *seq, Py_ssize_t stride, Py_buffer *view)
{
    PyObject *fast = PySequence_Fast(seq, "jobs must be a sequence of jobs");
    if (!fast) return NULL;
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    if (n < 2 || stride < 3) {
        PyErr_Format(PyExc_ValueError, "a team call needs at least 2 jobs and a stride of at least 3, got %zd "
                     "and %zd", n, stride);
        Py_DECREF(fast);
        return NULL;
    }
    for (Py_ssize_t k = 0; k < n; k++)
        if (!get_job(PySequence_Fast_GET_ITEM(fast, k))) {
            Py_DECREF(fast);
            return NULL;
        }
    if (get_flags(obj, (2 * n - 1) * stride, view) < 0) {
        Py_DECREF(fast);
        return NULL;
    }
    return fast;
}

/* team_post(flags, jobs, call, stride): jobs[k] (k >= 1) posted to worker k with the call number `call`
 * (its slot holds the job's address, then a release store of the post), as job_post does for one.
 * The caller then wakes sleeping workers and calls team_join with the same jobs, which it keeps alive
 * until then. */
static PyObject *team_post(PyObject *self, PyObject *args)
{
    PyObject *obj, *seq;
    long long call;
    Py_ssize_t stride;
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "OOLn", &obj, &seq, &call, &stride)) return NULL;
    PyObject *fast = team_jobs(obj, seq, stride, &view);
    if (!fast) return NULL;
    int64_t *flags = (int64_t *)view.buf;
    for (Py_ssize_t k = 1; k < PySequence_Fast_GET_SIZE(fast); k++) {
        kernel_job *job = PyCapsule_GetPointer(PySequence_Fast_GET_ITEM(fast, k), JOB_CAPSULE);
        __atomic_store_n(flags + 2 * k * stride + 1, (int64_t)(intptr_t)job, __ATOMIC_RELAXED);
        __atomic_store_n(flags + 2 * k * stride, (int64_t)call, __ATOMIC_SEQ_CST);
    }
    PyBuffer_Release(&view);
    Py_DECREF(fast);
    Py_RETURN_NONE;
}

/* team_join(flags, jobs, call, stride, seconds, poll): with the GIL released, run jobs[0] on this
 * thread, then every worker's job that its worker has not claimed yet (claim_call on its claim flag, the
 * one after its slot: a worker asleep, or whose CPU the host gave to another thread, would hold up the call
 * for longer than the job takes; a job sharing its range with the others finds little or nothing left),
 * then wait until every worker that claimed its job reported `call` done (spinning about `seconds`, then
 * polling every `poll` seconds, as flag_wait); MemoryError if any job's own allocation failed. */
static PyObject *team_join(PyObject *self, PyObject *args)
{
    PyObject *obj, *seq;
    long long call;
    Py_ssize_t stride;
    double seconds, poll;
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "OOLndd", &obj, &seq, &call, &stride, &seconds, &poll)) return NULL;
    PyObject *fast = team_jobs(obj, seq, stride, &view);
    if (!fast) return NULL;
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    int64_t *flags = (int64_t *)view.buf;
    kernel_job *own = PyCapsule_GetPointer(PySequence_Fast_GET_ITEM(fast, 0), JOB_CAPSULE);
    unsigned char taken[n]; /* jobs this thread took from their workers */
    memset(taken, 0, (size_t)n);
    poll = poll > 0 ? poll : 1e-5; /* the caller never returns before its workers: it always polls */
    Py_BEGIN_ALLOW_THREADS
    job_execute(own);
    for (Py_ssize_t k = 1; k < n; k++)
        if (__atomic_load_n(flags + (2 * k + 1) * stride, __ATOMIC_ACQUIRE) != (int64_t)call &&
            claim_call(flags + 2 * k * stride + 2, (int64_t)call)) {
            job_execute((kernel_job *)PyCapsule_GetPointer(PySequence_Fast_GET_ITEM(fast, k), JOB_CAPSULE));
            taken[k] = 1;
        }
    for (Py_ssize_t k = 1; k < n; k++) {
        if (taken[k]) continue;
        const int64_t *done = flags + (2 * k + 1) * stride;
        /* a done flag holds an earlier call's number until the worker reports this one */
        for (int64_t seen; (seen = __atomic_load_n(done, __ATOMIC_ACQUIRE)) != (int64_t)call;)
            wait_while(done, seen, seconds, poll);
    }
    Py_END_ALLOW_THREADS
    int failed = 0;
    for (Py_ssize_t k = 0; k < n; k++)
        failed |= ((kernel_job *)PyCapsule_GetPointer(PySequence_Fast_GET_ITEM(fast, k), JOB_CAPSULE))->failed;
    PyBuffer_Release(&view);
    Py_DECREF(fast);
    if (failed) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"subnormal_operands", subnormal_operands, METH_VARARGS,
     "subnormal_operands(clear=False) -> bool | None: whether SSE/AVX arithmetic on this thread read a subnormal "
     "operand since the flag was last cleared (x86 MXCSR DE; None elsewhere), then clear the flags if asked"},
    {"available_isas", available_isas, METH_NOARGS,
     "available_isas() -> names of the ISA variants built in and supported by this CPU, slowest first"},
    {"adjoint_kernel", adjoint_kernel, METH_VARARGS,
     "adjoint_kernel(w, out, groups, og, cg, taps): out (G, Cg, Og, taps) = w (G, Og, Cg, taps) with the channel "
     "axes swapped and the taps reversed (C-contiguous float32/float64 buffers of one type)"},
    {"flag_wait", flag_wait, METH_VARARGS,
     "flag_wait(flags, index, seen, seconds[, store_index, store_value, poll]) -> flags[index] once it differs "
     "from seen, or seen after spinning about seconds (with poll > 0: polling every poll seconds after that, "
     "until it differs); GIL released, flags[store_index] = store_value first if store_index >= 0 (flags: an "
     "int64 buffer)"},
    {"jobs_share", jobs_share, METH_VARARGS,
     "jobs_share(jobs, counter, chunk): jobs of one kernel call, each prepared over the same item range, share "
     "it: each run claims runs of chunk items from counter[0] (an int64 buffer kept alive for the call) until "
     "none are left"},
    {"team_post", team_post, METH_VARARGS,
     "team_post(flags, jobs, call, stride): post jobs[k] (k >= 1) to worker k as call number `call` (worker k's "
     "post flag at 2k * stride, its job slot next to it)"},
    {"team_join", team_join, METH_VARARGS,
     "team_join(flags, jobs, call, stride, seconds, poll): run jobs[0] here (GIL released), then each job k >= 1 "
     "its worker has not claimed yet (claim flag 2k * stride + 2), then wait until every other worker k reported "
     "`call` done (flag (2k + 1) * stride); MemoryError if a job's allocation failed"},
    {"flag_store", flag_store, METH_VARARGS,
     "flag_store(flags, index, value): flags[index] = value, visible to flag_wait after everything the caller "
     "wrote before (release store)"},
    {"depthwise3d_forward", dw3d_forward, METH_VARARGS,
     "depthwise3d_forward(isa, x, w, bias, y, scratch, geometry, depth, start, stop[, act, lo, hi]): (image, "
     "channel) pairs [start, stop) of a 3-d depthwise forward; geometry one depth slice's (as depthwise2d's), "
     "depth (D, OD, KD, SD, DD, PD)"},
    {"depthwise3d_forward_job", dw3d_forward_job, METH_VARARGS,
     "depthwise3d_forward_job(...same arguments as depthwise3d_forward...) -> job"},
    {"depthwise3d_scratch", dw3d_scratch, METH_VARARGS,
     "depthwise3d_scratch(geometry, depth) -> scratch elements of one depthwise3d_forward call"},
    {"depthwise2d_scratch", scratch_size, METH_VARARGS,
     "depthwise2d_scratch(pass, geometry) -> scratch elements per call (pass 0 forward, 1 grad_input, "
     "2 grad_weight)"},
    {"depthwise2d_forward", dw2d_forward, METH_VARARGS,
     "depthwise2d_forward(isa, x, w, bias, y, scratch, geometry, start, stop[, act, lo, hi]): planes [start, stop) "
     "of y = act(conv + bias), act 0 none / 1 relu / 2 hardtanh (clamp to [lo, hi])"},
    {"depthwise2d_grad_input", dw2d_grad_input, METH_VARARGS,
     "depthwise2d_grad_input(isa, gy, w, bias, gx, scratch, geometry, start, stop[, act, lo, hi]): planes of gx, "
     "epilogue as in depthwise2d_forward"},
    {"depthwise2d_grad_weight", dw2d_grad_weight, METH_VARARGS,
     "depthwise2d_grad_weight(isa, x, gy, gw, scratch, geometry, start, stop): input channels of gw"},
    {"grouped2d_scratch", gp_scratch_size, METH_VARARGS,
     "grouped2d_scratch(pass, geometry) -> scratch elements per call (pass 0 forward, 2 grad_weight)"},
    {"grouped2d_forward", gp2d_forward, METH_VARARGS,
     "grouped2d_forward(isa, x, w, bias, y, scratch, geometry, start, stop[, act, lo, hi]): items (image * G + "
     "group) [start, stop) of y = act(conv + bias), act as in depthwise2d_forward"},
    {"grouped2d_grad_weight", gp2d_grad_weight, METH_VARARGS,
     "grouped2d_grad_weight(isa, x, gy, gw, scratch, geometry, start, stop): groups [start, stop) of gw"},
    {"max_pool2d_forward", mp2d_forward, METH_VARARGS,
     "max_pool2d_forward(isa, x, y, arg, geometry, start, stop[, row0, row1]): planes [start, stop) of y "
     "(output rows [row0, row1) of each, default all) and their argmax kernel offsets arg (int32; None: y alone)"},
    {"gemm", gemm, METH_VARARGS,
     "gemm(isa, routines, trans_a, trans_b, alpha, a, b, beta, c): c = alpha * op(a) @ op(b) + beta * c with "
     "npconv's gemm or SciPy's BLAS (routines: npconv.kernels.blas.gemm_routines())"},
    {"winograd2d_grad_weight_scratch", wg_gw_scratch_size, METH_VARARGS,
     "winograd2d_grad_weight_scratch(geometry) -> scratch elements per winograd2d_grad_weight call"},
    {"winograd2d_grad_weight", wg2d_gw, METH_VARARGS,
     "winograd2d_grad_weight(isa, routines, x, gy, acc, scratch, geometry, start, stop, o0, o1, first): the "
     "grad_weight products of tiles [start, stop) and output channels [o0, o1) (Winograd F(4x4, 3x3), the "
     "forward's adjoint in U) added into acc (36, O, C/G) float64 (stored when first is 1; first 2: written in the "
     "input's element type into acc of that type); gw = G^T acc G. Optional stage, v, c0, c1: stage 1 only the "
     "input transform of channels [c0, c1) into the shared scratch v, stage 2 the rest from it"},
    {"winograd2d_grad_weight_job", wg2d_gw_job, METH_VARARGS,
     "winograd2d_grad_weight_job(...same arguments as winograd2d_grad_weight...) -> job"},
    {"winograd2d_grad_weight_finish", wg2d_finish, METH_VARARGS,
     "winograd2d_grad_weight_finish(isa, acc, gw, accumulators, start, stop): gw[p] = G^T M_p G for channel pairs "
     "[start, stop), M the sum of acc's first accumulators (36 x pairs float64 blocks)"},
    {"winograd2d_grad_weight_finish_job", wg2d_finish_job, METH_VARARGS,
     "winograd2d_grad_weight_finish_job(...same arguments as winograd2d_grad_weight_finish...) -> job"},
    {"winograd2d_scratch", wg_scratch_size, METH_VARARGS,
     "winograd2d_scratch(geometry) -> scratch elements per call (geometry: N, C, H, W, O, OH, OW, PH, PW, "
     "G, CAP, CBLOCK, DH, DW, XH, XW, X0H, X0W, YH, YW, Y0H, Y0W: one phase of a dilation of full planes)"},
    {"winograd2d_weight", wg2d_weight, METH_VARARGS,
     "winograd2d_weight(isa, w, u, start, stop[, seen]): kernels [start, stop) of w (P, 3, 3) into U (36, P), "
     "U[:, p] = G w[p] G^T of F(4x4, 3x3); with seen (w's shape, U = transform(seen) kept by the caller) a "
     "range whose bytes equal seen's is skipped, else transformed and copied into seen"},
    {"winograd2d_forward", wg2d_forward, METH_VARARGS,
     "winograd2d_forward(isa, routines, x, u, bias, y, scratch, geometry, start, stop, act, lo, hi[, stage, v, c0, "
     "c1, residual]): tiles [start, stop) of y = F(4x4, 3x3) Winograd convolution of x with U (36, O, C/G) (+ bias), "
     "then act 1 relu or 2 hardtanh(lo, hi), after adding residual (laid out as y) where given; stage 1: only the "
     "input transform of channels [c0, c1) into the scratch v (of the same geometry), stage 2: only the products "
     "and the output transform from v"},
    {"gemm_conv_job", gc_job_new, METH_VARARGS,
     "gemm_conv_job(...same arguments as gemm_conv...) -> job: the call prepared (checked, buffers held) for "
     "job_run or a worker's team_wait"},
    {"job_chain", job_chain, METH_O, "job_chain(jobs) -> one job running the given jobs in order"},
    {"jobs_check", jobs_check, METH_O,
     "jobs_check(jobs): MemoryError if a kernel's own allocation failed in the last run of any of the jobs"},
    {"depthwise2d_forward_job", dw2d_forward_job, METH_VARARGS,
     "depthwise2d_forward_job(...same arguments as depthwise2d_forward...) -> job"},
    {"depthwise2d_grad_input_job", dw2d_grad_input_job, METH_VARARGS,
     "depthwise2d_grad_input_job(...same arguments as depthwise2d_grad_input...) -> job"},
    {"grouped2d_forward_job", gp2d_forward_job, METH_VARARGS,
     "grouped2d_forward_job(...same arguments as grouped2d_forward...) -> job"},
    {"winograd3d_forward", wg3d_forward, METH_VARARGS,
     "winograd3d_forward(isa, routines, x, u, bias, y, scratch, geometry, depth, z0, z1, t0, t1, act, lo, hi): "
     "output depth slices [z0, z1) x tiles [t0, t1) of one image of a 3-d (KD, 3, 3) convolution; x (C, D, H, W), "
     "y (O, OD, OH, OW), u (36, O, KD * C), geometry one slice's (its C the scratch's V rows), depth (D, OD, KD, "
     "PD, C)"},
    {"winograd3d_forward_job", wg3d_forward_job, METH_VARARGS,
     "winograd3d_forward_job(...same arguments as winograd3d_forward...) -> job"},
    {"winograd3d_grad_weight", wg3d_gw, METH_VARARGS,
     "winograd3d_grad_weight(isa, routines, x, gy, acc, scratch, geometry, depth, z0, z1, t0, t1, first): the "
     "products of output slices [z0, z1) x tiles [t0, t1) of one image added into acc (36, O, KD * C) float64 "
     "(first: the first stored); arguments as winograd3d_forward's, scratch winograd2d_grad_weight_scratch's"},
    {"winograd3d_grad_weight_job", wg3d_gw_job, METH_VARARGS,
     "winograd3d_grad_weight_job(...same arguments as winograd3d_grad_weight...) -> job"},
    {"winograd2d_forward_job", wg2d_forward_job, METH_VARARGS,
     "winograd2d_forward_job(...same arguments as winograd2d_forward...) -> job"},
    {"relu_forward_job", relu_fwd_job, METH_VARARGS, "relu_forward_job(...same arguments as relu_forward...) -> job"},
    {"relu_backward_job", relu_bwd_job, METH_VARARGS,
     "relu_backward_job(...same arguments as relu_backward...) -> job"},
    {"batch_norm_forward_job", bn_forward_job, METH_VARARGS,
     "batch_norm_forward_job(...same arguments as batch_norm_forward...) -> job"},
    {"batch_norm_backward_job", bn_backward_job, METH_VARARGS,
     "batch_norm_backward_job(...same arguments as batch_norm_backward...) -> job"},
    {"depthwise2d_grad_weight_job", dw2d_grad_weight_job, METH_VARARGS,
     "depthwise2d_grad_weight_job(...same arguments as depthwise2d_grad_weight...) -> job"},
    {"grouped2d_grad_weight_job", gp2d_grad_weight_job, METH_VARARGS,
     "grouped2d_grad_weight_job(...same arguments as grouped2d_grad_weight...) -> job"},
    {"max_pool2d_forward_job", mp2d_forward_job, METH_VARARGS,
     "max_pool2d_forward_job(...same arguments as max_pool2d_forward...) -> job"},
    {"max_pool2d_backward_job", mp2d_backward_job, METH_VARARGS,
     "max_pool2d_backward_job(...same arguments as max_pool2d_backward...) -> job"},
    {"winograd2d_weight_job", wg2d_weight_job, METH_VARARGS,
     "winograd2d_weight_job(...same arguments as winograd2d_weight...) -> job"},
    {"job_run", job_run, METH_O, "job_run(job): run a prepared job on this thread, GIL released"},
    {"job_post", job_post, METH_VARARGS,
     "job_post(flags, post, slot, value, job|None): flags[slot] = the job's address (0 for None), then "
     "flags[post] = value (release store); keep the job alive until the worker reports it done"},
    {"team_wait", team_wait, METH_VARARGS,
     "team_wait(flags, post, done, slot, claim, seen, seconds, report) -> (value, fresh): a worker's wait; GIL "
     "released; flags[done] = seen first if report; a posted job runs here if this worker claims it first "
     "(flags[claim]: the last call claimed; team_join takes unclaimed ones) and is reported done; returns "
     "(value, 1) for a post without a job (or value <= 0), (seen, 0) after spinning about seconds without one"},
    {"gemm_conv_plan", gc_plan, METH_VARARGS,
     "gemm_conv_plan(pass, geometry) -> (scratch elements, work items) of the GEMM convolution (pass 0 forward, "
     "1 grad_input, 2 grad_weight)"},
    {"gemm_conv", gc_run, METH_VARARGS,
     "gemm_conv(isa, pass, routines, a, b, bias, out, scratch, geometry, start, stop, act, lo, hi[, res]): work items "
     "[start, stop) of a GEMM convolution pass (forward: x, w -> y; grad_input: gy, w -> gx; grad_weight: "
     "x, gy -> gw +=), epilogue act 0 none / 1 relu / 2 hardtanh (clamp to [lo, hi])"},
    {"max_pool2d_backward", mp2d_backward, METH_VARARGS,
     "max_pool2d_backward(isa, gy, arg, gx, geometry, start, stop): planes [start, stop) of gx"},
    {"batch_norm_forward", bn_forward, METH_VARARGS,
     "batch_norm_forward(isa, x, y, weight, bias, stats, geometry, training, eps, start, stop): channels "
     "[start, stop) of y = (x - mean) * invstd * weight + bias over x (N, C, S) (geometry (N, C, S); weight, "
     "bias may be None); stats (3, C) = mean, biased var, invstd: written with training (batch statistics), "
     "else mean and invstd read"},
    {"batch_norm_backward", bn_backward, METH_VARARGS,
     "batch_norm_backward(isa, gy, x, gx, weight, stats, sums, geometry, training, start, stop): channels "
     "[start, stop) of sums (2, C) = (sum gy, sum gy * xhat) and gx (either may be None) of batch norm with "
     "stats' mean and invstd (batch statistics with training, else fixed)"},
    {"spectral_mix", spectral_mix, METH_VARARGS,
     "spectral_mix(isa, a, b, out, scratch, (N, G, I, J, F, sj, si, conj), f0, f1): FFT convolution's per-frequency "
     "channel products over complex values [f0, f1) (interleaved float32/float64 views)"},
    {"spectral_mix_job", spectral_mix_job, METH_VARARGS, "spectral_mix prepared as a job"},
    {"spectral_mix_scratch", sm_scratch_size, METH_VARARGS,
     "spectral_mix_scratch(geometry, itemsize) -> scratch elements of a spectral_mix call"},
    {"linear_rows", linear_rows, METH_VARARGS,
     "linear_rows(isa, x, w, y, rows, k, m, start, stop): columns [start, stop) of y (rows, m) = x (rows, k) @ "
     "w (m, k)^T (float32/float64, C-contiguous, one element type)"},
    {"linear_rows_job", linear_rows_job, METH_VARARGS, "linear_rows_job(...same arguments as linear_rows...) -> job"},
    {"row_means", row_means, METH_VARARGS,
     "row_means(isa, x, y, rows, count, start, stop): rows [start, stop) of y (rows) = the means of x's rows of "
     "count values"},
    {"row_means_job", row_means_job, METH_VARARGS, "row_means_job(...same arguments as row_means...) -> job"},
    {"value_range_part", value_range_part, METH_VARARGS,
     "value_range_part(isa, a, out, start, stop): out[0:2] = (max |v|, any NaN as 1/0) of elements [start, stop) "
     "of a (out of a's element type)"},
    {"value_range_part_job", value_range_part_job, METH_VARARGS,
     "value_range_part_job(...same arguments as value_range_part...) -> job"},
    {"value_range", value_range, METH_VARARGS,
     "value_range(isa, a, sample, quantile) -> (max |v|, any NaN, bulk) of a float32/float64 buffer in one pass; "
     "bulk: the k-th smallest of |a[::step][:sample]| (step = max(1, len // sample), k = int(quantile * (count - 1))), "
     "0 when a holds a NaN or inf or only zeros"},
    {"relu_forward", relu_fwd, METH_VARARGS,
     "relu_forward(isa, x, y, start, stop): elements [start, stop) of y = x where x > 0 or NaN, else 0 (y may "
     "be x)"},
    {"relu_backward", relu_bwd, METH_VARARGS,
     "relu_backward(isa, g, y, gx, start, stop): elements [start, stop) of gx = g where y > 0 or NaN, else 0"},
    {"add_arrays", add_arrays, METH_VARARGS,
     "add_arrays(isa, a, b, out, start, stop): elements [start, stop) of out = a + b (out may be a or b)"},
    {"add_arrays_job", add_arrays_job, METH_VARARGS, "add_arrays_job(...same arguments as add_arrays...) -> job"},
    {"silu_forward", silu_fwd, METH_VARARGS,
     "silu_forward(isa, x, y, start, stop): elements [start, stop) of y = x / (1 + exp(-x)) (y may be x)"},
    {"silu_forward_job", silu_fwd_job, METH_VARARGS, "silu_forward_job(...same arguments as silu_forward...) -> job"},
    {"sigmoid_forward", sigmoid_fwd, METH_VARARGS,
     "sigmoid_forward(isa, x, y, start, stop): elements [start, stop) of y = 1 / (1 + exp(-x)) (y may be x)"},
    {"sigmoid_forward_job", sigmoid_fwd_job, METH_VARARGS,
     "sigmoid_forward_job(...same arguments as sigmoid_forward...) -> job"},
    {"silu_backward", silu_bwd, METH_VARARGS,
     "silu_backward(isa, g, x, gx, start, stop): elements [start, stop) of gx = g * s * (1 + x * (1 - s)), s = "
     "sigmoid(x) (gx may be g)"},
    {"silu_backward_job", silu_bwd_job, METH_VARARGS,
     "silu_backward_job(...same arguments as silu_backward...) -> job"},
    {"sgd_step", sgd_step, METH_VARARGS,
     "sgd_step(isa, theta, grad, buffer, start, stop, lr, momentum, keep, flags): elements [start, stop) of one "
     "SGD step in place (buffer None: no momentum; flags 1 first step, 2 nesterov, 4 keep != 1)"},
    {"sgd_step_job", sgd_step_job, METH_VARARGS, "sgd_step_job(...same arguments as sgd_step...) -> job"},
    {"adam_step", adam_step, METH_VARARGS,
     "adam_step(isa, theta, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, start, stop, params, flags): elements "
     "[start, stop) of one Adam/AdamW step in place (max_exp_avg_sq None without amsgrad; params (wd, decay, w, "
     "1 - w, beta2, 1 - beta2, bias_correction2_sqrt, eps, step_size); flags 1 maximize, 2 decoupled, 4 L2, "
     "8 |w| < 0.5)"},
    {"adam_step_job", adam_step_job, METH_VARARGS, "adam_step_job(...same arguments as adam_step...) -> job"},
    {"ir_scratch", ir_scratch_size, METH_VARARGS,
     "ir_scratch(geometry, bounds) -> scratch elements one worker's call of ir_forward needs"},
    {"ir_supported", ir_supported, METH_VARARGS,
     "ir_supported(isa, geometry, bounds) -> whether the variant's fused block kernel takes this block (float32)"},
    {"ir_forward", ir_forward, METH_VARARGS,
     "ir_forward(isa, x, w1|None, b1|None, wd, bd|None, w2, b2|None, res|None, y, scratch, geometry, bounds, start, "
     "stop): items (image * bands + band) [start, stop) of a fused inverted residual block, y = act2(w2 @ "
     "act1(dw3x3(act0(w1 @ x + b1)) + bd) + b2 (+ res)); geometry (N, Cin, Cexp, Cout, H, W, OH, OW, stride, "
     "bands, tile, expand, residual, act0, act1, act2), bounds (lo0, hi0, lo1, hi1, lo2, hi2)"},
    {"ir_forward_job", ir_forward_job, METH_VARARGS, "ir_forward_job(...same arguments as ir_forward...) -> job"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_core", "npconv's compiled kernels (runtime ISA dispatch).", 0, methods,
};

PyMODINIT_FUNC PyInit__core(void)
{
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    PyObject *names = Py_BuildValue("(sss)", ISA_NAMES[0], ISA_NAMES[1], ISA_NAMES[2]);
    if (!names || PyModule_AddObject(m, "ISA_NAMES", names) < 0) {
        Py_XDECREF(names);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
