/*
 * serve.h - ferry-src's HTTP server (libevent evhttp; only this module
 * includes event2/). Routes:
 *   POST /v1/session/hello, /v1/session/proof      the handshake (common/handshake.h)
 *   POST /v1/manifest, /v1/snapshot, /v1/changes   msgpack in, msgpack out; signed
 *                                                  (X-Ferry-Session, -Counter, -Mac)
 *   GET  /metrics                                   Prometheus text, no tenant data
 *   GET  /healthz                                   "ok"
 * Errors are msgpack error bodies (proto.h) with 400 (EPROTO, ETOOBIG,
 * EDATA), 401 (EAUTH), 403 (EFORBIDDEN), 404 (ENOTFOUND), 500 otherwise.
 */
#ifndef FERRY_SERVE_H
#define FERRY_SERVE_H

#include "../common/config.h"
#include "../common/error.h"

/*
 * Serve until SIGINT or SIGTERM. Listens on cfg->source.listen (default
 * 127.0.0.1:7700; https://HOST:PORT with [source] tls_cert and tls_key).
 * Needs [source] identity and authorized_keys: there is no unauthenticated
 * mode. The environment variable FERRY_SESSION_TTL sets the session
 * lifetime in seconds (default 900). Prints "listening on HOST:PORT" on
 * stderr once bound (with port 0, the port the kernel chose; followed by
 * " (https)" with TLS), which tests wait for.
 */
int ferry_serve(const struct ferry_config *cfg, struct ferry_error *err);

#endif
