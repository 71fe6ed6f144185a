/*
 * authkeys.h - the source's authorised keys file: which target public keys
 * may fetch which tenant. Each key is bound to exactly one tenant.
 *
 * Format, one key per line (fields separated by spaces or tabs):
 *
 *   <tenant> <fingerprint> <base64 DER SubjectPublicKeyInfo> [comment]
 *
 * Blank lines and lines starting with '#' are ignored and kept verbatim when
 * ferry rewrites the file. A tenant is 1..FERRY_TENANT_MAX bytes of
 * [A-Za-z0-9_.-]; the fingerprint must be the key's own (crypto.h), so a
 * line edited by hand cannot name one key and carry another.
 *
 * The file is only ever replaced whole: ferry_authkeys_add/_revoke take
 * FILE.lock (created exclusively, as git does), write the new contents there,
 * fsync, and rename it over FILE. A missing file is an empty list. A file
 * writable by group or others is refused (anyone who can write it can grant
 * themselves a tenant).
 *
 * A server keeps one struct ferry_authkeys open and calls
 * ferry_authkeys_reload() before each use; it re-reads the file only when
 * its inode, size, mtime or ctime changed (and, in the two seconds after a
 * change, compares the contents, since two quick rewrites can leave the same
 * stat behind), so a revocation applies to the next handshake and the next
 * request without a restart. A file that fails
 * to parse on reload empties the list (fail closed: every key is refused
 * until the file is fixed) and the error is returned on every reload until
 * the file changes.
 *
 * Not thread-safe: one struct per thread, or a lock around it.
 */
#ifndef FERRY_AUTHKEYS_H
#define FERRY_AUTHKEYS_H

#include "crypto.h"
#include "error.h"

#include <stddef.h>

#define FERRY_TENANT_MAX 255
/* Limits on what is read from the file, checked before allocating. */
#define FERRY_AUTHKEYS_FILE_MAX (16 * 1024 * 1024)
#define FERRY_AUTHKEYS_LINE_MAX 8192
#define FERRY_AUTHKEYS_KEYS_MAX 100000

struct ferry_authkeys;

/* One authorised key. Borrowed from its list: valid until the list is next
 * reloaded, added to, revoked from, or freed. */
struct ferry_authkey {
    char tenant[FERRY_TENANT_MAX + 1];
    char fingerprint[FERRY_FPR_SIZE];
    const char *comment;         /* "" when none */
    const struct ferry_key *key; /* public key */
    unsigned line;               /* line number in the file, for messages */
};

/*
 * 0 when tenant is 1..FERRY_TENANT_MAX bytes of [A-Za-z0-9_.-], else
 * FERRY_EUSAGE saying what is wrong without quoting the value (hostile input
 * is never echoed into logs).
 */
int ferry_authkeys_check_tenant(const char *tenant, struct ferry_error *err);

/*
 * Open the list kept in path (copied) and load it. A missing file is an
 * empty list. FERRY_ECONFIG "FILE:LINE: ..." for a malformed file.
 * *out owned by the caller, free with ferry_authkeys_free(); NULL on failure.
 */
int ferry_authkeys_open(const char *path, struct ferry_authkeys **out, struct ferry_error *err);

void ferry_authkeys_free(struct ferry_authkeys *ak);

/*
 * Re-read the file if it changed since the last load (a stat() otherwise).
 * *changed (may be NULL) is set to 1 when the list was replaced. On error the
 * list is empty (see above). Invalidates every struct ferry_authkey pointer
 * when *changed is 1 or on error.
 */
int ferry_authkeys_reload(struct ferry_authkeys *ak, int *changed, struct ferry_error *err);

/*
 * Bind the public key in pubfile (PEM SubjectPublicKeyInfo, e.g. the FILE.pub
 * of keygen) to tenant, with an optional one-line comment (NULL for none;
 * printable characters, at most 255 bytes). Refused with FERRY_ECONFIG when
 * the key is already listed, for this or another tenant (a key is bound to
 * one tenant: revoke it first), naming its fingerprint; FERRY_EUSAGE for a
 * bad tenant or comment. The file is rewritten atomically with mode 0600.
 */
int ferry_authkeys_add(struct ferry_authkeys *ak, const char *tenant, const char *pubfile,
                       const char *comment, struct ferry_error *err);

/* As ferry_authkeys_add, with a key already loaded (borrowed). */
int ferry_authkeys_add_key(struct ferry_authkeys *ak, const char *tenant,
                           const struct ferry_key *key, const char *comment,
                           struct ferry_error *err);

/*
 * Remove the key with this fingerprint ("SHA256:..."). FERRY_ENOTFOUND when
 * no such key is listed. The file is rewritten atomically; its other lines,
 * comments included, are kept as they were.
 */
int ferry_authkeys_revoke(struct ferry_authkeys *ak, const char *fingerprint,
                          struct ferry_error *err);

/* Number of keys, and the i-th in file order (borrowed, see struct ferry_authkey). */
size_t ferry_authkeys_count(const struct ferry_authkeys *ak);
const struct ferry_authkey *ferry_authkeys_get(const struct ferry_authkeys *ak, size_t i);

/*
 * The key with this fingerprint, in *out (borrowed). FERRY_EAUTH
 * "unknown key SHA256:..." when it is not listed (the fingerprint is quoted
 * only if well-formed). Does not reload: call ferry_authkeys_reload() first.
 */
int ferry_authkeys_find(const struct ferry_authkeys *ak, const char *fingerprint,
                        const struct ferry_authkey **out, struct ferry_error *err);

#endif
