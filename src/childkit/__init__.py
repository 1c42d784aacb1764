"""childkit: HarmonyOS-style native child processes and a Binder-style IPC kit for Python.

Children start in two ways, as in OpenHarmony's ``native_child_process.h``:
:func:`start_native_child_process` (a function with start-up args and fds) and
:func:`create_native_child_process` / :func:`connect` (a module whose ``on_connect()``
stub the parent talks to over :mod:`childkit.ipc`). Children are forked from a
pre-started launcher process, so a start costs about a fork.
"""

from childkit.common import ChildkitError, ErrCode
from childkit.entry import ChildProcessArgs, get_current_child_process_args
from childkit.pool import (
    BrokenChildExecutor,
    ChildExecutorError,
    ChildProcessExecutor,
    ChildProcessPool,
    ChildTaskError,
    ExecutorParamError,
    MainNotImportableError,
    RemoteTraceback,
    TaskTimeoutError,
    WorkerDiedError,
)
from childkit.process import (
    MAX_CHILDREN,
    START_TIMEOUT,
    ChildConnection,
    ChildExitInfo,
    ChildProcessOptions,
    IsolationMode,
    connect,
    create_native_child_process,
    is_native_child_process_supported,
    kill_child_process,
    prestart_launcher,
    register_child_process_exit_callback,
    set_preload_modules,
    shutdown,
    start_native_child_process,
    unregister_child_process_exit_callback,
)

__all__ = [
    "MAX_CHILDREN",
    "START_TIMEOUT",
    "BrokenChildExecutor",
    "ChildConnection",
    "ChildExecutorError",
    "ChildExitInfo",
    "ChildProcessArgs",
    "ChildProcessExecutor",
    "ChildProcessOptions",
    "ChildProcessPool",
    "ChildTaskError",
    "ChildkitError",
    "ErrCode",
    "ExecutorParamError",
    "IsolationMode",
    "MainNotImportableError",
    "RemoteTraceback",
    "TaskTimeoutError",
    "WorkerDiedError",
    "connect",
    "create_native_child_process",
    "get_current_child_process_args",
    "is_native_child_process_supported",
    "kill_child_process",
    "prestart_launcher",
    "register_child_process_exit_callback",
    "set_preload_modules",
    "shutdown",
    "start_native_child_process",
    "unregister_child_process_exit_callback",
]
