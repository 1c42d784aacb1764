/*
 * IPCKit stubs, proxies and death recipients (childkit's libipc_capi.so): the declarations
 * of OpenHarmony's ipc_cremote_object.h (API 12).
 *
 * Ownership (docs/native.md):
 *  1. OH_IPCRemoteStub_Create returns a stub the caller owns; OH_IPCRemoteStub_Destroy drops
 *     the caller's reference. The destroy callback runs when the last reference goes (the
 *     peer may still hold one), possibly later and on an IPC thread.
 *  2. Every proxy (from OH_Ability_CreateNativeChildProcess's callback or
 *     OH_IPCParcel_ReadRemoteProxy) is a new box the caller frees with
 *     OH_IPCRemoteProxy_Destroy.
 *  3. The parcels handed to a request callback are borrowed for the call.
 *  4. A death recipient is owned by its creator; its destroy callback runs when
 *     OH_IPCDeathRecipient_Destroy is called and no proxy holds it any more.
 */
#ifndef CAPI_INCLUDE_IPC_CREMOTE_OBJECT_H
#define CAPI_INCLUDE_IPC_CREMOTE_OBJECT_H

#include <stdint.h>

#include "ipc_cparcel.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Notified once when the remote object behind a proxy dies. @since 12 */
struct OHIPCDeathRecipient;
typedef struct OHIPCDeathRecipient OHIPCDeathRecipient;

/** A stub's request handler: 0, or an error in [1909000, 1909999]. data and reply are borrowed. */
typedef int (*OH_OnRemoteRequestCallback)(uint32_t code, const OHIPCParcel *data,
    OHIPCParcel *reply, void *userData);

/** Called once when a stub is freed. */
typedef void (*OH_OnRemoteDestroyCallback)(void *userData);

/** A new stub (descriptor non-empty, requestCallback non-NULL), or NULL. */
OHIPCRemoteStub* OH_IPCRemoteStub_Create(const char *descriptor, OH_OnRemoteRequestCallback requestCallback,
    OH_OnRemoteDestroyCallback destroyCallback, void *userData);

/** Drops the caller's reference to a stub; NULL is ignored. */
void OH_IPCRemoteStub_Destroy(OHIPCRemoteStub *stub);

/** Frees a proxy box; NULL is ignored. */
void OH_IPCRemoteProxy_Destroy(OHIPCRemoteProxy *proxy);

/** How a request is sent. */
typedef enum {
    /** Synchronous request: wait for the reply. */
    OH_IPC_REQUEST_MODE_SYNC = 0,
    /** Asynchronous (one-way) request: no reply. */
    OH_IPC_REQUEST_MODE_ASYNC = 1,
} OH_IPC_RequestMode;

#pragma pack(4)
/** Options of a request. */
typedef struct {
    /** Sync or async. */
    OH_IPC_RequestMode mode;
    /** Seconds a sync request waits for its reply (0: the default, 5 s). */
    uint32_t timeout;
    /** Reserved, must be NULL. */
    void* reserved;
} OH_IPC_MessageOption;
#pragma pack()

/** Sends a request; option NULL means sync with the default timeout. */
int OH_IPCRemoteProxy_SendRequest(const OHIPCRemoteProxy *proxy, uint32_t code, const OHIPCParcel *data,
    OHIPCParcel *reply, const OH_IPC_MessageOption *option);

/** The remote stub's descriptor, in memory from allocator (caller frees). */
int OH_IPCRemoteProxy_GetInterfaceDescriptor(OHIPCRemoteProxy *proxy, char **descriptor, int32_t *len,
    OH_IPC_MemAllocator allocator);

/** Called once when the remote object dies. */
typedef void (*OH_OnDeathRecipientCallback)(void *userData);

/** Called once when the death recipient is freed. */
typedef void (*OH_OnDeathRecipientDestroyCallback)(void *userData);

/** A new death recipient (deathRecipientCallback non-NULL), or NULL. */
OHIPCDeathRecipient* OH_IPCDeathRecipient_Create(OH_OnDeathRecipientCallback deathRecipientCallback,
    OH_OnDeathRecipientDestroyCallback destroyCallback, void *userData);

/** Drops the creator's reference; NULL is ignored. */
void OH_IPCDeathRecipient_Destroy(OHIPCDeathRecipient *recipient);

int OH_IPCRemoteProxy_AddDeathRecipient(OHIPCRemoteProxy *proxy, OHIPCDeathRecipient *recipient);

int OH_IPCRemoteProxy_RemoveDeathRecipient(OHIPCRemoteProxy *proxy, OHIPCDeathRecipient *recipient);

/** 1 if the remote object is dead (or proxy is NULL), else 0. */
int OH_IPCRemoteProxy_IsRemoteDead(const OHIPCRemoteProxy *proxy);

#ifdef __cplusplus
}
#endif

#endif /* CAPI_INCLUDE_IPC_CREMOTE_OBJECT_H */
