/*
 * check_curvature.c: K-FAC's Kronecker factors against brute force: Ā and G against
 * explicit per-case sums, their exponential averages, the sampled-target G against the
 * exact expectation over the model's predictive distribution, and the damped Kronecker
 * inverse against a dense solve with (Ā + πγI) ⊗ (G + γ/π I).
 */
#include "kfac/curvature.h"
#include "kfac/loss.h"
#include "kfac/mat.h"
#include "kfac/optim.h"
#include "kfac/status.h"
#include "testutil.h"

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
        kfac_net_backward(net, M, 1.0f, 0);
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

START_TEST(nonfinite_statistics_are_rejected)
{
    enum { M = 4 };
    struct kfac_rng r;
    kfac_rng_seed(&r, 2);
    struct kfac_net *net = test_net(M, KFAC_ACT_LINEAR, &r);
    struct kfac_curvature *c = kfac_curvature_new(net);
    float X[M * 3];
    fill_uniform(X, M * 3, &r, -1, 1);
    kfac_net_forward(net, M, X);
    fill_uniform(kfac_net_output_grad(net), M * 3, &r, -1, 1);
    kfac_net_backward(net, M, 1.0f, 0);
    ck_assert_int_eq(kfac_curvature_update(c, net, M, 0, 1), 0);
    double A0 = c->f[0].A[0], G1 = c->f[1].G[0];
    net->layers[1].g[2] = INFINITY;
    ck_assert_int_eq(kfac_curvature_update(c, net, M, 0.5, 2), KFAC_ENUMERIC);
    ck_assert_ptr_nonnull(strstr(kfac_last_error(), "iteration 2: layer 2"));
    ck_assert_ptr_nonnull(strstr(kfac_last_error(), "factor G"));
    /* Layer 1's statistics were fine, but nothing was merged. */
    ck_assert_double_eq(c->f[0].A[0], A0);
    ck_assert_double_eq(c->f[1].G[0], G1);
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
        kfac_net_backward(net, m, 1.0f, 0);
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
        kfac_loss_sample_grad(KFAC_LOSS_BERNOULLI, m, 3, kfac_net_output(net), &r,
                              kfac_net_output_grad(net));
        kfac_net_backward(net, m, 1.0f, 0);
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

static void check_precondition(enum kfac_pi_norm norm)
{
    enum { M = 20 };
    struct kfac_rng r;
    kfac_rng_seed(&r, 4);
    struct kfac_net *net = test_net(M, KFAC_ACT_LINEAR, &r);
    struct kfac_curvature *c = kfac_curvature_new(net);
    float X[M * 3];
    for (int k = 1; k <= 3; k++) {
        fill_uniform(X, M * 3, &r, -1, 1);
        kfac_net_forward(net, M, X);
        fill_uniform(kfac_net_output_grad(net), M * 3, &r, -1, 1);
        kfac_net_backward(net, M, 1.0f, 0);
        ck_assert_int_eq(kfac_curvature_update(c, net, M, kfac_stats_decay(k, 0.95), k), 0);
    }
    ck_assert_int_eq(kfac_curvature_decompose(c, norm, 3), 0);
    float *V = kfac_floats_new(net->n_params), *out = kfac_floats_new(net->n_params);
    fill_uniform(V, net->n_params, &r, -1, 1);
    const double gamma = 0.3;
    kfac_curvature_precondition(c, net, gamma, V, -2.0f, out);
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
    check_precondition(KFAC_PI_TRACE);
}
END_TEST

START_TEST(precondition_matches_dense_solve_frobenius)
{
    check_precondition(KFAC_PI_FROBENIUS);
}
END_TEST

static Suite *curvature_suite(void)
{
    Suite *s = suite_create("curvature");
    TCase *tc = tcase_create("kfac");
    tcase_add_test(tc, factors_match_brute_force);
    tcase_add_test(tc, nonfinite_statistics_are_rejected);
    tcase_add_test(tc, sampled_G_converges_to_exact);
    tcase_add_test(tc, precondition_matches_dense_solve_trace);
    tcase_add_test(tc, precondition_matches_dense_solve_frobenius);
    suite_add_tcase(s, tc);
    return s;
}

KFAC_TEST_MAIN(curvature_suite)
