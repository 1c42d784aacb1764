/*
 * Remote objects of IPCKit's C API: stubs (OHIPCRemoteStub), proxies (OHIPCRemoteProxy
 * boxes over a shared ck__remote_t) and death recipients, with their public calls.
 *
 * Ownership rules (the numbered list of docs/native.md):
 *  1. A stub has a reference count: its creator's (dropped by OH_IPCRemoteStub_Destroy),
 *     one per parcel holding it, one per connection exporting it. The destroy callback runs
 *     once, when the last goes, on the thread that drops it (maybe an IPC thread).
 *  2. Every OHIPCRemoteProxy is a box with one reference to its remote; the caller frees it
 *     with OH_IPCRemoteProxy_Destroy. When a remote's last reference goes, the peer gets a
 *     RELEASE for the references it sent.
 *  3. A forwarding stub (sent for a proxy of a third process) holds a reference to its
 *     remote; the remote points back at it (not a reference) until it is destroyed.
 *  4. A death recipient has a count too: its creator's, and one per proxy it is added to.
 *     Its callback runs at most once per add, on a thread of its own, never under a lock;
 *     its destroy callback once, when the last reference goes.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ck_internal.h"
#include "ipc_cparcel.h"
#include "ipc_error_code.h"

#define CK__EXPORT __attribute__((visibility("default")))

struct OHIPCDeathRecipient {
    int refs; /* atomic */
    OH_OnDeathRecipientCallback on_death;
    OH_OnDeathRecipientDestroyCallback on_destroy;
    void *user_data;
};

static void recipient_unref(struct OHIPCDeathRecipient *r) {
    if (__atomic_sub_fetch(&r->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        if (r->on_destroy != NULL) r->on_destroy(r->user_data);
        free(r);
    }
}

/* ------------------------------------------------------------------ stubs */
void ck__stub_ref(struct OHIPCRemoteStub *stub) {
    __atomic_add_fetch(&stub->refs, 1, __ATOMIC_RELAXED);
}

void ck__stub_unref(struct OHIPCRemoteStub *stub) {
    if (__atomic_sub_fetch(&stub->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        if (stub->on_destroy != NULL) stub->on_destroy(stub->user_data);
        free(stub->descriptor);
        free(stub);
    }
}

CK__EXPORT OHIPCRemoteStub *OH_IPCRemoteStub_Create(const char *descriptor,
                                                    OH_OnRemoteRequestCallback requestCallback,
                                                    OH_OnRemoteDestroyCallback destroyCallback,
                                                    void *userData) {
    if (descriptor == NULL || requestCallback == NULL) return NULL;
    size_t n = strlen(descriptor);
    /* as OpenHarmony: 1..204,800 bytes of UTF-8 (its UTF-16 conversion fails otherwise) */
    if (n == 0 || n > CK__MAX_PARCEL_DATA || ck__utf16_units(descriptor, n) < 0) return NULL;
    struct OHIPCRemoteStub *stub = calloc(1, sizeof *stub);
    if (stub == NULL || (stub->descriptor = strdup(descriptor)) == NULL) {
        free(stub);
        return NULL;
    }
    stub->refs = 1;
    stub->on_request = requestCallback;
    stub->on_destroy = destroyCallback;
    stub->user_data = userData;
    return stub;
}

CK__EXPORT void OH_IPCRemoteStub_Destroy(OHIPCRemoteStub *stub) {
    if (stub != NULL) ck__stub_unref(stub);
}

/* ------------------------------------------------------------------ remotes and proxies */
void ck__remote_ref(ck__remote_t *remote) {
    ck__conn_lock(remote->conn);
    remote->refs++;
    ck__conn_unlock(remote->conn);
}

void ck__remote_unref(ck__remote_t *remote) {
    ck__conn_t *conn = remote->conn;
    ck__conn_lock(conn);
    if (--remote->refs > 0) {
        ck__conn_unlock(conn);
        return;
    }
    ck__deathlink_t *links = remote->recipients;
    remote->recipients = NULL;
    ck__conn_forget_remote_locked(conn, remote); /* unlocks */
    while (links != NULL) { /* never fired: just let go */
        ck__deathlink_t *next = links->next;
        recipient_unref(links->recipient);
        free(links);
        links = next;
    }
    free(remote);
    ck__conn_unref(conn);
}

struct OHIPCRemoteProxy *ck__proxy_box(ck__remote_t *remote) {
    struct OHIPCRemoteProxy *box = malloc(sizeof *box);
    if (box == NULL) {
        ck__remote_unref(remote);
        return NULL;
    }
    box->remote = remote;
    return box;
}

CK__EXPORT void OH_IPCRemoteProxy_Destroy(OHIPCRemoteProxy *proxy) {
    if (proxy == NULL) return;
    ck__remote_unref(proxy->remote);
    free(proxy);
}

void ck__pobj_ref(const ck__pobj_t *obj) {
    if (obj->kind == CK__POBJ_STUB) ck__stub_ref(obj->ptr);
    else ck__remote_ref(obj->ptr);
}

void ck__pobj_unref(const ck__pobj_t *obj) {
    if (obj->kind == CK__POBJ_STUB) ck__stub_unref(obj->ptr);
    else ck__remote_unref(obj->ptr);
}

/* OH_IPC_MessageOption.timeout is in seconds; 0 means no limit (as a NULL option). */
CK__EXPORT int OH_IPCRemoteProxy_SendRequest(const OHIPCRemoteProxy *proxy, uint32_t code,
                                             const OHIPCParcel *data, OHIPCParcel *reply,
                                             const OH_IPC_MessageOption *option) {
    if (proxy == NULL || data == NULL) return OH_IPC_CHECK_PARAM_ERROR;
    int oneway = 0;
    uint32_t timeout_ms = 0;
    if (option != NULL) {
        /* reserved must be NULL, as OpenHarmony checks: it may mean something later */
        if (option->reserved != NULL ||
            (option->mode != OH_IPC_REQUEST_MODE_SYNC && option->mode != OH_IPC_REQUEST_MODE_ASYNC))
            return OH_IPC_CHECK_PARAM_ERROR;
        oneway = option->mode == OH_IPC_REQUEST_MODE_ASYNC;
        if (option->timeout > UINT32_MAX / 1000) return OH_IPC_CHECK_PARAM_ERROR;
        timeout_ms = option->timeout * 1000;
    }
    if (!oneway && reply == NULL) return OH_IPC_CHECK_PARAM_ERROR;
    if (code < 0x01 || code > 0x00FFFFFF) return OH_IPC_CODE_OUT_OF_RANGE;
    return ck__conn_transact(proxy->remote, code, data, reply, oneway, timeout_ms);
}

CK__EXPORT int OH_IPCRemoteProxy_GetInterfaceDescriptor(OHIPCRemoteProxy *proxy, char **descriptor,
                                                        int32_t *len,
                                                        OH_IPC_MemAllocator allocator) {
    if (proxy == NULL || descriptor == NULL || len == NULL || allocator == NULL)
        return OH_IPC_CHECK_PARAM_ERROR;
    OHIPCParcel *data = OH_IPCParcel_Create(), *reply = OH_IPCParcel_Create();
    int rc = data == NULL || reply == NULL ? OH_IPC_INNER_ERROR
             : ck__conn_transact(proxy->remote, CK__INTERFACE_TRANSACTION, data, reply, 0, 0);
    if (rc == OH_IPC_SUCCESS) {
        const char *text = OH_IPCParcel_ReadString(reply);
        if (text == NULL) {
            rc = OH_IPC_PARCEL_READ_ERROR;
        } else {
            size_t n = strlen(text) + 1;
            char *out = allocator((int32_t)n);
            if (out == NULL) {
                rc = OH_IPC_MEM_ALLOCATOR_ERROR;
            } else {
                memcpy(out, text, n);
                *descriptor = out;
                *len = (int32_t)n;
            }
        }
    }
    OH_IPCParcel_Destroy(data);
    OH_IPCParcel_Destroy(reply);
    return rc;
}

CK__EXPORT int OH_IPCRemoteProxy_IsRemoteDead(const OHIPCRemoteProxy *proxy) {
    return proxy == NULL || ck__conn_is_dead(proxy->remote->conn);
}

/* ------------------------------------------------------------------ death recipients */
CK__EXPORT OHIPCDeathRecipient *OH_IPCDeathRecipient_Create(
    OH_OnDeathRecipientCallback deathRecipientCallback,
    OH_OnDeathRecipientDestroyCallback destroyCallback, void *userData) {
    if (deathRecipientCallback == NULL) return NULL;
    struct OHIPCDeathRecipient *r = calloc(1, sizeof *r);
    if (r == NULL) return NULL;
    r->refs = 1;
    r->on_death = deathRecipientCallback;
    r->on_destroy = destroyCallback;
    r->user_data = userData;
    return r;
}

CK__EXPORT void OH_IPCDeathRecipient_Destroy(OHIPCDeathRecipient *recipient) {
    if (recipient != NULL) recipient_unref(recipient);
}

/* A dead remote answers OH_IPC_INNER_ERROR, as OpenHarmony's (its proxy's
 * AddDeathRecipient fails): its recipients have already run. */
CK__EXPORT int OH_IPCRemoteProxy_AddDeathRecipient(OHIPCRemoteProxy *proxy,
                                                   OHIPCDeathRecipient *recipient) {
    if (proxy == NULL || recipient == NULL) return OH_IPC_CHECK_PARAM_ERROR;
    ck__deathlink_t *link = malloc(sizeof *link);
    if (link == NULL) return OH_IPC_INNER_ERROR;
    ck__remote_t *remote = proxy->remote;
    ck__conn_lock(remote->conn);
    if (ck__conn_is_dead(remote->conn)) {
        ck__conn_unlock(remote->conn);
        free(link);
        return OH_IPC_INNER_ERROR;
    }
    __atomic_add_fetch(&recipient->refs, 1, __ATOMIC_RELAXED);
    link->recipient = recipient;
    link->next = remote->recipients;
    remote->recipients = link;
    ck__conn_unlock(remote->conn);
    return OH_IPC_SUCCESS;
}

/* Removes one addition of recipient. As OpenHarmony's: one that was never added is a
 * success (nothing to remove), and a dead remote answers OH_IPC_INNER_ERROR. */
CK__EXPORT int OH_IPCRemoteProxy_RemoveDeathRecipient(OHIPCRemoteProxy *proxy,
                                                      OHIPCDeathRecipient *recipient) {
    if (proxy == NULL || recipient == NULL) return OH_IPC_CHECK_PARAM_ERROR;
    ck__remote_t *remote = proxy->remote;
    ck__deathlink_t *found = NULL;
    ck__conn_lock(remote->conn);
    if (ck__conn_is_dead(remote->conn)) {
        ck__conn_unlock(remote->conn);
        return OH_IPC_INNER_ERROR;
    }
    for (ck__deathlink_t **at = &remote->recipients; *at != NULL; at = &(*at)->next) {
        if ((*at)->recipient == recipient) {
            found = *at;
            *at = found->next;
            break;
        }
    }
    ck__conn_unlock(remote->conn);
    if (found == NULL) return OH_IPC_SUCCESS;
    recipient_unref(found->recipient);
    free(found);
    return OH_IPC_SUCCESS;
}

void ck__deathlinks_fire(ck__deathlink_t *links) {
    while (links != NULL) {
        ck__deathlink_t *next = links->next;
        links->recipient->on_death(links->recipient->user_data);
        recipient_unref(links->recipient);
        free(links);
        links = next;
    }
}

/* ------------------------------------------------------------------ forwarders */
/* Guards every remote's forwarder pointer; never held while taking another lock. */
static pthread_mutex_t forward_lock = PTHREAD_MUTEX_INITIALIZER;

typedef struct {
    ck__remote_t *target; /* a reference */
    struct OHIPCRemoteStub *stub;
} forward_t;

/* Forwarded sync calls waiting for their targets, in this process. A forwarded call holds
 * a work thread until its target answers (the caller's timeout does not travel), so they
 * may take at most half the work threads: a peer calling through a forwarder to a target
 * that never answers cannot starve the process's other links (ipc/_forwarding.py, the
 * same bound on the Python side). */
static int forwarded_in_flight;

static int forward_request(uint32_t code, const OHIPCParcel *data, OHIPCParcel *reply,
                           void *user_data) {
    forward_t *f = user_data;
    if (ck__identity()->oneway)
        return ck__conn_transact(f->target, code, data, NULL, 1, 0);
    int limit = ck__pool_max() / 2;
    if (limit < 1) limit = 1;
    if (__atomic_add_fetch(&forwarded_in_flight, 1, __ATOMIC_ACQ_REL) > limit) {
        __atomic_sub_fetch(&forwarded_in_flight, 1, __ATOMIC_ACQ_REL);
        return OH_IPC_INNER_ERROR; /* refused at once: half the work threads wait already */
    }
    OHIPCParcel *answer = OH_IPCParcel_Create();
    int rc = answer == NULL ? OH_IPC_INNER_ERROR
                            : ck__conn_transact(f->target, code, data, answer, 0, 0);
    __atomic_sub_fetch(&forwarded_in_flight, 1, __ATOMIC_ACQ_REL);
    if (rc == OH_IPC_SUCCESS && OH_IPCParcel_Append(reply, answer) != OH_IPC_SUCCESS)
        rc = OH_IPC_PARCEL_WRITE_ERROR;
    OH_IPCParcel_Destroy(answer);
    return rc;
}

static void forward_destroy(void *user_data) {
    forward_t *f = user_data;
    pthread_mutex_lock(&forward_lock);
    if (f->target->forwarder == f->stub) f->target->forwarder = NULL;
    pthread_mutex_unlock(&forward_lock);
    ck__remote_unref(f->target);
    free(f);
}

int ck__is_forwarder(const struct OHIPCRemoteStub *stub) {
    return stub->on_request == forward_request;
}

struct OHIPCRemoteStub *ck__forwarder_for(ck__remote_t *remote) {
    pthread_mutex_lock(&forward_lock);
    struct OHIPCRemoteStub *stub = remote->forwarder;
    /* A reference unless its last one is going (its destroy waits for the lock). */
    int refs = stub != NULL ? __atomic_load_n(&stub->refs, __ATOMIC_ACQUIRE) : 0;
    while (refs > 0 && !__atomic_compare_exchange_n(&stub->refs, &refs, refs + 1, 0,
                                                     __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {}
    if (refs > 0) {
        pthread_mutex_unlock(&forward_lock);
        return stub;
    }
    forward_t *f = malloc(sizeof *f);
    stub = f != NULL ? OH_IPCRemoteStub_Create("childkit.forwarder", forward_request,
                                               forward_destroy, f)
                     : NULL;
    if (stub == NULL) {
        pthread_mutex_unlock(&forward_lock);
        free(f);
        return NULL;
    }
    f->target = remote;
    f->stub = stub;
    remote->forwarder = stub;
    pthread_mutex_unlock(&forward_lock);
    ck__remote_ref(remote); /* the forwarder's; taken outside forward_lock */
    return stub;
}
