/*
 * file.c: whole-file outputs through mkstemp temporaries renamed into place (file.h).
 */
#include "kfac/file.h"
#include "kfac/status.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

char *kfac_file_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return kfac_xstrdup(".");
    return kfac_xasprintf("%.*s", slash == path ? 1 : (int)(slash - path), path);
}

int kfac_file_has_suffix(const char *path, const char *suffix)
{
    size_t n = strlen(path), k = strlen(suffix);
    return n >= k && strcmp(path + n - k, suffix) == 0;
}

int kfac_file_stem(const char *path, const char *suffix)
{
    size_t n = strlen(path), k = strlen(suffix);
    return (int)(n > k && kfac_file_has_suffix(path, suffix) ? n - k : n);
}

int kfac_file_temp(const char *path, const char *what, char **tmp)
{
    *tmp = kfac_xasprintf("%s.XXXXXX", path);
    int fd = mkstemp(*tmp);
    if (fd < 0) {
        kfac_error(KFAC_EIO, "%s: cannot write %s: no temporary file can be made beside it: %s",
                   path, what, strerror(errno));
        free(*tmp);
        *tmp = NULL;
    }
    return fd;
}

int kfac_file_commit(char *tmp, const char *path, const char *what, int err)
{
    int rc = 0;
    if (err) {
        remove(tmp);
        rc = kfac_error(KFAC_EIO, "%s: cannot write %s: %s", path, what, strerror(err));
    } else if (rename(tmp, path) != 0) {
        err = errno;
        remove(tmp);
        rc = kfac_error(KFAC_EIO, "%s: cannot write %s: cannot rename %s over it: %s", path, what,
                        tmp, strerror(err));
    }
    free(tmp);
    if (rc)
        return rc;
    /* The rename is durable only once the directory is on disk too. */
    char *dir = kfac_file_dir(path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(dir);
    return 0;
}

char *kfac_file_pattern(const char *path, const char *from, const char *to)
{
    size_t nf = strlen(from), nt = strlen(to), count = 0;
    for (const char *p = strstr(path, from); p; p = strstr(p + nf, from))
        count++;
    char *out = kfac_xmalloc(strlen(path) + count * nt + 1), *o = out;
    const char *p = path, *hit;
    while ((hit = strstr(p, from))) {
        memcpy(o, p, (size_t)(hit - p));
        o += hit - p;
        memcpy(o, to, nt);
        o += nt;
        p = hit + nf;
    }
    strcpy(o, p);
    return out;
}
