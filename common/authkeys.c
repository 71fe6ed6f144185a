/* authkeys.c - the source's authorised keys file: parse, look up, rewrite atomically. */
#include "authkeys.h"

#include "buf.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define COMMENT_MAX 255
/* Base64 of the largest SubjectPublicKeyInfo crypto.c accepts, with slack. */
#define SPKI_DER_MAX (FERRY_KEY_MAX_BYTES + 64)

struct entry {
    struct ferry_authkey pub;
    struct ferry_key *key; /* owned */
    char *comment;         /* owned */
    size_t off;            /* the line in text, newline included */
    size_t len;
};

/* One parsed version of the file. */
struct list {
    char *text; /* raw contents, owned; kept to rewrite the file line for line */
    size_t textlen;
    struct entry *entries;
    size_t n;
    const struct entry **byfpr; /* entries sorted by fingerprint, for binary search */
};

struct ferry_authkeys {
    char *path;
    struct list cur;
    /* Identity of the file behind cur (or of the broken file, or its absence). */
    int loaded;
    int exists;
    struct stat st;
    unsigned char digest[FERRY_SHA256_LEN]; /* SHA-256 of the text behind cur */
    int broken;
    struct ferry_error broken_err;
};

int ferry_authkeys_check_tenant(const char *tenant, struct ferry_error *err)
{
    size_t n = 0;

    for (const char *p = tenant; *p; p++, n++) {
        unsigned char c = (unsigned char)*p;
        if (n >= FERRY_TENANT_MAX)
            return ferry_error_set(err, FERRY_EUSAGE, "tenant longer than %d bytes",
                                   FERRY_TENANT_MAX);
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return ferry_error_set(err, FERRY_EUSAGE,
                                   "tenant has a character other than [A-Za-z0-9_.-] at byte %zu",
                                   n);
    }
    if (n == 0)
        return ferry_error_set(err, FERRY_EUSAGE, "empty tenant");
    return FERRY_OK;
}

static void list_release(struct list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        ferry_key_free(l->entries[i].key);
        free(l->entries[i].comment);
    }
    free(l->entries);
    free(l->byfpr);
    free(l->text);
    memset(l, 0, sizeof(*l));
}

static int cmp_fingerprint(const void *a, const void *b)
{
    const struct entry *x = *(const struct entry *const *)a;
    const struct entry *y = *(const struct entry *const *)b;
    return strcmp(x->pub.fingerprint, y->pub.fingerprint);
}

static int is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* Next blank-separated field of line[*pos..len), or NULL if none. */
static const char *next_field(const char *line, size_t len, size_t *pos, size_t *flen)
{
    size_t start;

    while (*pos < len && is_blank(line[*pos]))
        (*pos)++;
    if (*pos >= len)
        return NULL;
    start = *pos;
    while (*pos < len && !is_blank(line[*pos]))
        (*pos)++;
    *flen = *pos - start;
    return line + start;
}

static int comment_ok(const char *s, size_t n)
{
    if (n > COMMENT_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return 0;
    return 1;
}

/* Parse one key line into e (zeroed by the caller). lineno and path for messages. */
static int parse_line(const char *path, unsigned lineno, const char *line, size_t len,
                      struct entry *e, struct ferry_error *err)
{
    unsigned char der[SPKI_DER_MAX];
    struct ferry_error sub;
    const char *f;
    size_t flen = 0;
    size_t pos = 0;
    size_t derlen;
    int rc;

    f = next_field(line, len, &pos, &flen);
    if (flen > FERRY_TENANT_MAX) {
        rc = ferry_error_set(err, FERRY_ECONFIG, "%s:%u: tenant longer than %d bytes", path, lineno,
                             FERRY_TENANT_MAX);
        goto out;
    }
    memcpy(e->pub.tenant, f, flen);
    e->pub.tenant[flen] = '\0';
    rc = ferry_authkeys_check_tenant(e->pub.tenant, &sub);
    if (rc) {
        rc = ferry_error_set(err, FERRY_ECONFIG, "%s:%u: %s", path, lineno, sub.msg);
        goto out;
    }
    f = next_field(line, len, &pos, &flen);
    if (!f || !ferry_key_fingerprint_ok(f, flen)) {
        rc = ferry_error_set(err, FERRY_ECONFIG,
                             "%s:%u: expected <tenant> <fingerprint> <public key> [comment]", path,
                             lineno);
        goto out;
    }
    memcpy(e->pub.fingerprint, f, flen);
    e->pub.fingerprint[flen] = '\0';
    f = next_field(line, len, &pos, &flen);
    if (!f) {
        rc = ferry_error_set(err, FERRY_ECONFIG, "%s:%u: public key missing", path, lineno);
        goto out;
    }
    rc = ferry_base64_decode(f, flen, der, sizeof(der), &derlen, &sub);
    if (!rc)
        rc = ferry_key_from_spki(der, derlen, &e->key, &sub);
    if (rc) {
        rc =
            ferry_error_set(err, FERRY_ECONFIG, "%s:%u: bad public key: %s", path, lineno, sub.msg);
        goto out;
    }
    if (strcmp(ferry_key_fingerprint(e->key), e->pub.fingerprint) != 0) {
        rc =
            ferry_error_set(err, FERRY_ECONFIG, "%s:%u: fingerprint %s does not match the key (%s)",
                            path, lineno, e->pub.fingerprint, ferry_key_fingerprint(e->key));
        goto out;
    }
    while (pos < len && is_blank(line[pos]))
        pos++;
    while (len > pos && is_blank(line[len - 1]))
        len--;
    if (!comment_ok(line + pos, len - pos)) {
        rc = ferry_error_set(err, FERRY_ECONFIG,
                             "%s:%u: comment has control characters or is "
                             "longer than %d bytes",
                             path, lineno, COMMENT_MAX);
        goto out;
    }
    e->comment = strndup(line + pos, len - pos);
    if (!e->comment) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        goto out;
    }
    e->pub.comment = e->comment;
    e->pub.key = e->key;
    e->pub.line = lineno;
out:
    return rc;
}

/* Parse text (ownership passes to l, even on failure) into l, which starts zeroed. */
static int parse(const char *path, char *text, size_t textlen, struct list *l,
                 struct ferry_error *err)
{
    size_t cap = 0;
    size_t off = 0;
    unsigned lineno = 0;
    int rc = FERRY_OK;

    l->text = text;
    l->textlen = textlen;
    if (memchr(text, '\0', textlen))
        return ferry_error_set(err, FERRY_ECONFIG, "%s: NUL byte in file", path);
    while (off < textlen) {
        const char *line = text + off;
        const char *nl = memchr(line, '\n', textlen - off);
        size_t full = nl ? (size_t)(nl - line) + 1 : textlen - off;
        size_t len = nl ? full - 1 : full;
        size_t p = 0;
        struct entry *e;

        lineno++;
        if (len > FERRY_AUTHKEYS_LINE_MAX)
            return ferry_error_set(err, FERRY_ECONFIG, "%s:%u: line longer than %d bytes", path,
                                   lineno, FERRY_AUTHKEYS_LINE_MAX);
        if (len > 0 && line[len - 1] == '\r')
            len--;
        while (p < len && is_blank(line[p]))
            p++;
        if (p == len || line[p] == '#') {
            off += full;
            continue;
        }
        if (l->n == FERRY_AUTHKEYS_KEYS_MAX)
            return ferry_error_set(err, FERRY_ECONFIG, "%s:%u: more than %d keys", path, lineno,
                                   FERRY_AUTHKEYS_KEYS_MAX);
        if (l->n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            struct entry *ne = realloc(l->entries, ncap * sizeof(*ne));
            if (!ne)
                return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
            l->entries = ne;
            cap = ncap;
        }
        e = &l->entries[l->n];
        memset(e, 0, sizeof(*e));
        /* Counted before parsing, so a half-parsed entry is still released. */
        l->n++;
        rc = parse_line(path, lineno, line, len, e, err);
        if (rc)
            return rc;
        e->off = off;
        e->len = full;
        off += full;
    }
    if (l->n == 0)
        return FERRY_OK;
    l->byfpr = malloc(l->n * sizeof(*l->byfpr));
    if (!l->byfpr)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
    /* entries is not reallocated any more, so pointers into it stay valid. */
    for (size_t i = 0; i < l->n; i++)
        l->byfpr[i] = &l->entries[i];
    qsort(l->byfpr, l->n, sizeof(*l->byfpr), cmp_fingerprint);
    for (size_t i = 1; i < l->n; i++) {
        const struct entry *a = l->byfpr[i - 1];
        const struct entry *b = l->byfpr[i];
        if (strcmp(a->pub.fingerprint, b->pub.fingerprint) == 0)
            return ferry_error_set(err, FERRY_ECONFIG, "%s:%u: key %s is listed twice (line %u)",
                                   path, a->pub.line > b->pub.line ? a->pub.line : b->pub.line,
                                   a->pub.fingerprint,
                                   a->pub.line < b->pub.line ? a->pub.line : b->pub.line);
    }
    return FERRY_OK;
}

/*
 * Read the file now into *text (owned by the caller, free(); NULL when the
 * file does not exist), recording its identity in *st and whether it exists
 * in *exists.
 */
static int read_text(const char *path, char **text, size_t *len, struct stat *st, int *exists,
                     struct ferry_error *err)
{
    char *p = NULL;
    size_t got = 0;
    int fd;
    int rc = FERRY_OK;

    *text = NULL;
    *len = 0;
    *exists = 0;
    memset(st, 0, sizeof(*st));
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0 && errno == ENOENT)
        return FERRY_OK;
    if (fd < 0)
        return ferry_error_set(err, FERRY_ECONFIG, "cannot open authorized keys %s: %s", path,
                               strerror(errno));
    *exists = 1;
    if (fstat(fd, st) != 0) {
        rc = ferry_error_set(err, FERRY_ECONFIG, "cannot stat %s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st->st_mode)) {
        rc = ferry_error_set(err, FERRY_ECONFIG, "authorized keys %s is not a regular file", path);
        goto out;
    }
    if (st->st_mode & 022) {
        rc = ferry_error_set(err, FERRY_ECONFIG,
                             "authorized keys %s is writable by others; run chmod 600 %s", path,
                             path);
        goto out;
    }
    if (st->st_size > FERRY_AUTHKEYS_FILE_MAX) {
        rc = ferry_error_set(err, FERRY_ECONFIG, "authorized keys %s is larger than %d bytes", path,
                             FERRY_AUTHKEYS_FILE_MAX);
        goto out;
    }
    p = malloc((size_t)st->st_size + 1);
    if (!p) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        goto out;
    }
    while (got < (size_t)st->st_size) {
        ssize_t r = read(fd, p + got, (size_t)st->st_size - got);
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
    *text = p;
    *len = got;
    p = NULL;
out:
    free(p);
    close(fd);
    return rc;
}

/* Read and parse the file now into l (zeroed by the caller). */
static int load_file(const char *path, struct list *l, struct stat *st, int *exists,
                     struct ferry_error *err)
{
    char *text;
    size_t len;
    int rc;

    rc = read_text(path, &text, &len, st, exists, err);
    if (rc || !text)
        return rc;
    return parse(path, text, len, l, err);
}

static int same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
           a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/*
 * File timestamps tick with the kernel's coarse clock, and a freed inode
 * number is soon reused, so two quick rewrites can leave a file whose stat
 * matches an older version (git's "racily clean" problem). Until its times
 * are a couple of seconds old, the contents are compared, not just the stat.
 */
static int racy(const struct stat *st)
{
    time_t now = time(NULL);
    return st->st_mtim.tv_sec >= now - 2 || st->st_ctim.tv_sec >= now - 2;
}

/*
 * Make ak reflect the file whose text was just read (text owned by this
 * function). On failure ak holds no key (fail closed) and remembers why.
 */
static int install(struct ferry_authkeys *ak, int rc, char *text, size_t len, const struct stat *st,
                   int exists, struct ferry_error *err)
{
    struct list l = {0};
    unsigned char digest[FERRY_SHA256_LEN] = {0};

    if (!rc && text)
        rc = ferry_sha256(text, len, digest, err);
    if (!rc && text)
        rc = parse(ak->path, text, len, &l, err);
    else
        free(text);
    list_release(&ak->cur);
    ak->loaded = 1;
    ak->exists = exists;
    ak->st = *st;
    memcpy(ak->digest, digest, sizeof(digest));
    ak->broken = rc != FERRY_OK;
    ferry_error_clear(&ak->broken_err);
    if (rc) {
        list_release(&l);
        if (err)
            ak->broken_err = *err;
        else
            ferry_error_set(&ak->broken_err, rc, "%s", ferry_strerror(rc));
        return rc;
    }
    ak->cur = l;
    return FERRY_OK;
}

/* Load the file unconditionally into ak. */
static int load(struct ferry_authkeys *ak, struct ferry_error *err)
{
    char *text;
    size_t len;
    struct stat st;
    int exists;
    int rc;

    rc = read_text(ak->path, &text, &len, &st, &exists, err);
    return install(ak, rc, text, len, &st, exists, err);
}

int ferry_authkeys_open(const char *path, struct ferry_authkeys **out, struct ferry_error *err)
{
    struct ferry_authkeys *ak;
    int rc;

    *out = NULL;
    ak = calloc(1, sizeof(*ak));
    if (!ak)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
    ak->path = strdup(path);
    if (!ak->path) {
        free(ak);
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
    }
    rc = load(ak, err);
    if (rc) {
        ferry_authkeys_free(ak);
        return rc;
    }
    *out = ak;
    return FERRY_OK;
}

void ferry_authkeys_free(struct ferry_authkeys *ak)
{
    if (!ak)
        return;
    list_release(&ak->cur);
    free(ak->path);
    free(ak);
}

int ferry_authkeys_reload(struct ferry_authkeys *ak, int *changed, struct ferry_error *err)
{
    unsigned char digest[FERRY_SHA256_LEN];
    struct stat st;
    char *text;
    size_t len;
    int exists;
    int rc;

    if (changed)
        *changed = 0;
    if (stat(ak->path, &st) != 0) {
        if (errno == ENOENT && ak->loaded && !ak->exists && !ak->broken)
            return FERRY_OK;
    } else if (ak->loaded && ak->exists && same_file(&st, &ak->st) && !racy(&st)) {
        if (ak->broken) {
            if (err)
                *err = ak->broken_err;
            return ak->broken_err.code;
        }
        return FERRY_OK;
    }
    rc = read_text(ak->path, &text, &len, &st, &exists, err);
    /* Same bytes as the list in use (touched, or racily unchanged): keep it, parse nothing. */
    if (!rc && !ak->broken && exists && ak->exists &&
        ferry_sha256(text, len, digest, NULL) == FERRY_OK &&
        memcmp(digest, ak->digest, sizeof(digest)) == 0) {
        free(text);
        ak->st = st;
        return FERRY_OK;
    }
    if (changed)
        *changed = 1;
    return install(ak, rc, text, len, &st, exists, err);
}

size_t ferry_authkeys_count(const struct ferry_authkeys *ak)
{
    return ak->cur.n;
}

const struct ferry_authkey *ferry_authkeys_get(const struct ferry_authkeys *ak, size_t i)
{
    if (i >= ak->cur.n)
        return NULL;
    return &ak->cur.entries[i].pub;
}

static const struct entry *lookup(const struct list *l, const char *fingerprint)
{
    size_t lo = 0;
    size_t hi = l->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct entry *e = l->byfpr[mid];
        int c = strcmp(fingerprint, e->pub.fingerprint);
        if (c == 0)
            return e;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

int ferry_authkeys_find(const struct ferry_authkeys *ak, const char *fingerprint,
                        const struct ferry_authkey **out, struct ferry_error *err)
{
    const struct entry *e = NULL;

    *out = NULL;
    if (ferry_key_fingerprint_ok(fingerprint, strlen(fingerprint)))
        e = lookup(&ak->cur, fingerprint);
    if (!e) {
        if (ferry_key_fingerprint_ok(fingerprint, strlen(fingerprint)))
            return ferry_error_set(err, FERRY_EAUTH, "unknown key %s", fingerprint);
        return ferry_error_set(err, FERRY_EAUTH, "unknown key (malformed fingerprint)");
    }
    *out = &e->pub;
    return FERRY_OK;
}

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
        rc = ferry_error_set(err, FERRY_EIO, "cannot sync directory %s: %s", dir, strerror(errno));
    close(fd);
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

/* What a locked update does to the freshly read list: fill out with the new file contents. */
struct edit {
    const char *tenant;          /* add */
    const struct ferry_key *key; /* add */
    const char *comment;         /* add */
    const char *fingerprint;     /* revoke */
};

static int no_room(int rc, const char *path, struct ferry_error *err)
{
    return ferry_error_set(err, rc, "cannot build new %s: %s", path, ferry_strerror(rc));
}

/* Append the line binding ed->key to ed->tenant, newline included, to out. */
static int key_line(const char *path, const struct edit *ed, struct ferry_buf *out,
                    struct ferry_error *err)
{
    struct ferry_buf spki;
    int rc;

    ferry_buf_init(&spki, SPKI_DER_MAX);
    rc = ferry_key_spki(ed->key, &spki, err);
    if (rc)
        goto out;
    rc = ferry_buf_addf(out, "%s %s ", ed->tenant, ferry_key_fingerprint(ed->key));
    if (rc) {
        no_room(rc, path, err);
        goto out;
    }
    rc = ferry_base64_encode(spki.data, spki.len, 1, out, err);
    if (rc)
        goto out;
    if (ed->comment && ed->comment[0])
        rc = ferry_buf_addf(out, " %s", ed->comment);
    if (!rc)
        rc = ferry_buf_adds(out, "\n");
    if (rc)
        no_room(rc, path, err);
out:
    ferry_buf_release(&spki);
    return rc;
}

/* The new file contents, in out: l's text without the revoked line, or with the added one. */
static int apply_edit(const char *path, const struct list *l, const struct edit *ed,
                      struct ferry_buf *out, struct ferry_error *err)
{
    const struct entry *e;
    int rc;

    if (ed->fingerprint) {
        e = lookup(l, ed->fingerprint);
        if (!e)
            return ferry_error_set(err, FERRY_ENOTFOUND, "key %s is not in %s", ed->fingerprint,
                                   path);
        rc = ferry_buf_add(out, l->text, e->off);
        if (!rc)
            rc = ferry_buf_add(out, l->text + e->off + e->len, l->textlen - e->off - e->len);
        return rc ? no_room(rc, path, err) : FERRY_OK;
    }
    e = lookup(l, ferry_key_fingerprint(ed->key));
    if (e && strcmp(e->pub.tenant, ed->tenant) == 0)
        return ferry_error_set(err, FERRY_ECONFIG, "key %s is already authorized for tenant %s",
                               e->pub.fingerprint, e->pub.tenant);
    if (e)
        return ferry_error_set(err, FERRY_ECONFIG,
                               "key %s is already authorized for tenant %s; a key serves one "
                               "tenant: revoke it first, or make a new key for tenant %s",
                               e->pub.fingerprint, e->pub.tenant, ed->tenant);
    if (l->textlen == 0)
        rc = ferry_buf_adds(out, "# ferry authorized keys: <tenant> <fingerprint> "
                                 "<public key (base64 DER)> [comment]\n");
    else
        rc = ferry_buf_add(out, l->text, l->textlen);
    if (!rc && l->textlen && l->text[l->textlen - 1] != '\n')
        rc = ferry_buf_adds(out, "\n");
    if (rc)
        return no_room(rc, path, err);
    return key_line(path, ed, out, err);
}

/*
 * Take FILE.lock, re-read FILE, apply ed, write the result to FILE.lock,
 * fsync, rename over FILE. The lock file is the temporary file, as in git,
 * so two concurrent edits cannot both succeed and lose one.
 */
static int locked_update(struct ferry_authkeys *ak, const struct edit *ed, struct ferry_error *err)
{
    char lock[PATH_MAX];
    struct list l = {0};
    struct ferry_buf text;
    struct stat st;
    int exists;
    int fd = -1;
    int ours = 0; /* the lock file is ours to remove */
    int rc;

    ferry_buf_init(&text, (size_t)FERRY_AUTHKEYS_FILE_MAX);
    if ((size_t)snprintf(lock, sizeof(lock), "%s.lock", ak->path) >= sizeof(lock)) {
        rc = ferry_error_set(err, FERRY_ECONFIG, "path too long: %s", ak->path);
        goto out;
    }
    fd = open(lock, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0600);
    if (fd < 0 && errno == EEXIST) {
        rc = ferry_error_set(err, FERRY_ECONFIG,
                             "%s exists: another ferry-src keys command is running, or one was "
                             "interrupted; if none is running, remove %s",
                             lock, lock);
        goto out;
    }
    if (fd < 0) {
        rc = ferry_error_set(err, FERRY_ECONFIG, "cannot create %s: %s", lock, strerror(errno));
        goto out;
    }
    ours = 1;
    rc = load_file(ak->path, &l, &st, &exists, err);
    if (rc) {
        ferry_error_prefix(err, "not changing %s", ak->path);
        goto out;
    }
    rc = apply_edit(ak->path, &l, ed, &text, err);
    if (rc)
        goto out;
    if (fchmod(fd, 0600) != 0 || write_all(fd, text.data, text.len) != 0 || fsync(fd) != 0) {
        rc = ferry_error_set(err, errno == ENOSPC ? FERRY_ENOSPC : FERRY_EIO, "cannot write %s: %s",
                             lock, strerror(errno));
        goto out;
    }
    if (close(fd) != 0) {
        fd = -1;
        rc = ferry_error_set(err, FERRY_EIO, "cannot write %s: %s", lock, strerror(errno));
        goto out;
    }
    fd = -1;
    if (rename(lock, ak->path) != 0) {
        rc = ferry_error_set(err, FERRY_EIO, "cannot rename %s to %s: %s", lock, ak->path,
                             strerror(errno));
        goto out;
    }
    ours = 0;
    rc = sync_parent(ak->path, err);
    if (rc)
        goto out;
    rc = load(ak, err);
out:
    if (fd >= 0)
        close(fd);
    if (ours)
        unlink(lock);
    list_release(&l);
    ferry_buf_release(&text);
    return rc;
}

int ferry_authkeys_add_key(struct ferry_authkeys *ak, const char *tenant,
                           const struct ferry_key *key, const char *comment,
                           struct ferry_error *err)
{
    struct edit ed = {tenant, key, comment, NULL};
    int rc;

    rc = ferry_authkeys_check_tenant(tenant, err);
    if (rc)
        return rc;
    if (comment &&
        (!comment_ok(comment, strlen(comment)) || comment[0] == ' ' || comment[0] == '\t'))
        return ferry_error_set(err, FERRY_EUSAGE,
                               "comment must be one line of printable characters, at most %d "
                               "bytes, not starting with a blank",
                               COMMENT_MAX);
    return locked_update(ak, &ed, err);
}

int ferry_authkeys_add(struct ferry_authkeys *ak, const char *tenant, const char *pubfile,
                       const char *comment, struct ferry_error *err)
{
    struct ferry_key *key = NULL;
    int rc;

    rc = ferry_authkeys_check_tenant(tenant, err);
    if (rc)
        goto out;
    rc = ferry_key_load_public(pubfile, &key, err);
    if (rc)
        goto out;
    rc = ferry_authkeys_add_key(ak, tenant, key, comment, err);
out:
    ferry_key_free(key);
    return rc;
}

int ferry_authkeys_revoke(struct ferry_authkeys *ak, const char *fingerprint,
                          struct ferry_error *err)
{
    struct edit ed = {NULL, NULL, NULL, fingerprint};

    if (!ferry_key_fingerprint_ok(fingerprint, strlen(fingerprint)))
        return ferry_error_set(err, FERRY_EUSAGE,
                               "not a fingerprint: expected SHA256: and 43 base64 characters "
                               "(see ferry-src keys list)");
    return locked_update(ak, &ed, err);
}
