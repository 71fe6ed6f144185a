/*
 * fuzz_request.c - libFuzzer target for the request decoders (manifest,
 * snapshot and changes requests, each input tried as all three) and for
 * ferry_errmsg_decode, which reads the body of any error response.
 *
 * A refusal is EPROTO/ETOOBIG/ENOMEM with a one-line message. An accepted
 * request is encoded again; that must decode to the same request, and
 * encoding it again must give the same bytes.
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

static void check_same(const struct ferry_request *a, const struct ferry_request *b)
{
    CHECK(a->type == b->type);
    CHECK(strcmp(a->tenant, b->tenant) == 0);
    CHECK((a->table == NULL) == (b->table == NULL));
    CHECK(!a->table || strcmp(a->table, b->table) == 0);
    CHECK(a->nafter == b->nafter);
    CHECK((a->after_key == NULL) == (b->after_key == NULL));
    for (size_t i = 0; i < a->nafter; i++)
        CHECK(val_same(&a->after_key[i], &b->after_key[i]));
    CHECK(a->after == b->after);
    CHECK(a->limit == b->limit);
    CHECK(a->counts == b->counts);
    CHECK(a->want_snapshot == b->want_snapshot);
    CHECK((a->snapshot == NULL) == (b->snapshot == NULL));
    CHECK(!a->snapshot || strcmp(a->snapshot, b->snapshot) == 0);
}

static void one_type(int type, const uint8_t *data, size_t size)
{
    struct ferry_request req, req2;
    struct ferry_error err = {0};
    char *enc1 = NULL, *enc2 = NULL;
    size_t len1, len2;
    int rc;

    rc = ferry_request_decode(type, (const char *)data, size, NULL, &req, &err);
    if (rc) {
        check_refusal(rc, &err);
        CHECK(req.tenant == NULL && req.priv_ == NULL);
        return;
    }
    CHECK((int)req.type == type);
    CHECK(type == FERRY_REQ_MANIFEST || req.limit > 0);
    CHECK(ferry_request_encode(&req, &enc1, &len1, &err) == 0);
    rc = ferry_request_decode(type, enc1, len1, NULL, &req2, &err);
    if (rc)
        fprintf(stderr, "re-encoded request refused: %s\n", err.msg);
    CHECK(rc == 0);
    check_same(&req, &req2);
    CHECK(ferry_request_encode(&req2, &enc2, &len2, &err) == 0);
    CHECK(len1 == len2 && memcmp(enc1, enc2, len1) == 0);
    ferry_request_release(&req);
    ferry_request_release(&req2);
    free(enc1);
    free(enc2);
}

static void errmsg(const uint8_t *data, size_t size)
{
    struct ferry_error err = {0}, err2 = {0};
    char *enc = NULL;
    size_t len;
    int rc = ferry_errmsg_decode((const char *)data, size, &err);

    /* an error body always decodes to an error, never to success */
    CHECK(rc > 0 && rc < FERRY_NCODES);
    CHECK(err.code == rc);
    CHECK(strchr(err.msg, '\n') == NULL);
    if (rc == FERRY_EPROTO)
        return;
    CHECK(ferry_errmsg_encode(rc, err.msg, &enc, &len) == 0);
    CHECK(ferry_errmsg_decode(enc, len, &err2) == rc);
    CHECK(strcmp(err.msg, err2.msg) == 0);
    free(enc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    one_type(FERRY_REQ_MANIFEST, data, size);
    one_type(FERRY_REQ_SNAPSHOT, data, size);
    one_type(FERRY_REQ_CHANGES, data, size);
    errmsg(data, size);
    return 0;
}
