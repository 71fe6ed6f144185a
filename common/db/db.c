/*
 * db.c - the engine-independent face of common/db/: picks an adapter by URL
 * scheme and forwards every call to its struct ferry_db_ops. Helpers that
 * only need prepare/bind/step (ferry_db_query_int) live here, once for all
 * engines.
 */
#include "engine.h"

#include "../log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Longest URL echoed back in an error message. */
#define URL_SHOWN_MAX 120

/*
 * Copy url into out for an error message, with the password of a
 * "scheme://user:password@host" URL replaced by "***": a misspelt scheme
 * must not print a PostgreSQL password to the terminal or a log.
 */
static void redact_url(const char *url, char *out, size_t size)
{
    const char *auth = strstr(url, "://");
    const char *at;
    const char *colon;

    snprintf(out, size, "%.*s", URL_SHOWN_MAX, url);
    if (!auth)
        return;
    auth += 3;
    at = strchr(auth, '@');
    if (!at)
        return;
    colon = memchr(auth, ':', (size_t)(at - auth));
    if (!colon)
        return;
    snprintf(out, size, "%.*s***%.*s", (int)(colon + 1 - url), url, URL_SHOWN_MAX, at);
}

static int has_scheme(const char *url, const char *scheme)
{
    return strncmp(url, scheme, strlen(scheme)) == 0;
}

int ferry_db_missing(const char *url)
{
    const char *path = has_scheme(url, "sqlite:") ? ferry_sqlite_url_path(url) : NULL;
    struct stat sb;

    return path && stat(path, &sb) != 0 && errno == ENOENT;
}

int ferry_db_open(const char *url, int flags, struct ferry_db **out, struct ferry_error *err)
{
    const struct ferry_db_ops *ops = NULL;
    enum ferry_engine engine = FERRY_ENGINE_SQLITE;
    char shown[URL_SHOWN_MAX + 64];
    int rc;

    *out = NULL;
    if (has_scheme(url, "sqlite:")) {
        ops = &ferry_sqlite_ops;
        engine = FERRY_ENGINE_SQLITE;
    } else if (has_scheme(url, "postgresql:") || has_scheme(url, "postgres:")) {
        ops = &ferry_pg_ops;
        engine = FERRY_ENGINE_PG;
    }
    if (!ops) {
        redact_url(url, shown, sizeof(shown));
        return ferry_error_set(
            err, FERRY_ECONFIG,
            "unsupported database URL '%s': use sqlite:///path or postgresql://...", shown);
    }
    rc = ops->open(url, flags, out, err);
    if (rc)
        return rc;
    /* The adapter fills these too; set them here so dispatch never depends on it. */
    (*out)->ops = ops;
    (*out)->engine = engine;
    return 0;
}

void ferry_db_close(struct ferry_db *db)
{
    if (db)
        db->ops->close(db);
}

enum ferry_engine ferry_db_engine(const struct ferry_db *db)
{
    return db->engine;
}

int ferry_db_exec(struct ferry_db *db, const char *sql, struct ferry_error *err)
{
    return db->ops->exec(db, sql, err);
}

int ferry_db_begin_read(struct ferry_db *db, struct ferry_error *err)
{
    return db->ops->begin_read(db, err);
}

int ferry_db_begin(struct ferry_db *db, struct ferry_error *err)
{
    return db->ops->begin(db, err);
}

int ferry_db_commit(struct ferry_db *db, struct ferry_error *err)
{
    return db->ops->commit(db, err);
}

void ferry_db_rollback(struct ferry_db *db)
{
    if (db)
        db->ops->rollback(db);
}

int ferry_db_alive(struct ferry_db *db)
{
    return db->ops->alive ? db->ops->alive(db) : 1;
}

int ferry_db_reconnect(struct ferry_db **db, const char *url, int flags, struct ferry_error *err)
{
    struct ferry_db *fresh = NULL;
    int rc;

    log_warn("the connection to the database was lost; connecting again");
    rc = ferry_db_open(url, flags, &fresh, err);
    if (rc)
        return rc;
    ferry_db_close(*db);
    *db = fresh;
    return FERRY_OK;
}

int ferry_db_durable(struct ferry_db *db, int durable, struct ferry_error *err)
{
    return db->ops->durable ? db->ops->durable(db, durable, err) : 0;
}

void ferry_db_busy_poll(struct ferry_db *db)
{
    if (db->ops->busy_poll)
        db->ops->busy_poll(db);
}

int ferry_db_prepare(struct ferry_db *db, const char *sql, struct ferry_stmt **out,
                     struct ferry_error *err)
{
    int rc;

    *out = NULL;
    rc = db->ops->prepare(db, sql, out, err);
    if (rc)
        return rc;
    (*out)->db = db;
    return 0;
}

int ferry_stmt_bind(struct ferry_stmt *st, int idx, const struct ferry_value *v,
                    struct ferry_error *err)
{
    return st->db->ops->bind(st, idx, v, err);
}

int ferry_stmt_bind_ref(struct ferry_stmt *st, int idx, const struct ferry_value *v,
                        struct ferry_error *err)
{
    if (st->db->ops->bind_ref)
        return st->db->ops->bind_ref(st, idx, v, err);
    return st->db->ops->bind(st, idx, v, err);
}

int ferry_stmt_step(struct ferry_stmt *st, int *row, struct ferry_error *err)
{
    return st->db->ops->step(st, row, err);
}

int ferry_stmt_ncols(struct ferry_stmt *st)
{
    return st->db->ops->ncols(st);
}

const char *ferry_stmt_colname(struct ferry_stmt *st, int i)
{
    return st->db->ops->colname(st, i);
}

void ferry_stmt_column(struct ferry_stmt *st, int i, struct ferry_value *out)
{
    st->db->ops->column(st, i, out);
}

int64_t ferry_stmt_changes(struct ferry_stmt *st)
{
    return st->db->ops->changes(st);
}

void ferry_stmt_reset(struct ferry_stmt *st)
{
    st->db->ops->reset(st);
}

void ferry_stmt_free(struct ferry_stmt *st)
{
    if (st)
        st->db->ops->stmt_free(st);
}

int ferry_db_tables(struct ferry_db *db, char ***names, size_t *n, struct ferry_error *err)
{
    return db->ops->tables(db, names, n, err);
}

int ferry_db_table_info(struct ferry_db *db, const char *table, struct ferry_table_info *out,
                        struct ferry_error *err)
{
    return db->ops->table_info(db, table, out, err);
}

int ferry_db_table_exists(struct ferry_db *db, const char *table, int *exists,
                          struct ferry_error *err)
{
    return db->ops->table_exists(db, table, exists, err);
}

int ferry_db_server_version(struct ferry_db *db)
{
    return db->ops->server_version ? db->ops->server_version(db) : 0;
}

const char *ferry_db_server_param(struct ferry_db *db, const char *name)
{
    return db->ops->server_param ? db->ops->server_param(db, name) : NULL;
}

int ferry_db_table_columns(struct ferry_db *db, const char *table, struct ferry_table_info *out,
                           int *exists, struct ferry_error *err)
{
    int rc;

    memset(out, 0, sizeof(*out));
    out->rows = -1;
    if (db->ops->table_columns)
        return db->ops->table_columns(db, table, out, exists, err);
    /* an engine without its own: the whole description, keys dropped */
    rc = db->ops->table_exists(db, table, exists, err);
    if (rc || !*exists)
        return rc;
    rc = db->ops->table_info(db, table, out, err);
    if (!rc) {
        struct ferry_table_info keys;

        memset(&keys, 0, sizeof(keys));
        keys.fks = out->fks;
        keys.nfks = out->nfks;
        out->fks = NULL;
        out->nfks = 0;
        ferry_table_info_release(&keys);
    }
    return rc;
}

int ferry_db_fk_check(struct ferry_db *db, const char *table, int64_t *violations,
                      struct ferry_error *err)
{
    return db->ops->fk_check(db, table, violations, err);
}

int ferry_db_copy_begin(struct ferry_db *db, const char *table, const char *const *cols, size_t n,
                        struct ferry_error *err)
{
    return db->ops->copy_begin(db, table, cols, n, err);
}

int ferry_db_copy_row(struct ferry_db *db, const struct ferry_value *vals, struct ferry_error *err)
{
    return db->ops->copy_row(db, vals, err);
}

int ferry_db_copy_row_fit(struct ferry_db *db, const struct ferry_value *vals, int *fit,
                          struct ferry_error *err)
{
    *fit = 1;
    if (!db->ops->copy_row_fit)
        return db->ops->copy_row(db, vals, err);
    return db->ops->copy_row_fit(db, vals, fit, err);
}

int ferry_db_copy_end(struct ferry_db *db, int64_t *rows, struct ferry_error *err)
{
    return db->ops->copy_end(db, rows, err);
}

int ferry_db_copy_line(struct ferry_db *db, const char *line, size_t n, struct ferry_error *err)
{
    if (!db->ops->copy_line)
        return ferry_error_set(err, FERRY_EINTERNAL, "this engine takes no COPY text");
    return db->ops->copy_line(db, line, n, err);
}

int ferry_db_copy_out_begin(struct ferry_db *db, const char *sql, const struct ferry_value *args,
                            size_t nargs, struct ferry_error *err)
{
    if (!db->ops->copy_out_begin)
        return ferry_error_set(err, FERRY_EINTERNAL, "this engine writes no COPY text");
    return db->ops->copy_out_begin(db, sql, args, nargs, err);
}

int ferry_db_copy_out_next(struct ferry_db *db, const char **line, size_t *n, int *row,
                           struct ferry_error *err)
{
    if (!db->ops->copy_out_next)
        return ferry_error_set(err, FERRY_EINTERNAL, "this engine writes no COPY text");
    return db->ops->copy_out_next(db, line, n, row, err);
}

int ferry_db_copy_out_field(struct ferry_db *db, int col, const char *p, size_t n,
                            struct ferry_value *out, struct ferry_error *err)
{
    if (!db->ops->copy_out_field)
        return ferry_error_set(err, FERRY_EINTERNAL, "this engine writes no COPY text");
    return db->ops->copy_out_field(db, col, p, n, out, err);
}

int ferry_db_copy_out_end(struct ferry_db *db, struct ferry_error *err)
{
    if (!db->ops->copy_out_end)
        return FERRY_OK;
    return db->ops->copy_out_end(db, err);
}

int ferry_db_function(struct ferry_db *db, const char *name, ferry_db_fn fn, void *arg,
                      void (*destroy)(void *arg), struct ferry_error *err)
{
    if (!db->ops->function) {
        if (destroy)
            destroy(arg);
        return ferry_error_set(err, FERRY_EINTERNAL, "this engine cannot define SQL functions");
    }
    return db->ops->function(db, name, fn, arg, destroy, err);
}

/*
 * Engines disagree on what an aggregate returns (SQLite: an integer;
 * PostgreSQL: sum() is numeric, which an adapter may hand over as text), so
 * accept any value that is exactly an integer and refuse the rest by name.
 */
static int value_to_int(const struct ferry_value *v, int64_t *out, struct ferry_error *err)
{
    char text[32];
    char *end;
    long long ll;

    switch (v->type) {
    case FERRY_NULL:
        *out = 0;
        return 0;
    case FERRY_INT:
        *out = v->u.i;
        return 0;
    case FERRY_FLOAT:
        /* 2^63 is exact in a double; every double below it in range fits int64_t */
        if (v->u.f >= -9223372036854775808.0 && v->u.f < 9223372036854775808.0 &&
            (double)(int64_t)v->u.f == v->u.f) {
            *out = (int64_t)v->u.f;
            return 0;
        }
        return ferry_error_set(err, FERRY_EDATA, "query returned %g where an integer was expected",
                               v->u.f);
    case FERRY_TEXT:
        if (v->u.s.n == 0 || v->u.s.n >= sizeof(text))
            break;
        memcpy(text, v->u.s.p, v->u.s.n);
        text[v->u.s.n] = '\0';
        errno = 0;
        ll = strtoll(text, &end, 10);
        if (errno || end == text || *end != '\0')
            break;
        *out = (int64_t)ll;
        return 0;
    case FERRY_BLOB:
        break;
    }
    return ferry_error_set(err, FERRY_EDATA, "query returned a non-integer value");
}

int ferry_db_query_int(struct ferry_db *db, const char *sql, const struct ferry_value *args,
                       size_t nargs, int64_t *out, struct ferry_error *err)
{
    struct ferry_stmt *st = NULL;
    struct ferry_value v;
    int row = 0;
    int rc;

    *out = 0;
    if (nargs > INT32_MAX) {
        rc = ferry_error_set(err, FERRY_EINTERNAL, "too many query arguments");
        goto out;
    }
    rc = ferry_db_prepare(db, sql, &st, err);
    if (rc)
        goto out;
    for (size_t i = 0; i < nargs; i++) {
        rc = ferry_stmt_bind(st, (int)i + 1, &args[i], err);
        if (rc)
            goto out;
    }
    rc = ferry_stmt_step(st, &row, err);
    if (rc || !row)
        goto out;
    ferry_stmt_column(st, 0, &v);
    rc = value_to_int(&v, out, err);
out:
    ferry_stmt_free(st);
    return rc;
}
