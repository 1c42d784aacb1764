"""What every plugin of examples/plugin_host.py speaks: one request code, text in and out."""

from __future__ import annotations

import threading
from collections.abc import Callable

from childkit.ipc import MessageOption, MessageParcel, RemoteStub

DESCRIPTOR = "examples.plugin"
TRANSFORM = 1  # data: string -> reply: string
QUIT = 2  # one-way: the plugin's main_proc returns

quit_event = threading.Event()


class PluginStub(RemoteStub):
    """Serves TRANSFORM with ``transform(text)``."""

    def __init__(self, transform: Callable[[str], str]) -> None:
        super().__init__(DESCRIPTOR)
        self._transform = transform

    def on_remote_request(self, code: int, data: MessageParcel, reply: MessageParcel,
                          option: MessageOption) -> int:
        if code == QUIT:
            quit_event.set()
        elif code == TRANSFORM:
            reply.write_string(self._transform(data.read_string()))
        else:
            return 1909001
        return 0
