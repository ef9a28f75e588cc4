/*
 * speedups.c - uringloop._speedups: the per-iteration mechanics in C.
 *
 * The cffi module (uringloop._ring_cffi) is the ring's interface; this one is
 * a plain CPython extension for the few steps every loop iteration and every
 * message take, where a cffi crossing, a struct unpack or a Python frame per
 * completion cost more than the work itself (docs/design.md, "The C
 * accelerator").  Policy stays in Python: these functions move bytes and call
 * back, they decide nothing.
 *
 *   run(ring, ns, must_enter, bufring, recycle) -> bytes | None | int
 *       Return the buffer ids in ``recycle`` (a list of ints) to ``bufring``,
 *       submit, wait up to ns (-1: forever), harvest.  The GIL is released
 *       only when the call may sleep (ns != 0).  Returns the harvested CQEs as
 *       bytes (16 per CQE: u64 user_data, i32 res, u32 flags), None when there
 *       were none, or a negative errno.
 *   dispatch(ops, undispatched, data, report, reschedule) -> None
 *       Run the completions of one run(): see Proactor.dispatch.
 *   send(fd, data) -> int
 *       One non-blocking send(2) of a bytes-like object: bytes sent, 0 if the
 *       socket buffer is full; OSError otherwise (EINTR retried, PEP 475).
 *
 * ``ring`` and ``bufring`` are addresses (ints) of the cffi module's
 * ul_ring / ul_bufring (0: none); this module links the same ring.c, which
 * keeps no state of its own outside those structs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include "ul_ring.h"

#define UL_CQE_F_MORE (1U << 1)

#if PY_VERSION_HEX >= 0x030C0000
#define PyErr_GetRaisedException_compat PyErr_GetRaisedException
#define PyErr_SetRaisedException_compat PyErr_SetRaisedException
#else
static PyObject *
PyErr_GetRaisedException_compat(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}

static void
PyErr_SetRaisedException_compat(PyObject *exc)
{
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc,
                  PyException_GetTraceback(exc));
}
#endif

static int
PyLong_AsInt_compat(PyObject *obj)
{
    long v = PyLong_AsLong(obj);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v > INT_MAX || v < INT_MIN) {
        PyErr_SetString(PyExc_OverflowError, "fd out of range");
        return -1;
    }
    return (int)v;
}
#define RECYCLE_MAX 1024

static PyObject *str_callback;   /* interned attribute names */
static PyObject *str_multishot;
static PyObject *str_complete;

static int
as_pointer(PyObject *obj, void **out)
{
    if (obj == Py_None) {
        *out = NULL;
        return 0;
    }
    void *p = PyLong_AsVoidPtr(obj);
    if (p == NULL && PyErr_Occurred())
        return -1;
    *out = p;
    return 0;
}

static PyObject *
sp_run(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "run() takes 5 arguments");
        return NULL;
    }
    void *ring_p, *bufring_p;
    if (as_pointer(args[0], &ring_p) < 0 || as_pointer(args[3], &bufring_p) < 0)
        return NULL;
    if (ring_p == NULL) {
        PyErr_SetString(PyExc_ValueError, "run(): no ring");
        return NULL;
    }
    long long ns = PyLong_AsLongLong(args[1]);
    if (ns == -1 && PyErr_Occurred())
        return NULL;
    int must_enter = PyObject_IsTrue(args[2]);
    if (must_enter < 0)
        return NULL;
    PyObject *recycle = args[4];
    if (!PyList_CheckExact(recycle)) {
        PyErr_SetString(PyExc_TypeError, "run(): recycle must be a list");
        return NULL;
    }
    ul_ring *r = ring_p;
    ul_bufring *br = bufring_p;

    /* Buffer ids to hand back, in chunks of RECYCLE_MAX (the last chunk goes
     * with the submission itself). */
    uint16_t bids[RECYCLE_MAX];
    unsigned nb = 0;
    Py_ssize_t total = PyList_GET_SIZE(recycle);
    if (total && br == NULL) {
        PyErr_SetString(PyExc_ValueError, "run(): buffers to recycle but no buffer ring");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < total; i++) {
        long bid = PyLong_AsLong(PyList_GET_ITEM(recycle, i));
        if (bid == -1 && PyErr_Occurred())
            return NULL;
        if (bid < 0 || bid > 0xFFFF) {
            PyErr_SetString(PyExc_ValueError, "run(): buffer id out of range");
            return NULL;
        }
        if (nb == RECYCLE_MAX) {
            ul_bufring_recycle_many(br, bids, nb);
            nb = 0;
        }
        bids[nb++] = (uint16_t)bid;
    }
    if (total && PyList_SetSlice(recycle, 0, total, NULL) < 0)
        return NULL;

    int n;
    if (ns == 0) {
        n = ul_run_recycle(r, 0, must_enter, br, bids, nb);
    } else {
        Py_BEGIN_ALLOW_THREADS
        n = ul_run_recycle(r, (int64_t)ns, must_enter, br, bids, nb);
        Py_END_ALLOW_THREADS
    }
    if (n < 0)
        return PyLong_FromLong(n);
    if (n == 0)
        Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)ul_ring_cqes(r),
                                     (Py_ssize_t)n * (Py_ssize_t)sizeof(ul_cqe));
}

/* Remove the object ``item`` (by identity) from list ``lst``; absent is fine. */
static int
list_remove_identity(PyObject *lst, PyObject *item)
{
    Py_ssize_t n = PyList_GET_SIZE(lst);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyList_GET_ITEM(lst, i) == item)
            return PyList_SetSlice(lst, i, i + 1, NULL);
    }
    return 0;
}

static PyObject *
sp_dispatch(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "dispatch() takes 5 arguments");
        return NULL;
    }
    PyObject *ops = args[0], *undispatched = args[1], *data = args[2];
    PyObject *report = args[3], *reschedule = args[4];
    if (!PyDict_CheckExact(ops) || !PyList_CheckExact(undispatched)
            || !PyBytes_CheckExact(data)) {
        PyErr_SetString(PyExc_TypeError, "dispatch(): bad argument types");
        return NULL;
    }
    if (list_remove_identity(undispatched, data) < 0)
        return NULL;
    Py_ssize_t size = PyBytes_GET_SIZE(data);
    Py_ssize_t count = size / (Py_ssize_t)sizeof(ul_cqe);
    /* ``data`` is immutable and we hold a reference through args: reading it
     * while callbacks run is safe. */
    const char *base = PyBytes_AS_STRING(data);

    for (Py_ssize_t i = 0; i < count; i++) {
        ul_cqe c;
        memcpy(&c, base + i * (Py_ssize_t)sizeof(ul_cqe), sizeof(c));
        PyObject *key = PyLong_FromUnsignedLongLong(c.user_data);
        if (key == NULL)
            return NULL;
        PyObject *op = PyDict_GetItemWithError(ops, key);   /* borrowed */
        if (op == NULL) {
            Py_DECREF(key);
            if (PyErr_Occurred())
                return NULL;
            continue;   /* UD_IGNORE, or a late CQE of an op already final */
        }
        Py_INCREF(op);
        int final = !(c.flags & UL_CQE_F_MORE);
        if (!final) {
            PyObject *ms = PyObject_GetAttr(op, str_multishot);
            if (ms == NULL)
                goto fail_op;
            final = !PyObject_IsTrue(ms);
            Py_DECREF(ms);
        }
        if (final && PyDict_DelItem(ops, key) < 0)
            goto fail_op;
        Py_CLEAR(key);

        PyObject *res = PyLong_FromLong(c.res);
        PyObject *flags = PyLong_FromUnsignedLong(c.flags);
        PyObject *ret = NULL;
        if (res != NULL && flags != NULL) {
            PyObject *callback = PyObject_GetAttr(op, str_callback);
            if (callback == Py_None) {
                PyObject *margs[3] = {op, res, flags};
                ret = PyObject_VectorcallMethod(str_complete, margs,
                                                3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
            } else if (callback != NULL) {
                PyObject *cargs[3] = {NULL, res, flags};
                ret = PyObject_Vectorcall(callback, cargs + 1,
                                          2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
            }
            Py_XDECREF(callback);
        }
        Py_XDECREF(res);
        Py_XDECREF(flags);
        Py_DECREF(op);
        if (ret != NULL) {
            Py_DECREF(ret);
            continue;
        }
        if (PyErr_ExceptionMatches(PyExc_SystemExit)
                || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
            /* Not lost: the rest of the batch runs on the next iteration. */
            Py_ssize_t off = (i + 1) * (Py_ssize_t)sizeof(ul_cqe);
            if (off < size) {
                PyObject *exc = PyErr_GetRaisedException_compat();
                PyObject *rest = PyBytes_FromStringAndSize(base + off, size - off);
                if (rest == NULL) {
                    Py_DECREF(exc);
                    return NULL;
                }
                if (PyList_Append(undispatched, rest) < 0) {
                    Py_DECREF(rest);
                    Py_DECREF(exc);
                    return NULL;
                }
                PyObject *r2 = PyObject_CallOneArg(reschedule, rest);
                Py_DECREF(rest);
                if (r2 == NULL) {
                    Py_DECREF(exc);
                    return NULL;
                }
                Py_DECREF(r2);
                PyErr_SetRaisedException_compat(exc);
            }
            return NULL;
        }
        /* Ops handle their own errors; this is a bug, but the rest of the
         * batch must still be dispatched. */
        PyObject *exc = PyErr_GetRaisedException_compat();
        PyObject *r2 = PyObject_CallOneArg(report, exc);
        Py_DECREF(exc);
        if (r2 == NULL)
            return NULL;
        Py_DECREF(r2);
        continue;
    fail_op:
        Py_XDECREF(key);
        Py_DECREF(op);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
sp_send(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "send() takes 2 arguments");
        return NULL;
    }
    int fd = PyLong_AsInt_compat(args[0]);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    ssize_t n;
    for (;;) {
        n = send(fd, view.buf, (size_t)view.len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n >= 0 || errno != EINTR)
            break;
        if (PyErr_CheckSignals() < 0) {
            PyBuffer_Release(&view);
            return NULL;
        }
    }
    PyBuffer_Release(&view);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return PyLong_FromLong(0);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromSsize_t(n);
}

static PyMethodDef sp_methods[] = {
    {"run", (PyCFunction)(void (*)(void))sp_run, METH_FASTCALL,
     "run(ring, ns, must_enter, bufring, recycle) -> bytes | None | int"},
    {"dispatch", (PyCFunction)(void (*)(void))sp_dispatch, METH_FASTCALL,
     "dispatch(ops, undispatched, data, report, reschedule)"},
    {"send", (PyCFunction)(void (*)(void))sp_send, METH_FASTCALL,
     "send(fd, data) -> bytes sent (0: would block)"},
    {NULL, NULL, 0, NULL},
};

static int
sp_exec(PyObject *module)
{
    str_callback = PyUnicode_InternFromString("callback");
    str_multishot = PyUnicode_InternFromString("multishot");
    str_complete = PyUnicode_InternFromString("complete");
    if (str_callback == NULL || str_multishot == NULL || str_complete == NULL)
        return -1;
    if (PyModule_AddIntConstant(module, "CQE_SIZE", (long)sizeof(ul_cqe)) < 0)
        return -1;
    return 0;
}

static PyModuleDef_Slot sp_slots[] = {
    {Py_mod_exec, (void *)sp_exec},
    {0, NULL},
};

static struct PyModuleDef sp_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "uringloop._speedups",
    .m_doc = "The per-iteration mechanics of uringloop's proactor, in C.",
    .m_size = 0,
    .m_methods = sp_methods,
    .m_slots = sp_slots,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&sp_module);
}
