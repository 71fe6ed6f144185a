/*
 * resume.h - the target's authenticated session kept between runs, so that
 * a short run (a delta sync every minute from cron) does not pay the RSA
 * handshake each time (prefix ferry_resume_).
 *
 * The session lives in STATE/session (0600), one record:
 *
 *   "FRSC" | version u8 (1) | session id (32) | secret XOR pad (32) |
 *   counter u64 BE | expires i64 BE | ttl u32 BE | tag (32)
 *
 * with K   = HMAC-SHA-256(SHA-256(identity file), "ferry-resume-v1 key"),
 *      pad = HMAC-SHA-256(K, "pad" | session id),
 *      tag = HMAC-SHA-256(K, "tag" | SHA-256(source public key file) |
 *                            url | 0 | tenant | 0 | every field before tag).
 *
 * So the file is worth nothing without the identity key (which is worth
 * more on its own: it makes sessions), and it is only taken back for the
 * same identity key, pinned source key, source url and tenant. A run takes
 * the session when it starts (renamed to a name of its own, then removed:
 * of two runs starting at once only one gets it) and puts it back when the
 * client is done with it, with the last counter used: a run that dies in
 * between leaves none behind, so a counter is never reused. The file is a
 * cache, written without fsync: a torn or missing one only costs a
 * handshake. Nothing here ever fails a run: every problem means "no
 * session".
 */
#ifndef FERRY_RESUME_H
#define FERRY_RESUME_H

#include "../common/config.h"
#include "../common/handshake.h"

#include <stdint.h>

/*
 * Take the session kept for cfg ([target] state, identity, tenant; [source]
 * url, public_key), if there is one that is still valid at now for at least
 * min_left seconds: 1 and *sess, *ttl filled (the counter is the last one
 * used), else 0. The kept record is removed either way.
 */
int ferry_resume_take(const struct ferry_config *cfg, int64_t now, int64_t min_left,
                      struct ferry_hs_session *sess, int64_t *ttl);

/* Keep sess (ttl: its lifetime in seconds) for the next run of cfg. */
void ferry_resume_keep(const struct ferry_config *cfg, const struct ferry_hs_session *sess,
                       int64_t ttl);

#endif
