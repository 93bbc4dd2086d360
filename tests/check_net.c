/*
 * check_net.c: whole-network gradients (every hidden activation, every loss, with L2)
 * and forward-mode J·v against finite differences, for dense and for convolutional
 * networks (strides, padding, both poolings, a convolution as the output), and several
 * tangents in one pass against one at a time; layer spec parsing and its errors.
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
    struct kfac_layer_spec specs[3] = {{.d_out = 5, .act = act}, {.d_out = 3, .act = act}, {.d_out = d_out, .act = kfac_loss_link(loss)}};
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
    struct kfac_batch b = {.m = M, .x = X, .t = T};
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
    memcpy(Jv, kfac_net_jvp(net, M, 1, (const float *[]){V}), sizeof Jv);
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

/* Convolutional networks: each spec with the loss its output takes. Smooth activations
 * and average pooling allow a coarse step; max pooling and ReLU need a fine one. */
static const struct {
    const char *spec;
    enum kfac_loss loss;
    int smooth;
} conv_nets[] = {
    {"2x6x5-conv(3,3,stride=2,pad=1):tanh-avgpool(2,stride=1)-flatten-4:logistic",
     KFAC_LOSS_BERNOULLI, 1},
    {"2x7x7-conv(3,2x3,pad=1):tanh-maxpool(2)-conv(2,2):logistic-flatten-3:softmax",
     KFAC_LOSS_SOFTMAX, 0},
    {"3x5x5-conv(2,3,stride=2):linear-flatten-5:relu-2:linear", KFAC_LOSS_SQUARED, 0},
    {"1x5x4-conv(2,3,pad=1):tanh-conv(1,2x3,pad=1):logistic", KFAC_LOSS_BERNOULLI, 1},
};

START_TEST(conv_gradient_by_finite_differences)
{
    struct kfac_rng r;
    kfac_rng_seed(&r, 300 + (uint64_t)_i);
    struct kfac_net *net = spec_net(conv_nets[_i].spec, M, &r);
    enum kfac_loss loss = conv_nets[_i].loss;
    int n = net->d_out;
    float *X = kfac_floats_new((size_t)M * net->d_in), *T = kfac_floats_new((size_t)M * n);
    fill_uniform(X, (size_t)M * net->d_in, &r, -1, 1);
    for (int c = 0; c < M; c++)
        for (int j = 0; j < n; j++)
            T[c * n + j] = loss == KFAC_LOSS_SOFTMAX ? (j == c % n) : (float)kfac_rng_uniform(&r);
    struct kfac_batch b = {.m = M, .x = X, .t = T};
    double l2 = 0.01;
    kfac_objective(net, loss, l2, &b, 1);
    float *grad = kfac_floats_new(net->n_params);
    memcpy(grad, net->grads, net->n_params * sizeof *grad);
    float h = conv_nets[_i].smooth ? 1e-2f : 1e-3f;
    for (size_t i = 0; i < net->n_params; i++) {
        float keep = net->params[i];
        net->params[i] = keep + h;
        double up = kfac_objective(net, loss, l2, &b, 0);
        net->params[i] = keep - h;
        double down = kfac_objective(net, loss, l2, &b, 0);
        net->params[i] = keep;
        ck_assert_close(grad[i], (up - down) / (2.0 * h), conv_nets[_i].smooth ? 5e-3 : 1e-2);
    }
    kfac_floats_free(grad);
    kfac_floats_free(X);
    kfac_floats_free(T);
    kfac_net_free(net);
}
END_TEST

START_TEST(conv_jvp_by_finite_differences)
{
    struct kfac_rng r;
    kfac_rng_seed(&r, 400 + (uint64_t)_i);
    struct kfac_net *net = spec_net(conv_nets[_i].spec, M, &r);
    size_t np = net->n_params, no = (size_t)M * net->d_out;
    float *X = kfac_floats_new((size_t)M * net->d_in), *V = kfac_floats_new(np),
          *theta = kfac_floats_new(np), *Jv = kfac_floats_new(no), *up = kfac_floats_new(no),
          *down = kfac_floats_new(no);
    fill_uniform(X, (size_t)M * net->d_in, &r, -1, 1);
    fill_uniform(V, np, &r, -1, 1);
    memcpy(theta, net->params, np * sizeof *theta);
    kfac_net_forward(net, M, X);
    memcpy(Jv, kfac_net_jvp(net, M, 1, (const float *[]){V}), no * sizeof *Jv);
    float h = conv_nets[_i].smooth ? 1e-3f : 1e-4f;
    for (size_t i = 0; i < np; i++)
        net->params[i] = theta[i] + h * V[i];
    kfac_net_forward(net, M, X);
    memcpy(up, kfac_net_logits(net), no * sizeof *up);
    for (size_t i = 0; i < np; i++)
        net->params[i] = theta[i] - h * V[i];
    kfac_net_forward(net, M, X);
    memcpy(down, kfac_net_logits(net), no * sizeof *down);
    for (size_t i = 0; i < no; i++)
        ck_assert_close(Jv[i], (up[i] - down[i]) / (2.0 * h), conv_nets[_i].smooth ? 5e-3 : 2e-2);
    kfac_floats_free(X);
    kfac_floats_free(V);
    kfac_floats_free(theta);
    kfac_floats_free(Jv);
    kfac_floats_free(up);
    kfac_floats_free(down);
    kfac_net_free(net);
}
END_TEST

/* Three tangents in one forward-mode pass give each one's J·v alone: the stacked rows
 * take the m cases' activations and maxima, never rows of their own. */
START_TEST(stacked_jvp_matches_each_tangent)
{
    enum { T = 3 };
    const char *spec = _i < 4 ? conv_nets[_i].spec : "6-5:tanh-4:logistic-3:linear";
    struct kfac_rng r;
    kfac_rng_seed(&r, 500 + (uint64_t)_i);
    struct kfac_net *net = spec_net(spec, T * M, &r);
    size_t np = net->n_params, no = (size_t)M * net->d_out;
    float *X = kfac_floats_new((size_t)M * net->d_in), *V[T], *each = kfac_floats_new(T * no);
    fill_uniform(X, (size_t)M * net->d_in, &r, -1, 1);
    kfac_net_forward(net, M, X);
    for (int t = 0; t < T; t++) {
        V[t] = kfac_floats_new(np);
        fill_uniform(V[t], np, &r, -1, 1);
        memcpy(each + t * no, kfac_net_jvp(net, M, 1, (const float *[]){V[t]}), no * sizeof *each);
    }
    const float *stacked = kfac_net_jvp(net, M, T, (const float *const *)V);
    for (size_t i = 0; i < T * no; i++)
        ck_assert_close(stacked[i], each[i], 1e-5);
    for (int t = 0; t < T; t++)
        kfac_floats_free(V[t]);
    kfac_floats_free(X);
    kfac_floats_free(each);
    kfac_net_free(net);
}
END_TEST

START_TEST(parse_and_format_layers)
{
    struct kfac_layer_spec *s;
    struct kfac_shape in;
    int n;
    ck_assert_int_eq(kfac_net_parse_layers("784-1000:logistic - 30:linear-784:logistic", &in, &s,
                                           &n),
                     0);
    ck_assert_int_eq(in.c, 784);
    ck_assert_int_eq(in.h * in.w, 1);
    ck_assert_int_eq(n, 3);
    ck_assert_int_eq(s[1].d_out, 30);
    ck_assert_int_eq(s[1].act, KFAC_ACT_LINEAR);
    char buf[256];
    kfac_net_format_layers(&in, s, n, buf, sizeof buf);
    ck_assert_str_eq(buf, "784-1000:logistic-30:linear-784:logistic");
    struct kfac_net *net;
    ck_assert_int_eq(kfac_net_new_shaped(&in, s, n, &net), 0);
    ck_assert_uint_eq(net->n_params, 1000u * 785 + 30u * 1001 + 784u * 31);
    kfac_net_free(net);
    free(s);
}
END_TEST

/* LeNet-5's spec: shapes, parameter counts and the round trip through the formatter. */
START_TEST(parse_and_build_lenet)
{
    static const char *spec = "1x28x28-conv(6,5,pad=2):relu-maxpool(2)-conv(16, 5):relu-"
                              "avgpool(2)-flatten-120:relu-84:relu-10:softmax";
    struct kfac_layer_spec *s;
    struct kfac_shape in;
    int n;
    ck_assert_int_eq(kfac_net_parse_layers(spec, &in, &s, &n), 0);
    ck_assert_int_eq(in.c, 1);
    ck_assert_int_eq(in.h, 28);
    ck_assert_int_eq(in.w, 28);
    ck_assert_int_eq(n, 8);
    char buf[256];
    kfac_net_format_layers(&in, s, n, buf, sizeof buf);
    ck_assert_str_eq(buf, "1x28x28-conv(6,5,pad=2):relu-maxpool(2)-conv(16,5):relu-avgpool(2)-"
                          "flatten-120:relu-84:relu-10:softmax");
    struct kfac_net *net;
    ck_assert_int_eq(kfac_net_new_shaped(&in, s, n, &net), 0);
    static const int shapes[8][3] = {{6, 28, 28}, {6, 14, 14}, {16, 10, 10}, {16, 5, 5},
                                     {400, 1, 1}, {120, 1, 1}, {84, 1, 1},   {10, 1, 1}};
    for (int i = 0; i < n; i++) {
        ck_assert_int_eq(net->layers[i].out_shape.c, shapes[i][0]);
        ck_assert_int_eq(net->layers[i].out_shape.h, shapes[i][1]);
        ck_assert_int_eq(net->layers[i].out_shape.w, shapes[i][2]);
    }
    ck_assert_int_eq(net->n_blocks, 5);
    ck_assert_int_eq(net->blocks[1]->index, 2);
    ck_assert_int_eq(net->layers[0].n_pos, 784);
    ck_assert_int_eq(net->layers[2].d_in, 6 * 25);
    ck_assert_uint_eq(net->n_params, 6u * 26 + 16u * 151 + 120u * 401 + 84u * 121 + 10u * 85);
    ck_assert_int_eq(net->d_in, 784);
    ck_assert_int_eq(net->d_out, 10);
    kfac_net_free(net);
    free(s);
    /* Strides, rectangular windows and the formatter's defaults. */
    ck_assert_int_eq(kfac_net_parse_layers("3x9x8-conv(4,3x2,stride=2,pad=1):tanh-maxpool(2x1,"
                                           "stride=1)-flatten-2:linear",
                                           &in, &s, &n),
                     0);
    kfac_net_format_layers(&in, s, n, buf, sizeof buf);
    ck_assert_str_eq(buf, "3x9x8-conv(4,3x2,stride=2,pad=1):tanh-maxpool(2x1,stride=1)-flatten-"
                          "2:linear");
    ck_assert_int_eq(kfac_net_new_shaped(&in, s, n, &net), 0);
    ck_assert_int_eq(net->layers[0].out_shape.h, 5);
    ck_assert_int_eq(net->layers[0].out_shape.w, 5);
    ck_assert_int_eq(net->layers[1].out_shape.h, 4);
    ck_assert_int_eq(net->layers[1].out_shape.w, 5);
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
        {"1x28-30:linear", "expected CxHxW"},
        {"1x28x28-conv(6):relu", "expected conv(CHANNELS,WINDOW...)"},
        {"1x28x28-conv(6,5,dilation=2):relu", "unknown option at 'dilation=2)"},
        {"1x28x28-maxpool(2,pad=1)", "expected stride=S"},
        {"1x28x28-maxpool(2x3)", "a 2x3 pooling window needs stride=S"},
        {"1x28x28-conv(6,5:relu", "expected ')'"},
        {"1x28x28-pool(2)", "expected WIDTH:ACTIVATION, conv(...)"},
        {"1x28x28-conv(0,5):relu", "layer 1: expected a channel count between 1"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct kfac_layer_spec *s = NULL;
        struct kfac_shape in;
        int n;
        ck_assert_int_eq(kfac_net_parse_layers(bad[i][0], &in, &s, &n), KFAC_EINVAL);
        ck_assert_msg(strstr(kfac_last_error(), bad[i][1]), "'%s': message '%s' lacks '%s'",
                      bad[i][0], kfac_last_error(), bad[i][1]);
    }
    /* Layers that parse but do not fit together. */
    static const char *unfit[][2] = {
        {"1x28x28-10:softmax", "layer 1: a dense layer needs a vector input, but gets a 1x28x28 "
                               "map (put flatten before it)"},
        {"784-conv(4,3):relu-flatten-2:linear", "layer 1: a 3x3 window (padding 0) does not fit"},
        {"1x4x4-conv(2,3,pad=3):relu-flatten-1:linear", "padding below the window"},
        {"1x4x4-conv(2,3):softmax-flatten-1:linear", "softmax is only allowed on a dense output"},
        {"1x4x4-maxpool(2)-flatten", "no layer with parameters"},
        {"1x4x4-maxpool(5)-flatten-2:linear", "layer 1: a 5x5 window"},
        {"1x4x4-conv(2,3):logistic", "layer 1: a network that ends in a map of several channels"},
        {"1x4x4-conv(2,3):logistic-flatten", "layer 2: a network that ends in a map"},
    };
    for (size_t i = 0; i < sizeof unfit / sizeof *unfit; i++) {
        struct kfac_layer_spec *s = NULL;
        struct kfac_shape in;
        int n;
        struct kfac_net *net = NULL;
        ck_assert_int_eq(kfac_net_parse_layers(unfit[i][0], &in, &s, &n), 0);
        ck_assert_int_eq(kfac_net_new_shaped(&in, s, n, &net), KFAC_EINVAL);
        ck_assert_ptr_null(net);
        ck_assert_msg(strstr(kfac_last_error(), unfit[i][1]), "'%s': message '%s' lacks '%s'",
                      unfit[i][0], kfac_last_error(), unfit[i][1]);
        free(s);
    }
    struct kfac_layer_spec soft[2] = {{.d_out = 10, .act = KFAC_ACT_SOFTMAX}, {.d_out = 3, .act = KFAC_ACT_LINEAR}};
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
    tcase_add_loop_test(tc, conv_gradient_by_finite_differences, 0, 4);
    tcase_add_loop_test(tc, conv_jvp_by_finite_differences, 0, 4);
    tcase_add_loop_test(tc, stacked_jvp_matches_each_tangent, 0, 5);
    tcase_add_test(tc, parse_and_format_layers);
    tcase_add_test(tc, parse_and_build_lenet);
    suite_add_tcase(s, tc);
    TCase *lim = tcase_create("limits");
    tcase_add_test(lim, parse_errors_name_the_part);
    suite_add_tcase(s, lim);
    return s;
}

KFAC_TEST_MAIN(net_suite)
