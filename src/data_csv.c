/*
 * data_csv.c: the CSV reader. The first non-empty line names the columns (names may be
 * double-quoted); every later non-empty line holds one number per column. Ragged rows
 * and non-numbers are errors that name the file, line and column.
 */
#include "data_read.h"
#include "kfac/data.h"
#include "kfac/mat.h"
#include "kfac/status.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Splits line in place at commas into at most max fields (trimmed, quotes removed);
 * returns the number of fields, or max + 1 if there are more. */
static int split_fields(char *line, char **fields, int max)
{
    int n = 0;
    char *p = line;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        char *start = p, *end;
        if (*p == '"') {
            start = ++p;
            while (*p && *p != '"')
                p++;
            end = p;
            if (*p == '"')
                p++;
            while (*p && *p != ',')
                p++;
        } else {
            while (*p && *p != ',')
                p++;
            end = p;
            while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
                end--;
        }
        int last = *p != ',';
        *end = 0;
        if (n < max)
            fields[n] = start;
        n++;
        if (last)
            break;
        p++;
    }
    return n > max ? max + 1 : n;
}

static int blank(const char *s)
{
    return s[strspn(s, " \t")] == 0;
}

int kfac_csv_read(const char *path, struct kfac_table *out)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "r");
    if (!f)
        return kfac_data_open_error(path, errno);
    char *line = NULL, **fields = NULL;
    size_t cap = 0, rows_cap = 0;
    long lineno = 0;
    int rc = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = 0;
        if (blank(line))
            continue;
        if (!out->names) {
            int n = 1;
            for (char *c = line; *c; c++)
                n += *c == ',';
            fields = kfac_xmalloc((size_t)n * sizeof *fields);
            out->cols = split_fields(line, fields, n);
            out->names = kfac_xcalloc((size_t)out->cols, sizeof *out->names);
            for (int j = 0; j < out->cols; j++) {
                if (!*fields[j]) {
                    rc = kfac_error(KFAC_EFORMAT, "%s:%ld: column %d of the header has no name",
                                    path, lineno, j + 1);
                    goto done;
                }
                out->names[j] = kfac_xstrdup(fields[j]);
            }
            continue;
        }
        int n = split_fields(line, fields, out->cols);
        if (n != out->cols) {
            rc = kfac_error(KFAC_EFORMAT, "%s:%ld: expected %d fields as in the header, found %s%d",
                            path, lineno, out->cols, n > out->cols ? "more than " : "",
                            n > out->cols ? out->cols : n);
            goto done;
        }
        if (out->rows == rows_cap) {
            rows_cap = rows_cap ? 2 * rows_cap : 256;
            float *grown = kfac_floats_new(rows_cap * (size_t)out->cols);
            if (out->data)
                memcpy(grown, out->data, out->rows * (size_t)out->cols * sizeof *grown);
            kfac_floats_free(out->data);
            out->data = grown;
        }
        float *row = out->data + out->rows * (size_t)out->cols;
        for (int j = 0; j < out->cols; j++) {
            char *end;
            errno = 0;
            double v = strtod(fields[j], &end);
            if (end == fields[j] || *end || errno == ERANGE || !isfinite(v)) {
                rc = kfac_error(KFAC_EFORMAT, "%s:%ld: column '%s': '%s' is not a finite number",
                                path, lineno, out->names[j], fields[j]);
                goto done;
            }
            row[j] = (float)v;
        }
        out->rows++;
    }
    if (ferror(f))
        rc = kfac_error(KFAC_EIO, "%s: read error: %s", path, strerror(errno));
    else if (!out->names)
        rc = kfac_error(KFAC_EFORMAT, "%s: empty file (expected a header row of column names)",
                        path);
    else if (out->rows == 0)
        rc = kfac_error(KFAC_EFORMAT, "%s: no data rows after the header", path);
done:
    free(line);
    free(fields);
    fclose(f);
    if (rc)
        kfac_table_free(out);
    return rc;
}

void kfac_table_free(struct kfac_table *t)
{
    if (!t)
        return;
    for (int j = 0; j < t->cols && t->names; j++)
        free(t->names[j]);
    free(t->names);
    kfac_floats_free(t->data);
    memset(t, 0, sizeof *t);
}
