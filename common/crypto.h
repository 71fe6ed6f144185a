/*
 * crypto.h - RSA keys, signatures, key wrapping, hashes and MACs for ferry's
 * authenticated channel. The only module that includes OpenSSL (libcrypto,
 * EVP APIs).
 *
 * Algorithms are fixed, not negotiated:
 *   keys          RSA, FERRY_KEY_BITS_MIN..FERRY_KEY_BITS_MAX bits
 *   fingerprint   "SHA256:" + base64 without padding of SHA-256 over the DER
 *                 SubjectPublicKeyInfo (the form ssh-keygen -l prints)
 *   signatures    RSA-PSS, SHA-256, MGF1-SHA-256, salt length 32
 *   key wrapping  RSA-OAEP, SHA-256, MGF1-SHA-256, empty label
 *   MAC           HMAC-SHA-256
 *
 * Every fallible function returns 0 or a FERRY_E* code and fills err (may be
 * NULL). OpenSSL's error queue is drained into err->msg and cleared, so one
 * failure never leaks its detail into the next. No message ever contains key
 * bytes or secrets.
 */
#ifndef FERRY_CRYPTO_H
#define FERRY_CRYPTO_H

#include "buf.h"
#include "error.h"

#include <stddef.h>

#define FERRY_KEY_BITS_DEFAULT 3072
#define FERRY_KEY_BITS_MIN 2048
#define FERRY_KEY_BITS_MAX 8192
/* Largest signature or wrapped secret: one RSA modulus of the largest key. */
#define FERRY_KEY_MAX_BYTES (FERRY_KEY_BITS_MAX / 8)

#define FERRY_SHA256_LEN 32
#define FERRY_HMAC_LEN 32
/* "SHA256:" + 43 base64 characters; FERRY_FPR_SIZE includes the NUL. */
#define FERRY_FPR_LEN 50
#define FERRY_FPR_SIZE (FERRY_FPR_LEN + 1)

/* An RSA key: a public key, or a private key (which also has the public half). */
struct ferry_key;

/* One piece of a message hashed or MACed in several parts; bytes borrowed. */
struct ferry_bytes {
    const void *p;
    size_t n;
};

/*
 * Generate an RSA key pair of bits bits (0: FERRY_KEY_BITS_DEFAULT).
 * *out is owned by the caller, free with ferry_key_free().
 * FERRY_EUSAGE for a size outside FERRY_KEY_BITS_MIN..MAX.
 */
int ferry_key_generate(unsigned bits, struct ferry_key **out, struct ferry_error *err);

/*
 * Write k's private key to path (PKCS#8 PEM, mode 0600) and its public key to
 * path.pub (SubjectPublicKeyInfo PEM, mode 0644), each fsynced. Neither file
 * may exist: FERRY_ECONFIG "FILE exists; remove it or choose another --out",
 * and nothing is written. On any failure no file is left behind.
 * FERRY_EUSAGE if k has no private half.
 */
int ferry_key_save(const struct ferry_key *k, const char *path, struct ferry_error *err);

/*
 * Load a private key (PEM: PKCS#8 or traditional RSA; not encrypted). The
 * file must be a regular file of at most 64 KiB that neither group nor others
 * can read or write: otherwise FERRY_ECONFIG "private key FILE is readable by
 * others; run chmod 600 FILE". Non-RSA keys, keys outside the allowed sizes
 * and unreadable files are FERRY_ECONFIG naming the file.
 * *out owned by the caller, free with ferry_key_free().
 */
int ferry_key_load_private(const char *path, struct ferry_key **out, struct ferry_error *err);

/* Load a public key (SubjectPublicKeyInfo PEM, "BEGIN PUBLIC KEY"); as above. */
int ferry_key_load_public(const char *path, struct ferry_key **out, struct ferry_error *err);

/*
 * SHA-256 of a key file's bytes, read under the same rules as the loaders
 * above (priv: the private key's permissions are checked too), without
 * parsing the key: a cheap fingerprint of the file, to bind something to it.
 * Same errors as the loaders for a file they would refuse to read.
 */
int ferry_key_file_digest(const char *path, int priv, unsigned char out[FERRY_SHA256_LEN],
                          struct ferry_error *err);

/*
 * Parse a public key from DER SubjectPublicKeyInfo (len bytes, at most
 * FERRY_KEY_MAX_BYTES + 64). FERRY_EPROTO when it is not exactly one RSA
 * public key of an allowed size. *out owned by the caller (ferry_key_free).
 */
int ferry_key_from_spki(const void *der, size_t len, struct ferry_key **out,
                        struct ferry_error *err);

/*
 * The DER SubjectPublicKeyInfo of k, appended to out (caller-owned buffer).
 */
int ferry_key_spki(const struct ferry_key *k, struct ferry_buf *out, struct ferry_error *err);

/* "SHA256:..." (FERRY_FPR_LEN characters); borrowed, valid until k is freed. */
const char *ferry_key_fingerprint(const struct ferry_key *k);

/*
 * 1 when s[0..n) has the form of a fingerprint: "SHA256:" and 43 base64
 * characters (the last one with its two unused bits zero); 0 otherwise.
 */
int ferry_key_fingerprint_ok(const char *s, size_t n);

/* 1 when k holds a private key. */
int ferry_key_is_private(const struct ferry_key *k);

/* Modulus size in bits, and in bytes (the length of every signature and wrapped secret). */
unsigned ferry_key_bits(const struct ferry_key *k);
size_t ferry_key_size(const struct ferry_key *k);

/* A second handle on the same key (shares the key, not copied); free each with ferry_key_free. */
int ferry_key_dup(const struct ferry_key *k, struct ferry_key **out, struct ferry_error *err);

/* Free k (NULL is fine). Private key material is wiped by OpenSSL. */
void ferry_key_free(struct ferry_key *k);

/*
 * Sign msg with RSA-PSS-SHA-256 (k must be private). The signature,
 * ferry_key_size(k) bytes, is written to sig (capacity sigmax) and its length
 * to *siglen. FERRY_EINTERNAL if sigmax is too small.
 */
int ferry_key_sign(const struct ferry_key *k, const void *msg, size_t len, unsigned char *sig,
                   size_t sigmax, size_t *siglen, struct ferry_error *err);

/*
 * Verify an RSA-PSS-SHA-256 signature (salt length 32 exactly) by k over msg.
 * FERRY_EAUTH "bad signature" when it does not verify (including a wrong
 * length); other codes only for internal failures.
 */
int ferry_key_verify(const struct ferry_key *k, const void *msg, size_t len,
                     const unsigned char *sig, size_t siglen, struct ferry_error *err);

/*
 * RSA-OAEP-SHA-256 encrypt in (at most ferry_key_size(k) - 66 bytes) to k.
 * The ciphertext, ferry_key_size(k) bytes, goes to out (capacity outmax).
 */
int ferry_key_encrypt(const struct ferry_key *k, const void *in, size_t inlen, unsigned char *out,
                      size_t outmax, size_t *outlen, struct ferry_error *err);

/*
 * RSA-OAEP-SHA-256 decrypt with the private key k. The plaintext goes to out
 * (capacity outmax). FERRY_EAUTH when the ciphertext does not decrypt (wrong
 * key, tampered, wrong length) or the plaintext does not fit outmax.
 */
int ferry_key_decrypt(const struct ferry_key *k, const void *in, size_t inlen, unsigned char *out,
                      size_t outmax, size_t *outlen, struct ferry_error *err);

/* SHA-256 of p[0..n). */
/*
 * Set OpenSSL up as ferry uses it; once, at the start of main, before any
 * thread and before curl_global_init. Optional: without it every call
 * works, at more cost.
 */
void ferry_crypto_init(void);

int ferry_sha256(const void *p, size_t n, unsigned char out[FERRY_SHA256_LEN],
                 struct ferry_error *err);

/* SHA-256 of the concatenation of parts (e.g. an evbuffer's chunks, without copying). */
int ferry_sha256_parts(const struct ferry_bytes *parts, size_t nparts,
                       unsigned char out[FERRY_SHA256_LEN], struct ferry_error *err);

/* HMAC-SHA-256 with key over the concatenation of parts. */
int ferry_hmac_sha256(const void *key, size_t keylen, const struct ferry_bytes *parts,
                      size_t nparts, unsigned char out[FERRY_HMAC_LEN], struct ferry_error *err);

/* n bytes from OpenSSL's CSPRNG (RAND_bytes). */
int ferry_random(void *p, size_t n, struct ferry_error *err);

/* 1 when a and b (n bytes each) are equal; time independent of where they differ. */
int ferry_ct_equal(const void *a, const void *b, size_t n);

/* Overwrite n bytes at p with zeros in a way the compiler keeps (secrets going out of use). */
void ferry_cleanse(void *p, size_t n);

/*
 * Append the base64 (RFC 4648 standard alphabet) of p[0..n) to out, with '='
 * padding when pad is 1, without when 0.
 */
int ferry_base64_encode(const void *p, size_t n, int pad, struct ferry_buf *out,
                        struct ferry_error *err);

/*
 * Decode base64 s[0..n) into out (capacity outmax). Strict: standard
 * alphabet only, no whitespace, padding either complete or absent, unused
 * trailing bits zero (so each byte string has exactly one accepted encoding
 * per padding style). FERRY_EPROTO for anything else, FERRY_ETOOBIG if the
 * result would not fit outmax.
 */
int ferry_base64_decode(const char *s, size_t n, unsigned char *out, size_t outmax, size_t *outlen,
                        struct ferry_error *err);

/* Lowercase hex of p[0..n) into out, which must hold 2n + 1 characters (NUL-terminated). */
void ferry_hex_encode(const void *p, size_t n, char *out);

/*
 * Decode s[0..slen), which must be exactly 2n lowercase hex characters, into
 * out[0..n). FERRY_EPROTO otherwise.
 */
int ferry_hex_decode(const char *s, size_t slen, unsigned char *out, size_t n,
                     struct ferry_error *err);

#endif
