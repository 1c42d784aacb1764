"""childkit.ipc: the Python counterpart of HarmonyOS IPCKit.

Parcels (:class:`MessageParcel`), stubs that serve requests (:class:`RemoteStub`), proxies
that send them (:class:`RemoteProxy`), request options (:class:`MessageOption`), the
calling identity and work threads (:class:`Skeleton`), shared memory (:class:`Ashmem`),
and the errors they raise (:class:`IPCError` with an :class:`IPCErrorCode`).

May import: the standard library and its own modules only; no other layer of childkit (the
launcher, the child processes, the pools and the C API all build on it).
"""

from childkit.ipc._arrays import SharedArray, read_array, write_array
from childkit.ipc._ashmem import Ashmem
from childkit.ipc._connection import Connection, channel_socketpairs
from childkit.ipc._errors import (
    DeadRemoteObjectError,
    IPCError,
    IPCErrorCode,
    IPCTimeoutError,
    ParamError,
    ParcelReadError,
    ParcelWriteError,
    ProtocolError,
)

# The SCM_RIGHTS helpers, for the launcher's control protocol (not part of the API).
from childkit.ipc._fdutil import close_fds as close_fds
from childkit.ipc._fdutil import received_fds as received_fds
from childkit.ipc._fdutil import rights as rights
from childkit.ipc._limits import MAX_PARCEL_DATA, MAX_PARCEL_FDS, MAX_PARCEL_OBJECTS
from childkit.ipc._option import MessageOption, RequestMode
from childkit.ipc._parcel import MessageParcel, RemoteObject
from childkit.ipc._proxy import RemoteProxy
from childkit.ipc._skeleton import Skeleton
from childkit.ipc._stub import RemoteStub

__all__ = [
    "MAX_PARCEL_DATA",
    "MAX_PARCEL_FDS",
    "MAX_PARCEL_OBJECTS",
    "Ashmem",
    "Connection",
    "DeadRemoteObjectError",
    "IPCError",
    "IPCErrorCode",
    "IPCTimeoutError",
    "MessageOption",
    "MessageParcel",
    "ParamError",
    "ParcelReadError",
    "ParcelWriteError",
    "ProtocolError",
    "RemoteObject",
    "RemoteProxy",
    "RemoteStub",
    "RequestMode",
    "SharedArray",
    "Skeleton",
    "channel_socketpairs",
    "read_array",
    "write_array",
]
