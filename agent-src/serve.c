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
 */
#include "serve.h"

#include "../common/buf.h"
#include "../common/log.h"
#include "../proto/proto.h"
#include "produce.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

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
#include <sys/socket.h>
#include <time.h>

#define DEFAULT_LISTEN "127.0.0.1:7700"
#define DEFAULT_PORT 7700
#define HEADERS_MAX (16 * 1024)
/* Inactivity limit per connection: a stalled peer must not hold a socket forever. */
#define IO_TIMEOUT_SECS 60
#define METRICS_MAX (256 * 1024)

enum endpoint { EP_MANIFEST, EP_SNAPSHOT, EP_CHANGES, EP_METRICS, EP_HEALTHZ, EP_OTHER, NEP };

static const char *const ep_names[NEP] = {"manifest", "snapshot", "changes",
                                          "metrics",  "healthz",  "other"};

struct server {
    struct event_base *base;
    struct evhttp *http;
    struct ferry_producer *prod;
    struct ferry_limits lim;
    time_t started;
    uint64_t requests[NEP];
    uint64_t errors[NEP][FERRY_NCODES];
    uint64_t bytes; /* response bodies of /v1/ endpoints */
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

/*
 * Until requests are authenticated, anyone who can connect can read any
 * tenant: only loopback is safe. Every address the host resolves to must be
 * loopback, since evhttp binds the first one.
 */
static int check_loopback(const struct listen_addr *a, struct ferry_error *err)
{
    struct addrinfo hints;
    struct addrinfo *res = NULL;
    int rc = FERRY_OK;
    int gai;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    gai = getaddrinfo(a->host, NULL, &hints, &res);
    if (gai) {
        rc = ferry_error_set(err, FERRY_ECONFIG, "cannot listen on %s:%u: %s", a->host,
                             (unsigned)a->port, gai_strerror(gai));
        goto out;
    }
    for (const struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (!sa_is_loopback(ai->ai_addr)) {
            rc = ferry_error_set(err, FERRY_ECONFIG,
                                 "refusing to listen on %s: authentication is not built yet; "
                                 "use 127.0.0.1",
                                 a->host);
            goto out;
        }
    }
out:
    if (res)
        freeaddrinfo(res);
    return rc;
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

/*
 * Send body (owned, taken over whatever happens) with status. Returns the
 * number of body bytes queued.
 */
static size_t send_owned(struct evhttp_request *req, int status, const char *ctype, char *body,
                         size_t len)
{
    struct evbuffer *ob = evhttp_request_get_output_buffer(req);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);

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
                        const struct ferry_error *e, const char *peer, const char *what)
{
    const char *msg = e->msg[0] ? e->msg : ferry_strerror(e->code);
    char generic[FERRY_ERRMSG_MAX];
    char *body = NULL;
    size_t len = 0;
    int code = e->code > 0 && e->code < FERRY_NCODES ? e->code : FERRY_EINTERNAL;

    sv->errors[ep][code]++;
    log_warn("%s %s: %s: %s", peer, what, ferry_strcode(code), msg);
    if (status >= 500) {
        snprintf(generic, sizeof(generic), "%s (details in the ferry-src log)",
                 ferry_strerror(code));
        msg = generic;
    }
    if (ferry_errmsg_encode(code, msg, &body, &len) != 0) {
        evhttp_send_error(req, status, NULL);
        return;
    }
    send_owned(req, status, "application/msgpack", body, len);
}

/* ---- handlers ---- */

static void handle_msgpack(struct server *sv, struct evhttp_request *req, const struct route *r,
                           const char *peer, const char *what)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    struct ferry_request rq;
    struct ferry_error e;
    char *data = NULL;
    char *out = NULL;
    size_t len = evbuffer_get_length(in);
    size_t outlen = 0;
    size_t sent;
    int decoded = 0;
    int rc;

    memset(&rq, 0, sizeof(rq));
    ferry_error_clear(&e);
    if (len > sv->lim.max_request) {
        rc =
            ferry_error_set(&e, FERRY_ETOOBIG, "request body of %zu bytes is over the limit of %zu",
                            len, sv->lim.max_request);
        goto out;
    }
    data = malloc(len ? len : 1);
    if (!data) {
        rc = ferry_error_set(&e, FERRY_ENOMEM, "out of memory reading a request of %zu bytes", len);
        goto out;
    }
    if (evbuffer_copyout(in, data, len) != (ev_ssize_t)len) {
        rc = ferry_error_set(&e, FERRY_EINTERNAL, "cannot read the request body");
        goto out;
    }
    rc = ferry_request_decode(r->reqtype, data, len, &sv->lim, &rq, &e);
    if (rc)
        goto out;
    decoded = 1;
    rc = ferry_produce(sv->prod, &rq, &out, &outlen, &e);
    if (rc)
        goto out;
    sent = send_owned(req, 200, "application/msgpack", out, outlen);
    out = NULL;
    sv->bytes += sent;
    log_debug("%s %s: 200, %zu bytes", peer, what, sent);
out:
    if (rc)
        reply_error(sv, req, r->ep, http_status(rc), &e, peer, what);
    if (decoded)
        ferry_request_release(&rq);
    free(out);
    free(data);
}

static int metric(struct ferry_buf *b, const char *name, const char *type, const char *help)
{
    return ferry_buf_addf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
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
        rc = metric(b, "ferry_deletes_served_total", "counter", "Tombstones served.");
    if (!rc)
        rc =
            ferry_buf_addf(b, "ferry_deletes_served_total %llu\n", (unsigned long long)st->deletes);
    if (!rc)
        rc = metric(b, "ferry_bytes_served_total", "counter", "Bytes of msgpack response bodies.");
    if (!rc)
        rc = ferry_buf_addf(b, "ferry_bytes_served_total %llu\n", (unsigned long long)sv->bytes);
    if (!rc)
        rc = metric(b, "process_start_time_seconds", "gauge", "Start time since the epoch.");
    if (!rc)
        rc = ferry_buf_addf(b, "process_start_time_seconds %lld\n", (long long)sv->started);
    return rc;
}

static void handle_metrics(struct server *sv, struct evhttp_request *req, const char *peer,
                           const char *what)
{
    struct ferry_buf b;
    struct ferry_error e;
    char *body;
    size_t len;
    int rc;

    ferry_buf_init(&b, METRICS_MAX);
    rc = render_metrics(sv, &b);
    if (rc) {
        ferry_error_set(&e, rc, "cannot render metrics: %s", ferry_strerror(rc));
        reply_error(sv, req, EP_METRICS, 500, &e, peer, what);
        goto out;
    }
    body = ferry_buf_detach(&b, &len);
    if (!body) {
        /* Only an empty buffer detaches to NULL; the metrics are never empty. */
        ferry_error_set(&e, FERRY_EINTERNAL, "empty metrics");
        reply_error(sv, req, EP_METRICS, 500, &e, peer, what);
        goto out;
    }
    send_owned(req, 200, "text/plain; version=0.0.4; charset=utf-8", body, len);
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
        reply_error(sv, req, EP_OTHER, 404, &e, peer, what);
        return;
    }
    sv->requests[r->ep]++;
    if (!(method & r->methods)) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", r->allow);
        ferry_error_set(&e, FERRY_EPROTO, "method %s not allowed on %s; use %s",
                        method_name(method), path, r->allow);
        reply_error(sv, req, r->ep, 405, &e, peer, what);
        return;
    }
    switch (r->ep) {
    case EP_METRICS:
        handle_metrics(sv, req, peer, what);
        break;
    case EP_HEALTHZ:
        handle_healthz(req);
        break;
    default:
        handle_msgpack(sv, req, r, peer, what);
        break;
    }
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
    char where[NI_MAXHOST + NI_MAXSERV + 4];
    int loopback = 0;
    int rc;

    memset(&sv, 0, sizeof(sv));
    sv.lim = ferry_limits_default;
    sv.started = time(NULL);

    rc = parse_listen(cfg->source.listen ? cfg->source.listen : DEFAULT_LISTEN, &la, err);
    if (rc)
        goto out;
    if (la.tls) {
        if (!cfg->source.tls_cert || !cfg->source.tls_key)
            rc = ferry_error_set(err, FERRY_ECONFIG, "https listen needs tls_cert and tls_key");
        else
            rc = ferry_error_set(err, FERRY_ECONFIG,
                                 "https listen is not built yet; use http:// on 127.0.0.1");
        goto out;
    }
    rc = check_loopback(&la, err);
    if (rc)
        goto out;

    /* Before evhttp writes to a peer that has gone: a closed socket is an error, not a kill. */
    signal(SIGPIPE, SIG_IGN);

    rc = ferry_producer_open(cfg, &sv.prod, err);
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

        setsockopt(evhttp_bound_socket_get_fd(bound), IPPROTO_TCP, TCP_NODELAY, &one,
                   sizeof(one));
    }
    if (sockname(evhttp_bound_socket_get_fd(bound), where, sizeof(where), &loopback) != 0) {
        rc = ferry_error_set(err, FERRY_EIO, "cannot read the listening address: %s",
                             strerror(errno));
        goto out;
    }
    if (!loopback) {
        rc = ferry_error_set(err, FERRY_ECONFIG,
                             "refusing to listen on %s: authentication is not built yet; "
                             "use 127.0.0.1",
                             where);
        goto out;
    }

    sigint = evsignal_new(sv.base, SIGINT, on_signal, sv.base);
    sigterm = evsignal_new(sv.base, SIGTERM, on_signal, sv.base);
    if (!sigint || !sigterm || evsignal_add(sigint, NULL) != 0 ||
        evsignal_add(sigterm, NULL) != 0) {
        rc = ferry_error_set(err, FERRY_EINTERNAL, "cannot install signal handlers");
        goto out;
    }

    log_info("listening on %s", where);
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
    if (sv.http)
        evhttp_free(sv.http);
    if (sv.base)
        event_base_free(sv.base);
    if (sv.prod)
        ferry_producer_close(sv.prod);
    return rc;
}
