"""Many children as one: ``ChildProcessPool`` (IPC children behind one proxy-like face) and
``ChildProcessExecutor`` (``concurrent.futures`` over children), with the executor's worker
module that runs in each child (``_executor_worker``, an IPC-mode entry).

May import: :mod:`childkit.process`, :mod:`childkit.ipc`, :mod:`childkit.common`.
"""

from childkit.pool._executor import BrokenChildExecutor as BrokenChildExecutor
from childkit.pool._executor import ChildExecutorError as ChildExecutorError
from childkit.pool._executor import ChildProcessExecutor as ChildProcessExecutor
from childkit.pool._executor import ChildTaskError as ChildTaskError
from childkit.pool._executor import ExecutorParamError as ExecutorParamError
from childkit.pool._executor import MainNotImportableError as MainNotImportableError
from childkit.pool._executor import RemoteTraceback as RemoteTraceback
from childkit.pool._executor import TaskTimeoutError as TaskTimeoutError
from childkit.pool._executor import WorkerDiedError as WorkerDiedError
from childkit.pool._pool import ChildProcessPool as ChildProcessPool
