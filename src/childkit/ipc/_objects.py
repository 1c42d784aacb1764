"""The object table of one connection: stubs exported to the peer, proxies to the peer's.

Exports map a handle to ``[stub, references the peer holds]``; proxies map a peer's handle
to the one live proxy for it (weakly: users own proxies). A parcel's objects become wire
references when it is sent (:meth:`ObjectTable.refs_for`) and references become objects
when a frame is read (:meth:`ObjectTable.resolve`), the only two ways in and out, as
libbinder's ``onBinderLeaving``/``onBinderEntering``. References come back as RELEASE
frames, applied in order with the replies that mention the object (see ``_wire.Release``):
a release that names replies this side has not read yet waits in ``deferred``.

May import: ``_errors``, ``_forwarding``, ``_option``, ``_parcel``, ``_proxy``, ``_stub``,
``_transport``, ``_wire``. Nothing above.

Lock discipline
---------------
``ObjectTable.lock`` (the *table lock*) guards ``closed``, ``exports``, ``export_handles``,
``next_handle``, ``proxies``, ``deferred`` and, through the functions of :mod:`._proxy`,
each proxy's references and death recipients. It is the innermost lock: code here never
takes another while holding it (the link lock and the server lock may be held around it).
``gc_releases`` is a deque the garbage collector appends to from any thread, even inside
a locked section, so it takes no lock; the writer (:mod:`._transport`) pops it. ``exports``
is read without the lock on the hot path (a dict read is atomic; an entry is never
changed in place but for its count).
"""

from __future__ import annotations

import collections
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Protocol

from childkit.ipc import _proxy, _wire
from childkit.ipc._errors import DeadRemoteObjectError, ParamError, ProtocolError
from childkit.ipc._forwarding import ForwardingStub
from childkit.ipc._parcel import RemoteObject
from childkit.ipc._proxy import DeathRecipient, RemoteProxy, Session
from childkit.ipc._stub import RemoteStub
from childkit.ipc._transport import Transport

_PINNED = 1 << 62  # the root object's export count: never released by the peer
ROOT_HANDLE = 0
#: Releases that may wait for replies before the peer counts as misbehaving.
MAX_DEFERRED_RELEASES = 65536


class ObjectTable:
    """Exports and proxies of one connection, with the peer's reference counts.

    ``session`` is what the proxies made here send through; ``transport`` carries the
    RELEASE frames; ``submit_from_finalizer`` runs a task on a work thread from inside the
    garbage collector. ``requests_sent()`` bounds the replies a release may wait for.
    """

    def __init__(self, local_root: RemoteStub | None) -> None:
        self.lock = threading.Lock()
        self.closed = False
        self.exports: dict[int, list[object]] = {}
        self.export_handles: dict[int, int] = {}  # id(stub) -> handle
        self.next_handle = 1
        if local_root is not None:
            self.exports[ROOT_HANDLE] = [local_root, _PINNED]
            self.export_handles[id(local_root)] = ROOT_HANDLE
        self.proxies: dict[int, weakref.ref[RemoteProxy]] = {}
        self.gc_releases: collections.deque[tuple[int, int]] = collections.deque()
        # Releases waiting for replies: each with the channel calls it waits for too.
        self.deferred: list[tuple[_wire.Release, Sequence[tuple[ChannelCall, int]]]] = []
        # Wired by the connection once every part exists.
        self.session: Session | None = None
        self.transport: Transport | None = None
        self.submit_from_finalizer: Callable[[Callable[[], None]], None] = lambda task: None
        self.started = False
        self.requests_sent: Callable[[], int] = lambda: 0
        #: This side's calls in flight on extra channels: ``(channel, seq)`` pairs.
        self.channel_calls: Callable[[], Sequence[tuple[ChannelCall, int]]] = lambda: []

    # ------------------------------------------------------------------ proxies
    def root_proxy(self) -> RemoteProxy:
        """The proxy to the peer's root object; :class:`DeadRemoteObjectError` once closed."""
        with self.lock:
            if self.closed:
                assert self.transport is not None
                raise self.transport.dead()
            return self._proxy_for_locked(ROOT_HANDLE, add_ref=False)

    def _proxy_for_locked(self, handle: int, *, add_ref: bool) -> RemoteProxy:
        ref = self.proxies.get(handle)
        proxy = ref() if ref is not None else None
        if proxy is None or _proxy.is_closed(proxy):
            assert self.session is not None
            proxy = _proxy.new_proxy(self.session, handle, self.release_from_gc)
            self.proxies[handle] = weakref.ref(proxy)
            if len(self.proxies) > 64 and len(self.proxies) % 64 == 0:
                self.proxies = {h: r for h, r in self.proxies.items() if r() is not None}
        if add_ref and handle != ROOT_HANDLE:
            _proxy.add_reference(proxy)
        return proxy

    def add_death_recipient(self, proxy: RemoteProxy, recipient: DeathRecipient) -> None:
        with self.lock:
            if self.closed or _proxy.is_closed(proxy):
                raise DeadRemoteObjectError("the remote object is already dead")
            _proxy.add_recipient(proxy, recipient)

    def remove_death_recipient(self, proxy: RemoteProxy, recipient: DeathRecipient) -> None:
        with self.lock:
            _proxy.remove_recipient(proxy, recipient)

    def release_proxy(self, proxy: RemoteProxy) -> None:
        """Send the release of every reference ``proxy`` holds (it was closed)."""
        handle = _proxy.handle_of(proxy)
        with self.lock:
            count = _proxy.take_references(proxy)
            ref = self.proxies.get(handle)
            if ref is not None and ref() is proxy:
                del self.proxies[handle]
            if self.closed or count == 0:
                return
        transport = self.transport
        assert transport is not None
        try:
            transport.send(_wire.encode_release(handle, count, transport.replies_sent), None)
        except DeadRemoteObjectError:
            pass

    def release_from_gc(self, handle: int, refs: list[int]) -> None:
        # Runs in whatever thread the garbage collector ran in, possibly inside one of our
        # own locked sections: only queue the release; the next write sends it.
        if refs[0] and not self.closed:
            self.gc_releases.append((handle, refs[0]))
            refs[0] = 0
            if self.started:
                self.submit_from_finalizer(self._flush_gc_releases)

    def _flush_gc_releases(self) -> None:
        transport = self.transport
        if self.gc_releases and not self.closed and transport is not None:
            try:
                transport.send_oneway(b"", None)  # an empty chunk: the writer adds releases
            except DeadRemoteObjectError:
                pass

    # ------------------------------------------------------------------ crossing the wire
    def _export_locked(self, stub: RemoteStub) -> int:
        handle = self.export_handles.get(id(stub))
        if handle is None:
            handle = self.next_handle
            self.next_handle += 1
            self.export_handles[id(stub)] = handle
            self.exports[handle] = [stub, 1]
        else:
            entry = self.exports[handle]
            entry[1] = int(entry[1]) + 1  # type: ignore[call-overload]
        return handle

    def refs_for(self, objects: list[RemoteObject]) -> list[_wire.ObjectRef]:
        """The wire references of a parcel's objects being sent (each export counted)."""
        refs: list[_wire.ObjectRef] = []
        with self.lock:
            for obj in objects:
                if isinstance(obj, RemoteProxy):
                    handle = _proxy.handle_on(obj, self.session)  # type: ignore[arg-type]
                    if handle is not None:
                        if _proxy.is_closed(obj):
                            raise DeadRemoteObjectError(f"{obj!r} is closed and cannot be sent")
                        refs.append((_wire.OBJ_RECEIVER_STUB, handle))
                        continue
                    # A proxy to a third process: the peer gets a stub here that forwards.
                    stub: RemoteStub = _proxy.forwarder(obj, ForwardingStub)
                elif isinstance(obj, RemoteStub):
                    stub = obj
                else:
                    raise ParamError(f"cannot send {obj!r}")
                refs.append((_wire.OBJ_SENDER_STUB, self._export_locked(stub)))
        return refs

    def resolve(self, refs: list[_wire.ObjectRef]) -> list[RemoteObject]:
        """The objects a frame just read refers to. Call it as the frame is read, before
        anything later from the peer is looked at, so that a release sent after this
        message cannot drop the object first. :class:`ProtocolError` for a bad handle."""
        objects: list[RemoteObject] = []
        with self.lock:
            for kind, handle in refs:
                if kind == _wire.OBJ_SENDER_STUB:
                    objects.append(self._proxy_for_locked(handle, add_ref=True))
                else:
                    entry = self.exports.get(handle)
                    if entry is None:
                        raise ProtocolError(f"peer referred to handle {handle}, not exported here")
                    objects.append(entry[0])  # type: ignore[arg-type]
        return objects

    def stub(self, handle: int) -> RemoteStub | None:
        """The stub exported as ``handle`` (lock-free: see the lock discipline)."""
        entry = self.exports.get(handle)
        return None if entry is None else entry[0]  # type: ignore[return-value]

    # ------------------------------------------------------------------ releases
    def apply_release(self, frame: _wire.Release) -> None:
        """Apply a RELEASE from the peer now, or once the replies it names are read.
        :class:`ProtocolError` if it cannot be right.

        ``after_replies`` counts the replies of the main sockets only. A reply on an extra
        channel may name the object too, and each channel is its own queue, so the release
        also waits for every channel call in flight when it was read: such a reply was
        sent before the release, so it belongs to one of those calls."""
        transport = self.transport
        assert transport is not None
        waits = self.channel_calls()
        with self.lock:
            unread = frame.after_replies > transport.replies_received
            if unread or waits:
                if unread and frame.after_replies >= self.requests_sent():
                    raise ProtocolError("release refers to replies to requests never sent")
                if len(self.deferred) >= MAX_DEFERRED_RELEASES:
                    raise ProtocolError("too many releases waiting for replies")
                self.deferred.append((frame, waits))
                # The caller may have read those replies since the count was looked at,
                # and then found nothing deferred: look again (see apply_deferred).
                self._apply_deferred_locked(transport.replies_received)
                return
            self._apply_locked(frame)

    def apply_deferred(self) -> None:
        """Apply the releases that waited for replies this side has now read (call it
        after counting replies in ``transport.replies_received``, when ``deferred``)."""
        transport = self.transport
        assert transport is not None
        with self.lock:
            self._apply_deferred_locked(transport.replies_received)

    def _apply_deferred_locked(self, received: int) -> None:
        ready = [entry for entry in self.deferred if _ready(entry, received)]
        if ready:
            self.deferred = [entry for entry in self.deferred if not _ready(entry, received)]
            for release, _waits in ready:
                self._apply_locked(release)

    def _apply_locked(self, frame: _wire.Release) -> None:
        entry = self.exports.get(frame.handle)
        if entry is None:
            raise ProtocolError(f"peer released handle {frame.handle}, not exported here")
        if frame.handle == ROOT_HANDLE:
            return
        remaining = int(entry[1]) - frame.count  # type: ignore[call-overload]
        if remaining < 0:
            raise ProtocolError(f"peer released handle {frame.handle} more times than it got it")
        if remaining == 0:
            del self.exports[frame.handle]
            self.export_handles.pop(id(entry[0]), None)
        else:
            entry[1] = remaining

    # ------------------------------------------------------------------ death
    def close(self) -> list[DeathRecipient]:
        """Forget every export and proxy; return the proxies' death recipients (to be
        called once, by the connection). Idempotent: later calls return nothing."""
        with self.lock:
            if self.closed:
                return []
            self.closed = True
            proxies = [p for p in (r() for r in self.proxies.values()) if p is not None]
            recipients = [cb for p in proxies for cb in _proxy.take_recipients(p)]
            self.exports.clear()
            self.export_handles.clear()
        return recipients


def _ready(entry: tuple[_wire.Release, Sequence[tuple[ChannelCall, int]]], received: int,
           ) -> bool:
    """Whether a deferred release may be applied: its replies are read, and the channel
    calls it waits for are over (a channel's ``busy`` moved on from that call)."""
    release, waits = entry
    return release.after_replies <= received and all(
        channel.busy != seq for channel, seq in waits)


class ChannelCall(Protocol):
    """What the table sees of an extra call channel (``_channels.CallChannel``): the
    sequence number of its call in flight, 0 for none."""

    busy: int

