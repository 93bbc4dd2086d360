/*
 * mat.c: allocation and reductions for row-major float matrices (see mat.h).
 */
#include "kfac/mat.h"
#include "kfac/status.h"
#include "vecmath.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

float *kfac_floats_new(size_t n)
{
    size_t bytes = (n ? n : 1) * sizeof(float);
    bytes = (bytes + 63) / 64 * 64;
    void *p = aligned_alloc(64, bytes);
    if (!p)
        kfac_out_of_memory(bytes);
    return memset(p, 0, bytes);
}

void kfac_floats_free(float *p)
{
    free(p);
}

/* Eight independent accumulators per product, which the compiler vectorises and keeps in
 * registers, so that the sums do not wait on one addition's latency per element. */
KFAC_VECTOR_KERNEL
void kfac_gram(size_t n, int k, const float *const *xs, double *out)
{
    /* Always the Gram matrix of three vectors, the missing ones x: the same memory
     * traffic, and one loop the compiler vectorises whole. */
    const float *restrict x = xs[0], *restrict y = k > 1 ? xs[1] : x,
                *restrict z = k > 2 ? xs[2] : x;
    double xx[8] = {0}, xy[8] = {0}, xz[8] = {0}, yy[8] = {0}, yz[8] = {0}, zz[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) {
            double a = x[i + j], b = y[i + j], c = z[i + j];
            xx[j] += a * a, xy[j] += a * b, xz[j] += a * c;
            yy[j] += b * b, yz[j] += b * c, zz[j] += c * c;
        }
    double g[6] = {0};
    for (; i < n; i++) {
        double a = x[i], b = y[i], c = z[i];
        g[0] += a * a, g[1] += a * b, g[2] += a * c, g[3] += b * b, g[4] += b * c, g[5] += c * c;
    }
    for (int j = 0; j < 8; j++) {
        g[0] += xx[j], g[1] += xy[j], g[2] += xz[j];
        g[3] += yy[j], g[4] += yz[j], g[5] += zz[j];
    }
    const double full[9] = {g[0], g[1], g[2], g[1], g[3], g[4], g[2], g[4], g[5]};
    for (int a = 0; a < k; a++)
        for (int b = 0; b < k; b++)
            out[a * k + b] = full[a * 3 + b];
}

/* A loop of its own rather than kfac_gram()'s off-diagonal entry: the Gram pass forms six
 * products per element, which a single product would pay for in time on every call. */
KFAC_VECTOR_KERNEL
double kfac_dot(size_t n, const float *x, const float *y)
{
    double acc[8] = {0}, s = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            acc[j] += (double)x[i + j] * y[i + j];
    for (; i < n; i++)
        s += (double)x[i] * y[i];
    for (int j = 0; j < 8; j++)
        s += acc[j];
    return s;
}

double kfac_sumsq(size_t n, const float *x)
{
    return kfac_dot(n, x, x);
}

KFAC_VECTOR_KERNEL
double kfac_combine(size_t n, float a, const float *x, float b, const float *y, float *out)
{
    double acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) {
            out[i + j] = a * x[i + j] + b * y[i + j];
            acc[j] += (double)out[i + j] * out[i + j];
        }
    double s = 0;
    for (; i < n; i++) {
        out[i] = a * x[i] + b * y[i];
        s += (double)out[i] * out[i];
    }
    for (int j = 0; j < 8; j++)
        s += acc[j];
    return s;
}

KFAC_VECTOR_KERNEL
int kfac_all_finite(size_t n, const float *x)
{
    /* x·0 is 0 for finite x and NaN for ±inf or NaN: a branch-free test per block, with
     * eight lanes the compiler vectorises. */
    size_t i = 0;
    for (; i + 1024 <= n; i += 1024) {
        float z[8] = {0};
        for (size_t j = i; j < i + 1024; j += 8)
            for (int l = 0; l < 8; l++)
                z[l] += x[j + l] * 0.0f;
        for (int l = 0; l < 8; l++)
            if (z[l] != 0)
                return 0;
    }
    for (; i < n; i++)
        if (!isfinite(x[i]))
            return 0;
    return 1;
}

void kfac_floats_to_doubles(size_t n, const float *x, double *out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = x[i];
}

void kfac_doubles_to_floats(size_t n, const double *x, float *out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = (float)x[i];
}

void kfac_symmetric_to_floats(int n, const double *S, float *out)
{
    for (int i = 0; i < n; i++) {
        const double *s = S + (size_t)i * n;
        float *row = out + (size_t)i * n;
        for (int j = i; j < n; j++)
            row[j] = out[(size_t)j * n + i] = (float)s[j];
    }
}

void kfac_mat_copy(int m, int n, const float *src, int ld_src, float *dst, int ld_dst)
{
    for (int i = 0; i < m; i++)
        memcpy(dst + (size_t)i * ld_dst, src + (size_t)i * ld_src, (size_t)n * sizeof(float));
}
