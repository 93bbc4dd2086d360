/*
 * layer_flatten.c: reads a c × h × w map as a vector of c·h·w values, so that dense
 * layers can follow convolutions and pooling. The position-major map already is that
 * vector: the layer only copies it into a buffer with room for the next layer's ones.
 */
#include "kfac/layer.h"
#include "kfac/mat.h"

static void flatten_forward(struct kfac_layer *l, int m)
{
    kfac_mat_copy(m, l->in_size, l->in, l->ld_in, l->s, l->out_size);
    l->be->activation_forward(l->act, m, l->out_size, l->s, l->out_size, l->out, l->ld_out);
}

static void flatten_backward(struct kfac_layer *l, int m, float scale, float *dW, float beta,
                             float *din, int ld_din)
{
    (void)scale, (void)dW, (void)beta;
    if (din)
        kfac_mat_copy(m, l->in_size, l->g, l->out_size, din, ld_din);
}

static void flatten_jvp(struct kfac_layer *l, int m, int n_tan, const float *const *V,
                        int input_varies)
{
    (void)V, (void)input_varies;
    kfac_mat_copy(n_tan * m, l->in_size, l->r_in, l->ld_in, l->r_s, l->out_size);
}

const struct kfac_layer_ops kfac_flatten_ops = {
    .name = "flatten",
    .flattens = 1,
    .forward = flatten_forward,
    .backward = flatten_backward,
    .jvp = flatten_jvp,
};
