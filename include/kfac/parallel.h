/*
 * parallel.h: runs a memory-bound loop that BLAS does not do (im2col, col2im) on as many
 * threads as OpenBLAS uses, so that the loop is not the single-threaded part of a
 * multithreaded iteration; and, for the factors' statistics and Cholesky inversions,
 * independent parts that each call the backend on one thread.
 */
#ifndef KFAC_PARALLEL_H
#define KFAC_PARALLEL_H

/* Calls fn(ctx, lo, hi) on consecutive parts [lo, hi) of [0, n), one part per thread
 * (the CPU backend's threads() of them, at most n), and returns when all are done. The
 * calling thread takes the first part. fn must not call BLAS or kfac_parallel_for. The
 * pool's threads are started on first use and wait without spinning between calls, so
 * they do not take time from OpenBLAS's own threads. */
void kfac_parallel_for(int n, void (*fn)(void *ctx, int lo, int hi), void *ctx);

/* kfac_parallel_for() on `parts` threads (at most n), whatever the backend's count: for
 * parts that each call the backend while its threads() is 1 and it is `concurrent`
 * (backend.h). fn must not call kfac_parallel_for. */
void kfac_parallel_for_parts(int n, int parts, void (*fn)(void *ctx, int lo, int hi), void *ctx);

#endif
