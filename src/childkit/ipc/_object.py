"""The common face of stubs and proxies (IPCKit's remote object)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from childkit.ipc._option import MessageOption
    from childkit.ipc._parcel import MessageParcel


class RemoteObject:
    """Something a request can be sent to: a local :class:`RemoteStub` or a :class:`RemoteProxy`.

    Both can travel inside a :class:`MessageParcel`. Subclasses implement the methods below.
    """

    __slots__ = ("__weakref__",)

    def send_request(
        self, code: int, data: MessageParcel, option: MessageOption | None = None
    ) -> MessageParcel:
        """Send request ``code`` with ``data``; return the reply parcel (empty for one-way)."""
        raise NotImplementedError

    def get_descriptor(self) -> str:
        """The interface descriptor of the object (a stub's own; a proxy's as sent by the peer)."""
        raise NotImplementedError

    def is_object_dead(self) -> bool:
        """Whether requests to this object can no longer succeed."""
        raise NotImplementedError
