/*
 * progress.h - what the operator sees of a run: a progress line per table
 * during the copy, and the run log.
 *
 * Progress goes to stderr: on a terminal one line per table rewritten in
 * place (\r) with rows, rows/s and an ETA from the manifest's row estimate;
 * otherwise plain log lines (one when a table is done, one every
 * PROGRESS_LOG_SECS while a long one is copied). Nothing with quiet.
 *
 * The run log, DIR/runs.log beside the LMDB state, gets one JSON object per
 * line for every event of every run (start, table, deltas, error, end),
 * appended and flushed as it happens, so it survives a crash up to the last
 * event. It is a record for people and scripts; the state in LMDB stays the
 * only thing ferry itself reads back. Writing it never fails a run: a
 * problem is logged once and the log is left alone.
 *
 * Every function accepts a NULL handle and then does nothing.
 */
#ifndef FERRY_PROGRESS_H
#define FERRY_PROGRESS_H

#include <stdint.h>

struct ferry_progress; /* opaque */

/*
 * Start a run's report: kind ("sync", "follow", "cutover"), run id (0 when
 * none), the tenant and the mark it starts from. state_dir may be NULL (no
 * run log). Returns NULL only when out of memory.
 * Owned, free with ferry_progress_close.
 */
struct ferry_progress *ferry_progress_open(const char *state_dir, const char *kind, int64_t run,
                                           const char *tenant, int64_t hwm, int quiet);
/*
 * A table's copy has reached rows (estimate: the manifest's count, -1 when
 * unknown). Call once before the first page (with the rows already copied
 * by earlier runs), after every page, and with done set at the end.
 */
void ferry_progress_table(struct ferry_progress *p, const char *table, int64_t rows,
                          int64_t estimate, int done);
/* Deltas moved the mark from before to after. */
void ferry_progress_deltas(struct ferry_progress *p, int64_t before, int64_t after,
                           int64_t upserted, int64_t deleted);
/* The run ended with code (0 success) and msg. Counts are the run's. */
void ferry_progress_end(struct ferry_progress *p, int code, const char *msg, int64_t hwm,
                        int64_t copied, int64_t upserted, int64_t deleted);
void ferry_progress_close(struct ferry_progress *p);

#endif
