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

/* Set by TEST_DONE: the directories test_tmpdir() made go at exit. */
static int test_passed;

/* Call at the end of main(): prints the count, returns 0. */
#define TEST_DONE() (test_passed = 1, printf("%s: %d assertions passed\n", __FILE__, test_count), 0)

/*
 * Remember a directory test_tmpdir() made (add), or at exit (add NULL)
 * remove them all when the test passed and FERRY_KEEP is unset; a failed
 * test keeps them and says where.
 */
static inline void test_tmpdirs(const char *add)
{
    static char dirs[16][512];
    static int n;
    char cmd[1200];

    if (add) {
        for (int i = 0; i < n; i++)
            if (strcmp(dirs[i], add) == 0)
                return;
        if (n < (int)(sizeof(dirs) / sizeof(dirs[0])))
            snprintf(dirs[n++], sizeof(dirs[0]), "%s", add);
        return;
    }
    for (int i = 0; i < n; i++) {
        if (!test_passed || getenv("FERRY_KEEP")) {
            fprintf(stderr, "[kept %s]\n", dirs[i]);
            continue;
        }
        snprintf(cmd, sizeof(cmd), "rm -rf '%.511s'", dirs[i]);
        if (system(cmd) != 0)
            fprintf(stderr, "cannot remove %s\n", dirs[i]);
    }
}

static inline void test_tmpdirs_at_exit(void)
{
    test_tmpdirs(NULL);
}

/*
 * A fresh directory under $FERRY_TEST_TMP (or /tmp) for one test; static
 * storage. Removed at exit if the test passes (test_tmpdirs).
 */
static inline const char *test_tmpdir(const char *name)
{
    static char path[512];
    static int registered;
    const char *base = getenv("FERRY_TEST_TMP");
    char cmd[1200];

    snprintf(path, sizeof(path), "%s/%s.%d", base ? base : "/tmp", name, (int)getpid());
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' && mkdir -p '%s'", path, path);
    if (system(cmd) != 0) {
        fprintf(stderr, "cannot create %s\n", path);
        exit(1);
    }
    if (!registered) {
        registered = 1;
        atexit(test_tmpdirs_at_exit);
    }
    test_tmpdirs(path);
    return path;
}

#endif
