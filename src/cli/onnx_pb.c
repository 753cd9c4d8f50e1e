/*
 * onnx_pb.c - bounds-checked reader of the protobuf wire format for ONNX TensorProto and
 * ModelProto files. See onnx_pb.h.
 *
 * Field numbers are those of onnx/onnx.proto (IR version 10). Each message parser walks its
 * fields once: a known field with an unexpected wire type is an error, an unknown field is
 * skipped whatever its wire type. Every read goes through the keel_pb_read_* functions, which
 * compare against the bytes left before touching memory.
 */
#include "onnx_pb.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"

/* Groups (wire types 3/4) nested deeper than this are refused rather than recursed into. */
#define PB_MAX_GROUP_DEPTH 32
/* Files larger than this are refused: node test files are a few kilobytes. */
#define PB_MAX_FILE_BYTES ((size_t)1 << 30)

/* ---- errors ---------------------------------------------------------------------------------- */

static keel_status fail(keel_status st, char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return st;
}

/* Prefix the message already in err with "what: " (where in the message tree it happened). */
static keel_status with_context(keel_status st, char *err, size_t errlen, const char *what)
{
    if (err && errlen) {
        size_t have = strlen(err), add = strlen(what) + 2;
        if (add < errlen) {
            size_t keep = have < errlen - 1 - add ? have : errlen - 1 - add;
            memmove(err + add, err, keep);
            memcpy(err, what, add - 2);
            memcpy(err + add - 2, ": ", 2);
            err[add + keep] = '\0';
        }
    }
    return st;
}

static const char *wire_name(int wire)
{
    static const char *const names[] = {"varint", "fixed64", "length-delimited",
                                        "start-group", "end-group", "fixed32"};
    return wire >= 0 && wire <= 5 ? names[wire] : "invalid";
}

/* ---- the wire format ------------------------------------------------------------------------- */

keel_pb_reader keel_pb_reader_init(const uint8_t *buf, size_t len)
{
    keel_pb_reader r;
    r.buf = buf;
    r.len = buf ? len : 0;
    r.pos = 0;
    r.base = 0;
    return r;
}

keel_pb_reader keel_pb_reader_sub(const keel_pb_reader *parent, const uint8_t *data, size_t n)
{
    keel_pb_reader r = keel_pb_reader_init(data, n);
    r.base = parent->base + (size_t)(data - parent->buf);
    return r;
}

int keel_pb_at_end(const keel_pb_reader *r)
{
    return r->pos >= r->len;
}

static size_t left(const keel_pb_reader *r)
{
    return r->len - r->pos;
}

keel_status keel_pb_read_varint(keel_pb_reader *r, uint64_t *v, char *err, size_t errlen)
{
    size_t start = r->pos;
    uint64_t x = 0;
    for (int i = 0; i < 10; i++) {
        if (r->pos >= r->len) {
            r->pos = start;
            return fail(KEEL_EFORMAT, err, errlen, "truncated varint at byte %zu", r->base + start);
        }
        uint8_t b = r->buf[r->pos++];
        /* The 10th byte carries bit 63 only; anything more would not fit in 64 bits. */
        if (i == 9 && b > 1) {
            r->pos = start;
            return fail(KEEL_EFORMAT, err, errlen, "varint at byte %zu overflows 64 bits",
                        r->base + start);
        }
        x |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *v = x;
            return KEEL_OK;
        }
    }
    /* Not reached: the 10th byte either ends the varint or fails above. */
    r->pos = start;
    return fail(KEEL_EFORMAT, err, errlen, "varint at byte %zu is longer than 10 bytes",
                r->base + start);
}

keel_status keel_pb_read_key(keel_pb_reader *r, keel_pb_key *key, char *err, size_t errlen)
{
    size_t start = r->pos;
    uint64_t v;
    keel_status st = keel_pb_read_varint(r, &v, err, errlen);
    if (st != KEEL_OK)
        return st;
    int wire = (int)(v & 7);
    uint64_t field = v >> 3;
    if (v > UINT32_MAX || field == 0 || wire > KEEL_PB_FIXED32) {
        r->pos = start;
        if (wire > KEEL_PB_FIXED32)
            return fail(KEEL_EFORMAT, err, errlen, "invalid wire type %d at byte %zu", wire,
                        r->base + start);
        return fail(KEEL_EFORMAT, err, errlen, "invalid field number %llu at byte %zu",
                    (unsigned long long)field, r->base + start);
    }
    key->field = (uint32_t)field;
    key->wire = wire;
    return KEEL_OK;
}

static keel_status need(const keel_pb_reader *r, size_t n, const char *what, char *err, size_t errlen)
{
    if (left(r) < n)
        return fail(KEEL_EFORMAT, err, errlen, "truncated %s at byte %zu (%zu bytes needed, %zu left)",
                    what, r->base + r->pos, n, left(r));
    return KEEL_OK;
}

keel_status keel_pb_read_fixed32(keel_pb_reader *r, uint32_t *v, char *err, size_t errlen)
{
    keel_status st = need(r, 4, "fixed32", err, errlen);
    if (st != KEEL_OK)
        return st;
    const uint8_t *p = r->buf + r->pos;
    *v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    r->pos += 4;
    return KEEL_OK;
}

keel_status keel_pb_read_fixed64(keel_pb_reader *r, uint64_t *v, char *err, size_t errlen)
{
    keel_status st = need(r, 8, "fixed64", err, errlen);
    if (st != KEEL_OK)
        return st;
    const uint8_t *p = r->buf + r->pos;
    uint64_t x = 0;
    for (int i = 7; i >= 0; i--)
        x = x << 8 | p[i];
    *v = x;
    r->pos += 8;
    return KEEL_OK;
}

keel_status keel_pb_read_bytes(keel_pb_reader *r, const uint8_t **data, size_t *n,
                               char *err, size_t errlen)
{
    size_t start = r->pos;
    uint64_t len;
    keel_status st = keel_pb_read_varint(r, &len, err, errlen);
    if (st != KEEL_OK)
        return st;
    /* Compare with what is left, never compute pos + len (it could wrap). */
    if (len > left(r)) {
        unsigned long long have = left(r);
        r->pos = start;
        return fail(KEEL_EFORMAT, err, errlen,
                    "length %llu at byte %zu exceeds the %llu bytes left", (unsigned long long)len,
                    r->base + start, have);
    }
    *data = r->buf + r->pos;
    *n = (size_t)len;
    r->pos += (size_t)len;
    return KEEL_OK;
}

static keel_status skip_depth(keel_pb_reader *r, keel_pb_key key, int depth, char *err, size_t errlen);

/* Skip fields up to the end-group key that closes the group of field `field`. */
static keel_status skip_group(keel_pb_reader *r, uint32_t field, int depth, char *err, size_t errlen)
{
    if (depth > PB_MAX_GROUP_DEPTH)
        return fail(KEEL_EFORMAT, err, errlen, "groups nested deeper than %d at byte %zu",
                    PB_MAX_GROUP_DEPTH, r->base + r->pos);
    for (;;) {
        if (keel_pb_at_end(r))
            return fail(KEEL_EFORMAT, err, errlen, "group of field %u is not closed", field);
        size_t at = r->pos;
        keel_pb_key k;
        keel_status st = keel_pb_read_key(r, &k, err, errlen);
        if (st != KEEL_OK)
            return st;
        if (k.wire == KEEL_PB_EGROUP) {
            if (k.field != field)
                return fail(KEEL_EFORMAT, err, errlen,
                            "end-group of field %u at byte %zu closes a group of field %u",
                            k.field, r->base + at, field);
            return KEEL_OK;
        }
        st = skip_depth(r, k, depth, err, errlen);
        if (st != KEEL_OK)
            return st;
    }
}

static keel_status skip_depth(keel_pb_reader *r, keel_pb_key key, int depth, char *err, size_t errlen)
{
    uint64_t u64;
    uint32_t u32;
    const uint8_t *data;
    size_t n;
    switch (key.wire) {
    case KEEL_PB_VARINT:
        return keel_pb_read_varint(r, &u64, err, errlen);
    case KEEL_PB_FIXED64:
        return keel_pb_read_fixed64(r, &u64, err, errlen);
    case KEEL_PB_LEN:
        return keel_pb_read_bytes(r, &data, &n, err, errlen);
    case KEEL_PB_FIXED32:
        return keel_pb_read_fixed32(r, &u32, err, errlen);
    case KEEL_PB_SGROUP:
        return skip_group(r, key.field, depth + 1, err, errlen);
    case KEEL_PB_EGROUP:
        return fail(KEEL_EFORMAT, err, errlen, "end-group of field %u at byte %zu without a start",
                    key.field, r->base + r->pos);
    default:
        return fail(KEEL_EFORMAT, err, errlen, "invalid wire type %d", key.wire);
    }
}

keel_status keel_pb_skip(keel_pb_reader *r, keel_pb_key key, char *err, size_t errlen)
{
    /* a group is read field by field: on a failure inside it (not closed, closed by another
     * field, nested too deep, a bad field) pos goes back to where the value began, as the
     * header promises of every reader */
    const size_t start = r->pos;
    const keel_status st = skip_depth(r, key, 0, err, errlen);
    if (st != KEEL_OK)
        r->pos = start;
    return st;
}

/* A known field written with another wire type than its schema's. */
static keel_status bad_wire(const keel_pb_reader *r, const char *field, keel_pb_key key,
                            char *err, size_t errlen)
{
    return fail(KEEL_EFORMAT, err, errlen, "%s (field %u) before byte %zu has wire type %s",
                field, key.field, r->base + r->pos, wire_name(key.wire));
}

/* Expect wire type `wire` for a known field. */
static keel_status expect_wire(const keel_pb_reader *r, keel_pb_key key, int wire, const char *field,
                               char *err, size_t errlen)
{
    return key.wire == wire ? KEEL_OK : bad_wire(r, field, key, err, errlen);
}

/* Copy a length-delimited string into dst (cap bytes with the NUL). A name that does not fit,
 * or holds a NUL byte, is an error: a cut name could match another one. */
static keel_status copy_name(char *dst, size_t cap, const uint8_t *data, size_t n, const char *what,
                             char *err, size_t errlen)
{
    if (n >= cap)
        return fail(KEEL_EFORMAT, err, errlen, "%s is %zu bytes long (at most %zu supported)", what,
                    n, cap - 1);
    if (n && memchr(data, 0, n))
        return fail(KEEL_EFORMAT, err, errlen, "%s holds a NUL byte", what);
    if (n)
        memcpy(dst, data, n);
    dst[n] = '\0';
    return KEEL_OK;
}

/* Read a string field (its key already read) into dst. */
static keel_status read_name(keel_pb_reader *r, keel_pb_key key, char *dst, size_t cap,
                             const char *what, char *err, size_t errlen)
{
    const uint8_t *data;
    size_t n;
    keel_status st = expect_wire(r, key, KEEL_PB_LEN, what, err, errlen);
    if (st == KEEL_OK)
        st = keel_pb_read_bytes(r, &data, &n, err, errlen);
    if (st == KEEL_OK)
        st = copy_name(dst, cap, data, n, what, err, errlen);
    return st;
}

/* Read a varint field (its key already read). */
static keel_status read_varint_field(keel_pb_reader *r, keel_pb_key key, uint64_t *v,
                                     const char *what, char *err, size_t errlen)
{
    keel_status st = expect_wire(r, key, KEEL_PB_VARINT, what, err, errlen);
    return st == KEEL_OK ? keel_pb_read_varint(r, v, err, errlen) : st;
}

/* Read a length-delimited field (its key already read) as a sub-reader. */
static keel_status read_message_field(keel_pb_reader *r, keel_pb_key key, keel_pb_reader *sub,
                                      const char *what, char *err, size_t errlen)
{
    const uint8_t *data;
    size_t n;
    keel_status st = expect_wire(r, key, KEEL_PB_LEN, what, err, errlen);
    if (st == KEEL_OK)
        st = keel_pb_read_bytes(r, &data, &n, err, errlen);
    if (st == KEEL_OK)
        *sub = keel_pb_reader_sub(r, data, n);
    return st;
}

/* ---- files ----------------------------------------------------------------------------------- */

/* Read a whole file into a malloc'd buffer (at least 1 byte allocated, so an empty file is not
 * a NULL buffer). */
static keel_status read_file(const char *path, uint8_t **out, size_t *out_len, char *err, size_t errlen)
{
    *out = NULL;
    *out_len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return fail(KEEL_EIO, err, errlen, "cannot open %s: %s", path, strerror(errno));
    size_t cap = 4096, len = 0;
    uint8_t *buf = keel_alloc(cap);
    if (!buf) {
        fclose(f);
        return fail(KEEL_ENOMEM, err, errlen, "out of memory reading %s", path);
    }
    for (;;) {
        if (len == cap) {
            if (cap >= PB_MAX_FILE_BYTES) {
                keel_free(buf);
                fclose(f);
                return fail(KEEL_EFORMAT, err, errlen, "%s is larger than %zu bytes", path,
                            (size_t)PB_MAX_FILE_BYTES);
            }
            uint8_t *bigger = keel_realloc(buf, cap * 2);
            if (!bigger) {
                keel_free(buf);
                fclose(f);
                return fail(KEEL_ENOMEM, err, errlen, "out of memory reading %s", path);
            }
            buf = bigger;
            cap *= 2;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        keel_free(buf);
        return fail(KEEL_EIO, err, errlen, "cannot read %s", path);
    }
    *out = buf;
    *out_len = len;
    return KEEL_OK;
}

/* ---- TensorProto ----------------------------------------------------------------------------- */

/* TensorProto field numbers. */
enum {
    TP_DIMS = 1,
    TP_DATA_TYPE = 2,
    TP_SEGMENT = 3,
    TP_FLOAT_DATA = 4,
    TP_NAME = 8,
    TP_RAW_DATA = 9,
    TP_DATA_LOCATION = 14
};

const char *keel_onnx_dtype_name(int64_t data_type)
{
    /* TensorProto.DataType, in order from 0. */
    static const char *const names[] = {
        "UNDEFINED", "FLOAT", "UINT8", "INT8", "UINT16", "INT16", "INT32", "INT64", "STRING",
        "BOOL", "FLOAT16", "DOUBLE", "UINT32", "UINT64", "COMPLEX64", "COMPLEX128", "BFLOAT16",
        "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "UINT4", "INT4",
        "FLOAT4E2M1"};
    if (data_type >= 0 && data_type < (int64_t)(sizeof names / sizeof names[0]))
        return names[data_type];
    return "UNKNOWN";
}

/* What the first pass over a TensorProto finds. */
typedef struct tensor_scan {
    int has_data_type;
    int64_t data_type;
    const uint8_t *raw; /* raw_data (the last one, as protobuf's "last one wins" for bytes) */
    size_t raw_len;
    int has_raw;
    size_t n_float_data; /* float_data values, packed and unpacked together */
} tensor_scan;

static keel_status add_dim(keel_onnx_tensor *t, uint64_t v, char *err, size_t errlen)
{
    if (t->ndims >= KEEL_ONNX_MAX_DIMS)
        return fail(KEEL_EUNSUPPORTED, err, errlen, "more than %d dims", KEEL_ONNX_MAX_DIMS);
    int64_t d = (int64_t)v; /* int64 on the wire: a negative dim is a 10-byte varint */
    if (d < 0)
        return fail(KEEL_EFORMAT, err, errlen, "dim %d is negative (%lld)", t->ndims, (long long)d);
    t->dims[t->ndims++] = d;
    return KEEL_OK;
}

/* dims: unpacked (one varint per field) or packed (one length-delimited run of varints). */
static keel_status read_dims(keel_pb_reader *r, keel_pb_key key, keel_onnx_tensor *t,
                             char *err, size_t errlen)
{
    uint64_t v;
    keel_status st;
    if (key.wire == KEEL_PB_VARINT) {
        st = keel_pb_read_varint(r, &v, err, errlen);
        return st == KEEL_OK ? add_dim(t, v, err, errlen) : st;
    }
    if (key.wire != KEEL_PB_LEN)
        return bad_wire(r, "dims", key, err, errlen);
    keel_pb_reader packed;
    st = read_message_field(r, key, &packed, "dims", err, errlen);
    while (st == KEEL_OK && !keel_pb_at_end(&packed)) {
        st = keel_pb_read_varint(&packed, &v, err, errlen);
        if (st == KEEL_OK)
            st = add_dim(t, v, err, errlen);
    }
    return st;
}

/* float_data: count its values (first pass), checking the packed run is whole fixed32s. */
static keel_status count_float_data(keel_pb_reader *r, keel_pb_key key, size_t *count,
                                    char *err, size_t errlen)
{
    uint32_t u;
    keel_status st;
    if (key.wire == KEEL_PB_FIXED32) {
        st = keel_pb_read_fixed32(r, &u, err, errlen);
        if (st == KEEL_OK)
            (*count)++;
        return st;
    }
    if (key.wire != KEEL_PB_LEN)
        return bad_wire(r, "float_data", key, err, errlen);
    const uint8_t *data;
    size_t n;
    st = keel_pb_read_bytes(r, &data, &n, err, errlen);
    if (st != KEEL_OK)
        return st;
    if (n % 4)
        return fail(KEEL_EFORMAT, err, errlen, "packed float_data of %zu bytes, not a multiple of 4", n);
    *count += n / 4;
    return KEEL_OK;
}

static float float_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static float float_from_le(const uint8_t *p)
{
    return float_from_bits((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                           (uint32_t)p[3] << 24);
}

static keel_status scan_tensor(keel_pb_reader *r, keel_onnx_tensor *t, tensor_scan *s,
                               char *err, size_t errlen)
{
    keel_status st = KEEL_OK;
    while (st == KEEL_OK && !keel_pb_at_end(r)) {
        keel_pb_key key;
        uint64_t v;
        const uint8_t *data;
        size_t n;
        st = keel_pb_read_key(r, &key, err, errlen);
        if (st != KEEL_OK)
            break;
        switch (key.field) {
        case TP_DIMS:
            st = read_dims(r, key, t, err, errlen);
            break;
        case TP_DATA_TYPE:
            st = read_varint_field(r, key, &v, "data_type", err, errlen);
            if (st == KEEL_OK) {
                s->has_data_type = 1;
                s->data_type = (int64_t)v;
            }
            break;
        case TP_SEGMENT:
            return fail(KEEL_EUNSUPPORTED, err, errlen, "segmented tensors are not supported");
        case TP_FLOAT_DATA:
            st = count_float_data(r, key, &s->n_float_data, err, errlen);
            break;
        case TP_NAME:
            st = expect_wire(r, key, KEEL_PB_LEN, "name", err, errlen);
            if (st == KEEL_OK)
                st = keel_pb_read_bytes(r, &data, &n, err, errlen);
            if (st == KEEL_OK) {
                /* The tensor's name is only shown, so a long one is cut rather than refused. */
                size_t k = n < sizeof t->name - 1 ? n : sizeof t->name - 1;
                memcpy(t->name, data, k);
                t->name[k] = '\0';
            }
            break;
        case TP_RAW_DATA:
            st = expect_wire(r, key, KEEL_PB_LEN, "raw_data", err, errlen);
            if (st == KEEL_OK)
                st = keel_pb_read_bytes(r, &s->raw, &s->raw_len, err, errlen);
            if (st == KEEL_OK)
                s->has_raw = 1;
            break;
        case TP_DATA_LOCATION:
            st = read_varint_field(r, key, &v, "data_location", err, errlen);
            if (st == KEEL_OK && v != 0)
                return fail(KEEL_EUNSUPPORTED, err, errlen, "external data is not supported");
            break;
        default:
            st = keel_pb_skip(r, key, err, errlen);
            break;
        }
    }
    return st;
}

/* Product of the dims, refusing any size whose bytes would not fit in size_t. */
static keel_status element_count(const keel_onnx_tensor *t, size_t *count, char *err, size_t errlen)
{
    size_t c = 1;
    const size_t max = SIZE_MAX / sizeof(float);
    for (int i = 0; i < t->ndims; i++) {
        uint64_t d = (uint64_t)t->dims[i];
        if (d != 0 && c > max / d)
            return fail(KEEL_EOVERFLOW, err, errlen, "tensor size overflows (dim %d = %lld)", i,
                        (long long)t->dims[i]);
        c *= (size_t)d;
    }
    *count = c;
    return KEEL_OK;
}

/* Second pass: copy the float_data values (the first pass checked the structure). */
static keel_status fill_float_data(keel_pb_reader *r, float *out, size_t count, char *err, size_t errlen)
{
    size_t k = 0;
    keel_status st = KEEL_OK;
    while (st == KEEL_OK && !keel_pb_at_end(r)) {
        keel_pb_key key;
        uint32_t u;
        st = keel_pb_read_key(r, &key, err, errlen);
        if (st != KEEL_OK)
            break;
        if (key.field != TP_FLOAT_DATA) {
            st = keel_pb_skip(r, key, err, errlen);
        } else if (key.wire == KEEL_PB_FIXED32) {
            st = keel_pb_read_fixed32(r, &u, err, errlen);
            if (st == KEEL_OK && k < count)
                out[k++] = float_from_bits(u);
        } else {
            keel_pb_reader packed;
            st = read_message_field(r, key, &packed, "float_data", err, errlen);
            while (st == KEEL_OK && !keel_pb_at_end(&packed)) {
                st = keel_pb_read_fixed32(&packed, &u, err, errlen);
                if (st == KEEL_OK && k < count)
                    out[k++] = float_from_bits(u);
            }
        }
    }
    if (st == KEEL_OK && k != count)
        st = fail(KEEL_EFORMAT, err, errlen, "float_data changed between passes");
    return st;
}

static keel_status tensor_values(const uint8_t *buf, size_t len, keel_onnx_tensor *t,
                                 const tensor_scan *s, char *err, size_t errlen)
{
    /* element_count bounded count * 4 by SIZE_MAX, so the products below do not wrap. */
    if (s->has_raw && s->raw_len != t->count * 4)
        return fail(KEEL_EFORMAT, err, errlen, "raw_data holds %zu bytes; dims need %zu floats (%zu bytes)",
                    s->raw_len, t->count, t->count * 4);
    if (!s->has_raw && s->n_float_data != t->count) {
        if (!s->n_float_data)
            return fail(KEEL_EFORMAT, err, errlen, "no data (neither raw_data nor float_data) for %zu values",
                        t->count);
        return fail(KEEL_EFORMAT, err, errlen, "float_data holds %zu values; dims need %zu",
                    s->n_float_data, t->count);
    }
    if (t->count == 0)
        return KEEL_OK;
    t->data = keel_alloc(t->count * sizeof(float));
    if (!t->data)
        return fail(KEEL_ENOMEM, err, errlen, "out of memory for %zu floats", t->count);
    if (s->has_raw) {
        for (size_t i = 0; i < t->count; i++)
            t->data[i] = float_from_le(s->raw + 4 * i);
        return KEEL_OK;
    }
    keel_pb_reader r = keel_pb_reader_init(buf, len);
    return fill_float_data(&r, t->data, t->count, err, errlen);
}

keel_status keel_onnx_tensor_parse(const uint8_t *buf, size_t len, keel_onnx_tensor *t,
                                   char *err, size_t errlen)
{
    if (!t)
        return fail(KEEL_ENULL, err, errlen, "no tensor to fill");
    memset(t, 0, sizeof *t);
    if (!buf && len)
        return fail(KEEL_ENULL, err, errlen, "NULL buffer of %zu bytes", len);
    keel_pb_reader r = keel_pb_reader_init(buf, len);
    tensor_scan s;
    memset(&s, 0, sizeof s);
    keel_status st = scan_tensor(&r, t, &s, err, errlen);
    if (st == KEEL_OK && !s.has_data_type)
        st = fail(KEEL_EFORMAT, err, errlen, "no data_type");
    if (st == KEEL_OK && s.data_type != KEEL_ONNX_FLOAT)
        st = fail(KEEL_EUNSUPPORTED, err, errlen, "data type %s (%lld) is not supported (only FLOAT)",
                  keel_onnx_dtype_name(s.data_type), (long long)s.data_type);
    if (st == KEEL_OK)
        st = element_count(t, &t->count, err, errlen);
    if (st == KEEL_OK)
        st = tensor_values(buf, len, t, &s, err, errlen);
    if (st != KEEL_OK)
        keel_onnx_tensor_free(t);
    return st;
}

keel_status keel_onnx_tensor_load(const char *path, keel_onnx_tensor *t, char *err, size_t errlen)
{
    if (!t)
        return fail(KEEL_ENULL, err, errlen, "no tensor to fill");
    memset(t, 0, sizeof *t);
    uint8_t *buf;
    size_t len;
    keel_status st = read_file(path, &buf, &len, err, errlen);
    if (st != KEEL_OK)
        return st;
    st = keel_onnx_tensor_parse(buf, len, t, err, errlen);
    keel_free(buf);
    return st;
}

void keel_onnx_tensor_free(keel_onnx_tensor *t)
{
    if (!t)
        return;
    keel_free(t->data);
    memset(t, 0, sizeof *t);
}

/* ---- ModelProto ------------------------------------------------------------------------------ */

/* Field numbers of ModelProto, OperatorSetIdProto, GraphProto, NodeProto, AttributeProto and
 * ValueInfoProto. */
enum {
    MODEL_GRAPH = 7,
    MODEL_OPSET_IMPORT = 8,
    OPSET_DOMAIN = 1,
    OPSET_VERSION = 2,
    GRAPH_NODE = 1,
    GRAPH_INITIALIZER = 5,
    GRAPH_INPUT = 11,
    GRAPH_OUTPUT = 12,
    NODE_INPUT = 1,
    NODE_OUTPUT = 2,
    NODE_OP_TYPE = 4,
    NODE_ATTRIBUTE = 5,
    NODE_DOMAIN = 7,
    ATTR_NAME = 1,
    ATTR_F = 2,
    ATTR_I = 3,
    ATTR_TYPE = 20,
    ATTR_REF_ATTR_NAME = 21,
    VALUE_INFO_NAME = 1
};

static int is_default_domain(const char *domain)
{
    return domain[0] == '\0' || !strcmp(domain, "ai.onnx");
}

static keel_status parse_attribute(keel_pb_reader *r, keel_onnx_attr *a, char *err, size_t errlen)
{
    keel_status st = KEEL_OK;
    memset(a, 0, sizeof *a);
    int has_name = 0;
    while (st == KEEL_OK && !keel_pb_at_end(r)) {
        keel_pb_key key;
        uint64_t v;
        uint32_t u;
        st = keel_pb_read_key(r, &key, err, errlen);
        if (st != KEEL_OK)
            break;
        switch (key.field) {
        case ATTR_NAME:
            st = read_name(r, key, a->name, sizeof a->name, "name", err, errlen);
            has_name = 1;
            break;
        case ATTR_F:
            st = expect_wire(r, key, KEEL_PB_FIXED32, "f", err, errlen);
            if (st == KEEL_OK)
                st = keel_pb_read_fixed32(r, &u, err, errlen);
            if (st == KEEL_OK) {
                a->f = float_from_bits(u);
                a->has_f = 1;
            }
            break;
        case ATTR_I:
            st = read_varint_field(r, key, &v, "i", err, errlen);
            if (st == KEEL_OK) {
                a->i = (int64_t)v; /* two's complement: a negative axis is a 10-byte varint */
                a->has_i = 1;
            }
            break;
        case ATTR_TYPE:
            st = read_varint_field(r, key, &v, "type", err, errlen);
            if (st == KEEL_OK)
                a->type = (int64_t)v;
            break;
        case ATTR_REF_ATTR_NAME:
            return fail(KEEL_EUNSUPPORTED, err, errlen, "attribute refers to a function attribute");
        default:
            st = keel_pb_skip(r, key, err, errlen);
            break;
        }
    }
    if (st == KEEL_OK && (!has_name || !a->name[0]))
        st = fail(KEEL_EFORMAT, err, errlen, "attribute without a name");
    return st;
}

/* Append a string field to a list of names (node or graph inputs/outputs). */
static keel_status add_name(keel_pb_reader *r, keel_pb_key key, char list[][KEEL_ONNX_NAME_MAX],
                            int *n, const char *what, char *err, size_t errlen)
{
    if (*n >= KEEL_ONNX_MAX_IO)
        return fail(KEEL_EUNSUPPORTED, err, errlen, "more than %d %s", KEEL_ONNX_MAX_IO, what);
    keel_status st = read_name(r, key, list[*n], KEEL_ONNX_NAME_MAX, what, err, errlen);
    if (st == KEEL_OK)
        (*n)++;
    return st;
}

static keel_status add_attribute(keel_pb_reader *r, keel_pb_key key, keel_onnx_model *m,
                                 char *err, size_t errlen)
{
    keel_pb_reader sub;
    keel_status st = read_message_field(r, key, &sub, "attribute", err, errlen);
    if (st != KEEL_OK)
        return st;
    if (m->n_attrs >= KEEL_ONNX_MAX_ATTRS)
        return fail(KEEL_EUNSUPPORTED, err, errlen, "more than %d attributes", KEEL_ONNX_MAX_ATTRS);
    keel_onnx_attr *a = &m->attrs[m->n_attrs];
    st = parse_attribute(&sub, a, err, errlen);
    if (st != KEEL_OK)
        return with_context(st, err, errlen, "attribute");
    if (keel_onnx_model_attr(m, a->name))
        return fail(KEEL_EFORMAT, err, errlen, "attribute %s given twice", a->name);
    m->n_attrs++;
    return KEEL_OK;
}

static keel_status parse_node(keel_pb_reader *r, keel_onnx_model *m, char *err, size_t errlen)
{
    keel_status st = KEEL_OK;
    while (st == KEEL_OK && !keel_pb_at_end(r)) {
        keel_pb_key key;
        st = keel_pb_read_key(r, &key, err, errlen);
        if (st != KEEL_OK)
            break;
        switch (key.field) {
        case NODE_INPUT:
            st = add_name(r, key, m->inputs, &m->n_inputs, "inputs", err, errlen);
            break;
        case NODE_OUTPUT:
            st = add_name(r, key, m->outputs, &m->n_outputs, "outputs", err, errlen);
            break;
        case NODE_OP_TYPE:
            st = read_name(r, key, m->op_type, sizeof m->op_type, "op_type", err, errlen);
            break;
        case NODE_ATTRIBUTE:
            st = add_attribute(r, key, m, err, errlen);
            break;
        case NODE_DOMAIN:
            st = read_name(r, key, m->domain, sizeof m->domain, "domain", err, errlen);
            break;
        default:
            st = keel_pb_skip(r, key, err, errlen);
            break;
        }
    }
    if (st == KEEL_OK && !m->op_type[0])
        st = fail(KEEL_EFORMAT, err, errlen, "node without op_type");
    return st;
}

/* A ValueInfoProto of the graph's inputs or outputs: only its name is kept. */
static keel_status add_value_info(keel_pb_reader *r, keel_pb_key key, char list[][KEEL_ONNX_NAME_MAX],
                                  int *n, const char *what, char *err, size_t errlen)
{
    keel_pb_reader sub;
    keel_status st = read_message_field(r, key, &sub, what, err, errlen);
    if (st != KEEL_OK)
        return st;
    if (*n >= KEEL_ONNX_MAX_IO)
        return fail(KEEL_EUNSUPPORTED, err, errlen, "more than %d graph %s", KEEL_ONNX_MAX_IO, what);
    char *name = list[*n];
    name[0] = '\0';
    while (st == KEEL_OK && !keel_pb_at_end(&sub)) {
        keel_pb_key k;
        st = keel_pb_read_key(&sub, &k, err, errlen);
        if (st != KEEL_OK)
            break;
        if (k.field == VALUE_INFO_NAME)
            st = read_name(&sub, k, name, KEEL_ONNX_NAME_MAX, "name", err, errlen);
        else
            st = keel_pb_skip(&sub, k, err, errlen);
    }
    if (st != KEEL_OK)
        return with_context(st, err, errlen, what);
    (*n)++;
    return KEEL_OK;
}

static keel_status parse_graph(keel_pb_reader *r, keel_onnx_model *m, char *err, size_t errlen)
{
    keel_status st = KEEL_OK;
    int n_nodes = 0;
    while (st == KEEL_OK && !keel_pb_at_end(r)) {
        keel_pb_key key;
        keel_pb_reader sub;
        st = keel_pb_read_key(r, &key, err, errlen);
        if (st != KEEL_OK)
            break;
        switch (key.field) {
        case GRAPH_NODE:
            st = read_message_field(r, key, &sub, "node", err, errlen);
            /* Only the first node is read: a graph of more is refused below. */
            if (st == KEEL_OK && n_nodes++ == 0) {
                st = parse_node(&sub, m, err, errlen);
                if (st != KEEL_OK)
                    st = with_context(st, err, errlen, "node");
            }
            break;
        case GRAPH_INITIALIZER:
            st = expect_wire(r, key, KEEL_PB_LEN, "initializer", err, errlen);
            if (st == KEEL_OK)
                st = keel_pb_skip(r, key, err, errlen);
            m->n_initializers++;
            break;
        case GRAPH_INPUT:
            st = add_value_info(r, key, m->graph_inputs, &m->n_graph_inputs, "input", err, errlen);
            break;
        case GRAPH_OUTPUT:
            st = add_value_info(r, key, m->graph_outputs, &m->n_graph_outputs, "output", err, errlen);
            break;
        default:
            st = keel_pb_skip(r, key, err, errlen);
            break;
        }
    }
    if (st == KEEL_OK && n_nodes != 1)
        st = fail(KEEL_EUNSUPPORTED, err, errlen, "graph has %d nodes (exactly 1 supported)", n_nodes);
    return st;
}

/* An opset_import entry: keep the version of the default domain. */
static keel_status parse_opset(keel_pb_reader *r, keel_onnx_model *m, int *found, char *err, size_t errlen)
{
    char domain[KEEL_ONNX_NAME_MAX] = "";
    int64_t version = -1;
    keel_status st = KEEL_OK;
    while (st == KEEL_OK && !keel_pb_at_end(r)) {
        keel_pb_key key;
        uint64_t v;
        st = keel_pb_read_key(r, &key, err, errlen);
        if (st != KEEL_OK)
            break;
        if (key.field == OPSET_DOMAIN) {
            st = read_name(r, key, domain, sizeof domain, "domain", err, errlen);
        } else if (key.field == OPSET_VERSION) {
            st = read_varint_field(r, key, &v, "version", err, errlen);
            if (st == KEEL_OK)
                version = (int64_t)v;
        } else {
            st = keel_pb_skip(r, key, err, errlen);
        }
    }
    if (st != KEEL_OK || !is_default_domain(domain))
        return st;
    if (*found)
        return fail(KEEL_EFORMAT, err, errlen, "the default domain is imported twice");
    if (version < 1)
        return fail(KEEL_EFORMAT, err, errlen, "the default domain's opset version is %lld",
                    (long long)version);
    *found = 1;
    m->opset = version;
    return KEEL_OK;
}

keel_status keel_onnx_model_parse(const uint8_t *buf, size_t len, keel_onnx_model *m,
                                  char *err, size_t errlen)
{
    if (!m)
        return fail(KEEL_ENULL, err, errlen, "no model to fill");
    memset(m, 0, sizeof *m);
    m->opset = -1;
    if (!buf && len)
        return fail(KEEL_ENULL, err, errlen, "NULL buffer of %zu bytes", len);
    keel_pb_reader r = keel_pb_reader_init(buf, len);
    keel_status st = KEEL_OK;
    int has_graph = 0, has_opset = 0;
    while (st == KEEL_OK && !keel_pb_at_end(&r)) {
        keel_pb_key key;
        keel_pb_reader sub;
        st = keel_pb_read_key(&r, &key, err, errlen);
        if (st != KEEL_OK)
            break;
        if (key.field == MODEL_GRAPH) {
            st = read_message_field(&r, key, &sub, "graph", err, errlen);
            if (st == KEEL_OK && has_graph++)
                st = fail(KEEL_EUNSUPPORTED, err, errlen, "more than one graph field");
            if (st == KEEL_OK && (st = parse_graph(&sub, m, err, errlen)) != KEEL_OK)
                st = with_context(st, err, errlen, "graph");
        } else if (key.field == MODEL_OPSET_IMPORT) {
            st = read_message_field(&r, key, &sub, "opset_import", err, errlen);
            if (st == KEEL_OK && (st = parse_opset(&sub, m, &has_opset, err, errlen)) != KEEL_OK)
                st = with_context(st, err, errlen, "opset_import");
        } else {
            st = keel_pb_skip(&r, key, err, errlen);
        }
    }
    if (st == KEEL_OK && !has_graph)
        st = fail(KEEL_EFORMAT, err, errlen, "no graph");
    if (st == KEEL_OK && !has_opset)
        st = fail(KEEL_EFORMAT, err, errlen, "no opset_import for the default domain");
    return st;
}

keel_status keel_onnx_model_load(const char *path, keel_onnx_model *m, char *err, size_t errlen)
{
    if (!m)
        return fail(KEEL_ENULL, err, errlen, "no model to fill");
    memset(m, 0, sizeof *m);
    uint8_t *buf;
    size_t len;
    keel_status st = read_file(path, &buf, &len, err, errlen);
    if (st != KEEL_OK)
        return st;
    st = keel_onnx_model_parse(buf, len, m, err, errlen);
    keel_free(buf);
    return st;
}

const keel_onnx_attr *keel_onnx_model_attr(const keel_onnx_model *m, const char *name)
{
    for (int i = 0; i < m->n_attrs; i++)
        if (!strcmp(m->attrs[i].name, name))
            return &m->attrs[i];
    return NULL;
}

keel_status keel_onnx_attr_int(const keel_onnx_model *m, const char *name, int64_t dflt,
                               int64_t *v, char *err, size_t errlen)
{
    const keel_onnx_attr *a = keel_onnx_model_attr(m, name);
    if (!a) {
        *v = dflt;
        return KEEL_OK;
    }
    /* The type field is required by ONNX; old writers omitted it, so the value field decides. */
    if (!a->has_i || (a->type != KEEL_ONNX_ATTR_UNDEFINED && a->type != KEEL_ONNX_ATTR_INT))
        return fail(KEEL_EFORMAT, err, errlen, "attribute %s is not an INT (type %lld)", name,
                    (long long)a->type);
    *v = a->i;
    return KEEL_OK;
}

keel_status keel_onnx_attr_float(const keel_onnx_model *m, const char *name, float dflt,
                                 float *v, char *err, size_t errlen)
{
    const keel_onnx_attr *a = keel_onnx_model_attr(m, name);
    if (!a) {
        *v = dflt;
        return KEEL_OK;
    }
    if (!a->has_f || (a->type != KEEL_ONNX_ATTR_UNDEFINED && a->type != KEEL_ONNX_ATTR_FLOAT))
        return fail(KEEL_EFORMAT, err, errlen, "attribute %s is not a FLOAT (type %lld)", name,
                    (long long)a->type);
    *v = a->f;
    return KEEL_OK;
}

static int name_index(const char (*list)[KEEL_ONNX_NAME_MAX], int n, const char *name)
{
    if (!name[0])
        return -1;
    for (int i = 0; i < n; i++)
        if (!strcmp(list[i], name))
            return i;
    return -1;
}

int keel_onnx_graph_input_index(const keel_onnx_model *m, const char *name)
{
    return name_index(m->graph_inputs, m->n_graph_inputs, name);
}

int keel_onnx_graph_output_index(const keel_onnx_model *m, const char *name)
{
    return name_index(m->graph_outputs, m->n_graph_outputs, name);
}
