/*
 * serve.c - ferry-src's HTTP server: one evhttp on one event loop, one
 * producer for the server's lifetime.
 *
 * The loop is single-threaded on purpose: each request is one short read
 * transaction of the producer, bounded in rows and bytes, so a request never
 * holds the loop for long, and one database connection needs no locking.
 * Request bodies are small (a few fields) and capped by lim.max_request
 * before evhttp buffers them; responses are handed to evbuffer by reference,
 * never copied.
 *
 * Authentication (DESIGN.md, common/handshake.h): POST /v1/session/hello and
 * /v1/session/proof carry the handshake. Every other /v1/ request carries
 * X-Ferry-Session, X-Ferry-Counter and X-Ferry-Mac, which are checked before
 * its body is decoded, and it is served for the session's tenant only,
 * whatever its body says. Every answer to an authenticated request, errors
 * included, carries X-Ferry-Mac over its status, counter and body. A refusal
 * that a new handshake cures (session unknown or expired) says so with
 * X-Ferry-Auth: renew. Refusals are logged with the peer address, the key
 * fingerprint and the reason; never secrets, MACs or whole session ids.
 */
#include "serve.h"

#include "../common/authkeys.h"
#include "../common/buf.h"
#include "../common/crypto.h"
#include "../common/handshake.h"
#include "../common/log.h"
#include "../proto/proto.h"
#include "freeze.h"
#include "produce.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#define DEFAULT_LISTEN "127.0.0.1:7700"
#define DEFAULT_PORT 7700
#define HEADERS_MAX (16 * 1024)
/* Inactivity limit per connection: a stalled peer must not hold a socket forever. */
#define IO_TIMEOUT_SECS 60
#define METRICS_MAX (256 * 1024)
/* Session lifetime in seconds (default FERRY_HS_TTL_DEFAULT); short in tests of renewal. */
#define SESSION_TTL_ENV "FERRY_SESSION_TTL"
/* Characters of a session id shown in the log: enough to follow one, not to use it. */
#define SESSION_SHOWN 8

enum endpoint {
    EP_MANIFEST,
    EP_SNAPSHOT,
    EP_CHANGES,
    EP_FREEZE,
    EP_DIGEST,
    EP_ROWS,
    EP_HELLO,
    EP_PROOF,
    EP_METRICS,
    EP_HEALTHZ,
    EP_OTHER,
    NEP
};

static const char *const ep_names[NEP] = {"manifest", "snapshot", "changes", "freeze",
                                          "digest",   "rows",     "hello",   "proof",
                                          "metrics",  "healthz",  "other"};

/* Tenants whose marks /metrics shows; a source serves a few at a time. */
#define MAX_TENANT_METRICS 64

/* What the server has seen of one tenant (ids are not tenant data; no row value is kept). */
struct tenant_mark {
    char tenant[FERRY_FREEZE_TENANT_MAX + 1];
    int64_t served; /* highest mark a target asked changes after: it applied everything to it */
};

struct pending_freeze;

/* The longest [source] metrics_token file (a bearer token, one line). */
#define METRICS_TOKEN_MAX 256

struct server {
    struct event_base *base;
    struct evhttp *http;
    struct ferry_producer *prod;
    struct ferry_limits lim;
    time_t started;
    uint64_t requests[NEP];
    uint64_t errors[NEP][FERRY_NCODES];
    uint64_t bytes;              /* response bodies of /v1/ endpoints */
    struct ferry_key *identity;  /* the source's private key */
    struct ferry_authkeys *keys; /* authorised target keys, re-read when they change */
    struct ferry_hs_server *hs;  /* handshakes and sessions */
    SSL_CTX *tls;                /* NULL for http:// */
    uint64_t sessions_opened;
    struct ferry_freezer *freezer; /* migration mode, on its own connection */
    struct tenant_mark marks[MAX_TENANT_METRICS];
    size_t nmarks;
    double hello_tokens; /* token bucket for handshakes, see hello_allowed */
    double hello_at;
    int hello_refused;              /* hello_allowed said no to the hello being answered */
    struct pending_freeze *freezes; /* freezes waiting for writes in flight */
    char metrics_token[METRICS_TOKEN_MAX + 1]; /* [source] metrics_token's text; "" none */
};

/*
 * A hello costs the source an RSA encryption and an RSA signature (a few
 * ms at 3072 bits) before the peer has proved anything, so anyone who
 * knows an authorised fingerprint could keep the source busy with them.
 * At most HELLO_RATE a second (bursts of HELLO_BURST) are answered; a
 * legitimate target needs one per session (15 minutes). Only hellos that
 * passed the free checks (form, key, tenant, time, nonce) count: the
 * handshake asks here just before its RSA work (ferry_hs_server_opts'
 * gate), so that junk from anyone cannot use up the budget of the
 * targets that hold keys.
 */
#define HELLO_RATE 20.0
#define HELLO_BURST 40.0

static int hello_allowed(void *ctx)
{
    struct server *sv = ctx;
    struct timespec ts;
    double now;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    if (sv->hello_at == 0)
        sv->hello_tokens = HELLO_BURST;
    else
        sv->hello_tokens += (now - sv->hello_at) * HELLO_RATE;
    if (sv->hello_tokens > HELLO_BURST)
        sv->hello_tokens = HELLO_BURST;
    sv->hello_at = now;
    if (sv->hello_tokens < 1.0) {
        sv->hello_refused = 1;
        return 0;
    }
    sv->hello_tokens -= 1.0;
    return 1;
}

/* What authenticating one request established; wiped after the answer. */
struct auth {
    int ok;                    /* authenticated: every answer carries a MAC */
    int renew;                 /* refused in a way a new handshake cures */
    uint64_t counter;          /* the request's, repeated in the response MAC */
    struct ferry_hs_peer peer; /* key, tenant and session as far as known; secret when ok */
};

struct route {
    const char *path;
    enum endpoint ep;
    int methods; /* EVHTTP_REQ_* accepted */
    const char *allow;
    int reqtype; /* FERRY_REQ_* for msgpack endpoints, 0 otherwise */
};

static const struct route routes[] = {
    {"/v1/manifest", EP_MANIFEST, EVHTTP_REQ_POST, "POST", FERRY_REQ_MANIFEST},
    {"/v1/snapshot", EP_SNAPSHOT, EVHTTP_REQ_POST, "POST", FERRY_REQ_SNAPSHOT},
    {"/v1/changes", EP_CHANGES, EVHTTP_REQ_POST, "POST", FERRY_REQ_CHANGES},
    {"/v1/freeze", EP_FREEZE, EVHTTP_REQ_POST, "POST", FERRY_REQ_FREEZE},
    {"/v1/digest", EP_DIGEST, EVHTTP_REQ_POST, "POST", FERRY_REQ_DIGEST},
    {"/v1/rows", EP_ROWS, EVHTTP_REQ_POST, "POST", FERRY_REQ_ROWS},
    {"/v1/session/hello", EP_HELLO, EVHTTP_REQ_POST, "POST", 0},
    {"/v1/session/proof", EP_PROOF, EVHTTP_REQ_POST, "POST", 0},
    {"/metrics", EP_METRICS, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD, "GET, HEAD", 0},
    {"/healthz", EP_HEALTHZ, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD, "GET, HEAD", 0},
};

/* ---- listen address ---- */

struct listen_addr {
    char host[256]; /* without brackets */
    uint16_t port;
    int tls;
};

static int parse_port(const char *s, const char *spec, uint16_t *port, struct ferry_error *err)
{
    unsigned long v = 0;

    if (!*s)
        return ferry_error_set(err, FERRY_ECONFIG, "listen: missing port in '%s'", spec);
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9' || v > 65535)
            return ferry_error_set(err, FERRY_ECONFIG,
                                   "listen: bad port in '%s'; use HOST:PORT with PORT 0-65535",
                                   spec);
        v = v * 10 + (unsigned long)(*p - '0');
    }
    if (v > 65535)
        return ferry_error_set(err, FERRY_ECONFIG,
                               "listen: bad port in '%s'; use HOST:PORT with PORT 0-65535", spec);
    *port = (uint16_t)v;
    return FERRY_OK;
}

/* "HOST:PORT", "http://HOST:PORT", "https://HOST:PORT", "[v6]:PORT"; a trailing "/" is allowed. */
static int parse_listen(const char *spec, struct listen_addr *a, struct ferry_error *err)
{
    char tmp[320];
    const char *rest = spec;
    const char *scheme_end;
    char *hostp;
    char *portp;
    size_t n;

    a->tls = 0;
    a->port = DEFAULT_PORT;
    scheme_end = strstr(spec, "://");
    if (scheme_end) {
        if (strncmp(spec, "http://", 7) == 0) {
            rest = spec + 7;
        } else if (strncmp(spec, "https://", 8) == 0) {
            rest = spec + 8;
            a->tls = 1;
        } else {
            return ferry_error_set(err, FERRY_ECONFIG,
                                   "listen: unknown scheme in '%s'; use http:// or https://", spec);
        }
    }
    n = strlen(rest);
    if (n >= sizeof(tmp))
        return ferry_error_set(err, FERRY_ECONFIG, "listen: address too long");
    memcpy(tmp, rest, n + 1);
    if (n > 0 && tmp[n - 1] == '/')
        tmp[--n] = '\0';

    hostp = tmp;
    if (tmp[0] == '[') {
        char *close = strchr(tmp, ']');
        if (!close)
            return ferry_error_set(err, FERRY_ECONFIG, "listen: missing ']' in '%s'", spec);
        *close = '\0';
        hostp = tmp + 1;
        portp = close + 1;
        if (*portp == ':')
            portp++;
        else if (*portp)
            return ferry_error_set(err, FERRY_ECONFIG, "listen: expected ':PORT' after ']' in '%s'",
                                   spec);
        else
            portp = NULL;
    } else {
        portp = strchr(tmp, ':');
        if (portp && strchr(portp + 1, ':'))
            return ferry_error_set(err, FERRY_ECONFIG,
                                   "listen: put an IPv6 address in brackets: '[%s]:PORT'", tmp);
        if (portp)
            *portp++ = '\0';
    }
    if (!*hostp)
        return ferry_error_set(err, FERRY_ECONFIG, "listen: missing host in '%s'; use 127.0.0.1",
                               spec);
    if (strlen(hostp) >= sizeof(a->host))
        return ferry_error_set(err, FERRY_ECONFIG, "listen: host too long");
    memcpy(a->host, hostp, strlen(hostp) + 1);
    if (portp)
        return parse_port(portp, spec, &a->port, err);
    return FERRY_OK;
}

static int sa_is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        const unsigned char *b = in6->sin6_addr.s6_addr;
        if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
            return 1;
        return IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) && b[12] == 127;
    }
    return 0;
}

/* ---- authentication and TLS setup ---- */

/* [source] session_ttl, or the environment's (it wins: tests of renewal use it). */
static int session_ttl(const struct ferry_config *cfg, uint32_t *ttl, struct ferry_error *err)
{
    const char *s = getenv(SESSION_TTL_ENV);
    char *end = NULL;
    long v;

    *ttl = (uint32_t)cfg->source.session_ttl;
    if (!s)
        return FERRY_OK;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 1 || v > FERRY_HS_TTL_MAX)
        return ferry_error_set(err, FERRY_ECONFIG, "%s must be a session lifetime of 1..%d seconds",
                               SESSION_TTL_ENV, FERRY_HS_TTL_MAX);
    *ttl = (uint32_t)v;
    return FERRY_OK;
}

/* The source's key, the authorised keys and the handshake state, or a config error saying how. */
static int auth_open(const struct ferry_config *cfg, struct server *sv, struct ferry_error *err)
{
    const char *path = cfg->path ? cfg->path : "C";
    struct ferry_hs_server_opts o;
    int rc;

    if (!cfg->source.identity)
        return ferry_error_set(err, FERRY_ECONFIG,
                               "config %s: [source] identity is missing: create the source's key "
                               "with 'ferry-src keygen --out FILE' and set identity = FILE",
                               path);
    if (!cfg->source.authorized_keys)
        return ferry_error_set(err, FERRY_ECONFIG,
                               "config %s: [source] authorized_keys is missing: set it to a file "
                               "and authorise targets with 'ferry-src keys add'",
                               path);
    memset(&o, 0, sizeof(o));
    o.gate = hello_allowed;
    o.gate_ctx = sv;
    rc = session_ttl(cfg, &o.ttl, err);
    if (!rc)
        rc = ferry_key_load_private(cfg->source.identity, &sv->identity, err);
    if (!rc)
        rc = ferry_authkeys_open(cfg->source.authorized_keys, &sv->keys, err);
    if (!rc)
        rc = ferry_hs_server_new(sv->identity, sv->keys, &o, &sv->hs, err);
    return rc;
}

/* Said once the server is up, so that a failed start prints its error alone. */
static void auth_report(const struct ferry_config *cfg, const struct server *sv)
{
    size_t n = ferry_authkeys_count(sv->keys);

    log_info("source key %s; %zu authorised target key%s", ferry_key_fingerprint(sv->identity), n,
             n == 1 ? "" : "s");
    if (n == 0)
        log_warn("no target key is authorised yet: add one with 'ferry-src keys add --config %s "
                 "--tenant ID FILE.pub'",
                 cfg->path ? cfg->path : "C");
}

/* err from OpenSSL's first queued error, prefixed with what; the queue is cleared. */
static int tls_fail(struct ferry_error *err, const char *what, const char *file)
{
    char detail[200];
    unsigned long e = ERR_get_error();

    detail[0] = '\0';
    if (e)
        ERR_error_string_n(e, detail, sizeof(detail));
    ERR_clear_error();
    return ferry_error_set(err, FERRY_ECONFIG, "%s %s%s%s", what, file ? file : "",
                           detail[0] ? ": " : "", detail);
}

static int tls_open(const struct ferry_config *cfg, SSL_CTX **out, struct ferry_error *err)
{
    const char *cert = cfg->source.tls_cert;
    const char *key = cfg->source.tls_key;
    SSL_CTX *ctx = NULL;
    struct stat st;
    int rc = FERRY_OK;

    *out = NULL;
    if (!cert || !key)
        return ferry_error_set(
            err, FERRY_ECONFIG,
            "config %s: listen = https://... needs [source] tls_cert and tls_key",
            cfg->path ? cfg->path : "C");
    if (stat(key, &st) != 0)
        return ferry_error_set(err, FERRY_ECONFIG, "cannot read tls_key %s: %s", key,
                               strerror(errno));
    if (st.st_mode & (S_IRWXG | S_IRWXO))
        return ferry_error_set(err, FERRY_ECONFIG,
                               "private key %s is readable by others; run chmod 600 %s", key, key);
    ERR_clear_error();
    ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        rc = tls_fail(err, "cannot create the TLS context", NULL);
        goto out;
    }
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
        rc = tls_fail(err, "cannot require TLS 1.2", NULL);
        goto out;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        rc = tls_fail(err, "cannot load tls_cert", cert);
        goto out;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        rc = tls_fail(err, "cannot load tls_key", key);
        goto out;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        rc = tls_fail(err, "tls_key does not match tls_cert:", key);
        goto out;
    }
    *out = ctx;
    ctx = NULL;
out:
    SSL_CTX_free(ctx);
    return rc;
}

/*
 * evhttp's connection factory for https. evhttp falls back to a plain
 * socket when this returns NULL, which would answer in clear on a TLS port:
 * out of memory here stops the server instead.
 */
static struct bufferevent *tls_bev(struct event_base *base, void *arg)
{
    SSL *ssl = SSL_new(arg);
    struct bufferevent *bev = NULL;

    if (ssl)
        bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                             BEV_OPT_CLOSE_ON_FREE);
    if (!bev) {
        SSL_free(ssl);
        log_error("cannot set up a TLS connection (out of memory); stopping rather than "
                  "answering in clear");
        abort();
    }
    return bev;
}

/* "127.0.0.1:7700" or "[::1]:7700" of a bound socket. */
static int sockname(evutil_socket_t fd, char *out, size_t outsz, int *loopback)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char host[NI_MAXHOST];
    char serv[NI_MAXSERV];

    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
        return -1;
    if (getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), serv, sizeof(serv),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        return -1;
    *loopback = sa_is_loopback((struct sockaddr *)&ss);
    if (ss.ss_family == AF_INET6)
        snprintf(out, outsz, "[%s]:%s", host, serv);
    else
        snprintf(out, outsz, "%s:%s", host, serv);
    return 0;
}

/* ---- replies ---- */

static int http_status(int code)
{
    switch (code) {
    case FERRY_EPROTO:
    case FERRY_ETOOBIG:
    case FERRY_EDATA:
        return 400;
    case FERRY_EAUTH:
        return 401;
    case FERRY_EFORBIDDEN:
        return 403;
    case FERRY_ENOTFOUND:
        return 404;
    case FERRY_ESNAPGONE:
        return 410;
    default:
        return 500;
    }
}

static const char *reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    default:
        return "Internal Server Error";
    }
}

static void free_ref(const void *data, size_t len, void *extra)
{
    (void)len;
    (void)extra;
    free((void *)data);
}

/* X-Ferry-Mac of an answer to an authenticated request: status, counter and body. */
static int add_mac(struct evhttp_request *req, const struct auth *au, int status, const char *body,
                   size_t len)
{
    unsigned char hash[FERRY_SHA256_LEN];
    unsigned char mac[FERRY_HMAC_LEN];
    char hex[2 * FERRY_HMAC_LEN + 1];
    int rc;

    rc = ferry_sha256(body ? body : "", body ? len : 0, hash, NULL);
    if (!rc)
        rc = ferry_hs_mac_response(au->peer.secret, au->counter, status, hash, mac, NULL);
    if (rc)
        return rc;
    ferry_hex_encode(mac, sizeof(mac), hex);
    if (evhttp_add_header(evhttp_request_get_output_headers(req), "X-Ferry-Mac", hex) != 0)
        return FERRY_ENOMEM;
    return FERRY_OK;
}

/*
 * Send body (owned, taken over whatever happens) with status, with its MAC
 * when au says the request was authenticated (au may be NULL). Returns the
 * number of body bytes queued.
 */
static size_t send_owned(struct evhttp_request *req, int status, const char *ctype, char *body,
                         size_t len, const struct auth *au)
{
    struct evbuffer *ob = evhttp_request_get_output_buffer(req);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);

    /* Without its MAC the target would refuse the answer anyway: say so plainly instead. */
    if (au && au->ok && add_mac(req, au, status, body, len) != FERRY_OK) {
        free(body);
        evhttp_send_error(req, 500, NULL);
        return 0;
    }
    if (body && evbuffer_add_reference(ob, body, len, free_ref, NULL) != 0) {
        free(body);
        evhttp_send_error(req, 500, NULL);
        return 0;
    }
    if (body)
        evhttp_add_header(h, "Content-Type", ctype);
    evhttp_send_reply(req, status, reason(status), NULL);
    return body ? len : 0;
}

/* Printable copy of a client-supplied string for the log: no control bytes, bounded. */
static void sanitize(const char *in, char *out, size_t outsz)
{
    size_t i = 0;

    for (; in && *in && i + 1 < outsz; in++)
        out[i++] = (*in < 0x20 || *in == 0x7f) ? '?' : *in;
    out[i] = '\0';
}

/*
 * Reply with a msgpack error body. Messages of 5xx errors may carry database
 * detail meant for the operator: those go to the log, and the peer gets the
 * code and its generic message.
 */
static void reply_error(struct server *sv, struct evhttp_request *req, enum endpoint ep, int status,
                        const struct ferry_error *e, const char *peer, const char *what,
                        const struct auth *au)
{
    const char *msg = e->msg[0] ? e->msg : ferry_strerror(e->code);
    char generic[FERRY_ERRMSG_MAX];
    char who[FERRY_FPR_SIZE + FERRY_TENANT_MAX + 64];
    char *body = NULL;
    size_t len = 0;
    int code = e->code > 0 && e->code < FERRY_NCODES ? e->code : FERRY_EINTERNAL;

    sv->errors[ep][code]++;
    who[0] = '\0';
    if (au && au->peer.fingerprint[0])
        snprintf(who, sizeof(who), " (key %s, tenant %s, session %.*s%s)", au->peer.fingerprint,
                 au->peer.tenant[0] ? au->peer.tenant : "?", SESSION_SHOWN,
                 au->peer.session[0] ? au->peer.session : "-", au->peer.session[0] ? "..." : "");
    log_warn("%s %s: %s: %s%s", peer, what, ferry_strcode(code), msg, who);
    if (status >= 500) {
        snprintf(generic, sizeof(generic), "%s (details in the ferry-src log)",
                 ferry_strerror(code));
        msg = generic;
    }
    if (au && au->renew)
        evhttp_add_header(evhttp_request_get_output_headers(req), "X-Ferry-Auth", "renew");
    if (ferry_errmsg_encode(code, msg, &body, &len) != 0) {
        evhttp_send_error(req, status, NULL);
        return;
    }
    send_owned(req, status, "application/msgpack", body, len, au);
}

/* ---- authentication ---- */

/* A copy of body[0..len) of req, at most max bytes; *out owned (free), never NULL on success. */
static int read_body(struct evhttp_request *req, size_t max, char **out, size_t *outlen,
                     struct ferry_error *e)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    char *data;

    *out = NULL;
    *outlen = 0;
    if (len > max)
        return ferry_error_set(e, FERRY_ETOOBIG,
                               "request body of %zu bytes is over the limit of %zu", len, max);
    data = malloc(len ? len : 1);
    if (!data)
        return ferry_error_set(e, FERRY_ENOMEM, "out of memory reading a request of %zu bytes",
                               len);
    if (evbuffer_copyout(in, data, len) != (ev_ssize_t)len) {
        free(data);
        return ferry_error_set(e, FERRY_EINTERNAL, "cannot read the request body");
    }
    *out = data;
    *outlen = len;
    return FERRY_OK;
}

/*
 * Check the session, counter and MAC of a request whose body is body[0..len),
 * before anything reads the body. The MAC covers the request target exactly
 * as it came (still percent-encoded), split at the first '?'.
 */
static int authenticate(struct server *sv, struct evhttp_request *req, const char *method,
                        const char *body, size_t len, struct auth *au, struct ferry_error *e)
{
    struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    const char *sid = evhttp_find_header(h, "X-Ferry-Session");
    const char *ctr = evhttp_find_header(h, "X-Ferry-Counter");
    const char *machex = evhttp_find_header(h, "X-Ferry-Mac");
    const char *uri = evhttp_request_get_uri(req);
    const char *q = uri ? strchr(uri, '?') : NULL;
    unsigned char hash[FERRY_SHA256_LEN];
    unsigned char mac[FERRY_HMAC_LEN];
    char *path = NULL;
    int rc;

    if (!sid || !ctr || !machex) {
        rc = ferry_error_set(e, FERRY_EAUTH,
                             "request without X-Ferry-Session, X-Ferry-Counter and X-Ferry-Mac: "
                             "every request needs a session (POST /v1/session/hello)");
        goto out;
    }
    if (ferry_hs_parse_counter(ctr, &au->counter, NULL) != FERRY_OK) {
        rc = ferry_error_set(e, FERRY_EAUTH, "malformed X-Ferry-Counter");
        goto out;
    }
    if (ferry_hex_decode(machex, strlen(machex), mac, sizeof(mac), NULL) != FERRY_OK) {
        rc = ferry_error_set(e, FERRY_EAUTH, "malformed X-Ferry-Mac");
        goto out;
    }
    path = uri ? strndup(uri, q ? (size_t)(q - uri) : strlen(uri)) : NULL;
    if (!path) {
        rc = ferry_error_set(e, FERRY_ENOMEM, "out of memory");
        goto out;
    }
    rc = ferry_sha256(body, len, hash, e);
    if (rc)
        goto out;
    rc = ferry_hs_server_request(sv->hs, sid, au->counter, method, path, q ? q + 1 : "", hash, mac,
                                 sizeof(mac), (int64_t)time(NULL), &au->peer, e);
    /* handshake.h names these two refusals; every other one stands. */
    if (rc == FERRY_EAUTH && (strncmp(e->msg, "unknown session", 15) == 0 ||
                              strncmp(e->msg, "session expired", 15) == 0))
        au->renew = 1;
    /* refused for another reason than who asks (the keys unreadable): the answer is signed */
    if (!rc || au->peer.authentic)
        au->ok = 1;
out:
    free(path);
    return rc;
}

static const char *method_name(int m);

/* POST /v1/session/hello and /v1/session/proof: handshake messages in and out. */
static void handle_handshake(struct server *sv, struct evhttp_request *req, const struct route *r,
                             const char *peer, const char *what)
{
    struct ferry_buf out;
    struct ferry_error e;
    struct auth au;
    char *data = NULL;
    char *body;
    size_t len = 0;
    size_t blen = 0;
    int rc;

    memset(&au, 0, sizeof(au));
    ferry_error_clear(&e);
    ferry_buf_init(&out, FERRY_HS_MSG_MAX);
    rc = read_body(req, FERRY_HS_MSG_MAX, &data, &len, &e);
    if (rc)
        goto out;
    if (r->ep == EP_HELLO) {
        sv->hello_refused = 0;
        rc = ferry_hs_server_hello(sv->hs, data, len, (int64_t)time(NULL), &out, &au.peer, &e);
        if (rc && sv->hello_refused) {
            ferry_error_set(&e, FERRY_EAUTH,
                            "too many handshakes (over %.0f a second); retry in a moment",
                            HELLO_RATE);
            reply_error(sv, req, r->ep, 429, &e, peer, what, &au);
            rc = FERRY_OK;
            goto done;
        }
        if (rc)
            goto out;
        body = ferry_buf_detach(&out, &blen);
        if (!body) {
            rc = ferry_error_set(&e, FERRY_EINTERNAL, "empty handshake challenge");
            goto out;
        }
        send_owned(req, 200, "application/octet-stream", body, blen, NULL);
        log_debug("%s %s: challenge for key %s, tenant %s", peer, what, au.peer.fingerprint,
                  au.peer.tenant);
    } else {
        rc = ferry_hs_server_proof(sv->hs, data, len, (int64_t)time(NULL), &au.peer, &e);
        if (rc)
            goto out;
        sv->sessions_opened++;
        log_info("%s: session %.*s... opened for key %s, tenant %s", peer, SESSION_SHOWN,
                 au.peer.session, au.peer.fingerprint, au.peer.tenant);
        send_owned(req, 200, "application/octet-stream", NULL, 0, NULL);
    }
out:
    if (rc)
        reply_error(sv, req, r->ep, http_status(rc), &e, peer, what, &au);
done:
    ferry_hs_peer_clear(&au.peer);
    ferry_buf_release(&out);
    free(data);
}

/* ---- handlers ---- */

/* The tenant's entry in sv->marks, added when there is room; NULL when there is none. */
static struct tenant_mark *tenant_mark(struct server *sv, const char *tenant)
{
    struct tenant_mark *m;

    for (size_t i = 0; i < sv->nmarks; i++)
        if (strcmp(sv->marks[i].tenant, tenant) == 0)
            return &sv->marks[i];
    if (sv->nmarks == MAX_TENANT_METRICS || strlen(tenant) > FERRY_FREEZE_TENANT_MAX)
        return NULL;
    m = &sv->marks[sv->nmarks++];
    snprintf(m->tenant, sizeof(m->tenant), "%s", tenant);
    m->served = -1;
    return m;
}

/*
 * POST /v1/freeze: migration mode for the request's tenant (the session's,
 * when authentication is on). On PostgreSQL freezing waits for writes in
 * flight (see freeze.h), up to [source] freeze_wait seconds (409 once they
 * have passed): the request is answered from a timer that polls the wait,
 * so that the loop goes on serving other tenants meanwhile.
 */
#define FREEZE_POLL_USECS 20000

struct pending_freeze {
    struct server *sv;
    struct evhttp_request *req; /* NULL once its connection closed */
    struct ferry_freeze_wait *wait;
    struct event *timer;
    struct auth au; /* the request's: the answer carries its MAC */
    char tenant[FERRY_TENANT_MAX + 1];
    char peer[INET6_ADDRSTRLEN + 16];
    char what[144];
    struct pending_freeze *next;
};

static int freeze_reply(const char *tenant, int on, int64_t head, char **out, size_t *outlen,
                        struct ferry_error *e)
{
    struct ferry_freeze_reply fr;

    memset(&fr, 0, sizeof(fr));
    snprintf(fr.tenant, sizeof(fr.tenant), "%s", tenant);
    fr.frozen = on;
    fr.head = head;
    return ferry_freeze_reply_encode(&fr, out, outlen, e);
}

static void pending_free(struct pending_freeze *pf)
{
    struct pending_freeze **pp = &pf->sv->freezes;

    while (*pp && *pp != pf)
        pp = &(*pp)->next;
    if (*pp)
        *pp = pf->next;
    if (pf->req)
        evhttp_connection_set_closecb(evhttp_request_get_connection(pf->req), NULL, NULL);
    if (pf->timer)
        event_free(pf->timer);
    ferry_freeze_wait_free(pf->wait);
    ferry_hs_peer_clear(&pf->au.peer);
    free(pf);
}

/* The target gave up (its connection closed): the freeze stays, the answer has nowhere to go. */
static void pending_closed(struct evhttp_connection *conn, void *arg)
{
    struct pending_freeze *pf = arg;

    (void)conn;
    pf->req = NULL;
}

static void pending_poll(evutil_socket_t fd, short what, void *arg)
{
    struct pending_freeze *pf = arg;
    struct server *sv = pf->sv;
    struct ferry_error e;
    char *out = NULL;
    size_t outlen = 0;
    int64_t head = 0;
    int done = 0, frozen = 0;
    int rc;

    (void)fd;
    (void)what;
    ferry_error_clear(&e);
    rc = ferry_freeze_poll(sv->freezer, pf->wait, &done, &head, &e);
    if (!rc && !done)
        return; /* EV_PERSIST: again in FREEZE_POLL_USECS */
    /* the operator may have unfrozen the tenant while the freeze waited */
    if (!rc) {
        int64_t since = 0;

        rc = ferry_freeze_get(sv->freezer, pf->tenant, &frozen, &since, &e);
    }
    if (!rc && !frozen) {
        ferry_error_set(&e, FERRY_EDB,
                        "tenant %.64s was unfrozen (ferry-src unfreeze) while the freeze "
                        "waited for transactions in flight; run the cutover again",
                        pf->tenant);
        log_warn("%s %s: %s", pf->peer, pf->what, e.msg);
        if (pf->req)
            evhttp_connection_set_closecb(evhttp_request_get_connection(pf->req), NULL, NULL);
        if (pf->req)
            reply_error(sv, pf->req, EP_FREEZE, 409, &e, pf->peer, pf->what, &pf->au);
        pf->req = NULL;
        pending_free(pf);
        return;
    }
    if (!rc)
        rc = freeze_reply(pf->tenant, 1, head, &out, &outlen, &e);
    /* before answering: the connection may be gone once the answer is sent */
    if (pf->req)
        evhttp_connection_set_closecb(evhttp_request_get_connection(pf->req), NULL, NULL);
    if (!pf->req) {
        log_warn("%s %s: the target left before the freeze of tenant %s was answered; the "
                 "tenant stays frozen",
                 pf->peer, pf->what, pf->tenant);
        free(out);
    } else if (rc && ferry_freeze_wait_expired(pf->wait)) {
        /*
         * The target is told what to do, not how many transactions: they
         * may be any tenant's. The count stays in this log.
         */
        log_warn("%s %s: %s", pf->peer, pf->what, e.msg);
        ferry_error_set(&e, FERRY_EDB,
                        "tenant %.64s is frozen, but transactions that began before the freeze "
                        "are still running on the source after %ld s; its operator ends them (see "
                        "pg_stat_activity there) or raises [source] freeze_wait, then run the "
                        "cutover again",
                        pf->tenant, ferry_freeze_wait_expired(pf->wait));
        reply_error(sv, pf->req, EP_FREEZE, 409, &e, pf->peer, pf->what, &pf->au);
    } else if (rc) {
        reply_error(sv, pf->req, EP_FREEZE, http_status(rc), &e, pf->peer, pf->what, &pf->au);
    } else {
        sv->bytes += send_owned(pf->req, 200, "application/msgpack", out, outlen, &pf->au);
        log_debug("%s %s: 200", pf->peer, pf->what);
    }
    pf->req = NULL; /* answered: evhttp owns it again */
    pending_free(pf);
}

/*
 * Freeze or unfreeze; *out is the answer, or NULL when the answer comes
 * later (a pending freeze took req and au over: the caller must not
 * answer or clear au).
 */
static int serve_freeze(struct server *sv, struct evhttp_request *req, struct auth *au,
                        const struct ferry_request *rq, const char *peer, const char *what,
                        char **out, size_t *outlen, struct ferry_error *e)
{
    struct ferry_freeze_wait *w = NULL;
    struct pending_freeze *pf;
    struct timeval tv = {0, FREEZE_POLL_USECS};
    int64_t head = 0;
    int rc;

    *out = NULL;
    rc = ferry_freeze_start(sv->freezer, rq->tenant, rq->on,
                            rq->on ? "cutover requested by ferry-dst" : NULL, &head, &w, e);
    if (rc)
        return rc;
    tenant_mark(sv, rq->tenant);
    if (!w)
        return freeze_reply(rq->tenant, rq->on, head, out, outlen, e);
    pf = calloc(1, sizeof(*pf));
    if (!pf) {
        ferry_freeze_wait_free(w);
        return ferry_error_set(e, FERRY_ENOMEM, "out of memory; the tenant is frozen, ask again");
    }
    pf->sv = sv;
    pf->wait = w;
    pf->timer = event_new(sv->base, -1, EV_PERSIST, pending_poll, pf);
    if (!pf->timer || event_add(pf->timer, &tv) != 0) {
        pending_free(pf);
        return ferry_error_set(e, FERRY_EINTERNAL,
                               "cannot start the freeze's timer; the tenant is frozen, ask again");
    }
    pf->req = req;
    pf->au = *au;
    memset(&au->peer, 0, sizeof(au->peer));
    snprintf(pf->tenant, sizeof(pf->tenant), "%s", rq->tenant);
    snprintf(pf->peer, sizeof(pf->peer), "%s", peer);
    snprintf(pf->what, sizeof(pf->what), "%s", what);
    evhttp_connection_set_closecb(evhttp_request_get_connection(req), pending_closed, pf);
    pf->next = sv->freezes;
    sv->freezes = pf;
    return FERRY_OK;
}

static void handle_msgpack(struct server *sv, struct evhttp_request *req, const struct route *r,
                           const char *peer, const char *what)
{
    const char *uri = evhttp_request_get_uri(req);
    struct ferry_request rq;
    struct ferry_error e;
    struct auth au;
    char *data = NULL;
    char *out = NULL;
    size_t len = 0;
    size_t outlen = 0;
    size_t sent;
    int decoded = 0;
    int rc;

    memset(&rq, 0, sizeof(rq));
    memset(&au, 0, sizeof(au));
    ferry_error_clear(&e);
    rc = read_body(req, sv->lim.max_request, &data, &len, &e);
    if (rc)
        goto out;
    rc = authenticate(sv, req, method_name((int)evhttp_request_get_command(req)), data, len, &au,
                      &e);
    if (rc)
        goto out;
    /* Everything a request says is in its body: a query string is a mistake or a probe. */
    if (uri && strchr(uri, '?')) {
        rc = ferry_error_set(&e, FERRY_EPROTO, "%s takes no query string", r->path);
        goto out;
    }
    rc = ferry_request_decode(r->reqtype, data, len, &sv->lim, &rq, &e);
    if (rc)
        goto out;
    decoded = 1;
    /* The session decides the tenant: no producer ever runs for another one. */
    if (strcmp(rq.tenant, au.peer.tenant) != 0) {
        rc = ferry_error_set(&e, FERRY_EFORBIDDEN,
                             "this session is for tenant %s; the request names another tenant",
                             au.peer.tenant);
        goto out;
    }
    if (rq.type == FERRY_REQ_FREEZE) {
        rc = serve_freeze(sv, req, &au, &rq, peer, what, &out, &outlen, &e);
        if (!rc && !out)
            goto out; /* answered when the freeze holds (pending_poll) */
    } else {
        rc = ferry_produce(sv->prod, &rq, &out, &outlen, &e);
    }
    if (rc)
        goto out;
    if (rq.type == FERRY_REQ_CHANGES || (rq.type == FERRY_REQ_MANIFEST && rq.with_changes > 0)) {
        struct tenant_mark *m = tenant_mark(sv, rq.tenant);

        if (m && rq.after > m->served)
            m->served = rq.after;
    }
    sent = send_owned(req, 200, "application/msgpack", out, outlen, &au);
    out = NULL;
    sv->bytes += sent;
    log_debug("%s %s: 200, %zu bytes", peer, what, sent);
out:
    if (rc)
        reply_error(sv, req, r->ep, http_status(rc), &e, peer, what, &au);
    ferry_hs_peer_clear(&au.peer);
    if (decoded)
        ferry_request_release(&rq);
    free(out);
    free(data);
}

static int metric(struct ferry_buf *b, const char *name, const char *type, const char *help)
{
    return ferry_buf_addf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A Prometheus label value: backslash, quote and newline escaped, other control bytes '?'. */
static int add_label(struct ferry_buf *b, const char *v)
{
    int rc = FERRY_OK;

    for (; *v && !rc; v++) {
        if (*v == '\\' || *v == '"')
            rc = ferry_buf_addf(b, "\\%c", *v);
        else if (*v == '\n')
            rc = ferry_buf_adds(b, "\\n");
        else
            rc = ferry_buf_add(b, (unsigned char)*v < 0x20 ? "?" : v, 1);
    }
    return rc;
}

/*
 * Per tenant the server has served: the change-log head of the tenant, the
 * highest mark a target asked changes after, and whether it is frozen. A
 * database error leaves the gauge out rather than failing the scrape.
 */
static int render_tenants(struct server *sv, struct ferry_buf *b)
{
    static const char *const names[3] = {"ferry_tenant_head", "ferry_served_hwm",
                                         "ferry_tenant_frozen"};
    static const char *const help[3] = {
        "Largest change-log seq of the tenant.",
        "Highest mark a target asked changes after (it applied everything up to it).",
        "1 while the tenant is frozen for migration."};
    int rc = FERRY_OK;

    for (int g = 0; g < 3 && !rc; g++) {
        if (sv->nmarks)
            rc = metric(b, names[g], "gauge", help[g]);
        for (size_t i = 0; i < sv->nmarks && !rc; i++) {
            struct ferry_error e;
            int64_t v = 0;
            int frozen = 0;

            if (g == 0 && ferry_freeze_tenant_head(sv->freezer, sv->marks[i].tenant, &v, &e))
                continue;
            if (g == 1 && sv->marks[i].served < 0)
                continue;
            if (g == 1)
                v = sv->marks[i].served;
            if (g == 2 && ferry_freeze_get(sv->freezer, sv->marks[i].tenant, &frozen, NULL, &e))
                continue;
            if (g == 2)
                v = frozen;
            rc = ferry_buf_addf(b, "%s{tenant=\"", names[g]);
            if (!rc)
                rc = add_label(b, sv->marks[i].tenant);
            if (!rc)
                rc = ferry_buf_addf(b, "\"} %lld\n", (long long)v);
        }
    }
    return rc;
}

static int render_metrics(struct server *sv, struct ferry_buf *b)
{
    const struct ferry_producer_stats *st = ferry_producer_stats(sv->prod);
    int rc;

    rc = metric(b, "ferry_requests_total", "counter", "Requests received, by endpoint.");
    for (int i = 0; !rc && i < NEP; i++)
        rc = ferry_buf_addf(b, "ferry_requests_total{endpoint=\"%s\"} %llu\n", ep_names[i],
                            (unsigned long long)sv->requests[i]);
    if (!rc)
        rc = metric(b, "ferry_request_errors_total", "counter",
                    "Requests answered with an error, by endpoint and error code.");
    for (int i = 0; !rc && i < NEP; i++)
        for (int c = 1; !rc && c < FERRY_NCODES; c++)
            if (sv->errors[i][c])
                rc = ferry_buf_addf(
                    b, "ferry_request_errors_total{endpoint=\"%s\",code=\"%s\"} %llu\n",
                    ep_names[i], ferry_strcode(c), (unsigned long long)sv->errors[i][c]);
    if (!rc)
        rc = metric(b, "ferry_batches_total", "counter",
                    "Snapshot pages and change batches served.");
    if (!rc)
        rc = ferry_buf_addf(b, "ferry_batches_total %llu\n", (unsigned long long)st->batches);
    if (!rc)
        rc = metric(b, "ferry_rows_served_total", "counter", "Row images served.");
    if (!rc)
        rc = ferry_buf_addf(b, "ferry_rows_served_total %llu\n", (unsigned long long)st->rows);
    if (!rc)
        rc = metric(b, "ferry_copy_text_rows_total", "counter",
                    "Of the rows served, those sent as COPY text (PostgreSQL to PostgreSQL).");
    if (!rc)
        rc = ferry_buf_addf(b, "ferry_copy_text_rows_total %llu\n",
                            (unsigned long long)st->copy_rows);
    if (!rc)
        rc = metric(b, "ferry_deletes_served_total", "counter", "Tombstones served.");
    if (!rc)
        rc =
            ferry_buf_addf(b, "ferry_deletes_served_total %llu\n", (unsigned long long)st->deletes);
    if (!rc)
        rc = metric(b, "ferry_bytes_served_total", "counter", "Bytes of msgpack response bodies.");
    if (!rc)
        rc = ferry_buf_addf(b, "ferry_bytes_served_total %llu\n", (unsigned long long)sv->bytes);
    if (!rc)
        rc = metric(b, "ferry_snapshots_held", "gauge",
                    "Exported snapshots held open for copies in progress (PostgreSQL).");
    if (!rc)
        rc = ferry_buf_addf(b, "ferry_snapshots_held %llu\n", (unsigned long long)st->snapshots);
    if (!rc)
        rc = metric(b, "ferry_sessions_opened_total", "counter", "Handshakes completed.");
    if (!rc)
        rc = ferry_buf_addf(b, "ferry_sessions_opened_total %llu\n",
                            (unsigned long long)sv->sessions_opened);
    if (!rc)
        rc = metric(b, "ferry_sessions", "gauge", "Sessions held, pending ones included.");
    if (!rc)
        rc = ferry_buf_addf(b, "ferry_sessions %zu\n",
                            ferry_hs_server_sessions(sv->hs, (int64_t)time(NULL)));
    if (!rc)
        rc = render_tenants(sv, b);
    if (!rc)
        rc = metric(b, "process_start_time_seconds", "gauge", "Start time since the epoch.");
    if (!rc)
        rc = ferry_buf_addf(b, "process_start_time_seconds %lld\n", (long long)sv->started);
    return rc;
}

/*
 * [source] metrics_token: the file's text (one line) into sv. The per-tenant
 * gauges tell which tenants migrate and how much they write; the token is
 * a secret as a key is, so its file must not be readable by others.
 */
static int metrics_token_open(const struct ferry_config *cfg, struct server *sv,
                              struct ferry_error *err)
{
    const char *path = cfg->source.metrics_token;
    struct stat st;
    size_t n;
    FILE *f;

    if (!path)
        return FERRY_OK;
    if (stat(path, &st) != 0)
        return ferry_error_set(err, FERRY_ECONFIG, "cannot read metrics_token %s: %s", path,
                               strerror(errno));
    if (st.st_mode & (S_IRWXG | S_IRWXO))
        return ferry_error_set(err, FERRY_ECONFIG,
                               "metrics_token %s is readable by others; run chmod 600 %s", path,
                               path);
    f = fopen(path, "r");
    if (!f)
        return ferry_error_set(err, FERRY_ECONFIG, "cannot read metrics_token %s: %s", path,
                               strerror(errno));
    n = fread(sv->metrics_token, 1, sizeof(sv->metrics_token), f);
    fclose(f);
    while (n > 0 && (sv->metrics_token[n - 1] == '\n' || sv->metrics_token[n - 1] == '\r' ||
                     sv->metrics_token[n - 1] == ' '))
        n--;
    if (n == sizeof(sv->metrics_token) || n < 16 || memchr(sv->metrics_token, '\n', n)) {
        memset(sv->metrics_token, 0, sizeof(sv->metrics_token));
        return ferry_error_set(err, FERRY_ECONFIG,
                               "metrics_token %s must hold one line of 16 to %d characters "
                               "(e.g. openssl rand -hex 32 > %s)",
                               path, METRICS_TOKEN_MAX, path);
    }
    sv->metrics_token[n] = '\0';
    return FERRY_OK;
}

/* Whether addr (the peer's, as libevent writes it) is a loopback address. */
static int loopback_peer(const char *addr)
{
    return addr && (strncmp(addr, "127.", 4) == 0 || strcmp(addr, "::1") == 0 ||
                    strncmp(addr, "::ffff:127.", 11) == 0);
}

/*
 * Who may read /metrics: with a metrics_token, whoever sends it as a
 * bearer token; without one, clients on loopback only (a Prometheus
 * beside the source, or scraping through an SSH tunnel or a local proxy
 * that checks its own credentials). 0, or the HTTP status of the refusal
 * with e set.
 */
static int metrics_refusal(const struct server *sv, struct evhttp_request *req, const char *addr,
                           struct ferry_error *e)
{
    const char *h;
    size_t n = strlen(sv->metrics_token);

    if (!n) {
        if (loopback_peer(addr))
            return 0;
        ferry_error_set(e, FERRY_EAUTH,
                        "GET /metrics is answered on loopback only; for other clients set "
                        "[source] metrics_token = FILE and send its text as a bearer token");
        return 403;
    }
    h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    if (h && strncasecmp(h, "Bearer ", 7) == 0 && strlen(h + 7) == n &&
        ferry_ct_equal(h + 7, sv->metrics_token, n))
        return 0;
    evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate", "Bearer");
    ferry_error_set(e, FERRY_EAUTH,
                    "GET /metrics needs the bearer token of [source] metrics_token");
    return 401;
}

static void handle_metrics(struct server *sv, struct evhttp_request *req, const char *peer,
                           const char *addr, const char *what)
{
    struct ferry_buf b;
    struct ferry_error e;
    char *body;
    size_t len;
    int rc = metrics_refusal(sv, req, addr, &e);

    if (rc) {
        reply_error(sv, req, EP_METRICS, rc, &e, peer, what, NULL);
        return;
    }
    ferry_buf_init(&b, METRICS_MAX);
    rc = render_metrics(sv, &b);
    if (rc) {
        ferry_error_set(&e, rc, "cannot render metrics: %s", ferry_strerror(rc));
        reply_error(sv, req, EP_METRICS, 500, &e, peer, what, NULL);
        goto out;
    }
    body = ferry_buf_detach(&b, &len);
    if (!body) {
        /* Only an empty buffer detaches to NULL; the metrics are never empty. */
        ferry_error_set(&e, FERRY_EINTERNAL, "empty metrics");
        reply_error(sv, req, EP_METRICS, 500, &e, peer, what, NULL);
        goto out;
    }
    send_owned(req, 200, "text/plain; version=0.0.4; charset=utf-8", body, len, NULL);
out:
    ferry_buf_release(&b);
}

static void handle_healthz(struct evhttp_request *req)
{
    struct evbuffer *ob = evhttp_request_get_output_buffer(req);

    evbuffer_add(ob, "ok\n", 3);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; charset=utf-8");
    evhttp_send_reply(req, 200, "OK", NULL);
}

static const char *method_name(int m)
{
    switch (m) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_HEAD:
        return "HEAD";
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    case EVHTTP_REQ_OPTIONS:
        return "OPTIONS";
    case EVHTTP_REQ_PATCH:
        return "PATCH";
    default:
        return "?";
    }
}

static void on_request(struct evhttp_request *req, void *arg)
{
    struct server *sv = arg;
    struct evhttp_connection *conn = evhttp_request_get_connection(req);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *rawpath = uri ? evhttp_uri_get_path(uri) : NULL;
    const struct route *r = NULL;
    int method = (int)evhttp_request_get_command(req);
    struct ferry_error e;
    char *addr = NULL;
    ev_uint16_t port = 0;
    char peer[INET6_ADDRSTRLEN + 16];
    char path[128];
    char what[144]; /* "METHOD path" for the log */

    if (conn)
        evhttp_connection_get_peer(conn, &addr, &port);
    snprintf(peer, sizeof(peer), "%s:%u", addr ? addr : "?", (unsigned)port);
    sanitize(rawpath && *rawpath ? rawpath : "/", path, sizeof(path));
    snprintf(what, sizeof(what), "%s %s", method_name(method), path);
    log_debug("%s %s", peer, what);

    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
        if (rawpath && strcmp(rawpath, routes[i].path) == 0)
            r = &routes[i];
    if (!r) {
        sv->requests[EP_OTHER]++;
        ferry_error_set(&e, FERRY_ENOTFOUND, "no such endpoint: %s", path);
        reply_error(sv, req, EP_OTHER, 404, &e, peer, what, NULL);
        return;
    }
    sv->requests[r->ep]++;
    if (!(method & r->methods)) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", r->allow);
        ferry_error_set(&e, FERRY_EPROTO, "method %s not allowed on %s; use %s",
                        method_name(method), path, r->allow);
        reply_error(sv, req, r->ep, 405, &e, peer, what, NULL);
        return;
    }
    switch (r->ep) {
    case EP_METRICS:
        handle_metrics(sv, req, peer, addr, what);
        break;
    case EP_HEALTHZ:
        handle_healthz(req);
        break;
    case EP_HELLO:
    case EP_PROOF:
        handle_handshake(sv, req, r, peer, what);
        break;
    default:
        handle_msgpack(sv, req, r, peer, what);
        break;
    }
}

/* Every SNAPSHOT_TICK_SECS: exported snapshots idle too long are released. */
#define SNAPSHOT_TICK_SECS 15

static void on_tick(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    ferry_producer_tick(arg, time(NULL));
}

static void on_signal(evutil_socket_t sig, short events, void *arg)
{
    struct event_base *base = arg;

    (void)events;
    log_info("signal %d: shutting down", (int)sig);
    event_base_loopexit(base, NULL);
}

/* ---- entry ---- */

int ferry_serve(const struct ferry_config *cfg, struct ferry_error *err)
{
    struct server sv;
    struct listen_addr la;
    struct evhttp_bound_socket *bound;
    struct event *sigint = NULL;
    struct event *sigterm = NULL;
    struct event *tick = NULL;
    char where[NI_MAXHOST + NI_MAXSERV + 4];
    int loopback = 0;
    int rc;

    memset(&sv, 0, sizeof(sv));
    sv.lim = ferry_limits_default;
    sv.started = time(NULL);

    rc = parse_listen(cfg->source.listen ? cfg->source.listen : DEFAULT_LISTEN, &la, err);
    if (rc)
        goto out;

    /* Before evhttp writes to a peer that has gone: a closed socket is an error, not a kill. */
    signal(SIGPIPE, SIG_IGN);

    rc = ferry_producer_open(cfg, &sv.prod, err);
    if (rc)
        goto out;
    /* No unauthenticated mode: a source without keys does not start. */
    rc = auth_open(cfg, &sv, err);
    if (rc)
        goto out;
    if (la.tls) {
        rc = tls_open(cfg, &sv.tls, err);
        if (rc)
            goto out;
    }
    rc = metrics_token_open(cfg, &sv, err);
    if (rc)
        goto out;
    rc = ferry_freeze_open(cfg, &sv.freezer, err);
    if (rc)
        goto out;

    sv.base = event_base_new();
    if (sv.base)
        sv.http = evhttp_new(sv.base);
    if (!sv.base || !sv.http) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "cannot create the event loop");
        goto out;
    }
    evhttp_set_max_body_size(sv.http, (ev_ssize_t)sv.lim.max_request);
    evhttp_set_max_headers_size(sv.http, HEADERS_MAX);
    evhttp_set_timeout(sv.http, IO_TIMEOUT_SECS);
    /* Let these reach on_request, which answers 405 with the methods a path takes. */
    evhttp_set_allowed_methods(sv.http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(sv.http, on_request, &sv);
    if (sv.tls)
        evhttp_set_bevcb(sv.http, tls_bev, sv.tls);

    errno = 0;
    bound = evhttp_bind_socket_with_handle(sv.http, la.host, la.port);
    if (!bound) {
        int e = errno;
        rc = ferry_error_set(err, FERRY_ECONFIG, "cannot listen on %s:%u: %s", la.host,
                             (unsigned)la.port, e ? strerror(e) : "bind failed");
        goto out;
    }
    {
        /*
         * No Nagle: a response's last partial segment must not wait for the
         * client's delayed ACK (40 ms a page). Linux hands the option from
         * the listening socket to every accepted one.
         */
        int one = 1;

        setsockopt(evhttp_bound_socket_get_fd(bound), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    if (sockname(evhttp_bound_socket_get_fd(bound), where, sizeof(where), &loopback) != 0) {
        rc = ferry_error_set(err, FERRY_EIO, "cannot read the listening address: %s",
                             strerror(errno));
        goto out;
    }
    if (!loopback && !sv.tls)
        log_warn("listening on %s without TLS: rows cross the network in clear (authenticated, "
                 "not encrypted); use listen = https://... with tls_cert and tls_key",
                 where);

    sigint = evsignal_new(sv.base, SIGINT, on_signal, sv.base);
    sigterm = evsignal_new(sv.base, SIGTERM, on_signal, sv.base);
    if (!sigint || !sigterm || evsignal_add(sigint, NULL) != 0 ||
        evsignal_add(sigterm, NULL) != 0) {
        rc = ferry_error_set(err, FERRY_EINTERNAL, "cannot install signal handlers");
        goto out;
    }
    {
        struct timeval tv = {SNAPSHOT_TICK_SECS, 0};

        tick = event_new(sv.base, -1, EV_PERSIST, on_tick, sv.prod);
        if (!tick || event_add(tick, &tv) != 0) {
            rc = ferry_error_set(err, FERRY_EINTERNAL, "cannot start the snapshot timer");
            goto out;
        }
    }

    auth_report(cfg, &sv);
    log_info("listening on %s%s", where, sv.tls ? " (https)" : "");
    if (event_base_dispatch(sv.base) < 0) {
        rc = ferry_error_set(err, FERRY_EINTERNAL, "event loop failed");
        goto out;
    }
    log_info("stopped");
out:
    if (sigint)
        event_free(sigint);
    if (sigterm)
        event_free(sigterm);
    if (tick)
        event_free(tick);
    while (sv.freezes) {
        log_warn("%s %s: stopped before the freeze of tenant %s was answered; the tenant stays "
                 "frozen",
                 sv.freezes->peer, sv.freezes->what, sv.freezes->tenant);
        pending_free(sv.freezes);
    }
    if (sv.http)
        evhttp_free(sv.http);
    if (sv.base)
        event_base_free(sv.base);
    if (sv.prod)
        ferry_producer_close(sv.prod);
    ferry_freeze_close(sv.freezer);
    SSL_CTX_free(sv.tls);
    ferry_hs_server_free(sv.hs);
    ferry_authkeys_free(sv.keys);
    ferry_key_free(sv.identity);
    return rc;
}
