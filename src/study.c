/*
 * study.c: the Fisher study (see study.h): repeated training runs, each followed by the
 * Fisher-approximation errors of its layers over the whole training set for a list of
 * batch sizes, written as a TSV table and summarised as mean [min, max] over the seeds.
 */
#include "kfac/study.h"
#include "kfac/curvature.h"
#include "kfac/mat.h"
#include "kfac/status.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const method_names[KFAC_FISHER_METHODS] = {"diag", "kfac", "kfoc_approx",
                                                              "kfoc_running"};

/* The per-layer data of one trained network: ā and g of every training case, in the
 * (shuffled) order the batches take them, and the work space for the errors. */
struct layer_cases {
    int d_in, d_out;
    double *A, *G;      /* N × n_a, N × n_g */
    double *work;       /* kfac_fisher_batches_work_size() for the largest batch */
};

/* Forward pass over the whole training set in a shuffled order, one target per case drawn
 * from the model, a backward pass; copies each layer's ā and g into cases. */
static void sample_cases(struct kfac_run *run, struct layer_cases *cases)
{
    struct kfac_net *net = run->net;
    const struct kfac_dataset *ds = &run->train;
    size_t N = ds->n, d = (size_t)ds->d_x;
    size_t *order = kfac_xmalloc(N * sizeof *order);
    for (size_t i = 0; i < N; i++)
        order[i] = i;
    kfac_rng_shuffle(&run->rng_probe, order, N);
    float *X = kfac_floats_new(N * d);
    for (size_t i = 0; i < N; i++)
        memcpy(X + i * d, ds->x + order[i] * d, d * sizeof *X);
    kfac_net_reserve(net, (int)N);
    kfac_net_forward(net, (int)N, X);
    kfac_loss_sample_grad(run->loss, (int)N, net->d_out, kfac_net_output(net), &run->rng_probe,
                          kfac_net_output_grad(net));
    kfac_net_backward(net, (int)N, 1.0f, 0);
    for (int i = 0; i < net->n_layers; i++) {
        const struct kfac_layer *l = &net->layers[i];
        size_t na = (size_t)l->d_in + 1, ng = (size_t)l->d_out;
        for (size_t k = 0; k < N * na; k++)
            cases[i].A[k] = l->abar[k];
        for (size_t k = 0; k < N * ng; k++)
            cases[i].G[k] = l->g[k];
    }
    kfac_floats_free(X);
    free(order);
}

/* Mean [min, max] over the seeds of results[seed][size][layer][method], per layer. */
static void print_summary(FILE *f, int L, const struct layer_cases *cases, int seeds,
                          int n_sizes, const int *sizes, size_t N, const double *results)
{
    fprintf(f, "kfac-train: Fisher study over %d seeds, %zu cases: relative Frobenius error "
               "against the exact block, mean [min, max]\n",
            seeds, N);
    for (int layer = 0; layer < L; layer++) {
        fprintf(f, "layer %d (%d -> %d)\n%-6s", layer + 1, cases[layer].d_in, cases[layer].d_out,
                "batch");
        for (int m = 0; m < KFAC_FISHER_METHODS; m++)
            fprintf(f, "  %-24s", method_names[m]);
        fputc('\n', f);
        for (int s = 0; s < n_sizes; s++) {
            if (sizes[s] == 0)
                fprintf(f, "%-6s", "full");
            else
                fprintf(f, "%-6d", sizes[s]);
            for (int m = 0; m < KFAC_FISHER_METHODS; m++) {
                double sum = 0, lo = INFINITY, hi = -INFINITY;
                for (int seed = 0; seed < seeds; seed++) {
                    double e = results[(((size_t)seed * n_sizes + s) * L + layer) *
                                           KFAC_FISHER_METHODS + m];
                    sum += e;
                    lo = fmin(lo, e);
                    hi = fmax(hi, e);
                }
                char cell[64];
                snprintf(cell, sizeof cell, "%.4f [%.4f, %.4f]", sum / seeds, lo, hi);
                fprintf(f, "  %-24s", cell);
            }
            fputc('\n', f);
        }
    }
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
    /* The first run is prepared before the table is opened: configuration and data errors
     * leave no table behind. */
    if ((rc = kfac_run_prepare(&run, &cs, &run_opts))) {
        kfac_run_free(&run);
        return rc;
    }
    struct kfac_log table;
    if ((rc = kfac_log_open(&table, c->log_file, opts->force, 0))) {
        kfac_run_free(&run);
        return rc;
    }
    int L = run.net->n_layers;
    size_t N = run.train.n;
    int n_cols = 5 + KFAC_FISHER_METHODS * L;
    const char **names = kfac_xmalloc((size_t)n_cols * sizeof *names);
    char(*labels)[40] = kfac_xcalloc((size_t)n_cols, sizeof *labels);
    char metric[40];
    snprintf(metric, sizeof metric, "train_%s", kfac_metric_name(c->data.task));
    int n = 0;
    names[n++] = "seed";
    names[n++] = "batch_size";
    names[n++] = "batches";
    names[n++] = metric;
    for (int layer = 0; layer < L; layer++)
        for (int m = 0; m < KFAC_FISHER_METHODS; m++) {
            snprintf(labels[n], sizeof labels[n], "%s_%d", method_names[m], layer + 1);
            names[n] = labels[n];
            n++;
        }
    names[n++] = "kfoc_iterations";
    rc = kfac_log_header(&table, names, n_cols);
    *started = 1;
    free(names);
    free(labels);

    struct layer_cases *cases = kfac_xcalloc((size_t)L, sizeof *cases);
    for (int i = 0; i < L; i++) {
        const struct kfac_layer *l = &run.net->layers[i];
        int na = l->d_in + 1, ng = l->d_out;
        size_t work = 0;
        for (int s = 0; s < n_sizes; s++) {
            int B = sizes[s] == 0 || (size_t)sizes[s] > N ? (int)N : sizes[s];
            size_t w = kfac_fisher_batches_work_size((int)N, B, na, ng);
            work = w > work ? w : work;
        }
        cases[i].d_in = l->d_in;
        cases[i].d_out = l->d_out;
        cases[i].A = kfac_xmalloc(N * (size_t)na * sizeof(double));
        cases[i].G = kfac_xmalloc(N * (size_t)ng * sizeof(double));
        cases[i].work = kfac_xmalloc(work * sizeof(double));
    }
    double *results = kfac_xcalloc((size_t)c->study_seeds * n_sizes * L * KFAC_FISHER_METHODS,
                                   sizeof *results);
    double *row = kfac_xmalloc((size_t)n_cols * sizeof *row);
    for (int seed = 0; seed < c->study_seeds && !rc; seed++) {
        if (seed > 0) {
            cs.seed = c->seed + seed;
            if ((rc = kfac_run_prepare(&run, &cs, &run_opts))) {
                kfac_run_free(&run);
                break;
            }
        }
        if (!opts->quiet && summary)
            fprintf(summary, "kfac-train: study run %d/%d (seed %ld): training\n", seed + 1,
                    c->study_seeds, cs.seed);
        if ((rc = kfac_run_train(&run, NULL))) {
            kfac_run_free(&run);
            break;
        }
        sample_cases(&run, cases);
        for (int s = 0; s < n_sizes && !rc; s++) {
            int B = sizes[s] == 0 || (size_t)sizes[s] > N ? (int)N : sizes[s];
            row[0] = (double)cs.seed;
            row[1] = B;
            row[2] = (double)((N + (size_t)B - 1) / (size_t)B);
            row[3] = run.final[0];
            int iterations = 0;
            for (int i = 0; i < L; i++) {
                const struct kfac_layer *l = &run.net->layers[i];
                struct kfac_fisher_block b;
                kfac_fisher_block_init(&b, (int)N, l->d_in + 1, cases[i].A, l->d_out, cases[i].G,
                                       cases[i].work);
                struct kfac_kfoc_info info;
                double *e = results + (((size_t)seed * n_sizes + s) * L + i) * KFAC_FISHER_METHODS;
                kfac_fisher_batch_errors(&b, B, c->optim.kfoc_max_iter, c->optim.kfoc_tol,
                                         cases[i].work, e, &info);
                memcpy(row + 4 + i * KFAC_FISHER_METHODS, e, KFAC_FISHER_METHODS * sizeof *e);
                iterations = info.iterations > iterations ? info.iterations : iterations;
            }
            row[n_cols - 1] = iterations;
            rc = kfac_log_row(&table, row);
        }
        kfac_run_free(&run);
    }
    int close_rc = kfac_log_close(&table);
    if (!rc)
        rc = close_rc;
    if (!rc && !opts->quiet && summary)
        print_summary(summary, L, cases, c->study_seeds, n_sizes, sizes, N, results);
    for (int i = 0; i < L; i++) {
        free(cases[i].A);
        free(cases[i].G);
        free(cases[i].work);
    }
    free(cases);
    free(results);
    free(row);
    return rc;
}
