/*
 * libchild_process.so: AbilityKit's native child process API for C parents.
 *
 * How it reaches childkit's launcher: on the first call that needs it, it starts an agent,
 * `PYTHON -m childkit.native._agent FD` (PYTHON: $CHILDKIT_PYTHON, else the interpreter
 * childkit was built with, CK_PYTHON), on one end of a SOCK_SEQPACKET socketpair. The
 * agent's childkit manager starts the launcher, keeps the 50-child limit, reaps children
 * and reports their exits; for an IPC-mode child it passes the parent's ends of the
 * child's two sockets here, and libipc_capi.so talks to the child directly. The agent dies
 * with this process (parent-death signal), and the launcher and children die with it.
 *
 * Threads: one reader thread takes the agent's answers: it wakes the caller waiting for
 * one, calls exit callbacks (on that thread, never the caller's), and for each started
 * IPC child starts a thread that connects and calls OH_Ability_OnNativeChildProcessStarted
 * exactly once. An entry point that returns an error never calls its callback.
 *
 * Ownership: configs belong to their creator (OH_Ability_DestroyChildProcessConfigs); the
 * proxy handed to a start callback belongs to the callee (OH_IPCRemoteProxy_Destroy); the
 * args of OH_Ability_GetCurrentChildProcessArgs belong to the library.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "AbilityKit/native_child_process.h"
#include "IPCKit/ipc_error_code.h"
#include "ck_internal.h"

#define CK__EXPORT __attribute__((visibility("default")))
#define CK__CONNECT_MS 30000 /* the child greets within the start's own time limit */
#define CK__ANSWER_MS 60000

#ifndef CK_PYTHON
#define CK_PYTHON "python3"
#endif

extern char **environ;

struct Ability_ChildProcessConfigs {
    NativeChildProcess_IsolationMode isolation_mode;
    bool isolation_uid;
    char name[65];
};

/* A request waiting for the agent's answer. */
typedef struct pending_s {
    long id;
    int done, code, pid;
    int fds[2];
    size_t n_fds;
    char message[256];
    OH_Ability_OnNativeChildProcessStarted on_started; /* ipc: the final answer's callback */
    int accepted;                                     /* ipc: the checks passed */
    int waiting;  /* its caller still waits on it: the caller frees it */
    int released; /* taken out of the list by its final answer while the caller waits */
    struct pending_s *next;
} pending_t;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t answered = PTHREAD_COND_INITIALIZER;
static int agent_fd = -1;     /* guarded */
static pid_t agent_pid;       /* guarded */
static long next_id = 1;      /* guarded */
static pending_t *pendings;   /* guarded */
/* A list without a limit, as OpenHarmony's (guarded; it only grows) */
static OH_Ability_OnNativeChildProcessExit *exit_callbacks;
static size_t n_exit_callbacks, cap_exit_callbacks;
static NativeChildProcess_Args *current_args; /* set by childkit's launcher in a child */
static volatile int in_child; /* set by childkit's launcher in an IPC-mode child */

/* Whether the environment says this very process is childkit's launcher or a child of it
 * ("child:PID" or "launcher:PID", written by childkit.common._role): a Python-entry child
 * that loads C code calling this library. A marker naming another pid was inherited by a
 * program a child ran, which is no child of childkit's. */
static int role_marked(void) {
    const char *role = getenv("CHILDKIT_ROLE");
    if (role == NULL) return 0;
    const char *colon = strchr(role, ':');
    if (colon == NULL) return 0;
    char *end = NULL;
    long pid = strtol(colon + 1, &end, 10);
    return end != colon + 1 && *end == '\0' && pid == (long)getpid();
}

/* A child of childkit's launcher may not start children (OpenHarmony's
 * NCP_ERR_ALREADY_IN_CHILD, which its appmgr answers any child's start with). */
static int is_child(void) {
    return in_child || current_args != NULL || role_marked();
}

/* ------------------------------------------------------------------ the agent */
typedef struct {
    OH_Ability_OnNativeChildProcessStarted cb;
    int code;
    int fds[2];
} started_t;

/* Connects to a started IPC child and calls its start callback, once. */
static void *finish_start(void *arg) {
    started_t *s = arg;
    OHIPCRemoteProxy *proxy = NULL;
    int code = s->code;
    if (code == NCP_NO_ERROR) {
        char err[160];
        int rc = childkit_ipc_connect(s->fds[0], s->fds[1], NULL, CK__CONNECT_MS, &proxy, err,
                                      sizeof err);
        if (rc != OH_IPC_SUCCESS || proxy == NULL) code = NCP_ERR_CONNECTION_FAILED;
    }
    s->cb(code, proxy);
    free(s);
    return NULL;
}

static void run_detached(void *(*fn)(void *), void *arg) {
    if (ck__thread_start(fn, arg) < 0) fn(arg); /* no thread: still exactly once */
}

/* The agent is gone (guarded): every waiting caller and every start still to come hears
 * NCP_ERR_SERVICE_ERROR, each once. */
static void fail_all_locked(void) {
    for (pending_t **at = &pendings; *at != NULL;) {
        pending_t *p = *at;
        if (p->on_started != NULL && p->accepted && !p->waiting) {
            *at = p->next;
            started_t *st = calloc(1, sizeof *st);
            if (st != NULL) {
                st->cb = p->on_started;
                st->code = NCP_ERR_SERVICE_ERROR;
                run_detached(finish_start, st);
            }
            free(p);
            continue;
        }
        if (!p->done) {
            p->done = 1;
            p->accepted = 1;
            p->code = NCP_ERR_SERVICE_ERROR;
            snprintf(p->message, sizeof p->message, "childkit's agent process ended");
        }
        at = &p->next;
    }
    pthread_cond_broadcast(&answered);
}

/* One answer of the agent (guarded). */
static void take_answer_locked(char *text, const int *fds, size_t n_fds) {
    long id = 0;
    int a = 0, b = 0, used = 0;
    if (sscanf(text, "exit %d %d", &a, &b) == 2) {
        OH_Ability_OnNativeChildProcessExit few[16], *cbs = few;
        size_t n = n_exit_callbacks;
        if (n > 16 && (cbs = malloc(n * sizeof *cbs)) == NULL) {
            cbs = few; /* no memory for a copy: the first 16 still hear of it */
            n = 16;
        }
        if (n) memcpy(cbs, exit_callbacks, n * sizeof *cbs);
        pthread_mutex_unlock(&lock); /* callbacks run outside the lock */
        for (size_t i = 0; i < n; i++) cbs[i](a, b);
        if (cbs != few) free(cbs);
        pthread_mutex_lock(&lock);
        return;
    }
    int ok = sscanf(text, "ok %ld %d", &id, &a) == 2;
    int acc = !ok && sscanf(text, "acc %ld", &id) == 1;
    int err = !ok && !acc && sscanf(text, "err %ld %d %n", &id, &a, &used) == 2;
    pending_t *p = pendings, **at = &pendings;
    while (p != NULL && p->id != id) {
        at = &p->next;
        p = p->next;
    }
    if (p == NULL || !(ok || acc || err)) {
        for (size_t i = 0; i < n_fds; i++) close(fds[i]);
        return;
    }
    if (acc) {
        p->accepted = 1;
        pthread_cond_broadcast(&answered);
        return;
    }
    if (p->on_started != NULL && p->accepted) { /* an accepted start's outcome */
        started_t *s = calloc(1, sizeof *s);
        *at = p->next;
        if (s != NULL) {
            s->cb = p->on_started;
            s->code = ok && n_fds == 2 ? NCP_NO_ERROR : err ? a : NCP_ERR_SERVICE_ERROR;
            s->fds[0] = n_fds == 2 ? fds[0] : -1;
            s->fds[1] = n_fds == 2 ? fds[1] : -1;
            if (s->code != NCP_NO_ERROR)
                for (size_t i = 0; i < n_fds; i++) close(fds[i]);
            run_detached(finish_start, s);
        } else {
            for (size_t i = 0; i < n_fds; i++) close(fds[i]);
        }
        if (p->waiting) p->released = 1; /* its caller frees it */
        else free(p);
        return;
    }
    p->done = 1;
    p->accepted = 1;
    p->code = ok ? NCP_NO_ERROR : a;
    p->pid = ok ? a : 0;
    if (err) snprintf(p->message, sizeof p->message, "%s", text + used);
    for (size_t i = 0; i < n_fds; i++) close(fds[i]); /* sync answers carry none */
    pthread_cond_broadcast(&answered);
}

static void *read_agent(void *arg) {
    int fd = (int)(long)arg;
    static char buf[4096];
    for (;;) {
        char control[CMSG_SPACE(4 * sizeof(int))];
        struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf - 1};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                             .msg_controllen = sizeof control};
        ssize_t n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR) continue;
        int fds[4];
        size_t n_fds = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                for (size_t i = 0; i < k && n_fds < 4; i++)
                    memcpy(&fds[n_fds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            }
        }
        if (n <= 0) {
            for (size_t i = 0; i < n_fds; i++) close(fds[i]);
            break;
        }
        buf[n] = '\0';
        pthread_mutex_lock(&lock);
        take_answer_locked(buf, fds, n_fds);
        pthread_mutex_unlock(&lock);
    }
    pthread_mutex_lock(&lock); /* the agent is gone: a later call starts a new one */
    if (agent_fd == fd) {
        close(agent_fd);
        agent_fd = -1;
        waitpid(agent_pid, NULL, 0);
    }
    fail_all_locked();
    pthread_mutex_unlock(&lock);
    return NULL;
}

/* Starts the agent if it is not running (guarded). 0, or -1. */
static int ensure_agent_locked(void) {
    if (agent_fd >= 0) return 0;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) return -1;
    const char *python = getenv("CHILDKIT_PYTHON");
    if (python == NULL || python[0] == '\0') python = CK_PYTHON;
    char fd_arg[16];
    snprintf(fd_arg, sizeof fd_arg, "%d", 3);
    char *argv[] = {(char *)python, "-m", "childkit.native._agent", fd_arg, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, sv[1], 3); /* dup2 clears close-on-exec */
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    /* None of the caller's fds: the agent lives as long as this process, and a pipe's
     * write end it kept would deny the caller its end-of-file (the agent closes them
     * itself too, on older C libraries). */
    posix_spawn_file_actions_addclosefrom_np(&fa, 4);
#endif
    pid_t pid;
    int rc = posix_spawnp(&pid, python, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(sv[1]);
    if (rc != 0) {
        close(sv[0]);
        return -1;
    }
    if (ck__thread_start(read_agent, (void *)(long)sv[0]) < 0) {
        close(sv[0]); /* the agent reads EOF and ends */
        waitpid(pid, NULL, 0);
        return -1;
    }
    agent_fd = sv[0];
    agent_pid = pid;
    return 0;
}

/* ------------------------------------------------------------------ requests */
/* Appends s as a JSON string to out (cap bytes); -1 if it does not fit. */
static int json_string(char *out, size_t cap, size_t *len, const char *s) {
    if (*len + 2 >= cap) return -1;
    out[(*len)++] = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        size_t n;
        if (*p == '"' || *p == '\\') n = (size_t)snprintf(esc, sizeof esc, "\\%c", *p);
        else if (*p < 0x20) n = (size_t)snprintf(esc, sizeof esc, "\\u%04x", *p);
        else esc[0] = (char)*p, n = 1;
        if (*len + n + 2 >= cap) return -1;
        memcpy(out + *len, esc, n);
        *len += n;
    }
    out[(*len)++] = '"';
    out[*len] = '\0';
    return 0;
}

/* Sends a request and waits for its first answer (for ipc: accepted, or refused). Returns
 * the NCP code; *pid is set for a finished start. With on_started, the pending entry
 * stays for the final answer when accepted. */
static int request(const char *json_tail, const int *fds, size_t n_fds,
                   OH_Ability_OnNativeChildProcessStarted on_started, int *pid) {
    pending_t *p = calloc(1, sizeof *p);
    char *buf = malloc(CK__MAX_PARCEL_DATA + 4096);
    if (p == NULL || buf == NULL) {
        free(p);
        free(buf);
        return NCP_ERR_INTERNAL;
    }
    pthread_mutex_lock(&lock);
    if (ensure_agent_locked() < 0) {
        pthread_mutex_unlock(&lock);
        free(p);
        free(buf);
        return NCP_ERR_SERVICE_ERROR;
    }
    p->id = next_id++;
    p->on_started = on_started;
    p->waiting = 1;
    p->next = pendings;
    pendings = p;
    int fd = agent_fd;
    pthread_mutex_unlock(&lock);
    int len = snprintf(buf, CK__MAX_PARCEL_DATA + 4096, "{\"id\": %ld, %s}", p->id, json_tail);
    struct iovec iov = {.iov_base = buf, .iov_len = (size_t)len};
    char control[CMSG_SPACE(16 * sizeof(int))];
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
    int sent = sendmsg(fd, &msg, MSG_NOSIGNAL) == len;
    free(buf);
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += CK__ANSWER_MS / 1000;
    pthread_mutex_lock(&lock);
    if (!sent && !p->done) {
        p->done = p->accepted = 1;
        p->code = NCP_ERR_SERVICE_ERROR;
    }
    while (!p->done && !p->accepted)
        if (pthread_cond_timedwait(&answered, &lock, &deadline) == ETIMEDOUT) break;
    int code = p->done || p->accepted ? p->code : NCP_ERR_SERVICE_ERROR;
    if (pid != NULL) *pid = p->pid;
    p->waiting = 0;
    if (p->released) { /* accepted, and its outcome already went to its callback */
        free(p);
        pthread_mutex_unlock(&lock);
        return NCP_NO_ERROR;
    }
    /* Keep the entry only for an accepted start still to come; else forget it. */
    int keep = on_started != NULL && p->accepted && !p->done && code == NCP_NO_ERROR;
    if (!keep) {
        for (pending_t **at = &pendings; *at != NULL; at = &(*at)->next) {
            if (*at == p) {
                *at = p->next;
                break;
            }
        }
        if (!p->done && on_started != NULL && code == NCP_NO_ERROR) code = NCP_ERR_SERVICE_ERROR;
        free(p);
    }
    pthread_mutex_unlock(&lock);
    return code;
}

/* ------------------------------------------------------------------ configs */
CK__EXPORT Ability_ChildProcessConfigs *OH_Ability_CreateChildProcessConfigs(void) {
    return calloc(1, sizeof(Ability_ChildProcessConfigs));
}

CK__EXPORT Ability_NativeChildProcess_ErrCode OH_Ability_DestroyChildProcessConfigs(
    Ability_ChildProcessConfigs *configs) {
    if (configs == NULL) return NCP_ERR_INVALID_PARAM;
    free(configs);
    return NCP_NO_ERROR;
}

CK__EXPORT Ability_NativeChildProcess_ErrCode OH_Ability_ChildProcessConfigs_SetIsolationMode(
    Ability_ChildProcessConfigs *configs, NativeChildProcess_IsolationMode isolationMode) {
    if (configs == NULL || (isolationMode != NCP_ISOLATION_MODE_NORMAL &&
                            isolationMode != NCP_ISOLATION_MODE_ISOLATED))
        return NCP_ERR_INVALID_PARAM;
    configs->isolation_mode = isolationMode;
    return NCP_NO_ERROR;
}

CK__EXPORT Ability_NativeChildProcess_ErrCode OH_Ability_ChildProcessConfigs_SetIsolationUid(
    Ability_ChildProcessConfigs *configs, bool isolationUid) {
    if (configs == NULL) return NCP_ERR_INVALID_PARAM;
    configs->isolation_uid = isolationUid;
    return NCP_NO_ERROR;
}

/* 1..64 ASCII letters, digits and '_' (OpenHarmony's rule, as ChildProcessOptions). */
CK__EXPORT Ability_NativeChildProcess_ErrCode OH_Ability_ChildProcessConfigs_SetProcessName(
    Ability_ChildProcessConfigs *configs, const char *processName) {
    if (configs == NULL || processName == NULL) return NCP_ERR_INVALID_PARAM;
    size_t n = strlen(processName);
    if (n == 0 || n > 64) return NCP_ERR_INVALID_PARAM;
    for (size_t i = 0; i < n; i++) {
        char c = processName[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_'))
            return NCP_ERR_INVALID_PARAM;
    }
    memcpy(configs->name, processName, n + 1);
    return NCP_NO_ERROR;
}

/* The options part of a request: mode, uid, name. */
static int options_json(char *out, size_t cap, const Ability_ChildProcessConfigs *c, int isolated) {
    size_t len = (size_t)snprintf(out, cap, "\"isolated\": %s, \"isolation_uid\": %s, \"name\": ",
                                  isolated ? "true" : "false",
                                  c != NULL && c->isolation_uid ? "true" : "false");
    if (c == NULL || c->name[0] == '\0') {
        len += (size_t)snprintf(out + len, cap - len, "null");
        return 0;
    }
    return json_string(out, cap, &len, c->name);
}

/* ------------------------------------------------------------------ starting children */
static int create(const char *libName, const Ability_ChildProcessConfigs *configs,
                  OH_Ability_OnNativeChildProcessStarted onProcessStarted) {
    if (libName == NULL || libName[0] == '\0' || onProcessStarted == NULL)
        return NCP_ERR_INVALID_PARAM;
    if (strlen(libName) > 4096) return NCP_ERR_INVALID_PARAM;
    /* OpenHarmony refuses a name with "../" in it (a library outside the app's) */
    if (strstr(libName, "../") != NULL) return NCP_ERR_INVALID_PARAM;
    if (is_child()) return NCP_ERR_ALREADY_IN_CHILD;
    char tail[8192], opts[256];
    size_t len = (size_t)snprintf(tail, sizeof tail, "\"op\": \"ipc\", \"entry\": ");
    if (json_string(tail, sizeof tail, &len, libName) < 0 ||
        options_json(opts, sizeof opts, configs,
                     configs != NULL && configs->isolation_mode == NCP_ISOLATION_MODE_ISOLATED) < 0)
        return NCP_ERR_INVALID_PARAM;
    snprintf(tail + len, sizeof tail - len, ", %s", opts);
    return request(tail, NULL, 0, onProcessStarted, NULL);
}

CK__EXPORT int OH_Ability_CreateNativeChildProcess(const char *libName,
                                                   OH_Ability_OnNativeChildProcessStarted onProcessStarted) {
    return create(libName, NULL, onProcessStarted);
}

CK__EXPORT Ability_NativeChildProcess_ErrCode OH_Ability_CreateNativeChildProcessWithConfigs(
    const char *libName, Ability_ChildProcessConfigs *configs,
    OH_Ability_OnNativeChildProcessStarted onProcessStarted) {
    if (configs == NULL) return NCP_ERR_INVALID_PARAM;
    return (Ability_NativeChildProcess_ErrCode)create(libName, configs, onProcessStarted);
}

static Ability_NativeChildProcess_ErrCode start(const char *entry, NativeChildProcess_Args args,
                                                const Ability_ChildProcessConfigs *configs,
                                                int isolated, int32_t *pid) {
    if (entry == NULL || entry[0] == '\0' || pid == NULL || strlen(entry) > 4096)
        return NCP_ERR_INVALID_PARAM;
    size_t cap = CK__MAX_PARCEL_DATA + 4096;
    char *tail = malloc(cap);
    if (tail == NULL) return NCP_ERR_INTERNAL;
    char opts[256];
    int fds[16];
    size_t n_fds = 0;
    size_t len = (size_t)snprintf(tail, cap, "\"op\": \"args\", \"entry\": ");
    int bad = json_string(tail, cap, &len, entry) < 0;
    len += (size_t)snprintf(tail + len, cap - len, ", \"params\": ");
    bad = bad || json_string(tail, cap, &len, args.entryParams ? args.entryParams : "") < 0;
    len += (size_t)snprintf(tail + len, cap - len, ", \"fd_names\": [");
    /* As OpenHarmony, the list becomes a map by name: of two equal names the first
     * counts, and at most 16 distinct names may remain. */
    for (NativeChildProcess_Fd *f = args.fdList.head; f != NULL && !bad; f = f->next) {
        if (f->fdName == NULL) {
            bad = 1;
            break;
        }
        int seen = 0;
        for (NativeChildProcess_Fd *g = args.fdList.head; g != f && !seen; g = g->next)
            seen = strcmp(g->fdName, f->fdName) == 0;
        if (seen) continue;
        if (n_fds == 16 || fcntl(f->fd, F_GETFD) < 0) {
            bad = 1; /* over 16 fds or a closed one: as ChildProcessArgs checks */
            break;
        }
        if (n_fds) len += (size_t)snprintf(tail + len, cap - len, ", ");
        bad = json_string(tail, cap, &len, f->fdName) < 0;
        fds[n_fds++] = f->fd;
    }
    len += (size_t)snprintf(tail + len, cap - len, "], ");
    bad = bad || options_json(opts, sizeof opts, configs, isolated) < 0;
    if (!bad) snprintf(tail + len, cap - len, "%s", opts);
    int out_pid = 0;
    int code = bad          ? NCP_ERR_INVALID_PARAM
               : is_child() ? NCP_ERR_ALREADY_IN_CHILD
                            : request(tail, fds, n_fds, NULL, &out_pid);
    free(tail);
    if (code == NCP_NO_ERROR) *pid = out_pid;
    return (Ability_NativeChildProcess_ErrCode)code;
}

CK__EXPORT Ability_NativeChildProcess_ErrCode OH_Ability_StartNativeChildProcess(
    const char *entry, NativeChildProcess_Args args, NativeChildProcess_Options options,
    int32_t *pid) {
    if (options.isolationMode != NCP_ISOLATION_MODE_NORMAL &&
        options.isolationMode != NCP_ISOLATION_MODE_ISOLATED)
        return NCP_ERR_INVALID_PARAM;
    return start(entry, args, NULL, options.isolationMode == NCP_ISOLATION_MODE_ISOLATED, pid);
}

CK__EXPORT Ability_NativeChildProcess_ErrCode OH_Ability_StartNativeChildProcessWithConfigs(
    const char *entry, NativeChildProcess_Args args, Ability_ChildProcessConfigs *configs,
    int32_t *pid) {
    if (configs == NULL) return NCP_ERR_INVALID_PARAM;
    return start(entry, args, configs, configs->isolation_mode == NCP_ISOLATION_MODE_ISOLATED,
                 pid);
}

/* ------------------------------------------------------------------ the child's side */
/* childkit's launcher calls this (exported, private) before a native args-mode entry, with
 * args that live as long as the child. */
CK__EXPORT void childkit_set_current_child_process_args(NativeChildProcess_Args *args) {
    current_args = args;
}

/* childkit's launcher calls this (exported, private) in an IPC-mode child before
 * NativeChildProcess_OnConnect(): from then on this process may not start children. */
CK__EXPORT void childkit_set_in_child(void) {
    in_child = 1;
}

CK__EXPORT NativeChildProcess_Args *OH_Ability_GetCurrentChildProcessArgs(void) {
    return current_args;
}

/* ------------------------------------------------------------------ exits and kills */
CK__EXPORT Ability_NativeChildProcess_ErrCode OH_Ability_RegisterNativeChildProcessExitCallback(
    OH_Ability_OnNativeChildProcessExit onProcessExit) {
    if (onProcessExit == NULL) return NCP_ERR_INVALID_PARAM;
    pthread_mutex_lock(&lock);
    int code = NCP_NO_ERROR;
    size_t i = 0;
    while (i < n_exit_callbacks && exit_callbacks[i] != onProcessExit) i++;
    if (i == n_exit_callbacks) { /* registering one twice keeps one */
        if (n_exit_callbacks == cap_exit_callbacks) {
            size_t cap = cap_exit_callbacks ? 2 * cap_exit_callbacks : 8;
            OH_Ability_OnNativeChildProcessExit *grown =
                realloc(exit_callbacks, cap * sizeof *grown);
            if (grown != NULL) {
                exit_callbacks = grown;
                cap_exit_callbacks = cap;
            }
        }
        if (n_exit_callbacks == cap_exit_callbacks) code = NCP_ERR_INTERNAL; /* no memory */
        else exit_callbacks[n_exit_callbacks++] = onProcessExit;
    }
    /* exits are reported by the agent: have one, so that exits are seen */
    if (code == NCP_NO_ERROR && ensure_agent_locked() < 0) code = NCP_ERR_SERVICE_ERROR;
    pthread_mutex_unlock(&lock);
    return (Ability_NativeChildProcess_ErrCode)code;
}

CK__EXPORT Ability_NativeChildProcess_ErrCode OH_Ability_UnregisterNativeChildProcessExitCallback(
    OH_Ability_OnNativeChildProcessExit onProcessExit) {
    if (onProcessExit == NULL) return NCP_ERR_INVALID_PARAM;
    pthread_mutex_lock(&lock);
    int code = NCP_ERR_CALLBACK_NOT_EXIST;
    for (size_t i = 0; i < n_exit_callbacks; i++) {
        if (exit_callbacks[i] == onProcessExit) { /* the others keep their order */
            memmove(&exit_callbacks[i], &exit_callbacks[i + 1],
                    (--n_exit_callbacks - i) * sizeof *exit_callbacks);
            code = NCP_NO_ERROR;
            break;
        }
    }
    pthread_mutex_unlock(&lock);
    return (Ability_NativeChildProcess_ErrCode)code;
}

CK__EXPORT Ability_NativeChildProcess_ErrCode OH_Ability_KillChildProcess(int32_t pid) {
    if (pid <= 0) return NCP_ERR_INVALID_PID;
    char tail[64];
    snprintf(tail, sizeof tail, "\"op\": \"kill\", \"pid\": %d", (int)pid);
    return (Ability_NativeChildProcess_ErrCode)request(tail, NULL, 0, NULL, NULL);
}

/* Whether children can be started from here: not in one of childkit's children (args or
 * IPC mode), and childkit's agent runs (or starts). */
CK__EXPORT bool OH_Ability_IsNativeChildProcessSupported(void) {
    if (is_child()) return false;
    pthread_mutex_lock(&lock);
    int ok = ensure_agent_locked() == 0;
    pthread_mutex_unlock(&lock);
    return ok;
}
