/*
 * test_proto.c - the wire format: round trips of every message, every value
 * kind bit for bit, and every decode error with its code.
 *
 * The oracle for malformed input is msgpack built by hand here (struct mp),
 * independent of msgpack-c and of proto.c's encoders; it also checks a few
 * encodings byte for byte.
 *
 * With FERRY_PROTO_CORPUS=DIR set, every message built here is also written
 * to DIR/fuzz_batch, DIR/fuzz_request or DIR/fuzz_manifest: that is how the
 * committed seed corpora in tests/fuzz/corpus/ were made.
 */
#include "test.h"

#include "common/config.h"
#include "common/error.h"
#include "common/schema.h"
#include "common/value.h"
#include "proto/proto.h"

#include <errno.h>
#include <math.h>
#include <sys/stat.h>

/* ---- a tiny independent msgpack writer ---- */

struct mp {
    unsigned char *p;
    size_t len, cap;
};

static void mp_raw(struct mp *m, const void *p, size_t n)
{
    if (m->len + n > m->cap) {
        size_t cap = m->cap ? m->cap : 256;

        while (cap < m->len + n)
            cap *= 2;
        m->p = realloc(m->p, cap);
        ASSERT(m->p != NULL);
        m->cap = cap;
    }
    if (n)
        memcpy(m->p + m->len, p, n);
    m->len += n;
}

static void mp_u8(struct mp *m, unsigned b)
{
    unsigned char c = (unsigned char)b;

    mp_raw(m, &c, 1);
}

static void mp_be(struct mp *m, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--)
        mp_u8(m, (unsigned)(v >> (8 * i)) & 0xff);
}

static void mp_map(struct mp *m, uint32_t n)
{
    if (n < 16) {
        mp_u8(m, 0x80 | n);
    } else {
        mp_u8(m, 0xdf);
        mp_be(m, n, 4);
    }
}

static void mp_arr(struct mp *m, uint32_t n)
{
    if (n < 16) {
        mp_u8(m, 0x90 | n);
    } else {
        mp_u8(m, 0xdd);
        mp_be(m, n, 4);
    }
}

static void mp_strn(struct mp *m, const char *s, size_t n)
{
    if (n < 32) {
        mp_u8(m, 0xa0 | (unsigned)n);
    } else {
        mp_u8(m, 0xdb);
        mp_be(m, n, 4);
    }
    mp_raw(m, s, n);
}

static void mp_str(struct mp *m, const char *s)
{
    mp_strn(m, s, strlen(s));
}

static void mp_int(struct mp *m, int64_t i)
{
    if (i >= 0 && i <= 127) {
        mp_u8(m, (unsigned)i);
    } else if (i < 0 && i >= -32) {
        mp_u8(m, (unsigned)(i & 0xff));
    } else {
        mp_u8(m, 0xd3);
        mp_be(m, (uint64_t)i, 8);
    }
}

static void mp_nil(struct mp *m)
{
    mp_u8(m, 0xc0);
}

static void mp_bool(struct mp *m, int b)
{
    mp_u8(m, b ? 0xc3 : 0xc2);
}

/*
 * A manifest request's map of nkeys keys into m (emptied first), its first
 * four written as the encoder orders them: v, tenant, after, counts.
 */
static void mp_manifest(struct mp *m, uint32_t nkeys, const char *tenant, int64_t after, int counts)
{
    memset(m, 0, sizeof(*m));
    mp_map(m, nkeys);
    mp_str(m, "v");
    mp_int(m, 1);
    mp_str(m, "tenant");
    mp_str(m, tenant);
    mp_str(m, "after");
    mp_int(m, after);
    mp_str(m, "counts");
    mp_bool(m, counts);
}

static void mp_free(struct mp *m)
{
    free(m->p);
    memset(m, 0, sizeof(*m));
}

/* ---- helpers ---- */

static int corpus_n;

/* Save a message as a fuzz seed when FERRY_PROTO_CORPUS is set. */
static void dump(const char *target, const char *name, const void *p, size_t n)
{
    const char *base = getenv("FERRY_PROTO_CORPUS");
    char path[512];
    FILE *f;

    if (!base)
        return;
    snprintf(path, sizeof(path), "%s/%s", base, target);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        perror(path);
        exit(1);
    }
    snprintf(path, sizeof(path), "%s/%s/%02d-%s", base, target, corpus_n++, name);
    f = fopen(path, "wb");
    ASSERT(f != NULL);
    ASSERT_EQ(fwrite(p, 1, n, f), n);
    ASSERT_EQ(fclose(f), 0);
}

static double f64_from_bits(uint64_t bits)
{
    double d;

    memcpy(&d, &bits, sizeof(d));
    return d;
}

static uint64_t f64_bits(double d)
{
    uint64_t bits;

    memcpy(&bits, &d, sizeof(bits));
    return bits;
}

static struct ferry_value val_float(double f)
{
    struct ferry_value v = {.type = FERRY_FLOAT};

    v.u.f = f;
    return v;
}

static struct ferry_value val_blob(const char *p, size_t n)
{
    struct ferry_value v = {.type = FERRY_BLOB};

    v.u.s.p = p;
    v.u.s.n = n;
    return v;
}

/* Same kind and the same bits (floats compared as bit patterns). */
static int val_same(const struct ferry_value *a, const struct ferry_value *b)
{
    if (a->type != b->type)
        return 0;
    switch (a->type) {
    case FERRY_NULL:
        return 1;
    case FERRY_INT:
        return a->u.i == b->u.i;
    case FERRY_FLOAT:
        return f64_bits(a->u.f) == f64_bits(b->u.f);
    case FERRY_TEXT:
    case FERRY_BLOB:
        return a->u.s.n == b->u.s.n && b->u.s.p != NULL &&
               (a->u.s.n == 0 || memcmp(a->u.s.p, b->u.s.p, a->u.s.n) == 0);
    }
    return 0;
}

static int contains(const char *hay, const char *needle)
{
    return strstr(hay, needle) != NULL;
}

/* Copy into a buffer of exactly n bytes, so that ASan sees any overread. */
static char *exact_copy(const void *p, size_t n)
{
    char *q = malloc(n ? n : 1);

    ASSERT(q != NULL);
    if (n)
        memcpy(q, p, n);
    return q;
}

static const struct ferry_limits *lim = &ferry_limits_default;

/* ---- limits ---- */

static void test_limits(void)
{
    ASSERT_EQ(ferry_limits_default.max_body, (size_t)FERRY_MAX_MESSAGE_MB << 20);
    ASSERT_EQ(ferry_limits_default.max_body, (size_t)1024 * 1024 * 1024);
    ASSERT_EQ(ferry_limits_default.max_request, 64 * 1024);
    ASSERT_EQ(ferry_limits_default.max_objects, 8 * 1024 * 1024);
    ASSERT_EQ(ferry_limits_default.max_depth, 8);
    ASSERT_EQ(ferry_limits_default.max_cols, 1000);
    ASSERT_EQ(ferry_limits_default.max_tables, 1000);
    ASSERT_EQ(ferry_limits_default.max_name, 256);
}

/* ---- requests ---- */

/* The first needle in hay[0..n), or NULL. */
static char *find_bytes(char *hay, size_t n, const char *needle)
{
    size_t k = strlen(needle);

    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(hay + i, needle, k) == 0)
            return hay + i;
    return NULL;
}

static void test_request_manifest(void)
{
    char tenant[] = "team-42";
    struct ferry_request req = {
        .type = FERRY_REQ_MANIFEST, .tenant = tenant, .after = -1, .counts = 1};
    struct ferry_request got;
    struct ferry_error err;
    struct mp m = {0};
    char *out, *copy;
    size_t len;

    ASSERT_EQ(ferry_request_encode(&req, &out, &len, &err), 0);
    /* byte for byte what the header documents, in the encoder's key order */
    mp_manifest(&m, 4, "team-42", -1, 1);
    ASSERT_EQ(len, m.len);
    ASSERT(memcmp(out, m.p, len) == 0);
    dump("fuzz_request", "manifest", out, len);

    copy = exact_copy(out, len);
    free(out);
    ASSERT_EQ(ferry_request_decode(FERRY_REQ_MANIFEST, copy, len, lim, &got, &err), 0);
    free(copy); /* request strings are the decoder's own copies */
    ASSERT_EQ(got.type, FERRY_REQ_MANIFEST);
    ASSERT_STR(got.tenant, "team-42");
    ASSERT_EQ(got.after, -1);
    ASSERT_EQ(got.counts, 1);
    ASSERT(got.table == NULL && got.after_key == NULL);
    ASSERT_EQ(got.want_snapshot, 0);
    ferry_request_release(&got);
    ASSERT(got.tenant == NULL && got.priv_ == NULL);
    ferry_request_release(&got); /* twice is harmless */

    /* asking for an exported snapshot adds one key, and only then */
    req.want_snapshot = 1;
    ASSERT_EQ(ferry_request_encode(&req, &out, &len, &err), 0);
    mp_free(&m);
    mp_manifest(&m, 5, "team-42", -1, 1);
    mp_str(&m, "snapshot");
    mp_bool(&m, 1);
    ASSERT_EQ(len, m.len);
    ASSERT(memcmp(out, m.p, len) == 0);
    dump("fuzz_request", "manifest-snapshot", out, len);
    ASSERT_EQ(ferry_request_decode(FERRY_REQ_MANIFEST, out, len, lim, &got, &err), 0);
    ASSERT_EQ(got.want_snapshot, 1);
    ferry_request_release(&got);
    free(out);
    /* strict as ever: the optional key has a type, and comes once */
    mp_free(&m);
    mp_manifest(&m, 5, "t", -1, 0);
    mp_str(&m, "snapshot");
    mp_str(&m, "yes");
    ASSERT_EQ(ferry_request_decode(FERRY_REQ_MANIFEST, (const char *)m.p, m.len, lim, &got, &err),
              FERRY_EPROTO);
    ASSERT(contains(err.msg, "snapshot: expected bool"));
    mp_free(&m);
    mp_manifest(&m, 6, "t", -1, 0);
    mp_str(&m, "snapshot");
    mp_bool(&m, 1);
    mp_str(&m, "snapshot");
    mp_bool(&m, 0);
    ASSERT_EQ(ferry_request_decode(FERRY_REQ_MANIFEST, (const char *)m.p, m.len, lim, &got, &err),
              FERRY_EPROTO);
    ASSERT(contains(err.msg, "duplicate key \"snapshot\""));
    mp_free(&m);

    /* the first change batch with the manifest: one more key, only when asked for */
    req.want_snapshot = 0;
    req.after = 77;
    req.with_changes = 5000;
    ASSERT_EQ(ferry_request_encode(&req, &out, &len, &err), 0);
    mp_manifest(&m, 5, "team-42", 77, 1);
    mp_str(&m, "changes");
    mp_int(&m, 100);
    /* the same map, but for the integer's width (msgpack-c packs 5000 in 3 bytes) */
    ASSERT_EQ(len, m.len + 2);
    ASSERT(memcmp(out, m.p, m.len - 1) == 0);
    ASSERT((unsigned char)out[len - 3] == 0xcd && out[len - 2] == 0x13 &&
           out[len - 1] == (char)0x88);
    dump("fuzz_request", "manifest-changes", out, len);
    ASSERT_EQ(ferry_request_decode(FERRY_REQ_MANIFEST, out, len, lim, &got, &err), 0);
    ASSERT_EQ(got.with_changes, 5000);
    ASSERT_EQ(got.after, 77);
    ferry_request_release(&got);
    free(out);
    mp_free(&m);
    /* not positive, not an integer, or without a mark: refused */
    for (int bad = 0; bad < 3; bad++) {
        mp_manifest(&m, 5, "t", bad == 2 ? -1 : 3, 0);
        mp_str(&m, "changes");
        if (bad == 1)
            mp_str(&m, "5000");
        else
            mp_int(&m, bad == 0 ? 0 : 10);
        ASSERT_EQ(
            ferry_request_decode(FERRY_REQ_MANIFEST, (const char *)m.p, m.len, lim, &got, &err),
            FERRY_EPROTO);
        ASSERT(contains(err.msg, bad == 0   ? "changes: 0 is not positive"
                                 : bad == 1 ? "changes: expected int"
                                            : "changes: asked for without a mark"));
        mp_free(&m);
    }

    /* "masks": asked only when set (sources from before it refuse the key) */
    req.with_changes = 0;
    ASSERT_EQ(ferry_request_encode(&req, &out, &len, &err), 0);
    ASSERT(find_bytes(out, len, "masks") == NULL);
    free(out);
    req.masks = 1;
    ASSERT_EQ(ferry_request_encode(&req, &out, &len, &err), 0);
    dump("fuzz_request", "manifest-masks", out, len);
    ASSERT_EQ(ferry_request_decode(FERRY_REQ_MANIFEST, out, len, lim, &got, &err), 0);
    ASSERT_EQ(got.masks, 1);
    ASSERT_EQ(got.as_of, 0);
    ferry_request_release(&got);
    free(out);
    req.masks = 0;
    req.as_of = 1; /* "as_of" likewise */
    ASSERT_EQ(ferry_request_encode(&req, &out, &len, &err), 0);
    ASSERT_EQ(ferry_request_decode(FERRY_REQ_MANIFEST, out, len, lim, &got, &err), 0);
    ASSERT_EQ(got.as_of, 1);
    ASSERT_EQ(got.masks, 0);
    ferry_request_release(&got);
    free(out);
    req.as_of = 0;
}

static void test_request_snapshot(void)
{
    char tenant[] = "7", table[] = "posts";
    static const char text[] = "k\0ey\xff";
    struct ferry_value key[2] = {ferry_value_int(INT64_MIN),
                                 ferry_value_text(text, sizeof(text) - 1)};
    struct ferry_request req = {.type = FERRY_REQ_SNAPSHOT,
                                .tenant = tenant,
                                .table = table,
                                .after_key = key,
                                .nafter = 2,
                                .limit = 500};
    struct ferry_request got;
    struct ferry_error err;
    char *out, *copy;
    size_t len;

    ASSERT_EQ(ferry_request_encode(&req, &out, &len, &err), 0);
    dump("fuzz_request", "snapshot-key", out, len);
    copy = exact_copy(out, len);
    free(out);
    ASSERT_EQ(ferry_request_decode(FERRY_REQ_SNAPSHOT, copy, len, lim, &got, &err), 0);
    memset(copy, 0xaa, len); /* the key must be a copy, not a view of the body */
    free(copy);
    ASSERT_STR(got.tenant, "7");
    ASSERT_STR(got.table, "posts");
    ASSERT_EQ(got.limit, 500);
    ASSERT_EQ(got.nafter, 2);
    ASSERT(val_same(&key[0], &got.after_key[0]));
    ASSERT(val_same(&key[1], &got.after_key[1]));
    ferry_request_release(&got);

    /* from the start: after is nil */
    req.after_key = NULL;
    req.nafter = 0;
    ASSERT_EQ(ferry_request_encode(&req, &out, &len, &err), 0);
    dump("fuzz_request", "snapshot-start", out, len);
    ASSERT_EQ(ferry_request_decode(FERRY_REQ_SNAPSHOT, out, len, lim, &got, &err), 0);
    ASSERT(got.after_key == NULL);
    ASSERT_EQ(got.nafter, 0);
    ASSERT_STR(got.table, "posts");
    ferry_request_release(&got);

    ASSERT(got.snapshot == NULL);

    /* a page of one exported snapshot names it */
    {
        char id[] = "00000003-0000001B-1";

        req.snapshot = id;
        free(out);
        ASSERT_EQ(ferry_request_encode(&req, &out, &len, &err), 0);
        dump("fuzz_request", "snapshot-exported", out, len);
        ASSERT_EQ(ferry_request_decode(FERRY_REQ_SNAPSHOT, out, len, lim, &got, &err), 0);
        ASSERT_STR(got.snapshot, "00000003-0000001B-1");
        ferry_request_release(&got);
        /* ids with anything but letters, digits and '-' are refused both ways */
        for (size_t i = 0; i < 3; i++) {
            static const char *const bad[3] = {"1'; DROP TABLE x; --", "",
                                               ("0000000000000000000000000000000000000000000000000"
                                                "0000000000000000")};
            char *body;
            size_t blen;

            req.snapshot = (char *)bad[i];
            ASSERT_EQ(ferry_request_encode(&req, &body, &blen, &err), FERRY_EINTERNAL);
            ASSERT(!ferry_snapshot_id_ok(bad[i]));
        }
        ASSERT(ferry_snapshot_id_ok("00000003-0000001B-1"));
        req.snapshot = NULL;
        /* the same body with the id's quote in it: swap one byte of the encoded id */
        {
            char *q = find_bytes(out, len, "0000001B");

            ASSERT(q != NULL);
            q[0] = '\'';
            ASSERT_EQ(ferry_request_decode(FERRY_REQ_SNAPSHOT, out, len, lim, &got, &err),
                      FERRY_EPROTO);
            ASSERT(contains(err.msg, "snapshot: is not a snapshot id"));
        }
        free(out);
        req.after_key = NULL;
        ASSERT_EQ(ferry_request_encode(&req, &out, &len, &err), 0);
    }

    /* a snapshot body is not a changes body: its keys are unknown there */
    ASSERT_EQ(ferry_request_decode(FERRY_REQ_CHANGES, out, len, lim, &got, &err), FERRY_EPROTO);
    ASSERT(contains(err.msg, "unknown key"));
    ASSERT(got.tenant == NULL && got.priv_ == NULL);
    free(out);

    /* the encoder refuses what the decoder would refuse */
    req.limit = 0;
    ASSERT_EQ(ferry_request_encode(&req, &out, &len, &err), FERRY_EINTERNAL);
    ASSERT(out == NULL);
    req.limit = 1;
    req.after_key = key;
    req.nafter = FERRY_MAX_KEY_COLS + 1;
    ASSERT_EQ(ferry_request_encode(&req, &out, &len, &err), FERRY_EINTERNAL);
}

/* A digest request's hand-built body: its six keys, then "coerce" as bin (NULL: none). */
static void mp_digest(struct mp *m, const unsigned char *coerce, size_t n, int as_str)
{
    mp_map(m, coerce ? 7 : 6);
    mp_str(m, "v");
    mp_int(m, 1);
    mp_str(m, "tenant");
    mp_str(m, "acme");
    mp_str(m, "table");
    mp_str(m, "kinds");
    mp_str(m, "lo");
    mp_nil(m);
    mp_str(m, "hi");
    mp_nil(m);
    mp_str(m, "parts");
    mp_int(m, 4);
    if (!coerce)
        return;
    mp_str(m, "coerce");
    if (as_str) {
        mp_strn(m, (const char *)coerce, n);
        return;
    }
    mp_u8(m, 0xc4);
    mp_u8(m, (unsigned)n);
    mp_raw(m, coerce, n);
}

/*
 * The digest request's optional "coerce" (checksum.h): absent is none (as
 * from a target before it, or of the same engine); one code per column,
 * each 0..FERRY_COERCE_MAX, a bin; anything else refused.
 */
static void test_request_digest_coerce(void)
{
    static const unsigned char codes[3] = {FERRY_COERCE_NONE, FERRY_COERCE_PG_TEXT,
                                           FERRY_COERCE_SQLITE_TEXT};
    static const unsigned char bad[2] = {0, FERRY_COERCE_MAX + 1};
    char tenant[] = "acme", table[] = "kinds";
    struct ferry_request req = {
        .type = FERRY_REQ_DIGEST, .tenant = tenant, .table = table, .parts = 4};
    struct ferry_request got;
    struct ferry_error err;
    struct mp m = {0};
    char *out = NULL;
    size_t len = 0;

    /* without: the six keys as before */
    ASSERT_EQ(ferry_request_encode(&req, &out, &len, &err), 0);
    mp_digest(&m, NULL, 0, 0);
    ASSERT_EQ(len, m.len);
    ASSERT(memcmp(out, m.p, len) == 0);
    ASSERT_EQ(ferry_request_decode(FERRY_REQ_DIGEST, out, len, lim, &got, &err), 0);
    ASSERT(got.coerce == NULL);
    ASSERT_EQ(got.ncoerce, 0);
    ASSERT_EQ(got.parts, 4);
    ferry_request_release(&got);
    free(out);
    mp_free(&m);

    /* with: a bin of one byte per column */
    req.coerce = (unsigned char *)codes;
    req.ncoerce = 3;
    ASSERT_EQ(ferry_request_encode(&req, &out, &len, &err), 0);
    mp_digest(&m, codes, 3, 0);
    ASSERT_EQ(len, m.len);
    ASSERT(memcmp(out, m.p, len) == 0);
    dump("fuzz_request", "digest-coerce", out, len);
    ASSERT_EQ(ferry_request_decode(FERRY_REQ_DIGEST, out, len, lim, &got, &err), 0);
    ASSERT(got.coerce != NULL);
    ASSERT_EQ(got.ncoerce, 3);
    ASSERT(memcmp(got.coerce, codes, 3) == 0);
    ASSERT_STR(got.table, "kinds");
    ferry_request_release(&got);
    free(out);
    mp_free(&m);
    req.ncoerce = 0;
    ASSERT_EQ(ferry_request_encode(&req, &out, &len, &err), FERRY_EINTERNAL);

    /* refused: a code out of range, none, not a bin, twice */
    mp_digest(&m, bad, 2, 0);
    ASSERT_EQ(ferry_request_decode(FERRY_REQ_DIGEST, (const char *)m.p, m.len, lim, &got, &err),
              FERRY_EPROTO);
    ASSERT(contains(err.msg, "coerce"));
    mp_free(&m);
    mp_digest(&m, codes, 0, 0);
    ASSERT_EQ(ferry_request_decode(FERRY_REQ_DIGEST, (const char *)m.p, m.len, lim, &got, &err),
              FERRY_EPROTO);
    ASSERT(contains(err.msg, "coerce"));
    mp_free(&m);
    mp_digest(&m, codes, 3, 1);
    ASSERT_EQ(ferry_request_decode(FERRY_REQ_DIGEST, (const char *)m.p, m.len, lim, &got, &err),
              FERRY_EPROTO);
    ASSERT(contains(err.msg, "coerce: expected bin"));
    mp_free(&m);
    mp_digest(&m, codes, 3, 0);
    m.p[0]++; /* fixmap of 8: "coerce" again */
    mp_str(&m, "coerce");
    mp_u8(&m, 0xc4);
    mp_u8(&m, 1);
    mp_u8(&m, 0);
    ASSERT_EQ(ferry_request_decode(FERRY_REQ_DIGEST, (const char *)m.p, m.len, lim, &got, &err),
              FERRY_EPROTO);
    ASSERT(contains(err.msg, "duplicate key \"coerce\""));
    mp_free(&m);
}

/*
 * The digest request's optional "cols": absent is every column hashed (and
 * not sent then: a source from before it refuses unknown keys); one byte
 * per column, 0 or 1, a bin; anything else refused.
 */
static void test_request_digest_cols(void)
{
    static const unsigned char keep[3] = {1, 0, 1};
    static const unsigned char bad[2] = {1, 2};
    char tenant[] = "acme", table[] = "kinds";
    struct ferry_request req = {
        .type = FERRY_REQ_DIGEST, .tenant = tenant, .table = table, .parts = 4};
    struct ferry_request got;
    struct ferry_error err;
    struct mp m = {0};
    char *out = NULL;
    size_t len = 0;

    req.cols = (unsigned char *)keep;
    req.ncols = 3;
    ASSERT_EQ(ferry_request_encode(&req, &out, &len, &err), 0);
    mp_digest(&m, NULL, 0, 0);
    m.p[0]++; /* fixmap of 7 */
    mp_str(&m, "cols");
    mp_u8(&m, 0xc4);
    mp_u8(&m, 3);
    mp_raw(&m, keep, 3);
    ASSERT_EQ(len, m.len);
    ASSERT(memcmp(out, m.p, len) == 0);
    dump("fuzz_request", "digest-cols", out, len);
    ASSERT_EQ(ferry_request_decode(FERRY_REQ_DIGEST, out, len, lim, &got, &err), 0);
    ASSERT(got.cols != NULL);
    ASSERT_EQ(got.ncols, 3);
    ASSERT(memcmp(got.cols, keep, 3) == 0);
    ASSERT(got.coerce == NULL);
    ferry_request_release(&got);
    free(out);
    mp_free(&m);
    req.ncols = 0;
    ASSERT_EQ(ferry_request_encode(&req, &out, &len, &err), FERRY_EINTERNAL);

    /* refused: a byte other than 0 and 1, none */
    mp_digest(&m, NULL, 0, 0);
    m.p[0]++;
    mp_str(&m, "cols");
    mp_u8(&m, 0xc4);
    mp_u8(&m, 2);
    mp_raw(&m, bad, 2);
    ASSERT_EQ(ferry_request_decode(FERRY_REQ_DIGEST, (const char *)m.p, m.len, lim, &got, &err),
              FERRY_EPROTO);
    ASSERT(contains(err.msg, "cols"));
    mp_free(&m);
    mp_digest(&m, NULL, 0, 0);
    m.p[0]++;
    mp_str(&m, "cols");
    mp_u8(&m, 0xc4);
    mp_u8(&m, 0);
    ASSERT_EQ(ferry_request_decode(FERRY_REQ_DIGEST, (const char *)m.p, m.len, lim, &got, &err),
              FERRY_EPROTO);
    ASSERT(contains(err.msg, "cols"));
    mp_free(&m);
}

/*
 * The digest request's optional "hash" and "hash_key" (checksum.h): absent
 * is SHA-256 (and not sent for it: a source from before them refuses
 * unknown keys); sent together, a known name and a key of
 * FERRY_HASH_KEY_SIZE bytes; anything else refused.
 */
static void test_request_digest_hash(void)
{
    char tenant[] = "acme", table[] = "kinds";
    struct ferry_request req = {
        .type = FERRY_REQ_DIGEST, .tenant = tenant, .table = table, .parts = 4};
    struct ferry_request got;
    struct ferry_error err;
    struct mp m = {0};
    char *out = NULL;
    size_t len = 0;

    static const struct {
        int hash;
        const char *name;
    } named[] = {{FERRY_HASH_SIPHASH13, "siphash-1-3"}, {FERRY_HASH_PGREC, "pg-record-1"}};

    for (size_t i = 0; i < FERRY_HASH_KEY_SIZE; i++)
        req.hash_key[i] = (unsigned char)(0xf0 + i);
    for (size_t k = 0; k < sizeof(named) / sizeof(named[0]); k++) {
        req.hash = named[k].hash;
        ASSERT_EQ(ferry_request_encode(&req, &out, &len, &err), 0);
        /* the six keys, then the hash's name and its key as bin */
        mp_digest(&m, NULL, 0, 0);
        m.p[0] += 2;
        mp_str(&m, "hash");
        mp_str(&m, named[k].name);
        mp_str(&m, "hash_key");
        mp_u8(&m, 0xc4);
        mp_u8(&m, FERRY_HASH_KEY_SIZE);
        mp_raw(&m, req.hash_key, FERRY_HASH_KEY_SIZE);
        ASSERT_EQ(len, m.len);
        ASSERT(memcmp(out, m.p, len) == 0);
        dump("fuzz_request", k ? "digest-hash-pgrec" : "digest-hash", out, len);
        ASSERT_EQ(ferry_request_decode(FERRY_REQ_DIGEST, out, len, lim, &got, &err), 0);
        ASSERT_EQ(got.hash, named[k].hash);
        ASSERT(memcmp(got.hash_key, req.hash_key, FERRY_HASH_KEY_SIZE) == 0);
        ferry_request_release(&got);
        free(out);
        mp_free(&m);
    }

    /* SHA-256: nothing sent, nothing decoded */
    req.hash = FERRY_HASH_SHA256;
    ASSERT_EQ(ferry_request_encode(&req, &out, &len, &err), 0);
    mp_digest(&m, NULL, 0, 0);
    ASSERT_EQ(len, m.len);
    ASSERT(memcmp(out, m.p, len) == 0);
    ASSERT_EQ(ferry_request_decode(FERRY_REQ_DIGEST, out, len, lim, &got, &err), 0);
    ASSERT_EQ(got.hash, FERRY_HASH_SHA256);
    ferry_request_release(&got);
    free(out);
    mp_free(&m);
    req.hash = FERRY_HASH_MAX + 1;
    ASSERT_EQ(ferry_request_encode(&req, &out, &len, &err), FERRY_EINTERNAL);

    /* refused: an unknown name, a short key, one without the other */
    mp_digest(&m, NULL, 0, 0);
    m.p[0] += 2;
    mp_str(&m, "hash");
    mp_str(&m, "sha-1");
    mp_str(&m, "hash_key");
    mp_u8(&m, 0xc4);
    mp_u8(&m, FERRY_HASH_KEY_SIZE);
    mp_raw(&m, req.hash_key, FERRY_HASH_KEY_SIZE);
    ASSERT_EQ(ferry_request_decode(FERRY_REQ_DIGEST, (const char *)m.p, m.len, lim, &got, &err),
              FERRY_EPROTO);
    ASSERT(contains(err.msg, "hash: unknown hash"));
    mp_free(&m);
    mp_digest(&m, NULL, 0, 0);
    m.p[0] += 2;
    mp_str(&m, "hash");
    mp_str(&m, "siphash-1-3");
    mp_str(&m, "hash_key");
    mp_u8(&m, 0xc4);
    mp_u8(&m, FERRY_HASH_KEY_SIZE - 1);
    mp_raw(&m, req.hash_key, FERRY_HASH_KEY_SIZE - 1);
    ASSERT_EQ(ferry_request_decode(FERRY_REQ_DIGEST, (const char *)m.p, m.len, lim, &got, &err),
              FERRY_EPROTO);
    ASSERT(contains(err.msg, "hash_key: 15 bytes"));
    mp_free(&m);
    mp_digest(&m, NULL, 0, 0);
    m.p[0] += 1;
    mp_str(&m, "hash");
    mp_str(&m, "siphash-1-3");
    ASSERT_EQ(ferry_request_decode(FERRY_REQ_DIGEST, (const char *)m.p, m.len, lim, &got, &err),
              FERRY_EPROTO);
    ASSERT(contains(err.msg, "hash_key: missing"));
    mp_free(&m);
}

static void test_request_changes(void)
{
    char tenant[] = "acme";
    struct ferry_request req = {
        .type = FERRY_REQ_CHANGES, .tenant = tenant, .after = 123456789012, .limit = 10000};
    struct ferry_request got;
    struct ferry_error err;
    char *out;
    size_t len;

    ASSERT_EQ(ferry_request_encode(&req, &out, &len, &err), 0);
    dump("fuzz_request", "changes", out, len);
    ASSERT_EQ(ferry_request_decode(FERRY_REQ_CHANGES, out, len, lim, &got, &err), 0);
    ASSERT_EQ(got.type, FERRY_REQ_CHANGES);
    ASSERT_STR(got.tenant, "acme");
    ASSERT_EQ(got.after, 123456789012);
    ASSERT_EQ(got.limit, 10000);
    ferry_request_release(&got);
    free(out);

    ASSERT_EQ(ferry_request_decode(0, "\x80", 1, lim, &got, &err), FERRY_EINTERNAL);
}

/*
 * A changes/snapshot/manifest request built by hand, with one thing wrong.
 * Returns the type to decode it as.
 */
enum req_case {
    RQ_OK,
    RQ_LIMIT_ZERO,
    RQ_LIMIT_NEG,
    RQ_TENANT_EMPTY,
    RQ_TENANT_NUL,
    RQ_TENANT_LONG,
    RQ_AFTER_5,
    RQ_AFTER_EMPTY,
    RQ_AFTER_STR,
    RQ_COUNTS_INT,
    RQ_V2,
    RQ_NO_V,
    RQ_V_STR,
    RQ_DUP,
    RQ_INT_KEY,
    RQ_NOT_MAP,
    RQ_BIG,
    RQ_NCASES
};

static int build_request(struct mp *m, enum req_case c)
{
    char big[300];

    switch (c) {
    case RQ_COUNTS_INT:
        mp_map(m, 4);
        mp_str(m, "v");
        mp_int(m, 1);
        mp_str(m, "tenant");
        mp_str(m, "t");
        mp_str(m, "after");
        mp_int(m, -1);
        mp_str(m, "counts");
        mp_int(m, 1);
        return FERRY_REQ_MANIFEST;
    case RQ_AFTER_5:
    case RQ_AFTER_EMPTY:
    case RQ_AFTER_STR:
        mp_map(m, 5);
        mp_str(m, "limit");
        mp_int(m, 10);
        mp_str(m, "after");
        if (c == RQ_AFTER_STR) {
            mp_str(m, "1");
        } else {
            uint32_t n = c == RQ_AFTER_5 ? 5 : 0;

            mp_arr(m, n);
            for (uint32_t i = 0; i < n; i++)
                mp_int(m, i);
        }
        mp_str(m, "table");
        mp_str(m, "t");
        mp_str(m, "tenant");
        mp_str(m, "x");
        mp_str(m, "v");
        mp_int(m, 1);
        return FERRY_REQ_SNAPSHOT;
    case RQ_NOT_MAP:
        mp_arr(m, 1);
        mp_int(m, 1);
        return FERRY_REQ_CHANGES;
    default:
        break;
    }
    /* changes request, keys in an order of our own */
    mp_map(m, c == RQ_NO_V ? 3 : c == RQ_DUP || c == RQ_INT_KEY ? 5 : 4);
    mp_str(m, "tenant");
    if (c == RQ_TENANT_EMPTY) {
        mp_str(m, "");
    } else if (c == RQ_TENANT_NUL) {
        mp_strn(m, "a\0b", 3);
    } else if (c == RQ_TENANT_LONG || c == RQ_BIG) {
        memset(big, 'x', sizeof(big));
        mp_strn(m, big, c == RQ_BIG ? sizeof(big) : 257);
    } else {
        mp_str(m, "team");
    }
    mp_str(m, "limit");
    mp_int(m, c == RQ_LIMIT_ZERO ? 0 : c == RQ_LIMIT_NEG ? -5 : 100);
    if (c != RQ_NO_V) {
        mp_str(m, "v");
        if (c == RQ_V_STR)
            mp_str(m, "1");
        else
            mp_int(m, c == RQ_V2 ? 2 : 1);
    }
    mp_str(m, "after");
    mp_int(m, 77);
    if (c == RQ_DUP) {
        mp_str(m, "after");
        mp_int(m, 78);
    } else if (c == RQ_INT_KEY) {
        mp_int(m, 3);
        mp_int(m, 78);
    }
    return FERRY_REQ_CHANGES;
}

static void test_request_errors(void)
{
    static const struct {
        enum req_case c;
        int code;
        const char *msg;
    } cases[] = {
        {RQ_OK, 0, ""},
        {RQ_LIMIT_ZERO, FERRY_EPROTO, "changes request: limit: 0 is not positive"},
        {RQ_LIMIT_NEG, FERRY_EPROTO, "limit: -5 is not positive"},
        {RQ_TENANT_EMPTY, FERRY_EPROTO, "tenant: is empty"},
        {RQ_TENANT_NUL, FERRY_EPROTO, "tenant: contains a NUL byte"},
        {RQ_TENANT_LONG, FERRY_ETOOBIG, "tenant: 257 bytes, limit 256"},
        {RQ_AFTER_5, FERRY_EPROTO, "after: key of 5 values, expected 1 to 4"},
        {RQ_AFTER_EMPTY, FERRY_EPROTO, "after: key of 0 values"},
        {RQ_AFTER_STR, FERRY_EPROTO, "after: expected array or nil, got str"},
        {RQ_COUNTS_INT, FERRY_EPROTO, "manifest request: counts: expected bool, got int"},
        {RQ_V2, FERRY_EPROTO, "unsupported protocol version 2"},
        {RQ_NO_V, FERRY_EPROTO, "missing key \"v\""},
        {RQ_V_STR, FERRY_EPROTO, "v: expected int, got str"},
        {RQ_DUP, FERRY_EPROTO, "duplicate key \"after\""},
        {RQ_INT_KEY, FERRY_EPROTO, "map key is int, expected str"},
        {RQ_NOT_MAP, FERRY_EPROTO, "expected map, got array"},
        {RQ_BIG, FERRY_ETOOBIG, "tenant: 300 bytes"},
    };
    struct ferry_limits small = ferry_limits_default;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct ferry_request got;
        struct ferry_error err = {0};
        struct mp m = {0};
        int type = build_request(&m, cases[i].c);
        int rc;

        rc = ferry_request_decode(type, (const char *)m.p, m.len, lim, &got, &err);
        if (rc != cases[i].code || !contains(err.msg, cases[i].msg))
            fprintf(stderr, "request case %zu: rc %d msg \"%s\"\n", i, rc, err.msg);
        ASSERT_EQ(rc, cases[i].code);
        ASSERT(contains(err.msg, cases[i].msg));
        if (rc)
            ASSERT(got.tenant == NULL && got.priv_ == NULL);
        else
            ferry_request_release(&got);
        if (cases[i].c != RQ_OK)
            dump("fuzz_request", "bad", m.p, m.len);
        mp_free(&m);
    }

    /* max_request bounds the whole body */
    {
        struct ferry_request got;
        struct ferry_error err;
        struct mp m = {0};

        build_request(&m, RQ_OK);
        small.max_request = m.len - 1;
        ASSERT_EQ(
            ferry_request_decode(FERRY_REQ_CHANGES, (const char *)m.p, m.len, &small, &got, &err),
            FERRY_ETOOBIG);
        small.max_request = m.len;
        ASSERT_EQ(
            ferry_request_decode(FERRY_REQ_CHANGES, (const char *)m.p, m.len, &small, &got, &err),
            0);
        ferry_request_release(&got);
        mp_free(&m);
    }
}

/* ---- error responses ---- */

static void test_errmsg(void)
{
    struct ferry_error err;
    struct mp m = {0};
    char *out;
    size_t len;

    ASSERT_EQ(ferry_errmsg_encode(FERRY_EFORBIDDEN, "key is not bound to tenant \"9\"", &out, &len),
              0);
    dump("fuzz_request", "errmsg", out, len);
    ASSERT_EQ(ferry_errmsg_decode(out, len, &err), FERRY_EFORBIDDEN);
    ASSERT_EQ(err.code, FERRY_EFORBIDDEN);
    ASSERT_STR(err.msg, "key is not bound to tenant \"9\"");
    free(out);

    /* NULL msg: the code's default message */
    ASSERT_EQ(ferry_errmsg_encode(FERRY_EDB, NULL, &out, &len), 0);
    ASSERT_EQ(ferry_errmsg_decode(out, len, &err), FERRY_EDB);
    ASSERT_STR(err.msg, ferry_strerror(FERRY_EDB));
    free(out);

    /* a code this ferry does not know, and a control byte in the message */
    mp_map(&m, 3);
    mp_str(&m, "v");
    mp_int(&m, 1);
    mp_str(&m, "code");
    mp_str(&m, "ENEWTHING");
    mp_str(&m, "msg");
    mp_str(&m, "two\nlines");
    dump("fuzz_request", "errmsg-unknown", m.p, m.len);
    ASSERT_EQ(ferry_errmsg_decode((const char *)m.p, m.len, &err), FERRY_EPROTO);
    ASSERT_STR(err.msg, "peer error with unknown code \"ENEWTHING\": two lines");
    mp_free(&m);

    /* "OK" is not an error */
    mp_map(&m, 3);
    mp_str(&m, "v");
    mp_int(&m, 1);
    mp_str(&m, "code");
    mp_str(&m, "OK");
    mp_str(&m, "msg");
    mp_str(&m, "fine");
    ASSERT_EQ(ferry_errmsg_decode((const char *)m.p, m.len, &err), FERRY_EPROTO);
    mp_free(&m);

    /* malformed error bodies are EPROTO, not whatever they claim */
    mp_map(&m, 2);
    mp_str(&m, "v");
    mp_int(&m, 1);
    mp_str(&m, "code");
    mp_str(&m, "EDB");
    ASSERT_EQ(ferry_errmsg_decode((const char *)m.p, m.len, &err), FERRY_EPROTO);
    ASSERT_STR(err.msg, "error response: missing key \"msg\"");
    mp_free(&m);
    ASSERT_EQ(ferry_errmsg_decode("<html>", 6, &err), FERRY_EPROTO);
    ASSERT_EQ(ferry_errmsg_decode("", 0, &err), FERRY_EPROTO);
}

/* ---- manifest ---- */

static char *xstrdup(const char *s)
{
    char *p = strdup(s);

    ASSERT(p != NULL);
    return p;
}

static void fill_table(struct ferry_table_info *t, const char *name, int ncols, int npk, int nfks,
                       const char *scope, int64_t rows)
{
    static const char *const types[] = {"INTEGER", "text", "", "REAL", "BLOB", "bigint"};

    memset(t, 0, sizeof(*t));
    t->name = xstrdup(name);
    t->ncols = (size_t)ncols;
    t->cols = calloc((size_t)ncols, sizeof(*t->cols));
    ASSERT(t->cols != NULL);
    for (int i = 0; i < ncols; i++) {
        char cname[32];

        snprintf(cname, sizeof(cname), "c%d_%s", i, name);
        t->cols[i].name = xstrdup(cname);
        t->cols[i].type = xstrdup(types[i % 6]);
        t->cols[i].notnull = i % 2;
        /* key columns in reverse: position is not column order */
        t->cols[i].pk = i < npk ? npk - i : 0;
    }
    t->nfks = (size_t)nfks;
    t->fks = nfks ? calloc((size_t)nfks, sizeof(*t->fks)) : NULL;
    for (int i = 0; i < nfks; i++) {
        struct ferry_fkey *fk = &t->fks[i];

        fk->parent = xstrdup(i ? "teams" : "channels");
        fk->ncols = (size_t)i + 1;
        fk->cols = calloc(fk->ncols, sizeof(char *));
        fk->pcols = calloc(fk->ncols, sizeof(char *));
        for (size_t j = 0; j < fk->ncols; j++) {
            fk->cols[j] = xstrdup(t->cols[j].name);
            fk->pcols[j] = xstrdup(j ? "b" : "id");
        }
        fk->cascade = i == 0;
    }
    t->without_rowid = ncols > 3;
    t->scope_sql = scope ? xstrdup(scope) : NULL;
    t->rows = rows;
}

static void check_tables_equal(const struct ferry_table_info *a, const struct ferry_table_info *b)
{
    ASSERT_STR(a->name, b->name);
    ASSERT_EQ(a->ncols, b->ncols);
    for (size_t i = 0; i < a->ncols; i++) {
        ASSERT_STR(a->cols[i].name, b->cols[i].name);
        ASSERT_STR(a->cols[i].type, b->cols[i].type);
        ASSERT_EQ(a->cols[i].notnull, b->cols[i].notnull);
        ASSERT_EQ(a->cols[i].pk, b->cols[i].pk);
    }
    ASSERT_EQ(a->nfks, b->nfks);
    for (size_t i = 0; i < a->nfks; i++) {
        ASSERT_STR(a->fks[i].parent, b->fks[i].parent);
        ASSERT_EQ(a->fks[i].ncols, b->fks[i].ncols);
        for (size_t j = 0; j < a->fks[i].ncols; j++) {
            ASSERT_STR(a->fks[i].cols[j], b->fks[i].cols[j]);
            ASSERT_STR(a->fks[i].pcols[j], b->fks[i].pcols[j]);
        }
        ASSERT_EQ(a->fks[i].cascade, b->fks[i].cascade);
    }
    ASSERT_EQ(a->without_rowid, b->without_rowid);
    if (a->scope_sql && a->scope_sql[0])
        ASSERT_STR(a->scope_sql, b->scope_sql);
    else
        ASSERT(b->scope_sql == NULL);
    ASSERT_EQ(a->rows, b->rows);
}

static void test_manifest(void)
{
    char tenant[] = "42", root[] = "teams";
    struct ferry_manifest m = {.tenant = tenant, .root = root, .head = 9000, .pending = -1};
    struct ferry_manifest *got;
    struct ferry_error err;
    char *out, *copy;
    size_t len;

    m.ntables = 3;
    m.tables = calloc(3, sizeof(*m.tables));
    ASSERT(m.tables != NULL);
    fill_table(&m.tables[0], "teams", 2, 1, 0, "id = :tenant", 1);
    fill_table(&m.tables[1], "channels", 3, 1, 1, "", -1); /* "" travels as nil */
    fill_table(&m.tables[2], "memberships", 5, 2, 2, NULL, 123456);
    ASSERT_EQ(ferry_table_npk(&m.tables[2]), 2);

    ASSERT_EQ(ferry_manifest_encode(&m, &out, &len, &err), 0);
    dump("fuzz_manifest", "three-tables", out, len);
    copy = exact_copy(out, len);
    free(out);
    ASSERT_EQ(ferry_manifest_decode(copy, len, lim, &got, &err), 0);
    free(copy); /* the manifest owns its strings */
    ASSERT_STR(got->tenant, "42");
    ASSERT_STR(got->root, "teams");
    ASSERT_EQ(got->head, 9000);
    ASSERT_EQ(got->pending, -1);
    ASSERT_EQ(got->ntables, 3);
    for (size_t i = 0; i < 3; i++)
        check_tables_equal(&m.tables[i], &got->tables[i]);
    /* the schema helpers work on a decoded table */
    ASSERT_EQ(ferry_table_pkcol(&got->tables[2], 0), 1);
    ASSERT_EQ(ferry_table_pkcol(&got->tables[2], 1), 0);
    ASSERT_EQ(ferry_table_colidx(&got->tables[1], "c2_channels"), 2);
    ASSERT(got->engine == NULL && got->snapshot == NULL);
    ferry_manifest_free(got);

    /* with an engine and an exported snapshot (optional keys, in any combination) */
    {
        char engine[] = "postgresql", id[] = "00000004-00000002-1";

        m.snapshot = id;
        ASSERT_EQ(ferry_manifest_encode(&m, &out, &len, &err), 0);
        ASSERT_EQ(ferry_manifest_decode(out, len, lim, &got, &err), 0);
        ASSERT_STR(got->snapshot, "00000004-00000002-1");
        ASSERT(got->engine == NULL);
        ferry_manifest_free(got);
        free(out);
        m.engine = engine;
        ASSERT_EQ(ferry_manifest_encode(&m, &out, &len, &err), 0);
        dump("fuzz_manifest", "snapshot", out, len);
        ASSERT_EQ(ferry_manifest_decode(out, len, lim, &got, &err), 0);
        ASSERT_STR(got->snapshot, "00000004-00000002-1");
        ASSERT_STR(got->engine, "postgresql");
        ASSERT_EQ(got->ntables, 3);
        ferry_manifest_free(got);
        /* a quote in the id: refused, and nothing leaks (ASan) */
        {
            char *q = find_bytes(out, len, "00000002");

            ASSERT(q != NULL);
            q[3] = '\'';
            ASSERT_EQ(ferry_manifest_decode(out, len, lim, &got, &err), FERRY_EPROTO);
            ASSERT(contains(err.msg, "snapshot: is not a snapshot id"));
        }
        free(out);
        m.snapshot = NULL;
        m.engine = NULL;
    }

    /* the masked columns, when asked: absent when none, back as they went */
    {
        char c1[] = "posts.body", c2[] = "users.email";
        char *masked[] = {c1, c2};

        ASSERT_EQ(ferry_manifest_encode(&m, &out, &len, &err), 0);
        ASSERT(find_bytes(out, len, "masked") == NULL);
        free(out);
        m.masked = masked;
        m.nmasked = 2;
        ASSERT_EQ(ferry_manifest_encode(&m, &out, &len, &err), 0);
        dump("fuzz_manifest", "masked", out, len);
        ASSERT_EQ(ferry_manifest_decode(out, len, lim, &got, &err), 0);
        ASSERT_EQ(got->nmasked, 2);
        ASSERT_STR(got->masked[0], "posts.body");
        ASSERT_STR(got->masked[1], "users.email");
        ASSERT_EQ(got->as_of, 0);
        ferry_manifest_free(got);
        free(out);
        m.masked = NULL;
        m.nmasked = 0;
        /* "as_of", when known: back as it went */
        m.as_of = 1795400000;
        ASSERT_EQ(ferry_manifest_encode(&m, &out, &len, &err), 0);
        ASSERT_EQ(ferry_manifest_decode(out, len, lim, &got, &err), 0);
        ASSERT_EQ(got->as_of, 1795400000);
        ferry_manifest_free(got);
        free(out);
        m.as_of = 0;
    }

    /* with the first change batch: its bytes come back as they went */
    {
        char batch[] = "\x85\x00 any bytes \xff";

        m.changes = batch;
        m.nchanges = sizeof(batch);
        ASSERT_EQ(ferry_manifest_encode(&m, &out, &len, &err), 0);
        dump("fuzz_manifest", "changes", out, len);
        ASSERT_EQ(ferry_manifest_decode(out, len, lim, &got, &err), 0);
        ASSERT_EQ(got->nchanges, sizeof(batch));
        ASSERT(memcmp(got->changes, batch, sizeof(batch)) == 0);
        ferry_manifest_free(got);
        /* as a string instead of bin: refused */
        {
            char *q = find_bytes(out, len, "changes");

            ASSERT(q != NULL);
            ASSERT((unsigned char)q[7] == 0xc4); /* bin 8 */
            q[7] = (char)0xd9;                   /* str 8, the same length */
            ASSERT_EQ(ferry_manifest_decode(out, len, lim, &got, &err), FERRY_EPROTO);
            ASSERT(contains(err.msg, "changes: expected bin"));
        }
        free(out);
        m.changes = NULL;
        m.nchanges = 0;
    }

    /* no tables at all */
    ferry_tables_free(m.tables, m.ntables);
    m.tables = NULL;
    m.ntables = 0;
    ASSERT_EQ(ferry_manifest_encode(&m, &out, &len, &err), 0);
    dump("fuzz_manifest", "empty", out, len);
    ASSERT_EQ(ferry_manifest_decode(out, len, lim, &got, &err), 0);
    ASSERT_EQ(got->ntables, 0);
    ASSERT(got->tables == NULL);
    ferry_manifest_free(got);
    ferry_manifest_free(NULL);
    free(out);
}

enum man_case {
    MC_OK,
    MC_PK_DUP,
    MC_PK_GAP,
    MC_PK_RANGE,
    MC_COL3,
    MC_FK_MISMATCH,
    MC_FK_NOCOLS,
    MC_TYPE_NUL,
    MC_SCOPE_INT,
    MC_NO_COLS,
    MC_TABLE_KEY,
    MC_ROWS_U64,
    MC_LATE, /* fails on the last field of the second table: frees a lot */
    MC_NCASES
};

static void build_table(struct mp *m, enum man_case c, const char *name, int last)
{
    mp_map(m, c == MC_TABLE_KEY ? 7 : 6);
    mp_str(m, "name");
    mp_str(m, name);
    mp_str(m, "cols");
    if (c == MC_NO_COLS) {
        mp_arr(m, 0);
    } else {
        mp_arr(m, 3);
        for (int i = 0; i < 3; i++) {
            char cn[8] = {'c', (char)('0' + i), 0};
            int pk = i == 0 ? 1 : i == 1 ? 2 : 0;

            if (c == MC_PK_DUP && i == 1)
                pk = 1;
            if (c == MC_PK_GAP && i == 1)
                pk = 3;
            if (c == MC_PK_RANGE && i == 2)
                pk = 4;
            mp_arr(m, c == MC_COL3 && i == 2 ? 3 : 4);
            mp_str(m, cn);
            if (c == MC_TYPE_NUL && i == 1)
                mp_strn(m, "te\0xt", 5);
            else
                mp_str(m, "INTEGER");
            mp_bool(m, 1);
            if (!(c == MC_COL3 && i == 2))
                mp_int(m, pk);
        }
    }
    mp_str(m, "fks");
    mp_arr(m, 1);
    mp_arr(m, 4);
    mp_str(m, "teams");
    mp_arr(m, c == MC_FK_NOCOLS ? 0 : 2);
    if (c != MC_FK_NOCOLS) {
        mp_str(m, "c0");
        mp_str(m, "c1");
    }
    mp_arr(m, c == MC_FK_MISMATCH ? 1 : c == MC_FK_NOCOLS ? 0 : 2);
    if (c != MC_FK_NOCOLS)
        mp_str(m, "id");
    if (c != MC_FK_MISMATCH && c != MC_FK_NOCOLS)
        mp_str(m, "id2");
    mp_bool(m, 0);
    mp_str(m, "without_rowid");
    mp_bool(m, 0);
    mp_str(m, "scope");
    if (c == MC_SCOPE_INT)
        mp_int(m, 1);
    else
        mp_nil(m);
    if (c == MC_TABLE_KEY) {
        mp_str(m, "comment");
        mp_nil(m);
    }
    mp_str(m, "rows");
    if (c == MC_ROWS_U64 || (c == MC_LATE && last)) {
        mp_u8(m, 0xcf);
        mp_be(m, UINT64_MAX, 8);
    } else {
        mp_int(m, 10);
    }
}

static void build_manifest(struct mp *m, enum man_case c, uint32_t ntables)
{
    mp_map(m, 6);
    mp_str(m, "v");
    mp_int(m, 1);
    mp_str(m, "tenant");
    mp_str(m, "42");
    mp_str(m, "root");
    mp_str(m, "teams");
    mp_str(m, "head");
    mp_int(m, 5);
    mp_str(m, "pending");
    mp_int(m, -1);
    mp_str(m, "tables");
    mp_arr(m, ntables);
    for (uint32_t i = 0; i < ntables; i++) {
        char name[16];

        snprintf(name, sizeof(name), "t%u", (unsigned)i);
        build_table(m, c, name, i + 1 == ntables);
    }
}

static void test_manifest_errors(void)
{
    static const struct {
        enum man_case c;
        int code;
        const char *msg;
    } cases[] = {
        {MC_OK, 0, ""},
        {MC_PK_DUP, FERRY_EPROTO, "table 0 (\"t0\") col 1: key position 1 used twice"},
        {MC_PK_GAP, FERRY_EPROTO, "key positions are not 1 to 2"},
        {MC_PK_RANGE, FERRY_EPROTO, "col 2 pk: 4 is not a key position of 3 columns"},
        {MC_COL3, FERRY_EPROTO, "col 2: 3 items, expected [name, type, notnull, pk]"},
        {MC_FK_MISMATCH, FERRY_EPROTO, "fk 0: 2 cols but 1 parent cols"},
        {MC_FK_NOCOLS, FERRY_EPROTO, "fk 0 col: no columns"},
        {MC_TYPE_NUL, FERRY_EPROTO, "col 1 type: contains a NUL byte"},
        {MC_SCOPE_INT, FERRY_EPROTO, "scope: expected str, got int"},
        {MC_NO_COLS, FERRY_EPROTO, "cols: no columns"},
        {MC_TABLE_KEY, FERRY_EPROTO, "manifest: table 0: unknown key \"comment\""},
        {MC_ROWS_U64, FERRY_EPROTO, "rows: 18446744073709551615 is above INT64_MAX"},
        {MC_LATE, FERRY_EPROTO, "table 1 (\"t1\") rows"},
    };
    struct ferry_limits small = ferry_limits_default;
    struct ferry_manifest *got;
    struct ferry_error err;
    struct mp m = {0};

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc;

        err.msg[0] = '\0';
        build_manifest(&m, cases[i].c, 2);
        rc = ferry_manifest_decode((const char *)m.p, m.len, lim, &got, &err);
        if (rc != cases[i].code || !contains(err.msg, cases[i].msg))
            fprintf(stderr, "manifest case %zu: rc %d msg \"%s\"\n", i, rc, err.msg);
        ASSERT_EQ(rc, cases[i].code);
        ASSERT(contains(err.msg, cases[i].msg));
        if (rc) {
            ASSERT(got == NULL);
        } else {
            ASSERT_EQ(got->ntables, 2);
            ASSERT_EQ(got->tables[1].fks[0].ncols, 2);
            ASSERT_STR(got->tables[1].fks[0].pcols[1], "id2");
            ASSERT(got->tables[1].scope_sql == NULL);
            ferry_manifest_free(got);
        }
        dump("fuzz_manifest", cases[i].c == MC_OK ? "hand" : "bad", m.p, m.len);
        mp_free(&m);
    }

    /* limits: tables, columns, names, body */
    build_manifest(&m, MC_OK, 3);
    small.max_tables = 2;
    ASSERT_EQ(ferry_manifest_decode((const char *)m.p, m.len, &small, &got, &err), FERRY_ETOOBIG);
    ASSERT(contains(err.msg, "tables: 3 tables, limit 2"));
    small = ferry_limits_default;
    small.max_cols = 2;
    ASSERT_EQ(ferry_manifest_decode((const char *)m.p, m.len, &small, &got, &err), FERRY_ETOOBIG);
    ASSERT(contains(err.msg, "cols: 3 columns, limit 2"));
    small = ferry_limits_default;
    small.max_name = 1;
    ASSERT_EQ(ferry_manifest_decode((const char *)m.p, m.len, &small, &got, &err), FERRY_ETOOBIG);
    ASSERT(contains(err.msg, "tenant: 2 bytes, limit 1"));
    small = ferry_limits_default;
    small.max_body = m.len - 1;
    ASSERT_EQ(ferry_manifest_decode((const char *)m.p, m.len, &small, &got, &err), FERRY_ETOOBIG);
    small.max_body = m.len;
    ASSERT_EQ(ferry_manifest_decode((const char *)m.p, m.len, &small, &got, &err), 0);
    ferry_manifest_free(got);
    mp_free(&m);
}

/* ---- batches ---- */

static const char *const cols4[] = {"id", "name", "score", "data"};

static void test_values(void)
{
    static const char text_nul[] = "a\0b\xff\xfe\xc3(";
    static const char blob[] = "\0\0\x01\x00\xff";
    size_t bigsz = 100 * 1024;
    char *big = malloc(bigsz);
    struct ferry_value vals[] = {
        ferry_value_null(),
        ferry_value_int(INT64_MIN),
        ferry_value_int(INT64_MAX),
        ferry_value_int(0),
        ferry_value_int(-1),
        ferry_value_int(-33),
        ferry_value_int(255),
        ferry_value_int(4294967296LL),
        val_float(-0.0),
        val_float(0.0),
        val_float(1e-300),
        val_float(5e-324),                               /* smallest subnormal */
        val_float(f64_from_bits(0x7ff8000000000123ULL)), /* quiet NaN with a payload */
        val_float(f64_from_bits(0xfff0000000000001ULL)), /* negative signalling NaN */
        val_float(INFINITY),
        val_float(-INFINITY),
        val_float(1.0 / 3.0),
        ferry_value_text(text_nul, sizeof(text_nul) - 1),
        ferry_value_text("", 0),
        val_blob(blob, sizeof(blob) - 1),
        val_blob("", 0),
        ferry_value_text(big, bigsz),
    };
    size_t n = sizeof(vals) / sizeof(vals[0]);
    const char *colnames[sizeof(vals) / sizeof(vals[0])];
    char namebuf[sizeof(vals) / sizeof(vals[0])][8];
    static const unsigned char neg0[9] = {0xcb, 0x80, 0, 0, 0, 0, 0, 0, 0};
    struct ferry_batch *b;
    struct ferry_error err;
    struct ferry_enc *e;
    const char *out;
    char *copy;
    size_t len, len2;

    ASSERT(big != NULL);
    for (size_t i = 0; i < bigsz; i++)
        big[i] = (char)('a' + i % 26);
    for (size_t i = 0; i < n; i++) {
        snprintf(namebuf[i], sizeof(namebuf[i]), "c%zu", i);
        colnames[i] = namebuf[i];
    }
    e = ferry_enc_new(FERRY_KIND_SNAPSHOT, lim->max_body);
    ASSERT(e != NULL);
    ASSERT_EQ(ferry_enc_set_begin(e, "kinds", FERRY_OP_UPSERT, colnames, n), 0);
    ASSERT_EQ(ferry_enc_row(e, vals, n), 0);
    ASSERT_EQ(ferry_enc_set_end(e), 0);
    ASSERT_EQ(ferry_enc_finish(e, 77, 0, vals + 1, 2, &out, &len), 0);
    ASSERT_EQ(len, ferry_enc_size(e));
    /* -0.0 travels as a float64 with the sign bit set */
    {
        int found = 0;

        for (size_t i = 0; i + sizeof(neg0) <= len; i++)
            if (memcmp(out + i, neg0, sizeof(neg0)) == 0)
                found = 1;
        ASSERT(found);
    }
    copy = exact_copy(out, len);
    ferry_enc_free(e);

    /* a fuzz seed with every kind but the 100 KB text */
    e = ferry_enc_new(FERRY_KIND_SNAPSHOT, lim->max_body);
    ASSERT_EQ(ferry_enc_set_begin(e, "kinds", FERRY_OP_UPSERT, colnames, n - 1), 0);
    ASSERT_EQ(ferry_enc_row(e, vals, n - 1), 0);
    ASSERT_EQ(ferry_enc_set_end(e), 0);
    ASSERT_EQ(ferry_enc_finish(e, 77, 0, vals + 17, 4, &out, &len2), 0);
    dump("fuzz_batch", "kinds", out, len2);
    ferry_enc_free(e);

    ASSERT_EQ(ferry_batch_decode(copy, len, lim, &b, &err), 0);
    ASSERT_EQ(b->kind, FERRY_KIND_SNAPSHOT);
    ASSERT_EQ(b->nsets, 1);
    ASSERT_STR(b->sets[0].table, "kinds");
    ASSERT_EQ(b->sets[0].op, FERRY_OP_UPSERT);
    ASSERT_EQ(b->sets[0].ncols, n);
    ASSERT_EQ(b->sets[0].nrows, 1);
    for (size_t i = 0; i < n; i++) {
        const struct ferry_value *v = &b->sets[0].vals[i];

        ASSERT_STR(b->sets[0].cols[i], colnames[i]);
        if (!val_same(&vals[i], v))
            fprintf(stderr, "value %zu differs\n", i);
        ASSERT(val_same(&vals[i], v));
        /* non-empty TEXT and BLOB are views into the caller's data */
        if ((v->type == FERRY_TEXT || v->type == FERRY_BLOB) && v->u.s.n)
            ASSERT(v->u.s.p >= copy && v->u.s.p + v->u.s.n <= copy + len);
    }
    /* spelled out, the cases that are easy to get wrong */
    ASSERT(signbit(b->sets[0].vals[8].u.f) && b->sets[0].vals[8].u.f == 0.0);
    ASSERT(!signbit(b->sets[0].vals[9].u.f));
    ASSERT(b->sets[0].vals[10].u.f == 1e-300);
    ASSERT_EQ(f64_bits(b->sets[0].vals[12].u.f), 0x7ff8000000000123ULL);
    ASSERT_EQ(f64_bits(b->sets[0].vals[13].u.f), 0xfff0000000000001ULL);
    ASSERT_EQ(b->sets[0].vals[1].u.i, INT64_MIN);
    ASSERT_EQ(b->sets[0].vals[2].u.i, INT64_MAX);
    ASSERT_EQ(b->sets[0].vals[17].u.s.n, 7);
    ASSERT(memcmp(b->sets[0].vals[17].u.s.p, "a\0b\xff\xfe\xc3(", 7) == 0);
    ASSERT(b->sets[0].vals[18].u.s.p != NULL); /* empty TEXT is "", not NULL */
    ASSERT(b->sets[0].vals[20].u.s.p != NULL);
    ASSERT_EQ(b->sets[0].vals[21].u.s.n, bigsz);
    ASSERT_EQ(b->head, 77);
    ASSERT_EQ(b->more, 0);
    ASSERT_EQ(b->nlast, 2);
    ASSERT(val_same(&b->last[0], &vals[1]) && val_same(&b->last[1], &vals[2]));
    ferry_batch_free(b);
    free(copy);
    free(big);
}

/* Encode a batch of several sets; the caller frees the returned copy. */
static char *encode_multi(size_t *len, int dump_it)
{
    static const char *const key1[] = {"id"};
    static const char *const key2[] = {"team_id", "user_id"};
    struct ferry_value row[4];
    struct ferry_value last[2] = {ferry_value_int(3), ferry_value_text("u\0z", 3)};
    struct ferry_enc *e = ferry_enc_new(FERRY_KIND_CHANGES, lim->max_body);
    const char *out;
    size_t size0;
    char *copy;

    ASSERT(e != NULL);
    size0 = ferry_enc_size(e);
    ASSERT(size0 > 0);
    /* upsert 3 rows into posts */
    ASSERT_EQ(ferry_enc_set_begin(e, "posts", FERRY_OP_UPSERT, cols4, 4), 0);
    for (int r = 0; r < 3; r++) {
        char name[16];

        snprintf(name, sizeof(name), "post %d", r);
        row[0] = ferry_value_int(r + 1);
        row[1] = ferry_value_text(name, strlen(name));
        row[2] = r == 1 ? ferry_value_null() : val_float(r * 0.5);
        row[3] = val_blob("\x00\x01", 2);
        ASSERT_EQ(ferry_enc_row(e, row, 4), 0);
    }
    ASSERT_EQ(ferry_enc_set_end(e), 0);
    ASSERT(ferry_enc_size(e) > size0);
    /* an empty set */
    ASSERT_EQ(ferry_enc_set_begin(e, "empty", FERRY_OP_UPSERT, key1, 1), 0);
    ASSERT_EQ(ferry_enc_set_end(e), 0);
    /* delete 2 keys from comments, 1 from memberships */
    ASSERT_EQ(ferry_enc_set_begin(e, "comments", FERRY_OP_DELETE, key1, 1), 0);
    row[0] = ferry_value_int(10);
    ASSERT_EQ(ferry_enc_row(e, row, 1), 0);
    row[0] = ferry_value_int(-11);
    ASSERT_EQ(ferry_enc_row(e, row, 1), 0);
    ASSERT_EQ(ferry_enc_set_end(e), 0);
    ASSERT_EQ(ferry_enc_set_begin(e, "memberships", FERRY_OP_DELETE, key2, 2), 0);
    row[0] = ferry_value_int(42);
    row[1] = ferry_value_text("u\0z", 3);
    ASSERT_EQ(ferry_enc_row(e, row, 2), 0);
    ASSERT_EQ(ferry_enc_set_end(e), 0);
    ASSERT_EQ(ferry_enc_finish(e, 123456, 1, last, 2, &out, len), 0);
    ASSERT_EQ(*len, ferry_enc_size(e));
    /* finish twice gives the same batch */
    {
        const char *out2;
        size_t len2;

        ASSERT_EQ(ferry_enc_finish(e, 0, 0, NULL, 0, &out2, &len2), 0);
        ASSERT(out2 == out && len2 == *len);
    }
    if (dump_it)
        dump("fuzz_batch", "multi", out, *len);
    copy = exact_copy(out, *len);
    ferry_enc_free(e);
    return copy;
}

static void test_batch_multi(void)
{
    struct ferry_batch *b;
    struct ferry_error err;
    const struct ferry_set *s;
    size_t len;
    char *data = encode_multi(&len, 1);

    ASSERT_EQ(ferry_batch_decode(data, len, lim, &b, &err), 0);
    ASSERT_EQ(b->kind, FERRY_KIND_CHANGES);
    ASSERT_EQ(b->head, 123456);
    ASSERT_EQ(b->more, 1);
    ASSERT_EQ(b->nsets, 4);

    s = &b->sets[0];
    ASSERT_STR(s->table, "posts");
    ASSERT_EQ(s->op, FERRY_OP_UPSERT);
    ASSERT_EQ(s->ncols, 4);
    ASSERT_EQ(s->nrows, 3);
    for (size_t i = 0; i < 4; i++)
        ASSERT_STR(s->cols[i], cols4[i]);
    for (int r = 0; r < 3; r++) {
        const struct ferry_value *v = &s->vals[r * 4];
        char name[16];

        snprintf(name, sizeof(name), "post %d", r);
        ASSERT_EQ(v[0].type, FERRY_INT);
        ASSERT_EQ(v[0].u.i, r + 1);
        ASSERT_EQ(v[1].type, FERRY_TEXT);
        ASSERT(v[1].u.s.n == strlen(name) && memcmp(v[1].u.s.p, name, v[1].u.s.n) == 0);
        if (r == 1) {
            ASSERT_EQ(v[2].type, FERRY_NULL);
        } else {
            ASSERT_EQ(v[2].type, FERRY_FLOAT);
            ASSERT(v[2].u.f == r * 0.5);
        }
        ASSERT_EQ(v[3].type, FERRY_BLOB);
        ASSERT(v[3].u.s.n == 2 && memcmp(v[3].u.s.p, "\x00\x01", 2) == 0);
    }

    s = &b->sets[1];
    ASSERT_STR(s->table, "empty");
    ASSERT_EQ(s->nrows, 0);
    ASSERT_EQ(s->ncols, 1);

    s = &b->sets[2];
    ASSERT_STR(s->table, "comments");
    ASSERT_EQ(s->op, FERRY_OP_DELETE);
    ASSERT_EQ(s->nrows, 2);
    ASSERT_EQ(s->vals[0].u.i, 10);
    ASSERT_EQ(s->vals[1].u.i, -11);

    s = &b->sets[3];
    ASSERT_STR(s->table, "memberships");
    ASSERT_EQ(s->op, FERRY_OP_DELETE);
    ASSERT_STR(s->cols[1], "user_id");
    ASSERT_EQ(s->nrows, 1);
    ASSERT_EQ(s->vals[1].u.s.n, 3);

    ASSERT_EQ(b->nlast, 2);
    ASSERT_EQ(b->last[0].u.i, 3);
    ASSERT(b->last[1].type == FERRY_TEXT && b->last[1].u.s.n == 3);
    ferry_batch_free(b);
    ferry_batch_free(NULL);

    /* every proper prefix is refused, never read past */
    for (size_t n = 0; n < len; n++) {
        char *pre = exact_copy(data, n);

        ASSERT_EQ(ferry_batch_decode(pre, n, lim, &b, &err), FERRY_EPROTO);
        ASSERT(b == NULL);
        free(pre);
    }
    free(data);
}

static void test_encoder(void)
{
    static const char *const five[] = {"a", "b", "c", "d", "e"};
    struct ferry_value row[2] = {ferry_value_int(1), ferry_value_text("x", 1)};
    struct ferry_value bad = {.type = (enum ferry_type)9};
    struct ferry_batch *b;
    struct ferry_error err;
    struct ferry_enc *e;
    const char *out;
    size_t len, before;
    int rows = 0;

    /* misuse is EINTERNAL and changes nothing */
    e = ferry_enc_new(FERRY_KIND_SNAPSHOT, 1 << 20);
    ASSERT(e != NULL);
    before = ferry_enc_size(e);
    ASSERT_EQ(ferry_enc_row(e, row, 2), FERRY_EINTERNAL);
    ASSERT_EQ(ferry_enc_set_end(e), FERRY_EINTERNAL);
    ASSERT_EQ(ferry_enc_set_begin(e, "t", FERRY_OP_DELETE, five, 5), FERRY_EINTERNAL);
    ASSERT_EQ(ferry_enc_set_begin(e, "t", FERRY_OP_UPSERT, five, 0), FERRY_EINTERNAL);
    ASSERT_EQ(ferry_enc_set_begin(e, "t", (enum ferry_op)7, five, 1), FERRY_EINTERNAL);
    ASSERT_EQ(ferry_enc_size(e), before);
    ASSERT_EQ(ferry_enc_set_begin(e, "t", FERRY_OP_UPSERT, five, 2), 0);
    ASSERT_EQ(ferry_enc_row(e, row, 1), FERRY_EINTERNAL);
    before = ferry_enc_size(e);
    row[1] = bad;
    ASSERT_EQ(ferry_enc_row(e, row, 2), FERRY_EINTERNAL);
    ASSERT_EQ(ferry_enc_size(e), before);
    row[1] = ferry_value_text("x", 1);
    ASSERT_EQ(ferry_enc_set_begin(e, "u", FERRY_OP_UPSERT, five, 2), FERRY_EINTERNAL);
    ASSERT_EQ(ferry_enc_finish(e, 1, 0, NULL, 0, &out, &len), FERRY_EINTERNAL);
    ASSERT_EQ(ferry_enc_biggest(e), 0); /* refused rows count for nothing */
    ASSERT_EQ(ferry_enc_row(e, row, 2), 0);
    ASSERT_EQ(ferry_enc_biggest(e), 4); /* fixarray 2, fixint 1, fixstr "x": 1 + 1 + 2 bytes */
    ASSERT_EQ(ferry_enc_set_end(e), 0);
    ASSERT_EQ(ferry_enc_finish(e, 1, 0, row, FERRY_MAX_KEY_COLS + 1, &out, &len), FERRY_EINTERNAL);
    ASSERT_EQ(ferry_enc_finish(e, 1, 0, row, 0, &out, &len), FERRY_EINTERNAL);
    ASSERT(ferry_enc_take(e, &len) == NULL); /* not finished yet */
    ASSERT_EQ(ferry_enc_finish(e, 1, 0, NULL, 0, &out, &len), 0);
    ASSERT_EQ(ferry_batch_decode(out, len, lim, &b, &err), 0);
    ASSERT_EQ(b->nsets, 1);
    ASSERT_EQ(b->sets[0].nrows, 1);
    ASSERT(b->last == NULL && b->nlast == 0);
    ferry_batch_free(b);
    /* taken: the same bytes, owned by the caller; the encoder gives no more */
    {
        char *copy = exact_copy(out, len);
        size_t tlen = 0;
        char *taken = ferry_enc_take(e, &tlen);

        ASSERT(taken != NULL);
        ASSERT_EQ(tlen, len);
        ASSERT(memcmp(taken, copy, len) == 0);
        ASSERT(ferry_enc_take(e, &tlen) == NULL);
        ASSERT_EQ(ferry_enc_finish(e, 1, 0, NULL, 0, &out, &len), FERRY_EINTERNAL);
        free(taken);
        free(copy);
    }
    ferry_enc_free(e);

    /*
     * max_body: the row that does not fit is refused with ETOOBIG and rolled
     * back; the batch can still be finished with the rows that fit.
     */
    e = ferry_enc_new(FERRY_KIND_SNAPSHOT, 200);
    ASSERT(e != NULL);
    ASSERT_EQ(ferry_enc_set_begin(e, "t", FERRY_OP_UPSERT, five, 2), 0);
    for (;;) {
        size_t at = ferry_enc_size(e);
        int rc = ferry_enc_row(e, row, 2);

        if (rc) {
            ASSERT_EQ(rc, FERRY_ETOOBIG);
            ASSERT_EQ(ferry_enc_size(e), at);
            break;
        }
        rows++;
        ASSERT(ferry_enc_size(e) <= 200);
    }
    ASSERT(rows > 10);
    ASSERT_EQ(ferry_enc_set_end(e), 0);
    /* the trailer may not fit either: drop rows until it does (a producer stops earlier) */
    ASSERT_EQ(ferry_enc_finish(e, 5, 1, row, 1, &out, &len), FERRY_ETOOBIG);
    ferry_enc_free(e);

    e = ferry_enc_new(FERRY_KIND_SNAPSHOT, 200);
    ASSERT_EQ(ferry_enc_set_begin(e, "t", FERRY_OP_UPSERT, five, 2), 0);
    for (int i = 0; i < rows - 5; i++)
        ASSERT_EQ(ferry_enc_row(e, row, 2), 0);
    ASSERT_EQ(ferry_enc_set_end(e), 0);
    ASSERT_EQ(ferry_enc_finish(e, 5, 1, row, 1, &out, &len), 0);
    ASSERT(len <= 200);
    ASSERT_EQ(ferry_batch_decode(out, len, lim, &b, &err), 0);
    ASSERT_EQ(b->sets[0].nrows, rows - 5);
    ASSERT_EQ(b->more, 1);
    ferry_batch_free(b);
    ferry_enc_free(e);

    /* too small for even the header: every call says ETOOBIG */
    e = ferry_enc_new(FERRY_KIND_CHANGES, 4);
    ASSERT(e != NULL);
    ASSERT_EQ(ferry_enc_set_begin(e, "t", FERRY_OP_UPSERT, five, 2), FERRY_ETOOBIG);
    ASSERT_EQ(ferry_enc_finish(e, 5, 1, NULL, 0, &out, &len), FERRY_ETOOBIG);
    ferry_enc_free(e);
    ferry_enc_free(NULL);
}

/*
 * A batch built by hand with one thing wrong:
 * {v:1, kind:"snapshot", sets:[{table:"t", op:"upsert", cols:[a,b,c,d],
 *   rows:[[1,"x",2.5,nil] x 3]}, {table:"u", op:"delete", cols:[id], rows:[[7]]}],
 *  head:5, more:false, last:[3]}
 */
enum batch_case {
    BC_OK,
    BC_V2,
    BC_V0,
    BC_UNKNOWN_KEY,
    BC_NO_HEAD,
    BC_HEAD_STR,
    BC_HEAD_U64,
    BC_VALUE_U64,
    BC_ROW_SHORT,
    BC_ROW_NOT_ARRAY,
    BC_KIND_BAD,
    BC_OP_BAD,
    BC_DELETE_5,
    BC_LAST_5,
    BC_LAST_EMPTY,
    BC_FLOAT32,
    BC_BOOL_VALUE,
    BC_EXT_VALUE,
    BC_MAP_VALUE,
    BC_TABLE_NUL,
    BC_TABLE_EMPTY,
    BC_TABLE_LONG,
    BC_COL_INT,
    BC_NO_COLS,
    BC_MORE_INT,
    BC_SETS_MAP,
    BC_SET_NO_ROWS_KEY,
    BC_NCASES
};

static void build_batch(struct mp *m, enum batch_case c)
{
    char longname[300];

    mp_map(m, c == BC_UNKNOWN_KEY ? 7 : c == BC_NO_HEAD ? 5 : 6);
    mp_str(m, "v");
    mp_int(m, c == BC_V2 ? 2 : c == BC_V0 ? 0 : 1);
    mp_str(m, "kind");
    mp_str(m, c == BC_KIND_BAD ? "snapshots" : "snapshot");
    if (c == BC_UNKNOWN_KEY) {
        mp_str(m, "x-extra");
        mp_bool(m, 1);
    }
    mp_str(m, "sets");
    if (c == BC_SETS_MAP) {
        mp_map(m, 0);
    } else {
        mp_arr(m, 2);
        mp_map(m, c == BC_SET_NO_ROWS_KEY ? 3 : 4);
        mp_str(m, "table");
        if (c == BC_TABLE_NUL) {
            mp_strn(m, "t\0", 2);
        } else if (c == BC_TABLE_EMPTY) {
            mp_str(m, "");
        } else if (c == BC_TABLE_LONG) {
            memset(longname, 't', sizeof(longname));
            mp_strn(m, longname, sizeof(longname));
        } else {
            mp_str(m, "t");
        }
        mp_str(m, "op");
        mp_str(m, "upsert");
        mp_str(m, "cols");
        if (c == BC_NO_COLS) {
            mp_arr(m, 0);
        } else {
            mp_arr(m, 4);
            mp_str(m, "a");
            mp_str(m, "b");
            if (c == BC_COL_INT)
                mp_int(m, 3);
            else
                mp_str(m, "c");
            mp_str(m, "d");
        }
        if (c != BC_SET_NO_ROWS_KEY) {
            mp_str(m, "rows");
            mp_arr(m, 3);
            for (int r = 0; r < 3; r++) {
                if (c == BC_ROW_NOT_ARRAY && r == 2) {
                    mp_int(m, 1);
                    continue;
                }
                mp_arr(m, c == BC_ROW_SHORT && r == 2 ? 3 : 4);
                if (c == BC_VALUE_U64 && r == 1) {
                    mp_u8(m, 0xcf);
                    mp_be(m, (uint64_t)INT64_MAX + 1, 8);
                } else {
                    mp_int(m, r);
                }
                mp_str(m, "x");
                if (c == BC_FLOAT32 && r == 2) {
                    mp_u8(m, 0xca);
                    mp_be(m, 0x40200000, 4);
                } else {
                    mp_u8(m, 0xcb);
                    mp_be(m, f64_bits(2.5), 8);
                }
                if (!(c == BC_ROW_SHORT && r == 2)) {
                    if (c == BC_BOOL_VALUE && r == 2)
                        mp_bool(m, 0);
                    else if (c == BC_EXT_VALUE && r == 2)
                        mp_raw(m, "\xd4\x01\x00", 3);
                    else if (c == BC_MAP_VALUE && r == 2)
                        mp_map(m, 0);
                    else
                        mp_nil(m);
                }
            }
        }
        mp_map(m, 4);
        mp_str(m, "table");
        mp_str(m, "u");
        mp_str(m, "op");
        mp_str(m, c == BC_OP_BAD ? "merge" : "delete");
        mp_str(m, "cols");
        mp_arr(m, c == BC_DELETE_5 ? 5 : 1);
        mp_str(m, "id");
        if (c == BC_DELETE_5)
            for (int i = 0; i < 4; i++)
                mp_str(m, "k");
        mp_str(m, "rows");
        mp_arr(m, 1);
        mp_arr(m, c == BC_DELETE_5 ? 5 : 1);
        mp_int(m, 7);
        if (c == BC_DELETE_5)
            for (int i = 0; i < 4; i++)
                mp_int(m, i);
    }
    if (c != BC_NO_HEAD) {
        mp_str(m, "head");
        if (c == BC_HEAD_STR) {
            mp_str(m, "5");
        } else if (c == BC_HEAD_U64) {
            mp_u8(m, 0xcf);
            mp_be(m, UINT64_MAX, 8);
        } else {
            mp_int(m, 5);
        }
    }
    mp_str(m, "more");
    if (c == BC_MORE_INT)
        mp_int(m, 0);
    else
        mp_bool(m, 0);
    mp_str(m, "last");
    mp_arr(m, c == BC_LAST_5 ? 5 : c == BC_LAST_EMPTY ? 0 : 1);
    if (c != BC_LAST_EMPTY)
        mp_int(m, 3);
    if (c == BC_LAST_5)
        for (int i = 0; i < 4; i++)
            mp_int(m, i);
}

static void test_batch_errors(void)
{
    static const struct {
        enum batch_case c;
        int code;
        const char *msg;
    } cases[] = {
        {BC_OK, 0, ""},
        {BC_V2, FERRY_EPROTO, "batch: unsupported protocol version 2, this ferry speaks 1"},
        {BC_V0, FERRY_EPROTO, "unsupported protocol version 0"},
        {BC_UNKNOWN_KEY, FERRY_EPROTO, "batch: unknown key \"x-extra\""},
        {BC_NO_HEAD, FERRY_EPROTO, "batch: missing key \"head\""},
        {BC_HEAD_STR, FERRY_EPROTO, "batch: head: expected int, got str"},
        {BC_HEAD_U64, FERRY_EPROTO, "head: 18446744073709551615 is above INT64_MAX"},
        {BC_VALUE_U64, FERRY_EPROTO, "batch: set 0 row 1 value 0: int above INT64_MAX"},
        {BC_ROW_SHORT, FERRY_EPROTO, "batch: set 0 row 2 has 3 values, expected 4"},
        {BC_ROW_NOT_ARRAY, FERRY_EPROTO, "set 0 row 2 is int, expected array"},
        {BC_KIND_BAD, FERRY_EPROTO, "kind: \"snapshots\" is not snapshot or changes"},
        {BC_OP_BAD, FERRY_EPROTO, "set 1 op: \"merge\" is not upsert or delete"},
        {BC_DELETE_5, FERRY_EPROTO, "set 1 cols: 5 key columns in a delete, at most 4"},
        {BC_LAST_5, FERRY_EPROTO, "last: key of 5 values, expected 1 to 4"},
        {BC_LAST_EMPTY, FERRY_EPROTO, "last: key of 0 values"},
        {BC_FLOAT32, FERRY_EPROTO, "set 0 row 2 value 2: float32 is not a value"},
        {BC_BOOL_VALUE, FERRY_EPROTO, "set 0 row 2 value 3: bool is not a value"},
        {BC_EXT_VALUE, FERRY_EPROTO, "set 0 row 2 value 3: ext is not a value"},
        {BC_MAP_VALUE, FERRY_EPROTO, "value 3: map is not a value"},
        {BC_TABLE_NUL, FERRY_EPROTO, "set 0 table: contains a NUL byte"},
        {BC_TABLE_EMPTY, FERRY_EPROTO, "set 0 table: is empty"},
        {BC_TABLE_LONG, FERRY_ETOOBIG, "set 0 table: 300 bytes, limit 256"},
        {BC_COL_INT, FERRY_EPROTO, "set 0 col 2: expected str, got int"},
        {BC_NO_COLS, FERRY_EPROTO, "set 0 cols: no columns"},
        {BC_MORE_INT, FERRY_EPROTO, "more: expected bool, got int"},
        {BC_SETS_MAP, FERRY_EPROTO, "sets: expected array, got map"},
        {BC_SET_NO_ROWS_KEY, FERRY_EPROTO, "batch: set 0: missing key \"rows\""},
    };
    struct ferry_limits small;
    struct ferry_batch *b;
    struct ferry_error err;
    struct mp m = {0};

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *data;
        int rc;

        err.msg[0] = '\0';
        build_batch(&m, cases[i].c);
        data = exact_copy(m.p, m.len);
        rc = ferry_batch_decode(data, m.len, lim, &b, &err);
        if (rc != cases[i].code || !contains(err.msg, cases[i].msg))
            fprintf(stderr, "batch case %zu: rc %d msg \"%s\"\n", i, rc, err.msg);
        ASSERT_EQ(rc, cases[i].code);
        ASSERT(contains(err.msg, cases[i].msg));
        if (rc) {
            ASSERT(b == NULL);
        } else {
            ASSERT_EQ(b->nsets, 2);
            ASSERT_EQ(b->sets[0].nrows, 3);
            ASSERT_EQ(b->sets[0].vals[2 * 4].u.i, 2);
            ASSERT(b->sets[0].vals[2 * 4 + 2].u.f == 2.5);
            ASSERT_EQ(b->sets[1].vals[0].u.i, 7);
            ASSERT_EQ(b->nlast, 1);
            ferry_batch_free(b);
        }
        dump("fuzz_batch", cases[i].c == BC_OK ? "hand" : "bad", m.p, m.len);
        free(data);
        mp_free(&m);
    }

    /* limits */
    build_batch(&m, BC_OK);
    small = ferry_limits_default;
    small.max_body = m.len - 1;
    ASSERT_EQ(ferry_batch_decode((const char *)m.p, m.len, &small, &b, &err), FERRY_ETOOBIG);
    ASSERT(contains(err.msg, "batch: "));
    small.max_body = m.len;
    ASSERT_EQ(ferry_batch_decode((const char *)m.p, m.len, &small, &b, &err), 0);
    ferry_batch_free(b);
    small = ferry_limits_default;
    small.max_cols = 3;
    ASSERT_EQ(ferry_batch_decode((const char *)m.p, m.len, &small, &b, &err), FERRY_ETOOBIG);
    ASSERT(contains(err.msg, "set 0 cols: 4 columns, limit 3"));
    small = ferry_limits_default;
    small.max_objects = 20;
    ASSERT_EQ(ferry_batch_decode((const char *)m.p, m.len, &small, &b, &err), FERRY_ETOOBIG);
    ASSERT(contains(err.msg, "more than 20 objects"));
    small = ferry_limits_default;
    small.max_depth = 4; /* rows are 5 deep */
    ASSERT_EQ(ferry_batch_decode((const char *)m.p, m.len, &small, &b, &err), FERRY_ETOOBIG);
    ASSERT(contains(err.msg, "nested deeper than 4"));
    small.max_depth = 5;
    ASSERT_EQ(ferry_batch_decode((const char *)m.p, m.len, &small, &b, &err), 0);
    ferry_batch_free(b);

    /* trailing garbage after a valid batch */
    mp_u8(&m, 0xc0);
    ASSERT_EQ(ferry_batch_decode((const char *)m.p, m.len, lim, &b, &err), FERRY_EPROTO);
    ASSERT_STR(err.msg, "batch: 1 trailing bytes after the message");
    dump("fuzz_batch", "trailing", m.p, m.len);
    mp_free(&m);
}

/* Framing attacks: counts and lengths that lie, nesting, bytes that are not msgpack. */
static void test_framing(void)
{
    static const struct {
        const char *name;
        const char *bytes;
        size_t len;
        int code;
        const char *msg;
    } cases[] = {
        {"empty", "", 0, FERRY_EPROTO, "empty message"},
        {"array32-huge", "\xdd\xff\xff\xff\xff\x01\x02\x03", 8, FERRY_EPROTO,
         "array at byte 5 declares 4294967295 items, only 3 bytes remain"},
        {"map32-huge", "\xdf\x7f\xff\xff\xff\xc0\xc0", 7, FERRY_EPROTO,
         "map at byte 5 declares 4294967294 items"},
        {"map16-short", "\xde\x00\x02\xa1v\x01", 6, FERRY_EPROTO, "declares 4 items"},
        {"str32-huge",
         "\x81\xdb\xff\xff\xff\xff"
         "abc",
         9, FERRY_EPROTO, "declares 4294967295 bytes, only 3 remain"},
        {"bin32-huge", "\x91\xc6\x80\x00\x00\x00\x00", 7, FERRY_EPROTO, "declares 2147483648"},
        {"ext32-huge", "\x91\xc9\x00\x00\x01\x00\x05", 7, FERRY_EPROTO, "declares 257 bytes"},
        {"str8-cut", "\xd9", 1, FERRY_EPROTO, "truncated at byte 1"},
        {"uint64-cut", "\xcf\x00\x00", 3, FERRY_EPROTO, "declares 8 bytes, only 2 remain"},
        {"map-cut", "\x82\xa1v\x01\xa4kind", 9, FERRY_EPROTO, "truncated at byte 9"},
        {"c1", "\x81\xa1v\xc1", 4, FERRY_EPROTO, "byte 0xc1 at 3 is not msgpack"},
        {"deep9", "\x91\x91\x91\x91\x91\x91\x91\x91\x91\xc0", 10, FERRY_ETOOBIG,
         "nested deeper than 8"},
        {"deep9-empty", "\x91\x91\x91\x91\x91\x91\x91\x91\x90", 9, FERRY_ETOOBIG,
         "nested deeper than 8"},
        {"deep8", "\x91\x91\x91\x91\x91\x91\x91\x91\xc0", 9, FERRY_EPROTO,
         "expected map, got array"},
        {"scalar", "\x2a", 1, FERRY_EPROTO, "batch: expected map, got int"},
        {"two-objects", "\x80\x80", 2, FERRY_EPROTO, "1 trailing bytes"},
        {"empty-map", "\x80", 1, FERRY_EPROTO, "missing key \"v\""},
        {"v-u64", "\x81\xa1v\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 12, FERRY_EPROTO,
         "v: 18446744073709551615 is above INT64_MAX"},
    };
    struct ferry_batch *b;
    struct ferry_error err;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *data = exact_copy(cases[i].bytes, cases[i].len);
        int rc = ferry_batch_decode(data, cases[i].len, lim, &b, &err);

        if (rc != cases[i].code || !contains(err.msg, cases[i].msg))
            fprintf(stderr, "framing case %s: rc %d msg \"%s\"\n", cases[i].name, rc, err.msg);
        ASSERT_EQ(rc, cases[i].code);
        ASSERT(contains(err.msg, cases[i].msg));
        ASSERT(b == NULL);
        dump("fuzz_batch", cases[i].name, data, cases[i].len);
        free(data);
    }

    /* very deep nesting, deeper than msgpack-c's own stack */
    {
        size_t n = 100000;
        char *deep = malloc(n + 1);
        struct ferry_manifest *man;

        ASSERT(deep != NULL);
        memset(deep, 0x91, n);
        deep[n] = (char)0xc0;
        ASSERT_EQ(ferry_batch_decode(deep, n + 1, lim, &b, &err), FERRY_ETOOBIG);
        ASSERT_EQ(ferry_manifest_decode(deep, n + 1, lim, &man, &err), FERRY_ETOOBIG);
        free(deep);
    }

    /* many objects: a million nils in one row, over a max_objects of 1000 */
    {
        size_t n = 1000000;
        struct mp m = {0};
        struct ferry_limits small = ferry_limits_default;

        mp_arr(&m, (uint32_t)n);
        for (size_t i = 0; i < n; i++)
            mp_nil(&m);
        small.max_objects = 1000;
        ASSERT_EQ(ferry_batch_decode((const char *)m.p, m.len, &small, &b, &err), FERRY_ETOOBIG);
        ASSERT(contains(err.msg, "more than 1000 objects"));
        mp_free(&m);
    }
}

/* Snapshot pages as COPY text lines: the request's "copy" key and copy sets. */
/*
 * A digest response's optional "unkeyed" (the tenant's rows with a NULL in
 * their key): sent only when positive, decoded as 0 when absent; a count
 * that is not a positive integer is refused.
 */
static void test_digest_unkeyed(void)
{
    struct ferry_range r;
    struct ferry_digest *g = NULL;
    struct ferry_error err;
    struct mp m = {0};
    char *out = NULL;
    size_t len = 0;

    memset(&r, 0, sizeof(r));
    r.first[0] = ferry_value_int(5);
    r.nfirst = 1;
    r.count = 2;
    r.sum = UINT64_C(0xfedcba9876543210);
    ASSERT_EQ(ferry_digest_encode(&r, 1, 3, &out, &len, &err), 0);
    ASSERT_EQ((unsigned char)out[0], 0x83); /* v, unkeyed, ranges */
    ASSERT_EQ(ferry_digest_decode(out, len, lim, &g, &err), 0);
    ASSERT_EQ(g->unkeyed, 3);
    ASSERT_EQ(g->nranges, 1);
    ASSERT_EQ(g->ranges[0].count, 2);
    ASSERT(g->ranges[0].sum == r.sum);
    ferry_digest_free(g);
    free(out);
    ASSERT_EQ(ferry_digest_encode(&r, 1, 0, &out, &len, &err), 0);
    ASSERT_EQ((unsigned char)out[0], 0x82); /* as before the key: a target from before reads it */
    ASSERT_EQ(ferry_digest_decode(out, len, lim, &g, &err), 0);
    ASSERT_EQ(g->unkeyed, 0);
    ferry_digest_free(g);
    free(out);
    ASSERT_EQ(ferry_digest_encode(&r, 1, -1, &out, &len, &err), FERRY_EINTERNAL);

    for (int bad = 0; bad < 2; bad++) {
        m.len = 0;
        mp_map(&m, 3);
        mp_str(&m, "v");
        mp_int(&m, FERRY_PROTO_VERSION);
        mp_str(&m, "ranges");
        mp_arr(&m, 0);
        mp_str(&m, "unkeyed");
        if (bad)
            mp_str(&m, "2");
        else
            mp_int(&m, 0);
        ASSERT_EQ(ferry_digest_decode((const char *)m.p, m.len, lim, &g, &err), FERRY_EPROTO);
        ASSERT(g == NULL);
        ASSERT(strstr(err.msg, "unkeyed") != NULL);
    }
    mp_free(&m);
}

static void test_batch_copy(void)
{
    static const char *const cols[] = {"id", "body", "n"};
    static const char *const key1[] = {"id"};
    static const char line1[] = "1\tpost\\tx \\\\ y\t\\N";
    char tenant[] = "1", table[] = "posts", snap[] = "00000003-00000002-1";
    struct ferry_request req = {
        .type = FERRY_REQ_SNAPSHOT, .tenant = tenant, .table = table, .limit = 10};
    struct ferry_request got;
    struct ferry_value row[1] = {ferry_value_int(1)};
    struct ferry_value last = ferry_value_int(2);
    struct ferry_batch *b = NULL;
    struct ferry_error err;
    struct ferry_enc *e;
    const char *out;
    char *body, *copy;
    size_t len;

    /* asked only when true: the key is absent otherwise (old sources refuse it) */
    ASSERT_EQ(ferry_request_encode(&req, &body, &len, &err), 0);
    ASSERT(find_bytes(body, len, "copy") == NULL);
    free(body);
    req.copy_text = 1;
    ASSERT_EQ(ferry_request_encode(&req, &body, &len, &err), 0);
    dump("fuzz_request", "snapshot-copy", body, len);
    ASSERT_EQ(ferry_request_decode(FERRY_REQ_SNAPSHOT, body, len, lim, &got, &err), 0);
    ASSERT_EQ(got.copy_text, 1);
    ASSERT_EQ(got.release, 0);
    ferry_request_release(&got);
    free(body);

    /* "release" likewise; it names the snapshot it lets go */
    ASSERT_EQ(ferry_request_encode(&req, &body, &len, &err), 0);
    ASSERT(find_bytes(body, len, "release") == NULL);
    free(body);
    req.release = 1;
    req.snapshot = snap;
    ASSERT_EQ(ferry_request_encode(&req, &body, &len, &err), 0);
    dump("fuzz_request", "snapshot-release", body, len);
    ASSERT_EQ(ferry_request_decode(FERRY_REQ_SNAPSHOT, body, len, lim, &got, &err), 0);
    ASSERT_EQ(got.release, 1);
    ASSERT_STR(got.snapshot, "00000003-00000002-1");
    ferry_request_release(&got);
    free(body);
    req.snapshot = NULL; /* a release of no snapshot: refused */
    ASSERT_EQ(ferry_request_encode(&req, &body, &len, &err), 0);
    ASSERT_EQ(ferry_request_decode(FERRY_REQ_SNAPSHOT, body, len, lim, &got, &err), FERRY_EPROTO);
    ASSERT(strstr(err.msg, "without a snapshot") != NULL);
    ferry_request_release(&got);
    free(body);
    req.release = 0;

    /* a copy set: lines as bin, then an ordinary set in the same batch */
    e = ferry_enc_new(FERRY_KIND_SNAPSHOT, lim->max_body);
    ASSERT(e != NULL);
    ASSERT_EQ(ferry_enc_set_begin_copy(e, "posts", cols, 3), 0);
    ASSERT_EQ(ferry_enc_row(e, row, 3), FERRY_EINTERNAL); /* values do not go in a copy set */
    ASSERT_EQ(ferry_enc_line(e, line1, sizeof(line1) - 1), 0);
    ASSERT_EQ(ferry_enc_line(e, "2\t\t", 3), 0);
    ASSERT_EQ(ferry_enc_set_end(e), 0);
    ASSERT_EQ(ferry_enc_set_begin(e, "other", FERRY_OP_UPSERT, key1, 1), 0);
    ASSERT_EQ(ferry_enc_line(e, "1", 1), FERRY_EINTERNAL); /* nor lines in a value set */
    ASSERT_EQ(ferry_enc_row(e, row, 1), 0);
    ASSERT_EQ(ferry_enc_set_end(e), 0);
    ASSERT_EQ(ferry_enc_finish(e, 0, 1, &last, 1, &out, &len), 0);
    dump("fuzz_batch", "copy", out, len);
    copy = exact_copy(out, len);
    ferry_enc_free(e);
    ASSERT_EQ(ferry_batch_decode(copy, len, lim, &b, &err), 0);
    ASSERT_EQ(b->nsets, 2);
    ASSERT_EQ(b->sets[0].copy, 1);
    ASSERT_EQ(b->sets[0].op, FERRY_OP_UPSERT);
    ASSERT_EQ(b->sets[0].ncols, 3);
    ASSERT_STR(b->sets[0].cols[2], "n");
    ASSERT_EQ(b->sets[0].nrows, 2);
    ASSERT_EQ(b->sets[0].vals[0].type, FERRY_BLOB);
    ASSERT_EQ(b->sets[0].vals[0].u.s.n, sizeof(line1) - 1);
    ASSERT(memcmp(b->sets[0].vals[0].u.s.p, line1, sizeof(line1) - 1) == 0);
    ASSERT_EQ(b->sets[0].vals[1].u.s.n, 3);
    ASSERT_EQ(b->sets[1].copy, 0);
    ASSERT_EQ(b->sets[1].nrows, 1);
    ferry_batch_free(b);
    free(copy);

    /* refused: a line with a line break or the end marker, lines in a change batch */
    for (int i = 0; i < 4; i++) {
        static const char *const bad[4] = {"1\nx", "1\rx", "\\.", "1"};

        e = ferry_enc_new(i == 3 ? FERRY_KIND_CHANGES : FERRY_KIND_SNAPSHOT, lim->max_body);
        ASSERT(e != NULL);
        ASSERT_EQ(ferry_enc_set_begin_copy(e, "posts", cols, 3), 0);
        ASSERT_EQ(ferry_enc_line(e, bad[i], strlen(bad[i])), 0);
        ASSERT_EQ(ferry_enc_set_end(e), 0);
        ASSERT_EQ(ferry_enc_finish(e, 0, 0, NULL, 0, &out, &len), 0);
        copy = exact_copy(out, len);
        ferry_enc_free(e);
        ASSERT_EQ(ferry_batch_decode(copy, len, lim, &b, &err), FERRY_EPROTO);
        ASSERT(b == NULL);
        ASSERT(contains(err.msg, i == 3 ? "COPY text lines in a change batch"
                                        : "is not one line of COPY text"));
        free(copy);
    }
}

int main(void)
{
    test_limits();
    test_request_manifest();
    test_request_snapshot();
    test_request_changes();
    test_request_digest_coerce();
    test_request_digest_cols();
    test_request_digest_hash();
    test_request_errors();
    test_errmsg();
    test_manifest();
    test_manifest_errors();
    test_values();
    test_batch_multi();
    test_encoder();
    test_batch_errors();
    test_batch_copy();
    test_digest_unkeyed();
    test_framing();
    return TEST_DONE();
}
