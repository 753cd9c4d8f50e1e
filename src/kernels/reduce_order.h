/* The one reduction order of keel (see kernels.h): 16 double lanes, element j into lane j % 16,
 * combined by a fixed tree. Scalar helpers here; the SIMD kernels reproduce the same steps. */
#ifndef KEEL_KERNELS_REDUCE_ORDER_H
#define KEEL_KERNELS_REDUCE_ORDER_H

#define KEEL_LANES 16

/* a[i] = a[i] + a[i + h] for h = 8, 4, 2, 1; returns a[0]. Modifies a. */
static inline double keel_reduce16(double a[KEEL_LANES])
{
    for (int h = KEEL_LANES / 2; h >= 1; h /= 2)
        for (int i = 0; i < h; i++)
            a[i] = a[i] + a[i + h];
    return a[0];
}

static inline void keel_lanes_zero(double a[KEEL_LANES])
{
    for (int i = 0; i < KEEL_LANES; i++)
        a[i] = 0.0;
}

#endif
