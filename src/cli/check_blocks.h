/* keel check's part for the transformer-block operations (keel.h, "Transformer blocks"): the
 * fused add + norm, BatchNorm and DyT against the float64 reference of src/ref/ref_block.c, on
 * the context's path, with the bounds of tests/test_block_ops.c. */
#ifndef KEEL_CLI_CHECK_BLOCKS_H
#define KEEL_CLI_CHECK_BLOCKS_H

#include "keel.h"

/* Prints one table; 0 when every output is within its bound, 1 when one is not, 2 on an error
 * (printed). */
int keel_check_blocks(keel_ctx *ctx, unsigned long long seed, int quick);

#endif
