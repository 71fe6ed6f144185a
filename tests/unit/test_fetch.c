/*
 * test_fetch.c - agent-dst/fetch against a tiny HTTP server forked by the
 * test: byte-exact bodies, keep-alive, size limits, unreachable and vanishing
 * sources, and error answers with and without a ferry error body. The
 * server is a source as far as authentication goes (common/handshake.h: the
 * handshake, request MACs checked, every answer MACed), so the client runs as
 * it does for real; a few paths answer without a MAC, with a wrong one, or
 * ask for a new session, to show what the client makes of that.
 */
#include "test.h"

#include "agent-dst/fetch.h"
#include "common/authkeys.h"
#include "common/crypto.h"
#include "common/handshake.h"
#include "proto/proto.h"

#include <curl/curl.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define BIG 5000

static char errbody[512], protobody[512];
static size_t errbody_len, protobody_len;

/* Key files, made once by main(). */
static char src_key[600], src_pub[600], dst_key[600], dst_pub[600], authkeys[600];

/* The child's authentication state, and what the request being answered established. */
static struct ferry_key *srv_identity;
static struct ferry_authkeys *srv_keys;
static struct ferry_hs_server *srv_hs;
static struct ferry_hs_peer cur;
static uint64_t cur_counter;
static int cur_ok;      /* the request was authenticated: answers carry a MAC */
static int mac_mode;    /* 0 right MAC, 1 none, 2 a wrong one */
static int hellos;      /* handshakes started */
static int renew_asked; /* /v1/renew-once has asked once */

static int listen_any(int *port)
{
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;

    ASSERT(fd >= 0);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ASSERT_EQ(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    ASSERT_EQ(listen(fd, 8), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

/* ---- the server (child process) ---- */

static void write_all(int fd, const void *p, size_t n)
{
    const char *s = p;

    while (n > 0) {
        ssize_t w = write(fd, s, n);

        if (w <= 0)
            _exit(3);
        s += w;
        n -= (size_t)w;
    }
}

/* "X-Ferry-Mac: ...\r\n" for an answer to the current request, or "" when it gets none. */
static void mac_line(int status, const void *body, size_t len, char *out, size_t outsz)
{
    unsigned char hash[FERRY_SHA256_LEN], mac[FERRY_HMAC_LEN];
    char hex[2 * FERRY_HMAC_LEN + 1];

    out[0] = '\0';
    if (!cur_ok || mac_mode == 1)
        return;
    if (ferry_sha256(body, len, hash, NULL) ||
        ferry_hs_mac_response(cur.secret, cur_counter, status, hash, mac, NULL))
        _exit(7);
    if (mac_mode == 2)
        mac[0] ^= 1;
    ferry_hex_encode(mac, sizeof(mac), hex);
    snprintf(out, outsz, "X-Ferry-Mac: %s\r\n", hex);
}

static void respond(int fd, int status, const char *type, const void *body, size_t len)
{
    char head[512], mac[128];
    int n;

    mac_line(status, body, len, mac, sizeof(mac));
    n = snprintf(head, sizeof(head),
                 "HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s\r\n", status, type,
                 len, mac);
    write_all(fd, head, (size_t)n);
    write_all(fd, body, len);
}

static const char *header(const char *head, const char *name)
{
    size_t n = strlen(name);

    for (const char *p = strstr(head, "\r\n"); p; p = strstr(p + 2, "\r\n"))
        if (strncasecmp(p + 2, name, n) == 0 && p[2 + n] == ':')
            return p + 3 + n;
    return NULL;
}

/* The trimmed value of header name in head, into out; 0 when absent or too long. */
static int hval(const char *head, const char *name, char *out, size_t outsz)
{
    const char *v = header(head, name);
    size_t n;

    if (!v)
        return 0;
    while (*v == ' ')
        v++;
    n = strcspn(v, "\r\n");
    if (n >= outsz)
        return 0;
    memcpy(out, v, n);
    out[n] = '\0';
    return 1;
}

static void refuse(int fd, int status, const char *msg, int renew)
{
    char *b = NULL;
    size_t n = 0;
    char head[256];
    int hn;

    if (ferry_errmsg_encode(status == 403 ? FERRY_EFORBIDDEN : FERRY_EAUTH, msg, &b, &n))
        _exit(8);
    hn = snprintf(head, sizeof(head),
                  "HTTP/1.1 %d X\r\nContent-Type: application/msgpack\r\nContent-Length: "
                  "%zu\r\n%s\r\n",
                  status, n, renew ? "X-Ferry-Auth: renew\r\n" : "");
    write_all(fd, head, (size_t)hn);
    write_all(fd, b, n);
    free(b);
}

/*
 * The source's side of authentication for one POST: the handshake paths
 * are answered here, and so is a request that fails its check. Returns 1
 * when it answered, 0 when the request is authenticated (cur_ok) and the
 * path is to be served.
 */
static int auth_step(int fd, const char *path, const char *head, const char *body, size_t len)
{
    struct ferry_error e = {0};
    struct ferry_buf out;
    char sid[64], ctr[32], machex[80];
    unsigned char hash[FERRY_SHA256_LEN], mac[FERRY_HMAC_LEN];
    int64_t now = (int64_t)time(NULL);
    int rc;

    if (strcmp(path, "/v1/session/hello") == 0) {
        hellos++;
        ferry_buf_init(&out, FERRY_HS_MSG_MAX);
        rc = ferry_hs_server_hello(srv_hs, body, len, now, &out, NULL, &e);
        if (rc)
            refuse(fd, rc == FERRY_EFORBIDDEN ? 403 : 401, e.msg, 0);
        else
            respond(fd, 200, "application/octet-stream", out.data, out.len);
        ferry_buf_release(&out);
        return 1;
    }
    if (strcmp(path, "/v1/session/proof") == 0) {
        rc = ferry_hs_server_proof(srv_hs, body, len, now, NULL, &e);
        if (rc)
            refuse(fd, 401, e.msg, 0);
        else
            respond(fd, 200, "application/octet-stream", "", 0);
        return 1;
    }
    if (strcmp(path, "/v1/renew-once") == 0 && !renew_asked) {
        renew_asked = 1;
        refuse(fd, 401, "session expired (renew it)", 1);
        return 1;
    }
    if (!hval(head, "X-Ferry-Session", sid, sizeof(sid)) ||
        !hval(head, "X-Ferry-Counter", ctr, sizeof(ctr)) ||
        !hval(head, "X-Ferry-Mac", machex, sizeof(machex)) ||
        ferry_hs_parse_counter(ctr, &cur_counter, NULL) ||
        ferry_hex_decode(machex, strlen(machex), mac, sizeof(mac), NULL)) {
        refuse(fd, 401, "request without a session", 0);
        return 1;
    }
    if (ferry_sha256(body, len, hash, NULL))
        _exit(9);
    rc = ferry_hs_server_request(srv_hs, sid, cur_counter, "POST", path, "", hash, mac, sizeof(mac),
                                 now, &cur, &e);
    if (rc) {
        refuse(fd, 401, e.msg, strncmp(e.msg, "unknown session", 15) == 0);
        return 1;
    }
    cur_ok = 1;
    return 0;
}

/*
 * Serve requests until /quit. Returns nonzero when the connection is to be
 * closed (by the client or on purpose).
 */
static int serve_one(int fd, int conn, int *nreq)
{
    static char req[65536];
    char method[16], path[256], text[128];
    size_t got = 0, hlen, clen = 0;
    const char *end, *cl;

    for (;;) {
        ssize_t r;

        if (got == sizeof(req) - 1)
            _exit(4);
        r = read(fd, req + got, sizeof(req) - 1 - got);
        if (r <= 0)
            return 1;
        got += (size_t)r;
        req[got] = '\0';
        end = strstr(req, "\r\n\r\n");
        if (!end)
            continue;
        hlen = (size_t)(end - req) + 4;
        cl = header(req, "Content-Length");
        clen = cl ? strtoul(cl, NULL, 10) : 0;
        if (hlen + clen > sizeof(req) - 1)
            _exit(4);
        if (got >= hlen + clen)
            break;
    }
    if (sscanf(req, "%15s %255s", method, path) != 2)
        _exit(5);
    (*nreq)++;
    cur_ok = 0;
    mac_mode = 0;
    if (strcmp(method, "POST") == 0 && auth_step(fd, path, req, req + hlen, clen))
        return 0;

    if (strcmp(path, "/v1/echo") == 0) {
        const char *ct = header(req, "Content-Type");
        const char *ac = header(req, "Accept");

        if (strcmp(method, "POST") != 0 || !ct || strncmp(ct, " application/msgpack\r", 21) != 0 ||
            !ac || strncmp(ac, " application/msgpack\r", 21) != 0) {
            respond(fd, 400, "text/plain", "bad headers", 11);
            return 0;
        }
        respond(fd, 200, "application/msgpack", req + hlen, clen);
    } else if (strcmp(path, "/v1/count") == 0) {
        int n = snprintf(text, sizeof(text), "conn=%d req=%d", conn, *nreq);

        respond(fd, 200, "text/plain", text, (size_t)n);
    } else if (strcmp(path, "/v1/hellos") == 0) {
        int n = snprintf(text, sizeof(text), "hellos=%d", hellos);

        respond(fd, 200, "text/plain", text, (size_t)n);
    } else if (strcmp(path, "/v1/renew-once") == 0) {
        respond(fd, 200, "text/plain", "renewed", 7);
    } else if (strcmp(path, "/v1/nomac") == 0 || strcmp(path, "/v1/badmac") == 0) {
        mac_mode = path[4] == 'n' ? 1 : 2;
        respond(fd, 200, "application/msgpack", "rows", 4);
    } else if (strcmp(path, "/metrics") == 0) {
        respond(fd, strcmp(method, "GET") == 0 ? 200 : 405, "text/plain", "ferry_up 1\n", 11);
    } else if (strcmp(path, "/v1/big") == 0) {
        static char big[BIG];

        memset(big, 'b', sizeof(big));
        respond(fd, 200, "application/msgpack", big, sizeof(big));
    } else if (strcmp(path, "/v1/bigchunked") == 0) {
        /* no Content-Length: only the write callback can notice the size */
        static char all[BIG];
        char head[256], mac[128];
        char chunk[1000 + 16];
        int hn;

        memset(all, 'c', sizeof(all));
        mac_line(200, all, sizeof(all), mac, sizeof(mac));
        hn = snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n%s\r\n",
                      mac);
        /*
         * A client over its limit hangs up mid-body: a write that fails
         * then ends this connection, not the server (write_all would).
         */
        if (write(fd, head, (size_t)hn) != hn)
            return 1;
        for (int i = 0; i < BIG / 1000; i++) {
            int n = snprintf(chunk, sizeof(chunk), "3e8\r\n");

            memset(chunk + n, 'c', 1000);
            memcpy(chunk + n + 1000, "\r\n", 2);
            if (write(fd, chunk, (size_t)n + 1002) != (ssize_t)n + 1002)
                return 1;
        }
        if (write(fd, "0\r\n\r\n", 5) != 5)
            return 1;
    } else if (strcmp(path, "/v1/cut") == 0) {
        static const char head[] = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789";

        write_all(fd, head, sizeof(head) - 1);
        return 1;
    } else if (strcmp(path, "/v1/html500") == 0) {
        respond(fd, 500, "text/html", "<html>oops</html>", 17);
    } else if (strcmp(path, "/v1/ferry403") == 0) {
        respond(fd, 403, "application/msgpack", errbody, errbody_len);
    } else if (strcmp(path, "/v1/ferry400") == 0) {
        respond(fd, 400, "application/msgpack", protobody, protobody_len);
    } else if (strcmp(path, "/quit") == 0) {
        respond(fd, 200, "text/plain", "bye", 3);
        _exit(0);
    } else {
        respond(fd, 404, "text/plain", "no", 2);
    }
    return 0;
}

static pid_t start_server(int *port)
{
    int lfd = listen_any(port);
    pid_t pid = fork();

    ASSERT(pid >= 0);
    if (pid == 0) {
        struct ferry_error err = {0};
        int conn = 0, nreq = 0;

        alarm(60); /* never outlive a broken test */
        if (ferry_key_load_private(src_key, &srv_identity, &err) ||
            ferry_authkeys_open(authkeys, &srv_keys, &err) ||
            ferry_hs_server_new(srv_identity, srv_keys, NULL, &srv_hs, &err))
            _exit(10);
        for (;;) {
            int fd = accept(lfd, NULL, NULL);

            if (fd < 0)
                _exit(6);
            conn++;
            while (!serve_one(fd, conn, &nreq))
                ;
            close(fd);
        }
    }
    close(lfd);
    return pid;
}

/* ---- the tests ---- */

/* A config naming the test's keys, for tenant 42 (cfg borrows the strings). */
static void auth_config(struct ferry_config *cfg, char *url)
{
    static char tenant[] = "42";

    memset(cfg, 0, sizeof(*cfg));
    cfg->source.url = url;
    cfg->source.public_key = src_pub;
    cfg->target.identity = dst_key;
    cfg->target.tenant = tenant;
}

static struct ferry_client *client_for(int port)
{
    struct ferry_config cfg;
    struct ferry_error err = {0};
    struct ferry_client *c = NULL;
    char url[64];

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", port); /* trailing '/' is dropped */
    auth_config(&cfg, url);
    ASSERT_EQ(ferry_client_new(&cfg, &c, &err), FERRY_OK);
    ASSERT(c != NULL);
    return c;
}

static void test_config(void)
{
    struct ferry_config cfg;
    struct ferry_error err = {0};
    struct ferry_client *c = NULL;
    char url[] = "ftp://example.invalid/";
    char http[] = "http://127.0.0.1:1";
    char loose[700];

    memset(&cfg, 0, sizeof(cfg));
    ASSERT_EQ(ferry_client_new(&cfg, &c, &err), FERRY_ECONFIG);
    ASSERT(strstr(err.msg, "[source] url") != NULL);
    cfg.source.url = url;
    ASSERT_EQ(ferry_client_new(&cfg, &c, &err), FERRY_ECONFIG);
    ASSERT(c == NULL);

    /* no unauthenticated client: each key missing is named, with the command that makes it */
    auth_config(&cfg, http);
    cfg.target.identity = NULL;
    ASSERT_EQ(ferry_client_new(&cfg, &c, &err), FERRY_ECONFIG);
    ASSERT(strstr(err.msg, "[target] identity is missing") != NULL);
    ASSERT(strstr(err.msg, "ferry-dst keygen") != NULL);
    auth_config(&cfg, http);
    cfg.source.public_key = NULL;
    ASSERT_EQ(ferry_client_new(&cfg, &c, &err), FERRY_ECONFIG);
    ASSERT(strstr(err.msg, "[source] public_key is missing") != NULL);
    ASSERT(c == NULL);

    /* a private key others can read is refused, saying how to fix it */
    snprintf(loose, sizeof(loose), "%s/loose.key", test_tmpdir("fetch-loose"));
    {
        FILE *in = fopen(dst_key, "rb"), *out = fopen(loose, "wb");
        char buf[8192];
        size_t n;

        ASSERT(in && out);
        n = fread(buf, 1, sizeof(buf), in);
        ASSERT_EQ(fwrite(buf, 1, n, out), n);
        fclose(in);
        fclose(out);
    }
    ASSERT_EQ(chmod(loose, 0644), 0);
    auth_config(&cfg, http);
    cfg.target.identity = loose;
    ASSERT_EQ(ferry_client_new(&cfg, &c, &err), FERRY_ECONFIG);
    ASSERT(strstr(err.msg, "chmod 600") != NULL);
    ASSERT(c == NULL);
}

static void test_server(void)
{
    unsigned char body[3000];
    struct ferry_error err = {0};
    struct ferry_client *c;
    char *resp = NULL;
    size_t len = 0;
    int port, status;
    pid_t pid = start_server(&port);

    c = client_for(port);

    /* binary with NUL bytes, both ways, byte-exact */
    for (size_t i = 0; i < sizeof(body); i++)
        body[i] = (unsigned char)(i * 7 % 256);
    body[0] = 0;
    body[1] = 0;
    ASSERT_EQ(ferry_client_post(c, "/v1/echo", (const char *)body, sizeof(body), 1 << 20, &resp,
                                &len, &err),
              FERRY_OK);
    ASSERT_EQ(len, sizeof(body));
    ASSERT(memcmp(resp, body, sizeof(body)) == 0);
    free(resp);

    /* an empty body is a valid answer: a non-NULL empty string */
    ASSERT_EQ(ferry_client_post(c, "/v1/echo", NULL, 0, 100, &resp, &len, &err), FERRY_OK);
    ASSERT(resp != NULL);
    ASSERT_EQ(len, 0);
    free(resp);

    /* exactly max_resp bytes is allowed */
    ASSERT_EQ(ferry_client_post(c, "/v1/big", "", 0, BIG, &resp, &len, &err), FERRY_OK);
    ASSERT_EQ(len, BIG);
    ASSERT(resp[0] == 'b' && resp[BIG - 1] == 'b' && resp[BIG] == '\0');
    free(resp);

    /* keep-alive: consecutive requests share one connection (the handshake's two first) */
    ASSERT_EQ(ferry_client_post(c, "/v1/count", "", 0, 100, &resp, &len, &err), FERRY_OK);
    ASSERT_STR(resp, "conn=1 req=6");
    free(resp);
    ASSERT_EQ(ferry_client_get(c, "/metrics", 100, &resp, &len, &err), FERRY_OK);
    ASSERT_STR(resp, "ferry_up 1\n");
    ASSERT_EQ(len, 11);
    free(resp);
    ASSERT_EQ(ferry_client_post(c, "/v1/count", "x", 1, 100, &resp, &len, &err), FERRY_OK);
    ASSERT_STR(resp, "conn=1 req=8");
    free(resp);

    /* an answer is handed over only when its MAC verifies: none, or a wrong one, is refused */
    resp = (char *)1;
    ASSERT_EQ(ferry_client_post(c, "/v1/nomac", "", 0, 100, &resp, &len, &err), FERRY_EAUTH);
    ASSERT(strstr(err.msg, "response from the source failed authentication") != NULL);
    ASSERT(resp == NULL);
    ASSERT_EQ(ferry_client_post(c, "/v1/badmac", "", 0, 100, &resp, &len, &err), FERRY_EAUTH);
    ASSERT(strstr(err.msg, "response from the source failed authentication") != NULL);
    ASSERT(resp == NULL);
    /* the session survives a bad answer, and a source that asks for a new one gets it, once */
    ASSERT_EQ(ferry_client_post(c, "/v1/hellos", "", 0, 100, &resp, &len, &err), FERRY_OK);
    ASSERT_STR(resp, "hellos=1");
    free(resp);
    ASSERT_EQ(ferry_client_post(c, "/v1/renew-once", "", 0, 100, &resp, &len, &err), FERRY_OK);
    ASSERT_STR(resp, "renewed");
    free(resp);
    ASSERT_EQ(ferry_client_post(c, "/v1/hellos", "", 0, 100, &resp, &len, &err), FERRY_OK);
    ASSERT_STR(resp, "hellos=2");
    free(resp);

    /* over max_resp: by Content-Length, and by counting a chunked body */
    resp = (char *)1;
    ASSERT_EQ(ferry_client_post(c, "/v1/big", "", 0, BIG - 1, &resp, &len, &err), FERRY_ETOOBIG);
    ASSERT(resp == NULL);
    ASSERT_STR(err.msg, "response from the source is larger than 4999 bytes");
    ASSERT_EQ(ferry_client_post(c, "/v1/bigchunked", "", 0, 1000, &resp, &len, &err),
              FERRY_ETOOBIG);
    ASSERT_STR(err.msg, "response from the source is larger than 1000 bytes");
    ASSERT_EQ(ferry_client_post(c, "/v1/bigchunked", "", 0, BIG, &resp, &len, &err), FERRY_OK);
    ASSERT_EQ(len, BIG);
    ASSERT(resp[0] == 'c' && resp[BIG - 1] == 'c');
    free(resp);

    /* a non-200 without a ferry error body */
    ASSERT_EQ(ferry_client_post(c, "/v1/html500", "", 0, 100, &resp, &len, &err), FERRY_EPROTO);
    ASSERT(strstr(err.msg, "HTTP 500") != NULL);
    ASSERT(resp == NULL);
    ASSERT_EQ(ferry_client_get(c, "/nothing", 100, &resp, &len, &err), FERRY_EPROTO);
    ASSERT_STR(err.msg, "source answered HTTP 404");

    /* a non-200 with one: the source's code and words */
    ASSERT_EQ(ferry_client_post(c, "/v1/ferry403", "", 0, 1000, &resp, &len, &err),
              FERRY_EFORBIDDEN);
    ASSERT(strncmp(err.msg, "source: key not bound", 21) == 0);
    ASSERT(strstr(err.msg, "to tenant 42") != NULL);
    for (const char *p = err.msg; *p; p++)
        ASSERT((unsigned char)*p >= 0x20);
    /* the source's own EPROTO (our request was bad) is shown, not hidden */
    ASSERT_EQ(ferry_client_post(c, "/v1/ferry400", "", 0, 1000, &resp, &len, &err), FERRY_EPROTO);
    ASSERT_STR(err.msg, "source: request: missing field \"tenant\"");

    /* the source vanishing mid-body */
    ASSERT_EQ(ferry_client_post(c, "/v1/cut", "", 0, 5000, &resp, &len, &err), FERRY_EUNREACHABLE);
    ASSERT(strstr(err.msg, "cannot reach the source at http://127.0.0.1:") != NULL);
    ASSERT(strstr(err.msg, "check that ferry-src serve is running and [source] url") != NULL);
    ASSERT(resp == NULL);

    /* and the client still works afterwards, on a new connection, in the same session */
    ASSERT_EQ(ferry_client_post(c, "/v1/count", "", 0, 100, &resp, &len, &err), FERRY_OK);
    ASSERT_STR(resp, "conn=4 req=25");
    free(resp);
    ASSERT_EQ(ferry_client_post(c, "/v1/hellos", "", 0, 100, &resp, &len, &err), FERRY_OK);
    ASSERT_STR(resp, "hellos=2");
    free(resp);

    ASSERT_EQ(ferry_client_get(c, "/quit", 100, &resp, &len, &err), FERRY_OK);
    free(resp);
    ferry_client_free(c);
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
}

/* A source that is not the pinned one is refused in the handshake; nothing is returned. */
static void test_pinned(void)
{
    struct ferry_error err = {0};
    struct ferry_config cfg;
    struct ferry_client *c;
    char *resp = (char *)1;
    char url[64];
    size_t len;
    int port, status;
    pid_t pid = start_server(&port);

    snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
    auth_config(&cfg, url);
    cfg.source.public_key = dst_pub;
    ASSERT_EQ(ferry_client_new(&cfg, &c, &err), FERRY_OK);
    ASSERT_EQ(ferry_client_post(c, "/v1/count", "", 0, 100, &resp, &len, &err), FERRY_EAUTH);
    ASSERT(strstr(err.msg, "is not the pinned source key") != NULL);
    ASSERT(resp == NULL);
    ferry_client_free(c);

    c = client_for(port);
    ASSERT_EQ(ferry_client_get(c, "/quit", 100, &resp, &len, &err), FERRY_OK);
    free(resp);
    ferry_client_free(c);
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
}

/* Key files for both sides, and the source's authorised keys (the target's, tenant 42). */
static void make_keys(void)
{
    const char *dir = test_tmpdir("fetch-keys");
    struct ferry_error err = {0};
    struct ferry_authkeys *ak = NULL;
    struct ferry_key *k = NULL;

    snprintf(src_key, sizeof(src_key), "%s/src.key", dir);
    snprintf(src_pub, sizeof(src_pub), "%s/src.key.pub", dir);
    snprintf(dst_key, sizeof(dst_key), "%s/dst.key", dir);
    snprintf(dst_pub, sizeof(dst_pub), "%s/dst.key.pub", dir);
    snprintf(authkeys, sizeof(authkeys), "%s/authorized_keys", dir);
    ASSERT_EQ(ferry_key_generate(2048, &k, &err), FERRY_OK);
    ASSERT_EQ(ferry_key_save(k, src_key, &err), FERRY_OK);
    ferry_key_free(k);
    ASSERT_EQ(ferry_key_generate(2048, &k, &err), FERRY_OK);
    ASSERT_EQ(ferry_key_save(k, dst_key, &err), FERRY_OK);
    ASSERT_EQ(ferry_authkeys_open(authkeys, &ak, &err), FERRY_OK);
    ASSERT_EQ(ferry_authkeys_add_key(ak, "42", k, NULL, &err), FERRY_OK);
    ferry_authkeys_free(ak);
    ferry_key_free(k);
}

static void test_refused(void)
{
    struct ferry_error err = {0};
    struct ferry_client *c;
    char *resp = NULL;
    char want[128];
    size_t len;
    int port;

    /* a port that was just free: nothing listens there now */
    close(listen_any(&port));
    c = client_for(port);
    ASSERT_EQ(ferry_client_post(c, "/v1/manifest", "x", 1, 100, &resp, &len, &err),
              FERRY_EUNREACHABLE);
    snprintf(want, sizeof(want), "cannot reach the source at http://127.0.0.1:%d: ", port);
    ASSERT(strncmp(err.msg, want, strlen(want)) == 0);
    ASSERT(resp == NULL);
    ferry_client_free(c);
}

int main(void)
{
    char *eb = NULL;

    /* a source's error answer; a control byte in it must not reach the terminal raw */
    ASSERT_EQ(ferry_errmsg_encode(FERRY_EFORBIDDEN, "key not bound\x1b[2J to tenant 42", &eb,
                                  &errbody_len),
              FERRY_OK);
    ASSERT(errbody_len <= sizeof(errbody));
    memcpy(errbody, eb, errbody_len);
    free(eb);
    ASSERT_EQ(
        ferry_errmsg_encode(FERRY_EPROTO, "request: missing field \"tenant\"", &eb, &protobody_len),
        FERRY_OK);
    ASSERT(protobody_len <= sizeof(protobody));
    memcpy(protobody, eb, protobody_len);
    free(eb);

    signal(SIGPIPE, SIG_IGN);
    make_keys();
    ASSERT_EQ(curl_global_init(CURL_GLOBAL_DEFAULT), CURLE_OK);
    test_config();
    test_server();
    test_pinned();
    test_refused();
    curl_global_cleanup();
    return TEST_DONE();
}
