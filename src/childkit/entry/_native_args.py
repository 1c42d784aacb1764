"""ctypes mirrors of AbilityKit's C structures, and a builder for ``NativeChildProcess_Args``.

The layouts follow ``native_child_process.h`` field for field::

    typedef struct NativeChildProcess_Fd {
        char *fdName; int32_t fd; struct NativeChildProcess_Fd *next;
    } NativeChildProcess_Fd;
    typedef struct NativeChildProcess_FdList { struct NativeChildProcess_Fd *head; } ...;
    typedef struct NativeChildProcess_Args {
        char *entryParams; struct NativeChildProcess_FdList fdList;
    } NativeChildProcess_Args;
    typedef struct NativeChildProcess_Options {
        NativeChildProcess_IsolationMode isolationMode; int64_t reserved;
    } NativeChildProcess_Options;

A native entry ``void Main(NativeChildProcess_Args args)`` takes the struct by value.
"""

from __future__ import annotations

import ctypes
from typing import Any

from childkit.entry._args import ChildProcessArgs

NCP_ISOLATION_MODE_NORMAL = 0
NCP_ISOLATION_MODE_ISOLATED = 1


class NativeChildProcess_Fd(ctypes.Structure):
    """One named descriptor in the linked list the child receives."""


NativeChildProcess_Fd._fields_ = [
    ("fdName", ctypes.c_char_p),
    ("fd", ctypes.c_int32),
    ("next", ctypes.POINTER(NativeChildProcess_Fd)),
]


class NativeChildProcess_FdList(ctypes.Structure):
    """The head of the descriptor list (NULL when there are none)."""

    _fields_ = [("head", ctypes.POINTER(NativeChildProcess_Fd))]


class NativeChildProcess_Args(ctypes.Structure):
    """The start-up arguments, passed by value to a native ``Main``."""

    _fields_ = [("entryParams", ctypes.c_char_p), ("fdList", NativeChildProcess_FdList)]


class NativeChildProcess_Options(ctypes.Structure):
    """The start options (``isolationMode`` is a C enum, an ``int``)."""

    _fields_ = [("isolationMode", ctypes.c_int), ("reserved", ctypes.c_int64)]


#: The C type of a Start-mode entry: ``void Main(NativeChildProcess_Args)``.
NativeEntryFunc = ctypes.CFUNCTYPE(None, NativeChildProcess_Args)


def build_native_args(args: ChildProcessArgs) -> NativeChildProcess_Args:
    """Lay ``args`` out as a ``NativeChildProcess_Args`` that C code can read.

    The string and list nodes live in buffers owned by the returned struct (kept on
    it as ``_keepalive``); they stay valid exactly as long as the struct object does.
    The buffers are writable copies, so C code that writes through the ``char *``
    cannot corrupt Python objects. The fd list is ordered by name (by UTF-8 bytes, the
    order of OpenHarmony's ``std::map``), as the child sees it in OpenHarmony; an empty
    ``fds`` gives ``fdList.head == NULL``. ``entryParams`` is never NULL (an empty
    string stays an empty C string).

    Raises:
        ChildkitError: ``NCP_ERR_INVALID_PARAM`` if ``args`` breaks a limit
            (see :meth:`ChildProcessArgs.validate`).
    """
    args.validate()
    keep: list[Any] = []
    native = NativeChildProcess_Args()

    params = ctypes.create_string_buffer(args.entry_params.encode("utf-8"))
    keep.append(params)
    native.entryParams = ctypes.cast(params, ctypes.c_char_p)

    names = sorted(args.fds, key=lambda name: name.encode("utf-8"))
    if names:
        nodes = (NativeChildProcess_Fd * len(names))()
        keep.append(nodes)
        for index, name in enumerate(names):
            name_buf = ctypes.create_string_buffer(name.encode("utf-8"))
            keep.append(name_buf)
            nodes[index].fdName = ctypes.cast(name_buf, ctypes.c_char_p)
            nodes[index].fd = args.fds[name]
            if index + 1 < len(names):
                nodes[index].next = ctypes.pointer(nodes[index + 1])
        native.fdList.head = ctypes.pointer(nodes[0])
    # A ctypes Structure defined in Python has an instance __dict__; holding the
    # buffers there ties their lifetime to the struct's.
    native._keepalive = keep
    return native


def read_native_args(native: NativeChildProcess_Args) -> ChildProcessArgs:
    """Read a ``NativeChildProcess_Args`` back into a :class:`ChildProcessArgs`.

    Walks the list in order; a repeated name keeps its first fd, as OpenHarmony does.
    Raises ``UnicodeDecodeError`` if a string is not UTF-8.
    """
    raw = native.entryParams
    params = raw.decode("utf-8") if raw is not None else ""
    fds: dict[str, int] = {}
    node = native.fdList.head
    while node:
        entry = node.contents
        name = (entry.fdName or b"").decode("utf-8")
        fds.setdefault(name, int(entry.fd))
        node = entry.next
    return ChildProcessArgs(params, fds)
