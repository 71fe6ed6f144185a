/*
 * checksum.c - counts and checksums of a tenant's rows over key ranges.
 *
 * Every query filters with the row-oriented scope, "<owner of the row> = ?"
 * (scope.h), joined hop by hop (owner_parts): a few key lookups per row
 * read, where the set form would rebuild its IN (...) lists at every
 * execution, and bisection executes the same statement many times over
 * smaller and smaller ranges. The exceptions: the hop to a small parent
 * next to the root (in_list_hop), whose keys are a short IN list; and on
 * SQLite the first hop of a walk after a walk of all of the parent's rows
 * in an unchanged database, which looks the key up among the parent's keys
 * that walk kept (struct owned, OWNED_FN). It reads the table itself,
 * never ferry's change log or key maps: verify is the safety net for when
 * those are wrong.
 *
 * Rows are hashed by ferry_rowhash_row() in C, from the values the
 * adapters return: here, or on SQLite inside the statement (a C function,
 * which on SQLite also hands each row to the walk under way: ROWSINK_FN).
 * On PostgreSQL they can also be hashed in SQL (PG_IN_SQL_ENV; SHA-256
 * only), the same encoding built per column type, so that the very same
 * numbers come out; test_checksum compares the ways on every type. It is
 * the hot loop of verify: SipHash-1-3 by default (about a fifth of
 * SHA-256's cost); for SHA-256 the implementation is fetched once and its
 * context reused row after row (crypto.h's one-shot ferry_sha256 sets both
 * up per call, five times the cost of the digest of a 100-byte row).
 *
 * Coercions (checksum.h) are applied by ferry_rowhash_coerced() in both C
 * ways (SQLite's function gets the codes as its first argument); hashing
 * in SQL on PostgreSQL has none, so a table whose coercions could change
 * one of its values is read and hashed in C there.
 */
#include "checksum.h"

#include "config.h"
#include "crypto.h"
#include "keypack.h"
#include "log.h"

#include <openssl/err.h>
#include <openssl/evp.h>

#include <float.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SQL_MAX (1u << 20)
/* Largest row hashed: as large as a message may be (config.h). */
#define ROW_MAX ((size_t)FERRY_MAX_MESSAGE_MB << 20)

/*
 * Statements: rows in key order, rows in any order, count and sum (HASH_PG);
 * on SQLite also the same two walks with every row handed to a sink from
 * inside the statement (ROWSINK_FN), which then returns no row at all; and
 * the key of any one row (a one-part split's first key on PostgreSQL).
 */
enum { Q_ORDERED, Q_SCAN, Q_SUM, Q_SINK_ORDERED, Q_SINK, Q_ANY, NQ };

/*
 * A statement's shape: lo bound present (1), hi bound present (2), and on
 * a sink statement the owner check of its first hop by the parent's owned
 * keys (SHAPE_SET, struct owned) instead of a join.
 */
#define SHAPE_SET 4
#define NSHAPE 8

/* Where rows are hashed: statements return every column, or key and hash. */
enum { HASH_C, HASH_SQLITE, HASH_PG };

/*
 * How a PostgreSQL column's value is encoded in SQL, by the type the C
 * path's adapter would decode (the base type of a domain, as the server
 * reports it): the same bytes ferry_rowhash_row() hashes for that value.
 */
enum pg_enc {
    PG_INT,   /* int2, int4, int8, oid: tag 1, int8send */
    PG_BOOL,  /* tag 1, 1 or 0 */
    PG_FLOAT, /* float4, float8: tag 2, float8send (float4 widened, exact), every NaN as strtod's */
    PG_BYTEA, /* tag 4, length, the bytes */
    PG_TEXT,  /* text, varchar: tag 3, length, the UTF-8 bytes */
    PG_OUT    /* any other type: tag 3, length, its output function's text in UTF-8 */
};

struct pg_col {
    enum pg_enc enc;
    int64_t base; /* the base type's OID */
    char *out;    /* PG_OUT: the output function, schema-qualified and quoted */
};

struct ferry_checksum {
    struct ferry_db *db;
    const struct ferry_scope *scope;
    size_t t;
    size_t npk;
    struct ferry_value tenant;
    char *tenant_bytes; /* copy of a TEXT tenant */
    char **masks;       /* NULL, or one per column: NULL or the mask expression */
    /* [query kind][shape] */
    struct ferry_stmt *st[NQ][NSHAPE];
    struct ferry_rowhash *hash;
    int in_sql;            /* HASH_*: rows hashed by the engine, statements return key, hash */
    struct pg_col *pgcol;  /* HASH_PG: one per column */
    unsigned char *coerce; /* NULL, or one enum ferry_coerce per column, not all 0 */
    unsigned char *hide;   /* NULL, or one per column: 1 hashed as NULL (ferry_checksum_only) */
    /*
     * PostgreSQL: NULL, or one per key column: 1 when its collation does
     * not order by bytes (a database made with en_US.UTF-8, an ICU
     * collation), so that ranges compare it COLLATE "C" (collate_keys)
     */
    unsigned char *bytewise;
    int unordered;        /* a walk in key order gave a key the sink cannot check: rows */
    int small_parent;     /* in_list_hop(): -1 not asked yet, 0 no, 1 yes */
    int in_order[NSHAPE]; /* Q_SINK_ORDERED's plan by shape: -1 not read, 0 sorts, 1 in order */
    struct conn *conn;    /* SQLite: the connection's sink state (owned keys), or NULL */
    int set_parent;       /* set_hop(): -2 not asked yet, -1 none, else the parent */
    int records;          /* records_keys(): -1 not asked yet, 0 no, 1 yes */
    struct ferry_buf parent_id, own_id; /* owned_id() of the parent and of the table, once built */
    int by_set;                         /* the last walk's owner check was by a set */
    int alg;                            /* enum ferry_hash */
    unsigned char key[FERRY_HASH_KEY_SIZE]; /* FERRY_HASH_SIPHASH13's key */
};

/*
 * On SQLite the row hash is an SQL function (ferry_db_function), so a
 * statement returns the key and the hash instead of every column: the
 * values go from the row to the hash without SQLite's column API, a third
 * of the cost of a row read that way. The same ferry_rowhash_coerced()
 * hashes the same values, so both ways give the same numbers. Its first
 * argument says how (a blob, constant in the statement's text): the hash
 * (one byte, enum ferry_hash), its key (FERRY_HASH_KEY_SIZE bytes, zeros
 * for SHA-256), then either nothing or the coercion code of each value.
 */
#define ROWHASH_FN "ferry_rowhash_k"
#define SPEC_HEAD (1 + FERRY_HASH_KEY_SIZE)

/*
 * The same hash handed to the walk under way on this thread (struct sink)
 * with the row's key, from inside the statement: ROWSINK_FN([key values,]
 * values); how to hash them (the hash, its key, the coercions) and where
 * the key is among the values (unless a mask hides one of its columns
 * there: then the key values come first) the walk says, from its checksum
 * handle. It returns 0, so the statement returns no row: a row costs no
 * result row, no return from sqlite3_step() and no column read (a tenth
 * of a row's cost). It is called under a CASE that holds the whole owner
 * check and the bounds, so only for the rows the walk is about.
 */
#define ROWSINK_FN "ferry_rowsink"
/* Most arguments of an SQL function on SQLite (SQLITE_MAX_FUNCTION_ARG's default). */
#define SQLITE_FN_MAX_ARGS 127
/* Most values a sink statement passes. */
#define SINK_MAX_ARGS 100

/*
 * The keys of one table that the tenant owns, as a walk of all its rows
 * through the sink found them (every row the owner check let through), so
 * that the owner check of a child of that table can look its foreign key
 * up there (OWNED_FN) instead of joining the parent: a seek into a big
 * table a row (reactions -> posts). Exact only while the database is as
 * it was then: it is kept with the connection's data version
 * (ferry_db_data_version) and used only when that is the same, inside a
 * read transaction; the one check a child's rows then pass is "the key
 * is in the set", the same rows as the join and the parent's own owner
 * check (the set's id is that check's text and the tenant). Keys of one
 * INTEGER PRIMARY KEY: ascending in keys[], or as bits over [min, max]
 * when that takes less memory.
 */
struct owned {
    struct ferry_buf id; /* owned_id(): table, key, owner check, tenant; len 0: slot free */
    uint64_t ver[2];     /* ferry_db_data_version when the keys were read */
    int64_t *keys;       /* n keys, ascending, or NULL when bits */
    uint64_t *bits;      /* bit k - min for key k in [min, max] */
    size_t n, bytes;
    int64_t min, max;
    uint64_t used; /* the connection's tick at its last use (the oldest goes first) */
    int busy;      /* a walk is using it: kept */
};

/* Most owned-key sets a connection keeps, and most bytes they take together (owned_max). */
#define OWNED_SLOTS 4
#define OWNED_MAX_BYTES ((size_t)16 << 20)
static size_t owned_max = OWNED_MAX_BYTES;

/*
 * What checksum.c keeps with a SQLite connection: the argument of its
 * ROWSINK_FN and OWNED_FN, freed when the connection closes (or the
 * functions are defined again).
 */
struct conn {
    struct owned sets[OWNED_SLOTS];
    size_t bytes; /* of the sets' keys */
    uint64_t tick;
};

/*
 * OWNED_FN(fk): 1 when fk is a key of the owned set of the walk under way
 * on this thread, else 0; compared as the join compares it with an
 * INTEGER PRIMARY KEY (SQLite's rowid seek): an INT as it is, a REAL of an
 * integer value as that integer, anything else matches no row. With no
 * argument it returns the address of the connection's struct conn (how a
 * checksum handle finds it: conn_of).
 */
#define OWNED_FN "ferry_owned"

/* A set of keys being read by a walk (struct owned once it has read them all). */
struct rec {
    int64_t *keys;
    size_t n, cap;
    int sorted; /* every key above the one before */
    int ok;     /* 0: gave up (a key not an INT, or over OWNED_MAX_BYTES) */
};

/* A walk of rows through ROWSINK_FN. */
struct sink {
    ferry_checksum_fn fn;
    void *arg;
    int ordered;   /* key order wanted: a key of one INT must be above the last */
    int have_last; /* last holds the key of the row before */
    int64_t last;
    int unordered;           /* ordered, and a key was not one INT above the last: stopped */
    int rc;                  /* fn's or the hash's failure, which stopped the statement */
    struct ferry_error *err; /* where the hash's failure goes (fn sets its own) */
    /* how the statement's rows are hashed, from its checksum handle (sink_walk) */
    struct ferry_rowhash *hash;     /* the handle's: its hash and key */
    const unsigned char *codes;     /* NULL, or the coercion of each value */
    size_t npk, nsep, nv;           /* key columns; of them passed apart (0 or npk); values */
    size_t pos[FERRY_MAX_KEY_COLS]; /* nsep 0: where the key is among the values */
    const struct owned *owned;      /* OWNED_FN's set (SHAPE_SET), or NULL */
    struct rec *rec;                /* the keys to keep, or NULL */
};

/* The walk whose statement this thread is stepping (the function runs inside sqlite3_step). */
static _Thread_local struct sink *cur_sink;

struct ferry_rowhash {
    int alg;         /* enum ferry_hash */
    uint64_t k0, k1; /* FERRY_HASH_SIPHASH13: the key, read little-endian */
    EVP_MD *md;
    EVP_MD_CTX *ctx;
    int primed;         /* ctx holds the digest: re-initialised without fetching it again */
    unsigned char *row; /* the encoding of the row being hashed */
    size_t cap, max;
    struct ferry_value *cv; /* ferry_rowhash_coerced: the coerced values, ncv of them */
    char *scratch;          /* and FERRY_COERCE_SCRATCH bytes for each */
    size_t ncv;
};

void ferry_ranges_init(struct ferry_ranges *rs)
{
    rs->r = NULL;
    rs->n = 0;
    ferry_buf_init(&rs->arena, ROW_MAX);
}

void ferry_ranges_release(struct ferry_ranges *rs)
{
    free(rs->r);
    rs->r = NULL;
    rs->n = 0;
    ferry_buf_release(&rs->arena);
}

/* 64-bit words to and from bytes, one load or store (the row hash's hot loop). */
static uint64_t to_be64(uint64_t v)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return v;
#else
    return __builtin_bswap64(v);
#endif
}

static void put_be64(unsigned char *p, uint64_t v)
{
    v = to_be64(v);
    memcpy(p, &v, sizeof(v));
}

static uint64_t get_le64(const unsigned char *p)
{
    uint64_t v;

    memcpy(&v, p, sizeof(v));
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

void ferry_rowhash_free(struct ferry_rowhash *h)
{
    if (!h)
        return;
    EVP_MD_CTX_free(h->ctx);
    EVP_MD_free(h->md);
    free(h->row);
    free(h->cv);
    free(h->scratch);
    free(h);
}

int ferry_rowhash_new(size_t max_row, struct ferry_rowhash **out, struct ferry_error *err)
{
    struct ferry_rowhash *h = calloc(1, sizeof(*h));

    *out = NULL;
    if (!h)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
    h->max = max_row;
    h->alg = FERRY_HASH_SHA256;
    h->md = EVP_MD_fetch(NULL, "SHA256", NULL);
    h->ctx = EVP_MD_CTX_new();
    if (!h->md || !h->ctx) {
        unsigned long e = ERR_get_error();
        char detail[160];

        ERR_error_string_n(e, detail, sizeof(detail));
        ERR_clear_error();
        ferry_rowhash_free(h);
        return ferry_error_set(err, FERRY_EINTERNAL, "sha-256 unavailable: %s",
                               e ? detail : "no detail");
    }
    *out = h;
    return FERRY_OK;
}

void ferry_rowhash_set(struct ferry_rowhash *h, int alg, const unsigned char *key)
{
    h->alg = alg == FERRY_HASH_SIPHASH13 && key ? FERRY_HASH_SIPHASH13 : FERRY_HASH_SHA256;
    h->k0 = h->alg == FERRY_HASH_SIPHASH13 ? get_le64(key) : 0;
    h->k1 = h->alg == FERRY_HASH_SIPHASH13 ? get_le64(key + 8) : 0;
}

const char *ferry_hash_name(int alg)
{
    switch (alg) {
    case FERRY_HASH_SIPHASH13:
        return FERRY_HASH_SIPHASH13_NAME;
    case FERRY_HASH_PGREC:
        return FERRY_HASH_PGREC_NAME;
    }
    return "sha-256";
}

#define ROTL64(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = ROTL64(v1, 13);                                                                       \
        v1 ^= v0;                                                                                  \
        v0 = ROTL64(v0, 32);                                                                       \
        v2 += v3;                                                                                  \
        v3 = ROTL64(v3, 16);                                                                       \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = ROTL64(v3, 21);                                                                       \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = ROTL64(v1, 17);                                                                       \
        v1 ^= v2;                                                                                  \
        v2 = ROTL64(v2, 32);                                                                       \
    } while (0)

/*
 * SipHash-1-3 (Aumasson and Bernstein's SipHash with one compression round
 * and three finalization rounds) of in[0..n) under the key (k0, k1), as the
 * reference implementation computes it, its 8 output bytes read
 * little-endian.
 */
static uint64_t siphash13(uint64_t k0, uint64_t k1, const unsigned char *in, size_t n)
{
    uint64_t v0 = UINT64_C(0x736f6d6570736575) ^ k0;
    uint64_t v1 = UINT64_C(0x646f72616e646f6d) ^ k1;
    uint64_t v2 = UINT64_C(0x6c7967656e657261) ^ k0;
    uint64_t v3 = UINT64_C(0x7465646279746573) ^ k1;
    uint64_t b = (uint64_t)n << 56;
    const unsigned char *end = in + (n & ~(size_t)7);
    size_t left = n & 7;

    for (; in != end; in += 8) {
        uint64_t m = get_le64(in);

        v3 ^= m;
        SIPROUND;
        v0 ^= m;
    }
    for (size_t i = 0; i < left; i++)
        b |= (uint64_t)in[i] << (8 * i);
    v3 ^= b;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

uint64_t ferry_siphash13(const unsigned char key[FERRY_HASH_KEY_SIZE], const void *in, size_t n)
{
    return siphash13(get_le64(key), get_le64(key + 8), in, n);
}

/* Make room for need bytes of a row in h->row (its contents are kept). */
static int row_grow(struct ferry_rowhash *h, size_t need, struct ferry_error *err)
{
    size_t cap = h->cap ? h->cap : 256;
    unsigned char *np;

    while (cap < need)
        cap = cap > h->max / 2 ? h->max : cap * 2;
    np = realloc(h->row, cap);
    if (!np)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory hashing a row of %zu bytes", need);
    h->row = np;
    h->cap = cap;
    return FERRY_OK;
}

int ferry_rowhash_row(struct ferry_rowhash *h, const struct ferry_value *vals, size_t n,
                      uint64_t *out, struct ferry_error *err)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    size_t need = 0;

    /* One pass: each value checked against the limit, the buffer grown when it must be. */
    for (size_t i = 0; i < n; i++) {
        const struct ferry_value *v = &vals[i];
        size_t len = v->type == FERRY_NULL                            ? 1
                     : v->type == FERRY_TEXT || v->type == FERRY_BLOB ? 9 + v->u.s.n
                                                                      : 9;
        unsigned char *p;
        uint64_t bits = 0;

        if (v->type > FERRY_BLOB)
            return ferry_error_set(err, FERRY_EINTERNAL, "checksum: value of unknown type %d",
                                   (int)v->type);
        if (len > h->max - need)
            return ferry_error_set(err, FERRY_ETOOBIG,
                                   "checksum: a row of %zu values is over %zu bytes", n, h->max);
        if (need + len > h->cap) {
            int rc = row_grow(h, need + len, err);

            if (rc)
                return rc;
        }
        p = h->row + need;
        need += len;
        *p++ = (unsigned char)v->type;
        switch (v->type) {
        case FERRY_NULL:
            break;
        case FERRY_INT:
            put_be64(p, (uint64_t)v->u.i);
            break;
        case FERRY_FLOAT:
            memcpy(&bits, &v->u.f, sizeof(bits));
            put_be64(p, bits);
            break;
        case FERRY_TEXT:
        case FERRY_BLOB:
            put_be64(p, (uint64_t)v->u.s.n);
            if (v->u.s.n)
                memcpy(p + 8, v->u.s.p, v->u.s.n);
            break;
        }
    }
    if (h->alg == FERRY_HASH_SIPHASH13) {
        *out = siphash13(h->k0, h->k1, h->row ? h->row : md, need);
        return FERRY_OK;
    }
    /* NULL once primed: OpenSSL 3.0 then skips a fetch and an allocation per row (170 -> 139 ns) */
    if (EVP_DigestInit_ex2(h->ctx, h->primed ? NULL : h->md, NULL) != 1 ||
        EVP_DigestUpdate(h->ctx, h->row ? h->row : md, need) != 1 ||
        EVP_DigestFinal_ex(h->ctx, md, &mdlen) != 1 || mdlen < 8) {
        ERR_clear_error();
        return ferry_error_set(err, FERRY_EINTERNAL, "sha-256 of a row failed");
    }
    h->primed = 1;
    *out = 0;
    for (int i = 0; i < 8; i++)
        *out = (*out << 8) | md[i];
    return FERRY_OK;
}

/*
 * numeric's output of the finite decimal s ("-1.5e-07" as %g writes it):
 * numeric_in keeps the digits after the point less the exponent as its
 * scale (never below 0), numeric_out writes them all without an exponent,
 * and zero has no sign. out has room for any double's (FERRY_COERCE_SCRATCH).
 */
static void pg_numeric_text(const char *s, char *out, size_t size)
{
    char digits[32];
    size_t nd = 0, nint = 0, nfrac = 0, o = 0;
    long exp = 0, point, scale;
    int neg = 0, zero = 1;

    if (*s == '-') {
        neg = 1;
        s++;
    }
    for (; *s >= '0' && *s <= '9' && nd < sizeof(digits); s++, nint++)
        digits[nd++] = *s;
    if (*s == '.')
        for (s++; *s >= '0' && *s <= '9' && nd < sizeof(digits); s++, nfrac++)
            digits[nd++] = *s;
    if (*s == 'e' || *s == 'E')
        exp = strtol(s + 1, NULL, 10);
    for (size_t i = 0; i < nd; i++)
        zero = zero && digits[i] == '0';
    point = (long)nint + exp; /* digits[0..point) are the integer part */
    scale = (long)nfrac - exp;
    if (scale < 0)
        scale = 0;
    if (neg && !zero && o + 1 < size)
        out[o++] = '-';
    if (point <= 0) {
        if (o + 2 < size) {
            out[o++] = '0';
            out[o++] = '.';
        }
        for (long i = 0; i < -point && o + 1 < size; i++)
            out[o++] = '0';
        for (size_t i = 0; i < nd && o + 1 < size; i++)
            out[o++] = digits[i];
    } else {
        /* leading zeros of the integer part ("0.5": one) go, but for the last */
        long i = 0;

        while (i + 1 < point && (size_t)i < nd && digits[i] == '0')
            i++;
        for (; i < point && o + 1 < size; i++)
            out[o++] = (size_t)i < nd ? digits[i] : '0';
        if (scale > 0 && o + 1 < size)
            out[o++] = '.';
        for (long k = 0; k < scale && o + 1 < size; k++)
            out[o++] = (size_t)(point + k) < nd ? digits[point + k] : '0';
    }
    out[o] = '\0';
}

int ferry_coerce_known(int code)
{
    return (code >= 0 && code <= FERRY_COERCE_MAX) ||
           (code >= FERRY_COERCE_PG_NUMERIC_SCALE &&
            code <= FERRY_COERCE_PG_NUMERIC_SCALE + FERRY_COERCE_SCALE_MAX) ||
           (code > FERRY_COERCE_PG_CHAR && code <= FERRY_COERCE_PG_CHAR + FERRY_COERCE_CHAR_MAX);
}

/*
 * numeric(p, scale)'s output of numeric's plain decimal text in ("-0.125",
 * "5", "100000000000000000000"): rounded to scale digits after the point,
 * half away from zero, with exactly that many, no sign on zero.
 */
static void pg_numeric_round(const char *in, int scale, char *out, size_t size)
{
    char d[FERRY_COERCE_SCRATCH + 2]; /* the digits, one more in front for a carry */
    size_t nd = 1, nint, o = 0, keep;
    int neg = *in == '-', zero = 1;

    in += neg;
    d[0] = '0';
    for (; *in >= '0' && *in <= '9' && nd < sizeof(d) - 1; in++)
        d[nd++] = *in;
    nint = nd;
    if (*in == '.')
        for (in++; *in >= '0' && *in <= '9' && nd < sizeof(d) - 1; in++)
            d[nd++] = *in;
    for (keep = nd; keep < nint + (size_t)scale && keep < sizeof(d) - 1; keep++)
        d[keep] = '0';
    if (keep > nint + (size_t)scale) {
        int up = d[nint + (size_t)scale] >= '5';

        keep = nint + (size_t)scale;
        for (size_t i = keep; up && i-- > 0;) {
            up = d[i] == '9';
            d[i] = up ? '0' : (char)(d[i] + 1);
        }
    }
    for (size_t i = 0; i < keep; i++)
        zero = zero && d[i] == '0';
    if (neg && !zero && o + 1 < size)
        out[o++] = '-';
    /* the integer part without leading zeros, but for the last */
    {
        size_t i = 0;

        while (i + 1 < nint && d[i] == '0')
            i++;
        for (; i < nint && o + 1 < size; i++)
            out[o++] = d[i];
    }
    if (scale > 0 && o + 1 < size)
        out[o++] = '.';
    for (size_t i = nint; i < keep && o + 1 < size; i++)
        out[o++] = d[i];
    out[o] = '\0';
}

/*
 * character(n)'s value of the n-bytes text p: padded with spaces to n
 * characters (UTF-8), or cut to n when what goes is spaces; else as it is
 * (PostgreSQL refuses it: a reported difference). Into scratch when changed.
 */
static void pg_char_pad(const char *p, size_t len, int n, char *scratch, struct ferry_value *out)
{
    size_t chars = 0, cut = len;

    for (size_t i = 0; i < len; i++)
        if (((unsigned char)p[i] & 0xC0) != 0x80 && ++chars == (size_t)n + 1)
            cut = i;
    if (chars > (size_t)n) {
        for (size_t i = cut; i < len; i++)
            if (p[i] != ' ')
                return;
        out->u.s.n = cut;
        return;
    }
    if (len + ((size_t)n - chars) > FERRY_COERCE_SCRATCH)
        return;
    if (len)
        memmove(scratch, p, len);
    memset(scratch + len, ' ', (size_t)n - chars);
    out->u.s.p = scratch;
    out->u.s.n = len + ((size_t)n - chars);
}

/*
 * SQLite's NUMERIC affinity (datatype3.html 3.0, applyNumericAffinity): a
 * double that is a whole number strictly inside int64 becomes that INT.
 */
static void sqlite_whole(double d, struct ferry_value *out)
{
    /* -2^63 < d < 2^63, exactly representable bounds */
    if (d == d && d > -9223372036854775808.0 && d < 9223372036854775808.0 &&
        d == (double)(int64_t)d) {
        out->type = FERRY_INT;
        out->u.i = (int64_t)d;
    } else {
        out->type = FERRY_FLOAT;
        out->u.f = d;
    }
}

/*
 * TEXT p (n bytes) as a NUMERIC or INTEGER affinity column stores it: an
 * integer literal ([+-]digits, spaces around) that fits int64 as that INT;
 * a real literal (digits with a point and/or an exponent) as strtod's
 * double, then sqlite_whole; anything else left as it is. (SQLite's own
 * text-to-double conversion rounds as strtod does but for rare inputs; a
 * value it rounds otherwise shows as a difference, never hides one.)
 */
static void sqlite_numeric_text(const char *p, size_t n, char *scratch, struct ferry_value *out)
{
    size_t a = 0, b = n, i, digits = 0;
    int point = 0;

    /* SQLite's spaces (sqlite3Isspace): " \t\n\v\f\r" */
    while (a < b && p[a] && strchr(" \t\n\v\f\r", p[a]))
        a++;
    while (b > a && p[b - 1] && strchr(" \t\n\v\f\r", p[b - 1]))
        b--;
    if (b - a >= FERRY_COERCE_SCRATCH)
        return;
    i = a + (a < b && (p[a] == '+' || p[a] == '-'));
    for (; i < b && ((p[i] >= '0' && p[i] <= '9') || (p[i] == '.' && !point)); i++) {
        point |= p[i] == '.';
        digits += p[i] != '.';
    }
    if (!digits)
        return;
    if (i < b && (p[i] == 'e' || p[i] == 'E')) {
        size_t e = i + 1;

        if (e < b && (p[e] == '+' || p[e] == '-'))
            e++;
        for (i = e; i < b && p[i] >= '0' && p[i] <= '9'; i++)
            ;
        if (i == e)
            return;
        point = 1;
    }
    if (i != b)
        return;
    memcpy(scratch, p + a, b - a);
    scratch[b - a] = '\0';
    if (!point) {
        char *end;

        errno = 0;
        out->u.i = strtoll(scratch, &end, 10);
        if (errno == 0 && *end == '\0') {
            out->type = FERRY_INT;
            return;
        }
    }
    sqlite_whole(strtod(scratch, NULL), out);
}

void ferry_coerce_value(int code, const struct ferry_value *in, char *scratch,
                        struct ferry_value *out)
{
    *out = *in;
    if (code > FERRY_COERCE_PG_CHAR && code <= FERRY_COERCE_PG_CHAR + FERRY_COERCE_CHAR_MAX) {
        /* the text the applier writes: FERRY_COERCE_PG_TEXT's, then padded */
        ferry_coerce_value(FERRY_COERCE_PG_TEXT, in, scratch, out);
        if (out->type == FERRY_TEXT)
            pg_char_pad(out->u.s.n ? out->u.s.p : "", out->u.s.n, code - FERRY_COERCE_PG_CHAR,
                        scratch, out);
        return;
    }
    if (code >= FERRY_COERCE_PG_NUMERIC_SCALE &&
        code <= FERRY_COERCE_PG_NUMERIC_SCALE + FERRY_COERCE_SCALE_MAX) {
        ferry_coerce_value(FERRY_COERCE_PG_NUMERIC, in, scratch, out);
        if (out->type == FERRY_TEXT && out->u.s.p == scratch &&
            (in->type == FERRY_INT || isfinite(in->u.f))) {
            char dec[FERRY_COERCE_SCRATCH];

            memcpy(dec, scratch, out->u.s.n);
            dec[out->u.s.n] = '\0';
            pg_numeric_round(dec, code - FERRY_COERCE_PG_NUMERIC_SCALE, scratch,
                             FERRY_COERCE_SCRATCH);
            out->u.s.n = strlen(scratch);
        }
        return;
    }
    switch (code) {
    case FERRY_COERCE_PG_TEXT:
    case FERRY_COERCE_PG_BYTEA:
    case FERRY_COERCE_PG_NUMERIC:
    case FERRY_COERCE_SQLITE_TEXT:
        if (in->type == FERRY_INT) {
            snprintf(scratch, FERRY_COERCE_SCRATCH, "%" PRId64, in->u.i);
        } else if (in->type == FERRY_FLOAT && code != FERRY_COERCE_SQLITE_TEXT) {
            ferry_double_text(in->u.f, scratch, FERRY_COERCE_SCRATCH);
            if (code == FERRY_COERCE_PG_NUMERIC && isfinite(in->u.f)) {
                char dec[40];

                snprintf(dec, sizeof(dec), "%s", scratch);
                pg_numeric_text(dec, scratch, FERRY_COERCE_SCRATCH);
            }
        } else {
            if (code == FERRY_COERCE_PG_TEXT && in->type == FERRY_BLOB)
                out->type = FERRY_TEXT;
            if (code == FERRY_COERCE_PG_BYTEA && in->type == FERRY_TEXT)
                out->type = FERRY_BLOB;
            return;
        }
        out->type = code == FERRY_COERCE_PG_BYTEA ? FERRY_BLOB : FERRY_TEXT;
        out->u.s.p = scratch;
        out->u.s.n = strlen(scratch);
        return;
    case FERRY_COERCE_SQLITE_NUMERIC:
        if (in->type == FERRY_FLOAT)
            sqlite_whole(in->u.f, out);
        else if (in->type == FERRY_TEXT)
            sqlite_numeric_text(in->u.s.n ? in->u.s.p : "", in->u.s.n, scratch, out);
        return;
    case FERRY_COERCE_PG_FLOAT4:
        /* float4in's strtof of the text the applier writes (shortest for a double) */
        if (in->type == FERRY_INT)
            snprintf(scratch, FERRY_COERCE_SCRATCH, "%" PRId64, in->u.i);
        else if (in->type == FERRY_FLOAT && isfinite(in->u.f))
            ferry_double_text(in->u.f, scratch, FERRY_COERCE_SCRATCH);
        else
            return;
        out->type = FERRY_FLOAT;
        out->u.f = (double)strtof(scratch, NULL);
        return;
    case FERRY_COERCE_PG_FLOAT8:
    case FERRY_COERCE_SQLITE_REAL:
        /* REAL affinity: NUMERIC's conversion of a text, then any number as a double */
        if (code == FERRY_COERCE_SQLITE_REAL && in->type == FERRY_TEXT)
            sqlite_numeric_text(in->u.s.n ? in->u.s.p : "", in->u.s.n, scratch, out);
        if (out->type == FERRY_INT) {
            out->type = FERRY_FLOAT;
            out->u.f = (double)out->u.i;
        } else if (code == FERRY_COERCE_SQLITE_REAL && out->type == FERRY_FLOAT && out->u.f == 0) {
            out->u.f = 0.0;
        }
        return;
    default:
        return;
    }
}

/* Whether decltype is name, or name followed by a typmod ("character varying(20)"). */
static int pg_type_is(const char *decltype, const char *name, int typmod_ok)
{
    size_t n = strlen(name);

    return strncmp(decltype, name, n) == 0 &&
           (decltype[n] == '\0' || (typmod_ok && decltype[n] == '('));
}

/* SQLite's affinity rules (datatype3.html 3.1), in their order. */
static int has_ci(const char *s, const char *sub)
{
    size_t n = strlen(sub);

    for (; *s; s++)
        if (strncasecmp(s, sub, n) == 0)
            return 1;
    return 0;
}

int ferry_coerce_for(int target_engine, const char *decltype)
{
    const char *t = decltype ? decltype : "";

    if (target_engine == FERRY_ENGINE_PG) {
        /* format_type's names; a domain or an array is named otherwise: none */
        if (pg_type_is(t, "text", 0) || pg_type_is(t, "character varying", 1))
            return FERRY_COERCE_PG_TEXT;
        if (pg_type_is(t, "bytea", 0))
            return FERRY_COERCE_PG_BYTEA;
        if (pg_type_is(t, "double precision", 0))
            return FERRY_COERCE_PG_FLOAT8;
        if (pg_type_is(t, "real", 0))
            return FERRY_COERCE_PG_FLOAT4;
        if (pg_type_is(t, "numeric", 0))
            return FERRY_COERCE_PG_NUMERIC;
        /* format_type's "numeric(10,2)", "character(5)"; larger scales and lengths: none */
        {
            int p, sc, n, len = -1;

            if (sscanf(t, "numeric(%d,%d)%n", &p, &sc, &len) == 2 && len > 0 && !t[len] &&
                sc >= 0 && sc <= FERRY_COERCE_SCALE_MAX)
                return FERRY_COERCE_PG_NUMERIC_SCALE + sc;
            len = -1;
            if (sscanf(t, "character(%d)%n", &n, &len) == 1 && len > 0 && !t[len] && n >= 1 &&
                n <= FERRY_COERCE_CHAR_MAX)
                return FERRY_COERCE_PG_CHAR + n;
        }
        return FERRY_COERCE_NONE;
    }
    if (target_engine == FERRY_ENGINE_SQLITE) {
        if (has_ci(t, "INT"))
            return FERRY_COERCE_SQLITE_NUMERIC; /* INTEGER affinity stores as NUMERIC does */
        if (has_ci(t, "CHAR") || has_ci(t, "CLOB") || has_ci(t, "TEXT"))
            return FERRY_COERCE_SQLITE_TEXT;
        if (has_ci(t, "BLOB") || !*t)
            return FERRY_COERCE_NONE; /* BLOB: values are kept as they are */
        if (has_ci(t, "REAL") || has_ci(t, "FLOA") || has_ci(t, "DOUB"))
            return FERRY_COERCE_SQLITE_REAL;
        return FERRY_COERCE_SQLITE_NUMERIC;
    }
    return FERRY_COERCE_NONE;
}

int ferry_rowhash_coerced(struct ferry_rowhash *h, const unsigned char *codes,
                          const struct ferry_value *vals, size_t n, uint64_t *out,
                          struct ferry_error *err)
{
    if (!codes)
        return ferry_rowhash_row(h, vals, n, out, err);
    if (n > h->ncv) {
        struct ferry_value *cv = realloc(h->cv, n * sizeof(*cv));
        char *sc;

        if (!cv)
            return ferry_error_set(err, FERRY_ENOMEM, "out of memory hashing a row");
        h->cv = cv;
        sc = realloc(h->scratch, n * (size_t)FERRY_COERCE_SCRATCH);
        if (!sc)
            return ferry_error_set(err, FERRY_ENOMEM, "out of memory hashing a row");
        h->scratch = sc;
        h->ncv = n;
    }
    for (size_t i = 0; i < n; i++)
        ferry_coerce_value(codes[i], &vals[i], h->scratch + i * (size_t)FERRY_COERCE_SCRATCH,
                           &h->cv[i]);
    return ferry_rowhash_row(h, h->cv, n, out, err);
}

static int rowhash_fn(void *arg, const struct ferry_value *vals, size_t n, int64_t *out,
                      struct ferry_error *err)
{
    const unsigned char *spec;
    uint64_t h = 0;
    int rc;

    if (n < 1 || vals[0].type != FERRY_BLOB ||
        (vals[0].u.s.n != SPEC_HEAD && vals[0].u.s.n != SPEC_HEAD + n - 1))
        return ferry_error_set(err, FERRY_EINTERNAL,
                               "checksum: " ROWHASH_FN " takes a blob of the hash, its key and "
                               "no code or one code per value");
    spec = (const unsigned char *)vals[0].u.s.p;
    ferry_rowhash_set(arg, spec[0], spec + 1);
    rc = ferry_rowhash_coerced(arg, vals[0].u.s.n > SPEC_HEAD ? spec + SPEC_HEAD : NULL, vals + 1,
                               n - 1, &h, err);
    *out = (int64_t)h;
    return rc;
}

/* Keep key (one INT) in r, or give up on r. */
static void rec_add(struct rec *r, const struct ferry_value *key)
{
    if (key[0].type != FERRY_INT) {
        r->ok = 0;
        return;
    }
    if (r->n == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 4096;
        int64_t *nk;

        if (cap * sizeof(*nk) > owned_max)
            cap = owned_max / sizeof(*nk);
        nk = cap > r->n ? realloc(r->keys, cap * sizeof(*nk)) : NULL;
        if (!nk) {
            r->ok = 0;
            return;
        }
        r->keys = nk;
        r->cap = cap;
    }
    if (r->n && key[0].u.i <= r->keys[r->n - 1])
        r->sorted = 0;
    r->keys[r->n++] = key[0].u.i;
}

static int rowsink_fn(void *arg, const struct ferry_value *vals, size_t n, int64_t *out,
                      struct ferry_error *err)
{
    struct sink *sk = cur_sink;
    struct ferry_value kv[FERRY_MAX_KEY_COLS];
    const struct ferry_value *key, *cols;
    size_t npk;
    uint64_t h = 0;
    int rc;

    *out = 0;
    if (!sk)
        return ferry_error_set(err, FERRY_EINTERNAL, "checksum: " ROWSINK_FN " outside a walk");
    if (n != sk->nsep + sk->nv) {
        sk->rc = ferry_error_set(sk->err, FERRY_EINTERNAL,
                                 "checksum: " ROWSINK_FN " got %zu values, the walk %zu", n,
                                 sk->nsep + sk->nv);
        return ferry_error_set(err, sk->rc, "%s", sk->err->msg);
    }
    (void)arg;
    npk = sk->npk;
    cols = vals + sk->nsep;
    key = vals;
    if (!sk->nsep) {
        for (size_t k = 0; k < npk; k++)
            kv[k] = cols[sk->pos[k]];
        key = kv;
    }
    /* the plan said key order (sink_in_order); a key of one INT checks it again */
    if (sk->ordered && npk == 1 && key[0].type == FERRY_INT) {
        if (sk->have_last && key[0].u.i <= sk->last) {
            sk->unordered = 1;
            return ferry_error_set(err, FERRY_EINTERNAL, "checksum: keys out of order");
        }
        sk->have_last = 1;
        sk->last = key[0].u.i;
    }
    rc = sk->codes ? ferry_rowhash_coerced(sk->hash, sk->codes, cols, sk->nv, &h, sk->err)
                   : ferry_rowhash_row(sk->hash, cols, sk->nv, &h, sk->err);
    if (!rc)
        rc = sk->fn(sk->arg, key, npk, h);
    if (rc) {
        sk->rc = rc;
        return ferry_error_set(err, rc, "checksum: the walk stopped");
    }
    if (sk->rec && sk->rec->ok)
        rec_add(sk->rec, key);
    return FERRY_OK;
}

/* Whether the integer k is in set o. */
static int owned_has(const struct owned *o, int64_t k)
{
    size_t lo = 0, hi = o->n;

    if (k < o->min || k > o->max)
        return 0;
    if (o->bits) {
        uint64_t d = (uint64_t)k - (uint64_t)o->min;

        return (int)((o->bits[d / 64] >> (d % 64)) & 1);
    }
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (o->keys[mid] == k)
            return 1;
        if (o->keys[mid] < k)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

static int owned_fn(void *arg, const struct ferry_value *vals, size_t n, int64_t *out,
                    struct ferry_error *err)
{
    const struct sink *sk = cur_sink;
    double d;

    *out = 0;
    if (n == 0) {
        *out = (int64_t)(intptr_t)arg;
        return FERRY_OK;
    }
    if (n != 1 || !sk || !sk->owned)
        return ferry_error_set(err, FERRY_EINTERNAL, "checksum: " OWNED_FN " outside a walk");
    if (vals[0].type == FERRY_INT) {
        *out = owned_has(sk->owned, vals[0].u.i);
    } else if (vals[0].type == FERRY_FLOAT) {
        /* SQLite's rowid seek: a REAL that is an integer strictly inside int64's range */
        d = vals[0].u.f;
        if (d > -9223372036854775808.0 && d < 9223372036854775808.0 && d == (double)(int64_t)d &&
            (int64_t)d != INT64_MIN && (int64_t)d != INT64_MAX)
            *out = owned_has(sk->owned, (int64_t)d);
    }
    return FERRY_OK;
}

static void rowhash_destroy(void *arg)
{
    ferry_rowhash_free(arg);
}

/*
 * Define ROWHASH_FN on db unless it already is (once per connection: a
 * definition again would expire every statement the connection keeps).
 * 1 when rows can be hashed in SQL, 0 when not (another engine, or the
 * definition failed: the columns are then read and hashed here, as on
 * PostgreSQL).
 */
static int define_fn(struct ferry_db *db, const char *name, ferry_db_fn fn)
{
    struct ferry_rowhash *h = NULL;
    struct ferry_stmt *probe = NULL;
    struct ferry_error err;
    char sql[64];

    snprintf(sql, sizeof(sql), "SELECT %s()", name);
    if (ferry_db_prepare(db, sql, &probe, &err) == FERRY_OK) {
        ferry_stmt_free(probe);
        return 1;
    }
    if (ferry_rowhash_new(ROW_MAX, &h, &err))
        return 0;
    /* On failure destroy has already freed h. */
    return ferry_db_function(db, name, fn, h, rowhash_destroy, &err) == FERRY_OK;
}

static void owned_free(struct conn *cn, struct owned *o)
{
    cn->bytes -= o->bytes;
    ferry_buf_release(&o->id);
    free(o->keys);
    free(o->bits);
    memset(o, 0, sizeof(*o));
}

static void conn_destroy(void *arg)
{
    struct conn *cn = arg;

    for (size_t i = 0; i < OWNED_SLOTS; i++)
        owned_free(cn, &cn->sets[i]);
    free(cn);
}

/* db's struct conn: OWNED_FN's answer, NULL when it has none. */
static struct conn *conn_ask(struct ferry_db *db)
{
    struct ferry_error err;
    int64_t p = 0;

    if (ferry_db_query_int(db, "SELECT " OWNED_FN "()", NULL, 0, &p, &err) != FERRY_OK)
        return NULL;
    return (struct conn *)(intptr_t)p;
}

/*
 * db's struct conn, with ROWSINK_FN and OWNED_FN defined (once per
 * connection: a definition again would expire every statement the
 * connection keeps). NULL when they could not be: rows are then read.
 */
static struct conn *conn_of(struct ferry_db *db)
{
    struct conn *cn = conn_ask(db);
    struct ferry_error err;

    if (cn)
        return cn;
    cn = calloc(1, sizeof(*cn));
    if (!cn)
        return NULL;
    /* ROWSINK_FN owns it: on failure destroy has already freed it */
    if (ferry_db_function(db, ROWSINK_FN, rowsink_fn, cn, conn_destroy, &err) != FERRY_OK ||
        ferry_db_function(db, OWNED_FN, owned_fn, cn, NULL, &err) != FERRY_OK)
        return NULL;
    return conn_ask(db);
}

static int rowhash_in_sql(struct ferry_db *db, struct conn **cn)
{
    *cn = NULL;
    if (ferry_db_engine(db) != FERRY_ENGINE_SQLITE || !define_fn(db, ROWHASH_FN, rowhash_fn))
        return HASH_C;
    *cn = conn_of(db);
    return *cn ? HASH_SQLITE : HASH_C;
}

static void pgcol_free(struct ferry_checksum *c)
{
    for (size_t i = 0; c->pgcol && i < c->scope->tables[c->t].info.ncols; i++)
        free(c->pgcol[i].out);
    free(c->pgcol);
    c->pgcol = NULL;
}

static int add_col(struct ferry_checksum *c, struct ferry_buf *b, size_t i);
static int build_sql(struct ferry_checksum *c, int q, int shape, struct ferry_buf *b);

/* Type OIDs from PostgreSQL's pg_type.dat: stable across releases. */
enum {
    OID_BOOL = 16,
    OID_BYTEA = 17,
    OID_INT8 = 20,
    OID_INT2 = 21,
    OID_INT4 = 23,
    OID_TEXT = 25,
    OID_OID = 26,
    OID_FLOAT4 = 700,
    OID_FLOAT8 = 701,
    OID_VARCHAR = 1043,
    OID_DATE = 1082,
    OID_TIME = 1083,
    OID_TIMESTAMP = 1114,
    OID_TIMESTAMPTZ = 1184,
    OID_INTERVAL = 1186,
    OID_UUID = 2950
};

/*
 * For each OID of an array (one row each, in its order): the base type
 * (a domain's, as the server reports a result column's type to the C
 * path), its typtype and its output function.
 */
static const char pg_base_sql[] =
    "WITH RECURSIVE b(n, o, d) AS (SELECT k.n, k.o, 0"
    " FROM pg_catalog.unnest(?::pg_catalog.oid[]) WITH ORDINALITY AS k(o, n) UNION ALL"
    " SELECT b.n, t.typbasetype, b.d + 1 FROM pg_catalog.pg_type t JOIN b ON t.oid = b.o"
    " WHERE t.typtype = 'd' AND b.d < 64)"
    " SELECT DISTINCT ON (b.n) b.o::int8, t.typtype::text,"
    " pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(p.proname)"
    " FROM b JOIN pg_catalog.pg_type t ON t.oid = b.o"
    " JOIN pg_catalog.pg_proc p ON p.oid = t.typoutput"
    " JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace ORDER BY b.n, b.d DESC";

/*
 * Rows are hashed in SQL on PostgreSQL only when PG_IN_SQL_ENV is "1": it
 * moves the work from the agent to the server, and there it costs more
 * than the text output it saves (bench/verify.sh --pg: a 1.2M-row team's
 * verify went from about 4 s to about 6 s of wall time while the agents'
 * CPU went from 2.1 s to 0.4 s; the server's SHA-256 sets up a context
 * per call and every bytea operation allocates). Off, the columns are read
 * and hashed in C, as before.
 */
#define PG_IN_SQL_ENV "FERRY_PG_HASH_IN_SQL"

static int pg_in_sql_wanted(void)
{
    const char *s = getenv(PG_IN_SQL_ENV);

    return s && strcmp(s, "1") == 0;
}

/*
 * Set up hashing in SQL on PostgreSQL: the type of every hashed value
 * (column or mask) and how it is encoded (enum pg_enc). Decided once per
 * table. Returns 0 when done, else why not, for the debug log; the columns
 * are then read and hashed in C. Not in SQL: a server or client encoding
 * other than UTF8 (the lengths would be the server's), a value of type
 * xid, xid8 or a pseudo-type. (sha256() came in 11; the connection refuses
 * servers before 12.)
 */
static const char *pg_plan(struct ferry_checksum *c, struct ferry_error *err)
{
    const struct ferry_table_info *ti = &c->scope->tables[c->t].info;
    struct ferry_stmt *st = NULL;
    struct ferry_buf sql;
    const char *why = NULL;
    const char *enc;
    int64_t *oids = NULL;
    int row = 0;
    int rc;

    /* the encodings the server reported (the connection refuses servers before 12) */
    enc = ferry_db_server_param(c->db, "server_encoding");
    if (!enc || strcmp(enc, "UTF8") != 0)
        return "a server not in UTF8";
    enc = ferry_db_server_param(c->db, "client_encoding");
    if (!enc || strcmp(enc, "UTF8") != 0)
        return "a client encoding other than UTF8";
    c->pgcol = calloc(ti->ncols, sizeof(*c->pgcol));
    oids = calloc(ti->ncols, sizeof(*oids));
    if (!c->pgcol || !oids) {
        free(oids);
        return "out of memory";
    }
    /* The values' types, from an outer join to no row: pg_typeof of its NULLs. */
    ferry_buf_init(&sql, SQL_MAX);
    rc = ferry_buf_adds(&sql, "SELECT ");
    for (size_t i = 0; i < ti->ncols && !rc; i++)
        rc = ferry_buf_addf(&sql, "%spg_catalog.pg_typeof(\"_ferry_x\".\"c%zu\")::oid::int8",
                            i ? ", " : "", i);
    if (!rc)
        rc = ferry_buf_adds(&sql, " FROM (SELECT 1) AS \"_ferry_one\" LEFT JOIN (SELECT ");
    for (size_t i = 0; i < ti->ncols && !rc; i++) {
        rc = ferry_buf_adds(&sql, i ? ", " : "");
        if (!rc)
            rc = add_col(c, &sql, i);
        if (!rc)
            rc = ferry_buf_addf(&sql, " AS \"c%zu\"", i);
    }
    if (!rc)
        rc = ferry_buf_adds(&sql, " FROM ");
    if (!rc)
        rc = ferry_buf_add_ident(&sql, ti->name);
    if (!rc)
        rc = ferry_buf_adds(&sql, " AS \"_ferry_s\" LIMIT 0) AS \"_ferry_x\" ON true");
    if (rc || ferry_db_prepare(c->db, sql.data, &st, err) || ferry_stmt_step(st, &row, err) ||
        !row) {
        ferry_buf_release(&sql);
        ferry_stmt_free(st);
        free(oids);
        return "the values' types could not be read";
    }
    ferry_buf_release(&sql);
    for (size_t i = 0; i < ti->ncols; i++) {
        struct ferry_value v;

        ferry_stmt_column(st, (int)i, &v);
        if (v.type != FERRY_INT) {
            why = "a value's type could not be read";
            break;
        }
        oids[i] = v.u.i;
    }
    ferry_stmt_free(st);
    st = NULL;
    if (why)
        goto out;
    /* one statement for every column: '{oid,oid,...}' */
    ferry_buf_init(&sql, SQL_MAX);
    rc = ferry_buf_adds(&sql, "{");
    for (size_t i = 0; i < ti->ncols && !rc; i++)
        rc = ferry_buf_addf(&sql, "%s%lld", i ? "," : "", (long long)oids[i]);
    if (!rc)
        rc = ferry_buf_adds(&sql, "}");
    if (!rc) {
        struct ferry_value arr = ferry_value_text(sql.data, sql.len);

        rc = ferry_db_prepare(c->db, pg_base_sql, &st, err);
        if (!rc)
            rc = ferry_stmt_bind(st, 1, &arr, err);
    }
    ferry_buf_release(&sql);
    if (rc) {
        ferry_stmt_free(st);
        why = "the catalog query of the values' types failed";
        goto out;
    }
    for (size_t i = 0; i < ti->ncols && !why; i++) {
        struct ferry_value base, kind, out;

        c->pgcol[i].out = NULL;
        c->pgcol[i].base = 0;
        if (ferry_stmt_step(st, &row, err) || !row) {
            why = "the catalog query of the values' types failed";
            break;
        }
        ferry_stmt_column(st, 0, &base);
        ferry_stmt_column(st, 1, &kind);
        ferry_stmt_column(st, 2, &out);
        if (base.type != FERRY_INT || kind.type != FERRY_TEXT || out.type != FERRY_TEXT) {
            why = "the catalog query of the values' types failed";
            break;
        }
        c->pgcol[i].base = base.u.i;
        switch (base.u.i) {
        case OID_INT2:
        case OID_INT4:
        case OID_INT8:
        case OID_OID:
            c->pgcol[i].enc = PG_INT;
            break;
        case OID_BOOL:
            c->pgcol[i].enc = PG_BOOL;
            break;
        case OID_FLOAT4:
        case OID_FLOAT8:
            c->pgcol[i].enc = PG_FLOAT;
            break;
        case OID_BYTEA:
            c->pgcol[i].enc = PG_BYTEA;
            break;
        case OID_TEXT:
        case OID_VARCHAR:
            c->pgcol[i].enc = PG_TEXT;
            break;
        case 28:   /* xid: the C path reads an integer */
        case 5069: /* xid8: idem, up to 2^64 - 1 */
            why = "a value of type xid or xid8";
            break;
        default:
            if (kind.u.s.n == 1 && kind.u.s.p[0] == 'p') {
                why = "a value of a pseudo-type";
                break;
            }
            c->pgcol[i].enc = PG_OUT;
            c->pgcol[i].out = strndup(out.u.s.p, out.u.s.n);
            if (!c->pgcol[i].out)
                why = "out of memory";
            break;
        }
    }
    ferry_stmt_free(st);
out:
    free(oids);
    return why;
}

/*
 * The key columns of a PostgreSQL table whose collation does not order
 * text by its bytes. The two sides of a verify must put every key in the
 * same range: SQLite compares text by its bytes (BINARY), and two
 * PostgreSQL databases may each have their own default collation. Their
 * ranges then compare such a column COLLATE "C" (bytes), at the price of a
 * sort where the key's index has the other order. A catalog that cannot
 * be read leaves the columns as they are (c->bytewise NULL).
 */
static const char pg_collated_keys_sql[] =
    "SELECT a.attname FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_collation co"
    " ON co.oid = a.attcollation WHERE a.attrelid = ?::pg_catalog.regclass AND a.attnum > 0"
    " AND NOT a.attisdropped AND NOT CASE WHEN co.collprovider = 'd' THEN (SELECT %s"
    " FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())"
    " ELSE co.collprovider = 'b' OR (co.collprovider = 'c' AND (co.collcollate IN ('C',"
    " 'POSIX') OR co.collcollate LIKE 'C.%%')) END";

static void collate_keys(struct ferry_checksum *c)
{
    const struct ferry_table_info *ti = &c->scope->tables[c->t].info;
    struct ferry_stmt *st = NULL;
    struct ferry_error err;
    struct ferry_buf name, sql;
    struct ferry_value arg;
    size_t k = 0;
    int row = 0;

    /* key types equal only when identical have no collation: no catalog query (every digest) */
    while (k < c->npk && ferry_scope_pg_key_exact(ti->cols[ferry_table_pkcol(ti, k)].type))
        k++;
    if (k == c->npk)
        return;
    ferry_buf_init(&name, 256);
    ferry_buf_init(&sql, 2048);
    if (ferry_buf_add_ident(&name, ti->name) ||
        ferry_buf_addf(&sql, pg_collated_keys_sql,
                       ferry_db_server_version(c->db) >= 150000
                           ? "d.datlocprovider = 'b' OR (d.datlocprovider = 'c' AND"
                             " (d.datcollate IN ('C', 'POSIX') OR d.datcollate LIKE 'C.%'))"
                           : "d.datcollate IN ('C', 'POSIX') OR d.datcollate LIKE 'C.%'"))
        goto out;
    arg = ferry_value_text(name.data, name.len);
    if (ferry_db_prepare(c->db, sql.data, &st, &err) || ferry_stmt_bind(st, 1, &arg, &err))
        goto out;
    while (ferry_stmt_step(st, &row, &err) == FERRY_OK && row) {
        struct ferry_value v;

        ferry_stmt_column(st, 0, &v);
        for (k = 0; k < c->npk && v.type == FERRY_TEXT; k++) {
            const char *col = ti->cols[ferry_table_pkcol(ti, k)].name;

            if (strlen(col) != v.u.s.n || memcmp(col, v.u.s.p, v.u.s.n) != 0)
                continue;
            if (!c->bytewise)
                c->bytewise = calloc(c->npk, 1);
            if (c->bytewise)
                c->bytewise[k] = 1;
        }
    }
out:
    ferry_stmt_free(st);
    ferry_buf_release(&name);
    ferry_buf_release(&sql);
}

/* The key's columns of the row, "_ferry_s".k, ..., each COLLATE "C" where collate_keys says. */
static int add_keys(struct ferry_checksum *c, struct ferry_buf *b)
{
    const struct ferry_table_info *ti = &c->scope->tables[c->t].info;
    int rc = FERRY_OK;

    if (!c->bytewise)
        return ferry_scope_keylist(c->scope, c->t, "\"_ferry_s\".", b);
    for (size_t k = 0; k < c->npk && !rc; k++) {
        rc = ferry_buf_adds(b, k ? ", \"_ferry_s\"." : "\"_ferry_s\".");
        if (!rc)
            rc = ferry_buf_add_ident(b, ti->cols[ferry_table_pkcol(ti, k)].name);
        if (!rc && c->bytewise[k])
            rc = ferry_buf_adds(b, " COLLATE pg_catalog.\"C\"");
    }
    return rc;
}

void ferry_checksum_free(struct ferry_checksum *c)
{
    if (!c)
        return;
    for (int q = 0; q < NQ; q++)
        for (int s = 0; s < NSHAPE; s++)
            ferry_stmt_free(c->st[q][s]);
    ferry_rowhash_free(c->hash);
    ferry_buf_release(&c->parent_id);
    ferry_buf_release(&c->own_id);
    pgcol_free(c);
    free(c->coerce);
    free(c->hide);
    free(c->bytewise);
    free(c->tenant_bytes);
    for (size_t i = 0; c->masks && i < c->scope->tables[c->t].info.ncols; i++)
        free(c->masks[i]);
    free(c->masks);
    free(c);
}

int ferry_checksum_new(struct ferry_db *db, const struct ferry_scope *s, size_t t,
                       const struct ferry_value *tenant, const char *const *masks,
                       struct ferry_checksum **out, struct ferry_error *err)
{
    struct ferry_checksum *c;

    *out = NULL;
    if (t >= s->ntables)
        return ferry_error_set(err, FERRY_EINTERNAL, "checksum: no table %zu in scope", t);
    c = calloc(1, sizeof(*c));
    if (!c)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
    c->db = db;
    c->scope = s;
    c->t = t;
    c->npk = ferry_table_npk(&s->tables[t].info);
    c->small_parent = -1;
    for (int k = 0; k < NSHAPE; k++)
        c->in_order[k] = -1;
    c->set_parent = -2;
    c->records = -1;
    ferry_buf_init(&c->parent_id, SQL_MAX);
    ferry_buf_init(&c->own_id, SQL_MAX);
    c->tenant = *tenant;
    c->in_sql = rowhash_in_sql(db, &c->conn);
    /* SQLite passes at most SQLITE_MAX_FUNCTION_ARG (127 by default) values to a function */
    if (c->in_sql == HASH_SQLITE && s->tables[t].info.ncols + 1 > SQLITE_FN_MAX_ARGS)
        c->in_sql = HASH_C;
    {
        int rc = ferry_rowhash_new(ROW_MAX, &c->hash, err);

        if (rc) {
            ferry_checksum_free(c);
            return rc;
        }
    }
    if (tenant->type == FERRY_TEXT || tenant->type == FERRY_BLOB) {
        c->tenant_bytes = malloc(tenant->u.s.n ? tenant->u.s.n : 1);
        if (!c->tenant_bytes) {
            ferry_checksum_free(c);
            return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        }
        if (tenant->u.s.n)
            memcpy(c->tenant_bytes, tenant->u.s.p, tenant->u.s.n);
        c->tenant.u.s.p = c->tenant_bytes;
    }
    for (size_t i = 0; masks && i < s->tables[t].info.ncols; i++) {
        if (!masks[i])
            continue;
        if (!c->masks)
            c->masks = calloc(s->tables[t].info.ncols, sizeof(*c->masks));
        if (!c->masks || !(c->masks[i] = strdup(masks[i]))) {
            ferry_checksum_free(c);
            return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        }
    }
    if (ferry_db_engine(db) == FERRY_ENGINE_PG)
        collate_keys(c);
    if (ferry_db_engine(db) == FERRY_ENGINE_PG && pg_in_sql_wanted()) {
        struct ferry_error perr;
        const char *why;

        memset(&perr, 0, sizeof(perr));
        why = pg_plan(c, &perr);
        if (why) {
            pgcol_free(c);
            log_debug("checksum: rows of %s read and hashed in C, not in SQL: %s%s%s",
                      s->tables[t].info.name, why, perr.msg[0] ? ": " : "", perr.msg);
        } else {
            c->in_sql = HASH_PG;
        }
    }
    *out = c;
    return FERRY_OK;
}

int ferry_checksum_by_set(const struct ferry_checksum *c)
{
    return c->by_set;
}

size_t ferry_checksum_set_max(size_t bytes)
{
    size_t old = owned_max;

    owned_max = bytes;
    return old;
}

void ferry_checksum_hash_in_c(struct ferry_checksum *c)
{
    for (int q = 0; q < NQ; q++)
        for (int k = 0; k < NSHAPE; k++) {
            ferry_stmt_free(c->st[q][k]);
            c->st[q][k] = NULL;
        }
    c->in_sql = HASH_C;
}

int ferry_checksum_coerce(struct ferry_checksum *c, const unsigned char *codes, size_t n,
                          struct ferry_error *err)
{
    const struct ferry_table_info *ti = &c->scope->tables[c->t].info;
    int any = 0, in_c = 0;

    if (n != ti->ncols)
        return ferry_error_set(err, FERRY_EDATA, "coercions of %zu columns for %s, it has %zu", n,
                               ti->name, ti->ncols);
    for (size_t i = 0; i < n; i++) {
        if (!ferry_coerce_known(codes[i]))
            return ferry_error_set(err, FERRY_EDATA, "coercion %d of %s.%s is not known here",
                                   (int)codes[i], ti->name, ti->cols[i].name);
        any = any || codes[i];
        /* what the SQL encoding of the column could give that the coercion would change */
        if (codes[i] && c->in_sql == HASH_PG) {
            enum pg_enc e = c->pgcol[i].enc;

            in_c =
                in_c || !((codes[i] == FERRY_COERCE_SQLITE_TEXT && e != PG_INT && e != PG_BOOL) ||
                          (codes[i] == FERRY_COERCE_SQLITE_REAL && e == PG_BYTEA) ||
                          (codes[i] == FERRY_COERCE_SQLITE_NUMERIC &&
                           (e == PG_INT || e == PG_BOOL || e == PG_BYTEA)));
        }
    }
    if (any && c->alg == FERRY_HASH_PGREC)
        return ferry_error_set(err, FERRY_EDATA, "coercions of %s with hash \"%s\"", ti->name,
                               FERRY_HASH_PGREC_NAME);
    free(c->coerce);
    c->coerce = NULL;
    if (any) {
        c->coerce = malloc(n);
        if (!c->coerce)
            return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        memcpy(c->coerce, codes, n);
    }
    /* statements are built anew: the SQLite function changes, or hashing moves to C */
    for (int q = 0; q < NQ; q++)
        for (int k = 0; k < NSHAPE; k++) {
            ferry_stmt_free(c->st[q][k]);
            c->st[q][k] = NULL;
        }
    if (in_c) {
        log_debug("checksum: rows of %s read and hashed in C, not in SQL: values coerced",
                  ti->name);
        pgcol_free(c);
        c->in_sql = HASH_C;
    }
    return FERRY_OK;
}

int ferry_checksum_only(struct ferry_checksum *c, const unsigned char *keep, size_t n,
                        struct ferry_error *err)
{
    const struct ferry_table_info *ti = &c->scope->tables[c->t].info;

    if (n != ti->ncols)
        return ferry_error_set(err, FERRY_EDATA, "columns to hash: %zu for %s, it has %zu", n,
                               ti->name, ti->ncols);
    for (size_t k = 0; k < c->npk; k++)
        if (!keep[ferry_table_pkcol(ti, k)])
            return ferry_error_set(err, FERRY_EDATA, "columns to hash of %s: not its key's %s",
                                   ti->name, ti->cols[ferry_table_pkcol(ti, k)].name);
    free(c->hide);
    c->hide = calloc(n, 1);
    if (!c->hide)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++)
        c->hide[i] = !keep[i];
    for (int q = 0; q < NQ; q++)
        for (int k = 0; k < NSHAPE; k++) {
            ferry_stmt_free(c->st[q][k]);
            c->st[q][k] = NULL;
        }
    /* a hidden column's NULL has a type of its own: the plan is made anew */
    if (c->pgcol) {
        struct ferry_error perr;

        pgcol_free(c);
        if (c->in_sql == HASH_PG && pg_plan(c, &perr)) {
            pgcol_free(c);
            c->in_sql = HASH_C;
        }
    }
    return FERRY_OK;
}

int ferry_checksum_hashed_in_sql(const struct ferry_checksum *c)
{
    return c->in_sql != HASH_C;
}

/*
 * Why FERRY_HASH_PGREC cannot hash c's rows, or NULL when it can (the
 * columns' encodings planned: c->pgcol).
 */
static const char *pgrec_why(struct ferry_checksum *c)
{
    struct ferry_error perr;
    const char *why;

    if (ferry_db_engine(c->db) != FERRY_ENGINE_PG)
        return "not PostgreSQL";
    if (c->coerce)
        return "values coerced";
    /* a mask's value need not have the type the target stores it as */
    if (c->masks)
        return "masked columns";
    if (ferry_db_server_version(c->db) < 140000)
        return "a server before PostgreSQL 14 (no hash_record_extended)";
    if (c->pgcol)
        return NULL;
    why = pg_plan(c, &perr);
    if (why)
        pgcol_free(c);
    return why;
}

int ferry_checksum_set_hash(struct ferry_checksum *c, int alg, const unsigned char *key,
                            struct ferry_error *err)
{
    const char *name = c->scope->tables[c->t].info.name;

    if (alg != FERRY_HASH_SHA256 &&
        ((alg != FERRY_HASH_SIPHASH13 && alg != FERRY_HASH_PGREC) || !key))
        return ferry_error_set(err, FERRY_EDATA, "checksum: no hash %d with%s key", alg,
                               key ? " a" : "out a");
    if (alg == FERRY_HASH_PGREC) {
        const char *why = pgrec_why(c);

        if (why)
            return ferry_error_set(err, FERRY_EDATA,
                                   "checksum: hash \"%s\" cannot hash the rows of %s here: %s",
                                   FERRY_HASH_PGREC_NAME, name, why);
    }
    c->alg = alg;
    memset(c->key, 0, sizeof(c->key));
    if (alg != FERRY_HASH_SHA256)
        memcpy(c->key, key, sizeof(c->key));
    /* FERRY_HASH_PGREC has no C form: its rows are hashed in SQL only (below) */
    ferry_rowhash_set(c->hash, alg, c->key);
    /* statements are built anew with the hash in their text */
    for (int q = 0; q < NQ; q++)
        for (int k = 0; k < NSHAPE; k++) {
            ferry_stmt_free(c->st[q][k]);
            c->st[q][k] = NULL;
        }
    if (alg == FERRY_HASH_PGREC) {
        c->in_sql = HASH_PG;
    } else if (c->in_sql == HASH_PG && (alg != FERRY_HASH_SHA256 || !pg_in_sql_wanted())) {
        /* the SHA-256 encoding in SQL is opt-in (PG_IN_SQL_ENV); SipHash is computed in C */
        log_debug("checksum: rows of %s read and hashed in C, not in SQL", name);
        pgcol_free(c);
        c->in_sql = HASH_C;
    }
    return FERRY_OK;
}

static int add_bound_at(struct ferry_checksum *c, struct ferry_buf *b, const char *op,
                        size_t first);

/* Append " AND (k1, k2) op (?, ?)" (no parentheses for a one-column key). */
static int add_bound(struct ferry_checksum *c, struct ferry_buf *b, const char *op)
{
    return add_bound_at(c, b, op, 0);
}

/*
 * The joins, their conditions and the last comparison that keep the rows
 * the tenant owns (add_owner_join appends them as one WHERE):
 *   CROSS JOIN "parent" AS "_ferry_j1" ... WHERE "_ferry_j1"."pk" = "_ferry_s"."fk"
 *   AND ... AND "_ferry_jN"."root_pk" = ?
 * the same rule as ferry_scope_owner (every hop must exist; a NULL key
 * joins nothing), but joined: SQLite keeps one cursor per hop open for the
 * whole scan where the correlated form opens and closes them for every row
 * (half the cost of the filter), and CROSS JOIN keeps the table itself the
 * outer loop, so an ORDER BY on its key needs no sort. A path that ends at
 * a table scoped by an operator's predicate ends with that table's owner
 * expression.
 *
 * The last hop, to the root, is no join but a comparison with the
 * tenant's own root row, looked up once per execution:
 *   "_ferry_jN"."fk" = (SELECT "_ferry_r"."pk" FROM "root" AS "_ferry_r"
 *                       WHERE "_ferry_r"."root_pk" = ?)
 * the same rows (the root row must exist, its key is the tenant; the
 * subquery's value compares with the root column's type and affinity, as
 * the join did), one key lookup fewer per row read. A foreign key of
 * several columns to the root keeps the join.
 */
/* Most rows of a parent whose keys in_list_hop() reads at every execution. */
#define IN_LIST_MAX_ROWS 4096

/*
 * Whether the hop from table cur to its parent, a child of the root, is
 * better written (SQLite) as
 *   ctx"fk" IN (SELECT "_ferry_i"."pk" FROM "parent" AS "_ferry_i"
 *               WHERE <the parent's root hop>)
 * than as a join: SQLite reads the parent's keys of the tenant once per
 * execution into an index of its own, and a row then costs a look-up
 * there instead of a seek, a column read and a comparison (posts ->
 * channels: 60 -> 35 ns a row). The same rows: the parent row must exist
 * and be the tenant's. Only for a parent of at most IN_LIST_MAX_ROWS rows
 * (every execution reads all of them, and bisection executes many times)
 * whose key is its INTEGER PRIMARY KEY (integers: no collation, and the
 * comparison's affinity is the join's).
 */
static int in_list_hop(struct ferry_checksum *c, size_t cur)
{
    const struct ferry_scope *s = c->scope;
    const struct ferry_scope_table *st = &s->tables[cur];
    const struct ferry_fkey *fk = &st->info.fks[st->fk];
    const struct ferry_scope_table *pt = &s->tables[st->parent];
    const struct ferry_table_info *pi = &pt->info;
    struct ferry_error err;
    struct ferry_buf sql;
    int64_t rows = 0;
    int rc;

    if (ferry_db_engine(c->db) != FERRY_ENGINE_SQLITE || st->parent <= 0 || pt->parent != 0 ||
        pi->fks[pt->fk].ncols != 1 || fk->ncols != 1 || pi->without_rowid ||
        ferry_table_npk(pi) != 1 ||
        strcmp(pi->cols[ferry_table_pkcol(pi, 0)].name, fk->pcols[0]) != 0 ||
        !pi->cols[ferry_table_pkcol(pi, 0)].type ||
        strcasecmp(pi->cols[ferry_table_pkcol(pi, 0)].type, "INTEGER") != 0)
        return 0;
    if (c->small_parent >= 0)
        return c->small_parent;
    ferry_buf_init(&sql, SQL_MAX);
    rc = ferry_buf_adds(&sql, "SELECT count(*) FROM (SELECT 1 FROM ");
    if (!rc)
        rc = ferry_buf_add_ident(&sql, pi->name);
    if (!rc)
        rc = ferry_buf_addf(&sql, " LIMIT %d)", IN_LIST_MAX_ROWS + 1);
    c->small_parent = !rc &&
                      ferry_db_query_int(c->db, sql.data, NULL, 0, &rows, &err) == FERRY_OK &&
                      rows <= IN_LIST_MAX_ROWS;
    ferry_buf_release(&sql);
    return c->small_parent;
}

/*
 * The owner check of table `from`, whose row is "_ferry_s" (c's table, or
 * its parent for owned_id). by_set: the first hop is OWNED_FN of the
 * foreign key (set_hop), which stands for the whole check.
 */
static int owner_parts(struct ferry_checksum *c, size_t from, int by_set, struct ferry_buf *joins,
                       struct ferry_buf *eqs, struct ferry_buf *last)
{
    const struct ferry_scope *s = c->scope;
    struct ferry_buf alias;
    size_t cur = from;
    int hop = 0;
    int rc = FERRY_OK;

    if (by_set) {
        const struct ferry_scope_table *st = &s->tables[from];

        rc = ferry_buf_adds(last, OWNED_FN "(\"_ferry_s\".");
        if (!rc)
            rc = ferry_buf_add_ident(last, st->info.fks[st->fk].cols[0]);
        if (!rc)
            rc = ferry_buf_adds(last, ")");
        return rc;
    }
    ferry_buf_init(&alias, 64);
    rc = ferry_buf_adds(&alias, "\"_ferry_s\".");
    while (!rc && cur != 0 && s->tables[cur].parent >= 0) {
        const struct ferry_scope_table *st = &s->tables[cur];
        const struct ferry_fkey *fk = &st->info.fks[st->fk];
        size_t parent = (size_t)st->parent;
        char palias[32];

        if (parent == 0 && fk->ncols == 1) {
            rc = ferry_scope_root_hop(s, alias.data, fk, last);
            ferry_buf_release(&alias);
            return rc;
        }
        if (in_list_hop(c, cur)) {
            const struct ferry_scope_table *pt = &s->tables[parent];

            rc = ferry_buf_adds(last, alias.data);
            if (!rc)
                rc = ferry_buf_add_ident(last, fk->cols[0]);
            if (!rc)
                rc = ferry_buf_adds(last, " IN (SELECT \"_ferry_i\".");
            if (!rc)
                rc = ferry_buf_add_ident(last, fk->pcols[0]);
            if (!rc)
                rc = ferry_buf_adds(last, " FROM ");
            if (!rc)
                rc = ferry_buf_add_ident(last, pt->info.name);
            if (!rc)
                rc = ferry_buf_adds(last, " AS \"_ferry_i\" WHERE ");
            if (!rc)
                rc = ferry_scope_root_hop(s, "\"_ferry_i\".", &pt->info.fks[pt->fk], last);
            if (!rc)
                rc = ferry_buf_adds(last, ")");
            ferry_buf_release(&alias);
            return rc;
        }
        snprintf(palias, sizeof(palias), "\"_ferry_j%d\".", ++hop);
        rc = ferry_buf_adds(joins, " CROSS JOIN ");
        if (!rc)
            rc = ferry_buf_add_ident(joins, s->tables[parent].info.name);
        if (!rc)
            rc = ferry_buf_addf(joins, " AS \"_ferry_j%d\"", hop);
        for (size_t i = 0; i < fk->ncols && !rc; i++) {
            rc = ferry_buf_addf(eqs, "%s%s", eqs->len ? " AND " : "", palias);
            if (!rc)
                rc = ferry_buf_add_ident(eqs, fk->pcols[i]);
            if (!rc)
                rc = ferry_buf_addf(eqs, " = %s", alias.data);
            if (!rc)
                rc = ferry_buf_add_ident(eqs, fk->cols[i]);
        }
        ferry_buf_reset(&alias);
        if (!rc)
            rc = ferry_buf_adds(&alias, palias);
        cur = parent;
    }
    if (!rc)
        rc = ferry_scope_owner(s, cur, alias.data, last);
    if (!rc)
        rc = ferry_buf_adds(last, " = ?");
    ferry_buf_release(&alias);
    return rc;
}

static int add_owner_join(struct ferry_checksum *c, struct ferry_buf *b)
{
    struct ferry_buf eqs, last;
    int rc;

    ferry_buf_init(&eqs, SQL_MAX);
    ferry_buf_init(&last, SQL_MAX);
    rc = owner_parts(c, c->t, 0, b, &eqs, &last);
    if (!rc)
        rc = ferry_buf_addf(b, " WHERE %s%s%s", eqs.len ? eqs.data : "", eqs.len ? " AND " : "",
                            last.data);
    ferry_buf_release(&eqs);
    ferry_buf_release(&last);
    return rc;
}

/*
 * Append the value column i is hashed as: the column, its mask over the
 * row's columns, or NULL when ferry_checksum_only hides it.
 */
static int add_col(struct ferry_checksum *c, struct ferry_buf *b, size_t i)
{
    const struct ferry_table_info *ti = &c->scope->tables[c->t].info;
    int rc;

    if (c->hide && c->hide[i])
        return ferry_buf_adds(b, "NULL");
    /* The mask over the row's own columns, named bare, as the producer serves it. */
    if (c->masks && c->masks[i])
        return ferry_scope_mask_expr(b, ti, c->masks[i]);
    rc = ferry_buf_adds(b, "\"_ferry_s\".");
    if (!rc)
        rc = ferry_buf_add_ident(b, ti->cols[i].name);
    return rc;
}

/* Append pre, value i of the row, post. */
static int add_wrapped(struct ferry_checksum *c, struct ferry_buf *b, size_t i, const char *pre,
                       const char *post)
{
    int rc = ferry_buf_adds(b, pre);

    if (!rc)
        rc = add_col(c, b, i);
    if (!rc)
        rc = ferry_buf_adds(b, post);
    return rc;
}

/*
 * FERRY_HASH_PGREC's seed: the first 8 bytes (big-endian) of SHA-256 of
 * PGREC_SEED_LABEL and the verify's key. It goes into the statements' text,
 * which a server may log; derived so, it tells nothing of the key, which
 * keys SipHash for the tables that fall back to it.
 */
#define PGREC_SEED_LABEL "ferry pg-record-1 seed"

static int pgrec_seed(const unsigned char *key, uint64_t *seed)
{
    unsigned char in[sizeof(PGREC_SEED_LABEL) - 1 + FERRY_HASH_KEY_SIZE];
    unsigned char md[FERRY_SHA256_LEN];
    struct ferry_error err;

    memcpy(in, PGREC_SEED_LABEL, sizeof(PGREC_SEED_LABEL) - 1);
    memcpy(in + sizeof(PGREC_SEED_LABEL) - 1, key, FERRY_HASH_KEY_SIZE);
    if (ferry_sha256(in, sizeof(in), md, &err) != FERRY_OK)
        return FERRY_EINTERNAL;
    *seed = 0;
    for (int k = 0; k < 8; k++)
        *seed = *seed << 8 | md[k];
    return FERRY_OK;
}

/*
 * Append FERRY_HASH_PGREC's expression: hash_record_extended() of a row of
 * the values, seeded from the key (pgrec_seed), each value in a form
 * that two values share only when the C path would hash them alike (their
 * text, or their bits). The server's own hash of a type follows the type's
 * equality, which is looser: it folds an int8 to 32 bits (0 and 2^32 + 1
 * hash alike whatever the seed), takes -0 for 0, 1.0 for 1.00, and a
 * nondeterministic collation's equal strings for one. So the values go as
 * bytes, whose hash is the server's hash of all of them (hash_bytes):
 * integers as int8send (any width, the same bytes for the same number),
 * floats as float8send (every NaN one bit pattern, as in the C path),
 * dates, times, timestamps, intervals and uuids by their binary send
 * function (exact), text and varchar as text under the "C" collation (its
 * bytes); a bytea is bytes already. Any other type, numeric and jsonb
 * among them, goes as its output function's text, what the C path hashes.
 */
static int add_pgrec_hash(struct ferry_checksum *c, struct ferry_buf *b)
{
    /* a value's form by its encoding, and for PG_OUT by its base type: pre, value, post */
    static const struct {
        enum pg_enc enc;
        int64_t base; /* PG_OUT only */
        const char *pre, *post;
    } forms[] = {
        {PG_INT, 0, "pg_catalog.int8send((", ")::pg_catalog.int8)"},
        {PG_BOOL, 0, "(", ")::pg_catalog.bool"},
        {PG_BYTEA, 0, "(", ")::pg_catalog.bytea"},
        {PG_TEXT, 0, "(", ")::pg_catalog.text COLLATE pg_catalog.\"C\""},
        {PG_OUT, OID_DATE, "pg_catalog.date_send((", "))"},
        {PG_OUT, OID_TIME, "pg_catalog.time_send((", "))"},
        {PG_OUT, OID_TIMESTAMP, "pg_catalog.timestamp_send((", "))"},
        {PG_OUT, OID_TIMESTAMPTZ, "pg_catalog.timestamptz_send((", "))"},
        {PG_OUT, OID_INTERVAL, "pg_catalog.interval_send((", "))"},
        {PG_OUT, OID_UUID, "pg_catalog.uuid_send((", "))"},
    };
    const struct ferry_table_info *ti = &c->scope->tables[c->t].info;
    uint64_t seed = 0;
    int rc = ferry_buf_adds(b, "pg_catalog.hash_record_extended(ROW(");

    for (size_t i = 0; i < ti->ncols && !rc; i++) {
        const struct pg_col *pc = &c->pgcol[i];
        size_t k = 0;

        while (k < sizeof(forms) / sizeof(forms[0]) &&
               (forms[k].enc != pc->enc || (pc->enc == PG_OUT && forms[k].base != pc->base)))
            k++;
        rc = ferry_buf_adds(b, i ? ", " : "");
        if (rc)
            break;
        if (k < sizeof(forms) / sizeof(forms[0])) {
            rc = add_wrapped(c, b, i, forms[k].pre, forms[k].post);
        } else if (pc->enc == PG_FLOAT) {
            rc = add_wrapped(c, b, i, "CASE WHEN (",
                             ")::pg_catalog.float8 = 'NaN'::pg_catalog.float8"
                             " THEN '\\x7ff8000000000000'::pg_catalog.bytea"
                             " ELSE pg_catalog.float8send((");
            if (!rc)
                rc = add_wrapped(c, b, i, "", ")::pg_catalog.float8) END");
        } else {
            /* PG_OUT of any other type: its output function's text */
            rc = ferry_buf_addf(b, "pg_catalog.textin(%s(", pc->out);
            if (!rc)
                rc = add_wrapped(c, b, i, "", ")) COLLATE pg_catalog.\"C\"");
        }
    }
    if (!rc)
        rc = pgrec_seed(c->key, &seed);
    if (!rc)
        rc = ferry_buf_addf(b, "), '%" PRId64 "'::pg_catalog.int8)", (int64_t)seed);
    return rc;
}

/*
 * Append the PostgreSQL expression of the row hash: the encoding of
 * checksum.h built value by value (a NULL makes its part NULL, which
 * COALESCE turns into the NULL tag), SHA-256, its first 8 bytes read as a
 * big-endian int8. A value used twice (length and bytes) is evaluated twice:
 * a column is a read of the row, a mask is evaluated again.
 */
static int add_pg_hash(struct ferry_checksum *c, struct ferry_buf *b)
{
    const struct ferry_table_info *ti = &c->scope->tables[c->t].info;
    int rc;

    if (c->alg == FERRY_HASH_PGREC)
        return add_pgrec_hash(c, b);
    rc = ferry_buf_adds(b, "('x' || pg_catalog.encode(pg_catalog.substr(pg_catalog.sha256(");

    for (size_t i = 0; i < ti->ncols && !rc; i++) {
        const struct pg_col *pc = &c->pgcol[i];
        int uses = 1; /* how many times the value appears */

        rc = ferry_buf_adds(b, i ? " || COALESCE(" : "COALESCE(");
        switch (pc->enc) {
        case PG_INT:
            rc = rc ? rc : ferry_buf_adds(b, "'\\x01'::bytea || pg_catalog.int8send((");
            break;
        case PG_BOOL:
            rc = rc ? rc : ferry_buf_adds(b, "'\\x01'::bytea || pg_catalog.int8send((");
            break;
        case PG_FLOAT:
            rc = rc ? rc : ferry_buf_adds(b, "'\\x02'::bytea || CASE WHEN (");
            uses = 2;
            break;
        case PG_BYTEA:
            rc = rc ? rc
                    : ferry_buf_adds(b, "'\\x04'::bytea || pg_catalog.int8send("
                                        "pg_catalog.octet_length(");
            uses = 2;
            break;
        case PG_TEXT:
            rc = rc ? rc
                    : ferry_buf_adds(b, "'\\x03'::bytea || pg_catalog.int8send("
                                        "pg_catalog.octet_length((");
            uses = 2;
            break;
        case PG_OUT:
            rc = rc ? rc
                    : ferry_buf_addf(b,
                                     "'\\x03'::bytea || pg_catalog.int8send("
                                     "pg_catalog.octet_length(pg_catalog.textin(%s(",
                                     pc->out);
            uses = 2;
            break;
        }
        for (int u = 0; u < uses && !rc; u++) {
            rc = add_col(c, b, i);
            if (rc)
                break;
            switch (pc->enc) {
            case PG_INT:
                rc = ferry_buf_adds(b, ")::int8)");
                break;
            case PG_BOOL:
                rc = ferry_buf_adds(b, ")::int4::int8)");
                break;
            case PG_FLOAT:
                rc = ferry_buf_adds(b, u ? ")::float8) END"
                                         : ")::float8 = 'NaN'::float8 THEN "
                                           "'\\x7ff8000000000000'::bytea ELSE "
                                           "pg_catalog.float8send((");
                break;
            case PG_BYTEA:
                rc = ferry_buf_adds(b, u ? "" : ")::int8) || ");
                break;
            case PG_TEXT:
                rc = ferry_buf_adds(b, u ? ")::text)" : ")::text)::int8) || pg_catalog.textsend((");
                break;
            case PG_OUT:
                rc = u ? ferry_buf_adds(b, ")))")
                       : ferry_buf_addf(
                             b, ")))::int8) || pg_catalog.textsend(pg_catalog.textin(%s(", pc->out);
                break;
            }
        }
        if (!rc)
            rc = ferry_buf_adds(b, ", '\\x00'::bytea)");
    }
    if (!rc)
        rc = ferry_buf_adds(b, "), 1, 8), 'hex'))::pg_catalog.bit(64)::int8");
    return rc;
}

/*
 * Append " AND (k1, k2) op (?N, ?N+1)": add_bound with placeholders numbered
 * from first (0: plain "?").
 */
static int add_bound_at(struct ferry_checksum *c, struct ferry_buf *b, const char *op, size_t first)
{
    int rc = ferry_buf_adds(b, c->npk > 1 ? " AND (" : " AND ");

    if (!rc)
        rc = add_keys(c, b);
    if (!rc)
        rc = ferry_buf_addf(b, c->npk > 1 ? ") %s (" : " %s ", op);
    for (size_t k = 0; k < c->npk && !rc; k++)
        rc = first ? ferry_buf_addf(b, "%s?%zu", k ? ", " : "", first + k)
                   : ferry_buf_adds(b, k ? ", ?" : "?");
    if (!rc && c->npk > 1)
        rc = ferry_buf_adds(b, ")");
    return rc;
}

/* Whether a sink statement passes the key values apart: a mask hides a key column's value. */
static int sink_sep(const struct ferry_checksum *c)
{
    const struct ferry_table_info *ti = &c->scope->tables[c->t].info;

    for (size_t k = 0; k < c->npk && c->masks; k++)
        if (c->masks[ferry_table_pkcol(ti, k)])
            return 1;
    return 0;
}

/*
 * A sink statement (Q_SINK, Q_SINK_ORDERED; SQLite):
 *   SELECT 0 FROM t AS s <joins> WHERE <join conditions>
 *     AND CASE WHEN <owner comparison> AND <bounds> THEN ferry_rowsink(...) ELSE 0 END
 *     AND <bounds> [ORDER BY key]
 * A CASE evaluates its THEN only when its WHEN is true, so the sink sees
 * only the rows of the range the tenant owns, whatever order SQLite
 * evaluates the terms of the WHERE in; the bounds outside it let the scan
 * start and stop at them. The placeholders: the tenant first (the one "?"
 * of the owner comparison), then the bounds numbered as stmt_for binds
 * them, each bound used twice.
 */
static int build_sink_sql(struct ferry_checksum *c, int q, int shape, struct ferry_buf *b)
{
    const struct ferry_table_info *ti = &c->scope->tables[c->t].info;
    struct ferry_buf eqs, last, bounds;
    size_t hi_at = 2 + ((shape & 1) ? c->npk : 0);
    int rc = ferry_buf_adds(b, "SELECT 0 FROM ");

    ferry_buf_init(&eqs, SQL_MAX);
    ferry_buf_init(&last, SQL_MAX);
    ferry_buf_init(&bounds, SQL_MAX);
    if (!rc)
        rc = ferry_buf_add_ident(b, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " AS \"_ferry_s\"");
    if (!rc)
        rc = owner_parts(c, c->t, (shape & SHAPE_SET) != 0, b, &eqs, &last);
    if (!rc && (shape & 1))
        rc = add_bound_at(c, &bounds, ">=", 2);
    if (!rc && (shape & 2))
        rc = add_bound_at(c, &bounds, "<", hi_at);
    if (!rc)
        rc = ferry_buf_addf(b, " WHERE %s%sCASE WHEN %s%s THEN " ROWSINK_FN "(",
                            eqs.len ? eqs.data : "", eqs.len ? " AND " : "", last.data,
                            bounds.len ? bounds.data : "");
    /* the key: read from the row's values, unless a mask hides one of its columns there */
    if (!rc && sink_sep(c))
        rc = add_keys(c, b);
    for (size_t i = 0; i < ti->ncols && !rc; i++) {
        if (i || sink_sep(c))
            rc = ferry_buf_adds(b, ", ");
        if (!rc)
            rc = add_col(c, b, i);
    }
    if (!rc)
        rc = ferry_buf_addf(b, ") ELSE 0 END%s", bounds.len ? bounds.data : "");
    if (!rc && q == Q_SINK_ORDERED) {
        rc = ferry_buf_adds(b, " ORDER BY ");
        if (!rc)
            rc = add_keys(c, b);
    }
    ferry_buf_release(&eqs);
    ferry_buf_release(&last);
    ferry_buf_release(&bounds);
    return rc;
}

static int build_sql(struct ferry_checksum *c, int q, int shape, struct ferry_buf *b)
{
    const struct ferry_table_info *ti = &c->scope->tables[c->t].info;
    int rc;

    if (q == Q_SINK || q == Q_SINK_ORDERED)
        return build_sink_sql(c, q, shape, b);
    rc = ferry_buf_adds(b, "SELECT ");

    if (q == Q_ANY) {
        rc = add_keys(c, b);
    } else if (q == Q_SUM) {
        /* HASH_PG only: the sum as numeric text, reduced modulo 2^64 here */
        rc = ferry_buf_adds(b, "pg_catalog.count(*), pg_catalog.sum(");
        if (!rc)
            rc = add_pg_hash(c, b);
        if (!rc)
            rc = ferry_buf_adds(b, ")::text");
    } else if (c->in_sql == HASH_PG) {
        rc = add_keys(c, b);
        if (!rc)
            rc = ferry_buf_adds(b, ", ");
        if (!rc)
            rc = add_pg_hash(c, b);
    } else {
        if (c->in_sql == HASH_SQLITE) {
            rc = add_keys(c, b);
            if (!rc)
                rc = ferry_buf_addf(b, ", " ROWHASH_FN "(X'%02x", (unsigned)c->alg);
            for (size_t i = 0; i < FERRY_HASH_KEY_SIZE && !rc; i++)
                rc = ferry_buf_addf(b, "%02x", (unsigned)c->key[i]);
            for (size_t i = 0; c->coerce && i < ti->ncols && !rc; i++)
                rc = ferry_buf_addf(b, "%02x", (unsigned)c->coerce[i]);
            if (!rc)
                rc = ferry_buf_adds(b, ti->ncols ? "', " : "'");
        }
        for (size_t i = 0; i < ti->ncols && !rc; i++) {
            if (i)
                rc = ferry_buf_adds(b, ", ");
            if (!rc)
                rc = add_col(c, b, i);
        }
        if (!rc && c->in_sql == HASH_SQLITE)
            rc = ferry_buf_adds(b, ")");
    }
    if (!rc)
        rc = ferry_buf_adds(b, " FROM ");
    if (!rc)
        rc = ferry_buf_add_ident(b, ti->name);
    if (!rc)
        rc = ferry_buf_adds(b, " AS \"_ferry_s\"");
    if (!rc)
        rc = add_owner_join(c, b);
    if (!rc && (shape & 1))
        rc = add_bound(c, b, ">=");
    if (!rc && (shape & 2))
        rc = add_bound(c, b, "<");
    if (!rc && q == Q_ORDERED) {
        rc = ferry_buf_adds(b, " ORDER BY ");
        if (!rc)
            rc = add_keys(c, b);
    }
    if (!rc && q == Q_ANY)
        rc = ferry_buf_adds(b, " LIMIT 1");
    return rc;
}

/* The statement of kind q for these bounds, prepared on first use, reset and bound. */
static int stmt_for(struct ferry_checksum *c, int q, int set, const struct ferry_value *lo,
                    size_t nlo, const struct ferry_value *hi, size_t nhi, struct ferry_stmt **out,
                    struct ferry_error *err)
{
    const char *name = c->scope->tables[c->t].info.name;
    int shape = (lo ? 1 : 0) | (hi ? 2 : 0) | set;
    struct ferry_stmt *st;
    int idx = 1;
    int rc;

    *out = NULL;
    if ((lo && nlo != c->npk) || (hi && nhi != c->npk))
        return ferry_error_set(err, FERRY_EDATA, "range bound of %zu values for %s, key has %zu",
                               lo && nlo != c->npk ? nlo : nhi, name, c->npk);
    if (!c->st[q][shape]) {
        struct ferry_buf sql;

        ferry_buf_init(&sql, SQL_MAX);
        rc = build_sql(c, q, shape, &sql);
        if (rc)
            rc = ferry_error_set(err, rc, "cannot build the checksum query of %s", name);
        else
            rc = ferry_db_prepare(c->db, sql.data, &c->st[q][shape], err);
        ferry_buf_release(&sql);
        if (rc)
            return rc;
    }
    st = c->st[q][shape];
    ferry_stmt_reset(st);
    /* the tenant is the first placeholder, but for an owner check by a set (it has none) */
    rc = set ? FERRY_OK : ferry_stmt_bind(st, idx, &c->tenant, err);
    idx++;
    for (size_t k = 0; lo && k < nlo && !rc; k++)
        rc = ferry_stmt_bind(st, idx++, &lo[k], err);
    for (size_t k = 0; hi && k < nhi && !rc; k++)
        rc = ferry_stmt_bind(st, idx++, &hi[k], err);
    if (rc)
        return rc;
    *out = st;
    return FERRY_OK;
}

/* Hash the current row of st (all columns) and borrow its key values. */
/* A row read here (every column in vals): its key (pointing into vals) and its hash. */
static int hash_values(struct ferry_checksum *c, const struct ferry_value *vals,
                       struct ferry_value *key, uint64_t *hash, struct ferry_error *err)
{
    const struct ferry_table_info *ti = &c->scope->tables[c->t].info;

    for (size_t k = 0; k < c->npk; k++)
        key[k] = vals[ferry_table_pkcol(ti, k)];
    return ferry_rowhash_coerced(c->hash, c->coerce, vals, ti->ncols, hash, err);
}

static int row_of(struct ferry_checksum *c, struct ferry_stmt *st, struct ferry_value *vals,
                  struct ferry_value *key, uint64_t *hash, struct ferry_error *err)
{
    const struct ferry_table_info *ti = &c->scope->tables[c->t].info;

    if (c->in_sql) {
        struct ferry_value h;

        for (size_t k = 0; k < c->npk; k++)
            ferry_stmt_column(st, (int)k, &key[k]);
        ferry_stmt_column(st, (int)c->npk, &h);
        if (h.type != FERRY_INT)
            return ferry_error_set(err, FERRY_EINTERNAL, "checksum: %s returned no integer",
                                   ROWHASH_FN);
        *hash = (uint64_t)h.u.i;
        return FERRY_OK;
    }
    for (size_t i = 0; i < ti->ncols; i++)
        ferry_stmt_column(st, (int)i, &vals[i]);
    return hash_values(c, vals, key, hash, err);
}

/* Whether c's walks go through ROWSINK_FN. */
static int sink_ok(const struct ferry_checksum *c)
{
    return c->in_sql == HASH_SQLITE &&
           c->scope->tables[c->t].info.ncols + c->npk + 1 <= SINK_MAX_ARGS;
}

/*
 * Whether SQLite walks the rows of Q_SINK_ORDERED of this shape in key
 * order: its plan (EXPLAIN, the same text on the same connection) sorts
 * nothing, so the rows come in the order of the ORDER BY from the scan
 * itself, and the WHERE (the sink) sees them in that order. With a sort,
 * the WHERE would see them in the scan's order: rows are read instead.
 */
static int sink_in_order(struct ferry_checksum *c, int shape)
{
    struct ferry_stmt *st = NULL;
    struct ferry_error err;
    struct ferry_buf sql;
    int row = 0, sorts = 0;
    int rc;

    if (c->in_order[shape] >= 0)
        return c->in_order[shape];
    ferry_buf_init(&sql, SQL_MAX);
    rc = ferry_buf_adds(&sql, "EXPLAIN ");
    if (!rc)
        rc = build_sql(c, Q_SINK_ORDERED, shape, &sql);
    if (!rc)
        rc = ferry_db_prepare(c->db, sql.data, &st, &err);
    while (!rc) {
        struct ferry_value op;

        rc = ferry_stmt_step(st, &row, &err);
        if (rc || !row)
            break;
        ferry_stmt_column(st, 1, &op);
        if (op.type != FERRY_TEXT ||
            (op.u.s.n >= 4 && (memcmp(op.u.s.p, "Sort", 4) == 0 ||
                               (op.u.s.n >= 6 && memcmp(op.u.s.p, "Sorter", 6) == 0))))
            sorts = 1;
    }
    ferry_stmt_free(st);
    ferry_buf_release(&sql);
    c->in_order[shape] = !rc && !sorts;
    if (!c->in_order[shape])
        log_debug("checksum: rows of %s read in key order, not through the sink: %s",
                  c->scope->tables[c->t].info.name, rc ? err.msg : "the plan sorts");
    return c->in_order[shape];
}

/*
 * Whether child's foreign key to its parent is to the parent's one key
 * column: what a set of the parent's keys can answer.
 */
static int fk_to_key(const struct ferry_scope *s, size_t child)
{
    const struct ferry_scope_table *st = &s->tables[child];
    const struct ferry_table_info *pi;

    if (st->parent <= 0 || st->fk < 0 || st->info.fks[st->fk].ncols != 1)
        return 0;
    pi = &s->tables[st->parent].info;
    return ferry_table_npk(pi) == 1 &&
           strcmp(pi->cols[ferry_table_pkcol(pi, 0)].name, st->info.fks[st->fk].pcols[0]) == 0;
}

/*
 * The parent whose owned keys can stand for c's owner check (struct
 * owned), or -1: a parent that is not the root (a comparison already),
 * reached by one column that has INTEGER affinity in this very database
 * (the target's own column, not the manifest's): its values are then
 * integers, or reals and texts that SQLite's rowid seek reads as OWNED_FN
 * does. A small parent too: a look-up in C costs a fifth of one in the IN
 * list's index (posts -> channels: about 90 instead of 420 instructions a
 * row).
 */
static int set_hop(struct ferry_checksum *c)
{
    const struct ferry_scope_table *st = &c->scope->tables[c->t];
    struct ferry_table_info real;
    struct ferry_error err;
    int ok = 0;

    if (c->set_parent >= -1)
        return c->set_parent;
    c->set_parent = -1;
    if (!c->conn || !fk_to_key(c->scope, c->t) ||
        ferry_db_table_info(c->db, st->info.name, &real, &err) != FERRY_OK)
        return -1;
    for (size_t i = 0; i < real.ncols; i++)
        if (strcmp(real.cols[i].name, st->info.fks[st->fk].cols[0]) == 0)
            ok = real.cols[i].type && has_ci(real.cols[i].type, "INT");
    ferry_table_info_release(&real);
    if (ok)
        c->set_parent = st->parent;
    return c->set_parent;
}

/* Whether a walk of all of c's rows keeps their keys: a child's set_hop could use them. */
static int records_keys(struct ferry_checksum *c)
{
    if (c->records >= 0)
        return c->records;
    c->records = 0;
    for (size_t u = 0; c->conn && c->t != 0 && u < c->scope->ntables && !c->records; u++)
        c->records = c->scope->tables[u].parent == (int)c->t && fk_to_key(c->scope, u);
    return c->records;
}

/*
 * What the owned keys of table t are (an owned set's id, into id once):
 * its name, its key, the text of its owner check (owner_parts) and the
 * tenant's value. The same on every handle of the same scope and tenant.
 */
static int owned_id(struct ferry_checksum *c, size_t t, struct ferry_buf *id)
{
    const struct ferry_table_info *ti = &c->scope->tables[t].info;
    struct ferry_buf joins, eqs, last;
    unsigned char tag = (unsigned char)c->tenant.type;
    int rc;

    if (id->len)
        return FERRY_OK;
    ferry_buf_init(&joins, SQL_MAX);
    ferry_buf_init(&eqs, SQL_MAX);
    ferry_buf_init(&last, SQL_MAX);
    rc = owner_parts(c, t, 0, &joins, &eqs, &last);
    if (!rc)
        rc = ferry_buf_add(id, ti->name, strlen(ti->name) + 1);
    if (!rc)
        rc = ferry_buf_add(id, ti->cols[ferry_table_pkcol(ti, 0)].name,
                           strlen(ti->cols[ferry_table_pkcol(ti, 0)].name) + 1);
    if (!rc)
        rc = ferry_buf_add(id, joins.len ? joins.data : "", joins.len + 1);
    if (!rc)
        rc = ferry_buf_add(id, eqs.len ? eqs.data : "", eqs.len + 1);
    if (!rc)
        rc = ferry_buf_add(id, last.len ? last.data : "", last.len + 1);
    if (!rc)
        rc = ferry_buf_add(id, &tag, 1);
    if (!rc && (c->tenant.type == FERRY_TEXT || c->tenant.type == FERRY_BLOB))
        rc = ferry_buf_add(id, c->tenant.u.s.p, c->tenant.u.s.n);
    else if (!rc && c->tenant.type == FERRY_INT)
        rc = ferry_buf_add(id, &c->tenant.u.i, sizeof(c->tenant.u.i));
    else if (!rc && c->tenant.type == FERRY_FLOAT)
        rc = ferry_buf_add(id, &c->tenant.u.f, sizeof(c->tenant.u.f));
    ferry_buf_release(&joins);
    ferry_buf_release(&eqs);
    ferry_buf_release(&last);
    if (rc)
        ferry_buf_reset(id);
    return rc;
}

/* The set of id read at data version ver, or NULL (a set of id read earlier is dropped). */
static struct owned *owned_find(struct conn *cn, const struct ferry_buf *id, const uint64_t ver[2])
{
    for (size_t i = 0; i < OWNED_SLOTS; i++) {
        struct owned *o = &cn->sets[i];

        if (o->id.len != id->len || memcmp(o->id.data, id->data, id->len) != 0)
            continue;
        if (o->ver[0] == ver[0] && o->ver[1] == ver[1])
            return o;
        if (!o->busy)
            owned_free(cn, o);
        return NULL;
    }
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

/*
 * Keep the keys a whole walk read (r, taken over) as the set of id at data
 * version ver, in the least memory, within OWNED_MAX_BYTES for all of cn's
 * sets (the least recently used go first). Best effort.
 */
static void owned_keep(struct conn *cn, const struct ferry_buf *id, const uint64_t ver[2],
                       struct rec *r)
{
    struct owned *o = NULL;
    uint64_t span = 0;
    size_t bytes;

    if (!r->ok)
        return;
    if (!r->sorted)
        qsort(r->keys, r->n, sizeof(*r->keys), cmp_i64);
    if (r->n)
        span = (uint64_t)r->keys[r->n - 1] - (uint64_t)r->keys[0];
    bytes = r->n * sizeof(*r->keys);
    if (r->n && span / 64 < bytes / sizeof(uint64_t))
        bytes = (size_t)(span / 64 + 1) * sizeof(uint64_t);
    if (bytes > owned_max)
        return;
    (void)owned_find(cn, id, ver); /* an older set of the same keys goes */
    for (;;) {
        struct owned *lru = NULL;

        o = NULL;
        for (size_t i = 0; i < OWNED_SLOTS; i++) {
            struct owned *s = &cn->sets[i];

            if (!s->id.len && !o)
                o = s;
            else if (s->id.len && !s->busy && (!lru || s->used < lru->used))
                lru = s;
        }
        if (o && cn->bytes + bytes <= owned_max)
            break;
        if (!lru)
            return;
        owned_free(cn, lru);
    }
    ferry_buf_init(&o->id, id->len + 1);
    if (ferry_buf_add(&o->id, id->data, id->len) != FERRY_OK) {
        ferry_buf_release(&o->id);
        return;
    }
    o->min = r->n ? r->keys[0] : 1;
    o->max = r->n ? r->keys[r->n - 1] : 0;
    if (r->n && bytes < r->n * sizeof(*r->keys)) {
        o->bits = calloc(bytes / sizeof(uint64_t), sizeof(uint64_t));
        if (!o->bits) {
            owned_free(cn, o);
            return;
        }
        for (size_t i = 0; i < r->n; i++) {
            uint64_t d = (uint64_t)r->keys[i] - (uint64_t)o->min;

            o->bits[d / 64] |= UINT64_C(1) << (d % 64);
        }
    } else {
        o->keys = r->keys;
        r->keys = NULL;
    }
    o->n = r->n;
    o->bytes = bytes;
    o->ver[0] = ver[0];
    o->ver[1] = ver[1];
    o->used = ++cn->tick;
    cn->bytes += bytes;
}

/* Marks a walk that could not keep key order (sink_walk's result, no error). */
#define SINK_UNORDERED (-1)

/*
 * Walk the tenant's rows of [lo, hi) through ROWSINK_FN: fn(arg, key, hash)
 * for each, called from inside the statement (in key order when ordered,
 * or SINK_UNORDERED once a key is not one INT above the last: the caller
 * then reads the rows instead). fn's nonzero result stops the walk and is
 * returned.
 */
static int sink_walk(struct ferry_checksum *c, int ordered, const struct ferry_value *lo,
                     size_t nlo, const struct ferry_value *hi, size_t nhi, ferry_checksum_fn fn,
                     void *arg, struct ferry_error *err)
{
    struct ferry_stmt *st = NULL;
    struct sink sk, *prev = cur_sink;
    struct ferry_error serr;
    struct owned *set = NULL;
    struct rec rec;
    uint64_t ver[2];
    int parent = set_hop(c);
    int keep = !lo && !hi && records_keys(c);
    int row = 0;
    int rc;

    memset(&sk, 0, sizeof(sk));
    memset(&rec, 0, sizeof(rec));
    /* the parent's owned keys, when the database is as it was when they were read */
    if ((parent >= 0 || keep) && ferry_db_data_version(c->db, ver, &serr) == FERRY_OK) {
        if (parent >= 0 && owned_id(c, (size_t)parent, &c->parent_id) == FERRY_OK)
            set = owned_find(c->conn, &c->parent_id, ver);
        /* the plan without the join must keep key order too */
        if (set && ordered && !sink_in_order(c, (lo ? 1 : 0) | (hi ? 2 : 0) | SHAPE_SET))
            set = NULL;
        if (keep && owned_id(c, c->t, &c->own_id) == FERRY_OK) {
            rec.ok = 1;
            rec.sorted = 1;
            sk.rec = &rec;
        }
    }
    c->by_set = set != NULL;
    if (parent >= 0)
        log_debug("checksum: owner of %s rows %s", c->scope->tables[c->t].info.name,
                  set ? "by the keys kept of their parent" : "by a join (no keys kept that hold)");
    if (set) {
        set->busy++;
        set->used = ++c->conn->tick;
        sk.owned = set;
    }
    sk.fn = fn;
    sk.arg = arg;
    sk.ordered = ordered;
    sk.err = err;
    sk.hash = c->hash;
    sk.codes = c->coerce;
    sk.npk = c->npk;
    sk.nsep = sink_sep(c) ? c->npk : 0;
    sk.nv = c->scope->tables[c->t].info.ncols;
    for (size_t k = 0; k < c->npk; k++)
        sk.pos[k] = ferry_table_pkcol(&c->scope->tables[c->t].info, k);
    rc = stmt_for(c, ordered ? Q_SINK_ORDERED : Q_SINK, set ? SHAPE_SET : 0, lo, nlo, hi, nhi, &st,
                  err);
    if (!rc) {
        memset(&serr, 0, sizeof(serr));
        cur_sink = &sk;
        rc = ferry_stmt_step(st, &row, &serr);
        cur_sink = prev;
        ferry_stmt_reset(st);
    }
    if (set)
        set->busy--;
    /* a whole walk that went through: the keys it read are all the tenant's */
    if (!rc && !row && !sk.rc && !sk.unordered && sk.rec) {
        owned_keep(c->conn, &c->own_id, ver, &rec);
        log_debug("checksum: %zu keys of %s read, %s", rec.n, c->scope->tables[c->t].info.name,
                  rec.ok ? "kept" : "not kept (too many)");
    }
    free(rec.keys);
    if (st == NULL)
        return rc;
    if (sk.rc)
        return sk.rc; /* err says why: fn or the hash set it */
    if (sk.unordered)
        return SINK_UNORDERED;
    if (rc) {
        *err = serr;
        return rc;
    }
    if (row)
        return ferry_error_set(err, FERRY_EINTERNAL, "checksum: a walk of %s returned a row",
                               c->scope->tables[c->t].info.name);
    return FERRY_OK;
}

/*
 * Whether a walk of c over [lo, hi) reads PostgreSQL's rows through COPY
 * (copy_walk): rows read here (HASH_C) of a whole table, the scans that
 * cost (an unchanged verify's total on the target, the source's first
 * split). A range of a bisection keeps its prepared statement: a COPY is
 * planned again at every run.
 */
static int copy_ok(const struct ferry_checksum *c, const struct ferry_value *lo,
                   const struct ferry_value *hi)
{
    return (c->in_sql == HASH_C || c->in_sql == HASH_PG) &&
           ferry_db_engine(c->db) == FERRY_ENGINE_PG && !lo && !hi;
}

/*
 * The rows of query q (Q_SCAN or Q_ORDERED, over the whole table) as COPY
 * (...) TO STDOUT text instead of result rows: libpq's single-row mode
 * builds a PGresult for every row. Each field is decoded into the value
 * the statement's column would give (ferry_db_copy_out_field), and the row
 * hashed (or, hashed in SQL, its key and hash read) and handed to fn as
 * row_of and its callers do.
 */
static int copy_walk(struct ferry_checksum *c, int q, ferry_checksum_fn fn, void *arg,
                     struct ferry_error *err)
{
    const struct ferry_table_info *ti = &c->scope->tables[c->t].info;
    /* every column, or hashed in SQL the key and the hash */
    size_t nf = c->in_sql == HASH_PG ? c->npk + 1 : ti->ncols;
    struct ferry_value *vals = calloc(nf ? nf : 1, sizeof(*vals));
    struct ferry_value key[FERRY_MAX_KEY_COLS];
    struct ferry_error e2;
    struct ferry_buf sql;
    int open, row = 0;
    int rc;

    if (!vals)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
    ferry_buf_init(&sql, SQL_MAX);
    rc = build_sql(c, q, 0, &sql);
    if (rc)
        rc = ferry_error_set(err, rc, "cannot build the checksum query of %s", ti->name);
    if (!rc)
        rc = ferry_db_copy_out_begin(c->db, sql.data, &c->tenant, 1, err);
    open = !rc;
    while (!rc) {
        const char *line, *p, *end;
        size_t n;
        uint64_t h = 0;

        rc = ferry_db_copy_out_next(c->db, &line, &n, &row, err);
        if (rc || !row)
            break;
        end = line + n;
        p = line;
        /* tab-separated fields; a tab inside a value is escaped, so each is a separator */
        for (size_t i = 0; i < nf && !rc; i++) {
            const char *tab = memchr(p, '\t', (size_t)(end - p));

            if ((tab != NULL) != (i + 1 < nf)) {
                rc = ferry_error_set(err, FERRY_EDB,
                                     "checksum: a COPY row of %s has not %zu fields", ti->name, nf);
                break;
            }
            rc = ferry_db_copy_out_field(c->db, (int)i, p, (size_t)((tab ? tab : end) - p),
                                         &vals[i], err);
            p = tab ? tab + 1 : end;
        }
        if (!rc && c->in_sql == HASH_PG) {
            if (vals[c->npk].type != FERRY_INT)
                rc = ferry_error_set(err, FERRY_EINTERNAL,
                                     "checksum: a row hash of %s is no integer", ti->name);
            for (size_t k = 0; k < c->npk; k++)
                key[k] = vals[k];
            h = (uint64_t)vals[c->npk].u.i;
        } else if (!rc) {
            rc = hash_values(c, vals, key, &h, err);
        }
        if (!rc)
            rc = fn(arg, key, c->npk, h);
    }
    /* after a failure too: the rows left are read and dropped, the connection is free again */
    if (open && ferry_db_copy_out_end(c->db, &e2) && !rc) {
        rc = e2.code;
        *err = e2;
    }
    ferry_buf_release(&sql);
    free(vals);
    return rc;
}

int ferry_checksum_each(struct ferry_checksum *c, const struct ferry_value *lo, size_t nlo,
                        const struct ferry_value *hi, size_t nhi, ferry_checksum_fn fn, void *arg,
                        struct ferry_error *err)
{
    const struct ferry_table_info *ti = &c->scope->tables[c->t].info;
    struct ferry_value *vals = calloc(ti->ncols ? ti->ncols : 1, sizeof(*vals));
    struct ferry_value key[FERRY_MAX_KEY_COLS];
    struct ferry_stmt *st = NULL;
    int row = 0;
    int rc;

    c->by_set = 0;
    if (!vals)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
    if (sink_ok(c)) {
        free(vals);
        return sink_walk(c, 0, lo, nlo, hi, nhi, fn, arg, err);
    }
    if (copy_ok(c, lo, hi)) {
        free(vals);
        return copy_walk(c, Q_SCAN, fn, arg, err);
    }
    rc = stmt_for(c, Q_SCAN, 0, lo, nlo, hi, nhi, &st, err);
    while (!rc) {
        uint64_t h = 0;

        rc = ferry_stmt_step(st, &row, err);
        if (rc || !row)
            break;
        rc = row_of(c, st, vals, key, &h, err);
        if (!rc)
            rc = fn(arg, key, c->npk, h);
    }
    if (st)
        ferry_stmt_reset(st);
    free(vals);
    return rc;
}

struct sum_acc {
    int64_t count;
    uint64_t sum;
};

static int add_to_sum(void *arg, const struct ferry_value *key, size_t nkey, uint64_t hash)
{
    struct sum_acc *a = arg;

    (void)key;
    (void)nkey;
    a->count++;
    a->sum += hash;
    return 0;
}

/*
 * The value modulo 2^64 of the decimal integer s (n bytes, an optional
 * '-'): what a uint64_t sum of the same int64 hashes wraps to.
 */
static int decimal_mod64(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    size_t i = n && s[0] == '-' ? 1 : 0;

    if (i == n)
        return -1;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = n && s[0] == '-' ? 0 - v : v;
    return 0;
}

int ferry_checksum_sum(struct ferry_checksum *c, const struct ferry_value *lo, size_t nlo,
                       const struct ferry_value *hi, size_t nhi, int64_t *count, uint64_t *sum,
                       struct ferry_error *err)
{
    struct sum_acc a = {0, 0};
    int rc;

    if (c->in_sql == HASH_PG) {
        /* one row: the count and the exact sum of the rows' signed hashes (NULL for none) */
        struct ferry_stmt *st = NULL;
        struct ferry_value n, total;
        int row = 0;

        *count = 0;
        *sum = 0;
        rc = stmt_for(c, Q_SUM, 0, lo, nlo, hi, nhi, &st, err);
        if (!rc)
            rc = ferry_stmt_step(st, &row, err);
        if (!rc && row) {
            ferry_stmt_column(st, 0, &n);
            ferry_stmt_column(st, 1, &total);
            if (n.type != FERRY_INT ||
                (total.type == FERRY_TEXT ? decimal_mod64(total.u.s.p, total.u.s.n, sum) != 0
                                          : total.type != FERRY_NULL))
                rc = ferry_error_set(err, FERRY_EINTERNAL, "checksum: the sum of %s is no integer",
                                     c->scope->tables[c->t].info.name);
            else
                *count = n.u.i;
        }
        if (st)
            ferry_stmt_reset(st);
        return rc;
    }
    rc = ferry_checksum_each(c, lo, nlo, hi, nhi, add_to_sum, &a, err);
    *count = a.count;
    *sum = a.sum;
    return rc;
}

/*
 * A possible range start seen during a split: row index, the count and sum
 * of the rows before it, and its key (packed, keypack.h, in the arena).
 */
struct mark {
    int64_t before; /* also its row index */
    uint64_t sum_before;
    size_t off, len;
};

/*
 * Keep every other mark (rows at multiples of twice the stride), and only
 * their keys in the arena: the marks and the arena stay within 2 * parts.
 */
static int decimate(struct mark *m, size_t *nm, struct ferry_buf *arena)
{
    struct ferry_buf kept;
    size_t w = 0;
    int rc = FERRY_OK;

    ferry_buf_init(&kept, arena->max);
    for (size_t i = 0; i < *nm && !rc; i += 2) {
        size_t off = kept.len;

        rc = ferry_buf_add(&kept, arena->data + m[i].off, m[i].len);
        m[w] = m[i];
        m[w++].off = off;
    }
    if (rc) {
        ferry_buf_release(&kept);
        return rc;
    }
    ferry_buf_release(arena);
    *arena = kept;
    *nm = w;
    return FERRY_OK;
}

/*
 * One ordered pass, no count: the number of rows is not known until the
 * end, so range starts are kept as marks every `stride` rows, at most
 * 2 * parts of them, the stride doubling (and every other mark dropped)
 * when they fill up. At the end min(parts, marks) ranges start at evenly
 * spaced marks; their counts and sums are differences of the running
 * totals kept in the marks. With no more rows than 2 * parts every row is
 * a mark, so up to `parts` rows give one range per row.
 */
/* A split under way: its marks, stride and running totals. */
struct split {
    struct ferry_checksum *c;
    struct ferry_ranges *out;
    struct mark *marks;
    size_t cap, nm;
    int64_t stride, n;
    uint64_t sum;
    struct ferry_error *err;
};

static void split_reset(struct split *sp)
{
    sp->nm = 0;
    sp->stride = 1;
    sp->n = 0;
    sp->sum = 0;
    ferry_buf_reset(&sp->out->arena);
}

/* One row of a split, in key order. */
static int split_row(void *arg, const struct ferry_value *key, size_t nkey, uint64_t h)
{
    struct split *sp = arg;
    int rc = FERRY_OK;

    if (sp->n % sp->stride == 0 && sp->nm == sp->cap) {
        rc = decimate(sp->marks, &sp->nm, &sp->out->arena);
        sp->stride *= 2;
    }
    if (!rc && sp->n % sp->stride == 0) {
        struct mark *m = &sp->marks[sp->nm];

        m->before = sp->n;
        m->sum_before = sp->sum;
        m->off = sp->out->arena.len;
        rc = ferry_key_pack(&sp->out->arena, key, nkey);
        m->len = sp->out->arena.len - m->off;
        sp->nm++;
    }
    if (rc)
        return ferry_error_set(sp->err, rc, "checksum: keys of %s too large",
                               sp->c->scope->tables[sp->c->t].info.name);
    sp->n++;
    sp->sum += h;
    return FERRY_OK;
}

/* The first row of a one-part split: its key kept, the rest counted. */
struct one {
    struct ferry_buf *arena;
    int64_t n;
    uint64_t sum;
};

static int one_row(void *arg, const struct ferry_value *key, size_t nkey, uint64_t h)
{
    struct one *o = arg;

    if (o->n++ == 0 && ferry_key_pack(o->arena, key, nkey))
        return FERRY_ETOOBIG;
    o->sum += h;
    return FERRY_OK;
}

/*
 * A split into one part: the total of [lo, hi) in any order, the cheaper
 * pass where keys are not read in order (on PostgreSQL: an index walk of
 * the whole table, or a sort, against a sequential scan; hashed in SQL,
 * the server adds them up and sends one row). Its first key is whichever
 * row came first, or on PostgreSQL hashing in SQL any one row's key.
 */
static int split_one(struct ferry_checksum *c, const struct ferry_value *lo, size_t nlo,
                     const struct ferry_value *hi, size_t nhi, struct ferry_ranges *out,
                     struct ferry_error *err)
{
    const char *name = c->scope->tables[c->t].info.name;
    struct one o = {&out->arena, 0, 0};
    int rc;

    if (c->in_sql == HASH_PG) {
        struct ferry_stmt *st = NULL;
        int row = 0;

        rc = ferry_checksum_sum(c, lo, nlo, hi, nhi, &o.n, &o.sum, err);
        if (!rc && o.n > 0)
            rc = stmt_for(c, Q_ANY, 0, lo, nlo, hi, nhi, &st, err);
        if (!rc && st)
            rc = ferry_stmt_step(st, &row, err);
        if (!rc && st && !row)
            rc = ferry_error_set(err, FERRY_EDATA,
                                 "checksum: %s counted %" PRId64 " rows and found none", name, o.n);
        if (!rc && st) {
            struct ferry_value key[FERRY_MAX_KEY_COLS];

            for (size_t k = 0; k < c->npk; k++)
                ferry_stmt_column(st, (int)k, &key[k]);
            if (ferry_key_pack(&out->arena, key, c->npk))
                rc = FERRY_ETOOBIG;
        }
        if (st)
            ferry_stmt_reset(st);
    } else {
        rc = ferry_checksum_each(c, lo, nlo, hi, nhi, one_row, &o, err);
    }
    if (rc == FERRY_ETOOBIG)
        return ferry_error_set(err, rc, "checksum: keys of %s too large", name);
    if (rc || o.n == 0)
        return rc;
    out->r = calloc(1, sizeof(*out->r));
    if (!out->r)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
    if (ferry_key_unpack(out->arena.data, out->arena.len, out->r[0].first, FERRY_MAX_KEY_COLS,
                         &out->r[0].nfirst))
        return ferry_error_set(err, FERRY_EINTERNAL, "checksum: a key kept in a split is corrupt");
    out->r[0].count = o.n;
    out->r[0].sum = o.sum;
    out->n = 1;
    return FERRY_OK;
}

int ferry_checksum_split(struct ferry_checksum *c, const struct ferry_value *lo, size_t nlo,
                         const struct ferry_value *hi, size_t nhi, size_t parts,
                         struct ferry_ranges *out, struct ferry_error *err)
{
    const struct ferry_table_info *ti = &c->scope->tables[c->t].info;
    size_t nm, k;
    struct ferry_value *vals = NULL;
    struct ferry_stmt *st = NULL;
    struct mark *marks = NULL;
    struct split sp;
    int64_t n;
    uint64_t sum;
    int row = 0;
    int rc;

    ferry_ranges_init(out);
    c->by_set = 0;
    if (parts < 1 || parts > FERRY_DIGEST_MAX_PARTS)
        return ferry_error_set(err, FERRY_EINTERNAL, "checksum: %zu parts", parts);
    if (parts == 1) {
        rc = split_one(c, lo, nlo, hi, nhi, out, err);
        if (rc)
            ferry_ranges_release(out);
        return rc;
    }
    marks = calloc(2 * parts, sizeof(*marks));
    vals = calloc(ti->ncols ? ti->ncols : 1, sizeof(*vals));
    if (!marks || !vals) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        goto out;
    }
    memset(&sp, 0, sizeof(sp));
    sp.c = c;
    sp.out = out;
    sp.marks = marks;
    sp.cap = 2 * parts;
    sp.err = err;
    split_reset(&sp);
    rc = SINK_UNORDERED;
    /* through the sink while keys keep their order there, else row by row */
    if (sink_ok(c) && !c->unordered && sink_in_order(c, (lo ? 1 : 0) | (hi ? 2 : 0))) {
        rc = sink_walk(c, 1, lo, nlo, hi, nhi, split_row, &sp, err);
        if (rc == SINK_UNORDERED) {
            c->unordered = 1;
            split_reset(&sp);
        }
    }
    if (rc == SINK_UNORDERED && copy_ok(c, lo, hi)) {
        rc = copy_walk(c, Q_ORDERED, split_row, &sp, err);
    } else if (rc == SINK_UNORDERED) {
        rc = stmt_for(c, Q_ORDERED, 0, lo, nlo, hi, nhi, &st, err);
        while (!rc) {
            struct ferry_value key[FERRY_MAX_KEY_COLS];
            uint64_t h = 0;

            rc = ferry_stmt_step(st, &row, err);
            if (rc || !row)
                break;
            rc = row_of(c, st, vals, key, &h, err);
            if (!rc)
                rc = split_row(&sp, key, c->npk, h);
        }
    }
    n = sp.n;
    sum = sp.sum;
    nm = sp.nm;
    if (st)
        ferry_stmt_reset(st);
    if (rc || n == 0)
        goto out;
    k = nm < parts ? nm : parts;
    out->r = calloc(k, sizeof(*out->r));
    if (!out->r) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        goto out;
    }
    /* The arena has stopped moving: the keys point into it. */
    for (size_t j = 0; j < k && !rc; j++) {
        const struct mark *a = &marks[j * nm / k];
        const struct mark *b = j + 1 < k ? &marks[(j + 1) * nm / k] : NULL;

        rc = ferry_key_unpack(out->arena.data + a->off, a->len, out->r[j].first, FERRY_MAX_KEY_COLS,
                              &out->r[j].nfirst);
        out->r[j].count = (b ? b->before : n) - a->before;
        out->r[j].sum = (b ? b->sum_before : sum) - a->sum_before;
    }
    if (rc)
        rc = ferry_error_set(err, FERRY_EINTERNAL, "checksum: a key kept in a split is corrupt");
    else
        out->n = k;
out:
    if (rc)
        ferry_ranges_release(out);
    free(marks);
    free(vals);
    return rc;
}
