"""``python -m childkit.sandbox``: print which sandbox layers this machine supports; exit 0
if an isolated child gets the full sandbox (``isolation_uid`` aside), else 1.

``childkit sandbox-check`` is the same report (:func:`report`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from childkit.sandbox._check import check_text, full_sandbox_available
from childkit.sandbox._probe import probe


def report(as_json: bool = False) -> int:
    """Probe every layer and print the result (text, or JSON ``{layer: {"supported": bool,
    "reason": str}}``); return 0 if the full sandbox is available, else 1."""
    layers = probe()
    if as_json:
        print(json.dumps({name: {"supported": s.supported, "reason": s.reason}
                          for name, s in layers.items()}, indent=2))
    else:
        print(check_text(layers))
    return 0 if full_sandbox_available(layers) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (``--help``, ``--json``) and print the report; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m childkit.sandbox",
        description="Print which sandbox layers this machine supports; exit 0 if an "
                    "isolated child gets the full sandbox, else 1 (as `childkit "
                    "sandbox-check`).")
    parser.add_argument("--json", action="store_true", help="print the layers as JSON")
    args = parser.parse_args(argv)
    return report(as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())
