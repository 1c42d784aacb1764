"""MessageOption: how a request is sent (sync or one-way, and the sync call's timeout).

May import: ``_errors`` only.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import ClassVar

from childkit.ipc._errors import ParamError

#: The longest timeout a sync call takes, in seconds (about 11.6 days). Longer ones are
#: refused rather than silently shortened or treated as "wait forever": a caller that
#: means forever passes ``None``.
MAX_TIMEOUT = 1_000_000.0


class RequestMode(enum.IntEnum):
    """IPCKit's ``OH_IPC_RequestMode``."""

    SYNC = 0
    ASYNC = 1


@dataclass(frozen=True, slots=True)
class MessageOption:
    """Options of one request.

    ``mode``: :attr:`RequestMode.SYNC` waits for the reply; :attr:`RequestMode.ASYNC`
    (one-way) returns as soon as the request is queued for sending.
    ``timeout``: seconds a sync call may take, sending included (the caller's whole
    budget); ``None`` waits until the reply arrives or the remote dies. A timeout must be
    a finite number of seconds in ``(0, MAX_TIMEOUT]`` (:data:`MAX_TIMEOUT`, 1e6 s);
    anything else (0, negative, ``nan``, ``inf``, more than the maximum, a bool or a
    non-number) raises :class:`ParamError` (``OH_IPC_CHECK_PARAM_ERROR``). Raises the same
    for a bad mode.
    """

    #: The longest timeout accepted (seconds).
    MAX_TIMEOUT: ClassVar[float] = MAX_TIMEOUT

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
            or (isinstance(t, float) and math.isnan(t))  # an int may not fit a float
            or t <= 0
        ):
            raise ParamError(
                f"MessageOption.timeout must be a positive number of seconds, not {t!r}"
            )
        if t is not None and not t <= MAX_TIMEOUT:  # inf too; ints of any size compare
            raise ParamError(
                f"MessageOption.timeout must be at most {MAX_TIMEOUT:g} seconds (None waits "
                f"without a limit), not {t!r}"
            )

    @property
    def is_async(self) -> bool:
        return self.mode is RequestMode.ASYNC


SYNC_OPTION = MessageOption()
ASYNC_OPTION = MessageOption(RequestMode.ASYNC)
