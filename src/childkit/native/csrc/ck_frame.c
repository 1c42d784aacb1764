/*
 * Frames of childkit's wire protocol (docs/wire-format.md): encoders for frame heads and
 * the record decoder. Pure functions over byte buffers: no I/O, no fds closed, no state.
 *
 * Built into libipc_capi.so and into childkit.ipc._speedups, so C peers and Python peers
 * with the speedups share this one implementation; ipc/_wire.py is the Python reference,
 * and tests/native/test_wire_conformance.py holds both to one corpus of records.
 *
 * Why every length is checked before use: the peer may be a hostile child. The decoder
 * reads only inside [buf, buf + size), fills the caller's room for frames or allocates
 * one frame array bounded by the record size, and never recurses.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ck_internal.h"

/* An extra call channel (docs/wire-format.md): the C kit advertises none in its HELLO, so
 * a peer never sends it one; decoded here only so that both decoders judge it alike. */
#ifndef CK__F_CHANNEL
#define CK__F_CHANNEL 5
#endif

void ck__frame_put_txn_head(unsigned char *out, uint64_t seq, uint32_t handle, uint32_t code,
                            int oneway, uint32_t data_len, uint16_t n_objects, uint16_t n_fds) {
    out[0] = CK__F_TRANSACTION;
    out[1] = oneway ? CK__FLAG_ONEWAY : 0;
    ck__put_u16(out + 2, n_fds);
    ck__put_u32(out + 4, (uint32_t)(CK__TXN_FIXED + data_len + CK__OBJ_SIZE * (uint32_t)n_objects));
    ck__put_u64(out + 8, seq);
    ck__put_u32(out + 16, handle);
    ck__put_u32(out + 20, code);
    ck__put_u32(out + 24, data_len);
    ck__put_u16(out + 28, n_objects);
}

void ck__frame_put_reply_head(unsigned char *out, int flags, uint64_t seq, int32_t status,
                              uint32_t data_len, uint16_t n_objects, uint16_t n_fds) {
    out[0] = CK__F_REPLY;
    out[1] = (unsigned char)flags;
    ck__put_u16(out + 2, n_fds);
    ck__put_u32(out + 4,
                (uint32_t)(CK__REPLY_FIXED + data_len + CK__OBJ_SIZE * (uint32_t)n_objects));
    ck__put_u64(out + 8, seq);
    ck__put_u32(out + 16, (uint32_t)status);
    ck__put_u32(out + 20, data_len);
    ck__put_u16(out + 24, n_objects);
}

void ck__frame_put_hello(unsigned char *out, int has_root) {
    out[0] = CK__F_HELLO;
    out[1] = has_root ? CK__FLAG_HAS_ROOT : 0;
    ck__put_u16(out + 2, 0);
    ck__put_u32(out + 4, CK__HELLO_BODY);
    ck__put_u16(out + 8, CK__PROTOCOL_VERSION);
    ck__put_u16(out + 10, 0);
}

void ck__frame_put_release(unsigned char *out, uint32_t handle, uint32_t count,
                           uint64_t after_replies) {
    out[0] = CK__F_RELEASE;
    out[1] = 0;
    ck__put_u16(out + 2, 0);
    ck__put_u32(out + 4, CK__RELEASE_BODY);
    ck__put_u32(out + 8, handle);
    ck__put_u32(out + 12, count);
    ck__put_u64(out + 16, after_replies);
}

void ck__frame_put_object(unsigned char *out, int kind, uint32_t handle) {
    out[0] = (unsigned char)kind;
    ck__put_u32(out + 1, handle);
}

static long fail(char *err, size_t errlen, const char *fmt, ...) {
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* The parcel part of a transaction or reply body: data, then the object table, which must
 * fill the body exactly. */
static long parcel_section(ck__frame_t *f, const unsigned char *body, size_t body_len,
                           size_t fixed, uint32_t data_len, uint16_t n_objects,
                           const char *what, char *err, size_t errlen) {
    if (data_len > CK__MAX_WIRE_DATA)
        return fail(err, errlen, "%s parcel of %u bytes exceeds %d", what, data_len,
                    CK__MAX_WIRE_DATA);
    if (n_objects > CK__MAX_PARCEL_OBJECTS)
        return fail(err, errlen, "%s carries %u objects (max %d)", what, n_objects,
                    CK__MAX_PARCEL_OBJECTS);
    if ((uint64_t)fixed + data_len + (uint64_t)CK__OBJ_SIZE * n_objects != body_len)
        return fail(err, errlen, "%s lengths do not add up to its body size", what);
    f->data = body + fixed;
    f->data_len = data_len;
    f->objects = body + fixed + data_len;
    f->n_objects = n_objects;
    for (size_t i = 0; i < n_objects; i++) {
        int kind = f->objects[i * CK__OBJ_SIZE];
        if (kind != CK__OBJ_SENDER_STUB && kind != CK__OBJ_RECEIVER_STUB)
            return fail(err, errlen, "%s has an object reference of unknown kind %d", what,
                        kind);
    }
    return 0;
}

/* One frame's body (its header already checked to fit the record and its fds). */
static long decode_frame(ck__frame_t *f, const unsigned char *body, size_t body_len,
                         char *err, size_t errlen) {
    if (f->type == CK__F_TRANSACTION) {
        if (body_len < CK__TXN_FIXED)
            return fail(err, errlen, "transaction frame is shorter than its header");
        if (f->flags & ~CK__FLAG_ONEWAY)
            return fail(err, errlen, "transaction frame has unknown flags %#x", f->flags);
        if (f->n_fds > CK__MAX_PARCEL_FDS)
            return fail(err, errlen, "transaction carries %zu fds (max %d)", f->n_fds,
                        CK__MAX_PARCEL_FDS);
        f->seq = ck__get_u64(body);
        f->handle = ck__get_u32(body + 8);
        f->code = ck__get_u32(body + 12);
        return parcel_section(f, body, body_len, CK__TXN_FIXED, ck__get_u32(body + 16),
                              ck__get_u16(body + 20), "transaction", err, errlen);
    }
    if (f->type == CK__F_REPLY) {
        if (body_len < CK__REPLY_FIXED)
            return fail(err, errlen, "reply frame is shorter than its header");
        if (f->flags & ~CK__FLAG_ERROR)
            return fail(err, errlen, "reply frame has unknown flags %#x", f->flags);
        f->seq = ck__get_u64(body);
        f->status = (int32_t)ck__get_u32(body + 8);
        uint32_t data_len = ck__get_u32(body + 12);
        uint16_t n_objects = ck__get_u16(body + 16);
        if (f->flags & CK__FLAG_ERROR) {
            if (f->n_fds || n_objects || data_len > CK__MAX_DETAIL_BYTES ||
                (uint64_t)CK__REPLY_FIXED + data_len != body_len)
                return fail(err, errlen, "malformed error reply");
            f->data = body + CK__REPLY_FIXED;
            f->data_len = data_len;
            return 0;
        }
        if (f->n_fds > CK__MAX_PARCEL_FDS)
            return fail(err, errlen, "reply carries %zu fds (max %d)", f->n_fds,
                        CK__MAX_PARCEL_FDS);
        return parcel_section(f, body, body_len, CK__REPLY_FIXED, data_len, n_objects, "reply",
                              err, errlen);
    }
    if (f->type == CK__F_CHANNEL) { /* classified only: the C kit never accepts channels */
        if (body_len || f->flags || f->n_fds != 1)
            return fail(err, errlen, "malformed channel frame");
        return 0;
    }
    if (f->n_fds)
        return fail(err, errlen, "frame type %d cannot carry file descriptors", f->type);
    if (f->type == CK__F_RELEASE) {
        if (body_len != CK__RELEASE_BODY || f->flags)
            return fail(err, errlen, "malformed release frame");
        f->handle = ck__get_u32(body);
        f->count = ck__get_u32(body + 4);
        f->after_replies = ck__get_u64(body + 8);
        if (f->count == 0) return fail(err, errlen, "release frame with a zero count");
        return 0;
    }
    if (f->type == CK__F_HELLO) {
        if (body_len != CK__HELLO_BODY || (f->flags & ~CK__FLAG_HAS_ROOT))
            return fail(err, errlen, "malformed hello frame");
        f->version = ck__get_u16(body);
        if (f->version != CK__PROTOCOL_VERSION)
            return fail(err, errlen, "peer speaks protocol %d, this side %d", f->version,
                        CK__PROTOCOL_VERSION);
        return 0;
    }
    return fail(err, errlen, "unknown frame type %d", f->type);
}

long ck__record_decode_into(const unsigned char *buf, size_t size, size_t n_fds,
                            ck__frame_t *room, size_t room_n, ck__frame_t **frames,
                            char *err, size_t errlen) {
    *frames = NULL;
    if (size == 0) return fail(err, errlen, "empty record");
    if (size > CK__MAX_RECORD_BYTES)
        return fail(err, errlen, "record of %zu bytes exceeds %d", size, CK__MAX_RECORD_BYTES);
    if (n_fds > CK__MAX_RECORD_FDS)
        return fail(err, errlen, "record carries %zu fds (max %d)", n_fds, CK__MAX_RECORD_FDS);
    /* Every frame takes at least a header, so this bounds the count. The caller's room
     * serves the usual few frames; past it the array moves to the heap and doubles as
     * needed (a record of many small frames touches no more memory than it needs). */
    size_t bound = size / CK__HEADER_SIZE + 1;
    ck__frame_t *out = room;
    size_t cap = room_n;
    if (cap == 0) { /* malloc: glibc's calloc skips its fast cache */
        if ((out = malloc(bound * sizeof *out)) == NULL) return -2;
        cap = bound;
    }
    size_t pos = 0, fd_pos = 0, n = 0;
    long rc = 0;
    while (pos < size && rc == 0) {
        if (size - pos < CK__HEADER_SIZE) {
            rc = fail(err, errlen, "truncated frame header at offset %zu", pos);
            break;
        }
        if (n == cap) { /* never at the bound: each frame takes a header */
            size_t more = cap < 32 ? 64 : cap * 2;
            if (more > bound) more = bound;
            ck__frame_t *grown = out == room ? malloc(more * sizeof *grown)
                                             : realloc(out, more * sizeof *grown);
            if (grown == NULL) {
                rc = -2;
                break;
            }
            if (out == room) memcpy(grown, out, n * sizeof *out);
            out = grown;
            cap = more;
        }
        ck__frame_t *f = &out[n];
        memset(f, 0, sizeof *f);
        f->type = buf[pos];
        f->flags = buf[pos + 1];
        f->n_fds = ck__get_u16(buf + pos + 2);
        uint32_t body_len = ck__get_u32(buf + pos + 4);
        pos += CK__HEADER_SIZE;
        if (body_len > size - pos)
            rc = fail(err, errlen, "frame body of %u bytes runs past the record end", body_len);
        else if (f->n_fds > n_fds - fd_pos)
            rc = fail(err, errlen, "frame claims %zu fds but only %zu remain", f->n_fds,
                      n_fds - fd_pos);
        else {
            f->fd_start = fd_pos;
            rc = decode_frame(f, buf + pos, body_len, err, errlen);
        }
        pos += body_len;
        fd_pos += f->n_fds;
        n++;
    }
    if (rc == 0 && fd_pos != n_fds)
        rc = fail(err, errlen, "record carried %zu fds but its frames claim %zu", n_fds, fd_pos);
    if (rc < 0) {
        if (out != room) free(out);
        return rc;
    }
    *frames = out;
    return (long)n;
}

long ck__record_decode(const unsigned char *buf, size_t size, size_t n_fds,
                       ck__frame_t **frames, char *err, size_t errlen) {
    return ck__record_decode_into(buf, size, n_fds, NULL, 0, frames, err, errlen);
}
