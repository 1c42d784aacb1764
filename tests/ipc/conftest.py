"""The IPC tests' shared set-up: which socket a lone call takes is fixed, not the load's.

A plain sync call made alone goes on an extra channel while the machine is crowded
(``Caller.prefer_channel``), on the main call socket otherwise: on a shared test machine
that would make the socket a test's calls take depend on the moment. Here a lone call
takes the main socket, as on a quiet machine; the tests of the choice itself set it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from childkit.ipc._caller import Caller


@pytest.fixture(autouse=True)
def _lone_calls_on_the_main_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(Caller, "prefer_channel", staticmethod(lambda: False))
    yield
