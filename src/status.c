/*
 * status.c: the thread-local error message and the aborting allocators (see status.h).
 */
#include "kfac/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char last_error[1024];

const char *kfac_status_str(int status)
{
    switch (status) {
    case KFAC_OK: return "success";
    case KFAC_EINVAL: return "invalid argument";
    case KFAC_EIO: return "input/output error";
    case KFAC_EFORMAT: return "malformed file";
    case KFAC_ENUMERIC: return "non-finite value";
    case KFAC_EEXIST: return "file exists";
    case KFAC_EINTR: return "interrupted";
    case KFAC_EPEER: return "another rank failed";
    default: return "unknown error";
    }
}

int kfac_error(int status, const char *fmt, ...)
{
    /* Through a copy: callers may pass kfac_last_error() itself to add context. */
    char msg[sizeof last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    memcpy(last_error, msg, sizeof msg);
    return status;
}

const char *kfac_last_error(void)
{
    return last_error;
}

void kfac_out_of_memory(size_t size)
{
    fprintf(stderr, "kfac-train: out of memory (asked for %zu bytes)\n", size);
    abort();
}

static void *check_alloc(void *p, size_t size)
{
    if (!p)
        kfac_out_of_memory(size);
    return p;
}

void *kfac_xmalloc(size_t size)
{
    return check_alloc(malloc(size ? size : 1), size);
}

void *kfac_xcalloc(size_t n, size_t size)
{
    return check_alloc(calloc(n ? n : 1, size ? size : 1), n * size);
}

void *kfac_xrealloc(void *p, size_t size)
{
    return check_alloc(realloc(p, size ? size : 1), size);
}

char *kfac_xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(kfac_xmalloc(n), s, n);
}

char *kfac_xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = kfac_xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}
