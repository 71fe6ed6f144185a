/*
 * apply.c - target tables and batch application.
 *
 * SQLite upsert: INSERT INTO "t" AS "_o" (...) VALUES (...) ON CONFLICT
 * (key) DO UPDATE SET ... WHERE COALESCE(<owner of _o> = tenant, TRUE),
 * which is <owner> IS NULL OR <owner> = tenant with the owner's lookups run
 * once, not twice (the tenant is never NULL). When the existing row belongs
 * to another tenant the WHERE is false, the statement changes nothing, and
 * that is how a clash is seen: no extra lookup on the hot path. One
 * statement writes UPSERT_ROWS rows at once; when it changed fewer, the
 * one-row statement names the row that clashed.
 *
 * PostgreSQL upsert, per set: COPY the rows into a temporary staging table
 * (the set's columns, the target's types), find any staged key whose target
 * row belongs to another tenant with one join (FERRY_ECLASH, nothing
 * committed), then INSERT INTO "t" SELECT ... FROM staging ON CONFLICT (key)
 * DO UPDATE ... WHERE the row's text form differs, so that unchanged rows
 * are not rewritten (no dead tuples, no WAL, no trigger on the target for a
 * no-op). A snapshot page first tries a plain COPY into the table, under a
 * savepoint: an initial copy into an empty table is then as fast as COPY
 * itself; any failure (a key already there: a resumed or repeated copy)
 * rolls back to the savepoint and takes the staging path, which decides.
 * Deletes take only the tenant's own rows (one owner-checked statement per
 * key on SQLite, a staging table of keys on PostgreSQL); a key the target
 * holds for another tenant is skipped with a warning, not a clash: this
 * tenant does not hold it, which is what the delete asks. A change batch
 * that clashes has its deletes committed alone (ferry_applier_apply).
 *
 * Declared types, when ferry creates a target table, by source engine:
 *
 *   SQLite source, by SQLite's affinity rules on the declared type:
 *   declared type                      SQLite target   PostgreSQL target
 *   ---------------------------------  --------------  -------------------
 *   contains INT                       as declared     bigint
 *   contains CHAR, CLOB or TEXT        as declared     text
 *   contains BLOB                      as declared     bytea
 *   none                               none            text
 *   contains REAL, FLOA or DOUB        as declared     double precision
 *   BOOL, BOOLEAN                      as declared     boolean
 *   NUMERIC, DECIMAL(p,s)              as declared     numeric
 *   any other (DATE, DATETIME, JSON)   as declared     text
 *
 *   PostgreSQL source, by format_type() name:
 *   PostgreSQL type                    SQLite target   PostgreSQL target
 *   ---------------------------------  --------------  -------------------
 *   smallint, integer, bigint, oid     INTEGER         as declared
 *   boolean                            INTEGER (1/0)   as declared
 *   real, double precision             REAL            as declared
 *   bytea                              BLOB            as declared
 *   numeric(p,s)                       TEXT (exact)    as declared
 *   any other: text, varchar, char,    TEXT            as declared
 *   json, jsonb, uuid, date, time(tz),
 *   timestamp(tz), interval, arrays
 *
 * so that every value keeps its ferry kind (pg.c's table: numeric and the
 * text-form types arrive as TEXT, bool as INT). What a target cannot hold is
 * refused naming table, column and key: a NUL byte in text (or in a blob
 * bound for a PostgreSQL column that is not bytea), a NaN for SQLite; and a
 * value the PostgreSQL column type rejects (SQLite's dynamic typing: 'abc'
 * in an INTEGER column) fails the batch with the server's message. SQLite
 * stores -0.0 in a REAL column as 0.0. Types PostgreSQL does not know yet
 * (enums, domains, extension types) are for the operator to create, or to
 * create the target tables; ferry creates none, and no defaults, sequences
 * or indexes beyond the primary key.
 */
#include "apply.h"

#include "../common/buf.h"
#include "../common/db/db.h"
#include "../common/log.h"
#include "../common/scope.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SQL_MAX (1u << 20)
/*
 * Rows one SQLite upsert statement writes at once. A statement's run costs
 * about as much as a row's upsert; its preparation grows with its rows (64
 * took 0.4 ms, as much as it saved on 1,000 rows).
 */
#define UPSERT_ROWS 16

/* A sequence that feeds a column of a target table (serial, identity). */
struct seq_col {
    int col;       /* index into the table's columns */
    char *seq;     /* owned: the sequence's name as regclass reads it */
    int64_t last;  /* largest value known set on it, INT64_MIN when unknown */
    int64_t batch; /* largest value of col in the current batch, INT64_MIN if none */
};

/* PostgreSQL: a staging table of one table's rows or keys, and its two statements. */
struct stage {
    struct ferry_stmt *run;   /* INSERT ... SELECT ... ON CONFLICT, or DELETE ... USING */
    struct ferry_stmt *clash; /* a staged key whose target row is another tenant's */
    int made;                 /* the table exists (upserts: with colmap's columns) */
    int dirty;                /* rows were staged in the current transaction */
};

struct table_stmts {
    struct ferry_stmt *upsert;
    size_t upsert_ncols;
    /*
     * SQLite: the upsert of many rows at once (NULL until a set has that
     * many), one statement run where upsert takes many.
     */
    struct ferry_stmt *upsert_many;
    size_t many;
    int *colmap; /* set column i -> target column index (for the check) */
    struct ferry_stmt *del;
    struct ferry_stmt *exists;
    struct ferry_stmt *elsewhere; /* the key's row, when another tenant's (new_owner_clash) */
    /* PostgreSQL: staging for upserts (the header comment) and for deletes (pg_apply_deletes) */
    struct stage upserts, deletes;
    int no_direct; /* a direct COPY of a page failed: stage from now on */
    int copy_text; /* the target's column types are the source's (PostgreSQL) */
    struct seq_col *seqs;
    size_t nseqs;
};

struct ferry_applier {
    struct ferry_db *db;
    struct ferry_scope *scope;
    struct ferry_value tenant;
    char *tenant_str;
    struct table_stmts *st; /* one per scope table */
    int dry_run;
    int *present;  /* table exists on the target */
    int pg;        /* the target is PostgreSQL */
    int others;    /* the batch being applied: the target holds other tenants (others_here) */
    int src_pg;    /* the source is PostgreSQL (declared types are format_type names) */
    int src_known; /* the manifest named the source's engine */
    int replica;   /* PostgreSQL session_replication_role = replica: no FK triggers */
};

/* A type from the wire goes into DDL: letters, digits, spaces, (),._[] only. */
static int safe_type(const char *t)
{
    for (const char *p = t; *p; p++) {
        char c = *p;

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == ' ' || c == '(' || c == ')' || c == ',' || c == '.' || c == '_' || c == '[' ||
              c == ']'))
            return 0;
    }
    return 1;
}

static int has_ci(const char *s, const char *sub)
{
    size_t n = strlen(sub);

    for (const char *p = s; *p; p++)
        if (strncasecmp(p, sub, n) == 0)
            return 1;
    return 0;
}

/* type is name or name(...) */
static int is_type(const char *type, const char *name)
{
    size_t n = strlen(name);

    return strncasecmp(type, name, n) == 0 && (type[n] == '\0' || type[n] == '(');
}

/*
 * The type a target table created by ferry declares for a source column
 * (the table in the header comment). Returns declared itself when it goes
 * into the DDL verbatim, else a static string.
 */
static const char *target_type(int target_pg, int src_pg, int src_known, const char *declared)
{
    const char *t = declared ? declared : "";

    if (!src_known || target_pg == src_pg)
        return t;
    if (src_pg) {
        if (is_type(t, "smallint") || is_type(t, "integer") || is_type(t, "bigint") ||
            is_type(t, "oid") || is_type(t, "boolean"))
            return "INTEGER";
        if (is_type(t, "real") || is_type(t, "double precision"))
            return "REAL";
        if (is_type(t, "bytea"))
            return "BLOB";
        return "TEXT";
    }
    /* SQLite's affinity rules, in SQLite's order */
    if (has_ci(t, "INT"))
        return "bigint";
    if (has_ci(t, "CHAR") || has_ci(t, "CLOB") || has_ci(t, "TEXT"))
        return "text";
    if (has_ci(t, "BLOB"))
        return "bytea";
    if (!*t)
        return "text";
    if (has_ci(t, "REAL") || has_ci(t, "FLOA") || has_ci(t, "DOUB"))
        return "double precision";
    if (is_type(t, "BOOL") || is_type(t, "BOOLEAN"))
        return "boolean";
    if (is_type(t, "NUMERIC") || is_type(t, "DECIMAL"))
        return "numeric";
    return "text";
}

static int create_sql(const struct ferry_applier *a, const struct ferry_table_info *ti,
                      struct ferry_buf *b)
{
    size_t npk = ferry_table_npk(ti);
    int rc = ferry_buf_adds(b, "CREATE TABLE ");

    if (!rc)
        rc = ferry_buf_add_ident(b, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " (");
    for (size_t i = 0; i < ti->ncols && !rc; i++) {
        const char *type = target_type(a->pg, a->src_pg, a->src_known, ti->cols[i].type);

        rc = ferry_buf_adds(b, i ? ", " : "");
        if (!rc)
            rc = ferry_buf_add_ident(b, ti->cols[i].name);
        if (!rc && *type)
            rc = ferry_buf_addf(b, " %s", type);
        /*
         * Key columns NOT NULL on SQLite too, which would take a NULL in a
         * key column that is not a rowid: ferry never writes one (a source
         * row with a NULL key is not copied), and verify could not see one
         * written behind its back.
         */
        if (!rc && (ti->cols[i].notnull || ti->cols[i].pk))
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
        /* checked at each batch's commit, as SQLite's are checked after the copy */
        if (!rc && a->pg)
            rc = ferry_buf_adds(b, " DEFERRABLE INITIALLY DEFERRED");
    }
    if (!rc)
        rc = ferry_buf_adds(b, ti->without_rowid && !a->pg ? ") WITHOUT ROWID" : ")");
    return rc;
}

/* The target table dst must have exactly the source's columns (by name). */
static int check_columns(const struct ferry_table_info *src, const struct ferry_table_info *dst,
                         int *same_types, struct ferry_error *err)
{
    int rc = FERRY_OK;

    *same_types = 1;
    for (size_t i = 0; i < src->ncols; i++) {
        int d = ferry_table_colidx(dst, src->cols[i].name);

        if (d < 0 || !src->cols[i].type || !dst->cols[d].type ||
            strcmp(src->cols[i].type, dst->cols[d].type) != 0)
            *same_types = 0;
    }
    for (size_t i = 0; i < src->ncols && !rc; i++)
        if (ferry_table_colidx(dst, src->cols[i].name) < 0)
            rc = ferry_error_set(err, FERRY_ESCHEMA,
                                 "target table %s has no column %s, which the source has; add "
                                 "it (ALTER TABLE %s ADD COLUMN %s) or drop the table",
                                 src->name, src->cols[i].name, src->name, src->cols[i].name);
    for (size_t i = 0; i < dst->ncols && !rc; i++)
        if (ferry_table_colidx(src, dst->cols[i].name) < 0)
            rc = ferry_error_set(err, FERRY_ESCHEMA,
                                 "target table %s has a column %s that the source does not have; "
                                 "drop it or make the schemas match",
                                 src->name, dst->cols[i].name);
    for (size_t k = 0; k < ferry_table_npk(src) && !rc; k++) {
        int s = ferry_table_pkcol(src, k);
        int d = ferry_table_pkcol(dst, k);

        if (d < 0 || strcmp(src->cols[s].name, dst->cols[d].name) != 0)
            rc = ferry_error_set(err, FERRY_ESCHEMA,
                                 "target table %s has a different primary key than the source: "
                                 "give it the source's key, then run ferry-dst verify --repair",
                                 src->name);
    }
    return rc;
}

/* PostgreSQL: a staging table's statements freed (a rollback took the table or not). */
static void forget_stage(struct stage *st)
{
    ferry_stmt_free(st->run);
    ferry_stmt_free(st->clash);
    memset(st, 0, sizeof(*st));
}

void ferry_applier_close(struct ferry_applier *a)
{
    if (!a)
        return;
    if (a->st && a->scope)
        for (size_t t = 0; t < a->scope->ntables; t++) {
            ferry_stmt_free(a->st[t].upsert);
            ferry_stmt_free(a->st[t].upsert_many);
            ferry_stmt_free(a->st[t].del);
            ferry_stmt_free(a->st[t].exists);
            ferry_stmt_free(a->st[t].elsewhere);
            forget_stage(&a->st[t].upserts);
            forget_stage(&a->st[t].deletes);
            free(a->st[t].colmap);
            for (size_t i = 0; i < a->st[t].nseqs; i++)
                free(a->st[t].seqs[i].seq);
            free(a->st[t].seqs);
        }
    free(a->st);
    free(a->present);
    ferry_scope_free(a->scope);
    ferry_db_close(a->db);
    free(a->tenant_str);
    free(a);
}

int ferry_applier_copy_text(struct ferry_applier *a, const char *table)
{
    int t = ferry_scope_find(a->scope, table);

    return t >= 0 && a->db && !a->dry_run && a->st[t].copy_text;
}

int ferry_applier_has_table(struct ferry_applier *a, const char *table)
{
    int t = ferry_scope_find(a->scope, table);

    return t >= 0 && a->present[t];
}

/*
 * *others: the target's root table holds a row of another tenant, so rows
 * of the scope may be another tenant's there (new_owner_clash). A tenant
 * mirrored into the same target brings its root row with it; a target
 * with none holds no row another tenant owns, and the check is spared.
 */
static int others_here(struct ferry_applier *a, int *others, struct ferry_error *err)
{
    const struct ferry_table_info *root = ferry_scope_root(a->scope);
    struct ferry_buf sql;
    int64_t n = 0;
    int rc;

    *others = 0;
    if (!a->present[0] || ferry_table_npk(root) != 1)
        return FERRY_OK;
    ferry_buf_init(&sql, SQL_MAX);
    rc = ferry_buf_adds(&sql, "SELECT count(*) FROM (SELECT 1 FROM ");
    if (!rc)
        rc = ferry_buf_add_ident(&sql, root->name);
    if (!rc)
        rc = ferry_buf_adds(&sql, " AS \"_r\" WHERE NOT COALESCE(\"_r\".");
    if (!rc)
        rc = ferry_buf_add_ident(&sql, root->cols[ferry_table_pkcol(root, 0)].name);
    if (!rc)
        rc = ferry_buf_adds(&sql, " = ?, FALSE) LIMIT 1) AS \"_x\"");
    if (rc)
        rc = ferry_error_set(err, rc, "cannot build the check of %s", root->name);
    else
        rc = ferry_db_query_int(a->db, sql.data, &a->tenant, 1, &n, err);
    ferry_buf_release(&sql);
    *others = n > 0;
    return rc;
}

int ferry_applier_holds_tenant(struct ferry_applier *a, int *holds, struct ferry_error *err)
{
    int64_t n = 0;
    int rc;

    *holds = 0;
    if (!a->present[0] || ferry_table_npk(ferry_scope_root(a->scope)) != 1)
        return FERRY_OK;
    rc = ferry_scope_tenant_rows(a->db, a->scope, &a->tenant, &n, err);
    *holds = n > 0;
    return rc;
}

/*
 * "<table>" as regclass and pg_get_serial_sequence read a name: quoted,
 * so its case is kept. Into b (reset first).
 */
static int quoted_name(struct ferry_buf *b, const char *table)
{
    ferry_buf_reset(b);
    return ferry_buf_add_ident(b, table);
}

/* The sequences (serial, identity; ascending) that feed columns of table t. */
static int find_sequences(struct ferry_applier *a, size_t t, struct ferry_error *err)
{
    static const char sql[] =
        "SELECT a.attname, pg_catalog.pg_get_serial_sequence(?, a.attname)"
        " FROM pg_catalog.pg_attribute a"
        " JOIN pg_catalog.pg_sequence q"
        "  ON q.seqrelid = pg_catalog.pg_get_serial_sequence(?, a.attname)::regclass"
        " WHERE a.attrelid = CAST(? AS regclass) AND a.attnum > 0 AND NOT a.attisdropped"
        " AND q.seqincrement > 0 ORDER BY a.attnum";
    const struct ferry_table_info *ti = &a->scope->tables[t].info;
    struct table_stmts *ts = &a->st[t];
    struct ferry_stmt *st = NULL;
    struct ferry_buf name;
    struct ferry_value v;
    int row = 0;
    int rc;

    ferry_buf_init(&name, 1024);
    rc = quoted_name(&name, ti->name);
    if (rc) {
        rc = ferry_error_set(err, rc, "table name too long");
        goto out;
    }
    v = ferry_value_text(name.data, name.len);
    rc = ferry_db_prepare(a->db, sql, &st, err);
    for (int i = 1; i <= 3 && !rc; i++)
        rc = ferry_stmt_bind(st, i, &v, err);
    while (!rc) {
        struct ferry_value col, seq;
        struct seq_col *grown;
        char cname[512];
        int c;

        rc = ferry_stmt_step(st, &row, err);
        if (rc || !row)
            break;
        ferry_stmt_column(st, 0, &col);
        ferry_stmt_column(st, 1, &seq);
        snprintf(cname, sizeof(cname), "%.*s", (int)col.u.s.n, col.u.s.p);
        c = ferry_table_colidx(ti, cname);
        if (c < 0 || seq.type != FERRY_TEXT)
            continue;
        grown = realloc(ts->seqs, (ts->nseqs + 1) * sizeof(*grown));
        if (!grown) {
            rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory");
            break;
        }
        ts->seqs = grown;
        ts->seqs[ts->nseqs].col = c;
        ts->seqs[ts->nseqs].last = INT64_MIN;
        ts->seqs[ts->nseqs].batch = INT64_MIN;
        ts->seqs[ts->nseqs].seq = malloc(seq.u.s.n + 1);
        if (!ts->seqs[ts->nseqs].seq) {
            rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory");
            break;
        }
        memcpy(ts->seqs[ts->nseqs].seq, seq.u.s.p, seq.u.s.n);
        ts->seqs[ts->nseqs].seq[seq.u.s.n] = '\0';
        ts->nseqs++;
    }
out:
    ferry_stmt_free(st);
    ferry_buf_release(&name);
    return rc;
}

/*
 * PostgreSQL session of the applier. session_replication_role = replica is
 * what logical replication's apply workers run with: foreign-key triggers
 * (and the application's ordinary triggers) do not fire for ferry's writes,
 * so a child that arrives before its parent (a copy while the source keeps
 * writing, a current image that references a newer row) does not fail the
 * batch, as on SQLite with foreign_keys off; ferry_applier_fk_check() counts
 * what is left. It needs a superuser or (PostgreSQL 15) GRANT SET ON
 * PARAMETER session_replication_role; without it the foreign keys stay
 * enforced, at each batch's commit for the tables ferry creates
 * (DEFERRABLE INITIALLY DEFERRED).
 */
static int pg_setup(struct ferry_applier *a, struct ferry_error *err)
{
    struct ferry_error e2;
    int rc;

    if (ferry_db_exec(a->db, "SET session_replication_role = replica", &e2) == 0)
        a->replica = 1;
    else
        log_info("target: foreign keys stay enforced during the sync (%s); a child copied "
                 "before its parent then fails its batch until the parent is there",
                 e2.msg);
    for (size_t t = 0; t < a->scope->ntables; t++) {
        rc = find_sequences(a, t, err);
        if (rc)
            return ferry_error_prefix(err, "sequences of %s", a->scope->tables[t].info.name);
    }
    return FERRY_OK;
}

int ferry_applier_missing(const char *table, struct ferry_error *err)
{
    return ferry_error_set(err, FERRY_ESCHEMA,
                           "target table %s is missing, but the state records its copy: the "
                           "target database was replaced or emptied; point [target] database "
                           "back at the copy, or copy again with a fresh [target] state directory",
                           table);
}

/* ferry_applier_open's work, on db when given (owned from here on), else on url opened here */
static int applier_open(const char *url, struct ferry_db *db, const struct ferry_manifest *m,
                        const char *tenant, int dry_run, const unsigned char *copied,
                        struct ferry_applier **out, struct ferry_error *err)
{
    struct ferry_applier *a = calloc(1, sizeof(*a));
    struct ferry_table_info *copy = NULL;
    struct ferry_buf sql;
    int rc;

    *out = NULL;
    ferry_buf_init(&sql, SQL_MAX);
    if (!a) {
        ferry_db_close(db);
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
    }
    a->db = db;
    a->dry_run = dry_run;
    a->pg = strncmp(url, "postgres", 8) == 0;
    a->src_known = m->engine != NULL;
    a->src_pg = m->engine && strcmp(m->engine, "postgresql") == 0;
    a->tenant_str = strdup(tenant);
    copy = calloc(m->ntables ? m->ntables : 1, sizeof(*copy));
    if (!a->tenant_str || !copy) {
        free(copy);
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < m->ntables; i++) {
        for (size_t c = 0; c < m->tables[i].ncols; c++)
            if (!safe_type(
                    target_type(a->pg, a->src_pg, a->src_known, m->tables[i].cols[c].type))) {
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
    rc = a->db ? FERRY_OK : ferry_db_open(url, dry_run ? 0 : FERRY_DB_CREATE, &a->db, err);
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
        struct ferry_table_info dst;
        int exists = 0;

        rc = ferry_db_table_columns(a->db, ti->name, &dst, &exists, err);
        if (rc)
            break;
        a->present[t] = exists;
        /*
         * A PostgreSQL source's COPY text goes into this table as it is
         * only where each column has the source's type (the table ferry
         * creates declares them so): the values' text forms are then read
         * by the same types' input functions.
         */
        if (exists) {
            rc = check_columns(ti, &dst, &a->st[t].copy_text, err);
            ferry_table_info_release(&dst);
            a->st[t].copy_text = a->st[t].copy_text && a->pg && a->src_pg;
            continue;
        }
        a->st[t].copy_text = a->pg && a->src_pg;
        for (size_t i = 0; copied && i < m->ntables && !rc; i++)
            if (copied[i] && strcmp(m->tables[i].name, ti->name) == 0)
                rc = ferry_applier_missing(ti->name, err);
        if (dry_run || rc)
            continue;
        ferry_buf_reset(&sql);
        if (create_sql(a, ti, &sql)) {
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
    if (!rc && a->pg && !dry_run)
        rc = pg_setup(a, err);
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

int ferry_applier_open(const char *url, const struct ferry_manifest *m, const char *tenant,
                       int dry_run, const unsigned char *copied, struct ferry_applier **out,
                       struct ferry_error *err)
{
    return applier_open(url, NULL, m, tenant, dry_run, copied, out, err);
}

int ferry_applier_open_db(struct ferry_db *db, const char *url, const struct ferry_manifest *m,
                          const char *tenant, const unsigned char *copied,
                          struct ferry_applier **out, struct ferry_error *err)
{
    return applier_open(url, db, m, tenant, 0, copied, out, err);
}

/* ---- PostgreSQL upserts through a staging table ---- */

/* "_ferry_s_<table>": a temporary table, so in the session's own schema. */
static int add_stage_name(struct ferry_buf *b, const char *table)
{
    return ferry_scope_add_objname(b, "s", table);
}

static int pg_drop_stage(struct ferry_applier *a, size_t t, struct ferry_error *err)
{
    struct ferry_buf sql;
    int rc;

    forget_stage(&a->st[t].upserts);
    ferry_buf_init(&sql, SQL_MAX);
    rc = ferry_buf_adds(&sql, "DROP TABLE IF EXISTS pg_temp.");
    if (!rc)
        rc = add_stage_name(&sql, a->scope->tables[t].info.name);
    if (rc)
        rc = ferry_error_set(err, rc, "cannot build SQL");
    else
        rc = ferry_db_exec(a->db, sql.data, err);
    ferry_buf_release(&sql);
    return rc;
}

/* " ON CONFLICT (<key of t>) DO UPDATE SET c1 = excluded.c1, ..." over the set's columns */
static int add_on_conflict(struct ferry_buf *b, const struct ferry_applier *a, size_t t,
                           const struct ferry_set *set)
{
    int rc = ferry_buf_adds(b, " ON CONFLICT (");

    if (!rc)
        rc = ferry_scope_keylist(a->scope, t, "", b);
    if (!rc)
        rc = ferry_buf_adds(b, ") DO UPDATE SET ");
    for (size_t i = 0; i < set->ncols && !rc; i++) {
        rc = ferry_buf_adds(b, i ? ", " : "");
        if (!rc)
            rc = ferry_buf_add_ident(b, set->cols[i]);
        if (!rc)
            rc = ferry_buf_adds(b, " = excluded.");
        if (!rc)
            rc = ferry_buf_add_ident(b, set->cols[i]);
    }
    return rc;
}

/* "c1", "c2", ... of the set, each prefixed with ctx */
static int add_set_cols(struct ferry_buf *b, const struct ferry_set *set, const char *ctx)
{
    int rc = FERRY_OK;

    for (size_t i = 0; i < set->ncols && !rc; i++) {
        rc = ferry_buf_adds(b, i ? ", " : "");
        if (!rc)
            rc = ferry_buf_adds(b, ctx);
        if (!rc)
            rc = ferry_buf_add_ident(b, set->cols[i]);
    }
    return rc;
}

/*
 * The clash check of staging table stage (quoted) of table t: a staged key
 * whose target row belongs to another tenant (the tenant its parameter).
 */
static int prepare_clash(struct ferry_applier *a, size_t t, const char *stage, const char *owner,
                         struct ferry_stmt **out, struct ferry_error *err)
{
    const struct ferry_table_info *ti = &a->scope->tables[t].info;
    struct ferry_buf sql;
    int rc;

    ferry_buf_init(&sql, SQL_MAX);
    rc = ferry_buf_adds(&sql, "SELECT ");
    if (!rc)
        rc = ferry_scope_keylist(a->scope, t, "\"_s\".", &sql);
    if (!rc)
        rc = ferry_buf_addf(&sql, " FROM %s AS \"_s\" JOIN ", stage);
    if (!rc)
        rc = ferry_buf_add_ident(&sql, ti->name);
    if (!rc)
        rc = ferry_buf_adds(&sql, " AS \"_o\" ON ");
    if (!rc)
        rc = ferry_scope_keymatch(&sql, ti, "\"_o\".", "\"_s\".");
    if (!rc)
        rc = ferry_buf_addf(&sql, " WHERE %s IS NOT NULL AND %s <> ? LIMIT 1", owner, owner);
    if (rc)
        rc = ferry_error_set(err, rc, "cannot build the clash check of %s", ti->name);
    else
        rc = ferry_db_prepare(a->db, sql.data, out, err);
    ferry_buf_release(&sql);
    return rc;
}

/*
 * Create staging table kind ("s", "x") of table t: columns cols (a column
 * list) with the table's types, no constraints, emptied at each commit
 * (one left by an earlier batch whose rollback did not take it away is
 * dropped); st made, its clash check prepared. Its quoted name in stage and
 * the owner of the target's row "_o" in owner, for the caller's statement.
 */
static int open_stage(struct ferry_applier *a, size_t t, const char *kind, const char *cols,
                      struct stage *st, struct ferry_buf *stage, struct ferry_buf *owner,
                      struct ferry_error *err)
{
    const char *table = a->scope->tables[t].info.name;
    struct ferry_buf sql;
    int rc;

    ferry_buf_init(&sql, SQL_MAX);
    rc = ferry_scope_add_objname(stage, kind, table);
    if (!rc)
        rc = ferry_scope_owner(a->scope, t, "\"_o\".", owner);
    if (!rc)
        rc = ferry_buf_addf(&sql,
                            "DROP TABLE IF EXISTS pg_temp.%s;\n"
                            "CREATE TEMP TABLE %s ON COMMIT DELETE ROWS AS SELECT %s FROM ",
                            stage->data, stage->data, cols);
    if (!rc)
        rc = ferry_buf_add_ident(&sql, table);
    if (!rc)
        rc = ferry_buf_adds(&sql, " WITH NO DATA");
    if (rc)
        rc = ferry_error_set(err, rc, "cannot build the staging table of %s", table);
    else
        rc = ferry_db_exec(a->db, sql.data, err);
    ferry_buf_release(&sql);
    if (rc)
        return rc;
    st->made = 1;
    return prepare_clash(a, t, stage->data, owner->data, &st->clash, err);
}

/*
 * The staging table for the set's columns (created within the batch's
 * transaction: a rollback takes it away, see forget_stage) and its two
 * statements.
 */
static int pg_prepare_stage(struct ferry_applier *a, size_t t, const struct ferry_set *set,
                            struct ferry_error *err)
{
    const struct ferry_table_info *ti = &a->scope->tables[t].info;
    struct table_stmts *ts = &a->st[t];
    struct ferry_buf sql, owner, stage;
    int rc;

    ferry_buf_init(&sql, SQL_MAX);
    ferry_buf_init(&owner, SQL_MAX);
    ferry_buf_init(&stage, 1024);
    rc = add_set_cols(&sql, set, "");
    if (rc) {
        rc = ferry_error_set(err, rc, "cannot build the staging table of %s", ti->name);
        goto out;
    }
    rc = open_stage(a, t, "s", sql.data, &ts->upserts, &stage, &owner, err);
    if (rc)
        goto out;
    ts->upsert_ncols = set->ncols;

    /*
     * merge: the text forms of the rows compare exactly where "=" does not
     * (-0 and 0, json, which has no "=" at all), so a row is rewritten only
     * when some value really changed
     */
    ferry_buf_reset(&sql);
    rc = ferry_buf_adds(&sql, "INSERT INTO ");
    if (!rc)
        rc = ferry_buf_add_ident(&sql, ti->name);
    if (!rc)
        rc = ferry_buf_adds(&sql, " AS \"_o\" (");
    if (!rc)
        rc = add_set_cols(&sql, set, "");
    /*
     * One row a key, as the target's "=" sees keys: a change batch may
     * carry one row twice, found by two logged keys that differ as text but
     * not as values (a numeric key written 30 and 30.00, a float -0 and 0),
     * and ON CONFLICT refuses to update a row twice in one statement. Both
     * are the same current image.
     */
    if (!rc)
        rc = ferry_buf_adds(&sql, ") SELECT DISTINCT ON (");
    if (!rc)
        rc = ferry_scope_keylist(a->scope, t, "", &sql);
    if (!rc)
        rc = ferry_buf_adds(&sql, ") ");
    if (!rc)
        rc = add_set_cols(&sql, set, "");
    if (!rc)
        rc = ferry_buf_addf(&sql, " FROM %s", stage.data);
    if (!rc)
        rc = add_on_conflict(&sql, a, t, set);
    if (!rc)
        rc = ferry_buf_adds(&sql, " WHERE ROW(");
    if (!rc)
        rc = add_set_cols(&sql, set, "\"_o\".");
    if (!rc)
        rc = ferry_buf_adds(&sql, ")::text IS DISTINCT FROM ROW(");
    if (!rc)
        rc = add_set_cols(&sql, set, "excluded.");
    if (!rc)
        rc = ferry_buf_adds(&sql, ")::text");
    if (rc)
        rc = ferry_error_set(err, rc, "cannot build the upsert of %s", ti->name);
    else
        rc = ferry_db_prepare(a->db, sql.data, &ts->upserts.run, err);
out:
    ferry_buf_release(&sql);
    ferry_buf_release(&owner);
    ferry_buf_release(&stage);
    return rc;
}

/*
 * SQLite's upsert of nrows rows of set's columns into table t: INSERT INTO
 * "t" AS "_o" (cols) VALUES (?, ...), ... ON CONFLICT (key) DO UPDATE SET
 * ... WHERE COALESCE(<owner> = ?, TRUE), the tenant the last parameter.
 */
static int prepare_upsert_sql(struct ferry_applier *a, size_t t, const struct ferry_set *set,
                              size_t nrows, struct ferry_stmt **out, struct ferry_error *err)
{
    const struct ferry_table_info *ti = &a->scope->tables[t].info;
    struct ferry_buf sql, owner;
    int rc;

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
        rc = ferry_buf_adds(&sql, ") VALUES ");
    for (size_t r = 0; r < nrows && !rc; r++) {
        rc = ferry_buf_adds(&sql, r ? ", (" : "(");
        for (size_t i = 0; i < set->ncols && !rc; i++)
            rc = ferry_buf_adds(&sql, i ? ", ?" : "?");
        if (!rc)
            rc = ferry_buf_adds(&sql, ")");
    }
    if (!rc)
        rc = add_on_conflict(&sql, a, t, set);
    if (!rc)
        rc = ferry_buf_addf(&sql, " WHERE COALESCE(%s = ?, TRUE)", owner.data);
    if (rc)
        rc = ferry_error_set(err, rc, "cannot build upsert for %s", ti->name);
    else
        rc = ferry_db_prepare(a->db, sql.data, out, err);
    ferry_buf_release(&sql);
    ferry_buf_release(&owner);
    return rc;
}

static int prepare_upsert(struct ferry_applier *a, size_t t, const struct ferry_set *set,
                          struct ferry_error *err)
{
    const struct ferry_table_info *ti = &a->scope->tables[t].info;
    struct table_stmts *ts = &a->st[t];
    int rc = FERRY_OK;

    if ((ts->upsert || ts->upserts.made) && ts->upsert_ncols == set->ncols) {
        int same = 1;

        for (size_t i = 0; i < set->ncols && same; i++)
            same = ts->colmap[i] == ferry_table_colidx(ti, set->cols[i]);
        if (same)
            return FERRY_OK;
    }
    ferry_stmt_free(ts->upsert);
    ts->upsert = NULL;
    ferry_stmt_free(ts->upsert_many);
    ts->upsert_many = NULL;
    ts->many = 0;
    if (ts->upserts.made) {
        rc = pg_drop_stage(a, t, err);
        if (rc)
            return rc;
    }
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
            return ferry_error_set(err, FERRY_EPROTO, "batch for %s lacks key column %s", ti->name,
                                   kc);
    }
    if (a->pg)
        return pg_prepare_stage(a, t, set, err);
    rc = prepare_upsert_sql(a, t, set, 1, &ts->upsert, err);
    if (!rc)
        ts->upsert_ncols = set->ncols;
    /* at most UPSERT_ROWS rows, and within SQLite's oldest limit of 999 parameters */
    ts->many = set->ncols ? 998 / set->ncols : 0;
    if (ts->many > UPSERT_ROWS)
        ts->many = UPSERT_ROWS;
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
        rc = ferry_buf_addf(&sql, " AS \"_o\" WHERE %s AND COALESCE(%s = ?, TRUE)", where.data,
                            owner.data);
    if (!rc) {
        rc = ferry_db_prepare(a->db, sql.data, &ts->del, err);
        ferry_buf_reset(&sql);
        if (!rc && (ferry_buf_adds(&sql, "SELECT ") || ferry_buf_adds(&sql, owner.data) ||
                    ferry_buf_adds(&sql, " FROM ") || ferry_buf_add_ident(&sql, ti->name) ||
                    ferry_buf_addf(&sql, " AS \"_o\" WHERE %s", where.data)))
            rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        if (!rc)
            rc = ferry_db_prepare(a->db, sql.data, &ts->exists, err);
        ferry_buf_reset(&sql);
        if (!rc && (ferry_buf_adds(&sql, "SELECT 1 FROM ") || ferry_buf_add_ident(&sql, ti->name) ||
                    ferry_buf_addf(&sql, " AS \"_o\" WHERE %s AND NOT COALESCE(%s = ?, TRUE)",
                                   where.data, owner.data)))
            rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        if (!rc)
            rc = ferry_db_prepare(a->db, sql.data, &ts->elsewhere, err);
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
        case FERRY_TEXT: {
            /* its first 40 bytes, control bytes (a NUL too) as \xNN: the line stays one */
            char esc[4 * 40 + 1];
            size_t e = 0;

            for (size_t j = 0; j < v->u.s.n && j < 40; j++) {
                unsigned char ch = (unsigned char)v->u.s.p[j];

                if (ch < 0x20 || ch == 0x7f)
                    e += (size_t)snprintf(esc + e, sizeof(esc) - e, "\\x%02x", ch);
                else
                    esc[e++] = (char)ch;
            }
            esc[e] = '\0';
            w = snprintf(out + off, size - off, "%s%s='%s'", off ? ", " : "", names[i], esc);
            break;
        }
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

/* What a clash's message says of the batch: nothing committed, or its deletes only. */
#define CLASH_NOTHING                                                                              \
    "nothing of this batch was committed: resolve the clash on the target and rerun"
#define CLASH_DELETES                                                                              \
    "of this batch only its deletes were committed: rerun once that tenant's sync has run (two "   \
    "tenants of this target trading rows), or resolve the clash on the target"

/* The clash of table t's row whose n values vals are the columns names. */
static int clash_of(struct ferry_applier *a, size_t t, const char *const *names,
                    const struct ferry_value *vals, size_t n, struct ferry_error *err)
{
    const struct ferry_table_info *ti = &a->scope->tables[t].info;
    char key[200];

    describe_key(ti, names, vals, n, key, sizeof(key));
    return ferry_error_set(err, FERRY_ECLASH,
                           "target row %s (%s) belongs to another tenant than %s; %s", ti->name,
                           key, a->tenant_str, CLASH_NOTHING);
}

static int clash(struct ferry_applier *a, size_t t, const struct ferry_set *set,
                 const struct ferry_value *row, struct ferry_error *err)
{
    return clash_of(a, t, (const char *const *)set->cols, row, set->ncols, err);
}

/*
 * A delete of a key the target holds for another tenant: this tenant does
 * not hold it, which is what the delete wants, so it is skipped, not a
 * clash. The row was moved to that tenant (whose sync into this target
 * took it first), or two tenants of this target traded rows and this
 * batch is run again after its deletes were committed (ferry_applier_apply).
 */
static void skipped_delete(struct ferry_applier *a, size_t t, const char *const *names,
                           const struct ferry_value *key, size_t n)
{
    const struct ferry_table_info *ti = &a->scope->tables[t].info;
    char desc[200];

    describe_key(ti, names, key, n, desc, sizeof(desc));
    log_warn("delete of %s (%s) skipped: the target holds that row for another tenant than %s",
             ti->name, desc, a->tenant_str);
}

/*
 * Run a staging table's clash check st (prepare_clash) for this tenant: a
 * row it finds (the key) is the clash, named.
 */
static int check_staged_clash(struct ferry_applier *a, size_t t, struct ferry_stmt *st, int deletes,
                              struct ferry_error *err)
{
    const struct ferry_table_info *ti = &a->scope->tables[t].info;
    struct ferry_value key[FERRY_MAX_KEY_COLS];
    const char *names[FERRY_MAX_KEY_COLS];
    size_t npk = ferry_table_npk(ti);
    int has = 0;
    int rc;

    ferry_stmt_reset(st);
    rc = ferry_stmt_bind(st, 1, &a->tenant, err);
    if (!rc)
        rc = ferry_stmt_step(st, &has, err);
    if (!rc && has) {
        for (size_t k = 0; k < npk; k++) {
            names[k] = ti->cols[ferry_table_pkcol(ti, k)].name;
            ferry_stmt_column(st, (int)k, &key[k]);
        }
        if (deletes)
            skipped_delete(a, t, names, key, npk); /* the first; the others alike */
        else
            rc = clash_of(a, t, names, key, npk, err);
    }
    ferry_stmt_reset(st);
    return rc;
}

/*
 * Ready staging table kind ("s" upserts, "x" deletes) of table to take
 * rows: emptied when rows were staged earlier in this transaction (st->dirty),
 * which they are from now on; its unquoted name in name.
 */
static int pg_stage_ready(struct ferry_applier *a, const char *kind, const char *table,
                          struct stage *st, char name[FERRY_OBJNAME_SIZE], struct ferry_error *err)
{
    int rc = ferry_scope_objname(name, kind, table);

    if (!rc && st->dirty) {
        struct ferry_buf sql;

        ferry_buf_init(&sql, 1024);
        rc = ferry_buf_adds(&sql, "TRUNCATE ");
        if (!rc)
            rc = ferry_scope_add_objname(&sql, kind, table);
        rc =
            rc ? ferry_error_set(err, rc, "cannot build SQL") : ferry_db_exec(a->db, sql.data, err);
        ferry_buf_release(&sql);
    } else if (rc) {
        rc = ferry_error_set(err, rc, "cannot name the staging table of %s", table);
    }
    st->dirty = 1;
    return rc;
}

/* Prefix err with the table and the row's key: "applying posts (id=5): ..." */
static int row_error(struct ferry_applier *a, size_t t, const struct ferry_set *set,
                     const struct ferry_value *row, struct ferry_error *err)
{
    char key[200];

    describe_key(&a->scope->tables[t].info, set->cols, row, set->ncols, key, sizeof(key));
    return ferry_error_prefix(err, "applying %s (%s)", set->table, key);
}

/*
 * COPY the set's rows into table (the target itself, or its staging table).
 * keys: the set is keys to delete, and a key the target's columns cannot
 * hold (FERRY_EDATA: a NUL byte or bytes that are not UTF-8 in text) is
 * left out: no row of the target has it, and refusing it would stop every
 * later batch behind a delete with nothing to delete.
 */
static int pg_copy_set(struct ferry_applier *a, size_t t, const char *table,
                       const struct ferry_set *set, int keys, struct ferry_error *err)
{
    int rc = ferry_db_copy_begin(a->db, table, set->cols, set->ncols, err);

    /* COPY text from a PostgreSQL source: the lines as they came */
    for (size_t r = 0; r < set->nrows && !rc && set->copy; r++)
        rc = ferry_db_copy_line(a->db, set->vals[r].u.s.p, set->vals[r].u.s.n, err);
    for (size_t r = 0; r < set->nrows && !rc && !set->copy; r++) {
        int fit;

        rc = keys ? ferry_db_copy_row_fit(a->db, &set->vals[r * set->ncols], &fit, err)
                  : ferry_db_copy_row(a->db, &set->vals[r * set->ncols], err);
        if (rc)
            return row_error(a, t, set, &set->vals[r * set->ncols], err);
    }
    if (!rc)
        rc = ferry_db_copy_end(a->db, NULL, err);
    if (rc)
        ferry_error_prefix(err, "applying %s", set->table);
    return rc;
}

/*
 * Field i of a COPY text line as an integer: 1 when it is one (a
 * sequence-fed column's value: decimal digits, no escapes), 0 for \N or
 * anything else.
 */
static int copy_field_int(const struct ferry_value *line, size_t i, int64_t *out)
{
    const char *p = line->u.s.p;
    const char *end = p + line->u.s.n;
    int neg = 0;
    uint64_t v = 0;

    for (; i > 0 && p < end; i--) {
        p = memchr(p, '\t', (size_t)(end - p));
        if (!p)
            return 0;
        p++;
    }
    if (i > 0 || p == end)
        return 0;
    if (*p == '-') {
        neg = 1;
        p++;
    }
    if (p == end || *p < '0' || *p > '9')
        return 0;
    for (; p < end && *p != '\t'; p++) {
        if (*p < '0' || *p > '9' || v > (UINT64_MAX - 9) / 10)
            return 0;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    if (v > (uint64_t)INT64_MAX + neg)
        return 0;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 1;
}

/* Largest value of each sequence-fed column in the set (see pg_move_sequences). */
static void note_sequences(struct ferry_applier *a, size_t t, const struct ferry_set *set)
{
    struct table_stmts *ts = &a->st[t];

    for (size_t q = 0; q < ts->nseqs; q++) {
        struct seq_col *sc = &ts->seqs[q];

        for (size_t i = 0; i < set->ncols; i++) {
            if (ts->colmap[i] != sc->col)
                continue;
            for (size_t r = 0; r < set->nrows && set->copy; r++) {
                int64_t v;

                if (copy_field_int(&set->vals[r], i, &v) && v > sc->batch)
                    sc->batch = v;
            }
            for (size_t r = 0; r < set->nrows && !set->copy; r++) {
                const struct ferry_value *v = &set->vals[r * set->ncols + i];

                if (v->type == FERRY_INT && v->u.i > sc->batch)
                    sc->batch = v->u.i;
            }
        }
    }
}

static int pg_apply_upserts(struct ferry_applier *a, size_t t, const struct ferry_set *set,
                            int snapshot, struct ferry_apply_counts *c, struct ferry_error *err)
{
    const struct ferry_table_info *ti = &a->scope->tables[t].info;
    struct table_stmts *ts = &a->st[t];
    char stage[FERRY_OBJNAME_SIZE];
    int has = 0;
    int rc;

    rc = prepare_upsert(a, t, set, err);
    if (rc)
        return rc;
    if (set->nrows == 0)
        return FERRY_OK;
    if (snapshot && !ts->no_direct) {
        struct ferry_error e2;

        rc = ferry_db_exec(a->db, "SAVEPOINT ferry_direct", err);
        if (rc)
            return rc;
        if (pg_copy_set(a, t, ti->name, set, 0, &e2) == 0) {
            rc = ferry_db_exec(a->db, "RELEASE SAVEPOINT ferry_direct", err);
            if (!rc) {
                note_sequences(a, t, set);
                c->upserted += (int64_t)set->nrows;
            }
            return rc;
        }
        /* a key already there (a resumed copy), or a bad row: staging decides */
        log_debug("direct copy into %s failed (%s); staging from now on", ti->name, e2.msg);
        ts->no_direct = 1;
        rc = ferry_db_exec(a->db, "ROLLBACK TO SAVEPOINT ferry_direct", err);
        if (rc)
            return rc;
    }
    rc = pg_stage_ready(a, "s", ti->name, &ts->upserts, stage, err);
    if (!rc)
        rc = pg_copy_set(a, t, stage, set, 0, err);
    if (!rc)
        rc = check_staged_clash(a, t, ts->upserts.clash, 0, err);
    if (rc)
        return rc;
    ferry_stmt_reset(ts->upserts.run);
    rc = ferry_stmt_step(ts->upserts.run, &has, err);
    if (rc)
        return ferry_error_prefix(err, "applying %s", set->table);
    /* the rows as written: none may be another tenant's through its parents (new_owner_clash) */
    if (!snapshot && a->others)
        rc = check_staged_clash(a, t, ts->upserts.clash, 0, err);
    if (rc)
        return rc;
    note_sequences(a, t, set);
    c->upserted += (int64_t)set->nrows;
    return FERRY_OK;
}

/*
 * Rows first..first+n of set with st (ts->upsert for one row, upsert_many
 * for ts->many). Every row is written or, when the target's row is another
 * tenant's, not (the upsert's WHERE): fewer changes than rows is a clash,
 * which the rows one by one then name.
 */
static int upsert_rows(struct ferry_applier *a, size_t t, const struct ferry_set *set,
                       struct ferry_stmt *st, size_t first, size_t n, struct ferry_error *err)
{
    struct table_stmts *ts = &a->st[t];
    int has = 0;
    int rc = FERRY_OK;

    ferry_stmt_reset(st);
    /* by reference: the batch outlives the step, and a reset unbinds */
    for (size_t r = 0; r < n && !rc; r++) {
        const struct ferry_value *row = &set->vals[(first + r) * set->ncols];

        for (size_t i = 0; i < set->ncols && !rc; i++) {
            rc = ferry_stmt_bind_ref(st, (int)(r * set->ncols + i) + 1, &row[i], err);
            if (rc) {
                ferry_error_prefix(err, "column %s", set->cols[i]);
                row_error(a, t, set, row, err);
            }
        }
    }
    if (!rc)
        rc = ferry_stmt_bind(st, (int)(n * set->ncols) + 1, &a->tenant, err);
    if (rc)
        return rc;
    rc = ferry_stmt_step(st, &has, err);
    if (rc)
        return ferry_error_prefix(err, "applying %s", set->table);
    if (ferry_stmt_changes(st) == (int64_t)n)
        return FERRY_OK;
    if (n == 1)
        return clash(a, t, set, &set->vals[first * set->ncols], err);
    for (size_t r = first; r < first + n && !rc; r++)
        rc = upsert_rows(a, t, set, ts->upsert, r, 1, err);
    if (!rc)
        rc = ferry_error_set(err, FERRY_EINTERNAL,
                             "applying %s: %" PRId64 " of %zu rows written, and each alone is",
                             set->table, ferry_stmt_changes(st), n);
    return rc;
}

/*
 * SQLite, after a change batch's upserts of set: whether a row as written
 * is another tenant's through its parents on the target (a clash, named).
 * The upsert's own check is of the row it replaces; a new row is nobody's
 * until written, and its parents decide. Two tenants of one target: a
 * channel moved from tenant 1 to tenant 2, whose posts come to tenant 2
 * before the channel does. Were such a post written under the channel the
 * target still holds for tenant 1, tenant 1's delete of it (the move) would
 * find it tenant 1's and delete it, after tenant 2's mark had passed it: a
 * row lost with both syncs content. A clash instead waits for tenant 1's
 * sync to take the channel away; then the post lands with no owner, and the
 * channel, which comes later, adopts it. (PostgreSQL: pg_apply_upserts
 * runs the staged clash check again after writing.)
 */
static int new_owner_clash(struct ferry_applier *a, size_t t, const struct ferry_set *set,
                           struct ferry_error *err)
{
    const struct ferry_table_info *ti = &a->scope->tables[t].info;
    struct table_stmts *ts = &a->st[t];
    size_t npk = ferry_table_npk(ti);
    size_t at[FERRY_MAX_KEY_COLS];
    int rc = FERRY_OK;

    for (size_t k = 0; k < npk; k++) {
        const char *name = ti->cols[ferry_table_pkcol(ti, k)].name;

        at[k] = set->ncols;
        for (size_t i = 0; i < set->ncols; i++)
            if (strcmp(set->cols[i], name) == 0)
                at[k] = i;
        if (at[k] == set->ncols)
            return ferry_error_set(err, FERRY_EPROTO, "a change of %s without its key column %s",
                                   ti->name, name);
    }
    /* the key's row of another tenant: prepared with the delete, which shares its SQL */
    rc = prepare_delete(a, t, err);
    for (size_t r = 0; r < set->nrows && !rc; r++) {
        const struct ferry_value *row = &set->vals[r * set->ncols];
        int has = 0;

        ferry_stmt_reset(ts->elsewhere);
        for (size_t k = 0; k < npk && !rc; k++)
            rc = ferry_stmt_bind(ts->elsewhere, (int)k + 1, &row[at[k]], err);
        if (!rc)
            rc = ferry_stmt_bind(ts->elsewhere, (int)npk + 1, &a->tenant, err);
        if (!rc)
            rc = ferry_stmt_step(ts->elsewhere, &has, err);
        if (!rc && has)
            rc = clash(a, t, set, row, err);
    }
    if (ts->elsewhere)
        ferry_stmt_reset(ts->elsewhere);
    return rc;
}

static int apply_upserts(struct ferry_applier *a, size_t t, const struct ferry_set *set,
                         struct ferry_apply_counts *c, struct ferry_error *err)
{
    struct table_stmts *ts = &a->st[t];
    size_t r = 0;
    int rc = prepare_upsert(a, t, set, err);

    if (!rc && !ts->upsert_many && ts->many > 1 && set->nrows >= ts->many)
        rc = prepare_upsert_sql(a, t, set, ts->many, &ts->upsert_many, err);
    for (; !rc && ts->upsert_many && r + ts->many <= set->nrows; r += ts->many)
        rc = upsert_rows(a, t, set, ts->upsert_many, r, ts->many, err);
    for (; !rc && r < set->nrows; r++)
        rc = upsert_rows(a, t, set, ts->upsert, r, 1, err);
    if (!rc)
        c->upserted += (int64_t)set->nrows;
    if (ts->upsert)
        ferry_stmt_reset(ts->upsert);
    if (ts->upsert_many)
        ferry_stmt_reset(ts->upsert_many);
    return rc;
}

/* A delete set names the table's key columns, in key order. */
static int check_delete_set(const struct ferry_table_info *ti, const struct ferry_set *set,
                            struct ferry_error *err)
{
    size_t npk = ferry_table_npk(ti);

    if (set->ncols != npk)
        return ferry_error_set(err, FERRY_EPROTO,
                               "delete set for %s has %zu key values, key has %zu", ti->name,
                               set->ncols, npk);
    for (size_t k = 0; k < npk; k++)
        if (strcmp(set->cols[k], ti->cols[ferry_table_pkcol(ti, k)].name) != 0)
            return ferry_error_set(err, FERRY_EPROTO, "delete set for %s: key column %zu is %s",
                                   ti->name, k, set->cols[k]);
    return FERRY_OK;
}

static int apply_deletes(struct ferry_applier *a, size_t t, const struct ferry_set *set,
                         struct ferry_apply_counts *c, struct ferry_error *err)
{
    const struct ferry_table_info *ti = &a->scope->tables[t].info;
    struct table_stmts *ts = &a->st[t];
    size_t npk = ferry_table_npk(ti);
    int said = 0;
    int rc;

    rc = check_delete_set(ti, set, err);
    if (rc)
        return rc;
    rc = prepare_delete(a, t, err);
    for (size_t r = 0; r < set->nrows && !rc; r++) {
        const struct ferry_value *key = &set->vals[r * npk];
        int has = 0;

        ferry_stmt_reset(ts->del);
        for (size_t k = 0; k < npk && !rc; k++)
            rc = ferry_stmt_bind(ts->del, (int)k + 1, &key[k], err);
        if (rc == FERRY_EDATA) {
            /* a key SQLite cannot hold (a NaN): no row has it (pg_copy_set says why) */
            ferry_error_clear(err);
            rc = FERRY_OK;
            continue;
        }
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
        /* Nothing deleted: already gone, or another tenant's row (skipped, said once a set). */
        ferry_stmt_reset(ts->exists);
        for (size_t k = 0; k < npk && !rc; k++)
            rc = ferry_stmt_bind(ts->exists, (int)k + 1, &key[k], err);
        if (!rc)
            rc = ferry_stmt_step(ts->exists, &has, err);
        if (!rc && has && !said++)
            skipped_delete(a, t, (const char *const *)set->cols, key, npk);
    }
    return rc;
}

/*
 * The staging table of table t's keys on PostgreSQL ("_ferry_x_<table>",
 * temporary, emptied at each commit) and its two statements.
 */
static int pg_prepare_del_stage(struct ferry_applier *a, size_t t, struct ferry_error *err)
{
    const struct ferry_table_info *ti = &a->scope->tables[t].info;
    struct table_stmts *ts = &a->st[t];
    struct ferry_buf sql, owner, stage, match;
    int rc;

    if (ts->deletes.made)
        return FERRY_OK;
    ferry_buf_init(&sql, SQL_MAX);
    ferry_buf_init(&owner, SQL_MAX);
    ferry_buf_init(&stage, 1024);
    ferry_buf_init(&match, SQL_MAX);
    rc = ferry_scope_keymatch(&match, ti, "\"_o\".", "\"_s\".");
    /*
     * Only an identical key: from a PostgreSQL source, the delete of numeric
     * 0.10 after its row's key became 0.1 (upserted before it, ON CONFLICT
     * giving the row the new text) is of a key the target no longer holds.
     */
    for (size_t k = 0; k < ferry_table_npk(ti) && !rc && a->src_pg; k++) {
        const char *col = ti->cols[ferry_table_pkcol(ti, k)].name;

        if (ferry_scope_pg_key_exact(ti->cols[ferry_table_pkcol(ti, k)].type))
            continue;
        for (int side = 0; side < 2 && !rc; side++) {
            rc = ferry_buf_adds(&match, side ? " = \"_s\"." : " AND \"_o\".");
            if (!rc)
                rc = ferry_buf_add_ident(&match, col);
            if (!rc)
                rc = ferry_buf_adds(&match, "::pg_catalog.text COLLATE pg_catalog.\"C\"");
        }
    }
    if (!rc)
        rc = ferry_scope_keylist(a->scope, t, "", &sql);
    if (rc) {
        rc = ferry_error_set(err, rc, "cannot build the delete staging of %s", ti->name);
        goto out;
    }
    rc = open_stage(a, t, "x", sql.data, &ts->deletes, &stage, &owner, err);
    if (rc)
        goto out;
    /* the tenant's rows among the keys, and rows whose owner is gone, as one by one */
    ferry_buf_reset(&sql);
    rc = ferry_buf_adds(&sql, "DELETE FROM ");
    if (!rc)
        rc = ferry_buf_add_ident(&sql, ti->name);
    if (!rc)
        rc = ferry_buf_addf(&sql,
                            " AS \"_o\" USING %s AS \"_s\" WHERE %s AND COALESCE(%s = ?, TRUE)",
                            stage.data, match.data, owner.data);
    if (rc)
        rc = ferry_error_set(err, rc, "cannot build the deletes of %s", ti->name);
    else
        rc = ferry_db_prepare(a->db, sql.data, &ts->deletes.run, err);
out:
    ferry_buf_release(&sql);
    ferry_buf_release(&owner);
    ferry_buf_release(&stage);
    ferry_buf_release(&match);
    return rc;
}

/*
 * A set of deletes on PostgreSQL: the keys are copied into their staging
 * table, then one DELETE ... USING takes the tenant's rows among them and
 * one query looks for a key whose row is left: another tenant's, a clash.
 * Three statements for the set, where a statement a key (two when the row
 * was gone already, as every child of a cascade is) took a round trip each.
 */
static int pg_apply_deletes(struct ferry_applier *a, size_t t, const struct ferry_set *set,
                            struct ferry_apply_counts *c, struct ferry_error *err)
{
    const struct ferry_table_info *ti = &a->scope->tables[t].info;
    struct table_stmts *ts = &a->st[t];
    char stage[FERRY_OBJNAME_SIZE];
    int has = 0;
    int rc;

    rc = check_delete_set(ti, set, err);
    if (rc)
        return rc;
    if (set->nrows == 0)
        return FERRY_OK;
    rc = pg_prepare_del_stage(a, t, err);
    if (!rc)
        rc = pg_stage_ready(a, "x", ti->name, &ts->deletes, stage, err);
    if (!rc)
        rc = pg_copy_set(a, t, stage, set, 1, err); /* the set is the keys */
    if (rc)
        return rc;
    ferry_stmt_reset(ts->deletes.run);
    rc = ferry_stmt_bind(ts->deletes.run, 1, &a->tenant, err);
    if (!rc)
        rc = ferry_stmt_step(ts->deletes.run, &has, err);
    if (!rc)
        c->deleted += ferry_stmt_changes(ts->deletes.run);
    ferry_stmt_reset(ts->deletes.run);
    if (rc)
        return ferry_error_prefix(err, "applying %s", set->table);
    /* what the DELETE left of the keys is another tenant's: skipped, said once */
    return check_staged_clash(a, t, ts->deletes.clash, 1, err);
}

/*
 * Move each sequence that feeds a column past the largest value the batch
 * wrote there (never backwards), so that the application on the target can
 * keep inserting without a key collision. setval is not transactional: a
 * batch rolled back afterwards leaves a gap, which sequences allow.
 */
static int pg_move_sequences(struct ferry_applier *a, struct ferry_error *err)
{
    struct ferry_buf sql;
    int rc = FERRY_OK;

    /* one statement of literals, one round trip (a prepared one took five, every page) */
    ferry_buf_init(&sql, 4096);
    for (size_t t = 0; t < a->scope->ntables && !rc; t++) {
        for (size_t q = 0; q < a->st[t].nseqs && !rc; q++) {
            struct seq_col *sc = &a->st[t].seqs[q];

            if (sc->batch == INT64_MIN || sc->batch <= sc->last)
                continue;
            ferry_buf_reset(&sql);
            rc = ferry_buf_adds(&sql, "SELECT pg_catalog.setval(CAST(");
            if (!rc)
                rc = ferry_buf_add_literal(&sql, sc->seq);
            if (!rc)
                rc = ferry_buf_addf(&sql,
                                    " AS regclass), %" PRId64 ") WHERE %" PRId64
                                    " > COALESCE(pg_catalog.pg_sequence_last_value(CAST(",
                                    sc->batch, sc->batch);
            if (!rc)
                rc = ferry_buf_add_literal(&sql, sc->seq);
            if (!rc)
                rc = ferry_buf_adds(&sql, " AS regclass)), 0)");
            if (rc)
                rc = ferry_error_set(err, rc, "cannot build SQL");
            else
                rc = ferry_db_exec(a->db, sql.data, err);
            if (rc)
                ferry_error_prefix(err, "moving sequence %s", sc->seq);
            else
                sc->last = sc->batch;
        }
    }
    ferry_buf_release(&sql);
    return rc;
}

/* After a rollback: staging tables created in it are gone, batch maxima are void. */
static void pg_after_rollback(struct ferry_applier *a)
{
    for (size_t t = 0; t < a->scope->ntables; t++) {
        struct table_stmts *ts = &a->st[t];

        forget_stage(&ts->upserts);
        forget_stage(&ts->deletes);
        for (size_t q = 0; q < ts->nseqs; q++)
            ts->seqs[q].batch = INT64_MIN;
    }
}

int ferry_applier_durable(struct ferry_applier *a, int durable, struct ferry_error *err)
{
    return a->db ? ferry_db_durable(a->db, durable, err) : FERRY_OK;
}

/*
 * One transaction of batch b's sets (only its deletes when deletes_only),
 * committed, or rolled back whole.
 */
static int apply_sets(struct ferry_applier *a, const struct ferry_batch *b, int deletes_only,
                      struct ferry_apply_counts *counts, struct ferry_error *err)
{
    struct ferry_apply_counts c = {0, 0};
    int rc;

    rc = ferry_db_begin(a->db, err);
    if (rc)
        return rc;
    a->others = 0;
    if (b->kind == FERRY_KIND_CHANGES && !deletes_only) {
        rc = others_here(a, &a->others, err);
        if (rc) {
            ferry_db_rollback(a->db);
            return rc;
        }
    }
    if (a->pg)
        for (size_t t = 0; t < a->scope->ntables; t++) {
            a->st[t].upserts.dirty = 0; /* ON COMMIT DELETE ROWS emptied them */
            a->st[t].deletes.dirty = 0;
        }
    for (size_t i = 0; i < b->nsets && !rc; i++) {
        const struct ferry_set *set = &b->sets[i];
        int t = ferry_scope_find(a->scope, set->table);

        if (t < 0) {
            rc = ferry_error_set(err, FERRY_EPROTO,
                                 "batch names table %.64s, which is not in the manifest",
                                 set->table);
            break;
        }
        if (deletes_only && set->op != FERRY_OP_DELETE)
            continue;
        if (set->copy && (!a->pg || b->kind != FERRY_KIND_SNAPSHOT)) {
            rc = ferry_error_set(err, FERRY_EPROTO,
                                 "batch for %.64s holds COPY text, which this target did not "
                                 "ask for",
                                 set->table);
            break;
        }
        if (set->op == FERRY_OP_UPSERT && a->pg)
            rc = pg_apply_upserts(a, (size_t)t, set, b->kind == FERRY_KIND_SNAPSHOT, &c, err);
        else if (set->op == FERRY_OP_UPSERT)
            rc = apply_upserts(a, (size_t)t, set, &c, err);
        else if (a->pg)
            rc = pg_apply_deletes(a, (size_t)t, set, &c, err);
        else
            rc = apply_deletes(a, (size_t)t, set, &c, err);
        if (!rc && set->op == FERRY_OP_UPSERT && !a->pg && a->others)
            rc = new_owner_clash(a, (size_t)t, set, err);
    }
    if (!rc && a->pg)
        rc = pg_move_sequences(a, err);
    if (!rc)
        rc = ferry_db_commit(a->db, err);
    if (rc) {
        ferry_db_rollback(a->db);
        if (a->pg)
            pg_after_rollback(a);
        return rc;
    }
    if (!rc && counts) {
        counts->upserted += c.upserted;
        counts->deleted += c.deleted;
    }
    return rc;
}

int ferry_applier_apply(struct ferry_applier *a, const struct ferry_batch *b,
                        struct ferry_apply_counts *counts, struct ferry_error *err)
{
    struct ferry_error e2;
    size_t i;
    int rc;

    if (a->dry_run || !a->db)
        return ferry_error_set(err, FERRY_EINTERNAL, "applier opened for a dry run");
    rc = apply_sets(a, b, 0, counts, err);
    if (rc != FERRY_ECLASH || b->kind != FERRY_KIND_CHANGES)
        return rc;
    /*
     * Two tenants of one target trading rows: each one's batch deletes the
     * row it lost and takes the one the other still holds, so each clashes
     * on the other's, for good. This tenant's deletes alone are safe to
     * commit (its rows the source no longer has; the mark stays, a rerun
     * deletes nothing more): then the other's next sync takes its row,
     * and this one's rerun the row that other one gave up.
     */
    for (i = 0; i < b->nsets && b->sets[i].op != FERRY_OP_DELETE; i++)
        ;
    if (i == b->nsets)
        return FERRY_ECLASH; /* no delete to commit alone */
    ferry_error_clear(&e2);
    if (apply_sets(a, b, 1, counts, &e2) == FERRY_OK) {
        char *tail = strstr(err->msg, CLASH_NOTHING);

        if (tail)
            snprintf(tail, sizeof(err->msg) - (size_t)(tail - err->msg), "%s", CLASH_DELETES);
    }
    return FERRY_ECLASH;
}

/*
 * Rows of child table t whose foreign key fk (every column set, MATCH
 * SIMPLE) finds no parent row: what PostgreSQL would have refused, had the
 * replica role not turned its checks off for ferry's writes.
 */
static int pg_fk_violations(struct ferry_applier *a, size_t t, const struct ferry_fkey *fk,
                            int64_t *n, struct ferry_error *err)
{
    const struct ferry_table_info *ti = &a->scope->tables[t].info;
    struct ferry_buf sql;
    int rc;

    ferry_buf_init(&sql, SQL_MAX);
    rc = ferry_buf_adds(&sql, "SELECT count(*) FROM ");
    if (!rc)
        rc = ferry_buf_add_ident(&sql, ti->name);
    if (!rc)
        rc = ferry_buf_adds(&sql, " AS \"_c\" WHERE ");
    for (size_t i = 0; i < fk->ncols && !rc; i++) {
        rc = ferry_buf_adds(&sql, i ? " AND \"_c\"." : "\"_c\".");
        if (!rc)
            rc = ferry_buf_add_ident(&sql, fk->cols[i]);
        if (!rc)
            rc = ferry_buf_adds(&sql, " IS NOT NULL");
    }
    if (!rc)
        rc = ferry_buf_adds(&sql, " AND NOT EXISTS (SELECT 1 FROM ");
    if (!rc)
        rc = ferry_buf_add_ident(&sql, fk->parent);
    if (!rc)
        rc = ferry_buf_adds(&sql, " AS \"_p\" WHERE ");
    for (size_t i = 0; i < fk->ncols && !rc; i++) {
        rc = ferry_buf_adds(&sql, i ? " AND \"_p\"." : "\"_p\".");
        if (!rc)
            rc = ferry_buf_add_ident(&sql, fk->pcols[i]);
        if (!rc)
            rc = ferry_buf_adds(&sql, " = \"_c\".");
        if (!rc)
            rc = ferry_buf_add_ident(&sql, fk->cols[i]);
    }
    if (!rc)
        rc = ferry_buf_adds(&sql, ")");
    if (rc)
        rc = ferry_error_set(err, rc, "cannot build the foreign key check of %s", ti->name);
    else
        rc = ferry_db_query_int(a->db, sql.data, NULL, 0, n, err);
    ferry_buf_release(&sql);
    return rc;
}

/*
 * A table PostgreSQL has never analyzed is planned from guesses: autovacuum
 * analyzes a table only after 50 rows plus a tenth of it have changed, so a
 * copied table of 20 rows would never get statistics. Guessed that a team's
 * 20 channels are 5 of them, the owner check of 200,000 reactions probes the
 * reactions' index once for each of a million posts (1.0 s, 0.5 s with
 * statistics), and so would the application's own queries after a cutover.
 * One ANALYZE of the copied tables (0.2-0.3 s for 1.2M rows) after the copy,
 * as after a restore. Others' tables on the target are left alone.
 */
int ferry_applier_analyze(struct ferry_applier *a, size_t *analyzed, struct ferry_error *err)
{
    struct ferry_buf sql;
    int rc;

    *analyzed = 0;
    if (!a->db || !a->pg || a->dry_run || !a->scope->ntables)
        return FERRY_OK;
    ferry_buf_init(&sql, SQL_MAX);
    rc = ferry_buf_adds(&sql, "ANALYZE ");
    for (size_t t = 0; t < a->scope->ntables && !rc; t++) {
        rc = ferry_buf_adds(&sql, t ? ", " : "");
        if (!rc)
            rc = ferry_buf_add_ident(&sql, a->scope->tables[t].info.name);
    }
    if (rc)
        rc = ferry_error_set(err, rc, "cannot build the target's ANALYZE statement");
    else
        rc = ferry_db_exec(a->db, sql.data, err);
    if (!rc)
        *analyzed = a->scope->ntables;
    ferry_buf_release(&sql);
    return rc;
}

int ferry_applier_fk_check(struct ferry_applier *a, int64_t *violations, struct ferry_error *err)
{
    *violations = 0;
    if (!a->db)
        return FERRY_OK;
    if (a->pg) {
        /* without the replica role PostgreSQL checked every row at commit */
        for (size_t t = 0; t < a->scope->ntables && a->replica; t++) {
            const struct ferry_table_info *ti = &a->scope->tables[t].info;

            for (size_t f = 0; f < ti->nfks; f++) {
                int64_t n = 0;
                int rc = pg_fk_violations(a, t, &ti->fks[f], &n, err);

                if (rc)
                    return rc;
                *violations += n;
            }
        }
        return FERRY_OK;
    }
    for (size_t t = 0; t < a->scope->ntables; t++) {
        int64_t n = 0;
        int rc = ferry_db_fk_check(a->db, a->scope->tables[t].info.name, &n, err);

        if (rc)
            return rc;
        *violations += n;
    }
    return FERRY_OK;
}
