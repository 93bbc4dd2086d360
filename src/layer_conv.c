/*
 * layer_conv.c: the 2-D convolution as KFC sees it (Grosse & Martens 2016): the input
 * patches under the output positions form ā (one row per case and position, a 1
 * appended for the bias), so forward, backward and forward-mode products are each one
 * cblas_sgemm over the whole batch, plus im2col/col2im to move between maps and patches.
 */
#include "kfac/layer.h"
#include "kfac/mat.h"

#include <string.h>

/* The taps [lo, hi) of a window of k starting at x0 that fall inside 0..n−1 (the rest
 * are padding); lo = hi when none does. */
static void window_span(int x0, int k, int n, int *lo, int *hi)
{
    *lo = x0 < 0 ? -x0 : 0;
    *hi = x0 + k > n ? n - x0 : k;
    if (*lo > k)
        *lo = k;
    if (*hi < *lo)
        *hi = *lo;
}

void kfac_im2col(int m, const struct kfac_shape *in, int kh, int kw, int stride, int pad,
                 const float *x, int ld_x, float *out, int ld_out)
{
    int c = in->c, oh = kfac_window_out(in->h, kh, stride, pad);
    int ow = kfac_window_out(in->w, kw, stride, pad);
    size_t run = (size_t)c * sizeof *out;
    for (int b = 0; b < m; b++) {
        const float *xb = x + (size_t)b * ld_x;
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++) {
                float *row = out + ((size_t)b * oh * ow + (size_t)oy * ow + ox) * ld_out;
                for (int ky = 0; ky < kh; ky++) {
                    int iy = oy * stride - pad + ky;
                    float *dst = row + (size_t)ky * kw * c;
                    if (iy < 0 || iy >= in->h) {
                        memset(dst, 0, (size_t)kw * run);
                        continue;
                    }
                    int lo, hi;
                    window_span(ox * stride - pad, kw, in->w, &lo, &hi);
                    memset(dst, 0, (size_t)lo * run);
                    if (hi > lo)
                        memcpy(dst + (size_t)lo * c,
                               xb + ((size_t)iy * in->w + ox * stride - pad + lo) * c,
                               (size_t)(hi - lo) * run);
                    memset(dst + (size_t)hi * c, 0, (size_t)(kw - hi) * run);
                }
            }
    }
}

void kfac_col2im(int m, const struct kfac_shape *in, int kh, int kw, int stride, int pad,
                 const float *cols, int ld_cols, float *dx, int ld_x)
{
    int c = in->c, oh = kfac_window_out(in->h, kh, stride, pad);
    int ow = kfac_window_out(in->w, kw, stride, pad);
    size_t size = (size_t)in->h * in->w * c;
    for (int b = 0; b < m; b++) {
        float *xb = dx + (size_t)b * ld_x;
        memset(xb, 0, size * sizeof *xb);
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++) {
                const float *row = cols + ((size_t)b * oh * ow + (size_t)oy * ow + ox) * ld_cols;
                for (int ky = 0; ky < kh; ky++) {
                    int iy = oy * stride - pad + ky;
                    if (iy < 0 || iy >= in->h)
                        continue;
                    int lo, hi;
                    window_span(ox * stride - pad, kw, in->w, &lo, &hi);
                    if (hi == lo)
                        continue;
                    const float *src = row + ((size_t)ky * kw + lo) * c;
                    float *dst = xb + ((size_t)iy * in->w + ox * stride - pad + lo) * c;
                    for (size_t j = 0; j < (size_t)(hi - lo) * c; j++)
                        dst[j] += src[j];
                }
            }
    }
}

/* ā (m·n_pos × (d_in+1)) = the patches of in; s (m·n_pos × d_out) = ā Wᵀ; out = φ(s). */
static void conv_forward(struct kfac_layer *l, int m)
{
    int k = l->d_in + 1, rows = m * l->n_pos;
    kfac_im2col(m, &l->in_shape, l->kh, l->kw, l->stride, l->pad, l->in, l->ld_in, l->abar, k);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, l->d_out, k, 1.0f, l->abar, k, l->W,
                k, 0.0f, l->s, l->d_out);
    kfac_activation_forward(l->act, m, l->out_size, l->s, l->out_size, l->out, l->ld_out);
}

/* dW (d_out × (d_in+1)) = scale · gᵀ (d_out × m·n_pos) · ā; din = col2im(g · W[:, :d_in]). */
static void conv_backward(struct kfac_layer *l, int m, float scale, float *dW, float *din,
                          int ld_din)
{
    int k = l->d_in + 1, rows = m * l->n_pos;
    if (dW)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, l->d_out, k, rows, scale, l->g,
                    l->d_out, l->abar, k, 0.0f, dW, k);
    if (din) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, l->d_in, l->d_out, 1.0f, l->g,
                    l->d_out, l->W, k, 0.0f, l->col, l->d_in);
        kfac_col2im(m, &l->in_shape, l->kh, l->kw, l->stride, l->pad, l->col, l->d_in, din,
                    ld_din);
    }
}

/* r_s (m·n_pos × d_out) = ā Vᵀ + patches(r_in) · W[:, :d_in]ᵀ. */
static void conv_jvp(struct kfac_layer *l, int m, const float *V, int input_varies)
{
    int k = l->d_in + 1, rows = m * l->n_pos;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, l->d_out, k, 1.0f, l->abar, k, V, k,
                0.0f, l->r_s, l->d_out);
    if (input_varies) {
        kfac_im2col(m, &l->in_shape, l->kh, l->kw, l->stride, l->pad, l->r_in, l->ld_in, l->col,
                    l->d_in);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, l->d_out, l->d_in, 1.0f, l->col,
                    l->d_in, l->W, k, 1.0f, l->r_s, l->d_out);
    }
}

const struct kfac_layer_ops kfac_conv_ops = {
    .name = "conv",
    .forward = conv_forward,
    .backward = conv_backward,
    .jvp = conv_jvp,
};
