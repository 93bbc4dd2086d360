/*
 * log.c: the TSV writer, the terminal progress line and closing with error checks
 * (see log.h).
 */
#include "kfac/log.h"
#include "kfac/status.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

int kfac_log_open(struct kfac_log *log, const char *path, int force, int progress)
{
    memset(log, 0, sizeof *log);
    log->progress = progress;
    if (!path) {
        log->f = stdout;
        return 0;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_NOFOLLOW | (force ? O_TRUNC : O_EXCL), 0644);
    if (fd < 0) {
        if (errno == EEXIST)
            return kfac_error(KFAC_EEXIST, "%s: the log file exists; kfac-train never overwrites "
                                           "it (use --force to replace it, or choose another --log)",
                              path);
        if (errno == ELOOP)
            return kfac_error(KFAC_EIO, "%s: the log is a symbolic link; kfac-train writes no "
                                        "log through one (give the file itself)",
                              path);
        return kfac_error(KFAC_EIO, "%s: cannot create the log: %s", path, strerror(errno));
    }
    log->f = fdopen(fd, "w");
    if (!log->f) {
        close(fd);
        return kfac_error(KFAC_EIO, "%s: cannot open the log: %s", path, strerror(errno));
    }
    log->path = kfac_xstrdup(path);
    return 0;
}

/* "a\tb\t…" (caller frees). */
static char *join_names(const char *const *names, int n)
{
    size_t len = 1;
    for (int i = 0; i < n; i++)
        len += strlen(names[i]) + 1;
    char *out = kfac_xmalloc(len), *p = out;
    *p = '\0';
    for (int i = 0; i < n; i++)
        p += sprintf(p, "%s%s", i ? "\t" : "", names[i]);
    return out;
}

/* Opens path for appending; *fresh when it is new or empty, else its header must match. */
static int open_append(struct kfac_log *log, const char *path, const char *header, int *fresh)
{
    FILE *f = fopen(path, "a+");
    if (!f)
        return kfac_error(KFAC_EIO, "%s: cannot open the log: %s", path, strerror(errno));
    *fresh = 1;
    /* "a+" reads from the start and writes at the end whatever the position. */
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, f);
    if (n > 0) {
        *fresh = 0;
        if (line[n - 1] == '\n')
            line[n - 1] = '\0';
        if (strcmp(line, header) != 0) {
            free(line);
            fclose(f);
            return kfac_error(KFAC_EFORMAT, "%s: the log's columns are not this run's; resuming "
                                            "would mix them (give another --log)",
                              path);
        }
    }
    free(line);
    /* A row cut short by a crash keeps its bytes; the next row starts on a line of its own. */
    int cut = !*fresh && fseek(f, -1, SEEK_END) == 0 && fgetc(f) != '\n';
    fseek(f, 0, SEEK_END); /* C asks for a seek between reading and writing */
    if (cut)
        fputc('\n', f);
    log->f = f;
    log->path = kfac_xstrdup(path);
    return 0;
}

int kfac_log_open_append(struct kfac_log *log, const char *path, const char *const *names, int n,
                         int progress)
{
    memset(log, 0, sizeof *log);
    log->progress = progress;
    int fresh = 1, rc = 0;
    if (path) {
        char *header = join_names(names, n);
        rc = open_append(log, path, header, &fresh);
        free(header);
    } else {
        log->f = stdout;
    }
    if (!rc && fresh)
        rc = kfac_log_header(log, names, n);
    log->n_cols = n;
    return rc;
}

static int check_stream(struct kfac_log *log)
{
    if (ferror(log->f))
        return kfac_error(KFAC_EIO, "%s: write error: %s", log->path ? log->path : "standard output",
                          strerror(errno));
    return 0;
}

int kfac_log_header(struct kfac_log *log, const char *const *names, int n)
{
    log->n_cols = n;
    for (int i = 0; i < n; i++)
        fprintf(log->f, "%s%c", names[i], i + 1 < n ? '\t' : '\n');
    return check_stream(log);
}

int kfac_log_row(struct kfac_log *log, const double *values)
{
    for (int i = 0; i < log->n_cols; i++) {
        double v = values[i];
        char sep = i + 1 < log->n_cols ? '\t' : '\n';
        if (isnan(v))
            fprintf(log->f, "nan%c", sep);
        else if (v == floor(v) && fabs(v) < 1e15)
            fprintf(log->f, "%.0f%c", v, sep);
        else
            fprintf(log->f, "%.7g%c", v, sep);
    }
    if (log->f == stdout)
        fflush(log->f);
    return check_stream(log);
}

int kfac_log_flush(struct kfac_log *log)
{
    if (fflush(log->f) != 0)
        return kfac_error(KFAC_EIO, "%s: write error: %s", log->path ? log->path : "standard output",
                          strerror(errno));
    return check_stream(log);
}

double kfac_log_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int kfac_log_progress_due(const struct kfac_log *log)
{
    return log->progress && (!log->progress_drawn || kfac_log_clock() - log->drawn_at >= 0.1);
}

void kfac_log_progress(struct kfac_log *log, const char *fmt, ...)
{
    if (!kfac_log_progress_due(log))
        return;
    log->drawn_at = kfac_log_clock();
    /* One screen line: a line that wrapped could not be redrawn in place. */
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    struct winsize ws;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1 && ws.ws_col <= sizeof line)
        line[ws.ws_col - 1] = '\0';
    fprintf(stderr, "\r%s\033[K", line);
    fflush(stderr);
    log->progress_drawn = 1;
}

void kfac_log_clear_progress(struct kfac_log *log)
{
    if (log->progress_drawn)
        fputs("\r\033[K", stderr);
    log->progress_drawn = 0;
}

int kfac_log_close(struct kfac_log *log)
{
    if (!log->f)
        return 0;
    kfac_log_clear_progress(log);
    int rc = kfac_log_flush(log);
    if (log->f != stdout && fclose(log->f) != 0 && !rc)
        rc = kfac_error(KFAC_EIO, "%s: write error: %s", log->path, strerror(errno));
    free(log->path);
    memset(log, 0, sizeof *log);
    return rc;
}
