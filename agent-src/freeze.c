/*
 * freeze.c - migration mode: the source database refuses writes to a
 * frozen tenant's rows (see freeze.h for the trigger design).
 *
 * Why the triggers check both sides of a write: an UPDATE that moves a row
 * out of a frozen tenant would remove data the final delta is about to
 * carry, and one that moves a row in would add data after the freeze; both
 * are refused, as are inserts into and deletes from the tenant.
 */
#include "freeze.h"

#include "../common/buf.h"
#include "../common/log.h"
#include "capture.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SQL_MAX ((size_t)16 << 20)
/* Frozen tenants at once: each is one WHEN in every SQLite trigger. */
#define MAX_FROZEN 1000
#define WAIT_POLL_NS (20 * 1000 * 1000)

struct ferry_freezer {
    struct ferry_db *db;
    struct ferry_scope *scope;
    const struct ferry_config *cfg; /* borrowed */
    int64_t fingerprint;            /* ferry_scope_fingerprint() when scope was read */
    int stale;                      /* read the scope again, whatever the fingerprint */
};

static const char frozen_msg[] = FERRY_FROZEN_MSG;

/* "_ferry_frz_<kind>_<table>", quoted. */
static int add_name(struct ferry_buf *b, const char *kind, const char *table)
{
    char k[16];

    snprintf(k, sizeof(k), "frz_%s", kind);
    return ferry_scope_add_objname(b, k, table);
}

/* A tenant id for a message: printable, bounded (it is the operator's input). */
static void printable(const char *in, size_t n, char *out, size_t outsz)
{
    size_t j = 0;

    for (size_t i = 0; i < n && j + 1 < outsz; i++) {
        unsigned char c = (unsigned char)in[i];

        out[j++] = c >= 0x20 && c < 0x7f && c != '\'' ? (char)c : '?';
    }
    out[j] = '\0';
}

/* ---- SQLite: triggers rebuilt from _ferry_frozen ---- */

static int sqlite_cases(struct ferry_db *db, struct ferry_buf *cases, size_t *n,
                        struct ferry_error *err)
{
    struct ferry_stmt *st = NULL;
    struct ferry_buf msg;
    int row = 0;
    int rc;

    *n = 0;
    ferry_buf_init(&msg, 1024);
    rc = ferry_db_prepare(db, "SELECT tenant FROM _ferry_frozen ORDER BY tenant", &st, err);
    while (!rc) {
        struct ferry_value v;
        char shown[80];

        rc = ferry_stmt_step(st, &row, err);
        if (rc || !row)
            break;
        if (++*n > MAX_FROZEN) {
            rc =
                ferry_error_set(err, FERRY_ETOOBIG,
                                "more than %d tenants are frozen; unfreeze some first", MAX_FROZEN);
            break;
        }
        ferry_stmt_column(st, 0, &v);
        rc = ferry_buf_adds(cases, " WHEN ");
        if (rc)
            break;
        if (v.type == FERRY_INT) {
            rc = ferry_buf_addf(cases, "%" PRId64, v.u.i);
            snprintf(shown, sizeof(shown), "%" PRId64, v.u.i);
        } else if (v.type == FERRY_TEXT) {
            struct ferry_buf lit;

            ferry_buf_init(&lit, 4096);
            rc = ferry_buf_add(&lit, v.u.s.p, v.u.s.n);
            if (!rc && memchr(v.u.s.p, '\0', v.u.s.n))
                rc = FERRY_EDATA;
            if (!rc)
                rc = ferry_buf_add_literal(cases, lit.data ? lit.data : "");
            ferry_buf_release(&lit);
            printable(v.u.s.p, v.u.s.n, shown, 65);
        } else {
            rc = ferry_error_set(err, FERRY_EDATA,
                                 "_ferry_frozen holds a tenant that is neither an integer nor "
                                 "text; run ferry-src unfreeze for it, or uninstall");
            break;
        }
        ferry_buf_reset(&msg);
        if (!rc)
            rc = ferry_buf_addf(&msg, "tenant %s %s", shown, frozen_msg);
        if (!rc)
            rc = ferry_buf_adds(cases, " THEN RAISE(ABORT, ");
        if (!rc)
            rc = ferry_buf_add_literal(cases, msg.data);
        if (!rc)
            rc = ferry_buf_adds(cases, ")");
        if (rc) {
            rc = ferry_error_set(err, rc, "cannot build the freeze triggers");
            break;
        }
    }
    ferry_stmt_free(st);
    ferry_buf_release(&msg);
    return rc;
}

/* CREATE TRIGGER name WHEN ON t BEGIN SELECT CASE <subject> <cases> END; END; */
static int sqlite_trigger(struct ferry_buf *b, const struct ferry_scope *s, size_t t,
                          const char *kind, const char *when, int old, const char *cases)
{
    const struct ferry_table_info *ti = &s->tables[t].info;
    int rc = ferry_buf_adds(b, "CREATE TRIGGER ");

    if (!rc)
        rc = add_name(b, kind, ti->name);
    if (!rc)
        rc = ferry_buf_addf(b, " %s ON ", when);
    if (!rc)
        rc = ferry_buf_add_ident(b, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " BEGIN SELECT CASE ");
    if (!rc)
        rc = old ? ferry_scope_keymap_tenant(b, ti, "OLD.") : ferry_scope_owner(s, t, "NEW.", b);
    if (!rc)
        rc = ferry_buf_adds(b, cases);
    if (!rc)
        rc = ferry_buf_adds(b, " END; END;\n");
    return rc;
}

/* sqlite_clash_trigger's way through the UNIQUE indexes */
struct clash_build {
    struct ferry_buf *b;
    const struct ferry_table_info *ti;
    int update;
    const char *cases;
};

/* SELECT CASE <the tenant the key map holds for the row in the index's way> <cases> END; */
static int clash_index(void *arg, const struct ferry_value *match,
                       const struct ferry_value *changed, int partial)
{
    struct clash_build *cb = arg;
    struct ferry_buf *b = cb->b;
    int rc;

    /*
     * A partial index (WHERE deleted = 0) clashes only where both rows
     * satisfy its clause, which is not read here: taken whole it refused
     * other tenants' writes it allows, and scanned the table for them
     * (probe). Left out: a REPLACE through it is not refused.
     */
    if (partial)
        return FERRY_OK;
    rc = ferry_buf_adds(b, "SELECT CASE ");
    /* an update that leaves the index's columns as they were clashes with nothing new */
    if (!rc && cb->update)
        rc = ferry_buf_addf(b, "CASE WHEN %.*s THEN ", (int)changed->u.s.n, changed->u.s.p);
    if (!rc)
        rc = ferry_buf_adds(b, "(SELECT km.\"_ferry_tenant\" FROM ");
    if (!rc)
        rc = ferry_buf_add_ident(b, cb->ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " AS \"_ferry_x\" JOIN ");
    if (!rc)
        rc = ferry_scope_keymap(b, cb->ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " AS km ON ");
    if (!rc)
        rc = ferry_scope_keymatch(b, cb->ti, "km.", "\"_ferry_x\".");
    if (!rc)
        rc = ferry_buf_addf(b, " WHERE %.*s", (int)match->u.s.n, match->u.s.p);
    if (!rc && cb->update) {
        rc = ferry_buf_adds(b, " AND NOT (");
        if (!rc)
            rc = ferry_scope_keymatch(b, cb->ti, "\"_ferry_x\".", "OLD.");
        if (!rc)
            rc = ferry_buf_adds(b, ")");
    }
    if (!rc)
        rc = ferry_buf_addf(b, " LIMIT 1)%s%s END;\n", cb->update ? " END" : "", cb->cases);
    return rc;
}

/*
 * REPLACE (INSERT OR REPLACE, UPDATE OR REPLACE) deletes the rows in its
 * way without a delete trigger: another tenant's write of a key, or of a
 * UNIQUE index's values, that a frozen tenant's row holds deleted that
 * row. So before an insert or update, the tenant the key map holds for a
 * row in its way is checked as well. A write that would only clash (and
 * fail, or be skipped by OR IGNORE or ON CONFLICT DO NOTHING) is refused
 * too while the tenant in its way is frozen.
 */
static int sqlite_clash_trigger(struct ferry_db *db, struct ferry_buf *b,
                                const struct ferry_scope *s, size_t t, int update,
                                const char *cases, struct ferry_error *err)
{
    const struct ferry_table_info *ti = &s->tables[t].info;
    struct clash_build cb = {b, ti, update, cases};
    int skipped = 0;
    int rc = ferry_buf_adds(b, "CREATE TRIGGER ");

    if (!rc)
        rc = add_name(b, update ? "bx" : "bi", ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, update ? " BEFORE UPDATE ON " : " BEFORE INSERT ON ");
    if (!rc)
        rc = ferry_buf_add_ident(b, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " BEGIN SELECT CASE ");
    if (!rc && update) {
        rc = ferry_buf_adds(b, "CASE WHEN ");
        if (!rc)
            rc = ferry_scope_keymatch(b, ti, "NEW.", "OLD.");
        if (!rc)
            rc = ferry_buf_adds(b, " THEN NULL ELSE ");
    }
    if (!rc)
        rc = ferry_scope_keymap_tenant(b, ti, "NEW.");
    if (!rc && update)
        rc = ferry_buf_adds(b, " END");
    if (!rc)
        rc = ferry_buf_addf(b, "%s END;\n", cases);
    if (rc)
        return ferry_error_set(err, rc, "cannot build the freeze triggers of %s", ti->name);
    rc = ferry_capture_sqlite_uniques(db, ti->name, clash_index, &cb, &skipped, err);
    if (!rc)
        rc = ferry_buf_adds(b, "END;\n");
    return rc;
}

/* In the caller's write transaction: the triggers now match _ferry_frozen. */
static int sqlite_rebuild(struct ferry_db *db, const struct ferry_scope *s, struct ferry_error *err)
{
    struct ferry_buf cases, sql;
    size_t n = 0;
    int rc;

    ferry_buf_init(&cases, SQL_MAX);
    ferry_buf_init(&sql, SQL_MAX);
    rc = ferry_capture_drop_triggers(db, "\\_ferry\\_frz\\_%", err);
    if (!rc)
        rc = sqlite_cases(db, &cases, &n, err);
    for (size_t t = 0; t < s->ntables && !rc && n; t++) {
        ferry_buf_reset(&sql);
        rc = sqlite_trigger(&sql, s, t, "bu", "BEFORE UPDATE", 1, cases.data);
        if (!rc)
            rc = sqlite_trigger(&sql, s, t, "bd", "BEFORE DELETE", 1, cases.data);
        if (!rc)
            rc = sqlite_trigger(&sql, s, t, "ai", "AFTER INSERT", 0, cases.data);
        if (!rc)
            rc = sqlite_trigger(&sql, s, t, "au", "AFTER UPDATE", 0, cases.data);
        if (rc) {
            rc = ferry_error_set(err, rc, "cannot build the freeze triggers of %s",
                                 s->tables[t].info.name);
            break;
        }
        rc = sqlite_clash_trigger(db, &sql, s, t, 0, cases.data, err);
        if (!rc)
            rc = sqlite_clash_trigger(db, &sql, s, t, 1, cases.data, err);
        if (rc)
            break;
        log_debug("freeze SQL for %s:\n%s", s->tables[t].info.name, sql.data);
        rc = ferry_db_exec(db, sql.data, err);
        if (rc)
            ferry_error_prefix(err, "installing the freeze triggers on %s", s->tables[t].info.name);
    }
    ferry_buf_release(&cases);
    ferry_buf_release(&sql);
    return rc;
}

/* ---- PostgreSQL: capture's functions check (freeze.h); earlier versions' triggers go ---- */

static const char pg_drop_sql[] =
    "DO $ferry$ DECLARE r record; BEGIN\n"
    "  FOR r IN SELECT t.tgname, t.tgrelid::regclass AS rel FROM pg_trigger t\n"
    "      WHERE t.tgname LIKE '\\_ferry\\_frz\\_%' AND NOT t.tgisinternal\n"
    /* a partition's clone of its parent's trigger after the parent's, which takes it along */
    "      ORDER BY EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_trigger'::regclass\n"
    "          AND d.objid = t.oid AND d.deptype = 'P') LOOP\n"
    "    EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', r.tgname, r.rel);\n"
    "  END LOOP;\n"
    "  FOR r IN SELECT p.oid::regprocedure AS fn FROM pg_proc p\n"
    "      WHERE p.proname LIKE '\\_ferry\\_frz\\_%' AND pg_function_is_visible(p.oid) LOOP\n"
    "    EXECUTE format('DROP FUNCTION IF EXISTS %s', r.fn);\n"
    "  END LOOP;\n"
    "END $ferry$;\n";

/* ---- install ---- */

int ferry_freeze_install(struct ferry_db *db, const struct ferry_scope *s, struct ferry_error *err)
{
    int rc = ferry_db_begin(db, err);

    if (rc)
        return rc;
    if (ferry_db_engine(db) == FERRY_ENGINE_PG) {
        /* capture's install made _ferry_frozen, which its functions read */
        rc = ferry_db_exec(db, pg_drop_sql, err);
    } else {
        rc = ferry_db_exec(db,
                           "CREATE TABLE IF NOT EXISTS _ferry_frozen(tenant NOT NULL PRIMARY KEY, "
                           "since INTEGER NOT NULL, reason TEXT)",
                           err);
        if (!rc)
            rc = sqlite_rebuild(db, s, err);
    }
    if (rc) {
        ferry_db_rollback(db);
        return rc;
    }
    return ferry_db_commit(db, err);
}

int ferry_freeze_uninstall(struct ferry_db *db, struct ferry_error *err)
{
    int rc;

    rc = ferry_db_begin(db, err);
    if (rc)
        return rc;
    if (ferry_db_engine(db) == FERRY_ENGINE_PG) {
        rc = ferry_db_exec(db, pg_drop_sql, err);
    } else {
        rc = ferry_capture_drop_triggers(db, "\\_ferry\\_frz\\_%", err);
        if (!rc)
            rc = ferry_db_exec(db, "DROP TABLE IF EXISTS _ferry_frozen", err);
    }
    if (rc) {
        ferry_db_rollback(db);
        return rc;
    }
    return ferry_db_commit(db, err);
}

/* ---- the freezer ---- */

/*
 * Read the scope again when its tables' schema changed since (a table that
 * joined the scope, then install): SQLite's freeze triggers are rebuilt
 * over the scope's tables, and a serve that runs for days must not leave a
 * new table out. Called inside the freeze's transaction on SQLite, which
 * holds the write lock: no schema change gets in between.
 */
static int freezer_scope(struct ferry_freezer *f, struct ferry_error *err)
{
    struct ferry_scope *s = NULL;
    struct ferry_error e2;
    int64_t fp = 0;
    int rc;

    if (f->scope && !f->stale && ferry_scope_fingerprint(f->db, f->scope, &fp, &e2) == FERRY_OK &&
        fp == f->fingerprint)
        return FERRY_OK;
    rc = ferry_scope_resolve_serving(f->db, f->cfg, &s, err);
    if (!rc)
        rc = ferry_scope_fingerprint(f->db, s, &fp, err);
    if (!rc)
        rc = ferry_capture_check(f->db, s, err);
    if (rc) {
        ferry_scope_free(s);
        return rc;
    }
    ferry_scope_free(f->scope);
    f->scope = s;
    f->fingerprint = fp;
    f->stale = 0;
    return FERRY_OK;
}

int ferry_freeze_open(const struct ferry_config *cfg, struct ferry_freezer **out,
                      struct ferry_error *err)
{
    struct ferry_freezer *f = calloc(1, sizeof(*f));
    int exists = 0;
    int rc;

    *out = NULL;
    if (!f)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
    f->cfg = cfg;
    rc = ferry_db_open(cfg->source.database, 0, &f->db, err);
    if (!rc)
        rc = freezer_scope(f, err);
    if (!rc)
        rc = ferry_db_table_exists(f->db, "_ferry_frozen", &exists, err);
    if (!rc && !exists)
        rc = ferry_error_set(err, FERRY_ECONFIG,
                             "migration mode is not installed; run ferry-src install --config %s",
                             cfg->path ? cfg->path : "C");
    if (rc) {
        ferry_freeze_close(f);
        return rc;
    }
    *out = f;
    return FERRY_OK;
}

void ferry_freeze_close(struct ferry_freezer *f)
{
    if (!f)
        return;
    ferry_scope_free(f->scope);
    ferry_db_close(f->db);
    free(f);
}

/*
 * The tenant as _ferry_frozen stores it: the typed value on SQLite (so the
 * triggers compare like with like), canonical text on PostgreSQL (one
 * column type whatever the root key's type). num backs an integer's text.
 */
static int frozen_key(struct ferry_freezer *f, const char *tenant, struct ferry_value *typed,
                      struct ferry_value *key, char *num, size_t numsz, struct ferry_error *err)
{
    int rc = ferry_scope_tenant(f->scope, tenant, typed, err);

    if (rc)
        return rc;
    *key = *typed;
    if (ferry_db_engine(f->db) == FERRY_ENGINE_PG && typed->type == FERRY_INT) {
        snprintf(num, numsz, "%" PRId64, typed->u.i);
        *key = ferry_value_text(num, strlen(num));
    }
    return FERRY_OK;
}

static int tenant_exists(struct ferry_freezer *f, const struct ferry_value *tv, int *exists,
                         struct ferry_error *err)
{
    int64_t n = 0;
    int rc = ferry_scope_tenant_rows(f->db, f->scope, tv, &n, err);

    *exists = n > 0;
    return rc;
}

static void sleep_ns(long ns)
{
    struct timespec ts = {0, ns};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Text of column 0 of the one row of sql into out. */
static int query_text(struct ferry_db *db, const char *sql, char *out, size_t outsz,
                      struct ferry_error *err)
{
    struct ferry_stmt *st = NULL;
    struct ferry_value v;
    int row = 0;
    int rc;

    rc = ferry_db_prepare(db, sql, &st, err);
    if (!rc)
        rc = ferry_stmt_step(st, &row, err);
    if (!rc && !row)
        rc = ferry_error_set(err, FERRY_EDB, "'%s' returned no row", sql);
    if (!rc) {
        ferry_stmt_column(st, 0, &v);
        if (v.type != FERRY_TEXT || v.u.s.n >= outsz)
            rc = ferry_error_set(err, FERRY_EDB, "'%s' returned no text, or too much", sql);
        else
            snprintf(out, outsz, "%.*s", (int)v.u.s.n, v.u.s.p);
    }
    ferry_stmt_free(st);
    return rc;
}

/*
 * After the freeze committed: wait until every transaction that was in
 * flight then has ended. Those with an xid are in the snapshot's xip; one
 * that has only read so far has no xid yet, but under REPEATABLE READ its
 * old snapshot would not see the freeze row, so backends whose transaction
 * began before the freeze count too (pg_stat_activity shows other roles'
 * xact_start only to privileged roles: the xip part is what always holds),
 * each once (one with an xid is in the xip part), but not ferry-src's own
 * exported snapshots of copies under way (READ ONLY: they cannot write),
 * which would hold every freeze of every tenant until they expire.
 * Polled (ferry_freeze_poll), so that a server can go on serving meanwhile.
 */
struct ferry_freeze_wait {
    char tenant[128];
    char snap[8192];
    char when[64];
    struct timespec t0;
    long secs;   /* how long it may wait: [source] freeze_wait */
    int expired; /* it waited secs, and transactions are still running */
};

static int pg_wait_begin(struct ferry_db *db, const char *tenant, long secs,
                         struct ferry_freeze_wait **out, struct ferry_error *err)
{
    struct ferry_freeze_wait *w = calloc(1, sizeof(*w));
    int rc;

    if (!w)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
    snprintf(w->tenant, sizeof(w->tenant), "%s", tenant);
    w->secs = secs > 0 ? secs : FERRY_FREEZE_WAIT_DEFAULT;
    rc = query_text(db, "SELECT pg_current_snapshot()::text", w->snap, sizeof(w->snap), err);
    if (!rc)
        rc = query_text(db, "SELECT clock_timestamp()::text", w->when, sizeof(w->when), err);
    if (rc) {
        free(w);
        return rc;
    }
    clock_gettime(CLOCK_MONOTONIC, &w->t0);
    *out = w;
    return FERRY_OK;
}

/*
 * The transactions that began before the freeze and still run: those the
 * freeze's snapshot names in progress (they hold an xid: they wrote), but
 * not those of another database of the cluster (the snapshot names the
 * whole cluster's; one cannot write here), and the open ones that have not
 * written yet (no xid) in this database.
 */
static int pg_wait_poll(struct ferry_db *db, struct ferry_freeze_wait *w, int *done,
                        struct ferry_error *err)
{
    struct ferry_value args[2] = {ferry_value_text(w->snap, strlen(w->snap)),
                                  ferry_value_text(w->when, strlen(w->when))};
    struct timespec now;
    int64_t running = 0;
    int rc;

    *done = 0;
    rc = ferry_db_query_int(
        db,
        "SELECT (SELECT count(*) FROM pg_snapshot_xip(CAST(? AS pg_snapshot)) AS x "
        "WHERE pg_xact_status(x) = 'in progress' AND NOT EXISTS (SELECT 1 FROM "
        "pg_stat_activity a WHERE a.datname IS DISTINCT FROM current_database() AND "
        "a.backend_xid::text = (x::text::numeric % 4294967296)::text) AND NOT EXISTS ("
        "SELECT 1 FROM pg_prepared_xacts p WHERE p.database <> current_database() AND "
        "p.transaction::text = (x::text::numeric % 4294967296)::text)) + "
        "(SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
        "AND datname = current_database() AND backend_type = 'client backend' "
        "AND xact_start < CAST(? AS timestamptz) AND backend_xid IS NULL "
        "AND application_name IS DISTINCT FROM '" FERRY_SNAPSHOT_HOLDER "')",
        args, 2, &running, err);
    if (rc)
        return rc;
    if (running == 0) {
        *done = 1;
        return FERRY_OK;
    }
    clock_gettime(CLOCK_MONOTONIC, &now);
    /* in milliseconds: whole seconds apart would end the wait up to a second early */
    if ((now.tv_sec - w->t0.tv_sec) * 1000 + (now.tv_nsec - w->t0.tv_nsec) / 1000000 >=
        (int64_t)w->secs * 1000) {
        w->expired = 1;
        return ferry_error_set(err, FERRY_EDB,
                               "tenant %.64s is frozen, but %" PRId64 " transactions that "
                               "began before the freeze are still running after %ld s (see "
                               "pg_stat_activity); end them and freeze again, or raise "
                               "[source] freeze_wait",
                               w->tenant, running, w->secs);
    }
    return FERRY_OK;
}

long ferry_freeze_wait_expired(const struct ferry_freeze_wait *w)
{
    return w && w->expired ? w->secs : 0;
}

void ferry_freeze_wait_free(struct ferry_freeze_wait *w)
{
    free(w);
}

static int freeze_done(struct ferry_freezer *f, const char *tenant, int on, int64_t *head,
                       struct ferry_error *err)
{
    int64_t h = 0;
    int rc = ferry_capture_head(f->db, &h, err);

    if (!rc && head)
        *head = h;
    if (!rc)
        log_info("tenant %.64s %s, change log head %" PRId64, tenant, on ? "frozen" : "unfrozen",
                 h);
    return rc;
}

int ferry_freeze_poll(struct ferry_freezer *f, struct ferry_freeze_wait *w, int *done,
                      int64_t *head, struct ferry_error *err)
{
    int rc = pg_wait_poll(f->db, w, done, err);

    if (!rc && *done)
        rc = freeze_done(f, w->tenant, 1, head, err);
    return rc;
}

static int freeze_start(struct ferry_freezer *f, const char *tenant, int on, const char *reason,
                        int64_t *head, struct ferry_freeze_wait **wait, struct ferry_error *err);

/*
 * A serve's freezer keeps its connection for days. After a failed query:
 * when the server dropped the connection (a restart, a failover), connect
 * again and read the scope anew; 1 when the query is worth running once
 * more, 0 when not (err then says why).
 */
static int revive(struct ferry_freezer *f, struct ferry_error *err)
{
    if (ferry_db_alive(f->db) || ferry_db_reconnect(&f->db, f->cfg->source.database, 0, err))
        return 0;
    f->stale = 1;
    return freezer_scope(f, err) == FERRY_OK;
}

/* Setting or clearing the flag is idempotent, whether a lost attempt committed or not. */
int ferry_freeze_start(struct ferry_freezer *f, const char *tenant, int on, const char *reason,
                       int64_t *head, struct ferry_freeze_wait **wait, struct ferry_error *err)
{
    int rc = freeze_start(f, tenant, on, reason, head, wait, err);

    if (rc && revive(f, err))
        rc = freeze_start(f, tenant, on, reason, head, wait, err);
    return rc;
}

static int freeze_start(struct ferry_freezer *f, const char *tenant, int on, const char *reason,
                        int64_t *head, struct ferry_freeze_wait **wait, struct ferry_error *err)
{
    int pg = ferry_db_engine(f->db) == FERRY_ENGINE_PG;
    struct ferry_value typed, key;
    struct ferry_stmt *st = NULL;
    char num[32];
    int exists = 0;
    int row = 0;
    int rc;

    *wait = NULL;
    rc = frozen_key(f, tenant, &typed, &key, num, sizeof(num), err);
    if (rc)
        return rc;
    /* SQLite: BEGIN IMMEDIATE, the database's write lock, until the commit. */
    rc = ferry_db_begin(f->db, err);
    if (rc)
        return rc;
    rc = freezer_scope(f, err);
    if (rc) {
        ferry_db_rollback(f->db);
        return rc;
    }
    if (on) {
        struct ferry_value why =
            reason ? ferry_value_text(reason, strlen(reason)) : ferry_value_null();
        struct ferry_value since = ferry_value_int((int64_t)time(NULL));

        rc = tenant_exists(f, &typed, &exists, err);
        if (!rc && !exists)
            rc = ferry_error_set(err, FERRY_ENOTFOUND, "tenant %.64s not found in %s", tenant,
                                 ferry_scope_root(f->scope)->name);
        if (!rc)
            rc = ferry_db_prepare(f->db,
                                  "INSERT INTO _ferry_frozen(tenant, since, reason) VALUES (?, ?, "
                                  "?) ON CONFLICT (tenant) DO NOTHING",
                                  &st, err);
        if (!rc)
            rc = ferry_stmt_bind(st, 1, &key, err);
        if (!rc)
            rc = ferry_stmt_bind(st, 2, &since, err);
        if (!rc)
            rc = ferry_stmt_bind(st, 3, &why, err);
    } else {
        rc = ferry_db_prepare(f->db, "DELETE FROM _ferry_frozen WHERE tenant = ?", &st, err);
        if (!rc)
            rc = ferry_stmt_bind(st, 1, &key, err);
    }
    if (!rc)
        rc = ferry_stmt_step(st, &row, err);
    ferry_stmt_free(st);
    if (!rc && !pg)
        rc = sqlite_rebuild(f->db, f->scope, err);
    if (rc) {
        ferry_db_rollback(f->db);
        return rc;
    }
    if (!pg) {
        /* the head inside the transaction that holds the write lock */
        int64_t h = 0;

        rc = ferry_capture_head(f->db, &h, err);
        if (rc) {
            ferry_db_rollback(f->db);
            return rc;
        }
        rc = ferry_db_commit(f->db, err);
        if (!rc && head)
            *head = h;
        if (!rc)
            log_info("tenant %.64s %s, change log head %" PRId64, tenant,
                     on ? "frozen" : "unfrozen", h);
        return rc;
    }
    rc = ferry_db_commit(f->db, err);
    if (!rc && on)
        return pg_wait_begin(f->db, tenant, f->cfg->source.freeze_wait, wait, err);
    if (!rc)
        rc = freeze_done(f, tenant, on, head, err);
    return rc;
}

int ferry_freeze_set(struct ferry_freezer *f, const char *tenant, int on, const char *reason,
                     int64_t *head, struct ferry_error *err)
{
    struct ferry_freeze_wait *w = NULL;
    int done = 0;
    int rc = ferry_freeze_start(f, tenant, on, reason, head, &w, err);

    while (!rc && w) {
        rc = ferry_freeze_poll(f, w, &done, head, err);
        if (rc || done)
            break;
        sleep_ns(WAIT_POLL_NS);
    }
    ferry_freeze_wait_free(w);
    return rc;
}

static int freeze_get(struct ferry_freezer *f, const char *tenant, int *frozen, int64_t *since,
                      struct ferry_error *err)
{
    struct ferry_value typed, key;
    char num[32];
    int64_t s = -1;
    int rc;

    rc = frozen_key(f, tenant, &typed, &key, num, sizeof(num), err);
    if (!rc)
        rc = ferry_db_query_int(f->db,
                                "SELECT COALESCE((SELECT since FROM _ferry_frozen WHERE tenant = "
                                "?), -1)",
                                &key, 1, &s, err);
    if (rc)
        return rc;
    *frozen = s >= 0;
    if (since)
        *since = s >= 0 ? s : 0;
    return FERRY_OK;
}

/* A serve's metrics ask these of a freezer that may have lost its connection: see revive. */
int ferry_freeze_get(struct ferry_freezer *f, const char *tenant, int *frozen, int64_t *since,
                     struct ferry_error *err)
{
    int rc = freeze_get(f, tenant, frozen, since, err);

    if (rc && revive(f, err))
        rc = freeze_get(f, tenant, frozen, since, err);
    return rc;
}

static int tenant_head(struct ferry_freezer *f, const char *tenant, int64_t *head,
                       struct ferry_error *err)
{
    struct ferry_value tv;
    int rc;

    rc = ferry_scope_tenant(f->scope, tenant, &tv, err);
    if (rc)
        return rc;
    return ferry_db_query_int(f->db,
                              "SELECT COALESCE(max(seq), 0) FROM _ferry_changes WHERE tenant = ?",
                              &tv, 1, head, err);
}

int ferry_freeze_tenant_head(struct ferry_freezer *f, const char *tenant, int64_t *head,
                             struct ferry_error *err)
{
    int rc = tenant_head(f, tenant, head, err);

    if (rc && revive(f, err))
        rc = tenant_head(f, tenant, head, err);
    return rc;
}
