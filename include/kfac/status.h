/*
 * status.h: error reporting shared by every module.
 *
 * Library functions return 0 (KFAC_OK) or a negative enum kfac_status and leave a
 * human-readable message, naming the file, line or key at fault, in a thread-local
 * buffer read with kfac_last_error(). Only main.c exits. Running out of memory is not
 * a status: the kfac_x* allocators print a message and abort.
 */
#ifndef KFAC_STATUS_H
#define KFAC_STATUS_H

#include <stddef.h>

enum kfac_status {
    KFAC_OK = 0,
    KFAC_EINVAL = -1,   /* bad argument, configuration value or model spec */
    KFAC_EIO = -2,      /* a file could not be opened, read or written */
    KFAC_EFORMAT = -3,  /* a file's contents are malformed or truncated */
    KFAC_ENUMERIC = -4, /* a non-finite value was met where it must not be */
    KFAC_EEXIST = -5,   /* refusing to overwrite something the user made */
    KFAC_EINTR = -6,    /* stopped by SIGINT or SIGTERM (after saving what it could) */
    KFAC_EPEER = -7     /* another rank of the run failed, and says why (comm.h) */
};

/* Short name of a status ("invalid argument", ...); never NULL. */
const char *kfac_status_str(int status);

/* Formats the message for kfac_last_error() and returns status (for `return kfac_error(...)`). */
int kfac_error(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The message of the most recent kfac_error() in this thread ("" if none). */
const char *kfac_last_error(void);

/* Prints "out of memory" with the size asked for, then aborts. */
_Noreturn void kfac_out_of_memory(size_t size);

/* Allocators that abort with a message on failure. kfac_xmalloc(0) returns a valid pointer. */
void *kfac_xmalloc(size_t size);
void *kfac_xcalloc(size_t n, size_t size);
void *kfac_xrealloc(void *p, size_t size);
char *kfac_xstrdup(const char *s);
/* A new string formatted as by printf (caller frees). */
char *kfac_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
