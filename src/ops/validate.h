/* The operator layer's argument checks, shared by every operation. Each returns KEEL_OK or a
 * status with a message naming the function, the argument and its bad value. */
#ifndef KEEL_OPS_VALIDATE_H
#define KEEL_OPS_VALIDATE_H

#include <stddef.h>

#include "keel.h"

/* A tensor argument: required (NULL data is KEEL_ENULL) or optional (NULL data: absent). */
typedef enum { KEEL_REQUIRED, KEEL_OPTIONAL } keel_presence;

keel_status keel_check_shape(const char *who, const void *ctx, size_t rows, size_t dim);
/* The bytes of one element of dtype d. */
size_t keel_dtype_size(keel_dtype d);
#define KEEL_DTYPE_BIT(d) (1u << (unsigned)(d))
/* The storage dtypes of the norm operations' float tensors. */
#define KEEL_FLOAT_DTYPES (KEEL_DTYPE_BIT(KEEL_F32) | KEEL_DTYPE_BIT(KEEL_BF16) | KEEL_DTYPE_BIT(KEEL_F16))

/* A tensor whose dtype must be one of `dtypes` (KEEL_DTYPE_BIT mask). */
keel_status keel_check_tensor_of(const char *who, const char *name, keel_tensor t, size_t rows,
                                 size_t dim, keel_presence presence, unsigned dtypes);
/* A float32 tensor. */
keel_status keel_check_tensor(const char *who, const char *name, keel_tensor t, size_t rows,
                              size_t dim, keel_presence presence);
keel_status keel_check_eps(const char *who, float eps);
keel_status keel_check_flags(const char *who, unsigned flags, unsigned allowed);
/* An output may be exactly an input (same data and stride) or disjoint from it; anything in
 * between would read values the call already overwrote. */
keel_status keel_check_overlap(const char *who, const char *out_name, keel_tensor out,
                               const char *in_name, keel_tensor in, size_t rows, size_t dim);

#endif
