/*
 * produce.h - ferry-src's batch producers: manifest, snapshot pages and
 * change batches for one tenant, as msgpack bodies (proto.h).
 *
 * Every producer reads in one short read transaction, bounds its output by
 * rows and bytes, and checks every row it sends against the tenant's scope
 * predicate at read time: nothing of another tenant is ever encoded.
 */
#ifndef FERRY_PRODUCE_H
#define FERRY_PRODUCE_H

#include "../common/config.h"
#include "../common/error.h"
#include "../proto/proto.h"

#include <stdint.h>
#include <time.h>

struct ferry_producer; /* opaque: a db connection and the resolved scope */

struct ferry_producer_stats {
    uint64_t batches;
    uint64_t rows;
    uint64_t deletes;
    uint64_t snapshots; /* exported snapshots held now */
    uint64_t copy_rows; /* of rows: sent as COPY text lines (PostgreSQL to PostgreSQL) */
};

/* Exported snapshots held at once (PostgreSQL), and how long one waits for its next page. */
#define FERRY_SNAPSHOT_HOLDERS 8
#define FERRY_SNAPSHOT_IDLE_SECS 300

/* Open the source database and resolve the scope; checks capture is installed. */
int ferry_producer_open(const struct ferry_config *cfg, struct ferry_producer **out,
                        struct ferry_error *err);
void ferry_producer_close(struct ferry_producer *p);
const struct ferry_producer_stats *ferry_producer_stats(const struct ferry_producer *p);
/* Current change-log head for tenant (for metrics). */
int ferry_producer_head(struct ferry_producer *p, int64_t *head, struct ferry_error *err);

/*
 * Release the exported snapshots idle since FERRY_SNAPSHOT_IDLE_SECS before
 * now: the server calls it now and then, so that an abandoned copy does not
 * hold a transaction open on the source (it holds back vacuum).
 */
void ferry_producer_tick(struct ferry_producer *p, time_t now);

/*
 * Produce the response body for req into *out (owned, free with free()).
 * Errors: FERRY_ENOTFOUND (no such tenant or table in scope), FERRY_EDATA (a
 * tenant id of the wrong type), FERRY_ETOOBIG (one row over the body limit),
 * FERRY_EDB. A snapshot request naming an exported snapshot: FERRY_EPROTO
 * (an id of the wrong form), FERRY_ESNAPGONE (no longer held: the target
 * reads the rest from snapshots of their own), FERRY_EFORBIDDEN (another
 * tenant's).
 *
 * A manifest request with want_snapshot on PostgreSQL exports a snapshot
 * (see produce.c) and reads the manifest in it; SQLite ignores the wish.
 */
int ferry_produce(struct ferry_producer *p, const struct ferry_request *req, char **out,
                  size_t *len, struct ferry_error *err);

#endif
