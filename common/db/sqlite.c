/*
 * sqlite.c - the SQLite adapter, the only module that includes sqlite3.h.
 *
 * Values cross this boundary bit-exactly: TEXT is bound and read with an
 * explicit length (embedded NULs and invalid UTF-8 survive), a zero-length
 * BLOB stays a BLOB (never NULL, never TEXT), doubles are bound as doubles.
 * Two things SQLite itself cannot keep are refused or noted rather than
 * changed silently: binding a NaN (SQLite would store NULL) is FERRY_EDATA;
 * a -0.0 stored in a column of REAL affinity comes back as 0.0 (SQLite packs
 * integral reals as integers there), in a column without a declared type it
 * survives (see tests/unit/test_db_sqlite.c).
 *
 * Introspection uses the pragma table-valued functions with the table name
 * bound as a parameter, never pasted into SQL, and always on schema "main".
 * Table names are matched as SQLite matches them (ASCII case-insensitive)
 * and reported as declared, so that names taken from a REFERENCES clause
 * written in another case still compare equal with strcmp().
 */
#include "engine.h"

#include "../buf.h"
#include "../log.h"

#include <sqlite3.h>

#include <errno.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define BUSY_TIMEOUT_MS 10000
#define SQL_SHOWN 60                          /* bytes of a statement quoted in an error message */
#define SQLITE_MAX_VARIABLE_NUMBER_SAFE 32766 /* SQLite's default limit since 3.32 */

struct sq_copy;

struct sq_db {
    struct ferry_db base; /* first: db.c sees only this */
    sqlite3 *h;
    char *path;
    struct sq_copy *copy; /* open bulk load, or NULL */
    int sync_level;       /* PRAGMA synchronous as opened, -1 until sq_durable asks */
    int wal;              /* in WAL mode (known once sync_level is) */
    int lazy;             /* commits at synchronous=NORMAL, see sq_durable */
};

struct sq_stmt {
    struct ferry_stmt base; /* first */
    sqlite3_stmt *s;
    int64_t changes;
    /*
     * ferry_stmt_column() cannot fail, but SQLite may run out of memory
     * converting a value; the row is then poisoned and the next step fails,
     * so a caller that encodes a batch row by row never ships the bad value.
     */
    int oom;
};

static struct sq_db *sq_db(struct ferry_db *db)
{
    return (struct sq_db *)db;
}

static struct sq_stmt *sq_stmt(struct ferry_stmt *st)
{
    return (struct sq_stmt *)st;
}

/* Whether the file system of path has no block left for it (statvfs; 0 when it cannot tell). */
static int disk_full(const char *path)
{
    struct statvfs sv;

    return statvfs(path, &sv) == 0 && sv.f_bavail == 0;
}

/* Whether the directory of path can take new files (SQLite's -wal and -shm beside it). */
static int dir_writable(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 0;

    if (!slash)
        return access(".", W_OK) == 0;
    if (n >= sizeof(dir))
        return 1; /* cannot tell: let SQLite's own error stand */
    memcpy(dir, path, n);
    dir[n] = '\0';
    return access(n ? dir : "/", W_OK) == 0;
}

/* Translate a failed SQLite call on h, with the statement it ran. */
static int sq_error(sqlite3 *h, int src, const char *sql, struct ferry_error *err)
{
    const char *more = sql && strlen(sql) > SQL_SHOWN ? "..." : "";

    switch (src & 0xff) {
    case SQLITE_FULL: {
        const char *file = h ? sqlite3_db_filename(h, "main") : NULL;

        return ferry_error_set(err, FERRY_ENOSPC,
                               "disk full writing %s: free space there and rerun (nothing of "
                               "the failed batch was committed)",
                               file && *file ? file : "the database");
    }
    case SQLITE_READONLY: {
        const char *file = h ? sqlite3_db_filename(h, "main") : NULL;

        return ferry_error_set(err, FERRY_EDB,
                               "cannot write %s, it is read-only (%s): give the user running "
                               "ferry write access to the file and its directory, and rerun",
                               file && *file ? file : "the database", sqlite3_errmsg(h));
    }
    case SQLITE_BUSY:
        return ferry_error_set(err, FERRY_EDB,
                               "'%.*s%s': database is locked: another connection held a write "
                               "lock for over %d s; retry when it is done",
                               SQL_SHOWN, sql ? sql : "", more, BUSY_TIMEOUT_MS / 1000);
    default:
        return ferry_error_set(err, FERRY_EDB, "'%.*s%s': %s", SQL_SHOWN, sql ? sql : "", more,
                               sqlite3_errmsg(h));
    }
}

static int sq_exec_h(sqlite3 *h, const char *sql, struct ferry_error *err)
{
    int src = sqlite3_exec(h, sql, NULL, NULL, NULL);

    if (src != SQLITE_OK)
        return sq_error(h, src, sql, err);
    return 0;
}

/*
 * The file path of a sqlite: URL, or NULL when the URL names none:
 * "sqlite:///abs/x.db" -> "/abs/x.db", "sqlite:rel.db" -> "rel.db".
 * "sqlite://host/..." has no meaning for a local file and is refused rather
 * than guessed.
 */
const char *ferry_sqlite_url_path(const char *url)
{
    const char *p = url + strlen("sqlite:");

    if (strncmp(p, "//", 2) == 0) {
        p += 2;
        if (*p != '/')
            return NULL;
    }
    if (*p == '\0')
        return NULL;
    return p;
}

static void warn_journal_mode(struct sq_db *d)
{
    sqlite3_stmt *s = NULL;
    const char *mode;

    /* Only reached after PRAGMA journal_mode=WAL succeeded: this re-reads the mode. */
    if (sqlite3_prepare_v2(d->h, "PRAGMA journal_mode", -1, &s, NULL) != SQLITE_OK)
        goto out;
    if (sqlite3_step(s) != SQLITE_ROW)
        goto out;
    mode = (const char *)sqlite3_column_text(s, 0);
    if (mode && strcasecmp(mode, "wal") != 0 && strcasecmp(mode, "memory") != 0)
        log_warn("database %s stays in %s journal mode (WAL unavailable): readers and the "
                 "writer will block each other",
                 d->path, mode);
out:
    sqlite3_finalize(s);
}

/*
 * Before the first open: no memory statistics. They take a global mutex on
 * every allocation SQLite makes, a few per row bound and stepped, and ferry
 * never reads them. Only possible before SQLite initializes, hence once.
 */
static pthread_once_t sq_once = PTHREAD_ONCE_INIT;

static void sq_configure(void)
{
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

static int sq_open(const char *url, int flags, struct ferry_db **out, struct ferry_error *err)
{
    struct sq_db *d = NULL;
    const char *path = ferry_sqlite_url_path(url);
    struct stat sb;
    int oflags = SQLITE_OPEN_NOMUTEX;
    int src;
    int rc = 0;

    *out = NULL;
    if (!path)
        return ferry_error_set(err, FERRY_ECONFIG,
                               "unsupported database URL '%.120s': use sqlite:///abs/path.db or "
                               "sqlite:relative/path.db",
                               url);
    if (flags & FERRY_DB_READONLY)
        oflags |= SQLITE_OPEN_READONLY;
    else
        oflags |= SQLITE_OPEN_READWRITE | (flags & FERRY_DB_CREATE ? SQLITE_OPEN_CREATE : 0);
    /* Check first so that a typo in a path is a config error, not an engine message. */
    if (!(oflags & SQLITE_OPEN_CREATE) && strcmp(path, ":memory:") != 0 && stat(path, &sb) != 0) {
        if (errno == ENOENT)
            return ferry_error_set(err, FERRY_ECONFIG, "database %s does not exist", path);
        return ferry_error_set(err, FERRY_ECONFIG, "cannot access database %s: %s", path,
                               strerror(errno));
    }

    d = calloc(1, sizeof(*d));
    if (!d)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory opening %s", path);
    d->base.ops = &ferry_sqlite_ops;
    d->base.engine = FERRY_ENGINE_SQLITE;
    d->sync_level = -1;
    d->path = strdup(path);
    if (!d->path) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory opening %s", path);
        goto out;
    }
    pthread_once(&sq_once, sq_configure);
    src = sqlite3_open_v2(path, &d->h, oflags, NULL);
    if (src != SQLITE_OK) {
        rc = ferry_error_set(err, FERRY_EDB, "cannot open database %s: %s", path,
                             d->h ? sqlite3_errmsg(d->h) : sqlite3_errstr(src));
        goto out;
    }
    sqlite3_busy_timeout(d->h, BUSY_TIMEOUT_MS);
    if (!(flags & FERRY_DB_READONLY)) {
        rc = sq_exec_h(d->h, "PRAGMA journal_mode=WAL", err);
        if (rc)
            goto open_failed;
        warn_journal_mode(d);
    }
    rc = sq_exec_h(d->h, "PRAGMA foreign_keys=OFF", err);
    if (rc)
        goto open_failed;
    /* Read the header now: "file is not a database" belongs to open, not to the first query. */
    rc = sq_exec_h(d->h, "SELECT 1 FROM sqlite_schema LIMIT 1", err);
    if (rc)
        goto open_failed;
    *out = &d->base;
    d = NULL;
    goto out;
open_failed:
    ferry_error_prefix(err, "cannot open database %s", path);
    /* opening to write on a full disk, a read-only file system, a file ferry may not write */
    if (!(flags & FERRY_DB_READONLY) && disk_full(path))
        rc = ferry_error_set(err, FERRY_ENOSPC,
                             "disk full opening %s: free space there and rerun (nothing was "
                             "written)",
                             path);
    else if (!(flags & FERRY_DB_READONLY) && (access(path, W_OK) != 0 || !dir_writable(path)))
        rc = ferry_error_set(err, FERRY_EDB,
                             "cannot open database %s to write: %s; give the user running "
                             "ferry write access to the file and its directory, and rerun",
                             path, strerror(errno));
out:
    if (d) {
        sqlite3_close(d->h);
        free(d->path);
        free(d);
    }
    return rc;
}

/*
 * Bulk load on SQLite: one prepared INSERT stepped per row. SQLite has no
 * faster path to offer (an INSERT in an open transaction is already a
 * B-tree append), so this exists to give both engines one interface.
 */
struct sq_copy {
    sqlite3_stmt *s;
    char **cols; /* n column names, for error messages */
    size_t n;
    int64_t rows;
};

static void copy_free(struct sq_copy *c)
{
    if (!c)
        return;
    sqlite3_finalize(c->s);
    for (size_t i = 0; c->cols && i < c->n; i++)
        free(c->cols[i]);
    free(c->cols);
    free(c);
}

static void sq_close(struct ferry_db *db)
{
    struct sq_db *d = sq_db(db);

    copy_free(d->copy);
    d->copy = NULL;

    if (sqlite3_close(d->h) != SQLITE_OK) {
        /* A caller forgot ferry_stmt_free(): close once the statements are gone. */
        log_error("BUG: database %s closed with statements still open", d->path);
        sqlite3_close_v2(d->h);
    }
    free(d->path);
    free(d);
}

static int sq_exec(struct ferry_db *db, const char *sql, struct ferry_error *err)
{
    return sq_exec_h(sq_db(db)->h, sql, err);
}

static int sq_begin_read(struct ferry_db *db, struct ferry_error *err)
{
    struct sq_db *d = sq_db(db);
    int rc;

    rc = sq_exec_h(d->h, "BEGIN", err);
    if (rc)
        return rc;
    /* A deferred BEGIN takes no snapshot; the first read does, and holds it until the end. */
    rc = sq_exec_h(d->h, "SELECT 1 FROM sqlite_schema LIMIT 1", err);
    if (rc)
        sq_exec_h(d->h, "ROLLBACK", NULL);
    return rc;
}

static int sq_begin(struct ferry_db *db, struct ferry_error *err)
{
    return sq_exec_h(sq_db(db)->h, "BEGIN IMMEDIATE", err);
}

static int sq_commit(struct ferry_db *db, struct ferry_error *err)
{
    return sq_exec_h(sq_db(db)->h, "COMMIT", err);
}

/*
 * Group commit in WAL mode: synchronous=NORMAL commits append to the WAL
 * without syncing it; the next commit at the level the database was opened
 * with (FULL by default) syncs the WAL file, every earlier frame with it.
 * In rollback-journal mode NORMAL can corrupt the file on power loss: no
 * change there.
 */
static int sq_durable(struct ferry_db *db, int durable, struct ferry_error *err)
{
    struct sq_db *d = sq_db(db);
    char sql[64];
    int rc;

    if (d->sync_level < 0) {
        sqlite3_stmt *s = NULL;

        d->sync_level = 2;
        if (sqlite3_prepare_v2(d->h, "PRAGMA synchronous", -1, &s, NULL) == SQLITE_OK &&
            sqlite3_step(s) == SQLITE_ROW)
            d->sync_level = sqlite3_column_int(s, 0);
        sqlite3_finalize(s);
        s = NULL;
        if (sqlite3_prepare_v2(d->h, "PRAGMA journal_mode", -1, &s, NULL) == SQLITE_OK &&
            sqlite3_step(s) == SQLITE_ROW)
            d->wal = sqlite3_stricmp((const char *)sqlite3_column_text(s, 0), "wal") == 0;
        sqlite3_finalize(s);
    }
    if (!d->wal || d->sync_level < 2 || d->lazy == !durable)
        return 0;
    snprintf(sql, sizeof(sql), "PRAGMA synchronous=%d", durable ? d->sync_level : 1);
    rc = sq_exec_h(d->h, sql, err);
    if (!rc)
        d->lazy = !durable;
    return rc;
}

static void sq_rollback(struct ferry_db *db)
{
    struct sq_db *d = sq_db(db);

    copy_free(d->copy);
    d->copy = NULL;
    /* SQLite may have rolled back already (e.g. after SQLITE_FULL). */
    if (!sqlite3_get_autocommit(d->h))
        sqlite3_exec(d->h, "ROLLBACK", NULL, NULL, NULL);
}

/* 1 when tail holds another statement (not only blanks, ';' or comments). */
static int has_more_sql(sqlite3 *h, const char *tail)
{
    sqlite3_stmt *s = NULL;
    int more;

    while (*tail == ' ' || *tail == '\t' || *tail == '\n' || *tail == '\r' || *tail == ';')
        tail++;
    if (*tail == '\0')
        return 0;
    more = sqlite3_prepare_v2(h, tail, -1, &s, NULL) != SQLITE_OK || s != NULL;
    sqlite3_finalize(s);
    return more;
}

static int sq_prepare(struct ferry_db *db, const char *sql, struct ferry_stmt **out,
                      struct ferry_error *err)
{
    struct sq_db *d = sq_db(db);
    struct sq_stmt *st;
    const char *tail = NULL;
    int src;
    int rc = 0;

    *out = NULL;
    st = calloc(1, sizeof(*st));
    if (!st)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory preparing a statement");
    st->base.db = db;
    src = sqlite3_prepare_v3(d->h, sql, -1, SQLITE_PREPARE_PERSISTENT, &st->s, &tail);
    if (src != SQLITE_OK) {
        rc = sq_error(d->h, src, sql, err);
        goto out;
    }
    if (!st->s) {
        rc = ferry_error_set(err, FERRY_EINTERNAL, "no SQL statement in '%.*s'", SQL_SHOWN, sql);
        goto out;
    }
    if (tail && has_more_sql(d->h, tail)) {
        rc = ferry_error_set(err, FERRY_EINTERNAL,
                             "more than one SQL statement in '%.*s': prepare them one by one",
                             SQL_SHOWN, sql);
        goto out;
    }
    *out = &st->base;
    st = NULL;
out:
    if (st) {
        sqlite3_finalize(st->s);
        free(st);
    }
    return rc;
}

static int sq_bind_as(struct ferry_stmt *st_, int idx, const struct ferry_value *v,
                      sqlite3_destructor_type keep, struct ferry_error *err)
{
    sqlite3_stmt *s = sq_stmt(st_)->s;
    int src;

    switch (v->type) {
    case FERRY_NULL:
        src = sqlite3_bind_null(s, idx);
        break;
    case FERRY_INT:
        src = sqlite3_bind_int64(s, idx, v->u.i);
        break;
    case FERRY_FLOAT:
        if (isnan(v->u.f))
            return ferry_error_set(err, FERRY_EDATA,
                                   "parameter %d is NaN, which SQLite would store as NULL", idx);
        src = sqlite3_bind_double(s, idx, v->u.f);
        break;
    case FERRY_TEXT:
        /* bind_text64 with a NULL pointer would bind NULL, not '' */
        src = sqlite3_bind_text64(s, idx, v->u.s.n ? v->u.s.p : "", v->u.s.n, keep, SQLITE_UTF8);
        break;
    case FERRY_BLOB:
        /* bind_blob64 of zero bytes may bind NULL; a zero-length zeroblob is X'' */
        if (v->u.s.n == 0)
            src = sqlite3_bind_zeroblob(s, idx, 0);
        else
            src = sqlite3_bind_blob64(s, idx, v->u.s.p, v->u.s.n, keep);
        break;
    default:
        return ferry_error_set(err, FERRY_EINTERNAL, "parameter %d has unknown value type %d", idx,
                               (int)v->type);
    }
    if (src != SQLITE_OK)
        return sq_error(sqlite3_db_handle(s), src, sqlite3_sql(s), err);
    return 0;
}

static int sq_bind(struct ferry_stmt *st, int idx, const struct ferry_value *v,
                   struct ferry_error *err)
{
    return sq_bind_as(st, idx, v, SQLITE_TRANSIENT, err);
}

static int sq_bind_ref(struct ferry_stmt *st, int idx, const struct ferry_value *v,
                       struct ferry_error *err)
{
    return sq_bind_as(st, idx, v, SQLITE_STATIC, err);
}

static int sq_step(struct ferry_stmt *st_, int *row, struct ferry_error *err)
{
    struct sq_stmt *st = sq_stmt(st_);
    sqlite3 *h = sqlite3_db_handle(st->s);
    int src;

    *row = 0;
    if (st->oom)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory reading a value of '%.*s'",
                               SQL_SHOWN, sqlite3_sql(st->s));
    src = sqlite3_step(st->s);
    if (src == SQLITE_ROW) {
        *row = 1;
        return 0;
    }
    if (src == SQLITE_DONE) {
        /* sqlite3_changes64() is per connection: a SELECT would report the last write's count */
        st->changes = sqlite3_stmt_readonly(st->s) ? 0 : sqlite3_changes64(h);
        return 0;
    }
    return sq_error(h, src, sqlite3_sql(st->s), err);
}

static int sq_ncols(struct ferry_stmt *st)
{
    return sqlite3_column_count(sq_stmt(st)->s);
}

static const char *sq_colname(struct ferry_stmt *st, int i)
{
    return sqlite3_column_name(sq_stmt(st)->s, i);
}

static void sq_column(struct ferry_stmt *st_, int i, struct ferry_value *out)
{
    struct sq_stmt *st = sq_stmt(st_);
    sqlite3_stmt *s = st->s;
    const void *p;

    switch (sqlite3_column_type(s, i)) {
    case SQLITE_INTEGER:
        out->type = FERRY_INT;
        out->u.i = sqlite3_column_int64(s, i);
        return;
    case SQLITE_FLOAT:
        out->type = FERRY_FLOAT;
        out->u.f = sqlite3_column_double(s, i);
        return;
    case SQLITE_TEXT:
        /* text first, then bytes: the documented order that keeps the pointer valid */
        p = sqlite3_column_text(s, i);
        out->type = FERRY_TEXT;
        out->u.s.n = (size_t)sqlite3_column_bytes(s, i);
        break;
    case SQLITE_BLOB:
        p = sqlite3_column_blob(s, i);
        out->type = FERRY_BLOB;
        out->u.s.n = (size_t)sqlite3_column_bytes(s, i);
        break;
    default:
        *out = ferry_value_null();
        return;
    }
    if (!p && out->u.s.n == 0 && sqlite3_errcode(sqlite3_db_handle(s)) != SQLITE_NOMEM)
        p = ""; /* a zero-length value: callers may rely on p != NULL */
    if (!p) {
        log_error("out of memory reading column %d of '%.*s'", i, SQL_SHOWN, sqlite3_sql(s));
        st->oom = 1;
        *out = ferry_value_null();
        return;
    }
    out->u.s.p = p;
}

static int64_t sq_changes(struct ferry_stmt *st)
{
    return sq_stmt(st)->changes;
}

static void sq_reset(struct ferry_stmt *st_)
{
    struct sq_stmt *st = sq_stmt(st_);

    /* sqlite3_reset() repeats the last step's error, which step already reported */
    sqlite3_reset(st->s);
    sqlite3_clear_bindings(st->s);
    st->changes = 0;
    st->oom = 0;
}

static void sq_stmt_free(struct ferry_stmt *st_)
{
    struct sq_stmt *st = sq_stmt(st_);

    sqlite3_finalize(st->s);
    free(st);
}

/* Internal queries: prepare sql with an optional text parameter ?1. */
static int q_prepare(struct sq_db *d, const char *sql, const char *arg, sqlite3_stmt **s,
                     struct ferry_error *err)
{
    int src;

    *s = NULL;
    src = sqlite3_prepare_v2(d->h, sql, -1, s, NULL);
    if (src == SQLITE_OK && arg)
        src = sqlite3_bind_text(*s, 1, arg, -1, SQLITE_TRANSIENT);
    if (src != SQLITE_OK) {
        sqlite3_finalize(*s);
        *s = NULL;
        return sq_error(d->h, src, sql, err);
    }
    return 0;
}

/* sqlite3_step() for internal queries: *row is 1 for a row, 0 when done. */
static int q_step(struct sq_db *d, sqlite3_stmt *s, int *row, struct ferry_error *err)
{
    int src = sqlite3_step(s);

    *row = src == SQLITE_ROW;
    if (src == SQLITE_ROW || src == SQLITE_DONE)
        return 0;
    return sq_error(d->h, src, sqlite3_sql(s), err);
}

/* strdup of a column as text ("" for NULL). */
static int q_strdup(sqlite3_stmt *s, int i, char **out, struct ferry_error *err)
{
    const char *p = (const char *)sqlite3_column_text(s, i);

    *out = strdup(p ? p : "");
    if (!*out)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory reading the schema");
    return 0;
}

/* Make room for one more element of size elem in *arr holding n. */
static int grow(void **arr, size_t *cap, size_t n, size_t elem, struct ferry_error *err)
{
    size_t ncap;
    void *p;

    if (n < *cap)
        return 0;
    ncap = *cap ? *cap * 2 : 8;
    if (ncap > SIZE_MAX / elem)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory reading the schema");
    p = realloc(*arr, ncap * elem);
    if (!p)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory reading the schema");
    *arr = p;
    *cap = ncap;
    return 0;
}

static int sq_tables(struct ferry_db *db, char ***names, size_t *n, struct ferry_error *err)
{
    /* pragma_table_list tells virtual and FTS shadow tables apart: no triggers there */
    static const char sql[] = "SELECT name FROM pragma_table_list WHERE schema = 'main'"
                              " AND type = 'table'"
                              " AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
                              " AND name NOT LIKE '\\_ferry\\_%' ESCAPE '\\' ORDER BY name";
    struct sq_db *d = sq_db(db);
    sqlite3_stmt *s = NULL;
    char **v = NULL;
    size_t nv = 0;
    size_t cap = 0;
    int row;
    int rc;

    *names = NULL;
    *n = 0;
    rc = q_prepare(d, sql, NULL, &s, err);
    if (rc)
        goto out;
    for (;;) {
        rc = q_step(d, s, &row, err);
        if (rc || !row)
            break;
        rc = grow((void **)&v, &cap, nv, sizeof(*v), err);
        if (rc)
            goto out;
        rc = q_strdup(s, 0, &v[nv], err);
        if (rc)
            goto out;
        nv++;
    }
    if (rc)
        goto out;
    *names = v;
    *n = nv;
    v = NULL;
out:
    sqlite3_finalize(s);
    for (size_t i = 0; v && i < nv; i++)
        free(v[i]);
    free(v);
    return rc;
}

/*
 * The declared name of table (matched as SQLite matches identifiers), or
 * *name = NULL when there is none. *name is owned, free with free().
 */
static int canonical_name(struct sq_db *d, const char *table, char **name, struct ferry_error *err)
{
    static const char sql[] =
        "SELECT name FROM main.sqlite_schema WHERE type='table' AND name=?1 COLLATE NOCASE";
    sqlite3_stmt *s = NULL;
    int row;
    int rc;

    *name = NULL;
    rc = q_prepare(d, sql, table, &s, err);
    if (rc)
        goto out;
    rc = q_step(d, s, &row, err);
    if (!rc && row)
        rc = q_strdup(s, 0, name, err);
out:
    sqlite3_finalize(s);
    return rc;
}

static int read_columns(struct sq_db *d, struct ferry_table_info *t, struct ferry_error *err)
{
    /* hidden: 1 virtual-table hidden, 2/3 generated; none of them can be inserted */
    static const char sql[] = "SELECT name, type, \"notnull\", pk FROM pragma_table_xinfo(?1, "
                              "'main') WHERE hidden = 0 ORDER BY cid";
    sqlite3_stmt *s = NULL;
    struct ferry_column *c;
    size_t cap = 0;
    int row;
    int rc;

    rc = q_prepare(d, sql, t->name, &s, err);
    if (rc)
        goto out;
    for (;;) {
        rc = q_step(d, s, &row, err);
        if (rc || !row)
            break;
        rc = grow((void **)&t->cols, &cap, t->ncols, sizeof(*t->cols), err);
        if (rc)
            goto out;
        c = &t->cols[t->ncols];
        memset(c, 0, sizeof(*c));
        t->ncols++;
        rc = q_strdup(s, 0, &c->name, err);
        if (!rc)
            rc = q_strdup(s, 1, &c->type, err);
        if (rc)
            goto out;
        c->notnull = sqlite3_column_int(s, 2) != 0;
        c->pk = sqlite3_column_int(s, 3);
    }
out:
    sqlite3_finalize(s);
    return rc;
}

/* Column names of a table in declaration order, with their key positions. */
struct colset {
    char **names;
    int *pk;
    size_t n;
};

static void colset_release(struct colset *cs)
{
    for (size_t i = 0; i < cs->n; i++)
        free(cs->names[i]);
    free(cs->names);
    free(cs->pk);
    memset(cs, 0, sizeof(*cs));
}

static int read_colset(struct sq_db *d, const char *table, struct colset *cs,
                       struct ferry_error *err)
{
    static const char sql[] = "SELECT name, pk FROM pragma_table_info(?1, 'main') ORDER BY cid";
    sqlite3_stmt *s = NULL;
    size_t cap = 0;
    size_t pcap = 0;
    int row;
    int rc;

    memset(cs, 0, sizeof(*cs));
    rc = q_prepare(d, sql, table, &s, err);
    if (rc)
        goto out;
    for (;;) {
        rc = q_step(d, s, &row, err);
        if (rc || !row)
            break;
        rc = grow((void **)&cs->names, &cap, cs->n, sizeof(*cs->names), err);
        if (!rc)
            rc = grow((void **)&cs->pk, &pcap, cs->n, sizeof(*cs->pk), err);
        if (!rc)
            rc = q_strdup(s, 0, &cs->names[cs->n], err);
        if (rc)
            goto out;
        cs->pk[cs->n] = sqlite3_column_int(s, 1);
        cs->n++;
    }
out:
    sqlite3_finalize(s);
    return rc;
}

/* Replace *name by canon when they name the same column in another case. */
static int respell(const char *canon, char **name, struct ferry_error *err)
{
    char *p;

    if (strcasecmp(canon, *name) != 0 || strcmp(canon, *name) == 0)
        return 0;
    p = strdup(canon);
    if (!p)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory reading the schema");
    free(*name);
    *name = p;
    return 0;
}

/*
 * Complete and normalise one foreign key after its rows are read: parent
 * table and column names as declared, omitted parent columns (REFERENCES
 * parent, with no column list) filled with the parent's primary key.
 */
static int finish_fkey(struct sq_db *d, struct ferry_table_info *t, struct ferry_fkey *fk,
                       int implicit, struct ferry_error *err)
{
    struct colset par = {.names = NULL};
    char *parent = NULL;
    size_t npk = 0;
    int rc = 0;

    for (size_t j = 0; j < fk->ncols; j++)
        for (size_t i = 0; !rc && i < t->ncols; i++)
            rc = respell(t->cols[i].name, &fk->cols[j], err);
    if (rc)
        goto out;
    rc = canonical_name(d, fk->parent, &parent, err);
    if (rc)
        goto out;
    if (!parent) {
        /* named parent columns need no lookup; omitted ones cannot be completed */
        if (implicit)
            rc = ferry_error_set(err, FERRY_ESCHEMA,
                                 "table '%s' has a foreign key to missing table '%s': create it or "
                                 "drop the key",
                                 t->name, fk->parent);
        goto out;
    }
    free(fk->parent);
    fk->parent = parent;
    rc = read_colset(d, fk->parent, &par, err);
    if (rc)
        goto out;
    if (!implicit) {
        for (size_t j = 0; j < fk->ncols; j++)
            for (size_t i = 0; !rc && i < par.n; i++)
                rc = respell(par.names[i], &fk->pcols[j], err);
        goto out;
    }
    for (size_t i = 0; i < par.n; i++)
        if (par.pk[i] > 0)
            npk++;
    if (npk != fk->ncols) {
        rc = ferry_error_set(err, FERRY_ESCHEMA,
                             "foreign key of table '%s' references '%s' without columns, but "
                             "'%s' has a primary key of %zu columns, not %zu: name the parent "
                             "columns",
                             t->name, fk->parent, fk->parent, npk, fk->ncols);
        goto out;
    }
    for (size_t i = 0; i < par.n; i++) {
        size_t k = (size_t)par.pk[i];

        if (k == 0 || k > fk->ncols || fk->pcols[k - 1])
            continue;
        fk->pcols[k - 1] = strdup(par.names[i]);
        if (!fk->pcols[k - 1]) {
            rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory reading the schema");
            goto out;
        }
    }
out:
    colset_release(&par);
    return rc;
}

static int read_fkeys(struct sq_db *d, struct ferry_table_info *t, struct ferry_error *err)
{
    static const char sql[] = "SELECT id, \"table\", \"from\", \"to\", on_delete"
                              " FROM pragma_foreign_key_list(?1, 'main') ORDER BY id, seq";
    sqlite3_stmt *s = NULL;
    int *implicit = NULL; /* per key: 1 when the parent columns were omitted */
    size_t cap = 0;
    size_t icap = 0;
    int64_t last_id = -1;
    int64_t id;
    struct ferry_fkey *fk;
    const char *on_delete;
    char **p;
    int row;
    int rc;

    rc = q_prepare(d, sql, t->name, &s, err);
    if (rc)
        goto out;
    for (;;) {
        rc = q_step(d, s, &row, err);
        if (rc || !row)
            break;
        id = sqlite3_column_int64(s, 0);
        if (t->nfks == 0 || id != last_id) {
            rc = grow((void **)&t->fks, &cap, t->nfks, sizeof(*t->fks), err);
            if (!rc)
                rc = grow((void **)&implicit, &icap, t->nfks, sizeof(*implicit), err);
            if (rc)
                goto out;
            fk = &t->fks[t->nfks];
            memset(fk, 0, sizeof(*fk));
            implicit[t->nfks] = sqlite3_column_type(s, 3) == SQLITE_NULL;
            t->nfks++;
            last_id = id;
            rc = q_strdup(s, 1, &fk->parent, err);
            if (rc)
                goto out;
            on_delete = (const char *)sqlite3_column_text(s, 4);
            fk->cascade = on_delete && strcasecmp(on_delete, "CASCADE") == 0;
        }
        fk = &t->fks[t->nfks - 1];
        if (fk->ncols >= SIZE_MAX / sizeof(char *) - 1) {
            rc = ferry_error_set(err, FERRY_ESCHEMA, "foreign key of '%s' is too wide", t->name);
            goto out;
        }
        p = realloc(fk->cols, (fk->ncols + 1) * sizeof(*p));
        if (!p)
            goto oom;
        fk->cols = p;
        p = realloc(fk->pcols, (fk->ncols + 1) * sizeof(*p));
        if (!p)
            goto oom;
        fk->pcols = p;
        fk->cols[fk->ncols] = NULL;
        fk->pcols[fk->ncols] = NULL;
        fk->ncols++;
        rc = q_strdup(s, 2, &fk->cols[fk->ncols - 1], err);
        if (!rc && sqlite3_column_type(s, 3) != SQLITE_NULL)
            rc = q_strdup(s, 3, &fk->pcols[fk->ncols - 1], err);
        if (rc)
            goto out;
    }
    if (rc)
        goto out;
    for (size_t i = 0; i < t->nfks; i++) {
        rc = finish_fkey(d, t, &t->fks[i], implicit[i], err);
        if (rc)
            goto out;
    }
    goto out;
oom:
    rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory reading the schema");
out:
    sqlite3_finalize(s);
    free(implicit);
    return rc;
}

static int read_without_rowid(struct sq_db *d, struct ferry_table_info *t, struct ferry_error *err)
{
    static const char sql[] = "SELECT wr FROM pragma_table_list(?1) WHERE schema = 'main'";
    sqlite3_stmt *s = NULL;
    int row;
    int rc;

    rc = q_prepare(d, sql, t->name, &s, err);
    if (rc)
        goto out;
    rc = q_step(d, s, &row, err);
    if (!rc && row)
        t->without_rowid = sqlite3_column_int(s, 0) != 0;
out:
    sqlite3_finalize(s);
    return rc;
}

static int sq_table_info(struct ferry_db *db, const char *table, struct ferry_table_info *out,
                         struct ferry_error *err)
{
    struct sq_db *d = sq_db(db);
    int rc;

    memset(out, 0, sizeof(*out));
    out->rows = -1;
    rc = canonical_name(d, table, &out->name, err);
    if (rc)
        goto out;
    if (!out->name) {
        rc = ferry_error_set(err, FERRY_ENOTFOUND, "table '%s' does not exist", table);
        goto out;
    }
    rc = read_columns(d, out, err);
    if (!rc)
        rc = read_fkeys(d, out, err);
    if (!rc)
        rc = read_without_rowid(d, out, err);
out:
    if (rc) {
        ferry_table_info_release(out);
        out->rows = -1;
    }
    return rc;
}

static int sq_table_exists(struct ferry_db *db, const char *table, int *exists,
                           struct ferry_error *err)
{
    char *name = NULL;
    int rc;

    *exists = 0;
    rc = canonical_name(sq_db(db), table, &name, err);
    if (!rc)
        *exists = name != NULL;
    free(name);
    return rc;
}

static int sq_fk_check(struct ferry_db *db, const char *table, int64_t *violations,
                       struct ferry_error *err)
{
    static const char sql[] = "SELECT count(*) FROM pragma_foreign_key_check(?1, 'main')";
    struct sq_db *d = sq_db(db);
    sqlite3_stmt *s = NULL;
    int exists;
    int row;
    int rc;

    *violations = 0;
    rc = sq_table_exists(db, table, &exists, err);
    if (rc)
        goto out;
    if (!exists) {
        rc = ferry_error_set(err, FERRY_ENOTFOUND, "table '%s' does not exist", table);
        goto out;
    }
    rc = q_prepare(d, sql, table, &s, err);
    if (rc)
        goto out;
    rc = q_step(d, s, &row, err);
    if (!rc && row)
        *violations = sqlite3_column_int64(s, 0);
out:
    sqlite3_finalize(s);
    return rc;
}

static int sq_copy_begin(struct ferry_db *db, const char *table, const char *const *cols, size_t n,
                         struct ferry_error *err)
{
    struct sq_db *d = sq_db(db);
    struct ferry_buf sql;
    struct sq_copy *c = NULL;
    int rc = 0;
    int src;

    if (d->copy)
        return ferry_error_set(err, FERRY_EINTERNAL, "a bulk load is already open on %s", d->path);
    if (n == 0 || n > SQLITE_MAX_VARIABLE_NUMBER_SAFE)
        return ferry_error_set(err, FERRY_EINTERNAL, "bulk load of %s: %zu columns", table, n);
    ferry_buf_init(&sql, (size_t)1 << 20);
    c = calloc(1, sizeof(*c));
    if (!c || !(c->cols = calloc(n, sizeof(*c->cols)))) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory starting a bulk load");
        goto out;
    }
    c->n = n;
    rc = ferry_buf_adds(&sql, "INSERT INTO ");
    if (!rc)
        rc = ferry_buf_add_ident(&sql, table);
    for (size_t i = 0; i < n && !rc; i++) {
        rc = ferry_buf_adds(&sql, i ? ", " : " (");
        if (!rc)
            rc = ferry_buf_add_ident(&sql, cols[i]);
        c->cols[i] = strdup(cols[i]);
        if (!c->cols[i])
            rc = FERRY_ENOMEM;
    }
    for (size_t i = 0; i < n && !rc; i++)
        rc = ferry_buf_adds(&sql, i ? ", ?" : ") VALUES (?");
    if (!rc)
        rc = ferry_buf_adds(&sql, ")");
    if (rc) {
        rc = ferry_error_set(err, rc, "cannot build the bulk load of %s", table);
        goto out;
    }
    src = sqlite3_prepare_v2(d->h, sql.data, -1, &c->s, NULL);
    if (src != SQLITE_OK) {
        rc = sq_error(d->h, src, sql.data, err);
        goto out;
    }
    d->copy = c;
    c = NULL;
out:
    copy_free(c);
    ferry_buf_release(&sql);
    return rc;
}

static int sq_copy_row(struct ferry_db *db, const struct ferry_value *vals, struct ferry_error *err)
{
    struct sq_db *d = sq_db(db);
    struct sq_copy *c = d->copy;
    struct sq_stmt st;
    int src;
    int rc = 0;

    if (!c)
        return ferry_error_set(err, FERRY_EINTERNAL, "no bulk load open on %s", d->path);
    memset(&st, 0, sizeof(st));
    st.s = c->s;
    for (size_t i = 0; i < c->n && !rc; i++) {
        rc = sq_bind_ref(&st.base, (int)i + 1, &vals[i], err);
        if (rc)
            ferry_error_prefix(err, "column %s", c->cols[i]);
    }
    if (!rc) {
        src = sqlite3_step(c->s);
        if (src != SQLITE_DONE)
            rc = sq_error(d->h, src, sqlite3_sql(c->s), err);
    }
    sqlite3_reset(c->s);
    sqlite3_clear_bindings(c->s);
    if (rc) {
        /* as on PostgreSQL, a failed row ends the load */
        copy_free(c);
        d->copy = NULL;
        return rc;
    }
    c->rows++;
    return 0;
}

static int sq_copy_end(struct ferry_db *db, int64_t *rows, struct ferry_error *err)
{
    struct sq_db *d = sq_db(db);

    if (!d->copy)
        return ferry_error_set(err, FERRY_EINTERNAL, "no bulk load open on %s", d->path);
    if (rows)
        *rows = d->copy->rows;
    copy_free(d->copy);
    d->copy = NULL;
    return 0;
}

/* A function defined with ferry_db_function(): its C callback and an argument buffer. */
struct sq_fn {
    ferry_db_fn fn;
    void *arg;
    void (*destroy)(void *arg);
    struct ferry_value *vals;
    int cap;
};

static void sq_fn_destroy(void *p)
{
    struct sq_fn *f = p;

    if (f->destroy)
        f->destroy(f->arg);
    free(f->vals);
    free(f);
}

/* The arguments as sq_column() hands over a column: the same types and bytes. */
static void sq_fn_call(sqlite3_context *cx, int argc, sqlite3_value **argv)
{
    struct sq_fn *f = sqlite3_user_data(cx);
    struct ferry_error err;
    int64_t out = 0;

    if (argc > f->cap) {
        struct ferry_value *nv = realloc(f->vals, (size_t)argc * sizeof(*nv));

        if (!nv) {
            sqlite3_result_error_nomem(cx);
            return;
        }
        f->vals = nv;
        f->cap = argc;
    }
    for (int i = 0; i < argc; i++) {
        struct ferry_value *v = &f->vals[i];
        const void *p = NULL;

        switch (sqlite3_value_type(argv[i])) {
        case SQLITE_INTEGER:
            v->type = FERRY_INT;
            v->u.i = sqlite3_value_int64(argv[i]);
            continue;
        case SQLITE_FLOAT:
            v->type = FERRY_FLOAT;
            v->u.f = sqlite3_value_double(argv[i]);
            continue;
        case SQLITE_TEXT:
            p = sqlite3_value_text(argv[i]);
            v->type = FERRY_TEXT;
            break;
        case SQLITE_BLOB:
            p = sqlite3_value_blob(argv[i]);
            v->type = FERRY_BLOB;
            break;
        default:
            *v = ferry_value_null();
            continue;
        }
        v->u.s.n = (size_t)sqlite3_value_bytes(argv[i]);
        if (!p && v->u.s.n == 0)
            p = ""; /* a zero-length value; NULL with bytes is out of memory */
        if (!p) {
            sqlite3_result_error_nomem(cx);
            return;
        }
        v->u.s.p = p;
    }
    if (f->fn(f->arg, f->vals, (size_t)argc, &out, &err)) {
        sqlite3_result_error(cx, err.msg, -1);
        return;
    }
    sqlite3_result_int64(cx, out);
}

static int sq_function(struct ferry_db *db, const char *name, ferry_db_fn fn, void *arg,
                       void (*destroy)(void *arg), struct ferry_error *err)
{
    struct sq_db *d = sq_db(db);
    struct sq_fn *f = calloc(1, sizeof(*f));
    int src;

    if (!f) {
        if (destroy)
            destroy(arg);
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
    }
    f->fn = fn;
    f->arg = arg;
    f->destroy = destroy;
    /* SQLite runs sq_fn_destroy itself when this fails, as when the function is replaced. */
    src = sqlite3_create_function_v2(d->h, name, -1,
                                     SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_DIRECTONLY, f,
                                     sq_fn_call, NULL, NULL, sq_fn_destroy);
    if (src != SQLITE_OK)
        return ferry_error_set(err, FERRY_EDB, "cannot define SQL function %s on %s: %s", name,
                               d->path, sqlite3_errmsg(d->h));
    return FERRY_OK;
}

int ferry_db_data_version(struct ferry_db *db, uint64_t version[2], struct ferry_error *err)
{
    struct sq_db *d;
    unsigned int dv = 0;
    int src;

    if (db->engine != FERRY_ENGINE_SQLITE)
        return ferry_error_set(err, FERRY_EINTERNAL, "no data version on this engine");
    d = sq_db(db);
    if (sqlite3_txn_state(d->h, "main") != SQLITE_TXN_READ)
        return ferry_error_set(err, FERRY_ENOTFOUND, "no read transaction open on %s", d->path);
    /* the pager's counter: unlike PRAGMA data_version, it moves with our commits too */
    src = sqlite3_file_control(d->h, "main", SQLITE_FCNTL_DATA_VERSION, &dv);
    if (src != SQLITE_OK)
        return ferry_error_set(err, FERRY_EDB, "cannot read the data version of %s: %s", d->path,
                               sqlite3_errstr(src));
    version[0] = dv;
    version[1] = (uint64_t)sqlite3_total_changes64(d->h);
    return FERRY_OK;
}

/* ferry_db_busy_poll: count is how many times SQLite called before for this wait */
static int sq_busy_every_ms(void *arg, int count)
{
    (void)arg;
    if (count >= BUSY_TIMEOUT_MS)
        return 0; /* each call slept at least 1 ms: 10 s and more have gone */
    sqlite3_sleep(1);
    return 1;
}

static void sq_busy_poll(struct ferry_db *db)
{
    sqlite3_busy_handler(sq_db(db)->h, sq_busy_every_ms, NULL);
}

const struct ferry_db_ops ferry_sqlite_ops = {
    .open = sq_open,
    .close = sq_close,
    .exec = sq_exec,
    .begin_read = sq_begin_read,
    .begin = sq_begin,
    .commit = sq_commit,
    .durable = sq_durable,
    .busy_poll = sq_busy_poll,
    .rollback = sq_rollback,
    .prepare = sq_prepare,
    .bind = sq_bind,
    .bind_ref = sq_bind_ref,
    .step = sq_step,
    .ncols = sq_ncols,
    .colname = sq_colname,
    .column = sq_column,
    .changes = sq_changes,
    .reset = sq_reset,
    .stmt_free = sq_stmt_free,
    .tables = sq_tables,
    .table_info = sq_table_info,
    .table_exists = sq_table_exists,
    .fk_check = sq_fk_check,
    .copy_begin = sq_copy_begin,
    .copy_row = sq_copy_row,
    .copy_end = sq_copy_end,
    .function = sq_function,
};
