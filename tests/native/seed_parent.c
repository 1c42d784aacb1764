/*
 * The seed article's main process (section II, 2.2.3, and section III), completed: a C
 * parent linked with libipc_capi.so and libchild_process.so. tests/native/
 * test_c_parent.py builds and runs it:
 *
 *   seed_parent LIBCHILD PYENTRY ARGSLIB
 *
 * LIBCHILD: the seed's C child library (seed_child.c); PYENTRY: a Python IPC entry
 * (py_seed_worker); ARGSLIB: the args-mode child library (child_main.c). Prints
 * "FAIL <line>: <what>" per failed check and "N failures"; exit status = failures.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <AbilityKit/native_child_process.h>
#include <IPCKit/ipc_kit.h>

static int failures;
#define CHECK(cond)                                          \
    do {                                                     \
        if (!(cond)) {                                       \
            printf("FAIL %d: %s\n", __LINE__, #cond);        \
            fflush(stdout);                                  \
            failures++;                                      \
        }                                                    \
    } while (0)

enum { ADD_ONE = 1, CALL_BACK = 2, EXIT = 6, PID = 12 };

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int started_count, exit_count, last_signal;
static int started_code;
static OHIPCRemoteProxy *started_proxy;
static int32_t exited_pids[16];
static int exited_signals[16];

/* The seed's callback: runs on a thread of the library's, once per create. */
static void OnNativeChildProcessStarted(int errCode, OHIPCRemoteProxy *remoteProxy)
{
    pthread_mutex_lock(&mu);
    started_code = errCode;
    started_proxy = remoteProxy; /* saved for the IPC calls below */
    started_count++;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static void OnExit(int32_t pid, int32_t signal)
{
    pthread_mutex_lock(&mu);
    if (exit_count < 16) {
        exited_pids[exit_count] = pid;
        exited_signals[exit_count] = signal;
    }
    exit_count++;
    last_signal = signal;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static void OtherExit(int32_t pid, int32_t signal) {}

static int wait_count(int *counter, int want) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 60;
    pthread_mutex_lock(&mu);
    while (*counter < want)
        if (pthread_cond_timedwait(&cv, &mu, &deadline) == ETIMEDOUT) break;
    int ok = *counter >= want;
    pthread_mutex_unlock(&mu);
    return ok;
}

static int exited(int32_t pid, int *signal) {
    pthread_mutex_lock(&mu);
    int found = 0;
    for (int i = 0; i < exit_count && i < 16; i++)
        if (exited_pids[i] == pid) {
            found = 1;
            *signal = exited_signals[i];
        }
    pthread_mutex_unlock(&mu);
    return found;
}

static int add_one_stub(uint32_t code, const OHIPCParcel *data, OHIPCParcel *reply, void *ud) {
    int32_t x;
    if (OH_IPCParcel_ReadInt32(data, &x) != OH_IPC_SUCCESS) return 1909001;
    return OH_IPCParcel_WriteInt32(reply, x + 1);
}

static int32_t add_one(OHIPCRemoteProxy *proxy, int32_t x) {
    OHIPCParcel *d = OH_IPCParcel_Create(), *r = OH_IPCParcel_Create();
    int32_t out = -1;
    OH_IPCParcel_WriteInt32(d, x);
    if (OH_IPCRemoteProxy_SendRequest(proxy, ADD_ONE, d, r, NULL) == OH_IPC_SUCCESS)
        OH_IPCParcel_ReadInt32(r, &out);
    OH_IPCParcel_Destroy(d);
    OH_IPCParcel_Destroy(r);
    return out;
}

static void ask_exit(OHIPCRemoteProxy *proxy) {
    OHIPCParcel *d = OH_IPCParcel_Create();
    OH_IPC_MessageOption async = {OH_IPC_REQUEST_MODE_ASYNC, 0, NULL};
    CHECK(OH_IPCRemoteProxy_SendRequest(proxy, EXIT, d, NULL, &async) == OH_IPC_SUCCESS);
    OH_IPCParcel_Destroy(d);
}

/* Creates an IPC child and waits for its callback; returns its proxy (or NULL). */
/* CALL_BACK on child with a stub or a proxy (of another child) to call ADD_ONE(41) on:
 * what the child got, or -1. */
static int32_t call_back(OHIPCRemoteProxy *child, OHIPCRemoteStub *stub, OHIPCRemoteProxy *other) {
    OHIPCParcel *d = OH_IPCParcel_Create(), *r = OH_IPCParcel_Create();
    int32_t got = -1;
    int rc = stub != NULL ? OH_IPCParcel_WriteRemoteStub(d, stub)
                          : OH_IPCParcel_WriteRemoteProxy(d, other);
    if (rc == OH_IPC_SUCCESS && OH_IPCRemoteProxy_SendRequest(child, CALL_BACK, d, r, NULL) == 0)
        OH_IPCParcel_ReadInt32(r, &got);
    OH_IPCParcel_Destroy(d);
    OH_IPCParcel_Destroy(r);
    return got;
}

static OHIPCRemoteProxy *create(const char *entry, Ability_ChildProcessConfigs *configs) {
    pthread_mutex_lock(&mu);
    int before = started_count;
    pthread_mutex_unlock(&mu);
    int32_t ret;
    if (configs != NULL)
        ret = (int32_t)OH_Ability_CreateNativeChildProcessWithConfigs(entry, configs,
                                                                      OnNativeChildProcessStarted);
    else
        ret = OH_Ability_CreateNativeChildProcess(entry, OnNativeChildProcessStarted);
    CHECK(ret == NCP_NO_ERROR);
    if (ret != NCP_NO_ERROR) return NULL;
    CHECK(wait_count(&started_count, before + 1));
    CHECK(started_code == NCP_NO_ERROR && started_proxy != NULL);
    return started_code == NCP_NO_ERROR ? started_proxy : NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) return 100;
    const char *c_child = argv[1], *py_child = argv[2], *args_lib = argv[3];

    CHECK(OH_Ability_IsNativeChildProcessSupported());
    CHECK(OH_Ability_GetCurrentChildProcessArgs() == NULL); /* not a child */

    /* argument checks: errors come back at once, and never reach a callback */
    CHECK(OH_Ability_CreateNativeChildProcess(NULL, OnNativeChildProcessStarted) ==
          NCP_ERR_INVALID_PARAM);
    CHECK(OH_Ability_CreateNativeChildProcess(c_child, NULL) == NCP_ERR_INVALID_PARAM);
    CHECK(OH_Ability_CreateNativeChildProcess("bad entry:x", OnNativeChildProcessStarted) ==
          NCP_ERR_INVALID_PARAM);
    CHECK(OH_Ability_CreateNativeChildProcessWithConfigs(c_child, NULL,
                                                         OnNativeChildProcessStarted) ==
          NCP_ERR_INVALID_PARAM);
    CHECK(OH_Ability_DestroyChildProcessConfigs(NULL) == NCP_ERR_INVALID_PARAM);
    Ability_ChildProcessConfigs *configs = OH_Ability_CreateChildProcessConfigs();
    CHECK(configs != NULL);
    CHECK(OH_Ability_ChildProcessConfigs_SetIsolationMode(NULL, NCP_ISOLATION_MODE_NORMAL) ==
          NCP_ERR_INVALID_PARAM);
    CHECK(OH_Ability_ChildProcessConfigs_SetIsolationMode(
              configs, (NativeChildProcess_IsolationMode)7) == NCP_ERR_INVALID_PARAM);
    CHECK(OH_Ability_ChildProcessConfigs_SetIsolationMode(configs, NCP_ISOLATION_MODE_NORMAL) ==
          NCP_NO_ERROR);
    CHECK(OH_Ability_ChildProcessConfigs_SetIsolationUid(NULL, false) == NCP_ERR_INVALID_PARAM);
    CHECK(OH_Ability_ChildProcessConfigs_SetIsolationUid(configs, false) == NCP_NO_ERROR);
    CHECK(OH_Ability_ChildProcessConfigs_SetProcessName(configs, NULL) == NCP_ERR_INVALID_PARAM);
    CHECK(OH_Ability_ChildProcessConfigs_SetProcessName(configs, "") == NCP_ERR_INVALID_PARAM);
    CHECK(OH_Ability_ChildProcessConfigs_SetProcessName(configs, "bad name") ==
          NCP_ERR_INVALID_PARAM);
    char longest[66];
    memset(longest, 'a', 65);
    longest[65] = '\0';
    CHECK(OH_Ability_ChildProcessConfigs_SetProcessName(configs, longest) ==
          NCP_ERR_INVALID_PARAM);
    longest[64] = '\0';
    CHECK(OH_Ability_ChildProcessConfigs_SetProcessName(configs, longest) == NCP_NO_ERROR);
    CHECK(OH_Ability_ChildProcessConfigs_SetProcessName(configs, "seed_c_child") == NCP_NO_ERROR);
    CHECK(OH_Ability_RegisterNativeChildProcessExitCallback(NULL) == NCP_ERR_INVALID_PARAM);
    CHECK(OH_Ability_UnregisterNativeChildProcessExitCallback(NULL) == NCP_ERR_INVALID_PARAM);
    CHECK(OH_Ability_UnregisterNativeChildProcessExitCallback(OtherExit) ==
          NCP_ERR_CALLBACK_NOT_EXIST);
    CHECK(OH_Ability_RegisterNativeChildProcessExitCallback(OnExit) == NCP_NO_ERROR);
    CHECK(OH_Ability_RegisterNativeChildProcessExitCallback(OtherExit) == NCP_NO_ERROR);
    CHECK(OH_Ability_UnregisterNativeChildProcessExitCallback(OtherExit) == NCP_NO_ERROR);
    CHECK(OH_Ability_KillChildProcess(-1) == NCP_ERR_INVALID_PID);
    CHECK(OH_Ability_KillChildProcess(1) == NCP_ERR_INVALID_PID);

    /* a missing library is reported to the callback */
    CHECK(OH_Ability_CreateNativeChildProcess("libchildkit-not-there.so",
                                              OnNativeChildProcessStarted) == NCP_NO_ERROR);
    CHECK(wait_count(&started_count, 1));
    CHECK(started_code == NCP_ERR_LIB_LOADING_FAILED && started_proxy == NULL);

    /* the seed's C child, with configs */
    int exits = 0;
    OHIPCRemoteProxy *c = create(c_child, configs);
    CHECK(OH_Ability_DestroyChildProcessConfigs(configs) == NCP_NO_ERROR);
    if (c != NULL) {
        CHECK(add_one(c, 5) == 6);
        OHIPCParcel *d = OH_IPCParcel_Create(), *r = OH_IPCParcel_Create();
        uint64_t calling = 0;
        CHECK(OH_IPCRemoteProxy_SendRequest(c, PID, d, r, NULL) == OH_IPC_SUCCESS);
        CHECK(OH_IPCParcel_ReadUint64(r, &calling) == 0 && calling == (uint64_t)getpid());
        OH_IPCParcel_Destroy(d);
        OH_IPCParcel_Destroy(r);
        OHIPCRemoteStub *stub = OH_IPCRemoteStub_Create("seed.IAddOne", add_one_stub, NULL, NULL);
        CHECK(call_back(c, stub, NULL) == 42);
        OH_IPCRemoteStub_Destroy(stub);
    }

    /* a Python child, same calls */
    OHIPCRemoteProxy *py = create(py_child, NULL);
    if (py != NULL) CHECK(add_one(py, 5) == 1005);

    /* each child gets a proxy of the other: this process forwards their calls (C to
     * Python through C, Python to C through C) */
    if (c != NULL && py != NULL) {
        CHECK(call_back(c, NULL, py) == 1041);
        CHECK(call_back(py, NULL, c) == 42);
    }
    for (int k = 0; k < 2; k++) {
        OHIPCRemoteProxy *child = k == 0 ? c : py;
        if (child == NULL) continue;
        ask_exit(child);
        CHECK(wait_count(&exit_count, ++exits));
        OH_IPCRemoteProxy_Destroy(child); /* the seed's 2.3: release IPC objects after use */
    }

    /* the C child isolated (the sandbox of docs/sandbox.md): the C kit serves there too,
     * callbacks into this process included */
    Ability_ChildProcessConfigs *isolated = OH_Ability_CreateChildProcessConfigs();
    CHECK(OH_Ability_ChildProcessConfigs_SetIsolationMode(isolated, NCP_ISOLATION_MODE_ISOLATED) ==
          NCP_NO_ERROR);
    OHIPCRemoteProxy *iso = create(c_child, isolated);
    OH_Ability_DestroyChildProcessConfigs(isolated);
    if (iso != NULL) {
        CHECK(add_one(iso, 7) == 8);
        /* in its own pid namespace: this process is not visible there (calling pid 0) */
        OHIPCParcel *d = OH_IPCParcel_Create(), *r = OH_IPCParcel_Create();
        uint64_t calling = 1, self = 0;
        CHECK(OH_IPCRemoteProxy_SendRequest(iso, PID, d, r, NULL) == OH_IPC_SUCCESS);
        CHECK(OH_IPCParcel_ReadUint64(r, &calling) == 0 && OH_IPCParcel_ReadUint64(r, &self) == 0);
        CHECK(calling == 0);
        OH_IPCParcel_Destroy(d);
        OH_IPCParcel_Destroy(r);
        OHIPCRemoteStub *stub = OH_IPCRemoteStub_Create("seed.IAddOne", add_one_stub, NULL, NULL);
        CHECK(call_back(iso, stub, NULL) == 42);
        OH_IPCRemoteStub_Destroy(stub);
        ask_exit(iso);
        CHECK(wait_count(&exit_count, ++exits));
        OH_IPCRemoteProxy_Destroy(iso);
    }

    /* args mode (section III): the seed's Main writes through the fd it was given */
    int fds[2];
    CHECK(pipe(fds) == 0);
    NativeChildProcess_Fd fd_node = {"out", fds[1], NULL};
    NativeChildProcess_Args args = {"hello from C", {&fd_node}};
    NativeChildProcess_Options options = {NCP_ISOLATION_MODE_NORMAL, 0};
    int32_t pid = 0;
    char entry[4200];
    snprintf(entry, sizeof entry, "%s:Main", args_lib);
    CHECK(OH_Ability_StartNativeChildProcess(entry, args, options, &pid) == NCP_NO_ERROR);
    CHECK(pid > 0);
    close(fds[1]);
    char line[256] = {0};
    ssize_t n = read(fds[0], line, sizeof line - 1);
    CHECK(n > 0 && strcmp(line, "params=hello from C;fd=out\n") == 0);
    close(fds[0]);
    CHECK(wait_count(&exit_count, ++exits));
    int sig = -1;
    CHECK(exited(pid, &sig) && sig == 0);
    CHECK(OH_Ability_KillChildProcess(pid) == NCP_ERR_INVALID_PID); /* already gone */
    snprintf(entry, sizeof entry, "%s:NoSuchFunction", args_lib);
    NativeChildProcess_Args no_fds = {"", {NULL}};
    /* as OpenHarmony: a child whose function does not load is started, and ends */
    CHECK(OH_Ability_StartNativeChildProcess(entry, no_fds, options, &pid) == NCP_NO_ERROR);
    CHECK(pid > 0 && wait_count(&exit_count, ++exits) && exited(pid, &sig));
    CHECK(OH_Ability_StartNativeChildProcess(entry, args, options, &pid) ==
          NCP_ERR_INVALID_PARAM); /* its fd is closed now */
    NativeChildProcess_Options bad_options = {(NativeChildProcess_IsolationMode)3, 0};
    CHECK(OH_Ability_StartNativeChildProcess(entry, args, bad_options, &pid) ==
          NCP_ERR_INVALID_PARAM);
    CHECK(OH_Ability_StartNativeChildProcess(entry, args, options, NULL) == NCP_ERR_INVALID_PARAM);

    /* kill: a Python args child that blocks until killed; its exit says SIGKILL */
    CHECK(pipe(fds) == 0);
    NativeChildProcess_Fd r_node = {"r", fds[0], NULL};
    NativeChildProcess_Args block_args = {"", {&r_node}};
    Ability_ChildProcessConfigs *named = OH_Ability_CreateChildProcessConfigs();
    CHECK(OH_Ability_StartNativeChildProcessWithConfigs("py_seed_worker:block", block_args,
                                                        named, &pid) == NCP_NO_ERROR);
    OH_Ability_DestroyChildProcessConfigs(named);
    close(fds[0]);
    CHECK(OH_Ability_KillChildProcess(pid) == NCP_NO_ERROR);
    CHECK(wait_count(&exit_count, ++exits));
    CHECK(exited(pid, &sig) && sig == 9);
    close(fds[1]);

    CHECK(OH_Ability_UnregisterNativeChildProcessExitCallback(OnExit) == NCP_NO_ERROR);
    printf("%d failures\n", failures);
    return failures;
}
