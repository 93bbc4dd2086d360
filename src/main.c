/*
 * main.c: the kfac-train command: options, configuration, and exit status
 * (0 success, 1 run-time failure, 2 usage, configuration or data error).
 */
#include "config.h"
#include "kfac/backend.h"
#include "kfac/comm.h"
#include "kfac/config.h"
#include "kfac/file.h"
#include "kfac/status.h"
#include "kfac/study.h"
#include "kfac/train.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { EXIT_RUNTIME = 1, EXIT_USAGE = 2, EXIT_INTERRUPTED = 130 };

static void usage(FILE *f)
{
    fputs(
        "Usage: kfac-train [OPTIONS] CONFIG.ini\n"
        "Train a neural network with the optimiser and data that CONFIG.ini describes.\n"
        "\n"
        "  -s, --set SECTION.KEY=VALUE  override a configuration key (repeatable)\n"
        "      --seed N                 same as --set train.seed=N\n"
        "  -j, --threads N              same as --set train.threads=N (OpenBLAS threads)\n"
        "      --device DEVICE          same as --set train.device=DEVICE: cpu, cuda or cuda:N\n"
        "  -l, --log FILE               write the TSV log to FILE (same as --set log.file=FILE;\n"
        "                               - for standard output; default: CONFIG's name with\n"
        "                               .tsv in the working directory, or a numbered one)\n"
        "  -f, --force                  replace an existing log file\n"
        "  -q, --quiet                  no progress line, no summary and no warning\n"
        "  -n, --dry-run                print the resolved configuration, the model and the\n"
        "                               memory the run needs, then exit\n"
        "  -r, --resume FILE            continue the run a checkpoint holds (its log is appended)\n"
        "      --force-resume           resume even with a configuration that differs from the\n"
        "                               checkpoint's\n"
        "      --fisher-study           instead of one run, the Fisher study of the [study]\n"
        "                               section: the TSV table goes where the log would\n"
        "      --fisher-pictures DIR    instead of one run, PNG heatmaps of the exact Fisher,\n"
        "                               its K-FAC approximation and their difference\n"
        "  -h, --help                   print this help and exit\n"
        "  -V, --version                print the version and the backends built, and exit\n"
        "\n"
        "Exit status: 0 on success, 1 if training failed, 2 for usage, configuration or data\n"
        "errors, 130 when SIGINT or SIGTERM stopped it (after writing a checkpoint). See\n"
        "kfac-train(1) and kfac-train.ini(5).\n",
        f);
}

/* The ranks of the run (one process unless started by an MPI launcher). */
static struct kfac_comm comm;

static int fail(int code, const char *context)
{
    char rank[32] = "";
    if (comm.size > 1)
        snprintf(rank, sizeof rank, "rank %d: ", comm.rank);
    if (context)
        fprintf(stderr, "kfac-train: %s%s: %s\n", rank, context, kfac_last_error());
    else
        fprintf(stderr, "kfac-train: %s%s\n", rank, kfac_last_error());
    return code;
}

/* Of the ranks, which all reach this point with their rc: whether any failed, after the
 * lowest failed rank (one that did not merely learn of another's failure) printed its
 * message; the exit status for all of them is *status. One process: whether it failed,
 * after printing why. */
static int ranks_failed(int rc, int code, const char *context, int *status)
{
    long mine = rc && rc != KFAC_EPEER ? comm.size - comm.rank : 0;
    long first = kfac_comm_max(&comm, mine);
    if (!first && !rc)
        return 0;
    if (first && comm.size - first == comm.rank)
        fail(code, context);
    *status = code;
    return 1;
}

/* Says, once, when OpenBLAS runs far below the CPU's speed. Every backend does part of its
 * work there, so the CPU backend answers for all, and no device is started to ask. */
static void warn_speed(void)
{
    const char *why = kfac_backend_cpu()->speed_warning();
    if (why)
        fprintf(stderr, "kfac-train: warning: %s\n", why);
}

/* Queues the override "key=value" (or value alone, already in that form, when key is NULL). */
static void add_set(char ***sets, int *n, const char *key, const char *value)
{
    char *s = kfac_xasprintf("%s%s%s", key ? key : "", key ? "=" : "", value);
    *sets = kfac_xrealloc(*sets, (size_t)(*n + 1) * sizeof **sets);
    (*sets)[(*n)++] = s;
}

/* Whether nothing at all is at path (not even a dangling link). */
static int vacant(const char *path)
{
    struct stat st;
    return lstat(path, &st) != 0 && errno == ENOENT;
}

/* The training log when none is given: a resumed run appends to the log beside its
 * checkpoint (LOG.ckpt); a new run writes NAME.tsv in the working directory, NAME the
 * configuration's file name without ".ini", or the first of NAME-2.tsv, NAME-3.tsv, …
 * that neither a file nor its checkpoint (".ckpt") takes, so that nothing is overwritten.
 * Returns a new string, or NULL (with the error set) when all are taken. */
static char *default_log(const char *config, const char *resume)
{
    int stem = resume ? kfac_file_stem(resume, ".ckpt") : 0;
    if (resume && resume[stem]) /* it ends with .ckpt */
        return kfac_xasprintf("%.*s", stem, resume);
    const char *name = strrchr(config, '/');
    name = name ? name + 1 : config;
    int n = kfac_file_stem(name, ".ini");
    for (int i = 1; i <= 999; i++) {
        char *log = i == 1 ? kfac_xasprintf("%.*s.tsv", n, name)
                           : kfac_xasprintf("%.*s-%d.tsv", n, name, i);
        char *ckpt = kfac_xasprintf("%s.ckpt", log);
        int free_ = vacant(log) && vacant(ckpt);
        free(ckpt);
        if (free_)
            return log;
        free(log);
    }
    kfac_error(KFAC_EEXIST,
               "%.*s.tsv through %.*s-999.tsv all exist; give the log a name with "
               "--log FILE (or --log - for standard output)",
               n, name, n, name);
    return NULL;
}

static int run(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"set", required_argument, NULL, 's'},
        {"seed", required_argument, NULL, 'S'},
        {"threads", required_argument, NULL, 'j'},
        {"log", required_argument, NULL, 'l'},
        {"force", no_argument, NULL, 'f'},
        {"quiet", no_argument, NULL, 'q'},
        {"dry-run", no_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {"fisher-study", no_argument, NULL, 'F'},
        {"fisher-pictures", required_argument, NULL, 'P'},
        {"resume", required_argument, NULL, 'r'},
        {"force-resume", no_argument, NULL, 'R'},
        {"version", no_argument, NULL, 'V'},
        {"device", required_argument, NULL, 'D'},
        {NULL, 0, NULL, 0},
    };
    char **sets = NULL;
    int n_sets = 0, dry_run = 0, study = 0, status = 0, c;
    const char *pictures = NULL;
    struct kfac_run_opts opts = {0};
    while ((c = getopt_long(argc, argv, "s:j:l:r:fqnhV", longopts, NULL)) != -1) {
        switch (c) {
        case 's': add_set(&sets, &n_sets, NULL, optarg); break;
        case 'S': add_set(&sets, &n_sets, "train.seed", optarg); break;
        case 'j': add_set(&sets, &n_sets, "train.threads", optarg); break;
        case 'l': add_set(&sets, &n_sets, "log.file", optarg); break;
        case 'D': add_set(&sets, &n_sets, "train.device", optarg); break;
        case 'f': opts.force = 1; break;
        case 'q': opts.quiet = 1; break;
        case 'n': dry_run = 1; break;
        case 'F': study = 1; break;
        case 'P': pictures = optarg; break;
        case 'r': opts.resume = optarg; break;
        case 'R': opts.force_resume = 1; break;
        case 'h': usage(stdout); goto done;
        case 'V':
            printf("kfac-train %s\nbackends: %s\nblas: %s\n", PACKAGE_VERSION,
                   kfac_backends_built(), kfac_backend_cpu()->library());
            const char *wait = getenv("OPENBLAS_THREAD_TIMEOUT");
            printf("blas threads: %d, OPENBLAS_THREAD_TIMEOUT=%s\n",
                   kfac_backend_cpu()->threads(), wait ? wait : "(unset)");
            if (kfac_comm_library())
                printf("mpi: %s\n", kfac_comm_library());
            goto done;
        default:
            fputs("Try 'kfac-train --help' for more information.\n", stderr);
            status = EXIT_USAGE;
            goto done;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "kfac-train: %s\nTry 'kfac-train --help' for more information.\n",
                optind == argc ? "missing CONFIG.ini" : "more than one configuration file given");
        status = EXIT_USAGE;
        goto done;
    }
    struct kfac_config cfg;
    kfac_config_defaults(&cfg);
    if (kfac_config_load(&cfg, argv[optind])) {
        status = fail(EXIT_USAGE, NULL);
    } else {
        for (int i = 0; i < n_sets && !status; i++)
            if (kfac_config_set(&cfg, sets[i]))
                status = fail(EXIT_USAGE, NULL);
    }
    if (!status && !opts.quiet && comm.rank == 0)
        warn_speed();
    /* The log: "-" is standard output; none given, a file named after the run (training
     * only: a study's table goes to standard output unless named). */
    if (!status && cfg.log_file && strcmp(cfg.log_file, "-") == 0) {
        free(cfg.log_file);
        cfg.log_file = NULL;
    } else if (!status && !cfg.log_file && !dry_run && !study && !pictures &&
               !(cfg.log_file = default_log(argv[optind], opts.resume))) {
        status = fail(EXIT_USAGE, NULL);
    }
    if (!status && dry_run) {
        struct kfac_net *net;
        enum kfac_loss loss;
        if (kfac_config_validate(&cfg) || kfac_model_new(&cfg, &net, &loss)) {
            status = fail(EXIT_USAGE, argv[optind]);
        } else {
            kfac_config_print(&cfg, stdout);
            putchar('\n');
            kfac_model_summary(net, loss, stdout);
            kfac_net_free(net);
            /* The memory plan needs the data's size: without the data it is left out, and
             * any other failure once the data are read is the configuration's. */
            struct kfac_run r;
            struct kfac_run_opts plan = opts;
            plan.plan_only = 1;
            putchar('\n');
            if (!kfac_run_prepare(&r, &cfg, &plan))
                kfac_run_print_plan(&r, stdout);
            else if (r.train.n == 0)
                printf("# memory: not planned without the data (%s)\n", kfac_last_error());
            else
                status = fail(EXIT_USAGE, argv[optind]);
            kfac_run_free(&r);
        }
    } else if (!status && opts.resume && (study || pictures)) {
        fputs("kfac-train: --resume continues a training run, not a Fisher study or pictures\n",
              stderr);
        status = EXIT_USAGE;
    } else if (!status && comm.size > 1 && (study || pictures)) {
        fprintf(stderr, "kfac-train: rank %d: --fisher-study and --fisher-pictures run on one "
                        "process, and mpirun started %d\n",
                comm.rank, comm.size);
        status = EXIT_USAGE;
    } else if (!status && study && pictures) {
        fputs("kfac-train: --fisher-study and --fisher-pictures are separate runs; give one\n",
              stderr);
        status = EXIT_USAGE;
    } else if (!status && pictures) {
        int started;
        if (kfac_fisher_pictures(&cfg, &opts, pictures, stderr, &started))
            status = started ? fail(EXIT_RUNTIME, NULL) : fail(EXIT_USAGE, argv[optind]);
    } else if (!status && study) {
        int started;
        if (kfac_fisher_study(&cfg, &opts, stderr, &started))
            status = started ? fail(EXIT_RUNTIME, NULL) : fail(EXIT_USAGE, argv[optind]);
    } else if (!status) {
        /* Every rank prepares and trains; the first to fail speaks for all (one process:
         * itself). */
        struct kfac_run r;
        opts.comm = &comm;
        int rc = kfac_run_prepare(&r, &cfg, &opts);
        if (!ranks_failed(rc, EXIT_USAGE, argv[optind], &status)) {
            rc = kfac_run_train(&r, r.writer ? stderr : NULL);
            ranks_failed(rc, rc == KFAC_EINTR ? EXIT_INTERRUPTED : EXIT_RUNTIME, NULL, &status);
        }
        kfac_run_free(&r);
    }
    kfac_config_free(&cfg);
done:
    for (int i = 0; i < n_sets; i++)
        free(sets[i]);
    free(sets);
    return status;
}

int main(int argc, char **argv)
{
    kfac_backend_cpu_prepare(argv);
    if (kfac_comm_start(&comm)) {
        fprintf(stderr, "kfac-train: %s\n", kfac_last_error());
        return EXIT_USAGE;
    }
    int status = run(argc, argv);
    kfac_comm_finish(&comm);
    /* A failed write of the help text or the dry-run output is a failure too. */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "kfac-train: write error on standard output\n");
        return status ? status : EXIT_RUNTIME;
    }
    return status;
}
