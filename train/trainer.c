/* keel train: the training loop. */
#define _POSIX_C_SOURCE 199309L
#include "trainer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "adamw.h"
#include "checkpoint.h"

void tr_opts_default(tr_opts *o)
{
    memset(o, 0, sizeof *o);
    o->mc.layers = 4;
    o->mc.width = 128;
    o->mc.heads = 4;
    o->mc.seq = 64;
    o->mc.tied = 1;
    o->mc.norm = TM_NORM_LAYER;
    o->mc.place = TM_PRE;
    o->mc.layerscale = 0.0f;
    o->mc.eps = 1e-5f;
    o->batch = 16;
    o->steps = 500;
    o->warmup = 0;
    o->cosine = 1;
    o->lr = 1e-3f;
    o->min_frac = 0.1f;
    o->wd = 0.1f;
    o->beta1 = 0.9f;
    o->beta2 = 0.99f;
    o->clip = 0.0f;
    o->seed = 1;
    o->threads = 1;
    o->eval_every = 100;
    o->eval_batches = 8;
    o->stop_on_nan = 1;
    o->print_every = 50;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void tr_result_free(tr_result *r)
{
    free(r->train_loss);
    free(r->grad_norm);
    free(r->val_step);
    free(r->val_loss);
    memset(r, 0, sizeof *r);
}

/* The mean loss over eval_batches validation batches, drawn afresh from the same seed at every
 * evaluation: the same batches each time (and, with eval_seed set, in every run). *tokens counts
 * the tokens scored. */
static double evaluate(tm_model *m, const tm_data *d, const tr_opts *o, int *x, int *y, long *tokens)
{
    tm_rng rng = {o->eval_seed ? o->eval_seed : o->seed ^ 0xA5A5A5A5ull};
    double sum = 0.0;
    m->training = 0;
    *tokens = 0;
    for (int i = 0; i < o->eval_batches; i++) {
        tm_data_batch(d, 1, &rng, o->batch, o->mc.seq, x, y);
        sum += tm_forward(m, x, y, o->batch, o->mc.seq); /* NaN when a keel call failed */
        *tokens += (long)o->batch * o->mc.seq;
        if (tm_error(m))
            break;
    }
    m->training = 1;
    return sum / o->eval_batches;
}

static void fmt_time(double s, char *out, size_t n)
{
    if (!(s >= 0) || s > 1e7)
        snprintf(out, n, "?");
    else if (s >= 3600)
        snprintf(out, n, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
    else if (s >= 60)
        snprintf(out, n, "%dm%02ds", (int)(s / 60), (int)s % 60);
    else
        snprintf(out, n, "%.0fs", s);
}

keel_status tr_run(const tr_opts *o0, tm_data *d, tr_result *res)
{
    keel_status rc;
    tr_opts o = *o0;
    memset(res, 0, sizeof *res);
    tm_train_state st;
    memset(&st, 0, sizeof st);
    if (o.resume_path) {
        if ((rc = tm_ckpt_read_state(o.resume_path, &st)) != KEEL_OK)
            return rc;
        /* the run continues with the checkpoint's model and schedule */
        o.mc = st.cfg;
        o.batch = st.batch;
        o.warmup = st.warmup;
        o.cosine = st.cosine;
        o.lr = st.lr;
        o.min_frac = st.min_frac;
        o.wd = st.wd;
        o.beta1 = st.beta1;
        o.beta2 = st.beta2;
        o.clip = st.clip;
        o.seed = st.seed;
        if (o.steps < st.steps)
            o.steps = st.steps;
        if ((rc = tm_data_set_vocab(d, st.chars, st.vocab)) != KEEL_OK)
            return rc;
    }
    o.mc.vocab = d->vocab;
    if (o.steps < 1 || o.batch < 1 || !(o.lr > 0) || o.eval_batches < 1)
        return tool_fail(KEEL_EINVAL, "steps, batch, eval batches and the learning rate must be positive");
    if ((size_t)o.mc.seq + 2 > d->n - d->ntrain)
        return tool_fail(KEEL_EINVAL, "%s: the validation split (%zu characters) is shorter than a sequence (%d)",
                         d->path, d->n - d->ntrain, o.mc.seq);
    tm_model m;
    if ((rc = tm_create(&m, &o.mc, o.batch, o.seed, o.threads)) != KEEL_OK)
        return rc;
    tm_adamw opt;
    if (tm_adamw_init(&opt, m.nparams, o.beta1, o.beta2, 1e-8f, o.wd)) {
        tm_destroy(&m);
        return tool_fail(KEEL_ENOMEM, "out of memory");
    }
    tm_rng rng = {o.seed * 0x9E3779B97F4A7C15ull + 1};
    int start = 0;
    if (o.resume_path) {
        if ((rc = tm_ckpt_load(o.resume_path, &st, &m, &opt)) != KEEL_OK) {
            tm_adamw_free(&opt);
            tm_destroy(&m);
            return rc;
        }
        start = st.step;
        rng.s = st.rng_state;
    }
    const int L = o.mc.layers, B = o.batch, T = o.mc.seq;
    int *x = malloc((size_t)B * T * sizeof(int)), *y = malloc((size_t)B * T * sizeof(int));
    double *gl = malloc((size_t)(2 * L + 2) * sizeof(double));
    res->train_loss = malloc((size_t)o.steps * sizeof(float));
    res->grad_norm = malloc((size_t)o.steps * sizeof(float));
    res->val_step = malloc((size_t)(o.steps + 2) * sizeof(int));
    res->val_loss = malloc((size_t)(o.steps + 2) * sizeof(float));
    FILE *log = NULL;
    if (!x || !y || !gl || !res->train_loss || !res->grad_norm || !res->val_step || !res->val_loss) {
        rc = tool_fail(KEEL_ENOMEM, "out of memory");
        goto fail;
    }
    for (int i = 0; i < o.steps; i++)
        res->train_loss[i] = res->grad_norm[i] = NAN;
    if (o.log_path) {
        log = fopen(o.log_path, start ? "a" : "w");
        if (!log) {
            rc = tool_fail(KEEL_EIO, "%s: cannot write the log", o.log_path);
            goto fail;
        }
        if (!start) {
            fprintf(log, "step,lr,train_loss,val_loss,grad_norm");
            for (int l = 0; l < L; l++)
                fprintf(log, ",grad_norm_layer%d", l);
            for (int l = 0; l <= L; l++)
                fprintf(log, ",residual_norm_depth%d", l);
            fprintf(log, "\n");
        }
    }
    res->nparams = m.nparams;
    res->unigram_entropy = d->unigram_entropy;
    res->vocab = d->vocab;
    res->nan_step = -1;
    res->probe_ratio = NAN;
    res->start_step = start;
    int end = o.steps;
    if (o.stop_after > 0 && o.stop_after < end)
        end = o.stop_after;
    double t_train = 0.0, t_start = now_s();
    double norm0 = m.norm_seconds;
    int step;
    for (step = start; step < end; step++) {
        double t0 = now_s();
        tm_data_batch(d, 0, &rng, B, T, x, y);
        double loss = tm_forward(&m, x, y, B, T);
        if (!tm_error(&m))
            tm_backward(&m);
        if (tm_error(&m)) {
            if (m.error_status != KEEL_EINVAL) { /* memory, threads: an error of the run */
                rc = tool_fail(m.error_status, "step %d: %s", step + 1, tm_error(&m));
                goto fail;
            }
            /* a parameter the run drove where keel refuses it (DyT's alpha to Inf): diverged */
            loss = NAN;
            if (!res->nan_reason[0])
                snprintf(res->nan_reason, sizeof res->nan_reason, "%s", tm_error(&m));
        }
        double gn = tm_grad_norm(&m);
        if (log || step + 1 == o.probe_step) { /* of this training step (an evaluation below
                                                  * overwrites the activations) */
            tm_layer_grad_norms(&m, gl);
            tm_residual_norms(&m, gl + L);
            if (step + 1 == o.probe_step)
                res->probe_ratio = gl[L - 1] > 0 ? gl[0] / gl[L - 1] : NAN;
        }
        if (o.clip > 0 && gn > o.clip) {
            float sc = (float)(o.clip / gn);
            for (size_t i = 0; i < m.nparams; i++)
                m.grads[i] *= sc;
        }
        float lr = tm_lr_at(step, o.steps, o.warmup, o.lr, o.cosine, o.min_frac);
        int finite = isfinite(loss) && isfinite(gn);
        if (finite)
            tm_adamw_step(&opt, &m, lr);
        t_train += now_s() - t0;
        res->train_loss[step] = (float)loss;
        res->grad_norm[step] = (float)gn;
        res->steps_done = step + 1;
        int do_eval = (o.eval_every > 0 && (step + 1) % o.eval_every == 0) || step + 1 == end;
        double vl = NAN;
        if (do_eval && finite) {
            vl = evaluate(&m, d, &o, x, y, &res->val_tokens);
            if (tm_error(&m) && m.error_status != KEEL_EINVAL) {
                rc = tool_fail(m.error_status, "step %d, evaluation: %s", step + 1, tm_error(&m));
                goto fail;
            }
            res->val_step[res->nval] = step + 1;
            res->val_loss[res->nval++] = (float)vl;
        }
        if (log) {
            fprintf(log, "%d,%.6g,%.6f,", step + 1, lr, loss);
            if (do_eval && finite)
                fprintf(log, "%.6f", vl);
            fprintf(log, ",%.6g", gn);
            for (int l = 0; l < L; l++)
                fprintf(log, ",%.6g", gl[l]);
            for (int l = 0; l <= L; l++)
                fprintf(log, ",%.6g", gl[L + l]);
            fprintf(log, "\n");
        }
        if (o.progress) {
            double el = now_s() - t_start, rate = (step + 1 - start) / el;
            char eta[32];
            fmt_time((end - step - 1) / rate, eta, sizeof eta);
            double tps = (double)B * T * (step + 1 - start) / (t_train > 0 ? t_train : 1e-9);
            if (o.progress == 2) {
                int w = 24, fill = (int)((double)(step + 1) / end * w);
                char bar[32];
                for (int i = 0; i < w; i++)
                    bar[i] = i < fill ? '=' : (i == fill ? '>' : ' ');
                bar[w] = 0;
                fprintf(stderr, "\r%s%sstep %d/%d [%s] loss %.4f | %.0f tok/s | ETA %s   ", o.label ? o.label : "",
                        o.label ? " " : "", step + 1, end, bar, loss, tps, eta);
                if (do_eval && finite)
                    fprintf(stderr, "\n%s%sstep %d: validation loss %.4f\n", o.label ? o.label : "",
                            o.label ? " " : "", step + 1, vl);
                fflush(stderr);
            } else if ((step + 1) % o.print_every == 0 || step + 1 == end || (do_eval && finite)) {
                printf("%s%sstep %d/%d loss %.4f", o.label ? o.label : "", o.label ? " " : "", step + 1, end, loss);
                if (do_eval && finite)
                    printf(" val %.4f", vl);
                printf(" | %.0f tok/s | ETA %s\n", tps, eta);
                fflush(stdout);
            }
        }
        if (!finite) {
            if (res->nan_step < 0)
                res->nan_step = step + 1;
            if (o.stop_on_nan) {
                step++;
                break;
            }
        }
    }
    if (o.progress == 2)
        fprintf(stderr, "\n");
    res->seconds = t_train;
    res->norm_seconds = m.norm_seconds - norm0;
    res->tokens_per_s = t_train > 0 ? (double)B * T * (res->steps_done - start) / t_train : 0;
    {
        int n = res->steps_done - start, k = n / 10 > 0 ? n / 10 : 1;
        double s = 0.0;
        for (int i = res->steps_done - k; i < res->steps_done; i++)
            s += res->train_loss[i];
        res->final_train = s / k;
        res->final_val = res->nval ? res->val_loss[res->nval - 1] : NAN;
        if (res->nan_step >= 0)
            res->final_train = res->final_val = NAN;
    }
    if (o.save_path) {
        st.cfg = o.mc;
        st.batch = o.batch;
        st.steps = o.steps;
        st.warmup = o.warmup;
        st.cosine = o.cosine;
        st.lr = o.lr;
        st.min_frac = o.min_frac;
        st.wd = o.wd;
        st.beta1 = o.beta1;
        st.beta2 = o.beta2;
        st.clip = o.clip;
        st.seed = o.seed;
        st.step = res->steps_done;
        st.rng_state = rng.s;
        st.vocab = d->vocab;
        memcpy(st.chars, d->chars, (size_t)d->vocab);
        if ((rc = tm_ckpt_save(o.save_path, &st, &m, &opt)) != KEEL_OK)
            goto fail;
    }
    if (log)
        fclose(log);
    free(x);
    free(y);
    free(gl);
    tm_adamw_free(&opt);
    tm_destroy(&m);
    return KEEL_OK;
fail:
    if (log)
        fclose(log);
    free(x);
    free(y);
    free(gl);
    tm_adamw_free(&opt);
    tm_destroy(&m);
    tr_result_free(res);
    return rc;
}
