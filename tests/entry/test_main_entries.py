"""An entry naming ``__main__`` (a function of the script being run) fails at the start
call, saying why and naming the entry that reaches the same code, which then works: the
script's own module, whose ``__main__`` guard keeps the program from running again."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent('''
    import os, sys, threading, childkit
    from childkit.ipc import MessageParcel, RemoteStub

    print("loaded as", __name__, file=sys.stderr, flush=True)

    def work(args):
        os.write(args.fds["out"], b"hello from work")

    done = threading.Event()

    class Stub(RemoteStub):
        def on_remote_request(self, code, data, reply, option):
            done.set()
            return 0

    def on_connect():
        return Stub()

    def main_proc():
        done.wait()

    if __name__ == "__main__":
        for entry in ("__main__:work", "__main__"):
            try:
                if ":" in entry:
                    childkit.start_native_child_process(entry)
                else:
                    childkit.connect(entry)
            except childkit.ChildkitError as exc:
                print(exc.code.name, exc.message)
        r, w = os.pipe()
        childkit.start_native_child_process("entmain:work",
                                            childkit.ChildProcessArgs("", {"out": w}))
        os.close(w)
        print(os.read(r, 100).decode())
        with childkit.connect(os.path.abspath("entmain.py")) as child, MessageParcel() as data:
            child.proxy.send_request(1, data).close()  # ends its main_proc
            child.wait(30)
            print("ipc", child.exit_info)
''')


def test_main_entries_fail_at_start_naming_the_entry_that_works(tmp_path: Path) -> None:
    (tmp_path / "entmain.py").write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    done = subprocess.run([sys.executable, "entmain.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    args_err, ipc_err, hello, ipc = done.stdout.splitlines()
    assert args_err.startswith("NCP_ERR_INVALID_PARAM") and "'entmain:work'" in args_err
    assert "not this program's main script" in args_err
    assert ipc_err.startswith("NCP_ERR_INVALID_PARAM")
    assert repr(str(tmp_path / "entmain.py")) in ipc_err
    assert hello == "hello from work"
    assert ipc.startswith("ipc ChildExitInfo(") and "exit_code=0" in ipc
    loads = [line for line in done.stderr.splitlines() if line.startswith("loaded as")]
    assert loads.count("loaded as __main__") == 1  # the guard kept the program from rerunning
