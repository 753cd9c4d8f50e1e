/* keel train: the corpus. */
#include "data.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h" /* keel_alloc: the allocation-failure walk reaches the loader */

#ifndef KEEL_TRAIN_SOURCE_DIR
#define KEEL_TRAIN_SOURCE_DIR "."
#endif

const char *tm_data_default_path(void)
{
    static const char *const candidates[] = {"data/tinyshakespeare.txt",
                                             KEEL_TRAIN_SOURCE_DIR "/data/tinyshakespeare.txt"};
    for (size_t i = 0; i < sizeof candidates / sizeof candidates[0]; i++) {
        FILE *f = fopen(candidates[i], "rb");
        if (f) {
            fclose(f);
            return candidates[i];
        }
    }
    return NULL;
}

static void build_vocab(tm_data *d, const unsigned char *text, size_t n)
{
    int seen[256] = {0};
    for (size_t i = 0; i < n; i++)
        seen[text[i]] = 1;
    d->vocab = 0;
    for (int c = 0; c < 256; c++) {
        d->index[c] = seen[c] ? d->vocab : -1;
        if (seen[c])
            d->chars[d->vocab++] = (unsigned char)c;
    }
}

static void finish(tm_data *d, const unsigned char *text)
{
    double counts[256] = {0};
    for (size_t i = 0; i < d->n; i++)
        d->tok[i] = d->index[text[i]];
    for (size_t i = 0; i < d->ntrain; i++)
        counts[d->tok[i]] += 1.0;
    double h = 0.0;
    for (int v = 0; v < d->vocab; v++)
        if (counts[v] > 0) {
            double p = counts[v] / (double)d->ntrain;
            h -= p * log(p);
        }
    d->unigram_entropy = h;
}

keel_status tm_data_load(tm_data *d, const char *path)
{
    memset(d, 0, sizeof *d);
    if (!path && !(path = tm_data_default_path())) {
        return tool_fail(KEEL_EIO, "the bundled corpus data/tinyshakespeare.txt was not found (run from the "
                         "repository root, or pass --data FILE)");
    }
    snprintf(d->path, sizeof d->path, "%s", path);
    FILE *f = fopen(path, "rb");
    if (!f) {
        tool_fail(KEEL_EIO, "%s: %s", path, strerror(errno));
        return KEEL_EIO;
    }
    size_t cap = 1 << 20, n = 0;
    unsigned char *text = keel_alloc(cap);
    for (;;) {
        if (!text) {
            fclose(f);
            tool_fail(KEEL_ENOMEM, "%s: out of memory", path);
            return KEEL_ENOMEM;
        }
        size_t got = fread(text + n, 1, cap - n, f);
        n += got;
        if (n < cap)
            break;
        cap *= 2;
        unsigned char *t2 = keel_realloc(text, cap);
        if (!t2)
            keel_free(text);
        text = t2;
    }
    fclose(f);
    if (n < 200) {
        keel_free(text);
        tool_fail(KEEL_EINVAL, "%s: %zu bytes: too short a text to train on (at least 200)", path, n);
        return KEEL_EINVAL;
    }
    d->n = n;
    d->ntrain = n * 9 / 10;
    d->tok = keel_alloc(n * sizeof(int));
    if (!d->tok) {
        keel_free(text);
        tool_fail(KEEL_ENOMEM, "%s: out of memory", path);
        return KEEL_ENOMEM;
    }
    build_vocab(d, text, n);
    finish(d, text);
    keel_free(text);
    return KEEL_OK;
}

keel_status tm_data_set_vocab(tm_data *d, const unsigned char *chars, int vocab)
{
    /* re-map: current ids -> bytes -> the checkpoint's ids */
    int map[256];
    for (int c = 0; c < 256; c++)
        map[c] = -1;
    for (int v = 0; v < vocab; v++)
        map[chars[v]] = v;
    for (int v = 0; v < d->vocab; v++)
        if (map[d->chars[v]] < 0) {
            tool_fail(KEEL_EINVAL, "%s: byte 0x%02x is not in the checkpoint's vocabulary", d->path, d->chars[v]);
            return KEEL_EINVAL;
        }
    for (size_t i = 0; i < d->n; i++)
        d->tok[i] = map[d->chars[d->tok[i]]];
    d->vocab = vocab;
    memcpy(d->chars, chars, (size_t)vocab);
    for (int c = 0; c < 256; c++)
        d->index[c] = map[c];
    return KEEL_OK;
}

void tm_data_free(tm_data *d)
{
    keel_free(d->tok);
    d->tok = NULL;
}

void tm_data_batch(const tm_data *d, int split, tm_rng *rng, int B, int T, int *x, int *y)
{
    size_t lo = split ? d->ntrain : 0, hi = split ? d->n : d->ntrain;
    size_t span = hi - lo > (size_t)T + 1 ? hi - lo - (size_t)T - 1 : 1;
    for (int b = 0; b < B; b++) {
        size_t s = lo + (size_t)tm_rng_below(rng, span);
        for (int t = 0; t < T; t++) {
            size_t i = s + (size_t)t;
            x[b * T + t] = d->tok[i < d->n ? i : d->n - 1];
            y[b * T + t] = d->tok[i + 1 < d->n ? i + 1 : d->n - 1];
        }
    }
}
