/*
 * test_resume.c - agent-dst/resume: a kept session comes back exactly, once,
 * and only to the same identity key, source key, url and tenant, while it
 * is still valid; the file is private and holds no secret in the clear.
 */
#include "test.h"

#include "agent-dst/resume.h"
#include "common/crypto.h"

#include <sys/stat.h>
#include <unistd.h>

static char dir[512], idkey[600], idkey2[600], srcpub[600], sessfile[600];

static void make_key(const char *path, int pub_only)
{
    struct ferry_error err = {0};
    struct ferry_key *k = NULL;
    char priv[700];

    ASSERT_EQ(ferry_key_generate(2048, &k, &err), FERRY_OK);
    snprintf(priv, sizeof(priv), "%s%s", path, pub_only ? ".priv" : "");
    ASSERT_EQ(ferry_key_save(k, priv, &err), FERRY_OK);
    ferry_key_free(k);
    if (pub_only) {
        char pub[720];

        snprintf(pub, sizeof(pub), "%s.pub", priv);
        ASSERT_EQ(rename(pub, path), 0);
    }
}

static void config(struct ferry_config *cfg, const char *identity)
{
    static char url[] = "http://127.0.0.1:7700", tenant[] = "42";

    memset(cfg, 0, sizeof(*cfg));
    cfg->target.state = dir;
    cfg->target.identity = (char *)identity;
    cfg->target.tenant = tenant;
    cfg->source.url = url;
    cfg->source.public_key = srcpub;
}

static void session(struct ferry_hs_session *s, uint64_t counter, int64_t expires)
{
    memset(s, 0, sizeof(*s));
    memcpy(s->id, "0123456789abcdef0123456789abcdef", FERRY_HS_ID_LEN);
    for (int i = 0; i < FERRY_HS_SECRET_LEN; i++)
        s->secret[i] = (unsigned char)(0xA5 ^ i);
    s->counter = counter;
    s->expires = expires;
}

static int contains(const unsigned char *p, size_t n, const void *what, size_t len)
{
    for (size_t i = 0; i + len <= n; i++)
        if (memcmp(p + i, what, len) == 0)
            return 1;
    return 0;
}

static int exists(const char *path)
{
    return access(path, F_OK) == 0;
}

int main(void)
{
    struct ferry_config cfg, other;
    struct ferry_hs_session kept, got;
    unsigned char rec[512];
    struct stat st;
    int64_t ttl = 0;
    FILE *f;
    size_t n;
    char otherurl[] = "http://127.0.0.1:7701", othertenant[] = "43";

    snprintf(dir, sizeof(dir), "%s", test_tmpdir("resume"));
    snprintf(idkey, sizeof(idkey), "%s/dst.key", dir);
    snprintf(idkey2, sizeof(idkey2), "%s/dst2.key", dir);
    snprintf(srcpub, sizeof(srcpub), "%s/src.key.pub", dir);
    snprintf(sessfile, sizeof(sessfile), "%s/session", dir);
    make_key(idkey, 0);
    make_key(idkey2, 0);
    make_key(srcpub, 1);
    config(&cfg, idkey);

    /* nothing kept: nothing taken */
    ASSERT_EQ(ferry_resume_take(&cfg, 1000, 60, &got, &ttl), 0);

    /* kept, then taken back exactly, once; the file is gone after the take */
    session(&kept, 17, 1900);
    ferry_resume_keep(&cfg, &kept, 900);
    ASSERT(exists(sessfile));
    ASSERT_EQ(stat(sessfile, &st), 0);
    ASSERT_EQ(st.st_mode & 0777, 0600);
    f = fopen(sessfile, "rb");
    ASSERT(f != NULL);
    n = fread(rec, 1, sizeof(rec), f);
    fclose(f);
    ASSERT_EQ(n, 121);
    /* the session id is no secret (it travels in a header), the secret is not there */
    ASSERT(contains(rec, n, kept.id, FERRY_HS_ID_LEN));
    ASSERT(!contains(rec, n, kept.secret, 8));
    ASSERT(!contains(rec, n, kept.secret + 8, 8));
    ASSERT_EQ(ferry_resume_take(&cfg, 1000, 60, &got, &ttl), 1);
    ASSERT_STR(got.id, kept.id);
    ASSERT(memcmp(got.secret, kept.secret, FERRY_HS_SECRET_LEN) == 0);
    ASSERT_EQ(got.counter, 17);
    ASSERT_EQ(got.expires, 1900);
    ASSERT_EQ(ttl, 900);
    ASSERT(!exists(sessfile));
    ASSERT_EQ(ferry_resume_take(&cfg, 1000, 60, &got, &ttl), 0);

    /* not for another identity key, url, tenant or source key; removed all the same */
    config(&other, idkey2);
    ferry_resume_keep(&cfg, &kept, 900);
    ASSERT_EQ(ferry_resume_take(&other, 1000, 60, &got, &ttl), 0);
    ASSERT(!exists(sessfile));
    ASSERT_EQ(got.id[0], '\0');
    config(&other, idkey);
    other.source.url = otherurl;
    ferry_resume_keep(&cfg, &kept, 900);
    ASSERT_EQ(ferry_resume_take(&other, 1000, 60, &got, &ttl), 0);
    config(&other, idkey);
    other.target.tenant = othertenant;
    ferry_resume_keep(&cfg, &kept, 900);
    ASSERT_EQ(ferry_resume_take(&other, 1000, 60, &got, &ttl), 0);
    config(&other, idkey);
    other.source.public_key = idkey2; /* another (private, but readable) key file */
    ferry_resume_keep(&cfg, &kept, 900);
    ASSERT_EQ(ferry_resume_take(&other, 1000, 60, &got, &ttl), 0);

    /* not when it ends within min_left seconds, or has ended */
    ferry_resume_keep(&cfg, &kept, 900);
    ASSERT_EQ(ferry_resume_take(&cfg, 1841, 60, &got, &ttl), 0);
    ferry_resume_keep(&cfg, &kept, 900);
    ASSERT_EQ(ferry_resume_take(&cfg, 1840, 60, &got, &ttl), 1);
    ferry_resume_keep(&cfg, &kept, 900);
    ASSERT_EQ(ferry_resume_take(&cfg, 5000, 0, &got, &ttl), 0);

    /* every byte flipped in turn, or the file cut short: not taken */
    for (size_t i = 0; i < 121; i++) {
        ferry_resume_keep(&cfg, &kept, 900);
        f = fopen(sessfile, "rb");
        ASSERT(f != NULL);
        ASSERT_EQ(fread(rec, 1, 121, f), 121);
        fclose(f);
        rec[i] ^= 0x01;
        f = fopen(sessfile, "wb");
        ASSERT(f != NULL);
        ASSERT_EQ(fwrite(rec, 1, 121, f), 121);
        fclose(f);
        ASSERT_EQ(chmod(sessfile, 0600), 0);
        ASSERT_EQ(ferry_resume_take(&cfg, 1000, 60, &got, &ttl), 0);
    }
    ferry_resume_keep(&cfg, &kept, 900);
    ASSERT_EQ(truncate(sessfile, 120), 0);
    ASSERT_EQ(ferry_resume_take(&cfg, 1000, 60, &got, &ttl), 0);

    /* a file others can read is not trusted */
    ferry_resume_keep(&cfg, &kept, 900);
    ASSERT_EQ(chmod(sessfile, 0644), 0);
    ASSERT_EQ(ferry_resume_take(&cfg, 1000, 60, &got, &ttl), 0);

    /* a loose identity key: nothing kept, nothing taken */
    unlink(sessfile);
    ASSERT_EQ(chmod(idkey, 0644), 0);
    ferry_resume_keep(&cfg, &kept, 900);
    ASSERT(!exists(sessfile));
    ASSERT_EQ(chmod(idkey, 0600), 0);

    /* no state directory configured: nothing kept */
    cfg.target.state = NULL;
    ferry_resume_keep(&cfg, &kept, 900);
    ASSERT(!exists(sessfile));
    return TEST_DONE();
}
