/*
 * data_matlab.c: the reader of the original deep-autoencoder benchmark files, MATLAB .mat
 * files read through libmatio (see data.h for the three layouts it knows). Cases come out
 * as rows, in the order the file holds them; each case's values keep the file's order.
 */
#include "data_read.h"
#include "kfac/data.h"
#include "kfac/mat.h"
#include "kfac/status.h"

#include <errno.h>
#include <matio.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* libmatio reports through its logger; kfac-train reports through kfac_last_error(). */
static void quiet_log(int level, char *message)
{
    (void)level;
    (void)message;
}

/* Reads variable name (real, numeric, 2-D) of mat, checking its dimensions against the
 * expected ones (0: any), which `shape` describes for the message. file_size bounds the
 * allocation. */
static int read_matrix(mat_t *mat, const char *path, size_t file_size, const char *name,
                       size_t rows, size_t cols, const char *shape, matvar_t **out)
{
    matvar_t *v = Mat_VarReadInfo(mat, name);
    if (!v)
        return kfac_error(KFAC_EFORMAT, "%s: no variable '%s'", path, name);
    int numeric = v->class_type == MAT_C_DOUBLE || v->class_type == MAT_C_SINGLE ||
                  v->class_type == MAT_C_UINT8;
    int fits = numeric && !v->isComplex && v->rank == 2 && (!rows || v->dims[0] == rows) &&
               (!cols || v->dims[1] == cols);
    size_t elem = v->class_type == MAT_C_DOUBLE ? 8 : v->class_type == MAT_C_SINGLE ? 4 : 1;
    size_t bytes = 0;
    int rc = fits ? kfac_checked_size(path, v->dims, 2, elem, &bytes) : 0;
    Mat_VarFree(v);
    if (!fits)
        return kfac_error(KFAC_EFORMAT, "%s: variable '%s' should be a real %s matrix of double, "
                                        "single or uint8",
                          path, name, shape);
    /* libmatio allocates what the header claims: hold that to what the file can hold,
     * zlib expanding at most 1032 to 1. */
    if (rc || bytes / 1032 > file_size)
        return rc ? rc : kfac_error(KFAC_EFORMAT, "%s: variable '%s' claims %zu bytes, more than "
                                                  "this file of %zu bytes can hold",
                                    path, name, bytes, file_size);
    if (!(v = Mat_VarRead(mat, name)) || !v->data) {
        Mat_VarFree(v);
        return kfac_error(KFAC_EFORMAT, "%s: cannot read the data of variable '%s'", path, name);
    }
    *out = v;
    return 0;
}

/* Element i (column-major index) of a numeric variable, as stored. */
static float element(const matvar_t *v, size_t i)
{
    switch (v->class_type) {
    case MAT_C_DOUBLE: return (float)((const double *)v->data)[i];
    case MAT_C_SINGLE: return ((const float *)v->data)[i];
    default: return ((const uint8_t *)v->data)[i];
    }
}

/* Appends the rows of an N × d variable (each row a case) to x at row offset. */
static void append_rows(const matvar_t *v, float *x, size_t offset)
{
    size_t n = v->dims[0], d = v->dims[1];
    for (size_t j = 0; j < d; j++)
        for (size_t i = 0; i < n; i++)
            x[(offset + i) * d + j] = element(v, j * n + i);
}

static void set_images(struct kfac_array *a, size_t n, size_t side)
{
    a->ndim = 3;
    a->dims[0] = n;
    a->dims[1] = a->dims[2] = side;
}

/* mnist_all.mat: train0 … train9 (or test0 … test9), uint8 N_d × 784, labels d. */
static int read_mnist(mat_t *mat, const char *path, size_t file_size, const char *prefix,
                      struct kfac_array *x, struct kfac_array *labels)
{
    matvar_t *v[10] = {0};
    size_t n = 0;
    int rc = 0;
    for (int d = 0; d < 10 && !rc; d++) {
        char name[16];
        snprintf(name, sizeof name, "%s%d", prefix, d);
        if (!(rc = read_matrix(mat, path, file_size, name, 0, 784, "N x 784", &v[d])))
            n += v[d]->dims[0];
    }
    if (!rc) {
        set_images(x, n, 28);
        x->data = kfac_floats_new(n * 784);
        x->uint8 = v[0]->class_type == MAT_C_UINT8;
        labels->ndim = 1;
        labels->dims[0] = n;
        labels->data = kfac_floats_new(n);
        labels->integral = 1;
        for (size_t d = 0, off = 0; d < 10; off += v[d]->dims[0], d++) {
            append_rows(v[d], x->data, off);
            for (size_t i = 0; i < v[d]->dims[0]; i++)
                labels->data[off + i] = (float)d;
        }
    }
    for (int d = 0; d < 10; d++)
        Mat_VarFree(v[d]);
    return rc;
}

/* digs3pts_1.mat (CURVES): bdata (or bdatatest), N × 784 in [0, 1]. */
static int read_curves(mat_t *mat, const char *path, size_t file_size, int split,
                       struct kfac_array *x)
{
    matvar_t *v;
    const char *name = split == KFAC_SPLIT_TEST ? "bdatatest" : "bdata";
    int rc = read_matrix(mat, path, file_size, name, 0, 784, "N x 784", &v);
    if (rc)
        return rc;
    set_images(x, v->dims[0], 28);
    x->data = kfac_floats_new(v->dims[0] * 784);
    x->uint8 = v->class_type == MAT_C_UINT8;
    append_rows(v, x->data, 0);
    Mat_VarFree(v);
    return 0;
}

/* newfaces_rot_single.mat (FACES): newfaces_single, 625 × N, one case per column. */
static int read_faces(mat_t *mat, const char *path, size_t file_size, int split,
                      struct kfac_array *x)
{
    matvar_t *v;
    int rc = read_matrix(mat, path, file_size, "newfaces_single", 625, 0, "625 x N", &v);
    if (rc)
        return rc;
    size_t total = v->dims[1], n_train = total * 5 / 8, n_test = total / 4;
    size_t first = split == KFAC_SPLIT_TEST ? total - n_test : 0;
    size_t n = split == KFAC_SPLIT_TEST ? n_test : n_train;
    if (n == 0) {
        Mat_VarFree(v);
        return kfac_error(KFAC_EFORMAT, "%s: %zu faces leave no %s cases", path, total,
                          split == KFAC_SPLIT_TEST ? "test" : "training");
    }
    set_images(x, n, 25);
    x->data = kfac_floats_new(n * 625);
    x->uint8 = v->class_type == MAT_C_UINT8;
    for (size_t i = 0; i < n * 625; i++)
        x->data[i] = element(v, first * 625 + i);
    Mat_VarFree(v);
    return 0;
}

int kfac_matlab_read(const char *path, int split, struct kfac_array *x, struct kfac_array *labels)
{
    memset(x, 0, sizeof *x);
    memset(labels, 0, sizeof *labels);
    Mat_LogInitFunc("kfac-train", quiet_log);
    struct stat st;
    if (stat(path, &st) != 0)
        return kfac_data_open_error(path, errno);
    size_t file_size = (size_t)st.st_size;
    int rc = kfac_mat_check(path, file_size);
    if (rc)
        return rc;
    mat_t *mat = Mat_Open(path, MAT_ACC_RDONLY);
    if (!mat)
        return kfac_error(KFAC_EFORMAT, "%s: not a MATLAB .mat file libmatio can read", path);
    /* Which layout: by the variables the file holds. */
    const char *layout = NULL;
    matvar_t *v;
    static const char *const probes[] = {"train0", "bdata", "newfaces_single"};
    for (int i = 0; i < 3 && !layout; i++)
        if ((v = Mat_VarReadInfo(mat, probes[i]))) {
            layout = probes[i];
            Mat_VarFree(v);
        }
    if (!layout)
        rc = kfac_error(KFAC_EFORMAT, "%s: not one of the benchmark layouts (expected the "
                                      "variables train0..train9 and test0..test9 of mnist_all.mat, "
                                      "bdata and bdatatest of digs3pts_1.mat, or newfaces_single "
                                      "of newfaces_rot_single.mat)",
                        path);
    else if (strcmp(layout, "train0") == 0)
        rc = read_mnist(mat, path, file_size, split == KFAC_SPLIT_TEST ? "test" : "train", x,
                        labels);
    else if (strcmp(layout, "bdata") == 0)
        rc = read_curves(mat, path, file_size, split, x);
    else
        rc = read_faces(mat, path, file_size, split, x);
    Mat_Close(mat);
    if (rc) {
        kfac_array_free(x);
        kfac_array_free(labels);
    }
    return rc;
}
