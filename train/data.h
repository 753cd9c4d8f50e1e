/* keel train: the corpus. Characters (bytes) of a text file, its vocabulary, the split
 * (first 90% train, last 10% validation) and random batches. */
#ifndef KEEL_TRAIN_DATA_H
#define KEEL_TRAIN_DATA_H

#include <stddef.h>

#include "rng.h"
#include "tool_error.h"

typedef struct tm_data {
    char path[1024];
    int *tok;           /* the whole text as token ids */
    size_t n, ntrain;   /* tokens in all; the first ntrain are the training split */
    int vocab;
    unsigned char chars[256]; /* id -> byte */
    int index[256];           /* byte -> id, -1 if absent */
    double unigram_entropy;   /* nats per character, of the training split */
} tm_data;

/* path NULL: the bundled Tiny Shakespeare (data/tinyshakespeare.txt, from the working directory
 * or the source tree). Returns KEEL_OK, or KEEL_EIO, KEEL_EINVAL (a text too short),
 * KEEL_ENOMEM with tool_last_error() (tool_error.h). */
keel_status tm_data_load(tm_data *d, const char *path);
/* Use the vocabulary of a checkpoint (bytes absent from it are KEEL_EINVAL). */
keel_status tm_data_set_vocab(tm_data *d, const unsigned char *chars, int vocab);
void tm_data_free(tm_data *d);
/* B sequences of T tokens and their next tokens, at random offsets in split 0 (train) or 1. */
void tm_data_batch(const tm_data *d, int split, tm_rng *rng, int B, int T, int *x, int *y);
/* The default corpus path that exists, or NULL. */
const char *tm_data_default_path(void);

#endif
