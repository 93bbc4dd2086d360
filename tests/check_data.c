/*
 * check_data.c: the IDX, NPY and CSV readers on fixtures written here (valid, gzip,
 * truncated, wrong magic, wrong sizes, ragged), the IDX writer, the .mat reader on files
 * libmatio writes here, the CURVES and FACES generators, dataset assembly (targets,
 * one-hot, held-out split, standardisation fitted on the training split) and the batcher.
 */
#include "kfac/data.h"
#include "kfac/status.h"
#include "testutil.h"

#include <math.h>
#include <matio.h>
#include <unistd.h>
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

/* Non-finite values in float IDX and NPY files, labels that are not whole, and Bernoulli
 * targets outside [0, 1] are refused with the file and the case's place in it, whether or
 * not a held-out split shuffles the cases afterwards. */
START_TEST(bad_values_are_named_by_file_and_case)
{
    const char *npy = scratch_file("bad.npy"), *lab = scratch_file("bad-lab.npy");
    float x[4 * 3] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f, NAN, 0.9f, 0.1f, 0.2f, 0.3f};
    write_npy(npy, "<f4", "False", "(4, 3)", x, sizeof x);
    struct kfac_data_opts o = {.train = (char *)npy, .task = KFAC_TASK_AUTOENCODER,
                               .test_fraction = 0.5};
    struct kfac_rng r;
    kfac_rng_seed(&r, 3);
    struct kfac_dataset tr, te;
    expect_error(kfac_data_load(&o, &r, &tr, &te), KFAC_EFORMAT,
                 "bad.npy: case 3 holds a value that is not finite (nan, value 2 of the case)");
    x[7] = INFINITY;
    write_npy(npy, "<f4", "False", "(4, 3)", x, sizeof x);
    expect_error(kfac_data_load(&o, &r, &tr, &te), KFAC_EFORMAT, "case 3 holds a value that is not "
                                                                 "finite (inf");
    /* Float64 and float IDX alike. */
    double xd[2] = {1.0, -INFINITY};
    write_npy(npy, "<f8", "False", "(2, 1)", xd, sizeof xd);
    expect_error(kfac_data_load(&o, &r, &tr, &te), KFAC_EFORMAT, "bad.npy: case 2 holds a value");
    const char *idx = scratch_file("bad.idx");
    unsigned char buf[4 + 4 * 2 + 4 * 2 * 2];
    unsigned char hdr[12] = {0, 0, 0x0D, 2, 0, 0, 0, 2, 0, 0, 0, 2};
    memcpy(buf, hdr, sizeof hdr);
    float v[4] = {0.5f, 0.25f, 0.125f, NAN};
    for (int i = 0; i < 4; i++) { /* big-endian floats */
        uint32_t u;
        memcpy(&u, &v[i], 4);
        for (int b = 0; b < 4; b++)
            buf[12 + 4 * i + b] = (unsigned char)(u >> (24 - 8 * b));
    }
    write_bytes(idx, buf, 12 + 16);
    o.train = (char *)idx;
    expect_error(kfac_data_load(&o, &r, &tr, &te), KFAC_EFORMAT, "bad.idx: case 2 holds a value");
    /* Bernoulli targets (an autoencoder's inputs) must lie in [0, 1]. */
    x[7] = 1.5f;
    write_npy(npy, "<f4", "False", "(4, 3)", x, sizeof x);
    o.train = (char *)npy;
    o.unit_targets = 1;
    expect_error(kfac_data_load(&o, &r, &tr, &te), KFAC_EFORMAT,
                 "bad.npy: case 3 holds 1.5 (value 2 of the case), but the targets of a Bernoulli");
    o.unit_targets = 0;
    ck_assert_int_eq(kfac_data_load(&o, &r, &tr, &te), 0); /* squared error takes any value */
    kfac_dataset_free(&tr);
    kfac_dataset_free(&te);
    /* A label that is not whole is named in the labels file, by its own case. */
    float labels[4] = {0, 1, 2.5f, 1};
    write_npy(lab, "<f4", "False", "(4,)", labels, sizeof labels);
    o.task = KFAC_TASK_CLASSIFICATION;
    o.train_targets = (char *)lab;
    expect_error(kfac_data_load(&o, &r, &tr, &te), KFAC_EFORMAT,
                 "bad-lab.npy: label 2.5 of case 3 is not an integer");
    labels[2] = NAN;
    write_npy(lab, "<f4", "False", "(4,)", labels, sizeof labels);
    expect_error(kfac_data_load(&o, &r, &tr, &te), KFAC_EFORMAT,
                 "bad-lab.npy: case 3 holds a value that is not finite");
    /* A label beyond data.classes too, before the split shuffles the cases. */
    labels[2] = 7;
    write_npy(lab, "<f4", "False", "(4,)", labels, sizeof labels);
    o.n_classes = 5;
    expect_error(kfac_data_load(&o, &r, &tr, &te), KFAC_EFORMAT,
                 "bad-lab.npy: label 7 of case 3 is not below data.classes = 5");
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
    kfac_batcher_init(&b, &ds, 10, &r, 0, 1);
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

/* Ranks' batchers from the same stream: for every batch (10 and 7 cases, the second
 * not dividing by 3), the ranks' shares are the one process's batch dealt round-robin,
 * and each rank's first kfac_batch_share(b, n) cases are its among the batch's first n. */
START_TEST(ranks_share_each_batch_round_robin)
{
    enum { N = 40, D = 2, RANKS = 3 };
    float x[N * D];
    for (int i = 0; i < N; i++)
        x[i * D] = (float)i, x[i * D + 1] = (float)-i;
    struct kfac_dataset ds = {.n = N, .d_x = D, .d_t = D, .shape = {D, 1, 1}, .x = x, .t = x};
    struct kfac_rng r[RANKS + 1];
    struct kfac_batcher one, part[RANKS];
    kfac_rng_seed(&r[RANKS], 8);
    kfac_batcher_init(&one, &ds, 10, &r[RANKS], 0, 1);
    for (int q = 0; q < RANKS; q++) {
        kfac_rng_seed(&r[q], 8);
        kfac_batcher_init(&part[q], &ds, 10, &r[q], q, RANKS);
    }
    for (int k = 0; k < 12; k++) { /* through reshuffles */
        int m = k % 2 ? 7 : 10;
        struct kfac_batch whole, b[RANKS];
        kfac_batcher_next(&one, m, &whole);
        ck_assert_int_eq(kfac_batch_total(&whole), m);
        int held = 0;
        for (int q = 0; q < RANKS; q++) {
            kfac_batcher_next(&part[q], m, &b[q]);
            ck_assert_int_eq(kfac_batch_total(&b[q]), m);
            held += b[q].m;
            for (int j = 0; j < b[q].m; j++) {
                long at = kfac_batch_place(&b[q], j);
                ck_assert_int_eq(at % RANKS, q);
                ck_assert_float_eq(b[q].x[j * D], whole.x[at * D]);
                ck_assert_float_eq(b[q].x[j * D + 1], whole.x[at * D + 1]);
            }
            for (int n = 0; n <= m; n++) {
                int mine = 0;
                for (long at = q; at < n; at += RANKS)
                    mine++;
                ck_assert_int_eq(kfac_batch_share(&b[q], n), mine);
            }
        }
        ck_assert_int_eq(held, m);
    }
    kfac_batcher_free(&one);
    for (int q = 0; q < RANKS; q++)
        kfac_batcher_free(&part[q]);
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

START_TEST(idx_writer_round_trip)
{
    unsigned char img[2 * 3 * 4];
    for (int i = 0; i < 24; i++)
        img[i] = (unsigned char)(i * 10);
    const char *path = scratch_file("w-images-idx3-ubyte.gz");
    size_t dims[3] = {2, 3, 4};
    ck_assert_int_eq(kfac_idx_write_bytes(path, 3, dims, img), 0);
    struct kfac_array a;
    ck_assert_int_eq(kfac_idx_read(path, &a), 0);
    ck_assert_int_eq(a.ndim, 3);
    ck_assert_uint_eq(a.dims[0], 2);
    ck_assert_uint_eq(a.dims[1], 3);
    ck_assert_uint_eq(a.dims[2], 4);
    ck_assert_int_eq(a.uint8, 1);
    for (int i = 0; i < 24; i++)
        ck_assert_float_eq(a.data[i], img[i]);
    kfac_array_free(&a);
    /* Nothing is left beside it, and a directory that does not exist is reported. */
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    ck_assert_int_ne(access(tmp, F_OK), 0);
    expect_error(kfac_idx_write_bytes(scratch_file("no/such/dir.gz"), 3, dims, img), KFAC_EIO,
                 "cannot write");
}
END_TEST

/* CURVES: a seed fixes every byte; every image holds one thin curve. */
START_TEST(curves_are_seeded_thin_curves)
{
    enum { N = 500, S = 28 };
    unsigned char *a = malloc(N * S * S), *b = malloc(N * S * S);
    struct kfac_rng r;
    kfac_rng_seed(&r, 11);
    ck_assert_int_eq(kfac_curves_make(&r, N, S, a), 0);
    kfac_rng_seed(&r, 11);
    ck_assert_int_eq(kfac_curves_make(&r, N, S, b), 0);
    ck_assert_mem_eq(a, b, N * S * S);
    kfac_rng_seed(&r, 12);
    kfac_curves_make(&r, N, S, b);
    ck_assert_int_ne(memcmp(a, b, N * S * S), 0);
    double total = 0;
    for (int i = 0; i < N; i++) {
        int peak = 0, inked = 0;
        for (int p = 0; p < S * S; p++) {
            int v = a[i * S * S + p];
            total += v / 255.0;
            peak = v > peak ? v : peak;
            inked += v >= 128;
        }
        /* A pixel whose centre the curve passes within half a pixel of gets at least
         * exp(−0.5 / (2 · 0.75²)) = 0.64 of full ink; the points are 5 pixels apart, so a
         * curve crosses at least 5 pixels; a stroke about two pixels wide over at most
         * some 100 pixels of length inks far less than half the image. */
        ck_assert_int_ge(peak, 163);
        ck_assert_int_ge(inked, 5);
        ck_assert_int_le(inked, 300);
    }
    double mean = total / (N * S * S);
    ck_assert_msg(mean > 0.02 && mean < 0.2, "mean intensity %g", mean);
    ck_assert_int_eq(kfac_curves_make(&r, 1, 8, a), KFAC_EINVAL);
    free(a);
    free(b);
}
END_TEST

/* The FACES stand-in: resampling keeps a constant image constant whatever the turn,
 * zoom and shift; a seed fixes every byte; each image comes from one source. */
START_TEST(faces_resample_their_sources)
{
    enum { K = 3, S = 10, N = 40, SIDE = 12 };
    float src[K * S * S];
    for (int k = 0; k < K; k++)
        for (int p = 0; p < S * S; p++)
            src[k * S * S + p] = (float)(k + 1) * 0.25f;
    unsigned char a[N * SIDE * SIDE], b[N * SIDE * SIDE];
    struct kfac_rng r;
    kfac_rng_seed(&r, 5);
    ck_assert_int_eq(kfac_faces_make(src, K, S, &r, N, SIDE, a), 0);
    int seen[K] = {0};
    for (int i = 0; i < N; i++) {
        int v = a[i * SIDE * SIDE];
        ck_assert_msg(v == 64 || v == 128 || v == 191, "value %d", v);
        for (int p = 0; p < SIDE * SIDE; p++)
            ck_assert_int_eq(a[i * SIDE * SIDE + p], v);
        seen[(v + 32) / 64 - 1] = 1;
    }
    ck_assert(seen[0] && seen[1] && seen[2]);
    kfac_rng_seed(&r, 5);
    kfac_faces_make(src, K, S, &r, N, SIDE, b);
    ck_assert_mem_eq(a, b, sizeof a);
    /* A bright centre stays near the centre: rotation and zoom are about it, and the
     * shift is at most 1.5 source pixels. */
    float dot[S * S] = {0};
    dot[(S / 2) * S + S / 2] = dot[(S / 2 - 1) * S + S / 2] = 1;
    dot[(S / 2) * S + S / 2 - 1] = dot[(S / 2 - 1) * S + S / 2 - 1] = 1;
    ck_assert_int_eq(kfac_faces_make(dot, 1, S, &r, N, SIDE, a), 0);
    for (int i = 0; i < N; i++) {
        double sum = 0, cx = 0, cy = 0;
        for (int p = 0; p < SIDE * SIDE; p++) {
            double v = a[i * SIDE * SIDE + p];
            sum += v;
            cx += v * (p % SIDE + 0.5);
            cy += v * (p / SIDE + 0.5);
        }
        ck_assert(sum > 0);
        ck_assert_msg(fabs(cx / sum - SIDE / 2.0) < 3 && fabs(cy / sum - SIDE / 2.0) < 3,
                      "image %d: centre of mass (%g, %g)", i, cx / sum, cy / sum);
    }
    ck_assert_int_eq(kfac_faces_make(src, 0, S, &r, N, SIDE, a), KFAC_EINVAL);
}
END_TEST

/* Writes a real 2-D variable (column-major data) to an open .mat file, compressed or not
 * (z). */
static void mat_put_as(mat_t *mat, const char *name, enum matio_classes cls,
                       enum matio_types type, size_t rows, size_t cols, void *data,
                       enum matio_compression z)
{
    size_t dims[2] = {rows, cols};
    matvar_t *v = Mat_VarCreate(name, cls, type, 2, dims, data, MAT_F_DONT_COPY_DATA);
    ck_assert_ptr_nonnull(v);
    ck_assert_int_eq(Mat_VarWrite(mat, v, z), 0);
    Mat_VarFree(v);
}

static void mat_put(mat_t *mat, const char *name, enum matio_classes cls, enum matio_types type,
                    size_t rows, size_t cols, void *data)
{
    mat_put_as(mat, name, cls, type, rows, cols, data, MAT_COMPRESSION_ZLIB);
}

/* The .mat file at path reads, its split holding `rows` cases. */
static void expect_mat_rows(const char *path, int split, size_t rows)
{
    struct kfac_array x, lab;
    ck_assert_msg(kfac_matlab_read(path, split, &x, &lab) == 0, "%s", kfac_last_error());
    ck_assert_uint_eq(x.dims[0], rows);
    kfac_array_free(&x);
    kfac_array_free(&lab);
}

/* mnist_all.mat: train<d> holds d + 1 digits, test<d> one, each pixel j of case i of
 * class d equal to (d·7 + i·3 + j) mod 256 (row i, column j of an N × 784 matrix). */
START_TEST(matlab_mnist_all_layout)
{
    const char *path = scratch_file("mnist_all.mat");
    mat_t *mat = Mat_CreateVer(path, NULL, MAT_FT_MAT5);
    ck_assert_ptr_nonnull(mat);
    for (int split = 0; split < 2; split++)
        for (int d = 0; d < 10; d++) {
            size_t n = split ? 1 : (size_t)d + 1;
            unsigned char *px = malloc(n * 784);
            for (size_t i = 0; i < n; i++)
                for (size_t j = 0; j < 784; j++)
                    px[j * n + i] = (unsigned char)((d * 7 + i * 3 + j) % 256);
            char name[16];
            snprintf(name, sizeof name, "%s%d", split ? "test" : "train", d);
            mat_put(mat, name, MAT_C_UINT8, MAT_T_UINT8, n, 784, px);
            free(px);
        }
    Mat_Close(mat);
    struct kfac_data_opts o = {.train = (char *)path, .test = (char *)path,
                               .task = KFAC_TASK_CLASSIFICATION};
    struct kfac_rng r;
    kfac_rng_seed(&r, 1);
    struct kfac_dataset tr, te;
    ck_assert_int_eq(kfac_data_load(&o, &r, &tr, &te), 0);
    ck_assert_uint_eq(tr.n, 55);
    ck_assert_uint_eq(te.n, 10);
    ck_assert_int_eq(tr.d_x, 784);
    ck_assert_int_eq(tr.shape[1], 28);
    ck_assert_int_eq(tr.d_t, 10);
    /* Case 3 is the first 2 (after one 0 and two 1s); its pixel 5 is (14 + 0 + 5)/255. */
    ck_assert_float_eq(tr.t[3 * 10 + 2], 1);
    ck_assert_float_eq_tol(tr.x[3 * 784 + 5], 19 / 255.0f, 1e-7f);
    ck_assert_float_eq_tol(tr.x[4 * 784 + 700], (14 + 3 + 700) % 256 / 255.0f, 1e-7f);
    ck_assert_float_eq(te.t[9 * 10 + 9], 1);
    ck_assert_float_eq_tol(te.x[9 * 784 + 1], 64 / 255.0f, 1e-7f);
    kfac_dataset_free(&tr);
    kfac_dataset_free(&te);
}
END_TEST

/* digs3pts_1.mat (bdata, bdatatest: N × 784 double) and newfaces_rot_single.mat
 * (newfaces_single: 625 × N single, training the first 5N/8 columns, test the last N/4). */
START_TEST(matlab_curves_and_faces_layouts)
{
    const char *curves = scratch_file("digs3pts_1.mat"), *faces = scratch_file("faces.mat");
    mat_t *mat = Mat_CreateVer(curves, NULL, MAT_FT_MAT5);
    double *c = malloc(6 * 784 * sizeof *c);
    for (int i = 0; i < 6 * 784; i++)
        c[i] = i / (6.0 * 784);
    mat_put(mat, "bdata", MAT_C_DOUBLE, MAT_T_DOUBLE, 4, 784, c);
    mat_put(mat, "bdatatest", MAT_C_DOUBLE, MAT_T_DOUBLE, 2, 784, c);
    Mat_Close(mat);
    struct kfac_array x, lab;
    ck_assert_int_eq(kfac_matlab_read(curves, KFAC_SPLIT_TRAIN, &x, &lab), 0);
    ck_assert_uint_eq(x.dims[0], 4);
    ck_assert_ptr_null(lab.data);
    /* Row 2, column 9 of the 4 × 784 matrix is element 9·4 + 2 in column-major order. */
    ck_assert_float_eq_tol(x.data[2 * 784 + 9], (float)((9 * 4 + 2) / (6.0 * 784)), 1e-7f);
    kfac_array_free(&x);
    ck_assert_int_eq(kfac_matlab_read(curves, KFAC_SPLIT_TEST, &x, &lab), 0);
    ck_assert_uint_eq(x.dims[0], 2);
    ck_assert_float_eq_tol(x.data[1 * 784 + 783], (float)((783 * 2 + 1) / (6.0 * 784)), 1e-7f);
    kfac_array_free(&x);

    mat = Mat_CreateVer(faces, NULL, MAT_FT_MAT5);
    float *f = malloc(16 * 625 * sizeof *f);
    for (int i = 0; i < 16 * 625; i++)
        f[i] = (float)i;
    mat_put(mat, "newfaces_single", MAT_C_SINGLE, MAT_T_SINGLE, 625, 16, f);
    Mat_Close(mat);
    ck_assert_int_eq(kfac_matlab_read(faces, KFAC_SPLIT_TRAIN, &x, &lab), 0);
    ck_assert_uint_eq(x.dims[0], 10);
    ck_assert_uint_eq(x.dims[1], 25);
    ck_assert_float_eq(x.data[3 * 625 + 7], 3 * 625 + 7);
    kfac_array_free(&x);
    ck_assert_int_eq(kfac_matlab_read(faces, KFAC_SPLIT_TEST, &x, &lab), 0);
    ck_assert_uint_eq(x.dims[0], 4);
    ck_assert_float_eq(x.data[0], 12 * 625); /* the last quarter: columns 13 to 16 */
    kfac_array_free(&x);

    /* The wrong shape, an unknown layout and a file that is not a .mat are refused. */
    mat = Mat_CreateVer(faces, NULL, MAT_FT_MAT5);
    mat_put(mat, "newfaces_single", MAT_C_SINGLE, MAT_T_SINGLE, 624, 16, f);
    Mat_Close(mat);
    expect_error(kfac_matlab_read(faces, KFAC_SPLIT_TRAIN, &x, &lab), KFAC_EFORMAT,
                 "'newfaces_single' should be a real 625 x N matrix");
    mat = Mat_CreateVer(faces, NULL, MAT_FT_MAT5);
    mat_put(mat, "images", MAT_C_SINGLE, MAT_T_SINGLE, 625, 16, f);
    Mat_Close(mat);
    expect_error(kfac_matlab_read(faces, KFAC_SPLIT_TRAIN, &x, &lab), KFAC_EFORMAT,
                 "not one of the benchmark layouts");
    /* A header claiming more data than the file could hold is refused before libmatio
     * allocates it: an uncompressed 625 × 16 variable whose 16 becomes 2³¹ − 1. */
    mat = Mat_CreateVer(faces, NULL, MAT_FT_MAT5);
    size_t fd[2] = {625, 16};
    matvar_t *mv = Mat_VarCreate("newfaces_single", MAT_C_SINGLE, MAT_T_SINGLE, 2, fd, f,
                                 MAT_F_DONT_COPY_DATA);
    ck_assert_int_eq(Mat_VarWrite(mat, mv, MAT_COMPRESSION_NONE), 0);
    Mat_VarFree(mv);
    Mat_Close(mat);
    FILE *fp = fopen(faces, "r+b");
    ck_assert_ptr_nonnull(fp);
    unsigned char buf[512];
    size_t got = fread(buf, 1, sizeof buf, fp);
    const unsigned char dims_le[8] = {0x71, 0x02, 0, 0, 0x10, 0, 0, 0};
    size_t at = 0;
    while (at + 8 <= got && memcmp(buf + at, dims_le, 8) != 0)
        at++;
    ck_assert_uint_lt(at + 8, got);
    const unsigned char huge[4] = {0xff, 0xff, 0xff, 0x7f};
    ck_assert_int_eq(fseek(fp, (long)at + 4, SEEK_SET), 0);
    ck_assert_uint_eq(fwrite(huge, 1, 4, fp), 4);
    ck_assert_int_eq(fclose(fp), 0);
    expect_error(kfac_matlab_read(faces, KFAC_SPLIT_TRAIN, &x, &lab), KFAC_EFORMAT,
                 "more than this file of");
    const char *junk = scratch_file("junk.mat");
    write_bytes(junk, "not a mat file at all", 21);
    expect_error(kfac_matlab_read(junk, KFAC_SPLIT_TRAIN, &x, &lab), KFAC_EFORMAT,
                 "not a MATLAB .mat file");
    expect_error(kfac_matlab_read(scratch_file("missing.mat"), KFAC_SPLIT_TRAIN, &x, &lab),
                 KFAC_EIO, "missing.mat");
    free(c);
    free(f);
}
END_TEST

/* Little-endian MAT 5 elements by hand, for the files libmatio would not write. */
static void le32(unsigned char *b, size_t *n, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        b[(*n)++] = (unsigned char)(v >> (8 * i));
}

/* The header of a miMATRIX of `len` bytes: its tag, class, 2-D dimensions and an empty
 * name (what follows is the caller's). */
static void mat5_head(unsigned char *b, size_t *n, uint32_t len, int cls, uint32_t rows,
                      uint32_t cols)
{
    le32(b, n, 14), le32(b, n, len);
    le32(b, n, 6), le32(b, n, 8), le32(b, n, (uint32_t)cls), le32(b, n, 0);
    le32(b, n, 5), le32(b, n, 8), le32(b, n, rows), le32(b, n, cols);
    le32(b, n, 1), le32(b, n, 0);
}

/* A little-endian MAT 5 file of a 128-byte header and the given elements; big-endian
 * (big) when the elements are 32-bit words only, each of which it then reverses. */
static void mat5_file_as(const char *path, const unsigned char *body, size_t n, int big)
{
    unsigned char *b = calloc(1, 128 + n);
    memset(b, ' ', 116);
    memcpy(b, "MATLAB 5.0 MAT-file", 19);
    b[124] = 0x00, b[125] = 0x01, b[126] = 'I', b[127] = 'M';
    if (big)
        b[124] = 0x01, b[125] = 0x00, b[126] = 'M', b[127] = 'I';
    for (size_t i = 0; i < n; i++)
        b[128 + i] = big ? body[i - i % 4 + 3 - i % 4] : body[i];
    write_bytes(path, b, 128 + n);
    free(b);
}

static void mat5_file(const char *path, const unsigned char *body, size_t n)
{
    mat5_file_as(path, body, n, 0);
}

/* Appends a compressed element holding plain (n bytes); returns its compressed size. */
static unsigned long mat5_compressed(unsigned char *b, size_t *n, const unsigned char *plain,
                                     size_t plain_n)
{
    unsigned char packed[256];
    uLongf packed_n = sizeof packed;
    ck_assert_int_eq(compress(packed, &packed_n, plain, plain_n), Z_OK);
    le32(b, n, 15), le32(b, n, (uint32_t)packed_n);
    memcpy(b + *n, packed, packed_n);
    *n += packed_n;
    return packed_n;
}

/* The MAT 5 file of these elements is refused, the message holding needle. */
static void expect_mat5_refused(const char *path, const unsigned char *b, size_t n,
                                const char *needle)
{
    struct kfac_array x, lab;
    mat5_file(path, b, n);
    expect_error(kfac_matlab_read(path, KFAC_SPLIT_TRAIN, &x, &lab), KFAC_EFORMAT, needle);
}

/* Before libmatio reads a .mat file, each tag's claim is held to what holds it (libmatio
 * allocates and clears what a variable's name claims: 4 GB from a file of 268 bytes). Cell
 * arrays and structs, compressed or not, still read; the hostile claims are refused with
 * the variable's offset. */
START_TEST(matlab_tags_held_to_the_file)
{
    const char *path = scratch_file("walk.mat");
    double *c = calloc(2 * 784, sizeof *c);
    for (int z = 0; z < 2; z++) {
        mat_t *mat = Mat_CreateVer(path, NULL, MAT_FT_MAT5);
        /* A struct with two fields, one a cell array holding a struct, before the data.
         * Uncompressed, two cells and a field are left empty, which libmatio writes as
         * nothing, fewer cells than the dimensions say. */
        size_t one[2] = {1, 1}, three[2] = {1, 3};
        double v = 2;
        const char *names[2] = {"a", "bb"};
        matvar_t *inner = Mat_VarCreateStruct("in", 2, one, names, 2);
        Mat_VarSetStructFieldByName(inner, "a", 0,
                                    Mat_VarCreate(NULL, MAT_C_DOUBLE, MAT_T_DOUBLE, 2, one, &v, 0));
        Mat_VarSetStructFieldByName(inner, "bb", 0,
                                    Mat_VarCreate(NULL, MAT_C_DOUBLE, MAT_T_DOUBLE, 2, one, &v, 0));
        matvar_t *cell = Mat_VarCreate("cells", MAT_C_CELL, MAT_T_CELL, 2, three, NULL, 0);
        Mat_VarSetCell(cell, 1, inner);
        matvar_t *st = Mat_VarCreateStruct("meta", 2, one, names, 2);
        Mat_VarSetStructFieldByName(st, "bb", 0, cell);
        for (int i = 0; z && i < 3; i += 2)
            Mat_VarSetCell(cell, i, Mat_VarCreate(NULL, MAT_C_DOUBLE, MAT_T_DOUBLE, 2, one, &v, 0));
        if (z)
            Mat_VarSetStructFieldByName(st, "a", 0,
                                        Mat_VarCreate(NULL, MAT_C_DOUBLE, MAT_T_DOUBLE, 2, one,
                                                      &v, 0));
        ck_assert_int_eq(Mat_VarWrite(mat, st, z ? MAT_COMPRESSION_ZLIB : MAT_COMPRESSION_NONE),
                         0);
        Mat_VarFree(st);
        mat_put_as(mat, "bdata", MAT_C_DOUBLE, MAT_T_DOUBLE, 2, 784, c,
                   z ? MAT_COMPRESSION_ZLIB : MAT_COMPRESSION_NONE);
        Mat_Close(mat);
        expect_mat_rows(path, KFAC_SPLIT_TRAIN, 2);
    }
    /* Version 4, in which each matrix's name and data must fit in the file. */
    mat_t *mat = Mat_CreateVer(path, NULL, MAT_FT_MAT4);
    mat_put_as(mat, "bdata", MAT_C_DOUBLE, MAT_T_DOUBLE, 2, 784, c, MAT_COMPRESSION_NONE);
    mat_put_as(mat, "bdatatest", MAT_C_DOUBLE, MAT_T_DOUBLE, 1, 784, c, MAT_COMPRESSION_NONE);
    Mat_Close(mat);
    expect_mat_rows(path, KFAC_SPLIT_TEST, 1);
    struct kfac_array x, lab;
    FILE *fp = fopen(path, "r+b");
    ck_assert_ptr_nonnull(fp);
    const unsigned char huge[4] = {0x06, 0x01, 0x00, 0x69}; /* a name of 1761607942 bytes */
    ck_assert_int_eq(fseek(fp, 16, SEEK_SET), 0);
    ck_assert_uint_eq(fwrite(huge, 1, 4, fp), 4);
    ck_assert_int_eq(fclose(fp), 0);
    expect_error(kfac_matlab_read(path, KFAC_SPLIT_TRAIN, &x, &lab), KFAC_EFORMAT,
                 "the matrix at byte 0 claims 1761620486 bytes where the file has");
    /* A complex 2³⁰ × 2³⁰ double matrix, whose 2⁶⁴ bytes must not wrap to 0. */
    unsigned char v4[26];
    size_t k = 0;
    le32(v4, &k, 0), le32(v4, &k, 1u << 30), le32(v4, &k, 1u << 30), le32(v4, &k, 1);
    le32(v4, &k, 6);
    memcpy(v4 + k, "bdata", 6);
    write_bytes(path, v4, sizeof v4);
    expect_error(kfac_matlab_read(path, KFAC_SPLIT_TRAIN, &x, &lab), KFAC_EFORMAT,
                 "the matrix at byte 0 claims 18446744073709551615 bytes where the file has 6");
    free(c);

    unsigned char b[4096], plain[48];
    size_t n = 0;
    /* A variable that claims more than the file has. */
    mat5_head(b, &n, 4000, 6, 1, 1);
    expect_mat5_refused(path, b, n, "the variable at byte 128 claims 4000 bytes where the file "
                                    "has 40");
    mat5_file_as(path, b, n, 1); /* the same, big-endian */
    expect_error(kfac_matlab_read(path, KFAC_SPLIT_TRAIN, &x, &lab), KFAC_EFORMAT,
                 "the variable at byte 128 claims 4000 bytes where the file has 40");
    /* A name that claims 4 GB inside a variable that fits. */
    n = 0;
    mat5_head(b, &n, 48, 6, 1, 1);
    b[n - 4] = 0x0f, b[n - 3] = b[n - 2] = b[n - 1] = 0xff;
    le32(b, &n, 0), le32(b, &n, 0);
    expect_mat5_refused(path, b, n,
                        "at byte 128 holds an element of 4294967055 bytes where 8 are left");
    /* A 65536 × 65536 cell array in 48 bytes. */
    n = 0;
    mat5_head(b, &n, 48, 1, 65536, 65536);
    le32(b, &n, 0), le32(b, &n, 0);
    expect_mat5_refused(path, b, n, "claims more cells or fields than it can hold");
    /* A function handle whose array flags' tag says 1 byte: libmatio reads 8 all the same. */
    n = 0;
    mat5_head(b, &n, 48, 16, 65536, 65536);
    b[12] = 1;
    le32(b, &n, 0), le32(b, &n, 0);
    expect_mat5_refused(path, b, n, "has array flags that are not 8 bytes of uint32");
    /* ... and a function handle as large (libmatio allocates it as it does cells). */
    n = 0;
    mat5_head(b, &n, 48, 16, 65536, 65536);
    le32(b, &n, 0), le32(b, &n, 0);
    expect_mat5_refused(path, b, n, "claims more cells or fields than it can hold");
    /* A struct whose field names have length 0. */
    n = 0;
    mat5_head(b, &n, 64, 2, 1, 1);
    le32(b, &n, (4u << 16) | 5), le32(b, &n, 0);
    le32(b, &n, 1), le32(b, &n, 8), le32(b, &n, 0), le32(b, &n, 0);
    expect_mat5_refused(path, b, n, "has field names of length 0");
    /* 40 cells, each inside the last. */
    n = 0;
    for (int depth = 0; depth < 40; depth++)
        mat5_head(b, &n, (uint32_t)(48 * (40 - depth) - 8), 1, 1, 1);
    mat5_head(b, &n, 40, 6, 1, 0);
    expect_mat5_refused(path, b, n, "nests cells or structs more than 32 deep");
    /* A compressed variable whose contents claim more than zlib could expand it to ... */
    size_t m = 0;
    mat5_head(plain, &m, 0x7fffffff, 6, 1, 1);
    n = 0;
    unsigned long packed = mat5_compressed(b, &n, plain, m);
    char want[96];
    snprintf(want, sizeof want, "claims 2147483647 bytes, more than its %lu compressed", packed);
    expect_mat5_refused(path, b, n, want);
    /* ... and one whose stream ends inside its name. */
    m = 0;
    mat5_head(plain, &m, 200, 6, 1, 1);
    plain[m - 4] = 100;
    n = 0;
    mat5_compressed(b, &n, plain, m);
    expect_mat5_refused(path, b, n, "holds less compressed data than its tags claim");
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
    tcase_add_test(tc, bad_values_are_named_by_file_and_case);
    tcase_add_test(tc, images_resize_by_area);
    tcase_add_test(tc, batcher_draws_without_replacement);
    tcase_add_test(tc, ranks_share_each_batch_round_robin);
    tcase_add_test(tc, exponential_batch_schedule);
    tcase_add_test(tc, idx_writer_round_trip);
    tcase_add_test(tc, curves_are_seeded_thin_curves);
    tcase_add_test(tc, faces_resample_their_sources);
    tcase_add_test(tc, matlab_mnist_all_layout);
    tcase_add_test(tc, matlab_curves_and_faces_layouts);
    tcase_add_test(tc, matlab_tags_held_to_the_file);
    suite_add_tcase(s, tc);
    TCase *lim = tcase_create("limits");
    tcase_add_test(lim, idx_errors);
    tcase_add_test(lim, npy_errors);
    suite_add_tcase(s, lim);
    return s;
}

KFAC_TEST_MAIN(data_suite)
