"""MessageOption: how a request is sent (sync or one-way, and the sync call's timeout).

May import: ``_errors`` only.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from childkit.ipc._errors import ParamError


class RequestMode(enum.IntEnum):
    """IPCKit's ``OH_IPC_RequestMode``."""

    SYNC = 0
    ASYNC = 1


@dataclass(frozen=True, slots=True)
class MessageOption:
    """Options of one request.

    ``mode``: :attr:`RequestMode.SYNC` waits for the reply; :attr:`RequestMode.ASYNC`
    (one-way) returns as soon as the request is queued for sending.
    ``timeout``: seconds a sync call waits for its reply; ``None`` waits until the reply
    arrives or the remote dies. Raises :class:`ParamError` for a bad mode or timeout.
    """

    mode: RequestMode = RequestMode.SYNC
    timeout: float | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "mode", RequestMode(self.mode))
        except ValueError:
            raise ParamError(
                f"MessageOption.mode must be SYNC or ASYNC, not {self.mode!r}"
            ) from None
        t = self.timeout
        if t is not None and (
            isinstance(t, bool)
            or not isinstance(t, (int, float))
            or math.isnan(t)
            or t <= 0
        ):
            raise ParamError(
                f"MessageOption.timeout must be a positive number of seconds, not {t!r}"
            )

    @property
    def is_async(self) -> bool:
        return self.mode is RequestMode.ASYNC


SYNC_OPTION = MessageOption()
ASYNC_OPTION = MessageOption(RequestMode.ASYNC)
