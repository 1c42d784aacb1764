"""childkit.native: where the headers and libraries are, the flags for C builds, what an
install without the libraries says, and the headers' ABI facts against Python's tables."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from native_build import HERE, STRICT, Build, kit_flags

import childkit.native as native
from childkit import ErrCode
from childkit.ipc import IPCErrorCode
from childkit.native.__main__ import main


def test_paths() -> None:
    include = Path(native.get_include())
    for header in ("ipc_kit.h", "ipc_cparcel.h", "ipc_cremote_object.h", "ipc_cskeleton.h",
                   "ipc_error_code.h"):
        assert (include / "IPCKit" / header).is_file()
    assert (include / "AbilityKit" / "native_child_process.h").is_file()
    assert native.library_path("ipc_capi") == Path(native.get_lib_dir()) / "libipc_capi.so"
    assert (Path(native.get_pkgconfig_dir()) / "childkit-native.pc").is_file()
    with pytest.raises(ValueError, match="not one of"):
        native.library_path("c")


def test_libraries_built() -> None:
    """pip install built them (CI has gcc and cmake); they load and export OH_ names only."""
    lib = ctypes.CDLL(str(native.require_library("ipc_capi")))
    assert lib.OH_IPCParcel_Create
    with pytest.raises(AttributeError):
        getattr(lib, "ck__record_decode")  # noqa: B009 (internals stay local: libipc_capi.map)
    child_process = ctypes.CDLL(str(native.require_library("child_process")))
    assert child_process.OH_Ability_CreateNativeChildProcess


def test_cli_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--cflags"]) == 0
    assert capsys.readouterr().out.split() == [
        f"-I{native.get_include()}", f"-I{native.get_include()}/IPCKit"]
    assert main(["--libs"]) == 0
    lib = native.get_lib_dir()
    assert capsys.readouterr().out.split() == [f"-L{lib}", f"-Wl,-rpath,{lib}", "-lipc_capi",
                                               "-lchild_process"]
    assert main(["--pkgconfig-dir"]) == 0
    assert capsys.readouterr().out.strip() == native.get_pkgconfig_dir()
    with pytest.raises(SystemExit):
        main([])


def test_cli_as_a_module() -> None:
    out = subprocess.run([sys.executable, "-m", "childkit.native", "--cflags", "--libs"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.split() == kit_flags()


def test_missing_library_is_said_clearly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """An install built without a compiler: the Python API imports and works, and the
    native kit names what is missing and why."""
    monkeypatch.setattr(native, "get_lib_dir", lambda: str(tmp_path))
    with pytest.raises(native.NativeLibraryMissing, match=r"libipc_capi\.so is missing.*"
                       r"C compiler and CMake"):
        native.require_library("ipc_capi")
    assert main(["--libs"]) == 1
    assert "libipc_capi.so is missing" in capsys.readouterr().err
    assert main(["--cflags"]) == 0  # the headers are always there


def test_pkg_config(cc: Build, tmp_path: Path) -> None:
    pkg_config = shutil.which("pkg-config")
    if pkg_config is None:
        pytest.fail("pkg-config is needed to test childkit-native.pc")
    env = {**os.environ, "PKG_CONFIG_PATH": native.get_pkgconfig_dir()}
    flags = subprocess.run([pkg_config, "--cflags", "--libs", "childkit-native"], env=env,
                           capture_output=True, text=True, check=True, timeout=60).stdout.split()
    exe = tmp_path / "pc_built"
    subprocess.run(["gcc", *STRICT, "-o", str(exe), str(HERE / "parcel_selftest.c"), *flags],
                   check=True, timeout=300)
    assert subprocess.run([str(exe)], capture_output=True, timeout=120).returncode == 0


def _values(exe: Path) -> dict[str, int]:
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True,
                         timeout=60).stdout
    return {name: int(value) for name, value in (line.rsplit(" ", 1) for line in out.splitlines())}


def test_header_abi(cc: Build, tmp_path: Path) -> None:
    """Error codes as Python's enums say; OH_IPC_MessageOption packed to 4 (16 bytes); the
    child process structs as childkit's ctypes mirrors lay them out; and C++ accepts it."""
    values = _values(cc("headers_check", ["headers_check.c"]))
    for code in IPCErrorCode:
        if code.name.startswith("OH_"):  # CK_IPC_TIMEOUT is childkit's own, not IPCKit's
            assert values[code.name] == code.value
    for ncp in ErrCode:
        assert values[ncp.name] == ncp.value
    assert values["OH_IPC_ERROR_CODE_MAX"] == 1902000
    assert values["OH_IPC_USER_ERROR_CODE_MIN"] == 1909000
    assert values["OH_IPC_USER_ERROR_CODE_MAX"] == 1909999
    assert values["OH_IPC_REQUEST_MODE_ASYNC"] == 1
    assert values["sizeof(OH_IPC_MessageOption)"] == 16
    assert values["offsetof(OH_IPC_MessageOption, reserved)"] == 8
    assert values["sizeof(NativeChildProcess_Args)"] == 16
    assert values["sizeof(NativeChildProcess_Fd)"] == 24
    assert values["offsetof(NativeChildProcess_Options, reserved)"] == 8
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.fail("g++ is needed to check the headers compile as C++")
    cpp = tmp_path / "headers_check.cpp"
    cpp.write_text((HERE / "headers_check.c").read_text())
    exe = tmp_path / "headers_check_cpp"
    subprocess.run([gxx, *STRICT, "-o", str(exe), str(cpp), *kit_flags()], check=True,
                   timeout=300)
    assert _values(exe) == values
