"""The escape attempts: each action raises if it fails and returns if it succeeds.

A test runs every action twice: in a NORMAL child (where it must succeed, so it is known
to work) and in an ISOLATED child (where it must fail inside the action, not before).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import json
import os
import secrets
import select
import signal
import socket
import struct
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ENV_SECRET_NAME = "CHILDKIT_SANDBOX_TEST_SECRET"
#: The name the test's DNS responder answers, and its address (TEST-NET-1, RFC 5737).
DNS_NAME = "escape-test.childkit.example"
DNS_ADDRESS = "192.0.2.55"
_libc = ctypes.CDLL(None, use_errno=True)


def _oserror(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}")


def connect_tcp(ctx: dict[str, Any]) -> str:
    with socket.create_connection(("127.0.0.1", ctx["tcp_port"]), timeout=10):
        return "connected"


def connect_unix(ctx: dict[str, Any]) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(ctx["unix_path"])
    return "connected"


def connect_unix_visible(ctx: dict[str, Any]) -> str:
    """Connect to a listening socket (mode 0777) inside a directory the sandbox may read:
    a read-only bind does not stop ``connect()`` (issue 12, class 4)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(ctx["visible_unix_path"])
        s.sendall(b"ping")
        if s.recv(4) != b"pong":
            raise ConnectionError("no answer from the service")
    return "talked to the service"


def connect_abstract(ctx: dict[str, Any]) -> str:
    """Connect to the parent's abstract Unix socket (no path at all)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(ctx["abstract_name"].encode("latin-1"))
    return "connected"


_NETLINK_KOBJECT_UEVENT = 15


def netlink_uevent_socket(ctx: dict[str, Any]) -> str:
    """Open a kernel uevent socket and join its broadcast group (any user may)."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_KOBJECT_UEVENT) as s:
        s.bind((0, 1))
    return "bound"


def netlink_uevent(ctx: dict[str, Any]) -> str:
    """Receive one of the host's device events (the test's context makes one every
    100 ms while it lives: issue 12, class 5)."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_KOBJECT_UEVENT) as s:
        s.bind((0, 1))
        s.settimeout(10)
        event = s.recv(8192)
    return event.split(b"\0", 1)[0].decode(errors="replace")


def resolve_host(ctx: dict[str, Any]) -> str:
    return str(socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)[0][4])


def _dns_name(labels: str) -> bytes:
    return b"".join(bytes([len(part)]) + part.encode() for part in labels.split(".")) + b"\0"


def resolve_dns(ctx: dict[str, Any]) -> str:
    """Ask the parent's DNS server (UDP, 127.0.0.1) for the A record of :data:`DNS_NAME`:
    a real DNS query and answer, as a resolver library would send."""
    query_id = secrets.randbits(16)
    question = _dns_name(DNS_NAME) + struct.pack("!HH", 1, 1)  # A, IN
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(10)
        s.sendto(struct.pack("!6H", query_id, 0x0100, 1, 0, 0, 0) + question,
                 ("127.0.0.1", ctx["dns_port"]))
        answer = s.recv(512)
    ident, flags, _, ancount = struct.unpack("!4H", answer[:8])
    if ident != query_id or flags & 0x000F or ancount < 1:
        raise LookupError(f"DNS answer without an address: flags {flags:#x}")
    rest = answer[12 + len(question):]  # header, then the question echoed back
    _name, rtype, _cls, _ttl, length = struct.unpack("!HHHIH", rest[:12])
    address = socket.inet_ntoa(rest[12:12 + length])
    if rtype != 1 or address != DNS_ADDRESS:
        raise LookupError(f"unexpected DNS answer {rtype} {address}")
    return address


def _dns_reply(query: bytes) -> bytes | None:
    """The answer to one DNS query: :data:`DNS_ADDRESS` for an A query of :data:`DNS_NAME`,
    NXDOMAIN for any other name; ``None`` for what is not a query at all."""
    if len(query) < 12:
        return None
    ident, flags, qdcount = struct.unpack("!3H", query[:6])
    if flags & 0x8000 or qdcount != 1:
        return None
    end = query.find(b"\0", 12)
    if end < 0 or len(query) < end + 5:
        return None
    question = query[12:end + 5]
    qtype, _ = struct.unpack("!HH", question[-4:])
    if question[:-4] != _dns_name(DNS_NAME) or qtype != 1:
        return struct.pack("!6H", ident, 0x8183, 1, 0, 0, 0) + question  # NXDOMAIN
    record = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(DNS_ADDRESS)
    return struct.pack("!6H", ident, 0x8180, 1, 1, 0, 0) + question + record


@contextlib.contextmanager
def dns_server() -> Iterator[int]:
    """A tiny DNS server on 127.0.0.1 (UDP) answering :func:`_dns_reply`; yields its port.
    Its thread and fds end with the context."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    wake_r, wake_w = os.pipe()

    def serve() -> None:
        while True:
            ready, _, _ = select.select([server.fileno(), wake_r], [], [])
            if wake_r in ready:
                return
            try:
                query, peer = server.recvfrom(512)
                reply = _dns_reply(query)
                if reply is not None:
                    server.sendto(reply, peer)
            except OSError:
                continue  # one bad exchange; the server goes on

    try:
        server.bind(("127.0.0.1", 0))
        thread = threading.Thread(target=serve, name="test-dns", daemon=True)
        thread.start()
        try:
            yield server.getsockname()[1]
        finally:
            os.write(wake_w, b"x")
            thread.join()
    finally:
        server.close()
        os.close(wake_r)
        os.close(wake_w)


def read_home_secret(ctx: dict[str, Any]) -> str:
    data = Path(ctx["home_secret"]).read_text()
    if data != ctx["secret"]:
        raise AssertionError("read something else")
    return "read"


def read_shadow(ctx: dict[str, Any]) -> int:
    return len(Path("/etc/shadow").read_bytes())


def write_readonly_dir(ctx: dict[str, Any]) -> str:
    """Write into a directory the sandbox can see (read-only)."""
    target = Path(ctx["ro_dir"]) / f"written-{os.getpid()}"
    target.write_text("x")
    target.unlink()
    return "written"


def write_hidden_dir(ctx: dict[str, Any]) -> str:
    """Write into a host directory the sandbox was not given."""
    target = Path(ctx["hidden_dir"]) / f"written-{os.getpid()}"
    target.write_text("x")
    target.unlink()
    return "written"


def write_root(ctx: dict[str, Any]) -> str:
    target = Path("/") / f"childkit-escape-{secrets.token_hex(4)}"
    target.write_text("x")
    target.unlink()
    return "written"


def list_parent(ctx: dict[str, Any]) -> str:
    if str(ctx["parent_pid"]) not in os.listdir("/proc"):
        raise ProcessLookupError(errno.ESRCH, "parent not in /proc")
    return "listed"


def signal_parent(ctx: dict[str, Any]) -> str:
    os.kill(ctx["parent_pid"], signal.SIGURG)  # ignored by default: harmless if it lands
    return "signalled"


def ptrace_child(ctx: dict[str, Any]) -> str:
    """PTRACE_ATTACH to a child of our own (allowed to a normal process of the same uid)."""
    pid = os.fork()
    if pid == 0:
        signal.pause()
        os._exit(0)
    try:
        if _libc.ptrace(16, pid, None, None) != 0:  # PTRACE_ATTACH
            raise _oserror("ptrace")
        os.waitpid(pid, 0)
        _libc.ptrace(17, pid, None, None)  # PTRACE_DETACH
        return "attached"
    finally:
        os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def mount_tmpfs(ctx: dict[str, Any]) -> str:
    target = ctx["mount_dir"].encode()
    if _libc.mount(b"none", target, b"tmpfs", 0, None) != 0:
        raise _oserror("mount")
    _libc.umount2(target, 2)
    return "mounted"


def mount_in_new_userns(ctx: dict[str, Any]) -> str:
    """Become root of a new user namespace (``unshare -r``) and mount a tmpfs there: what
    any unprivileged user may do, and a door to kernel code otherwise out of reach."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            uid, gid = os.geteuid(), os.getegid()
            if _libc.unshare(0x10000000 | 0x00020000) != 0:
                raise _oserror("unshare")
            for name, text in (("uid_map", f"0 {uid} 1"), ("setgroups", "deny"),
                               ("gid_map", f"0 {gid} 1")):
                with open(f"/proc/self/{name}", "w") as f:
                    f.write(text)
            if _libc.mount(b"none", b"/tmp", b"tmpfs", 0, None) != 0:
                raise _oserror("mount")
        except OSError as exc:
            code = exc.errno or 255
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise OSError(code, f"unshare+mount: {os.strerror(code)}")
    return "mounted"


def load_module(ctx: dict[str, Any]) -> str:
    """finit_module(/dev/null). No module can really load here; what differs is whether the
    kernel refuses the caller (EPERM) or gets as far as the module (ENOSYS, ENOEXEC...)."""
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        if _libc.syscall(313, fd, b"", 0) != 0:  # finit_module, x86_64
            err = ctypes.get_errno()
            if err == errno.EPERM:
                raise OSError(err, "finit_module refused")
            return f"reached the loader ({errno.errorcode[err]})"
        return "loaded?"
    finally:
        os.close(fd)


def change_uid(ctx: dict[str, Any]) -> str:
    os.setresuid(12345, 12345, 12345)
    return "changed"


def fork_bomb(ctx: dict[str, Any]) -> int:
    """Fork ``forks`` children that wait; fail (EAGAIN) if the limit stops us first."""
    read_fd, write_fd = os.pipe()
    pids = []
    try:
        for _ in range(ctx["forks"]):
            pid = os.fork()
            if pid == 0:
                os.close(write_fd)
                os.read(read_fd, 1)
                os._exit(0)
            pids.append(pid)
        return len(pids)
    finally:
        os.close(write_fd)
        os.close(read_fd)
        for pid in pids:
            os.waitpid(pid, 0)


def allocate(ctx: dict[str, Any]) -> int:
    block = bytearray(ctx["alloc_bytes"])
    return len(block)


def find_inherited_fd(ctx: dict[str, Any]) -> str:
    data = os.pread(ctx["inherited_fd"], 100, 0).decode()
    if data != ctx["secret"]:
        raise AssertionError("another file")
    return "found"


def find_secret_fd(ctx: dict[str, Any]) -> int:
    """Look through every open fd for one on the secret file (by device and inode), under
    whatever number it has; return that number."""
    wanted = tuple(ctx["secret_file_id"])
    for name in os.listdir("/proc/self/fd"):
        try:
            st = os.fstat(int(name))
        except OSError:
            continue  # listdir's own fd, closed by now
        if (st.st_dev, st.st_ino) == wanted:
            return int(name)
    raise LookupError("no fd on the secret file")


def read_env_secret(ctx: dict[str, Any]) -> str:
    token = ctx["secret"]
    if os.environ.get(ENV_SECRET_NAME) == token:
        return "os.environ"
    for source in ("/proc/self/environ", f"/proc/{ctx['parent_pid']}/environ"):
        with contextlib.suppress(OSError), open(source, "rb") as f:
            if token.encode() in f.read():
                return source
    raise LookupError("secret not found")


@dataclasses.dataclass(frozen=True)
class Case:
    """One escape attempt. ``needs``: the privilege a NORMAL child needs for the action to
    succeed (empty: any user's child can do it). Without it the NORMAL control fails
    too, so the case proves nothing for an unprivileged parent."""

    name: str
    action: Callable[[dict[str, Any]], Any]
    needs: str = ""

    @property
    def as_nobody(self) -> bool:
        """Meaningful for an unprivileged parent too."""
        return not self.needs

    def skip_reason(self, root: bool) -> str | None:
        """Why this case cannot be proven by a parent that is (not) ``root``, or None."""
        if root or not self.needs:
            return None
        return (f"{self.name}: an unprivileged NORMAL child cannot do it either (it needs "
                f"{self.needs}), so the control would fail; proven in the root run")


CASES: tuple[Case, ...] = (
    Case("connect_tcp_loopback", connect_tcp),
    Case("connect_unix_path", connect_unix),
    Case("connect_unix_in_readonly_path", connect_unix_visible),
    Case("connect_abstract_unix", connect_abstract),
    Case("netlink_uevent_socket", netlink_uevent_socket),
    Case("netlink_host_uevent", netlink_uevent, needs="root (to make a host uevent)"),
    Case("resolve_host_name", resolve_host),
    Case("resolve_dns_name", resolve_dns),
    Case("read_parent_home", read_home_secret),
    Case("read_etc_shadow", read_shadow, needs="root (read access to /etc/shadow)"),
    Case("write_readonly_dir", write_readonly_dir),
    Case("write_hidden_dir", write_hidden_dir),
    Case("write_root", write_root, needs="root (write access to /)"),
    Case("list_parent_pid", list_parent),
    Case("signal_parent", signal_parent),
    Case("ptrace", ptrace_child),
    Case("mount", mount_tmpfs, needs="CAP_SYS_ADMIN"),
    Case("mount_in_new_user_namespace", mount_in_new_userns),
    Case("load_kernel_module", load_module, needs="CAP_SYS_MODULE"),
    Case("change_uid", change_uid, needs="CAP_SETUID"),
    Case("inherited_fd", find_inherited_fd),
    Case("env_secret", read_env_secret),
)


@contextlib.contextmanager
def escape_context(workdir: Path, home: Path) -> Iterator[dict[str, Any]]:
    """Everything the actions aim at, owned by this process and released on exit: TCP and
    Unix listeners, a DNS server, a secret in ``home``, a read-only and a hidden
    directory, an fd to a secret file, the secret in the environment."""
    secret = secrets.token_hex(16)
    ro_dir = workdir / "ro"
    hidden = workdir / "hidden"
    mount_dir = workdir / "mnt"
    for d in (ro_dir, hidden, mount_dir):
        d.mkdir()
    for d in (workdir, ro_dir, hidden):
        d.chmod(0o777)
    with contextlib.ExitStack() as stack:
        tcp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        tcp.bind(("127.0.0.1", 0))
        tcp.listen(16)
        unix = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        unix_path = str(hidden / "parent.sock")
        unix.bind(unix_path)
        os.chmod(unix_path, 0o777)
        unix.listen(16)
        visible_unix_path = str(ro_dir / "service.sock")
        stack.enter_context(_pong_service(visible_unix_path))
        abstract = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        abstract_name = f"\0childkit-escape-{secret}"
        abstract.bind(abstract_name.encode("latin-1"))
        abstract.listen(16)
        if os.geteuid() == 0:
            stack.enter_context(_uevents())
        fd, home_secret = tempfile.mkstemp(prefix="childkit-secret-", dir=home)
        stack.callback(os.unlink, home_secret)
        os.write(fd, secret.encode())
        os.fchmod(fd, 0o644)
        os.close(fd)
        secret_file = hidden / "secret"
        secret_file.write_text(secret)
        inherited = os.open(secret_file, os.O_RDONLY)  # inheritable by fork, like any fd
        stack.callback(os.close, inherited)
        secret_st = os.fstat(inherited)
        dns_port = stack.enter_context(dns_server())
        old_env = os.environ.get(ENV_SECRET_NAME)
        os.environ[ENV_SECRET_NAME] = secret
        stack.callback(_restore_env, old_env)
        yield {
            "secret": secret, "tcp_port": tcp.getsockname()[1], "unix_path": unix_path,
            "home_secret": home_secret, "ro_dir": str(ro_dir), "hidden_dir": str(hidden),
            "mount_dir": str(mount_dir), "parent_pid": os.getpid(),
            "inherited_fd": inherited, "secret_file_id": [secret_st.st_dev, secret_st.st_ino],
            "dns_port": dns_port, "visible_unix_path": visible_unix_path,
            "abstract_name": abstract_name,
        }


@contextlib.contextmanager
def _pong_service(path: str) -> Iterator[None]:
    """A host service on a Unix socket at ``path`` (mode 0777): answers "pong" to whatever
    connects and sends. Its thread and fds end with the context."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    wake_r, wake_w = os.pipe()

    def serve() -> None:
        while True:
            ready, _, _ = select.select([server.fileno(), wake_r], [], [])
            if wake_r in ready:
                return
            try:
                conn, _ = server.accept()
                with conn:
                    conn.settimeout(10)
                    if conn.recv(4):
                        conn.sendall(b"pong")
            except OSError:
                continue  # one bad client; the service goes on

    try:
        server.bind(path)
        os.chmod(path, 0o777)
        server.listen(16)
        thread = threading.Thread(target=serve, name="test-unix-service", daemon=True)
        thread.start()
        try:
            yield
        finally:
            os.write(wake_w, b"x")
            thread.join()
    finally:
        server.close()
        os.close(wake_r)
        os.close(wake_w)


#: A device whose "change" event any root may ask for, harmlessly.
UEVENT_FILE = "/sys/devices/virtual/mem/null/uevent"


@contextlib.contextmanager
def _uevents() -> Iterator[None]:
    """As root: make the kernel broadcast a "change" uevent of /dev/null every 100 ms while
    the context lives (what a host's device events look like to a listener)."""
    stop = threading.Event()

    def trigger() -> None:
        while not stop.wait(0.1):
            with contextlib.suppress(OSError), open(UEVENT_FILE, "w") as f:
                f.write("change")

    thread = threading.Thread(target=trigger, name="test-uevents", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _restore_env(old: str | None) -> None:
    if old is None:
        os.environ.pop(ENV_SECRET_NAME, None)
    else:
        os.environ[ENV_SECRET_NAME] = old


#: ioctl(2) request on a namespace fd: an fd of the user namespace that owns it.
NS_GET_USERNS = 0xB701


def network_namespace(ctx: dict[str, Any]) -> dict[str, Any]:
    """Not an escape: this process's network namespace: its inode and whether its owning
    user namespace is visible from here ("own": the caller's own user namespace,
    "outside": an ancestor of it, EPERM). Given an fd "ns" (a child started through the
    API), also writes that as JSON there and then waits for EOF on its fd "hold", so that
    children started together live together."""
    fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        inode = os.fstat(fd).st_ino
        try:
            import fcntl

            owner_fd = fcntl.ioctl(fd, NS_GET_USERNS)
        except OSError as exc:
            owner = "outside" if exc.errno == errno.EPERM else errno.errorcode[exc.errno or 0]
        else:
            own = os.stat("/proc/self/ns/user").st_ino
            owner = "own" if os.fstat(owner_fd).st_ino == own else "other"
            os.close(owner_fd)
    finally:
        os.close(fd)
    report = {"inode": inode, "owner": owner}
    fds = ctx.get("fds", {})
    if "ns" in fds:
        os.write(fds["ns"], json.dumps(report).encode() + b"\n")
        os.read(fds["hold"], 1)
    return report


def namespace_fds(ctx: dict[str, Any]) -> list[str]:
    """Not an escape: what every namespace fd this process holds refers to."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # the listing's own fd, closed meanwhile
        if target.split(":", 1)[0] in ("net", "mnt", "user", "pid", "ipc", "uts", "cgroup"):
            found.append(target)
    return found
