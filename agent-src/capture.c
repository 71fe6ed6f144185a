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
 *
 * Orphans: a row written before its parent exists (deferred foreign keys,
 * SQLite without PRAGMA foreign_keys) has no tenant yet. Its trigger notes
 * the parent key it waits for in _ferry_orphans (parent table, child table,
 * the key's values; one entry however many children wait); the parent's
 * insert and update triggers look there (one index probe, nearly always
 * empty) and touch the waiting children, which then take their tenant and
 * log a 'U' like any other write, and their own children follow as above.
 */
#include "capture.h"

#include "../common/buf.h"
#include "freeze.h"
#include "../common/log.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SQL_MAX (1u << 20)

static void sleep_ms(long ms);

/* PostgreSQL's install (pg_install): kinds of object name (ferry_scope_objname) */
/* The config file's path, for the commands messages tell the operator to run. */
static const char *config_file;

void ferry_capture_config_path(const char *path)
{
    config_file = path;
}

static const char *config_path(void)
{
    return config_file && *config_file ? config_file : "C";
}

#define KM_BUILD "n"   /* a key map being built */
#define KM_DIRTY "y"   /* keys written since step 1 */
#define KM_CHANGED "z" /* keys whose tenant step 3 changed (temporary) */

static const char *const kcols[FERRY_MAX_KEY_COLS] = {"k0", "k1", "k2", "k3"};

static int add_trigger_name(struct ferry_buf *b, const char *kind, const char *table)
{
    return ferry_scope_add_objname(b, kind, table);
}

/* "k"-list of the key columns: ctx"a", ctx"b" */
static int add_keys(struct ferry_buf *b, const struct ferry_scope *s, size_t t, const char *ctx)
{
    return ferry_scope_keylist(s, t, ctx, b);
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
 * n pairs lctx"l[i]" = rctx"r[i]" joined by sep: a SET list (", ") or a
 * match (" AND "); the contexts are pasted as they are ("NEW.", "").
 */
static int add_pairs(struct ferry_buf *b, const char *sep, const char *lctx, char *const *l,
                     const char *rctx, char *const *r, size_t n)
{
    int rc = FERRY_OK;

    for (size_t i = 0; i < n && !rc; i++) {
        rc = ferry_buf_addf(b, "%s%s", i ? sep : "", lctx);
        if (!rc)
            rc = ferry_buf_add_ident(b, l[i]);
        if (!rc)
            rc = ferry_buf_addf(b, " = %s", rctx);
        if (!rc)
            rc = ferry_buf_add_ident(b, r[i]);
    }
    return rc;
}

/* The key ctx ("OLD.", "km.") is held by no row of ti now: " NOT EXISTS (...)". */
static int add_key_gone(struct ferry_buf *b, const struct ferry_table_info *ti, const char *ctx)
{
    int rc = ferry_buf_adds(b, " NOT EXISTS (SELECT 1 FROM ");

    if (!rc)
        rc = ferry_buf_add_ident(b, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " AS \"_ferry_x\" WHERE ");
    if (!rc)
        rc = ferry_scope_keymatch(b, ti, "\"_ferry_x\".", ctx);
    return rc ? rc : ferry_buf_adds(b, ")");
}

/*
 * DELETE FROM the key map of ti WHERE its key = ctx's ("OLD.", "NEW."),
 * and with unless_held, only when no row of ti holds that key now.
 */
static int add_keymap_delete_if(struct ferry_buf *b, const struct ferry_table_info *ti,
                                const char *ctx, int unless_held)
{
    int rc = ferry_buf_adds(b, "DELETE FROM ");

    if (!rc)
        rc = ferry_scope_keymap(b, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " WHERE ");
    if (!rc)
        rc = ferry_scope_keymatch(b, ti, "", ctx);
    if (!rc && unless_held) {
        rc = ferry_buf_adds(b, " AND");
        if (!rc)
            rc = add_key_gone(b, ti, ctx);
    }
    return rc ? rc : ferry_buf_adds(b, ";\n");
}

static int add_keymap_delete(struct ferry_buf *b, const struct ferry_table_info *ti,
                             const char *ctx)
{
    return add_keymap_delete_if(b, ti, ctx, 0);
}

/*
 * Log a 'D' for the row ctx ("OLD.", "NEW.") in the tenant the keymap
 * remembers for its key, when cond (SQL, beside the key map's row km) holds.
 */
static int add_tombstone(struct ferry_buf *b, const struct ferry_scope *s, size_t t,
                         const char *ctx, const char *cond)
{
    const struct ferry_table_info *ti = &s->tables[t].info;
    int rc = add_log_head(b, ti, "D");

    if (!rc)
        rc = ferry_buf_adds(b, "km.\"_ferry_tenant\", ");
    if (!rc)
        rc = add_keys(b, s, t, ctx);
    if (!rc)
        rc = ferry_buf_adds(b, " FROM ");
    if (!rc)
        rc = ferry_scope_keymap(b, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " AS km WHERE ");
    if (!rc)
        rc = ferry_scope_keymatch(b, ti, "km.", ctx);
    if (!rc && cond)
        rc = ferry_buf_addf(b, " AND (%s)", cond);
    if (!rc)
        rc = ferry_buf_adds(b, ";\n");
    return rc;
}

/*
 * SQLite: keymap refresh for the row NEW: drop its entry, insert it again
 * with the tenant computed from the database as it is now, then log a 'U'
 * for the tenant it landed in (none when it belongs to no tenant).
 * PostgreSQL's trigger functions do it with variables (pg_insert_body).
 *
 * An entry there before, for another tenant, is a row that REPLACE
 * (INSERT OR REPLACE, UPDATE OR REPLACE) deleted to make room for NEW:
 * SQLite fires no delete trigger for it unless the application's
 * connection set recursive_triggers. That tenant gets its 'D' here.
 */
static int add_refresh_new(struct ferry_buf *b, const struct ferry_scope *s, size_t t)
{
    const struct ferry_table_info *ti = &s->tables[t].info;
    struct ferry_buf cond;
    int rc;

    ferry_buf_init(&cond, SQL_MAX);
    rc = ferry_buf_adds(&cond, "km.\"_ferry_tenant\" IS NOT ");
    if (!rc)
        rc = ferry_scope_owner(s, t, "NEW.", &cond);
    if (!rc)
        rc = add_tombstone(b, s, t, "NEW.", cond.data);
    ferry_buf_release(&cond);
    if (!rc)
        rc = add_keymap_delete(b, ti, "NEW.");

    if (!rc)
        rc = ferry_buf_adds(b, "INSERT INTO ");
    if (!rc)
        rc = ferry_scope_keymap(b, ti->name);
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
        rc = ferry_scope_keymap(b, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " WHERE ");
    if (!rc)
        rc = ferry_scope_keymatch(b, ti, "", "NEW.");
    if (!rc)
        rc = ferry_buf_adds(b, ";\n");
    return rc;
}

/* "(OLD.a<ne>NEW.a OR ...)": the update changed the row's key; ne: IS NOT, IS DISTINCT FROM */
static int add_key_changed(struct ferry_buf *b, const struct ferry_table_info *ti, const char *ne)
{
    int rc = ferry_buf_adds(b, "(");

    for (size_t k = 0; k < ferry_table_npk(ti) && !rc; k++) {
        const char *col = ti->cols[ferry_table_pkcol(ti, k)].name;

        rc = ferry_buf_adds(b, k ? " OR OLD." : "OLD.");
        if (!rc)
            rc = ferry_buf_add_ident(b, col);
        if (!rc)
            rc = ferry_buf_addf(b, "%sNEW.", ne);
        if (!rc)
            rc = ferry_buf_add_ident(b, col);
    }
    return rc ? rc : ferry_buf_adds(b, ")");
}

/* "OLD.a IS DISTINCT FROM NEW.a OR ...": an update changed fk's columns (PostgreSQL) */
static int add_fk_changed(struct ferry_buf *b, const struct ferry_fkey *fk)
{
    int rc = FERRY_OK;

    for (size_t i = 0; i < fk->ncols && !rc; i++) {
        rc = ferry_buf_adds(b, i ? " OR OLD." : "OLD.");
        if (!rc)
            rc = ferry_buf_add_ident(b, fk->cols[i]);
        if (!rc)
            rc = ferry_buf_adds(b, " IS DISTINCT FROM NEW.");
        if (!rc)
            rc = ferry_buf_add_ident(b, fk->cols[i]);
    }
    return rc;
}

/*
 * SQLite condition, beside the key map's row km: the tenant of the updated
 * row, or its key, changed.
 */
static int build_moved_cond(struct ferry_buf *c, const struct ferry_scope *s, size_t t)
{
    int rc = ferry_buf_adds(c, "km.\"_ferry_tenant\" IS NOT ");

    if (!rc)
        rc = ferry_scope_owner(s, t, "NEW.", c);
    if (!rc)
        rc = ferry_buf_adds(c, " OR ");
    return rc ? rc : add_key_changed(c, &s->tables[t].info, " IS NOT ");
}

/*
 * SQLite: the row OLD -> NEW of table t changed its tenant: its key map
 * holds another, or none while NEW now has one. PostgreSQL's trigger
 * functions hold both tenants in variables (pg_update_body).
 */
static int add_tenant_changed(struct ferry_buf *b, const struct ferry_scope *s, size_t t)
{
    int rc = ferry_scope_keymap_tenant(b, &s->tables[t].info, "OLD.");

    if (!rc)
        rc = ferry_buf_adds(b, " IS NOT ");
    return rc ? rc : ferry_scope_owner(s, t, "NEW.", b);
}

/*
 * PostgreSQL: the application's triggers that a touch of ferry's fires run
 * with the session's planner settings, not with the enable_seqscan = off
 * of ferry's trigger functions (pg_table_sql), nor cache plans made so.
 * SET LOCAL inside a function with that SET clause ends with the function.
 */
#define PG_APP_SETTINGS "SET LOCAL enable_seqscan TO DEFAULT;\n"
/*
 * PostgreSQL trigger functions' variables: NEW's tenant, OLD's (its key
 * map's), and whether any tenant is frozen (PG_ANY_FROZEN, freeze.h)
 */
#define PG_O "\"_ferry_o\""
#define PG_OT "\"_ferry_ot\""
#define PG_FZ "\"_ferry_fz\""
#define PG_FT "\"_ferry_ft\"" /* the truncate's frozen tenant */
#define PG_ANY_FROZEN "EXISTS (SELECT 1 FROM _ferry_frozen)"
#define PG_FERRY_SETTINGS "SET LOCAL enable_seqscan TO off;\n"

/*
 * PostgreSQL: "IF the tenant changed THEN", and the moved row locked FOR
 * UPDATE before its children are touched. A foreign key's check locks the
 * parent FOR KEY SHARE, which a plain update of it does not wait for: a
 * child written while the move is uncommitted would look its tenant up in
 * the parent as it was, and one written just before would be invisible to
 * the touch. FOR UPDATE waits for such a writer (then the touch, a new
 * statement, sees its child) and makes the next ones wait for the move's
 * commit (then their triggers see the new tenant). Under REPEATABLE READ
 * the move's touch still cannot see a child committed after the move's
 * transaction began.
 */
/* "<table> WHERE <key> = NEW.<key>": the row NEW, in the table (as the trigger's statement sees
 * it). */
static int pg_add_new_row(struct ferry_buf *b, const struct ferry_table_info *ti)
{
    int rc = ferry_buf_add_ident(b, ti->name);

    if (!rc)
        rc = ferry_buf_adds(b, " WHERE ");
    return rc ? rc : ferry_scope_keymatch(b, ti, "", "NEW.");
}

static int pg_add_lock_moved(struct ferry_buf *b, const struct ferry_table_info *ti)
{
    int rc = ferry_buf_adds(b, "IF " PG_OT " IS DISTINCT FROM " PG_O " THEN\nPERFORM 1 FROM ");

    if (!rc)
        rc = pg_add_new_row(b, ti);
    return rc ? rc : ferry_buf_adds(b, " FOR UPDATE;\n" PG_APP_SETTINGS);
}

/*
 * Children on the scope path follow a row whose tenant changed: a no-op
 * write to each child that references the row (by its old or new values)
 * fires the child's own update trigger, which recomputes its tenant. On
 * PostgreSQL the writes run only when the tenant changed (an IF on the
 * trigger function's variables, see pg_update_body): an UPDATE that
 * matches no row still fires the application's statement-level triggers
 * of the child's table.
 */
static int add_touch_children(struct ferry_buf *b, const struct ferry_scope *s, size_t t, int pg)
{
    const struct ferry_table_info *ti = &s->tables[t].info;
    int rc = FERRY_OK;
    int any = 0;

    for (size_t c = t + 1; c < s->ntables && !rc; c++) {
        const struct ferry_scope_table *ct = &s->tables[c];
        const struct ferry_fkey *fk;

        if (ct->parent != (int)t || ct->info.scope_sql)
            continue;
        fk = &ct->info.fks[ct->fk];
        if (pg && !any)
            rc = pg_add_lock_moved(b, ti);
        any = 1;
        if (!rc)
            rc = ferry_buf_adds(b, "UPDATE ");
        if (!rc)
            rc = ferry_buf_add_ident(b, ct->info.name);
        if (!rc)
            rc = ferry_buf_adds(b, " SET ");
        if (!rc)
            rc = add_pairs(b, ", ", "", fk->cols, "", fk->cols, fk->ncols);
        for (int pass = 0; pass < 2 && !rc; pass++) {
            rc = ferry_buf_adds(b, pass ? " OR (" : " WHERE ((");
            if (!rc)
                rc = add_pairs(b, " AND ", "", fk->cols, pass ? "NEW." : "OLD.", fk->pcols,
                               fk->ncols);
            if (!rc)
                rc = ferry_buf_adds(b, ")");
        }
        if (!rc)
            rc = ferry_buf_adds(b, pg ? ");\n" : ") AND ");
        if (!rc && !pg)
            rc = add_tenant_changed(b, s, t);
        if (!rc && !pg)
            rc = ferry_buf_adds(b, ";\n");
    }
    if (!rc && pg && any)
        rc = ferry_buf_adds(b, PG_FERRY_SETTINGS "END IF;\n");
    return rc;
}

/* The scope foreign key of table t to its parent, or NULL (root, or a scope predicate). */
static const struct ferry_fkey *path_fk(const struct ferry_scope *s, size_t t)
{
    const struct ferry_scope_table *st = &s->tables[t];

    if (st->parent < 0 || st->fk < 0 || st->info.scope_sql)
        return NULL;
    return &st->info.fks[st->fk];
}

/* "p0, p1" for the n columns of a parent key in _ferry_orphans */
static int add_orphan_cols(struct ferry_buf *b, size_t n)
{
    int rc = FERRY_OK;

    for (size_t i = 0; i < n && !rc; i++)
        rc = ferry_buf_addf(b, "%sp%zu", i ? ", " : "", i);
    return rc;
}

/*
 * Column col of ti (of the row row: "NEW.") as _ferry_orphans keeps a key.
 * On SQLite the value itself. On PostgreSQL text that two values share when
 * the foreign key calls them equal, so that a child's note and its parent's
 * key meet: most types' text does; a numeric's keeps its scale (1.0, 1.00
 * and 1 are one key: trailing zeros go) and a float's its sign of zero (-0
 * is 0).
 */
static int add_orphan_value(struct ferry_buf *b, const char *row, const struct ferry_table_info *ti,
                            const char *col, int pg)
{
    int c = ferry_table_colidx(ti, col);
    const char *type = c >= 0 && ti->cols[c].type ? ti->cols[c].type : "";
    struct ferry_buf x;
    int rc;

    ferry_buf_init(&x, 1024);
    rc = ferry_buf_adds(&x, row);
    if (!rc)
        rc = ferry_buf_add_ident(&x, col);
    if (!rc && !pg)
        rc = ferry_buf_adds(b, x.data);
    else if (!rc && strncmp(type, "numeric", 7) == 0)
        rc = ferry_buf_addf(b,
                            "CASE WHEN pg_catalog.strpos((%s)::text, '.') > 0 THEN "
                            "pg_catalog.rtrim(pg_catalog.rtrim((%s)::text, '0'), '.') "
                            "ELSE (%s)::text END",
                            x.data, x.data, x.data);
    else if (!rc && (strcmp(type, "double precision") == 0 || strcmp(type, "real") == 0))
        rc = ferry_buf_addf(b, "CASE WHEN %s = 0 THEN '0' ELSE (%s)::text END", x.data, x.data);
    else if (!rc)
        rc = ferry_buf_addf(b, "(%s)::text", x.data);
    ferry_buf_release(&x);
    return rc;
}

/* ptbl = 'P' AND ctbl = 'C' AND p0 = <NEW.pcol0 as kept> AND ..., pi the parent's table */
static int add_orphan_match(struct ferry_buf *b, const char *o, const struct ferry_table_info *pi,
                            const char *ctbl, const struct ferry_fkey *fk, int pg)
{
    int rc = ferry_buf_addf(b, "%sptbl = ", o);

    if (!rc)
        rc = ferry_buf_add_literal(b, pi->name);
    if (!rc)
        rc = ferry_buf_addf(b, " AND %sctbl = ", o);
    if (!rc)
        rc = ferry_buf_add_literal(b, ctbl);
    for (size_t i = 0; i < fk->ncols && !rc; i++) {
        rc = ferry_buf_addf(b, " AND %sp%zu = ", o, i);
        if (!rc)
            rc = add_orphan_value(b, "NEW.", pi, fk->pcols[i], pg);
    }
    return rc;
}

/*
 * Note the parent keys rows of table t wait for: their columns all set, no
 * row of the parent table has them. In a trigger, for the row NEW; at
 * install (backfill), for the rows already there (the triggers note the
 * ones written from then on), into the table into, of those rows for which
 * cond (SQL on the row "_ferry_c", or NULL) holds.
 */
static int add_orphan_note_in(struct ferry_buf *b, const struct ferry_scope *s, size_t t, int pg,
                              int backfill, const char *into, const char *cond)
{
    const struct ferry_fkey *fk = path_fk(s, t);
    const char *row = backfill ? "\"_ferry_c\"." : "NEW.";
    const char *ptbl;
    int rc;

    if (!fk)
        return FERRY_OK;
    ptbl = s->tables[s->tables[t].parent].info.name;
    rc =
        ferry_buf_addf(b, "%s %s(ptbl, ctbl, ", pg ? "INSERT INTO" : "INSERT OR IGNORE INTO", into);
    if (!rc)
        rc = add_orphan_cols(b, fk->ncols);
    if (!rc)
        rc = ferry_buf_adds(b, backfill ? ") SELECT DISTINCT " : ") SELECT ");
    if (!rc)
        rc = ferry_buf_add_literal(b, ptbl);
    if (!rc)
        rc = ferry_buf_adds(b, ", ");
    if (!rc)
        rc = ferry_buf_add_literal(b, s->tables[t].info.name);
    for (size_t i = 0; i < fk->ncols && !rc; i++) {
        rc = ferry_buf_adds(b, ", ");
        if (!rc)
            rc = add_orphan_value(b, row, &s->tables[t].info, fk->cols[i], pg);
    }
    if (!rc && backfill) {
        rc = ferry_buf_adds(b, " FROM ");
        if (!rc)
            rc = ferry_buf_add_ident(b, s->tables[t].info.name);
        if (!rc)
            rc = ferry_buf_adds(b, " AS \"_ferry_c\"");
    }
    for (size_t i = 0; i < fk->ncols && !rc; i++) {
        rc = ferry_buf_addf(b, "%s%s", i ? " AND " : " WHERE ", row);
        if (!rc)
            rc = ferry_buf_add_ident(b, fk->cols[i]);
        if (!rc)
            rc = ferry_buf_adds(b, " IS NOT NULL");
    }
    if (!rc && cond)
        rc = ferry_buf_addf(b, " AND %s", cond);
    if (!rc)
        rc = ferry_buf_adds(b, " AND NOT EXISTS (SELECT 1 FROM ");
    if (!rc)
        rc = ferry_buf_add_ident(b, ptbl);
    /* the bare names are the parent's: the innermost table comes first */
    if (!rc)
        rc = ferry_buf_adds(b, " WHERE ");
    if (!rc)
        rc = add_pairs(b, " AND ", "", fk->pcols, row, fk->cols, fk->ncols);
    if (!rc)
        rc = ferry_buf_adds(b, pg ? ") ON CONFLICT DO NOTHING;\n" : ");\n");
    return rc;
}

static int add_orphan_note(struct ferry_buf *b, const struct ferry_scope *s, size_t t, int pg,
                           int backfill)
{
    return add_orphan_note_in(b, s, t, pg, backfill, "_ferry_orphans", NULL);
}

/*
 * Children of table t waiting for the row NEW: touched (their triggers give
 * them NEW's tenant), then no longer waiting. On SQLite the touch is driven
 * from _ferry_orphans, so that with nothing waiting it costs one index
 * probe and no scan of the child table; on PostgreSQL an IF does that.
 */
static int add_orphan_adopt(struct ferry_buf *b, const struct ferry_scope *s, size_t t, int pg)
{
    const struct ferry_table_info *pi = &s->tables[t].info;
    int rc = FERRY_OK;

    for (size_t c = t + 1; c < s->ntables && !rc; c++) {
        const struct ferry_table_info *ci = &s->tables[c].info;
        const struct ferry_fkey *fk = path_fk(s, c);
        size_t npk = ferry_table_npk(ci);

        if (!fk || s->tables[c].parent != (int)t)
            continue;
        if (pg) {
            rc = ferry_buf_adds(b, "IF EXISTS (SELECT 1 FROM _ferry_orphans WHERE ");
            if (!rc)
                rc = add_orphan_match(b, "", pi, ci->name, fk, 1);
            if (!rc)
                rc = ferry_buf_adds(b, ") THEN\n" PG_APP_SETTINGS);
        }
        if (!rc)
            rc = ferry_buf_adds(b, "UPDATE ");
        if (!rc)
            rc = ferry_buf_add_ident(b, ci->name);
        if (!rc)
            rc = ferry_buf_adds(b, " SET ");
        if (!rc)
            rc = add_pairs(b, ", ", "", fk->cols, "", fk->cols, fk->ncols);
        if (pg) {
            rc = rc ? rc : ferry_buf_adds(b, " WHERE ");
            if (!rc)
                rc = add_pairs(b, " AND ", "", fk->cols, "NEW.", fk->pcols, fk->ncols);
        } else {
            rc = rc ? rc : ferry_buf_adds(b, npk > 1 ? " WHERE (" : " WHERE ");
            if (!rc)
                rc = add_keys(b, s, c, "");
            if (!rc)
                rc = ferry_buf_adds(b, npk > 1 ? ") IN (SELECT " : " IN (SELECT ");
            if (!rc)
                rc = add_keys(b, s, c, "\"_ferry_c\".");
            if (!rc)
                rc = ferry_buf_adds(b, " FROM _ferry_orphans AS o, ");
            if (!rc)
                rc = ferry_buf_add_ident(b, ci->name);
            if (!rc)
                rc = ferry_buf_adds(b, " AS \"_ferry_c\" WHERE ");
            if (!rc)
                rc = add_orphan_match(b, "o.", pi, ci->name, fk, 0);
            for (size_t i = 0; i < fk->ncols && !rc; i++) {
                rc = ferry_buf_adds(b, " AND \"_ferry_c\".");
                if (!rc)
                    rc = ferry_buf_add_ident(b, fk->cols[i]);
                if (!rc)
                    rc = ferry_buf_addf(b, " = o.p%zu", i);
            }
            if (!rc)
                rc = ferry_buf_adds(b, ")");
        }
        if (!rc)
            rc = ferry_buf_adds(b, pg ? ";\n" PG_FERRY_SETTINGS "DELETE FROM _ferry_orphans WHERE "
                                      : ";\nDELETE FROM _ferry_orphans WHERE ");
        if (!rc)
            rc = add_orphan_match(b, "", pi, ci->name, fk, pg);
        if (!rc)
            rc = ferry_buf_adds(b, pg ? ";\nEND IF;\n" : ";\n");
    }
    return rc;
}

/*
 * SQLite's REPLACE through a UNIQUE index other than the primary key
 * deletes the row holding the value with no delete trigger (add_refresh_new
 * covers the rows REPLACE deletes for holding NEW's key). Before an insert,
 * or an update that changes an indexed column, the rows that hold NEW's
 * value in such an index are noted in _ferry_replacing; after it, the noted
 * keys no row holds any more are the deleted ones: their tenant gets its
 * 'D', their entries leave the key map. A note that stays behind (INSERT OR
 * IGNORE deletes nothing and runs no AFTER trigger) is looked at by the
 * table's next write: its row is still there, nothing is logged.
 */
struct sqlite_replace {
    struct ferry_buf bi, bu; /* the BEFORE INSERT and BEFORE UPDATE triggers, or empty */
    struct ferry_buf after;  /* the AFTER INSERT and AFTER UPDATE triggers that look, or empty */
    int skipped;             /* unique indexes on expressions, not covered */
};

/* CREATE TRIGGER <kind> <event> ON t [WHEN cond] BEGIN body END ("BEFORE INSERT") */
static int add_sqlite_trigger(struct ferry_buf *b, const struct ferry_table_info *ti,
                              const char *kind, const char *event, const char *when,
                              const char *body)
{
    int rc = ferry_buf_adds(b, "CREATE TRIGGER ");

    if (!rc)
        rc = add_trigger_name(b, kind, ti->name);
    if (!rc)
        rc = ferry_buf_addf(b, " %s ON ", event);
    if (!rc)
        rc = ferry_buf_add_ident(b, ti->name);
    if (!rc && when)
        rc = ferry_buf_addf(b, " WHEN %s", when);
    if (!rc)
        rc = ferry_buf_addf(b, " BEGIN\n%sEND", body);
    return rc;
}

/* ctx"pk" = r.k0 AND ... over the key columns of ti. */
static int add_noted_match(struct ferry_buf *b, const struct ferry_table_info *ti, const char *ctx)
{
    int rc = FERRY_OK;

    for (size_t k = 0; k < ferry_table_npk(ti) && !rc; k++) {
        rc = ferry_buf_addf(b, "%s%s", k ? " AND " : "", ctx);
        if (!rc)
            rc = ferry_buf_add_ident(b, ti->cols[ferry_table_pkcol(ti, k)].name);
        if (!rc)
            rc = ferry_buf_addf(b, " = r.%s", kcols[k]);
    }
    return rc;
}

/* One index's note: INSERT INTO _ferry_replacing ... WHERE match (x.c = NEW.c COLLATE coll ...) */
static int add_replace_note(struct ferry_buf *b, const struct ferry_scope *s, size_t t,
                            const struct ferry_value *match, int update)
{
    const struct ferry_table_info *ti = &s->tables[t].info;
    int rc = ferry_buf_adds(b, "INSERT INTO _ferry_replacing(tbl");

    for (size_t k = 0; k < ferry_table_npk(ti) && !rc; k++)
        rc = ferry_buf_addf(b, ", %s", kcols[k]);
    if (!rc)
        rc = ferry_buf_adds(b, ") SELECT ");
    if (!rc)
        rc = ferry_buf_add_literal(b, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, ", ");
    if (!rc)
        rc = add_keys(b, s, t, "\"_ferry_x\".");
    if (!rc)
        rc = ferry_buf_adds(b, " FROM ");
    if (!rc)
        rc = ferry_buf_add_ident(b, ti->name);
    if (!rc)
        rc = ferry_buf_addf(b, " AS \"_ferry_x\" WHERE %.*s", (int)match->u.s.n, match->u.s.p);
    if (!rc && update) {
        rc = ferry_buf_adds(b, " AND NOT (");
        if (!rc)
            rc = ferry_scope_keymatch(b, ti, "\"_ferry_x\".", "OLD.");
        if (!rc)
            rc = ferry_buf_adds(b, ")");
    }
    return rc ? rc : ferry_buf_adds(b, ";\n");
}

/*
 * The AFTER INSERT and AFTER UPDATE triggers that look at the notes, when
 * there are any: the noted keys no row holds are gone from their tenant.
 */
static int add_replaced_after(struct ferry_buf *b, const struct ferry_scope *s, size_t t)
{
    const struct ferry_table_info *ti = &s->tables[t].info;
    size_t npk = ferry_table_npk(ti);
    struct ferry_buf body, when, km;
    int rc;

    ferry_buf_init(&body, SQL_MAX);
    ferry_buf_init(&when, SQL_MAX);
    ferry_buf_init(&km, 256);
    rc = ferry_scope_keymap(&km, ti->name);
    if (!rc)
        rc = ferry_buf_adds(&km, ".");
    if (!rc)
        rc = add_log_head(&body, ti, "D");
    if (!rc)
        rc = ferry_buf_adds(&body, "km.\"_ferry_tenant\"");
    for (size_t k = 0; k < npk && !rc; k++)
        rc = ferry_buf_addf(&body, ", r.%s", kcols[k]);
    if (!rc)
        rc = ferry_buf_adds(&body, " FROM _ferry_replacing AS r JOIN ");
    if (!rc)
        rc = ferry_scope_keymap(&body, ti->name);
    if (!rc)
        rc = ferry_buf_adds(&body, " AS km ON ");
    if (!rc)
        rc = add_noted_match(&body, ti, "km.");
    if (!rc)
        rc = ferry_buf_adds(&body, " WHERE r.tbl = ");
    if (!rc)
        rc = ferry_buf_add_literal(&body, ti->name);
    if (!rc)
        rc = ferry_buf_adds(&body, " AND");
    if (!rc)
        rc = add_key_gone(&body, ti, "km.");
    if (!rc)
        rc = ferry_buf_adds(&body, ";\nDELETE FROM ");
    if (!rc)
        rc = ferry_scope_keymap(&body, ti->name);
    /* driven by the notes, through the key map's primary key */
    if (!rc)
        rc = ferry_buf_adds(&body, npk > 1 ? " WHERE (" : " WHERE ");
    if (!rc)
        rc = add_keys(&body, s, t, "");
    if (!rc)
        rc = ferry_buf_adds(&body, npk > 1 ? ") IN (SELECT " : " IN (SELECT ");
    for (size_t k = 0; k < npk && !rc; k++)
        rc = ferry_buf_addf(&body, "%sr.%s", k ? ", " : "", kcols[k]);
    if (!rc)
        rc = ferry_buf_adds(&body, " FROM _ferry_replacing AS r WHERE r.tbl = ");
    if (!rc)
        rc = ferry_buf_add_literal(&body, ti->name);
    if (!rc)
        rc = ferry_buf_adds(&body, ") AND");
    if (!rc)
        rc = add_key_gone(&body, ti, km.data);
    if (!rc)
        rc = ferry_buf_adds(&body, ";\nDELETE FROM _ferry_replacing WHERE tbl = ");
    if (!rc)
        rc = ferry_buf_add_literal(&body, ti->name);
    if (!rc)
        rc = ferry_buf_adds(&body, ";\n");

    /* nearly always false: one look at an empty table */
    if (!rc)
        rc = ferry_buf_adds(&when, "EXISTS (SELECT 1 FROM _ferry_replacing WHERE tbl = ");
    if (!rc)
        rc = ferry_buf_add_literal(&when, ti->name);
    if (!rc)
        rc = ferry_buf_adds(&when, ")");
    if (!rc)
        rc = add_sqlite_trigger(b, ti, "ri", "AFTER INSERT", when.data, body.data);
    if (!rc)
        rc = ferry_buf_adds(b, ";\n");
    if (!rc)
        rc = add_sqlite_trigger(b, ti, "ru", "AFTER UPDATE", when.data, body.data);
    if (!rc)
        rc = ferry_buf_adds(b, ";\n");
    ferry_buf_release(&body);
    ferry_buf_release(&when);
    ferry_buf_release(&km);
    return rc;
}

static void sqlite_replace_release(struct sqlite_replace *r)
{
    ferry_buf_release(&r->bi);
    ferry_buf_release(&r->bu);
    ferry_buf_release(&r->after);
}

int ferry_capture_sqlite_uniques(struct ferry_db *db, const char *table,
                                 ferry_capture_unique_fn each, void *arg, int *skipped,
                                 struct ferry_error *err)
{
    struct ferry_value name = ferry_value_text(table, strlen(table));
    struct ferry_stmt *st = NULL;
    int row = 0, rc;

    *skipped = 0;
    /*
     * Per index: whether it has an expression (cid < 0), the rows holding
     * NEW's values in it (compared under the index's collations, so that
     * they match as they clash, and the index is used), and whether an
     * update changed one of its columns; names quoted as ferry_buf_add_ident
     * does.
     */
    rc = ferry_db_prepare(
        db,
        "WITH x(idx, partial, cid, c, coll) AS (SELECT il.name, il.partial, xi.cid, '\"' || "
        "replace(xi.name, '\"', '\"\"') || '\"', '\"' || replace(xi.coll, '\"', '\"\"') || "
        "'\"' FROM pragma_index_list(?1) AS il, pragma_index_xinfo(il.name) AS xi WHERE "
        "il.\"unique\" AND il.origin <> 'pk' AND xi.key ORDER BY il.name, xi.seqno) SELECT "
        "max(cid < 0), group_concat('\"_ferry_x\".' || c || ' = NEW.' || c || ' COLLATE ' || "
        "coll, ' AND '), group_concat('NEW.' || c || ' IS NOT OLD.' || c || ' COLLATE BINARY', "
        "' OR '), max(partial) FROM x GROUP BY idx ORDER BY idx",
        &st, err);
    if (!rc)
        rc = ferry_stmt_bind(st, 1, &name, err);
    while (!rc && !(rc = ferry_stmt_step(st, &row, err)) && row) {
        struct ferry_value v[4];

        for (int i = 0; i < 4; i++)
            ferry_stmt_column(st, i, &v[i]);
        if (v[0].type != FERRY_INT || v[0].u.i || v[1].type != FERRY_TEXT ||
            v[2].type != FERRY_TEXT) {
            ++*skipped; /* on an expression */
            continue;
        }
        rc = each(arg, &v[1], &v[2], v[3].type == FERRY_INT && v[3].u.i);
    }
    ferry_stmt_free(st);
    return rc;
}

/* sqlite_replace_sql's way through the indexes */
struct replace_build {
    const struct ferry_scope *s;
    size_t t;
    struct ferry_buf ins, upd, when;
};

static int replace_index(void *arg, const struct ferry_value *match,
                         const struct ferry_value *changed, int partial)
{
    struct replace_build *rb = arg;
    int rc = add_replace_note(&rb->ins, rb->s, rb->t, match, 0);

    (void)partial; /* as if whole: a note too many only costs a look-up */
    if (!rc)
        rc = add_replace_note(&rb->upd, rb->s, rb->t, match, 1);
    if (!rc)
        rc = ferry_buf_addf(&rb->when, "%s%.*s", rb->when.len ? " OR " : "", (int)changed->u.s.n,
                            changed->u.s.p);
    return rc;
}

/*
 * Fill r for table t from its UNIQUE indexes other than the primary key
 * (constraints and CREATE UNIQUE INDEX alike; a partial index as if it were
 * whole: a note too many only costs a look-up). Empty when it has none.
 */
static int sqlite_replace_sql(struct ferry_db *db, const struct ferry_scope *s, size_t t,
                              struct sqlite_replace *r, struct ferry_error *err)
{
    const struct ferry_table_info *ti = &s->tables[t].info;
    struct replace_build rb;
    int rc;

    ferry_buf_init(&r->bi, SQL_MAX);
    ferry_buf_init(&r->bu, SQL_MAX);
    ferry_buf_init(&r->after, SQL_MAX);
    rb.s = s;
    rb.t = t;
    ferry_buf_init(&rb.ins, SQL_MAX);
    ferry_buf_init(&rb.upd, SQL_MAX);
    ferry_buf_init(&rb.when, SQL_MAX);
    rc = ferry_capture_sqlite_uniques(db, ti->name, replace_index, &rb, &r->skipped, err);
    if (!rc && rb.ins.len) {
        rc = add_sqlite_trigger(&r->bi, ti, "bi", "BEFORE INSERT", NULL, rb.ins.data);
        if (!rc)
            rc = add_sqlite_trigger(&r->bu, ti, "bu", "BEFORE UPDATE", rb.when.data, rb.upd.data);
        if (!rc)
            rc = add_replaced_after(&r->after, s, t);
        if (rc)
            rc = ferry_error_set(err, rc, "cannot build capture SQL for %s", ti->name);
    }
    ferry_buf_release(&rb.ins);
    ferry_buf_release(&rb.upd);
    ferry_buf_release(&rb.when);
    if (rc)
        sqlite_replace_release(r);
    return rc;
}

/*
 * " SELECT * FROM (SELECT <key>, <owner> AS o FROM t AS "_ferry_s" [WHERE
 * cond]) AS "_ferry_b" WHERE o IS NOT NULL": the key map's entries of
 * table t's rows (those for which cond holds), from the database as it is.
 */
static int add_owned_select(struct ferry_buf *b, const struct ferry_scope *s, size_t t,
                            const char *cond)
{
    int rc = ferry_buf_adds(b, " SELECT * FROM (SELECT ");

    if (!rc)
        rc = add_keys(b, s, t, "\"_ferry_s\".");
    if (!rc)
        rc = ferry_buf_adds(b, ", ");
    if (!rc)
        rc = ferry_scope_owner(s, t, "\"_ferry_s\".", b);
    if (!rc)
        rc = ferry_buf_adds(b, " AS o FROM ");
    if (!rc)
        rc = ferry_buf_add_ident(b, s->tables[t].info.name);
    if (!rc)
        rc = ferry_buf_addf(b, " AS \"_ferry_s\"%s%s) AS \"_ferry_b\" WHERE o IS NOT NULL",
                            cond ? " WHERE " : "", cond ? cond : "");
    return rc;
}

/*
 * " AND (ctx"k1", ctx"k2") op (?first, ?first+1)": the key of the row ctx
 * against bound values, in the order of the table's primary key.
 */
static int add_key_bound(struct ferry_buf *b, const struct ferry_scope *s, size_t t,
                         const char *ctx, const char *op, int first)
{
    size_t npk = ferry_table_npk(&s->tables[t].info);
    int rc = ferry_buf_adds(b, " AND (");

    if (!rc)
        rc = add_keys(b, s, t, ctx);
    if (!rc)
        rc = ferry_buf_addf(b, ") %s (", op);
    for (size_t k = 0; k < npk && !rc; k++)
        rc = ferry_buf_addf(b, "%s?%zu", k ? ", " : "", first + k);
    return rc ? rc : ferry_buf_adds(b, ")");
}

/* A step's statements (sqlite_build_online), each with or without the bound keys. */
#define SQLITE_STEP_MAX 8
struct sqlite_step {
    struct ferry_buf st[SQLITE_STEP_MAX];
    int bound[SQLITE_STEP_MAX]; /* uses ?1.. and ?5.. */
    int n;
};

/* The next statement of step; bound: it names the bound keys. NULL when full (a bug). */
static struct ferry_buf *step_add(struct sqlite_step *step, int bound)
{
    if (step->n == SQLITE_STEP_MAX)
        return NULL;
    step->bound[step->n] = bound;
    ferry_buf_reset(&step->st[step->n]);
    return &step->st[step->n++];
}

/*
 * The statements of one step over table t's rows whose key lies after the
 * bound values ?1.. (with gt ">") and up to ?5.. (with le "<="): either
 * bound may be NULL. They note the parent keys those rows wait for, and:
 * - a new key map (keep 0): the rows' entries, into the empty map; an
 *   entry the triggers wrote meanwhile is left alone (INSERT OR IGNORE),
 *   both read the database as it is;
 * - a kept one (a re-install, keep 1): the entries the map should hold
 *   (temp._ferry_fix) against those it holds in that range; each entry
 *   that is wrong or whose row is gone gives its tenant a 'D', each row
 *   the map misses or has under another tenant gives its tenant a 'U',
 *   and the map is made right. A map the triggers kept is right already;
 *   what an older capture missed, or the scope's change, is mended.
 */
static int sqlite_step_sql(struct sqlite_step *step, const struct ferry_scope *s, size_t t,
                           const char *gt, const char *le, int keep)
{
    const struct ferry_table_info *ti = &s->tables[t].info;
    struct ferry_buf cond, kmc, km, *b;
    int rc;

    step->n = 0;
    ferry_buf_init(&cond, SQL_MAX);
    ferry_buf_init(&kmc, SQL_MAX);
    ferry_buf_init(&km, 256);
    rc = ferry_scope_keymap(&km, ti->name);
    if (!rc)
        rc = ferry_buf_adds(&cond, "1");
    if (!rc && gt)
        rc = add_key_bound(&cond, s, t, "\"_ferry_s\".", gt, 1);
    if (!rc && le)
        rc = add_key_bound(&cond, s, t, "\"_ferry_s\".", le, 5);
    /* the same range over the key map's own rows, named km */
    if (!rc)
        rc = ferry_buf_adds(&kmc, "1");
    if (!rc && gt)
        rc = add_key_bound(&kmc, s, t, "km.", gt, 1);
    if (!rc && le)
        rc = add_key_bound(&kmc, s, t, "km.", le, 5);
    if (!rc && !keep) {
        b = step_add(step, 1);
        rc = ferry_buf_addf(b, "INSERT OR IGNORE INTO %s", km.data);
        if (!rc)
            rc = add_owned_select(b, s, t, cond.data);
    } else if (!rc) {
        size_t npk = ferry_table_npk(ti);
        struct ferry_buf same;

        rc = ferry_buf_adds(step_add(step, 0), "DELETE FROM temp._ferry_fix");
        b = step_add(step, 1);
        if (!rc)
            rc = ferry_buf_adds(b, "INSERT INTO temp._ferry_fix(");
        for (size_t k = 0; k < npk && !rc; k++)
            rc = ferry_buf_addf(b, "%s, ", kcols[k]);
        if (!rc)
            rc = ferry_buf_adds(b, "o)");
        if (!rc)
            rc = add_owned_select(b, s, t, cond.data);
        /* an entry km as the map should hold it, as a row r of temp._ferry_fix says */
        ferry_buf_init(&same, SQL_MAX);
        if (!rc)
            rc = add_noted_match(&same, ti, "km.");
        if (!rc)
            rc = ferry_buf_adds(&same, " AND r.o = km.\"_ferry_tenant\")");
        /* entries that are wrong, or whose row is gone: a 'D' for their tenant */
        b = step_add(step, 1);
        if (!rc)
            rc = add_log_head(b, ti, "D");
        if (!rc)
            rc = ferry_buf_adds(b, "km.\"_ferry_tenant\", ");
        if (!rc)
            rc = add_keys(b, s, t, "km.");
        if (!rc)
            rc = ferry_buf_addf(b,
                                " FROM %s AS km WHERE %s AND NOT EXISTS (SELECT 1 FROM "
                                "temp._ferry_fix AS r WHERE %s",
                                km.data, kmc.data, same.data);
        /* rows the map misses, or has under another tenant: a 'U' for theirs */
        b = step_add(step, 0);
        if (!rc)
            rc = add_log_head(b, ti, "U");
        if (!rc)
            rc = ferry_buf_adds(b, "r.o");
        for (size_t k = 0; k < npk && !rc; k++)
            rc = ferry_buf_addf(b, ", r.%s", kcols[k]);
        if (!rc)
            rc = ferry_buf_addf(b,
                                " FROM temp._ferry_fix AS r WHERE NOT EXISTS (SELECT 1 "
                                "FROM %s AS km WHERE %s",
                                km.data, same.data);
        /* the map made right: wrong entries out, missing ones in */
        b = step_add(step, 1);
        if (!rc)
            rc = ferry_buf_addf(b,
                                "DELETE FROM %s AS km WHERE %s AND NOT EXISTS (SELECT 1 "
                                "FROM temp._ferry_fix AS r WHERE %s",
                                km.data, kmc.data, same.data);
        ferry_buf_release(&same);
        b = step_add(step, 0);
        if (!rc)
            rc = ferry_buf_addf(b, "INSERT OR IGNORE INTO %s SELECT ", km.data);
        for (size_t k = 0; k < npk && !rc; k++)
            rc = ferry_buf_addf(b, "%s, ", kcols[k]);
        if (!rc)
            rc = ferry_buf_adds(b, "o FROM temp._ferry_fix");
    }
    ferry_buf_reset(&cond);
    if (!rc)
        rc = ferry_buf_adds(&cond, "1");
    if (!rc && gt)
        rc = add_key_bound(&cond, s, t, "\"_ferry_c\".", gt, 1);
    if (!rc && le)
        rc = add_key_bound(&cond, s, t, "\"_ferry_c\".", le, 5);
    if (!rc) {
        b = step_add(step, 1);
        rc = add_orphan_note_in(b, s, t, 0, 1, "_ferry_orphans", gt || le ? cond.data : NULL);
        if (!rc && !b->len)
            step->n--; /* no foreign key on the scope path: nothing waits */
    }
    ferry_buf_release(&cond);
    ferry_buf_release(&kmc);
    ferry_buf_release(&km);
    return rc;
}

/* keep: the key map there is kept (sqlite_build_online checks it), else made anew, empty */
static int sqlite_table_sql(struct ferry_buf *b, const struct ferry_scope *s, size_t t, int keep)
{
    const struct ferry_table_info *ti = &s->tables[t].info;
    struct ferry_buf cond;
    int rc;

    /* key map: same key columns, no declared types, so values keep their class */
    rc = ferry_buf_adds(b, keep ? "" : "DROP TABLE IF EXISTS ");
    if (!rc && !keep)
        rc = ferry_scope_keymap(b, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, keep ? "CREATE TABLE IF NOT EXISTS " : ";\nCREATE TABLE ");
    if (!rc)
        rc = ferry_scope_keymap(b, ti->name);
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
        rc = ferry_buf_adds(b, "));\nCREATE INDEX IF NOT EXISTS ");
    /* (tenant, key): snapshot pages walk one tenant's keys in order */
    if (!rc)
        rc = add_trigger_name(b, "ki", ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " ON ");
    if (!rc)
        rc = ferry_scope_keymap(b, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, "(\"_ferry_tenant\", ");
    if (!rc)
        rc = add_keys(b, s, t, "");
    if (!rc)
        rc = ferry_buf_adds(b, ");\n");

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
        rc = add_orphan_note(b, s, t, 0, 0);
    if (!rc)
        rc = add_orphan_adopt(b, s, t, 0);
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
        rc = add_touch_children(b, s, t, 0);
    if (!rc)
        rc = add_tombstone(b, s, t, "OLD.", cond.data);
    if (!rc)
        rc = add_keymap_delete(b, ti, "OLD.");
    if (!rc)
        rc = add_refresh_new(b, s, t);
    if (!rc)
        rc = add_orphan_note(b, s, t, 0, 0);
    if (!rc)
        rc = add_orphan_adopt(b, s, t, 0);
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
        rc = add_tombstone(b, s, t, "OLD.", NULL);
    if (!rc)
        rc = add_keymap_delete(b, ti, "OLD.");
    if (!rc)
        rc = ferry_buf_adds(b, "END;\n");
    return rc;
}

/* ---- PostgreSQL ---- */

/*
 * Key types whose text form does not depend on the session's settings
 * (DateStyle, TimeZone, IntervalStyle, extra_float_digits, bytea_output):
 * the triggers of a table keyed by any other type pin those settings, so
 * the key text logged by any application session is the one ferry's own
 * sessions read and write (see pg.c's session settings).
 */
static int pg_stable_key_type(const char *type)
{
    static const char *const stable[] = {"smallint",  "integer", "bigint", "text",
                                         "uuid",      "boolean", "oid",    "character varying",
                                         "character", "numeric"};

    for (size_t i = 0; i < sizeof(stable) / sizeof(stable[0]); i++) {
        size_t n = strlen(stable[i]);

        if (strncmp(type, stable[i], n) == 0 && (type[n] == '\0' || type[n] == '('))
            return 1;
    }
    return 0;
}

/* The settings key text depends on, pinned for keys of other types */
#define PG_KEY_SETTINGS                                                                            \
    " SET DateStyle TO 'ISO, MDY' SET IntervalStyle TO 'iso_8601' SET TimeZone TO 'UTC' SET "      \
    "extra_float_digits TO 3 SET bytea_output TO 'hex'"

/* Type of column name of ti as format_type() wrote it ("" when unknown). */
static const char *col_type(const struct ferry_table_info *ti, const char *name)
{
    int c = ferry_table_colidx(ti, name);

    return c >= 0 && ti->cols[c].type ? ti->cols[c].type : "";
}

/*
 * How ferry's trigger functions begin. SECURITY DEFINER: they run with the
 * rights of the role that ran install, which owns ferry's tables, whatever
 * role the application writes as (one allowed its own tables and nothing
 * else: without it, install would make every write of such an
 * application fail on ferry's tables). Each pins its search_path (ending
 * with pg_temp), as such a function must; a trigger function cannot be
 * called other than by its trigger.
 */
#define PG_FN_HEAD "() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER"

/*
 * One trigger function and its AFTER ... FOR EACH ROW trigger, fired only
 * when the condition when holds (NULL: always). body ends with ";\n".
 */
static int pg_add_trigger(struct ferry_buf *b, const struct ferry_table_info *ti, const char *kind,
                          const char *event, const char *when, const char *settings,
                          const char *decl, const char *body)
{
    int rc;

    /* the body is pasted between dollar quotes: it must not close them */
    if (strstr(body, "$ferry$"))
        return FERRY_ESCHEMA;
    rc = ferry_buf_adds(b, "CREATE FUNCTION ");
    if (!rc)
        rc = add_trigger_name(b, kind, ti->name);
    if (!rc)
        rc = ferry_buf_addf(b,
                            PG_FN_HEAD "%s AS $ferry$\n%sBEGIN\n%s"
                                       "RETURN NULL;\nEND\n$ferry$;\nCREATE TRIGGER ",
                            settings, decl, body);
    if (!rc)
        rc = add_trigger_name(b, kind, ti->name);
    if (!rc)
        rc = ferry_buf_addf(b, " AFTER %s ON ", event);
    if (!rc)
        rc = ferry_buf_add_ident(b, ti->name);
    if (!rc)
        rc = ferry_buf_addf(b, " FOR EACH %s %s%s%sEXECUTE FUNCTION ",
                            strcmp(event, "TRUNCATE") ? "ROW" : "STATEMENT", when ? "WHEN (" : "",
                            when ? when : "", when ? ") " : "");
    if (!rc)
        rc = add_trigger_name(b, kind, ti->name);
    /*
     * ALWAYS: also under session_replication_role = replica, which ferry's
     * own applier (and logical replication) use when this database is also
     * a target: its writes must reach this log too.
     */
    if (!rc)
        rc = ferry_buf_adds(b, "();\nALTER TABLE ");
    if (!rc)
        rc = ferry_buf_add_ident(b, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " ENABLE ALWAYS TRIGGER ");
    if (!rc)
        rc = add_trigger_name(b, kind, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, ";\n");
    return rc;
}

/*
 * Table t reaches its parent through a foreign key that names exactly the
 * parent's primary key (what the parent's key map holds).
 */
static int fk_names_parent_key(const struct ferry_scope *s, size_t t)
{
    const struct ferry_scope_table *st = &s->tables[t];
    const struct ferry_fkey *fk = path_fk(s, t);
    const struct ferry_table_info *pi;

    if (!fk)
        return 0;
    pi = &s->tables[st->parent].info;
    for (size_t i = 0; i < fk->ncols; i++) {
        int c = ferry_table_colidx(pi, fk->pcols[i]);

        if (c < 0 || pi->cols[c].pk <= 0)
            return 0;
    }
    return fk->ncols == ferry_table_npk(pi);
}

/*
 * The rows of a key map being built (install), of the rows of t for which
 * cond (SQL on the row "_ferry_s", or NULL) holds. A table reached through
 * a foreign key takes its tenant from its parent's key map, built just
 * before (parents first): one hash join instead of the owner expression's
 * lookups for each row, the same result. The root and the tables scoped by
 * a predicate evaluate the owner expression.
 */
static int pg_backfill_select(struct ferry_buf *b, const struct ferry_scope *s, size_t t,
                              const char *cond)
{
    const struct ferry_scope_table *st = &s->tables[t];
    const struct ferry_table_info *ti = &st->info;
    const struct ferry_fkey *fk = path_fk(s, t);
    int rc;

    if (!fk_names_parent_key(s, t))
        return add_owned_select(b, s, t, cond);
    rc = ferry_buf_adds(b, " SELECT ");
    if (!rc)
        rc = add_keys(b, s, t, "\"_ferry_s\".");
    if (!rc)
        rc = ferry_buf_adds(b, ", \"_ferry_p\".\"_ferry_tenant\" FROM ");
    if (!rc)
        rc = ferry_buf_add_ident(b, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " AS \"_ferry_s\" JOIN ");
    if (!rc)
        rc = ferry_scope_add_objname(b, KM_BUILD, s->tables[st->parent].info.name);
    if (!rc)
        rc = ferry_buf_adds(b, " AS \"_ferry_p\" ON ");
    if (!rc)
        rc =
            add_pairs(b, " AND ", "\"_ferry_p\".", fk->pcols, "\"_ferry_s\".", fk->cols, fk->ncols);
    if (!rc && cond)
        rc = ferry_buf_addf(b, " WHERE %s", cond);
    return rc;
}

/* Log op for the row ctx ("NEW.", "OLD.") in tenant (SQL). */
static int pg_add_log(struct ferry_buf *b, const struct ferry_scope *s, size_t t, const char *op,
                      const char *tenant, const char *ctx)
{
    int rc = add_log_head(b, &s->tables[t].info, op);

    if (!rc)
        rc = ferry_buf_addf(b, "%s, ", tenant);
    if (!rc)
        rc = add_keys(b, s, t, ctx);
    return rc ? rc : ferry_buf_adds(b, ";\n");
}

/* The key map says NEW is in tenant PG_O (an upsert). */
static int pg_add_keymap_upsert(struct ferry_buf *b, const struct ferry_scope *s, size_t t)
{
    const struct ferry_table_info *ti = &s->tables[t].info;
    int rc = ferry_buf_adds(b, "INSERT INTO ");

    if (!rc)
        rc = ferry_scope_keymap(b, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " VALUES (");
    if (!rc)
        rc = add_keys(b, s, t, "NEW.");
    if (!rc)
        rc = ferry_buf_adds(b, ", " PG_O ") ON CONFLICT (");
    if (!rc)
        rc = add_keys(b, s, t, "");
    if (!rc)
        rc = ferry_buf_adds(b, ") DO UPDATE SET \"_ferry_tenant\" = "
                               "EXCLUDED.\"_ferry_tenant\";\n");
    return rc;
}

/*
 * Migration mode (freeze.h): refuse the write when the row's tenant before
 * it (check_old: PG_OT) or after it (check_new: PG_O) is frozen. PG_FZ was
 * set by the query that looked the tenants up.
 */
static int pg_add_freeze_check(struct ferry_buf *b, int check_old, int check_new)
{
    int rc = ferry_buf_adds(b, "IF " PG_FZ " AND pg_catalog.current_setting("
                               "'session_replication_role') <> 'replica' THEN\n");

    for (int pass = 0; pass < 2 && !rc; pass++) {
        const char *v = pass ? PG_O : PG_OT;

        if (!(pass ? check_new : check_old))
            continue;
        rc =
            ferry_buf_addf(b,
                           "IF %s IS NOT NULL AND EXISTS (SELECT 1 FROM _ferry_frozen f WHERE "
                           "f.tenant = %s::text) THEN\nRAISE EXCEPTION 'tenant %% " FERRY_FROZEN_MSG
                           "', %s::text USING ERRCODE = 'object_not_in_prerequisite_state';\n"
                           "END IF;\n",
                           v, v, v);
    }
    return rc ? rc : ferry_buf_adds(b, "END IF;\n");
}

/*
 * The bodies of PostgreSQL's trigger functions do what SQLite's triggers
 * do, with the tenants in variables (PG_O, PG_OT) so that each is looked
 * up once and the key map is written only when it changes: an update that
 * keeps the row's key and tenant, an application's usual write, runs one
 * query for both tenants and the log's insert (before: six statements,
 * two of them rewriting the key map's entry).
 */
/*
 * PostgreSQL: lock the parent NEW names on the scope path FOR KEY SHARE, as
 * a foreign key's check does, before the tenant is read from it. A check
 * that is deferred takes that lock only at commit: until then a move of
 * the parent (which locks it FOR UPDATE, pg_add_lock_moved) neither waits
 * for this transaction nor sees its new child, which would keep the
 * tenant the parent had. With the lock, one waits for the other. Where the
 * check is immediate the transaction holds the lock already (the foreign
 * key's trigger fired first), and this costs one lookup. if_moved: only
 * when an update gave NEW another parent (the insert's case again).
 */
static int pg_add_lock_parent(struct ferry_buf *b, const struct ferry_scope *s, size_t t,
                              int if_moved)
{
    const struct ferry_fkey *fk = path_fk(s, t);
    int rc = FERRY_OK;

    if (!fk)
        return FERRY_OK;
    if (if_moved) {
        rc = ferry_buf_adds(b, "IF ");
        if (!rc)
            rc = add_fk_changed(b, fk);
        if (!rc)
            rc = ferry_buf_adds(b, " THEN\n");
    }
    if (!rc)
        rc = ferry_buf_adds(b, "PERFORM 1 FROM ");
    if (!rc)
        rc = ferry_buf_add_ident(b, s->tables[s->tables[t].parent].info.name);
    if (!rc)
        rc = ferry_buf_adds(b, " AS \"_ferry_p\" WHERE ");
    if (!rc)
        rc = add_pairs(b, " AND ", "\"_ferry_p\".", fk->pcols, "NEW.", fk->cols, fk->ncols);
    if (!rc)
        rc = ferry_buf_adds(b, " FOR KEY SHARE;\n");
    if (!rc && if_moved)
        rc = ferry_buf_adds(b, "END IF;\n");
    return rc;
}

static int pg_insert_body(struct ferry_buf *b, const struct ferry_scope *s, size_t t)
{
    const struct ferry_table_info *ti = &s->tables[t].info;
    int rc = pg_add_lock_parent(b, s, t, 0);

    if (!rc)
        rc = ferry_buf_adds(b, "SELECT ");

    if (!rc)
        rc = ferry_scope_owner(s, t, "NEW.", b);
    if (!rc)
        rc = ferry_buf_adds(b, ", " PG_ANY_FROZEN " INTO " PG_O ", " PG_FZ ";\n");
    if (!rc)
        rc = pg_add_freeze_check(b, 0, 1);
    if (!rc)
        rc = ferry_buf_adds(b, "IF " PG_O " IS NOT NULL THEN\n");
    if (!rc)
        rc = pg_add_keymap_upsert(b, s, t);
    if (!rc)
        rc = pg_add_log(b, s, t, "U", PG_O, "NEW.");
    if (!rc)
        rc = ferry_buf_adds(b, "ELSE\n");
    if (!rc)
        rc = add_keymap_delete(b, ti, "NEW.");
    if (!rc)
        rc = add_orphan_note(b, s, t, 1, 0);
    if (!rc)
        rc = ferry_buf_adds(b, "END IF;\n");
    return rc ? rc : add_orphan_adopt(b, s, t, 1);
}

/*
 * An update changed the row's key (PostgreSQL). One statement may move keys
 * onto each other's old values (a deferrable key: positions shifted up, two
 * rows' keys swapped), and the row triggers run when the statement ends,
 * one row after the other. So the old key's entry in the key map may
 * already be another row's, written by that row's trigger: PG_OT may be
 * that row's tenant, and the entry must stay. The row's tenant before is
 * therefore also taken from its old values (its parents as they are now),
 * and that tenant gets a 'D' too when it differs (a 'D' for a key still in
 * a tenant is harmless: the producer sends current images); the entry
 * goes only when no row holds the old key now.
 */
static int pg_add_key_left(struct ferry_buf *b, const struct ferry_scope *s, size_t t)
{
    const struct ferry_table_info *ti = &s->tables[t].info;
    int rc = add_log_head(b, ti, "D");

    if (!rc)
        rc = ferry_buf_adds(b, "\"_ferry_w\".\"t\", ");
    if (!rc)
        rc = add_keys(b, s, t, "OLD.");
    if (!rc)
        rc = ferry_buf_adds(b, " FROM (SELECT ");
    if (!rc)
        rc = ferry_scope_owner(s, t, "OLD.", b);
    if (!rc)
        rc = ferry_buf_adds(b, " AS \"t\") AS \"_ferry_w\" WHERE \"_ferry_w\".\"t\" "
                               "IS DISTINCT FROM " PG_OT " AND \"_ferry_w\".\"t\" IS NOT NULL;\n");
    return rc ? rc : add_keymap_delete_if(b, ti, "OLD.", 1);
}

/*
 * " OR OLD.k::text COLLATE "C" IS DISTINCT FROM NEW.k::text COLLATE "C" ..."
 * for the key columns whose type's equality is not identity
 * (ferry_scope_pg_key_exact): an update from numeric 0.10 to 0.1 (or
 * interval '1 day' to '24 hours', citext 'A' to 'a') keeps the key equal
 * for PostgreSQL, but a target that holds the text (SQLite) holds another
 * key. Nothing for types equal only when identical.
 */
static int add_key_retexted(struct ferry_buf *b, const struct ferry_table_info *ti)
{
    int rc = FERRY_OK;

    for (size_t k = 0; k < ferry_table_npk(ti) && !rc; k++) {
        const struct ferry_column *col = &ti->cols[ferry_table_pkcol(ti, k)];

        if (ferry_scope_pg_key_exact(col->type))
            continue;
        for (int side = 0; side < 2 && !rc; side++) {
            rc = ferry_buf_adds(b, side ? " IS DISTINCT FROM NEW." : " OR OLD.");
            if (!rc)
                rc = ferry_buf_add_ident(b, col->name);
            if (!rc)
                rc = ferry_buf_adds(b, "::pg_catalog.text COLLATE pg_catalog.\"C\"");
        }
    }
    return rc;
}

static int pg_update_body(struct ferry_buf *b, const struct ferry_scope *s, size_t t)
{
    const struct ferry_table_info *ti = &s->tables[t].info;
    struct ferry_buf moved, retexted;
    int rc;

    ferry_buf_init(&moved, 64 * 1024);
    ferry_buf_init(&retexted, 64 * 1024);
    rc = pg_add_lock_parent(b, s, t, 1);
    if (!rc)
        rc = add_key_changed(&moved, ti, " IS DISTINCT FROM ");
    if (!rc)
        rc = add_key_retexted(&retexted, ti);
    if (!rc)
        rc = ferry_buf_adds(b, "SELECT ");
    if (!rc)
        rc = ferry_scope_keymap_tenant(b, ti, "OLD.");
    if (!rc)
        rc = ferry_buf_adds(b, ", ");
    if (!rc)
        rc = ferry_scope_owner(s, t, "NEW.", b);
    if (!rc)
        rc = ferry_buf_adds(b, ", " PG_ANY_FROZEN " INTO " PG_OT ", " PG_O ", " PG_FZ ";\n");
    if (!rc)
        rc = pg_add_freeze_check(b, 1, 1);
    /*
     * A cascade's rows fire their AFTER triggers once the whole statement is
     * done (foreign keys' actions queue them for the outer query): the row
     * updated here (a SET NULL from one parent's delete) may be gone by now
     * (deleted by another parent's cascade). Its delete's trigger, queued
     * after this one, logs it; touching its children (which the foreign key
     * refuses: they reference a row that is gone) or noting it as an orphan
     * would be wrong. Looked for only when the tenant or key changed: the
     * rest logs a change the delete then overrides.
     */
    if (!rc)
        rc = ferry_buf_addf(b,
                            "IF (" PG_OT " IS DISTINCT FROM " PG_O " OR %s) AND NOT EXISTS "
                            "(SELECT 1 FROM ",
                            moved.data);
    if (!rc)
        rc = pg_add_new_row(b, ti);
    if (!rc)
        rc = ferry_buf_adds(b, ") THEN\nRETURN NULL;\nEND IF;\n");
    if (!rc)
        rc = add_touch_children(b, s, t, 1);
    /* gone from its tenant: moved to another (or none), or its key changed (its text too) */
    if (!rc)
        rc = ferry_buf_addf(
            b, "IF " PG_OT " IS NOT NULL AND (" PG_OT " IS DISTINCT FROM " PG_O " OR %s%s) THEN\n",
            moved.data, retexted.len ? retexted.data : "");
    if (!rc)
        rc = pg_add_log(b, s, t, "D", PG_OT, "OLD.");
    if (!rc)
        rc = ferry_buf_addf(b, "END IF;\nIF %s THEN\n", moved.data);
    if (!rc)
        rc = pg_add_key_left(b, s, t);
    if (!rc)
        rc = ferry_buf_addf(
            b, "END IF;\nIF " PG_O " IS NULL THEN\nIF " PG_OT " IS NOT NULL OR %s THEN\n",
            moved.data);
    if (!rc)
        rc = add_keymap_delete(b, ti, "NEW.");
    if (!rc)
        rc = ferry_buf_adds(b, "END IF;\n");
    if (!rc)
        rc = add_orphan_note(b, s, t, 1, 0);
    if (!rc)
        rc = ferry_buf_addf(b, "ELSE\nIF " PG_OT " IS DISTINCT FROM " PG_O " OR %s THEN\n",
                            moved.data);
    if (!rc)
        rc = pg_add_keymap_upsert(b, s, t);
    if (!rc)
        rc = ferry_buf_adds(b, "END IF;\n");
    if (!rc)
        rc = pg_add_log(b, s, t, "U", PG_O, "NEW.");
    if (!rc)
        rc = ferry_buf_adds(b, "END IF;\n");
    if (!rc)
        rc = add_orphan_adopt(b, s, t, 1);
    ferry_buf_release(&moved);
    ferry_buf_release(&retexted);
    return rc;
}

/*
 * TRUNCATE fires no row trigger. A statement trigger on the table and on
 * each of its partitions (a partition can be truncated alone) takes the
 * key map's entries whose key no row holds any more, and gives each a 'D'
 * in its tenant, after the freeze check of those tenants. Cascades
 * (TRUNCATE ... CASCADE) fire each table's own.
 */
static int pg_truncate_body(struct ferry_buf *b, const struct ferry_scope *s, size_t t)
{
    const struct ferry_table_info *ti = &s->tables[t].info;
    int rc = ferry_buf_adds(b, "SELECT f.tenant INTO " PG_FT " FROM _ferry_frozen f WHERE "
                               "pg_catalog.current_setting('session_replication_role') <> "
                               "'replica' AND EXISTS (SELECT 1 FROM ");

    if (!rc)
        rc = ferry_scope_keymap(b, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " AS km WHERE km.\"_ferry_tenant\"::text = f.tenant AND");
    if (!rc)
        rc = add_key_gone(b, ti, "km.");
    if (!rc)
        rc = ferry_buf_adds(
            b, ") LIMIT 1;\n"
               "IF " PG_FT " IS NOT NULL THEN\nRAISE EXCEPTION 'tenant % " FERRY_FROZEN_MSG
               "', " PG_FT " USING ERRCODE = 'object_not_in_prerequisite_state';\nEND IF;\n"
               "WITH km AS (DELETE FROM ");
    if (!rc)
        rc = ferry_scope_keymap(b, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " AS km WHERE");
    if (!rc)
        rc = add_key_gone(b, ti, "km.");
    if (!rc)
        rc = ferry_buf_adds(b, " RETURNING km.*) ");
    if (!rc)
        rc = add_log_head(b, ti, "D");
    if (!rc)
        rc = ferry_buf_adds(b, "km.\"_ferry_tenant\", ");
    if (!rc)
        rc = add_keys(b, s, t, "km.");
    return rc ? rc : ferry_buf_adds(b, " FROM km;\n");
}

/*
 * The truncate trigger of kind ("t", "x") on every partition of ti, at any depth:
 * PostgreSQL clones row triggers to partitions, not statement triggers. A
 * partition attached later has none until install runs again.
 */
static int pg_add_partition_triggers(struct ferry_buf *b, const struct ferry_table_info *ti,
                                     const char *kind)
{
    struct ferry_buf name, rel;
    int rc;

    ferry_buf_init(&name, 1024);
    ferry_buf_init(&rel, 1024);
    rc = add_trigger_name(&name, kind, ti->name);
    if (!rc)
        rc = ferry_buf_add_ident(&rel, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, "DO $ferry$ DECLARE r pg_catalog.regclass; BEGIN\n"
                               "FOR r IN SELECT p.relid FROM pg_catalog.pg_partition_tree(");
    if (!rc)
        rc = ferry_buf_add_literal(b, rel.data);
    if (!rc)
        rc = ferry_buf_adds(b, "::pg_catalog.regclass) p WHERE p.level > 0 LOOP\n"
                               "EXECUTE pg_catalog.format('CREATE TRIGGER %s AFTER TRUNCATE ON %s "
                               "FOR EACH STATEMENT EXECUTE FUNCTION %s(); ALTER TABLE %s "
                               "ENABLE ALWAYS TRIGGER %s', ");
    if (!rc)
        rc = ferry_buf_add_literal(b, name.data);
    if (!rc)
        rc = ferry_buf_adds(b, ", r, ");
    if (!rc)
        rc = ferry_buf_add_literal(b, name.data);
    if (!rc)
        rc = ferry_buf_adds(b, ", r, ");
    if (!rc)
        rc = ferry_buf_add_literal(b, name.data);
    if (!rc)
        rc = ferry_buf_adds(b, ");\nEND LOOP;\nEND\n$ferry$;\n");
    ferry_buf_release(&name);
    ferry_buf_release(&rel);
    return rc;
}

/* The freeze check, then one statement: the key map's entry goes, its tenant gets the 'D'. */
static int pg_delete_body(struct ferry_buf *b, const struct ferry_scope *s, size_t t)
{
    const struct ferry_table_info *ti = &s->tables[t].info;
    int rc = ferry_buf_adds(b, "SELECT ");

    if (!rc)
        rc = ferry_scope_keymap_tenant(b, ti, "OLD.");
    if (!rc)
        rc = ferry_buf_adds(b, ", " PG_ANY_FROZEN " INTO " PG_OT ", " PG_FZ ";\n");
    if (!rc)
        rc = pg_add_freeze_check(b, 1, 0);
    if (!rc)
        rc = ferry_buf_adds(b, "WITH \"_ferry_d\" AS (DELETE FROM ");

    if (!rc)
        rc = ferry_scope_keymap(b, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " WHERE ");
    if (!rc)
        rc = ferry_scope_keymatch(b, ti, "", "OLD.");
    if (!rc)
        rc = ferry_buf_adds(b, " RETURNING \"_ferry_tenant\") ");
    if (!rc)
        rc = add_log_head(b, ti, "D");
    if (!rc)
        rc = ferry_buf_adds(b, "\"_ferry_d\".\"_ferry_tenant\", ");
    if (!rc)
        rc = add_keys(b, s, t, "OLD.");
    return rc ? rc : ferry_buf_adds(b, " FROM \"_ferry_d\";\n");
}

/*
 * The SQLite triggers' work, in PL/pgSQL functions (pg_insert_body ...). Each
 * function pins search_path to the schema ferry was installed in, so the
 * bare table names in its statements resolve there whatever the
 * application's session says (pg_temp last: a session's temporary table of
 * the same name does not stand in for a table), and turns sequential scans off: its
 * statements look rows up by key, and a session keeps the plan it made
 * first, which for a key map still small then (a fresh install) is a scan
 * of it, for every row after: a 40,000-row INSERT took 90 s so.
 */
static int pg_table_sql(struct ferry_buf *b, const struct ferry_scope *s, size_t t,
                        const char *schema)
{
    const struct ferry_table_info *ti = &s->tables[t].info;
    const struct ferry_table_info *ri = ferry_scope_root(s);
    const char *rtype = col_type(ri, ri->cols[ferry_table_pkcol(ri, 0)].name);
    const struct ferry_fkey *fk = path_fk(s, t);
    struct ferry_buf settings, body, decl;
    int stable = 1;
    int rc;

    ferry_buf_init(&settings, 4096);
    ferry_buf_init(&body, SQL_MAX);
    ferry_buf_init(&decl, 4096);
    rc = ferry_buf_adds(&settings, " SET enable_seqscan TO off SET search_path TO ");
    if (!rc)
        rc = ferry_buf_add_ident(&settings, schema);
    if (!rc)
        rc = ferry_buf_adds(&settings, ", pg_temp");
    for (size_t k = 0; k < ferry_table_npk(ti); k++)
        stable &= pg_stable_key_type(ti->cols[ferry_table_pkcol(ti, k)].type);
    /* and the parent key a waiting child's note holds (add_orphan_note) */
    for (size_t k = 0; fk && k < fk->ncols; k++)
        stable &= pg_stable_key_type(col_type(ti, fk->cols[k]));
    if (!rc && !stable)
        rc = ferry_buf_adds(&settings, PG_KEY_SETTINGS);

    if (!rc)
        rc = ferry_buf_addf(&decl, "DECLARE " PG_O " %s; " PG_OT " %s; " PG_FZ " boolean;\n", rtype,
                            rtype);
    if (!rc)
        rc = pg_insert_body(&body, s, t);
    if (!rc)
        rc = pg_add_trigger(b, ti, "i", "INSERT", NULL, settings.data, decl.data, body.data);
    ferry_buf_reset(&body);
    if (!rc)
        rc = pg_update_body(&body, s, t);
    if (!rc)
        rc = pg_add_trigger(b, ti, "u", "UPDATE", NULL, settings.data, decl.data, body.data);
    ferry_buf_reset(&body);
    if (!rc)
        rc = pg_delete_body(&body, s, t);
    if (!rc)
        rc = pg_add_trigger(b, ti, "d", "DELETE", NULL, settings.data, decl.data, body.data);
    ferry_buf_reset(&body);
    if (!rc)
        rc = pg_truncate_body(&body, s, t);
    if (!rc)
        rc = pg_add_trigger(b, ti, "t", "TRUNCATE", NULL, settings.data,
                            "DECLARE " PG_FT " text;\n", body.data);
    if (!rc)
        rc = pg_add_partition_triggers(b, ti, "t");
    ferry_buf_release(&settings);
    ferry_buf_release(&body);
    ferry_buf_release(&decl);
    return rc;
}

/*
 * PostgreSQL: a child noted as waiting whose parent another transaction
 * inserts and commits while the child's is still open (a deferred foreign
 * key) is not adopted by the parent's trigger, which cannot see the
 * uncommitted note. A deferred constraint trigger on _ferry_orphans looks
 * again when the child's transaction commits (a new snapshot, after the
 * foreign key's own check): the parent there, the children are touched as
 * the parent's trigger would have. Only notes pay for it.
 */
static int pg_orphans_settle_sql(struct ferry_buf *b, const struct ferry_scope *s,
                                 const char *schema)
{
    struct ferry_buf body;
    int rc;

    ferry_buf_init(&body, SQL_MAX);
    rc = ferry_buf_adds(&body, "IF NOT EXISTS (SELECT 1 FROM _ferry_orphans o WHERE "
                               "o.ptbl = NEW.ptbl AND o.ctbl = NEW.ctbl AND o.p0 = NEW.p0 AND "
                               "o.p1 = NEW.p1 AND o.p2 = NEW.p2 AND o.p3 = NEW.p3) THEN\n"
                               "RETURN NULL;\nEND IF;\n");
    for (size_t c = 1; c < s->ntables && !rc; c++) {
        const struct ferry_fkey *fk = path_fk(s, c);
        const struct ferry_table_info *ci = &s->tables[c].info;
        const struct ferry_table_info *pi;

        if (!fk)
            continue;
        pi = &s->tables[s->tables[c].parent].info;
        rc = ferry_buf_adds(&body, "IF NEW.ptbl = ");
        if (!rc)
            rc = ferry_buf_add_literal(&body, pi->name);
        if (!rc)
            rc = ferry_buf_adds(&body, " AND NEW.ctbl = ");
        if (!rc)
            rc = ferry_buf_add_literal(&body, ci->name);
        /* nested: the casts below are only for this pair's keys */
        if (!rc)
            rc = ferry_buf_adds(&body, " THEN\nIF EXISTS (SELECT 1 FROM ");
        if (!rc)
            rc = ferry_buf_add_ident(&body, pi->name);
        for (size_t i = 0; i < fk->ncols && !rc; i++) {
            rc = ferry_buf_adds(&body, i ? " AND " : " WHERE ");
            if (!rc)
                rc = ferry_buf_add_ident(&body, fk->pcols[i]);
            if (!rc)
                rc =
                    ferry_buf_addf(&body, " = CAST(NEW.p%zu AS %s)", i, col_type(pi, fk->pcols[i]));
        }
        if (!rc)
            rc = ferry_buf_adds(&body, ") THEN\n" PG_APP_SETTINGS "UPDATE ");
        if (!rc)
            rc = ferry_buf_add_ident(&body, ci->name);
        if (!rc)
            rc = ferry_buf_adds(&body, " SET ");
        if (!rc)
            rc = add_pairs(&body, ", ", "", fk->cols, "", fk->cols, fk->ncols);
        for (size_t i = 0; i < fk->ncols && !rc; i++) {
            rc = ferry_buf_adds(&body, i ? " AND " : " WHERE ");
            if (!rc)
                rc = ferry_buf_add_ident(&body, fk->cols[i]);
            if (!rc)
                rc =
                    ferry_buf_addf(&body, " = CAST(NEW.p%zu AS %s)", i, col_type(pi, fk->pcols[i]));
        }
        if (!rc)
            rc = ferry_buf_adds(&body, ";\n" PG_FERRY_SETTINGS
                                       "DELETE FROM _ferry_orphans WHERE ptbl = NEW.ptbl AND "
                                       "ctbl = NEW.ctbl AND p0 = NEW.p0 AND p1 = NEW.p1 AND "
                                       "p2 = NEW.p2 AND p3 = NEW.p3;\nEND IF;\nEND IF;\n");
    }
    if (!rc && strstr(body.data, "$ferry$"))
        rc = FERRY_ESCHEMA;
    if (!rc)
        rc = ferry_buf_adds(b, "CREATE FUNCTION ");
    if (!rc)
        rc = add_trigger_name(b, "i", "_ferry_orphans");
    if (!rc)
        rc = ferry_buf_adds(b, PG_FN_HEAD " SET enable_seqscan TO off SET search_path TO ");
    if (!rc)
        rc = ferry_buf_add_ident(b, schema);
    /* the notes' text of a key was written under these (pg_table_sql) */
    if (!rc)
        rc = ferry_buf_adds(b, ", pg_temp" PG_KEY_SETTINGS " AS $ferry$\nBEGIN\n");
    if (!rc)
        rc = ferry_buf_adds(b, body.data);
    if (!rc)
        rc = ferry_buf_adds(b, "RETURN NULL;\nEND\n$ferry$;\nCREATE CONSTRAINT TRIGGER ");
    if (!rc)
        rc = add_trigger_name(b, "i", "_ferry_orphans");
    if (!rc)
        rc = ferry_buf_adds(b, " AFTER INSERT ON _ferry_orphans DEFERRABLE INITIALLY DEFERRED "
                               "FOR EACH ROW EXECUTE FUNCTION ");
    if (!rc)
        rc = add_trigger_name(b, "i", "_ferry_orphans");
    if (!rc)
        rc = ferry_buf_adds(b, "();\nALTER TABLE _ferry_orphans ENABLE ALWAYS TRIGGER ");
    if (!rc)
        rc = add_trigger_name(b, "i", "_ferry_orphans");
    if (!rc)
        rc = ferry_buf_adds(b, ";\n");
    ferry_buf_release(&body);
    return rc;
}

/*
 * Drop statements for ferry's objects in the current schema, built by the
 * server (format %I quotes): the triggers and trigger functions whose
 * names match the regular expression trig, and the tables whose names
 * match tables (PG_DROP_NONE: none). PG_DROP_ALL for both: uninstall.
 */
#define PG_DROP_ALL "^_ferry_"
#define PG_DROP_NONE "^$"
static int pg_drop(struct ferry_db *db, const char *trig, const char *tables,
                   struct ferry_error *err)
{
    static const char sql[] =
        "SELECT string_agg(stmt, E'\n' ORDER BY ord, name) FROM ("
        " SELECT 1 AS ord, t.tgname AS name,"
        "  format('DROP TRIGGER IF EXISTS %I ON %I.%I;', t.tgname, n.nspname, c.relname) AS stmt"
        "  FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid"
        "  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        "  WHERE NOT t.tgisinternal AND n.nspname = current_schema() AND t.tgname ~ ?"
        /* a partition's clone of its parent's trigger goes with the parent's (13+) */
        "  AND (pg_catalog.current_setting('server_version_num')::int < 130000"
        "   OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid ="
        "   'pg_catalog.pg_trigger'::pg_catalog.regclass AND d.objid = t.oid AND d.deptype = 'P'))"
        " UNION ALL SELECT 2, p.proname,"
        "  format('DROP FUNCTION IF EXISTS %I.%I();', n.nspname, p.proname)"
        "  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace"
        "  WHERE n.nspname = current_schema() AND p.pronargs = 0"
        "  AND p.prorettype = 'pg_catalog.trigger'::pg_catalog.regtype AND p.proname ~ ?"
        " UNION ALL SELECT 3, c.relname, format('DROP TABLE IF EXISTS %I.%I;', n.nspname, "
        "c.relname)"
        "  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        "  WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')"
        "  AND c.relname ~ ?) AS x";
    struct ferry_value args[3];
    struct ferry_stmt *st = NULL;
    struct ferry_value v;
    char *drop = NULL;
    int row = 0;
    int rc;

    args[0] = ferry_value_text(trig, strlen(trig));
    args[1] = args[0];
    args[2] = ferry_value_text(tables, strlen(tables));
    rc = ferry_db_prepare(db, sql, &st, err);
    for (int i = 0; i < 3 && !rc; i++)
        rc = ferry_stmt_bind(st, i + 1, &args[i], err);
    if (!rc)
        rc = ferry_stmt_step(st, &row, err);
    if (!rc && row) {
        ferry_stmt_column(st, 0, &v);
        if (v.type == FERRY_TEXT) {
            drop = malloc(v.u.s.n + 1);
            if (!drop) {
                rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory");
            } else {
                memcpy(drop, v.u.s.p, v.u.s.n);
                drop[v.u.s.n] = '\0';
            }
        }
    }
    ferry_stmt_free(st);
    if (!rc && drop) {
        log_debug("dropping:\n%s", drop);
        rc = ferry_db_exec(db, drop, err);
    }
    free(drop);
    return rc;
}

/*
 * The version of what install puts in the database (the change log, the
 * key maps, the triggers), kept in _ferry_capture. Raise it whenever any
 * of that changes: a database keeps the triggers of the ferry-src that
 * installed them until install runs again, and serve says so
 * (ferry_capture_check). 1: the first version recorded. 2: PostgreSQL's
 * trigger functions run with enable_seqscan off (pg_table_sql). 3: on
 * PostgreSQL, _ferry_orphans keeps numeric and float keys in a form equal
 * keys share (add_orphan_value). 4: on PostgreSQL, children are touched
 * only when their parent's tenant changed, and the application's triggers
 * run with the session's enable_seqscan, and a moved row is locked FOR
 * UPDATE before its children are touched (add_touch_children), and a
 * deferred trigger settles notes at commit (pg_orphans_settle_sql), and
 * the freeze check moved into these functions (pg_add_freeze_check), and
 * a child's functions pin the key settings when its parent key's text
 * depends on them (pg_table_sql); install
 * notes waiting children afresh (ORPHANS_RESET); the trigger functions'
 * search_path ends with pg_temp, and the freeze triggers' (freeze.c) is
 * pinned too. 5: on PostgreSQL, an update that changes a row's key keeps
 * the old key's entry when another row of the statement took that key,
 * and logs a 'D' for the tenant its old values name (pg_add_key_left), and
 * TRUNCATE is captured (pg_truncate_body), partitions' included
 * (pg_add_partition_triggers); on SQLite, a row that REPLACE deleted gets
 * its tenant's 'D' (add_refresh_new). 6: on SQLite, a row that REPLACE
 * deleted through another UNIQUE index gets its tenant's 'D' too
 * (sqlite_replace_sql). 7: on PostgreSQL, an update that keeps a key equal
 * but changes its text (numeric 0.10 to 0.1) logs a 'D' for the old text
 * (add_key_retexted). 8: on PostgreSQL, an update whose row a later
 * cascade of the same statement deleted does nothing (pg_update_body):
 * deleting a tenant whose rows a SET NULL also updates failed. 9:
 * install notes each table's key and path (capture_shape), which serve
 * compares with the schema's.
 */
#define CAPTURE_VERSION 9
/* The last versions that changed each engine's capture: older ones get the warning there */
#define CAPTURE_VERSION_PG 9
#define CAPTURE_VERSION_SQLITE 9

/*
 * Install notes the waiting children again from the data (add_orphan_note's
 * backfill), with the tables locked and the old triggers gone: what an
 * older install noted, in a form its triggers wrote, goes.
 */
#define ORPHANS_RESET "DELETE FROM _ferry_orphans"

static int write_version(struct ferry_db *db, struct ferry_error *err)
{
    char sql[192];

    snprintf(sql, sizeof(sql),
             "CREATE TABLE IF NOT EXISTS _ferry_capture(version integer NOT NULL);\n"
             "DELETE FROM _ferry_capture;\n"
             "INSERT INTO _ferry_capture(version) VALUES (%d)",
             CAPTURE_VERSION);
    return ferry_db_exec(db, sql, err);
}

/*
 * What a table's triggers depend on, as text: on PostgreSQL the table's key
 * columns (names and types: the key map's columns have those types) and
 * the columns of its foreign key to its parent on the path to the root
 * (names) with the parent's; or the scope predicate of a [table] section.
 * PL/pgSQL keeps those names in the functions' text: a key or path column
 * renamed, a key changed or a path moved leaves functions that fail the
 * application's writes to the table (a field NEW no longer has) or log its
 * changes under the old key, until install writes them anew. Install keeps
 * each table's shape in _ferry_capture_shape, and serve compares
 * (ferry_capture_check). SQLite rewrites its triggers' text on a rename,
 * and changing a key or a foreign key there rebuilds the table (which
 * drops its triggers): what is left to see is a path that moved to another
 * parent (a foreign key added to a nearer one), so there the shape is the
 * key's width and the parent only, which neither a rename nor a dropped
 * column changes.
 */
static int word_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || (c & 0x80);
}

/*
 * A [table] scope predicate as the shape notes it: whitespace outside
 * quotes dropped, or one space where it parts two words, so that a
 * predicate only reflowed in the config stays the same.
 */
static int add_predicate(struct ferry_buf *b, const char *sql)
{
    char quote = 0;
    int rc = FERRY_OK;

    for (const char *p = sql; *p && !rc; p++) {
        if (!quote && isspace((unsigned char)*p)) {
            while (isspace((unsigned char)p[1]))
                p++;
            if (b->len && word_char(b->data[b->len - 1]) && word_char(p[1]))
                rc = ferry_buf_add(b, " ", 1);
            continue;
        }
        if (*p == quote)
            quote = 0;
        else if (!quote && (*p == '\'' || *p == '"'))
            quote = *p;
        rc = ferry_buf_add(b, p, 1);
    }
    return rc;
}

/* capture_shape with the predicate as written (the shapes version 9's installs noted) */
#define SHAPE_RAW 1

static int capture_shape(const struct ferry_db *db, const struct ferry_scope *s, size_t t,
                         int flags, struct ferry_buf *b)
{
    const struct ferry_scope_table *st = &s->tables[t];
    const struct ferry_table_info *ti = &st->info;
    int pg = ferry_db_engine(db) == FERRY_ENGINE_PG;
    int rc = ferry_buf_addf(b, "key %zu", ferry_table_npk(ti));

    for (size_t k = 0; k < ferry_table_npk(ti) && !rc && pg; k++) {
        const struct ferry_column *c = &ti->cols[ferry_table_pkcol(ti, k)];

        rc = ferry_buf_addf(b, " %s:%s", c->name, c->type ? c->type : "");
    }
    if (!rc && ti->scope_sql)
        rc = (flags & SHAPE_RAW) ? ferry_buf_addf(b, "; scope %s", ti->scope_sql)
                                 : ferry_buf_addf(b, "; scope ") || add_predicate(b, ti->scope_sql);
    if (!rc && st->parent >= 0 && st->fk >= 0) {
        const struct ferry_fkey *fk = &ti->fks[st->fk];

        rc = ferry_buf_addf(b, "; to %s", fk->parent);
        for (size_t i = 0; i < fk->ncols && !rc && pg; i++)
            rc = ferry_buf_addf(b, " %s=%s", fk->cols[i], fk->pcols[i]);
    }
    return rc;
}

static int write_shapes(struct ferry_db *db, const struct ferry_scope *s, struct ferry_error *err)
{
    struct ferry_buf shape;
    int rc = ferry_db_exec(db,
                           "CREATE TABLE IF NOT EXISTS _ferry_capture_shape(tbl text PRIMARY KEY, "
                           "shape text NOT NULL);\n"
                           "DELETE FROM _ferry_capture_shape",
                           err);

    ferry_buf_init(&shape, SQL_MAX);
    for (size_t t = 0; t < s->ntables && !rc; t++) {
        struct ferry_value args[2];
        int64_t none = 0;

        ferry_buf_reset(&shape);
        if (capture_shape(db, s, t, 0, &shape))
            rc = ferry_error_set(err, FERRY_ETOOBIG, "the key of %s is too long to note",
                                 s->tables[t].info.name);
        args[0] = ferry_value_text(s->tables[t].info.name, strlen(s->tables[t].info.name));
        args[1] = ferry_value_text(shape.data, shape.len);
        if (!rc)
            rc =
                ferry_db_query_int(db, "INSERT INTO _ferry_capture_shape(tbl, shape) VALUES (?, ?)",
                                   args, 2, &none, err);
    }
    ferry_buf_release(&shape);
    return rc;
}

/* The schema the connection resolves bare names in (current_schema()). */
/* The text sql's one row holds (a name), into out; FERRY_ENOTFOUND when none fits. */
static int pg_name_query(struct ferry_db *db, const char *sql, char *out, size_t size,
                         struct ferry_error *err)
{
    struct ferry_stmt *st = NULL;
    struct ferry_value v;
    int row = 0;
    int rc;

    rc = ferry_db_prepare(db, sql, &st, err);
    if (!rc)
        rc = ferry_stmt_step(st, &row, err);
    if (!rc) {
        if (row)
            ferry_stmt_column(st, 0, &v);
        if (!row || v.type != FERRY_TEXT || v.u.s.n >= size)
            rc = ferry_error_set(err, FERRY_ENOTFOUND, "'%s': no name", sql);
        else
            snprintf(out, size, "%.*s", (int)v.u.s.n, v.u.s.p);
    }
    ferry_stmt_free(st);
    return rc;
}

static int pg_schema(struct ferry_db *db, char *out, size_t size, struct ferry_error *err)
{
    int rc = pg_name_query(db, "SELECT current_schema()", out, size, err);

    if (rc == FERRY_ENOTFOUND)
        rc = ferry_error_set(err, FERRY_ECONFIG,
                             "PostgreSQL has no current schema: check search_path (or the "
                             "[source] schema setting)");
    return rc;
}

/*
 * Install on PostgreSQL, online. Filling the key maps reads every row of
 * the scope; with the tables locked meanwhile the application's writes
 * would wait seconds per million rows. Instead, in three steps:
 *  1. (short locks) every table of the scope gets triggers that note the
 *     keys each write touches, OLD's and NEW's, in _ferry_y_<t> (an update
 *     only when it may change the row's tenant), and a truncate a row of
 *     NULLs (pg_dirty_sql);
 *  2. (no lock that stops writers) the key maps are built beside the live
 *     ones, parents first, as _ferry_n_<t>, and the waiting children noted
 *     in _ferry_n_orphans, each from the data as one statement sees it
 *     (pg_keymap_sql);
 *  3. every key noted since step 1 is looked up again, and so are the
 *     children of each row whose tenant that changed, level by level
 *     (pg_catchup_sql): first in passes while the application writes,
 *     each taking the notes it sees (a write committed later notes its key
 *     again), until a pass is short; then once more with the tables locked
 *     SHARE ROW EXCLUSIVE (writers waiting), and in that transaction the
 *     new maps and notes replace the old, the capture triggers the noting
 *     ones.
 * Every write after step 1 is noted, and a note goes only with the pass
 * that looked its key up in the data as it was then or later, so an entry
 * that a later write made wrong is looked at again at the latest in the
 * last pass, where nothing moves: the maps end as a fill with the tables
 * locked throughout would have made them. A re-install's old triggers keep logging meanwhile, for
 * the targets that exist. An install that stops half way leaves the noting triggers behind: the
 * next install (or uninstall) drops them.
 */
#define PG_DROP_BUILD_TRIGGERS "^_ferry_[vwx]_"
#define PG_DROP_BUILD_TABLES "^_ferry_[ny]_"

/* Step 1 for table t: its dirty keys' table, the triggers that fill it. */
static int pg_dirty_sql(struct ferry_buf *b, const struct ferry_scope *s, size_t t,
                        const char *schema)
{
    const struct ferry_table_info *ti = &s->tables[t].info;
    size_t npk = ferry_table_npk(ti);
    struct ferry_buf settings, body, when;
    int rc;

    ferry_buf_init(&settings, 4096);
    ferry_buf_init(&body, SQL_MAX);
    ferry_buf_init(&when, SQL_MAX);
    rc = ferry_buf_adds(&settings, " SET search_path TO ");
    if (!rc)
        rc = ferry_buf_add_ident(&settings, schema);
    if (!rc)
        rc = ferry_buf_adds(&settings, ", pg_temp");
    /* the key columns with their types, no constraint: a truncate's row is all NULL */
    if (!rc)
        rc = ferry_buf_adds(b, "CREATE TABLE ");
    if (!rc)
        rc = ferry_scope_add_objname(b, KM_DIRTY, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " AS SELECT ");
    if (!rc)
        rc = add_keys(b, s, t, "");
    if (!rc)
        rc = ferry_buf_adds(b, " FROM ");
    if (!rc)
        rc = ferry_buf_add_ident(b, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " WITH NO DATA;\n");
    for (int pass = 0; pass < 2 && !rc; pass++) {
        rc = ferry_buf_adds(&body, pass ? "IF TG_OP <> 'DELETE' THEN\nINSERT INTO "
                                        : "IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND ");
        if (!rc && !pass)
            rc = add_key_changed(&body, ti, " IS DISTINCT FROM ");
        if (!rc && !pass)
            rc = ferry_buf_adds(&body, ") THEN\nINSERT INTO ");
        if (!rc)
            rc = ferry_scope_add_objname(&body, KM_DIRTY, ti->name);
        if (!rc)
            rc = ferry_buf_adds(&body, " VALUES (");
        if (!rc)
            rc = add_keys(&body, s, t, pass ? "NEW." : "OLD.");
        if (!rc)
            rc = ferry_buf_adds(&body, ");\nEND IF;\n");
    }
    if (!rc)
        rc = pg_add_trigger(b, ti, "w", "INSERT OR DELETE", NULL, settings.data, "", body.data);
    /*
     * Updates only when they can change the row's tenant: of its key or of
     * the foreign key on the scope path (any, in a table scoped by a
     * predicate). A WHEN costs no call.
     */
    if (!rc && !ti->scope_sql) {
        const struct ferry_fkey *fk = path_fk(s, t);

        rc = add_key_changed(&when, ti, " IS DISTINCT FROM ");
        if (!rc && fk)
            rc = ferry_buf_adds(&when, " OR ");
        if (!rc && fk)
            rc = add_fk_changed(&when, fk);
    }
    if (!rc)
        rc = pg_add_trigger(b, ti, "v", "UPDATE", ti->scope_sql ? NULL : when.data, settings.data,
                            "", body.data);
    ferry_buf_reset(&body);
    if (!rc)
        rc = ferry_buf_adds(&body, "INSERT INTO ");
    if (!rc)
        rc = ferry_scope_add_objname(&body, KM_DIRTY, ti->name);
    for (size_t k = 0; k < npk && !rc; k++)
        rc = ferry_buf_adds(&body, k ? ", NULL" : " VALUES (NULL");
    if (!rc)
        rc = ferry_buf_adds(&body, ");\n");
    if (!rc)
        rc = pg_add_trigger(b, ti, "x", "TRUNCATE", NULL, settings.data, "", body.data);
    if (!rc)
        rc = pg_add_partition_triggers(b, ti, "x");
    ferry_buf_release(&settings);
    ferry_buf_release(&body);
    ferry_buf_release(&when);
    return rc;
}

/* Step 2 for table t: its key map built as KM_BUILD, its waiting rows noted. */
static int pg_keymap_sql(struct ferry_buf *b, const struct ferry_scope *s, size_t t)
{
    const struct ferry_table_info *ti = &s->tables[t].info;
    const struct ferry_table_info *ri = ferry_scope_root(s);
    int rc = ferry_buf_adds(b, "DROP TABLE IF EXISTS ");

    if (!rc)
        rc = ferry_scope_add_objname(b, KM_BUILD, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, ";\nCREATE TABLE ");
    if (!rc)
        rc = ferry_scope_add_objname(b, KM_BUILD, ti->name);
    /* the key columns with their types, the tenant with the root key's */
    for (size_t k = 0; k < ferry_table_npk(ti) && !rc; k++) {
        const struct ferry_column *col = &ti->cols[ferry_table_pkcol(ti, k)];

        rc = ferry_buf_adds(b, k ? ", " : "(");
        if (!rc)
            rc = ferry_buf_add_ident(b, col->name);
        if (!rc)
            rc = ferry_buf_addf(b, " %s", col->type);
    }
    if (!rc)
        rc = ferry_buf_addf(b, ", \"_ferry_tenant\" %s NOT NULL);\nINSERT INTO ",
                            col_type(ri, ri->cols[ferry_table_pkcol(ri, 0)].name));
    if (!rc)
        rc = ferry_scope_add_objname(b, KM_BUILD, ti->name);
    if (!rc)
        rc = pg_backfill_select(b, s, t, NULL);
    /*
     * The indexes after the rows: built from them in one sort each, where
     * filling indexed tables grows both row by row (1.4 M posts: 1.9-2.1 s
     * against 3.2-3.5 s). Named for the live map they become (step 3
     * renames them): (tenant, key) is for snapshot pages, which walk one
     * tenant's keys in order (produce.c).
     */
    if (!rc)
        rc = ferry_buf_adds(b, ";\nALTER TABLE ");
    if (!rc)
        rc = ferry_scope_add_objname(b, KM_BUILD, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " ADD CONSTRAINT ");
    if (!rc)
        rc = ferry_scope_add_objname(b, KM_BUILD "p", ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " PRIMARY KEY (");
    if (!rc)
        rc = add_keys(b, s, t, "");
    if (!rc)
        rc = ferry_buf_adds(b, ");\nCREATE INDEX ");
    if (!rc)
        rc = ferry_scope_add_objname(b, KM_BUILD "i", ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " ON ");
    if (!rc)
        rc = ferry_scope_add_objname(b, KM_BUILD, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, "(\"_ferry_tenant\", ");
    if (!rc)
        rc = add_keys(b, s, t, "");
    if (!rc)
        rc = ferry_buf_adds(b, ");\n");
    if (!rc)
        rc = add_orphan_note_in(b, s, t, 1, 1, "_ferry_n_orphans", NULL);
    if (!rc)
        rc = ferry_buf_adds(b, "ANALYZE ");
    if (!rc)
        rc = ferry_scope_add_objname(b, KM_BUILD, ti->name);
    return rc ? rc : ferry_buf_adds(b, ";\n");
}

/* " EXISTS (SELECT 1 FROM pg_temp._ferry_d AS d WHERE d.<key> = ctx.<key>)" */
static int add_dirty_has(struct ferry_buf *b, const struct ferry_table_info *ti, const char *ctx)
{
    int rc = ferry_buf_adds(b, "EXISTS (SELECT 1 FROM pg_temp.\"_ferry_d\" AS d WHERE ");

    if (!rc)
        rc = ferry_scope_keymatch(b, ti, "d.", ctx);
    return rc ? rc : ferry_buf_adds(b, ")");
}

/*
 * Step 3 for table t, its parents' done: the keys noted dirty, with the
 * keys the map holds but no row does when the table was truncated, and
 * the children of the parent rows whose tenant step 3 changed, are looked
 * up again (into the map, and the notes when they wait for a parent); the
 * keys whose tenant that changed go to KM_CHANGED for t's children. Notes
 * whose parent came meanwhile go.
 */
static int pg_catchup_sql(struct ferry_buf *b, const struct ferry_scope *s, size_t t)
{
    const struct ferry_scope_table *st = &s->tables[t];
    const struct ferry_table_info *ti = &st->info;
    const struct ferry_fkey *fk = path_fk(s, t);
    const char *k0 = ti->cols[ferry_table_pkcol(ti, 0)].name;
    struct ferry_buf cond;
    int rc;

    ferry_buf_init(&cond, SQL_MAX);
    /*
     * a truncate: the map's keys no row holds (an IF: as a condition of the
     * statement, the planner ran the anti-join anyway, 6 s for 1.4 M posts)
     */
    rc = ferry_buf_adds(&cond, "IF EXISTS (SELECT 1 FROM ");
    if (!rc)
        rc = ferry_scope_add_objname(&cond, KM_DIRTY, ti->name);
    if (!rc)
        rc = ferry_buf_adds(&cond, " WHERE ");
    if (!rc)
        rc = ferry_buf_add_ident(&cond, k0);
    if (!rc)
        rc = ferry_buf_adds(&cond, " IS NULL) THEN\nINSERT INTO ");
    if (!rc)
        rc = ferry_scope_add_objname(&cond, KM_DIRTY, ti->name);
    if (!rc)
        rc = ferry_buf_adds(&cond, " SELECT ");
    if (!rc)
        rc = add_keys(&cond, s, t, "km.");
    if (!rc)
        rc = ferry_buf_adds(&cond, " FROM ");
    if (!rc)
        rc = ferry_scope_add_objname(&cond, KM_BUILD, ti->name);
    if (!rc)
        rc = ferry_buf_adds(&cond, " AS km WHERE");
    if (!rc)
        rc = add_key_gone(&cond, ti, "km.");
    /* pasted between dollar quotes: it must not close them */
    if (!rc && strstr(cond.data, "$ferry$"))
        rc = FERRY_ESCHEMA;
    if (!rc)
        rc = ferry_buf_addf(b, "DO $ferry$ BEGIN %s;\nEND IF;\nEND\n$ferry$;\n", cond.data);
    ferry_buf_reset(&cond);
    /* the children of the parents that changed tenant */
    if (!rc && fk) {
        const struct ferry_table_info *pi = &s->tables[st->parent].info;
        int direct = fk_names_parent_key(s, t);

        rc = ferry_buf_adds(b, "INSERT INTO ");
        if (!rc)
            rc = ferry_scope_add_objname(b, KM_DIRTY, ti->name);
        if (!rc)
            rc = ferry_buf_adds(b, " SELECT ");
        if (!rc)
            rc = add_keys(b, s, t, "c.");
        if (!rc)
            rc = ferry_buf_adds(b, " FROM ");
        if (!rc)
            rc = ferry_buf_add_ident(b, ti->name);
        if (!rc)
            rc = ferry_buf_adds(b, " AS c JOIN ");
        if (!rc && !direct) {
            rc = ferry_buf_add_ident(b, pi->name);
            if (!rc)
                rc = ferry_buf_adds(b, " AS pp ON ");
            if (!rc)
                rc = add_pairs(b, " AND ", "pp.", fk->pcols, "c.", fk->cols, fk->ncols);
            if (!rc)
                rc = ferry_buf_adds(b, " JOIN ");
        }
        if (!rc)
            rc = ferry_buf_adds(b, "pg_temp.");
        if (!rc)
            rc = ferry_scope_add_objname(b, KM_CHANGED, pi->name);
        if (!rc)
            rc = ferry_buf_adds(b, " AS z ON ");
        if (!rc && direct)
            rc = add_pairs(b, " AND ", "z.", fk->pcols, "c.", fk->cols, fk->ncols);
        else if (!rc)
            rc = ferry_scope_keymatch(b, pi, "z.", "pp.");
        if (!rc)
            rc = ferry_buf_adds(b, ";\n");
    }
    /*
     * The noted keys this transaction sees are taken out of the table: a
     * write that commits later notes its key again, for the next pass.
     */
    if (!rc)
        rc = ferry_buf_adds(b, "CREATE TEMP TABLE \"_ferry_d\" ON COMMIT DROP AS SELECT * FROM ");
    if (!rc)
        rc = ferry_scope_add_objname(b, KM_DIRTY, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " WITH NO DATA;\nWITH y AS (DELETE FROM ");
    if (!rc)
        rc = ferry_scope_add_objname(b, KM_DIRTY, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " RETURNING *) INSERT INTO pg_temp.\"_ferry_d\" SELECT DISTINCT * "
                               "FROM y WHERE ");
    if (!rc)
        rc = ferry_buf_add_ident(b, k0);
    if (!rc)
        rc = ferry_buf_adds(b, " IS NOT NULL;\nANALYZE pg_temp.\"_ferry_d\";\n"
                               "CREATE TEMP TABLE \"_ferry_o\" ON COMMIT DROP AS "
                               "SELECT km.* FROM ");
    if (!rc)
        rc = ferry_scope_add_objname(b, KM_BUILD, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " AS km WHERE ");
    if (!rc)
        rc = add_dirty_has(b, ti, "km.");
    /* the entries as the data says now, in a table like the map's */
    if (!rc)
        rc =
            ferry_buf_adds(b, ";\nCREATE TEMP TABLE \"_ferry_w\" ON COMMIT DROP AS SELECT * FROM ");
    if (!rc)
        rc = ferry_scope_add_objname(b, KM_BUILD, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " WITH NO DATA;\nINSERT INTO pg_temp.\"_ferry_w\"");
    if (!rc)
        rc = add_dirty_has(&cond, ti, "\"_ferry_s\".");
    if (!rc)
        rc = pg_backfill_select(b, s, t, cond.data);
    /* the keys whose tenant changed (none: gone), and only those written */
    if (!rc)
        rc = ferry_buf_adds(b, ";\nCREATE TEMP TABLE ");
    if (!rc)
        rc = ferry_scope_add_objname(b, KM_CHANGED, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " ON COMMIT DROP AS SELECT ");
    if (!rc)
        rc = add_keys(b, s, t, "d.");
    if (!rc)
        rc = ferry_buf_adds(b, ", w.\"_ferry_tenant\" FROM pg_temp.\"_ferry_d\" AS d LEFT JOIN "
                               "pg_temp.\"_ferry_o\" AS o ON ");
    if (!rc)
        rc = ferry_scope_keymatch(b, ti, "o.", "d.");
    if (!rc)
        rc = ferry_buf_adds(b, " LEFT JOIN pg_temp.\"_ferry_w\" AS w ON ");
    if (!rc)
        rc = ferry_scope_keymatch(b, ti, "w.", "d.");
    if (!rc)
        rc = ferry_buf_adds(b, " WHERE o.\"_ferry_tenant\" IS DISTINCT FROM "
                               "w.\"_ferry_tenant\";\nDELETE FROM ");
    if (!rc)
        rc = ferry_scope_add_objname(b, KM_BUILD, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " AS km USING pg_temp.");
    if (!rc)
        rc = ferry_scope_add_objname(b, KM_CHANGED, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " AS z WHERE z.\"_ferry_tenant\" IS NULL AND ");
    if (!rc)
        rc = ferry_scope_keymatch(b, ti, "km.", "z.");
    if (!rc)
        rc = ferry_buf_adds(b, ";\nINSERT INTO ");
    if (!rc)
        rc = ferry_scope_add_objname(b, KM_BUILD, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " SELECT * FROM pg_temp.");
    if (!rc)
        rc = ferry_scope_add_objname(b, KM_CHANGED, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " WHERE \"_ferry_tenant\" IS NOT NULL ON CONFLICT (");
    if (!rc)
        rc = add_keys(b, s, t, "");
    if (!rc)
        rc = ferry_buf_adds(b, ") DO UPDATE SET \"_ferry_tenant\" = EXCLUDED.\"_ferry_tenant\";\n");
    ferry_buf_reset(&cond);
    if (!rc)
        rc = add_dirty_has(&cond, ti, "\"_ferry_c\".");
    if (!rc)
        rc = add_orphan_note_in(b, s, t, 1, 1, "_ferry_n_orphans", cond.data);
    if (!rc && fk) {
        const struct ferry_table_info *pi = &s->tables[st->parent].info;

        rc = ferry_buf_adds(b, "DELETE FROM \"_ferry_n_orphans\" AS o WHERE o.ptbl = ");
        if (!rc)
            rc = ferry_buf_add_literal(b, pi->name);
        if (!rc)
            rc = ferry_buf_adds(b, " AND o.ctbl = ");
        if (!rc)
            rc = ferry_buf_add_literal(b, ti->name);
        if (!rc)
            rc = ferry_buf_adds(b, " AND EXISTS (SELECT 1 FROM ");
        if (!rc)
            rc = ferry_buf_add_ident(b, pi->name);
        if (!rc)
            rc = ferry_buf_adds(b, " AS pp WHERE ");
        for (size_t i = 0; i < fk->ncols && !rc; i++) {
            rc = ferry_buf_adds(b, i ? " AND pp." : "pp.");
            if (!rc)
                rc = ferry_buf_add_ident(b, fk->pcols[i]);
            if (!rc)
                rc = ferry_buf_addf(b, " = CAST(o.p%zu AS %s)", i, col_type(pi, fk->pcols[i]));
        }
        if (!rc)
            rc = ferry_buf_adds(b, ");\n");
    }
    if (!rc)
        rc = ferry_buf_adds(b, "DROP TABLE pg_temp.\"_ferry_d\", pg_temp.\"_ferry_o\", "
                               "pg_temp.\"_ferry_w\";\n");
    ferry_buf_release(&cond);
    return rc;
}

/* Step 3, the maps built: the old map goes, the new takes its names. */
static int pg_swap_sql(struct ferry_buf *b, const struct ferry_table_info *ti)
{
    static const char *const kinds[][2] = {
        {KM_BUILD, "k"}, {KM_BUILD "p", "kp"}, {KM_BUILD "i", "ki"}};
    int rc = ferry_buf_adds(b, "DROP TABLE IF EXISTS ");

    if (!rc)
        rc = ferry_scope_keymap(b, ti->name);
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]) && !rc; i++) {
        rc = ferry_buf_adds(b, i ? ";\nALTER INDEX " : ";\nALTER TABLE ");
        if (!rc)
            rc = ferry_scope_add_objname(b, kinds[i][0], ti->name);
        if (!rc)
            rc = ferry_buf_adds(b, " RENAME TO ");
        if (!rc)
            rc = ferry_scope_add_objname(b, kinds[i][1], ti->name);
    }
    if (!rc)
        rc = ferry_buf_adds(b, ";\nDROP TABLE ");
    if (!rc)
        rc = ferry_scope_add_objname(b, KM_DIRTY, ti->name);
    return rc ? rc : ferry_buf_adds(b, ";\n");
}

/* Runs the SQL built into sql (rc: how building it went); errors name what (a table, or NULL). */
static int pg_run(struct ferry_db *db, struct ferry_buf *sql, int rc, const char *what,
                  struct ferry_error *err)
{
    if (rc)
        return ferry_error_set(err, rc, "cannot build capture SQL%s%s", what ? " for " : "",
                               what ? what : "");
    log_debug("capture SQL%s%s:\n%s", what ? " for " : "", what ? what : "", sql->data);
    rc = ferry_db_exec(db, sql->data, err);
    if (rc && what)
        ferry_error_prefix(err, "installing capture on %s", what);
    ferry_buf_reset(sql);
    return rc;
}

/*
 * How long step 1 and step 3 wait for the lock on each table of the scope
 * (while one application transaction holds it, every writer queued behind
 * install's request waits too), and how often they try again.
 */
#define PG_LOCK_WAIT "SET LOCAL lock_timeout TO '200ms';\nSET LOCAL statement_timeout TO '500ms';\n"
#define PG_LOCK_PAUSE_MS 500 /* between two tries */
/*
 * The advisory lock one install holds on a database ("ferr", "yins"): a
 * killed install's server process keeps it until its statement ends.
 */
#define PG_INSTALL_LOCK "1717924466, 2036952691"
/* step 3 is done with the tables locked once a pass without takes less than this */
#define PG_CATCHUP_PASSES 8
#define PG_CATCHUP_ENOUGH_MS 200

/*
 * The scope's tables locked in mode, parents first, as the application's
 * statements take them, in at most PG_LOCK_WAIT's time (a statement's
 * time limit applies to each statement of a query string since 13).
 */
static int pg_lock_scope(struct ferry_buf *b, const struct ferry_scope *s, const char *mode)
{
    int rc = ferry_buf_adds(b, PG_LOCK_WAIT);

    for (size_t t = 0; t < s->ntables && !rc; t++) {
        rc = ferry_buf_adds(b, t ? ", " : "LOCK TABLE ");
        if (!rc)
            rc = ferry_buf_add_ident(b, s->tables[t].info.name);
    }
    if (!rc)
        rc = ferry_buf_addf(b, " IN %s MODE;\n", mode);
    return rc ? rc
              : ferry_buf_adds(b, "SET LOCAL lock_timeout TO DEFAULT;\n"
                                  "SET LOCAL statement_timeout TO DEFAULT;\n");
}

static long mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Step 1: the log's tables, the noting triggers, a fresh KM_BUILD orphans table. */
static int pg_install_begin(struct ferry_db *db, const struct ferry_scope *s, const char *schema,
                            struct ferry_buf *sql, struct ferry_error *err)
{
    const struct ferry_table_info *ri = ferry_scope_root(s);
    int rc;

    /*
     * The log. Keys are stored as text, the output of each key column's
     * type (pinned settings, see pg_stable_key_type), and read back through
     * the column's type where they are used (producers bind them to a
     * comparison with the typed column; ferry_capture_key gives tombstones
     * the value kind the row itself would have): one set of columns serves
     * every key type exactly, and the (tenant, seq) index stays narrow. The
     * tenant has the root key's type, so "tenant = ?" compares as the
     * root's key does (uuid, case, ...). txid lets an operator match an
     * entry to a transaction; the safe head does not need it.
     */
    rc = ferry_db_begin(db, err);
    if (rc)
        return rc;
    rc = pg_run(db, sql, pg_lock_scope(sql, s, "SHARE ROW EXCLUSIVE"), NULL, err);
    /* what an install that stopped half way left */
    if (!rc)
        rc = pg_drop(db, PG_DROP_BUILD_TRIGGERS, PG_DROP_BUILD_TABLES, err);
    if (!rc)
        rc = pg_run(
            db, sql,
            ferry_buf_addf(sql,
                           "CREATE TABLE IF NOT EXISTS _ferry_changes("
                           "seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
                           "tbl text NOT NULL, op text NOT NULL, tenant %s NOT NULL, "
                           "txid bigint NOT NULL DEFAULT txid_current(), "
                           "k0 text, k1 text, k2 text, k3 text);\n"
                           "CREATE INDEX IF NOT EXISTS _ferry_changes_tenant "
                           "ON _ferry_changes(tenant, seq);\n"
                           "CREATE TABLE \"_ferry_n_orphans\"(ptbl text NOT NULL, "
                           "ctbl text NOT NULL, p0 text NOT NULL DEFAULT '', "
                           "p1 text NOT NULL DEFAULT '', p2 text NOT NULL DEFAULT '', "
                           "p3 text NOT NULL DEFAULT '', CONSTRAINT \"_ferry_n_orphans_pkey\" "
                           "PRIMARY KEY (ptbl, ctbl, p0, p1, p2, p3));\n"
                           /* migration mode (freeze.h): the trigger functions read it */
                           "CREATE TABLE IF NOT EXISTS _ferry_frozen(tenant text PRIMARY KEY, "
                           "since bigint NOT NULL, reason text);\n",
                           col_type(ri, ri->cols[ferry_table_pkcol(ri, 0)].name)),
            NULL, err);
    for (size_t t = 0; t < s->ntables && !rc; t++)
        rc = pg_run(db, sql, pg_dirty_sql(sql, s, t, schema), s->tables[t].info.name, err);
    if (!rc)
        rc = ferry_db_commit(db, err);
    if (rc)
        ferry_db_rollback(db);
    return rc;
}

/* Step 3's look-ups, table by table, parents first, in the transaction begun. */
static int pg_catchup(struct ferry_db *db, const struct ferry_scope *s, struct ferry_buf *sql,
                      struct ferry_error *err)
{
    int rc = FERRY_OK;

    for (size_t t = 0; t < s->ntables && !rc; t++)
        rc = pg_run(db, sql, pg_catchup_sql(sql, s, t), s->tables[t].info.name, err);
    return rc;
}

/* Step 3: catch up, swap, the capture triggers; the version last. */
static int pg_install_finish(struct ferry_db *db, const struct ferry_scope *s, const char *schema,
                             struct ferry_buf *sql, struct ferry_error *err)
{
    int rc = ferry_db_begin(db, err);

    if (rc)
        return rc;
    /* writers wait from here; readers too once the triggers are dropped */
    rc = pg_run(db, sql, pg_lock_scope(sql, s, "SHARE ROW EXCLUSIVE"), NULL, err);
    if (!rc)
        rc = pg_catchup(db, s, sql, err);
    if (!rc)
        rc = pg_run(db, sql, pg_lock_scope(sql, s, "ACCESS EXCLUSIVE"), NULL, err);
    if (!rc)
        rc = pg_drop(db, "^_ferry_[iudtvwx]_", PG_DROP_NONE, err);
    for (size_t t = 0; t < s->ntables && !rc; t++)
        rc = pg_run(db, sql, pg_swap_sql(sql, &s->tables[t].info), s->tables[t].info.name, err);
    if (!rc)
        rc = pg_run(db, sql,
                    ferry_buf_adds(sql,
                                   "DROP TABLE IF EXISTS _ferry_orphans;\n"
                                   "ALTER TABLE \"_ferry_n_orphans\" RENAME TO _ferry_orphans;\n"
                                   "ALTER INDEX \"_ferry_n_orphans_pkey\" "
                                   "RENAME TO _ferry_orphans_pkey;\n"),
                    NULL, err);
    for (size_t t = 0; t < s->ntables && !rc; t++)
        rc = pg_run(db, sql, pg_table_sql(sql, s, t, schema), s->tables[t].info.name, err);
    if (!rc)
        rc = pg_run(db, sql, pg_orphans_settle_sql(sql, s, schema), "_ferry_orphans", err);
    if (!rc)
        rc = write_version(db, err);
    if (!rc)
        rc = write_shapes(db, s, err);
    if (!rc)
        rc = ferry_db_commit(db, err);
    if (rc)
        ferry_db_rollback(db);
    return rc;
}

/* A pass of step 3 while the application writes (pg_install). */
static int pg_catchup_pass(struct ferry_db *db, const struct ferry_scope *s, struct ferry_buf *sql,
                           struct ferry_error *err)
{
    long t0 = mono_ms();
    int rc = ferry_db_begin(db, err);

    if (!rc)
        rc = pg_catchup(db, s, sql, err);
    if (!rc)
        rc = ferry_db_commit(db, err);
    else
        ferry_db_rollback(db);
    if (!rc)
        log_info("install: caught up with the writes so far in %ld ms", mono_ms() - t0);
    return rc;
}

/* Step 1 or step 3: a transaction that locks the scope's tables (pg_with_locks). */
typedef int (*pg_step_fn)(struct ferry_db *, const struct ferry_scope *, const char *,
                          struct ferry_buf *, struct ferry_error *);

/*
 * Runs step again while it fails for a lock: one it waited too long for,
 * or a deadlock (its locks are taken table by table, the application's in
 * its own order), for up to wait_ms in all. done names the step in the
 * log; between, when not NULL, runs between two tries (step 3: a pass
 * without the locks, so that what was noted meanwhile is not caught up
 * with writers waiting).
 */
static int pg_with_locks(pg_step_fn step, const char *done,
                         int (*between)(struct ferry_db *, const struct ferry_scope *,
                                        struct ferry_buf *, struct ferry_error *),
                         struct ferry_db *db, const struct ferry_scope *s, const char *schema,
                         long wait_ms, struct ferry_buf *sql, struct ferry_error *err)
{
    long start = mono_ms();

    for (int i = 1;; i++) {
        long t0 = mono_ms();
        int rc;

        ferry_buf_reset(sql);
        rc = step(db, s, schema, sql, err);
        if (!rc)
            log_info("install: %s in %ld ms (try %d)", done, mono_ms() - t0, i);
        /*
         * 55P03: lock_timeout; 57014: statement_timeout (PG_LOCK_WAIT);
         * 40P01: a deadlock with the application's writers
         */
        if (!rc || (!strstr(err->msg, "SQLSTATE 55P03") && !strstr(err->msg, "SQLSTATE 57014") &&
                    !strstr(err->msg, "SQLSTATE 40P01")))
            return rc;
        if (mono_ms() - start + PG_LOCK_PAUSE_MS >= wait_ms)
            break;
        log_warn("install: %s; trying again (try %d, %ld of %ld s)",
                 strstr(err->msg, "40P01") ? "a deadlock with the application's writes"
                                           : "a transaction holds a lock on a table of the scope",
                 i, (mono_ms() - start) / 1000, wait_ms / 1000);
        sleep_ms(PG_LOCK_PAUSE_MS);
        if (between) {
            ferry_buf_reset(sql);
            rc = between(db, s, sql, err);
            if (rc)
                return rc;
        }
    }
    /*
     * A copy's exported snapshot (ferry-src serve holds it open) keeps its
     * tables locked as read until that copy ends: install waits for it too.
     */
    return ferry_error_set(err, FERRY_EDB,
                           "install: a transaction kept a lock on a table of the scope for %ld s "
                           "(a copy in progress keeps one while it reads its snapshot); end it "
                           "or wait (pg_stat_activity, pg_locks), then run install again, or "
                           "give it longer (--lock-wait SECONDS)",
                           (mono_ms() - start + 500) / 1000);
}

static int pg_install(struct ferry_db *db, const struct ferry_scope *s, long wait_ms,
                      struct ferry_error *err)
{
    char schema[256];
    struct ferry_buf sql;
    int64_t got = 0;
    int rc;

    ferry_buf_init(&sql, (size_t)64 << 20);
    rc = pg_schema(db, schema, sizeof(schema), err);
    if (!rc)
        rc = ferry_db_query_int(db,
                                "SELECT pg_catalog.pg_try_advisory_lock(" PG_INSTALL_LOCK ")::int",
                                NULL, 0, &got, err);
    if (!rc && !got) {
        int64_t pid = 0;

        rc = ferry_db_query_int(db,
                                "SELECT coalesce(min(pid), 0) FROM pg_catalog.pg_locks WHERE "
                                "locktype = 'advisory' AND objsubid = 2 AND "
                                "(classid::text, objid::text) = "
                                "(split_part('" PG_INSTALL_LOCK "', ', ', 1), "
                                "split_part('" PG_INSTALL_LOCK "', ', ', 2)) AND granted",
                                NULL, 0, &pid, err);
        if (!rc)
            rc = ferry_error_set(err, FERRY_EDB,
                                 "another ferry-src install is running on this database (server "
                                 "process %" PRId64 "); wait for it to end, or end it: SELECT "
                                 "pg_terminate_backend(%" PRId64 ")",
                                 pid, pid);
    }
    if (rc)
        goto out;
    /* the catch-up passes work in temporary tables: say so before anything is built */
    rc = ferry_db_query_int(db,
                            "SELECT pg_catalog.has_database_privilege("
                            "pg_catalog.current_database(), 'TEMPORARY')::int",
                            NULL, 0, &got, err);
    if (!rc && !got) {
        char who[2][128];

        rc = pg_name_query(db, "SELECT pg_catalog.quote_ident(pg_catalog.current_database())",
                           who[0], sizeof(who[0]), err);
        if (!rc)
            rc = pg_name_query(db, "SELECT pg_catalog.quote_ident(current_user)", who[1],
                               sizeof(who[1]), err);
        if (!rc)
            rc = ferry_error_set(err, FERRY_EDB,
                                 "install needs temporary tables for its catch-up, and role %s "
                                 "may not create them: GRANT TEMPORARY ON DATABASE %s TO %s, "
                                 "then run install again",
                                 who[1], who[0], who[1]);
        goto unlock;
    }
    if (rc)
        goto unlock;
    log_info("install: noting writes to the scope's %zu tables", s->ntables);
    rc = pg_with_locks(pg_install_begin, "noting writes", NULL, db, s, schema, wait_ms, &sql, err);
    if (rc)
        goto unlock;
    /* step 2: a transaction per table, writers go on */
    log_info("install: building the key maps (the application writes meanwhile)");
    for (size_t t = 0; t < s->ntables && !rc; t++) {
        rc = ferry_db_begin(db, err);
        if (!rc)
            rc = pg_run(db, &sql, pg_keymap_sql(&sql, s, t), s->tables[t].info.name, err);
        if (!rc)
            rc = ferry_db_commit(db, err);
        else
            ferry_db_rollback(db);
    }
    /*
     * Catching up first with the writers going on, while that shrinks what
     * is left: step 3 then waits only for what the last pass could not see.
     */
    for (int pass = 0; pass < PG_CATCHUP_PASSES && !rc; pass++) {
        long t0 = mono_ms();

        rc = pg_catchup_pass(db, s, &sql, err);
        if (mono_ms() - t0 < PG_CATCHUP_ENOUGH_MS)
            break;
    }
    if (!rc) {
        log_info("install: catching up with the last writes, writers waiting");
        rc = pg_with_locks(pg_install_finish, "caught up, writers waiting", pg_catchup_pass, db, s,
                           schema, wait_ms, &sql, err);
    }
    if (rc) {
        struct ferry_error e2;

        /*
         * The noting triggers would go on costing every write. Their drop
         * waits for locks too, not for long: the writers queue behind it.
         */
        if (ferry_db_begin(db, &e2) || ferry_db_exec(db, "SET LOCAL lock_timeout TO '2s'", &e2) ||
            pg_drop(db, PG_DROP_BUILD_TRIGGERS, PG_DROP_BUILD_TABLES, &e2) ||
            ferry_db_commit(db, &e2)) {
            ferry_db_rollback(db);
            log_warn("install: could not drop what it built (%s); run install again, or "
                     "uninstall",
                     e2.msg);
        }
        goto unlock;
    }
    /*
     * Outside the transaction: the key maps' visibility maps, so that counts
     * and snapshot pages read their (tenant, key) index without the heap.
     * Autovacuum would get there too, later.
     */
    for (size_t t = 0; t < s->ntables && !rc; t++) {
        ferry_buf_reset(&sql);
        rc = ferry_buf_adds(&sql, "VACUUM (ANALYZE) ");
        if (!rc)
            rc = ferry_scope_keymap(&sql, s->tables[t].info.name);
        if (rc)
            rc = ferry_error_set(err, rc, "cannot build SQL");
        else
            rc = ferry_db_exec(db, sql.data, err);
    }
unlock:
    ferry_db_exec(db, "SELECT pg_catalog.pg_advisory_unlock(" PG_INSTALL_LOCK ")",
                  &(struct ferry_error){0});
out:
    ferry_buf_release(&sql);
    return rc;
}

/*
 * SQLite's first install: the triggers and empty key maps are committed
 * first (serve refuses while SQLITE_BUILDING exists), then each key map is
 * filled in short transactions, a range of keys each, in key order, so
 * that the application's writes wait for one of them at a time, not for
 * the whole build. A row the triggers wrote an entry for meanwhile keeps it
 * (INSERT OR IGNORE): both read the database as it is. What the triggers
 * could not do without an entry (a 'D' for the tenant a row left) needs a
 * target that copied before: there is none before the first install ends.
 */
#define SQLITE_BUILDING "_ferry_installing"
/*
 * A step holds the write lock for about SQLITE_STEP_MS (its rows adjusted
 * to the last step's time), then lets go for as long as it held it: a
 * writer waiting in SQLite's busy handler sleeps longer the longer it has
 * waited, and the next step must not take the lock again before it wakes.
 */
#define SQLITE_STEP_MS 20
#define SQLITE_STEP_ROWS_MIN 500
#define SQLITE_STEP_ROWS_MAX 200000
#define SQLITE_PROGRESS_MS 5000 /* a log line while a big table's key map fills */

/* A key's values, copied out of a statement's row. */
struct sqlite_key {
    struct ferry_value v[FERRY_MAX_KEY_COLS];
    char *bytes[FERRY_MAX_KEY_COLS];
    size_t n;
};

static void sqlite_key_release(struct sqlite_key *k)
{
    for (size_t i = 0; i < k->n; i++)
        free(k->bytes[i]);
    k->n = 0;
}

static int sqlite_key_copy(struct sqlite_key *k, struct ferry_stmt *st, size_t n)
{
    sqlite_key_release(k);
    for (size_t i = 0; i < n; i++) {
        ferry_stmt_column(st, (int)i, &k->v[i]);
        k->bytes[i] = NULL;
        k->n = i + 1;
        if (k->v[i].type == FERRY_TEXT || k->v[i].type == FERRY_BLOB) {
            k->bytes[i] = malloc(k->v[i].u.s.n + 1);
            if (!k->bytes[i])
                return FERRY_ENOMEM;
            memcpy(k->bytes[i], k->v[i].u.s.p, k->v[i].u.s.n);
            k->v[i].u.s.p = k->bytes[i];
        }
    }
    return FERRY_OK;
}

/* Run sql (one statement) with the bound keys: lo as ?1.., hi as ?5.., rows as ?9 */
static int sqlite_run_bound(struct ferry_db *db, const char *sql, const struct sqlite_key *lo,
                            const struct sqlite_key *hi, int64_t rows, struct sqlite_key *row,
                            struct ferry_error *err)
{
    struct ferry_stmt *st = NULL;
    struct ferry_value n = ferry_value_int(rows);
    int got = 0;
    int rc = ferry_db_prepare(db, sql, &st, err);

    if (!rc && row)
        rc = ferry_stmt_bind(st, 9, &n, err);

    for (size_t i = 0; lo && i < lo->n && !rc; i++)
        rc = ferry_stmt_bind(st, (int)(1 + i), &lo->v[i], err);
    for (size_t i = 0; hi && i < hi->n && !rc; i++)
        rc = ferry_stmt_bind(st, (int)(5 + i), &hi->v[i], err);
    if (!rc)
        rc = ferry_stmt_step(st, &got, err);
    if (row) {
        sqlite_key_release(row);
        if (!rc && got && sqlite_key_copy(row, st, (size_t)ferry_stmt_ncols(st)))
            rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory");
    }
    ferry_stmt_free(st);
    return rc;
}

/* SELECT the last key of the next step of table t (after: past the bound ?1..; ?9 rows) */
static int sqlite_end_sql(struct ferry_buf *b, const struct ferry_scope *s, size_t t, int after)
{
    int rc;

    ferry_buf_reset(b);
    rc = ferry_buf_adds(b, "SELECT ");
    if (!rc)
        rc = add_keys(b, s, t, "\"_ferry_s\".");
    if (!rc)
        rc = ferry_buf_adds(b, " FROM ");
    if (!rc)
        rc = ferry_buf_add_ident(b, s->tables[t].info.name);
    if (!rc)
        rc = ferry_buf_adds(b, " AS \"_ferry_s\" WHERE 1");
    if (!rc && after)
        rc = add_key_bound(b, s, t, "\"_ferry_s\".", ">", 1);
    if (!rc)
        rc = ferry_buf_adds(b, " ORDER BY ");
    if (!rc)
        rc = add_keys(b, s, t, "\"_ferry_s\".");
    return rc ? rc : ferry_buf_adds(b, " LIMIT 1 OFFSET ?9 - 1");
}

/*
 * temp._ferry_fix for table t (sqlite_step_sql): its key columns typed as
 * the key map's, so that the two compare with one affinity and each finds
 * the other through its primary key.
 */
static int sqlite_fix_table(struct ferry_db *db, const struct ferry_scope *s, size_t t,
                            struct ferry_error *err)
{
    const struct ferry_table_info *ti = &s->tables[t].info;
    size_t npk = ferry_table_npk(ti);
    struct ferry_buf b;
    int rc;

    ferry_buf_init(&b, SQL_MAX);
    rc = ferry_buf_adds(&b, "DROP TABLE IF EXISTS temp._ferry_fix;\n"
                            "CREATE TEMP TABLE _ferry_fix(");
    for (size_t k = 0; k < npk && !rc; k++) {
        const char *type = ti->cols[ferry_table_pkcol(ti, k)].type;

        rc = ferry_buf_addf(&b, "%s %s, ", kcols[k], type ? type : "");
    }
    if (!rc)
        rc = ferry_buf_adds(&b, "o, PRIMARY KEY(");
    for (size_t k = 0; k < npk && !rc; k++)
        rc = ferry_buf_addf(&b, "%s%s", k ? ", " : "", kcols[k]);
    if (!rc)
        rc = ferry_buf_adds(&b, "))");
    if (rc)
        rc = ferry_error_set(err, rc, "cannot build install SQL for %s", ti->name);
    else
        rc = ferry_db_exec(db, b.data, err);
    ferry_buf_release(&b);
    return rc;
}

/* *fits: table t's key map is there, with t's key columns (then install keeps it) */
static int sqlite_keymap_fits(struct ferry_db *db, const struct ferry_scope *s, size_t t, int *fits,
                              struct ferry_error *err)
{
    const struct ferry_table_info *ti = &s->tables[t].info;
    size_t npk = ferry_table_npk(ti);
    struct ferry_table_info km;
    char name[FERRY_OBJNAME_SIZE];
    int exists = 0;
    int rc;

    *fits = 0;
    if (ferry_scope_objname(name, "k", ti->name))
        return ferry_error_set(err, FERRY_EINTERNAL, "cannot name a key map");
    rc = ferry_db_table_columns(db, name, &km, &exists, err);
    if (rc)
        return rc;
    *fits = exists && km.ncols == npk + 1 && !strcmp(km.cols[npk].name, "_ferry_tenant");
    for (size_t k = 0; k < npk && *fits; k++)
        *fits = !strcmp(km.cols[k].name, ti->cols[ferry_table_pkcol(ti, k)].name);
    ferry_table_info_release(&km);
    return FERRY_OK;
}

/* keep[t]: table t's key map was kept (a re-install), checked rather than filled */
static int sqlite_build_online(struct ferry_db *db, const struct ferry_scope *s, const int *keep,
                               struct ferry_error *err)
{
    struct sqlite_step step[4];
    struct ferry_buf end[2];
    int rc;

    /* between two steps the application's writers get the lock; then ours, soon */
    ferry_db_busy_poll(db);
    for (int i = 0; i < 4; i++) {
        for (int j = 0; j < SQLITE_STEP_MAX; j++)
            ferry_buf_init(&step[i].st[j], SQL_MAX);
        step[i].n = 0;
        if (i < 2)
            ferry_buf_init(&end[i], SQL_MAX);
    }
    rc = FERRY_OK;
    for (size_t t = 0; t < s->ntables && !rc; t++) {
        const struct ferry_table_info *ti = &s->tables[t].info;
        struct sqlite_key lo = {.n = 0}, hi = {.n = 0};
        long t0 = mono_ms(), said = t0, longest = 0;
        int64_t rows = SQLITE_STEP_ROWS_MIN, done = 0;
        int chunks = 0;

        /* end[after]: the last key of the next step; step[after + 2 * bounded] */
        for (int i = 0; i < 4 && !rc; i++) {
            rc = sqlite_step_sql(&step[i], s, t, i & 1 ? ">" : NULL, i & 2 ? "<=" : NULL, keep[t]);
            if (!rc && i < 2)
                rc = sqlite_end_sql(&end[i], s, t, i);
        }
        if (rc) {
            rc = ferry_error_set(err, rc, "cannot build install SQL for %s", ti->name);
            break;
        }
        if (keep[t] && (rc = sqlite_fix_table(db, s, t, err)) != FERRY_OK)
            break;
        for (;;) {
            int after = lo.n > 0, i;
            long c0, held;

            rc = ferry_db_begin(db, err);
            if (rc)
                break;
            c0 = mono_ms();
            rc = sqlite_run_bound(db, end[after].data, &lo, NULL, rows, &hi, err);
            i = after + (hi.n ? 2 : 0);
            for (int j = 0; j < step[i].n && !rc; j++)
                rc = sqlite_run_bound(db, step[i].st[j].data, step[i].bound[j] ? &lo : NULL,
                                      step[i].bound[j] ? &hi : NULL, 0, NULL, err);
            if (!rc)
                rc = ferry_db_commit(db, err);
            else
                ferry_db_rollback(db);
            held = mono_ms() - c0;
            if (held > longest)
                longest = held;
            chunks++;
            if (rc || !hi.n)
                break;
            done += rows; /* a step that ends at hi read rows keys */
            if (mono_ms() - said >= SQLITE_PROGRESS_MS) {
                said = mono_ms();
                log_info("install: key map of %s: %" PRId64 " rows in %ld s so far", ti->name, done,
                         (said - t0) / 1000);
            }
            sleep_ms(held > 1 ? held : 1);
            /* toward SQLITE_STEP_MS, at most twice as many: a step over cheap rows says little */
            rows = held * 2 < SQLITE_STEP_MS ? rows * 2 : rows * SQLITE_STEP_MS / held;
            if (rows < SQLITE_STEP_ROWS_MIN)
                rows = SQLITE_STEP_ROWS_MIN;
            if (rows > SQLITE_STEP_ROWS_MAX)
                rows = SQLITE_STEP_ROWS_MAX;
            /* the next step starts after this one's last key */
            sqlite_key_release(&lo);
            lo = hi;
            hi.n = 0;
        }
        sqlite_key_release(&lo);
        sqlite_key_release(&hi);
        if (rc)
            ferry_error_prefix(err, "install: %s the key map of %s",
                               keep[t] ? "checking" : "filling", ti->name);
        else
            log_info("install: key map of %s %s in %d steps, %ld ms (each held the write lock "
                     "%ld ms at most)",
                     ti->name, keep[t] ? "checked" : "filled", chunks, mono_ms() - t0, longest);
    }
    for (int i = 0; i < 4; i++) {
        for (int j = 0; j < SQLITE_STEP_MAX; j++)
            ferry_buf_release(&step[i].st[j]);
        if (i < 2)
            ferry_buf_release(&end[i]);
    }
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

int ferry_capture_drop_triggers(struct ferry_db *db, const char *like, struct ferry_error *err)
{
    struct ferry_stmt *st = NULL;
    struct ferry_value pat = ferry_value_text(like, strlen(like));
    struct ferry_buf drop;
    int row = 0;
    int rc;

    ferry_buf_init(&drop, SQL_MAX);
    rc = ferry_db_prepare(db,
                          "SELECT name FROM sqlite_schema WHERE type = 'trigger' AND name "
                          "LIKE ? ESCAPE '\\'",
                          &st, err);
    if (!rc)
        rc = ferry_stmt_bind(st, 1, &pat, err);
    while (!rc) {
        struct ferry_value name;
        char nm[600];

        rc = ferry_stmt_step(st, &row, err);
        if (rc || !row)
            break;
        ferry_stmt_column(st, 0, &name);
        snprintf(nm, sizeof(nm), "%.*s", (int)name.u.s.n, name.u.s.p);
        if (ferry_buf_adds(&drop, "DROP TRIGGER IF EXISTS ") || ferry_buf_add_ident(&drop, nm) ||
            ferry_buf_adds(&drop, ";\n"))
            rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory dropping triggers");
    }
    ferry_stmt_free(st);
    if (!rc && drop.len)
        rc = ferry_db_exec(db, drop.data, err);
    ferry_buf_release(&drop);
    return rc;
}

/*
 * Warn of rows whose primary key holds a NULL (SQLite allows it in a rowid
 * table whose key is not its INTEGER PRIMARY KEY): no key map entry, no
 * key to copy or delete them by on any target. verify counts the tenant's.
 */
static void sqlite_warn_unkeyed(struct ferry_db *db, const struct ferry_scope *s)
{
    for (size_t t = 0; t < s->ntables; t++) {
        const char *name = s->tables[t].info.name;
        struct ferry_error err;
        struct ferry_buf sql;
        int64_t n = 0;
        int nparams;
        int rc;

        if (!ferry_scope_key_nullable(s, t))
            continue;
        ferry_buf_init(&sql, SQL_MAX);
        rc = ferry_scope_unkeyed_sql(s, t, 0, &sql, &nparams);
        if (!rc)
            rc = ferry_db_query_int(db, sql.data, NULL, 0, &n, &err);
        ferry_buf_release(&sql);
        if (!rc && n)
            log_warn("%s has %" PRId64 " rows with a NULL in their primary key (SQLite allows it "
                     "in a table that is not WITHOUT ROWID): ferry cannot copy them to any target, "
                     "and verify reports them; give them keys",
                     name, n);
    }
}

static int warn_rebuilt(struct ferry_db *db, const struct ferry_scope *s, struct ferry_error *err);

int ferry_capture_install(struct ferry_db *db, const struct ferry_scope *s, long lock_wait,
                          struct ferry_error *err)
{
    struct ferry_buf sql;
    int installed = 0, building = 0, fresh = 0;
    int *keep = NULL;
    int rc;

    rc = warn_rebuilt(db, s, err);
    if (rc)
        return rc;
    if (ferry_db_engine(db) == FERRY_ENGINE_PG)
        return pg_install(db, s, lock_wait * 1000, err);
    ferry_buf_init(&sql, (size_t)64 << 20);
    keep = calloc(s->ntables ? s->ntables : 1, sizeof(*keep));
    if (!keep) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        goto out;
    }
    /*
     * A re-install keeps the key maps it finds (sqlite_build_online checks
     * them); a first one, one that stopped half way, or one that must make
     * a key map anew (a table new to the scope, a key changed) keeps serve
     * from serving until the maps are filled (SQLITE_BUILDING).
     */
    rc = ferry_db_table_exists(db, "_ferry_changes", &installed, err);
    if (!rc)
        rc = ferry_db_table_exists(db, SQLITE_BUILDING, &building, err);
    for (size_t t = 0; t < s->ntables && !rc; t++) {
        if (installed && !building)
            rc = sqlite_keymap_fits(db, s, t, &keep[t], err);
        fresh |= !keep[t];
    }
    if (rc)
        goto out;
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
                       "ON _ferry_changes(tenant, seq);\n"
                       "CREATE TABLE IF NOT EXISTS _ferry_orphans(ptbl TEXT NOT NULL, "
                       "ctbl TEXT NOT NULL, p0 NOT NULL DEFAULT '', p1 NOT NULL DEFAULT '', "
                       "p2 NOT NULL DEFAULT '', p3 NOT NULL DEFAULT '', "
                       "PRIMARY KEY (ptbl, ctbl, p0, p1, p2, p3)) WITHOUT ROWID;\n"
                       "CREATE TABLE IF NOT EXISTS _ferry_replacing(tbl TEXT NOT NULL, "
                       "k0, k1, k2, k3);\n"
                       "DELETE FROM _ferry_replacing;\n",
                       err);
    if (!rc && fresh)
        rc = ferry_db_exec(db, "CREATE TABLE IF NOT EXISTS " SQLITE_BUILDING "(since TEXT)", err);
    if (rc)
        goto rollback;
    rc = ferry_capture_drop_triggers(db, "\\_ferry\\_%", err);
    if (!rc)
        rc = ferry_db_exec(db, ORPHANS_RESET, err);
    if (rc)
        goto rollback;
    for (size_t t = 0; t < s->ntables; t++) {
        struct sqlite_replace r;

        rc = sqlite_replace_sql(db, s, t, &r, err);
        if (rc)
            goto rollback;
        if (r.skipped)
            log_warn("%s has %d UNIQUE indexes on expressions: a row that REPLACE deletes "
                     "through one of them stays on its target until verify --repair",
                     s->tables[t].info.name, r.skipped);
        ferry_buf_reset(&sql);
        rc = sqlite_table_sql(&sql, s, t, keep[t]);
        if (!rc && r.bi.len)
            rc = ferry_buf_addf(&sql, "%s;\n%s;\n%s", r.bi.data, r.bu.data, r.after.data);
        sqlite_replace_release(&r);
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
    /* with every key map kept, the triggers are the install: the check only mends */
    if (!fresh)
        rc = write_version(db, err);
    if (!rc && !fresh)
        rc = write_shapes(db, s, err);
    if (rc)
        goto rollback;
    rc = ferry_db_commit(db, err);
    if (!rc)
        rc = sqlite_build_online(db, s, keep, err);
    if (rc || !fresh)
        goto out;
    rc = ferry_db_begin(db, err);
    if (!rc)
        rc = ferry_db_exec(db, "DROP TABLE IF EXISTS " SQLITE_BUILDING, err);
    if (!rc)
        rc = write_version(db, err);
    if (!rc)
        rc = write_shapes(db, s, err);
    if (!rc)
        rc = ferry_db_commit(db, err);
    else
        ferry_db_rollback(db);
    goto out;
rollback:
    ferry_db_rollback(db);
out:
    if (!rc)
        sqlite_warn_unkeyed(db, s);
    free(keep);
    ferry_buf_release(&sql);
    return rc;
}

int ferry_capture_uninstall(struct ferry_db *db, struct ferry_error *err)
{
    int rc;

    rc = ferry_db_begin(db, err);
    if (rc)
        return rc;
    if (ferry_db_engine(db) == FERRY_ENGINE_PG)
        rc = pg_drop(db, PG_DROP_ALL, PG_DROP_ALL, err);
    else
        rc = drop_all_sqlite(db, err);
    if (rc) {
        ferry_db_rollback(db);
        return rc;
    }
    return ferry_db_commit(db, err);
}

/*
 * Warn, once a process, when the capture was installed by an older
 * ferry-src (or one from before versions were recorded): it still runs
 * that ferry-src's triggers. Not an error: they keep capturing as they
 * did.
 */
static int check_version(struct ferry_db *db, struct ferry_error *err)
{
    static int warned;
    int64_t version = 0;
    int exists = 0;
    int rc;

    rc = ferry_db_table_exists(db, "_ferry_capture", &exists, err);
    if (!rc && exists)
        rc = ferry_db_query_int(db, "SELECT COALESCE(max(version), 0) FROM _ferry_capture", NULL, 0,
                                &version, err);
    if (rc || warned ||
        version >=
            (ferry_db_engine(db) == FERRY_ENGINE_PG ? CAPTURE_VERSION_PG : CAPTURE_VERSION_SQLITE))
        return rc;
    warned = 1;
    log_warn("change capture was installed by an older ferry-src (capture version %" PRId64
             ", this one writes %d): its triggers lack later fixes; run ferry-src install "
             "--config %s again (it keeps the change log) when you can",
             version, CAPTURE_VERSION, config_path());
    return FERRY_OK;
}

/*
 * Warn of partitions of ti without the truncate trigger (pg_add_partition_
 * triggers): attached after install, or by an install before version 5.
 */
static int pg_check_partitions(struct ferry_db *db, const struct ferry_table_info *ti,
                               struct ferry_error *err)
{
    char name[FERRY_OBJNAME_SIZE];
    struct ferry_value args[2];
    struct ferry_buf rel;
    int64_t n = 0;
    int rc;

    if (ferry_scope_objname(name, "t", ti->name))
        return ferry_error_set(err, FERRY_EINTERNAL, "cannot name a trigger");
    ferry_buf_init(&rel, 1024);
    rc = ferry_buf_add_ident(&rel, ti->name);
    if (rc)
        return ferry_error_set(err, rc, "table name too long");
    args[0] = ferry_value_text(rel.data, rel.len);
    args[1] = ferry_value_text(name, strlen(name));
    rc = ferry_db_query_int(
        db,
        "SELECT count(*) FROM pg_catalog.pg_partition_tree(CAST(? AS "
        "pg_catalog.regclass)) p WHERE p.level > 0 AND NOT EXISTS (SELECT 1 "
        "FROM pg_catalog.pg_trigger g WHERE g.tgrelid = p.relid AND g.tgname = ?)",
        args, 2, &n, err);
    if (!rc && n > 0)
        log_warn("%" PRId64 " partitions of %s have no truncate trigger (attached after install): "
                 "a TRUNCATE of one would not reach the targets; run ferry-src install --config "
                 "C again",
                 n, ti->name);
    ferry_buf_release(&rel);
    return rc;
}

/*
 * Warn when table t's UNIQUE indexes are not those install saw (its
 * BEFORE INSERT trigger is not the one install would write now): a row
 * that REPLACE deletes through a new one would stay on its target.
 */
static int sqlite_check_unique(struct ferry_db *db, const struct ferry_scope *s, size_t t,
                               struct ferry_error *err)
{
    const char *table = s->tables[t].info.name;
    char name[FERRY_OBJNAME_SIZE];
    struct sqlite_replace r;
    struct ferry_value v;
    int64_t same = 0;
    int rc;

    if (ferry_scope_objname(name, "bi", table))
        return ferry_error_set(err, FERRY_EINTERNAL, "cannot name a trigger");
    rc = sqlite_replace_sql(db, s, t, &r, err);
    if (rc)
        return rc;
    v = ferry_value_text(name, strlen(name));
    rc = ferry_db_query_int(db,
                            r.bi.len ? "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger' "
                                       "AND name = ? AND sql = ?"
                                     : "SELECT count(*) = 0 FROM sqlite_schema WHERE type = "
                                       "'trigger' AND name = ?",
                            (struct ferry_value[]){v, ferry_value_text(r.bi.data, r.bi.len)},
                            r.bi.len ? 2 : 1, &same, err);
    if (!rc && !same)
        log_warn("the UNIQUE indexes of %s changed since install: a row that INSERT OR REPLACE "
                 "deletes through a new one would stay on its target; run ferry-src install "
                 "--config %s again",
                 table, config_path());
    sqlite_replace_release(&r);
    return rc;
}

/* *has: capture's insert, update and delete triggers are all on table (enabled, on PostgreSQL). */
static int has_triggers(struct ferry_db *db, const char *table, int *has, struct ferry_error *err)
{
    static const char *const kinds[] = {"i", "u", "d"};
    int rc = FERRY_OK;

    *has = 1;
    for (size_t k = 0; k < 3 && *has && !rc; k++) {
        char name[FERRY_OBJNAME_SIZE];
        struct ferry_value v;
        int64_t n = 0;

        if (ferry_scope_objname(name, kinds[k], table))
            return ferry_error_set(err, FERRY_EINTERNAL, "cannot name a trigger");
        v = ferry_value_text(name, strlen(name));
        if (ferry_db_engine(db) == FERRY_ENGINE_PG) {
            struct ferry_value args[2];
            struct ferry_buf rel;

            /* an enabled trigger on the table itself; the table as regclass reads it */
            ferry_buf_init(&rel, 1024);
            rc = ferry_buf_add_ident(&rel, table);
            if (rc)
                return ferry_error_set(err, rc, "table name too long");
            args[0] = ferry_value_text(rel.data, rel.len);
            args[1] = v;
            rc = ferry_db_query_int(db,
                                    "SELECT count(*) FROM pg_catalog.pg_trigger WHERE "
                                    "tgrelid = CAST(? AS pg_catalog.regclass) AND tgname = ? "
                                    "AND tgenabled <> 'D'",
                                    args, 2, &n, err);
            ferry_buf_release(&rel);
        } else {
            rc = ferry_db_query_int(db,
                                    "SELECT count(*) FROM sqlite_schema WHERE type = "
                                    "'trigger' AND name = ?",
                                    &v, 1, &n, err);
        }
        *has = n > 0;
    }
    return rc;
}

/*
 * Before an install over an earlier one: a table whose key map is there
 * but whose triggers are not was in the scope and lost them, rebuilt by a
 * migration (a new table swapped in for it, as SQLite's ALTER TABLE recipe
 * or a LIKE ... INCLUDING ALL copy does). What was written to it meanwhile
 * was not logged, and a key map check cannot see an update that left a
 * row where it was: said, with what brings the targets in step.
 */
static int warn_rebuilt(struct ferry_db *db, const struct ferry_scope *s, struct ferry_error *err)
{
    int installed = 0;
    int rc = ferry_db_table_exists(db, "_ferry_changes", &installed, err);

    for (size_t t = 0; t < s->ntables && !rc && installed; t++) {
        const char *table = s->tables[t].info.name;
        char map[FERRY_OBJNAME_SIZE];
        int mapped = 0, has = 1;

        if (ferry_scope_objname(map, "k", table))
            return ferry_error_set(err, FERRY_EINTERNAL, "cannot name a key map");
        rc = ferry_db_table_exists(db, map, &mapped, err);
        if (!rc && mapped)
            rc = has_triggers(db, table, &has, err);
        if (!rc && mapped && !has)
            log_warn("install: table %s was in the scope and lost its capture triggers (rebuilt "
                     "by a migration?): writes to it since were not logged; run ferry-dst verify "
                     "--repair on each target after this install",
                     table);
    }
    return rc;
}

/*
 * A table of the scope at install that is gone (dropped by a migration):
 * its parents' triggers still name it (they touch their children), and the
 * application's writes to them fail until install.
 */
static int check_gone(struct ferry_db *db, struct ferry_error *err)
{
    struct ferry_stmt *st = NULL;
    int rc = ferry_db_prepare(db, "SELECT tbl FROM _ferry_capture_shape ORDER BY tbl", &st, err);

    while (!rc) {
        struct ferry_value v;
        char name[256];
        int row = 0, there = 0;

        rc = ferry_stmt_step(st, &row, err);
        if (rc || !row)
            break;
        ferry_stmt_column(st, 0, &v);
        if (v.type != FERRY_TEXT || v.u.s.n >= sizeof(name))
            continue;
        memcpy(name, v.u.s.p, v.u.s.n);
        name[v.u.s.n] = '\0';
        rc = ferry_db_table_exists(db, name, &there, err);
        if (!rc && !there)
            rc = ferry_error_set(err, FERRY_ECONFIG,
                                 "table %s, in the scope at install, is gone (its parents' "
                                 "triggers name it: writes to them may fail); run ferry-src "
                                 "install --config %s",
                                 name, config_path());
    }
    ferry_stmt_free(st);
    return rc;
}

/*
 * *same: on SQLite, table's insert trigger reads each column of its path's
 * foreign key (NEW."col"). The shape there names only the parent: of two
 * nullable foreign keys to it, the one a migration added can take the path
 * (SQLite lists it first) with the shape unchanged, while the triggers
 * route by the other. SQLite rewrites the trigger's text when a column is
 * renamed, so the names stay comparable.
 */
static int sqlite_path_read(struct ferry_db *db, const struct ferry_scope *s, size_t t,
                            int64_t *same, struct ferry_error *err)
{
    const struct ferry_scope_table *st = &s->tables[t];
    char trig[FERRY_OBJNAME_SIZE];
    int rc = FERRY_OK;

    *same = 1;
    if (ferry_db_engine(db) == FERRY_ENGINE_PG || st->parent < 0 || st->fk < 0)
        return FERRY_OK;
    if (ferry_scope_objname(trig, "i", st->info.name))
        return ferry_error_set(err, FERRY_EINTERNAL, "cannot name a trigger");
    for (size_t i = 0; i < st->info.fks[st->fk].ncols && *same && !rc; i++) {
        struct ferry_value args[2];
        struct ferry_buf col;

        ferry_buf_init(&col, 1024);
        rc = ferry_buf_add(&col, "NEW.", 4) ||
             ferry_buf_add_ident(&col, st->info.fks[st->fk].cols[i]);
        if (rc) {
            ferry_buf_release(&col);
            return ferry_error_set(err, FERRY_ETOOBIG, "a column name of %s is too long",
                                   st->info.name);
        }
        args[0] = ferry_value_text(trig, strlen(trig));
        args[1] = ferry_value_text(col.data, col.len);
        rc = ferry_db_query_int(db,
                                "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger' AND "
                                "name = ? AND instr(sql, ?) > 0",
                                args, 2, same, err);
        ferry_buf_release(&col);
    }
    return rc;
}

/* Every table's triggers were written for its shape of now (capture_shape). */
static int check_shapes(struct ferry_db *db, const struct ferry_scope *s, struct ferry_error *err)
{
    struct ferry_buf shape;
    int rc = FERRY_OK;

    ferry_buf_init(&shape, SQL_MAX);
    for (size_t t = 0; t < s->ntables && !rc; t++) {
        const char *name = s->tables[t].info.name;
        struct ferry_value args[2];
        int64_t same = 0;

        for (int flags = 0; flags <= SHAPE_RAW && !same && !rc; flags += SHAPE_RAW) {
            ferry_buf_reset(&shape);
            if (capture_shape(db, s, t, flags, &shape)) {
                rc = ferry_error_set(err, FERRY_ETOOBIG, "the key of %s is too long to note", name);
                break;
            }
            args[0] = ferry_value_text(name, strlen(name));
            args[1] = ferry_value_text(shape.data, shape.len);
            rc = ferry_db_query_int(db,
                                    "SELECT count(*) FROM _ferry_capture_shape WHERE tbl = ? AND "
                                    "shape = ?",
                                    args, 2, &same, err);
        }
        if (!rc && same)
            rc = sqlite_path_read(db, s, t, &same, err);
        if (!rc && !same)
            rc = ferry_error_set(err, FERRY_ECONFIG,
                                 "table %s: its key or path to the tenant changed since install "
                                 "(%s); run ferry-src install again, then ferry-dst verify "
                                 "--repair",
                                 name,
                                 ferry_db_engine(db) == FERRY_ENGINE_PG
                                     ? "capture names the old; writes may fail"
                                     : "capture routes by the old one");
    }
    ferry_buf_release(&shape);
    return rc;
}

/*
 * An install from before the shapes were kept (none to compare) chose, of
 * several foreign keys to the same parent, the first the catalog lists;
 * this ferry-src prefers a NOT NULL one (ferry_scope_build). Where the two
 * differ, its triggers route by the other path.
 */
static int check_older_paths(const struct ferry_scope *s, struct ferry_error *err)
{
    for (size_t t = 0; t < s->ntables; t++) {
        const struct ferry_scope_table *sc = &s->tables[t];

        for (int j = 0; sc->parent >= 0 && sc->fk > 0 && j < sc->fk; j++)
            if (sc->info.fks[j].ncols &&
                strcmp(sc->info.fks[j].parent, sc->info.fks[sc->fk].parent) == 0)
                return ferry_error_set(err, FERRY_ECONFIG,
                                       "table %s: this ferry-src reaches the tenant through %s, "
                                       "its older install through %s; run ferry-src install "
                                       "--config %s, then ferry-dst verify --repair",
                                       sc->info.name, sc->info.fks[sc->fk].cols[0],
                                       sc->info.fks[j].cols[0], config_path());
    }
    return FERRY_OK;
}

/* The checks of what install noted of the scope's tables (capture_shape). */
static int check_noted(struct ferry_db *db, const struct ferry_scope *s, struct ferry_error *err)
{
    int noted = 0;
    int rc = ferry_db_table_exists(db, "_ferry_capture_shape", &noted, err);

    if (!rc && !noted)
        return check_older_paths(s, err);
    if (!rc)
        rc = check_gone(db, err);
    if (!rc)
        rc = check_shapes(db, s, err);
    return rc;
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
                               "change capture is not installed; run ferry-src install --config %s",
                               config_path());
    if (ferry_db_engine(db) != FERRY_ENGINE_PG)
        rc = ferry_db_table_exists(db, SQLITE_BUILDING, &exists, err);
    else
        exists = 0;
    if (rc)
        return rc;
    if (exists)
        return ferry_error_set(err, FERRY_ECONFIG,
                               "ferry-src install is filling the key maps, or stopped half way: "
                               "wait for it, or run ferry-src install --config %s again",
                               config_path());
    for (size_t t = 0; t < s->ntables; t++) {
        int n = 0;

        rc = has_triggers(db, s->tables[t].info.name, &n, err);
        if (rc)
            return rc;
        if (!n)
            return ferry_error_set(err, FERRY_ECONFIG,
                                   "change capture is not installed on table %s (the schema "
                                   "or scope changed?); run ferry-src install --config %s",
                                   s->tables[t].info.name, config_path());
    }
    rc = check_version(db, err);
    if (!rc)
        rc = check_noted(db, s, err);
    for (size_t t = 0; t < s->ntables && !rc; t++)
        rc = ferry_db_engine(db) == FERRY_ENGINE_PG
                 ? pg_check_partitions(db, &s->tables[t].info, err)
                 : sqlite_check_unique(db, s, t, err);
    if (!rc && ferry_db_engine(db) == FERRY_ENGINE_PG) {
        int64_t n = 0;

        /* step 1's tables (pg_install) */
        rc = ferry_db_query_int(db,
                                "SELECT count(*) FROM pg_catalog.pg_class c JOIN "
                                "pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE "
                                "n.nspname = current_schema() AND c.relname ~ '^_ferry_y_'",
                                NULL, 0, &n, err);
        if (!rc && n > 0)
            log_warn("a ferry-src install is running on this database, or one stopped half way: "
                     "its triggers note every write to %" PRId64 " tables until it ends; if none "
                     "runs, run ferry-src install --config %s again (or uninstall)",
                     n, config_path());
    }
    return rc;
}

int ferry_capture_pruned(struct ferry_db *db, int64_t *below, struct ferry_error *err)
{
    int exists = 0;
    int rc;

    *below = 0;
    rc = ferry_db_table_exists(db, "_ferry_pruned", &exists, err);
    if (rc || !exists)
        return rc;
    return ferry_db_query_int(db, "SELECT COALESCE(max(below), 0) FROM _ferry_pruned", NULL, 0,
                              below, err);
}

int ferry_capture_prune(struct ferry_db *db, int64_t before, int64_t *deleted,
                        struct ferry_error *err)
{
    struct ferry_stmt *st = NULL;
    struct ferry_value v;
    int64_t head = 0, was = 0;
    int row = 0, exists = 0;
    int rc;

    *deleted = 0;
    rc = ferry_db_table_exists(db, "_ferry_changes", &exists, err);
    if (!rc && !exists)
        return ferry_error_set(err, FERRY_ECONFIG,
                               "no change log in this database: ferry-src install has not run "
                               "here (check [source] database)");
    if (!rc)
        rc = ferry_db_begin(db, err);
    if (rc)
        return rc;
    rc = ferry_db_exec(db, "CREATE TABLE IF NOT EXISTS _ferry_pruned(below BIGINT NOT NULL)", err);
    if (!rc)
        rc = ferry_capture_head(db, &head, err);
    if (!rc)
        rc = ferry_capture_pruned(db, &was, err);
    if (rc)
        goto fail;
    /* no target can have applied past the head: such a SEQ is a mistake that drops everything */
    if (before > head + 1) {
        rc = ferry_error_set(err, FERRY_EUSAGE,
                             "SEQ %" PRId64 " is past the change log's head %" PRId64
                             ": no target can have applied it; prune below the lowest mark "
                             "ferry-dst status shows",
                             before, head);
        goto fail;
    }
    if (before > head)
        before = head; /* the newest entry stays */
    if (before <= was) {
        ferry_db_rollback(db);
        return FERRY_OK;
    }
    v = ferry_value_int(before);
    rc = ferry_db_prepare(db, "DELETE FROM _ferry_changes WHERE seq < ?", &st, err);
    if (!rc)
        rc = ferry_stmt_bind(st, 1, &v, err);
    if (!rc)
        rc = ferry_stmt_step(st, &row, err);
    if (!rc)
        *deleted = ferry_stmt_changes(st);
    ferry_stmt_free(st);
    st = NULL;
    if (!rc)
        rc = ferry_db_exec(db, "DELETE FROM _ferry_pruned", err);
    if (!rc)
        rc = ferry_db_prepare(db, "INSERT INTO _ferry_pruned(below) VALUES (?)", &st, err);
    if (!rc)
        rc = ferry_stmt_bind(st, 1, &v, err);
    if (!rc)
        rc = ferry_stmt_step(st, &row, err);
    ferry_stmt_free(st);
    if (rc)
        goto fail;
    return ferry_db_commit(db, err);
fail:
    ferry_db_rollback(db);
    return rc;
}

int ferry_capture_head(struct ferry_db *db, int64_t *head, struct ferry_error *err)
{
    return ferry_db_query_int(db, "SELECT COALESCE(max(seq), 0) FROM _ferry_changes", NULL, 0, head,
                              err);
}

/*
 * Why locks and not only snapshots: a transaction that inserts into the log
 * takes a RowExclusiveLock on _ferry_changes before its INSERT draws a seq
 * and keeps it until it ends, and PostgreSQL releases it only after the
 * transaction is visible as ended to new snapshots. So after reading the
 * sequence's last value S, the transactions that may still hold a seq at or
 * below S are exactly those holding such a lock then; once all of them are
 * gone, a new snapshot sees every seq <= S that will ever exist. Waiting for
 * the xids of pg_current_snapshot() instead would also wait for writers of
 * unrelated tables and databases, and pg_xact_status() can report a commit
 * a moment before new snapshots see it.
 */
static int64_t pg_last_safe; /* process-wide: ferry-src serves one database */
/* the unix time just before pg_last_safe was read: the log held every change committed by then */
static int64_t pg_last_safe_read;
static int64_t last_as_of; /* ferry_capture_last_as_of */

static int pg_lockers(struct ferry_db *db, const char *vxids, int64_t *n, char *out, size_t size,
                      struct ferry_error *err)
{
    static const char list_sql[] =
        "SELECT COALESCE(array_agg(DISTINCT l.virtualtransaction)::text, '{}') FROM "
        "pg_catalog.pg_locks l WHERE l.locktype = 'relation' AND l.database = (SELECT oid FROM "
        "pg_catalog.pg_database WHERE datname = current_database()) AND l.relation = "
        "'_ferry_changes'::regclass AND l.mode <> 'AccessShareLock' AND l.pid IS DISTINCT FROM "
        "pg_backend_pid()";
    static const char count_sql[] =
        "SELECT count(*) FROM pg_catalog.pg_locks l WHERE l.locktype = 'relation' AND "
        "l.relation = '_ferry_changes'::regclass AND l.mode <> 'AccessShareLock' AND "
        "l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = "
        "current_database()) AND l.virtualtransaction = ANY (CAST(? AS text[]))";
    struct ferry_stmt *st = NULL;
    struct ferry_value v;
    int row = 0;
    int rc;

    if (vxids) {
        v = ferry_value_text(vxids, strlen(vxids));
        return ferry_db_query_int(db, count_sql, &v, 1, n, err);
    }
    rc = ferry_db_prepare(db, list_sql, &st, err);
    if (!rc)
        rc = ferry_stmt_step(st, &row, err);
    if (!rc && row) {
        ferry_stmt_column(st, 0, &v);
        if (v.type != FERRY_TEXT || v.u.s.n >= size)
            /* thousands of writers: wait for all that are on the log now */
            snprintf(out, size, "%s", "*");
        else
            snprintf(out, size, "%.*s", (int)v.u.s.n, v.u.s.p);
    }
    ferry_stmt_free(st);
    return rc;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

int ferry_capture_safe_head(struct ferry_db *db, int64_t *safe, struct ferry_error *err)
{
    return ferry_capture_safe_head_after(db, -1, safe, err);
}

int ferry_capture_safe_head_after(struct ferry_db *db, int64_t after, int64_t *safe,
                                  struct ferry_error *err)
{
    char vxids[8192];
    int64_t s = 0, n = 0, t_read;
    long waited = 0, step = 1;
    int rc;

    *safe = INT64_MAX;
    t_read = (int64_t)time(NULL);
    last_as_of = t_read;
    if (ferry_db_engine(db) != FERRY_ENGINE_PG)
        return FERRY_OK;
    rc = ferry_db_query_int(db,
                            "SELECT COALESCE(pg_catalog.pg_sequence_last_value("
                            "pg_catalog.pg_get_serial_sequence('_ferry_changes', 'seq')::regclass)"
                            ", 0)",
                            NULL, 0, &s, err);
    if (!rc)
        rc = pg_lockers(db, NULL, NULL, vxids, sizeof(vxids), err);
    if (rc)
        return rc;
    for (;;) {
        if (strcmp(vxids, "*") == 0)
            rc = ferry_db_query_int(db,
                                    "SELECT count(*) FROM pg_catalog.pg_locks l WHERE "
                                    "l.locktype = 'relation' AND l.relation = "
                                    "'_ferry_changes'::regclass AND l.mode <> 'AccessShareLock' "
                                    "AND l.pid IS DISTINCT FROM pg_backend_pid()",
                                    NULL, 0, &n, err);
        else if (strcmp(vxids, "{}") != 0)
            rc = pg_lockers(db, vxids, &n, NULL, 0, err);
        else
            n = 0;
        if (rc)
            return rc;
        if (n == 0) {
            if (s >= pg_last_safe) {
                pg_last_safe = s;
                pg_last_safe_read = t_read;
            }
            *safe = s;
            return FERRY_OK;
        }
        /* a reader below the last safe point takes that at once */
        if (waited >= FERRY_CAPTURE_SAFE_WAIT_MS || (after >= 0 && pg_last_safe > after)) {
            if (waited < FERRY_CAPTURE_SAFE_WAIT_MS) {
                *safe = pg_last_safe;
                last_as_of = pg_last_safe_read;
                return FERRY_OK;
            }
            break;
        }
        sleep_ms(step);
        waited += step;
        step = step * 2 > 100 ? 100 : step * 2;
    }
    log_warn("change log: %" PRId64 " transaction(s) writing to it (%.200s) still open after %d "
             "ms; serving changes up to %" PRId64 " only, the rest once they end",
             n, vxids, FERRY_CAPTURE_SAFE_WAIT_MS, pg_last_safe);
    *safe = pg_last_safe;
    last_as_of = pg_last_safe_read;
    return FERRY_OK;
}

int64_t ferry_capture_last_as_of(void)
{
    return last_as_of;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The kinds of pg.c's value table, by format_type() name. */
/*
 * The log holds a key as its cast to text, which for two types is not the
 * type's output (what a copy wrote, and what a target of another engine
 * holds as text): character(n)'s cast drops the padding ('a' for 'a    '),
 * and inet's cast adds a host's mask ('10.0.0.1/32' for '10.0.0.1'). A
 * SQLite target, comparing text, then deleted nothing (probe). So here
 * they are given their output's form again.
 */
static int output_form(const char *type, struct ferry_value *v, struct ferry_buf *tmp,
                       struct ferry_error *err)
{
    const char *p = v->u.s.p;
    size_t n = v->u.s.n, at = tmp->len;

    if (type[0] == 'c') {
        long width = strtol(type + 10, NULL, 10);
        long chars = 0;

        for (size_t i = 0; i < n; i++)
            chars += ((unsigned char)p[i] & 0xC0) != 0x80; /* UTF-8 lead bytes */
        if (width <= chars || width > 10485760)
            return FERRY_OK;
        if (ferry_buf_add(tmp, p, n))
            return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        for (long i = chars; i < width; i++)
            if (ferry_buf_add(tmp, " ", 1))
                return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        v->u.s.p = tmp->data + at;
        v->u.s.n = tmp->len - at;
        return FERRY_OK;
    }
    /* inet: a whole-width mask is not written by the output */
    if (memchr(p, ':', n) ? n > 4 && memcmp(p + n - 4, "/128", 4) == 0
                          : n > 3 && memcmp(p + n - 3, "/32", 3) == 0)
        v->u.s.n = (size_t)((const char *)memchr(p, '/', n) - p);
    return FERRY_OK;
}

/*
 * The base type of type when it is a domain (its name as format_type
 * writes it: a key column's type is the domain's name), else type. Asked
 * of the server once per name a process meets (ALTER DOMAIN cannot change
 * a domain's base type); a failed query leaves type.
 */
static const char *base_type(struct ferry_db *db, const char *type)
{
    static struct {
        char name[64];
        char base[64];
    } seen[32];
    static size_t nseen;
    struct ferry_value arg = ferry_value_text(type, strlen(type));
    struct ferry_stmt *st = NULL;
    struct ferry_error e;
    int row = 0;
    size_t i;

    if (strlen(type) >= sizeof(seen[0].name))
        return type;
    for (i = 0; i < nseen; i++)
        if (strcmp(seen[i].name, type) == 0)
            return seen[i].base[0] ? seen[i].base : type;
    /* down a chain of domains: the last one's base, the nearest typmod given */
    if (ferry_db_prepare(db,
                         "WITH RECURSIVE d(base, mod, depth) AS (SELECT t.typbasetype, "
                         "t.typtypmod, 0 FROM pg_catalog.pg_type t WHERE t.oid = "
                         "pg_catalog.to_regtype(?) AND t.typtype = 'd' UNION ALL SELECT "
                         "t.typbasetype, t.typtypmod, d.depth + 1 FROM pg_catalog.pg_type t JOIN "
                         "d ON t.oid = d.base WHERE t.typtype = 'd' AND d.depth < 32) SELECT "
                         "pg_catalog.format_type((SELECT base FROM d ORDER BY depth DESC LIMIT "
                         "1), (SELECT mod FROM d WHERE mod <> -1 ORDER BY depth LIMIT 1)) WHERE "
                         "EXISTS (SELECT 1 FROM d)",
                         &st, &e) != FERRY_OK)
        return type;
    if (ferry_stmt_bind(st, 1, &arg, &e) == FERRY_OK && ferry_stmt_step(st, &row, &e) == FERRY_OK &&
        nseen < sizeof(seen) / sizeof(seen[0])) {
        struct ferry_value v;

        i = nseen++;
        snprintf(seen[i].name, sizeof(seen[i].name), "%s", type);
        seen[i].base[0] = '\0';
        if (row) {
            ferry_stmt_column(st, 0, &v);
            if (v.type == FERRY_TEXT && v.u.s.n < sizeof(seen[i].base)) {
                memcpy(seen[i].base, v.u.s.p, v.u.s.n);
                seen[i].base[v.u.s.n] = '\0';
            }
        }
    }
    ferry_stmt_free(st);
    return i < nseen && seen[i].base[0] ? seen[i].base : type;
}

int ferry_capture_key(struct ferry_db *db, const char *type, struct ferry_value *v,
                      struct ferry_buf *tmp, struct ferry_error *err)
{
    char text[64];
    char *end = NULL;

    if (ferry_db_engine(db) != FERRY_ENGINE_PG || v->type != FERRY_TEXT || !type)
        return FERRY_OK;
    /* the types PostgreSQL names itself are not domains: no question for them */
    if (!ferry_scope_pg_key_exact(type) && !pg_stable_key_type(type) && strcmp(type, "inet") != 0)
        type = base_type(db, type);
    if (strcmp(type, "bytea") == 0) {
        const char *p = v->u.s.p;
        size_t n = v->u.s.n, at;

        if (n < 2 || p[0] != '\\' || p[1] != 'x' || n % 2)
            goto bad;
        at = tmp->len;
        if (ferry_buf_add(tmp, p + 2, (n - 2) / 2))
            return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        for (size_t k = 2; k < n; k += 2) {
            int hi = hexval(p[k]), lo = hexval(p[k + 1]);

            if (hi < 0 || lo < 0)
                goto bad;
            tmp->data[at + (k - 2) / 2] = (char)(hi << 4 | lo);
        }
        v->type = FERRY_BLOB;
        v->u.s.p = tmp->data + at;
        v->u.s.n = (n - 2) / 2;
        return FERRY_OK;
    }
    if (strncmp(type, "character(", 10) == 0 || strcmp(type, "inet") == 0)
        return output_form(type, v, tmp, err);
    if (v->u.s.n >= sizeof(text))
        return FERRY_OK;
    memcpy(text, v->u.s.p, v->u.s.n);
    text[v->u.s.n] = '\0';
    if (strcmp(type, "smallint") == 0 || strcmp(type, "integer") == 0 ||
        strcmp(type, "bigint") == 0 || strcmp(type, "oid") == 0) {
        long long ll;

        errno = 0;
        ll = strtoll(text, &end, 10);
        if (errno || end == text || *end)
            goto bad;
        *v = ferry_value_int((int64_t)ll);
    } else if (strcmp(type, "boolean") == 0) {
        /* bool's cast to text says true/false, its output t/f */
        if (strcmp(text, "true") == 0 || strcmp(text, "t") == 0)
            *v = ferry_value_int(1);
        else if (strcmp(text, "false") == 0 || strcmp(text, "f") == 0)
            *v = ferry_value_int(0);
        else
            goto bad;
    } else if (strcmp(type, "real") == 0 || strcmp(type, "double precision") == 0) {
        double d = strcmp(type, "real") == 0 ? (double)strtof(text, &end) : strtod(text, &end);

        if (end == text || *end)
            goto bad;
        v->type = FERRY_FLOAT;
        v->u.f = d;
    }
    return FERRY_OK;
bad:
    return ferry_error_set(err, FERRY_EDATA, "change log holds a key that is not a %s value", type);
}
