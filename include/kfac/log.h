/*
 * log.h: the per-iteration TSV log, the progress line, and the clock that the log's
 * timings are read from.
 *
 * The TSV has one header row of column names and one row per iteration; values that
 * were not computed at that iteration (evaluations between eval_every) are written
 * as "nan". A log file that exists is never overwritten unless forced.
 */
#ifndef KFAC_LOG_H
#define KFAC_LOG_H

#include <stdio.h>

struct kfac_log {
    FILE *f;            /* the TSV stream */
    char *path;         /* NULL for standard output */
    int n_cols;
    int progress;       /* 1: redraw a progress line on standard error */
    int progress_drawn; /* a progress line is on screen and must be cleared */
    double drawn_at;    /* monotonic seconds of the last redraw */
};

/* Opens the log: path NULL writes to standard output. An existing file is refused with
 * KFAC_EEXIST unless force is set. */
int kfac_log_open(struct kfac_log *log, const char *path, int force, int progress);

/* Opens the log of a resumed run for appending, with the columns names (n): an existing
 * file keeps every byte, and its header row must be these names (KFAC_EFORMAT otherwise);
 * a new or empty one gets the header. path NULL writes to standard output. */
int kfac_log_open_append(struct kfac_log *log, const char *path, const char *const *names, int n,
                         int progress);

/* Writes the header row (n names). */
int kfac_log_header(struct kfac_log *log, const char *const *names, int n);

/* Writes one row of the header's n_cols values; an integer-valued column is written
 * without a fraction. Checks the stream for write errors. */
int kfac_log_row(struct kfac_log *log, const double *values);

/* Hands the rows written so far to the system; reports a failed write. */
int kfac_log_flush(struct kfac_log *log);

/* Whether a progress line would be drawn now: it is enabled and none was drawn in the
 * last tenth of a second. */
int kfac_log_progress_due(const struct kfac_log *log);

/* Redraws the progress line (when enabled) with printf-style text, at most ten times a
 * second: calls in between are dropped (callers that format much ask
 * kfac_log_progress_due() first). */
void kfac_log_progress(struct kfac_log *log, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Clears the progress line, if one is drawn, so that a message can take its place. */
void kfac_log_clear_progress(struct kfac_log *log);

/* Monotonic seconds (CLOCK_MONOTONIC): differences of two calls time a piece of work. */
double kfac_log_clock(void);

/* Clears the progress line, flushes and closes; reports a failed write (disk full). */
int kfac_log_close(struct kfac_log *log);

#endif
