/*
 * The public headers compile as C (and as C++, built by the same test with g++), and the
 * ABI-relevant facts match OpenHarmony's: enum values, struct sizes and offsets. Prints
 * "name value" lines that tests/native/test_native_package.py compares with Python's
 * tables.
 */
#include <stddef.h>
#include <stdio.h>

#include <AbilityKit/native_child_process.h>
#include <IPCKit/ipc_kit.h>

#define SHOW(x) printf("%s %lld\n", #x, (long long)(x))

int main(void) {
    SHOW(OH_IPC_SUCCESS);
    SHOW(OH_IPC_CHECK_PARAM_ERROR);
    SHOW(OH_IPC_PARCEL_WRITE_ERROR);
    SHOW(OH_IPC_PARCEL_READ_ERROR);
    SHOW(OH_IPC_MEM_ALLOCATOR_ERROR);
    SHOW(OH_IPC_CODE_OUT_OF_RANGE);
    SHOW(OH_IPC_DEAD_REMOTE_OBJECT);
    SHOW(OH_IPC_INVALID_USER_ERROR_CODE);
    SHOW(OH_IPC_INNER_ERROR);
    SHOW(OH_IPC_ERROR_CODE_MAX);
    SHOW(OH_IPC_USER_ERROR_CODE_MIN);
    SHOW(OH_IPC_USER_ERROR_CODE_MAX);
    SHOW(NCP_NO_ERROR);
    SHOW(NCP_ERR_INVALID_PARAM);
    SHOW(NCP_ERR_NOT_SUPPORTED);
    SHOW(NCP_ERR_INTERNAL);
    SHOW(NCP_ERR_BUSY);
    SHOW(NCP_ERR_TIMEOUT);
    SHOW(NCP_ERR_SERVICE_ERROR);
    SHOW(NCP_ERR_MULTI_PROCESS_DISABLED);
    SHOW(NCP_ERR_ALREADY_IN_CHILD);
    SHOW(NCP_ERR_MAX_CHILD_PROCESSES_REACHED);
    SHOW(NCP_ERR_LIB_LOADING_FAILED);
    SHOW(NCP_ERR_CONNECTION_FAILED);
    SHOW(NCP_ERR_CALLBACK_NOT_EXIST);
    SHOW(NCP_ERR_INVALID_PID);
    SHOW(OH_IPC_REQUEST_MODE_SYNC);
    SHOW(OH_IPC_REQUEST_MODE_ASYNC);
    SHOW(sizeof(OH_IPC_MessageOption));
    SHOW(offsetof(OH_IPC_MessageOption, timeout));
    SHOW(offsetof(OH_IPC_MessageOption, reserved));
    SHOW(sizeof(NativeChildProcess_Args));
    SHOW(offsetof(NativeChildProcess_Args, fdList));
    SHOW(sizeof(NativeChildProcess_Fd));
    SHOW(offsetof(NativeChildProcess_Fd, fd));
    SHOW(offsetof(NativeChildProcess_Fd, next));
    SHOW(sizeof(NativeChildProcess_Options));
    SHOW(offsetof(NativeChildProcess_Options, reserved));
    return 0;
}
