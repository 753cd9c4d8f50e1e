/*
 * test_cross_digest: one digest of every output byte of every operation, the same on every path
 * of every machine. Each operation of keel.h (the norms and their int8 forwards, the fused
 * add + norm, LayerScale, BatchNorm in training and inference, DyT; forward and backward; the
 * row tensors in f32, bf16 and f16 where the operation takes them) runs on fixed inputs on
 * every path this machine has (and the best path on 3 threads); every output buffer, written or
 * not, goes into one FNV-1a 64 digest per operation, dtype and input set. The paths of this
 * machine must agree (the test fails otherwise), and the lines "digest ..." it prints must be
 * the same on every machine: `make test-neon` runs it here (x86-64) and on aarch64 under qemu
 * and compares the two listings, which checks the NEON path against the scalar and x86 ones.
 *
 * The inputs are made with integer arithmetic and exact scalings only (no libm call, whose last
 * bits may differ between machines), from a fixed seed (KEEL_TEST_SEED is not read: both sides
 * must make the same inputs); their digest is printed first. Two input sets are finite ("A":
 * 19 x 77, "B": 4 x 1030, rows of many scales, offsets and a cancelling pair), so every bit is
 * compared. The third ("S", 13 x 45) holds a NaN, infinities, zeros, subnormals, huge values
 * and a constant row: there a NaN is hashed as one canonical NaN of its dtype, since which NaN
 * an operation on two NaNs returns, and the sign of a NaN made from Inf - Inf, differ between
 * machines (issue 21); where NaNs appear and every other bit are still compared.
 */
#include <math.h>

#include "convert.h"
#include "test_common.h"
#include "fnv1a.h"

/* ---- inputs ---------------------------------------------------------------------------------- */

static uint64_t sm_state;
static uint64_t sm_next(void) /* splitmix64 */
{
    uint64_t z = (sm_state += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* A float in (-1, 1) times 2^e: a 31-bit integer scaled by a power of two (exact). */
static float sm_float(int e) { return ldexpf((float)((int32_t)(sm_next() >> 32) >> 8), e - 23); }

static float from_bits(uint32_t b)
{
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

typedef struct set {
    const char *name;
    size_t rows, dim, pad;
    int special;
} set;

static const set sets[] = {{"A", 19, 77, 3, 0}, {"B", 4, 1030, 0, 0}, {"S", 13, 45, 2, 1}};

enum { NROW = 5, NCOL = 10 };
typedef struct inputs {
    size_t rows, dim, stride;
    float *row[NROW];  /* x, r, dy, dh, f32 spare: rows x stride */
    float *col[6];     /* gamma, beta, lambda, bias, running mean, running var (> 0) */
} inputs;

static void fill_row(float *row, size_t dim, size_t r, int special)
{
    const int e = (int)(sm_next() % 9) - 4; /* scales 2^-4 .. 2^4 */
    const float offset = r % 3 == 1 ? ldexpf((float)(sm_next() % 1000), e) : 0.0f;
    for (size_t j = 0; j < dim; j++)
        row[j] = offset + sm_float(e);
    if (r % 4 == 2 && dim > 4) { /* a cancelling pair (finite in f16 too: at most 2^13) */
        const float big = ldexpf(1.0f, 10 + (int)(sm_next() % 4));
        row[sm_next() % dim] = big;
        row[sm_next() % dim] = -big;
    }
    if (!special)
        return;
    switch (r) {
    case 1: row[sm_next() % dim] = INFINITY; break;
    case 2: row[sm_next() % dim] = from_bits(0x7fc01234u); break;
    case 3: memset(row, 0, dim * sizeof(float)); break;
    case 4:
        for (size_t j = 0; j < dim; j++)
            row[j] = from_bits((uint32_t)(sm_next() & 0x807fffffu)); /* subnormal or zero */
        break;
    case 5:
        for (size_t j = 0; j < dim; j++)
            row[j] = sm_float(100);
        break;
    case 6: row[sm_next() % dim] = -INFINITY; break;
    case 7:
        for (size_t j = 0; j < dim; j++)
            row[j] = row[0];
        break;
    default: break;
    }
}

static void inputs_make(inputs *in, const set *s)
{
    sm_state = UINT64_C(0x6b65656c) ^ (uint64_t)s->dim << 20 ^ s->rows;
    in->rows = s->rows;
    in->dim = s->dim;
    in->stride = s->dim + s->pad;
    const size_t n = in->rows * in->stride;
    for (int k = 0; k < NROW; k++) {
        in->row[k] = test_alloc(n);
        for (size_t i = 0; i < n; i++)
            in->row[k][i] = sm_float(0); /* the padding too */
        for (size_t r = 0; r < in->rows; r++)
            fill_row(in->row[k] + r * in->stride, in->dim, r, s->special && k == 0);
    }
    for (int k = 0; k < 6; k++) {
        in->col[k] = test_alloc(in->dim);
        for (size_t j = 0; j < in->dim; j++)
            in->col[k][j] = k >= 4 ? 0.25f + fabsf(sm_float(1)) : sm_float(1);
        if (k == 0 && in->dim > 3)
            in->col[0][3] = 0.0f; /* an exact zero of gamma */
    }
}

static void inputs_free(inputs *in)
{
    for (int k = 0; k < NROW; k++)
        free(in->row[k]);
    for (int k = 0; k < 6; k++)
        free(in->col[k]);
}

/* ---- tensors of a dtype ------------------------------------------------------------------------ */

static size_t dsize(keel_dtype dt) { return dt == KEEL_F32 ? 4 : dt == KEEL_I8 ? 1 : 2; }

/* n floats stored as dt (rounded once, as keel rounds) into a new buffer. */
static void *store_as(keel_dtype dt, const float *src, size_t n)
{
    void *p = malloc(n * 4 + 64);
    if (!p)
        test_fatal("out of memory");
    for (size_t i = 0; i < n; i++) {
        if (dt == KEEL_F32)
            ((float *)p)[i] = src[i];
        else if (dt == KEEL_BF16)
            ((uint16_t *)p)[i] = keel_f32_to_bf16_bits(src[i]);
        else
            ((uint16_t *)p)[i] = keel_f32_to_f16_bits(src[i]);
    }
    return p;
}

static keel_tensor tensor(void *data, keel_dtype dt, size_t stride)
{
    keel_tensor t;
    t.data = data;
    t.dtype = dt;
    t.stride = stride;
    return t;
}

/* The state of one run: the inputs in the run's dtype and every output buffer. */
typedef struct run_state {
    keel_dtype dt;
    size_t rows, dim, stride;
    void *in[NROW];       /* x, r, dy, dh as dt */
    void *out[4];         /* row outputs as dt (reset from rows of the inputs: accumulate) */
    int8_t *q;            /* int8 output */
    float *col[NCOL];     /* column / row outputs: mean, rstd, dgamma, dbeta, dlambda, dbias,
                             running mean, running var, dalpha, row scale */
    int64_t nbt;
    size_t ncol;
} run_state;

static void state_make(run_state *st, const inputs *in, keel_dtype dt)
{
    memset(st, 0, sizeof *st);
    st->dt = dt;
    st->rows = in->rows;
    st->dim = in->dim;
    st->stride = in->stride;
    const size_t n = in->rows * in->stride;
    for (int k = 0; k < 4; k++)
        st->in[k] = store_as(dt, in->row[k], n);
    for (int k = 0; k < 4; k++)
        st->out[k] = store_as(dt, in->row[(k + 2) % NROW], n);
    st->q = malloc(n + 64);
    st->ncol = in->rows > in->dim ? in->rows : in->dim;
    for (int k = 0; k < NCOL; k++)
        st->col[k] = test_alloc(st->ncol);
    if (!st->q)
        test_fatal("out of memory");
}

/* Every output to its initial contents (the same for every path). */
static void state_reset(run_state *st, const inputs *in)
{
    const size_t n = in->rows * in->stride;
    for (int k = 0; k < 4; k++) {
        void *fresh = store_as(st->dt, in->row[(k + 2) % NROW], n);
        memcpy(st->out[k], fresh, n * dsize(st->dt));
        free(fresh);
    }
    for (size_t i = 0; i < n; i++)
        st->q[i] = (int8_t)(i * 37u);
    for (int k = 0; k < NCOL; k++)
        for (size_t i = 0; i < st->ncol; i++)
            st->col[k][i] = in->row[4][i % n] * (float)(k + 1);
    memcpy(st->col[6], in->col[4], in->dim * sizeof(float)); /* running statistics: updated */
    memcpy(st->col[7], in->col[5], in->dim * sizeof(float));
    st->nbt = 3;
}

static void state_free(run_state *st)
{
    for (int k = 0; k < 4; k++) {
        free(st->in[k]);
        free(st->out[k]);
    }
    free(st->q);
    for (int k = 0; k < NCOL; k++)
        free(st->col[k]);
}

/* ---- the digest ---------------------------------------------------------------------------- */

typedef struct fnv {
    uint64_t h;
    int canon; /* NaNs hashed as one canonical NaN of their dtype */
} fnv;

static void fnv_bytes(fnv *f, const void *p, size_t n) { f->h = keel_fnv1a_add(f->h, p, n); }

static void fnv_f32(fnv *f, const float *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t b;
        memcpy(&b, p + i, 4);
        if (f->canon && isnan(p[i]))
            b = 0x7fc00000u;
        fnv_bytes(f, &b, 4);
    }
}

static void fnv_u16(fnv *f, const uint16_t *p, size_t n, keel_dtype dt)
{
    for (size_t i = 0; i < n; i++) {
        uint16_t b = p[i];
        if (f->canon && dt == KEEL_BF16 && (b & 0x7f80u) == 0x7f80u && (b & 0x7fu))
            b = 0x7fc0u;
        if (f->canon && dt == KEEL_F16 && (b & 0x7c00u) == 0x7c00u && (b & 0x3ffu))
            b = 0x7e00u;
        fnv_bytes(f, &b, 2);
    }
}

static uint64_t digest(const run_state *st, int canon)
{
    fnv f = {KEEL_FNV1A_START, canon};
    const size_t n = st->rows * st->stride;
    for (int k = 0; k < 4; k++) {
        if (st->dt == KEEL_F32)
            fnv_f32(&f, st->out[k], n);
        else
            fnv_u16(&f, st->out[k], n, st->dt);
    }
    fnv_bytes(&f, st->q, n);
    for (int k = 0; k < NCOL; k++)
        fnv_f32(&f, st->col[k], st->ncol);
    fnv_bytes(&f, &st->nbt, sizeof st->nbt);
    return f.h;
}

/* ---- the operations -------------------------------------------------------------------------- */

typedef enum op {
    LN_FWD, LN_BWD, RMS_FWD, RMS_FWD_GEMMA, RMS_BWD, LN_FWD_I8, RMS_FWD_I8, ADD_LN_FWD, ADD_LN_BWD,
    ADD_RMS_FWD, ADD_RMS_BWD, LS_FWD, LS_BWD, BN_FWD_TRAIN, BN_FWD_EVAL, BN_BWD_TRAIN, BN_BWD_EVAL,
    DYT_FWD, DYT_BWD, OP_COUNT
} op;
static const char *const op_names[OP_COUNT] = {
    "layernorm_fwd", "layernorm_bwd", "rmsnorm_fwd", "rmsnorm_fwd_gemma", "rmsnorm_bwd",
    "layernorm_fwd_i8", "rmsnorm_fwd_i8", "add_layernorm_fwd", "add_layernorm_bwd",
    "add_rmsnorm_fwd", "add_rmsnorm_bwd", "layerscale_fwd", "layerscale_bwd",
    "batchnorm_fwd_train", "batchnorm_fwd_eval", "batchnorm_bwd_train", "batchnorm_bwd_eval",
    "dyt_fwd", "dyt_bwd"};

static int f32_only(op o) { return o >= BN_FWD_TRAIN && o <= BN_BWD_EVAL; }

static keel_status run_op(keel_ctx *ctx, op o, const inputs *in, run_state *st)
{
    const size_t rows = st->rows, dim = st->dim, ld = st->stride;
    const keel_dtype dt = st->dt;
    const keel_tensor x = tensor(st->in[0], dt, ld), r = tensor(st->in[1], dt, ld);
    const keel_tensor dy = tensor(st->in[2], dt, ld), dh = tensor(st->in[3], dt, ld);
    const keel_tensor o0 = tensor(st->out[0], dt, ld), o1 = tensor(st->out[1], dt, ld);
    const float *gamma = in->col[0], *beta = in->col[1], *lambda = in->col[2], *bias = in->col[3];
    float **c = st->col;
    const float eps = 1e-5f;
    const unsigned acc = KEEL_FLAG_ACCUMULATE_DX | KEEL_FLAG_ACCUMULATE_DPARAMS;
    keel_residual res = keel_residual_add(x, r);
    res.alpha = 1.25f;
    res.lambda = lambda;
    res.bias = bias;
    keel_residual_grads grads = {o0, o1, c[4], c[5]};
    switch (o) {
    case LN_FWD: return keel_layernorm_fwd(ctx, rows, dim, x, o0, gamma, beta, eps, c[0], c[1], 0);
    case LN_BWD:
        return keel_layernorm_bwd(ctx, rows, dim, dy, x, NULL, NULL, gamma, eps, o0, c[2], c[3], acc);
    case RMS_FWD: return keel_rmsnorm_fwd(ctx, rows, dim, x, o0, gamma, eps, c[1], 0);
    case RMS_FWD_GEMMA:
        return keel_rmsnorm_fwd(ctx, rows, dim, x, o0, gamma, eps, c[1], KEEL_FLAG_GAMMA_PLUS_ONE);
    case RMS_BWD: return keel_rmsnorm_bwd(ctx, rows, dim, dy, x, NULL, gamma, eps, o0, c[2], 0);
    case LN_FWD_I8: {
        const keel_quant_i8 q = {0.0f, c[9], in->col[4]}; /* dynamic per-row scale, smoothed */
        return keel_layernorm_fwd_i8(ctx, rows, dim, x, tensor(st->q, KEEL_I8, ld), gamma, beta, eps,
                                     &q, c[0], c[1], 0);
    }
    case RMS_FWD_I8: {
        const keel_quant_i8 q = {0.03125f, NULL, NULL};
        return keel_rmsnorm_fwd_i8(ctx, rows, dim, x, tensor(st->q, KEEL_I8, ld), gamma, eps, &q, c[1],
                                   0);
    }
    case ADD_LN_FWD:
        return keel_add_layernorm_fwd(ctx, rows, dim, &res, o0, o1, gamma, beta, eps, c[0], c[1], 0);
    case ADD_LN_BWD:
        return keel_add_layernorm_bwd(ctx, rows, dim, dy, dh, &res, keel_none(), NULL, NULL, gamma, eps,
                                      &grads, c[2], c[3], 0);
    case ADD_RMS_FWD:
        return keel_add_rmsnorm_fwd(ctx, rows, dim, &res, o0, o1, gamma, eps, c[1], 0);
    case ADD_RMS_BWD:
        return keel_add_rmsnorm_bwd(ctx, rows, dim, dy, dh, &res, keel_none(), NULL, gamma, eps, &grads,
                                    c[2], acc | KEEL_FLAG_GAMMA_PLUS_ONE);
    case LS_FWD: return keel_layerscale_fwd(ctx, rows, dim, x, r, lambda, o0, 0);
    case LS_BWD: return keel_layerscale_bwd(ctx, rows, dim, dh, r, lambda, o0, o1, c[4], acc);
    case BN_FWD_TRAIN:
        return keel_batchnorm_fwd(ctx, rows, dim, x, o0, gamma, beta, eps, 1, 0.1f, c[6], c[7], &st->nbt,
                                  c[0], c[1], 0);
    case BN_FWD_EVAL:
        return keel_batchnorm_fwd(ctx, rows, dim, x, o0, gamma, beta, eps, 0, 0.1f, in->col[4],
                                  in->col[5], NULL, c[0], c[1], 0);
    case BN_BWD_TRAIN:
        return keel_batchnorm_bwd(ctx, rows, dim, dy, x, NULL, NULL, gamma, eps, 1, o0, c[2], c[3], acc);
    case BN_BWD_EVAL: /* the running statistics as mean and rstd */
        return keel_batchnorm_bwd(ctx, rows, dim, dy, x, in->col[4], in->col[5], gamma, eps, 0, o0, c[2],
                                  c[3], 0);
    case DYT_FWD: return keel_dyt_fwd(ctx, rows, dim, x, o0, 0.75f, gamma, beta, 0);
    case DYT_BWD:
        return keel_dyt_bwd(ctx, rows, dim, dy, x, 0.75f, gamma, o0, c[8], c[2], c[3], acc);
    default: return KEEL_EINVAL;
    }
}

int main(void)
{
    test_begin("test_cross_digest");
    keel_isa isas[3];
    const int nisa = test_isas(isas);
    keel_ctx *ctx = test_ctx(1);
    printf("paths:");
    for (int i = 0; i < nisa; i++)
        printf(" %s", keel_isa_name(isas[i]));
    printf(" (and %s on 3 threads)\n", keel_isa_name(isas[nisa - 1]));
    static const keel_dtype dtypes[] = {KEEL_F32, KEEL_BF16, KEEL_F16};
    static const char *const dtype_names[] = {"f32", "bf16", "f16"};
    for (size_t si = 0; si < sizeof sets / sizeof sets[0]; si++) {
        const set *s = &sets[si];
        inputs in;
        inputs_make(&in, s);
        fnv f = {UINT64_C(0xcbf29ce484222325), 0};
        for (int k = 0; k < NROW; k++)
            fnv_f32(&f, in.row[k], in.rows * in.stride);
        for (int k = 0; k < 6; k++)
            fnv_f32(&f, in.col[k], in.dim);
        printf("digest inputs - %s %zux%zu %016" PRIx64 "\n", s->name, s->rows, s->dim, f.h);
        for (int di = 0; di < 3; di++) {
            run_state st;
            state_make(&st, &in, dtypes[di]);
            for (int o = 0; o < OP_COUNT; o++) {
                if (di > 0 && f32_only((op)o))
                    continue;
                uint64_t first = 0;
                for (int p = 0; p <= nisa; p++) { /* p == nisa: the best path on 3 threads */
                    const keel_isa isa = isas[p < nisa ? p : nisa - 1];
                    test_set_isa(ctx, isa);
                    keel_ctx_set_threads(ctx, p < nisa ? 1 : 3);
                    state_reset(&st, &in);
                    const keel_status rc = run_op(ctx, (op)o, &in, &st);
                    if (!test_check(rc == KEEL_OK, "%s %s set %s path %s: %s (%s)", op_names[o],
                                    dtype_names[di], s->name, keel_isa_name(isa), keel_status_str(rc),
                                    keel_last_error()))
                        continue;
                    const uint64_t h = digest(&st, s->special);
                    if (p == 0) {
                        first = h;
                        printf("digest %s %s %s %016" PRIx64 "\n", op_names[o], dtype_names[di], s->name, h);
                    } else {
                        test_check(h == first, "%s %s set %s: path %s%s gives digest %016" PRIx64
                                               ", scalar %016" PRIx64,
                                   op_names[o], dtype_names[di], s->name, keel_isa_name(isa),
                                   p < nisa ? "" : " (3 threads)", h, first);
                    }
                }
            }
            state_free(&st);
        }
        inputs_free(&in);
    }
    keel_ctx_destroy(ctx);
    return test_finish();
}
