/*
 * resume.c - the target's session kept between runs (resume.h).
 */
#include "resume.h"

#include "../common/crypto.h"
#include "../common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAGIC "FRSC"
#define VERSION 1
#define FILE_NAME "session"
#define TMP_NAME "session.tmp"
#define TAKEN_NAME "session.taken"
#define BODY_LEN (4 + 1 + FERRY_HS_ID_LEN + FERRY_HS_SECRET_LEN + 8 + 8 + 4)
#define RECORD_LEN (BODY_LEN + FERRY_HMAC_LEN)

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static int path_of(const struct ferry_config *cfg, const char *name, char *out, size_t size)
{
    int n;

    if (!cfg->target.state || !cfg->target.identity || !cfg->source.public_key ||
        !cfg->source.url || !cfg->target.tenant)
        return -1;
    n = snprintf(out, size, "%s/%s", cfg->target.state, name);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

/* K (see resume.h) from the identity key file, and the pinned source key file's digest. */
static int derive(const struct ferry_config *cfg, unsigned char k[FERRY_HMAC_LEN],
                  unsigned char srcdig[FERRY_SHA256_LEN])
{
    static const char label[] = "ferry-resume-v1 key";
    unsigned char iddig[FERRY_SHA256_LEN];
    struct ferry_bytes part = {label, sizeof(label) - 1};
    struct ferry_error err;
    int rc;

    rc = ferry_key_file_digest(cfg->target.identity, 1, iddig, &err);
    if (!rc)
        rc = ferry_key_file_digest(cfg->source.public_key, 0, srcdig, &err);
    if (!rc)
        rc = ferry_hmac_sha256(iddig, sizeof(iddig), &part, 1, k, &err);
    ferry_cleanse(iddig, sizeof(iddig));
    return rc;
}

static int pad_of(const unsigned char k[FERRY_HMAC_LEN], const unsigned char *id,
                  unsigned char pad[FERRY_HMAC_LEN])
{
    struct ferry_bytes parts[2] = {{"pad", 3}, {id, FERRY_HS_ID_LEN}};
    struct ferry_error err;

    return ferry_hmac_sha256(k, FERRY_HMAC_LEN, parts, 2, pad, &err);
}

static int tag_of(const struct ferry_config *cfg, const unsigned char k[FERRY_HMAC_LEN],
                  const unsigned char srcdig[FERRY_SHA256_LEN], const unsigned char *body,
                  unsigned char tag[FERRY_HMAC_LEN])
{
    struct ferry_bytes parts[5] = {
        {"tag", 3},
        {srcdig, FERRY_SHA256_LEN},
        {cfg->source.url, strlen(cfg->source.url) + 1},
        {cfg->target.tenant, strlen(cfg->target.tenant) + 1},
        {body, BODY_LEN},
    };
    struct ferry_error err;

    return ferry_hmac_sha256(k, FERRY_HMAC_LEN, parts, 5, tag, &err);
}

static int read_record(const char *path, unsigned char rec[RECORD_LEN])
{
    struct stat st;
    ssize_t got;
    int fd;
    int rc = -1;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -1;
    /* Only a file of ours that nobody else can read or replace. */
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && !(st.st_mode & 077) &&
        st.st_uid == geteuid() && st.st_size == RECORD_LEN) {
        got = read(fd, rec, RECORD_LEN);
        rc = got == RECORD_LEN ? 0 : -1;
    }
    close(fd);
    return rc;
}

int ferry_resume_take(const struct ferry_config *cfg, int64_t now, int64_t min_left,
                      struct ferry_hs_session *sess, int64_t *ttl)
{
    unsigned char rec[RECORD_LEN];
    unsigned char k[FERRY_HMAC_LEN], srcdig[FERRY_SHA256_LEN];
    unsigned char tag[FERRY_HMAC_LEN], pad[FERRY_HMAC_LEN];
    const unsigned char *p = rec + 5;
    char path[4096], taken[4096], name[64];
    char id[FERRY_HS_ID_LEN + 1];
    int64_t expires;
    int ok = 0;
    int rc;

    memset(sess, 0, sizeof(*sess));
    *ttl = 0;
    snprintf(name, sizeof(name), "%s.%ld", TAKEN_NAME, (long)getpid());
    if (path_of(cfg, FILE_NAME, path, sizeof(path)) != 0 ||
        path_of(cfg, name, taken, sizeof(taken)) != 0)
        return 0;
    /*
     * Taken by a rename: of two runs that start at once, one gets the
     * record, the other none; whatever follows, it is never used twice.
     */
    if (rename(path, taken) != 0)
        return 0;
    rc = read_record(taken, rec);
    unlink(taken);
    if (rc != 0)
        goto out;
    if (memcmp(rec, MAGIC, 4) != 0 || rec[4] != VERSION || derive(cfg, k, srcdig) != 0)
        goto out;
    if (tag_of(cfg, k, srcdig, rec, tag) != 0 ||
        !ferry_ct_equal(tag, rec + BODY_LEN, FERRY_HMAC_LEN)) {
        log_debug("kept session in %s does not match this configuration's keys: not used", path);
        goto out;
    }
    memcpy(id, p, FERRY_HS_ID_LEN);
    id[FERRY_HS_ID_LEN] = '\0';
    p += FERRY_HS_ID_LEN;
    expires = (int64_t)get64(p + FERRY_HS_SECRET_LEN + 8);
    if (!ferry_hs_session_id_ok(id) || now > expires - min_left ||
        pad_of(k, (const unsigned char *)id, pad) != 0)
        goto out;
    memcpy(sess->id, id, sizeof(id));
    for (size_t i = 0; i < FERRY_HS_SECRET_LEN; i++)
        sess->secret[i] = p[i] ^ pad[i];
    p += FERRY_HS_SECRET_LEN;
    sess->counter = get64(p);
    sess->expires = expires;
    *ttl = (int64_t)((uint32_t)p[16] << 24 | (uint32_t)p[17] << 16 | (uint32_t)p[18] << 8 | p[19]);
    ok = 1;
out:
    ferry_cleanse(rec, sizeof(rec));
    ferry_cleanse(k, sizeof(k));
    ferry_cleanse(pad, sizeof(pad));
    return ok;
}

void ferry_resume_keep(const struct ferry_config *cfg, const struct ferry_hs_session *sess,
                       int64_t ttl)
{
    unsigned char rec[RECORD_LEN];
    unsigned char k[FERRY_HMAC_LEN], srcdig[FERRY_SHA256_LEN], pad[FERRY_HMAC_LEN];
    unsigned char *p = rec;
    char path[4096], tmp[4096];
    ssize_t put = -1;
    int fd;

    if (path_of(cfg, FILE_NAME, path, sizeof(path)) != 0 ||
        path_of(cfg, TMP_NAME, tmp, sizeof(tmp)) != 0 || !ferry_hs_session_id_ok(sess->id) ||
        ttl < 1 || ttl > FERRY_HS_TTL_MAX)
        return;
    if (derive(cfg, k, srcdig) != 0 || pad_of(k, (const unsigned char *)sess->id, pad) != 0)
        goto out;
    memcpy(p, MAGIC, 4);
    p[4] = VERSION;
    p += 5;
    memcpy(p, sess->id, FERRY_HS_ID_LEN);
    p += FERRY_HS_ID_LEN;
    for (size_t i = 0; i < FERRY_HS_SECRET_LEN; i++)
        p[i] = sess->secret[i] ^ pad[i];
    p += FERRY_HS_SECRET_LEN;
    put64(p, sess->counter);
    put64(p + 8, (uint64_t)sess->expires);
    p[16] = (unsigned char)(ttl >> 24);
    p[17] = (unsigned char)(ttl >> 16);
    p[18] = (unsigned char)(ttl >> 8);
    p[19] = (unsigned char)ttl;
    if (tag_of(cfg, k, srcdig, rec, rec + BODY_LEN) != 0)
        goto out;
    unlink(tmp);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        goto out;
    put = write(fd, rec, RECORD_LEN);
    if (close(fd) != 0 || put != RECORD_LEN || rename(tmp, path) != 0) {
        log_debug("cannot keep the session in %s: %s", path, strerror(errno));
        unlink(tmp);
    }
out:
    ferry_cleanse(rec, sizeof(rec));
    ferry_cleanse(k, sizeof(k));
    ferry_cleanse(pad, sizeof(pad));
}
