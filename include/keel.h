/*
 * keel.h - normalization layers for transformers (LayerNorm, RMSNorm), forward and backward.
 *
 * One header, C11. Every function returns a keel_status; on an error no output is changed and
 * keel_last_error() names the argument and the bad value. The library never aborts, exits or
 * prints because of what a caller passed.
 *
 * Tensors are batches of `rows` rows of `dim` features. Each tensor argument is a keel_tensor:
 * a pointer, a dtype and a row stride in elements (stride >= dim, so a row may sit inside a
 * wider buffer such as packed QKV). Statistics (mean, rstd) and parameter gradients are always
 * dense float32 arrays: mean/rstd hold `rows` values, gamma/beta/dgamma/dbeta hold `dim`.
 */
#ifndef KEEL_H
#define KEEL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KEEL_VERSION_MAJOR 0
#define KEEL_VERSION_MINOR 2
#define KEEL_VERSION_PATCH 0
/* KEEL_VERSION_MAJOR * 10000 + MINOR * 100 + PATCH, as keel_version() returns at run time. */
#define KEEL_VERSION_NUMBER (KEEL_VERSION_MAJOR * 10000 + KEEL_VERSION_MINOR * 100 + KEEL_VERSION_PATCH)

#if defined(_WIN32) && defined(KEEL_BUILDING_SHARED)
#define KEEL_API __declspec(dllexport)
#elif defined(__GNUC__)
#define KEEL_API __attribute__((visibility("default")))
#else
#define KEEL_API
#endif

/* Status codes. The numbers are pinned: they never change between versions. */
typedef enum keel_status {
    KEEL_OK = 0,
    KEEL_ENULL = 1,        /* a required pointer (context, tensor, output) is NULL */
    KEEL_EINVAL = 2,       /* an argument has an invalid value (dim 0, stride < dim, bad eps, flags) */
    KEEL_EUNSUPPORTED = 3, /* valid request this build or version does not support (e.g. a dtype) */
    KEEL_ENOMEM = 4,       /* an allocation failed */
    KEEL_EOVERFLOW = 5,    /* a size computation overflows size_t, or a tensor spans more than PTRDIFF_MAX bytes */
    KEEL_EISA = 6,         /* a requested instruction set is unknown or not available on this CPU */
    KEEL_EIO = 7,          /* a file could not be read or written */
    KEEL_EFORMAT = 8,      /* a file or buffer is malformed, truncated or of another format */
    KEEL_ETHREAD = 9,      /* a worker thread could not be started */
    KEEL_EBUSY = 10        /* the context is in use by another thread (keel_ctx: one thread at a
                              time); nothing was done, the call may be retried */
} keel_status;

/* A short, static description of a status ("invalid argument"); never NULL. */
KEEL_API const char *keel_status_str(keel_status status);

/* The message of the last error on the calling thread, naming the argument and its bad value,
 * e.g. "keel_layernorm_fwd: x.stride (3) < dim (4)". Empty string if none. Thread-local. */
KEEL_API const char *keel_last_error(void);

/* Run-time version: KEEL_VERSION_NUMBER of the library actually loaded. */
KEEL_API int keel_version(void);
/* "0.2.0" */
KEEL_API const char *keel_version_string(void);

/* Storage types. The numbers are pinned. The norm operations take f32, bf16 and f16 tensors
 * (see "Low precision" below); i8 is an output of the *_fwd_i8 operations only. */
typedef enum keel_dtype {
    KEEL_F32 = 0,
    KEEL_BF16 = 1,
    KEEL_F16 = 2,
    KEEL_I8 = 3
} keel_dtype;

/* A batch of rows in memory: row r starts at element r * stride of data. */
typedef struct keel_tensor {
    void *data;       /* NULL means "absent" where the argument is optional */
    keel_dtype dtype;
    size_t stride;    /* elements between the starts of consecutive rows; must be >= dim */
} keel_tensor;

/* A float32 tensor view. The pointer is taken as void * so inputs can be const data;
 * keel never writes through an input. */
static inline keel_tensor keel_f32(const float *data, size_t stride)
{
    keel_tensor t;
    t.data = (void *)(uintptr_t)data;
    t.dtype = KEEL_F32;
    t.stride = stride;
    return t;
}

/* The absent tensor (data NULL): for optional outputs such as dx. */
static inline keel_tensor keel_none(void)
{
    keel_tensor t;
    t.data = NULL;
    t.dtype = KEEL_F32;
    t.stride = 0;
    return t;
}

/* Instruction-set paths of the kernels. The numbers are pinned. */
typedef enum keel_isa {
    KEEL_ISA_AUTO = -1,  /* the best the CPU has (or the KEEL_ISA environment variable) */
    KEEL_ISA_SCALAR = 0, /* portable C, every architecture */
    KEEL_ISA_AVX2 = 1,   /* x86-64 AVX2 + FMA */
    KEEL_ISA_AVX512 = 2, /* x86-64 AVX-512 F/BW/VL */
    KEEL_ISA_NEON = 3    /* aarch64 NEON (Advanced SIMD; every aarch64 CPU has it) */
} keel_isa;

/* "scalar", "avx2", "avx512", "neon" ("auto" for KEEL_ISA_AUTO, "unknown" otherwise). */
KEEL_API const char *keel_isa_name(keel_isa isa);
/* 1 when this CPU (and OS, through xgetbv) can run the path, else 0. */
KEEL_API int keel_isa_available(keel_isa isa);
/* The name of the i-th kernel (i = 0, 1, ...) that the path isa runs on this CPU, as defined in
 * src/kernels: "keel_f32_layernorm_fwd__avx512", ... (the avx512 path's bf16 norms are
 * "..__avx512bf16" on a CPU with AVX512_BF16); the neon path names the scalar kernel of an op it
 * does not run natively yet. NULL past the last kernel or for a path this build lacks. */
KEEL_API const char *keel_kernel_name(keel_isa isa, int i);
/* The path KEEL_ISA_AUTO resolves to: KEEL_ISA when set (it must name an available path), else
 * the best available. KEEL_EISA if KEEL_ISA names an unknown or unavailable path. */
KEEL_API keel_status keel_isa_default(keel_isa *isa);

/* The context: a thread pool and the chosen kernels. One context may be used from one thread
 * at a time; separate contexts may be used from many threads at once. A context may be handed
 * from one thread to another between calls (the hand-over must order the calls, as a mutex or
 * a thread join does). The rule is checked: an operation or a keel_ctx_set_* call that finds
 * the context in a call on another thread returns KEEL_EBUSY at once, having done nothing (the
 * call in progress is not disturbed). The getters (keel_ctx_threads, _isa, _min_parallel) and
 * keel_ctx_destroy are not checked: never call them while another thread uses the context. */
typedef struct keel_ctx keel_ctx;

/* The most threads a context may have. A larger nthreads is KEEL_EINVAL; nthreads <= 0 takes
 * one thread per online core, at most this many. */
#define KEEL_MAX_THREADS 1024

/* nthreads <= 0: one thread per online core. The calling thread is one of the threads: an
 * operation runs a share of its rows on it, with up to 128 KiB of the caller's stack (the
 * context's own threads get 1 MiB stacks, whatever the C library's default).
 * nthreads > KEEL_MAX_THREADS: KEEL_EINVAL.
 * Honors KEEL_ISA (scalar|avx2|avx512|neon): an unknown or unavailable path is KEEL_EISA. */
KEEL_API keel_status keel_ctx_create(keel_ctx **ctx, int nthreads);
/* NULL is fine. */
KEEL_API void keel_ctx_destroy(keel_ctx *ctx);
KEEL_API int keel_ctx_threads(const keel_ctx *ctx);
/* Change the thread count (<= 0: online cores; > KEEL_MAX_THREADS: KEEL_EINVAL). Results do not
 * depend on it: every operation is bitwise identical for any thread count. */
KEEL_API keel_status keel_ctx_set_threads(keel_ctx *ctx, int nthreads);
/* Calls on fewer than `elems` elements (rows x dim) run on the calling thread alone: waking the
 * pool costs more than it saves there. Default KEEL_DEFAULT_MIN_PARALLEL (measure it on a machine
 * with `keel threads`); 0: always use every thread. Results never depend on it. */
#define KEEL_DEFAULT_MIN_PARALLEL ((size_t)32768)
KEEL_API keel_status keel_ctx_set_min_parallel(keel_ctx *ctx, size_t elems);
KEEL_API size_t keel_ctx_min_parallel(const keel_ctx *ctx);
/* Force an instruction-set path for this context (KEEL_ISA_AUTO: the default). All paths give
 * bitwise identical results (NaNs in the same places; the sign and payload bits of a NaN are
 * not specified); this exists for tests and benchmarks. */
KEEL_API keel_status keel_ctx_set_isa(keel_ctx *ctx, keel_isa isa);
KEEL_API keel_isa keel_ctx_isa(const keel_ctx *ctx);
/* Runs fn(arg, i, n) once for each i = 0 .. n - 1, each on one of the context's threads (i = 0 on
 * the caller; n <= 0: n = keel_ctx_threads(ctx)), and returns when every one has returned: the
 * threads an operation of ctx runs on, for a caller's own work beside keel's (keel bench times
 * its floors on them). The context is taken for the whole run, as by an operation: a keel call
 * on ctx from fn returns KEEL_EBUSY. KEEL_ENULL for a NULL ctx or fn, KEEL_EINVAL for n above
 * keel_ctx_threads(ctx), KEEL_EBUSY as an operation; nothing is run then. */
typedef void (*keel_task_fn)(void *arg, int index, int n);
KEEL_API keel_status keel_ctx_run(keel_ctx *ctx, int n, keel_task_fn fn, void *arg);

/* Flags of the operations (bitwise or). Unknown bits are KEEL_EINVAL. */
enum {
    KEEL_FLAG_ACCUMULATE_DX = 1u << 0,     /* backward: dx += gradient instead of dx = gradient */
    KEEL_FLAG_ACCUMULATE_DPARAMS = 1u << 1 /* backward: dgamma += ..., dbeta += ... */
};

/*
 * LayerNorm forward, per row:
 *   mean = sum(x) / dim,  var = sum((x - mean)^2) / dim  (biased),  rstd = 1 / sqrt(var + eps)
 *   y = (x - mean) * rstd * gamma + beta
 * gamma, beta: dim floats, or NULL for 1 and 0. mean, rstd: optional outputs, rows floats each
 * (save them for the backward). y may be x (same data and stride: in place).
 * eps must be finite and >= 0. rows == 0 is a no-op returning KEEL_OK; dim == 0 is KEEL_EINVAL.
 * A row holding NaN or Inf gives NaN in all of that row's y, mean and rstd, and no other row is
 * touched. A constant row gives y == beta exactly (rstd = 1/sqrt(eps)).
 * flags: 0 (reserved).
 */
KEEL_API keel_status keel_layernorm_fwd(keel_ctx *ctx, size_t rows, size_t dim,
                                        keel_tensor x, keel_tensor y,
                                        const float *gamma, const float *beta, float eps,
                                        float *mean, float *rstd, unsigned flags);

/*
 * LayerNorm backward. With xhat = (x - mean) * rstd and g = dy * gamma:
 *   dx     = rstd * (g - mean(g) - xhat * mean(g * xhat))        (centred form)
 *   dgamma = sum over rows of dy * xhat,  dbeta = sum over rows of dy
 * mean and rstd: the forward's saved statistics, both or neither (NULL: recomputed from x with
 * eps). dx (data NULL), dgamma and dbeta (NULL) may each be skipped, and their work with them.
 * KEEL_FLAG_ACCUMULATE_DX adds into dx; KEEL_FLAG_ACCUMULATE_DPARAMS adds into dgamma/dbeta.
 * dx may alias dy (same data and stride).
 */
KEEL_API keel_status keel_layernorm_bwd(keel_ctx *ctx, size_t rows, size_t dim,
                                        keel_tensor dy, keel_tensor x,
                                        const float *mean, const float *rstd,
                                        const float *gamma, float eps,
                                        keel_tensor dx, float *dgamma, float *dbeta,
                                        unsigned flags);

/*
 * RMSNorm forward, per row: rstd = 1 / sqrt(sum(x^2) / dim + eps),  y = x * rstd * gamma.
 * gamma NULL means 1. rstd: optional output (rows floats). In place allowed. Same rules for
 * rows, dim, eps, NaN/Inf as LayerNorm; an all-zero row gives y == 0.
 */
KEEL_API keel_status keel_rmsnorm_fwd(keel_ctx *ctx, size_t rows, size_t dim,
                                      keel_tensor x, keel_tensor y,
                                      const float *gamma, float eps, float *rstd,
                                      unsigned flags);

/*
 * RMSNorm backward. With xhat = x * rstd and g = dy * gamma:
 *   dx = rstd * (g - xhat * mean(g * xhat)),  dgamma = sum over rows of dy * xhat
 * rstd NULL: recomputed from x with eps. Same skipping and flags as keel_layernorm_bwd.
 */
KEEL_API keel_status keel_rmsnorm_bwd(keel_ctx *ctx, size_t rows, size_t dim,
                                      keel_tensor dy, keel_tensor x, const float *rstd,
                                      const float *gamma, float eps,
                                      keel_tensor dx, float *dgamma, unsigned flags);

/* ==== Transformer blocks ======================================================================
 * Fused residual add + LayerNorm / RMSNorm (pre-norm, post-norm, DeepNorm), LayerScale,
 * BatchNorm (for contrast), DyT, and Gemma's (1 + gamma) scale. Same rules as above:
 * statistics in double, centred formulas, NaN/Inf kept to its row, results bitwise identical on
 * every path and thread count, bad input changes nothing. The row tensors may be bf16 or f16
 * as for the norms ("Low precision" below), except BatchNorm's (float32 only); per-feature
 * vectors (gamma, beta, lambda, bias) and their gradients are float32. docs/blocks.md has the
 * formulas and the mapping to ONNX Runtime and PyTorch. */

/* RMSNorm (keel_rmsnorm_fwd/bwd, keel_add_rmsnorm_fwd/bwd): apply gamma as (1 + gamma), Gemma's
 * convention (weights initialised to zero). The weight used is (float)(1.0f + gamma[j]); gamma
 * NULL means a weight of 1. dgamma is the gradient with respect to gamma (the same numbers). */
enum { KEEL_FLAG_GAMMA_PLUS_ONE = 1u << 2 };

/* The residual stream of the fused ops, per element:
 *   h = alpha * x + lambda * r + bias    evaluated in float as ((alpha*x) + (lambda*r)) + bias
 * x: the residual stream coming in; r: the branch output (ONNX Runtime's "skip" is x or r:
 * addition is commutative); alpha: 1 for a plain residual, DeepNorm's (2L)^(1/4) up-weighting;
 * lambda: LayerScale's per-feature scale (dim floats) or NULL for 1; bias: dim floats or NULL. */
typedef struct keel_residual {
    keel_tensor x;
    keel_tensor r;
    float alpha;          /* finite */
    const float *lambda;  /* dim floats or NULL */
    const float *bias;    /* dim floats or NULL */
} keel_residual;

/* h = x + r: alpha 1, no lambda, no bias. */
static inline keel_residual keel_residual_add(keel_tensor x, keel_tensor r)
{
    keel_residual res;
    res.x = x;
    res.r = r;
    res.alpha = 1.0f;
    res.lambda = NULL;
    res.bias = NULL;
    return res;
}

/*
 * Fused residual add + LayerNorm, forward: h = alpha*x + lambda*r + bias (above), then
 * y = LayerNorm(h) exactly as keel_layernorm_fwd computes it on the float h (bitwise the same).
 * x and r are read once; h is written (the new residual stream: pre-norm blocks) or, with
 * h.data NULL, not at all (post-norm: y = LayerNorm(x + r), DeepNorm: LayerNorm(alpha*x + r)).
 * h may be x or r (in place), y may be x or r; h and y must be different tensors.
 * mean, rstd: optional outputs (rows floats) as in keel_layernorm_fwd. flags: 0.
 * ONNX Runtime's SkipLayerNormalization(input, skip, gamma, beta, bias) -> (output, mean,
 * inv_std_var, input_skip_bias_sum) is res = {input, skip, 1, NULL, bias}, y = output,
 * mean, rstd = inv_std_var, h = input_skip_bias_sum.
 */
KEEL_API keel_status keel_add_layernorm_fwd(keel_ctx *ctx, size_t rows, size_t dim,
                                            const keel_residual *res, keel_tensor h,
                                            keel_tensor y, const float *gamma,
                                            const float *beta, float eps, float *mean,
                                            float *rstd, unsigned flags);

/* Fused residual add + RMSNorm, forward: h as above, y = RMSNorm(h) as keel_rmsnorm_fwd.
 * flags: KEEL_FLAG_GAMMA_PLUS_ONE. ONNX Runtime's SkipSimplifiedLayerNormalization. */
KEEL_API keel_status keel_add_rmsnorm_fwd(keel_ctx *ctx, size_t rows, size_t dim,
                                          const keel_residual *res, keel_tensor h,
                                          keel_tensor y, const float *gamma, float eps,
                                          float *rstd, unsigned flags);

/* The gradients of the residual's inputs, each optional (data / pointer NULL: not computed).
 * With G = dh + (the norm's dx from dy), the gradient reaching h:
 *   dx = alpha * G,  dr = lambda * G (G without lambda),
 *   dlambda = sum over rows of G * r,  dbias = sum over rows of G.
 * KEEL_FLAG_ACCUMULATE_DX adds into dx and dr; KEEL_FLAG_ACCUMULATE_DPARAMS into dlambda and
 * dbias (and dgamma, dbeta). */
typedef struct keel_residual_grads {
    keel_tensor dx;
    keel_tensor dr;
    float *dlambda; /* dim floats or NULL */
    float *dbias;   /* dim floats or NULL */
} keel_residual_grads;

/*
 * Fused residual add + LayerNorm, backward.
 * dy: the gradient of y (required). dh: the gradient of h from above (the residual stream's,
 * in a pre-norm stack), or data NULL for 0 (post-norm). h: the forward's h, or data NULL to
 * recompute it from res (bitwise the same h). res: alpha, lambda, and the x and r tensors:
 * res->x is read only when h is absent, res->r only when h is absent or dlambda is wanted
 * (their data may be NULL otherwise: after an in-place forward x is gone, and h stands for it).
 * mean, rstd: the forward's, both or neither (NULL: recomputed). grads may be NULL.
 * dgamma, dbeta: as in keel_layernorm_bwd. Any output may be exactly one of the inputs
 * (dx = dh: the residual stream's gradient updated in place); dx and dr must differ.
 * With alpha 1 and no lambda, dx is bitwise keel_layernorm_bwd(dy, h) accumulated into dh.
 * flags: KEEL_FLAG_ACCUMULATE_DX, KEEL_FLAG_ACCUMULATE_DPARAMS.
 */
KEEL_API keel_status keel_add_layernorm_bwd(keel_ctx *ctx, size_t rows, size_t dim,
                                            keel_tensor dy, keel_tensor dh,
                                            const keel_residual *res, keel_tensor h,
                                            const float *mean, const float *rstd,
                                            const float *gamma, float eps,
                                            const keel_residual_grads *grads, float *dgamma,
                                            float *dbeta, unsigned flags);

/* Fused residual add + RMSNorm, backward: as keel_add_layernorm_bwd with RMSNorm's backward;
 * rstd NULL: recomputed. flags: also KEEL_FLAG_GAMMA_PLUS_ONE. */
KEEL_API keel_status keel_add_rmsnorm_bwd(keel_ctx *ctx, size_t rows, size_t dim,
                                          keel_tensor dy, keel_tensor dh,
                                          const keel_residual *res, keel_tensor h,
                                          const float *rstd, const float *gamma, float eps,
                                          const keel_residual_grads *grads, float *dgamma,
                                          unsigned flags);

/*
 * LayerScale (Touvron et al. 2021, CaiT): h = x + lambda * f, lambda per feature (dim floats,
 * required; CaiT initialises it to 0.1 for stacks up to depth 18, 1e-5 at 24, 1e-6 deeper).
 * Bitwise the h of the fused ops with res = {x, f, 1, lambda, NULL}, which also fuse it with
 * the norm that follows. h may be x or f (in place). flags: 0.
 */
KEEL_API keel_status keel_layerscale_fwd(keel_ctx *ctx, size_t rows, size_t dim, keel_tensor x,
                                         keel_tensor f, const float *lambda, keel_tensor h,
                                         unsigned flags);

/* LayerScale backward: dx = dh, df = lambda * dh, dlambda = sum over rows of dh * f. Each
 * output optional; f is needed only for dlambda. dx or df may be dh (in place).
 * flags: KEEL_FLAG_ACCUMULATE_DX (dx, df), KEEL_FLAG_ACCUMULATE_DPARAMS (dlambda). */
KEEL_API keel_status keel_layerscale_bwd(keel_ctx *ctx, size_t rows, size_t dim, keel_tensor dh,
                                         keel_tensor f, const float *lambda, keel_tensor dx,
                                         keel_tensor df, float *dlambda, unsigned flags);

/*
 * BatchNorm over the rows of a batch, per feature j (dim features; an NCHW image batch is
 * rows = N*H*W of dim = C once its channels are last). PyTorch's conventions:
 *  training != 0: mean_j and the biased var_j of the batch normalize it,
 *    y = (x - mean) * rstd * gamma + beta, rstd = 1/sqrt(var + eps);
 *    running_mean = (1 - m) * running_mean + m * mean,
 *    running_var  = (1 - m) * running_var  + m * var * rows / (rows - 1)   (unbiased),
 *    computed in double and rounded once, with m = momentum (PyTorch's default 0.1; ONNX's
 *    momentum 0.9 means m = 0.1 here), or, for momentum NAN (PyTorch's momentum=None), the
 *    cumulative average m = 1 / num_batches_tracked after its increment. running_mean and
 *    running_var are optional together (NULL: not tracked); *num_batches_tracked, when given,
 *    is incremented with them (it is required for momentum NAN; it must lie in
 *    [0, INT64_MAX - 1], else KEEL_EINVAL and nothing written). rows must be >= 2: a batch of
 *    one row has no variance (KEEL_EINVAL, not NaN).
 *  training == 0 (inference): running_mean and running_var (required) normalize,
 *    rstd = 1/sqrt(running_var + eps); nothing is updated.
 * save_mean, save_rstd: optional outputs (dim floats each): the mean and rstd used (the
 * backward's input). A NaN or Inf in column j makes that feature's outputs (and its running
 * statistics) NaN and no other. y may be x. eps finite >= 0; momentum NAN or in [0, 1]. flags: 0.
 */
KEEL_API keel_status keel_batchnorm_fwd(keel_ctx *ctx, size_t rows, size_t dim, keel_tensor x,
                                        keel_tensor y, const float *gamma, const float *beta,
                                        float eps, int training, float momentum,
                                        float *running_mean, float *running_var,
                                        int64_t *num_batches_tracked, float *save_mean,
                                        float *save_rstd, unsigned flags);

/* BatchNorm backward. training != 0: through the batch statistics,
 *   dx = rstd * (g - mean_rows(g) - xhat * mean_rows(g * xhat)), g = dy * gamma;
 * training == 0: the statistics are constants, dx = rstd * g.
 * dgamma = sum over rows of dy * xhat, dbeta = sum over rows of dy (dim floats).
 * mean, rstd: the forward's save_mean, save_rstd; in training they may both be NULL
 * (recomputed from x), in inference they are required. Skipping and flags as
 * keel_layernorm_bwd; dx may be dy. */
KEEL_API keel_status keel_batchnorm_bwd(keel_ctx *ctx, size_t rows, size_t dim, keel_tensor dy,
                                        keel_tensor x, const float *mean, const float *rstd,
                                        const float *gamma, float eps, int training,
                                        keel_tensor dx, float *dgamma, float *dbeta,
                                        unsigned flags);

/*
 * DyT, Dynamic Tanh (Zhu et al. 2025), a normalization-free replacement of LayerNorm:
 *   y = gamma * tanh(alpha * x) + beta,  alpha a learnable scalar (initialised to 0.5).
 * Elementwise: a NaN affects its own element only. tanh is keel's own float32 tanh, within
 * 2 ulps, the same bits on every path. gamma, beta NULL: 1, 0. y may be x. flags: 0.
 */
KEEL_API keel_status keel_dyt_fwd(keel_ctx *ctx, size_t rows, size_t dim, keel_tensor x,
                                  keel_tensor y, float alpha, const float *gamma,
                                  const float *beta, unsigned flags);

/* DyT backward, with t = tanh(alpha * x), s = 1 - t^2 (computed without cancelling near 1):
 *   dx = dy * gamma * alpha * s,  dalpha = sum over all elements of dy * gamma * x * s,
 *   dgamma = sum over rows of dy * t,  dbeta = sum over rows of dy.
 * dalpha: one float or NULL. Skipping and flags as keel_layernorm_bwd; dx may be dy. */
KEEL_API keel_status keel_dyt_bwd(keel_ctx *ctx, size_t rows, size_t dim, keel_tensor dy,
                                  keel_tensor x, float alpha, const float *gamma,
                                  keel_tensor dx, float *dalpha, float *dgamma, float *dbeta,
                                  unsigned flags);

/* ==== end of Transformer blocks ============================================================== */

/* ---- Low precision: bf16/f16 storage, int8 output, eps against the storage type -------------
 *
 * x, y, dy and dx of the four operations above may each be KEEL_F32, KEEL_BF16 or KEEL_F16, in
 * any combination, and so may the row tensors of the fused add + norm ops, LayerScale and DyT
 * (x, r, h, y and their gradients). gamma, beta, mean, rstd, dgamma and dbeta stay float32. Rows are widened to
 * float32 exactly, computed as for float32 (statistics in double), and each output element is
 * rounded once, to nearest even; a NaN stays NaN. eps is held in float32 whatever the dtype, so
 * an eps of 1e-12 never becomes 0 (an all-zero f16 row with eps 1e-12 gives beta, not NaN).
 * KEEL_FLAG_ACCUMULATE_DX on a bf16/f16 dx adds in float32 and rounds the sum once. */

/* "f32", "bf16", "f16", "i8" ("?" otherwise). */
KEEL_API const char *keel_dtype_name(keel_dtype dtype);

/* Converts rows x dim elements of src into dst, each f32, bf16 or f16: float32 -> bf16/f16
 * rounds to nearest even once, with IEEE subnormals (no flush to zero), values beyond the
 * format's range become +-Inf; bf16/f16 -> float32 is exact; bf16 <-> f16 goes through float32
 * (exact) and so rounds once. A NaN stays a NaN, made quiet, with its sign and top payload bits.
 * The rounding of the norm operations' low-precision outputs, the same bits on every path. dst
 * may be src itself (same data, stride and dtype: nothing to do) or disjoint from it. */
KEEL_API keel_status keel_convert(keel_ctx *ctx, size_t rows, size_t dim, keel_tensor src,
                                  keel_tensor dst);

/* int8 quantization of a forward's output, for an int8 matmul downstream:
 *   y_q = clamp(round_half_even(y / s), -127, 127)     (a NaN y gives 0)
 * with s = scale (per tensor) when scale > 0, or, when scale == 0, a dynamic per-row scale
 * s_row = max|y_row| / 127 written to row_scale[r] (a row of zeros gets s_row = 0 and y_q = 0;
 * a row with NaN gets s_row = NaN and y_q = 0). smooth (dim floats, optional, each > 0):
 * SmoothQuant's per-feature factors, folded into the affine parameters before the forward:
 * gamma'[j] = gamma[j] / smooth[j] and beta'[j] = beta[j] / smooth[j] (float32 divisions). */
typedef struct keel_quant_i8 {
    float scale;          /* > 0: per-tensor scale; 0: dynamic per-row scale */
    float *row_scale;     /* rows floats, written when scale == 0 (required then) */
    const float *smooth;  /* dim floats or NULL */
} keel_quant_i8;

/* LayerNorm / RMSNorm forward writing int8 y (y.dtype must be KEEL_I8). x may be f32/bf16/f16.
 * mean/rstd as in the float forward. */
KEEL_API keel_status keel_layernorm_fwd_i8(keel_ctx *ctx, size_t rows, size_t dim,
                                           keel_tensor x, keel_tensor y,
                                           const float *gamma, const float *beta, float eps,
                                           const keel_quant_i8 *quant,
                                           float *mean, float *rstd, unsigned flags);
KEEL_API keel_status keel_rmsnorm_fwd_i8(keel_ctx *ctx, size_t rows, size_t dim,
                                         keel_tensor x, keel_tensor y,
                                         const float *gamma, float eps,
                                         const keel_quant_i8 *quant, float *rstd, unsigned flags);

/* What an eps means for a storage dtype (keel_eps_check). */
typedef struct keel_eps_info {
    float eps;                 /* the eps asked about */
    float eps_in_dtype;        /* eps rounded to the dtype: what a runtime storing it there uses */
    int representable;         /* 1 if eps_in_dtype is nonzero and within 1% of eps */
    int subnormal_in_dtype;    /* 1 if eps_in_dtype is a subnormal of the dtype (few digits left) */
    double max_amplification;  /* 1/sqrt(eps): rstd of a constant row, the gain on its gradients */
    double dominance_variance; /* a row variance below this (= eps) is dominated by eps */
    double dtype_noise_variance; /* variance of the dtype's rounding noise on unit-scale values */
    float suggested_eps;       /* a power of ten suited to the dtype (see keel_eps_check) */
} keel_eps_info;

/* Fills *info for (dtype, eps). suggested_eps: the smallest power of ten at least as large as
 * both the dtype's smallest normal number (so it is stored exactly enough) and the variance
 * of the dtype's rounding noise on unit-scale activations, (2^-p)^2 / 12 with p the dtype's
 * fraction bits (so a constant row that carries only rounding noise is not amplified into
 * unit-scale output). KEEL_EINVAL for a negative/NaN/Inf eps, KEEL_EUNSUPPORTED for KEEL_I8. */
KEEL_API keel_status keel_eps_check(keel_dtype dtype, float eps, keel_eps_info *info);

/* ==== Monitor: distribution shift from normalization statistics ================================
 * A monitor has one slot per normalization layer. The caller passes it the per-row statistics
 * a forward computes anyway (LayerNorm's mean and rstd, RMSNorm's rstd); the monitor keeps, per
 * slot, streaming moments (Welford, mergeable) and fixed-bin histograms of the per-token mean
 * and log(rstd) of the current window. A baseline is the window captured on calibration data;
 * keel_monitor_score compares the current window with it: z-score of the window's means,
 * population stability index (PSI) and Kolmogorov-Smirnov distance of the histograms, per slot
 * and combined. Thresholds for the combined score are calibrated on held-out in-distribution
 * windows to a chosen false-alarm rate. Baselines are saved to a versioned little-endian file
 * with a checksum ("KEELMON1"); a short, foreign, other-version or corrupted file is
 * KEEL_EFORMAT with a message saying which. A monitor is used by one thread at a time; for
 * several threads, give each a monitor and keel_monitor_merge them in a fixed order (the
 * result is then deterministic). */
typedef struct keel_monitor keel_monitor;

typedef struct keel_monitor_config {
    int bins;       /* histogram bins per statistic, plus an underflow and an overflow bin (0: 32) */
    double range_sd; /* keel_monitor_fit_ranges: range = mean +- range_sd * sd (0: 4) */
} keel_monitor_config;

#define KEEL_MONITOR_MEAN 0    /* statistic index: the per-token mean (LayerNorm only) */
#define KEEL_MONITOR_LOGRSTD 1 /* statistic index: log(rstd) */
#define KEEL_MONITOR_MAX_BUCKETS 16 /* window sizes with their own calibrated threshold */

KEEL_API keel_status keel_monitor_create(keel_monitor **mon, int nslots, const keel_monitor_config *cfg);
KEEL_API void keel_monitor_destroy(keel_monitor *mon);
KEEL_API int keel_monitor_slots(const keel_monitor *mon);
/* Adds `rows` tokens' statistics of one slot to the current window. mean may be NULL (RMSNorm);
 * rstd is required. Rows with a non-finite or non-positive rstd are counted apart (not in the
 * moments or histograms). */
KEEL_API keel_status keel_monitor_observe(keel_monitor *mon, int slot, size_t rows, const float *mean,
                                          const float *rstd);
/* Empties the current window (the baseline and calibration are kept). */
KEEL_API keel_status keel_monitor_reset_window(keel_monitor *mon);
/* Adds src's window into dst's window (same slots and histogram ranges). */
KEEL_API keel_status keel_monitor_merge(keel_monitor *dst, const keel_monitor *src);
/* The window's moments of one slot and statistic: count, mean, variance (population). */
KEEL_API keel_status keel_monitor_window_moments(const keel_monitor *mon, int slot, int stat, double *count,
                                                 double *mean, double *var);
/* Histogram ranges from the window's moments (mean +- range_sd * sd), then empties the window.
 * Histograms count nothing until ranges are set (here or on loading a baseline). */
KEEL_API keel_status keel_monitor_fit_ranges(keel_monitor *mon);
/* The window becomes the baseline (and the window is emptied); calibration is cleared. */
KEEL_API keel_status keel_monitor_capture_baseline(keel_monitor *mon);
/* Threshold calibration: after each held-out in-distribution window, add it (the window is then
 * emptied); finish computes, per window size seen, the standardisation of every component and
 * the (1 - false_alarm) quantile of the combined score. */
KEEL_API keel_status keel_monitor_calibrate_add(keel_monitor *mon);
KEEL_API keel_status keel_monitor_calibrate_finish(keel_monitor *mon, double false_alarm);

typedef struct keel_monitor_slot_score {
    double tokens;   /* in the window */
    int has_mean;    /* 0: RMSNorm (only log-rstd) */
    double z[2];     /* (window mean - baseline mean) / (baseline sd / sqrt(tokens)), per statistic */
    double psi[2];   /* population stability index of the histograms */
    double ks[2];    /* Kolmogorov-Smirnov distance of the histograms (at the bin edges) */
    double score;    /* mean standardised component (|z|, PSI, KS) of this slot; raw mean if uncalibrated */
    /* Each component standardised as the combined score uses it: (value - its mean on the
     * calibration windows) / their sd, at the calibrated window size nearest the window's;
     * [statistic][0: |z|, 1: PSI, 2: KS]. NaN where the component is absent (no mean for
     * RMSNorm) or the monitor is uncalibrated. The largest says which statistic of which norm
     * moved most, in units of its own clean variation (keel monitor score names it). */
    double standardised[2][3];
    /* Per-channel statistics (keel_monitor_channels); NaN / -1 where the slot has none or the
     * window holds none. maha: the diagonal Mahalanobis distance of the window's mean-pooled
     * input features to the baseline's, squared and divided by the width:
     * (1/C) sum_c n (mean_w[c] - mean_b[c])^2 / var_b[c], about 1 for in-distribution windows
     * of independent tokens (more for correlated ones: compare with clean windows of the same
     * size). top_channel / top_channel_z: the channel whose window mean moved most, and its
     * z = sqrt(n) (mean_w - mean_b) / sd_b. log_var_ratio: the mean over channels of
     * log(var_w[c] / var_b[c]), 0 as on the baseline; a layer whose activations were scaled by
     * s moves it by 2 log s. channel_tokens: rows in the window's per-channel statistics. */
    double maha;
    int top_channel;
    double top_channel_z;
    double log_var_ratio;
    double channel_tokens;
    /* Rows of the window left out of the per-token statistics: a non-finite or non-positive
     * rstd, or a non-finite mean (an overflow, Inf rows). They are in no score above: a caller
     * that treats them as an alarm (keel monitor faults does) sees them here. */
    double bad_rows;
} keel_monitor_slot_score;

typedef struct keel_monitor_result {
    double combined;   /* mean of the standardised components over every slot */
    double threshold;  /* calibrated for the nearest window size; NaN if uncalibrated */
    int alarm;         /* combined > threshold, or a slot's window holds rows with non-finite
                        * statistics (bad_rows > 0 in its slot score: a numeric fault, an alarm
                        * even without calibration) */
    int calibrated;
    double bucket_tokens; /* the window size whose calibration was used */
    double false_alarm;   /* the rate it was calibrated to */
} keel_monitor_result;

/* Scores the current window against the baseline. slots: nslots entries, or NULL. */
KEEL_API keel_status keel_monitor_score(const keel_monitor *mon, keel_monitor_slot_score *slots,
                                        keel_monitor_result *res);
KEEL_API keel_status keel_monitor_baseline_save(const keel_monitor *mon, const char *path);
/* Creates *mon from a baseline file (its slots, ranges, baseline, calibration and per-channel
 * statistics). Reads format versions 1 (no per-channel statistics) and 2; the saver writes
 * version 1 when no slot has per-channel statistics, so older keels read those files. */
KEEL_API keel_status keel_monitor_baseline_load(keel_monitor **mon, const char *path);

/* ---- Per-channel statistics ----------------------------------------------------
 * Beside the per-token mean and rstd, a slot may keep, per feature of the norm's input (its
 * `width` channels), the running mean and variance over the window (NMD-style: Dong et al.
 * 2022), mergeable like the rest (Chan's formula, deterministic for a fixed call order). The
 * baseline captures them too, and keel_monitor_score reports, per slot, the diagonal
 * Mahalanobis distance of the window's mean-pooled features (Lee et al. 2018) and the channel
 * that moved most (keel_monitor_slot_score.maha, top_channel). Diagonal, not full: the full
 * covariance costs width^2 per token to accumulate (128x the per-channel moments at width 128,
 * well over the 1%-of-a-forward budget) and width*(width+1)/2 parameters from token-correlated
 * data. Each variance is floored at 1e-6 of the mean variance of the slot's channels (a
 * constant feature would otherwise divide by zero). The relative Mahalanobis distance (Ren et
 * al. 2023) subtracts the distance to a background Gaussian fitted to all training data; with
 * one in-distribution "class" that background is the baseline itself, so it is not reported.
 *
 * Per forward, an inference server makes one call, keel_monitor_observe_forward, with every
 * norm's statistics and inputs; nothing is allocated in it (the state is allocated by
 * keel_monitor_channels). Cost measured in docs/monitor/channels.md. */
/* Turns per-channel statistics on for one slot: width features per row of the norm's input
 * (1..65536). Allocates; KEEL_ENOMEM leaves the slot as it was. Again with the same width: no
 * change; with another: KEEL_EINVAL. Call before capturing the baseline. */
KEEL_API keel_status keel_monitor_channels(keel_monitor *mon, int slot, int width);
/* The slot's per-channel width, 0 when off (or mon NULL, slot out of range). */
KEEL_API int keel_monitor_channel_width(const keel_monitor *mon, int slot);
/* Adds `rows` rows of the norm's input x (row r at x + r * ld, width floats; ld >= width) to
 * the slot's per-channel window. Rows holding a NaN or Inf are counted apart and skipped.
 * KEEL_ENULL / KEEL_EINVAL (slot, ld, per-channel statistics off) change nothing. */
KEEL_API keel_status keel_monitor_observe_channels(keel_monitor *mon, int slot, size_t rows,
                                                   const float *x, size_t ld);
/* Adds pre-aggregated per-channel moments to the slot's window: count rows whose channels have
 * the means mean[width] and sums of squared deviations m2[width] (what another worker, or a
 * recording kept per group of rows, holds). count must be a whole number >= 1, means finite,
 * m2 finite and >= 0; else KEEL_EINVAL naming the argument (and channel), nothing changed. */
KEEL_API keel_status keel_monitor_add_channel_moments(keel_monitor *mon, int slot, double count,
                                                      const double *mean, const double *m2);
/* One norm's statistics of one forward, for keel_monitor_observe_forward. */
typedef struct keel_monitor_norm_io {
    const float *mean; /* rows per-token means, or NULL (RMSNorm) */
    const float *rstd; /* rows per-token rstd (required) */
    const float *x;    /* the norm's input, rows x ld; NULL: no per-channel statistics this time */
    size_t ld;         /* x's row stride in floats (>= the slot's width) */
} keel_monitor_norm_io;
/* One call per forward: io[0..nslots) in slot order. Every argument is checked first; an
 * error (naming the slot and the argument) changes nothing. */
KEEL_API keel_status keel_monitor_observe_forward(keel_monitor *mon, size_t rows,
                                                  const keel_monitor_norm_io *io);
/* Per-channel moments of one slot, of the window (baseline 0) or the baseline (1): count, and
 * mean / variance (population) of each channel into mean[width], var[width] (either NULL).
 * bad (may be NULL): the window's rows skipped as non-finite (0 for the baseline). */
KEEL_API keel_status keel_monitor_channel_moments(const keel_monitor *mon, int slot, int baseline,
                                                  double *count, double *mean, double *var,
                                                  double *bad);
/* ==== end of Monitor ========================================================================== */

#ifdef __cplusplus
}
#endif

#endif /* KEEL_H */
