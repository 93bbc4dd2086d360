/*
 * mat.h: dense float matrices as plain row-major arrays, and the few helpers that BLAS
 * does not provide. Every matrix argument documents its shape beside it; the leading
 * dimension (ld) is the row stride in elements. Heavy work goes through the compute
 * backend (backend.h), which this header includes so modules need only this one.
 */
#ifndef KFAC_MAT_H
#define KFAC_MAT_H

#include "kfac/backend.h"
#include <stddef.h>

/* A zeroed float array of n elements aligned to 64 bytes; aborts when out of memory.
 * Release with kfac_floats_free(). */
float *kfac_floats_new(size_t n);
void kfac_floats_free(float *p);

/* Σ x_i y_i accumulated in double. x, y: n. */
double kfac_dot(size_t n, const float *x, const float *y);

/* The Gram matrix of k ≤ KFAC_GRAM_MAX vectors, out[a·k + b] = xs[a] · xs[b] accumulated in
 * double, in one pass over the data. Each xs[a]: n; out: k × k, symmetric. */
#define KFAC_GRAM_MAX 3
void kfac_gram(size_t n, int k, const float *const *xs, double *out);

/* Σ x_i² accumulated in double. x: n. */
double kfac_sumsq(size_t n, const float *x);

/* out = a·x + b·y; returns Σ out_i² accumulated in double, which is NaN or infinite exactly
 * when out holds a NaN or an infinity (a float's square is below 1.2e77). x, y, out: n. */
double kfac_combine(size_t n, float a, const float *x, float b, const float *y, float *out);

/* 1 when every element is finite, else 0. x: n. */
int kfac_all_finite(size_t n, const float *x);

/* out = x widened to double. x, out: n. */
void kfac_floats_to_doubles(size_t n, const float *x, double *out);

/* out = x rounded to float. x, out: n. */
void kfac_doubles_to_floats(size_t n, const double *x, float *out);

/* out (n × n, both triangles) = the symmetric S (n × n, its upper triangle read) rounded
 * to float. */
void kfac_symmetric_to_floats(int n, const double *S, float *out);

/* dst (m × n, ld_dst) = src (m × n, ld_src). */
void kfac_mat_copy(int m, int n, const float *src, int ld_src, float *dst, int ld_dst);

#endif
