/* test_state.c - agent-dst/state: records, order, durability, locking, bad records. */
#include "test.h"

#include "agent-dst/state.h"

#include <lmdb.h>

#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char dir[600];

static struct ferry_state *open_ok(int flags)
{
    struct ferry_error err = {0};
    struct ferry_state *st = NULL;
    int rc = ferry_state_open(dir, flags, &st, &err);

    if (rc)
        fprintf(stderr, "open: %s\n", err.msg);
    ASSERT_EQ(rc, FERRY_OK);
    ASSERT(st != NULL);
    return st;
}

static void put_copy(struct ferry_state *st, const char *table, const void *key, size_t keylen,
                     int64_t rows, int done)
{
    struct ferry_copy_progress p;
    struct ferry_error err = {0};

    memset(&p, 0xAA, sizeof(p)); /* garbage past the strings must not matter */
    snprintf(p.table, sizeof(p.table), "%s", table);
    memcpy(p.key, key, keylen);
    p.keylen = keylen;
    p.rows = rows;
    p.done = done;
    ASSERT_EQ(ferry_state_copy_put(st, &p, &err), FERRY_OK);
}

struct walk {
    char names[8][256];
    struct ferry_copy_progress ps[8];
    int n;
    int stop_at;
};

static int walk_fn(const struct ferry_copy_progress *p, void *arg)
{
    struct walk *w = arg;

    if (w->n == w->stop_at)
        return 42;
    snprintf(w->names[w->n], sizeof(w->names[0]), "%s", p->table);
    w->ps[w->n] = *p;
    w->n++;
    return 0;
}

static void test_missing(void)
{
    struct ferry_error err = {0};
    struct ferry_state *st = NULL;

    ASSERT_EQ(ferry_state_open(dir, FERRY_STATE_READONLY, &st, &err), FERRY_ENOTFOUND);
    ASSERT(st == NULL);
    ASSERT(strstr(err.msg, "run ferry-dst sync first") != NULL);
    ASSERT(strstr(err.msg, dir) != NULL);
    ASSERT_EQ(ferry_state_open(dir, 0, &st, &err), FERRY_ENOTFOUND);
    ASSERT(st == NULL);
}

static void test_meta(void)
{
    struct ferry_state_meta m, g;
    struct ferry_error err = {0};
    struct ferry_state *st = open_ok(FERRY_STATE_CREATE);
    struct stat sb;

    ASSERT_EQ(stat(dir, &sb), 0);
    ASSERT_EQ(sb.st_mode & 0777, 0700);

    ASSERT_EQ(ferry_state_meta_get(st, &g, &err), FERRY_ENOTFOUND);
    ASSERT_EQ(ferry_state_set_hwm(st, 5, 0, &err), FERRY_ENOTFOUND);

    memset(&m, 0, sizeof(m));
    memset(m.tenant, 'x', sizeof(m.tenant) - 1); /* the longest tenant fits */
    snprintf(m.source, sizeof(m.source), "http://127.0.0.1:7700");
    m.start_head = 1234567890123LL;
    m.phase = FERRY_PHASE_COPYING;
    m.created = 1700000000;
    m.hwm = -1;
    m.last_sync = 0;
    ASSERT_EQ(ferry_state_meta_put(st, &m, &err), FERRY_OK);

    memset(&g, 0x55, sizeof(g));
    ASSERT_EQ(ferry_state_meta_get(st, &g, &err), FERRY_OK);
    ASSERT_EQ(strlen(g.tenant), 255);
    ASSERT(memcmp(g.tenant, m.tenant, sizeof(m.tenant)) == 0);
    ASSERT_STR(g.source, "http://127.0.0.1:7700");
    ASSERT_EQ(g.start_head, 1234567890123LL);
    ASSERT_EQ(g.phase, FERRY_PHASE_COPYING);
    ASSERT_EQ(g.created, 1700000000);
    ASSERT_EQ(g.hwm, -1);
    ASSERT_EQ(g.last_sync, 0);

    ASSERT_EQ(ferry_state_set_hwm(st, 55, 0, &err), FERRY_OK);
    ASSERT_EQ(ferry_state_meta_get(st, &g, &err), FERRY_OK);
    ASSERT_EQ(g.hwm, 55);
    ASSERT_EQ(g.last_sync, 0);
    ASSERT_EQ(g.start_head, 1234567890123LL);
    ASSERT_EQ(ferry_state_set_hwm(st, 60, 1700000100, &err), FERRY_OK);
    ASSERT_EQ(ferry_state_meta_get(st, &g, &err), FERRY_OK);
    ASSERT_EQ(g.hwm, 60);
    ASSERT_EQ(g.last_sync, 1700000100);
    ASSERT_EQ(ferry_state_set_hwm(st, 61, 0, &err), FERRY_OK);
    ASSERT_EQ(ferry_state_meta_get(st, &g, &err), FERRY_OK);
    ASSERT_EQ(g.hwm, 61);
    ASSERT_EQ(g.last_sync, 1700000100); /* 0 keeps the previous one */

    /* An unterminated string is refused, not truncated into another record. */
    memset(m.source, 'y', sizeof(m.source));
    ASSERT_EQ(ferry_state_meta_put(st, &m, &err), FERRY_EINTERNAL);
    ASSERT_EQ(ferry_state_meta_get(st, &g, &err), FERRY_OK);
    ASSERT_STR(g.source, "http://127.0.0.1:7700");

    ferry_state_close(st);
}

static void test_copy(void)
{
    static const unsigned char knul[] = {0, 1, 0, 0, 'z', 0};
    unsigned char big[1024];
    struct ferry_copy_progress p;
    struct ferry_error err = {0};
    struct ferry_state *st = open_ok(0);
    struct walk w;

    ASSERT_EQ(ferry_state_copy_get(st, "posts", &p, &err), FERRY_ENOTFOUND);
    ASSERT(strstr(err.msg, "posts") != NULL);

    memset(big, 0, sizeof(big));
    big[1023] = 0xff;
    /* inserted out of order; "post" is a prefix of "posts" */
    put_copy(st, "users", "", 0, 0, 0);
    put_copy(st, "posts", knul, sizeof(knul), 10, 0);
    put_copy(st, "channels", big, sizeof(big), 3, 1);
    put_copy(st, "post", "\x05", 1, 1, 0);
    put_copy(st, "a", "k", 1, 7, 1);

    memset(&p, 0, sizeof(p));
    ASSERT_EQ(ferry_state_copy_get(st, "posts", &p, &err), FERRY_OK);
    ASSERT_STR(p.table, "posts");
    ASSERT_EQ(p.keylen, sizeof(knul));
    ASSERT(memcmp(p.key, knul, sizeof(knul)) == 0);
    ASSERT_EQ(p.rows, 10);
    ASSERT_EQ(p.done, 0);

    ASSERT_EQ(ferry_state_copy_get(st, "channels", &p, &err), FERRY_OK);
    ASSERT_EQ(p.keylen, 1024);
    ASSERT(memcmp(p.key, big, sizeof(big)) == 0);
    ASSERT_EQ(p.done, 1);

    /* progress moves: a rewrite replaces the record */
    put_copy(st, "posts", "\0\0", 2, 5000, 1);
    ASSERT_EQ(ferry_state_copy_get(st, "posts", &p, &err), FERRY_OK);
    ASSERT_EQ(p.keylen, 2);
    ASSERT(memcmp(p.key, "\0\0", 2) == 0);
    ASSERT_EQ(p.rows, 5000);
    ASSERT_EQ(p.done, 1);

    memset(&w, 0, sizeof(w));
    w.stop_at = -1;
    ASSERT_EQ(ferry_state_copy_each(st, walk_fn, &w, &err), FERRY_OK);
    ASSERT_EQ(w.n, 5);
    ASSERT_STR(w.names[0], "a");
    ASSERT_STR(w.names[1], "channels");
    ASSERT_STR(w.names[2], "post");
    ASSERT_STR(w.names[3], "posts");
    ASSERT_STR(w.names[4], "users");
    ASSERT_EQ(w.ps[0].rows, 7);
    ASSERT_EQ(w.ps[3].keylen, 2);
    ASSERT_EQ(w.ps[4].keylen, 0);
    ASSERT_EQ(w.ps[2].key[0], 5);

    /* fn's nonzero value stops the walk and is returned */
    memset(&w, 0, sizeof(w));
    w.stop_at = 2;
    ASSERT_EQ(ferry_state_copy_each(st, walk_fn, &w, &err), 42);
    ASSERT_EQ(w.n, 2);

    p.keylen = sizeof(p.key) + 1;
    ASSERT_EQ(ferry_state_copy_put(st, &p, &err), FERRY_ETOOBIG);

    ferry_state_close(st);
}

static void test_cols(void)
{
    static const char cols[] = "id\0channel_id\0body\0";
    struct ferry_error err = {0};
    struct ferry_state_meta m;
    struct ferry_state *st = open_ok(0);
    char out[64];
    size_t len = 0;

    ASSERT_EQ(ferry_state_cols_get(st, "posts", out, sizeof(out), &len, &err), FERRY_ENOTFOUND);
    ASSERT(strstr(err.msg, "posts") != NULL);
    ASSERT_EQ(ferry_state_cols_get(st, "posts", NULL, 0, &len, &err), FERRY_ENOTFOUND);
    ASSERT_EQ(ferry_state_cols_put(st, "posts", cols, sizeof(cols) - 1, &err), FERRY_OK);
    ASSERT_EQ(ferry_state_cols_get(st, "posts", out, sizeof(out), &len, &err), FERRY_OK);
    ASSERT_EQ(len, sizeof(cols) - 1);
    ASSERT(memcmp(out, cols, len) == 0);
    /* whether there is one, without reading it */
    len = 0;
    ASSERT_EQ(ferry_state_cols_get(st, "posts", NULL, 0, &len, &err), FERRY_OK);
    ASSERT_EQ(len, sizeof(cols) - 1);
    /* a buffer too small is a bad record, not a cut list */
    ASSERT_EQ(ferry_state_cols_get(st, "posts", out, 4, &len, &err), FERRY_EDATA);
    /* "post" is another table; a rewrite replaces */
    ASSERT_EQ(ferry_state_cols_get(st, "post", out, sizeof(out), &len, &err), FERRY_ENOTFOUND);
    ASSERT_EQ(ferry_state_cols_put(st, "posts", "id\0", 3, &err), FERRY_OK);
    ASSERT_EQ(ferry_state_cols_get(st, "posts", out, sizeof(out), &len, &err), FERRY_OK);
    ASSERT_EQ(len, 3);
    /* beside the meta record, which stays readable */
    ASSERT_EQ(ferry_state_meta_get(st, &m, &err), FERRY_OK);
    ASSERT_EQ(ferry_state_cols_get(st, "", out, sizeof(out), &len, &err), FERRY_ENOTFOUND);
    ferry_state_close(st);
}

static void test_runs(void)
{
    struct ferry_error err = {0};
    struct ferry_state *st = open_ok(0);
    struct ferry_run r[3], got[10];
    time_t now = time(NULL);
    size_t n = 99;

    ASSERT_EQ(ferry_state_runs_last(st, got, 10, &n, &err), FERRY_OK);
    ASSERT_EQ(n, 0);

    for (int i = 0; i < 3; i++) {
        memset(&r[i], 0, sizeof(r[i]));
        snprintf(r[i].kind, sizeof(r[i].kind), "%s", i == 1 ? "verify" : "sync");
        r[i].hwm_before = 100 * i;
        ASSERT_EQ(ferry_state_run_begin(st, &r[i], &err), FERRY_OK);
        ASSERT_EQ(r[i].id, i + 1);
        ASSERT(r[i].started >= now && r[i].started <= time(NULL));
    }

    ASSERT_EQ(ferry_state_runs_last(st, got, 2, &n, &err), FERRY_OK);
    ASSERT_EQ(n, 2);
    ASSERT_EQ(got[0].id, 3);
    ASSERT_EQ(got[1].id, 2);
    ASSERT_STR(got[1].kind, "verify");
    ASSERT_EQ(got[1].hwm_before, 100);
    ASSERT_EQ(got[1].ended, 0);

    /* rewrite the middle run at its end */
    r[1].ended = r[1].started + 5;
    r[1].upserted = 123456789012LL;
    r[1].deleted = 7;
    r[1].hwm_after = 150;
    r[1].code = FERRY_EMISMATCH;
    snprintf(r[1].msg, sizeof(r[1].msg), "table \"posts\" differs");
    ASSERT_EQ(ferry_state_run_put(st, &r[1], &err), FERRY_OK);

    ASSERT_EQ(ferry_state_runs_last(st, got, 10, &n, &err), FERRY_OK);
    ASSERT_EQ(n, 3);
    ASSERT_EQ(got[0].id, 3);
    ASSERT_EQ(got[1].id, 2);
    ASSERT_EQ(got[2].id, 1);
    ASSERT_EQ(got[1].ended, r[1].started + 5);
    ASSERT_EQ(got[1].upserted, 123456789012LL);
    ASSERT_EQ(got[1].deleted, 7);
    ASSERT_EQ(got[1].hwm_after, 150);
    ASSERT_EQ(got[1].code, FERRY_EMISMATCH);
    ASSERT_STR(got[1].msg, "table \"posts\" differs");
    ASSERT_EQ(got[0].ended, 0);
    ASSERT_STR(got[2].kind, "sync");

    r[1].id = 99;
    ASSERT_EQ(ferry_state_run_put(st, &r[1], &err), FERRY_ENOTFOUND);
    ASSERT_EQ(ferry_state_runs_last(st, got, 10, &n, &err), FERRY_OK);
    ASSERT_EQ(n, 3);

    ferry_state_close(st);
}

/* A run's end and the meta it reached: one commit, both or neither. */
static void test_run_end(void)
{
    struct ferry_error err = {0};
    struct ferry_state *st = NULL;
    struct ferry_state_meta m, g;
    struct ferry_state_reached reached;
    struct ferry_run r, got[2];
    size_t n = 0;

    ASSERT_EQ(ferry_state_open(test_tmpdir("test_state_run_end"), FERRY_STATE_CREATE, &st, &err),
              FERRY_OK);
    memset(&m, 0, sizeof(m));
    snprintf(m.tenant, sizeof(m.tenant), "42");
    snprintf(m.source, sizeof(m.source), "http://127.0.0.1:7700");
    m.phase = FERRY_PHASE_STREAMING;
    m.hwm = 10;
    ASSERT_EQ(ferry_state_meta_put(st, &m, &err), FERRY_OK);
    memset(&r, 0, sizeof(r));
    snprintf(r.kind, sizeof(r.kind), "sync");
    ASSERT_EQ(ferry_state_run_begin(st, &r, &err), FERRY_OK);

    r.ended = r.started + 1;
    r.hwm_after = 20;
    reached.hwm = 20;
    reached.last_sync = 1700000001;
    reached.source_head = 25;
    reached.source_seen = 1700000000;
    ASSERT_EQ(ferry_state_run_end(st, &r, &reached, &err), FERRY_OK);
    ASSERT_EQ(ferry_state_meta_get(st, &g, &err), FERRY_OK);
    ASSERT_EQ(g.hwm, 20);
    ASSERT_EQ(g.last_sync, 1700000001);
    ASSERT_EQ(g.source_head, 25);
    ASSERT_EQ(g.source_seen, 1700000000);
    /* the rest of the meta as it was */
    ASSERT_STR(g.tenant, "42");
    ASSERT_EQ(g.phase, FERRY_PHASE_STREAMING);
    ASSERT_EQ(ferry_state_runs_last(st, got, 2, &n, &err), FERRY_OK);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(got[0].hwm_after, 20);

    /* an unknown run: the meta is not written either */
    r.id = 99;
    reached.hwm = 30;
    ASSERT_EQ(ferry_state_run_end(st, &r, &reached, &err), FERRY_ENOTFOUND);
    ASSERT_EQ(ferry_state_meta_get(st, &g, &err), FERRY_OK);
    ASSERT_EQ(g.hwm, 20);
    ferry_state_close(st);
}

/* Ids keep growing past 255 and 256 (big-endian keys sort numerically). */
static void test_many_runs(void)
{
    struct ferry_error err = {0};
    struct ferry_state *st = open_ok(0);
    struct ferry_run r, got[3];
    size_t n;

    for (int i = 0; i < 300; i++) {
        memset(&r, 0, sizeof(r));
        snprintf(r.kind, sizeof(r.kind), "follow");
        ASSERT_EQ(ferry_state_run_begin(st, &r, &err), FERRY_OK);
    }
    ASSERT_EQ(r.id, 303);
    ASSERT_EQ(ferry_state_runs_last(st, got, 3, &n, &err), FERRY_OK);
    ASSERT_EQ(n, 3);
    ASSERT_EQ(got[0].id, 303);
    ASSERT_EQ(got[1].id, 302);
    ASSERT_EQ(got[2].id, 301);
    ferry_state_close(st);
}

/* Only the last 1000 runs are kept: follow records one per round. */
static void test_runs_trimmed(void)
{
    static struct ferry_run got[1100];
    struct ferry_error err = {0};
    struct ferry_state *st = NULL;
    struct ferry_run r;
    char tdir[600];
    size_t n;

    snprintf(tdir, sizeof(tdir), "%s/trim", test_tmpdir("test_state_trim"));
    ASSERT_EQ(ferry_state_open(tdir, FERRY_STATE_CREATE, &st, &err), FERRY_OK);
    for (int i = 0; i < 1234; i++) {
        memset(&r, 0, sizeof(r));
        snprintf(r.kind, sizeof(r.kind), "follow");
        ASSERT_EQ(ferry_state_run_begin(st, &r, &err), FERRY_OK);
    }
    ASSERT_EQ(r.id, 1234);
    ASSERT_EQ(ferry_state_runs_last(st, got, 1100, &n, &err), FERRY_OK);
    ASSERT_EQ(n, 1000);
    ASSERT_EQ(got[0].id, 1234);
    ASSERT_EQ(got[999].id, 235);
    /* a rewrite of a trimmed run is refused, of a kept one accepted */
    r.id = 234;
    ASSERT_EQ(ferry_state_run_put(st, &r, &err), FERRY_ENOTFOUND);
    r.id = 235;
    ASSERT_EQ(ferry_state_run_put(st, &r, &err), FERRY_OK);
    ferry_state_close(st);
}

static void test_reopen(void)
{
    struct ferry_state *st = open_ok(FERRY_STATE_CREATE); /* CREATE on an existing state is fine */
    struct ferry_error err = {0};
    struct ferry_copy_progress p;
    struct ferry_state_meta m;
    struct ferry_run got[400];
    struct walk w;
    size_t n;

    ASSERT_EQ(ferry_state_meta_get(st, &m, &err), FERRY_OK);
    ASSERT_EQ(m.hwm, 61);
    ASSERT_EQ(m.last_sync, 1700000100);
    ASSERT_EQ(ferry_state_copy_get(st, "posts", &p, &err), FERRY_OK);
    ASSERT_EQ(p.rows, 5000);
    ASSERT(memcmp(p.key, "\0\0", 2) == 0 && p.keylen == 2);
    memset(&w, 0, sizeof(w));
    w.stop_at = -1;
    ASSERT_EQ(ferry_state_copy_each(st, walk_fn, &w, &err), FERRY_OK);
    ASSERT_EQ(w.n, 5);
    ASSERT_EQ(ferry_state_runs_last(st, got, 400, &n, &err), FERRY_OK);
    ASSERT_EQ(n, 303);
    ASSERT_EQ(got[301].id, 2);
    ASSERT_STR(got[301].msg, "table \"posts\" differs");
    ASSERT_EQ(got[302].id, 1);
    ferry_state_close(st);
}

static int wait_child(pid_t pid)
{
    int status;

    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT(WIFEXITED(status));
    return WEXITSTATUS(status);
}

/*
 * The child's checks report through its exit status: 0 when all passed, else
 * the line of the first that failed (ASSERT would exit 1 with a message).
 */
#define CHILD_CHECK(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "child: %s:%d: %s\n", __FILE__, __LINE__, #cond);                      \
            _exit(2);                                                                              \
        }                                                                                          \
    } while (0)

/* The lock file holds exactly "<pid>\n", also over a longer text left by an earlier holder. */
static void test_lock_file_text(void)
{
    char lockpath[700], text[64], want[32];
    struct ferry_state *st;
    FILE *f;
    size_t n;

    snprintf(lockpath, sizeof(lockpath), "%s/ferry.lock", dir);
    f = fopen(lockpath, "w");
    ASSERT(f != NULL);
    fputs("4194303999999999 and more text\n", f);
    fclose(f);
    st = open_ok(0);
    f = fopen(lockpath, "r");
    ASSERT(f != NULL);
    n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    snprintf(want, sizeof(want), "%ld\n", (long)getpid());
    ASSERT_STR(text, want);
    ferry_state_close(st);
}

static void test_lock_and_readers(void)
{
    struct ferry_error err = {0};
    struct ferry_state *st = open_ok(0);
    char lockpath[700], pidtext[32], want[64];
    int go[2], ready[2];
    FILE *f;
    pid_t pid;

    /* the lock file names its holder */
    snprintf(lockpath, sizeof(lockpath), "%s/ferry.lock", dir);
    f = fopen(lockpath, "r");
    ASSERT(f != NULL);
    ASSERT(fgets(pidtext, sizeof(pidtext), f) != NULL);
    fclose(f);
    ASSERT_EQ(strtol(pidtext, NULL, 10), getpid());

    /* a second writer, in another process, is refused and told who holds it */
    pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        struct ferry_state *st2 = NULL;
        struct ferry_error e2 = {0};

        snprintf(want, sizeof(want), "in use by pid %ld;", (long)getppid());
        CHILD_CHECK(ferry_state_open(dir, 0, &st2, &e2) == FERRY_ECONFIG);
        CHILD_CHECK(st2 == NULL);
        CHILD_CHECK(strstr(e2.msg, want) != NULL);
        CHILD_CHECK(strstr(e2.msg, "wait for it or stop it") != NULL);
        CHILD_CHECK(ferry_state_open(dir, FERRY_STATE_CREATE, &st2, &e2) == FERRY_ECONFIG);
        _exit(0);
    }
    ASSERT_EQ(wait_child(pid), 0);

    /* a reader opens while the writer holds the state, and sees each commit */
    ASSERT_EQ(pipe(go), 0);
    ASSERT_EQ(pipe(ready), 0);
    pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        struct ferry_state *rd = NULL;
        struct ferry_error e2 = {0};
        struct ferry_state_meta m;
        struct ferry_run runs[2];
        char c;
        size_t n;

        CHILD_CHECK(ferry_state_open(dir, FERRY_STATE_READONLY, &rd, &e2) == FERRY_OK);
        CHILD_CHECK(ferry_state_meta_get(rd, &m, &e2) == FERRY_OK);
        CHILD_CHECK(m.hwm == 61);
        CHILD_CHECK(ferry_state_runs_last(rd, runs, 2, &n, &e2) == FERRY_OK && n == 2);
        CHILD_CHECK(runs[0].id == 303);
        CHILD_CHECK(write(ready[1], "r", 1) == 1);
        CHILD_CHECK(read(go[0], &c, 1) == 1);
        CHILD_CHECK(ferry_state_meta_get(rd, &m, &e2) == FERRY_OK);
        CHILD_CHECK(m.hwm == 70);
        /* writes through a read-only handle fail and change nothing */
        CHILD_CHECK(ferry_state_set_hwm(rd, 1, 0, &e2) != FERRY_OK);
        ferry_state_close(rd);
        _exit(0);
    }
    {
        char c;

        ASSERT_EQ(read(ready[0], &c, 1), 1);
        ASSERT_EQ(ferry_state_set_hwm(st, 70, 0, &err), FERRY_OK);
        ASSERT_EQ(write(go[1], "g", 1), 1);
    }
    ASSERT_EQ(wait_child(pid), 0);
    close(go[0]);
    close(go[1]);
    close(ready[0]);
    close(ready[1]);
    {
        struct ferry_state_meta m;

        ASSERT_EQ(ferry_state_meta_get(st, &m, &err), FERRY_OK);
        ASSERT_EQ(m.hwm, 70);
    }

    /* in this process too, a second writable handle is refused */
    {
        struct ferry_state *st2 = NULL;

        ASSERT_EQ(ferry_state_open(dir, 0, &st2, &err), FERRY_ECONFIG);
        ASSERT(st2 == NULL);
    }
    ferry_state_close(st);

    /* a writer that dies without closing leaves no lock behind */
    pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        struct ferry_state *st2 = NULL;
        struct ferry_error e2 = {0};

        CHILD_CHECK(ferry_state_open(dir, 0, &st2, &e2) == FERRY_OK);
        CHILD_CHECK(ferry_state_set_hwm(st2, 71, 0, &e2) == FERRY_OK);
        _exit(0);
    }
    ASSERT_EQ(wait_child(pid), 0);
    st = open_ok(0);
    {
        struct ferry_state_meta m;

        ASSERT_EQ(ferry_state_meta_get(st, &m, &err), FERRY_OK);
        ASSERT_EQ(m.hwm, 71);
    }
    ferry_state_close(st);
}

/* Write raw values with LMDB itself, as another version of ferry might have. */
static void raw_put(const char *db, const void *key, size_t keylen, const void *val, size_t len)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_val k = {keylen, (void *)key};
    MDB_val v = {len, (void *)val};

    ASSERT_EQ(mdb_env_create(&env), 0);
    ASSERT_EQ(mdb_env_set_maxdbs(env, 8), 0);
    ASSERT_EQ(mdb_env_open(env, dir, 0, 0600), 0);
    ASSERT_EQ(mdb_txn_begin(env, NULL, 0, &txn), 0);
    ASSERT_EQ(mdb_dbi_open(txn, db, 0, &dbi), 0);
    ASSERT_EQ(mdb_put(txn, dbi, &k, &v, 0), 0);
    ASSERT_EQ(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

/* Read one raw value (copied into out, at most cap bytes); returns its size. */
static size_t raw_get(const char *db, const void *key, size_t keylen, void *out, size_t cap)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_val k = {keylen, (void *)key};
    MDB_val v;
    size_t n;

    ASSERT_EQ(mdb_env_create(&env), 0);
    ASSERT_EQ(mdb_env_set_maxdbs(env, 8), 0);
    ASSERT_EQ(mdb_env_open(env, dir, MDB_RDONLY, 0600), 0);
    ASSERT_EQ(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    ASSERT_EQ(mdb_dbi_open(txn, db, 0, &dbi), 0);
    ASSERT_EQ(mdb_get(txn, dbi, &k, &v), 0);
    n = v.mv_size;
    ASSERT(n <= cap);
    memcpy(out, v.mv_data, n);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return n;
}

static void test_bad_records(void)
{
    unsigned char rec[4096];
    struct ferry_error err = {0};
    struct ferry_copy_progress p;
    struct ferry_state_meta m;
    struct ferry_run runs[4];
    struct ferry_state *st;
    struct walk w;
    size_t n, len;

    /* a copy record of the wrong length */
    raw_put("copy", "bad", 3, "0123456789", 10);
    st = open_ok(0);
    ASSERT_EQ(ferry_state_copy_get(st, "bad", &p, &err), FERRY_EDATA);
    ASSERT(strstr(err.msg, "was written by another ferry version") != NULL);
    ASSERT(strstr(err.msg, dir) != NULL);
    ASSERT_EQ(ferry_state_copy_get(st, "posts", &p, &err), FERRY_OK); /* others still read */
    memset(&w, 0, sizeof(w));
    w.stop_at = -1;
    ASSERT_EQ(ferry_state_copy_each(st, walk_fn, &w, &err), FERRY_EDATA);
    ASSERT_EQ(w.n, 1); /* "a", then "bad" stops the walk */
    ferry_state_close(st);

    /* a copy record of the right length filed under another table's name */
    len = raw_get("copy", "posts", 5, rec, sizeof(rec));
    raw_put("copy", "bad", 3, rec, len);
    st = open_ok(FERRY_STATE_READONLY);
    ASSERT_EQ(ferry_state_copy_get(st, "bad", &p, &err), FERRY_EDATA);
    ferry_state_close(st);

    /* a meta record of the right length but another version byte */
    len = raw_get("meta", "meta", 4, rec, sizeof(rec));
    st = open_ok(0);
    ASSERT_EQ(ferry_state_meta_get(st, &m, &err), FERRY_OK);
    ferry_state_close(st);
    rec[0] = 2;
    raw_put("meta", "meta", 4, rec, len);
    st = open_ok(0);
    ASSERT_EQ(ferry_state_meta_get(st, &m, &err), FERRY_EDATA);
    ASSERT(strstr(err.msg, "another ferry version") != NULL);
    ASSERT_EQ(ferry_state_set_hwm(st, 80, 0, &err), FERRY_EDATA);
    ferry_state_close(st);
    rec[0] = 1;
    raw_put("meta", "meta", 4, rec, len - 1);
    st = open_ok(FERRY_STATE_READONLY);
    ASSERT_EQ(ferry_state_meta_get(st, &m, &err), FERRY_EDATA);
    ferry_state_close(st);

    /* the newest run one byte too long */
    {
        unsigned char key[8] = {0, 0, 0, 0, 0, 0, 0x01, 0x2f}; /* 303 */

        len = raw_get("runs", key, 8, rec, sizeof(rec));
        raw_put("runs", key, 8, rec, len + 1);
    }
    st = open_ok(0);
    ASSERT_EQ(ferry_state_runs_last(st, runs, 4, &n, &err), FERRY_EDATA);
    ferry_state_close(st);
}

/*
 * A data.mdb cut short: empty (LMDB would make a new state of it, and a
 * sync would copy again over the old target without a word), or shorter
 * than its last page (read through the map: SIGBUS). Both refused as
 * damaged, saying what to do. Oracle: the file's own size, set here.
 */
static void test_truncated(void)
{
    char tdir[700], path[760];
    struct ferry_error err = {0};
    struct ferry_state *st = NULL;

    snprintf(tdir, sizeof(tdir), "%s/cut", test_tmpdir("test_state_cut"));
    ASSERT_EQ(ferry_state_open(tdir, FERRY_STATE_CREATE, &st, &err), FERRY_OK);
    for (int i = 0; i < 400; i++) {
        char table[32];

        snprintf(table, sizeof(table), "table_%03d", i);
        put_copy(st, table, table, strlen(table), i, 0);
    }
    ferry_state_close(st);
    snprintf(path, sizeof(path), "%s/data.mdb", tdir);
    ASSERT_EQ(truncate(path, 8192), 0); /* the two meta pages of 4 KB stay */
    for (int flags = FERRY_STATE_CREATE; flags >= 0; flags -= FERRY_STATE_CREATE) {
        st = NULL;
        ASSERT_EQ(ferry_state_open(tdir, flags, &st, &err), FERRY_EDATA);
        ASSERT(st == NULL);
        ASSERT(strstr(err.msg, "is damaged") != NULL);
        ASSERT(strstr(err.msg, "fresh [target] state directory") != NULL);
    }
    ASSERT_EQ(ferry_state_open(tdir, FERRY_STATE_READONLY, &st, &err), FERRY_EDATA);
    ASSERT_EQ(truncate(path, 0), 0);
    ASSERT_EQ(ferry_state_open(tdir, FERRY_STATE_CREATE, &st, &err), FERRY_EDATA);
    ASSERT(strstr(err.msg, "is empty") != NULL);
    ASSERT_EQ(ferry_state_open(tdir, FERRY_STATE_READONLY, &st, &err), FERRY_EDATA);
}

int main(void)
{
    snprintf(dir, sizeof(dir), "%s/deep/state", test_tmpdir("test_state"));

    test_missing();
    test_meta();
    test_copy();
    test_cols();
    test_runs();
    test_run_end();
    test_many_runs();
    test_reopen();
    test_runs_trimmed();
    test_lock_file_text();
    test_lock_and_readers();
    test_bad_records();
    test_truncated();
    return TEST_DONE();
}
