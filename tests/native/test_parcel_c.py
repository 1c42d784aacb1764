"""OH_IPCParcel_* from C: documented results (parcel_selftest.c) and the wire data they
write and read, checked against Python's MessageParcel (parcel_wire.c)."""

from __future__ import annotations

import subprocess

from native_build import KIT_INTERNAL_FLAGS, KIT_SOURCES, Build

from childkit.ipc import MessageParcel


def test_parcel_selftest(cc: Build) -> None:
    exe = cc("parcel_selftest", ["parcel_selftest.c"])
    result = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("0 failures")


def _wire_tool(cc: Build) -> str:
    # Built from the kit's sources with its internal header: it prints a parcel's wire data.
    return str(cc("parcel_wire", ["parcel_wire.c", *KIT_SOURCES], kit=False,
                  flags=KIT_INTERNAL_FLAGS))


def test_c_writes_what_python_reads(cc: Build) -> None:
    out = subprocess.run([_wire_tool(cc), "write"], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    parcel = MessageParcel._from_wire(bytes.fromhex(out.strip()), [], [])
    assert parcel.read_int8() == -8
    assert parcel.read_int16() == -16
    assert parcel.read_int32() == -(2**31)
    assert parcel.read_int64() == -(2**63)
    assert parcel.read_uint8() == 255
    assert parcel.read_uint16() == 65535
    assert parcel.read_uint32() == 2**32 - 1
    assert parcel.read_uint64() == 2**64 - 1
    assert parcel.read_float() == 1.5
    assert parcel.read_double() == -2.25
    assert parcel.read_string() == "h\u00e9llo \U0001f600"
    assert parcel.read_bytes() == b"\x00\x01\x02"
    assert parcel.read_interface_token() == "demo.IDemo"
    assert parcel.get_readable_bytes() == 0


def test_python_writes_what_c_reads(cc: Build) -> None:
    p = MessageParcel()
    p.write_int8(-8)
    p.write_int16(-16)
    p.write_int32(-(2**31))
    p.write_int64(-(2**63))
    p.write_uint8(255)
    p.write_uint16(65535)
    p.write_uint32(2**32 - 1)
    p.write_uint64(2**64 - 1)
    p.write_float(1.5)
    p.write_double(-2.25)
    p.write_string("h\u00e9llo \U0001f600")
    p.write_bytes(b"\x00\x01\x02")
    p.write_interface_token("demo.IDemo")
    data = bytes(p._buf)
    out = subprocess.run([_wire_tool(cc), "read", data.hex()], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert out.splitlines() == [
        "-8", "-16", "-2147483648", "-9223372036854775808", "255", "65535", "4294967295",
        "18446744073709551615", "1.5", "-2.25", "h\u00e9llo \U0001f600", "000102",
        "demo.IDemo", "size 104 readable 0",  # 52 + 12 + 4 + 36
    ]


def test_c_refuses_what_it_cannot_read_safely(cc: Build) -> None:
    """Malformed or unrepresentable values from a peer are read errors, never garbage:
    a string with a NUL inside, invalid UTF-8, a length past the end, an unknown tag."""
    tool = _wire_tool(cc)
    cases = {
        "0c03000000610062": "string-error",  # "a\0b"
        "0c01000000ff": "string-error",  # not UTF-8
        "0c09000000616263": "string-error",  # length past the end: nothing indexed
        "63": "string-error",  # unknown tag
        "0f00000000": "string-error",  # an fd index with no fds
    }
    for hexdata, want in cases.items():
        out = subprocess.run([tool, "read-string", hexdata], capture_output=True, text=True,
                             check=True, timeout=60).stdout
        assert out.strip() == want, hexdata
