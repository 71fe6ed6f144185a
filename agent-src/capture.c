/*
 * capture.c - change capture on the source: change log, key maps, triggers.
 *
 * Why key maps: with ON DELETE CASCADE the database removes a parent before
 * (or while) its children's delete triggers run, so a trigger cannot find a
 * deleted child's tenant by walking up to the root. Each in-scope row's
 * tenant is therefore remembered in _ferry_k_<table> when the row is
 * written, and a delete reads it from there: exact, whatever the order in
 * which the engine runs cascades.
 *
 * Why the log holds keys, not images: the producer sends each changed key's
 * current image (or a tombstone when it is gone from the tenant), read at
 * serve time. Applying current images by key is idempotent, so a batch
 * applied twice after a crash is harmless.
 *
 * Tenant moves: when an update changes a row's tenant, the row leaves a 'D'
 * in the old tenant's log and a 'U' in the new one, and its children on the
 * scope path are touched (SET fk = fk, a no-op write) so their own triggers
 * move them too, level by level.
 */
#include "capture.h"

#include "../common/buf.h"
#include "../common/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SQL_MAX (1u << 20)

static const char *const kcols[FERRY_MAX_KEY_COLS] = {"k0", "k1", "k2", "k3"};

/* Append  'name'  'op'  for the change log's (tbl, op) columns. */
static int add_keymap_name(struct ferry_buf *b, const char *table)
{
    struct ferry_buf n;
    int rc;

    ferry_buf_init(&n, 1024);
    rc = ferry_buf_addf(&n, "_ferry_k_%s", table);
    if (!rc)
        rc = ferry_buf_add_ident(b, n.data);
    ferry_buf_release(&n);
    return rc;
}

static int add_trigger_name(struct ferry_buf *b, const char *kind, const char *table)
{
    struct ferry_buf n;
    int rc;

    ferry_buf_init(&n, 1024);
    rc = ferry_buf_addf(&n, "_ferry_%s_%s", kind, table);
    if (!rc)
        rc = ferry_buf_add_ident(b, n.data);
    ferry_buf_release(&n);
    return rc;
}

/* "k"-list of the key columns: ctx"a", ctx"b" */
static int add_keys(struct ferry_buf *b, const struct ferry_scope *s, size_t t, const char *ctx)
{
    return ferry_scope_keylist(s, t, ctx, b);
}

/* WHERE-clause matching keymap (alias km) to the row's key written ctx"col". */
static int add_key_match(struct ferry_buf *b, const struct ferry_table_info *ti, const char *lhs,
                         const char *ctx)
{
    size_t npk = ferry_table_npk(ti);
    int rc = FERRY_OK;

    for (size_t k = 0; k < npk && !rc; k++) {
        const char *col = ti->cols[ferry_table_pkcol(ti, k)].name;

        rc = ferry_buf_adds(b, k ? " AND " : "");
        if (!rc)
            rc = ferry_buf_adds(b, lhs);
        if (!rc)
            rc = ferry_buf_add_ident(b, col);
        if (!rc)
            rc = ferry_buf_adds(b, " = ");
        if (!rc)
            rc = ferry_buf_adds(b, ctx);
        if (!rc)
            rc = ferry_buf_add_ident(b, col);
    }
    return rc;
}

/* INSERT INTO _ferry_changes(tbl, op, tenant, k0..) SELECT 'tbl', 'op', */
static int add_log_head(struct ferry_buf *b, const struct ferry_table_info *ti, const char *op)
{
    size_t npk = ferry_table_npk(ti);
    int rc = ferry_buf_adds(b, "INSERT INTO _ferry_changes(tbl, op, tenant");

    for (size_t k = 0; k < npk && !rc; k++)
        rc = ferry_buf_addf(b, ", %s", kcols[k]);
    if (!rc)
        rc = ferry_buf_adds(b, ") SELECT ");
    if (!rc)
        rc = ferry_buf_add_literal(b, ti->name);
    if (!rc)
        rc = ferry_buf_addf(b, ", '%s', ", op);
    return rc;
}

/*
 * Keymap refresh for the row NEW: drop its entry, insert it again with the
 * tenant computed from the database as it is now, then log a 'U' for the
 * tenant it landed in (none when it belongs to no tenant).
 */
static int add_refresh_new(struct ferry_buf *b, const struct ferry_scope *s, size_t t)
{
    const struct ferry_table_info *ti = &s->tables[t].info;
    int rc;

    rc = ferry_buf_adds(b, "DELETE FROM ");
    if (!rc)
        rc = add_keymap_name(b, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " WHERE ");
    if (!rc)
        rc = add_key_match(b, ti, "", "NEW.");
    if (!rc)
        rc = ferry_buf_adds(b, ";\nINSERT INTO ");
    if (!rc)
        rc = add_keymap_name(b, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " SELECT ");
    if (!rc)
        rc = add_keys(b, s, t, "NEW.");
    if (!rc)
        rc = ferry_buf_adds(b, ", o FROM (SELECT ");
    if (!rc)
        rc = ferry_scope_owner(s, t, "NEW.", b);
    if (!rc)
        rc = ferry_buf_adds(b, " AS o) WHERE o IS NOT NULL;\n");
    if (!rc)
        rc = add_log_head(b, ti, "U");
    if (!rc)
        rc = ferry_buf_adds(b, "\"_ferry_tenant\", ");
    if (!rc)
        rc = add_keys(b, s, t, "");
    if (!rc)
        rc = ferry_buf_adds(b, " FROM ");
    if (!rc)
        rc = add_keymap_name(b, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " WHERE ");
    if (!rc)
        rc = add_key_match(b, ti, "", "NEW.");
    if (!rc)
        rc = ferry_buf_adds(b, ";\n");
    return rc;
}

/* Log a 'D' for OLD in the tenant the keymap remembers, when cond (SQL) holds. */
static int add_tombstone_old(struct ferry_buf *b, const struct ferry_scope *s, size_t t,
                             const char *cond)
{
    const struct ferry_table_info *ti = &s->tables[t].info;
    int rc = add_log_head(b, ti, "D");

    if (!rc)
        rc = ferry_buf_adds(b, "km.\"_ferry_tenant\", ");
    if (!rc)
        rc = add_keys(b, s, t, "OLD.");
    if (!rc)
        rc = ferry_buf_adds(b, " FROM ");
    if (!rc)
        rc = add_keymap_name(b, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " AS km WHERE ");
    if (!rc)
        rc = add_key_match(b, ti, "km.", "OLD.");
    if (!rc && cond)
        rc = ferry_buf_addf(b, " AND (%s)", cond);
    if (!rc)
        rc = ferry_buf_adds(b, ";\n");
    return rc;
}

/* SQL condition: the tenant of the updated row, or its key, changed. */
static int build_moved_cond(struct ferry_buf *c, const struct ferry_scope *s, size_t t)
{
    const struct ferry_table_info *ti = &s->tables[t].info;
    size_t npk = ferry_table_npk(ti);
    int rc = ferry_buf_adds(c, "km.\"_ferry_tenant\" IS NOT ");

    if (!rc)
        rc = ferry_scope_owner(s, t, "NEW.", c);
    for (size_t k = 0; k < npk && !rc; k++) {
        const char *col = ti->cols[ferry_table_pkcol(ti, k)].name;

        rc = ferry_buf_adds(c, " OR OLD.");
        if (!rc)
            rc = ferry_buf_add_ident(c, col);
        if (!rc)
            rc = ferry_buf_adds(c, " IS NOT NEW.");
        if (!rc)
            rc = ferry_buf_add_ident(c, col);
    }
    return rc;
}

/*
 * Children on the scope path follow a row whose tenant changed: a no-op
 * write to each child that references the row (by its old or new values)
 * fires the child's own update trigger, which recomputes its tenant.
 */
static int add_touch_children(struct ferry_buf *b, const struct ferry_scope *s, size_t t)
{
    const struct ferry_table_info *ti = &s->tables[t].info;
    int rc = FERRY_OK;

    for (size_t c = t + 1; c < s->ntables && !rc; c++) {
        const struct ferry_scope_table *ct = &s->tables[c];
        const struct ferry_fkey *fk;

        if (ct->parent != (int)t || ct->info.scope_sql)
            continue;
        fk = &ct->info.fks[ct->fk];
        rc = ferry_buf_adds(b, "UPDATE ");
        if (!rc)
            rc = ferry_buf_add_ident(b, ct->info.name);
        if (!rc)
            rc = ferry_buf_adds(b, " SET ");
        for (size_t i = 0; i < fk->ncols && !rc; i++) {
            rc = ferry_buf_adds(b, i ? ", " : "");
            if (!rc)
                rc = ferry_buf_add_ident(b, fk->cols[i]);
            if (!rc)
                rc = ferry_buf_adds(b, " = ");
            if (!rc)
                rc = ferry_buf_add_ident(b, fk->cols[i]);
        }
        for (int pass = 0; pass < 2 && !rc; pass++) {
            rc = ferry_buf_adds(b, pass ? " OR (" : " WHERE ((");
            for (size_t i = 0; i < fk->ncols && !rc; i++) {
                rc = ferry_buf_adds(b, i ? " AND " : "");
                if (!rc)
                    rc = ferry_buf_add_ident(b, fk->cols[i]);
                if (!rc)
                    rc = ferry_buf_adds(b, pass ? " = NEW." : " = OLD.");
                if (!rc)
                    rc = ferry_buf_add_ident(b, fk->pcols[i]);
            }
            if (!rc)
                rc = ferry_buf_adds(b, ")");
        }
        if (!rc)
            rc = ferry_buf_adds(b, ") AND EXISTS (SELECT 1 FROM ");
        if (!rc)
            rc = add_keymap_name(b, ti->name);
        if (!rc)
            rc = ferry_buf_adds(b, " AS km WHERE ");
        if (!rc)
            rc = add_key_match(b, ti, "km.", "OLD.");
        if (!rc)
            rc = ferry_buf_adds(b, " AND km.\"_ferry_tenant\" IS NOT ");
        if (!rc)
            rc = ferry_scope_owner(s, t, "NEW.", b);
        if (!rc)
            rc = ferry_buf_adds(b, " UNION ALL SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM ");
        if (!rc)
            rc = add_keymap_name(b, ti->name);
        if (!rc)
            rc = ferry_buf_adds(b, " AS km WHERE ");
        if (!rc)
            rc = add_key_match(b, ti, "km.", "OLD.");
        if (!rc)
            rc = ferry_buf_adds(b, ") AND ");
        if (!rc)
            rc = ferry_scope_owner(s, t, "NEW.", b);
        if (!rc)
            rc = ferry_buf_adds(b, " IS NOT NULL);\n");
    }
    return rc;
}

static int sqlite_table_sql(struct ferry_buf *b, const struct ferry_scope *s, size_t t)
{
    const struct ferry_table_info *ti = &s->tables[t].info;
    struct ferry_buf cond;
    int rc;

    /* key map: same key columns, no declared types, so values keep their class */
    rc = ferry_buf_adds(b, "DROP TABLE IF EXISTS ");
    if (!rc)
        rc = add_keymap_name(b, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, ";\nCREATE TABLE ");
    if (!rc)
        rc = add_keymap_name(b, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, "(");
    /*
     * Key columns keep the table's declared types: the same affinity on both
     * sides of "km.k = OLD.k" is what lets SQLite use the key map's index.
     */
    for (size_t k = 0; k < ferry_table_npk(ti) && !rc; k++) {
        const struct ferry_column *col = &ti->cols[ferry_table_pkcol(ti, k)];

        rc = ferry_buf_adds(b, k ? ", " : "");
        if (!rc)
            rc = ferry_buf_add_ident(b, col->name);
        if (!rc && col->type && *col->type)
            rc = ferry_buf_addf(b, " %s", col->type);
    }
    if (!rc)
        rc = ferry_buf_adds(b, ", \"_ferry_tenant\" NOT NULL, PRIMARY KEY(");
    if (!rc)
        rc = add_keys(b, s, t, "");
    if (!rc)
        rc = ferry_buf_adds(b, "));\nCREATE INDEX ");
    /* (tenant, key): snapshot pages walk one tenant's keys in order */
    if (!rc)
        rc = add_trigger_name(b, "ki", ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " ON ");
    if (!rc)
        rc = add_keymap_name(b, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, "(\"_ferry_tenant\", ");
    if (!rc)
        rc = add_keys(b, s, t, "");
    if (!rc)
        rc = ferry_buf_adds(b, ");\nINSERT INTO ");
    if (!rc)
        rc = add_keymap_name(b, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " SELECT * FROM (SELECT ");
    if (!rc)
        rc = add_keys(b, s, t, "\"_ferry_s\".");
    if (!rc)
        rc = ferry_buf_adds(b, ", ");
    if (!rc)
        rc = ferry_scope_owner(s, t, "\"_ferry_s\".", b);
    if (!rc)
        rc = ferry_buf_adds(b, " AS o FROM ");
    if (!rc)
        rc = ferry_buf_add_ident(b, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " AS \"_ferry_s\") WHERE o IS NOT NULL;\n");

    /* insert */
    if (!rc)
        rc = ferry_buf_adds(b, "CREATE TRIGGER ");
    if (!rc)
        rc = add_trigger_name(b, "i", ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " AFTER INSERT ON ");
    if (!rc)
        rc = ferry_buf_add_ident(b, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " BEGIN\n");
    if (!rc)
        rc = add_refresh_new(b, s, t);
    if (!rc)
        rc = ferry_buf_adds(b, "END;\n");

    /* update */
    ferry_buf_init(&cond, SQL_MAX);
    if (!rc)
        rc = build_moved_cond(&cond, s, t);
    if (!rc)
        rc = ferry_buf_adds(b, "CREATE TRIGGER ");
    if (!rc)
        rc = add_trigger_name(b, "u", ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " AFTER UPDATE ON ");
    if (!rc)
        rc = ferry_buf_add_ident(b, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " BEGIN\n");
    if (!rc)
        rc = add_touch_children(b, s, t);
    if (!rc)
        rc = add_tombstone_old(b, s, t, cond.data);
    if (!rc)
        rc = ferry_buf_adds(b, "DELETE FROM ");
    if (!rc)
        rc = add_keymap_name(b, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " WHERE ");
    if (!rc)
        rc = add_key_match(b, ti, "", "OLD.");
    if (!rc)
        rc = ferry_buf_adds(b, ";\n");
    if (!rc)
        rc = add_refresh_new(b, s, t);
    if (!rc)
        rc = ferry_buf_adds(b, "END;\n");
    ferry_buf_release(&cond);

    /* delete */
    if (!rc)
        rc = ferry_buf_adds(b, "CREATE TRIGGER ");
    if (!rc)
        rc = add_trigger_name(b, "d", ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " AFTER DELETE ON ");
    if (!rc)
        rc = ferry_buf_add_ident(b, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " BEGIN\n");
    if (!rc)
        rc = add_tombstone_old(b, s, t, NULL);
    if (!rc)
        rc = ferry_buf_adds(b, "DELETE FROM ");
    if (!rc)
        rc = add_keymap_name(b, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " WHERE ");
    if (!rc)
        rc = add_key_match(b, ti, "", "OLD.");
    if (!rc)
        rc = ferry_buf_adds(b, ";\nEND;\n");
    return rc;
}

/* Names of every trigger and table ferry created, in drop order. */
static int drop_all_sqlite(struct ferry_db *db, struct ferry_error *err)
{
    struct ferry_stmt *st = NULL;
    struct ferry_buf sql;
    int row = 0;
    int rc;

    ferry_buf_init(&sql, SQL_MAX);
    rc = ferry_db_prepare(db,
                          "SELECT type, name FROM sqlite_schema WHERE name LIKE '\\_ferry\\_%' "
                          "ESCAPE '\\' AND type IN ('trigger', 'table') ORDER BY type DESC",
                          &st, err);
    while (!rc) {
        struct ferry_value type, name;

        rc = ferry_stmt_step(st, &row, err);
        if (rc || !row)
            break;
        ferry_stmt_column(st, 0, &type);
        ferry_stmt_column(st, 1, &name);
        rc = ferry_buf_adds(&sql,
                            type.u.s.n == 7 ? "DROP TRIGGER IF EXISTS " : "DROP TABLE IF EXISTS ");
        if (!rc) {
            char nm[512];

            snprintf(nm, sizeof(nm), "%.*s", (int)name.u.s.n, name.u.s.p);
            rc = ferry_buf_add_ident(&sql, nm);
        }
        if (!rc)
            rc = ferry_buf_adds(&sql, ";\n");
        if (rc && rc != FERRY_EDB)
            rc = ferry_error_set(err, rc, "cannot build uninstall SQL");
    }
    ferry_stmt_free(st);
    if (!rc && sql.len)
        rc = ferry_db_exec(db, sql.data, err);
    ferry_buf_release(&sql);
    return rc;
}

int ferry_capture_install(struct ferry_db *db, const struct ferry_scope *s, struct ferry_error *err)
{
    struct ferry_buf sql;
    int rc;

    if (ferry_db_engine(db) != FERRY_ENGINE_SQLITE)
        return ferry_error_set(err, FERRY_ECONFIG,
                               "change capture on this engine is not built yet");
    ferry_buf_init(&sql, (size_t)64 << 20);
    rc = ferry_db_begin(db, err);
    if (rc)
        goto out;
    /*
     * Triggers are dropped and re-created, the log is kept: seqs keep growing.
     * No AUTOINCREMENT (it would add sqlite_sequence to the application's
     * schema): a rowid key grows as long as the newest entry is never
     * removed, which pruning must respect.
     */
    rc = ferry_db_exec(db,
                       "CREATE TABLE IF NOT EXISTS _ferry_changes("
                       "seq INTEGER PRIMARY KEY, tbl TEXT NOT NULL, "
                       "op TEXT NOT NULL, tenant NOT NULL, txid INTEGER, k0, k1, k2, k3);\n"
                       "CREATE INDEX IF NOT EXISTS _ferry_changes_tenant "
                       "ON _ferry_changes(tenant, seq);\n",
                       err);
    if (rc)
        goto rollback;
    {
        struct ferry_stmt *st = NULL;
        struct ferry_buf drop;
        int row = 0;

        ferry_buf_init(&drop, SQL_MAX);
        rc = ferry_db_prepare(db,
                              "SELECT name FROM sqlite_schema WHERE type = 'trigger' AND name "
                              "LIKE '\\_ferry\\_%' ESCAPE '\\'",
                              &st, err);
        while (!rc) {
            struct ferry_value name;
            char nm[512];

            rc = ferry_stmt_step(st, &row, err);
            if (rc || !row)
                break;
            ferry_stmt_column(st, 0, &name);
            snprintf(nm, sizeof(nm), "%.*s", (int)name.u.s.n, name.u.s.p);
            if (ferry_buf_adds(&drop, "DROP TRIGGER ") || ferry_buf_add_ident(&drop, nm) ||
                ferry_buf_adds(&drop, ";\n"))
                rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        }
        ferry_stmt_free(st);
        if (!rc && drop.len)
            rc = ferry_db_exec(db, drop.data, err);
        ferry_buf_release(&drop);
        if (rc)
            goto rollback;
    }
    for (size_t t = 0; t < s->ntables; t++) {
        ferry_buf_reset(&sql);
        rc = sqlite_table_sql(&sql, s, t);
        if (rc) {
            rc =
                ferry_error_set(err, rc, "cannot build capture SQL for %s", s->tables[t].info.name);
            goto rollback;
        }
        log_debug("capture SQL for %s:\n%s", s->tables[t].info.name, sql.data);
        rc = ferry_db_exec(db, sql.data, err);
        if (rc) {
            ferry_error_prefix(err, "installing capture on %s", s->tables[t].info.name);
            goto rollback;
        }
    }
    rc = ferry_db_commit(db, err);
    goto out;
rollback:
    ferry_db_rollback(db);
out:
    ferry_buf_release(&sql);
    return rc;
}

int ferry_capture_uninstall(struct ferry_db *db, struct ferry_error *err)
{
    int rc;

    if (ferry_db_engine(db) != FERRY_ENGINE_SQLITE)
        return ferry_error_set(err, FERRY_ECONFIG,
                               "change capture on this engine is not built yet");
    rc = ferry_db_begin(db, err);
    if (rc)
        return rc;
    rc = drop_all_sqlite(db, err);
    if (rc) {
        ferry_db_rollback(db);
        return rc;
    }
    return ferry_db_commit(db, err);
}

int ferry_capture_check(struct ferry_db *db, const struct ferry_scope *s, struct ferry_error *err)
{
    int exists = 0;
    int rc;

    rc = ferry_db_table_exists(db, "_ferry_changes", &exists, err);
    if (rc)
        return rc;
    if (!exists)
        return ferry_error_set(err, FERRY_ECONFIG,
                               "change capture is not installed; run ferry-src install --config C");
    for (size_t t = 0; t < s->ntables; t++) {
        static const char *const kinds[] = {"i", "u", "d"};

        for (size_t k = 0; k < 3; k++) {
            char name[600];
            struct ferry_value v;
            int64_t n = 0;

            snprintf(name, sizeof(name), "_ferry_%s_%s", kinds[k], s->tables[t].info.name);
            v = ferry_value_text(name, strlen(name));
            rc = ferry_db_query_int(db,
                                    "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger' "
                                    "AND name = ?",
                                    &v, 1, &n, err);
            if (rc)
                return rc;
            if (n == 0)
                return ferry_error_set(err, FERRY_ECONFIG,
                                       "change capture is not installed on table %s (the schema "
                                       "or scope changed?); run ferry-src install --config C",
                                       s->tables[t].info.name);
        }
    }
    return FERRY_OK;
}

int ferry_capture_head(struct ferry_db *db, int64_t *head, struct ferry_error *err)
{
    return ferry_db_query_int(db, "SELECT COALESCE(max(seq), 0) FROM _ferry_changes", NULL, 0, head,
                              err);
}
