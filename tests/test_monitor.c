/* keel monitor (issue 8), through keel.h: Welford merge determinism, the baseline file (round
 * trip; truncated, foreign, other-version and bit-flipped files refused), and scoring (an obvious
 * shift alarms, clean windows mostly do not); and, of the internals (monitor/monitor_internal.h),
 * PSI, KS and the binning on inputs whose values are known by hand. The files it writes go to
 * $TMPDIR or /tmp (the test runs in the source tree). */
#define _POSIX_C_SOURCE 200809L /* getpid */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keel.h"
#include "monitor/monitor_internal.h"
#include "test_common.h" /* test_read_file, test_write_file */
#include "../train/rng.h" /* the draws the thresholds below were set on (splitmix64, Box-Muller) */

static int fails;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "FAIL %s:%d: %s (%s)\n", __FILE__, __LINE__, #c, keel_last_error()); fails++; } } while (0)

enum { S = 3, N = 4096 };
static float mean_[S][N], rstd_[S][N];

static void gen(tm_rng *r, double shift, size_t n)
{
    for (int s = 0; s < S; s++)
        for (size_t i = 0; i < n; i++) {
            mean_[s][i] = (float)(0.1 * s + 0.05 * tm_rng_normal(r) + shift * 0.05);
            rstd_[s][i] = (float)exp(-1.0 - 0.1 * s + 0.1 * tm_rng_normal(r));
        }
}
static void feed(keel_monitor *m, size_t a, size_t b)
{
    for (int s = 0; s < S; s++)
        CHECK(keel_monitor_observe(m, s, b - a, s == 2 ? NULL : mean_[s] + a, rstd_[s] + a) == KEEL_OK);
}

static keel_monitor *calibrated(void)
{
    tm_rng r = {7};
    keel_monitor *m;
    CHECK(keel_monitor_create(&m, S, NULL) == KEEL_OK);
    gen(&r, 0, N);
    feed(m, 0, N);
    CHECK(keel_monitor_fit_ranges(m) == KEEL_OK);
    feed(m, 0, N);
    CHECK(keel_monitor_capture_baseline(m) == KEEL_OK);
    for (int k = 0; k < 200; k++) {
        gen(&r, 0, 256);
        feed(m, 0, 256);
        CHECK(keel_monitor_calibrate_add(m) == KEEL_OK);
    }
    CHECK(keel_monitor_calibrate_finish(m, 0.05) == KEEL_OK);
    return m;
}

static void test_welford(void)
{
    tm_rng r = {1};
    gen(&r, 0, N);
    double ref[2][3];
    keel_monitor *one;
    CHECK(keel_monitor_create(&one, S, NULL) == KEEL_OK);
    feed(one, 0, N);
    for (int st = 0; st < 2; st++)
        keel_monitor_window_moments(one, 0, st, &ref[st][0], &ref[st][1], &ref[st][2]);
    /* a two-pass reference in long double */
    long double sum = 0, ss = 0;
    for (int i = 0; i < N; i++) sum += mean_[0][i];
    long double mu = sum / N;
    for (int i = 0; i < N; i++) ss += (mean_[0][i] - mu) * (mean_[0][i] - mu);
    CHECK(fabs(ref[0][1] - (double)mu) < 1e-15 && fabs(ref[0][2] - (double)(ss / N)) < 1e-14 * (double)(ss / N));
    double got[2][2][3];
    for (int rep = 0; rep < 2; rep++) { /* four "threads", merged in a fixed order, twice */
        keel_monitor *t[4];
        for (int k = 0; k < 4; k++) {
            CHECK(keel_monitor_create(&t[k], S, NULL) == KEEL_OK);
            feed(t[k], (size_t)k * N / 4, (size_t)(k + 1) * N / 4);
        }
        for (int k = 1; k < 4; k++)
            CHECK(keel_monitor_merge(t[0], t[k]) == KEEL_OK);
        for (int st = 0; st < 2; st++)
            keel_monitor_window_moments(t[0], 0, st, &got[rep][st][0], &got[rep][st][1], &got[rep][st][2]);
        for (int k = 0; k < 4; k++)
            keel_monitor_destroy(t[k]);
    }
    CHECK(memcmp(got[0], got[1], sizeof got[0]) == 0); /* deterministic: bitwise */
    for (int st = 0; st < 2; st++) {
        CHECK(got[0][st][0] == N);
        CHECK(fabs(got[0][st][1] - ref[st][1]) <= 1e-12 * (fabs(ref[st][1]) + 1e-3));
        CHECK(fabs(got[0][st][2] - ref[st][2]) <= 1e-10 * ref[st][2]);
    }
    keel_monitor *bad;
    CHECK(keel_monitor_create(&bad, S + 1, NULL) == KEEL_OK);
    CHECK(keel_monitor_merge(one, bad) == KEEL_EINVAL);
    keel_monitor_destroy(bad);
    keel_monitor_destroy(one);
}

static void test_hist_math(void)
{
    uint64_t a[2] = {10, 0}, b[2] = {0, 10}, c[4] = {5, 5, 5, 5}, d[4] = {5, 5, 5, 5}, e[4] = {10, 10, 0, 0};
    /* p = (10.5, 0.5)/11, q = (0.5, 10.5)/11: PSI = 2 (10/11) ln 21 */
    CHECK(fabs(mon_psi(a, b, 2) - 2.0 * (10.0 / 11.0) * log(21.0)) < 1e-12);
    CHECK(mon_ks(a, b, 2) == 1.0);
    CHECK(mon_psi(c, d, 4) == 0.0 && mon_ks(c, d, 4) == 0.0);
    CHECK(fabs(mon_ks(e, c, 4) - 0.5) < 1e-15); /* CDFs 0.5/0.25 then 1/0.5 */
    CHECK(mon_bin(-1, 0, 1, 4) == 0 && mon_bin(0, 0, 1, 4) == 1 && mon_bin(0.99, 0, 1, 4) == 4 &&
          mon_bin(1, 0, 1, 4) == 5 && mon_bin(NAN, 0, 1, 4) == 0);
    /* rows with a bad rstd are counted apart */
    keel_monitor *m;
    CHECK(keel_monitor_create(&m, 1, NULL) == KEEL_OK);
    float mu[3] = {0, 1, NAN}, rs[3] = {1, 0, 2};
    CHECK(keel_monitor_observe(m, 0, 3, mu, rs) == KEEL_OK);
    double n;
    keel_monitor_window_moments(m, 0, 1, &n, NULL, NULL);
    CHECK(n == 1);
    CHECK(keel_monitor_observe(m, 1, 3, mu, rs) == KEEL_EINVAL);
    CHECK(keel_monitor_observe(m, 0, 3, mu, NULL) == KEEL_ENULL);
    keel_monitor_result res;
    CHECK(keel_monitor_score(m, NULL, &res) == KEEL_EINVAL); /* no baseline */
    keel_monitor_destroy(m);
}

static void test_file(void)
{
    keel_monitor *m = calibrated(), *l = NULL;
    char p[512], q[512];
    const char *tmp = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(p, sizeof p, "%s/keel_test_monitor_%ld.kmon", tmp, (long)getpid());
    snprintf(q, sizeof q, "%s/keel_test_monitor_bad_%ld.kmon", tmp, (long)getpid());
    CHECK(keel_monitor_baseline_save(m, p) == KEEL_OK);
    CHECK(keel_monitor_baseline_load(&l, p) == KEEL_OK);
    tm_rng r = {99};
    gen(&r, 1.0, 512);
    feed(m, 0, 512);
    if (l) feed(l, 0, 512);
    keel_monitor_result a, b;
    keel_monitor_slot_score sa[S], sb[S];
    CHECK(keel_monitor_score(m, sa, &a) == KEEL_OK);
    CHECK(l && keel_monitor_score(l, sb, &b) == KEEL_OK);
    CHECK(a.combined == b.combined && a.threshold == b.threshold && a.alarm == b.alarm);
    CHECK(memcmp(sa, sb, sizeof sa) == 0);
    keel_monitor_destroy(l);
    size_t n = 0;
    unsigned char *buf = test_read_file(p, &n);
    CHECK(buf && n > 100);
    if (!buf || n <= 100) { /* the cuts and flips below index into the file */
        free(buf);
        keel_monitor_destroy(m);
        return;
    }
    /* truncated at many lengths, including inside the header */
    size_t cuts[] = {0, 4, 8, 20, 39, 40, n / 2, n - 9, n - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        CHECK(test_write_file(q, buf, cuts[i]) == 0);
        l = NULL;
        CHECK(keel_monitor_baseline_load(&l, q) == KEEL_EFORMAT && l == NULL);
        CHECK(cuts[i] < 8 || strstr(keel_last_error(), "truncated"));
    }
    /* foreign: a checkpoint-like header, and text */
    CHECK(test_write_file(q, "KEELCKPT\1\0\0\0 something else entirely", 36) == 0);
    CHECK(keel_monitor_baseline_load(&l, q) == KEEL_EFORMAT && strstr(keel_last_error(), "not a keel monitor"));
    /* another version */
    unsigned char *c = malloc(n);
    memcpy(c, buf, n);
    c[8] = 3; /* 2 is the per-channel version (test_monitor_channels.c) */
    CHECK(test_write_file(q, c, n) == 0);
    CHECK(keel_monitor_baseline_load(&l, q) == KEEL_EFORMAT && strstr(keel_last_error(), "version"));
    /* a flipped bit anywhere past the header's sizes: the checksum catches it */
    size_t pos[] = {40, 41, 100, n / 3, n / 2, n - 20, n - 9, n - 1};
    for (size_t i = 0; i < sizeof pos / sizeof pos[0]; i++) {
        memcpy(c, buf, n);
        c[pos[i]] ^= 0x10;
        CHECK(test_write_file(q, c, n) == 0);
        l = NULL;
        CHECK(keel_monitor_baseline_load(&l, q) == KEEL_EFORMAT && l == NULL);
        CHECK(strstr(keel_last_error(), "checksum"));
    }
    /* trailing bytes */
    unsigned char *d = malloc(n + 3);
    memcpy(d, buf, n);
    memset(d + n, 0, 3);
    CHECK(test_write_file(q, d, n + 3) == 0);
    CHECK(keel_monitor_baseline_load(&l, q) == KEEL_EFORMAT);
    CHECK(keel_monitor_baseline_load(&l, "no/such/file.kmon") == KEEL_EIO);
    free(d);
    free(c);
    free(buf);
    remove(p);
    remove(q);
    keel_monitor_destroy(m);
}

static void test_score(void)
{
    keel_monitor *m = calibrated();
    tm_rng r = {2024};
    int clean_alarms = 0;
    for (int k = 0; k < 100; k++) {
        gen(&r, 0, 256);
        feed(m, 0, 256);
        keel_monitor_result res;
        CHECK(keel_monitor_score(m, NULL, &res) == KEEL_OK);
        CHECK(res.calibrated && res.bucket_tokens == 256);
        clean_alarms += res.alarm;
        keel_monitor_reset_window(m);
    }
    CHECK(clean_alarms <= 15); /* calibrated to 5% */
    gen(&r, 2.0, 256); /* means shifted by 2 of their sd... (0.05 * 2 / 0.05) */
    feed(m, 0, 256);
    keel_monitor_result res;
    keel_monitor_slot_score ss[S];
    CHECK(keel_monitor_score(m, ss, &res) == KEEL_OK);
    CHECK(res.alarm && res.combined > res.threshold);
    CHECK(ss[0].has_mean && !ss[2].has_mean && ss[0].z[0] > 10 && ss[0].ks[0] > 0.3);
    /* the standardised components are what the scores average: each slot's score is the mean
     * of its defined ones, the combined score the mean over every slot's; the shift moved the
     * means, so the largest is a mean statistic's; RMSNorm's slot has none for the mean */
    double all = 0.0, best = -INFINITY;
    int nall = 0, best_stat = -1;
    for (int s = 0; s < S; s++) {
        double sum = 0.0;
        int n = 0;
        for (int t = 0; t < 2; t++)
            for (int c = 0; c < 3; c++) {
                const double v = ss[s].standardised[t][c];
                if (v != v)
                    continue;
                sum += v, n++;
                if (v > best)
                    best = v, best_stat = t;
            }
        CHECK(n > 0 && fabs(sum / n - ss[s].score) <= 1e-12 * (1.0 + fabs(ss[s].score)));
        all += sum, nall += n;
    }
    CHECK(fabs(all / nall - res.combined) <= 1e-12 * (1.0 + fabs(res.combined)));
    CHECK(best_stat == KEEL_MONITOR_MEAN && best > 10.0);
    CHECK(isnan(ss[2].standardised[KEEL_MONITOR_MEAN][0]) && !isnan(ss[2].standardised[KEEL_MONITOR_LOGRSTD][0]));
    printf("clean windows alarmed: %d of 100 (5%% target); shifted: combined %.2f vs threshold %.2f\n",
           clean_alarms, res.combined, res.threshold);
    keel_monitor_destroy(m);
}

int main(void)
{
    test_welford();
    test_hist_math();
    test_file();
    test_score();
    if (fails) {
        fprintf(stderr, "%d check(s) failed\n", fails);
        return 1;
    }
    printf("test_monitor: ok\n");
    return 0;
}
