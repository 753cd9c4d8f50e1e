#define _POSIX_C_SOURCE 200809L /* clock_gettime, sysconf */
#include "pool.h"

#include <pthread.h>
#include <stdlib.h>

#include "alloc.h"
#include "error.h"

struct keel_pool {
    int size;                 /* threads including the caller */
    pthread_t *workers;       /* size - 1 */
    pthread_mutex_t lock;
    pthread_cond_t wake;      /* a new job or shutdown */
    pthread_cond_t done;      /* the last worker finished */
    unsigned long generation; /* bumped for every job */
    int pending;              /* workers still running the current job */
    int stop;
    /* the current job */
    keel_pool_fn fn;
    void *arg;
    int n;
};

static _Thread_local int thread_index; /* 0 on every thread that is not a pool worker */

int keel_pool_thread_index(void) { return thread_index; }

typedef struct worker_start {
    keel_pool *pool;
    int index;
} worker_start;

static worker_start *starts_of(keel_pool *pool) { return (worker_start *)(pool->workers + (pool->size - 1)); }

static void *worker_main(void *p)
{
    const worker_start *start = p;
    keel_pool *pool = start->pool;
    const int index = start->index;
    unsigned long seen = 0;
    thread_index = index;
    pthread_mutex_lock(&pool->lock);
    for (;;) {
        while (!pool->stop && pool->generation == seen)
            pthread_cond_wait(&pool->wake, &pool->lock);
        if (pool->stop)
            break;
        seen = pool->generation;
        keel_pool_fn fn = pool->fn;
        void *arg = pool->arg;
        const int n = pool->n;
        pthread_mutex_unlock(&pool->lock);
        if (index < n)
            fn(arg, index);
        pthread_mutex_lock(&pool->lock);
        if (--pool->pending == 0)
            pthread_cond_signal(&pool->done);
    }
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

static void shutdown_workers(keel_pool *pool, int started)
{
    pthread_mutex_lock(&pool->lock);
    pool->stop = 1;
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->lock);
    for (int i = 0; i < started; i++)
        pthread_join(pool->workers[i], NULL);
}

keel_status keel_pool_create(keel_pool **out, int nthreads)
{
    keel_pool *pool = keel_alloc_zero(1, sizeof *pool);
    if (!pool)
        return keel_fail(KEEL_ENOMEM, "keel_ctx_create: cannot allocate the thread pool");
    pool->size = nthreads < 1 ? 1 : nthreads;
    /* one block: the thread handles, then each worker's start record */
    pool->workers =
        keel_alloc((size_t)(pool->size - 1) * (sizeof(pthread_t) + sizeof(worker_start)) + 1);
    if (!pool->workers) {
        keel_free(pool);
        return keel_fail(KEEL_ENOMEM, "keel_ctx_create: cannot allocate %d threads", nthreads);
    }
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->wake, NULL);
    pthread_cond_init(&pool->done, NULL);
    worker_start *starts = starts_of(pool);
    /* The workers' stack size is set, not left to the C library (8 MiB with glibc's defaults, 128
     * KiB with musl's, whatever RLIMIT_STACK says elsewhere): the deepest kernels, the fused add +
     * norm pipelines, keep three rows of h (3 x 8192 floats, 96 KiB) on the stack. */
    pthread_attr_t attr;
    const int have_attr = pthread_attr_init(&attr) == 0;
    if (have_attr)
        pthread_attr_setstacksize(&attr, KEEL_POOL_STACK_BYTES);
    for (int i = 0; i < pool->size - 1; i++) {
        starts[i].pool = pool;
        starts[i].index = i + 1;
        if (pthread_create(&pool->workers[i], have_attr ? &attr : NULL, worker_main, &starts[i]) !=
            0) {
            if (have_attr)
                pthread_attr_destroy(&attr);
            shutdown_workers(pool, i);
            pthread_cond_destroy(&pool->done);
            pthread_cond_destroy(&pool->wake);
            pthread_mutex_destroy(&pool->lock);
            keel_free(pool->workers);
            keel_free(pool);
            return keel_fail(KEEL_ETHREAD, "keel_ctx_create: could not start worker thread %d of %d",
                             i + 1, nthreads);
        }
    }
    if (have_attr)
        pthread_attr_destroy(&attr);
    *out = pool;
    return KEEL_OK;
}

void keel_pool_destroy(keel_pool *pool)
{
    if (!pool)
        return;
    shutdown_workers(pool, pool->size - 1);
    pthread_cond_destroy(&pool->done);
    pthread_cond_destroy(&pool->wake);
    pthread_mutex_destroy(&pool->lock);
    keel_free(pool->workers);
    keel_free(pool);
}

int keel_pool_size(const keel_pool *pool) { return pool->size; }

void keel_pool_run(keel_pool *pool, int n, keel_pool_fn fn, void *arg)
{
    if (n > pool->size)
        n = pool->size;
    if (n <= 1) {
        if (n == 1) {
            const int outer_index = thread_index;
            thread_index = 0;
            fn(arg, 0);
            thread_index = outer_index;
        }
        return;
    }
    pthread_mutex_lock(&pool->lock);
    pool->fn = fn;
    pool->arg = arg;
    pool->n = n;
    pool->pending = pool->size - 1;
    pool->generation++;
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->lock);

    const int outer_index = thread_index; /* the caller may be a worker of another pool */
    thread_index = 0;
    fn(arg, 0);
    thread_index = outer_index;

    pthread_mutex_lock(&pool->lock);
    while (pool->pending > 0)
        pthread_cond_wait(&pool->done, &pool->lock);
    pthread_mutex_unlock(&pool->lock);
}
