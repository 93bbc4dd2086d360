/*
 * train.c: assembling a run from a configuration and the training loop: batches,
 * optimiser steps, Polyak iterate averaging, periodic evaluation, the log and the
 * wall-clock budget (see train.h).
 */
#include "kfac/train.h"
#include "kfac/export.h"
#include "kfac/file.h"
#include "kfac/mat.h"
#include "kfac/memory.h"
#include "kfac/status.h"

#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int kfac_model_new(const struct kfac_config *c, struct kfac_net **net, enum kfac_loss *loss)
{
    struct kfac_layer_spec *specs;
    struct kfac_shape in;
    int n;
    int rc = kfac_net_parse_layers(c->layers, &in, &specs, &n);
    if (rc)
        return kfac_error(rc, "model.layers: %s", kfac_last_error());
    enum kfac_activation out = specs[n - 1].act;
    if (c->loss == 0) {
        switch (out) {
        case KFAC_ACT_LOGISTIC: *loss = KFAC_LOSS_BERNOULLI; break;
        case KFAC_ACT_LINEAR: *loss = KFAC_LOSS_SQUARED; break;
        case KFAC_ACT_SOFTMAX: *loss = KFAC_LOSS_SOFTMAX; break;
        default:
            free(specs);
            return kfac_error(KFAC_EINVAL, "model.layers: the output activation %s has no matched "
                                           "loss; end with logistic, linear or softmax",
                              kfac_activation_name(out));
        }
    } else {
        *loss = (enum kfac_loss)(c->loss - 1);
        if (kfac_loss_link(*loss) != out) {
            free(specs);
            return kfac_error(KFAC_EINVAL, "model.loss = %s needs a %s output layer, but "
                                           "model.layers ends with %s",
                              kfac_loss_name(*loss), kfac_activation_name(kfac_loss_link(*loss)),
                              kfac_activation_name(out));
        }
    }
    rc = kfac_net_new_shaped(&in, specs, n, net);
    free(specs);
    if (rc)
        return kfac_error(rc, "model.layers: %s", kfac_last_error());
    return 0;
}

void kfac_model_summary(const struct kfac_net *net, enum kfac_loss loss, FILE *f)
{
    char in[40], out[40];
    kfac_shape_format(&net->in_shape, in, sizeof in);
    fprintf(f, "# model: %s inputs, %d layers, %zu parameters, loss %s\n", in, net->n_layers,
            net->n_params, kfac_loss_name(loss));
    for (int i = 0; i < net->n_layers; i++) {
        const struct kfac_layer *l = &net->layers[i];
        kfac_shape_format(&l->in_shape, in, sizeof in);
        kfac_shape_format(&l->out_shape, out, sizeof out);
        fprintf(f, "#   layer %d: %s %s -> %s", i + 1, l->ops->name, in, out);
        if (l->ops->windowed)
            fprintf(f, ", window %dx%d stride %d pad %d", l->kh, l->kw, l->stride, l->pad);
        if (l->n_params)
            fprintf(f, " %s, %zu parameters (W %d x %d, bias last)", kfac_activation_name(l->act),
                    l->n_params, l->d_out, l->d_in + 1);
        fputc('\n', f);
    }
}

const char *kfac_metric_name(int task)
{
    switch (task) {
    case KFAC_TASK_CLASSIFICATION: return "acc";
    case KFAC_TASK_REGRESSION: return "rmse";
    default: return "recon";
    }
}

double kfac_evaluate(struct kfac_net *net, int task, const struct kfac_dataset *ds, int chunk)
{
    /* Each rank takes its part of the set, [lo, hi): a shard (data.shard) whole. */
    size_t ranks = (size_t)kfac_comm_size(net->comm), rank = (size_t)kfac_comm_rank(net->comm);
    size_t lo = ds->shard ? 0 : ds->n * rank / ranks;
    size_t hi = ds->shard ? ds->n : ds->n * (rank + 1) / ranks;
    double sum[2] = {0, ds->shard ? (double)ds->n : 0}; /* and the shards' cases */
    if (!ds->shard && ds->n == 0)
        return NAN;
    for (size_t start = lo; start < hi; start += (size_t)chunk) {
        int m = (int)(hi - start < (size_t)chunk ? hi - start : (size_t)chunk);
        kfac_net_forward(net, m, ds->x + start * ds->d_x);
        const float *y = kfac_net_output(net), *t = ds->t + start * ds->d_t;
        if (task == KFAC_TASK_CLASSIFICATION)
            sum[0] += kfac_correct_count(m, ds->d_t, y, t);
        else
            sum[0] += kfac_sq_error_sum(m, ds->d_t, y, t);
    }
    kfac_comm_sum_doubles(net->comm, KFAC_COMM_SCALARS, sum, ds->shard ? 2 : 1);
    double n = ds->shard ? sum[1] : (double)ds->n;
    if (n == 0)
        return NAN;
    if (task == KFAC_TASK_REGRESSION)
        return sqrt(sum[0] / (n * ds->d_t));
    return sum[0] / n;
}

/* Checks opts->resume against this run (its items, and its trajectory keys unless
 * forced) and restores it; the next iteration follows the checkpoint's. */
static int resume(struct kfac_run *run, const struct kfac_run_opts *opts)
{
    struct kfac_state s = {0};
    kfac_run_state(run, &s);
    struct kfac_checkpoint ck;
    int rc = kfac_checkpoint_open(opts->resume, &s, &ck);
    if (!rc || ck.other_items) {
        /* A checkpoint of another model is named by the keys that made it so. */
        struct kfac_config d;
        kfac_config_defaults(&d);
        char *now = kfac_config_identity(run->cfg), *defaults = kfac_config_identity(&d);
        kfac_config_free(&d);
        char *diff = kfac_config_text_diff(ck.config_text, now, defaults);
        if (diff && ck.other_items)
            rc = kfac_error(KFAC_EINVAL, "%s: made by a run with another configuration, whose "
                                         "state does not fit this one: %s",
                            opts->resume, diff);
        else if (diff && !opts->force_resume)
            rc = kfac_error(KFAC_EINVAL, "%s: made by a run with another configuration: %s (give "
                                         "--force-resume to continue with this one)",
                            opts->resume, diff);
        free(diff);
        free(defaults);
        free(now);
    }
    if (!rc)
        rc = kfac_checkpoint_restore(&ck, &s);
    if (!rc && run->iterations_done >= run->cfg->iterations)
        rc = kfac_error(KFAC_EINVAL, "%s: the run is at iteration %ld already; raise "
                                     "train.iterations (now %ld) to continue it",
                        opts->resume, run->iterations_done, run->cfg->iterations);
    kfac_checkpoint_close(&ck);
    kfac_state_free(&s);
    run->start = run->iterations_done + 1;
    return rc;
}

/* PATH.i (PATH itself for i = 0). */
static char *numbered(const char *path, int i)
{
    return i ? kfac_xasprintf("%s.%d", path, i) : kfac_xstrdup(path);
}

/* The real directory of path followed by its last component (caller frees), so that two
 * spellings of one file compare equal whether it exists or not; NULL when the directory
 * does not exist. */
static char *resolved(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = kfac_file_dir(path), *real = realpath(dir, NULL), *out = NULL;
    if (real)
        out = kfac_xasprintf("%s/%s", real, slash ? slash + 1 : path);
    free(real);
    free(dir);
    return out;
}

/* 1 when a and b name one file: the same device and inode when both exist, else the same
 * resolved name. */
static int same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    if (stat(a, &sa) == 0 && stat(b, &sb) == 0)
        return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
    char *ra = resolved(a), *rb = resolved(b);
    int same = ra && rb && strcmp(ra, rb) == 0;
    free(ra);
    free(rb);
    return same;
}

/* Before anything is written: the log and every file the checkpoints use (PATH, its kept
 * copies PATH.1 …, PATH.next; their temporaries have fresh names) must be different files, none of them a
 * directory, and the checkpoint's directory must exist and be writable. */
static int check_outputs(const struct kfac_run *run, const struct kfac_config *c)
{
    const char *log = run->opts.no_log ? NULL : c->log_file;
    struct stat st;
    if (log && stat(log, &st) == 0 && S_ISDIR(st.st_mode))
        return kfac_error(KFAC_EINVAL, "%s: the log path is a directory; give a file name",
                          log);
    if (!run->checkpoint)
        return 0;
    const char *ck = run->checkpoint;
    if (stat(ck, &st) == 0 && S_ISDIR(st.st_mode))
        return kfac_error(KFAC_EINVAL, "%s: the checkpoint path (train.checkpoint) is a "
                                       "directory; give a file name",
                          ck);
    char *dir = kfac_file_dir(ck);
    int rc = 0;
    if (access(dir, W_OK | X_OK) != 0)
        rc = kfac_error(KFAC_EINVAL, "%s: the checkpoints cannot be written there: %s: %s", ck,
                        dir, strerror(errno));
    free(dir);
    int keep = c->checkpoint_keep > 1 ? c->checkpoint_keep : 1;
    for (int i = 0; !rc && log && i <= keep; i++) {
        char *name = i < keep ? numbered(ck, i) : kfac_xasprintf("%s.next", ck);
        if (same_file(log, name))
            rc = kfac_error(KFAC_EINVAL, "--log %s and the checkpoint file %s are the same file: "
                                         "the checkpoint would replace the log (choose another "
                                         "train.checkpoint or --log)",
                            log, name);
        free(name);
    }
    return rc;
}

/* The Fisher-error probe's cases of batches up to whole_batch. */
static int probe_cases(const struct kfac_config *c, int whole_batch)
{
    return c->fisher_error_cases < whole_batch ? c->fisher_error_cases : whole_batch;
}

/* The tally of what the run will hold with layer buffers for chunk cases: the data,
 * the network, the batch, the buffers, the optimiser and the Fisher-error probe. */
static void tally_memory(const struct kfac_run *run, const struct kfac_config *c, int train_batch,
                         int chunk, struct kfac_memory *need)
{
    const struct kfac_net *net = run->net;
    double cases = (double)(run->train.n + run->test.n), n = (double)net->n_params;
    int own_t = run->train.t != run->train.x;
    memset(need, 0, sizeof *need);
    kfac_memory_add(need, "the data", "data.max_cases",
                    cases * (run->train.d_x + own_t * run->train.d_t) * sizeof(float));
    kfac_memory_add(need, "parameters and gradients", "model.layers", 2 * n * sizeof(float));
    char what[64];
    snprintf(what, sizeof what, "layer buffers for %d case%s", chunk, chunk == 1 ? "" : "s");
    kfac_memory_add(need, what, "train.chunk_size", kfac_net_buffer_bytes(net, chunk));
    kfac_memory_add(need, "the batch", "train.batch_size",
                    (double)train_batch * (run->train.d_x + own_t * run->train.d_t) * sizeof(float));
    kfac_memory_add(need, c->optim.type == KFAC_OPTIM_KFAC ? "K-FAC's factors and vectors"
                                                            : "SGD's vectors",
                    "model.layers", kfac_optim_bytes(&run->optim_opts, net, chunk));
    if (c->polyak_start > 0)
        kfac_memory_add(need, "the Polyak average", "train.polyak_start", 2 * n * sizeof(float));
    if (c->fisher_error_every > 0)
        kfac_memory_add(need, "the Fisher-error probe", "log.fisher_error_cases",
                        kfac_fisher_probe_bytes(net, probe_cases(c, run->optim_opts.max_batch),
                                                chunk));
}

/* Chooses the cases per pass (run->chunk) and refuses a run that needs more memory than
 * train.memory_limit or the machine allows, before any of it is allocated. The chunk is
 * train.chunk_size, or under auto the largest batch a pass takes (training or evaluation)
 * when that fits, else the most cases that fit. What a Fisher-error export writes of
 * the probe's cases needs them in one chunk, which sets the least chunk (K-FOC's fits and
 * the probe keep their cases' rows beside the chunk: the tally counts them). */
static int plan_memory(struct kfac_run *run, const struct kfac_config *c, int whole_batch)
{
    /* Of several ranks, each holds its share of a batch (data.h). */
    int ranks = kfac_comm_size(run->net->comm), train_batch = kfac_batch_most(whole_batch, ranks);
    int whole = train_batch > run->eval_batch ? train_batch : run->eval_batch, least = 1;
    const char *least_why = "log.fisher_export of the probe (log.fisher_error_cases)";
    if (c->fisher_error_every > 0 && c->fisher_export)
        least = kfac_batch_most(probe_cases(c, whole_batch), ranks);
    int chunk = c->chunk_size > 0 && c->chunk_size < whole ? c->chunk_size : whole;
    tally_memory(run, c, train_batch, chunk, &run->memory);
    /* auto aims at 95% of the limit: the rest is for what the tally leaves out (the
     * program, the BLAS library's buffers: 0.9% and 1.5% more than the tally at the
     * original-scale FACES and MNIST-shaped runs of bench/full-scale.sh). */
    double limit = c->memory_limit > 0 ? c->memory_limit : kfac_memory_available();
    if (c->chunk_size == 0 && limit > 0 && !kfac_memory_fits(&run->memory, 0.95 * limit)) {
        /* The need grows with the chunk: the most cases that fit, by bisection. */
        int lo = 1, hi = whole;
        while (lo < hi) {
            int mid = lo + (hi - lo + 1) / 2;
            tally_memory(run, c, train_batch, mid, &run->memory);
            if (kfac_memory_fits(&run->memory, 0.95 * limit))
                lo = mid;
            else
                hi = mid - 1;
        }
        chunk = lo > least ? lo : least;
        tally_memory(run, c, train_batch, chunk, &run->memory);
    }
    if (chunk < least)
        return kfac_error(KFAC_EINVAL, "train.chunk_size = %d: %s needs all its %d cases in one "
                                       "chunk",
                          chunk, least_why, least);
    run->chunk = chunk;
    return kfac_memory_check(&run->memory, c->memory_limit, "train.memory_limit");
}

void kfac_run_print_plan(const struct kfac_run *run, FILE *f)
{
    const struct kfac_config *c = run->cfg;
    fprintf(f, "# memory: %d cases per pass (train.chunk_size = ", run->chunk);
    if (c->chunk_size)
        fprintf(f, "%d)\n", c->chunk_size);
    else
        fputs("auto)\n", f);
    kfac_memory_print(&run->memory, c->memory_limit, "train.memory_limit", f);
}

/* data.shard: every rank has read its shard, or failed to (in the one collective of the
 * preparation, which every rank reaches): the set's cases are the shards' sum. */
static int share_shards(struct kfac_run *run, int rc)
{
    double got[2] = {rc != 0, (double)run->train.n};
    kfac_comm_sum_doubles(run->net->comm, KFAC_COMM_SCALARS, got, 2);
    run->train_cases = (size_t)got[1];
    if (!rc && got[0] > 0)
        return kfac_error(KFAC_EPEER, "another rank could not read its shard");
    return rc;
}

int kfac_run_prepare(struct kfac_run *run, const struct kfac_config *c,
                     const struct kfac_run_opts *opts)
{
    memset(run, 0, sizeof *run);
    run->cfg = c;
    run->opts = *opts;
    int rc = kfac_config_validate(c);
    if (rc || (rc = kfac_model_new(c, &run->net, &run->loss)))
        return rc;
    run->net->comm = opts->comm;
    int ranks = kfac_comm_size(opts->comm);
    /* Rank 0 alone writes (the log, the progress line, checkpoints); the others follow. */
    run->writer = kfac_comm_rank(opts->comm) == 0;
    if (ranks > 1 && c->fisher_export)
        return kfac_error(KFAC_EINVAL, "log.fisher_export: what the Fisher-error probe used is "
                                       "exported by one process, and this run has %d ranks",
                          ranks);
    run->net->be->set_threads(c->threads);
    /* Independent streams, so that e.g. a change of initialisation leaves the batches alone. */
    uint64_t seed = (uint64_t)c->seed;
    /* data.shard: each rank's batch order its own too. */
    uint64_t own = c->data.shard ? (uint64_t)(kfac_comm_rank(opts->comm) + 1) << 40 : 0;
    kfac_rng_seed(&run->rng_init, seed);
    kfac_rng_seed(&run->rng_data, seed ^ 0x5bd1e9955bd1e995ULL);
    kfac_rng_seed(&run->rng_batch, seed ^ 0xc2b2ae3d27d4eb4fULL ^ own);
    kfac_rng_seed(&run->rng_optim, seed ^ 0x9e3779b97f4a7c15ULL);
    kfac_rng_seed(&run->rng_probe, seed ^ 0x94d049bb133111ebULL);
    struct kfac_data_opts data = c->data;
    data.unit_targets = run->loss == KFAC_LOSS_BERNOULLI;
    if (c->data.shard) {
        /* Each rank its own file. */
        char rank[16];
        snprintf(rank, sizeof rank, "%d", kfac_comm_rank(opts->comm));
        data.train = kfac_file_pattern(c->data.train, "%r", rank);
        data.train_targets = c->data.train_targets
                                 ? kfac_file_pattern(c->data.train_targets, "%r", rank)
                                 : NULL;
    }
    rc = kfac_data_load(&data, &run->rng_data, &run->train, &run->test);
    run->train_cases = run->train.n;
    if (c->data.shard) {
        free(data.train);
        free(data.train_targets);
        run->train.shard = 1;
        run->test.shard = !c->data.test; /* held out of each shard, else one file for all */
        rc = share_shards(run, rc);
    }
    if (rc)
        return rc;
    /* Images are compared as shapes first, so that a wrong channel count is named as one. */
    const struct kfac_shape *in = &run->net->in_shape;
    const int *shape = run->train.shape;
    if (in->h * in->w > 1 && shape[1] * shape[2] > 1 &&
        (shape[0] != in->c || shape[1] != in->h || shape[2] != in->w))
        return kfac_error(KFAC_EINVAL, "model.layers takes %dx%dx%d images, but the cases of %s "
                                       "are %dx%dx%d",
                          in->c, in->h, in->w, c->data.train, shape[0], shape[1], shape[2]);
    if (run->train.d_x != run->net->d_in || run->train.d_t != run->net->d_out)
        return kfac_error(KFAC_EINVAL,
                          "model.layers takes %d inputs and makes %d outputs, but the data have %d "
                          "inputs and %d targets per case",
                          run->net->d_in, run->net->d_out, run->train.d_x, run->train.d_t);
    if (c->data.task == KFAC_TASK_CLASSIFICATION && run->loss != KFAC_LOSS_SOFTMAX)
        return kfac_error(KFAC_EINVAL, "data.task = classification needs a softmax output layer");
    /* The largest batch the schedule draws: the whole set when it grows to it. */
    int train_batch = kfac_batch_size(c->batch_schedule, c->batch_size, c->batch_full_at,
                                      c->batch_schedule == KFAC_SCHEDULE_FIXED ? 1
                                                                               : c->batch_full_at,
                                      run->train_cases);
    if (run->train.shard && (size_t)kfac_batch_most(train_batch, ranks) > run->train.n)
        return kfac_error(KFAC_EINVAL, "data.shard = rank: this rank's %zu cases are fewer than "
                                       "its share of a batch of %d",
                          run->train.n, train_batch);
    /* Evaluation passes need no more than the larger set. */
    size_t largest = run->train.n > run->test.n ? run->train.n : run->test.n;
    run->eval_batch = (size_t)c->eval_batch < largest ? c->eval_batch : (int)largest;
    const struct kfac_backend *be;
    if ((rc = kfac_backend_select(c->device, "train.device", &be)))
        return rc;
    kfac_net_set_backend(run->net, be);
    run->optim_opts = c->optim;
    run->optim_opts.max_batch = train_batch;
    if ((rc = plan_memory(run, c, train_batch)) || opts->plan_only)
        return rc;
    if (run->eval_batch > run->chunk)
        run->eval_batch = run->chunk;
    kfac_net_reserve(run->net, run->chunk);
    kfac_net_init(run->net, (enum kfac_init)c->init, c->sparse_connections, &run->rng_init);
    if ((rc = kfac_optim_new(&run->optim_opts, run->net, run->loss, &run->rng_optim,
                             &run->optim)))
        return rc;
    kfac_batcher_init(&run->batcher, &run->train, train_batch, &run->rng_batch,
                      kfac_comm_rank(opts->comm), ranks);
    if (c->polyak_start > 0) {
        run->avg = kfac_floats_new(run->net->n_params);
        run->scratch = kfac_floats_new(run->net->n_params);
    }
    if (c->checkpoint) {
        run->checkpoint = kfac_xstrdup(c->checkpoint);
    } else if (c->log_file && !opts->no_log) {
        run->checkpoint = kfac_xasprintf("%s.ckpt", c->log_file);
    }
    if (run->writer && (rc = check_outputs(run, c)))
        return rc;
    struct stat st;
    if (c->fisher_export && !opts->force && !opts->resume && stat(c->fisher_export, &st) == 0)
        return kfac_error(KFAC_EEXIST, "log.fisher_export = %s exists; give --force to write "
                                       "into it",
                          c->fisher_export);
    run->start = 1;
    if (c->inject_nan)
        kfac_parse_injection(c->inject_nan, &run->inject_at, &run->inject_times);
    int n_fisher = 0;
    if (c->fisher_error_every > 0) {
        run->probe = kfac_fisher_probe_new(run->net, probe_cases(c, train_batch),
                                           c->optim.kfoc_normalise);
        n_fisher = 3 * run->net->n_blocks;
    }
    const char *metric = kfac_metric_name(c->data.task);
    int n_opt = kfac_optim_n_columns(run->optim);
    const char **names = kfac_xmalloc((size_t)(8 + n_opt + n_fisher) * sizeof *names);
    char(*fisher_names)[32] = kfac_xcalloc((size_t)n_fisher + 1, sizeof *fisher_names);
    char eval_names[4][32];
    int n = 0;
    names[n++] = "iter";
    names[n++] = "seconds";
    names[n++] = "batch";
    names[n++] = "objective";
    for (int i = 0; i < n_opt; i++)
        names[n++] = run->optim->ops->columns[i];
    snprintf(eval_names[0], 32, "train_%s", metric);
    snprintf(eval_names[1], 32, "test_%s", metric);
    snprintf(eval_names[2], 32, "train_%s_avg", metric);
    snprintf(eval_names[3], 32, "test_%s_avg", metric);
    for (int i = 0; i < (run->avg ? 4 : 2); i++)
        names[n++] = eval_names[i];
    static const char *const kinds[3] = {"diag", "kfac", "kfoc"};
    for (int i = 0; i < n_fisher; i++) {
        snprintf(fisher_names[i], 32, "fisher_%s_%d", kinds[i % 3],
                 run->net->blocks[i / 3]->index + 1);
        names[n++] = fisher_names[i];
    }
    run->row = kfac_xcalloc((size_t)n, sizeof *run->row);
    /* The checkpoint is checked and restored before the log is touched. */
    if (opts->resume)
        rc = resume(run, opts);
    int progress = !opts->quiet && run->writer &&
                   (c->progress == KFAC_PROGRESS_ON ||
                    (c->progress == KFAC_PROGRESS_AUTO && isatty(2)));
    const char *log_path = opts->no_log || !run->writer ? "/dev/null" : c->log_file;
    if (!rc && opts->resume) {
        rc = kfac_log_open_append(&run->log, log_path, names, n, progress);
    } else if (!rc) {
        rc = kfac_log_open(&run->log, log_path, opts->force || opts->no_log || !run->writer,
                           progress);
        if (!rc)
            rc = kfac_log_header(&run->log, names, n);
    }
    free(names);
    free(fisher_names);
    return rc;
}

void kfac_run_state(struct kfac_run *run, struct kfac_state *s)
{
    struct kfac_net *net = run->net;
    kfac_state_add_range(s, "run.iterations", KFAC_STATE_LONG, &run->iterations_done, 1, 0,
                         (double)LONG_MAX);
    kfac_state_add_range(s, "run.seconds", KFAC_STATE_F64, &run->seconds, 1, 0, DBL_MAX);
    kfac_state_add(s, "run.final", KFAC_STATE_F64_NAN, run->final, 4);
    if (!run->train.shard) /* each rank's own (data.shard), as its batch order */
        kfac_state_add(s, "rng.batch", KFAC_STATE_RNG, &run->rng_batch, 1);
    kfac_state_add(s, "rng.probe", KFAC_STATE_RNG, &run->rng_probe, 1);
    kfac_batcher_state(&run->batcher, s);
    kfac_state_add(s, "net.params", KFAC_STATE_F32, net->params, net->n_params);
    if (run->avg)
        kfac_state_add(s, "polyak.avg", KFAC_STATE_F32, run->avg, net->n_params);
    run->optim->ops->state(run->optim, s);
}

int kfac_run_checkpoint(struct kfac_run *run)
{
    struct kfac_state s = {0};
    kfac_run_state(run, &s);
    char *text = kfac_config_identity(run->cfg);
    char *next = kfac_xasprintf("%s.next", run->checkpoint);
    int rc = kfac_checkpoint_write(next, text, &s);
    /* Shift the kept ones (PATH.i → PATH.i+1), link PATH as PATH.1, then rename the new one
     * over PATH: at every moment PATH is a whole checkpoint, the old or the new. */
    for (int i = run->cfg->checkpoint_keep - 1; !rc && i >= 1; i--) {
        char *from = numbered(run->checkpoint, i - 1), *to = numbered(run->checkpoint, i);
        if (i > 1)
            rename(from, to);
        else if ((unlink(to) == 0 || errno == ENOENT) && link(from, to) != 0 && errno != ENOENT)
            rc = kfac_error(KFAC_EIO, "%s: cannot keep the previous checkpoint as %s: %s", from,
                            to, strerror(errno));
        free(from);
        free(to);
    }
    if (!rc && rename(next, run->checkpoint) != 0)
        rc = kfac_error(KFAC_EIO, "%s: cannot rename the new checkpoint %s over it: %s",
                        run->checkpoint, next, strerror(errno));
    if (rc)
        remove(next);
    free(next);
    free(text);
    kfac_state_free(&s);
    return rc;
}

/* θ̄ ← ξ θ̄ + (1 − ξ) θ with ξ = min(1 − 1/(k − k0 + 1), cap), from k = k0 on. */
static void polyak_update(struct kfac_run *run, long k)
{
    long k0 = run->cfg->polyak_start;
    if (!run->avg || k < k0)
        return;
    double xi = 1.0 - 1.0 / (double)(k - k0 + 1);
    if (xi > run->cfg->polyak_decay)
        xi = run->cfg->polyak_decay;
    int n = (int)run->net->n_params;
    run->net->be->sscal(n, (float)xi, run->avg);
    run->net->be->saxpy(n, (float)(1.0 - xi), run->net->params, run->avg);
}

/* Fills out[0..3]: train and test metric at θ, then at θ̄ (nan when not averaging yet). */
static void evaluate_all(struct kfac_run *run, long k, double *out)
{
    const struct kfac_config *c = run->cfg;
    struct kfac_net *net = run->net;
    out[0] = kfac_evaluate(net, c->data.task, &run->train, run->eval_batch);
    out[1] = kfac_evaluate(net, c->data.task, &run->test, run->eval_batch);
    out[2] = out[3] = NAN;
    if (run->avg && k >= c->polyak_start) {
        size_t bytes = net->n_params * sizeof(float);
        memcpy(run->scratch, net->params, bytes);
        memcpy(net->params, run->avg, bytes);
        out[2] = kfac_evaluate(net, c->data.task, &run->train, run->eval_batch);
        out[3] = kfac_evaluate(net, c->data.task, &run->test, run->eval_batch);
        memcpy(net->params, run->scratch, bytes);
    }
}

/* Prints a line to f (when not NULL) below the progress line, which is cleared. */
static void note(struct kfac_run *run, FILE *f, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void note(struct kfac_run *run, FILE *f, const char *fmt, ...)
{
    if (!f)
        return;
    kfac_log_clear_progress(&run->log);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fputc('\n', f);
}

/* The test aid train.inject_nan: the first input of iteration K's batch becomes NaN on
 * its first N attempts. */
static void inject_nan(struct kfac_run *run, const struct kfac_batch *b, long k, int attempt)
{
    if (run->inject_at == k && attempt < run->inject_times && b->first == 0 && b->m > 0)
        run->batcher.x[b->x - run->batcher.x] = NAN;
}

/* What the Fisher probe of iteration k used (log.fisher_export/iter-K, export.h): the
 * first cases of the batch, their rows, the sampled output gradients, the weights. */
static int export_probe(struct kfac_run *run, const struct kfac_batch *b, long k)
{
    const char *dir = run->cfg->fisher_export;
    char sub[32];
    snprintf(sub, sizeof sub, "iter-%ld", k);
    size_t n = (size_t)(b->m < run->probe->K ? b->m : run->probe->K);
    int rc = kfac_export_dir(dir, sub, "log.fisher_export", 1);
    /* The batch's rows are the batcher's order just before its position. */
    const size_t *order = run->batcher.perm + run->batcher.pos - (size_t)b->m;
    return rc ? rc : kfac_export_measurement(dir, sub, run->net, b->x,
                                             kfac_net_output_grad(run->net), n, order);
}

/* After the last retry failed: the checkpoint of the last good iteration, and the error. */
static int give_up(struct kfac_run *run)
{
    char *why = kfac_xstrdup(kfac_last_error());
    int rc;
    if (!run->checkpoint || !run->writer) {
        rc = kfac_error(KFAC_ENUMERIC, "%s; gave up after %d retries", why, run->cfg->retries);
    } else if (kfac_run_checkpoint(run)) {
        char *also = kfac_xstrdup(kfac_last_error());
        rc = kfac_error(KFAC_ENUMERIC, "%s; gave up after %d retries, and %s", why,
                        run->cfg->retries, also);
        free(also);
    } else {
        rc = kfac_error(KFAC_ENUMERIC, "%s; gave up after %d retries; the checkpoint %s holds "
                                       "iteration %ld, the last good one",
                        why, run->cfg->retries, run->checkpoint, run->iterations_done);
    }
    free(why);
    return rc;
}

/* The optimiser's figure `name` in the row being written, or NAN when it has none. */
static double optim_figure(const struct kfac_run *run, const char *name)
{
    const char *const *cols = run->optim->ops->columns;
    for (int i = 0; cols[i]; i++)
        if (strcmp(cols[i], name) == 0)
            return run->row[4 + i];
    return NAN;
}

/* s seconds as m:ss, or h:mm:ss from an hour. */
static void format_duration(double s, char *buf, size_t size)
{
    long t = isfinite(s) && s > 0 ? lround(s) : 0;
    if (t >= 3600)
        snprintf(buf, size, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, size, "%ld:%02ld", t / 60, t % 60);
}

/* The terminal line after iteration k, when one is due: how far the run is (in
 * iterations, or in seconds of train.max_seconds when that end is nearer) with a bar,
 * iterations per second and the training time left at that rate, the objective, the last
 * evaluated error (a dash before the first evaluation) and K-FAC's λ and γ. since_s: the
 * training time this invocation started from (at iteration run->start). */
static void draw_progress(struct kfac_run *run, long k, double objective, double error,
                          double train_time, double since_s)
{
    if (!kfac_log_progress_due(&run->log))
        return;
    const struct kfac_config *c = run->cfg;
    double f_iter = (double)k / (double)c->iterations;
    double f_time = c->max_seconds > 0 ? train_time / c->max_seconds : 0;
    int by_time = f_time > f_iter;
    double f = fmin(by_time ? f_time : f_iter, 1.0);
    double spent = train_time - since_s,
           rate = spent > 0 ? (double)(k - run->start + 1) / spent : 0;
    double left = by_time ? c->max_seconds - train_time
                          : rate > 0 ? (double)(c->iterations - k) / rate : NAN;
    char where[64], bar[21], eta[24], err[32] = "-", damping[64] = "";
    if (by_time)
        snprintf(where, sizeof where, "%.0f/%.0f s", train_time, c->max_seconds);
    else
        snprintf(where, sizeof where, "iteration %ld/%ld", k, c->iterations);
    int filled = (int)(f * 20);
    for (int i = 0; i < 20; i++)
        bar[i] = i < filled ? '#' : '.';
    bar[20] = '\0';
    format_duration(left, eta, sizeof eta);
    if (!isnan(error))
        snprintf(err, sizeof err, "%.4g", error);
    double lambda = optim_figure(run, "lambda"), gamma = optim_figure(run, "gamma");
    if (!isnan(lambda) && !isnan(gamma))
        snprintf(damping, sizeof damping, "  lambda %.3g gamma %.3g", lambda, gamma);
    kfac_log_progress(&run->log, "%s [%s] %.1f it/s, %s left  objective %.5g  train %s %s%s",
                      where, bar, rate, eta, objective, kfac_metric_name(c->data.task), err,
                      damping);
}

/* FNV-1a of the parameters' bytes. */
static uint64_t checksum(const float *x, size_t n)
{
    const unsigned char *p = (const unsigned char *)x;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n * sizeof *x; i++)
        h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

/* Every rank takes the same steps from the same summed figures, so their parameters must
 * agree to the bit; KFAC_ENUMERIC on every rank when they do not. */
static int check_ranks(struct kfac_run *run, long k)
{
    struct kfac_net *net = run->net;
    int r = kfac_comm_differs(net->comm, checksum(net->params, net->n_params));
    if (r < 0)
        return 0;
    return kfac_error(KFAC_ENUMERIC, "iteration %ld: the parameters of rank %d differ from rank "
                                     "0's (train.rank_check_every): the ranks no longer train "
                                     "one model",
                      k, r);
}

/* The summary's line on the ranks' communication over `iterations` iterations of `seconds`
 * (this invocation's): sent holds the ranks' summed bytes, then seconds, by kind. */
static void print_communication(FILE *f, int ranks, long iterations, double seconds,
                                const double *sent)
{
    double in_comm = 0, per = ranks * (double)(iterations > 0 ? iterations : 1);
    for (int i = 0; i < KFAC_COMM_KINDS; i++)
        in_comm += sent[KFAC_COMM_KINDS + i] / ranks;
    fprintf(f, "kfac-train: %d ranks: %.3g s per iteration, %.1f%% of it in collectives (waits "
               "included); sent per rank and iteration: gradient %.4g MB, statistics %.4g MB, "
               "inverses %.4g MB, scalars %.4g kB\n",
            ranks, seconds / (iterations > 0 ? iterations : 1),
            seconds > 0 ? 100 * in_comm / seconds : 0, sent[KFAC_COMM_GRADIENT] / per / 1e6,
            sent[KFAC_COMM_STATISTICS] / per / 1e6, sent[KFAC_COMM_INVERSE] / per / 1e6,
            sent[KFAC_COMM_SCALARS] / per / 1e3);
}

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

int kfac_run_train(struct kfac_run *run, FILE *summary)
{
    const struct kfac_config *c = run->cfg;
    const char *metric = kfac_metric_name(c->data.task);
    int n_opt = kfac_optim_n_columns(run->optim), n_eval = run->avg ? 4 : 2;
    int rc = 0;
    double train_time = run->seconds, evals[4];
    const double since_s = run->seconds;
    memcpy(evals, run->final, sizeof evals);
    if (run->start == 1)
        evals[0] = evals[1] = evals[2] = evals[3] = NAN;
    struct kfac_comm *comm = run->net->comm;
    int ranks = kfac_comm_size(comm);
    int periodic = run->checkpoint && (c->checkpoint_every > 0 || c->checkpoint_seconds > 0);
    int at_end = periodic || (run->checkpoint && c->checkpoint);
    double last_checkpoint = kfac_log_clock();
    /* A signal stops the run after the iteration in progress; a second one kills it. */
    struct sigaction sa = {0}, old_int, old_term;
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    stop_signal = 0;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    for (long k = run->start; k <= c->iterations; k++) {
        double t0 = kfac_log_clock();
        struct kfac_batch b;
        int m = kfac_batch_size(c->batch_schedule, c->batch_size, c->batch_full_at, k,
                                run->train_cases);
        double objective;
        /* A non-finite objective, gradient, statistic or step leaves the parameters alone:
         * try again with another batch (and K-FAC's λ raised), a bounded number of times. */
        for (int attempt = 0;; attempt++) {
            kfac_batcher_next(&run->batcher, m, &b);
            inject_nan(run, &b, k, attempt);
            rc = run->optim->ops->step(run->optim, &b, k, &objective, run->row + 4);
            if (rc != KFAC_ENUMERIC || attempt == c->retries)
                break;
            double lambda = run->optim->ops->raise_damping
                                ? run->optim->ops->raise_damping(run->optim)
                                : NAN;
            char how[64] = "";
            if (!isnan(lambda))
                snprintf(how, sizeof how, " and lambda = %.6g", lambda);
            note(run, summary, "kfac-train: %s; trying again with another batch%s (retry %d of %d)",
                 kfac_last_error(), how, attempt + 1, c->retries);
        }
        if (rc) {
            if (rc == KFAC_ENUMERIC)
                rc = give_up(run);
            break;
        }
        polyak_update(run, k);
        train_time += kfac_log_clock() - t0;
        int last = k == c->iterations || (c->max_seconds > 0 && train_time >= c->max_seconds);
        if (ranks > 1) { /* every rank ends where the first to stop does */
            double ends[2] = {last, stop_signal != 0};
            kfac_comm_sum_doubles(comm, KFAC_COMM_SCALARS, ends, 2);
            last = ends[0] > 0;
            if (ends[1] > 0 && !stop_signal)
                stop_signal = SIGTERM;
        }
        if (c->rank_check_every > 0 && (last || k % c->rank_check_every == 0) &&
            (rc = check_ranks(run, k)))
            break;
        double *ev = run->row + 4 + n_opt;
        for (int i = 0; i < n_eval; i++)
            ev[i] = NAN;
        if (last || (c->eval_every > 0 && k % c->eval_every == 0)) {
            evaluate_all(run, k, evals);
            memcpy(ev, evals, (size_t)n_eval * sizeof *ev);
        }
        if (run->probe) {
            double *fe = ev + n_eval;
            for (int i = 0; i < 3 * run->net->n_blocks; i++)
                fe[i] = NAN;
            if (last || k % c->fisher_error_every == 0) {
                kfac_fisher_probe_run(run->probe, run->net, run->loss, &b, &run->rng_probe,
                                      fe);
                if (c->fisher_export && (rc = export_probe(run, &b, k)))
                    break;
            }
        }
        run->row[0] = (double)k;
        run->row[1] = train_time;
        run->row[2] = m;
        run->row[3] = objective;
        rc = kfac_log_row(&run->log, run->row);
        if (!rc)
            draw_progress(run, k, objective, evals[0], train_time, since_s);
        run->iterations_done = k;
        run->seconds = train_time;
        memcpy(run->final, evals, sizeof evals);
        double now = kfac_log_clock();
        int due = periodic && ((c->checkpoint_every > 0 && k % c->checkpoint_every == 0) ||
                               (c->checkpoint_seconds > 0 &&
                                now - last_checkpoint >= c->checkpoint_seconds));
        if (!rc && run->writer && run->checkpoint && (due || stop_signal || (last && at_end))) {
            /* The log's rows so far go to disk first: a resumed run appends after them. */
            if (!(rc = kfac_log_flush(&run->log)))
                rc = kfac_run_checkpoint(run);
            last_checkpoint = now;
        }
        /* What only the writer does can fail only there: the others learn of it here. */
        if (ranks > 1 && kfac_comm_max(comm, rc != 0) && !rc)
            rc = kfac_error(KFAC_EPEER, "iteration %ld: another rank failed", k);
        if (rc)
            break;
        if (stop_signal) {
            rc = run->checkpoint
                     ? kfac_error(KFAC_EINTR, "%s at iteration %ld; the checkpoint %s holds it: "
                                              "continue with --resume %s",
                                  strsignal(stop_signal), k, run->checkpoint, run->checkpoint)
                     : kfac_error(KFAC_EINTR, "%s at iteration %ld; no checkpoint written (no "
                                              "log file to put it beside: set train.checkpoint)",
                                  strsignal(stop_signal), k);
            break;
        }
        if (last)
            break;
    }
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    /* The ranks' communication, summed (all of them end here together, or not at all). */
    double sent[2 * KFAC_COMM_KINDS];
    if (!rc && ranks > 1) {
        memcpy(sent, comm->bytes, sizeof comm->bytes);
        memcpy(sent + KFAC_COMM_KINDS, comm->seconds, sizeof comm->seconds);
        kfac_comm_sum_doubles(comm, KFAC_COMM_SCALARS, sent, 2 * KFAC_COMM_KINDS);
    }
    char *log_path = run->log.path ? kfac_xstrdup(run->log.path) : NULL;
    int close_rc = kfac_log_close(&run->log);
    if (!rc)
        rc = close_rc;
    if (!rc && !run->opts.quiet && summary) {
        fprintf(summary, "kfac-train: %ld of %ld iterations in %.2f s of training; train %s %.6g, "
                         "test %s %.6g",
                run->iterations_done, c->iterations, train_time, metric, evals[0], metric,
                evals[1]);
        if (run->avg && !isnan(evals[2]))
            fprintf(summary, "; averaged: train %s %.6g, test %s %.6g", metric, evals[2], metric,
                    evals[3]);
        fputc('\n', summary);
        if (ranks > 1)
            print_communication(summary, ranks, run->iterations_done - run->start + 1,
                                train_time - since_s, sent);
        if (log_path && strcmp(log_path, "/dev/null") != 0) {
            int stem = kfac_file_stem(log_path, ".tsv");
            fprintf(summary, "kfac-train: the log is %s; plot it with tools/kfac-plot -a -o "
                             "%.*s.png %s\n",
                    log_path, stem, log_path, log_path);
        }
    }
    free(log_path);
    return rc;
}

void kfac_run_free(struct kfac_run *run)
{
    if (!run)
        return;
    if (run->log.f)
        kfac_log_close(&run->log);
    kfac_optim_free(run->optim);
    kfac_batcher_free(&run->batcher);
    kfac_net_free(run->net);
    kfac_dataset_free(&run->train);
    kfac_dataset_free(&run->test);
    kfac_floats_free(run->avg);
    kfac_floats_free(run->scratch);
    kfac_fisher_probe_free(run->probe);
    free(run->row);
    free(run->checkpoint);
    memset(run, 0, sizeof *run);
}
