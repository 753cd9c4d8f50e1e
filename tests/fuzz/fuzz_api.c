/* Fuzz target: the public API of keel.h (docs/reliability.md, "Fuzzing").
 *
 * The input decodes to one call: the operation (every operation of keel.h: LayerNorm and
 * RMSNorm forward and backward and their int8 forwards, the fused add + norms both ways,
 * LayerScale, BatchNorm, DyT, keel_eps_check, keel_convert, the context setters and
 * keel_ctx_run), rows, dim,
 * each tensor's dtype (valid, unsupported where it is, or no keel_dtype), stride (too small included), where
 * its data lies (its own buffer, NULL, exactly another tensor of the call: in place, or inside
 * another at an offset: overlapping), every optional pointer present or NULL, eps (negative,
 * NaN, Inf, subnormal included), flags (unknown bits included), the scalars (alpha, momentum,
 * training, quantisation scale), the values (small, raw bits, with NaN/Inf/subnormals,
 * constant rows), sizes whose byte count overflows size_t, and a NULL context.
 *
 * Every buffer lies in one static arena with guard bytes between buffers, and the call is made
 * once on every instruction-set path the machine has (each its own one-thread context) and,
 * when the input asks, on a two-thread context that wakes its pool for any size. Checked:
 *  - every status is a keel_status value, the same on every path;
 *  - on an error, every byte of the arena is as it was and keel_last_error() is not empty;
 *  - on KEEL_OK, no byte changed outside the call's outputs (the elements of its output rows,
 *    not the stride's padding, and its output vectors); rows == 0 changes nothing;
 *  - the outputs are the same bits on every path and thread count. keel.h leaves the sign and
 *    payload of a NaN unspecified ("NaNs in the same places"), so NaN outputs are compared
 *    after being set to one quiet NaN of their dtype: the position of every NaN still counts.
 * Sizes stay small (rows <= 16, dim <= 64) so that a run makes thousands of calls a second,
 * except one input in eight (WIDE_DB and up), whose rows (at most 4) are WIDE_MIN to about 1,100
 * values wide: past KEEL_U16_MIN_DIM (256), where the bf16/fp16 norms read and write their
 * tensors in place instead of staging them, and past the SIMD paths' short-row plans. One 256
 * KiB arena is reused by every input; only the bytes an input used are checked and reset. */
#include "fuzz_common.h" /* first: it sets _POSIX_C_SOURCE */

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "keel.h"

#include "error.h" /* keel_clear_error: each call must set its own message */

enum {
    ARENA = 1 << 18,
    MAX_ROWS = 16,
    MAX_DIM = 64,
    WIDE_DB = 224,   /* db from here to 254: a wide row */
    WIDE_MIN = 240,  /* the narrowest wide row: just below the in-place 16-bit cut (256) */
    WIDE_ROWS = 4,
    GUARD = 48, /* bytes before each buffer, never an output */
    MAX_TENSORS = 8,
};

/* What kind[] says of a byte: which output element starts there (NaNs are set to one quiet
 * NaN of the dtype before paths are compared), part of one, or not an output at all. */
enum { K_NONE = 0, K_F32, K_BF16, K_F16, K_RAW, K_PART };

static _Alignas(64) uint8_t arena[ARENA];
static uint8_t before[ARENA], first[ARENA], canon[ARENA], kind[ARENA];
static size_t used, last_used;

static keel_ctx *path_ctx[4]; /* one per available instruction-set path, one thread each */
static keel_isa path_isa[4];
static int npaths;
static keel_ctx *mt_ctx;   /* two threads, min_parallel 0: the pool runs every call */
static keel_ctx *misc_ctx; /* for the setters */

/* ---- values -----------------------------------------------------------------------------------
 */

static uint64_t rng;
static uint32_t next32(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

static const float specials[] = {
    0.0f,    -0.0f,           NAN,           -NAN,           INFINITY, -INFINITY, 1e-45f,
    -1e-40f, 1.17549435e-38f, 3.4028235e38f, -3.4028235e38f, 1e20f,    1.0f};

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* One element's bits in the given style: 0 small values, 1 raw bits, 2 small with specials,
 * 3 the row's constant (c). */
static uint32_t value_bits(int style, uint32_t c, int esize)
{
    uint32_t r = next32();
    float f = (float)((int32_t)(r & 0xffff) - 32768) / 8192.0f; /* [-4, 4) */
    uint32_t u;
    switch (style) {
    case 1:
        u = next32();
        break;
    case 2:
        u = (r >> 16) % 8 == 0
                ? f32_bits(specials[(r >> 19) % (sizeof specials / sizeof *specials)])
                : f32_bits(f);
        break;
    case 3:
        u = c;
        break;
    default:
        u = f32_bits(f);
        break;
    }
    if (esize == 2 && style != 1) {
        /* bf16: the top half of the float; f16 is filled the same way (an f16 read of those
         * bits is some finite value, NaN or Inf: all of them are fair input) */
        u >>= 16;
    }
    return u;
}

static void fill(uint8_t *p, size_t bytes, int esize, int style)
{
    uint32_t c = value_bits(style == 3 ? 2 : 0, 0, 4);
    for (size_t i = 0; i + (size_t)esize <= bytes; i += (size_t)esize) {
        uint32_t u = value_bits(style, c, esize);
        memcpy(p + i, &u, (size_t)esize); /* little-endian hosts: the low bytes */
    }
}

/* ---- buffers in the arena ---------------------------------------------------------------------
 */

static size_t esize_of(keel_dtype d)
{
    return d == KEEL_BF16 || d == KEEL_F16 ? 2 : d == KEEL_I8 ? 1 : 4;
}

/* A new buffer of n bytes after a guard, its start misaligned by mis elements of esize (SIMD
 * paths must not assume alignment beyond the element's). NULL when the arena is full. */
static uint8_t *arena_alloc(size_t n, size_t esize, unsigned mis)
{
    size_t at = (used + GUARD + 63) / 64 * 64 + (mis % 16) * esize;
    if (at + n + GUARD > ARENA)
        return NULL;
    used = at + n;
    return arena + at;
}

/* The call being decoded. */
typedef struct call {
    fz_reader *in;
    size_t rows, dim;
    int huge; /* sizes whose byte count overflows: the call must fail */
    int bad;  /* the arena is full: skip the input */
    keel_tensor t[MAX_TENSORS];
    size_t t_bytes[MAX_TENSORS];
    int nt;
} call;

static size_t extent(size_t rows, size_t dim, size_t stride)
{
    return rows ? (rows - 1) * stride + dim : dim;
}

/* Marks an output tensor's elements (row r: elements r * stride + [0, dim)). */
static void mark_tensor(const call *c, keel_tensor t)
{
    if (!t.data || c->huge || c->rows == 0)
        return;
    const size_t es = esize_of(t.dtype);
    const int k = t.dtype == KEEL_F32    ? K_F32
                  : t.dtype == KEEL_BF16 ? K_BF16
                  : t.dtype == KEEL_F16  ? K_F16
                                         : K_RAW;
    for (size_t r = 0; r < c->rows; r++)
        for (size_t j = 0; j < c->dim; j++) {
            size_t off = (size_t)((uint8_t *)t.data - arena) + (r * t.stride + j) * es;
            if (off + es > ARENA)
                return;
            kind[off] = (uint8_t)k;
            for (size_t b = 1; b < es; b++)
                kind[off + b] = K_PART;
        }
}

static void mark_floats(const call *c, const float *p, size_t n)
{
    if (!p || c->huge || c->rows == 0)
        return;
    size_t off = (size_t)((const uint8_t *)p - arena);
    for (size_t i = 0; i < n && off + 4 * i + 4 <= ARENA; i++) {
        kind[off + 4 * i] = K_F32;
        memset(kind + off + 4 * i + 1, K_PART, 3);
    }
}

static void mark_raw(const call *c, const void *p, size_t n)
{
    if (!p || c->huge || c->rows == 0)
        return;
    memset(kind + ((const uint8_t *)p - arena), K_RAW, n);
}

static keel_dtype pick_dtype(fz_reader *in, keel_dtype natural)
{
    uint8_t b = fz_u8(in);
    if (b < 128)
        return natural;
    static const int table[] = {KEEL_F32, KEEL_BF16, KEEL_F16, KEEL_I8, 4, -1};
    return (keel_dtype)table[b % 6];
}

/* A tensor argument. Outputs are marked by the caller (after every tensor is placed). */
static keel_tensor tensor(call *c, keel_dtype natural)
{
    fz_reader *in = c->in;
    keel_tensor t = keel_none();
    uint8_t where = fz_u8(in), sb = fz_u8(in);
    t.dtype = pick_dtype(in, natural);
    if (c->huge) {
        static const size_t strides[] = {SIZE_MAX, SIZE_MAX / 2 + 1, SIZE_MAX / 4 + 3,
                                         (size_t)1 << 62};
        t.stride = strides[sb % 4];
    } else if (sb < 160) {
        t.stride = c->dim;
    } else {
        long s = (long)c->dim + (long)(sb % 8) - 2; /* dim - 2 .. dim + 5 */
        t.stride = s < 0 ? 0 : (size_t)s;
    }
    const size_t es = esize_of(t.dtype);
    const size_t n = c->huge ? 64 : extent(c->rows, c->dim, t.stride) * es;
    /* 0-11 its own buffer, 12 absent, 13-14 exactly another tensor, 15 inside another one */
    int mode = where % 16;
    if (mode >= 13 && c->nt == 0)
        mode = 0;
    if (mode == 12) {
        t.data = NULL;
    } else if (mode >= 13) {
        const int k = fz_u8(in) % c->nt;
        const keel_tensor o = c->t[k];
        if (mode < 15 || !o.data) {
            /* exactly another tensor: in place where the operation allows it */
            t.data = o.data;
            t.stride = o.stride;
            t.dtype = o.dtype;
        } else {
            /* inside another tensor at an offset (its own stride and dtype): overlapping,
             * or interleaved rows of one buffer (packed QKV), which keel accepts */
            size_t off = (size_t)fz_u8(in) % (o.stride * esize_of(o.dtype) + 8);
            off -= off % es;
            uint8_t *p = (uint8_t *)o.data + off;
            /* keep every byte it spans inside the arena, past the slack left after o */
            if ((size_t)(p - arena) + n + GUARD > ARENA)
                t.data = o.data;
            else
                t.data = p;
            if ((size_t)((uint8_t *)t.data - arena) + n > used)
                used = (size_t)((uint8_t *)t.data - arena) + n;
        }
    } else {
        /* its own buffer, with room after it for a tensor placed inside it at an offset */
        const size_t slack = c->huge ? 64 : (c->rows * 8 + t.stride + 16) * 4;
        uint8_t *p = arena_alloc(n + slack, es, where >> 4);
        if (!p) {
            c->bad = 1;
        } else {
            fill(p, n, (int)es, fz_u8(in) % 4); /* the slack stays guard bytes */
            t.data = p;
        }
    }
    if (c->nt < MAX_TENSORS) {
        c->t_bytes[c->nt] = n;
        c->t[c->nt++] = t;
    }
    return t;
}

/* A vector of n floats (an input or an output), or NULL. */
static float *vec(call *c, size_t n)
{
    uint8_t b = fz_u8(c->in);
    if (b % 5 == 4)
        return NULL;
    if (c->huge)
        n = 16;
    if (n == 0)
        n = 1;
    float *p = (float *)arena_alloc(n * 4, 4, b >> 4);
    if (!p) {
        c->bad = 1;
        return NULL;
    }
    fill((uint8_t *)p, n * 4, 4, (b >> 2) % 4 == 3 ? 2 : (b >> 2) % 4);
    return p;
}

static float pick_float(fz_reader *in, float usual)
{
    uint8_t b = fz_u8(in);
    if (b < 128)
        return usual;
    if (b < 224)
        return specials[b % (sizeof specials / sizeof *specials)] * (b & 16 ? -1.0f : 1.0f);
    uint32_t u = fz_u32(in);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static float pick_eps(fz_reader *in)
{
    static const float eps[] = {1e-5f,    0.0f,      1e-12f, -1e-5f,        -0.0f, NAN,
                                INFINITY, -INFINITY, 1e-45f, 3.4028235e38f, 1.0f};
    uint8_t b = fz_u8(in);
    if (b < 96)
        return 1e-5f;
    if (b < 240)
        return eps[b % (sizeof eps / sizeof *eps)];
    uint32_t u = fz_u32(in);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static unsigned pick_flags(fz_reader *in)
{
    uint8_t b = fz_u8(in);
    if (b < 64)
        return 0;
    if (b < 240)
        return b & 7u;
    return fz_u32(in);
}

/* ---- the operations ---------------------------------------------------------------------------
 */

enum {
    OP_LN_FWD,
    OP_LN_BWD,
    OP_RMS_FWD,
    OP_RMS_BWD,
    OP_ADD_LN_FWD,
    OP_ADD_RMS_FWD,
    OP_ADD_LN_BWD,
    OP_ADD_RMS_BWD,
    OP_LS_FWD,
    OP_LS_BWD,
    OP_BN_FWD,
    OP_BN_BWD,
    OP_DYT_FWD,
    OP_DYT_BWD,
    OP_LN_FWD_I8,
    OP_RMS_FWD_I8,
    OP_EPS_CHECK,
    OP_CONVERT,
    NOPS
};

/* Every argument of every operation, decoded once; the call reads what its operation takes. */
typedef struct args {
    int op;
    size_t rows, dim;
    keel_tensor a, b, c, d, e; /* the row tensors, in the order the operation takes them */
    float *v[8];               /* per-feature and per-row vectors */
    keel_residual res;
    const keel_residual *resp;
    keel_residual_grads grads;
    const keel_residual_grads *gradsp;
    keel_quant_i8 quant;
    const keel_quant_i8 *quantp;
    int64_t *nbt;
    keel_eps_info *info;
    float eps, alpha, momentum;
    int training;
    int dtype_arg;
    unsigned flags;
} args;

static keel_status invoke(keel_ctx *ctx, const args *g)
{
    const size_t R = g->rows, D = g->dim;
    float *const *v = g->v;
    switch (g->op) {
    case OP_LN_FWD:
        return keel_layernorm_fwd(ctx, R, D, g->a, g->b, v[0], v[1], g->eps, v[2], v[3], g->flags);
    case OP_LN_BWD:
        return keel_layernorm_bwd(ctx, R, D, g->a, g->b, v[0], v[1], v[2], g->eps, g->c, v[3], v[4],
                                  g->flags);
    case OP_RMS_FWD:
        return keel_rmsnorm_fwd(ctx, R, D, g->a, g->b, v[0], g->eps, v[1], g->flags);
    case OP_RMS_BWD:
        return keel_rmsnorm_bwd(ctx, R, D, g->a, g->b, v[0], v[1], g->eps, g->c, v[2], g->flags);
    case OP_ADD_LN_FWD:
        return keel_add_layernorm_fwd(ctx, R, D, g->resp, g->c, g->d, v[0], v[1], g->eps, v[2],
                                      v[3], g->flags);
    case OP_ADD_RMS_FWD:
        return keel_add_rmsnorm_fwd(ctx, R, D, g->resp, g->c, g->d, v[0], g->eps, v[1], g->flags);
    case OP_ADD_LN_BWD:
        return keel_add_layernorm_bwd(ctx, R, D, g->a, g->b, g->resp, g->e, v[0], v[1], v[2],
                                      g->eps, g->gradsp, v[3], v[4], g->flags);
    case OP_ADD_RMS_BWD:
        return keel_add_rmsnorm_bwd(ctx, R, D, g->a, g->b, g->resp, g->e, v[0], v[1], g->eps,
                                    g->gradsp, v[2], g->flags);
    case OP_LS_FWD:
        return keel_layerscale_fwd(ctx, R, D, g->a, g->b, v[0], g->c, g->flags);
    case OP_LS_BWD:
        return keel_layerscale_bwd(ctx, R, D, g->a, g->b, v[0], g->c, g->d, v[1], g->flags);
    case OP_BN_FWD:
        return keel_batchnorm_fwd(ctx, R, D, g->a, g->b, v[0], v[1], g->eps, g->training,
                                  g->momentum, v[2], v[3], g->nbt, v[4], v[5], g->flags);
    case OP_BN_BWD:
        return keel_batchnorm_bwd(ctx, R, D, g->a, g->b, v[0], v[1], v[2], g->eps, g->training,
                                  g->c, v[3], v[4], g->flags);
    case OP_DYT_FWD:
        return keel_dyt_fwd(ctx, R, D, g->a, g->b, g->alpha, v[0], v[1], g->flags);
    case OP_DYT_BWD:
        return keel_dyt_bwd(ctx, R, D, g->a, g->b, g->alpha, v[0], g->c, v[1], v[2], v[3],
                            g->flags);
    case OP_LN_FWD_I8:
        return keel_layernorm_fwd_i8(ctx, R, D, g->a, g->b, v[0], v[1], g->eps, g->quantp, v[2],
                                     v[3], g->flags);
    case OP_RMS_FWD_I8:
        return keel_rmsnorm_fwd_i8(ctx, R, D, g->a, g->b, v[0], g->eps, g->quantp, v[1], g->flags);
    case OP_EPS_CHECK:
        return keel_eps_check((keel_dtype)g->dtype_arg, g->eps, g->info);
    case OP_CONVERT:
        return keel_convert(ctx, R, D, g->a, g->b);
    }
    return KEEL_OK;
}

/* A residual (x, r, alpha, lambda, bias) of the fused operations, or NULL. */
static void residual(call *c, args *g, keel_dtype x_natural, int nullable)
{
    g->res.x = tensor(c, x_natural);
    g->res.r = tensor(c, x_natural);
    g->res.alpha = pick_float(c->in, 1.0f);
    g->res.lambda = vec(c, c->dim);
    g->res.bias = vec(c, c->dim);
    g->resp = nullable && fz_u8(c->in) % 16 == 15 ? NULL : &g->res;
}

/* Decodes the operation's arguments into g and marks its outputs. */
static void decode_op(call *c, args *g)
{
    fz_reader *in = c->in;
    const size_t R = c->rows, D = c->dim;
    float **v = g->v;
    g->eps = pick_eps(in);
    g->flags = pick_flags(in);
    switch (g->op) {
    case OP_LN_FWD:
    case OP_RMS_FWD:
    case OP_LN_FWD_I8:
    case OP_RMS_FWD_I8: {
        const int rms = g->op == OP_RMS_FWD || g->op == OP_RMS_FWD_I8;
        const int i8 = g->op >= OP_LN_FWD_I8;
        g->a = tensor(c, KEEL_F32);
        g->b = tensor(c, i8 ? KEEL_I8 : KEEL_F32);
        v[0] = vec(c, D); /* gamma */
        int k = 1;
        if (!rms)
            v[k++] = vec(c, D); /* beta */
        float *mean = rms ? NULL : vec(c, R);
        float *rstd = vec(c, R);
        if (!rms)
            v[k++] = mean;
        v[k++] = rstd;
        if (i8) {
            uint8_t q = fz_u8(in);
            g->quant.scale = q % 4 == 0 ? 0.0f : pick_float(in, 0.05f);
            g->quant.row_scale = q & 4 ? NULL : vec(c, R);
            g->quant.smooth = q & 8 ? vec(c, D) : NULL;
            if (g->quant.smooth && !(q & 16)) /* mostly the positive factors SmoothQuant has */
                for (size_t j = 0; j < (c->huge ? 16 : D); j++)
                    ((float *)g->quant.smooth)[j] = 0.5f + (float)(next32() % 64) / 16.0f;
            g->quantp = q % 32 == 31 ? NULL : &g->quant;
            mark_floats(c, g->quant.row_scale, R);
        }
        mark_tensor(c, g->b);
        mark_floats(c, mean, R);
        mark_floats(c, rstd, R);
        break;
    }
    case OP_LN_BWD:
    case OP_RMS_BWD: {
        const int rms = g->op == OP_RMS_BWD;
        g->a = tensor(c, KEEL_F32); /* dy */
        g->b = tensor(c, KEEL_F32); /* x */
        int k = 0;
        if (!rms)
            v[k++] = vec(c, R); /* mean */
        v[k++] = vec(c, R);     /* rstd */
        if (v[k - 1]) {         /* a saved rstd is > 0: mostly what a forward leaves */
            uint8_t b = fz_u8(in);
            for (size_t i = 0; b < 200 && i < (c->huge ? 16 : R); i++)
                v[k - 1][i] = 0.25f + (float)(next32() % 64) / 16.0f;
        }
        v[k++] = vec(c, D);         /* gamma */
        g->c = tensor(c, KEEL_F32); /* dx */
        v[k] = vec(c, D);           /* dgamma */
        mark_floats(c, v[k++], D);
        if (!rms) {
            v[k] = vec(c, D); /* dbeta */
            mark_floats(c, v[k], D);
        }
        mark_tensor(c, g->c);
        break;
    }
    case OP_ADD_LN_FWD:
    case OP_ADD_RMS_FWD: {
        const int rms = g->op == OP_ADD_RMS_FWD;
        residual(c, g, KEEL_F32, 1);
        g->c = tensor(c, KEEL_F32); /* h */
        g->d = tensor(c, KEEL_F32); /* y */
        int k = 0;
        v[k++] = vec(c, D);
        if (!rms)
            v[k++] = vec(c, D);
        for (int s = rms ? 1 : 0; s < 2; s++) { /* mean, rstd */
            v[k] = vec(c, R);
            mark_floats(c, v[k++], R);
        }
        mark_tensor(c, g->c);
        mark_tensor(c, g->d);
        break;
    }
    case OP_ADD_LN_BWD:
    case OP_ADD_RMS_BWD: {
        const int rms = g->op == OP_ADD_RMS_BWD;
        g->a = tensor(c, KEEL_F32); /* dy */
        g->b = tensor(c, KEEL_F32); /* dh */
        residual(c, g, KEEL_F32, 1);
        g->e = tensor(c, KEEL_F32); /* h */
        int k = 0;
        if (!rms)
            v[k++] = vec(c, R); /* mean */
        v[k++] = vec(c, R);     /* rstd */
        v[k++] = vec(c, D);     /* gamma */
        g->grads.dx = tensor(c, KEEL_F32);
        g->grads.dr = tensor(c, KEEL_F32);
        g->grads.dlambda = vec(c, D);
        g->grads.dbias = vec(c, D);
        g->gradsp = fz_u8(in) % 8 == 7 ? NULL : &g->grads;
        if (g->gradsp) {
            mark_tensor(c, g->grads.dx);
            mark_tensor(c, g->grads.dr);
            mark_floats(c, g->grads.dlambda, D);
            mark_floats(c, g->grads.dbias, D);
        }
        for (int s = rms ? 1 : 0; s < 2; s++) { /* dgamma, dbeta */
            v[k] = vec(c, D);
            mark_floats(c, v[k++], D);
        }
        break;
    }
    case OP_LS_FWD:
        g->a = tensor(c, KEEL_F32); /* x */
        g->b = tensor(c, KEEL_F32); /* f */
        v[0] = vec(c, D);           /* lambda */
        g->c = tensor(c, KEEL_F32); /* h */
        mark_tensor(c, g->c);
        break;
    case OP_LS_BWD:
        g->a = tensor(c, KEEL_F32); /* dh */
        g->b = tensor(c, KEEL_F32); /* f */
        v[0] = vec(c, D);           /* lambda */
        g->c = tensor(c, KEEL_F32); /* dx */
        g->d = tensor(c, KEEL_F32); /* df */
        v[1] = vec(c, D);           /* dlambda */
        mark_tensor(c, g->c);
        mark_tensor(c, g->d);
        mark_floats(c, v[1], D);
        break;
    case OP_BN_FWD: {
        g->a = tensor(c, KEEL_F32);
        g->b = tensor(c, KEEL_F32);
        v[0] = vec(c, D);
        v[1] = vec(c, D);
        uint8_t t = fz_u8(in);
        g->training = t < 200 ? t & 1 : (int)(int8_t)t;
        g->momentum = pick_float(in, 0.1f);
        v[2] = vec(c, D); /* running_mean */
        v[3] = vec(c, D); /* running_var */
        if (v[3] && fz_u8(in) < 200)
            for (size_t j = 0; j < (c->huge ? 16 : D); j++)
                v[3][j] = (float)(next32() % 64) / 16.0f;
        if (fz_u8(in) % 4 != 3) {
            g->nbt = (int64_t *)(void *)arena_alloc(8, 8, 0);
            if (!g->nbt) {
                c->bad = 1;
            } else {
                int64_t n = fz_u8(in) < 240 ? (int64_t)(next32() % 1000) : INT64_MAX;
                memcpy(g->nbt, &n, 8);
            }
        }
        v[4] = vec(c, D); /* save_mean */
        v[5] = vec(c, D); /* save_rstd */
        mark_tensor(c, g->b);
        for (int k = 2; k < 6; k++)
            mark_floats(c, v[k], D);
        mark_raw(c, g->nbt, 8);
        break;
    }
    case OP_BN_BWD: {
        g->a = tensor(c, KEEL_F32); /* dy */
        g->b = tensor(c, KEEL_F32); /* x */
        v[0] = vec(c, D);           /* mean */
        v[1] = vec(c, D);           /* rstd */
        v[2] = vec(c, D);           /* gamma */
        uint8_t t = fz_u8(in);
        g->training = t < 200 ? t & 1 : (int)(int8_t)t;
        g->c = tensor(c, KEEL_F32); /* dx */
        v[3] = vec(c, D);
        v[4] = vec(c, D);
        mark_tensor(c, g->c);
        mark_floats(c, v[3], D);
        mark_floats(c, v[4], D);
        break;
    }
    case OP_DYT_FWD:
        g->a = tensor(c, KEEL_F32);
        g->b = tensor(c, KEEL_F32);
        g->alpha = pick_float(in, 0.5f);
        v[0] = vec(c, D);
        v[1] = vec(c, D);
        mark_tensor(c, g->b);
        break;
    case OP_DYT_BWD:
        g->a = tensor(c, KEEL_F32); /* dy */
        g->b = tensor(c, KEEL_F32); /* x */
        g->alpha = pick_float(in, 0.5f);
        v[0] = vec(c, D);           /* gamma */
        g->c = tensor(c, KEEL_F32); /* dx */
        v[1] = vec(c, 1);           /* dalpha */
        v[2] = vec(c, D);
        v[3] = vec(c, D);
        mark_tensor(c, g->c);
        mark_floats(c, v[1], 1);
        mark_floats(c, v[2], D);
        mark_floats(c, v[3], D);
        break;
    case OP_CONVERT:
        g->a = tensor(c, KEEL_F32); /* src */
        g->b = tensor(c, KEEL_BF16); /* dst */
        mark_tensor(c, g->b);
        break;
    case OP_EPS_CHECK: {
        uint8_t d = fz_u8(in);
        g->dtype_arg = d < 200 ? d % 4 : (int)(int8_t)d;
        if (fz_u8(in) % 4 != 3) {
            g->info = (keel_eps_info *)(void *)arena_alloc(sizeof(keel_eps_info), 8, 0);
            if (!g->info)
                c->bad = 1;
            else /* the whole struct, padding too: a writer may assign the struct */
                memset(kind + ((uint8_t *)g->info - arena), K_RAW, sizeof *g->info);
        }
        break;
    }
    }
}

/* ---- the checks -------------------------------------------------------------------------------
 */

static int valid_status(keel_status st)
{
    return (int)st >= (int)KEEL_OK && (int)st <= (int)KEEL_EBUSY;
}

/* The arena as a path left it, with every NaN output set to one quiet NaN of its dtype. */
static void canonicalise(uint8_t *dst)
{
    memcpy(dst, arena, used);
    for (size_t i = 0; i < used; i++) {
        if (kind[i] == K_F32) {
            uint32_t u;
            memcpy(&u, dst + i, 4);
            if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x7fffffu))
                memcpy(dst + i, &(uint32_t){0x7fc00000u}, 4);
        } else if (kind[i] == K_BF16 || kind[i] == K_F16) {
            uint16_t u;
            memcpy(&u, dst + i, 2);
            const int nan = kind[i] == K_BF16 ? (u & 0x7f80u) == 0x7f80u && (u & 0x7fu)
                                              : (u & 0x7c00u) == 0x7c00u && (u & 0x3ffu);
            if (nan)
                memcpy(dst + i, &(uint16_t){kind[i] == K_BF16 ? 0x7fc0u : 0x7e00u}, 2);
        }
    }
}

static const char *op_names[NOPS] = {"layernorm_fwd",     "layernorm_bwd",     "rmsnorm_fwd",
                                     "rmsnorm_bwd",       "add_layernorm_fwd", "add_rmsnorm_fwd",
                                     "add_layernorm_bwd", "add_rmsnorm_bwd",   "layerscale_fwd",
                                     "layerscale_bwd",    "batchnorm_fwd",     "batchnorm_bwd",
                                     "dyt_fwd",           "dyt_bwd",           "layernorm_fwd_i8",
                                     "rmsnorm_fwd_i8",    "eps_check",         "convert"};

/* Runs the call on ctx from the snapshot and checks it; the first run's result is the one the
 * others must match. Returns the status. */
static keel_status run_on(keel_ctx *ctx, const char *path, const args *g, int is_first,
                          keel_status want, int huge)
{
    memcpy(arena, before, used);
    keel_clear_error();
    const keel_status st = invoke(ctx, g);
    const char *op = op_names[g->op];
    FZ_CHECK(valid_status(st), "%s on %s: status %d is not a keel_status", op, path, (int)st);
    if (st != KEEL_OK) {
        FZ_CHECK(keel_last_error()[0] != '\0', "%s on %s: status %d and no message", op, path,
                 (int)st);
        FZ_CHECK(memcmp(arena, before, used) == 0, "%s on %s: status %d (%s) but a buffer changed",
                 op, path, (int)st, keel_last_error());
    } else {
        FZ_CHECK(!huge, "%s on %s: KEEL_OK for tensors spanning more than the address space", op,
                 path);
        for (size_t i = 0; i < used; i++)
            FZ_CHECK(arena[i] == before[i] || kind[i] != K_NONE,
                     "%s on %s: KEEL_OK, rows %zu, dim %zu, but byte %zu of the arena changed and "
                     "is no output",
                     op, path, g->rows, g->dim, i);
    }
    if (is_first) {
        canonicalise(first);
    } else {
        FZ_CHECK(st == want, "%s: status %d on %s, %d on %s", op, (int)st, path, (int)want,
                 keel_isa_name(path_isa[0]));
        canonicalise(canon);
        if (memcmp(canon, first, used) != 0) {
            size_t i = 0;
            while (canon[i] == first[i])
                i++;
            FZ_CHECK(
                0, "%s, rows %zu, dim %zu: %s and %s differ first at arena byte %zu (%02x vs %02x)",
                op, g->rows, g->dim, path, keel_isa_name(path_isa[0]), i, canon[i], first[i]);
        }
    }
    return st;
}

/* The context setters on a context of their own, put back as they were. */
/* keel_ctx_run's task: counts its calls per index */
static int run_counts[8];
static void count_task(void *arg, int index, int n)
{
    (void)arg;
    if (index >= 0 && index < 8 && n >= 1 && n <= 8)
        __atomic_fetch_add(&run_counts[index], 1, __ATOMIC_RELAXED);
}

static void fuzz_setters(fz_reader *in)
{
    uint8_t which = fz_u8(in);
    keel_status st;
    if (which % 4 == 3) { /* keel_ctx_run on the two-thread context */
        static const int ns[] = {0, 1, 2, 3, -1, INT32_MIN, INT32_MAX, 8};
        const uint8_t b = fz_u8(in);
        const int n = ns[b % 8], with_fn = (b & 0x80) == 0;
        memset(run_counts, 0, sizeof run_counts);
        keel_clear_error();
        st = keel_ctx_run(mt_ctx, n, with_fn ? count_task : NULL, NULL);
        const int threads = keel_ctx_threads(mt_ctx), want = n > 0 ? n : threads;
        const int ok = with_fn && n <= threads;
        FZ_CHECK(valid_status(st) && (st == KEEL_OK) == ok, "keel_ctx_run(n %d, fn %s): status %d",
                 n, with_fn ? "given" : "NULL", (int)st);
        FZ_CHECK(st == KEEL_OK || keel_last_error()[0], "keel_ctx_run(n %d): no message", n);
        for (int i = 0; i < 8; i++)
            FZ_CHECK(run_counts[i] == (st == KEEL_OK && i < want),
                     "keel_ctx_run(n %d): index %d ran %d times", n, i, run_counts[i]);
    } else if (which % 4 == 0) {
        int isa = (int)(int8_t)fz_u8(in);
        keel_clear_error();
        st = keel_ctx_set_isa(misc_ctx, (keel_isa)isa);
        FZ_CHECK(valid_status(st), "keel_ctx_set_isa(%d): status %d", isa, (int)st);
        FZ_CHECK(st == KEEL_OK || keel_last_error()[0], "keel_ctx_set_isa(%d): no message", isa);
        if (st == KEEL_OK && isa != KEEL_ISA_AUTO)
            FZ_CHECK(keel_ctx_isa(misc_ctx) == (keel_isa)isa, "keel_ctx_set_isa(%d) then %d", isa,
                     (int)keel_ctx_isa(misc_ctx));
        if (st == KEEL_OK)
            FZ_CHECK(keel_isa_available(keel_ctx_isa(misc_ctx)),
                     "keel_ctx_set_isa(%d): an unavailable path", isa);
        keel_ctx_set_isa(misc_ctx, KEEL_ISA_AUTO);
    } else if (which % 4 == 1) {
        static const int counts[] = {1, 2, 0, -1, INT32_MIN, KEEL_MAX_THREADS + 1, INT32_MAX, 3};
        const int n = counts[fz_u8(in) % 8];
        const int old = keel_ctx_threads(misc_ctx);
        keel_clear_error();
        st = keel_ctx_set_threads(misc_ctx, n);
        FZ_CHECK(valid_status(st), "keel_ctx_set_threads(%d): status %d", n, (int)st);
        if (st != KEEL_OK) {
            FZ_CHECK(keel_last_error()[0], "keel_ctx_set_threads(%d): no message", n);
            FZ_CHECK(keel_ctx_threads(misc_ctx) == old,
                     "keel_ctx_set_threads(%d) failed and changed the count", n);
        } else {
            FZ_CHECK(keel_ctx_threads(misc_ctx) >= 1 &&
                         keel_ctx_threads(misc_ctx) <= KEEL_MAX_THREADS,
                     "keel_ctx_set_threads(%d): %d threads", n, keel_ctx_threads(misc_ctx));
        }
        keel_ctx_set_threads(misc_ctx, 1);
    } else {
        size_t e = fz_u8(in) < 128 ? fz_u16(in) : SIZE_MAX - fz_u8(in);
        st = keel_ctx_set_min_parallel(misc_ctx, e);
        FZ_CHECK(valid_status(st), "keel_ctx_set_min_parallel: status %d", (int)st);
        if (st == KEEL_OK)
            FZ_CHECK(keel_ctx_min_parallel(misc_ctx) == e,
                     "keel_ctx_set_min_parallel(%zu) then %zu", e, keel_ctx_min_parallel(misc_ctx));
        keel_ctx_set_min_parallel(misc_ctx, KEEL_DEFAULT_MIN_PARALLEL);
    }
    /* the name functions never return NULL, whatever the value */
    const int any = (int)(int8_t)fz_u8(in);
    FZ_CHECK(keel_status_str((keel_status)any) && keel_dtype_name((keel_dtype)any) &&
                 keel_isa_name((keel_isa)any),
             "a name function returned NULL for %d", any);
}

#ifdef FUZZ_API_STATS
/* -DFUZZ_API_STATS: how many calls of each operation succeeded, printed at exit, to see that
 * the decoding reaches the kernels and not only the argument checks */
static long stats[NOPS][2];
static void print_stats(void)
{
    for (int o = 0; o < NOPS; o++) {
        char line[128];
        int k = snprintf(line, sizeof line, "%-18s %6ld ok of %6ld\n", op_names[o], stats[o][1],
                         stats[o][0] + stats[o][1]);
        if (write(2, line, (size_t)k) < 0)
            return;
    }
}
#endif

static void init(void)
{
#ifdef FUZZ_API_STATS
    atexit(print_stats);
#endif
    static const keel_isa isas[] = {KEEL_ISA_SCALAR, KEEL_ISA_AVX2, KEEL_ISA_AVX512, KEEL_ISA_NEON};
    for (int i = 0; i < 4; i++) {
        if (!keel_isa_available(isas[i]))
            continue;
        keel_ctx *ctx = NULL;
        if (keel_ctx_create(&ctx, 1) != KEEL_OK || keel_ctx_set_isa(ctx, isas[i]) != KEEL_OK)
            fz_die("fuzz_api: cannot create a context");
        path_ctx[npaths] = ctx;
        path_isa[npaths++] = isas[i];
    }
    if (keel_ctx_create(&mt_ctx, 2) != KEEL_OK || keel_ctx_set_min_parallel(mt_ctx, 0) != KEEL_OK ||
        keel_ctx_create(&misc_ctx, 1) != KEEL_OK || npaths == 0)
        fz_die("fuzz_api: cannot create a context");
    memset(arena, 0xa5, ARENA);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        init();
        ready = 1;
    }
    fz_reader in = {data, size, 0};
    const uint8_t head = fz_u8(&in);
    const uint8_t rb = fz_u8(&in), db = fz_u8(&in), mode = fz_u8(&in);
    rng = 0x9E3779B97F4A7C15ull ^ fz_u32(&in);
    if (rng == 0)
        rng = 1;
    if (head % (NOPS + 1) == NOPS) {
        fuzz_setters(&in);
        return 0;
    }
    /* every byte the last input used back to one pattern: an input's result must not depend
     * on the inputs before it (libFuzzer reproduces a crash from the input alone) */
    memset(kind, 0, last_used);
    memset(arena, 0xa5, last_used);
    used = 0;
    call c = {&in, rb % (MAX_ROWS + 1), db % (MAX_DIM + 1), 0, 0, {{0}}, {0}, 0};
    if (db == 255)
        c.dim = 0;
    else if (db >= WIDE_DB) { /* 31 bands of 29 widths: 240 .. 1138, rows 0 .. 4 */
        c.rows = rb % (WIDE_ROWS + 1);
        c.dim = WIDE_MIN + (size_t)(db - WIDE_DB) * 29 + (size_t)(rb / (WIDE_ROWS + 1)) % 29;
    } else if (c.dim == 0)
        c.dim = 1 + db % 7; /* dim 0 once in 256, the common sizes otherwise */
    if ((mode & 0x3f) == 0x3f && head % (NOPS + 1) != OP_EPS_CHECK) {
        /* sizes whose byte count overflows size_t: every tensor's stride is near SIZE_MAX */
        static const size_t huge_rows[] = {2, 3, (size_t)1 << 33, SIZE_MAX};
        static const size_t huge_dims[] = {1, 64, SIZE_MAX / 4 + 1, SIZE_MAX};
        c.huge = 1;
        c.rows = huge_rows[rb % 4];
        c.dim = huge_dims[db % 4];
    }
    args g;
    memset(&g, 0, sizeof g);
    g.op = head % (NOPS + 1);
    g.rows = c.rows;
    g.dim = c.dim;
    decode_op(&c, &g);
    last_used = used + GUARD < ARENA ? used + GUARD : ARENA;
    if (c.bad)
        return 0;
    used = last_used; /* the guard after the last buffer is checked too */
    memcpy(before, arena, used);

    if (mode & 0x40) { /* a NULL context: KEEL_ENULL (keel_eps_check takes none) */
        memcpy(arena, before, used);
        keel_clear_error();
        keel_status st = invoke(NULL, &g);
        FZ_CHECK(g.op == OP_EPS_CHECK || st == KEEL_ENULL, "%s with a NULL context: status %d",
                 op_names[g.op], (int)st);
        FZ_CHECK(st == KEEL_OK || memcmp(arena, before, used) == 0,
                 "%s with a NULL context changed a buffer", op_names[g.op]);
    }
    const int np = g.op == OP_EPS_CHECK ? 1 : npaths;
    keel_status want = run_on(path_ctx[0], keel_isa_name(path_isa[0]), &g, 1, KEEL_OK, c.huge);
#ifdef FUZZ_API_STATS
    stats[g.op][want == KEEL_OK]++;
#endif
    for (int p = 1; p < np; p++)
        run_on(path_ctx[p], keel_isa_name(path_isa[p]), &g, 0, want, c.huge);
    if ((mode & 0x80) && g.op != OP_EPS_CHECK)
        run_on(mt_ctx, "2 threads", &g, 0, want, c.huge);
    memcpy(arena, before, used);
    return 0;
}
