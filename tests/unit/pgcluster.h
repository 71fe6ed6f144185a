/*
 * pgcluster.h - a throw-away PostgreSQL cluster for unit tests, through
 * scripts/pgcluster.sh (one per test executable: include in one file).
 *
 *   test_pg_start("db_pg", "ferry_test", url, sizeof(url))
 *       -> 0 and the database's URL, or 77 when the machine has no
 *          PostgreSQL server binaries (the caller says so loudly and skips);
 *   test_pg_passed()  at the end of a run that passed: the cluster's files
 *                     go with it (a failed run keeps them, server.log too);
 *   test_pg_script("createdb NAME", out, size)  any other pgcluster.sh
 *                     command on the test's cluster ("bindir" needs none).
 * The cluster is stopped at exit.
 */
#ifndef FERRY_TEST_PGCLUSTER_H
#define FERRY_TEST_PGCLUSTER_H

#include "test.h"

#include <errno.h>
#include <sys/wait.h>

static char test_pg_source[512];
static char test_pg_tmp[520];
static char test_pg_cluster[600];
static int test_pg_running;
static int test_pg_ok;

/* Run cmd, its stdout (trailing newlines cut) into out; returns the exit status. */
static inline int test_run_capture(const char *cmd, char *out, size_t size)
{
    FILE *f = popen(cmd, "r");
    size_t n = 0;
    int status;

    if (!f) {
        fprintf(stderr, "popen %s: %s\n", cmd, strerror(errno));
        exit(1);
    }
    while (n + 1 < size) {
        size_t got = fread(out + n, 1, size - 1 - n, f);

        if (got == 0)
            break;
        n += got;
    }
    out[n] = '\0';
    while (n > 0 && out[n - 1] == '\n')
        out[--n] = '\0';
    status = pclose(f);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/*
 * scripts/pgcluster.sh with args ("createdb NAME", "bindir"), the test's
 * cluster directory inserted after the command's first word when it takes
 * one; its output in out. Returns the exit status.
 */
static inline int test_pg_script(const char *args, char *out, size_t size)
{
    const char *sp = strchr(args, ' ');
    char cmd[2200];

    if (strcmp(args, "bindir") == 0)
        snprintf(cmd, sizeof(cmd), "'%s/scripts/pgcluster.sh' bindir", test_pg_source);
    else
        snprintf(cmd, sizeof(cmd), "'%s/scripts/pgcluster.sh' %.*s '%s'%s", test_pg_source,
                 (int)(sp ? (size_t)(sp - args) : strlen(args)), args, test_pg_cluster,
                 sp ? sp : "");
    return test_run_capture(cmd, out, size);
}

static inline void test_pg_stop(void)
{
    char out[256], cmd[700];

    if (!test_pg_running)
        return;
    test_pg_running = 0;
    if (test_pg_script("stop", out, sizeof(out)) != 0) {
        fprintf(stderr, "stopping the cluster in %s failed\n", test_pg_cluster);
        return;
    }
    if (test_pg_ok) {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", test_pg_tmp);
        if (system(cmd) != 0)
            fprintf(stderr, "cannot remove %s\n", test_pg_tmp);
    }
}

static inline void test_pg_passed(void)
{
    test_pg_ok = 1;
}

static inline int test_pg_start(const char *name, const char *db, char *url, size_t size)
{
    const char *src = getenv("FERRY_SOURCE_DIR");
    char out[1024], args[300];
    int status;

    if (src) {
        snprintf(test_pg_source, sizeof(test_pg_source), "%s", src);
    } else {
        /* __FILE__ is .../tests/unit/pgcluster.h in a CMake build */
        snprintf(test_pg_source, sizeof(test_pg_source), "%s", __FILE__);
        for (int i = 0; i < 3; i++) {
            char *slash = strrchr(test_pg_source, '/');

            if (slash)
                *slash = '\0';
        }
    }
    snprintf(test_pg_tmp, sizeof(test_pg_tmp), "%s", test_tmpdir(name));
    snprintf(test_pg_cluster, sizeof(test_pg_cluster), "%s/cluster", test_pg_tmp);
    test_pg_running = 1;
    atexit(test_pg_stop);
    status = test_pg_script("start", out, sizeof(out));
    if (status == 77) {
        test_pg_running = 0;
        return 77;
    }
    if (status != 0) {
        fprintf(stderr, "pgcluster.sh start %s failed with status %d\n", test_pg_cluster, status);
        exit(1);
    }
    snprintf(args, sizeof(args), "createdb %s", db);
    ASSERT_EQ(test_pg_script(args, url, size), 0);
    ASSERT(strncmp(url, "postgresql://", 13) == 0);
    return 0;
}

#endif
