"""A buggy plugin: reverses its text, but crashes the whole process on the word "boom"
(as a segfault in native code would: SIGSEGV, no Python clean-up)."""

from __future__ import annotations

import signal
import threading

from childkit.ipc import RemoteStub
from plugins.common import PluginStub, quit_event


def _reverse(text: str) -> str:
    if "boom" in text:
        # On this very thread, before the reply can be sent (os.kill could pick another).
        signal.pthread_kill(threading.get_ident(), signal.SIGSEGV)
    return text[::-1]


def on_connect() -> RemoteStub:
    return PluginStub(_reverse)


def main_proc() -> None:
    quit_event.wait()
