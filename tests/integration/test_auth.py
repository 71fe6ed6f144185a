#!/usr/bin/env python3
"""Authentication (DESIGN.md, issue 3): the source serves a tenant only to a
key bound to it, the target accepts data only from its pinned source.

Every refusal is shown from the outside: ferry-dst's exit status and its one
line, the HTTP status the source gives a hand-driven client (ferryauth), and
the target database, read with sqlite3, which must hold no rows afterwards.
Answers to refused requests are searched for the rows they must not carry
(tenant 2's values, and any row at all for a request that was not served).
"""

import hashlib
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferryauth as fa  # noqa: E402
import ferrytest as ft  # noqa: E402

MANIFEST = {"v": 1, "tenant": "1", "after": -1, "counts": True}
SNAPSHOT = {"v": 1, "tenant": "1", "table": "posts", "after": None, "limit": 1000}
CHANGES = {"v": 1, "tenant": "1", "after": 0, "limit": 1000}
DIGEST = {"v": 1, "tenant": "1", "table": "posts", "lo": None, "hi": None, "parts": 4}
ROWS = {"v": 1, "tenant": "1", "table": "teams", "keys": [[1], [2]]}
FREEZE = {"v": 1, "tenant": "1", "on": False}
BODIES = {"manifest": MANIFEST, "snapshot": SNAPSHOT, "changes": CHANGES, "digest": DIGEST,
          "rows": ROWS, "freeze": FREEZE}

# Tenant values a target bound to tenant 1 might try: another tenant, SQL,
# numbers that are not quite 1, huge, negative, empty, long.
HOSTILE_TENANTS = ["2", "2 OR 1=1", "1 OR 1=1", "1' OR '1'='1", "1; DROP TABLE teams", "1--",
                   "-1", "-2", "0", "01", "+1", "1.0", " 1", "1 ", "99999999999999999999999",
                   "-9223372036854775808", "1" * 300, "", "%", "*", "1\x00", "\u0661"]


def target_rows(db):
    """Rows in every table of the target database file (0 when it does not exist)."""
    if not os.path.exists(db):
        return 0
    conn = sqlite3.connect(db)
    try:
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite%'")]
        return sum(conn.execute('SELECT count(*) FROM "%s"' % n).fetchone()[0] for n in names)
    finally:
        conn.close()


def run_dst_env(args, env, timeout=300):
    """ferry-dst with extra environment; str output; fails on a sanitizer report."""
    cp = subprocess.run([ft.FERRY_DST] + list(args), capture_output=True, timeout=timeout,
                        env=dict(os.environ, **env))
    cp.stdout = cp.stdout.decode(errors="replace")
    cp.stderr = cp.stderr.decode(errors="replace")
    bad = ft.sanitizer_report(cp.stderr)
    if bad:
        raise AssertionError("ferry-dst sanitizer report: %s\n%s" % (bad, cp.stderr[-4000:]))
    return cp


def self_signed(dirpath, name):
    """A self-signed certificate for 127.0.0.1 made with the openssl CLI: (cert, key)."""
    cert = os.path.join(dirpath, name + ".crt")
    key = os.path.join(dirpath, name + ".pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", "/CN=ferry-test-" + name,
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    os.chmod(key, 0o600)
    return cert, key


class Proxy:
    """A TCP proxy between ferry-dst and the source that speaks just enough
    HTTP/1.1 (Content-Length framing, keep-alive) to alter the first answer
    to a request for `path`: "flip" one byte of its body, "truncate" its
    body by 5 bytes (Content-Length adjusted, so only the MAC can tell),
    "strip-mac" its X-Ferry-Mac header. delay: seconds added before each
    answer (a slow network)."""

    def __init__(self, upstream_port, mode=None, path=None, delay=0.0):
        self.upstream = ("127.0.0.1", upstream_port)
        self.mode, self.path, self.delay = mode, path, delay
        self.altered = 0
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self.stopped = True
        self.sock.close()

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    @staticmethod
    def _read_message(f):
        head = b""
        while True:
            line = f.readline()
            if not line:
                return None, None
            head += line
            if line in (b"\r\n", b"\n"):
                break
        m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        body = f.read(int(m.group(1))) if m else b""
        return head, body

    def _alter(self, head, body):
        if self.mode == "flip" and body:
            i = len(body) // 2
            body = body[:i] + bytes((body[i] ^ 0x01,)) + body[i + 1:]
        elif self.mode == "truncate" and len(body) > 5:
            body = body[:-5]
            head = re.sub(rb"(?im)^(content-length:\s*)\d+", b"\\g<1>%d" % len(body), head)
        elif self.mode == "strip-mac":
            head = re.sub(rb"(?im)^x-ferry-mac:[^\n]*\n", b"", head)
        return head, body

    def _serve(self, client):
        up = socket.create_connection(self.upstream)
        cf, uf = client.makefile("rb"), up.makefile("rb")
        try:
            while True:
                head, body = self._read_message(cf)
                if head is None:
                    return
                path = head.split(b" ")[1].decode(errors="replace")
                up.sendall(head + body)
                rhead, rbody = self._read_message(uf)
                if rhead is None:
                    return
                with self.lock:
                    if self.mode and path == self.path and not self.altered:
                        self.altered = 1
                        rhead, rbody = self._alter(rhead, rbody)
                if self.delay:
                    time.sleep(self.delay)
                client.sendall(rhead + rbody)
        except OSError:
            return
        finally:
            client.close()
            up.close()


class AuthTest(ft.FerryTestCase):

    # -- helpers ------------------------------------------------------------

    def source(self, **kw):
        kw.setdefault("teams", 2)
        kw.setdefault("posts_per_team", 30)
        self.make_source(**kw)

    def client(self, srv, tenant=1, name=None):
        """A hand-driven target for tenant, its key (dst-TENANT, or name) bound to tenant."""
        path = fa.key(name or "dst-%s" % tenant)
        fa.authorize(self.src_conf, tenant, path)
        c = fa.Client(srv.url, tenant, path, source_pub=fa.source_key() + ".pub")
        self.addCleanup(c.close)
        return c

    def assertExit(self, cp, code, *words):
        self.assertEqual(cp.returncode, code, "exit %d, expected %d\nstdout: %s\nstderr: %s"
                         % (cp.returncode, code, cp.stdout[-2000:], cp.stderr[-2000:]))
        self.assertOneLine(cp.stderr)
        for w in words:
            self.assertIn(w, cp.stderr)

    def assertNoRows(self, what):
        n = target_rows(self.dst_db)
        self.assertEqual(n, 0, "%s: the target holds %d rows" % (what, n))

    def tenant_values(self, tenant):
        """Byte strings only tenant's rows hold: its names, and the 100 KB
        random text of its kinds row (a slice of it, so a part would show)."""
        out = [b"Team %d" % tenant, b"team%d-channel" % tenant, b"team%d-tag" % tenant]
        for r in ft.tenant_rows(self.src_db, "kinds", tenant):
            typ, val = r[2]
            if typ == "text" and len(val) >= 1000:
                out.append(val[100:140])
        self.assertGreater(len(out), 3, "no big text in tenant %d's kinds" % tenant)
        return out

    def assertNothingOf(self, body, tenant, what):
        for v in self.tenant_values(tenant):
            self.assertNotIn(v, body, "%s: the answer carries a value of tenant %d (%r)"
                             % (what, tenant, v[:40]))

    def assertErrorOnly(self, body, what):
        """The answer is an error message and nothing else (no table, row or count)."""
        try:
            m = ft.mp_unpack(body)
        except ValueError:
            self.fail("%s: the answer is not msgpack: %r" % (what, body[:200]))
        self.assertIsInstance(m, dict, what)
        self.assertLessEqual(set(m), {"v", "code", "msg"}, "%s: %r" % (what, m))
        self.assertLess(len(body), 400, what)

    def assertLogClean(self, srv, *must):
        """The source's log names what it must (fingerprints, reasons) and
        holds no key material, secret, MAC or whole session id."""
        log = srv.log()
        for w in must:
            self.assertIn(w, log)
        for bad in ("BEGIN", "PRIVATE", "MIIB", "MIIE", "MIIG"):
            self.assertNotIn(bad, log, "key material in the source log")
        self.assertIsNone(re.search(r"[0-9a-f]{32}", log),
                          "a session id, secret or MAC in hex in the source log")
        return log

    # -- the authenticated path works ---------------------------------------

    def test_sync_authenticated(self):
        self.source()
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync()
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))
            fpr = fa.fingerprint(fa.target_key(1) + ".pub")
            log = self.assertLogClean(srv, fpr)
            self.assertRegex(log, r"session [0-9a-f]{8}\.\.\. opened for key %s, tenant 1"
                             % re.escape(fpr))
            status, text = ft.http_get(srv.url, "/metrics")
            self.assertEqual(status, 200)
            self.assertRegex(text.decode(), r"(?m)^ferry_sessions_opened_total 1$")

    def test_handshake_flood_is_limited(self):
        # Hellos cost the source RSA work before the peer proved anything:
        # a flood of hellos from an authorised key is answered 429 past a
        # burst, and a real target still gets through once it has passed.
        # Junk, or hellos of keys it does not know, cost no RSA work and
        # are refused without using up that budget: right after a flood of
        # them, a real target gets through at once.
        self.source()
        with self.serve() as srv:
            statuses = [ft.http_post(srv.url, "/v1/session/hello", b"garbage",
                                     content_type="application/octet-stream")[0]
                        for _ in range(80)]
            self.assertEqual(set(statuses), {400}, statuses)
            stranger = fa.Client(srv.url, 1, fa.key("stranger"))
            self.addCleanup(stranger.close)
            self.assertEqual({stranger.send_hello().status for _ in range(60)}, {401})
            c = self.client(srv, 1)
            c.handshake()
            statuses = [c.send_hello().status for _ in range(80)]
            self.assertIn(429, statuses, "no handshake was refused during the flood")
            self.assertLessEqual(statuses.count(429), 80 - 40 + 5, statuses)
            time.sleep(2.5)
            self.make_target(srv.url, tenant=1)
            self.sync()
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))

    def test_keys_list_and_revoke(self):
        self.source()
        fpr1 = fa.authorize(self.src_conf, 1, fa.target_key(1), comment="team one laptop")
        fpr2 = fa.authorize(self.src_conf, 2, fa.target_key(2))
        cp = fa.run_keys(["list", "--config", self.src_conf])
        self.assertEqual(cp.returncode, 0, cp.stderr)
        rows = [l.split(None, 2) for l in cp.stdout.splitlines()[1:]]
        self.assertEqual([(r[0], r[1]) for r in rows], [("1", fpr1), ("2", fpr2)])
        self.assertEqual(rows[0][2], "team one laptop")
        # one key, one tenant
        cp = fa.run_keys(["add", "--config", self.src_conf, "--tenant", "2",
                          fa.target_key(1) + ".pub"])
        self.assertExit(cp, 2, fpr1)
        cp = fa.run_keys(["revoke", "--config", self.src_conf, fpr1])
        self.assertEqual(cp.returncode, 0, cp.stderr)
        cp = fa.run_keys(["list", "--config", self.src_conf])
        self.assertNotIn(fpr1, cp.stdout)
        self.assertIn(fpr2, cp.stdout)
        cp = fa.run_keys(["revoke", "--config", self.src_conf, fpr1])
        self.assertExit(cp, 5)
        cp = fa.run_keys(["revoke", "--config", self.src_conf, "SHA256:nonsense"])
        self.assertExit(cp, 2)

    # -- the session kept between runs ----------------------------------------

    def opened(self, srv):
        """Handshakes the source completed (its /metrics)."""
        status, text = ft.http_get(srv.url, "/metrics")
        self.assertEqual(status, 200)
        return int(re.search(r"(?m)^ferry_sessions_opened_total (\d+)$", text.decode()).group(1))

    def edit(self, body):
        """Change one post of tenant 1 on the source; the edit a sync must bring."""
        conn = ft.source_conn(self.src_db)
        conn.execute("UPDATE posts SET body = ? WHERE id = (SELECT min(p.id) FROM posts p "
                     "JOIN channels c ON c.id = p.channel_id WHERE c.team_id = 1)", (body,))
        conn.close()

    def target_has(self, body):
        conn = sqlite3.connect(self.dst_db)
        try:
            return conn.execute("SELECT count(*) FROM posts WHERE body = ?",
                                (body,)).fetchone()[0] == 1
        finally:
            conn.close()

    def test_session_kept_between_runs(self):
        """A run keeps its session for the next one (STATE/session, 0600):
        the second and third syncs apply the source's changes without a
        handshake."""
        self.source()
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync("--quiet")
            self.assertEqual(self.opened(srv), 1)
            path = os.path.join(self.state, "session")
            self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
            for i in range(2):
                self.edit("kept session %d" % i)
                self.sync("--quiet")
                self.assertTrue(self.target_has("kept session %d" % i))
            self.assertEqual(self.opened(srv), 1, "a run did not reuse the kept session")
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))
            self.assertLogClean(srv)

    def test_kept_session_after_source_restart(self):
        """A source restarted since the last run no longer knows the kept
        session: the run opens a new one and goes on."""
        self.source()
        with open(self.src_conf) as f:
            conf = f.read()
        with open(self.src_conf, "w") as f:
            f.write(conf.replace("listen = 127.0.0.1:0", "listen = 127.0.0.1:%d" % ft.free_port()))
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync("--quiet")
        self.edit("after restart")
        with self.serve() as srv:
            self.sync("--quiet")
            self.assertEqual(self.opened(srv), 1)
            self.assertTrue(self.target_has("after restart"))
            self.assertIn("unknown session", srv.log())

    def test_kept_session_revoked(self):
        """A key revoked after the last run: the kept session is refused
        like a new handshake (exit 3), nothing is applied, nothing is kept."""
        self.source()
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync("--quiet")
            self.assertTrue(os.path.exists(os.path.join(self.state, "session")))
            self.edit("after revocation")
            fa.revoke(self.src_conf, fa.fingerprint(fa.target_key(1) + ".pub"))
            cp = self.sync("--quiet", expect=None)
            self.assertExit(cp, 3, "unknown key")
            self.assertFalse(self.target_has("after revocation"))
            self.assertFalse(os.path.exists(os.path.join(self.state, "session")))
            self.assertLogClean(srv)

    def test_kept_session_broken_keys_file(self):
        """The source's authorised keys file made unsafe (writable by
        others) after the last run: the kept session's request is refused
        as the source's configuration error (exit 2, its answer signed),
        not as a forged answer (exit 3); nothing is applied. Mended, the
        next run goes on. Oracle: the exit, and the edit on the target."""
        self.source()
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync("--quiet")
            self.edit("after the keys broke")
            with open(self.src_conf) as f:
                keys = [ln.split("=", 1)[1].strip() for ln in f
                        if ln.split("=", 1)[0].strip() == "authorized_keys"][0]
            mode = os.stat(keys).st_mode & 0o777
            os.chmod(keys, 0o666)
            try:
                cp = self.sync("--quiet", expect=None)
            finally:
                os.chmod(keys, mode)
            self.assertExit(cp, 2, "configuration error")
            self.assertNotIn("failed authentication", cp.stderr)
            self.assertFalse(self.target_has("after the keys broke"))
            self.sync("--quiet")
            self.assertTrue(self.target_has("after the keys broke"))

    def test_kept_session_stale_counter(self):
        """A kept session with a counter the source has seen (a copy of an
        older file put back): the source refuses it as replayed, the run
        opens a new session and goes on."""
        self.source()
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync("--quiet")
            path = os.path.join(self.state, "session")
            with open(path, "rb") as f:
                old = f.read()
            self.sync("--quiet")
            self.assertEqual(self.opened(srv), 1)
            with open(path, "wb") as f:
                f.write(old)
            os.chmod(path, 0o600)
            self.edit("stale counter")
            self.sync("--quiet")
            self.assertTrue(self.target_has("stale counter"))
            self.assertEqual(self.opened(srv), 2)
            self.assertLogClean(srv, "replayed request")

    def test_kept_session_other_key(self):
        """The kept session is bound to the identity key: after the target's
        key is replaced it is not used, and a tampered file is not either."""
        self.source()
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync("--quiet")
            path = os.path.join(self.state, "session")
            newkey = fa.key("dst-1-rotated")
            fa.authorize(self.src_conf, 1, newkey)
            ft.write_dst_conf(self.dst_conf, self.dst_db, self.state, 1, srv.url,
                              identity=newkey, public_key=fa.source_key() + ".pub")
            self.edit("rotated key")
            self.sync("--quiet")
            self.assertTrue(self.target_has("rotated key"))
            self.assertEqual(self.opened(srv), 2)
            self.assertIn("opened for key %s" % fa.fingerprint(newkey + ".pub"), srv.log())
            with open(path, "r+b") as f:
                data = bytearray(f.read())
                data[60] ^= 1  # in the wrapped secret
                f.seek(0)
                f.write(data)
            self.edit("tampered file")
            self.sync("--quiet")
            self.assertTrue(self.target_has("tampered file"))
            self.assertEqual(self.opened(srv), 3)

    # -- keys the source does not accept ------------------------------------

    def test_unknown_key(self):
        self.source()
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            stranger = fa.key("dst-stranger")
            ft.write_dst_conf(self.dst_conf, self.dst_db, self.state, 1, srv.url,
                              identity=stranger, public_key=fa.source_key() + ".pub")
            cp = self.sync("--quiet", expect=None)
            self.assertExit(cp, 3, "unknown key")
            self.assertNoRows("an unknown key")
            fpr = fa.fingerprint(stranger + ".pub")
            self.assertIn(fpr, cp.stderr)
            self.assertLogClean(srv, fpr, "unknown key")

    def test_revoked_key(self):
        self.source()
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            fa.revoke(self.src_conf, fa.fingerprint(fa.target_key(1) + ".pub"))
            cp = self.sync("--quiet", expect=None)
            self.assertExit(cp, 3, "unknown key")
            self.assertNoRows("a revoked key")

    def test_revoked_while_session_open(self):
        self.source()
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            c = self.client(srv, 1)
            r = c.call("/v1/manifest", ft.mp_pack(MANIFEST))
            self.assertEqual((r.status, r.mac_ok), (200, True))
            fpr = fa.fingerprint(fa.target_key(1) + ".pub")
            # no restart: the next request of the open session is refused
            fa.revoke(self.src_conf, fpr)
            r = c.post("/v1/snapshot", ft.mp_pack(SNAPSHOT))
            self.assertEqual(r.status, 401, r)
            self.assertNotEqual(r.headers.get("x-ferry-auth"), "renew")
            self.assertErrorOnly(r.body, "snapshot after revocation")
            self.assertNothingOf(r.body, 1, "snapshot after revocation")
            # and no new session either
            self.assertEqual(c.send_hello().status, 401)
            # a target with that key gets nothing
            cp = self.sync("--quiet", expect=None)
            self.assertExit(cp, 3)
            self.assertNoRows("a key revoked during a session")
            self.assertLogClean(srv, fpr, "no longer authorised")

    # -- tenant isolation ----------------------------------------------------

    def test_key_for_another_tenant(self):
        """A key bound to tenant 1 gets no session for tenant 2, whatever the
        tenant looks like; ferry-dst configured for tenant 2 with it gets
        nothing."""
        self.source()
        with self.serve() as srv:
            c = self.client(srv, 1)
            for t in HOSTILE_TENANTS + ["2"]:
                r = c.send_hello(fa.encode_hello(t.encode(), c.fpr, os.urandom(32),
                                                 int(time.time())))
                self.assertIn(r.status, (400, 403), "hello for tenant %r: %r" % (t, r))
                self.assertErrorOnly(r.body, "hello for %r" % t)
                self.assertNothingOf(r.body, 2, "hello for %r" % t)
            self.make_target(srv.url, tenant=1)
            ft.write_dst_conf(self.dst_conf, self.dst_db, self.state, 2, srv.url,
                              identity=fa.target_key(1), public_key=fa.source_key() + ".pub")
            cp = self.sync("--quiet", expect=None)
            self.assertExit(cp, 3, "not authorised for tenant 2")
            self.assertNoRows("a key bound to tenant 1 asking for tenant 2")
            self.assertLogClean(srv, fa.fingerprint(fa.target_key(1) + ".pub"))

    def test_session_tenant_wins(self):
        """In a session for tenant 1, a request naming any other tenant, on
        any endpoint, in the body or the query, is refused with nothing of
        tenant 2 in the answer, not even a count."""
        self.source()
        with self.serve() as srv:
            c = self.client(srv, 1)
            for name, valid in BODIES.items():
                path = "/v1/" + name
                for t in HOSTILE_TENANTS:
                    r = c.post(path, ft.mp_pack(dict(valid, tenant=t)))
                    what = "%s with tenant %r" % (path, t)
                    self.assertIn(r.status, (400, 403), "%s: %r" % (what, r))
                    self.assertTrue(r.mac_ok, "%s: the refusal is not MACed: %r" % (what, r))
                    self.assertErrorOnly(r.body, what)
                    self.assertNothingOf(r.body, 2, what)
                for t in (2, -1, 2 ** 63, None, ["2"], {"tenant": "2"}):
                    r = c.post(path, ft.mp_pack(dict(valid, tenant=t)))
                    self.assertEqual(r.status, 400, "%s with tenant %r: %r" % (path, t, r))
                    self.assertErrorOnly(r.body, path)
                # the query string does not choose a tenant either
                for q in ("tenant=2", "tenant=1", "v=1&tenant=2%20OR%201=1"):
                    r = c.post(path, ft.mp_pack(valid), query=q)
                    self.assertEqual(r.status, 400, "%s?%s: %r" % (path, q, r))
                    self.assertErrorOnly(r.body, path + "?" + q)
                # tenant 1 itself is served, and holds nothing of tenant 2
                r = c.call(path, ft.mp_pack(valid))
                self.assertEqual(r.status, 200, r)
                self.assertNothingOf(r.body, 2, path + " for tenant 1")
            # rows by key: asking tenant 2's keys in tenant 1's session gets none of them
            ids2 = [r[0][1] for r in ft.tenant_rows(self.src_db, "channels", 2)]
            r = c.call("/v1/rows", ft.mp_pack({"v": 1, "tenant": "1", "table": "channels",
                                               "keys": [[i] for i in ids2]}))
            self.assertIn(r.status, (200, 404), r)
            self.assertNothingOf(r.body, 2, "rows of tenant 2's channel keys")
            self.assertIn("teams", ft.table_names(self.src_db))
            # no refused freeze took effect: tenant 2 still takes writes
            conn = ft.source_conn(self.src_db)
            try:
                conn.execute("UPDATE teams SET name = name WHERE id = 2")
                conn.execute("UPDATE channels SET name = name WHERE team_id = 2")
            finally:
                conn.close()
            log = self.assertLogClean(srv, "EFORBIDDEN")
            self.assertNotIn("DROP TABLE", log, "hostile input echoed into the log")
            # ferry-dst for tenant 1 still copies exactly tenant 1
            self.make_target(srv.url, tenant=1)
            self.sync()
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))

    # -- handshake refusals --------------------------------------------------

    def test_bad_signature(self):
        self.source()
        with self.serve() as srv:
            c = self.client(srv, 1)
            r = c.send_hello()
            self.assertEqual(r.status, 200)
            r = c.send_proof(c.answer(r.body, bad_signature=True))
            self.assertEqual(r.status, 401, r)
            self.assertIn(b"bad signature", r.body)
            # the refused session is gone
            r = c.post("/v1/manifest", ft.mp_pack(MANIFEST))
            self.assertEqual(r.status, 401, r)
            self.assertErrorOnly(r.body, "request in a refused session")
            # a proof signed by another key than the hello's is a bad signature too
            c2 = self.client(srv, 1)
            r = c2.send_hello()
            r = c2.send_proof(c2.answer(r.body, sign_key=fa.key("dst-stranger")))
            self.assertEqual(r.status, 401, r)
            self.assertLogClean(srv, "bad signature", c.fpr)

    def test_stale_timestamp(self):
        self.source()
        with self.serve() as srv:
            c = self.client(srv, 1)
            for skew in (-1000, 1000):
                r = c.send_hello(c.hello(ts=int(time.time()) + skew))
                self.assertEqual(r.status, 401, r)
                self.assertIn(b"stale timestamp", r.body)
            self.make_target(srv.url, tenant=1)
            for skew in ("-1000", "1000"):
                cp = run_dst_env(["sync", "--quiet", "--config", self.dst_conf],
                                 {"FERRY_TEST_CLOCK_OFFSET": skew})
                self.assertExit(cp, 3, "stale timestamp")
                self.assertNoRows("a stale timestamp")
            self.assertLogClean(srv, "stale timestamp")

    def test_replayed_handshake(self):
        self.source()
        with self.serve() as srv:
            c = self.client(srv, 1)
            hello = c.hello()
            r = c.send_hello(hello)
            self.assertEqual(r.status, 200)
            r2 = c.send_hello(hello)
            self.assertEqual(r2.status, 401, r2)
            self.assertIn(b"replayed handshake", r2.body)
            proof = c.answer(r.body)
            self.assertEqual(c.send_proof(proof).status, 200)
            r = c.send_proof(proof)
            self.assertEqual(r.status, 401, r)
            self.assertIn(b"replayed handshake", r.body)
            self.assertLogClean(srv, "replayed handshake")

    def test_replayed_counter(self):
        self.source()
        with self.serve() as srv:
            c = self.client(srv, 1)
            body = ft.mp_pack(SNAPSHOT)
            r = c.post("/v1/snapshot", body, counter=5)
            self.assertEqual((r.status, r.mac_ok), (200, True))
            for counter in (5, 4, 1):
                r = c.post("/v1/snapshot", body, counter=counter)
                self.assertEqual(r.status, 401, "counter %d again: %r" % (counter, r))
                self.assertIn(b"replayed request", r.body)
                self.assertErrorOnly(r.body, "replayed counter")
                self.assertNothingOf(r.body, 1, "replayed counter")
            r = c.post("/v1/snapshot", body, counter=6)
            self.assertEqual(r.status, 200)
            self.assertLogClean(srv, "replayed request")

    def test_tampered_request(self):
        self.source()
        with self.serve() as srv:
            c = self.client(srv, 1)
            snap = ft.mp_pack(SNAPSHOT)
            cases = {
                "body": dict(path="/v1/snapshot", body=snap,
                             mac_body=ft.mp_pack(dict(SNAPSHOT, limit=1))),
                "tenant in the body": dict(path="/v1/snapshot",
                                           body=ft.mp_pack(dict(SNAPSHOT, tenant="2")),
                                           mac_body=snap),
                "path": dict(path="/v1/snapshot", body=snap, mac_path="/v1/manifest"),
                "query": dict(path="/v1/snapshot", body=snap, query="tenant=2", mac_query=""),
                "query removed": dict(path="/v1/snapshot", body=snap, mac_query="x=1"),
                "mac": dict(path="/v1/snapshot", body=snap, mac="00" * 32),
                "short mac": dict(path="/v1/snapshot", body=snap, mac="abcd"),
                "session": dict(path="/v1/snapshot", body=snap, session="0" * 32),
                "no session": dict(path="/v1/snapshot", body=snap, session=""),
            }
            for what, kw in cases.items():
                path, body = kw.pop("path"), kw.pop("body")
                r = c.post(path, body, **kw)
                self.assertEqual(r.status, 401, "tampered %s: %r" % (what, r))
                self.assertErrorOnly(r.body, "tampered " + what)
                self.assertNothingOf(r.body, 1, "tampered " + what)
                self.assertNothingOf(r.body, 2, "tampered " + what)
            # without any of the headers, or with a malformed counter
            r = c.raw("/v1/snapshot", snap)
            self.assertEqual(r.status, 401)
            for counter in ("0", "-1", "abc", "1e3", "99999999999999999999999"):
                r = c.post("/v1/snapshot", snap, headers={"X-Ferry-Counter": counter})
                self.assertEqual(r.status, 401, "counter %r: %r" % (counter, r))
            # an unknown session asks for a new one; the untampered request still works
            r = c.post("/v1/snapshot", snap, session="0123456789abcdef" * 2)
            self.assertEqual((r.status, r.headers.get("x-ferry-auth")), (401, "renew"))
            r = c.post("/v1/snapshot", snap)
            self.assertEqual((r.status, r.mac_ok), (200, True))
            self.assertLogClean(srv, "bad request MAC")

    # -- the target refuses ----------------------------------------------------

    def test_tampered_response(self):
        """A proxy alters one answer (a byte flipped, the body shortened with
        a matching Content-Length, the MAC removed): ferry-dst refuses it
        before decoding it and commits nothing; without the proxy the same
        target then syncs."""
        self.source()
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            for mode in ("flip", "truncate", "strip-mac"):
                for path in ("/v1/manifest", "/v1/snapshot"):
                    proxy = Proxy(srv.port, mode, path)
                    try:
                        self.make_target(proxy.url, tenant=1)
                        cp = self.sync("--quiet", expect=None)
                    finally:
                        proxy.close()
                    self.assertEqual(proxy.altered, 1, "%s %s: nothing altered" % (mode, path))
                    self.assertExit(cp, 3, "response from the source failed authentication")
                    self.assertNoRows("a %s of the answer to %s" % (mode, path))
            self.make_target(srv.url, tenant=1)
            self.sync()
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))

    def test_pinned_key_mismatch(self):
        self.source()
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            ft.write_dst_conf(self.dst_conf, self.dst_db, self.state, 1, srv.url,
                              identity=fa.target_key(1),
                              public_key=fa.key("src-impostor") + ".pub")
            cp = self.sync("--quiet", expect=None)
            self.assertExit(cp, 3, "not the pinned source key")
            self.assertNoRows("a source that is not the pinned one")

    def test_world_readable_private_keys(self):
        self.source()
        loose = fa.copy_key("dst-1", self.path("loose.key"))
        os.chmod(loose, 0o644)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            ft.write_dst_conf(self.dst_conf, self.dst_db, self.state, 1, srv.url,
                              identity=loose, public_key=fa.source_key() + ".pub")
            cp = self.sync("--quiet", expect=None)
            self.assertExit(cp, 2, loose, "chmod 600")
            self.assertNoRows("a world-readable target key")
        src_loose = fa.copy_key("src", self.path("src-loose.key"))
        os.chmod(src_loose, 0o640)
        conf = ft.write_src_conf(self.path("loose.conf"), self.src_db, identity=src_loose,
                                 authorized_keys=self.path("authorized_keys"))
        cp = ft.run_src(["serve", "--config", conf], timeout=30)
        self.assertExit(cp, 2, src_loose, "chmod 600")

    def test_keygen(self):
        for agent in ("ferry-src", "ferry-dst"):
            out = self.path(agent + ".key")
            cp = fa.keygen(out, agent)
            self.assertEqual(cp.returncode, 0, cp.stderr)
            self.assertEqual(os.stat(out).st_mode & 0o777, 0o600)
            self.assertEqual(os.stat(out + ".pub").st_mode & 0o777, 0o644)
            self.assertIn(fa.fingerprint(out + ".pub"), cp.stdout)
            with open(out, "rb") as f:
                before = hashlib.sha256(f.read()).hexdigest()
            cp = fa.keygen(out, agent)
            self.assertExit(cp, 2, out, "exists")
            with open(out, "rb") as f:
                self.assertEqual(hashlib.sha256(f.read()).hexdigest(), before,
                                 "keygen overwrote " + out)
            # only FILE.pub in the way is refused too, and FILE is not created
            os.rename(out, out + ".moved")
            cp = fa.keygen(out, agent)
            self.assertExit(cp, 2, out + ".pub", "exists")
            self.assertFalse(os.path.exists(out))
            cp = fa.keygen(self.path(agent + "-small.key"), agent, bits=1024)
            self.assertExit(cp, 2, "--bits")

    def test_configs_need_keys(self):
        self.source()
        cases = [(dict(authorized_keys=self.path("authorized_keys")), "identity",
                  "ferry-src keygen"),
                 (dict(identity=fa.source_key()), "authorized_keys", "ferry-src keys add")]
        for kw, key, how in cases:
            conf = ft.write_src_conf(self.path("nokey.conf"), self.src_db, **kw)
            cp = ft.run_src(["serve", "--config", conf], timeout=30)
            self.assertExit(cp, 2, key, how)
        self.make_target("http://127.0.0.1:%d" % ft.free_port(), tenant=1)
        cases = [(dict(public_key=fa.source_key() + ".pub"), "[target] identity",
                  "ferry-dst keygen"),
                 (dict(identity=fa.target_key(1)), "[source] public_key", "ferry-src keygen")]
        for kw, key, how in cases:
            ft.write_dst_conf(self.dst_conf, self.dst_db, self.state, 1, "http://127.0.0.1:1",
                              **kw)
            cp = self.sync("--quiet", expect=None)
            self.assertExit(cp, 2, key, how)
            self.assertNoRows("a target without keys")

    # -- sessions over time --------------------------------------------------

    def test_session_renewal(self):
        """Sessions of 1 s: a hand-driven client is told to renew; ferry-dst,
        slowed by a proxy so the copy outlives several sessions, renews
        them without a word and copies everything."""
        self.source(posts_per_team=150, batch_rows=10)
        with self.serve(env={"FERRY_SESSION_TTL": "1"}) as srv:
            c = self.client(srv, 1)
            r = c.call("/v1/manifest", ft.mp_pack(MANIFEST))
            self.assertEqual(r.status, 200)
            time.sleep(1.5)
            r = c.post("/v1/manifest", ft.mp_pack(MANIFEST))
            self.assertEqual((r.status, r.headers.get("x-ferry-auth")), (401, "renew"), r)
            self.assertIn(b"session expired", r.body)
            # the source counts whole seconds: a 1 s session made late in a
            # second may end before its first request (seen under ASan);
            # renew early in one
            time.sleep(1.02 - time.time() % 1)
            self.assertEqual(c.call("/v1/manifest", ft.mp_pack(MANIFEST)).status, 200)

            proxy = Proxy(srv.port, delay=0.08)
            try:
                self.make_target(proxy.url, tenant=1)
                t0 = time.monotonic()
                self.sync("--quiet")
                took = time.monotonic() - t0
            finally:
                proxy.close()
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))
            fpr = fa.fingerprint(fa.target_key(1) + ".pub")
            opened = len(re.findall(r"opened for key %s" % re.escape(fpr), srv.log()))
            self.assertGreater(took, 2.5, "the copy was too quick to outlive a session")
            self.assertGreaterEqual(opened, 3, "ferry-dst did not renew its session (%d "
                                    "sessions in %.1f s)" % (opened, took))

    def test_session_ttl_from_config(self):
        """[source] session_ttl sets the sessions' lifetime: 1 s, and the
        next request after 1.5 s is told to renew."""
        self.source()
        with open(self.src_conf) as f:
            conf = f.read()
        with open(self.src_conf, "w") as f:
            f.write(conf.replace("[source]\n", "[source]\nsession_ttl = 1\n", 1))
        with self.serve() as srv:
            c = self.client(srv, 1)
            self.assertEqual(c.call("/v1/manifest", ft.mp_pack(MANIFEST)).status, 200)
            time.sleep(1.5)
            r = c.post("/v1/manifest", ft.mp_pack(MANIFEST))
            self.assertEqual((r.status, r.headers.get("x-ferry-auth")), (401, "renew"), r)
            self.assertIn(b"session expired", r.body)

    # -- TLS ---------------------------------------------------------------

    def test_tls(self):
        self.source()
        cert, key = self_signed(self.dir, "source")
        other, _ = self_signed(self.dir, "other")
        ft.write_src_conf(self.src_conf, self.src_db, listen="https://127.0.0.1:0",
                          identity=fa.source_key(), authorized_keys=self.path("authorized_keys"),
                          extra="")
        with open(self.src_conf) as f:
            text = f.read()
        with open(self.src_conf, "w") as f:
            f.write(text.replace("[scope]", "tls_cert = %s\ntls_key = %s\n\n[scope]"
                                 % (cert, key), 1))
        with self.serve() as srv:
            self.assertTrue(srv.url.startswith("https://"), srv.url)
            # the wrong CA: refused before anything is sent
            self.make_target(srv.url, tenant=1, extra="ca = %s\n" % other)
            cp = self.sync("--quiet", expect=None)
            self.assertExit(cp, 3, "TLS", "not trusted", "[source] ca")
            self.assertNoRows("a source whose certificate the CA did not sign")
            # plain http to the TLS port gets nowhere either
            self.make_target(srv.url.replace("https://", "http://"), tenant=1)
            cp = self.sync("--quiet", expect=None)
            self.assertNotEqual(cp.returncode, 0)
            self.assertOneLine(cp.stderr)
            self.assertNoRows("plain http to a TLS source")
            # the right one: a full copy
            self.make_target(srv.url, tenant=1, extra="ca = %s\n" % cert)
            self.sync()
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))
            # the hand-driven client over TLS too
            c = fa.Client(srv.url, 1, fa.target_key(1), source_pub=fa.source_key() + ".pub",
                          cafile=cert)
            self.assertEqual(c.call("/v1/manifest", ft.mp_pack(MANIFEST)).status, 200)
            c.close()
        # a missing tls_key is a config error naming it
        with open(self.src_conf, "w") as f:
            f.write(text.replace("[scope]", "tls_cert = %s\n\n[scope]" % cert, 1))
        cp = ft.run_src(["serve", "--config", self.src_conf], timeout=30)
        self.assertExit(cp, 2, "tls_key")


if __name__ == "__main__":
    ft.main()
