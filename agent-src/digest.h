/*
 * digest.h - ferry-src's digest producer (verify): counts and checksums of
 * consecutive key ranges of one table of one tenant (checksum.h), as a
 * digest response body (proto.h).
 */
#ifndef FERRY_DIGEST_H
#define FERRY_DIGEST_H

#include "../common/db/db.h"
#include "../common/error.h"
#include "../common/scope.h"
#include "../proto/proto.h"

/*
 * Answer the digest request req for tenant (the root key's value) on db,
 * inside the caller's read transaction. masks: NULL or, per column of the
 * table, NULL or the [mask] expression its rows are served with (see
 * ferry_checksum_new). *out owned, free with free().
 * Errors: FERRY_ENOTFOUND (table not in scope), FERRY_EDATA (a bound of the
 * wrong width), FERRY_ETOOBIG, FERRY_EDB.
 */
int ferry_digest_produce(struct ferry_db *db, const struct ferry_scope *s,
                         const struct ferry_value *tenant, const char *const *masks,
                         const struct ferry_request *req, char **out, size_t *len,
                         struct ferry_error *err);

#endif
