"""Extra call channels of one connection: concurrent callers each get a socket of their own.

A connection starts with one call socket, which every calling thread shares: with several
callers, one reads (the leader, :mod:`._caller`) and hands the others their replies, a
wake-up and a GIL hand-off per reply. Binder over sockets (``RpcSession``) keeps several
connections per session instead, and so does this module: a sync call that finds the main
call socket busy takes an idle *channel* (``ExclusiveConnection::find``), opening one if
the peer accepts more, writes its request there and reads its own reply there. Nobody
else reads that socket, so no thread wakes for another's reply; the peer serves each
channel on whichever work thread the channel's socket wakes, which runs the request itself.

A channel is opened by sending the peer a CHANNEL frame on the main call socket with the
peer's end of a new socketpair (docs/wire-format.md). Only plain sync calls use channels
(no fds, no objects, no timeout: one request, one reply, one at a time per channel); every
other call, and the calls of a thread that sent one-way requests since its last call on
the main socket (its order), goes on the main socket. The peer's HELLO says how many
channels it accepts: a peer that predates them (the C kit) says 0 and keeps one socket.

May import: ``_errors``, ``_transport``, ``_wire``. Nothing above: the call on a channel
is the caller role's (``Caller.call_on_channel``).

Ownership and locks
-------------------
A channel belongs to the free list (``free``) or to the one caller that took it from
there: ``list.pop`` and ``list.append`` are atomic, so taking and giving back take no
lock. Whoever pops a channel off the free list after the link closed closes its socket,
so each is closed once, by one owner; a caller that gives one back after the close closes
it then. ``ChannelSet.lock`` guards ``all`` (every channel opened, for shutting them down
and for the release ordering below) and ``closed``; socket ``shutdown`` and ``close`` of
channels happen under it, so one never meets a number the other freed. ``CallChannel.busy``
(the sequence number of the call in flight, 0 for none) is written by its owner alone and
read by the object table without a lock (see ``ObjectTable.apply_release``).
"""

from __future__ import annotations

import socket
import threading

from childkit.ipc import _wire
from childkit.ipc._errors import DeadRemoteObjectError, IPCError
from childkit.ipc._transport import SNDBUF, Transport


class CallChannel:
    """One extra call socket of this side and the state of the call on it."""

    __slots__ = ("busy", "fd", "seq", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.seq = 0  # the last request's sequence number (a channel counts its own)
        self.busy = 0  # the sequence number of the call in flight; 0: none


class ChannelSet:
    """This side's extra call channels to the peer (see the module docstring)."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.lock = threading.Lock()
        # Both lists are changed in place, never rebound (the caller keeps references).
        self.free: list[CallChannel] = []
        self.all: list[CallChannel] = []
        self.closed = False
        #: How many channels may be opened: what the peer's HELLO accepts (0 until then).
        self.limit = 0

    def in_flight(self) -> list[tuple[CallChannel, int]]:
        """The channels with a call in flight and its sequence number (a snapshot)."""
        return [(ch, busy) for ch in list(self.all) if (busy := ch.busy)]

    # ------------------------------------------------------------------ taking one
    def take(self) -> CallChannel | None:
        """An idle channel for this thread's call, opened now if none is idle and the peer
        accepts another; ``None``: use the main call socket."""
        try:
            return self.free.pop()
        except IndexError:
            pass
        if len(self.all) >= self.limit:
            return None
        return self._open()

    def _open(self) -> CallChannel | None:
        t = self.transport
        with self.lock:
            if self.closed or t.closed or len(self.all) >= self.limit:
                return None
            try:
                ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            except OSError:  # out of fds, say: the call goes on the main socket
                return None
            channel = CallChannel(ours)
            self.all.append(channel)
        try:
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
            # The peer's end goes over the main call socket, queued in order with the rest;
            # this call's request may wait in the new socket until the peer serves it.
            t.send(_wire.encode_channel(), [theirs.fileno()])
        except (DeadRemoteObjectError, IPCError):  # link gone, or out of fds: main socket
            with self.lock:  # the peer never got its end: this channel never existed
                self.all.remove(channel)
                ours.close()
            return None
        finally:
            theirs.close()  # the frame sent its own copy
        return channel

    def give_back(self, channel: CallChannel) -> None:
        """Return ``channel`` to the free list (closed instead once the link is)."""
        self.free.append(channel)
        if self.transport.closed:
            self.close_free()

    # ------------------------------------------------------------------ closing
    def close_free(self) -> None:
        """Close every idle channel (the link is closed: no caller will take one)."""
        with self.lock:
            while True:
                try:
                    channel = self.free.pop()
                except IndexError:
                    return
                channel.sock.close()

    def shutdown(self) -> None:
        """The link closed: wake the callers reading a channel, close the idle ones."""
        with self.lock:
            self.closed = True
            for channel in self.all:
                try:
                    channel.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # closed already
        self.close_free()
