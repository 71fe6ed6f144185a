/*
 * fuzz_handshake.c - libFuzzer target for the handshake decoders (hello,
 * challenge, proof: each input tried as all three) and for the parsers of
 * the request headers a source reads from the network (X-Ferry-Counter,
 * X-Ferry-Session, X-Ferry-Mac).
 *
 * A refusal is EPROTO or ETOOBIG with a one-line message. An accepted
 * message is encoded again, and since the encoding has one form per
 * message, that must give back exactly the input.
 */
#include "common/buf.h"
#include "common/crypto.h"
#include "common/error.h"
#include "common/handshake.h"

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
    CHECK(rc == FERRY_EPROTO || rc == FERRY_ETOOBIG);
    CHECK(err->code == rc);
    CHECK(err->msg[0] != '\0');
    CHECK(strchr(err->msg, '\n') == NULL);
}

/* Encoded again, an accepted message is the input, byte for byte. */
static void check_same(int rc, const struct ferry_buf *b, const uint8_t *data, size_t size)
{
    CHECK(rc == FERRY_OK);
    CHECK(b->len == size);
    CHECK(size == 0 || memcmp(b->data, data, size) == 0);
}

static void hello(const uint8_t *data, size_t size)
{
    struct ferry_hs_hello m;
    struct ferry_error err = {0};
    struct ferry_buf b;
    int rc = ferry_hs_decode_hello(data, size, &m, &err);

    if (rc) {
        check_refusal(rc, &err);
        return;
    }
    CHECK(ferry_authkeys_check_tenant(m.tenant, NULL) == FERRY_OK);
    CHECK(ferry_key_fingerprint_ok(m.fingerprint, strlen(m.fingerprint)));
    ferry_buf_init(&b, FERRY_HS_MSG_MAX);
    check_same(ferry_hs_encode_hello(&m, &b, &err), &b, data, size);
    ferry_buf_release(&b);
}

static void challenge(const uint8_t *data, size_t size)
{
    struct ferry_hs_challenge *m = malloc(sizeof(*m));
    struct ferry_error err = {0};
    struct ferry_buf b;
    int rc;

    CHECK(m != NULL);
    rc = ferry_hs_decode_challenge(data, size, m, &err);
    if (rc) {
        check_refusal(rc, &err);
        free(m);
        return;
    }
    CHECK(ferry_key_fingerprint_ok(m->fingerprint, strlen(m->fingerprint)));
    CHECK(ferry_hs_session_id_ok(m->session));
    CHECK(m->ttl >= 1 && m->ttl <= FERRY_HS_TTL_MAX);
    CHECK(m->wrappedlen <= sizeof(m->wrapped) && m->siglen <= sizeof(m->sig));
    ferry_buf_init(&b, FERRY_HS_MSG_MAX);
    check_same(ferry_hs_encode_challenge(m, &b, &err), &b, data, size);
    ferry_buf_release(&b);
    free(m);
}

static void proof(const uint8_t *data, size_t size)
{
    struct ferry_hs_proof *m = malloc(sizeof(*m));
    struct ferry_error err = {0};
    struct ferry_buf b;
    int rc;

    CHECK(m != NULL);
    rc = ferry_hs_decode_proof(data, size, m, &err);
    if (rc) {
        check_refusal(rc, &err);
        free(m);
        return;
    }
    CHECK(ferry_hs_session_id_ok(m->session));
    CHECK(m->siglen <= sizeof(m->sig));
    ferry_buf_init(&b, FERRY_HS_MSG_MAX);
    check_same(ferry_hs_encode_proof(m, &b, &err), &b, data, size);
    ferry_buf_release(&b);
    free(m);
}

/* The header values, as the source gets them: NUL-terminated strings. */
static void headers(const uint8_t *data, size_t size)
{
    char s[128];
    unsigned char mac[FERRY_HMAC_LEN];
    char hex[2 * FERRY_HMAC_LEN + 1];
    char num[24];
    struct ferry_error err = {0};
    uint64_t counter;
    size_t n = size < sizeof(s) - 1 ? size : sizeof(s) - 1;
    int rc;

    memcpy(s, data, n);
    s[n] = '\0';
    rc = ferry_hs_parse_counter(s, &counter, &err);
    if (rc) {
        CHECK(rc == FERRY_EPROTO && err.msg[0]);
    } else {
        /* one accepted form per number: decimal, no sign, no leading zero */
        CHECK(counter >= 1);
        snprintf(num, sizeof(num), "%llu", (unsigned long long)counter);
        CHECK(strcmp(num, s) == 0);
    }
    if (ferry_hs_session_id_ok(s)) {
        CHECK(strlen(s) == FERRY_HS_ID_LEN);
        CHECK(strspn(s, "0123456789abcdef") == FERRY_HS_ID_LEN);
    }
    if (ferry_hex_decode(s, strlen(s), mac, sizeof(mac), NULL) == FERRY_OK) {
        ferry_hex_encode(mac, sizeof(mac), hex);
        CHECK(strcmp(hex, s) == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hello(data, size);
    challenge(data, size);
    proof(data, size);
    headers(data, size);
    return 0;
}
