/* keel monitor calibrate under an address-space limit (issue 23, finding 11): OpenBLAS maps a
 * 128 MiB working buffer per thread on its first large product and retries for ever when the
 * mapping fails. With the limit set 64 MiB above what the process maps already, the command
 * must exit 1 with a message that names the limit (tm_memory_check, before BLAS is called),
 * not hang (an alarm ends the test as a failure after 60 s); 512 MiB above, it must succeed. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "commands_monitor.h"
#include "test_ckpt_util.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define UNDER_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define UNDER_SANITIZER 1
#endif
#endif

/* The bytes this process maps now (/proc/self/statm: the first field, in pages), or 0. */
static unsigned long long mapped_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long pages = 0;
    if (f) {
        if (fscanf(f, "%llu", &pages) != 1)
            pages = 0;
        fclose(f);
    }
    return pages * (unsigned long long)sysconf(_SC_PAGESIZE);
}

static int calibrate(unsigned long long headroom, const struct rlimit *old)
{
    struct rlimit lim = *old;
    lim.rlim_cur = (rlim_t)(mapped_bytes() + headroom);
    if (old->rlim_max != RLIM_INFINITY && lim.rlim_cur > old->rlim_max)
        return -2;
    if (setrlimit(RLIMIT_AS, &lim))
        return -2;
    const char *args[] = {"monitor", "calibrate", "--checkpoint", "test_memlimit.ckpt", "--text",
                          "test_memlimit.txt", "-o", "test_memlimit.kmon"};
    char *argv[8];
    for (int i = 0; i < 8; i++)
        argv[i] = (char *)args[i];
    int rc = keel_cmd_monitor(8, argv);
    setrlimit(RLIMIT_AS, old);
    return rc;
}

int main(void)
{
#ifdef UNDER_SANITIZER
    printf("test_train_memlimit: skipped (a sanitizer maps terabytes of shadow memory)\n");
    return 0;
#endif
    if (!tm_have_cblas() || mapped_bytes() == 0) {
        printf("test_train_memlimit: skipped (no CBLAS, or no /proc/self/statm)\n");
        return 0;
    }
    tm_data d;
    if (tm_data_load(&d, NULL)) {
        fprintf(stderr, "%s\n", tool_last_error());
        return 1;
    }
    tm_config c = {.layers = 1, .width = 16, .heads = 2, .seq = 16, .tied = 1, .norm = TM_NORM_LAYER,
                   .place = TM_PRE, .eps = 1e-5f};
    if (tu_write_fresh_ckpt("test_memlimit.ckpt", &c, &d)) {
        fprintf(stderr, "%s\n", tool_last_error());
        return 1;
    }
    FILE *f = fopen("test_memlimit.txt", "wb");
    for (size_t i = 0; f && i < 20000; i++)
        fputc(d.chars[d.tok[i]], f);
    if (f)
        fclose(f);
    tm_data_free(&d);
    struct rlimit old;
    if (getrlimit(RLIMIT_AS, &old)) {
        printf("test_train_memlimit: skipped (getrlimit failed)\n");
        return 0;
    }
    alarm(60); /* a hang inside BLAS: SIGALRM ends the process, the test fails */
    int fails = 0;
    int tight = calibrate((unsigned long long)64 << 20, &old);
    printf("limit 64 MiB above the mapped bytes: exit %d (want 1, with the limit in the message)\n", tight);
    fails += tight != 1 && tight != -2;
    int roomy = calibrate((unsigned long long)512 << 20, &old);
    printf("limit 512 MiB above: exit %d (want 0)\n", roomy);
    fails += roomy != 0 && roomy != -2;
    if (tight == -2 || roomy == -2)
        printf("(a hard limit below the test's: that part was not run)\n");
    remove("test_memlimit.ckpt");
    remove("test_memlimit.txt");
    remove("test_memlimit.kmon");
    printf("test_train_memlimit: %s\n", fails ? "FAILED" : "ok");
    return fails ? 1 : 0;
}
