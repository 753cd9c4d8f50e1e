/* The recordings of keel monitor (recording.h): a checkpoint's model run over a text. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "recording.h"
#include "tool_error.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

keel_status mc_load_model(mc_model *mm, const char *ckpt, int threads)
{
    keel_status st;
    memset(mm, 0, sizeof *mm);
    if ((st = tm_ckpt_read_state(ckpt, &mm->st)) != KEEL_OK)
        return st;
    if ((st = tm_create(&mm->m, &mm->st.cfg, 16, 0, threads)) != KEEL_OK)
        return st;
    if ((st = tm_ckpt_load(ckpt, &mm->st, &mm->m, NULL)) != KEEL_OK) {
        tm_destroy(&mm->m);
        return st;
    }
    mm->m.training = 0;
    for (int c = 0; c < 256; c++)
        mm->index[c] = -1;
    for (int v = 0; v < mm->st.vocab; v++)
        mm->index[mm->st.chars[v]] = v;
    mm->slots = tm_monitor_slots(&mm->m);
    if (mm->slots == 0) {
        tm_destroy(&mm->m);
        return tool_fail(KEEL_EUNSUPPORTED, "%s: the model's norm is %s: the monitor needs LayerNorm or RMSNorm",
                         ckpt, tm_norm_name(mm->st.cfg.norm));
    }
    return KEEL_OK;
}

void mc_free_model(mc_model *mm) { tm_destroy(&mm->m); }

int *mc_map_text(const mc_model *mm, const unsigned char *bytes, size_t nbytes, size_t *ntok, size_t *dropped)
{
    int *t = malloc((nbytes + 1) * sizeof(int));
    size_t k = 0, d = 0;
    if (!t)
        return NULL;
    for (size_t i = 0; i < nbytes; i++) {
        int id = mm->index[bytes[i]];
        if (id < 0)
            d++;
        else
            t[k++] = id;
    }
    *ntok = k;
    if (dropped)
        *dropped = d;
    return t;
}

keel_status mc_read_file(const char *path, unsigned char **out, size_t *n)
{
    *out = NULL;
    size_t len = strlen(path);
    int gz = len > 3 && !strcmp(path + len - 3, ".gz");
    FILE *f;
    if (gz) {
        char cmd[1200];
        if (strchr(path, '\'')) {
            return tool_fail(KEEL_EINVAL, "%s: a quote in the file name", path);
        }
        snprintf(cmd, sizeof cmd, "gzip -dc '%s'", path);
        f = popen(cmd, "r");
    } else {
        f = fopen(path, "rb");
    }
    if (!f) {
        return tool_fail(KEEL_EIO, "%s: cannot open", path);
    }
    size_t cap = 1 << 20, k = 0, got;
    unsigned char *p = malloc(cap);
    while (p && (got = fread(p + k, 1, cap - k, f)) > 0) {
        k += got;
        if (k == cap) {
            unsigned char *q = realloc(p, cap *= 2);
            if (!q) {
                free(p);
                p = NULL;
            }
            p = q;
        }
    }
    int bad = gz ? pclose(f) != 0 : (ferror(f) || fclose(f) != 0);
    if (!p || bad || k == 0) {
        free(p);
        return tool_fail(!p ? KEEL_ENOMEM : KEEL_EIO, "%s: %s", path,
                         !p ? "out of memory" : k == 0 ? "empty or unreadable" : "read error");
    }
    *n = k;
    *out = p;
    return KEEL_OK;
}

/* Per group of r->group rows of x (a norm's input, rows x width): each channel's mean and sum
 * of squared deviations, two passes in double, stored as floats. */
static void group_moments(mc_rec *r, int s, size_t base, size_t rows, const float *x)
{
    const size_t C = (size_t)r->width, G = r->group, ng = r->n / G;
    double *mu = r->gbuf, *m2 = r->gbuf + C;
    for (size_t g = 0; g < rows / G; g++) {
        const float *xg = x + g * G * C;
        for (size_t j = 0; j < C; j++)
            mu[j] = m2[j] = 0.0;
        for (size_t i = 0; i < G; i++)
            for (size_t j = 0; j < C; j++)
                mu[j] += xg[i * C + j];
        for (size_t j = 0; j < C; j++)
            mu[j] /= (double)G;
        for (size_t i = 0; i < G; i++)
            for (size_t j = 0; j < C; j++) {
                const double d = xg[i * C + j] - mu[j];
                m2[j] += d * d;
            }
        const size_t at = ((size_t)s * ng + base / G + g) * C;
        for (size_t j = 0; j < C; j++) {
            r->cmean[at + j] = (float)mu[j];
            r->cm2[at + j] = (float)m2[j];
        }
    }
}

keel_status mc_record(mc_model *mm, const int *tok, size_t n, mc_rec *r)
{
    memset(r, 0, sizeof *r);
    const int T = mm->st.cfg.seq, V = mm->st.cfg.vocab, S = mm->slots, maxB = mm->m.max_batch;
    size_t nblocks = n > 1 ? (n - 1) / (size_t)T : 0;
    if (nblocks == 0) {
        return tool_fail(KEEL_EINVAL, "the text has %zu tokens in the vocabulary: need at least %d", n, T + 1);
    }
    r->n = nblocks * (size_t)T;
    r->slots = S;
    r->has_mean = mm->st.cfg.norm == TM_NORM_LAYER;
    r->rstd = malloc((size_t)S * r->n * sizeof(float));
    r->mean = r->has_mean ? malloc((size_t)S * r->n * sizeof(float)) : NULL;
    r->ll = malloc(r->n * sizeof(float));
    r->ent = malloc(r->n * sizeof(float));
    r->pmax = malloc(r->n * sizeof(float));
    int *tg = malloc((size_t)maxB * T * sizeof(int));
    const int C = mm->st.cfg.width;
    if (mm->channels) {
        /* groups never straddle two forwards (each starts at a multiple of seq) */
        r->group = T % MC_GROUP == 0 ? MC_GROUP : (size_t)T;
        const size_t cells = (size_t)S * (r->n / r->group) * (size_t)C;
        r->width = C;
        r->cmean = malloc(cells * sizeof(float));
        r->cm2 = malloc(cells * sizeof(float));
        r->gbuf = malloc(2 * (size_t)C * sizeof(double));
    }
    if (!r->rstd || (r->has_mean && !r->mean) || !r->ll || !r->ent || !r->pmax || !tg ||
        (r->width && (!r->cmean || !r->cm2 || !r->gbuf))) {
        free(tg);
        mc_free_rec(r);
        return tool_fail(KEEL_ENOMEM, "out of memory");
    }
    for (size_t b0 = 0; b0 < nblocks; b0 += (size_t)maxB) {
        int B = nblocks - b0 < (size_t)maxB ? (int)(nblocks - b0) : maxB;
        size_t base = b0 * (size_t)T;
        double t0 = now_s();
        tm_forward(&mm->m, tok + base, NULL, B, T);
        r->forward_seconds += now_s() - t0;
        if (tm_error(&mm->m)) {
            free(tg);
            mc_free_rec(r);
            return tool_fail(mm->m.error_status, "the model's forward: %s", tm_error(&mm->m));
        }
        size_t rows = (size_t)B * T;
        for (int s = 0; s < S; s++) {
            const float *mu, *rs;
            tm_monitor_stats(&mm->m, s, &mu, &rs);
            memcpy(r->rstd + (size_t)s * r->n + base, rs, rows * sizeof(float));
            if (r->has_mean)
                memcpy(r->mean + (size_t)s * r->n + base, mu, rows * sizeof(float));
            if (r->width)
                group_moments(r, s, base, rows, tm_monitor_input(&mm->m, s));
        }
        for (size_t i = 0; i < rows; i++) {
            float p = mm->m.logits[i * V + tok[base + i + 1]];
            r->ll[base + i] = logf(p > 1e-30f ? p : 1e-30f);
            const float *pr = mm->m.logits + i * V;
            double h = 0.0, top = 0.0;
            for (int v = 0; v < V; v++) {
                if (pr[v] > 0.0f)
                    h -= pr[v] * log(pr[v]);
                top = pr[v] > top ? pr[v] : top;
            }
            r->ent[base + i] = (float)h;
            r->pmax[base + i] = (float)(1.0 - top);
        }
    }
    free(tg);
    return KEEL_OK;
}

void mc_free_rec(mc_rec *r)
{
    free(r->mean);
    free(r->rstd);
    free(r->ll);
    free(r->ent);
    free(r->pmax);
    free(r->cmean);
    free(r->cm2);
    free(r->gbuf);
    memset(r, 0, sizeof *r);
}

int mc_feed(keel_monitor *mon, const mc_rec *r, size_t a, size_t b)
{
    for (int s = 0; s < r->slots; s++)
        if (keel_monitor_observe(mon, s, b - a, r->mean ? r->mean + (size_t)s * r->n + a : NULL,
                                 r->rstd + (size_t)s * r->n + a) != KEEL_OK)
            return -1;
    if (!r->width)
        return 0;
    const size_t C = (size_t)r->width, G = r->group, ng = r->n / G;
    double *mu = r->gbuf, *m2 = r->gbuf + C;
    for (int s = 0; s < r->slots; s++) {
        if (keel_monitor_channel_width(mon, s) != r->width)
            continue;
        for (size_t g = (a + G - 1) / G; (g + 1) * G <= b; g++) {
            const size_t at = ((size_t)s * ng + g) * C;
            int ok = 1;
            for (size_t j = 0; j < C; j++) {
                mu[j] = r->cmean[at + j];
                m2[j] = r->cm2[at + j];
                ok &= isfinite(mu[j]) && isfinite(m2[j]);
            }
            /* a group holding a NaN or Inf row is left out (as keel_monitor_observe_channels
             * leaves the row out) */
            if (ok && keel_monitor_add_channel_moments(mon, s, (double)G, mu, m2) != KEEL_OK)
                return -1;
        }
    }
    return 0;
}

double mc_nll(const mc_rec *r, size_t a, size_t b)
{
    double s = 0.0;
    for (size_t i = a; i < b; i++)
        s -= r->ll[i];
    return b > a ? s / (double)(b - a) : 0.0;
}

double mc_series_mean(const float *x, size_t a, size_t b)
{
    double s = 0.0;
    for (size_t i = a; i < b; i++)
        s += x[i];
    return b > a ? s / (double)(b - a) : 0.0;
}

/* dst[0..na) = a's per-slot series from a0, then b's from b0 (per slot: slots x n layout). */
static void stitch_series(float *dst, size_t n, const float *a, size_t an, size_t a0, size_t na,
                          const float *b, size_t bn, size_t b0, size_t nb, int slots, size_t width)
{
    for (int s = 0; s < slots; s++) {
        memcpy(dst + (size_t)s * n * width, a + ((size_t)s * an + a0) * width,
               na * width * sizeof(float));
        memcpy(dst + ((size_t)s * n + na) * width, b + ((size_t)s * bn + b0) * width,
               nb * width * sizeof(float));
    }
}

keel_status mc_stitch(const mc_rec *a, size_t a0, size_t na, const mc_rec *b, size_t b0, size_t nb,
                      mc_rec *out)
{
    memset(out, 0, sizeof *out);
    if (a->slots != b->slots || a->has_mean != b->has_mean || a->width != b->width ||
        a->group != b->group || a0 + na > a->n || b0 + nb > b->n ||
        (a->group && (a0 % a->group || na % a->group || b0 % a->group)))
        return tool_fail(KEEL_EINVAL,
                         "cannot stitch [%zu, +%zu) of %zu tokens and [%zu, +%zu) of %zu", a0, na,
                         a->n, b0, nb, b->n);
    const size_t n = na + nb, S = (size_t)a->slots;
    *out = (mc_rec){
        .n = n, .slots = a->slots, .has_mean = a->has_mean, .width = a->width, .group = a->group};
    out->rstd = malloc(S * n * sizeof(float));
    out->mean = a->has_mean ? malloc(S * n * sizeof(float)) : NULL;
    out->ll = malloc(n * sizeof(float));
    out->ent = malloc(n * sizeof(float));
    out->pmax = malloc(n * sizeof(float));
    const size_t G = a->group, C = (size_t)a->width;
    if (C) {
        out->cmean = malloc(S * (n / G) * C * sizeof(float));
        out->cm2 = malloc(S * (n / G) * C * sizeof(float));
        out->gbuf = malloc(2 * C * sizeof(double));
    }
    if (!out->rstd || (a->has_mean && !out->mean) || !out->ll || !out->ent || !out->pmax ||
        (C && (!out->cmean || !out->cm2 || !out->gbuf))) {
        mc_free_rec(out);
        return tool_fail(KEEL_ENOMEM, "out of memory");
    }
    stitch_series(out->rstd, n, a->rstd, a->n, a0, na, b->rstd, b->n, b0, nb, a->slots, 1);
    if (out->mean)
        stitch_series(out->mean, n, a->mean, a->n, a0, na, b->mean, b->n, b0, nb, a->slots, 1);
    stitch_series(out->ll, n, a->ll, a->n, a0, na, b->ll, b->n, b0, nb, 1, 1);
    stitch_series(out->ent, n, a->ent, a->n, a0, na, b->ent, b->n, b0, nb, 1, 1);
    stitch_series(out->pmax, n, a->pmax, a->n, a0, na, b->pmax, b->n, b0, nb, 1, 1);
    if (C) {
        /* whole groups only: a tail of b shorter than a group is left out of the moments */
        stitch_series(out->cmean, n / G, a->cmean, a->n / G, a0 / G, na / G, b->cmean, b->n / G,
                      b0 / G, nb / G, a->slots, C);
        stitch_series(out->cm2, n / G, a->cm2, a->n / G, a0 / G, na / G, b->cm2, b->n / G, b0 / G,
                      nb / G, a->slots, C);
    }
    return KEEL_OK;
}

int mc_calibrate_windows(keel_monitor *mon, const mc_rec *rec, size_t a, size_t b, const int *sizes, int nsizes,
                         double far)
{
    for (int k = 0; k < nsizes; k++) {
        size_t w = (size_t)sizes[k], stride = w / 4 ? w / 4 : 1;
        for (size_t p = a; p + w <= b; p += stride)
            if (mc_feed(mon, rec, p, p + w) || keel_monitor_calibrate_add(mon))
                return -1;
    }
    return keel_monitor_calibrate_finish(mon, far) == KEEL_OK ? 0 : -1;
}

