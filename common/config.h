/*
 * config.h - the INI configuration of both agents (parsed with inih).
 *
 * One format serves both agents; each checks that the keys it needs are
 * there with ferry_config_require_src() / _dst(). Unknown sections and keys
 * are errors naming the file, line and the closest known key, so a misspelt
 * key never silently falls back to a default.
 *
 *   [source]                     ; on ferry-src: the database it serves
 *   database = sqlite:///srv/app.db
 *   listen = 127.0.0.1:7700      ; or http://HOST:PORT, https://HOST:PORT
 *   batch_rows = 5000            ; rows per snapshot page / changes per batch
 *   authorized_keys = FILE       ; (auth) target keys, each bound to a tenant
 *   identity = FILE              ; (auth) the source's private key
 *   session_ttl = 900            ; seconds a target's session lasts (1..604800)
 *   max_message = 1024           ; MB in one message between the agents (1..1024): on
 *                                ; ferry-src the most it sends, on ferry-dst takes
 *   freeze_wait = 45             ; seconds a PostgreSQL freeze waits for transactions in
 *                                ; flight (1..50: a target hears nothing meanwhile, and
 *                                ; takes a source silent for 60 s as gone)
 *   tls_cert = FILE, tls_key = FILE
 *   metrics_token = FILE         ; GET /metrics needs "Authorization: Bearer <its text>";
 *                                ; without it, /metrics answers loopback clients only
 *   url = http://HOST:PORT       ; on ferry-dst: where the source listens
 *   public_key = FILE            ; on ferry-dst: the pinned source key
 *   ca = FILE                    ; on ferry-dst: CA or pinned certificate
 *   schema = app                 ; PostgreSQL: the schema of the tables (default: the
 *                                ; URL's search_path, usually public); also [target]
 *
 *   [target]                     ; on ferry-dst
 *   database = sqlite:///srv/target.db
 *   state = /var/lib/ferry/team42   ; LMDB environment directory
 *   tenant = 42
 *   identity = FILE
 *
 *   [scope]
 *   root = teams                 ; the tenant table; its primary key is the tenant id
 *   exclude = audit_log, sessions
 *
 *   [table posts]                ; per-table overrides
 *   scope = posts.board_ref IN (SELECT id FROM boards WHERE team = :tenant)
 *
 *   [mask]                       ; (follow) TABLE.COLUMN = SQL expression
 *   users.email = 'user' || id || '@example.invalid'
 */
#ifndef FERRY_CONFIG_H
#define FERRY_CONFIG_H

#include "error.h"

#include <stddef.h>

/*
 * The most MB one message between the agents may carry, and the default of
 * [source] max_message: a row travels whole in one message, and PostgreSQL
 * holds values of up to 1 GB.
 */
#define FERRY_MAX_MESSAGE_MB 1024

/*
 * [source] freeze_wait: how long a PostgreSQL freeze waits for transactions
 * that began before it, by default and at most. A target's freeze request
 * hears nothing meanwhile, and ferry-dst takes a source silent for 60 s as
 * gone (fetch.c LOW_SPEED_TIME_S): the most stays under that.
 */
#define FERRY_FREEZE_WAIT_DEFAULT 45
#define FERRY_FREEZE_WAIT_MAX 50

struct ferry_table_conf {
    char *name;
    char *scope; /* SQL predicate using :tenant, or NULL */
};

struct ferry_mask_conf {
    char *table;
    char *column;
    char *expr;
};

/* All strings owned by the config; NULL when the key was not given. */
struct ferry_config {
    char *path;

    struct {
        char *database;
        char *listen;
        char *authorized_keys;
        char *identity;
        char *tls_cert;
        char *tls_key;
        char *metrics_token; /* a file: GET /metrics needs it as a bearer token */
        char *url;
        char *public_key;
        char *ca;
        char *schema;     /* PostgreSQL schema, applied to database as search_path */
        long batch_rows;  /* default 5000 */
        long session_ttl; /* seconds a target's session lasts; 0: not given (900) */
        long max_message; /* MB in one message; 0: not given (FERRY_MAX_MESSAGE_MB) */
        long freeze_wait; /* seconds a freeze waits for writes in flight; 0: not given (45) */
    } source;

    struct {
        char *database;
        char *state;
        char *tenant;
        char *identity;
        char *schema; /* as source.schema */
    } target;

    struct {
        char *root;
        char **exclude;
        size_t nexclude;
    } scope;

    struct ferry_table_conf *tables;
    size_t ntables;

    struct ferry_mask_conf *masks;
    size_t nmasks;
};

/*
 * Parse path into *cfg (caller-owned; release with ferry_config_release even
 * on failure). Returns 0, or FERRY_ECONFIG with "FILE:LINE: ..." in err.
 */
int ferry_config_load(const char *path, struct ferry_config *cfg, struct ferry_error *err);
void ferry_config_release(struct ferry_config *cfg);

/* Check the keys ferry-src needs ([source] database, [scope] root). */
int ferry_config_require_src(const struct ferry_config *cfg, struct ferry_error *err);
/* Check the keys ferry-dst needs ([target] database, state, tenant; [source] url). */
int ferry_config_require_dst(const struct ferry_config *cfg, struct ferry_error *err);

/* The [table NAME] section for name, or NULL. */
const struct ferry_table_conf *ferry_config_table(const struct ferry_config *cfg, const char *name);
/* 1 when name is listed in [scope] exclude. */
/* [source] max_message in bytes (FERRY_MAX_MESSAGE_MB when not given). */
size_t ferry_config_max_message(const struct ferry_config *cfg);

int ferry_config_excluded(const struct ferry_config *cfg, const char *name);

#endif
