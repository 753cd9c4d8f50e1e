/* keel monitor: the baseline file. Little-endian, versioned, checksummed:
 *   "KEELMONB" | u32 version (1 or 2) | u32 nslots | u32 bins | u32 nbuckets | f64 range_sd |
 *   per slot: u32 has_mean | per statistic (mean, log-rstd): f64 n, mean, m2, lo, hi |
 *             u32 ranged | u64 counts[bins + 2] |
 *   per bucket: f64 tokens, threshold, false_alarm | f64 mu[nslots*6] | f64 sd[nslots*6] |
 *   version 2 only, per slot: u32 width (0: no per-channel statistics) | when width > 0:
 *             f64 n | f64 mean[width] | f64 m2[width] |
 *   u64 FNV-1a 64 of every byte before it.
 * Version 2 is written only when a slot has per-channel statistics, so a baseline
 * without them stays readable by a keel that reads version 1 only.
 * The loader refuses a file whose checksum fails, and then one whose fields are out of range
 * (baseline_check.c): a checksum anyone can recompute proves nothing about the values. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "bytebuf.h"
#include "fnv1a.h"
#include "monitor_internal.h"

#define MON_MAGIC "KEELMONB"
#define MON_VERSION 2u /* the newest this keel reads; it reads 1 too */

keel_status keel_monitor_baseline_save(const keel_monitor *m, const char *path)
{
    if (!m || !path)
        return keel_fail(KEEL_ENULL, "keel_monitor_baseline_save: %s is NULL", !m ? "mon" : "path");
    if (!m->has_baseline)
        return keel_fail(KEEL_EINVAL, "keel_monitor_baseline_save: no baseline captured");
    /* a slot's per-channel statistics are saved when its baseline holds them (turned on after
     * the capture, it has none: saved as width 0) */
    int chans = 0;
    for (int l = 0; l < m->nslots; l++)
        chans |= m->slot[l].ch.width > 0 && m->slot[l].ch.bn >= 2;
    keel_bytebuf b = {0};
    keel_bb_put(&b, MON_MAGIC, 8);
    keel_bb_put_u32(&b, chans ? 2u : 1u);
    keel_bb_put_u32(&b, (uint32_t)m->nslots);
    keel_bb_put_u32(&b, (uint32_t)m->bins);
    keel_bb_put_u32(&b, (uint32_t)m->nbuckets);
    keel_bb_put_f64(&b, m->range_sd);
    for (int l = 0; l < m->nslots; l++) {
        const mon_slot *sl = &m->slot[l];
        keel_bb_put_u32(&b, (uint32_t)sl->has_mean_b);
        for (int s = 0; s < 2; s++) {
            const mon_stat *st = &sl->b[s];
            keel_bb_put_f64(&b, st->n);
            keel_bb_put_f64(&b, st->mean);
            keel_bb_put_f64(&b, st->m2);
            keel_bb_put_f64(&b, st->lo);
            keel_bb_put_f64(&b, st->hi);
            keel_bb_put_u32(&b, (uint32_t)st->ranged);
            for (int i = 0; i < m->bins + 2; i++)
                keel_bb_put_u64(&b, st->h[i]);
        }
    }
    size_t nc = (size_t)m->nslots * 2 * MON_NCOMP;
    for (int k = 0; k < m->nbuckets; k++) {
        const mon_bucket *bk = &m->bucket[k];
        keel_bb_put_f64(&b, bk->tokens);
        keel_bb_put_f64(&b, bk->threshold);
        keel_bb_put_f64(&b, bk->far);
        for (size_t c = 0; c < nc; c++)
            keel_bb_put_f64(&b, bk->mu[c]);
        for (size_t c = 0; c < nc; c++)
            keel_bb_put_f64(&b, bk->sd[c]);
    }
    for (int l = 0; chans && l < m->nslots; l++) {
        const mon_chan *c = &m->slot[l].ch;
        const int w = c->bn >= 2 ? c->width : 0;
        keel_bb_put_u32(&b, (uint32_t)w);
        if (!w)
            continue;
        keel_bb_put_f64(&b, c->bn);
        for (int j = 0; j < c->width; j++)
            keel_bb_put_f64(&b, c->bmean[j]);
        for (int j = 0; j < c->width; j++)
            keel_bb_put_f64(&b, c->bm2[j]);
    }
    if (!b.oom)
        keel_bb_put_u64(&b, keel_fnv1a(b.p, b.n));
    if (b.oom) {
        keel_free(b.p);
        return keel_fail(KEEL_ENOMEM, "keel_monitor_baseline_save: out of memory");
    }
    /* atomically: a temporary file renamed over the path */
    size_t plen = strlen(path);
    char *tmp = keel_alloc(plen + 8);
    if (!tmp) {
        keel_free(b.p);
        return keel_fail(KEEL_ENOMEM, "keel_monitor_baseline_save: out of memory");
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    FILE *f = fopen(tmp, "wb");
    int ok = f && fwrite(b.p, 1, b.n, f) == b.n;
    if (f)
        ok = (fclose(f) == 0) && ok;
    if (ok)
        ok = rename(tmp, path) == 0;
    int e = errno;
    keel_free(b.p);
    if (!ok) {
        remove(tmp);
        keel_free(tmp);
        return keel_fail(KEEL_EIO, "keel_monitor_baseline_save: %s: %s", path, strerror(e));
    }
    keel_free(tmp);
    keel_clear_error();
    return KEEL_OK;
}

keel_status keel_monitor_baseline_load(keel_monitor **out, const char *path)
{
    if (!out || !path)
        return keel_fail(KEEL_ENULL, "keel_monitor_baseline_load: %s is NULL", !out ? "mon" : "path");
    FILE *f = fopen(path, "rb");
    if (!f)
        return keel_fail(KEEL_EIO, "keel_monitor_baseline_load: %s: %s", path, strerror(errno));
    keel_bytebuf b = {0};
    unsigned char chunk[65536];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0)
        keel_bb_put(&b, chunk, got);
    int rerr = ferror(f);
    fclose(f);
    if (b.oom || rerr) {
        keel_free(b.p);
        return keel_fail(b.oom ? KEEL_ENOMEM : KEEL_EIO, "keel_monitor_baseline_load: %s: %s", path,
                         b.oom ? "out of memory" : "read error");
    }
    keel_status st = KEEL_EFORMAT;
    keel_monitor *m = NULL;
    const size_t head = 8 + 4 * 4 + 8;
    if (b.n < 8 || memcmp(b.p, MON_MAGIC, 8) != 0) {
        keel_fail(st, "keel_monitor_baseline_load: %s: not a keel monitor baseline (no \"" MON_MAGIC "\" at the start)", path);
        goto fail;
    }
    if (b.n < head) {
        keel_fail(st, "keel_monitor_baseline_load: %s: truncated (%zu bytes, the header alone is %zu)", path, b.n, head);
        goto fail;
    }
    keel_bytes_reader rd = {b.p, b.n, 0};
    rd.pos = 8;
    uint32_t version = keel_br_u32(&rd), nslots = keel_br_u32(&rd), bins = keel_br_u32(&rd), nbuckets = keel_br_u32(&rd);
    double range_sd = keel_br_f64(&rd);
    if (version != 1 && version != 2) {
        keel_fail(
            st,
            "keel_monitor_baseline_load: %s: format version %u, this keel reads versions 1 to %u",
            path, version, MON_VERSION);
        goto fail;
    }
    if (nslots < 1 || nslots > 65536 || bins < 2 || bins > 65536 || nbuckets > KEEL_MONITOR_MAX_BUCKETS) {
        keel_fail(st, "keel_monitor_baseline_load: %s: corrupted header (%u slots, %u bins, %u buckets)", path,
                  nslots, bins, nbuckets);
        goto fail;
    }
    size_t nc = (size_t)nslots * 2 * MON_NCOMP;
    size_t need = head + (size_t)nslots * (4 + 2 * (5 * 8 + 4 + (size_t)(bins + 2) * 8)) +
                  (size_t)nbuckets * (3 * 8 + 2 * nc * 8) + 8;
    const size_t chan_at = need - 8; /* version 2: the per-channel section, widths read as we go */
    if (version == 2 && b.n >= need) {
        keel_bytes_reader cr = {b.p, b.n, chan_at};
        for (uint32_t l = 0; l < nslots && need <= b.n; l++) {
            if (need + 4 > b.n) {
                need += 4;
                break;
            }
            cr.pos = need - 8;
            uint32_t w = keel_br_u32(&cr);
            if (w > 65536) {
                keel_fail(st,
                          "keel_monitor_baseline_load: %s: corrupted per-channel section (norm %u: "
                          "width %u)",
                          path, l, w);
                goto fail;
            }
            need += 4 + (w ? 8 + 16 * (size_t)w : 0);
        }
    }
    if (b.n != need) {
        keel_fail(st, "keel_monitor_baseline_load: %s: %s (%zu bytes, the header says %zu)", path,
                  b.n < need ? "truncated" : "trailing bytes", b.n, need);
        goto fail;
    }
    rd.pos = need - 8;
    uint64_t sum = keel_br_u64(&rd);
    if (sum != keel_fnv1a(b.p, need - 8)) {
        keel_fail(st, "keel_monitor_baseline_load: %s: checksum mismatch (the file is corrupted)", path);
        goto fail;
    }
    st = mon_alloc(&m, (int)nslots, (int)bins, range_sd);
    if (st != KEEL_OK)
        goto fail;
    rd.pos = head;
    for (uint32_t l = 0; l < nslots; l++) {
        mon_slot *sl = &m->slot[l];
        sl->has_mean_b = keel_br_u32(&rd) != 0;
        for (int s = 0; s < 2; s++) {
            mon_stat *bs = &sl->b[s];
            bs->n = keel_br_f64(&rd);
            bs->mean = keel_br_f64(&rd);
            bs->m2 = keel_br_f64(&rd);
            bs->lo = keel_br_f64(&rd);
            bs->hi = keel_br_f64(&rd);
            bs->ranged = keel_br_u32(&rd) != 0;
            for (uint32_t i = 0; i < bins + 2; i++)
                bs->h[i] = keel_br_u64(&rd);
            mon_stat *ws = &sl->w[s];
            ws->lo = bs->lo;
            ws->hi = bs->hi;
            ws->ranged = bs->ranged;
        }
    }
    for (uint32_t k = 0; k < nbuckets; k++) {
        mon_bucket *bk = &m->bucket[k];
        bk->tokens = keel_br_f64(&rd);
        bk->threshold = keel_br_f64(&rd);
        bk->far = keel_br_f64(&rd);
        bk->mu = keel_alloc(nc * sizeof(double));
        bk->sd = keel_alloc(nc * sizeof(double));
        m->nbuckets = (int)k + 1;
        if (!bk->mu || !bk->sd) {
            st = keel_fail(KEEL_ENOMEM, "keel_monitor_baseline_load: out of memory");
            goto fail;
        }
        for (size_t c = 0; c < nc; c++)
            bk->mu[c] = keel_br_f64(&rd);
        for (size_t c = 0; c < nc; c++)
            bk->sd[c] = keel_br_f64(&rd);
    }
    for (uint32_t l = 0; version == 2 && l < nslots; l++) {
        uint32_t w = keel_br_u32(&rd);
        if (!w)
            continue;
        mon_chan *c = &m->slot[l].ch;
        if (mon_chan_alloc(c, (int)w) != KEEL_OK) {
            st = keel_fail(KEEL_ENOMEM, "keel_monitor_baseline_load: out of memory");
            goto fail;
        }
        c->bn = keel_br_f64(&rd);
        for (uint32_t j = 0; j < w; j++)
            c->bmean[j] = keel_br_f64(&rd);
        for (uint32_t j = 0; j < w; j++)
            c->bm2[j] = keel_br_f64(&rd);
    }
    st = mon_baseline_check(m, path); /* every field in range, not only the checksum right */
    if (st != KEEL_OK)
        goto fail;
    m->has_baseline = 1;
    keel_free(b.p);
    *out = m;
    keel_clear_error();
    return KEEL_OK;
fail:
    keel_monitor_destroy(m);
    keel_free(b.p);
    return st;
}
