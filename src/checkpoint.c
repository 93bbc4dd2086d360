/*
 * checkpoint.c: state lists and the checkpoint file (see checkpoint.h): writing through a
 * temporary file, fsync and rename; reading in two passes, the first checking everything
 * (structure, item names and sizes, every value, CRC-32) before the second restores
 * anything.
 */
#include "kfac/checkpoint.h"
#include "kfac/file.h"
#include "kfac/rng.h"
#include "kfac/status.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

static const char magic[8] = {'K', 'F', 'A', 'C', 'C', 'K', 'P', 'T'};
enum { HEADER_BYTES = 8 + 4 + 8 + 8, MAX_CONFIG_TEXT = 1 << 20 };

static size_t type_size(enum kfac_state_type type)
{
    switch (type) {
    case KFAC_STATE_F32: return sizeof(float);
    case KFAC_STATE_F64:
    case KFAC_STATE_F64_NAN: return sizeof(double);
    case KFAC_STATE_INT: return sizeof(int);
    case KFAC_STATE_LONG: return sizeof(long);
    case KFAC_STATE_SIZE:
    case KFAC_STATE_PERM: return sizeof(size_t);
    case KFAC_STATE_RNG: return sizeof(struct kfac_rng);
    }
    abort();
}

void kfac_state_add_range(struct kfac_state *s, const char *name, enum kfac_state_type type,
                          void *ptr, size_t n, double lo, double hi)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 32;
        s->items = kfac_xrealloc(s->items, (size_t)s->cap * sizeof *s->items);
    }
    struct kfac_state_item *it = &s->items[s->n++];
    snprintf(it->name, sizeof it->name, "%s", name);
    it->type = type;
    it->ptr = ptr;
    it->n = n;
    it->bytes = n * type_size(type);
    it->lo = lo;
    it->hi = hi;
}

void kfac_state_add(struct kfac_state *s, const char *name, enum kfac_state_type type, void *ptr,
                    size_t n)
{
    double lo = -DBL_MAX, hi = DBL_MAX;
    if (type == KFAC_STATE_INT)
        lo = INT_MIN, hi = INT_MAX;
    else if (type == KFAC_STATE_LONG)
        lo = (double)LONG_MIN, hi = (double)LONG_MAX;
    else if (type == KFAC_STATE_SIZE)
        lo = 0, hi = (double)SIZE_MAX;
    kfac_state_add_range(s, name, type, ptr, n, lo, hi);
}

void kfac_state_free(struct kfac_state *s)
{
    if (!s)
        return;
    free(s->items);
    memset(s, 0, sizeof *s);
}

static uint64_t fnv1a(const char *text)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (const unsigned char *p = (const unsigned char *)text; *p; p++)
        h = (h ^ *p) * 0x100000001b3ULL;
    return h;
}

/* A stream that keeps the CRC-32 of what passes through it. */
struct crc_file {
    FILE *f;
    uLong crc;
    int failed;
};

static void put(struct crc_file *w, const void *p, size_t n)
{
    if (w->failed)
        return;
    const unsigned char *b = p;
    /* zlib's crc32 takes uInt lengths: feed it in pieces. */
    for (size_t off = 0; off < n; off += 1u << 30) {
        uInt k = (uInt)(n - off < (1u << 30) ? n - off : 1u << 30);
        w->crc = crc32(w->crc, b + off, k);
    }
    if (fwrite(p, 1, n, w->f) != n)
        w->failed = 1;
}

static void put_u32(struct crc_file *w, uint32_t v) { put(w, &v, sizeof v); }
static void put_u64(struct crc_file *w, uint64_t v) { put(w, &v, sizeof v); }

int kfac_checkpoint_write(const char *path, const char *config_text, const struct kfac_state *s)
{
    uint64_t payload = 4 + strlen(config_text) + 4;
    for (int i = 0; i < s->n; i++)
        payload += 4 + strlen(s->items[i].name) + 8 + s->items[i].bytes;
    char *tmp;
    int fd = kfac_file_temp(path, "the checkpoint", &tmp);
    if (fd < 0)
        return KFAC_EIO;
    struct crc_file w = {fdopen(fd, "wb"), crc32(0L, Z_NULL, 0), 0};
    int err = 0;
    if (!w.f) {
        err = errno;
        close(fd);
    } else {
        uint32_t version = KFAC_CHECKPOINT_VERSION;
        uint64_t hash = fnv1a(config_text);
        if (fwrite(magic, 1, 8, w.f) != 8 || fwrite(&version, 4, 1, w.f) != 1 ||
            fwrite(&hash, 8, 1, w.f) != 1 || fwrite(&payload, 8, 1, w.f) != 1)
            w.failed = 1;
        put_u32(&w, (uint32_t)strlen(config_text));
        put(&w, config_text, strlen(config_text));
        put_u32(&w, (uint32_t)s->n);
        for (int i = 0; i < s->n; i++) {
            const struct kfac_state_item *it = &s->items[i];
            put_u32(&w, (uint32_t)strlen(it->name));
            put(&w, it->name, strlen(it->name));
            put_u64(&w, it->bytes);
            put(&w, it->ptr, it->bytes);
        }
        uint32_t crc = (uint32_t)w.crc;
        if (!w.failed && fwrite(&crc, 4, 1, w.f) != 1)
            w.failed = 1;
        if (w.failed || fflush(w.f) != 0 || fsync(fileno(w.f)) != 0)
            err = errno ? errno : EIO;
        if (fclose(w.f) != 0 && !err)
            err = errno;
    }
    return kfac_file_commit(tmp, path, "the checkpoint", err);
}

/* The check of one item's values as they stream past: which element comes next, and for
 * a permutation the values seen so far (a bitmap of n bits). */
struct check {
    const struct kfac_state_item *it;
    size_t at;
    unsigned char *seen;
};

/* Checks the values p[0 … k) that follow the first c->at of the item; 0, or an error
 * naming path, the item, the element and its value. */
static int check_values(struct check *c, const char *path, const void *p, size_t k)
{
    const struct kfac_state_item *it = c->it;
    for (size_t i = 0; i < k; i++, c->at++) {
        double v = 0;
        switch (it->type) {
        case KFAC_STATE_F32: v = ((const float *)p)[i]; break;
        case KFAC_STATE_F64:
        case KFAC_STATE_F64_NAN: v = ((const double *)p)[i]; break;
        case KFAC_STATE_INT: v = ((const int *)p)[i]; break;
        case KFAC_STATE_LONG: v = (double)((const long *)p)[i]; break;
        case KFAC_STATE_SIZE: v = (double)((const size_t *)p)[i]; break;
        case KFAC_STATE_PERM: {
            size_t j = ((const size_t *)p)[i];
            if (j >= it->n || (c->seen[j / 8] >> (j % 8) & 1))
                return kfac_error(KFAC_EFORMAT, "%s: %s is not a permutation of the %zu cases: "
                                                "element %zu is %zu, %s",
                                  path, it->name, it->n, c->at, j,
                                  j >= it->n ? "out of range" : "a repeat");
            c->seen[j / 8] |= (unsigned char)(1u << (j % 8));
            continue;
        }
        case KFAC_STATE_RNG:
            if (!kfac_rng_valid(&((const struct kfac_rng *)p)[i]))
                return kfac_error(KFAC_EFORMAT, "%s: %s is not a state of the random number "
                                                "generator (element %zu)",
                                  path, it->name, c->at);
            continue;
        }
        if (it->type == KFAC_STATE_F64_NAN && isnan(v))
            continue;
        if (!(v >= it->lo && v <= it->hi)) {
            char shown[32];
            if (it->type == KFAC_STATE_INT || it->type == KFAC_STATE_LONG)
                snprintf(shown, sizeof shown, "%ld",
                         it->type == KFAC_STATE_INT ? ((const int *)p)[i] : ((const long *)p)[i]);
            else if (it->type == KFAC_STATE_SIZE)
                snprintf(shown, sizeof shown, "%zu", ((const size_t *)p)[i]);
            else
                snprintf(shown, sizeof shown, "%.9g", v);
            char range[64];
            if (!isfinite(v))
                snprintf(range, sizeof range, "not a finite number");
            else
                snprintf(range, sizeof range, "%s %g", v < it->lo ? "less than" : "more than",
                         v < it->lo ? it->lo : it->hi);
            return kfac_error(KFAC_EFORMAT, "%s: %s holds %s at element %zu, %s", path, it->name,
                              shown, c->at, range);
        }
    }
    return 0;
}

/* Reads the item's bytes into p (or into a buffer when p is NULL), adding them to the CRC
 * and checking its values; 0, KFAC_EFORMAT at a short read (short set) or a bad value. */
static int get_item(FILE *f, const char *path, uLong *crc, const struct kfac_state_item *it,
                    void *p, int *short_read)
{
    unsigned char buf[1 << 16];
    unsigned char *out = p;
    size_t size = it->n ? it->bytes / it->n : 1, n = it->bytes;
    size_t chunk = sizeof buf / size * size;
    struct check c = {it, 0, NULL};
    if (it->type == KFAC_STATE_PERM)
        c.seen = kfac_xcalloc(it->n / 8 + 1, 1);
    int rc = 0;
    *short_read = 0;
    while (!rc && n > 0) {
        size_t k = n < chunk ? n : chunk;
        unsigned char *dst = out ? out : buf;
        if (fread(dst, 1, k, f) != k) {
            *short_read = 1;
            rc = KFAC_EFORMAT;
            break;
        }
        *crc = crc32(*crc, dst, (uInt)k);
        rc = check_values(&c, path, dst, k / size);
        if (out)
            out += k;
        n -= k;
    }
    free(c.seen);
    return rc;
}

/* Reads n bytes of the payload into p, adding them to the CRC; 0 at a short read. */
static int get(FILE *f, uLong *crc, void *p, size_t n)
{
    if (fread(p, 1, n, f) != n)
        return 0;
    *crc = crc32(*crc, p, (uInt)n);
    return 1;
}

/* One pass over the payload: checks the items against s, restoring them when `restore`;
 * returns 0 or an error naming path (other_items set when the items are not s's).
 * config_text, when not NULL, receives the text. */
static int pass(FILE *f, const char *path, uint64_t payload, const struct kfac_state *s,
                int restore, char **config_text, int *other_items)
{
    uLong crc = crc32(0L, Z_NULL, 0);
    uint32_t text_len, n_items, name_len;
    uint64_t bytes;
    char name[64];
    if (!get(f, &crc, &text_len, 4) || text_len > MAX_CONFIG_TEXT || text_len > payload)
        return kfac_error(KFAC_EFORMAT, "%s: truncated or damaged checkpoint (configuration)",
                          path);
    char *text = kfac_xmalloc((size_t)text_len + 1);
    int ok = get(f, &crc, text, text_len);
    text[text_len] = '\0';
    if (config_text && ok)
        *config_text = text;
    else
        free(text);
    if (!ok || !get(f, &crc, &n_items, 4))
        return kfac_error(KFAC_EFORMAT, "%s: truncated checkpoint", path);
    if (n_items != (uint32_t)s->n)
        return *other_items = 1, kfac_error(KFAC_EFORMAT, "%s: the checkpoint holds %u pieces of state, this run has "
                                        "%d (made by another build or for another model)",
                          path, n_items, s->n);
    for (int i = 0; i < s->n; i++) {
        const struct kfac_state_item *it = &s->items[i];
        if (!get(f, &crc, &name_len, 4) || name_len >= sizeof name ||
            !get(f, &crc, name, name_len))
            return kfac_error(KFAC_EFORMAT, "%s: truncated or damaged checkpoint (item %d)", path,
                              i + 1);
        name[name_len] = '\0';
        if (!get(f, &crc, &bytes, 8))
            return kfac_error(KFAC_EFORMAT, "%s: truncated checkpoint (item %s)", path, name);
        if (strcmp(name, it->name) != 0 || bytes != it->bytes)
            return *other_items = 1, kfac_error(KFAC_EFORMAT, "%s: item %d is %s of %llu bytes where this run has %s "
                                            "of %zu bytes (made for another model or optimiser)",
                              path, i + 1, name, (unsigned long long)bytes, it->name, it->bytes);
        int short_read, rc = get_item(f, path, &crc, it, restore ? it->ptr : NULL, &short_read);
        if (short_read)
            return kfac_error(KFAC_EFORMAT, "%s: truncated checkpoint (item %s)", path, name);
        if (rc)
            return rc;
    }
    uint32_t stored;
    if (fread(&stored, 4, 1, f) != 1)
        return kfac_error(KFAC_EFORMAT, "%s: truncated checkpoint (no CRC)", path);
    if (stored != (uint32_t)crc)
        return kfac_error(KFAC_EFORMAT, "%s: the checkpoint is corrupted (CRC-32 %08x, stored "
                                        "%08x)",
                          path, (unsigned)crc, (unsigned)stored);
    if (fgetc(f) != EOF)
        return kfac_error(KFAC_EFORMAT, "%s: trailing bytes after the checkpoint", path);
    return 0;
}

/* Opens path and checks its header against the file's real size. */
static int open_checked(const char *path, FILE **out, uint64_t *payload, uint64_t *hash_out)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return kfac_error(KFAC_EIO, "%s: cannot open the checkpoint: %s", path, strerror(errno));
    struct stat st;
    char m[8];
    uint32_t version = 0;
    uint64_t hash;
    if (fstat(fileno(f), &st) != 0 || fread(m, 1, 8, f) != 8 || memcmp(m, magic, 8) != 0) {
        fclose(f);
        return kfac_error(KFAC_EFORMAT, "%s: not a kfac-train checkpoint (no KFACCKPT magic)",
                          path);
    }
    if (fread(&version, 4, 1, f) != 1 || version != KFAC_CHECKPOINT_VERSION) {
        fclose(f);
        return kfac_error(KFAC_EFORMAT, "%s: checkpoint format version %u; this kfac-train reads "
                                        "version %d",
                          path, (unsigned)version, KFAC_CHECKPOINT_VERSION);
    }
    if (fread(&hash, 8, 1, f) != 1 || fread(payload, 8, 1, f) != 1) {
        fclose(f);
        return kfac_error(KFAC_EFORMAT, "%s: truncated checkpoint (%lld bytes, a short header)",
                          path, (long long)st.st_size);
    }
    if (st.st_size < HEADER_BYTES + 4 || *payload != (uint64_t)st.st_size - HEADER_BYTES - 4) {
        int longer = st.st_size >= HEADER_BYTES + 4 &&
                     *payload < (uint64_t)st.st_size - HEADER_BYTES - 4;
        fclose(f);
        return kfac_error(KFAC_EFORMAT, "%s: %s checkpoint (%lld bytes where the header "
                                        "promises %llu)",
                          path, longer ? "damaged or overlong" : "truncated",
                          (long long)st.st_size,
                          (unsigned long long)(*payload + HEADER_BYTES + 4));
    }
    *out = f;
    *hash_out = hash;
    return 0;
}

int kfac_checkpoint_open(const char *path, const struct kfac_state *s, struct kfac_checkpoint *ck)
{
    memset(ck, 0, sizeof *ck);
    FILE *f;
    uint64_t payload, hash;
    int rc = open_checked(path, &f, &payload, &hash);
    if (rc)
        return rc;
    rc = pass(f, path, payload, s, 0, &ck->config_text, &ck->other_items);
    fclose(f);
    if (ck->config_text && fnv1a(ck->config_text) != hash) {
        ck->other_items = 0;
        rc = kfac_error(KFAC_EFORMAT, "%s: the checkpoint's configuration does not match its hash",
                        path);
    }
    if (rc && ck->other_items)
        return rc; /* the caller may say which configuration keys differ */
    if (rc) {
        free(ck->config_text);
        ck->config_text = NULL;
        return rc;
    }
    ck->path = kfac_xstrdup(path);
    return 0;
}

int kfac_checkpoint_restore(const struct kfac_checkpoint *ck, const struct kfac_state *s)
{
    FILE *f;
    uint64_t payload, hash;
    int rc = open_checked(ck->path, &f, &payload, &hash);
    if (rc)
        return rc;
    int other_items = 0;
    rc = pass(f, ck->path, payload, s, 1, NULL, &other_items);
    fclose(f);
    return rc;
}

void kfac_checkpoint_close(struct kfac_checkpoint *ck)
{
    if (!ck)
        return;
    free(ck->path);
    free(ck->config_text);
    memset(ck, 0, sizeof *ck);
}

/* The next line of text (without its newline) into line, advancing *p; 0 at the end. */
static int next_line(const char **p, char *line, size_t size)
{
    if (!**p)
        return 0;
    const char *nl = strchr(*p, '\n');
    size_t n = nl ? (size_t)(nl - *p) : strlen(*p);
    snprintf(line, size, "%.*s", (int)(n < size ? n : size - 1), *p);
    *p += n + (nl ? 1 : 0);
    return 1;
}

/* The value of key in a "key = value" text, or NULL. */
static const char *value_of(const char *text, const char *key, char *buf, size_t size)
{
    char line[1024];
    size_t k = strlen(key);
    while (next_line(&text, line, sizeof line))
        if (strncmp(line, key, k) == 0 && strncmp(line + k, " = ", 3) == 0) {
            snprintf(buf, size, "%s", line + k + 3);
            return buf;
        }
    return NULL;
}

char *kfac_config_text_diff(const char *was, const char *now, const char *defaults)
{
    char *out = NULL;
    size_t len = 0;
    const char *texts[2] = {was, now};
    for (int t = 0; t < 2; t++) {
        const char *p = texts[t];
        char line[1024], key[512], a[512], b[512];
        while (next_line(&p, line, sizeof line)) {
            const char *eq = strstr(line, " = ");
            if (!eq)
                continue;
            snprintf(key, sizeof key, "%.*s", (int)(eq - line), line);
            const char *va = value_of(was, key, a, sizeof a), *vb = value_of(now, key, b, sizeof b);
            int in_was = va != NULL;
            if (!va && defaults)
                va = value_of(defaults, key, a, sizeof a);
            /* Each differing key once: from the first text, or from the second when the first
             * lacks it. */
            if ((va && vb && strcmp(va, vb) == 0) || (t == 1 && in_was))
                continue;
            size_t add = strlen(key) + strlen(va ? va : "(none)") + strlen(vb ? vb : "(none)") + 32;
            out = kfac_xrealloc(out, len + add);
            len += (size_t)snprintf(out + len, add, "%s%s (was %s, now %s)", len ? "; " : "", key,
                                    va ? va : "(none)", vb ? vb : "(none)");
        }
    }
    return out;
}
