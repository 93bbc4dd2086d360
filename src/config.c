/*
 * config.c: the table of configuration keys (type, default, range, choices), parsing
 * through libinih with line numbers, overrides, validation and printing (see config.h).
 */
#include "kfac/config.h"
#include "kfac/net.h"
#include "kfac/status.h"

#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* More than any configuration needs; a bigger file is something else. */
enum { MAX_CONFIG_BYTES = 1 << 20 };

/* K_CASES: an int, or "auto" for 0. */
enum key_type { K_INT, K_LONG, K_DOUBLE, K_BYTES, K_BOOL, K_STRING, K_PATH, K_ENUM, K_CASES };

struct key {
    const char *section, *name;
    enum key_type type;
    size_t offset;
    const char *def;
    double min, max;                 /* numeric range, inclusive */
    const char *const *choices;      /* K_ENUM: NULL-terminated */
};

static const char *const task_choices[] = {"autoencoder", "classification", "regression", NULL};
static const char *const loss_choices[] = {"auto", "bernoulli", "squared", "softmax", NULL};
static const char *const init_choices[] = {"sparse", "glorot", "he", NULL};
static const char *const optim_choices[] = {"sgd", "kfac", NULL};
static const char *const curvature_choices[] = {"block-diagonal", "kfoc", "kfac-tridiag",
                                                 NULL};
static const char *const fisher_choices[] = {"sampled", "empirical", NULL};
static const char *const step_choices[] = {"model", "fixed", NULL};
static const char *const gamma_rule_choices[] = {"model", "objective", NULL};
static const char *const pi_choices[] = {"trace", "frobenius", NULL};
/* In the order of enum kfac_inverse_method. */
static const char *const inverse_choices[] = {"auto", "cholesky", "eigen", NULL};
/* In the order of enum kfac_inverse_precision. */
static const char *const precision_choices[] = {"double", "float", NULL};
static const char *const start_choices[] = {"paper", "warmup", NULL};
/* In the order of enum kfac_preset. */
static const char *const preset_choices[] = {"none", "kfac3", NULL};
static const char *const schedule_choices[] = {"fixed", "exponential", NULL};
static const char *const momentum_choices[] = {"fixed", "sutskever", NULL};
static const char *const progress_choices[] = {"auto", "on", "off", NULL};
/* In the order of enum kfac_kfoc_normalise and enum kfac_kfoc_average. */
static const char *const normalise_choices[] = {"activation", "gradient", NULL};
static const char *const average_choices[] = {"exponential", "running", NULL};
static const char *const precondition_choices[] = {"every-rank", "by-layer", NULL};
static const char *const shard_choices[] = {"none", "rank", NULL};

#define F(field) offsetof(struct kfac_config, field)
/* A key added later takes as its default how runs went before it: a checkpoint written
 * before it resumes as one that holds the default (kfac_config_text_diff()). */
static const struct key keys[] = {
    {"data", "train", K_PATH, F(data.train), "", 0, 0, NULL},
    {"data", "train_targets", K_PATH, F(data.train_targets), "", 0, 0, NULL},
    {"data", "test", K_PATH, F(data.test), "", 0, 0, NULL},
    {"data", "test_targets", K_PATH, F(data.test_targets), "", 0, 0, NULL},
    {"data", "task", K_ENUM, F(data.task), "autoencoder", 0, 0, task_choices},
    {"data", "target_columns", K_STRING, F(data.target_columns), "", 0, 0, NULL},
    {"data", "test_fraction", K_DOUBLE, F(data.test_fraction), "0", 0, 0.99, NULL},
    {"data", "standardize", K_BOOL, F(data.standardize), "false", 0, 0, NULL},
    {"data", "max_cases", K_LONG, F(data.max_cases), "0", 0, 1e12, NULL},
    {"data", "image_size", K_INT, F(data.image_size), "0", 0, 4096, NULL},
    {"data", "classes", K_INT, F(data.n_classes), "0", 0, 1e6, NULL},
    {"data", "shard", K_ENUM, F(data.shard), "none", 0, 0, shard_choices},
    {"model", "layers", K_STRING, F(layers), "", 0, 0, NULL},
    {"model", "loss", K_ENUM, F(loss), "auto", 0, 0, loss_choices},
    {"model", "init", K_ENUM, F(init), "sparse", 0, 0, init_choices},
    {"model", "sparse_connections", K_INT, F(sparse_connections), "15", 1, 1e6, NULL},
    {"optimizer", "type", K_ENUM, F(optim.type), "sgd", 0, 0, optim_choices},
    {"optimizer", "preset", K_ENUM, F(preset), "none", 0, 0, preset_choices},
    {"optimizer", "learning_rate", K_DOUBLE, F(optim.learning_rate), "0.01", 1e-12, 1e6, NULL},
    {"optimizer", "momentum", K_DOUBLE, F(optim.momentum), "0.9", 0, 0.9999, NULL},
    {"optimizer", "momentum_schedule", K_ENUM, F(optim.momentum_schedule), "fixed", 0, 0,
     momentum_choices},
    {"optimizer", "l2", K_DOUBLE, F(optim.l2), "0", 0, 1e6, NULL},
    {"optimizer", "curvature", K_ENUM, F(optim.curvature), "block-diagonal", 0, 0,
     curvature_choices},
    {"optimizer", "fisher", K_ENUM, F(optim.fisher), "sampled", 0, 0, fisher_choices},
    {"optimizer", "stats_fraction", K_DOUBLE, F(optim.stats_fraction), "0.125", 1e-6, 1, NULL},
    {"optimizer", "model_fraction", K_DOUBLE, F(optim.model_fraction), "1", 1e-6, 1, NULL},
    {"optimizer", "stats_decay", K_DOUBLE, F(optim.stats_decay), "0.95", 0, 0.999999, NULL},
    {"optimizer", "lambda", K_DOUBLE, F(optim.lambda), "150", 0, 1e12, NULL},
    {"optimizer", "lambda_min", K_DOUBLE, F(optim.lambda_min), "0", 0, 1e12, NULL},
    {"optimizer", "lambda_every", K_LONG, F(optim.lambda_every), "5", 0, 1e12, NULL},
    {"optimizer", "start", K_ENUM, F(optim.start), "warmup", 0, 0, start_choices},
    {"optimizer", "lambda_warmup", K_DOUBLE, F(optim.lambda_warmup), "0.5", 1e-3, 1, NULL},
    {"optimizer", "lambda_warmup_max", K_LONG, F(optim.lambda_warmup_max), "20", 1, 1e12, NULL},
    {"optimizer", "gamma", K_DOUBLE, F(optim.gamma), "0", 0, 1e12, NULL},
    {"optimizer", "gamma_min", K_DOUBLE, F(optim.gamma_min), "0", 0, 1e12, NULL},
    {"optimizer", "gamma_max", K_DOUBLE, F(optim.gamma_max), "1", 1e-30, 1e12, NULL},
    {"optimizer", "gamma_every", K_LONG, F(optim.gamma_every), "20", 0, 1e12, NULL},
    {"optimizer", "gamma_rule", K_ENUM, F(optim.gamma_rule), "model", 0, 0, gamma_rule_choices},
    {"optimizer", "inverse_every", K_LONG, F(optim.inverse_every), "20", 1, 1e12, NULL},
    {"optimizer", "inverse", K_ENUM, F(optim.inverse), "auto", 0, 0, inverse_choices},
    {"optimizer", "inverse_precision", K_ENUM, F(optim.inverse_precision), "double", 0, 0,
     precision_choices},
    {"optimizer", "pi", K_ENUM, F(optim.pi_norm), "trace", 0, 0, pi_choices},
    {"optimizer", "step", K_ENUM, F(optim.step_rule), "model", 0, 0, step_choices},
    {"optimizer", "use_momentum", K_BOOL, F(optim.use_momentum), "true", 0, 0, NULL},
    {"optimizer", "kfoc_iterations", K_INT, F(optim.kfoc_max_iter), "100", 1, 1e6, NULL},
    {"optimizer", "kfoc_tolerance", K_DOUBLE, F(optim.kfoc_tol), "1e-5", 0, 1, NULL},
    {"optimizer", "kfoc_normalise", K_ENUM, F(optim.kfoc_normalise), "gradient", 0, 0,
     normalise_choices},
    {"optimizer", "kfoc_average", K_ENUM, F(optim.kfoc_average), "exponential", 0, 0,
     average_choices},
    {"train", "iterations", K_LONG, F(iterations), "1000", 1, 1e12, NULL},
    {"train", "batch_size", K_INT, F(batch_size), "1000", 1, 1e7, NULL},
    {"train", "batch_schedule", K_ENUM, F(batch_schedule), "fixed", 0, 0, schedule_choices},
    {"train", "batch_full_at", K_LONG, F(batch_full_at), "500", 2, 1e12, NULL},
    {"train", "seed", K_LONG, F(seed), "1", 0, 9.0e15, NULL},
    {"train", "threads", K_INT, F(threads), "0", 0, 1024, NULL},
    {"train", "polyak_start", K_LONG, F(polyak_start), "0", 0, 1e12, NULL},
    {"train", "polyak_decay", K_DOUBLE, F(polyak_decay), "0.99", 0, 0.999999, NULL},
    {"train", "max_seconds", K_DOUBLE, F(max_seconds), "0", 0, 1e9, NULL},
    {"train", "retries", K_INT, F(retries), "3", 0, 100, NULL},
    {"train", "checkpoint", K_PATH, F(checkpoint), "", 0, 0, NULL},
    {"train", "checkpoint_every", K_LONG, F(checkpoint_every), "0", 0, 1e12, NULL},
    {"train", "checkpoint_seconds", K_DOUBLE, F(checkpoint_seconds), "0", 0, 1e9, NULL},
    {"train", "checkpoint_keep", K_INT, F(checkpoint_keep), "2", 1, 1000, NULL},
    {"train", "inject_nan", K_STRING, F(inject_nan), "", 0, 0, NULL},
    {"train", "memory_limit", K_BYTES, F(memory_limit), "0", 0, 1125899906842624.0, NULL},
    {"train", "chunk_size", K_CASES, F(chunk_size), "auto", 0, 1e7, NULL},
    {"train", "device", K_STRING, F(device), "cpu", 0, 0, NULL},
    {"train", "rank_check_every", K_LONG, F(rank_check_every), "100", 0, 1e12, NULL},
    {"train", "preconditioning", K_ENUM, F(optim.by_layer), "by-layer", 0, 0,
     precondition_choices},
    {"log", "file", K_PATH, F(log_file), "", 0, 0, NULL},
    {"log", "eval_every", K_LONG, F(eval_every), "100", 0, 1e12, NULL},
    {"log", "eval_batch", K_INT, F(eval_batch), "1000", 1, 1e7, NULL},
    {"log", "fisher_error_every", K_LONG, F(fisher_error_every), "0", 0, 1e12, NULL},
    {"log", "fisher_error_cases", K_INT, F(fisher_error_cases), "100", 1, 1e6, NULL},
    {"log", "fisher_export", K_PATH, F(fisher_export), "", 0, 0, NULL},
    {"log", "progress", K_ENUM, F(progress), "auto", 0, 0, progress_choices},
    {"study", "seeds", K_INT, F(study_seeds), "10", 1, 1e5, NULL},
    {"study", "batch_sizes", K_STRING, F(study_batch_sizes), "1,10,100,full", 0, 0, NULL},
    {"study", "layers", K_STRING, F(study_layers), "", 0, 0, NULL},
    {"study", "kfoc_normalise", K_ENUM, F(study_kfoc_normalise), "gradient", 0, 0,
     normalise_choices},
    {"study", "export", K_PATH, F(study_export), "", 0, 0, NULL},
    {"study", "heatmap_layers", K_STRING, F(study_heatmap_layers), "", 0, 0, NULL},
    {"study", "heatmap_cases", K_INT, F(study_heatmap_cases), "1000", 1, 1e7, NULL},
};
#undef F
#define N_KEYS (sizeof keys / sizeof *keys)

/* optimizer.preset = kfac3: Martens' KFAC3 constants (REFERENCE.md §2-§5) for every
 * [optimizer] key that is the algorithm's rather than the problem's; λ0, η, the curvature
 * variant, the layers and the batch schedule stay the configuration's. */
static const struct {
    const char *name, *value;
} kfac3_preset[] = {
    {"fisher", "sampled"},     {"stats_fraction", "0.125"}, {"model_fraction", "1"},
    {"stats_decay", "0.95"},   {"lambda_min", "0"},         {"lambda_every", "5"},
    {"start", "paper"},        {"gamma", "0"},              {"gamma_min", "0"},
    {"gamma_max", "1"},        {"gamma_every", "20"},       {"gamma_rule", "model"},
    {"inverse_every", "20"},   {"pi", "trace"},             {"step", "model"},
    {"use_momentum", "true"},  {"inverse_precision", "double"},
};

static const struct key *find_key(const char *section, const char *name)
{
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

static int known_section(const char *section)
{
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(keys[i].section, section) == 0)
            return 1;
    return 0;
}

/* Lists the keys of a section into buf, for "expected one of" messages. */
static void section_keys(const char *section, char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = 0;
    for (size_t i = 0; i < N_KEYS && used < size; i++)
        if (strcmp(keys[i].section, section) == 0)
            used += (size_t)snprintf(buf + used, size - used, "%s%s", used ? ", " : "", keys[i].name);
}

static void choices_list(const char *const *choices, char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = 0;
    for (int i = 0; choices[i] && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%s", i ? ", " : "", choices[i]);
}

/* Joins a relative path to the directory of base (a file path); returns a new string. */
static char *resolve_path(const char *value, const char *base)
{
    const char *slash = base ? strrchr(base, '/') : NULL;
    if (!*value || value[0] == '/' || !slash || strcmp(value, "-") == 0) /* "-": a stream */
        return kfac_xstrdup(value);
    size_t dir = (size_t)(slash - base) + 1, n = strlen(value);
    char *p = kfac_xmalloc(dir + n + 1);
    memcpy(p, base, dir);
    memcpy(p + dir, value, n + 1);
    return p;
}

/* Sets one key from text; base is the file the value came from (NULL: the command line).
 * Errors say what was expected, without the location (the caller prefixes it). */
static int set_value(struct kfac_config *c, const struct key *k, const char *value,
                     const char *base)
{
    void *field = (char *)c + k->offset;
    char *end;
    errno = 0;
    switch (k->type) {
    case K_CASES:
        if (strcmp(value, "auto") == 0) {
            *(int *)field = 0;
            return 0;
        }
        /* fall through */
    case K_INT:
    case K_LONG: {
        long long v = strtoll(value, &end, 10);
        if (end == value || *end || errno || v < k->min || v > k->max)
            return kfac_error(KFAC_EINVAL, "%s.%s = '%s': expected %san integer from %.0f to %.0f",
                              k->section, k->name, value, k->type == K_CASES ? "auto or " : "",
                              k->min, k->max);
        if (k->type != K_LONG)
            *(int *)field = (int)v;
        else
            *(long *)field = (long)v;
        return 0;
    }
    case K_DOUBLE: {
        /* strtod also reads hexadecimal ("0x10" is 16), which no one means in a config. */
        double v = strpbrk(value, "xX") ? NAN : strtod(value, &end);
        if (isnan(v) || end == value || *end || errno || !isfinite(v) || v < k->min || v > k->max)
            return kfac_error(KFAC_EINVAL, "%s.%s = '%s': expected a decimal number from %g to %g",
                              k->section, k->name, value, k->min, k->max);
        *(double *)field = v;
        return 0;
    }
    case K_BYTES: {
        /* A decimal number of bytes, optionally with K, M, G or T (powers of 1024). */
        static const char suffixes[] = "KMGT";
        double bytes = strpbrk(value, "xX") ? NAN : strtod(value, &end);
        const char *unit = !isnan(bytes) && *end ? strchr(suffixes, *end) : NULL;
        if (unit && *unit && end[1] == '\0') {
            for (const char *u = suffixes; u <= unit; u++)
                bytes *= 1024;
            end++;
        }
        if (isnan(bytes) || end == value || *end || errno || bytes < k->min || bytes > k->max)
            return kfac_error(KFAC_EINVAL, "%s.%s = '%s': expected a size in bytes with an "
                                           "optional K, M, G or T, at most 1024T",
                              k->section, k->name, value);
        *(double *)field = floor(bytes);
        return 0;
    }
    case K_BOOL:
        if (strcmp(value, "true") == 0 || strcmp(value, "yes") == 0 || strcmp(value, "1") == 0)
            *(int *)field = 1;
        else if (strcmp(value, "false") == 0 || strcmp(value, "no") == 0 ||
                 strcmp(value, "0") == 0)
            *(int *)field = 0;
        else
            return kfac_error(KFAC_EINVAL, "%s.%s = '%s': expected true or false", k->section,
                              k->name, value);
        return 0;
    case K_ENUM:
        for (int i = 0; k->choices[i]; i++)
            if (strcmp(value, k->choices[i]) == 0) {
                *(int *)field = i;
                return 0;
            }
        {
            char list[256];
            choices_list(k->choices, list, sizeof list);
            return kfac_error(KFAC_EINVAL, "%s.%s = '%s': expected one of %s", k->section, k->name,
                              value, list);
        }
    case K_STRING:
    case K_PATH: {
        if (strcmp(k->section, "model") == 0 && strcmp(k->name, "layers") == 0 && *value) {
            /* The layers must parse and fit together. */
            struct kfac_layer_spec *specs;
            struct kfac_shape in;
            int n, rc = kfac_net_parse_layers(value, &in, &specs, &n);
            if (!rc) {
                rc = kfac_net_check_layers(&in, specs, n);
                free(specs);
            }
            if (rc)
                return kfac_error(KFAC_EINVAL, "%s.%s: %s", k->section, k->name, kfac_last_error());
        }
        if (strcmp(k->name, "inject_nan") == 0 && *value) {
            long at, times;
            if (kfac_parse_injection(value, &at, &times))
                return kfac_error(KFAC_EINVAL,
                                  "%s.%s = '%s': expected ITERATION[:TRIES] or "
                                  "ITERATION:all",
                                  k->section, k->name, value);
        }
        char **s = field;
        free(*s);
        *s = k->type == K_PATH ? resolve_path(value, base) : kfac_xstrdup(value);
        if (!**s) {
            free(*s);
            *s = NULL;
        }
        return 0;
    }
    }
    return 0;
}

static const struct key *preset_key(void)
{
    return find_key("optimizer", "preset");
}

/* Gives the keys of c's preset their preset values, except those that keep[] marks
 * (indexed like keys[]; NULL: none). */
static void apply_preset(struct kfac_config *c, const unsigned char *keep)
{
    if (c->preset != KFAC_PRESET_KFAC3)
        return;
    for (size_t i = 0; i < sizeof kfac3_preset / sizeof *kfac3_preset; i++) {
        const struct key *k = find_key("optimizer", kfac3_preset[i].name);
        if (!k)
            abort(); /* a preset naming no key is a bug in its table */
        if (keep && keep[k - keys])
            continue;
        if (set_value(c, k, kfac3_preset[i].value, NULL))
            abort(); /* as is a value out of the key's range */
    }
}

int kfac_parse_injection(const char *spec, long *at, long *times)
{
    char *end;
    errno = 0;
    *at = strtol(spec, &end, 10);
    if (end == spec || *at < 1 || errno)
        return KFAC_EINVAL;
    if (!*end) {
        *times = 1;
        return 0;
    }
    if (*end != ':')
        return KFAC_EINVAL;
    if (strcmp(end + 1, "all") == 0) {
        *times = LONG_MAX;
        return 0;
    }
    char *e2;
    *times = strtol(end + 1, &e2, 10);
    return e2 == end + 1 || *e2 || *times < 1 || errno ? KFAC_EINVAL : 0;
}

void kfac_config_defaults(struct kfac_config *c)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < N_KEYS; i++)
        if (set_value(c, &keys[i], keys[i].def, NULL))
            abort(); /* a default outside its own range is a bug in the table */
}

struct parse_ctx {
    struct kfac_config *c;
    const char *path;
    FILE *f;
    int line;
    int section_line;         /* line of the latest [section] header */
    int err_line;             /* line of the first error the handler or reader found */
    size_t bytes;             /* read so far: at most MAX_CONFIG_BYTES (the file may grow) */
    char msg[768];
    unsigned char seen[N_KEYS];
};

/* Keeps the first error and its line; returns 0, inih's "stop" for a handler. */
static int fail_on_line(struct parse_ctx *p, int line, const char *msg)
{
    if (!p->err_line) {
        p->err_line = line;
        snprintf(p->msg, sizeof p->msg, "%s", msg);
    }
    return 0;
}

static int fail_at(struct parse_ctx *p, const char *msg)
{
    return fail_on_line(p, p->line, msg);
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
    struct parse_ctx *p = user;
    char msg[768];
    if (!known_section(section)) {
        snprintf(msg, sizeof msg,
                 "unknown section [%s] (expected data, model, optimizer, train, log or study)",
                 section);
        return fail_on_line(p, *section ? p->section_line : p->line, msg);
    }
    const struct key *k = find_key(section, name);
    if (!k) {
        char list[512];
        section_keys(section, list, sizeof list);
        snprintf(msg, sizeof msg, "unknown key %s.%s (keys of this section: %s)", section, name,
                 list);
        return fail_at(p, msg);
    }
    if (p->seen[k - keys]++) {
        snprintf(msg, sizeof msg, "%s.%s is given twice", section, name);
        return fail_at(p, msg);
    }
    if (set_value(p->c, k, value, p->path))
        return fail_at(p, kfac_last_error());
    return 1;
}

/* Reads one line for inih, counting lines and refusing ones longer than inih can take and
 * ones with a NUL byte (inih would ignore what follows it). */
static char *reader(char *str, int num, void *stream)
{
    struct parse_ctx *p = stream;
    int n = 0, ch = 0, nul = 0;
    while (n < num - 1 && (ch = getc(p->f)) != EOF) {
        nul |= ch == '\0';
        str[n++] = (char)ch;
        if (ch == '\n')
            break;
    }
    p->bytes += (size_t)n;
    if (n == 0 || p->bytes > MAX_CONFIG_BYTES)
        return NULL;
    str[n] = '\0';
    p->line++;
    if (nul) {
        fail_at(p, "a NUL byte in the line (not a text file?)");
        str[0] = '\0';
    }
    if (str[strspn(str, " \t")] == '[')
        p->section_line = p->line;
    if (n == num - 1 && str[n - 1] != '\n' && (ch = getc(p->f)) != EOF) {
        ungetc(ch, p->f);
        fail_at(p, "line longer than 198 characters");
        while ((ch = getc(p->f)) != EOF && ch != '\n')
            ;
        str[0] = '\0';
    }
    return str;
}

/* What a file that is not a regular file is, for messages. */
static const char *file_kind(mode_t mode)
{
    if (S_ISDIR(mode))
        return "a directory";
    if (S_ISCHR(mode) || S_ISBLK(mode))
        return "a device";
    if (S_ISFIFO(mode))
        return "a pipe";
    if (S_ISSOCK(mode))
        return "a socket";
    return "not a regular file";
}

int kfac_config_load(struct kfac_config *c, const char *path)
{
    struct parse_ctx p = {.c = c, .path = path};
    /* A device (/dev/zero) would be read for ever, a pipe would block the open and a
     * directory reads as empty: look before reading. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        int err = errno;
        if (fd >= 0)
            close(fd);
        return kfac_error(KFAC_EIO, "%s: cannot open: %s", path, strerror(err));
    }
    int rc = 0;
    if (!S_ISREG(st.st_mode))
        rc = kfac_error(KFAC_EINVAL, "%s: %s, not a configuration file", path,
                        file_kind(st.st_mode));
    else if (st.st_size > MAX_CONFIG_BYTES)
        rc = kfac_error(KFAC_EINVAL, "%s: %lld bytes is not a configuration (at most %d)", path,
                        (long long)st.st_size, MAX_CONFIG_BYTES);
    else if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0 || !(p.f = fdopen(fd, "r")))
        rc = kfac_error(KFAC_EIO, "%s: cannot read: %s", path, strerror(errno));
    if (rc) {
        close(fd);
        return rc;
    }
    rc = ini_parse_stream(reader, &p, handler, &p);
    fclose(p.f);
    if (p.err_line && (rc <= 0 || p.err_line <= rc))
        return kfac_error(KFAC_EINVAL, "%s:%d: %s", path, p.err_line, p.msg);
    if (rc > 0)
        return kfac_error(KFAC_EINVAL, "%s:%d: expected 'key = value', '[section]' or a comment",
                          path, rc);
    if (rc < 0)
        return kfac_error(KFAC_EIO, "%s: cannot be parsed (out of memory)", path);
    if (p.seen[preset_key() - keys])
        apply_preset(c, p.seen); /* the file's own keys win, wherever they stand in it */
    return 0;
}

int kfac_config_set(struct kfac_config *c, const char *assignment)
{
    const char *dot = strchr(assignment, '.'), *eq = strchr(assignment, '=');
    if (!dot || !eq || dot > eq)
        return kfac_error(KFAC_EINVAL, "--set '%s': expected section.key=value", assignment);
    char section[64], name[64];
    size_t ls = (size_t)(dot - assignment), ln = (size_t)(eq - dot - 1);
    if (ls >= sizeof section || ln >= sizeof name)
        return kfac_error(KFAC_EINVAL, "--set '%s': section or key name too long", assignment);
    memcpy(section, assignment, ls);
    section[ls] = 0;
    memcpy(name, dot + 1, ln);
    name[ln] = 0;
    const struct key *k = find_key(section, name);
    if (!k) {
        char list[512];
        if (!known_section(section))
            return kfac_error(KFAC_EINVAL, "--set '%s': unknown section [%s] (expected data, "
                                           "model, optimizer, train, log or study)",
                              assignment, section);
        section_keys(section, list, sizeof list);
        return kfac_error(KFAC_EINVAL, "--set '%s': unknown key %s.%s (keys of this section: %s)",
                          assignment, section, name, list);
    }
    if (set_value(c, k, eq + 1, NULL))
        return kfac_error(KFAC_EINVAL, "--set: %s", kfac_last_error());
    if (k == preset_key())
        apply_preset(c, NULL); /* over the file; a later --set wins over it */
    return 0;
}

int kfac_parse_batch_sizes(const char *spec, int *sizes, int max, int *n)
{
    *n = 0;
    const char *p = spec ? spec : "";
    while (*p) {
        while (*p == ' ' || *p == '\t')
            p++;
        const char *end = p + strcspn(p, ",");
        size_t len = (size_t)(end - p);
        while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        char item[32];
        if (len == 0 || len >= sizeof item)
            return kfac_error(KFAC_EINVAL, "study.batch_sizes = '%s': expected a comma-separated "
                                           "list of positive integers and 'full'",
                              spec);
        memcpy(item, p, len);
        item[len] = 0;
        char *stop;
        long v = strcmp(item, "full") == 0 ? 0 : strtol(item, &stop, 10);
        if (strcmp(item, "full") != 0 && (*stop || v < 1 || v > INT_MAX))
            return kfac_error(KFAC_EINVAL, "study.batch_sizes: '%s' is neither a positive integer "
                                           "nor 'full'",
                              item);
        if (*n == max)
            return kfac_error(KFAC_EINVAL, "study.batch_sizes: more than %d sizes", max);
        sizes[(*n)++] = (int)v;
        p = *end ? end + 1 : end;
    }
    if (*n == 0)
        return kfac_error(KFAC_EINVAL, "study.batch_sizes is empty; e.g. 1,10,100,full");
    return 0;
}

int kfac_config_validate(const struct kfac_config *c)
{
    int sizes[KFAC_STUDY_MAX_SIZES], n_sizes;
    if (kfac_parse_batch_sizes(c->study_batch_sizes, sizes, KFAC_STUDY_MAX_SIZES, &n_sizes))
        return KFAC_EINVAL;
    if (!c->device)
        return kfac_error(KFAC_EINVAL, "train.device is empty: expected cpu, cuda or cuda:N");
    if (kfac_backend_select(c->device, "train.device", NULL))
        return KFAC_EINVAL;
    if (!c->data.train)
        return kfac_error(KFAC_EINVAL, "data.train is required: the training data file");
    if (!c->layers)
        return kfac_error(KFAC_EINVAL, "model.layers is required, e.g. 784-30:linear-784:logistic");
    if (c->data.task != KFAC_TASK_AUTOENCODER && !c->data.train_targets &&
        !c->data.target_columns)
        return kfac_error(KFAC_EINVAL, "data.task = %s needs data.train_targets (a labels or "
                                       "values file) or data.target_columns (for CSV)",
                          task_choices[c->data.task]);
    if (c->data.task == KFAC_TASK_AUTOENCODER && (c->data.train_targets || c->data.test_targets))
        return kfac_error(KFAC_EINVAL, "data.train_targets and data.test_targets are not used by "
                                       "the autoencoder task (its targets are its inputs)");
    if (c->data.test && c->data.test_fraction > 0)
        return kfac_error(KFAC_EINVAL, "data.test and data.test_fraction both choose the test set; "
                                       "give one of them");
    if (c->data.shard && (!strstr(c->data.train, "%r") ||
                          (c->data.train_targets && !strstr(c->data.train_targets, "%r"))))
        return kfac_error(KFAC_EINVAL, "data.shard = rank: data.train%s must name each rank's "
                                       "file with %%r (the rank), e.g. train-%%r.idx.gz",
                          c->data.train_targets ? " and data.train_targets" : "");
    if (c->data.shard && c->data.standardize)
        return kfac_error(KFAC_EINVAL, "data.standardize takes the mean and deviation of the "
                                       "whole training set, which data.shard = rank shares out "
                                       "among the ranks: standardise the shards beforehand");
    if (c->data.test && c->data.task != KFAC_TASK_AUTOENCODER && !c->data.test_targets &&
        !c->data.target_columns)
        return kfac_error(KFAC_EINVAL, "data.test needs data.test_targets for this task");
    const struct kfac_optim_opts *o = &c->optim;
    if (c->preset != KFAC_PRESET_NONE && o->type != KFAC_OPTIM_KFAC)
        return kfac_error(KFAC_EINVAL, "optimizer.preset = %s sets K-FAC's constants, but "
                                       "optimizer.type is %s: set optimizer.type = kfac",
                          preset_choices[c->preset], optim_choices[o->type]);
    if (o->type == KFAC_OPTIM_KFAC) {
        double gamma = kfac_gamma_start(o);
        double gamma_min = kfac_gamma_min(o);
        if (gamma_min > o->gamma_max)
            return kfac_error(KFAC_EINVAL, "optimizer.gamma_min (%g) exceeds optimizer.gamma_max "
                                           "(%g)",
                              gamma_min, o->gamma_max);
        if (gamma <= 0)
            return kfac_error(KFAC_EINVAL, "optimizer.gamma: with lambda = 0 and l2 = 0 the "
                                           "default sqrt(lambda + l2) is 0; give a positive gamma");
    }
    return 0;
}

/* "name = value" and a newline. */
static void print_value(const struct key *k, const struct kfac_config *c, FILE *f)
{
    const void *field = (const char *)c + k->offset;
    fprintf(f, "%s = ", k->name);
    switch (k->type) {
    case K_INT: fprintf(f, "%d\n", *(const int *)field); break;
    case K_CASES:
        if (*(const int *)field)
            fprintf(f, "%d\n", *(const int *)field);
        else
            fputs("auto\n", f);
        break;
    case K_LONG: fprintf(f, "%ld\n", *(const long *)field); break;
    case K_DOUBLE: fprintf(f, "%.15g\n", *(const double *)field); break;
    case K_BYTES: {
        /* In the largest unit that keeps it whole: 2G, not 2147483648. */
        static const char *const units[] = {"", "K", "M", "G", "T"};
        double v = *(const double *)field;
        int u = 0;
        while (u < 4 && v >= 1024 && fmod(v, 1024) == 0)
            v /= 1024, u++;
        fprintf(f, "%.0f%s\n", v, units[u]);
        break;
    }
    case K_BOOL: fprintf(f, "%s\n", *(const int *)field ? "true" : "false"); break;
    case K_ENUM: fprintf(f, "%s\n", k->choices[*(const int *)field]); break;
    case K_STRING:
    case K_PATH: {
        const char *s = *(char *const *)field;
        fprintf(f, "%s\n", s ? s : "");
        break;
    }
    }
}

void kfac_config_print(const struct kfac_config *c, FILE *f)
{
    const char *section = "";
    for (size_t i = 0; i < N_KEYS; i++) {
        const struct key *k = &keys[i];
        if (strcmp(section, k->section) != 0) {
            fprintf(f, "%s[%s]\n", *section ? "\n" : "", k->section);
            section = k->section;
        }
        print_value(k, c, f);
    }
}

/* The keys a resumed run may change: how long it runs, its checkpoints, what it logs. */
static int run_control(const struct key *k)
{
    static const char *const train_keys[] = {
        "iterations",       "max_seconds",        "checkpoint",
        "checkpoint_every", "checkpoint_seconds", "checkpoint_keep",
        "memory_limit",     "chunk_size",         "device",
        "inject_nan",       "rank_check_every",   "preconditioning",
        NULL};
    if (strcmp(k->section, "log") == 0 || strcmp(k->section, "study") == 0)
        return 1;
    if (strcmp(k->section, "train") == 0)
        for (int i = 0; train_keys[i]; i++)
            if (strcmp(k->name, train_keys[i]) == 0)
                return 1;
    return 0;
}

char *kfac_config_identity(const struct kfac_config *c)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        kfac_out_of_memory(0);
    for (size_t i = 0; i < N_KEYS; i++)
        if (!run_control(&keys[i]) && &keys[i] != preset_key()) { /* its keys speak for it */
            fprintf(f, "%s.", keys[i].section);
            print_value(&keys[i], c, f);
        }
    fclose(f);
    return text;
}

void kfac_config_free(struct kfac_config *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < N_KEYS; i++)
        if (keys[i].type == K_STRING || keys[i].type == K_PATH) {
            char **s = (char **)((char *)c + keys[i].offset);
            free(*s);
            *s = NULL;
        }
}
