"""The parcel limits every layer checks against (IPCKit's sizes).

The lowest module of :mod:`childkit.ipc`: it imports nothing. The parcel enforces these
limits when a parcel is written, the wire format when a record is read (``_wire`` sits
below ``_parcel``, so the numbers live here, below both).
"""

from __future__ import annotations

#: Most data bytes a parcel holds (IPCKit's 200 KiB); large data goes through Ashmem. A
#: Python parcel counts its own bytes; the C kit counts OpenHarmony's layout (docs/native.md).
MAX_PARCEL_DATA = 204_800
#: Most parcel data bytes one frame carries: a C parcel full in OpenHarmony's layout takes
#: up to 1.5 times that tagged on the wire (5 bytes for a 4-byte int32, 3 bytes of UTF-8 for
#: a 2-byte UTF-16 unit of a token). What a peer sends is checked against this.
MAX_WIRE_DATA = MAX_PARCEL_DATA * 3 // 2
#: Most file descriptors (including Ashmem regions) one parcel carries.
MAX_PARCEL_FDS = 64
#: Most remote objects one parcel carries.
MAX_PARCEL_OBJECTS = 256
