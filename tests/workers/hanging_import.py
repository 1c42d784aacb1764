"""Importing this module never finishes: an args-mode start of it times out."""

import threading

threading.Event().wait()


def main(args: object) -> int:  # pragma: no cover - never reached
    return 0
