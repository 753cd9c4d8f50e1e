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
#define KEEL_VERSION_MINOR 1
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
    KEEL_EOVERFLOW = 5,    /* a size computation overflows size_t */
    KEEL_EISA = 6,         /* a requested instruction set is unknown or not available on this CPU */
    KEEL_EIO = 7,          /* a file could not be read or written */
    KEEL_EFORMAT = 8,      /* a file or buffer is malformed, truncated or of another format */
    KEEL_ETHREAD = 9       /* a worker thread could not be started */
} keel_status;

/* A short, static description of a status ("invalid argument"); never NULL. */
KEEL_API const char *keel_status_str(keel_status status);

/* The message of the last error on the calling thread, naming the argument and its bad value,
 * e.g. "keel_layernorm_fwd: x.stride (3) < dim (4)". Empty string if none. Thread-local. */
KEEL_API const char *keel_last_error(void);

/* Run-time version: KEEL_VERSION_NUMBER of the library actually loaded. */
KEEL_API int keel_version(void);
/* "0.1.0" */
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
    KEEL_ISA_AVX512 = 2  /* x86-64 AVX-512 F/BW/VL */
} keel_isa;

/* "scalar", "avx2", "avx512" ("auto" for KEEL_ISA_AUTO, "unknown" otherwise). */
KEEL_API const char *keel_isa_name(keel_isa isa);
/* 1 when this CPU (and OS, through xgetbv) can run the path, else 0. */
KEEL_API int keel_isa_available(keel_isa isa);
/* The path KEEL_ISA_AUTO resolves to: KEEL_ISA when set (it must name an available path), else
 * the best available. KEEL_EISA if KEEL_ISA names an unknown or unavailable path. */
KEEL_API keel_status keel_isa_default(keel_isa *isa);

/* The context: a thread pool and the chosen kernels. One context may be used from one thread
 * at a time; separate contexts may be used from many threads at once. */
typedef struct keel_ctx keel_ctx;

/* nthreads <= 0: one thread per online core. The calling thread is one of the threads.
 * Honors KEEL_ISA (scalar|avx2|avx512): an unknown or unavailable path is KEEL_EISA. */
KEEL_API keel_status keel_ctx_create(keel_ctx **ctx, int nthreads);
/* NULL is fine. */
KEEL_API void keel_ctx_destroy(keel_ctx *ctx);
KEEL_API int keel_ctx_threads(const keel_ctx *ctx);
/* Change the thread count (<= 0: online cores). Results do not depend on it: every operation
 * is bitwise identical for any thread count. */
KEEL_API keel_status keel_ctx_set_threads(keel_ctx *ctx, int nthreads);
/* Force an instruction-set path for this context (KEEL_ISA_AUTO: the default). All paths give
 * bitwise identical results; this exists for tests and benchmarks. */
KEEL_API keel_status keel_ctx_set_isa(keel_ctx *ctx, keel_isa isa);
KEEL_API keel_isa keel_ctx_isa(const keel_ctx *ctx);

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

/* ---- Low precision: bf16/f16 storage, int8 output, eps against the storage type -------------
 *
 * x, y, dy and dx of the four operations above may each be KEEL_F32, KEEL_BF16 or KEEL_F16, in
 * any combination. gamma, beta, mean, rstd, dgamma and dbeta stay float32. Rows are widened to
 * float32 exactly, computed as for float32 (statistics in double), and each output element is
 * rounded once, to nearest even; a NaN stays NaN. eps is held in float32 whatever the dtype, so
 * an eps of 1e-12 never becomes 0 (an all-zero f16 row with eps 1e-12 gives beta, not NaN).
 * KEEL_FLAG_ACCUMULATE_DX on a bf16/f16 dx adds in float32 and rounds the sum once. */

/* "f32", "bf16", "f16", "i8" ("?" otherwise). */
KEEL_API const char *keel_dtype_name(keel_dtype dtype);

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

#ifdef __cplusplus
}
#endif

#endif /* KEEL_H */
