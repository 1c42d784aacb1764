"""on_connect() never returns: the start times out and the child is killed."""

import threading


def on_connect() -> None:
    threading.Event().wait()


def main_proc() -> None:
    return None
