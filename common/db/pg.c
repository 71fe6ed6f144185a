/*
 * pg.c - the PostgreSQL adapter, the only module that includes libpq-fe.h.
 *
 * Every connection is set up so that values read back are canonical and
 * exact whatever the server's configuration: client_encoding UTF8, DateStyle
 * ISO, IntervalStyle iso_8601, TimeZone UTC, extra_float_digits 3 (shortest
 * exact floats), bytea_output hex, standard_conforming_strings on; and jit
 * off (ferry's statements are short: compiling them costs more than it saves).
 *
 * Reading: by the result column's type OID (a domain reports its base type)
 *
 *   PostgreSQL                          ferry value
 *   ----------------------------------  ------------------------------------
 *   int2, int4, int8, oid, xid, xid8    INT
 *   float4                              FLOAT, the float4 widened (exact)
 *   float8                              FLOAT, bit-exact (-0, subnormals,
 *                                       Infinity, -Infinity, NaN included)
 *   bool                                INT 1 / 0
 *   bytea                               BLOB (hex text form decoded)
 *   numeric                             TEXT, the exact decimal ("NaN" too)
 *   every other type: text, varchar,    TEXT, PostgreSQL's text output with
 *   bpchar, json, jsonb, uuid, date,    the settings above (timestamptz
 *   time, timetz, timestamp,            "2024-01-02 03:04:05.5+00",
 *   timestamptz, interval, arrays, ...  interval "P1Y2M3DT4H5M6S")
 *   SQL NULL                            NULL
 *
 * Binding: statements are prepared with untyped parameters, so the server
 * infers each one's type from where it is used (the column it is compared
 * with or stored into); a parameter whose type cannot be inferred
 * ("SELECT ? IS NULL") is typed text. Values are then sent so that the
 * server's input function for that type reads them exactly:
 *
 *   ferry value  sent as
 *   -----------  -----------------------------------------------------------
 *   NULL         SQL NULL
 *   INT          decimal text: an int8 for an integer parameter, 1/0 for a
 *                bool one, a decimal for numeric, a string for text
 *   FLOAT        shortest text that strtod() reads back to the same bits
 *                ("Infinity", "-Infinity", "NaN", "-0", "5e-324")
 *   TEXT         text; FERRY_EDATA when it holds a NUL byte, which
 *                PostgreSQL text cannot hold (raw bytes for a bytea param)
 *   BLOB         binary bytea for a bytea parameter; for any other type the
 *                bytes as text (FERRY_EDATA when they hold a NUL byte)
 *
 * Statements run in single-row mode, so a large result is never held in
 * memory whole. A connection carries one result stream at a time: when
 * another statement (or exec, begin, ...) needs the connection while a
 * statement's rows are still streaming, the rest of those rows are read into
 * that statement's queue first, so interleaved statements behave as they do
 * on SQLite, at the cost of memory for the rows that were buffered.
 *
 * "?" placeholders become $1, $2, ... outside string literals, quoted
 * identifiers, dollar-quoted bodies and comments. PostgreSQL's own "?"
 * operators (jsonb ? key) therefore cannot be written: use jsonb_exists().
 *
 * Errors carry the SQLSTATE; disk full (53100) is FERRY_ENOSPC.
 *
 * Numbers are formatted and parsed with snprintf/strtod, which assumes the
 * C locale's decimal point (ferry never calls setlocale()).
 */
#include "engine.h"

#include "../buf.h"
#include "../log.h"

#include <libpq-fe.h>

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* Type OIDs from PostgreSQL's pg_type.dat: stable across releases. */
#define OID_BOOL 16
#define OID_BYTEA 17
#define OID_INT8 20
#define OID_INT2 21
#define OID_INT4 23
#define OID_TEXT 25
#define OID_OID 26
#define OID_XID 28
#define OID_FLOAT4 700
#define OID_FLOAT8 701
#define OID_XID8 5069

#define SQL_SHOWN 60                /* bytes of a statement quoted in an error message */
#define MAX_PARAMS 65535            /* the protocol counts parameters in 16 bits */
#define MAX_SQL ((size_t)256 << 20) /* rewritten statement text */
#define MAX_VALUE ((size_t)1 << 30) /* PostgreSQL's limit on one field */
#define MIN_SERVER_VERSION 120000   /* attgenerated, shortest-exact float output */

static const char session_sql[] = "SET client_encoding = 'UTF8';"
                                  "SET DateStyle = 'ISO, MDY';"
                                  "SET IntervalStyle = 'iso_8601';"
                                  "SET extra_float_digits = 3;"
                                  "SET TimeZone = 'UTC';"
                                  "SET standard_conforming_strings = on;"
                                  "SET bytea_output = 'hex';"
                                  /* pages and batches are short: compiling them costs more */
                                  "SET jit = off;"
                                  /* commits wait for the disk (DURABLE_SQL) */
                                  "SELECT pg_catalog.set_config('synchronous_commit', 'on', false) "
                                  "WHERE pg_catalog.current_setting('synchronous_commit') = 'off';"
                                  /* in the same round trip: the schema (session_setup) */
                                  "SELECT current_schema() IS NULL, "
                                  "pg_catalog.current_setting('search_path'), "
                                  "pg_catalog.current_database()";

struct pg_stmt;

/* An open COPY ... FROM STDIN, see ferry_db_copy_begin(). */
struct pg_copy {
    char *table;
    char **cols; /* n names, for error messages */
    int *kind;   /* n: COPY_BYTEA (BLOB and TEXT go as hex), COPY_FLOAT, or 0 */
    size_t n;
    struct ferry_buf out; /* encoded rows not yet handed to libpq */
    int64_t rows;
    char *sql;   /* COPY ... FROM STDIN, sent with the first rows (copy_start) */
    int started; /* the server is in COPY IN mode */
    int typed;   /* kind[] read from the catalog (copy_types) */
};

/* An open COPY (...) TO STDOUT, see ferry_db_copy_out_begin(). */
struct pg_copy_out {
    int ncols;
    Oid *types;             /* ncols result column types */
    struct ferry_buf *text; /* ncols: a field with its escapes decoded */
    struct ferry_buf *bin;  /* ncols: decoded bytea */
    char *line;             /* the current line (PQfreemem) */
    int done;               /* the server ended the copy */
    char *sql;              /* for error messages */
};

/*
 * What a COPY (query) TO needs from the query's description, by query text:
 * the parameters' types (for its literals) and the columns' (to read a
 * field back). Describing takes a prepare, a describe and a savepoint around
 * them, about as long as a short page itself; a source runs the same page
 * query for page after page. Kept DESC_SECS (so that a column whose type an
 * ALTER TABLE changed is seen within that), and dropped when a copy of its
 * query fails.
 */
#define DESCS 4
#define DESC_SECS 60

struct pg_desc {
    char *sql; /* owned; NULL: a free slot */
    int nparams, ncols;
    Oid *types; /* nparams parameter types, then ncols column types */
    time_t at;  /* described */
};

struct pg_db {
    struct ferry_db base; /* first: db.c sees only this */
    struct pg_desc descs[DESCS];
    PGconn *conn;
    int lazy;               /* synchronous_commit off for this session, see pg_durable */
    struct pg_stmt *active; /* statement whose rows are streaming on conn, or NULL */
    unsigned long next_id;  /* for statement names */
    /* DEALLOCATEs of statements freed inside a transaction, run after it ends */
    struct ferry_buf deferred;
    struct pg_copy *copy;    /* open bulk load, or NULL */
    struct pg_copy_out *out; /* open COPY TO, or NULL */
};

enum st_state {
    ST_IDLE = 0, /* not executed since prepare/reset */
    ST_RUNNING,  /* executed, rows may follow */
    ST_DONE,     /* every result read */
};

struct pg_param {
    char *p; /* owned; NULL for SQL NULL; NUL-terminated in text format */
    int n;
    int fmt; /* 0 text, 1 binary */
};

struct pg_stmt {
    struct ferry_stmt base; /* first */
    char name[32];
    char *sql;      /* as given, for error messages; owned */
    PGresult *desc; /* PQdescribePrepared: parameter and column types */
    int nparams;
    int ncols;
    struct pg_param *params; /* nparams */
    enum st_state state;
    PGresult *cur;           /* the current row (a PGRES_SINGLE_TUPLE result) */
    struct ferry_value *row; /* ncols values of cur, borrowing from cur or bufs */
    struct ferry_buf *bufs;  /* ncols, decoded bytea */
    /* results read off the connection early, see pg_detach() */
    PGresult **queue;
    size_t qhead, qlen, qcap;
    int lost;    /* buffering failed for lack of memory: the rows are gone */
    int aborted; /* a rollback ended it while its rows were streaming */
    int64_t changes;
};

static struct pg_db *pg_db(struct ferry_db *db)
{
    return (struct pg_db *)db;
}

static struct pg_stmt *pg_stmt(struct ferry_stmt *st)
{
    return (struct pg_stmt *)st;
}

/* libpq messages end with a newline and may continue on tab-indented lines. */
static void one_line(const char *in, char *out, size_t size)
{
    size_t n = 0;
    int space = 0;

    for (const char *p = in ? in : ""; *p && n + 1 < size; p++) {
        if (*p == '\n' || *p == '\r' || *p == '\t' || *p == ' ') {
            space = n > 0;
            continue;
        }
        if (space && n + 2 < size)
            out[n++] = ' ';
        space = 0;
        out[n++] = *p;
    }
    out[n] = '\0';
}

/* msg (FERRY_ERRMSG_MAX bytes) in place with each "quoted" piece as "..." */
static void drop_quoted(char *msg)
{
    char out[FERRY_ERRMSG_MAX];
    size_t n = 0;
    int quoted = 0;

    for (const char *p = msg; *p && n + 6 < sizeof(out); p++) {
        if (*p == '"') {
            if (!quoted) {
                memcpy(out + n, "\"...\"", 5);
                n += 5;
            }
            quoted = !quoted;
        } else if (!quoted) {
            out[n++] = *p;
        }
    }
    out[n] = '\0';
    memcpy(msg, out, n + 1);
}

/*
 * A data exception's message (SQLSTATE class 22) in place, without the
 * value it quotes: `invalid input syntax for type date: "<a value>"` (all
 * after ": " goes), or `value "<a value>" is out of range for type
 * integer` (quoted text goes). A mask's
 * expression meets the real values, and the message reaches the log.
 */
static void drop_values(char *msg, size_t size)
{
    char in[FERRY_ERRMSG_MAX];
    char *colon;
    size_t n = 0;
    int quoted = 0;

    snprintf(in, sizeof(in), "%s", msg);
    colon = strstr(in, ": ");
    if (colon)
        snprintf(colon, sizeof(in) - (size_t)(colon - in), " (a value left out)");
    for (const char *p = in; *p && n + 5 < size; p++) {
        if (*p == '"' && !quoted) {
            memcpy(msg + n, "\"...", 4);
            n += 4;
        }
        if (*p == '"')
            quoted = !quoted;
        if (!quoted)
            msg[n++] = *p;
    }
    msg[n] = '\0';
}

/*
 * Translate a failed result (or, with res NULL, the connection's last
 * error) about sql into err. The server's DETAIL is left out: it can quote
 * whole rows ("Failing row contains ..."), which must not reach a log; so
 * is the value a data exception's message quotes (drop_values).
 */
static int pg_error(struct pg_db *d, const PGresult *res, const char *sql, struct ferry_error *err)
{
    const char *more = sql && strlen(sql) > SQL_SHOWN ? "..." : "";
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    char msg[FERRY_ERRMSG_MAX];

    if (primary)
        one_line(primary, msg, sizeof(msg));
    else if (res && *PQresultErrorMessage(res))
        one_line(PQresultErrorMessage(res), msg, sizeof(msg));
    else
        one_line(PQerrorMessage(d->conn), msg, sizeof(msg));
    if (state && strncmp(state, "22", 2) == 0)
        drop_values(msg, sizeof(msg));
    if (PQstatus(d->conn) == CONNECTION_BAD)
        return ferry_error_set(err, FERRY_EDB,
                               "'%.*s%s': connection to PostgreSQL lost: %s: reconnect and rerun",
                               SQL_SHOWN, sql ? sql : "", more, msg);
    if (state && strcmp(state, "53100") == 0)
        return ferry_error_set(err, FERRY_ENOSPC,
                               "disk full on the PostgreSQL server: %s: free space and rerun", msg);
    /* ferry reads values as text: a bytea over 512 MB has hex text over the server's 1 GB */
    if (strstr(msg, "invalid memory alloc request size"))
        return ferry_error_set(err, FERRY_EDB,
                               "PostgreSQL cannot write a value this big as text (%s; a bytea over "
                               "512 MB, README, Limits): '%.*s%s'",
                               msg, SQL_SHOWN, sql ? sql : "", more);
    return ferry_error_set(err, FERRY_EDB, "'%.*s%s': %s (SQLSTATE %s)", SQL_SHOWN, sql ? sql : "",
                           more, msg, state ? state : "none");
}

/* Read and drop the rest of the results of the command in flight. */
static void drain(PGconn *conn)
{
    for (;;) {
        PGresult *res = PQgetResult(conn);

        if (!res)
            break;
        PQclear(res);
    }
}

/*
 * A COPY started where rows or a status were expected: leave the copy state
 * so that the connection stays usable (COPY has its own API).
 */
static void end_copy(struct pg_db *d, ExecStatusType status)
{
    char *buf = NULL;

    if (status == PGRES_COPY_IN) {
        PQputCopyEnd(d->conn, "COPY cannot run through this call");
    } else if (status == PGRES_COPY_OUT) {
        while (PQgetCopyData(d->conn, &buf, 0) > 0)
            PQfreemem(buf);
    }
}

/* A PQexec/PQexecParams result that should be status ok; consumes res. */
static int check_result(struct pg_db *d, PGresult *res, ExecStatusType ok, const char *sql,
                        struct ferry_error *err)
{
    ExecStatusType status = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    int rc = 0;

    if (status == PGRES_COPY_IN || status == PGRES_COPY_OUT) {
        end_copy(d, status);
        drain(d->conn);
        rc = ferry_error_set(err, FERRY_EINTERNAL, "'%.*s': COPY cannot run through this call",
                             SQL_SHOWN, sql);
    } else if (status != ok && !(ok == PGRES_COMMAND_OK &&
                                 (status == PGRES_TUPLES_OK || status == PGRES_EMPTY_QUERY))) {
        rc = pg_error(d, res, sql, err);
    }
    PQclear(res);
    return rc;
}

static void buffer_result(struct pg_stmt *st, PGresult *res)
{
    PGresult **q;
    size_t cap;

    if (st->lost) {
        PQclear(res);
        return;
    }
    if (st->qlen == st->qcap) {
        cap = st->qcap ? st->qcap * 2 : 64;
        q = cap < SIZE_MAX / sizeof(*q) ? realloc(st->queue, cap * sizeof(*q)) : NULL;
        if (!q) {
            log_error("out of memory buffering the rows of '%.*s'", SQL_SHOWN, st->sql);
            st->lost = 1;
            PQclear(res);
            return;
        }
        st->queue = q;
        st->qcap = cap;
    }
    st->queue[st->qlen++] = res;
}

/*
 * Free the connection of the statement streaming on it: its remaining
 * results move to its queue. Called before any other use of the connection.
 */
static void pg_detach(struct pg_db *d)
{
    struct pg_stmt *st = d->active;

    if (!st)
        return;
    log_debug("buffering the remaining rows of '%.*s' to run another statement", SQL_SHOWN,
              st->sql);
    for (;;) {
        PGresult *res = PQgetResult(d->conn);

        if (!res)
            break;
        buffer_result(st, res);
    }
    d->active = NULL;
}

/*
 * Run deferred DEALLOCATEs once the connection is outside any transaction:
 * one that failed there would abort the caller's transaction.
 */
static void flush_deferred(struct pg_db *d)
{
    PGresult *res;

    if (d->deferred.len == 0 || PQtransactionStatus(d->conn) != PQTRANS_IDLE)
        return;
    res = PQexec(d->conn, d->deferred.data);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        log_debug("postgresql: deferred deallocation failed: %s", PQresultErrorMessage(res));
    PQclear(res);
    ferry_buf_reset(&d->deferred);
}

/* Run sql (no parameters, no rows wanted) on the connection. */
static int pg_run(struct pg_db *d, const char *sql, struct ferry_error *err)
{
    pg_detach(d);
    return check_result(d, PQexec(d->conn, sql), PGRES_COMMAND_OK, sql, err);
}

/* Internal query with text parameters; *res is owned, PQclear it. */
static int pg_query(struct pg_db *d, const char *sql, int n, const char *const *vals,
                    PGresult **res, struct ferry_error *err)
{
    PGresult *r;

    pg_detach(d);
    r = PQexecParams(d->conn, sql, n, NULL, vals, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        *res = NULL;
        return check_result(d, r, PGRES_TUPLES_OK, sql, err);
    }
    *res = r;
    return 0;
}

static void notice_cb(void *arg, const char *message)
{
    char line[FERRY_ERRMSG_MAX];

    (void)arg;
    one_line(message, line, sizeof(line));
    log_debug("postgresql: %s", line);
}

/*
 * The session's settings (session_sql), and a check of what its last
 * statement reads: a search_path none of whose schemas exists ([source] or
 * [target] schema misspelt, or not created yet) would fail later with the
 * server's "no schema has been selected to create in", or as tables not
 * found: said at once as the configuration error it is.
 */
static int session_setup(struct pg_db *d, struct ferry_error *err)
{
    PGresult *res;
    char path[128], msg[FERRY_ERRMSG_MAX];
    int rc = FERRY_OK;

    pg_detach(d);
    res = PQexec(d->conn, session_sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        one_line(PQerrorMessage(d->conn), msg, sizeof(msg));
        rc = ferry_error_set(err, FERRY_EDB, "cannot set up the PostgreSQL session: %s", msg);
    } else if (strcmp(PQgetvalue(res, 0, 0), "t") == 0) {
        one_line(PQgetvalue(res, 0, 1), path, sizeof(path));
        rc = ferry_error_set(err, FERRY_ECONFIG,
                             "no schema of the search_path (%s) exists in PostgreSQL database "
                             "%.64s, or this role may not use it: create it (CREATE SCHEMA ...), "
                             "grant USAGE on it, or fix [source]/[target] schema",
                             path, PQgetvalue(res, 0, 2));
    }
    PQclear(res);
    return rc;
}

static int pg_open(const char *url, int flags, struct ferry_db **out, struct ferry_error *err)
{
    struct pg_db *d = NULL;
    PQconninfoOption *opts;
    char *perr = NULL;
    char msg[FERRY_ERRMSG_MAX];
    int rc = 0;

    *out = NULL;
    /* Parse first: a malformed URL is a configuration error, not a failed connection. */
    opts = PQconninfoParse(url, &perr);
    if (!opts) {
        one_line(perr ? perr : "out of memory", msg, sizeof(msg));
        PQfreemem(perr);
        /* libpq quotes the URL, or a piece of it, which may hold the password */
        drop_quoted(msg);
        return ferry_error_set(err, FERRY_ECONFIG,
                               "invalid PostgreSQL URL (%s); fix the database URL in the config",
                               msg);
    }
    PQconninfoFree(opts);

    d = calloc(1, sizeof(*d));
    if (!d)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory opening a PostgreSQL connection");
    d->base.ops = &ferry_pg_ops;
    d->base.engine = FERRY_ENGINE_PG;
    ferry_buf_init(&d->deferred, (size_t)1 << 20);
    d->conn = PQconnectdb(url);
    if (!d->conn) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory opening a PostgreSQL connection");
        goto out;
    }
    if (PQstatus(d->conn) != CONNECTION_OK) {
        const char *host = PQhost(d->conn);
        const char *port = PQport(d->conn);

        one_line(PQerrorMessage(d->conn), msg, sizeof(msg));
        rc = ferry_error_set(err, FERRY_EDB, "cannot connect to PostgreSQL at %s%s%s: %s",
                             host && *host ? host : "localhost", port && *port ? ":" : "",
                             port ? port : "", msg);
        goto out;
    }
    if (PQserverVersion(d->conn) < MIN_SERVER_VERSION) {
        rc = ferry_error_set(err, FERRY_EDB,
                             "PostgreSQL server version %d is too old: ferry needs 12 or later",
                             PQserverVersion(d->conn));
        goto out;
    }
    PQsetNoticeProcessor(d->conn, notice_cb, NULL);
    rc = session_setup(d, err);
    if (!rc && (flags & FERRY_DB_READONLY)) {
        rc = pg_run(d, "SET default_transaction_read_only = on", err);
        if (rc)
            ferry_error_prefix(err, "cannot set up the PostgreSQL session");
    }
    if (rc)
        goto out;
    *out = &d->base;
    d = NULL;
out:
    if (d) {
        PQfinish(d->conn);
        ferry_buf_release(&d->deferred);
        free(d);
    }
    return rc;
}

static void copy_free(struct pg_copy *c)
{
    if (!c)
        return;
    for (size_t i = 0; c->cols && i < c->n; i++)
        free(c->cols[i]);
    free(c->cols);
    free(c->kind);
    free(c->table);
    free(c->sql);
    ferry_buf_release(&c->out);
    free(c);
}

/*
 * Leave COPY IN mode without loading anything: the server fails the COPY
 * with why, which aborts the transaction; the caller rolls back.
 */
static void copy_abandon(struct pg_db *d, const char *why)
{
    if (!d->copy)
        return;
    if (d->copy->started && PQputCopyEnd(d->conn, why) == 1)
        drain(d->conn);
    copy_free(d->copy);
    d->copy = NULL;
}

static int pg_copy_out_end(struct ferry_db *db, struct ferry_error *err);

static void pg_close(struct ferry_db *db)
{
    struct pg_db *d = pg_db(db);
    struct ferry_error ignored;

    copy_abandon(d, "connection closed during the copy");
    pg_copy_out_end(db, &ignored);

    if (d->active)
        log_error("BUG: PostgreSQL connection closed with a statement still running");
    for (size_t i = 0; i < DESCS; i++) {
        free(d->descs[i].sql);
        free(d->descs[i].types);
    }
    PQfinish(d->conn);
    ferry_buf_release(&d->deferred);
    free(d);
}

static int pg_exec(struct ferry_db *db, const char *sql, struct ferry_error *err)
{
    return pg_run(pg_db(db), sql, err);
}

static int pg_begin_read(struct ferry_db *db, struct ferry_error *err)
{
    return pg_run(pg_db(db), "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", err);
}

static int pg_begin(struct ferry_db *db, struct ferry_error *err)
{
    return pg_run(pg_db(db), "BEGIN", err);
}

static int pg_commit(struct ferry_db *db, struct ferry_error *err)
{
    struct pg_db *d = pg_db(db);
    PGresult *res;
    int rc = 0;

    pg_detach(d);
    res = PQexec(d->conn, "COMMIT");
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        rc = check_result(d, res, PGRES_COMMAND_OK, "COMMIT", err);
        goto out;
    }
    /* COMMIT of a failed transaction "succeeds" with the tag ROLLBACK: that is a failure here */
    if (strcmp(PQcmdStatus(res), "ROLLBACK") == 0)
        rc = ferry_error_set(err, FERRY_EDB,
                             "commit failed: PostgreSQL rolled the transaction back after an "
                             "earlier error in it");
    PQclear(res);
out:
    flush_deferred(d);
    return rc;
}

/*
 * Group commit: with synchronous_commit off a COMMIT returns before its WAL
 * reaches the disk; the next commit with the session's usual setting waits
 * for the WAL up to its own record, which covers every earlier commit.
 * That setting is the server's (or the database's, or the role's), unless
 * it is off, which would lose committed batches whose marks moved past
 * them in a crash: then on (session_sql at connect, DURABLE_SQL after a
 * lazy stretch; RESET would give off back).
 */
#define DURABLE_SQL                                                                                \
    "SELECT pg_catalog.set_config('synchronous_commit', CASE WHEN reset_val = 'off' THEN 'on' "    \
    "ELSE reset_val END, false) FROM pg_catalog.pg_settings WHERE name = 'synchronous_commit'"
static int pg_alive(struct ferry_db *db)
{
    return PQstatus(pg_db(db)->conn) == CONNECTION_OK;
}

static int pg_durable(struct ferry_db *db, int durable, struct ferry_error *err)
{
    struct pg_db *d = pg_db(db);
    int rc;

    if (d->lazy == !durable)
        return 0;
    if (durable) {
        PGresult *res = NULL;

        rc = pg_query(d, DURABLE_SQL, 0, NULL, &res, err);
        PQclear(res);
    } else {
        rc = pg_run(d, "SET synchronous_commit TO off", err);
    }
    if (!rc)
        d->lazy = !durable;
    return rc;
}

static void pg_rollback(struct ferry_db *db)
{
    struct pg_db *d = pg_db(db);

    /*
     * A statement still streaming is dropped, not buffered: a rollback is
     * the cleanup path, and the rest of a big result is not worth reading.
     */
    copy_abandon(d, "rolled back");
    if (d->out) {
        struct ferry_error ignored;

        pg_copy_out_end(db, &ignored);
    }
    if (d->active) {
        struct pg_stmt *st = d->active;

        drain(d->conn);
        d->active = NULL;
        st->aborted = 1;
    }
    if (PQtransactionStatus(d->conn) != PQTRANS_IDLE)
        PQclear(PQexec(d->conn, "ROLLBACK"));
    flush_deferred(d);
}

static int is_ident_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '$' || (unsigned char)c >= 0x80;
}

/*
 * Length of the dollar-quote tag ("$$", "$body$") at s, or 0 when s does
 * not start one.
 */
static size_t dollar_tag(const char *s)
{
    size_t n = 1;

    if (s[1] >= '0' && s[1] <= '9')
        return 0; /* $1 is a parameter */
    while (s[n] && s[n] != '$' && is_ident_char(s[n]))
        n++;
    return s[n] == '$' ? n + 1 : 0;
}

/*
 * Rewrite "?" placeholders to $1..$n in *out (owned, free with free()).
 * The lexer knows just enough of PostgreSQL's: '...' (with '' and, after E,
 * backslash escapes), "..." identifiers, $tag$...$tag$ bodies, -- and nested
 * block comments.
 */
static int rewrite_params(const char *sql, char **out, int *nparams, const char *const *lits,
                          int nlits, struct ferry_error *err)
{
    struct ferry_buf b;
    const char *p = sql;
    const char *start;
    int n = 0;
    int rc = 0;

    *out = NULL;
    *nparams = 0;
    ferry_buf_init(&b, MAX_SQL);
    while (*p && !rc) {
        start = p;
        if (*p == '\'') {
            int esc = p > sql && (p[-1] == 'E' || p[-1] == 'e') &&
                      (p - 1 == sql || !is_ident_char(p[-2]));

            for (p++; *p; p++) {
                if (esc && *p == '\\' && p[1]) {
                    p++;
                } else if (*p == '\'') {
                    if (p[1] != '\'')
                        break;
                    p++;
                }
            }
            if (*p)
                p++;
        } else if (*p == '"') {
            for (p++; *p; p++)
                if (*p == '"') {
                    if (p[1] != '"')
                        break;
                    p++;
                }
            if (*p)
                p++;
        } else if (p[0] == '-' && p[1] == '-') {
            while (*p && *p != '\n')
                p++;
        } else if (p[0] == '/' && p[1] == '*') {
            int depth = 0;

            while (*p) {
                if (p[0] == '/' && p[1] == '*') {
                    depth++;
                    p += 2;
                } else if (p[0] == '*' && p[1] == '/') {
                    p += 2;
                    if (--depth == 0)
                        break;
                } else {
                    p++;
                }
            }
        } else if (*p == '$' && (p == sql || !is_ident_char(p[-1])) && dollar_tag(p)) {
            size_t tn = dollar_tag(p);
            const char *end;

            p += tn;
            end = p;
            for (;;) {
                end = strchr(end, '$');
                if (!end || strncmp(end, start, tn) == 0)
                    break;
                end++;
            }
            p = end ? end + tn : p + strlen(p);
        } else if (*p == '?') {
            if (n == MAX_PARAMS) {
                rc = ferry_error_set(err, FERRY_EDB,
                                     "'%.*s...': more than %d parameters in one statement",
                                     SQL_SHOWN, sql, MAX_PARAMS);
                break;
            }
            if (lits && n >= nlits) {
                rc = ferry_error_set(err, FERRY_EINTERNAL, "'%.*s...': more than %d parameters",
                                     SQL_SHOWN, sql, nlits);
                break;
            }
            if (lits)
                rc = ferry_buf_adds(&b, lits[n++]);
            else
                rc = ferry_buf_addf(&b, "$%d", ++n);
            p++;
            continue;
        } else {
            p++;
            while (*p && *p != '\'' && *p != '"' && *p != '-' && *p != '/' && *p != '$' &&
                   *p != '?')
                p++;
        }
        rc = ferry_buf_add(&b, start, (size_t)(p - start));
    }
    if (rc == FERRY_ETOOBIG || rc == FERRY_ENOMEM)
        rc = ferry_error_set(err, rc, "statement too long to prepare (%zu bytes)", strlen(sql));
    if (!rc) {
        *out = ferry_buf_detach(&b, NULL);
        if (!*out)
            rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory preparing a statement");
        *nparams = n;
    }
    ferry_buf_release(&b);
    return rc;
}

/* 1-based parameter number from "could not determine data type of parameter $N", or 0. */
static int undetermined_param(const PGresult *res)
{
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    const char *dollar = msg ? strrchr(msg, '$') : NULL;
    long v;

    if (!state || strcmp(state, "42P18") != 0 || !dollar)
        return 0;
    v = strtol(dollar + 1, NULL, 10);
    return v > 0 && v <= MAX_PARAMS ? (int)v : 0;
}

static void stmt_release_row(struct pg_stmt *st)
{
    PQclear(st->cur);
    st->cur = NULL;
}

/* Read the statement's results to the end (whatever is left) and mark it done. */
static void stmt_finish(struct pg_stmt *st)
{
    struct pg_db *d = pg_db(st->base.db);

    stmt_release_row(st);
    while (st->qhead < st->qlen)
        PQclear(st->queue[st->qhead++]);
    st->qhead = st->qlen = 0;
    if (d->active == st) {
        drain(d->conn);
        d->active = NULL;
    }
    if (st->state == ST_RUNNING)
        st->state = ST_DONE;
}

static void clear_params(struct pg_stmt *st)
{
    for (int i = 0; i < st->nparams; i++) {
        free(st->params[i].p);
        st->params[i].p = NULL;
        st->params[i].n = 0;
        st->params[i].fmt = 0;
    }
}

static void pg_stmt_free(struct ferry_stmt *st_)
{
    struct pg_stmt *st = pg_stmt(st_);
    struct pg_db *d;

    if (!st)
        return;
    d = pg_db(st->base.db);
    stmt_finish(st);
    if (st->desc) {
        /* a statement that was prepared: drop it on the server too */
        char sql[64];

        snprintf(sql, sizeof(sql), "DEALLOCATE %s", st->name);
        pg_detach(d);
        if (PQtransactionStatus(d->conn) != PQTRANS_IDLE) {
            if (ferry_buf_addf(&d->deferred, "%s;", sql))
                log_debug("postgresql: statement %s stays allocated until disconnect", st->name);
        } else {
            PQclear(PQexec(d->conn, sql));
        }
    }
    clear_params(st);
    free(st->params);
    for (int i = 0; st->bufs && i < st->ncols; i++)
        ferry_buf_release(&st->bufs[i]);
    free(st->bufs);
    free(st->row);
    free(st->queue);
    PQclear(st->desc);
    free(st->sql);
    free(st);
}

/*
 * PQprepare sql as st->name, typing text each parameter whose type the
 * server cannot infer. Returns the final PQprepare result (owned).
 */
static PGresult *prepare_inferred(struct pg_db *d, struct pg_stmt *st, const char *text, int n,
                                  Oid *types, int in_tx)
{
    PGresult *res = NULL;
    int k;

    for (int tries = 0; tries <= n; tries++) {
        res = PQprepare(d->conn, st->name, text, n, types);
        if (PQresultStatus(res) == PGRES_COMMAND_OK)
            break;
        k = undetermined_param(res);
        if (!k || k > n || types[k - 1] != 0)
            break;
        types[k - 1] = OID_TEXT;
        PQclear(res);
        res = NULL;
        if (in_tx)
            PQclear(PQexec(d->conn, "ROLLBACK TO SAVEPOINT ferry_prepare"));
    }
    return res;
}

static int pg_prepare(struct ferry_db *db, const char *sql, struct ferry_stmt **out,
                      struct ferry_error *err)
{
    struct pg_db *d = pg_db(db);
    struct pg_stmt *st;
    char *text = NULL;
    Oid *types = NULL;
    PGresult *res = NULL;
    int in_tx = 0;
    int n = 0;
    int rc;

    *out = NULL;
    st = calloc(1, sizeof(*st));
    if (!st)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory preparing a statement");
    st->base.db = db;
    st->sql = strdup(sql);
    if (!st->sql) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory preparing a statement");
        goto out;
    }
    rc = rewrite_params(sql, &text, &n, NULL, 0, err);
    if (rc)
        goto out;
    types = calloc((size_t)n + 1, sizeof(*types));
    if (!types) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory preparing a statement");
        goto out;
    }
    pg_detach(d);
    flush_deferred(d);
    snprintf(st->name, sizeof(st->name), "ferry_%lu", ++d->next_id);
    /*
     * A failed command aborts the whole transaction in PostgreSQL; a failed
     * prepare (or the retry below) must not, as it does not in SQLite.
     */
    if (PQtransactionStatus(d->conn) == PQTRANS_INTRANS) {
        rc = pg_run(d, "SAVEPOINT ferry_prepare", err);
        if (rc)
            goto out;
        in_tx = 1;
    }
    /*
     * Untyped parameters take their type from context. Where there is none,
     * the server names the parameter: type it text, as PostgreSQL types an
     * unknown literal, and try again.
     */
    res = prepare_inferred(d, st, text, n, types, in_tx);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        rc = check_result(d, res, PGRES_COMMAND_OK, sql, err);
        res = NULL;
        goto out;
    }
    st->desc = PQdescribePrepared(d->conn, st->name);
    if (PQresultStatus(st->desc) != PGRES_COMMAND_OK) {
        char drop[64];

        rc = pg_error(d, st->desc, sql, err);
        PQclear(st->desc);
        st->desc = NULL;
        snprintf(drop, sizeof(drop), "DEALLOCATE %s", st->name);
        PQclear(PQexec(d->conn, drop));
        goto out;
    }
    st->nparams = PQnparams(st->desc);
    st->ncols = PQnfields(st->desc);
    st->params = calloc((size_t)st->nparams + 1, sizeof(*st->params));
    st->row = calloc((size_t)st->ncols + 1, sizeof(*st->row));
    st->bufs = calloc((size_t)st->ncols + 1, sizeof(*st->bufs));
    if (!st->params || !st->row || !st->bufs) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory preparing a statement");
        goto out;
    }
    for (int i = 0; i < st->ncols; i++)
        ferry_buf_init(&st->bufs[i], MAX_VALUE);
    *out = &st->base;
    st = NULL;
out:
    if (in_tx) {
        if (rc)
            PQclear(PQexec(d->conn, "ROLLBACK TO SAVEPOINT ferry_prepare"));
        PQclear(PQexec(d->conn, "RELEASE SAVEPOINT ferry_prepare"));
    }
    PQclear(res);
    free(types);
    free(text);
    if (st)
        pg_stmt_free(&st->base);
    return rc;
}

static int pg_bind(struct ferry_stmt *st_, int idx, const struct ferry_value *v,
                   struct ferry_error *err)
{
    struct pg_stmt *st = pg_stmt(st_);
    struct pg_param *par;
    char num[64];
    const char *src = NULL;
    size_t n = 0;
    Oid type;
    int fmt = 0;

    if (idx < 1 || idx > st->nparams)
        return ferry_error_set(err, FERRY_EDB, "'%.*s': parameter %d out of range (1..%d)",
                               SQL_SHOWN, st->sql, idx, st->nparams);
    if (st->state != ST_IDLE)
        return ferry_error_set(err, FERRY_EINTERNAL,
                               "'%.*s': binding parameter %d of a statement that ran: reset it "
                               "first",
                               SQL_SHOWN, st->sql, idx);
    par = &st->params[idx - 1];
    type = PQparamtype(st->desc, idx - 1);
    switch (v->type) {
    case FERRY_NULL:
        break;
    case FERRY_INT:
        snprintf(num, sizeof(num), "%" PRId64, v->u.i);
        src = num;
        n = strlen(num);
        break;
    case FERRY_FLOAT:
        ferry_double_text(v->u.f, num, sizeof(num));
        src = num;
        n = strlen(num);
        break;
    case FERRY_TEXT:
    case FERRY_BLOB:
        src = v->u.s.n ? v->u.s.p : "";
        n = v->u.s.n;
        if (n >= MAX_VALUE)
            return ferry_error_set(err, FERRY_ETOOBIG,
                                   "parameter %d is %zu bytes, over PostgreSQL's 1 GB limit", idx,
                                   n);
        if (type == OID_BYTEA) {
            fmt = 1; /* raw bytes: exact, and no escaping to get wrong */
        } else if (memchr(src, '\0', n)) {
            if (v->type == FERRY_TEXT)
                return ferry_error_set(err, FERRY_EDATA,
                                       "parameter %d: text value contains a NUL byte, which "
                                       "PostgreSQL text cannot hold; make the column bytea on "
                                       "the target, or remove the NUL on the source",
                                       idx);
            return ferry_error_set(err, FERRY_EDATA,
                                   "parameter %d: blob value contains a NUL byte and goes to a "
                                   "PostgreSQL column that is not bytea; make the column bytea "
                                   "on the target, or change the value on the source",
                                   idx);
        }
        break;
    default:
        return ferry_error_set(err, FERRY_EINTERNAL, "parameter %d has unknown value type %d", idx,
                               (int)v->type);
    }
    free(par->p);
    par->p = NULL;
    par->n = 0;
    par->fmt = 0;
    if (!src)
        return 0;
    par->p = malloc(n + 1);
    if (!par->p)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory binding parameter %d", idx);
    memcpy(par->p, src, n);
    par->p[n] = '\0';
    par->n = (int)n;
    par->fmt = fmt;
    return 0;
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

/*
 * The ferry value of s (n bytes, NUL-terminated), a value of type in its
 * text output form; bytea is decoded into b. Returns NULL, or what s was
 * supposed to be when it is malformed (*nomem set when b could not grow).
 */
static const char *text_value(const char *s, size_t n, Oid type, struct ferry_buf *b,
                              struct ferry_value *v, int *nomem)
{
    char *end = NULL;
    const char *what;

    *nomem = 0;
    switch (type) {
    case OID_INT2:
    case OID_INT4:
    case OID_INT8:
    case OID_OID:
    case OID_XID:
    case OID_XID8:
        what = "integer";
        errno = 0;
        v->type = FERRY_INT;
        v->u.i = (int64_t)strtoll(s, &end, 10);
        if (errno || end == s || *end)
            return what;
        return NULL;
    case OID_FLOAT4:
        what = "float4";
        v->type = FERRY_FLOAT;
        v->u.f = (double)strtof(s, &end); /* shortest float4 text reads back to that float */
        if (end == s || *end)
            return what;
        return NULL;
    case OID_FLOAT8:
        what = "float8";
        v->type = FERRY_FLOAT;
        v->u.f = strtod(s, &end); /* ERANGE for subnormals: the value is still exact */
        if (end == s || *end)
            return what;
        return NULL;
    case OID_BOOL:
        what = "bool";
        v->type = FERRY_INT;
        v->u.i = s[0] == 't';
        if (n != 1 || (s[0] != 't' && s[0] != 'f'))
            return what;
        return NULL;
    case OID_BYTEA:
        what = "bytea";
        if (n < 2 || s[0] != '\\' || s[1] != 'x' || n % 2)
            return what;
        /* size the buffer in one step, then decode into it */
        ferry_buf_reset(b);
        if (ferry_buf_add(b, s + 2, (n - 2) / 2)) {
            *nomem = 1;
            return what;
        }
        for (size_t k = 2; k < n; k += 2) {
            int hi = hexval(s[k]);
            int lo = hexval(s[k + 1]);

            if (hi < 0 || lo < 0)
                return what;
            b->data[(k - 2) / 2] = (char)(hi << 4 | lo);
        }
        v->type = FERRY_BLOB;
        v->u.s.p = b->data ? b->data : "";
        v->u.s.n = b->len;
        return NULL;
    default:
        v->type = FERRY_TEXT;
        v->u.s.p = s;
        v->u.s.n = n;
        return NULL;
    }
}

/* Convert column i of the current row to st->row[i]. */
static int decode_value(struct pg_stmt *st, int i, struct ferry_error *err)
{
    struct ferry_value *v = &st->row[i];
    const char *what;
    int nomem;

    if (PQgetisnull(st->cur, 0, i)) {
        *v = ferry_value_null();
        return 0;
    }
    what = text_value(PQgetvalue(st->cur, 0, i), (size_t)PQgetlength(st->cur, 0, i),
                      PQftype(st->cur, i), &st->bufs[i], v, &nomem);
    if (!what)
        return 0;
    if (nomem)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory reading column %d of '%.*s'", i,
                               SQL_SHOWN, st->sql);
    /* the value itself stays out of the message: it is row content */
    return ferry_error_set(err, FERRY_EDB, "'%.*s': column %d: malformed %s value from the server",
                           SQL_SHOWN, st->sql, i, what);
}

static int64_t command_changes(const PGresult *res)
{
    const char *tag = PQcmdStatus((PGresult *)res);
    const char *n = PQcmdTuples((PGresult *)res);

    /* SELECT also reports a count; like SQLite, only writes count as changes */
    if (strncmp(tag, "INSERT", 6) != 0 && strncmp(tag, "UPDATE", 6) != 0 &&
        strncmp(tag, "DELETE", 6) != 0 && strncmp(tag, "MERGE", 5) != 0)
        return 0;
    return *n ? (int64_t)strtoll(n, NULL, 10) : 0;
}

static int pg_step(struct ferry_stmt *st_, int *row, struct ferry_error *err)
{
    struct pg_stmt *st = pg_stmt(st_);
    struct pg_db *d = pg_db(st->base.db);
    const char **vals = NULL;
    int *lens = NULL;
    int *fmts = NULL;
    PGresult *res = NULL;
    int rc = 0;

    *row = 0;
    if (st->state == ST_DONE)
        return 0;
    if (st->state == ST_IDLE) {
        vals = calloc((size_t)st->nparams + 1, sizeof(*vals));
        lens = calloc((size_t)st->nparams + 1, sizeof(*lens));
        fmts = calloc((size_t)st->nparams + 1, sizeof(*fmts));
        if (!vals || !lens || !fmts) {
            rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory running '%.*s'", SQL_SHOWN,
                                 st->sql);
            goto out;
        }
        for (int i = 0; i < st->nparams; i++) {
            vals[i] = st->params[i].p;
            lens[i] = st->params[i].n;
            fmts[i] = st->params[i].fmt;
        }
        pg_detach(d);
        st->changes = 0;
        if (!PQsendQueryPrepared(d->conn, st->name, st->nparams, vals, lens, fmts, 0)) {
            rc = pg_error(d, NULL, st->sql, err);
            goto out;
        }
        st->state = ST_RUNNING;
        d->active = st;
        if (!PQsetSingleRowMode(d->conn)) {
            rc = ferry_error_set(err, FERRY_EINTERNAL, "'%.*s': cannot enter single-row mode",
                                 SQL_SHOWN, st->sql);
            goto fail;
        }
    }

    stmt_release_row(st);
    if (st->qhead < st->qlen) {
        res = st->queue[st->qhead++];
    } else if (st->lost) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory buffering the rows of '%.*s'",
                             SQL_SHOWN, st->sql);
        goto fail;
    } else if (st->aborted) {
        rc = ferry_error_set(err, FERRY_EDB, "'%.*s': statement ended by a rollback", SQL_SHOWN,
                             st->sql);
        goto fail;
    } else if (d->active == st) {
        res = PQgetResult(d->conn);
    }
    if (!res) {
        stmt_finish(st);
        goto out;
    }
    switch (PQresultStatus(res)) {
    case PGRES_SINGLE_TUPLE:
        st->cur = res;
        res = NULL;
        for (int i = 0; i < st->ncols && i < PQnfields(st->cur); i++) {
            rc = decode_value(st, i, err);
            if (rc)
                goto fail;
        }
        *row = 1;
        goto out;
    case PGRES_TUPLES_OK:
    case PGRES_COMMAND_OK:
        st->changes = command_changes(res);
        /* fall through */
    case PGRES_EMPTY_QUERY:
        stmt_finish(st);
        goto out;
    case PGRES_COPY_IN:
    case PGRES_COPY_OUT:
        if (d->active == st)
            end_copy(d, PQresultStatus(res));
        rc = ferry_error_set(err, FERRY_EINTERNAL,
                             "'%.*s': COPY cannot run through a prepared statement", SQL_SHOWN,
                             st->sql);
        goto fail;
    default:
        rc = pg_error(d, res, st->sql, err);
        goto fail;
    }
fail:
    stmt_finish(st);
    st->state = ST_DONE;
out:
    PQclear(res);
    free(vals);
    free(lens);
    free(fmts);
    return rc;
}

static int pg_ncols(struct ferry_stmt *st)
{
    return pg_stmt(st)->ncols;
}

static const char *pg_colname(struct ferry_stmt *st_, int i)
{
    struct pg_stmt *st = pg_stmt(st_);

    if (i < 0 || i >= st->ncols)
        return NULL;
    return PQfname(st->desc, i);
}

static void pg_column(struct ferry_stmt *st_, int i, struct ferry_value *out)
{
    struct pg_stmt *st = pg_stmt(st_);

    if (!st->cur || i < 0 || i >= st->ncols) {
        *out = ferry_value_null();
        return;
    }
    *out = st->row[i];
}

static int64_t pg_changes(struct ferry_stmt *st)
{
    return pg_stmt(st)->changes;
}

static void pg_reset(struct ferry_stmt *st_)
{
    struct pg_stmt *st = pg_stmt(st_);

    stmt_finish(st);
    st->lost = 0;
    st->aborted = 0;
    st->state = ST_IDLE;
    st->changes = 0;
    clear_params(st);
}

/* strdup of field (r, c) into *out. */
static int dup_field(const PGresult *res, int r, int c, char **out, struct ferry_error *err)
{
    *out = strdup(PQgetvalue(res, r, c));
    if (!*out)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory reading the schema");
    return 0;
}

static int pg_tables(struct ferry_db *db, char ***names, size_t *n, struct ferry_error *err)
{
    /* partitions are reached through their parent table, which is listed instead */
    static const char sql[] = "SELECT c.relname FROM pg_catalog.pg_class c"
                              " JOIN pg_catalog.pg_namespace ns ON ns.oid = c.relnamespace"
                              " WHERE ns.nspname = current_schema() AND c.relkind IN ('r', 'p')"
                              " AND NOT c.relispartition"
                              " AND c.relname NOT LIKE '\\_ferry\\_%'"
                              " ORDER BY c.relname COLLATE \"C\"";
    PGresult *res = NULL;
    char **v = NULL;
    size_t nv = 0;
    int rc;

    *names = NULL;
    *n = 0;
    rc = pg_query(pg_db(db), sql, 0, NULL, &res, err);
    if (rc)
        goto out;
    v = calloc((size_t)PQntuples(res) + 1, sizeof(*v));
    if (!v) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory reading the schema");
        goto out;
    }
    for (; nv < (size_t)PQntuples(res); nv++) {
        rc = dup_field(res, (int)nv, 0, &v[nv], err);
        if (rc)
            goto out;
    }
    *names = v;
    *n = nv;
    v = NULL;
out:
    for (size_t i = 0; v && i < nv; i++)
        free(v[i]);
    free(v);
    PQclear(res);
    return rc;
}

/*
 * The OID (as text, in oid[]) and spelling of table in the current schema:
 * an exact match, else the one table whose name matches ignoring case (as
 * SQLite matches), else *found = 0.
 */
static int find_table(struct pg_db *d, const char *table, char *oid, size_t size, char **name,
                      int *found, struct ferry_error *err)
{
    static const char sql[] = "SELECT c.oid, c.relname, c.relname = $1 FROM pg_catalog.pg_class c"
                              " JOIN pg_catalog.pg_namespace ns ON ns.oid = c.relnamespace"
                              " WHERE ns.nspname = current_schema() AND c.relkind IN ('r', 'p')"
                              " AND lower(c.relname) = lower($1)"
                              " ORDER BY c.relname = $1 DESC";
    const char *vals[1] = {table};
    PGresult *res = NULL;
    int rc;

    *found = 0;
    if (name)
        *name = NULL;
    rc = pg_query(d, sql, 1, vals, &res, err);
    if (rc)
        goto out;
    if (PQntuples(res) == 0 || (PQntuples(res) > 1 && PQgetvalue(res, 0, 2)[0] != 't'))
        goto out;
    *found = 1;
    if (oid)
        snprintf(oid, size, "%s", PQgetvalue(res, 0, 0));
    if (name)
        rc = dup_field(res, 0, 1, name, err);
out:
    PQclear(res);
    return rc;
}

static int read_columns(struct pg_db *d, const char *oid, struct ferry_table_info *t,
                        struct ferry_error *err)
{
    static const char sql[] =
        "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,"
        " COALESCE((SELECT k.ord FROM pg_catalog.pg_index i,"
        "   unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)"
        "   WHERE i.indrelid = a.attrelid AND i.indisprimary AND k.attnum = a.attnum), 0)"
        " FROM pg_catalog.pg_attribute a"
        " WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped"
        " AND a.attgenerated = '' ORDER BY a.attnum";
    const char *vals[1] = {oid};
    PGresult *res = NULL;
    int rc;

    rc = pg_query(d, sql, 1, vals, &res, err);
    if (rc)
        goto out;
    t->cols = calloc((size_t)PQntuples(res) + 1, sizeof(*t->cols));
    if (!t->cols) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory reading the schema");
        goto out;
    }
    for (int r = 0; r < PQntuples(res); r++) {
        struct ferry_column *c = &t->cols[t->ncols++];

        rc = dup_field(res, r, 0, &c->name, err);
        if (!rc)
            rc = dup_field(res, r, 1, &c->type, err);
        if (rc)
            goto out;
        c->notnull = PQgetvalue(res, r, 2)[0] == 't';
        c->pk = (int)strtol(PQgetvalue(res, r, 3), NULL, 10);
    }
out:
    PQclear(res);
    return rc;
}

static int read_fkeys(struct pg_db *d, const char *oid, struct ferry_table_info *t,
                      struct ferry_error *err)
{
    /*
     * conparentid <> 0 marks the per-partition copies PostgreSQL makes of a
     * key that references a partitioned table: the parent's row is the key.
     */
    static const char sql[] =
        "SELECT con.oid, p.relname, con.confdeltype = 'c', a.attname, pa.attname"
        " FROM pg_catalog.pg_constraint con"
        " JOIN pg_catalog.pg_class p ON p.oid = con.confrelid"
        " CROSS JOIN LATERAL unnest(con.conkey, con.confkey) WITH ORDINALITY AS k(att, patt, ord)"
        " JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.att"
        " JOIN pg_catalog.pg_attribute pa ON pa.attrelid = con.confrelid AND pa.attnum = k.patt"
        " WHERE con.conrelid = $1::oid AND con.contype = 'f' AND con.conparentid = 0"
        " ORDER BY con.conname COLLATE \"C\", con.oid, k.ord";
    const char *vals[1] = {oid};
    PGresult *res = NULL;
    const char *last = NULL;
    struct ferry_fkey *fk = NULL;
    int nrows;
    int rc;

    rc = pg_query(d, sql, 1, vals, &res, err);
    if (rc)
        goto out;
    nrows = PQntuples(res);
    /* at most one key per row: allocate for the worst case, no regrowing */
    t->fks = calloc((size_t)nrows + 1, sizeof(*t->fks));
    if (!t->fks)
        goto oom;
    for (int r = 0; r < nrows; r++) {
        const char *id = PQgetvalue(res, r, 0);

        if (!last || strcmp(last, id) != 0) {
            int width = 1;

            while (r + width < nrows && strcmp(PQgetvalue(res, r + width, 0), id) == 0)
                width++;
            fk = &t->fks[t->nfks++];
            fk->cols = calloc((size_t)width, sizeof(*fk->cols));
            fk->pcols = calloc((size_t)width, sizeof(*fk->pcols));
            if (!fk->cols || !fk->pcols)
                goto oom;
            rc = dup_field(res, r, 1, &fk->parent, err);
            if (rc)
                goto out;
            fk->cascade = PQgetvalue(res, r, 2)[0] == 't';
            last = id;
        }
        rc = dup_field(res, r, 3, &fk->cols[fk->ncols], err);
        if (!rc)
            rc = dup_field(res, r, 4, &fk->pcols[fk->ncols], err);
        fk->ncols++;
        if (rc)
            goto out;
    }
    goto out;
oom:
    rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory reading the schema");
out:
    PQclear(res);
    return rc;
}

static int pg_table_info(struct ferry_db *db, const char *table, struct ferry_table_info *out,
                         struct ferry_error *err)
{
    struct pg_db *d = pg_db(db);
    char oid[32];
    int found;
    int rc;

    memset(out, 0, sizeof(*out));
    out->rows = -1;
    rc = find_table(d, table, oid, sizeof(oid), &out->name, &found, err);
    if (rc)
        goto out;
    if (!found) {
        rc = ferry_error_set(err, FERRY_ENOTFOUND, "table '%s' does not exist", table);
        goto out;
    }
    rc = read_columns(d, oid, out, err);
    if (!rc)
        rc = read_fkeys(d, oid, out, err);
out:
    if (rc) {
        ferry_table_info_release(out);
        out->rows = -1;
    }
    return rc;
}

static int pg_table_columns(struct ferry_db *db, const char *table, struct ferry_table_info *out,
                            int *exists, struct ferry_error *err)
{
    struct pg_db *d = pg_db(db);
    char oid[32];
    int rc;

    rc = find_table(d, table, oid, sizeof(oid), &out->name, exists, err);
    if (!rc && *exists)
        rc = read_columns(d, oid, out, err);
    if (rc)
        ferry_table_info_release(out);
    if (rc || !*exists)
        memset(out, 0, sizeof(*out));
    out->rows = -1;
    return rc;
}

static int pg_table_exists(struct ferry_db *db, const char *table, int *exists,
                           struct ferry_error *err)
{
    return find_table(pg_db(db), table, NULL, 0, NULL, exists, err);
}

static int pg_fk_check(struct ferry_db *db, const char *table, int64_t *violations,
                       struct ferry_error *err)
{
    int exists;
    int rc;

    /* PostgreSQL checks every foreign key itself, at the latest at commit */
    *violations = 0;
    rc = pg_table_exists(db, table, &exists, err);
    if (!rc && !exists)
        rc = ferry_error_set(err, FERRY_ENOTFOUND, "table '%s' does not exist", table);
    return rc;
}

/*
 * Bulk load with COPY ... FROM STDIN in text format. Text, not binary:
 * every value already has an exact text form that the column type's input
 * function reads (the same forms pg_bind sends), while the binary format
 * would need an encoder per type (numeric, timestamps, arrays, ...) for no
 * measurable gain at ferry's batch sizes; the server parses text COPY at
 * several hundred thousand rows a second.
 */
#define COPY_FLUSH ((size_t)256 << 10) /* hand rows to libpq in chunks of this size */
#define COPY_BYTEA 1                   /* struct pg_copy kind[] */
#define COPY_FLOAT 2
#define COPY_MAX_COLS 1600 /* PostgreSQL's limit on a table's columns */

/*
 * The COPY starts with its first rows, not here (copy_start), and the
 * column types that copy_value needs are read before the first row it
 * encodes (copy_types): COPY text lines passed through (pg_copy_line) need
 * neither the catalog query nor a round trip of their own.
 */
static int pg_copy_begin(struct ferry_db *db, const char *table, const char *const *cols, size_t n,
                         struct ferry_error *err)
{
    struct pg_db *d = pg_db(db);
    struct pg_copy *c = NULL;
    struct ferry_buf sql;
    int rc = 0;

    if (d->copy)
        return ferry_error_set(err, FERRY_EINTERNAL, "a bulk load is already open");
    if (n == 0 || n > COPY_MAX_COLS)
        return ferry_error_set(err, FERRY_EINTERNAL, "bulk load of %s: %zu columns", table, n);
    ferry_buf_init(&sql, MAX_SQL);
    c = calloc(1, sizeof(*c));
    if (!c) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory starting a bulk load");
        goto out;
    }
    ferry_buf_init(&c->out, COPY_FLUSH + MAX_VALUE * 2 + 64);
    c->n = n;
    c->table = strdup(table);
    c->cols = calloc(n, sizeof(*c->cols));
    c->kind = calloc(n, sizeof(*c->kind));
    if (!c->table || !c->cols || !c->kind) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory starting a bulk load");
        goto out;
    }
    rc = ferry_buf_adds(&sql, "COPY ");
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
    if (!rc)
        rc = ferry_buf_adds(&sql, ") FROM STDIN");
    if (!rc) {
        c->sql = strdup(sql.data);
        if (!c->sql)
            rc = FERRY_ENOMEM;
    }
    if (rc) {
        rc = ferry_error_set(err, rc, "cannot build the bulk load of %s", table);
        goto out;
    }
    d->copy = c;
    c = NULL;
out:
    copy_free(c);
    ferry_buf_release(&sql);
    return rc;
}

/* kind[] of the open bulk load's columns, from the catalog: before the COPY starts. */
static int copy_types(struct pg_db *d, struct ferry_error *err)
{
    /* bytea takes bytes, hex-encoded; float4/8 any exact decimal (domains: their base) */
    static const char types_sql[] =
        "SELECT a.attname, CASE COALESCE(NULLIF(t.typbasetype, 0), a.atttypid)"
        " WHEN 17 THEN 1 WHEN 700 THEN 2 WHEN 701 THEN 2 ELSE 0 END"
        " FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid"
        " WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped";
    struct pg_copy *c = d->copy;
    struct ferry_buf qname;
    PGresult *res = NULL;
    const char *vals[1];
    int rc;

    if (c->started)
        return ferry_error_set(err, FERRY_EINTERNAL, "bulk load of %s: rows after lines", c->table);
    /* the table's name as regclass input reads it: quoted, so its case is kept */
    ferry_buf_init(&qname, MAX_SQL);
    rc = ferry_buf_add_ident(&qname, c->table);
    if (rc) {
        ferry_buf_release(&qname);
        return ferry_error_set(err, rc, "cannot build the bulk load of %s", c->table);
    }
    vals[0] = qname.data;
    rc = pg_query(d, types_sql, 1, vals, &res, err);
    ferry_buf_release(&qname);
    if (rc)
        return rc;
    for (int r = 0; r < PQntuples(res); r++)
        for (size_t i = 0; i < c->n; i++)
            if (strcmp(PQgetvalue(res, r, 0), c->cols[i]) == 0)
                c->kind[i] = (int)strtol(PQgetvalue(res, r, 1), NULL, 10);
    PQclear(res);
    c->typed = 1;
    return 0;
}

/* Put the server in COPY IN mode for the open bulk load. */
static int copy_start(struct pg_db *d, struct ferry_error *err)
{
    struct pg_copy *c = d->copy;
    PGresult *res;

    if (c->started)
        return 0;
    pg_detach(d);
    res = PQexec(d->conn, c->sql);
    if (PQresultStatus(res) != PGRES_COPY_IN)
        return check_result(d, res, PGRES_COPY_IN, c->sql, err);
    PQclear(res);
    c->started = 1;
    return 0;
}

static const char hexdigits[] = "0123456789abcdef";

/*
 * Length of the well-formed UTF-8 sequence at p (n bytes left, p[0] >=
 * 0x80), or 0: no overlongs, no surrogates, nothing above U+10FFFF.
 */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    unsigned lo = 0x80, hi = 0xBF;
    size_t len;

    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        len = 3;
    else if (c >= 0xF0 && c <= 0xF4)
        len = 4;
    else
        return 0;
    if (c == 0xE0)
        lo = 0xA0;
    else if (c == 0xED)
        hi = 0x9F;
    else if (c == 0xF0)
        lo = 0x90;
    else if (c == 0xF4)
        hi = 0x8F;
    if (n < len || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t k = 2; k < len; k++)
        if (p[k] < 0x80 || p[k] > 0xBF)
            return 0;
    return len;
}

/*
 * Append n bytes of p as a COPY text field, in one pass: backslash escapes;
 * FERRY_EDATA for a NUL byte or for what is not well-formed UTF-8 (what a
 * UTF8 database refuses, checked here so that the error can name the
 * column instead of a line of the COPY stream).
 */
static int copy_text(struct ferry_buf *b, const char *p, size_t n)
{
    const unsigned char *u = (const unsigned char *)p;
    size_t start = 0, i = 0;
    int rc = 0;

    while (i < n && !rc) {
        unsigned char c = u[i];
        const char *esc;

        if (c >= 0x20 && c < 0x80 && c != '\\') {
            i++;
            continue;
        }
        if (c >= 0x80) {
            size_t len = utf8_seq(u + i, n - i);

            if (!len)
                return FERRY_EDATA;
            i += len;
            continue;
        }
        if (c == '\\')
            esc = "\\\\";
        else if (c == '\n')
            esc = "\\n";
        else if (c == '\r')
            esc = "\\r";
        else if (c == '\t')
            esc = "\\t";
        else if (c == '\0')
            return FERRY_EDATA;
        else {
            i++; /* other control characters go as they are */
            continue;
        }
        rc = ferry_buf_add(b, p + start, i - start);
        if (!rc)
            rc = ferry_buf_add(b, esc, 2);
        start = ++i;
    }
    if (!rc)
        rc = ferry_buf_add(b, p + start, n - start);
    return rc;
}

/* Append bytes as bytea's hex input form, escaped for COPY: \\x0a1b... */
static int copy_hex(struct ferry_buf *b, const unsigned char *p, size_t n)
{
    size_t at = b->len;
    int rc;

    if (n > MAX_VALUE / 2)
        return FERRY_ETOOBIG;
    /* size once, then write the digits in place */
    rc = ferry_buf_add(b, "\\\\x", 3);
    if (!rc)
        rc = ferry_buf_add(b, p, n);
    if (!rc)
        rc = ferry_buf_add(b, p, n);
    if (rc)
        return rc;
    for (size_t i = n; i-- > 0;) {
        unsigned char c = p[i];

        b->data[at + 3 + 2 * i] = hexdigits[c >> 4];
        b->data[at + 3 + 2 * i + 1] = hexdigits[c & 15];
    }
    return 0;
}

static int copy_flush(struct pg_db *d, struct ferry_error *err)
{
    struct pg_copy *c = d->copy;

    if (!c->started) {
        int rc = copy_start(d, err);

        if (rc)
            return rc;
    }
    if (c->out.len == 0)
        return 0;
    if (PQputCopyData(d->conn, c->out.data, (int)c->out.len) != 1)
        return pg_error(d, NULL, "COPY", err);
    ferry_buf_reset(&c->out);
    return 0;
}

/* Append one value as a COPY text field of column i. */
static int copy_value(struct pg_copy *c, size_t i, const struct ferry_value *v)
{
    char num[64];

    switch (v->type) {
    case FERRY_NULL:
        return ferry_buf_add(&c->out, "\\N", 2);
    case FERRY_INT:
        snprintf(num, sizeof(num), "%" PRId64, v->u.i);
        return ferry_buf_adds(&c->out, num);
    case FERRY_FLOAT:
        /* a float column reads 17 digits back exactly: no search for the shortest form */
        if (c->kind[i] == COPY_FLOAT && isfinite(v->u.f))
            snprintf(num, sizeof(num), "%.17g", v->u.f);
        else
            ferry_double_text(v->u.f, num, sizeof(num));
        return ferry_buf_adds(&c->out, num);
    case FERRY_TEXT:
    case FERRY_BLOB:
        if (v->u.s.n >= MAX_VALUE)
            return FERRY_ETOOBIG;
        if (c->kind[i] == COPY_BYTEA)
            return copy_hex(&c->out, (const unsigned char *)(v->u.s.n ? v->u.s.p : ""), v->u.s.n);
        return copy_text(&c->out, v->u.s.n ? v->u.s.p : "", v->u.s.n);
    default:
        return FERRY_EINTERNAL;
    }
}

/* A row into the open copy; *fit (not NULL): a row that does not fit is left out (pg_copy_row_fit)
 */
static int copy_row(struct ferry_db *db, const struct ferry_value *vals, int *fit,
                    struct ferry_error *err)
{
    struct pg_db *d = pg_db(db);
    struct pg_copy *c = d->copy;
    size_t mark;
    size_t i = 0;
    int rc = 0;

    if (!c)
        return ferry_error_set(err, FERRY_EINTERNAL, "no bulk load open");
    if (!c->typed) {
        rc = copy_types(d, err);
        if (rc) {
            copy_abandon(d, "ferry could not read the column types");
            return rc;
        }
    }
    mark = c->out.len;
    for (; i < c->n; i++) {
        rc = i ? ferry_buf_add(&c->out, "\t", 1) : 0;
        if (!rc)
            rc = copy_value(c, i, &vals[i]);
        if (rc)
            break;
    }
    if (!rc)
        rc = ferry_buf_add(&c->out, "\n", 1);
    if (rc == FERRY_EDATA && fit) {
        c->out.len = mark; /* the rows before it stay, whole */
        *fit = 0;
        return FERRY_OK;
    }
    if (rc) {
        const char *col = c->cols[i < c->n ? i : c->n - 1];

        c->out.len = mark;
        if (rc == FERRY_EDATA && !memchr(vals[i].u.s.p, '\0', vals[i].u.s.n))
            ferry_error_set(err, rc,
                            "column %s: %s value is not valid UTF-8, which PostgreSQL text cannot "
                            "hold",
                            col, vals[i].type == FERRY_TEXT ? "text" : "blob");
        else if (rc == FERRY_EDATA && vals[i].type == FERRY_TEXT)
            ferry_error_set(err, rc,
                            "column %s: text value contains a NUL byte, which PostgreSQL text "
                            "cannot hold; make the column bytea on the target, or remove the NUL "
                            "on the source",
                            col);
        else if (rc == FERRY_EDATA)
            ferry_error_set(err, rc,
                            "column %s: blob value contains a NUL byte and goes to a PostgreSQL "
                            "column that is not bytea; make the column bytea on the target, or "
                            "change the value on the source",
                            col);
        else if (rc == FERRY_ETOOBIG && i < c->n && c->kind[i] == COPY_BYTEA)
            ferry_error_set(err, rc,
                            "column %s: a bytea of %zu MB, over the 512 MB PostgreSQL takes in "
                            "COPY text (hex, twice its bytes; README, Limits)",
                            col, vals[i].u.s.n >> 20);
        else if (rc == FERRY_ETOOBIG)
            ferry_error_set(err, rc, "column %s: value over PostgreSQL's 1 GB limit", col);
        else if (rc == FERRY_ENOMEM)
            ferry_error_set(err, rc, "out of memory in the bulk load of %s", c->table);
        else
            ferry_error_set(err, rc, "column %s: value of unknown type", col);
        copy_abandon(d, "ferry refused a row");
        return rc;
    }
    c->rows++;
    if (c->out.len >= COPY_FLUSH) {
        rc = copy_flush(d, err);
        if (rc)
            copy_abandon(d, "ferry could not send a row");
    }
    return rc;
}

static int pg_copy_row(struct ferry_db *db, const struct ferry_value *vals, struct ferry_error *err)
{
    return copy_row(db, vals, NULL, err);
}

static int pg_copy_row_fit(struct ferry_db *db, const struct ferry_value *vals, int *fit,
                           struct ferry_error *err)
{
    *fit = 1;
    return copy_row(db, vals, fit, err);
}

static int pg_copy_end(struct ferry_db *db, int64_t *rows, struct ferry_error *err)
{
    struct pg_db *d = pg_db(db);
    struct pg_copy *c = d->copy;
    PGresult *res = NULL;
    int rc;

    if (rows)
        *rows = 0;
    if (!c)
        return ferry_error_set(err, FERRY_EINTERNAL, "no bulk load open");
    rc = copy_flush(d, err);
    if (rc) {
        copy_abandon(d, "ferry could not send a row");
        return rc;
    }
    if (PQputCopyEnd(d->conn, NULL) != 1) {
        rc = pg_error(d, NULL, "COPY", err);
        copy_abandon(d, "ferry could not end the copy");
        return rc;
    }
    res = PQgetResult(d->conn);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        rc = pg_error(d, res, "COPY", err);
        ferry_error_prefix(err, "bulk load of %s", c->table);
    } else if (rows) {
        *rows = c->rows;
    }
    PQclear(res);
    drain(d->conn);
    copy_free(c);
    d->copy = NULL;
    return rc;
}

/*
 * A row passed through as COPY text (from a PostgreSQL source's own COPY
 * TO): appended as it is. The line must not hold a line break, which would
 * make it two rows; the wire decoder refuses those already.
 */
static int pg_copy_line(struct ferry_db *db, const char *line, size_t n, struct ferry_error *err)
{
    struct pg_db *d = pg_db(db);
    struct pg_copy *c = d->copy;
    int rc;

    if (!c)
        return ferry_error_set(err, FERRY_EINTERNAL, "no bulk load open");
    if (memchr(line, '\n', n) || memchr(line, '\r', n)) {
        copy_abandon(d, "ferry refused a row");
        return ferry_error_set(err, FERRY_EDATA, "a COPY text row holds a line break");
    }
    rc = ferry_buf_add(&c->out, line, n);
    if (!rc)
        rc = ferry_buf_add(&c->out, "\n", 1);
    if (rc) {
        copy_abandon(d, "ferry refused a row");
        return ferry_error_set(err, rc, "out of memory in the bulk load of %s", c->table);
    }
    c->rows++;
    if (c->out.len >= COPY_FLUSH) {
        rc = copy_flush(d, err);
        if (rc)
            copy_abandon(d, "ferry could not send a row");
    }
    return rc;
}

/*
 * v as an SQL literal that the server reads as pg_bind would send it for a
 * parameter of type: quoted (an untyped literal, typed from its context as
 * the parameter was), bytes for a bytea as its hex form.
 */
static int add_literal(struct ferry_buf *b, const struct ferry_value *v, Oid type)
{
    char num[64];
    const char *p;
    size_t n;
    int rc;

    switch (v->type) {
    case FERRY_NULL:
        return ferry_buf_adds(b, "NULL");
    case FERRY_INT:
        return ferry_buf_addf(b, "'%" PRId64 "'", v->u.i);
    case FERRY_FLOAT:
        ferry_double_text(v->u.f, num, sizeof(num));
        return ferry_buf_addf(b, "'%s'", num);
    case FERRY_TEXT:
    case FERRY_BLOB:
        p = v->u.s.n ? v->u.s.p : "";
        n = v->u.s.n;
        if (type == OID_BYTEA) {
            rc = ferry_buf_adds(b, "'\\x");
            for (size_t i = 0; i < n && !rc; i++) {
                unsigned char c = (unsigned char)p[i];
                char hex[2] = {hexdigits[c >> 4], hexdigits[c & 15]};

                rc = ferry_buf_add(b, hex, 2);
            }
            return rc ? rc : ferry_buf_adds(b, "'");
        }
        if (memchr(p, '\0', n))
            return FERRY_EDATA;
        /* standard_conforming_strings is on: only the quote is special */
        rc = ferry_buf_adds(b, "'");
        for (size_t i = 0; i < n && !rc; i++)
            rc = p[i] == '\'' ? ferry_buf_add(b, "''", 2) : ferry_buf_add(b, p + i, 1);
        return rc ? rc : ferry_buf_adds(b, "'");
    }
    return FERRY_EINTERNAL;
}

static void copy_out_free(struct pg_copy_out *o)
{
    if (!o)
        return;
    for (int i = 0; i < o->ncols; i++) {
        if (o->text)
            ferry_buf_release(&o->text[i]);
        if (o->bin)
            ferry_buf_release(&o->bin[i]);
    }
    free(o->text);
    free(o->bin);
    free(o->types);
    if (o->line)
        PQfreemem(o->line);
    free(o->sql);
    free(o);
}

static struct pg_desc *desc_find(struct pg_db *d, const char *sql)
{
    time_t now = time(NULL);

    for (size_t i = 0; i < DESCS; i++) {
        struct pg_desc *e = &d->descs[i];

        if (e->sql && strcmp(e->sql, sql) == 0) {
            if (now - e->at >= 0 && now - e->at < DESC_SECS)
                return e;
            free(e->sql);
            free(e->types);
            memset(e, 0, sizeof(*e));
            return NULL;
        }
    }
    return NULL;
}

static void desc_forget(struct pg_db *d, const char *sql)
{
    for (size_t i = 0; sql && i < DESCS; i++) {
        struct pg_desc *e = &d->descs[i];

        if (e->sql && strcmp(e->sql, sql) == 0) {
            free(e->sql);
            free(e->types);
            memset(e, 0, sizeof(*e));
        }
    }
}

/* Describe sql (prepared, then dropped) into a slot: the oldest, or a free one. */
static int desc_add(struct pg_db *d, const char *sql, struct pg_desc **out, struct ferry_error *err)
{
    struct ferry_stmt *st_ = NULL;
    struct pg_stmt *st;
    struct pg_desc *e = &d->descs[0];
    int rc;

    *out = NULL;
    rc = pg_prepare(&d->base, sql, &st_, err);
    if (rc)
        return rc;
    st = pg_stmt(st_);
    for (size_t i = 0; i < DESCS; i++)
        if (!d->descs[i].sql || d->descs[i].at < e->at)
            e = &d->descs[i];
    free(e->sql);
    free(e->types);
    memset(e, 0, sizeof(*e));
    e->sql = strdup(sql);
    e->types = calloc((size_t)st->nparams + (size_t)st->ncols + 1, sizeof(*e->types));
    if (!e->sql || !e->types) {
        free(e->sql);
        free(e->types);
        memset(e, 0, sizeof(*e));
        ferry_stmt_free(st_);
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory starting a copy");
    }
    e->nparams = st->nparams;
    e->ncols = st->ncols;
    for (int k = 0; k < st->nparams; k++)
        e->types[k] = PQparamtype(st->desc, k);
    for (int i = 0; i < st->ncols; i++)
        e->types[st->nparams + i] = PQftype(st->desc, i);
    e->at = time(NULL);
    ferry_stmt_free(st_);
    *out = e;
    return FERRY_OK;
}

static int pg_copy_out_begin(struct ferry_db *db, const char *sql, const struct ferry_value *args,
                             size_t nargs, struct ferry_error *err)
{
    struct pg_db *d = pg_db(db);
    struct pg_desc *desc;
    struct pg_copy_out *o = NULL;
    struct ferry_buf lits, copy;
    const char **lit = NULL;
    size_t *at = NULL;
    char *text = NULL;
    PGresult *res = NULL;
    int n = 0;
    int rc = 0;

    if (d->copy || d->out)
        return ferry_error_set(err, FERRY_EINTERNAL, "a copy is already open");
    ferry_buf_init(&lits, MAX_SQL);
    ferry_buf_init(&copy, MAX_SQL);
    /* the parameters' and the columns' types: described once (struct pg_desc) */
    desc = desc_find(d, sql);
    if (!desc)
        rc = desc_add(d, sql, &desc, err);
    if (rc)
        goto out;
    if ((size_t)desc->nparams != nargs) {
        rc = ferry_error_set(err, FERRY_EINTERNAL, "'%.*s': %d parameters, %zu values", SQL_SHOWN,
                             sql, desc->nparams, nargs);
        goto out;
    }
    o = calloc(1, sizeof(*o));
    lit = calloc(nargs + 1, sizeof(*lit));
    at = calloc(nargs + 1, sizeof(*at));
    if (!o || !lit || !at) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory starting a copy");
        goto out;
    }
    o->ncols = desc->ncols;
    o->sql = strdup(sql);
    o->types = calloc((size_t)o->ncols + 1, sizeof(*o->types));
    o->text = calloc((size_t)o->ncols + 1, sizeof(*o->text));
    o->bin = calloc((size_t)o->ncols + 1, sizeof(*o->bin));
    if (!o->sql || !o->types || !o->text || !o->bin) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory starting a copy");
        goto out;
    }
    for (int i = 0; i < o->ncols; i++) {
        o->types[i] = desc->types[desc->nparams + i];
        ferry_buf_init(&o->text[i], MAX_VALUE);
        ferry_buf_init(&o->bin[i], MAX_VALUE);
    }
    /* literals NUL-separated in one buffer: offsets first, pointers once it stops moving */
    for (size_t k = 0; k < nargs && !rc; k++) {
        at[k] = lits.len;
        rc = add_literal(&lits, &args[k], desc->types[k]);
        if (!rc)
            rc = ferry_buf_add(&lits, "", 1);
    }
    if (rc) {
        rc = ferry_error_set(err, rc,
                             rc == FERRY_EDATA
                                 ? "'%.*s': a text parameter contains a NUL byte, which "
                                   "PostgreSQL text cannot hold"
                                 : "'%.*s': cannot write the parameters",
                             SQL_SHOWN, sql);
        goto out;
    }
    for (size_t k = 0; k < nargs; k++)
        lit[k] = lits.data + at[k];
    rc = rewrite_params(sql, &text, &n, lit, (int)nargs, err);
    if (rc)
        goto out;
    rc = ferry_buf_adds(&copy, "COPY (");
    if (!rc)
        rc = ferry_buf_adds(&copy, text);
    if (!rc)
        rc = ferry_buf_adds(&copy, ") TO STDOUT");
    if (rc) {
        rc = ferry_error_set(err, rc, "'%.*s': statement too long", SQL_SHOWN, sql);
        goto out;
    }
    pg_detach(d);
    res = PQexec(d->conn, copy.data);
    if (PQresultStatus(res) != PGRES_COPY_OUT) {
        rc = check_result(d, res, PGRES_COPY_OUT, sql, err);
        res = NULL;
        goto out;
    }
    d->out = o;
    o = NULL;
out:
    if (rc)
        desc_forget(d, sql);
    PQclear(res);
    copy_out_free(o);
    free(lit);
    free(at);
    free(text);
    ferry_buf_release(&lits);
    ferry_buf_release(&copy);
    return rc;
}

static int pg_copy_out_next(struct ferry_db *db, const char **line, size_t *n, int *row,
                            struct ferry_error *err)
{
    struct pg_db *d = pg_db(db);
    struct pg_copy_out *o = d->out;
    PGresult *res;
    int len;
    int rc = 0;

    *row = 0;
    *line = NULL;
    *n = 0;
    if (!o)
        return ferry_error_set(err, FERRY_EINTERNAL, "no copy open");
    if (o->line) {
        PQfreemem(o->line);
        o->line = NULL;
    }
    if (o->done)
        return 0;
    len = PQgetCopyData(d->conn, &o->line, 0);
    if (len > 0) {
        /* text format: one row per message, ending with its newline */
        *line = o->line;
        *n = (size_t)len - (o->line[len - 1] == '\n');
        *row = 1;
        return 0;
    }
    o->done = 1;
    if (len == -2) {
        desc_forget(d, o->sql);
        return pg_error(d, NULL, o->sql, err);
    }
    res = PQgetResult(d->conn);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        rc = pg_error(d, res, o->sql, err);
        desc_forget(d, o->sql);
    }
    PQclear(res);
    drain(d->conn);
    return rc;
}

static int pg_copy_out_field(struct ferry_db *db, int col, const char *p, size_t n,
                             struct ferry_value *out, struct ferry_error *err)
{
    struct pg_db *d = pg_db(db);
    struct pg_copy_out *o = d->out;
    struct ferry_buf *b;
    const char *what;
    int nomem;
    int rc = 0;

    if (!o || col < 0 || col >= o->ncols)
        return ferry_error_set(err, FERRY_EINTERNAL, "no copy column %d", col);
    if (n == 2 && p[0] == '\\' && p[1] == 'N') {
        *out = ferry_value_null();
        return 0;
    }
    b = &o->text[col];
    ferry_buf_reset(b);
    /* COPY text escapes (what COPY TO writes, and the rest of what COPY FROM reads) */
    for (size_t i = 0; i < n && !rc;) {
        size_t start = i;
        char c;

        while (i < n && p[i] != '\\')
            i++;
        rc = ferry_buf_add(b, p + start, i - start);
        if (rc || i == n)
            break;
        if (++i == n) {
            rc = ferry_buf_add(b, "\\", 1);
            break;
        }
        c = p[i++];
        switch (c) {
        case 'b':
            c = '\b';
            break;
        case 'f':
            c = '\f';
            break;
        case 'n':
            c = '\n';
            break;
        case 'r':
            c = '\r';
            break;
        case 't':
            c = '\t';
            break;
        case 'v':
            c = '\v';
            break;
        case 'x':
            if (i < n && hexval(p[i]) >= 0) {
                int v = hexval(p[i++]);

                if (i < n && hexval(p[i]) >= 0)
                    v = v * 16 + hexval(p[i++]);
                c = (char)v;
            }
            break;
        default:
            if (c >= '0' && c <= '7') {
                int v = c - '0';

                for (int k = 0; k < 2 && i < n && p[i] >= '0' && p[i] <= '7'; k++)
                    v = v * 8 + (p[i++] - '0');
                c = (char)v;
            }
            break;
        }
        rc = ferry_buf_add(b, &c, 1);
    }
    if (rc)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory reading column %d of '%.*s'", col,
                               SQL_SHOWN, o->sql);
    what = text_value(b->data ? b->data : "", b->len, o->types[col], &o->bin[col], out, &nomem);
    if (!what)
        return 0;
    if (nomem)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory reading column %d of '%.*s'", col,
                               SQL_SHOWN, o->sql);
    desc_forget(d, o->sql); /* described before its column's type changed? */
    return ferry_error_set(err, FERRY_EDB, "'%.*s': column %d: malformed %s value from the server",
                           SQL_SHOWN, o->sql, col, what);
}

/* Leave COPY OUT mode: the rows left are read and dropped. */
static int pg_copy_out_end(struct ferry_db *db, struct ferry_error *err)
{
    struct pg_db *d = pg_db(db);
    struct pg_copy_out *o = d->out;
    int rc = 0;

    if (!o)
        return 0;
    if (!o->done) {
        const char *line;
        size_t n;
        int row = 1;

        while (!rc && row)
            rc = pg_copy_out_next(db, &line, &n, &row, err);
    }
    copy_out_free(o);
    d->out = NULL;
    return rc;
}

static int pg_server_version(struct ferry_db *db)
{
    return PQserverVersion(pg_db(db)->conn);
}

static const char *pg_server_param(struct ferry_db *db, const char *name)
{
    return PQparameterStatus(pg_db(db)->conn, name);
}

const struct ferry_db_ops ferry_pg_ops = {
    .open = pg_open,
    .close = pg_close,
    .exec = pg_exec,
    .begin_read = pg_begin_read,
    .begin = pg_begin,
    .commit = pg_commit,
    .durable = pg_durable,
    .alive = pg_alive,
    .rollback = pg_rollback,
    .prepare = pg_prepare,
    .bind = pg_bind,
    .step = pg_step,
    .ncols = pg_ncols,
    .colname = pg_colname,
    .column = pg_column,
    .changes = pg_changes,
    .reset = pg_reset,
    .stmt_free = pg_stmt_free,
    .tables = pg_tables,
    .table_info = pg_table_info,
    .table_exists = pg_table_exists,
    .table_columns = pg_table_columns,
    .fk_check = pg_fk_check,
    .server_version = pg_server_version,
    .server_param = pg_server_param,
    .copy_begin = pg_copy_begin,
    .copy_row = pg_copy_row,
    .copy_row_fit = pg_copy_row_fit,
    .copy_end = pg_copy_end,
    .copy_line = pg_copy_line,
    .copy_out_begin = pg_copy_out_begin,
    .copy_out_next = pg_copy_out_next,
    .copy_out_field = pg_copy_out_field,
    .copy_out_end = pg_copy_out_end,
};
