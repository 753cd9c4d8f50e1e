/* keel train: the checkpoint loader's range checks, run after the checksum (a checksum is no
 * proof that the writer was keel: FNV-1a is recomputed by anyone). Internal to checkpoint.c. */
#ifndef KEEL_TRAIN_CHECKPOINT_CHECK_H
#define KEEL_TRAIN_CHECKPOINT_CHECK_H

#include <stddef.h>
#include <stdint.h>

#include "checkpoint.h"

/* st: the header as read. body: the np parameters, AdamW's np first and np second moments, its
 * int64 step count and the nb buffers, as the file holds them (np and nb read from the file,
 * which is known to be that long). KEEL_OK when every field is in range and np, nb are what the
 * header's model has; else KEEL_EFORMAT with tool_last_error() saying which field, prefixed with
 * path. */
keel_status tm_ckpt_check(const char *path, const tm_train_state *st, const unsigned char *body, uint64_t np,
                          uint64_t nb);

#endif
