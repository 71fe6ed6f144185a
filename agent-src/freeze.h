/*
 * freeze.h - migration mode on the source: the database itself refuses
 * writes to a frozen tenant's rows, while the other tenants keep writing.
 *
 *   _ferry_frozen(tenant, since, reason)   one row per frozen tenant
 *
 * Triggers on every in-scope table raise
 *   "tenant 7 is frozen for migration by ferry; writes are refused until
 *    ferry-src unfreeze"
 * when a write touches a frozen tenant's row: the tenant the row belonged to
 * (OLD, read from capture's key map _ferry_k_<table> BEFORE an update or
 * delete) or the tenant it would belong to (NEW, the scope's owner
 * expression AFTER an insert or update: after, so that a [table] scope
 * predicate that reads the row's own table sees the row). The raise aborts
 * the application's statement, whatever connection or language it uses.
 *
 * SQLite: RAISE takes a literal message only, so the triggers are rebuilt
 * from _ferry_frozen in the same transaction as every freeze and unfreeze,
 * with one WHEN per frozen tenant; while nothing is frozen there are none,
 * and the application pays nothing. PostgreSQL: capture's own trigger
 * functions check (capture.c, pg_add_freeze_check): the query that looks
 * the row's tenants up also asks whether any tenant is frozen, so while
 * none is the check costs no statement of its own. Its AFTER triggers read
 * the old tenant from the key map before they change it; they fire ALWAYS,
 * the check is skipped for a session in session_replication_role replica
 * (a replica's apply, as ordinary triggers are). Earlier versions had their
 * own BEFORE and AFTER triggers, _ferry_frz_*; install drops them.
 *
 * Capture must be installed first (the key maps); `ferry-src install` does
 * both, in that order, and `ferry-src uninstall` removes both (which also
 * unfreezes every tenant).
 */
#ifndef FERRY_FREEZE_H
#define FERRY_FREEZE_H

#include "../common/config.h"
#include "../common/db/db.h"
#include "../common/error.h"
#include "../common/scope.h"

#include <stdint.h>

/* What a refused write's error says after "tenant ID ". */
#define FERRY_FROZEN_MSG                                                                           \
    "is frozen for migration by ferry; writes are refused until ferry-src unfreeze"

/*
 * SQLite: create _ferry_frozen when missing and (re)create the freeze
 * triggers for every table of s. PostgreSQL: drop the freeze triggers of
 * earlier versions (ferry_capture_install made _ferry_frozen and the
 * check). One transaction; frozen tenants stay frozen. Idempotent. Call
 * after ferry_capture_install (which drops every _ferry_ trigger it finds).
 */
int ferry_freeze_install(struct ferry_db *db, const struct ferry_scope *s, struct ferry_error *err);
/*
 * Drop the freeze triggers, functions and (SQLite) _ferry_frozen; on
 * PostgreSQL capture's functions read the table, and ferry_capture_uninstall
 * drops it with them. Idempotent.
 */
int ferry_freeze_uninstall(struct ferry_db *db, struct ferry_error *err);

struct ferry_freezer; /* opaque: its own connection to the source and the scope */

/*
 * Open the source database of cfg (writable) and resolve the scope; checks
 * that capture and freeze are installed (FERRY_ECONFIG: "run ferry-src
 * install"). *out owned, close with ferry_freeze_close.
 */
int ferry_freeze_open(const struct ferry_config *cfg, struct ferry_freezer **out,
                      struct ferry_error *err);
void ferry_freeze_close(struct ferry_freezer *f);

/*
 * Freeze (on) or unfreeze tenant. Idempotent: freezing a frozen tenant keeps
 * its original time and reason. reason may be NULL.
 *
 * Freezing returns only when no transaction that could still write to the
 * tenant is in flight. SQLite: the freeze holds the write lock (BEGIN
 * IMMEDIATE) while it commits, so nothing else is writing then, and a reader
 * that began earlier cannot write later (its snapshot is stale). PostgreSQL:
 * after the commit it waits until every transaction in flight at that moment
 * has ended (pg_current_snapshot's xip, and pg_stat_activity for those that
 * hold a snapshot without an xid yet), up to [source] freeze_wait seconds
 * (FERRY_FREEZE_WAIT_DEFAULT); then the freeze stays in place and the error
 * (FERRY_EDB) counts the transactions and says where to see them.
 *
 * *head (may be NULL) is set to the change-log head once the freeze holds:
 * every change of the tenant is at or below it.
 * Errors: FERRY_ENOTFOUND (freezing a tenant that does not exist),
 * FERRY_EDATA (a tenant id of the wrong type), FERRY_EDB.
 */
int ferry_freeze_set(struct ferry_freezer *f, const char *tenant, int on, const char *reason,
                     int64_t *head, struct ferry_error *err);

/*
 * ferry_freeze_set in steps, for a server that must go on serving while a
 * PostgreSQL freeze waits: ferry_freeze_start commits the change; when
 * *wait comes back NULL it is done (*head set), else call
 * ferry_freeze_poll (one short query) until *done or an error (the same
 * as ferry_freeze_set's), then ferry_freeze_wait_free. The freezer must
 * not be used by anything else while one of its queries runs.
 */
struct ferry_freeze_wait;
int ferry_freeze_start(struct ferry_freezer *f, const char *tenant, int on, const char *reason,
                       int64_t *head, struct ferry_freeze_wait **wait, struct ferry_error *err);
int ferry_freeze_poll(struct ferry_freezer *f, struct ferry_freeze_wait *w, int *done,
                      int64_t *head, struct ferry_error *err);
void ferry_freeze_wait_free(struct ferry_freeze_wait *w);

/*
 * After ferry_freeze_poll failed: the seconds it waited when the failure
 * was the wait running out (transactions that began before the freeze
 * still running; the freeze holds), else 0.
 */
long ferry_freeze_wait_expired(const struct ferry_freeze_wait *w);

/* *frozen = 1 when tenant is frozen; *since (may be NULL) its unix time, 0 when not. */
int ferry_freeze_get(struct ferry_freezer *f, const char *tenant, int *frozen, int64_t *since,
                     struct ferry_error *err);

/* Largest seq logged for tenant (0 when none), for metrics. */
int ferry_freeze_tenant_head(struct ferry_freezer *f, const char *tenant, int64_t *head,
                             struct ferry_error *err);

#endif
