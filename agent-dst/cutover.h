/*
 * cutover.h - ferry-dst cutover: the last step of a migration.
 *
 *   1. freeze    POST /v1/freeze: the source database refuses writes to the
 *                tenant from now on, and answers once no write to it is in
 *                flight, with the change-log head;
 *   2. delta     one sync run (kind "cutover"): every change up to that head
 *                is applied;
 *   3. verify    counts and checksums of every table, source against target
 *                (verify.h), with the source frozen: a proof, not a report;
 *   4. record    the cutover in the state: time, head, mark, per-table counts
 *                and checksums;
 *   5. hooks     each --then CMD through sh -c, in order, with FERRY_TENANT,
 *                FERRY_HEAD, FERRY_HWM, FERRY_SOURCE_URL, FERRY_TARGET_DATABASE,
 *                FERRY_STATE and FERRY_CONFIG in its environment and its
 *                stdout sent to stderr (stdout is the report's); a hook that
 *                exits nonzero fails the cutover;
 *   6. done      the record is marked done and the report printed.
 *
 * Any failure stops there: the source stays frozen, nothing more is done,
 * and the report says which step failed and prints the exact commands to
 * retry (ferry-dst cutover --config C) or to give up and unfreeze
 * (ferry-src unfreeze --config SRC --tenant ID, on the source). The return
 * code is the failed step's. Running it again after a cutover that is done
 * only says so (unless force); after a failed one it starts over, which is
 * safe: each step is idempotent.
 */
#ifndef FERRY_CUTOVER_H
#define FERRY_CUTOVER_H

#include "../common/config.h"
#include "../common/error.h"

#include <stddef.h>

#define FERRY_CUTOVER_MAX_HOOKS 32

struct ferry_cutover_opts {
    const char *const *hooks; /* nhooks shell commands, borrowed */
    size_t nhooks;
    int force; /* redo a cutover that is already done */
    int json;  /* the report as one JSON object on stdout */
    int quiet; /* no progress lines */
};

/*
 * Run the cutover of cfg's tenant. Prints the report (text or JSON) to
 * stdout whatever happens; err holds the failed step's error.
 */
int ferry_cutover(const struct ferry_config *cfg, const struct ferry_cutover_opts *o,
                  struct ferry_error *err);

#endif
