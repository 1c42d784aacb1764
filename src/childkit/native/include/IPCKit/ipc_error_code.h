/*
 * IPCKit error codes (childkit's libipc_capi.so).
 *
 * Same names and values as OpenHarmony's ipc_error_code.h (API 12 and later), so code
 * written for OpenHarmony compiles unchanged. Every libipc_capi.so call that returns an int
 * returns one of these; the Python face raises IPCError subclasses with the same values
 * (childkit.ipc.IPCErrorCode).
 */
#ifndef CAPI_INCLUDE_IPC_ERROR_CODE_H
#define CAPI_INCLUDE_IPC_ERROR_CODE_H

/** IPC error codes. @since 12 */
typedef enum {
    /** Success. */
    OH_IPC_SUCCESS = 0,
    /** First error code. */
    OH_IPC_ERROR_CODE_BASE = 1901000,
    /** A NULL or out-of-range argument. */
    OH_IPC_CHECK_PARAM_ERROR = OH_IPC_ERROR_CODE_BASE,
    /** A write to a parcel failed (full, closed, or a bad value). */
    OH_IPC_PARCEL_WRITE_ERROR = OH_IPC_ERROR_CODE_BASE + 1,
    /** A read from a parcel failed (wrong type, past the end, malformed data). */
    OH_IPC_PARCEL_READ_ERROR = OH_IPC_ERROR_CODE_BASE + 2,
    /** The caller's OH_IPC_MemAllocator returned NULL. */
    OH_IPC_MEM_ALLOCATOR_ERROR = OH_IPC_ERROR_CODE_BASE + 3,
    /** A request code outside [0x01, 0x00ffffff]. */
    OH_IPC_CODE_OUT_OF_RANGE = OH_IPC_ERROR_CODE_BASE + 4,
    /** The remote object (or its process) is dead. */
    OH_IPC_DEAD_REMOTE_OBJECT = OH_IPC_ERROR_CODE_BASE + 5,
    /** A stub returned a code outside [1909000, 1909999] (and not 0). */
    OH_IPC_INVALID_USER_ERROR_CODE = OH_IPC_ERROR_CODE_BASE + 6,
    /** An internal failure (a protocol error, no memory, a system call). */
    OH_IPC_INNER_ERROR = OH_IPC_ERROR_CODE_BASE + 7,
    /** Last IPC error code. */
    OH_IPC_ERROR_CODE_MAX = OH_IPC_ERROR_CODE_BASE + 1000,
    /** Smallest code a stub may return as its own error. */
    OH_IPC_USER_ERROR_CODE_MIN = 1909000,
    /** Largest code a stub may return as its own error. */
    OH_IPC_USER_ERROR_CODE_MAX = 1909999,
} OH_IPC_ErrorCode;

#endif /* CAPI_INCLUDE_IPC_ERROR_CODE_H */
