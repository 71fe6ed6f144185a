/*
 * fuzz_freeze.c - libFuzzer target for the freeze messages: each input is
 * tried as a freeze request (what ferry-src decodes from POST /v1/freeze)
 * and as a freeze response (what ferry-dst decodes during a cutover).
 *
 * A refusal is EPROTO/ETOOBIG/ENOMEM with a one-line message. An accepted
 * message is encoded again; that must decode to the same message.
 */
#include "common/error.h"
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

static void one_request(const char *data, size_t size)
{
    struct ferry_request req, again;
    struct ferry_error err;
    char *out = NULL;
    size_t len = 0;
    int rc;

    memset(&err, 0, sizeof(err));
    rc = ferry_request_decode(FERRY_REQ_FREEZE, data, size, NULL, &req, &err);
    if (rc) {
        check_refusal(rc, &err);
        return;
    }
    CHECK(req.type == FERRY_REQ_FREEZE);
    CHECK(req.tenant && req.tenant[0]);
    CHECK(req.on == 0 || req.on == 1);
    CHECK(ferry_request_encode(&req, &out, &len, &err) == FERRY_OK);
    CHECK(ferry_request_decode(FERRY_REQ_FREEZE, out, len, NULL, &again, &err) == FERRY_OK);
    CHECK(strcmp(req.tenant, again.tenant) == 0);
    CHECK(req.on == again.on);
    ferry_request_release(&again);
    ferry_request_release(&req);
    free(out);
}

static void one_reply(const char *data, size_t size)
{
    struct ferry_freeze_reply r, again;
    struct ferry_error err;
    char *out = NULL;
    size_t len = 0;
    int rc;

    memset(&err, 0, sizeof(err));
    rc = ferry_freeze_reply_decode(data, size, NULL, &r, &err);
    if (rc) {
        check_refusal(rc, &err);
        return;
    }
    CHECK(r.tenant[0] && strlen(r.tenant) <= FERRY_FREEZE_TENANT_MAX);
    CHECK(ferry_freeze_reply_encode(&r, &out, &len, &err) == FERRY_OK);
    CHECK(ferry_freeze_reply_decode(out, len, NULL, &again, &err) == FERRY_OK);
    CHECK(strcmp(r.tenant, again.tenant) == 0);
    CHECK(r.frozen == again.frozen && r.head == again.head);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    one_request((const char *)data, size);
    one_reply((const char *)data, size);
    return 0;
}
