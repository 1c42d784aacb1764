"""The documentation builds with ``mkdocs build --strict``: no broken link, no missing page,
no docstring the API reference cannot render."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_docs_build_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
         str(ROOT / "mkdocs.yml"), "--site-dir", str(site)],
        capture_output=True, text=True, timeout=300, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    # The pages exist, and the reference really holds the generated API.
    reference = (site / "reference" / "index.html").read_text()
    for name in ("childkit.start_native_child_process", "childkit.connect",
                 "childkit.ipc.MessageParcel", "childkit.ipc.RemoteProxy",
                 "childkit.aio.send_request", "childkit.aio.connect",
                 "childkit.sandbox.ResourceLimits"):
        assert f'id="{name}"' in reference, name
    for page in ("guide", "performance", "sandbox", "api-mapping", "ipc", "cli", "executor"):
        assert (site / page / "index.html").is_file(), page
