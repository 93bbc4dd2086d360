/*
 * memory.h: what a run will allocate, item by item, against the memory it may use: a run
 * that cannot fit is refused before it allocates, with the bytes it needs and the key that
 * would shrink its largest item, instead of dying in malloc or in the kernel's OOM killer.
 *
 * The items are lower bounds of what their owners allocate (kfac_net_buffer_bytes(),
 * kfac_optim_bytes()): a refused run could never have fitted, and one that passes may
 * still need a little more (small buffers, the BLAS library's own).
 */
#ifndef KFAC_MEMORY_H
#define KFAC_MEMORY_H

#include <stdio.h>

enum { KFAC_MEMORY_MAX_ITEMS = 8 };

struct kfac_memory_item {
    char what[64];       /* e.g. "layer buffers for 1000 cases" */
    const char *key;     /* the configuration key that makes it smaller */
    double bytes;
};

/* A tally of what a run will hold at once. */
struct kfac_memory {
    int n;
    struct kfac_memory_item items[KFAC_MEMORY_MAX_ITEMS];
};

/* Appends an item (at most KFAC_MEMORY_MAX_ITEMS). */
void kfac_memory_add(struct kfac_memory *m, const char *what, const char *key, double bytes);

/* The bytes this process may use: the least of the machine's physical memory, the
 * address-space limit (ulimit -v) and the cgroup's memory.max; 0 when none is known. */
double kfac_memory_available(void);

/* 0 when the tally fits in limit bytes (0: kfac_memory_available()); else KFAC_EINVAL
 * with the total, the limit and where it came from (limit_key when limit was given), and
 * every item with its bytes and key, largest first. */
int kfac_memory_check(const struct kfac_memory *m, double limit, const char *limit_key);

/* Whether the tally fits in limit bytes (0: kfac_memory_available()), setting no error. */
int kfac_memory_fits(const struct kfac_memory *m, double limit);

/* The tally as comment lines ("# ..."), largest item first, then the total against the
 * limit (limit and limit_key as for kfac_memory_check()). */
void kfac_memory_print(const struct kfac_memory *m, double limit, const char *limit_key, FILE *f);

#endif
