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
 *   dispatch(proactor) -> None
 *       Run the completions harvested so far: see Proactor.dispatch.
 *   iterate(proactor, ns) -> bytes | None
 *       Proactor.iterate: the ring call of one loop iteration (ring_call:
 *       the receive buffers in proactor.recycle back, submit, wait, harvest;
 *       the GIL released only when it may sleep), with its bookkeeping (see
 *       that method).  The CQEs come back as bytes, 16 per CQE: u64
 *       user_data, i32 res, u32 flags.
 *   method("_run_once"), method("call_soon"): Loop's (non-debug) iteration and
 *       call_soon, as method descriptors; method("get_debug"),
 *       method("create_future"), method("create_task"), method("time"),
 *       method("is_running"), method("is_closing"):
 *       small methods asyncio's futures, tasks and streams call per step.
 *   RecvHook, ReadableHook, method("write"): the stream transport's receive
 *       (Protocol, BufferedProtocol) and write hot paths (see there).
 *   send(fd, data) -> int
 *       One non-blocking send(2) of a bytes-like object: bytes sent, 0 if the
 *       socket buffer is full; OSError otherwise (EINTR retried, PEP 475).
 *
 * The proactor's ``_addr`` and ``_bufring_addr`` (and RecvHook's bufring) are
 * addresses (ints) of the cffi module's ul_ring / ul_bufring (0: none); this
 * module links the same ring.c, which keeps no state of its own outside those
 * structs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <time.h>
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
    layout_way *last;                   /* the way found last */
} layout;

static const layout_way *layout_fill(layout *l, PyTypeObject *tp);

#define UL_INLINE static inline __attribute__((always_inline))

UL_INLINE const layout_way *
layout_of(layout *l, PyTypeObject *tp)
{
    const layout_way *last = l->last;
    if (last != NULL && last->type == tp)
        return last;
    return layout_fill(l, tp);
}

static const layout_way *
layout_fill(layout *l, PyTypeObject *tp)
{
    for (int w = 0; w < LAYOUT_WAYS; w++) {
        if (l->ways[w].type == tp)
            return l->last = &l->ways[w];
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
    return l->last = way;
}

/* obj.<names[i]>, borrowed (valid while obj is), or NULL with an error set.
 * ``tmp`` receives a reference to release when the value came from
 * PyObject_GetAttr (else NULL). */
UL_INLINE PyObject *
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

/* collections.deque (the loop's _ready), set by sp_exec: a deque keeps its
 * length in ob_size, as a list does. */
static PyTypeObject *deque_type;

/* bool(v): the values the hot slots hold (bools, None, lists, deques)
 * without PyObject_IsTrue's call and type dispatch. */
UL_INLINE int
truth(PyObject *v)
{
    if (v == Py_True)
        return 1;
    if (v == Py_False || v == Py_None)
        return 0;
    PyTypeObject *tp = Py_TYPE(v);
    if (tp == &PyList_Type || tp == deque_type)
        return Py_SIZE(v) != 0;
    return PyObject_IsTrue(v);
}

/* len(v), the same way. */
UL_INLINE Py_ssize_t
size_of(PyObject *v)
{
    PyTypeObject *tp = Py_TYPE(v);
    if (tp == &PyList_Type || tp == deque_type || tp == &PyBytes_Type)
        return Py_SIZE(v);
    if (tp == &PyDict_Type)
        return PyDict_GET_SIZE(v);
    return PyObject_Size(v);
}

/* 1 if obj.<names[i]> is true, 0 if false, -1 on error. */
UL_INLINE int
slot_true(PyObject *obj, const layout *l, const layout_way *way, int i)
{
    PyObject *tmp;
    PyObject *v = slot_get(obj, l, way, i, &tmp);
    if (v == NULL)
        return -1;
    int t = truth(v);
    Py_XDECREF(tmp);
    return t;
}

UL_INLINE int
slot_set(PyObject *obj, const layout *l, const layout_way *way, int i, PyObject *value)
{
    Py_ssize_t off = way->off[i];
    if (off < 0)
        return PyObject_SetAttr(obj, l->names[i], value);
    PyObject **p = (PyObject **)((char *)obj + off);
    PyObject *old = *p;
    if (old == value)
        return 0;
    *p = Py_NewRef(value);
    Py_XDECREF(old);
    return 0;
}

/* The stream transport's hot attributes (uringloop._stream.UringSocketTransport). */
enum {
    T_CLOSING, T_PAUSED, T_STASH, T_BUFFERED, T_PROTOCOL, T_DATA_BATCH, T_EOF,
    T_CONN_LOST, T_SEND_OP, T_ZC_MIN, T_EMPTY_WAITER, T_SOCK, T_SOCK_FD, T_HOT, T_READ_EOF,
    T_NAMES
};
static PyObject *transport_names[T_NAMES];
static layout transport_layout = {T_NAMES, transport_names, {{0}}, 0, NULL};

/* An op's (uringloop._proactor.Op) and the proactor's. */
enum { O_CALLBACK, O_MULTISHOT, O_NAMES };
static PyObject *op_names[O_NAMES];
static layout op_layout = {O_NAMES, op_names, {{0}}, 0, NULL};
enum { P_HARVESTED, P_NAMES };
static PyObject *proactor_names[P_NAMES];
static layout proactor_layout = {P_NAMES, proactor_names, {{0}}, 0, NULL};

static PyObject *str_recover_harvest, *str_return_dgram_buffers, *str_return_buffers;
static PyObject *str_check_ret, *str_report, *str_run, *str_popleft;
static PyObject *str_time, *str_compact_timers, *str_append;
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

/* The ring call: ``recycle``'s buffer ids back to ``br`` (in chunks of
 * RECYCLE_MAX, the last with the submission itself), submit, wait up to ns
 * (-1: forever; the GIL released only then), harvest.  Returns the CQEs as
 * bytes, None when there were none, a negative errno as an int, or NULL. */
static PyObject *
ring_call(ul_ring *r, long long ns, int must_enter, ul_bufring *br, PyObject *recycle)
{
    uint16_t bids[RECYCLE_MAX];
    unsigned nb = 0;
    Py_ssize_t total = PyList_GET_SIZE(recycle);
    if (total && br == NULL) {
        PyErr_SetString(PyExc_ValueError, "iterate(): buffers to recycle but no buffer ring");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < total; i++) {
        long bid = PyLong_AsLong(PyList_GET_ITEM(recycle, i));
        if (bid == -1 && PyErr_Occurred())
            return NULL;
        if (bid < 0 || bid > 0xFFFF) {
            PyErr_SetString(PyExc_ValueError, "iterate(): buffer id out of range");
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

/* as_pointer() for the proactor's ring addresses, read every iteration: the
 * last object seen in each of two places and its pointer are kept (with a
 * reference, so the object cannot be another one at the same address). */
static PyObject *ptr_cache_obj[2];
static void *ptr_cache_val[2];

static int
cached_pointer(PyObject *obj, int k, void **out)
{
    if (obj == ptr_cache_obj[k]) {
        *out = ptr_cache_val[k];
        return 0;
    }
    if (as_pointer(obj, out) < 0)
        return -1;
    Py_XSETREF(ptr_cache_obj[k], Py_NewRef(obj));
    ptr_cache_val[k] = *out;
    return 0;
}

/* Proactor.dispatch(): run the completions of every harvested batch, oldest
 * first.  A batch leaves ``_undispatched`` as its dispatch starts; if that is
 * cut short (KeyboardInterrupt, SystemExit, an error reporting an error), the
 * CQEs not yet dispatched go back to its front, for the next dispatch. */
static PyObject *px_get(PyObject *px, int i);
static PyTypeObject StreamHook_Type;
static PyObject *hook_run(PyObject *hook, long res, unsigned long flags);
static PyObject *dispatch_cqes(PyObject *px, PyObject *ops, PyObject *undispatched,
                               PyObject *data);

/* list.pop(0), new reference or NULL.  The last item leaves the list its
 * storage (PyList_SetSlice would free it, and the next append allocate it
 * again: every iteration, for _undispatched). */
static PyObject *
list_popfront(PyObject *list)
{
    PyObject *item = PyList_GET_ITEM(list, 0);
    if (PyList_GET_SIZE(list) == 1) {
        Py_SET_SIZE(list, 0);   /* the list's reference is ours now */
        return item;
    }
    Py_INCREF(item);
    if (PyList_SetSlice(list, 0, 1, NULL) < 0) {
        Py_DECREF(item);
        return NULL;
    }
    return item;
}

static PyObject *
dispatch_pending(PyObject *px)
{
    PyObject *ops = px_get(px, 0), *undispatched = px_get(px, 1);
    PyObject *result = NULL;
    if (ops == NULL || undispatched == NULL)
        goto out;
    if (!PyDict_CheckExact(ops) || !PyList_CheckExact(undispatched)) {
        PyErr_SetString(PyExc_TypeError, "dispatch(): bad proactor state");
        goto out;
    }
    while (PyList_GET_SIZE(undispatched)) {
        PyObject *data = list_popfront(undispatched);
        if (data == NULL)
            goto out;
        if (!PyBytes_CheckExact(data)) {
            Py_DECREF(data);
            PyErr_SetString(PyExc_TypeError, "dispatch(): a batch must be bytes");
            goto out;
        }
        PyObject *r = dispatch_cqes(px, ops, undispatched, data);
        Py_DECREF(data);
        if (r == NULL)
            goto out;
        Py_DECREF(r);
    }
    result = Py_NewRef(Py_None);
out:
    Py_XDECREF(ops);
    Py_XDECREF(undispatched);
    return result;
}

static PyObject *
sp_dispatch(PyObject *module, PyObject *px)
{
    return dispatch_pending(px);
}

/* The CQEs of ``data`` from byte offset ``off`` on go back to the front of
 * ``undispatched``, keeping the exception being raised. */
static void
requeue_rest(PyObject *undispatched, PyObject *data, Py_ssize_t off)
{
    Py_ssize_t size = PyBytes_GET_SIZE(data);
    if (off >= size)
        return;
    PyObject *exc = PyErr_GetRaisedException_compat();
    PyObject *rest = PyBytes_FromStringAndSize(PyBytes_AS_STRING(data) + off, size - off);
    if (rest == NULL || PyList_Insert(undispatched, 0, rest) < 0) {
        /* Out of memory: these completions are lost; say so loudly. */
        PyErr_WriteUnraisable(undispatched);
    }
    Py_XDECREF(rest);
    PyErr_SetRaisedException_compat(exc);
}

static PyObject *
dispatch_cqes(PyObject *px, PyObject *ops, PyObject *undispatched, PyObject *data)
{
    Py_ssize_t size = PyBytes_GET_SIZE(data);
    Py_ssize_t count = size / (Py_ssize_t)sizeof(ul_cqe);
    /* ``data`` is immutable and we hold a reference through args: reading it
     * while callbacks run is safe. */
    const char *base = PyBytes_AS_STRING(data);

    for (Py_ssize_t i = 0; i < count; i++) {
        ul_cqe c;
        memcpy(&c, base + i * (Py_ssize_t)sizeof(ul_cqe), sizeof(c));
        Py_ssize_t here = i * (Py_ssize_t)sizeof(ul_cqe);
        PyObject *key = PyLong_FromUnsignedLongLong(c.user_data);
        if (key == NULL) {
            requeue_rest(undispatched, data, here);
            return NULL;
        }
        PyObject *op = PyDict_GetItemWithError(ops, key);   /* borrowed */
        if (op == NULL) {
            Py_DECREF(key);
            if (PyErr_Occurred()) {
                requeue_rest(undispatched, data, here);
                return NULL;
            }
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

        PyObject *ret = NULL, *tmp;
        PyObject *callback = slot_get(op, &op_layout, way, O_CALLBACK, &tmp);
        if (callback != NULL && tmp == NULL)
            tmp = Py_NewRef(callback);   /* the callback may reassign op.callback */
        if (callback != NULL && Py_IS_TYPE(callback, &StreamHook_Type)) {
            /* A stream transport's C hook: called with the fields as they are. */
            ret = hook_run(callback, c.res, c.flags);
        } else if (callback != NULL) {
            PyObject *res = PyLong_FromLong(c.res);
            PyObject *flags = PyLong_FromUnsignedLong(c.flags);
            if (res != NULL && flags != NULL) {
                if (callback == Py_None) {
                    PyObject *margs[3] = {op, res, flags};
                    ret = PyObject_VectorcallMethod(str_complete, margs,
                                                    3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
                } else {
                    PyObject *cargs[3] = {NULL, res, flags};
                    ret = PyObject_Vectorcall(callback, cargs + 1,
                                              2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
                }
            }
            Py_XDECREF(res);
            Py_XDECREF(flags);
        }
        Py_XDECREF(tmp);
        Py_DECREF(op);
        if (ret != NULL) {
            Py_DECREF(ret);
            continue;
        }
        if (PyErr_ExceptionMatches(PyExc_SystemExit)
                || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
            /* Not lost: the rest of the batch goes with the next dispatch. */
            requeue_rest(undispatched, data, here + (Py_ssize_t)sizeof(ul_cqe));
            return NULL;
        }
        /* Ops handle their own errors; this is a bug, but the rest of the
         * batch must still be dispatched. */
        PyObject *exc = PyErr_GetRaisedException_compat();
        PyObject *r2 = PyObject_CallMethodOneArg(px, str_report, exc);
        Py_DECREF(exc);
        if (r2 == NULL) {
            requeue_rest(undispatched, data, here + (Py_ssize_t)sizeof(ul_cqe));
            return NULL;
        }
        Py_DECREF(r2);
        continue;
    fail_op:
        /* The op could not be retired: it stays, and so does its CQE. */
        requeue_rest(undispatched, data, here);
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
 * the bytes are copied out of the provided buffer, the buffer goes straight
 * back to the ring and the bytes to protocol.data_received().  Every other
 * CQE goes to the transport's Python handler, transport._on_recv(res, flags),
 * which is also the reference for what this does (it hands the buffer back
 * with the next iteration's ring call instead, the same to the kernel under
 * DEFER_TASKRUN).  dispatch_cqes() calls the hooks (RecvHook, ReadableHook)
 * directly with the CQE's fields; Python callers go through tp_vectorcall.
 */
typedef struct StreamHook StreamHook;
/* A hook's handler with the CQE's fields as C values; ``args`` is the
 * (res, flags) vector it was called with from Python, or NULL when
 * dispatch_cqes() called it directly (the slow path then builds them). */
typedef PyObject *(*hook_run_fn)(StreamHook *self, long res, unsigned long flags,
                                 PyObject *const *args);

struct StreamHook {
    PyObject_HEAD
    PyObject *transport;
    PyObject *proactor;
    ul_bufring *bufring;    /* RecvHook: the buffers' ring, a buffer goes back at once */
    PyObject *slow;         /* the transport's Python handler */
    const char *base;       /* RecvHook: the provided buffers, base + bid * buf_size */
    Py_ssize_t buf_size;
    Py_ssize_t nbufs;
    Py_ssize_t hot_min;     /* RecvHook: completions this large go readiness ("hot"); 0: never
                               ReadableHook: hot reads smaller than this go back */
    int streak;             /* RecvHook: large completions in a row; ReadableHook: small
                               readiness events in a row (see "Hot reads" below) */
    int keeps;              /* messages left that get bytes of their exact size rather
                               than a spare (its protocol kept one: msg_bytes, hot_read) */
    vectorcallfunc vectorcall;
    hook_run_fn run;
};   /* RecvHook and ReadableHook: one type, two handlers */

typedef StreamHook RecvHook;
typedef StreamHook ReadableHook;

static PyObject *str_data_received, *str_fatal_error, *str_write_rest, *msg_data_received;
static PyObject *str_enter_hot, *str_leave_hot;

/* Hot reads.  A plain Protocol's bytes normally come from the multishot
 * receive: the kernel copies them into a provided buffer, we copy them out
 * into a bytes object.  For large messages the provided buffers (256 KiB
 * each, rotating) are cold in the cache at both copies; reading on readiness
 * into ONE process-wide buffer that stays hot (uvloop's and stock's pattern)
 * costs measurably less CPU from about 32 KiB per message up (a standalone
 * model of both schemes: 0.80x server CPU at 100 KiB, 0.89x at 64 KiB, 0.95x
 * at 32 KiB, 1.00x at 1-10 KiB -- but 1.09x at 1 KiB x 100 connections,
 * where multishot saves a recv() per message).  So a transport goes "hot"
 * (transport._hot, readiness + recv() into one buffer, see hot_read) after
 * UL_HOT_ENTER_STREAK completions of at least hot_min bytes in a row, and
 * back to the multishot receive after UL_HOT_LEAVE_STREAK readiness events
 * in a row that each read less than the ReadableHook's hot_min (both byte
 * thresholds are set from Python: uringloop._stream.HOT_MIN, HOT_LEAVE). */
#define UL_HOT_SIZE (256 * 1024)   /* as stock's max_size per read */
#define UL_HOT_ENTER_STREAK 2
#define UL_HOT_LEAVE_STREAK 8

#define UL_CQE_F_BUFFER (1U << 0)

/* A completion handler's arguments: (res, flags). */
static int
hook_args(PyObject *const *args, size_t nargsf, PyObject *kwnames,
          long *res, unsigned long *flags)
{
    if (PyVectorcall_NARGS(nargsf) != 2 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "a completion handler takes (res, flags)");
        return -1;
    }
    *res = PyLong_AsLong(args[0]);
    if (*res == -1 && PyErr_Occurred())
        return -1;
    *flags = PyLong_AsUnsignedLong(args[1]);
    if (*flags == (unsigned long)-1 && PyErr_Occurred())
        return -1;
    return 0;
}

/* The transport's Python handler, slow(res, flags). */
static PyObject *
hook_slow(StreamHook *self, long res, unsigned long flags, PyObject *const *args)
{
    if (args != NULL)
        return PyObject_Vectorcall(self->slow, args, 2, NULL);
    PyObject *a[3] = {NULL, PyLong_FromLong(res), PyLong_FromUnsignedLong(flags)};
    PyObject *r = NULL;
    if (a[1] != NULL && a[2] != NULL)
        r = PyObject_Vectorcall(self->slow, a + 1, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_XDECREF(a[1]);
    Py_XDECREF(a[2]);
    return r;
}

/* Called by dispatch_cqes() for a hook's CQE. */
static PyObject *
hook_run(PyObject *hook, long res, unsigned long flags)
{
    StreamHook *self = (StreamHook *)hook;
    return self->run(self, res, flags, NULL);
}

/* Called from Python (tp_vectorcall): the fields out of (res, flags), then run. */
static PyObject *
hook_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    StreamHook *self = (StreamHook *)op;
    long res;
    unsigned long flags;
    if (hook_args(args, nargsf, kwnames, &res, &flags) < 0)
        return NULL;
    return self->run(self, res, flags, args);
}

/* transport._data_batch = proactor._harvested: the transport delivered data in
 * this batch of completions (see _kernel_eof).  0, or -1 with an error set. */
static int
mark_data_batch(StreamHook *self, PyObject *t, const layout_way *way)
{
    PyObject *tmp;
    PyObject *batch = slot_get(self->proactor, &proactor_layout,
                               layout_of(&proactor_layout, Py_TYPE(self->proactor)),
                               P_HARVESTED, &tmp);
    int rc = batch == NULL ? -1 : slot_set(t, &transport_layout, way, T_DATA_BATCH, batch);
    Py_XDECREF(tmp);
    return rc;
}

/* A bytes object only we hold, given a new visible length: the terminating
 * NUL moves with it and its cached hash is forgotten. */
static void
own_bytes_set_len(PyObject *b, Py_ssize_t n)
{
    Py_SET_SIZE(b, n);
    PyBytes_AS_STRING(b)[n] = '\0';
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif
    ((PyBytesObject *)b)->ob_shash = -1;
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
}

/* The bytes objects given to data_received().  A message of 1 KiB costs a
 * malloc() and a free() of its bytes object (pymalloc hands anything over 512
 * bytes to the C allocator, and glibc's per-thread cache stops at 1032 bytes:
 * ~880 instructions per message, measured with callgrind, more than a quarter
 * of the loop's own per-message work at 10 connections).  So the object a
 * protocol let go of (refcount 1 once data_received() returned: an echo's
 * write() sent it, a parser or StreamReader copied it) is kept as the spare and
 * the next message of a size it holds (its capacity or up to half of it less)
 * is copied into it.  A protocol that keeps its data gets the object it was
 * given (at most twice its size allocated) and, for its next UL_KEEPS_PAUSE
 * messages, objects of their exact size.  Below UL_SPARE_MIN bytes pymalloc's
 * free lists are as cheap.  Only used with the GIL held; a handed-over object
 * is written again only after it came back with no other reference. */
#define UL_SPARE_MIN 480
#define UL_KEEPS_PAUSE 64
static PyObject *msg_spare;       /* refcount 1, or NULL */
static Py_ssize_t msg_spare_cap;  /* the bytes its storage holds */

/* A bytes object with the n bytes at src; *cap > 0: it may become the spare
 * (pass it to msg_bytes_done()), its storage holds *cap bytes. */
static PyObject *
msg_bytes(StreamHook *self, const char *src, Py_ssize_t n, Py_ssize_t *cap)
{
    *cap = 0;
    if (n < UL_SPARE_MIN)
        return PyBytes_FromStringAndSize(src, n);
    if (self->keeps > 0) {
        self->keeps--;
        return PyBytes_FromStringAndSize(src, n);
    }
    PyObject *b = msg_spare;
    if (b != NULL && n <= msg_spare_cap && n >= msg_spare_cap / 2) {
        msg_spare = NULL;           /* our reference goes with it */
        *cap = msg_spare_cap;
        memcpy(PyBytes_AS_STRING(b), src, (size_t)n);
        own_bytes_set_len(b, n);
        return b;
    }
    b = PyBytes_FromStringAndSize(src, n);
    *cap = n;
    return b;
}

/* data_received(b) returned: 1 if nobody else holds b (it may be a spare
 * again), else 0, and this hook's next UL_KEEPS_PAUSE messages get objects of
 * their exact size (its protocol keeps what it is given). */
static int
came_back(StreamHook *self, PyObject *b)
{
    if (Py_REFCNT(b) == 1)
        return 1;
    self->keeps = UL_KEEPS_PAUSE;
    return 0;
}

/* data_received(b) returned: b is the spare if it came back. */
static void
msg_bytes_done(StreamHook *self, PyObject *b, Py_ssize_t cap)
{
    if (cap > 0 && came_back(self, b)) {
        Py_XSETREF(msg_spare, b);
        msg_spare_cap = cap;
        return;
    }
    Py_DECREF(b);
}

static PyObject *
recvhook_run(RecvHook *self, long res, unsigned long flags, PyObject *const *args)
{
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
    /* Copied out, the buffer goes straight back to the kernel (which, under
     * DEFER_TASKRUN, fills it no sooner than the next enter). */
    Py_ssize_t cap;
    PyObject *data = msg_bytes(self, self->base + bid * (size_t)self->buf_size,
                               (Py_ssize_t)res, &cap);
    ul_bufring_recycle(self->bufring, (uint16_t)bid);
    if (data == NULL)
        return NULL;
    PyObject *tmp;
    PyObject *protocol = mark_data_batch(self, t, way) < 0 ? NULL
        : slot_get(t, L, way, T_PROTOCOL, &tmp);
    if (protocol == NULL) {
        msg_bytes_done(self, data, cap);
        return NULL;
    }
    if (tmp == NULL)
        tmp = Py_NewRef(protocol);   /* data_received() may set_protocol() */
    PyObject *margs[2] = {protocol, data};
    PyObject *ret = PyObject_VectorcallMethod(str_data_received, margs,
                                              2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(tmp);
    msg_bytes_done(self, data, cap);
    if (ret != NULL) {
        Py_DECREF(ret);
        if (self->hot_min <= 0)
            Py_RETURN_NONE;
        if (res < self->hot_min) {
            self->streak = 0;
            Py_RETURN_NONE;
        }
        if (++self->streak < UL_HOT_ENTER_STREAK)
            Py_RETURN_NONE;
        self->streak = 0;
        ret = PyObject_CallMethodNoArgs(t, str_enter_hot);   /* large messages: go hot */
        if (ret == NULL)
            return NULL;
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
    return hook_slow(self, res, flags, args);
}

static StreamHook *
hook_alloc(PyObject *transport, PyObject *proactor, PyObject *slow, hook_run_fn run)
{
    StreamHook *self = PyObject_GC_New(StreamHook, &StreamHook_Type);
    if (self == NULL)
        return NULL;
    self->transport = Py_NewRef(transport);
    self->proactor = Py_NewRef(proactor);
    self->slow = Py_NewRef(slow);
    self->bufring = NULL;
    self->base = NULL;
    self->buf_size = self->nbufs = self->hot_min = 0;
    self->streak = self->keeps = 0;
    self->vectorcall = hook_vectorcall;
    self->run = run;
    PyObject_GC_Track(self);
    return self;
}

/* RecvHook(transport, proactor, bufring, slow, base, buf_size, nbufs, hot_min):
 * bufring and base are addresses (the ul_bufring, its buffers). */
static PyObject *
sp_recv_hook(PyObject *module, PyObject *args)
{
    PyObject *transport, *proactor, *bufring_obj, *slow, *base_obj;
    Py_ssize_t buf_size, nbufs, hot_min;
    if (!PyArg_ParseTuple(args, "OOOOOnnn:RecvHook", &transport, &proactor, &bufring_obj,
                          &slow, &base_obj, &buf_size, &nbufs, &hot_min))
        return NULL;
    void *base, *bufring;
    if (as_pointer(base_obj, &base) < 0 || as_pointer(bufring_obj, &bufring) < 0)
        return NULL;
    if (base == NULL || bufring == NULL || buf_size <= 0 || nbufs <= 0 || nbufs > 0x10000) {
        PyErr_SetString(PyExc_ValueError, "RecvHook: bad buffer ring");
        return NULL;
    }
    StreamHook *self = hook_alloc(transport, proactor, slow, recvhook_run);
    if (self == NULL)
        return NULL;
    self->bufring = bufring;
    self->base = base;
    self->buf_size = buf_size;
    self->nbufs = nbufs;
    self->hot_min = hot_min;
    return (PyObject *)self;
}

static int
hook_traverse(StreamHook *self, visitproc visit, void *arg)
{
    Py_VISIT(self->transport);
    Py_VISIT(self->proactor);
    Py_VISIT(self->slow);
    return 0;
}

static int
hook_clear(StreamHook *self)
{
    Py_CLEAR(self->transport);
    Py_CLEAR(self->proactor);
    Py_CLEAR(self->slow);
    return 0;
}

static void
hook_dealloc(StreamHook *self)
{
    PyObject_GC_UnTrack(self);
    hook_clear(self);
    PyObject_GC_Del(self);
}

static PyTypeObject StreamHook_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "uringloop._speedups.StreamHook",
    .tp_basicsize = sizeof(StreamHook),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "A stream transport's completion handler (made by RecvHook or ReadableHook).",
    .tp_traverse = (traverseproc)hook_traverse,
    .tp_clear = (inquiry)hook_clear,
    .tp_dealloc = (destructor)hook_dealloc,
    .tp_vectorcall_offset = offsetof(StreamHook, vectorcall),
    .tp_call = PyVectorcall_Call,
};

/* ------------------------------------------------------------------------
 * ReadableHook: the multishot POLLIN completion handler of a stream
 * transport whose protocol is a BufferedProtocol (asyncio's TLS included).
 *
 * The common case -- readiness with more to come, a transport that is reading
 * with a BufferedProtocol, get_buffer() returning a writable bytearray or
 * contiguous memoryview -- is handled here: recv() into that buffer,
 * buffer_updated(n), again until a short read (the poll is edge-triggered;
 * once the mask shows the peer shut down, on to EOF or EAGAIN).  The rest
 * goes to the transport's Python: _on_readable(res, flags) for the CQE, or
 * _read_ready(res, buf) to go on with a buffer get_buffer() already gave.
 */

#define UL_POLL_END (0x2000 /* POLLRDHUP */ | 0x10 /* POLLHUP */ | 0x8 /* POLLERR */)

static PyObject *str_get_buffer, *str_buffer_updated, *str_read_ready, *str_readable_eof;
static PyObject *msg_get_buffer, *msg_buffer_updated, *msg_read_error, *msg_empty_buffer;
static PyObject *minus_one;

/* transport._fatal_error(exc, msg) with the exception raised now; -1 if the
 * exception is SystemExit or KeyboardInterrupt (left raised) or the call fails. */
static int
fatal_current(PyObject *t, PyObject *msg)
{
    if (PyErr_ExceptionMatches(PyExc_SystemExit)
            || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
        return -1;
    PyObject *exc = PyErr_GetRaisedException_compat();
    PyObject *fargs[3] = {t, exc, msg};
    PyObject *r = PyObject_VectorcallMethod(str_fatal_error, fargs,
                                            3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(exc);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* transport._read_ready(res, buf); ``args``: see hook_run_fn. */
static PyObject *
readable_rest(PyObject *t, long res, PyObject *const *args, PyObject *buf)
{
    PyObject *res_obj = args != NULL ? Py_NewRef(args[0]) : PyLong_FromLong(res);
    if (res_obj == NULL)
        return NULL;
    PyObject *margs[3] = {t, res_obj, buf};
    PyObject *r = PyObject_VectorcallMethod(str_read_ready, margs,
                                            3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(res_obj);
    if (r == NULL)
        return NULL;
    Py_DECREF(r);
    Py_RETURN_NONE;
}

/* The hot reads' buffer is the storage of a bytes object, the spare
 * (refcount 1, UL_HOT_SIZE long, owned here).  A read of UL_HOT_HANDOVER bytes
 * or more hands the spare itself to data_received(), its length set to what
 * was read: no copy out (at 100 KiB that copy was ~8% of the server's cycles,
 * stock's and uvloop's pattern).  If the protocol let go of it (an echo's
 * write() sent it, a StreamReader copied it into its buffer), it is the spare
 * again; if it kept it, the next read makes a new spare and this hook copies
 * out for its next UL_KEEPS_PAUSE reads, so a protocol that keeps its data
 * does not hold a 256 KiB allocation per 64 KiB message.  Smaller reads are
 * copied out (msg_bytes).  The spare is only written between a recv() and the
 * copy out or the handover, with the GIL held; a handed-over object is never
 * written again unless it came back with no other reference. */
#define UL_HOT_HANDOVER (64 * 1024)
static PyObject *hot_spare;

/* One hot read for a plain Protocol (see "Hot reads"): recv() into the spare,
 * the bytes (the spare itself, or a copy) given to protocol.data_received().
 * Returns 1 (read *got bytes), 2 (nothing to read: EAGAIN), 0 (EOF or a read
 * or protocol error, handled as the transport's Python handles them) or -1
 * (an exception). */
static int
hot_read(ReadableHook *self, PyObject *t, const layout_way *way, int fd, ssize_t *got)
{
    const layout *L = &transport_layout;
    ssize_t n;
    if (hot_spare == NULL && (hot_spare = PyBytes_FromStringAndSize(NULL, UL_HOT_SIZE)) == NULL)
        return -1;
    char *buf = PyBytes_AS_STRING(hot_spare);
    for (;;) {
        n = recv(fd, buf, UL_HOT_SIZE, MSG_DONTWAIT);
        if (n >= 0 || errno != EINTR)
            break;
        if (PyErr_CheckSignals() < 0)
            return -1;
    }
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 2;
        PyErr_SetFromErrno(PyExc_OSError);
        return fatal_current(t, msg_read_error) < 0 ? -1 : 0;
    }
    if (n == 0) {
        PyObject *r = PyObject_CallMethodNoArgs(t, str_readable_eof);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
        return 0;
    }
    PyObject *data;
    int handed = 0;
    Py_ssize_t cap = 0;
    if (n >= UL_HOT_HANDOVER && self->keeps == 0) {
        data = hot_spare;          /* our reference goes with it */
        hot_spare = NULL;
        if (n < UL_HOT_SIZE)
            own_bytes_set_len(data, n);
        handed = 1;
    }
    else if ((data = msg_bytes(self, buf, (Py_ssize_t)n, &cap)) == NULL)
        return -1;
    PyObject *tmp;
    PyObject *protocol = mark_data_batch(self, t, way) < 0 ? NULL
        : slot_get(t, L, way, T_PROTOCOL, &tmp);
    PyObject *r = NULL;
    if (protocol != NULL) {
        if (tmp == NULL)
            tmp = Py_NewRef(protocol);   /* data_received() may set_protocol() */
        PyObject *margs[2] = {protocol, data};
        r = PyObject_VectorcallMethod(str_data_received, margs,
                                      2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        Py_DECREF(tmp);
    }
    if (!handed)
        msg_bytes_done(self, data, cap);
    else if (came_back(self, data) && hot_spare == NULL) {
        own_bytes_set_len(data, UL_HOT_SIZE);   /* the spare again */
        hot_spare = data;
    }
    else
        Py_DECREF(data);
    if (protocol == NULL)
        return -1;
    if (r == NULL)
        return fatal_current(t, msg_data_received) < 0 ? -1 : 0;
    Py_DECREF(r);
    *got = n;
    return 1;
}

/* A hot readiness event read ``total`` bytes: after UL_HOT_LEAVE_STREAK small
 * ones in a row, back to the multishot receive (transport._leave_hot()).  An
 * event that found nothing (its bytes were read with an earlier one) counts
 * neither way. */
static PyObject *
hot_done(ReadableHook *self, PyObject *t, Py_ssize_t total)
{
    if (total == 0)
        Py_RETURN_NONE;
    if (total >= self->hot_min) {
        self->streak = 0;
        Py_RETURN_NONE;
    }
    if (++self->streak < UL_HOT_LEAVE_STREAK)
        Py_RETURN_NONE;
    self->streak = 0;
    PyObject *r = PyObject_CallMethodNoArgs(t, str_leave_hot);
    if (r == NULL)
        return NULL;
    Py_DECREF(r);
    Py_RETURN_NONE;
}

static PyObject *
readablehook_run(ReadableHook *self, long res, unsigned long flags, PyObject *const *args)
{
    if (res < 0 || !(flags & UL_CQE_F_MORE))
        return hook_slow(self, res, flags, args);
    PyObject *t = self->transport;
    const layout *L = &transport_layout;
    const layout_way *way = layout_of(&transport_layout, Py_TYPE(t));
    PyObject *tmp;
    PyObject *sock = slot_get(t, L, way, T_SOCK, &tmp);
    if (sock == NULL)
        return NULL;
    Py_XDECREF(tmp);
    if (sock == Py_None)
        return readable_rest(t, res, args, Py_None);
    PyObject *fd_obj = slot_get(t, L, way, T_SOCK_FD, &tmp);
    if (fd_obj == NULL)
        return NULL;
    int fd = PyLong_AsInt_compat(fd_obj);
    Py_XDECREF(tmp);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t total = 0;   /* hot reads: the bytes this readiness event gave */
    for (;;) {
        int b;
        /* (_read_eof: a readiness CQE already harvested when a read found
         * EOF must not read, and deliver EOF, again.) */
        if ((b = slot_true(t, L, way, T_PAUSED)) != 0 || (b = slot_true(t, L, way, T_CLOSING)) != 0
                || (b = slot_true(t, L, way, T_STASH)) != 0
                || (b = slot_true(t, L, way, T_READ_EOF)) != 0) {
            if (b < 0)
                return NULL;
            return readable_rest(t, res, args, Py_None);   /* it decides: stop or go on */
        }
        if ((b = slot_true(t, L, way, T_BUFFERED)) != 1) {
            if (b < 0 || (b = slot_true(t, L, way, T_HOT)) < 0)
                return NULL;
            if (!b)   /* a plain Protocol set by set_protocol(): it re-arms the receive */
                return readable_rest(t, res, args, Py_None);
            ssize_t n = 0;
            int rc = hot_read(self, t, way, fd, &n);
            if (rc < 0)
                return NULL;
            if (rc == 0)
                Py_RETURN_NONE;   /* EOF or a fatal error: handled */
            total += n;
            if (rc == 2 || (n < UL_HOT_SIZE && !(res & UL_POLL_END)))
                return hot_done(self, t, total);
            continue;
        }
        PyObject *protocol = slot_get(t, L, way, T_PROTOCOL, &tmp);
        if (protocol == NULL)
            return NULL;
        if (tmp == NULL)
            tmp = Py_NewRef(protocol);
        PyObject *gargs[2] = {protocol, minus_one};
        PyObject *buf = PyObject_VectorcallMethod(str_get_buffer, gargs,
                                                  2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        if (buf == NULL) {
            Py_DECREF(tmp);
            return fatal_current(t, msg_get_buffer) < 0 ? NULL : Py_NewRef(Py_None);
        }
        PyTypeObject *bt = Py_TYPE(buf);
        Py_buffer view;
        if ((bt != &PyByteArray_Type && bt != &PyMemoryView_Type)
                || PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE) < 0) {
            PyErr_Clear();
            Py_DECREF(tmp);
            PyObject *r = readable_rest(t, res, args, buf);   /* its checks, its errors */
            Py_DECREF(buf);
            return r;
        }
        if (view.len == 0) {
            PyBuffer_Release(&view);
            Py_DECREF(buf);
            PyErr_SetObject(PyExc_RuntimeError, msg_empty_buffer);
            int rc = fatal_current(t, msg_get_buffer);
            Py_DECREF(tmp);
            return rc < 0 ? NULL : Py_NewRef(Py_None);
        }
        Py_ssize_t room = view.len;
        ssize_t n;
        for (;;) {
            n = recv(fd, view.buf, (size_t)room, MSG_DONTWAIT);
            if (n >= 0 || errno != EINTR)
                break;
            if (PyErr_CheckSignals() < 0) {
                PyBuffer_Release(&view);
                Py_DECREF(buf);
                Py_DECREF(tmp);
                return NULL;
            }
        }
        int err = errno;
        PyBuffer_Release(&view);
        Py_DECREF(buf);
        if (n < 0) {
            Py_DECREF(tmp);
            if (err == EAGAIN || err == EWOULDBLOCK)
                Py_RETURN_NONE;   /* drained */
            errno = err;
            PyErr_SetFromErrno(PyExc_OSError);
            return fatal_current(t, msg_read_error) < 0 ? NULL : Py_NewRef(Py_None);
        }
        if (n == 0) {
            Py_DECREF(tmp);
            PyObject *r = PyObject_CallMethodNoArgs(t, str_readable_eof);
            if (r == NULL)
                return NULL;
            Py_DECREF(r);
            Py_RETURN_NONE;
        }
        if (mark_data_batch(self, t, way) < 0) {
            Py_DECREF(tmp);
            return NULL;
        }
        PyObject *n_obj = PyLong_FromSsize_t(n);
        if (n_obj == NULL) {
            Py_DECREF(tmp);
            return NULL;
        }
        PyObject *uargs[2] = {protocol, n_obj};
        PyObject *r = PyObject_VectorcallMethod(str_buffer_updated, uargs,
                                                2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        Py_DECREF(n_obj);
        Py_DECREF(tmp);
        if (r == NULL)
            return fatal_current(t, msg_buffer_updated) < 0 ? NULL : Py_NewRef(Py_None);
        Py_DECREF(r);
        if (n < room && !(res & UL_POLL_END))
            Py_RETURN_NONE;   /* drained: the next arrival posts a new completion */
    }
}

/* ReadableHook(transport, proactor, slow, hot_leave) */
static PyObject *
sp_readable_hook(PyObject *module, PyObject *args)
{
    PyObject *transport, *proactor, *slow;
    Py_ssize_t hot_leave;
    if (!PyArg_ParseTuple(args, "OOOn:ReadableHook", &transport, &proactor, &slow, &hot_leave))
        return NULL;
    StreamHook *self = hook_alloc(transport, proactor, slow, readablehook_run);
    if (self != NULL)
        self->hot_min = hot_leave;
    return (PyObject *)self;
}

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
        if (n == len && size_of(data) == len)
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

/* ------------------------------------------------------------------------
 * One loop iteration: Proactor.iterate() and Loop._run_once() (non-debug).
 *
 * The Python reference for both is in the docstrings of the methods these
 * implement (uringloop/_proactor.py, uringloop/_loop.py); the rare branches
 * (recovering a cut-short harvest, datagram buffers to return, compacting
 * the timer heap, debug mode) call back into Python methods.
 */
enum {
    X_HARVESTING, X_DGRAM_RECYCLE, X_OPS, X_PASSIVE, X_MUST_ENTER, X_LOOP, X_RECYCLE,
    X_SQ_DIRTY, X_SLEEPING, X_ADDR, X_BUFRING_ADDR, X_HARVESTED, X_UNDISPATCHED, X_NAMES
};
static PyObject *px_names[X_NAMES];
static layout px_layout = {X_NAMES, px_names, {{0}}, 0, NULL};

enum {
    L_READY, L_SCHEDULED, L_STOPPING, L_TIMER_CANCELLED_COUNT, L_CLOCK_RESOLUTION, L_DEBUG,
    L_PROACTOR, L_SIGNAL_HANDLERS, L_CLOSED, L_NAMES
};
static PyObject *loop_names[L_NAMES];
static layout loop_layout = {L_NAMES, loop_names, {{0}}, 0, NULL};

enum { H_CANCELLED, H_WHEN, H_SCHEDULED, H_NAMES };
static PyObject *handle_names[H_NAMES];
static layout handle_layout = {H_NAMES, handle_names, {{0}}, 0, NULL};


/* Set by configure(): BaseEventLoop._run_once and .time, asyncio.base_events'
 * tuning constants. */
static PyObject *base_run_once, *base_time;
static Py_ssize_t min_scheduled = 100;
static double min_cancelled_fraction = 0.5, max_select_timeout = 24 * 3600;

UL_INLINE PyObject *
get_new(PyObject *obj, layout *l, int i)
{
    PyObject *tmp;
    PyObject *v = slot_get(obj, l, layout_of(l, Py_TYPE(obj)), i, &tmp);
    if (v != NULL && tmp == NULL)
        Py_INCREF(v);
    return v;
}

/* For dispatch_pending: 0 -> proactor._ops, 1 -> proactor._undispatched. */
static PyObject *
px_get(PyObject *px, int i)
{
    return get_new(px, &px_layout, i == 0 ? X_OPS : X_UNDISPATCHED);
}

UL_INLINE int
set_bool(PyObject *obj, layout *l, int i, int value)
{
    return slot_set(obj, l, layout_of(l, Py_TYPE(obj)), i, value ? Py_True : Py_False);
}

UL_INLINE int
is_true(PyObject *obj, layout *l, int i)
{
    return slot_true(obj, l, layout_of(l, Py_TYPE(obj)), i);
}

/* Proactor.iterate(ns): bytes of harvested CQEs, None, or NULL on error. */
static PyObject *
proactor_iterate(PyObject *px, long long ns)
{
    int b = is_true(px, &px_layout, X_HARVESTING);
    if (b != 0)
        return b < 0 ? NULL : PyObject_CallMethodNoArgs(px, str_recover_harvest);
    if ((b = is_true(px, &px_layout, X_DGRAM_RECYCLE)) != 0) {
        if (b < 0)
            return NULL;
        PyObject *r = PyObject_CallMethodNoArgs(px, str_return_dgram_buffers);
        if (r == NULL)
            return NULL;
        Py_DECREF(r);
    }
    PyObject *loop = NULL, *recycle = NULL, *addr = NULL, *braddr = NULL, *data = NULL;
    int must_enter_flag = is_true(px, &px_layout, X_MUST_ENTER);
    if (must_enter_flag < 0)
        return NULL;
    loop = get_new(px, &px_layout, X_LOOP);
    recycle = get_new(px, &px_layout, X_RECYCLE);
    if (loop == NULL || recycle == NULL)
        goto done;
    int must_enter = 0;
    if (must_enter_flag) {
        PyObject *ops = get_new(px, &px_layout, X_OPS);
        PyObject *passive = get_new(px, &px_layout, X_PASSIVE);
        Py_ssize_t nops = ops != NULL ? size_of(ops) : -1;
        Py_ssize_t npassive = passive != NULL ? PyLong_AsSsize_t(passive) : -1;
        Py_XDECREF(ops);
        Py_XDECREF(passive);
        if (nops < 0 || (npassive == -1 && PyErr_Occurred()))
            goto done;
        if (nops > npassive) {
            must_enter = 1;
        } else {
            /* Signal numbers arrive through the (passive) self-pipe read. */
            if ((must_enter = is_true(loop, &loop_layout, L_SIGNAL_HANDLERS)) < 0)
                goto done;
        }
    }
    if (!ns && !must_enter && must_enter_flag) {
        if ((b = is_true(px, &px_layout, X_SQ_DIRTY)) < 0)
            goto done;
        if (!b) {
            /* Busy, nothing to submit, and under DEFER_TASKRUN no completion can
             * appear without an enter: no call at all. */
            if (PyList_Check(recycle) && PyList_GET_SIZE(recycle)) {
                PyObject *r = PyObject_CallMethodNoArgs(px, str_return_buffers);
                if (r == NULL)
                    goto done;
                Py_DECREF(r);
            }
            data = Py_NewRef(Py_None);
            goto done;
        }
    }
    if (ns) {
        /* Tell call_soon_threadsafe() we may sleep, then look once more: a
         * callback queued before this store is seen here, one queued after it
         * writes to the self-pipe (see Loop._write_to_self). */
        if (set_bool(px, &px_layout, X_SLEEPING, 1) < 0)
            goto done;
        if ((b = is_true(loop, &loop_layout, L_READY)) < 0)
            goto sleeping_fail;
        if (b)
            ns = 0;
    }
    addr = get_new(px, &px_layout, X_ADDR);
    braddr = get_new(px, &px_layout, X_BUFRING_ADDR);
    if (addr == NULL || braddr == NULL)
        goto sleeping_fail;
    if (set_bool(px, &px_layout, X_SQ_DIRTY, 0) < 0
            || set_bool(px, &px_layout, X_HARVESTING, 1) < 0)
        goto sleeping_fail;
    void *ring_p, *bufring_p;
    if (cached_pointer(addr, 0, &ring_p) < 0 || cached_pointer(braddr, 1, &bufring_p) < 0)
        goto sleeping_fail;
    if (ring_p == NULL || !PyList_CheckExact(recycle)) {
        PyErr_SetString(PyExc_ValueError, "iterate(): no ring, or recycle is not a list");
        goto sleeping_fail;
    }
    PyObject *got = ring_call(ring_p, ns, must_enter, bufring_p, recycle);
    if (set_bool(px, &px_layout, X_SLEEPING, 0) < 0) {
        Py_XDECREF(got);
        goto done;
    }
    if (got == NULL)
        goto done;
    if (got == Py_None || PyLong_CheckExact(got)) {
        if (set_bool(px, &px_layout, X_HARVESTING, 0) < 0) {
            Py_DECREF(got);
            goto done;
        }
        if (got == Py_None) {
            data = got;
            goto done;
        }
        PyObject *r = PyObject_CallMethodOneArg(px, str_check_ret, got);
        Py_DECREF(got);
        if (r == NULL)
            goto done;
        Py_DECREF(r);
        data = Py_NewRef(Py_None);
        goto done;
    }
    /* bytes: count them as harvested, then keep them until dispatched. */
    PyObject *harvested = get_new(px, &px_layout, X_HARVESTED);
    PyObject *total = NULL;
    if (harvested != NULL) {
        Py_ssize_t h = PyLong_AsSsize_t(harvested);
        if (!(h == -1 && PyErr_Occurred()))
            total = PyLong_FromSsize_t(h + PyBytes_GET_SIZE(got) / (Py_ssize_t)sizeof(ul_cqe));
        Py_DECREF(harvested);
    }
    PyObject *undispatched = NULL;
    if (total == NULL
            || slot_set(px, &px_layout, layout_of(&px_layout, Py_TYPE(px)), X_HARVESTED, total) < 0
            || set_bool(px, &px_layout, X_HARVESTING, 0) < 0
            || (undispatched = get_new(px, &px_layout, X_UNDISPATCHED)) == NULL
            || PyList_Append(undispatched, got) < 0) {
        Py_XDECREF(total);
        Py_XDECREF(undispatched);
        Py_DECREF(got);
        goto done;
    }
    Py_DECREF(total);
    Py_DECREF(undispatched);
    data = got;
    goto done;
sleeping_fail:
    {
        PyObject *exc = PyErr_GetRaisedException_compat();
        if (set_bool(px, &px_layout, X_SLEEPING, 0) < 0)
            PyErr_Clear();
        PyErr_SetRaisedException_compat(exc);
    }
done:
    Py_XDECREF(loop);
    Py_XDECREF(recycle);
    Py_XDECREF(addr);
    Py_XDECREF(braddr);
    return data;
}

static PyObject *
sp_iterate(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "iterate() takes 2 arguments");
        return NULL;
    }
    long long ns = PyLong_AsLongLong(args[1]);
    if (ns == -1 && PyErr_Occurred())
        return NULL;
    return proactor_iterate(args[0], ns);
}

/* loop.time(), without the call when it is BaseEventLoop.time or the C time
 * method AND their clock is the real one: asyncio.base_events' ``time`` is the
 * time module and its ``monotonic`` the original (a test or a library such as
 * freezegun may patch either; stock's _run_once then reads the patched clock). */
static PyObject *loop_time_method(PyObject *loop, PyObject *Py_UNUSED(ignored));
static PyObject *base_globals, *real_time_module, *real_monotonic, *str_monotonic;

static int
clock_is_real(void)
{
    if (base_globals == NULL || real_time_module == NULL)
        return 0;
    PyObject *mod = PyDict_GetItemWithError(base_globals, str_time);   /* borrowed */
    PyObject *mono = mod != real_time_module ? NULL
        : PyDict_GetItemWithError(PyModule_GetDict(mod), str_monotonic);
    PyErr_Clear();   /* (str keys: no error in practice) the method call decides */
    return mono != NULL && mono == real_monotonic;
}

static int
loop_time(PyObject *loop, double *out, int *plain)
{
    if (*plain == 1) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);   /* time.monotonic() */
        *out = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
        return 0;
    }
    PyObject *m = PyObject_GetAttr(loop, str_time);
    if (m == NULL)
        return -1;
    if (((PyMethod_Check(m) && PyMethod_GET_FUNCTION(m) == base_time
                && PyMethod_GET_SELF(m) == loop)
            || (PyCFunction_Check(m) && PyCFunction_GET_SELF(m) == loop
                && PyCFunction_GET_FUNCTION(m) == (PyCFunction)loop_time_method))
            && clock_is_real()) {
        Py_DECREF(m);
        *plain = 1;   /* for the rest of this iteration */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);   /* time.monotonic() */
        *out = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
        return 0;
    }
    PyObject *r = PyObject_CallNoArgs(m);
    Py_DECREF(m);
    if (r == NULL)
        return -1;
    *out = PyFloat_AsDouble(r);
    Py_DECREF(r);
    return (*out == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

/* ------------------------------------------------------------------------
 * Callbacks: Loop.call_soon() and running a ready Handle.
 *
 * call_soon (non-debug, open loop) builds the asyncio.Handle itself -- the
 * state Handle.__init__ would set, in its slots -- and appends it to the
 * ready queue; everything else (debug mode, a closed loop, unexpected
 * arguments) goes to Loop._call_soon_slow, stock's body.  A ready Handle or
 * TimerHandle (exactly those classes) runs as Handle._run does --
 * context.run(callback, *args), an exception other than SystemExit and
 * KeyboardInterrupt reported through the handle's loop (the configured
 * ``handle_error``); any other handle's own _run() is called.
 */
enum {
    HD_CALLBACK, HD_ARGS, HD_CANCELLED, HD_LOOP, HD_SOURCE_TRACEBACK, HD_REPR, HD_CONTEXT,
    HD_NAMES
};
static PyObject *hd_names[HD_NAMES];
static layout hd_layout = {HD_NAMES, hd_names, {{0}}, 0, NULL};
static PyTypeObject *handle_cls, *timer_handle_cls;
static const layout_way *handle_way;   /* Handle's slots, all present; NULL: no fast path */
static PyObject *handle_error, *str_call_soon_slow, *str_context;

static int
run_handle(PyObject *h)
{
    PyTypeObject *tp = Py_TYPE(h);
    if (handle_way == NULL || (tp != handle_cls && tp != timer_handle_cls)) {
        PyObject *r = PyObject_CallMethodNoArgs(h, str_run);
        Py_XDECREF(r);
        return r == NULL ? -1 : 0;
    }
    /* Handle and TimerHandle share Handle's slots (TimerHandle adds its own). */
    char *base = (char *)h;
    PyObject *ctx = *(PyObject **)(base + handle_way->off[HD_CONTEXT]);
    PyObject *cb = *(PyObject **)(base + handle_way->off[HD_CALLBACK]);
    PyObject *args = *(PyObject **)(base + handle_way->off[HD_ARGS]);
    if (ctx == NULL || cb == NULL || args == NULL || !PyTuple_CheckExact(args)
            || !PyContext_CheckExact(ctx)) {
        PyObject *r = PyObject_CallMethodNoArgs(h, str_run);
        Py_XDECREF(r);
        return r == NULL ? -1 : 0;
    }
    Py_INCREF(ctx);
    Py_INCREF(cb);
    Py_INCREF(args);
    PyObject *r = NULL;
    if (PyContext_Enter(ctx) == 0) {
        r = PyObject_Vectorcall(cb, &PyTuple_GET_ITEM(args, 0),
                                (size_t)PyTuple_GET_SIZE(args), NULL);
        if (PyContext_Exit(ctx) < 0)
            Py_CLEAR(r);
    }
    Py_DECREF(ctx);
    Py_DECREF(cb);
    Py_DECREF(args);
    if (r != NULL) {
        Py_DECREF(r);
        return 0;
    }
    if (PyErr_ExceptionMatches(PyExc_SystemExit)
            || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
        return -1;
    PyObject *exc = PyErr_GetRaisedException_compat();
    r = PyObject_CallFunctionObjArgs(handle_error, h, exc, NULL);
    Py_DECREF(exc);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* A Handle (or TimerHandle) of class cls, its fields set as Handle.__init__
 * sets them outside debug mode: callback(*cargs) in context (None: a copy of
 * the current one).  handle_way must be set. */
static PyObject *
new_handle(PyTypeObject *cls, PyObject *loop, PyObject *callback, PyObject *const *cargs,
           Py_ssize_t ncargs, PyObject *context)
{
    PyObject *targs = PyTuple_New(ncargs);
    PyObject *ctx = context == Py_None ? PyContext_CopyCurrent() : Py_NewRef(context);
    PyObject *h = (targs && ctx) ? cls->tp_alloc(cls, 0) : NULL;
    if (h == NULL) {
        Py_XDECREF(targs);
        Py_XDECREF(ctx);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < ncargs; i++)
        PyTuple_SET_ITEM(targs, i, Py_NewRef(cargs[i]));
    char *base = (char *)h;
#define HSET(i, v) (*(PyObject **)(base + handle_way->off[i]) = (v))
    HSET(HD_CONTEXT, ctx);
    HSET(HD_LOOP, Py_NewRef(loop));
    HSET(HD_CALLBACK, Py_NewRef(callback));
    HSET(HD_ARGS, targs);
    HSET(HD_CANCELLED, Py_NewRef(Py_False));
    HSET(HD_REPR, Py_NewRef(Py_None));
    HSET(HD_SOURCE_TRACEBACK, Py_NewRef(Py_None));
#undef HSET
    return h;
}

static PyObject *
loop_call_soon(PyObject *loop, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *context = Py_None;
    int slow = handle_way == NULL || nargs < 1;
    if (kwnames != NULL) {
        Py_ssize_t nkw = PyTuple_GET_SIZE(kwnames);
        PyObject *kw = nkw == 1 ? PyTuple_GET_ITEM(kwnames, 0) : NULL;
        /* (_asyncio's futures pass a "context" string of their own, not interned) */
        if (kw != NULL && (kw == str_context
                           || PyUnicode_CompareWithASCIIString(kw, "context") == 0))
            context = args[nargs];
        else
            slow = 1;
    }
    const layout_way *lw = layout_of(&loop_layout, Py_TYPE(loop));
    int b;
    if (!slow) {
        if ((b = slot_true(loop, &loop_layout, lw, L_DEBUG)) != 0
                || (b = slot_true(loop, &loop_layout, lw, L_CLOSED)) != 0) {
            if (b < 0)
                return NULL;
            slow = 1;
        }
    }
    if (slow) {
        /* Stock's body, and its errors ("BaseEventLoop.call_soon() ..."). */
        PyObject *m = PyObject_GetAttr(loop, str_call_soon_slow);
        if (m == NULL)
            return NULL;
        PyObject *r = PyObject_Vectorcall(m, args, nargsf, kwnames);
        Py_DECREF(m);
        return r;
    }
    PyObject *tmp;
    PyObject *ready = slot_get(loop, &loop_layout, lw, L_READY, &tmp);
    if (ready == NULL)
        return NULL;
    if (tmp == NULL)
        tmp = Py_NewRef(ready);
    PyObject *h = new_handle(handle_cls, loop, args[0], args + 1, nargs - 1, context);
    if (h == NULL) {
        Py_DECREF(tmp);
        return NULL;
    }
    PyObject *r = PyObject_CallMethodOneArg(ready, str_append, h);
    Py_DECREF(tmp);
    if (r == NULL) {
        Py_DECREF(h);
        return NULL;
    }
    Py_DECREF(r);
    return h;
}


/* ---- Timers: call_at, call_later and the heap of loop._scheduled ----------
 *
 * Stock pushes a TimerHandle with heapq.heappush and pops expired ones with
 * heapq.heappop, whose every comparison calls TimerHandle.__lt__, a Python
 * method (``self._when < other._when``).  These do the same heap moves as
 * heapq's (so the heap is the one stock would build, ties included), but two
 * exact TimerHandles are compared by their _when directly.  Anything else --
 * a subclass, an unset _when -- is compared with ``<`` as heapq would. */

static PyObject *base_call_at, *base_call_later, *str_call_at;
/* TimerHandle's _when and _scheduled slot offsets; -1: no fast path */
static Py_ssize_t timer_when_off = -1, timer_sched_off = -1;

static int
timer_lt(PyObject *a, PyObject *b)
{
    if (timer_when_off >= 0 && Py_TYPE(a) == timer_handle_cls
            && Py_TYPE(b) == timer_handle_cls) {
        PyObject *wa = *(PyObject **)((char *)a + timer_when_off);
        PyObject *wb = *(PyObject **)((char *)b + timer_when_off);
        if (wa != NULL && wb != NULL) {
            if (PyFloat_CheckExact(wa) && PyFloat_CheckExact(wb))
                return PyFloat_AS_DOUBLE(wa) < PyFloat_AS_DOUBLE(wb);
            return PyObject_RichCompareBool(wa, wb, Py_LT);
        }
    }
    return PyObject_RichCompareBool(a, b, Py_LT);
}

static int
heap_changed(void)
{
    PyErr_SetString(PyExc_RuntimeError, "list changed size during iteration");
    return -1;
}

/* Move heap[pos] towards the root while it is smaller than its parent. */
static int
heap_bubble(PyObject *heap, Py_ssize_t root, Py_ssize_t pos)
{
    Py_ssize_t size = PyList_GET_SIZE(heap);
    while (pos > root) {
        Py_ssize_t up = (pos - 1) >> 1;
        PyObject *item = Py_NewRef(PyList_GET_ITEM(heap, pos));
        PyObject *parent = Py_NewRef(PyList_GET_ITEM(heap, up));
        int lt = timer_lt(item, parent);
        Py_DECREF(item);
        Py_DECREF(parent);
        if (lt < 0)
            return -1;
        if (size != PyList_GET_SIZE(heap))
            return heap_changed();
        if (!lt)
            break;
        item = PyList_GET_ITEM(heap, pos);
        PyList_SET_ITEM(heap, pos, PyList_GET_ITEM(heap, up));
        PyList_SET_ITEM(heap, up, item);
        pos = up;
    }
    return 0;
}

/* heap[pos] was replaced: walk it down along the smaller children to a leaf,
 * then bubble it back up (heapq's _siftup). */
static int
heap_settle(PyObject *heap, Py_ssize_t pos)
{
    Py_ssize_t end = PyList_GET_SIZE(heap), root = pos;
    while (pos < end / 2) {
        Py_ssize_t child = 2 * pos + 1;
        if (child + 1 < end) {
            PyObject *left = Py_NewRef(PyList_GET_ITEM(heap, child));
            PyObject *right = Py_NewRef(PyList_GET_ITEM(heap, child + 1));
            int lt = timer_lt(left, right);
            Py_DECREF(left);
            Py_DECREF(right);
            if (lt < 0)
                return -1;
            if (end != PyList_GET_SIZE(heap))
                return heap_changed();
            if (!lt)
                child++;
        }
        PyObject *item = PyList_GET_ITEM(heap, pos);
        PyList_SET_ITEM(heap, pos, PyList_GET_ITEM(heap, child));
        PyList_SET_ITEM(heap, child, item);
        pos = child;
    }
    return heap_bubble(heap, root, pos);
}

static int
heap_push(PyObject *heap, PyObject *item)
{
    if (PyList_Append(heap, item) < 0)
        return -1;
    return heap_bubble(heap, 0, PyList_GET_SIZE(heap) - 1);
}

/* heapq.heappop(heap) for a list. */
static PyObject *
heap_pop(PyObject *heap)
{
    Py_ssize_t n = PyList_GET_SIZE(heap);
    if (n == 0) {
        PyErr_SetString(PyExc_IndexError, "index out of range");
        return NULL;
    }
    PyObject *last = Py_NewRef(PyList_GET_ITEM(heap, n - 1));
    if (PyList_SetSlice(heap, n - 1, n, NULL) < 0) {
        Py_DECREF(last);
        return NULL;
    }
    if (n == 1)
        return last;
    PyObject *top = PyList_GET_ITEM(heap, 0);   /* its reference passes to the caller */
    PyList_SET_ITEM(heap, 0, last);
    if (heap_settle(heap, 0) < 0) {
        Py_DECREF(top);
        return NULL;
    }
    return top;
}

/* func(first, *args[skip:], **kwargs) for a vectorcall's arguments: ``first``
 * put before them (skip 0) or in place of the first (skip 1). */
static PyObject *
call_with_first(PyObject *func, PyObject *first, Py_ssize_t skip, PyObject *const *args,
                size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf) - skip;
    Py_ssize_t n = nargs + (kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames)) + 1;
    PyObject *small[8], **full = small;
    if (n > (Py_ssize_t)(sizeof(small) / sizeof(small[0]))
            && (full = PyMem_New(PyObject *, n)) == NULL)
        return PyErr_NoMemory();
    full[0] = first;
    memcpy(full + 1, args + skip, (n - 1) * sizeof(PyObject *));
    PyObject *r = PyObject_Vectorcall(func, full, (size_t)nargs + 1, kwnames);
    if (full != small)
        PyMem_Free(full);
    return r;
}

/* func(self, *args, **kwargs) for a vectorcall's arguments. */
static inline PyObject *
call_with_self(PyObject *func, PyObject *self, PyObject *const *args, size_t nargsf,
               PyObject *kwnames)
{
    return call_with_first(func, self, 0, args, nargsf, kwnames);
}

/* Whether call_at/call_later may take the fast path: at least two positional
 * arguments, the first an exact float or int, at most a "context" keyword
 * (stored in *context), no debug mode, an open loop.  1, 0 or -1 (error). */
static int
timer_call_fast(PyObject *loop, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                PyObject **context)
{
    *context = Py_None;
    if (handle_way == NULL || timer_when_off < 0 || nargs < 2
            || !(PyFloat_CheckExact(args[0]) || PyLong_CheckExact(args[0])))
        return 0;
    if (kwnames != NULL) {
        if (PyTuple_GET_SIZE(kwnames) != 1
                || PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "context"))
            return 0;
        *context = args[nargs];
    }
    const layout_way *lw = layout_of(&loop_layout, Py_TYPE(loop));
    int b;
    if ((b = slot_true(loop, &loop_layout, lw, L_DEBUG)) != 0
            || (b = slot_true(loop, &loop_layout, lw, L_CLOSED)) != 0)
        return b < 0 ? -1 : 0;
    return 1;
}

/* call_at(self, when, callback, *args, context=None): stock's body outside
 * debug mode; everything else is BaseEventLoop.call_at. */
static PyObject *
loop_call_at(PyObject *loop, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *context;
    int fast = timer_call_fast(loop, args, nargs, kwnames, &context);
    if (fast < 0)
        return NULL;
    PyObject *scheduled = NULL;
    if (fast) {
        scheduled = get_new(loop, &loop_layout, L_SCHEDULED);
        if (scheduled == NULL)
            return NULL;
        fast = PyList_CheckExact(scheduled);
    }
    if (!fast) {
        Py_XDECREF(scheduled);
        if (base_call_at == NULL) {
            PyErr_SetString(PyExc_RuntimeError, "_speedups.configure_timers() was not called");
            return NULL;
        }
        return call_with_self(base_call_at, loop, args, nargsf, kwnames);
    }
    PyObject *h = new_handle(timer_handle_cls, loop, args[1], args + 2, nargs - 2, context);
    if (h == NULL) {
        Py_DECREF(scheduled);
        return NULL;
    }
    *(PyObject **)((char *)h + timer_when_off) = Py_NewRef(args[0]);
    *(PyObject **)((char *)h + timer_sched_off) = Py_NewRef(Py_False);
    if (heap_push(scheduled, h) < 0) {
        Py_DECREF(scheduled);
        Py_DECREF(h);
        return NULL;
    }
    Py_DECREF(scheduled);
    Py_SETREF(*(PyObject **)((char *)h + timer_sched_off), Py_NewRef(Py_True));
    return h;
}

/* call_later(self, delay, callback, *args, context=None): stock's body,
 * ``self.call_at(self.time() + delay, ...)``, outside debug mode. */
static PyObject *
loop_call_later(PyObject *loop, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *context;
    int fast = timer_call_fast(loop, args, nargs, kwnames, &context);
    if (fast < 0)
        return NULL;
    if (!fast) {
        if (base_call_later == NULL) {
            PyErr_SetString(PyExc_RuntimeError, "_speedups.configure_timers() was not called");
            return NULL;
        }
        return call_with_self(base_call_later, loop, args, nargsf, kwnames);
    }
    PyObject *now = PyObject_CallMethodNoArgs(loop, str_time);
    if (now == NULL)
        return NULL;
    PyObject *when = PyNumber_Add(now, args[0]);
    Py_DECREF(now);
    if (when == NULL)
        return NULL;
    PyObject *m = PyObject_GetAttr(loop, str_call_at);   /* a subclass's call_at is called */
    PyObject *r = m == NULL ? NULL : call_with_first(m, when, 1, args, nargsf, kwnames);
    Py_XDECREF(m);
    Py_DECREF(when);
    return r;
}

/* configure_timers(BaseEventLoop.call_at, BaseEventLoop.call_later): after
 * configure_handles(). */
static PyObject *
sp_configure_timers(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "configure_timers() takes 2 arguments");
        return NULL;
    }
    Py_XSETREF(base_call_at, Py_NewRef(args[0]));
    Py_XSETREF(base_call_later, Py_NewRef(args[1]));
    timer_when_off = timer_sched_off = -1;
    if (timer_handle_cls != NULL) {
        const layout_way *w = layout_of(&handle_layout, timer_handle_cls);
        if (w->off[H_WHEN] >= 0 && w->off[H_SCHEDULED] >= 0) {
            timer_when_off = w->off[H_WHEN];
            timer_sched_off = w->off[H_SCHEDULED];
        }
    }
    return PyBool_FromLong(timer_when_off >= 0);
}

/* configure_handles(Handle, TimerHandle, handle_error) */
static PyObject *
sp_configure_handles(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyType_Check(args[0]) || !PyType_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "configure_handles(Handle, TimerHandle, handle_error)");
        return NULL;
    }
    Py_XSETREF(handle_cls, (PyTypeObject *)Py_NewRef(args[0]));
    Py_XSETREF(timer_handle_cls, (PyTypeObject *)Py_NewRef(args[1]));
    Py_XSETREF(handle_error, Py_NewRef(args[2]));
    handle_way = NULL;
    const layout_way *w = layout_of(&hd_layout, handle_cls);
    const layout_way *tw = layout_of(&hd_layout, timer_handle_cls);
    for (int i = 0; i < HD_NAMES; i++) {
        if (w->off[i] < 0 || tw->off[i] != w->off[i])
            Py_RETURN_FALSE;   /* not the layout we know: Python paths only */
    }
    handle_way = layout_of(&hd_layout, handle_cls);
    Py_RETURN_TRUE;
}

/* Run the first n callbacks of the ready deque. */
static int
run_ready(PyObject *ready, Py_ssize_t n)
{
    while (n-- > 0) {
        PyObject *h = PyObject_CallMethodNoArgs(ready, str_popleft);
        if (h == NULL)
            return -1;
        int c = is_true(h, &handle_layout, H_CANCELLED);
        if (c == 0)
            c = run_handle(h);
        Py_DECREF(h);
        if (c < 0)
            return -1;
    }
    return 0;
}

static PyObject *
loop_run_once(PyObject *loop, PyObject *Py_UNUSED(ignored))
{
    int b = is_true(loop, &loop_layout, L_DEBUG);
    if (b != 0)   /* debug mode: CPython's _run_once, with its slow-callback accounting */
        return b < 0 ? NULL : PyObject_CallOneArg(base_run_once, loop);
    PyObject *scheduled = NULL, *ready = NULL, *px = NULL, *batch = NULL, *ret = NULL;
    int plain_time = 0;   /* 1: loop.time is BaseEventLoop.time (looked up once) */
    scheduled = get_new(loop, &loop_layout, L_SCHEDULED);
    ready = get_new(loop, &loop_layout, L_READY);
    px = get_new(loop, &loop_layout, L_PROACTOR);
    if (scheduled == NULL || ready == NULL || px == NULL)
        goto done;
    if (!PyList_CheckExact(scheduled)) {
        PyErr_SetString(PyExc_TypeError, "loop._scheduled must be a list");
        goto done;
    }
    /* Cancelled timers: compact the heap when they are many, else drop those
     * at its head (Loop._compact_timers). */
    Py_ssize_t count = PyList_GET_SIZE(scheduled);
    if (count) {
        int compact = 0;
        if (count > min_scheduled) {
            PyObject *tcc = get_new(loop, &loop_layout, L_TIMER_CANCELLED_COUNT);
            if (tcc == NULL)
                goto done;
            double c = PyFloat_AsDouble(tcc);
            Py_DECREF(tcc);
            if (c == -1.0 && PyErr_Occurred())
                goto done;
            compact = c / (double)count > min_cancelled_fraction;
        }
        if (!compact) {
            compact = is_true(PyList_GET_ITEM(scheduled, 0), &handle_layout, H_CANCELLED);
            if (compact < 0)
                goto done;
        }
        if (compact) {
            PyObject *r = PyObject_CallMethodNoArgs(loop, str_compact_timers);
            if (r == NULL)
                goto done;
            Py_DECREF(r);
            Py_SETREF(scheduled, get_new(loop, &loop_layout, L_SCHEDULED));
            if (scheduled == NULL)
                goto done;
            if (!PyList_CheckExact(scheduled)) {
                PyErr_SetString(PyExc_TypeError, "loop._scheduled must be a list");
                goto done;
            }
        }
    }
    long long ns;
    /* Busy (no sleeping in the kernel): callbacks ready, stopping, or a harvest
     * still to dispatch (a Ctrl-C cut the last iteration short: the ops it
     * completes, the self-pipe read among them, re-arm only once dispatched). */
    int busy = is_true(loop, &loop_layout, L_READY);
    if (busy == 0)
        busy = is_true(loop, &loop_layout, L_STOPPING);
    if (busy == 0)
        busy = is_true(px, &px_layout, X_UNDISPATCHED);
    if (busy < 0)
        goto done;
    if (busy) {
        ns = 0;
    } else if (PyList_GET_SIZE(scheduled)) {
        PyObject *when_obj = get_new(PyList_GET_ITEM(scheduled, 0), &handle_layout, H_WHEN);
        if (when_obj == NULL)
            goto done;
        double when = PyFloat_AsDouble(when_obj);
        Py_DECREF(when_obj);
        double now;
        if ((when == -1.0 && PyErr_Occurred()) || loop_time(loop, &now, &plain_time) < 0)
            goto done;
        double timeout = when - now;
        if (timeout > max_select_timeout)
            timeout = max_select_timeout;
        ns = timeout > 0 ? (long long)ceil(timeout * 1e9) : 0;
    } else {
        ns = -1;
    }
    batch = proactor_iterate(px, ns);
    if (batch == NULL)
        goto done;
    Py_ssize_t n_ready = size_of(ready);
    if (n_ready < 0)
        goto done;
    if (PyList_GET_SIZE(scheduled)) {
        PyObject *res_obj = get_new(loop, &loop_layout, L_CLOCK_RESOLUTION);
        if (res_obj == NULL)
            goto done;
        double resolution = PyFloat_AsDouble(res_obj);
        Py_DECREF(res_obj);
        double now;
        if ((resolution == -1.0 && PyErr_Occurred()) || loop_time(loop, &now, &plain_time) < 0)
            goto done;
        double end_time = now + resolution;
        while (PyList_GET_SIZE(scheduled)) {
            PyObject *when_obj = get_new(PyList_GET_ITEM(scheduled, 0), &handle_layout, H_WHEN);
            if (when_obj == NULL)
                goto done;
            double when = PyFloat_AsDouble(when_obj);
            Py_DECREF(when_obj);
            if (when == -1.0 && PyErr_Occurred())
                goto done;
            if (when >= end_time)   /* (not "<": a NaN deadline runs now) */
                break;
            PyObject *h = heap_pop(scheduled);
            if (h == NULL)
                goto done;
            if (set_bool(h, &handle_layout, H_SCHEDULED, 0) < 0) {
                Py_DECREF(h);
                goto done;
            }
            PyObject *r = PyObject_CallMethodOneArg(ready, str_append, h);
            Py_DECREF(h);
            if (r == NULL)
                goto done;
            Py_DECREF(r);
        }
    }
    Py_ssize_t n_timers = size_of(ready);
    if (n_timers < 0)
        goto done;
    n_timers -= n_ready;
    /* If a ready callback raises (Ctrl-C), the harvest stays pending in
     * _undispatched: the next iteration's dispatch runs it. */
    if (n_ready && run_ready(ready, n_ready) < 0)
        goto done;
    {
        PyObject *und = get_new(px, &px_layout, X_UNDISPATCHED);
        if (und == NULL)
            goto done;
        int pending = truth(und);
        Py_DECREF(und);
        if (pending < 0)
            goto done;
        if (pending) {
            PyObject *r = dispatch_pending(px);
            if (r == NULL)
                goto done;
            Py_DECREF(r);
        }
    }
    if (n_timers > 0 && run_ready(ready, n_timers) < 0)
        goto done;
    ret = Py_NewRef(Py_None);
done:
    Py_XDECREF(scheduled);
    Py_XDECREF(ready);
    Py_XDECREF(px);
    Py_XDECREF(batch);
    return ret;
}


/* ---- Small methods asyncio's C futures and tasks call per step ----------
 *
 * _asyncio's Future and Task call loop.get_debug() when created; asyncio's
 * streams and aiohttp call loop.create_future(), loop.create_task() and
 * transport.is_closing() per message.  As Python methods each is a frame;
 * these are the same bodies in C (uvloop's are Cython).  create_future and
 * create_task look asyncio.futures.Future / asyncio.tasks.Task up per call,
 * as stock's body does, so a patched module attribute is honoured. */

static PyObject *futures_module, *tasks_module, *base_create_task, *base_create_future;
static PyObject *str_future, *str_task, *str_task_factory, *kw_loop, *kw_task;
static PyObject *str_thread_id;

/* get_debug(self) -> self._debug */
static PyObject *
loop_get_debug(PyObject *loop, PyObject *Py_UNUSED(ignored))
{
    return get_new(loop, &loop_layout, L_DEBUG);
}

/* create_future(self) -> asyncio.futures.Future(loop=self); in debug mode
 * BaseEventLoop.create_future itself. */
static PyObject *
loop_create_future(PyObject *loop, PyObject *Py_UNUSED(ignored))
{
    if (futures_module == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_speedups.configure_tasks() was not called");
        return NULL;
    }
    int b = is_true(loop, &loop_layout, L_DEBUG);
    if (b != 0)   /* debug: stock's frame, where the future's source traceback ends */
        return b < 0 ? NULL : PyObject_CallOneArg(base_create_future, loop);
    PyObject *cls = PyObject_GetAttr(futures_module, str_future);
    if (cls == NULL)
        return NULL;
    PyObject *r = PyObject_Vectorcall(cls, &loop, 0, kw_loop);
    Py_DECREF(cls);
    return r;
}

/* create_task(self, coro, *, name=None, context=None): stock's body when
 * there is no task factory, the loop is open and not in debug mode (then no
 * source traceback needs trimming and _set_task_name(task, None) is a no-op);
 * everything else is BaseEventLoop.create_task itself. */
static PyObject *
loop_create_task(PyObject *loop, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *name = Py_None, *context = Py_None;
    int slow = nargs != 1 || tasks_module == NULL;
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t i = 0; i < nkw && !slow; i++) {
        PyObject *kw = PyTuple_GET_ITEM(kwnames, i);
        if (PyUnicode_CompareWithASCIIString(kw, "name") == 0)
            name = args[nargs + i];
        else if (PyUnicode_CompareWithASCIIString(kw, "context") == 0)
            context = args[nargs + i];
        else
            slow = 1;
    }
    if (!slow) {
        const layout_way *lw = layout_of(&loop_layout, Py_TYPE(loop));
        int b;
        if ((b = slot_true(loop, &loop_layout, lw, L_DEBUG)) != 0
                || (b = slot_true(loop, &loop_layout, lw, L_CLOSED)) != 0) {
            if (b < 0)
                return NULL;
            slow = 1;
        }
    }
    if (!slow) {
        PyObject *factory = PyObject_GetAttr(loop, str_task_factory);
        if (factory == NULL)
            return NULL;
        slow = factory != Py_None;
        Py_DECREF(factory);
    }
    if (slow) {
        if (base_create_task == NULL) {
            PyErr_SetString(PyExc_RuntimeError, "_speedups.configure_tasks() was not called");
            return NULL;
        }
        return call_with_self(base_create_task, loop, args, nargsf, kwnames);
    }
    PyObject *cls = PyObject_GetAttr(tasks_module, str_task);
    if (cls == NULL)
        return NULL;
    PyObject *targs[4] = {args[0], loop, name, context};
    PyObject *task = PyObject_Vectorcall(cls, targs, 1, kw_task);
    Py_DECREF(cls);
    return task;
}

/* time(self) -> time.monotonic(), looked up in asyncio.base_events' globals
 * per call as stock's body does (a test may patch base_events.time). */
static PyObject *
loop_time_method(PyObject *loop, PyObject *Py_UNUSED(ignored))
{
    if (base_globals == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_speedups.configure_tasks() was not called");
        return NULL;
    }
    PyObject *mod = PyDict_GetItemWithError(base_globals, str_time);   /* borrowed */
    if (mod == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_NameError, "name 'time' is not defined");
        return NULL;
    }
    return PyObject_CallMethodNoArgs(mod, str_monotonic);
}

/* is_running(self) -> self._thread_id is not None */
static PyObject *
loop_is_running(PyObject *loop, PyObject *Py_UNUSED(ignored))
{
    PyObject *tid = PyObject_GetAttr(loop, str_thread_id);
    if (tid == NULL)
        return NULL;
    int running = tid != Py_None;
    Py_DECREF(tid);
    return PyBool_FromLong(running);
}

/* UringSocketTransport.is_closing(self) -> self._closing */
static PyObject *
transport_is_closing(PyObject *t, PyObject *Py_UNUSED(ignored))
{
    return get_new(t, &transport_layout, T_CLOSING);
}

/* configure_tasks(asyncio.futures, asyncio.tasks, BaseEventLoop.create_task,
 *                 BaseEventLoop.create_future, vars(asyncio.base_events)) */
static PyObject *
sp_configure_tasks(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 || !PyDict_Check(args[4])) {
        PyErr_SetString(PyExc_TypeError, "configure_tasks() takes 4 objects and a dict");
        return NULL;
    }
    PyObject *time_mod = PyImport_ImportModule("time");
    PyObject *mono = time_mod == NULL ? NULL : PyObject_GetAttr(time_mod, str_monotonic);
    if (mono == NULL) {
        Py_XDECREF(time_mod);
        return NULL;
    }
    Py_XSETREF(real_time_module, time_mod);
    Py_XSETREF(real_monotonic, mono);
    Py_XSETREF(base_create_future, Py_NewRef(args[3]));
    Py_XSETREF(base_globals, Py_NewRef(args[4]));
    Py_XSETREF(futures_module, Py_NewRef(args[0]));
    Py_XSETREF(tasks_module, Py_NewRef(args[1]));
    Py_XSETREF(base_create_task, Py_NewRef(args[2]));
    Py_RETURN_NONE;
}


static PyObject *
sp_configure(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "configure() takes 5 arguments");
        return NULL;
    }
    Py_ssize_t ms = PyLong_AsSsize_t(args[2]);
    double frac = PyFloat_AsDouble(args[3]);
    double maxt = PyFloat_AsDouble(args[4]);
    if (PyErr_Occurred())
        return NULL;
    Py_XSETREF(base_run_once, Py_NewRef(args[0]));
    Py_XSETREF(base_time, Py_NewRef(args[1]));
    min_scheduled = ms;
    min_cancelled_fraction = frac;
    max_select_timeout = maxt;
    Py_RETURN_NONE;
}


/* The methods this module gives Python classes (method(name)). */
static PyMethodDef class_methods[] = {
    {"write", (PyCFunction)(void (*)(void))transport_write, METH_FASTCALL,
     "write($self, data, /)\n--\n\n"
     "Write bytes to the transport; never blocks (C; see UringSocketTransport)."},
    {"_run_once", (PyCFunction)loop_run_once, METH_NOARGS,
     "_run_once($self, /)\n--\n\n"
     "One loop iteration (C; see uringloop._loop.Loop)."},
    {"call_soon", (PyCFunction)(void (*)(void))loop_call_soon, METH_FASTCALL | METH_KEYWORDS,
     "call_soon($self, callback, *args, context=None)\n--\n\n"
     "Arrange for a callback to be called as soon as possible (C; see uringloop._loop.Loop)."},
    {"call_at", (PyCFunction)(void (*)(void))loop_call_at, METH_FASTCALL | METH_KEYWORDS,
     "call_at($self, when, callback, *args, context=None)\n--\n\n"
     "Like call_later(), but uses an absolute time (C; see uringloop._loop.Loop)."},
    {"call_later", (PyCFunction)(void (*)(void))loop_call_later, METH_FASTCALL | METH_KEYWORDS,
     "call_later($self, delay, callback, *args, context=None)\n--\n\n"
     "Arrange for a callback to be called at a given time (C; see uringloop._loop.Loop)."},
    {"get_debug", (PyCFunction)loop_get_debug, METH_NOARGS,
     "get_debug($self, /)\n--\n\nWhether the loop is in debug mode (C)."},
    {"create_future", (PyCFunction)loop_create_future, METH_NOARGS,
     "create_future($self, /)\n--\n\nCreate a Future object attached to the loop (C)."},
    {"create_task", (PyCFunction)(void (*)(void))loop_create_task, METH_FASTCALL | METH_KEYWORDS,
     "create_task($self, coro, *, name=None, context=None)\n--\n\n"
     "Schedule a coroutine object; return a task object (C; see uringloop._loop.Loop)."},
    {"time", (PyCFunction)loop_time_method, METH_NOARGS,
     "time($self, /)\n--\n\nThe loop's clock: time.monotonic() (C)."},
    {"is_running", (PyCFunction)loop_is_running, METH_NOARGS,
     "is_running($self, /)\n--\n\nWhether the loop is running (C)."},
    {"is_closing", (PyCFunction)transport_is_closing, METH_NOARGS,
     "is_closing($self, /)\n--\n\nWhether the transport is closing or closed (C)."},
};

/* method(name): the named C method as a method descriptor of ``object``: it
 * binds to any instance, and the interpreter calls it without creating a
 * bound-method object. */
static PyObject *
sp_method(PyObject *module, PyObject *name)
{
    const char *want = PyUnicode_AsUTF8(name);
    if (want == NULL)
        return NULL;
    for (size_t i = 0; i < sizeof(class_methods) / sizeof(class_methods[0]); i++) {
        if (strcmp(class_methods[i].ml_name, want) == 0)
            return PyDescr_NewMethod(&PyBaseObject_Type, &class_methods[i]);
    }
    PyErr_Format(PyExc_ValueError, "no C method %R", name);
    return NULL;
}

static PyMethodDef sp_methods[] = {
    {"method", (PyCFunction)sp_method, METH_O,
     "method(name) -> the named C method (see class_methods) as a descriptor"},
    {"dispatch", (PyCFunction)sp_dispatch, METH_O,
     "dispatch(proactor): run the completions of every harvested batch, oldest first"},
    {"iterate", (PyCFunction)(void (*)(void))sp_iterate, METH_FASTCALL,
     "iterate(proactor, ns) -> bytes | None: Proactor.iterate"},
    {"RecvHook", (PyCFunction)sp_recv_hook, METH_VARARGS,
     "RecvHook(transport, proactor, recycle, slow, base, buf_size, nbufs) -> a "
     "multishot receive's completion handler"},
    {"ReadableHook", (PyCFunction)sp_readable_hook, METH_VARARGS,
     "ReadableHook(transport, proactor, slow) -> a multishot POLLIN completion handler"},
    {"configure_handles", (PyCFunction)(void (*)(void))sp_configure_handles, METH_FASTCALL,
     "configure_handles(Handle, TimerHandle, handle_error) -> whether the fast path is on"},
    {"configure_timers", (PyCFunction)(void (*)(void))sp_configure_timers, METH_FASTCALL,
     "configure_timers(BaseEventLoop.call_at, BaseEventLoop.call_later) -> whether the "
     "fast path is on"},
    {"configure_tasks", (PyCFunction)(void (*)(void))sp_configure_tasks, METH_FASTCALL,
     "configure_tasks(asyncio.futures, asyncio.tasks, BaseEventLoop.create_task, "
     "BaseEventLoop.create_future, vars(asyncio.base_events))"},
    {"configure", (PyCFunction)(void (*)(void))sp_configure, METH_FASTCALL,
     "configure(base_run_once, base_time, min_scheduled, min_cancelled_fraction, "
     "max_select_timeout)"},
    {"send", (PyCFunction)(void (*)(void))sp_send, METH_FASTCALL,
     "send(fd, data) -> bytes sent (0: would block)"},
    {NULL, NULL, 0, NULL},
};

static int
sp_exec(PyObject *module)
{
    if (deque_type == NULL) {
        PyObject *collections = PyImport_ImportModule("collections");
        if (collections == NULL)
            return -1;
        deque_type = (PyTypeObject *)PyObject_GetAttrString(collections, "deque");
        Py_DECREF(collections);
        if (deque_type == NULL)
            return -1;
        if (!PyType_Check(deque_type)) {
            Py_CLEAR(deque_type);
            PyErr_SetString(PyExc_TypeError, "collections.deque is not a type");
            return -1;
        }
    }
    str_callback = PyUnicode_InternFromString("callback");
    str_multishot = PyUnicode_InternFromString("multishot");
    str_complete = PyUnicode_InternFromString("complete");
    if (str_callback == NULL || str_multishot == NULL || str_complete == NULL)
        return -1;
    static const char *const tnames[T_NAMES] = {
        "_closing", "_paused", "_stash", "_buffered", "_protocol", "_data_batch", "_eof",
        "_conn_lost", "_send_op", "_zc_min", "_empty_waiter", "_sock", "_sock_fd", "_hot",
        "_read_eof",
    };
    for (int i = 0; i < T_NAMES; i++) {
        if (transport_names[i] == NULL
                && (transport_names[i] = PyUnicode_InternFromString(tnames[i])) == NULL)
            return -1;
    }
    op_names[O_CALLBACK] = Py_NewRef(str_callback);
    op_names[O_MULTISHOT] = Py_NewRef(str_multishot);
    static const char *const xnames[X_NAMES] = {
        "_harvesting", "dgram_recycle", "_ops", "_passive", "_must_enter", "_loop", "recycle",
        "_sq_dirty", "sleeping", "_addr", "_bufring_addr", "_harvested", "_undispatched",
    };
    static const char *const lnames[L_NAMES] = {
        "_ready", "_scheduled", "_stopping", "_timer_cancelled_count", "_clock_resolution",
        "_debug", "_proactor", "_signal_handlers", "_closed",
    };
    static const char *const hdnames[HD_NAMES] = {
        "_callback", "_args", "_cancelled", "_loop", "_source_traceback", "_repr", "_context",
    };
    for (int i = 0; i < HD_NAMES; i++) {
        if (hd_names[i] == NULL
                && (hd_names[i] = PyUnicode_InternFromString(hdnames[i])) == NULL)
            return -1;
    }
    static const char *const hnames[H_NAMES] = {"_cancelled", "_when", "_scheduled"};
    for (int i = 0; i < X_NAMES; i++) {
        if (px_names[i] == NULL && (px_names[i] = PyUnicode_InternFromString(xnames[i])) == NULL)
            return -1;
    }
    for (int i = 0; i < L_NAMES; i++) {
        if (loop_names[i] == NULL
                && (loop_names[i] = PyUnicode_InternFromString(lnames[i])) == NULL)
            return -1;
    }
    for (int i = 0; i < H_NAMES; i++) {
        if (handle_names[i] == NULL
                && (handle_names[i] = PyUnicode_InternFromString(hnames[i])) == NULL)
            return -1;
    }
    struct { PyObject **slot; const char *name; } names[] = {
        {&proactor_names[P_HARVESTED], "_harvested"},
        {&str_recover_harvest, "_recover_harvest"},
        {&str_return_dgram_buffers, "_return_dgram_buffers"},
        {&str_return_buffers, "_return_buffers"}, {&str_check_ret, "_check_ret"},
        {&str_report, "_report"},
        {&str_run, "_run"}, {&str_popleft, "popleft"}, {&str_time, "time"},
        {&str_compact_timers, "_compact_timers"}, {&str_append, "append"},
        {&str_call_soon_slow, "_call_soon_slow"}, {&str_context, "context"},
        {&str_get_buffer, "get_buffer"}, {&str_buffer_updated, "buffer_updated"},
        {&str_read_ready, "_read_ready"}, {&str_readable_eof, "_readable_eof"},
        {&msg_get_buffer, "Fatal error: protocol.get_buffer() call failed."},
        {&msg_buffer_updated, "Fatal error: protocol.buffer_updated() call failed."},
        {&msg_read_error, "Fatal read error on socket transport"},
        {&msg_empty_buffer, "get_buffer() returned an empty buffer"},
        {&str_data_received, "data_received"}, {&str_fatal_error, "_fatal_error"},
        {&str_write_rest, "_write_rest"},
        {&str_enter_hot, "_enter_hot"}, {&str_leave_hot, "_leave_hot"},
        {&msg_data_received, "Fatal error: protocol.data_received() call failed."},
        {&str_future, "Future"}, {&str_task, "Task"}, {&str_task_factory, "_task_factory"},
        {&str_monotonic, "monotonic"}, {&str_call_at, "call_at"}, {&str_thread_id, "_thread_id"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (*names[i].slot == NULL
                && (*names[i].slot = PyUnicode_InternFromString(names[i].name)) == NULL)
            return -1;
    }
    if (PyType_Ready(&StreamHook_Type) < 0)
        return -1;
    if (minus_one == NULL && (minus_one = PyLong_FromLong(-1)) == NULL)
        return -1;
    if (kw_loop == NULL) {
        PyObject *l = PyUnicode_InternFromString("loop");
        PyObject *n = PyUnicode_InternFromString("name");
        if (l == NULL || n == NULL || (kw_loop = PyTuple_Pack(1, l)) == NULL
                || (kw_task = PyTuple_Pack(3, l, n, str_context)) == NULL) {
            Py_XDECREF(l);
            Py_XDECREF(n);
            Py_CLEAR(kw_loop);
            return -1;
        }
        Py_DECREF(l);
        Py_DECREF(n);
    }

    if (PyModule_AddIntConstant(module, "HOT_SIZE", UL_HOT_SIZE) < 0)
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
