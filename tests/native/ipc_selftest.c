/*
 * C parent and C child over libipc_capi.so (tests/native/test_ipc_c.py builds and runs it):
 * the parent forks a child that serves a root stub on childkit's wire protocol, then
 * checks requests, replies, user errors, fds, objects passed both ways (a parent stub
 * called back by the child), one-way ordering, timeouts, the descriptor, skeleton calls,
 * reference counts (destroy callbacks) and death recipients. Prints "FAIL <line>: <what>"
 * per failed check; the exit status is the number of failures.
 *
 *   ipc_selftest            the whole run
 *   ipc_selftest loop N     N create/send/destroy rounds (the sanitizer test's leak check)
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <IPCKit/ipc_kit.h>

/* childkit's private entry (exported by libipc_capi.so for the launcher). */
int childkit_ipc_connect(int call_fd, int serve_fd, OHIPCRemoteStub *root, int timeout_ms,
                         OHIPCRemoteProxy **peer_root, char *err, size_t errlen);

static int failures;
static char *self_path; /* argv[0]: a child execs it in "serve" mode */
#define CHECK(cond)                                          \
    do {                                                     \
        if (!(cond)) {                                       \
            printf("FAIL %d: %s\n", __LINE__, #cond);        \
            fflush(stdout);                                  \
            failures++;                                      \
        }                                                    \
    } while (0)

enum {
    ECHO = 1,       /* int32 x -> x + 1 */
    CALL_BACK = 2,  /* a proxy: calls ECHO on it with 41, answers what it got */
    WRITE_FD = 3,   /* an fd: writes "hi" to it */
    LOG = 4,        /* one-way: appends an int32 to the log */
    GET_LOG = 5,    /* answers the log's length, then its values */
    USER_ERR = 6,   /* answers 1909001 */
    BAD_ERR = 7,    /* answers 7 (not a user code) */
    STATUS = 20,    /* answers the int32 it reads, as its status */
    RESET_SET = 21, /* resets and restores the calling identity: 1 if all went right */
    SLOW = 8,       /* sleeps 1.5 s */
    IDENTITY = 9,   /* answers calling pid, uid, handling, local */
    KEEP = 10,      /* keeps the proxy it got (the parent's stub stays referenced) */
    DROP = 11,      /* destroys the kept proxy (the parent's stub is released) */
    DIE = 12,       /* exits the child */
    ROUND_TRIP = 13, /* a stub sent in the data comes back in the reply */
    BIG = 14,       /* a buffer of BIG_BYTES comes back (a full-size record each way) */
    GATE_WAIT = 15, /* waits (30 s at most) until a GATE_OPEN request came; 1909108 if not */
    GATE_OPEN = 16, /* waits (30 s at most) until a GATE_WAIT waits, then opens the gate */
    RELAY_LOG = 17, /* a proxy: LOG 0..199 one-way on it, then GET_LOG; answers 1 if all
                     * came in order */
    LOG_ANY = 18,   /* one-way: an int32 x, then a kind: 0 nothing more, 1 an fd (writes
                     * "x" to it), 2 a proxy (destroyed); appends x, or -1 if a read failed */
    CLEAR_LOG = 19, /* empties the log */
    HOLD = 22,      /* waits (30 s at most) until an UNHOLD came; 1909110 if not */
    HELD = 23,      /* answers how many HOLD requests wait */
    UNHOLD = 24,    /* lets every HOLD request go */
    CALL_CODE = 25, /* a proxy and an int32 code: sends it that code (empty data), answers
                     * with its status */
};

#define BIG_BYTES 204800 /* the largest buffer a parcel holds (OpenHarmony layout) */

static void *alloc(int32_t len) { return malloc((size_t)len); }
static void *no_memory(int32_t len) { return NULL; }

/* ------------------------------------------------------------------ the child */
static int log_values[1000];
static int log_len;
static OHIPCRemoteProxy *kept;

static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static int gate_open, gate_waiting;

static int held, unheld; /* under gate_mu */

static int hold(void) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 30;
    pthread_mutex_lock(&gate_mu);
    held++;
    int ok = 1;
    while (!unheld && ok) ok = pthread_cond_timedwait(&gate_cv, &gate_mu, &until) == 0;
    held--;
    pthread_mutex_unlock(&gate_mu);
    return ok ? 0 : 1909110;
}

/* Two requests that wait for each other, whichever comes first: the kit must read the
 * link while the first runs (whichever thread read it). */
static int gate(int opener) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 30;
    pthread_mutex_lock(&gate_mu);
    int ok = 1;
    if (opener) {
        while (!gate_waiting && ok) ok = pthread_cond_timedwait(&gate_cv, &gate_mu, &until) == 0;
        gate_open = ok;
    } else {
        gate_waiting = 1;
        pthread_cond_broadcast(&gate_cv);
        while (!gate_open && ok) ok = pthread_cond_timedwait(&gate_cv, &gate_mu, &until) == 0;
        gate_open = gate_waiting = 0;
    }
    pthread_cond_broadcast(&gate_cv);
    pthread_mutex_unlock(&gate_mu);
    return ok ? 0 : 1909108;
}

static int child_request(uint32_t code, const OHIPCParcel *data, OHIPCParcel *reply, void *ud) {
    int32_t x;
    switch (code) {
    case RELAY_LOG: {
        OHIPCRemoteProxy *p = OH_IPCParcel_ReadRemoteProxy(data);
        if (p == NULL) return 1909109;
        OH_IPC_MessageOption async = {OH_IPC_REQUEST_MODE_ASYNC, 0, NULL};
        for (int i = 0; i < 200; i++) {
            OHIPCParcel *one = OH_IPCParcel_Create();
            OH_IPCParcel_WriteInt32(one, i);
            OH_IPCRemoteProxy_SendRequest(p, LOG, one, NULL, &async);
            OH_IPCParcel_Destroy(one);
        }
        OHIPCParcel *d = OH_IPCParcel_Create(), *r = OH_IPCParcel_Create();
        int32_t n = -1, v = -1, ordered = 1;
        int rc = OH_IPCRemoteProxy_SendRequest(p, GET_LOG, d, r, NULL);
        OH_IPCParcel_ReadInt32(r, &n);
        for (int i = 0; i < n; i++)
            if (OH_IPCParcel_ReadInt32(r, &v) != 0 || v != i) ordered = 0;
        OH_IPCParcel_Destroy(d);
        OH_IPCParcel_Destroy(r);
        OH_IPCRemoteProxy_Destroy(p);
        return rc != 0 ? rc : OH_IPCParcel_WriteInt32(reply, n == 200 && ordered);
    }
    case HOLD:
        return hold();
    case HELD:
        pthread_mutex_lock(&gate_mu);
        x = held;
        pthread_mutex_unlock(&gate_mu);
        return OH_IPCParcel_WriteInt32(reply, x);
    case UNHOLD:
        pthread_mutex_lock(&gate_mu);
        unheld = 1;
        pthread_cond_broadcast(&gate_cv);
        pthread_mutex_unlock(&gate_mu);
        return 0;
    case CALL_CODE: {
        OHIPCRemoteProxy *p = OH_IPCParcel_ReadRemoteProxy(data);
        if (p == NULL || OH_IPCParcel_ReadInt32(data, &x) != OH_IPC_SUCCESS) {
            OH_IPCRemoteProxy_Destroy(p);
            return 1909111;
        }
        OHIPCParcel *d = OH_IPCParcel_Create(), *r = OH_IPCParcel_Create();
        int rc = OH_IPCRemoteProxy_SendRequest(p, (uint32_t)x, d, r, NULL);
        OH_IPCParcel_Destroy(d);
        OH_IPCParcel_Destroy(r);
        OH_IPCRemoteProxy_Destroy(p);
        return rc;
    }
    case GATE_WAIT:
        return gate(0);
    case GATE_OPEN:
        return gate(1);
    case ECHO:
        if (OH_IPCParcel_ReadInt32(data, &x) != OH_IPC_SUCCESS) return 1909100;
        return OH_IPCParcel_WriteInt32(reply, x + 1);
    case CALL_BACK: {
        OHIPCRemoteProxy *cb = OH_IPCParcel_ReadRemoteProxy(data);
        if (cb == NULL) return 1909101;
        OHIPCParcel *d = OH_IPCParcel_Create(), *r = OH_IPCParcel_Create();
        OH_IPCParcel_WriteInt32(d, 41);
        int rc = OH_IPCRemoteProxy_SendRequest(cb, ECHO, d, r, NULL);
        int32_t got = -1;
        if (rc == 0) OH_IPCParcel_ReadInt32(r, &got);
        OH_IPCParcel_Destroy(d);
        OH_IPCParcel_Destroy(r);
        OH_IPCRemoteProxy_Destroy(cb);
        return rc ? 1909102 : OH_IPCParcel_WriteInt32(reply, got);
    }
    case WRITE_FD: {
        int32_t fd;
        if (OH_IPCParcel_ReadFileDescriptor(data, &fd) != OH_IPC_SUCCESS) return 1909103;
        ssize_t n = write(fd, "hi", 2);
        close(fd);
        return n == 2 ? 0 : 1909104;
    }
    case LOG:
        if (OH_IPCParcel_ReadInt32(data, &x) == OH_IPC_SUCCESS && log_len < 1000)
            log_values[log_len++] = x;
        return 0;
    case LOG_ANY: {
        int32_t kind = -1, fd = -1;
        int ok = OH_IPCParcel_ReadInt32(data, &x) == OH_IPC_SUCCESS &&
                 OH_IPCParcel_ReadInt32(data, &kind) == OH_IPC_SUCCESS;
        if (ok && kind == 1) {
            ok = OH_IPCParcel_ReadFileDescriptor(data, &fd) == OH_IPC_SUCCESS &&
                 write(fd, "x", 1) == 1;
            if (fd >= 0) close(fd);
        } else if (ok && kind == 2) {
            OHIPCRemoteProxy *p = OH_IPCParcel_ReadRemoteProxy(data);
            ok = p != NULL;
            OH_IPCRemoteProxy_Destroy(p);
        }
        if (log_len < 1000) log_values[log_len++] = ok ? x : -1;
        return 0;
    }
    case CLEAR_LOG:
        log_len = 0;
        return 0;
    case GET_LOG:
        OH_IPCParcel_WriteInt32(reply, log_len);
        for (int i = 0; i < log_len; i++) OH_IPCParcel_WriteInt32(reply, log_values[i]);
        return 0;
    case USER_ERR:
        return 1909001;
    case BAD_ERR:
        return 7;
    case STATUS: {
        int32_t status = 0;
        OH_IPCParcel_ReadInt32(data, &status);
        return status;
    }
    case SLOW: {
        struct timespec ts = {1, 500000000};
        nanosleep(&ts, NULL);
        return 0;
    }
    case IDENTITY:
        OH_IPCParcel_WriteUint64(reply, OH_IPCSkeleton_GetCallingPid());
        OH_IPCParcel_WriteUint64(reply, OH_IPCSkeleton_GetCallingUid());
        OH_IPCParcel_WriteInt32(reply, OH_IPCSkeleton_IsHandlingTransaction());
        OH_IPCParcel_WriteInt32(reply, OH_IPCSkeleton_IsLocalCalling());
        return 0;
    case RESET_SET: {
        /* during a request: the reset identity names the caller and the thread acts as
         * itself until it is set back; text it did not make is OH_IPC_INNER_ERROR (as
         * OpenHarmony's invoker refuses it) */
        uint64_t caller = OH_IPCSkeleton_GetCallingPid();
        char *saved = NULL;
        int32_t len = 0;
        int ok = OH_IPCSkeleton_ResetCallingIdentity(&saved, &len, alloc) == OH_IPC_SUCCESS &&
                 saved != NULL && len == (int32_t)strlen(saved) + 1 && len > 1;
        ok = ok && OH_IPCSkeleton_GetCallingPid() == (uint64_t)getpid() &&
             OH_IPCSkeleton_IsLocalCalling() == 1;
        ok = ok && OH_IPCSkeleton_SetCallingIdentity("STUB_DESCRIPTOR") == OH_IPC_INNER_ERROR;
        ok = ok && OH_IPCSkeleton_SetCallingIdentity(saved) == OH_IPC_SUCCESS &&
             OH_IPCSkeleton_GetCallingPid() == caller && OH_IPCSkeleton_IsLocalCalling() == 0;
        free(saved);
        return OH_IPCParcel_WriteInt32(reply, ok);
    }
    case KEEP:
        kept = OH_IPCParcel_ReadRemoteProxy(data);
        return kept != NULL ? 0 : 1909105;
    case DROP:
        OH_IPCRemoteProxy_Destroy(kept);
        kept = NULL;
        return 0;
    case DIE:
        _exit(0);
    case BIG: {
        const uint8_t *b = OH_IPCParcel_ReadBuffer(data, BIG_BYTES);
        return b == NULL ? 1909107 : OH_IPCParcel_WriteBuffer(reply, b, BIG_BYTES);
    }
    case ROUND_TRIP: {
        OHIPCRemoteProxy *p = OH_IPCParcel_ReadRemoteProxy(data);
        if (p == NULL) return 1909106;
        int rc = OH_IPCParcel_WriteRemoteProxy(reply, p);
        OH_IPCRemoteProxy_Destroy(p);
        return rc;
    }
    }
    return 1909999;
}

static void run_child(int call_fd, int serve_fd) {
    OHIPCRemoteStub *root = OH_IPCRemoteStub_Create("test.IChild", child_request, NULL, NULL);
    char err[160];
    if (childkit_ipc_connect(call_fd, serve_fd, root, 0, NULL, err, sizeof err) != 0) {
        fprintf(stderr, "child: %s\n", err);
        _exit(3);
    }
    OH_IPCRemoteStub_Destroy(root); /* the connection keeps its own reference */
    OH_IPCSkeleton_JoinWorkThread(); /* serves until the process ends */
    _exit(0);
}

/* ------------------------------------------------------------------ the parent */
static int parent_request(uint32_t code, const OHIPCParcel *data, OHIPCParcel *reply, void *ud) {
    int32_t x;
    if (code != ECHO || OH_IPCParcel_ReadInt32(data, &x) != OH_IPC_SUCCESS) return 1909200;
    return OH_IPCParcel_WriteInt32(reply, x + 1);
}

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int destroyed, died, recipient_destroyed;

static void on_destroy(void *ud) {
    pthread_mutex_lock(&mu);
    destroyed++;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}
static void on_death(void *ud) {
    pthread_mutex_lock(&mu);
    died++;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}
static void on_recipient_destroy(void *ud) {
    pthread_mutex_lock(&mu);
    recipient_destroyed++;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

/* Waits (30 s at most) until *counter reaches want. */
static int wait_for(int *counter, int want) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 30;
    pthread_mutex_lock(&mu);
    while (*counter < want)
        if (pthread_cond_timedwait(&cv, &mu, &deadline) == ETIMEDOUT) break;
    int ok = *counter >= want;
    pthread_mutex_unlock(&mu);
    return ok;
}

static int call(OHIPCRemoteProxy *p, uint32_t code, OHIPCParcel *d, OHIPCParcel *r) {
    return OH_IPCRemoteProxy_SendRequest(p, code, d, r, NULL);
}

static OHIPCRemoteProxy *start(pid_t *pid) {
    int a[2], b[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, a) < 0 ||
        socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, b) < 0)
        return NULL;
    /* a[0] is the parent's call socket, paired with the child's serve socket a[1]. Serve
     * sockets pass credentials from the start, so the kernel stamps each side's HELLO
     * (as ipc/_connection.py's channel_socketpairs does). */
    int on = 1;
    setsockopt(a[1], SOL_SOCKET, SO_PASSCRED, &on, sizeof on);
    setsockopt(b[1], SOL_SOCKET, SO_PASSCRED, &on, sizeof on);
    pid_t parent = getpid();
    *pid = fork();
    if (*pid == 0) {
        /* never outlive the test (a child serves until told to die) */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(1);
        /* This process has threads, so the child execs a fresh copy of the program at
         * once (nothing else is safe after such a fork: another thread may have held the
         * allocator's lock) and serves there on the two inherited sockets. */
        char call_arg[16], serve_arg[16];
        int call_fd = fcntl(b[0], F_DUPFD, 10), serve_fd = fcntl(a[1], F_DUPFD, 10);
        snprintf(call_arg, sizeof call_arg, "%d", call_fd);
        snprintf(serve_arg, sizeof serve_arg, "%d", serve_fd);
        char *args[] = {self_path, "serve", call_arg, serve_arg, NULL};
        execv(self_path, args);
        _exit(127);
    }
    close(a[1]);
    close(b[0]);
    OHIPCRemoteProxy *root = NULL;
    char err[160];
    int rc = childkit_ipc_connect(a[0], b[1], NULL, 30000, &root, err, sizeof err);
    if (rc != 0) printf("connect: %d %s\n", rc, err);
    return root;
}

/* Threads calling one proxy at once: each reply must reach the thread that asked. */
typedef struct {
    OHIPCRemoteProxy *proxy;
    int base, wrong, code;
} caller_t;

static void *caller_main(void *arg) {
    caller_t *c = arg;
    for (int i = 0; i < 300; i++) {
        OHIPCParcel *d = OH_IPCParcel_Create(), *r = OH_IPCParcel_Create();
        int32_t v = -1;
        if (c->code == CALL_BACK) {
            OHIPCRemoteStub *cb = OH_IPCRemoteStub_Create("test.ICallback", parent_request,
                                                          NULL, NULL);
            OH_IPCParcel_WriteRemoteStub(d, cb);
            OH_IPCRemoteStub_Destroy(cb);
            if (call(c->proxy, CALL_BACK, d, r) != OH_IPC_SUCCESS ||
                OH_IPCParcel_ReadInt32(r, &v) != OH_IPC_SUCCESS || v != 42)
                c->wrong++;
        } else {
            OH_IPCParcel_WriteInt32(d, c->base + i);
            if (call(c->proxy, ECHO, d, r) != OH_IPC_SUCCESS ||
                OH_IPCParcel_ReadInt32(r, &v) != OH_IPC_SUCCESS || v != c->base + i + 1)
                c->wrong++;
        }
        OH_IPCParcel_Destroy(d);
        OH_IPCParcel_Destroy(r);
    }
    return NULL;
}

/* n threads calling code at once; the number of wrong or failed replies. */
typedef struct {
    OHIPCRemoteProxy *via, *target;
    int status;
} relay_t;

/* via's CALL_CODE: target's HOLD, through this process's forwarding stub. */
static int relay_hold(OHIPCRemoteProxy *via, OHIPCRemoteProxy *target) {
    OHIPCParcel *d = OH_IPCParcel_Create(), *r = OH_IPCParcel_Create();
    OH_IPCParcel_WriteRemoteProxy(d, target);
    OH_IPCParcel_WriteInt32(d, HOLD);
    int rc = OH_IPCRemoteProxy_SendRequest(via, CALL_CODE, d, r, NULL);
    OH_IPCParcel_Destroy(d);
    OH_IPCParcel_Destroy(r);
    return rc;
}

static void *relay_thread(void *arg) {
    relay_t *c = arg;
    c->status = relay_hold(c->via, c->target);
    return NULL;
}

static int32_t held_in(OHIPCRemoteProxy *target) {
    OHIPCParcel *d = OH_IPCParcel_Create(), *r = OH_IPCParcel_Create();
    int32_t n = -1;
    if (OH_IPCRemoteProxy_SendRequest(target, HELD, d, r, NULL) == OH_IPC_SUCCESS)
        OH_IPCParcel_ReadInt32(r, &n);
    OH_IPCParcel_Destroy(d);
    OH_IPCParcel_Destroy(r);
    return n;
}

/* A forwarded sync call holds a work thread of this process until its target answers: at
 * most half of them (8 of the default 16) wait so; one more is refused at once with
 * OH_IPC_INNER_ERROR, and the rest answer once the target lets them go. 0 if all held. */
static int forwarded_calls_are_bounded(OHIPCRemoteProxy *via, OHIPCRemoteProxy *target) {
    enum { LIMIT = 8 };
    pthread_t t[LIMIT];
    relay_t c[LIMIT];
    int wrong = 0;
    for (int i = 0; i < LIMIT; i++) {
        c[i] = (relay_t){via, target, -1};
        pthread_create(&t[i], NULL, relay_thread, &c[i]);
    }
    int32_t n = 0;
    for (int tries = 0; tries < 3000 && (n = held_in(target)) < LIMIT; tries++) {
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
    if (n != LIMIT) wrong++;
    if (relay_hold(via, target) != OH_IPC_INNER_ERROR) wrong++; /* the one over */
    OHIPCParcel *d = OH_IPCParcel_Create(), *r = OH_IPCParcel_Create();
    if (OH_IPCRemoteProxy_SendRequest(target, UNHOLD, d, r, NULL) != OH_IPC_SUCCESS) wrong++;
    OH_IPCParcel_Destroy(d);
    OH_IPCParcel_Destroy(r);
    for (int i = 0; i < LIMIT; i++) {
        pthread_join(t[i], NULL);
        if (c[i].status != OH_IPC_SUCCESS) wrong++;
    }
    return wrong;
}

static int concurrent_calls(OHIPCRemoteProxy *proxy, int code, int n) {
    pthread_t t[8];
    caller_t c[8];
    int wrong = 0;
    for (int k = 0; k < n; k++) {
        c[k] = (caller_t){proxy, k * 100000, 0, code};
        pthread_create(&t[k], NULL, caller_main, &c[k]);
    }
    for (int k = 0; k < n; k++) {
        pthread_join(t[k], NULL);
        wrong += c[k].wrong;
    }
    return wrong;
}

typedef struct {
    OHIPCRemoteProxy *proxy;
    int status;
} gate_call_t;

static void *gate_caller(void *arg) {
    gate_call_t *g = arg;
    OHIPCParcel *d = OH_IPCParcel_Create(), *r = OH_IPCParcel_Create();
    g->status = call(g->proxy, GATE_WAIT, d, r);
    OH_IPCParcel_Destroy(d);
    OH_IPCParcel_Destroy(r);
    return NULL;
}

static void full_run(void) {
    pid_t pid;
    OHIPCRemoteProxy *root = start(&pid);
    CHECK(root != NULL);
    if (root == NULL) return;
    OHIPCParcel *d = OH_IPCParcel_Create(), *r = OH_IPCParcel_Create();
    int32_t v = 0;

    /* argument checks */
    CHECK(OH_IPCRemoteProxy_SendRequest(NULL, ECHO, d, r, NULL) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCRemoteProxy_SendRequest(root, ECHO, NULL, r, NULL) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCRemoteProxy_SendRequest(root, ECHO, d, NULL, NULL) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCRemoteProxy_SendRequest(root, 0, d, r, NULL) == OH_IPC_CODE_OUT_OF_RANGE);
    CHECK(OH_IPCRemoteProxy_SendRequest(root, 0x01000000, d, r, NULL) == OH_IPC_CODE_OUT_OF_RANGE);
    OH_IPC_MessageOption bad = {(OH_IPC_RequestMode)5, 0, NULL};
    CHECK(OH_IPCRemoteProxy_SendRequest(root, ECHO, d, r, &bad) == OH_IPC_CHECK_PARAM_ERROR);
    int reserved_for_later = 0; /* a non-NULL reserved field is refused, as in OpenHarmony */
    OH_IPC_MessageOption with_reserved = {OH_IPC_REQUEST_MODE_SYNC, 0, &reserved_for_later};
    CHECK(OH_IPCRemoteProxy_SendRequest(root, ECHO, d, r, &with_reserved) ==
          OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCRemoteStub_Create(NULL, parent_request, NULL, NULL) == NULL);
    CHECK(OH_IPCRemoteStub_Create("x", NULL, NULL, NULL) == NULL);
    CHECK(OH_IPCRemoteStub_Create("", parent_request, NULL, NULL) == NULL);
    /* OpenHarmony's OH_IPCRemoteStub_Create (ipc_cremote_object.cpp; its unit test
     * ipc_cremote_object_unittest.cpp CreateTest004): at most MAX_PARCEL_LEN (204,800)
     * bytes, and UTF-8 (its UTF-16 conversion of anything else is empty: NULL) */
    static char longest[204802];
    memset(longest, 'd', 204801);
    CHECK(OH_IPCRemoteStub_Create(longest, parent_request, NULL, NULL) == NULL);
    longest[204800] = '\0';
    OHIPCRemoteStub *long_stub = OH_IPCRemoteStub_Create(longest, parent_request, NULL, NULL);
    CHECK(long_stub != NULL);
    OH_IPCRemoteStub_Destroy(long_stub);
    CHECK(OH_IPCRemoteStub_Create("bad\xff", parent_request, NULL, NULL) == NULL);
    CHECK(OH_IPCDeathRecipient_Create(NULL, NULL, NULL) == NULL);
    CHECK(OH_IPCRemoteProxy_IsRemoteDead(NULL) == 1);
    CHECK(OH_IPCRemoteProxy_AddDeathRecipient(NULL, NULL) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCRemoteProxy_RemoveDeathRecipient(root, NULL) == OH_IPC_CHECK_PARAM_ERROR);
    OH_IPCRemoteStub_Destroy(NULL);
    OH_IPCRemoteProxy_Destroy(NULL);
    OH_IPCDeathRecipient_Destroy(NULL);

    /* a request and its reply */
    OH_IPCParcel_WriteInt32(d, 6);
    CHECK(call(root, ECHO, d, r) == OH_IPC_SUCCESS);
    CHECK(OH_IPCParcel_ReadInt32(r, &v) == OH_IPC_SUCCESS && v == 7);
    CHECK(OH_IPCRemoteProxy_IsRemoteDead(root) == 0);

    /* a forked copy of this process may not use the parent's link (nor deadlock on it) */
    pid_t forked = fork();
    if (forked == 0)
        alarm(60), _exit(call(root, ECHO, d, r) == OH_IPC_DEAD_REMOTE_OBJECT &&
                      OH_IPCRemoteProxy_IsRemoteDead(root) == 1 ? 0 : 1);
    int forked_status = -1;
    CHECK(waitpid(forked, &forked_status, 0) == forked && WIFEXITED(forked_status) &&
          WEXITSTATUS(forked_status) == 0);
    CHECK(OH_IPCRemoteProxy_IsRemoteDead(root) == 0);

    /* a full parcel each way */
    static uint8_t big[BIG_BYTES];
    for (int i = 0; i < BIG_BYTES; i++) big[i] = (uint8_t)(i * 7);
    OHIPCParcel *bigp = OH_IPCParcel_Create(), *bigr = OH_IPCParcel_Create();
    CHECK(OH_IPCParcel_WriteBuffer(bigp, big, BIG_BYTES) == OH_IPC_SUCCESS);
    CHECK(call(root, BIG, bigp, bigr) == OH_IPC_SUCCESS);
    const uint8_t *back = OH_IPCParcel_ReadBuffer(bigr, BIG_BYTES);
    CHECK(back != NULL && memcmp(back, big, BIG_BYTES) == 0);
    OH_IPCParcel_Destroy(bigp);
    OH_IPCParcel_Destroy(bigr);

    /* user errors pass through; others become OH_IPC_INVALID_USER_ERROR_CODE */
    CHECK(call(root, USER_ERR, d, r) == 1909001);
    CHECK(call(root, BAD_ERR, d, r) == OH_IPC_INVALID_USER_ERROR_CODE);
    /* OpenHarmony's C stub (OHIPCRemoteServiceStub::OnRemoteRequest, communication_ipc
     * ipc_remote_object_internal.cpp) also passes IPCKit's own codes, OH_IPC_ERROR_CODE_BASE
     * up to OH_IPC_INNER_ERROR: a stub answering OH_IPC_CHECK_PARAM_ERROR (as the XTS
     * suite's does for a wrong token) is heard as that */
    const int32_t statuses[][2] = {
        {OH_IPC_CHECK_PARAM_ERROR, OH_IPC_CHECK_PARAM_ERROR},
        {OH_IPC_CODE_OUT_OF_RANGE, OH_IPC_CODE_OUT_OF_RANGE},
        {OH_IPC_INNER_ERROR, OH_IPC_INNER_ERROR},
        {OH_IPC_INNER_ERROR + 1, OH_IPC_INVALID_USER_ERROR_CODE},
        {OH_IPC_ERROR_CODE_BASE - 1, OH_IPC_INVALID_USER_ERROR_CODE},
        {OH_IPC_USER_ERROR_CODE_MIN, OH_IPC_USER_ERROR_CODE_MIN},
        {OH_IPC_USER_ERROR_CODE_MAX, OH_IPC_USER_ERROR_CODE_MAX},
        {OH_IPC_USER_ERROR_CODE_MAX + 1, OH_IPC_INVALID_USER_ERROR_CODE},
        {-1, OH_IPC_INVALID_USER_ERROR_CODE},
    };
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++) {
        OHIPCParcel *sd = OH_IPCParcel_Create(), *sr = OH_IPCParcel_Create();
        OH_IPCParcel_WriteInt32(sd, statuses[i][0]);
        int got = call(root, STATUS, sd, sr);
        if (got != statuses[i][1]) printf("  status %d came as %d\n", statuses[i][0], got);
        CHECK(got == statuses[i][1]);
        OH_IPCParcel_Destroy(sd);
        OH_IPCParcel_Destroy(sr);
    }

    /* the descriptor, through the allocator */
    char *desc = NULL;
    int32_t len = 0;
    CHECK(OH_IPCRemoteProxy_GetInterfaceDescriptor(root, &desc, &len, alloc) == OH_IPC_SUCCESS);
    CHECK(desc != NULL && strcmp(desc, "test.IChild") == 0 && len == 12);
    free(desc);
    CHECK(OH_IPCRemoteProxy_GetInterfaceDescriptor(root, &desc, &len, NULL) ==
          OH_IPC_CHECK_PARAM_ERROR);
    /* OpenHarmony's GetInterfaceDescriptor: each out pointer checked, an allocator that
     * fails is OH_IPC_MEM_ALLOCATOR_ERROR (ipc_cremote_object_unittest.cpp Test001..005) */
    CHECK(OH_IPCRemoteProxy_GetInterfaceDescriptor(NULL, &desc, &len, alloc) ==
          OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCRemoteProxy_GetInterfaceDescriptor(root, NULL, &len, alloc) ==
          OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCRemoteProxy_GetInterfaceDescriptor(root, &desc, NULL, alloc) ==
          OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCRemoteProxy_GetInterfaceDescriptor(root, &desc, &len, no_memory) ==
          OH_IPC_MEM_ALLOCATOR_ERROR);

    /* the skeleton as OpenHarmony's ipc_cskeleton.cpp, its unit tests
     * (ipc_capi_skeleton_unittest.cpp, ipc_cskeleton_unittest.cpp) and XTS capi_ipc
     * (ipc_capi.cpp): 1..32 work threads; outside a request the identity is "" and setting
     * any identity succeeds and changes nothing */
    CHECK(OH_IPCSkeleton_SetMaxWorkThreadNum(0) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCSkeleton_SetMaxWorkThreadNum(33) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCSkeleton_SetMaxWorkThreadNum(1) == OH_IPC_SUCCESS);
    CHECK(OH_IPCSkeleton_SetMaxWorkThreadNum(32) == OH_IPC_SUCCESS);
    CHECK(OH_IPCSkeleton_SetMaxWorkThreadNum(16) == OH_IPC_SUCCESS); /* the default again */
    CHECK(OH_IPCSkeleton_SetCallingIdentity(NULL) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCSkeleton_SetCallingIdentity("STUB_DESCRIPTOR") == OH_IPC_SUCCESS);
    CHECK(OH_IPCSkeleton_GetCallingPid() == (uint64_t)getpid());
    char *ident = NULL;
    int32_t ident_len = 0;
    CHECK(OH_IPCSkeleton_ResetCallingIdentity(NULL, &ident_len, alloc) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCSkeleton_ResetCallingIdentity(&ident, NULL, alloc) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCSkeleton_ResetCallingIdentity(&ident, &ident_len, NULL) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCSkeleton_ResetCallingIdentity(&ident, &ident_len, no_memory) ==
          OH_IPC_MEM_ALLOCATOR_ERROR);
    CHECK(OH_IPCSkeleton_ResetCallingIdentity(&ident, &ident_len, alloc) == OH_IPC_SUCCESS);
    CHECK(ident != NULL && ident[0] == '\0' && ident_len == 1);
    CHECK(OH_IPCSkeleton_SetCallingIdentity(ident) == OH_IPC_SUCCESS);
    free(ident);
    CHECK(OH_IPCSkeleton_IsHandlingTransaction() == 0 && OH_IPCSkeleton_IsLocalCalling() == 1);
    {
        OHIPCParcel *none = OH_IPCParcel_Create(), *rs = OH_IPCParcel_Create();
        int32_t ok = 0;
        CHECK(call(root, RESET_SET, none, rs) == OH_IPC_SUCCESS);
        CHECK(OH_IPCParcel_ReadInt32(rs, &ok) == OH_IPC_SUCCESS && ok == 1);
        OH_IPCParcel_Destroy(none);
        OH_IPCParcel_Destroy(rs);
    }

    /* the calling identity the child sees is the kernel's */
    OHIPCParcel *empty = OH_IPCParcel_Create();
    OHIPCParcel *idr = OH_IPCParcel_Create();
    uint64_t cpid = 0, cuid = 1;
    int32_t handling = 0, local = 1;
    CHECK(call(root, IDENTITY, empty, idr) == OH_IPC_SUCCESS);
    OH_IPCParcel_ReadUint64(idr, &cpid);
    OH_IPCParcel_ReadUint64(idr, &cuid);
    OH_IPCParcel_ReadInt32(idr, &handling);
    OH_IPCParcel_ReadInt32(idr, &local);
    CHECK(cpid == (uint64_t)getpid() && cuid == (uint64_t)getuid() && handling == 1 && local == 0);
    CHECK(OH_IPCSkeleton_IsHandlingTransaction() == 0 && OH_IPCSkeleton_IsLocalCalling() == 1);
    CHECK(OH_IPCSkeleton_GetCallingPid() == (uint64_t)getpid());
    OH_IPCParcel_Destroy(idr);

    /* an fd crosses: the child writes into our pipe */
    int pipefd[2];
    CHECK(pipe(pipefd) == 0);
    OHIPCParcel *fdp = OH_IPCParcel_Create();
    OH_IPCParcel_WriteFileDescriptor(fdp, pipefd[1]);
    close(pipefd[1]);
    CHECK(call(root, WRITE_FD, fdp, r) == OH_IPC_SUCCESS);
    OH_IPCParcel_Destroy(fdp); /* the last write end goes: read sees EOF after "hi" */
    char got[8] = {0};
    CHECK(read(pipefd[0], got, sizeof got) == 2 && memcmp(got, "hi", 2) == 0);
    close(pipefd[0]);

    /* a parent stub, called back by the child while our call waits */
    OHIPCRemoteStub *cb = OH_IPCRemoteStub_Create("test.ICallback", parent_request, on_destroy,
                                                  NULL);
    OHIPCParcel *cbp = OH_IPCParcel_Create();
    OH_IPCParcel_WriteRemoteStub(cbp, cb);
    CHECK(call(root, CALL_BACK, cbp, r) == OH_IPC_SUCCESS);
    CHECK(OH_IPCParcel_ReadInt32(r, &v) == OH_IPC_SUCCESS && v == 42);
    /* the child keeps a proxy to it: our destroy does not free it until the child lets go */
    CHECK(call(root, KEEP, cbp, r) == OH_IPC_SUCCESS);
    /* the same stub sent and sent back comes home as the stub itself */
    CHECK(call(root, ROUND_TRIP, cbp, r) == OH_IPC_SUCCESS);
    OHIPCRemoteStub *home = OH_IPCParcel_ReadRemoteStub(r);
    CHECK(home == cb);
    OH_IPCRemoteStub_Destroy(home); /* a read stub is the reader's reference */
    OH_IPCParcel_Destroy(cbp);
    OH_IPCParcel_Destroy(r);
    r = OH_IPCParcel_Create();
    OH_IPCRemoteStub_Destroy(cb);
    CHECK(destroyed == 0);
    CHECK(call(root, DROP, empty, r) == OH_IPC_SUCCESS);
    CHECK(wait_for(&destroyed, 1)); /* the child's RELEASE freed it */

    /* one-way requests run in order */
    OH_IPC_MessageOption async = {OH_IPC_REQUEST_MODE_ASYNC, 0, NULL};
    for (int i = 0; i < 500; i++) {
        OHIPCParcel *one = OH_IPCParcel_Create();
        OH_IPCParcel_WriteInt32(one, i);
        CHECK(OH_IPCRemoteProxy_SendRequest(root, LOG, one, NULL, &async) == OH_IPC_SUCCESS);
        OH_IPCParcel_Destroy(one);
    }
    CHECK(call(root, GET_LOG, empty, r) == OH_IPC_SUCCESS); /* queued behind them */
    int32_t n = 0, ordered = 1;
    OH_IPCParcel_ReadInt32(r, &n);
    for (int i = 0; i < n; i++) {
        OH_IPCParcel_ReadInt32(r, &v);
        if (v != i) ordered = 0;
    }
    CHECK(n == 500 && ordered);

    /* bursts of one-way requests, plain ones between ones with an fd or an object, run in
     * order; each burst after the first runs on the jobs and parcels of the one before */
    int pipe_fds[2];
    CHECK(pipe(pipe_fds) == 0);
    OHIPCRemoteStub *logged = OH_IPCRemoteStub_Create("test.ILogged", parent_request, NULL,
                                                      NULL);
    for (int burst = 0; burst < 3; burst++) {
        CHECK(call(root, CLEAR_LOG, empty, r) == OH_IPC_SUCCESS);
        for (int i = 0; i < 300; i++) {
            OHIPCParcel *one = OH_IPCParcel_Create();
            OH_IPCParcel_WriteInt32(one, i);
            OH_IPCParcel_WriteInt32(one, i % 3);
            if (i % 3 == 1) OH_IPCParcel_WriteFileDescriptor(one, pipe_fds[1]);
            if (i % 3 == 2) OH_IPCParcel_WriteRemoteStub(one, logged);
            CHECK(OH_IPCRemoteProxy_SendRequest(root, LOG_ANY, one, NULL, &async) ==
                  OH_IPC_SUCCESS);
            OH_IPCParcel_Destroy(one);
        }
        CHECK(call(root, GET_LOG, empty, r) == OH_IPC_SUCCESS);
        n = 0;
        ordered = 1;
        OH_IPCParcel_ReadInt32(r, &n);
        for (int i = 0; i < n; i++) {
            OH_IPCParcel_ReadInt32(r, &v);
            if (v != i) ordered = 0;
        }
        CHECK(n == 300 && ordered);
        char marks[100];
        size_t got = 0; /* every fd request wrote its mark before GET_LOG answered */
        while (got < sizeof marks) {
            ssize_t k = read(pipe_fds[0], marks + got, sizeof marks - got);
            if (k <= 0) break;
            got += (size_t)k;
        }
        CHECK(got == sizeof marks);
    }
    OH_IPCRemoteStub_Destroy(logged);
    close(pipe_fds[0]);
    close(pipe_fds[1]);

    /* a timeout: the call gives up, the late reply is dropped, the link stays usable */
    OH_IPC_MessageOption quick = {OH_IPC_REQUEST_MODE_SYNC, 1, NULL};
    CHECK(OH_IPCRemoteProxy_SendRequest(root, SLOW, empty, r, &quick) == 1901900);
    OHIPCParcel *d2 = OH_IPCParcel_Create(), *r2 = OH_IPCParcel_Create();
    OH_IPCParcel_WriteInt32(d2, 1);
    CHECK(call(root, ECHO, d2, r2) == OH_IPC_SUCCESS);
    CHECK(OH_IPCParcel_ReadInt32(r2, &v) == OH_IPC_SUCCESS && v == 2);

    /* a request that waits for a later request of the same link: that one is read and
     * run meanwhile (the thread that read the first runs it; another reads on) */
    gate_call_t gate = {root, -1};
    pthread_t gate_thread;
    pthread_create(&gate_thread, NULL, gate_caller, &gate);
    CHECK(call(root, GATE_OPEN, empty, r) == OH_IPC_SUCCESS);
    pthread_join(gate_thread, NULL);
    CHECK(gate.status == OH_IPC_SUCCESS);

    /* callers on several threads at once get their own replies, also while the child
     * calls back into this process for each of them */
    CHECK(concurrent_calls(root, ECHO, 4) == 0);
    CHECK(concurrent_calls(root, CALL_BACK, 3) == 0);

    /* a proxy of a third process (a second child) passed to the first: it gets a
     * forwarding stub of this process, through which its calls (sync and one-way, in
     * order) reach the second child; once that one is gone, they fail */
    pid_t pid2;
    OHIPCRemoteProxy *root2 = start(&pid2);
    CHECK(root2 != NULL);
    if (root2 != NULL) {
        OHIPCParcel *fw = OH_IPCParcel_Create(), *fr = OH_IPCParcel_Create();
        int32_t relayed = 0;
        CHECK(OH_IPCParcel_WriteRemoteProxy(fw, root2) == OH_IPC_SUCCESS);
        CHECK(call(root, CALL_BACK, fw, fr) == OH_IPC_SUCCESS); /* ECHO(41) via this process */
        CHECK(OH_IPCParcel_ReadInt32(fr, &v) == OH_IPC_SUCCESS && v == 42);
        CHECK(call(root, RELAY_LOG, fw, fr) == OH_IPC_SUCCESS);
        CHECK(OH_IPCParcel_ReadInt32(fr, &relayed) == OH_IPC_SUCCESS && relayed == 1);
        CHECK(concurrent_calls(root2, ECHO, 2) == 0); /* the link to it still serves */
        CHECK(forwarded_calls_are_bounded(root, root2) == 0);
        CHECK(call(root2, DIE, empty, fr) == OH_IPC_DEAD_REMOTE_OBJECT);
        CHECK(waitpid(pid2, NULL, 0) == pid2);
        CHECK(call(root, CALL_BACK, fw, fr) == 1909102); /* its call failed */
        OH_IPCParcel_Destroy(fw);
        OH_IPCParcel_Destroy(fr);
        OH_IPCRemoteProxy_Destroy(root2);
    }

    /* death: recipients run once, calls fail with OH_IPC_DEAD_REMOTE_OBJECT */
    OHIPCDeathRecipient *rec = OH_IPCDeathRecipient_Create(on_death, on_recipient_destroy, NULL);
    OHIPCDeathRecipient *removed = OH_IPCDeathRecipient_Create(on_death, NULL, NULL);
    CHECK(OH_IPCRemoteProxy_AddDeathRecipient(root, rec) == OH_IPC_SUCCESS);
    CHECK(OH_IPCRemoteProxy_AddDeathRecipient(root, removed) == OH_IPC_SUCCESS);
    CHECK(OH_IPCRemoteProxy_RemoveDeathRecipient(root, removed) == OH_IPC_SUCCESS);
    /* as OpenHarmony's (IPCObjectProxy::RemoveDeathRecipient answers true when there is
     * nothing to remove): removing one not added is a success */
    CHECK(OH_IPCRemoteProxy_RemoveDeathRecipient(root, removed) == OH_IPC_SUCCESS);
    OH_IPCDeathRecipient_Destroy(removed);
    CHECK(call(root, DIE, empty, r) == OH_IPC_DEAD_REMOTE_OBJECT);
    CHECK(wait_for(&died, 1));
    CHECK(OH_IPCRemoteProxy_IsRemoteDead(root) == 1);
    CHECK(call(root, ECHO, d2, r2) == OH_IPC_DEAD_REMOTE_OBJECT);
    /* as OpenHarmony's (its proxy's Add/RemoveDeathRecipient fail on a dead object, which
     * OH_IPCRemoteProxy_* answer with OH_IPC_INNER_ERROR; ipc_cremote_object_unittest.cpp) */
    CHECK(OH_IPCRemoteProxy_AddDeathRecipient(root, rec) == OH_IPC_INNER_ERROR);
    CHECK(OH_IPCRemoteProxy_RemoveDeathRecipient(root, rec) == OH_IPC_INNER_ERROR);
    OH_IPCDeathRecipient_Destroy(rec);
    CHECK(wait_for(&recipient_destroyed, 1));
    CHECK(died == 1);
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    OH_IPCRemoteProxy_Destroy(root);
    OH_IPCParcel_Destroy(d);
    OH_IPCParcel_Destroy(r);
    OH_IPCParcel_Destroy(d2);
    OH_IPCParcel_Destroy(r2);
    OH_IPCParcel_Destroy(empty);
}

/* Rounds of connect, requests with objects and fds, and teardown: the leak check's work. */
static void loop(int rounds) {
    for (int k = 0; k < rounds; k++) {
        pid_t pid;
        OHIPCRemoteProxy *root = start(&pid);
        CHECK(root != NULL);
        if (root == NULL) return;
        for (int i = 0; i < 20; i++) {
            OHIPCParcel *d = OH_IPCParcel_Create(), *r = OH_IPCParcel_Create();
            OHIPCRemoteStub *cb = OH_IPCRemoteStub_Create("loop.ICallback", parent_request,
                                                          NULL, NULL);
            OH_IPCParcel_WriteRemoteStub(d, cb);
            CHECK(call(root, CALL_BACK, d, r) == OH_IPC_SUCCESS);
            OH_IPCRemoteStub_Destroy(cb);
            OH_IPCParcel_Destroy(d);
            OH_IPCParcel_Destroy(r);
        }
        OHIPCParcel *e = OH_IPCParcel_Create(), *r = OH_IPCParcel_Create();
        CHECK(call(root, DIE, e, r) == OH_IPC_DEAD_REMOTE_OBJECT);
        waitpid(pid, NULL, 0);
        OH_IPCParcel_Destroy(e);
        OH_IPCParcel_Destroy(r);
        OH_IPCRemoteProxy_Destroy(root);
    }
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    alarm(240); /* a hang ends the run (SIGALRM) instead of the test suite's */
    self_path = argv[0];
    if (argc == 4 && strcmp(argv[1], "serve") == 0) run_child(atoi(argv[2]), atoi(argv[3]));
    if (argc == 3 && strcmp(argv[1], "loop") == 0) loop(atoi(argv[2]));
    else full_run();
    printf("%d failures\n", failures);
    return failures;
}
