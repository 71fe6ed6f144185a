/*
 * fetch.h - ferry-dst's HTTP client (libcurl; only this module includes
 * curl/). One struct ferry_client per run, reusing its connection.
 */
#ifndef FERRY_FETCH_H
#define FERRY_FETCH_H

#include "../common/config.h"
#include "../common/error.h"

#include <stddef.h>

struct ferry_client; /* opaque */

/*
 * New client for cfg->source.url ("http://HOST:PORT", later https). Owned,
 * free with ferry_client_free. Needs curl_global_init done once by main.
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
 *   the code of the source's error body (proto.h error message) for a
 *   non-200 answer with one, with the source's message; FERRY_EPROTO for a
 *   non-200 without a decodable one ("source answered HTTP 502")
 */
int ferry_client_post(struct ferry_client *c, const char *path, const char *body, size_t len,
                      size_t max_resp, char **resp, size_t *resplen, struct ferry_error *err);

/*
 * GET path ("/metrics") on the same connection; *resp as for
 * ferry_client_post (owned, free with free(); NUL-terminated for text, the
 * NUL not counted in *resplen). Same errors.
 */
int ferry_client_get(struct ferry_client *c, const char *path, size_t max_resp, char **resp,
                     size_t *resplen, struct ferry_error *err);

#endif
