/*
 * fuzz_checkpoint_fields.c: forged checkpoints. A real state list (a batcher over 9
 * cases, a network and a block-tridiagonal K-FAC optimiser after two steps) is saved;
 * the input changes bytes of its items' values and the harness writes them as a new
 * checkpoint, so the CRC is correct and only the value checks stand between the file
 * and the run. A file the reader accepts is restored and used: batches are drawn and the
 * optimiser takes a step, which must neither crash nor read outside its buffers.
 *
 * The input is a list of (offset: 2 bytes little-endian, byte) triples; each replaces the
 * byte at offset (modulo the values' length) of the concatenated item values.
 */
#include "fuzz.h"
#include "kfac/checkpoint.h"
#include "kfac/config.h"
#include "kfac/data.h"
#include "kfac/mat.h"
#include "kfac/net.h"
#include "kfac/optim.h"
#include "kfac/status.h"

#include <string.h>

enum { N_CASES = 9, BATCH = 4 };

static struct {
    struct kfac_rng rng, rng_batch;
    struct kfac_dataset ds;
    struct kfac_batcher batcher;
    struct kfac_net *net;
    struct kfac_optim *optim;
    struct kfac_state live;          /* the items of the run */
    unsigned char *saved, *forged;   /* their values after setup, and the input's version */
    size_t bytes;
    struct kfac_state forged_list;   /* the same items over forged */
} F;

static void setup(void)
{
    kfac_rng_seed(&F.rng, 7);
    kfac_rng_seed(&F.rng_batch, 8);
    F.ds.n = N_CASES;
    F.ds.d_x = 3;
    F.ds.d_t = 2;
    F.ds.shape[0] = 3, F.ds.shape[1] = F.ds.shape[2] = 1;
    F.ds.x = kfac_floats_new(N_CASES * 3);
    F.ds.t = kfac_floats_new(N_CASES * 2);
    for (int i = 0; i < N_CASES * 3; i++)
        F.ds.x[i] = (float)kfac_rng_normal(&F.rng);
    for (int i = 0; i < N_CASES * 2; i++)
        F.ds.t[i] = (float)kfac_rng_normal(&F.rng);
    kfac_batcher_init(&F.batcher, &F.ds, BATCH, &F.rng_batch, 0, 1);
    struct kfac_layer_spec specs[2] = {{.d_out = 4, .act = KFAC_ACT_TANH},
                                       {.d_out = 2, .act = KFAC_ACT_LINEAR}};
    if (kfac_net_new(3, specs, 2, &F.net))
        abort();
    kfac_net_reserve(F.net, BATCH);
    kfac_net_init(F.net, KFAC_INIT_SPARSE, 2, &F.rng);
    struct kfac_config c;
    kfac_config_defaults(&c);
    c.optim.type = KFAC_OPTIM_KFAC;
    c.optim.curvature = KFAC_CURVATURE_TRIDIAGONAL;
    c.optim.inverse_every = 1;
    if (kfac_optim_new(&c.optim, F.net, KFAC_LOSS_SQUARED, &F.rng, &F.optim) ||
        kfac_optim_n_columns(F.optim) > 32)
        abort();
    kfac_config_free(&c);
    double objective, figures[32];
    for (long k = 1; k <= 2; k++) {
        struct kfac_batch b;
        kfac_batcher_next(&F.batcher, BATCH, &b);
        if (F.optim->ops->step(F.optim, &b, k, &objective, figures))
            abort();
    }
    kfac_state_add(&F.live, "rng.batch", KFAC_STATE_RNG, &F.rng_batch, 1);
    kfac_batcher_state(&F.batcher, &F.live);
    kfac_state_add(&F.live, "net.params", KFAC_STATE_F32, F.net->params, F.net->n_params);
    F.optim->ops->state(F.optim, &F.live);
    for (int i = 0; i < F.live.n; i++)
        F.bytes += F.live.items[i].bytes;
    F.saved = kfac_xmalloc(F.bytes);
    F.forged = kfac_xmalloc(F.bytes);
    for (int i = 0, off = 0; i < F.live.n; off += (int)F.live.items[i].bytes, i++) {
        const struct kfac_state_item *it = &F.live.items[i];
        memcpy(F.saved + off, it->ptr, it->bytes);
        kfac_state_add(&F.forged_list, it->name, it->type, F.forged + off, it->n);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!F.net)
        setup();
    /* The run as it was after setup. */
    for (int i = 0, off = 0; i < F.live.n; off += (int)F.live.items[i].bytes, i++)
        memcpy(F.live.items[i].ptr, F.saved + off, F.live.items[i].bytes);
    memcpy(F.forged, F.saved, F.bytes);
    for (size_t i = 0; i + 3 <= size; i += 3)
        F.forged[(data[i] | (size_t)data[i + 1] << 8) % F.bytes] = data[i + 2];
    char path[] = "/tmp/kfac-fuzz-fields-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        abort();
    close(fd);
    if (kfac_checkpoint_write(path, "", &F.forged_list))
        abort();
    struct kfac_checkpoint ck;
    if (kfac_checkpoint_open(path, &F.live, &ck) == 0 &&
        kfac_checkpoint_restore(&ck, &F.live) == 0) {
        double objective, figures[32];
        for (int k = 0; k < 3; k++) {
            struct kfac_batch b;
            kfac_batcher_next(&F.batcher, BATCH, &b);
            if (k == 2)
                F.optim->ops->step(F.optim, &b, 3, &objective, figures);
        }
    }
    kfac_checkpoint_close(&ck);
    unlink(path);
    return 0;
}
