/*
 * replay.c: a main() for a fuzz target without libFuzzer: runs the target on every file
 * named on the command line (a seed corpus and the inputs that once crashed it), so that
 * make check replays them under whatever sanitizers the build has.
 */
#include "fuzz.h"

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) {
            perror(argv[i]);
            return 2;
        }
        uint8_t *buf = NULL;
        size_t n = 0, cap = 0;
        for (;;) {
            if (n == cap) {
                cap = cap ? 2 * cap : 4096;
                buf = realloc(buf, cap);
            }
            size_t got = fread(buf + n, 1, cap - n, f);
            if (got == 0)
                break;
            n += got;
        }
        fclose(f);
        LLVMFuzzerTestOneInput(buf, n);
        free(buf);
    }
    printf("replayed %d inputs\n", argc - 1);
    return 0;
}
