/*
 * OH_IPCParcel_* against their documented results, built by tests/native/test_parcel_c.py
 * with `python -m childkit.native --cflags --libs` and run: every check prints a line
 * "FAIL <line>: <what>" when it fails; the exit status is the number of failures.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <IPCKit/ipc_kit.h>

static int failures;
#define CHECK(cond)                                                   \
    do {                                                              \
        if (!(cond)) {                                                \
            printf("FAIL %d: %s\n", __LINE__, #cond);                 \
            failures++;                                               \
        }                                                             \
    } while (0)

static void *failing_allocator(int32_t len) { return NULL; }
static void *plain_allocator(int32_t len) { return malloc((size_t)len); }

static int open_fds(void) {
    int n = 0;
    for (int fd = 0; fd < 1024; fd++)
        if (fcntl(fd, F_GETFD) >= 0) n++;
    return n;
}

static void null_arguments(void) {
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
    char *s;
    OHIPCParcel *p = OH_IPCParcel_Create();
    CHECK(p != NULL);
    OH_IPCParcel_Destroy(NULL);
    CHECK(OH_IPCParcel_GetDataSize(NULL) == -1);
    CHECK(OH_IPCParcel_GetWritableBytes(NULL) == -1);
    CHECK(OH_IPCParcel_GetReadableBytes(NULL) == -1);
    CHECK(OH_IPCParcel_GetReadPosition(NULL) == -1);
    CHECK(OH_IPCParcel_GetWritePosition(NULL) == -1);
    CHECK(OH_IPCParcel_RewindReadPosition(NULL, 0) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_RewindWritePosition(NULL, 0) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_WriteInt8(NULL, 1) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_WriteInt16(NULL, 1) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_WriteInt32(NULL, 1) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_WriteInt64(NULL, 1) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_WriteUint8(NULL, 1) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_WriteUint16(NULL, 1) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_WriteUint32(NULL, 1) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_WriteUint64(NULL, 1) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_WriteFloat(NULL, 1) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_WriteDouble(NULL, 1) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_WriteString(NULL, "x") == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_WriteString(p, NULL) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_WriteBuffer(NULL, (const uint8_t *)"x", 1) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_WriteBuffer(p, NULL, 1) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_WriteBuffer(p, (const uint8_t *)"x", 0) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_WriteBuffer(p, (const uint8_t *)"x", -1) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_WriteFileDescriptor(NULL, 0) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_WriteFileDescriptor(p, -1) == OH_IPC_PARCEL_WRITE_ERROR);
    CHECK(OH_IPCParcel_WriteInterfaceToken(NULL, "t") == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_WriteInterfaceToken(p, NULL) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_WriteInterfaceToken(p, "") == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_Append(NULL, p) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_Append(p, NULL) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_ReadInt8(NULL, &i8) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_ReadInt8(p, NULL) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_ReadInt16(p, NULL) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_ReadInt32(p, NULL) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_ReadInt64(p, NULL) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_ReadUint8(p, NULL) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_ReadUint16(p, NULL) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_ReadUint32(p, NULL) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_ReadUint64(p, NULL) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_ReadFloat(p, NULL) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_ReadDouble(p, NULL) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_ReadFileDescriptor(p, NULL) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_ReadString(NULL) == NULL);
    CHECK(OH_IPCParcel_ReadBuffer(NULL, 1) == NULL);
    CHECK(OH_IPCParcel_ReadInterfaceToken(NULL, &s, &i32, plain_allocator) ==
          OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_ReadInterfaceToken(p, NULL, &i32, plain_allocator) ==
          OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_ReadInterfaceToken(p, &s, NULL, plain_allocator) ==
          OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_ReadInterfaceToken(p, &s, &i32, NULL) == OH_IPC_CHECK_PARAM_ERROR);
    /* an empty parcel has nothing to read */
    CHECK(OH_IPCParcel_ReadInt8(p, &i8) == OH_IPC_PARCEL_READ_ERROR);
    CHECK(OH_IPCParcel_ReadInt16(p, &i16) == OH_IPC_PARCEL_READ_ERROR);
    CHECK(OH_IPCParcel_ReadInt64(p, &i64) == OH_IPC_PARCEL_READ_ERROR);
    CHECK(OH_IPCParcel_ReadUint8(p, &u8) == OH_IPC_PARCEL_READ_ERROR);
    CHECK(OH_IPCParcel_ReadUint16(p, &u16) == OH_IPC_PARCEL_READ_ERROR);
    CHECK(OH_IPCParcel_ReadUint32(p, &u32) == OH_IPC_PARCEL_READ_ERROR);
    CHECK(OH_IPCParcel_ReadUint64(p, &u64) == OH_IPC_PARCEL_READ_ERROR);
    CHECK(OH_IPCParcel_ReadFloat(p, &f) == OH_IPC_PARCEL_READ_ERROR);
    CHECK(OH_IPCParcel_ReadDouble(p, &d) == OH_IPC_PARCEL_READ_ERROR);
    CHECK(OH_IPCParcel_ReadString(p) == NULL);
    CHECK(OH_IPCParcel_GetDataSize(p) == 0);
    OH_IPCParcel_Destroy(p);
}

/* Every value round-trips, and sizes follow OpenHarmony's layout after each write. */
static void layout_and_round_trip(void) {
    OHIPCParcel *p = OH_IPCParcel_Create();
    CHECK(OH_IPCParcel_GetWritableBytes(p) == 0); /* OpenHarmony's capacity starts at 0 */
    CHECK(OH_IPCParcel_WriteInt8(p, -8) == OH_IPC_SUCCESS);
    CHECK(OH_IPCParcel_GetDataSize(p) == 4);
    CHECK(OH_IPCParcel_GetWritableBytes(p) == 64 - 4); /* and grows to 64 bytes first */
    CHECK(OH_IPCParcel_WriteInt16(p, -16) == OH_IPC_SUCCESS);
    CHECK(OH_IPCParcel_GetDataSize(p) == 8);
    CHECK(OH_IPCParcel_WriteInt32(p, INT32_MIN) == OH_IPC_SUCCESS);
    CHECK(OH_IPCParcel_GetDataSize(p) == 12);
    CHECK(OH_IPCParcel_WriteInt64(p, INT64_MIN) == OH_IPC_SUCCESS);
    CHECK(OH_IPCParcel_GetDataSize(p) == 20);
    CHECK(OH_IPCParcel_WriteUint8(p, 255) == OH_IPC_SUCCESS);
    CHECK(OH_IPCParcel_WriteUint16(p, 65535) == OH_IPC_SUCCESS);
    CHECK(OH_IPCParcel_WriteUint32(p, UINT32_MAX) == OH_IPC_SUCCESS);
    CHECK(OH_IPCParcel_GetDataSize(p) == 32);
    CHECK(OH_IPCParcel_WriteUint64(p, UINT64_MAX) == OH_IPC_SUCCESS);
    CHECK(OH_IPCParcel_GetDataSize(p) == 40);
    CHECK(OH_IPCParcel_WriteFloat(p, 1.5f) == OH_IPC_SUCCESS);
    CHECK(OH_IPCParcel_GetDataSize(p) == 44);
    CHECK(OH_IPCParcel_WriteDouble(p, -2.25) == OH_IPC_SUCCESS);
    CHECK(OH_IPCParcel_GetDataSize(p) == 52);
    CHECK(OH_IPCParcel_WriteString(p, "abc") == OH_IPC_SUCCESS); /* 3 + 1 -> 4 */
    CHECK(OH_IPCParcel_GetDataSize(p) == 56);
    CHECK(OH_IPCParcel_WriteString(p, "abcd") == OH_IPC_SUCCESS); /* 4 + 1 -> 8 */
    CHECK(OH_IPCParcel_GetDataSize(p) == 64);
    CHECK(OH_IPCParcel_WriteString(p, "") == OH_IPC_SUCCESS); /* 1 -> 4 */
    CHECK(OH_IPCParcel_GetDataSize(p) == 68);
    CHECK(OH_IPCParcel_WriteBuffer(p, (const uint8_t *)"\x01\x02\x03\x04\x05", 5) ==
          OH_IPC_SUCCESS); /* 5 -> 8 */
    CHECK(OH_IPCParcel_GetDataSize(p) == 76);
    CHECK(OH_IPCParcel_WriteInterfaceToken(p, "ab") == OH_IPC_SUCCESS); /* 12 + (2+1)*2 -> 20 */
    CHECK(OH_IPCParcel_GetDataSize(p) == 96);
    CHECK(OH_IPCParcel_WriteInterfaceToken(p, "\xf0\x9f\x98\x80") == OH_IPC_SUCCESS);
    CHECK(OH_IPCParcel_GetDataSize(p) == 96 + 12 + 8); /* a surrogate pair: (2+1)*2 -> 8 */
    CHECK(OH_IPCParcel_GetWritePosition(p) == 116);
    CHECK(OH_IPCParcel_GetWritableBytes(p) == 128 - 116); /* 64, then doubled once */
    CHECK(OH_IPCParcel_GetReadableBytes(p) == 116);
    CHECK(OH_IPCParcel_WriteString(p, "\xff") == OH_IPC_PARCEL_WRITE_ERROR); /* not UTF-8 */
    CHECK(OH_IPCParcel_WriteInterfaceToken(p, "\xc0\x80") == OH_IPC_PARCEL_WRITE_ERROR);
    CHECK(OH_IPCParcel_GetDataSize(p) == 116); /* failed writes leave it unchanged */

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
    CHECK(OH_IPCParcel_ReadInt16(p, &i16) == OH_IPC_PARCEL_READ_ERROR); /* wrong type */
    CHECK(OH_IPCParcel_GetReadPosition(p) == 0);
    CHECK(OH_IPCParcel_ReadInt8(p, &i8) == OH_IPC_SUCCESS && i8 == -8);
    CHECK(OH_IPCParcel_GetReadPosition(p) == 4);
    CHECK(OH_IPCParcel_ReadInt16(p, &i16) == OH_IPC_SUCCESS && i16 == -16);
    CHECK(OH_IPCParcel_ReadInt32(p, &i32) == OH_IPC_SUCCESS && i32 == INT32_MIN);
    CHECK(OH_IPCParcel_ReadInt64(p, &i64) == OH_IPC_SUCCESS && i64 == INT64_MIN);
    CHECK(OH_IPCParcel_ReadUint8(p, &u8) == OH_IPC_SUCCESS && u8 == 255);
    CHECK(OH_IPCParcel_ReadUint16(p, &u16) == OH_IPC_SUCCESS && u16 == 65535);
    CHECK(OH_IPCParcel_ReadUint32(p, &u32) == OH_IPC_SUCCESS && u32 == UINT32_MAX);
    CHECK(OH_IPCParcel_ReadUint64(p, &u64) == OH_IPC_SUCCESS && u64 == UINT64_MAX);
    CHECK(OH_IPCParcel_ReadFloat(p, &f) == OH_IPC_SUCCESS && f == 1.5f);
    CHECK(OH_IPCParcel_ReadDouble(p, &d) == OH_IPC_SUCCESS && d == -2.25);
    CHECK(OH_IPCParcel_GetReadPosition(p) == 52);
    CHECK(OH_IPCParcel_GetReadableBytes(p) == 116 - 52);
    const char *abc = OH_IPCParcel_ReadString(p);
    CHECK(abc != NULL && strcmp(abc, "abc") == 0);
    const char *abcd = OH_IPCParcel_ReadString(p);
    CHECK(abcd != NULL && strcmp(abcd, "abcd") == 0);
    const char *empty = OH_IPCParcel_ReadString(p);
    CHECK(empty != NULL && empty[0] == '\0');
    CHECK(OH_IPCParcel_ReadBuffer(p, 4) == NULL); /* must be the whole buffer */
    CHECK(OH_IPCParcel_ReadBuffer(p, 0) == NULL);
    const uint8_t *buf = OH_IPCParcel_ReadBuffer(p, 5);
    CHECK(buf != NULL && memcmp(buf, "\x01\x02\x03\x04\x05", 5) == 0);
    char *token = NULL;
    int32_t len = 0;
    CHECK(OH_IPCParcel_ReadInterfaceToken(p, &token, &len, failing_allocator) ==
          OH_IPC_MEM_ALLOCATOR_ERROR);
    CHECK(OH_IPCParcel_GetReadPosition(p) == 76);
    CHECK(OH_IPCParcel_ReadInterfaceToken(p, &token, &len, plain_allocator) == OH_IPC_SUCCESS);
    CHECK(token != NULL && strcmp(token, "ab") == 0 && len == 3);
    free(token);
    CHECK(OH_IPCParcel_ReadInterfaceToken(p, &token, &len, plain_allocator) == OH_IPC_SUCCESS);
    CHECK(token != NULL && strcmp(token, "\xf0\x9f\x98\x80") == 0 && len == 5);
    free(token);
    CHECK(OH_IPCParcel_GetReadableBytes(p) == 0);
    CHECK(OH_IPCParcel_ReadInt8(p, &i8) == OH_IPC_PARCEL_READ_ERROR); /* past the end */

    /* pointers stay valid while the parcel lives, across rewinds and further writes */
    CHECK(OH_IPCParcel_RewindReadPosition(p, 52) == OH_IPC_SUCCESS);
    const char *again = OH_IPCParcel_ReadString(p);
    CHECK(again != NULL && again != abc && strcmp(again, "abc") == 0);
    CHECK(OH_IPCParcel_WriteInt32(p, 7) == OH_IPC_SUCCESS);
    CHECK(strcmp(abc, "abc") == 0 && memcmp(buf, "\x01\x02\x03\x04\x05", 5) == 0);

    /* rewinds: value boundaries only, within the data */
    CHECK(OH_IPCParcel_RewindReadPosition(p, 2) == OH_IPC_INNER_ERROR);
    CHECK(OH_IPCParcel_RewindReadPosition(p, 121) == OH_IPC_INNER_ERROR);
    CHECK(OH_IPCParcel_RewindReadPosition(p, 120) == OH_IPC_SUCCESS);
    CHECK(OH_IPCParcel_GetReadableBytes(p) == 0);
    CHECK(OH_IPCParcel_RewindReadPosition(p, 0) == OH_IPC_SUCCESS);
    CHECK(OH_IPCParcel_RewindWritePosition(p, 6) == OH_IPC_INNER_ERROR);
    CHECK(OH_IPCParcel_RewindWritePosition(p, 200) == OH_IPC_INNER_ERROR);
    CHECK(OH_IPCParcel_RewindReadPosition(p, 8) == OH_IPC_SUCCESS);
    CHECK(OH_IPCParcel_RewindWritePosition(p, 4) == OH_IPC_SUCCESS);
    CHECK(OH_IPCParcel_GetDataSize(p) == 4 && OH_IPCParcel_GetReadPosition(p) == 4);
    CHECK(OH_IPCParcel_WriteInt64(p, 5) == OH_IPC_SUCCESS);
    CHECK(OH_IPCParcel_ReadInt64(p, &i64) == OH_IPC_SUCCESS && i64 == 5);
    CHECK(OH_IPCParcel_RewindWritePosition(p, 0) == OH_IPC_SUCCESS);
    CHECK(OH_IPCParcel_GetDataSize(p) == 0 && OH_IPCParcel_GetReadPosition(p) == 0);
    OH_IPCParcel_Destroy(p);
}

/* The capacity that GetWritableBytes reports grows as OpenHarmony's does: doubling from 64
 * bytes to 4 KiB, then 4 KiB at a time, at most 200 KiB; it never shrinks on a rewind. */
static void capacity_growth(void) {
    OHIPCParcel *p = OH_IPCParcel_Create();
    for (int i = 0; i < 16; i++) CHECK(OH_IPCParcel_WriteInt32(p, i) == OH_IPC_SUCCESS);
    CHECK(OH_IPCParcel_GetWritableBytes(p) == 0); /* 64 bytes, full */
    CHECK(OH_IPCParcel_WriteInt32(p, 16) == OH_IPC_SUCCESS);
    CHECK(OH_IPCParcel_GetWritableBytes(p) == 128 - 68);
    static uint8_t block[8192];
    CHECK(OH_IPCParcel_WriteBuffer(p, block, 4000) == OH_IPC_SUCCESS); /* 4068: 4096 */
    CHECK(OH_IPCParcel_GetWritableBytes(p) == 4096 - 4068);
    CHECK(OH_IPCParcel_WriteBuffer(p, block, 28) == OH_IPC_SUCCESS); /* exactly 4096 */
    CHECK(OH_IPCParcel_GetWritableBytes(p) == 0);
    CHECK(OH_IPCParcel_WriteBuffer(p, block, 8192) == OH_IPC_SUCCESS); /* 12288: + 4 KiB */
    CHECK(OH_IPCParcel_GetWritableBytes(p) == 16384 - 12288);
    CHECK(OH_IPCParcel_RewindWritePosition(p, 4096) == OH_IPC_SUCCESS);
    CHECK(OH_IPCParcel_GetWritableBytes(p) == 16384 - 4096);
    OH_IPCParcel_Destroy(p);
    p = OH_IPCParcel_Create(); /* a spare parcel starts again from 0 */
    CHECK(OH_IPCParcel_GetWritableBytes(p) == 0);
    OH_IPCParcel_Destroy(p);
}

/* 204,800 bytes of OpenHarmony's layout fit, one more does not, on both sides of the edge,
 * whatever the values take tagged on the wire. */
static void limits(void) {
    OHIPCParcel *p = OH_IPCParcel_Create();
    static uint8_t big[204800];
    memset(big, 'x', sizeof big);
    CHECK(OH_IPCParcel_WriteBuffer(p, big, 204800) == OH_IPC_SUCCESS);
    CHECK(OH_IPCParcel_GetDataSize(p) == 204800);
    CHECK(OH_IPCParcel_GetWritableBytes(p) == 0);
    CHECK(OH_IPCParcel_WriteInt8(p, 1) == OH_IPC_PARCEL_WRITE_ERROR);
    CHECK(OH_IPCParcel_GetDataSize(p) == 204800);
    const uint8_t *back = OH_IPCParcel_ReadBuffer(p, 204800);
    CHECK(back != NULL && back[0] == 'x' && back[204799] == 'x');
    OH_IPCParcel_Destroy(p);

    p = OH_IPCParcel_Create();
    CHECK(OH_IPCParcel_WriteBuffer(p, big, 204797) == OH_IPC_SUCCESS); /* padded: 204800 */
    CHECK(OH_IPCParcel_GetDataSize(p) == 204800);
    OH_IPCParcel_Destroy(p);
    p = OH_IPCParcel_Create();
    CHECK(OH_IPCParcel_WriteInt32(p, 1) == OH_IPC_SUCCESS);
    CHECK(OH_IPCParcel_WriteBuffer(p, big, 204797) == OH_IPC_PARCEL_WRITE_ERROR);
    CHECK(OH_IPCParcel_WriteBuffer(p, big, 204796) == OH_IPC_SUCCESS);
    OH_IPCParcel_Destroy(p);

    /* Fixed-size values: 51,200 of 4 bytes and 25,600 of 8 (5 and 9 bytes on the wire). */
    p = OH_IPCParcel_Create();
    int failed_at = -1;
    for (int i = 0; i < 51200 && failed_at < 0; i++)
        if (OH_IPCParcel_WriteUint32(p, (uint32_t)i) != OH_IPC_SUCCESS) failed_at = i;
    CHECK(failed_at == -1);
    CHECK(OH_IPCParcel_GetWritableBytes(p) == 0);
    CHECK(OH_IPCParcel_WriteUint32(p, 1) == OH_IPC_PARCEL_WRITE_ERROR);
    uint32_t u = 0;
    CHECK(OH_IPCParcel_RewindReadPosition(p, 204796) == OH_IPC_SUCCESS);
    CHECK(OH_IPCParcel_ReadUint32(p, &u) == OH_IPC_SUCCESS && u == 51199);
    OH_IPCParcel_Destroy(p);
    p = OH_IPCParcel_Create();
    for (int i = 0; i < 25600 && failed_at < 0; i++)
        if (OH_IPCParcel_WriteUint64(p, (uint64_t)i) != OH_IPC_SUCCESS) failed_at = i;
    CHECK(failed_at == -1);
    CHECK(OH_IPCParcel_WriteUint64(p, 1) == OH_IPC_PARCEL_WRITE_ERROR);
    CHECK(OH_IPCParcel_WriteInt8(p, 1) == OH_IPC_PARCEL_WRITE_ERROR);
    OH_IPCParcel_Destroy(p);

    p = OH_IPCParcel_Create();
    for (int i = 0; i < 51200; i++)
        if (OH_IPCParcel_WriteInt8(p, 1) != OH_IPC_SUCCESS) {
            CHECK(i == 51200 && "int8 number i failed");
            break;
        }
    CHECK(OH_IPCParcel_GetDataSize(p) == 204800);
    CHECK(OH_IPCParcel_GetWritableBytes(p) == 0);
    CHECK(OH_IPCParcel_WriteInt8(p, 1) == OH_IPC_PARCEL_WRITE_ERROR);
    OH_IPCParcel_Destroy(p);

    p = OH_IPCParcel_Create();
    int fd = open("/dev/null", O_RDONLY);
    for (int i = 0; i < 64; i++) CHECK(OH_IPCParcel_WriteFileDescriptor(p, fd) == OH_IPC_SUCCESS);
    CHECK(OH_IPCParcel_WriteFileDescriptor(p, fd) == OH_IPC_PARCEL_WRITE_ERROR);
    CHECK(OH_IPCParcel_GetDataSize(p) == 64 * 24);
    OH_IPCParcel_Destroy(p);
    close(fd);
}

/* fds are dup'ed on write and on read; rewinds and destroy close the parcel's copies. */
static void file_descriptors(void) {
    int before = open_fds();
    int fd = open("/dev/null", O_RDONLY);
    struct stat want, got;
    fstat(fd, &want);
    OHIPCParcel *p = OH_IPCParcel_Create();
    CHECK(OH_IPCParcel_WriteInt32(p, 1) == OH_IPC_SUCCESS);
    CHECK(OH_IPCParcel_WriteFileDescriptor(p, fd) == OH_IPC_SUCCESS);
    CHECK(OH_IPCParcel_GetDataSize(p) == 28);
    CHECK(open_fds() == before + 2);
    close(fd); /* the parcel's copy stays */
    int32_t out = -1, one;
    CHECK(OH_IPCParcel_ReadFileDescriptor(p, &out) == OH_IPC_PARCEL_READ_ERROR);
    CHECK(OH_IPCParcel_ReadInt32(p, &one) == OH_IPC_SUCCESS);
    CHECK(OH_IPCParcel_ReadFileDescriptor(p, &out) == OH_IPC_SUCCESS);
    CHECK(out >= 0 && fstat(out, &got) == 0 && got.st_ino == want.st_ino);
    CHECK(open_fds() == before + 2);
    close(out);
    CHECK(OH_IPCParcel_RewindWritePosition(p, 4) == OH_IPC_SUCCESS);
    CHECK(open_fds() == before);
    CHECK(OH_IPCParcel_WriteFileDescriptor(p, 0) == OH_IPC_SUCCESS);
    OH_IPCParcel_Destroy(p);
    CHECK(open_fds() == before);
}

static void append(void) {
    int before = open_fds();
    OHIPCParcel *a = OH_IPCParcel_Create(), *b = OH_IPCParcel_Create();
    CHECK(OH_IPCParcel_WriteInt32(a, 1) == OH_IPC_SUCCESS);
    CHECK(OH_IPCParcel_WriteFileDescriptor(a, 0) == OH_IPC_SUCCESS);
    CHECK(OH_IPCParcel_WriteString(b, "two") == OH_IPC_SUCCESS);
    CHECK(OH_IPCParcel_WriteFileDescriptor(b, 1) == OH_IPC_SUCCESS);
    CHECK(OH_IPCParcel_Append(a, a) == OH_IPC_CHECK_PARAM_ERROR);
    CHECK(OH_IPCParcel_Append(a, b) == OH_IPC_SUCCESS);
    CHECK(OH_IPCParcel_GetDataSize(a) == 4 + 24 + 4 + 24);
    OH_IPCParcel_Destroy(b); /* a has its own copies */
    int32_t v, fd0, fd1;
    CHECK(OH_IPCParcel_ReadInt32(a, &v) == OH_IPC_SUCCESS && v == 1);
    CHECK(OH_IPCParcel_ReadFileDescriptor(a, &fd0) == OH_IPC_SUCCESS);
    const char *two = OH_IPCParcel_ReadString(a);
    CHECK(two != NULL && strcmp(two, "two") == 0);
    CHECK(OH_IPCParcel_ReadFileDescriptor(a, &fd1) == OH_IPC_SUCCESS);
    struct stat s0, s1, want0, want1;
    fstat(0, &want0);
    fstat(1, &want1);
    CHECK(fstat(fd0, &s0) == 0 && s0.st_ino == want0.st_ino && s0.st_dev == want0.st_dev);
    CHECK(fstat(fd1, &s1) == 0 && s1.st_ino == want1.st_ino && s1.st_dev == want1.st_dev);
    close(fd0);
    close(fd1);
    /* an append that would pass the limit changes nothing */
    OHIPCParcel *big = OH_IPCParcel_Create();
    static uint8_t bytes[204790]; /* 204,792 + 56 bytes: over the limit */
    CHECK(OH_IPCParcel_WriteBuffer(big, bytes, sizeof bytes) == OH_IPC_SUCCESS);
    int size = OH_IPCParcel_GetDataSize(a);
    CHECK(OH_IPCParcel_Append(a, big) == OH_IPC_PARCEL_WRITE_ERROR);
    CHECK(OH_IPCParcel_GetDataSize(a) == size);
    OH_IPCParcel_Destroy(big);
    OH_IPCParcel_Destroy(a);
    CHECK(open_fds() == before);
}

/* Large values reuse the blocks of destroyed parcels (the kit's per-thread cache): what a
 * live parcel handed out stays intact, whatever later parcels write and read. */
static void large_values_reuse(void) {
    enum { BIG = 150000, ROUNDS = 6 };
    static char text[ROUNDS][BIG + 1];
    const char *kept[ROUNDS] = {0};
    OHIPCParcel *live[ROUNDS] = {0};
    for (int r = 0; r < ROUNDS; r++) {
        memset(text[r], 'a' + r, BIG);
        text[r][BIG] = '\0';
        live[r] = OH_IPCParcel_Create();
        /* many small writes first: the data grows through the cached sizes */
        for (int i = 0; i < 5000; i++) CHECK(OH_IPCParcel_WriteInt32(live[r], i) == 0);
        CHECK(OH_IPCParcel_WriteString(live[r], text[r]) == OH_IPC_SUCCESS);
        CHECK(OH_IPCParcel_WriteBuffer(live[r], (const uint8_t *)text[r], 20000) == 0);
        int32_t v = -1, ordered = 1;
        for (int i = 0; i < 5000; i++)
            if (OH_IPCParcel_ReadInt32(live[r], &v) != 0 || v != i) ordered = 0;
        CHECK(ordered);
        kept[r] = OH_IPCParcel_ReadString(live[r]);
        CHECK(kept[r] != NULL && strcmp(kept[r], text[r]) == 0);
        const uint8_t *b = OH_IPCParcel_ReadBuffer(live[r], 20000);
        CHECK(b != NULL && memcmp(b, text[r], 20000) == 0);
        if (r % 2 == 1) { /* every other parcel goes: its blocks serve the next ones */
            OH_IPCParcel_Destroy(live[r - 1]);
            live[r - 1] = NULL;
        }
    }
    for (int r = 1; r < ROUNDS; r += 2) {
        CHECK(strcmp(kept[r], text[r]) == 0);
        OH_IPCParcel_Destroy(live[r]);
    }
}

static int stub_destroyed;
static int noop_request(uint32_t code, const OHIPCParcel *data, OHIPCParcel *reply, void *ud) {
    return 0;
}
static void count_destroy(void *ud) { stub_destroyed++; }

/* A stub in a parcel, as OpenHarmony's XTS suite (capi_ipc ipc_capi.cpp,
 * OHIPCParcelReadRemoteStub) uses it: written, its creator's reference dropped, read back
 * and the read one destroyed. As OpenHarmony's ReadRemoteStub, each read is a new
 * reference the reader destroys; the parcel keeps its own until it goes. A proxy read from
 * an empty parcel is NULL. */
static void remote_objects(void) {
    OHIPCParcel *p = OH_IPCParcel_Create();
    OHIPCRemoteStub *stub = OH_IPCRemoteStub_Create("STUB_DESCRIPTOR", noop_request,
                                                    count_destroy, NULL);
    CHECK(stub != NULL && OH_IPCParcel_WriteRemoteStub(p, stub) == OH_IPC_SUCCESS);
    OH_IPCRemoteStub_Destroy(stub);
    CHECK(stub_destroyed == 0); /* the parcel holds it */
    OHIPCRemoteStub *read = OH_IPCParcel_ReadRemoteStub(p);
    CHECK(read == stub);
    CHECK(OH_IPCParcel_ReadRemoteStub(p) == NULL); /* one object, read once */
    OH_IPCRemoteStub_Destroy(read);
    CHECK(stub_destroyed == 0);
    CHECK(OH_IPCParcel_RewindReadPosition(p, 0) == OH_IPC_SUCCESS);
    read = OH_IPCParcel_ReadRemoteStub(p); /* read again: another reference */
    CHECK(read == stub);
    OH_IPCParcel_Destroy(p);
    CHECK(stub_destroyed == 0);
    OH_IPCRemoteStub_Destroy(read);
    CHECK(stub_destroyed == 1);
    p = OH_IPCParcel_Create();
    CHECK(OH_IPCParcel_ReadRemoteProxy(p) == NULL && OH_IPCParcel_ReadRemoteStub(p) == NULL);
    CHECK(OH_IPCParcel_WriteRemoteProxy(p, NULL) == OH_IPC_CHECK_PARAM_ERROR);
    OH_IPCParcel_Destroy(p);
}

int main(void) {
    null_arguments();
    remote_objects();
    large_values_reuse();
    layout_and_round_trip();
    capacity_growth();
    limits();
    file_descriptors();
    append();
    printf("%d failures\n", failures);
    return failures;
}
