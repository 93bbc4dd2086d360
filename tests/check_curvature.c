/*
 * check_curvature.c: K-FAC's Kronecker factors against brute force: Ā and G against
 * explicit per-case sums, their exponential averages, the sampled-target G against the
 * exact expectation over the model's predictive distribution, and the damped Kronecker
 * inverse against a dense solve with (Ā + πγI) ⊗ (G + γ/π I), its Cholesky inversions on
 * two threads against those on one. K-FOC's power iterations against a dense SVD, and the
 * Fisher-approximation errors against dense matrices.
 * Block-tridiagonal K-FAC: the inverse of A ⊗ B − C ⊗ D against a dense inverse, the cross
 * factors against brute force, F̂⁻¹ against the dense Ξᵀ Λ Ξ and F̂ against F̃ on the
 * tridiagonal blocks.
 */
#include <cblas.h>
#include "kfac/curvature.h"
#include "kfac/study.h"
#include "kfac/loss.h"
#include "kfac/mat.h"
#include "kfac/optim.h"
#include "kfac/status.h"
#include "testutil.h"

#include <float.h>
#include <lapacke.h>
#include <math.h>

/* E over the first m rows of x (m × n, ld) of x xᵀ, brute force, into out (n × n). */
static void brute_moment(int m, int n, const float *x, int ld, double *out)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int c = 0; c < m; c++)
                s += (double)x[c * ld + i] * x[c * ld + j];
            out[i * n + j] = s / m;
        }
}

/* Σ x_i² over n doubles. */
static double inner_frob(int n, const double *x)
{
    double s = 0;
    for (int i = 0; i < n; i++)
        s += x[i] * x[i];
    return s;
}

/* (1/m) Σ_rows x xᵀ of x (m × n, doubles) into out (n × n). */
static void brute_moment_d(int m, int n, const double *x, double *out)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int c = 0; c < m; c++)
                s += x[c * n + i] * x[c * n + j];
            out[i * n + j] = s / m;
        }
}

static double rel_diff(size_t n, const double *a, const double *b)
{
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        d += (a[i] - b[i]) * (a[i] - b[i]);
        s += b[i] * b[i];
    }
    return sqrt(d / s);
}

START_TEST(factors_match_brute_force)
{
    enum { M = 6 };
    struct kfac_rng r;
    kfac_rng_seed(&r, 1);
    struct kfac_net *net = test_net(M, KFAC_ACT_LINEAR, &r);
    struct kfac_curvature *c = kfac_curvature_new(net);
    float X[M * 3];
    double want[2][2][25], first[2][2][25];
    for (int round = 0; round < 2; round++) {
        fill_uniform(X, M * 3, &r, -2, 2);
        kfac_net_forward(net, M, X);
        fill_uniform(kfac_net_output_grad(net), M * 3, &r, -1, 1);
        kfac_net_backward(net, M, 1.0f, KFAC_GRADS_NONE);
        double eps = kfac_stats_decay(round + 1, 0.95); /* 0, then 1/2 */
        ck_assert_int_eq(kfac_curvature_update(c, net, M, eps, round + 1), 0);
        kfac_curvature_symmetrise(c);
        for (int i = 0; i < 2; i++) {
            const struct kfac_layer *l = &net->layers[i];
            const struct kfac_factors *f = &c->f[i];
            brute_moment(M, f->n_a, l->abar, l->d_in + 1, want[i][0]);
            brute_moment(M, f->n_g, l->g, l->d_out, want[i][1]);
            if (round == 0) {
                memcpy(first[i], want[i], sizeof want[i]);
            } else { /* the exponential average with ε = 1/2 */
                for (int j = 0; j < 25; j++)
                    for (int w = 0; w < 2; w++)
                        want[i][w][j] = 0.5 * first[i][w][j] + 0.5 * want[i][w][j];
            }
            for (int j = 0; j < f->n_a * f->n_a; j++)
                ck_assert_close(f->A[j], want[i][0][j], 1e-5);
            for (int j = 0; j < f->n_g * f->n_g; j++)
                ck_assert_close(f->G[j], want[i][1][j], 1e-5);
        }
    }
    ck_assert_double_eq(kfac_stats_decay(1, 0.95), 0.0);
    ck_assert_double_eq(kfac_stats_decay(4, 0.95), 0.75);
    ck_assert_double_eq(kfac_stats_decay(1000, 0.95), 0.95);
    kfac_curvature_free(c);
    kfac_net_free(net);
}
END_TEST

/* A net of six factors of six sizes (40-90:tanh-20:tanh-70:linear: Ā 41, 91, 21; G 90,
 * 20, 70) for m cases, and two curvatures c[0], c[1] on it. */
static struct kfac_net *six_factors(int m, struct kfac_rng *r, struct kfac_curvature *c[2])
{
    struct kfac_net *net = spec_net("40-90:tanh-20:tanh-70:linear", m, r);
    c[0] = kfac_curvature_new(net);
    c[1] = kfac_curvature_new(net);
    return net;
}

/* A random batch X (m × 40) and output gradient through six_factors()'s net. */
static void six_factor_batch(struct kfac_net *net, int m, float *X, struct kfac_rng *r)
{
    fill_uniform(X, (size_t)m * 40, r, -1, 1);
    kfac_net_forward(net, m, X);
    fill_uniform(kfac_net_output_grad(net), (size_t)m * 70, r, -1, 1);
    kfac_net_backward(net, m, 1.0f, KFAC_GRADS_NONE);
}

/* On two threads the factors' statistics are taken two at a time, each ssyrk on one BLAS
 * thread, largest factor first: the same bits as on one thread, and the brute-force second
 * moments, for six factors of six sizes over two batches (the second averaged in). */
START_TEST(statistics_on_two_threads_are_those_on_one)
{
    enum { M = 150 };
    struct kfac_rng r;
    kfac_rng_seed(&r, 9);
    struct kfac_curvature *c[2];
    struct kfac_net *net = six_factors(M, &r, c);
    const struct kfac_backend *be = net->be;
    int threads = be->threads();
    float *X = kfac_floats_new((size_t)M * 40);
    double *want = kfac_xmalloc(sizeof *want * 91 * 91);
    double *last = kfac_xmalloc(sizeof *last * 91 * 91);
    for (int k = 1; k <= 2; k++) {
        six_factor_batch(net, M, X, &r);
        for (int v = 0; v < 2; v++) {
            if (k == 2) /* the first batch's factors, for the average */
                memcpy(last, c[v]->f[1].A, sizeof *last * 91 * 91);
            be->set_threads(v == 0 ? 1 : 2);
            ck_assert_int_eq(kfac_curvature_update(c[v], net, M, kfac_stats_decay(k, 0.95), k),
                             0);
            be->set_threads(threads);
            kfac_curvature_symmetrise(c[v]);
        }
        for (int i = 0; i < 3; i++) {
            const struct kfac_factors *f = &c[0]->f[i], *g = &c[1]->f[i];
            ck_assert_mem_eq(f->A, g->A, sizeof *f->A * (size_t)f->n_a * f->n_a);
            ck_assert_mem_eq(f->G, g->G, sizeof *f->G * (size_t)f->n_g * f->n_g);
        }
        /* layer 2's Ā (91 × 91), the largest factor, against the brute force */
        const struct kfac_layer *l = net->blocks[1];
        brute_moment(M, 91, l->abar, 91, want);
        for (int j = 0; j < 91 * 91; j++)
            ck_assert_close(c[1]->f[1].A[j], k == 1 ? want[j] : 0.5 * last[j] + 0.5 * want[j],
                            1e-5);
    }
    free(want);
    free(last);
    kfac_floats_free(X);
    for (int v = 0; v < 2; v++)
        kfac_curvature_free(c[v]);
    kfac_net_free(net);
}
END_TEST

START_TEST(nonfinite_statistics_are_rejected)
{
    enum { M = 4 };
    struct kfac_rng r;
    kfac_rng_seed(&r, 2);
    struct kfac_net *net = test_net(M, KFAC_ACT_LINEAR, &r);
    struct kfac_curvature *c = kfac_curvature_new(net);
    kfac_curvature_reserve_tridiag(c); /* so that the cross factors are checked too */
    float X[M * 3];
    fill_uniform(X, M * 3, &r, -1, 1);
    kfac_net_forward(net, M, X);
    fill_uniform(kfac_net_output_grad(net), M * 3, &r, -1, 1);
    kfac_net_backward(net, M, 1.0f, KFAC_GRADS_NONE);
    ck_assert_int_eq(kfac_curvature_update(c, net, M, 0, 1), 0);
    double before[2][2][25];
    for (int i = 0; i < 2; i++) {
        memcpy(before[i][0], c->f[i].A, sizeof(double) * c->f[i].n_a * c->f[i].n_a);
        memcpy(before[i][1], c->f[i].G, sizeof(double) * c->f[i].n_g * c->f[i].n_g);
    }
    double XA = c->tri[0].XA[0], XG = c->tri[0].XG[0];
    /* Each bad factor is named, the first in the order A₁, G₁, A₂, G₂ where several are;
     * whatever threads the merge ran on, no factor changes, and rolling back after the
     * refusal changes nothing either. */
    for (int bad = 0; bad < 3; bad++) {
        kfac_net_forward(net, M, X);
        fill_uniform(kfac_net_output_grad(net), M * 3, &r, -1, 1);
        kfac_net_backward(net, M, 1.0f, KFAC_GRADS_NONE);
        if (bad != 1)
            net->layers[1].g[2] = INFINITY;
        if (bad >= 1)
            net->layers[0].abar[1] = NAN;
        ck_assert_int_eq(kfac_curvature_update(c, net, M, 0.5, 2), KFAC_ENUMERIC);
        ck_assert_ptr_nonnull(strstr(kfac_last_error(), bad ? "iteration 2: layer 1"
                                                            : "iteration 2: layer 2"));
        ck_assert_ptr_nonnull(strstr(kfac_last_error(), bad ? "factor A" : "factor G"));
        kfac_curvature_rollback(c);
        for (int i = 0; i < 2; i++) {
            const struct kfac_factors *f = &c->f[i];
            ck_assert_mem_eq(f->A, before[i][0], sizeof(double) * f->n_a * f->n_a);
            ck_assert_mem_eq(f->G, before[i][1], sizeof(double) * f->n_g * f->n_g);
        }
        ck_assert_double_eq(c->tri[0].XA[0], XA);
        ck_assert_double_eq(c->tri[0].XG[0], XG);
    }
    /* The next good batch merges with the factors of the last good one. */
    kfac_net_forward(net, M, X);
    fill_uniform(kfac_net_output_grad(net), M * 3, &r, -1, 1);
    kfac_net_backward(net, M, 1.0f, KFAC_GRADS_NONE);
    ck_assert_int_eq(kfac_curvature_update(c, net, M, 0.5, 2), 0);
    kfac_curvature_symmetrise(c);
    double want[25];
    brute_moment(M, c->f[1].n_g, net->layers[1].g, net->layers[1].d_out, want);
    for (int j = 0; j < c->f[1].n_g * c->f[1].n_g; j++) {
        int row = j / c->f[1].n_g, col = j % c->f[1].n_g;
        double old = row <= col ? before[1][1][j] : before[1][1][col * c->f[1].n_g + row];
        ck_assert_close(c->f[1].G[j], 0.5 * old + 0.5 * want[j], 1e-5);
    }
    kfac_curvature_free(c);
    kfac_net_free(net);
}
END_TEST

/* G of the exact expectation E_t[g gᵀ] for Bernoulli outputs: F_R = diag(y(1−y)), so
 * G = (1/m) Σ_c Σ_j y_cj(1−y_cj) b_cj b_cjᵀ with b_cj the backward pass of e_j. */
static void exact_G(struct kfac_net *net, int m, int layer, double *G)
{
    int n = net->d_out, d = net->layers[layer].d_out;
    const float *y = kfac_net_output(net);
    memset(G, 0, sizeof(double) * (size_t)(d * d));
    for (int j = 0; j < n; j++) {
        float *go = kfac_net_output_grad(net);
        for (int c = 0; c < m; c++)
            for (int o = 0; o < n; o++)
                go[c * n + o] = o == j ? sqrtf(y[c * n + j] * (1 - y[c * n + j])) : 0.0f;
        kfac_net_backward(net, m, 1.0f, KFAC_GRADS_NONE);
        const float *g = net->layers[layer].g;
        for (int c = 0; c < m; c++)
            for (int a = 0; a < d; a++)
                for (int b = 0; b < d; b++)
                    G[a * d + b] += (double)g[c * d + a] * g[c * d + b] / m;
    }
}

START_TEST(sampled_G_converges_to_exact)
{
    enum { M = 4, REPS = 4000 };
    struct kfac_rng r;
    kfac_rng_seed(&r, 3);
    struct kfac_net *net = test_net(M * REPS, KFAC_ACT_LOGISTIC, &r);
    float *X = kfac_floats_new((size_t)M * REPS * 3);
    fill_uniform(X, M * 3, &r, -2, 2);
    for (int rep = 1; rep < REPS; rep++) /* the same four cases, repeated */
        memcpy(X + rep * M * 3, X, sizeof(float) * M * 3);
    kfac_net_forward(net, M * REPS, X);
    double exact[2][16];
    for (int i = 0; i < 2; i++)
        exact_G(net, M, i, exact[i]);
    double err[2][2];
    const int samples[2] = {10, REPS};
    for (int s = 0; s < 2; s++) {
        int m = M * samples[s];
        struct kfac_curvature *c = kfac_curvature_new(net);
        kfac_net_forward(net, m, X);
        kfac_loss_sample_grad(KFAC_LOSS_BERNOULLI, m, 3, kfac_net_output(net), kfac_rng_u64(&r),
                              0, 1, kfac_net_output_grad(net));
        kfac_net_backward(net, m, 1.0f, KFAC_GRADS_NONE);
        ck_assert_int_eq(kfac_curvature_update(c, net, m, 0, 1), 0);
        kfac_curvature_symmetrise(c);
        for (int i = 0; i < 2; i++)
            err[s][i] = rel_diff((size_t)(net->layers[i].d_out * net->layers[i].d_out), c->f[i].G,
                                 exact[i]);
        kfac_curvature_free(c);
    }
    for (int i = 0; i < 2; i++) {
        ck_assert_msg(err[1][i] < 0.05, "layer %d: sampled G is %.3f from exact", i + 1,
                      err[1][i]);
        ck_assert_msg(err[1][i] < err[0][i] / 3, "layer %d: error %.3f with 10 samples, %.3f "
                                                 "with %d", i + 1, err[0][i], err[1][i], REPS);
    }
    kfac_floats_free(X);
    kfac_net_free(net);
}
END_TEST

/* The dense (n_g·n_a)² matrix of V ↦ Gd V Ad (row-major vec), solved for V. */
static void dense_solve(int ng, int na, const double *Gd, const double *Ad, const float *V,
                        double *x)
{
    int n = ng * na;
    double *K = malloc(sizeof(double) * (size_t)n * n);
    lapack_int *ipiv = malloc(sizeof(lapack_int) * (size_t)n);
    for (int i = 0; i < ng; i++)
        for (int j = 0; j < na; j++)
            for (int k = 0; k < ng; k++)
                for (int l = 0; l < na; l++)
                    K[(size_t)(i * na + j) * n + k * na + l] = Gd[i * ng + k] * Ad[l * na + j];
    for (int i = 0; i < n; i++)
        x[i] = V[i];
    ck_assert_int_eq(LAPACKE_dgesv(LAPACK_ROW_MAJOR, n, 1, K, n, ipiv, x, 1), 0);
    free(K);
    free(ipiv);
}

/* The damped Kronecker inverse from eigendecompositions (method 0) or by Cholesky
 * inversions in double (1) or in float (2), against the dense solve. */
static void check_precondition(enum kfac_pi_norm norm, int method)
{
    enum { M = 20 };
    struct kfac_rng r;
    kfac_rng_seed(&r, 4);
    struct kfac_net *net = test_net(M, KFAC_ACT_LINEAR, &r);
    struct kfac_curvature *c = kfac_curvature_new(net);
    if (method)
        kfac_curvature_use_cholesky(c, method == 2);
    float X[M * 3];
    for (int k = 1; k <= 3; k++) {
        fill_uniform(X, M * 3, &r, -1, 1);
        kfac_net_forward(net, M, X);
        fill_uniform(kfac_net_output_grad(net), M * 3, &r, -1, 1);
        kfac_net_backward(net, M, 1.0f, KFAC_GRADS_NONE);
        ck_assert_int_eq(kfac_curvature_update(c, net, M, kfac_stats_decay(k, 0.95), k), 0);
    }
    ck_assert_int_eq(kfac_curvature_decompose(c, norm, 3), 0);
    float *V = kfac_floats_new(net->n_params), *out = kfac_floats_new(net->n_params);
    fill_uniform(V, net->n_params, &r, -1, 1);
    const double gamma = 0.3;
    ck_assert_int_eq(kfac_curvature_invert(c, gamma, 3), 0);
    kfac_curvature_precondition(c, net, V, -2.0f, out);
    for (int i = 0; i < 2; i++) {
        const struct kfac_factors *f = &c->f[i];
        int na = f->n_a, ng = f->n_g;
        /* π straight from its definition. */
        double ta = 0, tg = 0;
        for (int j = 0; j < na * na; j++)
            ta += norm == KFAC_PI_TRACE ? (j % (na + 1) == 0 ? f->A[j] : 0) : f->A[j] * f->A[j];
        for (int j = 0; j < ng * ng; j++)
            tg += norm == KFAC_PI_TRACE ? (j % (ng + 1) == 0 ? f->G[j] : 0) : f->G[j] * f->G[j];
        double pi = norm == KFAC_PI_TRACE ? sqrt((ta / na) / (tg / ng))
                                          : sqrt((sqrt(ta) / sqrt((double)na)) /
                                                 (sqrt(tg) / sqrt((double)ng)));
        ck_assert_close(f->pi, pi, 1e-12);
        double Ad[25], Gd[16], x[20];
        for (int j = 0; j < na * na; j++)
            Ad[j] = f->A[j] + (j % (na + 1) == 0 ? gamma * pi : 0);
        for (int j = 0; j < ng * ng; j++)
            Gd[j] = f->G[j] + (j % (ng + 1) == 0 ? gamma / pi : 0);
        size_t off = (size_t)(net->layers[i].W - net->params);
        dense_solve(ng, na, Gd, Ad, V + off, x);
        for (int j = 0; j < ng * na; j++)
            ck_assert_close(out[off + j], -2.0 * x[j], 1e-4);
    }
    kfac_floats_free(V);
    kfac_floats_free(out);
    kfac_curvature_free(c);
    kfac_net_free(net);
}

START_TEST(precondition_matches_dense_solve_trace)
{
    check_precondition(KFAC_PI_TRACE, _i);
}
END_TEST

START_TEST(precondition_matches_dense_solve_frobenius)
{
    check_precondition(KFAC_PI_FROBENIUS, _i);
}
END_TEST

/* A random dense layer's per-case ā (K × n_a, 1 last) and g (K × n_g). */
static void random_block(int K, int n_a, int n_g, struct kfac_rng *r, double *A, double *G)
{
    for (int k = 0; k < K; k++) {
        for (int j = 0; j < n_a; j++)
            A[k * n_a + j] = j == n_a - 1 ? 1.0 : kfac_rng_normal(r);
        for (int j = 0; j < n_g; j++)
            G[k * n_g + j] = kfac_rng_normal(r);
    }
}

/* F (n_a·n_g square) = (1/K) Σ vec(X_k) vec(X_k)ᵀ, X_k = g_k ā_kᵀ, for ā_k, g_k the rows of
 * A (K × n_a) and G (K × n_g); vec by columns: index j·n_g + i. */
static void dense_fisher(int K, int n_a, int n_g, const double *A, const double *G, double *F)
{
    int D = n_a * n_g;
    double x[64];
    memset(F, 0, sizeof(double) * (size_t)D * D);
    for (int k = 0; k < K; k++) {
        for (int j = 0; j < n_a; j++)
            for (int i = 0; i < n_g; i++)
                x[j * n_g + i] = G[k * n_g + i] * A[k * n_a + j];
        for (int p = 0; p < D; p++)
            for (int q = 0; q < D; q++)
                F[p * D + q] += x[p] * x[q] / K;
    }
}

/* A random symmetric positive definite n × n matrix. */
static void random_spd(int n, struct kfac_rng *r, double *X)
{
    double B[64];
    for (int i = 0; i < n * n; i++)
        B[i] = kfac_rng_normal(r);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double s = i == j;
            for (int k = 0; k < n; k++)
                s += B[i * n + k] * B[j * n + k];
            X[i * n + j] = s;
        }
}

/* A factor whose rounding noise is below −γπ (an eigenvalue of −1e-3 against a damping
 * of 1e-4): its damped factor is not positive definite, so the Cholesky method, in double
 * (c[1]) or in float (c[2]), inverts it through its eigendecomposition, its eigenvalues
 * clipped at 0, and forms what the eigen method (c[0]) forms; the other factor, positive
 * definite, is still inverted by Cholesky. */
START_TEST(cholesky_falls_back_on_an_indefinite_factor)
{
    enum { M = 4 };
    struct kfac_rng r;
    kfac_rng_seed(&r, 5);
    struct kfac_net *net = test_net(M, KFAC_ACT_LINEAR, &r);
    struct kfac_curvature *c[3] = {kfac_curvature_new(net), kfac_curvature_new(net),
                                   kfac_curvature_new(net)};
    kfac_curvature_use_cholesky(c[1], 0);
    kfac_curvature_use_cholesky(c[2], 1);
    /* Layer 1's Ā (4 × 4) = Q diag(−1e-3, 0.5, 1, 2) Qᵀ; its G (4 × 4) positive definite. */
    double Q[16], tau[4], A[16], G[16];
    const double ev[4] = {-1e-3, 0.5, 1, 2};
    for (int i = 0; i < 16; i++)
        Q[i] = kfac_rng_normal(&r);
    ck_assert_int_eq(LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, 4, 4, Q, 4, tau), 0);
    ck_assert_int_eq(LAPACKE_dorgqr(LAPACK_ROW_MAJOR, 4, 4, 4, Q, 4, tau), 0);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            A[i * 4 + j] = 0;
            for (int q = 0; q < 4; q++)
                A[i * 4 + j] += Q[i * 4 + q] * ev[q] * Q[j * 4 + q];
        }
    random_spd(4, &r, G);
    for (int v = 0; v < 3; v++) {
        ck_assert_int_eq(c[v]->f[0].n_a, 4);
        ck_assert_int_eq(c[v]->f[0].n_g, 4);
        memcpy(c[v]->f[0].A, A, sizeof A);
        memcpy(c[v]->f[0].G, G, sizeof G);
        ck_assert_int_eq(kfac_curvature_decompose(c[v], KFAC_PI_TRACE, 1), 0);
        /* γ so small against π that γπ = 1e-4 < 1e-3. */
        ck_assert_int_eq(kfac_curvature_invert(c[v], 1e-4 / c[v]->f[0].pi, 1), 0);
    }
    /* The eigen method's inverse, by hand: Q diag(1/(max(ev, 0) + 1e-4)) Qᵀ. */
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            double want = 0;
            for (int q = 0; q < 4; q++)
                want += Q[i * 4 + q] * Q[j * 4 + q] / (fmax(ev[q], 0) + 1e-4);
            for (int v = 0; v < 3; v++)
                ck_assert_close(c[v]->f[0].A_inv[i * 4 + j], want, 1e-5);
        }
    for (int j = 0; j < 16; j++) {
        ck_assert_close(c[1]->f[0].G_inv[j], c[0]->f[0].G_inv[j], 1e-6);
        ck_assert_close(c[2]->f[0].G_inv[j], c[0]->f[0].G_inv[j], 1e-5);
    }
    for (int v = 0; v < 3; v++)
        kfac_curvature_free(c[v]);
    kfac_net_free(net);
}
END_TEST

/* 1 when every layer's damped inverses of a and b are the same to the bit. */
static int same_inverses(const struct kfac_curvature *a, const struct kfac_curvature *b)
{
    for (int i = 0; i < a->n_blocks; i++) {
        const struct kfac_factors *f = &a->f[i], *g = &b->f[i];
        if (memcmp(f->A_inv, g->A_inv, sizeof(float) * (size_t)f->n_a * f->n_a) ||
            memcmp(f->G_inv, g->G_inv, sizeof(float) * (size_t)f->n_g * f->n_g))
            return 0;
    }
    return 1;
}

/* The Cholesky method on two threads inverts two factors at once, each on one BLAS
 * thread: the same bits as on one thread, for factors of six sizes, with one of them
 * indefinite (shifted by its mean eigenvalue before each decomposition), which both
 * invert through its eigendecomposition; at three decompositions in turn. _i: in double
 * (0) or in float (1). */
START_TEST(cholesky_inverses_on_two_threads_are_those_on_one)
{
    enum { M = 200 };
    struct kfac_rng r;
    kfac_rng_seed(&r, 8);
    struct kfac_curvature *c[2];
    struct kfac_net *net = six_factors(M, &r, c);
    const struct kfac_backend *be = net->be;
    int threads = be->threads();
    float *X = kfac_floats_new((size_t)M * 40);
    for (int k = 1; k <= 4; k++) {
        six_factor_batch(net, M, X, &r);
        for (int v = 0; v < 2; v++) {
            if (k == 1)
                kfac_curvature_use_cholesky(c[v], _i);
            ck_assert_int_eq(kfac_curvature_update(c[v], net, M, kfac_stats_decay(k, 0.95), k),
                             0);
            if (k >= 2) { /* layer 2's G made indefinite, G − (tr G / n) I; then inverted */
                struct kfac_factors *f = &c[v]->f[1];
                double mean = 0;
                for (int i = 0; i < f->n_g; i++)
                    mean += f->G[(size_t)i * f->n_g + i] / f->n_g;
                for (int i = 0; i < f->n_g; i++)
                    f->G[(size_t)i * f->n_g + i] -= mean;
                ck_assert_int_eq(kfac_curvature_decompose(c[v], KFAC_PI_TRACE, k), 0);
                be->set_threads(v == 0 ? 1 : 2);
                ck_assert_int_eq(kfac_curvature_invert(c[v], 0.05, k), 0);
                be->set_threads(threads);
            }
        }
        if (k >= 2) {
            ck_assert_msg(same_inverses(c[0], c[1]), "iteration %d", k);
            /* the indefinite factor took the eigen route: its damped factor was refused */
            ck_assert_int_gt(c[1]->chol_info[3], 0);
            for (int j = 0; j < 6; j++)
                ck_assert_int_eq(c[1]->chol_info[j] != 0, j == 3);
        }
    }
    kfac_floats_free(X);
    for (int v = 0; v < 2; v++)
        kfac_curvature_free(c[v]);
    kfac_net_free(net);
}
END_TEST

/* The largest |x_i − y_i| over the largest |y_i|, of n each. */
static double max_relative_gap(size_t n, const float *x, const float *y)
{
    double gap = 0, top = 0;
    for (size_t i = 0; i < n; i++) {
        gap = fmax(gap, fabs((double)x[i] - y[i]));
        top = fmax(top, fabs((double)y[i]));
    }
    return gap / top;
}

/* The condition number of X + d I for a symmetric X (n × n) with eigenvalues ≥ −d. */
static double damped_condition(int n, const double *X, double d)
{
    double *a = malloc(sizeof(double) * (size_t)n * n), *w = malloc(sizeof(double) * (size_t)n);
    memcpy(a, X, sizeof(double) * (size_t)n * n);
    ck_assert_int_eq(LAPACKE_dsyev(LAPACK_ROW_MAJOR, 'N', 'U', n, a, n, w), 0);
    double cond = (w[n - 1] + d) / (fmax(w[0], 0) + d);
    free(a);
    free(w);
    return cond;
}

/* Float Cholesky inversions (optimizer.inverse_precision = float) against double ones, for
 * factors of six sizes from 30 cases (singular, as a few cases' statistics of a wide layer
 * are) and a small and a moderate γ: each inverse within two float epsilons times its
 * damped factor's condition number of the double one, relative to its largest element, and
 * not the double one itself. */
START_TEST(float_cholesky_inverses_are_double_ones_to_float_precision)
{
    enum { M = 30 };
    struct kfac_rng r;
    kfac_rng_seed(&r, 9);
    struct kfac_curvature *c[2];
    struct kfac_net *net = six_factors(M, &r, c);
    float *X = kfac_floats_new((size_t)M * 40);
    for (int v = 0; v < 2; v++)
        kfac_curvature_use_cholesky(c[v], v);
    for (int k = 1; k <= 3; k++) {
        six_factor_batch(net, M, X, &r);
        for (int v = 0; v < 2; v++)
            ck_assert_int_eq(kfac_curvature_update(c[v], net, M, kfac_stats_decay(k, 0.95), k),
                             0);
    }
    for (int v = 0; v < 2; v++)
        ck_assert_int_eq(kfac_curvature_decompose(c[v], KFAC_PI_TRACE, 3), 0);
    const double gammas[2] = {1e-3, 0.1};
    for (int t = 0; t < 2; t++) {
        for (int v = 0; v < 2; v++)
            ck_assert_int_eq(kfac_curvature_invert(c[v], gammas[t], 3), 0);
        ck_assert(!same_inverses(c[0], c[1]));
        for (int j = 0; j < 6; j++) {
            const struct kfac_factors *f = &c[0]->f[j / 2];
            int n = j % 2 ? f->n_g : f->n_a;
            double d = j % 2 ? gammas[t] / f->pi : gammas[t] * f->pi;
            double cond = damped_condition(n, j % 2 ? f->G_dec : f->A_dec, d);
            ck_assert_int_eq(c[1]->chol_info[j], 0);
            double gap = max_relative_gap((size_t)n * n, j % 2 ? c[1]->f[j / 2].G_inv
                                                                : c[1]->f[j / 2].A_inv,
                                          j % 2 ? f->G_inv : f->A_inv);
            ck_assert_msg(gap <= 2 * FLT_EPSILON * cond,
                          "gamma %g, factor %d (n = %d): gap %.3g, condition number %.3g",
                          gammas[t], j, n, gap, cond);
        }
    }
    kfac_floats_free(X);
    for (int v = 0; v < 2; v++)
        kfac_curvature_free(c[v]);
    kfac_net_free(net);
}
END_TEST

/* Layer 1's decomposition (Cholesky: the kept Ā; else Ā's eigenvalues) times s. */
static void scale_decomposition(struct kfac_curvature *c, double s)
{
    struct kfac_factors *f = &c->f[0];
    int n = c->cholesky ? f->n_a * f->n_a : f->n_a;
    double *x = c->cholesky ? f->A_dec : f->eig_A;
    for (int j = 0; j < n; j++)
        x[j] *= s;
}

/* The kept inverses of other γ (kfac_curvature_keep_inverses()) against a twin that keeps
 * none: the same to the bit for every γ asked in turn, formed once (a decomposition
 * scaled behind the curvature's back leaves the kept ones as they were), given up oldest
 * first without handing out another γ's, and forgotten at the next decomposition. _i:
 * eigendecompositions (0) or Cholesky (1). */
START_TEST(kept_inverses_are_those_formed_anew)
{
    enum { M = 20 };
    struct kfac_rng r;
    kfac_rng_seed(&r, 6);
    struct kfac_net *net = test_net(M, KFAC_ACT_LINEAR, &r);
    struct kfac_curvature *c[2] = {kfac_curvature_new(net), kfac_curvature_new(net)};
    for (int v = 0; v < 2 && _i; v++)
        kfac_curvature_use_cholesky(c[v], 0);
    kfac_curvature_keep_inverses(c[1], KFAC_SPARE_INVERSES);
    ck_assert_int_eq(c[1]->n_spare, 2);
    float X[M * 3];
    for (int k = 1; k <= 4; k++) {
        fill_uniform(X, M * 3, &r, -1, 1);
        kfac_net_forward(net, M, X);
        fill_uniform(kfac_net_output_grad(net), M * 3, &r, -1, 1);
        kfac_net_backward(net, M, 1.0f, KFAC_GRADS_NONE);
        for (int v = 0; v < 2; v++)
            ck_assert_int_eq(kfac_curvature_update(c[v], net, M, kfac_stats_decay(k, 0.95), k),
                             0);
        if (k == 2 || k == 4) { /* two decompositions, each asked for the same γ */
            for (int v = 0; v < 2; v++)
                ck_assert_int_eq(kfac_curvature_decompose(c[v], KFAC_PI_TRACE, k), 0);
            for (int j = 0; j < 3; j++) {
                const double g[3] = {0.5, 0.2, 0.8};
                for (int v = 0; v < 2; v++)
                    ck_assert_int_eq(kfac_curvature_invert(c[v], g[j], k), 0);
                ck_assert(same_inverses(c[0], c[1]));
            }
        }
        if (k == 2) {
            /* Kept: asked again with the decomposition scaled, the three are as formed. */
            scale_decomposition(c[1], 2.0);
            for (int j = 0; j < 3; j++) {
                const double g[3] = {0.2, 0.5, 0.8};
                for (int v = 0; v < 2; v++)
                    ck_assert_int_eq(kfac_curvature_invert(c[v], g[j], k), 0);
                ck_assert(same_inverses(c[0], c[1]));
            }
            /* A γ not kept is formed from the scaled decomposition: not the twin's. */
            for (int v = 0; v < 2; v++)
                ck_assert_int_eq(kfac_curvature_invert(c[v], 0.9, k), 0);
            ck_assert(!same_inverses(c[0], c[1]));
            /* Decomposed again (which forgets what was kept of the scaled one), five γ
             * through two spare sets: each one asked is its own. */
            for (int v = 0; v < 2; v++)
                ck_assert_int_eq(kfac_curvature_decompose(c[v], KFAC_PI_TRACE, k), 0);
            for (int j = 0; j < 8; j++) {
                const double g[8] = {0.3, 0.9, 0.5, 0.2, 0.3, 0.8, 0.5, 0.3};
                for (int v = 0; v < 2; v++)
                    ck_assert_int_eq(kfac_curvature_invert(c[v], g[j], k), 0);
                ck_assert_msg(same_inverses(c[0], c[1]), "gamma %g (the %d-th asked)", g[j], j);
            }
        }
    }
    for (int v = 0; v < 2; v++)
        kfac_curvature_free(c[v]);
    kfac_net_free(net);
}
END_TEST

START_TEST(fisher_errors_match_dense_matrices)
{
    enum { K = 5, NA = 4, NG = 3, D = NA * NG };
    struct kfac_rng r;
    kfac_rng_seed(&r, 50);
    double A[K * NA], G[K * NG], F[D * D], Ab[NA * NA], Gb[NG * NG];
    random_block(K, NA, NG, &r, A, G);
    dense_fisher(K, NA, NG, A, G, F);
    brute_moment_d(K, NA, A, Ab);
    brute_moment_d(K, NG, G, Gb);
    double *work = malloc(sizeof(double) * kfac_fisher_work_size(K, 1, NA, NG));
    struct kfac_fisher_block b;
    kfac_fisher_block_init(&b, kfac_backend_cpu(), K, 1, NA, A, NG, G, NULL, work);
    double norm2 = 0, diag_err = 0;
    for (int p = 0; p < D * D; p++) {
        norm2 += F[p] * F[p];
        if (p % (D + 1))
            diag_err += F[p] * F[p];
    }
    ck_assert_close(b.norm2, norm2, 1e-12);
    ck_assert_close(kfac_fisher_error_diag(&b, work), sqrt(diag_err / norm2), 1e-10);
    /* L ⊗ R for K-FAC's batch factors and for an arbitrary symmetric pair. */
    double L[NA * NA], R[NG * NG];
    random_spd(NA, &r, L);
    random_spd(NG, &r, R);
    const double *Ls[2] = {Ab, L}, *Rs[2] = {Gb, R};
    for (int t = 0; t < 2; t++) {
        double err = 0;
        for (int j = 0; j < NA; j++)
            for (int i = 0; i < NG; i++)
                for (int l = 0; l < NA; l++)
                    for (int k = 0; k < NG; k++) {
                        double d = F[(j * NG + i) * D + l * NG + k] - Ls[t][j * NA + l] * Rs[t][i * NG + k];
                        err += d * d;
                    }
        ck_assert_close(kfac_fisher_error_kron(&b, Ls[t], Rs[t], work), sqrt(err / norm2), 1e-10);
    }
    free(work);
}
END_TEST

/* _i: the normalised side (enum kfac_kfoc_normalise). */
START_TEST(kron_fit_is_the_best_rank_one_approximation)
{
    enum { T = 6, NL = 3, NR = 4 };
    struct kfac_rng r;
    kfac_rng_seed(&r, 51);
    double terms_L[T][NL * NL], terms_R[T][NR * NR];
    const double *Ls[T], *Rs[T];
    for (int k = 0; k < T; k++) {
        random_spd(NL, &r, terms_L[k]);
        random_spd(NR, &r, terms_R[k]);
        Ls[k] = terms_L[k];
        Rs[k] = terms_R[k];
    }
    double L[NL * NL], R[NR * NR], work[NR * NR];
    struct kfac_kfoc_info info;
    kfac_kron_fit(kfac_backend_cpu(), T, NL, NR, Ls, Rs, _i, 100, 1e-12, 0, L, R, work, &info);
    ck_assert(info.converged);
    ck_assert_int_le(info.iterations, 100);
    /* M = Σ vec(L_k) vec(R_k)ᵀ and its leading singular triple. */
    double M[NL * NL * NR * NR] = {0}, S[NL * NL], U[NL * NL * NL * NL], VT[NR * NR * NR * NR],
           superb[NL * NL];
    for (int k = 0; k < T; k++)
        for (int p = 0; p < NL * NL; p++)
            for (int q = 0; q < NR * NR; q++)
                M[p * NR * NR + q] += Ls[k][p] * Rs[k][q];
    ck_assert_int_eq(LAPACKE_dgesvd(LAPACK_ROW_MAJOR, 'A', 'A', NL * NL, NR * NR, M, NR * NR, S, U,
                                    NL * NL, VT, NR * NR, superb),
                     0);
    for (int p = 0; p < NL * NL; p++)
        for (int q = 0; q < NR * NR; q++)
            ck_assert_close(L[p] * R[q], S[0] * U[p * NL * NL] * VT[q], 1e-9);
    ck_assert_close(sqrt(_i ? inner_frob(NR * NR, R) : inner_frob(NL * NL, L)), 1.0, 1e-12);
    /* Started from a positive definite L, the factors of PSD terms come out PSD. */
    ck_assert_double_gt(L[0], 0);
    ck_assert_double_gt(R[0], 0);
}
END_TEST

/* _i: the normalised side. */
START_TEST(kfoc_fit_equals_the_explicit_fit)
{
    enum { K = 7, NA = 4, NG = 3 };
    struct kfac_rng r;
    kfac_rng_seed(&r, 52);
    double A[K * NA], G[K * NG], terms_L[K][NA * NA], terms_R[K][NG * NG];
    const double *Ls[K], *Rs[K];
    random_block(K, NA, NG, &r, A, G);
    for (int k = 0; k < K; k++) {
        for (int i = 0; i < NA; i++)
            for (int j = 0; j < NA; j++)
                terms_L[k][i * NA + j] = A[k * NA + i] * A[k * NA + j] / K;
        for (int i = 0; i < NG; i++)
            for (int j = 0; j < NG; j++)
                terms_R[k][i * NG + j] = G[k * NG + i] * G[k * NG + j];
        Ls[k] = terms_L[k];
        Rs[k] = terms_R[k];
    }
    double L1[NA * NA], R1[NG * NG], L2[NA * NA], R2[NG * NG], small[NA * NA];
    double *work = malloc(sizeof(double) * kfac_fisher_work_size(K, 1, NA, NG));
    struct kfac_kfoc_info i1, i2;
    kfac_kron_fit(kfac_backend_cpu(), K, NA, NG, Ls, Rs, _i, 100, 1e-10, 0, L1, R1, small, &i1);
    struct kfac_fisher_block b;
    kfac_fisher_block_init(&b, kfac_backend_cpu(), K, 1, NA, A, NG, G, NULL, work);
    kfac_kfoc_fit(&b, _i, 100, 1e-10, 0, L2, R2, work, &i2);
    ck_assert(i2.converged);
    ck_assert_int_eq(i1.iterations, i2.iterations);
    for (int i = 0; i < NA * NA; i++)
        ck_assert_close(L2[i], L1[i], 1e-9);
    for (int i = 0; i < NG * NG; i++)
        ck_assert_close(R2[i], R1[i], 1e-9);
    free(work);
}
END_TEST

START_TEST(kfoc_error_is_never_above_kfac)
{
    for (int seed = 0; seed < 5; seed++) {
        enum { K = 40, NA = 9, NG = 6 };
        struct kfac_rng r;
        kfac_rng_seed(&r, 60 + seed);
        double A[K * NA], G[K * NG], Ab[NA * NA], Gb[NG * NG], L[NA * NA], R[NG * NG];
        random_block(K, NA, NG, &r, A, G);
        for (int k = 0; k < K * NG; k += NG) /* correlate g with ā, as in a real layer */
            G[k] += 2 * A[k / NG * NA];
        brute_moment_d(K, NA, A, Ab);
        brute_moment_d(K, NG, G, Gb);
        double *work = malloc(sizeof(double) * kfac_fisher_work_size(K, 1, NA, NG));
        struct kfac_fisher_block b;
        kfac_fisher_block_init(&b, kfac_backend_cpu(), K, 1, NA, A, NG, G, NULL, work);
        struct kfac_kfoc_info info;
        kfac_kfoc_fit(&b, seed % 2, 100, 1e-5, 0, L, R, work, &info);
        double e_kfoc = kfac_fisher_error_kron(&b, L, R, work);
        double e_kfac = kfac_fisher_error_kron(&b, Ab, Gb, work);
        ck_assert_msg(e_kfoc <= e_kfac + 1e-9, "seed %d: K-FOC %.6f, K-FAC %.6f", seed, e_kfoc,
                      e_kfac);
        ck_assert_double_gt(e_kfac, 0);
        free(work);
    }
}
END_TEST

/* The best Kronecker product L ⊗ R for M (nl² × nr², row-major, M = Σ vec(L_k) vec(R_k)ᵀ)
 * from a dense SVD, σ₁ u₁ v₁ᵀ: the factor of side `side` (0: L, 1: R) is the unit singular
 * vector, the other carries σ₁, signed so that tr L > 0. */
static void dense_kron_factors(int nl, int nr, double *M, int side, double *L, double *R)
{
    int p2 = nl * nl, q2 = nr * nr, kmin = p2 < q2 ? p2 : q2;
    double *S = malloc(sizeof(double) * (size_t)kmin), *U = malloc(sizeof(double) * p2 * p2),
           *VT = malloc(sizeof(double) * q2 * q2), *superb = malloc(sizeof(double) * kmin);
    ck_assert_int_eq(LAPACKE_dgesvd(LAPACK_ROW_MAJOR, 'A', 'A', p2, q2, M, q2, S, U, p2, VT, q2,
                                    superb),
                     0);
    double tr = 0;
    for (int i = 0; i < nl; i++)
        tr += U[(i * nl + i) * p2];
    double sign = tr < 0 ? -1 : 1;
    for (int p = 0; p < p2; p++)
        L[p] = sign * (side ? S[0] : 1) * U[p * p2];
    for (int q = 0; q < q2; q++)
        R[q] = sign * (side ? 1 : S[0]) * VT[q];
    free(S);
    free(U);
    free(VT);
    free(superb);
}

/* M (na² × ng²) = (1/n) Σ_k vec(ā_k ā_kᵀ) vec(g_k g_kᵀ)ᵀ over n cases of ā (ld na), g (ld ng). */
static void rearranged_block(int n, int na, int ng, const double *A, const double *G, double *M)
{
    int q2 = ng * ng;
    memset(M, 0, sizeof(double) * (size_t)na * na * q2);
    for (int k = 0; k < n; k++)
        for (int a = 0; a < na * na; a++)
            for (int b = 0; b < q2; b++)
                M[a * q2 + b] += A[k * na + a / na] * A[k * na + a % na] * G[k * ng + b / ng] *
                                 G[k * ng + b % ng] / n;
}

/* curvature = kfoc: the first update is the batch's best Kronecker factors, the second the
 * best Kronecker approximation of ε L̂₁ ⊗ R̂₁ + (1−ε) L₂ ⊗ R₂ (K-FOC_running), both against
 * dense SVDs of the rearranged Fisher blocks built case by case; _i: the normalised side,
 * whose factor must have unit norm. */
START_TEST(kfoc_update_is_the_running_fit)
{
    int side = _i; /* the normalised side */
    enum { M = 6, MAXP = 25 * 16 };
    struct kfac_rng r;
    kfac_rng_seed(&r, 70);
    struct kfac_net *net = test_net(M, KFAC_ACT_LINEAR, &r);
    struct kfac_curvature *c = kfac_curvature_new(net);
    kfac_curvature_use_kfoc(c, net, M, 0, KFAC_KFOC_GRADIENT, 100, 1e-5);
    float X[M * 3];
    static double want_L[2][25], want_R[2][16], bL[25], bR[16], M_[MAXP];
    double ad[M * 5], gd[M * 4];
    for (int round = 0; round < 2; round++) {
        fill_uniform(X, M * 3, &r, -2, 2);
        kfac_net_forward(net, M, X);
        fill_uniform(kfac_net_output_grad(net), M * 3, &r, -1, 1);
        kfac_net_backward(net, M, 1.0f, KFAC_GRADS_NONE);
        double eps = round == 0 ? 0.0 : 0.3;
        struct kfac_kfoc_info info;
        ck_assert_int_eq(kfac_curvature_update_kfoc(c, net, M, eps, round + 1, side, 500, 1e-13,
                                                    &info),
                         0);
        ck_assert(info.converged);
        for (int i = 0; i < 2; i++) {
            const struct kfac_layer *l = &net->layers[i];
            const struct kfac_factors *f = &c->f[i];
            int na = f->n_a, ng = f->n_g, p2 = na * na, q2 = ng * ng;
            for (int k = 0; k < M * na; k++)
                ad[k] = l->abar[k];
            for (int k = 0; k < M * ng; k++)
                gd[k] = l->g[k];
            rearranged_block(M, na, ng, ad, gd, M_);
            dense_kron_factors(na, ng, M_, side, bL, bR);
            if (round == 0) {
                memcpy(want_L[i], bL, sizeof bL);
                memcpy(want_R[i], bR, sizeof bR);
            } else {
                for (int a = 0; a < p2; a++)
                    for (int b = 0; b < q2; b++)
                        M_[a * q2 + b] = eps * want_L[i][a] * want_R[i][b] + (1 - eps) * bL[a] * bR[b];
                dense_kron_factors(na, ng, M_, side, want_L[i], want_R[i]);
            }
            double scale = 0;
            for (int a = 0; a < p2; a++)
                for (int b = 0; b < q2; b++)
                    scale = fmax(scale, fabs(want_L[i][a] * want_R[i][b]));
            for (int a = 0; a < p2; a++)
                for (int b = 0; b < q2; b++)
                    ck_assert_msg(fabs(f->A[a] * f->G[b] - want_L[i][a] * want_R[i][b]) < 1e-8 * scale,
                                  "round %d layer %d entry (%d, %d): %g, want %g", round, i, a, b,
                                  f->A[a] * f->G[b], want_L[i][a] * want_R[i][b]);
            ck_assert_close(sqrt(side ? inner_frob(q2, f->G) : inner_frob(p2, f->A)), 1.0, 1e-12);
            ck_assert_double_gt(f->A[0], 0); /* PSD, not its negative */
        }
    }
    /* A non-finite activation is refused before any layer's factors change. */
    double before = c->f[0].A[0];
    net->layers[1].abar[2] = NAN;
    struct kfac_kfoc_info info;
    ck_assert_int_eq(kfac_curvature_update_kfoc(c, net, M, 0.5, 9, side, 100, 1e-5, &info),
                     KFAC_ENUMERIC);
    ck_assert(strstr(kfac_last_error(), "iteration 9: layer 2's activations"));
    ck_assert_double_eq(c->f[0].A[0], before);
    kfac_curvature_free(c);
    kfac_net_free(net);
}
END_TEST

/* ‖F − L ⊗ R‖_F / ‖F‖_F with F dense (D × D, D = na·ng, vec by columns). */
static double dense_kron_error(int na, int ng, const double *F, const double *L, const double *R)
{
    int D = na * ng;
    double err = 0, norm = 0;
    for (int j = 0; j < na; j++)
        for (int i = 0; i < ng; i++)
            for (int l = 0; l < na; l++)
                for (int k = 0; k < ng; k++) {
                    double f = F[(j * ng + i) * D + l * ng + k];
                    double d = f - L[j * na + l] * R[i * ng + k];
                    err += d * d;
                    norm += f * f;
                }
    return sqrt(err / norm);
}

/* F (D × D, D = n_a·n_g) = (1/K) Σ_k vec(X_k) vec(X_k)ᵀ with X_k = Σ_t g_kt ā_ktᵀ over the T
 * rows per case of A (K·T × n_a) and G (K·T × n_g): a convolution's block (T = 1: dense). */
static void dense_fisher_rows(int K, int T, int n_a, int n_g, const double *A, const double *G,
                              double *F)
{
    int D = n_a * n_g;
    double *x = malloc(sizeof(double) * (size_t)D);
    memset(F, 0, sizeof(double) * (size_t)D * D);
    for (int k = 0; k < K; k++) {
        memset(x, 0, sizeof(double) * (size_t)D);
        for (int t = 0; t < T; t++)
            for (int j = 0; j < n_a; j++)
                for (int i = 0; i < n_g; i++)
                    x[j * n_g + i] += G[(k * T + t) * n_g + i] * A[(k * T + t) * n_a + j];
        for (int p = 0; p < D; p++)
            for (int q = 0; q < D; q++)
                F[p * D + q] += x[p] * x[q] / K;
    }
    free(x);
}

/* M (n_a² × n_g²) with M[(j, l), (i, k)] = F[(j, i), (l, k)]: F = Σ L_k ⊗ R_k becomes
 * Σ vec(L_k) vec(R_k)ᵀ (Van Loan's rearrangement). */
static void rearrange(int n_a, int n_g, const double *F, double *M)
{
    int D = n_a * n_g, q2 = n_g * n_g;
    for (int j = 0; j < n_a; j++)
        for (int l = 0; l < n_a; l++)
            for (int i = 0; i < n_g; i++)
                for (int k = 0; k < n_g; k++)
                    M[(j * n_a + l) * q2 + i * n_g + k] = F[(j * n_g + i) * D + l * n_g + k];
}

/* The best Kronecker factors of the block of n cases (T rows each) by a dense SVD, side
 * `side` at unit norm. */
static void dense_block_fit(int n, int T, int n_a, int n_g, const double *A, const double *G,
                            int side, double *L, double *R)
{
    int D = n_a * n_g;
    double *F = malloc(sizeof(double) * (size_t)D * D), *M = malloc(sizeof(double) * (size_t)D * D);
    dense_fisher_rows(n, T, n_a, n_g, A, G, F);
    rearrange(n_a, n_g, F, M);
    dense_kron_factors(n_a, n_g, M, side, L, R);
    free(F);
    free(M);
}

/* The Fisher study's four errors for batches of 3 of 7 cases (3, 3, 1) against dense
 * matrices: F built case by case, each batch's fit by a dense SVD of its rearranged block,
 * K-FOC_approx as (the plain mean of the unit-norm factors) ⊗ (the case-weighted sum of
 * the scaled ones), and the running fit by SVDs of the two-term sums. _i & 1 = 0: a dense
 * layer, 1: a convolution's block, 4 positions per case, with KFC's T Ω̂ ⊗ Γ̂; _i >> 1:
 * the normalised side, which changes K-FOC_approx. */
START_TEST(batch_errors_match_dense_aggregation)
{
    enum { K = 7, B = 3, NA = 3, NG = 3, D = NA * NG, P2 = NA * NA, Q2 = NG * NG, MAXT = 4 };
    int T = _i & 1 ? MAXT : 1, side = _i >> 1, P = (K + B - 1) / B;
    struct kfac_rng r;
    kfac_rng_seed(&r, 80 + (uint64_t)_i);
    double A[K * MAXT * NA], G[K * MAXT * NG], F[D * D], M_[P2 * Q2], X[K * D];
    random_block(K * T, NA, NG, &r, A, G);
    for (int k = 0; k < K * T * NG; k += NG) /* correlated, so that no method is exact */
        G[k] += 1.5 * A[k / NG * NA];
    dense_fisher_rows(K, T, NA, NG, A, G, F);
    double want[KFAC_FISHER_METHODS], Ab[P2], Gb[Q2], L[P2], R[Q2], sL[P2] = {0}, sR[Q2] = {0},
           rL[P2], rR[Q2];
    double num = 0, den = 0;
    for (int p = 0; p < D * D; p++) {
        den += F[p] * F[p];
        if (p % (D + 1))
            num += F[p] * F[p];
    }
    want[KFAC_FISHER_DIAG] = sqrt(num / den);
    brute_moment_d(K * T, NA, A, Ab);
    brute_moment_d(K * T, NG, G, Gb);
    for (int a = 0; a < P2; a++)
        Ab[a] *= T; /* T Ω̂ */
    want[KFAC_FISHER_KFAC] = dense_kron_error(NA, NG, F, Ab, Gb);
    for (int start = 0; start < K; start += B) {
        int n = K - start < B ? K - start : B;
        dense_block_fit(n, T, NA, NG, A + start * T * NA, G + start * T * NG, side, L, R);
        double w = (double)n / K, u = 1.0 / P;
        for (int a = 0; a < P2; a++)
            sL[a] += (side ? w : u) * L[a];
        for (int b = 0; b < Q2; b++)
            sR[b] += (side ? u : w) * R[b];
        if (start == 0) {
            memcpy(rL, L, sizeof L);
            memcpy(rR, R, sizeof R);
        } else {
            double v = (double)n / (start + n);
            for (int a = 0; a < P2; a++)
                for (int b = 0; b < Q2; b++)
                    M_[a * Q2 + b] = (1 - v) * rL[a] * rR[b] + v * L[a] * R[b];
            dense_kron_factors(NA, NG, M_, side, rL, rR);
        }
    }
    want[KFAC_FISHER_KFOC_APPROX] = dense_kron_error(NA, NG, F, sL, sR);
    want[KFAC_FISHER_KFOC_RUNNING] = dense_kron_error(NA, NG, F, rL, rR);

    /* Work for batches of K too, the one-batch case below. */
    double *work = malloc(sizeof(double) * kfac_fisher_batches_work_size(K, K, T, NA, NG));
    struct kfac_fisher_block b;
    kfac_fisher_block_init(&b, kfac_backend_cpu(), K, T, NA, A, NG, G, X, work);
    double norm2 = 0;
    for (int p = 0; p < D * D; p++)
        norm2 += F[p] * F[p];
    ck_assert_close(b.norm2, norm2, 1e-12);
    double got[KFAC_FISHER_METHODS];
    struct kfac_kfoc_info info;
    kfac_fisher_batch_errors(&b, B, side, 1000, 1e-14, work, got, &info);
    ck_assert(info.converged);
    for (int m = 0; m < KFAC_FISHER_METHODS; m++)
        ck_assert_msg(fabs(got[m] - want[m]) < 1e-7, "method %d: %.10f, dense %.10f", m, got[m],
                      want[m]);
    ck_assert_double_gt(want[KFAC_FISHER_KFOC_APPROX], want[KFAC_FISHER_KFOC_RUNNING] + 1e-6);
    /* One batch of all the cases: both aggregations are the K-FOC fit itself. */
    double L1[P2], R1[Q2];
    kfac_fisher_batch_errors(&b, K, side, 1000, 1e-14, work, got, &info);
    dense_block_fit(K, T, NA, NG, A, G, side, L1, R1);
    double fit = dense_kron_error(NA, NG, F, L1, R1);
    ck_assert_double_eq_tol(got[KFAC_FISHER_KFOC_APPROX], fit, 1e-8);
    ck_assert_double_eq_tol(got[KFAC_FISHER_KFOC_RUNNING], fit, 1e-8);
    ck_assert_double_le(fit, want[KFAC_FISHER_KFAC]);
    /* An arbitrary symmetric pair, for the error of any L ⊗ R. */
    random_spd(NA, &r, L);
    random_spd(NG, &r, R);
    ck_assert_close(kfac_fisher_error_kron(&b, L, R, work), dense_kron_error(NA, NG, F, L, R),
                    1e-10);
    free(work);
}
END_TEST

/* A single-output layer (d_out = 1): its Fisher block (1/K) Σ g_k² ā_k ā_kᵀ ⊗ [1] is a
 * Kronecker product, and each batch's too. With the g side normalised every batch's R_p
 * is [1] and K-FOC_approx, the mean of the L_p weighted by their cases, is exact at every
 * batch size, as is K-FOC_running; with the ā side normalised K-FOC_approx averages unit
 * matrices and is not. K-FAC's Ā ⊗ G is not either (g² and ā ā are correlated here). */
START_TEST(single_output_layer_is_fitted_exactly)
{
    enum { K = 60, NA = 6 };
    struct kfac_rng r;
    kfac_rng_seed(&r, 90);
    double A[K * NA], G[K];
    random_block(K, NA, 1, &r, A, G);
    for (int k = 0; k < K; k++)
        G[k] += A[k * NA];
    double *work = malloc(sizeof(double) * kfac_fisher_batches_work_size(K, K, 1, NA, 1));
    struct kfac_fisher_block b;
    kfac_fisher_block_init(&b, kfac_backend_cpu(), K, 1, NA, A, 1, G, NULL, work);
    const int sizes[] = {1, 7, 10, K};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        double e[KFAC_FISHER_METHODS];
        struct kfac_kfoc_info info;
        kfac_fisher_batch_errors(&b, sizes[s], KFAC_KFOC_GRADIENT, 100, 1e-5, work, e, &info);
        ck_assert_msg(e[KFAC_FISHER_KFOC_APPROX] < 1e-10 && e[KFAC_FISHER_KFOC_RUNNING] < 1e-10,
                      "batch %d: K-FOC_approx %.3g, K-FOC_running %.3g", sizes[s],
                      e[KFAC_FISHER_KFOC_APPROX], e[KFAC_FISHER_KFOC_RUNNING]);
        ck_assert_double_gt(e[KFAC_FISHER_KFAC], 0.05);
        kfac_fisher_batch_errors(&b, sizes[s], KFAC_KFOC_ACTIVATION, 100, 1e-5, work, e, &info);
        ck_assert_double_lt(e[KFAC_FISHER_KFOC_RUNNING], 1e-10);
        if (sizes[s] < K)
            ck_assert_double_gt(e[KFAC_FISHER_KFOC_APPROX], 1e-3);
    }
    free(work);
}
END_TEST

/* Exact approximations report round-off, not the 5e-8 that ‖F‖² − 2⟨F, F̃⟩ + ‖F̃‖² leaves in
 * double: a block whose output gradients share one direction is a Kronecker product (its
 * K-FOC fit is exact, n_g = 3, dense and convolution), and one of one-hot gradients is
 * diagonal. */
START_TEST(exact_approximations_report_round_off)
{
    enum { K = 40, NA = 5, NG = 3, T = 4 };
    struct kfac_rng r;
    kfac_rng_seed(&r, 91);
    double A[K * T * NA], G[K * T * NG], X[K * NA * NG], g0[NG] = {0.3, -1.2, 0.7};
    random_block(K * T, NA, NG, &r, A, G);
    double *work = malloc(sizeof(double) * kfac_fisher_batches_work_size(K, K, T, NA, NG));
    for (int t = 1; t <= T; t *= T) {
        for (int k = 0; k < K * t; k++) {
            double c = kfac_rng_normal(&r);
            for (int o = 0; o < NG; o++)
                G[k * NG + o] = c * g0[o];
        }
        struct kfac_fisher_block b;
        kfac_fisher_block_init(&b, kfac_backend_cpu(), K, t, NA, A, NG, G, X, work);
        double e[KFAC_FISHER_METHODS];
        struct kfac_kfoc_info info;
        kfac_fisher_batch_errors(&b, K, KFAC_KFOC_GRADIENT, 100, 1e-5, work, e, &info);
        ck_assert_msg(e[KFAC_FISHER_KFOC_RUNNING] < 1e-10, "T = %d: K-FOC %.3g", t,
                      e[KFAC_FISHER_KFOC_RUNNING]);
        ck_assert_double_gt(e[KFAC_FISHER_DIAG], 0.1);
    }
    /* One-hot ā and g: every X_k has one nonzero entry, so F is diagonal. */
    for (int k = 0; k < K; k++) {
        for (int j = 0; j < NA; j++)
            A[k * NA + j] = j == k % NA ? 1.0 + k : 0.0;
        for (int o = 0; o < NG; o++)
            G[k * NG + o] = o == k % NG ? 0.5 : 0.0;
    }
    struct kfac_fisher_block b;
    kfac_fisher_block_init(&b, kfac_backend_cpu(), K, 1, NA, A, NG, G, NULL, work);
    ck_assert_double_lt(kfac_fisher_error_diag(&b, work), 1e-10);
    free(work);
}
END_TEST

/* kfac_kron_block writes A ⊗ B in the vec order of the Fisher blocks: (A ⊗ B) vec(V) =
 * vec(B V Aᵀ) with columns stacked, at the block's place in a wider matrix, nothing else. */
START_TEST(kron_block_is_the_kronecker_product)
{
    enum { NA = 3, NB = 4, D = NA * NB, LD = D + 5, R0 = 2, C0 = 3 };
    struct kfac_rng r;
    kfac_rng_seed(&r, 93);
    double A[NA * NA], B[NB * NB], V[NB * NA], M[(D + R0) * LD];
    for (int i = 0; i < NA * NA; i++)
        A[i] = kfac_rng_normal(&r);
    for (int i = 0; i < NB * NB; i++)
        B[i] = kfac_rng_normal(&r);
    for (int i = 0; i < NB * NA; i++)
        V[i] = kfac_rng_normal(&r);
    for (int i = 0; i < (D + R0) * LD; i++)
        M[i] = -7;
    kfac_kron_block(NA, NA, A, NB, NB, B, M, LD, R0, C0);
    for (int row = 0; row < D + R0; row++)
        for (int col = 0; col < LD; col++)
            if (row < R0 || col < C0 || col >= C0 + D)
                ck_assert_double_eq(M[row * LD + col], -7);
    for (int q = 0; q < NA; q++)
        for (int k = 0; k < NB; k++) {
            double lhs = 0, rhs = 0;
            for (int p = 0; p < NA; p++)
                for (int i = 0; i < NB; i++)
                    lhs += M[(R0 + q * NB + k) * LD + C0 + p * NB + i] * V[i * NA + p];
            for (int i = 0; i < NB; i++)
                for (int p = 0; p < NA; p++)
                    rhs += B[k * NB + i] * V[i * NA + p] * A[q * NA + p];
            ck_assert_double_eq_tol(lhs, rhs, 1e-12);
        }
}
END_TEST

/* A convolution's factors are KFC's (REFERENCE.md §2): Ā = T Ω̂ and G = Γ̂ from the patch
 * rows, checked against patches cut from the channel-major input by hand; the damped
 * inverse is T⁻¹ (Ω̂ + π'√(λ/T) I)⁻¹ ⊗ (Γ̂ + √(λ/T)/π' I)⁻¹ with λ = γ² and π' from Ω̂, Γ̂. */
START_TEST(conv_factors_are_kfc)
{
    enum { M = 3 };
    struct kfac_rng r;
    kfac_rng_seed(&r, 85);
    struct kfac_net *net = spec_net("2x5x4-conv(3,3x2,stride=2,pad=1):tanh-flatten-2:linear", M,
                                    &r);
    const struct kfac_layer *l = &net->layers[0];
    int C = 2, H = 5, W = 4, T = l->n_pos, na = l->d_in + 1, ng = l->d_out;
    ck_assert_int_eq(T, 3 * 3);
    float X[M * 40];
    fill_uniform(X, M * 40, &r, -1, 1);
    kfac_net_forward(net, M, X);
    fill_uniform(kfac_net_output_grad(net), M * 2, &r, -1, 1);
    kfac_net_backward(net, M, 1.0f, KFAC_GRADS_NONE);
    struct kfac_curvature *c = kfac_curvature_new(net);
    ck_assert_int_eq(c->n_blocks, 2);
    ck_assert_int_eq(c->f[1].layer, 3);
    ck_assert_int_eq(kfac_curvature_update(c, net, M, 0.0, 1), 0);
    double Om[13 * 13] = {0}, Ga[9] = {0}, p[13];
    for (int b = 0; b < M; b++)
        for (int y = 0; y < 3; y++)
            for (int x = 0; x < 3; x++) {
                for (int ky = 0; ky < 3; ky++)
                    for (int kx = 0; kx < 2; kx++)
                        for (int ch = 0; ch < C; ch++) {
                            int iy = 2 * y - 1 + ky, ix = 2 * x - 1 + kx;
                            int inside = iy >= 0 && iy < H && ix >= 0 && ix < W;
                            p[(ky * 2 + kx) * C + ch] =
                                inside ? X[((b * C + ch) * H + iy) * W + ix] : 0.0;
                        }
                p[12] = 1;
                for (int i = 0; i < na; i++)
                    for (int j = 0; j < na; j++)
                        Om[i * na + j] += p[i] * p[j] / (M * T);
                const float *g = l->g + ((size_t)b * T + y * 3 + x) * ng;
                for (int i = 0; i < ng; i++)
                    for (int j = 0; j < ng; j++)
                        Ga[i * ng + j] += (double)g[i] * g[j] / (M * T);
            }
    const struct kfac_factors *f = &c->f[0];
    ck_assert_int_eq(f->n_pos, T);
    for (int i = 0; i < na; i++)
        for (int j = i; j < na; j++)
            ck_assert_close(f->A[i * na + j], T * Om[i * na + j], 1e-5);
    for (int i = 0; i < ng; i++)
        for (int j = i; j < ng; j++)
            ck_assert_close(f->G[i * ng + j], Ga[i * ng + j], 1e-5);
    /* The damping, as REFERENCE.md states it for Ω̂ and Γ̂. */
    double gamma = 0.3, tr_o = 0, tr_g = 0;
    ck_assert_int_eq(kfac_curvature_decompose(c, KFAC_PI_TRACE, 1), 0);
    ck_assert_int_eq(kfac_curvature_invert(c, gamma, 1), 0);
    float *V = kfac_floats_new(net->n_params), *out = kfac_floats_new(net->n_params);
    fill_uniform(V, net->n_params, &r, -1, 1);
    kfac_curvature_precondition(c, net, V, 1.0f, out);
    for (int i = 0; i < na; i++)
        tr_o += Om[i * na + i];
    for (int i = 0; i < ng; i++)
        tr_g += Ga[i * ng + i];
    double pi = sqrt((tr_o / na) / (tr_g / ng)), d = sqrt(gamma * gamma / T);
    for (int i = 0; i < na; i++)
        Om[i * na + i] += pi * d;
    for (int i = 0; i < ng; i++)
        Ga[i * ng + i] += d / pi;
    /* T (Γ̂ + …) out (Ω̂ + …) = V for the layer's block out (ng × na). */
    for (int i = 0; i < ng; i++)
        for (int j = 0; j < na; j++) {
            double v = 0;
            for (int a = 0; a < ng; a++)
                for (int b = 0; b < na; b++)
                    v += T * Ga[i * ng + a] * out[a * na + b] * Om[b * na + j];
            ck_assert_close(v, V[i * na + j], 2e-4);
        }
    kfac_floats_free(V);
    kfac_floats_free(out);
    kfac_curvature_free(c);
    kfac_net_free(net);
}
END_TEST

/* K-FOC trains a convolution on its Fisher block with the cross-position terms: the first
 * update is the dense SVD fit of the block of the batch's per-case gradients. */
START_TEST(kfoc_update_fits_a_conv_block)
{
    enum { M = 4 };
    struct kfac_rng r;
    kfac_rng_seed(&r, 87);
    struct kfac_net *net = spec_net("1x4x4-conv(2,2,stride=1):tanh-maxpool(3)-flatten-2:linear",
                                    M, &r);
    struct kfac_curvature *c = kfac_curvature_new(net);
    kfac_curvature_use_kfoc(c, net, M, 0, KFAC_KFOC_GRADIENT, 100, 1e-5);
    float X[M * 16];
    fill_uniform(X, M * 16, &r, -1, 1);
    kfac_net_forward(net, M, X);
    fill_uniform(kfac_net_output_grad(net), M * 2, &r, -1, 1);
    kfac_net_backward(net, M, 1.0f, KFAC_GRADS_NONE);
    struct kfac_kfoc_info info;
    ck_assert_int_eq(kfac_curvature_update_kfoc(c, net, M, 0.0, 1, KFAC_KFOC_GRADIENT, 1000,
                                                1e-13, &info),
                     0);
    ck_assert(info.converged);
    const struct kfac_layer *l = &net->layers[0];
    const struct kfac_factors *f = &c->f[0];
    int T = l->n_pos, na = f->n_a, ng = f->n_g, p2 = na * na, q2 = ng * ng;
    ck_assert_int_eq(T, 9);
    double *ad = malloc(sizeof(double) * M * T * na), *gd = malloc(sizeof(double) * M * T * ng);
    for (int k = 0; k < M * T * na; k++)
        ad[k] = l->abar[k];
    for (int k = 0; k < M * T * ng; k++)
        gd[k] = l->g[k];
    double L[25], R[4], scale = 0;
    dense_block_fit(M, T, na, ng, ad, gd, KFAC_KFOC_GRADIENT, L, R);
    for (int a = 0; a < p2; a++)
        for (int b = 0; b < q2; b++)
            scale = fmax(scale, fabs(L[a] * R[b]));
    for (int a = 0; a < p2; a++)
        for (int b = 0; b < q2; b++)
            ck_assert_msg(fabs(f->A[a] * f->G[b] - L[a] * R[b]) < 1e-7 * scale,
                          "entry (%d, %d): %g, want %g", a, b, f->A[a] * f->G[b], L[a] * R[b]);
    free(ad);
    free(gd);
    kfac_curvature_free(c);
    kfac_net_free(net);
}
END_TEST

/* --- Block-tridiagonal K-FAC against dense matrices. vec stacks columns: entry (r, j) of a
 * layer's block (n_g × n_a, row-major in the parameter vector) is element j·n_g + r. */

/* out (n_a·n_g × n_b·n_h) = P ⊗ Q for P (n_a × n_b) and Q (n_g × n_h), written into a
 * D-column matrix at row r0, column c0. */
static void put_kron(int na, int nb, const double *P, int ng, int nh, const double *Q, int D,
                     int r0, int c0, double *out)
{
    for (int j = 0; j < na; j++)
        for (int r = 0; r < ng; r++)
            for (int j2 = 0; j2 < nb; j2++)
                for (int r2 = 0; r2 < nh; r2++)
                    out[(size_t)(r0 + j * ng + r) * D + c0 + j2 * nh + r2] =
                        P[j * nb + j2] * Q[r * nh + r2];
}

/* X (n × n) ← X⁻¹ by LU. */
static void dense_inverse(int n, double *X)
{
    lapack_int *ipiv = malloc(sizeof(lapack_int) * (size_t)n);
    ck_assert_int_eq(LAPACKE_dgetrf(LAPACK_ROW_MAJOR, n, n, X, n, ipiv), 0);
    ck_assert_int_eq(LAPACKE_dgetri(LAPACK_ROW_MAJOR, n, X, n, ipiv), 0);
    free(ipiv);
}

/* C (m × n) = A (m × k) B (k × n), each with its own leading dimension. */
static void dense_mul(int m, int n, int k, const double *A, int lda, int ta, const double *B,
                      int ldb, int tb, double *C, int ldc)
{
    cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m,
                n, k, 1.0, A, lda, B, ldb, 0.0, C, ldc);
}

/* C (n × n) = L W Lᵀ for A = L Lᵀ (Cholesky) and a random W with 0 ≤ W ≤ 0.9 I. */
static void below(int n, const double *A, struct kfac_rng *r, double *C)
{
    double L[64], W[64], T[64], tr = 0;
    memcpy(L, A, sizeof(double) * n * n);
    ck_assert_int_eq(LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'L', n, L, n), 0);
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            L[i * n + j] = 0;
    random_spd(n, r, W);
    for (int i = 0; i < n; i++)
        tr += W[i * n + i];
    for (int i = 0; i < n * n; i++)
        W[i] *= 0.9 / tr; /* the trace bounds the largest eigenvalue */
    dense_mul(n, n, n, L, n, 0, W, n, 0, T, n);
    dense_mul(n, n, n, T, n, 0, L, n, 1, C, n);
}

/* Σ⁻¹ through kfac_kron_diff_factor/denominators/apply for Σ = A ⊗ B − C ⊗ D, with A and B
 * given by their eigendecompositions plus the damping d. */
static void kron_diff_solve(int na, int ng, const double *A, const double *B, const double *C,
                            const double *D, double d, const float *V, float *out, double *sA,
                            double *sG)
{
    const double *X[2] = {A, B}, *Y[2] = {C, D};
    int n[2] = {na, ng};
    float *K[2];
    struct kfac_eigen_work w;
    kfac_eigen_work_init(&w, kfac_backend_cpu(), 8);
    for (int side = 0; side < 2; side++) {
        int m = n[side];
        double U_t[64], eig[8], Mt[64], T[64], work[64];
        memcpy(U_t, X[side], sizeof(double) * m * m);
        ck_assert_int_eq(LAPACKE_dsyev(LAPACK_ROW_MAJOR, 'V', 'U', m, U_t, m, eig), 0);
        /* LAPACK returns the eigenvectors as columns: make them rows. */
        for (int i = 0; i < m; i++)
            for (int j = 0; j < i; j++) {
                double t = U_t[i * m + j];
                U_t[i * m + j] = U_t[j * m + i];
                U_t[j * m + i] = t;
            }
        /* Mt = diag(eig + d)^{-1/2} Uᵀ C U diag(eig + d)^{-1/2}, densely. */
        dense_mul(m, m, m, U_t, m, 0, Y[side], m, 0, T, m);
        dense_mul(m, m, m, T, m, 0, U_t, m, 1, Mt, m);
        for (int i = 0; i < m; i++)
            for (int j = 0; j < m; j++)
                Mt[i * m + j] /= sqrt((eig[i] + d) * (eig[j] + d));
        K[side] = kfac_floats_new((size_t)m * m);
        ck_assert_int_eq(kfac_kron_diff_factor(&w, m, U_t, eig, d, Mt, work, K[side],
                                               side ? sG : sA),
                         0);
    }
    float den[64], Vc[64], tmp[64];
    kfac_kron_diff_denominators(na, ng, sA, sG, den);
    memcpy(Vc, V, sizeof(float) * na * ng);
    kfac_kron_diff_apply(kfac_backend_cpu(), na, ng, K[0], K[1], den, Vc, 1.0f, out, tmp);
    kfac_floats_free(K[0]);
    kfac_floats_free(K[1]);
    kfac_eigen_work_free(&w);
}

START_TEST(kron_difference_inverse_matches_dense)
{
    /* Square and unequal factor sizes, with and without damping added to A and B. */
    static const int sizes[][2] = {{3, 3}, {4, 2}, {2, 5}, {1, 4}};
    struct kfac_rng r;
    kfac_rng_seed(&r, 21);
    for (int t = 0; t < 8; t++) {
        int na = sizes[t / 2][0], ng = sizes[t / 2][1], N = na * ng;
        double d = t % 2 ? 0.2 : 0.0;
        double A[64], B[64], C[64], D[64], Ad[64], Bd[64], S[64 * 64], sA[8], sG[8];
        random_spd(na, &r, A);
        random_spd(ng, &r, B);
        /* C = L_A W L_Aᵀ with A = L_A L_Aᵀ and 0 ≤ W ≤ 0.9 I, so C < A (D likewise): Σ is
         * positive definite and every s is below 1, as for the damped factors. */
        below(na, A, &r, C);
        below(ng, B, &r, D);
        for (int i = 0; i < na * na; i++)
            Ad[i] = A[i] + (i % (na + 1) == 0 ? d : 0);
        for (int i = 0; i < ng * ng; i++)
            Bd[i] = B[i] + (i % (ng + 1) == 0 ? d : 0);
        put_kron(na, na, Ad, ng, ng, Bd, N, 0, 0, S);
        double CD[64 * 64];
        put_kron(na, na, C, ng, ng, D, N, 0, 0, CD);
        for (int i = 0; i < N * N; i++)
            S[i] -= CD[i];
        dense_inverse(N, S);
        float V[64], out[64];
        fill_uniform(V, (size_t)N, &r, -1, 1);
        kron_diff_solve(na, ng, A, B, C, D, d, V, out, sA, sG);
        double scale = 0;
        for (int i = 0; i < N; i++)
            scale = fmax(scale, fabs(out[i]));
        for (int j = 0; j < na; j++)
            for (int q = 0; q < ng; q++) {
                double want = 0;
                for (int j2 = 0; j2 < na; j2++)
                    for (int q2 = 0; q2 < ng; q2++)
                        want += S[(j * ng + q) * N + j2 * ng + q2] * V[q2 * na + j2];
                ck_assert_msg(fabs(out[q * na + j] - want) < 1e-4 * scale,
                              "%d x %d, d = %g, entry (%d, %d): %.7g, dense %.7g", ng, na, d, q,
                              j, out[q * na + j], want);
            }
        for (int i = 0; i < na; i++)
            ck_assert(sA[i] >= 0 && sA[i] < 1);
    }
}
END_TEST

START_TEST(kron_difference_guards_a_singular_difference)
{
    /* C = A and D = B: Σ = 0, every s is 1 and 1 − s_G s_A vanishes; the floor keeps the
     * result finite. */
    struct kfac_rng r;
    kfac_rng_seed(&r, 22);
    double A[9], B[4], sA[3], sG[2];
    random_spd(3, &r, A);
    random_spd(2, &r, B);
    float V[6], out[6];
    fill_uniform(V, 6, &r, -1, 1);
    kron_diff_solve(3, 2, A, B, A, B, 0.0, V, out, sA, sG);
    for (int i = 0; i < 3; i++)
        ck_assert_double_le(sA[i], 1.0);
    ck_assert(kfac_all_finite(6, out));
    float den[6];
    double ones[3] = {1, 1, 1};
    kfac_kron_diff_denominators(3, 2, ones, ones, den);
    for (int i = 0; i < 6; i++)
        ck_assert_float_eq(den[i], (float)(1.0 / KFAC_TRIDIAG_MIN_GAP));
}
END_TEST

/* Trains the statistics of a network of n_layers small layers for three iterations with
 * the block-tridiagonal variant, checks the cross factors against brute force, then
 * compares the fast F̂⁻¹ with the dense Ξᵀ Λ Ξ and F̂ with F̃ on the tridiagonal blocks. */
static void check_tridiagonal(int n_layers)
{
    enum { M = 7, MAXD = 64 };
    static const struct kfac_layer_spec specs[3] = {
        {.d_out = 4, .act = KFAC_ACT_TANH}, {.d_out = 2, .act = KFAC_ACT_LOGISTIC}, {.d_out = 3, .act = KFAC_ACT_LINEAR}};
    struct kfac_rng r;
    kfac_rng_seed(&r, 30 + n_layers);
    struct kfac_net *net;
    ck_assert_int_eq(kfac_net_new(3, specs + 3 - n_layers, n_layers, &net), 0);
    kfac_net_reserve(net, M);
    fill_uniform(net->params, net->n_params, &r, -1, 1);
    struct kfac_curvature *c = kfac_curvature_new(net);
    kfac_curvature_reserve_tridiag(c);
    int L = n_layers, d_out = net->d_out;
    float X[M * 3];
    double prev[2][MAXD];
    for (int k = 1; k <= 3; k++) {
        fill_uniform(X, M * 3, &r, -1, 1);
        kfac_net_forward(net, M, X);
        fill_uniform(kfac_net_output_grad(net), (size_t)M * d_out, &r, -1, 1);
        kfac_net_backward(net, M, 1.0f, KFAC_GRADS_NONE);
        double eps = kfac_stats_decay(k, 0.95);
        ck_assert_int_eq(kfac_curvature_update(c, net, M, eps, k), 0);
        /* The first coupling's cross factors: ε times the previous plus (1 − ε) E[·]. */
        const struct kfac_coupling *t = &c->tri[0];
        const struct kfac_layer *l0 = &net->layers[0], *l1 = &net->layers[1];
        for (int a = 0; a < t->n_a; a++)
            for (int b = 0; b < t->n_a1; b++) {
                double e = 0;
                for (int q = 0; q < M; q++)
                    e += (double)l0->abar[q * t->n_a + a] * l1->abar[q * t->n_a1 + b] / M;
                double want = k == 1 ? e : eps * prev[0][a * t->n_a1 + b] + (1 - eps) * e;
                ck_assert_close(t->XA[a * t->n_a1 + b], want, 1e-5);
            }
        for (int a = 0; a < t->n_g; a++)
            for (int b = 0; b < t->n_g1; b++) {
                double e = 0;
                for (int q = 0; q < M; q++)
                    e += (double)l0->g[q * t->n_g + a] * l1->g[q * t->n_g1 + b] / M;
                double want = k == 1 ? e : eps * prev[1][a * t->n_g1 + b] + (1 - eps) * e;
                ck_assert_close(t->XG[a * t->n_g1 + b], want, 1e-5);
            }
        memcpy(prev[0], t->XA, sizeof(double) * t->n_a * t->n_a1);
        memcpy(prev[1], t->XG, sizeof(double) * t->n_g * t->n_g1);
    }
    ck_assert_int_eq(kfac_curvature_decompose(c, KFAC_PI_TRACE, 3), 0);
    const double gamma = 0.1;
    ck_assert_int_eq(kfac_curvature_invert(c, gamma, 3), 0);
    int D = (int)net->n_params, off[4];
    for (int i = 0; i < L; i++)
        off[i] = (int)(net->layers[i].W - net->params);
    /* F̃: damped Kronecker blocks on the diagonal, Ā_{i,i+1} ⊗ G_{i,i+1} beside it. */
    double *Ft = calloc((size_t)D * D, sizeof *Ft);
    for (int i = 0; i < L; i++) {
        const struct kfac_factors *f = &c->f[i];
        int na = f->n_a, ng = f->n_g;
        double Ad[64], Gd[64];
        for (int j = 0; j < na * na; j++)
            Ad[j] = f->A[j] + (j % (na + 1) == 0 ? gamma * f->pi : 0);
        for (int j = 0; j < ng * ng; j++)
            Gd[j] = f->G[j] + (j % (ng + 1) == 0 ? gamma / f->pi : 0);
        put_kron(na, na, Ad, ng, ng, Gd, D, off[i], off[i], Ft);
        if (i + 1 < L) {
            const struct kfac_coupling *t = &c->tri[i];
            put_kron(t->n_a, t->n_a1, t->XA, t->n_g, t->n_g1, t->XG, D, off[i], off[i + 1], Ft);
            for (int p = 0; p < na * ng; p++)
                for (int q = 0; q < t->n_a1 * t->n_g1; q++)
                    Ft[(size_t)(off[i + 1] + q) * D + off[i] + p] =
                        Ft[(size_t)(off[i] + p) * D + off[i + 1] + q];
        }
    }
    /* Ψ_{i,i+1} = F̃_{i,i+1} F̃_{i+1,i+1}⁻¹, Σ_{i|i+1} = F̃_ii − Ψ F̃_{i+1,i+1} Ψᵀ, Σ_ℓ = F̃_ℓℓ;
     * Ξ = I − Σ_i Ψ_{i,i+1} above the diagonal; F̂⁻¹ = Ξᵀ diag(Σ⁻¹) Ξ. */
    double *Xi = calloc((size_t)D * D, sizeof *Xi), *Lam = calloc((size_t)D * D, sizeof *Lam);
    double *T = calloc((size_t)D * D, sizeof *T), *Fhi = calloc((size_t)D * D, sizeof *Fhi);
    for (int i = 0; i < D; i++)
        Xi[(size_t)i * D + i] = 1;
    for (int i = 0; i < L; i++) {
        int n = (int)net->layers[i].n_params;
        double S[MAXD * MAXD];
        for (int p = 0; p < n; p++)
            for (int q = 0; q < n; q++)
                S[p * n + q] = Ft[(size_t)(off[i] + p) * D + off[i] + q];
        if (i + 1 < L) {
            int n1 = (int)net->layers[i + 1].n_params;
            double Fn[MAXD * MAXD], Psi[MAXD * MAXD], PF[MAXD * MAXD], PFP[MAXD * MAXD];
            for (int p = 0; p < n1; p++)
                for (int q = 0; q < n1; q++)
                    Fn[p * n1 + q] = Ft[(size_t)(off[i + 1] + p) * D + off[i + 1] + q];
            dense_inverse(n1, Fn);
            dense_mul(n, n1, n1, Ft + (size_t)off[i] * D + off[i + 1], D, 0, Fn, n1, 0, Psi, n1);
            for (int p = 0; p < n1; p++)
                for (int q = 0; q < n1; q++)
                    Fn[p * n1 + q] = Ft[(size_t)(off[i + 1] + p) * D + off[i + 1] + q];
            dense_mul(n, n1, n1, Psi, n1, 0, Fn, n1, 0, PF, n1);
            dense_mul(n, n, n1, PF, n1, 0, Psi, n1, 1, PFP, n);
            for (int p = 0; p < n * n; p++)
                S[p] -= PFP[p];
            for (int p = 0; p < n; p++)
                for (int q = 0; q < n1; q++)
                    Xi[(size_t)(off[i] + p) * D + off[i + 1] + q] = -Psi[p * n1 + q];
        }
        dense_inverse(n, S);
        for (int p = 0; p < n; p++)
            for (int q = 0; q < n; q++)
                Lam[(size_t)(off[i] + p) * D + off[i] + q] = S[p * n + q];
    }
    dense_mul(D, D, D, Xi, D, 1, Lam, D, 0, T, D);
    dense_mul(D, D, D, T, D, 0, Xi, D, 0, Fhi, D);
    /* The fast path on a random V, against F̂⁻¹ vec(V). */
    float *V = kfac_floats_new((size_t)D), *out = kfac_floats_new((size_t)D);
    fill_uniform(V, (size_t)D, &r, -1, 1);
    kfac_curvature_precondition(c, net, V, -2.0f, out);
    double *v = malloc(sizeof(double) * D), *want = malloc(sizeof(double) * D), scale = 0;
    for (int i = 0; i < L; i++) {
        int na = c->f[i].n_a, ng = c->f[i].n_g;
        for (int q = 0; q < ng; q++)
            for (int j = 0; j < na; j++)
                v[off[i] + j * ng + q] = V[off[i] + q * na + j];
    }
    cblas_dgemv(CblasRowMajor, CblasNoTrans, D, D, -2.0, Fhi, D, v, 1, 0.0, want, 1);
    for (int p = 0; p < D; p++)
        scale = fmax(scale, fabs(want[p]));
    for (int i = 0; i < L; i++) {
        int na = c->f[i].n_a, ng = c->f[i].n_g;
        for (int q = 0; q < ng; q++)
            for (int j = 0; j < na; j++)
                ck_assert_msg(fabs(out[off[i] + q * na + j] - want[off[i] + j * ng + q]) <
                                  1e-4 * scale,
                              "%d layers, layer %d (%d, %d): %.7g, dense %.7g", L, i + 1, q, j,
                              out[off[i] + q * na + j], want[off[i] + j * ng + q]);
    }
    /* F̂ = (F̂⁻¹)⁻¹ agrees with F̃ on the tridiagonal blocks (and only there when L = 3). */
    dense_inverse(D, Fhi);
    double fmax_ = 0, off13 = 0;
    for (int p = 0; p < D * D; p++)
        fmax_ = fmax(fmax_, fabs(Ft[p]));
    for (int bi = 0; bi < L; bi++)
        for (int bj = 0; bj < L; bj++) {
            int ni = (int)net->layers[bi].n_params, nj = (int)net->layers[bj].n_params;
            for (int p = 0; p < ni; p++)
                for (int q = 0; q < nj; q++) {
                    size_t at = (size_t)(off[bi] + p) * D + off[bj] + q;
                    if (abs(bi - bj) <= 1)
                        ck_assert_msg(fabs(Fhi[at] - Ft[at]) < 1e-9 * fmax_,
                                      "block (%d, %d): F^ %.12g, F~ %.12g", bi + 1, bj + 1,
                                      Fhi[at], Ft[at]);
                    else
                        off13 = fmax(off13, fabs(Fhi[at]));
                }
        }
    if (L == 3) /* F̂ fills the blocks F̃ leaves empty: they are Ψ_{1,2} F̃_{2,3}. */
        ck_assert_double_gt(off13, 1e-6 * fmax_);
    kfac_floats_free(V);
    kfac_floats_free(out);
    free(v);
    free(want);
    free(Ft);
    free(Xi);
    free(Lam);
    free(T);
    free(Fhi);
    kfac_curvature_free(c);
    kfac_net_free(net);
}

START_TEST(tridiagonal_inverse_matches_dense_two_layers)
{
    check_tridiagonal(2);
}
END_TEST

START_TEST(tridiagonal_inverse_matches_dense_three_layers)
{
    check_tridiagonal(3);
}
END_TEST

START_TEST(cross_block_error_matches_dense)
{
    /* Two consecutive layers' off-diagonal Fisher block over K cases, dense, against the
     * Kronecker model of the same cases. */
    enum { K = 9, NA1 = 3, NG1 = 4, NA2 = 5, NG2 = 2, P = NA1 * NG1, Q = NA2 * NG2 };
    struct kfac_rng r;
    kfac_rng_seed(&r, 24);
    double A1[K * NA1], G1[K * NG1], A2[K * NA2], G2[K * NG2];
    double *X[4] = {A1, G1, A2, G2};
    const int n[4] = {NA1, NG1, NA2, NG2};
    for (int f = 0; f < 4; f++)
        for (int i = 0; i < K * n[f]; i++)
            X[f][i] = kfac_rng_uniform(&r) * 2 - 1;
    double F[P * Q] = {0}, XA[NA1 * NA2] = {0}, XG[NG1 * NG2] = {0}, Mod[P * Q];
    for (int k = 0; k < K; k++) {
        for (int j = 0; j < NA1; j++)
            for (int q = 0; q < NG1; q++)
                for (int j2 = 0; j2 < NA2; j2++)
                    for (int q2 = 0; q2 < NG2; q2++)
                        F[(j * NG1 + q) * Q + j2 * NG2 + q2] += A1[k * NA1 + j] * G1[k * NG1 + q] *
                                                                A2[k * NA2 + j2] *
                                                                G2[k * NG2 + q2] / K;
        for (int j = 0; j < NA1; j++)
            for (int j2 = 0; j2 < NA2; j2++)
                XA[j * NA2 + j2] += A1[k * NA1 + j] * A2[k * NA2 + j2] / K;
        for (int q = 0; q < NG1; q++)
            for (int q2 = 0; q2 < NG2; q2++)
                XG[q * NG2 + q2] += G1[k * NG1 + q] * G2[k * NG2 + q2] / K;
    }
    put_kron(NA1, NA2, XA, NG1, NG2, XG, Q, 0, 0, Mod);
    double d = 0, f2 = 0;
    for (int i = 0; i < P * Q; i++) {
        d += (F[i] - Mod[i]) * (F[i] - Mod[i]);
        f2 += F[i] * F[i];
    }
    double *work = malloc(sizeof(double) * kfac_fisher_cross_work_size(K, NA1, NG1, NA2, NG2));
    struct kfac_fisher_block b1 = {kfac_backend_cpu(), K, NA1, NG1, A1, G1, 0, 1, NULL},
                             b2 = {kfac_backend_cpu(), K, NA2, NG2, A2, G2, 0, 1, NULL};
    double got = kfac_fisher_error_cross(&b1, &b2, work);
    ck_assert_double_eq_tol(got, sqrt(d / f2), 1e-10);
    ck_assert_double_gt(got, 0.05);
    /* One case: F_12 is itself a Kronecker product, and the model is exact. */
    b1.K = b2.K = 1;
    ck_assert_double_eq_tol(kfac_fisher_error_cross(&b1, &b2, work), 0.0, 1e-6);
    free(work);
}
END_TEST

static Suite *curvature_suite(void)
{
    Suite *s = suite_create("curvature");
    TCase *tc = tcase_create("kfac");
    tcase_add_test(tc, factors_match_brute_force);
    tcase_add_test(tc, statistics_on_two_threads_are_those_on_one);
    tcase_add_test(tc, nonfinite_statistics_are_rejected);
    tcase_add_test(tc, sampled_G_converges_to_exact);
    tcase_add_loop_test(tc, precondition_matches_dense_solve_trace, 0, 3);
    tcase_add_loop_test(tc, precondition_matches_dense_solve_frobenius, 0, 3);
    tcase_add_test(tc, cholesky_falls_back_on_an_indefinite_factor);
    tcase_add_loop_test(tc, cholesky_inverses_on_two_threads_are_those_on_one, 0, 2);
    tcase_add_test(tc, float_cholesky_inverses_are_double_ones_to_float_precision);
    tcase_add_loop_test(tc, kept_inverses_are_those_formed_anew, 0, 2);
    tcase_add_test(tc, conv_factors_are_kfc);
    suite_add_tcase(s, tc);
    TCase *kfoc = tcase_create("kfoc");
    tcase_add_test(kfoc, fisher_errors_match_dense_matrices);
    tcase_add_loop_test(kfoc, kron_fit_is_the_best_rank_one_approximation, 0, 2);
    tcase_add_loop_test(kfoc, kfoc_fit_equals_the_explicit_fit, 0, 2);
    tcase_add_test(kfoc, kfoc_error_is_never_above_kfac);
    tcase_add_loop_test(kfoc, kfoc_update_is_the_running_fit, 0, 2);
    tcase_add_loop_test(kfoc, batch_errors_match_dense_aggregation, 0, 4);
    tcase_add_test(kfoc, single_output_layer_is_fitted_exactly);
    tcase_add_test(kfoc, exact_approximations_report_round_off);
    tcase_add_test(kfoc, kron_block_is_the_kronecker_product);
    tcase_add_test(kfoc, kfoc_update_fits_a_conv_block);
    suite_add_tcase(s, kfoc);
    TCase *tri = tcase_create("tridiagonal");
    tcase_add_test(tri, kron_difference_inverse_matches_dense);
    tcase_add_test(tri, kron_difference_guards_a_singular_difference);
    tcase_add_test(tri, tridiagonal_inverse_matches_dense_two_layers);
    tcase_add_test(tri, tridiagonal_inverse_matches_dense_three_layers);
    tcase_add_test(tri, cross_block_error_matches_dense);
    suite_add_tcase(s, tri);
    return s;
}

KFAC_TEST_MAIN(curvature_suite)
