/*
 * test.h - minimal assertions for ferry's unit tests (after libuv's task.h).
 * A failed assertion prints file, line and both values, then exits 1.
 */
#ifndef FERRY_TEST_H
#define FERRY_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int test_count;

#define ASSERT(cond)                                                                               \
    do {                                                                                           \
        test_count++;                                                                              \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__, #cond);           \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#define ASSERT_EQ(a, b)                                                                            \
    do {                                                                                           \
        int64_t a_ = (int64_t)(a), b_ = (int64_t)(b);                                              \
        test_count++;                                                                              \
        if (a_ != b_) {                                                                            \
            fprintf(stderr, "%s:%d: %s == %s failed: %" PRId64 " != %" PRId64 "\n", __FILE__,      \
                    __LINE__, #a, #b, a_, b_);                                                     \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#define ASSERT_STR(a, b)                                                                           \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        test_count++;                                                                              \
        if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                                   \
            fprintf(stderr, "%s:%d: %s == %s failed: \"%s\" != \"%s\"\n", __FILE__, __LINE__, #a,  \
                    #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)");                                   \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* Call at the end of main(): prints the count, returns 0. */
#define TEST_DONE() (printf("%s: %d assertions passed\n", __FILE__, test_count), 0)

/* A fresh directory under $FERRY_TEST_TMP (or /tmp) for one test; static storage. */
static inline const char *test_tmpdir(const char *name)
{
    static char path[512];
    const char *base = getenv("FERRY_TEST_TMP");
    char cmd[1200];

    snprintf(path, sizeof(path), "%s/%s.%d", base ? base : "/tmp", name, (int)getpid());
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' && mkdir -p '%s'", path, path);
    if (system(cmd) != 0) {
        fprintf(stderr, "cannot create %s\n", path);
        exit(1);
    }
    return path;
}

#endif
