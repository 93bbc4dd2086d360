/*
 * data.h: data sets and minibatches.
 *
 * Readers turn files into float arrays: IDX (the MNIST format, gzip-compressed or raw),
 * NPY (float32, float64 or uint8, C order; gzip accepted too) and CSV (a header row of
 * names, then numeric rows). Values are read as stored; kfac_data_load() divides uint8
 * features (pixels) by 255. kfac_data_load() assembles the
 * training and test sets a configuration describes, and a kfac_batcher hands out
 * shuffled minibatches drawn without replacement.
 *
 * Every error names the file (and line, for CSV) and what was expected.
 */
#ifndef KFAC_DATA_H
#define KFAC_DATA_H

#include "kfac/rng.h"
#include <stddef.h>
#include <stdint.h>

struct kfac_state;

#define KFAC_MAX_DIMS 8

/* An n-dimensional array read from a file. */
struct kfac_array {
    int ndim;
    size_t dims[KFAC_MAX_DIMS];
    float *data;      /* dims[0] × … × dims[ndim−1], row-major; owned */
    int integral;     /* 1 when the file held integers (labels can come from it) */
    int uint8;        /* 1 when the elements were unsigned bytes */
};

int kfac_idx_read(const char *path, struct kfac_array *out);
int kfac_npy_read(const char *path, struct kfac_array *out);

/* Writes an uncompressed NPY file (version 1.0, C order) of n = Π dims elements of
 * elem_size bytes at data, in the machine's byte order, with the NumPy type descr ("<f4",
 * "<f8", "<i8"), through a temporary renamed over path only when complete. */
int kfac_npy_write(const char *path, const char *descr, int ndim, const size_t *dims,
                   const void *data, size_t elem_size);
void kfac_array_free(struct kfac_array *a);

/* Which part of a file that holds both splits to read. */
enum kfac_split { KFAC_SPLIT_TRAIN, KFAC_SPLIT_TEST };

/* Reads one split of an original deep-autoencoder benchmark file (MATLAB .mat, through
 * libmatio), recognised by its variables:
 *   mnist_all.mat            train0 … train9 / test0 … test9 (N_d × 784): the digits in
 *                            class order, N × 28 × 28, with labels (N) 0 … 9;
 *   digs3pts_1.mat (CURVES)  bdata / bdatatest (N × 784): N × 28 × 28;
 *   newfaces_rot_single.mat  newfaces_single (625 × N, a face per column): training is
 *   (FACES)                  the first 5N/8 columns and test the last N/4 (103,500 and
 *                            41,400 of the original 165,600; the eighth between is
 *                            Hinton & Salakhutdinov's validation set), n × 25 × 25.
 * A case's values keep the file's order. labels is empty (data NULL) for the layouts
 * without them. Variables may be double, single or uint8 (uint8 marks x->uint8). */
int kfac_matlab_read(const char *path, int split, struct kfac_array *x, struct kfac_array *labels);

/* Writes an unsigned-byte IDX file (gzip-compressed) of the given dimensions, through a
 * temporary file renamed over path only when complete. */
int kfac_idx_write_bytes(const char *path, int ndim, const size_t *dims, const unsigned char *data);

/* The synthetic image sets of the deep-autoencoder benchmarks (data/README.md), as bytes
 * (grey level round(255 v), v in [0, 1]); images are side × side, side ≤ 64. */
#define KFAC_SYNTH_MAX_SIDE 64

/* CURVES (out: n × side × side). Each image draws three points uniformly from
 * [3, side − 3]² (pixel units), redrawn until every two are at least 5 pixels apart, and
 * the quadratic curve C(t) through them at t = 0, ½ and 1, sampled at 1024 equally spaced
 * t in [0, 1]; pixel intensity is the maximum over samples of exp(−d²/(2·0.75²)), with d
 * the distance from the pixel centre to the sample (a Gaussian pen of 0.75 pixels). */
int kfac_curves_make(struct kfac_rng *rng, size_t n, int side, unsigned char *out);

/* The FACES stand-in (out: n × side × side) from k source images src (k × s × s, values in
 * [0, 1]): each image picks a source uniformly, rotates it by an angle uniform in
 * [−90°, 90°], magnifies it by a factor uniform in [1.4, 2.0] (Hinton & Salakhutdinov's
 * ranges), shifts the centre by up to 1.5 source pixels on each axis, and resamples it
 * to side × side bilinearly (edges repeated where a crop reaches past them). */
int kfac_faces_make(const float *src, size_t k, int s, struct kfac_rng *rng, size_t n, int side,
                    unsigned char *out);

/* Resamples n square images (n × s × s) to n × t × t by area averaging: each output pixel
 * is the mean of the source area it covers (fractional pixels weighted by their share),
 * so a constant image stays constant and 2:1 is the mean of 2 × 2 blocks. */
int kfac_images_resize(size_t n, int s, int t, const float *in, float *out);

/* A CSV file: a header row of column names, then rows of numbers. */
struct kfac_table {
    size_t rows;
    int cols;
    char **names;     /* cols names; owned */
    float *data;      /* rows × cols; owned */
};

int kfac_csv_read(const char *path, struct kfac_table *out);
void kfac_table_free(struct kfac_table *t);

enum kfac_task {
    KFAC_TASK_AUTOENCODER,    /* targets are the inputs */
    KFAC_TASK_CLASSIFICATION, /* integer labels, one-hot targets */
    KFAC_TASK_REGRESSION      /* real-valued targets */
};

/* The [data] section of a configuration. Paths are resolved by the caller. */
struct kfac_data_opts {
    char *train;              /* features: .idx[.gz] / *-ubyte[.gz], .npy[.gz], .csv or .mat */
    char *train_targets;      /* labels or values for IDX/NPY features, or NULL */
    char *test;               /* optional test features */
    char *test_targets;
    char *target_columns;     /* CSV: comma-separated names of the target columns */
    int task;                 /* enum kfac_task */
    double test_fraction;     /* held out from train when no test file is given */
    int standardize;          /* standardise features with training-split mean and sd */
    long max_cases;           /* use at most this many training cases (0: all) */
    int image_size;           /* resample square images to this side (0: as stored) */
    int n_classes;            /* classification: 0 infers max label + 1 */
    int shard;                /* 1 (data.shard = rank): train and train_targets hold %r, which
                               * each rank replaces with its rank to read its own part */
    int unit_targets;         /* not a key: set by the caller when the loss needs targets in
                               * [0, 1] (Bernoulli); other values are then refused */
};

struct kfac_dataset {
    size_t n;
    int d_x, d_t;
    int shape[3];             /* a case's features as channels × height × width: N×H×W
                                 files give 1 × H × W, N×C×H×W ones C × H × W, others d_x × 1 × 1 */
    float *x;                 /* n × d_x; owned */
    float *t;                 /* n × d_t; equals x for an autoencoder (not separately owned) */
    int shard;                /* this rank's part of a set shared out among the ranks
                               * (data.shard): the set's cases are those of every rank's */
};

void kfac_dataset_free(struct kfac_dataset *ds);

/* Loads the training set and the test set (test->n = 0 when there is none). Every value
 * must be finite, labels integers ≥ 0 and, with o->unit_targets, targets in [0, 1]: the
 * first that is not is named with its file and its case's place in that file. The rng
 * draws the held-out split, if any. */
int kfac_data_load(const struct kfac_data_opts *o, struct kfac_rng *rng,
                   struct kfac_dataset *train, struct kfac_dataset *test);

/* One minibatch, or this rank's share of one (comm.h): views into the batcher's buffers,
 * valid until its next call. Case j here is case first + j·stride of the whole batch of
 * `total` cases; ranks take the cases round-robin, so that each rank's cases among the
 * first n of the batch are its own first kfac_batch_share(b, n). The three trailing fields
 * zero, as in {m, x, t}, is a whole batch on one process. */
struct kfac_batch {
    int m;
    const float *x;           /* m × d_x */
    const float *t;           /* m × d_t */
    int total;                /* cases of the whole batch (0: m) */
    int first, stride;        /* the place of case 0 and the step between cases (0: 1) */
};

/* The cases of the whole batch. */
static inline int kfac_batch_total(const struct kfac_batch *b)
{
    return b->total ? b->total : b->m;
}

/* The step between b's cases in the whole batch (the number of ranks). */
static inline int kfac_batch_step(const struct kfac_batch *b)
{
    return b->stride ? b->stride : 1;
}

/* How many of the first n cases of the whole batch are b's: its first that many. */
static inline int kfac_batch_share(const struct kfac_batch *b, int n)
{
    int step = kfac_batch_step(b);
    return n > b->first ? (n - b->first + step - 1) / step : 0;
}

/* The largest share of n cases dealt round-robin to ranks ranks: rank 0's. */
static inline int kfac_batch_most(int n, int ranks)
{
    return (n + ranks - 1) / ranks;
}

/* The place in the whole batch of b's case j. */
static inline long kfac_batch_place(const struct kfac_batch *b, int j)
{
    return b->first + (long)j * kfac_batch_step(b);
}

enum kfac_schedule {
    KFAC_SCHEDULE_FIXED,      /* every batch has m1 cases */
    KFAC_SCHEDULE_EXPONENTIAL /* m_k = min(⌊2^((k−1)/b) m1⌋, n), b = (k_full−1)/log2(n/m1) */
};

/* Batch size at iteration k (1-based) for a set of n cases. The exponential schedule
 * (K-FAC paper §7) starts at m1 and reaches the whole set at iteration k_full ≥ 2; both
 * schedules are capped at n. */
int kfac_batch_size(int schedule, int m1, long k_full, long k, size_t n);

/* Draws batches without replacement from a permutation of the data set, reshuffled
 * when fewer cases are left than a batch needs. Of ranks processes, each with the same
 * data set and stream, rank `rank` copies its share of each batch (every ranks-th case
 * from its rank on): the permutation and position are those of one process. When the
 * data set is this rank's shard (ds->shard), the rank draws its share from its own
 * permutation of it instead. */
struct kfac_batcher {
    const struct kfac_dataset *ds;
    struct kfac_rng *rng;
    size_t *perm;             /* n */
    size_t pos;               /* next unused position in perm */
    int max_batch;            /* the largest whole batch */
    int rank, ranks;
    float *x, *t;             /* ⌈max_batch/ranks⌉ × d_x, × d_t */
};

void kfac_batcher_init(struct kfac_batcher *b, const struct kfac_dataset *ds, int max_batch,
                       struct kfac_rng *rng, int rank, int ranks);
void kfac_batcher_free(struct kfac_batcher *b);

/* Lists the batch order and position as checkpoint items (checkpoint.h): a resumed run
 * draws the same batches, and a checkpoint's order must be a permutation of the cases.
 * Nothing for a shard: a resumed sharded run starts a new pass over each shard. */
void kfac_batcher_state(struct kfac_batcher *b, struct kfac_state *s);

/* The next m cases (1 ≤ m ≤ min(max_batch, n)), of which out gets this rank's share. */
void kfac_batcher_next(struct kfac_batcher *b, int m, struct kfac_batch *out);

#endif
