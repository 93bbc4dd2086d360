/*
 * fuzz.h: what the fuzz targets share. Each target defines LLVMFuzzerTestOneInput() for
 * one reader of untrusted files; the readers take paths, so the input is handed over as
 * an anonymous in-memory file (memfd) named by /proc/self/fd/N. Built with clang's
 * libFuzzer by tests/fuzz/run.sh, or with replay.c's main() to replay a corpus in
 * make check.
 */
#ifndef KFAC_FUZZ_H
#define KFAC_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The input as a file: fills path and returns its descriptor (close it after use). */
static inline int fuzz_file(const uint8_t *data, size_t size, char *path, size_t path_size)
{
    int fd = memfd_create("kfac-fuzz", 0);
    if (fd < 0) {
        perror("memfd_create");
        abort();
    }
    for (size_t done = 0; done < size;) {
        ssize_t n = write(fd, data + done, size - done);
        if (n <= 0) {
            perror("write");
            abort();
        }
        done += (size_t)n;
    }
    snprintf(path, path_size, "/proc/self/fd/%d", fd);
    return fd;
}

#endif
