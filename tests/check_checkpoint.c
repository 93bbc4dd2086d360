/*
 * check_checkpoint.c: the checkpoint file on state lists made here: a round trip restores
 * every byte; a file that is not a checkpoint, of another version, truncated anywhere,
 * corrupted anywhere or made for other items is refused with a message and leaves the
 * items untouched; the previous checkpoint survives a failed write; and the
 * configuration diff names what changed.
 */
#include "kfac/checkpoint.h"
#include "kfac/status.h"
#include "testutil.h"

#include <sys/stat.h>
#include <unistd.h>

struct fixture {
    double lambda;
    long k;
    float w[300];
    unsigned char tail[7];
};

static void fill(struct fixture *f, int seed)
{
    memset(f, 0, sizeof *f); /* padding too, for the byte comparison */
    f->lambda = 150.0 / (seed + 1);
    f->k = 1000 + seed;
    for (int i = 0; i < 300; i++)
        f->w[i] = (float)(i * 0.25 - seed);
    for (int i = 0; i < 7; i++)
        f->tail[i] = (unsigned char)(seed * 7 + i);
}

static void list(struct fixture *f, struct kfac_state *s)
{
    kfac_state_add(s, "lambda", &f->lambda, sizeof f->lambda);
    kfac_state_add(s, "k", &f->k, sizeof f->k);
    kfac_state_add(s, "w", f->w, sizeof f->w);
    kfac_state_add(s, "tail", f->tail, sizeof f->tail);
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
    }
    for (size_t at = 0; at < n; at++) {
        buf[at] ^= 0x20;
        write_bytes(bad, buf, n);
        int rc = kfac_checkpoint_open(bad, &sb, &ck);
        ck_assert_msg(rc == KFAC_EFORMAT, "a flip at byte %zu of %zu passed", at, n);
        buf[at] ^= 0x20;
    }
    ck_assert_mem_eq(&b, &keep, sizeof b);
    /* The messages say what is wrong. */
    write_bytes(bad, "PK\3\4 not a checkpoint at all", 29);
    expect_error(kfac_checkpoint_open(bad, &sb, &ck), KFAC_EFORMAT, "not a kfac-train checkpoint");
    buf[8] = 9; /* the version */
    write_bytes(bad, buf, n);
    expect_error(kfac_checkpoint_open(bad, &sb, &ck), KFAC_EFORMAT, "format version 9");
    buf[8] = KFAC_CHECKPOINT_VERSION;
    write_bytes(bad, buf, n - 10);
    expect_error(kfac_checkpoint_open(bad, &sb, &ck), KFAC_EFORMAT, "truncated checkpoint");
    buf[n - 100] ^= 1; /* inside w's bytes */
    write_bytes(bad, buf, n);
    expect_error(kfac_checkpoint_open(bad, &sb, &ck), KFAC_EFORMAT, "corrupted (CRC-32");
    expect_error(kfac_checkpoint_open(scratch_file("none.ckpt"), &sb, &ck), KFAC_EIO,
                 "none.ckpt: cannot open");
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
    ck_assert_int_eq(kfac_checkpoint_write(path, "", &sa), 0);
    float w2[301];
    kfac_state_add(&s2, "lambda", &a.lambda, sizeof a.lambda);
    kfac_state_add(&s2, "k", &a.k, sizeof a.k);
    kfac_state_add(&s2, "w", w2, sizeof w2);
    kfac_state_add(&s2, "tail", a.tail, sizeof a.tail);
    struct kfac_checkpoint ck;
    expect_error(kfac_checkpoint_open(path, &s2, &ck), KFAC_EFORMAT,
                 "item 3 is w of 1200 bytes where this run has w of 1204 bytes");
    kfac_state_add(&s3, "lambda", &a.lambda, sizeof a.lambda);
    expect_error(kfac_checkpoint_open(path, &s3, &ck), KFAC_EFORMAT, "holds 4 pieces of state, "
                                                                     "this run has 1");
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

START_TEST(config_diff_names_the_keys)
{
    ck_assert_ptr_null(kfac_config_text_diff("a.x = 1\nb.y = 2\n", "a.x = 1\nb.y = 2\n"));
    char *d = kfac_config_text_diff("a.x = 1\nb.y = 2\nc.z = 5\n", "a.x = 1\nb.y = 3\nd.w = 4\n");
    ck_assert_str_eq(d, "b.y (was 2, now 3); c.z (was 5, now (none)); d.w (was (none), now 4)");
    free(d);
}
END_TEST

static Suite *checkpoint_suite(void)
{
    Suite *s = suite_create("checkpoint");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, round_trip_restores_every_byte);
    tcase_add_test(tc, damage_is_refused_and_restores_nothing);
    tcase_add_test(tc, other_items_are_refused);
    tcase_add_test(tc, failed_write_keeps_the_old_checkpoint);
    tcase_add_test(tc, config_diff_names_the_keys);
    suite_add_tcase(s, tc);
    return s;
}

KFAC_TEST_MAIN(checkpoint_suite)
