/*
 * proto.h - ferry's wire format: msgpack encode/decode of every message, its
 * version, its limits. No I/O here; msgpack-c is used only inside proto/.
 *
 * Every message is a msgpack map with "v" = FERRY_PROTO_VERSION. Decoders
 * accept map keys in any order, ignore no key they do not know (an unknown
 * key is FERRY_EPROTO, so a newer peer is noticed, not half-understood),
 * reject a missing field, a wrong type, trailing bytes, and anything over
 * struct ferry_limits, with FERRY_EPROTO / FERRY_ETOOBIG and a message naming
 * the field. They never crash and never allocate more than a small multiple
 * of the input size: a bounded pre-scan checks every length against the
 * bytes that remain before msgpack-c builds objects.
 *
 * Values travel as msgpack nil / int (int64; a uint64 above INT64_MAX is
 * refused) / float 64 (always 64-bit, so doubles are bit-exact) / str (TEXT,
 * any bytes) / bin (BLOB).
 *
 * Requests (bodies of POST /v1/...):
 *   manifest  {"v", "tenant": str, "after": int (-1: none), "counts": bool,
 *              "snapshot": bool (optional, sent only when true: start a copy
 *              from one exported snapshot),
 *              "changes": int (optional, sent only when > 0, with after >= 0:
 *              send the first change batch after "after" with the manifest,
 *              of at most that many changes; a source from before refuses
 *              the key, and the target asks again without it),
 *              "masks": bool (optional, sent only when true: name the
 *              masked columns), "as_of": bool (optional, sent only when
 *              true: say when the log was complete up to head); a source
 *              from before refuses either key, and the target asks again
 *              without it}
 *   snapshot  {"v", "tenant": str, "table": str, "after": [key values] | nil,
 *              "limit": int, "snapshot": str (optional: the manifest's),
 *              "copy": bool (optional, sent only when true: the target is
 *              PostgreSQL and takes rows as COPY text lines),
 *              "release": bool (optional, sent only when true, with
 *              "snapshot": no page; the copy stopped, the source lets the
 *              snapshot go and answers an empty page)}
 *   changes   {"v", "tenant": str, "after": int, "limit": int}
 *   digest    {"v", "tenant": str, "table": str, "lo": [key values] | nil,
 *              "hi": [key values] | nil, "parts": int 1..FERRY_DIGEST_MAX_PARTS,
 *              "coerce": bin (optional, sent only across engines: one byte
 *              per column of the table, enum ferry_coerce of checksum.h,
 *              how the target stores that column's values; absent: none),
 *              "hash": "siphash-1-3" | "pg-record-1" (optional: the row
 *              hash, checksum.h; absent: SHA-256, all a source from before
 *              it knows, which refuses the key: the target then asks again
 *              without it; "pg-record-1" only from a PostgreSQL target to a
 *              PostgreSQL source, which refuses it, as one from before it
 *              does, when it cannot hash the table so: the target then asks
 *              again with "siphash-1-3"),
 *              "hash_key": bin (FERRY_HASH_KEY_SIZE bytes, with "hash"
 *              only: the key, drawn at random by the target for one verify),
 *              "cols": bin (optional: one byte per column of the table, 1
 *              hashed, 0 hashed as NULL, the key's columns 1; absent: all
 *              hashed. Sent by a sync that checks the columns added on the
 *              source instead of copying the table again; a source from
 *              before it refuses the key, and the table is copied again)}
 *   rows      {"v", "tenant": str, "table": str,
 *              "keys": [[key values]...] (1..FERRY_ROWS_MAX_KEYS, one width)}
 *   freeze    {"v", "tenant": str, "on": bool}   (migration mode on / off)
 *   error     {"v", "code": str (ferry_strcode), "msg": str}  (any response)
 *
 * Responses:
 *   manifest  {"v", "tenant": str, "root": str, "head": int,
 *              "pending": int (-1 unknown), "tables": [table...],
 *              "engine": str (optional: "sqlite" | "postgresql"),
 *              "snapshot": str (optional: an exported snapshot that the
 *              pages of this copy may name; every change up to head is
 *              visible in it),
 *              "changes": bin (optional, when asked for: the first change
 *              batch, the very bytes POST /v1/changes would have answered),
 *              "masked": ["table.column"...] (optional, when asked for and
 *              any), "as_of": int (optional, when asked for and known: unix
 *              seconds at which the log last held every change up to head)}
 *     table   {"name", "cols": [[name, type, notnull bool, pk int]...],
 *              "fks": [[parent, [cols], [pcols], cascade bool]...],
 *              "without_rowid": bool, "scope": str | nil, "rows": int}
 *   batch     {"v", "kind": "snapshot"|"changes", "sets": [set...],
 *              "head": int, "more": bool, "last": [key values] | nil}
 *     set     {"table": str, "op": "upsert"|"delete", "cols": [str...],
 *              "rows": [[value...]...]}   (delete: cols are the key columns)
 *              or, in a snapshot batch answering "copy" from a PostgreSQL
 *              source: {"table", "op": "upsert", "copy": true, "cols",
 *              "rows": [bin...]}, each bin one row's line of COPY text
 *              (text format, the cols' fields, no CR, LF or end marker)
 *   digest    {"v", "ranges": [[first key values, count int >= 1,
 *              checksum int (the uint64's bits as int64)]...],
 *              "unkeyed": int >= 1 (optional, sent only when there are
 *              such rows, and only to a digest of the whole table: the
 *              tenant's rows whose primary key holds a NULL, which SQLite
 *              allows in a rowid table; no range counts them, and ferry
 *              cannot copy them)}
 *              (checksum.h; a rows request is answered with a changes batch;
 *              to "parts": 1, the first key is one of the range's keys, not
 *              always its least)
 *   freeze    {"v", "tenant": str, "frozen": bool, "head": int}
 *              (head: the change-log head once no write to the tenant is in flight)
 *
 * The batch encoder streams: sets and rows are written as they are read from
 * the database, and array headers are patched when a set or the batch ends.
 */
#ifndef FERRY_PROTO_H
#define FERRY_PROTO_H

#include "../common/checksum.h"
#include "../common/error.h"
#include "../common/schema.h"
#include "../common/value.h"

#include <stddef.h>
#include <stdint.h>

#define FERRY_PROTO_VERSION 1

/* Longest snapshot id (ferry_snapshot_id_ok). */
#define FERRY_SNAPSHOT_ID_MAX 64

/* Most keys in one rows request. */
#define FERRY_ROWS_MAX_KEYS 1000

struct ferry_limits {
    size_t max_body;    /* bytes of one message */
    size_t max_request; /* bytes of one request body */
    size_t max_objects; /* msgpack objects in one message */
    size_t max_depth;   /* nesting depth */
    size_t max_cols;    /* columns of one table */
    size_t max_tables;  /* tables in a manifest */
    size_t max_name;    /* bytes of a table, column or tenant name */
};

/* 1 GiB bodies, 64 KiB requests, 8M objects, depth 8, 1000 cols/tables, 256-byte names */
extern const struct ferry_limits ferry_limits_default;

enum ferry_op { FERRY_OP_UPSERT = 1, FERRY_OP_DELETE = 2 };
enum ferry_kind { FERRY_KIND_SNAPSHOT = 1, FERRY_KIND_CHANGES = 2 };

/*
 * Decoded messages. Strings are NUL-terminated copies or point into the
 * decoder's memory; either way they are owned by the message and valid until
 * its _free (or, for requests, until ferry_request_release).
 */
struct ferry_request {
    enum {
        FERRY_REQ_MANIFEST = 1,
        FERRY_REQ_SNAPSHOT,
        FERRY_REQ_CHANGES,
        FERRY_REQ_DIGEST,
        FERRY_REQ_ROWS,
        FERRY_REQ_FREEZE
    } type;
    char *tenant;
    char *table;                   /* snapshot, digest, rows */
    struct ferry_value *after_key; /* snapshot: nafter key values, NULL = from the start */
    size_t nafter;
    int64_t after;               /* manifest, changes */
    int64_t limit;               /* snapshot, changes: > 0 */
    int counts;                  /* manifest */
    int want_snapshot;           /* manifest: ask for an exported snapshot */
    int64_t with_changes;        /* manifest: > 0, ask for the first change batch too */
    int masks;                   /* manifest: ask which columns the source masks */
    int as_of;                   /* manifest: ask when the log was complete up to head */
    char *snapshot;              /* snapshot: the manifest's snapshot id, NULL = none */
    int copy_text;               /* snapshot: the target takes rows as COPY text lines */
    int release;                 /* snapshot: no page, the copy stopped: let snapshot go */
    int on;                      /* freeze: 1 freeze, 0 unfreeze */
    struct ferry_value *lo, *hi; /* digest: nlo / nhi key values, NULL = open end */
    size_t nlo, nhi;
    int64_t parts;         /* digest: 1..FERRY_DIGEST_MAX_PARTS */
    unsigned char *coerce; /* digest: NULL, or ncoerce codes 0..FERRY_COERCE_MAX */
    size_t ncoerce;
    unsigned char *cols; /* digest: NULL (all hashed), or ncols bytes: 1 hashed, 0 as NULL */
    size_t ncols;
    int hash; /* digest: enum ferry_hash (FERRY_HASH_SHA256: "hash" not sent) */
    unsigned char hash_key[FERRY_HASH_KEY_SIZE]; /* digest: the key of a keyed hash */
    struct ferry_value *keys; /* rows: nkeys keys of keywidth values, row-major */
    size_t nkeys, keywidth;
    void *priv_; /* decoder memory */
};

struct ferry_manifest {
    char *tenant;
    char *root;
    int64_t head;
    int64_t pending;
    struct ferry_table_info *tables; /* parent-first order */
    size_t ntables;
    /*
     * The source's engine ("sqlite", "postgresql"), which says how to read
     * the columns' declared types; NULL when the source did not send it.
     */
    char *engine;
    /*
     * The id of an exported snapshot to name in this copy's snapshot
     * requests (PostgreSQL, when asked for); NULL when there is none.
     */
    char *snapshot;
    /*
     * The first change batch after the request's "after" (encoded, as the
     * changes endpoint answers it), nchanges bytes, when asked for and the
     * source sent one; NULL otherwise.
     */
    char *changes;
    size_t nchanges;
    /*
     * The columns the source masks ([mask]), as "table.column", when the
     * request asked (masks) and there are any; NULL and 0 otherwise.
     */
    char **masked;
    size_t nmasked;
    /*
     * The unix time at which the source's change log held every change up
     * to head (ferry_capture_last_as_of), when asked (as_of) and known; 0
     * otherwise. Behind the manifest's own time while a transaction in
     * flight holds the log back: the lag counts from it.
     */
    int64_t as_of;
};

struct ferry_set {
    const char *table;
    enum ferry_op op;
    const char **cols; /* ncols names */
    size_t ncols;
    /*
     * nrows * ncols, row-major; with copy, nrows BLOBs instead: each row's
     * line of PostgreSQL COPY text (the ncols fields, no newline)
     */
    struct ferry_value *vals;
    size_t nrows;
    int copy;
};

struct ferry_batch {
    enum ferry_kind kind;
    struct ferry_set *sets;
    size_t nsets;
    int64_t head;
    int more;
    struct ferry_value *last; /* nlast values, NULL when nil */
    size_t nlast;
    void *priv_; /* decoder memory: the values point into it */
};

/* ---- requests ---- */

/*
 * 1 when id is a snapshot id as the wire carries it: 1..FERRY_SNAPSHOT_ID_MAX
 * letters, digits and '-'. Decoders refuse anything else (FERRY_EPROTO).
 */
int ferry_snapshot_id_ok(const char *id);

/*
 * Encode a request into *out (owned, free with free()). The type field of
 * req selects the message.
 */
int ferry_request_encode(const struct ferry_request *req, char **out, size_t *len,
                         struct ferry_error *err);
/* Decode a request body of the given type; release *req with ferry_request_release. */
int ferry_request_decode(int type, const char *data, size_t len, const struct ferry_limits *lim,
                         struct ferry_request *req, struct ferry_error *err);
void ferry_request_release(struct ferry_request *req);

/* ---- error responses ---- */
int ferry_errmsg_encode(int code, const char *msg, char **out, size_t *len);
/* Decode an error body into err (code from its name; EPROTO when unknown). */
int ferry_errmsg_decode(const char *data, size_t len, struct ferry_error *err);

/* ---- manifest ---- */
int ferry_manifest_encode(const struct ferry_manifest *m, char **out, size_t *len,
                          struct ferry_error *err);
/* *out owned, free with ferry_manifest_free. data may be freed after the call. */
int ferry_manifest_decode(const char *data, size_t len, const struct ferry_limits *lim,
                          struct ferry_manifest **out, struct ferry_error *err);
void ferry_manifest_free(struct ferry_manifest *m);

/* ---- digest responses ---- */

struct ferry_digest {
    struct ferry_range *ranges; /* key values point into the decoded data */
    size_t nranges;
    int64_t unkeyed; /* the tenant's rows with a NULL in their key (0: none, or not sent) */
    void *priv_;
};

/*
 * Encode n ranges (n <= FERRY_DIGEST_MAX_PARTS) and the count of unkeyed rows
 * (sent when > 0) into *out (owned, free with free()).
 */
int ferry_digest_encode(const struct ferry_range *r, size_t n, int64_t unkeyed, char **out,
                        size_t *len, struct ferry_error *err);
/*
 * Decode a digest response. The key values point into data, which must stay
 * valid and unchanged until ferry_digest_free(*out). Every range has a key
 * of the same width and a count of at least 1.
 */
int ferry_digest_decode(const char *data, size_t len, const struct ferry_limits *lim,
                        struct ferry_digest **out, struct ferry_error *err);
void ferry_digest_free(struct ferry_digest *d);

/* ---- freeze responses ---- */

#define FERRY_FREEZE_TENANT_MAX 256

struct ferry_freeze_reply {
    char tenant[FERRY_FREEZE_TENANT_MAX + 1];
    int frozen;
    int64_t head;
};

/* Encode into *out (owned, free with free()). */
int ferry_freeze_reply_encode(const struct ferry_freeze_reply *r, char **out, size_t *len,
                              struct ferry_error *err);
/* Decode into *r (caller-owned, nothing to release). */
int ferry_freeze_reply_decode(const char *data, size_t len, const struct ferry_limits *lim,
                              struct ferry_freeze_reply *r, struct ferry_error *err);

/* ---- batches: streaming encoder ---- */
struct ferry_enc; /* opaque */

/* New encoder for one batch of kind, at most max_body bytes. Owned, free with ferry_enc_free. */
struct ferry_enc *ferry_enc_new(enum ferry_kind kind, size_t max_body);
/* Start a set; names are copied into the output at once. */
int ferry_enc_set_begin(struct ferry_enc *e, const char *table, enum ferry_op op,
                        const char *const *cols, size_t ncols);
/* Append one row (ncols values of the current set). */
int ferry_enc_row(struct ferry_enc *e, const struct ferry_value *vals, size_t n);
/*
 * A snapshot set of COPY text lines (PostgreSQL to PostgreSQL, when the
 * target asked): each row is one line of `COPY ... TO STDOUT` text format
 * holding the ncols fields, without its newline, appended with
 * ferry_enc_line (ferry_enc_row refuses such a set).
 */
int ferry_enc_set_begin_copy(struct ferry_enc *e, const char *table, const char *const *cols,
                             size_t ncols);
int ferry_enc_line(struct ferry_enc *e, const char *line, size_t n);
int ferry_enc_set_end(struct ferry_enc *e);
/*
 * Finish: write head, more and last (nlast key values, or last == NULL for
 * nil). *out points into the encoder (borrowed, valid until ferry_enc_free).
 */
int ferry_enc_finish(struct ferry_enc *e, int64_t head, int more, const struct ferry_value *last,
                     size_t nlast, const char **out, size_t *len);
/*
 * After ferry_enc_finish: its output, handed over (owned, free with free()),
 * or NULL before a finish. The encoder keeps nothing; free it as before.
 */
char *ferry_enc_take(struct ferry_enc *e, size_t *len);
/* Bytes written so far: producers stop a batch before it gets too big. */
size_t ferry_enc_size(const struct ferry_enc *e);
/* Bytes of the biggest row or line appended so far (a batch may carry one big row). */
size_t ferry_enc_biggest(const struct ferry_enc *e);
void ferry_enc_free(struct ferry_enc *e);

/*
 * Decode a batch. The values point into data (zero-copy for str/bin), so data
 * must stay valid and unchanged until ferry_batch_free(*out).
 */
int ferry_batch_decode(const char *data, size_t len, const struct ferry_limits *lim,
                       struct ferry_batch **out, struct ferry_error *err);
void ferry_batch_free(struct ferry_batch *b);

#endif
