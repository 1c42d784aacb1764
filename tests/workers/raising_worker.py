"""on_connect() raises: the parent gets NCP_ERR_CONNECTION_FAILED."""


def on_connect() -> None:
    raise RuntimeError("on_connect failed on purpose")


def main_proc() -> None:
    return None
