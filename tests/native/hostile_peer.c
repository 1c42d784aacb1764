/*
 * A hostile peer against the C kit (tests/native/test_hostile_peer.py; also built under
 * ASan/UBSan by test_sanitizers.py). For each record on stdin ("HEX N_FDS" per line) it
 * starts a C connection in this process, plays the raw peer on the other socket ends, and
 * sends the record two ways:
 *   serve: as a request record, after a proper HELLO, to the kit's serve socket;
 *   reply: as the answer to a sync call the kit is making.
 * It prints one line per record: "<serve outcome> <reply outcome>", where the serve
 * outcome is "closed" (the kit ended the link) or "open", and the reply outcome the call's
 * status. Then "fuzz N" runs N seeded random mutations of the records the serve way.
 * Run as "hostile_peer status S...", it answers a call with each status instead; as
 * "hostile_peer objects", it checks the bounds on releases waiting for replies and on live
 * remotes (see objects()).
 * Exit status 0 unless an fd leaked; a crash is the failure this program exists to catch.
 */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ck_internal.h"
#include "ipc_kit.h"

static int root_request(uint32_t code, const OHIPCParcel *data, OHIPCParcel *reply, void *ud) {
    return OH_IPCParcel_WriteInt32(reply, 1);
}

static int count_fds(void) {
    int n = 0;
    for (int fd = 0; fd < 4096; fd++)
        if (fcntl(fd, F_GETFD) >= 0) n++;
    return n;
}

/* Sends the record; 0, or -1 if the kernel refused it (too large for any socket buffer
 * this process may set: then the kit cannot be sent it either). */
static int send_with_fds(int sock, const unsigned char *buf, size_t len, size_t n_fds) {
    int room = (int)(2 * len + 65536); /* a record over the kit's buffer must still go out */
    if (setsockopt(sock, SOL_SOCKET, SO_SNDBUFFORCE, &room, sizeof room) < 0)
        setsockopt(sock, SOL_SOCKET, SO_SNDBUF, &room, sizeof room);
    int fds[CK__MAX_RECORD_FDS + 8];
    for (size_t i = 0; i < n_fds; i++) fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    char control[CMSG_SPACE(sizeof fds)];
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (n_fds) {
        msg.msg_control = control;
        msg.msg_controllen = CMSG_SPACE(n_fds * sizeof(int));
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(n_fds * sizeof(int));
        memcpy(CMSG_DATA(c), fds, n_fds * sizeof(int));
    }
    ssize_t sent = sendmsg(sock, &msg, MSG_NOSIGNAL);
    for (size_t i = 0; i < n_fds; i++) close(fds[i]);
    return sent == (ssize_t)len ? 0 : -1;
}

#define PING_SEQ 0x7777777777ULL

/* Reads records (closing any fds) until the reply to PING_SEQ (1: the link is open) or
 * EOF (0: the kit closed it); -1 if neither comes within 10 s. */
static int ping_answered(int sock) {
    for (;;) {
        struct pollfd p = {.fd = sock, .events = POLLIN};
        if (poll(&p, 1, 10000) <= 0) return -1;
        unsigned char buf[512];
        char control[CMSG_SPACE(64 * sizeof(int))];
        struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                             .msg_controllen = sizeof control};
        ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
            if (c->cmsg_type == SCM_RIGHTS)
                for (size_t k = 0; k < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); k++)
                    close(((int *)CMSG_DATA(c))[k]);
        if (n <= 0) return 0;
        if (n >= CK__REPLY_FRAME_SIZE && buf[0] == CK__F_REPLY && ck__get_u64(buf + 8) == PING_SEQ)
            return 1;
    }
}

typedef struct {
    int kit_call, kit_serve;   /* given to the kit */
    int peer_call, peer_serve; /* the hostile side: writes requests / reads requests */
    OHIPCRemoteStub *root;
    OHIPCRemoteProxy *peer_root;
} link_t;

/* A kit connection with a raw peer that has greeted it (with a root, so the kit has a
 * proxy to call). */
static int open_link(link_t *l) {
    int a[2], b[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, a) < 0) return -1;
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, b) < 0) return -1;
    l->kit_call = a[0];
    l->peer_serve = a[1];
    l->kit_serve = b[0];
    l->peer_call = b[1];
    int on = 1;
    setsockopt(l->kit_serve, SOL_SOCKET, SO_PASSCRED, &on, sizeof on);
    unsigned char hello[12];
    ck__frame_put_hello(hello, 1);
    send(l->peer_call, hello, sizeof hello, MSG_NOSIGNAL);
    l->root = OH_IPCRemoteStub_Create("hostile.IRoot", root_request, NULL, NULL);
    char err[160];
    if (childkit_ipc_connect(l->kit_call, l->kit_serve, l->root, 10000, &l->peer_root, err,
                             sizeof err) != 0) {
        fprintf(stderr, "connect: %s\n", err);
        return -1;
    }
    /* the kit's own HELLO arrives on peer_serve: take it */
    unsigned char buf[64];
    recv(l->peer_serve, buf, sizeof buf, 0);
    return 0;
}

static void close_link(link_t *l) {
    OH_IPCRemoteProxy_Destroy(l->peer_root);
    OH_IPCRemoteStub_Destroy(l->root);
    close(l->peer_call);
    close(l->peer_serve);
}

static const char *serve_way(const unsigned char *rec, size_t len, size_t n_fds) {
    link_t l;
    if (open_link(&l) < 0) return "setup-failed";
    if (send_with_fds(l.peer_call, rec, len, n_fds) < 0) {
        close_link(&l);
        return "unsent";
    }
    /* then a ping: an open link answers it, a closed one ends instead */
    unsigned char ping[CK__TXN_FRAME_SIZE];
    ck__frame_put_txn_head(ping, PING_SEQ, 0, CK__PING_TRANSACTION, 0, 0, 0, 0);
    send(l.peer_call, ping, sizeof ping, MSG_NOSIGNAL);
    int answered = ping_answered(l.peer_call);
    close_link(&l);
    return answered == 1 ? "open" : answered == 0 ? "closed" : "hung";
}

typedef struct {
    link_t *l;
    int status;
} call_t;

static void *make_call(void *arg) {
    call_t *c = arg;
    OHIPCParcel *d = OH_IPCParcel_Create(), *r = OH_IPCParcel_Create();
    c->status = OH_IPCRemoteProxy_SendRequest(c->l->peer_root, 1, d, r, NULL);
    OH_IPCParcel_Destroy(d);
    OH_IPCParcel_Destroy(r);
    return NULL;
}

static int reply_way(const unsigned char *rec, size_t len, size_t n_fds) {
    link_t l;
    if (open_link(&l) < 0) return -1;
    call_t c = {&l, -1};
    pthread_t t;
    pthread_create(&t, NULL, make_call, &c);
    unsigned char buf[512]; /* the kit's request (seq 1) */
    recv(l.peer_serve, buf, sizeof buf, 0);
    send_with_fds(l.peer_serve, rec, len, n_fds);
    shutdown(l.peer_serve, SHUT_WR); /* a record that was not a reply to seq 1: EOF follows */
    pthread_join(t, NULL);
    close_link(&l);
    return c.status;
}

static unsigned char *unhex(const char *hex, size_t *len) {
    size_t n = strlen(hex) / 2;
    unsigned char *out = malloc(n + 1);
    for (size_t i = 0; i < n; i++) sscanf(hex + 2 * i, "%2hhx", &out[i]);
    *len = n;
    return out;
}

/* "status S...": for each status, the call's outcome when the peer answers it with that
 * status, in a plain reply and in an error reply (a detail text): "<plain> <error>". */
static int statuses(int argc, char **argv) {
    static const char detail[] = "hostile";
    for (int i = 2; i < argc; i++) {
        int32_t status = (int32_t)strtol(argv[i], NULL, 10);
        unsigned char plain[CK__REPLY_FRAME_SIZE], error[CK__REPLY_FRAME_SIZE + sizeof detail];
        ck__frame_put_reply_head(plain, 0, 1, status, 0, 0, 0);
        ck__frame_put_reply_head(error, CK__FLAG_ERROR, 1, status, sizeof detail - 1, 0, 0);
        memcpy(error + CK__REPLY_FRAME_SIZE, detail, sizeof detail - 1);
        int a = reply_way(plain, sizeof plain, 0);
        int b = reply_way(error, CK__REPLY_FRAME_SIZE + sizeof detail - 1, 0);
        printf("%d %d\n", a, b);
    }
    return 0;
}

/* ------------------------------------------------------------------ "objects" mode */
/* A stub whose first request waits until `open` (requests queued behind it keep their
 * parcels, and so the remotes their objects made, alive). */
static pthread_mutex_t stuck_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t stuck_cond = PTHREAD_COND_INITIALIZER;
static int stuck_open, stuck_seen;

static int stuck_request(uint32_t code, const OHIPCParcel *data, OHIPCParcel *reply, void *ud) {
    pthread_mutex_lock(&stuck_lock);
    if (stuck_seen++ == 0)
        while (!stuck_open) pthread_cond_wait(&stuck_cond, &stuck_lock);
    pthread_mutex_unlock(&stuck_lock);
    return 0;
}

typedef struct {
    link_t *l;
    OHIPCRemoteStub *stub;
    int times, status;
} export_call_t;

/* The kit calls the peer's root with stub written `times` times. */
static void *export_call(void *arg) {
    export_call_t *c = arg;
    OHIPCParcel *d = OH_IPCParcel_Create(), *r = OH_IPCParcel_Create();
    for (int i = 0; i < c->times; i++) OH_IPCParcel_WriteRemoteStub(d, c->stub);
    c->status = OH_IPCRemoteProxy_SendRequest(c->l->peer_root, 1, d, r, NULL);
    OH_IPCParcel_Destroy(d);
    OH_IPCParcel_Destroy(r);
    return NULL;
}

/* Reads the kit's next request: its seq, and the handle of its first object (0 if none). */
static uint64_t read_request(link_t *l, uint32_t *handle) {
    static unsigned char buf[CK__MAX_RECORD_BYTES];
    for (;;) {
        ssize_t n = recv(l->peer_serve, buf, sizeof buf, 0);
        if (n <= 0) return 0;
        ck__frame_t *frames = NULL;
        char err[160];
        long k = ck__record_decode(buf, (size_t)n, 0, &frames, err, sizeof err);
        for (long i = 0; i < k; i++) {
            if (frames[i].type != CK__F_TRANSACTION) continue;
            uint64_t seq = frames[i].seq;
            *handle = frames[i].n_objects ? ck__get_u32(frames[i].objects + 1) : 0;
            free(frames);
            return seq;
        }
        free(frames);
    }
}

static void reply_to(link_t *l, uint64_t seq) {
    unsigned char rep[CK__REPLY_FRAME_SIZE];
    ck__frame_put_reply_head(rep, 0, seq, 0, 0, 0, 0);
    send(l->peer_serve, rep, sizeof rep, MSG_NOSIGNAL);
}

/* stub exported to the peer `times` times over calls of up to 256 objects: its handle. */
static uint32_t export_to_peer(link_t *l, OHIPCRemoteStub *stub, int times) {
    uint32_t handle = 0;
    for (int done = 0; done < times; done += 256) {
        export_call_t c = {l, stub, times - done < 256 ? times - done : 256, -1};
        pthread_t t;
        pthread_create(&t, NULL, export_call, &c);
        reply_to(l, read_request(l, &handle));
        pthread_join(t, NULL);
    }
    return handle;
}

static int send_releases(link_t *l, uint32_t handle, int n, uint64_t after) {
    unsigned char frame[CK__HEADER_SIZE + CK__RELEASE_BODY];
    ck__frame_put_release(frame, handle, 1, after);
    size_t per = 4096; /* 96 KiB records: within the default socket send buffer */
    unsigned char *rec = malloc(per * sizeof frame);
    for (size_t i = 0; i < per; i++) memcpy(rec + i * sizeof frame, frame, sizeof frame);
    int rc = 0;
    for (int sent = 0; sent < n && rc == 0;) {
        size_t k = (size_t)(n - sent) < per ? (size_t)(n - sent) : per;
        rc = send(l->peer_call, rec, k * sizeof frame, MSG_NOSIGNAL) < 0 ? -1 : 0;
        sent += (int)k;
    }
    free(rec);
    return rc;
}

static const char *link_state(link_t *l) {
    unsigned char ping[CK__TXN_FRAME_SIZE];
    ck__frame_put_txn_head(ping, PING_SEQ, 0, CK__PING_TRANSACTION, 0, 0, 0, 0);
    send(l->peer_call, ping, sizeof ping, MSG_NOSIGNAL);
    int answered = ping_answered(l->peer_call);
    return answered == 1 ? "open" : answered == 0 ? "closed" : "hung";
}

/* Releases waiting for a reply: `held` references exported, `waiting` releases of one
 * each sent while a call is in flight, then one more. Prints "<state after waiting>
 * <state after one more> <the call's status>". */
static void deferred_case(int held, int waiting) {
    link_t l;
    if (open_link(&l) < 0) return;
    OHIPCRemoteStub *marker = OH_IPCRemoteStub_Create("hostile.IMarker", root_request, NULL, NULL);
    uint32_t handle = export_to_peer(&l, marker, held);
    call_t c = {&l, -1};
    pthread_t t;
    pthread_create(&t, NULL, make_call, &c);
    uint32_t none;
    uint64_t seq = read_request(&l, &none); /* in flight: the releases wait for its reply */
    send_releases(&l, handle, waiting, seq);
    const char *edge = link_state(&l);
    send_releases(&l, handle, 1, seq);
    const char *past = link_state(&l);
    reply_to(&l, seq);
    pthread_join(t, NULL);
    printf("%s %s %d\n", edge, past, c.status);
    close_link(&l);
    OH_IPCRemoteStub_Destroy(marker);
}

/* One-way requests naming `live` made-up objects to a stuck stub, then one more object.
 * Prints "<state at live> <state one past>". */
static void imports_case(int live) {
    link_t l;
    if (open_link(&l) < 0) return;
    OHIPCRemoteStub *stuck = OH_IPCRemoteStub_Create("hostile.IStuck", stuck_request, NULL, NULL);
    uint32_t target = export_to_peer(&l, stuck, 1);
    unsigned char frame[CK__TXN_FRAME_SIZE + 256 * CK__OBJ_SIZE];
    uint32_t next = 1000;
    const char *states[2];
    for (int phase = 0; phase < 2; phase++) {
        for (int left = phase ? 1 : live; left > 0;) {
            int k = left < 256 ? left : 256;
            ck__frame_put_txn_head(frame, 0, target, 1, 1, 0, (uint16_t)k, 0);
            for (int i = 0; i < k; i++)
                ck__frame_put_object(frame + CK__TXN_FRAME_SIZE + i * CK__OBJ_SIZE,
                                     CK__OBJ_SENDER_STUB, next++);
            send(l.peer_call, frame, CK__TXN_FRAME_SIZE + (size_t)k * CK__OBJ_SIZE,
                 MSG_NOSIGNAL);
            left -= k;
        }
        states[phase] = link_state(&l);
    }
    printf("%s %s\n", states[0], states[1]);
    pthread_mutex_lock(&stuck_lock);
    stuck_open = 1;
    pthread_cond_broadcast(&stuck_cond);
    pthread_mutex_unlock(&stuck_lock);
    close_link(&l);
    OH_IPCRemoteStub_Destroy(stuck);
}

/* "objects": the bounds on what a peer's references and releases make this side hold. */
static int objects(void) {
    int before = count_fds();
    deferred_case(300, 300);     /* all it holds may wait; one more is refused at once */
    deferred_case(16640, 16384); /* the bound on waiting releases: at it, one past */
    imports_case(65535);         /* the bound on live remotes (the root's counts): at it,
                                  * one past */
    int after = 0;
    for (int tries = 0; tries < 1000 && (after = count_fds()) != before; tries++) usleep(10000);
    if (after != before) printf("fds leaked: %d before, %d after\n", before, after);
    return after != before;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    if (argc > 1 && strcmp(argv[1], "status") == 0) return statuses(argc, argv);
    if (argc > 1 && strcmp(argv[1], "objects") == 0) return objects();
    int fuzz = argc > 1 ? atoi(argv[1]) : 0;
    int before = count_fds();
    static char line[600000];
    unsigned char *recs[256];
    size_t lens[256], fds[256], n = 0;
    while (n < 256 && fgets(line, sizeof line, stdin) != NULL) {
        char *space = strchr(line, ' ');
        if (space == NULL) continue;
        *space = '\0';
        recs[n] = unhex(line, &lens[n]);
        fds[n] = (size_t)atoi(space + 1);
        if (fds[n] > CK__MAX_RECORD_FDS) fds[n] = CK__MAX_RECORD_FDS; /* the kernel's cap */
        printf("%s %d\n", serve_way(recs[n], lens[n], fds[n]), reply_way(recs[n], lens[n], fds[n]));
        fflush(stdout);
        n++;
    }
    unsigned seed = 12345;
    for (int i = 0; i < fuzz && n > 0; i++) {
        size_t k = (size_t)rand_r(&seed) % n;
        size_t len = lens[k] > 64 ? 64 : lens[k]; /* mutate the heads, where the lengths are */
        unsigned char *m = malloc(lens[k] + 1);
        memcpy(m, recs[k], lens[k]);
        for (int f = rand_r(&seed) % 4 + 1; f > 0 && len > 0; f--)
            m[(size_t)rand_r(&seed) % len] = (unsigned char)rand_r(&seed);
        size_t mlen = lens[k];
        if (rand_r(&seed) % 4 == 0 && mlen > 0) mlen -= (size_t)rand_r(&seed) % mlen;
        serve_way(m, mlen, (size_t)rand_r(&seed) % 3);
        free(m);
    }
    if (fuzz) printf("fuzz %d\n", fuzz);
    for (size_t i = 0; i < n; i++) free(recs[i]);
    /* every link ended; its reader threads close the kit's sockets as they finish */
    int after = 0;
    for (int tries = 0; tries < 1000 && (after = count_fds()) != before; tries++) usleep(10000);
    if (after != before) printf("fds leaked: %d before, %d after\n", before, after);
    return after != before;
}
