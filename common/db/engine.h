/*
 * engine.h - what a database engine adapter provides to db.c. Internal to
 * common/db/: callers use db.h.
 *
 * db.c owns the dispatch: ferry_db_open() picks the adapter by URL scheme,
 * and every ferry_db_* / ferry_stmt_* call forwards to ops. Each adapter
 * embeds struct ferry_db / struct ferry_stmt as the first member of its own
 * connection / statement struct.
 */
#ifndef FERRY_DB_ENGINE_H
#define FERRY_DB_ENGINE_H

#include "db.h"

struct ferry_db_ops;

struct ferry_db {
    const struct ferry_db_ops *ops;
    enum ferry_engine engine;
};

struct ferry_stmt {
    struct ferry_db *db;
};

struct ferry_db_ops {
    /* url is the whole URL; the adapter strips its own scheme */
    int (*open)(const char *url, int flags, struct ferry_db **out, struct ferry_error *err);
    void (*close)(struct ferry_db *db);
    int (*exec)(struct ferry_db *db, const char *sql, struct ferry_error *err);
    int (*begin_read)(struct ferry_db *db, struct ferry_error *err);
    int (*begin)(struct ferry_db *db, struct ferry_error *err);
    int (*commit)(struct ferry_db *db, struct ferry_error *err);
    void (*rollback)(struct ferry_db *db);
    /* optional: 0 once the connection to the server is gone (NULL: always 1) */
    int (*alive)(struct ferry_db *db);
    /* optional, see ferry_db_durable() (NULL: always durable) */
    int (*durable)(struct ferry_db *db, int durable, struct ferry_error *err);
    /* optional, see ferry_db_busy_poll() (NULL: nothing) */
    void (*busy_poll)(struct ferry_db *db);
    int (*prepare)(struct ferry_db *db, const char *sql, struct ferry_stmt **out,
                   struct ferry_error *err);
    int (*bind)(struct ferry_stmt *st, int idx, const struct ferry_value *v,
                struct ferry_error *err);
    /* optional: bind without copying TEXT and BLOB bytes (NULL: bind copies) */
    int (*bind_ref)(struct ferry_stmt *st, int idx, const struct ferry_value *v,
                    struct ferry_error *err);
    int (*step)(struct ferry_stmt *st, int *row, struct ferry_error *err);
    int (*ncols)(struct ferry_stmt *st);
    const char *(*colname)(struct ferry_stmt *st, int i);
    void (*column)(struct ferry_stmt *st, int i, struct ferry_value *out);
    int64_t (*changes)(struct ferry_stmt *st);
    void (*reset)(struct ferry_stmt *st);
    void (*stmt_free)(struct ferry_stmt *st);
    int (*tables)(struct ferry_db *db, char ***names, size_t *n, struct ferry_error *err);
    int (*table_info)(struct ferry_db *db, const char *table, struct ferry_table_info *out,
                      struct ferry_error *err);
    int (*table_exists)(struct ferry_db *db, const char *table, int *exists,
                        struct ferry_error *err);
    /* optional (NULL: table_exists, then table_info without its keys); *out is zeroed */
    int (*table_columns)(struct ferry_db *db, const char *table, struct ferry_table_info *out,
                         int *exists, struct ferry_error *err);
    int (*fk_check)(struct ferry_db *db, const char *table, int64_t *violations,
                    struct ferry_error *err);
    /* optional (PostgreSQL): what the server reported at connection, no round trip */
    int (*server_version)(struct ferry_db *db);
    const char *(*server_param)(struct ferry_db *db, const char *name);
    /* bulk load, see ferry_db_copy_begin(); rollback abandons an open copy */
    int (*copy_begin)(struct ferry_db *db, const char *table, const char *const *cols, size_t n,
                      struct ferry_error *err);
    int (*copy_row)(struct ferry_db *db, const struct ferry_value *vals, struct ferry_error *err);
    /* optional (NULL: copy_row, every row fits): see ferry_db_copy_row_fit() */
    int (*copy_row_fit)(struct ferry_db *db, const struct ferry_value *vals, int *fit,
                        struct ferry_error *err);
    int (*copy_end)(struct ferry_db *db, int64_t *rows, struct ferry_error *err);
    /* optional (PostgreSQL): COPY text in and out, see ferry_db_copy_line() */
    int (*copy_line)(struct ferry_db *db, const char *line, size_t n, struct ferry_error *err);
    int (*copy_out_begin)(struct ferry_db *db, const char *sql, const struct ferry_value *args,
                          size_t nargs, struct ferry_error *err);
    int (*copy_out_next)(struct ferry_db *db, const char **line, size_t *n, int *row,
                         struct ferry_error *err);
    int (*copy_out_field)(struct ferry_db *db, int col, const char *p, size_t n,
                          struct ferry_value *out, struct ferry_error *err);
    int (*copy_out_end)(struct ferry_db *db, struct ferry_error *err);
    /* NULL when the engine cannot define functions, see ferry_db_function() */
    int (*function)(struct ferry_db *db, const char *name, ferry_db_fn fn, void *arg,
                    void (*destroy)(void *arg), struct ferry_error *err);
};

extern const struct ferry_db_ops ferry_sqlite_ops;
/* The file path of a sqlite: URL (into url), or NULL when it names none (sqlite.c). */
const char *ferry_sqlite_url_path(const char *url);
extern const struct ferry_db_ops ferry_pg_ops;

#endif
