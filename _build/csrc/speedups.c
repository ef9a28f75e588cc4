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

#include <structmember.h>

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

/* ------------------------------------------------------------------------
 * Slot access.  The hot attributes of the objects this module reads on every
 * message (the stream transport's state, an op's callback, the proactor's
 * batch counter) are __slots__ of their Python classes: CPython keeps them at
 * fixed offsets in the object, described by a member descriptor in the class.
 * A layout maps attribute names to those offsets once per class; reading one
 * is then a load, where PyObject_GetAttr costs a type lookup and a dict
 * probe (~200 instructions each, measured).  A name that is not a plain
 * object slot in some class (a subclass made it a property, say), or a slot
 * not yet set, goes through PyObject_GetAttr as before, so the result and
 * any error are exactly the attribute access's.
 */
#define LAYOUT_MAX_NAMES 16
#define LAYOUT_WAYS 4

typedef struct {
    PyTypeObject *type;                 /* strong reference; NULL: empty way */
    Py_ssize_t off[LAYOUT_MAX_NAMES];   /* -1: not a plain object slot */
} layout_way;

typedef struct {
    int n;
    PyObject **names;                   /* interned, n of them */
    layout_way ways[LAYOUT_WAYS];
    int next;                           /* the way replaced next */
} layout;

static const layout_way *
layout_of(layout *l, PyTypeObject *tp)
{
    for (int w = 0; w < LAYOUT_WAYS; w++) {
        if (l->ways[w].type == tp)
            return &l->ways[w];
    }
    layout_way *way = &l->ways[l->next];
    l->next = (l->next + 1) % LAYOUT_WAYS;
    Py_CLEAR(way->type);
    for (int i = 0; i < l->n; i++) {
        way->off[i] = -1;
        PyObject *d = PyObject_GetAttr((PyObject *)tp, l->names[i]);
        if (d == NULL) {
            PyErr_Clear();
            continue;
        }
        if (Py_IS_TYPE(d, &PyMemberDescr_Type)) {
            PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
            if (m->type == T_OBJECT_EX && !(m->flags & READONLY)
                    && PyType_IsSubtype(tp, PyDescr_TYPE(d)))
                way->off[i] = m->offset;
        }
        Py_DECREF(d);
    }
    way->type = (PyTypeObject *)Py_NewRef((PyObject *)tp);
    return way;
}

/* obj.<names[i]>, borrowed (valid while obj is), or NULL with an error set.
 * ``tmp`` receives a reference to release when the value came from
 * PyObject_GetAttr (else NULL). */
static inline PyObject *
slot_get(PyObject *obj, const layout *l, const layout_way *way, int i, PyObject **tmp)
{
    *tmp = NULL;
    Py_ssize_t off = way->off[i];
    if (off >= 0) {
        PyObject *v = *(PyObject **)((char *)obj + off);
        if (v != NULL)
            return v;
    }
    return *tmp = PyObject_GetAttr(obj, l->names[i]);
}

/* 1 if obj.<names[i]> is true, 0 if false, -1 on error. */
static int
slot_true(PyObject *obj, const layout *l, const layout_way *way, int i)
{
    PyObject *tmp;
    PyObject *v = slot_get(obj, l, way, i, &tmp);
    if (v == NULL)
        return -1;
    int t = (v == Py_False || v == Py_None) ? 0 : (v == Py_True ? 1 : PyObject_IsTrue(v));
    Py_XDECREF(tmp);
    return t;
}

static int
slot_set(PyObject *obj, const layout *l, const layout_way *way, int i, PyObject *value)
{
    Py_ssize_t off = way->off[i];
    if (off < 0)
        return PyObject_SetAttr(obj, l->names[i], value);
    PyObject **p = (PyObject **)((char *)obj + off);
    PyObject *old = *p;
    *p = Py_NewRef(value);
    Py_XDECREF(old);
    return 0;
}

/* The stream transport's hot attributes (uringloop._stream.UringSocketTransport). */
enum {
    T_CLOSING, T_PAUSED, T_STASH, T_BUFFERED, T_PROTOCOL, T_DATA_BATCH, T_EOF,
    T_CONN_LOST, T_SEND_OP, T_ZC_MIN, T_EMPTY_WAITER, T_SOCK, T_SOCK_FD, T_NAMES
};
static PyObject *transport_names[T_NAMES];
static layout transport_layout = {T_NAMES, transport_names, {{0}}, 0};

/* An op's (uringloop._proactor.Op) and the proactor's. */
enum { O_CALLBACK, O_MULTISHOT, O_NAMES };
static PyObject *op_names[O_NAMES];
static layout op_layout = {O_NAMES, op_names, {{0}}, 0};
enum { P_HARVESTED, P_NAMES };
static PyObject *proactor_names[P_NAMES];
static layout proactor_layout = {P_NAMES, proactor_names, {{0}}, 0};

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
        const layout_way *way = layout_of(&op_layout, Py_TYPE(op));
        int final = !(c.flags & UL_CQE_F_MORE);
        if (!final) {
            int ms = slot_true(op, &op_layout, way, O_MULTISHOT);
            if (ms < 0)
                goto fail_op;
            final = !ms;
        }
        if (final && PyDict_DelItem(ops, key) < 0)
            goto fail_op;
        Py_CLEAR(key);

        PyObject *res = PyLong_FromLong(c.res);
        PyObject *flags = PyLong_FromUnsignedLong(c.flags);
        PyObject *ret = NULL;
        if (res != NULL && flags != NULL) {
            PyObject *tmp;
            PyObject *callback = slot_get(op, &op_layout, way, O_CALLBACK, &tmp);
            if (callback != NULL && tmp == NULL)
                tmp = Py_NewRef(callback);   /* the callback may reassign op.callback */
            if (callback == Py_None) {
                PyObject *margs[3] = {op, res, flags};
                ret = PyObject_VectorcallMethod(str_complete, margs,
                                                3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
            } else if (callback != NULL) {
                PyObject *cargs[3] = {NULL, res, flags};
                ret = PyObject_Vectorcall(callback, cargs + 1,
                                          2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
            }
            Py_XDECREF(tmp);
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

/* One non-blocking send(2): bytes sent, 0 when the socket buffer is full, -1
 * with errno set on an error, -2 with a Python exception set when a signal
 * handler raised during an EINTR retry (PEP 475). */
static ssize_t
send_nb(int fd, Py_buffer *view)
{
    for (;;) {
        ssize_t n = send(fd, view->buf, (size_t)view->len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n >= 0)
            return n;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        if (errno != EINTR)
            return -1;
        if (PyErr_CheckSignals() < 0)
            return -2;
    }
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
    ssize_t n = send_nb(fd, &view);
    int err = errno;
    PyBuffer_Release(&view);
    if (n == -2)
        return NULL;
    if (n == -1) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromSsize_t(n);
}

/* ------------------------------------------------------------------------
 * RecvHook: the multishot receive's completion handler of a stream
 * transport (uringloop._stream.UringSocketTransport), for a plain Protocol.
 *
 * The hot case -- a CQE carrying data with more to come, on a transport that
 * is reading (not closing, not paused, nothing stashed) -- is handled here:
 * the buffer id goes on the recycle list, the bytes are copied out of the
 * provided buffer and handed to protocol.data_received().  Every other CQE
 * goes to the transport's Python handler, transport._on_recv(res, flags),
 * which is also the reference for what this does.
 */
typedef struct {
    PyObject_HEAD
    PyObject *transport;
    PyObject *proactor;
    PyObject *recycle;      /* list of buffer ids to hand back */
    PyObject *slow;         /* transport._on_recv */
    const char *base;       /* the provided buffers: base + bid * buf_size */
    Py_ssize_t buf_size;
    Py_ssize_t nbufs;
    vectorcallfunc vectorcall;
} RecvHook;

static PyObject *str_data_received, *str_fatal_error, *str_write_rest, *msg_data_received;

#define UL_CQE_F_BUFFER (1U << 0)

static PyObject *
recvhook_call(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    RecvHook *self = (RecvHook *)op;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 2 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "RecvHook takes (res, flags)");
        return NULL;
    }
    long res = PyLong_AsLong(args[0]);
    if (res == -1 && PyErr_Occurred())
        return NULL;
    unsigned long flags = PyLong_AsUnsignedLong(args[1]);
    if (flags == (unsigned long)-1 && PyErr_Occurred())
        return NULL;
    PyObject *t = self->transport;
    unsigned long bid = flags >> 16;
    if ((flags & (UL_CQE_F_BUFFER | UL_CQE_F_MORE)) != (UL_CQE_F_BUFFER | UL_CQE_F_MORE)
            || res <= 0 || (Py_ssize_t)bid >= self->nbufs || res > self->buf_size)
        goto slow;
    const layout *L = &transport_layout;
    const layout_way *way = layout_of(&transport_layout, Py_TYPE(t));
    int b;
    if ((b = slot_true(t, L, way, T_CLOSING)) != 0 || (b = slot_true(t, L, way, T_PAUSED)) != 0
            || (b = slot_true(t, L, way, T_STASH)) != 0
            || (b = slot_true(t, L, way, T_BUFFERED)) != 0) {
        if (b < 0)
            return NULL;
        goto slow;
    }
    PyObject *bid_obj = PyLong_FromUnsignedLong(bid);
    if (bid_obj == NULL)
        return NULL;
    int rc = PyList_Append(self->recycle, bid_obj);   /* back to the kernel next iteration */
    Py_DECREF(bid_obj);
    if (rc < 0)
        return NULL;
    PyObject *tmp;
    PyObject *batch = slot_get(self->proactor, &proactor_layout,
                               layout_of(&proactor_layout, Py_TYPE(self->proactor)),
                               P_HARVESTED, &tmp);
    if (batch == NULL)
        return NULL;
    rc = slot_set(t, L, way, T_DATA_BATCH, batch);
    Py_XDECREF(tmp);
    if (rc < 0)
        return NULL;
    PyObject *protocol = slot_get(t, L, way, T_PROTOCOL, &tmp);
    if (protocol == NULL)
        return NULL;
    if (tmp == NULL)
        tmp = Py_NewRef(protocol);   /* data_received() may set_protocol() */
    PyObject *data = PyBytes_FromStringAndSize(self->base + bid * (size_t)self->buf_size,
                                               (Py_ssize_t)res);
    if (data == NULL) {
        Py_DECREF(tmp);
        return NULL;
    }
    PyObject *margs[2] = {protocol, data};
    PyObject *ret = PyObject_VectorcallMethod(str_data_received, margs,
                                              2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(tmp);
    Py_DECREF(data);
    if (ret != NULL) {
        Py_DECREF(ret);
        Py_RETURN_NONE;
    }
    if (PyErr_ExceptionMatches(PyExc_SystemExit)
            || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
        return NULL;
    PyObject *exc = PyErr_GetRaisedException_compat();
    PyObject *fargs[3] = {t, exc, msg_data_received};
    ret = PyObject_VectorcallMethod(str_fatal_error, fargs,
                                    3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(exc);
    if (ret == NULL)
        return NULL;
    Py_DECREF(ret);
    Py_RETURN_NONE;
slow:
    return PyObject_Vectorcall(self->slow, args, nargsf, NULL);
}

static PyObject *
recvhook_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *transport, *proactor, *recycle, *slow, *base_obj;
    Py_ssize_t buf_size, nbufs;
    if (kwds != NULL && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "RecvHook takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "OOO!OOnn:RecvHook", &transport, &proactor, &PyList_Type,
                          &recycle, &slow, &base_obj, &buf_size, &nbufs))
        return NULL;
    void *base;
    if (as_pointer(base_obj, &base) < 0)
        return NULL;
    if (base == NULL || buf_size <= 0 || nbufs <= 0 || nbufs > 0x10000) {
        PyErr_SetString(PyExc_ValueError, "RecvHook: bad buffer ring");
        return NULL;
    }
    RecvHook *self = (RecvHook *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->transport = Py_NewRef(transport);
    self->proactor = Py_NewRef(proactor);
    self->recycle = Py_NewRef(recycle);
    self->slow = Py_NewRef(slow);
    self->base = base;
    self->buf_size = buf_size;
    self->nbufs = nbufs;
    self->vectorcall = recvhook_call;
    return (PyObject *)self;
}

static int
recvhook_traverse(RecvHook *self, visitproc visit, void *arg)
{
    Py_VISIT(self->transport);
    Py_VISIT(self->proactor);
    Py_VISIT(self->recycle);
    Py_VISIT(self->slow);
    return 0;
}

static int
recvhook_clear(RecvHook *self)
{
    Py_CLEAR(self->transport);
    Py_CLEAR(self->proactor);
    Py_CLEAR(self->recycle);
    Py_CLEAR(self->slow);
    return 0;
}

static void
recvhook_dealloc(RecvHook *self)
{
    PyObject_GC_UnTrack(self);
    recvhook_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject RecvHook_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "uringloop._speedups.RecvHook",
    .tp_basicsize = sizeof(RecvHook),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "RecvHook(transport, proactor, recycle, slow, base, buf_size, nbufs)",
    .tp_new = recvhook_new,
    .tp_traverse = (traverseproc)recvhook_traverse,
    .tp_clear = (inquiry)recvhook_clear,
    .tp_dealloc = (destructor)recvhook_dealloc,
    .tp_vectorcall_offset = offsetof(RecvHook, vectorcall),
    .tp_call = PyVectorcall_Call,
};

/* ------------------------------------------------------------------------
 * write(self, data): UringSocketTransport.write's common case in C -- an idle
 * transport and a bytes-like object the socket takes whole.  Anything else
 * (a send in flight, a partial send, EAGAIN, an error, zero-copy, the checks
 * that raise) goes on in the transport's Python ``_write_rest(data, sent)``,
 * which is also the reference for what this does; ``sent`` is None (nothing
 * tried), the number of bytes this send took, or the OSError it raised.
 */
static PyObject *
transport_write(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 1) {
        PyErr_Format(PyExc_TypeError, "write() takes exactly one argument (%zd given)", nargs);
        return NULL;
    }
    PyObject *data = args[0];
    PyTypeObject *tp = Py_TYPE(data);
    PyObject *sent_obj = NULL;
    if (tp == &PyBytes_Type || tp == &PyByteArray_Type || tp == &PyMemoryView_Type) {
        const layout *L = &transport_layout;
        const layout_way *way = layout_of(&transport_layout, Py_TYPE(self));
        int b;
        if ((b = slot_true(self, L, way, T_EOF)) != 0
                || (b = slot_true(self, L, way, T_CONN_LOST)) != 0
                || (b = slot_true(self, L, way, T_SEND_OP)) != 0
                || (b = slot_true(self, L, way, T_ZC_MIN)) != 0
                || (b = slot_true(self, L, way, T_EMPTY_WAITER)) != 0) {
            if (b < 0)
                return NULL;
            goto rest;   /* (a non-None _empty_waiter is a future: true) */
        }
        PyObject *tmp;
        PyObject *sock = slot_get(self, L, way, T_SOCK, &tmp);
        if (sock == NULL)
            return NULL;
        Py_XDECREF(tmp);
        if (sock == Py_None)
            goto rest;
        PyObject *fd_obj = slot_get(self, L, way, T_SOCK_FD, &tmp);
        if (fd_obj == NULL)
            return NULL;
        int fd = PyLong_AsInt_compat(fd_obj);
        Py_XDECREF(tmp);
        if (fd == -1 && PyErr_Occurred())
            return NULL;
        Py_buffer view;
        if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
            PyErr_Clear();   /* e.g. a non-contiguous view: the Python path decides */
            goto rest;
        }
        if (view.len == 0) {
            PyBuffer_Release(&view);
            Py_RETURN_NONE;
        }
        Py_ssize_t len = view.len;
        ssize_t n = send_nb(fd, &view);
        int err = errno;
        PyBuffer_Release(&view);
        if (n == -2)
            return NULL;   /* a signal handler raised */
        if (n == len && PyObject_Length(data) == len)
            Py_RETURN_NONE;
        if (n >= 0) {
            sent_obj = PyLong_FromSsize_t(n);
        } else {
            /* The error goes on as the exception socket.send() would raise
             * (sending again would not see a connection reset twice). */
            errno = err;
            PyErr_SetFromErrno(PyExc_OSError);
            sent_obj = PyErr_GetRaisedException_compat();
        }
        if (sent_obj == NULL)
            return NULL;
    }
rest:
    if (sent_obj == NULL)
        sent_obj = Py_NewRef(Py_None);   /* nothing tried */
    PyObject *margs[3] = {self, data, sent_obj};
    PyObject *ret = PyObject_VectorcallMethod(str_write_rest, margs,
                                              3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(sent_obj);
    return ret;
}

static PyMethodDef transport_write_def = {
    "write", (PyCFunction)(void (*)(void))transport_write, METH_FASTCALL,
    "write($self, data, /)\n--\n\n"
    "Write bytes to the transport; never blocks (see UringSocketTransport)."
};

static PyObject *
sp_transport_write(PyObject *module, PyObject *cls)
{
    /* A method descriptor of ``object``: binds to any instance, and the
     * interpreter calls it without creating a bound-method object. */
    return PyDescr_NewMethod(&PyBaseObject_Type, &transport_write_def);
}

static PyMethodDef sp_methods[] = {
    {"run", (PyCFunction)(void (*)(void))sp_run, METH_FASTCALL,
     "run(ring, ns, must_enter, bufring, recycle) -> bytes | None | int"},
    {"dispatch", (PyCFunction)(void (*)(void))sp_dispatch, METH_FASTCALL,
     "dispatch(ops, undispatched, data, report, reschedule)"},
    {"send", (PyCFunction)(void (*)(void))sp_send, METH_FASTCALL,
     "send(fd, data) -> bytes sent (0: would block)"},
    {"transport_write", (PyCFunction)sp_transport_write, METH_O,
     "transport_write(cls) -> the C write() method for a stream transport class"},
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
    static const char *const tnames[T_NAMES] = {
        "_closing", "_paused", "_stash", "_buffered", "_protocol", "_data_batch", "_eof",
        "_conn_lost", "_send_op", "_zc_min", "_empty_waiter", "_sock", "_sock_fd",
    };
    for (int i = 0; i < T_NAMES; i++) {
        if (transport_names[i] == NULL
                && (transport_names[i] = PyUnicode_InternFromString(tnames[i])) == NULL)
            return -1;
    }
    op_names[O_CALLBACK] = Py_NewRef(str_callback);
    op_names[O_MULTISHOT] = Py_NewRef(str_multishot);
    struct { PyObject **slot; const char *name; } names[] = {
        {&proactor_names[P_HARVESTED], "_harvested"},
        {&str_data_received, "data_received"}, {&str_fatal_error, "_fatal_error"},
        {&str_write_rest, "_write_rest"},
        {&msg_data_received, "Fatal error: protocol.data_received() call failed."},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (*names[i].slot == NULL
                && (*names[i].slot = PyUnicode_InternFromString(names[i].name)) == NULL)
            return -1;
    }
    if (PyType_Ready(&RecvHook_Type) < 0)
        return -1;
    if (PyModule_AddObjectRef(module, "RecvHook", (PyObject *)&RecvHook_Type) < 0)
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
