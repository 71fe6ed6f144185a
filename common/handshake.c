/* handshake.c - handshake messages, transcripts, sessions and request/response MACs. */
#include "handshake.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAGIC "FRHS"
#define MAGIC_LEN 4
#define TYPE_HELLO 1
#define TYPE_CHALLENGE 2
#define TYPE_PROOF 3
#define LABEL_SOURCE "ferry-hs-v1 source"
#define LABEL_TARGET "ferry-hs-v1 target"
/* Largest transcript: twelve length words, the label, a 255-byte tenant, fixed-size fields. */
#define TRANSCRIPT_MAX 1024
#define SIG_MIN (FERRY_KEY_BITS_MIN / 8)
#define SKEW_MAX (24 * 3600)

/* ---- encoding ---- */

static void be16(unsigned char *p, unsigned v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

static void be32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (24 - 8 * i));
}

static void be64(unsigned char *p, int64_t v)
{
    uint64_t u = (uint64_t)v;
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(u >> (56 - 8 * i));
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t get64(const unsigned char *p)
{
    uint64_t u = 0;
    for (int i = 0; i < 8; i++)
        u = u << 8 | p[i];
    /* Two's complement, without relying on an implementation-defined conversion. */
    if (u <= INT64_MAX)
        return (int64_t)u;
    return -(int64_t)(~u) - 1;
}

static int put_header(struct ferry_buf *b, unsigned type)
{
    unsigned char h[3];
    int rc;

    h[0] = (unsigned char)type;
    be16(h + 1, FERRY_HS_VERSION);
    rc = ferry_buf_add(b, MAGIC, MAGIC_LEN);
    if (!rc)
        rc = ferry_buf_add(b, h, sizeof(h));
    return rc;
}

static int put_field(struct ferry_buf *b, const void *p, size_t n)
{
    unsigned char len[2];
    int rc;

    if (n > 0xffff)
        return FERRY_ETOOBIG;
    be16(len, (unsigned)n);
    rc = ferry_buf_add(b, len, sizeof(len));
    if (!rc)
        rc = ferry_buf_add(b, p, n);
    return rc;
}

static int put_i64(struct ferry_buf *b, int64_t v)
{
    unsigned char p[8];

    be64(p, v);
    return put_field(b, p, sizeof(p));
}

static int encoded(int rc, const char *what, struct ferry_error *err)
{
    if (rc)
        return ferry_error_set(err, rc, "cannot encode %s: %s", what, ferry_strerror(rc));
    return FERRY_OK;
}

int ferry_hs_encode_hello(const struct ferry_hs_hello *m, struct ferry_buf *out,
                          struct ferry_error *err)
{
    int rc = put_header(out, TYPE_HELLO);

    if (!rc)
        rc = put_field(out, m->tenant, strlen(m->tenant));
    if (!rc)
        rc = put_field(out, m->fingerprint, strlen(m->fingerprint));
    if (!rc)
        rc = put_field(out, m->nonce, sizeof(m->nonce));
    if (!rc)
        rc = put_i64(out, m->timestamp);
    return encoded(rc, "hello", err);
}

int ferry_hs_encode_challenge(const struct ferry_hs_challenge *m, struct ferry_buf *out,
                              struct ferry_error *err)
{
    unsigned char ttl[4];
    int rc = put_header(out, TYPE_CHALLENGE);

    be32(ttl, m->ttl);
    if (!rc)
        rc = put_field(out, m->fingerprint, strlen(m->fingerprint));
    if (!rc)
        rc = put_field(out, m->nonce, sizeof(m->nonce));
    if (!rc)
        rc = put_field(out, m->session, strlen(m->session));
    if (!rc)
        rc = put_field(out, ttl, sizeof(ttl));
    if (!rc)
        rc = put_i64(out, m->timestamp);
    if (!rc)
        rc = put_field(out, m->wrapped, m->wrappedlen);
    if (!rc)
        rc = put_field(out, m->sig, m->siglen);
    return encoded(rc, "challenge", err);
}

int ferry_hs_encode_proof(const struct ferry_hs_proof *m, struct ferry_buf *out,
                          struct ferry_error *err)
{
    int rc = put_header(out, TYPE_PROOF);

    if (!rc)
        rc = put_field(out, m->session, strlen(m->session));
    if (!rc)
        rc = put_field(out, m->sig, m->siglen);
    return encoded(rc, "proof", err);
}

/* ---- decoding: network bytes, so every length is checked before use ---- */

struct reader {
    const unsigned char *p;
    size_t n;
    size_t off;
    const char *msg; /* message name, for errors */
};

static int read_header(struct reader *r, unsigned type, struct ferry_error *err)
{
    unsigned version;

    if (r->n > FERRY_HS_MSG_MAX)
        return ferry_error_set(err, FERRY_ETOOBIG, "handshake %s of %zu bytes, at most %d", r->msg,
                               r->n, FERRY_HS_MSG_MAX);
    if (r->n < MAGIC_LEN + 3 || memcmp(r->p, MAGIC, MAGIC_LEN) != 0)
        return ferry_error_set(err, FERRY_EPROTO, "malformed handshake %s: not a ferry handshake",
                               r->msg);
    if (r->p[MAGIC_LEN] != type)
        return ferry_error_set(err, FERRY_EPROTO,
                               "malformed handshake %s: message type %u, expected %u", r->msg,
                               r->p[MAGIC_LEN], type);
    version = (unsigned)r->p[MAGIC_LEN + 1] << 8 | r->p[MAGIC_LEN + 2];
    if (version != FERRY_HS_VERSION)
        return ferry_error_set(err, FERRY_EPROTO,
                               "unsupported handshake version %u (this ferry speaks %d)", version,
                               FERRY_HS_VERSION);
    r->off = MAGIC_LEN + 3;
    return FERRY_OK;
}

static int read_field(struct reader *r, const char *name, size_t min, size_t max,
                      const unsigned char **f, size_t *flen, struct ferry_error *err)
{
    size_t len;

    *f = NULL;
    *flen = 0;
    if (r->n - r->off < 2)
        return ferry_error_set(err, FERRY_EPROTO, "malformed handshake %s: truncated before %s",
                               r->msg, name);
    len = (size_t)r->p[r->off] << 8 | r->p[r->off + 1];
    r->off += 2;
    if (len < min || len > max)
        return ferry_error_set(err, FERRY_EPROTO,
                               "malformed handshake %s: %s of %zu bytes, expected %zu..%zu", r->msg,
                               name, len, min, max);
    if (r->n - r->off < len)
        return ferry_error_set(err, FERRY_EPROTO, "malformed handshake %s: truncated %s", r->msg,
                               name);
    *f = r->p + r->off;
    *flen = len;
    r->off += len;
    return FERRY_OK;
}

static int read_end(const struct reader *r, struct ferry_error *err)
{
    if (r->off != r->n)
        return ferry_error_set(err, FERRY_EPROTO, "malformed handshake %s: %zu trailing bytes",
                               r->msg, r->n - r->off);
    return FERRY_OK;
}

static int read_fingerprint(struct reader *r, char out[FERRY_FPR_SIZE], struct ferry_error *err)
{
    const unsigned char *f;
    size_t n;
    int rc;

    rc = read_field(r, "fingerprint", FERRY_FPR_LEN, FERRY_FPR_LEN, &f, &n, err);
    if (rc)
        return rc;
    if (!ferry_key_fingerprint_ok((const char *)f, n))
        return ferry_error_set(err, FERRY_EPROTO, "malformed handshake %s: bad fingerprint",
                               r->msg);
    memcpy(out, f, n);
    out[n] = '\0';
    return FERRY_OK;
}

static int read_session(struct reader *r, char out[FERRY_HS_ID_LEN + 1], struct ferry_error *err)
{
    const unsigned char *f;
    size_t n;
    int rc;

    rc = read_field(r, "session id", FERRY_HS_ID_LEN, FERRY_HS_ID_LEN, &f, &n, err);
    if (rc)
        return rc;
    memcpy(out, f, n);
    out[n] = '\0';
    if (!ferry_hs_session_id_ok(out))
        return ferry_error_set(err, FERRY_EPROTO, "malformed handshake %s: bad session id", r->msg);
    return FERRY_OK;
}

static int read_bytes(struct reader *r, const char *name, size_t min, size_t max,
                      unsigned char *out, size_t *outlen, struct ferry_error *err)
{
    const unsigned char *f;
    size_t n;
    int rc;

    rc = read_field(r, name, min, max, &f, &n, err);
    if (rc)
        return rc;
    memcpy(out, f, n);
    if (outlen)
        *outlen = n;
    return FERRY_OK;
}

static int read_i64(struct reader *r, const char *name, int64_t *out, struct ferry_error *err)
{
    unsigned char b[8];
    int rc;

    rc = read_bytes(r, name, 8, 8, b, NULL, err);
    if (!rc)
        *out = get64(b);
    return rc;
}

int ferry_hs_decode_hello(const void *p, size_t n, struct ferry_hs_hello *m,
                          struct ferry_error *err)
{
    struct reader r = {p, n, 0, "hello"};
    const unsigned char *f;
    size_t flen;
    int rc;

    memset(m, 0, sizeof(*m));
    rc = read_header(&r, TYPE_HELLO, err);
    if (!rc)
        rc = read_field(&r, "tenant", 1, FERRY_TENANT_MAX, &f, &flen, err);
    if (rc)
        return rc;
    memcpy(m->tenant, f, flen);
    m->tenant[flen] = '\0';
    /* A NUL inside the field would make the C string shorter than the field. */
    if (strlen(m->tenant) != flen || ferry_authkeys_check_tenant(m->tenant, NULL) != FERRY_OK) {
        m->tenant[0] = '\0';
        return ferry_error_set(err, FERRY_EPROTO,
                               "malformed handshake hello: tenant is not 1..%d bytes of "
                               "[A-Za-z0-9_.-]",
                               FERRY_TENANT_MAX);
    }
    rc = read_fingerprint(&r, m->fingerprint, err);
    if (!rc)
        rc = read_bytes(&r, "nonce", FERRY_HS_NONCE_LEN, FERRY_HS_NONCE_LEN, m->nonce, NULL, err);
    if (!rc)
        rc = read_i64(&r, "timestamp", &m->timestamp, err);
    if (!rc)
        rc = read_end(&r, err);
    return rc;
}

int ferry_hs_decode_challenge(const void *p, size_t n, struct ferry_hs_challenge *m,
                              struct ferry_error *err)
{
    struct reader r = {p, n, 0, "challenge"};
    unsigned char ttl[4];
    int rc;

    memset(m, 0, sizeof(*m));
    rc = read_header(&r, TYPE_CHALLENGE, err);
    if (!rc)
        rc = read_fingerprint(&r, m->fingerprint, err);
    if (!rc)
        rc = read_bytes(&r, "nonce", FERRY_HS_NONCE_LEN, FERRY_HS_NONCE_LEN, m->nonce, NULL, err);
    if (!rc)
        rc = read_session(&r, m->session, err);
    if (!rc)
        rc = read_bytes(&r, "ttl", 4, 4, ttl, NULL, err);
    if (rc)
        return rc;
    m->ttl = get32(ttl);
    if (m->ttl < 1 || m->ttl > FERRY_HS_TTL_MAX)
        return ferry_error_set(err, FERRY_EPROTO,
                               "malformed handshake challenge: session lifetime %" PRIu32
                               " s outside 1..%d",
                               m->ttl, FERRY_HS_TTL_MAX);
    rc = read_i64(&r, "timestamp", &m->timestamp, err);
    if (!rc)
        rc = read_bytes(&r, "wrapped secret", SIG_MIN, FERRY_KEY_MAX_BYTES, m->wrapped,
                        &m->wrappedlen, err);
    if (!rc)
        rc = read_bytes(&r, "signature", SIG_MIN, FERRY_KEY_MAX_BYTES, m->sig, &m->siglen, err);
    if (!rc)
        rc = read_end(&r, err);
    return rc;
}

int ferry_hs_decode_proof(const void *p, size_t n, struct ferry_hs_proof *m,
                          struct ferry_error *err)
{
    struct reader r = {p, n, 0, "proof"};
    int rc;

    memset(m, 0, sizeof(*m));
    rc = read_header(&r, TYPE_PROOF, err);
    if (!rc)
        rc = read_session(&r, m->session, err);
    if (!rc)
        rc = read_bytes(&r, "signature", SIG_MIN, FERRY_KEY_MAX_BYTES, m->sig, &m->siglen, err);
    if (!rc)
        rc = read_end(&r, err);
    return rc;
}

int ferry_hs_session_id_ok(const char *s)
{
    size_t i;

    for (i = 0; s[i]; i++) {
        if (i >= FERRY_HS_ID_LEN)
            return 0;
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    }
    return i == FERRY_HS_ID_LEN;
}

int ferry_hs_parse_counter(const char *s, uint64_t *out, struct ferry_error *err)
{
    uint64_t v = 0;
    size_t i;

    *out = 0;
    if (!s[0] || s[0] == '0')
        return ferry_error_set(err, FERRY_EPROTO, "malformed request counter");
    for (i = 0; s[i]; i++) {
        unsigned d = (unsigned)(s[i] - '0');
        if (s[i] < '0' || s[i] > '9' || v > (UINT64_MAX - d) / 10)
            return ferry_error_set(err, FERRY_EPROTO, "malformed request counter");
        v = v * 10 + d;
    }
    *out = v;
    return FERRY_OK;
}

/* ---- transcript ---- */

struct transcript {
    const char *tenant;
    const char *target_fpr;
    const char *source_fpr;
    const unsigned char *target_nonce;
    const unsigned char *source_nonce;
    const char *session;
    int64_t hello_ts;
    int64_t challenge_ts;
    uint32_t ttl;
    unsigned char wrapped_hash[FERRY_SHA256_LEN];
};

static int tr_field(struct ferry_buf *b, const void *p, size_t n)
{
    unsigned char len[4];
    int rc;

    be32(len, (uint32_t)n);
    rc = ferry_buf_add(b, len, sizeof(len));
    if (!rc)
        rc = ferry_buf_add(b, p, n);
    return rc;
}

/* The bytes each side signs (see handshake.h), appended to b. */
static int transcript_build(const char *label, const struct transcript *t, struct ferry_buf *b,
                            struct ferry_error *err)
{
    unsigned char version[2];
    unsigned char hts[8];
    unsigned char cts[8];
    unsigned char ttl[4];
    int rc;

    be16(version, FERRY_HS_VERSION);
    be64(hts, t->hello_ts);
    be64(cts, t->challenge_ts);
    be32(ttl, t->ttl);
    rc = tr_field(b, label, strlen(label));
    if (!rc)
        rc = tr_field(b, version, sizeof(version));
    if (!rc)
        rc = tr_field(b, t->tenant, strlen(t->tenant));
    if (!rc)
        rc = tr_field(b, t->target_fpr, strlen(t->target_fpr));
    if (!rc)
        rc = tr_field(b, t->source_fpr, strlen(t->source_fpr));
    if (!rc)
        rc = tr_field(b, t->target_nonce, FERRY_HS_NONCE_LEN);
    if (!rc)
        rc = tr_field(b, t->source_nonce, FERRY_HS_NONCE_LEN);
    if (!rc)
        rc = tr_field(b, t->session, strlen(t->session));
    if (!rc)
        rc = tr_field(b, hts, sizeof(hts));
    if (!rc)
        rc = tr_field(b, cts, sizeof(cts));
    if (!rc)
        rc = tr_field(b, ttl, sizeof(ttl));
    if (!rc)
        rc = tr_field(b, t->wrapped_hash, sizeof(t->wrapped_hash));
    if (rc)
        return ferry_error_set(err, FERRY_EINTERNAL, "cannot build handshake transcript: %s",
                               ferry_strerror(rc));
    return FERRY_OK;
}

static int transcript_sign(const char *label, const struct transcript *t,
                           const struct ferry_key *key, unsigned char *sig, size_t *siglen,
                           struct ferry_error *err)
{
    struct ferry_buf b;
    int rc;

    ferry_buf_init(&b, TRANSCRIPT_MAX);
    rc = transcript_build(label, t, &b, err);
    if (!rc)
        rc = ferry_key_sign(key, b.data, b.len, sig, FERRY_KEY_MAX_BYTES, siglen, err);
    ferry_buf_release(&b);
    return rc;
}

static int transcript_verify(const char *label, const struct transcript *t,
                             const struct ferry_key *key, const unsigned char *sig, size_t siglen,
                             struct ferry_error *err)
{
    struct ferry_buf b;
    int rc;

    ferry_buf_init(&b, TRANSCRIPT_MAX);
    rc = transcript_build(label, t, &b, err);
    if (!rc)
        rc = ferry_key_verify(key, b.data, b.len, sig, siglen, err);
    ferry_buf_release(&b);
    return rc;
}

static int stale(int64_t ts, int64_t now, int skew)
{
    return ts < now - skew || ts > now + skew;
}

/* ---- MACs ---- */

static int mac_parts(const unsigned char *secret, struct ferry_bytes *parts, size_t nparts,
                     const unsigned char body_hash[FERRY_SHA256_LEN], unsigned char *out,
                     struct ferry_error *err)
{
    char hex[2 * FERRY_SHA256_LEN + 1];

    ferry_hex_encode(body_hash, FERRY_SHA256_LEN, hex);
    parts[nparts].p = hex;
    parts[nparts].n = 2 * FERRY_SHA256_LEN;
    return ferry_hmac_sha256(secret, FERRY_HS_SECRET_LEN, parts, nparts + 1, out, err);
}

int ferry_hs_mac_request(const unsigned char secret[FERRY_HS_SECRET_LEN], const char *method,
                         const char *path, const char *query, uint64_t counter,
                         const unsigned char body_hash[FERRY_SHA256_LEN],
                         unsigned char out[FERRY_HMAC_LEN], struct ferry_error *err)
{
    char num[24];
    struct ferry_bytes parts[9];

    /* A newline would let one field pass for the end of another. */
    if (strchr(method, '\n') || strchr(path, '\n') || strchr(query, '\n'))
        return ferry_error_set(err, FERRY_EPROTO, "newline in request method, path or query");
    snprintf(num, sizeof(num), "%" PRIu64, counter);
    parts[0] = (struct ferry_bytes){method, strlen(method)};
    parts[1] = (struct ferry_bytes){"\n", 1};
    parts[2] = (struct ferry_bytes){path, strlen(path)};
    parts[3] = (struct ferry_bytes){"\n", 1};
    parts[4] = (struct ferry_bytes){query, strlen(query)};
    parts[5] = (struct ferry_bytes){"\n", 1};
    parts[6] = (struct ferry_bytes){num, strlen(num)};
    parts[7] = (struct ferry_bytes){"\n", 1};
    return mac_parts(secret, parts, 8, body_hash, out, err);
}

int ferry_hs_verify_request(const unsigned char secret[FERRY_HS_SECRET_LEN], const char *method,
                            const char *path, const char *query, uint64_t counter,
                            const unsigned char body_hash[FERRY_SHA256_LEN],
                            const unsigned char *mac, size_t maclen, struct ferry_error *err)
{
    unsigned char want[FERRY_HMAC_LEN];
    int rc;

    rc = ferry_hs_mac_request(secret, method, path, query, counter, body_hash, want, err);
    if (rc)
        return rc;
    if (maclen != FERRY_HMAC_LEN || !ferry_ct_equal(want, mac, FERRY_HMAC_LEN))
        return ferry_error_set(err, FERRY_EAUTH, "bad request MAC");
    return FERRY_OK;
}

int ferry_hs_mac_response(const unsigned char secret[FERRY_HS_SECRET_LEN], uint64_t counter,
                          int status, const unsigned char body_hash[FERRY_SHA256_LEN],
                          unsigned char out[FERRY_HMAC_LEN], struct ferry_error *err)
{
    char num[24];
    char st[8];
    struct ferry_bytes parts[6];

    if (status < 100 || status > 999)
        return ferry_error_set(err, FERRY_EINTERNAL, "HTTP status %d", status);
    snprintf(num, sizeof(num), "%" PRIu64, counter);
    snprintf(st, sizeof(st), "%d", status);
    parts[0] = (struct ferry_bytes){"resp\n", 5};
    parts[1] = (struct ferry_bytes){num, strlen(num)};
    parts[2] = (struct ferry_bytes){"\n", 1};
    parts[3] = (struct ferry_bytes){st, strlen(st)};
    parts[4] = (struct ferry_bytes){"\n", 1};
    return mac_parts(secret, parts, 5, body_hash, out, err);
}

int ferry_hs_verify_response(const unsigned char secret[FERRY_HS_SECRET_LEN], uint64_t counter,
                             int status, const unsigned char body_hash[FERRY_SHA256_LEN],
                             const unsigned char *mac, size_t maclen, struct ferry_error *err)
{
    unsigned char want[FERRY_HMAC_LEN];
    int rc;

    rc = ferry_hs_mac_response(secret, counter, status, body_hash, want, err);
    if (rc)
        return rc;
    if (maclen != FERRY_HMAC_LEN || !ferry_ct_equal(want, mac, FERRY_HMAC_LEN))
        return ferry_error_set(err, FERRY_EAUTH, "response MAC mismatch");
    return FERRY_OK;
}

/* ---- target side ---- */

struct ferry_hs_client {
    const struct ferry_key *identity;
    const struct ferry_key *source;
    char tenant[FERRY_TENANT_MAX + 1];
    int skew;
    int pending; /* a hello was sent and awaits its challenge */
    unsigned char nonce[FERRY_HS_NONCE_LEN];
    int64_t hello_ts;
};

void ferry_hs_session_clear(struct ferry_hs_session *s)
{
    ferry_cleanse(s, sizeof(*s));
}

int ferry_hs_client_new(const struct ferry_key *identity, const struct ferry_key *source,
                        const char *tenant, int skew, struct ferry_hs_client **out,
                        struct ferry_error *err)
{
    struct ferry_hs_client *c;
    int rc;

    *out = NULL;
    if (!ferry_key_is_private(identity))
        return ferry_error_set(err, FERRY_ECONFIG, "target identity %s has no private key",
                               ferry_key_fingerprint(identity));
    rc = ferry_authkeys_check_tenant(tenant, err);
    if (rc)
        return rc;
    if (skew < 0 || skew > SKEW_MAX)
        return ferry_error_set(err, FERRY_EUSAGE, "clock skew %d s outside 0..%d", skew, SKEW_MAX);
    c = calloc(1, sizeof(*c));
    if (!c)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
    c->identity = identity;
    c->source = source;
    snprintf(c->tenant, sizeof(c->tenant), "%s", tenant);
    c->skew = skew ? skew : FERRY_HS_SKEW_DEFAULT;
    *out = c;
    return FERRY_OK;
}

void ferry_hs_client_free(struct ferry_hs_client *c)
{
    if (!c)
        return;
    ferry_cleanse(c, sizeof(*c));
    free(c);
}

int ferry_hs_client_hello(struct ferry_hs_client *c, int64_t now, struct ferry_buf *out,
                          struct ferry_error *err)
{
    struct ferry_hs_hello m;
    int rc;

    c->pending = 0;
    memset(&m, 0, sizeof(m));
    snprintf(m.tenant, sizeof(m.tenant), "%s", c->tenant);
    snprintf(m.fingerprint, sizeof(m.fingerprint), "%s", ferry_key_fingerprint(c->identity));
    rc = ferry_random(m.nonce, sizeof(m.nonce), err);
    if (rc)
        return rc;
    m.timestamp = now;
    rc = ferry_hs_encode_hello(&m, out, err);
    if (rc)
        return rc;
    memcpy(c->nonce, m.nonce, sizeof(c->nonce));
    c->hello_ts = now;
    c->pending = 1;
    return FERRY_OK;
}

int ferry_hs_client_challenge(struct ferry_hs_client *c, const void *msg, size_t len, int64_t now,
                              struct ferry_buf *out, struct ferry_hs_session *sess,
                              struct ferry_error *err)
{
    struct ferry_hs_challenge *ch = NULL;
    struct ferry_hs_proof *pr = NULL;
    struct transcript t;
    unsigned char secret[FERRY_KEY_MAX_BYTES];
    size_t secretlen = 0;
    int rc;

    memset(sess, 0, sizeof(*sess));
    if (!c->pending) {
        rc = ferry_error_set(err, FERRY_EINTERNAL, "handshake challenge without a hello");
        goto out;
    }
    c->pending = 0;
    /* Over 2 KiB each: keep them off the stack of an event-loop callback. */
    ch = malloc(sizeof(*ch));
    pr = calloc(1, sizeof(*pr));
    if (!ch || !pr) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        goto out;
    }
    rc = ferry_hs_decode_challenge(msg, len, ch, err);
    if (rc)
        goto out;
    if (strcmp(ch->fingerprint, ferry_key_fingerprint(c->source)) != 0) {
        rc = ferry_error_set(err, FERRY_EAUTH,
                             "source key %s is not the pinned source key %s (check [source] "
                             "public_key)",
                             ch->fingerprint, ferry_key_fingerprint(c->source));
        goto out;
    }
    if (stale(ch->timestamp, now, c->skew)) {
        rc = ferry_error_set(err, FERRY_EAUTH,
                             "stale timestamp: source clock differs by %lld s (allowed %d s)",
                             (long long)(ch->timestamp - now), c->skew);
        goto out;
    }
    memset(&t, 0, sizeof(t));
    t.tenant = c->tenant;
    t.target_fpr = ferry_key_fingerprint(c->identity);
    t.source_fpr = ch->fingerprint;
    t.target_nonce = c->nonce;
    t.source_nonce = ch->nonce;
    t.session = ch->session;
    t.hello_ts = c->hello_ts;
    t.challenge_ts = ch->timestamp;
    t.ttl = ch->ttl;
    rc = ferry_sha256(ch->wrapped, ch->wrappedlen, t.wrapped_hash, err);
    if (rc)
        goto out;
    rc = transcript_verify(LABEL_SOURCE, &t, c->source, ch->sig, ch->siglen, err);
    if (rc) {
        ferry_error_prefix(err, "source handshake refused");
        goto out;
    }
    rc = ferry_key_decrypt(c->identity, ch->wrapped, ch->wrappedlen, secret, sizeof(secret),
                           &secretlen, err);
    if (!rc && secretlen != FERRY_HS_SECRET_LEN)
        rc = ferry_error_set(err, FERRY_EAUTH, "session secret of %zu bytes, expected %d",
                             secretlen, FERRY_HS_SECRET_LEN);
    if (rc)
        goto out;
    snprintf(pr->session, sizeof(pr->session), "%s", ch->session);
    rc = transcript_sign(LABEL_TARGET, &t, c->identity, pr->sig, &pr->siglen, err);
    if (!rc)
        rc = ferry_hs_encode_proof(pr, out, err);
    if (rc)
        goto out;
    snprintf(sess->id, sizeof(sess->id), "%s", ch->session);
    memcpy(sess->secret, secret, FERRY_HS_SECRET_LEN);
    sess->counter = 0;
    sess->expires = now + ch->ttl;
out:
    ferry_cleanse(secret, sizeof(secret));
    ferry_cleanse(c->nonce, sizeof(c->nonce));
    free(ch);
    free(pr);
    return rc;
}

/* ---- source side ---- */

enum { SLOT_FREE, SLOT_PENDING, SLOT_ACTIVE };

struct session {
    int state;
    char id[FERRY_HS_ID_LEN + 1];
    char fingerprint[FERRY_FPR_SIZE];
    char tenant[FERRY_TENANT_MAX + 1];
    unsigned char secret[FERRY_HS_SECRET_LEN];
    uint64_t last;   /* last accepted counter */
    uint64_t used;   /* server tick of creation or last request: eviction order */
    int64_t expires; /* pending: deadline for the proof; active: end of the session */
    /* What the proof's transcript is checked against. */
    unsigned char target_nonce[FERRY_HS_NONCE_LEN];
    unsigned char source_nonce[FERRY_HS_NONCE_LEN];
    int64_t hello_ts;
    int64_t challenge_ts;
    unsigned char wrapped_hash[FERRY_SHA256_LEN];
};

struct seen_nonce {
    unsigned char nonce[FERRY_HS_NONCE_LEN];
    int64_t expires; /* after this a hello carrying it is stale anyway */
};

struct ferry_hs_server {
    const struct ferry_key *identity;
    struct ferry_authkeys *keys;
    struct ferry_hs_server_opts o;
    struct session *sessions; /* o.max_sessions slots */
    struct seen_nonce *nonces;
    size_t nnonces;
    uint64_t tick;
};

void ferry_hs_peer_clear(struct ferry_hs_peer *p)
{
    ferry_cleanse(p, sizeof(*p));
}

int ferry_hs_server_new(const struct ferry_key *identity, struct ferry_authkeys *keys,
                        const struct ferry_hs_server_opts *opts, struct ferry_hs_server **out,
                        struct ferry_error *err)
{
    struct ferry_hs_server *s;

    *out = NULL;
    if (!ferry_key_is_private(identity))
        return ferry_error_set(err, FERRY_ECONFIG, "source identity %s has no private key",
                               ferry_key_fingerprint(identity));
    s = calloc(1, sizeof(*s));
    if (!s)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
    s->identity = identity;
    s->keys = keys;
    s->o.skew = FERRY_HS_SKEW_DEFAULT;
    s->o.ttl = FERRY_HS_TTL_DEFAULT;
    s->o.max_sessions = 1024;
    s->o.max_nonces = 4096;
    if (opts) {
        if (opts->skew)
            s->o.skew = opts->skew;
        if (opts->ttl)
            s->o.ttl = opts->ttl;
        if (opts->max_sessions)
            s->o.max_sessions = opts->max_sessions;
        if (opts->max_nonces)
            s->o.max_nonces = opts->max_nonces;
        s->o.gate = opts->gate;
        s->o.gate_ctx = opts->gate_ctx;
    }
    if (s->o.skew < 0 || s->o.skew > SKEW_MAX || s->o.ttl > FERRY_HS_TTL_MAX ||
        s->o.max_sessions > 1000000 || s->o.max_nonces > 1000000) {
        free(s);
        return ferry_error_set(err, FERRY_EUSAGE,
                               "handshake options out of range (skew 1..%d s, ttl 1..%d s, at "
                               "most 1000000 sessions and nonces)",
                               SKEW_MAX, FERRY_HS_TTL_MAX);
    }
    s->sessions = calloc(s->o.max_sessions, sizeof(*s->sessions));
    s->nonces = calloc(s->o.max_nonces, sizeof(*s->nonces));
    if (!s->sessions || !s->nonces) {
        ferry_hs_server_free(s);
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
    }
    *out = s;
    return FERRY_OK;
}

void ferry_hs_server_free(struct ferry_hs_server *s)
{
    if (!s)
        return;
    if (s->sessions)
        ferry_cleanse(s->sessions, s->o.max_sessions * sizeof(*s->sessions));
    free(s->sessions);
    free(s->nonces);
    free(s);
}

static void slot_drop(struct session *x)
{
    ferry_cleanse(x, sizeof(*x));
    x->state = SLOT_FREE;
}

static void sweep(struct ferry_hs_server *s, int64_t now)
{
    size_t j = 0;

    for (size_t i = 0; i < s->o.max_sessions; i++)
        if (s->sessions[i].state != SLOT_FREE && now >= s->sessions[i].expires)
            slot_drop(&s->sessions[i]);
    for (size_t i = 0; i < s->nnonces; i++)
        if (now <= s->nonces[i].expires)
            s->nonces[j++] = s->nonces[i];
    s->nnonces = j;
}

size_t ferry_hs_server_sessions(struct ferry_hs_server *s, int64_t now)
{
    size_t n = 0;

    sweep(s, now);
    for (size_t i = 0; i < s->o.max_sessions; i++)
        n += s->sessions[i].state != SLOT_FREE;
    return n;
}

/*
 * A free slot; when all are taken, the least recently used pending session,
 * else the least recently used active one. Pending sessions go first: anyone
 * who knows an authorised fingerprint can make one, only a key holder can
 * make an active one.
 */
static struct session *slot_take(struct ferry_hs_server *s, int64_t now)
{
    struct session *victim = NULL;

    sweep(s, now);
    for (size_t i = 0; i < s->o.max_sessions; i++) {
        struct session *x = &s->sessions[i];
        if (x->state == SLOT_FREE)
            return x;
        if (!victim || (x->state == SLOT_PENDING && victim->state == SLOT_ACTIVE) ||
            (x->state == victim->state && x->used < victim->used))
            victim = x;
    }
    slot_drop(victim);
    return victim;
}

static struct session *slot_find(struct ferry_hs_server *s, const char *id)
{
    for (size_t i = 0; i < s->o.max_sessions; i++)
        if (s->sessions[i].state != SLOT_FREE && strcmp(s->sessions[i].id, id) == 0)
            return &s->sessions[i];
    return NULL;
}

static int nonce_seen(const struct ferry_hs_server *s, const unsigned char *nonce)
{
    for (size_t i = 0; i < s->nnonces; i++)
        if (memcmp(s->nonces[i].nonce, nonce, FERRY_HS_NONCE_LEN) == 0)
            return 1;
    return 0;
}

/*
 * Remember a nonce until a hello carrying it would be stale. When full, the
 * entry closest to expiry is forgotten: this cache only stops cheap hello
 * replays; a replayed hello still cannot complete, since the proof must sign
 * the source's fresh nonce.
 */
static void nonce_add(struct ferry_hs_server *s, const unsigned char *nonce, int64_t expires)
{
    size_t at = s->nnonces;

    if (at == s->o.max_nonces) {
        at = 0;
        for (size_t i = 1; i < s->nnonces; i++)
            if (s->nonces[i].expires < s->nonces[at].expires)
                at = i;
    } else {
        s->nnonces++;
    }
    memcpy(s->nonces[at].nonce, nonce, FERRY_HS_NONCE_LEN);
    s->nonces[at].expires = expires;
}

/* Reload the keys and check fingerprint is still bound to tenant. */
static int key_check(struct ferry_hs_server *s, const char *fingerprint, const char *tenant,
                     const struct ferry_authkey **out, struct ferry_error *err)
{
    const struct ferry_authkey *k;
    int rc;

    *out = NULL;
    rc = ferry_authkeys_reload(s->keys, NULL, err);
    if (rc)
        return rc;
    rc = ferry_authkeys_find(s->keys, fingerprint, &k, err);
    if (rc)
        return rc;
    if (strcmp(k->tenant, tenant) != 0)
        return ferry_error_set(err, FERRY_EFORBIDDEN, "key %s is not authorised for tenant %s",
                               fingerprint, tenant);
    *out = k;
    return FERRY_OK;
}

static void peer_set(struct ferry_hs_peer *peer, const char *fingerprint, const char *tenant,
                     const char *session)
{
    if (!peer)
        return;
    snprintf(peer->fingerprint, sizeof(peer->fingerprint), "%s", fingerprint);
    snprintf(peer->tenant, sizeof(peer->tenant), "%s", tenant);
    snprintf(peer->session, sizeof(peer->session), "%s", session);
}

int ferry_hs_server_hello(struct ferry_hs_server *s, const void *msg, size_t len, int64_t now,
                          struct ferry_buf *out, struct ferry_hs_peer *peer,
                          struct ferry_error *err)
{
    struct ferry_hs_hello h;
    struct ferry_hs_challenge *ch = NULL;
    const struct ferry_authkey *k;
    struct session *x = NULL;
    struct transcript t;
    unsigned char secret[FERRY_HS_SECRET_LEN];
    unsigned char id[FERRY_HS_ID_LEN / 2];
    int rc;

    if (peer)
        memset(peer, 0, sizeof(*peer));
    rc = ferry_hs_decode_hello(msg, len, &h, err);
    if (rc)
        goto out;
    peer_set(peer, h.fingerprint, h.tenant, "");
    rc = key_check(s, h.fingerprint, h.tenant, &k, err);
    if (rc)
        goto out;
    if (stale(h.timestamp, now, s->o.skew)) {
        rc = ferry_error_set(err, FERRY_EAUTH,
                             "stale timestamp: target clock differs by %lld s (allowed %d s)",
                             (long long)(h.timestamp - now), s->o.skew);
        goto out;
    }
    sweep(s, now);
    if (nonce_seen(s, h.nonce)) {
        rc = ferry_error_set(err, FERRY_EAUTH, "replayed handshake from key %s", h.fingerprint);
        goto out;
    }
    if (s->o.gate && !s->o.gate(s->o.gate_ctx)) {
        rc = ferry_error_set(err, FERRY_EAUTH, "too many handshakes; retry in a moment");
        goto out;
    }
    ch = calloc(1, sizeof(*ch));
    if (!ch) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        goto out;
    }
    snprintf(ch->fingerprint, sizeof(ch->fingerprint), "%s", ferry_key_fingerprint(s->identity));
    rc = ferry_random(ch->nonce, sizeof(ch->nonce), err);
    if (!rc)
        rc = ferry_random(id, sizeof(id), err);
    if (!rc)
        rc = ferry_random(secret, sizeof(secret), err);
    if (rc)
        goto out;
    ferry_hex_encode(id, sizeof(id), ch->session);
    ch->ttl = s->o.ttl;
    ch->timestamp = now;
    rc = ferry_key_encrypt(k->key, secret, sizeof(secret), ch->wrapped, sizeof(ch->wrapped),
                           &ch->wrappedlen, err);
    if (rc)
        goto out;
    memset(&t, 0, sizeof(t));
    t.tenant = h.tenant;
    t.target_fpr = h.fingerprint;
    t.source_fpr = ch->fingerprint;
    t.target_nonce = h.nonce;
    t.source_nonce = ch->nonce;
    t.session = ch->session;
    t.hello_ts = h.timestamp;
    t.challenge_ts = now;
    t.ttl = ch->ttl;
    rc = ferry_sha256(ch->wrapped, ch->wrappedlen, t.wrapped_hash, err);
    if (!rc)
        rc = transcript_sign(LABEL_SOURCE, &t, s->identity, ch->sig, &ch->siglen, err);
    if (!rc)
        rc = ferry_hs_encode_challenge(ch, out, err);
    if (rc)
        goto out;
    x = slot_take(s, now);
    x->state = SLOT_PENDING;
    snprintf(x->id, sizeof(x->id), "%s", ch->session);
    snprintf(x->fingerprint, sizeof(x->fingerprint), "%s", h.fingerprint);
    snprintf(x->tenant, sizeof(x->tenant), "%s", h.tenant);
    memcpy(x->secret, secret, sizeof(secret));
    x->last = 0;
    x->used = ++s->tick;
    x->expires = now + s->o.skew;
    memcpy(x->target_nonce, h.nonce, sizeof(h.nonce));
    memcpy(x->source_nonce, ch->nonce, sizeof(ch->nonce));
    x->hello_ts = h.timestamp;
    x->challenge_ts = now;
    memcpy(x->wrapped_hash, t.wrapped_hash, sizeof(t.wrapped_hash));
    nonce_add(s, h.nonce, h.timestamp + s->o.skew);
    peer_set(peer, h.fingerprint, h.tenant, ch->session);
out:
    ferry_cleanse(secret, sizeof(secret));
    free(ch);
    return rc;
}

int ferry_hs_server_proof(struct ferry_hs_server *s, const void *msg, size_t len, int64_t now,
                          struct ferry_hs_peer *peer, struct ferry_error *err)
{
    struct ferry_hs_proof *p;
    const struct ferry_authkey *k;
    struct session *x = NULL;
    struct transcript t;
    int rc;

    if (peer)
        memset(peer, 0, sizeof(*peer));
    p = malloc(sizeof(*p));
    if (!p)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
    rc = ferry_hs_decode_proof(msg, len, p, err);
    if (rc)
        goto out;
    x = slot_find(s, p->session);
    if (!x) {
        rc = ferry_error_set(err, FERRY_EAUTH,
                             "unknown session (handshake expired or never "
                             "started)");
        goto out;
    }
    peer_set(peer, x->fingerprint, x->tenant, x->id);
    if (x->state == SLOT_ACTIVE) {
        /* Not dropped: the proven session stays usable by its owner. */
        x = NULL;
        rc = ferry_error_set(err, FERRY_EAUTH, "replayed handshake (session already proven)");
        goto out;
    }
    if (now >= x->expires) {
        rc = ferry_error_set(err, FERRY_EAUTH,
                             "stale handshake: proof came more than %d s "
                             "after the challenge",
                             s->o.skew);
        goto out;
    }
    rc = key_check(s, x->fingerprint, x->tenant, &k, err);
    if (rc)
        goto out;
    memset(&t, 0, sizeof(t));
    t.tenant = x->tenant;
    t.target_fpr = x->fingerprint;
    t.source_fpr = ferry_key_fingerprint(s->identity);
    t.target_nonce = x->target_nonce;
    t.source_nonce = x->source_nonce;
    t.session = x->id;
    t.hello_ts = x->hello_ts;
    t.challenge_ts = x->challenge_ts;
    t.ttl = s->o.ttl;
    memcpy(t.wrapped_hash, x->wrapped_hash, sizeof(t.wrapped_hash));
    rc = transcript_verify(LABEL_TARGET, &t, k->key, p->sig, p->siglen, err);
    if (rc)
        goto out;
    x->state = SLOT_ACTIVE;
    x->expires = x->challenge_ts + s->o.ttl;
    x = NULL;
out:
    /* One proof per challenge: a refused one ends the pending session. */
    if (rc && x)
        slot_drop(x);
    free(p);
    return rc;
}

int ferry_hs_server_request(struct ferry_hs_server *s, const char *session, uint64_t counter,
                            const char *method, const char *path, const char *query,
                            const unsigned char body_hash[FERRY_SHA256_LEN],
                            const unsigned char *mac, size_t maclen, int64_t now,
                            struct ferry_hs_peer *peer, struct ferry_error *err)
{
    const struct ferry_authkey *k;
    struct session *x = NULL;
    int rc;

    memset(peer, 0, sizeof(*peer));
    if (ferry_hs_session_id_ok(session))
        x = slot_find(s, session);
    if (!x || x->state != SLOT_ACTIVE)
        return ferry_error_set(err, FERRY_EAUTH, "unknown session (renew it)");
    peer_set(peer, x->fingerprint, x->tenant, x->id);
    if (now >= x->expires) {
        slot_drop(x);
        return ferry_error_set(err, FERRY_EAUTH, "session expired (renew it)");
    }
    rc = key_check(s, x->fingerprint, x->tenant, &k, err);
    if (rc == FERRY_EAUTH || rc == FERRY_EFORBIDDEN) {
        /* Revoked, or re-bound to another tenant: the session dies with the binding. */
        slot_drop(x);
        return ferry_error_set(err, FERRY_EAUTH, "key %s is no longer authorised for tenant %s",
                               peer->fingerprint, peer->tenant);
    }
    if (rc) {
        /*
         * The keys could not be read (a broken file): refused, but a request
         * that is the session's own gets its answer signed (peer->authentic).
         */
        struct ferry_error e2;

        if (ferry_hs_verify_request(x->secret, method, path, query, counter, body_hash, mac, maclen,
                                    &e2) == FERRY_OK &&
            counter > x->last) {
            x->last = counter;
            memcpy(peer->secret, x->secret, sizeof(peer->secret));
            peer->authentic = 1;
        }
        return rc;
    }
    rc = ferry_hs_verify_request(x->secret, method, path, query, counter, body_hash, mac, maclen,
                                 err);
    if (rc)
        return rc;
    if (counter <= x->last)
        return ferry_error_set(err, FERRY_EAUTH,
                               "replayed request (counter %" PRIu64 ", last accepted %" PRIu64 ")",
                               counter, x->last);
    x->last = counter;
    x->used = ++s->tick;
    memcpy(peer->secret, x->secret, sizeof(peer->secret));
    peer->authentic = 1;
    return FERRY_OK;
}
