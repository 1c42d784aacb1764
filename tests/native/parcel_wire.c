/*
 * A parcel's wire data, for tests/native/test_parcel_c.py (built with the kit's internal
 * header, from its sources):
 *   parcel_wire write          prints the hex wire data of a fixed set of values
 *   parcel_wire read HEX       reads the same set of values from wire data, one per line
 *   parcel_wire read-string HEX  reads one string: it, or "string-error"
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ck_internal.h"
#include "ipc_kit.h"

static void *alloc(int32_t len) { return malloc((size_t)len); }

static unsigned char *unhex(const char *hex, size_t *len) {
    size_t n = strlen(hex) / 2;
    unsigned char *out = malloc(n + 1);
    for (size_t i = 0; i < n; i++) sscanf(hex + 2 * i, "%2hhx", &out[i]);
    *len = n;
    return out;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "write") == 0) {
        OHIPCParcel *p = OH_IPCParcel_Create();
        int rc = OH_IPCParcel_WriteInt8(p, -8) | OH_IPCParcel_WriteInt16(p, -16) |
                 OH_IPCParcel_WriteInt32(p, INT32_MIN) | OH_IPCParcel_WriteInt64(p, INT64_MIN) |
                 OH_IPCParcel_WriteUint8(p, 255) | OH_IPCParcel_WriteUint16(p, 65535) |
                 OH_IPCParcel_WriteUint32(p, UINT32_MAX) |
                 OH_IPCParcel_WriteUint64(p, UINT64_MAX) | OH_IPCParcel_WriteFloat(p, 1.5f) |
                 OH_IPCParcel_WriteDouble(p, -2.25) |
                 OH_IPCParcel_WriteString(p, "h\xc3\xa9llo \xf0\x9f\x98\x80") |
                 OH_IPCParcel_WriteBuffer(p, (const uint8_t *)"\x00\x01\x02", 3) |
                 OH_IPCParcel_WriteInterfaceToken(p, "demo.IDemo");
        if (rc != 0) return 2;
        for (size_t i = 0; i < p->len; i++) printf("%02x", p->data[i]);
        printf("\n");
        OH_IPCParcel_Destroy(p);
        return 0;
    }
    if (argc != 3) return 2;
    size_t len;
    unsigned char *data = unhex(argv[2], &len);
    OHIPCParcel *p = ck__parcel_from_wire(data, len, NULL, 0, NULL, 0);
    free(data);
    if (p == NULL) return 3;
    if (strcmp(argv[1], "read-string") == 0) {
        const char *s = OH_IPCParcel_ReadString(p);
        printf("%s\n", s != NULL ? s : "string-error");
        OH_IPCParcel_Destroy(p);
        return 0;
    }
    int8_t i8;
    int16_t i16;
    int32_t i32;
    int64_t i64;
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    uint64_t u64;
    float f;
    double d;
    char *token;
    int32_t token_len;
    if (OH_IPCParcel_ReadInt8(p, &i8) || OH_IPCParcel_ReadInt16(p, &i16) ||
        OH_IPCParcel_ReadInt32(p, &i32) || OH_IPCParcel_ReadInt64(p, &i64) ||
        OH_IPCParcel_ReadUint8(p, &u8) || OH_IPCParcel_ReadUint16(p, &u16) ||
        OH_IPCParcel_ReadUint32(p, &u32) || OH_IPCParcel_ReadUint64(p, &u64) ||
        OH_IPCParcel_ReadFloat(p, &f) || OH_IPCParcel_ReadDouble(p, &d))
        return 4;
    const char *s = OH_IPCParcel_ReadString(p);
    const uint8_t *b = OH_IPCParcel_ReadBuffer(p, 3);
    if (s == NULL || b == NULL ||
        OH_IPCParcel_ReadInterfaceToken(p, &token, &token_len, alloc) != OH_IPC_SUCCESS)
        return 5;
    printf("%d\n%d\n%" PRId32 "\n%" PRId64 "\n%u\n%u\n%" PRIu32 "\n%" PRIu64 "\n%g\n%g\n%s\n"
           "%02x%02x%02x\n%s\nsize %d readable %d\n",
           i8, i16, i32, i64, u8, u16, u32, u64, f, d, s, b[0], b[1], b[2], token,
           OH_IPCParcel_GetDataSize(p), OH_IPCParcel_GetReadableBytes(p));
    free(token);
    OH_IPCParcel_Destroy(p);
    return 0;
}
