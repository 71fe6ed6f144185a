/*
 * fetch.c - ferry-dst's HTTP client over one reused libcurl easy handle.
 *
 * One handle per client keeps the connection alive across the many small
 * page and batch requests of a run. No overall timeout: a large batch may
 * legitimately take long. Instead a connect timeout and a low-speed limit
 * notice a source that vanished (host down, cable pulled) without cutting a
 * slow but live transfer.
 *
 * Authentication (common/handshake.h): the first POST of a client runs the
 * handshake (POST /v1/session/hello, then /v1/session/proof); every POST
 * then carries X-Ferry-Session, X-Ferry-Counter and X-Ferry-Mac, and its
 * answer is returned only once its X-Ferry-Mac verifies, so nothing the
 * caller decodes or applies can come from anyone but the pinned source. A
 * session is renewed shortly before it expires, and once, transparently,
 * when the source says it no longer knows it (X-Ferry-Auth: renew).
 *
 * A session outlives the run (resume.h): the client takes the one the last
 * run left, if it is still good for RENEW_MARGIN_MAX seconds, and keeps its
 * own when freed. The keys are loaded only when a handshake is needed. A
 * resumed session the source refuses (401: it restarted, the key was
 * revoked, ...) is dropped and the request retried once after a handshake.
 */
#include "fetch.h"

#include "resume.h"

#include "../common/buf.h"
#include "../common/config.h"
#include "../common/crypto.h"
#include "../common/handshake.h"
#include "../proto/proto.h"

#include <curl/curl.h>

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define CONNECT_TIMEOUT_S 10L
#define LOW_SPEED_BYTES 1L   /* under this many bytes per second... */
#define LOW_SPEED_TIME_S 60L /* ...for this long, the source is gone */
#define MAX_URL 8192
/* Renew this long before the session ends (at most), so a request does not race the expiry. */
#define RENEW_MARGIN_MAX 60
/*
 * Test only: seconds added to this target's clock in the handshake, so the
 * integration tests can show that the source refuses a stale timestamp.
 */
#define CLOCK_OFFSET_ENV "FERRY_TEST_CLOCK_OFFSET"
#define CLOCK_OFFSET_MAX (10LL * 365 * 24 * 3600)

struct ferry_client {
    CURL *h;
    struct curl_slist *post_headers;
    struct curl_slist *hs_headers; /* handshake messages */
    char *base;                    /* [source] url without a trailing '/' */
    char errbuf[CURL_ERROR_SIZE];
    struct ferry_buf body; /* the response being received */
    int over;              /* the body passed max_resp */
    int nomem;

    /* the response's authentication headers */
    char mac[2 * FERRY_HMAC_LEN + 1];
    int mac_seen; /* 1: one well-formed X-Ferry-Mac; -1: malformed or repeated */
    int renew;    /* X-Ferry-Auth: renew */

    /* authentication */
    struct ferry_config auth;   /* copies of the settings below: key files, tenant, state */
    struct ferry_key *identity; /* this target's private key, once a handshake needs it */
    struct ferry_key *source;   /* the pinned source key */
    struct ferry_hs_client *hs;
    struct ferry_hs_session sess;
    int have_session;
    int resumed;          /* the session is the last run's, no answer under it yet */
    int64_t ttl;          /* of the current session, seconds */
    int64_t clock_offset; /* CLOCK_OFFSET_ENV, 0 outside tests */
    long status;          /* of the last answer that passed authentication; 0: none */
};

static int64_t clock_now(const struct ferry_client *c)
{
    return (int64_t)time(NULL) + c->clock_offset;
}

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
    struct ferry_client *c = arg;
    int rc = ferry_buf_add(&c->body, p, size * n);

    if (rc == FERRY_ETOOBIG) {
        c->over = 1;
        return 0; /* curl stops with CURLE_WRITE_ERROR */
    }
    if (rc) {
        c->nomem = 1;
        return 0;
    }
    return size * n;
}

/* Does the header line p[0..n) have this name? Then *value is its trimmed value. */
static int header_is(const char *p, size_t n, const char *name, const char **value, size_t *vlen)
{
    size_t k = strlen(name);

    if (n <= k || strncasecmp(p, name, k) != 0 || p[k] != ':')
        return 0;
    p += k + 1;
    n -= k + 1;
    while (n > 0 && (*p == ' ' || *p == '\t'))
        p++, n--;
    while (n > 0 && (p[n - 1] == '\r' || p[n - 1] == '\n' || p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    *value = p;
    *vlen = n;
    return 1;
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
    struct ferry_client *c = arg;
    size_t len = size * n;
    const char *v;
    size_t vlen;

    /* A status line starts a response (a 1xx may come first): forget the last one's headers. */
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        c->mac_seen = 0;
        c->renew = 0;
    } else if (header_is(p, len, "X-Ferry-Mac", &v, &vlen)) {
        if (c->mac_seen || vlen != 2 * FERRY_HMAC_LEN) {
            c->mac_seen = -1;
        } else {
            memcpy(c->mac, v, vlen);
            c->mac[vlen] = '\0';
            c->mac_seen = 1;
        }
    } else if (header_is(p, len, "X-Ferry-Auth", &v, &vlen)) {
        c->renew = vlen == 5 && strncasecmp(v, "renew", 5) == 0;
    }
    return len;
}

static void drop_session(struct ferry_client *c)
{
    ferry_hs_session_clear(&c->sess);
    c->have_session = 0;
    c->resumed = 0;
}

void ferry_client_free(struct ferry_client *c)
{
    if (!c)
        return;
    if (c->h)
        curl_easy_cleanup(c->h);
    curl_slist_free_all(c->post_headers);
    curl_slist_free_all(c->hs_headers);
    ferry_buf_release(&c->body);
    free(c->base);
    if (c->have_session)
        ferry_resume_keep(&c->auth, &c->sess, c->ttl);
    drop_session(c);
    free(c->auth.target.state);
    free(c->auth.target.identity);
    free(c->auth.target.tenant);
    free(c->auth.source.url);
    free(c->auth.source.public_key);
    free(c->auth.path);
    ferry_hs_client_free(c->hs);
    ferry_key_free(c->identity);
    ferry_key_free(c->source);
    free(c);
}

static int add_header(struct curl_slist **list, const char *h)
{
    struct curl_slist *n = curl_slist_append(*list, h);

    if (!n)
        return FERRY_ENOMEM;
    *list = n;
    return FERRY_OK;
}

static int clock_offset(int64_t *out, struct ferry_error *err)
{
    const char *s = getenv(CLOCK_OFFSET_ENV);
    char *end = NULL;
    long long v;

    *out = 0;
    if (!s)
        return FERRY_OK;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < -CLOCK_OFFSET_MAX || v > CLOCK_OFFSET_MAX)
        return ferry_error_set(err, FERRY_ECONFIG, "%s (test only) must be a number of seconds",
                               CLOCK_OFFSET_ENV);
    *out = (int64_t)v;
    return FERRY_OK;
}

/* The settings authentication needs are there, or a config error saying how. */
static int auth_open(struct ferry_client *c, const struct ferry_config *cfg,
                     struct ferry_error *err)
{
    unsigned char digest[FERRY_SHA256_LEN];
    const char *path = cfg->path ? cfg->path : "C";
    int rc;

    if (!cfg->target.identity)
        return ferry_error_set(err, FERRY_ECONFIG,
                               "config %s: [target] identity is missing: create this target's key "
                               "with 'ferry-dst keygen --out FILE', set identity = FILE, and have "
                               "the source authorise FILE.pub",
                               path);
    if (!cfg->source.public_key)
        return ferry_error_set(err, FERRY_ECONFIG,
                               "config %s: [source] public_key is missing: set it to the source's "
                               "public key (the FILE.pub that ferry-src keygen wrote)",
                               path);
    if (!cfg->target.tenant)
        return ferry_error_set(err, FERRY_ECONFIG, "config %s: [target] tenant is missing", path);
    rc = clock_offset(&c->clock_offset, err);
    /* The files are read now (a missing or loose key fails here), parsed at the first handshake. */
    if (!rc)
        rc = ferry_key_file_digest(cfg->target.identity, 1, digest, err);
    if (!rc)
        rc = ferry_key_file_digest(cfg->source.public_key, 0, digest, err);
    if (rc)
        return rc;
    c->auth.target.identity = strdup(cfg->target.identity);
    c->auth.target.tenant = strdup(cfg->target.tenant);
    c->auth.source.url = strdup(cfg->source.url);
    c->auth.source.public_key = strdup(cfg->source.public_key);
    c->auth.source.max_message = cfg->source.max_message;
    if (cfg->path)
        c->auth.path = strdup(cfg->path);
    if (cfg->target.state)
        c->auth.target.state = strdup(cfg->target.state);
    if (!c->auth.target.identity || !c->auth.target.tenant || !c->auth.source.url ||
        !c->auth.source.public_key || (cfg->target.state && !c->auth.target.state))
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory creating the http client");
    if (ferry_resume_take(&c->auth, clock_now(c), RENEW_MARGIN_MAX, &c->sess, &c->ttl)) {
        c->have_session = 1;
        c->resumed = 1;
    }
    return FERRY_OK;
}

/* This target's key, the pinned source key and the handshake state, loaded once. */
static int keys_ready(struct ferry_client *c, struct ferry_error *err)
{
    const struct ferry_config *cfg = &c->auth;
    int rc = FERRY_OK;

    if (c->hs)
        return FERRY_OK;
    if (!c->identity)
        rc = ferry_key_load_private(cfg->target.identity, &c->identity, err);
    if (!rc && !c->source)
        rc = ferry_key_load_public(cfg->source.public_key, &c->source, err);
    if (!rc)
        rc = ferry_hs_client_new(c->identity, c->source, cfg->target.tenant, 0, &c->hs, err);
    return rc;
}

int ferry_client_new(const struct ferry_config *cfg, struct ferry_client **out,
                     struct ferry_error *err)
{
    const char *url = cfg->source.url;
    struct ferry_client *c = NULL;
    CURLcode res = CURLE_OK;
    size_t n;
    int rc;

    *out = NULL;
    if (!url || !*url)
        return ferry_error_set(err, FERRY_ECONFIG,
                               "[source] url is missing: set it to where ferry-src serve listens");
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
        return ferry_error_set(err, FERRY_ECONFIG,
                               "[source] url \"%.200s\" must start with http:// or https://", url);
    c = calloc(1, sizeof(*c));
    if (!c)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory creating the http client");
    ferry_buf_init(&c->body, 0);
    n = strlen(url);
    while (n > 0 && url[n - 1] == '/')
        n--;
    c->base = strndup(url, n);
    c->h = curl_easy_init();
    if (!c->base || !c->h) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory creating the http client");
        goto out;
    }
    /* No unauthenticated mode: without keys there is no client. */
    rc = auth_open(c, cfg, err);
    if (rc)
        goto out;

    rc = add_header(&c->post_headers, "Content-Type: application/msgpack");
    if (!rc)
        rc = add_header(&c->post_headers, "Accept: application/msgpack");
    /* No "Expect: 100-continue" round trip before large bodies. */
    if (!rc)
        rc = add_header(&c->post_headers, "Expect:");
    if (!rc)
        rc = add_header(&c->hs_headers, "Content-Type: application/octet-stream");
    if (!rc)
        rc = add_header(&c->hs_headers, "Accept: application/octet-stream, application/msgpack");
    if (!rc)
        rc = add_header(&c->hs_headers, "Expect:");
    if (rc) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory creating the http client");
        goto out;
    }

    res = curl_easy_setopt(c->h, CURLOPT_ERRORBUFFER, c->errbuf);
    if (!res)
        res = curl_easy_setopt(c->h, CURLOPT_NOSIGNAL, 1L);
    if (!res)
        res = curl_easy_setopt(c->h, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_S);
    if (!res)
        res = curl_easy_setopt(c->h, CURLOPT_LOW_SPEED_LIMIT, LOW_SPEED_BYTES);
    if (!res)
        res = curl_easy_setopt(c->h, CURLOPT_LOW_SPEED_TIME, LOW_SPEED_TIME_S);
    if (!res)
        res = curl_easy_setopt(c->h, CURLOPT_TCP_KEEPALIVE, 1L);
    /* Only the source's own scheme; redirects are never followed. */
    if (!res)
        res = curl_easy_setopt(c->h, CURLOPT_PROTOCOLS_STR, "http,https");
    if (!res)
        res = curl_easy_setopt(c->h, CURLOPT_FOLLOWLOCATION, 0L);
    if (!res)
        res = curl_easy_setopt(c->h, CURLOPT_USERAGENT, "ferry-dst");
    if (!res)
        res = curl_easy_setopt(c->h, CURLOPT_WRITEFUNCTION, on_data);
    if (!res)
        res = curl_easy_setopt(c->h, CURLOPT_WRITEDATA, c);
    if (!res)
        res = curl_easy_setopt(c->h, CURLOPT_HEADERFUNCTION, on_header);
    if (!res)
        res = curl_easy_setopt(c->h, CURLOPT_HEADERDATA, c);
    /* https: the source's certificate and name are checked, TLS 1.2 at least. */
    if (!res)
        res = curl_easy_setopt(c->h, CURLOPT_SSL_VERIFYPEER, 1L);
    if (!res)
        res = curl_easy_setopt(c->h, CURLOPT_SSL_VERIFYHOST, 2L);
    if (!res)
        res = curl_easy_setopt(c->h, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    if (!res && cfg->source.ca)
        res = curl_easy_setopt(c->h, CURLOPT_CAINFO, cfg->source.ca);
    if (res) {
        rc = ferry_error_set(err, FERRY_EINTERNAL, "cannot set up the http client: %s",
                             curl_easy_strerror(res));
        goto out;
    }

    *out = c;
    c = NULL;
    rc = FERRY_OK;
out:
    ferry_client_free(c);
    return rc;
}

/*
 * A response over max bytes. When max is this target's [source] max_message
 * (not a small reply's own limit), the error says where to raise it.
 */
static int too_big(const struct ferry_client *c, size_t max, struct ferry_error *err)
{
    if (max != ferry_config_max_message(&c->auth))
        return ferry_error_set(err, FERRY_ETOOBIG,
                               "response from the source is larger than %zu bytes", max);
    return ferry_error_set(err, FERRY_ETOOBIG,
                           "response from the source is larger than %zu bytes: raise [source] "
                           "max_message in %.200s (MB, at most %d) to take it",
                           max, c->auth.path ? c->auth.path : "this target's config",
                           FERRY_MAX_MESSAGE_MB);
}

static const char *detail(const struct ferry_client *c, CURLcode res)
{
    return c->errbuf[0] ? c->errbuf : curl_easy_strerror(res);
}

static int curl_fail(const struct ferry_client *c, CURLcode res, struct ferry_error *err)
{
    switch (res) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
        return ferry_error_set(err, FERRY_EUNREACHABLE,
                               "cannot reach the source at %s: %s; check that ferry-src serve is "
                               "running and [source] url",
                               c->base, detail(c, res));
    case CURLE_FILESIZE_EXCEEDED:
        return too_big(c, c->body.max, err);
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
        return ferry_error_set(err, FERRY_ECONFIG, "[source] url %s is not usable: %s", c->base,
                               detail(c, res));
    case CURLE_PEER_FAILED_VERIFICATION:
        /* Whoever answered could not prove to be the source: refused, like a bad key. */
        return ferry_error_set(err, FERRY_EAUTH,
                               "TLS: the certificate of %s is not trusted: %s; check [source] ca "
                               "(the source's CA or its pinned certificate) and url",
                               c->base, detail(c, res));
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CONNECT_ERROR:
        return ferry_error_set(err, FERRY_ECONFIG,
                               "TLS with the source at %s failed: %s; check [source] url and ca",
                               c->base, detail(c, res));
    case CURLE_WEIRD_SERVER_REPLY:
        return ferry_error_set(err, FERRY_EPROTO,
                               "the source at %s did not answer in HTTP: %s; check [source] url",
                               c->base, detail(c, res));
    case CURLE_OUT_OF_MEMORY:
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory talking to the source");
    default:
        return ferry_error_set(err, FERRY_EIO, "request to the source at %s failed: %s", c->base,
                               detail(c, res));
    }
}

/*
 * Is body exactly the error message (EPROTO, msg)? ferry_errmsg_decode
 * returns EPROTO both for a source that answered with an EPROTO message
 * ("request: missing field ...", worth showing) and for a body that is no
 * error message at all (an HTML page from a proxy, not worth showing). The
 * source encodes with the same proto code, so re-encoding tells them apart.
 */
static int is_eproto_msg(const char *body, size_t len, const char *msg)
{
    char *enc = NULL;
    size_t n = 0;
    int same;

    if (ferry_errmsg_encode(FERRY_EPROTO, msg, &enc, &n) != FERRY_OK)
        return 0;
    same = n == len && memcmp(enc, body, n) == 0;
    free(enc);
    return same;
}

/*
 * A non-200 answer: the source's own error message when the body is one,
 * else the bare status. The source's text reaches a terminal, so control
 * bytes are defused.
 */
static int status_fail(const struct ferry_client *c, long status, struct ferry_error *err)
{
    const char *body = c->body.data ? c->body.data : "";
    struct ferry_error src;
    int rc;

    ferry_error_clear(&src);
    rc = ferry_errmsg_decode(body, c->body.len, &src);
    if ((rc != FERRY_OK && rc != src.code) || src.code == FERRY_OK ||
        (src.code == FERRY_EPROTO && !is_eproto_msg(body, c->body.len, src.msg)))
        return ferry_error_set(err, FERRY_EPROTO, "source answered HTTP %ld", status);
    for (char *p = src.msg; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    return ferry_error_set(err, src.code, "source: %s", src.msg);
}

/*
 * A refusal the source could not authenticate (401 before a session was
 * checked, 403 from the handshake): the code follows the status, not the
 * unverified body; the body only lends its words.
 */
static int refused(const struct ferry_client *c, long status, const char *what,
                   struct ferry_error *err)
{
    const char *body = c->body.data ? c->body.data : "";
    struct ferry_error src;
    int code = status == 403 ? FERRY_EFORBIDDEN : FERRY_EAUTH;

    ferry_error_clear(&src);
    ferry_errmsg_decode(body, c->body.len, &src);
    if (!src.msg[0])
        return ferry_error_set(err, code, "source refused the %s (HTTP %ld)", what, status);
    for (char *p = src.msg; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    if (strncmp(src.msg, "unknown key", 11) == 0 || status == 403)
        return ferry_error_set(err, code,
                               "source refused the %s: %s; the source's operator binds a key to "
                               "a tenant with ferry-src keys add",
                               what, src.msg);
    return ferry_error_set(err, code, "source refused the %s: %s", what, src.msg);
}

/* One HTTP exchange; the answer's body stays in c->body and its status goes to *status. */
static int exchange(struct ferry_client *c, int post, const char *path, struct curl_slist *headers,
                    const char *body, size_t len, size_t max_resp, long *status,
                    struct ferry_error *err)
{
    struct ferry_buf url;
    CURLcode res;
    int rc;

    *status = 0;
    ferry_buf_init(&url, MAX_URL);
    ferry_buf_release(&c->body);
    ferry_buf_init(&c->body, max_resp);
    c->over = 0;
    c->nomem = 0;
    c->errbuf[0] = '\0';
    c->mac_seen = 0;
    c->renew = 0;

    if (path[0] != '/') {
        rc = ferry_error_set(err, FERRY_EINTERNAL, "request path \"%s\" does not start with /",
                             path);
        goto out;
    }
    rc = ferry_buf_adds(&url, c->base);
    if (!rc)
        rc = ferry_buf_adds(&url, path);
    if (rc) {
        rc = ferry_error_set(err, rc, "cannot build the url for %s", path);
        goto out;
    }

    res = curl_easy_setopt(c->h, CURLOPT_URL, url.data);
    /* A Content-Length over the limit is refused before any body arrives. */
    if (!res)
        res = curl_easy_setopt(c->h, CURLOPT_MAXFILESIZE_LARGE,
                               (uint64_t)max_resp > (uint64_t)INT64_MAX ? (curl_off_t)0
                                                                        : (curl_off_t)max_resp);
    if (post) {
        /* Never NULL: with no POSTFIELDS curl would read the body from stdin. */
        if (!res)
            res = curl_easy_setopt(c->h, CURLOPT_POSTFIELDS, body ? body : "");
        if (!res)
            res = curl_easy_setopt(c->h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
        if (!res)
            res = curl_easy_setopt(c->h, CURLOPT_HTTPHEADER, headers);
    } else {
        if (!res)
            res = curl_easy_setopt(c->h, CURLOPT_HTTPGET, 1L);
        if (!res)
            res = curl_easy_setopt(c->h, CURLOPT_HTTPHEADER, headers);
    }
    if (res) {
        rc = ferry_error_set(err, FERRY_EINTERNAL, "cannot set up the request for %s: %s", path,
                             curl_easy_strerror(res));
        goto out;
    }

    res = curl_easy_perform(c->h);
    /* The header list may be freed by the caller now: curl must not keep a dangling pointer. */
    curl_easy_setopt(c->h, CURLOPT_HTTPHEADER, (struct curl_slist *)NULL);
    if (c->over) {
        rc = too_big(c, max_resp, err);
        goto out;
    }
    if (c->nomem) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory receiving a response for %s", path);
        goto out;
    }
    if (res) {
        rc = curl_fail(c, res, err);
        goto out;
    }
    curl_easy_getinfo(c->h, CURLINFO_RESPONSE_CODE, status);
    rc = FERRY_OK;
out:
    ferry_buf_release(&url);
    return rc;
}

/* A handshake message's answer: 200, or the source's refusal. */
static int handshake_answer(const struct ferry_client *c, long status, struct ferry_error *err)
{
    if (status == 200)
        return FERRY_OK;
    if (status == 401 || status == 403)
        return refused(c, status, "handshake", err);
    if (status == 404)
        return ferry_error_set(err, FERRY_EAUTH,
                               "the source at %s offers no authenticated session (HTTP 404 on "
                               "/v1/session/hello); check [source] url and the ferry-src version",
                               c->base);
    return status_fail(c, status, err);
}

/* A new session: hello, check the challenge, proof. The old session is dropped first. */
static int handshake(struct ferry_client *c, struct ferry_error *err)
{
    struct ferry_buf msg;
    int64_t now = clock_now(c);
    long status = 0;
    int rc;

    drop_session(c);
    ferry_buf_init(&msg, FERRY_HS_MSG_MAX);
    rc = keys_ready(c, err);
    if (!rc)
        rc = ferry_hs_client_hello(c->hs, now, &msg, err);
    if (!rc)
        rc = exchange(c, 1, "/v1/session/hello", c->hs_headers, msg.data, msg.len, FERRY_HS_MSG_MAX,
                      &status, err);
    if (!rc)
        rc = handshake_answer(c, status, err);
    if (rc)
        goto out;
    ferry_buf_reset(&msg);
    rc = ferry_hs_client_challenge(c->hs, c->body.data ? c->body.data : "", c->body.len, now, &msg,
                                   &c->sess, err);
    if (rc)
        goto out;
    rc = exchange(c, 1, "/v1/session/proof", c->hs_headers, msg.data, msg.len, FERRY_HS_MSG_MAX,
                  &status, err);
    if (!rc)
        rc = handshake_answer(c, status, err);
    if (rc)
        goto out;
    c->have_session = 1;
    c->ttl = c->sess.expires - now;
out:
    if (rc)
        drop_session(c);
    ferry_buf_release(&msg);
    ferry_buf_release(&c->body);
    return rc;
}

static int session_ready(struct ferry_client *c, struct ferry_error *err)
{
    int64_t margin;

    if (c->have_session) {
        margin = c->ttl / 8 < RENEW_MARGIN_MAX ? c->ttl / 8 : RENEW_MARGIN_MAX;
        if (clock_now(c) < c->sess.expires - margin)
            return FERRY_OK;
    }
    return handshake(c, err);
}

/* curl headers of one authenticated POST: the fixed ones, then session, counter and MAC. */
static int sign(struct ferry_client *c, const char *path, const char *body, size_t len,
                struct curl_slist **out, struct ferry_error *err)
{
    unsigned char hash[FERRY_SHA256_LEN];
    unsigned char mac[FERRY_HMAC_LEN];
    char hex[2 * FERRY_HMAC_LEN + 1];
    char line[64 + 2 * FERRY_HMAC_LEN];
    struct curl_slist *h = NULL;
    const char *q = strchr(path, '?');
    char *p = NULL;
    int rc;

    *out = NULL;
    p = strndup(path, q ? (size_t)(q - path) : strlen(path));
    if (!p) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        goto out;
    }
    rc = ferry_sha256(body ? body : "", body ? len : 0, hash, err);
    if (!rc)
        rc = ferry_hs_mac_request(c->sess.secret, "POST", p, q ? q + 1 : "", c->sess.counter, hash,
                                  mac, err);
    if (rc)
        goto out;
    ferry_hex_encode(mac, sizeof(mac), hex);
    for (const struct curl_slist *s = c->post_headers; s && !rc; s = s->next)
        rc = add_header(&h, s->data);
    snprintf(line, sizeof(line), "X-Ferry-Session: %s", c->sess.id);
    if (!rc)
        rc = add_header(&h, line);
    snprintf(line, sizeof(line), "X-Ferry-Counter: %llu", (unsigned long long)c->sess.counter);
    if (!rc)
        rc = add_header(&h, line);
    snprintf(line, sizeof(line), "X-Ferry-Mac: %s", hex);
    if (!rc)
        rc = add_header(&h, line);
    if (rc) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        goto out;
    }
    *out = h;
    h = NULL;
out:
    curl_slist_free_all(h);
    free(p);
    return rc;
}

/* Is the answer in c->body from the source, for this request? Checked before anything reads it. */
static int verify_answer(const struct ferry_client *c, uint64_t counter, long status,
                         struct ferry_error *err)
{
    unsigned char hash[FERRY_SHA256_LEN];
    unsigned char mac[FERRY_HMAC_LEN];
    int rc;

    if (c->mac_seen == 0 && (status == 401 || status == 403))
        return refused(c, status, "request", err);
    if (c->mac_seen != 1 || ferry_hex_decode(c->mac, strlen(c->mac), mac, sizeof(mac), NULL) != 0)
        return ferry_error_set(err, FERRY_EAUTH,
                               "response from the source failed authentication (HTTP %ld without "
                               "a valid X-Ferry-Mac); nothing was applied",
                               status);
    rc = ferry_sha256(c->body.data ? c->body.data : "", c->body.len, hash, err);
    if (rc)
        return rc;
    if (ferry_hs_verify_response(c->sess.secret, counter, (int)status, hash, mac, sizeof(mac),
                                 NULL) != FERRY_OK)
        return ferry_error_set(err, FERRY_EAUTH,
                               "response from the source failed authentication (MAC mismatch: "
                               "altered or truncated on the way); nothing was applied");
    return FERRY_OK;
}

static int request(struct ferry_client *c, int post, const char *path, const char *body, size_t len,
                   size_t max_resp, char **resp, size_t *resplen, struct ferry_error *err)
{
    struct curl_slist *headers = NULL;
    uint64_t counter = 0;
    long status = 0;
    int auth = post;
    int rc;

    *resp = NULL;
    *resplen = 0;
    c->status = 0;
    for (int attempt = 0;; attempt++) {
        if (auth) {
            rc = session_ready(c, err);
            if (rc)
                goto out;
            counter = ++c->sess.counter;
            rc = sign(c, path, body, len, &headers, err);
            if (rc)
                goto out;
        }
        rc = exchange(c, post, path, auth ? headers : (post ? c->post_headers : NULL), body, len,
                      max_resp, &status, err);
        curl_slist_free_all(headers);
        headers = NULL;
        if (rc)
            goto out;
        /*
         * The source forgot the session (expired, restarted), or refused the
         * last run's: nothing was served; once more, after a handshake.
         */
        if (auth && status == 401 && (c->renew || c->resumed) && attempt == 0) {
            drop_session(c);
            continue;
        }
        break;
    }
    if (auth) {
        rc = verify_answer(c, counter, status, err);
        if (rc)
            goto out;
        c->resumed = 0;
    }
    c->status = status;
    if (status != 200) {
        rc = status_fail(c, status, err);
        goto out;
    }
    *resp = ferry_buf_detach(&c->body, resplen);
    if (!*resp) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory receiving a response for %s", path);
        goto out;
    }
    rc = FERRY_OK;
out:
    curl_slist_free_all(headers);
    /* Do not keep a failed or large response's memory for the client's life. */
    ferry_buf_release(&c->body);
    return rc;
}

long ferry_client_status(const struct ferry_client *c)
{
    return c->status;
}

int ferry_client_post(struct ferry_client *c, const char *path, const char *body, size_t len,
                      size_t max_resp, char **resp, size_t *resplen, struct ferry_error *err)
{
    return request(c, 1, path, body, len, max_resp, resp, resplen, err);
}

int ferry_client_get(struct ferry_client *c, const char *path, size_t max_resp, char **resp,
                     size_t *resplen, struct ferry_error *err)
{
    return request(c, 0, path, NULL, 0, max_resp, resp, resplen, err);
}
