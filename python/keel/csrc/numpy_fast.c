/* The NumPy API's compiled entry: keel._numpy_fast.layer_norm(...) and friends take the Python
 * arguments as they come, read the arrays through the buffer protocol, make the outputs with
 * numpy.empty / numpy.zeros, and call keel, so that a call costs about a microsecond of
 * Python-facing work instead of the ctypes path's four to nine.
 *
 * Each function handles the common case only and returns NotImplemented for anything else: an
 * array that is not a plain numpy.ndarray of float32 or float16 (bfloat16 arrays have no buffer
 * format), rows that are not evenly strided or aligned, parameters or statistics that are not
 * dense float32 of the right size, arguments of other types. keel/functional.py then takes its
 * ctypes path, which copies, converts or raises the documented error. keel's own errors (eps < 0,
 * ...) are raised by keel._lib.raise_status with keel's message, as on the ctypes path.
 *
 * The library is not linked: bind() hands over the entry points of the libkeel that `import
 * keel` loaded, and every call runs on keel's module context (its `ptr`, under its `lock`, with
 * the GIL released while keel runs), as the ctypes path does. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#include "keel.h"

enum { MAX_DIMS = 32 };

static PyObject *new_ref(PyObject *o)
{
    Py_INCREF(o);
    return o;
}

typedef keel_status (*ln_fwd_fn)(keel_ctx *, size_t, size_t, keel_tensor, keel_tensor, const float *,
                                 const float *, float, float *, float *, unsigned);
typedef keel_status (*ln_bwd_fn)(keel_ctx *, size_t, size_t, keel_tensor, keel_tensor, const float *,
                                 const float *, const float *, float, keel_tensor, float *, float *, unsigned);
typedef keel_status (*rms_fwd_fn)(keel_ctx *, size_t, size_t, keel_tensor, keel_tensor, const float *, float,
                                  float *, unsigned);
typedef keel_status (*rms_bwd_fn)(keel_ctx *, size_t, size_t, keel_tensor, keel_tensor, const float *,
                                  const float *, float, keel_tensor, float *, unsigned);

static struct {
    ln_fwd_fn ln_fwd;
    ln_bwd_fn ln_bwd;
    rms_fwd_fn rms_fwd;
    rms_bwd_fn rms_bwd;
} api;

/* numpy.ndarray, numpy.empty, numpy.zeros, numpy.float32 (a dtype), keel._lib.raise_status */
static PyObject *ndarray_type, *np_empty, *np_zeros, *f32_dtype, *raise_status;
static PyObject *s_ptr, *s_lock, *s_acquire, *s_release, *s_shape, *s_dtype;

static const double FLOAT32_EPS = 1.1920928955078125e-07, FLOAT16_EPS = 0.0009765625;
static const unsigned GAMMA_PLUS_ONE = 1u << 2;

/* ---- arguments ----------------------------------------------------------------------------- */

/* An array argument: its buffer (released by release()), keel dtype and shape. */
typedef struct {
    Py_buffer view;
    int held;
    keel_dtype dtype;
} arr;

static void release(arr *a)
{
    if (a->held)
        PyBuffer_Release(&a->view);
    a->held = 0;
}

/* 1 when o is a plain numpy.ndarray of float32 or float16 (dtype set), 0 otherwise (no error). */
static int get_array(PyObject *o, arr *a, int want_f32)
{
    a->held = 0;
    if ((PyObject *)Py_TYPE(o) != ndarray_type)
        return 0;
    if (PyObject_GetBuffer(o, &a->view, PyBUF_RECORDS_RO) != 0) {
        PyErr_Clear();
        return 0;
    }
    a->held = 1;
    const char *f = a->view.format;
    if (f[0] == 'f' && f[1] == 0)
        a->dtype = KEEL_F32;
    else if (f[0] == 'e' && f[1] == 0 && !want_f32)
        a->dtype = KEEL_F16;
    else {
        release(a);
        return 0;
    }
    return 1;
}

/* normalized_shape: an int or a tuple of ints (>= 0); 1 with dims filled, 0 otherwise. */
static int get_dims(PyObject *o, Py_ssize_t *dims, int *k)
{
    if (PyLong_CheckExact(o)) {
        dims[0] = PyLong_AsSsize_t(o);
        *k = 1;
        if (dims[0] < 0 || PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        return 1;
    }
    if (!PyTuple_CheckExact(o) || PyTuple_GET_SIZE(o) < 1 || PyTuple_GET_SIZE(o) > MAX_DIMS)
        return 0;
    *k = (int)PyTuple_GET_SIZE(o);
    for (int i = 0; i < *k; i++) {
        PyObject *d = PyTuple_GET_ITEM(o, i);
        if (!PyLong_CheckExact(d))
            return 0;
        dims[i] = PyLong_AsSsize_t(d);
        if (dims[i] < 0 || PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
    }
    return 1;
}

/* x's rows: rows, dim and the row stride (elements) of an array whose trailing k dims are dims,
 * contiguous, and whose rows are evenly strided and aligned; 0 when it is not so. */
static int get_rows(const arr *a, const Py_ssize_t *dims, int k, size_t *rows, size_t *dim, size_t *stride)
{
    const Py_buffer *v = &a->view;
    if (v->ndim < k || v->itemsize <= 0 || (uintptr_t)v->buf % (uintptr_t)v->itemsize)
        return 0;
    Py_ssize_t expect = v->itemsize;
    size_t d = 1;
    for (int i = 0; i < k; i++) {
        int j = v->ndim - 1 - i;
        if (v->shape[j] != dims[k - 1 - i])
            return 0;
        if (v->shape[j] != 1 && v->strides[j] != expect)
            return 0;
        expect *= v->shape[j];
        d *= (size_t)v->shape[j];
    }
    size_t r = 1;
    Py_ssize_t step = 0; /* 0: no leading dim longer than 1 yet */
    for (int j = v->ndim - k - 1; j >= 0; j--) {
        r *= (size_t)v->shape[j];
        if (v->shape[j] == 1)
            continue;
        if (step == 0) {
            step = v->strides[j];
            if (step <= 0) /* reversed or repeated rows: the ctypes path copies */
                return 0;
            expect = step * v->shape[j];
        } else if (v->strides[j] != expect) {
            return 0;
        } else {
            expect *= v->shape[j];
        }
    }
    if (step == 0)
        step = (Py_ssize_t)d * v->itemsize;
    if (step % v->itemsize || (size_t)(step / v->itemsize) < d)
        return 0;
    if (r == 0)  /* no rows: the ctypes path (it hands keel a stand-in address) */
        return 0;
    *rows = r;
    *dim = d;
    *stride = (size_t)(step / v->itemsize);
    return 1;
}

/* An optional float32 vector or statistic of n values, dense: NULL pointer for None; 0 when it
 * is something else. */
static int get_floats(PyObject *o, arr *a, size_t n, const float **p)
{
    a->held = 0;
    *p = NULL;
    if (o == Py_None)
        return 1;
    if (!get_array(o, a, 1))
        return 0;
    if (!PyBuffer_IsContiguous(&a->view, 'C') || (size_t)(a->view.len / 4) != n || (uintptr_t)a->view.buf % 4) {
        release(a);
        return 0;
    }
    *p = a->view.buf;
    return 1;
}

/* A parameter (weight, bias): float32 of exactly normalized_shape, or None. */
static int get_param(PyObject *o, arr *a, const Py_ssize_t *dims, int k, size_t dim, const float **p)
{
    if (!get_floats(o, a, dim, p))
        return 0;
    if (a->held && a->view.ndim != k) {
        release(a);
        return 0;
    }
    for (int i = 0; a->held && i < k; i++)
        if (a->view.shape[i] != dims[i]) {
            release(a);
            return 0;
        }
    return 1;
}

static int get_double(PyObject *o, double *out)
{
    if (!PyFloat_CheckExact(o) && !PyLong_CheckExact(o))
        return 0;
    *out = PyFloat_AsDouble(o);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return 1;
}

/* ---- outputs ------------------------------------------------------------------------------- */

/* A new array from numpy.empty or numpy.zeros (make) of `shape` and dtype, and its data. */
static PyObject *new_array(PyObject *make, PyObject *shape, PyObject *dtype, void **data)
{
    PyObject *a = PyObject_CallFunctionObjArgs(make, shape, dtype, NULL);
    if (!a)
        return NULL;
    Py_buffer v;
    if (PyObject_GetBuffer(a, &v, PyBUF_WRITABLE) != 0) {
        Py_DECREF(a);
        return NULL;
    }
    *data = v.buf;
    PyBuffer_Release(&v);
    return a;
}

static PyObject *dims_tuple(const Py_ssize_t *dims, int k)
{
    PyObject *t = PyTuple_New(k);
    for (int i = 0; t && i < k; i++) {
        PyObject *d = PyLong_FromSsize_t(dims[i]);
        if (!d) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, d);
    }
    return t;
}

/* ---- the call ------------------------------------------------------------------------------- */

/* keel_ctx * of keel's module context and its lock (a new reference), or NULL (error set). */
static keel_ctx *context(PyObject *ctx, PyObject **lock)
{
    PyObject *ptr = PyObject_GetAttr(ctx, s_ptr);
    if (!ptr)
        return NULL;
    void *p = ptr == Py_None ? NULL : PyLong_AsVoidPtr(ptr);
    Py_DECREF(ptr);
    if (!p) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "keel: the module context is closed");
        return NULL;
    }
    *lock = PyObject_GetAttr(ctx, s_lock);
    return *lock ? (keel_ctx *)p : NULL;
}

static int lock_call(PyObject *lock, PyObject *name)
{
    PyObject *r = PyObject_CallMethodObjArgs(lock, name, NULL);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* After a keel call: 0 on KEEL_OK, else keel's error raised (-1). */
static int check(keel_status st)
{
    if (st == KEEL_OK)
        return 0;
    PyObject *r = PyObject_CallFunction(raise_status, "i", (int)st);
    Py_XDECREF(r);
    if (!PyErr_Occurred())
        PyErr_Format(PyExc_RuntimeError, "keel: status %d", (int)st);
    return -1;
}

/* Runs the call held in `job` under the context's lock with the GIL released. */
typedef struct {
    int op; /* 0 ln fwd, 1 ln bwd, 2 rms fwd, 3 rms bwd */
    size_t rows, dim;
    keel_tensor a, b, out;
    const float *p0, *p1, *p2, *p3;
    float *o0, *o1;
    float eps;
    unsigned flags;
} job;

static int run(PyObject *ctx_obj, job *j)
{
    PyObject *lock = NULL;
    keel_ctx *ctx = context(ctx_obj, &lock);
    if (!ctx)
        return -1;
    if (lock_call(lock, s_acquire) != 0) {
        Py_DECREF(lock);
        return -1;
    }
    keel_status st = KEEL_OK;
    Py_BEGIN_ALLOW_THREADS
    switch (j->op) {
    case 0:
        st = api.ln_fwd(ctx, j->rows, j->dim, j->a, j->out, j->p0, j->p1, j->eps, j->o0, j->o1, j->flags);
        break;
    case 1:
        st = api.ln_bwd(ctx, j->rows, j->dim, j->a, j->b, j->p2, j->p3, j->p0, j->eps, j->out, j->o0, j->o1,
                        j->flags);
        break;
    case 2:
        st = api.rms_fwd(ctx, j->rows, j->dim, j->a, j->out, j->p0, j->eps, j->o0, j->flags);
        break;
    default:
        st = api.rms_bwd(ctx, j->rows, j->dim, j->a, j->b, j->p3, j->p0, j->eps, j->out, j->o0, j->flags);
        break;
    }
    Py_END_ALLOW_THREADS
    int unlocked = lock_call(lock, s_release);
    Py_DECREF(lock);
    if (unlocked != 0)
        return -1;
    return check(st);
}

static keel_tensor rows_at(void *data, keel_dtype dtype, size_t stride)
{
    keel_tensor t;
    t.data = data;
    t.dtype = dtype;
    t.stride = stride;
    return t;
}

static keel_tensor tensor_of(const arr *a, size_t stride)
{
    return rows_at(a->view.buf, a->dtype, stride);
}

static void release_all(arr *arrays, int n)
{
    for (int i = 0; i < n; i++)
        release(&arrays[i]);
}

static PyObject *not_implemented(arr *arrays, int n)
{
    release_all(arrays, n);
    Py_RETURN_NOTIMPLEMENTED;
}

/* x's shape and dtype objects (new references), for outputs like x. */
static int like(PyObject *x, PyObject **shape, PyObject **dtype)
{
    *shape = PyObject_GetAttr(x, s_shape);
    *dtype = *shape ? PyObject_GetAttr(x, s_dtype) : NULL;
    if (!*dtype) {
        Py_XDECREF(*shape);
        return -1;
    }
    return 0;
}

/* ---- forwards ------------------------------------------------------------------------------- */

/* norm_forward(rms, ctx, x, normalized_shape, weight, bias, eps, return_stats, unit_offset):
 * layer_norm's (y or (y, mean, rstd)) or rms_norm's (y or (y, rstd)). */
static PyObject *norm_forward(int rms, PyObject *const *args)
{
    PyObject *ctx = args[0], *x = args[1];
    arr a[3] = {{.held = 0}, {.held = 0}, {.held = 0}};
    Py_ssize_t dims[MAX_DIMS];
    int k;
    size_t rows, dim, stride;
    const float *w, *b = NULL;
    double eps;
    int stats = PyObject_IsTrue(args[6]), unit_offset = PyObject_IsTrue(args[7]);
    if (stats < 0 || unit_offset < 0)
        return NULL;
    if (!get_array(x, &a[0], 0) || !get_dims(args[2], dims, &k) || !get_rows(&a[0], dims, k, &rows, &dim, &stride) ||
        !get_param(args[3], &a[1], dims, k, dim, &w) || (!rms && !get_param(args[4], &a[2], dims, k, dim, &b)))
        return not_implemented(a, 3);
    if (args[5] == Py_None && rms)
        eps = a[0].dtype == KEEL_F16 ? FLOAT16_EPS : FLOAT32_EPS;
    else if (!get_double(args[5], &eps))
        return not_implemented(a, 3);
    PyObject *shape, *dtype, *y = NULL, *mean = NULL, *rstd = NULL, *lead = NULL;
    if (like(x, &shape, &dtype) != 0) {
        release_all(a, 3);
        return NULL;
    }
    void *py, *pm = NULL, *pr = NULL;
    y = new_array(np_empty, shape, dtype, &py);
    if (y && stats) {
        lead = PyTuple_GetSlice(shape, 0, PyTuple_GET_SIZE(shape) - k);
        rstd = lead ? new_array(np_empty, lead, f32_dtype, &pr) : NULL;
        if (rstd && !rms)
            mean = new_array(np_empty, lead, f32_dtype, &pm);
    }
    PyObject *result = NULL;
    if (y && (!stats || (rstd && (rms || mean)))) {
        job j = {.op = rms ? 2 : 0, .rows = rows, .dim = dim, .a = tensor_of(&a[0], stride),
                 .out = rows_at(py, a[0].dtype, dim), .p0 = w, .p1 = b, .o0 = rms ? pr : pm, .o1 = pr,
                 .eps = (float)eps, .flags = rms && unit_offset ? GAMMA_PLUS_ONE : 0};
        if (run(ctx, &j) == 0) {
            if (!stats)
                result = new_ref(y);
            else
                result = rms ? PyTuple_Pack(2, y, rstd) : PyTuple_Pack(3, y, mean, rstd);
        }
    }
    for (int i = 0; i < 3; i++)
        release(&a[i]);
    Py_XDECREF(y);
    Py_XDECREF(mean);
    Py_XDECREF(rstd);
    Py_XDECREF(lead);
    Py_DECREF(shape);
    Py_DECREF(dtype);
    return result;
}

/* layer_norm(ctx, x, normalized_shape, weight, bias, eps, return_stats) */
static PyObject *layer_norm(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 7)
        Py_RETURN_NOTIMPLEMENTED;
    PyObject *full[8] = {args[0], args[1], args[2], args[3], args[4], args[5], args[6], Py_False};
    return norm_forward(0, full);
}

/* rms_norm(ctx, x, normalized_shape, weight, eps, return_stats, add_unit_offset) */
static PyObject *rms_norm(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 7)
        Py_RETURN_NOTIMPLEMENTED;
    PyObject *full[8] = {args[0], args[1], args[2], args[3], Py_None, args[4], args[5], args[6]};
    return norm_forward(1, full);
}

/* ---- backwards ------------------------------------------------------------------------------ */

/* norm_backward(rms, [ctx, dy, x, normalized_shape, weight, mean, rstd, eps, need_dx, need_dweight,
 * need_dbias, unit_offset]): layer_norm_backward's (dx, dweight, dbias) or rms_norm_backward's
 * (dx, dweight), None for those not asked for. */
static PyObject *norm_backward(int rms, PyObject *const *args)
{
    PyObject *ctx = args[0], *dy = args[1], *x = args[2];
    arr a[5] = {{.held = 0}, {.held = 0}, {.held = 0}, {.held = 0}, {.held = 0}};
    Py_ssize_t dims[MAX_DIMS];
    int k;
    size_t rows, dim, stride, dy_rows, dy_dim, dy_stride;
    const float *w, *mean = NULL, *rstd;
    double eps;
    int need[3] = {PyObject_IsTrue(args[8]), PyObject_IsTrue(args[9]), rms ? 0 : PyObject_IsTrue(args[10])};
    int unit_offset = PyObject_IsTrue(args[11]);
    if (need[0] < 0 || need[1] < 0 || need[2] < 0 || unit_offset < 0)
        return NULL;
    if (!get_array(x, &a[0], 0) || !get_dims(args[3], dims, &k) || !get_rows(&a[0], dims, k, &rows, &dim, &stride) ||
        !get_array(dy, &a[1], 0) || !get_rows(&a[1], dims, k, &dy_rows, &dy_dim, &dy_stride) ||
        a[1].view.ndim != a[0].view.ndim || memcmp(a[1].view.shape, a[0].view.shape, sizeof(Py_ssize_t) * a[0].view.ndim) ||
        !get_param(args[4], &a[2], dims, k, dim, &w) || (!rms && !get_floats(args[5], &a[3], rows, &mean)) ||
        !get_floats(args[6], &a[4], rows, &rstd) || (!rms && (mean == NULL) != (rstd == NULL)))
        return not_implemented(a, 5);
    if (args[7] == Py_None && rms)
        eps = a[0].dtype == KEEL_F16 ? FLOAT16_EPS : FLOAT32_EPS;
    else if (!get_double(args[7], &eps))
        return not_implemented(a, 5);
    PyObject *shape, *dtype, *out[3] = {NULL, NULL, NULL}, *pdims = NULL;
    if (like(x, &shape, &dtype) != 0) {
        release_all(a, 5);
        return NULL;
    }
    void *p[3] = {NULL, NULL, NULL};
    int ok = 1;
    if (need[0])
        ok = (out[0] = new_array(np_empty, shape, dtype, &p[0])) != NULL;
    if (ok && (need[1] || need[2]))
        ok = (pdims = dims_tuple(dims, k)) != NULL;
    for (int i = 1; ok && i < 3; i++)
        if (need[i])
            ok = (out[i] = new_array(np_zeros, pdims, f32_dtype, &p[i])) != NULL;
    PyObject *result = NULL;
    if (ok) {
        job j = {.op = rms ? 3 : 1, .rows = rows, .dim = dim, .a = tensor_of(&a[1], dy_stride),
                 .b = tensor_of(&a[0], stride), .out = need[0] ? rows_at(p[0], a[0].dtype, dim) : keel_none(),
                 .p0 = w, .p2 = mean, .p3 = rstd, .o0 = p[1], .o1 = p[2], .eps = (float)eps,
                 .flags = rms && unit_offset ? GAMMA_PLUS_ONE : 0};
        if (run(ctx, &j) == 0) {
            for (int i = 0; i < 3; i++)
                if (!out[i])
                    out[i] = new_ref(Py_None);
            result = rms ? PyTuple_Pack(2, out[0], out[1]) : PyTuple_Pack(3, out[0], out[1], out[2]);
        }
    }
    for (int i = 0; i < 5; i++)
        release(&a[i]);
    for (int i = 0; i < 3; i++)
        Py_XDECREF(out[i]);
    Py_XDECREF(pdims);
    Py_DECREF(shape);
    Py_DECREF(dtype);
    return result;
}

/* layer_norm_backward(ctx, dy, x, normalized_shape, weight, mean, rstd, eps, need_dx,
 * need_dweight, need_dbias) */
static PyObject *layer_norm_backward(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 11)
        Py_RETURN_NOTIMPLEMENTED;
    PyObject *full[12] = {args[0], args[1], args[2], args[3], args[4], args[5],
                          args[6], args[7], args[8], args[9], args[10], Py_False};
    return norm_backward(0, full);
}

/* rms_norm_backward(ctx, dy, x, normalized_shape, weight, rstd, eps, need_dx, need_dweight,
 * add_unit_offset) */
static PyObject *rms_norm_backward(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 10)
        Py_RETURN_NOTIMPLEMENTED;
    PyObject *full[12] = {args[0], args[1], args[2], args[3], args[4], Py_None,
                          args[5], args[6], args[7], args[8], Py_False, args[9]};
    return norm_backward(1, full);
}

/* ---- binding -------------------------------------------------------------------------------- */

/* bind(ndarray, empty, zeros, float32, raise_status, ln_fwd, ln_bwd, rms_fwd, rms_bwd): the last
 * four are the addresses (ints) of keel_layernorm_fwd, keel_layernorm_bwd, keel_rmsnorm_fwd,
 * keel_rmsnorm_bwd in the libkeel keel loaded. */
static PyObject *bind(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "bind takes 9 arguments");
        return NULL;
    }
    void *fns[4];
    for (int i = 0; i < 4; i++) {
        fns[i] = PyLong_AsVoidPtr(args[5 + i]);
        if (!fns[i])
            return PyErr_Occurred() ? NULL : (PyErr_SetString(PyExc_ValueError, "a NULL entry point"), NULL);
    }
    memcpy(&api.ln_fwd, &fns[0], sizeof fns[0]);
    memcpy(&api.ln_bwd, &fns[1], sizeof fns[1]);
    memcpy(&api.rms_fwd, &fns[2], sizeof fns[2]);
    memcpy(&api.rms_bwd, &fns[3], sizeof fns[3]);
    PyObject **keep[5] = {&ndarray_type, &np_empty, &np_zeros, &f32_dtype, &raise_status};
    for (int i = 0; i < 5; i++) {
        PyObject *old = *keep[i];
        *keep[i] = new_ref(args[i]);
        Py_XDECREF(old);
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"bind", (PyCFunction)(void (*)(void))bind, METH_FASTCALL, "bind the entry points (keel/_numpy_ext.py)"},
    {"layer_norm", (PyCFunction)(void (*)(void))layer_norm, METH_FASTCALL,
     "layer_norm(ctx, x, normalized_shape, weight, bias, eps, return_stats) -> y or (y, mean, rstd), or "
     "NotImplemented"},
    {"rms_norm", (PyCFunction)(void (*)(void))rms_norm, METH_FASTCALL,
     "rms_norm(ctx, x, normalized_shape, weight, eps, return_stats, add_unit_offset) -> y or (y, rstd), or "
     "NotImplemented"},
    {"layer_norm_backward", (PyCFunction)(void (*)(void))layer_norm_backward, METH_FASTCALL,
     "layer_norm_backward(ctx, dy, x, normalized_shape, weight, mean, rstd, eps, need_dx, need_dweight, "
     "need_dbias) -> (dx, dweight, dbias), or NotImplemented"},
    {"rms_norm_backward", (PyCFunction)(void (*)(void))rms_norm_backward, METH_FASTCALL,
     "rms_norm_backward(ctx, dy, x, normalized_shape, weight, rstd, eps, need_dx, need_dweight, "
     "add_unit_offset) -> (dx, dweight), or NotImplemented"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_numpy_fast",
                                    "The NumPy API's compiled entry (keel/functional.py)", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__numpy_fast(void)
{
    s_ptr = PyUnicode_InternFromString("ptr");
    s_lock = PyUnicode_InternFromString("lock");
    s_acquire = PyUnicode_InternFromString("acquire");
    s_release = PyUnicode_InternFromString("release");
    s_shape = PyUnicode_InternFromString("shape");
    s_dtype = PyUnicode_InternFromString("dtype");
    if (!s_ptr || !s_lock || !s_acquire || !s_release || !s_shape || !s_dtype)
        return NULL;
    return PyModule_Create(&module);
}
