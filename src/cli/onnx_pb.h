/*
 * onnx_pb.h - a small reader of the protobuf wire format, enough for ONNX backend node tests:
 * TensorProto files (input_K.pb, output_K.pb) and one-node ModelProto files (model.onnx).
 *
 * No protobuf library: every read is bounds-checked against the buffer, a truncated or
 * malformed buffer is KEEL_EFORMAT (never an out-of-bounds read), unknown fields of every wire
 * type are skipped. Functions return a keel_status and, on an error, set the message that
 * tool_last_error() returns (tool_error.h). No exit/abort, no printing.
 */
#ifndef KEEL_CLI_ONNX_PB_H
#define KEEL_CLI_ONNX_PB_H

#include <stddef.h>
#include <stdint.h>

#include "keel.h"
#include "tool_error.h"

/* ---- the wire format ------------------------------------------------------------------------ */

enum {
    KEEL_PB_VARINT = 0,
    KEEL_PB_FIXED64 = 1,
    KEEL_PB_LEN = 2,
    KEEL_PB_SGROUP = 3, /* deprecated groups: skipped when unknown */
    KEEL_PB_EGROUP = 4,
    KEEL_PB_FIXED32 = 5
};

/* A cursor over a byte buffer: reads advance pos and never go past len. */
typedef struct keel_pb_reader {
    const uint8_t *buf;
    size_t len;
    size_t pos;
    size_t base; /* offset of buf in the outermost buffer: error messages give file offsets */
} keel_pb_reader;

/* A field's key, decoded. */
typedef struct keel_pb_key {
    uint32_t field; /* 1 .. 2^29-1 */
    int wire;       /* KEEL_PB_VARINT .. KEEL_PB_FIXED32 */
} keel_pb_key;

keel_pb_reader keel_pb_reader_init(const uint8_t *buf, size_t len);
/* A reader over a payload that keel_pb_read_bytes returned from parent. */
keel_pb_reader keel_pb_reader_sub(const keel_pb_reader *parent, const uint8_t *data, size_t n);
/* 1 when every byte has been read. */
int keel_pb_at_end(const keel_pb_reader *r);

/* The readers below leave pos where it was when they fail. */

/* A varint of at most 10 bytes; the 10th byte may only hold the value's top bit (0 or 1). */
keel_status keel_pb_read_varint(keel_pb_reader *r, uint64_t *v);
/* A key: field number >= 1 and a wire type 0..5 (6 and 7 are errors). */
keel_status keel_pb_read_key(keel_pb_reader *r, keel_pb_key *key);
keel_status keel_pb_read_fixed32(keel_pb_reader *r, uint32_t *v);
keel_status keel_pb_read_fixed64(keel_pb_reader *r, uint64_t *v);
/* A length-delimited payload: *data points into the buffer, *n bytes long. */
keel_status keel_pb_read_bytes(keel_pb_reader *r, const uint8_t **data, size_t *n);
/* Skip the value of a field whose key was just read (groups up to a nesting limit). */
keel_status keel_pb_skip(keel_pb_reader *r, keel_pb_key key);

/* ---- TensorProto ---------------------------------------------------------------------------- */

#define KEEL_ONNX_MAX_DIMS 16
#define KEEL_ONNX_NAME_MAX 128 /* bytes of a name, with its terminating NUL */

/* TensorProto.DataType values this reader names in its messages. */
enum {
    KEEL_ONNX_UNDEFINED = 0,
    KEEL_ONNX_FLOAT = 1,
    KEEL_ONNX_FLOAT16 = 10,
    KEEL_ONNX_DOUBLE = 11,
    KEEL_ONNX_BFLOAT16 = 16
};

/* A dense float32 tensor read from a TensorProto. Only FLOAT tensors are loaded; any other
 * data type is KEEL_EUNSUPPORTED. */
typedef struct keel_onnx_tensor {
    char name[KEEL_ONNX_NAME_MAX];
    int ndims;                        /* 0 for a scalar */
    int64_t dims[KEEL_ONNX_MAX_DIMS]; /* each >= 0 */
    size_t count;                     /* product of dims (1 for a scalar) */
    float *data;                      /* count floats, malloc'd; NULL when count == 0 */
} keel_onnx_tensor;

/* The ONNX name of a data type ("FLOAT", "DOUBLE", ...; "UNKNOWN" otherwise). */
const char *keel_onnx_dtype_name(int64_t data_type);

/* Parse a TensorProto. Values come from raw_data (little-endian) or, without it, float_data
 * (packed or not). On an error *t is left empty (data NULL). */
keel_status keel_onnx_tensor_parse(const uint8_t *buf, size_t len, keel_onnx_tensor *t);
/* Read a file and parse it; KEEL_EIO when it cannot be read. */
keel_status keel_onnx_tensor_load(const char *path, keel_onnx_tensor *t);
/* Free the data; t may be NULL. Leaves *t empty. */
void keel_onnx_tensor_free(keel_onnx_tensor *t);

/* ---- ModelProto with one node --------------------------------------------------------------- */

#define KEEL_ONNX_MAX_IO 8    /* inputs or outputs of the node and of the graph */
#define KEEL_ONNX_MAX_ATTRS 16

/* AttributeProto.AttributeType values this reader keeps the value of. */
enum {
    KEEL_ONNX_ATTR_UNDEFINED = 0,
    KEEL_ONNX_ATTR_FLOAT = 1,
    KEEL_ONNX_ATTR_INT = 2
};

typedef struct keel_onnx_attr {
    char name[KEEL_ONNX_NAME_MAX];
    int64_t type; /* AttributeProto.type as written (0 when absent) */
    int has_f, has_i;
    float f;
    int64_t i;
} keel_onnx_attr;

/* The graph's single node, its attributes, and the graph's input and output names (they give
 * the order of input_K.pb and output_K.pb). */
typedef struct keel_onnx_model {
    char op_type[KEEL_ONNX_NAME_MAX];
    char domain[KEEL_ONNX_NAME_MAX];  /* of the node; "" is the default domain (ai.onnx) */
    int64_t opset;                    /* opset_import version of the default domain */
    int n_inputs, n_outputs;          /* node inputs/outputs as listed (an optional one may be "") */
    char inputs[KEEL_ONNX_MAX_IO][KEEL_ONNX_NAME_MAX];
    char outputs[KEEL_ONNX_MAX_IO][KEEL_ONNX_NAME_MAX];
    int n_graph_inputs, n_graph_outputs;
    char graph_inputs[KEEL_ONNX_MAX_IO][KEEL_ONNX_NAME_MAX];
    char graph_outputs[KEEL_ONNX_MAX_IO][KEEL_ONNX_NAME_MAX];
    int n_initializers; /* initializers are not read; a node input fed by one cannot be mapped */
    int n_attrs;
    keel_onnx_attr attrs[KEEL_ONNX_MAX_ATTRS];
} keel_onnx_model;

/* Parse a ModelProto whose graph holds exactly one node and that imports the default domain. */
keel_status keel_onnx_model_parse(const uint8_t *buf, size_t len, keel_onnx_model *m);
keel_status keel_onnx_model_load(const char *path, keel_onnx_model *m);

/* The node's attribute of that name, or NULL. */
const keel_onnx_attr *keel_onnx_model_attr(const keel_onnx_model *m, const char *name);
/* An INT / FLOAT attribute, or dflt when the node does not have it. KEEL_EFORMAT when it is
 * there with another type. */
keel_status keel_onnx_attr_int(const keel_onnx_model *m, const char *name, int64_t dflt,
                               int64_t *v);
keel_status keel_onnx_attr_float(const keel_onnx_model *m, const char *name, float dflt,
                                 float *v);

/* Index of name in the graph's inputs / outputs, or -1. The empty name is never found. */
int keel_onnx_graph_input_index(const keel_onnx_model *m, const char *name);
int keel_onnx_graph_output_index(const keel_onnx_model *m, const char *name);

#endif
