/*
 * Unit tests of the protobuf / ONNX reader of `keel onnx-test` (src/cli/onnx_pb.c).
 *
 * Hand-made buffers cover the wire format's edge cases (varints up to the 10-byte negative
 * int64, packed and unpacked repeated fields, every wire type skipped when unknown, malformed
 * keys and lengths); the ONNX files of tests/data/onnx are read for real, and every truncation
 * of them must be an error. Each truncated copy lives in a heap block of exactly its size, so a
 * sanitizer build (KEEL_SANITIZE=address) catches any read past the end.
 *
 * Runs with the working directory at the source root (KEEL_SOURCE_DIR says it too).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "onnx_pb.h"

#ifndef KEEL_SOURCE_DIR
#define KEEL_SOURCE_DIR "."
#endif
#define DATA_DIR KEEL_SOURCE_DIR "/tests/data/onnx/"

typedef struct counts {
    int passed, failed;
} counts;

#define CHECK(c, cond)                                                                    \
    do {                                                                                  \
        if (cond) {                                                                       \
            (c)->passed++;                                                                \
        } else {                                                                          \
            (c)->failed++;                                                                \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                 \
    } while (0)

/* ---- building protobuf buffers --------------------------------------------------------------- */

typedef struct pbuf {
    uint8_t b[2048];
    size_t n;
} pbuf;

static void put_byte(pbuf *p, uint8_t v)
{
    if (p->n < sizeof p->b)
        p->b[p->n++] = v;
}

static void put_raw(pbuf *p, const void *data, size_t n)
{
    for (size_t i = 0; i < n; i++)
        put_byte(p, ((const uint8_t *)data)[i]);
}

static void put_varint(pbuf *p, uint64_t v)
{
    do {
        uint8_t b = v & 0x7f;
        v >>= 7;
        put_byte(p, (uint8_t)(b | (v ? 0x80 : 0)));
    } while (v);
}

static void put_key(pbuf *p, uint32_t field, int wire)
{
    put_varint(p, (uint64_t)field << 3 | (uint64_t)wire);
}

static void put_fixed32(pbuf *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        put_byte(p, (uint8_t)(v >> (8 * i)));
}

static void put_float(pbuf *p, float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    put_fixed32(p, u);
}

static void put_int_field(pbuf *p, uint32_t field, int64_t v)
{
    put_key(p, field, KEEL_PB_VARINT);
    put_varint(p, (uint64_t)v);
}

static void put_len_field(pbuf *p, uint32_t field, const void *data, size_t n)
{
    put_key(p, field, KEEL_PB_LEN);
    put_varint(p, n);
    put_raw(p, data, n);
}

static void put_str_field(pbuf *p, uint32_t field, const char *s)
{
    put_len_field(p, field, s, strlen(s));
}

static void put_msg_field(pbuf *p, uint32_t field, const pbuf *sub)
{
    put_len_field(p, field, sub->b, sub->n);
}

/* raw_data of n floats, little-endian. */
static void put_raw_floats(pbuf *p, const float *v, size_t n)
{
    pbuf raw = {{0}, 0};
    for (size_t i = 0; i < n; i++)
        put_float(&raw, v[i]);
    put_msg_field(p, 9, &raw);
}

/* Parse a buffer from a heap copy of exactly its size (so ASan sees any overread). */
static keel_status parse_tensor_exact(const uint8_t *data, size_t n, keel_onnx_tensor *t)
{
    uint8_t *copy = malloc(n ? n : 1);
    if (!copy)
        return KEEL_ENOMEM;
    if (n)
        memcpy(copy, data, n);
    keel_status st = keel_onnx_tensor_parse(n ? copy : NULL, n, t);
    free(copy);
    return st;
}

static keel_status parse_model_exact(const uint8_t *data, size_t n, keel_onnx_model *m)
{
    uint8_t *copy = malloc(n ? n : 1);
    if (!copy)
        return KEEL_ENOMEM;
    if (n)
        memcpy(copy, data, n);
    keel_status st = keel_onnx_model_parse(n ? copy : NULL, n, m);
    free(copy);
    return st;
}

/* ---- varints and keys ------------------------------------------------------------------------ */

typedef struct varint_case {
    uint8_t bytes[12];
    size_t n;
    int ok;
    uint64_t value;
    size_t used;
} varint_case;

static void test_varints(counts *c)
{
    static const varint_case cases[] = {
        {{0x00}, 1, 1, 0, 1},
        {{0x01}, 1, 1, 1, 1},
        {{0x7f}, 1, 1, 127, 1},
        {{0x80, 0x01}, 2, 1, 128, 2},
        {{0xac, 0x02}, 2, 1, 300, 2},
        {{0xff, 0xff, 0xff, 0xff, 0x0f}, 5, 1, 0xffffffffu, 5},
        {{0x80, 0x00}, 2, 1, 0, 2},                     /* not minimal, still valid */
        {{0x05, 0xff}, 2, 1, 5, 1},                     /* stops after the first byte */
        {{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, 9, 1, 0x7fffffffffffffffu, 9},
        /* int64 -1 and -2 (a negative axis): ten bytes, the last holding bit 63 */
        {{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, 10, 1, UINT64_MAX, 10},
        {{0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, 10, 1, UINT64_MAX - 1, 10},
        {{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}, 10, 1, 1ull << 63, 10},
        /* errors */
        {{0}, 0, 0, 0, 0},                                                           /* empty */
        {{0x80}, 1, 0, 0, 0},                                                        /* cut */
        {{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 9, 0, 0, 0},        /* cut at 9 */
        {{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02}, 10, 0, 0, 0}, /* > 64 bits */
        {{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, 10, 0, 0, 0},
        {{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x81, 0x00}, 11, 0, 0, 0}, /* 11 bytes */
        {{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00}, 11, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const varint_case *vc = &cases[i];
        uint8_t *copy = malloc(vc->n ? vc->n : 1);
        if (!copy)
            continue;
        memcpy(copy, vc->bytes, vc->n);
        keel_pb_reader r = keel_pb_reader_init(copy, vc->n);
        uint64_t v = 12345;
        tool_clear_error();
        keel_status st = keel_pb_read_varint(&r, &v);
        if (vc->ok) {
            CHECK(c, st == KEEL_OK);
            CHECK(c, v == vc->value);
            CHECK(c, r.pos == vc->used);
        } else {
            CHECK(c, st == KEEL_EFORMAT);
            CHECK(c, r.pos == 0); /* a failed read does not move */
            CHECK(c, tool_last_error()[0] != '\0');
        }
        free(copy);
    }
    /* The encoder and the decoder agree on every power of two and its neighbours. */
    for (int bit = 0; bit < 64; bit++) {
        uint64_t base = 1ull << bit;
        uint64_t vals[3] = {base - 1, base, base + 1};
        for (int k = 0; k < 3; k++) {
            pbuf p = {{0}, 0};
            put_varint(&p, vals[k]);
            keel_pb_reader r = keel_pb_reader_init(p.b, p.n);
            uint64_t v = 0;
            int ok = keel_pb_read_varint(&r, &v) == KEEL_OK && v == vals[k] && r.pos == p.n;
            CHECK(c, ok);
        }
    }
}

static void test_keys(counts *c)
{
    keel_pb_key key;
    const uint8_t good[] = {0x08, 0x4a, 0xfa, 0xff, 0xff, 0xff, 0x0f}; /* 1:varint 9:len (2^29-1):len */
    keel_pb_reader r = keel_pb_reader_init(good, sizeof good);
    CHECK(c, keel_pb_read_key(&r, &key) == KEEL_OK && key.field == 1 &&
                 key.wire == KEEL_PB_VARINT);
    CHECK(c, keel_pb_read_key(&r, &key) == KEEL_OK && key.field == 9 &&
                 key.wire == KEEL_PB_LEN);
    CHECK(c, keel_pb_read_key(&r, &key) == KEEL_OK && key.field == (1u << 29) - 1 &&
                 key.wire == KEEL_PB_LEN);
    CHECK(c, keel_pb_at_end(&r));

    /* Field 0, wire types 6 and 7, a key past 32 bits. */
    const uint8_t bad[][6] = {{0x00}, {0x02}, {0x0e}, {0x0f}, {0x0b * 8 + 6}, {0x80, 0x80, 0x80, 0x80, 0x10}};
    const size_t bad_n[] = {1, 1, 1, 1, 1, 5};
    for (size_t i = 0; i < sizeof bad_n / sizeof bad_n[0]; i++) {
        r = keel_pb_reader_init(bad[i], bad_n[i]);
        tool_clear_error();
        CHECK(c, keel_pb_read_key(&r, &key) == KEEL_EFORMAT);
        CHECK(c, r.pos == 0 && tool_last_error()[0] != '\0');
    }
    r = keel_pb_reader_init(bad[2], 1);
    CHECK(c, keel_pb_read_key(&r, &key) == KEEL_EFORMAT && strstr(tool_last_error(), "wire type 6"));
}

static void test_fixed_and_bytes(counts *c)
{
    const uint8_t b[] = {0x78, 0x56, 0x34, 0x12, 0xef, 0xcd, 0xab, 0x89};
    keel_pb_reader r = keel_pb_reader_init(b, sizeof b);
    uint32_t u32 = 0;
    uint64_t u64 = 0;
    CHECK(c, keel_pb_read_fixed32(&r, &u32) == KEEL_OK && u32 == 0x12345678u);
    CHECK(c, keel_pb_read_fixed32(&r, &u32) == KEEL_OK && u32 == 0x89abcdefu);
    CHECK(c, keel_pb_read_fixed32(&r, &u32) == KEEL_EFORMAT);
    r = keel_pb_reader_init(b, sizeof b);
    CHECK(c, keel_pb_read_fixed64(&r, &u64) == KEEL_OK && u64 == 0x89abcdef12345678ull);
    for (size_t n = 0; n < 8; n++) {
        r = keel_pb_reader_init(b, n);
        CHECK(c, keel_pb_read_fixed64(&r, &u64) == KEEL_EFORMAT && r.pos == 0);
        if (n < 4)
            CHECK(c, keel_pb_read_fixed32(&r, &u32) == KEEL_EFORMAT && r.pos == 0);
    }

    const uint8_t *data;
    size_t n;
    const uint8_t ok_len[] = {0x03, 'a', 'b', 'c', 0x00};
    r = keel_pb_reader_init(ok_len, sizeof ok_len);
    CHECK(c, keel_pb_read_bytes(&r, &data, &n) == KEEL_OK && n == 3 && data == ok_len + 1);
    CHECK(c, keel_pb_read_bytes(&r, &data, &n) == KEEL_OK && n == 0);
    CHECK(c, keel_pb_at_end(&r));
    const uint8_t long_len[] = {0x04, 'a', 'b', 'c'};
    r = keel_pb_reader_init(long_len, sizeof long_len);
    CHECK(c, keel_pb_read_bytes(&r, &data, &n) == KEEL_EFORMAT && r.pos == 0);
    /* A length near 2^64 must not wrap pos + len around. */
    const uint8_t huge_len[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 'x'};
    r = keel_pb_reader_init(huge_len, sizeof huge_len);
    CHECK(c, keel_pb_read_bytes(&r, &data, &n) == KEEL_EFORMAT && r.pos == 0);
}

/* Read one key and skip its value. */
static keel_status skip_one(const pbuf *p, size_t *pos)
{
    keel_pb_reader r = keel_pb_reader_init(p->b, p->n);
    keel_pb_key key;
    keel_status st = keel_pb_read_key(&r, &key);
    if (st == KEEL_OK)
        st = keel_pb_skip(&r, key);
    *pos = r.pos;
    return st;
}

static void test_skip(counts *c)
{
    size_t pos;
    pbuf p = {{0}, 0};
    put_int_field(&p, 100, -5);
    CHECK(c, skip_one(&p, &pos) == KEEL_OK && pos == p.n);
    p.n = 0;
    put_key(&p, 100, KEEL_PB_FIXED64);
    put_fixed32(&p, 1);
    put_fixed32(&p, 2);
    CHECK(c, skip_one(&p, &pos) == KEEL_OK && pos == p.n);
    p.n = 0;
    put_key(&p, 100, KEEL_PB_FIXED32);
    put_fixed32(&p, 1);
    CHECK(c, skip_one(&p, &pos) == KEEL_OK && pos == p.n);
    p.n = 0;
    put_str_field(&p, 100, "hello");
    CHECK(c, skip_one(&p, &pos) == KEEL_OK && pos == p.n);

    /* A group holding fields of every type and a nested group. */
    p.n = 0;
    put_key(&p, 100, KEEL_PB_SGROUP);
    put_int_field(&p, 1, 7);
    put_key(&p, 2, KEEL_PB_FIXED32);
    put_fixed32(&p, 3);
    put_str_field(&p, 3, "x");
    put_key(&p, 4, KEEL_PB_SGROUP);
    put_key(&p, 5, KEEL_PB_FIXED64);
    put_fixed32(&p, 0);
    put_fixed32(&p, 0);
    put_key(&p, 4, KEEL_PB_EGROUP);
    put_key(&p, 100, KEEL_PB_EGROUP);
    size_t whole = p.n;
    put_int_field(&p, 1, 1); /* after the group: must not be eaten */
    CHECK(c, skip_one(&p, &pos) == KEEL_OK && pos == whole);

    /* An end-group of another field, a group never closed, an end-group alone. */
    p.n = 0;
    put_key(&p, 100, KEEL_PB_SGROUP);
    put_key(&p, 101, KEEL_PB_EGROUP);
    CHECK(c, skip_one(&p, &pos) == KEEL_EFORMAT);
    p.n = 0;
    put_key(&p, 100, KEEL_PB_SGROUP);
    put_int_field(&p, 1, 1);
    CHECK(c, skip_one(&p, &pos) == KEEL_EFORMAT);
    p.n = 0;
    put_key(&p, 100, KEEL_PB_EGROUP);
    CHECK(c, skip_one(&p, &pos) == KEEL_EFORMAT);

    /* Deep nesting is refused, not recursed into without bound. */
    p.n = 0;
    for (int i = 0; i < 200; i++)
        put_key(&p, 1, KEEL_PB_SGROUP);
    for (int i = 0; i < 200; i++)
        put_key(&p, 1, KEEL_PB_EGROUP);
    CHECK(c, skip_one(&p, &pos) == KEEL_EFORMAT && pos == 1);

    /* A failed skip leaves pos where the value began (onnx_pb.h: "The readers below leave pos
     * where it was when they fail"), right after the key: issue 23, finding 9. The inputs of
     * the report: 0b 08 01 (a group of field 1 holding field 1 = 1, never closed) and 0b 14
     * (a group of field 1 closed by an end-group of field 2); then a group whose inner field
     * is truncated, and one whose inner group is not closed. */
    static const struct {
        uint8_t bytes[8];
        size_t n;
    } bad_groups[] = {
        {{0x0b, 0x08, 0x01}, 3},
        {{0x0b, 0x14}, 2},
        {{0x0b, 0x08, 0x80}, 3},
        {{0x0b, 0x0b, 0x0c}, 3},
        {{0x0b, 0x0b, 0x08, 0x01, 0x0c, 0x08}, 6},
    };
    for (size_t i = 0; i < sizeof bad_groups / sizeof bad_groups[0]; i++) {
        keel_pb_reader r = keel_pb_reader_init(bad_groups[i].bytes, bad_groups[i].n);
        keel_pb_key key;
        tool_clear_error();
        CHECK(c, keel_pb_read_key(&r, &key) == KEEL_OK && r.pos == 1);
        CHECK(c, keel_pb_skip(&r, key) == KEEL_EFORMAT && r.pos == 1 && tool_last_error()[0]);
    }
    /* 10 levels are fine. */
    p.n = 0;
    for (int i = 0; i < 10; i++)
        put_key(&p, 1, KEEL_PB_SGROUP);
    for (int i = 0; i < 10; i++)
        put_key(&p, 1, KEEL_PB_EGROUP);
    CHECK(c, skip_one(&p, &pos) == KEEL_OK && pos == p.n);
}

/* ---- TensorProto ----------------------------------------------------------------------------- */

static const float vals6[6] = {1.0f, -2.5f, 3.25f, 0.0f, -0.0f, 1e-30f};

static int same_floats(const float *a, const float *b, size_t n)
{
    return n == 0 || (a && b && !memcmp(a, b, n * sizeof *a));
}

/* Unknown fields of every wire type, to be skipped. */
static void put_unknown_fields(pbuf *p)
{
    put_int_field(p, 15, -1); /* 10-byte varint */
    put_key(p, 16, KEEL_PB_FIXED64);
    put_fixed32(p, 0xdeadbeef);
    put_fixed32(p, 0xdeadbeef);
    put_str_field(p, 12, "doc string");
    put_key(p, 17, KEEL_PB_FIXED32);
    put_fixed32(p, 0x12345678);
    put_key(p, 18, KEEL_PB_SGROUP);
    put_int_field(p, 1, 3);
    put_key(p, 18, KEEL_PB_EGROUP);
}

static void test_tensor_layouts(counts *c)
{
    keel_onnx_tensor t;

    /* Unpacked dims, as the ONNX files write them, with raw_data and unknown fields. */
    pbuf p = {{0}, 0};
    put_int_field(&p, 1, 2);
    put_unknown_fields(&p);
    put_int_field(&p, 1, 3);
    put_int_field(&p, 2, KEEL_ONNX_FLOAT);
    put_str_field(&p, 8, "X");
    put_raw_floats(&p, vals6, 6);
    CHECK(c, parse_tensor_exact(p.b, p.n, &t) == KEEL_OK);
    CHECK(c, t.ndims == 2 && t.dims[0] == 2 && t.dims[1] == 3 && t.count == 6);
    CHECK(c, !strcmp(t.name, "X") && same_floats(t.data, vals6, 6));
    keel_onnx_tensor_free(&t);
    CHECK(c, t.data == NULL && t.count == 0);

    /* Packed dims (a second packed run and an unpacked one append, in order). */
    p.n = 0;
    pbuf dims = {{0}, 0};
    put_varint(&dims, 1);
    put_varint(&dims, 2);
    put_msg_field(&p, 1, &dims);
    put_int_field(&p, 1, 1);
    dims.n = 0;
    put_varint(&dims, 3);
    put_msg_field(&p, 1, &dims);
    put_int_field(&p, 2, KEEL_ONNX_FLOAT);
    put_raw_floats(&p, vals6, 6);
    CHECK(c, parse_tensor_exact(p.b, p.n, &t) == KEEL_OK);
    CHECK(c, t.ndims == 4 && t.dims[0] == 1 && t.dims[1] == 2 && t.dims[2] == 1 && t.dims[3] == 3);
    CHECK(c, t.count == 6 && same_floats(t.data, vals6, 6));
    keel_onnx_tensor_free(&t);

    /* float_data, packed in two runs. */
    p.n = 0;
    put_int_field(&p, 1, 6);
    put_int_field(&p, 2, KEEL_ONNX_FLOAT);
    pbuf fd = {{0}, 0};
    for (int i = 0; i < 4; i++)
        put_float(&fd, vals6[i]);
    put_msg_field(&p, 4, &fd);
    fd.n = 0;
    for (int i = 4; i < 6; i++)
        put_float(&fd, vals6[i]);
    put_unknown_fields(&p);
    put_msg_field(&p, 4, &fd);
    CHECK(c, parse_tensor_exact(p.b, p.n, &t) == KEEL_OK);
    CHECK(c, t.count == 6 && same_floats(t.data, vals6, 6));
    keel_onnx_tensor_free(&t);

    /* float_data unpacked (one fixed32 per field), mixed with a packed run. */
    p.n = 0;
    put_int_field(&p, 1, 6);
    put_int_field(&p, 2, KEEL_ONNX_FLOAT);
    for (int i = 0; i < 3; i++) {
        put_key(&p, 4, KEEL_PB_FIXED32);
        put_float(&p, vals6[i]);
    }
    fd.n = 0;
    for (int i = 3; i < 6; i++)
        put_float(&fd, vals6[i]);
    put_msg_field(&p, 4, &fd);
    CHECK(c, parse_tensor_exact(p.b, p.n, &t) == KEEL_OK);
    CHECK(c, t.count == 6 && same_floats(t.data, vals6, 6));
    keel_onnx_tensor_free(&t);

    /* raw_data wins over float_data. */
    p.n = 0;
    put_int_field(&p, 1, 2);
    put_int_field(&p, 2, KEEL_ONNX_FLOAT);
    put_key(&p, 4, KEEL_PB_FIXED32);
    put_float(&p, 99.0f);
    put_raw_floats(&p, vals6, 2);
    CHECK(c, parse_tensor_exact(p.b, p.n, &t) == KEEL_OK);
    CHECK(c, t.count == 2 && same_floats(t.data, vals6, 2));
    keel_onnx_tensor_free(&t);

    /* A scalar (no dims): one value. */
    p.n = 0;
    put_int_field(&p, 2, KEEL_ONNX_FLOAT);
    put_raw_floats(&p, vals6 + 2, 1);
    CHECK(c, parse_tensor_exact(p.b, p.n, &t) == KEEL_OK);
    CHECK(c, t.ndims == 0 && t.count == 1 && t.data && t.data[0] == 3.25f);
    keel_onnx_tensor_free(&t);

    /* An empty tensor (a dim of 0) needs no data. */
    p.n = 0;
    put_int_field(&p, 1, 4);
    put_int_field(&p, 1, 0);
    put_int_field(&p, 2, KEEL_ONNX_FLOAT);
    CHECK(c, parse_tensor_exact(p.b, p.n, &t) == KEEL_OK);
    CHECK(c, t.ndims == 2 && t.count == 0 && t.data == NULL);
    keel_onnx_tensor_free(&t);
}

/* Parse must fail with `want`; the tensor is left empty. */
static void expect_tensor_error(counts *c, const pbuf *p, keel_status want, const char *msg_part)
{
    tool_clear_error();
    keel_onnx_tensor t;
    keel_status st = parse_tensor_exact(p->b, p->n, &t);
    CHECK(c, st == want);
    CHECK(c, t.data == NULL);
    if (msg_part && !strstr(tool_last_error(), msg_part)) {
        c->failed++;
        fprintf(stderr, "FAIL: error message '%s' lacks '%s'\n", tool_last_error(), msg_part);
    }
}

static void test_tensor_errors(counts *c)
{
    pbuf p = {{0}, 0};
    /* A negative dim (a 10-byte varint). */
    put_int_field(&p, 1, -3);
    put_int_field(&p, 2, KEEL_ONNX_FLOAT);
    expect_tensor_error(c, &p, KEEL_EFORMAT, "negative");

    /* raw_data of the wrong size. */
    p.n = 0;
    put_int_field(&p, 1, 3);
    put_int_field(&p, 2, KEEL_ONNX_FLOAT);
    put_raw_floats(&p, vals6, 2);
    expect_tensor_error(c, &p, KEEL_EFORMAT, "raw_data");
    p.n = 0;
    put_int_field(&p, 1, 1);
    put_int_field(&p, 2, KEEL_ONNX_FLOAT);
    put_len_field(&p, 9, "abcde", 5);
    expect_tensor_error(c, &p, KEEL_EFORMAT, "raw_data");

    /* No data at all, and too little float_data. */
    p.n = 0;
    put_int_field(&p, 1, 3);
    put_int_field(&p, 2, KEEL_ONNX_FLOAT);
    expect_tensor_error(c, &p, KEEL_EFORMAT, "no data");
    put_key(&p, 4, KEEL_PB_FIXED32);
    put_float(&p, 1.0f);
    expect_tensor_error(c, &p, KEEL_EFORMAT, "float_data");

    /* Packed float_data not made of whole floats. */
    p.n = 0;
    put_int_field(&p, 1, 1);
    put_int_field(&p, 2, KEEL_ONNX_FLOAT);
    put_len_field(&p, 4, "abcdef", 6);
    expect_tensor_error(c, &p, KEEL_EFORMAT, "multiple of 4");

    /* No data_type; another data type. */
    p.n = 0;
    put_int_field(&p, 1, 1);
    put_raw_floats(&p, vals6, 1);
    expect_tensor_error(c, &p, KEEL_EFORMAT, "data_type");
    p.n = 0;
    put_int_field(&p, 1, 1);
    put_int_field(&p, 2, KEEL_ONNX_DOUBLE);
    put_len_field(&p, 9, "12345678", 8);
    expect_tensor_error(c, &p, KEEL_EUNSUPPORTED, "DOUBLE");

    /* Sizes whose bytes overflow; too many dims. */
    p.n = 0;
    put_int_field(&p, 1, 1ll << 40);
    put_int_field(&p, 1, 1ll << 40);
    put_int_field(&p, 2, KEEL_ONNX_FLOAT);
    expect_tensor_error(c, &p, KEEL_EOVERFLOW, NULL);
    p.n = 0;
    for (int i = 0; i <= KEEL_ONNX_MAX_DIMS; i++)
        put_int_field(&p, 1, 1);
    put_int_field(&p, 2, KEEL_ONNX_FLOAT);
    expect_tensor_error(c, &p, KEEL_EUNSUPPORTED, "dims");

    /* A bogus wire type after valid fields; a known field with the wrong wire type. */
    p.n = 0;
    put_int_field(&p, 1, 1);
    put_int_field(&p, 2, KEEL_ONNX_FLOAT);
    put_raw_floats(&p, vals6, 1);
    put_byte(&p, 0x0e); /* field 1, wire type 6 */
    expect_tensor_error(c, &p, KEEL_EFORMAT, "wire type 6");
    p.n = 0;
    put_key(&p, 1, KEEL_PB_FIXED32);
    put_fixed32(&p, 1);
    put_int_field(&p, 2, KEEL_ONNX_FLOAT);
    expect_tensor_error(c, &p, KEEL_EFORMAT, "dims");
    p.n = 0;
    put_key(&p, 2, KEEL_PB_LEN);
    put_varint(&p, 0);
    expect_tensor_error(c, &p, KEEL_EFORMAT, "data_type");

    /* Packed dims whose last varint is cut inside the run. */
    p.n = 0;
    put_key(&p, 1, KEEL_PB_LEN);
    put_varint(&p, 2);
    put_byte(&p, 0x03);
    put_byte(&p, 0x80);
    put_int_field(&p, 2, KEEL_ONNX_FLOAT);
    expect_tensor_error(c, &p, KEEL_EFORMAT, "varint");

    /* External data and segments are refused. */
    p.n = 0;
    put_int_field(&p, 1, 1);
    put_int_field(&p, 2, KEEL_ONNX_FLOAT);
    put_int_field(&p, 14, 1);
    expect_tensor_error(c, &p, KEEL_EUNSUPPORTED, "external");
    p.n = 0;
    put_len_field(&p, 3, "", 0);
    expect_tensor_error(c, &p, KEEL_EUNSUPPORTED, "segment");
}

/* ---- ModelProto ------------------------------------------------------------------------------ */

typedef struct model_spec {
    const char *op_type;
    int n_nodes;
    int with_opset;
    const char *opset_domain;
    int64_t opset;
    int with_axis;
    int64_t axis;
    int with_epsilon;
    float epsilon;
    int axis_as_float; /* write axis with type FLOAT */
} model_spec;

static void build_model(pbuf *model, const model_spec *s)
{
    pbuf attr_axis = {{0}, 0}, attr_eps = {{0}, 0}, node = {{0}, 0}, graph = {{0}, 0}, vi = {{0}, 0},
         opset = {{0}, 0};
    static const char *const ins[] = {"X", "W", ""}; /* B left out: an optional input as "" */
    static const char *const outs[] = {"Y", "", "InvStdDev"};
    for (int i = 0; i < 3; i++)
        put_str_field(&node, 1, ins[i]);
    for (int i = 0; i < 3; i++)
        put_str_field(&node, 2, outs[i]);
    put_str_field(&node, 3, "node0");
    put_str_field(&node, 4, s->op_type);
    if (s->with_axis) {
        put_str_field(&attr_axis, 1, "axis");
        if (s->axis_as_float) {
            put_key(&attr_axis, 2, KEEL_PB_FIXED32);
            put_float(&attr_axis, 1.0f);
            put_int_field(&attr_axis, 20, KEEL_ONNX_ATTR_FLOAT);
        } else {
            put_int_field(&attr_axis, 3, s->axis); /* negative: 10 bytes */
            put_int_field(&attr_axis, 20, KEEL_ONNX_ATTR_INT);
        }
        put_msg_field(&node, 5, &attr_axis);
    }
    if (s->with_epsilon) {
        put_str_field(&attr_eps, 1, "epsilon");
        put_key(&attr_eps, 2, KEEL_PB_FIXED32);
        put_float(&attr_eps, s->epsilon);
        put_int_field(&attr_eps, 20, KEEL_ONNX_ATTR_FLOAT);
        put_msg_field(&node, 5, &attr_eps);
    }
    put_unknown_fields(&node);
    for (int i = 0; i < s->n_nodes; i++)
        put_msg_field(&graph, 1, &node);
    put_str_field(&graph, 2, "g");
    const char *gin[] = {"W", "X"}; /* graph order differs from the node's */
    for (int i = 0; i < 2; i++) {
        vi.n = 0;
        put_str_field(&vi, 1, gin[i]);
        put_str_field(&vi, 2, "\x0a\x02\x08\x01"); /* a type, skipped */
        put_msg_field(&graph, 11, &vi);
    }
    vi.n = 0;
    put_str_field(&vi, 1, "InvStdDev");
    put_msg_field(&graph, 12, &vi);
    vi.n = 0;
    put_str_field(&vi, 1, "Y");
    put_msg_field(&graph, 12, &vi);

    model->n = 0;
    put_int_field(model, 1, 8);
    put_str_field(model, 2, "test");
    put_msg_field(model, 7, &graph);
    if (s->with_opset) {
        put_str_field(&opset, 1, s->opset_domain);
        put_int_field(&opset, 2, s->opset);
        put_msg_field(model, 8, &opset);
    }
    put_unknown_fields(model);
}

static void test_model_built(counts *c)
{
    keel_onnx_model *m = malloc(sizeof *m);
    if (!m) {
        c->failed++;
        return;
    }
    pbuf p;
    model_spec s = {"LayerNormalization", 1, 1, "", 17, 1, -1, 1, 1e-3f, 0};
    build_model(&p, &s);
    CHECK(c, parse_model_exact(p.b, p.n, m) == KEEL_OK);
    CHECK(c, !strcmp(m->op_type, "LayerNormalization") && m->opset == 17 && m->domain[0] == '\0');
    CHECK(c, m->n_inputs == 3 && !strcmp(m->inputs[1], "W") && m->inputs[2][0] == '\0');
    CHECK(c, m->n_outputs == 3 && m->outputs[1][0] == '\0');
    CHECK(c, m->n_graph_inputs == 2 && m->n_graph_outputs == 2);
    CHECK(c, keel_onnx_graph_input_index(m, "X") == 1 && keel_onnx_graph_input_index(m, "W") == 0);
    CHECK(c, keel_onnx_graph_input_index(m, "") == -1 && keel_onnx_graph_input_index(m, "B") == -1);
    CHECK(c, keel_onnx_graph_output_index(m, "Y") == 1 && keel_onnx_graph_output_index(m, "InvStdDev") == 0);
    int64_t axis = 0;
    float eps = 0;
    CHECK(c, keel_onnx_attr_int(m, "axis", 5, &axis) == KEEL_OK && axis == -1);
    CHECK(c, keel_onnx_attr_float(m, "epsilon", 5, &eps) == KEEL_OK && eps == 1e-3f);
    CHECK(c, keel_onnx_attr_int(m, "stash_type", 1, &axis) == KEEL_OK && axis == 1);
    CHECK(c, keel_onnx_attr_float(m, "axis", 0, &eps) == KEEL_EFORMAT);

    /* Negative axes down to INT64_MIN survive the 10-byte varint. */
    int64_t axes[] = {-2, -4, INT64_MIN, 0, 3, INT64_MAX};
    for (size_t i = 0; i < sizeof axes / sizeof axes[0]; i++) {
        s.axis = axes[i];
        build_model(&p, &s);
        CHECK(c, parse_model_exact(p.b, p.n, m) == KEEL_OK &&
                     keel_onnx_attr_int(m, "axis", 0, &axis) == KEEL_OK && axis == axes[i]);
    }

    /* Absent attributes: the defaults. */
    s.with_axis = s.with_epsilon = 0;
    build_model(&p, &s);
    CHECK(c, parse_model_exact(p.b, p.n, m) == KEEL_OK && m->n_attrs == 0);
    CHECK(c, keel_onnx_attr_int(m, "axis", -1, &axis) == KEEL_OK && axis == -1);
    CHECK(c, keel_onnx_attr_float(m, "epsilon", 1e-5f, &eps) == KEEL_OK && eps == 1e-5f);

    /* axis written as a FLOAT is refused when read as an INT. */
    s.with_axis = 1;
    s.axis_as_float = 1;
    build_model(&p, &s);
    CHECK(c, parse_model_exact(p.b, p.n, m) == KEEL_OK);
    CHECK(c, keel_onnx_attr_int(m, "axis", -1, &axis) == KEEL_EFORMAT);
    s.axis_as_float = 0;

    /* "ai.onnx" is the default domain too. */
    s.opset_domain = "ai.onnx";
    s.opset = 23;
    build_model(&p, &s);
    CHECK(c, parse_model_exact(p.b, p.n, m) == KEEL_OK && m->opset == 23);

    /* Errors: two nodes, none, no opset for the default domain, no graph. */
    model_spec two = s;
    two.n_nodes = 2;
    build_model(&p, &two);
    CHECK(c, parse_model_exact(p.b, p.n, m) == KEEL_EUNSUPPORTED && strstr(tool_last_error(), "2 nodes"));
    two.n_nodes = 0;
    build_model(&p, &two);
    CHECK(c, parse_model_exact(p.b, p.n, m) == KEEL_EUNSUPPORTED);
    model_spec other = s;
    other.opset_domain = "com.microsoft";
    build_model(&p, &other);
    CHECK(c, parse_model_exact(p.b, p.n, m) == KEEL_EFORMAT && strstr(tool_last_error(), "opset"));
    other.with_opset = 0;
    build_model(&p, &other);
    CHECK(c, parse_model_exact(p.b, p.n, m) == KEEL_EFORMAT && strstr(tool_last_error(), "opset"));
    p.n = 0;
    put_int_field(&p, 1, 8);
    CHECK(c, parse_model_exact(p.b, p.n, m) == KEEL_EFORMAT && strstr(tool_last_error(), "graph"));
    CHECK(c, parse_model_exact(NULL, 0, m) == KEEL_EFORMAT);

    /* A bogus wire type deep inside: the message says where. */
    build_model(&p, &s);
    size_t n = p.n;
    p.b[n] = 0x0f; /* wire type 7 appended to the model */
    CHECK(c, parse_model_exact(p.b, n + 1, m) == KEEL_EFORMAT && strstr(tool_last_error(), "wire type 7"));
    free(m);
}

/* ---- the field tables: every message through the one loop ------------------------------------ */

/* Where extra fields go: the message at that level of a minimal one-node model, or a tensor. */
enum { AT_MODEL, AT_OPSET, AT_GRAPH, AT_NODE, AT_ATTR, AT_VALUE_INFO, AT_TENSOR, N_LEVELS };

/* What an error inside each level is prefixed with (onnx_pb.c: pb_read_nested). */
static const char *const level_context[N_LEVELS] = {
    "", "opset_import: ", "graph: ", "graph: node: ", "graph: node: attribute: ", "graph: input: ",
    ""};

/* A minimal valid model (or tensor, at AT_TENSOR) with `extra` appended to the message at
 * `level`. Every message is followed by more bytes of its parent, so a nested read that went
 * past its payload would read them. */
static void build_with(pbuf *out, int level, const pbuf *extra)
{
    pbuf attr = {{0}, 0}, node = {{0}, 0}, vi = {{0}, 0}, graph = {{0}, 0}, opset = {{0}, 0};
    out->n = 0;
    if (level == AT_TENSOR) {
        put_int_field(out, 1, 1);
        put_int_field(out, 2, KEEL_ONNX_FLOAT);
        put_raw_floats(out, vals6, 1);
        put_raw(out, extra->b, extra->n);
        return;
    }
    put_str_field(&attr, 1, "axis");
    put_int_field(&attr, 3, -1);
    put_int_field(&attr, 20, KEEL_ONNX_ATTR_INT);
    if (level == AT_ATTR)
        put_raw(&attr, extra->b, extra->n);
    put_str_field(&node, 1, "X");
    put_str_field(&node, 2, "Y");
    put_msg_field(&node, 5, &attr);
    put_str_field(&node, 4, "Relu");
    if (level == AT_NODE)
        put_raw(&node, extra->b, extra->n);
    put_msg_field(&graph, 1, &node);
    put_str_field(&vi, 1, "X");
    if (level == AT_VALUE_INFO)
        put_raw(&vi, extra->b, extra->n);
    put_msg_field(&graph, 11, &vi);
    vi.n = 0;
    put_str_field(&vi, 1, "Y");
    put_msg_field(&graph, 12, &vi);
    if (level == AT_GRAPH)
        put_raw(&graph, extra->b, extra->n);
    put_str_field(&opset, 1, "");
    put_int_field(&opset, 2, 17);
    if (level == AT_OPSET)
        put_raw(&opset, extra->b, extra->n);
    put_msg_field(out, 7, &graph);
    put_msg_field(out, 8, &opset);
    if (level == AT_MODEL)
        put_raw(out, extra->b, extra->n);
}

/* Parse what build_with made: the status, the message in tool_last_error(). */
static keel_status parse_level(const pbuf *p, int level, keel_onnx_model *m)
{
    if (level != AT_TENSOR)
        return parse_model_exact(p->b, p->n, m);
    keel_onnx_tensor t;
    keel_status st = parse_tensor_exact(p->b, p->n, &t);
    int ok = st != KEEL_OK || (t.count == 1 && t.data && t.data[0] == vals6[0]);
    int empty_on_error = st == KEEL_OK || t.data == NULL;
    keel_onnx_tensor_free(&t);
    return ok && empty_on_error ? st : KEEL_EINVAL; /* EINVAL: never returned by the reader */
}

/* A field of wire type `wire` with a valid value of that type (a group: empty, closed). */
static void put_any(pbuf *p, uint32_t field, int wire)
{
    put_key(p, field, wire);
    if (wire == KEEL_PB_VARINT)
        put_varint(p, 1);
    else if (wire == KEEL_PB_FIXED64)
        put_raw(p, "\1\0\0\0\0\0\0\0", 8);
    else if (wire == KEEL_PB_LEN)
        put_varint(p, 0);
    else if (wire == KEEL_PB_FIXED32)
        put_raw(p, "\1\0\0\0", 4);
    else if (wire == KEEL_PB_SGROUP)
        put_key(p, field, KEEL_PB_EGROUP);
}

/* The fields each level reads, with the wire type onnx.proto gives them. */
static const struct known_field {
    int level;
    uint32_t field;
    int wire;   /* -1: refused whatever its wire type */
    int packed; /* a length-delimited (packed) run is accepted too */
    const char *name;
} known_fields[] = {
    {AT_MODEL, 7, KEEL_PB_LEN, 0, "graph"},
    {AT_MODEL, 8, KEEL_PB_LEN, 0, "opset_import"},
    {AT_OPSET, 1, KEEL_PB_LEN, 0, "domain"},
    {AT_OPSET, 2, KEEL_PB_VARINT, 0, "version"},
    {AT_GRAPH, 1, KEEL_PB_LEN, 0, "node"},
    {AT_GRAPH, 5, KEEL_PB_LEN, 0, "initializer"},
    {AT_GRAPH, 11, KEEL_PB_LEN, 0, "input"},
    {AT_GRAPH, 12, KEEL_PB_LEN, 0, "output"},
    {AT_NODE, 1, KEEL_PB_LEN, 0, "inputs"},
    {AT_NODE, 2, KEEL_PB_LEN, 0, "outputs"},
    {AT_NODE, 4, KEEL_PB_LEN, 0, "op_type"},
    {AT_NODE, 5, KEEL_PB_LEN, 0, "attribute"},
    {AT_NODE, 7, KEEL_PB_LEN, 0, "domain"},
    {AT_ATTR, 1, KEEL_PB_LEN, 0, "name"},
    {AT_ATTR, 2, KEEL_PB_FIXED32, 0, "f"},
    {AT_ATTR, 3, KEEL_PB_VARINT, 0, "i"},
    {AT_ATTR, 20, KEEL_PB_VARINT, 0, "type"},
    {AT_ATTR, 21, -1, 0, "function attribute"},
    {AT_VALUE_INFO, 1, KEEL_PB_LEN, 0, "name"},
    {AT_TENSOR, 1, KEEL_PB_VARINT, 1, "dims"},
    {AT_TENSOR, 2, KEEL_PB_VARINT, 0, "data_type"},
    {AT_TENSOR, 3, -1, 0, "segment"},
    {AT_TENSOR, 4, KEEL_PB_FIXED32, 1, "float_data"},
    {AT_TENSOR, 8, KEEL_PB_LEN, 0, "name"},
    {AT_TENSOR, 9, KEEL_PB_LEN, 0, "raw_data"},
    {AT_TENSOR, 14, KEEL_PB_VARINT, 0, "data_location"},
};

static int starts_with(const char *s, const char *prefix)
{
    return !strncmp(s, prefix, strlen(prefix));
}

static void report(counts *c, int ok, const char *what, int level, uint32_t field, int wire,
                   const char *msg)
{
    CHECK(c, ok);
    if (!ok)
        fprintf(stderr, "  (%s: level %d, field %u, wire type %d: '%s')\n", what, level, field,
                wire, msg);
}

/* A known field with any other wire type than its own is KEEL_EFORMAT naming the field, the
 * wire type and (by its prefix) the message it is in; a refused field is KEEL_EUNSUPPORTED
 * whatever its wire type. */
static void test_table_wire_types(counts *c, keel_onnx_model *m)
{
    static const char *const wire_names[] = {"varint",      "fixed64",   "length-delimited",
                                             "start-group", "end-group", "fixed32"};
    for (size_t i = 0; i < sizeof known_fields / sizeof known_fields[0]; i++) {
        const struct known_field *k = &known_fields[i];
        for (int wire = KEEL_PB_VARINT; wire <= KEEL_PB_FIXED32; wire++) {
            if (wire == k->wire || (k->packed && wire == KEEL_PB_LEN))
                continue;
            pbuf extra = {{0}, 0}, p;
            char want[128];
            tool_clear_error();
            put_any(&extra, k->field, wire);
            build_with(&p, k->level, &extra);
            keel_status st = parse_level(&p, k->level, m);
            if (k->wire < 0) {
                report(c, st == KEEL_EUNSUPPORTED && strstr(tool_last_error(), k->name), "refused",
                       k->level, k->field, wire, tool_last_error());
                continue;
            }
            snprintf(want, sizeof want, "%s%s (field %u) before byte ", level_context[k->level],
                     k->name, k->field);
            int ok = st == KEEL_EFORMAT && starts_with(tool_last_error(), want) &&
                     strstr(tool_last_error(), wire_names[wire]) != NULL;
            report(c, ok, "wrong wire type", k->level, k->field, wire, tool_last_error());
        }
    }
}

/* Unknown fields of every wire type (a negative varint, a nested group, the largest field
 * number) are skipped at every level, and change nothing read. */
static void test_table_unknown_fields(counts *c, keel_onnx_model *m)
{
    pbuf extra = {{0}, 0}, p;
    put_int_field(&extra, 100, -1);
    put_any(&extra, 101, KEEL_PB_FIXED64);
    put_str_field(&extra, 102, "skipped");
    put_any(&extra, 103, KEEL_PB_FIXED32);
    put_key(&extra, 104, KEEL_PB_SGROUP);
    put_any(&extra, 1, KEEL_PB_SGROUP); /* field 1 inside a group is not the message's field 1 */
    put_int_field(&extra, 2, 5);
    put_key(&extra, 104, KEEL_PB_EGROUP);
    put_any(&extra, (1u << 29) - 1, KEEL_PB_LEN);
    for (int level = 0; level < N_LEVELS; level++) {
        tool_clear_error();
        build_with(&p, level, &extra);
        keel_status st = parse_level(&p, level, m);
        int ok = st == KEEL_OK;
        if (ok && level != AT_TENSOR) {
            int64_t axis = 0;
            ok = !strcmp(m->op_type, "Relu") && m->opset == 17 && m->n_inputs == 1 &&
                 m->n_outputs == 1 && m->n_attrs == 1 && m->n_graph_inputs == 1 &&
                 m->n_graph_outputs == 1 && !strcmp(m->graph_inputs[0], "X") &&
                 keel_onnx_attr_int(m, "axis", 0, &axis) == KEEL_OK && axis == -1;
        }
        report(c, ok, "unknown fields", level, 0, -1, tool_last_error());
    }
}

/* A message cut inside: a key, or a value of each wire type, runs past the end of its payload
 * (the parent's bytes follow). KEEL_EFORMAT, prefixed with where it happened. */
static void test_table_truncated(counts *c, keel_onnx_model *m)
{
    static const struct {
        uint8_t bytes[6];
        size_t n;
    } cuts[] = {
        {{0x80}, 1},                   /* a key's varint cut */
        {{0xa0, 0x06}, 2},             /* field 100, varint: no value */
        {{0xa0, 0x06, 0xff}, 3},       /* field 100, varint cut */
        {{0xa1, 0x06, 1, 2, 3, 4}, 6}, /* field 100, fixed64: 4 of 8 bytes */
        {{0xa2, 0x06, 0x05, 'a'}, 4},  /* field 100, length 5: 1 byte left */
        {{0xa2, 0x06}, 2},             /* field 100, length-delimited: no length */
        {{0xa5, 0x06, 1, 2}, 4},       /* field 100, fixed32: 2 of 4 bytes */
        {{0xa3, 0x06, 0x08, 0x01}, 4}, /* field 100, a group never closed */
        {{0x0e}, 1},                   /* wire type 6 */
    };
    for (int level = 0; level < N_LEVELS; level++) {
        for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
            pbuf extra = {{0}, 0}, p;
            tool_clear_error();
            put_raw(&extra, cuts[i].bytes, cuts[i].n);
            build_with(&p, level, &extra);
            keel_status st = parse_level(&p, level, m);
            const char *msg = tool_last_error();
            report(c, st == KEEL_EFORMAT && msg[0] && starts_with(msg, level_context[level]), "truncated",
                   level, 100, (int)i, msg);
        }
    }
}

/* The limits and checks each message makes once read, with their messages. */
static void test_table_limits(counts *c, keel_onnx_model *m)
{
    static const struct {
        int level;
        const char *fields; /* what is appended, as "F:S" string fields separated by ',' */
        int repeat;         /* times the fields are appended */
        keel_status want;
        const char *msg;
    } cases[] = {
        {AT_NODE, "1:x", 8, KEEL_EUNSUPPORTED, "graph: node: more than 8 inputs"},
        {AT_NODE, "2:y", 8, KEEL_EUNSUPPORTED, "graph: node: more than 8 outputs"},
        {AT_NODE, "1:", 7, KEEL_OK, NULL}, /* 8 inputs, optional ones as "" */
        {AT_NODE, "4:", 1, KEEL_EFORMAT, "graph: node: node without op_type"},
        {AT_GRAPH, "11:", 8, KEEL_EUNSUPPORTED, "graph: more than 8 graph input"},
        {AT_GRAPH, "12:", 8, KEEL_EUNSUPPORTED, "graph: more than 8 graph output"},
        {AT_GRAPH, "1:", 1, KEEL_EUNSUPPORTED, "graph: graph has 2 nodes (exactly 1 supported)"},
        {AT_MODEL, "7:", 1, KEEL_EUNSUPPORTED, "more than one graph field"},
        {AT_ATTR, "1:", 1, KEEL_EFORMAT, "graph: node: attribute: attribute without a name"},
        {AT_NODE, "7:com.example", 1, KEEL_OK, NULL}, /* the node's domain is kept, not checked */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pbuf extra = {{0}, 0}, p;
        char spec[64];
        tool_clear_error();
        for (int r = 0; r < cases[i].repeat; r++) {
            snprintf(spec, sizeof spec, "%s", cases[i].fields);
            const char *value = strchr(spec, ':') + 1;
            put_str_field(&extra, (uint32_t)atoi(spec), value);
        }
        build_with(&p, cases[i].level, &extra);
        keel_status st = parse_level(&p, cases[i].level, m);
        int ok = st == cases[i].want && (!cases[i].msg || !strcmp(tool_last_error(), cases[i].msg));
        report(c, ok, "limit", cases[i].level, (uint32_t)i, -1, tool_last_error());
    }

    /* Attributes: 16 fit, a 17th is refused; a name given twice is refused. */
    pbuf extra = {{0}, 0}, attr, p;
    tool_clear_error();
    for (int i = 1; i < KEEL_ONNX_MAX_ATTRS; i++) {
        char name[16];
        snprintf(name, sizeof name, "a%d", i);
        attr.n = 0;
        put_str_field(&attr, 1, name);
        put_msg_field(&extra, 5, &attr);
    }
    build_with(&p, AT_NODE, &extra);
    CHECK(c, parse_model_exact(p.b, p.n, m) == KEEL_OK &&
                 m->n_attrs == KEEL_ONNX_MAX_ATTRS);
    put_msg_field(&extra, 5, &attr);
    build_with(&p, AT_NODE, &extra);
    CHECK(c, parse_model_exact(p.b, p.n, m) == KEEL_EUNSUPPORTED &&
                 !strcmp(tool_last_error(), "graph: node: more than 16 attributes"));
    extra.n = 0;
    put_msg_field(&extra, 5, &attr);
    put_msg_field(&extra, 5, &attr);
    build_with(&p, AT_NODE, &extra);
    CHECK(c, parse_model_exact(p.b, p.n, m) == KEEL_EFORMAT &&
                 !strcmp(tool_last_error(), "graph: node: attribute a15 given twice"));

    /* opset_import: the default domain twice, or with a version below 1. */
    pbuf opset = {{0}, 0};
    extra.n = 0;
    put_str_field(&opset, 1, "ai.onnx");
    put_int_field(&opset, 2, 18);
    put_msg_field(&extra, 8, &opset);
    build_with(&p, AT_MODEL, &extra);
    CHECK(c, parse_model_exact(p.b, p.n, m) == KEEL_EFORMAT &&
                 !strcmp(tool_last_error(), "opset_import: the default domain is imported twice"));
    extra.n = 0;
    put_int_field(&extra, 2, 0);
    build_with(&p, AT_OPSET, &extra);
    CHECK(c, parse_model_exact(p.b, p.n, m) == KEEL_EFORMAT &&
                 !strcmp(tool_last_error(), "opset_import: the default domain's opset version is 0"));

    /* A name that does not fit, and one holding a NUL byte. */
    char long_name[KEEL_ONNX_NAME_MAX + 1];
    memset(long_name, 'n', KEEL_ONNX_NAME_MAX);
    long_name[KEEL_ONNX_NAME_MAX] = '\0';
    extra.n = 0;
    put_str_field(&extra, 4, long_name);
    build_with(&p, AT_NODE, &extra);
    CHECK(c, parse_model_exact(p.b, p.n, m) == KEEL_EFORMAT &&
                 !strcmp(tool_last_error(), "graph: node: op_type is 128 bytes long (at most 127 supported)"));
    extra.n = 0;
    put_len_field(&extra, 1, "a\0b", 3);
    build_with(&p, AT_VALUE_INFO, &extra);
    CHECK(c, parse_model_exact(p.b, p.n, m) == KEEL_EFORMAT &&
                 !strcmp(tool_last_error(), "graph: input: name holds a NUL byte"));
}

static void test_tables(counts *c)
{
    keel_onnx_model *m = malloc(sizeof *m);
    if (!m) {
        c->failed++;
        return;
    }
    /* The baseline: every level's minimal message parses. */
    pbuf none = {{0}, 0}, p;
    for (int level = 0; level < N_LEVELS; level++) {
        tool_clear_error();
        build_with(&p, level, &none);
        report(c, parse_level(&p, level, m) == KEEL_OK, "minimal", level, 0, -1,
               tool_last_error());
    }
    test_table_wire_types(c, m);
    test_table_unknown_fields(c, m);
    test_table_truncated(c, m);
    test_table_limits(c, m);
    free(m);
}

/* ---- the real files of tests/data/onnx ------------------------------------------------------- */

static uint8_t *read_whole(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    uint8_t *buf = malloc(1 << 20);
    size_t got = buf ? fread(buf, 1, 1 << 20, f) : 0;
    fclose(f);
    *n = got;
    return buf;
}

static void test_real_files(counts *c)
{
    keel_onnx_model *m = malloc(sizeof *m);
    keel_onnx_tensor t;
    int64_t axis;
    float eps;
    if (!m) {
        c->failed++;
        return;
    }
    const char *ln = DATA_DIR "test_layer_normalization_3d_axis_negative_2_epsilon/";
    char path[512];
    snprintf(path, sizeof path, "%smodel.onnx", ln);
    CHECK(c, keel_onnx_model_load(path, m) == KEEL_OK);
    CHECK(c, !strcmp(m->op_type, "LayerNormalization") && m->opset == 17);
    CHECK(c, keel_onnx_attr_int(m, "axis", 0, &axis) == KEEL_OK && axis == -2);
    CHECK(c, keel_onnx_attr_float(m, "epsilon", 0, &eps) == KEEL_OK && eps == 0.1f);
    CHECK(c, m->n_inputs == 3 && m->n_outputs == 3 && m->n_graph_inputs == 3 && m->n_graph_outputs == 3);
    CHECK(c, !strcmp(m->outputs[2], "InvStdDev") && keel_onnx_graph_output_index(m, "InvStdDev") == 2);

    snprintf(path, sizeof path, "%stest_data_set_0/input_0.pb", ln);
    CHECK(c, keel_onnx_tensor_load(path, &t) == KEEL_OK);
    CHECK(c, t.ndims == 3 && t.dims[0] == 2 && t.dims[1] == 3 && t.dims[2] == 5 && t.count == 30);
    CHECK(c, !strcmp(t.name, "X") && t.data && isfinite(t.data[29]));
    keel_onnx_tensor_free(&t);
    snprintf(path, sizeof path, "%stest_data_set_0/output_1.pb", ln);
    CHECK(c, keel_onnx_tensor_load(path, &t) == KEEL_OK);
    CHECK(c, t.ndims == 3 && t.dims[0] == 2 && t.dims[1] == 1 && t.dims[2] == 1 && t.count == 2);
    keel_onnx_tensor_free(&t);

    CHECK(c, keel_onnx_model_load(DATA_DIR "test_layer_normalization_default_axis/model.onnx", m) == KEEL_OK);
    CHECK(c, keel_onnx_model_attr(m, "axis") == NULL && keel_onnx_model_attr(m, "epsilon") == NULL);
    CHECK(c, keel_onnx_model_load(DATA_DIR "test_rms_normalization_4d_axis_negative_3/model.onnx", m) == KEEL_OK);
    CHECK(c, !strcmp(m->op_type, "RMSNormalization") && m->opset == 23 && m->n_outputs == 1);
    CHECK(c, keel_onnx_attr_int(m, "axis", 0, &axis) == KEEL_OK && axis == -3);
    CHECK(c, keel_onnx_model_load(DATA_DIR "test_batchnorm_epsilon/model.onnx", m) == KEEL_OK);
    CHECK(c, !strcmp(m->op_type, "BatchNormalization") && m->n_inputs == 5);
    CHECK(c, keel_onnx_model_attr(m, "epsilon") != NULL);

    CHECK(c, keel_onnx_model_load(DATA_DIR "no_such_folder/model.onnx", m) == KEEL_EIO);
    CHECK(c, keel_onnx_tensor_load(DATA_DIR "no_such.pb", &t) == KEEL_EIO && t.data == NULL);
    free(m);
}

/* Every proper prefix of each file is an error, and reading it stays inside the prefix. */
static void test_truncations(counts *c)
{
    static const char *const folders[] = {"test_layer_normalization_3d_axis_negative_2_epsilon",
                                          "test_layer_normalization_default_axis",
                                          "test_rms_normalization_4d_axis_negative_3",
                                          "test_batchnorm_epsilon"};
    static const char *const files[] = {"model.onnx", "test_data_set_0/input_0.pb",
                                        "test_data_set_0/input_1.pb", "test_data_set_0/input_2.pb",
                                        "test_data_set_0/output_0.pb", "test_data_set_0/output_1.pb",
                                        "test_data_set_0/output_2.pb"};
    keel_onnx_model *m = malloc(sizeof *m);
    if (!m) {
        c->failed++;
        return;
    }
    int files_read = 0;
    for (size_t f = 0; f < sizeof folders / sizeof folders[0]; f++) {
        for (size_t k = 0; k < sizeof files / sizeof files[0]; k++) {
            char path[512];
            size_t n;
            snprintf(path, sizeof path, "%s%s/%s", DATA_DIR, folders[f], files[k]);
            uint8_t *whole = read_whole(path, &n);
            if (!whole)
                continue; /* not every folder has output_1.pb */
            files_read++;
            int is_model = k == 0;
            keel_onnx_tensor t;
            keel_status full = is_model ? parse_model_exact(whole, n, m)
                                        : parse_tensor_exact(whole, n, &t);
            CHECK(c, full == KEEL_OK);
            if (!is_model)
                keel_onnx_tensor_free(&t);
            int all_fail = 1;
            for (size_t len = 0; len < n; len++) {
                keel_status st = is_model ? parse_model_exact(whole, len, m)
                                          : parse_tensor_exact(whole, len, &t);
                if (st == KEEL_OK) {
                    all_fail = 0;
                    fprintf(stderr, "FAIL: %s cut to %zu of %zu bytes parsed\n", path, len, n);
                    if (!is_model)
                        keel_onnx_tensor_free(&t);
                }
            }
            CHECK(c, all_fail);
            free(whole);
        }
    }
    CHECK(c, files_read >= 20);
    free(m);
}

/* Random byte flips of real files: any result is fine as long as nothing is read out of
 * bounds (the sanitizer build) and an accepted tensor is self-consistent. */
static void test_mutations(counts *c)
{
    static const char *const paths[] = {
        DATA_DIR "test_layer_normalization_4d_axis_negative_3/model.onnx",
        DATA_DIR "test_layer_normalization_4d_axis_negative_3/test_data_set_0/output_2.pb",
        DATA_DIR "test_rms_normalization_default_axis/test_data_set_0/input_1.pb"};
    uint32_t rng = 12345;
    keel_onnx_model *m = malloc(sizeof *m);
    int consistent = 1, runs = 0;
    for (size_t f = 0; m && f < sizeof paths / sizeof paths[0]; f++) {
        size_t n;
        uint8_t *whole = read_whole(paths[f], &n);
        uint8_t *copy = whole && n ? malloc(n) : NULL;
        for (int it = 0; copy && it < 3000; it++) {
            memcpy(copy, whole, n);
            int flips = 1 + it % 3;
            for (int j = 0; j < flips; j++) {
                rng = rng * 1664525u + 1013904223u;
                size_t at = (rng >> 8) % n;
                rng = rng * 1664525u + 1013904223u;
                copy[at] = (uint8_t)(rng >> 24);
            }
            runs++;
            keel_onnx_tensor t;
            if (strstr(paths[f], "model.onnx")) {
                keel_onnx_model_parse(copy, n, m);
            } else if (keel_onnx_tensor_parse(copy, n, &t) == KEEL_OK) {
                size_t prod = 1;
                for (int d = 0; d < t.ndims; d++)
                    prod *= (size_t)t.dims[d];
                if (prod != t.count || (t.count > 0) != (t.data != NULL))
                    consistent = 0;
                keel_onnx_tensor_free(&t);
            }
        }
        free(copy);
        free(whole);
    }
    CHECK(c, runs == 9000);
    CHECK(c, consistent);
    free(m);
}

/* ---- the command's usage errors -------------------------------------------------------------- */

static void test_usage(counts *c)
{
    char a0[] = "onnx-test", bad_tol[] = "--rtol", bad_val[] = "abc", neg[] = "--atol=-1",
         unknown[] = "--bogus", dir[] = "tests/data/onnx";
    char *no_dirs[] = {a0, NULL};
    char *tol1[] = {a0, bad_tol, bad_val, dir, NULL};
    char *tol2[] = {a0, neg, dir, NULL};
    char *tol3[] = {a0, dir, bad_tol, NULL}; /* --rtol without a value */
    char *unk[] = {a0, unknown, dir, NULL};
    CHECK(c, keel_cmd_onnx_test(1, no_dirs) == 2);
    CHECK(c, keel_cmd_onnx_test(4, tol1) == 2);
    CHECK(c, keel_cmd_onnx_test(3, tol2) == 2);
    CHECK(c, keel_cmd_onnx_test(3, tol3) == 2);
    CHECK(c, keel_cmd_onnx_test(3, unk) == 2);
}

int main(void)
{
    counts c = {0, 0};
    test_varints(&c);
    test_keys(&c);
    test_fixed_and_bytes(&c);
    test_skip(&c);
    test_tensor_layouts(&c);
    test_tensor_errors(&c);
    test_model_built(&c);
    test_tables(&c);
    test_real_files(&c);
    test_truncations(&c);
    test_mutations(&c);
    test_usage(&c);
    printf("%d passed, %d failed\n", c.passed, c.failed);
    return c.failed ? 1 : 0;
}
