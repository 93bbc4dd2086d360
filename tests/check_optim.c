/*
 * check_optim.c: SGD with Nesterov momentum against its definition, the momentum
 * schedule's values, and the guard that keeps non-finite steps out of the parameters.
 */
#include "kfac/mat.h"
#include "kfac/optim.h"
#include "kfac/status.h"
#include "testutil.h"

#include <math.h>

enum { M = 8 };

static struct kfac_net *tiny_net(struct kfac_rng *r)
{
    struct kfac_layer_spec specs[2] = {{4, KFAC_ACT_TANH}, {2, KFAC_ACT_LINEAR}};
    struct kfac_net *net;
    ck_assert_int_eq(kfac_net_new(3, specs, 2, &net), 0);
    kfac_net_reserve(net, M);
    fill_uniform(net->params, net->n_params, r, -0.5, 0.5);
    return net;
}

START_TEST(nesterov_matches_definition)
{
    struct kfac_rng r;
    kfac_rng_seed(&r, 1);
    struct kfac_net *net = tiny_net(&r);
    size_t n = net->n_params;
    float X[M * 3], T[M * 2];
    fill_uniform(X, M * 3, &r, -1, 1);
    fill_uniform(T, M * 2, &r, -1, 1);
    struct kfac_batch b = {M, X, T};
    struct kfac_optim_opts o = {.type = KFAC_OPTIM_SGD, .learning_rate = 0.1, .momentum = 0.9,
                                .momentum_schedule = KFAC_MOMENTUM_SUTSKEVER, .l2 = 1e-3};
    struct kfac_optim *opt;
    ck_assert_int_eq(kfac_optim_new(&o, net, KFAC_LOSS_SQUARED, &opt), 0);
    ck_assert_int_eq(kfac_optim_n_columns(opt), 4);
    float *theta = kfac_floats_new(n), *v = kfac_floats_new(n), *after = kfac_floats_new(n);
    memcpy(theta, net->params, n * sizeof *theta);
    for (long k = 1; k <= 4; k++) {
        double h, fig[4];
        ck_assert_int_eq(opt->ops->step(opt, &b, k, &h, fig), 0);
        memcpy(after, net->params, n * sizeof *after);
        /* By hand: the gradient at θ + μv, then v ← μv − εg, θ ← θ + v. */
        double mu = kfac_momentum_at(&o, k);
        ck_assert_double_eq(fig[1], mu);
        for (size_t i = 0; i < n; i++)
            net->params[i] = theta[i] + (float)mu * v[i];
        double h_ref = kfac_objective(net, KFAC_LOSS_SQUARED, o.l2, &b, 1);
        ck_assert_close(h, h_ref, 1e-6);
        for (size_t i = 0; i < n; i++) {
            v[i] = (float)mu * v[i] - 0.1f * net->grads[i];
            theta[i] += v[i];
            ck_assert_close(after[i], theta[i], 1e-5);
        }
        memcpy(net->params, after, n * sizeof *after);
    }
    kfac_floats_free(theta);
    kfac_floats_free(v);
    kfac_floats_free(after);
    kfac_optim_free(opt);
    kfac_net_free(net);
}
END_TEST

START_TEST(momentum_schedule)
{
    struct kfac_optim_opts o = {.momentum = 0.995, .momentum_schedule = KFAC_MOMENTUM_SUTSKEVER};
    ck_assert_double_eq_tol(kfac_momentum_at(&o, 1), 0.5, 1e-12);
    ck_assert_double_eq_tol(kfac_momentum_at(&o, 249), 0.5, 1e-12);
    ck_assert_double_eq_tol(kfac_momentum_at(&o, 250), 0.75, 1e-12);
    ck_assert_double_eq_tol(kfac_momentum_at(&o, 750), 0.875, 1e-12);
    ck_assert_double_eq_tol(kfac_momentum_at(&o, 250 * 63), 1 - 1.0 / 128, 1e-12);
    ck_assert_double_eq_tol(kfac_momentum_at(&o, 250 * 1000), 0.995, 1e-12); /* the cap */
    o.momentum_schedule = KFAC_MOMENTUM_FIXED;
    o.momentum = 0.7;
    ck_assert_double_eq(kfac_momentum_at(&o, 5000), 0.7);
}
END_TEST

START_TEST(non_finite_never_reaches_the_parameters)
{
    struct kfac_rng r;
    kfac_rng_seed(&r, 2);
    struct kfac_net *net = tiny_net(&r);
    float X[M * 3], T[M * 2];
    fill_uniform(X, M * 3, &r, -1, 1);
    fill_uniform(T, M * 2, &r, -1, 1);
    T[3] = NAN; /* a poisoned target */
    struct kfac_batch b = {M, X, T};
    struct kfac_optim_opts o = {.type = KFAC_OPTIM_SGD, .learning_rate = 0.1, .momentum = 0.9};
    struct kfac_optim *opt;
    ck_assert_int_eq(kfac_optim_new(&o, net, KFAC_LOSS_SQUARED, &opt), 0);
    float *before = kfac_floats_new(net->n_params);
    memcpy(before, net->params, net->n_params * sizeof *before);
    double h, fig[4];
    ck_assert_int_eq(opt->ops->step(opt, &b, 17, &h, fig), KFAC_ENUMERIC);
    ck_assert(strstr(kfac_last_error(), "iteration 17"));
    ck_assert_mem_eq(before, net->params, net->n_params * sizeof *before);
    /* The gradient check names the layer. */
    memset(net->grads, 0, net->n_params * sizeof *net->grads);
    ck_assert_int_eq(kfac_check_gradient(net, 3), 0);
    net->layers[1].dW[2] = INFINITY;
    ck_assert_int_eq(kfac_check_gradient(net, 3), KFAC_ENUMERIC);
    ck_assert(strstr(kfac_last_error(), "iteration 3: the gradient of layer 2"));
    kfac_floats_free(before);
    kfac_optim_free(opt);
    kfac_net_free(net);
}
END_TEST

static Suite *optim_suite(void)
{
    Suite *s = suite_create("optim");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, nesterov_matches_definition);
    tcase_add_test(tc, momentum_schedule);
    suite_add_tcase(s, tc);
    TCase *lim = tcase_create("limits");
    tcase_add_test(lim, non_finite_never_reaches_the_parameters);
    suite_add_tcase(s, lim);
    return s;
}

KFAC_TEST_MAIN(optim_suite)
