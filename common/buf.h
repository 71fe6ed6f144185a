/*
 * buf.h - a growable byte buffer with a hard maximum (after curl's dynbuf).
 *
 * struct ferry_buf is caller-owned: ferry_buf_init() it, ferry_buf_release()
 * it. Any append that would pass the maximum fails with FERRY_ETOOBIG and
 * leaves the buffer as it was; an allocation failure frees the buffer and
 * returns FERRY_ENOMEM. The contents are always followed by a NUL byte (not
 * counted in len) so text can be used as a C string.
 */
#ifndef FERRY_BUF_H
#define FERRY_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct ferry_buf {
    char *data; /* owned; NULL until the first append */
    size_t len;
    size_t cap;
    size_t max; /* hard limit on len */
};

void ferry_buf_init(struct ferry_buf *b, size_t max);
void ferry_buf_release(struct ferry_buf *b);
void ferry_buf_reset(struct ferry_buf *b); /* len = 0, keeps memory */
int ferry_buf_add(struct ferry_buf *b, const void *p, size_t n);
int ferry_buf_adds(struct ferry_buf *b, const char *s);
int ferry_buf_addf(struct ferry_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int ferry_buf_vaddf(struct ferry_buf *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
/* Append s as a double-quoted SQL identifier ("a""b"). */
int ferry_buf_add_ident(struct ferry_buf *b, const char *s);
/* Append s as a single-quoted SQL string literal ('it''s'). */
int ferry_buf_add_literal(struct ferry_buf *b, const char *s);
/* Hand the data to the caller (owned, free with free()); the buffer is reset. */
char *ferry_buf_detach(struct ferry_buf *b, size_t *len);

#endif
