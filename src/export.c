/*
 * export.c: the files of a Fisher measurement (see export.h).
 */
#include "kfac/export.h"
#include "kfac/data.h"
#include "kfac/status.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int kfac_export_dir(const char *dir, const char *sub, const char *key, int force)
{
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return kfac_error(KFAC_EIO, "%s = %s: cannot make the directory: %s", key, dir,
                          strerror(errno));
    char *path = kfac_xasprintf("%s/%s", dir, sub);
    int rc = 0;
    if (mkdir(path, 0777) != 0) {
        if (errno != EEXIST)
            rc = kfac_error(KFAC_EIO, "%s: cannot make the directory: %s", path, strerror(errno));
        else if (!force)
            rc = kfac_error(KFAC_EIO, "%s exists; give --force to replace the files in it", path);
    }
    free(path);
    return rc;
}

/* DIR/SUB/NAME.npy. */
static int write(const char *dir, const char *sub, const char *name, const char *descr,
                 int ndim, const size_t *dims, const void *data, size_t elem_size)
{
    char *path = kfac_xasprintf("%s/%s/%s.npy", dir, sub, name);
    int rc = kfac_npy_write(path, descr, ndim, dims, data, elem_size);
    free(path);
    return rc;
}

int kfac_export_measurement(const char *dir, const char *sub, const struct kfac_net *net,
                            const float *X, const float *out_grads, size_t n,
                            const size_t *order)
{
    size_t dims[2] = {n, (size_t)net->d_in};
    int rc = write(dir, sub, "inputs", "<f4", 2, dims, X, sizeof *X);
    int64_t *rows = kfac_xmalloc((n ? n : 1) * sizeof *rows);
    for (size_t i = 0; i < n; i++)
        rows[i] = (int64_t)order[i];
    if (!rc)
        rc = write(dir, sub, "order", "<i8", 1, dims, rows, sizeof *rows);
    free(rows);
    dims[1] = (size_t)net->d_out;
    if (!rc)
        rc = write(dir, sub, "output_grads", "<f4", 2, dims, out_grads, sizeof(float));
    for (int b = 0; b < net->n_blocks && !rc; b++) {
        const struct kfac_layer *l = net->blocks[b];
        char name[32];
        snprintf(name, sizeof name, "weights-%d", l->index + 1);
        size_t wd[2] = {(size_t)l->d_out, (size_t)l->d_in + 1};
        rc = write(dir, sub, name, "<f4", 2, wd, l->W, sizeof(float));
    }
    return rc;
}
