/*
 * check_checkpoint.c: the checkpoint file on state lists made here: a round trip restores
 * every byte; a file that is not a checkpoint, of another version, truncated anywhere,
 * corrupted anywhere or made for other items is refused with a message and leaves the
 * items untouched; a file with a correct CRC but a value outside its item's type and
 * range (a forged one) is refused the same way, naming the item; the previous
 * checkpoint survives a failed write; and the configuration diff names what changed.
 */
#include "kfac/checkpoint.h"
#include "kfac/rng.h"
#include "kfac/status.h"
#include "testutil.h"

#include <limits.h>
#include <math.h>
#include <sys/stat.h>
#include <unistd.h>

struct fixture {
    double lambda;
    long k;
    float w[300];
    int flags[7];
    size_t perm[5], pos;
    struct kfac_rng rng;
};

static void fill(struct fixture *f, int seed)
{
    memset(f, 0, sizeof *f); /* padding too, for the byte comparison */
    f->lambda = 150.0 / (seed + 1);
    f->k = 1000 + seed;
    for (int i = 0; i < 300; i++)
        f->w[i] = (float)(i * 0.25 - seed);
    for (int i = 0; i < 7; i++)
        f->flags[i] = seed * 7 + i;
    for (int i = 0; i < 5; i++)
        f->perm[i] = (size_t)(i + seed) % 5;
    f->pos = (size_t)seed;
    kfac_rng_seed(&f->rng, (uint64_t)seed);
}

static void list(struct fixture *f, struct kfac_state *s)
{
    kfac_state_add_range(s, "lambda", KFAC_STATE_F64, &f->lambda, 1, 0, 1e12);
    kfac_state_add_range(s, "k", KFAC_STATE_LONG, &f->k, 1, 0, (double)LONG_MAX);
    kfac_state_add(s, "w", KFAC_STATE_F32, f->w, 300);
    kfac_state_add_range(s, "flags", KFAC_STATE_INT, f->flags, 7, 0, 255);
    kfac_state_add(s, "perm", KFAC_STATE_PERM, f->perm, 5);
    kfac_state_add_range(s, "pos", KFAC_STATE_SIZE, &f->pos, 1, 0, 5);
    kfac_state_add(s, "rng", KFAC_STATE_RNG, &f->rng, 1);
}

static void expect_error(int rc, int want, const char *needle)
{
    ck_assert_int_eq(rc, want);
    ck_assert_msg(strstr(kfac_last_error(), needle), "message '%s' lacks '%s'", kfac_last_error(),
                  needle);
}

static size_t file_bytes(const char *path, unsigned char *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

START_TEST(round_trip_restores_every_byte)
{
    struct fixture a, b;
    fill(&a, 1);
    fill(&b, 2);
    struct kfac_state sa = {0}, sb = {0};
    list(&a, &sa);
    list(&b, &sb);
    const char *path = scratch_file("rt.ckpt");
    ck_assert_int_eq(kfac_checkpoint_write(path, "optimizer.lambda = 150\n", &sa), 0);
    struct kfac_checkpoint ck;
    ck_assert_int_eq(kfac_checkpoint_open(path, &sb, &ck), 0);
    ck_assert_str_eq(ck.config_text, "optimizer.lambda = 150\n");
    ck_assert_double_eq(b.lambda, 150.0 / 3); /* opening restores nothing */
    ck_assert_int_eq(kfac_checkpoint_restore(&ck, &sb), 0);
    kfac_checkpoint_close(&ck);
    ck_assert_mem_eq(&a, &b, sizeof a);
    char tmp[700];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    ck_assert_int_ne(access(tmp, F_OK), 0);
    kfac_state_free(&sa);
    kfac_state_free(&sb);
}
END_TEST

/* Every truncation and every flipped byte is caught, and the items keep their values. */
START_TEST(damage_is_refused_and_restores_nothing)
{
    struct fixture a, b, keep;
    fill(&a, 1);
    fill(&b, 2);
    keep = b;
    struct kfac_state sa = {0}, sb = {0};
    list(&a, &sa);
    list(&b, &sb);
    const char *path = scratch_file("good.ckpt"), *bad = scratch_file("bad.ckpt");
    ck_assert_int_eq(kfac_checkpoint_write(path, "x = 1\n", &sa), 0);
    static unsigned char buf[4096];
    size_t n = file_bytes(path, buf, sizeof buf);
    struct kfac_checkpoint ck;
    for (size_t cut = 0; cut < n; cut += cut < 64 ? 1 : 97) {
        write_bytes(bad, buf, cut);
        ck_assert_int_eq(kfac_checkpoint_open(bad, &sb, &ck), KFAC_EFORMAT);
        kfac_checkpoint_close(&ck);
    }
    for (size_t at = 0; at < n; at++) {
        buf[at] ^= 0x20;
        write_bytes(bad, buf, n);
        int rc = kfac_checkpoint_open(bad, &sb, &ck);
        kfac_checkpoint_close(&ck);
        ck_assert_msg(rc == KFAC_EFORMAT, "a flip at byte %zu of %zu passed", at, n);
        buf[at] ^= 0x20;
    }
    ck_assert_mem_eq(&b, &keep, sizeof b);
    /* The messages say what is wrong. */
    write_bytes(bad, "PK\3\4 not a checkpoint at all", 29);
    expect_error(kfac_checkpoint_open(bad, &sb, &ck), KFAC_EFORMAT, "not a kfac-train checkpoint");
    kfac_checkpoint_close(&ck);
    buf[8] = 9; /* the version */
    write_bytes(bad, buf, n);
    expect_error(kfac_checkpoint_open(bad, &sb, &ck), KFAC_EFORMAT, "format version 9");
    kfac_checkpoint_close(&ck);
    buf[8] = KFAC_CHECKPOINT_VERSION;
    write_bytes(bad, buf, n - 10);
    expect_error(kfac_checkpoint_open(bad, &sb, &ck), KFAC_EFORMAT, "truncated checkpoint");
    kfac_checkpoint_close(&ck);
    buf[n] = 0;
    write_bytes(bad, buf, n + 1);
    expect_error(kfac_checkpoint_open(bad, &sb, &ck), KFAC_EFORMAT, "damaged or overlong checkpoint");
    kfac_checkpoint_close(&ck);
    buf[n - 300] ^= 1; /* inside w's bytes */
    write_bytes(bad, buf, n);
    expect_error(kfac_checkpoint_open(bad, &sb, &ck), KFAC_EFORMAT, "corrupted (CRC-32");
    kfac_checkpoint_close(&ck);
    expect_error(kfac_checkpoint_open(scratch_file("none.ckpt"), &sb, &ck), KFAC_EIO,
                 "none.ckpt: cannot open");
    kfac_checkpoint_close(&ck);
    kfac_state_free(&sa);
    kfac_state_free(&sb);
}
END_TEST

/* A forged checkpoint (its CRC correct) whose values lie outside their items' types and
 * ranges is refused naming the item, the element and the value, and restores nothing. */
START_TEST(forged_values_are_refused)
{
    struct fixture good, b, keep;
    fill(&good, 1);
    fill(&b, 2);
    keep = b;
    struct kfac_state sb = {0};
    list(&b, &sb);
    const char *path = scratch_file("forged.ckpt");
    static const struct {
        int what;
        const char *message;
    } cases[] = {
        {0, "lambda holds nan at element 0, not a finite number"},
        {1, "lambda holds -1 at element 0, less than 0"},
        {2, "k holds -5 at element 0, less than 0"},
        {3, "w holds inf at element 17, not a finite number"},
        {4, "w holds nan at element 299"},
        {5, "flags holds 300 at element 3, more than 255"},
        {6, "perm is not a permutation of the 5 cases: element 2 is 2, a repeat"},
        {7, "perm is not a permutation of the 5 cases: element 4 is 1099511627776, out of range"},
        {8, "pos holds 1152921504606846976 at element 0, more than 5"},
        {9, "rng is not a state of the random number generator"},
        {10, "rng is not a state of the random number generator"},
        {11, "rng is not a state of the random number generator"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        struct fixture a = good;
        switch (cases[i].what) {
        case 0: a.lambda = NAN; break;
        case 1: a.lambda = -1; break;
        case 2: a.k = -5; break;
        case 3: a.w[17] = INFINITY; break;
        case 4: a.w[299] = NAN; break;
        case 5: a.flags[3] = 300; break;
        case 6: a.perm[2] = a.perm[1]; break;
        case 7: a.perm[4] = (size_t)1 << 40; break;
        case 8: a.pos = (size_t)1 << 60; break;
        case 9: memset(a.rng.s, 0, sizeof a.rng.s); break;
        case 10: a.rng.has_spare = 2; break;
        case 11: a.rng.spare = NAN; break;
        }
        struct kfac_state sa = {0};
        list(&a, &sa);
        ck_assert_int_eq(kfac_checkpoint_write(path, "", &sa), 0);
        struct kfac_checkpoint ck;
        expect_error(kfac_checkpoint_open(path, &sb, &ck), KFAC_EFORMAT, cases[i].message);
        kfac_checkpoint_close(&ck);
        ck_assert_mem_eq(&b, &keep, sizeof b);
        kfac_state_free(&sa);
    }
    /* The edges of the ranges are values like any other. */
    struct fixture a = good;
    a.lambda = 1e12;
    a.pos = 5;
    a.k = 0;
    struct kfac_state sa = {0};
    list(&a, &sa);
    ck_assert_int_eq(kfac_checkpoint_write(path, "", &sa), 0);
    struct kfac_checkpoint ck;
    ck_assert_int_eq(kfac_checkpoint_open(path, &sb, &ck), 0);
    ck_assert_int_eq(kfac_checkpoint_restore(&ck, &sb), 0);
    kfac_checkpoint_close(&ck);
    ck_assert_mem_eq(&a, &b, sizeof a);
    kfac_state_free(&sa);
    kfac_state_free(&sb);
}
END_TEST

/* A checkpoint of other items (another model or optimiser) names the first mismatch. */
START_TEST(other_items_are_refused)
{
    struct fixture a;
    fill(&a, 1);
    struct kfac_state sa = {0}, s2 = {0}, s3 = {0};
    list(&a, &sa);
    const char *path = scratch_file("items.ckpt");
    ck_assert_int_eq(kfac_checkpoint_write(path, "optimizer.lambda = 150\n", &sa), 0);
    float w2[301];
    kfac_state_add(&s2, "lambda", KFAC_STATE_F64, &a.lambda, 1);
    kfac_state_add(&s2, "k", KFAC_STATE_LONG, &a.k, 1);
    kfac_state_add(&s2, "w", KFAC_STATE_F32, w2, 301);
    struct kfac_checkpoint ck;
    expect_error(kfac_checkpoint_open(path, &s2, &ck), KFAC_EFORMAT, "holds 7 pieces of state, "
                                                                     "this run has 3");
    kfac_checkpoint_close(&ck);
    for (int i = 3; i < 7; i++)
        kfac_state_add(&s2, sa.items[i].name, sa.items[i].type, sa.items[i].ptr, sa.items[i].n);
    expect_error(kfac_checkpoint_open(path, &s2, &ck), KFAC_EFORMAT,
                 "item 3 is w of 1200 bytes where this run has w of 1204 bytes");
    ck_assert_int_eq(ck.other_items, 1);
    ck_assert_str_eq(ck.config_text, "optimizer.lambda = 150\n"); /* for the caller's diff */
    kfac_checkpoint_close(&ck);
    kfac_state_add(&s3, "lambda", KFAC_STATE_F64, &a.lambda, 1);
    expect_error(kfac_checkpoint_open(path, &s3, &ck), KFAC_EFORMAT, "holds 7 pieces of state, "
                                                                     "this run has 1");
    kfac_checkpoint_close(&ck);
    kfac_state_free(&sa);
    kfac_state_free(&s2);
    kfac_state_free(&s3);
}
END_TEST

/* A write that cannot finish leaves the old checkpoint and no temporary file. */
START_TEST(failed_write_keeps_the_old_checkpoint)
{
    struct fixture a;
    fill(&a, 1);
    struct kfac_state sa = {0};
    list(&a, &sa);
    expect_error(kfac_checkpoint_write(scratch_file("no/dir/x.ckpt"), "", &sa), KFAC_EIO,
                 "cannot write the checkpoint");
    /* A directory standing where the file should go: the rename fails. */
    const char *dir = scratch_file("occupied.ckpt");
    ck_assert_int_eq(mkdir(dir, 0755), 0);
    expect_error(kfac_checkpoint_write(dir, "", &sa), KFAC_EIO, "cannot write the checkpoint");
    char tmp[700];
    snprintf(tmp, sizeof tmp, "%s.tmp", dir);
    ck_assert_int_ne(access(tmp, F_OK), 0);
    kfac_state_free(&sa);
}
END_TEST

/* The keys that differ are named once each; a key that the first text lacks (a checkpoint
 * older than the key) counts as its value in the defaults, where they are given. */
START_TEST(config_diff_names_the_keys)
{
    ck_assert_ptr_null(kfac_config_text_diff("a.x = 1\nb.y = 2\n", "a.x = 1\nb.y = 2\n", NULL));
    char *d = kfac_config_text_diff("a.x = 1\nb.y = 2\nc.z = 5\n", "a.x = 1\nb.y = 3\nd.w = 4\n",
                                    NULL);
    ck_assert_str_eq(d, "b.y (was 2, now 3); c.z (was 5, now (none)); d.w (was (none), now 4)");
    free(d);
    const char *defaults = "a.x = 0\nb.y = 2\n";
    ck_assert_ptr_null(kfac_config_text_diff("a.x = 1\n", "a.x = 1\nb.y = 2\n", defaults));
    d = kfac_config_text_diff("a.x = 1\n", "a.x = 1\nb.y = 3\n", defaults);
    ck_assert_str_eq(d, "b.y (was 2, now 3)");
    free(d);
    d = kfac_config_text_diff("a.x = 1\n", "a.x = 1\nd.w = 4\n", defaults);
    ck_assert_str_eq(d, "d.w (was (none), now 4)");
    free(d);
}
END_TEST

static Suite *checkpoint_suite(void)
{
    Suite *s = suite_create("checkpoint");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, round_trip_restores_every_byte);
    tcase_add_test(tc, damage_is_refused_and_restores_nothing);
    tcase_add_test(tc, forged_values_are_refused);
    tcase_add_test(tc, other_items_are_refused);
    tcase_add_test(tc, failed_write_keeps_the_old_checkpoint);
    tcase_add_test(tc, config_diff_names_the_keys);
    suite_add_tcase(s, tc);
    return s;
}

KFAC_TEST_MAIN(checkpoint_suite)
