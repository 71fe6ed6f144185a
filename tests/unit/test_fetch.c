/*
 * test_fetch.c - agent-dst/fetch against a tiny HTTP server forked by the
 * test: byte-exact bodies, keep-alive, size limits, unreachable and vanishing
 * sources, and error answers with and without a ferry error body.
 */
#include "test.h"

#include "agent-dst/fetch.h"
#include "proto/proto.h"

#include <curl/curl.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>

#define BIG 5000

static char errbody[512], protobody[512];
static size_t errbody_len, protobody_len;

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

static void respond(int fd, int status, const char *type, const void *body, size_t len)
{
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %zu\r\n\r\n", status,
                     type, len);

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
    } else if (strcmp(path, "/metrics") == 0) {
        respond(fd, strcmp(method, "GET") == 0 ? 200 : 405, "text/plain", "ferry_up 1\n", 11);
    } else if (strcmp(path, "/v1/big") == 0) {
        static char big[BIG];

        memset(big, 'b', sizeof(big));
        respond(fd, 200, "application/msgpack", big, sizeof(big));
    } else if (strcmp(path, "/v1/bigchunked") == 0) {
        /* no Content-Length: only the write callback can notice the size */
        static const char head[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        char chunk[1000 + 16];

        write_all(fd, head, sizeof(head) - 1);
        for (int i = 0; i < BIG / 1000; i++) {
            int n = snprintf(chunk, sizeof(chunk), "3e8\r\n");

            memset(chunk + n, 'c', 1000);
            memcpy(chunk + n + 1000, "\r\n", 2);
            write_all(fd, chunk, (size_t)n + 1002);
        }
        write_all(fd, "0\r\n\r\n", 5);
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
        int conn = 0, nreq = 0;

        alarm(60); /* never outlive a broken test */
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

static struct ferry_client *client_for(int port)
{
    struct ferry_config cfg;
    struct ferry_error err = {0};
    struct ferry_client *c = NULL;
    char url[64];

    memset(&cfg, 0, sizeof(cfg));
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", port); /* trailing '/' is dropped */
    cfg.source.url = url;
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

    memset(&cfg, 0, sizeof(cfg));
    ASSERT_EQ(ferry_client_new(&cfg, &c, &err), FERRY_ECONFIG);
    ASSERT(strstr(err.msg, "[source] url") != NULL);
    cfg.source.url = url;
    ASSERT_EQ(ferry_client_new(&cfg, &c, &err), FERRY_ECONFIG);
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

    /* keep-alive: consecutive requests share one connection */
    ASSERT_EQ(ferry_client_post(c, "/v1/count", "", 0, 100, &resp, &len, &err), FERRY_OK);
    ASSERT_STR(resp, "conn=1 req=4");
    free(resp);
    ASSERT_EQ(ferry_client_get(c, "/metrics", 100, &resp, &len, &err), FERRY_OK);
    ASSERT_STR(resp, "ferry_up 1\n");
    ASSERT_EQ(len, 11);
    free(resp);
    ASSERT_EQ(ferry_client_post(c, "/v1/count", "x", 1, 100, &resp, &len, &err), FERRY_OK);
    ASSERT_STR(resp, "conn=1 req=6");
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

    /* and the client still works afterwards, on a new connection */
    ASSERT_EQ(ferry_client_post(c, "/v1/count", "", 0, 100, &resp, &len, &err), FERRY_OK);
    ASSERT_STR(resp, "conn=4 req=15");
    free(resp);

    ASSERT_EQ(ferry_client_get(c, "/quit", 100, &resp, &len, &err), FERRY_OK);
    free(resp);
    ferry_client_free(c);
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
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
    ASSERT_EQ(curl_global_init(CURL_GLOBAL_DEFAULT), CURLE_OK);
    test_config();
    test_server();
    test_refused();
    curl_global_cleanup();
    return TEST_DONE();
}
