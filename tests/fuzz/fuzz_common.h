/* Shared by the fuzz targets of tests/fuzz (docs/reliability.md, "Fuzzing"): a cursor that
 * decodes a fuzz input (reads past the end give 0, so every input is a valid program), a fatal
 * check that libFuzzer records as a crash, quiet stdio for the targets that run commands, and
 * a private temporary folder for the loaders that take a path.
 *
 * Each target is one LLVMFuzzerTestOneInput; built with -fsanitize=fuzzer it is a libFuzzer
 * binary, built with replay_main.c (any compiler) it runs the given corpus files once each. */
#ifndef KEEL_FUZZ_COMMON_H
#define KEEL_FUZZ_COMMON_H

#define _POSIX_C_SOURCE 200809L /* mkdtemp, unlink, rmdir */

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- decoding the input --------------------------------------------------------------------- */

typedef struct fz_reader {
    const uint8_t *p;
    size_t n, at;
} fz_reader;

static inline uint8_t fz_u8(fz_reader *r) { return r->at < r->n ? r->p[r->at++] : 0; }

static inline uint16_t fz_u16(fz_reader *r)
{
    uint16_t lo = fz_u8(r);
    return (uint16_t)(lo | (uint16_t)fz_u8(r) << 8);
}

static inline uint32_t fz_u32(fz_reader *r)
{
    uint32_t lo = fz_u16(r);
    return lo | (uint32_t)fz_u16(r) << 16;
}

/* ---- failing ----------------------------------------------------------------------------------
 */

/* A broken property: the message goes to the real stderr (fd 2, which fz_quiet_stdio leaves to
 * the sanitizers and libFuzzer) and abort() makes libFuzzer save the input as a crash. */
#define FZ_CHECK(cond, ...)                                                                        \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            char fz_msg_[1024];                                                                    \
            int fz_n_ = snprintf(fz_msg_, sizeof fz_msg_,                                          \
                                 "fuzz check failed at %s:%d: %s: ", __FILE__, __LINE__, #cond);   \
            if (fz_n_ > 0 && (size_t)fz_n_ < sizeof fz_msg_)                                       \
                snprintf(fz_msg_ + fz_n_, sizeof fz_msg_ - (size_t)fz_n_, __VA_ARGS__);            \
            fz_die(fz_msg_);                                                                       \
        }                                                                                          \
    } while (0)

static inline void fz_die(const char *msg)
{
    /* write(2) rather than stderr: fz_quiet_stdio may have pointed the stream at /dev/null */
    size_t n = strlen(msg);
    if (write(2, msg, n) < 0 || write(2, "\n", 1) < 0)
        abort();
    abort();
}

/* ---- quiet commands ---------------------------------------------------------------------------
 */

/* The commands print usage, errors and results through stdio; at thousands of runs a second
 * that is noise (and time). glibc lets the stdout and stderr streams be reassigned, so they are
 * pointed at /dev/null while file descriptor 2 stays open for the sanitizers' reports and
 * libFuzzer's own lines (freopen would have closed fd 2 and lost them). KEEL_FUZZ_VERBOSE=1
 * keeps the output. */
static inline void fz_quiet_stdio(void)
{
    const char *v = getenv("KEEL_FUZZ_VERBOSE");
    if (v && *v && strcmp(v, "0"))
        return;
#ifdef __GLIBC__
    FILE *null = fopen("/dev/null", "w");
    if (null) {
        fflush(stdout);
        fflush(stderr);
        stdout = null;
        stderr = null;
    }
#endif
}

/* ---- files for the loaders that take a path ------------------------------------------------- */

static char fz_dir_[512];

static inline void fz_rm_dir(void)
{
    /* the targets' files are flat or one level deep and have fixed names: remove what is there */
    if (!fz_dir_[0])
        return;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fz_dir_);
    if (system(cmd) != 0)
        fz_dir_[0] = '\0';
}

/* A private folder, made once, removed at exit. */
static inline const char *fz_tmp_dir(void)
{
    if (!fz_dir_[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(fz_dir_, sizeof fz_dir_, "%s/keel-fuzz-XXXXXX",
                 t && *t && strlen(t) < 400 ? t : "/tmp");
        if (!mkdtemp(fz_dir_))
            fz_die("fuzz: cannot make a temporary folder");
        atexit(fz_rm_dir);
    }
    return fz_dir_;
}

/* path = the folder + "/" + name. */
static inline void fz_path(char *path, size_t cap, const char *name)
{
    snprintf(path, cap, "%s/%s", fz_tmp_dir(), name);
}

static inline void fz_write_file(const char *path, const uint8_t *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f))
        fz_die("fuzz: cannot write a temporary file");
}

/* The whole file, malloc'd (NULL when it cannot be read). */
static inline uint8_t *fz_read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, k = 0, got;
    uint8_t *p = malloc(cap);
    while (p && (got = fread(p + k, 1, cap - k, f)) > 0) {
        k += got;
        if (k == cap) {
            uint8_t *q = realloc(p, cap *= 2);
            if (!q)
                free(p);
            p = q;
        }
    }
    fclose(f);
    *n = k;
    return p;
}

/* FNV-1a 64, the checksum of keel's checkpoint and baseline files: the targets recompute it so
 * that mutated files reach the field checks behind it. */
static inline uint64_t fz_fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

#endif
