/* Row statistics of the scalar path, shared by the forward and the backward (which recomputes
 * them exactly as the forward does when the caller saved none). */
#ifndef KEEL_KERNELS_F32_NORM_STATS_SCALAR_H
#define KEEL_KERNELS_F32_NORM_STATS_SCALAR_H

#include <stddef.h>

/* mean_d in double, rstd as float (see kernels.h, LayerNorm forward). */
double keel_f32_layernorm_stats__scalar(const float *x, size_t dim, float eps, float *rstd);
/* rstd of RMSNorm (see kernels.h, RMSNorm forward). */
float keel_f32_rmsnorm_rstd__scalar(const float *x, size_t dim, float eps);

#endif
