/*
 * schema.h - what ferry knows about a table: columns, primary key, foreign
 * keys. Filled by a database adapter (introspection) on the source, by the
 * manifest decoder on the target.
 *
 * Every string and array here is owned by the struct ferry_table_info that
 * holds it; free the whole with ferry_table_info_release().
 */
#ifndef FERRY_SCHEMA_H
#define FERRY_SCHEMA_H

#include <stddef.h>
#include <stdint.h>

#define FERRY_MAX_KEY_COLS 4 /* widest primary key ferry captures */

struct ferry_column {
    char *name;
    char *type;  /* declared type as the engine spells it ("INTEGER", "text", "") */
    int notnull; /* 1 when declared NOT NULL */
    int pk;      /* 1-based position in the primary key, 0 when not a key column */
};

struct ferry_fkey {
    char *parent; /* referenced table */
    char **cols;  /* ncols columns of this table */
    char **pcols; /* ncols columns of parent, same order */
    size_t ncols;
    int cascade; /* 1 when ON DELETE CASCADE */
};

struct ferry_table_info {
    char *name;
    struct ferry_column *cols;
    size_t ncols;
    struct ferry_fkey *fks;
    size_t nfks;
    int without_rowid; /* SQLite WITHOUT ROWID table */
    /*
     * Filled from configuration on the source and carried by the manifest:
     * the operator's scope predicate for this table (SQL using :tenant), or
     * NULL when the table is reached through foreign keys.
     */
    char *scope_sql;
    int64_t rows; /* rows in the tenant's scope, -1 when not counted */
};

/* Number of primary key columns. */
size_t ferry_table_npk(const struct ferry_table_info *t);
/*
 * Index into t->cols of the key column at 0-based key position k, or -1.
 */
int ferry_table_pkcol(const struct ferry_table_info *t, size_t k);
/* Index into t->cols of column name, or -1. */
int ferry_table_colidx(const struct ferry_table_info *t, const char *name);

/* Deep copy src into dst (caller-owned). 0 or FERRY_ENOMEM (dst released). */
int ferry_table_info_copy(struct ferry_table_info *dst, const struct ferry_table_info *src);
void ferry_table_info_release(struct ferry_table_info *t);
/* Release each of n tables and free the array. */
void ferry_tables_free(struct ferry_table_info *t, size_t n);

#endif
