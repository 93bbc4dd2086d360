/* fuzz_ini.c: the configuration reader (libinih and the key table) on arbitrary bytes,
 * then the checks that follow it and the printing of what was read. */
#include "fuzz.h"
#include "kfac/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64];
    int fd = fuzz_file(data, size, path, sizeof path);
    struct kfac_config c;
    kfac_config_defaults(&c);
    if (kfac_config_load(&c, path) == 0 && kfac_config_validate(&c) == 0) {
        FILE *null = fopen("/dev/null", "w");
        kfac_config_print(&c, null);
        fclose(null);
        free(kfac_config_identity(&c));
    }
    kfac_config_free(&c);
    close(fd);
    return 0;
}
