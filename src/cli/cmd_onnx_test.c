/*
 * keel onnx-test DIR...: run ONNX backend node test folders through keel.
 *
 * A folder holds model.onnx (one LayerNormalization, RMSNormalization or BatchNormalization
 * node: inference mode, features = the channels, axis 1) and one or more
 * test_data_set_N/ with input_K.pb and output_K.pb (K = position among the graph's inputs or
 * outputs). Each folder gets one PASS or FAIL line; a folder that cannot be run (missing file,
 * unsupported op or data type, malformed protobuf) is a FAIL with the reason, never skipped.
 * Exit status: 0 when every folder passes, 1 otherwise, 2 on a usage error.
 */
#define _POSIX_C_SOURCE 200809L /* opendir/readdir: C11 alone cannot list a directory */

#include <dirent.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "keel.h"
#include "numarg.h"
#include "onnx_pb.h"

#define DEFAULT_RTOL 1e-5
#define DEFAULT_ATOL 1e-6
#define PATH_CAP 4096
#define WHY_CAP 1024
#define DATA_SET_PREFIX "test_data_set_"

typedef struct tolerance {
    double rtol, atol;
} tolerance;

/* The ops this command runs. */
typedef enum op_kind { OP_LAYERNORM, OP_RMSNORM, OP_BATCHNORM } op_kind;

/* What a folder's model asks for, checked once for all of its data sets. */
typedef struct norm_op {
    op_kind kind;
    const char *name;
    int64_t axis;
    float epsilon;
} norm_op;

/* The result of one folder (or one data set): pass, or the reason it failed. */
typedef struct outcome {
    int pass;
    char why[WHY_CAP];
    double max_abs_err; /* over every compared value */
    int n_outputs;      /* outputs compared in the last data set */
} outcome;

static int set_why(outcome *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(o->why, sizeof o->why, fmt, ap);
    va_end(ap);
    o->pass = 0;
    return 0;
}

/* Put "prefix: " in front of the reason already in o->why (cut at the end if need be). */
static void prefix_why(outcome *o, const char *prefix)
{
    size_t have = strlen(o->why), add = strlen(prefix) + 2;
    if (add >= sizeof o->why)
        return;
    size_t keep = have < sizeof o->why - 1 - add ? have : sizeof o->why - 1 - add;
    memmove(o->why + add, o->why, keep);
    memcpy(o->why, prefix, add - 2);
    memcpy(o->why + add - 2, ": ", 2);
    o->why[add + keep] = '\0';
}

static void usage(FILE *to)
{
    fprintf(to,
            "usage: keel onnx-test [--rtol R] [--atol A] DIR...\n\n"
            "Runs ONNX backend node test folders (model.onnx and test_data_set_*/input_K.pb,\n"
            "output_K.pb) of LayerNormalization (opset 17: outputs Y, Mean, InvStdDev),\n"
            "RMSNormalization (opset 23: output Y) and BatchNormalization (inference mode: output Y)\n"
            "through keel, and prints one PASS or FAIL line\n"
            "per folder and a total line. A value passes when |got - want| <= atol + rtol * |want|.\n\n"
            "  --rtol R   relative tolerance (default %g)\n"
            "  --atol A   absolute tolerance (default %g)\n"
            "  --help     this text\n\n"
            "Exit status: 0 when every folder passes, 1 when one fails, 2 on a usage error.\n",
            DEFAULT_RTOL, DEFAULT_ATOL);
}

/* ---- small helpers --------------------------------------------------------------------------- */

/* "a/b" into buf; 0 when it does not fit. */
static int join(char *buf, size_t cap, const char *a, const char *b)
{
    int n = snprintf(buf, cap, "%s/%s", a, b);
    return n >= 0 && (size_t)n < cap;
}

/* "(2, 3, 5)" */
static const char *shape_str(const int64_t *dims, int ndims, char *buf, size_t cap)
{
    size_t at = 0;
    buf[0] = '\0';
    at += (size_t)snprintf(buf, cap, "(");
    for (int i = 0; i < ndims && at < cap; i++)
        at += (size_t)snprintf(buf + at, cap - at, "%s%lld", i ? ", " : "", (long long)dims[i]);
    if (at < cap)
        snprintf(buf + at, cap - at, ")");
    return buf;
}

static int same_shape(const keel_onnx_tensor *t, const int64_t *dims, int ndims)
{
    if (t->ndims != ndims)
        return 0;
    for (int i = 0; i < ndims; i++)
        if (t->dims[i] != dims[i])
            return 0;
    return 1;
}

/* A float buffer of n values (at least one allocated, so n == 0 is not NULL). */
static float *alloc_floats(size_t n)
{
    return calloc(n ? n : 1, sizeof(float));
}

/* ---- the model ------------------------------------------------------------------------------- */

/* BatchNormalization (opset 9 and later: no `spatial` attribute, the statistics are per
 * channel, axis 1): inputs X, scale, B, input_mean, input_var; in inference mode (training_mode
 * 0, the default) the one output Y. Training mode (outputs running_mean, running_var) is not
 * run: ONNX's momentum is the weight of the old running value, the opposite of PyTorch's and
 * keel's (docs/blocks.md). */
static int check_batchnorm_model(const keel_onnx_model *m, norm_op *op, outcome *o)
{
    int64_t training = 0;
    float momentum;
    if (m->domain[0] && strcmp(m->domain, "ai.onnx"))
        return set_why(o, "%s of domain %s is not supported", m->op_type, m->domain);
    if (m->opset < 9)
        return set_why(o, "BatchNormalization needs opset 9 or later (per-channel statistics); the "
                          "model imports opset %lld", (long long)m->opset);
    op->axis = 1;
    if (keel_onnx_attr_float(m, "epsilon", 1e-5f, &op->epsilon) != KEEL_OK ||
        keel_onnx_attr_float(m, "momentum", 0.9f, &momentum) != KEEL_OK ||
        keel_onnx_attr_int(m, "training_mode", 0, &training) != KEEL_OK)
        return set_why(o, "model.onnx: %s", tool_last_error());
    if (training != 0)
        return set_why(o, "training_mode %lld is not supported (inference only)", (long long)training);
    if (m->n_inputs != 5)
        return set_why(o, "BatchNormalization has %d inputs (X, scale, B, input_mean, input_var)",
                       m->n_inputs);
    for (int i = 0; i < 5; i++)
        if (!m->inputs[i][0])
            return set_why(o, "BatchNormalization input %d is empty", i);
    if (m->n_outputs != 1 || !m->outputs[0][0])
        return set_why(o, "BatchNormalization has %d outputs (inference mode: Y only)", m->n_outputs);
    return 1;
}

/* Check the node is one this command runs and read its attributes. */
static int check_model(const keel_onnx_model *m, norm_op *op, outcome *o)
{
    int64_t stash = 1;
    if (!strcmp(m->op_type, "LayerNormalization")) {
        op->kind = OP_LAYERNORM;
        op->name = "LayerNormalization";
    } else if (!strcmp(m->op_type, "RMSNormalization")) {
        op->kind = OP_RMSNORM;
        op->name = "RMSNormalization";
    } else if (!strcmp(m->op_type, "BatchNormalization")) {
        op->kind = OP_BATCHNORM;
        op->name = "BatchNormalization";
        return check_batchnorm_model(m, op, o);
    } else {
        return set_why(o, "op type %s is not supported (LayerNormalization, RMSNormalization, "
                          "BatchNormalization)", m->op_type);
    }
    if (m->domain[0] && strcmp(m->domain, "ai.onnx"))
        return set_why(o, "%s of domain %s is not supported", m->op_type, m->domain);
    int64_t since = op->kind == OP_LAYERNORM ? 17 : 23;
    if (m->opset < since)
        return set_why(o, "%s needs opset %lld or later; the model imports opset %lld", op->name,
                       (long long)since, (long long)m->opset);
    if (keel_onnx_attr_int(m, "axis", -1, &op->axis) != KEEL_OK ||
        keel_onnx_attr_float(m, "epsilon", 1e-5f, &op->epsilon) != KEEL_OK ||
        keel_onnx_attr_int(m, "stash_type", 1, &stash) != KEEL_OK)
        return set_why(o, "model.onnx: %s", tool_last_error());
    /* stash_type is the type the statistics are computed in; keel computes them in float. */
    if (stash != KEEL_ONNX_FLOAT)
        return set_why(o, "stash_type %lld (%s) is not supported (only FLOAT)", (long long)stash,
                       keel_onnx_dtype_name(stash));
    int max_in = op->kind == OP_LAYERNORM ? 3 : 2, max_out = op->kind == OP_LAYERNORM ? 3 : 1;
    if (m->n_inputs < 2 || m->n_inputs > max_in || !m->inputs[0][0] || !m->inputs[1][0])
        return set_why(o, "%s has %d inputs (X and scale are required, at most %d)", op->name,
                       m->n_inputs, max_in);
    if (m->n_outputs < 1 || m->n_outputs > max_out || !m->outputs[0][0])
        return set_why(o, "%s has %d outputs (Y is required, at most %d)", op->name, m->n_outputs,
                       max_out);
    return 1;
}

/* ---- one data set ---------------------------------------------------------------------------- */

/* Everything one data set holds and produces; freed by free_case. */
typedef struct norm_case {
    keel_onnx_tensor in[5];  /* X, scale, B (B may stay empty); BatchNormalization: + mean, var */
    const float *gamma, *beta;
    float *gamma_owned, *beta_owned; /* broadcast copies, when a parameter was not dense */
    size_t rows, dim;
    int axis; /* in 0 .. rank-1 */
    float *got[3]; /* Y, Mean, InvStdDev */
} norm_case;

static void free_case(norm_case *c)
{
    for (int i = 0; i < 5; i++)
        keel_onnx_tensor_free(&c->in[i]);
    for (int i = 0; i < 3; i++)
        free(c->got[i]);
    free(c->gamma_owned);
    free(c->beta_owned);
}

/* Load the tensor that feeds node input `slot` (by its position among the graph inputs). */
static int load_input(const keel_onnx_model *m, const char *set, int slot, keel_onnx_tensor *t,
                      outcome *o)
{
    char file[64], path[PATH_CAP];
    int k = keel_onnx_graph_input_index(m, m->inputs[slot]);
    if (k < 0)
        return set_why(o, "node input %s is not a graph input (initializers are not supported)",
                       m->inputs[slot]);
    snprintf(file, sizeof file, "input_%d.pb", k);
    if (!join(path, sizeof path, set, file))
        return set_why(o, "path too long: %s/%s", set, file);
    if (keel_onnx_tensor_load(path, t) != KEEL_OK)
        return set_why(o, "%s: %s", file, tool_last_error());
    return 1;
}

/*
 * Map a scale or bias tensor onto the normalized shape norm[0..nn) (X's dims from axis on), as
 * `dim` dense floats. The usual case is exactly that shape. Otherwise numpy broadcasting is
 * applied: leading dims of size 1 beyond the normalized rank are dropped, then the dims are
 * right-aligned and each must be 1 or equal. Anything else (a parameter that varies across
 * rows) cannot be expressed with one gamma per feature, and is refused with the reason.
 */
static int map_param(const keel_onnx_tensor *p, const char *what, const int64_t *norm, int nn,
                     size_t dim, const float **out, float **owned, outcome *o)
{
    char ps[256], ns[256];
    int skip = 0;
    while (p->ndims - skip > nn && p->dims[skip] == 1)
        skip++;
    int pn = p->ndims - skip;
    int ok = pn <= nn;
    for (int i = 0; ok && i < pn; i++) {
        int64_t pd = p->dims[skip + i], td = norm[nn - pn + i];
        ok = pd == td || pd == 1;
    }
    if (!ok)
        return set_why(o, "%s of shape %s cannot be mapped onto the normalized shape %s", what,
                       shape_str(p->dims, p->ndims, ps, sizeof ps), shape_str(norm, nn, ns, sizeof ns));
    if (p->count == dim) { /* compatible and as large: the same layout */
        *out = p->data;
        return 1;
    }
    float *buf = alloc_floats(dim);
    if (!buf)
        return set_why(o, "out of memory");
    for (size_t f = 0; f < dim; f++) {
        /* Walk f's coordinates from the last dim; a broadcast (size 1) dim contributes 0. */
        size_t rest = f, src = 0, pstride = 1;
        for (int i = nn - 1, j = pn - 1; i >= 0; i--, j--) {
            size_t coord = rest % (size_t)norm[i];
            rest /= (size_t)norm[i];
            if (j >= 0) {
                size_t pd = (size_t)p->dims[skip + j];
                src += (pd == 1 ? 0 : coord) * pstride;
                pstride *= pd;
            }
        }
        buf[f] = p->data[src];
    }
    *owned = buf;
    *out = buf;
    return 1;
}

/* Read the inputs, work out rows and dim from the axis, map the parameters. */
static int prepare_case(const keel_onnx_model *m, const norm_op *op, const char *set, norm_case *c,
                        outcome *o)
{
    for (int slot = 0; slot < m->n_inputs; slot++)
        if (m->inputs[slot][0] && !load_input(m, set, slot, &c->in[slot], o))
            return 0;
    const keel_onnx_tensor *x = &c->in[0];
    int64_t r = x->ndims, axis = op->axis < 0 ? op->axis + r : op->axis;
    if (axis < 0 || axis >= r)
        return set_why(o, "axis %lld is out of range for X of rank %lld", (long long)op->axis,
                       (long long)r);
    c->axis = (int)axis;
    c->rows = 1;
    c->dim = 1;
    /* Each product divides X's element count, which the reader bounded: no overflow. */
    for (int i = 0; i < c->axis; i++)
        c->rows *= (size_t)x->dims[i];
    for (int i = c->axis; i < x->ndims; i++)
        c->dim *= (size_t)x->dims[i];
    const int64_t *norm = x->dims + c->axis;
    int nn = x->ndims - c->axis;
    if (!map_param(&c->in[1], "scale", norm, nn, c->dim, &c->gamma, &c->gamma_owned, o))
        return 0;
    if (m->n_inputs > 2 && m->inputs[2][0]) /* B is optional */
        if (!map_param(&c->in[2], "B", norm, nn, c->dim, &c->beta, &c->beta_owned, o))
            return 0;
    for (int i = 0; i < 3; i++)
        if (!(c->got[i] = alloc_floats(i == 0 ? x->count : c->rows)))
            return set_why(o, "out of memory");
    return 1;
}

/* BatchNormalization: X is (N, C, D1, ..., Dk); keel takes rows of features, so the channels
 * are made the last dim (rows = N * D1 * ... * Dk, dim = C), normalized, and put back. */
static int prepare_batchnorm(const keel_onnx_model *m, const char *set, norm_case *c, outcome *o)
{
    char s1[256];
    for (int slot = 0; slot < 5; slot++)
        if (!load_input(m, set, slot, &c->in[slot], o))
            return 0;
    const keel_onnx_tensor *x = &c->in[0];
    if (x->ndims < 2)
        return set_why(o, "X of shape %s has no channel dim (rank >= 2 needed)",
                       shape_str(x->dims, x->ndims, s1, sizeof s1));
    c->axis = 1;
    c->dim = (size_t)x->dims[1];
    c->rows = c->dim ? x->count / c->dim : 0;
    static const char *const names[5] = {"X", "scale", "B", "input_mean", "input_var"};
    for (int i = 1; i < 5; i++)
        if (c->in[i].count != c->dim)
            return set_why(o, "%s of shape %s does not hold C = %zu values", names[i],
                           shape_str(c->in[i].dims, c->in[i].ndims, s1, sizeof s1), c->dim);
    for (int i = 0; i < 3; i++)
        if (!(c->got[i] = alloc_floats(x->count)))
            return set_why(o, "out of memory");
    return 1;
}

static int run_batchnorm(keel_ctx *ctx, const norm_op *op, norm_case *c, outcome *o)
{
    const keel_onnx_tensor *x = &c->in[0];
    const size_t C = c->dim, S = c->rows && x->dims[0] ? c->rows / (size_t)x->dims[0] : 0;
    float *xt = c->got[1], *yt = c->got[2];
    for (size_t i = 0; i < x->count; i++) { /* (n, c, s) -> (n, s, c) */
        const size_t n = i / (C * S), ch = i / S % C, sp = i % S;
        xt[(n * S + sp) * C + ch] = x->data[i];
    }
    keel_status st = keel_batchnorm_fwd(ctx, c->rows, C, keel_f32(xt, C), keel_f32(yt, C), c->in[1].data,
                                        c->in[2].data, op->epsilon, 0, NAN, c->in[3].data, c->in[4].data,
                                        NULL, NULL, NULL, 0);
    if (st != KEEL_OK)
        return set_why(o, "keel_batchnorm_fwd failed: %s: %s", keel_status_str(st), keel_last_error());
    for (size_t i = 0; i < x->count; i++) {
        const size_t n = i / (C * S), ch = i / S % C, sp = i % S;
        c->got[0][i] = yt[(n * S + sp) * C + ch];
    }
    return 1;
}

static int run_keel(keel_ctx *ctx, const norm_op *op, norm_case *c, outcome *o)
{
    const float *x = c->in[0].data;
    keel_status st;
    const char *fn;
    if (op->kind == OP_LAYERNORM) {
        fn = "keel_layernorm_fwd";
        st = keel_layernorm_fwd(ctx, c->rows, c->dim, keel_f32(x, c->dim), keel_f32(c->got[0], c->dim),
                                c->gamma, c->beta, op->epsilon, c->got[1], c->got[2], 0);
    } else {
        fn = "keel_rmsnorm_fwd";
        st = keel_rmsnorm_fwd(ctx, c->rows, c->dim, keel_f32(x, c->dim), keel_f32(c->got[0], c->dim),
                              c->gamma, op->epsilon, NULL, 0);
    }
    if (st != KEEL_OK)
        return set_why(o, "%s failed: %s: %s", fn, keel_status_str(st), keel_last_error());
    return 1;
}

/* 1 when got is within tolerance of want; NaN matches NaN only, an infinity itself only. */
static int close_enough(float got, float want, const tolerance *tol, double *abs_err)
{
    if (isnan(want) || isnan(got)) {
        *abs_err = 0;
        return isnan(want) && isnan(got);
    }
    if (isinf(want) || isinf(got)) {
        *abs_err = 0;
        return got == want;
    }
    double d = fabs((double)got - (double)want);
    *abs_err = d;
    return d <= tol->atol + tol->rtol * fabs((double)want);
}

/* Compare one output with output_K.pb: its shape must be `dims`, then every value. */
static int compare_output(const keel_onnx_model *m, const char *set, int slot, const float *got,
                          const int64_t *dims, int ndims, const tolerance *tol, outcome *o)
{
    static const char *const names[] = {"Y", "Mean", "InvStdDev"};
    char file[64], path[PATH_CAP], s1[256], s2[256];
    int k = keel_onnx_graph_output_index(m, m->outputs[slot]);
    if (k < 0)
        return set_why(o, "node output %s is not a graph output", m->outputs[slot]);
    snprintf(file, sizeof file, "output_%d.pb", k);
    if (!join(path, sizeof path, set, file))
        return set_why(o, "path too long: %s/%s", set, file);
    keel_onnx_tensor want;
    if (keel_onnx_tensor_load(path, &want) != KEEL_OK)
        return set_why(o, "%s: %s", file, tool_last_error());
    int ok = same_shape(&want, dims, ndims);
    if (!ok)
        set_why(o, "%s (%s) has shape %s; expected %s", names[slot], file,
                shape_str(want.dims, want.ndims, s1, sizeof s1), shape_str(dims, ndims, s2, sizeof s2));
    size_t bad = 0, first = 0;
    for (size_t i = 0; ok && i < want.count; i++) {
        double e;
        if (!close_enough(got[i], want.data[i], tol, &e) && bad++ == 0)
            first = i;
        if (e > o->max_abs_err)
            o->max_abs_err = e;
    }
    if (ok && bad) {
        double d = fabs((double)got[first] - (double)want.data[first]);
        set_why(o, "%s[%zu] = %.9g, expected %.9g (|diff| %.3g > atol + rtol*|want| = %.3g); "
                   "%zu of %zu values out of tolerance",
                names[slot], first, got[first], want.data[first], d,
                tol->atol + tol->rtol * fabs((double)want.data[first]), bad, want.count);
        ok = 0;
    }
    keel_onnx_tensor_free(&want);
    return ok;
}

static int run_data_set(keel_ctx *ctx, const keel_onnx_model *m, const norm_op *op, const char *set,
                        const tolerance *tol, outcome *o)
{
    norm_case c;
    memset(&c, 0, sizeof c);
    int ok = op->kind == OP_BATCHNORM
                 ? prepare_batchnorm(m, set, &c, o) && run_batchnorm(ctx, op, &c, o)
                 : prepare_case(m, op, set, &c, o) && run_keel(ctx, op, &c, o);
    /* Mean and InvStdDev keep X's leading dims and have 1 for each normalized one. */
    int64_t stat_dims[KEEL_ONNX_MAX_DIMS];
    const keel_onnx_tensor *x = &c.in[0];
    for (int i = 0; ok && i < x->ndims; i++)
        stat_dims[i] = i < c.axis ? x->dims[i] : 1;
    o->n_outputs = 0;
    for (int slot = 0; ok && slot < m->n_outputs; slot++) {
        if (!m->outputs[slot][0])
            continue; /* an optional output the node does not produce */
        const int64_t *dims = slot == 0 ? x->dims : stat_dims;
        ok = compare_output(m, set, slot, c.got[slot], dims, x->ndims, tol, o);
        o->n_outputs += ok;
    }
    free_case(&c);
    return ok;
}

/* ---- a folder -------------------------------------------------------------------------------- */

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* The folder's test_data_set_* entries, sorted. */
static int list_data_sets(const char *dir, char ***out, size_t *n_out, outcome *o)
{
    DIR *d = opendir(dir);
    if (!d)
        return set_why(o, "cannot open the folder");
    char **names = NULL;
    size_t n = 0, cap = 0;
    int ok = 1;
    struct dirent *e;
    while (ok && (e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, DATA_SET_PREFIX, strlen(DATA_SET_PREFIX)))
            continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            char **bigger = realloc(names, ncap * sizeof *names);
            if (!bigger) {
                ok = 0;
                break;
            }
            names = bigger;
            cap = ncap;
        }
        size_t len = strlen(e->d_name);
        if (!(names[n] = malloc(len + 1))) {
            ok = 0;
            break;
        }
        memcpy(names[n++], e->d_name, len + 1);
    }
    closedir(d);
    if (!ok) {
        free_names(names, n);
        return set_why(o, "out of memory");
    }
    if (n == 0) {
        free(names);
        return set_why(o, "no " DATA_SET_PREFIX "* folder");
    }
    qsort(names, n, sizeof *names, cmp_names);
    *out = names;
    *n_out = n;
    return 1;
}

static void run_folder(keel_ctx *ctx, const char *dir, const tolerance *tol, outcome *o)
{
    char path[PATH_CAP];
    memset(o, 0, sizeof *o);
    o->pass = 1;
    keel_onnx_model *m = malloc(sizeof *m); /* ~6 KiB: kept off the stack */
    norm_op op;
    char **sets = NULL;
    size_t n_sets = 0;
    if (!m) {
        set_why(o, "out of memory");
    } else if (!join(path, sizeof path, dir, "model.onnx")) {
        set_why(o, "path too long");
    } else if (keel_onnx_model_load(path, m) != KEEL_OK) {
        set_why(o, "model.onnx: %s", tool_last_error());
    } else if (check_model(m, &op, o) && list_data_sets(dir, &sets, &n_sets, o)) {
        for (size_t i = 0; i < n_sets && o->pass; i++) {
            if (!join(path, sizeof path, dir, sets[i])) {
                set_why(o, "path too long");
            } else if (!run_data_set(ctx, m, &op, path, tol, o)) {
                prefix_why(o, sets[i]);
            }
        }
        if (o->pass)
            snprintf(o->why, sizeof o->why,
                     "%s, axis %lld, epsilon %g: %zu data set%s, %d output%s, max |err| %.3g",
                     op.name, (long long)op.axis, (double)op.epsilon, n_sets, n_sets == 1 ? "" : "s",
                     o->n_outputs, o->n_outputs == 1 ? "" : "s", o->max_abs_err);
    }
    free_names(sets, n_sets);
    free(m);
}

/* ---- the command ----------------------------------------------------------------------------- */

/* --rtol X or --rtol=X; returns 1 matched, 0 not this option, -1 bad value (message printed). */
static int tol_option(const char *name, int argc, char **argv, int *i, double *v)
{
    size_t n = strlen(name);
    const char *a = argv[*i], *val;
    if (strncmp(a, name, n))
        return 0;
    if (a[n] == '=')
        val = a + n + 1;
    else if (a[n] == '\0')
        val = ++*i < argc ? argv[*i] : NULL;
    else
        return 0;
    /* a tolerance: a finite number >= 0 */
    return keel_arg_double("onnx-test", name, val, 0.0, DBL_MAX, 0, v) ? -1 : 1;
}

int keel_cmd_onnx_test(int argc, char **argv)
{
    tolerance tol = {DEFAULT_RTOL, DEFAULT_ATOL};
    int n_dirs = 0, options_done = 0;
    /* Options may come anywhere among the folders (a folder named like an option follows --). */
    char **dirs = calloc(argc > 0 ? (size_t)argc : 1, sizeof *dirs);
    if (!dirs) {
        fprintf(stderr, "keel onnx-test: out of memory\n");
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int r;
        if (options_done || a[0] != '-' || a[1] == '\0') {
            dirs[n_dirs++] = argv[i];
        } else if (!strcmp(a, "--")) {
            options_done = 1;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            free(dirs);
            return 0;
        } else if ((r = tol_option("--rtol", argc, argv, &i, &tol.rtol)) != 0 ||
                   (r = tol_option("--atol", argc, argv, &i, &tol.atol)) != 0) {
            if (r < 0) {
                free(dirs);
                return 2;
            }
        } else {
            fprintf(stderr, "keel onnx-test: unknown option '%s'\n\n", a);
            usage(stderr);
            free(dirs);
            return 2;
        }
    }
    if (n_dirs == 0) {
        fprintf(stderr, "keel onnx-test: no test folder given\n\n");
        usage(stderr);
        free(dirs);
        return 2;
    }

    keel_ctx *ctx = NULL;
    keel_status st = keel_ctx_create(&ctx, 0);
    char ctx_err[WHY_CAP] = "";
    if (st != KEEL_OK)
        snprintf(ctx_err, sizeof ctx_err, "keel_ctx_create failed: %s: %s", keel_status_str(st),
                 keel_last_error());
    int passed = 0, failed = 0;
    outcome *o = malloc(sizeof *o);
    for (int d = 0; d < n_dirs; d++) {
        if (!o || !ctx) {
            printf("FAIL %s: %s\n", dirs[d], o ? ctx_err : "out of memory");
            failed++;
            continue;
        }
        run_folder(ctx, dirs[d], &tol, o);
        printf("%s %s: %s\n", o->pass ? "PASS" : "FAIL", dirs[d], o->why);
        *(o->pass ? &passed : &failed) += 1;
    }
    printf("total: %d passed, %d failed\n", passed, failed);
    fflush(stdout);
    free(o);
    keel_ctx_destroy(ctx);
    free(dirs);
    return failed ? 1 : 0;
}
