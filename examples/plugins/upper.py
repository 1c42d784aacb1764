"""A well-behaved plugin: upper-cases its text."""

from __future__ import annotations

from childkit.ipc import RemoteStub
from plugins.common import PluginStub, quit_event


def on_connect() -> RemoteStub:
    return PluginStub(str.upper)


def main_proc() -> None:
    quit_event.wait()
