/* Fuzz target: the monitor's baseline loader (src/monitor/baseline_io.c, baseline_check.c).
 * docs/reliability.md, "Fuzzing".
 *
 * The input is a baseline file ("KEELMON1"). Its FNV-1a checksum (the last 8 bytes) is
 * recomputed before it is written, except for one input in 16, so that mutations reach the
 * field checks behind the checksum (finding 6 of issue 23). Checked:
 *  - keel_monitor_baseline_load returns a keel_status; on an error *mon is untouched and
 *    keel_last_error() says why;
 *  - a baseline that loads can be used: slots in range, a score of the empty window and of a
 *    window of a few tokens (every slot, with and without the mean statistic) returns a status
 *    and no report, and merge/reset work;
 *  - what loads saves, the saved file loads again, and saving that gives the same bytes (a
 *    baseline keel writes is one keel reads: save o load is a fixed point). */
#include "fuzz_common.h" /* first: it sets _POSIX_C_SOURCE */

#include <math.h>

#include "keel.h"

static char in_path_[600], out1_[600], out2_[600];

static int valid_status(keel_status st)
{
    return (int)st >= (int)KEEL_OK && (int)st <= (int)KEEL_EBUSY;
}

static void use(keel_monitor *m, const uint8_t *data, size_t size)
{
    const int S = keel_monitor_slots(m);
    FZ_CHECK(S >= 1 && S <= 65536, "%d slots", S);
    keel_monitor_result res;
    keel_monitor_slot_score *slots = calloc((size_t)S, sizeof *slots);
    if (!slots)
        return;
    keel_status st = keel_monitor_score(m, slots, &res);
    FZ_CHECK(valid_status(st), "keel_monitor_score on an empty window: status %d", (int)st);
    /* a window: a few tokens in every slot (at most 64 slots), values from the input */
    float mean[16], rstd[16];
    for (int i = 0; i < 16; i++) {
        uint8_t b = size ? data[(size_t)i * 31 % size] : 0;
        mean[i] = (float)((int)b - 128) / 64.0f;
        rstd[i] = b % 17 == 0 ? (b & 1 ? NAN : 0.0f) : expf((float)((int)b - 128) / 32.0f);
    }
    for (int s = 0; s < S && s < 64; s++) {
        st = keel_monitor_observe(m, s, 16, s % 2 ? NULL : mean, rstd);
        FZ_CHECK(st == KEEL_OK, "keel_monitor_observe on slot %d: %s", s, keel_last_error());
    }
    for (int s = 0; s < S && s < 64; s++) { /* the per-channel statistics a file holds */
        const int w = keel_monitor_channel_width(m, s);
        if (w == 0 || w > 4096)
            continue;
        double bn = 0;
        st = keel_monitor_channel_moments(m, s, 1, &bn, NULL, NULL, NULL);
        FZ_CHECK(st == KEEL_OK && bn >= 2,
                 "keel_monitor_channel_moments of the baseline, slot %d: %s", s, keel_last_error());
        float *x = malloc((size_t)16 * (size_t)w * sizeof(float));
        if (!x)
            continue;
        for (size_t i = 0; i < (size_t)16 * (size_t)w; i++) {
            uint8_t b = size ? data[i * 7 % size] : 0;
            x[i] = b == 255 ? INFINITY : (float)((int)b - 128) / 16.0f;
        }
        st = keel_monitor_observe_channels(m, s, 16, x, (size_t)w);
        FZ_CHECK(st == KEEL_OK, "keel_monitor_observe_channels on slot %d: %s", s,
                 keel_last_error());
        free(x);
    }
    st = keel_monitor_score(m, slots, &res);
    FZ_CHECK(valid_status(st), "keel_monitor_score: status %d", (int)st);
    st = keel_monitor_score(m, NULL, &res);
    FZ_CHECK(valid_status(st), "keel_monitor_score without slots: status %d", (int)st);
    double count, mu, var;
    st = keel_monitor_window_moments(m, 0, KEEL_MONITOR_LOGRSTD, &count, &mu, &var);
    FZ_CHECK(st == KEEL_OK, "keel_monitor_window_moments: %s", keel_last_error());
    FZ_CHECK(keel_monitor_reset_window(m) == KEEL_OK, "keel_monitor_reset_window: %s",
             keel_last_error());
    free(slots);
}

static void round_trip(keel_monitor *m)
{
    keel_status st = keel_monitor_baseline_save(m, out1_);
    FZ_CHECK(st == KEEL_OK, "saving a loaded baseline: %s", keel_last_error());
    keel_monitor *m2 = NULL;
    st = keel_monitor_baseline_load(&m2, out1_);
    FZ_CHECK(st == KEEL_OK, "a baseline keel saved does not load: %s", keel_last_error());
    st = keel_monitor_baseline_save(m2, out2_);
    FZ_CHECK(st == KEEL_OK, "saving a reloaded baseline: %s", keel_last_error());
    keel_monitor_destroy(m2);
    size_t n1 = 0, n2 = 0;
    uint8_t *a = fz_read_file(out1_, &n1), *b = fz_read_file(out2_, &n2);
    FZ_CHECK(a && b && n1 == n2 && memcmp(a, b, n1) == 0,
             "save, load, save is not a fixed point (%zu and %zu bytes)", n1, n2);
    free(a);
    free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        fz_path(in_path_, sizeof in_path_, "in.kmon");
        fz_path(out1_, sizeof out1_, "out1.kmon");
        fz_path(out2_, sizeof out2_, "out2.kmon");
        ready = 1;
    }
    uint8_t *file = malloc(size ? size : 1);
    if (!file)
        return 0;
    memcpy(file, data, size);
    if (size >= 16 && fz_fnv1a(data, size) % 16 != 5) {
        const uint64_t sum = fz_fnv1a(file, size - 8);
        memcpy(file + size - 8, &sum, 8); /* little-endian hosts, as the format */
    }
    fz_write_file(in_path_, file, size);
    free(file);

    keel_monitor *m = (keel_monitor *)(uintptr_t)0x5a5a;
    keel_status st = keel_monitor_baseline_load(&m, in_path_);
    FZ_CHECK(valid_status(st), "keel_monitor_baseline_load: status %d", (int)st);
    if (st != KEEL_OK) {
        FZ_CHECK(m == (keel_monitor *)(uintptr_t)0x5a5a, "a failed load changed *mon");
        FZ_CHECK(keel_last_error()[0], "keel_monitor_baseline_load: status %d without a message",
                 (int)st);
        return 0;
    }
    FZ_CHECK(m != NULL, "keel_monitor_baseline_load: KEEL_OK and no monitor");
    round_trip(m);
    use(m, data, size);
    keel_monitor_destroy(m);
    return 0;
}
