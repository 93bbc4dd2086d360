/*
 * parallel.c: the pool behind kfac_parallel_for(). Workers sleep on a condition variable
 * between jobs: a spinning pool would fight OpenBLAS's threads for the cores (DESIGN.md,
 * Threads). Each job is numbered; a worker runs part i of job j once, then sleeps until
 * a later job is posted. The pool is joined when the program exits.
 */
#include "kfac/parallel.h"

#include "kfac/backend.h"
#include <pthread.h>

enum { MAX_THREADS = 64 };

static struct {
    pthread_mutex_t call;            /* one job at a time */
    pthread_mutex_t lock;            /* guards what follows */
    pthread_cond_t posted, finished; /* a job was posted; its last part finished */
    pthread_t threads[MAX_THREADS];  /* workers 1 … n_workers */
    int n_workers, quit;
    unsigned long job;               /* the latest job's number */
    int n, parts, pending;           /* its range, parts, and parts still running */
    void (*fn)(void *ctx, int lo, int hi);
    void *ctx;
} pool = {.call = PTHREAD_MUTEX_INITIALIZER,
          .lock = PTHREAD_MUTEX_INITIALIZER,
          .posted = PTHREAD_COND_INITIALIZER,
          .finished = PTHREAD_COND_INITIALIZER};

static void run_part(int i)
{
    int lo = (int)((long)pool.n * i / pool.parts), hi = (int)((long)pool.n * (i + 1) / pool.parts);
    pool.fn(pool.ctx, lo, hi);
}

static void *worker(void *arg)
{
    int id = (int)(long)arg;
    /* Job numbers start at 1: a worker runs the job it was started for. */
    unsigned long seen = 0;
    pthread_mutex_lock(&pool.lock);
    for (;;) {
        while (pool.job == seen && !pool.quit)
            pthread_cond_wait(&pool.posted, &pool.lock);
        if (pool.quit)
            break;
        seen = pool.job;
        if (id >= pool.parts)
            continue;
        pthread_mutex_unlock(&pool.lock);
        run_part(id);
        pthread_mutex_lock(&pool.lock);
        if (--pool.pending == 0)
            pthread_cond_signal(&pool.finished);
    }
    pthread_mutex_unlock(&pool.lock);
    return NULL;
}

__attribute__((destructor)) static void pool_join(void)
{
    pthread_mutex_lock(&pool.lock);
    pool.quit = 1;
    pthread_cond_broadcast(&pool.posted);
    pthread_mutex_unlock(&pool.lock);
    for (int i = 1; i <= pool.n_workers; i++)
        pthread_join(pool.threads[i], NULL);
}

void kfac_parallel_for(int n, void (*fn)(void *ctx, int lo, int hi), void *ctx)
{
    /* The CPU backend's threads: this pool serves its kernels. */
    kfac_parallel_for_parts(n, kfac_backend_cpu()->threads(), fn, ctx);
}

void kfac_parallel_for_parts(int n, int parts, void (*fn)(void *ctx, int lo, int hi), void *ctx)
{
    parts = parts < n ? parts : n;
    parts = parts < MAX_THREADS ? parts : MAX_THREADS;
    if (parts <= 1) {
        if (n > 0)
            fn(ctx, 0, n);
        return;
    }
    pthread_mutex_lock(&pool.call);
    pthread_mutex_lock(&pool.lock);
    while (pool.n_workers < parts - 1) {
        long id = pool.n_workers + 1;
        if (pthread_create(&pool.threads[id], NULL, worker, (void *)id) != 0)
            break; /* then fewer parts (one, the caller's, at least): the same work */
        pool.n_workers++;
    }
    parts = parts < pool.n_workers + 1 ? parts : pool.n_workers + 1;
    pool.n = n, pool.parts = parts, pool.fn = fn, pool.ctx = ctx;
    pool.pending = parts - 1;
    pool.job++;
    pthread_cond_broadcast(&pool.posted);
    pthread_mutex_unlock(&pool.lock);
    run_part(0);
    pthread_mutex_lock(&pool.lock);
    while (pool.pending > 0)
        pthread_cond_wait(&pool.finished, &pool.lock);
    pthread_mutex_unlock(&pool.lock);
    pthread_mutex_unlock(&pool.call);
}
