/* fastact._fastpath: the common call of softmax, log_softmax and their
 * backwards on the C backend, checked and dispatched in C (issue 19).
 *
 * A call on a tiny array costs its Python-level checks, not its arithmetic:
 * through fastact/_api.py's fast path (attribute checks, the kernel table,
 * cffi's from_buffer) softmax of 10 float32 values took 3.5 us against
 * torch.softmax's 2.1 us here.  This module does the same checks on the
 * NumPy array structs and calls the C kernel through a function pointer of
 * the cffi module (fastact._fastact_c, which holds the only copy of the
 * kernels: fastact/_backends/c_kernels.py hands the addresses over with
 * `configure`).
 *
 * The common call, and only it: x an exact numpy.ndarray, float32 or
 * float64, C-contiguous, not empty, reduced over its last axis (axis an int,
 * -1 or ndim - 1); out None or an exact, writeable, C-contiguous ndarray of
 * x's dtype and shape (backwards: grad like y).  Anything else returns None
 * and the caller takes its Python path, which validates and raises.  The
 * backend: backend="c" (or "auto"), or with backend=None the process default
 * (set_state, kept by fastact._config) unless a use_backend context asks for
 * another (the ContextVar, read here).  The
 * kernel runs without the GIL from RELEASE_MIN elements on (the C backend's
 * calls release it; for a few hundred elements releasing costs more than
 * the kernel).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>
#include <stdint.h>

typedef int (*fwd_fn)(int, int, const void *, const void *, void *, int64_t, int64_t, int);
typedef int (*sbwd_fn)(int, int, const void *, const void *, void *, int64_t, int64_t, int);
typedef int (*lbwd_fn)(int, int, const void *, const void *, const void *, void *, int64_t,
                       int64_t, int);

enum { OP_SOFTMAX, OP_LOG_SOFTMAX, OP_SOFTMAX_BWD, OP_LOG_SOFTMAX_BWD, NOPS };

#define RELEASE_MIN 4096

static struct {
    void *fn[NOPS];
    int configured, enabled, isa, nthreads;
    PyObject *override; /* the ContextVar of fastact._config.use_backend */
    PyObject *loaded, *key; /* fastact._backends._loaded and the C backend's key */
} S;

/* x as the common call's rows (itemsize set), else 0. */
static int rows_of(PyObject *o, int *itemsize, int64_t *n, int64_t *k)
{
    if (Py_TYPE(o) != &PyArray_Type)
        return 0;
    PyArrayObject *a = (PyArrayObject *)o;
    const int t = PyArray_TYPE(a), nd = PyArray_NDIM(a);
    if ((t != NPY_FLOAT32 && t != NPY_FLOAT64) || nd == 0 || !PyArray_IS_C_CONTIGUOUS(a))
        return 0;
    const npy_intp size = PyArray_SIZE(a);
    if (size == 0)
        return 0;
    *itemsize = t == NPY_FLOAT32 ? 4 : 8;
    *k = PyArray_DIM(a, nd - 1);
    *n = size / *k;
    return 1;
}

/* b has a's dtype and shape, and is C-contiguous (writeable if `write`). */
static int like(PyObject *o, PyArrayObject *a, int write)
{
    if (Py_TYPE(o) != &PyArray_Type)
        return 0;
    PyArrayObject *b = (PyArrayObject *)o;
    const int nd = PyArray_NDIM(a);
    if (PyArray_TYPE(b) != PyArray_TYPE(a) || PyArray_NDIM(b) != nd || !PyArray_IS_C_CONTIGUOUS(b)
        || (write && !PyArray_ISWRITEABLE(b)))
        return 0;
    for (int d = 0; d < nd; d++)
        if (PyArray_DIM(b, d) != PyArray_DIM(a, d))
            return 0;
    return 1;
}

/* The call's backend is the C backend: the default, unless a context asks
 * for another ("c" and "auto" are this one: auto picks C when it loads).
 * -1 with an exception set when the ContextVar cannot be read. */
static int backend_is_c(void)
{
    PyObject *v = NULL;
    if (PyContextVar_Get(S.override, NULL, &v) < 0)
        return -1;
    if (v == NULL || v == Py_None) {
        Py_XDECREF(v);
        return S.enabled;
    }
    const int c = PyUnicode_Check(v) && (PyUnicode_CompareWithASCIIString(v, "c") == 0
                                        || PyUnicode_CompareWithASCIIString(v, "auto") == 0);
    Py_DECREF(v);
    return c;
}

/* axis an exact int naming the last of nd axes */
static int last_axis(PyObject *axis, int nd)
{
    if (!PyLong_CheckExact(axis))
        return 0;
    int overflow = 0;
    const long v = PyLong_AsLongAndOverflow(axis, &overflow);
    return !overflow && (v == -1 || v == nd - 1);
}

/* backend= of the call names this backend ("c", or "auto": C when it is
 * loaded); None: the default, unless a context asks for another (-1 with an
 * exception set). */
static int wants_c(PyObject *be)
{
    const int c = be == Py_None ? backend_is_c()
                                : PyUnicode_Check(be) && (PyUnicode_CompareWithASCIIString(be, "c") == 0
                                                          || PyUnicode_CompareWithASCIIString(be, "auto") == 0);
    if (c <= 0)
        return c;
    /* and the registry still has it loaded (tests take it out) */
    if (PyDict_GetItemWithError(S.loaded, S.key) == NULL)
        return PyErr_Occurred() ? -1 : 0;
    return 1;
}

/* call(op, a, b, axis, out, backend): op 0/1 softmax/log_softmax of a (b
 * None), 2/3 the backward with grad a and y b.  The result, or None (not the
 * common call, or another backend: the caller's Python path takes it). */
static PyObject *fp_call(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "fastact._fastpath.call takes 6 arguments");
        return NULL;
    }
    if (!S.configured)
        Py_RETURN_NONE;
    const long op = PyLong_AsLong(args[0]);
    if (op < 0 || op >= NOPS) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "fastact._fastpath.call: bad op");
        return NULL;
    }
    const int bwd = op >= OP_SOFTMAX_BWD;
    PyObject *src = bwd ? args[2] : args[1]; /* the array the result is like: x, or y */
    int itemsize;
    int64_t n, k;
    if (!rows_of(src, &itemsize, &n, &k))
        Py_RETURN_NONE;
    PyArrayObject *a = (PyArrayObject *)src;
    if (!last_axis(args[3], PyArray_NDIM(a)) || (bwd && !like(args[1], a, 0)))
        Py_RETURN_NONE;
    const int isc = wants_c(args[5]);
    if (isc <= 0)
        return isc < 0 ? NULL : (Py_INCREF(Py_None), Py_None);
    PyObject *out = args[4];
    PyArrayObject *o;
    if (out == Py_None) {
        o = (PyArrayObject *)PyArray_NewLikeArray(a, NPY_CORDER, NULL, 0);
        if (!o)
            return NULL;
    } else if (like(out, a, 1)) {
        o = (PyArrayObject *)out;
        Py_INCREF(out);
    } else {
        Py_RETURN_NONE;
    }
    const void *p0 = PyArray_DATA((PyArrayObject *)args[1]);
    const void *p1 = bwd ? PyArray_DATA((PyArrayObject *)args[2]) : NULL;
    void *po = PyArray_DATA(o);
    const int isa = S.isa, nt = S.nthreads;
    void *fn = S.fn[op];
    int rc;
    PyThreadState *ts = n * k >= RELEASE_MIN ? PyEval_SaveThread() : NULL;
    switch (op) {
    case OP_SOFTMAX:
    case OP_LOG_SOFTMAX:
        rc = ((fwd_fn)fn)(itemsize, isa, p0, NULL, po, n, k, nt);
        break;
    case OP_SOFTMAX_BWD:
        rc = ((sbwd_fn)fn)(itemsize, isa, p0, p1, po, n, k, nt);
        break;
    default:
        rc = ((lbwd_fn)fn)(itemsize, isa, p0, p1, NULL, po, n, k, nt);
        break;
    }
    if (ts)
        PyEval_RestoreThread(ts);
    if (rc) {
        Py_DECREF(o);
        PyErr_SetString(PyExc_MemoryError, "fastact: the C kernels could not allocate their scratch");
        return NULL;
    }
    return (PyObject *)o;
}

/* configure(addresses, override, loaded, key): the kernels' addresses
 * (softmax, log_softmax, softmax_backward, log_softmax_backward rows), the
 * ContextVar of use_backend, the backend registry's dict of loaded modules
 * and the C backend's key in it. */
static PyObject *fp_configure(PyObject *self, PyObject *args)
{
    (void)self;
    unsigned long long f[NOPS];
    PyObject *var, *loaded, *key;
    if (!PyArg_ParseTuple(args, "(KKKK)OO!O", &f[0], &f[1], &f[2], &f[3], &var, &PyDict_Type,
                          &loaded, &key))
        return NULL;
    if (!PyContextVar_CheckExact(var)) {
        PyErr_SetString(PyExc_TypeError, "configure: override must be a ContextVar");
        return NULL;
    }
    Py_XSETREF(S.loaded, Py_NewRef(loaded));
    Py_XSETREF(S.key, Py_NewRef(key));
    for (int i = 0; i < NOPS; i++)
        S.fn[i] = (void *)(uintptr_t)f[i];
    Py_XSETREF(S.override, Py_NewRef(var));
    S.configured = 1;
    Py_RETURN_NONE;
}

/* set_state(enabled, isa, nthreads): the C backend is the default backend;
 * the ISA level and thread count its calls use. */
static PyObject *fp_set_state(PyObject *self, PyObject *args)
{
    (void)self;
    int en, isa, nt;
    if (!PyArg_ParseTuple(args, "pii", &en, &isa, &nt))
        return NULL;
    S.enabled = en;
    S.isa = isa;
    S.nthreads = nt < 1 ? 1 : nt;
    Py_RETURN_NONE;
}

/* state() -> (configured, enabled, isa, nthreads), for tests */
static PyObject *fp_state(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return Py_BuildValue("(iiii)", S.configured, S.enabled, S.isa, S.nthreads);
}

static PyMethodDef methods[] = {
    {"call", (PyCFunction)(void (*)(void))fp_call, METH_FASTCALL,
     "call(op, a, b, axis, out, backend): the common call's result, or None"},
    {"configure", fp_configure, METH_VARARGS, "configure((addresses), override_var, loaded, key)"},
    {"set_state", fp_set_state, METH_VARARGS, "set_state(enabled, isa, nthreads)"},
    {"state", fp_state, METH_NOARGS, "(configured, enabled, isa, nthreads)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastpath",
    "The C backend's common call of softmax, log_softmax and their backwards (csrc/fastpath.c).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastpath(void)
{
    import_array();
    return PyModule_Create(&module);
}
