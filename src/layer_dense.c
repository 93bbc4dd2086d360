/*
 * layer_dense.c: the fully connected layer, s = ā Wᵀ with the bias as W's last column.
 * Forward, backward and forward-mode products are single sgemm calls of the backend on
 * the batch.
 */
#include "kfac/layer.h"
#include "kfac/mat.h"

/* s (m × d_out) = ā (m × (d_in+1)) · Wᵀ (W: d_out × (d_in+1)); out = φ(s). */
static void dense_forward(struct kfac_layer *l, int m)
{
    int k = l->d_in + 1;
    l->be->sgemm(KFAC_NO_TRANS, KFAC_TRANS, m, l->d_out, k, 1.0f, l->abar, k, l->W, k, 0.0f, l->s,
                 l->d_out);
    l->be->activation_forward(l->act, m, l->d_out, l->s, l->d_out, l->out, l->ld_out);
}

/* dW (d_out × (d_in+1)) = scale · gᵀ (d_out × m) · ā (m × (d_in+1)) + beta · dW;
 * din (m × d_in) = g (m × d_out) · W[:, :d_in]. */
static void dense_backward(struct kfac_layer *l, int m, float scale, float *dW, float beta,
                           float *din, int ld_din)
{
    int k = l->d_in + 1;
    if (dW)
        l->be->sgemm(KFAC_TRANS, KFAC_NO_TRANS, l->d_out, k, m, scale, l->g, l->d_out, l->abar, k,
                     beta, dW, k);
    if (din)
        l->be->sgemm(KFAC_NO_TRANS, KFAC_NO_TRANS, m, l->d_in, l->d_out, 1.0f, l->g, l->d_out, l->W,
                     k, 0.0f, din, ld_din);
}

/* For each tangent t < n_tan, rows [t·m, (t+1)·m) of r_s (n_tan·m × d_out) = the same rows
 * of r_in (n_tan·m × (d_in+1)) · Wᵀ + ā (m × (d_in+1)) · V[t]ᵀ: the products with W in one
 * call over every tangent. */
static void dense_jvp(struct kfac_layer *l, int m, int n_tan, const float *const *V,
                      int input_varies)
{
    int k = l->d_in + 1;
    for (int t = 0; t < n_tan; t++)
        l->be->sgemm(KFAC_NO_TRANS, KFAC_TRANS, m, l->d_out, k, 1.0f, l->abar, k, V[t], k, 0.0f,
                     l->r_s + (size_t)t * m * l->d_out, l->d_out);
    if (input_varies)
        l->be->sgemm(KFAC_NO_TRANS, KFAC_TRANS, n_tan * m, l->d_out, k, 1.0f, l->r_in, k, l->W, k,
                     1.0f, l->r_s, l->d_out);
}

/* ā is the input buffer itself, its last column ones (r_in's stays 0). */
static void dense_bind(struct kfac_layer *l, size_t m, float **p, float *shared, int **q)
{
    (void)p, (void)shared, (void)q;
    l->abar = l->in;
    kfac_set_ones_column(m, (size_t)l->ld_in, l->in);
}

const struct kfac_layer_ops kfac_dense_ops = {
    .name = "dense",
    .bias_column = 1,
    .couples = 1,
    .bind = dense_bind,
    .forward = dense_forward,
    .backward = dense_backward,
    .jvp = dense_jvp,
};
