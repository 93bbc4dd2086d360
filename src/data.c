/*
 * data.c: assembling training and test sets from files (format by file name, targets,
 * held-out split, standardisation fitted on the training split) and the minibatch
 * iterator (see data.h).
 */
#include "kfac/data.h"
#include "kfac/checkpoint.h"
#include "kfac/file.h"
#include "kfac/mat.h"
#include "kfac/status.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int read_array(const char *path, struct kfac_array *a)
{
    if (kfac_file_has_suffix(path, ".npy") || kfac_file_has_suffix(path, ".npy.gz"))
        return kfac_npy_read(path, a);
    return kfac_idx_read(path, a);
}

static size_t cols_of(const struct kfac_array *a)
{
    size_t c = 1;
    for (int i = 1; i < a->ndim; i++)
        c *= a->dims[i];
    return c;
}

/* Features x (n × d_x) and raw targets y (n × d_y: labels or values; NULL for an
 * autoencoder) of one file set, before labels become one-hot. */
struct raw_set {
    size_t n;
    int d_x, d_y;
    int shape[3];           /* see struct kfac_dataset */
    float *x, *y;
    const char *y_path;     /* the file y came from */
};

static void raw_free(struct raw_set *r)
{
    kfac_floats_free(r->x);
    kfac_floats_free(r->y);
    memset(r, 0, sizeof *r);
}

static int load_csv(const struct kfac_data_opts *o, const char *path, struct raw_set *r)
{
    struct kfac_table t;
    int rc = kfac_csv_read(path, &t);
    if (rc)
        return rc;
    int *is_target = kfac_xcalloc((size_t)t.cols, sizeof *is_target);
    int n_targets = 0;
    if (o->task != KFAC_TASK_AUTOENCODER) {
        if (!o->target_columns || !*o->target_columns) {
            rc = kfac_error(KFAC_EINVAL, "%s: data.target_columns must name the target column(s) "
                                         "of a CSV file for this task",
                            path);
            goto done;
        }
        char *list = kfac_xstrdup(o->target_columns), *save = NULL;
        for (char *name = strtok_r(list, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
            name += strspn(name, " \t");
            name[strcspn(name, " \t")] = 0;
            int j = 0;
            while (j < t.cols && strcmp(t.names[j], name) != 0)
                j++;
            if (j == t.cols) {
                rc = kfac_error(KFAC_EINVAL, "%s: data.target_columns names '%s', which is not a "
                                             "column of the header",
                                path, name);
                break;
            }
            n_targets += !is_target[j];
            is_target[j] = 1;
        }
        free(list);
        if (rc)
            goto done;
        if (n_targets == t.cols) {
            rc = kfac_error(KFAC_EINVAL, "%s: every column is a target; no features are left", path);
            goto done;
        }
    }
    r->n = t.rows;
    r->d_x = t.cols - n_targets;
    r->shape[0] = r->d_x;
    r->shape[1] = r->shape[2] = 1;
    r->d_y = n_targets;
    r->x = kfac_floats_new(r->n * (size_t)r->d_x);
    r->y = n_targets ? kfac_floats_new(r->n * (size_t)n_targets) : NULL;
    for (size_t i = 0; i < t.rows; i++) {
        int jx = 0, jy = 0;
        for (int j = 0; j < t.cols; j++) {
            float v = t.data[i * (size_t)t.cols + j];
            if (is_target[j])
                r->y[i * (size_t)n_targets + jy++] = v;
            else
                r->x[i * (size_t)r->d_x + jx++] = v;
        }
    }
done:
    free(is_target);
    kfac_table_free(&t);
    return rc;
}

/* w (t × s): w[u][i] = the share of output pixel u (of t) that source pixel i (of s)
 * covers, so that a row of w sums to 1 (area averaging). */
static void area_weights(int s, int t, float *w)
{
    for (int u = 0; u < t; u++) {
        double lo = (double)u * s / t, hi = (double)(u + 1) * s / t;
        for (int i = 0; i < s; i++) {
            double overlap = fmin(hi, i + 1.0) - fmax(lo, (double)i);
            w[u * s + i] = overlap > 0 ? (float)(overlap * t / s) : 0.0f;
        }
    }
}

int kfac_images_resize(size_t n, int s, int t, const float *in, float *out)
{
    if (s < 1 || t < 1)
        return kfac_error(KFAC_EINVAL, "cannot resize %d x %d images to %d x %d", s, s, t, t);
    float *w = kfac_floats_new((size_t)t * s), *tmp = kfac_floats_new((size_t)t * s);
    const struct kfac_backend *be = kfac_backend_cpu(); /* data are loaded on the host */
    area_weights(s, t, w);
    for (size_t k = 0; k < n; k++) {
        const float *img = in + k * (size_t)s * s;
        float *o = out + k * (size_t)t * t;
        /* out = W img Wᵀ: rows first (t × s), then columns (t × t). */
        be->sgemm(KFAC_NO_TRANS, KFAC_NO_TRANS, t, s, s, 1.0f, w, s, img, s, 0.0f, tmp, s);
        be->sgemm(KFAC_NO_TRANS, KFAC_TRANS, t, t, s, 1.0f, tmp, s, w, s, 0.0f, o, t);
    }
    kfac_floats_free(w);
    kfac_floats_free(tmp);
    return 0;
}

/* data.image_size: square images (n × side × side) resampled to n × size × size. */
static int resize_images(const struct kfac_data_opts *o, const char *path, struct kfac_array *a)
{
    if (o->image_size <= 0)
        return 0;
    if (a->ndim != 3 || a->dims[1] != a->dims[2])
        return kfac_error(KFAC_EINVAL, "%s: data.image_size needs square images (n x side x "
                                       "side), not this file's shape",
                          path);
    int s = (int)a->dims[1], t = o->image_size;
    if (s == t)
        return 0;
    float *out = kfac_floats_new(a->dims[0] * (size_t)t * t);
    kfac_images_resize(a->dims[0], s, t, a->data, out);
    kfac_floats_free(a->data);
    a->data = out;
    a->dims[1] = a->dims[2] = (size_t)t;
    return 0;
}

static int load_arrays(const struct kfac_data_opts *o, const char *path, const char *targets,
                       int split, struct raw_set *r)
{
    struct kfac_array a, b = {0};
    /* A .mat benchmark file holds both splits, and MNIST's labels beside its digits. */
    int rc = kfac_file_has_suffix(path, ".mat") ? kfac_matlab_read(path, split, &a, &b)
                                                : read_array(path, &a);
    if (rc)
        return rc;
    if ((rc = resize_images(o, path, &a))) {
        kfac_array_free(&a);
        kfac_array_free(&b);
        return rc;
    }
    size_t d = cols_of(&a);
    if (a.dims[0] == 0 || d == 0 || d > 100000000) {
        kfac_array_free(&a);
        kfac_array_free(&b);
        return kfac_error(KFAC_EFORMAT, "%s: %zu cases of %zu values each is not a usable data set",
                          path, a.dims[0], d);
    }
    r->n = a.dims[0];
    r->d_x = (int)d;
    /* Images: N × H × W (one channel) or N × C × H × W; anything else is a vector. */
    r->shape[0] = (int)d;
    r->shape[1] = r->shape[2] = 1;
    if (a.ndim == 3 || a.ndim == 4) {
        r->shape[0] = a.ndim == 4 ? (int)a.dims[1] : 1;
        r->shape[1] = (int)a.dims[a.ndim - 2];
        r->shape[2] = (int)a.dims[a.ndim - 1];
    }
    r->x = a.data;
    if (a.uint8)
        for (size_t i = 0; i < r->n * d; i++)
            r->x[i] /= 255.0f;
    if (o->task == KFAC_TASK_AUTOENCODER) {
        kfac_array_free(&b);
        return 0;
    }
    if (targets) { /* a targets file wins over labels kept beside the features */
        kfac_array_free(&b);
        if ((rc = read_array(targets, &b)))
            return rc;
    } else if (b.data) {
        targets = path;
    } else {
        return kfac_error(KFAC_EINVAL, "%s: this task needs a targets file (data.train_targets / "
                                       "data.test_targets)",
                          path);
    }
    if (b.dims[0] != r->n) {
        kfac_array_free(&b);
        return kfac_error(KFAC_EFORMAT, "%s: %zu targets for the %zu cases of %s", targets,
                          b.dims[0], r->n, path);
    }
    r->d_y = (int)cols_of(&b);
    r->y = b.data;
    r->y_path = targets;
    return 0;
}

/* KFAC_EFORMAT naming path and the case (its place in the file, from 1) of the first of
 * the n × d values v that is not finite, or with unit set lies outside [0, 1]; what says
 * what the values are for. */
static int check_values(const char *path, const float *v, size_t n, int d, int unit,
                        const char *what)
{
    for (size_t i = 0; i < n * (size_t)d; i++) {
        if (!isfinite(v[i]))
            return kfac_error(KFAC_EFORMAT, "%s: case %zu holds a value that is not finite (%g, "
                                            "value %zu of the case)",
                              path, i / d + 1, v[i], i % d + 1);
        if (unit && (v[i] < 0 || v[i] > 1))
            return kfac_error(KFAC_EFORMAT, "%s: case %zu holds %g (value %zu of the case), but "
                                            "%s must lie in [0, 1]",
                              path, i / d + 1, v[i], i % d + 1, what);
    }
    return 0;
}

/* The checks every loaded set passes before it is split or shuffled, so that a case is
 * named by its place in its own file. */
static int check_raw(const struct kfac_data_opts *o, const char *path, const struct raw_set *r)
{
    const char *unit_what = "the targets of a Bernoulli (logistic-output) loss";
    int rc = check_values(path, r->x, r->n, r->d_x,
                          o->unit_targets && o->task == KFAC_TASK_AUTOENCODER, unit_what);
    if (rc || !r->y)
        return rc;
    const char *ypath = r->y_path ? r->y_path : path;
    if ((rc = check_values(ypath, r->y, r->n, r->d_y,
                           o->unit_targets && o->task == KFAC_TASK_REGRESSION, unit_what)))
        return rc;
    for (size_t i = 0; o->task == KFAC_TASK_CLASSIFICATION && i < r->n * (size_t)r->d_y; i++) {
        if (r->y[i] < 0 || r->y[i] != floorf(r->y[i]) || r->y[i] >= 1e6f)
            return kfac_error(KFAC_EFORMAT, "%s: label %g of case %zu is not an integer in "
                                            "[0, 1000000)",
                              ypath, r->y[i], i / r->d_y + 1);
        if (o->n_classes > 0 && r->y[i] >= o->n_classes)
            return kfac_error(KFAC_EFORMAT, "%s: label %g of case %zu is not below "
                                            "data.classes = %d",
                              ypath, r->y[i], i / r->d_y + 1, o->n_classes);
    }
    return 0;
}

static int load_raw(const struct kfac_data_opts *o, const char *path, const char *targets,
                    int split, struct raw_set *r)
{
    memset(r, 0, sizeof *r);
    int rc = kfac_file_has_suffix(path, ".csv") ? load_csv(o, path, r)
                                                : load_arrays(o, path, targets, split, r);
    if (!rc)
        rc = check_raw(o, path, r);
    if (rc)
        raw_free(r);
    return rc;
}

/* Turns raw targets into the dataset's t: one-hot for labels, copies for values. */
static int finish_set(const struct kfac_data_opts *o, const char *path, struct raw_set *r,
                      int n_classes, struct kfac_dataset *ds)
{
    if (o->task == KFAC_TASK_CLASSIFICATION && r->d_y != 1) {
        raw_free(r);
        return kfac_error(KFAC_EFORMAT, "%s: classification expects one label column, found %d",
                          path, r->d_y);
    }
    ds->n = r->n;
    ds->d_x = r->d_x;
    memcpy(ds->shape, r->shape, sizeof ds->shape);
    ds->x = r->x;
    r->x = NULL;
    if (o->task == KFAC_TASK_AUTOENCODER) {
        ds->d_t = ds->d_x;
        ds->t = ds->x;
    } else if (o->task == KFAC_TASK_REGRESSION) {
        ds->d_t = r->d_y;
        ds->t = r->y;
        r->y = NULL;
    } else {
        ds->d_t = n_classes;
        ds->t = kfac_floats_new(r->n * (size_t)n_classes);
        /* Integers in [0, n_classes) (check_raw, and n_classes from the largest label). */
        for (size_t i = 0; i < r->n; i++)
            ds->t[i * (size_t)n_classes + (size_t)r->y[i]] = 1.0f;
    }
    raw_free(r);
    return 0;
}

/* The cases idx[0..k) of src, as a new raw set. */
static void take_rows(const struct raw_set *src, const size_t *idx, size_t k, struct raw_set *dst)
{
    dst->n = k;
    dst->d_x = src->d_x;
    memcpy(dst->shape, src->shape, sizeof dst->shape);
    dst->d_y = src->d_y;
    dst->x = kfac_floats_new(k * (size_t)src->d_x);
    dst->y = src->y ? kfac_floats_new(k * (size_t)src->d_y) : NULL;
    for (size_t i = 0; i < k; i++) {
        memcpy(dst->x + i * src->d_x, src->x + idx[i] * src->d_x, (size_t)src->d_x * sizeof(float));
        if (src->y)
            memcpy(dst->y + i * src->d_y, src->y + idx[i] * src->d_y,
                   (size_t)src->d_y * sizeof(float));
    }
}

static void standardize(struct kfac_dataset *train, struct kfac_dataset *test)
{
    int d = train->d_x;
    for (int j = 0; j < d; j++) {
        double sum = 0, sq = 0;
        for (size_t i = 0; i < train->n; i++)
            sum += train->x[i * d + j];
        double mean = sum / train->n;
        for (size_t i = 0; i < train->n; i++) {
            double c = train->x[i * d + j] - mean;
            sq += c * c;
        }
        double sd = sqrt(sq / train->n);
        if (sd == 0)
            sd = 1; /* a constant column becomes 0 */
        for (size_t i = 0; i < train->n; i++)
            train->x[i * d + j] = (float)((train->x[i * d + j] - mean) / sd);
        for (size_t i = 0; i < test->n; i++)
            test->x[i * d + j] = (float)((test->x[i * d + j] - mean) / sd);
    }
}

static int max_label(const struct raw_set *r)
{
    float mx = 0;
    for (size_t i = 0; i < r->n; i++)
        mx = r->y[i] > mx ? r->y[i] : mx;
    return mx < 1e6f ? (int)mx : 1000000;
}

int kfac_data_load(const struct kfac_data_opts *o, struct kfac_rng *rng,
                   struct kfac_dataset *train, struct kfac_dataset *test)
{
    memset(train, 0, sizeof *train);
    memset(test, 0, sizeof *test);
    if (!o->train || !*o->train)
        return kfac_error(KFAC_EINVAL, "data.train: no training file given");
    struct raw_set tr, te = {0};
    int rc = load_raw(o, o->train, o->train_targets, KFAC_SPLIT_TRAIN, &tr);
    if (rc)
        return rc;
    if (o->test && *o->test) {
        if ((rc = load_raw(o, o->test, o->test_targets, KFAC_SPLIT_TEST, &te))) {
            raw_free(&tr);
            return rc;
        }
        if (te.d_x != tr.d_x || te.d_y != tr.d_y) {
            rc = kfac_error(KFAC_EFORMAT, "%s: cases have %d inputs and %d targets, but %s has %d "
                                          "and %d",
                            o->test, te.d_x, te.d_y, o->train, tr.d_x, tr.d_y);
            goto fail;
        }
    } else if (o->test_fraction > 0) {
        size_t k = (size_t)floor(o->test_fraction * (double)tr.n);
        if (k == 0 || k >= tr.n) {
            rc = kfac_error(KFAC_EINVAL, "data.test_fraction = %g leaves no %s cases of %zu",
                            o->test_fraction, k == 0 ? "test" : "training", tr.n);
            goto fail;
        }
        size_t *idx = kfac_xmalloc(tr.n * sizeof *idx);
        for (size_t i = 0; i < tr.n; i++)
            idx[i] = i;
        kfac_rng_shuffle(rng, idx, tr.n);
        struct raw_set kept;
        take_rows(&tr, idx + k, tr.n - k, &kept);
        take_rows(&tr, idx, k, &te);
        free(idx);
        raw_free(&tr);
        tr = kept;
    }
    if (o->max_cases > 0 && (size_t)o->max_cases < tr.n)
        tr.n = (size_t)o->max_cases; /* the buffers stay; only the first cases are used */
    int n_classes = 0;
    if (o->task == KFAC_TASK_CLASSIFICATION) {
        n_classes = o->n_classes > 0 ? o->n_classes : max_label(&tr) + 1;
        if (te.n && o->n_classes <= 0 && max_label(&te) + 1 > n_classes)
            n_classes = max_label(&te) + 1;
    }
    if ((rc = finish_set(o, o->train, &tr, n_classes, train)))
        goto fail;
    if (te.n && (rc = finish_set(o, o->test ? o->test : o->train, &te, n_classes, test)))
        goto fail;
    if (o->standardize) {
        if (o->task == KFAC_TASK_AUTOENCODER) {
            rc = kfac_error(KFAC_EINVAL, "data.standardize cannot be used with the autoencoder "
                                         "task (the targets are the inputs)");
            goto fail;
        }
        standardize(train, test);
    }
    return 0;
fail:
    raw_free(&tr);
    raw_free(&te);
    kfac_dataset_free(train);
    kfac_dataset_free(test);
    return rc;
}

void kfac_dataset_free(struct kfac_dataset *ds)
{
    if (!ds)
        return;
    if (ds->t != ds->x)
        kfac_floats_free(ds->t);
    kfac_floats_free(ds->x);
    memset(ds, 0, sizeof *ds);
}

int kfac_batch_size(int schedule, int m1, long k_full, long k, size_t n)
{
    if ((size_t)m1 >= n)
        return (int)n;
    if (schedule == KFAC_SCHEDULE_FIXED)
        return m1;
    /* At k_full the exact value is n; floor() of its rounded power could give n − 1. */
    if (k >= k_full)
        return (int)n;
    double b = (double)(k_full - 1) / log2((double)n / m1);
    double m = floor(exp2((double)(k - 1) / b) * m1);
    return m < (double)n ? (int)m : (int)n;
}

void kfac_batcher_init(struct kfac_batcher *b, const struct kfac_dataset *ds, int max_batch,
                       struct kfac_rng *rng, int rank, int ranks)
{
    b->ds = ds;
    b->rng = rng;
    /* A shard's batches are the whole set's, capped by the caller. */
    b->max_batch = ds->shard || (size_t)max_batch < ds->n ? max_batch : (int)ds->n;
    b->rank = rank;
    b->ranks = ranks;
    int mine = kfac_batch_most(b->max_batch, ranks);
    b->perm = kfac_xmalloc(ds->n * sizeof *b->perm);
    for (size_t i = 0; i < ds->n; i++)
        b->perm[i] = i;
    kfac_rng_shuffle(rng, b->perm, ds->n);
    b->pos = 0;
    b->x = kfac_floats_new((size_t)mine * ds->d_x);
    b->t = ds->t == ds->x ? b->x : kfac_floats_new((size_t)mine * ds->d_t);
}

void kfac_batcher_free(struct kfac_batcher *b)
{
    if (!b)
        return;
    if (b->t != b->x)
        kfac_floats_free(b->t);
    kfac_floats_free(b->x);
    free(b->perm);
    memset(b, 0, sizeof *b);
}

void kfac_batcher_state(struct kfac_batcher *b, struct kfac_state *s)
{
    if (b->ds->shard) /* each rank's own, which rank 0's checkpoint cannot hold */
        return;
    kfac_state_add(s, "batcher.perm", KFAC_STATE_PERM, b->perm, b->ds->n);
    kfac_state_add_range(s, "batcher.pos", KFAC_STATE_SIZE, &b->pos, 1, 0, (double)b->ds->n);
}

void kfac_batcher_next(struct kfac_batcher *b, int m, struct kfac_batch *out)
{
    const struct kfac_dataset *ds = b->ds;
    *out = (struct kfac_batch){.total = m, .first = b->rank, .stride = b->ranks};
    int mine = kfac_batch_share(out, m), taken = ds->shard ? mine : m;
    if (b->pos + (size_t)taken > ds->n) {
        kfac_rng_shuffle(b->rng, b->perm, ds->n);
        b->pos = 0;
    }
    for (int i = 0; i < mine; i++) {
        size_t c = b->perm[b->pos + (size_t)(ds->shard ? i : kfac_batch_place(out, i))];
        memcpy(b->x + (size_t)i * ds->d_x, ds->x + c * ds->d_x, (size_t)ds->d_x * sizeof(float));
        if (b->t != b->x)
            memcpy(b->t + (size_t)i * ds->d_t, ds->t + c * ds->d_t, (size_t)ds->d_t * sizeof(float));
    }
    b->pos += (size_t)taken;
    out->m = mine;
    out->x = b->x;
    out->t = b->t;
}
