/*
 * curvature_internal.h: private entry points shared by curvature.c (the K-FAC factors)
 * and its variants (curvature_tridiag.c, which extends each of its steps), and
 * by curvature_kfoc.c (K-FOC's fits) and fisher_error.c (the Fisher-error measurement),
 * which uses the fits' half-steps.
 */
#ifndef KFAC_CURVATURE_INTERNAL_H
#define KFAC_CURVATURE_INTERNAL_H

#include "kfac/curvature.h"

/* Adds "curv.<block>.<what>" for n values of the given type in [lo, hi] (if p is not
 * NULL). */
void kfac_curvature_state_add(struct kfac_state *st, int block, const char *what,
                              enum kfac_state_type type, void *p, size_t n, double lo, double hi);

/* Swaps a factor with its kept copy (see kfac_curvature_rollback()). */
void kfac_curvature_swap_kept(double **x, double **keep);

/* out_i (n_g × n_a) = scale · (G + γ/π I)⁻¹ V_i (Ā + γπ I)⁻¹ for layer i's block V_i
 * (n_g × n_a) with the inverses of the last invert. Uses c->tmp. */
void kfac_curvature_precondition_layer(struct kfac_curvature *c, int i, const float *V,
                                       float scale, float *out);

/* x·y and ‖x‖² over n doubles, through the backend. */
static inline double kfac_inner(const struct kfac_backend *be, size_t n, const double *x,
                                const double *y)
{
    return be->ddot((int)n, x, y);
}

static inline double kfac_frob2(const struct kfac_backend *be, size_t n, const double *x)
{
    return kfac_inner(be, n, x, x);
}

/* X (n_g × K × n_a) with X[o, k, :] = Σ_t G[kT + t, o] A[kT + t, :]: case k's gradient
 * X_k = G_kᵀ A_k for A (K·T × n_a) and G (K·T × n_g). */
void kfac_case_gradients(const struct kfac_backend *be, int K, int T, int n_a, const double *A,
                         int n_g, const double *G, double *X);

/* q_k = x_kᵀ M x_k for the rows of X (K × n) and a symmetric M (n × n); tmp: K × n. */
void kfac_quadratic_forms(const struct kfac_backend *be, int K, int n, const double *X,
                          const double *M, double *tmp, double *q);

/* One half-step of K-FOC on per-case gradients X (n_g × K × n_a): out (n_g × n_g) =
 * (1/K) Σ_k X_k in X_kᵀ from in (n_a × n_a) when from = 0, out (n_a × n_a) =
 * (1/K) Σ_k X_kᵀ in X_k from in (n_g × n_g) when from = 1. tmp: n_g K n_a. */
void kfac_case_half_step(const struct kfac_backend *be, int K, int n_a, int n_g, const double *X,
                         int from, const double *in, double *out, double *tmp);

/* K-FOC_running's aggregation: L_run ⊗ R_run ← the best Kronecker approximation of
 * ε L_run ⊗ R_run + L ⊗ (1−ε) R (L_run, L: na × na; R_run, R: ng × ng; R scaled in place),
 * warm-started from the run's factor of side `side`. work: kfac_kfoc_running_work_size(). */
void kfac_kfoc_running_fit(const struct kfac_backend *be, int na, int ng, double *L_run,
                           double *R_run, double eps, double *L, double *R, int side,
                           int max_iter, double tol, double *work);
size_t kfac_kfoc_running_work_size(int na, int ng);

#endif
