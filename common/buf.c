/* buf.c - growable byte buffer with a hard maximum. */
#include "buf.h"

#include "error.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ferry_buf_init(struct ferry_buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

void ferry_buf_release(struct ferry_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void ferry_buf_reset(struct ferry_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

static int grow(struct ferry_buf *b, size_t need)
{
    size_t cap;
    char *p;

    if (need > b->max)
        return FERRY_ETOOBIG;
    if (need + 1 <= b->cap)
        return FERRY_OK;
    cap = b->cap ? b->cap : 64;
    while (cap < need + 1)
        cap = cap > SIZE_MAX / 2 ? need + 1 : cap * 2;
    p = realloc(b->data, cap);
    if (!p) {
        ferry_buf_release(b);
        return FERRY_ENOMEM;
    }
    b->data = p;
    b->cap = cap;
    return FERRY_OK;
}

int ferry_buf_add(struct ferry_buf *b, const void *p, size_t n)
{
    int rc;

    if (n > b->max - b->len)
        return FERRY_ETOOBIG;
    rc = grow(b, b->len + n);
    if (rc)
        return rc;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return FERRY_OK;
}

int ferry_buf_adds(struct ferry_buf *b, const char *s)
{
    return ferry_buf_add(b, s, strlen(s));
}

int ferry_buf_vaddf(struct ferry_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    int n;
    int rc;

    va_copy(ap2, ap);
    n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return FERRY_EINTERNAL;
    if ((size_t)n > b->max - b->len)
        return FERRY_ETOOBIG;
    rc = grow(b, b->len + (size_t)n);
    if (rc)
        return rc;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return FERRY_OK;
}

int ferry_buf_addf(struct ferry_buf *b, const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = ferry_buf_vaddf(b, fmt, ap);
    va_end(ap);
    return rc;
}

static int add_quoted(struct ferry_buf *b, const char *s, char q)
{
    int rc = ferry_buf_add(b, &q, 1);

    for (const char *p = s; !rc && *p; p++) {
        if (*p == q)
            rc = ferry_buf_add(b, &q, 1);
        if (!rc)
            rc = ferry_buf_add(b, p, 1);
    }
    if (!rc)
        rc = ferry_buf_add(b, &q, 1);
    return rc;
}

int ferry_buf_add_ident(struct ferry_buf *b, const char *s)
{
    return add_quoted(b, s, '"');
}

int ferry_buf_add_literal(struct ferry_buf *b, const char *s)
{
    return add_quoted(b, s, '\'');
}

char *ferry_buf_detach(struct ferry_buf *b, size_t *len)
{
    char *p = b->data;

    if (!p) {
        p = calloc(1, 1);
        if (len)
            *len = 0;
        return p;
    }
    if (len)
        *len = b->len;
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    return p;
}
