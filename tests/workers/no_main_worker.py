"""Defines on_connect but no main_proc: NCP_ERR_LIB_LOADING_FAILED."""

from childkit.ipc import RemoteStub


def on_connect() -> RemoteStub:
    return RemoteStub("x")
