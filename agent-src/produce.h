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

struct ferry_producer; /* opaque: a db connection and the resolved scope */

struct ferry_producer_stats {
    uint64_t batches;
    uint64_t rows;
    uint64_t deletes;
};

/* Open the source database and resolve the scope; checks capture is installed. */
int ferry_producer_open(const struct ferry_config *cfg, struct ferry_producer **out,
                        struct ferry_error *err);
void ferry_producer_close(struct ferry_producer *p);
const struct ferry_producer_stats *ferry_producer_stats(const struct ferry_producer *p);
/* Current change-log head for tenant (for metrics). */
int ferry_producer_head(struct ferry_producer *p, int64_t *head, struct ferry_error *err);

/*
 * Produce the response body for req into *out (owned, free with free()).
 * Errors: FERRY_ENOTFOUND (no such tenant or table in scope), FERRY_EDATA (a
 * tenant id of the wrong type), FERRY_ETOOBIG (one row over the body limit),
 * FERRY_EDB.
 */
int ferry_produce(struct ferry_producer *p, const struct ferry_request *req, char **out,
                  size_t *len, struct ferry_error *err);

#endif
