/* Fuzz target: the ONNX protobuf reader of `keel onnx-test` (src/cli/onnx_pb.{c,h}) and the
 * test-folder loader around it (src/cli/cmd_onnx_test.c). docs/reliability.md, "Fuzzing".
 *
 * Every input is read four ways:
 *  - the wire format: keys, varints, fixed32/64, length-delimited payloads (read as messages
 *    in turn, nested up to 6 deep) and keel_pb_skip of every field, checking onnx_pb.h's
 *    contract: a read that fails leaves pos where it was, one that succeeds advances pos and
 *    stays within the buffer, a key's field is >= 1 and its wire type 0..5;
 *  - as a TensorProto: on an error the tensor is empty (data NULL); on success ndims is
 *    0..16, every dim >= 0, count is their product, data holds count floats (each is read);
 *  - as a ModelProto: on success every count within its array and every name terminated;
 *    the attribute lookups of cmd_onnx_test.c run on each attribute;
 *  - every error sets a message (tool_last_error), terminated within TOOL_ERROR_CAP.
 * An input that starts with "KEELDIR\n" is a test folder instead: the bytes after it are
 * sections separated by "@@KEEL@@"; the first is model.onnx, each other one starts with a tag
 * byte (bit 7: output, else input; bits 0-2: K; bit 3: test_data_set_1 instead of _0) and
 * becomes that input_K.pb / output_K.pb. The folder is run through `keel onnx-test` in this
 * process (exit status 0 or 1, never 2 or a crash). */
#include "fuzz_common.h" /* first: it sets _POSIX_C_SOURCE */

#include <math.h>
#include <sys/stat.h>

#include "commands.h"
#include "onnx_pb.h"

static int valid_status(keel_status st)
{
    return (int)st >= (int)KEEL_OK && (int)st <= (int)KEEL_EBUSY;
}

/* ---- the wire format --------------------------------------------------------------------------
 */

/* The message after a call that failed: set, and terminated within its capacity. */
static void check_err(const char *who)
{
    const char *msg = tool_last_error();
    FZ_CHECK(msg[0] != '\0', "%s: failed without a message", who);
    FZ_CHECK(memchr(msg, '\0', TOOL_ERROR_CAP) != NULL, "%s: the message is not terminated", who);
}

static void walk(keel_pb_reader *r, int depth)
{
    for (int fields = 0; fields < 4096 && !keel_pb_at_end(r); fields++) {
        const size_t at = r->pos;
        keel_pb_key key;
        tool_clear_error();
        keel_status st = keel_pb_read_key(r, &key);
        FZ_CHECK(valid_status(st), "keel_pb_read_key: status %d", (int)st);
        if (st != KEEL_OK) {
            FZ_CHECK(r->pos == at, "keel_pb_read_key failed and moved pos %zu -> %zu", at, r->pos);
            check_err("keel_pb_read_key");
            /* the other readers at the same place keep the contract too */
            uint64_t v;
            uint32_t v32;
            const uint8_t *d;
            size_t n;
            if (keel_pb_read_varint(r, &v) != KEEL_OK)
                FZ_CHECK(r->pos == at, "keel_pb_read_varint failed and moved pos");
            r->pos = at;
            if (keel_pb_read_fixed32(r, &v32) != KEEL_OK)
                FZ_CHECK(r->pos == at, "keel_pb_read_fixed32 failed and moved pos");
            r->pos = at;
            if (keel_pb_read_bytes(r, &d, &n) != KEEL_OK)
                FZ_CHECK(r->pos == at, "keel_pb_read_bytes failed and moved pos");
            else
                FZ_CHECK(d >= r->buf && n <= r->len && (size_t)(d - r->buf) <= r->len - n,
                         "keel_pb_read_bytes: a payload outside the buffer");
            r->pos = at;
            return;
        }
        FZ_CHECK(key.field >= 1 && key.field < (1u << 29) && key.wire >= 0 && key.wire <= 5,
                 "keel_pb_read_key: field %u, wire %d", key.field, key.wire);
        FZ_CHECK(r->pos > at && r->pos <= r->len, "keel_pb_read_key: pos %zu -> %zu of %zu", at,
                 r->pos, r->len);
        const size_t after_key = r->pos;
        if (key.wire == KEEL_PB_LEN && depth < 6) {
            const uint8_t *d;
            size_t n;
            st = keel_pb_read_bytes(r, &d, &n);
            if (st == KEEL_OK) {
                FZ_CHECK(d >= r->buf && (size_t)(d - r->buf) + n == r->pos && r->pos <= r->len,
                         "keel_pb_read_bytes: payload [%zu, +%zu) and pos %zu",
                         (size_t)(d - r->buf), n, r->pos);
                keel_pb_reader sub = keel_pb_reader_sub(r, d, n);
                walk(&sub, depth + 1);
                r->pos = after_key;
            } else {
                FZ_CHECK(r->pos == after_key, "keel_pb_read_bytes failed and moved pos");
            }
        }
        tool_clear_error();
        st = keel_pb_skip(r, key);
        FZ_CHECK(valid_status(st), "keel_pb_skip: status %d", (int)st);
        if (st != KEEL_OK) {
            FZ_CHECK(r->pos == after_key, "keel_pb_skip failed and moved pos %zu -> %zu", after_key,
                     r->pos);
            check_err("keel_pb_skip");
            return;
        }
        FZ_CHECK(r->pos >= after_key && r->pos <= r->len,
                 "keel_pb_skip: pos %zu -> %zu of %zu (wire %d)", after_key, r->pos, r->len,
                 key.wire);
    }
}

/* ---- TensorProto and ModelProto ---------------------------------------------------------------
 */

static void check_name(const char *s, const char *what)
{
    FZ_CHECK(memchr(s, '\0', KEEL_ONNX_NAME_MAX) != NULL,
             "%s: a name not terminated within its array", what);
}

static void tensor(const uint8_t *data, size_t size)
{
    keel_onnx_tensor t;
    memset(&t, 0x5a, sizeof t);
    tool_clear_error();
    keel_status st = keel_onnx_tensor_parse(data, size, &t);
    FZ_CHECK(valid_status(st), "keel_onnx_tensor_parse: status %d", (int)st);
    if (st != KEEL_OK) {
        FZ_CHECK(t.data == NULL, "keel_onnx_tensor_parse failed and left data");
        check_err("keel_onnx_tensor_parse");
        keel_onnx_tensor_free(&t);
        return;
    }
    check_name(t.name, "tensor");
    FZ_CHECK(t.ndims >= 0 && t.ndims <= KEEL_ONNX_MAX_DIMS, "ndims %d", t.ndims);
    size_t count = 1;
    for (int i = 0; i < t.ndims; i++) {
        FZ_CHECK(t.dims[i] >= 0, "dims[%d] = %lld", i, (long long)t.dims[i]);
        count *= (size_t)t.dims[i];
    }
    FZ_CHECK(count == t.count, "count %zu, the dims make %zu", t.count, count);
    FZ_CHECK((t.data != NULL) == (t.count > 0), "count %zu and data %p", t.count, (void *)t.data);
    uint32_t acc = 0; /* every value read: a short allocation is a sanitizer report */
    for (size_t i = 0; i < t.count; i++) {
        uint32_t u;
        memcpy(&u, &t.data[i], 4);
        acc ^= u;
    }
    (void)acc;
    keel_onnx_tensor_free(&t);
    FZ_CHECK(t.data == NULL, "keel_onnx_tensor_free left data");
}

static keel_onnx_model model_;

static void model(const uint8_t *data, size_t size)
{
    keel_onnx_model *m = &model_;
    memset(m, 0x5a, sizeof *m);
    tool_clear_error();
    keel_status st = keel_onnx_model_parse(data, size, m);
    FZ_CHECK(valid_status(st), "keel_onnx_model_parse: status %d", (int)st);
    if (st != KEEL_OK) {
        check_err("keel_onnx_model_parse");
        return;
    }
    check_name(m->op_type, "op_type");
    check_name(m->domain, "domain");
    FZ_CHECK(m->n_inputs >= 0 && m->n_inputs <= KEEL_ONNX_MAX_IO && m->n_outputs >= 0 &&
                 m->n_outputs <= KEEL_ONNX_MAX_IO && m->n_graph_inputs >= 0 &&
                 m->n_graph_inputs <= KEEL_ONNX_MAX_IO && m->n_graph_outputs >= 0 &&
                 m->n_graph_outputs <= KEEL_ONNX_MAX_IO && m->n_attrs >= 0 &&
                 m->n_attrs <= KEEL_ONNX_MAX_ATTRS,
             "counts %d %d %d %d %d", m->n_inputs, m->n_outputs, m->n_graph_inputs,
             m->n_graph_outputs, m->n_attrs);
    for (int i = 0; i < m->n_inputs; i++) {
        check_name(m->inputs[i], "input");
        int k = keel_onnx_graph_input_index(m, m->inputs[i]);
        FZ_CHECK(k >= -1 && k < m->n_graph_inputs, "graph input index %d", k);
    }
    for (int i = 0; i < m->n_outputs; i++) {
        check_name(m->outputs[i], "output");
        int k = keel_onnx_graph_output_index(m, m->outputs[i]);
        FZ_CHECK(k >= -1 && k < m->n_graph_outputs, "graph output index %d", k);
    }
    for (int i = 0; i < m->n_graph_inputs; i++)
        check_name(m->graph_inputs[i], "graph input");
    for (int i = 0; i < m->n_graph_outputs; i++)
        check_name(m->graph_outputs[i], "graph output");
    for (int i = 0; i < m->n_attrs; i++) {
        check_name(m->attrs[i].name, "attribute");
        FZ_CHECK(keel_onnx_model_attr(m, m->attrs[i].name) != NULL,
                 "attribute %d not found by its name", i);
        int64_t iv;
        float fv;
        tool_clear_error();
        st = keel_onnx_attr_int(m, m->attrs[i].name, 0, &iv);
        FZ_CHECK(st == KEEL_OK || st == KEEL_EFORMAT, "keel_onnx_attr_int: status %d", (int)st);
        if (st)
            check_err("keel_onnx_attr_int");
        tool_clear_error();
        st = keel_onnx_attr_float(m, m->attrs[i].name, 0.0f, &fv);
        FZ_CHECK(st == KEEL_OK || st == KEEL_EFORMAT, "keel_onnx_attr_float: status %d", (int)st);
        if (st)
            check_err("keel_onnx_attr_float");
    }
    FZ_CHECK(keel_onnx_graph_input_index(m, "") == -1, "the empty name was found");
}

/* ---- a test folder ----------------------------------------------------------------------------
 */

static const char DIR_MAGIC[] = "KEELDIR\n";
static const char SEP[] = "@@KEEL@@";

static void clear_folder(const char *dir)
{
    char path[700];
    for (int s = 0; s < 2; s++) {
        for (int k = 0; k < 8; k++)
            for (int o = 0; o < 2; o++) {
                snprintf(path, sizeof path, "%s/test_data_set_%d/%s_%d.pb", dir, s,
                         o ? "output" : "input", k);
                unlink(path);
            }
        snprintf(path, sizeof path, "%s/test_data_set_%d", dir, s);
        rmdir(path);
    }
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    unlink(path);
}

static const uint8_t *find_sep(const uint8_t *p, const uint8_t *end)
{
    const size_t k = sizeof SEP - 1;
    for (; p + k <= end; p++)
        if (!memcmp(p, SEP, k))
            return p;
    return end;
}

static void folder(const uint8_t *data, size_t size)
{
    char dir[600], path[700];
    fz_path(dir, sizeof dir, "case");
    mkdir(dir, 0700);
    clear_folder(dir);
    const uint8_t *p = data, *end = data + size;
    for (int sec = 0; p <= end && sec < 40; sec++) {
        const uint8_t *q = find_sep(p, end);
        if (sec == 0) {
            snprintf(path, sizeof path, "%s/model.onnx", dir);
            fz_write_file(path, p, (size_t)(q - p));
        } else if (q > p) {
            const uint8_t tag = *p;
            snprintf(path, sizeof path, "%s/test_data_set_%d", dir, (tag >> 3) & 1);
            mkdir(path, 0700);
            snprintf(path, sizeof path, "%s/test_data_set_%d/%s_%d.pb", dir, (tag >> 3) & 1,
                     tag & 0x80 ? "output" : "input", tag & 7);
            fz_write_file(path, p + 1, (size_t)(q - p - 1));
        }
        p = q + sizeof SEP - 1;
    }
    char a0[] = "onnx-test";
    char *argv[] = {a0, dir, NULL};
    int rc = keel_cmd_onnx_test(2, argv);
    FZ_CHECK(rc == 0 || rc == 1, "keel onnx-test on a folder: exit status %d", rc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        fz_quiet_stdio();
        ready = 1;
    }
    const size_t k = sizeof DIR_MAGIC - 1;
    if (size >= k && !memcmp(data, DIR_MAGIC, k)) {
        folder(data + k, size - k);
        return 0;
    }
    keel_pb_reader r = keel_pb_reader_init(data, size);
    walk(&r, 0);
    tensor(data, size);
    model(data, size);
    return 0;
}
