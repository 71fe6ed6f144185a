/*
 * auth_bench.c - the CPU cost of ferry's authentication, measured with
 * ferry's own functions (common/handshake.h, common/crypto.h); built and
 * run by bench/auth.sh against a build tree's libraries.
 *
 *   auth_bench hs BITS N          median of N complete handshakes (target
 *                                 hello, source challenge, target proof,
 *                                 source check) in ms, keys of BITS bits
 *   auth_bench mac BYTES REQS     seconds for what the MACs of REQS requests
 *                                 whose answers total BYTES cost on both
 *                                 sides: the target signs each request and
 *                                 checks each answer, the source checks
 *                                 each request and signs each answer
 *                                 (SHA-256 of every body, four HMACs)
 */
#include "common/authkeys.h"
#include "common/crypto.h"
#include "common/handshake.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

static void die(const char *what, const struct ferry_error *err)
{
    fprintf(stderr, "auth_bench: %s: %s\n", what, err->msg);
    exit(1);
}

static int bench_hs(unsigned bits, int n)
{
    struct ferry_error err = {0};
    struct ferry_key *src = NULL, *dst = NULL, *dstpub = NULL;
    struct ferry_authkeys *ak = NULL;
    struct ferry_hs_server *s = NULL;
    struct ferry_buf spki;
    char dir[] = "/tmp/ferry-auth-bench.XXXXXX";
    char path[128];
    double *t = calloc((size_t)n, sizeof(*t));

    if (!t || !mkdtemp(dir))
        return 1;
    snprintf(path, sizeof(path), "%s/authorized_keys", dir);
    ferry_buf_init(&spki, 4096);
    if (ferry_key_generate(bits, &src, &err) || ferry_key_generate(bits, &dst, &err) ||
        ferry_key_spki(dst, &spki, &err) ||
        ferry_key_from_spki(spki.data, spki.len, &dstpub, &err) ||
        ferry_authkeys_open(path, &ak, &err) ||
        ferry_authkeys_add_key(ak, "1", dstpub, NULL, &err) ||
        ferry_hs_server_new(src, ak, NULL, &s, &err))
        die("setup", &err);
    for (int i = 0; i < n; i++) {
        struct ferry_hs_client *c = NULL;
        struct ferry_hs_session sess;
        struct ferry_buf hello, ch, proof;
        double t0 = now();
        int64_t ts = (int64_t)time(NULL);

        ferry_buf_init(&hello, FERRY_HS_MSG_MAX);
        ferry_buf_init(&ch, FERRY_HS_MSG_MAX);
        ferry_buf_init(&proof, FERRY_HS_MSG_MAX);
        if (ferry_hs_client_new(dst, src, "1", 0, &c, &err) ||
            ferry_hs_client_hello(c, ts, &hello, &err) ||
            ferry_hs_server_hello(s, hello.data, hello.len, ts, &ch, NULL, &err) ||
            ferry_hs_client_challenge(c, ch.data, ch.len, ts, &proof, &sess, &err) ||
            ferry_hs_server_proof(s, proof.data, proof.len, ts, NULL, &err))
            die("handshake", &err);
        t[i] = (now() - t0) * 1000;
        ferry_hs_session_clear(&sess);
        ferry_hs_client_free(c);
        ferry_buf_release(&hello);
        ferry_buf_release(&ch);
        ferry_buf_release(&proof);
    }
    qsort(t, (size_t)n, sizeof(*t), cmp);
    printf("%.2f\n", t[n / 2]);
    ferry_hs_server_free(s);
    ferry_authkeys_free(ak);
    ferry_key_free(src);
    ferry_key_free(dst);
    ferry_key_free(dstpub);
    ferry_buf_release(&spki);
    unlink(path);
    rmdir(dir);
    free(t);
    return 0;
}

static int bench_mac(size_t bytes, size_t reqs)
{
    struct ferry_error err = {0};
    unsigned char secret[FERRY_HS_SECRET_LEN] = {1};
    unsigned char hash[FERRY_SHA256_LEN], mac[FERRY_HMAC_LEN];
    const char req[] =
        "{\"v\":1,\"tenant\":\"1\",\"table\":\"posts\",\"after\":[123456],\"limit\":5000}";
    size_t page = reqs ? bytes / reqs : bytes;
    char *body = malloc(page ? page : 1);
    double t0;

    if (!body)
        return 1;
    memset(body, 'x', page);
    t0 = now();
    for (size_t i = 0; i < reqs; i++) {
        /* each side hashes each body once and computes or checks two MACs */
        for (int side = 0; side < 2; side++) {
            if (ferry_sha256(req, sizeof(req) - 1, hash, &err) ||
                ferry_hs_mac_request(secret, "POST", "/v1/snapshot", "", i + 1, hash, mac, &err) ||
                ferry_sha256(body, page, hash, &err) ||
                ferry_hs_mac_response(secret, i + 1, 200, hash, mac, &err))
                die("mac", &err);
        }
    }
    printf("%.4f\n", now() - t0);
    free(body);
    return 0;
}

int main(int argc, char **argv)
{
    long n = argc == 4 ? strtol(argv[3], NULL, 10) : 0;

    if (argc == 4 && strcmp(argv[1], "hs") == 0)
        return bench_hs((unsigned)strtoul(argv[2], NULL, 10), n > 0 && n < 100000 ? (int)n : 1);
    if (argc == 4 && strcmp(argv[1], "mac") == 0)
        return bench_mac((size_t)strtoull(argv[2], NULL, 10), (size_t)strtoull(argv[3], NULL, 10));
    fprintf(stderr, "usage: auth_bench hs BITS N | mac BYTES REQS\n");
    return 2;
}
