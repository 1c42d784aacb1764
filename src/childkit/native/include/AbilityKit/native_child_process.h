/*
 * AbilityKit's native child process API (childkit): the declarations of OpenHarmony's
 * native_child_process.h (API 12 to the current one). The structs and enums are what a
 * native child of childkit receives (`void Main(NativeChildProcess_Args)` in args mode);
 * the OH_Ability_* functions belong to libchild_process.so (docs/native.md says which of
 * them this build provides).
 */
#ifndef OHOS_ABILITY_RUNTIME_C_NATIVE_CHILD_PROCESS_H
#define OHOS_ABILITY_RUNTIME_C_NATIVE_CHILD_PROCESS_H

#include <stdbool.h>
#include <stdint.h>

#include "IPCKit/ipc_cparcel.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Results of the native child process calls. @since 12 */
typedef enum Ability_NativeChildProcess_ErrCode {
    NCP_NO_ERROR = 0,
    NCP_ERR_INVALID_PARAM = 401,
    NCP_ERR_NOT_SUPPORTED = 801,
    NCP_ERR_INTERNAL = 16000050,
    NCP_ERR_BUSY = 16010001,
    NCP_ERR_TIMEOUT = 16010002,
    NCP_ERR_SERVICE_ERROR = 16010003,
    NCP_ERR_MULTI_PROCESS_DISABLED = 16010004,
    NCP_ERR_ALREADY_IN_CHILD = 16010005,
    NCP_ERR_MAX_CHILD_PROCESSES_REACHED = 16010006,
    NCP_ERR_LIB_LOADING_FAILED = 16010007,
    NCP_ERR_CONNECTION_FAILED = 16010008,
    NCP_ERR_CALLBACK_NOT_EXIST = 16010009,
    NCP_ERR_INVALID_PID = 16010010,
} Ability_NativeChildProcess_ErrCode;

/** How isolated the child is from its parent. @since 13 */
typedef enum NativeChildProcess_IsolationMode {
    NCP_ISOLATION_MODE_NORMAL = 0,
    NCP_ISOLATION_MODE_ISOLATED = 1,
} NativeChildProcess_IsolationMode;

/** Start configuration (isolation mode and uid, process name). @since 20 */
typedef struct Ability_ChildProcessConfigs Ability_ChildProcessConfigs;

Ability_ChildProcessConfigs* OH_Ability_CreateChildProcessConfigs();

Ability_NativeChildProcess_ErrCode OH_Ability_DestroyChildProcessConfigs(Ability_ChildProcessConfigs* configs);

Ability_NativeChildProcess_ErrCode OH_Ability_ChildProcessConfigs_SetIsolationMode(
    Ability_ChildProcessConfigs* configs, NativeChildProcess_IsolationMode isolationMode);

Ability_NativeChildProcess_ErrCode OH_Ability_ChildProcessConfigs_SetIsolationUid(
    Ability_ChildProcessConfigs* configs, bool isolationUid);

Ability_NativeChildProcess_ErrCode OH_Ability_ChildProcessConfigs_SetProcessName(Ability_ChildProcessConfigs* configs,
    const char* processName);

/** Called once, on a separate thread, with the outcome of a create call and the child's
 * root proxy (the callee owns it: OH_IPCRemoteProxy_Destroy). @since 12 */
typedef void (*OH_Ability_OnNativeChildProcessStarted)(int errCode, OHIPCRemoteProxy *remoteProxy);

int OH_Ability_CreateNativeChildProcess(const char* libName,
                                        OH_Ability_OnNativeChildProcessStarted onProcessStarted);

Ability_NativeChildProcess_ErrCode OH_Ability_CreateNativeChildProcessWithConfigs(const char* libName,
    Ability_ChildProcessConfigs* configs, OH_Ability_OnNativeChildProcessStarted onProcessStarted);

/** One named fd of a child's start-up arguments. @since 13 */
typedef struct NativeChildProcess_Fd {
    char* fdName;
    int32_t fd;
    struct NativeChildProcess_Fd* next;
} NativeChildProcess_Fd;

/** The named fds, a linked list (head NULL when empty). @since 13 */
typedef struct NativeChildProcess_FdList {
    struct NativeChildProcess_Fd* head;
} NativeChildProcess_FdList;

/** Start options. @since 13 */
typedef struct NativeChildProcess_Options {
    NativeChildProcess_IsolationMode isolationMode;
    int64_t reserved;
} NativeChildProcess_Options;

/** Start-up arguments of an args-mode child. @since 13 */
typedef struct NativeChildProcess_Args {
    char* entryParams;
    struct NativeChildProcess_FdList fdList;
} NativeChildProcess_Args;

Ability_NativeChildProcess_ErrCode OH_Ability_StartNativeChildProcess(
    const char* entry, NativeChildProcess_Args args,
    NativeChildProcess_Options options, int32_t *pid);

Ability_NativeChildProcess_ErrCode OH_Ability_StartNativeChildProcessWithConfigs(
    const char* entry, NativeChildProcess_Args args, Ability_ChildProcessConfigs* configs, int32_t* pid);

/** In a child, its start-up arguments (owned by the library); NULL elsewhere. @since 17 */
NativeChildProcess_Args* OH_Ability_GetCurrentChildProcessArgs();

/** Called on a separate thread when a child started by this process exits. @since 20 */
typedef void (*OH_Ability_OnNativeChildProcessExit)(int32_t pid, int32_t signal);

Ability_NativeChildProcess_ErrCode OH_Ability_RegisterNativeChildProcessExitCallback(
    OH_Ability_OnNativeChildProcessExit onProcessExit);

Ability_NativeChildProcess_ErrCode OH_Ability_UnregisterNativeChildProcessExitCallback(
    OH_Ability_OnNativeChildProcessExit onProcessExit);

Ability_NativeChildProcess_ErrCode OH_Ability_KillChildProcess(int32_t pid);

bool OH_Ability_IsNativeChildProcessSupported();

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* OHOS_ABILITY_RUNTIME_C_NATIVE_CHILD_PROCESS_H */
