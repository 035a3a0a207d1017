/* npconv._arrays: a caching layer over NumPy's default data-memory handler.
 *
 * Every layer of a network allocates a fresh output; with glibc's default malloc a large block is
 * mmap'ed and page-faulted on first write on every call (docs/performance.md). This handler keeps
 * blocks of at least `min_size` bytes that NumPy frees (an array's memory is freed only when no
 * array, view or buffer refers to it any more) and hands one of the same size to the next
 * allocation (or one up to REUSE_FACTOR times larger, the one freed last: a block another layer just
 * used is still in cache): the blocks stay mapped and in cache. Everything else goes to NumPy's
 * default handler, which allocated every block this one holds. At most `limit` bytes are held (least
 * recently freed given back first); `clear()` gives all of them back.
 *
 * The handler is in force where `enter()` installed it (NumPy keeps it per context, see
 * `PyDataMem_SetHandler`); an array remembers the handler that allocated it and frees through it.
 * `enter()` replaces only NumPy's default handler: one the user installed stays in force.
 * NumPy's C API is reached through its `_ARRAY_API` table (stable indices since NumPy 1.22), so the
 * build needs no NumPy headers.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>
#include <stdint.h>
#include <string.h>

/* NumPy's PyDataMemAllocator / PyDataMem_Handler, version 1 (numpy/ndarraytypes.h) */
typedef struct {
    void *ctx;
    void *(*malloc)(void *ctx, size_t size);
    void *(*calloc)(void *ctx, size_t nelem, size_t elsize);
    void *(*realloc)(void *ctx, void *ptr, size_t new_size);
    void (*free)(void *ctx, void *ptr, size_t size);
} DataMemAllocator;

typedef struct {
    char name[127];
    uint8_t version;
    DataMemAllocator allocator;
} DataMemHandler;

#define API_FEATURE_VERSION 211 /* PyArray_GetNDArrayCFeatureVersion */
#define API_SET_HANDLER 304     /* PyDataMem_SetHandler */
#define API_GET_HANDLER 305     /* PyDataMem_GetHandler */
#define API_DEFAULT_HANDLER 306 /* PyDataMem_DefaultHandler */
#define FEATURE_1_22 0x0f

#define SLOTS 512

typedef struct {
    void *ptr;
    size_t size;
} Block;

static PyObject *(*set_handler)(PyObject *);
static PyObject *(*get_handler)(void);
static DataMemAllocator fallback; /* NumPy's default handler */
static PyObject *capsule;         /* this handler */
static PyObject *numpy_capsule;   /* NumPy's default handler */

static PyThread_type_lock lock;
static Block blocks[SLOTS]; /* least recently freed first */
static int count;
static size_t cached, limit = (size_t)256 << 20, min_size = (size_t)128 << 10;
static unsigned long long hits, misses;
/* A held block serves requests down to 1 / REUSE_FACTOR of its size: the one freed last is taken, as
 * it is the likeliest still in cache (MobileNetV2 batch 1: 4% faster than exact sizes, and the cache
 * held 11 instead of 17 MB; docs/performance.md). */
#define REUSE_FACTOR 4

/* Blocks handed out larger than requested, with their real sizes (NumPy frees with the requested
 * size); at most LENT of them at once, beyond which requests take exact sizes only. */
#define LENT 1024
static Block lent[LENT];
static int n_lent;

/* The real size of block ptr, forgetting it (size: what NumPy asked for). Lock held. */
static size_t returned_size(void *ptr, size_t size)
{
    for (int i = n_lent - 1; i >= 0; i--)
        if (lent[i].ptr == ptr) {
            size = lent[i].size;
            lent[i] = lent[n_lent - 1];
            __atomic_store_n(&n_lent, n_lent - 1, __ATOMIC_RELEASE);
            break;
        }
    return size;
}

/* Whether any block is out larger than asked for (else a free needs no look-up): read without the
 * lock, as the block being freed, if lent, was recorded before its array existed. */
static int any_lent(void)
{
    return __atomic_load_n(&n_lent, __ATOMIC_ACQUIRE) > 0;
}

/* The cached block freed last of `size` to REUSE_FACTOR * `size` bytes (exactly `size` while LENT
 * blocks are out), removed from the cache; NULL if none. */
static void *take(size_t size)
{
    void *ptr = NULL;
    PyThread_acquire_lock(lock, WAIT_LOCK);
    const size_t most = n_lent == LENT ? size : size <= SIZE_MAX / REUSE_FACTOR ? size * REUSE_FACTOR : SIZE_MAX;
    for (int i = count - 1; i >= 0; i--) {
        if (blocks[i].size >= size && blocks[i].size <= most) {
            ptr = blocks[i].ptr;
            if (blocks[i].size != size) {
                lent[n_lent] = blocks[i];
                __atomic_store_n(&n_lent, n_lent + 1, __ATOMIC_RELEASE);
            }
            cached -= blocks[i].size;
            memmove(blocks + i, blocks + i + 1, (size_t)(count - i - 1) * sizeof(Block));
            count--;
            break;
        }
    }
    if (ptr) hits++; else misses++;
    PyThread_release_lock(lock);
    return ptr;
}

static void *cache_malloc(void *ctx, size_t size)
{
    (void)ctx;
    void *ptr = size >= min_size ? take(size) : NULL;
    return ptr ? ptr : fallback.malloc(fallback.ctx, size);
}

static void *cache_calloc(void *ctx, size_t nelem, size_t elsize)
{
    (void)ctx;
    if (elsize && nelem <= SIZE_MAX / elsize && nelem * elsize >= min_size) {
        void *ptr = take(nelem * elsize);
        if (ptr) return memset(ptr, 0, nelem * elsize);
    }
    return fallback.calloc(fallback.ctx, nelem, elsize);
}

static void *cache_realloc(void *ctx, void *ptr, size_t new_size)
{
    (void)ctx;
    if (ptr && any_lent()) { /* a lent block's record goes: realloc may move or give it back */
        PyThread_acquire_lock(lock, WAIT_LOCK);
        returned_size(ptr, 0);
        PyThread_release_lock(lock);
    }
    return fallback.realloc(fallback.ctx, ptr, new_size);
}

static void cache_free(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    if (ptr == NULL) return;
    if (size < min_size && !any_lent()) {
        fallback.free(fallback.ctx, ptr, size);
        return;
    }
    /* give back the least recently freed blocks until this one fits (outside the lock) */
    Block evicted[SLOTS];
    int n_evicted = 0;
    PyThread_acquire_lock(lock, WAIT_LOCK);
    size = returned_size(ptr, size);
    if (size < min_size || size > limit) { /* (min_size may have changed since it was lent) */
        PyThread_release_lock(lock);
        fallback.free(fallback.ctx, ptr, size);
        return;
    }
    int drop = 0;
    size_t kept = cached;
    while (drop < count && (kept + size > limit || count - drop >= SLOTS)) kept -= blocks[drop++].size;
    if (kept + size <= limit) {
        memcpy(evicted, blocks, (size_t)drop * sizeof(Block));
        n_evicted = drop;
        memmove(blocks, blocks + drop, (size_t)(count - drop) * sizeof(Block));
        count -= drop;
        blocks[count].ptr = ptr;
        blocks[count].size = size;
        count++;
        cached = kept + size;
        ptr = NULL;
    }
    PyThread_release_lock(lock);
    for (int i = 0; i < n_evicted; i++) fallback.free(fallback.ctx, evicted[i].ptr, evicted[i].size);
    if (ptr) fallback.free(fallback.ctx, ptr, size);
}

static DataMemHandler handler = {
    "npconv_cache", 1, {NULL, cache_malloc, cache_calloc, cache_realloc, cache_free},
};

/* Give every cached block back to the default handler. */
static void release_all(void)
{
    PyThread_acquire_lock(lock, WAIT_LOCK);
    int n = count;
    Block *taken = PyMem_RawMalloc((size_t)(n ? n : 1) * sizeof(Block));
    if (taken) {
        memcpy(taken, blocks, (size_t)n * sizeof(Block));
        count = 0;
        cached = 0;
    }
    PyThread_release_lock(lock);
    if (!taken) return;
    for (int i = 0; i < n; i++) fallback.free(fallback.ctx, taken[i].ptr, taken[i].size);
    PyMem_RawFree(taken);
}

static PyObject *enter(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    PyObject *current = get_handler();
    if (!current) return NULL;
    if (current != numpy_capsule) { /* already in force, or a handler the user chose: left as it is */
        Py_DECREF(current);
        Py_RETURN_NONE;
    }
    Py_DECREF(current);
    return set_handler(capsule);
}

static PyObject *restore(PyObject *self, PyObject *previous)
{
    (void)self;
    if (!PyCapsule_IsValid(previous, "mem_handler")) {
        PyErr_SetString(PyExc_TypeError, "restore expects the handler enter() returned");
        return NULL;
    }
    PyObject *replaced = set_handler(previous);
    if (!replaced) return NULL;
    Py_DECREF(replaced);
    Py_RETURN_NONE;
}

static PyObject *configure(PyObject *self, PyObject *args)
{
    (void)self;
    unsigned long long new_limit, new_min;
    if (!PyArg_ParseTuple(args, "KK", &new_limit, &new_min)) return NULL;
    if (new_min < 1 || new_limit > (unsigned long long)(SIZE_MAX / 2)) {
        PyErr_SetString(PyExc_ValueError, "configure(limit, min_size): min_size >= 1 and limit < SIZE_MAX / 2");
        return NULL;
    }
    PyThread_acquire_lock(lock, WAIT_LOCK);
    limit = (size_t)new_limit;
    min_size = (size_t)new_min;
    PyThread_release_lock(lock);
    release_all(); /* held blocks may be outside the new bounds */
    Py_RETURN_NONE;
}

static PyObject *stats(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    PyThread_acquire_lock(lock, WAIT_LOCK);
    PyObject *result = Py_BuildValue("{s:n,s:i,s:K,s:K,s:n,s:n}", "cached_bytes", (Py_ssize_t)cached,
                                     "blocks", count, "hits", hits, "misses", misses,
                                     "limit", (Py_ssize_t)limit, "min_size", (Py_ssize_t)min_size);
    PyThread_release_lock(lock);
    return result;
}

static PyObject *clear(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    release_all();
    Py_RETURN_NONE;
}

static PyObject *after_fork_in_child(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    /* another thread may have held the lock at the fork: the child's copy would stay locked */
    PyThread_type_lock fresh = PyThread_allocate_lock();
    if (!fresh) return PyErr_NoMemory();
    lock = fresh; /* the old one is leaked: freeing a lock another thread held is undefined */
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"enter", enter, METH_NOARGS,
     "enter() -> the handler it replaced (pass it to restore), or None when NumPy's default handler was not "
     "in force (the cache already, or a handler the user installed)"},
    {"restore", restore, METH_O, "restore(previous): put back the handler enter() replaced"},
    {"configure", configure, METH_VARARGS,
     "configure(limit, min_size): hold at most limit bytes of freed blocks of at least min_size bytes "
     "(gives back what is held)"},
    {"stats", stats, METH_NOARGS, "stats() -> dict: cached_bytes, blocks, hits, misses, limit, min_size"},
    {"clear", clear, METH_NOARGS, "clear(): give every held block back"},
    {"after_fork_in_child", after_fork_in_child, METH_NOARGS, "after_fork_in_child(): a fresh lock"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_arrays", "A caching NumPy data-memory handler (see arrays.c).", 0, methods,
};

PyMODINIT_FUNC PyInit__arrays(void)
{
    PyObject *numpy = PyImport_ImportModule("numpy._core._multiarray_umath");
    if (!numpy) {
        PyErr_Clear();
        numpy = PyImport_ImportModule("numpy.core._multiarray_umath");
        if (!numpy) return NULL;
    }
    PyObject *api = PyObject_GetAttrString(numpy, "_ARRAY_API");
    Py_DECREF(numpy);
    if (!api) return NULL;
    void **table = (void **)PyCapsule_GetPointer(api, NULL);
    Py_DECREF(api); /* the table is static in NumPy's module, which stays loaded */
    if (!table) return NULL;
    if (((unsigned int (*)(void))table[API_FEATURE_VERSION])() < FEATURE_1_22) {
        PyErr_SetString(PyExc_ImportError, "npconv._arrays needs NumPy >= 1.22 (data-memory handlers)");
        return NULL;
    }
    set_handler = (PyObject * (*)(PyObject *)) table[API_SET_HANDLER];
    get_handler = (PyObject * (*)(void)) table[API_GET_HANDLER];
    PyObject *default_capsule = *(PyObject **)table[API_DEFAULT_HANDLER];
    numpy_capsule = default_capsule; /* a static object of NumPy's module, which stays loaded */
    DataMemHandler *numpy_default = (DataMemHandler *)PyCapsule_GetPointer(default_capsule, "mem_handler");
    if (!numpy_default) return NULL;
    if (numpy_default->version != 1) {
        PyErr_SetString(PyExc_ImportError, "npconv._arrays: unknown NumPy data-memory handler version");
        return NULL;
    }
    fallback = numpy_default->allocator;
    lock = PyThread_allocate_lock();
    if (!lock) return PyErr_NoMemory();
    capsule = PyCapsule_New(&handler, "mem_handler", NULL);
    if (!capsule) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(capsule);
    if (PyModule_AddObject(m, "handler", capsule) < 0) {
        Py_DECREF(capsule);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
