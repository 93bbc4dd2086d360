/* fuzz_csv.c: the CSV reader on arbitrary bytes. */
#include "fuzz.h"
#include "kfac/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64];
    int fd = fuzz_file(data, size, path, sizeof path);
    struct kfac_table t;
    if (kfac_csv_read(path, &t) == 0)
        kfac_table_free(&t);
    close(fd);
    return 0;
}
