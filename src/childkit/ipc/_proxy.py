"""RemoteProxy: the caller's handle on a stub in another process (IPCKit's OHIPCRemoteProxy).

A proxy is identity plus death state: a handle in its session's object table, a closed
flag, its death recipients and its reference count. It sends through a :class:`Session`,
the small interface of the connection that made it (OpenHarmony's ``IRemoteInvoker``), and
never reaches into the connection's internals. The object table (:mod:`._objects`) made the
proxy and drives its state through the module functions at the end of this file, holding
the table's lock.

May import: ``_errors``, ``_option``, ``_parcel``, ``_stub``. Nothing above (the connection
and its roles import this module, never the reverse).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from childkit.ipc._errors import DeadRemoteObjectError, ParamError
from childkit.ipc._option import SYNC_OPTION, MessageOption
from childkit.ipc._parcel import MessageParcel, RemoteObject
from childkit.ipc._stub import INTERFACE_TRANSACTION, RemoteStub, check_request_code

DeathRecipient = Callable[[], object]


class Session(Protocol):
    """What a proxy needs of its connection: send, and keep its references and recipients.

    :class:`~childkit.ipc.Connection` is the one implementation.
    """

    @property
    def name(self) -> str: ...

    @property
    def peer_pid(self) -> int: ...

    @property
    def peer_uid(self) -> int: ...

    @property
    def closed(self) -> bool: ...

    def call(self, handle: int, code: int, parcel: MessageParcel) -> MessageParcel:
        """A sync request with the default option, arguments already checked."""
        ...

    def transact(self, handle: int, code: int, parcel: MessageParcel,
                 option: MessageOption) -> MessageParcel:
        """One request to the peer's object ``handle``."""
        ...

    def transact_batch(self, handle: int, requests: list[tuple[int, MessageParcel]],
                       option: MessageOption) -> list[MessageParcel]:
        """Many requests to ``handle`` in as few records as fit."""
        ...

    async def transact_async(self, handle: int, code: int, parcel: MessageParcel,
                             option: MessageOption) -> MessageParcel:
        """One request, awaited in the running event loop."""
        ...

    def add_death_recipient(self, proxy: RemoteProxy, recipient: DeathRecipient) -> None:
        """Call ``recipient`` when ``proxy``'s remote object dies."""
        ...

    def remove_death_recipient(self, proxy: RemoteProxy, recipient: DeathRecipient) -> None:
        """Forget a recipient added with :meth:`add_death_recipient`."""
        ...

    def release_proxy(self, proxy: RemoteProxy) -> None:
        """Give back the references ``proxy`` holds on the remote object."""
        ...


class RemoteProxy(RemoteObject):
    """Sends requests to a remote stub over a connection.

    Proxies are made by childkit (from a parcel, or as a child's root object), never by
    hand. :meth:`close` (or leaving a ``with`` block) releases the remote stub; a closed
    proxy, or one whose peer died, fails every request with ``OH_IPC_DEAD_REMOTE_OBJECT``.
    """

    __slots__ = ("_closed", "_conn", "_descriptor", "_forwarder", "_handle", "_recipients",
                 "_refs")

    def __init__(self, conn: Session, handle: int, refs: list[int]) -> None:
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

    async def send_request_async(
        self, code: int, data: MessageParcel, option: MessageOption | None = None
    ) -> MessageParcel:
        """:meth:`send_request`, awaited: the running event loop reads the reply and no
        thread waits (``childkit.aio.send_request`` is this). One-way requests return at
        once. Cancelling the await (or its timeout) forgets the call: a late reply is
        dropped and the connection stays usable.

        Raises what :meth:`send_request` raises; the timeout of ``option`` gives
        :class:`IPCTimeoutError`.
        """
        check_request_code(code)
        if not isinstance(data, MessageParcel):
            raise ParamError(f"data must be a MessageParcel, not {type(data).__name__}")
        option = option or SYNC_OPTION
        if not isinstance(option, MessageOption):
            raise ParamError(f"option must be a MessageOption, not {type(option).__name__}")
        if self._closed:
            raise DeadRemoteObjectError("the proxy is closed")
        return await self._conn.transact_async(self._handle, code, data, option)

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
        batch = request_pairs(requests)
        for code, data in batch:
            check_request_code(code)
            if not isinstance(data, MessageParcel):
                raise ParamError(f"data must be a MessageParcel, not {type(data).__name__}")
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
        self._conn.add_death_recipient(self, recipient)

    def remove_death_recipient(self, recipient: DeathRecipient) -> None:
        """Forget ``recipient``. Raises :class:`ParamError` if it was not added."""
        self._conn.remove_death_recipient(self, recipient)

    def close(self) -> None:
        """Release the remote stub and make this proxy dead. Idempotent."""
        if not self._closed:
            self._closed = True
            self._conn.release_proxy(self)

    def __enter__(self) -> RemoteProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connection(self) -> Session:
        """The connection this proxy sends through."""
        return self._conn

    def __repr__(self) -> str:
        state = "dead" if self.is_object_dead() else "live"
        return f"<RemoteProxy handle={self._handle} {state} on {self._conn.name}>"


def request_pairs(requests: Iterable[tuple[int, MessageParcel]]) -> list[tuple[int, MessageParcel]]:
    """``requests`` as a list, each a ``(code, parcel)`` pair (the items themselves are
    the caller's to check); :class:`ParamError` if it is not an iterable of pairs."""
    try:
        batch = list(requests)
    except TypeError:
        raise ParamError(f"requests must be an iterable of (code, MessageParcel) pairs, "
                         f"not {type(requests).__name__}") from None
    for item in batch:
        if not isinstance(item, tuple) or len(item) != 2:
            raise ParamError(f"each request must be a (code, MessageParcel) pair, not {item!r}")
    return batch


class ProxyRef(weakref.ref):  # type: ignore[type-arg]
    """The object table's weak reference to a proxy, with what its callback needs to give
    the proxy's references back once it is collected: ``handle`` and ``refs`` (the
    proxy's shared ``[count]``). The callback fires only while the table holds the
    reference. Not :class:`weakref.finalize`: that registers each proxy in a process-wide
    registry which interpreter exit iterates while work threads may still add to it, and
    costs several objects per proxy."""

    __slots__ = ("handle", "refs")
    handle: int
    refs: list[int]


# The object table's side of a proxy: call these holding the table's lock.
def new_proxy(session: Session, handle: int,
              collected: Callable[[ProxyRef], Any]) -> tuple[RemoteProxy, ProxyRef]:
    """A proxy to ``handle`` holding no references yet, and the weak reference the table
    keeps of it: when the proxy is collected unclosed, ``collected(ref)`` is called (by
    the garbage collector, in any thread) to give its references back."""
    proxy = RemoteProxy(session, handle, [0])
    ref = ProxyRef(proxy, collected)
    ref.handle = handle
    ref.refs = proxy._refs
    return proxy, ref


def is_closed(proxy: RemoteProxy) -> bool:
    """Whether ``proxy`` was closed (by its user, or by its connection's death)."""
    return proxy._closed


def add_reference(proxy: RemoteProxy) -> None:
    """Count one more reference the peer gave this side (a parcel carried the object)."""
    proxy._refs[0] += 1


def take_references(proxy: RemoteProxy) -> int:
    """Forget ``proxy``'s references and recipients; return how many to release."""
    count = proxy._refs[0]
    proxy._refs[0] = 0
    proxy._recipients = []
    return count


def handle_on(proxy: RemoteProxy, session: Session) -> int | None:
    """``proxy``'s handle if it sends through ``session``; ``None`` for another session's."""
    return proxy._handle if proxy._conn is session else None


def handle_of(proxy: RemoteProxy) -> int:
    """The handle ``proxy`` names in its session's table."""
    return proxy._handle


def forwarder(proxy: RemoteProxy, make: Callable[[RemoteProxy], RemoteStub]) -> RemoteStub:
    """The stub that stands in for ``proxy`` when it is sent to a third process (made once
    by ``make``)."""
    if proxy._forwarder is None:
        proxy._forwarder = make(proxy)
    return proxy._forwarder


def add_recipient(proxy: RemoteProxy, recipient: DeathRecipient) -> None:
    """Add ``recipient`` once (adding it again keeps one)."""
    if recipient not in proxy._recipients:
        proxy._recipients.append(recipient)


def remove_recipient(proxy: RemoteProxy, recipient: DeathRecipient) -> None:
    """Remove ``recipient``; :class:`ParamError` if it was never added."""
    try:
        proxy._recipients.remove(recipient)
    except ValueError:
        raise ParamError(f"{recipient!r} is not a death recipient of {proxy!r}") from None


def take_recipients(proxy: RemoteProxy) -> list[DeathRecipient]:
    """Take ``proxy``'s recipients (its remote object died: they are called once)."""
    recipients, proxy._recipients = proxy._recipients, []
    return recipients
