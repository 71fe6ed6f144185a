/*
 * db.h - one interface over the database engines ferry reads and writes:
 * SQLite (embedded default) and PostgreSQL (libpq).
 *
 * URLs: "sqlite:///abs/path.db" (also "sqlite:relative.db"),
 * "postgresql://..." or "postgres://..." (libpq syntax).
 *
 * SQL given to ferry_db_prepare() uses "?" placeholders in every engine; the
 * PostgreSQL adapter rewrites them to $1, $2, ... (outside quotes). Both
 * engines accept the SQL that ferry generates: double-quoted identifiers,
 * row values "(a, b) IN (SELECT ...)", INSERT ... AS alias ... ON CONFLICT
 * (...) DO UPDATE SET ... WHERE ....
 *
 * Handles: a struct ferry_db is one connection, used by one thread. A
 * struct ferry_stmt belongs to the connection that prepared it and must be
 * freed before the connection is closed.
 */
#ifndef FERRY_DB_H
#define FERRY_DB_H

#include "../error.h"
#include "../schema.h"
#include "../value.h"

#include <stddef.h>
#include <stdint.h>

enum ferry_engine {
    FERRY_ENGINE_SQLITE = 1,
    FERRY_ENGINE_PG = 2,
};

/* ferry_db_open() flags */
#define FERRY_DB_READONLY 0x1 /* source side: never writes application tables */
#define FERRY_DB_CREATE 0x2   /* create the database file when missing (SQLite) */

struct ferry_db;
struct ferry_stmt;

/*
 * Open a connection. On SQLite: WAL journal (unless READONLY), a 10 s busy
 * timeout, foreign_keys OFF (the target checks them after a copy, see
 * ferry_db_fk_check). Returns 0 or FERRY_ECONFIG (bad URL), FERRY_EDB.
 * *out is owned, close with ferry_db_close().
 */
int ferry_db_open(const char *url, int flags, struct ferry_db **out, struct ferry_error *err);

/*
 * 1 when url names a SQLite file that does not exist (a check without
 * opening, which would create it); 0 otherwise, and for PostgreSQL, whose
 * database only a connection can tell.
 */
int ferry_db_missing(const char *url);
void ferry_db_close(struct ferry_db *db);
enum ferry_engine ferry_db_engine(const struct ferry_db *db);

/* Run one or more statements that return no rows. */
int ferry_db_exec(struct ferry_db *db, const char *sql, struct ferry_error *err);

/*
 * Transactions. ferry_db_begin_read() opens a read transaction that sees one
 * consistent snapshot until commit/rollback (SQLite: BEGIN + a first read;
 * PostgreSQL: REPEATABLE READ READ ONLY). ferry_db_begin() opens a write
 * transaction (SQLite: BEGIN IMMEDIATE). ferry_db_rollback() never fails
 * visibly: it is the cleanup path.
 */
int ferry_db_begin_read(struct ferry_db *db, struct ferry_error *err);
int ferry_db_begin(struct ferry_db *db, struct ferry_error *err);
int ferry_db_commit(struct ferry_db *db, struct ferry_error *err);
void ferry_db_rollback(struct ferry_db *db);
/* 0 once the connection to a database server is gone (an embedded database: always 1). */
int ferry_db_alive(struct ferry_db *db);
/*
 * Replace *db, whose server dropped it (a restart, a failover), by a new
 * connection to url (flags as ferry_db_open's), with a warning in the log.
 * On failure *db stays as it was.
 */
int ferry_db_reconnect(struct ferry_db **db, const char *url, int flags, struct ferry_error *err);
/*
 * Group commit. With durable 0, later commits survive a crash of this
 * process but may be lost with the machine (power, kernel) until the first
 * commit after ferry_db_durable(db, 1): that one is durable, and so is
 * everything committed before it. Call outside a transaction. Databases
 * start durable; an engine or mode that cannot do this stays durable.
 */
int ferry_db_durable(struct ferry_db *db, int durable, struct ferry_error *err);
/*
 * SQLite: from now on, wait for another connection's write lock by looking
 * every millisecond (still for at most the usual 10 s), not in SQLite's
 * growing sleeps, which a connection that takes the lock often makes long.
 * For a writer that holds the lock briefly and often (install's steps).
 * Other engines: nothing.
 */
void ferry_db_busy_poll(struct ferry_db *db);

/* Statements. *out is owned, free with ferry_stmt_free(). */
int ferry_db_prepare(struct ferry_db *db, const char *sql, struct ferry_stmt **out,
                     struct ferry_error *err);
/* Bind v to 1-based placeholder idx. The value's bytes are copied. */
int ferry_stmt_bind(struct ferry_stmt *st, int idx, const struct ferry_value *v,
                    struct ferry_error *err);
/*
 * The same, but a TEXT or BLOB value's bytes are borrowed, not copied: they
 * must stay valid and unchanged until st is reset, freed or bound again.
 * For binding rows straight from a batch that outlives the step.
 */
int ferry_stmt_bind_ref(struct ferry_stmt *st, int idx, const struct ferry_value *v,
                        struct ferry_error *err);
/*
 * Run or advance. *row is set to 1 when a row is available, 0 when done.
 * Returns 0 or FERRY_EDB (FERRY_ENOSPC for a full disk).
 */
int ferry_stmt_step(struct ferry_stmt *st, int *row, struct ferry_error *err);
int ferry_stmt_ncols(struct ferry_stmt *st);
const char *ferry_stmt_colname(struct ferry_stmt *st, int i);
/*
 * Column i (0-based) of the current row. The value is borrowed: valid until
 * the next step, reset or free of st.
 */
void ferry_stmt_column(struct ferry_stmt *st, int i, struct ferry_value *out);
/* Rows inserted, updated or deleted by the last completed step. */
int64_t ferry_stmt_changes(struct ferry_stmt *st);
/* Ready to run again with new bindings (old bindings are cleared). */
void ferry_stmt_reset(struct ferry_stmt *st);
void ferry_stmt_free(struct ferry_stmt *st);

/*
 * Introspection. ferry_db_tables() lists the application's tables (not the
 * engine's own, not ferry's "_ferry_*"), sorted by name; *names is owned,
 * free each and the array. ferry_db_table_info() fills *out (caller-owned,
 * release with ferry_table_info_release) or returns FERRY_ENOTFOUND.
 * Foreign keys that omit the parent columns are completed with the parent's
 * primary key.
 */
int ferry_db_tables(struct ferry_db *db, char ***names, size_t *n, struct ferry_error *err);
int ferry_db_table_info(struct ferry_db *db, const char *table, struct ferry_table_info *out,
                        struct ferry_error *err);
/* 1 when the table exists, 0 when not. */
int ferry_db_table_exists(struct ferry_db *db, const char *table, int *exists,
                          struct ferry_error *err);
/*
 * ferry_db_table_info() without the foreign keys (nfks 0), for a caller
 * that checks columns only; no table is *exists 0 and an empty *out, not
 * an error. On PostgreSQL two catalog queries instead of the four of
 * ferry_db_table_exists() and ferry_db_table_info() (the foreign keys'
 * takes a millisecond or two to plan, on every run of a delta).
 */
int ferry_db_table_columns(struct ferry_db *db, const char *table, struct ferry_table_info *out,
                           int *exists, struct ferry_error *err);

/*
 * PostgreSQL: the server's version (as server_version_num: 150018) and a
 * setting it reports to the client (server_encoding, client_encoding,
 * TimeZone, ...), from the connection's state: no statement. 0 and NULL
 * for SQLite or a setting not reported.
 */
int ferry_db_server_version(struct ferry_db *db);
const char *ferry_db_server_param(struct ferry_db *db, const char *name);

/*
 * Count rows of table that violate a foreign key (SQLite PRAGMA
 * foreign_key_check; PostgreSQL enforces them itself and reports 0).
 */
int ferry_db_fk_check(struct ferry_db *db, const char *table, int64_t *violations,
                      struct ferry_error *err);

/*
 * Bulk load: rows into columns cols[0..n-1] of table, inside the caller's
 * transaction. PostgreSQL streams them with COPY ... FROM STDIN (text
 * format), converting values as ferry_stmt_bind() does (a TEXT with a NUL
 * byte is FERRY_EDATA; BLOB and TEXT go to a bytea column as bytes); SQLite
 * runs one prepared INSERT per row. Between copy_begin and copy_end (or a
 * failed copy_row, which ends the copy itself) the connection is busy with
 * the copy: no other call may use it but ferry_db_rollback(), which also
 * abandons an open copy. A failed copy leaves the transaction unusable:
 * roll it back. Errors name the column ("column body: ..."), not the value.
 * table and cols are copied; vals (n values) are read during the call.
 * *rows (may be NULL) receives the number of rows loaded.
 */
int ferry_db_copy_begin(struct ferry_db *db, const char *table, const char *const *cols, size_t n,
                        struct ferry_error *err);
int ferry_db_copy_row(struct ferry_db *db, const struct ferry_value *vals, struct ferry_error *err);
int ferry_db_copy_end(struct ferry_db *db, int64_t *rows, struct ferry_error *err);

/*
 * ferry_db_copy_row, except for a row the target's columns cannot hold
 * (what ferry_db_copy_row refuses with FERRY_EDATA: a NUL byte or bytes
 * that are not UTF-8 going to PostgreSQL text): it is left out, *fit = 0,
 * and the copy stays open. *fit = 1 for a row loaded.
 */
int ferry_db_copy_row_fit(struct ferry_db *db, const struct ferry_value *vals, int *fit,
                          struct ferry_error *err);

/*
 * PostgreSQL only (FERRY_EINTERNAL elsewhere): COPY text passed through.
 *
 * ferry_db_copy_line: one row, a line of COPY text format (the fields of
 * the open bulk load's columns, tab-separated, no newline), added to the
 * open bulk load as it is. The server parses it with the column types'
 * input functions; a malformed line fails the copy at the server.
 *
 * ferry_db_copy_out_begin: run sql (a SELECT; "?" placeholders, args as
 * ferry_stmt_bind would bind them, written into the statement as literals
 * of the types the server infers for them) as COPY (sql) TO STDOUT, text
 * format, in the caller's transaction. copy_out_next gives each row's line
 * (without its newline; borrowed until the next call; *row 0 at the end).
 * copy_out_field decodes one field of result column col (its COPY escapes,
 * "\N" NULL) into the ferry value ferry_stmt_column would give (borrowed
 * until the next call for col or copy_out_end). copy_out_end reads and
 * drops any rows left and ends the copy; call it after a failure too.
 * Between begin and end the connection is busy with the copy.
 */
int ferry_db_copy_line(struct ferry_db *db, const char *line, size_t n, struct ferry_error *err);
int ferry_db_copy_out_begin(struct ferry_db *db, const char *sql, const struct ferry_value *args,
                            size_t nargs, struct ferry_error *err);
int ferry_db_copy_out_next(struct ferry_db *db, const char **line, size_t *n, int *row,
                           struct ferry_error *err);
int ferry_db_copy_out_field(struct ferry_db *db, int col, const char *p, size_t n,
                            struct ferry_value *out, struct ferry_error *err);
int ferry_db_copy_out_end(struct ferry_db *db, struct ferry_error *err);

/*
 * A scalar SQL function computed in C: fn gets the n argument values of one
 * call (borrowed, valid during the call) and sets *out; a nonzero return
 * fails the statement with err's message (FERRY_EDB at the step). Only
 * engines that run functions in process define them (SQLite); elsewhere
 * FERRY_EINTERNAL. It may only be called directly in SQL, never from the
 * schema (triggers, views). Defining a name again replaces the function;
 * destroy(arg) (may be NULL) runs when it is replaced or the connection
 * closes, and also when defining fails. It fails while a statement of the
 * connection is running.
 */
typedef int (*ferry_db_fn)(void *arg, const struct ferry_value *vals, size_t n, int64_t *out,
                           struct ferry_error *err);
int ferry_db_function(struct ferry_db *db, const char *name, ferry_db_fn fn, void *arg,
                      void (*destroy)(void *arg), struct ferry_error *err);

/*
 * SQLite only (FERRY_EINTERNAL elsewhere): inside an open read transaction,
 * version[0..1] such that two read transactions of this connection that
 * get the same two numbers see the same data: they change with every
 * commit to the main database, by this connection or any other (SQLite's
 * data version), and with every row this connection writes (its total
 * changes). FERRY_ENOTFOUND when no read transaction is open (none, or a
 * write transaction: its own changes are not committed yet).
 */
int ferry_db_data_version(struct ferry_db *db, uint64_t version[2], struct ferry_error *err);

/* Convenience: run sql (one "?" per value) and read one int64 (0 if no row). */
int ferry_db_query_int(struct ferry_db *db, const char *sql, const struct ferry_value *args,
                       size_t nargs, int64_t *out, struct ferry_error *err);

#endif
