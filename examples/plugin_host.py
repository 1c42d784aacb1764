"""A plugin host that survives a crashing plugin.

Each plugin runs in its own IPC-mode child (modules in examples/plugins/). The host
calls them through proxies; when the ``crashy`` plugin dies with SIGSEGV in the middle
of a request, the host's call raises ``DeadRemoteObjectError`` instead of hanging, the
death recipient and the exit callback report it, the other plugin keeps serving, and the
host restarts the crashed one.

Run: ``python examples/plugin_host.py`` (exit status 0 on success).
"""

from __future__ import annotations

import signal
import sys
import threading

from plugins.common import QUIT, TRANSFORM

import childkit
from childkit import ChildConnection, ChildExitInfo
from childkit.ipc import DeadRemoteObjectError, MessageOption, MessageParcel, RequestMode


def call(plugin: ChildConnection, text: str) -> str:
    with MessageParcel() as data:
        data.write_string(text)
        with plugin.proxy.send_request(TRANSFORM, data) as reply:
            return reply.read_string()


def stop(plugin: ChildConnection) -> None:
    """Ask a live plugin to quit, then close its connection (kills it if it lingers)."""
    if not plugin.proxy.is_object_dead():
        with MessageParcel() as data:
            plugin.proxy.send_request(QUIT, data, MessageOption(RequestMode.ASYNC))
        plugin.wait(10)
    plugin.close()


def main() -> int:
    exits: dict[int, ChildExitInfo] = {}
    exited = threading.Condition()

    def on_exit(pid: int, info: ChildExitInfo) -> None:
        with exited:
            exits[pid] = info
            exited.notify_all()

    childkit.register_child_process_exit_callback(on_exit)
    plugins: dict[str, ChildConnection] = {}
    ok = True
    try:
        for name in ("upper", "crashy"):
            plugins[name] = childkit.connect(f"plugins.{name}")
            print(f"plugin {name!r} started as pid {plugins[name].pid}")
        print(f"upper('hello') -> {call(plugins['upper'], 'hello')!r}")
        print(f"crashy('hello') -> {call(plugins['crashy'], 'hello')!r}")

        died = threading.Event()
        plugins["crashy"].proxy.add_death_recipient(died.set)
        crashed_pid = plugins["crashy"].pid
        try:
            call(plugins["crashy"], "boom")
        except DeadRemoteObjectError as exc:
            print(f"crashy('boom') -> DeadRemoteObjectError: {exc}")
        else:
            print("crashy('boom') returned instead of crashing", file=sys.stderr)
            ok = False
        ok &= died.wait(30)
        print(f"death recipient called: {died.is_set()}")
        with exited:
            exited.wait_for(lambda: crashed_pid in exits, timeout=30)
        info = exits.get(crashed_pid)
        print(f"exit callback: {info}")
        ok &= info is not None and info.signal == signal.SIGSEGV

        # The host and the other plugin are untouched.
        still = call(plugins["upper"], "still here")
        print(f"upper('still here') -> {still!r}")
        ok &= still == "STILL HERE"

        plugins["crashy"].close()
        plugins["crashy"] = childkit.connect("plugins.crashy")
        again = call(plugins["crashy"], "restarted")
        print(f"crashy restarted as pid {plugins['crashy'].pid}: "
              f"crashy('restarted') -> {again!r}")
        ok &= again == "detratser"
    finally:
        for plugin in plugins.values():
            stop(plugin)
        childkit.unregister_child_process_exit_callback(on_exit)
    print("plugin_host: " + ("OK" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
