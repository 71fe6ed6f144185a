/*
 * replay.c - runs a libFuzzer target without libFuzzer: for each argument,
 * every regular file of that directory (or the file itself) is passed to
 * LLVMFuzzerTestOneInput once, in name order. ctest uses it to replay the
 * committed seed corpora and crash regressions on every build, with or
 * without clang; under -DFERRY_SANITIZE=ON it is the sanitized replay.
 *
 * A missing or empty directory is not an error (a target may have no corpus
 * yet): it is reported and the exit status stays 0. A file that cannot be
 * read is an error (exit 1).
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* larger inputs are not fuzz inputs; libFuzzer's own default is 1 MiB */
#define REPLAY_MAX_FILE ((off_t)256 << 20)

/* Run one file. Returns 0, or -1 when it cannot be read. */
static int run_file(const char *path, off_t size)
{
    uint8_t *data;
    size_t n;
    FILE *f;
    int rc = -1;

    if (size > REPLAY_MAX_FILE) {
        fprintf(stderr, "replay: %s: %lld bytes, larger than any fuzz input\n", path,
                (long long)size);
        return -1;
    }
    /* exactly size bytes, so that ASan sees a read past the end */
    data = malloc(size ? (size_t)size : 1);
    if (!data) {
        fprintf(stderr, "replay: %s: out of memory\n", path);
        return -1;
    }
    f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        goto out;
    }
    n = fread(data, 1, (size_t)size, f);
    if (n != (size_t)size || ferror(f)) {
        fprintf(stderr, "replay: %s: short read\n", path);
        goto out;
    }
    LLVMFuzzerTestOneInput(data, n);
    rc = 0;
out:
    if (f)
        fclose(f);
    free(data);
    return rc;
}

/* Run every regular file of dir; *count is how many ran. */
static int run_dir(const char *dir, size_t *count)
{
    struct dirent **names = NULL;
    int n = scandir(dir, &names, NULL, alphasort);
    int rc = 0;

    if (n < 0) {
        fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
        return -1;
    }
    for (int i = 0; i < n; i++) {
        char path[4096];
        struct stat st;
        int len = snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);

        if (len < 0 || (size_t)len >= sizeof(path)) {
            fprintf(stderr, "replay: %s/%s: path too long\n", dir, names[i]->d_name);
            rc = -1;
        } else if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            if (run_file(path, st.st_size) == 0)
                (*count)++;
            else
                rc = -1;
        }
        free(names[i]);
    }
    free(names);
    return rc;
}

int main(int argc, char **argv)
{
    size_t total = 0;
    int failed = 0;

    if (argc < 2)
        fprintf(stderr, "usage: %s DIR|FILE...\n", argv[0]);
    for (int i = 1; i < argc; i++) {
        struct stat st;
        size_t count = 0;

        if (stat(argv[i], &st) != 0) {
            printf("replay: %s: %s, nothing to replay\n", argv[i], strerror(errno));
            continue;
        }
        if (S_ISDIR(st.st_mode)) {
            if (run_dir(argv[i], &count) != 0)
                failed = 1;
        } else if (run_file(argv[i], st.st_size) == 0) {
            count = 1;
        } else {
            failed = 1;
        }
        if (count == 0)
            printf("replay: %s: no inputs, nothing to replay\n", argv[i]);
        else
            printf("replay: %s: ran %zu inputs\n", argv[i], count);
        total += count;
    }
    printf("replay: ran %zu inputs in all\n", total);
    return failed;
}
