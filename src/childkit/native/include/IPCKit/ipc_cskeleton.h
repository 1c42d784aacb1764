/*
 * IPCKit skeleton (childkit's libipc_capi.so): the declarations of OpenHarmony's
 * ipc_cskeleton.h (API 12). Token ids have no Linux counterpart: docs/native.md says what
 * childkit returns for them.
 */
#ifndef CAPI_INCLUDE_IPC_CSKELETON_H
#define CAPI_INCLUDE_IPC_CSKELETON_H

#include <stdint.h>

#include "ipc_cparcel.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Makes the calling thread an IPC work thread until OH_IPCSkeleton_StopWorkThread. */
void OH_IPCSkeleton_JoinWorkThread(void);
/** Makes every thread in OH_IPCSkeleton_JoinWorkThread return. */
void OH_IPCSkeleton_StopWorkThread(void);
uint64_t OH_IPCSkeleton_GetCallingTokenId(void);
uint64_t OH_IPCSkeleton_GetFirstTokenId(void);
uint64_t OH_IPCSkeleton_GetSelfTokenId(void);
/** The calling process's pid inside a request (kernel-stamped), else this process's. */
uint64_t OH_IPCSkeleton_GetCallingPid(void);
/** The calling process's uid inside a request (kernel-stamped), else this process's. */
uint64_t OH_IPCSkeleton_GetCallingUid(void);
/** 1 outside a request or for a call from this process, else 0. */
int OH_IPCSkeleton_IsLocalCalling(void);
/** Sets the most IPC work threads, 1..32. */
int OH_IPCSkeleton_SetMaxWorkThreadNum(const int maxThreadNum);
/** Saves the calling identity (allocator memory, caller frees) and resets it to this process. */
int OH_IPCSkeleton_ResetCallingIdentity(char **identity, int32_t *len, OH_IPC_MemAllocator allocator);
/** Restores an identity saved by OH_IPCSkeleton_ResetCallingIdentity. */
int OH_IPCSkeleton_SetCallingIdentity(const char *identity);
/** 1 while this thread runs a request, else 0. */
int OH_IPCSkeleton_IsHandlingTransaction(void);

#ifdef __cplusplus
}
#endif

#endif /* CAPI_INCLUDE_IPC_CSKELETON_H */
