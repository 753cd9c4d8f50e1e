/* The kernels instantiate their inner loops once per combination of optional inputs (each a
 * bit of a number i, a constant in each instance) and pick the instance from a table by i.
 * KEEL_EACH8/16/32(M) expand M(0) .. M(7) / M(15) / M(31); KEEL_LIST8/16/32(p) list p##0 ..,
 * comma-separated, for the tables. */
#ifndef KEEL_KERNELS_VARIANTS_H
#define KEEL_KERNELS_VARIANTS_H

#define KEEL_EACH8(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7)
#define KEEL_EACH16(M) KEEL_EACH8(M) M(8) M(9) M(10) M(11) M(12) M(13) M(14) M(15)
#define KEEL_EACH32(M)                                                                             \
    KEEL_EACH16(M) M(16) M(17) M(18) M(19) M(20) M(21) M(22) M(23) M(24) M(25) M(26) M(27)      \
    M(28) M(29) M(30) M(31)
#define KEEL_LIST8(p) p##0, p##1, p##2, p##3, p##4, p##5, p##6, p##7
#define KEEL_LIST16(p) KEEL_LIST8(p), p##8, p##9, p##10, p##11, p##12, p##13, p##14, p##15
#define KEEL_LIST32(p)                                                                             \
    KEEL_LIST16(p), p##16, p##17, p##18, p##19, p##20, p##21, p##22, p##23, p##24, p##25, p##26, \
        p##27, p##28, p##29, p##30, p##31

#endif
