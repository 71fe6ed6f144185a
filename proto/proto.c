/*
 * proto.c - ferry's wire format over msgpack-c (see proto.h for the messages).
 *
 * Encoding goes through one msgpack_packer whose write callback appends to a
 * struct ferry_buf with a hard maximum; a failed write is remembered in the
 * writer, so a message is packed in one go and checked once at the end.
 *
 * Decoding is three steps, so that hostile bytes can neither crash us nor
 * make us allocate much:
 *   1. prescan(): our own walk of the msgpack framing over the raw bytes. It
 *      checks every length and element count against the bytes that remain,
 *      the nesting depth and the object count, and that exactly one object
 *      fills the input. msgpack-c allocates an array's element storage as
 *      soon as it reads the count, so without this a 5-byte array32 header
 *      claiming 4G elements would ask for 96 GB.
 *   2. msgpack_unpack_next(): builds the object tree. After step 1 every
 *      object it allocates stands for at least one input byte, so the tree is
 *      at most sizeof(msgpack_object) times the input (and max_objects).
 *      str and bin objects point into the input (zero-copy).
 *   3. a strict walk from the tree into ferry's structs: every key known,
 *      none missing or repeated, every type and limit checked, with an error
 *      message naming the field. Arrays sized from the wire are allocated
 *      only once the elements they hold have been seen to exist.
 */
#include "proto.h"

#include "../common/buf.h"

#include <msgpack.h>

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const struct ferry_limits ferry_limits_default = {
    .max_body = (size_t)1 << 30, /* config.h FERRY_MAX_MESSAGE_MB */
    .max_request = (size_t)64 << 10,
    .max_objects = (size_t)8 << 20,
    .max_depth = 8,
    .max_cols = 1000,
    .max_tables = 1000,
    .max_name = 256,
};

/*
 * msgpack-c's unpacker keeps a fixed stack of open containers
 * (MSGPACK_EMBED_STACK_SIZE in its private unpack_define.h, 32); we never
 * hand it deeper nesting than that, whatever the limits say.
 */
#define SCAN_MAX_DEPTH 32

/* Bytes of an array32 header: 0xdd and a big-endian count. */
#define ARRAY32_LEN 5

/* Room for the field path of an error message ("table 3 (\"posts\") fk 0 col 1"). */
#define WHERE_MAX 160

/* ------------------------------------------------------------------------ */
/* Encoding                                                                 */
/* ------------------------------------------------------------------------ */

struct writer {
    struct ferry_buf buf;
    int rc; /* first failure of a write: ETOOBIG or ENOMEM, 0 while all went well */
    msgpack_packer pk;
};

static int writer_cb(void *data, const char *p, size_t n)
{
    struct writer *w = data;
    struct ferry_buf *b = &w->buf;
    int rc;

    if (w->rc)
        return -1;
    /* msgpack writes a few bytes at a time (a header, an int): room already there */
    if (b->data && n < b->cap - b->len && n <= b->max - b->len) {
        memcpy(b->data + b->len, p, n);
        b->len += n;
        b->data[b->len] = '\0';
        return 0;
    }
    rc = ferry_buf_add(b, p, n);
    if (rc) {
        w->rc = rc;
        return -1;
    }
    return 0;
}

static void writer_init(struct writer *w, size_t max)
{
    ferry_buf_init(&w->buf, max);
    w->rc = 0;
    msgpack_packer_init(&w->pk, w, writer_cb);
}

static void pack_bytes_str(struct writer *w, const char *p, size_t n)
{
    msgpack_pack_str(&w->pk, n);
    msgpack_pack_str_body(&w->pk, p, n);
}

static void pack_cstr(struct writer *w, const char *s)
{
    pack_bytes_str(w, s, strlen(s));
}

static void pack_bool(struct writer *w, int b)
{
    if (b)
        msgpack_pack_true(&w->pk);
    else
        msgpack_pack_false(&w->pk);
}

static void pack_array32_placeholder(struct writer *w)
{
    static const char hdr[ARRAY32_LEN] = {(char)0xdd, 0, 0, 0, 0};

    writer_cb(w, hdr, sizeof(hdr));
}

static void patch_array32(struct writer *w, size_t at, uint32_t n)
{
    unsigned char *p = (unsigned char *)w->buf.data + at;

    p[1] = (unsigned char)(n >> 24);
    p[2] = (unsigned char)(n >> 16);
    p[3] = (unsigned char)(n >> 8);
    p[4] = (unsigned char)n;
}

/* Returns 0, EINTERNAL for a value of no known type, ETOOBIG for one msgpack cannot frame. */
static int pack_value(struct writer *w, const struct ferry_value *v)
{
    switch (v->type) {
    case FERRY_NULL:
        msgpack_pack_nil(&w->pk);
        return 0;
    case FERRY_INT:
        msgpack_pack_int64(&w->pk, v->u.i);
        return 0;
    case FERRY_FLOAT:
        /* always float64: float32 would lose bits, and msgpack-c packs doubles bit for bit */
        msgpack_pack_double(&w->pk, v->u.f);
        return 0;
    case FERRY_TEXT:
        if (v->u.s.n > UINT32_MAX)
            return FERRY_ETOOBIG;
        pack_bytes_str(w, v->u.s.p, v->u.s.n);
        return 0;
    case FERRY_BLOB:
        if (v->u.s.n > UINT32_MAX)
            return FERRY_ETOOBIG;
        msgpack_pack_bin(&w->pk, v->u.s.n);
        msgpack_pack_bin_body(&w->pk, v->u.s.p, v->u.s.n);
        return 0;
    }
    return FERRY_EINTERNAL;
}

static int pack_values(struct writer *w, const struct ferry_value *vals, size_t n)
{
    int rc;

    msgpack_pack_array(&w->pk, n);
    for (size_t i = 0; i < n; i++) {
        rc = pack_value(w, &vals[i]);
        if (rc)
            return rc;
    }
    return 0;
}

/* Hand the packed message to the caller, or translate the writer's failure. */
static int writer_finish(struct writer *w, const char *what, char **out, size_t *len,
                         struct ferry_error *err)
{
    int rc = w->rc;

    if (rc) {
        ferry_buf_release(&w->buf);
        return ferry_error_set(err, rc, "%s: cannot encode: %s", what, ferry_strerror(rc));
    }
    *out = ferry_buf_detach(&w->buf, len);
    if (!*out)
        return ferry_error_set(err, FERRY_ENOMEM, "%s: out of memory", what);
    return 0;
}

/* Encoders other than the batch one have no size limit of their own: the peer's decoder has. */
#define ENCODE_MAX (SIZE_MAX / 2)

/* The digest and rows requests of verify/repair. */
static int pack_verify_request(struct writer *w, const struct ferry_request *req,
                               struct ferry_error *err)
{
    int rc = 0;

    if (!req->table)
        return ferry_error_set(err, FERRY_EINTERNAL, "request: table is NULL");
    if (req->type == FERRY_REQ_DIGEST) {
        if ((req->lo && (req->nlo == 0 || req->nlo > FERRY_MAX_KEY_COLS)) ||
            (req->hi && (req->nhi == 0 || req->nhi > FERRY_MAX_KEY_COLS)))
            return ferry_error_set(err, FERRY_EINTERNAL,
                                   "digest request: bound of %zu values, expected 1 to %d",
                                   req->lo ? req->nlo : req->nhi, FERRY_MAX_KEY_COLS);
        if (req->parts < 1 || req->parts > FERRY_DIGEST_MAX_PARTS)
            return ferry_error_set(err, FERRY_EINTERNAL,
                                   "digest request: parts %" PRId64 " is not 1 to %d", req->parts,
                                   FERRY_DIGEST_MAX_PARTS);
        if (req->coerce && req->ncoerce == 0)
            return ferry_error_set(err, FERRY_EINTERNAL, "digest request: no coercions");
        if (req->cols && req->ncols == 0)
            return ferry_error_set(err, FERRY_EINTERNAL, "digest request: no columns");
        if (req->hash < 0 || req->hash > FERRY_HASH_MAX)
            return ferry_error_set(err, FERRY_EINTERNAL, "digest request: hash %d", req->hash);
        /* "hash" only when not SHA-256: a source from before it was added refuses the key */
        msgpack_pack_map(&w->pk,
                         6 + (req->coerce ? 1 : 0) + (req->hash ? 2 : 0) + (req->cols ? 1 : 0));
    } else {
        if (req->nkeys == 0 || req->nkeys > FERRY_ROWS_MAX_KEYS || !req->keys ||
            req->keywidth == 0 || req->keywidth > FERRY_MAX_KEY_COLS)
            return ferry_error_set(err, FERRY_EINTERNAL,
                                   "rows request: %zu keys of %zu values, expected 1 to %d keys "
                                   "of 1 to %d",
                                   req->nkeys, req->keywidth, FERRY_ROWS_MAX_KEYS,
                                   FERRY_MAX_KEY_COLS);
        msgpack_pack_map(&w->pk, 4);
    }
    pack_cstr(w, "v");
    msgpack_pack_int(&w->pk, FERRY_PROTO_VERSION);
    pack_cstr(w, "tenant");
    pack_cstr(w, req->tenant);
    pack_cstr(w, "table");
    pack_cstr(w, req->table);
    if (req->type == FERRY_REQ_DIGEST) {
        pack_cstr(w, "lo");
        if (req->lo)
            rc = pack_values(w, req->lo, req->nlo);
        else
            msgpack_pack_nil(&w->pk);
        pack_cstr(w, "hi");
        if (!rc && req->hi)
            rc = pack_values(w, req->hi, req->nhi);
        else
            msgpack_pack_nil(&w->pk);
        pack_cstr(w, "parts");
        msgpack_pack_int64(&w->pk, req->parts);
        if (req->coerce) {
            pack_cstr(w, "coerce");
            msgpack_pack_bin(&w->pk, req->ncoerce);
            msgpack_pack_bin_body(&w->pk, req->coerce, req->ncoerce);
        }
        if (req->cols) {
            pack_cstr(w, "cols");
            msgpack_pack_bin(&w->pk, req->ncols);
            msgpack_pack_bin_body(&w->pk, req->cols, req->ncols);
        }
        if (req->hash) {
            pack_cstr(w, "hash");
            pack_cstr(w, ferry_hash_name(req->hash));
            pack_cstr(w, "hash_key");
            msgpack_pack_bin(&w->pk, FERRY_HASH_KEY_SIZE);
            msgpack_pack_bin_body(&w->pk, req->hash_key, FERRY_HASH_KEY_SIZE);
        }
    } else {
        pack_cstr(w, "keys");
        msgpack_pack_array(&w->pk, req->nkeys);
        for (size_t i = 0; i < req->nkeys && !rc; i++)
            rc = pack_values(w, &req->keys[i * req->keywidth], req->keywidth);
    }
    if (rc)
        return ferry_error_set(err, rc, "request: a key value cannot be encoded");
    return 0;
}

int ferry_request_encode(const struct ferry_request *req, char **out, size_t *len,
                         struct ferry_error *err)
{
    struct writer w;
    int rc = 0;

    *out = NULL;
    *len = 0;
    if (!req->tenant)
        return ferry_error_set(err, FERRY_EINTERNAL, "request: tenant is NULL");
    writer_init(&w, ENCODE_MAX);
    switch (req->type) {
    case FERRY_REQ_MANIFEST:
        /*
         * "snapshot" and "changes" only when asked for: a source from before
         * they were added refuses the keys
         */
        msgpack_pack_map(&w.pk, 4 + (req->want_snapshot ? 1 : 0) + (req->with_changes > 0 ? 1 : 0) +
                                    (req->masks ? 1 : 0) + (req->as_of ? 1 : 0));
        pack_cstr(&w, "v");
        msgpack_pack_int(&w.pk, FERRY_PROTO_VERSION);
        pack_cstr(&w, "tenant");
        pack_cstr(&w, req->tenant);
        pack_cstr(&w, "after");
        msgpack_pack_int64(&w.pk, req->after);
        pack_cstr(&w, "counts");
        pack_bool(&w, req->counts);
        if (req->want_snapshot) {
            pack_cstr(&w, "snapshot");
            pack_bool(&w, 1);
        }
        if (req->with_changes > 0) {
            pack_cstr(&w, "changes");
            msgpack_pack_int64(&w.pk, req->with_changes);
        }
        if (req->masks) { /* likewise */
            pack_cstr(&w, "masks");
            pack_bool(&w, 1);
        }
        if (req->as_of) { /* likewise */
            pack_cstr(&w, "as_of");
            pack_bool(&w, 1);
        }
        break;
    case FERRY_REQ_SNAPSHOT:
        if (!req->table) {
            rc = ferry_error_set(err, FERRY_EINTERNAL, "snapshot request: table is NULL");
            goto out;
        }
        if (req->after_key && (req->nafter == 0 || req->nafter > FERRY_MAX_KEY_COLS)) {
            rc = ferry_error_set(err, FERRY_EINTERNAL,
                                 "snapshot request: after key of %zu values, expected 1 to %d",
                                 req->nafter, FERRY_MAX_KEY_COLS);
            goto out;
        }
        if (req->limit <= 0) {
            rc = ferry_error_set(err, FERRY_EINTERNAL,
                                 "snapshot request: limit %" PRId64 " is not positive", req->limit);
            goto out;
        }
        if (req->snapshot && !ferry_snapshot_id_ok(req->snapshot)) {
            rc = ferry_error_set(err, FERRY_EINTERNAL, "snapshot request: bad snapshot id");
            goto out;
        }
        /* "copy" only when true: a source from before it was added refuses the key */
        msgpack_pack_map(&w.pk, 5 + (req->snapshot ? 1 : 0) + (req->copy_text ? 1 : 0) +
                                    (req->release ? 1 : 0));
        pack_cstr(&w, "v");
        msgpack_pack_int(&w.pk, FERRY_PROTO_VERSION);
        pack_cstr(&w, "tenant");
        pack_cstr(&w, req->tenant);
        if (req->snapshot) {
            pack_cstr(&w, "snapshot");
            pack_cstr(&w, req->snapshot);
        }
        if (req->copy_text) {
            pack_cstr(&w, "copy");
            pack_bool(&w, 1);
        }
        /* "release" only when true: a source from before it was added refuses the key */
        if (req->release) {
            pack_cstr(&w, "release");
            pack_bool(&w, 1);
        }
        pack_cstr(&w, "table");
        pack_cstr(&w, req->table);
        pack_cstr(&w, "after");
        if (req->after_key)
            rc = pack_values(&w, req->after_key, req->nafter);
        else
            msgpack_pack_nil(&w.pk);
        if (rc) {
            rc = ferry_error_set(err, rc, "snapshot request: after key value cannot be encoded");
            goto out;
        }
        pack_cstr(&w, "limit");
        msgpack_pack_int64(&w.pk, req->limit);
        break;
    case FERRY_REQ_CHANGES:
        if (req->limit <= 0) {
            rc = ferry_error_set(err, FERRY_EINTERNAL,
                                 "changes request: limit %" PRId64 " is not positive", req->limit);
            goto out;
        }
        msgpack_pack_map(&w.pk, 4);
        pack_cstr(&w, "v");
        msgpack_pack_int(&w.pk, FERRY_PROTO_VERSION);
        pack_cstr(&w, "tenant");
        pack_cstr(&w, req->tenant);
        pack_cstr(&w, "after");
        msgpack_pack_int64(&w.pk, req->after);
        pack_cstr(&w, "limit");
        msgpack_pack_int64(&w.pk, req->limit);
        break;
    case FERRY_REQ_DIGEST:
    case FERRY_REQ_ROWS:
        rc = pack_verify_request(&w, req, err);
        if (rc)
            goto out;
        break;
    case FERRY_REQ_FREEZE:
        msgpack_pack_map(&w.pk, 3);
        pack_cstr(&w, "v");
        msgpack_pack_int(&w.pk, FERRY_PROTO_VERSION);
        pack_cstr(&w, "tenant");
        pack_cstr(&w, req->tenant);
        pack_cstr(&w, "on");
        pack_bool(&w, req->on);
        break;
    default:
        rc = ferry_error_set(err, FERRY_EINTERNAL, "request: unknown type %d", (int)req->type);
        goto out;
    }
    rc = writer_finish(&w, "request", out, len, err);
out:
    ferry_buf_release(&w.buf);
    return rc;
}

int ferry_errmsg_encode(int code, const char *msg, char **out, size_t *len)
{
    struct writer w;

    *out = NULL;
    *len = 0;
    writer_init(&w, ENCODE_MAX);
    msgpack_pack_map(&w.pk, 3);
    pack_cstr(&w, "v");
    msgpack_pack_int(&w.pk, FERRY_PROTO_VERSION);
    pack_cstr(&w, "code");
    pack_cstr(&w, ferry_strcode(code));
    pack_cstr(&w, "msg");
    pack_cstr(&w, msg ? msg : ferry_strerror(code));
    return writer_finish(&w, "error response", out, len, NULL);
}

static int pack_table(struct writer *w, const struct ferry_table_info *t, struct ferry_error *err)
{
    if (!t->name)
        return ferry_error_set(err, FERRY_EINTERNAL, "manifest: table name is NULL");
    msgpack_pack_map(&w->pk, 6);
    pack_cstr(w, "name");
    pack_cstr(w, t->name);
    pack_cstr(w, "cols");
    msgpack_pack_array(&w->pk, t->ncols);
    for (size_t i = 0; i < t->ncols; i++) {
        const struct ferry_column *c = &t->cols[i];

        if (!c->name)
            return ferry_error_set(err, FERRY_EINTERNAL,
                                   "manifest: table \"%s\": column name is NULL", t->name);
        msgpack_pack_array(&w->pk, 4);
        pack_cstr(w, c->name);
        pack_cstr(w, c->type ? c->type : "");
        pack_bool(w, c->notnull);
        msgpack_pack_int(&w->pk, c->pk);
    }
    pack_cstr(w, "fks");
    msgpack_pack_array(&w->pk, t->nfks);
    for (size_t i = 0; i < t->nfks; i++) {
        const struct ferry_fkey *fk = &t->fks[i];

        if (!fk->parent)
            return ferry_error_set(err, FERRY_EINTERNAL,
                                   "manifest: table \"%s\": fk parent is NULL", t->name);
        msgpack_pack_array(&w->pk, 4);
        pack_cstr(w, fk->parent);
        for (int side = 0; side < 2; side++) {
            char **names = side ? fk->pcols : fk->cols;

            msgpack_pack_array(&w->pk, fk->ncols);
            for (size_t j = 0; j < fk->ncols; j++) {
                if (!names[j])
                    return ferry_error_set(err, FERRY_EINTERNAL,
                                           "manifest: table \"%s\": fk column is NULL", t->name);
                pack_cstr(w, names[j]);
            }
        }
        pack_bool(w, fk->cascade);
    }
    pack_cstr(w, "without_rowid");
    pack_bool(w, t->without_rowid);
    pack_cstr(w, "scope");
    /* "" would be an empty predicate: it means no scope, as NULL does */
    if (t->scope_sql && t->scope_sql[0])
        pack_cstr(w, t->scope_sql);
    else
        msgpack_pack_nil(&w->pk);
    pack_cstr(w, "rows");
    msgpack_pack_int64(&w->pk, t->rows);
    return 0;
}

int ferry_manifest_encode(const struct ferry_manifest *m, char **out, size_t *len,
                          struct ferry_error *err)
{
    struct writer w;
    int rc;

    *out = NULL;
    *len = 0;
    if (!m->tenant || !m->root)
        return ferry_error_set(err, FERRY_EINTERNAL, "manifest: tenant or root is NULL");
    if (m->snapshot && !ferry_snapshot_id_ok(m->snapshot))
        return ferry_error_set(err, FERRY_EINTERNAL, "manifest: bad snapshot id");
    writer_init(&w, ENCODE_MAX);
    msgpack_pack_map(&w.pk, 6 + (m->engine ? 1 : 0) + (m->snapshot ? 1 : 0) + (m->changes ? 1 : 0) +
                                (m->nmasked ? 1 : 0) + (m->as_of > 0 ? 1 : 0));
    pack_cstr(&w, "v");
    msgpack_pack_int(&w.pk, FERRY_PROTO_VERSION);
    if (m->as_of > 0) { /* only to a target that asked: others refuse the key */
        pack_cstr(&w, "as_of");
        msgpack_pack_int64(&w.pk, m->as_of);
    }
    if (m->nmasked) { /* likewise */
        pack_cstr(&w, "masked");
        msgpack_pack_array(&w.pk, m->nmasked);
        for (size_t i = 0; i < m->nmasked; i++)
            pack_cstr(&w, m->masked[i]);
    }
    if (m->changes) {
        pack_cstr(&w, "changes");
        msgpack_pack_bin(&w.pk, m->nchanges);
        msgpack_pack_bin_body(&w.pk, m->changes, m->nchanges);
    }
    if (m->engine) {
        pack_cstr(&w, "engine");
        pack_cstr(&w, m->engine);
    }
    if (m->snapshot) {
        pack_cstr(&w, "snapshot");
        pack_cstr(&w, m->snapshot);
    }
    pack_cstr(&w, "tenant");
    pack_cstr(&w, m->tenant);
    pack_cstr(&w, "root");
    pack_cstr(&w, m->root);
    pack_cstr(&w, "head");
    msgpack_pack_int64(&w.pk, m->head);
    pack_cstr(&w, "pending");
    msgpack_pack_int64(&w.pk, m->pending);
    pack_cstr(&w, "tables");
    msgpack_pack_array(&w.pk, m->ntables);
    for (size_t i = 0; i < m->ntables; i++) {
        rc = pack_table(&w, &m->tables[i], err);
        if (rc)
            goto out;
    }
    rc = writer_finish(&w, "manifest", out, len, err);
out:
    ferry_buf_release(&w.buf);
    return rc;
}

/* ---- streaming batch encoder ---- */

enum enc_state { ENC_OPEN, ENC_SET, ENC_DONE, ENC_FAILED };

struct ferry_enc {
    struct writer w;
    enum enc_state state;
    int rc;         /* ENC_FAILED: the error every later call returns */
    size_t sets_at; /* offset of the placeholder header of "sets" */
    uint32_t nsets;
    size_t rows_at; /* offset of the placeholder header of the current set's "rows" */
    uint32_t nrows;
    size_t ncols;
    int copy;       /* the current set holds COPY text lines (ferry_enc_line) */
    size_t biggest; /* bytes of the biggest row or line appended */
};

/*
 * After a failed row, set or finish: undo everything written since mark, so
 * that after an ETOOBIG a producer can end the set and finish the batch with
 * what fits. ENOMEM has freed the buffer (ferry_buf's rule): nothing to go
 * back to, and the encoder is poisoned.
 */
static int enc_fail(struct ferry_enc *e, size_t mark, int rc)
{
    if (e->w.rc != FERRY_ENOMEM && e->w.buf.data && mark <= e->w.buf.len) {
        e->w.buf.len = mark;
        e->w.buf.data[mark] = '\0';
        e->w.rc = 0;
        return rc;
    }
    e->state = ENC_FAILED;
    e->rc = rc;
    return rc;
}

struct ferry_enc *ferry_enc_new(enum ferry_kind kind, size_t max_body)
{
    struct ferry_enc *e = calloc(1, sizeof(*e));

    if (!e)
        return NULL;
    writer_init(&e->w, max_body);
    e->state = ENC_OPEN;
    msgpack_pack_map(&e->w.pk, 6);
    pack_cstr(&e->w, "v");
    msgpack_pack_int(&e->w.pk, FERRY_PROTO_VERSION);
    pack_cstr(&e->w, "kind");
    pack_cstr(&e->w, kind == FERRY_KIND_CHANGES ? "changes" : "snapshot");
    pack_cstr(&e->w, "sets");
    e->sets_at = e->w.buf.len;
    pack_array32_placeholder(&e->w);
    if (e->w.rc == FERRY_ENOMEM) {
        ferry_enc_free(e);
        return NULL;
    }
    if (e->w.rc || (kind != FERRY_KIND_SNAPSHOT && kind != FERRY_KIND_CHANGES)) {
        e->state = ENC_FAILED;
        e->rc = e->w.rc ? e->w.rc : FERRY_EINTERNAL;
    }
    return e;
}

int ferry_enc_set_begin(struct ferry_enc *e, const char *table, enum ferry_op op,
                        const char *const *cols, size_t ncols)
{
    size_t mark;

    if (e->state == ENC_FAILED)
        return e->rc;
    if (e->state != ENC_OPEN || !table || (op != FERRY_OP_UPSERT && op != FERRY_OP_DELETE) ||
        ncols == 0 || (op == FERRY_OP_DELETE && ncols > FERRY_MAX_KEY_COLS))
        return FERRY_EINTERNAL;
    for (size_t i = 0; i < ncols; i++)
        if (!cols[i])
            return FERRY_EINTERNAL;
    if (e->nsets == UINT32_MAX)
        return FERRY_ETOOBIG;
    mark = e->w.buf.len;
    msgpack_pack_map(&e->w.pk, 4);
    pack_cstr(&e->w, "table");
    pack_cstr(&e->w, table);
    pack_cstr(&e->w, "op");
    pack_cstr(&e->w, op == FERRY_OP_DELETE ? "delete" : "upsert");
    pack_cstr(&e->w, "cols");
    msgpack_pack_array(&e->w.pk, ncols);
    for (size_t i = 0; i < ncols; i++)
        pack_cstr(&e->w, cols[i]);
    pack_cstr(&e->w, "rows");
    e->rows_at = e->w.buf.len;
    pack_array32_placeholder(&e->w);
    if (e->w.rc)
        return enc_fail(e, mark, e->w.rc);
    e->nsets++;
    e->nrows = 0;
    e->ncols = ncols;
    e->copy = 0;
    e->state = ENC_SET;
    return 0;
}

int ferry_enc_set_begin_copy(struct ferry_enc *e, const char *table, const char *const *cols,
                             size_t ncols)
{
    size_t mark;

    if (e->state == ENC_FAILED)
        return e->rc;
    if (e->state != ENC_OPEN || !table || ncols == 0)
        return FERRY_EINTERNAL;
    for (size_t i = 0; i < ncols; i++)
        if (!cols[i])
            return FERRY_EINTERNAL;
    if (e->nsets == UINT32_MAX)
        return FERRY_ETOOBIG;
    mark = e->w.buf.len;
    msgpack_pack_map(&e->w.pk, 5);
    pack_cstr(&e->w, "table");
    pack_cstr(&e->w, table);
    pack_cstr(&e->w, "op");
    pack_cstr(&e->w, "upsert");
    pack_cstr(&e->w, "copy");
    pack_bool(&e->w, 1);
    pack_cstr(&e->w, "cols");
    msgpack_pack_array(&e->w.pk, ncols);
    for (size_t i = 0; i < ncols; i++)
        pack_cstr(&e->w, cols[i]);
    pack_cstr(&e->w, "rows");
    e->rows_at = e->w.buf.len;
    pack_array32_placeholder(&e->w);
    if (e->w.rc)
        return enc_fail(e, mark, e->w.rc);
    e->nsets++;
    e->nrows = 0;
    e->ncols = 0;
    e->copy = 1;
    e->state = ENC_SET;
    return 0;
}

int ferry_enc_line(struct ferry_enc *e, const char *line, size_t n)
{
    size_t mark;

    if (e->state == ENC_FAILED)
        return e->rc;
    if (e->state != ENC_SET || !e->copy || n > UINT32_MAX)
        return FERRY_EINTERNAL;
    if (e->nrows == UINT32_MAX)
        return FERRY_ETOOBIG;
    mark = e->w.buf.len;
    msgpack_pack_bin(&e->w.pk, n);
    msgpack_pack_bin_body(&e->w.pk, n ? line : "", n);
    if (e->w.rc)
        return enc_fail(e, mark, e->w.rc);
    e->nrows++;
    if (e->w.buf.len - mark > e->biggest)
        e->biggest = e->w.buf.len - mark;
    return 0;
}

int ferry_enc_row(struct ferry_enc *e, const struct ferry_value *vals, size_t n)
{
    size_t mark;
    int rc;

    if (e->state == ENC_FAILED)
        return e->rc;
    if (e->state != ENC_SET || e->copy || n != e->ncols)
        return FERRY_EINTERNAL;
    if (e->nrows == UINT32_MAX)
        return FERRY_ETOOBIG;
    mark = e->w.buf.len;
    rc = pack_values(&e->w, vals, n);
    if (rc || e->w.rc)
        return enc_fail(e, mark, e->w.rc ? e->w.rc : rc);
    e->nrows++;
    if (e->w.buf.len - mark > e->biggest)
        e->biggest = e->w.buf.len - mark;
    return 0;
}

int ferry_enc_set_end(struct ferry_enc *e)
{
    if (e->state == ENC_FAILED)
        return e->rc;
    if (e->state != ENC_SET)
        return FERRY_EINTERNAL;
    patch_array32(&e->w, e->rows_at, e->nrows);
    e->state = ENC_OPEN;
    return 0;
}

int ferry_enc_finish(struct ferry_enc *e, int64_t head, int more, const struct ferry_value *last,
                     size_t nlast, const char **out, size_t *len)
{
    size_t mark;
    int rc = 0;

    if (e->state == ENC_FAILED)
        return e->rc;
    if (e->state == ENC_DONE)
        goto done;
    if (e->state != ENC_OPEN || (last && (nlast == 0 || nlast > FERRY_MAX_KEY_COLS)))
        return FERRY_EINTERNAL;
    mark = e->w.buf.len;
    patch_array32(&e->w, e->sets_at, e->nsets);
    pack_cstr(&e->w, "head");
    msgpack_pack_int64(&e->w.pk, head);
    pack_cstr(&e->w, "more");
    pack_bool(&e->w, more);
    pack_cstr(&e->w, "last");
    if (last)
        rc = pack_values(&e->w, last, nlast);
    else
        msgpack_pack_nil(&e->w.pk);
    if (rc || e->w.rc)
        return enc_fail(e, mark, e->w.rc ? e->w.rc : rc);
    e->state = ENC_DONE;
done:
    *out = e->w.buf.data;
    *len = e->w.buf.len;
    return 0;
}

char *ferry_enc_take(struct ferry_enc *e, size_t *len)
{
    char *out;

    if (e->state != ENC_DONE)
        return NULL;
    out = ferry_buf_detach(&e->w.buf, len);
    e->state = ENC_FAILED;
    e->rc = FERRY_EINTERNAL; /* nothing is left to finish again */
    return out;
}

size_t ferry_enc_size(const struct ferry_enc *e)
{
    return e->w.buf.len;
}

size_t ferry_enc_biggest(const struct ferry_enc *e)
{
    return e->biggest;
}

void ferry_enc_free(struct ferry_enc *e)
{
    if (!e)
        return;
    ferry_buf_release(&e->w.buf);
    free(e);
}

/* ------------------------------------------------------------------------ */
/* Decoding                                                                 */
/* ------------------------------------------------------------------------ */

struct dec {
    const char *what; /* message name that starts every error: "batch", "manifest", ... */
    const struct ferry_limits *lim;
    struct ferry_error *err;
    msgpack_zone *zone; /* decoded memory; NULL: malloc (the manifest, freed piecewise) */
};

static int fail(struct dec *d, int code, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(struct dec *d, int code, const char *where, const char *fmt, ...)
{
    char msg[FERRY_ERRMSG_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (where && *where)
        return ferry_error_set(d->err, code, "%s: %s: %s", d->what, where, msg);
    return ferry_error_set(d->err, code, "%s: %s", d->what, msg);
}

/* Zeroed memory owned by the decoded message; NULL on failure. */
static void *dec_alloc(struct dec *d, size_t n)
{
    void *p;

    if (!d->zone)
        return calloc(1, n ? n : 1);
    p = msgpack_zone_malloc(d->zone, n ? n : 1);
    if (p)
        memset(p, 0, n);
    return p;
}

/*
 * Zeroed array of n elements owned by the message: NULL with *rc = 0 when n
 * is 0, NULL with *rc set on failure.
 */
static void *dec_array(struct dec *d, const char *where, size_t n, size_t size, int *rc)
{
    void *p;

    *rc = 0;
    if (n == 0)
        return NULL;
    if (n > SIZE_MAX / size) {
        *rc = fail(d, FERRY_ETOOBIG, where, "%zu elements is too many", n);
        return NULL;
    }
    p = dec_alloc(d, n * size);
    if (!p)
        *rc = fail(d, FERRY_ENOMEM, where, "out of memory");
    return p;
}

/* ---- step 1: the framing pre-scan ---- */

static uint64_t read_be(const unsigned char *p, size_t n)
{
    uint64_t v = 0;

    for (size_t i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

static int prescan(struct dec *d, const unsigned char *p, size_t len)
{
    uint64_t stack[SCAN_MAX_DEPTH]; /* items still to come in each open container */
    size_t maxdepth = d->lim->max_depth < SCAN_MAX_DEPTH ? d->lim->max_depth : SCAN_MAX_DEPTH;
    size_t depth = 0;
    size_t pos = 0;
    size_t objects = 0;

    if (len == 0)
        return fail(d, FERRY_EPROTO, NULL, "empty message");
    do {
        unsigned char b;
        uint64_t n = 0;      /* payload bytes of a scalar, items of a container */
        size_t lenbytes = 0; /* size of an explicit length or count field */
        size_t extra = 0;    /* ext: the type byte after the length */
        int container = 0;   /* 1 array, 2 map */

        if (pos >= len)
            return fail(d, FERRY_EPROTO, NULL, "truncated at byte %zu", pos);
        if (++objects > d->lim->max_objects)
            return fail(d, FERRY_ETOOBIG, NULL, "more than %zu objects", d->lim->max_objects);
        b = p[pos++];
        if (b <= 0x7f || b >= 0xe0) {
            n = 0;
        } else if (b <= 0x8f) {
            container = 2;
            n = b & 0x0f;
        } else if (b <= 0x9f) {
            container = 1;
            n = b & 0x0f;
        } else if (b <= 0xbf) {
            n = b & 0x1f;
        } else {
            switch (b) {
            case 0xc0: /* nil */
            case 0xc2: /* false */
            case 0xc3: /* true */
                break;
            case 0xc4: /* bin 8 */
            case 0xd9: /* str 8 */
                lenbytes = 1;
                break;
            case 0xc5:
            case 0xda:
                lenbytes = 2;
                break;
            case 0xc6:
            case 0xdb:
                lenbytes = 4;
                break;
            case 0xc7: /* ext 8/16/32 */
            case 0xc8:
            case 0xc9:
                lenbytes = (size_t)1 << (b - 0xc7);
                extra = 1;
                break;
            case 0xca: /* float 32 */
                n = 4;
                break;
            case 0xcb: /* float 64 */
                n = 8;
                break;
            case 0xcc: /* uint 8/16/32/64 */
            case 0xcd:
            case 0xce:
            case 0xcf:
                n = (uint64_t)1 << (b - 0xcc);
                break;
            case 0xd0: /* int 8/16/32/64 */
            case 0xd1:
            case 0xd2:
            case 0xd3:
                n = (uint64_t)1 << (b - 0xd0);
                break;
            case 0xd4: /* fixext 1/2/4/8/16, plus the type byte */
            case 0xd5:
            case 0xd6:
            case 0xd7:
            case 0xd8:
                n = ((uint64_t)1 << (b - 0xd4)) + 1;
                break;
            case 0xdc: /* array 16/32 */
                container = 1;
                lenbytes = 2;
                break;
            case 0xdd:
                container = 1;
                lenbytes = 4;
                break;
            case 0xde: /* map 16/32 */
                container = 2;
                lenbytes = 2;
                break;
            case 0xdf:
                container = 2;
                lenbytes = 4;
                break;
            default: /* 0xc1, never used */
                return fail(d, FERRY_EPROTO, NULL, "byte 0x%02x at %zu is not msgpack", b, pos - 1);
            }
        }
        if (lenbytes) {
            if (len - pos < lenbytes)
                return fail(d, FERRY_EPROTO, NULL, "truncated at byte %zu", pos);
            n = read_be(p + pos, lenbytes);
            pos += lenbytes;
        }
        if (depth > 0)
            stack[depth - 1]--;
        if (container) {
            if (depth >= maxdepth)
                return fail(d, FERRY_ETOOBIG, NULL, "nested deeper than %zu at byte %zu", maxdepth,
                            pos);
            if (container == 2)
                n *= 2;
            /* every item takes at least one byte */
            if (n > len - pos)
                return fail(d, FERRY_EPROTO, NULL,
                            "truncated: %s at byte %zu declares %" PRIu64
                            " items, only %zu bytes remain",
                            container == 2 ? "map" : "array", pos, n, len - pos);
            if (n > 0)
                stack[depth++] = n;
        } else {
            n += extra;
            if (n > len - pos)
                return fail(d, FERRY_EPROTO, NULL,
                            "truncated: object at byte %zu declares %" PRIu64
                            " bytes, only %zu remain",
                            pos, n, len - pos);
            pos += (size_t)n;
        }
        while (depth > 0 && stack[depth - 1] == 0)
            depth--;
    } while (depth > 0);
    if (pos != len)
        return fail(d, FERRY_EPROTO, NULL, "%zu trailing bytes after the message", len - pos);
    return 0;
}

/* ---- step 2: size check, pre-scan, msgpack-c ---- */

static int parse(struct dec *d, const char *data, size_t len, size_t max, msgpack_unpacked *u)
{
    msgpack_unpack_return ret;
    size_t off = 0;
    int rc;

    if (len > max)
        return fail(d, FERRY_ETOOBIG, NULL, "%zu bytes, limit %zu", len, max);
    if (!data)
        return fail(d, FERRY_EPROTO, NULL, "empty message");
    rc = prescan(d, (const unsigned char *)data, len);
    if (rc)
        return rc;
    ret = msgpack_unpack_next(u, data, len, &off);
    if (ret == MSGPACK_UNPACK_NOMEM_ERROR)
        return fail(d, FERRY_ENOMEM, NULL, "out of memory");
    if (ret != MSGPACK_UNPACK_SUCCESS || off != len)
        return fail(d, FERRY_EPROTO, NULL, "malformed msgpack (code %d)", (int)ret);
    return 0;
}

/* ---- step 3: the strict walk ---- */

static const char *type_name(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return "nil";
    case MSGPACK_OBJECT_BOOLEAN:
        return "bool";
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return "int";
    case MSGPACK_OBJECT_FLOAT32:
        return "float32";
    case MSGPACK_OBJECT_FLOAT64:
        return "float";
    case MSGPACK_OBJECT_STR:
        return "str";
    case MSGPACK_OBJECT_ARRAY:
        return "array";
    case MSGPACK_OBJECT_MAP:
        return "map";
    case MSGPACK_OBJECT_BIN:
        return "bin";
    case MSGPACK_OBJECT_EXT:
        return "ext";
    }
    return "unknown";
}

static int want(struct dec *d, const msgpack_object *o, msgpack_object_type t, const char *where,
                const char *tname)
{
    if (o->type != t)
        return fail(d, FERRY_EPROTO, where, "expected %s, got %s", tname, type_name(o));
    return 0;
}

/* A key from the wire, quoted for a message: printable ASCII only, at most 40 bytes. */
static void quote_key(char *dst, size_t size, const char *p, size_t n)
{
    size_t j = 0;

    for (size_t i = 0; i < n && j + 4 < size; i++) {
        unsigned char c = (unsigned char)p[i];

        if (i == 40) {
            dst[j++] = '.';
            dst[j++] = '.';
            dst[j++] = '.';
            break;
        }
        dst[j++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    dst[j] = '\0';
}

struct field {
    const char *key;
    const msgpack_object *val; /* set by get_fields */
};

/* Match the entries of map o to fields: every key known, none repeated, none missing. */
/*
 * The map o's values by key into f[0..nf): f[0..nreq) must be there, the
 * rest may be (val NULL when absent). Unknown and duplicate keys are refused.
 */
static int get_fields_opt(struct dec *d, const msgpack_object *o, const char *where,
                          struct field *f, size_t nf, size_t nreq)
{
    int rc = want(d, o, MSGPACK_OBJECT_MAP, where, "map");

    if (rc)
        return rc;
    for (size_t j = 0; j < nf; j++)
        f[j].val = NULL;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        const msgpack_object_str *k = &kv->key.via.str;
        char q[48];
        size_t j;

        if (kv->key.type != MSGPACK_OBJECT_STR)
            return fail(d, FERRY_EPROTO, where, "map key is %s, expected str", type_name(&kv->key));
        for (j = 0; j < nf; j++)
            if (strlen(f[j].key) == k->size && memcmp(f[j].key, k->ptr, k->size) == 0)
                break;
        if (j == nf || f[j].val) {
            quote_key(q, sizeof(q), k->ptr, k->size);
            return fail(d, FERRY_EPROTO, where, "%s key \"%s\"", j == nf ? "unknown" : "duplicate",
                        q);
        }
        f[j].val = &kv->val;
    }
    for (size_t j = 0; j < nreq; j++)
        if (!f[j].val)
            return fail(d, FERRY_EPROTO, where, "missing key \"%s\"", f[j].key);
    return 0;
}

static int get_fields(struct dec *d, const msgpack_object *o, const char *where, struct field *f,
                      size_t nf)
{
    return get_fields_opt(d, o, where, f, nf, nf);
}

static int get_int(struct dec *d, const msgpack_object *o, const char *where, int64_t *out)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (o->via.u64 > INT64_MAX)
            return fail(d, FERRY_EPROTO, where, "%" PRIu64 " is above INT64_MAX", o->via.u64);
        *out = (int64_t)o->via.u64;
        return 0;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *out = o->via.i64;
        return 0;
    }
    return fail(d, FERRY_EPROTO, where, "expected int, got %s", type_name(o));
}

static int get_bool(struct dec *d, const msgpack_object *o, const char *where, int *out)
{
    int rc = want(d, o, MSGPACK_OBJECT_BOOLEAN, where, "bool");

    if (rc)
        return rc;
    *out = o->via.boolean ? 1 : 0;
    return 0;
}

/*
 * The map's "v", checked before its other keys: a newer peer is told about
 * the version, not about the first key it added.
 */
static int check_version(struct dec *d, const msgpack_object *o)
{
    int64_t v;
    int rc = want(d, o, MSGPACK_OBJECT_MAP, NULL, "map");

    if (rc)
        return rc;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];

        if (kv->key.type != MSGPACK_OBJECT_STR || kv->key.via.str.size != 1 ||
            kv->key.via.str.ptr[0] != 'v')
            continue;
        rc = get_int(d, &kv->val, "v", &v);
        if (rc)
            return rc;
        if (v != FERRY_PROTO_VERSION)
            return fail(d, FERRY_EPROTO, NULL,
                        "unsupported protocol version %" PRId64 ", this ferry speaks %d", v,
                        FERRY_PROTO_VERSION);
    }
    return 0;
}

/*
 * A NUL-terminated copy of a str field, of at most max bytes, empty only when
 * allowed. NUL inside is refused: the copy is used as a C string.
 */
static int get_text(struct dec *d, const msgpack_object *o, const char *where, size_t max,
                    int allow_empty, char **out)
{
    const msgpack_object_str *s = &o->via.str;
    int rc = want(d, o, MSGPACK_OBJECT_STR, where, "str");

    *out = NULL;
    if (rc)
        return rc;
    if (s->size > max)
        return fail(d, FERRY_ETOOBIG, where, "%" PRIu32 " bytes, limit %zu", s->size, max);
    if (s->size == 0 && !allow_empty)
        return fail(d, FERRY_EPROTO, where, "is empty");
    if (s->size && memchr(s->ptr, '\0', s->size))
        return fail(d, FERRY_EPROTO, where, "contains a NUL byte");
    *out = dec_alloc(d, (size_t)s->size + 1);
    if (!*out)
        return fail(d, FERRY_ENOMEM, where, "out of memory");
    if (s->size)
        memcpy(*out, s->ptr, s->size);
    (*out)[s->size] = '\0';
    return 0;
}

/* A table, column or tenant name: non-empty, at most max_name bytes, no NUL. */
static int get_name(struct dec *d, const msgpack_object *o, const char *where, char **out)
{
    return get_text(d, o, where, d->lim->max_name, 0, out);
}

int ferry_snapshot_id_ok(const char *id)
{
    size_t n = 0;

    for (; id && id[n]; n++)
        if (!((id[n] >= '0' && id[n] <= '9') || (id[n] >= 'A' && id[n] <= 'Z') ||
              (id[n] >= 'a' && id[n] <= 'z') || id[n] == '-'))
            return 0;
    return n > 0 && n <= FERRY_SNAPSHOT_ID_MAX;
}

/* A snapshot id (ferry_snapshot_id_ok): it names a source's transaction, nothing else. */
static int get_snapshot_id(struct dec *d, const msgpack_object *o, char **out)
{
    int rc = get_text(d, o, "snapshot", FERRY_SNAPSHOT_ID_MAX, 0, out);

    if (!rc && !ferry_snapshot_id_ok(*out))
        rc = fail(d, FERRY_EPROTO, "snapshot", "is not a snapshot id (letters, digits and '-')");
    return rc;
}

/*
 * One value; NULL when it is fine, else why not. TEXT and BLOB point into
 * the input (an empty one at a static "" so that p is never NULL: a NULL
 * pointer would bind as SQL NULL in sqlite3_bind_text).
 */
static const char *get_value(const msgpack_object *o, struct ferry_value *v)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        v->type = FERRY_NULL;
        return NULL;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (o->via.u64 > INT64_MAX)
            return "int above INT64_MAX";
        v->type = FERRY_INT;
        v->u.i = (int64_t)o->via.u64;
        return NULL;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        v->type = FERRY_INT;
        v->u.i = o->via.i64;
        return NULL;
    case MSGPACK_OBJECT_FLOAT64:
        v->type = FERRY_FLOAT;
        v->u.f = o->via.f64;
        return NULL;
    case MSGPACK_OBJECT_STR:
    case MSGPACK_OBJECT_BIN:
        v->type = o->type == MSGPACK_OBJECT_STR ? FERRY_TEXT : FERRY_BLOB;
        v->u.s.p = o->via.str.size ? o->via.str.ptr : "";
        v->u.s.n = o->via.str.size;
        return NULL;
    case MSGPACK_OBJECT_FLOAT32:
        return "float32 is not a value (floats travel as float64)";
    case MSGPACK_OBJECT_BOOLEAN:
        return "bool is not a value";
    case MSGPACK_OBJECT_ARRAY:
        return "array is not a value";
    case MSGPACK_OBJECT_MAP:
        return "map is not a value";
    case MSGPACK_OBJECT_EXT:
        return "ext is not a value";
    }
    return "unknown type";
}

/*
 * A key: nil (*vals = NULL) or an array of 1 to FERRY_MAX_KEY_COLS values.
 * With copy, TEXT and BLOB bytes are copied into the message's memory
 * (requests outlive their body); without, they point into the input.
 */
static int get_key(struct dec *d, const msgpack_object *o, const char *where, int copy,
                   struct ferry_value **vals, size_t *n)
{
    const msgpack_object_array *a = &o->via.array;
    struct ferry_value *v;
    const char *why;
    int rc;

    *vals = NULL;
    *n = 0;
    if (o->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return fail(d, FERRY_EPROTO, where, "expected array or nil, got %s", type_name(o));
    if (a->size == 0 || a->size > FERRY_MAX_KEY_COLS)
        return fail(d, FERRY_EPROTO, where, "key of %" PRIu32 " values, expected 1 to %d", a->size,
                    FERRY_MAX_KEY_COLS);
    v = dec_array(d, where, a->size, sizeof(*v), &rc);
    if (rc)
        return rc;
    for (uint32_t i = 0; i < a->size; i++) {
        why = get_value(&a->ptr[i], &v[i]);
        if (why)
            return fail(d, FERRY_EPROTO, where, "value %" PRIu32 ": %s", i, why);
        if (copy && (v[i].type == FERRY_TEXT || v[i].type == FERRY_BLOB) && v[i].u.s.n) {
            char *p = dec_alloc(d, v[i].u.s.n);

            if (!p)
                return fail(d, FERRY_ENOMEM, where, "out of memory");
            memcpy(p, v[i].u.s.p, v[i].u.s.n);
            v[i].u.s.p = p;
        }
    }
    *vals = v;
    *n = a->size;
    return 0;
}

/* ---- requests ---- */

static int request_walk(struct dec *d, int type, const msgpack_object *o, struct ferry_request *req)
{
    struct field f[8] = {{"v", NULL}, {"tenant", NULL}, {"after", NULL}};
    size_t nf = 0, nopt = 0;
    int rc;

    rc = check_version(d, o);
    if (rc)
        return rc;
    switch (type) {
    case FERRY_REQ_MANIFEST:
        f[3].key = "counts";
        f[4].key = "snapshot"; /* optional: targets from before it was added */
        f[5].key = "changes";  /* optional: targets from before it was added */
        f[6].key = "masks";    /* optional: idem */
        f[7].key = "as_of";    /* optional: idem */
        nf = 4;
        nopt = 4;
        break;
    case FERRY_REQ_SNAPSHOT:
        f[3].key = "limit";
        f[4].key = "table";
        f[5].key = "snapshot"; /* optional: none means a snapshot of its own */
        f[6].key = "copy";     /* optional: targets from before it was added */
        f[7].key = "release";  /* optional: idem */
        nf = 5;
        nopt = 3;
        break;
    case FERRY_REQ_CHANGES:
        f[3].key = "limit";
        nf = 4;
        break;
    case FERRY_REQ_FREEZE:
        f[2].key = "on";
        nf = 3;
        break;
    }
    rc = get_fields_opt(d, o, NULL, f, nf + nopt, nf);
    if (rc)
        return rc;
    rc = get_name(d, f[1].val, "tenant", &req->tenant);
    if (rc)
        return rc;
    if (type == FERRY_REQ_FREEZE)
        return get_bool(d, f[2].val, "on", &req->on);
    if (type == FERRY_REQ_SNAPSHOT)
        rc = get_key(d, f[2].val, "after", 1, &req->after_key, &req->nafter);
    else
        rc = get_int(d, f[2].val, "after", &req->after);
    if (rc)
        return rc;
    if (type == FERRY_REQ_MANIFEST) {
        rc = get_bool(d, f[3].val, "counts", &req->counts);
        if (!rc && f[4].val)
            rc = get_bool(d, f[4].val, "snapshot", &req->want_snapshot);
        if (!rc && f[5].val) {
            rc = get_int(d, f[5].val, "changes", &req->with_changes);
            if (!rc && req->with_changes <= 0)
                rc = fail(d, FERRY_EPROTO, "changes", "%" PRId64 " is not positive",
                          req->with_changes);
            if (!rc && req->after < 0)
                rc = fail(d, FERRY_EPROTO, "changes", "asked for without a mark (after -1)");
        }
        if (!rc && f[6].val)
            rc = get_bool(d, f[6].val, "masks", &req->masks);
        if (!rc && f[7].val)
            rc = get_bool(d, f[7].val, "as_of", &req->as_of);
        return rc;
    }
    rc = get_int(d, f[3].val, "limit", &req->limit);
    if (rc)
        return rc;
    if (req->limit <= 0)
        return fail(d, FERRY_EPROTO, "limit", "%" PRId64 " is not positive", req->limit);
    if (type == FERRY_REQ_SNAPSHOT) {
        rc = get_name(d, f[4].val, "table", &req->table);
        if (!rc && f[5].val)
            rc = get_snapshot_id(d, f[5].val, &req->snapshot);
        if (!rc && f[6].val)
            rc = get_bool(d, f[6].val, "copy", &req->copy_text);
        if (!rc && f[7].val)
            rc = get_bool(d, f[7].val, "release", &req->release);
        if (!rc && req->release && !req->snapshot)
            rc = fail(d, FERRY_EPROTO, "release", "without a snapshot to release");
        return rc;
    }
    return 0;
}

/*
 * A digest request's byte per column ("coerce": a code ferry_coerce_known
 * knows; "cols": 0 or 1), 1 to max_cols of them, into *out and *n.
 */
static int get_colbytes(struct dec *d, const msgpack_object *o, const char *key,
                        unsigned char **out, size_t *n)
{
    const msgpack_object_bin *b = &o->via.bin;
    int coerce = strcmp(key, "coerce") == 0;
    int rc = want(d, o, MSGPACK_OBJECT_BIN, key, "bin");

    if (rc)
        return rc;
    if (b->size == 0 || b->size > d->lim->max_cols)
        return fail(d, b->size ? FERRY_ETOOBIG : FERRY_EPROTO, key,
                    "%" PRIu32 " columns, expected 1 to %zu", b->size, d->lim->max_cols);
    for (uint32_t i = 0; i < b->size; i++) {
        unsigned char v = (unsigned char)b->ptr[i];

        if (coerce ? !ferry_coerce_known(v) : v > 1)
            return fail(d, FERRY_EPROTO, key, "%s %d of column %" PRIu32 " is not known",
                        coerce ? "code" : "value", v, i);
    }
    *out = dec_array(d, key, b->size, 1, &rc);
    if (rc)
        return rc;
    memcpy(*out, b->ptr, b->size);
    *n = b->size;
    return 0;
}

/* Whether the msgpack string o is s. */
static int str_is(const msgpack_object *o, const char *s)
{
    return o->via.str.size == strlen(s) && memcmp(o->via.str.ptr, s, o->via.str.size) == 0;
}

/* A digest request's "hash" and "hash_key" (NULL when absent): a keyed hash and its key. */
static int get_hash(struct dec *d, const msgpack_object *name, const msgpack_object *key,
                    struct ferry_request *req)
{
    int rc;

    if (!name && !key)
        return 0;
    if (!name || !key)
        return fail(d, FERRY_EPROTO, name ? "hash_key" : "hash", "missing, %s is there",
                    name ? "hash" : "hash_key");
    rc = want(d, name, MSGPACK_OBJECT_STR, "hash", "str");
    if (!rc)
        rc = want(d, key, MSGPACK_OBJECT_BIN, "hash_key", "bin");
    if (rc)
        return rc;
    if (str_is(name, FERRY_HASH_SIPHASH13_NAME))
        req->hash = FERRY_HASH_SIPHASH13;
    else if (str_is(name, FERRY_HASH_PGREC_NAME))
        req->hash = FERRY_HASH_PGREC;
    else
        return fail(d, FERRY_EPROTO, "hash", "unknown hash, expected \"%s\" or \"%s\"",
                    FERRY_HASH_SIPHASH13_NAME, FERRY_HASH_PGREC_NAME);
    if (key->via.bin.size != FERRY_HASH_KEY_SIZE)
        return fail(d, FERRY_EPROTO, "hash_key", "%" PRIu32 " bytes, expected %d",
                    key->via.bin.size, FERRY_HASH_KEY_SIZE);
    memcpy(req->hash_key, key->via.bin.ptr, FERRY_HASH_KEY_SIZE);
    return 0;
}

/* The digest and rows requests of verify/repair. */
static int verify_request_walk(struct dec *d, int type, const msgpack_object *o,
                               struct ferry_request *req)
{
    struct field f[10] = {{"v", NULL}, {"tenant", NULL}, {"table", NULL}};
    const msgpack_object_array *a;
    size_t nf, nopt = 0;
    int rc;

    rc = check_version(d, o);
    if (rc)
        return rc;
    if (type == FERRY_REQ_DIGEST) {
        f[3].key = "lo";
        f[4].key = "hi";
        f[5].key = "parts";
        f[6].key = "coerce"; /* optional: same-engine pairs and targets from before it */
        f[7].key = "hash";   /* optional, with hash_key: targets from before it */
        f[8].key = "hash_key";
        f[9].key = "cols"; /* optional: a sync's check of columns added on the source */
        nf = 6;
        nopt = 4;
    } else {
        f[3].key = "keys";
        nf = 4;
    }
    rc = get_fields_opt(d, o, NULL, f, nf + nopt, nf);
    if (rc)
        return rc;
    rc = get_name(d, f[1].val, "tenant", &req->tenant);
    if (!rc)
        rc = get_name(d, f[2].val, "table", &req->table);
    if (rc)
        return rc;
    if (type == FERRY_REQ_DIGEST) {
        rc = get_key(d, f[3].val, "lo", 1, &req->lo, &req->nlo);
        if (!rc)
            rc = get_key(d, f[4].val, "hi", 1, &req->hi, &req->nhi);
        if (!rc)
            rc = get_int(d, f[5].val, "parts", &req->parts);
        if (rc)
            return rc;
        if (req->lo && req->hi && req->nlo != req->nhi)
            return fail(d, FERRY_EPROTO, "hi", "%zu values, lo has %zu", req->nhi, req->nlo);
        if (req->parts < 1 || req->parts > FERRY_DIGEST_MAX_PARTS)
            return fail(d, FERRY_EPROTO, "parts", "%" PRId64 " is not 1 to %d", req->parts,
                        FERRY_DIGEST_MAX_PARTS);
        rc = get_hash(d, f[7].val, f[8].val, req);
        if (!rc && f[6].val)
            rc = get_colbytes(d, f[6].val, "coerce", &req->coerce, &req->ncoerce);
        if (!rc && f[9].val)
            rc = get_colbytes(d, f[9].val, "cols", &req->cols, &req->ncols);
        return rc;
    }
    rc = want(d, f[3].val, MSGPACK_OBJECT_ARRAY, "keys", "array");
    if (rc)
        return rc;
    a = &f[3].val->via.array;
    if (a->size == 0 || a->size > FERRY_ROWS_MAX_KEYS)
        return fail(d, a->size ? FERRY_ETOOBIG : FERRY_EPROTO, "keys",
                    "%" PRIu32 " keys, expected 1 to %d", a->size, FERRY_ROWS_MAX_KEYS);
    /* Shapes first: nkeys * width is allocated once every key is seen to exist. */
    for (uint32_t i = 0; i < a->size; i++) {
        const msgpack_object *k = &a->ptr[i];

        if (k->type != MSGPACK_OBJECT_ARRAY)
            return fail(d, FERRY_EPROTO, NULL, "keys %" PRIu32 " is %s, expected array", i,
                        type_name(k));
        if (k->via.array.size == 0 || k->via.array.size > FERRY_MAX_KEY_COLS ||
            k->via.array.size != a->ptr[0].via.array.size)
            return fail(d, FERRY_EPROTO, NULL,
                        "keys %" PRIu32 " has %" PRIu32 " values, expected 1 to %d, as many as "
                        "keys 0",
                        i, k->via.array.size, FERRY_MAX_KEY_COLS);
    }
    req->keywidth = a->ptr[0].via.array.size;
    req->keys = dec_array(d, "keys", (size_t)a->size * req->keywidth, sizeof(*req->keys), &rc);
    if (rc)
        return rc;
    for (uint32_t i = 0; i < a->size; i++) {
        struct ferry_value *kv = NULL;
        size_t n = 0;
        char w[WHERE_MAX];

        snprintf(w, sizeof(w), "keys %" PRIu32, i);
        rc = get_key(d, &a->ptr[i], w, 1, &kv, &n);
        if (rc)
            return rc;
        memcpy(&req->keys[(size_t)i * req->keywidth], kv, n * sizeof(*kv));
    }
    req->nkeys = a->size;
    return 0;
}

int ferry_request_decode(int type, const char *data, size_t len, const struct ferry_limits *lim,
                         struct ferry_request *req, struct ferry_error *err)
{
    static const char *const names[] = {"",
                                        "manifest request",
                                        "snapshot request",
                                        "changes request",
                                        "digest request",
                                        "rows request",
                                        "freeze request"};
    struct dec d;
    msgpack_unpacked u;
    int rc;

    memset(req, 0, sizeof(*req));
    msgpack_unpacked_init(&u);
    if (type != FERRY_REQ_MANIFEST && type != FERRY_REQ_SNAPSHOT && type != FERRY_REQ_CHANGES &&
        type != FERRY_REQ_DIGEST && type != FERRY_REQ_ROWS && type != FERRY_REQ_FREEZE)
        return ferry_error_set(err, FERRY_EINTERNAL, "request: unknown type %d", type);
    d.what = names[type];
    d.lim = lim ? lim : &ferry_limits_default;
    d.err = err;
    d.zone = NULL;
    rc = parse(&d, data, len, d.lim->max_request, &u);
    if (rc)
        goto out;
    d.zone = msgpack_zone_new(1024);
    if (!d.zone) {
        rc = fail(&d, FERRY_ENOMEM, NULL, "out of memory");
        goto out;
    }
    req->priv_ = d.zone;
    req->type = type;
    if (type == FERRY_REQ_DIGEST || type == FERRY_REQ_ROWS)
        rc = verify_request_walk(&d, type, &u.data, req);
    else
        rc = request_walk(&d, type, &u.data, req);
out:
    msgpack_unpacked_destroy(&u);
    if (rc)
        ferry_request_release(req);
    return rc;
}

void ferry_request_release(struct ferry_request *req)
{
    if (!req)
        return;
    if (req->priv_)
        msgpack_zone_free(req->priv_);
    memset(req, 0, sizeof(*req));
}

/* ---- error responses ---- */

int ferry_errmsg_decode(const char *data, size_t len, struct ferry_error *err)
{
    struct field f[3] = {{"v", NULL}, {"code", NULL}, {"msg", NULL}};
    struct dec d = {"error response", &ferry_limits_default, err, NULL};
    char msg[FERRY_ERRMSG_MAX];
    char name[32];
    const msgpack_object_str *cs;
    const msgpack_object_str *ms;
    msgpack_unpacked u;
    int code = -1;
    int rc;

    msgpack_unpacked_init(&u);
    rc = parse(&d, data, len, d.lim->max_body, &u);
    if (rc)
        goto out;
    rc = check_version(&d, &u.data);
    if (rc)
        goto out;
    rc = get_fields(&d, &u.data, NULL, f, 3);
    if (rc)
        goto out;
    rc = want(&d, f[1].val, MSGPACK_OBJECT_STR, "code", "str");
    if (rc)
        goto out;
    rc = want(&d, f[2].val, MSGPACK_OBJECT_STR, "msg", "str");
    if (rc)
        goto out;
    cs = &f[1].val->via.str;
    ms = &f[2].val->via.str;
    /* the peer's message is shown to a person: no control bytes, one line */
    quote_key(name, sizeof(name), cs->ptr, cs->size);
    {
        size_t n = ms->size < sizeof(msg) - 1 ? ms->size : sizeof(msg) - 1;

        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)ms->ptr[i];

            msg[i] = c < 0x20 || c == 0x7f ? ' ' : (char)c;
        }
        msg[n] = '\0';
    }
    for (int i = 1; i < FERRY_NCODES; i++) {
        const char *s = ferry_strcode(i);

        if (strlen(s) == cs->size && memcmp(s, cs->ptr, cs->size) == 0)
            code = i;
    }
    if (code < 0)
        rc = ferry_error_set(err, FERRY_EPROTO, "peer error with unknown code \"%s\": %s", name,
                             msg);
    else
        rc = ferry_error_set(err, code, "%s", msg);
out:
    msgpack_unpacked_destroy(&u);
    return rc;
}

/* ---- manifest ---- */

static int column_walk(struct dec *d, const msgpack_object *o, const char *where,
                       struct ferry_column *c, size_t ncols)
{
    const msgpack_object_array *a = &o->via.array;
    char w[WHERE_MAX];
    int64_t pk;
    int rc = want(d, o, MSGPACK_OBJECT_ARRAY, where, "array [name, type, notnull, pk]");

    if (rc)
        return rc;
    if (a->size != 4)
        return fail(d, FERRY_EPROTO, where, "%" PRIu32 " items, expected [name, type, notnull, pk]",
                    a->size);
    snprintf(w, sizeof(w), "%.120s name", where);
    rc = get_name(d, &a->ptr[0], w, &c->name);
    if (rc)
        return rc;
    snprintf(w, sizeof(w), "%.120s type", where);
    rc = get_text(d, &a->ptr[1], w, d->lim->max_name, 1, &c->type);
    if (rc)
        return rc;
    snprintf(w, sizeof(w), "%.120s notnull", where);
    rc = get_bool(d, &a->ptr[2], w, &c->notnull);
    if (rc)
        return rc;
    snprintf(w, sizeof(w), "%.120s pk", where);
    rc = get_int(d, &a->ptr[3], w, &pk);
    if (rc)
        return rc;
    if (pk < 0 || (uint64_t)pk > ncols)
        return fail(d, FERRY_EPROTO, w, "%" PRId64 " is not a key position of %zu columns", pk,
                    ncols);
    c->pk = (int)pk;
    return 0;
}

static int names_walk(struct dec *d, const msgpack_object *o, const char *where, char ***out,
                      size_t *n)
{
    const msgpack_object_array *a = &o->via.array;
    char w[WHERE_MAX];
    int rc = want(d, o, MSGPACK_OBJECT_ARRAY, where, "array");

    *out = NULL;
    if (rc)
        return rc;
    if (a->size == 0)
        return fail(d, FERRY_EPROTO, where, "no columns");
    if (a->size > d->lim->max_cols)
        return fail(d, FERRY_ETOOBIG, where, "%" PRIu32 " columns, limit %zu", a->size,
                    d->lim->max_cols);
    *out = dec_array(d, where, a->size, sizeof(char *), &rc);
    if (rc)
        return rc;
    *n = a->size;
    for (uint32_t i = 0; i < a->size; i++) {
        snprintf(w, sizeof(w), "%.120s %" PRIu32, where, i);
        rc = get_name(d, &a->ptr[i], w, &(*out)[i]);
        if (rc)
            return rc;
    }
    return 0;
}

static int fkey_walk(struct dec *d, const msgpack_object *o, const char *where,
                     struct ferry_fkey *fk)
{
    const msgpack_object_array *a = &o->via.array;
    char w[WHERE_MAX];
    size_t nc = 0, np = 0;
    int rc = want(d, o, MSGPACK_OBJECT_ARRAY, where, "array [parent, cols, pcols, cascade]");

    if (rc)
        return rc;
    if (a->size != 4)
        return fail(d, FERRY_EPROTO, where,
                    "%" PRIu32 " items, expected [parent, cols, pcols, cascade]", a->size);
    snprintf(w, sizeof(w), "%.120s parent", where);
    rc = get_name(d, &a->ptr[0], w, &fk->parent);
    if (rc)
        return rc;
    /* fk->ncols counts the filled entries of both arrays, so a partial fk frees cleanly */
    snprintf(w, sizeof(w), "%.120s col", where);
    rc = names_walk(d, &a->ptr[1], w, &fk->cols, &nc);
    if (rc)
        goto out;
    snprintf(w, sizeof(w), "%.120s pcol", where);
    rc = names_walk(d, &a->ptr[2], w, &fk->pcols, &np);
    if (rc)
        goto out;
    if (nc != np) {
        rc = fail(d, FERRY_EPROTO, where, "%zu cols but %zu parent cols", nc, np);
        goto out;
    }
    snprintf(w, sizeof(w), "%.120s cascade", where);
    rc = get_bool(d, &a->ptr[3], w, &fk->cascade);
out:
    if (rc) {
        /* names_walk filled a prefix; free both arrays here rather than guess a count */
        for (size_t i = 0; fk->cols && i < nc; i++)
            free(fk->cols[i]);
        for (size_t i = 0; fk->pcols && i < np; i++)
            free(fk->pcols[i]);
        free(fk->cols);
        free(fk->pcols);
        fk->cols = NULL;
        fk->pcols = NULL;
        return rc;
    }
    fk->ncols = nc;
    return 0;
}

static int table_walk(struct dec *d, const msgpack_object *o, size_t ti, struct ferry_table_info *t)
{
    struct field f[6] = {{"name", NULL},          {"cols", NULL},  {"fks", NULL},
                         {"without_rowid", NULL}, {"scope", NULL}, {"rows", NULL}};
    const msgpack_object_array *a;
    unsigned char *seen = NULL;
    size_t npk = 0, maxpk = 0;
    char where[WHERE_MAX];
    char w[WHERE_MAX];
    char q[48];
    int rc;

    snprintf(where, sizeof(where), "table %zu", ti);
    rc = get_fields(d, o, where, f, 6);
    if (rc)
        goto out;
    snprintf(w, sizeof(w), "%.120s name", where);
    rc = get_name(d, f[0].val, w, &t->name);
    if (rc)
        goto out;
    quote_key(q, sizeof(q), t->name, strlen(t->name));
    snprintf(where, sizeof(where), "table %zu (\"%s\")", ti, q);

    snprintf(w, sizeof(w), "%.120s cols", where);
    rc = want(d, f[1].val, MSGPACK_OBJECT_ARRAY, w, "array");
    if (rc)
        goto out;
    a = &f[1].val->via.array;
    if (a->size == 0) {
        rc = fail(d, FERRY_EPROTO, w, "no columns");
        goto out;
    }
    if (a->size > d->lim->max_cols) {
        rc = fail(d, FERRY_ETOOBIG, w, "%" PRIu32 " columns, limit %zu", a->size, d->lim->max_cols);
        goto out;
    }
    t->cols = dec_array(d, w, a->size, sizeof(*t->cols), &rc);
    if (rc)
        goto out;
    t->ncols = a->size;
    seen = calloc(t->ncols + 1, 1);
    if (!seen) {
        rc = fail(d, FERRY_ENOMEM, w, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < t->ncols; i++) {
        snprintf(w, sizeof(w), "%.120s col %zu", where, i);
        rc = column_walk(d, &a->ptr[i], w, &t->cols[i], t->ncols);
        if (rc)
            goto out;
        if (t->cols[i].pk) {
            if (seen[t->cols[i].pk]) {
                rc = fail(d, FERRY_EPROTO, w, "key position %d used twice", t->cols[i].pk);
                goto out;
            }
            seen[t->cols[i].pk] = 1;
            npk++;
            if ((size_t)t->cols[i].pk > maxpk)
                maxpk = (size_t)t->cols[i].pk;
        }
    }
    if (maxpk != npk) {
        rc = fail(d, FERRY_EPROTO, where, "key positions are not 1 to %zu", npk);
        goto out;
    }

    snprintf(w, sizeof(w), "%.120s fks", where);
    rc = want(d, f[2].val, MSGPACK_OBJECT_ARRAY, w, "array");
    if (rc)
        goto out;
    a = &f[2].val->via.array;
    if (a->size > d->lim->max_cols) {
        rc = fail(d, FERRY_ETOOBIG, w, "%" PRIu32 " foreign keys, limit %zu", a->size,
                  d->lim->max_cols);
        goto out;
    }
    t->fks = dec_array(d, w, a->size, sizeof(*t->fks), &rc);
    if (rc)
        goto out;
    t->nfks = a->size;
    for (size_t i = 0; i < t->nfks; i++) {
        snprintf(w, sizeof(w), "%.120s fk %zu", where, i);
        rc = fkey_walk(d, &a->ptr[i], w, &t->fks[i]);
        if (rc)
            goto out;
    }

    snprintf(w, sizeof(w), "%.120s without_rowid", where);
    rc = get_bool(d, f[3].val, w, &t->without_rowid);
    if (rc)
        goto out;
    snprintf(w, sizeof(w), "%.120s scope", where);
    if (f[4].val->type != MSGPACK_OBJECT_NIL) {
        rc = get_text(d, f[4].val, w, d->lim->max_body, 0, &t->scope_sql);
        if (rc)
            goto out;
    }
    snprintf(w, sizeof(w), "%.120s rows", where);
    rc = get_int(d, f[5].val, w, &t->rows);
out:
    free(seen);
    return rc;
}

static int manifest_walk(struct dec *d, const msgpack_object *o, struct ferry_manifest *m)
{
    struct field f[11] = {{"v", NULL},       {"tenant", NULL}, {"root", NULL},   {"head", NULL},
                          {"pending", NULL}, {"tables", NULL}, {"engine", NULL}, {"snapshot", NULL},
                          {"changes", NULL}, {"masked", NULL}, {"as_of", NULL}};
    const msgpack_object_array *a;
    int rc;

    rc = check_version(d, o);
    if (rc)
        return rc;
    /*
     * "engine", "snapshot" and "changes" are optional (sources from before
     * they were added), "masked" and "as_of" too (only when asked, and
     * there are any)
     */
    rc = get_fields_opt(d, o, NULL, f, 11, 6);
    if (rc)
        return rc;
    if (f[10].val) {
        rc = get_int(d, f[10].val, "as_of", &m->as_of);
        if (!rc && m->as_of <= 0)
            rc = fail(d, FERRY_EPROTO, "as_of", "%" PRId64 " is not positive", m->as_of);
        if (rc)
            return rc;
    }
    if (f[9].val) {
        rc = want(d, f[9].val, MSGPACK_OBJECT_ARRAY, "masked", "array");
        if (rc)
            return rc;
        a = &f[9].val->via.array;
        if (a->size == 0 || a->size > d->lim->max_cols * d->lim->max_tables)
            return fail(d, FERRY_EPROTO, "masked", "%" PRIu32 " columns", a->size);
        m->masked = dec_array(d, "masked", a->size, sizeof(*m->masked), &rc);
        if (rc)
            return rc;
        m->nmasked = a->size;
        for (size_t i = 0; i < m->nmasked; i++) {
            rc = get_text(d, &a->ptr[i], "masked", 2 * d->lim->max_name + 1, 0, &m->masked[i]);
            if (rc)
                return rc;
        }
    }
    if (f[8].val) {
        rc = want(d, f[8].val, MSGPACK_OBJECT_BIN, "changes", "bin");
        if (rc)
            return rc;
        if (f[8].val->via.bin.size == 0)
            return fail(d, FERRY_EPROTO, "changes", "is empty");
        m->changes = malloc(f[8].val->via.bin.size);
        if (!m->changes)
            return fail(d, FERRY_ENOMEM, NULL, "out of memory");
        memcpy(m->changes, f[8].val->via.bin.ptr, f[8].val->via.bin.size);
        m->nchanges = f[8].val->via.bin.size;
    }
    if (f[6].val) {
        rc = get_name(d, f[6].val, "engine", &m->engine);
        if (rc)
            return rc;
    }
    if (f[7].val) {
        rc = get_snapshot_id(d, f[7].val, &m->snapshot);
        if (rc)
            return rc;
    }
    rc = get_name(d, f[1].val, "tenant", &m->tenant);
    if (rc)
        return rc;
    rc = get_name(d, f[2].val, "root", &m->root);
    if (rc)
        return rc;
    rc = get_int(d, f[3].val, "head", &m->head);
    if (rc)
        return rc;
    rc = get_int(d, f[4].val, "pending", &m->pending);
    if (rc)
        return rc;
    rc = want(d, f[5].val, MSGPACK_OBJECT_ARRAY, "tables", "array");
    if (rc)
        return rc;
    a = &f[5].val->via.array;
    if (a->size > d->lim->max_tables)
        return fail(d, FERRY_ETOOBIG, "tables", "%" PRIu32 " tables, limit %zu", a->size,
                    d->lim->max_tables);
    m->tables = dec_array(d, "tables", a->size, sizeof(*m->tables), &rc);
    if (rc)
        return rc;
    m->ntables = a->size;
    for (size_t i = 0; i < m->ntables; i++) {
        rc = table_walk(d, &a->ptr[i], i, &m->tables[i]);
        if (rc)
            return rc;
    }
    return 0;
}

int ferry_manifest_decode(const char *data, size_t len, const struct ferry_limits *lim,
                          struct ferry_manifest **out, struct ferry_error *err)
{
    struct dec d = {"manifest", lim ? lim : &ferry_limits_default, err, NULL};
    struct ferry_manifest *m = NULL;
    msgpack_unpacked u;
    int rc;

    *out = NULL;
    msgpack_unpacked_init(&u);
    rc = parse(&d, data, len, d.lim->max_body, &u);
    if (rc)
        goto out;
    m = calloc(1, sizeof(*m));
    if (!m) {
        rc = fail(&d, FERRY_ENOMEM, NULL, "out of memory");
        goto out;
    }
    rc = manifest_walk(&d, &u.data, m);
out:
    msgpack_unpacked_destroy(&u);
    if (rc)
        ferry_manifest_free(m);
    else
        *out = m;
    return rc;
}

void ferry_manifest_free(struct ferry_manifest *m)
{
    if (!m)
        return;
    free(m->tenant);
    free(m->root);
    free(m->engine);
    free(m->snapshot);
    free(m->changes);
    for (size_t i = 0; m->masked && i < m->nmasked; i++)
        free(m->masked[i]);
    free(m->masked);
    ferry_tables_free(m->tables, m->ntables);
    free(m);
}

/* ---- digest responses ---- */

int ferry_digest_encode(const struct ferry_range *r, size_t n, int64_t unkeyed, char **out,
                        size_t *len, struct ferry_error *err)
{
    struct writer w;
    int rc = 0;

    *out = NULL;
    *len = 0;
    if (n > FERRY_DIGEST_MAX_PARTS)
        return ferry_error_set(err, FERRY_EINTERNAL, "digest: %zu ranges, at most %d", n,
                               FERRY_DIGEST_MAX_PARTS);
    if (unkeyed < 0)
        return ferry_error_set(err, FERRY_EINTERNAL, "digest: %" PRId64 " unkeyed rows", unkeyed);
    writer_init(&w, ferry_limits_default.max_body);
    msgpack_pack_map(&w.pk, unkeyed ? 3 : 2);
    pack_cstr(&w, "v");
    msgpack_pack_int(&w.pk, FERRY_PROTO_VERSION);
    if (unkeyed) {
        pack_cstr(&w, "unkeyed");
        msgpack_pack_int64(&w.pk, unkeyed);
    }
    pack_cstr(&w, "ranges");
    msgpack_pack_array(&w.pk, n);
    for (size_t i = 0; i < n; i++) {
        int64_t sum;

        if (r[i].nfirst == 0 || r[i].nfirst > FERRY_MAX_KEY_COLS || r[i].count < 1) {
            rc = ferry_error_set(err, FERRY_EINTERNAL, "digest: range %zu is malformed", i);
            goto out;
        }
        /* The bits of the uint64, so that the decoder's int64 rule holds. */
        memcpy(&sum, &r[i].sum, sizeof(sum));
        msgpack_pack_array(&w.pk, 3);
        rc = pack_values(&w, r[i].first, r[i].nfirst);
        if (rc) {
            rc = ferry_error_set(err, rc, "digest: a key of range %zu cannot be encoded", i);
            goto out;
        }
        msgpack_pack_int64(&w.pk, r[i].count);
        msgpack_pack_int64(&w.pk, sum);
    }
    rc = writer_finish(&w, "digest", out, len, err);
out:
    ferry_buf_release(&w.buf);
    return rc;
}

static int digest_walk(struct dec *d, const msgpack_object *o, struct ferry_digest *g)
{
    struct field f[3] = {{"v", NULL}, {"ranges", NULL}, {"unkeyed", NULL}};
    const msgpack_object_array *a;
    int rc;

    rc = check_version(d, o);
    if (rc)
        return rc;
    rc = get_fields_opt(d, o, NULL, f, 3, 2);
    if (rc)
        return rc;
    if (f[2].val) {
        rc = get_int(d, f[2].val, "unkeyed", &g->unkeyed);
        if (rc)
            return rc;
        if (g->unkeyed < 1)
            return fail(d, FERRY_EPROTO, "unkeyed", "%" PRId64 " is not positive", g->unkeyed);
    }
    rc = want(d, f[1].val, MSGPACK_OBJECT_ARRAY, "ranges", "array");
    if (rc)
        return rc;
    a = &f[1].val->via.array;
    if (a->size > FERRY_DIGEST_MAX_PARTS)
        return fail(d, FERRY_ETOOBIG, "ranges", "%" PRIu32 " ranges, at most %d", a->size,
                    FERRY_DIGEST_MAX_PARTS);
    g->ranges = dec_array(d, "ranges", a->size, sizeof(*g->ranges), &rc);
    if (rc)
        return rc;
    for (uint32_t i = 0; i < a->size; i++) {
        const msgpack_object *ro = &a->ptr[i];
        struct ferry_range *r = &g->ranges[i];
        struct ferry_value *key = NULL;
        char w[WHERE_MAX];
        int64_t sum;

        snprintf(w, sizeof(w), "range %" PRIu32, i);
        rc = want(d, ro, MSGPACK_OBJECT_ARRAY, w, "array [first key, count, checksum]");
        if (rc)
            return rc;
        if (ro->via.array.size != 3)
            return fail(d, FERRY_EPROTO, w,
                        "%" PRIu32 " items, expected [first key, count, checksum]",
                        ro->via.array.size);
        snprintf(w, sizeof(w), "range %" PRIu32 " first", i);
        rc = get_key(d, &ro->via.array.ptr[0], w, 0, &key, &r->nfirst);
        if (rc)
            return rc;
        if (!key)
            return fail(d, FERRY_EPROTO, w, "is nil");
        if (r->nfirst != g->ranges[0].nfirst)
            return fail(d, FERRY_EPROTO, w, "%zu values, range 0 has %zu", r->nfirst,
                        g->ranges[0].nfirst);
        memcpy(r->first, key, r->nfirst * sizeof(*key));
        snprintf(w, sizeof(w), "range %" PRIu32 " count", i);
        rc = get_int(d, &ro->via.array.ptr[1], w, &r->count);
        if (rc)
            return rc;
        if (r->count < 1)
            return fail(d, FERRY_EPROTO, w, "%" PRId64 " is not positive", r->count);
        snprintf(w, sizeof(w), "range %" PRIu32 " checksum", i);
        rc = get_int(d, &ro->via.array.ptr[2], w, &sum);
        if (rc)
            return rc;
        memcpy(&r->sum, &sum, sizeof(sum));
    }
    g->nranges = a->size;
    return 0;
}

/*
 * parse(), then *obj: size zeroed bytes, and d->zone, the zone its decoded
 * values will live in (the caller hands it to the object's priv_). On an
 * error neither is left.
 */
static int parse_zoned(struct dec *d, const char *data, size_t len, msgpack_unpacked *u,
                       size_t size, void **obj)
{
    int rc = parse(d, data, len, d->lim->max_body, u);

    if (rc)
        return rc;
    *obj = calloc(1, size);
    d->zone = *obj ? msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE) : NULL;
    if (!*obj || !d->zone) {
        free(*obj);
        *obj = NULL;
        return fail(d, FERRY_ENOMEM, NULL, "out of memory");
    }
    return 0;
}

int ferry_digest_decode(const char *data, size_t len, const struct ferry_limits *lim,
                        struct ferry_digest **out, struct ferry_error *err)
{
    struct dec d = {"digest", lim ? lim : &ferry_limits_default, err, NULL};
    struct ferry_digest *g = NULL;
    void *obj = NULL;
    msgpack_unpacked u;
    int rc;

    *out = NULL;
    msgpack_unpacked_init(&u);
    rc = parse_zoned(&d, data, len, &u, sizeof(*g), &obj);
    if (!rc) {
        g = obj;
        g->priv_ = d.zone;
        rc = digest_walk(&d, &u.data, g);
    }
    msgpack_unpacked_destroy(&u);
    if (rc)
        ferry_digest_free(g);
    else
        *out = g;
    return rc;
}

void ferry_digest_free(struct ferry_digest *d)
{
    if (!d)
        return;
    if (d->priv_)
        msgpack_zone_free(d->priv_);
    free(d);
}

/* ---- freeze responses ---- */

int ferry_freeze_reply_encode(const struct ferry_freeze_reply *r, char **out, size_t *len,
                              struct ferry_error *err)
{
    struct writer w;
    int rc;

    writer_init(&w, ENCODE_MAX);
    msgpack_pack_map(&w.pk, 4);
    pack_cstr(&w, "v");
    msgpack_pack_int(&w.pk, FERRY_PROTO_VERSION);
    pack_cstr(&w, "tenant");
    pack_cstr(&w, r->tenant);
    pack_cstr(&w, "frozen");
    pack_bool(&w, r->frozen);
    pack_cstr(&w, "head");
    msgpack_pack_int64(&w.pk, r->head);
    rc = writer_finish(&w, "freeze response", out, len, err);
    ferry_buf_release(&w.buf);
    return rc;
}

int ferry_freeze_reply_decode(const char *data, size_t len, const struct ferry_limits *lim,
                              struct ferry_freeze_reply *r, struct ferry_error *err)
{
    struct field f[4] = {{"v", NULL}, {"tenant", NULL}, {"frozen", NULL}, {"head", NULL}};
    struct dec d = {"freeze response", lim ? lim : &ferry_limits_default, err, NULL};
    const msgpack_object_str *t;
    msgpack_unpacked u;
    size_t max;
    int rc;

    memset(r, 0, sizeof(*r));
    msgpack_unpacked_init(&u);
    rc = parse(&d, data, len, d.lim->max_request, &u);
    if (!rc)
        rc = check_version(&d, &u.data);
    if (!rc)
        rc = get_fields(&d, &u.data, NULL, f, 4);
    if (!rc)
        rc = want(&d, f[1].val, MSGPACK_OBJECT_STR, "tenant", "str");
    if (rc)
        goto out;
    t = &f[1].val->via.str;
    max = d.lim->max_name < FERRY_FREEZE_TENANT_MAX ? d.lim->max_name : FERRY_FREEZE_TENANT_MAX;
    if (t->size == 0 || t->size > max || memchr(t->ptr, '\0', t->size)) {
        rc = fail(&d, t->size > max ? FERRY_ETOOBIG : FERRY_EPROTO, "tenant",
                  "%" PRIu32 " bytes: expected 1 to %zu, no NUL", t->size, max);
        goto out;
    }
    memcpy(r->tenant, t->ptr, t->size);
    r->tenant[t->size] = '\0';
    rc = get_bool(&d, f[2].val, "frozen", &r->frozen);
    if (!rc)
        rc = get_int(&d, f[3].val, "head", &r->head);
out:
    msgpack_unpacked_destroy(&u);
    return rc;
}

/* ---- batches ---- */

static int set_walk(struct dec *d, const msgpack_object *o, size_t si, struct ferry_set *s)
{
    struct field f[5] = {
        {"table", NULL}, {"op", NULL}, {"cols", NULL}, {"rows", NULL}, {"copy", NULL}};
    const msgpack_object_array *cols;
    const msgpack_object_array *rows;
    const msgpack_object_str *op;
    char where[WHERE_MAX];
    char w[WHERE_MAX];
    char *name;
    int rc;

    snprintf(where, sizeof(where), "set %zu", si);
    /* "copy" is optional: sent only when the target asked for COPY text */
    rc = get_fields_opt(d, o, where, f, 5, 4);
    if (rc)
        return rc;
    if (f[4].val) {
        snprintf(w, sizeof(w), "%.120s copy", where);
        rc = get_bool(d, f[4].val, w, &s->copy);
        if (rc)
            return rc;
    }
    snprintf(w, sizeof(w), "%.120s table", where);
    rc = get_name(d, f[0].val, w, &name);
    if (rc)
        return rc;
    s->table = name;

    snprintf(w, sizeof(w), "%.120s op", where);
    rc = want(d, f[1].val, MSGPACK_OBJECT_STR, w, "str");
    if (rc)
        return rc;
    op = &f[1].val->via.str;
    if (op->size == 6 && memcmp(op->ptr, "upsert", 6) == 0) {
        s->op = FERRY_OP_UPSERT;
    } else if (op->size == 6 && memcmp(op->ptr, "delete", 6) == 0) {
        s->op = FERRY_OP_DELETE;
    } else {
        char q[48];

        quote_key(q, sizeof(q), op->ptr, op->size);
        return fail(d, FERRY_EPROTO, w, "\"%s\" is not upsert or delete", q);
    }

    snprintf(w, sizeof(w), "%.120s cols", where);
    rc = want(d, f[2].val, MSGPACK_OBJECT_ARRAY, w, "array");
    if (rc)
        return rc;
    cols = &f[2].val->via.array;
    if (cols->size == 0)
        return fail(d, FERRY_EPROTO, w, "no columns");
    if (cols->size > d->lim->max_cols)
        return fail(d, FERRY_ETOOBIG, w, "%" PRIu32 " columns, limit %zu", cols->size,
                    d->lim->max_cols);
    if (s->op == FERRY_OP_DELETE && cols->size > FERRY_MAX_KEY_COLS)
        return fail(d, FERRY_EPROTO, w, "%" PRIu32 " key columns in a delete, at most %d",
                    cols->size, FERRY_MAX_KEY_COLS);
    s->cols = dec_array(d, w, cols->size, sizeof(*s->cols), &rc);
    if (rc)
        return rc;
    for (uint32_t i = 0; i < cols->size; i++) {
        snprintf(w, sizeof(w), "%.120s col %" PRIu32, where, i);
        rc = get_name(d, &cols->ptr[i], w, &name);
        if (rc)
            return rc;
        s->cols[i] = name;
    }
    s->ncols = cols->size;

    snprintf(w, sizeof(w), "%.120s rows", where);
    rc = want(d, f[3].val, MSGPACK_OBJECT_ARRAY, w, "array");
    if (rc)
        return rc;
    rows = &f[3].val->via.array;
    if (s->copy) {
        if (s->op != FERRY_OP_UPSERT)
            return fail(d, FERRY_EPROTO, where, "COPY text lines in a delete set");
        /*
         * One COPY text line per row, for the target to pass on verbatim:
         * no line break (one line is one row) and not the end marker.
         */
        s->vals = dec_array(d, w, rows->size, sizeof(*s->vals), &rc);
        if (rc)
            return rc;
        for (uint32_t r = 0; r < rows->size; r++) {
            const msgpack_object *row = &rows->ptr[r];
            const char *p;
            size_t n;

            if (row->type != MSGPACK_OBJECT_BIN)
                return fail(d, FERRY_EPROTO, NULL, "set %zu row %" PRIu32 " is %s, expected bin",
                            si, r, type_name(row));
            p = row->via.bin.size ? row->via.bin.ptr : "";
            n = row->via.bin.size;
            if (memchr(p, '\n', n) || memchr(p, '\r', n) || (n == 2 && p[0] == '\\' && p[1] == '.'))
                return fail(d, FERRY_EPROTO, NULL,
                            "set %zu row %" PRIu32 " is not one line of COPY text", si, r);
            s->vals[r].type = FERRY_BLOB;
            s->vals[r].u.s.p = p;
            s->vals[r].u.s.n = n;
        }
        s->nrows = rows->size;
        return 0;
    }
    /*
     * Shapes first, values second: nrows * ncols is allocated only once every
     * row is known to hold ncols objects that exist in the input.
     */
    for (uint32_t r = 0; r < rows->size; r++) {
        const msgpack_object *row = &rows->ptr[r];

        if (row->type != MSGPACK_OBJECT_ARRAY)
            return fail(d, FERRY_EPROTO, NULL, "set %zu row %" PRIu32 " is %s, expected array", si,
                        r, type_name(row));
        if (row->via.array.size != s->ncols)
            return fail(d, FERRY_EPROTO, NULL,
                        "set %zu row %" PRIu32 " has %" PRIu32 " values, expected %zu", si, r,
                        row->via.array.size, s->ncols);
    }
    s->vals = dec_array(d, w, (size_t)rows->size * s->ncols, sizeof(*s->vals), &rc);
    if (rc)
        return rc;
    for (uint32_t r = 0; r < rows->size; r++) {
        const msgpack_object *row = rows->ptr[r].via.array.ptr;

        for (size_t c = 0; c < s->ncols; c++) {
            const char *why = get_value(&row[c], &s->vals[r * s->ncols + c]);

            if (why)
                return fail(d, FERRY_EPROTO, NULL, "set %zu row %" PRIu32 " value %zu: %s", si, r,
                            c, why);
        }
    }
    s->nrows = rows->size;
    return 0;
}

static int batch_walk(struct dec *d, const msgpack_object *o, struct ferry_batch *b)
{
    struct field f[6] = {{"v", NULL},    {"kind", NULL}, {"sets", NULL},
                         {"head", NULL}, {"more", NULL}, {"last", NULL}};
    const msgpack_object_str *kind;
    const msgpack_object_array *sets;
    int rc;

    rc = check_version(d, o);
    if (rc)
        return rc;
    rc = get_fields(d, o, NULL, f, 6);
    if (rc)
        return rc;
    rc = want(d, f[1].val, MSGPACK_OBJECT_STR, "kind", "str");
    if (rc)
        return rc;
    kind = &f[1].val->via.str;
    if (kind->size == 8 && memcmp(kind->ptr, "snapshot", 8) == 0) {
        b->kind = FERRY_KIND_SNAPSHOT;
    } else if (kind->size == 7 && memcmp(kind->ptr, "changes", 7) == 0) {
        b->kind = FERRY_KIND_CHANGES;
    } else {
        char q[48];

        quote_key(q, sizeof(q), kind->ptr, kind->size);
        return fail(d, FERRY_EPROTO, "kind", "\"%s\" is not snapshot or changes", q);
    }
    rc = want(d, f[2].val, MSGPACK_OBJECT_ARRAY, "sets", "array");
    if (rc)
        return rc;
    sets = &f[2].val->via.array;
    b->sets = dec_array(d, "sets", sets->size, sizeof(*b->sets), &rc);
    if (rc)
        return rc;
    b->nsets = sets->size;
    for (size_t i = 0; i < b->nsets; i++) {
        rc = set_walk(d, &sets->ptr[i], i, &b->sets[i]);
        if (rc)
            return rc;
        if (b->sets[i].copy && b->kind != FERRY_KIND_SNAPSHOT)
            return fail(d, FERRY_EPROTO, NULL, "set %zu: COPY text lines in a change batch", i);
    }
    rc = get_int(d, f[3].val, "head", &b->head);
    if (rc)
        return rc;
    rc = get_bool(d, f[4].val, "more", &b->more);
    if (rc)
        return rc;
    return get_key(d, f[5].val, "last", 0, &b->last, &b->nlast);
}

int ferry_batch_decode(const char *data, size_t len, const struct ferry_limits *lim,
                       struct ferry_batch **out, struct ferry_error *err)
{
    struct dec d = {"batch", lim ? lim : &ferry_limits_default, err, NULL};
    struct ferry_batch *b = NULL;
    void *obj = NULL;
    msgpack_unpacked u;
    int rc;

    *out = NULL;
    msgpack_unpacked_init(&u);
    rc = parse_zoned(&d, data, len, &u, sizeof(*b), &obj);
    if (!rc) {
        b = obj;
        b->priv_ = d.zone;
        rc = batch_walk(&d, &u.data, b);
    }
    msgpack_unpacked_destroy(&u);
    if (rc)
        ferry_batch_free(b);
    else
        *out = b;
    return rc;
}

void ferry_batch_free(struct ferry_batch *b)
{
    if (!b)
        return;
    if (b->priv_)
        msgpack_zone_free(b->priv_);
    free(b);
}
