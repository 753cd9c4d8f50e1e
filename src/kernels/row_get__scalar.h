/* How the portable C norms read a row: element j as float (exact), from a row of KS_T (ks_get),
 * or from a fused kernel's h (f32_add_layernorm__scalar.c, f32_add_rmsnorm__scalar.c), so
 * that the plain and fused norms share their row sums (layernorm_rows__scalar.h,
 * rmsnorm_rows__scalar.h). The including file defines KS_T and KS_GET. */
#ifndef KEEL_KERNELS_ROW_GET_SCALAR_H
#define KEEL_KERNELS_ROW_GET_SCALAR_H

#include <stddef.h>

typedef float ks_get_fn(const void *row, size_t j);

static inline float ks_get(const void *row, size_t j) { return KS_GET(((const KS_T *)row)[j]); }

#endif
