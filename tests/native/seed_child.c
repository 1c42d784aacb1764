/*
 * The seed article's IPC child (section II, 2.2.2), completed: a library exporting
 * NativeChildProcess_OnConnect() (a stub made with IPCKit's C API) and
 * NativeChildProcess_MainProc() (returns when the parent sends EXIT). Built by
 * tests/native/test_native_child.py and started from Python and C parents.
 *
 * Variants for the failure tests: -DNO_MAIN_PROC leaves MainProc out, -DNULL_STUB makes
 * OnConnect return NULL.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <AbilityKit/native_child_process.h>
#include <IPCKit/ipc_kit.h>

enum {
    ADD_ONE = 1,   /* int32 x -> x + 1 */
    CALL_BACK = 2, /* a proxy: ADD_ONE(41) on it; answers what it got */
    WRITE_FD = 3,  /* an fd: writes "from C" */
    LOG = 4,       /* one-way: remembers an int32 */
    GET_LOG = 5,   /* the count, then the values */
    EXIT = 6,      /* MainProc returns */
    GREET = 7,     /* a string s -> "hello, " + s */
    USER_ERR = 8,  /* answers 1909042 */
    KEEP_CB = 9,   /* keeps the proxy, with a death recipient on it */
    CB_DIED = 10,  /* whether the kept proxy's death recipient ran */
    GIVE_STUB = 11, /* answers a new C stub (ADD_ONE) that the parent may call */
    PID = 12,      /* the calling pid, this pid */
    FILL = 13,     /* an int32 n -> n uint32s 0..n-1 (51,200 fill it; more: 1909002) */
    TOKENS = 14,   /* the calling token id, this process's token id, the first token id */
};

static OHIPCRemoteStub *ipcRemoteStub;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done = PTHREAD_COND_INITIALIZER;
static int exiting, cb_died;
static int32_t values[4096];
static int32_t n_values;
static OHIPCRemoteProxy *kept;

static void on_cb_death(void *ud) {
    pthread_mutex_lock(&lock);
    cb_died = 1;
    pthread_mutex_unlock(&lock);
}

static int add_one_request(uint32_t code, const OHIPCParcel *data, OHIPCParcel *reply, void *ud) {
    int32_t x;
    if (code != ADD_ONE || OH_IPCParcel_ReadInt32(data, &x) != OH_IPC_SUCCESS) return 1909001;
    return OH_IPCParcel_WriteInt32(reply, x + 1);
}

static int OnRemoteRequest(uint32_t code, const OHIPCParcel *data, OHIPCParcel *reply,
                           void *userData) {
    int32_t x;
    switch (code) {
    case ADD_ONE:
        return add_one_request(code, data, reply, userData);
    case CALL_BACK: {
        OHIPCRemoteProxy *cb = OH_IPCParcel_ReadRemoteProxy(data);
        if (cb == NULL) return 1909002;
        OHIPCParcel *d = OH_IPCParcel_Create(), *r = OH_IPCParcel_Create();
        OH_IPCParcel_WriteInt32(d, 41);
        int rc = OH_IPCRemoteProxy_SendRequest(cb, ADD_ONE, d, r, NULL);
        int32_t got = -1;
        if (rc == OH_IPC_SUCCESS) OH_IPCParcel_ReadInt32(r, &got);
        OH_IPCParcel_Destroy(d);
        OH_IPCParcel_Destroy(r);
        OH_IPCRemoteProxy_Destroy(cb);
        return rc == OH_IPC_SUCCESS ? OH_IPCParcel_WriteInt32(reply, got) : 1909003;
    }
    case WRITE_FD: {
        int32_t fd;
        if (OH_IPCParcel_ReadFileDescriptor(data, &fd) != OH_IPC_SUCCESS) return 1909004;
        ssize_t n = write(fd, "from C", 6);
        close(fd);
        return n == 6 ? 0 : 1909005;
    }
    case LOG:
        if (OH_IPCParcel_ReadInt32(data, &x) == OH_IPC_SUCCESS && n_values < 4096)
            values[n_values++] = x;
        return 0;
    case GET_LOG:
        OH_IPCParcel_WriteInt32(reply, n_values);
        for (int32_t i = 0; i < n_values; i++) OH_IPCParcel_WriteInt32(reply, values[i]);
        return 0;
    case EXIT:
        pthread_mutex_lock(&lock);
        exiting = 1;
        pthread_cond_signal(&done);
        pthread_mutex_unlock(&lock);
        return 0;
    case GREET: {
        const char *name = OH_IPCParcel_ReadString(data);
        if (name == NULL) return 1909006;
        char *text = (char *)malloc(strlen(name) + 8);
        strcpy(text, "hello, ");
        strcat(text, name);
        int rc = OH_IPCParcel_WriteString(reply, text);
        free(text);
        return rc;
    }
    case USER_ERR:
        return 1909042;
    case KEEP_CB: {
        kept = OH_IPCParcel_ReadRemoteProxy(data);
        OHIPCDeathRecipient *r = OH_IPCDeathRecipient_Create(on_cb_death, NULL, NULL);
        int rc = kept == NULL ? 1909007 : OH_IPCRemoteProxy_AddDeathRecipient(kept, r);
        OH_IPCDeathRecipient_Destroy(r); /* the proxy holds it now */
        return rc;
    }
    case CB_DIED:
        pthread_mutex_lock(&lock);
        x = cb_died;
        pthread_mutex_unlock(&lock);
        return OH_IPCParcel_WriteInt32(reply, x);
    case GIVE_STUB: {
        OHIPCRemoteStub *s = OH_IPCRemoteStub_Create("childkit.seed.IAdder", add_one_request,
                                                     NULL, NULL);
        int rc = OH_IPCParcel_WriteRemoteStub(reply, s);
        OH_IPCRemoteStub_Destroy(s); /* the reply, then the parent's proxy, keep it */
        return rc;
    }
    case PID:
        OH_IPCParcel_WriteUint64(reply, OH_IPCSkeleton_GetCallingPid());
        return OH_IPCParcel_WriteUint64(reply, (uint64_t)getpid());
    case FILL: {
        int32_t n = 0;
        if (OH_IPCParcel_ReadInt32(data, &n) != OH_IPC_SUCCESS) return 1909001;
        for (int32_t i = 0; i < n; i++) {
            if (OH_IPCParcel_WriteUint32(reply, (uint32_t)i) != OH_IPC_SUCCESS)
                return 1909002; /* the reply is full */
        }
        return 0;
    }
    case TOKENS:
        OH_IPCParcel_WriteUint64(reply, OH_IPCSkeleton_GetCallingTokenId());
        OH_IPCParcel_WriteUint64(reply, OH_IPCSkeleton_GetSelfTokenId());
        return OH_IPCParcel_WriteUint64(reply, OH_IPCSkeleton_GetFirstTokenId());
    }
    return 1909999;
}

#ifdef __cplusplus
extern "C" {
#endif

OHIPCRemoteStub *NativeChildProcess_OnConnect(void)
{
#ifdef NULL_STUB
    if (ipcRemoteStub == NULL) return NULL; /* the failure test's variant */
#endif
    ipcRemoteStub = OH_IPCRemoteStub_Create("childkit.seed.IChild", OnRemoteRequest, NULL, NULL);
    return ipcRemoteStub;
}

#ifndef NO_MAIN_PROC
void NativeChildProcess_MainProc(void)
{
    pthread_mutex_lock(&lock);
    while (!exiting) pthread_cond_wait(&done, &lock);
    pthread_mutex_unlock(&lock);
}
#endif

#ifdef __cplusplus
}
#endif
