/*
 * keypack.h - a compact, bounded byte form of a primary key (up to
 * FERRY_MAX_KEY_COLS values): type byte, then 8 bytes (int64 / double, host
 * order) or an 8-byte length and the bytes. Used where a key is kept as
 * opaque bytes: the target's copy progress in LMDB, the producer's dedup.
 */
#ifndef FERRY_KEYPACK_H
#define FERRY_KEYPACK_H

#include "buf.h"
#include "value.h"

#include <stddef.h>

/* Append the n values to b. */
int ferry_key_pack(struct ferry_buf *b, const struct ferry_value *vals, size_t n);
/*
 * Parse p[0..len) into at most max values pointing into p (borrowed, valid
 * while p is). Returns FERRY_EDATA on malformed or truncated input.
 */
int ferry_key_unpack(const char *p, size_t len, struct ferry_value *vals, size_t max, size_t *n);

#endif
