/*
 * follow.h - ferry-dst follow: keep a mirror in step with the source.
 *
 * Repeats delta syncs (the first one copies, when the state is new) every
 * interval seconds until SIGINT or SIGTERM, which stop it after the batch
 * being applied: the state is consistent and the next follow or sync goes on
 * from there. Each round reports the lag: the seconds since the newest
 * source head that is fully applied was read, and the changes that were
 * behind (the manifest's pending count when the round began). While the
 * source is unreachable it keeps retrying, and the lag grows.
 *
 * Column masking for staging mirrors is the source's business ([mask] in
 * the source's config, applied in the queries that read the rows): run a
 * second ferry-src instance with its own config for a masked mirror.
 */
#ifndef FERRY_FOLLOW_H
#define FERRY_FOLLOW_H

#include "../common/config.h"
#include "../common/error.h"

struct ferry_follow_opts {
    double interval; /* seconds between rounds, > 0 */
    int quiet;       /* warnings and errors only */
    int json;        /* one JSON object per round on stdout */
    int max_rounds;  /* stop after this many rounds; 0 no limit (tests) */
};

/*
 * Follow until stopped. Returns FERRY_OK after a stop by signal, or the
 * error that no retry can cure (configuration, schema, clash, state).
 */
int ferry_follow(const struct ferry_config *cfg, const struct ferry_follow_opts *o,
                 struct ferry_error *err);

#endif
