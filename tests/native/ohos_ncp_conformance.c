/*
 * OpenHarmony's own expectations of the native child process C API, asserted against
 * libchild_process.so. Each check names where OpenHarmony states it:
 *   [capi]  ability_ability_runtime test/unittest/child_process_capi_test/child_process_capi_test.cpp
 *   [impl]  ability_ability_runtime frameworks/native/child_process/src/native_child_process.cpp
 *           (and native_child_callback.cpp, child_process_args.cpp: what the C layer checks)
 *   [xts]   xts_acts ability/ability_runtime/capichildprocess (NativeChildProcess,
 *           NativeChildProcessExit, NativeChildProcessWithArgs, *WithConfigs .test.ets)
 * The checks are childkit's own code; OpenHarmony's behaviour is the reference.
 *
 *   ohos_ncp_conformance   (run with LD_LIBRARY_PATH holding libohos_ncp_child.so and
 *                           libohos_ncp_nullstub.so, as the XTS suite names "libentry.so")
 *
 * Prints "FAIL <line>: <what>" per failed check and "N failures"; exit status = failures.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
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

enum { ADD = 1, START = 2, QUIT = 3 };
#define LIB "libohos_ncp_child.so"
#define MAX_CHILDREN 50

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static pthread_t main_thread;
static int started, on_main_thread, last_code;
static OHIPCRemoteProxy *last_proxy;
static int exits, exit_pids[256], exit_signals[256];
static char exit_order[256];

static void OnStarted(int errCode, OHIPCRemoteProxy *proxy) {
    pthread_mutex_lock(&mu);
    on_main_thread += pthread_equal(pthread_self(), main_thread) != 0;
    last_code = errCode;
    last_proxy = proxy;
    started++;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static void record_exit(char who, int32_t pid, int32_t signal) {
    pthread_mutex_lock(&mu);
    on_main_thread += pthread_equal(pthread_self(), main_thread) != 0;
    if (exits < 256) {
        exit_pids[exits] = pid;
        exit_signals[exits] = signal;
        exit_order[exits] = who;
    }
    exits++;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}
static void ExitA(int32_t pid, int32_t signal) { record_exit('a', pid, signal); }
static void ExitB(int32_t pid, int32_t signal) { record_exit('b', pid, signal); }
static void ExitC(int32_t pid, int32_t signal) { record_exit('c', pid, signal); }
static void NeverRegistered(int32_t pid, int32_t signal) {}

/* Seventy distinct exit callbacks: OpenHarmony keeps them in a list without a limit. */
static int many_called;
#define DIGITS(m, t) m(t##0) m(t##1) m(t##2) m(t##3) m(t##4) m(t##5) m(t##6) m(t##7) m(t##8) m(t##9)
#define SEVENTY(m) DIGITS(m, 1) DIGITS(m, 2) DIGITS(m, 3) DIGITS(m, 4) DIGITS(m, 5) DIGITS(m, 6) \
    DIGITS(m, 7)
#define DEFINE_MANY(n)                                  \
    static void Many##n(int32_t pid, int32_t signal) {  \
        pthread_mutex_lock(&mu);                        \
        many_called++;                                  \
        pthread_cond_broadcast(&cv);                    \
        pthread_mutex_unlock(&mu);                      \
    }
#define LIST_MANY(n) Many##n,
SEVENTY(DEFINE_MANY)
static const OH_Ability_OnNativeChildProcessExit many[] = {SEVENTY(LIST_MANY)};

static int wait_count(int *counter, int want) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 120;
    pthread_mutex_lock(&mu);
    while (*counter < want)
        if (pthread_cond_timedwait(&cv, &mu, &deadline) == ETIMEDOUT) break;
    int ok = *counter >= want;
    pthread_mutex_unlock(&mu);
    return ok;
}

static int count(int *counter) {
    pthread_mutex_lock(&mu);
    int n = *counter;
    pthread_mutex_unlock(&mu);
    return n;
}

/* The XTS suite's startNativeChildProcess(): the call's code, or (0) its callback's. */
static int create(const char *lib, OHIPCRemoteProxy **proxy) {
    int before = count(&started);
    int code = OH_Ability_CreateNativeChildProcess(lib, OnStarted);
    if (code != NCP_NO_ERROR) return code;
    if (!wait_count(&started, before + 1)) return -1;
    pthread_mutex_lock(&mu);
    code = last_code;
    if (proxy != NULL) *proxy = last_proxy;
    else if (last_proxy != NULL) OH_IPCRemoteProxy_Destroy(last_proxy);
    pthread_mutex_unlock(&mu);
    return code;
}

static int call(OHIPCRemoteProxy *proxy, uint32_t code, int32_t a, int32_t b, int32_t *out,
                int n_out) {
    OHIPCParcel *d = OH_IPCParcel_Create(), *r = OH_IPCParcel_Create();
    OH_IPCParcel_WriteInt32(d, a);
    OH_IPCParcel_WriteInt32(d, b);
    int rc = OH_IPCRemoteProxy_SendRequest(proxy, code, d, r, NULL);
    for (int i = 0; rc == 0 && i < n_out; i++) rc = OH_IPCParcel_ReadInt32(r, &out[i]);
    OH_IPCParcel_Destroy(d);
    OH_IPCParcel_Destroy(r);
    return rc;
}

/* The signal of pid's exit as the exit callbacks reported it (waits for it), or -1. */
static int exit_signal_of(int32_t pid) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 120;
    pthread_mutex_lock(&mu);
    for (;;) {
        for (int i = 0; i < exits && i < 256; i++) {
            if (exit_pids[i] == pid) {
                int sig = exit_signals[i];
                pthread_mutex_unlock(&mu);
                return sig;
            }
        }
        if (pthread_cond_timedwait(&cv, &mu, &deadline) == ETIMEDOUT) break;
    }
    pthread_mutex_unlock(&mu);
    return -1;
}

/* Quits an IPC child normally and waits for its exit to be reported. */
static void quit(OHIPCRemoteProxy *proxy) {
    int before = count(&exits);
    CHECK(call(proxy, QUIT, 0, 0, NULL, 0) == OH_IPC_SUCCESS);
    CHECK(wait_count(&exits, before + 1));
    OH_IPCRemoteProxy_Destroy(proxy);
}

static void argument_checks(void) {
    NativeChildProcess_Args none = {NULL, {NULL}};
    NativeChildProcess_Options options = {NCP_ISOLATION_MODE_NORMAL, 0};
    int32_t pid = 0;
    /* [capi] CreateNativeChildProcess_001, [xts] 0200, 0500, 1100, 1200 */
    CHECK(OH_Ability_CreateNativeChildProcess(NULL, OnStarted) == NCP_ERR_INVALID_PARAM);
    CHECK(OH_Ability_CreateNativeChildProcess(LIB, NULL) == NCP_ERR_INVALID_PARAM);
    CHECK(OH_Ability_CreateNativeChildProcess(NULL, NULL) == NCP_ERR_INVALID_PARAM);
    CHECK(OH_Ability_CreateNativeChildProcess("", OnStarted) == NCP_ERR_INVALID_PARAM);
    /* [impl] [xts] 0300, WithConfigs_1700: a name with "../" is refused */
    CHECK(OH_Ability_CreateNativeChildProcess("../" LIB, OnStarted) == NCP_ERR_INVALID_PARAM);
    CHECK(OH_Ability_CreateNativeChildProcess("x/../" LIB, OnStarted) == NCP_ERR_INVALID_PARAM);
    Ability_ChildProcessConfigs *configs = OH_Ability_CreateChildProcessConfigs();
    CHECK(configs != NULL);
    CHECK(OH_Ability_CreateNativeChildProcessWithConfigs("../" LIB, configs, OnStarted) ==
          NCP_ERR_INVALID_PARAM);
    /* [capi] CreateNativeChildProcessWithConfigs, [xts] WithConfigs_1800, 1900, 2300 */
    CHECK(OH_Ability_CreateNativeChildProcessWithConfigs(NULL, configs, OnStarted) ==
          NCP_ERR_INVALID_PARAM);
    CHECK(OH_Ability_CreateNativeChildProcessWithConfigs("", configs, OnStarted) ==
          NCP_ERR_INVALID_PARAM);
    CHECK(OH_Ability_CreateNativeChildProcessWithConfigs(LIB, configs, NULL) ==
          NCP_ERR_INVALID_PARAM);
    CHECK(OH_Ability_CreateNativeChildProcessWithConfigs(LIB, NULL, OnStarted) ==
          NCP_ERR_INVALID_PARAM);
    /* [capi] StartNativeChildProcess_001, StartNativeChildProcessWithConfigs_001,
     * [xts] WithConfigs_0900; [impl] an entry needs ':', pid must not be NULL */
    CHECK(OH_Ability_StartNativeChildProcess(NULL, none, options, &pid) == NCP_ERR_INVALID_PARAM);
    CHECK(OH_Ability_StartNativeChildProcessWithConfigs(NULL, none, configs, &pid) ==
          NCP_ERR_INVALID_PARAM);
    CHECK(OH_Ability_StartNativeChildProcessWithConfigs(LIB ":Main", none, NULL, &pid) ==
          NCP_ERR_INVALID_PARAM);
    CHECK(OH_Ability_StartNativeChildProcess(LIB, none, options, &pid) == NCP_ERR_INVALID_PARAM);
    CHECK(OH_Ability_StartNativeChildProcessWithConfigs(LIB, none, configs, &pid) ==
          NCP_ERR_INVALID_PARAM);
    CHECK(OH_Ability_StartNativeChildProcess(LIB ":Main", none, options, NULL) ==
          NCP_ERR_INVALID_PARAM);
    /* [capi] ChildProcessConfigs_SetIsolationMode_001, [xts] WithConfigs_0100 */
    CHECK(OH_Ability_ChildProcessConfigs_SetIsolationMode(configs, NCP_ISOLATION_MODE_ISOLATED) ==
          NCP_NO_ERROR);
    CHECK(OH_Ability_ChildProcessConfigs_SetIsolationMode(NULL, NCP_ISOLATION_MODE_ISOLATED) ==
          NCP_ERR_INVALID_PARAM);
    /* [capi] ChildProcessConfigs_SetProcessName_001, [xts] WithConfigs_0200..0600 */
    CHECK(OH_Ability_ChildProcessConfigs_SetProcessName(configs, NULL) == NCP_ERR_INVALID_PARAM);
    CHECK(OH_Ability_ChildProcessConfigs_SetProcessName(NULL, "") == NCP_ERR_INVALID_PARAM);
    CHECK(OH_Ability_ChildProcessConfigs_SetProcessName(NULL, "abc_123") == NCP_ERR_INVALID_PARAM);
    CHECK(OH_Ability_ChildProcessConfigs_SetProcessName(configs, "") == NCP_ERR_INVALID_PARAM);
    CHECK(OH_Ability_ChildProcessConfigs_SetProcessName(configs, "abc_123") == NCP_NO_ERROR);
    CHECK(OH_Ability_ChildProcessConfigs_SetProcessName(configs, "abc_123[") ==
          NCP_ERR_INVALID_PARAM);
    CHECK(OH_Ability_ChildProcessConfigs_SetProcessName(configs, "abc_123([]") ==
          NCP_ERR_INVALID_PARAM);
    char name[66];
    memset(name, 'K', sizeof name - 1);
    name[65] = '\0'; /* [impl] longer than 64 */
    CHECK(OH_Ability_ChildProcessConfigs_SetProcessName(configs, name) == NCP_ERR_INVALID_PARAM);
    name[64] = '\0';
    CHECK(OH_Ability_ChildProcessConfigs_SetProcessName(configs, name) == NCP_NO_ERROR);
    /* [capi] DestroyChildProcessConfigs, [xts] WithConfigs_0700, 0800 */
    CHECK(OH_Ability_DestroyChildProcessConfigs(configs) == NCP_NO_ERROR);
    CHECK(OH_Ability_DestroyChildProcessConfigs(NULL) == NCP_ERR_INVALID_PARAM);
    /* [capi] Register/UnregisterNativeChildProcessExitCallback_001 */
    CHECK(OH_Ability_RegisterNativeChildProcessExitCallback(NULL) == NCP_ERR_INVALID_PARAM);
    CHECK(OH_Ability_UnregisterNativeChildProcessExitCallback(NULL) == NCP_ERR_INVALID_PARAM);
    CHECK(OH_Ability_UnregisterNativeChildProcessExitCallback(NeverRegistered) ==
          NCP_ERR_CALLBACK_NOT_EXIST);
    /* [capi] GetCurrentChildProcessArgs_001: NULL outside a child */
    CHECK(OH_Ability_GetCurrentChildProcessArgs() == NULL);
    /* [impl] KillChildProcess: not a child of this process */
    CHECK(OH_Ability_KillChildProcess(-1) == NCP_ERR_INVALID_PID);
    CHECK(OH_Ability_KillChildProcess(0) == NCP_ERR_INVALID_PID);
    CHECK(OH_Ability_KillChildProcess(getpid()) == NCP_ERR_INVALID_PID);
    CHECK(OH_Ability_KillChildProcess(1) == NCP_ERR_INVALID_PID);
}

/* [impl] ConvertNativeChildProcessArgs: fd names up to 20 bytes, no NULL name, at most 16
 * fds after the list becomes a map (of two equal names the first counts). */
static void fd_list_checks(void) {
    NativeChildProcess_Options options = {NCP_ISOLATION_MODE_NORMAL, 0};
    NativeChildProcess_Fd nodes[17];
    char names[17][24];
    int fds[2];
    CHECK(pipe(fds) == 0);
    for (int i = 0; i < 17; i++) {
        snprintf(names[i], sizeof names[i], "fd%d", i);
        nodes[i] = (NativeChildProcess_Fd){names[i], fds[1], i < 16 ? &nodes[i + 1] : NULL};
    }
    NativeChildProcess_Args args = {"p", {&nodes[0]}};
    int32_t pid = 0;
    int before = count(&exits);
    CHECK(OH_Ability_StartNativeChildProcess(LIB ":Main", args, options, &pid) ==
          NCP_ERR_INVALID_PARAM); /* 17 names: [xts] FdlistNum17 */
    snprintf(names[16], sizeof names[16], "fd0"); /* 17 nodes, 16 names */
    CHECK(OH_Ability_StartNativeChildProcess(LIB ":Main", args, options, &pid) == NCP_NO_ERROR);
    args.fdList.head = &nodes[1]; /* 16 nodes, 15 names */
    CHECK(OH_Ability_StartNativeChildProcess(LIB ":Main", args, options, &pid) == NCP_NO_ERROR);
    nodes[16].fdName = NULL;
    CHECK(OH_Ability_StartNativeChildProcess(LIB ":Main", args, options, &pid) ==
          NCP_ERR_INVALID_PARAM);
    NativeChildProcess_Fd one = {"abcdefghijklmnopqrstu", fds[1], NULL}; /* 21 */
    args.fdList.head = &one;
    CHECK(OH_Ability_StartNativeChildProcess(LIB ":Main", args, options, &pid) ==
          NCP_ERR_INVALID_PARAM);
    one.fdName = "abcdefghijklmnopqrst"; /* 20 */
    CHECK(OH_Ability_StartNativeChildProcess(LIB ":Main", args, options, &pid) == NCP_NO_ERROR);
    close(fds[1]);
    /* the three children wrote through the first fd in the list: fd1, fd1, the 20 */
    char got[256] = {0};
    size_t len = 0;
    ssize_t n;
    while (len < sizeof got - 1 && (n = read(fds[0], got + len, sizeof got - 1 - len)) > 0)
        len += (size_t)n;
    close(fds[0]);
    CHECK(strcmp(got, "SUCC:p:fd0SUCC:p:fd1SUCC:p:abcdefghijklmnopqrst") == 0 ||
          strstr(got, "SUCC:p:abcdefghijklmnopqrst") != NULL);
    CHECK(wait_count(&exits, before + 3));
}

int main(void) {
    main_thread = pthread_self();
    argument_checks();

    /* [xts] NativeChildProcessExit_0100, 0200: registering twice keeps one; unregistering
     * a second time: NCP_ERR_CALLBACK_NOT_EXIST */
    CHECK(OH_Ability_RegisterNativeChildProcessExitCallback(ExitA) == NCP_NO_ERROR);
    CHECK(OH_Ability_RegisterNativeChildProcessExitCallback(ExitA) == NCP_NO_ERROR);
    CHECK(OH_Ability_UnregisterNativeChildProcessExitCallback(ExitA) == NCP_NO_ERROR);
    CHECK(OH_Ability_UnregisterNativeChildProcessExitCallback(ExitA) == NCP_ERR_CALLBACK_NOT_EXIST);
    /* [impl] callbacks are a list: called in registration order, removing one keeps the
     * order of the others */
    CHECK(OH_Ability_RegisterNativeChildProcessExitCallback(ExitA) == NCP_NO_ERROR);
    CHECK(OH_Ability_RegisterNativeChildProcessExitCallback(ExitC) == NCP_NO_ERROR);
    CHECK(OH_Ability_RegisterNativeChildProcessExitCallback(ExitB) == NCP_NO_ERROR);
    CHECK(OH_Ability_RegisterNativeChildProcessExitCallback(ExitA) == NCP_NO_ERROR);
    CHECK(OH_Ability_UnregisterNativeChildProcessExitCallback(ExitC) == NCP_NO_ERROR);

    /* [xts] NativeStartChildProcess_0100: start, call, quit, start again */
    OHIPCRemoteProxy *child = NULL;
    CHECK(create(LIB, &child) == NCP_NO_ERROR && child != NULL);
    int32_t out[3] = {0, 0, 0};
    if (child != NULL) {
        CHECK(call(child, ADD, 3, 4, out, 1) == OH_IPC_SUCCESS && out[0] == 7);
        /* [xts] 0600: a child may not start children (NCP_ERR_ALREADY_IN_CHILD) */
        CHECK(call(child, START, 0, 0, out, 3) == OH_IPC_SUCCESS);
        CHECK(out[0] == NCP_ERR_ALREADY_IN_CHILD && out[1] == NCP_ERR_ALREADY_IN_CHILD &&
              out[2] == 0);
        quit(child);
    }
    child = NULL;
    CHECK(create(LIB, &child) == NCP_NO_ERROR && child != NULL);
    if (child != NULL) {
        /* [xts] NativeChildProcessExit_0400: a crashing child's exit reaches the callbacks
         * with its signal, in order, on a thread that is not the caller's */
        int before = count(&exits);
        CHECK(call(child, QUIT, 1, 0, NULL, 0) == OH_IPC_DEAD_REMOTE_OBJECT);
        CHECK(wait_count(&exits, before + 2));
        pthread_mutex_lock(&mu);
        CHECK(exit_signals[before] == SIGSEGV && exit_signals[before + 1] == SIGSEGV);
        CHECK(exit_pids[before] == exit_pids[before + 1] && exit_pids[before] > 0);
        CHECK(exit_order[before] == 'a' && exit_order[before + 1] == 'b');
        pthread_mutex_unlock(&mu);
        OH_IPCRemoteProxy_Destroy(child);
    }
    CHECK(OH_Ability_UnregisterNativeChildProcessExitCallback(ExitB) == NCP_NO_ERROR);

    /* [capi] CreateNativeChildProcess_001 ("test.so"), [xts] 0400, 0900: a library that
     * does not load reaches the callback as NCP_ERR_LIB_LOADING_FAILED */
    CHECK(create("test.so", NULL) == NCP_ERR_LIB_LOADING_FAILED);
    CHECK(create("/data/storage/el1/bundle/libs/arm64/" LIB, NULL) == NCP_ERR_LIB_LOADING_FAILED);
    /* [xts] 0700: NativeChildProcess_OnConnect() returning NULL */
    CHECK(create("libohos_ncp_nullstub.so", NULL) == NCP_ERR_CONNECTION_FAILED);
    /* [xts] 1000: a second create while the first child is still connecting succeeds */
    int before = count(&started);
    CHECK(OH_Ability_CreateNativeChildProcess("libohos_ncp_nullstub.so", OnStarted) == 0);
    CHECK(OH_Ability_CreateNativeChildProcess(LIB, OnStarted) == 0);
    CHECK(wait_count(&started, before + 2));
    pthread_mutex_lock(&mu);
    child = last_code == NCP_NO_ERROR ? last_proxy : NULL;
    pthread_mutex_unlock(&mu);
    if (child == NULL) { /* the null stub's callback came last: find the other by a new start */
        CHECK(create(LIB, &child) == NCP_NO_ERROR);
    }
    if (child != NULL) quit(child);
    CHECK(count(&on_main_thread) == 0); /* callbacks never on the caller's thread */

    /* [xts] WithArgs 0400 (normal): Main gets the params and the named fd */
    int fds[2];
    CHECK(pipe(fds) == 0);
    NativeChildProcess_Fd node = {"fd1", fds[1], NULL};
    NativeChildProcess_Args args = {"testEntryParams", {&node}};
    NativeChildProcess_Options options = {NCP_ISOLATION_MODE_NORMAL, 0};
    int32_t pid = 0;
    CHECK(OH_Ability_StartNativeChildProcess(LIB ":Main", args, options, &pid) == NCP_NO_ERROR);
    CHECK(pid > 0);
    close(fds[1]);
    char got[128] = {0};
    CHECK(read(fds[0], got, sizeof got - 1) > 0 && strcmp(got, "SUCC:testEntryParams:fd1") == 0);
    close(fds[0]);
    CHECK(exit_signal_of(pid) == 0); /* a normal exit: signal 0 */
    /* [xts] WithArgs 0400/0500 (isolated), GetCurrentChildProcess_0100: an isolated child
     * loads the library by bare name too (found on LD_LIBRARY_PATH, as OpenHarmony's in
     * the app's library directory) */
    CHECK(pipe(fds) == 0);
    node = (NativeChildProcess_Fd){"fd1", fds[1], NULL};
    args = (NativeChildProcess_Args){"testEntryParams", {&node}};
    NativeChildProcess_Options isolated = {NCP_ISOLATION_MODE_ISOLATED, 0};
    CHECK(OH_Ability_StartNativeChildProcess(LIB ":Main", args, isolated, &pid) == NCP_NO_ERROR);
    close(fds[1]);
    memset(got, 0, sizeof got);
    CHECK(read(fds[0], got, sizeof got - 1) > 0 && strcmp(got, "SUCC:testEntryParams:fd1") == 0);
    close(fds[0]);
    CHECK(exit_signal_of(pid) == 0);
    Ability_ChildProcessConfigs *isolating = OH_Ability_CreateChildProcessConfigs();
    CHECK(OH_Ability_ChildProcessConfigs_SetIsolationMode(isolating, NCP_ISOLATION_MODE_ISOLATED) ==
          NCP_NO_ERROR);
    before = count(&started);
    CHECK(OH_Ability_CreateNativeChildProcessWithConfigs(LIB, isolating, OnStarted) ==
          NCP_NO_ERROR);
    CHECK(wait_count(&started, before + 1));
    pthread_mutex_lock(&mu);
    child = last_code == NCP_NO_ERROR ? last_proxy : NULL;
    pthread_mutex_unlock(&mu);
    CHECK(child != NULL);
    if (child != NULL) {
        CHECK(call(child, ADD, 20, 22, out, 1) == OH_IPC_SUCCESS && out[0] == 42);
        quit(child);
    }
    OH_Ability_DestroyChildProcessConfigs(isolating);
    /* [impl] exit callbacks are a list without a limit: seventy, each called once */
    size_t n_many = sizeof many / sizeof many[0];
    int all_registered = 1;
    for (size_t i = 0; i < n_many; i++)
        all_registered &= OH_Ability_RegisterNativeChildProcessExitCallback(many[i]) == 0;
    CHECK(all_registered);
    NativeChildProcess_Args nothing = {NULL, {NULL}};
    CHECK(OH_Ability_StartNativeChildProcess(LIB ":Main", nothing, options, &pid) == NCP_NO_ERROR);
    CHECK(exit_signal_of(pid) == 0);
    CHECK(wait_count(&many_called, (int)n_many) && count(&many_called) == (int)n_many);
    int all_removed = 1;
    for (size_t i = 0; i < n_many; i++)
        all_removed &= OH_Ability_UnregisterNativeChildProcessExitCallback(many[i]) == 0;
    CHECK(all_removed);
    CHECK(OH_Ability_UnregisterNativeChildProcessExitCallback(many[0]) ==
          NCP_ERR_CALLBACK_NOT_EXIST);
    /* [xts] WithArgs 0600: no params and no fds */
    NativeChildProcess_Args none = {NULL, {NULL}};
    CHECK(OH_Ability_StartNativeChildProcess(LIB ":Main", none, options, &pid) == NCP_NO_ERROR);
    CHECK(exit_signal_of(pid) == 0);
    /* an args-mode child may not start children either */
    CHECK(pipe(fds) == 0);
    node = (NativeChildProcess_Fd){"out", fds[1], NULL};
    args = (NativeChildProcess_Args){NULL, {&node}};
    CHECK(OH_Ability_StartNativeChildProcess(LIB ":MainStartAgain", args, options, &pid) ==
          NCP_NO_ERROR);
    close(fds[1]);
    memset(got, 0, sizeof got);
    char want[64];
    snprintf(want, sizeof want, "%d %d 0", NCP_ERR_ALREADY_IN_CHILD, NCP_ERR_ALREADY_IN_CHILD);
    CHECK(read(fds[0], got, sizeof got - 1) > 0 && strcmp(got, want) == 0);
    close(fds[0]);
    CHECK(exit_signal_of(pid) == 0);
    fd_list_checks();

    /* [xts] WithConfigs_1000, 1100: a library or function that does not load still gives
     * a started child's pid (its child then ends: the exit callbacks hear of it, and it
     * cannot be killed) */
    Ability_ChildProcessConfigs *configs = OH_Ability_CreateChildProcessConfigs();
    CHECK(OH_Ability_ChildProcessConfigs_SetProcessName(configs, "abc_123") == NCP_NO_ERROR);
    const char *missing[] = {"libnoexisted.so:Main", LIB ":notexisted"};
    for (int i = 0; i < 2; i++) {
        pid = -1;
        CHECK(OH_Ability_StartNativeChildProcessWithConfigs(missing[i], none, configs, &pid) ==
              NCP_NO_ERROR);
        CHECK(pid > 0);
        CHECK(exit_signal_of(pid) == 0);
        CHECK(OH_Ability_KillChildProcess(pid) == NCP_ERR_INVALID_PID);
    }
    CHECK(OH_Ability_DestroyChildProcessConfigs(configs) == NCP_NO_ERROR);

    /* [impl] KillChildProcess: a live child of this process (its exit says SIGKILL), then
     * the same pid again: NCP_ERR_INVALID_PID */
    CHECK(pipe(fds) == 0);
    node = (NativeChildProcess_Fd){"in", fds[0], NULL};
    args = (NativeChildProcess_Args){NULL, {&node}};
    CHECK(OH_Ability_StartNativeChildProcess(LIB ":MainBlock", args, options, &pid) ==
          NCP_NO_ERROR);
    close(fds[0]);
    CHECK(OH_Ability_KillChildProcess(pid) == NCP_NO_ERROR);
    CHECK(exit_signal_of(pid) == SIGKILL);
    CHECK(OH_Ability_KillChildProcess(pid) == NCP_ERR_INVALID_PID);
    close(fds[1]);

    /* [xts] 0800, 1500: 50 children at once; the 51st NCP_ERR_MAX_CHILD_PROCESSES_REACHED;
     * after one exits, a start succeeds again */
    OHIPCRemoteProxy *children[MAX_CHILDREN + 1];
    int n = 0;
    while (n < MAX_CHILDREN) {
        int code = create(LIB, &children[n]);
        if (code != NCP_NO_ERROR) {
            CHECK(code == NCP_ERR_MAX_CHILD_PROCESSES_REACHED);
            break;
        }
        n++;
    }
    OHIPCRemoteProxy *extra = NULL;
    CHECK(create(LIB, &extra) == NCP_ERR_MAX_CHILD_PROCESSES_REACHED);
    if (n > 0) {
        quit(children[--n]);
        CHECK(create(LIB, &children[n]) == NCP_NO_ERROR);
        n++;
    }
    for (int i = 0; i < n; i++) quit(children[i]);

    CHECK(OH_Ability_UnregisterNativeChildProcessExitCallback(ExitA) == NCP_NO_ERROR);
    printf("%d failures\n", failures);
    return failures;
}
