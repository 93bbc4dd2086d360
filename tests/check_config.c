/*
 * check_config.c: defaults, reading files, overrides, and errors that name the file,
 * line and key; printing and re-reading gives the same configuration.
 */
#include "kfac/checkpoint.h"
#include "kfac/config.h"
#include "kfac/curvature.h"
#include "kfac/status.h"
#include "testutil.h"

static int load_text(struct kfac_config *c, const char *name, const char *text)
{
    const char *p = scratch_file(name);
    write_text(p, text);
    kfac_config_defaults(c);
    return kfac_config_load(c, p);
}

static void expect_message(const char *needle)
{
    ck_assert_msg(strstr(kfac_last_error(), needle), "message '%s' lacks '%s'", kfac_last_error(),
                  needle);
}

START_TEST(defaults_and_a_good_file)
{
    struct kfac_config c;
    ck_assert_int_eq(load_text(&c, "good.ini",
                               "; a comment\n[data]\ntrain = sub/train.idx.gz\n"
                               "test = /abs/test.idx\n\n[model]\nlayers = 4-3:tanh-4:logistic\n"
                               "[optimizer]\nlearning_rate = 0.5\nmomentum_schedule = sutskever\n"
                               "[train]\nstandardize_me_not = 1\n"),
                     KFAC_EINVAL); /* the unknown key on line 12 */
    expect_message("good.ini:12: unknown key train.standardize_me_not");
    kfac_config_free(&c);
    ck_assert_int_eq(load_text(&c, "good.ini",
                               "; a comment\n[data]\ntrain = sub/train.idx.gz\n"
                               "test = /abs/test.idx\n\n[model]\nlayers = 4-3:tanh-4:logistic\n"
                               "[optimizer]\nlearning_rate = 0.5\nmomentum_schedule = sutskever\n"),
                     0);
    char want[600];
    snprintf(want, sizeof want, "%s/sub/train.idx.gz", scratch_dir());
    ck_assert_str_eq(c.data.train, want); /* relative to the file's directory */
    ck_assert_str_eq(c.data.test, "/abs/test.idx");
    ck_assert_double_eq(c.optim.learning_rate, 0.5);
    ck_assert_int_eq(c.optim.momentum_schedule, KFAC_MOMENTUM_SUTSKEVER);
    ck_assert_double_eq(c.optim.momentum, 0.9); /* default */
    ck_assert_int_eq(c.batch_size, 1000);
    ck_assert_int_eq(c.sparse_connections, 15);
    ck_assert_int_eq(kfac_config_validate(&c), 0);
    kfac_config_free(&c);
}
END_TEST

START_TEST(errors_name_file_line_and_key)
{
    static const char *cases[][2] = {
        {"[data]\ntrain = x\n[modle]\nlayers = 2-2:linear\n", "e.ini:3: unknown section [modle]"},
        {"[model]\n\nlayers = 2-2:sigmoid\n", "e.ini:3: model.layers: layer 1: unknown activation"},
        {"[train]\niterations = -5\n", "e.ini:2: train.iterations = '-5': expected an integer"},
        {"[train]\nbatch_size = 12x\n", "e.ini:2: train.batch_size = '12x'"},
        {"[optimizer]\nmomentum = 1.5\n", "e.ini:2: optimizer.momentum = '1.5': expected a decimal number"},
        {"[optimizer]\nlambda = 0x10\n", "e.ini:2: optimizer.lambda = '0x10': expected a decimal number"},
        {"[train]\niterations = 0x10\n", "e.ini:2: train.iterations = '0x10': expected an integer"},
        {"[optimizer]\ntype = adam\n", "e.ini:2: optimizer.type = 'adam': expected one of sgd"},
        {"[data]\nstandardize = maybe\n", "e.ini:2: data.standardize = 'maybe': expected true"},
        {"[train]\nseed = 1\nseed = 2\n", "e.ini:3: train.seed is given twice"},
        {"[train]\nthis line has no equals sign\n", "e.ini:2: expected 'key = value'"},
        {"key = before any section\n", "e.ini:1: unknown section []"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        struct kfac_config c;
        ck_assert_int_eq(load_text(&c, "e.ini", cases[i][0]), KFAC_EINVAL);
        expect_message(cases[i][1]);
        kfac_config_free(&c);
    }
    char longline[400] = "[model]\nlayers = 4";
    for (int i = 0; i < 40; i++)
        strcat(longline, "-3:tanh");
    strcat(longline, "\n");
    struct kfac_config c;
    ck_assert_int_eq(load_text(&c, "e.ini", longline), KFAC_EINVAL);
    expect_message("e.ini:2: line longer than 198 characters");
    kfac_config_free(&c);
    kfac_config_defaults(&c);
    ck_assert_int_eq(kfac_config_load(&c, scratch_file("absent.ini")), KFAC_EIO);
    expect_message("absent.ini: cannot open");
    kfac_config_free(&c);
}
END_TEST

START_TEST(overrides)
{
    struct kfac_config c;
    kfac_config_defaults(&c);
    ck_assert_int_eq(kfac_config_set(&c, "train.iterations=7"), 0);
    ck_assert_int_eq(c.iterations, 7);
    ck_assert_int_eq(kfac_config_set(&c, "data.train=rel/path.csv"), 0);
    ck_assert_str_eq(c.data.train, "rel/path.csv"); /* command line: as given */
    ck_assert_int_eq(kfac_config_set(&c, "train.iters=7"), KFAC_EINVAL);
    expect_message("unknown key train.iters (keys of this section: iterations");
    ck_assert_int_eq(kfac_config_set(&c, "iterations=7"), KFAC_EINVAL);
    expect_message("expected section.key=value");
    ck_assert_int_eq(kfac_config_set(&c, "train.iterations=0"), KFAC_EINVAL);
    ck_assert_int_eq(kfac_config_set(&c, "log.file="), 0);
    ck_assert_ptr_null(c.log_file);
    kfac_config_free(&c);
}
END_TEST

START_TEST(validation)
{
    struct kfac_config c;
    kfac_config_defaults(&c);
    ck_assert_int_eq(kfac_config_validate(&c), KFAC_EINVAL);
    expect_message("data.train is required");
    kfac_config_set(&c, "data.train=x.idx");
    ck_assert_int_eq(kfac_config_validate(&c), KFAC_EINVAL);
    expect_message("model.layers is required");
    kfac_config_set(&c, "model.layers=4-2:softmax");
    kfac_config_set(&c, "data.task=classification");
    ck_assert_int_eq(kfac_config_validate(&c), KFAC_EINVAL);
    expect_message("data.train_targets");
    kfac_config_set(&c, "data.train_targets=y.idx");
    ck_assert_int_eq(kfac_config_validate(&c), 0);
    kfac_config_set(&c, "data.test=t.idx");
    kfac_config_set(&c, "data.test_targets=u.idx");
    kfac_config_set(&c, "data.test_fraction=0.1");
    ck_assert_int_eq(kfac_config_validate(&c), KFAC_EINVAL);
    expect_message("give one of them");
    kfac_config_set(&c, "data.test_fraction=0");
    kfac_config_set(&c, "data.task=autoencoder");
    ck_assert_int_eq(kfac_config_validate(&c), KFAC_EINVAL);
    expect_message("not used by the autoencoder task");
    kfac_config_free(&c);
}
END_TEST

/* The K-FAC defaults are the constants of REFERENCE.md §2–§6. */
START_TEST(kfac_defaults_are_the_reference_constants)
{
    struct kfac_config c;
    kfac_config_defaults(&c);
    const struct kfac_optim_opts *o = &c.optim;
    ck_assert_int_eq(o->curvature, KFAC_CURVATURE_BLOCK_DIAGONAL);
    ck_assert_int_eq(o->fisher, KFAC_FISHER_SAMPLED);
    ck_assert_double_eq(o->stats_fraction, 0.125); /* τ1 = 1/8 */
    ck_assert_double_eq(o->model_fraction, 1.0);   /* τ2 */
    ck_assert_double_eq(o->stats_decay, 0.95);
    ck_assert_int_eq(o->lambda_every, 5);          /* T1 */
    ck_assert_int_eq(o->gamma_every, 20);          /* T2 */
    ck_assert_int_eq(o->inverse_every, 20);        /* T3 */
    ck_assert_int_eq(o->inverse_precision, KFAC_INVERSE_DOUBLE);
    ck_assert_double_eq(o->lambda, 150);           /* λ0 */
    ck_assert_double_eq(o->lambda_min, 0);
    ck_assert_double_eq(o->gamma, 0);              /* sqrt(λ0 + η) */
    ck_assert_double_eq(o->gamma_min, 0);          /* sqrt(η) */
    ck_assert_double_eq(o->gamma_max, 1);
    ck_assert_int_eq(o->gamma_rule, KFAC_GAMMA_MODEL);
    ck_assert_int_eq(o->pi_norm, KFAC_PI_TRACE);
    ck_assert_int_eq(o->step_rule, KFAC_STEP_MODEL);
    ck_assert_int_eq(o->use_momentum, 1);
    ck_assert_int_eq(o->kfoc_max_iter, KFAC_KFOC_MAX_ITER); /* n_max = 100 (§7) */
    ck_assert_double_eq(o->kfoc_tol, KFAC_KFOC_TOL);       /* δ = 1e-5 */
    ck_assert_int_eq(KFAC_KFOC_MAX_ITER, 100);
    ck_assert_double_eq(KFAC_KFOC_TOL, 1e-5);
    ck_assert_int_eq(c.batch_full_at, 500);
    ck_assert_int_eq(c.batch_schedule, KFAC_SCHEDULE_FIXED);
    ck_assert_int_eq(kfac_config_set(&c, "optimizer.type=kfac"), 0);
    ck_assert_int_eq(o->type, KFAC_OPTIM_KFAC);
    ck_assert_int_eq(kfac_config_set(&c, "train.batch_schedule=exponential"), 0);
    ck_assert_int_eq(c.batch_schedule, KFAC_SCHEDULE_EXPONENTIAL);
    ck_assert_int_eq(kfac_config_set(&c, "optimizer.inverse_every=0"), KFAC_EINVAL);
    ck_assert_int_eq(kfac_config_set(&c, "optimizer.pi=spectral"), KFAC_EINVAL);
    ck_assert(strstr(kfac_last_error(), "expected one of trace, frobenius"));
    ck_assert_int_eq(kfac_config_set(&c, "optimizer.inverse_precision=half"), KFAC_EINVAL);
    ck_assert(strstr(kfac_last_error(), "expected one of double, float"));
    kfac_config_free(&c);
}
END_TEST

/* An identity an earlier version wrote, without a key that came later, against this
 * version's: with the defaults' identity beside them (as a resumed run compares them), the
 * missing key counts as its default, so the two agree while this run holds the default and
 * differ, by that key alone, once it does not. */
START_TEST(identity_of_an_earlier_version_counts_its_missing_keys_as_defaults)
{
    struct kfac_config c, d;
    kfac_config_defaults(&c);
    kfac_config_defaults(&d);
    ck_assert_int_eq(kfac_config_set(&c, "optimizer.lambda=3"), 0);
    char *full = kfac_config_identity(&c), *defaults = kfac_config_identity(&d);
    const char *drop = "optimizer.inverse_precision = double\n";
    char *at = strstr(full, drop), *old = malloc(strlen(full) + 1);
    ck_assert_ptr_nonnull(at);
    memcpy(old, full, (size_t)(at - full));
    strcpy(old + (at - full), at + strlen(drop));
    ck_assert_ptr_null(kfac_config_text_diff(old, full, defaults));
    ck_assert_int_eq(kfac_config_set(&c, "optimizer.inverse_precision=float"), 0);
    char *now = kfac_config_identity(&c), *diff = kfac_config_text_diff(old, now, defaults);
    ck_assert_str_eq(diff, "optimizer.inverse_precision (was double, now float)");
    free(full), free(defaults), free(old), free(now), free(diff);
    kfac_config_free(&c);
    kfac_config_free(&d);
}
END_TEST

/* optimizer.preset = kfac3 gives the algorithm's keys KFAC3's constants: under the keys a
 * file gives itself (wherever they stand), over the file from the command line, and under
 * a later --set. It leaves λ0 alone, is not in the identity, and is K-FAC's only. */
START_TEST(kfac3_preset_sets_the_paper_constants)
{
    struct kfac_config c, d;
    ck_assert_int_eq(load_text(&c, "preset.ini",
                               "[optimizer]\ntype = kfac\nmodel_fraction = 0.25\nlambda = 1\n"
                               "preset = kfac3\nstats_fraction = 0.5\ngamma_max = 2\n"),
                     0);
    const struct kfac_optim_opts *o = &c.optim;
    ck_assert_int_eq(c.preset, KFAC_PRESET_KFAC3);
    ck_assert_int_eq(o->start, KFAC_START_PAPER);
    ck_assert_double_eq(o->model_fraction, 0.25);
    ck_assert_double_eq(o->stats_fraction, 0.5);
    ck_assert_double_eq(o->gamma_max, 2);
    ck_assert_double_eq(o->lambda, 1);
    ck_assert_int_eq(kfac_config_set(&c, "optimizer.lambda_every=3"), 0);
    ck_assert_int_eq(kfac_config_set(&c, "optimizer.inverse_precision=float"), 0);
    ck_assert_int_eq(o->inverse_precision, KFAC_INVERSE_FLOAT);
    ck_assert_int_eq(kfac_config_set(&c, "optimizer.preset=kfac3"), 0);
    ck_assert_int_eq(o->inverse_precision, KFAC_INVERSE_DOUBLE);
    ck_assert_double_eq(o->model_fraction, 1);
    ck_assert_double_eq(o->stats_fraction, 0.125);
    ck_assert_double_eq(o->gamma_max, 1);
    ck_assert_int_eq(o->lambda_every, 5);
    ck_assert_double_eq(o->lambda, 1); /* λ0 is the problem's */
    ck_assert_int_eq(kfac_config_set(&c, "optimizer.model_fraction=0.5"), 0);
    ck_assert_double_eq(o->model_fraction, 0.5);

    /* The same run as the two keys that differ from the defaults, given by hand. */
    ck_assert_int_eq(load_text(&d, "by-hand.ini",
                               "[optimizer]\ntype = kfac\nlambda = 1\nstart = paper\n"
                               "model_fraction = 0.5\n"),
                     0);
    char *a = kfac_config_identity(&c), *b = kfac_config_identity(&d);
    ck_assert_str_eq(a, b);
    free(a);
    free(b);
    ck_assert_int_eq(kfac_config_set(&c, "optimizer.preset=cheap"), KFAC_EINVAL);
    expect_message("expected one of none, kfac3");
    kfac_config_free(&c);
    kfac_config_free(&d);

    kfac_config_defaults(&c);
    kfac_config_set(&c, "data.train=x.idx");
    kfac_config_set(&c, "model.layers=4-2:logistic");
    ck_assert_int_eq(kfac_config_validate(&c), 0);
    ck_assert_int_eq(kfac_config_set(&c, "optimizer.preset=kfac3"), 0);
    ck_assert_int_eq(kfac_config_validate(&c), KFAC_EINVAL);
    expect_message("optimizer.preset = kfac3 sets K-FAC's constants, but optimizer.type is sgd");
    kfac_config_free(&c);
}
END_TEST

START_TEST(print_then_load_is_identity)
{
    struct kfac_config c, d;
    ck_assert_int_eq(load_text(&c, "p.ini",
                               "[data]\ntrain = /d/t.csv\ntask = regression\n"
                               "target_columns = MEDV\nstandardize = true\n"
                               "[model]\nlayers = 13-50:tanh-1:linear\n[train]\nseed = 99\n"),
                     0);
    const char *p = scratch_file("printed.ini");
    FILE *f = fopen(p, "w");
    kfac_config_print(&c, f);
    fclose(f);
    kfac_config_defaults(&d);
    ck_assert_int_eq(kfac_config_load(&d, p), 0);
    char a[4096] = {0}, b[4096] = {0};
    f = fmemopen(a, sizeof a - 1, "w");
    kfac_config_print(&c, f);
    fclose(f);
    f = fmemopen(b, sizeof b - 1, "w");
    kfac_config_print(&d, f);
    fclose(f);
    ck_assert_str_eq(a, b);
    ck_assert(strstr(a, "target_columns = MEDV\n"));
    ck_assert(strstr(a, "[optimizer]\ntype = sgd\n"));
    kfac_config_free(&c);
    kfac_config_free(&d);
}
END_TEST

/* The trajectory keys: all of them but how long the run goes on, its checkpoints, and
 * what it logs; one line each. */
START_TEST(identity_leaves_out_the_run_control_keys)
{
    struct kfac_config c;
    kfac_config_defaults(&c);
    char *a = kfac_config_identity(&c);
    ck_assert_ptr_nonnull(strstr(a, "\noptimizer.lambda = 150\n"));
    ck_assert_ptr_nonnull(strstr(a, "\ntrain.seed = 1\n"));
    ck_assert_ptr_nonnull(strstr(a, "\ntrain.threads = 0\n"));
    static const char *const left_out[] = {"train.iterations", "train.max_seconds",
                                           "train.checkpoint", "log.", "study.", NULL};
    for (int i = 0; left_out[i]; i++)
        ck_assert_msg(!strstr(a, left_out[i]), "%s in the identity", left_out[i]);
    const char *same[] = {"train.iterations=5", "train.max_seconds=9", "train.checkpoint=x",
                          "train.checkpoint_every=3", "log.eval_every=7", "study.seeds=2"};
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(kfac_config_set(&c, same[i]), 0);
    char *b = kfac_config_identity(&c);
    ck_assert_str_eq(a, b);
    ck_assert_int_eq(kfac_config_set(&c, "optimizer.l2=0.5"), 0);
    char *d = kfac_config_identity(&c);
    ck_assert_str_ne(a, d);
    free(a);
    free(b);
    free(d);
    kfac_config_free(&c);
}
END_TEST

START_TEST(study_batch_sizes_parse)
{
    int sizes[KFAC_STUDY_MAX_SIZES], n;
    ck_assert_int_eq(kfac_parse_batch_sizes("1,10, 100 ,full", sizes, KFAC_STUDY_MAX_SIZES, &n), 0);
    ck_assert_int_eq(n, 4);
    ck_assert_int_eq(sizes[0], 1);
    ck_assert_int_eq(sizes[1], 10);
    ck_assert_int_eq(sizes[2], 100);
    ck_assert_int_eq(sizes[3], 0); /* full */
    const char *bad[] = {"", "1,,2", "0", "-3", "10x", "full,1e3", "99999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ck_assert_int_eq(kfac_parse_batch_sizes(bad[i], sizes, KFAC_STUDY_MAX_SIZES, &n), KFAC_EINVAL);
        ck_assert(strstr(kfac_last_error(), "study.batch_sizes"));
    }
    ck_assert_int_eq(kfac_parse_batch_sizes("1,2,3", sizes, 2, &n), KFAC_EINVAL);
    struct kfac_config c;
    kfac_config_defaults(&c);
    ck_assert_int_eq(c.study_seeds, 10);
    ck_assert_str_eq(c.study_batch_sizes, "1,10,100,full");
    ck_assert_int_eq(kfac_config_set(&c, "study.seeds=0"), KFAC_EINVAL);
    kfac_config_free(&c);
}
END_TEST

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, defaults_and_a_good_file);
    tcase_add_test(tc, overrides);
    tcase_add_test(tc, validation);
    tcase_add_test(tc, print_then_load_is_identity);
    tcase_add_test(tc, kfac_defaults_are_the_reference_constants);
    tcase_add_test(tc, kfac3_preset_sets_the_paper_constants);
    tcase_add_test(tc, identity_of_an_earlier_version_counts_its_missing_keys_as_defaults);
    tcase_add_test(tc, study_batch_sizes_parse);
    tcase_add_test(tc, identity_leaves_out_the_run_control_keys);
    suite_add_tcase(s, tc);
    TCase *lim = tcase_create("limits");
    tcase_add_test(lim, errors_name_file_line_and_key);
    suite_add_tcase(s, lim);
    return s;
}

KFAC_TEST_MAIN(config_suite)
