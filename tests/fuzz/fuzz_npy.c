/* fuzz_npy.c: the NPY reader (raw or gzip) on arbitrary bytes. */
#include "fuzz.h"
#include "kfac/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64];
    int fd = fuzz_file(data, size, path, sizeof path);
    struct kfac_array a;
    if (kfac_npy_read(path, &a) == 0)
        kfac_array_free(&a);
    close(fd);
    return 0;
}
