/* keel monitor's per-channel statistics, through keel.h: the moments against a
 * long-double two-pass reference (with non-finite rows skipped and odd chunkings; to float's
 * precision, TOL_*), merge, the
 * diagonal Mahalanobis distance against a reference computed here, bad input refused with
 * nothing changed (and the message naming the argument and its value), the baseline file
 * round trip (version 2; version 1 when no slot has channels) and its corruptions, and a
 * shifted or scaled input raising the scores. Files go to $TMPDIR or /tmp. */
#define _POSIX_C_SOURCE 200809L /* getpid */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keel.h"
#include "test_common.h" /* test_read_file, test_write_file */
#include "../train/rng.h"

static int fails;
#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "FAIL %s:%d: %s (%s)\n", __FILE__, __LINE__, #c, keel_last_error());   \
            fails++;                                                                               \
        }                                                                                          \
    } while (0)

enum { S = 2, W = 24, LD = 29, N = 3000 };
/* The per-forward path sums blocks of 16 rows in float (deviations from a shift near the mean;
 * monitor_channels.c): float's precision relative to the spread, not double's. The data below
 * have means up to 1.3 and sd 0.5-1.7. */
#define TOL_MEAN 1e-6 /* absolute, on the means */
#define TOL_VAR 1e-5  /* relative, on the variances */
static float x_[N * LD], mean_[N], rstd_[N];

/* Rows of W features (channel j: mean 0.1 j - 1, sd 0.5 + 0.05 j), shifted in channel `ch`
 * by `shift` sd and every feature scaled by `scale`; the per-token mean and rstd of each row. */
static void gen(tm_rng *r, size_t n, int ch, double shift, double scale)
{
    for (size_t i = 0; i < n; i++) {
        double s = 0, ss = 0;
        for (int j = 0; j < W; j++) {
            const double sd = 0.5 + 0.05 * j;
            double v = 0.1 * j - 1.0 + sd * tm_rng_normal(r) + (j == ch ? shift * sd : 0.0);
            v *= scale;
            x_[i * LD + j] = (float)v;
            s += v;
            ss += v * v;
        }
        for (int j = W; j < LD; j++)
            x_[i * LD + j] = NAN; /* past the width: must never be read */
        mean_[i] = (float)(s / W);
        rstd_[i] = (float)(1.0 / sqrt(ss / W - (s / W) * (s / W) + 1e-5));
    }
}

static keel_monitor *make(void)
{
    keel_monitor *m = NULL;
    CHECK(keel_monitor_create(&m, S, NULL) == KEEL_OK);
    CHECK(keel_monitor_channels(m, 0, W) == KEEL_OK);
    return m;
}

/* Feeds rows [a, b) through the one-call-per-forward entry (slot 1 without channels). */
static void feed(keel_monitor *m, size_t a, size_t b)
{
    keel_monitor_norm_io io[S] = {{mean_ + a, rstd_ + a, x_ + a * LD, LD},
                                  {NULL, rstd_ + a, NULL, 0}};
    CHECK(keel_monitor_observe_forward(m, b - a, io) == KEEL_OK);
}

static void test_moments(void)
{
    tm_rng r = {11};
    gen(&r, N, -1, 0, 1);
    x_[5 * LD + 3] = NAN; /* two rows skipped */
    x_[700 * LD + W - 1] = INFINITY;
    keel_monitor *m = make();
    /* odd chunkings: 1, 63, 64, 65 rows and the rest */
    size_t cuts[] = {0, 1, 64, 128, 193, N};
    for (int k = 0; k + 1 < 6; k++)
        CHECK(keel_monitor_observe_channels(m, 0, cuts[k + 1] - cuts[k], x_ + cuts[k] * LD, LD) ==
              KEEL_OK);
    double cnt, bad, mu[W], var[W];
    CHECK(keel_monitor_channel_moments(m, 0, 0, &cnt, mu, var, &bad) == KEEL_OK);
    CHECK(cnt == N - 2 && bad == 2);
    double worst_m = 0, worst_v = 0;
    for (int j = 0; j < W; j++) {
        long double s = 0, ss = 0;
        for (int i = 0; i < N; i++)
            if (i != 5 && i != 700)
                s += x_[i * LD + j];
        const long double mr = s / (N - 2);
        for (int i = 0; i < N; i++)
            if (i != 5 && i != 700)
                ss += (x_[i * LD + j] - mr) * (x_[i * LD + j] - mr);
        const long double vr = ss / (N - 2);
        const double em = fabs(mu[j] - (double)mr), ev = fabs(var[j] - (double)vr) / (double)vr;
        worst_m = em > worst_m ? em : worst_m;
        worst_v = ev > worst_v ? ev : worst_v;
    }
    CHECK(worst_m < TOL_MEAN && worst_v < TOL_VAR);
    printf("moments vs long-double two-pass: mean error %.2g, variance relative error %.2g\n",
           worst_m, worst_v);
    /* finite values whose squares overflow float (the fast path's sums): summed again in
     * double, kept, not counted as bad */
    {
        keel_monitor *h = make();
        float big[4 * LD];
        memcpy(big, x_, sizeof big);
        big[2 * LD + 3] = 1e30f;
        double hn, hb, hm[W], hv[W];
        CHECK(keel_monitor_observe_channels(h, 0, 4, big, LD) == KEEL_OK);
        CHECK(keel_monitor_channel_moments(h, 0, 0, &hn, hm, hv, &hb) == KEEL_OK);
        long double s = 0;
        for (int i = 0; i < 4; i++)
            s += big[i * LD + 3];
        CHECK(hn == 4 && hb == 0 && fabs(hm[3] - (double)(s / 4)) < 1e-12 * (double)(s / 4) &&
              isfinite(hv[3]));
        keel_monitor_destroy(h);
    }
    /* merged halves == within rounding, and deterministic */
    keel_monitor *a = make(), *b = make();
    CHECK(keel_monitor_observe_channels(a, 0, N / 2, x_, LD) == KEEL_OK);
    CHECK(keel_monitor_observe_channels(b, 0, N - N / 2, x_ + (size_t)(N / 2) * LD, LD) == KEEL_OK);
    CHECK(keel_monitor_merge(a, b) == KEEL_OK);
    double c2, mu2[W], var2[W], bad2;
    CHECK(keel_monitor_channel_moments(a, 0, 0, &c2, mu2, var2, &bad2) == KEEL_OK);
    CHECK(c2 == cnt && bad2 == 2);
    for (int j = 0; j < W; j++)
        CHECK(fabs(mu2[j] - mu[j]) < TOL_MEAN && fabs(var2[j] - var[j]) < TOL_VAR * var[j]);
    keel_monitor *c = NULL;
    CHECK(keel_monitor_create(&c, S, NULL) == KEEL_OK);
    CHECK(keel_monitor_merge(a, c) == KEEL_EINVAL && strstr(keel_last_error(), "widths differ"));
    keel_monitor_destroy(a);
    keel_monitor_destroy(b);
    keel_monitor_destroy(c);
    keel_monitor_destroy(m);
}

/* Pre-aggregated moments (keel_monitor_add_channel_moments): groups of 16 rows added as
 * (count, mean, m2) give the moments of observing the rows; bad ones are refused unchanged. */
static void test_add_moments(void)
{
    tm_rng r = {21};
    gen(&r, 512, -1, 0, 1);
    keel_monitor *a = make(), *b = make();
    CHECK(keel_monitor_observe_channels(a, 0, 512, x_, LD) == KEEL_OK);
    for (int g = 0; g < 512 / 16; g++) {
        double mu[W], m2[W];
        for (int j = 0; j < W; j++) {
            double s = 0, ss = 0;
            for (int i = 0; i < 16; i++)
                s += x_[(g * 16 + i) * LD + j];
            mu[j] = s / 16;
            for (int i = 0; i < 16; i++)
                ss += (x_[(g * 16 + i) * LD + j] - mu[j]) * (x_[(g * 16 + i) * LD + j] - mu[j]);
            m2[j] = ss;
        }
        CHECK(keel_monitor_add_channel_moments(b, 0, 16, mu, m2) == KEEL_OK);
    }
    double na, nb, ma[W], mb[W], va[W], vb[W];
    CHECK(keel_monitor_channel_moments(a, 0, 0, &na, ma, va, NULL) == KEEL_OK);
    CHECK(keel_monitor_channel_moments(b, 0, 0, &nb, mb, vb, NULL) == KEEL_OK);
    CHECK(na == nb && na == 512);
    for (int j = 0; j < W; j++)
        CHECK(fabs(ma[j] - mb[j]) < TOL_MEAN && fabs(va[j] - vb[j]) < TOL_VAR * va[j]);
    double mu[W] = {0}, m2[W] = {0};
    m2[4] = -1;
    CHECK(keel_monitor_add_channel_moments(b, 0, 3, mu, m2) == KEEL_EINVAL &&
          strstr(keel_last_error(), "m2[4] (-1)"));
    m2[4] = 0;
    mu[2] = NAN;
    CHECK(keel_monitor_add_channel_moments(b, 0, 3, mu, m2) == KEEL_EINVAL &&
          strstr(keel_last_error(), "mean[2]"));
    mu[2] = 0;
    CHECK(keel_monitor_add_channel_moments(b, 0, 2.5, mu, m2) == KEEL_EINVAL &&
          strstr(keel_last_error(), "count (2.5)"));
    CHECK(keel_monitor_add_channel_moments(b, 0, 0, mu, m2) == KEEL_EINVAL);
    CHECK(keel_monitor_add_channel_moments(b, 1, 3, mu, m2) == KEEL_EINVAL &&
          strstr(keel_last_error(), "slot 1"));
    CHECK(keel_monitor_add_channel_moments(b, 0, 3, NULL, m2) == KEEL_ENULL &&
          strstr(keel_last_error(), "mean"));
    CHECK(keel_monitor_channel_moments(b, 0, 0, &nb, mb, vb, NULL) == KEEL_OK && nb == 512);
    for (int j = 0; j < W; j++)
        CHECK(fabs(ma[j] - mb[j]) < TOL_MEAN);
    keel_monitor_destroy(a);
    keel_monitor_destroy(b);
}

/* Nothing changed by a refused call: the window's moments, per token and per channel. */
static void snapshot(const keel_monitor *m, double *out)
{
    double c, mu, var;
    keel_monitor_window_moments(m, 0, 1, &c, &mu, &var);
    out[0] = c, out[1] = mu, out[2] = var;
    keel_monitor_window_moments(m, 1, 1, &out[3], NULL, NULL);
    keel_monitor_channel_moments(m, 0, 0, &out[4], out + 5, out + 5 + W, NULL);
}

static void test_bad_input(void)
{
    tm_rng r = {3};
    gen(&r, 256, -1, 0, 1);
    keel_monitor *m = make();
    feed(m, 0, 100);
    double before[5 + 2 * W], after[5 + 2 * W];
    snapshot(m, before);
    CHECK(keel_monitor_observe_channels(NULL, 0, 10, x_, LD) == KEEL_ENULL &&
          strstr(keel_last_error(), "mon"));
    CHECK(keel_monitor_observe_channels(m, 0, 10, NULL, LD) == KEEL_ENULL &&
          strstr(keel_last_error(), "x is NULL"));
    CHECK(keel_monitor_observe_channels(m, 2, 10, x_, LD) == KEEL_EINVAL &&
          strstr(keel_last_error(), "slot (2)"));
    CHECK(keel_monitor_observe_channels(m, -1, 10, x_, LD) == KEEL_EINVAL &&
          strstr(keel_last_error(), "slot (-1)"));
    CHECK(keel_monitor_observe_channels(m, 0, 10, x_, W - 1) == KEEL_EINVAL &&
          strstr(keel_last_error(), "ld (23)"));
    CHECK(keel_monitor_observe_channels(m, 1, 10, x_, LD) == KEEL_EINVAL &&
          strstr(keel_last_error(), "slot 1 has no per-channel"));
    /* observe_forward checks every slot before touching any: slot 1's bad input leaves slot 0 as it
     * was */
    keel_monitor_norm_io io[S] = {{mean_, rstd_, x_, LD}, {NULL, NULL, NULL, 0}};
    CHECK(keel_monitor_observe_forward(m, 10, io) == KEEL_ENULL &&
          strstr(keel_last_error(), "io[1].rstd"));
    io[1].rstd = rstd_;
    io[1].x = x_;
    io[1].ld = LD;
    CHECK(keel_monitor_observe_forward(m, 10, io) == KEEL_EINVAL &&
          strstr(keel_last_error(), "slot 1"));
    io[1].x = NULL;
    io[0].ld = 3;
    CHECK(keel_monitor_observe_forward(m, 10, io) == KEEL_EINVAL &&
          strstr(keel_last_error(), "ld (3)"));
    CHECK(keel_monitor_observe_forward(m, 10, NULL) == KEEL_ENULL &&
          strstr(keel_last_error(), "io is NULL"));
    snapshot(m, after);
    CHECK(memcmp(before, after, sizeof before) == 0);
    /* keel_monitor_channels */
    CHECK(keel_monitor_channels(m, 0, W) == KEEL_OK); /* again, same width: no change */
    snapshot(m, after);
    CHECK(memcmp(before, after, sizeof before) == 0);
    CHECK(keel_monitor_channels(m, 0, W + 1) == KEEL_EINVAL &&
          strstr(keel_last_error(), "width 24 (asked 25)"));
    CHECK(keel_monitor_channels(m, 1, 0) == KEEL_EINVAL && strstr(keel_last_error(), "width (0)"));
    CHECK(keel_monitor_channels(m, 1, 65537) == KEEL_EINVAL &&
          strstr(keel_last_error(), "width (65537)"));
    CHECK(keel_monitor_channels(m, 5, 4) == KEEL_EINVAL && strstr(keel_last_error(), "slot (5)"));
    CHECK(keel_monitor_channel_width(m, 0) == W && keel_monitor_channel_width(m, 1) == 0 &&
          keel_monitor_channel_width(NULL, 0) == 0 && keel_monitor_channel_width(m, 9) == 0);
    double cnt;
    CHECK(keel_monitor_channel_moments(m, 1, 0, &cnt, NULL, NULL, NULL) == KEEL_EINVAL);
    CHECK(keel_monitor_channel_moments(m, 0, 1, &cnt, NULL, NULL, NULL) == KEEL_EINVAL &&
          strstr(keel_last_error(), "no baseline"));
    CHECK(keel_monitor_channel_moments(m, 0, 2, &cnt, NULL, NULL, NULL) == KEEL_EINVAL &&
          strstr(keel_last_error(), "baseline (2)"));
    /* a baseline needs the per-channel rows too */
    keel_monitor *e = make();
    CHECK(keel_monitor_observe(e, 0, 100, mean_, rstd_) == KEEL_OK &&
          keel_monitor_observe(e, 1, 100, NULL, rstd_) == KEEL_OK);
    CHECK(keel_monitor_fit_ranges(e) == KEEL_OK);
    CHECK(keel_monitor_observe(e, 0, 100, mean_, rstd_) == KEEL_OK &&
          keel_monitor_observe(e, 1, 100, NULL, rstd_) == KEEL_OK);
    CHECK(keel_monitor_capture_baseline(e) == KEEL_EINVAL &&
          strstr(keel_last_error(), "per-channel"));
    keel_monitor_destroy(e);
    keel_monitor_destroy(m);
}

/* A monitor with a baseline of N clean rows (ranges fitted on them first). */
static keel_monitor *baselined(unsigned long long seed)
{
    tm_rng r = {seed};
    gen(&r, N, -1, 0, 1);
    keel_monitor *m = make();
    feed(m, 0, N);
    CHECK(keel_monitor_fit_ranges(m) == KEEL_OK);
    feed(m, 0, N);
    CHECK(keel_monitor_capture_baseline(m) == KEEL_OK);
    return m;
}

static void test_score(void)
{
    keel_monitor *m = baselined(5);
    double bn, bmu[W], bvar[W];
    CHECK(keel_monitor_channel_moments(m, 0, 1, &bn, bmu, bvar, NULL) == KEEL_OK && bn == N);
    tm_rng r = {77};
    const size_t n = 256;
    double clean = 0;
    const int reps = 20;
    for (int k = 0; k < reps; k++) {
        gen(&r, n, -1, 0, 1);
        feed(m, 0, n);
        keel_monitor_slot_score sc[S];
        keel_monitor_result res;
        CHECK(keel_monitor_score(m, sc, &res) == KEEL_OK);
        /* the reference, in double, from the data itself */
        double d2 = 0, best = -1, lvr = 0;
        int top = -1;
        for (int j = 0; j < W; j++) {
            double s = 0, ss = 0;
            for (size_t i = 0; i < n; i++)
                s += x_[i * LD + j];
            const double mw = s / (double)n;
            for (size_t i = 0; i < n; i++)
                ss += (x_[i * LD + j] - mw) * (x_[i * LD + j] - mw);
            const double z = (mw - bmu[j]) / sqrt(bvar[j] / (double)n);
            d2 += z * z;
            if (fabs(z) > best)
                best = fabs(z), top = j;
            lvr += log(ss / (double)n / bvar[j]);
        }
        CHECK(fabs(sc[0].maha - d2 / W) < 1e-4 * (1 + d2 / W));
        CHECK(sc[0].top_channel == top &&
              fabs(fabs(sc[0].top_channel_z) - best) < 1e-4 * (1 + best));
        CHECK(fabs(sc[0].log_var_ratio - lvr / W) < TOL_VAR);
        CHECK(sc[0].channel_tokens == (double)n);
        CHECK(isnan(sc[1].maha) && sc[1].top_channel == -1 && sc[1].channel_tokens == 0);
        clean += sc[0].maha;
        keel_monitor_reset_window(m);
    }
    clean /= reps;
    CHECK(clean > 0.5 && clean < 1.6); /* independent tokens: E[maha] = 1 */
    /* rows left out of the per-token statistics are counted in the score, and raise the alarm
     * (a numeric fault) on a monitor that is not calibrated; a clean window does not */
    {
        float bad_rstd[3] = {1.0f, NAN, 0.0f};
        CHECK(keel_monitor_observe(m, 1, 3, NULL, bad_rstd) == KEEL_OK);
        keel_monitor_slot_score sb[S];
        keel_monitor_result rb;
        CHECK(keel_monitor_score(m, sb, &rb) == KEEL_OK && sb[1].bad_rows == 2 &&
              sb[0].bad_rows == 0);
        CHECK(!rb.calibrated && rb.alarm == 1);
        keel_monitor_reset_window(m);
        CHECK(keel_monitor_score(m, sb, &rb) == KEEL_OK && sb[1].bad_rows == 0 && rb.alarm == 0);
    }
    /* one channel shifted by one sd: maha up, that channel named */
    gen(&r, n, 7, 1.0, 1);
    feed(m, 0, n);
    keel_monitor_slot_score sc[S];
    keel_monitor_result res;
    CHECK(keel_monitor_score(m, sc, &res) == KEEL_OK);
    CHECK(sc[0].maha > 3 * clean && sc[0].top_channel == 7 && sc[0].top_channel_z > 8);
    printf("clean windows of %zu rows: mean maha %.2f; channel 7 shifted by 1 sd: maha %.2f, top "
           "channel %d "
           "(z %+.1f)\n",
           n, clean, sc[0].maha, sc[0].top_channel, sc[0].top_channel_z);
    keel_monitor_reset_window(m);
    /* every feature scaled by 3 (a layer's weights scaled): log variance ratio near 2 log 3 */
    gen(&r, n, -1, 0, 3);
    feed(m, 0, n);
    CHECK(keel_monitor_score(m, sc, &res) == KEEL_OK);
    CHECK(fabs(sc[0].log_var_ratio - 2 * log(3.0)) < 0.3 && sc[0].maha > 100);
    printf("features scaled by 3: log variance ratio %.3f (2 log 3 = %.3f), maha %.0f\n",
           sc[0].log_var_ratio, 2 * log(3.0), sc[0].maha);
    keel_monitor_destroy(m);
}

static void test_file(void)
{
    char p[512], q[512];
    const char *tmp = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(p, sizeof p, "%s/keel_test_monchan_%ld.kmon", tmp, (long)getpid());
    snprintf(q, sizeof q, "%s/keel_test_monchan_bad_%ld.kmon", tmp, (long)getpid());
    keel_monitor *m = baselined(9), *l = NULL;
    CHECK(keel_monitor_baseline_save(m, p) == KEEL_OK);
    CHECK(keel_monitor_baseline_load(&l, p) == KEEL_OK);
    CHECK(l && keel_monitor_channel_width(l, 0) == W && keel_monitor_channel_width(l, 1) == 0);
    double n1, n2, mu1[W], mu2[W], v1[W], v2[W];
    CHECK(keel_monitor_channel_moments(m, 0, 1, &n1, mu1, v1, NULL) == KEEL_OK);
    CHECK(l && keel_monitor_channel_moments(l, 0, 1, &n2, mu2, v2, NULL) == KEEL_OK);
    CHECK(n1 == n2 && !memcmp(mu1, mu2, sizeof mu1) && !memcmp(v1, v2, sizeof v1));
    tm_rng r = {123};
    gen(&r, 300, 2, 1.0, 1);
    feed(m, 0, 300);
    keel_monitor_slot_score sa[S], sb[S];
    keel_monitor_result a, b;
    CHECK(keel_monitor_score(m, sa, &a) == KEEL_OK);
    if (l) {
        feed(l, 0, 300);
        CHECK(keel_monitor_score(l, sb, &b) == KEEL_OK);
        CHECK(!memcmp(sa, sb, sizeof sa) && a.combined == b.combined);
    }
    keel_monitor_destroy(l);
    size_t n = 0;
    unsigned char *buf = test_read_file(p, &n);
    CHECK(buf && n > 8 + 4 && buf[8] == 2); /* version 2 */
    /* the per-channel section sits before the checksum: cut it, flip it */
    const size_t sect = 4 + 8 + 16 * W + 4; /* slot 0's width, n, mean, m2; slot 1's width */
    CHECK(buf && n >= 8 + sect && n >= 8 + 100); /* the cuts and flips below index from the end */
    if (!buf || n < 8 + sect || n < 8 + 100) {
        free(buf);
        keel_monitor_destroy(m);
        return;
    }
    size_t cuts[] = {n - 8 - sect, n - 8 - sect + 2, n - 8 - 4, n - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        CHECK(test_write_file(q, buf, cuts[i]) == 0);
        l = NULL;
        CHECK(keel_monitor_baseline_load(&l, q) == KEEL_EFORMAT && l == NULL);
    }
    unsigned char *c = malloc(n);
    size_t pos[] = {n - 8 - sect, n - 8 - sect + 5, n - 8 - 100, n - 8 - 4};
    for (size_t i = 0; i < sizeof pos / sizeof pos[0]; i++) {
        memcpy(c, buf, n);
        c[pos[i]] ^= 0x04;
        CHECK(test_write_file(q, c, n) == 0);
        l = NULL;
        CHECK(keel_monitor_baseline_load(&l, q) == KEEL_EFORMAT && l == NULL);
    }
    /* a width past the limit is named */
    memcpy(c, buf, n);
    c[n - 8 - sect + 2] = 0x7f;
    CHECK(test_write_file(q, c, n) == 0);
    CHECK(keel_monitor_baseline_load(&l, q) == KEEL_EFORMAT && strstr(keel_last_error(), "width"));
    /* a version this keel does not read */
    memcpy(c, buf, n);
    c[8] = 3;
    CHECK(test_write_file(q, c, n) == 0);
    CHECK(keel_monitor_baseline_load(&l, q) == KEEL_EFORMAT &&
          strstr(keel_last_error(), "version 3"));
    free(c);
    free(buf);
    keel_monitor_destroy(m);
    /* no slot with per-channel statistics in its baseline: written as version 1, as before */
    keel_monitor *old = NULL;
    CHECK(keel_monitor_create(&old, 1, NULL) == KEEL_OK);
    CHECK(keel_monitor_observe(old, 0, 100, mean_, rstd_) == KEEL_OK &&
          keel_monitor_fit_ranges(old) == KEEL_OK);
    CHECK(keel_monitor_observe(old, 0, 100, mean_, rstd_) == KEEL_OK &&
          keel_monitor_capture_baseline(old) == KEEL_OK);
    /* turned on after the capture: the baseline holds none, saved as none (a loadable file) */
    CHECK(keel_monitor_channels(old, 0, 4) == KEEL_OK);
    CHECK(keel_monitor_baseline_save(old, p) == KEEL_OK);
    buf = test_read_file(p, &n);
    CHECK(buf && n > 12 && buf[8] == 1);
    l = NULL;
    CHECK(keel_monitor_baseline_load(&l, p) == KEEL_OK && keel_monitor_channel_width(l, 0) == 0);
    keel_monitor_destroy(l);
    keel_monitor_destroy(old);
    free(buf);
    remove(p);
    remove(q);
}

int main(void)
{
    test_moments();
    test_add_moments();
    test_bad_input();
    test_score();
    test_file();
    if (fails) {
        fprintf(stderr, "%d check(s) failed\n", fails);
        return 1;
    }
    printf("test_monitor_channels: ok\n");
    return 0;
}
