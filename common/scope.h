/*
 * scope.h - which rows belong to a tenant, and the SQL that says so.
 *
 * A tenant is one row of the root table; its primary key (one column) is the
 * tenant id. A child table is in scope when it reaches the root through
 * declared foreign keys (breadth-first from the root, shortest path, ties
 * broken by table then foreign-key order), or when the operator gave it a
 * predicate ([table NAME] scope = SQL using :tenant). Anything else is out
 * of scope and never served.
 *
 * The same module runs on both sides: the source builds its scope from the
 * database's own schema (ferry_scope_resolve), the target from the manifest
 * the source sent (ferry_scope_build), so both evaluate the same paths.
 */
#ifndef FERRY_SCOPE_H
#define FERRY_SCOPE_H

#include "buf.h"
#include "config.h"
#include "db/db.h"
#include "error.h"
#include "schema.h"
#include "value.h"

struct ferry_scope_table {
    struct ferry_table_info info; /* owned; info.scope_sql set for override tables */
    int parent; /* index of the parent on the path to the root; -1 root/override */
    int fk;     /* index into info.fks of the key to parent; -1 */
    int depth;  /* 0 for the root */
};

struct ferry_scope {
    struct ferry_scope_table *tables; /* parent-first: every parent before its children */
    size_t ntables;
    int root_int; /* the root key column has integer affinity: tenant ids are int64 */
};

/*
 * Build a scope from n table descriptions (taken over: the array and its
 * contents belong to the scope afterwards, whatever the result). Tables that
 * do not reach root are dropped. Errors (FERRY_ESCHEMA): no such root, a
 * root without a one-column primary key, an in-scope table without a primary
 * key or with more than FERRY_MAX_KEY_COLS key columns.
 * *out owned, free with ferry_scope_free.
 */
int ferry_scope_build(struct ferry_table_info *tables, size_t n, const char *root,
                      struct ferry_scope **out, struct ferry_error *err);

/*
 * Introspect db and build the scope from cfg ([scope] root and exclude,
 * [table] scope). A [table] section or exclude entry naming a table that does
 * not exist is FERRY_ECONFIG.
 */
int ferry_scope_resolve(struct ferry_db *db, const struct ferry_config *cfg,
                        struct ferry_scope **out, struct ferry_error *err);

/*
 * ferry_scope_resolve for a running ferry-src serve: an [scope] exclude
 * entry naming a table that does not exist (dropped by a migration) is
 * warned of once, not refused.
 */
int ferry_scope_resolve_serving(struct ferry_db *db, const struct ferry_config *cfg,
                                struct ferry_scope **out, struct ferry_error *err);
void ferry_scope_free(struct ferry_scope *s);

/*
 * A number that changes when what ferry_scope_resolve() read of s's tables
 * may have changed: SQLite's schema version; on PostgreSQL a 64-bit digest
 * of the tables' columns (names, types, nullability) and of the primary
 * and foreign keys on them or pointing at them. Cheap enough to ask at
 * every request.
 */
int ferry_scope_fingerprint(struct ferry_db *db, const struct ferry_scope *s, int64_t *out,
                            struct ferry_error *err);

/*
 * *n: the rows of db's root table whose key is tenant (0 or 1): whether the
 * tenant is there. Its key's first column only.
 */
int ferry_scope_tenant_rows(struct ferry_db *db, const struct ferry_scope *s,
                            const struct ferry_value *tenant, int64_t *n, struct ferry_error *err);

/* Index of table name in s->tables, or -1 when out of scope. */
int ferry_scope_find(const struct ferry_scope *s, const char *name);
static inline const struct ferry_table_info *ferry_scope_root(const struct ferry_scope *s)
{
    return &s->tables[0].info;
}

/*
 * Parse a tenant id as the root key's type: an int64 when the root key has
 * integer affinity (FERRY_EDATA if tenant is not a decimal integer), else
 * text pointing into tenant (borrowed).
 */
int ferry_scope_tenant(const struct ferry_scope *s, const char *tenant, struct ferry_value *out,
                       struct ferry_error *err);

/*
 * Whether table t's primary key can hold a NULL on SQLite: a rowid table
 * keeps one in a key that is not its INTEGER PRIMARY KEY (an old bug
 * SQLite keeps for compatibility) unless the column is declared NOT NULL.
 * (PostgreSQL and WITHOUT ROWID tables refuse it: the caller knows the
 * engine.) Such a row has no key to copy, update or delete it by.
 */
int ferry_scope_key_nullable(const struct ferry_scope *s, size_t t);
/*
 * Append to b "SELECT count(*) FROM "t" WHERE ("t"."k1" IS NULL OR ...)":
 * the rows of table t with a NULL in their key; with tenant, only the
 * tenant's (ferry_scope_pred: *nparams "?", each the tenant id).
 */
int ferry_scope_unkeyed_sql(const struct ferry_scope *s, size_t t, int tenant, struct ferry_buf *b,
                            int *nparams);

/*
 * Append to b a predicate, true when the row of table t (referenced by its
 * bare quoted name, as in "SELECT ... FROM "t" WHERE <pred>") belongs to the
 * tenant. Every "?" in it is the tenant id; *nparams is set to their count.
 */
int ferry_scope_pred(const struct ferry_scope *s, size_t t, struct ferry_buf *b, int *nparams);

/*
 * Append to b a scalar expression giving the tenant id that the row of table
 * t belongs to (NULL when it belongs to none), where the row's columns are
 * written ctx"col" (ctx = "NEW." in a trigger, "\"_o\"." for an aliased
 * table). ctx must not be the table's bare name. No parameters.
 */
int ferry_scope_owner(const struct ferry_scope *s, size_t t, const char *ctx, struct ferry_buf *b);

/*
 * The name of ferry's object of kind for table, "_ferry_<kind>_<table>",
 * unquoted, in out (FERRY_OBJNAME_SIZE bytes). PostgreSQL cuts names at 63
 * bytes, so two long table names could share one trigger or key map: a
 * name that would be longer keeps what fits of the table's name (whole
 * UTF-8 characters) and ends with "_" and 8 hex digits of the SHA-256 of
 * the table's name. Shorter names are as they always were. Returns
 * FERRY_OK or FERRY_EINTERNAL (kind too long).
 */
#define FERRY_OBJNAME_MAX 63
#define FERRY_OBJNAME_SIZE (FERRY_OBJNAME_MAX + 1)
int ferry_scope_objname(char out[FERRY_OBJNAME_SIZE], const char *kind, const char *table);
/* ferry_scope_objname, quoted, appended to b. */
int ferry_scope_add_objname(struct ferry_buf *b, const char *kind, const char *table);

/*
 * Append the value a [mask] serves for a column of the row "_ferry_s" of
 * ti: the operator's expression over the row's own columns, named bare
 * (a derived table gives them their names whatever else the query joins).
 * The producer serves it and verify hashes it: one form for both.
 */
int ferry_scope_mask_expr(struct ferry_buf *b, const struct ferry_table_info *ti, const char *mask);

/*
 * Append the scope check of a hop to the root by the one-column foreign key
 * fk of the row ctx (e.g. "\"_ferry_j1\"."): no join, but
 *   ctx"fk" = (SELECT "_ferry_r"."pk" FROM "root" AS "_ferry_r"
 *              WHERE <the root's owner> = ?)
 * the tenant's root row looked up once per statement (it must exist and be
 * the tenant's, as a join to it would say). One placeholder: the tenant.
 */
int ferry_scope_root_hop(const struct ferry_scope *s, const char *ctx, const struct ferry_fkey *fk,
                         struct ferry_buf *b);

/* Append the quoted name of table's key map (capture.c): "_ferry_k_<table>". */
int ferry_scope_keymap(struct ferry_buf *b, const char *table);

/*
 * Whether two values of a PostgreSQL key column of type type (as
 * format_type() writes it) that PostgreSQL finds equal always have the
 * same text in ferry's sessions: integers, uuid, boolean, bytea, floats
 * (0 and -0, equal, are left to be one key: SQLite cannot tell them apart),
 * dates and timestamps. Not numeric (0.10 = 0.1), interval ('1 day' = '24
 * hours'), citext, text and character types (a nondeterministic collation
 * makes 'Apple' = 'APPLE'; the type does not say the collation), nor any
 * other: an update
 * to an equal key of another text is then a key change (capture logs the
 * old key's delete, the changes endpoint finds a key only by its text, a
 * PostgreSQL target deletes only an identical key). NULL: not exact.
 */
int ferry_scope_pg_key_exact(const char *type);

/* Append lhs"k1" = rhs"k1" AND ... over the key columns of ti. */
int ferry_scope_keymatch(struct ferry_buf *b, const struct ferry_table_info *ti, const char *lhs,
                         const char *rhs);

/*
 * Append (SELECT km."_ferry_tenant" FROM <ti's key map> AS km WHERE km.k =
 * ctx"k" ...): the tenant the key map holds for the row ctx ("OLD."), NULL
 * when it holds none.
 */
int ferry_scope_keymap_tenant(struct ferry_buf *b, const struct ferry_table_info *ti,
                              const char *ctx);

/* Append "ctx"k1", ctx"k2"..." for the key columns of t (ctx may be ""). */
int ferry_scope_keylist(const struct ferry_scope *s, size_t t, const char *ctx,
                        struct ferry_buf *b);

/*
 * The tables of s that PostgreSQL (14 and later: reltuples -1) has never
 * analyzed in db: *n of them, their quoted names appended to names (", "
 * between; up to about 512 bytes, then ", ..."). Queries on them are planned
 * from guesses. 0 and nothing on SQLite or an older server.
 */
int ferry_scope_unanalyzed(struct ferry_db *db, const struct ferry_scope *s,
                           struct ferry_buf *names, size_t *n, struct ferry_error *err);

#endif
