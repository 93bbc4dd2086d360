/*
 * check_rng.c: the generator is deterministic, its state is a plain struct that can be
 * saved and restored, and its draws have the right ranges and moments.
 */
#include "kfac/rng.h"
#include "testutil.h"

#include <math.h>

START_TEST(same_seed_same_stream)
{
    struct kfac_rng a, b;
    kfac_rng_seed(&a, 42);
    kfac_rng_seed(&b, 42);
    for (int i = 0; i < 1000; i++)
        ck_assert_uint_eq(kfac_rng_u64(&a), kfac_rng_u64(&b));
    kfac_rng_seed(&b, 43);
    int same = 0;
    for (int i = 0; i < 100; i++)
        same += kfac_rng_u64(&a) == kfac_rng_u64(&b);
    ck_assert_int_eq(same, 0);
}
END_TEST

/* A case's stream depends on its key and index alone; the first draws of neighbouring
 * cases (what one target per case takes) are uniform and uncorrelated, and another key
 * gives other streams. */
START_TEST(case_streams_are_keyed_and_independent)
{
    enum { N = 20000 };
    struct kfac_rng a, b;
    kfac_rng_case(&a, 99, 12345);
    kfac_rng_case(&b, 99, 12345);
    for (int i = 0; i < 100; i++)
        ck_assert_uint_eq(kfac_rng_u64(&a), kfac_rng_u64(&b));
    static double u[N];
    double mean = 0;
    for (int i = 0; i < N; i++) {
        kfac_rng_case(&a, 0x5eed, (uint64_t)i);
        mean += (u[i] = kfac_rng_uniform(&a)) / N;
    }
    double cov = 0, var = 0;
    for (int i = 0; i < N; i++) {
        var += (u[i] - mean) * (u[i] - mean) / N;
        if (i + 1 < N)
            cov += (u[i] - mean) * (u[i + 1] - mean) / (N - 1);
    }
    ck_assert_double_eq_tol(mean, 0.5, 0.01);
    ck_assert_double_eq_tol(var, 1.0 / 12, 0.005);
    ck_assert_double_lt(fabs(cov / var), 0.03);
    int same = 0;
    for (int i = 0; i < 100; i++) {
        kfac_rng_case(&a, 1, (uint64_t)i);
        kfac_rng_case(&b, 2, (uint64_t)i);
        same += kfac_rng_u64(&a) == kfac_rng_u64(&b);
    }
    ck_assert_int_eq(same, 0);
}
END_TEST

START_TEST(state_save_restore)
{
    struct kfac_rng r, saved;
    kfac_rng_seed(&r, 7);
    kfac_rng_normal(&r); /* leaves a spare normal in the state */
    memcpy(&saved, &r, sizeof r);
    double a[10], b[10];
    for (int i = 0; i < 10; i++)
        a[i] = kfac_rng_normal(&r);
    memcpy(&r, &saved, sizeof r);
    for (int i = 0; i < 10; i++)
        b[i] = kfac_rng_normal(&r);
    for (int i = 0; i < 10; i++)
        ck_assert_double_eq(a[i], b[i]);
}
END_TEST

START_TEST(moments)
{
    struct kfac_rng r;
    kfac_rng_seed(&r, 1);
    const int n = 200000;
    double su = 0, sn = 0, sn2 = 0;
    for (int i = 0; i < n; i++) {
        double u = kfac_rng_uniform(&r), z = kfac_rng_normal(&r);
        ck_assert(u >= 0 && u < 1);
        su += u;
        sn += z;
        sn2 += z * z;
    }
    ck_assert_double_eq_tol(su / n, 0.5, 0.005);
    ck_assert_double_eq_tol(sn / n, 0.0, 0.01);
    ck_assert_double_eq_tol(sn2 / n, 1.0, 0.02);
}
END_TEST

START_TEST(below_is_uniform_and_shuffle_permutes)
{
    struct kfac_rng r;
    kfac_rng_seed(&r, 3);
    int counts[7] = {0};
    for (int i = 0; i < 70000; i++) {
        uint64_t v = kfac_rng_below(&r, 7);
        ck_assert_uint_lt(v, 7);
        counts[v]++;
    }
    for (int i = 0; i < 7; i++)
        ck_assert_int_lt(abs(counts[i] - 10000), 500);
    size_t idx[100];
    int seen[100] = {0};
    for (size_t i = 0; i < 100; i++)
        idx[i] = i;
    kfac_rng_shuffle(&r, idx, 100);
    int moved = 0;
    for (size_t i = 0; i < 100; i++) {
        seen[idx[i]]++;
        moved += idx[i] != i;
    }
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(seen[i], 1);
    ck_assert_int_gt(moved, 50);
}
END_TEST

static Suite *rng_suite(void)
{
    Suite *s = suite_create("rng");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, same_seed_same_stream);
    tcase_add_test(tc, case_streams_are_keyed_and_independent);
    tcase_add_test(tc, state_save_restore);
    tcase_add_test(tc, moments);
    tcase_add_test(tc, below_is_uniform_and_shuffle_permutes);
    suite_add_tcase(s, tc);
    return s;
}

KFAC_TEST_MAIN(rng_suite)
