"""The parcel limits every layer checks against (IPCKit's sizes).

The lowest module of :mod:`childkit.ipc`: it imports nothing. The parcel enforces these
limits when a parcel is written, the wire format when a record is read (``_wire`` sits
below ``_parcel``, so the numbers live here, below both).
"""

from __future__ import annotations

#: Most data bytes a parcel holds (IPCKit's 200 KiB); large data goes through Ashmem.
MAX_PARCEL_DATA = 204_800
#: Most file descriptors (including Ashmem regions) one parcel carries.
MAX_PARCEL_FDS = 64
#: Most remote objects one parcel carries.
MAX_PARCEL_OBJECTS = 256
