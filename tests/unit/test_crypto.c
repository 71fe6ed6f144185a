/*
 * test_crypto.c - keys, signatures, key wrapping, hashes, MACs and encodings,
 * checked against the openssl command line and published test vectors.
 */
#include "common/crypto.h"

#include "test.h"

#include <errno.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>

static char out[16384];

/* Run a shell command; its stdout (trailing newlines cut) lands in out. Returns the exit status. */
static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    FILE *p;
    size_t n;
    int st;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    p = popen(cmd, "r");
    ASSERT(p != NULL);
    n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r'))
        out[--n] = '\0';
    st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void put_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    ASSERT(f != NULL);
    ASSERT_EQ(fwrite(p, 1, n, f), n);
    ASSERT_EQ(fclose(f), 0);
}

static size_t get_file(const char *path, unsigned char *buf, size_t max)
{
    FILE *f = fopen(path, "rb");
    size_t n;

    ASSERT(f != NULL);
    n = fread(buf, 1, max, f);
    fclose(f);
    return n;
}

static const char *hex(const unsigned char *p, size_t n)
{
    static char h[4096];
    ferry_hex_encode(p, n, h);
    return h;
}

/* The fingerprint computed by openssl alone: SHA-256 over the DER SubjectPublicKeyInfo. */
static const char *openssl_fpr(const char *pubfile)
{
    static char f[128];
    ASSERT_EQ(sh("openssl pkey -pubin -in '%s' -outform DER | openssl dgst -sha256 -binary | "
                 "base64 | tr -d '=\\n'",
                 pubfile),
              0);
    snprintf(f, sizeof(f), "SHA256:%.100s", out);
    return f;
}

static void test_keygen_files(const char *dir)
{
    struct ferry_error err;
    struct ferry_key *k = NULL;
    struct ferry_key *priv = NULL;
    struct ferry_key *pub = NULL;
    char path[600];
    char pubpath[640];
    char other[640];

    snprintf(path, sizeof(path), "%s/id", dir);
    snprintf(pubpath, sizeof(pubpath), "%s/id.pub", dir);
    ASSERT_EQ(ferry_key_generate(2048, &k, &err), 0);
    ASSERT_EQ(ferry_key_bits(k), 2048);
    ASSERT_EQ(ferry_key_size(k), 256);
    ASSERT(ferry_key_is_private(k));
    ASSERT_EQ(ferry_key_save(k, path, &err), 0);

    /* Modes as the OS reports them. */
    ASSERT_EQ(sh("stat -c %%a '%s'", path), 0);
    ASSERT_STR(out, "600");
    ASSERT_EQ(sh("stat -c %%a '%s'", pubpath), 0);
    ASSERT_STR(out, "644");
    /* openssl reads both back as a valid 2048-bit RSA pair. */
    ASSERT_EQ(sh("openssl pkey -in '%s' -check -noout 2>&1", path), 0);
    ASSERT(strstr(out, "valid") != NULL);
    ASSERT_EQ(sh("openssl pkey -in '%s' -text -noout | head -1", path), 0);
    ASSERT(strstr(out, "2048 bit") != NULL);
    ASSERT_EQ(sh("head -1 '%s'", path), 0);
    ASSERT_STR(out, "-----BEGIN PRIVATE KEY-----");
    ASSERT_EQ(sh("head -1 '%s'", pubpath), 0);
    ASSERT_STR(out, "-----BEGIN PUBLIC KEY-----");
    ASSERT_EQ(sh("openssl pkey -in '%s' -pubout | cmp - '%s'", path, pubpath), 0);

    /* Fingerprint against openssl's own computation. */
    ASSERT_STR(ferry_key_fingerprint(k), openssl_fpr(pubpath));
    ASSERT_EQ(strlen(ferry_key_fingerprint(k)), FERRY_FPR_LEN);
    ASSERT(ferry_key_fingerprint_ok(ferry_key_fingerprint(k), FERRY_FPR_LEN));
    ASSERT(!ferry_key_fingerprint_ok("SHA256:abc", 10));
    ASSERT(!ferry_key_fingerprint_ok("MD5:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 50));

    /* Loading gives the same key back. */
    ASSERT_EQ(ferry_key_load_private(path, &priv, &err), 0);
    ASSERT(ferry_key_is_private(priv));
    ASSERT_STR(ferry_key_fingerprint(priv), ferry_key_fingerprint(k));
    ASSERT_EQ(ferry_key_load_public(pubpath, &pub, &err), 0);
    ASSERT(!ferry_key_is_private(pub));
    ASSERT_STR(ferry_key_fingerprint(pub), ferry_key_fingerprint(k));
    ferry_key_free(priv);
    ferry_key_free(pub);

    /* Never overwrite: neither the key nor its .pub. */
    ASSERT_EQ(ferry_key_save(k, path, &err), FERRY_ECONFIG);
    ASSERT(strstr(err.msg, "exists; remove it or choose another --out") != NULL);
    ASSERT(strstr(err.msg, path) != NULL);
    ASSERT_STR(openssl_fpr(pubpath), ferry_key_fingerprint(k));
    snprintf(other, sizeof(other), "%s/lonely", dir);
    ASSERT_EQ(sh("touch '%s.pub'", other), 0);
    ASSERT_EQ(ferry_key_save(k, other, &err), FERRY_ECONFIG);
    ASSERT(strstr(err.msg, ".pub exists") != NULL);
    ASSERT(access(other, F_OK) != 0); /* the private half was not left behind */
    ASSERT_EQ(sh("stat -c %%s '%s.pub'", other), 0);
    ASSERT_STR(out, "0");

    /* A public key cannot be saved as a pair. */
    ASSERT_EQ(ferry_key_load_public(pubpath, &pub, &err), 0);
    snprintf(other, sizeof(other), "%s/frompub", dir);
    ASSERT_EQ(ferry_key_save(pub, other, &err), FERRY_EUSAGE);
    ferry_key_free(pub);
    ferry_key_free(k);

    ASSERT_EQ(ferry_key_generate(1024, &k, &err), FERRY_EUSAGE);
    ASSERT(k == NULL);
    ASSERT_EQ(ferry_key_generate(16384, &k, &err), FERRY_EUSAGE);
}

static void test_private_modes(const char *dir)
{
    static const char *refused[] = {"644", "640", "604", "620", "602", "660", "610", "601"};
    struct ferry_error err;
    struct ferry_key *k = NULL;
    char path[600];
    char want[1400];

    snprintf(path, sizeof(path), "%s/id", dir);
    snprintf(want, sizeof(want), "private key %s is readable by others; run chmod 600 %s", path,
             path);
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        ASSERT_EQ(sh("chmod %s '%s'", refused[i], path), 0);
        ASSERT_EQ(ferry_key_load_private(path, &k, &err), FERRY_ECONFIG);
        ASSERT_STR(err.msg, want);
        ASSERT(k == NULL);
    }
    ASSERT_EQ(sh("chmod 400 '%s'", path), 0);
    ASSERT_EQ(ferry_key_load_private(path, &k, &err), 0);
    ferry_key_free(k);
    ASSERT_EQ(sh("chmod 600 '%s'", path), 0);
    ASSERT_EQ(ferry_key_load_private(path, &k, &err), 0);
    ferry_key_free(k);
}

static void test_foreign_keys(const char *dir)
{
    struct ferry_error err;
    struct ferry_key *k = NULL;
    char p[600];

    /* A key made by openssl, PKCS#8 and traditional form. */
    snprintf(p, sizeof(p), "%s/ossl.pem", dir);
    ASSERT_EQ(sh("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out '%s' "
                 "2>/dev/null && chmod 600 '%s' && openssl pkey -in '%s' -pubout -out '%s.pub'",
                 p, p, p, p),
              0);
    ASSERT_EQ(ferry_key_load_private(p, &k, &err), 0);
    snprintf(p, sizeof(p), "%s/ossl.pem.pub", dir);
    ASSERT_STR(ferry_key_fingerprint(k), openssl_fpr(p));
    ferry_key_free(k);
    snprintf(p, sizeof(p), "%s/trad.pem", dir);
    ASSERT_EQ(sh("openssl rsa -in '%s/ossl.pem' -traditional -out '%s' 2>/dev/null && chmod 600 "
                 "'%s' && head -1 '%s'",
                 dir, p, p, p),
              0);
    ASSERT_STR(out, "-----BEGIN RSA PRIVATE KEY-----");
    ASSERT_EQ(ferry_key_load_private(p, &k, &err), 0);
    ferry_key_free(k);

    /* Too small, not RSA, encrypted, garbage, missing, a directory, too big. */
    snprintf(p, sizeof(p), "%s/small.pem", dir);
    ASSERT_EQ(sh("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out '%s' "
                 "2>/dev/null && chmod 600 '%s'",
                 p, p),
              0);
    ASSERT_EQ(ferry_key_load_private(p, &k, &err), FERRY_ECONFIG);
    ASSERT(strstr(err.msg, "1024-bit") != NULL);
    snprintf(p, sizeof(p), "%s/ec.pem", dir);
    ASSERT_EQ(sh("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out '%s' "
                 "2>/dev/null && chmod 600 '%s'",
                 p, p),
              0);
    ASSERT_EQ(ferry_key_load_private(p, &k, &err), FERRY_ECONFIG);
    ASSERT(strstr(err.msg, "not an RSA key") != NULL);
    snprintf(p, sizeof(p), "%s/enc.pem", dir);
    ASSERT_EQ(sh("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -aes256 -pass "
                 "pass:secret -out '%s' 2>/dev/null && chmod 600 '%s'",
                 p, p),
              0);
    ASSERT_EQ(ferry_key_load_private(p, &k, &err), FERRY_ECONFIG);
    ASSERT(strstr(err.msg, "is encrypted") != NULL);
    snprintf(p, sizeof(p), "%s/garbage.pem", dir);
    put_file(p, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
             strlen("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"));
    ASSERT_EQ(sh("chmod 600 '%s'", p), 0);
    ASSERT_EQ(ferry_key_load_private(p, &k, &err), FERRY_ECONFIG);
    ASSERT(strstr(err.msg, "cannot read private key") != NULL);
    ASSERT_EQ(ferry_key_load_public(p, &k, &err), FERRY_ECONFIG);
    snprintf(p, sizeof(p), "%s/missing.pem", dir);
    ASSERT_EQ(ferry_key_load_private(p, &k, &err), FERRY_ECONFIG);
    ASSERT(strstr(err.msg, "No such file") != NULL);
    ASSERT_EQ(ferry_key_load_public(dir, &k, &err), FERRY_ECONFIG);
    ASSERT(strstr(err.msg, "not a regular file") != NULL);
    snprintf(p, sizeof(p), "%s/big.pem", dir);
    ASSERT_EQ(sh("head -c 70000 /dev/zero > '%s'", p), 0);
    ASSERT_EQ(ferry_key_load_public(p, &k, &err), FERRY_ECONFIG);
    ASSERT(strstr(err.msg, "too large") != NULL);
    /* A private key file is not a public key file. */
    snprintf(p, sizeof(p), "%s/ossl.pem", dir);
    ASSERT_EQ(ferry_key_load_public(p, &k, &err), FERRY_ECONFIG);
    ASSERT(k == NULL);
}

static void test_spki(const char *dir)
{
    struct ferry_error err;
    struct ferry_key *pub = NULL;
    struct ferry_key *k = NULL;
    struct ferry_key *d = NULL;
    struct ferry_buf b;
    unsigned char der[4096];
    size_t n;
    char p[600];

    snprintf(p, sizeof(p), "%s/id.pub", dir);
    ASSERT_EQ(ferry_key_load_public(p, &pub, &err), 0);
    snprintf(p, sizeof(p), "%s/id.der", dir);
    ASSERT_EQ(sh("openssl pkey -pubin -in '%s/id.pub' -outform DER -out '%s'", dir, p), 0);
    n = get_file(p, der, sizeof(der));
    ASSERT(n > 256);
    /* ferry's DER is byte for byte openssl's. */
    ferry_buf_init(&b, 4096);
    ASSERT_EQ(ferry_key_spki(pub, &b, &err), 0);
    ASSERT_EQ(b.len, n);
    ASSERT(memcmp(b.data, der, n) == 0);
    ferry_buf_release(&b);
    ASSERT_EQ(ferry_key_from_spki(der, n, &k, &err), 0);
    ASSERT_STR(ferry_key_fingerprint(k), ferry_key_fingerprint(pub));
    ASSERT_EQ(ferry_key_dup(k, &d, &err), 0);
    ferry_key_free(k);
    ASSERT_STR(ferry_key_fingerprint(d), ferry_key_fingerprint(pub));
    ferry_key_free(d);
    /* Truncated, trailing byte, garbage, empty. */
    for (size_t cut = 0; cut < n; cut += 7) {
        ASSERT_EQ(ferry_key_from_spki(der, cut, &k, &err), FERRY_EPROTO);
        ASSERT(k == NULL);
    }
    der[n] = 0;
    ASSERT_EQ(ferry_key_from_spki(der, n + 1, &k, &err), FERRY_EPROTO);
    ASSERT(strstr(err.msg, "trailing") != NULL);
    memset(der, 'x', 300);
    ASSERT_EQ(ferry_key_from_spki(der, 300, &k, &err), FERRY_EPROTO);
    ASSERT_EQ(ferry_key_from_spki(der, 5000, &k, &err), FERRY_EPROTO);
    ferry_key_free(pub);
}

static void test_sign(const char *dir)
{
    struct ferry_error err;
    struct ferry_key *k = NULL;
    struct ferry_key *pub = NULL;
    struct ferry_key *other = NULL;
    const char msg[] = "ferry-hs-v1 transcript stand-in";
    unsigned char sig[FERRY_KEY_MAX_BYTES];
    unsigned char sig2[FERRY_KEY_MAX_BYTES];
    size_t siglen = 0;
    size_t n;
    char p[600];

    snprintf(p, sizeof(p), "%s/id", dir);
    ASSERT_EQ(ferry_key_load_private(p, &k, &err), 0);
    snprintf(p, sizeof(p), "%s/id.pub", dir);
    ASSERT_EQ(ferry_key_load_public(p, &pub, &err), 0);
    ASSERT_EQ(ferry_key_sign(k, msg, strlen(msg), sig, sizeof(sig), &siglen, &err), 0);
    ASSERT_EQ(siglen, 256);
    ASSERT_EQ(ferry_key_verify(pub, msg, strlen(msg), sig, siglen, &err), 0);
    /* PSS is randomised: a second signature differs and verifies too. */
    ASSERT_EQ(ferry_key_sign(k, msg, strlen(msg), sig2, sizeof(sig2), &n, &err), 0);
    ASSERT(memcmp(sig, sig2, siglen) != 0);
    ASSERT_EQ(ferry_key_verify(pub, msg, strlen(msg), sig2, n, &err), 0);

    /* openssl verifies ferry's signature as PSS-SHA-256 with a 32-byte salt, not 20. */
    snprintf(p, sizeof(p), "%s/msg", dir);
    put_file(p, msg, strlen(msg));
    snprintf(p, sizeof(p), "%s/sig", dir);
    put_file(p, sig, siglen);
    ASSERT_EQ(sh("openssl pkeyutl -verify -pubin -inkey '%s/id.pub' -rawin -digest sha256 -in "
                 "'%s/msg' -sigfile '%s/sig' -pkeyopt rsa_padding_mode:pss -pkeyopt "
                 "rsa_pss_saltlen:32 -pkeyopt rsa_mgf1_md:sha256",
                 dir, dir, dir),
              0);
    ASSERT_STR(out, "Signature Verified Successfully");
    ASSERT(sh("openssl pkeyutl -verify -pubin -inkey '%s/id.pub' -rawin -digest sha256 -in "
              "'%s/msg' -sigfile '%s/sig' -pkeyopt rsa_padding_mode:pss -pkeyopt "
              "rsa_pss_saltlen:20 2>/dev/null",
              dir, dir, dir) != 0);

    /* ferry verifies openssl's PSS signature, and refuses a 20-byte salt. */
    ASSERT_EQ(sh("openssl dgst -sha256 -sign '%s/id' -sigopt rsa_padding_mode:pss -sigopt "
                 "rsa_pss_saltlen:32 -out '%s/osig' '%s/msg'",
                 dir, dir, dir),
              0);
    snprintf(p, sizeof(p), "%s/osig", dir);
    n = get_file(p, sig2, sizeof(sig2));
    ASSERT_EQ(ferry_key_verify(pub, msg, strlen(msg), sig2, n, &err), 0);
    ASSERT_EQ(sh("openssl dgst -sha256 -sign '%s/id' -sigopt rsa_padding_mode:pss -sigopt "
                 "rsa_pss_saltlen:20 -out '%s/osig20' '%s/msg'",
                 dir, dir, dir),
              0);
    snprintf(p, sizeof(p), "%s/osig20", dir);
    n = get_file(p, sig2, sizeof(sig2));
    ASSERT_EQ(ferry_key_verify(pub, msg, strlen(msg), sig2, n, &err), FERRY_EAUTH);
    /* Nor PKCS#1 v1.5. */
    ASSERT_EQ(sh("openssl dgst -sha256 -sign '%s/id' -out '%s/osig15' '%s/msg'", dir, dir, dir), 0);
    snprintf(p, sizeof(p), "%s/osig15", dir);
    n = get_file(p, sig2, sizeof(sig2));
    ASSERT_EQ(ferry_key_verify(pub, msg, strlen(msg), sig2, n, &err), FERRY_EAUTH);

    /* Every single-bit flip, another message, another key, a wrong length. */
    for (size_t bit = 0; bit < siglen * 8; bit += 61) {
        sig[bit / 8] ^= (unsigned char)(1u << (bit % 8));
        ASSERT_EQ(ferry_key_verify(pub, msg, strlen(msg), sig, siglen, &err), FERRY_EAUTH);
        ASSERT(strstr(err.msg, "bad signature") != NULL);
        sig[bit / 8] ^= (unsigned char)(1u << (bit % 8));
    }
    ASSERT_EQ(ferry_key_verify(pub, msg, strlen(msg), sig, siglen, &err), 0);
    ASSERT_EQ(ferry_key_verify(pub, msg, strlen(msg) - 1, sig, siglen, &err), FERRY_EAUTH);
    ASSERT_EQ(ferry_key_verify(pub, msg, strlen(msg), sig, siglen - 1, &err), FERRY_EAUTH);
    ASSERT_EQ(ferry_key_verify(pub, msg, strlen(msg), sig, 0, &err), FERRY_EAUTH);
    ASSERT_EQ(ferry_key_generate(2048, &other, &err), 0);
    ASSERT_EQ(ferry_key_verify(other, msg, strlen(msg), sig, siglen, &err), FERRY_EAUTH);
    /* Signing needs the private half and room for the signature. */
    ASSERT_EQ(ferry_key_sign(pub, msg, 3, sig, sizeof(sig), &n, &err), FERRY_EINTERNAL);
    ASSERT_EQ(ferry_key_sign(k, msg, 3, sig, 255, &n, &err), FERRY_EINTERNAL);

    ferry_key_free(other);
    ferry_key_free(pub);
    ferry_key_free(k);
}

static void test_wrap(const char *dir)
{
    struct ferry_error err;
    struct ferry_key *k = NULL;
    struct ferry_key *pub = NULL;
    struct ferry_key *other = NULL;
    unsigned char secret[32];
    unsigned char ct[FERRY_KEY_MAX_BYTES];
    unsigned char pt[64];
    size_t ctlen = 0;
    size_t ptlen = 0;
    char p[600];

    snprintf(p, sizeof(p), "%s/id", dir);
    ASSERT_EQ(ferry_key_load_private(p, &k, &err), 0);
    snprintf(p, sizeof(p), "%s/id.pub", dir);
    ASSERT_EQ(ferry_key_load_public(p, &pub, &err), 0);
    ASSERT_EQ(ferry_random(secret, sizeof(secret), &err), 0);

    /* ferry wraps, openssl unwraps with OAEP-SHA-256/MGF1-SHA-256. */
    ASSERT_EQ(ferry_key_encrypt(pub, secret, sizeof(secret), ct, sizeof(ct), &ctlen, &err), 0);
    ASSERT_EQ(ctlen, 256);
    snprintf(p, sizeof(p), "%s/ct", dir);
    put_file(p, ct, ctlen);
    ASSERT_EQ(sh("openssl pkeyutl -decrypt -inkey '%s/id' -in '%s/ct' -pkeyopt "
                 "rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256 "
                 "| od -An -v -tx1 | tr -d ' \\n'",
                 dir, dir),
              0);
    ASSERT_STR(out, hex(secret, sizeof(secret)));
    ASSERT_EQ(ferry_key_decrypt(k, ct, ctlen, pt, sizeof(pt), &ptlen, &err), 0);
    ASSERT_EQ(ptlen, 32);
    ASSERT(memcmp(pt, secret, 32) == 0);

    /* openssl wraps, ferry unwraps. */
    snprintf(p, sizeof(p), "%s/pt", dir);
    put_file(p, "thirty-two bytes of test secret!", 32);
    ASSERT_EQ(sh("openssl pkeyutl -encrypt -pubin -inkey '%s/id.pub' -in '%s/pt' -out '%s/ct2' "
                 "-pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 -pkeyopt "
                 "rsa_mgf1_md:sha256",
                 dir, dir, dir),
              0);
    snprintf(p, sizeof(p), "%s/ct2", dir);
    ctlen = get_file(p, ct, sizeof(ct));
    ASSERT_EQ(ferry_key_decrypt(k, ct, ctlen, pt, sizeof(pt), &ptlen, &err), 0);
    ASSERT_EQ(ptlen, 32);
    ASSERT(memcmp(pt, "thirty-two bytes of test secret!", 32) == 0);
    /* Too small an output buffer is a refusal, not an overflow. */
    ASSERT_EQ(ferry_key_decrypt(k, ct, ctlen, pt, 31, &ptlen, &err), FERRY_EAUTH);

    /* OAEP with SHA-1 (openssl's default) is not accepted. */
    ASSERT_EQ(sh("openssl pkeyutl -encrypt -pubin -inkey '%s/id.pub' -in '%s/pt' -out '%s/ct1' "
                 "-pkeyopt rsa_padding_mode:oaep",
                 dir, dir, dir),
              0);
    snprintf(p, sizeof(p), "%s/ct1", dir);
    ctlen = get_file(p, ct, sizeof(ct));
    ASSERT_EQ(ferry_key_decrypt(k, ct, ctlen, pt, sizeof(pt), &ptlen, &err), FERRY_EAUTH);

    /* Tampered, truncated, the wrong key. */
    ASSERT_EQ(ferry_key_encrypt(pub, secret, sizeof(secret), ct, sizeof(ct), &ctlen, &err), 0);
    ct[100] ^= 1;
    ASSERT_EQ(ferry_key_decrypt(k, ct, ctlen, pt, sizeof(pt), &ptlen, &err), FERRY_EAUTH);
    ct[100] ^= 1;
    ASSERT_EQ(ferry_key_decrypt(k, ct, ctlen - 1, pt, sizeof(pt), &ptlen, &err), FERRY_EAUTH);
    ASSERT_EQ(ferry_key_generate(2048, &other, &err), 0);
    ASSERT_EQ(ferry_key_decrypt(other, ct, ctlen, pt, sizeof(pt), &ptlen, &err), FERRY_EAUTH);
    ASSERT(strstr(err.msg, "cannot unwrap") != NULL);
    /* Decrypting needs the private half; a plaintext too long for OAEP is refused. */
    ASSERT_EQ(ferry_key_decrypt(pub, ct, ctlen, pt, sizeof(pt), &ptlen, &err), FERRY_EINTERNAL);
    ASSERT_EQ(ferry_key_encrypt(pub, ct, 256 - 65, ct, sizeof(ct), &ctlen, &err), FERRY_EINTERNAL);

    ferry_key_free(other);
    ferry_key_free(pub);
    ferry_key_free(k);
}

static void test_hashes(void)
{
    struct ferry_error err;
    unsigned char md[32];
    unsigned char key20[20];
    struct ferry_bytes parts[3] = {{"a", 1}, {"", 0}, {"bc", 2}};
    struct ferry_bytes jefe = {"what do ya want for nothing?", 28};
    struct ferry_bytes jefe_split[2] = {{"what do ya want ", 16}, {"for nothing?", 12}};
    struct ferry_bytes hi = {"Hi There", 8};

    /* FIPS 180-2 example. */
    ASSERT_EQ(ferry_sha256("abc", 3, md, &err), 0);
    ASSERT_STR(hex(md, 32), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    ASSERT_EQ(ferry_sha256_parts(parts, 3, md, &err), 0);
    ASSERT_STR(hex(md, 32), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    ASSERT_EQ(ferry_sha256("", 0, md, &err), 0);
    ASSERT_STR(hex(md, 32), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");

    /* RFC 4231 test cases 1 and 2. */
    memset(key20, 0x0b, sizeof(key20));
    ASSERT_EQ(ferry_hmac_sha256(key20, sizeof(key20), &hi, 1, md, &err), 0);
    ASSERT_STR(hex(md, 32), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    ASSERT_EQ(ferry_hmac_sha256("Jefe", 4, &jefe, 1, md, &err), 0);
    ASSERT_STR(hex(md, 32), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    ASSERT_EQ(ferry_hmac_sha256("Jefe", 4, jefe_split, 2, md, &err), 0);
    ASSERT_STR(hex(md, 32), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    ASSERT_EQ(ferry_hmac_sha256("", 0, &jefe, 1, md, &err), FERRY_EINTERNAL);

    ASSERT(ferry_ct_equal("abcd", "abcd", 4));
    ASSERT(!ferry_ct_equal("abcd", "abce", 4));
    ASSERT(!ferry_ct_equal("xbcd", "abcd", 4));
    ASSERT(ferry_ct_equal("a", "b", 0));
}

static void test_random(void)
{
    struct ferry_error err;
    unsigned char a[32] = {0};
    unsigned char b[32] = {0};
    unsigned char zero[32] = {0};

    ASSERT_EQ(ferry_random(a, sizeof(a), &err), 0);
    ASSERT_EQ(ferry_random(b, sizeof(b), &err), 0);
    ASSERT(memcmp(a, b, 32) != 0);
    ASSERT(memcmp(a, zero, 32) != 0);
    ferry_cleanse(a, sizeof(a));
    ASSERT(memcmp(a, zero, 32) == 0);
}

static void b64_roundtrip(const char *plain, const char *padded)
{
    struct ferry_error err;
    struct ferry_buf b;
    unsigned char dec[64];
    size_t n = 99;
    size_t unpadded = strlen(padded);

    while (unpadded > 0 && padded[unpadded - 1] == '=')
        unpadded--;
    ferry_buf_init(&b, 1024);
    ASSERT_EQ(ferry_base64_encode(plain, strlen(plain), 1, &b, &err), 0);
    ASSERT_STR(b.len ? b.data : "", padded);
    ferry_buf_reset(&b);
    ASSERT_EQ(ferry_base64_encode(plain, strlen(plain), 0, &b, &err), 0);
    ASSERT_EQ(b.len, unpadded);
    ASSERT(memcmp(b.len ? b.data : "", padded, unpadded) == 0);
    ferry_buf_release(&b);
    ASSERT_EQ(ferry_base64_decode(padded, strlen(padded), dec, sizeof(dec), &n, &err), 0);
    ASSERT_EQ(n, strlen(plain));
    ASSERT(memcmp(dec, plain, n) == 0);
    ASSERT_EQ(ferry_base64_decode(padded, unpadded, dec, sizeof(dec), &n, &err), 0);
    ASSERT_EQ(n, strlen(plain));
    ASSERT(memcmp(dec, plain, n) == 0);
}

static void test_base64(const char *dir)
{
    static const char *bad[] = {"Zg=",   "Z",        "Zh==",    "Zm9=",     "Zm9v\n",
                                "Zm 9v", "Zm9v====", "=Zm9",    "Zg==Zg==", "Zm9v-_",
                                "Zm9v=", "Zg===",    "Zm8=Zm8="};
    struct ferry_error err;
    struct ferry_buf b;
    unsigned char data[1000];
    unsigned char dec[1000];
    size_t n;
    char p[600];

    /* RFC 4648 section 10. */
    b64_roundtrip("", "");
    b64_roundtrip("f", "Zg==");
    b64_roundtrip("fo", "Zm8=");
    b64_roundtrip("foo", "Zm9v");
    b64_roundtrip("foob", "Zm9vYg==");
    b64_roundtrip("fooba", "Zm9vYmE=");
    b64_roundtrip("foobar", "Zm9vYmFy");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ASSERT_EQ(ferry_base64_decode(bad[i], strlen(bad[i]), dec, sizeof(dec), &n, &err),
                  FERRY_EPROTO);
    }
    ASSERT_EQ(ferry_base64_decode("Zm9vYmFy", 8, dec, 5, &n, &err), FERRY_ETOOBIG);

    /* Longer than one internal chunk, against coreutils base64. */
    ASSERT_EQ(ferry_random(data, sizeof(data), &err), 0);
    snprintf(p, sizeof(p), "%s/rand", dir);
    put_file(p, data, sizeof(data));
    ASSERT_EQ(sh("base64 -w0 '%s'", p), 0);
    ferry_buf_init(&b, 4096);
    ASSERT_EQ(ferry_base64_encode(data, sizeof(data), 1, &b, &err), 0);
    ASSERT_STR(b.data, out);
    ASSERT_EQ(ferry_base64_decode(b.data, b.len, dec, sizeof(dec), &n, &err), 0);
    ASSERT_EQ(n, sizeof(data));
    ASSERT(memcmp(dec, data, n) == 0);
    ferry_buf_release(&b);
}

static void test_hex(void)
{
    struct ferry_error err;
    unsigned char b[4];
    char h[9];

    ferry_hex_encode("\x00\x9f\xa0\xff", 4, h);
    ASSERT_STR(h, "009fa0ff");
    ASSERT_EQ(ferry_hex_decode("009fa0ff", 8, b, 4, &err), 0);
    ASSERT(memcmp(b, "\x00\x9f\xa0\xff", 4) == 0);
    ASSERT_EQ(ferry_hex_decode("009FA0FF", 8, b, 4, &err), FERRY_EPROTO);
    ASSERT_EQ(ferry_hex_decode("009fa0f", 7, b, 4, &err), FERRY_EPROTO);
    ASSERT_EQ(ferry_hex_decode("009fa0ffee", 10, b, 4, &err), FERRY_EPROTO);
    ASSERT_EQ(ferry_hex_decode("009fa0fg", 8, b, 4, &err), FERRY_EPROTO);
    ASSERT_EQ(ferry_hex_decode("0x9fa0ff", 8, b, 4, &err), FERRY_EPROTO);
}

int main(void)
{
    const char *dir = test_tmpdir("crypto");

    test_keygen_files(dir);
    test_private_modes(dir);
    test_foreign_keys(dir);
    test_spki(dir);
    test_sign(dir);
    test_wrap(dir);
    test_hashes();
    test_random();
    test_base64(dir);
    test_hex();
    /* again with OpenSSL set up as the agents set it up: the fetched SHA-256 and HMAC */
    ferry_crypto_init();
    ferry_crypto_init(); /* twice is harmless */
    test_hashes();
    test_sign(dir);
    test_wrap(dir);
    {
        char again[4096];

        snprintf(again, sizeof(again), "%s/again", dir);
        ASSERT_EQ(mkdir(again, 0700), 0);
        test_keygen_files(again);
    }
    return TEST_DONE();
}
