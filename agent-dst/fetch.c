/*
 * fetch.c - ferry-dst's HTTP client over one reused libcurl easy handle.
 *
 * One handle per client keeps the connection alive across the many small
 * page and batch requests of a run. No overall timeout: a large batch may
 * legitimately take long. Instead a connect timeout and a low-speed limit
 * notice a source that vanished (host down, cable pulled) without cutting a
 * slow but live transfer.
 */
#include "fetch.h"

#include "../common/buf.h"
#include "../proto/proto.h"

#include <curl/curl.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CONNECT_TIMEOUT_S 10L
#define LOW_SPEED_BYTES 1L   /* under this many bytes per second... */
#define LOW_SPEED_TIME_S 60L /* ...for this long, the source is gone */
#define MAX_URL 8192

struct ferry_client {
    CURL *h;
    struct curl_slist *post_headers;
    char *base; /* [source] url without a trailing '/' */
    char errbuf[CURL_ERROR_SIZE];
    struct ferry_buf body; /* the response being received */
    int over;              /* the body passed max_resp */
    int nomem;
};

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

void ferry_client_free(struct ferry_client *c)
{
    if (!c)
        return;
    if (c->h)
        curl_easy_cleanup(c->h);
    curl_slist_free_all(c->post_headers);
    ferry_buf_release(&c->body);
    free(c->base);
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

    rc = add_header(&c->post_headers, "Content-Type: application/msgpack");
    if (!rc)
        rc = add_header(&c->post_headers, "Accept: application/msgpack");
    /* No "Expect: 100-continue" round trip before large bodies. */
    if (!rc)
        rc = add_header(&c->post_headers, "Expect:");
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
        return ferry_error_set(err, FERRY_ETOOBIG,
                               "response from the source is larger than %zu bytes", c->body.max);
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
        return ferry_error_set(err, FERRY_ECONFIG, "[source] url %s is not usable: %s", c->base,
                               detail(c, res));
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
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

static int request(struct ferry_client *c, int post, const char *path, const char *body, size_t len,
                   size_t max_resp, char **resp, size_t *resplen, struct ferry_error *err)
{
    struct ferry_buf url;
    CURLcode res;
    long status = 0;
    int rc;

    *resp = NULL;
    *resplen = 0;
    ferry_buf_init(&url, MAX_URL);
    ferry_buf_release(&c->body);
    ferry_buf_init(&c->body, max_resp);
    c->over = 0;
    c->nomem = 0;
    c->errbuf[0] = '\0';

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
            res = curl_easy_setopt(c->h, CURLOPT_HTTPHEADER, c->post_headers);
    } else {
        if (!res)
            res = curl_easy_setopt(c->h, CURLOPT_HTTPGET, 1L);
        if (!res)
            res = curl_easy_setopt(c->h, CURLOPT_HTTPHEADER, (struct curl_slist *)NULL);
    }
    if (res) {
        rc = ferry_error_set(err, FERRY_EINTERNAL, "cannot set up the request for %s: %s", path,
                             curl_easy_strerror(res));
        goto out;
    }

    res = curl_easy_perform(c->h);
    if (c->over) {
        rc = ferry_error_set(err, FERRY_ETOOBIG,
                             "response from the source is larger than %zu bytes", max_resp);
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
    curl_easy_getinfo(c->h, CURLINFO_RESPONSE_CODE, &status);
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
    ferry_buf_release(&url);
    /* Do not keep a failed or large response's memory for the client's life. */
    ferry_buf_release(&c->body);
    return rc;
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
