/*
 * check_data.c: the IDX, NPY and CSV readers on fixtures written here (valid, gzip,
 * truncated, wrong magic, wrong sizes, ragged), dataset assembly (targets, one-hot,
 * held-out split, standardisation fitted on the training split) and the batcher.
 */
#include "kfac/data.h"
#include "kfac/status.h"
#include "testutil.h"

#include <math.h>
#include <zlib.h>

static void write_gz(const char *path, const void *data, size_t n)
{
    gzFile f = gzopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(gzwrite(f, data, (unsigned)n), (int)n);
    ck_assert_int_eq(gzclose(f), Z_OK);
}

/* An IDX ubyte file of n images 2×3 with pixel (c, i) = c·6 + i. */
static size_t idx_images(unsigned char *buf, int n)
{
    unsigned char hdr[16] = {0, 0, 8, 3, 0, 0, 0, (unsigned char)n, 0, 0, 0, 2, 0, 0, 0, 3};
    memcpy(buf, hdr, 16);
    for (int i = 0; i < n * 6; i++)
        buf[16 + i] = (unsigned char)i;
    return 16 + (size_t)n * 6;
}

static void expect_error(int rc, int want, const char *needle)
{
    ck_assert_int_eq(rc, want);
    ck_assert_msg(strstr(kfac_last_error(), needle), "message '%s' lacks '%s'", kfac_last_error(),
                  needle);
}

START_TEST(idx_raw_and_gzip)
{
    unsigned char buf[256];
    size_t n = idx_images(buf, 5);
    const char *raw = scratch_file("img.idx"), *gz = scratch_file("img.idx.gz");
    write_bytes(raw, buf, n);
    write_gz(gz, buf, n);
    for (int k = 0; k < 2; k++) {
        struct kfac_array a;
        ck_assert_int_eq(kfac_idx_read(k ? gz : raw, &a), 0);
        ck_assert_int_eq(a.ndim, 3);
        ck_assert_uint_eq(a.dims[0], 5);
        ck_assert_uint_eq(a.dims[2], 3);
        ck_assert(a.uint8 && a.integral);
        ck_assert_float_eq(a.data[29], 29.0f);
        kfac_array_free(&a);
    }
}
END_TEST

START_TEST(idx_big_endian_types)
{
    /* int32 labels and float32 values, both big-endian. */
    unsigned char ints[] = {0, 0, 0x0C, 1, 0, 0, 0, 2, 0xFF, 0xFF, 0xFF, 0xFE, 0, 0, 1, 0};
    unsigned char floats[] = {0, 0, 0x0D, 1, 0, 0, 0, 1, 0x40, 0x49, 0x0F, 0xDB};
    const char *p = scratch_file("ints.idx"), *q = scratch_file("floats.idx");
    write_bytes(p, ints, sizeof ints);
    write_bytes(q, floats, sizeof floats);
    struct kfac_array a;
    ck_assert_int_eq(kfac_idx_read(p, &a), 0);
    ck_assert_float_eq(a.data[0], -2.0f);
    ck_assert_float_eq(a.data[1], 256.0f);
    kfac_array_free(&a);
    ck_assert_int_eq(kfac_idx_read(q, &a), 0);
    ck_assert_float_eq_tol(a.data[0], 3.14159265f, 1e-6f);
    ck_assert(!a.integral);
    kfac_array_free(&a);
}
END_TEST

START_TEST(idx_errors)
{
    unsigned char buf[256];
    size_t n = idx_images(buf, 5);
    struct kfac_array a;
    const char *p = scratch_file("bad.idx");

    expect_error(kfac_idx_read(scratch_file("missing.idx"), &a), KFAC_EIO, "cannot open");
    buf[2] = 0x07;
    write_bytes(p, buf, n);
    expect_error(kfac_idx_read(p, &a), KFAC_EFORMAT, "not an IDX file");
    buf[2] = 0x08;
    write_bytes(p, buf, n - 1); /* one pixel short */
    expect_error(kfac_idx_read(p, &a), KFAC_EFORMAT, "truncated");
    buf[n] = 9;
    write_bytes(p, buf, n + 1); /* one byte too many */
    expect_error(kfac_idx_read(p, &a), KFAC_EFORMAT, "more data than");
    unsigned char huge[16] = {0, 0, 8, 3, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                              0xFF, 0xFF, 0xFF, 0xFF};
    write_bytes(p, huge, 16); /* a lying header must not make it allocate 2^96 bytes */
    ck_assert_int_eq(kfac_idx_read(p, &a), KFAC_EFORMAT);

    /* A gzip stream cut short: all data present but the trailer gone, then data cut too. */
    const char *gz = scratch_file("cut.idx.gz");
    write_gz(gz, buf, n);
    FILE *f = fopen(gz, "rb");
    unsigned char comp[512];
    size_t clen = fread(comp, 1, sizeof comp, f);
    fclose(f);
    write_bytes(gz, comp, clen - 4);
    expect_error(kfac_idx_read(gz, &a), KFAC_EFORMAT, gz);
    write_bytes(gz, comp, clen / 2);
    expect_error(kfac_idx_read(gz, &a), KFAC_EFORMAT, gz);
}
END_TEST

/* An NPY v1 file with the given descr and shape text and payload. */
static void write_npy(const char *path, const char *descr, const char *fortran, const char *shape,
                      const void *data, size_t n)
{
    char hdr[256];
    int len = snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }",
                       descr, fortran, shape);
    while ((10 + len + 1) % 64)
        hdr[len++] = ' ';
    hdr[len++] = '\n';
    unsigned char buf[1024] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)len, 0};
    memcpy(buf + 10, hdr, (size_t)len);
    memcpy(buf + 10 + len, data, n);
    write_bytes(path, buf, 10 + (size_t)len + n);
}

START_TEST(npy_types)
{
    float f4[6] = {1, 2, 3, 4, 5, 6.5f};
    double f8[2] = {-1.25, 1e10};
    unsigned char u1[3] = {0, 128, 255};
    unsigned char be[4] = {0x3F, 0xC0, 0, 0}; /* 1.5f big-endian */
    const char *p = scratch_file("a.npy");
    struct kfac_array a;
    write_npy(p, "<f4", "False", "(2, 3)", f4, sizeof f4);
    ck_assert_int_eq(kfac_npy_read(p, &a), 0);
    ck_assert_int_eq(a.ndim, 2);
    ck_assert_uint_eq(a.dims[1], 3);
    ck_assert_float_eq(a.data[5], 6.5f);
    kfac_array_free(&a);
    write_npy(p, "<f8", "False", "(2,)", f8, sizeof f8);
    ck_assert_int_eq(kfac_npy_read(p, &a), 0);
    ck_assert_float_eq(a.data[0], -1.25f);
    kfac_array_free(&a);
    write_npy(p, "|u1", "False", "(3,)", u1, sizeof u1);
    ck_assert_int_eq(kfac_npy_read(p, &a), 0);
    ck_assert(a.uint8);
    ck_assert_float_eq(a.data[2], 255.0f);
    kfac_array_free(&a);
    write_npy(p, ">f4", "False", "(1,)", be, sizeof be);
    ck_assert_int_eq(kfac_npy_read(p, &a), 0);
    ck_assert_float_eq(a.data[0], 1.5f);
    kfac_array_free(&a);
}
END_TEST

START_TEST(npy_errors)
{
    float f4[6] = {0};
    const char *p = scratch_file("b.npy");
    struct kfac_array a;
    write_npy(p, "<f4", "True", "(2, 3)", f4, sizeof f4);
    expect_error(kfac_npy_read(p, &a), KFAC_EFORMAT, "Fortran order");
    write_npy(p, "<i8", "False", "(3,)", f4, 24);
    expect_error(kfac_npy_read(p, &a), KFAC_EFORMAT, "'<i8' is not supported");
    write_npy(p, "<f4", "False", "(2, 3)", f4, sizeof f4 - 4);
    expect_error(kfac_npy_read(p, &a), KFAC_EFORMAT, "truncated");
    write_bytes(p, "NOTNUMPY\x01\x00{}\n", 13);
    expect_error(kfac_npy_read(p, &a), KFAC_EFORMAT, "not an NPY file");
}
END_TEST

START_TEST(csv_reads_and_reports_lines)
{
    const char *p = scratch_file("t.csv");
    struct kfac_table t;
    write_text(p, "\"a\", b ,c\r\n1,2,3\r\n\n4.5, -5e-1 ,6\n");
    ck_assert_int_eq(kfac_csv_read(p, &t), 0);
    ck_assert_uint_eq(t.rows, 2);
    ck_assert_int_eq(t.cols, 3);
    ck_assert_str_eq(t.names[0], "a");
    ck_assert_str_eq(t.names[1], "b");
    ck_assert_float_eq(t.data[4], -0.5f);
    kfac_table_free(&t);
    write_text(p, "a,b,c\n1,2,3\n4,5\n");
    expect_error(kfac_csv_read(p, &t), KFAC_EFORMAT, ":3: expected 3 fields");
    write_text(p, "a,b,c\n1,2,3\n4,5,6,7\n");
    expect_error(kfac_csv_read(p, &t), KFAC_EFORMAT, ":3: expected 3 fields");
    write_text(p, "a,b,c\n1,x,3\n");
    expect_error(kfac_csv_read(p, &t), KFAC_EFORMAT, ":2: column 'b': 'x' is not a finite number");
    write_text(p, "a,b,c\n1,nan,3\n");
    expect_error(kfac_csv_read(p, &t), KFAC_EFORMAT, "column 'b'");
    write_text(p, "a,b\n");
    expect_error(kfac_csv_read(p, &t), KFAC_EFORMAT, "no data rows");
    write_text(p, "");
    expect_error(kfac_csv_read(p, &t), KFAC_EFORMAT, "empty file");
}
END_TEST

START_TEST(csv_regression_split_and_standardisation)
{
    const char *p = scratch_file("reg.csv");
    char text[4096] = "x,y,target\n";
    for (int i = 0; i < 100; i++) {
        char row[64];
        snprintf(row, sizeof row, "%d,%d,%d\n", i, 3 * i + 7, 2 * i);
        strcat(text, row);
    }
    write_text(p, text);
    struct kfac_data_opts o = {.train = (char *)p, .task = KFAC_TASK_REGRESSION,
                               .target_columns = "target", .test_fraction = 0.2, .standardize = 1};
    struct kfac_rng r;
    kfac_rng_seed(&r, 1);
    struct kfac_dataset tr, te;
    ck_assert_int_eq(kfac_data_load(&o, &r, &tr, &te), 0);
    ck_assert_uint_eq(tr.n, 80);
    ck_assert_uint_eq(te.n, 20);
    ck_assert_int_eq(tr.d_x, 2);
    ck_assert_int_eq(tr.d_t, 1);
    /* Training features have mean 0 and sd 1; the target is untouched (= 2x raw). */
    double mean = 0, sq = 0;
    for (size_t i = 0; i < tr.n; i++)
        mean += tr.x[2 * i];
    mean /= (double)tr.n;
    for (size_t i = 0; i < tr.n; i++)
        sq += (tr.x[2 * i] - mean) * (tr.x[2 * i] - mean);
    ck_assert_double_eq_tol(mean, 0, 1e-5);
    ck_assert_double_eq_tol(sq / (double)tr.n, 1, 1e-4);
    /* Test rows use the training statistics: raw x = target/2 maps through the same line. */
    double a = 0, b = 0; /* standardised x = a·raw + b, fitted from two training rows */
    double r0 = tr.t[0] / 2, r1 = tr.t[1] / 2;
    a = (tr.x[2] - tr.x[0]) / (r1 - r0);
    b = tr.x[0] - a * r0;
    for (size_t i = 0; i < te.n; i++)
        ck_assert_double_eq_tol(te.x[2 * i], a * te.t[i] / 2 + b, 1e-4);
    kfac_dataset_free(&tr);
    kfac_dataset_free(&te);

    o.target_columns = "nope";
    expect_error(kfac_data_load(&o, &r, &tr, &te), KFAC_EINVAL, "'nope'");
}
END_TEST

START_TEST(idx_classification_one_hot_and_autoencoder)
{
    unsigned char buf[256], labels[8 + 5] = {0, 0, 8, 1, 0, 0, 0, 5, 3, 0, 1, 2, 3};
    size_t n = idx_images(buf, 5);
    const char *img = scratch_file("c-img.idx.gz"), *lab = scratch_file("c-lab.idx");
    write_gz(img, buf, n);
    write_bytes(lab, labels, sizeof labels);
    struct kfac_data_opts o = {.train = (char *)img, .train_targets = (char *)lab,
                               .task = KFAC_TASK_CLASSIFICATION};
    struct kfac_rng r;
    kfac_rng_seed(&r, 2);
    struct kfac_dataset tr, te;
    ck_assert_int_eq(kfac_data_load(&o, &r, &tr, &te), 0);
    ck_assert_uint_eq(te.n, 0);
    ck_assert_int_eq(tr.d_x, 6);
    ck_assert_int_eq(tr.shape[0], 1); /* N × H × W: one channel */
    ck_assert_int_eq(tr.shape[1] * tr.shape[2], 6);
    ck_assert_int_eq(tr.d_t, 4);
    ck_assert_float_eq(tr.t[0 * 4 + 3], 1);
    ck_assert_float_eq(tr.t[1 * 4 + 0], 1);
    ck_assert_float_eq_tol(tr.x[7], 7 / 255.0f, 1e-7f); /* pixels scaled to [0, 1] */
    kfac_dataset_free(&tr);
    o.task = KFAC_TASK_AUTOENCODER;
    o.max_cases = 3;
    ck_assert_int_eq(kfac_data_load(&o, &r, &tr, &te), 0);
    ck_assert_uint_eq(tr.n, 3);
    ck_assert_ptr_eq(tr.t, tr.x);
    kfac_dataset_free(&tr);
    /* Label count mismatch. */
    labels[7] = 4;
    write_bytes(lab, labels, sizeof labels - 1);
    o.task = KFAC_TASK_CLASSIFICATION;
    o.max_cases = 0;
    expect_error(kfac_data_load(&o, &r, &tr, &te), KFAC_EFORMAT, "4 targets for the 5 cases");
}
END_TEST

/* An N × C × H × W array is a set of C × H × W images, each case's row channel-major as
 * in the file; a 2-D array is a set of vectors. */
START_TEST(npy_images_keep_their_shape)
{
    float x[2 * 3 * 2 * 2];
    for (int i = 0; i < 24; i++)
        x[i] = (float)i;
    const char *p = scratch_file("img4.npy");
    write_npy(p, "<f4", "False", "(2, 3, 2, 2)", x, sizeof x);
    struct kfac_data_opts o = {.train = (char *)p, .task = KFAC_TASK_AUTOENCODER};
    struct kfac_rng r;
    kfac_rng_seed(&r, 3);
    struct kfac_dataset tr, te;
    ck_assert_int_eq(kfac_data_load(&o, &r, &tr, &te), 0);
    ck_assert_int_eq(tr.d_x, 12);
    ck_assert_int_eq(tr.shape[0], 3);
    ck_assert_int_eq(tr.shape[1], 2);
    ck_assert_int_eq(tr.shape[2], 2);
    ck_assert_float_eq(tr.x[12 + 4], 16); /* case 1, channel 1, pixel (0, 0) */
    kfac_dataset_free(&tr);
    write_npy(p, "<f4", "False", "(4, 6)", x, sizeof x);
    ck_assert_int_eq(kfac_data_load(&o, &r, &tr, &te), 0);
    ck_assert_int_eq(tr.shape[0], 6);
    ck_assert_int_eq(tr.shape[1] * tr.shape[2], 1);
    kfac_dataset_free(&tr);
}
END_TEST

START_TEST(images_resize_by_area)
{
    /* 4 × 4 → 2 × 2 is the mean of each 2 × 2 block. */
    float in[16], out[9];
    for (int i = 0; i < 16; i++)
        in[i] = (float)i;
    ck_assert_int_eq(kfac_images_resize(1, 4, 2, in, out), 0);
    ck_assert_float_eq_tol(out[0], (0 + 1 + 4 + 5) / 4.0f, 1e-6f);
    ck_assert_float_eq_tol(out[3], (10 + 11 + 14 + 15) / 4.0f, 1e-6f);
    /* 3 × 3 → 2 × 2: pixel (0, 0) covers 1.5 × 1.5 source pixels: weights 1, ½, ½, ¼ over 2.25. */
    for (int i = 0; i < 9; i++)
        in[i] = (float)(i * i);
    ck_assert_int_eq(kfac_images_resize(1, 3, 2, in, out), 0);
    ck_assert_float_eq_tol(out[0], (0 + 0.5f * 1 + 0.5f * 9 + 0.25f * 16) / 2.25f, 1e-5f);
    double sum_in = 0, sum_out = 0; /* area averaging keeps the mean */
    for (int i = 0; i < 9; i++)
        sum_in += in[i];
    for (int i = 0; i < 4; i++)
        sum_out += out[i];
    ck_assert_double_eq_tol(sum_in / 9, sum_out / 4, 1e-5);
    /* Upsampling a constant stays constant; a second image is independent of the first. */
    float two[8] = {2, 2, 2, 2, 7, 7, 7, 7}, up[18];
    ck_assert_int_eq(kfac_images_resize(2, 2, 3, two, up), 0);
    for (int i = 0; i < 9; i++) {
        ck_assert_float_eq_tol(up[i], 2, 1e-6f);
        ck_assert_float_eq_tol(up[9 + i], 7, 1e-6f);
    }
    /* data.image_size on 2 × 3 images is refused, naming the file. */
    unsigned char buf[256];
    size_t n = idx_images(buf, 2);
    const char *img = scratch_file("r-img.idx");
    write_bytes(img, buf, n);
    struct kfac_data_opts o = {.train = (char *)img, .task = KFAC_TASK_AUTOENCODER, .image_size = 2};
    struct kfac_rng r;
    kfac_rng_seed(&r, 3);
    struct kfac_dataset tr, te;
    expect_error(kfac_data_load(&o, &r, &tr, &te), KFAC_EINVAL, "r-img.idx: data.image_size needs square images");
    /* Square 4 × 4 images load as 2 × 2. */
    unsigned char sq[16 + 32] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 4};
    for (int i = 0; i < 32; i++)
        sq[16 + i] = (unsigned char)(i < 16 ? 255 : 0);
    write_bytes(img, sq, sizeof sq);
    ck_assert_int_eq(kfac_data_load(&o, &r, &tr, &te), 0);
    ck_assert_int_eq(tr.d_x, 4);
    ck_assert_float_eq_tol(tr.x[0], 1, 1e-6f);
    ck_assert_float_eq_tol(tr.x[4], 0, 1e-6f);
    kfac_dataset_free(&tr);
}
END_TEST

START_TEST(batcher_draws_without_replacement)
{
    enum { N = 50, D = 2 };
    float x[N * D];
    for (int i = 0; i < N; i++)
        x[i * D] = (float)i, x[i * D + 1] = 0;
    struct kfac_dataset ds = {.n = N, .d_x = D, .d_t = D, .shape = {D, 1, 1}, .x = x, .t = x};
    struct kfac_rng r;
    kfac_rng_seed(&r, 3);
    struct kfac_batcher b;
    kfac_batcher_init(&b, &ds, 10, &r);
    int seen[N] = {0};
    for (int k = 0; k < 5; k++) { /* one epoch */
        struct kfac_batch batch;
        kfac_batcher_next(&b, 10, &batch);
        ck_assert_ptr_eq(batch.t, batch.x);
        for (int i = 0; i < 10; i++)
            seen[(int)batch.x[i * D]]++;
    }
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(seen[i], 1);
    kfac_batcher_free(&b);
    ck_assert_int_eq(kfac_batch_size(KFAC_SCHEDULE_FIXED, 1000, 500, 7, 600), 600);
    ck_assert_int_eq(kfac_batch_size(KFAC_SCHEDULE_FIXED, 100, 500, 7, 600), 100);
}
END_TEST

/* REFERENCE.md §6: the K-FAC paper's schedule on MNIST's 60,000 cases. */
START_TEST(exponential_batch_schedule)
{
    const long k[] = {1, 2, 50, 100, 250, 500, 501, 10000};
    const int m[] = {1000, 1008, 1494, 2253, 7714, 60000, 60000, 60000};
    for (int i = 0; i < 8; i++)
        ck_assert_int_eq(kfac_batch_size(KFAC_SCHEDULE_EXPONENTIAL, 1000, 500, k[i], 60000), m[i]);
    for (long j = 2; j < 500; j++) /* non-decreasing, below the whole set until k_full */
        ck_assert_int_ge(kfac_batch_size(KFAC_SCHEDULE_EXPONENTIAL, 1000, 500, j, 60000),
                         kfac_batch_size(KFAC_SCHEDULE_EXPONENTIAL, 1000, 500, j - 1, 60000));
    ck_assert_int_lt(kfac_batch_size(KFAC_SCHEDULE_EXPONENTIAL, 1000, 500, 499, 60000), 60000);
    /* A set no larger than m1 is used whole from the start. */
    ck_assert_int_eq(kfac_batch_size(KFAC_SCHEDULE_EXPONENTIAL, 1000, 500, 1, 800), 800);
}
END_TEST

static Suite *data_suite(void)
{
    Suite *s = suite_create("data");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, idx_raw_and_gzip);
    tcase_add_test(tc, idx_big_endian_types);
    tcase_add_test(tc, npy_types);
    tcase_add_test(tc, npy_images_keep_their_shape);
    tcase_add_test(tc, csv_reads_and_reports_lines);
    tcase_add_test(tc, csv_regression_split_and_standardisation);
    tcase_add_test(tc, idx_classification_one_hot_and_autoencoder);
    tcase_add_test(tc, images_resize_by_area);
    tcase_add_test(tc, batcher_draws_without_replacement);
    tcase_add_test(tc, exponential_batch_schedule);
    suite_add_tcase(s, tc);
    TCase *lim = tcase_create("limits");
    tcase_add_test(lim, idx_errors);
    tcase_add_test(lim, npy_errors);
    suite_add_tcase(s, lim);
    return s;
}

KFAC_TEST_MAIN(data_suite)
