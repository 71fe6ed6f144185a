/*
 * fuzz_digest.c - libFuzzer target for the decoders of verify/repair: the
 * digest and rows requests (read by ferry-src from the network) and the
 * digest response (read by ferry-dst). Each input is tried as all three.
 *
 * A refusal is EPROTO/ETOOBIG/ENOMEM with a one-line message. An accepted
 * message is encoded again; that must decode to the same message, and
 * encoding it again must give the same bytes.
 */
#include "common/checksum.h"
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

static int vals_same(const struct ferry_value *a, const struct ferry_value *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!val_same(&a[i], &b[i]))
            return 0;
    return 1;
}

static void check_same(const struct ferry_request *a, const struct ferry_request *b)
{
    CHECK(a->type == b->type);
    CHECK(strcmp(a->tenant, b->tenant) == 0);
    CHECK(strcmp(a->table, b->table) == 0);
    CHECK((a->lo == NULL) == (b->lo == NULL) && a->nlo == b->nlo);
    CHECK((a->hi == NULL) == (b->hi == NULL) && a->nhi == b->nhi);
    CHECK(!a->lo || vals_same(a->lo, b->lo, a->nlo));
    CHECK(!a->hi || vals_same(a->hi, b->hi, a->nhi));
    CHECK(a->parts == b->parts);
    CHECK(a->nkeys == b->nkeys && a->keywidth == b->keywidth);
    CHECK(a->nkeys == 0 || vals_same(a->keys, b->keys, a->nkeys * a->keywidth));
}

static void one_request(int type, const uint8_t *data, size_t size)
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
    CHECK(req.table != NULL);
    if (type == FERRY_REQ_DIGEST) {
        CHECK(req.parts >= 1 && req.parts <= FERRY_DIGEST_MAX_PARTS);
        CHECK(!req.lo || (req.nlo >= 1 && req.nlo <= FERRY_MAX_KEY_COLS));
        CHECK(!req.hi || (req.nhi >= 1 && req.nhi <= FERRY_MAX_KEY_COLS));
        CHECK(!req.lo || !req.hi || req.nlo == req.nhi);
    } else {
        CHECK(req.nkeys >= 1 && req.nkeys <= FERRY_ROWS_MAX_KEYS);
        CHECK(req.keywidth >= 1 && req.keywidth <= FERRY_MAX_KEY_COLS);
    }
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

static void one_digest(const uint8_t *data, size_t size)
{
    struct ferry_digest *g = NULL, *g2 = NULL;
    struct ferry_error err = {0};
    char *enc1 = NULL, *enc2 = NULL;
    size_t len1, len2;
    int rc;

    rc = ferry_digest_decode((const char *)data, size, NULL, &g, &err);
    if (rc) {
        check_refusal(rc, &err);
        CHECK(g == NULL);
        return;
    }
    CHECK(g->nranges <= FERRY_DIGEST_MAX_PARTS);
    for (size_t i = 0; i < g->nranges; i++) {
        CHECK(g->ranges[i].count >= 1);
        CHECK(g->ranges[i].nfirst == g->ranges[0].nfirst);
        CHECK(g->ranges[i].nfirst >= 1 && g->ranges[i].nfirst <= FERRY_MAX_KEY_COLS);
    }
    CHECK(g->unkeyed >= 0);
    CHECK(ferry_digest_encode(g->ranges, g->nranges, g->unkeyed, &enc1, &len1, &err) == 0);
    CHECK(ferry_digest_decode(enc1, len1, NULL, &g2, &err) == 0);
    CHECK(g2->nranges == g->nranges && g2->unkeyed == g->unkeyed);
    for (size_t i = 0; i < g->nranges; i++) {
        CHECK(g2->ranges[i].count == g->ranges[i].count);
        CHECK(g2->ranges[i].sum == g->ranges[i].sum);
        CHECK(g2->ranges[i].nfirst == g->ranges[i].nfirst);
        CHECK(vals_same(g2->ranges[i].first, g->ranges[i].first, g->ranges[i].nfirst));
    }
    CHECK(ferry_digest_encode(g2->ranges, g2->nranges, g2->unkeyed, &enc2, &len2, &err) == 0);
    CHECK(len1 == len2 && memcmp(enc1, enc2, len1) == 0);
    ferry_digest_free(g);
    ferry_digest_free(g2);
    free(enc1);
    free(enc2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    one_request(FERRY_REQ_DIGEST, data, size);
    one_request(FERRY_REQ_ROWS, data, size);
    one_digest(data, size);
    return 0;
}
