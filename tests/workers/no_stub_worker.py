"""on_connect() returns None: the parent gets NCP_ERR_CONNECTION_FAILED."""


def on_connect() -> None:
    return None


def main_proc() -> None:
    return None
