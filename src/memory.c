/*
 * memory.c: the memory tally of a run and the memory it may use (see memory.h).
 */
#include "kfac/memory.h"
#include "kfac/status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

void kfac_memory_add(struct kfac_memory *m, const char *what, const char *key, double bytes)
{
    if (m->n == KFAC_MEMORY_MAX_ITEMS)
        abort();
    snprintf(m->items[m->n].what, sizeof m->items[m->n].what, "%s", what);
    m->items[m->n].key = key;
    m->items[m->n].bytes = bytes;
    m->n++;
}

/* The bytes of all the items. */
static double total_of(const struct kfac_memory *m)
{
    double t = 0;
    for (int i = 0; i < m->n; i++)
        t += m->items[i].bytes;
    return t;
}

/* The memory.max of this process's cgroup (v2), or 0 when there is none or no limit. */
static double cgroup_limit(void)
{
    FILE *f = fopen("/proc/self/cgroup", "r");
    char line[512], path[600];
    double limit = 0;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "0::", 3) == 0) {
            line[strcspn(line, "\n")] = '\0';
            snprintf(path, sizeof path, "/sys/fs/cgroup%s/memory.max", line + 3);
            FILE *g = fopen(path, "r");
            char value[64];
            if (g && fgets(value, sizeof value, g) && strncmp(value, "max", 3) != 0)
                limit = strtod(value, NULL);
            if (g)
                fclose(g);
        }
    if (f)
        fclose(f);
    return limit;
}

double kfac_memory_available(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    double avail = pages > 0 && page > 0 ? (double)pages * (double)page : 0;
    struct rlimit r;
    if (getrlimit(RLIMIT_AS, &r) == 0 && r.rlim_cur != RLIM_INFINITY &&
        (avail == 0 || (double)r.rlim_cur < avail))
        avail = (double)r.rlim_cur;
    double cg = cgroup_limit();
    if (cg > 0 && (avail == 0 || cg < avail))
        avail = cg;
    return avail;
}

/* "12.3 GiB", "512.0 MiB", "100 bytes" into buf. */
static const char *format(double bytes, char *buf, unsigned size)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    if (bytes < 1024) {
        snprintf(buf, size, "%.0f bytes", bytes);
        return buf;
    }
    int u = 0;
    for (bytes /= 1024; bytes >= 1024 && u < 5; u++)
        bytes /= 1024;
    snprintf(buf, size, "%.1f %s", bytes, units[u]);
    return buf;
}

/* The limit in force (limit, or kfac_memory_available() when 0) and where it came from,
 * into from (size bytes). */
static double limit_of(double limit, const char *limit_key, char *from, unsigned size)
{
    char b[32];
    if (limit > 0) {
        snprintf(from, size, "%s (%s)", limit_key, format(limit, b, sizeof b));
        return limit;
    }
    limit = kfac_memory_available();
    snprintf(from, size, "the %s this machine lets the process use", format(limit, b, sizeof b));
    return limit;
}

/* order (m->n) = the items' indices, largest first. */
static void sort_items(const struct kfac_memory *m, int *order)
{
    for (int i = 0; i < m->n; i++) {
        int j = i;
        for (; j > 0 && m->items[order[j - 1]].bytes < m->items[i].bytes; j--)
            order[j] = order[j - 1];
        order[j] = i;
    }
}

int kfac_memory_fits(const struct kfac_memory *m, double limit)
{
    if (limit <= 0)
        limit = kfac_memory_available();
    return limit <= 0 || total_of(m) <= limit;
}

void kfac_memory_print(const struct kfac_memory *m, double limit, const char *limit_key, FILE *f)
{
    int order[KFAC_MEMORY_MAX_ITEMS];
    char a[32], from[96];
    sort_items(m, order);
    for (int i = 0; i < m->n; i++) {
        const struct kfac_memory_item *it = &m->items[order[i]];
        fprintf(f, "#   %-40s %12s  (%s)\n", it->what, format(it->bytes, a, sizeof a), it->key);
    }
    limit = limit_of(limit, limit_key, from, sizeof from);
    fprintf(f, "#   %-40s %12s  of %s\n", "total, at least", format(total_of(m), a, sizeof a),
            limit > 0 ? from : "an unknown limit");
}

int kfac_memory_check(const struct kfac_memory *m, double limit, const char *limit_key)
{
    double total = total_of(m);
    char a[32], from[96];
    limit = limit_of(limit, limit_key, from, sizeof from);
    if (limit <= 0 || total <= limit)
        return 0;
    int order[KFAC_MEMORY_MAX_ITEMS];
    sort_items(m, order);
    char list[1024];
    size_t used = 0;
    list[0] = '\0';
    for (int i = 0; i < m->n && used < sizeof list; i++) {
        const struct kfac_memory_item *it = &m->items[order[i]];
        used += (size_t)snprintf(list + used, sizeof list - used, "%s%s %s (%s)", i ? "; " : "",
                                 it->what, format(it->bytes, a, sizeof a), it->key);
    }
    return kfac_error(KFAC_EINVAL, "the run needs at least %s, more than %s: %s; change %s first",
                      format(total, a, sizeof a), from, list, m->items[order[0]].key);
}
