/*
 * capture.h - change capture on the source database: the change log, the
 * key -> tenant maps and the triggers that feed them.
 *
 *   _ferry_changes(seq, tbl, op, tenant, txid, k0, k1, k2, k3)
 *       one row per insert/update/delete of an in-scope row; seq only grows;
 *       op 'U' (row is, or may be, present: send its current image) or 'D'
 *       (row left the tenant: send a tombstone); k0..k3 the primary key.
 *   _ferry_k_<table>(key columns..., tenant)
 *       the tenant each in-scope row belonged to when last written, so a
 *       delete (cascaded ones too, whose parents are already gone) and an
 *       update that moves a row to another tenant are routed exactly.
 *
 * A row that moves to another tenant leaves a 'D' in the old one and a 'U'
 * in the new one, and its children are moved with it.
 */
#ifndef FERRY_CAPTURE_H
#define FERRY_CAPTURE_H

#include "../common/db/db.h"
#include "../common/error.h"
#include "../common/scope.h"

/*
 * Create (or re-create: idempotent) the change log, key maps and triggers for
 * every table of s, in one transaction, and backfill the key maps.
 */
int ferry_capture_install(struct ferry_db *db, const struct ferry_scope *s,
                          struct ferry_error *err);
/* Drop every trigger and table ferry created. Idempotent. */
int ferry_capture_uninstall(struct ferry_db *db, struct ferry_error *err);
/*
 * Check that capture is installed for every table of s. FERRY_ECONFIG with
 * "run ferry-src install --config C" when not.
 */
int ferry_capture_check(struct ferry_db *db, const struct ferry_scope *s, struct ferry_error *err);
/* Largest seq in the change log (0 when empty). */
int ferry_capture_head(struct ferry_db *db, int64_t *head, struct ferry_error *err);

#endif
