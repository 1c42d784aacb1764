/* The C kit's figures for python -m bench (bench/bench_native.py compiles this with gcc
 * against libipc_capi.so at run time):
 *
 *   native_c rtt ROUNDS        a C parent and a forked C child over libipc_capi.so: one
 *                              int32 request and reply per round; prints ns per round trip
 *   native_c seqpacket ROUNDS  the bare limit beside it: two SOCK_SEQPACKET socketpairs
 *                              (as the kit uses), a forked echo peer, records of the
 *                              bytes the kit's rtt sends (35 out, 31 back); prints ns per
 *                              round trip
 *   native_c seqpacket-msg ROUNDS  the same, both sides reading with recvmsg and room for
 *                              253 fds, as the wire format requires of every reader (the
 *                              protocol's own floor: what the kit cannot do without)
 *   native_c oneway COUNT      COUNT one-way requests C to C, then one sync request that
 *                              queues behind them; prints requests per second
 *   native_c parcel BYTES ROUNDS  write then read a BYTES string and a BYTES buffer in one
 *                              parcel; prints microseconds per write+read of both
 *
 * One number on stdout, exit status 0; or a message on stderr and status 1.
 */
#define _GNU_SOURCE
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

int childkit_ipc_connect(int call_fd, int serve_fd, OHIPCRemoteStub *root, int timeout_ms,
                         OHIPCRemoteProxy **peer_root, char *err, size_t errlen);

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int count;

static int serve(uint32_t code, const OHIPCParcel *data, OHIPCParcel *reply, void *ud) {
    int32_t x = 0;
    if (code == 2) { /* one-way */
        count++;
        return 0;
    }
    if (code == 3) return OH_IPCParcel_WriteInt32(reply, count);
    OH_IPCParcel_ReadInt32(data, &x);
    return OH_IPCParcel_WriteInt32(reply, x + 1);
}

static OHIPCRemoteProxy *start_child(pid_t *pid) {
    int a[2], b[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, a) < 0 ||
        socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, b) < 0)
        return NULL;
    int on = 1;
    setsockopt(a[1], SOL_SOCKET, SO_PASSCRED, &on, sizeof on);
    setsockopt(b[1], SOL_SOCKET, SO_PASSCRED, &on, sizeof on);
    *pid = fork();
    if (*pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the bench */
        close(a[0]);
        close(b[1]);
        OHIPCRemoteStub *root = OH_IPCRemoteStub_Create("bench.IEcho", serve, NULL, NULL);
        if (childkit_ipc_connect(b[0], a[1], root, 0, NULL, NULL, 0) != 0) _exit(1);
        OH_IPCSkeleton_JoinWorkThread();
        _exit(0);
    }
    close(a[1]);
    close(b[0]);
    OHIPCRemoteProxy *proxy = NULL;
    childkit_ipc_connect(a[0], b[1], NULL, 30000, &proxy, NULL, 0);
    return proxy;
}

static int32_t call(OHIPCRemoteProxy *p, uint32_t code, int32_t x) {
    OHIPCParcel *d = OH_IPCParcel_Create(), *r = OH_IPCParcel_Create();
    int32_t out = -1;
    OH_IPCParcel_WriteInt32(d, x);
    if (OH_IPCRemoteProxy_SendRequest(p, code, d, r, NULL) == 0) OH_IPCParcel_ReadInt32(r, &out);
    OH_IPCParcel_Destroy(d);
    OH_IPCParcel_Destroy(r);
    return out;
}

static int rtt(long rounds) {
    pid_t pid;
    OHIPCRemoteProxy *p = start_child(&pid);
    if (p == NULL) return fprintf(stderr, "the C child did not start\n"), 1;
    for (int i = 0; i < 1000; i++) call(p, 1, i); /* warm up */
    double t = now();
    for (long i = 0; i < rounds; i++)
        if (call(p, 1, (int32_t)i) != (int32_t)i + 1) return fprintf(stderr, "bad reply\n"), 1;
    double per = (now() - t) / (double)rounds;
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    OH_IPCRemoteProxy_Destroy(p);
    printf("%.1f\n", per * 1e9);
    return 0;
}

static int oneway(long n) {
    pid_t pid;
    OHIPCRemoteProxy *p = start_child(&pid);
    if (p == NULL) return fprintf(stderr, "the C child did not start\n"), 1;
    OH_IPC_MessageOption async = {OH_IPC_REQUEST_MODE_ASYNC, 0, NULL};
    OHIPCParcel *d = OH_IPCParcel_Create();
    OH_IPCParcel_WriteInt32(d, 7);
    double t = now();
    for (long i = 0; i < n; i++) OH_IPCRemoteProxy_SendRequest(p, 2, d, NULL, &async);
    int32_t got = call(p, 3, 0); /* runs after every one-way request to the object */
    double secs = now() - t;
    OH_IPCParcel_Destroy(d);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    OH_IPCRemoteProxy_Destroy(p);
    if (got != n) return fprintf(stderr, "%d of %ld one-way requests ran\n", got, n), 1;
    printf("%.1f\n", (double)n / secs);
    return 0;
}

/* The records of one rtt round: a TRANSACTION frame (8-byte header, 22 fixed bytes) with
 * one int32 value (a tag and 4 bytes), and a REPLY frame (8 + 18) with one int32. */
#define REQUEST_BYTES (8 + 22 + 5)
#define REPLY_BYTES (8 + 18 + 5)

/* One record into buf: recv(), or with ancillary room for fds, recvmsg() as the kit reads. */
static ssize_t take(int fd, char *buf, size_t size, int with_room) {
    if (!with_room) return recv(fd, buf, size, 0);
    struct iovec iov = {.iov_base = buf, .iov_len = size};
    union {
        char space[CMSG_SPACE(253 * sizeof(int))];
        struct cmsghdr align;
    } control;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space,
                         .msg_controllen = sizeof control.space};
    return recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
}

static int seqpacket(long rounds, int with_room) {
    int a[2], b[2];
    char buf[64] = {0};
    if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, a) < 0 || socketpair(AF_UNIX, SOCK_SEQPACKET, 0, b) < 0)
        return perror("socketpair"), 1;
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(a[0]);
        close(b[0]);
        for (;;) {
            if (take(a[1], buf, sizeof buf, with_room) <= 0) _exit(0);
            send(b[1], buf, REPLY_BYTES, 0);
        }
    }
    close(a[1]);
    close(b[1]);
    for (int i = 0; i < 1000; i++) {
        send(a[0], buf, REQUEST_BYTES, 0);
        take(b[0], buf, sizeof buf, with_room);
    }
    double t = now();
    for (long i = 0; i < rounds; i++) {
        send(a[0], buf, REQUEST_BYTES, 0);
        take(b[0], buf, sizeof buf, with_room);
    }
    double per = (now() - t) / (double)rounds;
    close(a[0]);
    waitpid(pid, NULL, 0);
    printf("%.1f\n", per * 1e9);
    return 0;
}

static int parcel(long bytes, long rounds) {
    char *s = malloc((size_t)bytes + 1);
    memset(s, 'x', (size_t)bytes);
    s[bytes] = '\0';
    double t = now();
    for (long i = 0; i < rounds; i++) {
        OHIPCParcel *p = OH_IPCParcel_Create();
        OHIPCParcel *q = OH_IPCParcel_Create();
        if (OH_IPCParcel_WriteString(p, s) != 0 ||
            OH_IPCParcel_WriteBuffer(q, (const uint8_t *)s, (int32_t)bytes) != 0 ||
            OH_IPCParcel_ReadString(p) == NULL ||
            OH_IPCParcel_ReadBuffer(q, (int32_t)bytes) == NULL)
            return fprintf(stderr, "parcel write/read failed\n"), 1;
        OH_IPCParcel_Destroy(p);
        OH_IPCParcel_Destroy(q);
    }
    printf("%.2f\n", (now() - t) / (double)rounds * 1e6);
    free(s);
    return 0;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    if (argc == 3 && strcmp(argv[1], "rtt") == 0) return rtt(atol(argv[2]));
    if (argc == 3 && strcmp(argv[1], "oneway") == 0) return oneway(atol(argv[2]));
    if (argc == 3 && strcmp(argv[1], "seqpacket") == 0) return seqpacket(atol(argv[2]), 0);
    if (argc == 3 && strcmp(argv[1], "seqpacket-msg") == 0) return seqpacket(atol(argv[2]), 1);
    if (argc == 4 && strcmp(argv[1], "parcel") == 0) return parcel(atol(argv[2]), atol(argv[3]));
    fprintf(stderr, "usage: native_c rtt|oneway|seqpacket|seqpacket-msg N | parcel BYTES N\n");
    return 1;
}
