"""RemoteProxy: the caller's handle on a stub in another process (IPCKit's OHIPCRemoteProxy)."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from childkit.ipc._errors import DeadRemoteObjectError, ParamError
from childkit.ipc._object import RemoteObject
from childkit.ipc._option import SYNC_OPTION, MessageOption
from childkit.ipc._parcel import MessageParcel
from childkit.ipc._stub import INTERFACE_TRANSACTION, RemoteStub, check_request_code

if TYPE_CHECKING:
    from childkit.ipc._connection import Connection

DeathRecipient = Callable[[], object]


class RemoteProxy(RemoteObject):
    """Sends requests to a remote stub over a connection.

    Proxies are made by childkit (from a parcel, or as a child's root object), never by
    hand. :meth:`close` (or leaving a ``with`` block) releases the remote stub; a closed
    proxy, or one whose peer died, fails every request with ``OH_IPC_DEAD_REMOTE_OBJECT``.
    """

    __slots__ = ("_closed", "_conn", "_descriptor", "_forwarder", "_handle", "_recipients",
                 "_refs")

    def __init__(self, conn: Connection, handle: int, refs: list[int]) -> None:
        self._conn = conn
        self._handle = handle
        self._refs = refs  # [count] shared with the GC finalizer that releases them
        self._closed = False
        self._recipients: list[DeathRecipient] = []
        self._descriptor: str | None = None
        self._forwarder: RemoteStub | None = None

    def send_request(
        self, code: int, data: MessageParcel, option: MessageOption | None = None
    ) -> MessageParcel:
        """Send request ``code`` with ``data`` to the remote stub.

        Sync (the default): waits for the reply, up to ``option.timeout``, and returns the
        reply parcel, which the caller owns (close it, or let it be collected). One-way
        (``RequestMode.ASYNC``): returns an empty parcel once the request is queued; one-way
        requests from one proxy reach the stub in the order sent.

        Raises :class:`IPCError`: ``OH_IPC_CODE_OUT_OF_RANGE`` for a code outside
        0x1..0xFFFFFF, ``OH_IPC_CHECK_PARAM_ERROR`` for bad arguments,
        :class:`DeadRemoteObjectError` if the proxy is closed or the peer is gone,
        :class:`IPCTimeoutError` when the timeout passes, or the stub's own error code.
        """
        if (option is None and code.__class__ is int and 0 < code <= 0xFFFFFF
                and data.__class__ is MessageParcel and not self._closed):
            return self._conn.call(self._handle, code, data)  # the common case, checked
        if code.__class__ is not int or not 0 < code <= 0xFFFFFF:
            check_request_code(code)
        if data.__class__ is not MessageParcel and not isinstance(data, MessageParcel):
            raise ParamError(f"data must be a MessageParcel, not {type(data).__name__}")
        if option is None:
            option = SYNC_OPTION
        elif not isinstance(option, MessageOption):
            raise ParamError(f"option must be a MessageOption, not {type(option).__name__}")
        if self._closed:
            raise DeadRemoteObjectError("the proxy is closed")
        return self._conn.transact(self._handle, code, data, option)

    def send_requests(
        self,
        requests: Sequence[tuple[int, MessageParcel]],
        option: MessageOption | None = None,
    ) -> list[MessageParcel]:
        """Send a batch of ``(code, data)`` requests in as few writes as they fit.

        One-way (``RequestMode.ASYNC``): returns ``[]`` once queued; the stub gets them in
        order. Sync: the requests that share a record run in order on one work thread of
        the peer and their replies come back together (a batch larger than a record is read
        in parts, which may run at the same time), so a request must not wait for a later
        one of its batch; returns the replies in request order, and raises the first
        failure (the other replies are closed). Every code and parcel is checked before
        anything is sent.
        """
        if option is None:
            option = SYNC_OPTION
        elif not isinstance(option, MessageOption):
            raise ParamError(f"option must be a MessageOption, not {type(option).__name__}")
        batch = list(requests)
        for item in batch:
            if not isinstance(item, tuple) or len(item) != 2:
                raise ParamError(f"each request must be a (code, MessageParcel) pair, not {item!r}")
            check_request_code(item[0])
            if not isinstance(item[1], MessageParcel):
                raise ParamError(f"data must be a MessageParcel, not {type(item[1]).__name__}")
        if self._closed:
            raise DeadRemoteObjectError("the proxy is closed")
        if not batch:
            return []
        return self._conn.transact_batch(self._handle, batch, option)

    def get_descriptor(self) -> str:
        """The remote stub's interface descriptor (asked once, then cached)."""
        if self._descriptor is None:
            if self._closed:
                raise DeadRemoteObjectError("the proxy is closed")
            with MessageParcel() as data:
                reply = self._conn.transact(self._handle, INTERFACE_TRANSACTION, data,
                                            SYNC_OPTION)
            with reply:
                self._descriptor = reply.read_string()
        return self._descriptor

    def is_object_dead(self) -> bool:
        return self._closed or self._conn.closed

    def add_death_recipient(self, recipient: DeathRecipient) -> None:
        """Call ``recipient()`` once, on a separate thread, when the remote object dies.

        Adding the same recipient twice keeps one. Raises :class:`DeadRemoteObjectError`
        if the remote object is already dead (the recipient would never be called).
        """
        if not callable(recipient):
            raise ParamError(f"death recipient must be callable, not {recipient!r}")
        self._conn._add_death_recipient(self, recipient)

    def remove_death_recipient(self, recipient: DeathRecipient) -> None:
        """Forget ``recipient``. Raises :class:`ParamError` if it was not added."""
        self._conn._remove_death_recipient(self, recipient)

    def close(self) -> None:
        """Release the remote stub and make this proxy dead. Idempotent."""
        if not self._closed:
            self._closed = True
            self._conn._release_proxy(self)

    def __enter__(self) -> RemoteProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connection(self) -> Connection:
        return self._conn

    def __repr__(self) -> str:
        state = "dead" if self.is_object_dead() else "live"
        return f"<RemoteProxy handle={self._handle} {state} on {self._conn.name}>"


def attach_release_finalizer(proxy: RemoteProxy, release: Callable[[int, list[int]], Any]) -> None:
    """When ``proxy`` is collected unclosed, release its references (see Connection)."""
    weakref.finalize(proxy, release, proxy._handle, proxy._refs)
