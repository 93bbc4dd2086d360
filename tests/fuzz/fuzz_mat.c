/* fuzz_mat.c: the MATLAB .mat reader (through libmatio) on arbitrary bytes, both splits. */
#include "fuzz.h"
#include "kfac/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64];
    int fd = fuzz_file(data, size, path, sizeof path);
    struct kfac_array x, labels;
    for (int split = KFAC_SPLIT_TRAIN; split <= KFAC_SPLIT_TEST; split++)
        if (kfac_matlab_read(path, split, &x, &labels) == 0) {
            kfac_array_free(&x);
            kfac_array_free(&labels);
        }
    close(fd);
    return 0;
}
