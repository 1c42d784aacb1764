"""The child-process layer, the application's side of the seed's two start modes: the
public start, connect and kill calls (``_children``), the registry of live children with
its 50-slot limit and the launcher's lifetime (``_manager``), ``ChildProcessOptions``
(``_options``), and exit notification (``_exit``: ``ChildExitInfo`` and the callback thread).

May import: :mod:`childkit.launcher` (its protocol), :mod:`childkit.entry`,
:mod:`childkit.sandbox`, :mod:`childkit.ipc`, :mod:`childkit.common`. Imported by the public
face, :mod:`childkit.pool`, :mod:`childkit.aio` and :mod:`childkit.cli`.
"""

from childkit.process._child import Child as Child
from childkit.process._children import ChildConnection as ChildConnection
from childkit.process._children import IPCStart as IPCStart
from childkit.process._children import connect as connect
from childkit.process._children import create_native_child_process as create_native_child_process
from childkit.process._children import (
    is_native_child_process_supported as is_native_child_process_supported,
)
from childkit.process._children import kill_child_process as kill_child_process
from childkit.process._children import prestart_launcher as prestart_launcher
from childkit.process._children import (
    register_child_process_exit_callback as register_child_process_exit_callback,
)
from childkit.process._children import set_preload_modules as set_preload_modules
from childkit.process._children import shutdown as shutdown
from childkit.process._children import start_native_child_process as start_native_child_process
from childkit.process._children import start_threads as start_threads
from childkit.process._children import (
    unregister_child_process_exit_callback as unregister_child_process_exit_callback,
)
from childkit.process._exit import ChildExitInfo as ChildExitInfo
from childkit.process._manager import MAX_CHILDREN as MAX_CHILDREN
from childkit.process._manager import START_TIMEOUT as START_TIMEOUT
from childkit.process._manager import manager as manager
from childkit.process._options import ChildProcessOptions as ChildProcessOptions
from childkit.process._options import IsolationMode as IsolationMode
