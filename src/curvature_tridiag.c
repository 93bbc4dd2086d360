/*
 * curvature_tridiag.c: block-tridiagonal K-FAC (Martens & Grosse 2015, §3.3; REFERENCE.md
 * §3). F̂ agrees with the damped Kronecker-factored Fisher on the diagonal blocks and on
 * the blocks that couple consecutive layers, and F̂⁻¹ is block tridiagonal: F̂ is the
 * covariance of the Gaussian chain, directed from the top layer down,
 *     vec(DW_ℓ) ~ N(0, Σ_ℓ),  vec(DW_i) | vec(DW_{i+1}) ~ N(Ψ_{i,i+1} vec(DW_{i+1}), Σ_{i|i+1}),
 * so F̂⁻¹ = Ξᵀ Λ Ξ with Ξ unit upper block-bidiagonal (−Ψ_{i,i+1} above the diagonal) and
 * Λ = diag(Σ_{1|2}⁻¹, …, Σ_{ℓ−1|ℓ}⁻¹, Σ_ℓ⁻¹).
 *
 * Σ_{i|i+1} = A ⊗ B − C ⊗ D is inverted through A^{-1/2}, B^{-1/2} and the eigenvalues s
 * of A^{-1/2} C A^{-1/2} and B^{-1/2} D B^{-1/2}. Those are formed in the eigenbases of the
 * layers' factors: with A = U diag(a) Uᵀ and A' = U' diag(a') U'ᵀ (layer i+1),
 *     Uᵀ A^{-1/2} C A^{-1/2} U = Z Zᵀ,  Z = diag(a)^{-1/2} (Uᵀ Ā_{i,i+1} U') diag(a')^{-1/2},
 * where the bracket does not depend on γ and is formed once per decomposition. The
 * precomputations are in double; the per-iteration products are float GEMMs.
 */
#include "curvature_internal.h"
#include "kfac/mat.h"
#include "kfac/status.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static void kfac_curvature_free_tridiag(struct kfac_curvature *c)
{
    if (!c->tri)
        return;
    for (int i = 0; i + 1 < c->n_blocks; i++) {
        struct kfac_coupling *t = &c->tri[i];
        free(t->XA);
        free(t->XG);
        free(t->XA_keep);
        free(t->XG_keep);
        kfac_floats_free(t->batch_XA);
        kfac_floats_free(t->batch_XG);
        free(t->QA);
        free(t->QG);
        free(t->PA);
        free(t->PG);
        kfac_floats_free(t->psi_A);
        kfac_floats_free(t->psi_G);
        kfac_floats_free(t->KA);
        kfac_floats_free(t->KG);
        kfac_floats_free(t->den);
    }
    free(c->tri);
    kfac_floats_free(c->tmp2);
    free(c->tri_work);
    free(c->s_A);
    free(c->s_G);
}

/* The cross moments need no finiteness check of their own: the merge waits until both
 * layers' second moments are found finite, and by Cauchy–Schwarz |E[x yᵀ]_ab| ≤
 * sqrt(E[x_a²] E[y_b²]). */
static void kfac_curvature_cross_moments(struct kfac_curvature *c, const struct kfac_net *net,
                                         int m, int total, int first)
{
    const struct kfac_backend *be = c->be;
    float w = 1.0f / (float)total, beta = first ? 0.0f : 1.0f;
    for (int i = 0; i + 1 < c->n_blocks; i++) {
        struct kfac_coupling *t = &c->tri[i];
        const struct kfac_layer *l = &net->layers[i], *l1 = &net->layers[i + 1];
        be->sgemm(KFAC_TRANS, KFAC_NO_TRANS, t->n_a, t->n_a1, m, w, l->abar, t->n_a, l1->abar,
                  t->n_a1, beta, t->batch_XA, t->n_a1);
        be->sgemm(KFAC_TRANS, KFAC_NO_TRANS, t->n_g, t->n_g1, m, w, l->g, t->n_g, l1->g, t->n_g1,
                  beta, t->batch_XG, t->n_g1);
    }
}

/* The cross moments for their sum over the ranks (curvature.h). */
static size_t pack_cross(struct kfac_curvature *c, float *buf, int unpack)
{
    size_t at = 0;
    for (int i = 0; i + 1 < c->n_blocks; i++) {
        struct kfac_coupling *t = &c->tri[i];
        float *X[2] = {t->batch_XA, t->batch_XG};
        size_t n[2] = {(size_t)t->n_a * t->n_a1, (size_t)t->n_g * t->n_g1};
        for (int s = 0; s < 2; s++, at += n[s - 1])
            if (buf)
                memcpy(unpack ? X[s] : buf + at, unpack ? buf + at : X[s], n[s] * sizeof *buf);
    }
    return at;
}

/* out = εX + (1−ε) B for X, B and out of n elements. */
static void merge_full(size_t n, const double *X, const float *B, double eps, double *out)
{
    for (size_t j = 0; j < n; j++)
        out[j] = eps * X[j] + (1.0 - eps) * B[j];
}

static void kfac_curvature_merge_cross(struct kfac_curvature *c, double eps)
{
    for (int i = 0; i + 1 < c->n_blocks; i++) {
        struct kfac_coupling *t = &c->tri[i];
        merge_full((size_t)t->n_a * t->n_a1, t->XA, t->batch_XA, eps, t->XA_keep);
        merge_full((size_t)t->n_g * t->n_g1, t->XG, t->batch_XG, eps, t->XG_keep);
        kfac_curvature_swap_kept(&t->XA, &t->XA_keep);
        kfac_curvature_swap_kept(&t->XG, &t->XG_keep);
    }
}

/* Q (n × n1) = X U' and P (n × n1) = Uᵀ Q for X (n × n1) and the eigenvectors in the rows
 * of V_t (n × n) and V1_t (n1 × n1). */
static void rotate(const struct kfac_backend *be, int n, int n1, const double *X, const double *V_t,
                   const double *V1_t, double *Q, double *P)
{
    be->dgemm(KFAC_NO_TRANS, KFAC_TRANS, n, n1, n1, 1.0, X, n1, V1_t, n1, 0.0, Q, n1);
    be->dgemm(KFAC_NO_TRANS, KFAC_NO_TRANS, n, n1, n, 1.0, V_t, n, Q, n1, 0.0, P, n1);
}

static void kfac_curvature_decompose_tridiag(struct kfac_curvature *c)
{
    for (int i = 0; i + 1 < c->n_blocks; i++) {
        struct kfac_coupling *t = &c->tri[i];
        const struct kfac_factors *f = &c->f[i], *f1 = &c->f[i + 1];
        rotate(c->be, t->n_a, t->n_a1, t->XA, f->UA_t, f1->UA_t, t->QA, t->PA);
        rotate(c->be, t->n_g, t->n_g1, t->XG, f->UG_t, f1->UG_t, t->QG, t->PG);
    }
}

int kfac_kron_diff_factor(struct kfac_eigen_work *w, int n, const double *U_t, const double *eig,
                          double d, const double *Mt, double *work, float *K, double *s)
{
    const struct kfac_backend *be = w->be;
    int info = kfac_eigen(w, n, Mt, s);
    if (info)
        return info;
    for (int j = 0; j < n; j++)
        s[j] = s[j] < 0 ? 0 : s[j] > 1 ? 1 : s[j];
    /* work = (diag(a)^{-1/2} E)ᵀ: row j is M's eigenvector j scaled entrywise. */
    for (int j = 0; j < n; j++)
        for (int p = 0; p < n; p++)
            work[(size_t)j * n + p] = w->a[(size_t)j * n + p] / sqrt(eig[p] + d);
    /* K = U diag(a)^{-1/2} E = U_tᵀ workᵀ (w->a is free again). */
    be->dgemm(KFAC_TRANS, KFAC_TRANS, n, n, n, 1.0, U_t, n, work, n, 0.0, w->a, n);
    kfac_doubles_to_floats((size_t)n * n, w->a, K);
    return 0;
}

void kfac_kron_diff_denominators(int n_a, int n_g, const double *s_A, const double *s_G,
                                 float *den)
{
    for (int r = 0; r < n_g; r++)
        for (int j = 0; j < n_a; j++)
            den[(size_t)r * n_a + j] = (float)(1.0 / fmax(1.0 - s_G[r] * s_A[j],
                                                          KFAC_TRIDIAG_MIN_GAP));
}

void kfac_kron_diff_apply(const struct kfac_backend *be, int n_a, int n_g, const float *KA,
                          const float *KG, const float *den, float *V, float scale, float *out,
                          float *tmp)
{
    be->sgemm(KFAC_TRANS, KFAC_NO_TRANS, n_g, n_a, n_g, 1.0f, KG, n_g, V, n_a, 0.0f, tmp, n_a);
    be->sgemm(KFAC_NO_TRANS, KFAC_NO_TRANS, n_g, n_a, n_a, 1.0f, tmp, n_a, KA, n_a, 0.0f, V, n_a);
    for (size_t j = 0; j < (size_t)n_g * n_a; j++)
        V[j] *= den[j];
    be->sgemm(KFAC_NO_TRANS, KFAC_NO_TRANS, n_g, n_a, n_g, 1.0f, KG, n_g, V, n_a, 0.0f, tmp, n_a);
    be->sgemm(KFAC_NO_TRANS, KFAC_TRANS, n_g, n_a, n_a, scale, tmp, n_a, KA, n_a, 0.0f, out, n_a);
}

/* One factor's side of a coupling for damping d (layer i) and d1 (layer i+1): Ψ (n × n1)
 * = X (A' + d1 I)⁻¹ = Q diag(1/(eig1 + d1)) U'ᵀ, and K, s of kfac_kron_diff_factor() for
 * Z = diag(eig + d)^{-1/2} P diag(eig1 + d1)^{-1/2}. Returns LAPACK's info, or −1 when Z is
 * not finite (a zero damped eigenvalue). */
static int couple_side(struct kfac_curvature *c, int n, int n1, const double *V_t,
                       const double *eig, double d, const double *V1_t, const double *eig1,
                       double d1, const double *P, const double *Q, float *psi, float *K,
                       double *s)
{
    const struct kfac_backend *be = c->be;
    size_t max2 = (size_t)c->eig.max_n * c->eig.max_n;
    double *Z = c->tri_work, *Mt = c->tri_work + max2;
    for (int r = 0; r < n; r++) {
        double ar = 1.0 / sqrt(eig[r] + d);
        for (int j = 0; j < n1; j++) {
            double z = P[(size_t)r * n1 + j] * ar / sqrt(eig1[j] + d1);
            if (!isfinite(z))
                return -1;
            Z[(size_t)r * n1 + j] = z;
        }
    }
    be->dsyrk(KFAC_NO_TRANS, n, n1, 1.0, Z, n1, 0.0, Mt, n);
    int info = kfac_kron_diff_factor(&c->eig, n, V_t, eig, d, Mt, Z, K, s);
    if (info)
        return info;
    for (int r = 0; r < n; r++)
        for (int j = 0; j < n1; j++)
            Z[(size_t)r * n1 + j] = Q[(size_t)r * n1 + j] / (eig1[j] + d1);
    be->dgemm(KFAC_NO_TRANS, KFAC_NO_TRANS, n, n1, n1, 1.0, Z, n1, V1_t, n1, 0.0, Mt, n1);
    kfac_doubles_to_floats((size_t)n * n1, Mt, psi);
    return 0;
}

static int kfac_curvature_invert_tridiag(struct kfac_curvature *c, double gamma, long k)
{
    for (int i = 0; i + 1 < c->n_blocks; i++) {
        struct kfac_coupling *t = &c->tri[i];
        const struct kfac_factors *f = &c->f[i], *f1 = &c->f[i + 1];
        const char *which = "A";
        int info = couple_side(c, t->n_a, t->n_a1, f->UA_t, f->eig_A, gamma * f->pi, f1->UA_t,
                               f1->eig_A, gamma * f1->pi, t->PA, t->QA, t->psi_A, t->KA, c->s_A);
        if (!info) {
            which = "G";
            info = couple_side(c, t->n_g, t->n_g1, f->UG_t, f->eig_G, gamma / f->pi, f1->UG_t,
                               f1->eig_G, gamma / f1->pi, t->PG, t->QG, t->psi_G, t->KG, c->s_G);
        }
        if (info < 0)
            return kfac_error(KFAC_ENUMERIC, "iteration %ld: gamma = %g leaves a damped factor %s "
                                             "of layer %d or %d singular; the block-tridiagonal "
                                             "inverse needs positive damping",
                              k, gamma, which, i + 1, i + 2);
        if (info)
            return kfac_error(KFAC_ENUMERIC, "iteration %ld: the eigendecomposition for the "
                                             "factor %s coupling layers %d and %d failed "
                                             "(LAPACK dsyevd info %d)",
                              k, which, i + 1, i + 2, info);
        kfac_kron_diff_denominators(t->n_a, t->n_g, c->s_A, c->s_G, t->den);
    }
    return 0;
}

static void kfac_curvature_precondition_tridiag(struct kfac_curvature *c,
                                                const struct kfac_net *net, const float *V,
                                                float scale, float *out)
{
    const struct kfac_backend *be = c->be;
    int L = c->n_blocks;
    /* Λ Ξ v: w_i = Σ_{i|i+1}⁻¹ (V_i − Ψ^G V_{i+1} Ψ^Aᵀ) into out, w_ℓ = Σ_ℓ⁻¹ V_ℓ. */
    for (int i = 0; i + 1 < L; i++) {
        const struct kfac_coupling *t = &c->tri[i];
        size_t off = (size_t)(net->layers[i].W - net->params);
        size_t off1 = (size_t)(net->layers[i + 1].W - net->params);
        be->sgemm(KFAC_NO_TRANS, KFAC_NO_TRANS, t->n_g, t->n_a1, t->n_g1, 1.0f, t->psi_G, t->n_g1,
                  V + off1, t->n_a1, 0.0f, c->tmp, t->n_a1);
        memcpy(c->tmp2, V + off, (size_t)t->n_g * t->n_a * sizeof *V);
        be->sgemm(KFAC_NO_TRANS, KFAC_TRANS, t->n_g, t->n_a, t->n_a1, -1.0f, c->tmp, t->n_a1,
                  t->psi_A, t->n_a1, 1.0f, c->tmp2, t->n_a);
        kfac_kron_diff_apply(c->be, t->n_a, t->n_g, t->KA, t->KG, t->den, c->tmp2, scale, out + off,
                             c->tmp);
    }
    size_t last = (size_t)(net->layers[L - 1].W - net->params);
    kfac_curvature_precondition_layer(c, L - 1, V + last, scale, out + last);
    /* Ξᵀ w: z_i = w_i − Ψ^Gᵀ w_{i−1} Ψ^A (Ψ of the coupling i−1, i), from the top down so
     * that w_{i−1} is still in place. */
    for (int i = L - 1; i > 0; i--) {
        const struct kfac_coupling *t = &c->tri[i - 1];
        size_t off0 = (size_t)(net->layers[i - 1].W - net->params);
        size_t off = (size_t)(net->layers[i].W - net->params);
        be->sgemm(KFAC_TRANS, KFAC_NO_TRANS, t->n_g1, t->n_a, t->n_g, 1.0f, t->psi_G, t->n_g1,
                  out + off0, t->n_a, 0.0f, c->tmp, t->n_a);
        be->sgemm(KFAC_NO_TRANS, KFAC_NO_TRANS, t->n_g1, t->n_a1, t->n_a, -1.0f, c->tmp, t->n_a,
                  t->psi_A, t->n_a1, 1.0f, out + off, t->n_a1);
    }
}

/* The couplings' checkpoint items. */
/* A coupling's item of n finite values. */
static void add(struct kfac_state *st, int i, const char *what, enum kfac_state_type type, void *p,
                size_t n)
{
    kfac_curvature_state_add(st, i, what, type, p, n, -DBL_MAX, DBL_MAX);
}

static void tridiag_state(struct kfac_curvature *c, struct kfac_state *st)
{
    for (int i = 0; i < c->n_blocks - 1; i++) {
        struct kfac_coupling *t = &c->tri[i];
        size_t a = (size_t)t->n_a * t->n_a1, g = (size_t)t->n_g * t->n_g1;
        add(st, i, "XA", KFAC_STATE_F64, t->XA, a);
        add(st, i, "XG", KFAC_STATE_F64, t->XG, g);
        add(st, i, "batch_XA", KFAC_STATE_F32, t->batch_XA, a);
        add(st, i, "batch_XG", KFAC_STATE_F32, t->batch_XG, g);
        add(st, i, "QA", KFAC_STATE_F64, t->QA, a);
        add(st, i, "QG", KFAC_STATE_F64, t->QG, g);
        add(st, i, "PA", KFAC_STATE_F64, t->PA, a);
        add(st, i, "PG", KFAC_STATE_F64, t->PG, g);
        add(st, i, "psi_A", KFAC_STATE_F32, t->psi_A, a);
        add(st, i, "psi_G", KFAC_STATE_F32, t->psi_G, g);
        add(st, i, "KA", KFAC_STATE_F32, t->KA, (size_t)t->n_a * t->n_a);
        add(st, i, "KG", KFAC_STATE_F32, t->KG, (size_t)t->n_g * t->n_g);
        add(st, i, "den", KFAC_STATE_F32, t->den, (size_t)t->n_g * t->n_a);
    }
}

static void tridiag_rollback(struct kfac_curvature *c)
{
    for (int i = 0; i + 1 < c->n_blocks; i++) {
        kfac_curvature_swap_kept(&c->tri[i].XA, &c->tri[i].XA_keep);
        kfac_curvature_swap_kept(&c->tri[i].XG, &c->tri[i].XG_keep);
    }
}

static const struct kfac_curvature_variant tridiag = {
    .name = "kfac-tridiag",
    .statistics = kfac_curvature_cross_moments,
    .merge = kfac_curvature_merge_cross,
    .pack = pack_cross,
    .rollback = tridiag_rollback,
    .decompose = kfac_curvature_decompose_tridiag,
    .last_inverse_only = 1, /* the chain inverts every other layer with its coupling */
    .invert = kfac_curvature_invert_tridiag,
    .precondition = kfac_curvature_precondition_tridiag,
    .state = tridiag_state,
    .free = kfac_curvature_free_tridiag,
};

double kfac_curvature_tridiag_bytes(const struct kfac_net *net)
{
    double bytes = 0;
    for (int i = 0; i + 1 < net->n_blocks; i++) {
        const struct kfac_layer *l = net->blocks[i], *l1 = net->blocks[i + 1];
        double xa = (l->d_in + 1.0) * (l1->d_in + 1.0), xg = (double)l->d_out * l1->d_out;
        /* XA, XA_keep, QA, PA in double, batch_XA and psi_A in float; the same for G. */
        bytes += (xa + xg) * (4 * sizeof(double) + 2 * sizeof(float));
    }
    return bytes;
}

void kfac_curvature_reserve_tridiag(struct kfac_curvature *c)
{
    if (c->tri)
        return;
    int L = c->n_blocks;
    size_t max_n = (size_t)c->eig.max_n;
    c->tri = kfac_xcalloc(L > 1 ? (size_t)L - 1 : 1, sizeof *c->tri);
    for (int i = 0; i + 1 < L; i++) {
        struct kfac_coupling *t = &c->tri[i];
        t->n_a = c->f[i].n_a;
        t->n_g = c->f[i].n_g;
        t->n_a1 = c->f[i + 1].n_a;
        t->n_g1 = c->f[i + 1].n_g;
        size_t xa = (size_t)t->n_a * t->n_a1, xg = (size_t)t->n_g * t->n_g1;
        t->XA = kfac_xcalloc(xa, sizeof *t->XA);
        t->XG = kfac_xcalloc(xg, sizeof *t->XG);
        t->XA_keep = kfac_xcalloc(xa, sizeof *t->XA_keep);
        t->XG_keep = kfac_xcalloc(xg, sizeof *t->XG_keep);
        t->batch_XA = kfac_floats_new(xa);
        t->batch_XG = kfac_floats_new(xg);
        t->QA = kfac_xcalloc(xa, sizeof *t->QA);
        t->QG = kfac_xcalloc(xg, sizeof *t->QG);
        t->PA = kfac_xcalloc(xa, sizeof *t->PA);
        t->PG = kfac_xcalloc(xg, sizeof *t->PG);
        t->psi_A = kfac_floats_new(xa);
        t->psi_G = kfac_floats_new(xg);
        t->KA = kfac_floats_new((size_t)t->n_a * t->n_a);
        t->KG = kfac_floats_new((size_t)t->n_g * t->n_g);
        t->den = kfac_floats_new((size_t)t->n_g * t->n_a);
    }
    /* A layer's block and any product of two layers' sizes fit in tmp_n (the largest
     * factor size squared is part of it). */
    c->tmp2 = kfac_floats_new(c->tmp_n);
    c->tri_work = kfac_xmalloc(2 * max_n * max_n * sizeof *c->tri_work);
    c->s_A = kfac_xmalloc(max_n * sizeof *c->s_A);
    c->s_G = kfac_xmalloc(max_n * sizeof *c->s_G);
    c->inv_gamma = 0;
    c->variant = &tridiag;
}
