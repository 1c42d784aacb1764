/*
 * IPCKit parcels (childkit's libipc_capi.so): the declarations of OpenHarmony's
 * ipc_cparcel.h (API 12, plus the Uint8..Uint64 calls of the current NDK).
 *
 * Behaviour (docs/native.md has the details):
 *  - Sizes and positions (GetDataSize, Get*Position, Get*Bytes, Rewind*) count bytes in
 *    OpenHarmony's parcel layout: 8/16/32-bit integers and floats take 4 bytes, 64-bit ones
 *    and doubles 8, a string strlen+1 rounded up to 4, a buffer its length rounded up to 4,
 *    an interface token 12 + (UTF-16 units + 1) * 2 rounded up to 4, a file descriptor or a
 *    remote object 24 (a flat_binder_object). On the wire the parcel travels in childkit's
 *    tagged format (docs/wire-format.md), which Python peers read.
 *  - A parcel holds at most 204,800 bytes (IPCKit's limit); 64 fds; 256 remote objects.
 *  - A rewind position must be 0, the end of the data, or the end of a value written.
 *  - Ownership: the caller owns every parcel it creates and frees it with
 *    OH_IPCParcel_Destroy. Pointers from ReadString/ReadBuffer belong to the parcel and stay
 *    valid until it is destroyed. File descriptors are dup'ed on write (the parcel owns its
 *    copy) and on read (the caller owns the new fd). Proxies read are new boxes the caller
 *    destroys; stubs read are borrowed from their owner.
 *  - Errors: NULL or bad arguments give OH_IPC_CHECK_PARAM_ERROR; a failed write
 *    OH_IPC_PARCEL_WRITE_ERROR (the parcel unchanged); a failed read
 *    OH_IPC_PARCEL_READ_ERROR (the read position unchanged).
 * Not thread-safe: one thread uses a parcel at a time.
 */
#ifndef CAPI_INCLUDE_IPC_CPARCEL_H
#define CAPI_INCLUDE_IPC_CPARCEL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** An IPC parcel. @since 12 */
struct OHIPCParcel;
typedef struct OHIPCParcel OHIPCParcel;

/** A proxy: the caller's handle on a remote object. @since 12 */
struct OHIPCRemoteProxy;
typedef struct OHIPCRemoteProxy OHIPCRemoteProxy;

/** A stub: an object this process serves. @since 12 */
struct OHIPCRemoteStub;
typedef struct OHIPCRemoteStub OHIPCRemoteStub;

/** Allocates len bytes for data the library hands to the caller (who frees it). */
typedef void* (*OH_IPC_MemAllocator)(int32_t len);

/** A new empty parcel, or NULL without memory. */
OHIPCParcel* OH_IPCParcel_Create(void);
/** Frees the parcel, its fds and its references; NULL is ignored. */
void OH_IPCParcel_Destroy(OHIPCParcel *parcel);

/** Bytes written (OpenHarmony layout), or -1 for NULL. */
int OH_IPCParcel_GetDataSize(const OHIPCParcel *parcel);
/** Bytes that can still be written, or -1 for NULL. */
int OH_IPCParcel_GetWritableBytes(const OHIPCParcel *parcel);
/** Bytes between the read position and the end, or -1 for NULL. */
int OH_IPCParcel_GetReadableBytes(const OHIPCParcel *parcel);
/** The read position, or -1 for NULL. */
int OH_IPCParcel_GetReadPosition(const OHIPCParcel *parcel);
/** The write position (the data size), or -1 for NULL. */
int OH_IPCParcel_GetWritePosition(const OHIPCParcel *parcel);
/** Moves the read position to a value boundary. */
int OH_IPCParcel_RewindReadPosition(OHIPCParcel *parcel, uint32_t newReadPos);
/** Truncates the data to a value boundary, closing fds and dropping objects written after it. */
int OH_IPCParcel_RewindWritePosition(OHIPCParcel *parcel, uint32_t newWritePos);

int OH_IPCParcel_WriteInt8(OHIPCParcel *parcel, int8_t value);
int OH_IPCParcel_ReadInt8(const OHIPCParcel *parcel, int8_t *value);
int OH_IPCParcel_WriteInt16(OHIPCParcel *parcel, int16_t value);
int OH_IPCParcel_ReadInt16(const OHIPCParcel *parcel, int16_t *value);
int OH_IPCParcel_WriteInt32(OHIPCParcel *parcel, int32_t value);
int OH_IPCParcel_ReadInt32(const OHIPCParcel *parcel, int32_t *value);
int OH_IPCParcel_WriteInt64(OHIPCParcel *parcel, int64_t value);
int OH_IPCParcel_ReadInt64(const OHIPCParcel *parcel, int64_t *value);
/** @since 26 (the Uint8..Uint64 calls) */
int OH_IPCParcel_WriteUint8(OHIPCParcel *parcel, uint8_t value);
int OH_IPCParcel_ReadUint8(const OHIPCParcel *parcel, uint8_t *value);
int OH_IPCParcel_WriteUint16(OHIPCParcel *parcel, uint16_t value);
int OH_IPCParcel_ReadUint16(const OHIPCParcel *parcel, uint16_t *value);
int OH_IPCParcel_WriteUint32(OHIPCParcel *parcel, uint32_t value);
int OH_IPCParcel_ReadUint32(const OHIPCParcel *parcel, uint32_t *value);
int OH_IPCParcel_WriteUint64(OHIPCParcel *parcel, uint64_t value);
int OH_IPCParcel_ReadUint64(const OHIPCParcel *parcel, uint64_t *value);
int OH_IPCParcel_WriteFloat(OHIPCParcel *parcel, float value);
int OH_IPCParcel_ReadFloat(const OHIPCParcel *parcel, float *value);
int OH_IPCParcel_WriteDouble(OHIPCParcel *parcel, double value);
int OH_IPCParcel_ReadDouble(const OHIPCParcel *parcel, double *value);

/** Writes a NUL-terminated UTF-8 string. */
int OH_IPCParcel_WriteString(OHIPCParcel *parcel, const char *str);
/** The next string (NUL-terminated, owned by the parcel), or NULL on failure. */
const char* OH_IPCParcel_ReadString(const OHIPCParcel *parcel);
/** Writes len (> 0) bytes. */
int OH_IPCParcel_WriteBuffer(OHIPCParcel *parcel, const uint8_t *buffer, int32_t len);
/** The next buffer, which must be exactly len bytes (owned by the parcel), or NULL. */
const uint8_t* OH_IPCParcel_ReadBuffer(const OHIPCParcel *parcel, int32_t len);

/** Writes a reference to a local stub (the peer reads a proxy to it). */
int OH_IPCParcel_WriteRemoteStub(OHIPCParcel *parcel, const OHIPCRemoteStub *stub);
/** The stub of this process that the peer sent back, borrowed; NULL on failure. */
OHIPCRemoteStub* OH_IPCParcel_ReadRemoteStub(const OHIPCParcel *parcel);
/** Writes a reference to the remote object a proxy stands for. */
int OH_IPCParcel_WriteRemoteProxy(OHIPCParcel *parcel, const OHIPCRemoteProxy *proxy);
/** A new proxy the caller destroys; NULL on failure. */
OHIPCRemoteProxy* OH_IPCParcel_ReadRemoteProxy(const OHIPCParcel *parcel);

/** Writes a dup of fd (the caller keeps fd). */
int OH_IPCParcel_WriteFileDescriptor(OHIPCParcel *parcel, int32_t fd);
/** Reads a new fd (a dup) that the caller owns and closes. */
int OH_IPCParcel_ReadFileDescriptor(const OHIPCParcel *parcel, int32_t *fd);

/** Appends all of data (values, dup'ed fds, references) to parcel. */
int OH_IPCParcel_Append(OHIPCParcel *parcel, const OHIPCParcel *data);

/** Writes an interface token (1..204,800 bytes of UTF-8). */
int OH_IPCParcel_WriteInterfaceToken(OHIPCParcel *parcel, const char *token);
/** Reads a token into memory from allocator (strlen + 1 bytes, *len set to that; caller frees). */
int OH_IPCParcel_ReadInterfaceToken(const OHIPCParcel *parcel, char **token, int32_t *len,
    OH_IPC_MemAllocator allocator);

#ifdef __cplusplus
}
#endif

#endif /* CAPI_INCLUDE_IPC_CPARCEL_H */
