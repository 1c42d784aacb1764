"""``python -m childkit.sandbox``: print which sandbox layers this machine supports; exit 0
if an isolated child gets the full sandbox (``isolation_uid`` aside), else 1."""

from __future__ import annotations

import sys

from childkit.sandbox._check import check_text, full_sandbox_available
from childkit.sandbox._probe import probe

if __name__ == "__main__":
    layers = probe()
    print(check_text(layers))
    sys.exit(0 if full_sandbox_available(layers) else 1)
