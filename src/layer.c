/*
 * layer.c: activations (forward, derivative products) and weight initialisation
 * shared by all layer types (see layer.h).
 */
#include "kfac/layer.h"
#include "kfac/status.h"
#include "vecmath.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const activation_names[] = {
    [KFAC_ACT_LINEAR] = "linear", [KFAC_ACT_LOGISTIC] = "logistic", [KFAC_ACT_TANH] = "tanh",
    [KFAC_ACT_RELU] = "relu", [KFAC_ACT_SOFTMAX] = "softmax",
};

const char *kfac_activation_name(enum kfac_activation act)
{
    return activation_names[act];
}

int kfac_activation_parse(const char *name, enum kfac_activation *act)
{
    for (size_t i = 0; i < sizeof activation_names / sizeof *activation_names; i++)
        if (strcmp(name, activation_names[i]) == 0) {
            *act = (enum kfac_activation)i;
            return 0;
        }
    return kfac_error(KFAC_EINVAL,
                      "unknown activation '%s' (expected linear, logistic, tanh, relu or softmax)",
                      name);
}

/* The row kernels below are written as plain loops over restrict pointers so that the
 * compiler vectorises them (vecmath.h). */

KFAC_VECTOR_KERNEL
static void logistic_row(int n, const float *restrict s, float *restrict out)
{
    /* exp(−s) overflows to +inf for very negative s, which gives exactly 0: no branch needed. */
    for (int j = 0; j < n; j++)
        out[j] = 1.0f / (1.0f + expf(-s[j]));
}

KFAC_VECTOR_KERNEL
static void tanh_row(int n, const float *restrict s, float *restrict out)
{
    for (int j = 0; j < n; j++)
        out[j] = tanhf(s[j]);
}

static void relu_row(int n, const float *restrict s, float *restrict out)
{
    for (int j = 0; j < n; j++)
        out[j] = s[j] > 0 ? s[j] : 0;
}

KFAC_VECTOR_KERNEL
static void softmax_row(int n, const float *restrict s, float *restrict out)
{
    float mx = s[0];
    for (int j = 1; j < n; j++)
        mx = s[j] > mx ? s[j] : mx;
    for (int j = 0; j < n; j++)
        out[j] = expf(s[j] - mx);
    double sum = 0;
    for (int j = 0; j < n; j++)
        sum += out[j];
    float inv = (float)(1.0 / sum);
    for (int j = 0; j < n; j++)
        out[j] *= inv;
}

void kfac_activation_forward(enum kfac_activation act, int m, int n, const float *s, int ld_s,
                             float *out, int ld_out)
{
    for (int i = 0; i < m; i++) {
        const float *si = s + (size_t)i * ld_s;
        float *oi = out + (size_t)i * ld_out;
        switch (act) {
        case KFAC_ACT_LINEAR:
            if (oi != si)
                memcpy(oi, si, (size_t)n * sizeof *oi);
            break;
        case KFAC_ACT_LOGISTIC: logistic_row(n, si, oi); break;
        case KFAC_ACT_TANH: tanh_row(n, si, oi); break;
        case KFAC_ACT_RELU: relu_row(n, si, oi); break;
        case KFAC_ACT_SOFTMAX: softmax_row(n, si, oi); break;
        }
    }
}

/* y = φ'·x from out = φ(s); y may be x, so no restrict on those two. */
KFAC_VECTOR_KERNEL
static void derivative_row(enum kfac_activation act, int n, const float *restrict out,
                           const float *x, float *y)
{
    switch (act) {
    case KFAC_ACT_LINEAR:
    case KFAC_ACT_SOFTMAX: /* not reached: see layer.h */
        if (y != x)
            memmove(y, x, (size_t)n * sizeof *y);
        break;
    case KFAC_ACT_LOGISTIC:
        for (int j = 0; j < n; j++)
            y[j] = x[j] * out[j] * (1.0f - out[j]);
        break;
    case KFAC_ACT_TANH:
        for (int j = 0; j < n; j++)
            y[j] = x[j] * (1.0f - out[j] * out[j]);
        break;
    case KFAC_ACT_RELU:
        for (int j = 0; j < n; j++)
            y[j] = out[j] > 0 ? x[j] : 0;
        break;
    }
}

void kfac_activation_derivative_mul(enum kfac_activation act, int m, int n, const float *out,
                                    int ld_out, const float *x, int ld_x, float *y, int ld_y)
{
    for (int i = 0; i < m; i++)
        derivative_row(act, n, out + (size_t)i * ld_out, x + (size_t)i * ld_x,
                       y + (size_t)i * ld_y);
}

void kfac_init_weights(float *W, int rows, int fan_in, int fan_out, enum kfac_init scheme,
                       int sparse_k, enum kfac_activation act, struct kfac_rng *rng)
{
    int cols = fan_in + 1;
    memset(W, 0, (size_t)rows * cols * sizeof *W);
    switch (scheme) {
    case KFAC_INIT_SPARSE: {
        int k = sparse_k < fan_in ? sparse_k : fan_in;
        double scale = act == KFAC_ACT_TANH ? 0.5 : 1.0;
        size_t *src = kfac_xmalloc((size_t)fan_in * sizeof *src);
        for (int r = 0; r < rows; r++) {
            /* The first k entries of a partial Fisher–Yates shuffle: k distinct sources. */
            for (int j = 0; j < fan_in; j++)
                src[j] = (size_t)j;
            for (int j = 0; j < k; j++) {
                size_t p = (size_t)j + (size_t)kfac_rng_below(rng, (uint64_t)(fan_in - j));
                size_t t = src[j];
                src[j] = src[p];
                src[p] = t;
                W[(size_t)r * cols + src[j]] = (float)(scale * kfac_rng_normal(rng));
            }
        }
        free(src);
        break;
    }
    case KFAC_INIT_GLOROT: {
        double a = sqrt(6.0 / (fan_in + fan_out));
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < fan_in; j++)
                W[(size_t)r * cols + j] = (float)(a * (2.0 * kfac_rng_uniform(rng) - 1.0));
        break;
    }
    case KFAC_INIT_HE: {
        double sd = sqrt(2.0 / fan_in);
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < fan_in; j++)
                W[(size_t)r * cols + j] = (float)(sd * kfac_rng_normal(rng));
        break;
    }
    }
}

int kfac_window_out(int n, int k, int stride, int pad)
{
    int64_t span = (int64_t)n + 2 * (int64_t)pad - k;
    return span < 0 || stride < 1 || span / stride >= INT_MAX ? 0 : (int)(span / stride + 1);
}

void kfac_shape_format(const struct kfac_shape *s, char *buf, size_t size)
{
    if (s->h == 1 && s->w == 1)
        snprintf(buf, size, "%d", s->c);
    else
        snprintf(buf, size, "%dx%dx%d", s->c, s->h, s->w);
}

void kfac_set_ones_column(size_t rows, size_t cols, float *x)
{
    for (size_t r = 0; r < rows; r++)
        x[r * cols + cols - 1] = 1.0f;
}
