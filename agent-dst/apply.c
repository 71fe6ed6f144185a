/*
 * apply.c - target tables and batch application.
 *
 * Upsert: INSERT INTO "t" AS "_o" (...) VALUES (...) ON CONFLICT (key)
 * DO UPDATE SET ... WHERE <owner of _o> IS NULL OR <owner of _o> = tenant.
 * When the existing row belongs to another tenant the WHERE is false, the
 * statement changes nothing, and that is how a clash is seen: one statement
 * per row, no extra lookup on the hot path.
 */
#include "apply.h"

#include "../common/buf.h"
#include "../common/db/db.h"
#include "../common/log.h"
#include "../common/scope.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SQL_MAX (1u << 20)

struct table_stmts {
    struct ferry_stmt *upsert;
    size_t upsert_ncols;
    int *colmap; /* set column i -> target column index (for the check) */
    struct ferry_stmt *del;
    struct ferry_stmt *exists;
};

struct ferry_applier {
    struct ferry_db *db;
    struct ferry_scope *scope;
    struct ferry_value tenant;
    char *tenant_str;
    struct table_stmts *st; /* one per scope table */
    int dry_run;
    int *present; /* table exists on the target */
};

/* A type from the wire goes into DDL: letters, digits, spaces, (),._ only. */
static int safe_type(const char *t)
{
    for (const char *p = t; *p; p++) {
        char c = *p;

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == ' ' || c == '(' || c == ')' || c == ',' || c == '.' || c == '_'))
            return 0;
    }
    return 1;
}

static int create_sql(const struct ferry_table_info *ti, struct ferry_buf *b)
{
    size_t npk = ferry_table_npk(ti);
    int rc = ferry_buf_adds(b, "CREATE TABLE ");

    if (!rc)
        rc = ferry_buf_add_ident(b, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " (");
    for (size_t i = 0; i < ti->ncols && !rc; i++) {
        rc = ferry_buf_adds(b, i ? ", " : "");
        if (!rc)
            rc = ferry_buf_add_ident(b, ti->cols[i].name);
        if (!rc && ti->cols[i].type && *ti->cols[i].type)
            rc = ferry_buf_addf(b, " %s", ti->cols[i].type);
        if (!rc && ti->cols[i].notnull)
            rc = ferry_buf_adds(b, " NOT NULL");
    }
    if (!rc)
        rc = ferry_buf_adds(b, ", PRIMARY KEY (");
    for (size_t k = 0; k < npk && !rc; k++) {
        rc = ferry_buf_adds(b, k ? ", " : "");
        if (!rc)
            rc = ferry_buf_add_ident(b, ti->cols[ferry_table_pkcol(ti, k)].name);
    }
    if (!rc)
        rc = ferry_buf_adds(b, ")");
    for (size_t f = 0; f < ti->nfks && !rc; f++) {
        const struct ferry_fkey *fk = &ti->fks[f];

        rc = ferry_buf_adds(b, ", FOREIGN KEY (");
        for (size_t i = 0; i < fk->ncols && !rc; i++) {
            rc = ferry_buf_adds(b, i ? ", " : "");
            if (!rc)
                rc = ferry_buf_add_ident(b, fk->cols[i]);
        }
        if (!rc)
            rc = ferry_buf_adds(b, ") REFERENCES ");
        if (!rc)
            rc = ferry_buf_add_ident(b, fk->parent);
        if (!rc)
            rc = ferry_buf_adds(b, " (");
        for (size_t i = 0; i < fk->ncols && !rc; i++) {
            rc = ferry_buf_adds(b, i ? ", " : "");
            if (!rc)
                rc = ferry_buf_add_ident(b, fk->pcols[i]);
        }
        if (!rc)
            rc = ferry_buf_adds(b, fk->cascade ? ") ON DELETE CASCADE" : ")");
    }
    if (!rc)
        rc = ferry_buf_adds(b, ti->without_rowid ? ") WITHOUT ROWID" : ")");
    return rc;
}

/* The target table must have exactly the source's columns (by name). */
static int check_columns(struct ferry_applier *a, const struct ferry_table_info *src,
                         struct ferry_error *err)
{
    struct ferry_table_info dst;
    int rc;

    rc = ferry_db_table_info(a->db, src->name, &dst, err);
    if (rc)
        return rc;
    for (size_t i = 0; i < src->ncols && !rc; i++)
        if (ferry_table_colidx(&dst, src->cols[i].name) < 0)
            rc = ferry_error_set(err, FERRY_ESCHEMA,
                                 "target table %s has no column %s, which the source has; add "
                                 "it (ALTER TABLE %s ADD COLUMN %s) or drop the table",
                                 src->name, src->cols[i].name, src->name, src->cols[i].name);
    for (size_t i = 0; i < dst.ncols && !rc; i++)
        if (ferry_table_colidx(src, dst.cols[i].name) < 0)
            rc = ferry_error_set(err, FERRY_ESCHEMA,
                                 "target table %s has a column %s that the source does not have; "
                                 "drop it or make the schemas match",
                                 src->name, dst.cols[i].name);
    for (size_t k = 0; k < ferry_table_npk(src) && !rc; k++) {
        int s = ferry_table_pkcol(src, k);
        int d = ferry_table_pkcol(&dst, k);

        if (d < 0 || strcmp(src->cols[s].name, dst.cols[d].name) != 0)
            rc = ferry_error_set(err, FERRY_ESCHEMA,
                                 "target table %s has a different primary key than the source",
                                 src->name);
    }
    ferry_table_info_release(&dst);
    return rc;
}

void ferry_applier_close(struct ferry_applier *a)
{
    if (!a)
        return;
    if (a->st && a->scope)
        for (size_t t = 0; t < a->scope->ntables; t++) {
            ferry_stmt_free(a->st[t].upsert);
            ferry_stmt_free(a->st[t].del);
            ferry_stmt_free(a->st[t].exists);
            free(a->st[t].colmap);
        }
    free(a->st);
    free(a->present);
    ferry_scope_free(a->scope);
    ferry_db_close(a->db);
    free(a->tenant_str);
    free(a);
}

int ferry_applier_has_table(struct ferry_applier *a, const char *table)
{
    int t = ferry_scope_find(a->scope, table);

    return t >= 0 && a->present[t];
}

int ferry_applier_open(const char *url, const struct ferry_manifest *m, const char *tenant,
                       int dry_run, struct ferry_applier **out, struct ferry_error *err)
{
    struct ferry_applier *a = calloc(1, sizeof(*a));
    struct ferry_table_info *copy = NULL;
    struct ferry_buf sql;
    int rc;

    *out = NULL;
    ferry_buf_init(&sql, SQL_MAX);
    if (!a)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
    a->dry_run = dry_run;
    a->tenant_str = strdup(tenant);
    copy = calloc(m->ntables ? m->ntables : 1, sizeof(*copy));
    if (!a->tenant_str || !copy) {
        free(copy);
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < m->ntables; i++) {
        for (size_t c = 0; c < m->tables[i].ncols; c++)
            if (m->tables[i].cols[c].type && !safe_type(m->tables[i].cols[c].type)) {
                ferry_tables_free(copy, i);
                rc = ferry_error_set(err, FERRY_EPROTO,
                                     "manifest: column %s.%s has a type ferry will not put in "
                                     "DDL",
                                     m->tables[i].name, m->tables[i].cols[c].name);
                goto fail;
            }
        if (ferry_table_info_copy(&copy[i], &m->tables[i])) {
            ferry_tables_free(copy, i);
            rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory");
            goto fail;
        }
    }
    rc = ferry_scope_build(copy, m->ntables, m->root, &a->scope, err);
    if (rc) {
        ferry_error_prefix(err, "manifest");
        goto fail;
    }
    if (a->scope->ntables != m->ntables) {
        rc = ferry_error_set(err, FERRY_EPROTO,
                             "manifest: %zu tables sent, %zu reach the root %s; the source and "
                             "target disagree on the scope",
                             m->ntables, a->scope->ntables, m->root);
        goto fail;
    }
    rc = ferry_scope_tenant(a->scope, a->tenant_str, &a->tenant, err);
    if (rc)
        goto fail;
    a->st = calloc(a->scope->ntables, sizeof(*a->st));
    a->present = calloc(a->scope->ntables, sizeof(*a->present));
    if (!a->st || !a->present) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        goto fail;
    }
    rc = ferry_db_open(url, dry_run ? 0 : FERRY_DB_CREATE, &a->db, err);
    if (rc) {
        /* a dry run against a target that does not exist yet: nothing is there */
        if (dry_run) {
            ferry_error_clear(err);
            *out = a;
            return FERRY_OK;
        }
        goto fail;
    }
    if (!dry_run) {
        rc = ferry_db_begin(a->db, err);
        if (rc)
            goto fail;
    }
    for (size_t t = 0; t < a->scope->ntables && !rc; t++) {
        const struct ferry_table_info *ti = &a->scope->tables[t].info;
        int exists = 0;

        rc = ferry_db_table_exists(a->db, ti->name, &exists, err);
        if (rc)
            break;
        a->present[t] = exists;
        if (exists) {
            rc = check_columns(a, ti, err);
            continue;
        }
        if (dry_run)
            continue;
        ferry_buf_reset(&sql);
        if (create_sql(ti, &sql)) {
            rc = ferry_error_set(err, FERRY_ENOMEM, "cannot build DDL for %s", ti->name);
            break;
        }
        rc = ferry_db_exec(a->db, sql.data, err);
        if (rc)
            ferry_error_prefix(err, "creating target table %s", ti->name);
        else
            a->present[t] = 1;
    }
    if (!dry_run) {
        if (rc)
            ferry_db_rollback(a->db);
        else
            rc = ferry_db_commit(a->db, err);
    }
    if (rc)
        goto fail;
    ferry_buf_release(&sql);
    *out = a;
    return FERRY_OK;
fail:
    ferry_buf_release(&sql);
    ferry_applier_close(a);
    return rc;
}

static int prepare_upsert(struct ferry_applier *a, size_t t, const struct ferry_set *set,
                          struct ferry_error *err)
{
    const struct ferry_table_info *ti = &a->scope->tables[t].info;
    struct table_stmts *ts = &a->st[t];
    struct ferry_buf sql, owner;
    int rc = FERRY_OK;

    if (ts->upsert && ts->upsert_ncols == set->ncols) {
        int same = 1;

        for (size_t i = 0; i < set->ncols && same; i++)
            same = ts->colmap[i] == ferry_table_colidx(ti, set->cols[i]);
        if (same)
            return FERRY_OK;
    }
    ferry_stmt_free(ts->upsert);
    ts->upsert = NULL;
    free(ts->colmap);
    ts->colmap = calloc(set->ncols ? set->ncols : 1, sizeof(int));
    if (!ts->colmap)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
    for (size_t i = 0; i < set->ncols; i++) {
        ts->colmap[i] = ferry_table_colidx(ti, set->cols[i]);
        if (ts->colmap[i] < 0)
            return ferry_error_set(err, FERRY_ESCHEMA,
                                   "batch for %s has column %s, which the manifest did not "
                                   "list; rerun sync",
                                   ti->name, set->cols[i]);
    }
    for (size_t k = 0; k < ferry_table_npk(ti); k++) {
        const char *kc = ti->cols[ferry_table_pkcol(ti, k)].name;
        int found = 0;

        for (size_t i = 0; i < set->ncols; i++)
            found |= strcmp(set->cols[i], kc) == 0;
        if (!found)
            return ferry_error_set(err, FERRY_EPROTO, "batch for %s lacks key column %s",
                                   ti->name, kc);
    }
    ferry_buf_init(&sql, SQL_MAX);
    ferry_buf_init(&owner, SQL_MAX);
    rc = ferry_scope_owner(a->scope, t, "\"_o\".", &owner);
    if (!rc)
        rc = ferry_buf_adds(&sql, "INSERT INTO ");
    if (!rc)
        rc = ferry_buf_add_ident(&sql, ti->name);
    if (!rc)
        rc = ferry_buf_adds(&sql, " AS \"_o\" (");
    for (size_t i = 0; i < set->ncols && !rc; i++) {
        rc = ferry_buf_adds(&sql, i ? ", " : "");
        if (!rc)
            rc = ferry_buf_add_ident(&sql, set->cols[i]);
    }
    if (!rc)
        rc = ferry_buf_adds(&sql, ") VALUES (");
    for (size_t i = 0; i < set->ncols && !rc; i++)
        rc = ferry_buf_adds(&sql, i ? ", ?" : "?");
    if (!rc)
        rc = ferry_buf_adds(&sql, ") ON CONFLICT (");
    if (!rc)
        rc = ferry_scope_keylist(a->scope, t, "", &sql);
    if (!rc)
        rc = ferry_buf_adds(&sql, ") DO UPDATE SET ");
    for (size_t i = 0; i < set->ncols && !rc; i++) {
        rc = ferry_buf_adds(&sql, i ? ", " : "");
        if (!rc)
            rc = ferry_buf_add_ident(&sql, set->cols[i]);
        if (!rc)
            rc = ferry_buf_adds(&sql, " = excluded.");
        if (!rc)
            rc = ferry_buf_add_ident(&sql, set->cols[i]);
    }
    if (!rc)
        rc = ferry_buf_addf(&sql, " WHERE %s IS NULL OR %s = ?", owner.data, owner.data);
    if (rc)
        rc = ferry_error_set(err, rc, "cannot build upsert for %s", ti->name);
    else
        rc = ferry_db_prepare(a->db, sql.data, &ts->upsert, err);
    if (!rc)
        ts->upsert_ncols = set->ncols;
    ferry_buf_release(&sql);
    ferry_buf_release(&owner);
    return rc;
}

static int prepare_delete(struct ferry_applier *a, size_t t, struct ferry_error *err)
{
    const struct ferry_table_info *ti = &a->scope->tables[t].info;
    struct table_stmts *ts = &a->st[t];
    struct ferry_buf sql, owner, where;
    size_t npk = ferry_table_npk(ti);
    int rc = FERRY_OK;

    if (ts->del)
        return FERRY_OK;
    ferry_buf_init(&sql, SQL_MAX);
    ferry_buf_init(&owner, SQL_MAX);
    ferry_buf_init(&where, SQL_MAX);
    rc = ferry_scope_owner(a->scope, t, "\"_o\".", &owner);
    for (size_t k = 0; k < npk && !rc; k++) {
        rc = ferry_buf_adds(&where, k ? " AND \"_o\"." : "\"_o\".");
        if (!rc)
            rc = ferry_buf_add_ident(&where, ti->cols[ferry_table_pkcol(ti, k)].name);
        if (!rc)
            rc = ferry_buf_adds(&where, " = ?");
    }
    if (!rc)
        rc = ferry_buf_adds(&sql, "DELETE FROM ");
    if (!rc)
        rc = ferry_buf_add_ident(&sql, ti->name);
    if (!rc)
        rc = ferry_buf_addf(&sql, " AS \"_o\" WHERE %s AND (%s IS NULL OR %s = ?)", where.data,
                            owner.data, owner.data);
    if (!rc) {
        rc = ferry_db_prepare(a->db, sql.data, &ts->del, err);
        ferry_buf_reset(&sql);
        if (!rc && (ferry_buf_adds(&sql, "SELECT ") || ferry_buf_adds(&sql, owner.data) ||
                    ferry_buf_adds(&sql, " FROM ") || ferry_buf_add_ident(&sql, ti->name) ||
                    ferry_buf_addf(&sql, " AS \"_o\" WHERE %s", where.data)))
            rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        if (!rc)
            rc = ferry_db_prepare(a->db, sql.data, &ts->exists, err);
    } else {
        rc = ferry_error_set(err, rc, "cannot build delete for %s", ti->name);
    }
    ferry_buf_release(&sql);
    ferry_buf_release(&owner);
    ferry_buf_release(&where);
    return rc;
}

/* "id=5", "post_id=3, emoji='x'" for error messages (values shortened). */
static void describe_key(const struct ferry_table_info *ti, const char *const *names,
                         const struct ferry_value *vals, size_t n, char *out, size_t size)
{
    size_t off = 0;

    out[0] = '\0';
    for (size_t i = 0; i < n && off + 1 < size; i++) {
        const struct ferry_value *v = &vals[i];
        int w;

        if (names && ferry_table_colidx(ti, names[i]) >= 0 &&
            ti->cols[ferry_table_colidx(ti, names[i])].pk == 0)
            continue;
        switch (v->type) {
        case FERRY_INT:
            w = snprintf(out + off, size - off, "%s%s=%lld", off ? ", " : "", names[i],
                         (long long)v->u.i);
            break;
        case FERRY_TEXT:
            w = snprintf(out + off, size - off, "%s%s='%.*s'", off ? ", " : "", names[i],
                         (int)(v->u.s.n > 40 ? 40 : v->u.s.n), v->u.s.p);
            break;
        case FERRY_FLOAT:
            w = snprintf(out + off, size - off, "%s%s=%.17g", off ? ", " : "", names[i], v->u.f);
            break;
        default:
            w = snprintf(out + off, size - off, "%s%s=<%s>", off ? ", " : "", names[i],
                         v->type == FERRY_NULL ? "null" : "blob");
            break;
        }
        if (w < 0)
            break;
        off += (size_t)w;
    }
}

static int clash(struct ferry_applier *a, size_t t, const struct ferry_set *set,
                 const struct ferry_value *row, struct ferry_error *err)
{
    const struct ferry_table_info *ti = &a->scope->tables[t].info;
    char key[200];

    describe_key(ti, set->cols, row, set->ncols, key, sizeof(key));
    return ferry_error_set(err, FERRY_ECLASH,
                           "target row %s (%s) belongs to another tenant than %s; nothing of "
                           "this batch was committed: resolve the clash on the target and rerun",
                           ti->name, key, a->tenant_str);
}

static int apply_upserts(struct ferry_applier *a, size_t t, const struct ferry_set *set,
                         struct ferry_apply_counts *c, struct ferry_error *err)
{
    struct table_stmts *ts = &a->st[t];
    int rc = prepare_upsert(a, t, set, err);

    for (size_t r = 0; r < set->nrows && !rc; r++) {
        const struct ferry_value *row = &set->vals[r * set->ncols];
        int has = 0;

        ferry_stmt_reset(ts->upsert);
        for (size_t i = 0; i < set->ncols && !rc; i++)
            rc = ferry_stmt_bind(ts->upsert, (int)i + 1, &row[i], err);
        if (!rc)
            rc = ferry_stmt_bind(ts->upsert, (int)set->ncols + 1, &a->tenant, err);
        if (!rc)
            rc = ferry_stmt_step(ts->upsert, &has, err);
        if (rc) {
            ferry_error_prefix(err, "applying %s", set->table);
            break;
        }
        if (ferry_stmt_changes(ts->upsert) == 0)
            rc = clash(a, t, set, row, err);
        c->upserted++;
    }
    return rc;
}

static int apply_deletes(struct ferry_applier *a, size_t t, const struct ferry_set *set,
                         struct ferry_apply_counts *c, struct ferry_error *err)
{
    const struct ferry_table_info *ti = &a->scope->tables[t].info;
    struct table_stmts *ts = &a->st[t];
    size_t npk = ferry_table_npk(ti);
    int rc;

    if (set->ncols != npk)
        return ferry_error_set(err, FERRY_EPROTO, "delete set for %s has %zu key values, key has %zu",
                               ti->name, set->ncols, npk);
    for (size_t k = 0; k < npk; k++)
        if (strcmp(set->cols[k], ti->cols[ferry_table_pkcol(ti, k)].name) != 0)
            return ferry_error_set(err, FERRY_EPROTO, "delete set for %s: key column %zu is %s",
                                   ti->name, k, set->cols[k]);
    rc = prepare_delete(a, t, err);
    for (size_t r = 0; r < set->nrows && !rc; r++) {
        const struct ferry_value *key = &set->vals[r * npk];
        int has = 0;

        ferry_stmt_reset(ts->del);
        for (size_t k = 0; k < npk && !rc; k++)
            rc = ferry_stmt_bind(ts->del, (int)k + 1, &key[k], err);
        if (!rc)
            rc = ferry_stmt_bind(ts->del, (int)npk + 1, &a->tenant, err);
        if (!rc)
            rc = ferry_stmt_step(ts->del, &has, err);
        if (rc)
            break;
        if (ferry_stmt_changes(ts->del) > 0) {
            c->deleted++;
            continue;
        }
        /* Nothing deleted: already gone (fine), or another tenant's row (a clash). */
        ferry_stmt_reset(ts->exists);
        for (size_t k = 0; k < npk && !rc; k++)
            rc = ferry_stmt_bind(ts->exists, (int)k + 1, &key[k], err);
        if (!rc)
            rc = ferry_stmt_step(ts->exists, &has, err);
        if (!rc && has)
            rc = clash(a, t, set, key, err);
    }
    return rc;
}

int ferry_applier_apply(struct ferry_applier *a, const struct ferry_batch *b,
                        struct ferry_apply_counts *counts, struct ferry_error *err)
{
    struct ferry_apply_counts c = {0, 0};
    int rc;

    if (a->dry_run || !a->db)
        return ferry_error_set(err, FERRY_EINTERNAL, "applier opened for a dry run");
    rc = ferry_db_begin(a->db, err);
    if (rc)
        return rc;
    for (size_t i = 0; i < b->nsets && !rc; i++) {
        const struct ferry_set *set = &b->sets[i];
        int t = ferry_scope_find(a->scope, set->table);

        if (t < 0) {
            rc = ferry_error_set(err, FERRY_EPROTO,
                                 "batch names table %.64s, which is not in the manifest",
                                 set->table);
            break;
        }
        if (set->op == FERRY_OP_UPSERT)
            rc = apply_upserts(a, (size_t)t, set, &c, err);
        else
            rc = apply_deletes(a, (size_t)t, set, &c, err);
    }
    if (rc) {
        ferry_db_rollback(a->db);
        return rc;
    }
    rc = ferry_db_commit(a->db, err);
    if (!rc && counts) {
        counts->upserted += c.upserted;
        counts->deleted += c.deleted;
    }
    return rc;
}

int ferry_applier_fk_check(struct ferry_applier *a, int64_t *violations, struct ferry_error *err)
{
    *violations = 0;
    if (!a->db)
        return FERRY_OK;
    for (size_t t = 0; t < a->scope->ntables; t++) {
        int64_t n = 0;
        int rc = ferry_db_fk_check(a->db, a->scope->tables[t].info.name, &n, err);

        if (rc)
            return rc;
        *violations += n;
    }
    return FERRY_OK;
}
