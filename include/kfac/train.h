/*
 * train.h: a training run put together from a configuration: the model, the data, the
 * optimiser, the log, iterate averaging and evaluation, and the loop that drives them.
 *
 * kfac_run_prepare() does everything that can fail because of the configuration or the
 * data (the CLI's exit status 2); kfac_run_train() fails only at run time (status 1).
 */
#ifndef KFAC_TRAIN_H
#define KFAC_TRAIN_H

#include "kfac/checkpoint.h"
#include "kfac/config.h"
#include "kfac/curvature.h"
#include "kfac/data.h"
#include "kfac/log.h"
#include "kfac/loss.h"
#include "kfac/memory.h"
#include "kfac/net.h"
#include "kfac/optim.h"
#include "kfac/rng.h"
#include <stdio.h>

/* Builds the network a configuration describes (zeroed parameters, no buffers) and picks its
 * loss: model.loss, or the loss matched to the output activation. */
int kfac_model_new(const struct kfac_config *c, struct kfac_net **net, enum kfac_loss *loss);

/* Prints the layers, their parameter counts and the loss. */
void kfac_model_summary(const struct kfac_net *net, enum kfac_loss loss, FILE *f);

/* The task's metric over a whole data set, in chunks of at most `chunk` cases (≤ the
 * network's max_batch): the reconstruction error (squared error summed over outputs,
 * mean over cases), the accuracy (fraction correct) or the RMSE. */
double kfac_evaluate(struct kfac_net *net, int task, const struct kfac_dataset *ds, int chunk);

/* The metric's short name in log columns: "recon", "acc" or "rmse". */
const char *kfac_metric_name(int task);

struct kfac_run_opts {
    int quiet;          /* no progress line, no summary */
    int force;          /* replace an existing log file */
    int no_log;         /* discard the TSV log (runs inside a study) */
    const char *resume; /* continue from this checkpoint, or NULL */
    int force_resume;   /* resume even where the trajectory keys differ */
    int plan_only;      /* kfac_run_prepare() stops once the memory is planned (--dry-run) */
    struct kfac_comm *comm; /* the ranks that train the model together (comm.h): every rank
                             * prepares and trains alike, with its share of each batch; NULL:
                             * this process alone */
};

struct kfac_run {
    const struct kfac_config *cfg;
    struct kfac_run_opts opts;
    struct kfac_dataset train, test;
    size_t train_cases; /* the training set's cases on all ranks (data.shard: the shards') */
    struct kfac_net *net;
    enum kfac_loss loss;
    struct kfac_optim *optim;
    struct kfac_optim_opts optim_opts; /* cfg's, with max_batch the schedule's largest batch */
    struct kfac_rng rng_init, rng_data, rng_batch, rng_optim, rng_probe;
    struct kfac_batcher batcher;
    float *avg;         /* n_params: Polyak average θ̄, or NULL when averaging is off */
    float *scratch;     /* n_params: θ while θ̄ is being evaluated */
    struct kfac_fisher_probe *probe; /* Fisher-approximation errors, or NULL */
    struct kfac_log log;
    double *row;        /* one log row */
    char *checkpoint;   /* where checkpoints go (train.checkpoint, or the log's path +
                           ".ckpt"), or NULL */
    long start;         /* the first iteration to run: 1, or the checkpoint's next */
    long inject_at, inject_times; /* train.inject_nan, parsed (0: none) */
    int eval_batch;     /* log.eval_batch, at most the larger data set and the chunk */
    int chunk;          /* cases per pass: the layer buffers' size (train.chunk_size) */
    struct kfac_memory memory; /* what the run holds, as planned */
    int writer;         /* rank 0: the one that writes the log, progress and checkpoints */
    long iterations_done;
    double seconds;     /* training time, evaluations excluded */
    double final[4];    /* train, test, averaged train, averaged test metric (nan if none) */
};

int kfac_run_prepare(struct kfac_run *run, const struct kfac_config *c,
                     const struct kfac_run_opts *opts);

/* After kfac_run_prepare(): the chunk and the memory tally as "# " comment lines. */
void kfac_run_print_plan(const struct kfac_run *run, FILE *f);

/* Lists the run's state for a checkpoint: its iteration, training time and last
 * evaluations, its random streams, the batch order, the parameters, the Polyak average
 * and the optimiser's state. */
void kfac_run_state(struct kfac_run *run, struct kfac_state *s);

/* Writes the run's checkpoint to run->checkpoint, keeping train.checkpoint_keep of them
 * (PATH, PATH.1, …: the newest first; PATH always holds a whole checkpoint). */
int kfac_run_checkpoint(struct kfac_run *run);

/* Runs the iterations, logging each; on success prints a summary line to `summary` unless
 * quiet. On failure the log keeps every row written so far. Of several ranks, all end at
 * the same iteration: a failure one rank meets (writing the log or a checkpoint) ends the
 * others with KFAC_EPEER, and every train.rank_check_every iterations a checksum of the
 * parameters must agree across the ranks. Checkpoints are written every
 * train.checkpoint_every iterations and train.checkpoint_seconds seconds, at the end when
 * either is set or train.checkpoint is given, and on SIGINT or SIGTERM, which stop the run
 * after the iteration in progress with KFAC_EINTR (a second signal kills it at once). */
int kfac_run_train(struct kfac_run *run, FILE *summary);

void kfac_run_free(struct kfac_run *run);

#endif
