"""A parcel's type tags and the layout of each value (docs/wire-format.md).

Every value in a parcel's data is preceded by a one-byte type tag; these are the tags and
the ``struct`` layouts of the values, shared by the parcel (``_parcel``) and the code that
walks a parcel's values (``_parcelwalk``).

May import: nothing of childkit's.
"""

from __future__ import annotations

import struct

# Type tags. Never reuse a value: they are part of the wire format (docs/wire-format.md).
T_INT8, T_INT16, T_INT32, T_INT64 = 1, 2, 3, 4
T_UINT8, T_UINT16, T_UINT32, T_UINT64 = 5, 6, 7, 8
T_FLOAT, T_DOUBLE, T_BOOL = 9, 10, 11
T_STRING, T_BYTES, T_TOKEN = 12, 13, 14
T_FD, T_REMOTE, T_ASHMEM = 15, 16, 17

TAG_NAMES = {
    T_INT8: "int8", T_INT16: "int16", T_INT32: "int32", T_INT64: "int64",
    T_UINT8: "uint8", T_UINT16: "uint16", T_UINT32: "uint32", T_UINT64: "uint64",
    T_FLOAT: "float", T_DOUBLE: "double", T_BOOL: "bool", T_STRING: "string",
    T_BYTES: "bytes", T_TOKEN: "interface token", T_FD: "file descriptor",
    T_REMOTE: "remote object", T_ASHMEM: "ashmem",
}  # fmt: skip

# One Struct per fixed-size type: tag byte + value, packed and checked in one call.
FIXED: dict[int, struct.Struct] = {
    T_INT8: struct.Struct("<Bb"), T_INT16: struct.Struct("<Bh"),
    T_INT32: struct.Struct("<Bi"), T_INT64: struct.Struct("<Bq"),
    T_UINT8: struct.Struct("<BB"), T_UINT16: struct.Struct("<BH"),
    T_UINT32: struct.Struct("<BI"), T_UINT64: struct.Struct("<BQ"),
    T_FLOAT: struct.Struct("<Bf"), T_DOUBLE: struct.Struct("<Bd"),
    T_BOOL: struct.Struct("<B?"), T_FD: struct.Struct("<BI"),
    T_REMOTE: struct.Struct("<BI"),
}  # fmt: skip
LEN = struct.Struct("<BI")  # tag + u32 length, for strings, bytes and tokens
ASHMEM = struct.Struct("<BII")  # tag + fd index + name length, then the name
I32 = FIXED[T_INT32]
# From this size up a value is read out of a bytearray through a memoryview (one copy,
# not two); below it the view costs more than the second copy.
VIEW_BYTES = 512

INT_RANGES = {
    T_INT8: (-(2**7), 2**7 - 1), T_INT16: (-(2**15), 2**15 - 1),
    T_INT32: (-(2**31), 2**31 - 1), T_INT64: (-(2**63), 2**63 - 1),
    T_UINT8: (0, 2**8 - 1), T_UINT16: (0, 2**16 - 1),
    T_UINT32: (0, 2**32 - 1), T_UINT64: (0, 2**64 - 1),
}  # fmt: skip
