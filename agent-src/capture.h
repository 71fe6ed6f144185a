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

#include "../common/buf.h"
#include "../common/db/db.h"
#include "../common/error.h"
#include "../common/scope.h"

/*
 * Create (or re-create: idempotent) the change log, key maps and triggers for
 * every table of s, and backfill the key maps: in one transaction on SQLite,
 * in steps beside the application's writes on PostgreSQL, whose short lock
 * waits are tried again for up to lock_wait seconds in all.
 */
#define FERRY_INSTALL_LOCK_WAIT 60 /* seconds: ferry-src install --lock-wait */
int ferry_capture_install(struct ferry_db *db, const struct ferry_scope *s, long lock_wait,
                          struct ferry_error *err);
/*
 * SQLite: drop every trigger whose name matches the LIKE pattern (with '\'
 * as its escape), e.g. "\_ferry\_frz\_%". Used by capture and freeze.
 */
int ferry_capture_drop_triggers(struct ferry_db *db, const char *like, struct ferry_error *err);

/*
 * ferry_capture_sqlite_uniques' callback, per index: match, the condition
 * that a row "_ferry_x" holds NEW's values in the index ("_ferry_x"."c" =
 * NEW."c" COLLATE "coll" AND ...); changed, that an update changed one of
 * its columns (NEW."c" IS NOT OLD."c" OR ...). Both TEXT. partial: the
 * index has a WHERE clause.
 */
typedef int (*ferry_capture_unique_fn)(void *arg, const struct ferry_value *match,
                                       const struct ferry_value *changed, int partial);

/*
 * SQLite: each(arg, ...) for every UNIQUE index of table other than its
 * primary key, as REPLACE deletes the rows in their way (constraints and
 * CREATE UNIQUE INDEX alike, a partial one as if whole); *skipped: those
 * on expressions, left out. Stops at the first non-zero return of each.
 */
int ferry_capture_sqlite_uniques(struct ferry_db *db, const char *table,
                                 ferry_capture_unique_fn each, void *arg, int *skipped,
                                 struct ferry_error *err);
/* Drop every trigger and table ferry created. Idempotent. */
int ferry_capture_uninstall(struct ferry_db *db, struct ferry_error *err);
/*
 * Check that capture is installed for every table of s. FERRY_ECONFIG with
 * "run ferry-src install --config C" when not.
 */
int ferry_capture_check(struct ferry_db *db, const struct ferry_scope *s, struct ferry_error *err);
/*
 * Drop the change log's entries with seq < before (never the newest one:
 * SQLite would hand out its seq again), and remember the mark so that a
 * target whose mark is below it is refused instead of silently missing
 * changes (ferry_capture_pruned). *deleted: entries removed.
 */
int ferry_capture_prune(struct ferry_db *db, int64_t before, int64_t *deleted,
                        struct ferry_error *err);
/* Entries below *below were pruned (0: never pruned). */
int ferry_capture_pruned(struct ferry_db *db, int64_t *below, struct ferry_error *err);
/* Largest seq in the change log (0 when empty). */
int ferry_capture_head(struct ferry_db *db, int64_t *head, struct ferry_error *err);

/* How long ferry_capture_safe_head() waits for writers in flight. */
#define FERRY_CAPTURE_SAFE_WAIT_MS 2000

/*
 * *safe = a seq up to which the change log may be served: every change
 * with a seq at or below it has committed (or rolled back) and is visible
 * to any snapshot taken after the call returns. Call it before opening the
 * read transaction that serves the changes.
 *
 * SQLite commits in seq order (one writer at a time): INT64_MAX, no bound.
 * PostgreSQL allocates seqs before commit, so a transaction may commit a
 * lower seq after a higher one was read. Here *safe is the sequence's last
 * value S once every transaction that held the log open for writing when S
 * was read has ended; if one is still open after FERRY_CAPTURE_SAFE_WAIT_MS,
 * *safe is the last S this process found safe (0 at first), never past a
 * writer in flight, and a warning names the waiting backends.
 */
int ferry_capture_safe_head(struct ferry_db *db, int64_t *safe, struct ferry_error *err);
/*
 * The same for a reader that has everything up to after: while the last S
 * found safe is past it, a writer in flight is not waited for (*safe is that
 * S then, a batch to serve at once; the wait comes when the reader gets
 * there). A backlog then goes out at full speed while a long transaction
 * of any tenant stays open.
 */
int ferry_capture_safe_head_after(struct ferry_db *db, int64_t after, int64_t *safe,
                                  struct ferry_error *err);
/*
 * The unix time at which the change log held every change up to the last
 * *safe returned: when the call found no writer in flight, the moment it
 * began; when one held the log back, the moment the safe seq it returned
 * was read (0: not known, none found safe since ferry-src started). A
 * target's lag counts from it: changes committed later may be beyond *safe.
 */
int64_t ferry_capture_last_as_of(void);

/*
 * The application_name of ferry-src's connections that hold a copy's
 * exported snapshot (produce.c): READ ONLY transactions, which a freeze
 * need not wait for (freeze.c).
 */
#define FERRY_SNAPSHOT_HOLDER "ferry-src snapshot"

/*
 * A key value read from the change log (k0..k3), turned into the value kind
 * the key column's rows have (type: the column's declared type): on
 * PostgreSQL the log holds keys as text, and a tombstone must carry the key
 * as the row would (an INT for a bigint, a BLOB for a bytea...). SQLite's
 * log keeps each value's own class: nothing to do. *v is rewritten in
 * place; decoded bytes go to tmp (caller-owned), valid until it changes.
 * FERRY_EDATA for text that is not a value of type.
 */
int ferry_capture_key(struct ferry_db *db, const char *type, struct ferry_value *v,
                      struct ferry_buf *tmp, struct ferry_error *err);

/*
 * The config file's path (borrowed, for the process's life), named in the
 * commands messages tell the operator to run; "C" until set.
 */
void ferry_capture_config_path(const char *path);

#endif
