/*
 * checksum.h - row counts and checksums of one tenant's rows of one table
 * over primary-key ranges, computed the same way on the source (the digest
 * endpoint) and on the target (verify), so that the two can be compared.
 *
 * Row hash: a 64-bit hash of the canonical encoding of the row's values,
 * in the table's column order (the manifest's). Each value is one tag
 * byte, 0 NULL, 1 INT, 2 FLOAT, 3 TEXT, 4 BLOB, then: INT 8 bytes
 * big-endian two's complement; FLOAT the 8 bytes of its IEEE-754 bits
 * big-endian (so -0.0 and 0.0 differ, as they do for the copy); TEXT and
 * BLOB an 8-byte big-endian length and the bytes. Which hash (enum
 * ferry_hash), the digest request says:
 *   - SipHash-1-3 under a 16-byte key that the target draws at random for
 *     each verify and sends in its digest requests: the 8 output bytes
 *     read little-endian (the reference implementation's uint64). Keyed,
 *     so rows cannot be made to collide without the key, which changes
 *     every time; about a fifth of SHA-256's cost a row;
 *   - SHA-256, its first 8 bytes read big-endian: what a request that names
 *     no hash means (a target from before the key), and what a target uses
 *     with a source that refuses the key.
 *
 * Range checksum: the sum modulo 2^64 of the row hashes. A sum does not
 * depend on the order the rows are read in, adds up over sub-ranges (a
 * table's checksum is the sum of its ranges'), and, unlike XOR, does not
 * cancel two identical rows.
 *
 * A range is lo <= key < hi in the database's own key order (row-value
 * comparison); a NULL bound is open. A column the source masks ([mask],
 * follow) is hashed as its mask expression's value, the value the target
 * was sent; a mask that is not deterministic (random()) never verifies. Only rows whose owner on
 * this database (ferry_scope_owner) is the tenant are read: the same rule on both sides, and the
 * reason no count or checksum of another tenant's rows can come out of here.
 */
#ifndef FERRY_CHECKSUM_H
#define FERRY_CHECKSUM_H

#include "buf.h"
#include "db/db.h"
#include "error.h"
#include "schema.h"
#include "scope.h"
#include "value.h"

#include <stddef.h>
#include <stdint.h>

/* Most ranges one digest may be split into. */
#define FERRY_DIGEST_MAX_PARTS 1024

/*
 * One range of a split: the key of its first row, its row count and
 * checksum. Who owns the bytes of first[] TEXT/BLOB values is said where a
 * struct ferry_range is handed out.
 */
struct ferry_range {
    struct ferry_value first[FERRY_MAX_KEY_COLS];
    size_t nfirst;
    int64_t count;
    uint64_t sum;
};

/* Ranges of one split, with the bytes their keys point into. Caller-owned. */
struct ferry_ranges {
    struct ferry_range *r; /* n ranges, in key order */
    size_t n;
    struct ferry_buf arena; /* TEXT/BLOB key bytes; valid until ferry_ranges_release */
};

void ferry_ranges_init(struct ferry_ranges *rs);
void ferry_ranges_release(struct ferry_ranges *rs);

/* The row hashes (wire values: the digest request names one). */
enum ferry_hash {
    FERRY_HASH_SHA256 = 0,    /* the first 8 bytes of SHA-256, big-endian; no key */
    FERRY_HASH_SIPHASH13 = 1, /* SipHash-1-3 under a FERRY_HASH_KEY_SIZE-byte key */
    /*
     * PostgreSQL only, computed by the server: hash_record_extended() of
     * the row's values in an exact form (checksum.c, add_pgrec_hash),
     * seeded with the first 8 bytes (big-endian) of SHA-256("ferry
     * pg-record-1 seed" || key). No C implementation: both ends must be
     * PostgreSQL 14 or later.
     */
    FERRY_HASH_PGREC = 2,
    FERRY_HASH_MAX = 2
};
#define FERRY_HASH_KEY_SIZE 16
#define FERRY_HASH_SIPHASH13_NAME "siphash-1-3" /* its name in a digest request */
#define FERRY_HASH_PGREC_NAME "pg-record-1"     /* idem; the form's version in its name */

/* A row hash's name: its name in a digest request, "sha-256" for the unnamed default. */
const char *ferry_hash_name(int alg);

/* SipHash-1-3 of in[0..n) under key: the reference's output read little-endian. */
uint64_t ferry_siphash13(const unsigned char key[FERRY_HASH_KEY_SIZE], const void *in, size_t n);

struct ferry_rowhash; /* opaque: a reusable SHA-256 context, a key and a row buffer */

/*
 * A row hasher for rows of at most max_row encoded bytes, hashing with
 * SHA-256 until ferry_rowhash_set says otherwise. Owned, free with
 * ferry_rowhash_free. One per thread: it keeps state between rows so that
 * hashing a row costs the digest, not setting one up.
 */
int ferry_rowhash_new(size_t max_row, struct ferry_rowhash **out, struct ferry_error *err);
void ferry_rowhash_free(struct ferry_rowhash *h);

/*
 * Hash rows with alg (enum ferry_hash) from now on, under key
 * (FERRY_HASH_KEY_SIZE bytes, copied; ignored for SHA-256). An unknown alg,
 * or SipHash without a key, is SHA-256.
 */
void ferry_rowhash_set(struct ferry_rowhash *h, int alg, const unsigned char *key);

/*
 * Hash of one row of n values into *out.
 * Errors: FERRY_ETOOBIG (a row over max_row), FERRY_ENOMEM, FERRY_EINTERNAL.
 */
int ferry_rowhash_row(struct ferry_rowhash *h, const struct ferry_value *vals, size_t n,
                      uint64_t *out, struct ferry_error *err);

/*
 * Coercions: a value hashed as the target will store it, when the source
 * and target are different engines (same-engine values round-trip exactly
 * and get none). The target names one per column (by its own column type)
 * in its digest request (one byte: a code, or a code plus a scale or a
 * length), the source applies it to each value before
 * hashing (both ways of hashing, ferry_rowhash_coerced). Each reproduces
 * exactly what the applier writes and what reading the target back gives;
 * a value it cannot reproduce exactly is left as it is (a reported
 * difference rather than a hidden one). NULL is never changed.
 */
enum ferry_coerce {
    FERRY_COERCE_NONE = 0,
    /* PostgreSQL text or varchar: INT as its decimal, FLOAT as the shortest
     * text strtod reads back ("NaN", "Infinity", "-0", "5e-324"), BLOB as
     * TEXT of its bytes */
    FERRY_COERCE_PG_TEXT = 1,
    /* PostgreSQL bytea: TEXT as BLOB of its bytes, INT and FLOAT as BLOB of
     * the text above */
    FERRY_COERCE_PG_BYTEA = 2,
    /* PostgreSQL double precision: INT as the nearest double */
    FERRY_COERCE_PG_FLOAT8 = 3,
    /* PostgreSQL numeric (no typmod): INT as its decimal, FLOAT as numeric's
     * output of the text above ("1e+20" -> "100000000000000000000", "-0"
     * -> "0", "NaN", "Infinity") */
    FERRY_COERCE_PG_NUMERIC = 4,
    /* SQLite REAL affinity: INT, and TEXT that FERRY_COERCE_SQLITE_NUMERIC
     * makes a number, as the nearest double; -0.0 as 0.0 */
    FERRY_COERCE_SQLITE_REAL = 5,
    /* SQLite TEXT affinity: INT as its decimal (FLOAT left: SQLite's own
     * formatting of reals varies by version) */
    FERRY_COERCE_SQLITE_TEXT = 6,
    /* PostgreSQL real: INT and FLOAT as the float4 strtof reads from the
     * text the applier writes, widened to a double */
    FERRY_COERCE_PG_FLOAT4 = 7,
    /* SQLite NUMERIC or INTEGER affinity: TEXT that is an integer literal
     * as that INT; TEXT that is a real literal as strtod's double; a
     * double that is a whole number strictly inside int64 as that INT */
    FERRY_COERCE_SQLITE_NUMERIC = 8,
    FERRY_COERCE_MAX = 8,
    /*
     * PostgreSQL numeric(p, s), s = 0..63: as FERRY_COERCE_PG_NUMERIC, then
     * rounded to s digits after the point, half away from zero, and written
     * with exactly s of them ("5" -> "5.00", "-0.001" -> "0.00")
     */
    FERRY_COERCE_PG_NUMERIC_SCALE = 64,
    /*
     * PostgreSQL character(n), n = 1..127: TEXT (INT and FLOAT as their
     * text, as FERRY_COERCE_PG_TEXT) padded with spaces to n characters,
     * or cut to n when only spaces go
     */
    FERRY_COERCE_PG_CHAR = 128
};
#define FERRY_COERCE_SCALE_MAX 63
#define FERRY_COERCE_CHAR_MAX 127

/* Whether code is a coercion of this build (a digest request's may be checked with it). */
int ferry_coerce_known(int code);

/* Bytes of scratch one coerced value may need (numeric's 5e-324 is 326, a
 * character(127) of 4-byte characters 508). */
#define FERRY_COERCE_SCRATCH 1024

/*
 * *out = in as coercion code stores it; TEXT and BLOB results point into
 * in's bytes or into scratch (FERRY_COERCE_SCRATCH bytes). An unknown code
 * leaves the value as it is.
 */
void ferry_coerce_value(int code, const struct ferry_value *in, char *scratch,
                        struct ferry_value *out);

/*
 * The coercion of a target column of declared type decltype on a target
 * of engine target_engine (FERRY_ENGINE_*) for a source of the other
 * engine: FERRY_COERCE_NONE when values of that type need none or cannot
 * be reproduced.
 */
int ferry_coerce_for(int target_engine, const char *decltype);

/*
 * ferry_rowhash_row of the n values each coerced by codes[i] (codes NULL:
 * none): the one way a coerced row is hashed, in C and in SQLite's function.
 */
int ferry_rowhash_coerced(struct ferry_rowhash *h, const unsigned char *codes,
                          const struct ferry_value *vals, size_t n, uint64_t *out,
                          struct ferry_error *err);

struct ferry_checksum; /* opaque: one table of one tenant on one connection */

/*
 * Prepare checksums of table t of scope s for tenant (copied) on db. masks
 * is NULL, or one entry per column of t: NULL, or an SQL expression over
 * the row's bare column names whose value is hashed instead of the column
 * (copied). db and s are borrowed: they must outlive the handle. *out
 * owned, free with ferry_checksum_free before db is closed. Statements are
 * prepared on first use and kept.
 */
int ferry_checksum_new(struct ferry_db *db, const struct ferry_scope *s, size_t t,
                       const struct ferry_value *tenant, const char *const *masks,
                       struct ferry_checksum **out, struct ferry_error *err);
void ferry_checksum_free(struct ferry_checksum *c);

/*
 * Count and checksum of the tenant's rows in [lo, hi) (nlo, nhi key
 * values, equal to the key's width; lo/hi NULL for an open end).
 * FERRY_EDATA for a bound of the wrong width.
 */
int ferry_checksum_sum(struct ferry_checksum *c, const struct ferry_value *lo, size_t nlo,
                       const struct ferry_value *hi, size_t nhi, int64_t *count, uint64_t *sum,
                       struct ferry_error *err);

/*
 * Split the tenant's rows in [lo, hi) into at most `parts` consecutive
 * ranges (parts 1 to FERRY_DIGEST_MAX_PARTS) in one ordered pass, into
 * *out (initialised here; release it with ferry_ranges_release whatever the
 * result). Ranges hold about equal counts, within a factor of two: the
 * split does not count first. With rows <= parts every range is one row:
 * its first key is the row's key and its sum the row's hash. No rows: no
 * ranges. One part is the total of [lo, hi) from a pass in any order (on
 * PostgreSQL the server's count and sum), and its first key is one of the
 * range's keys, not always the least: a reader bounds it by lo.
 */
int ferry_checksum_split(struct ferry_checksum *c, const struct ferry_value *lo, size_t nlo,
                         const struct ferry_value *hi, size_t nhi, size_t parts,
                         struct ferry_ranges *out, struct ferry_error *err);

/* A row of a walk: its key (borrowed, valid during the call) and hash; nonzero stops the walk. */
typedef int (*ferry_checksum_fn)(void *arg, const struct ferry_value *key, size_t nkey,
                                 uint64_t hash);

/*
 * Call fn for every tenant row in [lo, hi), in no particular order. fn
 * returning nonzero stops the walk, and that value is returned.
 */
int ferry_checksum_each(struct ferry_checksum *c, const struct ferry_value *lo, size_t nlo,
                        const struct ferry_value *hi, size_t nhi, ferry_checksum_fn fn, void *arg,
                        struct ferry_error *err);

/*
 * Hash c's values as coerced by codes (n, one per column of the table, each
 * 0..FERRY_COERCE_MAX; all 0: none) from now on. FERRY_EDATA for a wrong
 * count or code. On PostgreSQL a table whose coercions could change one of
 * its values is then read and hashed in C (the SQL encoding knows none).
 */
int ferry_checksum_coerce(struct ferry_checksum *c, const unsigned char *codes, size_t n,
                          struct ferry_error *err);

/*
 * Hash only the columns keep says (n, one per column of the table: 1
 * hashed, 0 hashed as NULL) from now on: both sides of a check of some
 * columns (a sync's of the columns added on the source) hash the same
 * parts of each row. The key's columns must be kept. FERRY_EDATA for a
 * wrong count or a key column left out.
 */
int ferry_checksum_only(struct ferry_checksum *c, const unsigned char *keep, size_t n,
                        struct ferry_error *err);

/*
 * Hash c's rows with alg (enum ferry_hash) under key (FERRY_HASH_KEY_SIZE
 * bytes, copied; NULL for SHA-256) from now on; SHA-256 until then.
 * FERRY_EDATA for an unknown alg or a keyed one without a key, and for
 * FERRY_HASH_PGREC where it cannot be: not PostgreSQL 14 or later, values
 * coerced, a value of a type it does not take (the message says which; c
 * keeps the hash it had). On PostgreSQL SipHash is computed in C.
 */
int ferry_checksum_set_hash(struct ferry_checksum *c, int alg, const unsigned char *key,
                            struct ferry_error *err);

/*
 * Whether c's rows are hashed by the engine (1: a statement returns key and
 * hash; SQLite through a C function, PostgreSQL in SQL), or read and hashed
 * here (0). Either way the same numbers.
 */
int ferry_checksum_hashed_in_sql(const struct ferry_checksum *c);

/* Read and hash c's rows here from now on (tests compare the two ways). */
void ferry_checksum_hash_in_c(struct ferry_checksum *c);

/*
 * On SQLite a walk of all of a table's rows inside a read transaction
 * keeps the keys it read (those the tenant owns) with the connection, and
 * a walk of a child of that table then checks its rows' owner against
 * them instead of joining the parent, as long as the database has not
 * changed since (its data version, ferry_db_data_version, is the same);
 * else, or outside a read transaction, the join, as always. The same rows
 * either way. ferry_checksum_by_set: whether c's last walk did (tests).
 * ferry_checksum_set_max: the most bytes of keys a connection keeps
 * (16 MB; a table with more keys is not kept); returns the one before
 * (tests: not thread-safe).
 */
int ferry_checksum_by_set(const struct ferry_checksum *c);
size_t ferry_checksum_set_max(size_t bytes);

#endif
