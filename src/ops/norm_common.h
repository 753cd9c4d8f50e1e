/* What the LayerNorm and RMSNorm operators share: argument checks for a forward and a
 * backward over float tensors of any storage dtype, staging memory, and SmoothQuant folding. */
#ifndef KEEL_OPS_NORM_COMMON_H
#define KEEL_OPS_NORM_COMMON_H

#include "ctx.h"
#include "stage.h"

/* The 16-bit kernels of one storage dtype (bf16 or f16), chosen once by the setup. */
typedef struct keel_u16_norms {
    keel_u16_layernorm_fwd_fn *layernorm_fwd;
    keel_u16_layernorm_bwd_fn *layernorm_bwd;
    keel_u16_rmsnorm_fwd_fn *rmsnorm_fwd;
    keel_u16_rmsnorm_bwd_fn *rmsnorm_bwd;
} keel_u16_norms;

typedef struct keel_norm_call {
    const keel_kernels *k;
    keel_u16_norms u16; /* a native stage's kernels (stage.native), else NULL pointers */
    size_t dim;
    keel_stage stage; /* forward: x, y; backward: dy, x, dx (stage.h); stage.quant: a forward
                       * to int8 only */
} keel_norm_call;

/* Checks a forward's arguments (x, y, eps, flags beyond `extra_flags`, quant when y is int8)
 * and prepares *call. */
keel_status keel_norm_fwd_setup(const char *who, keel_ctx *ctx, size_t rows, size_t dim,
                                keel_tensor x, keel_tensor y, float eps,
                                const keel_quant_i8 *quant, unsigned flags, unsigned extra_flags,
                                keel_norm_call *call);

/* The hint bits of a backward kernel's dx_flags (kernels.h: KEEL_KBWD_PREFETCH, _STREAM) for
 * rows x dim through call (0 when staged: the kernels then see small buffers). */
int keel_norm_bwd_hints(const keel_ctx *ctx, size_t rows, const keel_norm_call *call);
/* The same from the bytes a row of an input and of the dx output span (stride times the element
 * size; 0: no dx), for tensors used in place (never for staged ones). */
int keel_bwd_hints(const keel_ctx *ctx, size_t rows, size_t in_row_bytes, size_t dx_row_bytes);

/* Checks a backward's arguments (dy, x, dx optional, eps, flags) and prepares *call. */
keel_status keel_norm_bwd_setup(const char *who, keel_ctx *ctx, size_t rows, size_t dim,
                                keel_tensor dy, keel_tensor x, keel_tensor dx, float eps,
                                unsigned flags, keel_norm_call *call);

/* With call->stage.quant->smooth: replaces *gamma and *beta (beta may be NULL: stays NULL) by
 * gamma / smooth and beta / smooth, in the context's parameter memory. */
keel_status keel_norm_fold_smooth(const char *who, keel_ctx *ctx, const keel_norm_call *call,
                                  size_t dim, const float **gamma, const float **beta);

#endif
