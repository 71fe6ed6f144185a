/*
 * produce.c - ferry-src's producers: manifest, snapshot pages, change
 * batches for one tenant.
 *
 * The tenant's scope predicate is part of every row query, evaluated in the
 * same read transaction that reads the row: a row that is not the tenant's
 * at read time is never encoded, whatever the change log says. A changed
 * key whose row is gone from the tenant becomes a tombstone.
 */
#include "produce.h"

#include "../common/buf.h"
#include "../common/db/db.h"
#include "../common/keypack.h"
#include "../common/log.h"
#include "../common/scope.h"
#include "capture.h"
#include "digest.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SQL_MAX (1u << 20)

/*
 * Exported snapshots (PostgreSQL). A manifest request that asks for one
 * opens a holder: a connection of its own in a REPEATABLE READ transaction
 * that exported its snapshot (pg_export_snapshot), so that every page of
 * that copy reads the same moment (SET TRANSACTION SNAPSHOT, on the
 * producer's connection). A holder is closed once the last page of the last
 * table was served, after FERRY_SNAPSHOT_IDLE_SECS without a page, or when
 * one more is needed than FERRY_SNAPSHOT_HOLDERS (the least recently used
 * goes). It serves the tenant whose request opened it, no other.
 */
struct snap_holder {
    struct ferry_db *db; /* NULL: a free slot */
    char id[FERRY_SNAPSHOT_ID_MAX + 1];
    char *tenant; /* owned */
    time_t used;  /* opened, or its last page */
    int found;    /* a page saw the tenant's root row in this snapshot: every page will */
};

struct ferry_producer {
    struct ferry_db *db;
    struct ferry_scope *scope;
    struct ferry_producer_stats stats;
    size_t max_body;
    long batch_rows;
    const struct ferry_config *cfg; /* borrowed: [mask] expressions, the database URL */
    char **masked;                  /* the masked columns as "table.column", cfg->nmasks */
    struct snap_holder holders[FERRY_SNAPSHOT_HOLDERS];
    int lookups_set;     /* LOOKUPS_SQL is set in the read transaction of encode_current */
    size_t batch_soft;   /* a batch being encoded: its rows less the biggest under it (0: any) */
    int64_t fingerprint; /* ferry_scope_fingerprint() of what scope was read from */
};

static int owner_join_check(const struct ferry_scope *s, size_t t, struct ferry_buf *expr,
                            struct ferry_buf *joins);

/*
 * SELECT <all columns> FROM "t" AS "_ferry_s" [JOIN key map] WHERE <owner> = ?
 * The row-oriented form of the scope, where the set form (pred) would
 * rebuild its IN (...) lists on every execution. With keymap set, the rows
 * are walked through the key map's (tenant, key) index, so a page costs
 * what the tenant's rows cost, not the table's, and the hops to the root are
 * joins beside each row (owner_join_check): one lookup per hop, without the
 * cost of running a correlated subquery per row. Without it (one key at a
 * time), the owner expression.
 */
static int select_owned_sql(const struct ferry_producer *p, size_t t, int keymap,
                            struct ferry_buf *b);

/* The [mask] expression of table.col, or NULL. */
static const char *mask_of(const struct ferry_producer *p, const char *table, const char *col)
{
    for (size_t i = 0; p->cfg && i < p->cfg->nmasks; i++)
        if (strcmp(p->cfg->masks[i].table, table) == 0 && strcmp(p->cfg->masks[i].column, col) == 0)
            return p->cfg->masks[i].expr;
    return NULL;
}

/*
 * Every mask must name a column of a table in scope, and its expression
 * must compile in the query that serves the table: a typo is found at
 * start, not by the first snapshot (or, worse, by a value that leaks).
 */
/* FERRY_ECONFIG when a foreign key of a table of the scope references m's column. */
static int check_mask_referenced(const struct ferry_producer *p, const struct ferry_mask_conf *m,
                                 struct ferry_error *err)
{
    for (size_t t = 0; t < p->scope->ntables; t++) {
        const struct ferry_table_info *ti = &p->scope->tables[t].info;

        for (size_t f = 0; f < ti->nfks; f++)
            for (size_t c = 0; c < ti->fks[f].ncols; c++)
                if (strcmp(ti->fks[f].parent, m->table) == 0 &&
                    strcmp(ti->fks[f].pcols[c], m->column) == 0)
                    return ferry_error_set(err, FERRY_ECONFIG,
                                           "[mask] %s.%s: %s.%s references it and would carry "
                                           "its value unmasked; remove the mask from %s, or the "
                                           "foreign key",
                                           m->table, m->column, ti->name, ti->fks[f].cols[c],
                                           p->cfg->path ? p->cfg->path : "the config");
    }
    return FERRY_OK;
}

static int check_masks(struct ferry_producer *p, struct ferry_error *err)
{
    struct ferry_buf sql;
    int rc = FERRY_OK;

    ferry_buf_init(&sql, SQL_MAX);
    for (size_t i = 0; i < p->cfg->nmasks && !rc; i++) {
        const struct ferry_mask_conf *m = &p->cfg->masks[i];
        int t = ferry_scope_find(p->scope, m->table);
        struct ferry_stmt *st = NULL;
        int found = 0;

        if (t < 0) {
            rc = ferry_error_set(err, FERRY_ECONFIG,
                                 "[mask] %s.%s: table %s is not in the scope; fix %s", m->table,
                                 m->column, m->table, p->cfg->path ? p->cfg->path : "the config");
            break;
        }
        for (size_t c = 0; c < p->scope->tables[t].info.ncols; c++)
            if (strcmp(p->scope->tables[t].info.cols[c].name, m->column) == 0)
                found = p->scope->tables[t].info.cols[c].pk ? 2 : 1;
        if (!found) {
            rc = ferry_error_set(err, FERRY_ECONFIG,
                                 "[mask] %s.%s: table %s has no column %s (dropped or renamed?); "
                                 "fix or remove the [mask] line in %s",
                                 m->table, m->column, m->table, m->column,
                                 p->cfg->path ? p->cfg->path : "the config");
            break;
        }
        /*
         * Rows are addressed by their key (pages resume after the last key
         * sent, deltas and repair look keys up) and owned through their
         * foreign keys: a masked one would lose rows on the way.
         */
        for (size_t f = 0; f < p->scope->tables[t].info.nfks && found == 1; f++)
            for (size_t c = 0; c < p->scope->tables[t].info.fks[f].ncols; c++)
                if (strcmp(p->scope->tables[t].info.fks[f].cols[c], m->column) == 0 &&
                    ferry_scope_find(p->scope, p->scope->tables[t].info.fks[f].parent) >= 0)
                    found = 3;
        if (found > 1) {
            rc = ferry_error_set(err, FERRY_ECONFIG,
                                 "[mask] %s.%s: %s is %s, by which ferry finds and owns rows: a "
                                 "mask there would lose rows; remove it from %s",
                                 m->table, m->column, m->column,
                                 found == 2 ? "in the table's primary key"
                                            : "in a foreign key to the scope",
                                 p->cfg->path ? p->cfg->path : "the config");
            break;
        }
        /*
         * A foreign key of the scope that references the column carries its
         * value unmasked (invites.member_email REFERENCES members(email)),
         * and cannot be masked itself: the mask would hide nothing.
         */
        rc = check_mask_referenced(p, m, err);
        if (rc)
            break;
        ferry_buf_reset(&sql);
        rc = select_owned_sql(p, (size_t)t, 0, &sql);
        if (!rc)
            rc = ferry_buf_adds(&sql, " LIMIT 0");
        if (rc) {
            rc = ferry_error_set(err, rc, "cannot build SQL");
            break;
        }
        rc = ferry_db_prepare(p->db, sql.data, &st, err);
        ferry_stmt_free(st);
        if (rc) {
            char why[FERRY_ERRMSG_MAX];

            memcpy(why, err->msg, sizeof(why));
            rc = ferry_error_set(err, FERRY_ECONFIG, "[mask] %s.%s = %s: %s", m->table, m->column,
                                 m->expr, why);
        }
    }
    ferry_buf_release(&sql);
    return rc;
}

/*
 * Warn when tables of the scope have never been analyzed on a PostgreSQL
 * source (reltuples -1, from PostgreSQL 14): ferry's pages, owner checks and
 * digests join them, and are planned from guesses. Autovacuum analyzes a
 * table only after 50 rows plus a tenth of it have changed, so a small
 * table written once (a team's 20 channels) never is; guessed at 5 of
 * its rows, verify's owner check of the reactions took twice as long on a
 * target. A warning only: ferry does not write the application's statistics.
 */
static void warn_unanalyzed(struct ferry_producer *p)
{
    struct ferry_buf names;
    struct ferry_error err;
    size_t n = 0;

    ferry_buf_init(&names, 1024);
    /* advisory: a table the check could not read is not a reason to stop serving */
    if (ferry_scope_unanalyzed(p->db, p->scope, &names, &n, &err) == FERRY_OK && n)
        log_warn("source: %zu table%s of the scope never analyzed (%s): ferry's reads of them "
                 "are planned from guesses and can be several times slower; run ANALYZE on %s "
                 "on the source",
                 n, n == 1 ? "" : "s", names.data, n == 1 ? "it" : "them");
    ferry_buf_release(&names);
}

/* Whether a [mask] names a column of table. */
static int table_masked(const struct ferry_producer *p, const char *table)
{
    for (size_t i = 0; p->cfg && i < p->cfg->nmasks; i++)
        if (strcmp(p->cfg->masks[i].table, table) == 0)
            return 1;
    return 0;
}

/*
 * Say what a new reading of the scope changed: tables that joined or left
 * it, columns that came or went. A new column of a table with [mask]s is
 * not served until the operator decided (FERRY_ECONFIG): such a config
 * keeps some of the table's values from leaving the source, and the
 * application's new column may well be another of them. A restart of serve
 * (with a [mask] for it, or without) is that decision.
 */
static int scope_changes(const struct ferry_producer *p, const struct ferry_scope *old,
                         const struct ferry_scope *s, struct ferry_error *err)
{
    int rc = FERRY_OK;

    for (size_t t = 0; t < s->ntables; t++) {
        const struct ferry_table_info *ti = &s->tables[t].info;
        int o = ferry_scope_find(old, ti->name);

        /*
         * With [mask]s, a table new to the scope waits for the operator as a
         * new column of a masked table does: a partition detached from a
         * masked table, or a new table holding the same values, would
         * otherwise be served as it is.
         */
        if (o < 0) {
            log_warn("table %s joined the scope", ti->name);
            if (!rc && p->cfg->nmasks && !table_masked(p, ti->name))
                rc = ferry_error_set(err, FERRY_ECONFIG,
                                     "table %s joined the scope and there are [mask]s, none for "
                                     "it: add them to %s and restart ferry-src serve, or restart "
                                     "it to serve the table as it is",
                                     ti->name, p->cfg->path ? p->cfg->path : "the config");
            continue;
        }
        for (size_t c = 0; c < ti->ncols; c++) {
            const char *col = ti->cols[c].name;

            if (ferry_table_colidx(&old->tables[o].info, col) >= 0)
                continue;
            log_warn("table %s has a new column %s", ti->name, col);
            if (!rc && table_masked(p, ti->name) && !mask_of(p, ti->name, col))
                rc = ferry_error_set(err, FERRY_ECONFIG,
                                     "table %s has a new column %s and [mask]s but none for it: "
                                     "add one to %s and restart ferry-src serve, or restart it "
                                     "to serve the column as it is",
                                     ti->name, col, p->cfg->path ? p->cfg->path : "the config");
        }
        for (size_t c = 0; c < old->tables[o].info.ncols; c++)
            if (ferry_table_colidx(ti, old->tables[o].info.cols[c].name) < 0)
                log_info("table %s no longer has column %s", ti->name,
                         old->tables[o].info.cols[c].name);
    }
    for (size_t t = 0; t < old->ntables; t++)
        if (ferry_scope_find(s, old->tables[t].info.name) < 0)
            log_warn("table %s left the scope", old->tables[t].info.name);
    return rc;
}

/*
 * Read the scope (again): the tables, then their fingerprint, checked by a
 * second reading (a schema changed between the two is read again), then
 * capture on every table and the masks. On failure p keeps what it had.
 */
static int read_scope(struct ferry_producer *p, struct ferry_error *err)
{
    struct ferry_scope *old = p->scope;
    int64_t old_fp = p->fingerprint;
    int rc = FERRY_OK;

    p->scope = NULL;
    for (int tries = 0; tries < 3; tries++) {
        struct ferry_scope *s = NULL;
        int64_t fp = 0, again = 0;

        rc = ferry_scope_resolve_serving(p->db, p->cfg, &s, err);
        if (!rc)
            rc = ferry_scope_fingerprint(p->db, s, &fp, err);
        ferry_scope_free(p->scope);
        p->scope = s;
        if (!rc)
            rc = ferry_scope_resolve_serving(p->db, p->cfg, &s, err);
        if (!rc) {
            ferry_scope_free(p->scope);
            p->scope = s;
            rc = ferry_scope_fingerprint(p->db, s, &again, err);
        }
        p->fingerprint = fp;
        if (rc || fp == again)
            break;
    }
    if (!rc)
        rc = ferry_capture_check(p->db, p->scope, err);
    if (!rc)
        rc = check_masks(p, err);
    if (!rc && old)
        rc = scope_changes(p, old, p->scope, err);
    if (rc) {
        /* the next request finds the change again, and is refused again */
        ferry_scope_free(p->scope);
        p->scope = old;
        p->fingerprint = old_fp;
    } else {
        ferry_scope_free(old);
    }
    return rc;
}

/*
 * The application may change its schema while ferry-src serves (a column
 * added and filled, a table that now references the scope). A request
 * served from the scope as it was would send rows without the new column,
 * and verify would compare the columns both sides knew of and say equal.
 * So after each request the fingerprint is asked again (after: a schema
 * change that committed while the request read waited for its reads, which
 * hold the tables' locks); when it moved, the answer is thrown away, the
 * scope read again, and the request served again from it (at most twice).
 * A snapshot page that was served is not checked (a page per few thousand
 * rows, 0.4 ms a check on PostgreSQL): a column added during a copy has
 * only values written after it was added, which come with the deltas, and
 * the next manifest names it.
 */
static int serve_request(struct ferry_producer *p, const struct ferry_request *req, char **out,
                         size_t *len, struct ferry_error *err);

/*
 * A new connection in place of one the server dropped (a restart, a
 * failover): every request reads, so the one that found it gone is served
 * again on the new one. The scope is read again too (the server may have
 * come back with another schema). The snapshot holders' connections went
 * with the server; their next page says the snapshot is gone, and the
 * target reads pages from snapshots of their own.
 */
static int reconnect(struct ferry_producer *p, struct ferry_error *err)
{
    int rc = ferry_db_reconnect(&p->db, p->cfg->source.database, 0, err);

    p->lookups_set = 0;
    return rc ? rc : read_scope(p, err);
}

int ferry_produce(struct ferry_producer *p, const struct ferry_request *req, char **out,
                  size_t *len, struct ferry_error *err)
{
    int lost = 0;

    for (int tries = 0;; tries++) {
        struct ferry_error e2;
        int64_t fp = 0;
        int rc = serve_request(p, req, out, len, err);
        int frc = FERRY_OK;

        if (!rc || ferry_db_alive(p->db)) {
            if (tries >= 2 || (!rc && req->type == FERRY_REQ_SNAPSHOT))
                return rc;
            frc = ferry_scope_fingerprint(p->db, p->scope, &fp, &e2);
            if (frc == FERRY_OK && fp == p->fingerprint)
                return rc;
        }
        /*
         * The connection gone (a restart, a failover), found by the request
         * or only by the fingerprint after it (the request's failure was
         * elsewhere, a snapshot holder's): connect again and serve anew.
         */
        if ((rc || frc) && !ferry_db_alive(p->db) && !lost) {
            free(*out);
            *out = NULL;
            *len = 0;
            lost = 1;
            rc = reconnect(p, err);
            if (rc)
                return rc;
            continue;
        }
        if (tries >= 2)
            return rc;
        free(*out);
        *out = NULL;
        *len = 0;
        log_info("the schema of the source's tables changed; reading the scope again");
        rc = read_scope(p, err);
        if (rc)
            return rc;
    }
}

int ferry_producer_open(const struct ferry_config *cfg, struct ferry_producer **out,
                        struct ferry_error *err)
{
    struct ferry_producer *p = calloc(1, sizeof(*p));
    int rc;

    *out = NULL;
    if (!p)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
    p->max_body = ferry_config_max_message(cfg);
    p->batch_rows = cfg->source.batch_rows > 0 ? cfg->source.batch_rows : 5000;
    rc = ferry_db_open(cfg->source.database, 0, &p->db, err);
    if (rc)
        goto fail;
    p->cfg = cfg;
    rc = read_scope(p, err);
    if (rc)
        goto fail;
    /* what a manifest says is masked, when a target asks */
    p->masked = cfg->nmasks ? calloc(cfg->nmasks, sizeof(*p->masked)) : NULL;
    if (cfg->nmasks && !p->masked)
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory");
    for (size_t i = 0; i < cfg->nmasks && !rc; i++) {
        size_t n = strlen(cfg->masks[i].table) + strlen(cfg->masks[i].column) + 2;

        p->masked[i] = malloc(n);
        if (!p->masked[i])
            rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        else
            snprintf(p->masked[i], n, "%s.%s", cfg->masks[i].table, cfg->masks[i].column);
    }
    if (rc)
        goto fail;
    warn_unanalyzed(p);
    *out = p;
    return FERRY_OK;
fail:
    ferry_producer_close(p);
    return rc;
}

/* Close h's transaction and connection; the slot is free again. */
static void holder_close(struct ferry_producer *p, struct snap_holder *h, const char *why)
{
    if (!h->db)
        return;
    if (why)
        log_info("snapshot %s of tenant %.64s released: %s", h->id, h->tenant, why);
    ferry_db_close(h->db); /* the server rolls the transaction back */
    free(h->tenant);
    memset(h, 0, sizeof(*h));
    p->stats.snapshots--;
}

void ferry_producer_tick(struct ferry_producer *p, time_t now)
{
    for (size_t i = 0; p && i < FERRY_SNAPSHOT_HOLDERS; i++)
        if (p->holders[i].db && now - p->holders[i].used >= FERRY_SNAPSHOT_IDLE_SECS)
            holder_close(p, &p->holders[i], "no page asked for it in 5 minutes");
}

/*
 * The syntax of the ids pg_export_snapshot() returns: "%08X-%08X-%d"
 * (PostgreSQL 10 and later), "%08X-%d" before. Checked on every id before it
 * is looked up, although only the holder's own copy ever goes into SQL.
 */
static int pg_snapshot_id_ok(const char *id)
{
    int groups = 0;

    for (;;) {
        size_t n = 0;

        while (n < 8 && ((id[n] >= '0' && id[n] <= '9') || (id[n] >= 'A' && id[n] <= 'F')))
            n++;
        if (n != 8 || id[n] != '-')
            break;
        id += 9;
        groups++;
        if (groups == 2)
            break;
    }
    if (groups < 1)
        return 0;
    for (size_t n = 0;; n++) {
        if (id[n] == '\0')
            return n > 0;
        if (id[n] < '0' || id[n] > '9' || n == 10)
            return 0;
    }
}

/*
 * Open a holder for tenant: a new connection, the change log's safe head
 * (*safe, taken before the snapshot, see ferry_capture_safe_head), then the
 * exported snapshot, left open on h->db for the manifest's own reads.
 */
static int holder_open(struct ferry_producer *p, const char *tenant, struct snap_holder **out,
                       int64_t *safe, struct ferry_error *err)
{
    struct snap_holder *h = NULL;
    struct ferry_stmt *st = NULL;
    struct ferry_value v;
    int row = 0;
    int rc;

    *out = NULL;
    ferry_producer_tick(p, time(NULL));
    for (size_t i = 0; i < FERRY_SNAPSHOT_HOLDERS; i++) {
        struct snap_holder *c = &p->holders[i];

        if (!c->db) {
            h = c;
            break;
        }
        if (!h || c->used < h->used)
            h = c;
    }
    if (h->db)
        holder_close(p, h, "more copies started than ferry-src keeps snapshots for (8)");
    rc = ferry_db_open(p->cfg->source.database, 0, &h->db, err);
    if (rc)
        return rc;
    p->stats.snapshots++;
    h->tenant = strdup(tenant);
    if (!h->tenant) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        goto out;
    }
    h->used = time(NULL);
    rc = ferry_capture_safe_head(h->db, safe, err);
    /* named, so that a freeze does not wait for it: it only reads (freeze.c) */
    if (!rc)
        rc = ferry_db_exec(h->db, "SET application_name TO '" FERRY_SNAPSHOT_HOLDER "'", err);
    if (!rc)
        rc = ferry_db_exec(h->db, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", err);
    if (!rc)
        rc = ferry_db_prepare(h->db, "SELECT pg_catalog.pg_export_snapshot()", &st, err);
    if (!rc)
        rc = ferry_stmt_step(st, &row, err);
    if (rc)
        goto out;
    if (row)
        ferry_stmt_column(st, 0, &v);
    if (!row || v.type != FERRY_TEXT || v.u.s.n >= sizeof(h->id)) {
        rc = ferry_error_set(err, FERRY_EDB, "pg_export_snapshot() returned no snapshot id");
        goto out;
    }
    memcpy(h->id, v.u.s.p, v.u.s.n);
    h->id[v.u.s.n] = '\0';
    if (!pg_snapshot_id_ok(h->id) || !ferry_snapshot_id_ok(h->id))
        rc = ferry_error_set(err, FERRY_EDB, "pg_export_snapshot() returned an id of unknown form");
out:
    ferry_stmt_free(st);
    if (rc)
        holder_close(p, h, NULL);
    else
        *out = h;
    return rc;
}

/*
 * The holder that req names: FERRY_EPROTO for an id of the wrong form,
 * FERRY_ESNAPGONE when none holds it (closed, or the source restarted),
 * FERRY_EFORBIDDEN when another tenant's request opened it.
 */
static int holder_find(struct ferry_producer *p, const struct ferry_request *req,
                       struct snap_holder **out, struct ferry_error *err)
{
    *out = NULL;
    if (!pg_snapshot_id_ok(req->snapshot))
        return ferry_error_set(err, FERRY_EPROTO,
                               "snapshot id \"%.64s\" is not one this source hands out",
                               req->snapshot);
    ferry_producer_tick(p, time(NULL));
    for (size_t i = 0; i < FERRY_SNAPSHOT_HOLDERS; i++) {
        struct snap_holder *h = &p->holders[i];

        if (!h->db || strcmp(h->id, req->snapshot) != 0)
            continue;
        if (strcmp(h->tenant, req->tenant) != 0)
            return ferry_error_set(err, FERRY_EFORBIDDEN,
                                   "snapshot %s belongs to another tenant's copy", h->id);
        *out = h;
        return FERRY_OK;
    }
    return ferry_error_set(err, FERRY_ESNAPGONE,
                           "snapshot %s is gone (idle over 5 minutes, or ferry-src restarted); "
                           "read the pages from snapshots of their own",
                           req->snapshot);
}

void ferry_producer_close(struct ferry_producer *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < FERRY_SNAPSHOT_HOLDERS; i++)
        holder_close(p, &p->holders[i], NULL);
    for (size_t i = 0; p->masked && i < p->cfg->nmasks; i++)
        free(p->masked[i]);
    free(p->masked);
    ferry_scope_free(p->scope);
    ferry_db_close(p->db);
    free(p);
}

const struct ferry_producer_stats *ferry_producer_stats(const struct ferry_producer *p)
{
    return &p->stats;
}

int ferry_producer_head(struct ferry_producer *p, int64_t *head, struct ferry_error *err)
{
    return ferry_capture_head(p->db, head, err);
}

/* Bind the tenant to the first n placeholders, starting at 1. */
static int bind_tenant(struct ferry_stmt *st, const struct ferry_value *tenant, int n,
                       struct ferry_error *err)
{
    for (int i = 1; i <= n; i++) {
        int rc = ferry_stmt_bind(st, i, tenant, err);

        if (rc)
            return rc;
    }
    return FERRY_OK;
}

/* SELECT <all columns of the row "_ferry_s", masked ones masked> */
static int select_cols(const struct ferry_producer *p, size_t t, struct ferry_buf *b)
{
    const struct ferry_table_info *ti = &p->scope->tables[t].info;
    int rc = ferry_buf_adds(b, "SELECT ");

    for (size_t i = 0; i < ti->ncols && !rc; i++) {
        const char *mask = mask_of(p, ti->name, ti->cols[i].name);

        if (i)
            rc = ferry_buf_adds(b, ", ");
        /*
         * A masked column is the operator's expression over the row's own
         * columns, named bare: the derived table gives them their names
         * whatever else this query joins. The real value never leaves.
         */
        if (!rc && mask) {
            rc = ferry_scope_mask_expr(b, ti, mask);
            continue;
        }
        if (!rc)
            rc = ferry_buf_adds(b, "\"_ferry_s\".");
        if (!rc)
            rc = ferry_buf_add_ident(b, ti->cols[i].name);
    }
    return rc;
}

static int select_owned_sql(const struct ferry_producer *p, size_t t, int keymap,
                            struct ferry_buf *b)
{
    const struct ferry_scope *s = p->scope;
    const struct ferry_table_info *ti = &s->tables[t].info;
    int rc = select_cols(p, t, b);

    if (!rc && keymap) {
        rc = ferry_buf_adds(b, " FROM ");
        if (!rc)
            rc = ferry_scope_keymap(b, ti->name);
        if (!rc)
            rc = ferry_buf_adds(b, " AS \"_ferry_km\" JOIN ");
        if (!rc)
            rc = ferry_buf_add_ident(b, ti->name);
        if (!rc)
            rc = ferry_buf_adds(b, " AS \"_ferry_s\" ON ");
        if (!rc)
            rc = ferry_scope_keymatch(b, ti, "\"_ferry_s\".", "\"_ferry_km\".");
        if (!rc)
            rc = owner_join_check(s, t, NULL, b);
        if (!rc)
            rc = ferry_buf_adds(b, " WHERE \"_ferry_km\".\"_ferry_tenant\" = ? AND ");
        if (!rc)
            rc = owner_join_check(s, t, b, NULL);
        return rc;
    } else {
        if (!rc)
            rc = ferry_buf_adds(b, " FROM ");
        if (!rc)
            rc = ferry_buf_add_ident(b, ti->name);
        if (!rc)
            rc = ferry_buf_adds(b, " AS \"_ferry_s\" WHERE ");
    }
    if (!rc)
        rc = ferry_scope_owner(s, t, "\"_ferry_s\".", b);
    if (!rc)
        rc = ferry_buf_adds(b, " = ?");
    return rc;
}

/*
 * *out: the uuid in, as PostgreSQL writes it (lower case, 8-4-4-4-12),
 * from any form its input takes (upper case, braces, hyphens anywhere or
 * none); 0 when it is one.
 */
static int uuid_text(const char *in, char out[37])
{
    size_t n = 0;

    for (const char *c = in; *c; c++) {
        if (*c == '-' || (*c == '{' && c == in) || (*c == '}' && !c[1]))
            continue;
        if (!isxdigit((unsigned char)*c) || n == 32)
            return -1;
        out[n + (n >= 8) + (n >= 12) + (n >= 16) + (n >= 20)] = (char)tolower((unsigned char)*c);
        n++;
    }
    if (n != 32)
        return -1;
    out[8] = out[13] = out[18] = out[23] = '-';
    out[36] = '\0';
    return 0;
}

static int tenant_of(struct ferry_producer *p, struct ferry_db *db, const struct ferry_request *req,
                     struct ferry_value *tv, struct ferry_error *err)
{
    const struct ferry_table_info *ri = ferry_scope_root(p->scope);
    const char *type = ri->cols[ferry_table_pkcol(ri, 0)].type;
    int64_t n = 0;
    char uuid[37];
    int rc;

    rc = ferry_scope_tenant(p->scope, req->tenant, tv, err);
    if (rc)
        return rc;
    /*
     * PostgreSQL reads a uuid in many forms, and a target of another engine
     * compares the text the copy wrote (lower case): a tenant given in
     * upper case was copied, then every later sync failed (probe).
     */
    if (ferry_db_engine(db) == FERRY_ENGINE_PG && type && strcmp(type, "uuid") == 0 &&
        uuid_text(req->tenant, uuid) == 0 && strcmp(uuid, req->tenant) != 0)
        return ferry_error_set(err, FERRY_ENOTFOUND,
                               "tenant %.64s: the source writes this uuid %s; write it so in "
                               "[target] tenant and in ferry-src keys add",
                               req->tenant, uuid);
    rc = ferry_scope_tenant_rows(db, p->scope, tv, &n, err);
    if (!rc && n == 0)
        rc = ferry_error_set(err, FERRY_ENOTFOUND, "tenant %.64s not found in %s", req->tenant,
                             ri->name);
    return rc;
}

static char engine_pg[] = "postgresql";
static char engine_sqlite[] = "sqlite";

/*
 * A target whose mark (after) is below a prune would miss the
 * changes pruned past it without knowing, whether or not its tenant has
 * changes left after them: refused, by the manifest (which counts what is
 * pending) as by the changes.
 */
static int check_pruned(struct ferry_db *db, int64_t after, struct ferry_error *err)
{
    int64_t below = 0;
    int rc;

    rc = ferry_capture_pruned(db, &below, err);
    if (!rc && after < below - 1)
        rc = ferry_error_set(err, FERRY_EDATA,
                             "the source's change log was pruned below seq %lld, past this "
                             "target's mark %lld: the changes in between are gone; copy again "
                             "into a fresh state directory, then ferry-dst verify --repair",
                             (long long)below, (long long)after);
    return rc;
}

static int produce_changes(struct ferry_producer *p, const struct ferry_request *req, int64_t limit,
                           char **out, size_t *len, struct ferry_error *err);

/* A change batch for req (after, limit): one over the body limit is retried with fewer changes. */
static int changes_batch(struct ferry_producer *p, const struct ferry_request *req, char **out,
                         size_t *len, struct ferry_error *err)
{
    int64_t limit = req->limit < p->batch_rows ? req->limit : p->batch_rows;
    int rc;

    for (;;) {
        rc = produce_changes(p, req, limit, out, len, err);
        if (rc != FERRY_ETOOBIG || limit == 1)
            return rc;
        limit = limit / 2;
    }
}

static int produce_manifest(struct ferry_producer *p, const struct ferry_request *req, char **out,
                            size_t *len, struct ferry_error *err)
{
    struct ferry_manifest m;
    struct ferry_table_info *tables = NULL;
    struct ferry_value tv;
    struct ferry_buf sql;
    struct snap_holder *h = NULL;
    struct ferry_db *db = p->db;
    struct ferry_request creq;
    char *batch = NULL;
    size_t blen = 0;
    int64_t safe = 0;
    int rc;

    memset(&m, 0, sizeof(m));
    ferry_buf_init(&sql, SQL_MAX);
    /*
     * The copy starts from this head: below it, every change must be
     * visible to the copy. With an exported snapshot, the manifest is read
     * in it too, so that head and counts are those of the pages' moment.
     */
    if (req->want_snapshot && ferry_db_engine(p->db) == FERRY_ENGINE_PG) {
        rc = holder_open(p, req->tenant, &h, &safe, err);
        if (rc)
            return rc;
        db = h->db;
    } else {
        rc = ferry_capture_safe_head(p->db, &safe, err);
        if (!rc)
            rc = ferry_db_begin_read(p->db, err);
        if (rc)
            return rc;
    }
    rc = tenant_of(p, db, req, &tv, err);
    if (rc)
        goto out;
    rc = ferry_capture_head(db, &m.head, err);
    if (rc)
        goto out;
    if (m.head > safe)
        m.head = safe;
    m.pending = -1;
    rc = req->after >= 0 ? check_pruned(db, req->after, err) : FERRY_OK;
    if (rc)
        goto out;
    if (req->after >= 0) {
        struct ferry_value args[2] = {tv, ferry_value_int(req->after)};

        rc = ferry_db_query_int(db,
                                "SELECT count(*) FROM _ferry_changes WHERE tenant = ? AND seq > ?",
                                args, 2, &m.pending, err);
        if (rc)
            goto out;
    }
    /* Shallow copies of the scope's tables: counts filled per request. */
    tables = calloc(p->scope->ntables, sizeof(*tables));
    if (!tables) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t t = 0; t < p->scope->ntables; t++) {
        tables[t] = p->scope->tables[t].info;
        tables[t].rows = -1;
        if (req->counts) {
            int npred = 0;
            struct ferry_stmt *st = NULL;
            int row = 0;

            ferry_buf_reset(&sql);
            /*
             * A count for progress and dry runs: the key map's (tenant, key)
             * index answers it without the scope's joins (on SQLite those
             * build the parents' keys into a temporary index first: 0.6 s
             * of a 1.2M-row team's copy, against 0.04 s here).
             */
            npred = 1;
            if (ferry_buf_adds(&sql, "SELECT count(*) FROM ") ||
                ferry_scope_keymap(&sql, tables[t].name) ||
                ferry_buf_adds(&sql, " WHERE \"_ferry_tenant\" = ?")) {
                rc = ferry_error_set(err, FERRY_ENOMEM, "cannot build SQL");
                goto out;
            }
            rc = ferry_db_prepare(db, sql.data, &st, err);
            if (!rc)
                rc = bind_tenant(st, &tv, npred, err);
            if (!rc)
                rc = ferry_stmt_step(st, &row, err);
            if (!rc && row) {
                struct ferry_value v;

                ferry_stmt_column(st, 0, &v);
                tables[t].rows = v.type == FERRY_INT ? v.u.i : -1;
            }
            ferry_stmt_free(st);
            if (rc)
                goto out;
        }
    }
    m.tenant = req->tenant;
    m.root = ferry_scope_root(p->scope)->name;
    m.tables = tables;
    m.ntables = p->scope->ntables;
    /* the target reads the declared types by the source's engine (apply.c) */
    m.engine = ferry_db_engine(p->db) == FERRY_ENGINE_PG ? engine_pg : engine_sqlite;
    m.snapshot = h ? h->id : NULL;
    /* when the log held every change up to the head: the target's lag counts from it */
    if (req->as_of)
        m.as_of = ferry_capture_last_as_of();
    /* which columns are masked, for a target that keeps its copy in step when they change */
    if (req->masks && p->masked) {
        m.masked = p->masked;
        m.nmasked = p->cfg->nmasks;
    }
    /*
     * The first change batch, asked for with the manifest (a delta run
     * saves a round trip): read after the manifest's transaction, as a
     * changes request right after it would be.
     */
    if (req->with_changes > 0 && m.pending != 0) {
        if (!h)
            ferry_db_rollback(p->db);
        memset(&creq, 0, sizeof(creq));
        creq.type = FERRY_REQ_CHANGES;
        creq.tenant = req->tenant;
        creq.after = req->after;
        creq.limit = req->with_changes;
        rc = changes_batch(p, &creq, &batch, &blen, err);
        if (rc == FERRY_ETOOBIG) {
            /* the manifest goes alone; the changes request says what is wrong */
            ferry_error_clear(err);
            rc = FERRY_OK;
        }
        if (rc)
            goto out;
        m.changes = batch;
        m.nchanges = blen;
    }
    rc = ferry_manifest_encode(&m, out, len, err);
    if (!rc && m.changes && *len > p->max_body) {
        /* a batch near the body limit does not fit beside the manifest: it comes on its own */
        free(*out);
        *out = NULL;
        m.changes = NULL;
        m.nchanges = 0;
        rc = ferry_manifest_encode(&m, out, len, err);
    }
    if (!rc && h)
        log_info("snapshot %s exported for a copy of tenant %.64s (head %" PRId64 ")", h->id,
                 req->tenant, m.head);
out:
    if (!h)
        ferry_db_rollback(p->db);
    else if (rc)
        holder_close(p, h, NULL);
    free(batch);
    free(tables);
    ferry_buf_release(&sql);
    return rc;
}

/*
 * The scope check of a snapshot row "_ferry_s" as joins, PostgreSQL only:
 * with expr set, appends to expr the output column "<root key> = ?" (the
 * tenant), true when every hop up the foreign keys to the root exists and
 * the root is the tenant, as the owner expression says; with expr NULL,
 * appends to joins the LEFT JOINs that column needs. Joins let the planner
 * hash the parents or look them up once per page, where the owner
 * expression's subqueries ran again for each row. A hop through a table
 * scoped by a predicate ends with that table's owner expression; a hop to
 * the root by a one-column key is no join but a comparison with the root
 * row's key (one index lookup fewer per row read).
 */
static int owner_join_check(const struct ferry_scope *s, size_t t, struct ferry_buf *expr,
                            struct ferry_buf *joins)
{
    char ctx[32] = "\"_ferry_s\".";
    size_t cur = t;
    int rc = FERRY_OK;

    while (!rc && cur != 0 && !s->tables[cur].info.scope_sql) {
        const struct ferry_scope_table *st = &s->tables[cur];
        const struct ferry_fkey *fk = &st->info.fks[st->fk];
        char alias[32];

        if (st->parent == 0 && fk->ncols == 1) {
            /*
             * The hop to the root is no join: the foreign key equals the
             * key of the tenant's root row, looked up once per statement
             * (the root row must exist and be the tenant's, as joined).
             */
            if (!expr)
                return rc;
            rc = ferry_buf_adds(expr, "(");
            if (!rc)
                rc = ferry_scope_root_hop(s, ctx, fk, expr);
            if (!rc)
                rc = ferry_buf_adds(expr, ")");
            return rc;
        }
        snprintf(alias, sizeof(alias), "\"_ferry_j%d\".", s->tables[st->parent].depth);
        if (!expr) {
            rc = ferry_buf_adds(joins, " LEFT JOIN ");
            if (!rc)
                rc = ferry_buf_add_ident(joins, s->tables[st->parent].info.name);
            if (!rc)
                rc = ferry_buf_addf(joins, " AS %.*s ON ", (int)strlen(alias) - 1, alias);
            for (size_t i = 0; i < fk->ncols && !rc; i++) {
                rc = ferry_buf_addf(joins, "%s%s", i ? " AND " : "", alias);
                if (!rc)
                    rc = ferry_buf_add_ident(joins, fk->pcols[i]);
                if (!rc)
                    rc = ferry_buf_addf(joins, " = %s", ctx);
                if (!rc)
                    rc = ferry_buf_add_ident(joins, fk->cols[i]);
            }
        }
        snprintf(ctx, sizeof(ctx), "%s", alias);
        cur = (size_t)st->parent;
    }
    if (rc || !expr)
        return rc;
    rc = ferry_buf_adds(expr, "(");
    if (!rc)
        rc = ferry_scope_owner(s, cur, ctx, expr);
    if (!rc)
        rc = ferry_buf_adds(expr, ") = ?");
    return rc;
}

/*
 * PostgreSQL's snapshot page, driven by the key map:
 *   SELECT <cols>, <scope check> = ?, "_ferry_k".<key> FROM (SELECT <key>
 *   FROM the key map WHERE "_ferry_tenant" = ?
 * to which the caller appends AND (k) > (?) ORDER BY k LIMIT n, and
 * pg_snapshot_end ) AS "_ferry_k" LEFT JOIN "t" AS "_ferry_s" ON the key
 * LEFT JOIN <the scope check's parents> ORDER BY "_ferry_k".<key>.
 * The inner query is one range of the key map's (tenant, key) index, at
 * most n keys: whatever the tenant's share of the table, a page costs its
 * own rows, and the planner knows the outer side is small (with hash and
 * merge joins off for the page, see produce_snapshot, it cannot mistake a
 * three-column key for a handful of rows and hash the whole table). The
 * read-time scope check (owner_join_check: the hops to the root on the
 * tables as this snapshot sees them) is an output column: a row that fails
 * it, or whose key the key map holds but the table does not, is read and
 * not sent; the key map's key (the last columns) is where the next page
 * starts. With by_table (the tenant is most of the table, pg_tenant_is_big)
 * the inner query is instead
 *   SELECT "_ferry_s".* FROM "t" AS "_ferry_s" <the check's LEFT JOINs>
 *   WHERE <the check>
 * a range of the table's own key index, no key map probe per row, the
 * other tenants' rows in it read and skipped there: the LIMIT counts the
 * tenant's rows alone, and the last key of a page, where the next one
 * starts, is always the tenant's own (a key of another tenant's row must
 * not leave the source, not even as where to resume). The check column is
 * then true. *npred: placeholders before the keyset condition, all the
 * tenant; the keyset condition names the key "_ferry_s".<key> there, bare
 * in the key map's form.
 */
static int pg_snapshot_sql(const struct ferry_producer *p, size_t t, int by_table,
                           struct ferry_buf *b, int *npred)
{
    const struct ferry_table_info *ti = &p->scope->tables[t].info;
    struct ferry_buf joins;
    int rc = 0;

    ferry_buf_init(&joins, SQL_MAX);
    *npred = by_table ? 1 : 2;
    rc = select_cols(p, t, b);
    if (!rc)
        rc = ferry_buf_adds(b, ", ");
    if (!rc && by_table)
        rc = ferry_buf_adds(b, "true, ");
    else if (!rc)
        rc = owner_join_check(p->scope, t, b, &joins);
    if (!rc && !by_table)
        rc = ferry_buf_adds(b, ", ");
    if (!rc)
        rc = ferry_scope_keylist(p->scope, t, by_table ? "\"_ferry_s\"." : "\"_ferry_k\".", b);
    if (by_table) {
        if (!rc)
            rc = ferry_buf_adds(b, " FROM (SELECT \"_ferry_s\".* FROM ");
        if (!rc)
            rc = ferry_buf_add_ident(b, ti->name);
        if (!rc)
            rc = ferry_buf_adds(b, " AS \"_ferry_s\"");
        if (!rc)
            rc = owner_join_check(p->scope, t, NULL, &joins);
        if (!rc)
            rc = ferry_buf_add(b, joins.data, joins.len);
        if (!rc)
            rc = ferry_buf_adds(b, " WHERE ");
        if (!rc)
            rc = owner_join_check(p->scope, t, b, NULL);
        ferry_buf_release(&joins);
        return rc;
    }
    if (!rc)
        rc = ferry_buf_adds(b, " FROM (SELECT ");
    if (!rc)
        rc = ferry_scope_keylist(p->scope, t, "", b);
    if (!rc)
        rc = ferry_buf_adds(b, " FROM ");
    if (!rc)
        rc = ferry_scope_keymap(b, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " WHERE \"_ferry_tenant\" = ?");
    ferry_buf_release(&joins);
    return rc;
}

/* The caller's keyset condition and LIMIT close the key range: then the row and its check. */
static int pg_snapshot_end(const struct ferry_producer *p, size_t t, int by_table,
                           struct ferry_buf *b)
{
    const struct ferry_table_info *ti = &p->scope->tables[t].info;
    struct ferry_buf joins;
    int rc;

    if (by_table) {
        rc = ferry_buf_adds(b, ") AS \"_ferry_s\" ORDER BY ");
        if (!rc)
            rc = ferry_scope_keylist(p->scope, t, "\"_ferry_s\".", b);
        return rc;
    }
    ferry_buf_init(&joins, SQL_MAX);
    rc = ferry_buf_adds(b, ") AS \"_ferry_k\" LEFT JOIN ");
    if (!rc)
        rc = ferry_buf_add_ident(b, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " AS \"_ferry_s\" ON ");
    for (size_t k = 0; k < ferry_table_npk(ti) && !rc; k++) {
        const char *col = ti->cols[ferry_table_pkcol(ti, k)].name;

        rc = ferry_buf_adds(b, k ? " AND \"_ferry_s\"." : "\"_ferry_s\".");
        if (!rc)
            rc = ferry_buf_add_ident(b, col);
        if (!rc)
            rc = ferry_buf_adds(b, " = \"_ferry_k\".");
        if (!rc)
            rc = ferry_buf_add_ident(b, col);
    }
    if (!rc)
        rc = owner_join_check(p->scope, t, NULL, &joins);
    if (!rc)
        rc = ferry_buf_add(b, joins.data, joins.len);
    if (!rc)
        rc = ferry_buf_adds(b, " ORDER BY ");
    if (!rc)
        rc = ferry_scope_keylist(p->scope, t, "\"_ferry_k\".", b);
    ferry_buf_release(&joins);
    return rc;
}

/*
 * PostgreSQL: is the tenant most of table t? Then a page walks the table's
 * own key index (pg_snapshot_sql's by_table: a range scan, the other
 * tenants' rows in it read and dropped), else the key map's. Counted from
 * the key map's (tenant, key) index against the table's estimated size,
 * and remembered for ten minutes: it only picks a plan, either gives the
 * same rows. Process-wide, like sort_arena: the server has one thread.
 */
#define PG_SHARES 32
#define PG_SHARE_SECS 600

static struct pg_share {
    int t;
    char tenant[64];
    int big;
    time_t at;
} pg_shares[PG_SHARES];

static int pg_tenant_is_big(struct ferry_producer *p, size_t t, const char *tenant,
                            const struct ferry_value *tv, int *big, struct ferry_error *err)
{
    const struct ferry_table_info *ti = &p->scope->tables[t].info;
    struct ferry_value args[2];
    struct ferry_buf sql, rel;
    time_t now = time(NULL);
    struct pg_share *slot = &pg_shares[0];
    int64_t permille = 0;
    int rc;

    for (size_t i = 0; i < PG_SHARES; i++) {
        struct pg_share *e = &pg_shares[i];

        if (e->at && e->t == (int)t && strcmp(e->tenant, tenant) == 0 &&
            now - e->at < PG_SHARE_SECS) {
            *big = e->big;
            return FERRY_OK;
        }
        if (e->at < slot->at)
            slot = e;
    }
    ferry_buf_init(&sql, SQL_MAX);
    ferry_buf_init(&rel, 1024);
    rc = ferry_buf_add_ident(&rel, ti->name);
    if (!rc)
        rc = ferry_buf_adds(&sql, "SELECT (1000 * count(*) / GREATEST((SELECT reltuples::bigint "
                                  "FROM pg_catalog.pg_class WHERE oid = CAST(? AS regclass)), "
                                  "count(*), 1))::bigint FROM ");
    if (!rc)
        rc = ferry_scope_keymap(&sql, ti->name);
    if (!rc)
        rc = ferry_buf_adds(&sql, " WHERE \"_ferry_tenant\" = ?");
    if (rc) {
        rc = ferry_error_set(err, rc, "cannot build SQL");
    } else {
        args[0] = ferry_value_text(rel.data, rel.len);
        args[1] = *tv;
        rc = ferry_db_query_int(p->db, sql.data, args, 2, &permille, err);
    }
    ferry_buf_release(&sql);
    ferry_buf_release(&rel);
    if (rc)
        return rc;
    *big = permille >= 500;
    slot->t = (int)t;
    snprintf(slot->tenant, sizeof(slot->tenant), "%s", tenant);
    slot->big = *big;
    slot->at = now;
    return FERRY_OK;
}

/* Does any [mask] name a column of table ti? */
static int table_has_mask(const struct ferry_producer *p, const struct ferry_table_info *ti)
{
    for (size_t i = 0; i < ti->ncols; i++)
        if (mask_of(p, ti->name, ti->cols[i].name))
            return 1;
    return 0;
}

/*
 * A COPY text page carries up to COPY_PAGE_ROWS_X times the rows of a page
 * of values ([source] batch_rows; the target asks as many, sync.c), and
 * stops once its lines pass COPY_PAGE_BYTES: a page costs a transaction,
 * a statement and an HTTP exchange on each side whatever its rows, and
 * lines cost the source little more than reading them. The bytes keep what
 * a target holds in flight (pages queued ahead of its applier) bounded.
 */
#define COPY_PAGE_ROWS_X 4
#define COPY_PAGE_BYTES ((size_t)4 << 20)

/*
 * Pages and batches stay well under the message limit ([source]
 * max_message: 1 GiB unless set lower, so that a row of any size
 * PostgreSQL holds can travel): a page of rows stops once it passes
 * PAGE_BYTES, and a change batch of more than one change may hold at most
 * BATCH_BYTES besides its biggest row (it is split, changes_batch). A row
 * may take the whole limit. Both keep what the agents hold in memory for
 * a page near what it was with the former limit of 64 MB.
 */
#define PAGE_BYTES ((size_t)16 << 20)
#define BATCH_BYTES ((size_t)64 << 20)

/*
 * Finish enc (ferry_enc_finish) and take its message: *out owned, free with
 * free(). Taken, not copied: a message may be as big as a row (1 GiB).
 */
static int finish(struct ferry_enc *enc, int64_t head, int more, const struct ferry_value *last,
                  size_t nlast, char **out, size_t *len)
{
    const char *body;
    int rc = ferry_enc_finish(enc, head, more, last, nlast, &body, len);

    if (rc)
        return rc;
    *out = ferry_enc_take(enc, len);
    return *out ? FERRY_OK : FERRY_ENOMEM;
}

/* What a batch of n changes may hold besides its biggest row (0: any). */
static size_t batch_soft(const struct ferry_producer *p, int64_t n)
{
    if (n <= 1)
        return 0;
    return p->max_body < BATCH_BYTES ? p->max_body : BATCH_BYTES;
}

/* A row that does not fit in a message alone (rc: FERRY_ETOOBIG), or rc. */
static int row_too_big(const struct ferry_producer *p, const struct ferry_table_info *ti, int rc,
                       struct ferry_error *err)
{
    if (rc != FERRY_ETOOBIG)
        return ferry_error_set(err, rc, "cannot encode a row of %s", ti->name);
    if ((p->max_body >> 20) < FERRY_MAX_MESSAGE_MB)
        return ferry_error_set(err, rc,
                               "a row of %s is over the %zu MB of a message ([source] "
                               "max_message): raise it (at most %d) in the source's config and "
                               "restart ferry-src serve, or make the row smaller",
                               ti->name, p->max_body >> 20, FERRY_MAX_MESSAGE_MB);
    return ferry_error_set(err, rc,
                           "a row of %s is over the %zu MB a message carries at most: make the "
                           "row smaller on the source (README, Limits)",
                           ti->name, p->max_body >> 20);
}

static size_t page_bytes(const struct ferry_producer *p)
{
    return p->max_body / 4 < PAGE_BYTES ? p->max_body / 4 : PAGE_BYTES;
}

/*
 * A PostgreSQL snapshot page as COPY text, for a PostgreSQL target that
 * asked for it: the page's query (sql, pg_snapshot_sql: the same scope
 * check, masks and snapshot) runs as COPY (...) TO STDOUT, and each row's
 * line goes out as it is, less its last 1 + npk fields: the read-time scope
 * check, which decides whether the row is sent at all ("t": the server's
 * true; false and NULL are not), and the key map's key, where the next page
 * starts. Fields are split at tab bytes, which COPY text escapes inside a
 * value. *last gets that key as the row-by-row path reads it (the server's
 * column types; TEXT and BLOB as offsets into lastbuf, as there).
 */
static int pg_copy_page(struct ferry_producer *p, const struct ferry_table_info *ti,
                        const struct ferry_buf *sql, const struct ferry_value *tv, int npred,
                        const struct ferry_request *req, struct ferry_enc *enc, int64_t *nread,
                        int64_t *nrows, int *more, struct ferry_value *last,
                        struct ferry_buf *lastbuf, struct ferry_error *err)
{
    struct ferry_value args[2 + FERRY_MAX_KEY_COLS];
    const char **names = NULL;
    size_t npk = ferry_table_npk(ti);
    size_t nargs = 0;
    struct ferry_buf raw; /* the key fields of the last row read */
    struct ferry_error e2;
    int row = 0;
    int rc;

    if (npred > 2 || req->nafter > FERRY_MAX_KEY_COLS)
        return ferry_error_set(err, FERRY_EINTERNAL, "snapshot of %s: too many parameters",
                               ti->name);
    for (int i = 0; i < npred; i++)
        args[nargs++] = *tv;
    for (size_t k = 0; k < req->nafter; k++)
        args[nargs++] = req->after_key[k];
    names = calloc(ti->ncols, sizeof(*names));
    if (!names)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
    for (size_t i = 0; i < ti->ncols; i++)
        names[i] = ti->cols[i].name;
    ferry_buf_init(&raw, p->max_body);
    rc = ferry_enc_set_begin_copy(enc, ti->name, names, ti->ncols);
    free(names);
    if (rc)
        return ferry_error_set(err, rc, "cannot encode snapshot of %s", ti->name);
    rc = ferry_db_copy_out_begin(p->db, sql->data, args, nargs, err);
    while (!rc) {
        size_t tab[FERRY_MAX_KEY_COLS + 1];
        const char *line, *check;
        size_t n, found = 0, checklen;

        rc = ferry_db_copy_out_next(p->db, &line, &n, &row, err);
        if (rc || !row)
            break;
        (*nread)++;
        /* tab[0] ends the row's own fields, tab[1 + k] starts key field k */
        for (size_t i = n; i-- > 0 && found < npk + 1;)
            if (line[i] == '\t')
                tab[npk - found++] = i;
        if (found < npk + 1) {
            rc = ferry_error_set(err, FERRY_EDB,
                                 "snapshot of %s: a COPY row without its scope check and key",
                                 ti->name);
            break;
        }
        check = line + tab[0] + 1;
        checklen = tab[1] - tab[0] - 1;
        /* the scope check, computed beside the row (pg_snapshot_sql): read, not sent */
        if (checklen == 1 && check[0] == 't') {
            rc = ferry_enc_line(enc, line, tab[0]);
            if (rc == FERRY_ETOOBIG && *nrows) {
                /* the page ends before it: the next one starts with it, alone */
                (*nread)--;
                *more = 1;
                rc = FERRY_OK;
                break;
            }
            if (rc) {
                rc = row_too_big(p, ti, rc, err);
                break;
            }
            (*nrows)++;
        }
        ferry_buf_reset(&raw);
        rc = ferry_buf_add(&raw, line + tab[1] + 1, n - tab[1] - 1);
        if (rc) {
            rc = ferry_error_set(err, rc, "a key of %s is too large", ti->name);
            break;
        }
        /* Keep pages well under the body limit: stop early, the next page resumes. */
        if (ferry_enc_size(enc) > COPY_PAGE_BYTES || ferry_enc_size(enc) > page_bytes(p)) {
            *more = 1;
            break;
        }
    }
    /* the key map's key of the last row read (there even when the row is not) */
    ferry_buf_reset(lastbuf);
    for (size_t k = 0, at = 0; k < npk && !rc && *nread; k++) {
        const char *f = (raw.data ? raw.data : "") + at;
        const char *tabp = memchr(f, '\t', raw.len - at);
        size_t flen = tabp ? (size_t)(tabp - f) : raw.len - at;
        struct ferry_value v;

        rc = ferry_db_copy_out_field(p->db, (int)(ti->ncols + 1 + k), f, flen, &v, err);
        at += flen + 1;
        last[k] = v;
        if (!rc && (v.type == FERRY_TEXT || v.type == FERRY_BLOB)) {
            /* offsets now, pointers after the buffer stops moving */
            size_t off = lastbuf->len;

            rc = ferry_buf_add(lastbuf, v.u.s.p, v.u.s.n);
            last[k].u.s.p = (const char *)(uintptr_t)off;
            if (rc)
                rc = ferry_error_set(err, rc, "a key of %s is too large", ti->name);
        }
    }
    if (ferry_db_copy_out_end(p->db, &e2) && !rc) {
        *err = e2;
        rc = e2.code;
    }
    ferry_buf_release(&raw);
    return rc;
}

/* a page joins at most n keys by index (pg_snapshot_sql): nested loops only */
#define JOINS_SQL "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off"
/*
 * A change batch's rows by key: index lookups all the way, the owner
 * check's hops to each parent too (a correlated subquery per row read a
 * 60-row channels table by a scan, 5 us a row: 1,000 rows 7.9 -> 2.8 ms).
 * The hops go to primary keys, which have an index; a [table] scope
 * predicate with none still scans.
 */
#define LOOKUPS_SQL JOINS_SQL "; SET LOCAL enable_seqscan = off"

static int snapshot_page(struct ferry_producer *p, const struct ferry_request *req, char **out,
                         size_t *len, struct ferry_error *err)
{
    const struct ferry_scope *s = p->scope;
    const struct ferry_table_info *ti;
    struct ferry_enc *enc = NULL;
    struct ferry_stmt *st = NULL;
    struct ferry_value tv;
    struct ferry_value last[FERRY_MAX_KEY_COLS];
    struct ferry_buf sql, lastbuf;
    const char **names = NULL;
    size_t npk;
    int64_t limit, cap, nrows = 0, nread = 0;
    int t, npred = 0, more = 0, row = 0, send = 1, by_table = 0;
    int pg = ferry_db_engine(p->db) == FERRY_ENGINE_PG;
    int copy = 0;                                    /* rows go as COPY text lines (pg_copy_page) */
    const char *keyctx = pg ? "" : "\"_ferry_km\"."; /* the key columns, in the query */
    struct snap_holder *h = NULL;
    int rc;

    ferry_buf_init(&sql, SQL_MAX);
    ferry_buf_init(&lastbuf, p->max_body);
    if (req->snapshot) {
        rc = holder_find(p, req, &h, err);
        if (rc)
            return rc;
    }
    t = ferry_scope_find(s, req->table);
    if (t < 0)
        return ferry_error_set(err, FERRY_ENOTFOUND, "table %.64s is not in the tenant's scope",
                               req->table);
    ti = &s->tables[t].info;
    npk = ferry_table_npk(ti);
    /*
     * COPY text when the target asked for it and the rows would read the
     * same as values: not where a [mask] puts an expression in place of a
     * column, whose output type may be another than the column's.
     */
    copy = pg && req->copy_text && !table_has_mask(p, ti);
    if (req->after_key && req->nafter != npk)
        return ferry_error_set(err, FERRY_EPROTO,
                               "snapshot of %s: after has %zu values, key has %zu", ti->name,
                               req->nafter, npk);
    cap = copy ? p->batch_rows * COPY_PAGE_ROWS_X : p->batch_rows;
    limit = req->limit < cap ? req->limit : cap;
    if (pg) {
        rc = ferry_scope_tenant(s, req->tenant, &tv, err);
        if (!rc)
            rc = pg_tenant_is_big(p, (size_t)t, req->tenant, &tv, &by_table, err);
        if (rc)
            goto out;
        rc = pg_snapshot_sql(p, (size_t)t, by_table, &sql, &npred);
        if (by_table)
            keyctx = "\"_ferry_s\".";
    } else {
        rc = select_owned_sql(p, (size_t)t, 1, &sql);
        npred = 2; /* the key map's tenant and the owner check */
    }
    if (!rc && req->after_key) {
        rc = ferry_buf_adds(&sql, " AND (");
        if (!rc)
            rc = ferry_scope_keylist(s, (size_t)t, keyctx, &sql);
        if (!rc)
            rc = ferry_buf_adds(&sql, npk > 1 ? ") > (" : ") > ");
        for (size_t k = 0; k < npk && !rc; k++)
            rc = ferry_buf_adds(&sql, k ? ", ?" : "?");
        if (!rc && npk > 1)
            rc = ferry_buf_adds(&sql, ")");
    }
    if (!rc)
        rc = ferry_buf_adds(&sql, " ORDER BY ");
    if (!rc)
        rc = ferry_scope_keylist(s, (size_t)t, keyctx, &sql);
    if (!rc)
        rc = ferry_buf_addf(&sql, " LIMIT %lld", (long long)limit);
    if (!rc && pg)
        rc = pg_snapshot_end(p, (size_t)t, by_table, &sql);
    if (rc) {
        rc = ferry_error_set(err, rc, "cannot build SQL");
        goto out;
    }
    names = calloc(ti->ncols, sizeof(*names));
    enc = ferry_enc_new(FERRY_KIND_SNAPSHOT, p->max_body);
    if (!names || !enc) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < ti->ncols; i++)
        names[i] = ti->cols[i].name;
    if (h) {
        char set[256 + FERRY_SNAPSHOT_ID_MAX];

        /*
         * One round trip: the transaction, its snapshot and the page's join
         * settings (below). h->id is the server's own, of checked form
         * (holder_open): safe to quote. BEGIN and SET LOCAL do not fail on
         * a working connection: a failure is the snapshot's, unless the
         * connection is gone, which fails the page alone.
         */
        snprintf(set, sizeof(set),
                 "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '%s'; "
                 "%s",
                 h->id, JOINS_SQL);
        if (ferry_db_exec(p->db, set, err)) {
            char why[FERRY_ERRMSG_MAX];

            memcpy(why, err->msg, sizeof(why));
            ferry_db_rollback(p->db);
            if (!ferry_db_alive(p->db)) {
                rc = err->code;
                goto out;
            }
            rc = ferry_error_set(err, FERRY_ESNAPGONE,
                                 "snapshot %s is gone (%.120s); read the pages from snapshots of "
                                 "their own",
                                 h->id, why);
            holder_close(p, h, "its transaction ended");
            goto out;
        }
        h->used = time(NULL);
    } else {
        rc = ferry_db_begin_read(p->db, err);
        if (!rc && pg)
            rc = ferry_db_exec(p->db, JOINS_SQL, err);
        if (rc)
            goto rollback;
    }
    /*
     * An unknown tenant is an error, not an empty table. Pages that read one
     * exported snapshot read the same root row: looked up once per holder.
     */
    if (!h || !h->found || !pg)
        rc = tenant_of(p, p->db, req, &tv, err);
    if (!rc && h)
        h->found = 1;
    /* COPY text: the statement runs as COPY (...) TO STDOUT, not prepared here */
    if (!rc && copy) {
        rc = pg_copy_page(p, ti, &sql, &tv, npred, req, enc, &nread, &nrows, &more, last, &lastbuf,
                          err);
        goto encoded;
    }
    if (!rc)
        rc = ferry_db_prepare(p->db, sql.data, &st, err);
    if (!rc)
        rc = bind_tenant(st, &tv, npred, err);
    for (size_t k = 0; k < req->nafter && !rc; k++)
        rc = ferry_stmt_bind(st, npred + 1 + (int)k, &req->after_key[k], err);
    if (!rc)
        rc = ferry_enc_set_begin(enc, ti->name, FERRY_OP_UPSERT, names, ti->ncols);
    while (!rc) {
        struct ferry_value vals[1024];
        size_t nc = ti->ncols < 1024 ? ti->ncols : 1024;

        rc = ferry_stmt_step(st, &row, err);
        if (rc || !row)
            break;
        for (size_t i = 0; i < nc; i++)
            ferry_stmt_column(st, (int)i, &vals[i]);
        nread++;
        if (pg) {
            struct ferry_value ok;

            /* the scope check, computed beside the row (pg_snapshot_sql): read, not sent */
            ferry_stmt_column(st, (int)ti->ncols, &ok);
            send = ok.type == FERRY_INT && ok.u.i == 1;
        }
        if (send) {
            rc = ferry_enc_row(enc, vals, nc);
            if (rc == FERRY_ETOOBIG && nrows) {
                /* the page ends before it: the next one starts with it, alone */
                nread--;
                more = 1;
                rc = FERRY_OK;
                break;
            }
            if (rc) {
                rc = row_too_big(p, ti, rc, err);
                break;
            }
            nrows++;
        }
        /* Remember the key of the last row (copied: the row goes at the next step). */
        ferry_buf_reset(&lastbuf);
        for (size_t k = 0; k < npk && !rc; k++) {
            struct ferry_value v = vals[ferry_table_pkcol(ti, k)];

            if (pg) /* the key map's key: there even when the row is not */
                ferry_stmt_column(st, (int)(ti->ncols + 1 + k), &v);

            last[k] = v;
            if (v.type == FERRY_TEXT || v.type == FERRY_BLOB) {
                /* offsets now, pointers after the buffer stops moving */
                size_t off = lastbuf.len;

                rc = ferry_buf_add(&lastbuf, v.u.s.p, v.u.s.n);
                last[k].u.s.p = (const char *)(uintptr_t)off;
            }
        }
        /* Keep pages well under the body limit: stop early, the next page resumes. */
        if (!rc && ferry_enc_size(enc) > page_bytes(p)) {
            more = 1;
            break;
        }
    }
encoded:
    if (rc)
        goto rollback;
    if (nread == limit)
        more = 1;
    for (size_t k = 0; k < npk && nread; k++)
        if (last[k].type == FERRY_TEXT || last[k].type == FERRY_BLOB)
            last[k].u.s.p = (lastbuf.data ? lastbuf.data : "") + (uintptr_t)last[k].u.s.p;
    rc = ferry_enc_set_end(enc);
    if (!rc) {
        rc = finish(enc, 0, more, nread ? last : NULL, nread ? npk : 0, out, len);
        if (rc)
            rc = ferry_error_set(err, rc, "cannot encode snapshot of %s", ti->name);
    }
    if (!rc) {
        p->stats.batches++;
        p->stats.rows += (uint64_t)nrows;
        if (copy)
            p->stats.copy_rows += (uint64_t)nrows;
    }
    /* the targets copy tables in the manifest's order: this page ends the copy */
    if (!rc && h && !more && (size_t)t + 1 == s->ntables)
        holder_close(p, h, "the copy's last page was served");
rollback:
    ferry_stmt_free(st);
    st = NULL;
    ferry_db_rollback(p->db);
out:
    ferry_stmt_free(st);
    ferry_enc_free(enc);
    free(names);
    ferry_buf_release(&sql);
    ferry_buf_release(&lastbuf);
    return rc;
}

/*
 * The target stopped a copy (failed, interrupted, or done without the last
 * table's last page): its snapshot's transaction ends now rather than
 * after FERRY_SNAPSHOT_IDLE_SECS, which would hold back vacuum meanwhile.
 * One already gone is fine; another tenant's is refused. The answer is an
 * empty page.
 */
static int release_snapshot(struct ferry_producer *p, const struct ferry_request *req, char **out,
                            size_t *len, struct ferry_error *err)
{
    struct snap_holder *h = NULL;
    struct ferry_enc *enc;
    int rc = holder_find(p, req, &h, err);

    if (rc == FERRY_ESNAPGONE) {
        ferry_error_clear(err);
        rc = FERRY_OK;
    }
    if (rc)
        return rc;
    if (h)
        holder_close(p, h, "the target stopped its copy");
    enc = ferry_enc_new(FERRY_KIND_SNAPSHOT, p->max_body);
    if (!enc)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
    rc = finish(enc, 0, 0, NULL, 0, out, len);
    ferry_enc_free(enc);
    return rc ? ferry_error_set(err, rc, "cannot encode an empty page") : FERRY_OK;
}

/*
 * A snapshot page. A row whose COPY text line does not fit in a message
 * alone (a bytea's text takes twice its bytes) goes as values, which the
 * target takes in place of lines: a page of that one row.
 */
static int produce_snapshot(struct ferry_producer *p, const struct ferry_request *req, char **out,
                            size_t *len, struct ferry_error *err)
{
    struct ferry_request values;
    int rc;

    if (req->release)
        return release_snapshot(p, req, out, len, err);
    rc = snapshot_page(p, req, out, len, err);

    if (rc != FERRY_ETOOBIG || !req->copy_text)
        return rc;
    log_info("snapshot of %.64s: a row over the %zu MB of a message as COPY text goes as values",
             req->table, p->max_body >> 20);
    ferry_error_clear(err);
    values = *req;
    values.copy_text = 0;
    values.limit = 1;
    return snapshot_page(p, &values, out, len, err);
}

/*
 * One changed key: table index, key values serialized into the batch's
 * arena (type byte, then 8 bytes or length + bytes), for sorting and dedup.
 */
struct change {
    int t;
    size_t off, n; /* serialized key in arena */
    int state;     /* CH_TOMBSTONE until a row is found; CH_DUP for repeats */
};

enum { CH_TOMBSTONE = 0, CH_ROW = 1, CH_DUP = 2 };

/* qsort has no context argument; producers run on the server's one thread. */
static struct ferry_buf *sort_arena;

static int cmp_change(const void *a, const void *b)
{
    const struct change *x = a, *y = b;
    size_t n;
    int c;

    if (x->t != y->t)
        return x->t < y->t ? -1 : 1;
    n = x->n < y->n ? x->n : y->n;
    c = memcmp(sort_arena->data + x->off, sort_arena->data + y->off, n);
    if (c)
        return c;
    return x->n < y->n ? -1 : x->n > y->n;
}

/*
 * Encode the current image of row into enc, opening the table's upsert set
 * first when *open is 0.
 */
static int encode_row(struct ferry_producer *p, const struct ferry_table_info *ti,
                      struct ferry_stmt *st, int *open, struct ferry_enc *enc,
                      struct ferry_error *err)
{
    struct ferry_value vals[1024];
    int rc = FERRY_OK;

    if (!*open) {
        const char *names[1024];

        for (size_t c = 0; c < ti->ncols && c < 1024; c++)
            names[c] = ti->cols[c].name;
        rc = ferry_enc_set_begin(enc, ti->name, FERRY_OP_UPSERT, names, ti->ncols);
        if (rc)
            return ferry_error_set(err, rc, "change batch too large");
        *open = 1;
    }
    for (size_t c = 0; c < ti->ncols && c < 1024; c++)
        ferry_stmt_column(st, (int)c, &vals[c]);
    rc = ferry_enc_row(enc, vals, ti->ncols);
    if (rc)
        return row_too_big(p, ti, rc, err);
    /*
     * A batch whose rows, its biggest aside, pass BATCH_BYTES is split
     * (changes_batch): one big row travels with the small ones around it
     * in one try, where a cap on the whole batch would read it again at
     * every halving.
     */
    if (p->batch_soft && ferry_enc_size(enc) - ferry_enc_biggest(enc) > p->batch_soft)
        return ferry_error_set(err, FERRY_ETOOBIG, "change batch too large");
    p->stats.rows++;
    return FERRY_OK;
}

/*
 * The rows of table t among the n keys of ch (sorted, repeats marked
 * CH_DUP), each looked up by its key under the tenant's owner check: one
 * statement run per key.
 */
static int owned_by_key(struct ferry_producer *p, const struct ferry_value *tv, size_t t,
                        struct change *ch, size_t n, const struct ferry_buf *arena,
                        struct ferry_enc *enc, int *open, struct ferry_error *err)
{
    const struct ferry_table_info *ti = &p->scope->tables[t].info;
    size_t npk = ferry_table_npk(ti);
    struct ferry_stmt *st = NULL;
    struct ferry_buf sql;
    size_t retext[FERRY_MAX_KEY_COLS]; /* key columns also matched by their text */
    size_t nretext = 0;
    int row = 0, rc;

    ferry_buf_init(&sql, SQL_MAX);
    rc = select_owned_sql(p, t, 0, &sql);
    for (size_t k = 0; k < npk && !rc; k++) {
        rc = ferry_buf_adds(&sql, " AND \"_ferry_s\".");
        if (!rc)
            rc = ferry_buf_add_ident(&sql, ti->cols[ferry_table_pkcol(ti, k)].name);
        if (!rc)
            rc = ferry_buf_adds(&sql, " = ?");
    }
    /*
     * On PostgreSQL a key of a type whose equal values can differ in text
     * (numeric 0.10 and 0.1) is found by its text too: the row whose key
     * became 0.1 has its own change, and 0.10 is gone (a tombstone). The
     * text is the key's cast (the change log's form) or its output (what a
     * copy wrote, so a repair's key; and ferry_capture_key gives char(n)
     * and inet log keys that form): they differ for char(n) ('a' and
     * 'a    ') and inet ('10.0.0.1/32' and '10.0.0.1'), and either finds
     * the row, as the typed equality above holds too.
     */
    for (size_t k = 0; k < npk && !rc && ferry_db_engine(p->db) == FERRY_ENGINE_PG; k++) {
        const struct ferry_column *col = &ti->cols[ferry_table_pkcol(ti, k)];

        if (ferry_scope_pg_key_exact(col->type))
            continue;
        rc = ferry_buf_adds(&sql, " AND (\"_ferry_s\".");
        if (!rc)
            rc = ferry_buf_add_ident(&sql, col->name);
        if (!rc)
            rc = ferry_buf_adds(&sql, "::pg_catalog.text COLLATE pg_catalog.\"C\" = "
                                      "?::pg_catalog.text COLLATE pg_catalog.\"C\" OR "
                                      "pg_catalog.concat(\"_ferry_s\".");
        if (!rc)
            rc = ferry_buf_add_ident(&sql, col->name);
        if (!rc)
            rc = ferry_buf_adds(&sql, ") COLLATE pg_catalog.\"C\" = ?::pg_catalog.text COLLATE "
                                      "pg_catalog.\"C\")");
        if (!rc)
            retext[nretext++] = k;
    }
    if (rc)
        rc = ferry_error_set(err, rc, "cannot build SQL");
    else
        rc = ferry_db_prepare(p->db, sql.data, &st, err);
    for (size_t i = 0; i < n && !rc; i++) {
        struct ferry_value key[FERRY_MAX_KEY_COLS];
        size_t nk = 0;

        if (ch[i].state == CH_DUP)
            continue;
        ferry_key_unpack(arena->data + ch[i].off, ch[i].n, key, FERRY_MAX_KEY_COLS, &nk);
        ferry_stmt_reset(st);
        rc = bind_tenant(st, tv, 1, err);
        for (size_t k = 0; k < nk && !rc; k++)
            rc = ferry_stmt_bind(st, 2 + (int)k, &key[k], err);
        for (size_t j = 0; j < 2 * nretext && !rc; j++)
            rc = retext[j / 2] < nk
                     ? ferry_stmt_bind(st, 2 + (int)(nk + j), &key[retext[j / 2]], err)
                     : FERRY_OK;
        if (!rc)
            rc = ferry_stmt_step(st, &row, err);
        if (!rc && row) {
            rc = encode_row(p, ti, st, open, enc, err);
            ch[i].state = CH_ROW;
        }
    }
    ferry_stmt_free(st);
    ferry_buf_release(&sql);
    return rc;
}

/* sep, then v in decimal (a printf per key cost as much as its lookup) */
static int add_int_item(struct ferry_buf *b, const char *sep, int64_t v)
{
    char d[24];
    size_t at = sizeof(d);
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    int rc;

    do {
        d[--at] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        d[--at] = '-';
    rc = ferry_buf_adds(b, sep);
    if (!rc)
        rc = ferry_buf_add(b, d + at, sizeof(d) - at);
    return rc;
}

/*
 * owned_by_key's work in one statement, for a table keyed by one column
 * whose changed keys are all integers (the common case: a rowid table, a
 * serial or identity key): the keys go in as one array, which drives the
 * lookups, and each row comes back with its key's place in the array. On
 * SQLite a JSON array read by json_each (saves the statement's reset and
 * start per key, a third of a change batch's reads); on PostgreSQL a
 * bigint[] read by unnest WITH ORDINALITY, joined by index (LOOKUPS_SQL),
 * which saves a round trip to the server per key. *done 0: not for these
 * keys, or json_each is not there; owned_by_key then.
 */
static int owned_by_list(struct ferry_producer *p, const struct ferry_value *tv, size_t t,
                         struct change *ch, size_t n, const struct ferry_buf *arena,
                         struct ferry_enc *enc, int *open, int *done, struct ferry_error *err)
{
    const struct ferry_table_info *ti = &p->scope->tables[t].info;
    struct ferry_stmt *st = NULL;
    struct ferry_buf sql, list;
    size_t *at = NULL, nat = 0;
    int pg = ferry_db_engine(p->db) == FERRY_ENGINE_PG;
    int row = 0, rc = FERRY_OK;

    *done = 0;
    if (ferry_table_npk(ti) != 1)
        return FERRY_OK;
    /*
     * A PostgreSQL boolean key comes as 0 or 1 too (ferry_capture_key), but
     * the server has no boolean = bigint: owned_by_key binds it as a value.
     */
    if (pg) {
        const char *type = ti->cols[ferry_table_pkcol(ti, 0)].type;

        if (!type || (strncmp(type, "smallint", 8) != 0 && strncmp(type, "integer", 7) != 0 &&
                      strncmp(type, "bigint", 6) != 0 && strcmp(type, "oid") != 0))
            return FERRY_OK;
    }
    at = malloc((n ? n : 1) * sizeof(*at));
    if (!at)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
    ferry_buf_init(&list, p->max_body);
    rc = ferry_buf_adds(&list, pg ? "{" : "[");
    for (size_t i = 0; i < n && !rc; i++) {
        struct ferry_value key[FERRY_MAX_KEY_COLS];
        size_t nk = 0;

        if (ch[i].state == CH_DUP)
            continue;
        if (ferry_key_unpack(arena->data + ch[i].off, ch[i].n, key, FERRY_MAX_KEY_COLS, &nk) ||
            nk != 1 || key[0].type != FERRY_INT)
            goto out; /* not for this path */
        rc = add_int_item(&list, nat ? "," : "", key[0].u.i);
        at[nat++] = i;
    }
    if (!rc)
        rc = ferry_buf_adds(&list, pg ? "}" : "]");
    if (rc) {
        rc = FERRY_OK; /* the list is over the body limit: key by key */
        goto out;
    }
    ferry_buf_init(&sql, SQL_MAX);
    rc = select_cols(p, t, &sql);
    if (!rc && pg)
        rc = ferry_buf_adds(&sql, ", \"_ferry_k\".\"key\" - 1 FROM unnest(?::bigint[]) WITH "
                                  "ORDINALITY AS \"_ferry_k\"(\"value\", \"key\") CROSS JOIN ");
    else if (!rc)
        rc = ferry_buf_adds(&sql, ", \"_ferry_k\".\"key\" FROM json_each(?) AS \"_ferry_k\" "
                                  "CROSS JOIN ");
    if (!rc)
        rc = ferry_buf_add_ident(&sql, ti->name);
    if (!rc)
        rc = ferry_buf_adds(&sql, " AS \"_ferry_s\" WHERE \"_ferry_s\".");
    if (!rc)
        rc = ferry_buf_add_ident(&sql, ti->cols[ferry_table_pkcol(ti, 0)].name);
    if (!rc)
        rc = ferry_buf_adds(&sql, " = \"_ferry_k\".\"value\" AND ");
    if (!rc)
        rc = ferry_scope_owner(p->scope, t, "\"_ferry_s\".", &sql);
    if (!rc)
        rc = ferry_buf_adds(&sql, " = ?");
    if (rc) {
        ferry_buf_release(&sql);
        rc = ferry_error_set(err, rc, "cannot build SQL");
        goto out;
    }
    /* PostgreSQL: the array drives index lookups, never a scan (once per read transaction) */
    if (pg && !p->lookups_set && ferry_db_exec(p->db, LOOKUPS_SQL, err)) {
        ferry_buf_release(&sql);
        rc = err->code;
        goto out;
    }
    p->lookups_set = pg;
    if (ferry_db_prepare(p->db, sql.data, &st, err)) {
        if (pg) {
            ferry_buf_release(&sql);
            rc = err->code;
            goto out;
        }
        /* an SQLite built without JSON: key by key */
        ferry_buf_release(&sql);
        ferry_error_clear(err);
        goto out;
    }
    ferry_buf_release(&sql);
    *done = 1;
    {
        struct ferry_value lv = {0};

        lv.type = FERRY_TEXT;
        lv.u.s.p = list.data;
        lv.u.s.n = list.len;
        rc = ferry_stmt_bind(st, 1, &lv, err);
    }
    if (!rc)
        rc = ferry_stmt_bind(st, 2, tv, err);
    while (!rc) {
        struct ferry_value k;

        rc = ferry_stmt_step(st, &row, err);
        if (rc || !row)
            break;
        ferry_stmt_column(st, (int)ti->ncols, &k);
        if (k.type != FERRY_INT || k.u.i < 0 || (uint64_t)k.u.i >= nat) {
            rc = ferry_error_set(err, FERRY_EINTERNAL, "the key list gave key %s for %zu keys",
                                 k.type == FERRY_INT ? "out of range" : "of another type", nat);
            break;
        }
        rc = encode_row(p, ti, st, open, enc, err);
        ch[at[k.u.i]].state = CH_ROW;
    }
out:
    ferry_stmt_free(st);
    ferry_buf_release(&list);
    free(at);
    return rc;
}

/*
 * Encode into enc the current image of each key of ch (nch keys of the
 * scope's tables, packed in arena), as read now under the tenant's owner
 * check: upserts parents first for the keys whose row is the tenant's,
 * then tombstones children first for the others. Sorts ch and skips
 * repeated keys. Shared by change batches and rows requests (repair).
 */
static int encode_current(struct ferry_producer *p, const struct ferry_value *tv, struct change *ch,
                          size_t nch, struct ferry_buf *arena, struct ferry_enc *enc,
                          struct ferry_error *err)
{
    const struct ferry_scope *s = p->scope;
    size_t *ndel = NULL;
    int rc = FERRY_OK;

    sort_arena = arena;
    if (nch)
        qsort(ch, nch, sizeof(*ch), cmp_change);
    p->lookups_set = 0; /* a read transaction of its own, begun by the caller */

    ndel = calloc(s->ntables, sizeof(*ndel));
    if (!ndel)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
    /* Upserts, parents first; a key whose row is gone from the tenant is a tombstone. */
    for (size_t i = 0, end; i < nch && !rc; i = end) {
        int t = ch[i].t;
        int open = 0, done = 0;

        for (end = i; end < nch && ch[end].t == t; end++)
            if (end > i && ch[end - 1].n == ch[end].n &&
                memcmp(arena->data + ch[end - 1].off, arena->data + ch[end].off, ch[end].n) == 0)
                ch[end].state = CH_DUP;
        rc = owned_by_list(p, tv, (size_t)t, ch + i, end - i, arena, enc, &open, &done, err);
        if (!rc && !done)
            rc = owned_by_key(p, tv, (size_t)t, ch + i, end - i, arena, enc, &open, err);
        if (!rc && open)
            rc = ferry_enc_set_end(enc);
        for (size_t j = i; j < end; j++)
            ndel[t] += ch[j].state == CH_TOMBSTONE;
    }
    /* Tombstones, children first. */
    for (size_t t = s->ntables; t-- > 0 && !rc;) {
        const struct ferry_table_info *ti = &s->tables[t].info;
        size_t npk = ferry_table_npk(ti);
        const char *keynames[FERRY_MAX_KEY_COLS];

        if (!ndel[t])
            continue;
        for (size_t k = 0; k < npk; k++)
            keynames[k] = ti->cols[ferry_table_pkcol(ti, k)].name;
        rc = ferry_enc_set_begin(enc, ti->name, FERRY_OP_DELETE, keynames, npk);
        for (size_t i = 0; i < nch && !rc; i++) {
            struct ferry_value key[FERRY_MAX_KEY_COLS];
            size_t nk;

            if (ch[i].t != (int)t || ch[i].state != CH_TOMBSTONE)
                continue;
            nk = 0;
            ferry_key_unpack(arena->data + ch[i].off, ch[i].n, key, FERRY_MAX_KEY_COLS, &nk);
            rc = ferry_enc_row(enc, key, nk);
            if (rc)
                rc = ferry_error_set(err, rc, "change batch too large");
            p->stats.deletes++;
        }
        if (!rc)
            rc = ferry_enc_set_end(enc);
    }
    free(ndel);
    return rc;
}

static int produce_changes(struct ferry_producer *p, const struct ferry_request *req, int64_t limit,
                           char **out, size_t *len, struct ferry_error *err)
{
    const struct ferry_scope *s = p->scope;
    struct ferry_stmt *st = NULL;
    struct ferry_enc *enc = NULL;
    struct change *ch = NULL;
    struct ferry_buf arena, keytmp;
    size_t nch = 0, cap = 0;
    char name[512] = ""; /* the table of the last change read, */
    size_t namelen = 0;  /* its length ((size_t)-1: not kept whole) */
    int namet = -1;      /* and its index in the scope */
    struct ferry_value tv;
    int64_t head = req->after, nread = 0, safe = 0;
    int row = 0, rc;

    ferry_buf_init(&arena, (size_t)256 << 20);
    ferry_buf_init(&keytmp, p->max_body);
    rc = ferry_scope_tenant(s, req->tenant, &tv, err);
    if (rc)
        goto out;
    /* never past a seq whose transaction may still commit (PostgreSQL) */
    rc = ferry_capture_safe_head_after(p->db, req->after, &safe, err);
    if (rc)
        goto out;
    rc = check_pruned(p->db, req->after, err);
    if (rc)
        goto out;
    rc = ferry_db_begin_read(p->db, err);
    if (rc)
        goto out;
    rc = ferry_db_prepare(p->db,
                          "SELECT seq, tbl, k0, k1, k2, k3 FROM _ferry_changes "
                          "WHERE tenant = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                          &st, err);
    if (!rc)
        rc = ferry_stmt_bind(st, 1, &tv, err);
    if (!rc) {
        struct ferry_value a = ferry_value_int(req->after), l = ferry_value_int(limit);
        struct ferry_value sv = ferry_value_int(safe);

        rc = ferry_stmt_bind(st, 2, &a, err);
        if (!rc)
            rc = ferry_stmt_bind(st, 3, &sv, err);
        if (!rc)
            rc = ferry_stmt_bind(st, 4, &l, err);
    }
    while (!rc) {
        struct ferry_value seq, tbl;
        int t;

        rc = ferry_stmt_step(st, &row, err);
        if (rc || !row)
            break;
        nread++;
        ferry_stmt_column(st, 0, &seq);
        ferry_stmt_column(st, 1, &tbl);
        if (seq.type == FERRY_INT && seq.u.i > head)
            head = seq.u.i;
        if (tbl.type != FERRY_TEXT)
            tbl.u.s.n = 0;
        /* runs of changes to one table: its name is looked up once a run */
        if (tbl.u.s.n != namelen || (namelen && memcmp(tbl.u.s.p, name, namelen) != 0)) {
            snprintf(name, sizeof(name), "%.*s", (int)tbl.u.s.n, tbl.u.s.n ? tbl.u.s.p : "");
            namelen = strlen(name) == tbl.u.s.n ? tbl.u.s.n : (size_t)-1;
            namet = ferry_scope_find(s, name);
        }
        t = namet;
        if (t < 0) {
            /* Logged under an older scope: the table is no longer served. */
            log_debug("change for %s skipped: not in scope", name);
            continue;
        }
        if (nch == cap) {
            size_t ncap = cap ? cap * 2 : 256;
            struct change *nc = realloc(ch, ncap * sizeof(*nc));

            if (!nc) {
                rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory");
                break;
            }
            ch = nc;
            cap = ncap;
        }
        ch[nch].t = t;
        ch[nch].off = arena.len;
        for (size_t k = 0; k < ferry_table_npk(&s->tables[t].info) && !rc; k++) {
            const struct ferry_table_info *ti = &s->tables[t].info;
            struct ferry_value kv;

            ferry_stmt_column(st, 2 + (int)k, &kv);
            ferry_buf_reset(&keytmp);
            rc = ferry_capture_key(p->db, ti->cols[ferry_table_pkcol(ti, k)].type, &kv, &keytmp,
                                   err);
            if (rc)
                goto rollback;
            rc = ferry_key_pack(&arena, &kv, 1);
        }
        if (rc) {
            rc = ferry_error_set(err, rc, "change batch too large");
            break;
        }
        ch[nch].n = arena.len - ch[nch].off;
        ch[nch].state = CH_TOMBSTONE;
        nch++;
    }
    ferry_stmt_free(st);
    st = NULL;
    if (rc)
        goto rollback;
    enc = ferry_enc_new(FERRY_KIND_CHANGES, p->max_body);
    if (!enc) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        goto rollback;
    }
    /* one change may take the whole message; more are split past BATCH_BYTES (changes_batch) */
    p->batch_soft = batch_soft(p, limit);
    rc = encode_current(p, &tv, ch, nch, &arena, enc, err);
    p->batch_soft = 0;
    if (!rc) {
        rc = finish(enc, head, nread == limit, NULL, 0, out, len);
        if (rc)
            rc = ferry_error_set(err, rc, "cannot encode change batch");
        else
            p->stats.batches++;
    }
rollback:
    ferry_db_rollback(p->db);
out:
    ferry_stmt_free(st);
    ferry_enc_free(enc);
    free(ch);
    ferry_buf_release(&arena);
    ferry_buf_release(&keytmp);
    return rc;
}

/*
 * A rows request (repair): the current image of each key asked for, as in
 * a change batch: an upsert when the row is the tenant's now, else a
 * tombstone.
 */
static int produce_rows(struct ferry_producer *p, const struct ferry_request *req, char **out,
                        size_t *len, struct ferry_error *err)
{
    struct ferry_enc *enc = NULL;
    struct change *ch = NULL;
    struct ferry_buf arena;
    struct ferry_value tv;
    int t = ferry_scope_find(p->scope, req->table);
    int rc;

    if (t < 0)
        return ferry_error_set(err, FERRY_ENOTFOUND, "table %.64s is not in the tenant's scope",
                               req->table);
    if (req->keywidth != ferry_table_npk(&p->scope->tables[t].info))
        return ferry_error_set(err, FERRY_EPROTO, "rows of %s: keys of %zu values, key has %zu",
                               req->table, req->keywidth,
                               ferry_table_npk(&p->scope->tables[t].info));
    ferry_buf_init(&arena, p->max_body);
    ch = calloc(req->nkeys ? req->nkeys : 1, sizeof(*ch));
    enc = ferry_enc_new(FERRY_KIND_CHANGES, p->max_body);
    if (!ch || !enc) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        goto out;
    }
    rc = FERRY_OK;
    for (size_t i = 0; i < req->nkeys && !rc; i++) {
        ch[i].t = t;
        ch[i].off = arena.len;
        rc = ferry_key_pack(&arena, &req->keys[i * req->keywidth], req->keywidth);
        ch[i].n = arena.len - ch[i].off;
        ch[i].state = CH_TOMBSTONE;
    }
    if (rc) {
        rc = ferry_error_set(err, rc, "rows request too large");
        goto out;
    }
    rc = ferry_db_begin_read(p->db, err);
    if (rc)
        goto out;
    rc = tenant_of(p, p->db, req, &tv, err);
    if (!rc) {
        /* as a change batch: the target asks again for fewer keys when this is too big */
        p->batch_soft = batch_soft(p, req->nkeys);
        rc = encode_current(p, &tv, ch, req->nkeys, &arena, enc, err);
        p->batch_soft = 0;
    }
    if (!rc) {
        rc = finish(enc, 0, 0, NULL, 0, out, len);
        if (rc)
            rc = ferry_error_set(err, rc, "cannot encode rows of %s", req->table);
        else
            p->stats.batches++;
    }
    ferry_db_rollback(p->db);
out:
    ferry_enc_free(enc);
    free(ch);
    ferry_buf_release(&arena);
    return rc;
}

/*
 * A digest request (verify): counts and checksums of key ranges, in one
 * read transaction, hashing masked columns as they are served.
 */
static int produce_digest(struct ferry_producer *p, const struct ferry_request *req, char **out,
                          size_t *len, struct ferry_error *err)
{
    int t = ferry_scope_find(p->scope, req->table);
    const char **masks = NULL;
    struct ferry_value tv;
    int rc;

    if (t >= 0) {
        const struct ferry_table_info *ti = &p->scope->tables[t].info;

        masks = calloc(ti->ncols ? ti->ncols : 1, sizeof(*masks));
        if (!masks)
            return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        for (size_t i = 0; i < ti->ncols; i++)
            masks[i] = mask_of(p, ti->name, ti->cols[i].name);
    }
    rc = ferry_db_begin_read(p->db, err);
    if (!rc) {
        rc = tenant_of(p, p->db, req, &tv, err);
        if (!rc)
            rc = ferry_digest_produce(p->db, p->scope, &tv, masks, req, out, len, err);
        ferry_db_rollback(p->db);
    }
    free(masks);
    return rc;
}

static int serve_request(struct ferry_producer *p, const struct ferry_request *req, char **out,
                         size_t *len, struct ferry_error *err)
{
    *out = NULL;
    *len = 0;
    switch (req->type) {
    case FERRY_REQ_MANIFEST:
        return produce_manifest(p, req, out, len, err);
    case FERRY_REQ_SNAPSHOT:
        return produce_snapshot(p, req, out, len, err);
    case FERRY_REQ_CHANGES:
        return changes_batch(p, req, out, len, err);
    case FERRY_REQ_DIGEST:
        return produce_digest(p, req, out, len, err);
    case FERRY_REQ_ROWS:
        return produce_rows(p, req, out, len, err);
    case FERRY_REQ_FREEZE: /* served by freeze.c, not a producer */
        break;
    }
    return ferry_error_set(err, FERRY_EPROTO, "unknown request type");
}
