/*
 * testutil.h: helpers shared by the Check suites: random fills, a small network, a
 * scratch directory, file writers for fixtures, K-FAC's default options, and the suite
 * runner main().
 */
#ifndef KFAC_TESTUTIL_H
#define KFAC_TESTUTIL_H

#include "kfac/net.h"
#include "kfac/optim.h"
#include "kfac/rng.h"
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* x (n) ~ U(lo, hi). */
static inline void fill_uniform(float *x, size_t n, struct kfac_rng *r, double lo, double hi)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(lo + (hi - lo) * kfac_rng_uniform(r));
}

/* The K-FAC options of ../shared/REFERENCE.md §2–§5 (λ0 = 150, τ1 = 1/8, ε ≤ 0.95,
 * T1 = 5, T2 = T3 = 20, γ ≤ 1): what the optimiser suites start from. */
static inline struct kfac_optim_opts test_kfac_opts(void)
{
    return (struct kfac_optim_opts){
        .type = KFAC_OPTIM_KFAC, .learning_rate = 0.01, .momentum = 0.9, .stats_fraction = 0.125,
        .model_fraction = 1, .stats_decay = 0.95, .lambda_every = 5, .gamma_every = 20,
        .inverse_every = 20, .lambda = 150, .gamma_max = 1, .use_momentum = 1,
        .kfoc_max_iter = KFAC_KFOC_MAX_ITER, .kfoc_tol = KFAC_KFOC_TOL};
}

/* φ(s) of a pointwise activation by its textbook formula (not softmax). */
static inline double test_phi(enum kfac_activation act, double s)
{
    switch (act) {
    case KFAC_ACT_LOGISTIC: return 1 / (1 + exp(-s));
    case KFAC_ACT_TANH: return tanh(s);
    case KFAC_ACT_RELU: return s > 0 ? s : 0;
    default: return s;
    }
}

/* A 3-4:tanh-3:OUT network with buffers for m cases and weights ~ U(−1, 1). */
static inline struct kfac_net *test_net(int m, enum kfac_activation out, struct kfac_rng *r)
{
    struct kfac_layer_spec specs[2] = {{.d_out = 4, .act = KFAC_ACT_TANH}, {.d_out = 3, .act = out}};
    struct kfac_net *net;
    ck_assert_int_eq(kfac_net_new(3, specs, 2, &net), 0);
    kfac_net_reserve(net, m);
    fill_uniform(net->params, net->n_params, r, -1, 1);
    return net;
}

/* The network of a layer spec (net.h syntax) with buffers for m cases and weights
 * ~ U(−1, 1). */
static inline struct kfac_net *spec_net(const char *spec, int m, struct kfac_rng *r)
{
    struct kfac_layer_spec *specs;
    struct kfac_shape in;
    int n;
    struct kfac_net *net;
    ck_assert_int_eq(kfac_net_parse_layers(spec, &in, &specs, &n), 0);
    ck_assert_int_eq(kfac_net_new_shaped(&in, specs, n, &net), 0);
    free(specs);
    kfac_net_reserve(net, m);
    fill_uniform(net->params, net->n_params, r, -1, 1);
    return net;
}

/* A fresh directory for this test's files (under $TMPDIR or /tmp); the path is static. */
static inline const char *scratch_dir(void)
{
    static char dir[512];
    if (!dir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/kfac-test-XXXXXX", base && *base ? base : "/tmp");
        ck_assert_ptr_nonnull(mkdtemp(dir));
    }
    return dir;
}

/* dir/name in a static rotating buffer (four live at once). */
static inline const char *scratch_file(const char *name)
{
    static char bufs[4][600];
    static int next;
    char *b = bufs[next++ % 4];
    snprintf(b, sizeof bufs[0], "%s/%s", scratch_dir(), name);
    return b;
}

static inline void write_bytes(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
}

static inline void write_text(const char *path, const char *text)
{
    write_bytes(path, text, strlen(text));
}

/* |a − b| ≤ tol · max(1, |a|, |b|). */
#define ck_assert_close(a, b, tol)                                                                  \
    do {                                                                                            \
        double a_ = (a), b_ = (b), s_ = fabs(a_) > fabs(b_) ? fabs(a_) : fabs(b_);                  \
        ck_assert_msg(fabs(a_ - b_) <= (tol) * (s_ > 1 ? s_ : 1), "%s = %.9g but %s = %.9g", #a,   \
                      a_, #b, b_);                                                                  \
    } while (0)

#define KFAC_TEST_MAIN(make_suite)                                                                  \
    int main(void)                                                                                  \
    {                                                                                               \
        SRunner *sr = srunner_create(make_suite());                                                 \
        srunner_run_all(sr, CK_NORMAL);                                                             \
        int failed = srunner_ntests_failed(sr);                                                     \
        srunner_free(sr);                                                                           \
        return failed ? EXIT_FAILURE : EXIT_SUCCESS;                                                \
    }

#endif
