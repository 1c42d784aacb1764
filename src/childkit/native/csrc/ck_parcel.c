/*
 * OHIPCParcel: IPCKit's parcel over childkit's tagged parcel data (docs/wire-format.md,
 * "Parcel data"), which Python peers read with MessageParcel.
 *
 * The data is kept as it travels (a tag byte, then the value), and each value's end is
 * also kept in OpenHarmony's layout (ck__mark_t), because that is what GetDataSize and the
 * positions report to C code written for OpenHarmony: 4 bytes for values up to 32 bits,
 * 8 for 64-bit ones, strings and buffers rounded up to 4, tokens as MessageParcel writes
 * them (two int32s, then a UTF-16 string), fds and objects as a 24-byte
 * flat_binder_object. Rewinds therefore go to value boundaries only.
 *
 * Ownership: the parcel owns data, marks, its fd copies and the copies ReadString and
 * ReadBuffer hand out; OH_IPCParcel_Destroy frees them all. A failed write leaves the
 * parcel unchanged; a failed read leaves the read position unchanged.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ck_internal.h"
#include "ipc_cparcel.h"
#include "ipc_error_code.h"

#define CK__EXPORT __attribute__((visibility("default")))
#define CK__FLAT_OBJECT 24 /* sizeof(struct flat_binder_object) on LP64 */

static size_t align4(size_t n) { return (n + 3) & ~(size_t)3; }

/* Read calls take a const parcel (OpenHarmony's signatures) but move its read position. */
static struct OHIPCParcel *mut(const OHIPCParcel *parcel) { return (struct OHIPCParcel *)parcel; }

static size_t wire_pos(const OHIPCParcel *p, size_t idx) {
    return idx ? p->marks[idx - 1].wire_end : 0;
}

static size_t oh_pos(const OHIPCParcel *p, size_t idx) {
    return idx ? p->marks[idx - 1].oh_end : 0;
}

/* ------------------------------------------------------------------ UTF-8 */
static long utf16_units(const unsigned char *s, size_t n);

long ck__utf16_units(const char *s, size_t n) {
    return utf16_units((const unsigned char *)s, n);
}

/* UTF-16 units of n bytes of UTF-8, or -1 if they are not valid UTF-8 (as Python's strict
 * decoder judges: no overlongs, no surrogates, nothing past U+10FFFF). */
static long utf16_units(const unsigned char *s, size_t n) {
    long units = 0;
    size_t i = 0;
    while (i < n) {
        /* ASCII runs, 64 then 8 bytes at a time (the common case of long strings; the
         * wide loop is one the compiler vectorizes) */
        while (n - i >= 64) {
            uint64_t w[8], any = 0;
            memcpy(w, s + i, sizeof w);
            for (int k = 0; k < 8; k++) any |= w[k];
            if (any & 0x8080808080808080ULL) break;
            i += 64;
            units += 64;
        }
        while (n - i >= 8) {
            uint64_t word;
            memcpy(&word, s + i, 8);
            if (word & 0x8080808080808080ULL) break;
            i += 8;
            units += 8;
        }
        if (i >= n) break;
        unsigned c = s[i];
        size_t extra;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            units++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            extra = 1, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            extra = 2, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            extra = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return -1;
        }
        if (n - i - 1 < extra) return -1;
        for (size_t k = 1; k <= extra; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return -1;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return -1;
        units += cp >= 0x10000 ? 2 : 1;
        i += extra + 1;
    }
    return units;
}

/* ------------------------------------------------------------------ lifetime */
/* Parcels a thread destroys wait in its spares (at most CK__SPARES), keeping small data
 * and marks buffers, for its next Create: a call's parcels then cost no allocation. */
#define CK__SPARES 8
#define CK__SPARE_DATA 4096 /* bytes of data a spare keeps */
#define CK__SPARE_MARKS 256 /* values a spare keeps room for */
#define CK__RECYCLE_DATA 512  /* a parcel a link keeps for its next one-way request */
#define CK__RECYCLE_MARKS 16

typedef struct {
    OHIPCParcel *parcel[CK__SPARES];
    int n;
} spares_t;

static CK__TLS spares_t *spares; /* also reachable here (leak checkers scan TLS) */
static pthread_key_t spares_key;
static pthread_once_t spares_once = PTHREAD_ONCE_INIT;

static void close_fds_from(OHIPCParcel *p, size_t keep) {
    while (p->n_fds > keep) close(p->fds[--p->n_fds]);
}

static void drop_objs_from(OHIPCParcel *p, size_t keep) {
    while (p->n_objs > keep) ck__pobj_unref(&p->objs[--p->n_objs]);
}

/* Releases what p holds (its values, fds, objects, handed-out copies); with keep_small,
 * small data and marks buffers stay for reuse. p is left empty. (Only what is there is
 * freed: this runs for every parcel of every call.) */
static void empty_slow(OHIPCParcel *p, int keep_small);
static inline void empty(OHIPCParcel *p, int keep_small) {
    /* A parcel of plain values (the usual one) holds no fds, objects or copies: inline,
     * without a call (this runs for every parcel of every call). */
    if (p->fds == NULL && p->objs == NULL && p->keep == NULL && keep_small &&
        p->cap <= CK__SPARE_DATA && p->marks_cap <= CK__SPARE_MARKS) {
        p->len = p->n_marks = p->r_idx = 0;
        return;
    }
    empty_slow(p, keep_small);
}

static __attribute__((noinline)) void empty_slow(OHIPCParcel *p, int keep_small) {
    if (p->n_fds) close_fds_from(p, 0);
    if (p->n_objs) drop_objs_from(p, 0);
    if (p->keep != NULL) {
        for (size_t i = 0; i < p->n_keep; i++) ck__mem_free(p->keep[i]);
        free(p->keep);
        p->keep = NULL;
        p->n_keep = p->keep_cap = 0;
    }
    if (p->objs != NULL) {
        free(p->objs);
        p->objs = NULL;
    }
    if (p->fds != NULL) {
        free(p->fds);
        p->fds = NULL;
    }
    if (p->data != NULL && (!keep_small || p->cap > CK__SPARE_DATA)) {
        ck__mem_free(p->data);
        p->data = NULL;
        p->cap = 0;
    }
    if (p->marks != NULL && (!keep_small || p->marks_cap > CK__SPARE_MARKS)) {
        free(p->marks);
        p->marks = NULL;
        p->marks_cap = 0;
    }
    p->len = p->n_marks = p->r_idx = p->oh_cap = 0;
}

static void clear(OHIPCParcel *p) { empty(p, 0); }

static void drop_spares(void *arg) {
    spares_t *s = arg;
    for (int i = 0; i < s->n; i++) {
        clear(s->parcel[i]);
        free(s->parcel[i]);
    }
    free(s);
    spares = NULL;
}

static void make_spares_key(void) { pthread_key_create(&spares_key, drop_spares); }

CK__EXPORT OHIPCParcel *OH_IPCParcel_Create(void) {
    if (spares != NULL && spares->n > 0) return spares->parcel[--spares->n];
    return calloc(1, sizeof(struct OHIPCParcel));
}

/* Frees p, or keeps it as a spare of this thread. */
static void retire(OHIPCParcel *p) {
    if (spares == NULL) {
        pthread_once(&spares_once, make_spares_key);
        spares_t *s = calloc(1, sizeof *s);
        if (s != NULL && pthread_setspecific(spares_key, s) == 0) spares = s;
        else free(s);
    }
    if (spares != NULL && spares->n < CK__SPARES) {
        empty(p, 1);
        spares->parcel[spares->n++] = p;
        return;
    }
    clear(p);
    free(p);
}

CK__EXPORT void OH_IPCParcel_Destroy(OHIPCParcel *parcel) {
    if (parcel == NULL) return;
    retire(parcel);
}

/* ------------------------------------------------------------------ sizes */
CK__EXPORT int OH_IPCParcel_GetDataSize(const OHIPCParcel *parcel) {
    return parcel == NULL ? -1 : (int)oh_pos(parcel, parcel->n_marks);
}

/* Bytes left before the capacity that OpenHarmony's parcel would have now must grow: it
 * starts at 0 and grows (oh_grow) when a write needs more. */
CK__EXPORT int OH_IPCParcel_GetWritableBytes(const OHIPCParcel *parcel) {
    if (parcel == NULL) return -1;
    size_t used = oh_pos(parcel, parcel->n_marks);
    return parcel->oh_cap > used ? (int)(parcel->oh_cap - used) : 0;
}

CK__EXPORT int OH_IPCParcel_GetReadableBytes(const OHIPCParcel *parcel) {
    if (parcel == NULL) return -1;
    return (int)(oh_pos(parcel, parcel->n_marks) - oh_pos(parcel, parcel->r_idx));
}

CK__EXPORT int OH_IPCParcel_GetReadPosition(const OHIPCParcel *parcel) {
    return parcel == NULL ? -1 : (int)oh_pos(parcel, parcel->r_idx);
}

CK__EXPORT int OH_IPCParcel_GetWritePosition(const OHIPCParcel *parcel) {
    return OH_IPCParcel_GetDataSize(parcel);
}

/* The number of values that end at OpenHarmony offset pos, or -1 if pos is inside one. */
static long boundary(const OHIPCParcel *p, uint32_t pos) {
    if (pos == 0) return 0;
    size_t lo = 0, hi = p->n_marks;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (p->marks[mid].oh_end < pos) lo = mid + 1;
        else hi = mid;
    }
    return lo < p->n_marks && p->marks[lo].oh_end == pos ? (long)lo + 1 : -1;
}

/* Out of range or inside a value: OH_IPC_INNER_ERROR, as OpenHarmony's RewindRead. */
CK__EXPORT int OH_IPCParcel_RewindReadPosition(OHIPCParcel *parcel, uint32_t newReadPos) {
    if (parcel == NULL) return OH_IPC_CHECK_PARAM_ERROR;
    long idx = boundary(parcel, newReadPos);
    if (idx < 0) return OH_IPC_INNER_ERROR;
    parcel->r_idx = (size_t)idx;
    return OH_IPC_SUCCESS;
}

/* The fd (or with objects set, remote object) index of the value at data[start]; -1 if it
 * refers to none. */
static long ref_index(const OHIPCParcel *p, size_t start, int objects) {
    int tag = p->data[start];
    if (objects ? tag != CK__T_REMOTE : tag != CK__T_FD && tag != CK__T_ASHMEM) return -1;
    return (long)ck__get_u32(p->data + start + 1);
}

CK__EXPORT int OH_IPCParcel_RewindWritePosition(OHIPCParcel *parcel, uint32_t newWritePos) {
    if (parcel == NULL) return OH_IPC_CHECK_PARAM_ERROR;
    long idx = boundary(parcel, newWritePos);
    if (idx < 0) return OH_IPC_INNER_ERROR;
    /* fds and objects are added in value order: the kept values say how many stay. */
    size_t keep_fds = 0, keep_objs = 0;
    for (size_t i = 0; i < (size_t)idx; i++) {
        long k = ref_index(parcel, wire_pos(parcel, i), 0);
        if (k >= 0 && (size_t)k + 1 > keep_fds) keep_fds = (size_t)k + 1;
        k = ref_index(parcel, wire_pos(parcel, i), 1);
        if (k >= 0 && (size_t)k + 1 > keep_objs) keep_objs = (size_t)k + 1;
    }
    close_fds_from(parcel, keep_fds);
    drop_objs_from(parcel, keep_objs);
    parcel->n_marks = (size_t)idx;
    parcel->len = wire_pos(parcel, parcel->n_marks);
    if (parcel->r_idx > parcel->n_marks) parcel->r_idx = parcel->n_marks;
    return OH_IPC_SUCCESS;
}

/* ------------------------------------------------------------------ writing */
static int grow(void **buf, size_t *cap, size_t need, size_t item) {
    if (need <= *cap) return 0;
    size_t n = *cap ? *cap : 16;
    while (n < need) n *= 2;
    if (n * item > 65536 && need * item > 65536 && n > need + need / 2)
        n = need + need / 2; /* a large value: room for it and some more, not twice it */
    void *p = realloc(*buf, n * item);
    if (p == NULL) return -1;
    *buf = p;
    *cap = n;
    return 0;
}

/* Room for need bytes of data (ck_mem.c: geometric growth; large blocks are reused). */
static int reserve_data(OHIPCParcel *p, size_t need) {
    if (need <= p->cap) return 0; /* the usual case: no call */
    if (ck__mem_reserve((void **)&p->data, p->len, need) < 0) return -1;
    p->cap = ck__mem_cap(p->data);
    return 0;
}

/* The capacity OpenHarmony's parcel (c_utils Parcel::CalcNewCapacity) grows to when a write
 * needs need bytes in all: doubling from 64 up to 4 KiB, then in 4 KiB steps, at most the
 * limit. (GetWritableBytes reports what is left of it, as OpenHarmony does.) */
static size_t oh_grow(size_t need) {
    const size_t step = 4096;
    if (need == step) return step;
    if (need > step) {
        size_t cap = need / step * step;
        return cap > CK__MAX_PARCEL_DATA - step ? CK__MAX_PARCEL_DATA : cap + step;
    }
    size_t cap = 64;
    while (cap < need) cap *= 2;
    return cap;
}

/* Appends one value: tag, head (head_len bytes), body (body_len bytes), taking oh_len bytes
 * of OpenHarmony layout. OH_IPC_PARCEL_WRITE_ERROR if the OpenHarmony size would pass
 * CK__MAX_PARCEL_DATA (or the tagged wire form CK__MAX_WIRE_DATA, which it cannot before). */
static int put_value(OHIPCParcel *p, int tag, const void *head, size_t head_len,
                     const void *body, size_t body_len, size_t oh_len) {
    size_t wire_len = 1 + head_len + body_len;
    size_t oh_end = oh_pos(p, p->n_marks) + oh_len;
    if (body_len > CK__MAX_WIRE_DATA || p->len + wire_len > CK__MAX_WIRE_DATA ||
        oh_end > CK__MAX_PARCEL_DATA)
        return OH_IPC_PARCEL_WRITE_ERROR;
    if (reserve_data(p, p->len + wire_len) < 0 ||
        grow((void **)&p->marks, &p->marks_cap, p->n_marks + 1, sizeof(ck__mark_t)) < 0)
        return OH_IPC_PARCEL_WRITE_ERROR;
    unsigned char *out = p->data + p->len;
    out[0] = (unsigned char)tag;
    ck__copy(out + 1, head, head_len);
    if (body_len) memcpy(out + 1 + head_len, body, body_len);
    p->len += wire_len;
    p->marks[p->n_marks].wire_end = (uint32_t)p->len;
    p->marks[p->n_marks].oh_end = (uint32_t)oh_end;
    p->n_marks++;
    if (oh_end > p->oh_cap) p->oh_cap = oh_grow(oh_end);
    return OH_IPC_SUCCESS;
}

static int put_fixed(OHIPCParcel *p, int tag, uint64_t bits, size_t size) {
    if (p == NULL) return OH_IPC_CHECK_PARAM_ERROR;
    unsigned char v[8];
    ck__put_u64(v, bits); /* little-endian: the first size bytes are the value */
    return put_value(p, tag, v, size, NULL, 0, size <= 4 ? 4 : 8);
}

static int put_blob(OHIPCParcel *p, int tag, const void *bytes, size_t n, size_t oh_len) {
    if (n > CK__MAX_PARCEL_DATA) return OH_IPC_PARCEL_WRITE_ERROR;
    unsigned char len[4];
    ck__put_u32(len, (uint32_t)n);
    return put_value(p, tag, len, 4, bytes, n, oh_len);
}

CK__EXPORT int OH_IPCParcel_WriteInt8(OHIPCParcel *parcel, int8_t value) {
    return put_fixed(parcel, CK__T_INT8, (uint8_t)value, 1);
}
CK__EXPORT int OH_IPCParcel_WriteInt16(OHIPCParcel *parcel, int16_t value) {
    return put_fixed(parcel, CK__T_INT16, (uint16_t)value, 2);
}
CK__EXPORT int OH_IPCParcel_WriteInt32(OHIPCParcel *parcel, int32_t value) {
    return put_fixed(parcel, CK__T_INT32, (uint32_t)value, 4);
}
CK__EXPORT int OH_IPCParcel_WriteInt64(OHIPCParcel *parcel, int64_t value) {
    return put_fixed(parcel, CK__T_INT64, (uint64_t)value, 8);
}
CK__EXPORT int OH_IPCParcel_WriteUint8(OHIPCParcel *parcel, uint8_t value) {
    return put_fixed(parcel, CK__T_UINT8, value, 1);
}
CK__EXPORT int OH_IPCParcel_WriteUint16(OHIPCParcel *parcel, uint16_t value) {
    return put_fixed(parcel, CK__T_UINT16, value, 2);
}
CK__EXPORT int OH_IPCParcel_WriteUint32(OHIPCParcel *parcel, uint32_t value) {
    return put_fixed(parcel, CK__T_UINT32, value, 4);
}
CK__EXPORT int OH_IPCParcel_WriteUint64(OHIPCParcel *parcel, uint64_t value) {
    return put_fixed(parcel, CK__T_UINT64, value, 8);
}
CK__EXPORT int OH_IPCParcel_WriteFloat(OHIPCParcel *parcel, float value) {
    uint32_t bits;
    memcpy(&bits, &value, 4);
    return put_fixed(parcel, CK__T_FLOAT, bits, 4);
}
CK__EXPORT int OH_IPCParcel_WriteDouble(OHIPCParcel *parcel, double value) {
    uint64_t bits;
    memcpy(&bits, &value, 8);
    return put_fixed(parcel, CK__T_DOUBLE, bits, 8);
}

/* Strings travel as UTF-8 (Python peers decode them strictly): invalid UTF-8 is refused
 * here rather than failing in the reader. */
CK__EXPORT int OH_IPCParcel_WriteString(OHIPCParcel *parcel, const char *str) {
    if (parcel == NULL || str == NULL) return OH_IPC_CHECK_PARAM_ERROR;
    size_t n = strlen(str);
    if (n > CK__MAX_PARCEL_DATA || utf16_units((const unsigned char *)str, n) < 0)
        return OH_IPC_PARCEL_WRITE_ERROR;
    return put_blob(parcel, CK__T_STRING, str, n, align4(n + 1));
}

CK__EXPORT int OH_IPCParcel_WriteBuffer(OHIPCParcel *parcel, const uint8_t *buffer, int32_t len) {
    if (parcel == NULL || buffer == NULL || len <= 0) return OH_IPC_CHECK_PARAM_ERROR;
    return put_blob(parcel, CK__T_BYTES, buffer, (size_t)len, align4((size_t)len));
}

/* OpenHarmony: token NULL, empty or over 204,800 bytes is a parameter error; one that is
 * not UTF-8 a write error. Layout: strict-mode policy, work source, then a String16. */
CK__EXPORT int OH_IPCParcel_WriteInterfaceToken(OHIPCParcel *parcel, const char *token) {
    if (parcel == NULL || token == NULL) return OH_IPC_CHECK_PARAM_ERROR;
    size_t n = strlen(token);
    if (n == 0 || n > CK__MAX_PARCEL_DATA) return OH_IPC_CHECK_PARAM_ERROR;
    long units = utf16_units((const unsigned char *)token, n);
    if (units < 0) return OH_IPC_PARCEL_WRITE_ERROR;
    return put_blob(parcel, CK__T_TOKEN, token, n, 12 + align4(((size_t)units + 1) * 2));
}

CK__EXPORT int OH_IPCParcel_WriteFileDescriptor(OHIPCParcel *parcel, int32_t fd) {
    if (parcel == NULL) return OH_IPC_CHECK_PARAM_ERROR;
    if (fd < 0 || parcel->n_fds >= CK__MAX_PARCEL_FDS) return OH_IPC_PARCEL_WRITE_ERROR;
    int *fds = realloc(parcel->fds, (parcel->n_fds + 1) * sizeof(int));
    if (fds == NULL) return OH_IPC_PARCEL_WRITE_ERROR;
    parcel->fds = fds;
    int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (copy < 0) return OH_IPC_PARCEL_WRITE_ERROR;
    unsigned char index[4];
    ck__put_u32(index, (uint32_t)parcel->n_fds);
    int rc = put_value(parcel, CK__T_FD, index, 4, NULL, 0, CK__FLAT_OBJECT);
    if (rc != OH_IPC_SUCCESS) {
        close(copy);
        return rc;
    }
    parcel->fds[parcel->n_fds++] = copy;
    return OH_IPC_SUCCESS;
}

/* A reference to obj (taking one more reference to it). */
static int put_object(OHIPCParcel *p, int kind, void *ptr) {
    if (p->n_objs >= CK__MAX_PARCEL_OBJECTS) return OH_IPC_PARCEL_WRITE_ERROR;
    ck__pobj_t *objs = realloc(p->objs, (p->n_objs + 1) * sizeof *objs);
    if (objs == NULL) return OH_IPC_PARCEL_WRITE_ERROR;
    p->objs = objs;
    unsigned char index[4];
    ck__put_u32(index, (uint32_t)p->n_objs);
    int rc = put_value(p, CK__T_REMOTE, index, 4, NULL, 0, CK__FLAT_OBJECT);
    if (rc != OH_IPC_SUCCESS) return rc;
    p->objs[p->n_objs].kind = kind;
    p->objs[p->n_objs].ptr = ptr;
    ck__pobj_ref(&p->objs[p->n_objs++]);
    return OH_IPC_SUCCESS;
}

CK__EXPORT int OH_IPCParcel_WriteRemoteStub(OHIPCParcel *parcel, const OHIPCRemoteStub *stub) {
    if (parcel == NULL || stub == NULL) return OH_IPC_CHECK_PARAM_ERROR;
    return put_object(parcel, CK__POBJ_STUB, (void *)stub);
}

CK__EXPORT int OH_IPCParcel_WriteRemoteProxy(OHIPCParcel *parcel, const OHIPCRemoteProxy *proxy) {
    if (parcel == NULL || proxy == NULL) return OH_IPC_CHECK_PARAM_ERROR;
    return put_object(parcel, CK__POBJ_REMOTE, proxy->remote);
}

/* ------------------------------------------------------------------ reading */
/* The payload of the next value if it has tag, else NULL (nothing moves). */
static const unsigned char *peek(const OHIPCParcel *p, int tag, size_t *payload_len) {
    if (p->r_idx >= p->n_marks) return NULL;
    size_t start = wire_pos(p, p->r_idx);
    if (p->data[start] != tag) return NULL;
    *payload_len = p->marks[p->r_idx].wire_end - start - 1;
    return p->data + start + 1;
}

static int take_fixed(const OHIPCParcel *parcel, int tag, void *value, size_t size) {
    if (parcel == NULL || value == NULL) return OH_IPC_CHECK_PARAM_ERROR;
    size_t n;
    const unsigned char *v = peek(parcel, tag, &n);
    if (v == NULL || n != size) return OH_IPC_PARCEL_READ_ERROR;
    uint64_t bits = 0;
    for (size_t i = 0; i < size; i++) bits |= (uint64_t)v[i] << (8 * i);
    /* value has the host's (little-endian) layout; copy the low size bytes */
    memcpy(value, &bits, size);
    mut(parcel)->r_idx++;
    return OH_IPC_SUCCESS;
}

CK__EXPORT int OH_IPCParcel_ReadInt8(const OHIPCParcel *parcel, int8_t *value) {
    return take_fixed(parcel, CK__T_INT8, value, 1);
}
CK__EXPORT int OH_IPCParcel_ReadInt16(const OHIPCParcel *parcel, int16_t *value) {
    return take_fixed(parcel, CK__T_INT16, value, 2);
}
CK__EXPORT int OH_IPCParcel_ReadInt32(const OHIPCParcel *parcel, int32_t *value) {
    return take_fixed(parcel, CK__T_INT32, value, 4);
}
CK__EXPORT int OH_IPCParcel_ReadInt64(const OHIPCParcel *parcel, int64_t *value) {
    return take_fixed(parcel, CK__T_INT64, value, 8);
}
CK__EXPORT int OH_IPCParcel_ReadUint8(const OHIPCParcel *parcel, uint8_t *value) {
    return take_fixed(parcel, CK__T_UINT8, value, 1);
}
CK__EXPORT int OH_IPCParcel_ReadUint16(const OHIPCParcel *parcel, uint16_t *value) {
    return take_fixed(parcel, CK__T_UINT16, value, 2);
}
CK__EXPORT int OH_IPCParcel_ReadUint32(const OHIPCParcel *parcel, uint32_t *value) {
    return take_fixed(parcel, CK__T_UINT32, value, 4);
}
CK__EXPORT int OH_IPCParcel_ReadUint64(const OHIPCParcel *parcel, uint64_t *value) {
    return take_fixed(parcel, CK__T_UINT64, value, 8);
}
CK__EXPORT int OH_IPCParcel_ReadFloat(const OHIPCParcel *parcel, float *value) {
    return take_fixed(parcel, CK__T_FLOAT, value, 4);
}
CK__EXPORT int OH_IPCParcel_ReadDouble(const OHIPCParcel *parcel, double *value) {
    return take_fixed(parcel, CK__T_DOUBLE, value, 8);
}

/* The next blob of tag (its u32 length, then the bytes), or NULL. */
static const unsigned char *peek_blob(const OHIPCParcel *p, int tag, size_t *n) {
    size_t payload;
    const unsigned char *v = peek(p, tag, &payload);
    if (v == NULL || payload < 4 || ck__get_u32(v) != payload - 4) return NULL;
    *n = payload - 4;
    return v + 4;
}

/* A NUL-terminated copy of n bytes that the parcel keeps until it is destroyed. */
static char *keep_copy(OHIPCParcel *p, const unsigned char *bytes, size_t n) {
    if (grow((void **)&p->keep, &p->keep_cap, p->n_keep + 1, sizeof(void *)) < 0) return NULL;
    char *copy = ck__mem_alloc(n + 1); /* a large one reuses a block already faulted in */
    if (copy == NULL) return NULL;
    memcpy(copy, bytes, n);
    copy[n] = '\0';
    p->keep[p->n_keep++] = copy;
    return copy;
}

/* A string that is not UTF-8, or holds a NUL (C could not see past it), is a read error. */
static const unsigned char *peek_text(const OHIPCParcel *p, int tag, size_t *n) {
    const unsigned char *s = peek_blob(p, tag, n);
    if (s == NULL || memchr(s, '\0', *n) != NULL || utf16_units(s, *n) < 0) return NULL;
    return s;
}

CK__EXPORT const char *OH_IPCParcel_ReadString(const OHIPCParcel *parcel) {
    if (parcel == NULL) return NULL;
    size_t n;
    const unsigned char *s = peek_text(parcel, CK__T_STRING, &n);
    if (s == NULL) return NULL;
    char *copy = keep_copy(mut(parcel), s, n);
    if (copy != NULL) mut(parcel)->r_idx++;
    return copy;
}

/* The next value must be a buffer of exactly len bytes (the tagged data knows each
 * buffer's length; OpenHarmony's untyped data would let a reader split one). */
CK__EXPORT const uint8_t *OH_IPCParcel_ReadBuffer(const OHIPCParcel *parcel, int32_t len) {
    if (parcel == NULL || len <= 0) return NULL;
    size_t n;
    const unsigned char *b = peek_blob(parcel, CK__T_BYTES, &n);
    if (b == NULL || n != (size_t)len) return NULL;
    char *copy = keep_copy(mut(parcel), b, n);
    if (copy != NULL) mut(parcel)->r_idx++;
    return (const uint8_t *)copy;
}

CK__EXPORT int OH_IPCParcel_ReadInterfaceToken(const OHIPCParcel *parcel, char **token,
                                               int32_t *len, OH_IPC_MemAllocator allocator) {
    if (parcel == NULL || token == NULL || len == NULL || allocator == NULL)
        return OH_IPC_CHECK_PARAM_ERROR;
    size_t n;
    const unsigned char *s = peek_text(parcel, CK__T_TOKEN, &n);
    if (s == NULL) return OH_IPC_PARCEL_READ_ERROR;
    char *out = allocator((int32_t)(n + 1));
    if (out == NULL) return OH_IPC_MEM_ALLOCATOR_ERROR;
    memcpy(out, s, n);
    out[n] = '\0';
    *token = out;
    *len = (int32_t)(n + 1);
    mut(parcel)->r_idx++;
    return OH_IPC_SUCCESS;
}

CK__EXPORT int OH_IPCParcel_ReadFileDescriptor(const OHIPCParcel *parcel, int32_t *fd) {
    if (parcel == NULL || fd == NULL) return OH_IPC_CHECK_PARAM_ERROR;
    size_t n;
    const unsigned char *v = peek(parcel, CK__T_FD, &n);
    if (v == NULL || n != 4) return OH_IPC_PARCEL_READ_ERROR;
    uint32_t index = ck__get_u32(v);
    if (index >= parcel->n_fds) return OH_IPC_PARCEL_READ_ERROR;
    int copy = fcntl(parcel->fds[index], F_DUPFD_CLOEXEC, 0);
    if (copy < 0) return OH_IPC_PARCEL_READ_ERROR;
    *fd = copy;
    mut(parcel)->r_idx++;
    return OH_IPC_SUCCESS;
}

/* The next remote object reference if it is of kind, else NULL (nothing moves). */
static void *take_object(const OHIPCParcel *parcel, int kind) {
    if (parcel == NULL) return NULL;
    size_t n;
    const unsigned char *v = peek(parcel, CK__T_REMOTE, &n);
    if (v == NULL || n != 4) return NULL;
    uint32_t index = ck__get_u32(v);
    if (index >= parcel->n_objs || parcel->objs[index].kind != kind) return NULL;
    mut(parcel)->r_idx++;
    return parcel->objs[index].ptr;
}

/* A new reference to the stub, the reader's (OH_IPCRemoteStub_Destroy releases it), as
 * OpenHarmony's ReadRemoteStub hands out a new OHIPCRemoteStub the caller destroys. A
 * proxy of the peer's object read here gives NULL (OH_IPCParcel_ReadRemoteProxy reads it). */
CK__EXPORT OHIPCRemoteStub *OH_IPCParcel_ReadRemoteStub(const OHIPCParcel *parcel) {
    OHIPCRemoteStub *stub = take_object(parcel, CK__POBJ_STUB);
    if (stub != NULL) ck__stub_ref(stub);
    return stub;
}

/* A new box with its own reference. A stub of this process sent back gives NULL
 * (OH_IPCParcel_ReadRemoteStub reads it). */
CK__EXPORT OHIPCRemoteProxy *OH_IPCParcel_ReadRemoteProxy(const OHIPCParcel *parcel) {
    ck__remote_t *remote = take_object(parcel, CK__POBJ_REMOTE);
    if (remote == NULL) return NULL;
    ck__remote_ref(remote);
    OHIPCRemoteProxy *box = ck__proxy_box(remote);
    if (box == NULL) mut(parcel)->r_idx--;
    return box;
}

/* ------------------------------------------------------------------ append */
/* All of data's values after parcel's, its fds dup'ed and their indices renumbered; on any
 * failure parcel is as it was. */
CK__EXPORT int OH_IPCParcel_Append(OHIPCParcel *parcel, const OHIPCParcel *data) {
    if (parcel == NULL || data == NULL || parcel == data) return OH_IPC_CHECK_PARAM_ERROR;
    size_t old_marks = parcel->n_marks, old_fds = parcel->n_fds, old_objs = parcel->n_objs;
    uint32_t old_oh = (uint32_t)oh_pos(parcel, old_marks);
    if (data->len + parcel->len > CK__MAX_WIRE_DATA ||
        oh_pos(data, data->n_marks) + old_oh > CK__MAX_PARCEL_DATA ||
        parcel->n_fds + data->n_fds > CK__MAX_PARCEL_FDS ||
        parcel->n_objs + data->n_objs > CK__MAX_PARCEL_OBJECTS)
        return OH_IPC_PARCEL_WRITE_ERROR;
    for (size_t i = 0; i < data->n_marks; i++) {
        size_t start = wire_pos(data, i), end = data->marks[i].wire_end;
        const unsigned char *v = data->data + start;
        int rc;
        size_t oh_len = data->marks[i].oh_end - oh_pos(data, i);
        if (v[0] == CK__T_FD) {
            uint32_t index = ck__get_u32(v + 1);
            rc = index < data->n_fds ? OH_IPCParcel_WriteFileDescriptor(parcel, data->fds[index])
                                     : OH_IPC_PARCEL_WRITE_ERROR;
        } else if (v[0] == CK__T_REMOTE) {
            uint32_t index = ck__get_u32(v + 1);
            rc = index < data->n_objs
                     ? put_object(parcel, data->objs[index].kind, data->objs[index].ptr)
                     : OH_IPC_PARCEL_WRITE_ERROR;
        } else if (v[0] == CK__T_ASHMEM) {
            rc = OH_IPC_PARCEL_WRITE_ERROR; /* C has no ashmem calls to read it with */
        } else {
            rc = put_value(parcel, v[0], v + 1, end - start - 1, NULL, 0, oh_len);
        }
        if (rc != OH_IPC_SUCCESS) {
            OH_IPCParcel_RewindWritePosition(parcel, old_oh);
            close_fds_from(parcel, old_fds);
            drop_objs_from(parcel, old_objs);
            return OH_IPC_PARCEL_WRITE_ERROR;
        }
    }
    return OH_IPC_SUCCESS;
}

/* ------------------------------------------------------------------ from the wire */
/* OpenHarmony bytes of the well-formed value at data[pos] (its end in *end), or 0 if the
 * value is malformed: unknown tag, lengths past the end, an fd index past n_fds. */
static size_t walk_value(const unsigned char *d, size_t len, size_t pos, size_t n_fds,
                         size_t n_objs, size_t *end) {
    static const unsigned char fixed[] = {
        [CK__T_INT8] = 1, [CK__T_INT16] = 2, [CK__T_INT32] = 4, [CK__T_INT64] = 8,
        [CK__T_UINT8] = 1, [CK__T_UINT16] = 2, [CK__T_UINT32] = 4, [CK__T_UINT64] = 8,
        [CK__T_FLOAT] = 4, [CK__T_DOUBLE] = 8, [CK__T_BOOL] = 1, [CK__T_FD] = 4,
        [CK__T_REMOTE] = 4,
    };
    int tag = d[pos];
    size_t left = len - pos - 1;
    const unsigned char *v = d + pos + 1;
    if (tag == CK__T_STRING || tag == CK__T_BYTES || tag == CK__T_TOKEN) {
        if (left < 4 || ck__get_u32(v) > left - 4) return 0;
        size_t n = ck__get_u32(v);
        *end = pos + 5 + n;
        if (tag == CK__T_STRING) return align4(n + 1);
        if (tag == CK__T_BYTES) return align4(n);
        long units = utf16_units(v + 4, n);
        return 12 + align4((size_t)(units < 0 ? (long)n : units) * 2 + 2);
    }
    if (tag == CK__T_ASHMEM) {
        if (left < 8 || ck__get_u32(v + 4) > left - 8 || ck__get_u32(v) >= n_fds) return 0;
        *end = pos + 9 + ck__get_u32(v + 4);
        return CK__FLAT_OBJECT + 4;
    }
    if (tag <= 0 || (size_t)tag >= sizeof fixed || fixed[tag] == 0 || left < fixed[tag])
        return 0;
    if (tag == CK__T_FD && ck__get_u32(v) >= n_fds) return 0;
    if (tag == CK__T_REMOTE && ck__get_u32(v) >= n_objs) return 0;
    *end = pos + 1 + fixed[tag];
    if (tag == CK__T_FD || tag == CK__T_REMOTE) return CK__FLAT_OBJECT;
    return fixed[tag] <= 4 ? 4 : 8;
}

/* Copies len bytes of wire data into the empty parcel p and indexes its values; 0, or -1
 * without memory (p stays empty). */
static int fill_from_wire(OHIPCParcel *p, const unsigned char *data, size_t len, size_t n_fds,
                          size_t n_objs) {
    if (len && reserve_data(p, len) < 0) return -1;
    if (len) ck__copy(p->data, data, len);
    p->len = len;
    size_t pos = 0, oh = 0;
    while (pos < len) {
        size_t end, oh_len = walk_value(p->data, len, pos, n_fds, n_objs, &end);
        if (oh_len == 0 || oh + oh_len > UINT32_MAX) break; /* unreadable from here on */
        if (grow((void **)&p->marks, &p->marks_cap, p->n_marks + 1, sizeof(ck__mark_t)) < 0)
            break;
        oh += oh_len;
        p->marks[p->n_marks].wire_end = (uint32_t)end;
        p->marks[p->n_marks].oh_end = (uint32_t)oh;
        p->n_marks++;
        pos = end;
    }
    p->len = wire_pos(p, p->n_marks); /* a malformed tail is dropped: nothing reads it */
    p->oh_cap = oh; /* as OpenHarmony's parcel parsed from a buffer: full */
    return 0;
}

struct OHIPCParcel *ck__parcel_from_wire(const unsigned char *data, size_t len, int *fds,
                                         size_t n_fds, ck__pobj_t *objs, size_t n_objs) {
    OHIPCParcel *p = OH_IPCParcel_Create();
    int *own = n_fds ? malloc(n_fds * sizeof(int)) : NULL;
    ck__pobj_t *own_objs = n_objs ? malloc(n_objs * sizeof *own_objs) : NULL;
    if (p == NULL || (n_fds && own == NULL) || (n_objs && own_objs == NULL) ||
        fill_from_wire(p, data, len, n_fds, n_objs) < 0) {
        for (size_t i = 0; i < n_fds; i++) close(fds[i]);
        for (size_t i = 0; i < n_objs; i++) ck__pobj_unref(&objs[i]);
        free(own);
        free(own_objs);
        OH_IPCParcel_Destroy(p);
        return NULL;
    }
    if (n_fds) memcpy(own, fds, n_fds * sizeof(int));
    p->fds = own;
    p->n_fds = n_fds;
    if (n_objs) memcpy(own_objs, objs, n_objs * sizeof *objs);
    p->objs = own_objs;
    p->n_objs = n_objs;
    return p;
}

int ck__parcel_refill(struct OHIPCParcel *p, const unsigned char *data, size_t len, int *fds,
                      size_t n_fds) {
    empty(p, 1);
    int *own = n_fds ? malloc(n_fds * sizeof(int)) : NULL;
    if ((n_fds && own == NULL) || fill_from_wire(p, data, len, n_fds, 0) < 0) {
        for (size_t i = 0; i < n_fds; i++) close(fds[i]);
        free(own);
        empty(p, 1);
        return -1;
    }
    if (n_fds) memcpy(own, fds, n_fds * sizeof(int));
    p->fds = own;
    p->n_fds = n_fds;
    return 0;
}

int ck__parcel_recycle(struct OHIPCParcel *p) {
    empty(p, 1);
    return p->cap <= CK__RECYCLE_DATA && p->marks_cap <= CK__RECYCLE_MARKS;
}

void ck__parcel_replace(struct OHIPCParcel *dst, struct OHIPCParcel *src) {
    struct OHIPCParcel old = *dst;
    *dst = *src;
    *src = old;  /* dst's old contents, released by retire: its buffers may serve again */
    retire(src);
}
