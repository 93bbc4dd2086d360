/*
 * layer_pool.c: max and average pooling over kh × kw windows of each channel, without
 * parameters. Maps are position-major (layer.h), so the inner loops run over the
 * channels of one position, contiguous in memory. Max pooling records where each
 * maximum came from (the first, on ties), for backward and forward mode.
 */
#include "kfac/layer.h"

#include <string.h>

/* Calls body(o, i) for each output offset o of case b's map and each input offset i of
 * its window: the loop nest both kinds of pooling share. */
#define FOR_WINDOWS(l, body)                                                                    \
    do {                                                                                        \
        int c_ = (l)->in_shape.c, w_ = (l)->in_shape.w;                                         \
        int oh_ = (l)->out_shape.h, ow_ = (l)->out_shape.w;                                     \
        for (int oy = 0; oy < oh_; oy++)                                                        \
            for (int ox = 0; ox < ow_; ox++)                                                    \
                for (int ky = 0; ky < (l)->kh; ky++)                                            \
                    for (int kx = 0; kx < (l)->kw; kx++) {                                      \
                        size_t o_ = ((size_t)oy * ow_ + ox) * c_;                               \
                        size_t i_ = ((size_t)(oy * (l)->stride + ky) * w_ + ox * (l)->stride + \
                                     kx) * c_;                                                  \
                        for (int ch = 0; ch < c_; ch++)                                         \
                            body(o_ + ch, i_ + ch);                                             \
                    }                                                                           \
    } while (0)

static void maxpool_forward(struct kfac_layer *l, int m)
{
    size_t n = (size_t)l->out_size;
    for (int b = 0; b < m; b++) {
        const float *x = l->in + (size_t)b * l->ld_in;
        float *s = l->s + (size_t)b * n;
        int *arg = l->argmax + (size_t)b * n;
        for (size_t o = 0; o < n; o++)
            arg[o] = -1;
#define TAKE_MAX(o, i)                                                                          \
    if (arg[o] < 0 || x[i] > s[o]) {                                                            \
        s[o] = x[i];                                                                            \
        arg[o] = (int)(i);                                                                      \
    }
        FOR_WINDOWS(l, TAKE_MAX);
#undef TAKE_MAX
    }
    kfac_activation_forward(l->act, m, l->out_size, l->s, l->out_size, l->out, l->ld_out);
}

/* din (m × in_size) = g routed to each window's maximum. */
static void maxpool_backward(struct kfac_layer *l, int m, float scale, float *dW, float *din,
                             int ld_din)
{
    (void)scale, (void)dW;
    if (!din)
        return;
    size_t n = (size_t)l->out_size;
    for (int b = 0; b < m; b++) {
        float *d = din + (size_t)b * ld_din;
        const float *g = l->g + (size_t)b * n;
        const int *arg = l->argmax + (size_t)b * n;
        memset(d, 0, (size_t)l->in_size * sizeof *d);
        for (size_t o = 0; o < n; o++)
            d[arg[o]] += g[o];
    }
}

/* r_s = r_in at each window's maximum (zero when the input does not vary). */
static void maxpool_jvp(struct kfac_layer *l, int m, const float *V, int input_varies)
{
    (void)V;
    size_t n = (size_t)l->out_size;
    for (int b = 0; b < m; b++) {
        const float *r = l->r_in + (size_t)b * l->ld_in;
        const int *arg = l->argmax + (size_t)b * n;
        float *rs = l->r_s + (size_t)b * n;
        for (size_t o = 0; o < n; o++)
            rs[o] = input_varies ? r[arg[o]] : 0.0f;
    }
}

/* out (n per case) = the window means of x (ld_x per case). */
static void window_means(const struct kfac_layer *l, int m, const float *x, int ld_x, float *out)
{
    size_t n = (size_t)l->out_size;
    float w = 1.0f / (float)(l->kh * l->kw);
    for (int b = 0; b < m; b++) {
        const float *xb = x + (size_t)b * ld_x;
        float *s = out + (size_t)b * n;
        memset(s, 0, n * sizeof *s);
#define ADD_MEAN(o, i) s[o] += w * xb[i];
        FOR_WINDOWS(l, ADD_MEAN);
#undef ADD_MEAN
    }
}

static void avgpool_forward(struct kfac_layer *l, int m)
{
    window_means(l, m, l->in, l->ld_in, l->s);
    kfac_activation_forward(l->act, m, l->out_size, l->s, l->out_size, l->out, l->ld_out);
}

/* din (m × in_size) = g spread evenly over each window. */
static void avgpool_backward(struct kfac_layer *l, int m, float scale, float *dW, float *din,
                             int ld_din)
{
    (void)scale, (void)dW;
    if (!din)
        return;
    size_t n = (size_t)l->out_size;
    float w = 1.0f / (float)(l->kh * l->kw);
    for (int b = 0; b < m; b++) {
        float *d = din + (size_t)b * ld_din;
        const float *g = l->g + (size_t)b * n;
        memset(d, 0, (size_t)l->in_size * sizeof *d);
#define SPREAD(o, i) d[i] += w * g[o];
        FOR_WINDOWS(l, SPREAD);
#undef SPREAD
    }
}

static void avgpool_jvp(struct kfac_layer *l, int m, const float *V, int input_varies)
{
    (void)V;
    if (input_varies)
        window_means(l, m, l->r_in, l->ld_in, l->r_s);
    else
        memset(l->r_s, 0, (size_t)m * l->out_size * sizeof *l->r_s);
}

const struct kfac_layer_ops kfac_maxpool_ops = {
    .name = "maxpool",
    .forward = maxpool_forward,
    .backward = maxpool_backward,
    .jvp = maxpool_jvp,
};

const struct kfac_layer_ops kfac_avgpool_ops = {
    .name = "avgpool",
    .forward = avgpool_forward,
    .backward = avgpool_backward,
    .jvp = avgpool_jvp,
};
