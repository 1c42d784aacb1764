"""Start-up arguments of a Start-mode child (``NativeChildProcess_Args``) and their limits.

The parent builds a :class:`ChildProcessArgs` (a string and named file descriptors) and
the manager calls :meth:`ChildProcessArgs.validate` before starting anything. In the
child the launcher installs the child's own copy once with
:func:`set_current_child_process_args`; from then on any code on any thread may read it
with :func:`get_current_child_process_args` (``OH_Ability_GetCurrentChildProcessArgs``).

Limits (every one measured the way a C string is, in bytes of its UTF-8 encoding):

* ``entry_params``: at most :data:`MAX_ENTRY_PARAMS_BYTES` = 150 * 1024 = 153,600 bytes.
  The OpenHarmony header says "The size cannot exceed 150 KB"; childkit reads KB as
  1024 bytes and counts the UTF-8 bytes without the C terminator, so 153,600 bytes pass
  and 153,601 fail.
* at most :data:`MAX_FDS` = 16 entries in ``fds`` (``MAX_FD_SIZE`` in OpenHarmony).
* an fd name is a non-empty str of at most :data:`MAX_FD_NAME_BYTES` = 20 bytes.
  OpenHarmony checks ``std::string::length() > 20`` (``MAX_KEY_SIZE`` /
  ``CHILD_PROCESS_ARGS_FD_KEY_MAX_LENGTH``), i.e. bytes, so an ASCII name may have 20
  characters and a non-ASCII one fewer. OpenHarmony enforces no character set, and
  neither does childkit. It does accept an empty name; childkit rejects it, because an
  empty name cannot be looked up meaningfully.
* no NUL character in ``entry_params`` or a name: both travel as C strings.
* duplicate names cannot occur: ``fds`` is a dict. (OpenHarmony takes a linked list and
  keeps the first of two equal names.)
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

from childkit.common._errors import ChildkitError, ErrCode

#: Largest accepted ``entry_params``: 150 KB as 150 * 1024 bytes of UTF-8.
MAX_ENTRY_PARAMS_BYTES = 150 * 1024
#: Most named file descriptors one child may receive.
MAX_FDS = 16
#: Longest accepted fd name, in bytes of UTF-8 (20 ASCII characters).
MAX_FD_NAME_BYTES = 20
#: An fd travels as ``int32_t``.
_INT32_MAX = 2**31 - 1


def _invalid(message: str) -> ChildkitError:
    return ChildkitError(ErrCode.NCP_ERR_INVALID_PARAM, message)


def _short(text: str, limit: int = 40) -> str:
    """``repr`` of ``text``, cut so that huge inputs still give a short message."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _invalid(f"{what} {_short(text)} cannot be encoded as UTF-8: {exc.reason}") from None


@dataclass
class ChildProcessArgs:
    """What a Start-mode child receives: a parameter string and named file descriptors.

    In the parent ``fds`` holds the caller's descriptors; childkit never closes them
    (the caller still owns them). In the child, ``fds`` maps the same names to the
    child's own descriptor numbers, which refer to the same open files.

    Raises (from the constructor, as :class:`ChildProcessOptions` does):
        ChildkitError: ``NCP_ERR_INVALID_PARAM`` for every limit of :meth:`validate`
            but one: whether each fd is open is checked when the child is started
            (the fds may be opened after the arguments are built).
    """

    entry_params: str = ""
    fds: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._validate_params()
        self._validate_fds(check_open=False)

    def validate(self) -> None:
        """Check every documented limit; return ``None`` when all hold.

        Raises:
            ChildkitError: ``NCP_ERR_INVALID_PARAM`` with a message naming the first
                problem found: ``entry_params`` not a str, not UTF-8 encodable, holding
                a NUL, or longer than 153,600 bytes; ``fds`` not a dict or with more
                than 16 entries; a name that is not a str, is empty, holds a NUL or is
                longer than 20 bytes; an fd that is not an int, is negative or too big
                for ``int32_t``, or is not open in this process.
        """
        self._validate_params()
        self._validate_fds()

    def _validate_params(self) -> None:
        params = self.entry_params
        if not isinstance(params, str):
            raise _invalid(f"entry_params must be a str, not {type(params).__name__}")
        if "\0" in params:
            raise _invalid(
                f"entry_params contains a NUL character at index {params.index(chr(0))}; "
                "it is passed as a C string"
            )
        size = len(_utf8(params, "entry_params"))
        if size > MAX_ENTRY_PARAMS_BYTES:
            raise _invalid(
                f"entry_params is {size} bytes of UTF-8; the limit is "
                f"{MAX_ENTRY_PARAMS_BYTES} bytes (150 KB)"
            )

    def _validate_fds(self, check_open: bool = True) -> None:
        fds = self.fds
        if not isinstance(fds, dict):
            raise _invalid(f"fds must be a dict of name -> fd, not {type(fds).__name__}")
        if len(fds) > MAX_FDS:
            raise _invalid(f"fds has {len(fds)} entries; at most {MAX_FDS} are allowed")
        for name, fd in fds.items():
            _check_fd_name(name)
            _check_fd(name, fd, check_open)


def _check_fd_name(name: object) -> None:
    if not isinstance(name, str):
        raise _invalid(f"fd name {name!r} must be a str, not {type(name).__name__}")
    if not name:
        raise _invalid("fd name must not be empty")
    if "\0" in name:
        raise _invalid(f"fd name {_short(name)} contains a NUL character")
    size = len(_utf8(name, "fd name"))
    if size > MAX_FD_NAME_BYTES:
        raise _invalid(
            f"fd name {_short(name)} is {size} bytes of UTF-8; the limit is "
            f"{MAX_FD_NAME_BYTES} bytes"
        )


def _check_fd(name: str, fd: object, check_open: bool = True) -> None:
    # bool is an int subclass, but True is never meant as "fd 1".
    if not isinstance(fd, int) or isinstance(fd, bool):
        raise _invalid(f"fd {name!r} must be an int, not {type(fd).__name__}")
    if fd < 0 or fd > _INT32_MAX:
        raise _invalid(f"fd {name!r} ({fd}) is not a valid file descriptor number")
    if not check_open:
        return
    try:
        os.fstat(fd)
    except OSError:
        raise _invalid(f"fd {name!r} ({fd}) is not an open file descriptor") from None


# The child's own arguments. Written once by the launcher before the entry runs, then
# only read; the lock makes "set once" race-free if a launcher ever calls it from two
# threads.
_current: ChildProcessArgs | None = None
_current_lock = threading.Lock()


def set_current_child_process_args(args: ChildProcessArgs) -> None:
    """Install this child's start-up arguments; the launcher calls it once, in the child.

    ``args.fds`` must hold the child's own descriptor numbers. The arguments are
    validated and copied, so later changes to ``args`` do not show through.

    Raises:
        TypeError: ``args`` is not a :class:`ChildProcessArgs`.
        ChildkitError: ``NCP_ERR_INVALID_PARAM`` if ``args`` breaks a limit
            (see :meth:`ChildProcessArgs.validate`).
        RuntimeError: the arguments were already set in this process.
    """
    global _current
    if not isinstance(args, ChildProcessArgs):
        raise TypeError(f"args must be a ChildProcessArgs, not {type(args).__name__}")
    args.validate()
    copy = ChildProcessArgs(args.entry_params, dict(args.fds))
    with _current_lock:
        if _current is not None:
            raise RuntimeError("this child's start-up arguments are already set")
        _current = copy


def get_current_child_process_args() -> ChildProcessArgs | None:
    """This child's start-up arguments, or ``None`` in a process that is not such a child.

    Callable from any thread at any time. Each call returns a fresh copy, so one
    library changing what it got cannot change what another library sees. The fds in
    it belong to the child; they stay open for the child's life unless the child's own
    code closes them.
    """
    current = _current
    if current is None:
        return None
    return ChildProcessArgs(current.entry_params, dict(current.fds))
