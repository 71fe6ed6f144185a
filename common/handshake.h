/*
 * handshake.h - ferry's mutual authentication and per-request MACs,
 * independent of the transport (prefix ferry_hs_). The messages are byte
 * strings; the HTTP layer carries them in bodies and headers.
 *
 * Protocol (version FERRY_HS_VERSION):
 *
 *   1. target -> source  hello:     tenant, target key fingerprint, target
 *                                   nonce (32 random bytes), timestamp
 *   2. source -> target  challenge: source fingerprint, source nonce, session
 *                                   id, session lifetime, timestamp, a fresh
 *                                   32-byte session secret wrapped to the
 *                                   target's key (RSA-OAEP-SHA-256), and the
 *                                   source's signature over the transcript
 *                                   labelled "ferry-hs-v1 source"
 *   3. target -> source  proof:     session id, the target's signature over
 *                                   the same transcript labelled
 *                                   "ferry-hs-v1 target"
 *
 * Each side thus signs the other's fresh nonce, both timestamps, the tenant,
 * both fingerprints and the version (RSA-PSS-SHA-256, crypto.h). The session
 * is usable once the source has accepted the proof.
 *
 * Message encoding (every field bounded; anything else is FERRY_EPROTO):
 *
 *   "FRHS" | type u8 (1 hello, 2 challenge, 3 proof) | version u16 BE |
 *   fields, each u16 BE length + bytes, in this order, nothing after:
 *     hello      tenant (1..255, [A-Za-z0-9_.-]), fingerprint (50), nonce (32),
 *                timestamp (8, signed BE unix seconds)
 *     challenge  fingerprint (50), nonce (32), session id (32 lowercase hex),
 *                ttl (4, BE seconds, 1..FERRY_HS_TTL_MAX), timestamp (8),
 *                wrapped secret (256..1024), signature (256..1024)
 *     proof      session id (32), signature (256..1024)
 *
 * Transcript signed by both sides: each field as u32 BE length + bytes:
 *   label, version (u16 BE), tenant, target fingerprint, source fingerprint,
 *   target nonce, source nonce, session id, hello timestamp (i64 BE),
 *   challenge timestamp (i64 BE), ttl (u32 BE), SHA-256(wrapped secret)
 *
 * Request MAC (hex in a header, say):
 *   HMAC-SHA-256(secret, METHOD "\n" PATH "\n" QUERY "\n" COUNTER "\n" BODYHASH)
 * Response MAC:
 *   HMAC-SHA-256(secret, "resp\n" COUNTER "\n" STATUS "\n" BODYHASH)
 * where PATH and QUERY are the request target exactly as sent (still
 * percent-encoded; QUERY is "" when there is none), COUNTER and STATUS are
 * decimal without leading zeros, and BODYHASH is the lowercase hex SHA-256 of
 * the body (of the empty string when there is none). Counters start at 1 and
 * strictly increase within a session; the source refuses any counter not
 * above the last one it accepted.
 *
 * All functions taking now (unix seconds) use it for every clock decision,
 * so tests can move time; callers pass time(NULL). Error codes: FERRY_EPROTO
 * malformed message (400), FERRY_EAUTH refused (401), FERRY_EFORBIDDEN key
 * not bound to the tenant asked for (403). Messages name key fingerprints
 * and tenants (only once validated) and never contain secrets.
 */
#ifndef FERRY_HANDSHAKE_H
#define FERRY_HANDSHAKE_H

#include "authkeys.h"
#include "buf.h"
#include "crypto.h"
#include "error.h"

#include <stddef.h>
#include <stdint.h>

#define FERRY_HS_VERSION 1
#define FERRY_HS_NONCE_LEN 32
#define FERRY_HS_SECRET_LEN 32
#define FERRY_HS_ID_LEN 32 /* 16 random bytes in hex */
#define FERRY_HS_MSG_MAX 4096
#define FERRY_HS_TTL_MAX (7 * 24 * 3600)
#define FERRY_HS_SKEW_DEFAULT 120
#define FERRY_HS_TTL_DEFAULT 900

/* Decoded messages: plain structs, no pointers; fields as described above. */
struct ferry_hs_hello {
    char tenant[FERRY_TENANT_MAX + 1];
    char fingerprint[FERRY_FPR_SIZE]; /* the target's key */
    unsigned char nonce[FERRY_HS_NONCE_LEN];
    int64_t timestamp;
};

struct ferry_hs_challenge {
    char fingerprint[FERRY_FPR_SIZE]; /* the source's key */
    unsigned char nonce[FERRY_HS_NONCE_LEN];
    char session[FERRY_HS_ID_LEN + 1];
    uint32_t ttl;
    int64_t timestamp;
    unsigned char wrapped[FERRY_KEY_MAX_BYTES];
    size_t wrappedlen;
    unsigned char sig[FERRY_KEY_MAX_BYTES];
    size_t siglen;
};

struct ferry_hs_proof {
    char session[FERRY_HS_ID_LEN + 1];
    unsigned char sig[FERRY_KEY_MAX_BYTES];
    size_t siglen;
};

/*
 * Encoders append to out (caller-owned); decoders read p[0..n) (n at most
 * FERRY_HS_MSG_MAX, else FERRY_ETOOBIG) into the caller's struct and check
 * every length, the magic, the type, the version and the field syntax:
 * FERRY_EPROTO otherwise. Decoders allocate nothing.
 */
int ferry_hs_encode_hello(const struct ferry_hs_hello *m, struct ferry_buf *out,
                          struct ferry_error *err);
int ferry_hs_decode_hello(const void *p, size_t n, struct ferry_hs_hello *m,
                          struct ferry_error *err);
int ferry_hs_encode_challenge(const struct ferry_hs_challenge *m, struct ferry_buf *out,
                              struct ferry_error *err);
int ferry_hs_decode_challenge(const void *p, size_t n, struct ferry_hs_challenge *m,
                              struct ferry_error *err);
int ferry_hs_encode_proof(const struct ferry_hs_proof *m, struct ferry_buf *out,
                          struct ferry_error *err);
int ferry_hs_decode_proof(const void *p, size_t n, struct ferry_hs_proof *m,
                          struct ferry_error *err);

/* 1 when s is a session id: FERRY_HS_ID_LEN lowercase hex characters. */
int ferry_hs_session_id_ok(const char *s);

/*
 * Parse a request counter: decimal, 1..UINT64_MAX, no sign, no leading zero,
 * no spaces. FERRY_EPROTO otherwise.
 */
int ferry_hs_parse_counter(const char *s, uint64_t *out, struct ferry_error *err);

/*
 * The request MAC (see top). method, path and query must not contain '\n'
 * (FERRY_EPROTO); query "" when there is none.
 */
int ferry_hs_mac_request(const unsigned char secret[FERRY_HS_SECRET_LEN], const char *method,
                         const char *path, const char *query, uint64_t counter,
                         const unsigned char body_hash[FERRY_SHA256_LEN],
                         unsigned char out[FERRY_HMAC_LEN], struct ferry_error *err);

/* Compare mac (maclen bytes) with the request MAC in constant time: FERRY_EAUTH on mismatch. */
int ferry_hs_verify_request(const unsigned char secret[FERRY_HS_SECRET_LEN], const char *method,
                            const char *path, const char *query, uint64_t counter,
                            const unsigned char body_hash[FERRY_SHA256_LEN],
                            const unsigned char *mac, size_t maclen, struct ferry_error *err);

/* The response MAC (see top); status is the HTTP status, 100..999. */
int ferry_hs_mac_response(const unsigned char secret[FERRY_HS_SECRET_LEN], uint64_t counter,
                          int status, const unsigned char body_hash[FERRY_SHA256_LEN],
                          unsigned char out[FERRY_HMAC_LEN], struct ferry_error *err);

/*
 * The target checks every response before decoding it: FERRY_EAUTH
 * "response MAC mismatch" when mac is not the response MAC.
 */
int ferry_hs_verify_response(const unsigned char secret[FERRY_HS_SECRET_LEN], uint64_t counter,
                             int status, const unsigned char body_hash[FERRY_SHA256_LEN],
                             const unsigned char *mac, size_t maclen, struct ferry_error *err);

/* ---- target side ---- */

/* An established session, as the target holds it. Caller-owned plain struct. */
struct ferry_hs_session {
    char id[FERRY_HS_ID_LEN + 1];
    unsigned char secret[FERRY_HS_SECRET_LEN];
    uint64_t counter; /* last counter used: the next request sends counter + 1 */
    int64_t expires;  /* on the target's clock; the source may expire it up to one
                         round trip earlier: renew a little before, and on
                         FERRY_EAUTH "session expired" renew once and retry */
};

/* Wipe a session's secret (call when dropping or replacing it). */
void ferry_hs_session_clear(struct ferry_hs_session *s);

struct ferry_hs_client;

/*
 * A target's handshake state. identity (private) and source (the pinned
 * public key) are borrowed and must outlive the client; tenant is copied.
 * skew: allowed clock difference in seconds (0: FERRY_HS_SKEW_DEFAULT).
 * *out owned by the caller, free with ferry_hs_client_free().
 */
int ferry_hs_client_new(const struct ferry_key *identity, const struct ferry_key *source,
                        const char *tenant, int skew, struct ferry_hs_client **out,
                        struct ferry_error *err);
void ferry_hs_client_free(struct ferry_hs_client *c);

/* Start a handshake: a fresh nonce; the hello message is appended to out. */
int ferry_hs_client_hello(struct ferry_hs_client *c, int64_t now, struct ferry_buf *out,
                          struct ferry_error *err);

/*
 * Check the source's challenge to the last hello and answer it: the proof is
 * appended to out and *sess filled (counter 0). Refused with FERRY_EAUTH
 * when the source key is not the pinned one, the signature is bad, the
 * timestamp is outside the skew, or the secret does not unwrap. One
 * challenge per hello: the hello state is consumed whatever the outcome.
 */
int ferry_hs_client_challenge(struct ferry_hs_client *c, const void *msg, size_t len, int64_t now,
                              struct ferry_buf *out, struct ferry_hs_session *sess,
                              struct ferry_error *err);

/* ---- source side ---- */

struct ferry_hs_server_opts {
    int skew;            /* seconds of allowed clock difference; also how long a
                            challenge waits for its proof (default 120) */
    uint32_t ttl;        /* session lifetime in seconds (default 900) */
    size_t max_sessions; /* sessions kept, pending included (default 1024) */
    size_t max_nonces;   /* hello nonces remembered for replay checks (default 4096) */
    /*
     * Asked once a hello has passed every check that costs nothing (its
     * form, an authorised key for its tenant, its time, a new nonce) and
     * before the RSA work of its challenge: 0 refuses it (FERRY_EAUTH "too
     * many handshakes"; the gate knows it said no).
     * NULL: every hello is answered. A hello refused sooner costs no RSA
     * work and does not ask.
     */
    int (*gate)(void *ctx);
    void *gate_ctx;
};

/* Who is on the other end, for the caller's log line and the response MAC. */
struct ferry_hs_peer {
    char fingerprint[FERRY_FPR_SIZE];          /* "" until known and well-formed */
    char tenant[FERRY_TENANT_MAX + 1];         /* "" until known and well-formed */
    char session[FERRY_HS_ID_LEN + 1];         /* "" until known */
    unsigned char secret[FERRY_HS_SECRET_LEN]; /* set by ferry_hs_server_request only */
    /*
     * ferry_hs_server_request: the request is the session's (its MAC and
     * counter hold), even when the call fails for another reason (the
     * authorised keys cannot be read): the answer can be signed, so the
     * target reads the source's error instead of an unsigned one.
     */
    int authentic;
};

/* Wipe the secret a peer holds. */
void ferry_hs_peer_clear(struct ferry_hs_peer *p);

struct ferry_hs_server;

/*
 * The source's handshake and session state. identity (private) and keys are
 * borrowed and must outlive the server; keys is reloaded (a stat when
 * unchanged) at every hello, proof and request, so revocation applies at
 * once, to existing sessions too. opts NULL for the defaults.
 * *out owned by the caller, free with ferry_hs_server_free() (wipes secrets).
 */
int ferry_hs_server_new(const struct ferry_key *identity, struct ferry_authkeys *keys,
                        const struct ferry_hs_server_opts *opts, struct ferry_hs_server **out,
                        struct ferry_error *err);
void ferry_hs_server_free(struct ferry_hs_server *s);

/*
 * Check a hello and answer with a challenge (appended to out); the session
 * is pending until its proof arrives. Refused: FERRY_EAUTH "unknown key
 * SHA256:..." (not in keys), FERRY_EFORBIDDEN (the key is bound to another
 * tenant), FERRY_EAUTH "stale timestamp", FERRY_EAUTH "replayed handshake"
 * (nonce already seen), FERRY_EAUTH "too many handshakes" (opts' gate
 * said no; the nonce stays unseen). peer (may be NULL) gets the
 * fingerprint and tenant
 * as soon as they are decoded, for logging a refusal.
 */
int ferry_hs_server_hello(struct ferry_hs_server *s, const void *msg, size_t len, int64_t now,
                          struct ferry_buf *out, struct ferry_hs_peer *peer,
                          struct ferry_error *err);

/*
 * Check a proof and make its session usable. Refused with FERRY_EAUTH for an
 * unknown session, a session already proven ("replayed handshake"), a proof
 * later than skew seconds after its challenge, a key revoked meanwhile, or a
 * bad signature; a refused proof also drops its pending session.
 */
int ferry_hs_server_proof(struct ferry_hs_server *s, const void *msg, size_t len, int64_t now,
                          struct ferry_hs_peer *peer, struct ferry_error *err);

/*
 * Authenticate one request: session id and counter as received, the request
 * line parts and body hash, and the MAC (maclen bytes, raw). On success the
 * counter is recorded and peer (required) holds the session's tenant,
 * fingerprint and secret (for the response MAC; wipe it afterwards with
 * ferry_hs_peer_clear). Refused with FERRY_EAUTH: "unknown session",
 * "session expired" (renew), a key no longer authorised for the session's
 * tenant (the session is dropped), "bad request MAC", "replayed request"
 * (counter not above the last accepted).
 */
int ferry_hs_server_request(struct ferry_hs_server *s, const char *session, uint64_t counter,
                            const char *method, const char *path, const char *query,
                            const unsigned char body_hash[FERRY_SHA256_LEN],
                            const unsigned char *mac, size_t maclen, int64_t now,
                            struct ferry_hs_peer *peer, struct ferry_error *err);

/* Number of sessions held (pending and active), after dropping expired ones. */
size_t ferry_hs_server_sessions(struct ferry_hs_server *s, int64_t now);

#endif
