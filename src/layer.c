/*
 * layer.c: activations (forward, derivative products) and weight initialisation
 * shared by all layer types (see layer.h).
 */
#include "kfac/layer.h"
#include "kfac/status.h"

#include <math.h>
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

static float logistic(float x)
{
    /* Written so that exp never overflows. */
    if (x >= 0)
        return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
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
        case KFAC_ACT_LOGISTIC:
            for (int j = 0; j < n; j++)
                oi[j] = logistic(si[j]);
            break;
        case KFAC_ACT_TANH:
            for (int j = 0; j < n; j++)
                oi[j] = tanhf(si[j]);
            break;
        case KFAC_ACT_RELU:
            for (int j = 0; j < n; j++)
                oi[j] = si[j] > 0 ? si[j] : 0;
            break;
        case KFAC_ACT_SOFTMAX: {
            float mx = si[0];
            for (int j = 1; j < n; j++)
                mx = si[j] > mx ? si[j] : mx;
            double sum = 0;
            for (int j = 0; j < n; j++)
                sum += oi[j] = expf(si[j] - mx);
            float inv = (float)(1.0 / sum);
            for (int j = 0; j < n; j++)
                oi[j] *= inv;
            break;
        }
        }
    }
}

void kfac_activation_derivative_mul(enum kfac_activation act, int m, int n, const float *out,
                                    int ld_out, const float *x, int ld_x, float *y, int ld_y)
{
    for (int i = 0; i < m; i++) {
        const float *oi = out + (size_t)i * ld_out, *xi = x + (size_t)i * ld_x;
        float *yi = y + (size_t)i * ld_y;
        switch (act) {
        case KFAC_ACT_LINEAR:
        case KFAC_ACT_SOFTMAX: /* not reached: see layer.h */
            if (yi != xi)
                memcpy(yi, xi, (size_t)n * sizeof *yi);
            break;
        case KFAC_ACT_LOGISTIC:
            for (int j = 0; j < n; j++)
                yi[j] = xi[j] * oi[j] * (1.0f - oi[j]);
            break;
        case KFAC_ACT_TANH:
            for (int j = 0; j < n; j++)
                yi[j] = xi[j] * (1.0f - oi[j] * oi[j]);
            break;
        case KFAC_ACT_RELU:
            for (int j = 0; j < n; j++)
                yi[j] = oi[j] > 0 ? xi[j] : 0;
            break;
        }
    }
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
