/*
 * study.c: experiments on the Fisher of trained networks (see study.h). The Fisher study:
 * repeated training runs, each followed by the Fisher-approximation errors of its layers
 * over the whole training set for a list of batch sizes, written as a TSV table and
 * summarised as mean [min, max] over the seeds. The Fisher pictures: the exact Fisher of a
 * range of layers, its block-diagonal K-FAC approximation, their difference and the
 * block-tridiagonal K-FAC approximation as PNG heatmaps (libpng).
 */
#include "kfac/study.h"
#include "kfac/curvature.h"
#include "kfac/export.h"
#include "kfac/mat.h"
#include "kfac/status.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <png.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const method_names[KFAC_FISHER_METHODS] = {"diag", "kfac", "kfoc_approx",
                                                              "kfoc_running"};

/* The per-layer data of one trained network: ā and g of every training case, in the
 * (shuffled) order the batches take them, and the work space for the errors. */
struct layer_cases {
    int block;          /* the layer's index in net->blocks */
    int layer;          /* its number in the network (from 1) */
    char what[100];     /* e.g. "conv 1x28x28 -> 6x28x28" */
    int dense;          /* a dense layer (else a convolution) */
    int n_a, n_g, T;    /* T: rows of ā and g per case */
    double *A, *G;      /* N·T × n_a, N·T × n_g */
    double *X;          /* T > 1: N × n_g × n_a per-case gradients; else NULL */
    double *work;       /* kfac_fisher_batches_work_size() for the largest batch */
    struct kfac_fisher_block fisher; /* the exact block of A, G (and X), for every batch size */
};

/* Before anything is trained: no seed directory of the study is there already, unless
 * force. */
static int export_free(const struct kfac_config *c, int force)
{
    int rc = 0;
    for (int s = 0; s < c->study_seeds && !rc && !force; s++) {
        char *sub = kfac_xasprintf("%s/seed-%ld", c->study_export, c->seed + s);
        struct stat st;
        if (stat(sub, &st) == 0)
            rc = kfac_error(KFAC_EINVAL, "%s exists; give --force to replace the files in it",
                            sub);
        free(sub);
    }
    return rc;
}

/* What one study run used, for outside checks (study.export, export.h). */
static int export_run(const struct kfac_config *c, const struct kfac_run *run, long seed,
                      const float *X, const float *out_grads, const size_t *order, int force)
{
    char sub[32];
    snprintf(sub, sizeof sub, "seed-%ld", seed);
    int rc = kfac_export_dir(c->study_export, sub, "study.export", force);
    return rc ? rc
              : kfac_export_measurement(c->study_export, sub, run->net, X, out_grads,
                                        run->train.n, order);
}

/* Forward passes over the whole training set in a shuffled order, in the run's chunks,
 * one target per case drawn from the model, backward passes; copies the ā and g of the L
 * studied layers into cases, and with study.export writes what was used. */
static int sample_cases(const struct kfac_config *c, struct kfac_run *run, long seed, int force,
                        int L, struct layer_cases *cases)
{
    struct kfac_net *net = run->net;
    const struct kfac_dataset *ds = &run->train;
    size_t N = ds->n, d = (size_t)ds->d_x, d_out = (size_t)net->d_out;
    size_t chunk = (size_t)net->max_batch;
    size_t *order = kfac_xmalloc(N * sizeof *order);
    for (size_t i = 0; i < N; i++)
        order[i] = i;
    kfac_rng_shuffle(&run->rng_probe, order, N);
    float *X = kfac_floats_new(N * d);
    for (size_t i = 0; i < N; i++)
        memcpy(X + i * d, ds->x + order[i] * d, d * sizeof *X);
    float *out_grads = c->study_export ? kfac_floats_new(N * d_out) : NULL;
    uint64_t key = kfac_rng_u64(&run->rng_probe);
    for (size_t first = 0; first < N; first += chunk) {
        int mc = (int)(N - first < chunk ? N - first : chunk);
        kfac_net_forward(net, mc, X + first * d);
        net->be->loss_sample_grad(run->loss, mc, net->d_out, kfac_net_output(net), key,
                                  (long)first, 1, kfac_net_output_grad(net));
        if (out_grads)
            memcpy(out_grads + first * d_out, kfac_net_output_grad(net),
                   (size_t)mc * d_out * sizeof *out_grads);
        kfac_net_backward(net, mc, 1.0f, KFAC_GRADS_NONE);
        for (int i = 0; i < L; i++) {
            const struct kfac_layer *l = net->blocks[cases[i].block];
            size_t rows = (size_t)mc * cases[i].T, at = first * cases[i].T;
            kfac_floats_to_doubles(rows * cases[i].n_a, l->abar, cases[i].A + at * cases[i].n_a);
            kfac_floats_to_doubles(rows * cases[i].n_g, l->g, cases[i].G + at * cases[i].n_g);
        }
    }
    int rc = out_grads ? export_run(c, run, seed, X, out_grads, order, force) : 0;
    kfac_floats_free(out_grads);
    kfac_floats_free(X);
    free(order);
    return rc;
}

/* "mean [min, max]" of n values at stride `stride` into cell. */
static void mean_range(int n, const double *x, size_t stride, char *cell, size_t size)
{
    double sum = 0, lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < n; i++) {
        double e = x[(size_t)i * stride];
        sum += e;
        lo = fmin(lo, e);
        hi = fmax(hi, e);
    }
    /* %.3g: errors at round-off (1e-16) stay readable, not 0.0000. */
    snprintf(cell, size, "%.3g [%.3g, %.3g]", sum / n, lo, hi);
}

/* Whether studied layers i and i+1 are consecutive dense layers, whose coupling block
 * block-tridiagonal K-FAC models. */
static int coupled(const struct layer_cases *cases, int i)
{
    return cases[i].dense && cases[i + 1].dense && cases[i + 1].layer == cases[i].layer + 1;
}

/* Mean [min, max] over the seeds of results[seed][size][layer][method], per layer, and of
 * cross[seed][layer] (the blocks coupling layers layer and layer+1). */
static void print_summary(FILE *f, int L, const struct layer_cases *cases, int seeds,
                          int n_sizes, const int *sizes, size_t N, const double *results,
                          const double *cross)
{
    fprintf(f, "kfac-train: Fisher study over %d seeds, %zu cases: relative Frobenius error "
               "against the exact block, mean [min, max]\n",
            seeds, N);
    for (int layer = 0; layer < L; layer++) {
        fprintf(f, "layer %d (%s)\n%-6s", cases[layer].layer, cases[layer].what, "batch");
        for (int m = 0; m < KFAC_FISHER_METHODS; m++)
            fprintf(f, "  %-28s", method_names[m]);
        fputc('\n', f);
        for (int s = 0; s < n_sizes; s++) {
            if (sizes[s] == 0)
                fprintf(f, "%-6s", "full");
            else
                fprintf(f, "%-6d", sizes[s]);
            for (int m = 0; m < KFAC_FISHER_METHODS; m++) {
                char cell[64];
                mean_range(seeds, results + ((size_t)s * L + layer) * KFAC_FISHER_METHODS + m,
                           (size_t)n_sizes * L * KFAC_FISHER_METHODS, cell, sizeof cell);
                fprintf(f, "  %-28s", cell);
            }
            fputc('\n', f);
        }
    }
    int any = 0;
    for (int layer = 0; layer + 1 < L; layer++) {
        if (!coupled(cases, layer))
            continue;
        if (!any++)
            fprintf(f, "blocks coupling consecutive layers, against block-tridiagonal K-FAC's "
                       "A_{i,i+1} (x) G_{i,i+1} (all cases):\n");
        char cell[64];
        mean_range(seeds, cross + layer, (size_t)(L - 1), cell, sizeof cell);
        fprintf(f, "layers %d-%d  %s\n", cases[layer].layer, cases[layer + 1].layer, cell);
    }
}

/* The studied layers, those with parameters within study.layers, into cases; their
 * number in *L. */
static int studied_layers(const struct kfac_config *c, const struct kfac_net *net,
                          struct layer_cases *cases, int *L)
{
    int first = 0, last = net->n_layers - 1;
    int rc = c->study_layers ? kfac_parse_layer_range("study.layers", c->study_layers,
                                                      net->n_layers, &first, &last)
                             : 0;
    *L = 0;
    for (int b = 0; !rc && b < net->n_blocks; b++) {
        const struct kfac_layer *l = net->blocks[b];
        if (l->index < first || l->index > last)
            continue;
        struct layer_cases *lc = &cases[(*L)++];
        lc->block = b;
        lc->layer = l->index + 1;
        char from[40], to[40];
        kfac_shape_format(&l->in_shape, from, sizeof from);
        kfac_shape_format(&l->out_shape, to, sizeof to);
        snprintf(lc->what, sizeof lc->what, "%s %s -> %s", l->ops->name, from, to);
        lc->dense = l->ops->couples;
        lc->n_a = l->d_in + 1;
        lc->n_g = l->d_out;
        lc->T = l->n_pos;
    }
    if (!rc && *L == 0)
        rc = kfac_error(KFAC_EINVAL, "study.layers = '%s' holds no layer with parameters",
                        c->study_layers);
    return rc;
}

/* Opens the table and writes its header: seed, batch_size, batches, the metric, then
 * <method>_<layer>, tridiag_<i>_<i+1> and kfoc_iterations; its column count in *n_cols. */
static int open_table(const struct kfac_config *c, int force, int L,
                      const struct layer_cases *cases, struct kfac_log *table, int *n_cols)
{
    int n_cross = 0;
    for (int i = 0; i + 1 < L; i++)
        n_cross += coupled(cases, i);
    int rc = kfac_log_open(table, c->log_file, force, 0);
    if (rc)
        return rc;
    *n_cols = 5 + KFAC_FISHER_METHODS * L + n_cross;
    const char **names = kfac_xmalloc((size_t)*n_cols * sizeof *names);
    char(*labels)[40] = kfac_xcalloc((size_t)*n_cols, sizeof *labels);
    char metric[40];
    snprintf(metric, sizeof metric, "train_%s", kfac_metric_name(c->data.task));
    int n = 0;
    names[n++] = "seed";
    names[n++] = "batch_size";
    names[n++] = "batches";
    names[n++] = metric;
    for (int layer = 0; layer < L; layer++)
        for (int m = 0; m < KFAC_FISHER_METHODS; m++) {
            snprintf(labels[n], sizeof labels[n], "%s_%d", method_names[m], cases[layer].layer);
            names[n] = labels[n];
            n++;
        }
    for (int layer = 0; layer + 1 < L; layer++) {
        if (!coupled(cases, layer))
            continue;
        snprintf(labels[n], sizeof labels[n], "tridiag_%d_%d", cases[layer].layer,
                 cases[layer + 1].layer);
        names[n] = labels[n];
        n++;
    }
    names[n++] = "kfoc_iterations";
    rc = kfac_log_header(table, names, *n_cols);
    free(names);
    free(labels);
    return rc;
}

/* The batch size that size s of the list means for N cases (0: all of them). */
static int batch_of(int size, size_t N)
{
    return size == 0 || (size_t)size > N ? (int)N : size;
}

/* Each studied layer's ā, g (and per-case gradients) for N cases and the work space of its
 * largest computation. */
static void alloc_cases(int L, struct layer_cases *cases, size_t N, int n_sizes,
                        const int *sizes)
{
    for (int i = 0; i < L; i++) {
        int na = cases[i].n_a, ng = cases[i].n_g, T = cases[i].T;
        size_t work = 0;
        for (int s = 0; s < n_sizes; s++) {
            size_t w = kfac_fisher_batches_work_size((int)N, batch_of(sizes[s], N), T, na, ng);
            work = w > work ? w : work;
        }
        if (i + 1 < L && coupled(cases, i)) {
            size_t w = kfac_fisher_cross_work_size((int)N, na, ng, cases[i + 1].n_a,
                                                   cases[i + 1].n_g);
            work = w > work ? w : work;
        }
        cases[i].A = kfac_xmalloc(N * (size_t)T * na * sizeof(double));
        cases[i].G = kfac_xmalloc(N * (size_t)T * ng * sizeof(double));
        cases[i].X = T > 1 ? kfac_xmalloc(N * (size_t)na * ng * sizeof(double)) : NULL;
        cases[i].work = kfac_xmalloc(work * sizeof(double));
    }
}

/* One trained run's rows: for each batch size the errors of every layer, the coupling
 * blocks' errors (cross, one per pair, all the cases) and the largest K-FOC iteration
 * count; results: this seed's [size][layer][method]. */
static int measure_run(const struct kfac_config *c, const struct kfac_run *run, int L,
                       struct layer_cases *cases, int n_sizes, const int *sizes,
                       double *results, double *cross, double *row, int n_cols,
                       struct kfac_log *table)
{
    size_t N = run->train.n;
    for (int i = 0; i < L; i++) {
        struct layer_cases *lc = &cases[i];
        kfac_fisher_block_init(&lc->fisher, run->net->be, (int)N, lc->T, lc->n_a, lc->A, lc->n_g,
                               lc->G, lc->X, lc->work);
    }
    for (int i = 0; i + 1 < L; i++)
        if (coupled(cases, i))
            cross[i] = kfac_fisher_error_cross(&cases[i].fisher, &cases[i + 1].fisher,
                                               cases[i].work);
    int rc = 0;
    for (int s = 0; s < n_sizes && !rc; s++) {
        int B = batch_of(sizes[s], N), iterations = 0;
        row[0] = (double)run->cfg->seed;
        row[1] = B;
        row[2] = (double)((N + (size_t)B - 1) / (size_t)B);
        row[3] = run->final[0];
        for (int i = 0; i < L; i++) {
            struct kfac_kfoc_info info;
            double *e = results + ((size_t)s * L + i) * KFAC_FISHER_METHODS;
            kfac_fisher_batch_errors(&cases[i].fisher, B, c->study_kfoc_normalise,
                                     c->optim.kfoc_max_iter, c->optim.kfoc_tol, cases[i].work, e,
                                     &info);
            memcpy(row + 4 + i * KFAC_FISHER_METHODS, e, KFAC_FISHER_METHODS * sizeof *e);
            iterations = info.iterations > iterations ? info.iterations : iterations;
        }
        for (int i = 0, j = 4 + KFAC_FISHER_METHODS * L; i + 1 < L; i++)
            if (coupled(cases, i))
                row[j++] = cross[i];
        row[n_cols - 1] = iterations;
        rc = kfac_log_row(table, row);
    }
    return rc;
}

int kfac_fisher_study(const struct kfac_config *c, const struct kfac_run_opts *opts,
                      FILE *summary, int *started)
{
    *started = 0;
    int sizes[KFAC_STUDY_MAX_SIZES], n_sizes;
    int rc = kfac_config_validate(c);
    if (rc || (rc = kfac_parse_batch_sizes(c->study_batch_sizes, sizes, KFAC_STUDY_MAX_SIZES,
                                           &n_sizes)))
        return rc;
    struct kfac_run_opts run_opts = {.quiet = 1, .no_log = 1};
    struct kfac_run run;
    struct kfac_config cs = *c;
    struct kfac_log table;
    int table_open = 0, L = 0, n_cols = 0;
    struct layer_cases *cases = NULL;
    double *results = NULL, *cross = NULL, *row = NULL;
    /* The first run is prepared before the table is opened: configuration and data errors
     * leave no table behind. */
    if ((rc = kfac_run_prepare(&run, &cs, &run_opts)))
        goto done;
    size_t N = run.train.n;
    cases = kfac_xcalloc((size_t)run.net->n_blocks, sizeof *cases);
    if ((rc = studied_layers(c, run.net, cases, &L)) ||
        (c->study_export && (rc = export_free(c, opts->force))) ||
        (rc = open_table(c, opts->force, L, cases, &table, &n_cols)))
        goto done;
    table_open = 1;
    *started = 1;
    alloc_cases(L, cases, N, n_sizes, sizes);
    size_t per_seed = (size_t)n_sizes * L * KFAC_FISHER_METHODS, pairs = L > 1 ? L - 1 : 1;
    results = kfac_xcalloc((size_t)c->study_seeds * per_seed, sizeof *results);
    cross = kfac_xcalloc((size_t)c->study_seeds * pairs, sizeof *cross);
    row = kfac_xmalloc((size_t)n_cols * sizeof *row);
    for (int seed = 0; seed < c->study_seeds; seed++) {
        if (seed > 0) {
            kfac_run_free(&run);
            cs.seed = c->seed + seed;
            if ((rc = kfac_run_prepare(&run, &cs, &run_opts)))
                break;
        }
        if (!opts->quiet && summary)
            fprintf(summary, "kfac-train: study run %d/%d (seed %ld): training\n", seed + 1,
                    c->study_seeds, cs.seed);
        if ((rc = kfac_run_train(&run, NULL)) ||
            (rc = sample_cases(c, &run, cs.seed, opts->force, L, cases)) ||
            (rc = measure_run(c, &run, L, cases, n_sizes, sizes, results + seed * per_seed,
                              cross + seed * pairs, row, n_cols, &table)))
            break;
    }
done:
    if (table_open) {
        int close_rc = kfac_log_close(&table);
        if (!rc)
            rc = close_rc;
    }
    if (!rc && !opts->quiet && summary)
        print_summary(summary, L, cases, c->study_seeds, n_sizes, sizes, run.train.n, results,
                      cross);
    kfac_run_free(&run);
    for (int i = 0; cases && i < L; i++) {
        free(cases[i].A);
        free(cases[i].G);
        free(cases[i].X);
        free(cases[i].work);
    }
    free(cases);
    free(results);
    free(cross);
    free(row);
    return rc;
}

/* Writes an 8-bit RGB image (h × w × 3) as a PNG, refusing an existing file unless force. */
static int write_png(const char *path, int w, int h, const unsigned char *rgb, int force)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_NOFOLLOW | (force ? O_TRUNC : O_EXCL), 0644);
    if (fd < 0)
        return kfac_error(errno == EEXIST ? KFAC_EEXIST : KFAC_EIO, "%s: %s", path,
                          errno == EEXIST ? "exists; kfac-train never overwrites it (use --force)"
                                          : strerror(errno));
    FILE *f = fdopen(fd, "wb");
    if (!f) {
        close(fd);
        return kfac_error(KFAC_EIO, "%s: %s", path, strerror(errno));
    }
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info || setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        fclose(f);
        return kfac_error(KFAC_EIO, "%s: libpng could not write the image", path);
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int r = 0; r < h; r++)
        png_write_row(png, rgb + (size_t)r * w * 3);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    if (fclose(f) != 0)
        return kfac_error(KFAC_EIO, "%s: write error: %s", path, strerror(errno));
    return 0;
}

/* An image of |M| (D × D): white for 0, black from `scale` up, with the blocks' borders
 * (at the offsets bounds[1 … n_blocks−1]) dashed in red. rgb: D × D × 3. */
static void heatmap(int D, const double *M, double scale, int n_blocks, const int *bounds,
                    unsigned char *rgb)
{
    for (size_t i = 0; i < (size_t)D * D; i++) {
        double v = fmin(fabs(M[i]) / scale, 1.0);
        unsigned char g = (unsigned char)lround(255.0 * (1.0 - v));
        rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = g;
    }
    for (int b = 1; b < n_blocks; b++)
        for (int t = 0; t < D; t++) {
            if ((t / 4) % 2)
                continue;
            size_t at[2] = {(size_t)bounds[b] * D + t, (size_t)t * D + bounds[b]};
            for (int k = 0; k < 2; k++) {
                rgb[3 * at[k]] = 220;
                rgb[3 * at[k] + 1] = rgb[3 * at[k] + 2] = 30;
            }
        }
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int kfac_parse_layer_range(const char *key, const char *spec, int n_layers, int *first,
                           int *last)
{
    char *end;
    long a = strtol(spec ? spec : "", &end, 10), b = a;
    if (end != spec && *end == '-')
        b = strtol(end + 1, &end, 10);
    if (!spec || end == spec || *end || a < 1 || b < a || b > n_layers)
        return kfac_error(KFAC_EINVAL, "%s = '%s': expected FIRST-LAST (or one layer) within the "
                                       "network's layers 1-%d",
                          key, spec ? spec : "", n_layers);
    *first = (int)a - 1;
    *last = (int)b - 1;
    return 0;
}

enum { N_PICTURES = 4 };
static const char *const picture_names[N_PICTURES] = {"fisher-exact.png", "fisher-kfac.png",
                                                      "fisher-difference.png",
                                                      "fisher-kfac-tridiag.png"};

/* The block of the picture (0 … n_blocks−1) that row or column i falls in. */
static int block_of(int i, const int *bounds)
{
    int b = 0;
    while (i >= bounds[b + 1])
        b++;
    return b;
}

void kfac_kron_block(int na, int ma, const double *A, int nb, int mb, const double *B, double *M,
                     size_t ld, int r0, int c0)
{
    for (int p = 0; p < na; p++)
        for (int i = 0; i < nb; i++) {
            double *row = M + (size_t)(r0 + p * nb + i) * ld + c0;
            for (int q = 0; q < ma; q++)
                for (int k = 0; k < mb; k++)
                    row[q * mb + k] = A[(size_t)p * ma + q] * B[(size_t)i * mb + k];
        }
}

/* The pictures' layers and cases, and what is computed for them. */
struct pictures {
    int first, last, n_blocks, K, D;
    int bounds[KFAC_PICTURE_MAX_LAYERS + 1]; /* the blocks' first parameter, then D */
    char paths[N_PICTURES][4096];
    double *F, *Ft;            /* D × D: the exact Fisher, then each approximation */
    double **A, **G, **XA, **XG; /* n_blocks: each layer's factors, each pair's cross factors */
};

/* Checks the layers, their size and the outputs before anything is trained. */
static int pictures_check(const struct kfac_config *c, const struct kfac_run_opts *opts,
                          const char *dir, const struct kfac_net *net, int n_train,
                          struct pictures *p)
{
    int rc = kfac_parse_layer_range("study.heatmap_layers", c->study_heatmap_layers,
                                    net->n_layers, &p->first, &p->last);
    if (rc)
        return rc;
    for (int i = p->first; i <= p->last; i++)
        if (!net->layers[i].ops->couples)
            return kfac_error(KFAC_EINVAL, "study.heatmap_layers: the pictures take dense layers "
                                           "only, but layer %d is %s",
                              i + 1, net->layers[i].ops->name);
    p->K = c->study_heatmap_cases < n_train ? c->study_heatmap_cases : n_train;
    p->n_blocks = p->last - p->first + 1;
    if (p->n_blocks > KFAC_PICTURE_MAX_LAYERS)
        return kfac_error(KFAC_EINVAL, "study.heatmap_layers: at most %d layers",
                          KFAC_PICTURE_MAX_LAYERS);
    p->D = 0;
    for (int i = p->first; i <= p->last; i++) {
        p->bounds[i - p->first] = p->D;
        p->D += (int)net->layers[i].n_params;
    }
    p->bounds[p->n_blocks] = p->D;
    if (p->D > KFAC_PICTURE_MAX)
        return kfac_error(KFAC_EINVAL, "study.heatmap_layers = '%s' holds %d parameters; a "
                                       "picture of the %d x %d Fisher is limited to %d, so "
                                       "choose fewer or smaller layers",
                          c->study_heatmap_layers, p->D, p->D, p->D, KFAC_PICTURE_MAX);
    for (int i = 0; i < N_PICTURES; i++) {
        snprintf(p->paths[i], sizeof p->paths[i], "%s/%s", dir, picture_names[i]);
        if (!opts->force && access(p->paths[i], F_OK) == 0)
            return kfac_error(KFAC_EEXIST, "%s exists; kfac-train never overwrites it (use "
                                           "--force)",
                              p->paths[i]);
    }
    if (access(dir, W_OK) != 0)
        return kfac_error(KFAC_EIO, "%s: cannot write there: %s", dir, strerror(errno));
    return 0;
}

/* F = (1/K) Σ_cases Σ_j v vᵀ over the first K training cases, v the gradient for the
 * output-Fisher column j: the exact expectation over the model's targets; and the factors
 * of each layer and the cross factors of each pair of consecutive ones. vec stacks
 * columns (K-FAC's convention), so each block of F̃ is Ā ⊗ G. */
static void exact_fisher(struct kfac_run *run, struct pictures *p)
{
    struct kfac_net *net = run->net;
    int K = p->K, D = p->D, nb = p->n_blocks;
    kfac_net_reserve(net, K);
    kfac_net_forward(net, K, run->train.x);
    p->F = kfac_xcalloc((size_t)D * D, sizeof *p->F);
    p->Ft = kfac_xcalloc((size_t)D * D, sizeof *p->Ft);
    double *V = kfac_xmalloc((size_t)K * D * sizeof *V);
    float *out = kfac_floats_new((size_t)K * net->d_out);
    memcpy(out, kfac_net_output(net), (size_t)K * net->d_out * sizeof *out);
    p->A = kfac_xcalloc((size_t)nb, sizeof *p->A);
    p->G = kfac_xcalloc((size_t)nb, sizeof *p->G);
    p->XA = kfac_xcalloc((size_t)nb, sizeof *p->XA);
    p->XG = kfac_xcalloc((size_t)nb, sizeof *p->XG);
    for (int b = 0; b < nb; b++) {
        const struct kfac_layer *l = &net->layers[p->first + b];
        int na = l->d_in + 1, ng = l->d_out;
        p->A[b] = kfac_xcalloc((size_t)na * na, sizeof **p->A);
        p->G[b] = kfac_xcalloc((size_t)ng * ng, sizeof **p->G);
        for (int k = 0; k < K; k++)
            for (int i = 0; i < na; i++)
                for (int j = 0; j < na; j++)
                    p->A[b][i * na + j] +=
                        (double)l->abar[(size_t)k * na + i] * l->abar[(size_t)k * na + j] / K;
        if (b + 1 < nb) {
            const struct kfac_layer *l1 = &net->layers[p->first + b + 1];
            int na1 = l1->d_in + 1;
            p->XA[b] = kfac_xcalloc((size_t)na * na1, sizeof **p->XA);
            p->XG[b] = kfac_xcalloc((size_t)ng * l1->d_out, sizeof **p->XG);
            for (int k = 0; k < K; k++)
                for (int i = 0; i < na; i++)
                    for (int j = 0; j < na1; j++)
                        p->XA[b][i * na1 + j] += (double)l->abar[(size_t)k * na + i] *
                                                 l1->abar[(size_t)k * na1 + j] / K;
        }
    }
    for (int j = 0; j < net->d_out; j++) {
        net->be->loss_fisher_column(run->loss, K, net->d_out, out, j, kfac_net_output_grad(net));
        kfac_net_backward(net, K, 1.0f, KFAC_GRADS_NONE);
        for (int b = 0; b < nb; b++) {
            const struct kfac_layer *l = &net->layers[p->first + b];
            int na = l->d_in + 1, ng = l->d_out;
            for (int k = 0; k < K; k++) {
                const float *a = l->abar + (size_t)k * na, *g = l->g + (size_t)k * ng;
                double *v = V + (size_t)k * D + p->bounds[b];
                for (int q = 0; q < na; q++)
                    for (int i = 0; i < ng; i++)
                        v[q * ng + i] = (double)g[i] * a[q] / sqrt((double)K);
                for (int i = 0; i < ng; i++)
                    for (int q = 0; q < ng; q++)
                        p->G[b][i * ng + q] += (double)g[i] * g[q] / K;
                if (b + 1 < nb) {
                    const struct kfac_layer *l1 = &net->layers[p->first + b + 1];
                    const float *g1 = l1->g + (size_t)k * l1->d_out;
                    for (int i = 0; i < ng; i++)
                        for (int q = 0; q < l1->d_out; q++)
                            p->XG[b][i * l1->d_out + q] += (double)g[i] * g1[q] / K;
                }
            }
        }
        net->be->dsyrk(KFAC_TRANS, D, K, 1.0, V, D, 1.0, p->F, D);
    }
    for (int i = 1; i < D; i++)
        for (int j = 0; j < i; j++)
            p->F[(size_t)i * D + j] = p->F[(size_t)j * D + i];
    free(V);
    kfac_floats_free(out);
}

static void pictures_free(struct pictures *p)
{
    free(p->F);
    free(p->Ft);
    for (int b = 0; p->A && b < p->n_blocks; b++) {
        free(p->A[b]);
        free(p->G[b]);
        free(p->XA[b]);
        free(p->XG[b]);
    }
    free(p->A);
    free(p->G);
    free(p->XA);
    free(p->XG);
}

/* The four pictures, one scale for all (the 99th percentile of |F|), and the summary's
 * figures: err2 (block-diagonal K-FAC), off2 (F off the diagonal blocks), tri2
 * (block-tridiagonal K-FAC), couple2 and couple_err2 (F beside the diagonal, and the
 * tridiagonal model's error there), norm2 = ‖F‖². */
static int draw_pictures(const struct kfac_net *net, struct pictures *p, int force,
                         double *scale_out, double fig[6])
{
    int D = p->D, nb = p->n_blocks;
    size_t DD = (size_t)D * D;
    double *F = p->F, *Ft = p->Ft;
    for (int b = 0; b < nb; b++) {
        const struct kfac_layer *l = &net->layers[p->first + b];
        int na = l->d_in + 1, ng = l->d_out, o = p->bounds[b];
        kfac_kron_block(na, na, p->A[b], ng, ng, p->G[b], Ft, (size_t)D, o, o);
    }
    double *mag = kfac_xmalloc(DD * sizeof *mag), norm2 = 0, off2 = 0, err2 = 0;
    for (size_t i = 0; i < DD; i++) {
        mag[i] = fabs(F[i]);
        norm2 += F[i] * F[i];
    }
    qsort(mag, DD, sizeof *mag, compare_doubles);
    double scale = mag[(size_t)(0.99 * (double)(DD - 1))];
    if (!(scale > 0))
        scale = mag[DD - 1] > 0 ? mag[DD - 1] : 1.0;
    free(mag);
    unsigned char *rgb = kfac_xmalloc(DD * 3);
    heatmap(D, F, scale, nb, p->bounds, rgb);
    int rc = write_png(p->paths[0], D, D, rgb, force);
    heatmap(D, Ft, scale, nb, p->bounds, rgb);
    if (!rc)
        rc = write_png(p->paths[1], D, D, rgb, force);
    for (int i = 0; i < D; i++)
        for (int j = 0; j < D; j++) {
            size_t at = (size_t)i * D + j;
            Ft[at] = F[at] - Ft[at];
            err2 += Ft[at] * Ft[at];
            if (block_of(i, p->bounds) != block_of(j, p->bounds))
                off2 += F[at] * F[at];
        }
    heatmap(D, Ft, scale, nb, p->bounds, rgb);
    if (!rc)
        rc = write_png(p->paths[2], D, D, rgb, force);
    /* Block-tridiagonal K-FAC's model: the same diagonal blocks, and Ā_{i,i+1} ⊗ G_{i,i+1}
     * (and its transpose) beside them. */
    for (size_t i = 0; i < DD; i++)
        Ft[i] = F[i] - Ft[i];
    for (int b = 0; b + 1 < nb; b++) {
        const struct kfac_layer *l = &net->layers[p->first + b], *l1 = &net->layers[p->first + b + 1];
        int na = l->d_in + 1, ng = l->d_out, na1 = l1->d_in + 1, ng1 = l1->d_out;
        int o = p->bounds[b], o1 = p->bounds[b + 1];
        kfac_kron_block(na, na1, p->XA[b], ng, ng1, p->XG[b], Ft, (size_t)D, o, o1);
        for (int r = 0; r < na * ng; r++)
            for (int q = 0; q < na1 * ng1; q++)
                Ft[(size_t)(o1 + q) * D + o + r] = Ft[(size_t)(o + r) * D + o1 + q];
    }
    heatmap(D, Ft, scale, nb, p->bounds, rgb);
    if (!rc)
        rc = write_png(p->paths[3], D, D, rgb, force);
    double tri2 = 0, couple2 = 0, couple_err2 = 0;
    for (int i = 0; i < D; i++)
        for (int j = 0; j < D; j++) {
            size_t at = (size_t)i * D + j;
            double e = F[at] - Ft[at];
            tri2 += e * e;
            if (abs(block_of(i, p->bounds) - block_of(j, p->bounds)) == 1) {
                couple2 += F[at] * F[at];
                couple_err2 += e * e;
            }
        }
    free(rgb);
    *scale_out = scale;
    fig[0] = err2, fig[1] = off2, fig[2] = tri2, fig[3] = couple2, fig[4] = couple_err2;
    fig[5] = norm2;
    return rc;
}

int kfac_fisher_pictures(const struct kfac_config *c, const struct kfac_run_opts *opts,
                         const char *dir, FILE *summary, int *started)
{
    *started = 0;
    struct kfac_run_opts run_opts = {.quiet = 1, .no_log = 1};
    struct kfac_run run;
    struct pictures p = {0};
    double scale = 0, fig[6];
    int rc = kfac_run_prepare(&run, c, &run_opts);
    if (rc || (rc = pictures_check(c, opts, dir, run.net, (int)run.train.n, &p)))
        goto done;
    *started = 1;
    if (!opts->quiet && summary)
        fprintf(summary, "kfac-train: training for the Fisher pictures\n");
    if ((rc = kfac_run_train(&run, NULL)))
        goto done;
    exact_fisher(&run, &p);
    rc = draw_pictures(run.net, &p, opts->force, &scale, fig);
    if (!rc && !opts->quiet && summary) {
        fprintf(summary, "kfac-train: after %ld iterations, train %s %.6g\n", run.iterations_done,
                kfac_metric_name(c->data.task), run.final[0]);
        fprintf(summary, "kfac-train: the exact Fisher of layers %d-%d (%d parameters) over %d "
                         "cases, its block-diagonal K-FAC approximation, |difference| and the "
                         "block-tridiagonal K-FAC approximation: %s/{",
                p.first + 1, p.last + 1, p.D, p.K, dir);
        for (int i = 0; i < N_PICTURES; i++)
            fprintf(summary, "%s%s", picture_names[i], i + 1 < N_PICTURES ? "," : "}\n");
        fprintf(summary, "kfac-train: black is |entry| >= %.4g (the 99th percentile of |F|); "
                         "relative Frobenius error %.4f, of which the blocks off the diagonal "
                         "carry %.4f\n",
                scale, sqrt(fig[0] / fig[5]), sqrt(fig[1] / fig[5]));
        if (p.n_blocks > 1)
            fprintf(summary, "kfac-train: block-tridiagonal K-FAC (A_{i,i+1} (x) G_{i,i+1} beside "
                             "the diagonal): relative Frobenius error %.4f on those blocks, "
                             "%.4f overall\n",
                    fig[3] > 0 ? sqrt(fig[4] / fig[3]) : 0.0, sqrt(fig[2] / fig[5]));
    }
done:
    pictures_free(&p);
    kfac_run_free(&run);
    return rc;
}
