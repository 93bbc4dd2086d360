/* fuzz_checkpoint.c: the checkpoint reader on arbitrary bytes, against a fixed list of
 * items (as a resuming run has); a file that passes is restored and its configuration
 * compared. */
#include "fuzz.h"
#include "kfac/checkpoint.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64];
    int fd = fuzz_file(data, size, path, sizeof path);
    static double lambda;
    static long k;
    static float w[16];
    struct kfac_state s = {0};
    kfac_state_add(&s, "lambda", KFAC_STATE_F64, &lambda, 1);
    kfac_state_add(&s, "k", KFAC_STATE_LONG, &k, 1);
    kfac_state_add(&s, "w", KFAC_STATE_F32, w, 16);
    struct kfac_checkpoint ck;
    int rc = kfac_checkpoint_open(path, &s, &ck);
    if (rc == 0 || ck.other_items)
        free(kfac_config_text_diff(ck.config_text, "optimizer.lambda = 150\n", NULL));
    if (rc == 0)
        kfac_checkpoint_restore(&ck, &s);
    kfac_checkpoint_close(&ck);
    kfac_state_free(&s);
    close(fd);
    return 0;
}
