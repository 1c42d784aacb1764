/*
 * childkit's native kit: the one internal header (everything here is ck__ / CK__).
 *
 * Shared by libipc_capi.so and by childkit.ipc._speedups (which builds ck_frame.c too), so
 * the frame code of docs/wire-format.md exists once in C. Keep the constants in step with
 * ipc/_wire.py and ipc/_parcel.py: _wire checks the speedups' copies at import, and
 * tests/native/test_wire_conformance.py runs both decoders over one corpus.
 */
#ifndef CK_INTERNAL_H
#define CK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include "ipc_cremote_object.h"

/* ------------------------------------------------------------------ wire constants */
#define CK__PROTOCOL_VERSION 1
#define CK__F_HELLO 1
#define CK__F_TRANSACTION 2
#define CK__F_REPLY 3
#define CK__F_RELEASE 4
#define CK__FLAG_ONEWAY 0x01   /* on TRANSACTION */
#define CK__FLAG_HAS_ROOT 0x01 /* on HELLO */
#define CK__FLAG_ERROR 0x01    /* on REPLY */
#define CK__OBJ_SENDER_STUB 1
#define CK__OBJ_RECEIVER_STUB 2

#define CK__HEADER_SIZE 8
#define CK__HELLO_BODY 4
#define CK__TXN_FIXED 22   /* <QIIIH */
#define CK__REPLY_FIXED 18 /* <QiIH */
#define CK__RELEASE_BODY 16
#define CK__TXN_FRAME_SIZE (CK__HEADER_SIZE + CK__TXN_FIXED)
#define CK__REPLY_FRAME_SIZE (CK__HEADER_SIZE + CK__REPLY_FIXED)
#define CK__OBJ_SIZE 5 /* <BI */

#define CK__MAX_RECORD_BYTES (320 * 1024)
#define CK__MAX_RECORD_FDS 253
#define CK__MAX_DETAIL_BYTES 4096
/* The most data a parcel holds: 200 KiB in OpenHarmony's layout (what OH_IPCParcel_GetDataSize
 * counts; a Python parcel counts its own bytes against it). */
#define CK__MAX_PARCEL_DATA 204800
/* The most parcel data bytes one frame carries. The wire tags each value, so a full parcel
 * takes more than its OpenHarmony size there: 5 bytes for a 4-byte int32, up to 3 bytes of
 * UTF-8 for a 2-byte UTF-16 unit of an interface token: at most 1.5 times. */
#define CK__MAX_WIRE_DATA (CK__MAX_PARCEL_DATA * 3 / 2)
#define CK__MAX_PARCEL_FDS 64
#define CK__MAX_PARCEL_OBJECTS 256

/* The kit's thread-local variables (a few pointers and a condition, under 200 bytes in
 * all). initial-exec: each use is one load off the thread pointer instead of a call to
 * __tls_get_addr (a dozen per round trip). glibc keeps surplus static TLS for libraries
 * that dlopen brings in with this model, far more than these bytes. */
#define CK__TLS __thread __attribute__((tls_model("initial-exec")))

/* ------------------------------------------------------------------ little-endian */
static inline void ck__put_u16(unsigned char *p, uint16_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}
static inline void ck__put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static inline void ck__put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static inline uint16_t ck__get_u16(const unsigned char *p) {
    return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t ck__get_u32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}
static inline uint64_t ck__get_u64(const unsigned char *p) {
    return (uint64_t)ck__get_u32(p) | ((uint64_t)ck__get_u32(p + 4) << 32);
}

/* Copies n bytes. A parcel's usual values are a few bytes: those are copied inline, in
 * two overlapping words, rather than through a call to memcpy for each. */
static inline void ck__copy(void *dst, const void *src, size_t n) {
    unsigned char *d = dst;
    const unsigned char *s = src;
    if (n > 16) {
        memcpy(d, s, n);
    } else if (n >= 8) {
        uint64_t a, b;
        memcpy(&a, s, 8);
        memcpy(&b, s + n - 8, 8);
        memcpy(d, &a, 8);
        memcpy(d + n - 8, &b, 8);
    } else if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, s, 4);
        memcpy(&b, s + n - 4, 4);
        memcpy(d, &a, 4);
        memcpy(d + n - 4, &b, 4);
    } else {
        for (size_t i = 0; i < n; i++) d[i] = s[i];
    }
}

/* ------------------------------------------------------------------ frames (ck_frame.c) */
/* One decoded frame: views into the record it came from (valid while the record is). */
typedef struct ck__frame_s {
    int type;               /* CK__F_* */
    int flags;
    size_t fd_start;        /* its fds: the record's fds[fd_start .. fd_start + n_fds) */
    size_t n_fds;
    uint64_t seq;           /* TRANSACTION, REPLY */
    uint32_t handle;        /* TRANSACTION, RELEASE */
    uint32_t code;          /* TRANSACTION */
    int32_t status;         /* REPLY */
    uint32_t count;         /* RELEASE */
    uint64_t after_replies; /* RELEASE */
    int version;            /* HELLO */
    const unsigned char *data; /* parcel data, or an ERROR reply's detail (not NUL-ended) */
    size_t data_len;
    const unsigned char *objects; /* n_objects references of CK__OBJ_SIZE bytes */
    size_t n_objects;
} ck__frame_t;

/* Writes the 30-byte head of a transaction frame carrying data_len bytes, n_objects
 * references and n_fds fds (the data and objects follow it). */
void ck__frame_put_txn_head(unsigned char *out, uint64_t seq, uint32_t handle, uint32_t code,
                            int oneway, uint32_t data_len, uint16_t n_objects, uint16_t n_fds);
/* Writes the 26-byte head of a reply frame (flags: 0 or CK__FLAG_ERROR). */
void ck__frame_put_reply_head(unsigned char *out, int flags, uint64_t seq, int32_t status,
                              uint32_t data_len, uint16_t n_objects, uint16_t n_fds);
/* Writes a 12-byte HELLO frame. */
void ck__frame_put_hello(unsigned char *out, int has_root);
/* Writes a 24-byte RELEASE frame. */
void ck__frame_put_release(unsigned char *out, uint32_t handle, uint32_t count,
                           uint64_t after_replies);
/* Writes one object reference (5 bytes). */
void ck__frame_put_object(unsigned char *out, int kind, uint32_t handle);

/* 1 if the size bytes of buf (a record that came without fds) are exactly one plain frame
 * of ftype (CK__F_TRANSACTION sync, or CK__F_REPLY without ERROR): no flags, fds or
 * objects, lengths adding up, data within CK__MAX_WIRE_DATA. Else 0. Reads at most the
 * frame head, and only when size covers it. (Inline: every plain request and reply of
 * both kits passes here.) */
static inline int ck__frame_is_plain(const unsigned char *buf, size_t size, int ftype) {
    size_t frame_size = ftype == CK__F_TRANSACTION ? CK__TXN_FRAME_SIZE : CK__REPLY_FRAME_SIZE;
    if (size < frame_size || size > CK__MAX_RECORD_BYTES || buf[0] != ftype) return 0;
    /* The data length and object count end the fixed part in both frame types. */
    uint32_t data_len = ck__get_u32(buf + frame_size - 6);
    return buf[1] == 0 && ck__get_u16(buf + 2) == 0 && ck__get_u16(buf + frame_size - 2) == 0 &&
           ck__get_u32(buf + 4) == (uint64_t)(size - CK__HEADER_SIZE) &&
           data_len == (uint64_t)(size - frame_size) && data_len <= CK__MAX_WIRE_DATA;
}

/* Splits a record of size bytes that came with n_fds fds into frames, checked as
 * docs/wire-format.md says. On success returns the count and sets *frames to a malloc'ed
 * array the caller frees (views into buf). On a protocol error returns -1 and writes why
 * into err (errlen bytes, NUL-terminated); *frames is NULL. Out of memory: -2. Never
 * touches the fds. */
long ck__record_decode(const unsigned char *buf, size_t size, size_t n_fds,
                       ck__frame_t **frames, char *err, size_t errlen);
/* The same, with room for room_n frames given by the caller (on its stack): *frames is
 * room while the record's frames fit there, else a malloc'ed array (free it only when it
 * is not room). A record of one or a few frames costs no allocation. */
long ck__record_decode_into(const unsigned char *buf, size_t size, size_t n_fds,
                            ck__frame_t *room, size_t room_n, ck__frame_t **frames,
                            char *err, size_t errlen);

/* ------------------------------------------------------------------ memory (ck_mem.c) */
/* A block of n bytes that knows its capacity (free it with ck__mem_free only); large ones
 * come from this thread's cache of freed blocks when one fits. NULL without memory. */
void *ck__mem_alloc(size_t n);
/* Frees a block (NULL: nothing); a large one may wait in this thread's cache. */
void ck__mem_free(void *ptr);
/* The capacity of a block (0 for NULL). */
size_t ck__mem_cap(const void *ptr);
/* Makes *ptr (a block or NULL, of which used bytes count) hold need bytes, growing it
 * geometrically; 0, or -1 without memory (*ptr unchanged). */
int ck__mem_reserve(void **ptr, size_t used, size_t need);

/* ------------------------------------------------------------------ parcels (ck_parcel.c) */
/* Value tags of the parcel data (docs/wire-format.md "Parcel data"). */
enum {
    CK__T_INT8 = 1, CK__T_INT16, CK__T_INT32, CK__T_INT64,
    CK__T_UINT8, CK__T_UINT16, CK__T_UINT32, CK__T_UINT64,
    CK__T_FLOAT, CK__T_DOUBLE, CK__T_BOOL, CK__T_STRING, CK__T_BYTES, CK__T_TOKEN,
    CK__T_FD, CK__T_REMOTE, CK__T_ASHMEM,
};

/* A remote object a parcel refers to (T_REMOTE values index these); holds one reference. */
enum { CK__POBJ_STUB = 1, CK__POBJ_REMOTE = 2 };
typedef struct ck__pobj_s {
    int kind;  /* CK__POBJ_* */
    void *ptr; /* struct OHIPCRemoteStub * or ck__remote_t * */
} ck__pobj_t;

/* The end of one value in a parcel: in the tagged wire data and in OpenHarmony's layout. */
typedef struct ck__mark_s {
    uint32_t wire_end;
    uint32_t oh_end;
} ck__mark_t;

/* OHIPCParcel. Owns data (a ck_mem block of cap bytes), marks, fds (closed on destroy)
 * and keep (the NUL-terminated ck_mem copies handed out by ReadString/ReadBuffer, freed on
 * destroy). Reads go forward from value r_idx; the read position is marks[r_idx - 1] (0
 * when r_idx is 0). */
struct OHIPCParcel {
    unsigned char *data;
    size_t len, cap;
    size_t oh_cap; /* the capacity OpenHarmony's parcel would have now (GetWritableBytes) */
    ck__mark_t *marks;
    size_t n_marks, marks_cap;
    size_t r_idx;
    int *fds;
    size_t n_fds;
    void **keep;
    size_t n_keep, keep_cap;
    ck__pobj_t *objs; /* owned references */
    size_t n_objs;
};

/* A parcel for reading data a peer sent: copies the len bytes of data, takes ownership of
 * the n_fds fds and the n_objs object references (released with the parcel, or here on
 * failure). The values are indexed up to the first malformed one (reads past it fail).
 * NULL without memory. */
struct OHIPCParcel *ck__parcel_from_wire(const unsigned char *data, size_t len, int *fds,
                                         size_t n_fds, ck__pobj_t *objs, size_t n_objs);
/* Replaces p's contents (released; its small buffers kept) with a copy of the len bytes
 * of wire data of a frame without objects, indexed, taking over its n_fds fds: a parcel
 * filled in place (the caller's own reply, a recycled request). 0, or -1 without memory
 * (p left empty, the fds closed). */
int ck__parcel_refill(struct OHIPCParcel *p, const unsigned char *data, size_t len, int *fds,
                      size_t n_fds);
/* Releases p's contents (fds closed, objects dropped: not under a connection's lock) and
 * says whether it is small enough (a few hundred bytes of buffers) to keep for reuse. */
int ck__parcel_recycle(struct OHIPCParcel *p);
/* Moves the contents of src into dst (whose old contents are released); frees src. */
void ck__parcel_replace(struct OHIPCParcel *dst, struct OHIPCParcel *src);

/* ------------------------------------------------------------------ objects (ck_object.c) */
typedef struct ck__conn_s ck__conn_t;
typedef struct ck__deathlink_s ck__deathlink_t;
/* One death recipient added to one remote (holds a recipient reference). */
struct ck__deathlink_s {
    struct OHIPCDeathRecipient *recipient;
    ck__deathlink_t *next;
};

/* OHIPCRemoteStub: a local object. refs: the creator's (OH_IPCRemoteStub_Destroy drops it),
 * one per parcel that holds it, one per connection that exports it. The destroy callback
 * runs when the last goes, on whichever thread drops it. */
struct OHIPCRemoteStub {
    int refs; /* atomic */
    char *descriptor;
    OH_OnRemoteRequestCallback on_request;
    OH_OnRemoteDestroyCallback on_destroy;
    void *user_data;
};
void ck__stub_ref(struct OHIPCRemoteStub *stub);
void ck__stub_unref(struct OHIPCRemoteStub *stub);

/* One object of the peer, shared by every proxy box and parcel that refers to it.
 * refs, wire_refs and recipients are guarded by conn's lock. */
typedef struct ck__remote_s {
    ck__conn_t *conn; /* a reference */
    uint32_t handle;
    int refs;
    uint32_t wire_refs;          /* SENDER_STUB references received: what RELEASE returns */
    ck__deathlink_t *recipients; /* notified once when conn dies */
    struct OHIPCRemoteStub *forwarder; /* its forwarding stub while one lives (not a
                                        * reference; guarded by ck_object.c's lock) */
} ck__remote_t;
void ck__remote_ref(ck__remote_t *remote);
void ck__remote_unref(ck__remote_t *remote);

/* The stub that stands in for remote when a proxy of it is sent to another process (a
 * third one): made once per remote while it lives, descriptor "childkit.forwarder"; each
 * request to it is sent on to remote (sync or one-way, as it came) and the answer becomes
 * the reply. Returns it with a new reference for the caller, or NULL without memory. */
struct OHIPCRemoteStub *ck__forwarder_for(ck__remote_t *remote);
/* 1 if stub is a forwarder (its status codes pass through unchanged). */
int ck__is_forwarder(const struct OHIPCRemoteStub *stub);

/* OHIPCRemoteProxy: a box holding one reference to a remote (OpenHarmony: a new box per
 * read; OH_IPCRemoteProxy_Destroy frees the box). */
struct OHIPCRemoteProxy {
    ck__remote_t *remote;
};
/* A new box for remote (takes over the caller's reference), or NULL (reference dropped). */
struct OHIPCRemoteProxy *ck__proxy_box(ck__remote_t *remote);

void ck__pobj_ref(const ck__pobj_t *obj);
void ck__pobj_unref(const ck__pobj_t *obj);

/* Runs the death recipients of a list (each once), then releases the list. */
void ck__deathlinks_fire(ck__deathlink_t *links);

/* ------------------------------------------------------------------ connections (ck_conn.c) */
/* The request codes childkit reserves (ipc/_stub.py): the descriptor, and a ping. */
#define CK__INTERFACE_TRANSACTION 0x5F4E5446u
#define CK__PING_TRANSACTION 0x5F504E47u
/* The status of a sync call whose timeout passed (ipc/_errors.py CK_IPC_TIMEOUT). */
#define CK__IPC_TIMEOUT 1901900

/* Starts a connection on the two sockets (taken over; closed when the connection is
 * freed), serving root as handle 0 (may be NULL): sends HELLO and starts its reader
 * thread. Returns it with one reference for the caller, or NULL with why in err. */
ck__conn_t *ck__conn_start(int call_fd, int serve_fd, struct OHIPCRemoteStub *root, char *err,
                           size_t errlen);
void ck__conn_ref(ck__conn_t *conn);
void ck__conn_unref(ck__conn_t *conn);
/* Fails every call, runs death recipients once, stops serving; idempotent. */
void ck__conn_close(ck__conn_t *conn, const char *reason);
int ck__conn_is_dead(ck__conn_t *conn);
/* The peer's root object (a new reference) once its HELLO came within timeout_ms; NULL
 * if it has none, died, or did not greet in time. */
ck__remote_t *ck__conn_peer_root(ck__conn_t *conn, int timeout_ms);
/* Sends one request to remote. Sync (oneway 0): waits up to timeout_ms (0: no limit) and
 * replaces reply's contents with the answer; the status is the stub's or an OH_IPC_*. */
int ck__conn_transact(ck__remote_t *remote, uint32_t code, const struct OHIPCParcel *data,
                      struct OHIPCParcel *reply, int oneway, uint32_t timeout_ms);
/* Whether lock-protected remote lists may be touched: the connection's lock. */
void ck__conn_lock(ck__conn_t *conn);
void ck__conn_unlock(ck__conn_t *conn);
/* Forgets remote (its last reference went) and sends the RELEASE it owes, outside locks.
 * Called with the lock held; returns with it released. */
void ck__conn_forget_remote_locked(ck__conn_t *conn, ck__remote_t *remote);

/* Called before this thread blocks on the kit (a sync call, a join of the work threads):
 * if it runs a request as its connection's serve reader, another thread reads meanwhile. */
void ck__serve_yield(void);

/* childkit's private, exported entry: see ck_conn.c. */
int childkit_ipc_connect(int call_fd, int serve_fd, struct OHIPCRemoteStub *root, int timeout_ms,
                         struct OHIPCRemoteProxy **peer_root, char *err, size_t errlen);

/* ------------------------------------------------------------------ threads (ck_thread.c) */
/* Starts fn(arg) on a new detached thread with every signal blocked; 0, or -1. */
int ck__thread_start(void *(*fn)(void *), void *arg);
/* getpid() without a system call (kept current across fork by an at-fork handler). */
pid_t ck__pid(void);

/* ------------------------------------------------------------------ work threads (ck_pool.c) */
/* Runs fn(arg) on an IPC work thread (starting one if none is idle and fewer than the
 * maximum run). 0, or -1 if no thread exists and none could start (fn not called). */
int ck__pool_submit(void (*fn)(void *), void *arg);
int ck__pool_set_max(int n);
/* The work-thread maximum (OH_IPCSkeleton_SetMaxWorkThreadNum; 16 by default). */
int ck__pool_max(void);
void ck__pool_join(void);
void ck__pool_stop(void);

/* UTF-16 units of n bytes of UTF-8, or -1 if they are not valid UTF-8 (ck_parcel.c). */
long ck__utf16_units(const char *s, size_t n);

/* ------------------------------------------------------------------ identity (ck_skeleton.c) */
typedef struct ck__identity_s {
    int handling; /* this thread runs a request */
    int oneway;   /* ... a one-way one */
    int local;
    uint64_t pid, uid;
} ck__identity_t;
/* This thread's calling identity (thread-local). */
ck__identity_t *ck__identity(void);
/* A request starts / has sent its reply (ck_conn.c's run_job): what childkit_ipc_drain
 * waits for. */
void ck__request_begin(void);
void ck__request_end(void);
/* Waits until no request of this process is being answered, at most timeout_ms; 1 if none
 * is, else 0. A native IPC child calls it when NativeChildProcess_MainProc() returns, so a
 * request that made it return is still answered (as OpenHarmony's child answers it). */
int childkit_ipc_drain(int timeout_ms);

#endif /* CK_INTERNAL_H */
