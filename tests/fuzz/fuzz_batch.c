/*
 * fuzz_batch.c - libFuzzer target for ferry_batch_decode.
 *
 * Any input: the decoder returns, and a refusal is EPROTO/ETOOBIG/ENOMEM
 * with a one-line message. An accepted batch is re-encoded with the
 * streaming encoder; that encoding must decode to the same batch, value for
 * value and bit for bit, and encoding it again must give the same bytes.
 */
#include "common/error.h"
#include "common/value.h"
#include "proto/proto.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void check_refusal(int rc, const struct ferry_error *err)
{
    CHECK(rc == FERRY_EPROTO || rc == FERRY_ETOOBIG || rc == FERRY_ENOMEM);
    CHECK(err->code == rc);
    CHECK(err->msg[0] != '\0');
    CHECK(strchr(err->msg, '\n') == NULL);
}

static int val_same(const struct ferry_value *a, const struct ferry_value *b)
{
    if (a->type != b->type)
        return 0;
    switch (a->type) {
    case FERRY_NULL:
        return 1;
    case FERRY_INT:
        return a->u.i == b->u.i;
    case FERRY_FLOAT:
        return memcmp(&a->u.f, &b->u.f, sizeof(double)) == 0;
    case FERRY_TEXT:
    case FERRY_BLOB:
        return a->u.s.n == b->u.s.n && a->u.s.p && b->u.s.p &&
               (a->u.s.n == 0 || memcmp(a->u.s.p, b->u.s.p, a->u.s.n) == 0);
    }
    return 0;
}

/* Encode b again; the bytes are copied to *out (free with free()). */
static void encode(const struct ferry_batch *b, char **out, size_t *len)
{
    struct ferry_enc *e = ferry_enc_new(b->kind, ferry_limits_default.max_body);
    const char *p;

    CHECK(e != NULL);
    for (size_t i = 0; i < b->nsets; i++) {
        const struct ferry_set *s = &b->sets[i];

        CHECK(ferry_enc_set_begin(e, s->table, s->op, s->cols, s->ncols) == 0);
        for (size_t r = 0; r < s->nrows; r++)
            CHECK(ferry_enc_row(e, &s->vals[r * s->ncols], s->ncols) == 0);
        CHECK(ferry_enc_set_end(e) == 0);
    }
    CHECK(ferry_enc_finish(e, b->head, b->more, b->last, b->nlast, &p, len) == 0);
    CHECK(*len == ferry_enc_size(e));
    *out = malloc(*len);
    CHECK(*out != NULL);
    memcpy(*out, p, *len);
    ferry_enc_free(e);
}

static void check_same(const struct ferry_batch *a, const struct ferry_batch *b)
{
    CHECK(a->kind == b->kind);
    CHECK(a->head == b->head);
    CHECK(a->more == b->more);
    CHECK(a->nsets == b->nsets);
    for (size_t i = 0; i < a->nsets; i++) {
        const struct ferry_set *x = &a->sets[i], *y = &b->sets[i];

        CHECK(strcmp(x->table, y->table) == 0);
        CHECK(x->op == y->op);
        CHECK(x->ncols == y->ncols && x->nrows == y->nrows);
        for (size_t c = 0; c < x->ncols; c++)
            CHECK(strcmp(x->cols[c], y->cols[c]) == 0);
        for (size_t v = 0; v < x->nrows * x->ncols; v++)
            CHECK(val_same(&x->vals[v], &y->vals[v]));
    }
    CHECK(a->nlast == b->nlast);
    CHECK((a->last == NULL) == (b->last == NULL));
    for (size_t i = 0; i < a->nlast; i++)
        CHECK(val_same(&a->last[i], &b->last[i]));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ferry_batch *b = NULL, *b2 = NULL;
    struct ferry_error err = {0};
    char *enc1 = NULL, *enc2 = NULL;
    size_t len1, len2;
    int rc;

    rc = ferry_batch_decode((const char *)data, size, NULL, &b, &err);
    if (rc) {
        check_refusal(rc, &err);
        CHECK(b == NULL);
        return 0;
    }
    encode(b, &enc1, &len1);
    rc = ferry_batch_decode(enc1, len1, NULL, &b2, &err);
    if (rc)
        fprintf(stderr, "re-encoded batch refused: %s\n", err.msg);
    CHECK(rc == 0);
    check_same(b, b2);
    encode(b2, &enc2, &len2);
    CHECK(len1 == len2 && memcmp(enc1, enc2, len1) == 0);
    ferry_batch_free(b2);
    ferry_batch_free(b);
    free(enc1);
    free(enc2);
    return 0;
}
