"""The object table of one connection: stubs exported to the peer, proxies to the peer's.

Exports map a handle to ``[stub, references the peer holds]``; proxies map a peer's handle
to the one live proxy for it (weakly: users own proxies). A parcel's objects become wire
references when it is sent (:meth:`ObjectTable.refs_for`) and references become objects
when a frame is read (:meth:`ObjectTable.resolve`), the only two ways in and out, as
libbinder's ``onBinderLeaving``/``onBinderEntering``. References come back as RELEASE
frames, applied in order with the replies that mention the object (see ``_wire.Release``):
a release that names replies this side has not read yet waits in ``deferred``.

What a peer can make this table hold is bounded and cheap to keep: waiting releases
(:data:`MAX_DEFERRED_RELEASES`, merged, O(log n) each, never more than the peer holds)
and live proxies (:data:`MAX_PEER_PROXIES`; dead entries pruned amortized O(1)).

May import: ``_errors``, ``_forwarding``, ``_option``, ``_parcel``, ``_proxy``, ``_stub``,
``_transport``, ``_wire``. Nothing above.

Lock discipline
---------------
``ObjectTable.lock`` (the *table lock*) guards ``closed``, ``exports``, ``export_handles``,
``next_handle``, ``proxies``, ``deferred`` (with its heap, channel waits and per-handle
sums) and, through the functions of :mod:`._proxy`, each proxy's references and death
recipients. It is the innermost lock: code here never
takes another while holding it (the link lock and the server lock may be held around it).
``gc_releases`` is a deque the garbage collector appends to from any thread, even inside
a locked section, so it takes no lock; the writer (:mod:`._transport`) pops it. ``exports``
is read without the lock on the hot path (a dict read is atomic; an entry is never
changed in place but for its count).
"""

from __future__ import annotations

import collections
import heapq
import threading
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
#: Releases that may wait for replies before the peer counts as misbehaving (after merging
#: those of one object waiting for the same replies: each costs about 300 bytes, and
#: O(log n) time to apply).
MAX_DEFERRED_RELEASES = 16384
#: Live proxies one peer may give this side (each costs about 450 bytes): found at the
#: table's pruning, when the peer hands over new objects (so up to 1/16 more in between),
#: and a protocol error.
MAX_PEER_PROXIES = 65536
_PRUNE_STEP = MAX_PEER_PROXIES // 16
#: What one remote object a queued request holds costs this process, in bytes, as the
#: one-way backlog counts it: a new proxy with its counters and the table's weak reference
#: and slot (about 450 bytes measured), and the frame's wire reference (about 90).
PROXY_COST = 640


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
        self.proxies: dict[int, _proxy.ProxyRef] = {}
        self._pruned_at = 64  # the table's size after the last pruning (at least 64)
        self.gc_releases: collections.deque[tuple[int, int]] = collections.deque()
        # Releases waiting for replies, merged per (after_replies, handle, channel calls
        # waited for): each key's [count, channel calls still in flight]. The heap orders
        # the keys by the replies they wait for; ``call_waits`` lists, per channel call,
        # the keys waiting for it (see _apply_deferred_locked). ``pending`` sums the
        # counts waiting per handle: more than the export's count is a protocol error.
        self.deferred: dict[_DeferKey, list[int]] = {}
        self._by_reply: list[tuple[int, _DeferKey]] = []
        self._call_waits: dict[tuple[int, int], tuple[ChannelCall, int, list[_DeferKey]]] = {}
        self._pending: dict[int, int] = {}
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
            proxies = self.proxies
            last = self._pruned_at
            if len(proxies) >= min(2 * last, last + _PRUNE_STEP):
                # Dead references go once the table has doubled, or grown by a step, since
                # the last pruning: amortized O(1) per proxy made (at most 16 looks).
                proxies = self.proxies = {h: r for h, r in proxies.items()
                                          if r() is not None}
                self._pruned_at = max(64, len(proxies))
                if len(proxies) >= MAX_PEER_PROXIES:
                    raise ProtocolError(f"the peer gave this side {MAX_PEER_PROXIES} live "
                                        "objects, the most one link may hold")
            assert self.session is not None
            proxy, proxies[handle] = _proxy.new_proxy(self.session, handle,
                                                      self._proxy_collected)
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

    def _proxy_collected(self, ref: _proxy.ProxyRef) -> None:
        # Runs in whatever thread the garbage collector ran in, possibly inside one of our
        # own locked sections: only queue the release; the next write sends it.
        refs = ref.refs
        if refs[0] and not self.closed:
            self.gc_releases.append((ref.handle, refs[0]))
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
        sent before the release, so it belongs to one of those calls.

        A waiting release costs O(log n) (n: those waiting), and those of one object that
        wait for the same replies are merged: a peer cannot make this side rescan them."""
        transport = self.transport
        assert transport is not None
        waits = self.channel_calls()
        with self.lock:
            unread = frame.after_replies > transport.replies_received
            if not (unread or waits):
                self._apply_locked(frame.handle, frame.count)
                return
            if unread and frame.after_replies >= self.requests_sent():
                raise ProtocolError("release refers to replies to requests never sent")
            handle = frame.handle
            export = self.exports.get(handle)
            if export is None:
                raise ProtocolError(f"peer released handle {handle}, not exported here")
            if handle == ROOT_HANDLE:
                return  # pinned: nothing to wait for
            # What waits may never exceed what the peer holds (every reference it may
            # release was counted when sent): found now, not once the replies come.
            pending = self._pending.get(handle, 0) + frame.count
            if pending > int(export[1]):  # type: ignore[call-overload]
                raise ProtocolError(f"peer released handle {handle} more times than it got it")
            key = (frame.after_replies, handle, tuple((id(ch), seq) for ch, seq in waits))
            entry = self.deferred.get(key)
            if entry is not None:
                entry[0] += frame.count
            else:
                if len(self.deferred) >= MAX_DEFERRED_RELEASES:
                    raise ProtocolError(f"more than {MAX_DEFERRED_RELEASES} releases "
                                        "waiting for replies")
                self.deferred[key] = [frame.count, len(waits)]
                if unread:
                    heapq.heappush(self._by_reply, (frame.after_replies, key))
                for channel, seq in waits:
                    call = self._call_waits.get((id(channel), seq))
                    if call is None:
                        call = self._call_waits[id(channel), seq] = (channel, seq, [])
                    call[2].append(key)
            self._pending[handle] = pending
            # The caller may have read those replies since the count was looked at,
            # and then found nothing deferred: look again (see apply_deferred).
            self._apply_deferred_locked(transport.replies_received)

    def apply_deferred(self) -> None:
        """Apply the releases that waited for replies this side has now read (call it
        after counting replies in ``transport.replies_received``, when ``deferred``)."""
        transport = self.transport
        assert transport is not None
        with self.lock:
            self._apply_deferred_locked(transport.replies_received)

    def _apply_deferred_locked(self, received: int) -> None:
        """Apply the waiting releases that may go now: their replies are read (``received``)
        and the channel calls they wait for are over (a channel's ``busy`` moved on from
        that call). Costs O(log n) per release applied, plus a look at each channel call
        waited for (one per channel at most is in flight)."""
        deferred = self.deferred
        ready: list[_DeferKey] = []
        if self._call_waits:
            for call_key, (channel, seq, keys) in list(self._call_waits.items()):
                if channel.busy == seq:
                    continue
                del self._call_waits[call_key]
                for key in keys:
                    entry = deferred.get(key)
                    if entry is not None:
                        entry[1] -= 1
                        if not entry[1] and key[0] <= received:
                            ready.append(key)
        by_reply = self._by_reply
        while by_reply and by_reply[0][0] <= received:
            key = heapq.heappop(by_reply)[1]
            entry = deferred.get(key)
            if entry is not None and not entry[1]:
                ready.append(key)
        for key in ready:
            entry = deferred.pop(key, None)
            if entry is not None:
                handle = key[1]
                left = self._pending[handle] - entry[0]
                if left:
                    self._pending[handle] = left
                else:
                    del self._pending[handle]
                self._apply_locked(handle, entry[0])

    def _apply_locked(self, handle: int, count: int) -> None:
        entry = self.exports.get(handle)
        if entry is None:
            raise ProtocolError(f"peer released handle {handle}, not exported here")
        if handle == ROOT_HANDLE:
            return
        remaining = int(entry[1]) - count  # type: ignore[call-overload]
        if remaining < self._pending.get(handle, 0):  # what waits must stay releasable
            raise ProtocolError(f"peer released handle {handle} more times than it got it")
        if remaining == 0:
            del self.exports[handle]
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
            self.proxies = {}  # their references die with the link: nothing to give back
            recipients = [cb for p in proxies for cb in _proxy.take_recipients(p)]
            self.exports.clear()
            self.export_handles.clear()
            self.deferred.clear()
            self._by_reply.clear()
            self._call_waits.clear()
            self._pending.clear()
        return recipients


#: A waiting release's key: (after_replies, handle, the channel calls it waits for).
_DeferKey = tuple[int, int, tuple[tuple[int, int], ...]]


class ChannelCall(Protocol):
    """What the table sees of an extra call channel (``_channels.CallChannel``): the
    sequence number of its call in flight, 0 for none."""

    busy: int

