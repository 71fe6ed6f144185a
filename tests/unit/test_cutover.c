/*
 * test_cutover.c - the pieces of migration mode and cutover that need no
 * network: freeze messages (proto), the cutover record and the older meta
 * record (state), the freeze triggers on SQLite (freeze), the run log
 * (progress).
 */
#include "../../agent-dst/progress.h"
#include "../../agent-dst/state.h"
#include "../../agent-src/capture.h"
#include "../../agent-src/freeze.h"
#include "../../common/config.h"
#include "../../common/db/db.h"
#include "../../common/scope.h"
#include "../../proto/proto.h"
#include "test.h"

#include <lmdb.h>

static struct ferry_error err;

/* ---- proto ---- */

/*
 * A freeze request written byte by byte (msgpack fixmap, fixstr keys): the
 * first n of v, tenant "7", on, extra. bad_variant: 1 "on" is the int 1,
 * 2 the version is 2.
 */
static int bad_variant;

static size_t freeze_body(char *out, int n)
{
    static const char *const keys[] = {"v", "tenant", "on", "extra"};
    size_t len = 0;

    out[len++] = (char)(0x80 | n);
    for (int i = 0; i < n; i++) {
        size_t kl = strlen(keys[i]);

        out[len++] = (char)(0xa0 | kl);
        memcpy(out + len, keys[i], kl);
        len += kl;
        if (i == 0) {
            out[len++] = (char)(bad_variant == 2 ? 2 : FERRY_PROTO_VERSION);
        } else if (i == 1) {
            out[len++] = (char)0xa1;
            out[len++] = '7';
        } else {
            out[len++] = (char)(bad_variant == 1 ? 0x01 : 0xc3);
        }
    }
    return len;
}

static void test_freeze_messages(void)
{
    char tenant42[] = "42";
    struct ferry_request rq, back;
    struct ferry_freeze_reply r, rb;
    char buf[256];
    char *out = NULL;
    size_t len = 0;

    memset(&rq, 0, sizeof(rq));
    rq.type = FERRY_REQ_FREEZE;
    rq.tenant = tenant42;
    rq.on = 1;
    ASSERT_EQ(ferry_request_encode(&rq, &out, &len, &err), FERRY_OK);
    ASSERT_EQ(ferry_request_decode(FERRY_REQ_FREEZE, out, len, NULL, &back, &err), FERRY_OK);
    ASSERT_STR(back.tenant, "42");
    ASSERT_EQ(back.on, 1);
    ferry_request_release(&back);
    /* a freeze body is not a changes request, nor the other way round */
    ASSERT_EQ(ferry_request_decode(FERRY_REQ_CHANGES, out, len, NULL, &back, &err), FERRY_EPROTO);
    free(out);
    rq.on = 0;
    ASSERT_EQ(ferry_request_encode(&rq, &out, &len, &err), FERRY_OK);
    ASSERT_EQ(ferry_request_decode(FERRY_REQ_FREEZE, out, len, NULL, &back, &err), FERRY_OK);
    ASSERT_EQ(back.on, 0);
    ferry_request_release(&back);
    free(out);

    /* strictness: missing key, wrong type, unknown key, other version */
    bad_variant = 0;
    len = freeze_body(buf, 2);
    ASSERT_EQ(ferry_request_decode(FERRY_REQ_FREEZE, buf, len, NULL, &back, &err), FERRY_EPROTO);
    ASSERT(strstr(err.msg, "missing key \"on\"") != NULL);
    len = freeze_body(buf, 3);
    ASSERT_EQ(ferry_request_decode(FERRY_REQ_FREEZE, buf, len, NULL, &back, &err), FERRY_OK);
    ferry_request_release(&back);
    bad_variant = 1;
    len = freeze_body(buf, 3);
    ASSERT_EQ(ferry_request_decode(FERRY_REQ_FREEZE, buf, len, NULL, &back, &err), FERRY_EPROTO);
    ASSERT(strstr(err.msg, "on") != NULL);
    bad_variant = 2;
    len = freeze_body(buf, 3);
    ASSERT_EQ(ferry_request_decode(FERRY_REQ_FREEZE, buf, len, NULL, &back, &err), FERRY_EPROTO);
    ASSERT(strstr(err.msg, "version") != NULL);
    bad_variant = 0;
    len = freeze_body(buf, 4);
    ASSERT_EQ(ferry_request_decode(FERRY_REQ_FREEZE, buf, len, NULL, &back, &err), FERRY_EPROTO);
    ASSERT(strstr(err.msg, "unknown key \"extra\"") != NULL);
    for (size_t cut = 0; cut < len; cut++)
        ASSERT(ferry_request_decode(FERRY_REQ_FREEZE, buf, cut, NULL, &back, &err) != FERRY_OK);

    /* the reply */
    memset(&r, 0, sizeof(r));
    snprintf(r.tenant, sizeof(r.tenant), "team-\"9\"");
    r.frozen = 1;
    r.head = INT64_MAX;
    ASSERT_EQ(ferry_freeze_reply_encode(&r, &out, &len, &err), FERRY_OK);
    ASSERT_EQ(ferry_freeze_reply_decode(out, len, NULL, &rb, &err), FERRY_OK);
    ASSERT_STR(rb.tenant, "team-\"9\"");
    ASSERT_EQ(rb.frozen, 1);
    ASSERT_EQ(rb.head, INT64_MAX);
    for (size_t cut = 0; cut < len; cut++)
        ASSERT(ferry_freeze_reply_decode(out, cut, NULL, &rb, &err) != FERRY_OK);
    free(out);
    /* a tenant over the limit is refused, not truncated */
    memset(r.tenant, 'x', sizeof(r.tenant) - 1);
    r.tenant[sizeof(r.tenant) - 1] = '\0';
    ASSERT_EQ(ferry_freeze_reply_encode(&r, &out, &len, &err), FERRY_OK);
    {
        struct ferry_limits lim = ferry_limits_default;

        lim.max_name = 16;
        ASSERT_EQ(ferry_freeze_reply_decode(out, len, &lim, &rb, &err), FERRY_ETOOBIG);
    }
    ASSERT_EQ(ferry_freeze_reply_decode(out, len, NULL, &rb, &err), FERRY_OK);
    ASSERT_EQ(strlen(rb.tenant), sizeof(rb.tenant) - 1);
    free(out);
    r.tenant[0] = '\0';
    ASSERT_EQ(ferry_freeze_reply_encode(&r, &out, &len, &err), FERRY_OK);
    ASSERT_EQ(ferry_freeze_reply_decode(out, len, NULL, &rb, &err), FERRY_EPROTO);
    free(out);
}

/* ---- state ---- */

static void test_cutover_record(void)
{
    const char *dir = test_tmpdir("cutover_state");
    struct ferry_state *st = NULL;
    struct ferry_state_meta m;
    struct ferry_cutover c, back;
    struct ferry_cutover_table t[3];

    ASSERT_EQ(ferry_state_open(dir, FERRY_STATE_CREATE, &st, &err), FERRY_OK);
    memset(&m, 0, sizeof(m));
    snprintf(m.tenant, sizeof(m.tenant), "7");
    m.hwm = 10;
    m.phase = FERRY_PHASE_STREAMING;
    ASSERT_EQ(ferry_state_meta_put(st, &m, &err), FERRY_OK);
    ASSERT_EQ(ferry_state_cutover_get(st, &back, &err), FERRY_ENOTFOUND);
    ASSERT_EQ(ferry_state_set_source_head(st, 99, 1700000000, &err), FERRY_OK);
    ASSERT_EQ(ferry_state_set_hwm(st, 12, 5, &err), FERRY_OK);
    ASSERT_EQ(ferry_state_meta_get(st, &m, &err), FERRY_OK);
    ASSERT_EQ(m.source_head, 99);
    ASSERT_EQ(m.source_seen, 1700000000);
    ASSERT_EQ(m.hwm, 12);

    memset(t, 0, sizeof(t));
    snprintf(t[0].table, sizeof(t[0].table), "teams");
    t[0].rows = 1;
    t[0].checksum = 0xfedcba9876543210ull;
    snprintf(t[1].table, sizeof(t[1].table), "posts");
    t[1].rows = 123456789;
    t[1].checksum = 1;
    snprintf(t[2].table, sizeof(t[2].table), "empty");
    memset(&c, 0, sizeof(c));
    c.at = 1700000001;
    c.head = 99;
    c.hwm = 98;
    c.tables = t;
    c.ntables = 3;
    ASSERT_EQ(ferry_state_cutover_put(st, &c, &err), FERRY_OK);
    c.done = 1;
    ASSERT_EQ(ferry_state_cutover_put(st, &c, &err), FERRY_OK);
    ferry_state_close(st);

    /* read back by a reader, as status does */
    ASSERT_EQ(ferry_state_open(dir, FERRY_STATE_READONLY, &st, &err), FERRY_OK);
    ASSERT_EQ(ferry_state_cutover_get(st, &back, &err), FERRY_OK);
    ASSERT_EQ(back.done, 1);
    ASSERT_EQ(back.at, 1700000001);
    ASSERT_EQ(back.head, 99);
    ASSERT_EQ(back.hwm, 98);
    ASSERT_EQ(back.ntables, 3);
    ASSERT_STR(back.tables[1].table, "posts");
    ASSERT_EQ(back.tables[1].rows, 123456789);
    ASSERT(back.tables[0].checksum == 0xfedcba9876543210ull);
    ASSERT_STR(back.tables[2].table, "empty");
    ferry_cutover_release(&back);
    ASSERT(back.tables == NULL);
    /* the meta record is untouched by the cutover record beside it */
    ASSERT_EQ(ferry_state_meta_get(st, &m, &err), FERRY_OK);
    ASSERT_STR(m.tenant, "7");
    ferry_state_close(st);

    /* records that do not add up are refused, never misread */
    {
        MDB_env *env;
        MDB_txn *txn;
        MDB_dbi dbi;
        MDB_val k = {7, (void *)"cutover"};
        MDB_val mk = {4, (void *)"meta"};
        MDB_val v;
        unsigned char rec[4096];
        size_t metalen;

        ASSERT_EQ(mdb_env_create(&env), 0);
        ASSERT_EQ(mdb_env_set_maxdbs(env, 8), 0);
        ASSERT_EQ(mdb_env_open(env, dir, 0, 0600), 0);
        ASSERT_EQ(mdb_txn_begin(env, NULL, 0, &txn), 0);
        ASSERT_EQ(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
        ASSERT_EQ(mdb_get(txn, dbi, &k, &v), 0);
        ASSERT(v.mv_size < sizeof(rec));
        memcpy(rec, v.mv_data, v.mv_size);
        /* claim 1000 tables in a record that holds 3 */
        rec[1 + 8 + 4 + 8 + 8] = 0xe8;
        rec[1 + 8 + 4 + 8 + 8 + 1] = 0x03;
        v.mv_data = rec;
        ASSERT_EQ(mdb_put(txn, dbi, &k, &v, 0), 0);
        /* a meta record as the first version wrote it (without the source head) */
        ASSERT_EQ(mdb_get(txn, dbi, &mk, &v), 0);
        metalen = v.mv_size - 16;
        memcpy(rec, v.mv_data, metalen);
        v.mv_data = rec;
        v.mv_size = metalen;
        ASSERT_EQ(mdb_put(txn, dbi, &mk, &v, 0), 0);
        ASSERT_EQ(mdb_txn_commit(txn), 0);
        mdb_env_close(env);
    }
    ASSERT_EQ(ferry_state_open(dir, FERRY_STATE_READONLY, &st, &err), FERRY_OK);
    ASSERT_EQ(ferry_state_cutover_get(st, &back, &err), FERRY_EDATA);
    ASSERT(back.tables == NULL);
    ASSERT_EQ(ferry_state_meta_get(st, &m, &err), FERRY_OK);
    ASSERT_EQ(m.hwm, 12);
    ASSERT_EQ(m.source_head, 0);
    ASSERT_EQ(m.source_seen, 0);
    ferry_state_close(st);
}

/* ---- freeze on SQLite ---- */

static const char schema[] =
    "CREATE TABLE teams(id INTEGER PRIMARY KEY, name TEXT);"
    "CREATE TABLE channels(id INTEGER PRIMARY KEY, team_id INTEGER NOT NULL REFERENCES teams(id) "
    "ON DELETE CASCADE, name TEXT);"
    "CREATE TABLE posts(id INTEGER PRIMARY KEY, channel_id INTEGER NOT NULL REFERENCES "
    "channels(id) ON DELETE CASCADE, body TEXT);"
    "INSERT INTO teams VALUES (1, 'one'), (2, 'two');"
    "INSERT INTO channels VALUES (10, 1, 'a'), (20, 2, 'b');"
    "INSERT INTO posts VALUES (100, 10, 'x'), (200, 20, 'y');";

/* Run sql as the application; FERRY_OK or the database's refusal in err. */
static int app(struct ferry_db *db, const char *sql)
{
    ferry_error_clear(&err);
    return ferry_db_exec(db, sql, &err);
}

static void expect_frozen(struct ferry_db *db, const char *sql, const char *tenant)
{
    char want[128];

    snprintf(want, sizeof(want), "tenant %s is frozen for migration by ferry", tenant);
    ASSERT_EQ(app(db, sql), FERRY_EDB);
    if (!strstr(err.msg, want)) {
        fprintf(stderr, "%s: %s\n", sql, err.msg);
        ASSERT(0);
    }
}

static void test_freeze_sqlite(void)
{
    const char *dir = test_tmpdir("freeze_sqlite");
    struct ferry_config cfg;
    struct ferry_db *db = NULL, *appdb = NULL;
    struct ferry_scope *s = NULL;
    struct ferry_freezer *f = NULL;
    char url[600], conf[600];
    int64_t head = -1, since = 0;
    int frozen = 0;
    FILE *fp;

    snprintf(url, sizeof(url), "sqlite://%s/src.db", dir);
    snprintf(conf, sizeof(conf), "%s/src.conf", dir);
    fp = fopen(conf, "w");
    ASSERT(fp != NULL);
    fprintf(fp, "[source]\ndatabase = %s\n[scope]\nroot = teams\n", url);
    fclose(fp);
    memset(&cfg, 0, sizeof(cfg));
    ASSERT_EQ(ferry_config_load(conf, &cfg, &err), FERRY_OK);
    ASSERT_EQ(ferry_db_open(url, FERRY_DB_CREATE, &db, &err), FERRY_OK);
    ASSERT_EQ(ferry_db_exec(db, schema, &err), FERRY_OK);
    ASSERT_EQ(ferry_scope_resolve(db, &cfg, &s, &err), FERRY_OK);

    /* without install: a clear configuration error */
    ASSERT_EQ(ferry_freeze_open(&cfg, &f, &err), FERRY_ECONFIG);
    ASSERT(strstr(err.msg, "ferry-src install") != NULL);
    ASSERT_EQ(ferry_capture_install(db, s, FERRY_INSTALL_LOCK_WAIT, &err), FERRY_OK);
    ASSERT_EQ(ferry_freeze_install(db, s, &err), FERRY_OK);
    ASSERT_EQ(ferry_freeze_install(db, s, &err), FERRY_OK); /* idempotent */
    ASSERT_EQ(ferry_freeze_open(&cfg, &f, &err), FERRY_OK);

    ASSERT_EQ(ferry_freeze_set(f, "2", 1, "unit test", &head, &err), FERRY_OK);
    ASSERT(head >= 0);
    ASSERT_EQ(ferry_freeze_get(f, "2", &frozen, &since, &err), FERRY_OK);
    ASSERT_EQ(frozen, 1);
    ASSERT(since > 0);
    ASSERT_EQ(ferry_freeze_get(f, "1", &frozen, NULL, &err), FERRY_OK);
    ASSERT_EQ(frozen, 0);
    ASSERT_EQ(ferry_freeze_set(f, "3", 1, NULL, NULL, &err), FERRY_ENOTFOUND);
    ASSERT_EQ(ferry_freeze_set(f, "two", 1, NULL, NULL, &err),
              FERRY_ECONFIG); /* the operator's input: exit 2 */

    /* another connection, as the application */
    ASSERT_EQ(ferry_db_open(url, 0, &appdb, &err), FERRY_OK);
    ASSERT_EQ(ferry_db_exec(appdb, "PRAGMA foreign_keys = ON", &err), FERRY_OK);
    expect_frozen(appdb, "INSERT INTO posts VALUES (201, 20, 'new')", "2");
    expect_frozen(appdb, "UPDATE posts SET body = 'z' WHERE id = 200", "2");
    expect_frozen(appdb, "DELETE FROM posts WHERE id = 200", "2");
    expect_frozen(appdb, "UPDATE posts SET channel_id = 20 WHERE id = 100", "2"); /* moving in */
    expect_frozen(appdb, "UPDATE posts SET channel_id = 10 WHERE id = 200", "2"); /* moving out */
    expect_frozen(appdb, "DELETE FROM teams WHERE id = 2", "2");
    ASSERT_EQ(app(appdb, "INSERT INTO posts VALUES (101, 10, 'fine')"), FERRY_OK);
    ASSERT_EQ(app(appdb, "UPDATE posts SET body = 'ok' WHERE id = 100"), FERRY_OK);
    ASSERT_EQ(app(appdb, "DELETE FROM posts WHERE id = 101"), FERRY_OK);
    ASSERT_EQ(app(appdb, "INSERT INTO teams VALUES (3, 'three')"), FERRY_OK);

    /* two frozen tenants, each named in its own refusal */
    ASSERT_EQ(ferry_freeze_set(f, "3", 1, NULL, NULL, &err), FERRY_OK);
    expect_frozen(appdb, "INSERT INTO channels VALUES (30, 3, 'c')", "3");
    expect_frozen(appdb, "INSERT INTO channels VALUES (21, 2, 'c')", "2");
    ASSERT_EQ(ferry_freeze_set(f, "2", 0, NULL, NULL, &err), FERRY_OK);
    ASSERT_EQ(ferry_freeze_set(f, "2", 0, NULL, NULL, &err), FERRY_OK); /* idempotent */
    ASSERT_EQ(app(appdb, "INSERT INTO channels VALUES (21, 2, 'c')"), FERRY_OK);
    expect_frozen(appdb, "INSERT INTO channels VALUES (30, 3, 'c')", "3");
    ASSERT_EQ(ferry_freeze_tenant_head(f, "2", &head, &err), FERRY_OK);
    ASSERT(head > 0);

    /* uninstall drops it all: writes go through again */
    ASSERT_EQ(ferry_freeze_uninstall(db, &err), FERRY_OK);
    ASSERT_EQ(app(appdb, "INSERT INTO channels VALUES (30, 3, 'c')"), FERRY_OK);
    ASSERT_EQ(ferry_freeze_uninstall(db, &err), FERRY_OK);

    ferry_freeze_close(f);
    ferry_db_close(appdb);
    ferry_scope_free(s);
    ferry_db_close(db);
    ferry_config_release(&cfg);
}

/* ---- run log ---- */

static void test_run_log(void)
{
    const char *dir = test_tmpdir("runlog");
    struct ferry_progress *p;
    char path[600], text[4096];
    size_t n;
    FILE *fp;

    p = ferry_progress_open(dir, "sync", 3, "te\"nant", -1, 1);
    ASSERT(p != NULL);
    ferry_progress_table(p, "posts", 0, 10, 0);
    ferry_progress_table(p, "posts", 5, 10, 0);
    ferry_progress_table(p, "posts", 10, 10, 1);
    ferry_progress_deltas(p, 4, 9, 2, 1);
    ferry_progress_end(p, FERRY_EUNREACHABLE, "cannot reach\nthe source", 9, 10, 2, 1);
    ferry_progress_close(p);
    ferry_progress_table(NULL, "x", 1, 1, 1); /* a NULL handle is a no-op */
    ferry_progress_close(NULL);

    snprintf(path, sizeof(path), "%s/runs.log", dir);
    fp = fopen(path, "r");
    ASSERT(fp != NULL);
    n = fread(text, 1, sizeof(text) - 1, fp);
    fclose(fp);
    text[n] = '\0';
    ASSERT(strstr(text, "\"event\":\"start\",\"kind\":\"sync\",\"tenant\":\"te\\\"nant\"") != NULL);
    ASSERT(strstr(text, "\"event\":\"table\",\"table\":\"posts\",\"rows\":10,\"copied\":10") !=
           NULL);
    ASSERT(strstr(text, "\"event\":\"deltas\",\"from\":4,\"to\":9") != NULL);
    ASSERT(strstr(text, "\"code\":\"EUNREACHABLE\",\"msg\":\"cannot reach\\u000athe source\"") !=
           NULL);
    ASSERT(strstr(text, "\"event\":\"end\",\"code\":\"EUNREACHABLE\"") != NULL);
    /* one object per line, five lines */
    n = 0;
    for (const char *c = text; *c; c++)
        n += *c == '\n';
    ASSERT_EQ(n, 5);
}

int main(void)
{
    test_freeze_messages();
    test_cutover_record();
    test_freeze_sqlite();
    test_run_log();
    return TEST_DONE();
}
