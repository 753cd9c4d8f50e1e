/*
 * onnx_pb.c - bounds-checked reader of the protobuf wire format for ONNX TensorProto and
 * ModelProto files. See onnx_pb.h.
 *
 * Field numbers are those of onnx/onnx.proto (IR version 10). Each message is a table of the
 * fields keel reads (number, wire type, handler) and pb_read is the one loop that walks any of
 * them: a known field with an unexpected wire type is an error, an unknown field is skipped
 * whatever its wire type. Every read goes through the keel_pb_read_* functions, which compare
 * against the bytes left before touching memory.
 */
#include "onnx_pb.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "tool_error.h"

/* Groups (wire types 3/4) nested deeper than this are refused rather than recursed into. */
#define PB_MAX_GROUP_DEPTH 32
/* Files larger than this are refused: node test files are a few kilobytes. */
#define PB_MAX_FILE_BYTES ((size_t)1 << 30)

/* ---- errors ---------------------------------------------------------------------------------- */

/* Prefix the message already there with "what: " (where in the message tree it happened). */
static keel_status with_context(keel_status st, const char *what)
{
    return tool_fail(st, "%s: %s", what, tool_last_error());
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

keel_status keel_pb_read_varint(keel_pb_reader *r, uint64_t *v)
{
    size_t start = r->pos;
    uint64_t x = 0;
    for (int i = 0; i < 10; i++) {
        if (r->pos >= r->len) {
            r->pos = start;
            return tool_fail(KEEL_EFORMAT, "truncated varint at byte %zu", r->base + start);
        }
        uint8_t b = r->buf[r->pos++];
        /* The 10th byte carries bit 63 only; anything more would not fit in 64 bits. */
        if (i == 9 && b > 1) {
            r->pos = start;
            return tool_fail(KEEL_EFORMAT, "varint at byte %zu overflows 64 bits",
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
    return tool_fail(KEEL_EFORMAT, "varint at byte %zu is longer than 10 bytes",
                     r->base + start);
}

keel_status keel_pb_read_key(keel_pb_reader *r, keel_pb_key *key)
{
    size_t start = r->pos;
    uint64_t v;
    keel_status st = keel_pb_read_varint(r, &v);
    if (st != KEEL_OK)
        return st;
    int wire = (int)(v & 7);
    uint64_t field = v >> 3;
    if (v > UINT32_MAX || field == 0 || wire > KEEL_PB_FIXED32) {
        r->pos = start;
        if (wire > KEEL_PB_FIXED32)
            return tool_fail(KEEL_EFORMAT, "invalid wire type %d at byte %zu", wire,
                             r->base + start);
        return tool_fail(KEEL_EFORMAT, "invalid field number %llu at byte %zu",
                         (unsigned long long)field, r->base + start);
    }
    key->field = (uint32_t)field;
    key->wire = wire;
    return KEEL_OK;
}

static keel_status need(const keel_pb_reader *r, size_t n, const char *what)
{
    if (left(r) < n)
        return tool_fail(KEEL_EFORMAT, "truncated %s at byte %zu (%zu bytes needed, %zu left)",
                         what, r->base + r->pos, n, left(r));
    return KEEL_OK;
}

keel_status keel_pb_read_fixed32(keel_pb_reader *r, uint32_t *v)
{
    keel_status st = need(r, 4, "fixed32");
    if (st != KEEL_OK)
        return st;
    const uint8_t *p = r->buf + r->pos;
    *v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    r->pos += 4;
    return KEEL_OK;
}

keel_status keel_pb_read_fixed64(keel_pb_reader *r, uint64_t *v)
{
    keel_status st = need(r, 8, "fixed64");
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

keel_status keel_pb_read_bytes(keel_pb_reader *r, const uint8_t **data, size_t *n)
{
    size_t start = r->pos;
    uint64_t len;
    keel_status st = keel_pb_read_varint(r, &len);
    if (st != KEEL_OK)
        return st;
    /* Compare with what is left, never compute pos + len (it could wrap). */
    if (len > left(r)) {
        unsigned long long have = left(r);
        r->pos = start;
        return tool_fail(KEEL_EFORMAT, "length %llu at byte %zu exceeds the %llu bytes left",
                         (unsigned long long)len, r->base + start, have);
    }
    *data = r->buf + r->pos;
    *n = (size_t)len;
    r->pos += (size_t)len;
    return KEEL_OK;
}

/* A field's value, decoded by read_value according to its wire type. */
typedef struct pb_value {
    uint64_t u;         /* a varint, fixed64 or fixed32 (zero-extended) */
    keel_pb_reader sub; /* a length-delimited payload: a nested message, a string, bytes */
} pb_value;

/* Read a value of wire type `wire` (not a group: those are skipped, never read). */
static keel_status read_value(keel_pb_reader *r, int wire, pb_value *v)
{
    const uint8_t *data;
    size_t n;
    uint32_t u32;
    keel_status st;
    switch (wire) {
    case KEEL_PB_VARINT:
        return keel_pb_read_varint(r, &v->u);
    case KEEL_PB_FIXED64:
        return keel_pb_read_fixed64(r, &v->u);
    case KEEL_PB_FIXED32:
        st = keel_pb_read_fixed32(r, &u32);
        if (st == KEEL_OK)
            v->u = u32;
        return st;
    case KEEL_PB_LEN:
        st = keel_pb_read_bytes(r, &data, &n);
        if (st == KEEL_OK)
            v->sub = keel_pb_reader_sub(r, data, n);
        return st;
    default:
        return tool_fail(KEEL_EFORMAT, "invalid wire type %d", wire);
    }
}

static keel_status skip_depth(keel_pb_reader *r, keel_pb_key key, int depth);

/* Skip fields up to the end-group key that closes the group of field `field`. */
static keel_status skip_group(keel_pb_reader *r, uint32_t field, int depth)
{
    if (depth > PB_MAX_GROUP_DEPTH)
        return tool_fail(KEEL_EFORMAT, "groups nested deeper than %d at byte %zu",
                         PB_MAX_GROUP_DEPTH, r->base + r->pos);
    for (;;) {
        if (keel_pb_at_end(r))
            return tool_fail(KEEL_EFORMAT, "group of field %u is not closed", field);
        size_t at = r->pos;
        keel_pb_key k;
        keel_status st = keel_pb_read_key(r, &k);
        if (st != KEEL_OK)
            return st;
        if (k.wire == KEEL_PB_EGROUP) {
            if (k.field != field)
                return tool_fail(KEEL_EFORMAT, "end-group of field %u at byte %zu closes a group of field %u",
                                 k.field, r->base + at, field);
            return KEEL_OK;
        }
        st = skip_depth(r, k, depth);
        if (st != KEEL_OK)
            return st;
    }
}

static keel_status skip_depth(keel_pb_reader *r, keel_pb_key key, int depth)
{
    pb_value v;
    if (key.wire == KEEL_PB_SGROUP)
        return skip_group(r, key.field, depth + 1);
    if (key.wire == KEEL_PB_EGROUP)
        return tool_fail(KEEL_EFORMAT, "end-group of field %u at byte %zu without a start",
                         key.field, r->base + r->pos);
    return read_value(r, key.wire, &v);
}

keel_status keel_pb_skip(keel_pb_reader *r, keel_pb_key key)
{
    /* a group is read field by field: on a failure inside it (not closed, closed by another
     * field, nested too deep, a bad field) pos goes back to where the value began, as the
     * header promises of every reader */
    const size_t start = r->pos;
    const keel_status st = skip_depth(r, key, 0);
    if (st != KEEL_OK)
        r->pos = start;
    return st;
}

/* ---- messages: a table of fields each, one loop for all ------------------------------------ */

/* pb_field.wire: the wire type (the low 3 bits) and what else the loop accepts. */
enum {
    PB_WIRE_MASK = 0x07,
    /* A repeated scalar that may also come packed: one length-delimited run of values of the
     * entry's wire type, each handed to the handler as if it had had its own key. */
    PB_PACKED = 0x10,
    /* A field keel does not support: KEEL_EUNSUPPORTED whatever its wire type, its value unread
     * (the entry's name is the message). */
    PB_REFUSE = 0x20
};

typedef struct pb_field pb_field;

/* Store one value of field f in the message state msg. A failing handler need not undo what it
 * wrote: the whole parse fails with it. */
typedef keel_status (*pb_handler)(void *msg, const pb_field *f, pb_value *v);

/* One field of a message: what pb_read does when it meets its key. */
struct pb_field {
    uint32_t number;    /* 0 ends a table */
    int wire;           /* the expected wire type, | PB_PACKED; or PB_REFUSE */
    const char *name;   /* onnx.proto's name, in error messages */
    pb_handler handler; /* NULL only with PB_REFUSE */
    size_t offset;      /* where in msg the generic handlers (field_name, field_int64) write */
};

/* A message type: its fields and the checks made once all of them are read (NULL: none). */
typedef struct pb_message {
    const pb_field *fields;
    keel_status (*finish)(void *msg);
} pb_message;

/* A known field written with another wire type than its schema's. */
static keel_status bad_wire(const keel_pb_reader *r, const char *field, keel_pb_key key)
{
    return tool_fail(KEEL_EFORMAT, "%s (field %u) before byte %zu has wire type %s",
                     field, key.field, r->base + r->pos, wire_name(key.wire));
}

/* A PB_PACKED field that came length-delimited: its values, one handler call each. */
static keel_status read_packed(keel_pb_reader *r, const pb_field *f, void *msg)
{
    const int wire = f->wire & PB_WIRE_MASK;
    const size_t width = wire == KEEL_PB_FIXED32 ? 4 : wire == KEEL_PB_FIXED64 ? 8 : 1;
    pb_value run, v;
    keel_status st = read_value(r, KEEL_PB_LEN, &run);
    /* Fixed-width runs are checked whole, so a cut last value is named as such. */
    if (st == KEEL_OK && run.sub.len % width)
        return tool_fail(KEEL_EFORMAT, "packed %s of %zu bytes, not a multiple of %zu",
                         f->name, run.sub.len, width);
    while (st == KEEL_OK && !keel_pb_at_end(&run.sub)) {
        st = read_value(&run.sub, wire, &v);
        if (st == KEEL_OK)
            st = f->handler(msg, f, &v);
    }
    return st;
}

/* The one loop: read every field of the message in r into msg, then run its final checks. */
static keel_status pb_read(keel_pb_reader *r, const pb_message *type, void *msg)
{
    keel_status st = KEEL_OK;
    while (st == KEEL_OK && !keel_pb_at_end(r)) {
        keel_pb_key key;
        pb_value v;
        st = keel_pb_read_key(r, &key);
        if (st != KEEL_OK)
            break;
        const pb_field *f = type->fields;
        while (f->number && f->number != key.field)
            f++;
        if (!f->number)
            st = keel_pb_skip(r, key);
        else if (f->wire == PB_REFUSE)
            st = tool_fail(KEEL_EUNSUPPORTED, "%s", f->name);
        else if (key.wire == (f->wire & PB_WIRE_MASK)) {
            st = read_value(r, key.wire, &v);
            if (st == KEEL_OK)
                st = f->handler(msg, f, &v);
        } else if ((f->wire & PB_PACKED) && key.wire == KEEL_PB_LEN)
            st = read_packed(r, f, msg);
        else
            st = bad_wire(r, f->name, key);
    }
    if (st == KEEL_OK && type->finish)
        st = type->finish(msg);
    return st;
}

/* A nested message (the payload v of a length-delimited field): its errors say where they were,
 * prefixed by `context`. */
static keel_status pb_read_nested(pb_value *v, const pb_message *type, void *msg,
                                  const char *context)
{
    keel_status st = pb_read(&v->sub, type, msg);
    return st == KEEL_OK ? st : with_context(st, context);
}

/* Copy a length-delimited string into dst (cap bytes with the NUL). A name that does not fit,
 * or holds a NUL byte, is an error: a cut name could match another one. */
static keel_status copy_name(char *dst, size_t cap, const keel_pb_reader *s, const char *what)
{
    if (s->len >= cap)
        return tool_fail(KEEL_EFORMAT, "%s is %zu bytes long (at most %zu supported)", what,
                         s->len, cap - 1);
    if (s->len && memchr(s->buf, 0, s->len))
        return tool_fail(KEEL_EFORMAT, "%s holds a NUL byte", what);
    if (s->len)
        memcpy(dst, s->buf, s->len);
    dst[s->len] = '\0';
    return KEEL_OK;
}

/* Generic handlers: a string into the char[KEEL_ONNX_NAME_MAX] at f->offset in msg, a varint into
 * the int64_t there (two's complement: a negative value is a 10-byte varint). */
static keel_status field_name(void *msg, const pb_field *f, pb_value *v)
{
    return copy_name((char *)msg + f->offset, KEEL_ONNX_NAME_MAX, &v->sub, f->name);
}

static keel_status field_int64(void *msg, const pb_field *f, pb_value *v)
{
    *(int64_t *)((char *)msg + f->offset) = (int64_t)v->u;
    return KEEL_OK;
}

/* ---- files ----------------------------------------------------------------------------------- */

/* Read a whole file into a malloc'd buffer (at least 1 byte allocated, so an empty file is not
 * a NULL buffer). */
static keel_status read_file(const char *path, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return tool_fail(KEEL_EIO, "cannot open %s: %s", path, strerror(errno));
    size_t cap = 4096, len = 0;
    uint8_t *buf = keel_alloc(cap);
    if (!buf) {
        fclose(f);
        return tool_fail(KEEL_ENOMEM, "out of memory reading %s", path);
    }
    for (;;) {
        if (len == cap) {
            if (cap >= PB_MAX_FILE_BYTES) {
                keel_free(buf);
                fclose(f);
                return tool_fail(KEEL_EFORMAT, "%s is larger than %zu bytes", path,
                                 (size_t)PB_MAX_FILE_BYTES);
            }
            uint8_t *bigger = keel_realloc(buf, cap * 2);
            if (!bigger) {
                keel_free(buf);
                fclose(f);
                return tool_fail(KEEL_ENOMEM, "out of memory reading %s", path);
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
        return tool_fail(KEEL_EIO, "cannot read %s", path);
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

/* What the first pass over a TensorProto finds (dims and name go straight into t). */
typedef struct tensor_scan {
    keel_onnx_tensor *t;
    int has_data_type;
    int64_t data_type;
    const uint8_t *raw; /* raw_data (the last one, as protobuf's "last one wins" for bytes) */
    size_t raw_len;
    int has_raw;
    size_t n_float_data; /* float_data values, packed and unpacked together */
} tensor_scan;

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

/* dims: one value, unpacked or from a packed run. */
static keel_status tp_dim(void *msg, const pb_field *f, pb_value *v)
{
    keel_onnx_tensor *t = ((tensor_scan *)msg)->t;
    if (t->ndims >= KEEL_ONNX_MAX_DIMS)
        return tool_fail(KEEL_EUNSUPPORTED, "more than %d dims", KEEL_ONNX_MAX_DIMS);
    int64_t d = (int64_t)v->u; /* int64 on the wire: a negative dim is a 10-byte varint */
    if (d < 0)
        return tool_fail(KEEL_EFORMAT, "dim %d is negative (%lld)", t->ndims, (long long)d);
    t->dims[t->ndims++] = d;
    return KEEL_OK;
}

static keel_status tp_data_type(void *msg, const pb_field *f, pb_value *v)
{
    tensor_scan *s = msg;
    s->has_data_type = 1;
    s->data_type = (int64_t)v->u;
    return KEEL_OK;
}

/* float_data, first pass: only counted (the packed runs checked to be whole fixed32s). */
static keel_status tp_count_float(void *msg, const pb_field *f, pb_value *v)
{
    ((tensor_scan *)msg)->n_float_data++;
    return KEEL_OK;
}

static keel_status tp_name(void *msg, const pb_field *f, pb_value *v)
{
    /* The tensor's name is only shown, so a long one is cut rather than refused. */
    keel_onnx_tensor *t = ((tensor_scan *)msg)->t;
    size_t k = v->sub.len < sizeof t->name - 1 ? v->sub.len : sizeof t->name - 1;
    if (k)
        memcpy(t->name, v->sub.buf, k);
    t->name[k] = '\0';
    return KEEL_OK;
}

static keel_status tp_raw_data(void *msg, const pb_field *f, pb_value *v)
{
    tensor_scan *s = msg;
    s->raw = v->sub.buf;
    s->raw_len = v->sub.len;
    s->has_raw = 1;
    return KEEL_OK;
}

static keel_status tp_data_location(void *msg, const pb_field *f, pb_value *v)
{
    return v->u ? tool_fail(KEEL_EUNSUPPORTED, "external data is not supported") : KEEL_OK;
}

static const pb_field tensor_fields[] = {
    {TP_DIMS, KEEL_PB_VARINT | PB_PACKED, "dims", tp_dim, 0},
    {TP_DATA_TYPE, KEEL_PB_VARINT, "data_type", tp_data_type, 0},
    {TP_SEGMENT, PB_REFUSE, "segmented tensors are not supported", NULL, 0},
    {TP_FLOAT_DATA, KEEL_PB_FIXED32 | PB_PACKED, "float_data", tp_count_float, 0},
    {TP_NAME, KEEL_PB_LEN, "name", tp_name, 0},
    {TP_RAW_DATA, KEEL_PB_LEN, "raw_data", tp_raw_data, 0},
    {TP_DATA_LOCATION, KEEL_PB_VARINT, "data_location", tp_data_location, 0},
    {0, 0, NULL, NULL, 0}};
static const pb_message tensor_message = {tensor_fields, NULL};

/* The second pass, once data is allocated: float_data's values copied in order. */
typedef struct float_fill {
    float *out;
    size_t count, k;
} float_fill;

static keel_status tp_fill_float(void *msg, const pb_field *f, pb_value *v)
{
    float_fill *fill = msg;
    if (fill->k < fill->count)
        fill->out[fill->k++] = float_from_bits((uint32_t)v->u);
    return KEEL_OK;
}

static const pb_field float_fill_fields[] = {
    {TP_FLOAT_DATA, KEEL_PB_FIXED32 | PB_PACKED, "float_data", tp_fill_float, 0},
    {0, 0, NULL, NULL, 0}};
static const pb_message float_fill_message = {float_fill_fields, NULL};

/* Product of the dims, refusing any size whose bytes would not fit in size_t. */
static keel_status element_count(const keel_onnx_tensor *t, size_t *count)
{
    size_t c = 1;
    const size_t max = SIZE_MAX / sizeof(float);
    for (int i = 0; i < t->ndims; i++) {
        uint64_t d = (uint64_t)t->dims[i];
        if (d != 0 && c > max / d)
            return tool_fail(KEEL_EOVERFLOW, "tensor size overflows (dim %d = %lld)", i,
                             (long long)t->dims[i]);
        c *= (size_t)d;
    }
    *count = c;
    return KEEL_OK;
}

static keel_status tensor_values(const uint8_t *buf, size_t len, keel_onnx_tensor *t,
                                 const tensor_scan *s)
{
    /* element_count bounded count * 4 by SIZE_MAX, so the products below do not wrap. */
    if (s->has_raw && s->raw_len != t->count * 4)
        return tool_fail(KEEL_EFORMAT, "raw_data holds %zu bytes; dims need %zu floats (%zu bytes)",
                         s->raw_len, t->count, t->count * 4);
    if (!s->has_raw && s->n_float_data != t->count) {
        if (!s->n_float_data)
            return tool_fail(KEEL_EFORMAT, "no data (neither raw_data nor float_data) for %zu values",
                             t->count);
        return tool_fail(KEEL_EFORMAT, "float_data holds %zu values; dims need %zu",
                         s->n_float_data, t->count);
    }
    if (t->count == 0)
        return KEEL_OK;
    t->data = keel_alloc(t->count * sizeof(float));
    if (!t->data)
        return tool_fail(KEEL_ENOMEM, "out of memory for %zu floats", t->count);
    if (s->has_raw) {
        for (size_t i = 0; i < t->count; i++)
            t->data[i] = float_from_le(s->raw + 4 * i);
        return KEEL_OK;
    }
    keel_pb_reader r = keel_pb_reader_init(buf, len);
    float_fill fill = {t->data, t->count, 0};
    keel_status st = pb_read(&r, &float_fill_message, &fill);
    if (st == KEEL_OK && fill.k != fill.count)
        st = tool_fail(KEEL_EFORMAT, "float_data changed between passes");
    return st;
}

keel_status keel_onnx_tensor_parse(const uint8_t *buf, size_t len, keel_onnx_tensor *t)
{
    if (!t)
        return tool_fail(KEEL_ENULL, "no tensor to fill");
    memset(t, 0, sizeof *t);
    if (!buf && len)
        return tool_fail(KEEL_ENULL, "NULL buffer of %zu bytes", len);
    keel_pb_reader r = keel_pb_reader_init(buf, len);
    tensor_scan s;
    memset(&s, 0, sizeof s);
    s.t = t;
    keel_status st = pb_read(&r, &tensor_message, &s);
    if (st == KEEL_OK && !s.has_data_type)
        st = tool_fail(KEEL_EFORMAT, "no data_type");
    if (st == KEEL_OK && s.data_type != KEEL_ONNX_FLOAT)
        st = tool_fail(KEEL_EUNSUPPORTED, "data type %s (%lld) is not supported (only FLOAT)",
                       keel_onnx_dtype_name(s.data_type), (long long)s.data_type);
    if (st == KEEL_OK)
        st = element_count(t, &t->count);
    if (st == KEEL_OK)
        st = tensor_values(buf, len, t, &s);
    if (st != KEEL_OK)
        keel_onnx_tensor_free(t);
    return st;
}

keel_status keel_onnx_tensor_load(const char *path, keel_onnx_tensor *t)
{
    if (!t)
        return tool_fail(KEEL_ENULL, "no tensor to fill");
    memset(t, 0, sizeof *t);
    uint8_t *buf;
    size_t len;
    keel_status st = read_file(path, &buf, &len);
    if (st != KEEL_OK)
        return st;
    st = keel_onnx_tensor_parse(buf, len, t);
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

/* The state of the messages that need more than the struct they fill. */
typedef struct model_state {
    keel_onnx_model *m;
    int has_graph, has_opset;
} model_state;

typedef struct graph_state {
    keel_onnx_model *m;
    int n_nodes;
} graph_state;

typedef struct opset_state {
    model_state *model;
    char domain[KEEL_ONNX_NAME_MAX];
    int64_t version;
} opset_state;

static int is_default_domain(const char *domain)
{
    return domain[0] == '\0' || !strcmp(domain, "ai.onnx");
}

/* AttributeProto, into a keel_onnx_attr. */
static keel_status attr_f(void *msg, const pb_field *f, pb_value *v)
{
    keel_onnx_attr *a = msg;
    a->f = float_from_bits((uint32_t)v->u);
    a->has_f = 1;
    return KEEL_OK;
}

static keel_status attr_i(void *msg, const pb_field *f, pb_value *v)
{
    keel_onnx_attr *a = msg;
    a->i = (int64_t)v->u; /* two's complement: a negative axis is a 10-byte varint */
    a->has_i = 1;
    return KEEL_OK;
}

static keel_status attr_finish(void *msg)
{
    const keel_onnx_attr *a = msg;
    return a->name[0] ? KEEL_OK : tool_fail(KEEL_EFORMAT, "attribute without a name");
}

static const pb_field attribute_fields[] = {
    {ATTR_NAME, KEEL_PB_LEN, "name", field_name, offsetof(keel_onnx_attr, name)},
    {ATTR_F, KEEL_PB_FIXED32, "f", attr_f, 0},
    {ATTR_I, KEEL_PB_VARINT, "i", attr_i, 0},
    {ATTR_TYPE, KEEL_PB_VARINT, "type", field_int64, offsetof(keel_onnx_attr, type)},
    {ATTR_REF_ATTR_NAME, PB_REFUSE, "attribute refers to a function attribute", NULL, 0},
    {0, 0, NULL, NULL, 0}};
static const pb_message attribute_message = {attribute_fields, attr_finish};

/* NodeProto, into the keel_onnx_model. */

/* Append a string to a list of names (node inputs/outputs). */
static keel_status add_name(char list[][KEEL_ONNX_NAME_MAX], int *n, const pb_field *f, pb_value *v)
{
    if (*n >= KEEL_ONNX_MAX_IO)
        return tool_fail(KEEL_EUNSUPPORTED, "more than %d %s", KEEL_ONNX_MAX_IO, f->name);
    keel_status st = copy_name(list[*n], KEEL_ONNX_NAME_MAX, &v->sub, f->name);
    if (st == KEEL_OK)
        (*n)++;
    return st;
}

static keel_status node_input(void *msg, const pb_field *f, pb_value *v)
{
    keel_onnx_model *m = msg;
    return add_name(m->inputs, &m->n_inputs, f, v);
}

static keel_status node_output(void *msg, const pb_field *f, pb_value *v)
{
    keel_onnx_model *m = msg;
    return add_name(m->outputs, &m->n_outputs, f, v);
}

static keel_status node_attribute(void *msg, const pb_field *f, pb_value *v)
{
    keel_onnx_model *m = msg;
    if (m->n_attrs >= KEEL_ONNX_MAX_ATTRS)
        return tool_fail(KEEL_EUNSUPPORTED, "more than %d attributes", KEEL_ONNX_MAX_ATTRS);
    keel_onnx_attr *a = &m->attrs[m->n_attrs];
    memset(a, 0, sizeof *a);
    keel_status st = pb_read_nested(v, &attribute_message, a, "attribute");
    if (st != KEEL_OK)
        return st;
    if (keel_onnx_model_attr(m, a->name))
        return tool_fail(KEEL_EFORMAT, "attribute %s given twice", a->name);
    m->n_attrs++;
    return KEEL_OK;
}

static keel_status node_finish(void *msg)
{
    const keel_onnx_model *m = msg;
    return m->op_type[0] ? KEEL_OK : tool_fail(KEEL_EFORMAT, "node without op_type");
}

static const pb_field node_fields[] = {
    {NODE_INPUT, KEEL_PB_LEN, "inputs", node_input, 0},
    {NODE_OUTPUT, KEEL_PB_LEN, "outputs", node_output, 0},
    {NODE_OP_TYPE, KEEL_PB_LEN, "op_type", field_name, offsetof(keel_onnx_model, op_type)},
    {NODE_ATTRIBUTE, KEEL_PB_LEN, "attribute", node_attribute, 0},
    {NODE_DOMAIN, KEEL_PB_LEN, "domain", field_name, offsetof(keel_onnx_model, domain)},
    {0, 0, NULL, NULL, 0}};
static const pb_message node_message = {node_fields, node_finish};

/* ValueInfoProto, into one name of the graph's inputs or outputs: only its name is kept. */
static const pb_field value_info_fields[] = {{VALUE_INFO_NAME, KEEL_PB_LEN, "name", field_name, 0},
                                             {0, 0, NULL, NULL, 0}};
static const pb_message value_info_message = {value_info_fields, NULL};

static keel_status add_value_info(char list[][KEEL_ONNX_NAME_MAX], int *n, const pb_field *f,
                                  pb_value *v)
{
    if (*n >= KEEL_ONNX_MAX_IO)
        return tool_fail(KEEL_EUNSUPPORTED, "more than %d graph %s", KEEL_ONNX_MAX_IO,
                         f->name);
    list[*n][0] = '\0';
    keel_status st = pb_read_nested(v, &value_info_message, list[*n], f->name);
    if (st == KEEL_OK)
        (*n)++;
    return st;
}

/* GraphProto, into the keel_onnx_model. */
static keel_status graph_node(void *msg, const pb_field *f, pb_value *v)
{
    graph_state *g = msg;
    /* Only the first node is read: a graph of more is refused by graph_finish. */
    if (g->n_nodes++)
        return KEEL_OK;
    return pb_read_nested(v, &node_message, g->m, "node");
}

static keel_status graph_initializer(void *msg, const pb_field *f, pb_value *v)
{
    ((graph_state *)msg)->m->n_initializers++;
    return KEEL_OK;
}

static keel_status graph_input(void *msg, const pb_field *f, pb_value *v)
{
    keel_onnx_model *m = ((graph_state *)msg)->m;
    return add_value_info(m->graph_inputs, &m->n_graph_inputs, f, v);
}

static keel_status graph_output(void *msg, const pb_field *f, pb_value *v)
{
    keel_onnx_model *m = ((graph_state *)msg)->m;
    return add_value_info(m->graph_outputs, &m->n_graph_outputs, f, v);
}

static keel_status graph_finish(void *msg)
{
    const graph_state *g = msg;
    if (g->n_nodes != 1)
        return tool_fail(KEEL_EUNSUPPORTED, "graph has %d nodes (exactly 1 supported)",
                         g->n_nodes);
    return KEEL_OK;
}

static const pb_field graph_fields[] = {
    {GRAPH_NODE, KEEL_PB_LEN, "node", graph_node, 0},
    {GRAPH_INITIALIZER, KEEL_PB_LEN, "initializer", graph_initializer, 0},
    {GRAPH_INPUT, KEEL_PB_LEN, "input", graph_input, 0},
    {GRAPH_OUTPUT, KEEL_PB_LEN, "output", graph_output, 0},
    {0, 0, NULL, NULL, 0}};
static const pb_message graph_message = {graph_fields, graph_finish};

/* OperatorSetIdProto: keep the version of the default domain. */
static keel_status opset_finish(void *msg)
{
    const opset_state *o = msg;
    if (!is_default_domain(o->domain))
        return KEEL_OK;
    if (o->model->has_opset)
        return tool_fail(KEEL_EFORMAT, "the default domain is imported twice");
    if (o->version < 1)
        return tool_fail(KEEL_EFORMAT, "the default domain's opset version is %lld",
                         (long long)o->version);
    o->model->has_opset = 1;
    o->model->m->opset = o->version;
    return KEEL_OK;
}

static const pb_field opset_fields[] = {
    {OPSET_DOMAIN, KEEL_PB_LEN, "domain", field_name, offsetof(opset_state, domain)},
    {OPSET_VERSION, KEEL_PB_VARINT, "version", field_int64, offsetof(opset_state, version)},
    {0, 0, NULL, NULL, 0}};
static const pb_message opset_message = {opset_fields, opset_finish};

/* ModelProto. */
static keel_status model_graph(void *msg, const pb_field *f, pb_value *v)
{
    model_state *ms = msg;
    if (ms->has_graph++)
        return tool_fail(KEEL_EUNSUPPORTED, "more than one graph field");
    graph_state g = {ms->m, 0};
    return pb_read_nested(v, &graph_message, &g, "graph");
}

static keel_status model_opset(void *msg, const pb_field *f, pb_value *v)
{
    opset_state o = {msg, "", -1};
    return pb_read_nested(v, &opset_message, &o, "opset_import");
}

static keel_status model_finish(void *msg)
{
    const model_state *ms = msg;
    if (!ms->has_graph)
        return tool_fail(KEEL_EFORMAT, "no graph");
    if (!ms->has_opset)
        return tool_fail(KEEL_EFORMAT, "no opset_import for the default domain");
    return KEEL_OK;
}

static const pb_field model_fields[] = {
    {MODEL_GRAPH, KEEL_PB_LEN, "graph", model_graph, 0},
    {MODEL_OPSET_IMPORT, KEEL_PB_LEN, "opset_import", model_opset, 0},
    {0, 0, NULL, NULL, 0}};
static const pb_message model_message = {model_fields, model_finish};

keel_status keel_onnx_model_parse(const uint8_t *buf, size_t len, keel_onnx_model *m)
{
    if (!m)
        return tool_fail(KEEL_ENULL, "no model to fill");
    memset(m, 0, sizeof *m);
    m->opset = -1;
    if (!buf && len)
        return tool_fail(KEEL_ENULL, "NULL buffer of %zu bytes", len);
    keel_pb_reader r = keel_pb_reader_init(buf, len);
    model_state ms = {m, 0, 0};
    return pb_read(&r, &model_message, &ms);
}

keel_status keel_onnx_model_load(const char *path, keel_onnx_model *m)
{
    if (!m)
        return tool_fail(KEEL_ENULL, "no model to fill");
    memset(m, 0, sizeof *m);
    uint8_t *buf;
    size_t len;
    keel_status st = read_file(path, &buf, &len);
    if (st != KEEL_OK)
        return st;
    st = keel_onnx_model_parse(buf, len, m);
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
                               int64_t *v)
{
    const keel_onnx_attr *a = keel_onnx_model_attr(m, name);
    if (!a) {
        *v = dflt;
        return KEEL_OK;
    }
    /* The type field is required by ONNX; old writers omitted it, so the value field decides. */
    if (!a->has_i || (a->type != KEEL_ONNX_ATTR_UNDEFINED && a->type != KEEL_ONNX_ATTR_INT))
        return tool_fail(KEEL_EFORMAT, "attribute %s is not an INT (type %lld)", name,
                         (long long)a->type);
    *v = a->i;
    return KEEL_OK;
}

keel_status keel_onnx_attr_float(const keel_onnx_model *m, const char *name, float dflt,
                                 float *v)
{
    const keel_onnx_attr *a = keel_onnx_model_attr(m, name);
    if (!a) {
        *v = dflt;
        return KEEL_OK;
    }
    if (!a->has_f || (a->type != KEEL_ONNX_ATTR_UNDEFINED && a->type != KEEL_ONNX_ATTR_FLOAT))
        return tool_fail(KEEL_EFORMAT, "attribute %s is not a FLOAT (type %lld)", name,
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
