/*
 * train.c: assembling a run from a configuration and the training loop: batches,
 * optimiser steps, Polyak iterate averaging, periodic evaluation, the log and the
 * wall-clock budget (see train.h).
 */
#include "kfac/train.h"
#include "kfac/mat.h"
#include "kfac/status.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
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
        if (l->ops == &kfac_conv_ops || l->ops == &kfac_maxpool_ops ||
            l->ops == &kfac_avgpool_ops)
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
    double sum = 0;
    if (ds->n == 0)
        return NAN;
    for (size_t start = 0; start < ds->n; start += (size_t)chunk) {
        int m = (int)(ds->n - start < (size_t)chunk ? ds->n - start : (size_t)chunk);
        kfac_net_forward(net, m, ds->x + start * ds->d_x);
        const float *y = kfac_net_output(net), *t = ds->t + start * ds->d_t;
        if (task == KFAC_TASK_CLASSIFICATION)
            sum += kfac_correct_count(m, ds->d_t, y, t);
        else
            sum += kfac_sq_error_sum(m, ds->d_t, y, t);
    }
    if (task == KFAC_TASK_REGRESSION)
        return sqrt(sum / ((double)ds->n * ds->d_t));
    return sum / (double)ds->n;
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
    if (c->threads > 0)
        openblas_set_num_threads(c->threads);
    /* Independent streams, so that e.g. a change of initialisation leaves the batches alone. */
    uint64_t seed = (uint64_t)c->seed;
    kfac_rng_seed(&run->rng_init, seed);
    kfac_rng_seed(&run->rng_data, seed ^ 0x5bd1e9955bd1e995ULL);
    kfac_rng_seed(&run->rng_batch, seed ^ 0xc2b2ae3d27d4eb4fULL);
    kfac_rng_seed(&run->rng_optim, seed ^ 0x9e3779b97f4a7c15ULL);
    kfac_rng_seed(&run->rng_probe, seed ^ 0x94d049bb133111ebULL);
    if ((rc = kfac_data_load(&c->data, &run->rng_data, &run->train, &run->test)))
        return rc;
    if (run->train.d_x != run->net->d_in || run->train.d_t != run->net->d_out)
        return kfac_error(KFAC_EINVAL,
                          "model.layers takes %d inputs and makes %d outputs, but the data have %d "
                          "inputs and %d targets per case",
                          run->net->d_in, run->net->d_out, run->train.d_x, run->train.d_t);
    const struct kfac_shape *in = &run->net->in_shape;
    const int *shape = run->train.shape;
    if (in->h * in->w > 1 && shape[1] * shape[2] > 1 &&
        (shape[0] != in->c || shape[1] != in->h || shape[2] != in->w))
        return kfac_error(KFAC_EINVAL, "model.layers takes %dx%dx%d images, but the cases of %s "
                                       "are %dx%dx%d",
                          in->c, in->h, in->w, c->data.train, shape[0], shape[1], shape[2]);
    if (c->data.task == KFAC_TASK_CLASSIFICATION && run->loss != KFAC_LOSS_SOFTMAX)
        return kfac_error(KFAC_EINVAL, "data.task = classification needs a softmax output layer");
    /* The largest batch the schedule draws: the whole set when it grows to it. */
    int train_batch = kfac_batch_size(c->batch_schedule, c->batch_size, c->batch_full_at,
                                      c->batch_schedule == KFAC_SCHEDULE_FIXED ? 1
                                                                               : c->batch_full_at,
                                      run->train.n);
    int max_batch = train_batch > c->eval_batch ? train_batch : c->eval_batch;
    kfac_net_reserve(run->net, max_batch);
    kfac_net_init(run->net, (enum kfac_init)c->init, c->sparse_connections, &run->rng_init);
    if ((rc = kfac_optim_new(&c->optim, run->net, run->loss, &run->rng_optim, &run->optim)))
        return rc;
    kfac_batcher_init(&run->batcher, &run->train, train_batch, &run->rng_batch);
    if (c->polyak_start > 0) {
        run->avg = kfac_floats_new(run->net->n_params);
        run->scratch = kfac_floats_new(run->net->n_params);
    }
    int progress = !opts->quiet && (c->progress == KFAC_PROGRESS_ON ||
                                    (c->progress == KFAC_PROGRESS_AUTO && isatty(2)));
    if ((rc = kfac_log_open(&run->log, opts->no_log ? "/dev/null" : c->log_file,
                            opts->force || opts->no_log, progress)))
        return rc;
    int n_fisher = 0;
    if (c->fisher_error_every > 0) {
        run->probe = kfac_fisher_probe_new(run->net, c->fisher_error_cases < train_batch
                                                         ? c->fisher_error_cases
                                                         : train_batch);
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
    rc = kfac_log_header(&run->log, names, n);
    free(names);
    free(fisher_names);
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
    cblas_sscal(n, (float)xi, run->avg, 1);
    cblas_saxpy(n, (float)(1.0 - xi), run->net->params, 1, run->avg, 1);
}

/* Fills out[0..3]: train and test metric at θ, then at θ̄ (nan when not averaging yet). */
static void evaluate_all(struct kfac_run *run, long k, double *out)
{
    const struct kfac_config *c = run->cfg;
    struct kfac_net *net = run->net;
    out[0] = kfac_evaluate(net, c->data.task, &run->train, c->eval_batch);
    out[1] = kfac_evaluate(net, c->data.task, &run->test, c->eval_batch);
    out[2] = out[3] = NAN;
    if (run->avg && k >= c->polyak_start) {
        size_t bytes = net->n_params * sizeof(float);
        memcpy(run->scratch, net->params, bytes);
        memcpy(net->params, run->avg, bytes);
        out[2] = kfac_evaluate(net, c->data.task, &run->train, c->eval_batch);
        out[3] = kfac_evaluate(net, c->data.task, &run->test, c->eval_batch);
        memcpy(net->params, run->scratch, bytes);
    }
}

int kfac_run_train(struct kfac_run *run, FILE *summary)
{
    const struct kfac_config *c = run->cfg;
    const char *metric = kfac_metric_name(c->data.task);
    int n_opt = kfac_optim_n_columns(run->optim), n_eval = run->avg ? 4 : 2;
    int rc = 0;
    double train_time = 0, evals[4] = {NAN, NAN, NAN, NAN};
    long k;
    for (k = 1; k <= c->iterations; k++) {
        double t0 = kfac_log_clock();
        struct kfac_batch b;
        int m = kfac_batch_size(c->batch_schedule, c->batch_size, c->batch_full_at, k,
                                run->train.n);
        kfac_batcher_next(&run->batcher, m, &b);
        double objective;
        rc = run->optim->ops->step(run->optim, &b, k, &objective, run->row + 4);
        if (rc)
            break;
        polyak_update(run, k);
        train_time += kfac_log_clock() - t0;
        int last = k == c->iterations || (c->max_seconds > 0 && train_time >= c->max_seconds);
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
            if (last || k % c->fisher_error_every == 0)
                kfac_fisher_probe_run(run->probe, run->net, run->loss, b.m, b.x, &run->rng_probe,
                                      fe);
        }
        run->row[0] = (double)k;
        run->row[1] = train_time;
        run->row[2] = m;
        run->row[3] = objective;
        if ((rc = kfac_log_row(&run->log, run->row)))
            break;
        kfac_log_progress(&run->log, "kfac-train: iteration %ld/%ld  objective %.5g  train %s %.5g  "
                          "[%.1f s]",
                          k, c->iterations, objective, metric, evals[0], train_time);
        if (last) {
            k++;
            break;
        }
    }
    run->iterations_done = k - 1;
    run->seconds = train_time;
    memcpy(run->final, evals, sizeof evals);
    int close_rc = kfac_log_close(&run->log);
    if (!rc)
        rc = close_rc;
    if (!rc && !run->opts.quiet && summary) {
        fprintf(summary, "kfac-train: %ld iterations in %.2f s; train %s %.6g, test %s %.6g",
                run->iterations_done, train_time, metric, evals[0], metric, evals[1]);
        if (run->avg && !isnan(evals[2]))
            fprintf(summary, "; averaged: train %s %.6g, test %s %.6g", metric, evals[2], metric,
                    evals[3]);
        fputc('\n', summary);
    }
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
    memset(run, 0, sizeof *run);
}
