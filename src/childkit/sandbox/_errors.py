"""The sandbox's one exception: a layer this machine cannot apply."""

from __future__ import annotations

from childkit.common._errors import ChildkitError, ErrCode


class SandboxUnavailable(ChildkitError):
    """Isolated mode needs ``layer`` and this machine (kernel, privileges, libraries) cannot
    apply it; ``reason`` says why. Its code is always ``NCP_ERR_NOT_SUPPORTED``."""

    def __init__(self, layer: str, reason: str) -> None:
        self.layer = layer
        self.reason = reason
        super().__init__(ErrCode.NCP_ERR_NOT_SUPPORTED, f"isolated mode needs {layer}: {reason}")
