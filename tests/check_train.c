/*
 * check_train.c: whole runs through the library: a small regression problem learns,
 * the log has the promised columns, Polyak averaging follows its formula, an existing
 * log is never overwritten, mismatched model and data are refused, and a run resumed from
 * a checkpoint ends where the run never stopped does.
 */
#include "kfac/mat.h"
#include "kfac/status.h"
#include "kfac/train.h"
#include "testutil.h"

#include <math.h>
#include <string.h>

/* y = x1·x2 + sin(x3) on 400 rows. */
static const char *make_csv(void)
{
    const char *p = scratch_file("train.csv");
    FILE *f = fopen(p, "w");
    struct kfac_rng r;
    kfac_rng_seed(&r, 9);
    fprintf(f, "x1,x2,x3,y\n");
    for (int i = 0; i < 400; i++) {
        double a = 2 * kfac_rng_uniform(&r) - 1, b = 2 * kfac_rng_uniform(&r) - 1,
               c = 3 * kfac_rng_uniform(&r) - 1.5;
        fprintf(f, "%.6f,%.6f,%.6f,%.6f\n", a, b, c, a * b + sin(c));
    }
    fclose(f);
    return p;
}

static void base_config(struct kfac_config *c, const char *csv, const char *log)
{
    kfac_config_defaults(c);
    char set[700];
    snprintf(set, sizeof set, "data.train=%s", csv);
    ck_assert_int_eq(kfac_config_set(c, set), 0);
    snprintf(set, sizeof set, "log.file=%s", log);
    ck_assert_int_eq(kfac_config_set(c, set), 0);
    static const char *sets[] = {"data.task=regression", "data.target_columns=y",
                                 "data.test_fraction=0.25", "data.standardize=true",
                                 "model.layers=3-20:tanh-1:linear", "model.init=glorot",
                                 "optimizer.learning_rate=0.05", "optimizer.momentum=0.9",
                                 "train.batch_size=50", "train.iterations=300",
                                 "log.eval_every=100", "log.progress=off"};
    for (size_t i = 0; i < sizeof sets / sizeof *sets; i++)
        ck_assert_int_eq(kfac_config_set(c, sets[i]), 0);
}

START_TEST(a_regression_run_learns_and_logs)
{
    const char *csv = make_csv(), *log = scratch_file("run.tsv");
    struct kfac_config c;
    base_config(&c, csv, log);
    struct kfac_run_opts opts = {.quiet = 1};
    struct kfac_run run;
    ck_assert_int_eq(kfac_run_prepare(&run, &c, &opts), 0);
    double before = kfac_evaluate(run.net, c.data.task, &run.train, 1000);
    ck_assert_int_eq(kfac_run_train(&run, NULL), 0);
    ck_assert_int_eq(run.iterations_done, 300);
    ck_assert_msg(run.final[0] < 0.5 * before, "train RMSE %g from %g", run.final[0], before);
    ck_assert(run.final[1] < 0.6 * before);
    kfac_run_free(&run);
    FILE *f = fopen(log, "r");
    char line[1024];
    ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
    ck_assert_str_eq(line, "iter\tseconds\tbatch\tobjective\tlr\tmu\tgrad_norm\tstep_norm\t"
                           "train_rmse\ttest_rmse\n");
    int rows = 0, evaluated = 0;
    while (fgets(line, sizeof line, f)) {
        rows++;
        evaluated += strstr(line, "nan") == NULL;
    }
    fclose(f);
    ck_assert_int_eq(rows, 300);
    ck_assert_int_eq(evaluated, 3);
    /* The log exists now: a second run must refuse to overwrite it, unless forced. */
    ck_assert_int_eq(kfac_run_prepare(&run, &c, &opts), KFAC_EEXIST);
    ck_assert(strstr(kfac_last_error(), "--force"));
    kfac_run_free(&run);
    f = fopen(log, "r");
    ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
    ck_assert(strncmp(line, "iter\t", 5) == 0); /* untouched */
    fclose(f);
    kfac_config_free(&c);
}
END_TEST

START_TEST(polyak_average_follows_its_formula)
{
    const char *csv = make_csv(), *log = scratch_file("polyak.tsv");
    struct kfac_config c;
    base_config(&c, csv, log);
    kfac_config_set(&c, "train.iterations=1");
    kfac_config_set(&c, "train.polyak_start=2");
    kfac_config_set(&c, "train.polyak_decay=0.6");
    struct kfac_run_opts opts = {.quiet = 1, .force = 1};
    struct kfac_run run;
    ck_assert_int_eq(kfac_run_prepare(&run, &c, &opts), 0);
    ck_assert_int_eq(kfac_run_train(&run, NULL), 0);
    ck_assert(isnan(run.final[2])); /* averaging has not started at k = 1 */
    kfac_run_free(&run);
    /* Over 5 iterations from k0 = 2: ξ = 0, 1/2, 0.6 (capped), 0.6. Recompute from each θ_k. */
    kfac_config_set(&c, "train.iterations=5");
    kfac_config_set(&c, "log.eval_every=1");
    ck_assert_int_eq(kfac_run_prepare(&run, &c, &opts), 0);
    size_t n = run.net->n_params;
    float *avg = kfac_floats_new(n);
    for (long k = 1; k <= 5; k++) {
        struct kfac_batch b;
        kfac_batcher_next(&run.batcher, 50, &b);
        double h, fig[4];
        ck_assert_int_eq(run.optim->ops->step(run.optim, &b, k, &h, fig), 0);
        if (k >= 2) {
            double xi = fmin(1.0 - 1.0 / (double)(k - 1), 0.6);
            for (size_t i = 0; i < n; i++)
                avg[i] = (float)(xi * avg[i] + (1 - xi) * run.net->params[i]);
        }
    }
    kfac_run_free(&run);
    /* The same run through the loop gives the same θ̄ (same seeds, same batches). */
    ck_assert_int_eq(kfac_run_prepare(&run, &c, &opts), 0);
    ck_assert_int_eq(kfac_run_train(&run, NULL), 0);
    for (size_t i = 0; i < n; i++)
        ck_assert_float_eq_tol(run.avg[i], avg[i], 1e-6f);
    ck_assert(!isnan(run.final[2]) && !isnan(run.final[3]));
    kfac_run_free(&run);
    kfac_floats_free(avg);
    kfac_config_free(&c);
}
END_TEST

START_TEST(model_and_data_must_agree)
{
    const char *csv = make_csv(), *log = scratch_file("mismatch.tsv");
    struct kfac_config c;
    base_config(&c, csv, log);
    struct kfac_run_opts opts = {.quiet = 1, .force = 1};
    struct kfac_run run;
    kfac_config_set(&c, "model.layers=4-20:tanh-1:linear");
    ck_assert_int_eq(kfac_run_prepare(&run, &c, &opts), KFAC_EINVAL);
    ck_assert(strstr(kfac_last_error(), "takes 4 inputs"));
    kfac_run_free(&run);
    kfac_config_set(&c, "model.layers=3-20:tanh-1:tanh");
    ck_assert_int_eq(kfac_run_prepare(&run, &c, &opts), KFAC_EINVAL);
    ck_assert(strstr(kfac_last_error(), "no matched loss"));
    kfac_run_free(&run);
    kfac_config_set(&c, "model.layers=3-20:tanh-1:linear");
    kfac_config_set(&c, "model.loss=bernoulli");
    ck_assert_int_eq(kfac_run_prepare(&run, &c, &opts), KFAC_EINVAL);
    ck_assert(strstr(kfac_last_error(), "needs a logistic output layer"));
    kfac_run_free(&run);
    kfac_config_free(&c);
}
END_TEST

START_TEST(evaluate_metrics)
{
    struct kfac_layer_spec spec = {.d_out = 2, .act = KFAC_ACT_LINEAR};
    struct kfac_net *net;
    ck_assert_int_eq(kfac_net_new(2, &spec, 1, &net), 0);
    kfac_net_reserve(net, 2);
    /* Identity weights: the output is the input. */
    net->params[0] = 1, net->params[4] = 1;
    float x[6] = {1, 2, 3, 4, 5, 6}, t[6] = {1, 2, 3, 5, 5, 8};
    struct kfac_dataset ds = {.n = 3, .d_x = 2, .d_t = 2, .shape = {2, 1, 1}, .x = x, .t = t};
    ck_assert_double_eq_tol(kfac_evaluate(net, KFAC_TASK_AUTOENCODER, &ds, 2), 5.0 / 3, 1e-9);
    ck_assert_double_eq_tol(kfac_evaluate(net, KFAC_TASK_REGRESSION, &ds, 2), sqrt(5.0 / 6), 1e-9);
    float onehot[6] = {0, 1, 1, 0, 0, 1};
    ds.t = onehot;
    ck_assert_double_eq_tol(kfac_evaluate(net, KFAC_TASK_CLASSIFICATION, &ds, 2), 2.0 / 3, 1e-9);
    kfac_net_free(net);
}
END_TEST

/* What a run ended with: its parameters, λ and γ (K-FAC's, else 0). */
struct outcome {
    float params[256];
    size_t n;
    double lambda, gamma;
};

/* Runs c for `iterations` iterations, from the checkpoint `resume` when not NULL, writing
 * its checkpoint at the end to `ckpt`; returns the run's state items' bytes concatenated
 * (run.seconds, the clock, left out) for comparison, and fills *out unless NULL. */
static unsigned char *run_state_bytes(struct kfac_config *c, long iterations, const char *resume,
                                      const char *ckpt, const char *log, size_t *len,
                                      struct outcome *end)
{
    char set[700];
    snprintf(set, sizeof set, "train.iterations=%ld", iterations);
    ck_assert_int_eq(kfac_config_set(c, set), 0);
    snprintf(set, sizeof set, "train.checkpoint=%s", ckpt);
    ck_assert_int_eq(kfac_config_set(c, set), 0);
    snprintf(set, sizeof set, "log.file=%s", log);
    ck_assert_int_eq(kfac_config_set(c, set), 0);
    struct kfac_run_opts opts = {.quiet = 1, .force = 1, .resume = resume};
    struct kfac_run run;
    ck_assert_msg(kfac_run_prepare(&run, c, &opts) == 0, "%s", kfac_last_error());
    ck_assert_msg(kfac_run_train(&run, NULL) == 0, "%s", kfac_last_error());
    struct kfac_state st = {0};
    kfac_run_state(&run, &st);
    *len = 0;
    unsigned char *out = NULL;
    if (end)
        memset(end, 0, sizeof *end);
    for (int i = 0; i < st.n; i++) {
        const struct kfac_state_item *it = &st.items[i];
        if (end && strcmp(it->name, "net.params") == 0) {
            ck_assert_uint_le(it->bytes, sizeof end->params);
            end->n = it->bytes / sizeof(float);
            memcpy(end->params, it->ptr, it->bytes);
        } else if (end && strcmp(it->name, "kfac.lambda") == 0) {
            end->lambda = *(const double *)it->ptr;
        } else if (end && strcmp(it->name, "kfac.gamma") == 0) {
            end->gamma = *(const double *)it->ptr;
        }
        if (strcmp(st.items[i].name, "run.seconds") == 0)
            continue;
        out = realloc(out, *len + st.items[i].bytes);
        memcpy(out + *len, st.items[i].ptr, st.items[i].bytes);
        *len += st.items[i].bytes;
    }
    kfac_state_free(&st);
    kfac_run_free(&run);
    return out;
}

/* Stopping at iteration 13 and resuming ends in the state of a run never stopped, to the
 * byte, for every optimiser: SGD, K-FAC (both γ rules), K-FOC factors, block-tridiagonal. */
START_TEST(resume_is_bit_identical)
{
    static const char *const variants[][3] = {
        {"optimizer.type=sgd", "optimizer.type=sgd", "optimizer.type=sgd"},
        {"optimizer.type=kfac", "optimizer.curvature=block-diagonal", "optimizer.gamma_rule=model"},
        {"optimizer.type=kfac", "optimizer.curvature=block-diagonal", "optimizer.gamma_rule=objective"},
        {"optimizer.type=kfac", "optimizer.curvature=kfoc", "optimizer.gamma_rule=model"},
        {"optimizer.type=kfac", "optimizer.curvature=kfac-tridiag", "optimizer.gamma_rule=model"},
    };
    /* scratch_file() rotates four buffers: keep copies. */
    char csv[600], wc[600], wl[600], pc[600], pl[600], p2[600];
    snprintf(csv, sizeof csv, "%s", make_csv());
    snprintf(wc, sizeof wc, "%s", scratch_file("w.ckpt"));
    snprintf(wl, sizeof wl, "%s", scratch_file("w.tsv"));
    snprintf(pc, sizeof pc, "%s", scratch_file("p.ckpt"));
    snprintf(pl, sizeof pl, "%s", scratch_file("p.tsv"));
    snprintf(p2, sizeof p2, "%s", scratch_file("p2.ckpt"));
    for (size_t v = 0; v < sizeof variants / sizeof *variants; v++) {
        struct kfac_config c;
        base_config(&c, csv, wl);
        static const char *const sets[] = {"model.layers=3-12:tanh-6:logistic-1:linear",
                                           "optimizer.inverse_every=4", "optimizer.gamma_every=3",
                                           "optimizer.lambda_every=2", "train.polyak_start=5",
                                           "log.eval_every=7"};
        for (size_t i = 0; i < sizeof sets / sizeof *sets; i++)
            ck_assert_int_eq(kfac_config_set(&c, sets[i]), 0);
        for (int i = 0; i < 3; i++)
            ck_assert_int_eq(kfac_config_set(&c, variants[v][i]), 0);
        size_t n_whole, n_part, n_resumed;
        unsigned char *whole = run_state_bytes(&c, 30, NULL, wc, wl, &n_whole, NULL);
        unsigned char *part = run_state_bytes(&c, 13, NULL, pc, pl, &n_part, NULL);
        unsigned char *resumed = run_state_bytes(&c, 30, pc, p2, pl, &n_resumed, NULL);
        ck_assert_uint_eq(n_whole, n_resumed);
        ck_assert_uint_eq(n_part, n_whole);
        ck_assert_msg(memcmp(whole, resumed, n_whole) == 0, "variant %zu: resumed state differs",
                      v);
        ck_assert_msg(memcmp(whole, part, n_whole) != 0, "variant %zu: nothing happened", v);
        free(whole);
        free(part);
        free(resumed);
        kfac_config_free(&c);
    }
}
END_TEST

/* Up to max values of column `name` of the TSV log at path into out (NaN where a row has
 * none); returns how many rows there were. */
static int log_column(const char *path, const char *name, double *out, int max)
{
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    char line[8192];
    ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
    int col = -1, i = 0;
    for (char *t = strtok(line, "\t\n"); t; t = strtok(NULL, "\t\n"), i++)
        if (strcmp(t, name) == 0)
            col = i;
    ck_assert_msg(col >= 0, "%s has no column %s", path, name);
    int rows = 0;
    while (rows < max && fgets(line, sizeof line, f)) {
        char *t = strtok(line, "\t\n");
        for (int j = 0; t && j < col; j++)
            t = strtok(NULL, "\t\n");
        out[rows++] = t ? strtod(t, NULL) : NAN;
    }
    fclose(f);
    return rows;
}

/* The largest |a − b| / (|b| + floor) over n values. */
static double worst_rel(size_t n, const double *a, const double *b, double floor)
{
    double w = 0;
    for (size_t i = 0; i < n; i++)
        if (!isnan(a[i]) || !isnan(b[i]))
            w = fmax(w, fabs(a[i] - b[i]) / (fabs(b[i]) + floor));
    return w;
}

/* A run in chunks of 7 and of 4 cases against the same run in one chunk (batch 50; in
 * chunks of 4 the Fisher-error probe's 6 cases and K-FOC's 7 statistics cases are kept
 * over two chunks), 20 iterations from the same seed, for every optimiser: the logged
 * objective, λ, γ,
 * α, μ, test error and Fisher-approximation errors and the final parameters agree to float
 * summation order (1e-3 relative, 15 times the largest difference seen: 6.2e-5, of μ),
 * and λ's and γ's decisions are the same. A run stopped at iteration 10 in chunks of 7
 * and resumed in chunks of 13 (the chunk is not part of the configuration check) ends
 * where the chunk-7 run does. */
START_TEST(chunks_change_only_the_summation_order)
{
    static const char *const variants[][3] = {
        {"optimizer.type=sgd", "optimizer.type=sgd", "optimizer.type=sgd"},
        {"optimizer.type=kfac", "optimizer.curvature=block-diagonal", "optimizer.gamma_rule=model"},
        {"optimizer.type=kfac", "optimizer.curvature=block-diagonal", "optimizer.gamma_rule=objective"},
        {"optimizer.type=kfac", "optimizer.curvature=kfac-tridiag", "optimizer.fisher=empirical"},
        {"optimizer.type=kfac", "optimizer.curvature=kfoc", "optimizer.gamma_rule=model"},
    };
    static const char *const columns[] = {"objective",       "lambda",        "gamma",
                                          "alpha",           "mu",            "test_rmse",
                                          "fisher_kfac_1",   "fisher_kfoc_2", "fisher_diag_3"};
    char csv[600], logs[3][600], ck[600], ck2[600];
    snprintf(csv, sizeof csv, "%s", make_csv());
    for (int i = 0; i < 3; i++)
        snprintf(logs[i], sizeof logs[i], "%s", scratch_file(i == 0 ? "c0.tsv" : i == 1 ? "c1.tsv" : "c2.tsv"));
    snprintf(ck, sizeof ck, "%s", scratch_file("c.ckpt"));
    snprintf(ck2, sizeof ck2, "%s", scratch_file("c2.ckpt"));
    for (size_t v = 0; v < sizeof variants / sizeof *variants; v++) {
        int sgd = v == 0;
        struct outcome out[3], resumed;
        const char *chunk_sets[3] = {"train.chunk_size=auto", "train.chunk_size=7",
                                     "train.chunk_size=4"};
        for (int r = 0; r < 3; r++) {
            struct kfac_config c;
            base_config(&c, csv, logs[r]);
            static const char *const sets[] = {
                "model.layers=3-12:tanh-6:logistic-1:linear", "optimizer.stats_fraction=0.125",
                "optimizer.model_fraction=0.5", "optimizer.gamma_every=4",
                "log.eval_every=5", "log.eval_batch=30", "log.fisher_error_every=5",
                "log.fisher_error_cases=6"};
            for (size_t i = 0; i < sizeof sets / sizeof *sets; i++)
                ck_assert_int_eq(kfac_config_set(&c, sets[i]), 0);
            for (int i = 0; i < 3; i++)
                ck_assert_int_eq(kfac_config_set(&c, variants[v][i]), 0);
            ck_assert_int_eq(kfac_config_set(&c, chunk_sets[r]), 0);
            size_t len;
            free(run_state_bytes(&c, 20, NULL, ck, logs[r], &len, &out[r]));
            if (r == 1) { /* stop at 10 in chunks of 7, resume in chunks of 13 */
                free(run_state_bytes(&c, 10, NULL, ck, scratch_file("p.tsv"), &len, NULL));
                ck_assert_int_eq(kfac_config_set(&c, "train.chunk_size=13"), 0);
                free(run_state_bytes(&c, 20, ck, ck2, scratch_file("p.tsv"), &len, &resumed));
            }
            kfac_config_free(&c);
        }
        double a[64], b[64];
        for (size_t ci = 0; ci < sizeof columns / sizeof *columns; ci++) {
            if (sgd && ci > 0 && ci < 5)
                continue;
            int n = log_column(logs[0], columns[ci], b, 64);
            for (int r = 1; r < 3; r++) {
                ck_assert_int_eq(log_column(logs[r], columns[ci], a, 64), n);
                double w = worst_rel((size_t)n, a, b, 1e-3);
                if (getenv("KFAC_TEST_VERBOSE"))
                    printf("variant %zu run %d %s: %.3g\n", v, r, columns[ci], w);
                ck_assert_msg(w < 1e-3, "variant %zu, %s: %s differs by %.3g", v, chunk_sets[r],
                              columns[ci], w);
            }
        }
        for (int r = 1; r < 4; r++) {
            const struct outcome *o = r < 3 ? &out[r] : &resumed;
            ck_assert_uint_eq(o->n, out[0].n);
            double pa[256], pb[256];
            for (size_t i = 0; i < o->n; i++)
                pa[i] = o->params[i], pb[i] = (r < 3 ? out[0] : out[1]).params[i];
            double w = worst_rel(o->n, pa, pb, 1e-2);
            if (getenv("KFAC_TEST_VERBOSE"))
                printf("variant %zu run %d params: %.3g\n", v, r, w);
            ck_assert_msg(w < 1e-3, "variant %zu, run %d: the parameters differ by %.3g", v, r, w);
            ck_assert_double_eq(o->lambda, out[0].lambda);
            ck_assert_double_eq(o->gamma, out[0].gamma);
        }
    }
}
END_TEST

static Suite *train_suite(void)
{
    Suite *s = suite_create("train");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, a_regression_run_learns_and_logs);
    tcase_add_test(tc, polyak_average_follows_its_formula);
    tcase_add_test(tc, model_and_data_must_agree);
    tcase_add_test(tc, evaluate_metrics);
    tcase_add_test(tc, resume_is_bit_identical);
    tcase_add_test(tc, chunks_change_only_the_summation_order);
    suite_add_tcase(s, tc);
    return s;
}

KFAC_TEST_MAIN(train_suite)
