/*
 * check_loss.c: each loss's gradient by finite differences, its output Fisher against
 * the finite-difference Hessian, target sampling against the output Fisher in
 * expectation, numerical stability and the metrics.
 */
#include "kfac/loss.h"
#include "kfac/status.h"
#include "testutil.h"

#include <math.h>

enum { M = 3, N = 4 };

/* Random logits z and valid targets t for the loss. */
static void make_case(enum kfac_loss loss, struct kfac_rng *r, float *z, float *t)
{
    fill_uniform(z, M * N, r, -2, 2);
    for (int c = 0; c < M; c++) {
        double sum = 0;
        for (int j = 0; j < N; j++) {
            float v = (float)kfac_rng_uniform(r);
            t[c * N + j] = loss == KFAC_LOSS_SQUARED ? 3 * v - 1.5f : v;
            sum += v;
        }
        if (loss == KFAC_LOSS_SOFTMAX) /* a distribution over classes */
            for (int j = 0; j < N; j++)
                t[c * N + j] = (float)(t[c * N + j] / sum);
    }
}

START_TEST(gradient_by_finite_differences)
{
    enum kfac_loss loss = (enum kfac_loss)_i;
    struct kfac_rng r;
    kfac_rng_seed(&r, 20 + (uint64_t)_i);
    float z[M * N], t[M * N], y[M * N], g[M * N];
    make_case(loss, &r, z, t);
    kfac_activation_forward(kfac_loss_link(loss), M, N, z, N, y, N);
    kfac_loss_grad(loss, M, N, y, t, g);
    for (int i = 0; i < M * N; i++) {
        float keep = z[i], h = 1e-2f;
        z[i] = keep + h;
        double up = kfac_loss_sum(loss, M, N, z, t);
        z[i] = keep - h;
        double down = kfac_loss_sum(loss, M, N, z, t);
        z[i] = keep;
        ck_assert_close(g[i], (up - down) / (2.0 * h), 1e-3);
    }
}
END_TEST

START_TEST(fisher_is_the_hessian_in_the_logits)
{
    enum kfac_loss loss = (enum kfac_loss)_i;
    struct kfac_rng r;
    kfac_rng_seed(&r, 30 + (uint64_t)_i);
    float z[M * N], t[M * N], y[M * N], e[M * N], Fe[M * N], yp[M * N], ym[M * N];
    make_case(loss, &r, z, t);
    enum kfac_activation link = kfac_loss_link(loss);
    kfac_activation_forward(link, M, N, z, N, y, N);
    for (int k = 0; k < N; k++) {
        memset(e, 0, sizeof e);
        for (int c = 0; c < M; c++)
            e[c * N + k] = 1;
        kfac_loss_fisher_mul(loss, M, N, y, e, Fe);
        /* Column k of ∂(y − t)/∂z by central differences on every case at once. */
        float zp[M * N], zm[M * N], h = 1e-3f;
        for (int i = 0; i < M * N; i++)
            zp[i] = z[i] + h * e[i], zm[i] = z[i] - h * e[i];
        kfac_activation_forward(link, M, N, zp, N, yp, N);
        kfac_activation_forward(link, M, N, zm, N, ym, N);
        for (int i = 0; i < M * N; i++)
            ck_assert_close(Fe[i], (yp[i] - ym[i]) / (2.0 * h), 2e-3);
    }
}
END_TEST

/* Σ_j b_j b_jᵀ over the columns of kfac_loss_fisher_column() is F_R (from fisher_mul). */
START_TEST(fisher_columns_are_a_square_root)
{
    enum kfac_loss loss = (enum kfac_loss)_i;
    struct kfac_rng r;
    kfac_rng_seed(&r, 40 + (uint64_t)_i);
    float z[M * N], t[M * N], y[M * N], e[M * N], Fe[M * N], b[N][M * N];
    make_case(loss, &r, z, t);
    kfac_activation_forward(kfac_loss_link(loss), M, N, z, N, y, N);
    for (int j = 0; j < N; j++)
        kfac_loss_fisher_column(loss, M, N, y, j, b[j]);
    for (int k = 0; k < N; k++) {
        memset(e, 0, sizeof e);
        for (int c = 0; c < M; c++)
            e[c * N + k] = 1;
        kfac_loss_fisher_mul(loss, M, N, y, e, Fe);
        for (int c = 0; c < M; c++)
            for (int i = 0; i < N; i++) {
                double s = 0; /* (Σ_j b_j b_jᵀ)[i][k] */
                for (int j = 0; j < N; j++)
                    s += (double)b[j][c * N + i] * b[j][c * N + k];
                ck_assert_close(s, Fe[c * N + i], 1e-6);
            }
    }
}
END_TEST

START_TEST(sampled_gradients_match_the_fisher_in_expectation)
{
    enum kfac_loss loss = (enum kfac_loss)_i;
    struct kfac_rng r;
    kfac_rng_seed(&r, 40 + (uint64_t)_i);
    float z[N] = {-1.0f, 0.3f, 1.2f, 0.1f}, y[N], g[N], e[N], Fe[N];
    kfac_activation_forward(kfac_loss_link(loss), 1, N, z, N, y, N);
    double S[N][N] = {{0}};
    const int samples = 200000;
    for (int s = 0; s < samples; s++) {
        kfac_loss_sample_grad(loss, 1, N, y, kfac_rng_u64(&r), 0, 1, g);
        for (int a = 0; a < N; a++)
            for (int b = 0; b < N; b++)
                S[a][b] += (double)g[a] * g[b];
    }
    for (int b = 0; b < N; b++) {
        memset(e, 0, sizeof e);
        e[b] = 1;
        kfac_loss_fisher_mul(loss, 1, N, y, e, Fe);
        for (int a = 0; a < N; a++)
            ck_assert_double_eq_tol(S[a][b] / samples, Fe[a], 0.012);
    }
}
END_TEST

START_TEST(bernoulli_is_stable_for_large_logits)
{
    float z[2] = {200, -200}, t1[2] = {1, 0}, t0[2] = {0, 1};
    ck_assert_double_eq_tol(kfac_loss_sum(KFAC_LOSS_BERNOULLI, 1, 2, z, t1), 0, 1e-12);
    ck_assert_double_eq_tol(kfac_loss_sum(KFAC_LOSS_BERNOULLI, 1, 2, z, t0), 400, 1e-9);
    float zs[3] = {1000, 0, -1000}, ts[3] = {0, 1, 0};
    ck_assert_double_eq_tol(kfac_loss_sum(KFAC_LOSS_SOFTMAX, 1, 3, zs, ts), 1000, 1e-9);
}
END_TEST

START_TEST(metrics)
{
    float y[6] = {0.1f, 0.7f, 0.2f, 0.5f, 0.4f, 0.1f}, t[6] = {0, 1, 0, 0, 1, 0};
    ck_assert_close(kfac_sq_error_sum(2, 3, y, t),
                    0.01 + 0.09 + 0.04 + 0.25 + 0.36 + 0.01, 1e-6);
    ck_assert_int_eq(kfac_correct_count(2, 3, y, t), 1);
}
END_TEST

START_TEST(names)
{
    enum kfac_loss l;
    ck_assert_int_eq(kfac_loss_parse("softmax", &l), 0);
    ck_assert_int_eq(l, KFAC_LOSS_SOFTMAX);
    ck_assert_int_eq(kfac_loss_parse("hinge", &l), KFAC_EINVAL);
    ck_assert_int_eq(kfac_loss_link(KFAC_LOSS_BERNOULLI), KFAC_ACT_LOGISTIC);
    ck_assert_int_eq(kfac_loss_link(KFAC_LOSS_SQUARED), KFAC_ACT_LINEAR);
}
END_TEST

static Suite *loss_suite(void)
{
    Suite *s = suite_create("loss");
    TCase *tc = tcase_create("core");
    tcase_add_loop_test(tc, gradient_by_finite_differences, 0, 3);
    tcase_add_loop_test(tc, fisher_is_the_hessian_in_the_logits, 0, 3);
    tcase_add_loop_test(tc, sampled_gradients_match_the_fisher_in_expectation, 0, 3);
    tcase_add_loop_test(tc, fisher_columns_are_a_square_root, 0, 3);
    tcase_add_test(tc, metrics);
    tcase_add_test(tc, names);
    suite_add_tcase(s, tc);
    TCase *lim = tcase_create("limits");
    tcase_add_test(lim, bernoulli_is_stable_for_large_logits);
    suite_add_tcase(s, lim);
    return s;
}

KFAC_TEST_MAIN(loss_suite)
