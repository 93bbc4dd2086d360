/*
 * parallel.h: runs a memory-bound loop that BLAS does not do (im2col, col2im) on as many
 * threads as OpenBLAS uses, so that the loop is not the single-threaded part of a
 * multithreaded iteration.
 */
#ifndef KFAC_PARALLEL_H
#define KFAC_PARALLEL_H

/* Calls fn(ctx, lo, hi) on consecutive parts [lo, hi) of [0, n), one part per thread
 * (the CPU backend's threads() of them, at most n), and returns when all are done. The
 * calling thread takes the first part. fn must not call BLAS or kfac_parallel_for. The
 * pool's threads are started on first use and wait without spinning between calls, so
 * they do not take time from OpenBLAS's own threads. */
void kfac_parallel_for(int n, void (*fn)(void *ctx, int lo, int hi), void *ctx);

#endif
