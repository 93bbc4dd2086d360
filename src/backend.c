/*
 * backend.c: choosing the backend a run names (train.device): the CPU's, or a CUDA
 * device's in a build configured with --enable-cuda.
 */
#include "kfac/backend.h"
#include "kfac/status.h"
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int kfac_backend_select(const char *device, const char *key, const struct kfac_backend **out)
{
    if (out)
        *out = NULL;
    if (strcmp(device, "cpu") == 0) {
        if (out)
            *out = kfac_backend_cpu();
        return 0;
    }
    /* "cuda" is device 0; "cuda:N" a device number of digits alone. */
    long n = 0;
    int named = strcmp(device, "cuda") == 0;
    if (!named && strncmp(device, "cuda:", 5) == 0) {
        char *end;
        n = strtol(device + 5, &end, 10);
        named = end != device + 5 && !*end && n >= 0 && n <= 1024;
    }
    if (!named)
        return kfac_error(KFAC_EINVAL, "%s = '%s': expected cpu, cuda or cuda:N", key, device);
    if (!out)
        return 0;
#ifdef KFAC_HAVE_CUDA
    int rc = kfac_backend_cuda((int)n, out);
    if (rc) {
        char why[512];
        snprintf(why, sizeof why, "%s", kfac_last_error());
        return kfac_error(rc, "%s = %s: %s", key, device, why);
    }
    return 0;
#else
    return kfac_error(KFAC_EINVAL,
                      "%s = %s: this kfac-train was built without CUDA (configure "
                      "it with --enable-cuda)",
                      key, device);
#endif
}

const char *kfac_backends_built(void)
{
#ifdef KFAC_HAVE_CUDA
    return "cpu cuda";
#else
    return "cpu";
#endif
}
