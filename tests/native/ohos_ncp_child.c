/*
 * The child library of ohos_ncp_conformance.c, shaped like the "libentry.so" of
 * OpenHarmony's XTS suite for this API (xts_acts ability/ability_runtime/capichildprocess):
 * one library that is both an IPC-mode child (NativeChildProcess_OnConnect/MainProc) and
 * an args-mode entry (Main). Built with -DNULL_STUB it is the suite's "invalid stub"
 * library instead: NativeChildProcess_OnConnect() returns NULL.
 *
 * Codes: ADD (a + b), START (what OH_Ability_CreateNativeChildProcess,
 * OH_Ability_StartNativeChildProcess and OH_Ability_IsNativeChildProcessSupported answer
 * inside a child), QUIT (0: MainProc returns, the child exits 0; 1: the child crashes
 * with SIGSEGV, as the suite's RequestExitChildProcess(1) does).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include <AbilityKit/native_child_process.h>
#include <IPCKit/ipc_kit.h>

enum { ADD = 1, START = 2, QUIT = 3 };

#ifdef NULL_STUB
OHIPCRemoteStub *NativeChildProcess_OnConnect(void) { return NULL; }
void NativeChildProcess_MainProc(void) {}
#else
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int quit;

static void Unused(int errCode, OHIPCRemoteProxy *proxy) {
    if (proxy != NULL) OH_IPCRemoteProxy_Destroy(proxy);
}

/* What starting a child from inside a child answers: create, start, supported. */
static void start_codes(int32_t out[3]) {
    NativeChildProcess_Args none = {NULL, {NULL}};
    NativeChildProcess_Options options = {NCP_ISOLATION_MODE_NORMAL, 0};
    int32_t pid = 0;
    out[0] = OH_Ability_CreateNativeChildProcess("libohos_ncp_child.so", Unused);
    out[1] = OH_Ability_StartNativeChildProcess("libohos_ncp_child.so:Main", none, options, &pid);
    out[2] = OH_Ability_IsNativeChildProcessSupported();
}

static int OnRequest(uint32_t code, const OHIPCParcel *data, OHIPCParcel *reply, void *ud) {
    int32_t a = 0, b = 0, codes[3];
    switch (code) {
    case ADD:
        if (OH_IPCParcel_ReadInt32(data, &a) || OH_IPCParcel_ReadInt32(data, &b))
            return OH_IPC_PARCEL_READ_ERROR;
        return OH_IPCParcel_WriteInt32(reply, a + b);
    case START:
        start_codes(codes);
        for (int i = 0; i < 3; i++)
            if (OH_IPCParcel_WriteInt32(reply, codes[i])) return OH_IPC_PARCEL_WRITE_ERROR;
        return 0;
    case QUIT:
        if (OH_IPCParcel_ReadInt32(data, &a)) return OH_IPC_PARCEL_READ_ERROR;
        if (a > 0) *(volatile int *)(uintptr_t)a = 0; /* a real fault: SIGSEGV */
        pthread_mutex_lock(&mu);
        quit = 1;
        pthread_cond_broadcast(&cv);
        pthread_mutex_unlock(&mu);
        return 0;
    }
    return OH_IPC_CODE_OUT_OF_RANGE;
}

OHIPCRemoteStub *NativeChildProcess_OnConnect(void) {
    return OH_IPCRemoteStub_Create("ohos.ncp.conformance", OnRequest, NULL, NULL);
}

void NativeChildProcess_MainProc(void) {
    pthread_mutex_lock(&mu);
    while (!quit) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
}

/* Args mode: "SUCC:<entryParams>:<name of the first fd>" through that fd. */
void Main(NativeChildProcess_Args args) {
    NativeChildProcess_Fd *fd = args.fdList.head;
    if (fd != NULL)
        dprintf(fd->fd, "SUCC:%s:%s", args.entryParams ? args.entryParams : "", fd->fdName);
}

/* Args mode: blocks until its first fd reads end-of-file (or it is killed). */
void MainBlock(NativeChildProcess_Args args) {
    char buf[64];
    if (args.fdList.head != NULL)
        while (read(args.fdList.head->fd, buf, sizeof buf) > 0) continue;
}

/* Args mode: what starting a child answers here, "<create> <start> <supported>". */
void MainStartAgain(NativeChildProcess_Args args) {
    int32_t codes[3];
    start_codes(codes);
    if (args.fdList.head != NULL)
        dprintf(args.fdList.head->fd, "%d %d %d", codes[0], codes[1], codes[2]);
}
#endif
