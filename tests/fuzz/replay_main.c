/* The replay driver of the fuzz targets (tests/fuzz): with any compiler, links to one target's
 * LLVMFuzzerTestOneInput and runs it once over every file named on the command line or found
 * in a folder named there (one level, in name order, so a run is reproducible). ctest runs it
 * over each target's corpus in the sanitizer build; a failing input aborts with the target's
 * message or the sanitizer's report, and the driver names the file before it runs it
 * (KEEL_FUZZ_VERBOSE=1) or after a failure to read it. Exit status 0 when every file ran. */
#define _POSIX_C_SOURCE 200809L /* opendir, stat */

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Optional in a target (libFuzzer calls it once when it is defined). */
__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv);

static int verbose;

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "replay: cannot open %s\n", path);
        return -1;
    }
    size_t cap = 4096, n = 0, got;
    uint8_t *p = malloc(cap);
    while (p && (got = fread(p + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            uint8_t *q = realloc(p, cap *= 2);
            if (!q)
                free(p);
            p = q;
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (!p || bad) {
        fprintf(stderr, "replay: cannot read %s\n", path);
        free(p);
        return -1;
    }
    if (verbose) {
        /* fd 2 directly: a target may have pointed the stderr stream at /dev/null */
        char line[4200];
        int k = snprintf(line, sizeof line, "replay: %s (%zu bytes)\n", path, n);
        if (k > 0 && write(2, line, (size_t)k < sizeof line ? (size_t)k : sizeof line - 1) < 0)
            verbose = 0;
    }
    /* an exact-size copy, so that a read one byte past the input is a sanitizer report */
    uint8_t *exact = malloc(n ? n : 1);
    if (!exact) {
        free(p);
        return -1;
    }
    memcpy(exact, p, n);
    free(p);
    LLVMFuzzerTestOneInput(exact, n);
    free(exact);
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every regular file of dir, in name order; the count run, or -1. */
static long run_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "replay: cannot open the folder %s\n", dir);
        return -1;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        if (n == cap) {
            char **q = realloc(names, (cap = cap ? 2 * cap : 64) * sizeof *names);
            if (!q)
                break;
            names = q;
        }
        size_t len = strlen(dir) + strlen(e->d_name) + 2;
        if (!(names[n] = malloc(len)))
            break;
        snprintf(names[n++], len, "%s/%s", dir, e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp_str);
    long ran = 0;
    for (size_t i = 0; i < n; i++) {
        struct stat sb;
        if (stat(names[i], &sb) == 0 && S_ISREG(sb.st_mode)) {
            if (run_file(names[i]))
                ran = -1;
            else if (ran >= 0)
                ran++;
        }
        free(names[i]);
    }
    free(names);
    return ran;
}

int main(int argc, char **argv)
{
    const char *v = getenv("KEEL_FUZZ_VERBOSE");
    verbose = v && *v && strcmp(v, "0");
    if (argc < 2) {
        fprintf(stderr,
                "usage: %s FILE|FOLDER...\n"
                "Runs the fuzz target once over each file (a folder: each file in it).\n",
                argv[0]);
        return 2;
    }
    if (LLVMFuzzerInitialize)
        LLVMFuzzerInitialize(&argc, &argv);
    long total = 0;
    int failed = 0;
    for (int i = 1; i < argc; i++) {
        struct stat sb;
        if (stat(argv[i], &sb) != 0) {
            fprintf(stderr, "replay: %s: no such file or folder\n", argv[i]);
            failed = 1;
            continue;
        }
        long k = S_ISDIR(sb.st_mode) ? run_dir(argv[i]) : run_file(argv[i]) ? -1 : 1;
        if (k < 0)
            failed = 1;
        else
            total += k;
    }
    /* printf's stream may be /dev/null by now (fz_quiet_stdio): the count goes to fd 1 */
    char line[256];
    int k = snprintf(line, sizeof line, "replay: %ld inputs ran%s\n", total,
                     failed ? ", some could not be read" : "");
    if (k > 0 && write(1, line, (size_t)k) < 0)
        return 1;
    return failed || total == 0;
}
