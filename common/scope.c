/*
 * scope.c - tenant scope: which tables reach the root, and the SQL that
 * decides whether a row belongs to a tenant.
 *
 * Two forms of the same path are generated, because they serve different
 * queries well:
 *   pred   "child"."fk" IN (SELECT "parent"."pk" FROM "parent" WHERE <pred>)
 *          set-oriented, for scans ("all posts of tenant 7");
 *   owner  (SELECT <owner of parent> FROM "parent" AS "_ferry_pN"
 *           WHERE "_ferry_pN"."pk" = ctx"fk")
 *          row-oriented, for one row whose columns are known (a trigger's
 *          NEW, the existing row of an upsert): its tenant, or NULL.
 * Both require every hop to exist, so an orphan belongs to no tenant in
 * either form.
 */
#include "scope.h"

#include "crypto.h"
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void ferry_scope_free(struct ferry_scope *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->ntables; i++)
        ferry_table_info_release(&s->tables[i].info);
    free(s->tables);
    free(s);
}

int ferry_scope_fingerprint(struct ferry_db *db, const struct ferry_scope *s, int64_t *out,
                            struct ferry_error *err)
{
    struct ferry_buf sql, rels;
    int rc = FERRY_OK;

    *out = 0;
    if (ferry_db_engine(db) != FERRY_ENGINE_PG)
        return ferry_db_query_int(db, "PRAGMA schema_version", NULL, 0, out, err);
    ferry_buf_init(&sql, (size_t)1 << 20);
    ferry_buf_init(&rels, (size_t)1 << 20);
    for (size_t t = 0; t < s->ntables && !rc; t++) {
        struct ferry_buf name;

        ferry_buf_init(&name, 1024);
        rc = ferry_buf_add_ident(&name, s->tables[t].info.name);
        if (!rc)
            rc = ferry_buf_adds(&rels, t ? ", " : "ARRAY[");
        if (!rc)
            rc = ferry_buf_add_literal(&rels, name.data);
        if (!rc)
            rc = ferry_buf_adds(&rels, "::pg_catalog.regclass");
        ferry_buf_release(&name);
    }
    if (!rc)
        rc = ferry_buf_adds(&rels, "]");
    /*
     * A constraint's parent (conparentid, from PostgreSQL 11): a partition
     * detached keeps its foreign key to the scope, which loses its parent
     * there, and the partition joins the scope as a table of its own.
     */
    if (!rc)
        rc = ferry_buf_addf(
            &sql,
            "SELECT ('x' || pg_catalog.substr(pg_catalog.md5(COALESCE(pg_catalog.string_agg(x, "
            "',' ORDER BY x), '')), 1, 16))::pg_catalog.bit(64)::pg_catalog.int8 FROM ("
            "SELECT pg_catalog.concat_ws(':', a.attrelid, a.attnum, a.attname, a.atttypid, "
            "a.atttypmod, a.attnotnull, a.attgenerated) AS x FROM pg_catalog.pg_attribute a "
            "WHERE a.attrelid = ANY (%s) AND a.attnum > 0 AND NOT a.attisdropped UNION ALL "
            "SELECT pg_catalog.concat_ws(':', c.oid, c.contype, c.conrelid, c.conkey, c.confrelid, "
            "c.confkey, c.confdeltype, c.condeferrable%s) FROM pg_catalog.pg_constraint c "
            "WHERE c.contype IN ('p', 'f') AND (c.conrelid = ANY (%s) OR c.confrelid = ANY (%s))"
            ") AS f",
            rels.data, ferry_db_server_version(db) >= 110000 ? ", c.conparentid" : "", rels.data,
            rels.data);
    if (rc)
        rc = ferry_error_set(err, rc, "cannot build SQL");
    else
        rc = ferry_db_query_int(db, sql.data, NULL, 0, out, err);
    ferry_buf_release(&sql);
    ferry_buf_release(&rels);
    return rc;
}

int ferry_scope_find(const struct ferry_scope *s, const char *name)
{
    for (size_t i = 0; i < s->ntables; i++)
        if (strcmp(s->tables[i].info.name, name) == 0)
            return (int)i;
    return -1;
}

/* SQLite's first affinity rule: a declared type containing "INT" is integer. */
static int has_int_affinity(const char *type)
{
    for (const char *p = type; *p; p++)
        if (strncasecmp(p, "int", 3) == 0)
            return 1;
    return 0;
}

static int cmp_table_name(const void *a, const void *b)
{
    const struct ferry_table_info *x = a, *y = b;

    return strcmp(x->name, y->name);
}

static int find_info(const struct ferry_table_info *t, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(t[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* Drop foreign keys whose parent is not in the scope: they are not tenant data. */
static void prune_fks(struct ferry_scope *s)
{
    for (size_t i = 0; i < s->ntables; i++) {
        struct ferry_table_info *t = &s->tables[i].info;
        size_t keep = 0;

        for (size_t j = 0; j < t->nfks; j++) {
            if (ferry_scope_find(s, t->fks[j].parent) < 0) {
                struct ferry_fkey *fk = &t->fks[j];

                for (size_t k = 0; k < fk->ncols; k++) {
                    free(fk->cols[k]);
                    free(fk->pcols[k]);
                }
                free(fk->cols);
                free(fk->pcols);
                free(fk->parent);
                continue;
            }
            if (s->tables[i].fk == (int)j)
                s->tables[i].fk = (int)keep;
            t->fks[keep++] = t->fks[j];
        }
        t->nfks = keep;
    }
}

static int check_keys(const struct ferry_table_info *t, struct ferry_error *err)
{
    size_t npk = ferry_table_npk(t);

    if (npk == 0)
        return ferry_error_set(err, FERRY_ESCHEMA,
                               "table %s has no primary key; ferry needs one to key its rows: "
                               "add one, or list %s in [scope] exclude",
                               t->name, t->name);
    if (npk > FERRY_MAX_KEY_COLS)
        return ferry_error_set(err, FERRY_ESCHEMA,
                               "table %s has a %zu-column primary key; ferry supports up to %d: "
                               "list it in [scope] exclude",
                               t->name, npk, FERRY_MAX_KEY_COLS);
    return FERRY_OK;
}

/* Whether every column of foreign key fk of table ti is declared NOT NULL. */
static int fk_notnull(const struct ferry_table_info *ti, const struct ferry_fkey *fk)
{
    for (size_t i = 0; i < fk->ncols; i++) {
        int c = ferry_table_colidx(ti, fk->cols[i]);

        if (c < 0 || !ti->cols[c].notnull)
            return 0;
    }
    return 1;
}

int ferry_scope_build(struct ferry_table_info *tables, size_t n, const char *root,
                      struct ferry_scope **out, struct ferry_error *err)
{
    struct ferry_scope *s = NULL;
    int *order = NULL; /* index into tables, in scope order */
    int *parent = NULL, *fk = NULL, *depth = NULL;
    size_t norder = 0;
    int r;
    int rc = FERRY_OK;

    *out = NULL;
    /* Both sides sort first, so breadth-first ties resolve the same way. */
    qsort(tables, n, sizeof(*tables), cmp_table_name);
    r = find_info(tables, n, root);
    if (r < 0) {
        rc = ferry_error_set(err, FERRY_ESCHEMA, "root table %s does not exist", root);
        goto out;
    }
    if (ferry_table_npk(&tables[r]) != 1) {
        rc = ferry_error_set(err, FERRY_ESCHEMA,
                             "root table %s needs a one-column primary key (the tenant id)", root);
        goto out;
    }
    if (tables[r].scope_sql) {
        rc = ferry_error_set(err, FERRY_ECONFIG,
                             "[table %s] scope: the root table is scoped by its key, not a "
                             "predicate; remove the scope line",
                             root);
        goto out;
    }
    order = calloc(n, sizeof(*order));
    parent = calloc(n, sizeof(*parent));
    fk = calloc(n, sizeof(*fk));
    depth = calloc(n, sizeof(*depth));
    if (!order || !parent || !fk || !depth) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory resolving scope");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        parent[i] = -2; /* not reached */
        fk[i] = -1;
    }
    parent[r] = -1;
    order[norder++] = r;
    /* Operator predicates seed the walk too: their children are reachable. */
    for (size_t i = 0; i < n; i++) {
        if (tables[i].scope_sql && (int)i != r) {
            parent[i] = -1;
            depth[i] = 1;
            order[norder++] = (int)i;
        }
    }
    for (size_t q = 0; q < norder; q++) {
        int p = order[q];

        for (size_t c = 0; c < n; c++) {
            if (parent[c] != -2)
                continue;
            int pick = -1;

            /*
             * Of several foreign keys to that parent, one whose columns are
             * all NOT NULL (the row's own parent, say posts.channel_id)
             * before a nullable one (archive_channel_id, NULL for most
             * rows): a nullable one added by a migration would otherwise
             * take the path, as the catalog lists it first, and every row
             * whose column is NULL would leave the tenant.
             */
            for (size_t j = 0; j < tables[c].nfks; j++) {
                if (tables[c].fks[j].ncols == 0 ||
                    strcmp(tables[c].fks[j].parent, tables[p].name) != 0)
                    continue;
                if (pick < 0 || (!fk_notnull(&tables[c], &tables[c].fks[pick]) &&
                                 fk_notnull(&tables[c], &tables[c].fks[j])))
                    pick = (int)j;
            }
            if (pick < 0)
                continue;
            parent[c] = p;
            fk[c] = pick;
            depth[c] = depth[p] + 1;
            order[norder++] = (int)c;
        }
    }
    /* Parent-first: by depth, stable, so each parent precedes its children. */
    for (size_t i = 1; i < norder; i++) {
        int v = order[i];
        size_t j = i;

        while (j > 0 && depth[order[j - 1]] > depth[v]) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = v;
    }
    for (size_t i = 0; i < norder; i++) {
        rc = check_keys(&tables[order[i]], err);
        if (rc)
            goto out;
    }
    s = calloc(1, sizeof(*s));
    if (!s || !(s->tables = calloc(norder, sizeof(*s->tables)))) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory resolving scope");
        goto out;
    }
    for (size_t i = 0; i < norder; i++) {
        int t = order[i];
        struct ferry_scope_table *st = &s->tables[i];

        st->info = tables[t];
        memset(&tables[t], 0, sizeof(tables[t]));
        st->fk = fk[t];
        st->depth = depth[t];
        st->parent = -1;
        if (parent[t] >= 0)
            for (size_t k = 0; k < i; k++)
                if (order[k] == parent[t])
                    st->parent = (int)k;
    }
    s->ntables = norder;
    {
        const struct ferry_table_info *ri = &s->tables[0].info;
        const char *type = ri->cols[ferry_table_pkcol(ri, 0)].type;

        s->root_int = type && has_int_affinity(type);
    }
    prune_fks(s);
    *out = s;
    s = NULL;
out:
    ferry_scope_free(s);
    ferry_tables_free(tables, n);
    free(order);
    free(parent);
    free(fk);
    free(depth);
    return rc;
}

static int name_in(char **names, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return 1;
    return 0;
}

/* Said once per process (ferry_scope_resolve_serving runs per request). */
static int warned_exclude;

static int resolve(struct ferry_db *db, const struct ferry_config *cfg, int serving,
                   struct ferry_scope **out, struct ferry_error *err);

int ferry_scope_resolve(struct ferry_db *db, const struct ferry_config *cfg,
                        struct ferry_scope **out, struct ferry_error *err)
{
    return resolve(db, cfg, 0, out, err);
}

int ferry_scope_resolve_serving(struct ferry_db *db, const struct ferry_config *cfg,
                                struct ferry_scope **out, struct ferry_error *err)
{
    return resolve(db, cfg, 1, out, err);
}

static int resolve(struct ferry_db *db, const struct ferry_config *cfg, int serving,
                   struct ferry_scope **out, struct ferry_error *err)
{
    char **names = NULL;
    size_t nnames = 0, ntables = 0;
    struct ferry_table_info *tables = NULL;
    int rc;

    *out = NULL;
    rc = ferry_db_tables(db, &names, &nnames, err);
    if (rc)
        goto out;
    /*
     * An excluded table that is not there: a misspelt name would leave the
     * table meant in the scope, so install and scope refuse it; serving, it
     * is said once, not refused: a migration that drops the table must not
     * stop every request.
     */
    for (size_t i = 0; i < cfg->scope.nexclude; i++) {
        if (name_in(names, nnames, cfg->scope.exclude[i]))
            continue;
        if (!serving) {
            rc = ferry_error_set(err, FERRY_ECONFIG,
                                 "config %s: [scope] exclude names table %s, which does not "
                                 "exist (misspelt, or dropped?); fix or remove it",
                                 cfg->path, cfg->scope.exclude[i]);
            goto out;
        }
        if (!warned_exclude)
            log_warn("config %s: [scope] exclude names table %s, which does not exist "
                     "(dropped, or misspelt?); check ferry-src scope",
                     cfg->path, cfg->scope.exclude[i]);
        warned_exclude = 1;
    }
    for (size_t i = 0; i < cfg->ntables; i++) {
        if (!name_in(names, nnames, cfg->tables[i].name)) {
            rc = ferry_error_set(err, FERRY_ECONFIG,
                                 "config %s: [table %s] names a table that does not exist",
                                 cfg->path, cfg->tables[i].name);
            goto out;
        }
    }
    if (cfg->scope.root && ferry_config_excluded(cfg, cfg->scope.root)) {
        rc = ferry_error_set(err, FERRY_ECONFIG, "config %s: the root table %s is excluded",
                             cfg->path, cfg->scope.root);
        goto out;
    }
    tables = calloc(nnames ? nnames : 1, sizeof(*tables));
    if (!tables) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory resolving scope");
        goto out;
    }
    for (size_t i = 0; i < nnames; i++) {
        const struct ferry_table_conf *tc;

        if (ferry_config_excluded(cfg, names[i]))
            continue;
        rc = ferry_db_table_info(db, names[i], &tables[ntables], err);
        if (rc)
            goto out;
        tc = ferry_config_table(cfg, names[i]);
        if (tc && tc->scope) {
            tables[ntables].scope_sql = strdup(tc->scope);
            if (!tables[ntables].scope_sql) {
                ntables++;
                rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory resolving scope");
                goto out;
            }
        }
        ntables++;
    }
    rc = ferry_scope_build(tables, ntables, cfg->scope.root ? cfg->scope.root : "", out, err);
    tables = NULL; /* taken over */
out:
    ferry_tables_free(tables, ntables);
    for (size_t i = 0; i < nnames; i++)
        free(names[i]);
    free(names);
    return rc;
}

int ferry_scope_tenant(const struct ferry_scope *s, const char *tenant, struct ferry_value *out,
                       struct ferry_error *err)
{
    const char *root = s->tables[0].info.name;

    /* the operator's input (a config, --tenant, a key's binding): exit 2 */
    if (!tenant || !*tenant)
        return ferry_error_set(err, FERRY_ECONFIG, "empty tenant id");
    if (s->root_int) {
        char *end = NULL;
        long long v;

        errno = 0;
        v = strtoll(tenant, &end, 10);
        if (errno || !end || *end || end == tenant || tenant[0] == ' ' || tenant[0] == '+')
            return ferry_error_set(err, FERRY_ECONFIG, "tenant '%.64s' is not an integer key of %s",
                                   tenant, root);
        *out = ferry_value_int(v);
        return FERRY_OK;
    }
    *out = ferry_value_text(tenant, strlen(tenant));
    return FERRY_OK;
}

/*
 * Append sql with each :tenant (outside quotes) replaced by repl; *count
 * receives the number of replacements.
 */
static int add_tenant_sql(struct ferry_buf *b, const char *sql, const char *repl, int *count)
{
    static const char tok[] = ":tenant";
    char quote = 0;
    int rc = FERRY_OK;

    *count = 0;
    for (const char *p = sql; *p && !rc; p++) {
        if (quote) {
            if (*p == quote)
                quote = 0;
        } else if (*p == '\'' || *p == '"') {
            quote = *p;
        } else if (strncmp(p, tok, sizeof(tok) - 1) == 0 &&
                   !(p[sizeof(tok) - 1] == '_' ||
                     (p[sizeof(tok) - 1] >= 'a' && p[sizeof(tok) - 1] <= 'z') ||
                     (p[sizeof(tok) - 1] >= 'A' && p[sizeof(tok) - 1] <= 'Z') ||
                     (p[sizeof(tok) - 1] >= '0' && p[sizeof(tok) - 1] <= '9'))) {
            rc = ferry_buf_adds(b, repl);
            (*count)++;
            p += sizeof(tok) - 2;
            continue;
        }
        rc = ferry_buf_add(b, p, 1);
    }
    return rc;
}

/* Append ctx"col" (ctx may be a quoted alias with its dot, or "NEW."). */
static int add_ref(struct ferry_buf *b, const char *ctx, const char *col)
{
    int rc = ferry_buf_adds(b, ctx);

    if (!rc)
        rc = ferry_buf_add_ident(b, col);
    return rc;
}

/* Append "(ctx"a", ctx"b")" or "ctx"a"" for the n columns. */
static int add_cols(struct ferry_buf *b, const char *ctx, char **cols, size_t n)
{
    int rc = n > 1 ? ferry_buf_adds(b, "(") : FERRY_OK;

    for (size_t i = 0; i < n && !rc; i++) {
        if (i)
            rc = ferry_buf_adds(b, ", ");
        if (!rc)
            rc = add_ref(b, ctx, cols[i]);
    }
    if (!rc && n > 1)
        rc = ferry_buf_adds(b, ")");
    return rc;
}

static int table_ctx(struct ferry_buf *ctx, const char *name)
{
    ferry_buf_init(ctx, 1024);
    if (ferry_buf_add_ident(ctx, name) || ferry_buf_adds(ctx, "."))
        return FERRY_ENOMEM;
    return FERRY_OK;
}

int ferry_scope_key_nullable(const struct ferry_scope *s, size_t t)
{
    const struct ferry_table_info *ti = &s->tables[t].info;
    size_t npk = ferry_table_npk(ti);

    if (ti->without_rowid)
        return 0;
    if (npk == 1 && ti->cols[ferry_table_pkcol(ti, 0)].type &&
        strcasecmp(ti->cols[ferry_table_pkcol(ti, 0)].type, "INTEGER") == 0)
        return 0;
    for (size_t k = 0; k < npk; k++)
        if (!ti->cols[ferry_table_pkcol(ti, k)].notnull)
            return 1;
    return 0;
}

int ferry_scope_unkeyed_sql(const struct ferry_scope *s, size_t t, int tenant, struct ferry_buf *b,
                            int *nparams)
{
    const struct ferry_table_info *ti = &s->tables[t].info;
    struct ferry_buf ctx;
    int rc = table_ctx(&ctx, ti->name);

    *nparams = 0;
    if (!rc)
        rc = ferry_buf_adds(b, "SELECT count(*) FROM ");
    if (!rc)
        rc = ferry_buf_add_ident(b, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " WHERE (");
    for (size_t k = 0; k < ferry_table_npk(ti) && !rc; k++) {
        rc = ferry_buf_adds(b, k ? " OR " : "");
        if (!rc)
            rc = add_ref(b, ctx.data, ti->cols[ferry_table_pkcol(ti, k)].name);
        if (!rc)
            rc = ferry_buf_adds(b, " IS NULL");
    }
    if (!rc)
        rc = ferry_buf_adds(b, tenant ? ") AND " : ")");
    if (!rc && tenant)
        rc = ferry_scope_pred(s, t, b, nparams);
    ferry_buf_release(&ctx);
    return rc;
}

int ferry_scope_pred(const struct ferry_scope *s, size_t t, struct ferry_buf *b, int *nparams)
{
    const struct ferry_scope_table *st = &s->tables[t];
    const struct ferry_table_info *ti = &st->info;
    struct ferry_buf ctx;
    int rc;

    *nparams = 0;
    if (t == 0) {
        rc = table_ctx(&ctx, ti->name);
        if (!rc)
            rc = add_ref(b, ctx.data, ti->cols[ferry_table_pkcol(ti, 0)].name);
        if (!rc)
            rc = ferry_buf_adds(b, " = ?");
        ferry_buf_release(&ctx);
        *nparams = 1;
        return rc;
    }
    if (ti->scope_sql) {
        rc = ferry_buf_adds(b, "(");
        if (!rc)
            rc = add_tenant_sql(b, ti->scope_sql, "?", nparams);
        if (!rc)
            rc = ferry_buf_adds(b, ")");
        return rc;
    }
    {
        const struct ferry_fkey *fk = &ti->fks[st->fk];
        const struct ferry_table_info *pi = &s->tables[st->parent].info;
        struct ferry_buf pctx;

        rc = table_ctx(&ctx, ti->name);
        if (!rc)
            rc = table_ctx(&pctx, pi->name);
        if (!rc)
            rc = add_cols(b, ctx.data, fk->cols, fk->ncols);
        if (!rc)
            rc = ferry_buf_adds(b, " IN (SELECT ");
        for (size_t i = 0; i < fk->ncols && !rc; i++) {
            if (i)
                rc = ferry_buf_adds(b, ", ");
            if (!rc)
                rc = add_ref(b, pctx.data, fk->pcols[i]);
        }
        if (!rc)
            rc = ferry_buf_adds(b, " FROM ");
        if (!rc)
            rc = ferry_buf_add_ident(b, pi->name);
        if (!rc)
            rc = ferry_buf_adds(b, " WHERE ");
        if (!rc)
            rc = ferry_scope_pred(s, (size_t)st->parent, b, nparams);
        if (!rc)
            rc = ferry_buf_adds(b, ")");
        ferry_buf_release(&ctx);
        ferry_buf_release(&pctx);
    }
    return rc;
}

int ferry_scope_owner(const struct ferry_scope *s, size_t t, const char *ctx, struct ferry_buf *b)
{
    const struct ferry_scope_table *st = &s->tables[t];
    const struct ferry_table_info *ti = &st->info;
    const struct ferry_table_info *ri = &s->tables[0].info;
    const char *rootpk = ri->cols[ferry_table_pkcol(ri, 0)].name;
    int rc = FERRY_OK;

    if (t == 0)
        return add_ref(b, ctx, rootpk);
    if (ti->scope_sql) {
        /*
         * The row's own table appears unaliased inside EXISTS, so the
         * operator's predicate (written against the bare table) refers to
         * the same row whose columns the caller named ctx.
         */
        struct ferry_buf tctx;
        struct ferry_buf repl;
        size_t npk = ferry_table_npk(ti);
        int n = 0;

        rc = table_ctx(&tctx, ti->name);
        ferry_buf_init(&repl, 1024);
        if (!rc)
            rc = ferry_buf_adds(&repl, "\"_ferry_r\".");
        if (!rc)
            rc = ferry_buf_add_ident(&repl, rootpk);
        if (!rc)
            rc = ferry_buf_addf(b, "(SELECT %s FROM ", repl.data);
        if (!rc)
            rc = ferry_buf_add_ident(b, ri->name);
        if (!rc)
            rc = ferry_buf_adds(b, " AS \"_ferry_r\" WHERE EXISTS (SELECT 1 FROM ");
        if (!rc)
            rc = ferry_buf_add_ident(b, ti->name);
        if (!rc)
            rc = ferry_buf_adds(b, " WHERE ");
        for (size_t k = 0; k < npk && !rc; k++) {
            const char *col = ti->cols[ferry_table_pkcol(ti, k)].name;

            if (k)
                rc = ferry_buf_adds(b, " AND ");
            if (!rc)
                rc = add_ref(b, tctx.data, col);
            if (!rc)
                rc = ferry_buf_adds(b, " = ");
            if (!rc)
                rc = add_ref(b, ctx, col);
        }
        if (!rc)
            rc = ferry_buf_adds(b, " AND (");
        if (!rc)
            rc = add_tenant_sql(b, ti->scope_sql, repl.data, &n);
        if (!rc)
            rc = ferry_buf_adds(b, ")) LIMIT 1)");
        ferry_buf_release(&tctx);
        ferry_buf_release(&repl);
        return rc;
    }
    {
        const struct ferry_fkey *fk = &ti->fks[st->fk];
        const struct ferry_table_info *pi = &s->tables[st->parent].info;
        struct ferry_buf pctx;

        /* Alias each hop by depth so nested hops never capture each other. */
        ferry_buf_init(&pctx, 64);
        rc = ferry_buf_addf(&pctx, "\"_ferry_p%d\".", s->tables[st->parent].depth);
        if (!rc)
            rc = ferry_buf_adds(b, "(SELECT ");
        if (!rc)
            rc = ferry_scope_owner(s, (size_t)st->parent, pctx.data, b);
        if (!rc)
            rc = ferry_buf_adds(b, " FROM ");
        if (!rc)
            rc = ferry_buf_add_ident(b, pi->name);
        if (!rc)
            rc = ferry_buf_addf(b, " AS \"_ferry_p%d\" WHERE ", s->tables[st->parent].depth);
        for (size_t i = 0; i < fk->ncols && !rc; i++) {
            if (i)
                rc = ferry_buf_adds(b, " AND ");
            if (!rc)
                rc = add_ref(b, pctx.data, fk->pcols[i]);
            if (!rc)
                rc = ferry_buf_adds(b, " = ");
            if (!rc)
                rc = add_ref(b, ctx, fk->cols[i]);
        }
        if (!rc)
            rc = ferry_buf_adds(b, ")");
        ferry_buf_release(&pctx);
    }
    return rc;
}

int ferry_scope_keylist(const struct ferry_scope *s, size_t t, const char *ctx, struct ferry_buf *b)
{
    const struct ferry_table_info *ti = &s->tables[t].info;
    size_t npk = ferry_table_npk(ti);
    int rc = FERRY_OK;

    for (size_t k = 0; k < npk && !rc; k++) {
        if (k)
            rc = ferry_buf_adds(b, ", ");
        if (!rc)
            rc = add_ref(b, ctx, ti->cols[ferry_table_pkcol(ti, k)].name);
    }
    return rc;
}

int ferry_scope_objname(char out[FERRY_OBJNAME_SIZE], const char *kind, const char *table)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[FERRY_SHA256_LEN];
    struct ferry_error e;
    size_t pre = strlen("_ferry_") + strlen(kind) + 1;
    size_t tlen = strlen(table);
    size_t keep;

    if (pre + 9 + 1 > FERRY_OBJNAME_MAX)
        return FERRY_EINTERNAL;
    if (pre + tlen <= FERRY_OBJNAME_MAX) {
        snprintf(out, FERRY_OBJNAME_SIZE, "_ferry_%s_%s", kind, table);
        return FERRY_OK;
    }
    if (ferry_sha256(table, tlen, md, &e) != FERRY_OK)
        return FERRY_EINTERNAL;
    keep = FERRY_OBJNAME_MAX - pre - 9;
    while (keep > 0 && ((unsigned char)table[keep] & 0xC0) == 0x80)
        keep--; /* not inside a UTF-8 character */
    snprintf(out, FERRY_OBJNAME_SIZE, "_ferry_%s_%.*s_%c%c%c%c%c%c%c%c", kind, (int)keep, table,
             hex[md[0] >> 4], hex[md[0] & 15], hex[md[1] >> 4], hex[md[1] & 15], hex[md[2] >> 4],
             hex[md[2] & 15], hex[md[3] >> 4], hex[md[3] & 15]);
    return FERRY_OK;
}

int ferry_scope_add_objname(struct ferry_buf *b, const char *kind, const char *table)
{
    char name[FERRY_OBJNAME_SIZE];
    int rc = ferry_scope_objname(name, kind, table);

    return rc ? rc : ferry_buf_add_ident(b, name);
}

int ferry_scope_mask_expr(struct ferry_buf *b, const struct ferry_table_info *ti, const char *mask)
{
    int rc = ferry_buf_addf(b, "(SELECT %s FROM (SELECT ", mask);

    for (size_t j = 0; j < ti->ncols && !rc; j++) {
        rc = ferry_buf_adds(b, j ? ", \"_ferry_s\"." : "\"_ferry_s\".");
        if (!rc)
            rc = ferry_buf_add_ident(b, ti->cols[j].name);
        if (!rc)
            rc = ferry_buf_adds(b, " AS ");
        if (!rc)
            rc = ferry_buf_add_ident(b, ti->cols[j].name);
    }
    if (!rc)
        rc = ferry_buf_adds(b, ") AS \"_ferry_m\")");
    return rc;
}

int ferry_scope_root_hop(const struct ferry_scope *s, const char *ctx, const struct ferry_fkey *fk,
                         struct ferry_buf *b)
{
    int rc = ferry_buf_adds(b, ctx);

    if (!rc)
        rc = ferry_buf_add_ident(b, fk->cols[0]);
    if (!rc)
        rc = ferry_buf_adds(b, " = (SELECT \"_ferry_r\".");
    if (!rc)
        rc = ferry_buf_add_ident(b, fk->pcols[0]);
    if (!rc)
        rc = ferry_buf_adds(b, " FROM ");
    if (!rc)
        rc = ferry_buf_add_ident(b, s->tables[0].info.name);
    if (!rc)
        rc = ferry_buf_adds(b, " AS \"_ferry_r\" WHERE ");
    if (!rc)
        rc = ferry_scope_owner(s, 0, "\"_ferry_r\".", b);
    if (!rc)
        rc = ferry_buf_adds(b, " = ?)");
    return rc;
}

int ferry_scope_keymap(struct ferry_buf *b, const char *table)
{
    return ferry_scope_add_objname(b, "k", table);
}

int ferry_scope_tenant_rows(struct ferry_db *db, const struct ferry_scope *s,
                            const struct ferry_value *tenant, int64_t *n, struct ferry_error *err)
{
    const struct ferry_table_info *ri = ferry_scope_root(s);
    struct ferry_buf sql;
    int rc;

    *n = 0;
    ferry_buf_init(&sql, 1024);
    rc = ferry_buf_adds(&sql, "SELECT count(*) FROM ");
    if (!rc)
        rc = ferry_buf_add_ident(&sql, ri->name);
    if (!rc)
        rc = ferry_buf_adds(&sql, " WHERE ");
    if (!rc)
        rc = ferry_buf_add_ident(&sql, ri->cols[ferry_table_pkcol(ri, 0)].name);
    if (!rc)
        rc = ferry_buf_adds(&sql, " = ?");
    if (rc)
        rc = ferry_error_set(err, rc, "cannot build SQL");
    else
        rc = ferry_db_query_int(db, sql.data, tenant, 1, n, err);
    ferry_buf_release(&sql);
    return rc;
}

int ferry_scope_pg_key_exact(const char *type)
{
    static const char *const exact[] = {"smallint",
                                        "integer",
                                        "bigint",
                                        "oid",
                                        "uuid",
                                        "boolean",
                                        "bytea",
                                        "real",
                                        "double precision",
                                        "date",
                                        "timestamp without time zone",
                                        "timestamp with time zone"};

    for (size_t i = 0; type && i < sizeof(exact) / sizeof(exact[0]); i++) {
        size_t n = strlen(exact[i]);

        /* with a typmod: character varying(20), timestamp(3) with time zone */
        if (strncmp(type, exact[i], n) == 0 && (type[n] == '\0' || type[n] == '('))
            return 1;
    }
    return type && (strncmp(type, "timestamp(", 10) == 0);
}

int ferry_scope_keymatch(struct ferry_buf *b, const struct ferry_table_info *ti, const char *lhs,
                         const char *rhs)
{
    size_t npk = ferry_table_npk(ti);
    int rc = FERRY_OK;

    for (size_t k = 0; k < npk && !rc; k++) {
        const char *col = ti->cols[ferry_table_pkcol(ti, k)].name;

        rc = ferry_buf_adds(b, k ? " AND " : "");
        if (!rc)
            rc = add_ref(b, lhs, col);
        if (!rc)
            rc = ferry_buf_adds(b, " = ");
        if (!rc)
            rc = add_ref(b, rhs, col);
    }
    return rc;
}

int ferry_scope_keymap_tenant(struct ferry_buf *b, const struct ferry_table_info *ti,
                              const char *ctx)
{
    int rc = ferry_buf_adds(b, "(SELECT km.\"_ferry_tenant\" FROM ");

    if (!rc)
        rc = ferry_scope_keymap(b, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " AS km WHERE ");
    if (!rc)
        rc = ferry_scope_keymatch(b, ti, "km.", ctx);
    return rc ? rc : ferry_buf_adds(b, ")");
}

int ferry_scope_unanalyzed(struct ferry_db *db, const struct ferry_scope *s,
                           struct ferry_buf *names, size_t *n, struct ferry_error *err)
{
    int more = 0; /* ", ..." said */
    int rc = FERRY_OK;

    *n = 0;
    if (ferry_db_engine(db) != FERRY_ENGINE_PG || ferry_db_server_version(db) < 140000)
        return FERRY_OK;
    for (size_t t = 0; t < s->ntables && !rc; t++) {
        struct ferry_buf rel;
        struct ferry_value v;
        int64_t never = 0;

        ferry_buf_init(&rel, 1024);
        rc = ferry_buf_add_ident(&rel, s->tables[t].info.name);
        v = ferry_value_text(rel.data, rel.len);
        if (rc)
            rc = ferry_error_set(err, rc, "table name too long");
        else
            /* a table that is not there (a target before its copy) is not one */
            rc = ferry_db_query_int(db,
                                    "SELECT pg_catalog.count(*) FROM pg_catalog.pg_class c "
                                    "WHERE c.oid = pg_catalog.to_regclass(?) AND c.reltuples < 0",
                                    &v, 1, &never, err);
        if (!rc && never && names->len < 512)
            rc = ferry_buf_addf(names, "%s%s", *n ? ", " : "", rel.data);
        else if (!rc && never && !more) {
            rc = ferry_buf_adds(names, ", ...");
            more = 1;
        }
        *n += !rc && never;
        ferry_buf_release(&rel);
    }
    return rc;
}
