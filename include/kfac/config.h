/*
 * config.h: the run configuration, read from an INI file (libinih) and from
 * `--set section.key=value` overrides, with every key typed, range-checked and
 * defaulted from one table (config.c). The sections are [data], [model], [optimizer],
 * [train], [log] and [study]; man/kfac-train.ini.5 documents each key.
 *
 * Relative paths in a file are resolved against that file's directory; paths given
 * with kfac_config_set() are taken as they are (relative to the working directory).
 */
#ifndef KFAC_CONFIG_H
#define KFAC_CONFIG_H

#include "kfac/data.h"
#include "kfac/optim.h"
#include <stdio.h>

enum kfac_progress { KFAC_PROGRESS_AUTO, KFAC_PROGRESS_ON, KFAC_PROGRESS_OFF };
/* optimizer.preset: none, or Martens' KFAC3 constants for the algorithm's keys. */
enum kfac_preset { KFAC_PRESET_NONE, KFAC_PRESET_KFAC3 };

struct kfac_config {
    struct kfac_data_opts data;      /* [data] */
    char *layers;                    /* [model] the layer spec (net.h) */
    int loss;                        /* 0 auto (from the output activation), else enum kfac_loss + 1 */
    int init;                        /* enum kfac_init */
    int sparse_connections;
    struct kfac_optim_opts optim;    /* [optimizer] */
    int preset;                      /* enum kfac_preset, applied to optim's keys as read */
    long iterations;                 /* [train] */
    int batch_size;                  /* m, or m_1 under the exponential schedule */
    int batch_schedule;              /* enum kfac_schedule */
    long batch_full_at;              /* k_full of the exponential schedule */
    long seed;
    int threads;                     /* 0: OpenBLAS's default */
    long polyak_start;               /* 0: no iterate averaging */
    double polyak_decay;             /* the cap on ξ */
    double max_seconds;              /* 0: no wall-clock limit */
    double memory_limit;             /* bytes a run may use; 0: what the machine has */
    int chunk_size;                  /* cases per pass; 0 (auto): the batch, or what fits */
    char *device;                    /* the backend: "cpu", "cuda" or "cuda:N" */
    long rank_check_every;           /* iterations between the ranks' parameter checksums
                                      * (0: never; comm.h) */
    char *inject_nan;                /* test aid "K[:N]" (kfac_parse_injection); NULL: none */
    int retries;                     /* tries again of a non-finite iteration */
    char *checkpoint;                /* NULL: log_file + ".ckpt", or none without a log file */
    long checkpoint_every;           /* iterations between checkpoints (0: not by count) */
    double checkpoint_seconds;       /* seconds between checkpoints (0: not by time) */
    int checkpoint_keep;             /* checkpoints kept: PATH, PATH.1, … */
    char *log_file;                  /* [log] NULL: the TSV goes to standard output */
    long eval_every;
    int eval_batch;
    long fisher_error_every;         /* 0: no Fisher-approximation error columns */
    int fisher_error_cases;          /* K, the sampled cases the errors are measured on */
    char *fisher_export;             /* directory for what each measurement used (NULL: none) */
    int progress;                    /* enum kfac_progress */
    int study_seeds;                 /* [study] the Fisher study's runs */
    char *study_batch_sizes;         /* its batch sizes: "1,10,100,full" */
    char *study_layers;              /* the Fisher study's layers: "1-3" (NULL: all) */
    int study_kfoc_normalise;        /* enum kfac_kfoc_normalise of the study's K-FOC fits */
    char *study_export;              /* directory for what each study run used (NULL: none) */
    char *study_heatmap_layers;      /* the Fisher pictures' layers: "2-5" */
    int study_heatmap_cases;         /* and the cases they average over */
};

/* The most batch sizes study.batch_sizes may list. */
#define KFAC_STUDY_MAX_SIZES 32

/* Parses a batch-size list such as "1,10,100,full" into sizes (at most max; 0 stands for
 * "full", the whole set); *n receives the count. An error names study.batch_sizes. */
int kfac_parse_batch_sizes(const char *spec, int *sizes, int max, int *n);

/* Fills every key with its default. */
void kfac_config_defaults(struct kfac_config *c);

/* Reads an INI file over the current values. Errors read "FILE:LINE: what was wrong".
 * An optimizer.preset in the file sets its keys except those the file gives itself. */
int kfac_config_load(struct kfac_config *c, const char *path);

/* Applies one "section.key=value" override; optimizer.preset sets its keys over what was
 * there, so an override after it wins. */
int kfac_config_set(struct kfac_config *c, const char *assignment);

/* train.inject_nan's "K", "K:N" or "K:all": iteration K ≥ 1 and N ≥ 1 tries (LONG_MAX for
 * all). KFAC_EINVAL when spec is not one of them. */
int kfac_parse_injection(const char *spec, long *at, long *times);

/* Checks what single keys cannot: required keys present, keys consistent with each other. */
int kfac_config_validate(const struct kfac_config *c);

/* Writes the resolved configuration in INI syntax (every key, defaults included). */
void kfac_config_print(const struct kfac_config *c, FILE *f);

/* The keys that decide a run's trajectory, one "section.key = value" line each: every key
 * except how long it runs (train.iterations, train.max_seconds), its checkpoints
 * (train.checkpoint*), train.memory_limit and the [log] and [study] sections. A checkpoint keeps it, and a
 * resumed run compares its own with it. The caller frees the text. */
char *kfac_config_identity(const struct kfac_config *c);

void kfac_config_free(struct kfac_config *c);

#endif
