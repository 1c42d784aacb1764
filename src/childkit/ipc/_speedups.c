/*
 * childkit.ipc._speedups: C versions of the IPC hot path's pure functions.
 *
 * Each function here has a pure-Python twin that stays the reference (the frame
 * functions in _wire.py, the polling loop in _busypoll.py); _wire and _busypoll use these
 * when the module was built, and the tests check both against each other (fuzzed with
 * hypothesis). Nothing here knows of connections, threads or parcels: bytes and numbers
 * in, bytes and numbers out, plus one loop of poll(2) calls made without the GIL.
 *
 * Why C: a small sync request spends most of its time in a few Python calls per side
 * (struct packing, header checks, a Python-level polling loop that releases and takes the
 * GIL on every look). Here each is one call.
 *
 * The frame layouts are _wire's (all little-endian):
 *   transaction: <BBHI header (type, flags, n_fds, body length) + <QIIIH (seq, handle,
 *                code, data length, n_objects), then the data, then <BI per object
 *   reply:       <BBHI header + <QiIH (seq, status, data length, n_objects), ...
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>

#include "ck_internal.h"

/* The frame constants and code are ck_frame.c's (src/childkit/native/csrc), shared with
 * libipc_capi.so; _wire checks the constants this module exports at import and does not
 * use it if any differs from its own. */
#define F_TRANSACTION CK__F_TRANSACTION
#define F_REPLY CK__F_REPLY
#define FLAG_ONEWAY CK__FLAG_ONEWAY
#define HEADER_SIZE CK__HEADER_SIZE
#define TXN_FRAME_SIZE CK__TXN_FRAME_SIZE
#define REPLY_FRAME_SIZE CK__REPLY_FRAME_SIZE
#define OBJ_SIZE CK__OBJ_SIZE
#define MAX_RECORD_BYTES CK__MAX_RECORD_BYTES
#define MAX_WIRE_DATA CK__MAX_WIRE_DATA
#define MAX_PARCEL_DATA CK__MAX_PARCEL_DATA /* what a Python parcel holds (its own bytes) */

static PyObject *struct_error; /* struct.error: what the Python twins raise */

/* An int argument that must fit in [lo, hi] (as struct's pack checks it). */
static int int_arg(PyObject *obj, const char *what, long long lo, unsigned long long hi,
                   unsigned long long *out) {
    if (!PyLong_Check(obj)) {
        PyErr_Format(struct_error, "required argument is not an integer (%s)", what);
        return -1;
    }
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (overflow > 0) {
        unsigned long long u = PyLong_AsUnsignedLongLong(obj);
        if (u == (unsigned long long)-1 && PyErr_Occurred()) {
            PyErr_Clear();
            goto out_of_range;
        }
        if (u > hi) goto out_of_range;
        *out = u;
        return 0;
    }
    if (overflow < 0 || v < lo || (v >= 0 && (unsigned long long)v > hi)) goto out_of_range;
    *out = (unsigned long long)v;
    return 0;
out_of_range:
    PyErr_Format(struct_error, "%s is out of range for its frame field", what);
    return -1;
}

/* The object table: a sequence of (kind, handle) pairs, each packed as <BI. */
static int objects_size(PyObject *objects, Py_ssize_t *count) {
    Py_ssize_t n = PySequence_Size(objects);
    if (n < 0) return -1;
    if (n > 0xFFFF) {
        PyErr_SetString(struct_error, "too many objects for one frame");
        return -1;
    }
    *count = n;
    return 0;
}

static int write_objects(unsigned char *p, PyObject *objects, Py_ssize_t count) {
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PySequence_GetItem(objects, i);
        if (item == NULL) return -1;
        PyObject *kind_obj = NULL, *handle_obj = NULL;
        int ok = PyTuple_Check(item) && PyTuple_GET_SIZE(item) == 2;
        if (ok) {
            kind_obj = PyTuple_GET_ITEM(item, 0);
            handle_obj = PyTuple_GET_ITEM(item, 1);
        }
        unsigned long long kind, handle;
        if (!ok) {
            PyErr_SetString(PyExc_TypeError, "an object reference is a (kind, handle) tuple");
            Py_DECREF(item);
            return -1;
        }
        if (int_arg(kind_obj, "object kind", 0, 0xFF, &kind) < 0 ||
            int_arg(handle_obj, "object handle", 0, 0xFFFFFFFFULL, &handle) < 0) {
            Py_DECREF(item);
            return -1;
        }
        Py_DECREF(item);
        ck__frame_put_object(p + i * OBJ_SIZE, (int)kind, (uint32_t)handle);
    }
    return 0;
}

/* One transaction (ftype F_TRANSACTION: a = handle, b = code) or parcel reply (F_REPLY:
 * a = status) frame in one new bytes object; the head is written by ck_frame.c. */
static PyObject *build_frame(int ftype, int oneway, unsigned long long n_fds, uint64_t seq,
                             uint32_t a, uint32_t b, PyObject *data_obj, PyObject *objects) {
    Py_buffer data;
    Py_ssize_t n_objects;
    if (PyObject_GetBuffer(data_obj, &data, PyBUF_SIMPLE) < 0) return NULL;
    if (objects_size(objects, &n_objects) < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    Py_ssize_t fixed_size = ftype == F_TRANSACTION ? CK__TXN_FIXED : CK__REPLY_FIXED;
    unsigned long long body_len =
        (unsigned long long)fixed_size + (unsigned long long)data.len + OBJ_SIZE * n_objects;
    if (data.len > 0xFFFFFFFFLL || body_len > 0xFFFFFFFFULL) {
        PyBuffer_Release(&data);
        PyErr_SetString(struct_error, "parcel data too large for one frame");
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, HEADER_SIZE + (Py_ssize_t)body_len);
    if (out == NULL) {
        PyBuffer_Release(&data);
        return NULL;
    }
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(out);
    if (ftype == F_TRANSACTION)
        ck__frame_put_txn_head(p, seq, a, b, oneway, (uint32_t)data.len, (uint16_t)n_objects,
                               (uint16_t)n_fds);
    else
        ck__frame_put_reply_head(p, 0, seq, (int32_t)a, (uint32_t)data.len,
                                 (uint16_t)n_objects, (uint16_t)n_fds);
    memcpy(p + HEADER_SIZE + fixed_size, data.buf, (size_t)data.len);
    PyBuffer_Release(&data);
    if (n_objects && write_objects(p + HEADER_SIZE + body_len - OBJ_SIZE * n_objects,
                                   objects, n_objects) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    return out;
}

PyDoc_STRVAR(encode_transaction_doc,
"encode_transaction(seq, handle, code, oneway, data, objects, n_fds) -> bytes\n\n"
"One transaction frame (as _wire.encode_transaction).");

static PyObject *encode_transaction(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "encode_transaction takes 7 arguments");
        return NULL;
    }
    unsigned long long seq, handle, code, n_fds;
    if (int_arg(args[0], "seq", 0, UINT64_MAX, &seq) < 0 ||
        int_arg(args[1], "handle", 0, 0xFFFFFFFFULL, &handle) < 0 ||
        int_arg(args[2], "code", 0, 0xFFFFFFFFULL, &code) < 0 ||
        int_arg(args[6], "n_fds", 0, 0xFFFF, &n_fds) < 0)
        return NULL;
    int oneway = PyObject_IsTrue(args[3]);
    if (oneway < 0) return NULL;
    return build_frame(F_TRANSACTION, oneway, n_fds, seq, (uint32_t)handle, (uint32_t)code,
                       args[4], args[5]);
}

PyDoc_STRVAR(encode_reply_doc,
"encode_reply(seq, status, data, objects, n_fds) -> bytes\n\n"
"One parcel reply frame (as _wire.encode_reply).");

static PyObject *encode_reply(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "encode_reply takes 5 arguments");
        return NULL;
    }
    unsigned long long seq, status, n_fds;
    if (int_arg(args[0], "seq", 0, UINT64_MAX, &seq) < 0 ||
        int_arg(args[1], "status", INT32_MIN, INT32_MAX, &status) < 0 ||
        int_arg(args[4], "n_fds", 0, 0xFFFF, &n_fds) < 0)
        return NULL;
    return build_frame(F_REPLY, 0, n_fds, seq, (uint32_t)(int32_t)(long long)status, 0, args[2],
                       args[3]);
}

/* The first ``need`` bytes of a receive buffer, or NULL with struct.error set. */
static int header_view(PyObject *buf_obj, Py_buffer *view, Py_ssize_t need) {
    if (PyObject_GetBuffer(buf_obj, view, PyBUF_SIMPLE) < 0) return -1;
    if (view->len < need) {
        PyBuffer_Release(view);
        PyErr_Format(struct_error, "unpack_from requires a buffer of at least %zd bytes",
                     need);
        return -1;
    }
    return 0;
}

/* Whether the ``size`` bytes of a receive buffer (args: buf, size) are exactly one plain
 * frame of type ``ftype``: no flags, fds or objects, its lengths adding up to ``size``, and
 * its parcel within MAX_WIRE_DATA. Copies the frame's fixed part (``frame_size`` bytes)
 * into ``head``. 1: plain, 0: not, -1: an exception is set. The object count is the
 * fixed part's last field and the data length the one before it, in both frame types. */
static int plain_frame(PyObject *const *args, Py_ssize_t nargs, const char *name,
                       int ftype, Py_ssize_t frame_size, unsigned char *head) {
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "%s takes 2 arguments", name);
        return -1;
    }
    Py_ssize_t size = PyLong_AsSsize_t(args[1]);
    if (size == -1 && PyErr_Occurred()) return -1;
    if (size < frame_size || size > MAX_RECORD_BYTES) return 0;
    Py_buffer view;
    if (header_view(args[0], &view, frame_size) < 0) return -1;
    memcpy(head, view.buf, (size_t)frame_size);
    PyBuffer_Release(&view);
    return ck__frame_is_plain(head, (size_t)size, ftype);
}

PyDoc_STRVAR(simple_request_doc,
"simple_request(buf, size) -> (seq, handle, code) | None\n\n"
"As _wire.simple_request: the record is exactly one plain sync transaction.");

static PyObject *simple_request(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    unsigned char p[TXN_FRAME_SIZE];
    int plain = plain_frame(args, nargs, "simple_request", F_TRANSACTION, TXN_FRAME_SIZE, p);
    if (plain <= 0) {
        if (plain < 0) return NULL;
        Py_RETURN_NONE;
    }
    return Py_BuildValue("(KkK)", (unsigned long long)ck__get_u64(p + 8),
                         (unsigned long)ck__get_u32(p + 16), (unsigned long long)ck__get_u32(p + 20));
}

PyDoc_STRVAR(simple_reply_doc,
"simple_reply(buf, size) -> (seq, status) | None\n\n"
"As _wire.simple_reply: the record is exactly one plain parcel reply.");

static PyObject *simple_reply(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    unsigned char p[REPLY_FRAME_SIZE];
    int plain = plain_frame(args, nargs, "simple_reply", F_REPLY, REPLY_FRAME_SIZE, p);
    if (plain <= 0) {
        if (plain < 0) return NULL;
        Py_RETURN_NONE;
    }
    return Py_BuildValue("(Ki)", (unsigned long long)ck__get_u64(p + 8),
                         (int)(int32_t)ck__get_u32(p + 16));
}

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* time.perf_counter_ns's clock on Linux */
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* The polling rule of every spin here (_busypoll.spin's): call look(ctx), a system call
 * that does not wait, until it finds something (1), or end_ns passes (0), or two looks lie
 * more than preempted_ns apart (-1: this thread lost its CPU); when look fails (it
 * returns -1; EINTR counts as nothing found), -2 with errno set. Call without the GIL. */
static int spin_looking(int (*look)(void *), void *ctx, long long end, long long preempted) {
    long long last = now_ns();
    for (;;) {
        int found = look(ctx);
        if (found > 0) return 1;
        if (found < 0) return -2;
        long long now = now_ns();
        if (now - last > preempted) return -1;
        if (now >= end) return 0;
        last = now;
    }
}

static int look_readable(void *ctx) { /* poll(2) one fd: readable (or error, hang-up) */
    struct pollfd pfd = {.fd = *(int *)ctx, .events = POLLIN};
    int n = poll(&pfd, 1, 0);
    return n > 0 ? 1 : n < 0 && errno != EINTR ? -1 : 0;
}

/* Spin on poll(2) until fd is readable: spin_looking's results. */
static int spin_until_readable(int fd, long long end, long long preempted) {
    return spin_looking(look_readable, &fd, end, preempted);
}

PyDoc_STRVAR(poll_readable_doc,
"poll_readable(fd, end_ns, preempted_ns) -> int\n\n"
"Look at ``fd`` with poll(2) and a zero timeout, without the GIL, until it is readable\n"
"(or has an error or hang-up): 1; until ``time.perf_counter_ns()`` reaches ``end_ns``: 0;\n"
"or until two looks lie more than ``preempted_ns`` apart (this thread lost its CPU): -1.\n"
"Looks at least once. Raises OSError if poll(2) fails (not for EINTR, which is retried).");

static PyObject *poll_readable(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "poll_readable takes 3 arguments");
        return NULL;
    }
    int fd = PyObject_AsFileDescriptor(args[0]);
    if (fd < 0) return NULL;
    long long end = PyLong_AsLongLong(args[1]);
    if (end == -1 && PyErr_Occurred()) return NULL;
    long long preempted = PyLong_AsLongLong(args[2]);
    if (preempted == -1 && PyErr_Occurred()) return NULL;
    int result, saved_errno = 0;
    Py_BEGIN_ALLOW_THREADS
    result = spin_until_readable(fd, end, preempted);
    saved_errno = errno;
    Py_END_ALLOW_THREADS
    if (result == -2) {
        errno = saved_errno;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLong(result);
}

/* ------------------------------------------------------------------------ holds
 *
 * A work thread that has read a plain request would re-arm its socket in the pool's epoll
 * before running the stub (so that other threads serve the connection meanwhile) and
 * disarm it again to poll for the next request: two epoll_ctl calls per request. A *hold*
 * skips both: the socket stays disarmed while the thread runs one short request, and a
 * watcher thread (a plain pthread, it never takes the GIL) re-arms it if the hold lasts
 * longer than hold_limit_ns. A thread that is about to sleep waiting for a reply of its
 * own (exchange, release_holds) gives up its holds first: the reply may depend on a
 * request the peer sends to the held socket (a callback into a callback).
 */
#define MAX_HOLDS 64
#define WATCH_IDLE_NS 50000000LL /* the watcher sleeps for good after this long idle */

struct hold {
    int active, fd, epfd;
    uint32_t events;
    long long since;
    pthread_t owner;
};

static struct hold holds[MAX_HOLDS];
static pthread_mutex_t holds_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t holds_cond;
static int watcher_running, watcher_parked;
static int watcher_failed; /* pthread_create refused (a process limit): no holds here */
static long long hold_limit_ns = 2000000, last_hold_ns; /* 2 ms */

static void rearm_locked(struct hold *h) {
    struct epoll_event ev = {.events = h->events, .data.fd = h->fd};
    epoll_ctl(h->epfd, EPOLL_CTL_MOD, h->fd, &ev); /* a closed fd: nothing to wake for */
    h->active = 0;
}

static void *watch_holds(void *unused) {
    pthread_mutex_lock(&holds_lock);
    for (;;) {
        long long now = now_ns(), wake = 0;
        for (int i = 0; i < MAX_HOLDS; i++) {
            if (!holds[i].active) continue;
            long long due = holds[i].since + hold_limit_ns;
            if (due <= now)
                rearm_locked(&holds[i]);
            else if (wake == 0 || due < wake)
                wake = due;
        }
        if (wake == 0 && now - last_hold_ns > WATCH_IDLE_NS) {
            watcher_parked = 1; /* nothing held for a while: sleep until the next hold */
            pthread_cond_wait(&holds_cond, &holds_lock);
            watcher_parked = 0;
            continue;
        }
        if (wake == 0) wake = now + hold_limit_ns;
        struct timespec ts = {.tv_sec = wake / 1000000000LL, .tv_nsec = wake % 1000000000LL};
        pthread_cond_timedwait(&holds_cond, &holds_lock, &ts);
    }
    return NULL;
}

static int start_watcher_locked(void) {
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&holds_cond, &attr);
    pthread_condattr_destroy(&attr);
    pthread_attr_t tattr;
    pthread_attr_init(&tattr);
    pthread_attr_setdetachstate(&tattr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&tattr, 64 * 1024);
    /* the watcher must not take signals meant for the interpreter's main thread */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t thread;
    int rc = pthread_create(&thread, &tattr, watch_holds, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&tattr);
    if (rc == 0)
        watcher_running = 1;
    else
        watcher_failed = 1; /* do not try again on every request */
    return rc;
}

/* In a forked child only the forking thread exists: no watcher, no holds of others. */
static void holds_prepare_fork(void) { pthread_mutex_lock(&holds_lock); }
static void holds_parent_after_fork(void) { pthread_mutex_unlock(&holds_lock); }
static void holds_child_after_fork(void) {
    memset(holds, 0, sizeof holds);
    watcher_running = watcher_parked = watcher_failed = 0;
    pthread_mutex_init(&holds_lock, NULL);
}

/* Re-arm every fd this thread holds (it is about to sleep). */
static void release_own_holds(void) {
    pthread_t self = pthread_self();
    pthread_mutex_lock(&holds_lock);
    for (int i = 0; i < MAX_HOLDS; i++)
        if (holds[i].active && pthread_equal(holds[i].owner, self)) rearm_locked(&holds[i]);
    pthread_mutex_unlock(&holds_lock);
}

PyDoc_STRVAR(hold_doc,
"hold(epfd, events, fd) -> bool\n\n"
"Keep ``fd``, registered EPOLLONESHOT in ``epfd`` and disarmed now, disarmed while this\n"
"thread runs one short task for it; the watcher re-arms it with ``events`` if the hold\n"
"lasts longer than the hold limit, and so does this thread if it sleeps for a reply of\n"
"its own (exchange, release_holds). End it with unhold(fd). When it cannot be held (every\n"
"slot taken, or no watcher thread), ``fd`` is re-armed at once and the result is False.\n"
"(``fd`` comes last so that ``functools.partial(hold, epfd, events)`` is a pool's hold.)");

/* An fd (a C int) from a Python int, with public API only (3.13 removed _PyLong_AsInt):
   -1 with OverflowError set when it does not fit, as PyLong_AsLong fails. */
static int as_int(PyObject *obj) {
    long value = PyLong_AsLong(obj);
    if (value == -1 && PyErr_Occurred()) return -1;
    if (value > INT_MAX || value < INT_MIN) {
        PyErr_SetString(PyExc_OverflowError, "Python int too large to convert to C int");
        return -1;
    }
    return (int)value;
}

static PyObject *hold(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "hold takes 3 arguments");
        return NULL;
    }
    int epfd = as_int(args[0]), fd = as_int(args[2]);
    long events = PyLong_AsLong(args[1]);
    if (PyErr_Occurred()) return NULL;
    if (fd < 0 || epfd < 0) {
        PyErr_SetString(PyExc_ValueError, "hold needs an fd and an epoll fd");
        return NULL;
    }
    long long now = now_ns();
    int held = 0;
    pthread_mutex_lock(&holds_lock);
    if (watcher_running || (!watcher_failed && start_watcher_locked() == 0)) {
        struct hold *slot = NULL;
        pthread_t self_thread = pthread_self();
        for (int i = 0; i < MAX_HOLDS; i++) {
            if (holds[i].active && holds[i].fd == fd &&
                pthread_equal(holds[i].owner, self_thread)) { /* held already: renew */
                slot = &holds[i];
                break;
            }
            if (!holds[i].active && slot == NULL) slot = &holds[i];
        }
        if (slot != NULL) {
            *slot = (struct hold){1, fd, epfd, (uint32_t)events, now, self_thread};
            last_hold_ns = now;
            held = 1;
            if (watcher_parked) pthread_cond_signal(&holds_cond);
        }
    }
    pthread_mutex_unlock(&holds_lock);
    if (!held) { /* as the pool's rearm would */
        struct epoll_event ev = {.events = (uint32_t)events, .data.fd = fd};
        epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev);
    }
    return PyBool_FromLong(held);
}

PyDoc_STRVAR(unhold_doc,
"unhold(fd) -> bool\n\n"
"End this thread's hold on ``fd``: True if it is still disarmed (the caller re-arms it,\n"
"or polls it itself), False if it was re-armed meanwhile (or this thread did not hold it).");

static PyObject *unhold(PyObject *self, PyObject *arg) {
    int fd = as_int(arg);
    if (fd == -1 && PyErr_Occurred()) return NULL;
    int held = 0;
    pthread_t self_thread = pthread_self();
    pthread_mutex_lock(&holds_lock);
    for (int i = 0; i < MAX_HOLDS; i++) {
        if (holds[i].active && holds[i].fd == fd && pthread_equal(holds[i].owner, self_thread)) {
            holds[i].active = 0;
            held = 1;
            break;
        }
    }
    pthread_mutex_unlock(&holds_lock);
    return PyBool_FromLong(held);
}

PyDoc_STRVAR(drop_holds_doc,
"drop_holds(fd) -> None\n\n"
"Forget every thread's hold on ``fd`` without re-arming it (it is being unregistered:\n"
"the watcher must not touch it, or a later fd with its number).");

static PyObject *drop_holds(PyObject *self, PyObject *arg) {
    int fd = as_int(arg);
    if (fd == -1 && PyErr_Occurred()) return NULL;
    pthread_mutex_lock(&holds_lock);
    for (int i = 0; i < MAX_HOLDS; i++)
        if (holds[i].active && holds[i].fd == fd) holds[i].active = 0;
    pthread_mutex_unlock(&holds_lock);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(release_holds_doc,
"release_holds() -> None\n\n"
"Re-arm every fd this thread holds (before it sleeps on something).");

static PyObject *release_holds(PyObject *self, PyObject *unused) {
    release_own_holds();
    Py_RETURN_NONE;
}

PyDoc_STRVAR(set_hold_limit_doc,
"set_hold_limit(ns) -> int\n\n"
"How long a hold may last before the watcher re-arms its fd; returns the previous limit.");

static PyObject *set_hold_limit(PyObject *self, PyObject *arg) {
    long long ns = PyLong_AsLongLong(arg);
    if (ns == -1 && PyErr_Occurred()) return NULL;
    if (ns < 1000) {
        PyErr_SetString(PyExc_ValueError, "the hold limit is at least 1000 ns");
        return NULL;
    }
    pthread_mutex_lock(&holds_lock);
    long long previous = hold_limit_ns;
    hold_limit_ns = ns;
    if (watcher_running) pthread_cond_signal(&holds_cond);
    pthread_mutex_unlock(&holds_lock);
    return PyLong_FromLongLong(previous);
}

/* ------------------------------------------------------------------------ pieces
 *
 * Parcel data in a few pieces (bytes objects) that are not joined: a large immutable
 * bytes object written into a parcel is kept by reference behind the parcel's own bytes,
 * and a large buffer received in a record (see exchange) is its own bytes object. The
 * exchange below sends a (head, Pieces) record gathered, piece by piece, without joining
 * them; anything else that needs the data in one buffer gets it through the buffer
 * protocol, joined once (on first need) and kept.
 */
#define MAX_PIECES 8

typedef struct {
    PyObject_HEAD
    PyObject *parts; /* a tuple of bytes */
    Py_ssize_t size;
    PyObject *flat; /* the parts joined, made on first need */
} PiecesObject;

static PyTypeObject PiecesType;

static PyObject *pieces_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *parts;
    if (!PyArg_ParseTuple(args, "O!:Pieces", &PyTuple_Type, &parts)) return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(parts), size = 0;
    if (n < 1 || n > MAX_PIECES) {
        PyErr_Format(PyExc_ValueError, "Pieces takes 1 to %d parts", MAX_PIECES);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *part = PyTuple_GET_ITEM(parts, i);
        if (!PyBytes_CheckExact(part)) {
            PyErr_SetString(PyExc_TypeError, "every part of a Pieces is a bytes object");
            return NULL;
        }
        size += PyBytes_GET_SIZE(part);
    }
    PiecesObject *self = (PiecesObject *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    Py_INCREF(parts);
    self->parts = parts;
    self->size = size;
    self->flat = NULL;
    return (PyObject *)self;
}

static void pieces_dealloc(PiecesObject *self) {
    Py_XDECREF(self->parts);
    Py_XDECREF(self->flat);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *pieces_flat(PiecesObject *self, PyObject *unused) {
    if (self->flat == NULL) {
        Py_ssize_t n = PyTuple_GET_SIZE(self->parts);
        if (n == 1) {
            self->flat = Py_NewRef(PyTuple_GET_ITEM(self->parts, 0));
        } else {
            PyObject *out = PyBytes_FromStringAndSize(NULL, self->size);
            if (out == NULL) return NULL;
            char *p = PyBytes_AS_STRING(out);
            for (Py_ssize_t i = 0; i < n; i++) {
                PyObject *part = PyTuple_GET_ITEM(self->parts, i);
                memcpy(p, PyBytes_AS_STRING(part), (size_t)PyBytes_GET_SIZE(part));
                p += PyBytes_GET_SIZE(part);
            }
            self->flat = out;
        }
    }
    return Py_NewRef(self->flat);
}

static Py_ssize_t pieces_length(PiecesObject *self) { return self->size; }

static PyObject *pieces_item(PiecesObject *self, Py_ssize_t i) {
    if (i < 0 || i >= self->size) {
        PyErr_SetString(PyExc_IndexError, "Pieces index out of range");
        return NULL;
    }
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(self->parts); k++) {
        PyObject *part = PyTuple_GET_ITEM(self->parts, k);
        if (i < PyBytes_GET_SIZE(part))
            return PyLong_FromLong((unsigned char)PyBytes_AS_STRING(part)[i]);
        i -= PyBytes_GET_SIZE(part);
    }
    PyErr_SetString(PyExc_IndexError, "Pieces index out of range"); /* not reached */
    return NULL;
}

static int pieces_getbuffer(PiecesObject *self, Py_buffer *view, int flags) {
    PyObject *flat = pieces_flat(self, NULL);
    if (flat == NULL) {
        view->obj = NULL;
        return -1;
    }
    Py_DECREF(flat); /* self->flat keeps it */
    return PyBuffer_FillInfo(view, (PyObject *)self, PyBytes_AS_STRING(flat),
                             PyBytes_GET_SIZE(flat), 1, flags);
}

static PyObject *pieces_get_parts(PiecesObject *self, void *unused) {
    return Py_NewRef(self->parts);
}

static PyMethodDef pieces_methods[] = {
    {"flat", (PyCFunction)pieces_flat, METH_NOARGS,
     "flat() -> bytes\n\nThe parts joined (once; the same bytes object every time)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef pieces_getset[] = {
    {"parts", (getter)pieces_get_parts, NULL, "The bytes objects, in order.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods pieces_as_sequence = {
    .sq_length = (lenfunc)pieces_length,
    .sq_item = (ssizeargfunc)pieces_item,
};

static PyBufferProcs pieces_as_buffer = {
    .bf_getbuffer = (getbufferproc)pieces_getbuffer,
};

static PyTypeObject PiecesType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "childkit.ipc._speedups.Pieces",
    .tp_doc = "Pieces(parts)\n\nRead-only data in a few bytes objects (parts), sent gathered "
              "by exchange; joined once when read as one buffer.",
    .tp_basicsize = sizeof(PiecesObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = pieces_new,
    .tp_dealloc = (destructor)pieces_dealloc,
    .tp_methods = pieces_methods,
    .tp_getset = pieces_getset,
    .tp_as_sequence = &pieces_as_sequence,
    .tp_as_buffer = &pieces_as_buffer,
};

/* Room for the control data of one record: every fd a record may carry (253, the
 * kernel's SCM_MAX_FD) plus credentials. */
#define CONTROL_SPACE (CMSG_SPACE(253 * sizeof(int)) + CMSG_SPACE(sizeof(struct ucred)))

/* A new Pieces of ``head`` and ``blob`` (two bytes objects; the references are taken, even
 * on failure), as ``Pieces((head, blob))``. */
static PyObject *pieces_of_two(PyObject *head, PyObject *blob) {
    PyObject *parts = PyTuple_New(2);
    if (parts == NULL) {
        Py_DECREF(head);
        Py_DECREF(blob);
        return NULL;
    }
    PyTuple_SET_ITEM(parts, 0, head);
    PyTuple_SET_ITEM(parts, 1, blob);
    PiecesObject *self = (PiecesObject *)PiecesType.tp_alloc(&PiecesType, 0);
    if (self == NULL) {
        Py_DECREF(parts);
        return NULL;
    }
    self->parts = parts;
    self->size = PyBytes_GET_SIZE(head) + PyBytes_GET_SIZE(blob);
    self->flat = NULL;
    return (PyObject *)self;
}

static void reset_msghdr(struct msghdr *msg, struct iovec *iov, char *control,
                         size_t control_len) {
    memset(msg, 0, sizeof *msg);
    msg->msg_iov = iov;
    msg->msg_iovlen = 1;
    msg->msg_control = control;
    msg->msg_controllen = control_len;
}

/* recvmsg's ancillary data as socket.recvmsg gives it: [(level, type, data), ...]. */
static PyObject *ancillary_list(struct msghdr *msg) {
    PyObject *list = PyList_New(0);
    if (list == NULL) return NULL;
    if (msg->msg_controllen == 0) return list;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c != NULL; c = CMSG_NXTHDR(msg, c)) {
        if (c->cmsg_len < CMSG_LEN(0)) break;
        PyObject *item = Py_BuildValue(
            "(iiy#)", c->cmsg_level, c->cmsg_type, (const char *)CMSG_DATA(c),
            (Py_ssize_t)(c->cmsg_len - CMSG_LEN(0)));
        if (item == NULL || PyList_Append(list, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(item);
    }
    return list;
}

/* ------------------------------------------------------------------------ scatter
 *
 * A record that is one plain sync request or successful reply whose parcel is a single
 * buffer (or string) of SCATTER_BYTES or more is read in two pieces: its frame and the
 * buffer's tag and length into the receive buffer, the buffer itself straight into a new
 * bytes object of its exact size, which the parcel's read_buffer then returns as it is
 * (no copy out of the receive buffer). The size comes from a MSG_PEEK|MSG_TRUNC read of
 * the record's first bytes, made instead of the read itself while this thread's last
 * record was that large (a thread of small records pays no extra system call).
 */
#define SCATTER_BYTES 8192
#define TAG_STRING 12 /* the parcel's type tags (docs/wire-format.md) */
#define TAG_BYTES 13
#define BLOB_HEAD 5 /* tag + u32 length */
#define PEEK_BYTES (TXN_FRAME_SIZE + BLOB_HEAD)

static __thread int expect_large; /* this thread's last record was SCATTER_BYTES or more */

/* Where the buffer of a peeked record starts (its frame and the buffer's head end there),
 * or 0 if the record is not to be scattered. ``head`` holds min(size, PEEK_BYTES) bytes. */
static size_t scatter_at(const unsigned char *head, size_t size, int msg_flags) {
    if (msg_flags & MSG_CTRUNC || size < PEEK_BYTES || size > MAX_RECORD_BYTES) return 0;
    size_t frame_size;
    if (head[0] == F_REPLY) {
        frame_size = REPLY_FRAME_SIZE;
        if (ck__get_u32(head + HEADER_SIZE + 8) != 0) return 0; /* an error status */
    } else if (head[0] == F_TRANSACTION) {
        frame_size = TXN_FRAME_SIZE;
    } else {
        return 0;
    }
    if (!ck__frame_is_plain(head, size, head[0])) return 0; /* no flags, fds or objects */
    int tag = head[frame_size];
    uint32_t len = ck__get_u32(head + frame_size + 1);
    if ((tag != TAG_BYTES && tag != TAG_STRING) || len < SCATTER_BYTES ||
        (size_t)len != size - frame_size - BLOB_HEAD)
        return 0; /* not one buffer that fills the parcel */
    return frame_size + BLOB_HEAD;
}

/* Read the record just peeked (``size`` bytes, peek flags ``peek_flags``) from ``fd``:
 * scattered, with ``buf_obj.scattered = (at, blob)``, or whole into ``buf``. Returns
 * exchange's result tuple. */
static PyObject *read_peeked(int fd, PyObject *buf_obj, Py_buffer *buf, size_t size,
                             int peek_flags, int seen) {
    size_t at = scatter_at((const unsigned char *)buf->buf, size, peek_flags);
    PyObject *blob = NULL;
    if (at > 0 && at <= (size_t)buf->len) {
        /* Only a buffer that can carry the blob (the receive buffers of _recvbuf) gets one. */
        if (PyObject_SetAttrString(buf_obj, "scattered", Py_None) < 0) {
            PyErr_Clear();
        } else {
            blob = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(size - at));
            if (blob == NULL) return NULL;
        }
    }
    union {
        char bytes[CONTROL_SPACE];
        struct cmsghdr align;
    } control;
    struct iovec iov[2];
    struct msghdr msg;
    reset_msghdr(&msg, iov, control.bytes, sizeof control.bytes);
    if (blob != NULL) {
        iov[0].iov_base = buf->buf;
        iov[0].iov_len = at;
        iov[1].iov_base = PyBytes_AS_STRING(blob);
        iov[1].iov_len = size - at;
        msg.msg_iovlen = 2;
    } else {
        iov[0].iov_base = buf->buf;
        iov[0].iov_len = (size_t)buf->len;
    }
    ssize_t n;
    int saved_errno;
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
        saved_errno = errno;
        Py_END_ALLOW_THREADS
        if (n >= 0 || saved_errno != EINTR) break;
        if (PyErr_CheckSignals() < 0) {
            Py_XDECREF(blob);
            return NULL;
        }
    }
    if (n < 0) {
        Py_XDECREF(blob);
        return Py_BuildValue("(n[]iii)", (Py_ssize_t)-1, 0, seen, saved_errno);
    }
    int flags = msg.msg_flags;
    if (blob != NULL && ((size_t)n != size || flags & (MSG_TRUNC | MSG_CTRUNC))) {
        /* Not the record peeked (only one thread reads a socket at a time: it cannot
         * happen): what came is put back together in buf, or refused as truncated. */
        size_t rest = (size_t)n > at ? (size_t)n - at : 0;
        if (at + rest > (size_t)buf->len) {
            rest = (size_t)buf->len - at;
            flags |= MSG_TRUNC;
        }
        memcpy((char *)buf->buf + at, PyBytes_AS_STRING(blob), rest);
        Py_CLEAR(blob);
    }
    if (blob != NULL) {
        PyObject *stash = Py_BuildValue("(nN)", (Py_ssize_t)at, blob);
        if (stash == NULL) return NULL;
        int failed = PyObject_SetAttrString(buf_obj, "scattered", stash);
        Py_DECREF(stash);
        if (failed < 0) return NULL;
    }
    expect_large = (size_t)n >= SCATTER_BYTES;
    PyObject *anc = ancillary_list(&msg);
    if (anc == NULL) return NULL;
    return Py_BuildValue("(nNiii)", (Py_ssize_t)n, anc, flags, seen, 0);
}

/* A record to send, gathered: one buffer, or a (head, body) pair (body: a buffer, or a
 * Pieces whose parts are gathered too). The caller's object keeps the parts alive; the
 * buffers are held until out_record_release. */
struct out_record {
    Py_buffer record, body;
    struct iovec iov[1 + MAX_PIECES];
    int n;
    size_t len;
};

static int out_record_get(PyObject *rec_obj, struct out_record *out) {
    PyObject *pieces = NULL;
    out->body.obj = NULL;
    out->body.buf = NULL;
    out->body.len = 0;
    if (PyTuple_Check(rec_obj)) {
        if (PyTuple_GET_SIZE(rec_obj) != 2) {
            PyErr_SetString(PyExc_TypeError, "a gathered record is (head, body)");
            return -1;
        }
        PyObject *body_obj = PyTuple_GET_ITEM(rec_obj, 1);
        if (Py_TYPE(body_obj) == &PiecesType)
            pieces = body_obj;
        else if (PyObject_GetBuffer(body_obj, &out->body, PyBUF_SIMPLE) < 0)
            return -1;
        rec_obj = PyTuple_GET_ITEM(rec_obj, 0);
    }
    if (PyObject_GetBuffer(rec_obj, &out->record, PyBUF_SIMPLE) < 0) {
        if (out->body.obj != NULL) PyBuffer_Release(&out->body);
        return -1;
    }
    out->len = (size_t)out->record.len;
    out->iov[0].iov_base = out->record.buf;
    out->iov[0].iov_len = (size_t)out->record.len;
    out->n = 1;
    if (pieces != NULL) {
        PyObject *parts = ((PiecesObject *)pieces)->parts;
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(parts); i++) {
            PyObject *part = PyTuple_GET_ITEM(parts, i);
            out->iov[out->n].iov_base = PyBytes_AS_STRING(part);
            out->iov[out->n].iov_len = (size_t)PyBytes_GET_SIZE(part);
            out->len += out->iov[out->n++].iov_len;
        }
    } else if (out->body.len > 0) {
        out->iov[out->n].iov_base = out->body.buf;
        out->iov[out->n++].iov_len = (size_t)out->body.len;
        out->len += (size_t)out->body.len;
    }
    return 0;
}

static void out_record_release(struct out_record *out) {
    PyBuffer_Release(&out->record);
    if (out->body.obj != NULL) PyBuffer_Release(&out->body);
}

PyDoc_STRVAR(exchange_doc,
"exchange(fd, record, buf, end_ns, preempted_ns)\n"
"    -> (n, ancdata, msg_flags, seen, error)\n\n"
"One side's turn of a request/reply exchange in one call, without the GIL: send\n"
"``record`` on the socket ``fd`` (unless it is empty; a ``(head, body)`` tuple goes out as\n"
"one record, gathered by sendmsg, so a large parcel's data is not first copied behind its\n"
"frame header: ``body`` is a bytes-like or a Pieces, whose parts are gathered too); if\n"
"``end_ns`` is not 0, try\n"
"non-blocking reads until then, with poll_readable's rules (``seen``: 1 when one got the\n"
"record, 0 when the window closed or no polling, -1 on a lost CPU); then, if none got\n"
"it, read (sleeping if the socket blocks); one record into ``buf``, as\n"
"``socket.recvmsg_into([buf], ..., MSG_CMSG_CLOEXEC)`` would, giving its size, ancillary\n"
"data and flags. A plain sync request or successful reply whose parcel is one buffer of\n"
"SCATTER_BYTES or more may instead be read scattered, when ``buf`` has a ``scattered``\n"
"attribute: its first ``at`` bytes into ``buf`` and the rest into a new bytes object,\n"
"with ``buf.scattered = (at, blob)`` (see _recvbuf; the size ``n`` is the whole record's).\n"
"Signals that interrupt a call run their handlers (an exception from one propagates;\n"
"the record may then have been sent) and the call goes on. Raises OSError when sending\n"
"fails (BlockingIOError when the socket is non-blocking and full: nothing was sent). A\n"
"failed read is not raised: ``error`` is its errno (0 when the read succeeded; EAGAIN\n"
"from a non-blocking socket with nothing to read), so the caller knows the record went\n"
"out.");

static PyObject *exchange(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "exchange takes 5 arguments");
        return NULL;
    }
    int fd = PyObject_AsFileDescriptor(args[0]);
    if (fd < 0) return NULL;
    long long end = PyLong_AsLongLong(args[3]);
    if (end == -1 && PyErr_Occurred()) return NULL;
    long long preempted = PyLong_AsLongLong(args[4]);
    if (preempted == -1 && PyErr_Occurred()) return NULL;
    struct out_record out;
    Py_buffer buf;
    if (out_record_get(args[1], &out) < 0) return NULL;
    if (PyObject_GetBuffer(args[2], &buf, PyBUF_WRITABLE) < 0) {
        out_record_release(&out);
        return NULL;
    }
    size_t out_len = out.len;
    struct msghdr out_msg;
    memset(&out_msg, 0, sizeof out_msg);
    out_msg.msg_iov = out.iov;
    out_msg.msg_iovlen = (size_t)out.n;
    PyObject *result = NULL;
    ssize_t n;
    int saved_errno = 0, seen = 0;
    union {
        char bytes[CONTROL_SPACE];
        struct cmsghdr align;
    } control;
    struct iovec iov = {.iov_base = buf.buf, .iov_len = (size_t)buf.len};
    struct msghdr msg;
    int sent = out_len == 0;
    /* While this thread's records are large, look at the next one's size and head first
     * (no control buffer: nothing is installed by a peek) and read it in read_peeked. */
    int peek = expect_large && buf.len >= PEEK_BYTES;
    int read_flags = peek ? MSG_PEEK | MSG_TRUNC : MSG_CMSG_CLOEXEC;
    struct iovec peek_iov = {.iov_base = buf.buf, .iov_len = PEEK_BYTES};
    for (;;) { /* all of it without the GIL; it is taken again only to run signal handlers */
        int send_failed = 0;
        Py_BEGIN_ALLOW_THREADS
        if (!sent) {
            n = sendmsg(fd, &out_msg, 0);
            saved_errno = errno;
            if (n >= 0)
                sent = 1;
            else
                send_failed = 1;
        }
        if (sent) {
            n = -1;
            saved_errno = EAGAIN;
            if (end != 0 && seen == 0) {
                /* Polling is reading: non-blocking reads until one returns the record (no
                 * poll(2) and then a read: one system call fewer once it is there). */
                long long last = now_ns();
                for (;;) {
                    if (peek)
                        reset_msghdr(&msg, &peek_iov, NULL, 0);
                    else
                        reset_msghdr(&msg, &iov, control.bytes, sizeof control.bytes);
                    n = recvmsg(fd, &msg, read_flags | MSG_DONTWAIT);
                    if (n >= 0) {
                        seen = 1;
                        break;
                    }
                    saved_errno = errno;
                    if (saved_errno != EAGAIN && saved_errno != EWOULDBLOCK &&
                        saved_errno != EINTR)
                        break; /* a real failure: reported below */
                    long long now = now_ns();
                    if (now - last > preempted) {
                        seen = -1;
                        break;
                    }
                    if (now >= end) break;
                    last = now;
                }
                end = 0;
            }
            if (n < 0 && (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK ||
                          saved_errno == EINTR)) {
                release_own_holds(); /* about to sleep in the read */
                if (peek)
                    reset_msghdr(&msg, &peek_iov, NULL, 0);
                else
                    reset_msghdr(&msg, &iov, control.bytes, sizeof control.bytes);
                n = recvmsg(fd, &msg, read_flags);
                saved_errno = errno;
            }
        }
        Py_END_ALLOW_THREADS
        if (send_failed) {
            if (saved_errno != EINTR) {
                errno = saved_errno;
                PyErr_SetFromErrno(PyExc_OSError);
                goto done;
            }
        } else if (n >= 0 || saved_errno != EINTR) {
            break;
        }
        if (PyErr_CheckSignals() < 0) goto done;
    }
    if (n < 0) {
        result = Py_BuildValue("(n[]iii)", (Py_ssize_t)-1, 0, seen, saved_errno);
        goto done;
    }
    if (peek) {
        result = read_peeked(fd, args[2], &buf, (size_t)n, msg.msg_flags, seen);
        goto done;
    }
    expect_large = n >= SCATTER_BYTES;
    PyObject *anc = ancillary_list(&msg);
    if (anc == NULL) goto done;
    result = Py_BuildValue("(nNiii)", (Py_ssize_t)n, anc, msg.msg_flags, seen, 0);
done:
    out_record_release(&out);
    PyBuffer_Release(&buf);
    return result;
}

/* A hub's look for spin_looking: one ready channel into *ev, without waiting. */
struct hub_look {
    int epfd;
    struct epoll_event *ev;
};

static int look_ready_channel(void *ctx) {
    struct hub_look *look = ctx;
    int n = epoll_wait(look->epfd, look->ev, 1, 0);
    return n > 0 ? 1 : n < 0 && errno != EINTR ? -1 : 0;
}

PyDoc_STRVAR(hub_turn_doc,
"hub_turn(epfd, fd, record, buf, timeout_ms, end_ns, preempted_ns)\n"
"    -> (fd, n, ancdata, msg_flags, error, seen)\n\n"
"One turn of a thread that drains a channel hub (see _channelhub), without the GIL: if\n"
"``fd`` is not -1, send ``record`` on it (a buffer or a (head, body) pair, gathered as\n"
"exchange sends it; without waiting for room: BlockingIOError when there is none, and\n"
"nothing was sent) and re-arm ``fd`` in the epoll ``epfd`` (EPOLLIN | EPOLLRDHUP |\n"
"EPOLLONESHOT); then, if ``end_ns`` is not 0, look for a readable channel of ``epfd``\n"
"without waiting until then, with poll_readable's rules (``seen``: 1 when one was found,\n"
"0 when the window closed or no polling, -1 on a lost CPU); then wait up to\n"
"``timeout_ms`` (0: do not wait) for one, and read one record from it into ``buf``\n"
"without waiting, as ``socket.recvmsg_into([buf], ..., MSG_CMSG_CLOEXEC)`` would. Returns\n"
"that channel's fd with the record's size, ancillary data, flags and 0, or with -1, [],\n"
"0 and the errno of a failed read (EAGAIN: nothing there after all); fd -1 when no\n"
"channel was ready. Raises OSError when sending fails, or when ``epfd`` does (closed:\n"
"the link is gone). Signals that interrupt the wait run their handlers, and the turn\n"
"goes on.");

static PyObject *hub_turn(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "hub_turn takes 7 arguments");
        return NULL;
    }
    int epfd = PyObject_AsFileDescriptor(args[0]);
    if (epfd < 0) return NULL;
    long fd_arg = PyLong_AsLong(args[1]);
    if (fd_arg == -1 && PyErr_Occurred()) return NULL;
    if (fd_arg < -1 || fd_arg > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "hub_turn: fd must be -1 or a file descriptor");
        return NULL;
    }
    int fd = (int)fd_arg;
    long timeout_arg = PyLong_AsLong(args[4]);
    if (timeout_arg == -1 && PyErr_Occurred()) return NULL;
    int timeout = timeout_arg < 0 ? 0 : timeout_arg > INT_MAX ? INT_MAX : (int)timeout_arg;
    long long end = PyLong_AsLongLong(args[5]);
    if (end == -1 && PyErr_Occurred()) return NULL;
    long long preempted = PyLong_AsLongLong(args[6]);
    if (preempted == -1 && PyErr_Occurred()) return NULL;
    struct out_record out;
    int holding = fd >= 0, sending = holding; /* holding: out's buffers are held */
    if (holding && out_record_get(args[2], &out) < 0) return NULL;
    Py_buffer buf;
    if (PyObject_GetBuffer(args[3], &buf, PyBUF_WRITABLE) < 0) {
        if (holding) out_record_release(&out);
        return NULL;
    }
    PyObject *result = NULL;
    ssize_t n = -1;
    int saved_errno = 0, ready = 0, failed = 0, seen = 0; /* failed: 1 send, 2 epoll */
    struct epoll_event ev;
    union {
        char bytes[CONTROL_SPACE];
        struct cmsghdr align;
    } control;
    struct iovec iov = {.iov_base = buf.buf, .iov_len = (size_t)buf.len};
    struct msghdr msg;
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        if (sending) {
            struct msghdr out_msg;
            memset(&out_msg, 0, sizeof out_msg);
            out_msg.msg_iov = out.iov;
            out_msg.msg_iovlen = (size_t)out.n;
            if (out.len > 0 && sendmsg(fd, &out_msg, MSG_DONTWAIT) < 0) {
                saved_errno = errno;
                failed = 1;
            } else {
                struct epoll_event arm = {.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT,
                                          .data.fd = fd};
                epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &arm); /* closed meanwhile: nothing */
                sending = 0;
            }
        }
        if (!failed && end != 0 && seen == 0) {
            /* Polling: epoll_wait without waiting until a channel is ready or the window
             * closes (a failure is met again by the wait below, and reported). */
            struct hub_look look = {.epfd = epfd, .ev = &ev};
            int spun = spin_looking(look_ready_channel, &look, end, preempted);
            seen = spun == -2 ? 0 : spun;
            ready = spun == 1;
            end = 0;
        }
        if (!failed && ready <= 0) {
            ready = epoll_wait(epfd, &ev, 1, timeout);
        }
        if (!failed && ready < 0) {
            saved_errno = errno;
            failed = 2;
        } else if (!failed && ready > 0) {
            reset_msghdr(&msg, &iov, control.bytes, sizeof control.bytes);
            n = recvmsg(ev.data.fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
            saved_errno = n < 0 ? errno : 0;
        }
        Py_END_ALLOW_THREADS
        if (failed && saved_errno == EINTR) {
            failed = 0; /* a signal: its handlers run, then the turn goes on */
            ready = 0;
        } else {
            break; /* a record, nothing within the timeout, or a failure */
        }
        if (PyErr_CheckSignals() < 0) goto done;
    }
    if (failed) {
        errno = saved_errno;
        PyErr_SetFromErrno(failed == 1 && (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK)
                               ? PyExc_BlockingIOError
                               : PyExc_OSError);
        goto done;
    }
    if (ready == 0) {
        result = Py_BuildValue("(in[]iii)", -1, (Py_ssize_t)-1, 0, 0, seen);
        goto done;
    }
    if (n < 0) {
        result = Py_BuildValue("(in[]iii)", ev.data.fd, (Py_ssize_t)-1, 0, saved_errno, seen);
        goto done;
    }
    PyObject *anc = ancillary_list(&msg);
    if (anc == NULL) goto done;
    result = Py_BuildValue("(inNiii)", ev.data.fd, (Py_ssize_t)n, anc, msg.msg_flags, 0, seen);
done:
    if (holding) out_record_release(&out);
    PyBuffer_Release(&buf);
    return result;
}

PyDoc_STRVAR(decode_record_frames_doc,
"decode_record_frames(record, n_fds) -> list[tuple]\n\n"
"ck_frame.c's record decoder (the one libipc_capi.so uses), for the conformance tests:\n"
"one (type, flags, fd_start, n_fds, seq, handle, code, status, count, after_replies,\n"
"version, data, objects) tuple per frame, objects a list of (kind, handle). Raises\n"
"ValueError with the decoder's reason for a record the protocol refuses.");

static PyObject *decode_record_frames(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "decode_record_frames takes 2 arguments");
        return NULL;
    }
    Py_ssize_t n_fds = PyLong_AsSsize_t(args[1]);
    if (n_fds == -1 && PyErr_Occurred()) return NULL;
    if (n_fds < 0) {
        PyErr_SetString(PyExc_ValueError, "n_fds must be >= 0");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
    ck__frame_t *frames;
    char err[200];
    long n = ck__record_decode(view.buf, (size_t)view.len, (size_t)n_fds, &frames, err,
                               sizeof err);
    PyObject *out = NULL;
    if (n == -1) {
        PyErr_SetString(PyExc_ValueError, err);
    } else if (n < 0) {
        PyErr_NoMemory();
    } else if ((out = PyList_New(n)) != NULL) {
        for (long i = 0; i < n; i++) {
            const ck__frame_t *f = &frames[i];
            PyObject *objects = PyList_New((Py_ssize_t)f->n_objects);
            if (objects == NULL) goto fail;
            for (size_t k = 0; k < f->n_objects; k++) {
                const unsigned char *o = f->objects + k * CK__OBJ_SIZE;
                PyObject *ref = Py_BuildValue("(ik)", o[0], (unsigned long)ck__get_u32(o + 1));
                if (ref == NULL) {
                    Py_DECREF(objects);
                    goto fail;
                }
                PyList_SET_ITEM(objects, (Py_ssize_t)k, ref);
            }
            PyObject *item = Py_BuildValue(
                "(iinnKkkikKiy#N)", f->type, f->flags, (Py_ssize_t)f->fd_start,
                (Py_ssize_t)f->n_fds, (unsigned long long)f->seq, (unsigned long)f->handle,
                (unsigned long)f->code, (int)f->status, (unsigned long)f->count,
                (unsigned long long)f->after_replies, f->version,
                f->data != NULL ? (const char *)f->data : "", (Py_ssize_t)f->data_len,
                objects);
            if (item == NULL) goto fail;
            PyList_SET_ITEM(out, i, item);
        }
    }
    free(frames);
    PyBuffer_Release(&view);
    return out;
fail:
    Py_DECREF(out);
    free(frames);
    PyBuffer_Release(&view);
    return NULL;
}

/* ------------------------------------------------------------------------ ParcelBase
 *
 * The storage of a MessageParcel and its hot path (the Python twin, the reference, is
 * _parcelbase.PyParcelBase; _parcel.MessageParcel subclasses whichever is in use). The
 * seven fields are the parcel's (see _parcel): the data (a bytearray while written, the
 * bytes a small received record held, a view of an adopted receive buffer, or Pieces),
 * the adopted buffer, the fds and objects lists, the fd finalizer, the read position and
 * the closed flag. Only the common cases run here: creating an empty parcel, a small
 * ``bytes`` written, a buffer read from bytes or a bytearray, an int32 written and read,
 * closing a parcel that holds
 * no fds, objects or buffer, and a small received parcel made; and the common large cases
 * (a large bytes kept as Pieces, a buffer read as its piece, a parcel of a record read
 * scattered: as _pieces.kept, _pieces.take and _recvbuf.adopt); everything else calls the
 * parcel's Python methods (``_write_bytes_slow``, ``_take_blob``, ``_write_int``,
 * ``_take_fixed``, ``_release``, ``_received_large``), so the behaviour is theirs.
 */
#define PARCEL_SMALL_BYTES 8192 /* _pieces.KEEP_BYTES and _recvbuf.ADOPT_BYTES */
#define TAG_INT32 3

typedef struct {
    PyObject_HEAD
    PyObject *buf, *owner, *fds, *objects, *finalizer;
    Py_ssize_t rpos;
    char closed;
} ParcelObject;

static PyObject *str_release, *str_take_blob, *str_write_bytes_slow, *str_received_large,
    *str_write_int, *str_take_fixed, *str_scattered, *tag_bytes, *tag_int32;

/* A new parcel of ``type`` holding ``data`` (a new reference, taken even on failure). */
static PyObject *parcel_wrap(PyTypeObject *type, PyObject *data) {
    ParcelObject *p = (ParcelObject *)type->tp_alloc(type, 0);
    if (p == NULL) {
        Py_DECREF(data);
        return NULL;
    }
    p->buf = data;
    p->owner = Py_NewRef(Py_None);
    p->finalizer = Py_NewRef(Py_None);
    p->fds = PyList_New(0);
    p->objects = PyList_New(0);
    if (p->fds == NULL || p->objects == NULL) {
        Py_DECREF(p);
        return NULL;
    }
    return (PyObject *)p;
}

static PyObject *parcel_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    if (PyTuple_GET_SIZE(args) != 0 || (kwds != NULL && PyDict_GET_SIZE(kwds) != 0)) {
        PyErr_Format(PyExc_TypeError, "%s() takes no arguments", type->tp_name);
        return NULL;
    }
    PyObject *data = PyByteArray_FromStringAndSize(NULL, 0);
    if (data == NULL) return NULL;
    return parcel_wrap(type, data);
}

static int parcel_traverse(ParcelObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->buf);
    Py_VISIT(self->owner);
    Py_VISIT(self->fds);
    Py_VISIT(self->objects);
    Py_VISIT(self->finalizer);
    return 0;
}

static int parcel_clear(ParcelObject *self) {
    Py_CLEAR(self->buf);
    Py_CLEAR(self->owner);
    Py_CLEAR(self->fds);
    Py_CLEAR(self->objects);
    Py_CLEAR(self->finalizer);
    return 0;
}

static void parcel_dealloc(ParcelObject *self) {
    PyObject_GC_UnTrack(self);
    parcel_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int empty_list(PyObject *obj) {
    return obj != NULL && PyList_CheckExact(obj) && PyList_GET_SIZE(obj) == 0;
}

static PyObject *parcel_close(ParcelObject *self, PyObject *unused) {
    self->closed = 1;
    if (empty_list(self->fds) && empty_list(self->objects) && self->finalizer == Py_None &&
        self->owner == Py_None)
        Py_RETURN_NONE;
    return PyObject_CallMethodNoArgs((PyObject *)self, str_release);
}

static PyObject *parcel_enter(ParcelObject *self, PyObject *unused) {
    return Py_NewRef((PyObject *)self);
}

static PyObject *parcel_exit(ParcelObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return parcel_close(self, NULL);
}

static PyObject *parcel_write_bytes(ParcelObject *self, PyObject *value) {
    PyObject *buf = self->buf;
    if (PyBytes_CheckExact(value) && buf != NULL && PyByteArray_CheckExact(buf) &&
        !self->closed) {
        Py_ssize_t size = PyBytes_GET_SIZE(value), len = PyByteArray_GET_SIZE(buf);
        if (size < PARCEL_SMALL_BYTES && len + BLOB_HEAD + size <= MAX_PARCEL_DATA) {
            /* As ``buf += head; buf += value``: a BufferError while a view of it is held. */
            if (PyByteArray_Resize(buf, len + BLOB_HEAD + size) < 0) return NULL;
            unsigned char *p = (unsigned char *)PyByteArray_AS_STRING(buf) + len;
            p[0] = TAG_BYTES;
            ck__put_u32(p + 1, (uint32_t)size);
            memcpy(p + BLOB_HEAD, PyBytes_AS_STRING(value), (size_t)size);
            Py_RETURN_NONE;
        }
        /* A large one is kept by reference, behind a copy of what was written before it
         * (as _pieces.kept: only while that is the smaller part). */
        if (size >= PARCEL_SMALL_BYTES && len < size && self->owner == Py_None &&
            len + BLOB_HEAD + size <= MAX_PARCEL_DATA) {
            PyObject *head = PyBytes_FromStringAndSize(NULL, len + BLOB_HEAD);
            if (head == NULL) return NULL;
            unsigned char *p = (unsigned char *)PyBytes_AS_STRING(head);
            memcpy(p, PyByteArray_AS_STRING(buf), (size_t)len);
            p[len] = TAG_BYTES;
            ck__put_u32(p + len + 1, (uint32_t)size);
            PyObject *pieces = pieces_of_two(head, Py_NewRef(value));
            if (pieces == NULL) return NULL;
            Py_SETREF(self->buf, pieces);
            Py_RETURN_NONE;
        }
    }
    return PyObject_CallMethodOneArg((PyObject *)self, str_write_bytes_slow, value);
}

/* The data of a parcel whose buffer is bytes or a bytearray, and its length; NULL for
 * anything else (a view of an adopted buffer, Pieces: the Python methods read those). */
static const unsigned char *parcel_data(ParcelObject *self, Py_ssize_t *len) {
    PyObject *buf = self->buf;
    if (buf != NULL && PyBytes_CheckExact(buf)) {
        *len = PyBytes_GET_SIZE(buf);
        return (const unsigned char *)PyBytes_AS_STRING(buf);
    }
    if (buf != NULL && PyByteArray_CheckExact(buf)) {
        *len = PyByteArray_GET_SIZE(buf);
        return (const unsigned char *)PyByteArray_AS_STRING(buf);
    }
    return NULL;
}

/* The part of ``pieces`` that is, whole, the value of type ``tag`` whose tag and length
 * are at ``pos`` (the tag and length end its part before), with ``*end`` set past it; NULL
 * if no part is (as _pieces.take). A borrowed reference. */
static PyObject *pieces_take(PiecesObject *pieces, int tag, Py_ssize_t pos, Py_ssize_t *end) {
    Py_ssize_t offset = 0;
    PyObject *before = NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(pieces->parts); i++) {
        PyObject *part = PyTuple_GET_ITEM(pieces->parts, i);
        if (offset == pos + BLOB_HEAD) {
            if (before == NULL || PyBytes_GET_SIZE(before) < BLOB_HEAD) return NULL;
            const unsigned char *head = (const unsigned char *)PyBytes_AS_STRING(before) +
                                        PyBytes_GET_SIZE(before) - BLOB_HEAD;
            if (head[0] != tag || (Py_ssize_t)ck__get_u32(head + 1) != PyBytes_GET_SIZE(part))
                return NULL;
            *end = offset + PyBytes_GET_SIZE(part);
            return part;
        }
        if (offset > pos) return NULL;
        offset += PyBytes_GET_SIZE(part);
        before = part;
    }
    return NULL;
}

static PyObject *parcel_read_bytes(ParcelObject *self, PyObject *unused) {
    Py_ssize_t len = 0, pos = self->rpos;
    if (self->buf != NULL && Py_IS_TYPE(self->buf, &PiecesType) && pos >= 0) {
        Py_ssize_t end;
        PyObject *part = pieces_take((PiecesObject *)self->buf, TAG_BYTES, pos, &end);
        if (part != NULL) {
            self->rpos = end;
            return Py_NewRef(part);
        }
    }
    const unsigned char *data = parcel_data(self, &len);
    if (data != NULL && pos >= 0 && pos + BLOB_HEAD <= len && data[pos] == TAG_BYTES) {
        Py_ssize_t size = (Py_ssize_t)ck__get_u32(data + pos + 1);
        if (size <= len - pos - BLOB_HEAD) {
            PyObject *out = PyBytes_FromStringAndSize((const char *)data + pos + BLOB_HEAD, size);
            if (out != NULL) self->rpos = pos + BLOB_HEAD + size;
            return out;
        }
    }
    return PyObject_CallMethodOneArg((PyObject *)self, str_take_blob, tag_bytes);
}

static PyObject *parcel_write_int32(ParcelObject *self, PyObject *value) {
    PyObject *buf = self->buf;
    if (PyLong_CheckExact(value) && buf != NULL && PyByteArray_CheckExact(buf) &&
        !self->closed) {
        int overflow;
        long v = PyLong_AsLongAndOverflow(value, &overflow);
        Py_ssize_t len = PyByteArray_GET_SIZE(buf);
        if (!overflow && v >= INT32_MIN && v <= INT32_MAX && len + 5 <= MAX_PARCEL_DATA) {
            if (PyByteArray_Resize(buf, len + 5) < 0) return NULL;
            unsigned char *p = (unsigned char *)PyByteArray_AS_STRING(buf) + len;
            p[0] = TAG_INT32;
            ck__put_u32(p + 1, (uint32_t)(int32_t)v);
            Py_RETURN_NONE;
        }
    }
    return PyObject_CallMethodObjArgs((PyObject *)self, str_write_int, tag_int32, value, NULL);
}

static PyObject *parcel_read_int32(ParcelObject *self, PyObject *unused) {
    Py_ssize_t len = 0, pos = self->rpos;
    const unsigned char *data = parcel_data(self, &len);
    if (data != NULL && pos >= 0 && pos + 5 <= len && data[pos] == TAG_INT32) {
        self->rpos = pos + 5;
        return PyLong_FromLong((long)(int32_t)ck__get_u32(data + pos + 1));
    }
    return PyObject_CallMethodOneArg((PyObject *)self, str_take_fixed, tag_int32);
}

static long long scattered_taken; /* parcels made by received_scattered (under the GIL) */

/* A parcel for ``buf[start:end]`` when ``buf`` (a _recvbuf.RecvBuffer) holds a record read
 * scattered whose blob ends the parcel data: its data is Pieces of a copy of the bytes
 * before the blob and the blob itself, and ``buf`` keeps no blob (as _recvbuf.adopt with
 * _parcel._received_large). Py_None (a new reference) when it does not apply. */
static PyObject *received_scattered(PyTypeObject *cls, PyObject *buf, Py_ssize_t start,
                                    Py_ssize_t end) {
    PyObject *scattered = PyObject_GetAttr(buf, str_scattered);
    if (scattered == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) return NULL;
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    Py_ssize_t at = -1;
    PyObject *blob = NULL;
    if (PyTuple_CheckExact(scattered) && PyTuple_GET_SIZE(scattered) == 2 &&
        PyBytes_CheckExact(PyTuple_GET_ITEM(scattered, 1))) {
        at = PyLong_AsSsize_t(PyTuple_GET_ITEM(scattered, 0));
        if (at == -1 && PyErr_Occurred()) PyErr_Clear();
        blob = PyTuple_GET_ITEM(scattered, 1);
    }
    if (blob == NULL || at < start || at + PyBytes_GET_SIZE(blob) != end) {
        Py_DECREF(scattered);
        Py_RETURN_NONE; /* the Python path puts a stray blob back, or reads the buffer */
    }
    Py_INCREF(blob);
    Py_DECREF(scattered);
    Py_buffer view;
    if (PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE) < 0) {
        Py_DECREF(blob);
        return NULL;
    }
    PyObject *head = at <= view.len ? PyBytes_FromStringAndSize((const char *)view.buf + start,
                                                                 at - start)
                                    : NULL;
    PyBuffer_Release(&view);
    if (head == NULL) {
        Py_DECREF(blob);
        if (!PyErr_Occurred()) Py_RETURN_NONE;
        return NULL;
    }
    if (PyObject_SetAttr(buf, str_scattered, Py_None) < 0) {
        Py_DECREF(head);
        Py_DECREF(blob);
        return NULL;
    }
    PyObject *pieces = pieces_of_two(head, blob);
    if (pieces == NULL) return NULL;
    scattered_taken++;
    return parcel_wrap(cls, pieces);
}

PyDoc_STRVAR(scattered_count_doc,
"scattered_count() -> int\n\n"
"Parcels that ParcelBase._received made of a record read scattered (the tests watch it).");

static PyObject *scattered_count(PyObject *self, PyObject *unused) {
    return PyLong_FromLongLong(scattered_taken);
}

static PyObject *parcel_received(PyObject *cls, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "_received takes 3 arguments");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t end = PyLong_AsSsize_t(args[2]);
    if (end == -1 && PyErr_Occurred()) return NULL;
    if (start >= 0 && end - start >= PARCEL_SMALL_BYTES) {
        PyObject *parcel = received_scattered((PyTypeObject *)cls, args[0], start, end);
        if (parcel != Py_None) return parcel; /* (or NULL: an error) */
        Py_DECREF(parcel);
    }
    if (start < 0 || end < start || end - start >= PARCEL_SMALL_BYTES)
        return PyObject_CallMethodObjArgs(cls, str_received_large, args[0], args[1], args[2],
                                          NULL);
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
    if (end > view.len) end = view.len; /* as a slice would */
    if (start > end) start = end;
    PyObject *data = PyBytes_FromStringAndSize((const char *)view.buf + start, end - start);
    PyBuffer_Release(&view);
    if (data == NULL) return NULL;
    return parcel_wrap((PyTypeObject *)cls, data);
}

static PyMemberDef parcel_members[] = {
    {"_buf", T_OBJECT_EX, offsetof(ParcelObject, buf), 0, NULL},
    {"_owner", T_OBJECT_EX, offsetof(ParcelObject, owner), 0, NULL},
    {"_fds", T_OBJECT_EX, offsetof(ParcelObject, fds), 0, NULL},
    {"_objects", T_OBJECT_EX, offsetof(ParcelObject, objects), 0, NULL},
    {"_finalizer", T_OBJECT_EX, offsetof(ParcelObject, finalizer), 0, NULL},
    {"_rpos", T_PYSSIZET, offsetof(ParcelObject, rpos), 0, NULL},
    {"_closed", T_BOOL, offsetof(ParcelObject, closed), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

PyDoc_STRVAR(close_doc,
"Release the parcel's file descriptors and objects. Idempotent.\n\n"
"A parcel received in a large record also gives back the buffer it was read into,\n"
"for the next record: its data is gone (it reads as empty).");
PyDoc_STRVAR(write_bytes_doc, "Append a bytes-like value (copied once, into the parcel).");
PyDoc_STRVAR(read_bytes_doc,
"Read a bytes value. Raises ParcelReadError if that is not next.");

static PyMethodDef parcel_methods[] = {
    {"close", (PyCFunction)parcel_close, METH_NOARGS, close_doc},
    {"__enter__", (PyCFunction)parcel_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))parcel_exit, METH_FASTCALL, NULL},
    {"write_bytes", (PyCFunction)parcel_write_bytes, METH_O, write_bytes_doc},
    {"write_buffer", (PyCFunction)parcel_write_bytes, METH_O, write_bytes_doc},
    {"read_bytes", (PyCFunction)parcel_read_bytes, METH_NOARGS, read_bytes_doc},
    {"read_buffer", (PyCFunction)parcel_read_bytes, METH_NOARGS, read_bytes_doc},
    {"write_int32", (PyCFunction)parcel_write_int32, METH_O,
     "Append a signed 32-bit int. Raises ParamError if it does not fit."},
    {"read_int32", (PyCFunction)parcel_read_int32, METH_NOARGS,
     "Read a signed 32-bit int. Raises ParcelReadError if that is not next."},
    {"_received", (PyCFunction)(void (*)(void))parcel_received, METH_FASTCALL | METH_CLASS,
     "A parcel for reading buf[start:end] of a record just read (see _parcel)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ParcelBaseType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "childkit.ipc._speedups.ParcelBase",
    .tp_basicsize = sizeof(ParcelObject),
    .tp_dealloc = (destructor)parcel_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A parcel's storage and hot path (see _parcelbase.PyParcelBase).",
    .tp_traverse = (traverseproc)parcel_traverse,
    .tp_clear = (inquiry)parcel_clear,
    .tp_methods = parcel_methods,
    .tp_members = parcel_members,
    .tp_new = parcel_new,
};

static int parcel_init_module(PyObject *m) {
    if ((str_release = PyUnicode_InternFromString("_release")) == NULL ||
        (str_take_blob = PyUnicode_InternFromString("_take_blob")) == NULL ||
        (str_write_bytes_slow = PyUnicode_InternFromString("_write_bytes_slow")) == NULL ||
        (str_received_large = PyUnicode_InternFromString("_received_large")) == NULL ||
        (str_write_int = PyUnicode_InternFromString("_write_int")) == NULL ||
        (str_take_fixed = PyUnicode_InternFromString("_take_fixed")) == NULL ||
        (str_scattered = PyUnicode_InternFromString("scattered")) == NULL ||
        (tag_bytes = PyLong_FromLong(TAG_BYTES)) == NULL ||
        (tag_int32 = PyLong_FromLong(TAG_INT32)) == NULL)
        return -1;
    if (PyType_Ready(&ParcelBaseType) < 0) return -1;
    if (PyModule_AddObjectRef(m, "ParcelBase", (PyObject *)&ParcelBaseType) < 0) return -1;
    return PyModule_AddIntConstant(m, "PARCEL_SMALL_BYTES", PARCEL_SMALL_BYTES);
}

static PyMethodDef methods[] = {
    {"encode_transaction", (PyCFunction)(void (*)(void))encode_transaction, METH_FASTCALL,
     encode_transaction_doc},
    {"encode_reply", (PyCFunction)(void (*)(void))encode_reply, METH_FASTCALL,
     encode_reply_doc},
    {"simple_request", (PyCFunction)(void (*)(void))simple_request, METH_FASTCALL,
     simple_request_doc},
    {"simple_reply", (PyCFunction)(void (*)(void))simple_reply, METH_FASTCALL,
     simple_reply_doc},
    {"poll_readable", (PyCFunction)(void (*)(void))poll_readable, METH_FASTCALL,
     poll_readable_doc},
    {"exchange", (PyCFunction)(void (*)(void))exchange, METH_FASTCALL, exchange_doc},
    {"hub_turn", (PyCFunction)(void (*)(void))hub_turn, METH_FASTCALL, hub_turn_doc},
    {"hold", (PyCFunction)(void (*)(void))hold, METH_FASTCALL, hold_doc},
    {"unhold", unhold, METH_O, unhold_doc},
    {"drop_holds", drop_holds, METH_O, drop_holds_doc},
    {"release_holds", release_holds, METH_NOARGS, release_holds_doc},
    {"set_hold_limit", set_hold_limit, METH_O, set_hold_limit_doc},
    {"scattered_count", scattered_count, METH_NOARGS, scattered_count_doc},
    {"decode_record_frames", (PyCFunction)(void (*)(void))decode_record_frames, METH_FASTCALL,
     decode_record_frames_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "childkit.ipc._speedups",
    "C versions of the IPC hot path's pure functions (see _wire and _busypoll).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__speedups(void) {
    PyObject *struct_mod = PyImport_ImportModule("struct");
    if (struct_mod == NULL) return NULL;
    struct_error = PyObject_GetAttrString(struct_mod, "error");
    Py_DECREF(struct_mod);
    if (struct_error == NULL) return NULL;
    if (pthread_atfork(holds_prepare_fork, holds_parent_after_fork,
                       holds_child_after_fork) != 0) {
        PyErr_SetString(PyExc_RuntimeError, "pthread_atfork failed");
        return NULL;
    }
    if (PyType_Ready(&PiecesType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "Pieces", (PyObject *)&PiecesType) < 0 ||
        parcel_init_module(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "MAX_RECORD_BYTES", MAX_RECORD_BYTES) < 0 ||
        PyModule_AddIntConstant(m, "MAX_WIRE_DATA", MAX_WIRE_DATA) < 0 ||
        PyModule_AddIntConstant(m, "MAX_PARCEL_DATA", MAX_PARCEL_DATA) < 0 ||
        PyModule_AddIntConstant(m, "TXN_DATA_OFFSET", TXN_FRAME_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "REPLY_DATA_OFFSET", REPLY_FRAME_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "SCATTER_BYTES", SCATTER_BYTES) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
