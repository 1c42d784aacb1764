"""What a child runs and with what: entry strings (``"pkg.mod:func"``, ``"worker"``,
``"libx.so:Main"``) parsed and resolved, the start-up args (``ChildProcessArgs``, the
child's current args) and the C ``NativeChildProcess_Args`` layout handed to a native entry.
The parent checks entries and args with it before a start; a forked child resolves and runs
them.

May import: :mod:`childkit.ipc` (the stub an IPC entry returns), :mod:`childkit.common`.
"""

from childkit.entry._args import MAX_ENTRY_PARAMS_BYTES as MAX_ENTRY_PARAMS_BYTES
from childkit.entry._args import MAX_FDS as MAX_FDS
from childkit.entry._args import ChildProcessArgs as ChildProcessArgs
from childkit.entry._args import get_current_child_process_args as get_current_child_process_args
