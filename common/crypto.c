/* crypto.c - RSA keys, RSA-PSS, RSA-OAEP, SHA-256, HMAC on OpenSSL 3 (EVP only). */

/* Refuse, at compile time, any API OpenSSL 3.0 deprecated (the RSA_* family). */
#define OPENSSL_API_COMPAT 30000
#define OPENSSL_NO_DEPRECATED

#include "crypto.h"

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A PEM RSA key of 8192 bits is about 6.5 KiB; anything far larger is not a key. */
#define KEY_FILE_MAX (64 * 1024)
/* SubjectPublicKeyInfo of the largest allowed key, with room for the ASN.1 framing. */
#define SPKI_MAX (FERRY_KEY_MAX_BYTES + 64)
/* Longest OAEP-SHA-256 plaintext for a key of n bytes: n - 2 * 32 - 2. */
#define OAEP_OVERHEAD (2 * FERRY_SHA256_LEN + 2)

struct ferry_key {
    EVP_PKEY *pkey;
    int priv;
    char fpr[FERRY_FPR_SIZE];
};

/*
 * Fill err with "what: <OpenSSL's reason>" and empty OpenSSL's error queue.
 * The first queued error is the root cause; the rest are the call chain.
 */
static int ossl_error(struct ferry_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int ossl_error(struct ferry_error *err, int code, const char *fmt, ...)
{
    char what[FERRY_ERRMSG_MAX];
    char detail[160];
    unsigned long e = ERR_get_error();
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    ERR_clear_error();
    if (!e)
        return ferry_error_set(err, code, "%s", what);
    if (ERR_reason_error_string(e))
        snprintf(detail, sizeof(detail), "%s", ERR_reason_error_string(e));
    else
        ERR_error_string_n(e, detail, sizeof(detail));
    return ferry_error_set(err, code, "%s: %s", what, detail);
}

static int fingerprint(EVP_PKEY *pkey, char out[FERRY_FPR_SIZE], struct ferry_error *err)
{
    unsigned char *der = NULL;
    unsigned char md[FERRY_SHA256_LEN];
    unsigned char b64[4 * ((FERRY_SHA256_LEN + 2) / 3) + 1];
    int len;
    int rc;

    len = i2d_PUBKEY(pkey, &der);
    if (len <= 0) {
        rc = ossl_error(err, FERRY_EINTERNAL, "cannot encode public key");
        goto out;
    }
    rc = ferry_sha256(der, (size_t)len, md, err);
    if (rc)
        goto out;
    EVP_EncodeBlock(b64, md, FERRY_SHA256_LEN);
    /* 32 bytes encode to 43 characters and one '=' that ssh-style fingerprints drop. */
    snprintf(out, FERRY_FPR_SIZE, "SHA256:%.43s", (const char *)b64);
out:
    OPENSSL_free(der);
    return rc;
}

/*
 * Wrap pkey (ownership passes to this function, even on failure) after
 * checking it is an RSA key of an allowed size. code is the error to report
 * for a key that does not qualify; what names where it came from.
 */
static int wrap_key(EVP_PKEY *pkey, int priv, int code, const char *what, struct ferry_key **out,
                    struct ferry_error *err)
{
    struct ferry_key *k = NULL;
    int bits;
    int rc;

    *out = NULL;
    if (!EVP_PKEY_is_a(pkey, "RSA")) {
        rc = ferry_error_set(err, code, "%s is not an RSA key (%s)", what,
                             EVP_PKEY_get0_type_name(pkey) ? EVP_PKEY_get0_type_name(pkey)
                                                           : "unknown type");
        goto out;
    }
    bits = EVP_PKEY_get_bits(pkey);
    if (bits < FERRY_KEY_BITS_MIN || bits > FERRY_KEY_BITS_MAX) {
        rc = ferry_error_set(err, code, "%s is a %d-bit RSA key; ferry accepts %d to %d bits", what,
                             bits, FERRY_KEY_BITS_MIN, FERRY_KEY_BITS_MAX);
        goto out;
    }
    k = calloc(1, sizeof(*k));
    if (!k) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        goto out;
    }
    rc = fingerprint(pkey, k->fpr, err);
    if (rc)
        goto out;
    k->pkey = pkey;
    k->priv = priv;
    pkey = NULL;
    *out = k;
    k = NULL;
out:
    EVP_PKEY_free(pkey);
    free(k);
    return rc;
}

int ferry_key_generate(unsigned bits, struct ferry_key **out, struct ferry_error *err)
{
    EVP_PKEY_CTX *ctx = NULL;
    EVP_PKEY *pkey = NULL;
    int rc;

    *out = NULL;
    if (bits == 0)
        bits = FERRY_KEY_BITS_DEFAULT;
    if (bits < FERRY_KEY_BITS_MIN || bits > FERRY_KEY_BITS_MAX) {
        rc = ferry_error_set(err, FERRY_EUSAGE, "key size %u bits: choose %d to %d", bits,
                             FERRY_KEY_BITS_MIN, FERRY_KEY_BITS_MAX);
        goto out;
    }
    ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    if (!ctx || EVP_PKEY_keygen_init(ctx) != 1 ||
        EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, (int)bits) != 1 ||
        EVP_PKEY_generate(ctx, &pkey) != 1) {
        rc = ossl_error(err, FERRY_EINTERNAL, "cannot generate a %u-bit RSA key", bits);
        goto out;
    }
    rc = wrap_key(pkey, 1, FERRY_EINTERNAL, "generated key", out, err);
    pkey = NULL;
out:
    EVP_PKEY_free(pkey);
    EVP_PKEY_CTX_free(ctx);
    return rc;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int io_code(int e)
{
    return e == ENOSPC || e == EDQUOT ? FERRY_ENOSPC : FERRY_EIO;
}

/* fsync the directory holding path, so a newly created entry survives a crash. */
static int sync_parent(const char *path, struct ferry_error *err)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    int fd;
    int rc = FERRY_OK;

    if (!slash)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == path)
        snprintf(dir, sizeof(dir), "/");
    else
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return ferry_error_set(err, FERRY_EIO, "cannot open directory %s: %s", dir,
                               strerror(errno));
    if (fsync(fd) != 0)
        rc = ferry_error_set(err, io_code(errno), "cannot sync directory %s: %s", dir,
                             strerror(errno));
    close(fd);
    return rc;
}

/* Create path exclusively with mode, write data, fsync. The file is removed on failure. */
static int create_file(const char *path, mode_t mode, const char *data, size_t len,
                       struct ferry_error *err)
{
    int fd;
    int rc = FERRY_OK;

    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, mode);
    if (fd < 0 && errno == EEXIST)
        return ferry_error_set(err, FERRY_ECONFIG, "%s exists; remove it or choose another --out",
                               path);
    if (fd < 0)
        return ferry_error_set(err, FERRY_ECONFIG, "cannot create %s: %s", path, strerror(errno));
    /* The umask may only have narrowed mode; set it exactly. */
    if (fchmod(fd, mode) != 0 || write_all(fd, data, len) != 0 || fsync(fd) != 0) {
        rc = ferry_error_set(err, io_code(errno), "cannot write %s: %s", path, strerror(errno));
        close(fd);
        goto out;
    }
    if (close(fd) != 0)
        rc = ferry_error_set(err, io_code(errno), "cannot write %s: %s", path, strerror(errno));
out:
    if (rc)
        unlink(path);
    return rc;
}

int ferry_key_save(const struct ferry_key *k, const char *path, struct ferry_error *err)
{
    char pubpath[PATH_MAX];
    BIO *priv = NULL;
    BIO *pub = NULL;
    char *privpem;
    char *pubpem;
    long privlen;
    long publen;
    int created = 0;
    int rc;

    if (!k->priv) {
        rc = ferry_error_set(err, FERRY_EUSAGE, "cannot save %s: no private key", path);
        goto out;
    }
    if ((size_t)snprintf(pubpath, sizeof(pubpath), "%s.pub", path) >= sizeof(pubpath)) {
        rc = ferry_error_set(err, FERRY_ECONFIG, "path too long: %s", path);
        goto out;
    }
    /* Encode both first, so an encoding failure leaves no file behind. */
    priv = BIO_new(BIO_s_secmem());
    pub = BIO_new(BIO_s_mem());
    if (!priv || !pub || PEM_write_bio_PrivateKey(priv, k->pkey, NULL, NULL, 0, NULL, NULL) != 1 ||
        PEM_write_bio_PUBKEY(pub, k->pkey) != 1) {
        rc = ossl_error(err, FERRY_EINTERNAL, "cannot encode key for %s", path);
        goto out;
    }
    privlen = BIO_get_mem_data(priv, &privpem);
    publen = BIO_get_mem_data(pub, &pubpem);
    rc = create_file(path, 0600, privpem, (size_t)privlen, err);
    if (rc)
        goto out;
    created = 1;
    rc = create_file(pubpath, 0644, pubpem, (size_t)publen, err);
    if (rc)
        goto out;
    rc = sync_parent(path, err);
    if (rc)
        unlink(pubpath);
out:
    if (rc && created)
        unlink(path);
    BIO_free(priv);
    BIO_free(pub);
    return rc;
}

/*
 * Read a key file of at most KEY_FILE_MAX bytes into *data (owned by the
 * caller: wipe with OPENSSL_cleanse, then free). A private key file must not
 * be accessible to group or others.
 */
static int read_key_file(const char *path, int priv, char **data, size_t *len,
                         struct ferry_error *err)
{
    struct stat st;
    char *p = NULL;
    size_t got = 0;
    int fd;
    int rc = FERRY_OK;

    *data = NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return ferry_error_set(err, FERRY_ECONFIG, "cannot open %s key %s: %s",
                               priv ? "private" : "public", path, strerror(errno));
    if (fstat(fd, &st) != 0) {
        rc = ferry_error_set(err, FERRY_ECONFIG, "cannot stat %s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = ferry_error_set(err, FERRY_ECONFIG, "%s is not a regular file", path);
        goto out;
    }
    if (priv && (st.st_mode & 077)) {
        rc = ferry_error_set(err, FERRY_ECONFIG,
                             "private key %s is readable by others; run chmod 600 %s", path, path);
        goto out;
    }
    if (st.st_size > KEY_FILE_MAX) {
        rc = ferry_error_set(err, FERRY_ECONFIG, "%s is %lld bytes, too large for a key file", path,
                             (long long)st.st_size);
        goto out;
    }
    /* One allocation of the final size: no realloc leaves key bytes behind. */
    p = malloc((size_t)st.st_size + 1);
    if (!p) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        goto out;
    }
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, p + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = ferry_error_set(err, FERRY_ECONFIG, "cannot read %s: %s", path, strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    p[got] = '\0';
    *data = p;
    *len = got;
    p = NULL;
out:
    if (p) {
        OPENSSL_cleanse(p, (size_t)st.st_size + 1);
        free(p);
    }
    close(fd);
    return rc;
}

/* Never prompt on the terminal for a passphrase: encrypted keys are refused. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

static int load_key(const char *path, int priv, struct ferry_key **out, struct ferry_error *err)
{
    char *data = NULL;
    size_t len = 0;
    BIO *bio = NULL;
    EVP_PKEY *pkey = NULL;
    int rc;

    *out = NULL;
    rc = read_key_file(path, priv, &data, &len, err);
    if (rc)
        goto out;
    bio = BIO_new_mem_buf(data, (int)len);
    if (!bio) {
        rc = ossl_error(err, FERRY_ENOMEM, "cannot read %s", path);
        goto out;
    }
    if (priv)
        pkey = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
    else
        pkey = PEM_read_bio_PUBKEY(bio, NULL, no_passphrase, NULL);
    if (!pkey && priv && strstr(data, "ENCRYPTED")) {
        ERR_clear_error();
        rc = ferry_error_set(err, FERRY_ECONFIG,
                             "private key %s is encrypted; ferry needs an unencrypted key "
                             "protected by its file mode",
                             path);
        goto out;
    }
    if (!pkey) {
        rc = ossl_error(err, FERRY_ECONFIG, "cannot read %s key %s (expected PEM%s)",
                        priv ? "private" : "public", path, priv ? "" : " BEGIN PUBLIC KEY");
        goto out;
    }
    rc = wrap_key(pkey, priv, FERRY_ECONFIG, path, out, err);
    pkey = NULL;
out:
    EVP_PKEY_free(pkey);
    BIO_free(bio);
    if (data) {
        OPENSSL_cleanse(data, len);
        free(data);
    }
    return rc;
}

int ferry_key_load_private(const char *path, struct ferry_key **out, struct ferry_error *err)
{
    return load_key(path, 1, out, err);
}

int ferry_key_load_public(const char *path, struct ferry_key **out, struct ferry_error *err)
{
    return load_key(path, 0, out, err);
}

int ferry_key_file_digest(const char *path, int priv, unsigned char out[FERRY_SHA256_LEN],
                          struct ferry_error *err)
{
    char *data = NULL;
    size_t len = 0;
    int rc;

    rc = read_key_file(path, priv, &data, &len, err);
    if (rc)
        return rc;
    rc = ferry_sha256(data, len, out, err);
    OPENSSL_cleanse(data, len + 1);
    free(data);
    return rc;
}

int ferry_key_from_spki(const void *der, size_t len, struct ferry_key **out,
                        struct ferry_error *err)
{
    const unsigned char *p = der;
    EVP_PKEY *pkey = NULL;
    int rc;

    *out = NULL;
    if (len == 0 || len > SPKI_MAX) {
        rc = ferry_error_set(err, FERRY_EPROTO, "public key of %zu bytes: not a ferry key", len);
        goto out;
    }
    pkey = d2i_PUBKEY(NULL, &p, (long)len);
    if (!pkey) {
        rc = ossl_error(err, FERRY_EPROTO, "malformed public key");
        goto out;
    }
    if (p != (const unsigned char *)der + len) {
        rc = ferry_error_set(err, FERRY_EPROTO, "malformed public key: trailing bytes");
        goto out;
    }
    rc = wrap_key(pkey, 0, FERRY_EPROTO, "public key", out, err);
    pkey = NULL;
out:
    EVP_PKEY_free(pkey);
    return rc;
}

int ferry_key_spki(const struct ferry_key *k, struct ferry_buf *out, struct ferry_error *err)
{
    unsigned char *der = NULL;
    int len;
    int rc;

    len = i2d_PUBKEY(k->pkey, &der);
    if (len <= 0) {
        rc = ossl_error(err, FERRY_EINTERNAL, "cannot encode public key");
        goto out;
    }
    rc = ferry_buf_add(out, der, (size_t)len);
    if (rc)
        ferry_error_set(err, rc, "cannot hold public key: %s", ferry_strerror(rc));
out:
    OPENSSL_free(der);
    return rc;
}

const char *ferry_key_fingerprint(const struct ferry_key *k)
{
    return k->fpr;
}

int ferry_key_fingerprint_ok(const char *s, size_t n)
{
    unsigned char md[FERRY_SHA256_LEN];
    size_t got;

    if (n != FERRY_FPR_LEN || memcmp(s, "SHA256:", 7) != 0)
        return 0;
    return ferry_base64_decode(s + 7, n - 7, md, sizeof(md), &got, NULL) == FERRY_OK &&
           got == FERRY_SHA256_LEN;
}

int ferry_key_is_private(const struct ferry_key *k)
{
    return k->priv;
}

unsigned ferry_key_bits(const struct ferry_key *k)
{
    return (unsigned)EVP_PKEY_get_bits(k->pkey);
}

size_t ferry_key_size(const struct ferry_key *k)
{
    return (size_t)EVP_PKEY_get_size(k->pkey);
}

int ferry_key_dup(const struct ferry_key *k, struct ferry_key **out, struct ferry_error *err)
{
    struct ferry_key *d;

    *out = NULL;
    d = malloc(sizeof(*d));
    if (!d)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
    if (EVP_PKEY_up_ref(k->pkey) != 1) {
        free(d);
        return ossl_error(err, FERRY_EINTERNAL, "cannot reference key");
    }
    *d = *k;
    *out = d;
    return FERRY_OK;
}

void ferry_key_free(struct ferry_key *k)
{
    if (!k)
        return;
    EVP_PKEY_free(k->pkey);
    free(k);
}

/* Set RSA-PSS-SHA-256 with a 32-byte salt on a signing or verifying context. */
static int set_pss(EVP_PKEY_CTX *pctx)
{
    return EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) > 0 &&
           EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) > 0 &&
           EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) > 0;
}

int ferry_key_sign(const struct ferry_key *k, const void *msg, size_t len, unsigned char *sig,
                   size_t sigmax, size_t *siglen, struct ferry_error *err)
{
    EVP_MD_CTX *md = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    size_t n = sigmax;
    int rc = FERRY_OK;

    *siglen = 0;
    if (!k->priv) {
        rc = ferry_error_set(err, FERRY_EINTERNAL, "cannot sign with public key %s", k->fpr);
        goto out;
    }
    if (sigmax < ferry_key_size(k)) {
        rc = ferry_error_set(err, FERRY_EINTERNAL, "signature buffer of %zu bytes, need %zu",
                             sigmax, ferry_key_size(k));
        goto out;
    }
    md = EVP_MD_CTX_new();
    if (!md || EVP_DigestSignInit_ex(md, &pctx, "SHA256", NULL, NULL, k->pkey, NULL) != 1 ||
        !set_pss(pctx) || EVP_DigestSign(md, sig, &n, msg, len) != 1) {
        rc = ossl_error(err, FERRY_EINTERNAL, "cannot sign with key %s", k->fpr);
        goto out;
    }
    *siglen = n;
out:
    EVP_MD_CTX_free(md);
    return rc;
}

int ferry_key_verify(const struct ferry_key *k, const void *msg, size_t len,
                     const unsigned char *sig, size_t siglen, struct ferry_error *err)
{
    EVP_MD_CTX *md = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    int rc = FERRY_OK;

    if (siglen != ferry_key_size(k)) {
        rc = ferry_error_set(err, FERRY_EAUTH, "bad signature: %zu bytes for key %s", siglen,
                             k->fpr);
        goto out;
    }
    md = EVP_MD_CTX_new();
    if (!md || EVP_DigestVerifyInit_ex(md, &pctx, "SHA256", NULL, NULL, k->pkey, NULL) != 1 ||
        !set_pss(pctx)) {
        rc = ossl_error(err, FERRY_EINTERNAL, "cannot verify with key %s", k->fpr);
        goto out;
    }
    /* 0 is a signature that does not match; OpenSSL reports some forms of it as < 0. */
    if (EVP_DigestVerify(md, sig, siglen, msg, len) != 1) {
        ERR_clear_error();
        rc = ferry_error_set(err, FERRY_EAUTH, "bad signature by key %s", k->fpr);
        goto out;
    }
out:
    EVP_MD_CTX_free(md);
    return rc;
}

static EVP_PKEY_CTX *oaep_ctx(const struct ferry_key *k, int encrypt)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, k->pkey, NULL);

    if (!ctx)
        return NULL;
    if ((encrypt ? EVP_PKEY_encrypt_init(ctx) : EVP_PKEY_decrypt_init(ctx)) != 1 ||
        EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) <= 0 ||
        EVP_PKEY_CTX_set_rsa_oaep_md(ctx, EVP_sha256()) <= 0 ||
        EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, EVP_sha256()) <= 0) {
        EVP_PKEY_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

int ferry_key_encrypt(const struct ferry_key *k, const void *in, size_t inlen, unsigned char *out,
                      size_t outmax, size_t *outlen, struct ferry_error *err)
{
    EVP_PKEY_CTX *ctx = NULL;
    size_t n = outmax;
    int rc = FERRY_OK;

    *outlen = 0;
    if (inlen > ferry_key_size(k) - OAEP_OVERHEAD || outmax < ferry_key_size(k)) {
        rc =
            ferry_error_set(err, FERRY_EINTERNAL, "cannot wrap %zu bytes to key %s", inlen, k->fpr);
        goto out;
    }
    ctx = oaep_ctx(k, 1);
    if (!ctx || EVP_PKEY_encrypt(ctx, out, &n, in, inlen) != 1) {
        rc = ossl_error(err, FERRY_EINTERNAL, "cannot wrap secret to key %s", k->fpr);
        goto out;
    }
    *outlen = n;
out:
    EVP_PKEY_CTX_free(ctx);
    return rc;
}

int ferry_key_decrypt(const struct ferry_key *k, const void *in, size_t inlen, unsigned char *out,
                      size_t outmax, size_t *outlen, struct ferry_error *err)
{
    EVP_PKEY_CTX *ctx = NULL;
    unsigned char tmp[FERRY_KEY_MAX_BYTES];
    size_t n = sizeof(tmp);
    int rc = FERRY_OK;

    *outlen = 0;
    if (!k->priv) {
        rc = ferry_error_set(err, FERRY_EINTERNAL, "cannot unwrap with public key %s", k->fpr);
        goto out;
    }
    if (inlen != ferry_key_size(k)) {
        rc = ferry_error_set(err, FERRY_EAUTH, "cannot unwrap secret: %zu bytes for key %s", inlen,
                             k->fpr);
        goto out;
    }
    ctx = oaep_ctx(k, 0);
    if (!ctx) {
        rc = ossl_error(err, FERRY_EINTERNAL, "cannot unwrap with key %s", k->fpr);
        goto out;
    }
    /* Decrypt into a buffer of the modulus size, so a short out never trips OpenSSL. */
    if (EVP_PKEY_decrypt(ctx, tmp, &n, in, inlen) != 1) {
        rc = ossl_error(err, FERRY_EAUTH, "cannot unwrap secret with key %s", k->fpr);
        goto out;
    }
    if (n > outmax) {
        rc = ferry_error_set(err, FERRY_EAUTH, "unwrapped secret of %zu bytes, expected %zu", n,
                             outmax);
        goto out;
    }
    memcpy(out, tmp, n);
    *outlen = n;
out:
    OPENSSL_cleanse(tmp, sizeof(tmp));
    EVP_PKEY_CTX_free(ctx);
    return rc;
}

/*
 * The algorithms ferry hashes with, fetched once by ferry_crypto_init (a
 * digest named through EVP_sha256() is fetched again on every use); NULL
 * before it: fetched on each use then.
 */
static EVP_MD *sha256_md;
static EVP_MAC *hmac_mac;

/*
 * GnuTLS comes into ferry's processes only as a dependency of libldap
 * (libcurl's and libpq's LDAP support) and of librtmp (libcurl's), which
 * ferry never uses and which call gnutls_global_init() themselves before
 * any TLS of theirs. Its library constructor would otherwise set GnuTLS up
 * at load time (its ASN.1 trees, its configuration, its random generator):
 * 0.3-0.5 ms and some 47 page faults of every run, a few per cent of a
 * short delta sync. This is the switch gnutls.h gives applications
 * (GNUTLS_SKIP_GLOBAL_INIT); the agents export it (CMakeLists.txt) so that
 * the library's call finds it.
 */
int _gnutls_global_init_skip(void);
int _gnutls_global_init_skip(void)
{
    return 1;
}

void ferry_crypto_init(void)
{
    /*
     * No tables of every cipher and digest by their legacy names (curl's
     * set-up asks OpenSSL for them; ferry and TLS fetch algorithms from the
     * providers), and no freeing of OpenSSL's memory at exit, which only
     * ends the process later: about a millisecond of a short run.
     */
    OPENSSL_init_crypto(OPENSSL_INIT_NO_ADD_ALL_CIPHERS | OPENSSL_INIT_NO_ADD_ALL_DIGESTS |
                            OPENSSL_INIT_NO_ATEXIT,
                        NULL);
    if (!sha256_md)
        sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (!hmac_mac)
        hmac_mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    ERR_clear_error(); /* a fetch that failed is tried again at each use */
}

int ferry_sha256_parts(const struct ferry_bytes *parts, size_t nparts,
                       unsigned char out[FERRY_SHA256_LEN], struct ferry_error *err)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned int n = 0;
    int rc = FERRY_OK;

    if (!md || EVP_DigestInit_ex(md, sha256_md ? sha256_md : EVP_sha256(), NULL) != 1) {
        rc = ossl_error(err, FERRY_EINTERNAL, "sha-256 unavailable");
        goto out;
    }
    for (size_t i = 0; i < nparts; i++) {
        if (parts[i].n && EVP_DigestUpdate(md, parts[i].p, parts[i].n) != 1) {
            rc = ossl_error(err, FERRY_EINTERNAL, "sha-256 failed");
            goto out;
        }
    }
    if (EVP_DigestFinal_ex(md, out, &n) != 1 || n != FERRY_SHA256_LEN)
        rc = ossl_error(err, FERRY_EINTERNAL, "sha-256 failed");
out:
    EVP_MD_CTX_free(md);
    return rc;
}

int ferry_sha256(const void *p, size_t n, unsigned char out[FERRY_SHA256_LEN],
                 struct ferry_error *err)
{
    struct ferry_bytes part = {p, n};

    return ferry_sha256_parts(&part, 1, out, err);
}

int ferry_hmac_sha256(const void *key, size_t keylen, const struct ferry_bytes *parts,
                      size_t nparts, unsigned char out[FERRY_HMAC_LEN], struct ferry_error *err)
{
    EVP_MAC *mac = NULL;
    EVP_MAC_CTX *ctx = NULL;
    OSSL_PARAM params[2];
    char digest[] = "SHA256";
    size_t n = 0;
    int rc = FERRY_OK;

    if (keylen == 0) {
        rc = ferry_error_set(err, FERRY_EINTERNAL, "hmac with an empty key");
        goto out;
    }
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0);
    params[1] = OSSL_PARAM_construct_end();
    mac = hmac_mac ? hmac_mac : EVP_MAC_fetch(NULL, "HMAC", NULL);
    ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
    if (!ctx || EVP_MAC_init(ctx, key, keylen, params) != 1) {
        rc = ossl_error(err, FERRY_EINTERNAL, "hmac-sha-256 unavailable");
        goto out;
    }
    for (size_t i = 0; i < nparts; i++) {
        if (parts[i].n && EVP_MAC_update(ctx, parts[i].p, parts[i].n) != 1) {
            rc = ossl_error(err, FERRY_EINTERNAL, "hmac-sha-256 failed");
            goto out;
        }
    }
    if (EVP_MAC_final(ctx, out, &n, FERRY_HMAC_LEN) != 1 || n != FERRY_HMAC_LEN)
        rc = ossl_error(err, FERRY_EINTERNAL, "hmac-sha-256 failed");
out:
    EVP_MAC_CTX_free(ctx);
    if (mac != hmac_mac)
        EVP_MAC_free(mac);
    return rc;
}

int ferry_random(void *p, size_t n, struct ferry_error *err)
{
    if (n > INT_MAX || RAND_bytes(p, (int)n) != 1)
        return ossl_error(err, FERRY_EINTERNAL, "no random bytes available");
    return FERRY_OK;
}

int ferry_ct_equal(const void *a, const void *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) == 0;
}

void ferry_cleanse(void *p, size_t n)
{
    OPENSSL_cleanse(p, n);
}

int ferry_base64_encode(const void *p, size_t n, int pad, struct ferry_buf *out,
                        struct ferry_error *err)
{
    /* Whole groups of 3 bytes per chunk, so only the last chunk can pad. */
    unsigned char chunk[4 * 64 + 1];
    const unsigned char *in = p;
    int rc = FERRY_OK;

    do {
        size_t take = n > 3 * 64 ? 3 * 64 : n;
        int len = EVP_EncodeBlock(chunk, in, (int)take);

        while (!pad && len > 0 && chunk[len - 1] == '=')
            len--;
        rc = ferry_buf_add(out, chunk, (size_t)len);
        if (rc) {
            ferry_error_set(err, rc, "cannot hold base64 text: %s", ferry_strerror(rc));
            break;
        }
        in += take;
        n -= take;
    } while (n > 0);
    return rc;
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

int ferry_base64_decode(const char *s, size_t n, unsigned char *out, size_t outmax, size_t *outlen,
                        struct ferry_error *err)
{
    unsigned char quad[64 + 4];
    unsigned char bytes[48];
    size_t npad = 0;
    size_t body;
    size_t rem;
    size_t total;
    size_t done = 0;

    *outlen = 0;
    while (npad < 2 && npad < n && s[n - 1 - npad] == '=')
        npad++;
    body = n - npad;
    rem = body % 4;
    /* Padding completes the last group exactly; without it a group has 2..4 characters. */
    if (rem == 1 || (npad && (body + npad) % 4 != 0))
        return ferry_error_set(err, FERRY_EPROTO, "malformed base64: bad length or padding");
    for (size_t i = 0; i < body; i++)
        if (b64_value((unsigned char)s[i]) < 0)
            return ferry_error_set(err, FERRY_EPROTO, "malformed base64: bad character at %zu", i);
    /* Unused low bits of the last character must be zero: one encoding per byte string. */
    if ((rem == 2 && (b64_value((unsigned char)s[body - 1]) & 0x0f)) ||
        (rem == 3 && (b64_value((unsigned char)s[body - 1]) & 0x03)))
        return ferry_error_set(err, FERRY_EPROTO, "malformed base64: non-canonical ending");
    total = body / 4 * 3 + (rem ? rem - 1 : 0);
    if (total > outmax)
        return ferry_error_set(err, FERRY_ETOOBIG, "base64 value of %zu bytes, at most %zu", total,
                               outmax);
    /* Input is validated, so OpenSSL's lenient decoder sees only canonical groups. */
    for (size_t i = 0; i < body; i += 64) {
        size_t take = body - i > 64 ? 64 : body - i;
        size_t got = take / 4 * 3;
        int r;

        memcpy(quad, s + i, take);
        if (take % 4) {
            got += take % 4 - 1;
            while (take % 4)
                quad[take++] = '=';
        }
        r = EVP_DecodeBlock(bytes, quad, (int)take);
        if (r < 0 || (size_t)r < got)
            return ossl_error(err, FERRY_EPROTO, "malformed base64");
        memcpy(out + done, bytes, got);
        done += got;
    }
    *outlen = done;
    return FERRY_OK;
}

void ferry_hex_encode(const void *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    const unsigned char *in = p;

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0x0f];
    }
    out[2 * n] = '\0';
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

int ferry_hex_decode(const char *s, size_t slen, unsigned char *out, size_t n,
                     struct ferry_error *err)
{
    if (slen != 2 * n)
        return ferry_error_set(err, FERRY_EPROTO, "malformed hex: %zu characters, expected %zu",
                               slen, 2 * n);
    for (size_t i = 0; i < n; i++) {
        int hi = hex_value(s[2 * i]);
        int lo = hex_value(s[2 * i + 1]);

        if (hi < 0 || lo < 0)
            return ferry_error_set(err, FERRY_EPROTO, "malformed hex at %zu", 2 * i);
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return FERRY_OK;
}
