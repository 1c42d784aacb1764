"""Dies inside on_connect, before reporting: the start fails, the child is reaped."""

import os


def on_connect() -> None:
    os._exit(7)


def main_proc() -> None:
    return None
