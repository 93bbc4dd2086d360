/*
 * check_net.c: whole-network gradients (every hidden activation, every loss, with L2)
 * and forward-mode J·v against finite differences; layer spec parsing and its errors.
 */
#include "kfac/mat.h"
#include "kfac/net.h"
#include "kfac/optim.h"
#include "kfac/status.h"
#include "testutil.h"

#include <math.h>

enum { M = 5 };

/* A 4-5-3-out network: hidden activation act, output matched to loss. */
static struct kfac_net *small_net(enum kfac_activation act, enum kfac_loss loss, int d_out,
                                  struct kfac_rng *r)
{
    struct kfac_layer_spec specs[3] = {{5, act}, {3, act}, {d_out, kfac_loss_link(loss)}};
    struct kfac_net *net;
    ck_assert_int_eq(kfac_net_new(4, specs, 3, &net), 0);
    kfac_net_reserve(net, M);
    fill_uniform(net->params, net->n_params, r, -1, 1);
    return net;
}

static void make_targets(enum kfac_loss loss, int n, float *t, struct kfac_rng *r)
{
    for (int c = 0; c < M; c++)
        for (int j = 0; j < n; j++)
            t[c * n + j] = loss == KFAC_LOSS_SOFTMAX ? (j == c % n) : (float)kfac_rng_uniform(r);
}

START_TEST(gradient_by_finite_differences)
{
    static const enum kfac_activation acts[] = {KFAC_ACT_LOGISTIC, KFAC_ACT_TANH, KFAC_ACT_RELU,
                                                KFAC_ACT_LINEAR};
    enum kfac_activation act = acts[_i % 4];
    enum kfac_loss loss = (enum kfac_loss)(_i / 4);
    struct kfac_rng r;
    kfac_rng_seed(&r, 100 + (uint64_t)_i);
    int n = 3;
    struct kfac_net *net = small_net(act, loss, n, &r);
    float X[M * 4], T[M * 3];
    fill_uniform(X, sizeof X / sizeof *X, &r, -1, 1);
    make_targets(loss, n, T, &r);
    struct kfac_batch b = {M, X, T};
    double l2 = 0.01;
    kfac_objective(net, loss, l2, &b, 1);
    float *grad = kfac_floats_new(net->n_params);
    memcpy(grad, net->grads, net->n_params * sizeof *grad);
    for (size_t i = 0; i < net->n_params; i++) {
        /* ReLU: a small step, so that no pre-activation crosses its kink. */
        float keep = net->params[i], h = act == KFAC_ACT_RELU ? 1e-3f : 1e-2f;
        net->params[i] = keep + h;
        double up = kfac_objective(net, loss, l2, &b, 0);
        net->params[i] = keep - h;
        double down = kfac_objective(net, loss, l2, &b, 0);
        net->params[i] = keep;
        ck_assert_close(grad[i], (up - down) / (2.0 * h), act == KFAC_ACT_RELU ? 1e-2 : 5e-3);
    }
    kfac_floats_free(grad);
    kfac_net_free(net);
}
END_TEST

START_TEST(jvp_by_finite_differences)
{
    static const enum kfac_activation acts[] = {KFAC_ACT_LOGISTIC, KFAC_ACT_TANH, KFAC_ACT_LINEAR};
    struct kfac_rng r;
    kfac_rng_seed(&r, 200 + (uint64_t)_i);
    struct kfac_net *net = small_net(acts[_i], KFAC_LOSS_SQUARED, 3, &r);
    size_t np = net->n_params;
    float X[M * 4], *V = kfac_floats_new(np), *theta = kfac_floats_new(np), Jv[M * 3],
                    up[M * 3], down[M * 3];
    fill_uniform(X, sizeof X / sizeof *X, &r, -1, 1);
    fill_uniform(V, np, &r, -1, 1);
    memcpy(theta, net->params, np * sizeof *theta);
    kfac_net_forward(net, M, X);
    memcpy(Jv, kfac_net_jvp(net, M, V), sizeof Jv);
    float h = 1e-3f;
    for (size_t i = 0; i < np; i++)
        net->params[i] = theta[i] + h * V[i];
    kfac_net_forward(net, M, X);
    memcpy(up, kfac_net_logits(net), sizeof up);
    for (size_t i = 0; i < np; i++)
        net->params[i] = theta[i] - h * V[i];
    kfac_net_forward(net, M, X);
    memcpy(down, kfac_net_logits(net), sizeof down);
    for (int i = 0; i < M * 3; i++)
        ck_assert_close(Jv[i], (up[i] - down[i]) / (2.0 * h), 5e-3);
    kfac_floats_free(V);
    kfac_floats_free(theta);
    kfac_net_free(net);
}
END_TEST

START_TEST(parse_and_format_layers)
{
    struct kfac_layer_spec *s;
    int d_in, n;
    ck_assert_int_eq(kfac_net_parse_layers("784-1000:logistic - 30:linear-784:logistic", &d_in, &s,
                                           &n),
                     0);
    ck_assert_int_eq(d_in, 784);
    ck_assert_int_eq(n, 3);
    ck_assert_int_eq(s[1].d_out, 30);
    ck_assert_int_eq(s[1].act, KFAC_ACT_LINEAR);
    char buf[128];
    kfac_net_format_layers(d_in, s, n, buf, sizeof buf);
    ck_assert_str_eq(buf, "784-1000:logistic-30:linear-784:logistic");
    struct kfac_net *net;
    ck_assert_int_eq(kfac_net_new(d_in, s, n, &net), 0);
    ck_assert_uint_eq(net->n_params, 1000u * 785 + 30u * 1001 + 784u * 31);
    kfac_net_free(net);
    free(s);
}
END_TEST

START_TEST(parse_errors_name_the_part)
{
    static const char *bad[][2] = {
        {"", "input"},
        {"784", "no layers"},
        {"784-30", "WIDTH:ACTIVATION"},
        {"784-30:sigmoid", "unknown activation 'sigmoid'"},
        {"784-0:linear", "layer 1"},
        {"784-30:linear+10:linear", "unknown activation 'linear+10:linear'"},
        {"784 30:linear", "expected '-' before the next layer"},
        {"784-30:", "missing activation"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct kfac_layer_spec *s = NULL;
        int d_in, n;
        ck_assert_int_eq(kfac_net_parse_layers(bad[i][0], &d_in, &s, &n), KFAC_EINVAL);
        ck_assert_msg(strstr(kfac_last_error(), bad[i][1]), "'%s': message '%s' lacks '%s'",
                      bad[i][0], kfac_last_error(), bad[i][1]);
    }
    struct kfac_layer_spec soft[2] = {{10, KFAC_ACT_SOFTMAX}, {3, KFAC_ACT_LINEAR}};
    struct kfac_net *net;
    ck_assert_int_eq(kfac_net_new(4, soft, 2, &net), KFAC_EINVAL);
    ck_assert_ptr_null(net);
}
END_TEST

static Suite *net_suite(void)
{
    Suite *s = suite_create("net");
    TCase *tc = tcase_create("core");
    tcase_add_loop_test(tc, gradient_by_finite_differences, 0, 12);
    tcase_add_loop_test(tc, jvp_by_finite_differences, 0, 3);
    tcase_add_test(tc, parse_and_format_layers);
    suite_add_tcase(s, tc);
    TCase *lim = tcase_create("limits");
    tcase_add_test(lim, parse_errors_name_the_part);
    suite_add_tcase(s, lim);
    return s;
}

KFAC_TEST_MAIN(net_suite)
