/*
 * test_authkeys.c - the authorised keys file: add, refuse duplicates, revoke,
 * reload only on change, strict parsing, atomic rewrite with mode 0600.
 * Oracles: the file's text as grep/awk/stat see it, and openssl's DER and
 * fingerprint of each key.
 */
#include "common/authkeys.h"

#include "test.h"

#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>

static char out[65536];
static char dir[512];

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[8192];
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
    while (n > 0 && out[n - 1] == '\n')
        out[--n] = '\0';
    st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A 2048-bit key pair made by openssl (not by ferry), as DIR/NAME and DIR/NAME.pub. */
static void make_key(const char *name)
{
    ASSERT_EQ(sh("cd '%s' && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "
                 "%s 2>/dev/null && openssl pkey -in %s -pubout -out %s.pub",
                 dir, name, name, name),
              0);
}

static const char *openssl_fpr(const char *name)
{
    static char f[128];
    ASSERT_EQ(sh("cd '%s' && openssl pkey -pubin -in %s.pub -outform DER | openssl dgst -sha256 "
                 "-binary | base64 | tr -d '=\\n'",
                 dir, name),
              0);
    snprintf(f, sizeof(f), "SHA256:%.100s", out);
    return f;
}

static void test_tenant_syntax(void)
{
    struct ferry_error err;
    char t[300];

    ASSERT_EQ(ferry_authkeys_check_tenant("42", &err), 0);
    ASSERT_EQ(ferry_authkeys_check_tenant("team-a_1.prod", &err), 0);
    memset(t, 'a', 255);
    t[255] = '\0';
    ASSERT_EQ(ferry_authkeys_check_tenant(t, &err), 0);
    t[255] = 'a';
    t[256] = '\0';
    ASSERT_EQ(ferry_authkeys_check_tenant(t, &err), FERRY_EUSAGE);
    ASSERT_EQ(ferry_authkeys_check_tenant("", &err), FERRY_EUSAGE);
    ASSERT_EQ(ferry_authkeys_check_tenant("a b", &err), FERRY_EUSAGE);
    ASSERT_EQ(ferry_authkeys_check_tenant("1;DROP TABLE teams", &err), FERRY_EUSAGE);
    /* The refusal does not echo the hostile value. */
    ASSERT(strstr(err.msg, "DROP") == NULL);
    ASSERT_EQ(ferry_authkeys_check_tenant("../etc", &err), FERRY_EUSAGE);
    ASSERT_EQ(ferry_authkeys_check_tenant("42\n", &err), FERRY_EUSAGE);
    ASSERT_EQ(ferry_authkeys_check_tenant("t\xc3\xa9", &err), FERRY_EUSAGE);
    ASSERT_EQ(ferry_authkeys_check_tenant("'1' OR 1=1", &err), FERRY_EUSAGE);
}

static void test_add_list_find_revoke(void)
{
    struct ferry_error err;
    struct ferry_authkeys *ak = NULL;
    struct ferry_authkeys *srv = NULL;
    const struct ferry_authkey *k;
    char path[600];
    char pub[600];
    char fa[128];
    char fb[128];
    int changed = -1;

    snprintf(path, sizeof(path), "%s/authorized_keys", dir);
    make_key("a");
    make_key("b");
    snprintf(fa, sizeof(fa), "%s", openssl_fpr("a"));
    snprintf(fb, sizeof(fb), "%s", openssl_fpr("b"));

    /* Missing file: an empty list, not an error. */
    ASSERT_EQ(ferry_authkeys_open(path, &ak, &err), 0);
    ASSERT_EQ(ferry_authkeys_count(ak), 0);
    ASSERT_EQ(ferry_authkeys_find(ak, fa, &k, &err), FERRY_EAUTH);
    ASSERT(strstr(err.msg, "unknown key SHA256:") != NULL);
    /* The "server" handle, opened before any change. */
    ASSERT_EQ(ferry_authkeys_open(path, &srv, &err), 0);
    ASSERT_EQ(ferry_authkeys_reload(srv, &changed, &err), 0);
    ASSERT_EQ(changed, 0);

    snprintf(pub, sizeof(pub), "%s/a.pub", dir);
    ASSERT_EQ(ferry_authkeys_add(ak, "42", pub, "laptop of alice", &err), 0);
    ASSERT_EQ(ferry_authkeys_count(ak), 1);
    /* The file, as the shell sees it: mode 0600, one line with openssl's values. */
    ASSERT_EQ(sh("stat -c %%a '%s'", path), 0);
    ASSERT_STR(out, "600");
    ASSERT_EQ(sh("grep -v '^#' '%s' | awk '{print $1, $2, $4, $5, $6}'", path), 0);
    {
        char want[300];
        snprintf(want, sizeof(want), "42 %s laptop of alice", fa);
        ASSERT_STR(out, want);
    }
    ASSERT_EQ(sh("cd '%s' && openssl pkey -pubin -in a.pub -outform DER -out a.der && grep -v "
                 "'^#' authorized_keys | awk '{print $3}' | base64 -d | cmp - a.der && echo same",
                 dir),
              0);
    ASSERT_STR(out, "same");
    {
        char lock[700];
        snprintf(lock, sizeof(lock), "%s.lock", path);
        ASSERT(access(lock, F_OK) != 0); /* the lock is gone after the rename */
    }

    /* The server handle sees the change on reload, once. */
    ASSERT_EQ(ferry_authkeys_find(srv, fa, &k, &err), FERRY_EAUTH);
    ASSERT_EQ(ferry_authkeys_reload(srv, &changed, &err), 0);
    ASSERT_EQ(changed, 1);
    ASSERT_EQ(ferry_authkeys_reload(srv, &changed, &err), 0);
    ASSERT_EQ(changed, 0);
    /* New times, same bytes: nothing to re-parse. */
    ASSERT_EQ(sh("touch -d '2001-01-01' '%s'", path), 0);
    ASSERT_EQ(ferry_authkeys_reload(srv, &changed, &err), 0);
    ASSERT_EQ(changed, 0);
    ASSERT_EQ(ferry_authkeys_find(srv, fa, &k, &err), 0);
    /* Same size, same inode, other bytes (an in-place edit): re-parsed. */
    ASSERT_EQ(sh("sed -i.orig 's/^42 /43 /' '%s' && chmod 600 '%s'", path, path), 0);
    ASSERT_EQ(ferry_authkeys_reload(srv, &changed, &err), 0);
    ASSERT_EQ(changed, 1);
    ASSERT_EQ(ferry_authkeys_find(srv, fa, &k, &err), 0);
    ASSERT_STR(k->tenant, "43");
    ASSERT_EQ(sh("mv '%s.orig' '%s'", path, path), 0);
    ASSERT_EQ(ferry_authkeys_reload(srv, &changed, &err), 0);
    ASSERT_EQ(changed, 1);
    ASSERT_EQ(ferry_authkeys_find(srv, fa, &k, &err), 0);
    ASSERT_STR(k->tenant, "42");
    ASSERT_STR(k->tenant, "42");
    ASSERT_STR(k->fingerprint, fa);
    ASSERT_STR(ferry_key_fingerprint(k->key), fa);
    ASSERT_STR(k->comment, "laptop of alice");
    ASSERT(!ferry_key_is_private(k->key));

    /* A key already present is refused, for the same tenant or another. */
    ASSERT_EQ(ferry_authkeys_add(ak, "42", pub, NULL, &err), FERRY_ECONFIG);
    ASSERT(strstr(err.msg, fa) != NULL);
    ASSERT(strstr(err.msg, "already authorized for tenant 42") != NULL);
    ASSERT_EQ(ferry_authkeys_add(ak, "7", pub, NULL, &err), FERRY_ECONFIG);
    ASSERT(strstr(err.msg, fa) != NULL);
    ASSERT(strstr(err.msg, "revoke it first") != NULL);
    ASSERT_EQ(sh("grep -c SHA256 '%s'", path), 0);
    ASSERT_STR(out, "1");

    /* Bad tenants and comments never reach the file. */
    snprintf(pub, sizeof(pub), "%s/b.pub", dir);
    ASSERT_EQ(ferry_authkeys_add(ak, "", pub, NULL, &err), FERRY_EUSAGE);
    ASSERT_EQ(ferry_authkeys_add(ak, "7 8", pub, NULL, &err), FERRY_EUSAGE);
    ASSERT_EQ(ferry_authkeys_add(ak, "7;rm", pub, NULL, &err), FERRY_EUSAGE);
    ASSERT_EQ(ferry_authkeys_add(ak, "7", pub, "two\nlines", &err), FERRY_EUSAGE);
    ASSERT_EQ(ferry_authkeys_add(ak, "7", "/nonexistent.pub", NULL, &err), FERRY_ECONFIG);
    ASSERT_EQ(ferry_authkeys_count(ak), 1);

    ASSERT_EQ(ferry_authkeys_add(ak, "7", pub, NULL, &err), 0);
    ASSERT_EQ(ferry_authkeys_count(ak), 2);
    ASSERT_STR(ferry_authkeys_get(ak, 0)->fingerprint, fa);
    ASSERT_STR(ferry_authkeys_get(ak, 1)->fingerprint, fb);
    ASSERT_STR(ferry_authkeys_get(ak, 1)->tenant, "7");
    ASSERT_STR(ferry_authkeys_get(ak, 1)->comment, "");
    ASSERT(ferry_authkeys_get(ak, 2) == NULL);

    /* Revoke: unknown fingerprint, malformed one, then a real one. */
    ASSERT_EQ(ferry_authkeys_revoke(ak, "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", &err),
              FERRY_ENOTFOUND);
    ASSERT_EQ(ferry_authkeys_revoke(ak, "nonsense", &err), FERRY_EUSAGE);
    ASSERT_EQ(ferry_authkeys_reload(srv, &changed, &err), 0);
    ASSERT_EQ(changed, 1);
    ASSERT_EQ(ferry_authkeys_find(srv, fa, &k, &err), 0);
    ASSERT_EQ(ferry_authkeys_revoke(ak, fa, &err), 0);
    ASSERT_EQ(ferry_authkeys_count(ak), 1);
    ASSERT_EQ(sh("grep -c '%s' '%s'", fa, path), 1); /* grep -c prints 0 and exits 1 */
    ASSERT_STR(out, "0");
    /* Revocation reaches the server handle without reopening it. */
    ASSERT_EQ(ferry_authkeys_reload(srv, &changed, &err), 0);
    ASSERT_EQ(changed, 1);
    ASSERT_EQ(ferry_authkeys_find(srv, fa, &k, &err), FERRY_EAUTH);
    ASSERT_EQ(ferry_authkeys_find(srv, fb, &k, &err), 0);
    ASSERT_EQ(ferry_authkeys_revoke(ak, fa, &err), FERRY_ENOTFOUND);

    /* After revoking, the key may be bound to another tenant. */
    snprintf(pub, sizeof(pub), "%s/a.pub", dir);
    ASSERT_EQ(ferry_authkeys_add(ak, "7", pub, NULL, &err), 0);
    ASSERT_EQ(ferry_authkeys_reload(srv, &changed, &err), 0);
    ASSERT_EQ(ferry_authkeys_find(srv, fa, &k, &err), 0);
    ASSERT_STR(k->tenant, "7");

    /* A deleted file is an empty list: every key refused. */
    ASSERT_EQ(sh("rm '%s'", path), 0);
    ASSERT_EQ(ferry_authkeys_reload(srv, &changed, &err), 0);
    ASSERT_EQ(changed, 1);
    ASSERT_EQ(ferry_authkeys_count(srv), 0);
    ASSERT_EQ(ferry_authkeys_find(srv, fb, &k, &err), FERRY_EAUTH);

    ferry_authkeys_free(srv);
    ferry_authkeys_free(ak);
}

/* Hand-written lines and comments survive ferry's rewrites. */
static void test_comments_kept(void)
{
    struct ferry_error err;
    struct ferry_authkeys *ak = NULL;
    char path[600];
    char pub[600];

    snprintf(path, sizeof(path), "%s/kept", dir);
    ASSERT_EQ(sh("cd '%s' && { echo '# operators: see ticket 123'; echo; printf '42\\t%s  "
                 "%%s   spaced   comment  \\r\\n' \"$(openssl pkey -pubin -in a.pub -outform DER "
                 "| base64 -w0)\"; echo '   # indented note'; } > kept && chmod 600 kept",
                 dir, openssl_fpr("a")),
              0);
    ASSERT_EQ(ferry_authkeys_open(path, &ak, &err), 0);
    ASSERT_EQ(ferry_authkeys_count(ak), 1);
    ASSERT_STR(ferry_authkeys_get(ak, 0)->tenant, "42");
    ASSERT_STR(ferry_authkeys_get(ak, 0)->comment, "spaced   comment");
    ASSERT_EQ(ferry_authkeys_get(ak, 0)->line, 3);
    snprintf(pub, sizeof(pub), "%s/b.pub", dir);
    ASSERT_EQ(ferry_authkeys_add(ak, "7", pub, NULL, &err), 0);
    ASSERT_EQ(sh("grep -c -e '^# operators: see ticket 123$' -e '^   # indented note$' '%s'", path),
              0);
    ASSERT_STR(out, "2");
    ASSERT_EQ(ferry_authkeys_revoke(ak, openssl_fpr("a"), &err), 0);
    ASSERT_EQ(sh("grep -c -e '^# operators: see ticket 123$' -e '^   # indented note$' '%s'", path),
              0);
    ASSERT_STR(out, "2");
    ASSERT_EQ(sh("grep -v '^ *#' '%s' | grep -c SHA256", path), 0);
    ASSERT_STR(out, "1");
    ASSERT_EQ(ferry_authkeys_count(ak), 1);
    ASSERT_STR(ferry_authkeys_get(ak, 0)->tenant, "7");
    ferry_authkeys_free(ak);
}

/* A broken file is refused with its line, and a server handle fails closed. */
static void test_bad_files(void)
{
    struct ferry_error err;
    struct ferry_authkeys *ak = NULL;
    struct ferry_authkeys *srv = NULL;
    const struct ferry_authkey *k;
    char path[600];
    char pub[600];
    char fa[128];
    char fb[128];
    int changed;

    snprintf(path, sizeof(path), "%s/bad", dir);
    snprintf(fa, sizeof(fa), "%s", openssl_fpr("a"));
    snprintf(fb, sizeof(fb), "%s", openssl_fpr("b"));
    ASSERT_EQ(sh("cd '%s' && echo \"42 %s $(openssl pkey -pubin -in a.pub -outform DER | base64 "
                 "-w0)\" > good && chmod 600 good && cp good bad",
                 dir, fa),
              0);
    ASSERT_EQ(ferry_authkeys_open(path, &srv, &err), 0);
    ASSERT_EQ(ferry_authkeys_find(srv, fa, &k, &err), 0);

    /* The fingerprint of another key in front of this one. */
    ASSERT_EQ(sh("cd '%s' && echo \"7 %s $(openssl pkey -pubin -in a.pub -outform DER | base64 "
                 "-w0)\" >> bad",
                 dir, fb),
              0);
    ASSERT_EQ(ferry_authkeys_open(path, &ak, &err), FERRY_ECONFIG);
    ASSERT(ak == NULL);
    ASSERT(strstr(err.msg, "bad:2: fingerprint") != NULL);
    ASSERT(strstr(err.msg, "does not match") != NULL);
    /* The open server handle now refuses every key, and keeps saying why. */
    ASSERT_EQ(ferry_authkeys_reload(srv, &changed, &err), FERRY_ECONFIG);
    ASSERT_EQ(ferry_authkeys_find(srv, fa, &k, &err), FERRY_EAUTH);
    ASSERT_EQ(ferry_authkeys_reload(srv, &changed, &err), FERRY_ECONFIG);
    ASSERT(strstr(err.msg, "bad:2:") != NULL);
    /* ...and ferry refuses to rewrite it. */
    snprintf(pub, sizeof(pub), "%s/b.pub", dir);
    ASSERT_EQ(ferry_authkeys_add(srv, "7", pub, NULL, &err), FERRY_ECONFIG);
    ASSERT(strstr(err.msg, "not changing") != NULL);
    /* Fixed file: the server handle recovers on its own. */
    ASSERT_EQ(sh("cd '%s' && cp good bad.new && mv bad.new bad", dir), 0);
    ASSERT_EQ(ferry_authkeys_reload(srv, &changed, &err), 0);
    ASSERT_EQ(changed, 1);
    ASSERT_EQ(ferry_authkeys_find(srv, fa, &k, &err), 0);

    /* Listed twice. */
    ASSERT_EQ(sh("cd '%s' && cat good good > bad", dir), 0);
    ASSERT_EQ(ferry_authkeys_open(path, &ak, &err), FERRY_ECONFIG);
    ASSERT(strstr(err.msg, "listed twice") != NULL);
    /* Bad tenant, bad base64, missing key, not a key, NUL byte. */
    ASSERT_EQ(sh("cd '%s' && sed 's/^42 /4;2 /' good > bad", dir), 0);
    ASSERT_EQ(ferry_authkeys_open(path, &ak, &err), FERRY_ECONFIG);
    ASSERT(strstr(err.msg, "bad:1: tenant") != NULL);
    ASSERT_EQ(sh("cd '%s' && sed 's/ MII/ M*I/' good > bad", dir), 0);
    ASSERT_EQ(ferry_authkeys_open(path, &ak, &err), FERRY_ECONFIG);
    ASSERT(strstr(err.msg, "bad public key") != NULL);
    ASSERT_EQ(sh("cd '%s' && echo '42 %s' > bad", dir, fa), 0);
    ASSERT_EQ(ferry_authkeys_open(path, &ak, &err), FERRY_ECONFIG);
    ASSERT(strstr(err.msg, "public key missing") != NULL);
    ASSERT_EQ(sh("cd '%s' && echo '42 %s Zm9vYmFy' > bad", dir, fa), 0);
    ASSERT_EQ(ferry_authkeys_open(path, &ak, &err), FERRY_ECONFIG);
    ASSERT_EQ(sh("cd '%s' && echo '42 SHA256:short Zm9vYmFy' > bad", dir), 0);
    ASSERT_EQ(ferry_authkeys_open(path, &ak, &err), FERRY_ECONFIG);
    ASSERT(strstr(err.msg, "expected <tenant>") != NULL);
    ASSERT_EQ(sh("cd '%s' && { cat good; printf '#\\000\\n'; } > bad", dir), 0);
    ASSERT_EQ(ferry_authkeys_open(path, &ak, &err), FERRY_ECONFIG);
    ASSERT(strstr(err.msg, "NUL") != NULL);
    /* A line longer than the limit is refused before anything is parsed. */
    ASSERT_EQ(sh("cd '%s' && head -c 9000 /dev/zero | tr '\\0' '#' > bad", dir), 0);
    ASSERT_EQ(ferry_authkeys_open(path, &ak, &err), FERRY_ECONFIG);
    ASSERT(strstr(err.msg, "line longer") != NULL);
    /* Writable by group or others: anyone could grant themselves a tenant. */
    ASSERT_EQ(sh("cd '%s' && cp good bad && chmod 620 bad", dir), 0);
    ASSERT_EQ(ferry_authkeys_open(path, &ak, &err), FERRY_ECONFIG);
    ASSERT(strstr(err.msg, "writable by others; run chmod 600") != NULL);
    ASSERT_EQ(sh("cd '%s' && chmod 602 bad", dir), 0);
    ASSERT_EQ(ferry_authkeys_open(path, &ak, &err), FERRY_ECONFIG);
    ASSERT_EQ(sh("cd '%s' && chmod 644 bad", dir), 0);
    ASSERT_EQ(ferry_authkeys_open(path, &ak, &err), 0);
    ASSERT_EQ(ferry_authkeys_count(ak), 1);

    /* A lock left behind (or held by a concurrent command) stops an edit, naming the file. */
    ASSERT_EQ(sh("cd '%s' && touch bad.lock", dir), 0);
    ASSERT_EQ(ferry_authkeys_revoke(ak, fa, &err), FERRY_ECONFIG);
    ASSERT(strstr(err.msg, "bad.lock exists") != NULL);
    ASSERT_EQ(sh("cd '%s' && grep -c SHA256 bad", dir), 0);
    ASSERT_STR(out, "1");
    ASSERT_EQ(sh("cd '%s' && rm bad.lock", dir), 0);
    ASSERT_EQ(ferry_authkeys_revoke(ak, fa, &err), 0);
    ASSERT_EQ(sh("cd '%s' && stat -c %%a bad", dir), 0);
    ASSERT_STR(out, "600");

    ferry_authkeys_free(ak);
    ferry_authkeys_free(srv);
}

int main(void)
{
    snprintf(dir, sizeof(dir), "%s", test_tmpdir("authkeys"));
    test_tenant_syntax();
    test_add_list_find_revoke();
    test_comments_kept();
    test_bad_files();
    return TEST_DONE();
}
