/*
 * fetch.h - ferry-dst's HTTP client (libcurl; only this module includes
 * curl/). One struct ferry_client per run, reusing its connection.
 *
 * The client owns the authenticated session (common/handshake.h): the first
 * POST runs the handshake with the pinned source key ([source] public_key)
 * and this target's key ([target] identity) for [target] tenant; every POST
 * is signed, and its answer is handed back only after its MAC verified. A
 * session is renewed before it expires, and once, transparently, when the
 * source asks for it (X-Ferry-Auth: renew). GET (/metrics, /healthz) is
 * neither signed nor verified: never use it for tenant data.
 *
 * FERRY_TEST_CLOCK_OFFSET (seconds, tests only) shifts this target's clock
 * in the handshake, so tests can show that a stale timestamp is refused.
 */
#ifndef FERRY_FETCH_H
#define FERRY_FETCH_H

#include "../common/config.h"
#include "../common/error.h"

#include <stddef.h>

struct ferry_client; /* opaque */

/*
 * New client for cfg->source.url ("http://HOST:PORT" or "https://HOST:PORT";
 * with https the certificate is checked against [source] ca when given,
 * else the system's CAs, and the host name too). FERRY_ECONFIG naming a
 * missing key setting and the command that creates the key, a key file
 * that cannot be read, or a private key readable by others ("run chmod 600
 * FILE"). The keys are parsed at the first handshake, which may not come
 * at all when the last run kept its session (resume.h): a file that is no
 * key fails that request with FERRY_ECONFIG. Owned, free with
 * ferry_client_free, which keeps the session for the next run. Needs
 * curl_global_init done once by main.
 */
int ferry_client_new(const struct ferry_config *cfg, struct ferry_client **out,
                     struct ferry_error *err);
void ferry_client_free(struct ferry_client *c);

/*
 * POST body (msgpack) to path ("/v1/manifest") and return the 200 response
 * body in *resp (owned, free with free()), at most max_resp bytes.
 * Errors:
 *   FERRY_EUNREACHABLE  connection refused, DNS, timeout, reset: "cannot
 *                       reach the source at URL: <curl detail>; check that
 *                       ferry-src serve is running and [source] url"
 *   FERRY_ETOOBIG       response larger than max_resp
 *   FERRY_EAUTH         the handshake or the request was refused (401), the
 *                       source is not the pinned one, its TLS certificate is
 *                       not trusted, or the answer failed authentication
 *                       ("response from the source failed authentication"):
 *                       nothing of it reaches the caller
 *   FERRY_EFORBIDDEN    the key is not bound to [target] tenant (403)
 *   the code of the source's error body (proto.h error message) for a
 *   non-200 answer with one, with the source's message; FERRY_EPROTO for a
 *   non-200 without a decodable one ("source answered HTTP 502")
 */
int ferry_client_post(struct ferry_client *c, const char *path, const char *body, size_t len,
                      size_t max_resp, char **resp, size_t *resplen, struct ferry_error *err);

/*
 * The HTTP status of the last request's answer, once it passed
 * authentication (an unauthenticated GET's as it came); 0 when there was
 * none: unreachable, refused in the handshake, or failed authentication.
 */
long ferry_client_status(const struct ferry_client *c);

/*
 * GET path ("/metrics") on the same connection; *resp as for
 * ferry_client_post (owned, free with free(); NUL-terminated for text, the
 * NUL not counted in *resplen). Same errors.
 */
int ferry_client_get(struct ferry_client *c, const char *path, size_t max_resp, char **resp,
                     size_t *resplen, struct ferry_error *err);

#endif
