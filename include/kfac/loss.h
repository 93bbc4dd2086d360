/*
 * loss.h: the matched output losses, their output-space Fisher, target sampling from
 * the model's predictive distribution, and the error metrics.
 *
 * Each loss pairs with one output activation (its link): Bernoulli cross-entropy with
 * logistic, squared error with linear, softmax cross-entropy with softmax. For these,
 * ∂ℓ/∂z = y − t at the logits z, and the output Fisher F_R equals the Hessian of ℓ in z:
 *   Bernoulli: ℓ = Σ_j softplus(z_j) − t_j z_j,   F_R = diag(y(1−y))
 *   squared:   ℓ = ½‖z − t‖² (unit-variance Gaussian), F_R = I
 *   softmax:   ℓ = −Σ_j t_j log p_j,             F_R = diag(p) − p pᵀ
 * All matrices are row-major with one row per case: z, y, t, g, v are m × n.
 * loss_sum, loss_grad, sample_grad, fisher_mul and fisher_column are the CPU kernels of
 * the backend's loss operations (backend.h); the library calls them through its backend.
 */
#ifndef KFAC_LOSS_H
#define KFAC_LOSS_H

#include "kfac/layer.h"
#include "kfac/rng.h"

enum kfac_loss {
    KFAC_LOSS_BERNOULLI,
    KFAC_LOSS_SQUARED,
    KFAC_LOSS_SOFTMAX
};

const char *kfac_loss_name(enum kfac_loss loss);
int kfac_loss_parse(const char *name, enum kfac_loss *loss);

/* The output activation the loss is matched to. */
enum kfac_activation kfac_loss_link(enum kfac_loss loss);

/* Σ over the m cases of ℓ(z, t), in double, from the logits z (stable for any z). */
double kfac_loss_sum(enum kfac_loss loss, int m, int n, const float *z, const float *t);

/* g = ∂ℓ/∂z per case (= y − t for every matched loss). */
void kfac_loss_grad(enum kfac_loss loss, int m, int n, const float *y, const float *t, float *g);

/* g = y − t̃ with t̃ drawn from the model's predictive distribution at y: Bernoulli(y),
 * N(y, I) or Categorical(y). E[g gᵀ] is the output Fisher F_R. Case i draws from the
 * stream kfac_rng_case(key, place + i·step): its place in the whole batch (rng.h). */
void kfac_loss_sample_grad(enum kfac_loss loss, int m, int n, const float *y, uint64_t key,
                           long place, long step, float *g);

/* out_c = F_R(y_c) v_c for every case c. out may not alias v. */
void kfac_loss_fisher_mul(enum kfac_loss loss, int m, int n, const float *y, const float *v,
                          float *out);

/* out_c (m × n) = column j of a square root of F_R(y_c), the columns b_0 … b_{n−1} with
 * Σ_j b_j b_jᵀ = F_R: sqrt(y_j(1−y_j)) e_j (Bernoulli), e_j (squared), sqrt(p_j)(p − e_j)
 * (softmax). Backward passes from them give the exact Fisher without sampling. */
void kfac_loss_fisher_column(enum kfac_loss loss, int m, int n, const float *y, int j,
                             float *out);

/* Σ_c Σ_j (y − t)²: m × (reconstruction error), or m·n × (mean squared error). */
double kfac_sq_error_sum(int m, int n, const float *y, const float *t);

/* Number of cases whose largest prediction sits where the target's largest entry does. */
int kfac_correct_count(int m, int n, const float *y, const float *t);

#endif
