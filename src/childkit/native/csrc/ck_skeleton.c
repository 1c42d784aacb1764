/*
 * IPCKit's skeleton: the calling identity of the request a thread runs, and the work
 * thread calls. The identity is thread-local; ck_conn.c sets it around each request from
 * the kernel-stamped credentials of the peer's HELLO (never the peer's word).
 *
 * Token ids: Linux has no access tokens, so OH_IPCSkeleton_Get*TokenId return 0, which
 * OpenHarmony uses for "no token" (docs/native.md).
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ck_internal.h"
#include "ipc_cskeleton.h"
#include "ipc_error_code.h"

#define CK__EXPORT __attribute__((visibility("default")))

static CK__TLS ck__identity_t identity;

ck__identity_t *ck__identity(void) { return &identity; }

/* Requests being answered in this process, for childkit_ipc_drain: counted without a
 * lock (a request's cost stays as it was); only a request ending while a drainer waits
 * takes the lock, to wake it. */
static pthread_mutex_t requests_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t requests_done = PTHREAD_COND_INITIALIZER;
static long requests, drainers;

void ck__request_begin(void) { __atomic_add_fetch(&requests, 1, __ATOMIC_SEQ_CST); }

void ck__request_end(void) {
    if (__atomic_sub_fetch(&requests, 1, __ATOMIC_SEQ_CST) == 0 &&
        __atomic_load_n(&drainers, __ATOMIC_SEQ_CST) > 0) {
        pthread_mutex_lock(&requests_lock);
        pthread_cond_broadcast(&requests_done);
        pthread_mutex_unlock(&requests_lock);
    }
}

CK__EXPORT int childkit_ipc_drain(int timeout_ms) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&requests_lock);
    __atomic_add_fetch(&drainers, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&requests, __ATOMIC_SEQ_CST) > 0)
        if (pthread_cond_timedwait(&requests_done, &requests_lock, &deadline) != 0) break;
    __atomic_sub_fetch(&drainers, 1, __ATOMIC_SEQ_CST);
    int idle = __atomic_load_n(&requests, __ATOMIC_SEQ_CST) == 0;
    pthread_mutex_unlock(&requests_lock);
    return idle;
}

CK__EXPORT void OH_IPCSkeleton_JoinWorkThread(void) { ck__pool_join(); }

CK__EXPORT void OH_IPCSkeleton_StopWorkThread(void) { ck__pool_stop(); }

/* Linux has no access tokens; the closest thing to OpenHarmony's per-application token is
 * the uid a process runs as (Android's app identity). A token id here is that uid with bit
 * 32 set, so that it is never 0 (OpenHarmony's "no token") and never mistaken for a bare
 * uid. */
#define CK__TOKEN_OF_UID(uid) ((UINT64_C(1) << 32) | (uint64_t)(uint32_t)(uid))

CK__EXPORT uint64_t OH_IPCSkeleton_GetCallingTokenId(void) {
    return CK__TOKEN_OF_UID(identity.handling ? identity.uid : (uint64_t)getuid());
}

/* The first caller of a chain of calls made on behalf of others: childkit does not pass
 * that along, so there is none (0), as OpenHarmony says when no first caller is known. */
CK__EXPORT uint64_t OH_IPCSkeleton_GetFirstTokenId(void) { return 0; }

CK__EXPORT uint64_t OH_IPCSkeleton_GetSelfTokenId(void) { return CK__TOKEN_OF_UID(getuid()); }

CK__EXPORT uint64_t OH_IPCSkeleton_GetCallingPid(void) {
    return identity.handling ? identity.pid : (uint64_t)getpid();
}

CK__EXPORT uint64_t OH_IPCSkeleton_GetCallingUid(void) {
    return identity.handling ? identity.uid : (uint64_t)getuid();
}

CK__EXPORT int OH_IPCSkeleton_IsLocalCalling(void) {
    return !identity.handling || identity.local;
}

CK__EXPORT int OH_IPCSkeleton_SetMaxWorkThreadNum(const int maxThreadNum) {
    return ck__pool_set_max(maxThreadNum) == 0 ? OH_IPC_SUCCESS : OH_IPC_CHECK_PARAM_ERROR;
}

CK__EXPORT int OH_IPCSkeleton_IsHandlingTransaction(void) { return identity.handling; }

/* During a request the identity travels as "pid:uid:local:handling" text (its format is
 * childkit's own: only OH_IPCSkeleton_SetCallingIdentity reads it), and after the reset
 * the thread acts as itself: its own pid and uid, a local call. Outside a request there is
 * no caller's identity: the text is "" and nothing changes, as in OpenHarmony (no active
 * invoker: IPCSkeleton::ResetCallingIdentity answers ""). */
CK__EXPORT int OH_IPCSkeleton_ResetCallingIdentity(char **identityOut, int32_t *len,
                                                   OH_IPC_MemAllocator allocator) {
    if (identityOut == NULL || len == NULL || allocator == NULL) return OH_IPC_CHECK_PARAM_ERROR;
    char text[96] = "";
    int n = 0;
    if (identity.handling)
        n = snprintf(text, sizeof text, "%" PRIu64 ":%" PRIu64 ":%d:%d",
                     OH_IPCSkeleton_GetCallingPid(), OH_IPCSkeleton_GetCallingUid(),
                     OH_IPCSkeleton_IsLocalCalling(), identity.handling);
    char *out = allocator(n + 1);
    if (out == NULL) return OH_IPC_MEM_ALLOCATOR_ERROR;
    memcpy(out, text, (size_t)n + 1);
    *identityOut = out;
    *len = n + 1;
    if (identity.handling) {
        identity.pid = (uint64_t)getpid();
        identity.uid = (uint64_t)getuid();
        identity.local = 1;
    }
    return OH_IPC_SUCCESS;
}

/* Outside a request any identity is accepted and changes nothing, as in OpenHarmony
 * (IPCSkeleton::SetCallingIdentity without an active invoker answers true; its XTS suite
 * sets "STUB_DESCRIPTOR" so). During one, text that ResetCallingIdentity did not make is
 * OH_IPC_INNER_ERROR, as OpenHarmony answers its invoker's refusal. */
CK__EXPORT int OH_IPCSkeleton_SetCallingIdentity(const char *identityIn) {
    if (identityIn == NULL) return OH_IPC_CHECK_PARAM_ERROR;
    if (!identity.handling) return OH_IPC_SUCCESS;
    uint64_t pid, uid;
    int local, handling, used = 0;
    if (sscanf(identityIn, "%" SCNu64 ":%" SCNu64 ":%d:%d%n", &pid, &uid, &local, &handling,
               &used) != 4 || identityIn[used] != '\0' || (local != 0 && local != 1) ||
        handling != 1)
        return OH_IPC_INNER_ERROR;
    identity.pid = pid;
    identity.uid = uid;
    identity.local = local;
    return OH_IPC_SUCCESS;
}
