/*
 * Minimal stand-in for AbilityKit's <AbilityKit/native_child_process.h>, enough for a
 * Start-mode entry to compile on Linux against childkit. Only the argument structures
 * are declared: the layouts match the OpenHarmony header field for field, which is
 * what childkit's ctypes mirrors (src/childkit/_native.py) rely on.
 */
#ifndef CHILDKIT_TEST_NATIVE_CHILD_PROCESS_H
#define CHILDKIT_TEST_NATIVE_CHILD_PROCESS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum NativeChildProcess_IsolationMode {
    NCP_ISOLATION_MODE_NORMAL = 0,
    NCP_ISOLATION_MODE_ISOLATED = 1,
} NativeChildProcess_IsolationMode;

/* One named file descriptor; the list is ordered by name. */
typedef struct NativeChildProcess_Fd {
    char *fdName;
    int32_t fd;
    struct NativeChildProcess_Fd *next;
} NativeChildProcess_Fd;

typedef struct NativeChildProcess_FdList {
    struct NativeChildProcess_Fd *head;
} NativeChildProcess_FdList;

typedef struct NativeChildProcess_Options {
    NativeChildProcess_IsolationMode isolationMode;
    int64_t reserved;
} NativeChildProcess_Options;

typedef struct NativeChildProcess_Args {
    char *entryParams;
    struct NativeChildProcess_FdList fdList;
} NativeChildProcess_Args;

#ifdef __cplusplus
}
#endif

#endif /* CHILDKIT_TEST_NATIVE_CHILD_PROCESS_H */
