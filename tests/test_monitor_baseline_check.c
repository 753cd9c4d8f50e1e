/* keel monitor baselines (issue 23, finding 6): a file whose checksum is right but whose fields
 * are not (NaN bounds, negative moments, counts beyond the tokens, a false-alarm rate outside
 * (0, 1), a zero spread...) is refused with KEEL_EFORMAT and a message naming the field, as a
 * writer who recomputes the FNV-1a checksum would make it. A baseline keel wrote still loads,
 * with the NaN calibration means of a norm without a mean statistic. */
#define _POSIX_C_SOURCE 200809L /* getpid */
#include <math.h>
#include <unistd.h>

#include "test_common.h"
#include "fnv1a.h"

enum { S = 3, N = 2048, BINS = 32 };
static float mean_[S][N], rstd_[S][N];

static uint64_t rng_;
static double uniform(void)
{
    rng_ = rng_ * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng_ >> 11) / 9007199254740992.0;
}

/* A calibrated monitor saved to path: slot 2 without the mean statistic (as RMSNorm). */
static void make_baseline(const char *path)
{
    keel_monitor *m = NULL;
    keel_monitor_config cfg = {.bins = BINS};
    if (keel_monitor_create(&m, S, &cfg) != KEEL_OK)
        test_fatal("keel_monitor_create");
    for (int pass = 0; pass < 2 + 100; pass++) {
        size_t n = pass < 2 ? N : pass % 2 ? 128 : 256; /* two window sizes: two buckets */
        for (int s = 0; s < S; s++)
            for (size_t i = 0; i < n; i++) {
                mean_[s][i] = (float)(0.1 * s + 0.05 * uniform());
                rstd_[s][i] = (float)exp(-1.0 - 0.1 * s + 0.1 * uniform());
            }
        for (int s = 0; s < S; s++)
            keel_monitor_observe(m, s, n, s == 2 ? NULL : mean_[s], rstd_[s]);
        keel_status st = pass == 0 ? keel_monitor_fit_ranges(m)
                         : pass == 1 ? keel_monitor_capture_baseline(m)
                                     : keel_monitor_calibrate_add(m);
        if (st != KEEL_OK)
            test_fatal(keel_last_error());
    }
    if (keel_monitor_calibrate_finish(m, 0.05) != KEEL_OK || keel_monitor_baseline_save(m, path) != KEEL_OK)
        test_fatal(keel_last_error());
    keel_monitor_destroy(m);
}

static unsigned char file_[65536];
static size_t len_;
static char ok_path_[512], bad_path_[512]; /* in $TMPDIR or /tmp (the test runs in the source tree) */

/* The baseline with the 8 bytes at off replaced by v (a double, or with as_u64 an integer), its
 * checksum recomputed: must be refused with KEEL_EFORMAT and needle in the message. */
static void expect_refused(size_t off, double v, int as_u64, const char *needle)
{
    unsigned char p[sizeof file_];
    memcpy(p, file_, len_);
    uint64_t u = as_u64 ? (uint64_t)v : 0;
    memcpy(p + off, as_u64 ? (const void *)&u : (const void *)&v, 8);
    uint64_t sum = keel_fnv1a(p, len_ - 8);
    memcpy(p + len_ - 8, &sum, 8);
    FILE *f = fopen(bad_path_, "wb");
    if (!f || fwrite(p, 1, len_, f) != len_ || fclose(f))
        test_fatal("cannot write the crafted baseline");
    keel_monitor *m = NULL;
    keel_status st = keel_monitor_baseline_load(&m, bad_path_);
    const char *msg = keel_last_error();
    printf("byte %4zu: %s\n", off, st == KEEL_OK ? "ACCEPTED" : msg);
    test_check(st == KEEL_EFORMAT && strstr(msg, needle) && !m, "byte %zu = %g: status %d, '%s' (want '%s')", off, v,
               (int)st, msg, needle);
    keel_monitor_destroy(m);
}

int main(void)
{
    test_begin("test_monitor_baseline_check");
    rng_ = 12345;
    const char *tmp = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(ok_path_, sizeof ok_path_, "%s/keel_baseline_ok_%ld.kmon", tmp, (long)getpid());
    snprintf(bad_path_, sizeof bad_path_, "%s/keel_baseline_bad_%ld.kmon", tmp, (long)getpid());
    make_baseline(ok_path_);
    FILE *f = fopen(ok_path_, "rb");
    len_ = f ? fread(file_, 1, sizeof file_, f) : 0;
    if (f)
        fclose(f);
    keel_monitor *m = NULL;
    test_check(len_ > 0 && len_ < sizeof file_ && keel_monitor_baseline_load(&m, ok_path_) == KEEL_OK,
               "the baseline keel wrote does not load: %s", keel_last_error());
    keel_monitor_destroy(m);

    /* the layout (baseline_io.c): a 32-byte header (range_sd at 24); per slot: u32 has_mean and,
     * per statistic (mean, log-rstd): f64 n, mean, m2, lo, hi, u32 ranged, u64 counts[bins + 2];
     * per calibration bucket: f64 tokens, threshold, false_alarm, mu[S * 6], sd[S * 6] */
    const size_t stat = 5 * 8 + 4 + (BINS + 2) * 8, slot = 4 + 2 * stat;
    const size_t mean0 = 32 + 4, lrstd0 = mean0 + stat, bucket0 = 32 + S * slot, bucket = 3 * 8 + 2 * S * 6 * 8;
    expect_refused(24, NAN, 0, "range_sd is nan");
    expect_refused(mean0 + 16, -1.0, 0, "norm 0, mean statistic: its sum of squared deviations is negative");
    expect_refused(mean0 + 24, NAN, 0, "norm 0, mean statistic: its histogram range is not finite");
    expect_refused(mean0 + 24, 1e9, 0, "lo < hi");
    expect_refused(mean0 + 8, INFINITY, 0, "its mean is not finite");
    expect_refused(lrstd0, -5.0, 0, "norm 0, log-rstd statistic: its token count");
    expect_refused(lrstd0, 1.5, 0, "its token count is not a whole number");
    expect_refused(lrstd0 + 5 * 8 + 4, 1e12, 1, "its histogram counts more tokens than it holds");
    expect_refused(slot + lrstd0 + 32, NAN, 0, "norm 1, log-rstd statistic: its histogram range");
    expect_refused(bucket0 + 16, 2.0, 0, "calibration 0 (window 128): its false-alarm rate");
    expect_refused(bucket0 + 8, INFINITY, 0, "its threshold is not finite");
    expect_refused(bucket0 + 24, INFINITY, 0, "a component's mean is infinite");
    expect_refused(bucket0 + 24 + S * 6 * 8, 0.0, 0, "its spread not finite and > 0");
    expect_refused(bucket0, 0.5, 0, "calibration 0 (window 0.5): its window size is not finite, >= 1");
    expect_refused(bucket0 + bucket, 100.0, 0, "calibration 1 (window 100): its window size is not finite, >= 1 and above");
    remove(ok_path_);
    remove(bad_path_);
    return test_finish();
}
