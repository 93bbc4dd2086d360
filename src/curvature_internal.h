/*
 * curvature_internal.h: private entry points shared by curvature.c (the K-FAC factors)
 * and curvature_tridiag.c (block-tridiagonal K-FAC), which extends each of its steps.
 */
#ifndef KFAC_CURVATURE_INTERNAL_H
#define KFAC_CURVATURE_INTERNAL_H

#include "kfac/curvature.h"

/* The cross factors' mini-batch statistics of the first m cases (after the layers' own
 * statistics were found finite), and their merge with decay eps, which keeps the cross
 * factors before it in XA_keep and XG_keep. */
void kfac_curvature_cross_moments(struct kfac_curvature *c, const struct kfac_net *net, int m);
void kfac_curvature_merge_cross(struct kfac_curvature *c, double eps);

/* Swaps a factor with its kept copy (see kfac_curvature_rollback()). */
void kfac_curvature_swap_kept(double **x, double **keep);

/* After the layers' eigendecompositions: each coupling's QA, QG, PA and PG. */
void kfac_curvature_decompose_tridiag(struct kfac_curvature *c);

/* Each coupling's Ψ^A, Ψ^G, K_A, K_G and denominators for γ. */
int kfac_curvature_invert_tridiag(struct kfac_curvature *c, double gamma, long k);

/* out = scale · F̂⁻¹ V through Ξ, Λ and Ξᵀ (see kfac_curvature_precondition()). */
void kfac_curvature_precondition_tridiag(struct kfac_curvature *c, const struct kfac_net *net,
                                         const float *V, float scale, float *out);

/* out_i (n_g × n_a) = scale · (G + γ/π I)⁻¹ V_i (Ā + γπ I)⁻¹ for layer i's block V_i
 * (n_g × n_a) with the inverses of the last invert. Uses c->tmp. */
void kfac_curvature_precondition_layer(struct kfac_curvature *c, int i, const float *V,
                                       float scale, float *out);

/* Frees what kfac_curvature_reserve_tridiag() allocated (nothing if it was not called). */
void kfac_curvature_free_tridiag(struct kfac_curvature *c);

#endif
