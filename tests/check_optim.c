/*
 * check_optim.c: SGD with Nesterov momentum against its definition and the momentum
 * schedule's values; K-FAC's exact-Fisher products against a dense JᵀF_R J from finite
 * differences, the 2×2 quadratic model, the Levenberg–Marquardt rule against
 * REFERENCE.md, the invariance of K-FAC's trajectory under affine input transforms
 * (paper §4, Corollary 2), K-FAC against a tuned SGD baseline, and the guards that keep
 * non-finite steps out of the parameters; the model's reductions over the parameters
 * against plain loops.
 */
#include "kfac/checkpoint.h"
#include "kfac/mat.h"
#include "kfac/optim.h"
#include "kfac/status.h"
#include "testutil.h"

#include <lapacke.h>
#include <math.h>

enum { M = 8 };

static struct kfac_net *tiny_net(struct kfac_rng *r)
{
    struct kfac_layer_spec specs[2] = {{.d_out = 4, .act = KFAC_ACT_TANH}, {.d_out = 2, .act = KFAC_ACT_LINEAR}};
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
    struct kfac_batch b = {.m = M, .x = X, .t = T};
    struct kfac_optim_opts o = {.type = KFAC_OPTIM_SGD, .learning_rate = 0.1, .momentum = 0.9,
                                .momentum_schedule = KFAC_MOMENTUM_SUTSKEVER, .l2 = 1e-3};
    struct kfac_optim *opt;
    ck_assert_int_eq(kfac_optim_new(&o, net, KFAC_LOSS_SQUARED, &r, &opt), 0);
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
    struct kfac_batch b = {.m = M, .x = X, .t = T};
    struct kfac_optim_opts o = {.type = KFAC_OPTIM_SGD, .learning_rate = 0.1, .momentum = 0.9};
    struct kfac_optim *opt;
    ck_assert_int_eq(kfac_optim_new(&o, net, KFAC_LOSS_SQUARED, &r, &opt), 0);
    float *before = kfac_floats_new(net->n_params);
    memcpy(before, net->params, net->n_params * sizeof *before);
    double h, fig[4];
    ck_assert_int_eq(opt->ops->step(opt, &b, 17, &h, fig), KFAC_ENUMERIC);
    ck_assert(strstr(kfac_last_error(), "iteration 17: the objective is not finite: the batch's "
                                        "targets are not"));
    ck_assert_mem_eq(before, net->params, net->n_params * sizeof *before);
    /* The gradient check gives the sum of squares, and names the layer of a failure. */
    double sq = -1, want = 0;
    for (size_t i = 0; i < net->n_params; i++) {
        net->grads[i] = (float)(i % 7) - 3.0f;
        want += (double)net->grads[i] * net->grads[i];
    }
    ck_assert_int_eq(kfac_check_finite(net, net->grads, 3, "gradient", &sq), 0);
    ck_assert_close(sq, want, 1e-12);
    net->layers[1].dW[2] = INFINITY;
    ck_assert_int_eq(kfac_check_finite(net, net->grads, 3, "gradient", &sq), KFAC_ENUMERIC);
    ck_assert(strstr(kfac_last_error(), "iteration 3: the gradient of layer 2"));
    net->layers[0].dW[0] = NAN;
    ck_assert_int_eq(kfac_check_finite(net, net->grads, 4, "step", &sq), KFAC_ENUMERIC);
    ck_assert(strstr(kfac_last_error(), "iteration 4: the step of layer 1"));
    kfac_floats_free(before);
    kfac_optim_free(opt);
    kfac_net_free(net);
}
END_TEST

/* vᵀ(F + dI)w with F = (1/m) Σ_c J_cᵀ F_R(y_c) J_c, J by central differences of the logits and
 * F_R built densely from the predictions. */
static double dense_model_product(struct kfac_net *net, enum kfac_loss loss, int m,
                                  const float *X, const float *v, const float *w, double d)
{
    int n = net->d_out, P = (int)net->n_params;
    double *J = calloc((size_t)m * n * P, sizeof *J);
    const float h = 1e-2f;
    float *z = kfac_floats_new((size_t)m * n);
    for (int p = 0; p < P; p++) {
        float keep = net->params[p];
        net->params[p] = keep + h;
        kfac_net_forward(net, m, X);
        memcpy(z, kfac_net_logits(net), sizeof(float) * (size_t)(m * n));
        net->params[p] = keep - h;
        kfac_net_forward(net, m, X);
        for (int i = 0; i < m * n; i++)
            J[(size_t)i * P + p] = ((double)z[i] - kfac_net_logits(net)[i]) / (2.0 * h);
        net->params[p] = keep;
    }
    kfac_net_forward(net, m, X);
    const float *y = kfac_net_output(net);
    double total = 0;
    for (int c = 0; c < m; c++) {
        double jv[8] = {0}, jw[8] = {0};
        for (int o = 0; o < n; o++)
            for (int p = 0; p < P; p++) {
                jv[o] += J[(size_t)(c * n + o) * P + p] * v[p];
                jw[o] += J[(size_t)(c * n + o) * P + p] * w[p];
            }
        for (int a = 0; a < n; a++)
            for (int b = 0; b < n; b++) {
                double ya = y[c * n + a], yb = y[c * n + b], F;
                if (loss == KFAC_LOSS_BERNOULLI)
                    F = a == b ? ya * (1 - ya) : 0;
                else if (loss == KFAC_LOSS_SQUARED)
                    F = a == b;
                else
                    F = (a == b ? ya : 0) - ya * yb;
                total += jv[a] * F * jw[b];
            }
    }
    double vw = 0;
    for (int p = 0; p < P; p++)
        vw += (double)v[p] * w[p];
    free(J);
    kfac_floats_free(z);
    return total / m + d * vw;
}

START_TEST(fisher_products_match_dense_finite_differences)
{
    enum { MC = 5 };
    const enum kfac_activation outs[3] = {KFAC_ACT_LOGISTIC, KFAC_ACT_LINEAR, KFAC_ACT_SOFTMAX};
    const enum kfac_loss losses[3] = {KFAC_LOSS_BERNOULLI, KFAC_LOSS_SQUARED, KFAC_LOSS_SOFTMAX};
    for (int t = 0; t < 3; t++) {
        struct kfac_rng r;
        kfac_rng_seed(&r, 10 + t);
        struct kfac_net *net = test_net(MC, outs[t], &r);
        float X[MC * 3], *v = kfac_floats_new(net->n_params), *w = kfac_floats_new(net->n_params);
        float jv[MC * 3], scratch[MC * 3];
        fill_uniform(X, MC * 3, &r, -1, 1);
        fill_uniform(v, net->n_params, &r, -1, 1);
        fill_uniform(w, net->n_params, &r, -1, 1);
        const double damping = 0.37; /* λ + η */
        double want = dense_model_product(net, losses[t], MC, X, v, w, damping);
        kfac_net_forward(net, MC, X);
        memcpy(jv, kfac_net_jvp(net, MC, 1, (const float *[]){v}), sizeof jv);
        const float *jw = kfac_net_jvp(net, MC, 1, (const float *[]){w});
        double got = kfac_fisher_dot(net, losses[t], MC, jv, jw, scratch) +
                     damping * kfac_dot(net->n_params, v, w);
        ck_assert_msg(fabs(got - want) <= 1e-3 * fabs(want), "%s: %.7g from J·v, %.7g dense",
                      kfac_loss_name(losses[t]), got, want);
        /* Symmetric in v and w. */
        double swapped = kfac_fisher_dot(net, losses[t], MC, jw, jv, scratch) +
                         damping * kfac_dot(net->n_params, w, v);
        ck_assert_close(swapped, got, 1e-5);
        kfac_floats_free(v);
        kfac_floats_free(w);
        kfac_net_free(net);
    }
}
END_TEST

START_TEST(two_by_two_model_is_minimal)
{
    const double C[4] = {3.0, 1.2, 1.2, 2.0}, g[2] = {-4.0, 1.5};
    double alpha, mu;
    double change = kfac_model_solve(C, g, 2, &alpha, &mu);
    ck_assert_close(change, kfac_model_change(C, g, alpha, mu), 1e-12);
    ck_assert_double_lt(change, 0);
    /* Stationary: C [α μ]ᵀ = −g. */
    ck_assert_close(C[0] * alpha + C[1] * mu, -g[0], 1e-12);
    ck_assert_close(C[2] * alpha + C[3] * mu, -g[1], 1e-12);
    /* Every perturbation in the span raises M. */
    for (int k = 0; k < 16; k++) {
        double a = 1e-3 * cos(k * M_PI / 8), b = 1e-3 * sin(k * M_PI / 8);
        ck_assert_double_gt(kfac_model_change(C, g, alpha + a, mu + b), change);
    }
    /* The first step (no δ₀) is the 1-D solve along Δ. */
    change = kfac_model_solve(C, g, 1, &alpha, &mu);
    ck_assert_double_eq(mu, 0);
    ck_assert_close(alpha, 4.0 / 3.0, 1e-15);
    ck_assert_close(change, -0.5 * 16.0 / 3.0, 1e-15);
    /* An indefinite 2×2 system falls back to the 1-D solve too. */
    const double bad[4] = {1.0, 2.0, 2.0, 1.0};
    kfac_model_solve(bad, g, 2, &alpha, &mu);
    ck_assert_double_eq(mu, 0);
    ck_assert_close(alpha, 4.0, 1e-15);
}
END_TEST

START_TEST(levenberg_marquardt_lambda)
{
    ck_assert_double_eq_tol(kfac_lm_lambda(150, 0.9, 5, 0), 116.0671, 5e-5);
    ck_assert_double_eq_tol(kfac_lm_lambda(150, 0.1, 5, 0), 150 * pow(20.0 / 19.0, 5), 1e-9);
    ck_assert_double_eq_tol(kfac_lm_lambda(150, -INFINITY, 5, 0), 150 * pow(20.0 / 19.0, 5), 1e-9);
    ck_assert_double_eq_tol(kfac_lm_lambda(150, NAN, 5, 0), 150 * pow(20.0 / 19.0, 5), 1e-9);
    ck_assert_double_eq(kfac_lm_lambda(150, 0.5, 5, 0), 150);
    ck_assert_double_eq(kfac_lm_lambda(1e-3, 0.9, 5, 0.01), 0.01); /* λ_min */
}
END_TEST

/* Runs `iters` steps on the whole batch; the network then holds the last iterate. */
static void run_steps(const struct kfac_optim_opts *o, struct kfac_net *net, enum kfac_loss loss,
                      const struct kfac_batch *b, int iters, uint64_t seed)
{
    struct kfac_rng r;
    kfac_rng_seed(&r, seed);
    struct kfac_optim *opt;
    ck_assert_int_eq(kfac_optim_new(o, net, loss, &r, &opt), 0);
    double h, fig[16];
    for (long k = 1; k <= iters; k++)
        ck_assert_msg(opt->ops->step(opt, b, k, &h, fig) == 0, "%s", kfac_last_error());
    kfac_optim_free(opt);
}

/* Trains from W on X and from the reparameterised start on X' = XΩᵀ + b; returns the
 * largest output difference relative to the largest output change from the start. */
static double invariance_gap(const struct kfac_optim_opts *o)
{
    enum { MI = 40, DI = 4, DO = 3 };
    struct kfac_rng r;
    kfac_rng_seed(&r, 21);
    struct kfac_layer_spec specs[2] = {{.d_out = 6, .act = KFAC_ACT_TANH}, {.d_out = DO, .act = KFAC_ACT_LINEAR}};
    struct kfac_net *a, *b;
    ck_assert_int_eq(kfac_net_new(DI, specs, 2, &a), 0);
    ck_assert_int_eq(kfac_net_new(DI, specs, 2, &b), 0);
    kfac_net_reserve(a, MI);
    kfac_net_reserve(b, MI);
    fill_uniform(a->params, a->n_params, &r, -0.7, 0.7);
    memcpy(b->params, a->params, a->n_params * sizeof(float));
    float X[MI * DI], Xt[MI * DI], T[MI * DO];
    fill_uniform(X, MI * DI, &r, -1, 1);
    fill_uniform(T, MI * DO, &r, -1, 1);
    double Om[DI * DI], Oinv[DI * DI], off[DI];
    for (int i = 0; i < DI * DI; i++)
        Om[i] = (i % (DI + 1) == 0) + 0.4 * (kfac_rng_uniform(&r) - 0.5);
    for (int i = 0; i < DI; i++)
        off[i] = kfac_rng_uniform(&r) - 0.5;
    for (int c = 0; c < MI; c++)
        for (int i = 0; i < DI; i++) {
            double s = off[i];
            for (int j = 0; j < DI; j++)
                s += Om[i * DI + j] * X[c * DI + j];
            Xt[c * DI + i] = (float)s;
        }
    /* W' = W [Ω⁻¹, −Ω⁻¹b; 0, 1] for the first layer of b. */
    double LU[DI * DI];
    lapack_int ipiv[DI];
    memcpy(LU, Om, sizeof LU);
    for (int i = 0; i < DI * DI; i++)
        Oinv[i] = i % (DI + 1) == 0;
    ck_assert_int_eq(LAPACKE_dgesv(LAPACK_ROW_MAJOR, DI, DI, LU, DI, ipiv, Oinv, DI), 0);
    const struct kfac_layer *la = &a->layers[0];
    struct kfac_layer *lb = &b->layers[0];
    for (int u = 0; u < la->d_out; u++) {
        const float *wa = la->W + u * (DI + 1);
        float *wb = lb->W + u * (DI + 1);
        double bias = wa[DI];
        for (int j = 0; j < DI; j++) {
            double s = 0;
            for (int i = 0; i < DI; i++)
                s += wa[i] * Oinv[i * DI + j];
            wb[j] = (float)s;
            bias -= s * off[j];
        }
        wb[DI] = (float)bias;
    }
    float y0[MI * DO], ya[MI * DO], yb[MI * DO];
    kfac_net_forward(a, MI, X);
    memcpy(y0, kfac_net_output(a), sizeof y0);
    kfac_net_forward(b, MI, Xt);
    for (int i = 0; i < MI * DO; i++) /* the same function before training */
        ck_assert_float_eq_tol(kfac_net_output(b)[i], y0[i], 1e-5f);
    struct kfac_batch ba = {.m = MI, .x = X, .t = T}, bb = {.m = MI, .x = Xt, .t = T};
    run_steps(o, a, KFAC_LOSS_SQUARED, &ba, 10, 5);
    run_steps(o, b, KFAC_LOSS_SQUARED, &bb, 10, 5);
    kfac_net_forward(a, MI, X);
    memcpy(ya, kfac_net_output(a), sizeof ya);
    kfac_net_forward(b, MI, Xt);
    memcpy(yb, kfac_net_output(b), sizeof yb);
    double gap = 0, moved = 0;
    for (int i = 0; i < MI * DO; i++) {
        gap = fmax(gap, fabs(ya[i] - yb[i]));
        moved = fmax(moved, fabs(ya[i] - y0[i]));
    }
    ck_assert_double_gt(moved, 0.05); /* training did move the outputs */
    kfac_net_free(a);
    kfac_net_free(b);
    return gap / moved;
}

START_TEST(kfac_is_invariant_to_affine_input_transforms)
{
    struct kfac_optim_opts o = test_kfac_opts();
    o.step_rule = KFAC_STEP_FIXED;
    o.learning_rate = 0.3;
    o.use_momentum = 0;
    o.gamma = 1e-5; /* negligible damping, held fixed */
    o.gamma_every = 0;
    o.lambda_every = 0;
    o.inverse_every = 1;
    o.stats_fraction = 1;
    double kfac_gap = invariance_gap(&o);
    ck_assert_msg(kfac_gap < 2e-3, "K-FAC trajectories differ by %.3g of the change", kfac_gap);
    /* Block-tridiagonal K-FAC too: the input map acts on Ā_1 and Ā_{1,2} alike. The bias
     * coordinates of ā_1 and ā_2 are the same constant, so some conditional variances of
     * Σ_{1|2} are of the damping's size: it must be smaller still for the (non-invariant)
     * Tikhonov term to vanish (the gap is 0.02 at γ = 1e-5). */
    o.curvature = KFAC_CURVATURE_TRIDIAGONAL;
    o.gamma = 1e-7;
    double tri_gap = invariance_gap(&o);
    ck_assert_msg(tri_gap < 2e-3, "block-tridiagonal K-FAC trajectories differ by %.3g of the "
                                  "change", tri_gap);
    struct kfac_optim_opts sgd = {.type = KFAC_OPTIM_SGD, .learning_rate = 0.05};
    double sgd_gap = invariance_gap(&sgd);
    ck_assert_msg(sgd_gap > 0.05, "SGD's trajectories differ by only %.3g", sgd_gap);
}
END_TEST

/* A small deep autoencoder on data with three latent factors: 24-12-3-12-24. */
static double train_autoencoder(const struct kfac_optim_opts *o, int iters)
{
    enum { MA = 200, D = 24 };
    struct kfac_rng r;
    kfac_rng_seed(&r, 31);
    float X[MA * D], B[D * 3];
    fill_uniform(B, D * 3, &r, -2, 2);
    for (int c = 0; c < MA; c++) {
        double z[3] = {kfac_rng_normal(&r), kfac_rng_normal(&r), kfac_rng_normal(&r)};
        for (int i = 0; i < D; i++)
            X[c * D + i] =
                (float)(1 / (1 + exp(-(B[i * 3] * z[0] + B[i * 3 + 1] * z[1] + B[i * 3 + 2] * z[2]))));
    }
    struct kfac_layer_spec specs[4] = {{.d_out = 12, .act = KFAC_ACT_LOGISTIC},
                                       {.d_out = 3, .act = KFAC_ACT_LINEAR},
                                       {.d_out = 12, .act = KFAC_ACT_LOGISTIC},
                                       {.d_out = D, .act = KFAC_ACT_LOGISTIC}};
    struct kfac_net *net;
    ck_assert_int_eq(kfac_net_new(D, specs, 4, &net), 0);
    kfac_net_reserve(net, MA);
    kfac_net_init(net, KFAC_INIT_SPARSE, 15, &r);
    struct kfac_batch b = {.m = MA, .x = X, .t = X};
    run_steps(o, net, KFAC_LOSS_BERNOULLI, &b, iters, 7);
    kfac_net_forward(net, MA, X);
    double err = kfac_sq_error_sum(MA, D, kfac_net_output(net), X) / MA;
    kfac_net_free(net);
    return err;
}

/* K-FAC, K-FAC with K-FOC factors and block-tridiagonal K-FAC, against the best SGD
 * learning rate of a grid. */
START_TEST(kfac_variants_beat_tuned_sgd)
{
    enum { ITERS = 150 };
    double best_sgd = INFINITY, best_lr = 0;
    const double rates[] = {0.01, 0.03, 0.1, 0.3, 1, 3};
    for (int i = 0; i < 6; i++) {
        struct kfac_optim_opts sgd = {.type = KFAC_OPTIM_SGD, .learning_rate = rates[i],
                                      .momentum = 0.9};
        double e = train_autoencoder(&sgd, ITERS);
        if (e < best_sgd)
            best_sgd = e, best_lr = rates[i];
    }
    struct kfac_optim_opts kf = test_kfac_opts();
    kf.stats_fraction = 1;
    double e_kfac = train_autoencoder(&kf, ITERS);
    ck_assert_msg(e_kfac < 0.8 * best_sgd,
                  "after %d iterations K-FAC's error is %.4f, SGD's best (lr %g) %.4f", ITERS,
                  e_kfac, best_lr, best_sgd);
    kf.curvature = KFAC_CURVATURE_KFOC;
    double e_kfoc = train_autoencoder(&kf, ITERS);
    ck_assert_msg(e_kfoc < 0.8 * best_sgd && e_kfoc < 1.5 * e_kfac,
                  "after %d iterations K-FOC's error is %.4f, K-FAC's %.4f, SGD's best %.4f",
                  ITERS, e_kfoc, e_kfac, best_sgd);
    kf.curvature = KFAC_CURVATURE_TRIDIAGONAL;
    double e_tri = train_autoencoder(&kf, ITERS);
    ck_assert_msg(e_tri < 0.8 * best_sgd && e_tri < 1.5 * e_kfac,
                  "after %d iterations block-tridiagonal K-FAC's error is %.4f, K-FAC's %.4f, "
                  "SGD's best %.4f",
                  ITERS, e_tri, e_kfac, best_sgd);
}
END_TEST

/* The test network with a logistic output, and a batch of M cases with targets in [0, 1]
 * (X, T: M × 3). */
static struct kfac_net *bernoulli_case(uint64_t seed, struct kfac_rng *r, float *X, float *T)
{
    kfac_rng_seed(r, seed);
    struct kfac_net *net = test_net(M, KFAC_ACT_LOGISTIC, r);
    fill_uniform(X, M * 3, r, -1, 1);
    fill_uniform(T, M * 3, r, 0, 1);
    return net;
}

START_TEST(kfac_first_step_and_figures)
{
    struct kfac_rng r;
    float X[M * 3], T[M * 3];
    struct kfac_net *net = bernoulli_case(41, &r, X, T);
    struct kfac_batch b = {.m = M, .x = X, .t = T};
    struct kfac_optim_opts o = test_kfac_opts();
    o.l2 = 1e-3;
    struct kfac_optim *opt;
    ck_assert_int_eq(kfac_optim_new(&o, net, KFAC_LOSS_BERNOULLI, &r, &opt), 0);
    int n = kfac_optim_n_columns(opt);
    ck_assert_int_eq(n, 12);
    ck_assert_str_eq(opt->ops->columns[0], "lambda");
    double fig[12], h;
    ck_assert_int_eq(opt->ops->step(opt, &b, 1, &h, fig), 0);
    ck_assert_double_eq(fig[4], 0);       /* μ: no previous step */
    ck_assert_double_gt(fig[3], 0);       /* α */
    ck_assert_double_lt(fig[5], 0);       /* M(δ) − M(0) */
    ck_assert(isnan(fig[2]));             /* ρ only every T1 iterations */
    ck_assert_double_eq_tol(fig[1], sqrt(150 + 1e-3), 1e-12); /* γ0 = sqrt(λ0 + η) */
    for (long k = 2; k <= 5; k++)
        ck_assert_int_eq(opt->ops->step(opt, &b, k, &h, fig), 0);
    ck_assert(isfinite(fig[2]));
    ck_assert_double_ne(fig[4], 0);
    /* λ moved by the rule at k = 5 from the ρ reported. */
    ck_assert_double_eq_tol(fig[0], kfac_lm_lambda(150, fig[2], 5, 0), 1e-9);
    kfac_optim_free(opt);
    kfac_net_free(net);
}
END_TEST

START_TEST(kfoc_step_and_figures)
{
    struct kfac_rng r;
    float X[M * 3], T[M * 3];
    struct kfac_net *net = bernoulli_case(43, &r, X, T);
    struct kfac_batch b = {.m = M, .x = X, .t = T};
    struct kfac_optim_opts o = test_kfac_opts();
    o.curvature = KFAC_CURVATURE_KFOC;
    o.stats_fraction = 1;
    struct kfac_optim *opt;
    ck_assert_int_eq(kfac_optim_new(&o, net, KFAC_LOSS_BERNOULLI, &r, &opt), 0);
    ck_assert_int_eq(kfac_optim_n_columns(opt), 13);
    ck_assert_str_eq(opt->ops->columns[12], "kfoc_iterations");
    double fig[13], h, first = 0;
    for (long k = 1; k <= 10; k++) {
        ck_assert_int_eq(opt->ops->step(opt, &b, k, &h, fig), 0);
        ck_assert_double_ge(fig[12], 1);
        ck_assert_double_le(fig[12], KFAC_KFOC_MAX_ITER);
        if (k == 1)
            first = h;
    }
    ck_assert_double_lt(h, first);
    /* n_max bounds the count the log reports. */
    kfac_optim_free(opt);
    o.kfoc_max_iter = 1;
    ck_assert_int_eq(kfac_optim_new(&o, net, KFAC_LOSS_BERNOULLI, &r, &opt), 0);
    ck_assert_int_eq(opt->ops->step(opt, &b, 1, &h, fig), 0);
    ck_assert_double_eq(fig[12], 1);
    kfac_optim_free(opt);
    kfac_net_free(net);
}
END_TEST

/* The value of the optimiser's checkpoint item `name` (a double). */
static double state_double(struct kfac_optim *opt, const char *name)
{
    struct kfac_state st = {0};
    opt->ops->state(opt, &st);
    double v = NAN;
    for (int i = 0; i < st.n; i++)
        if (strcmp(st.items[i].name, name) == 0)
            v = *(const double *)st.items[i].ptr;
    kfac_state_free(&st);
    return v;
}

/* kfoc_average = running folds batch p in with weight m_p/(cases so far): for equal
 * batches ε = 1 − 1/k, which is exponential's ε while its cap is not reached, so the two
 * runs agree to the bit, and differ from exponential capped at 0.5 from k = 3 on. The
 * count follows the cases, and a failed attempt leaves it as it was. */
START_TEST(kfoc_average_follows_its_formula)
{
    enum { STEPS = 5 };
    struct kfac_rng r[3];
    float X[3][M * 3], T[3][M * 3];
    struct kfac_net *net[3];
    struct kfac_optim *opt[3];
    const int average[3] = {KFAC_KFOC_RUNNING, KFAC_KFOC_EXPONENTIAL, KFAC_KFOC_EXPONENTIAL};
    const double cap[3] = {0.5, 0.999999, 0.5};
    for (int i = 0; i < 3; i++) {
        net[i] = bernoulli_case(44, &r[i], X[i], T[i]);
        struct kfac_optim_opts o = test_kfac_opts();
        o.curvature = KFAC_CURVATURE_KFOC;
        o.stats_fraction = 1;
        o.kfoc_average = average[i];
        o.stats_decay = cap[i];
        ck_assert_int_eq(kfac_optim_new(&o, net[i], KFAC_LOSS_BERNOULLI, &r[i], &opt[i]), 0);
    }
    double fig[13], h;
    for (long k = 1; k <= STEPS; k++)
        for (int i = 0; i < 3; i++) {
            struct kfac_batch b = {.m = M, .x = X[i], .t = T[i]};
            ck_assert_int_eq(opt[i]->ops->step(opt[i], &b, k, &h, fig), 0);
        }
    size_t bytes = net[0]->n_params * sizeof(float);
    ck_assert_mem_eq(net[0]->params, net[1]->params, bytes);
    ck_assert(memcmp(net[0]->params, net[2]->params, bytes) != 0);
    ck_assert_double_eq(state_double(opt[0], "kfac.kfoc_cases"), STEPS * M);
    /* A smaller batch adds its own cases; a failed attempt adds none. */
    struct kfac_batch half = {.m = M / 2, .x = X[0], .t = T[0]};
    ck_assert_int_eq(opt[0]->ops->step(opt[0], &half, STEPS + 1, &h, fig), 0);
    ck_assert_double_eq(state_double(opt[0], "kfac.kfoc_cases"), STEPS * M + M / 2);
    X[0][1] = NAN;
    ck_assert_int_eq(opt[0]->ops->step(opt[0], &half, STEPS + 2, &h, fig), KFAC_ENUMERIC);
    ck_assert_double_eq(state_double(opt[0], "kfac.kfoc_cases"), STEPS * M + M / 2);
    for (int i = 0; i < 3; i++) {
        kfac_optim_free(opt[i]);
        kfac_net_free(net[i]);
    }
}
END_TEST

START_TEST(kfac_keeps_non_finite_out)
{
    struct kfac_rng r;
    kfac_rng_seed(&r, 42);
    struct kfac_net *net = test_net(M, KFAC_ACT_LINEAR, &r);
    float X[M * 3], T[M * 3];
    fill_uniform(X, M * 3, &r, -1, 1);
    fill_uniform(T, M * 3, &r, -1, 1);
    struct kfac_batch b = {.m = M, .x = X, .t = T};
    struct kfac_optim_opts o = test_kfac_opts();
    struct kfac_optim *opt;
    ck_assert_int_eq(kfac_optim_new(&o, net, KFAC_LOSS_SQUARED, &r, &opt), 0);
    double fig[12], h;
    ck_assert_int_eq(opt->ops->step(opt, &b, 1, &h, fig), 0);
    float *before = kfac_floats_new(net->n_params);
    memcpy(before, net->params, net->n_params * sizeof *before);
    X[4] = NAN;
    ck_assert_int_eq(opt->ops->step(opt, &b, 2, &h, fig), KFAC_ENUMERIC);
    ck_assert(strstr(kfac_last_error(), "iteration 2: the objective is not finite: the batch's "
                                        "inputs are not"));
    /* With finite inputs, the first layer whose outputs are not finite is named, or the
     * loss when none is. */
    X[4] = 0.5f;
    kfac_objective(net, KFAC_LOSS_SQUARED, 0, &b, 0);
    ck_assert_int_eq(kfac_objective_error(net, &b, 4), KFAC_ENUMERIC);
    ck_assert_str_eq(kfac_last_error(), "iteration 4: the objective is not finite: the loss "
                                        "overflowed; the parameters were left unchanged");
    /* The forward pass is run again, chunk by chunk: the layer whose outputs are not
     * finite is named with chunks of one case as with one chunk. */
    float *w2 = net->layers[1].W, *w1 = net->layers[0].W, keep2 = w2[0], keep1 = w1[0];
    w2[0] = INFINITY;
    ck_assert_int_eq(kfac_objective_error(net, &b, 4), KFAC_ENUMERIC);
    ck_assert(strstr(kfac_last_error(), "the outputs of layer 2 are the first that are not"));
    struct kfac_net *one = test_net(1, KFAC_ACT_LINEAR, &r); /* chunks of one case */
    memcpy(one->params, net->params, net->n_params * sizeof *one->params);
    ck_assert_int_eq(kfac_objective_error(one, &b, 4), KFAC_ENUMERIC);
    ck_assert(strstr(kfac_last_error(), "the outputs of layer 2 are the first that are not"));
    kfac_net_free(one);
    w1[0] = NAN;
    ck_assert_int_eq(kfac_objective_error(net, &b, 4), KFAC_ENUMERIC);
    ck_assert(strstr(kfac_last_error(), "the outputs of layer 1 are the first that are not"));
    w2[0] = keep2, w1[0] = keep1;
    ck_assert_mem_eq(before, net->params, net->n_params * sizeof *before);
    /* A huge input overflows the statistics: reported with the layer, θ unchanged. */
    X[4] = 0.5f;
    X[1] = 1e30f; /* the first case: the statistics use ⌈m/8⌉ = 1 case */
    int rc = opt->ops->step(opt, &b, 3, &h, fig);
    ck_assert_int_eq(rc, KFAC_ENUMERIC);
    ck_assert(strstr(kfac_last_error(), "iteration 3"));
    ck_assert(strstr(kfac_last_error(), "layer 1"));
    ck_assert_mem_eq(before, net->params, net->n_params * sizeof *before);
    kfac_floats_free(before);
    kfac_optim_free(opt);
    kfac_net_free(net);
}
END_TEST

/* Gives `to` the optimiser state of `from`, an optimiser of the same configuration (the
 * items a checkpoint keeps: factors, inverses, λ, γ, δ₀, the targets' generator). */
static void copy_state(struct kfac_optim *from, struct kfac_optim *to)
{
    struct kfac_state a = {0}, b = {0};
    from->ops->state(from, &a);
    to->ops->state(to, &b);
    ck_assert_int_eq(a.n, b.n);
    for (int i = 0; i < a.n; i++) {
        ck_assert_str_eq(a.items[i].name, b.items[i].name);
        ck_assert_uint_eq(a.items[i].bytes, b.items[i].bytes);
        memcpy(b.items[i].ptr, a.items[i].ptr, a.items[i].bytes);
    }
    kfac_state_free(&a);
    kfac_state_free(&b);
}

/* LeNet-5 (K-FAC's KFC blocks for the convolutions; loop 1: K-FOC's factors, whose 10
 * statistics cases are kept chunk by chunk) on 40 random 28×28 digits, 20 iterations in
 * one chunk and in chunks of 7 (which divides neither the statistics' 10 cases nor the
 * model's 20 nor the batch). Each iteration starts both from the same state (the one-chunk
 * run's, copied), so that what is compared is one step's arithmetic, not a trajectory that
 * rounding makes diverge (K-FOC's does within a few iterations on some BLAS kernels): the
 * objective, λ, γ, α, μ, the model change and the parameters after the step agree to float
 * summation order: the objective to 1e-6, the parameters to 1e-4, and α, μ (on the scale of
 * 0.01 near 0) and the model change to 1e-3 relative. The largest difference of these three
 * seen with four of OpenBLAS's kernel sets was 3.1e-4, μ = 0.0014 at iteration 18. */
START_TEST(lenet5_in_chunks_matches_one_chunk)
{
    enum { B = 40 };
    const char *spec = "1x28x28-conv(6,5,pad=2):relu-maxpool(2)-conv(16,5):relu-maxpool(2)-"
                       "flatten-120:relu-84:relu-10:softmax";
    struct kfac_rng r;
    kfac_rng_seed(&r, 77);
    struct kfac_net *whole = spec_net(spec, B, &r), *chunked = spec_net(spec, 7, &r);
    size_t n = whole->n_params;
    for (size_t p = 0; p < n; p++)
        whole->params[p] *= 0.3f;
    float *X = kfac_floats_new((size_t)B * 784), T[B * 10] = {0};
    fill_uniform(X, (size_t)B * 784, &r, 0, 1);
    for (int c = 0; c < B; c++)
        T[c * 10 + kfac_rng_below(&r, 10)] = 1;
    struct kfac_batch b = {.m = B, .x = X, .t = T};
    struct kfac_optim_opts o = test_kfac_opts();
    o.stats_fraction = 0.25;
    o.model_fraction = 0.5;
    o.lambda = 1;
    o.gamma_every = 4;
    if (_i == 1) {
        o.curvature = KFAC_CURVATURE_KFOC;
        o.max_batch = B;
    }
    struct kfac_optim *ow, *oc;
    kfac_rng_seed(&r, 78);
    ck_assert_int_eq(kfac_optim_new(&o, whole, KFAC_LOSS_SOFTMAX, &r, &ow), 0);
    ck_assert_int_eq(kfac_optim_new(&o, chunked, KFAC_LOSS_SOFTMAX, &r, &oc), 0);
    double fw[13], fc[13], hw, hc, worst = 0;
    for (long k = 1; k <= 20; k++) {
        copy_state(ow, oc);
        memcpy(chunked->params, whole->params, n * sizeof(float));
        ck_assert_int_eq(ow->ops->step(ow, &b, k, &hw, fw), 0);
        ck_assert_int_eq(oc->ops->step(oc, &b, k, &hc, fc), 0);
        ck_assert_msg(fabs(hc - hw) <= 1e-6 * fabs(hw), "iteration %ld: objective %.9g, in one "
                      "chunk %.9g", k, hc, hw);
        ck_assert_double_eq(fc[0], fw[0]); /* λ */
        ck_assert_double_eq(fc[1], fw[1]); /* γ */
        for (int j = 3; j <= 5; j++) { /* α, μ, the model change */
            /* μ weighs the previous step: a μ near 0 is compared on the scale of 0.01. */
            double scale = j == 4 ? fmax(fabs(fw[j]), 0.01) : fabs(fw[j]) + 1e-6;
            double d = fabs(fc[j] - fw[j]) / scale;
            worst = fmax(worst, d);
            ck_assert_msg(d <= 1e-3, "iteration %ld: figure %d is %.9g, in one chunk %.9g", k, j,
                          fc[j], fw[j]);
        }
        for (size_t p = 0; p < n; p++)
            ck_assert_msg(fabs(chunked->params[p] - whole->params[p]) <=
                              1e-4 * (fabs(whole->params[p]) + 1e-2),
                          "iteration %ld, parameter %zu: %.9g, in one chunk %.9g", k, p,
                          chunked->params[p], whole->params[p]);
    }
    if (getenv("KFAC_TEST_VERBOSE"))
        printf("LeNet-5%s in chunks of 7: worst relative difference of alpha, mu, model "
               "change %.3g\n", _i ? " (K-FOC)" : "", worst);
    kfac_optim_free(ow);
    kfac_optim_free(oc);
    kfac_net_free(whole);
    kfac_net_free(chunked);
    kfac_floats_free(X);
}
END_TEST

/* The model's reductions over the parameters, kfac_gram() and kfac_combine(), against plain
 * loops in long double, on lengths around their eight-wide blocks; a NaN or an infinity in
 * the combination makes its sum of squares non-finite. */
START_TEST(gram_and_combine_match_the_loop)
{
    struct kfac_rng r;
    kfac_rng_seed(&r, 7);
    static const size_t lengths[] = {1, 7, 8, 9, 1003};
    enum { MOST = 1003 };
    float v[3][MOST], out[MOST];
    for (int c = 0; c < 5; c++) {
        size_t n = lengths[c];
        for (int a = 0; a < 3; a++)
            fill_uniform(v[a], n, &r, -2, 2);
        const float *xs[3] = {v[0], v[1], v[2]};
        for (int k = 1; k <= KFAC_GRAM_MAX; k++) {
            double g[9];
            kfac_gram(n, k, xs, g);
            for (int a = 0; a < k; a++)
                for (int b = 0; b < k; b++) {
                    long double want = 0;
                    for (size_t i = 0; i < n; i++)
                        want += (long double)v[a][i] * v[b][i];
                    ck_assert_double_eq_tol(g[a * k + b], (double)want,
                                            1e-12 * (1 + fabs((double)want)));
                }
        }
        double sq = kfac_combine(n, 0.75f, v[0], -1.5f, v[1], out);
        long double want = 0;
        for (size_t i = 0; i < n; i++) {
            ck_assert_float_eq_tol(out[i], 0.75f * v[0][i] - 1.5f * v[1][i], 1e-6f);
            want += (long double)out[i] * out[i];
        }
        ck_assert_double_eq_tol(sq, (double)want, 1e-12 * (1 + (double)want));
        v[1][n - 1] = NAN;
        ck_assert(isnan(kfac_combine(n, 0.75f, v[0], -1.5f, v[1], out)));
        v[1][n - 1] = 0, v[1][n / 2] = INFINITY;
        ck_assert(!isfinite(kfac_combine(n, 0.75f, v[0], -1.5f, v[1], out)));
    }
}
END_TEST

static Suite *optim_suite(void)
{
    Suite *s = suite_create("optim");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, nesterov_matches_definition);
    tcase_add_test(tc, momentum_schedule);
    tcase_add_test(tc, fisher_products_match_dense_finite_differences);
    tcase_add_test(tc, gram_and_combine_match_the_loop);
    tcase_add_test(tc, two_by_two_model_is_minimal);
    tcase_add_test(tc, levenberg_marquardt_lambda);
    tcase_add_test(tc, kfac_first_step_and_figures);
    tcase_add_test(tc, kfoc_step_and_figures);
    tcase_add_test(tc, kfoc_average_follows_its_formula);
    suite_add_tcase(s, tc);
    TCase *tr = tcase_create("training");
    tcase_set_timeout(tr, 60);
    tcase_add_test(tr, kfac_is_invariant_to_affine_input_transforms);
    tcase_add_test(tr, kfac_variants_beat_tuned_sgd);
    tcase_add_loop_test(tr, lenet5_in_chunks_matches_one_chunk, 0, 2);
    suite_add_tcase(s, tr);
    TCase *lim = tcase_create("limits");
    tcase_add_test(lim, non_finite_never_reaches_the_parameters);
    tcase_add_test(lim, kfac_keeps_non_finite_out);
    suite_add_tcase(s, lim);
    return s;
}

KFAC_TEST_MAIN(optim_suite)
