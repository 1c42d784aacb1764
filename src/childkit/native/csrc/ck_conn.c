/*
 * One IPC connection of the C kit: the two SOCK_SEQPACKET sockets of docs/wire-format.md,
 * the objects exported to the peer and imported from it, outstanding calls, and the
 * reader thread of the serve socket. The C twin of ipc/_connection.py, speaking the same
 * frames (ck_frame.c), so either side of a link may be C or Python.
 *
 * Threads:
 *  - the serve reader: one thread at a time holds the reading role of the serve socket
 *    (see "the serve reader" below) and reads the peer's records: HELLO, RELEASE, and
 *    requests. A record that is one sync request to an idle object runs on the holder
 *    itself; other requests go to the work threads (ck_pool.c), one-way requests to an
 *    object in order, one at a time (a sync request to an object with one-way requests
 *    pending waits in the same queue). A follower thread watches the holder while it runs
 *    a request, and takes the role over if the request calls out or runs long;
 *  - sync callers read their own replies: one caller at a time reads the call socket and
 *    hands each other caller its reply (no thread hop for a lone caller).
 * Any protocol error, EOF or failed send closes the connection (ck__conn_close): every
 * call fails with OH_IPC_DEAD_REMOTE_OBJECT and each death recipient runs once, on a
 * thread of its own.
 *
 * Ownership: the connection owns both sockets (closed when its last reference goes).
 * References: the starter's, each serve-loop thread's, one per remote and per queued job.
 * Everything below marked "guarded" is guarded by lock.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "ck_internal.h"
#include "ipc_error_code.h"

#define CK__CONTROL_SPACE (CMSG_SPACE(CK__MAX_RECORD_FDS * sizeof(int)) + CMSG_SPACE(sizeof(struct ucred)))

/* A request waiting in an object's one-way queue, or on its way to a work thread. */
typedef struct job_s {
    ck__conn_t *conn; /* a reference (the serve reader's slot: its thread's) */
    struct export_s *export;
    uint64_t seq;
    uint32_t code;
    int oneway;
    OHIPCParcel *data;
    uint64_t pid, uid;
    int on_stack; /* the serve reader's own slot (a request it runs itself): not freed,
                   * and no reference of its own (the serve loop's thread holds one) */
    struct job_s *next;
} job_t;

/* An object this side exports. Entries stay allocated while a drain runs over them. */
typedef struct export_s {
    OHIPCRemoteStub *stub; /* a reference */
    uint32_t handle;
    uint64_t count; /* SENDER_STUB references sent, less those released (root: unused) */
    uint64_t pending; /* of which released by RELEASEs still waiting for replies */
    int gone;       /* released or closed: requests to it fail */
    int busy;       /* a drain job runs its queue */
    job_t *qhead, *qtail;
    struct export_s *next;
} export_t;

/* A sync call waiting for its reply (on its caller's stack; guarded). */
typedef struct waiter_s {
    uint64_t seq;
    int done, status;
    int claimed;           /* a reader took its reply off the list and is filling it in */
    int reading;           /* its thread holds the reading role of the call socket */
    pthread_cond_t *wake;  /* its thread's own condition: signalled for it alone */
    OHIPCParcel *reply;
    OHIPCParcel *target;   /* the caller's reply parcel (its own reply may go straight in) */
    struct waiter_s *next;
} waiter_t;

/* A RELEASE waiting for replies: an entry of the connection's min-heap on after. */
typedef struct {
    uint32_t handle, count;
    uint64_t after;
} release_t;

/* Releases that may wait for replies (each 16 bytes, O(log n) to wait and apply): one
 * more is a protocol error (docs/wire-format.md). */
#define CK__MAX_DEFERRED 16384
/* Live remotes one peer's references may make on this side: a reference to one more is a
 * protocol error (docs/ipc.md). */
#define CK__MAX_IMPORTS 65536

/* The fields every call or request touches come first, together in a few cache lines (a
 * round trip finds its caches cold after each context switch: each line costs); the rest
 * (waits, the reason, imports, the outbox's fds) follow. */
struct ck__conn_s {
    pthread_mutex_t lock;
    int refs;               /* atomic */
    int call_fd, serve_fd;
    int dead;               /* atomic; set once */
    pid_t owner;            /* the process that started it (a fork's copy is dead) */
    int reading;            /* guarded: a caller reads the call socket */
    uint64_t next_seq;      /* guarded: the next sync call's seq (from 1) */
    waiter_t *waiters;      /* guarded */
    uint64_t replies_sent;  /* atomic (a reply without objects counts without the lock) */
    uint64_t replies_received; /* guarded */
    release_t *deferred;    /* guarded: a min-heap on after, n_deferred long */
    export_t *exports;      /* guarded */
    uint64_t peer_pid, peer_uid;
    size_t out_len;         /* the outbox's (below): written under send_lock, atomically
                             * (read without the lock) */
    /* The serve socket's reading role (see "the serve reader" below), all guarded: one
     * holder at a time reads, so records are decoded and queued in arrival order. */
    int role_taken;         /* a thread holds the role */
    int serve_threads;      /* threads in the serve loop (holder, followers, starting) */
    int followers;          /* of which waiting for the role */
    int watching;           /* one follower waits with a timeout, watching the holder */
    uint64_t role_gen;      /* bumped each time the role changes hands */
    uint64_t inline_token;  /* atomic: while the holder runs a request (and nobody reads
                             * the socket), the role_gen of its tenure; else 0. The holder
                             * clears it without the lock when its request ends */
    uint64_t inline_gen;    /* bumped for each request run by the holder */
    pthread_cond_t follow;  /* the role is free, a watcher is wanted, or death */
    pthread_cond_t changed; /* HELLO came, or death */
    size_t n_deferred, deferred_cap; /* guarded */
    int greeted, peer_has_root; /* guarded */
    char reason[160];       /* guarded */
    uint32_t next_handle;   /* guarded */
    /* guarded: the live remotes by handle, an open-addressing table (linear probing,
     * imports_cap slots, a power of two, or 0), n_imports of them in use */
    ck__remote_t **imports;
    size_t n_imports, imports_cap;
    /* Queued requests' jobs once run, each with its emptied parcel (guarded): the next
     * requests' jobs, so a stream of one-way requests allocates nothing per request. */
    job_t *spare_jobs;
    size_t n_spare_jobs;
    /* The call socket's outbox: one-way frames wait here (with dups of their fds) until a
     * flush job, or the next sync request or release, sends them in one record, in order. */
    pthread_mutex_t send_lock;
    unsigned char *out;        /* guarded by send_lock, as the rest of the outbox */
    size_t out_cap;
    int out_fds[CK__MAX_RECORD_FDS];
    size_t out_nfds;
    int flush_pending;
};

static void close_all(const int *fds, size_t n);
static int call_send(ck__conn_t *conn, const unsigned char *frame, size_t len, const int *fds,
                     size_t n_fds, int defer);

void ck__conn_lock(ck__conn_t *conn) { pthread_mutex_lock(&conn->lock); }
void ck__conn_unlock(ck__conn_t *conn) { pthread_mutex_unlock(&conn->lock); }
int ck__conn_is_dead(ck__conn_t *conn) {
    return __atomic_load_n(&conn->dead, __ATOMIC_ACQUIRE) || conn->owner != ck__pid();
}
void ck__conn_ref(ck__conn_t *conn) { __atomic_add_fetch(&conn->refs, 1, __ATOMIC_RELAXED); }

static void free_exports(export_t *e) {
    while (e != NULL) {
        export_t *next = e->next;
        free(e);
        e = next;
    }
}

/* Frees a list of jobs with their parcels (empty ones: no fds or objects left). */
static void free_jobs(job_t *job) {
    while (job != NULL) {
        job_t *next = job->next;
        OH_IPCParcel_Destroy(job->data);
        free(job);
        job = next;
    }
}

void ck__conn_unref(ck__conn_t *conn) {
    if (__atomic_sub_fetch(&conn->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
    close(conn->call_fd);
    close(conn->serve_fd);
    free_exports(conn->exports);
    free(conn->deferred);
    free(conn->imports);
    free_jobs(conn->spare_jobs);
    close_all(conn->out_fds, conn->out_nfds); /* one-way frames never sent */
    free(conn->out);
    pthread_mutex_destroy(&conn->send_lock);
    pthread_cond_destroy(&conn->changed);
    pthread_cond_destroy(&conn->follow);
    pthread_mutex_destroy(&conn->lock);
    free(conn);
}

/* ------------------------------------------------------------------ socket I/O */
/* The kit's socket calls are system calls without glibc's cancellation-point wrappers
 * (syscall(2)): a thread cancelled inside the kit would leave its call registered on the
 * link (a waiter on its stack), so they must not be cancellation points; and the wrappers
 * cost two atomic operations per call in a threaded process. */
static ssize_t sys_send(int fd, const void *buf, size_t len, int flags) {
    return syscall(SYS_sendto, fd, buf, len, flags, NULL, 0);
}
static ssize_t sys_sendmsg(int fd, const struct msghdr *msg, int flags) {
    return syscall(SYS_sendmsg, fd, msg, flags);
}
static ssize_t sys_recvmsg(int fd, struct msghdr *msg, int flags) {
    return syscall(SYS_recvmsg, fd, msg, flags);
}

static void close_all(const int *fds, size_t n) {
    for (size_t i = 0; i < n; i++) close(fds[i]);
}

/* Sends one record with its n_fds fds (at most CK__MAX_RECORD_FDS: the outbox joins the
 * fds of many one-way frames); 0, or -1 (the peer is gone, or the kernel refused). */
static int send_record(int fd, const unsigned char *buf, size_t len, const int *fds, size_t n_fds) {
    if (n_fds == 0) { /* send(): the kernel copies no message header or iovec for it */
        for (;;) {
            ssize_t n = sys_send(fd, buf, len, MSG_NOSIGNAL);
            if (n == (ssize_t)len) return 0;
            if (n < 0 && errno == EINTR) continue;
            return -1;
        }
    }
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    union {
        char space[CMSG_SPACE(CK__MAX_RECORD_FDS * sizeof(int))];
        struct cmsghdr align;
    } control;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space,
                         .msg_controllen = CMSG_SPACE(n_fds * sizeof(int))};
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(n_fds * sizeof(int));
    memcpy(CMSG_DATA(cmsg), fds, n_fds * sizeof(int));
    for (;;) {
        ssize_t n = sys_sendmsg(fd, &msg, MSG_NOSIGNAL);
        if (n == (ssize_t)len) return 0;
        if (n < 0 && errno == EINTR) continue;
        return -1;
    }
}

/* One received record: its size (0 at EOF), or -1 (error; reason in why). The fds that
 * came are in fds (the caller owns them, also on error); cred is set if the kernel
 * stamped credentials. */
static ssize_t recv_record(int fd, unsigned char *buf, int *fds, size_t *n_fds,
                           struct ucred *cred, int *has_cred, const char **why) {
    struct iovec iov = {.iov_base = buf, .iov_len = CK__MAX_RECORD_BYTES};
    union {
        char space[CK__CONTROL_SPACE];
        struct cmsghdr align;
    } control;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space,
                         .msg_controllen = sizeof control.space};
    ssize_t n;
    do n = sys_recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    *n_fds = 0;
    *has_cred = 0;
    if (n < 0) {
        *why = "reading the socket failed";
        return -1;
    }
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET) continue;
        if (c->cmsg_type == SCM_RIGHTS) {
            size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            if (*n_fds + k > CK__MAX_RECORD_FDS) k = CK__MAX_RECORD_FDS - *n_fds;
            memcpy(fds + *n_fds, CMSG_DATA(c), k * sizeof(int));
            *n_fds += k;
        } else if (c->cmsg_type == SCM_CREDENTIALS && c->cmsg_len >= CMSG_LEN(sizeof *cred)) {
            memcpy(cred, CMSG_DATA(c), sizeof *cred);
            *has_cred = 1;
        }
    }
    if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
        *why = "protocol error from the peer: a record or its fds were truncated";
        return -1;
    }
    if (n == 0 && *n_fds) {
        *why = "protocol error from the peer: fds without a record";
        return -1;
    }
    return n;
}

/* Room for the frames of a usual record (one request or reply, or a few), on the stack. */
#define CK__FEW_FRAMES 8
/* Room for why a record was refused (the caller's, living as long as why may be used). */
#define CK__ERR_BYTES 200

/* A received record's frames (ck_frame.c), in room (CK__FEW_FRAMES) while they fit there:
 * free *frames only if it is not room. On a protocol error its fds are closed and why
 * says what was wrong (written into err, CK__ERR_BYTES). */
static long decode(const unsigned char *buf, size_t size, int *fds, size_t n_fds,
                   ck__frame_t *room, ck__frame_t **frames, char *err, const char **why) {
    /* The usual record, one plain sync request or plain reply (no fds, objects or flags:
     * ck__frame_is_plain checks its head and lengths as the decoder would), is read off
     * its fixed head in one pass. */
    int type = size ? buf[0] : 0;
    if (n_fds == 0 && (type == CK__F_TRANSACTION || type == CK__F_REPLY) &&
        ck__frame_is_plain(buf, size, type)) {
        size_t head = type == CK__F_TRANSACTION ? CK__TXN_FRAME_SIZE : CK__REPLY_FRAME_SIZE;
        const unsigned char *body = buf + CK__HEADER_SIZE;
        *room = (ck__frame_t){.type = type, .seq = ck__get_u64(body), .data = buf + head,
                              .data_len = size - head, .objects = buf + size};
        if (type == CK__F_TRANSACTION) {
            room->handle = ck__get_u32(body + 8);
            room->code = ck__get_u32(body + 12);
        } else {
            room->status = (int32_t)ck__get_u32(body + 8);
        }
        *frames = room;
        return 1;
    }
    long n = ck__record_decode_into(buf, size, n_fds, room, CK__FEW_FRAMES, frames, err,
                                    CK__ERR_BYTES);
    if (n < 0) {
        close_all(fds, n_fds);
        *why = n == -1 ? err : "no memory for a record";
    }
    return n;
}

/* ------------------------------------------------------------------ objects on the wire */
static export_t *find_export(ck__conn_t *conn, uint32_t handle) {
    for (export_t *e = conn->exports; e != NULL; e = e->next)
        if (e->handle == handle && !e->gone) return e;
    return NULL;
}

/* Wire references for a parcel's objects (guarded): stubs are exported (one more
 * reference each), proxies of this connection's remotes go back as RECEIVER_STUB, and a
 * proxy of another connection (a third process) is sent as its forwarding stub, which
 * forwarders[i] holds (ck__forwarder_for, called before the lock). */
static int encode_objects_locked(ck__conn_t *conn, const OHIPCParcel *p,
                                 OHIPCRemoteStub *const *forwarders, unsigned char *out) {
    for (size_t i = 0; i < p->n_objs; i++) {
        const ck__pobj_t *o = &p->objs[i];
        OHIPCRemoteStub *stub = o->ptr;
        if (o->kind == CK__POBJ_REMOTE) {
            ck__remote_t *r = o->ptr;
            if (r->conn != conn) {
                if (forwarders == NULL || forwarders[i] == NULL) return OH_IPC_INNER_ERROR;
                stub = forwarders[i];
            } else {
                ck__frame_put_object(out + i * CK__OBJ_SIZE, CK__OBJ_RECEIVER_STUB, r->handle);
                continue;
            }
        }
        export_t *e = NULL;
        for (export_t *x = conn->exports; x != NULL; x = x->next)
            if (x->stub == stub && !x->gone) e = x;
        if (e == NULL) {
            if ((e = calloc(1, sizeof *e)) == NULL) return OH_IPC_INNER_ERROR;
            e->stub = stub;
            ck__stub_ref(e->stub);
            e->handle = conn->next_handle++;
            e->next = conn->exports;
            conn->exports = e;
        }
        if (e->handle != 0) e->count++;
        ck__frame_put_object(out + i * CK__OBJ_SIZE, CK__OBJ_SENDER_STUB, e->handle);
    }
    return OH_IPC_SUCCESS;
}

/* The imports table's home slot for handle (cap: a power of two). */
static size_t import_slot(uint32_t handle, size_t cap) {
    return (size_t)(((uint64_t)handle * 0x9E3779B97F4A7C15ULL) >> 32) & (cap - 1);
}

/* Puts r in the table (guarded; room known to be there). */
static void import_put(ck__remote_t **slots, size_t cap, ck__remote_t *r) {
    size_t i = import_slot(r->handle, cap);
    while (slots[i] != NULL) i = (i + 1) & (cap - 1);
    slots[i] = r;
}

/* The remote for the peer's handle (guarded), created if new: O(1) expected. NULL with
 * *why set when the peer already gave this side CK__MAX_IMPORTS live objects (a protocol
 * error), NULL with *why untouched without memory. */
static ck__remote_t *import_locked(ck__conn_t *conn, uint32_t handle, const char **why) {
    size_t cap = conn->imports_cap;
    if (cap) {
        for (size_t i = import_slot(handle, cap); conn->imports[i] != NULL;
             i = (i + 1) & (cap - 1))
            if (conn->imports[i]->handle == handle) return conn->imports[i];
    }
    if (conn->n_imports >= CK__MAX_IMPORTS) {
        *why = "protocol error from the peer: it gave this side 65536 live objects, the "
               "most one link may hold";
        return NULL;
    }
    if ((conn->n_imports + 1) * 4 > cap * 3) { /* kept under 3/4 full */
        size_t grown_cap = cap ? cap * 2 : 16;
        ck__remote_t **grown = calloc(grown_cap, sizeof *grown);
        if (grown == NULL) return NULL;
        for (size_t i = 0; i < cap; i++)
            if (conn->imports[i] != NULL) import_put(grown, grown_cap, conn->imports[i]);
        free(conn->imports);
        conn->imports = grown;
        conn->imports_cap = cap = grown_cap;
    }
    ck__remote_t *r = calloc(1, sizeof *r);
    if (r == NULL) return NULL;
    r->conn = conn;
    r->handle = handle;
    ck__conn_ref(conn);
    import_put(conn->imports, cap, r);
    conn->n_imports++;
    return r;
}

/* Takes remote out of the imports table (guarded), if there: linear probing's deletion,
 * moving back the entries after it that would no longer be found. */
static void unimport_locked(ck__conn_t *conn, ck__remote_t *remote) {
    size_t cap = conn->imports_cap;
    if (cap == 0) return;
    size_t i = import_slot(remote->handle, cap);
    while (conn->imports[i] != remote) {
        if (conn->imports[i] == NULL) return;
        i = (i + 1) & (cap - 1);
    }
    conn->imports[i] = NULL;
    conn->n_imports--;
    for (size_t j = (i + 1) & (cap - 1); conn->imports[j] != NULL; j = (j + 1) & (cap - 1)) {
        size_t home = import_slot(conn->imports[j]->handle, cap);
        /* j's entry may move to the hole at i unless its home lies in (i, j] */
        int stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) {
            conn->imports[i] = conn->imports[j];
            conn->imports[j] = NULL;
            i = j;
        }
    }
}

/* Requests this small are copied into a recycled parcel under the lock. */
#define CK__REFILL_LOCKED 256

/* A parcel for a received frame's data, fds and objects (guarded), in *out: the empty
 * parcel there (a spare job's, or NULL) is refilled or replaced. On failure (-1: a
 * protocol error, why set; -2: no memory) nothing is left held, fds included, and *out
 * is left as it came (-1) or NULL (-2). */
static int parcel_locked(ck__conn_t *conn, const ck__frame_t *f, int *fds, OHIPCParcel **out,
                         const char **why) {
    ck__pobj_t objs[CK__MAX_PARCEL_OBJECTS];
    size_t n = 0;
    int rc = 0;
    for (; n < f->n_objects; n++) {
        const unsigned char *ref = f->objects + n * CK__OBJ_SIZE;
        uint32_t handle = ck__get_u32(ref + 1);
        if (ref[0] == CK__OBJ_RECEIVER_STUB) {
            export_t *e = find_export(conn, handle);
            if (e == NULL) {
                *why = "protocol error from the peer: it sent back an object not exported here";
                rc = -1;
                break;
            }
            objs[n].kind = CK__POBJ_STUB;
            objs[n].ptr = e->stub;
            ck__stub_ref(e->stub);
        } else {
            ck__remote_t *r = import_locked(conn, handle, why);
            if (r == NULL) {
                rc = conn->n_imports >= CK__MAX_IMPORTS ? -1 : -2;
                break;
            }
            r->refs++;
            if (handle != 0) r->wire_refs++;
            objs[n].kind = CK__POBJ_REMOTE;
            objs[n].ptr = r;
        }
    }
    if (rc != 0) {
        /* Unreferencing needs the lock for remotes: done by the caller's caller, so keep
         * it simple and exact here by dropping the counts directly. */
        for (size_t i = 0; i < n; i++) {
            if (objs[i].kind == CK__POBJ_STUB) {
                ck__stub_unref(objs[i].ptr);
            } else {
                ck__remote_t *r = objs[i].ptr;
                r->refs--;
                if (r->handle != 0) r->wire_refs--;
            }
        }
        close_all(fds, f->n_fds);
        return rc;
    }
    if (*out != NULL && n == 0 && f->data_len <= CK__REFILL_LOCKED) {
        /* a recycled parcel, refilled with a small request: no need to let the lock go */
        if (ck__parcel_refill(*out, f->data, f->data_len, fds, f->n_fds) == 0) return 0;
        OH_IPCParcel_Destroy(*out); /* empty: no locks taken */
        *out = NULL;
        return -2;
    }
    pthread_mutex_unlock(&conn->lock); /* from_wire may drop references on failure */
    if (*out != NULL && n == 0) { /* a recycled parcel, refilled */
        if (ck__parcel_refill(*out, f->data, f->data_len, fds, f->n_fds) < 0) {
            OH_IPCParcel_Destroy(*out);
            *out = NULL;
        }
    } else {
        OH_IPCParcel_Destroy(*out); /* (an empty one, or NULL) */
        *out = ck__parcel_from_wire(f->data, f->data_len, fds, f->n_fds, objs, n);
    }
    pthread_mutex_lock(&conn->lock);
    return *out == NULL ? -2 : 0;
}

/* ------------------------------------------------------------------ death */
typedef struct {
    ck__deathlink_t *links;
} deaths_t;

static void *fire_deaths(void *arg) {
    deaths_t *d = arg;
    ck__deathlinks_fire(d->links);
    free(d);
    return NULL;
}

void ck__conn_close(ck__conn_t *conn, const char *reason) {
    pthread_mutex_lock(&conn->lock);
    if (conn->dead) {
        pthread_mutex_unlock(&conn->lock);
        return;
    }
    __atomic_store_n(&conn->dead, 1, __ATOMIC_RELEASE);
    snprintf(conn->reason, sizeof conn->reason, "%s", reason);
    ck__deathlink_t *links = NULL;
    for (size_t i = 0; i < conn->imports_cap; i++) {
        if (conn->imports[i] == NULL) continue;
        ck__deathlink_t *l = conn->imports[i]->recipients;
        conn->imports[i]->recipients = NULL;
        while (l != NULL) { /* splice each remote's list onto links */
            ck__deathlink_t *next = l->next;
            l->next = links;
            links = l;
            l = next;
        }
    }
    /* Exports end here: the stubs' connection references go after the unlock. */
    OHIPCRemoteStub **stubs = NULL;
    size_t n_stubs = 0;
    for (export_t *e = conn->exports; e != NULL; e = e->next) {
        if (!e->gone) n_stubs++;
    }
    stubs = calloc(n_stubs ? n_stubs : 1, sizeof *stubs);
    n_stubs = 0;
    for (export_t *e = conn->exports; e != NULL; e = e->next) {
        if (e->gone) continue;
        e->gone = 1;
        if (stubs != NULL) stubs[n_stubs++] = e->stub;
    }
    pthread_cond_broadcast(&conn->changed);
    pthread_cond_broadcast(&conn->follow);
    for (waiter_t *w = conn->waiters; w != NULL; w = w->next) pthread_cond_signal(w->wake);
    pthread_mutex_unlock(&conn->lock);
    shutdown(conn->call_fd, SHUT_RDWR); /* wakes every reader */
    shutdown(conn->serve_fd, SHUT_RDWR);
    for (size_t i = 0; i < n_stubs; i++) ck__stub_unref(stubs[i]);
    free(stubs);
    if (links != NULL) {
        deaths_t *d = malloc(sizeof *d);
        if (d != NULL) d->links = links;
        if (d == NULL || ck__thread_start(fire_deaths, d) < 0) {
            free(d);
            ck__deathlinks_fire(links); /* no thread to spare: here, still outside the lock */
        }
    }
}

/* ------------------------------------------------------------------ releases */
void ck__conn_forget_remote_locked(ck__conn_t *conn, ck__remote_t *remote) {
    unimport_locked(conn, remote);
    unsigned char frame[CK__HEADER_SIZE + CK__RELEASE_BODY];
    int send = !conn->dead && remote->handle != 0 && remote->wire_refs > 0;
    if (send)
        ck__frame_put_release(frame, remote->handle, remote->wire_refs,
                              __atomic_load_n(&conn->replies_sent, __ATOMIC_ACQUIRE));
    pthread_mutex_unlock(&conn->lock);
    if (send && call_send(conn, frame, sizeof frame, NULL, 0, 0) < 0)
        ck__conn_close(conn, "sending a release failed: the peer is gone");
}

/* The deferred heap's sift-up from k (guarded). */
static void deferred_up(release_t *h, size_t k) {
    release_t r = h[k];
    while (k > 0 && h[(k - 1) / 2].after > r.after) {
        h[k] = h[(k - 1) / 2];
        k = (k - 1) / 2;
    }
    h[k] = r;
}

/* Takes the deferred heap's first release (guarded; the heap is not empty). */
static release_t deferred_pop(ck__conn_t *conn) {
    release_t *h = conn->deferred, top = h[0], last = h[--conn->n_deferred];
    size_t n = conn->n_deferred, k = 0;
    for (;;) {
        size_t c = 2 * k + 1;
        if (c >= n) break;
        if (c + 1 < n && h[c + 1].after < h[c].after) c++;
        if (h[c].after >= last.after) break;
        h[k] = h[c];
        k = c;
    }
    if (n) h[k] = last;
    return top;
}

/* Applies (or defers) a RELEASE (guarded); stubs whose last export went are added to
 * drop. -1 with why set for a protocol error. A release that must wait is checked now:
 * its handle exported, the counts waiting for it within what the peer holds; it waits in
 * a min-heap on after (O(log n)), at most CK__MAX_DEFERRED of them. */
static int apply_release_locked(ck__conn_t *conn, uint32_t handle, uint32_t count,
                                uint64_t after, OHIPCRemoteStub **drop, size_t *n_drop,
                                const char **why) {
    export_t *e = find_export(conn, handle);
    if (after > conn->replies_received) {
        if (after >= conn->next_seq) {
            *why = "protocol error from the peer: release refers to replies to requests never sent";
            return -1;
        }
        if (e == NULL) {
            *why = "protocol error from the peer: it released a handle not exported here";
            return -1;
        }
        if (handle == 0) return 0;
        if (count > e->count - e->pending) {
            *why = "protocol error from the peer: it released a handle more times than it got it";
            return -1;
        }
        if (conn->n_deferred >= CK__MAX_DEFERRED) {
            *why = "protocol error from the peer: more than 16384 releases waiting for replies";
            return -1;
        }
        if (conn->n_deferred == conn->deferred_cap) {
            size_t cap = conn->deferred_cap ? conn->deferred_cap * 2 : 16;
            release_t *grown = realloc(conn->deferred, cap * sizeof *grown);
            if (grown == NULL) {
                *why = "no memory for a release waiting for replies";
                return -1;
            }
            conn->deferred = grown;
            conn->deferred_cap = cap;
        }
        conn->deferred[conn->n_deferred] = (release_t){handle, count, after};
        deferred_up(conn->deferred, conn->n_deferred++);
        e->pending += count;
        return 0;
    }
    if (e == NULL) {
        *why = "protocol error from the peer: it released a handle not exported here";
        return -1;
    }
    if (handle == 0) return 0;
    if (count > e->count - e->pending) { /* what waits must stay releasable */
        *why = "protocol error from the peer: it released a handle more times than it got it";
        return -1;
    }
    e->count -= count;
    if (e->count == 0) {
        e->gone = 1;
        drop[(*n_drop)++] = e->stub;
    }
    return 0;
}

/* Deferred releases whose replies have all come (guarded): O(log n) each. */
static int apply_deferred_locked(ck__conn_t *conn, OHIPCRemoteStub **drop, size_t *n_drop,
                                 size_t max_drop, const char **why) {
    while (conn->n_deferred && conn->deferred[0].after <= conn->replies_received &&
           *n_drop < max_drop) {
        release_t r = deferred_pop(conn);
        export_t *e = find_export(conn, r.handle);
        if (e != NULL) e->pending -= r.count; /* checked when it was deferred */
        if (apply_release_locked(conn, r.handle, r.count, r.after, drop, n_drop, why) < 0)
            return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ the outbox */
/* Sends the outbox, with frame (may be NULL) after it in the same record if both fit, else
 * in a record of its own; the frame's fds are the caller's (not closed), the outbox's are
 * its dups (closed once sent). 0, or -1 (the peer is gone). Called with send_lock. */
static int flush_locked(ck__conn_t *conn, const unsigned char *frame, size_t len,
                        const int *fds, size_t n_fds) {
    int rc = 0;
    int together = frame != NULL && conn->out_len + len <= CK__MAX_RECORD_BYTES &&
                   conn->out_nfds + n_fds <= CK__MAX_RECORD_FDS &&
                   conn->out_len + len <= conn->out_cap;
    if (conn->out_len) {
        size_t total = conn->out_len, nf = conn->out_nfds;
        int all[CK__MAX_RECORD_FDS];
        if (nf) memcpy(all, conn->out_fds, nf * sizeof(int));
        if (together) {
            memcpy(conn->out + total, frame, len);
            if (n_fds) memcpy(all + nf, fds, n_fds * sizeof(int));
            total += len;
            nf += n_fds;
        }
        rc = send_record(conn->call_fd, conn->out, total, all, nf);
        close_all(conn->out_fds, conn->out_nfds);
        conn->out_nfds = 0;
        __atomic_store_n(&conn->out_len, 0, __ATOMIC_RELEASE); /* after the send */
        if (together || rc < 0) return rc;
    }
    return frame == NULL ? 0 : send_record(conn->call_fd, frame, len, fds, n_fds);
}

static void flush_job(void *arg) {
    ck__conn_t *conn = arg;
    pthread_mutex_lock(&conn->send_lock);
    conn->flush_pending = 0;
    int rc = flush_locked(conn, NULL, 0, NULL, 0);
    pthread_mutex_unlock(&conn->send_lock);
    if (rc < 0) ck__conn_close(conn, "sending failed: the peer is gone");
    ck__conn_unref(conn);
}

/* Sends one frame on the call socket after what waits in the outbox. A one-way frame
 * (defer) waits there itself, with dups of its fds, for a flush job (started if none is
 * pending), so bursts of one-way requests go out as few records. 0, or -1. */
static int call_send(ck__conn_t *conn, const unsigned char *frame, size_t len, const int *fds,
                     size_t n_fds, int defer) {
    /* An empty outbox: whatever this thread queued before has been sent, so a frame that
     * does not wait there goes out at once, without the lock. */
    if (!defer && __atomic_load_n(&conn->out_len, __ATOMIC_ACQUIRE) == 0)
        return send_record(conn->call_fd, frame, len, fds, n_fds);
    pthread_mutex_lock(&conn->send_lock);
    int rc = 0, schedule = 0;
    if (!defer) {
        rc = flush_locked(conn, frame, len, fds, n_fds);
    } else {
        if (conn->out_len + len > CK__MAX_RECORD_BYTES ||
            conn->out_nfds + n_fds > CK__MAX_RECORD_FDS)
            rc = flush_locked(conn, NULL, 0, NULL, 0);
        size_t need = conn->out_len + len;
        if (rc == 0 && need > conn->out_cap) {
            size_t cap = conn->out_cap ? conn->out_cap : 4096;
            while (cap < need) cap *= 2;
            if (cap > CK__MAX_RECORD_BYTES) cap = CK__MAX_RECORD_BYTES;
            unsigned char *grown = realloc(conn->out, cap);
            if (grown == NULL) rc = -2;
            else conn->out = grown, conn->out_cap = cap;
        }
        size_t dups = 0;
        while (rc == 0 && dups < n_fds) {
            int copy = fcntl(fds[dups], F_DUPFD_CLOEXEC, 0);
            if (copy < 0) {
                rc = -2;
                break;
            }
            conn->out_fds[conn->out_nfds + dups++] = copy;
        }
        if (rc == 0) {
            memcpy(conn->out + conn->out_len, frame, len);
            __atomic_store_n(&conn->out_len, conn->out_len + len, __ATOMIC_RELEASE);
            conn->out_nfds += n_fds;
            schedule = !conn->flush_pending;
            conn->flush_pending = 1;
        } else {
            close_all(conn->out_fds + conn->out_nfds, dups);
        }
    }
    pthread_mutex_unlock(&conn->send_lock);
    if (schedule) {
        ck__conn_ref(conn);
        if (ck__pool_submit(flush_job, conn) < 0) flush_job(conn); /* send it now */
    }
    return rc;
}

/* ------------------------------------------------------------------ sending */
/* Builds and sends one transaction or reply frame for parcel p with its fds. */
static int send_parcel(ck__conn_t *conn, int fd, int is_reply, uint64_t seq, uint32_t handle,
                       uint32_t code, int32_t status, int oneway, const OHIPCParcel *p,
                       int count_reply, waiter_t *w) {
    size_t head = is_reply ? CK__REPLY_FRAME_SIZE : CK__TXN_FRAME_SIZE;
    size_t len = head + p->len + CK__OBJ_SIZE * p->n_objs;
    unsigned char small[1024]; /* most frames: no allocation per call */
    unsigned char *buf = len <= sizeof small ? small : ck__mem_alloc(len);
    if (buf == NULL) return OH_IPC_INNER_ERROR;
    /* Proxies of other connections go as forwarding stubs: found before this link's lock
     * (they take their own connections' locks). */
    OHIPCRemoteStub *forwarders[CK__MAX_PARCEL_OBJECTS];
    int forwarding = 0, rc = OH_IPC_SUCCESS;
    for (size_t i = 0; i < p->n_objs; i++) {
        const ck__pobj_t *o = &p->objs[i];
        forwarders[i] = NULL;
        if (o->kind != CK__POBJ_REMOTE || ((ck__remote_t *)o->ptr)->conn == conn) continue;
        forwarding = 1;
        if ((forwarders[i] = ck__forwarder_for(o->ptr)) == NULL) rc = OH_IPC_INNER_ERROR;
    }
    if (p->n_objs == 0 && w == NULL) {
        /* A reply or one-way request without objects touches nothing the lock guards: it
         * is counted atomically (a RELEASE made meanwhile may or may not count it; either
         * is right, as it names no object). A link that dies meanwhile fails the send. */
        if (__atomic_load_n(&conn->dead, __ATOMIC_ACQUIRE)) rc = OH_IPC_DEAD_REMOTE_OBJECT;
        else if (count_reply) __atomic_add_fetch(&conn->replies_sent, 1, __ATOMIC_RELEASE);
    } else {
        pthread_mutex_lock(&conn->lock);
        if (conn->dead) rc = OH_IPC_DEAD_REMOTE_OBJECT;
        if (rc == OH_IPC_SUCCESS)
            rc = encode_objects_locked(conn, p, forwarding ? forwarders : NULL,
                                       buf + head + p->len);
        if (rc == OH_IPC_SUCCESS && count_reply) /* with the objects it names, under the lock */
            __atomic_add_fetch(&conn->replies_sent, 1, __ATOMIC_RELEASE);
        if (rc == OH_IPC_SUCCESS && w != NULL) { /* a sync call: its waiter, under the lock */
            seq = w->seq = conn->next_seq++;
            w->next = conn->waiters;
            conn->waiters = w;
            if (!conn->reading) conn->reading = w->reading = 1; /* it reads its reply itself */
        }
        pthread_mutex_unlock(&conn->lock);
    }
    for (size_t i = 0; forwarding && i < p->n_objs; i++) /* the exports hold their own */
        if (forwarders[i] != NULL) ck__stub_unref(forwarders[i]);
    if (rc != OH_IPC_SUCCESS) {
        if (buf != small) ck__mem_free(buf);
        return rc;
    }
    if (is_reply)
        ck__frame_put_reply_head(buf, 0, seq, status, (uint32_t)p->len, (uint16_t)p->n_objs,
                                 (uint16_t)p->n_fds);
    else
        ck__frame_put_txn_head(buf, seq, handle, code, oneway, (uint32_t)p->len,
                               (uint16_t)p->n_objs, (uint16_t)p->n_fds);
    if (p->len) ck__copy(buf + head, p->data, p->len); /* an empty parcel may have no data */
    rc = fd == conn->call_fd ? call_send(conn, buf, len, p->fds, p->n_fds, oneway)
                             : send_record(fd, buf, len, p->fds, p->n_fds);
    if (buf != small) ck__mem_free(buf);
    if (rc == -2) return OH_IPC_INNER_ERROR; /* no memory or fds to queue it: not sent */
    if (rc < 0) {
        ck__conn_close(conn, "sending failed: the peer is gone");
        return OH_IPC_DEAD_REMOTE_OBJECT;
    }
    return OH_IPC_SUCCESS;
}

static void send_error_reply(ck__conn_t *conn, uint64_t seq, int32_t status, const char *detail) {
    size_t n = strlen(detail);
    unsigned char buf[CK__REPLY_FRAME_SIZE + 256];
    if (n > 256) n = 256;
    ck__frame_put_reply_head(buf, CK__FLAG_ERROR, seq, status, (uint32_t)n, 0, 0);
    memcpy(buf + CK__REPLY_FRAME_SIZE, detail, n);
    __atomic_add_fetch(&conn->replies_sent, 1, __ATOMIC_RELEASE);
    if (send_record(conn->serve_fd, buf, CK__REPLY_FRAME_SIZE + n, NULL, 0) < 0)
        ck__conn_close(conn, "sending a reply failed: the peer is gone");
}

/* ------------------------------------------------------------------ serving requests */
/* A stub's status as IPCKit passes it on, and as a caller takes a reply's (a peer that
 * skips the rule cannot hand other values on): as OpenHarmony's C stub, success, IPCKit's
 * own codes (OH_IPC_ERROR_CODE_BASE up to OH_IPC_INNER_ERROR) and the user range pass, and
 * so does childkit's CK__IPC_TIMEOUT (a forwarded call that timed out); anything else is
 * clamped. The same rule as ipc/_errors.py is_transportable_status. */
static int32_t clamp_status(int status) {
    if (status == 0 || (status >= OH_IPC_USER_ERROR_CODE_MIN && status <= OH_IPC_USER_ERROR_CODE_MAX) ||
        (status >= OH_IPC_ERROR_CODE_BASE && status <= OH_IPC_INNER_ERROR) || status == CK__IPC_TIMEOUT)
        return status;
    return OH_IPC_INVALID_USER_ERROR_CODE;
}

static void run_job(job_t *job) {
    ck__conn_t *conn = job->conn;
    OHIPCRemoteStub *stub = job->export->stub;
    OHIPCParcel *reply = OH_IPCParcel_Create();
    ck__identity_t *id = ck__identity(), saved = *id;
    int32_t status;
    ck__request_begin(); /* until its reply is sent (childkit_ipc_drain) */
    id->handling = 1;
    id->oneway = job->oneway;
    id->local = 0;
    id->pid = job->pid;
    id->uid = job->uid;
    if (reply == NULL) {
        status = OH_IPC_INNER_ERROR;
    } else if (job->code == CK__INTERFACE_TRANSACTION) {
        status = OH_IPCParcel_WriteString(reply, stub->descriptor);
    } else if (job->code == CK__PING_TRANSACTION) {
        status = 0;
    } else if (job->code < 0x01 || job->code > 0x00FFFFFF) {
        status = OH_IPC_CODE_OUT_OF_RANGE;
    } else {
        status = stub->on_request(job->code, job->data, reply, stub->user_data);
        if (!ck__is_forwarder(stub)) status = clamp_status(status); /* a forwarder passes
                                                                      * its target's on */
    }
    *id = saved;
    if (!job->oneway) {
        if (status == 0) {
            int rc = send_parcel(conn, conn->serve_fd, 1, job->seq, 0, 0, 0, 0, reply, 1, NULL);
            if (rc != OH_IPC_SUCCESS && rc != OH_IPC_DEAD_REMOTE_OBJECT) {
                char detail[96];
                snprintf(detail, sizeof detail, "the reply could not be sent (%d)", rc);
                send_error_reply(conn, job->seq, rc, detail);
            }
        } else {
            char detail[96];
            snprintf(detail, sizeof detail, "the stub '%.40s' answered %d", stub->descriptor,
                     (int)status);
            send_error_reply(conn, job->seq, status, detail);
        }
    }
    OH_IPCParcel_Destroy(reply);
    ck__request_end();
}

static void finish_job(job_t *job) {
    ck__conn_t *conn = job->conn;
    ck__stub_unref(job->export->stub);
    if (job->on_stack) return;
    free(job);
    ck__conn_unref(conn);
}

static void sync_job(void *arg) {
    job_t *job = arg;
    run_job(job);
    OH_IPCParcel_Destroy(job->data);
    finish_job(job);
}

/* Run jobs (with their parcels) a connection keeps for its next requests: all of them
 * while a queue drains (a stream of one-way requests reuses the jobs of the requests
 * before it: never more than were queued at once); when a queue empties, as many as
 * twice that drain ran, or this many (so a stream keeps its jobs from one burst to the
 * next, and a link whose traffic calms down gives them back). */
#define CK__SPARE_JOBS_IDLE 64
/* How many run jobs a drain hands back at a time (one lock round trip each). */
#define CK__DRAIN_RETURN 256

/* A job for a request (guarded): a spare one (its parcel, if it has one, empty and ready
 * to be refilled), else a new one without a parcel. NULL without memory. */
static job_t *take_job_locked(ck__conn_t *conn) {
    job_t *job = conn->spare_jobs;
    if (job == NULL) {
        if ((job = malloc(sizeof *job)) != NULL) job->data = NULL;
        return job;
    }
    conn->spare_jobs = job->next;
    conn->n_spare_jobs--;
    return job;
}

/* Keeps the run jobs of list as spares (guarded). */
static void keep_jobs_locked(ck__conn_t *conn, job_t *list) {
    while (list != NULL) {
        job_t *job = list;
        list = job->next;
        job->next = conn->spare_jobs;
        conn->spare_jobs = job;
        conn->n_spare_jobs++;
    }
}

/* The spares past keep (guarded), for the caller to free outside the lock. */
static job_t *trim_jobs_locked(ck__conn_t *conn, size_t keep) {
    job_t *extra = NULL;
    while (conn->n_spare_jobs > keep) {
        job_t *job = conn->spare_jobs;
        conn->spare_jobs = job->next;
        conn->n_spare_jobs--;
        job->next = extra;
        extra = job;
    }
    return extra;
}

/* Runs an object's queue in order until it is empty: all the requests queued by the time
 * it looks, one after another, then the ones queued meanwhile (the object stays busy, so
 * new ones queue behind them). Each run job, its parcel emptied, becomes a spare. */
static void drain_job(void *arg) {
    job_t *first = arg; /* a placeholder naming the export; holds the references */
    ck__conn_t *conn = first->conn;
    export_t *e = first->export;
    job_t *ran = NULL;
    size_t n_ran = 0, total = 0;
    for (;;) {
        pthread_mutex_lock(&conn->lock);
        keep_jobs_locked(conn, ran);
        job_t *batch = e->qhead, *extra = NULL;
        e->qhead = e->qtail = NULL;
        if (batch == NULL) {
            e->busy = 0;
            extra = trim_jobs_locked(conn, total > CK__SPARE_JOBS_IDLE / 2
                                               ? 2 * total : CK__SPARE_JOBS_IDLE);
        }
        pthread_mutex_unlock(&conn->lock);
        free_jobs(extra);
        if (batch == NULL) break;
        ran = NULL;
        n_ran = 0;
        while (batch != NULL) {
            job_t *job = batch;
            batch = job->next;
            run_job(job);
            ck__stub_unref(job->export->stub);
            ck__conn_unref(conn); /* not the last: the drain holds one */
            if (job->data != NULL && !ck__parcel_recycle(job->data)) {
                OH_IPCParcel_Destroy(job->data); /* a large one: not kept */
                job->data = NULL;
            }
            job->next = ran;
            ran = job;
            total++;
            if (++n_ran == CK__DRAIN_RETURN && batch != NULL) { /* the reader may want them */
                pthread_mutex_lock(&conn->lock);
                keep_jobs_locked(conn, ran);
                pthread_mutex_unlock(&conn->lock);
                ran = NULL;
                n_ran = 0;
            }
        }
    }
    finish_job(first);
}

/* ------------------------------------------------------------------ the serve reader */
typedef struct {
    void (*fn)(void *);
    job_t *job;
} todo_t;

/* Queues a request (guarded): a sync request to an idle object goes straight to a work
 * thread; a one-way one, or any request to an object with one-way requests pending, joins
 * the object's queue, which one drain job runs in order. */
static int queue_job_locked(ck__conn_t *conn, job_t *job, todo_t *todo, size_t *n_todo) {
    export_t *e = job->export;
    if (!job->oneway && !e->busy) {
        todo[*n_todo].fn = sync_job;
        todo[(*n_todo)++].job = job;
        return 0;
    }
    if (e->qtail != NULL) e->qtail->next = job;
    else e->qhead = job;
    e->qtail = job;
    if (e->busy) return 0;
    job_t *drain = calloc(1, sizeof *drain); /* the drain's own references */
    if (drain == NULL) return -1;
    e->busy = 1;
    drain->conn = conn;
    drain->export = e;
    ck__conn_ref(conn);
    ck__stub_ref(e->stub);
    todo[*n_todo].fn = drain_job;
    todo[(*n_todo)++].job = drain;
    return 0;
}

static void want_watcher_locked(ck__conn_t *conn);

/* Handles one record from the serve socket (its fds are handed on or closed); -1 with why
 * set ends the connection. *inline_job is the caller's job slot on entry: a record that is
 * one sync request to an idle object is not queued but built there and comes back in
 * *inline_job (else NULL) for this thread to run, marked as running in the role's state
 * (the role's generation in *inline_gen). */
static int serve_record(ck__conn_t *conn, const unsigned char *buf, size_t size, int *fds,
                        size_t n_fds, const struct ucred *cred, int has_cred, char *err,
                        const char **why, job_t **inline_job, uint64_t *inline_gen) {
    job_t *slot = *inline_job;
    *inline_job = NULL;
    ck__frame_t room[CK__FEW_FRAMES], *frames;
    long n = decode(buf, size, fds, n_fds, room, &frames, err, why);
    if (n < 0) return -1;
    /* A lone request without objects gets its parcel before the lock (it needs none). */
    OHIPCParcel *pre = NULL;
    int pre_made = n == 1 && frames[0].type == CK__F_TRANSACTION && frames[0].n_objects == 0;
    if (pre_made)
        pre = ck__parcel_from_wire(frames[0].data, frames[0].data_len, fds + frames[0].fd_start,
                                   frames[0].n_fds, NULL, 0); /* NULL: fds closed */
    /* Room for what each frame may ask for; on the stack for the usual few frames. */
    enum { FEW = 8 };
    todo_t todo_few[FEW];
    OHIPCRemoteStub *drop_few[FEW + 64];
    uint64_t dead_few[FEW];
    int few = n <= FEW;
    todo_t *todo = few ? todo_few : calloc((size_t)n + 1, sizeof *todo);
    size_t max_drop = (size_t)n + 64;
    OHIPCRemoteStub **drop = few ? drop_few : calloc(max_drop, sizeof *drop);
    size_t n_todo = 0, n_drop = 0;
    uint64_t *dead_seqs = few ? dead_few : calloc((size_t)n + 1, sizeof *dead_seqs);
    size_t n_dead = 0;
    int rc = 0;
    long i = 0;
    if (todo == NULL || drop == NULL || dead_seqs == NULL) {
        *why = "no memory for a record";
        rc = -1;
    }
    pthread_mutex_lock(&conn->lock);
    if (pre != NULL && rc == 0 && slot != NULL && !(frames[0].flags & CK__FLAG_ONEWAY)) {
        /* The usual record, one sync request without objects (pre made), to an idle
         * object: it runs on this thread (what the loop below would decide, in short). */
        export_t *e = find_export(conn, frames[0].handle);
        if (e != NULL && !e->busy) {
            ck__stub_ref(e->stub);
            *slot = (job_t){.conn = conn, .export = e, .seq = frames[0].seq,
                            .code = frames[0].code, .data = pre, .pid = conn->peer_pid,
                            .uid = conn->peer_uid, .on_stack = 1};
            *inline_job = slot;
            *inline_gen = conn->role_gen;
            __atomic_store_n(&conn->inline_token, conn->role_gen, __ATOMIC_RELEASE);
            conn->inline_gen++;
            want_watcher_locked(conn);
            pthread_mutex_unlock(&conn->lock);
            return 0; /* frames is room: one frame */
        }
    }
    for (; rc == 0 && i < n; i++) { /* every failure breaks with i at the failed frame */
        const ck__frame_t *f = &frames[i];
        if (i % 64 == 63) { /* a long record: let the drains hand their jobs back */
            pthread_mutex_unlock(&conn->lock);
            pthread_mutex_lock(&conn->lock);
        }
        if (f->type == CK__F_HELLO) {
            if (conn->greeted) {
                *why = "protocol error from the peer: second hello";
                rc = -1;
                break;
            }
            conn->greeted = 1;
            conn->peer_has_root = f->flags & CK__FLAG_HAS_ROOT;
            /* The kernel's word on who sent it (SO_PASSCRED), never the peer's. */
            conn->peer_pid = has_cred ? (uint64_t)cred->pid : 0;
            conn->peer_uid = has_cred ? (uint64_t)cred->uid : (uint64_t)-1;
            int off = 0; /* credentials were for the greeting: stop paying for them */
            setsockopt(conn->serve_fd, SOL_SOCKET, SO_PASSCRED, &off, sizeof off);
            pthread_cond_broadcast(&conn->changed);
        } else if (f->type == CK__F_RELEASE) {
            if (n_drop >= max_drop - 1) {
                *why = "protocol error from the peer: too many releases in one record";
                rc = -1;
            } else {
                rc = apply_release_locked(conn, f->handle, f->count, f->after_replies, drop,
                                          &n_drop, why);
            }
            if (rc < 0) break; /* i stays the failed frame's: later frames' fds close below */
        } else if (f->type == CK__F_TRANSACTION) {
            export_t *e = find_export(conn, f->handle);
            /* A lone sync request to an idle object will run here: the caller's slot. */
            int here = slot != NULL && n == 1 && e != NULL && !e->busy &&
                       !(f->flags & CK__FLAG_ONEWAY);
            job_t *job = e == NULL ? NULL : here ? slot : take_job_locked(conn); /* set below */
            if (job == NULL) { /* its fds go (with the parcel that holds them, if made) */
                if (pre_made) OH_IPCParcel_Destroy(pre); /* no objects: fine under the lock */
                else close_all(fds + f->fd_start, f->n_fds);
                pre_made = 0;
                if (e == NULL) { /* gone: a sync caller hears so, a one-way one is dropped */
                    if (!(f->flags & CK__FLAG_ONEWAY)) dead_seqs[n_dead++] = f->seq;
                    continue;
                }
                *why = "no memory for a request";
                rc = -1;
                break;
            }
            /* The job's references first: parcel_locked lets go of the lock for a while,
             * and a release in that time must not free the stub under us. */
            job->on_stack = here;
            if (here) job->data = NULL;
            else ck__conn_ref(conn);
            ck__stub_ref(e->stub);
            int prc;
            if (pre_made) { /* no objects: a spare's empty parcel goes, under the lock too */
                OH_IPCParcel_Destroy(job->data);
                job->data = pre;
                prc = pre != NULL ? 0 : -2;
            } else { /* into the spare's parcel, if it has one */
                prc = parcel_locked(conn, f, fds + f->fd_start, &job->data, why);
            }
            pre_made = 0;
            if (prc < 0) {
                if (!here) {
                    job->next = NULL;
                    free_jobs(job);
                    ck__conn_unref(conn); /* not the last: this thread holds one */
                }
                drop[n_drop++] = e->stub;
                if (prc == -2) *why = "no memory for a request";
                rc = -1;
                break;
            }
            job->conn = conn;
            job->export = e;
            job->seq = f->seq;
            job->code = f->code;
            job->oneway = f->flags & CK__FLAG_ONEWAY;
            job->pid = conn->peer_pid;
            job->uid = conn->peer_uid;
            job->next = NULL;
            if (queue_job_locked(conn, job, todo, &n_todo) < 0) {
                *why = "no memory for a request";
                rc = -1;
                break;
            }
        } else {
            close_all(fds + f->fd_start, f->n_fds);
            *why = "protocol error from the peer: a reply arrived on the serve socket";
            rc = -1;
            break;
        }
    }
    if (rc < 0) /* the frames not reached still hold their fds */
        for (long k = i + 1; k < n; k++) close_all(fds + frames[k].fd_start, frames[k].n_fds);
    if (pre_made) OH_IPCParcel_Destroy(pre); /* its frame failed before taking it */
    /* A record that is one sync request to an idle object runs on this thread: no wait
     * for a work thread to wake. */
    if (rc == 0 && n_todo == 1 && slot != NULL && todo[0].job == slot) {
        *inline_job = slot;
        n_todo = 0;
        *inline_gen = conn->role_gen;
        __atomic_store_n(&conn->inline_token, conn->role_gen, __ATOMIC_RELEASE);
        conn->inline_gen++;
        want_watcher_locked(conn);
    }
    pthread_mutex_unlock(&conn->lock);
    for (size_t k = 0; k < n_todo; k++) {
        if (todo[k].job == slot) { /* in the slot, but the link is failing: still answered */
            todo[k].fn(slot);
        } else if (ck__pool_submit(todo[k].fn, todo[k].job) < 0) {
            *why = "no IPC work thread could start";
            todo[k].fn(todo[k].job); /* run here rather than lose it */
        }
    }
    for (size_t k = 0; k < n_dead; k++)
        send_error_reply(conn, dead_seqs[k], OH_IPC_DEAD_REMOTE_OBJECT,
                         "the object was released");
    for (size_t k = 0; k < n_drop; k++) ck__stub_unref(drop[k]);
    if (!few) {
        free(dead_seqs);
        free(todo);
        free(drop);
    }
    if (frames != room) free(frames);
    return rc;
}

/* The usual record in short: a record of size bytes that came without fds and is one
 * plain sync request (ck__frame_is_plain: exactly as strict as the decoder) to an idle
 * object is built into slot, marked as running, for this thread to run (1, its role
 * generation in *inline_gen); what serve_record would decide for it, without the pass of
 * the decoder and the general bookkeeping. Else 0, nothing changed: serve_record reads it. */
static int serve_plain_request(ck__conn_t *conn, const unsigned char *buf, size_t size,
                               job_t *slot, uint64_t *inline_gen) {
    if (!ck__frame_is_plain(buf, size, CK__F_TRANSACTION)) return 0;
    const unsigned char *body = buf + CK__HEADER_SIZE;
    OHIPCParcel *data = ck__parcel_from_wire(buf + CK__TXN_FRAME_SIZE, size - CK__TXN_FRAME_SIZE,
                                             NULL, 0, NULL, 0);
    if (data == NULL) return 0;
    pthread_mutex_lock(&conn->lock);
    export_t *e = find_export(conn, ck__get_u32(body + 8));
    if (e == NULL || e->busy) {
        pthread_mutex_unlock(&conn->lock);
        OH_IPCParcel_Destroy(data); /* no fds or objects: serve_record makes it again */
        return 0;
    }
    ck__stub_ref(e->stub);
    *slot = (job_t){.conn = conn, .export = e, .seq = ck__get_u64(body),
                    .code = ck__get_u32(body + 12), .data = data, .pid = conn->peer_pid,
                    .uid = conn->peer_uid, .on_stack = 1};
    *inline_gen = conn->role_gen;
    __atomic_store_n(&conn->inline_token, conn->role_gen, __ATOMIC_RELEASE);
    conn->inline_gen++;
    want_watcher_locked(conn);
    pthread_mutex_unlock(&conn->lock);
    return 1;
}

static unsigned char *reply_buffer(void);
static void serve_loop(ck__conn_t *conn, int dedicated);

/* How long the holder may run one request before a follower takes over the reading. */
#define CK__WATCH_NS 5000000L

/* The request this thread runs as the role's holder, so a call out of it (or a join of the
 * work threads) can hand the reading on first. */
static CK__TLS struct {
    ck__conn_t *conn;
    uint64_t gen;
} inline_role;

static void *standby_thread(void *arg) {
    ck__conn_t *conn = arg;
    serve_loop(conn, 0);
    ck__conn_unref(conn);
    return NULL;
}

/* One more thread for the serve loop (guarded): a follower that watches the holder. */
static void add_follower_locked(ck__conn_t *conn) {
    conn->serve_threads++;
    ck__conn_ref(conn);
    if (ck__thread_start(standby_thread, conn) < 0) {
        conn->serve_threads--;
        __atomic_sub_fetch(&conn->refs, 1, __ATOMIC_ACQ_REL); /* not the last: ours stays */
    }
}

/* A request runs on the holder (guarded): someone must watch it. */
static void want_watcher_locked(ck__conn_t *conn) {
    if (conn->watching) return;
    if (conn->followers) pthread_cond_signal(&conn->follow);
    else add_follower_locked(conn);
}

/* Gives the role up (guarded): one follower takes it, or a new thread if none waits. */
static void release_role_locked(ck__conn_t *conn) {
    conn->role_taken = 0;
    __atomic_store_n(&conn->inline_token, 0, __ATOMIC_RELEASE);
    if (conn->dead) return;
    if (conn->followers) pthread_cond_signal(&conn->follow);
    else add_follower_locked(conn);
}

void ck__serve_yield(void) {
    ck__conn_t *conn = inline_role.conn;
    if (conn == NULL) return;
    inline_role.conn = NULL;
    pthread_mutex_lock(&conn->lock);
    if (__atomic_load_n(&conn->inline_token, __ATOMIC_ACQUIRE) == inline_role.gen)
        release_role_locked(conn); /* still its own: not taken over meanwhile */
    pthread_mutex_unlock(&conn->lock);
}

/* Waits for the reading role (guarded); 0 once held, -1 if the connection died. A follower
 * that finds no one watching watches: it wakes every CK__WATCH_NS while the holder runs
 * requests, and takes the role over when one request has run a whole period (it may wait
 * for another request of this link, or take long: the socket must be read meanwhile). It
 * watches on while requests ran in its last period, even if none runs at the moment it
 * looks (a stream of requests runs each briefly: were it to sleep between them, the next
 * would have to wake it, a futex call and a thread switch for many requests); after a
 * whole period without one it sleeps until woken. */
static int take_role_locked(ck__conn_t *conn) {
    uint64_t seen = 0;
    int watch = 0;
    while (conn->role_taken && !conn->dead) {
        uint64_t token = __atomic_load_n(&conn->inline_token, __ATOMIC_ACQUIRE);
        if (watch && token != 0 && conn->inline_gen == seen &&
            __atomic_compare_exchange_n(&conn->inline_token, &token, 0, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
            conn->watching = 0; /* the same request for a whole period: take over */
            conn->role_gen++;
            return 0;
        }
        int busy = token != 0 || (watch && conn->inline_gen != seen);
        if (watch) conn->watching = 0;
        watch = !conn->watching && busy;
        conn->followers++;
        if (watch) {
            conn->watching = 1;
            seen = conn->inline_gen;
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_nsec += CK__WATCH_NS;
            if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
            pthread_cond_timedwait(&conn->follow, &conn->lock, &ts);
        } else {
            pthread_cond_wait(&conn->follow, &conn->lock);
        }
        conn->followers--;
    }
    if (watch) conn->watching = 0;
    if (conn->dead) return -1;
    conn->role_taken = 1;
    conn->role_gen++;
    return 0;
}

/* The serve reader. One thread at a time holds the reading role: it reads a record and
 * queues what it asks for, and it runs a record that is one plain sync request to an idle
 * object itself, without waking anyone (no thread hop, as a bare ping-pong) and keeps the
 * role. Meanwhile nobody reads the socket, which is safe unless the request waits for this
 * link: so the holder hands the role to a follower when the request calls out (a call
 * back into this process must be read: ck__serve_yield), and a watching follower takes it
 * over when the request runs a whole CK__WATCH_NS. A thread that lost the role follows
 * (the first thread always; others leave when another follows). */
static void serve_loop(ck__conn_t *conn, int dedicated) {
    unsigned char *buf = reply_buffer();
    int fds[CK__MAX_RECORD_FDS]; /* on the stack: no TLS look-up per record */
    char err[CK__ERR_BYTES];     /* why a record was refused, until the link is closed */
    const char *why = "no memory for the receive buffer";
    int failed = buf == NULL;
    pthread_mutex_lock(&conn->lock);
    if (failed || take_role_locked(conn) < 0) goto out;
    pthread_mutex_unlock(&conn->lock);
    for (;;) {
        size_t n_fds = 0;
        struct ucred cred;
        int has_cred;
        job_t slot, *inline_job = &slot; /* a request this thread runs lives here */
        ssize_t n = __atomic_load_n(&conn->dead, __ATOMIC_ACQUIRE)
                        ? 0 : recv_record(conn->serve_fd, buf, fds, &n_fds, &cred, &has_cred, &why);
        if (n <= 0) {
            if (n == 0 && __atomic_load_n(&conn->dead, __ATOMIC_ACQUIRE)) n_fds = 0;
            close_all(fds, n_fds);
            if (n == 0) why = "the peer closed the connection";
            failed = 1;
            pthread_mutex_lock(&conn->lock);
            break;
        }
        uint64_t gen = 0;
        if (n_fds != 0 || !serve_plain_request(conn, buf, (size_t)n, &slot, &gen)) {
            int rc = serve_record(conn, buf, (size_t)n, fds, n_fds, &cred, has_cred, err,
                                  &why, &inline_job, &gen);
            if (rc < 0) {
                failed = 1;
                pthread_mutex_lock(&conn->lock);
                break;
            }
            if (inline_job == NULL) continue;
        }
        inline_role.conn = conn;
        inline_role.gen = gen;
        sync_job(inline_job);
        inline_role.conn = NULL;
        uint64_t mine = gen; /* still the holder (nobody took over): read on, no lock */
        if (__atomic_compare_exchange_n(&conn->inline_token, &mine, 0, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE))
            continue;
        pthread_mutex_lock(&conn->lock);
        /* The role went to another thread: follow, or leave if another thread follows. */
        if (!dedicated && conn->followers > 0) goto out;
        if (take_role_locked(conn) < 0) goto out;
        pthread_mutex_unlock(&conn->lock);
    }
    /* failed: the holder gives the role up (nobody takes it: the link is closing) */
    conn->role_taken = 0;
    __atomic_store_n(&conn->inline_token, 0, __ATOMIC_RELEASE);
out:
    conn->serve_threads--;
    pthread_mutex_unlock(&conn->lock);
    if (failed) ck__conn_close(conn, why);
}

static void *serve_thread(void *arg) {
    ck__conn_t *conn = arg;
    serve_loop(conn, 1);
    ck__conn_unref(conn);
    return NULL;
}

/* ------------------------------------------------------------------ starting */
ck__conn_t *ck__conn_start(int call_fd, int serve_fd, struct OHIPCRemoteStub *root, char *err,
                           size_t errlen) {
    ck__conn_t *conn = calloc(1, sizeof *conn);
    if (conn == NULL) {
        snprintf(err, errlen, "no memory for a connection");
        return NULL;
    }
    pthread_mutex_init(&conn->lock, NULL);
    pthread_mutex_init(&conn->send_lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&conn->changed, &attr);
    pthread_cond_init(&conn->follow, &attr);
    pthread_condattr_destroy(&attr);
    conn->refs = 2; /* the caller's and the serve reader's */
    conn->serve_threads = 1;
    conn->call_fd = call_fd;
    conn->serve_fd = serve_fd;
    conn->next_seq = 1;
    conn->next_handle = 1;
    conn->owner = ck__pid();
    int on = 1; /* the kernel stamps the peer's HELLO with its pid and uid */
    setsockopt(serve_fd, SOL_SOCKET, SO_PASSCRED, &on, sizeof on);
    /* Room for a full record (256 KiB) in one send, as ipc/_transport.py asks for. */
    int sndbuf = 1 << 20;
    setsockopt(call_fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    setsockopt(serve_fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    if (root != NULL) {
        export_t *e = calloc(1, sizeof *e);
        if (e == NULL) {
            snprintf(err, errlen, "no memory for a connection");
            conn->refs = 1;
            ck__conn_unref(conn);
            return NULL;
        }
        e->stub = root;
        ck__stub_ref(root);
        e->handle = 0;
        conn->exports = e;
    }
    unsigned char hello[CK__HEADER_SIZE + CK__HELLO_BODY];
    ck__frame_put_hello(hello, root != NULL);
    int rc = send_record(call_fd, hello, sizeof hello, NULL, 0);
    if (rc == 0 && ck__thread_start(serve_thread, conn) < 0) rc = -2;
    if (rc < 0) {
        snprintf(err, errlen, rc == -1 ? "sending hello failed: the peer is gone"
                                       : "the connection's reader thread could not start");
        ck__conn_close(conn, err);
        conn->refs = 1;
        ck__conn_unref(conn);
        return NULL;
    }
    return conn;
}

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits on cond (a CLOCK_MONOTONIC one) under conn's lock until deadline (ms; 0: none). */
static void wait_until(ck__conn_t *conn, pthread_cond_t *cond, long long deadline) {
    if (deadline == 0) {
        pthread_cond_wait(cond, &conn->lock);
        return;
    }
    struct timespec ts = {.tv_sec = deadline / 1000, .tv_nsec = (deadline % 1000) * 1000000};
    pthread_cond_timedwait(cond, &conn->lock, &ts);
}

static void wait_changed(ck__conn_t *conn, long long deadline) {
    wait_until(conn, &conn->changed, deadline);
}

/* This thread's condition for its sync calls (glibc's conditions hold no resources). */
static pthread_cond_t *own_condition(void) {
    static CK__TLS struct {
        pthread_cond_t cond;
        int ready;
    } own;
    if (!own.ready) {
        pthread_condattr_t attr;
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&own.cond, &attr);
        pthread_condattr_destroy(&attr);
        own.ready = 1;
    }
    return &own.cond;
}

ck__remote_t *ck__conn_peer_root(ck__conn_t *conn, int timeout_ms) {
    long long deadline = now_ms() + timeout_ms;
    pthread_mutex_lock(&conn->lock);
    while (!conn->greeted && !conn->dead && now_ms() < deadline) wait_changed(conn, deadline);
    ck__remote_t *r = NULL;
    const char *why = NULL; /* past the bound of live remotes: none for the caller either */
    if (conn->greeted && conn->peer_has_root && !conn->dead &&
        (r = import_locked(conn, 0, &why)))
        r->refs++;
    pthread_mutex_unlock(&conn->lock);
    return r;
}

/* ------------------------------------------------------------------ calling */
/* Handles a record from the call socket (guarded): replies go to their waiters. */
static int take_replies_locked(ck__conn_t *conn, const ck__frame_t *frames, long n,
                               int *fds, int pre_made, OHIPCParcel *pre, const waiter_t *self,
                               OHIPCRemoteStub **drop, size_t *n_drop, size_t max_drop,
                               const char **why) {
    int rc = 0;
    long i = 0;
    for (; rc == 0 && i < n; i++) {
        const ck__frame_t *f = &frames[i];
        if (f->type != CK__F_REPLY) {
            close_all(fds + f->fd_start, f->n_fds);
            *why = "protocol error from the peer: a request arrived on the call socket";
            rc = -1;
            break;
        }
        waiter_t *w = conn->waiters, **at = &conn->waiters;
        int bad = f->seq == 0 || f->seq >= conn->next_seq;
        while (!bad && w != NULL && w->seq != f->seq) {
            at = &w->next;
            w = w->next;
        }
        if (bad || w == NULL) { /* bad; or its caller timed out: dropped. Its fds go */
            if (pre_made && pre != self->target) OH_IPCParcel_Destroy(pre); /* no objects */
            else close_all(fds + f->fd_start, f->n_fds);
            pre_made = 0;
            if (!bad) {
                conn->replies_received++;
                continue;
            }
            *why = "protocol error from the peer: a reply to a request never sent";
            rc = -1;
            break;
        }
        conn->replies_received++;
        *at = w->next;
        w->claimed = 1; /* parcel_locked lets the lock go: w must wait for it */
        if (f->flags & CK__FLAG_ERROR) {
            w->status = f->status != 0 ? clamp_status(f->status) : OH_IPC_INNER_ERROR;
        } else if (pre_made) {
            w->reply = pre;
            w->status = pre != NULL ? clamp_status(f->status) : OH_IPC_INNER_ERROR;
            pre_made = 0;
        } else {
            int prc = parcel_locked(conn, f, fds + f->fd_start, &w->reply, why);
            if (prc == -1) {
                rc = -1;
                break;
            }
            w->status = prc == -2 ? OH_IPC_INNER_ERROR : clamp_status(f->status);
        }
        w->done = 1;
        if (w != self) pthread_cond_signal(w->wake); /* its thread alone */
    }
    if (rc < 0)
        for (long k = i + 1; k < n; k++) close_all(fds + frames[k].fd_start, frames[k].n_fds);
    if (pre_made && pre != self->target) OH_IPCParcel_Destroy(pre); /* failed first */
    if (rc == 0) rc = apply_deferred_locked(conn, drop, n_drop, max_drop, why);
    return rc;
}

/* This thread's receive buffer for replies (freed when the thread exits). */
static pthread_key_t buf_key;
static pthread_once_t buf_once = PTHREAD_ONCE_INIT;
static void make_buf_key(void) { pthread_key_create(&buf_key, free); }

static unsigned char *reply_buffer(void) {
    static CK__TLS unsigned char *mine; /* the key's value, read without a call */
    if (mine != NULL) return mine;
    pthread_once(&buf_once, make_buf_key);
    unsigned char *buf = malloc(CK__MAX_RECORD_BYTES);
    if (buf != NULL && pthread_setspecific(buf_key, buf) != 0) {
        free(buf);
        buf = NULL;
    }
    return mine = buf;
}

/* Takes w off the waiting list (guarded). */
static void unlink_waiter_locked(ck__conn_t *conn, waiter_t *w) {
    for (waiter_t **at = &conn->waiters; *at != NULL; at = &(*at)->next) {
        if (*at == w) {
            *at = w->next;
            break;
        }
    }
}

/* What reading a record left to do outside the lock (guarded on entry and exit): the stub
 * references that went, and closing the link if why is set. */
static void settle_locked(ck__conn_t *conn, OHIPCRemoteStub **drop, size_t n_drop,
                          const char *why) {
    if (why == NULL && n_drop == 0) return;
    pthread_mutex_unlock(&conn->lock);
    for (size_t k = 0; k < n_drop; k++) ck__stub_unref(drop[k]);
    if (why != NULL) ck__conn_close(conn, why);
    pthread_mutex_lock(&conn->lock);
}

/* Takes w off the waiting list if it is still there, and if its thread held the reading
 * (or no one does), wakes exactly one other waiting caller to read next (guarded). */
static void forget_waiter_locked(ck__conn_t *conn, waiter_t *w) {
    if (!w->done) unlink_waiter_locked(conn, w);
    if (w->reading) conn->reading = w->reading = 0;
    if (!conn->reading && conn->waiters != NULL) pthread_cond_signal(conn->waiters->wake);
}

/* Waits for w's reply (w is on the waiting list; the lock is not held on entry or exit);
 * a plain reply this thread reads for itself is copied straight into w->target (the
 * caller's reply parcel; then w->reply is w->target).
 * Only replies arrive on the call socket, and the calling threads read it themselves
 * (leader/follower): one at a time reads (a caller that finds no reader takes the role as
 * it sends: w->reading), hands each reply for another thread to exactly that thread (its
 * own condition), and when its own reply came (or its time ran out) wakes exactly one
 * other waiting caller to read next. A lone caller reads its reply with no thread hop. */
static void wait_reply(ck__conn_t *conn, waiter_t *w, long long deadline) {
    int fds[CK__MAX_RECORD_FDS];
    ck__frame_t room[CK__FEW_FRAMES];
    char err[CK__ERR_BYTES];
    if (!w->reading) pthread_mutex_lock(&conn->lock);
    for (;;) {
        if (!w->reading) { /* the lock is held */
            if (w->done) break;
            if (w->claimed) { /* its reply is being filled in by the reader */
                pthread_cond_wait(w->wake, &conn->lock);
                continue;
            }
            if (conn->dead) {
                w->status = OH_IPC_DEAD_REMOTE_OBJECT;
                break;
            }
            if (deadline && deadline <= now_ms()) {
                w->status = CK__IPC_TIMEOUT;
                break;
            }
            if (conn->reading) {
                wait_until(conn, w->wake, deadline);
                continue;
            }
            conn->reading = w->reading = 1;
            pthread_mutex_unlock(&conn->lock);
        }
        /* This thread reads (the lock is not held). */
        const char *why = NULL;
        unsigned char *buf = reply_buffer();
        long long left = deadline ? deadline - now_ms() : -1;
        struct pollfd pfd = {.fd = conn->call_fd, .events = POLLIN};
        /* Without a deadline the read itself waits (one system call fewer). */
        int ready = buf == NULL ? -1 : !deadline ? 1 : left <= 0 ? 0
                    : poll(&pfd, 1, left > INT32_MAX ? INT32_MAX : (int)left);
        ssize_t size = 0;
        size_t n_fds = 0;
        if (ready > 0) {
            struct ucred cred;
            int has_cred;
            size = recv_record(conn->call_fd, buf, fds, &n_fds, &cred, &has_cred, &why);
            if (size == 0) why = "the peer closed the connection";
            if (size <= 0) close_all(fds, n_fds);
        } else if (ready < 0 && (buf == NULL || errno != EINTR)) {
            why = "waiting for a reply failed";
        }
        OHIPCRemoteStub *drop[64];
        size_t n_drop = 0;
        if (size > 0 && n_fds == 0 && ck__frame_is_plain(buf, (size_t)size, CK__F_REPLY) &&
            ck__get_u64(buf + CK__HEADER_SIZE) == w->seq &&
            ck__get_u32(buf + CK__HEADER_SIZE + 8) == 0) {
            /* The usual answer: one plain reply (status 0) to this very call, read by its
             * own thread (no other waits for this seq): straight into the caller's parcel,
             * and the waiter off the list, without a pass of the decoder. */
            int ok = ck__parcel_refill(w->target, buf + CK__REPLY_FRAME_SIZE,
                                       (size_t)size - CK__REPLY_FRAME_SIZE, NULL, 0) == 0;
            pthread_mutex_lock(&conn->lock);
            conn->reading = w->reading = 0;
            conn->replies_received++;
            unlink_waiter_locked(conn, w);
            w->reply = ok ? w->target : NULL;
            w->status = ok ? 0 : OH_IPC_INNER_ERROR;
            w->done = 1;
            if (conn->n_deferred == 0 || apply_deferred_locked(conn, drop, &n_drop, 64, &why) == 0)
                why = NULL;
            settle_locked(conn, drop, n_drop, why);
            break;
        }
        /* Decoded, and a lone plain reply's parcel made, before the lock. */
        ck__frame_t *frames = NULL;
        long n = size > 0 ? decode(buf, (size_t)size, fds, n_fds, room, &frames, err, &why) : 0;
        OHIPCParcel *pre = NULL;
        int pre_made = n == 1 && frames[0].type == CK__F_REPLY &&
                       !(frames[0].flags & CK__FLAG_ERROR) && frames[0].n_objects == 0;
        if (pre_made && frames[0].seq == w->seq && frames[0].status == 0 && n_fds == 0)
            /* its own answer (no other thread waits for this seq): into the caller's parcel */
            pre = ck__parcel_refill(w->target, frames[0].data, frames[0].data_len, NULL, 0) == 0
                      ? w->target : NULL;
        else if (pre_made)
            pre = ck__parcel_from_wire(frames[0].data, frames[0].data_len,
                                       fds + frames[0].fd_start, frames[0].n_fds, NULL, 0);
        pthread_mutex_lock(&conn->lock);
        conn->reading = w->reading = 0;
        if (n > 0 && take_replies_locked(conn, frames, n, fds, pre_made, pre, w, drop, &n_drop,
                                         64, &why) == 0)
            why = NULL;
        if (frames != room) free(frames);
        settle_locked(conn, drop, n_drop, why);
    }
    forget_waiter_locked(conn, w); /* timed out or died: a late reply is dropped */
    pthread_mutex_unlock(&conn->lock);
}

int ck__conn_transact(ck__remote_t *remote, uint32_t code, const struct OHIPCParcel *data,
                      struct OHIPCParcel *reply, int oneway, uint32_t timeout_ms) {
    ck__conn_t *conn = remote->conn;
    waiter_t w = {0};
    long long deadline = timeout_ms ? now_ms() + timeout_ms : 0;
    /* A forked child inherits the memory of its parent's links but not their threads, and
     * the peer talks to the parent: to the child they are dead (as libbinder's
     * verifyNotForked). Its locks may be held by threads it does not have: not touched. */
    if (conn->owner != ck__pid()) return OH_IPC_DEAD_REMOTE_OBJECT;
    if (oneway)
        return send_parcel(conn, conn->call_fd, 0, 0, remote->handle, code, 0, 1, data, 0, NULL);
    ck__serve_yield(); /* the callee may call back into this process */
    w.wake = own_condition();
    int rc = send_parcel(conn, conn->call_fd, 0, 0, remote->handle, code, 0, 0, data, 0, &w);
    if (rc != OH_IPC_SUCCESS) {
        if (w.seq != 0) { /* registered, then not sent: forgotten, and the reading passed on */
            pthread_mutex_lock(&conn->lock);
            forget_waiter_locked(conn, &w);
            pthread_mutex_unlock(&conn->lock);
        }
        return rc;
    }
    w.target = reply;
    wait_reply(conn, &w, deadline);
    if (w.reply != NULL && w.reply != reply) {
        if (w.status == 0) ck__parcel_replace(reply, w.reply);
        else OH_IPCParcel_Destroy(w.reply);
    }
    return w.status;
}

/* ------------------------------------------------------------------ the kit's own entry */
/* childkit's private entry (declared in ck_internal.h; used by the launcher's native
 * children and libchild_process.so): serves root (may be NULL) on the connection of the
 * two sockets, which it takes over (closed on failure too). With peer_root non-NULL it
 * waits up to timeout_ms for the peer's HELLO and stores a proxy to the peer's root there
 * (NULL if the peer has none). The connection lives until the peer closes it or it fails;
 * it holds its own reference meanwhile. Returns OH_IPC_SUCCESS, or an error with why in
 * err. */
__attribute__((visibility("default"))) int childkit_ipc_connect(int call_fd, int serve_fd,
                                                                OHIPCRemoteStub *root,
                                                                int timeout_ms,
                                                                OHIPCRemoteProxy **peer_root,
                                                                char *err, size_t errlen) {
    char scratch[160];
    if (err == NULL || errlen == 0) {
        err = scratch;
        errlen = sizeof scratch;
    }
    err[0] = '\0';
    if (call_fd < 0 || serve_fd < 0 || call_fd == serve_fd) {
        snprintf(err, errlen, "bad socket fds %d and %d", call_fd, serve_fd);
        if (call_fd >= 0) close(call_fd);
        if (serve_fd >= 0 && serve_fd != call_fd) close(serve_fd);
        return OH_IPC_CHECK_PARAM_ERROR;
    }
    ck__conn_t *conn = ck__conn_start(call_fd, serve_fd, root, err, errlen);
    if (conn == NULL) return OH_IPC_INNER_ERROR;
    int rc = OH_IPC_SUCCESS;
    if (peer_root != NULL) {
        *peer_root = NULL;
        ck__remote_t *r = ck__conn_peer_root(conn, timeout_ms);
        if (r != NULL) {
            *peer_root = ck__proxy_box(r);
            if (*peer_root == NULL) rc = OH_IPC_INNER_ERROR;
        } else if (ck__conn_is_dead(conn)) {
            pthread_mutex_lock(&conn->lock);
            snprintf(err, errlen, "%s", conn->reason);
            pthread_mutex_unlock(&conn->lock);
            rc = OH_IPC_DEAD_REMOTE_OBJECT;
        }
    }
    ck__conn_unref(conn); /* the serve reader keeps it while the link lives */
    return rc;
}
