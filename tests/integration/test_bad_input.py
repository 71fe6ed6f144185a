#!/usr/bin/env python3
"""Bad configs, a source that is down, unknown tenants, and malformed or
out-of-scope HTTP requests: each gets its exit status or HTTP status and a
clear error, changes nothing, and the server keeps answering."""

import json
import os
import random
import sqlite3
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402

MANIFEST = {"v": 1, "tenant": "1", "after": -1, "counts": False}
SNAPSHOT = {"v": 1, "tenant": "1", "table": "posts", "after": None, "limit": 100}
CHANGES = {"v": 1, "tenant": "1", "after": 0, "limit": 100}
VALID = {"manifest": MANIFEST, "snapshot": SNAPSHOT, "changes": CHANGES}


def garbage(valid):
    """Malformed bodies for an endpoint whose valid request is valid."""
    rng = random.Random(5)
    bad = [
        b"",
        b"\xc1",
        bytes(rng.randrange(256) for _ in range(300)),
        b"not msgpack at all",
        ft.mp_pack(42),
        ft.mp_pack([1, 2, 3]),
        ft.mp_pack({"v": 1}),
        ft.mp_pack(dict(valid, v=2)),
        ft.mp_pack(dict(valid, tenant=1)),
        ft.mp_pack(dict(valid, extra=1)),
        ft.mp_pack(valid)[:-1],
        ft.mp_pack(valid) + b"\x00",
        b"\xdd\xff\xff\xff\xff",
        b"\xdf\xff\xff\xff\xff",
        b"\xdb\xff\xff\xff\xf0a",
        b"\x91" * 2000 + b"\xc0",
    ]
    if "limit" in valid:
        bad += [ft.mp_pack(dict(valid, limit=0)), ft.mp_pack(dict(valid, limit=-5)),
                ft.mp_pack(dict(valid, limit="100"))]
    if "after" in valid and valid["after"] is None:
        bad.append(ft.mp_pack(dict(valid, after=[b"\x00" * 10] * 50)))
    return bad


class BadInputTest(ft.FerryTestCase):

    def assertExit(self, cp, code, *words):
        self.assertEqual(cp.returncode, code, "exit %d, expected %d\nstdout: %s\nstderr: %s"
                         % (cp.returncode, code, cp.stdout[-2000:], cp.stderr[-2000:]))
        self.assertOneLine(cp.stderr)
        for w in words:
            self.assertIn(w, cp.stderr)

    def test_source_unreachable(self):
        port, holder = ft.refusing_port()
        try:
            self.make_target("http://127.0.0.1:%d" % port, tenant=1)
            # never synced: status says so (phase new), it is no error
            st = ft.status_json(self.dst_conf)
            self.assertEqual((st["phase"], st["hwm"], st["runs"]), ("new", -1, []), st)
            cp = self.sync("--quiet", expect=None, timeout=120)
            # --json: the error as JSON on stdout too, with the exit status
            vcp = ft.run_dst(["verify", "--json", "--config", self.dst_conf], timeout=120)
        finally:
            holder.close()
        self.assertExit(cp, 4)
        self.assertExit(vcp, 4)
        rep = json.loads(vcp.stdout)
        self.assertEqual((rep["ok"], rep["exit"]), (False, 4), rep)
        self.assertIn(rep["msg"], vcp.stderr)
        if os.path.exists(self.dst_db):
            self.assertEqual(ft.table_names(self.dst_db), [])
        # every command that takes --json says a config it cannot load as JSON too
        for args in (["status"], ["verify"], ["cutover"], ["follow", "--quiet", "--interval", "1"]):
            cp = ft.run_dst(args + ["--json", "--config", self.path("nosuch.conf")], timeout=60)
            self.assertExit(cp, 2)
            rep = json.loads(cp.stdout)
            self.assertEqual((rep["ok"], rep["code"], rep["exit"]), (False, "ECONFIG", 2),
                             "%s: %s" % (args[0], cp.stdout))
        cp = ft.run_dst(["follow", "--interval", "0", "--json", "--config", self.dst_conf])
        self.assertExit(cp, 2)
        self.assertEqual(json.loads(cp.stdout)["code"], "EUSAGE", cp.stdout)

    def test_misspelt_key(self):
        conf = self.path("dst.conf")
        with open(conf, "w") as f:
            f.write("[target]\ndatabse = sqlite://%s\nstate = %s\ntenant = 1\n\n"
                    "[source]\nurl = http://127.0.0.1:1\n"
                    % (self.path("dst.db"), self.path("state")))
        cp = ft.run_dst(["sync", "--config", conf])
        self.assertExit(cp, 2, "databse")
        cp = ft.run_dst(["status", "--config", conf])
        self.assertExit(cp, 2, "databse")

        self.make_source(teams=1, posts_per_team=5, install=False)
        with open(self.src_conf) as f:
            text = f.read()
        with open(self.src_conf, "w") as f:
            f.write(text.replace("database =", "databse ="))
        for cmd in (["install"], ["serve"], ["scope", "--tenant", "1"]):
            cp = ft.run_src(cmd + ["--config", self.src_conf], timeout=30)
            self.assertExit(cp, 2, "databse")

    def test_option_a_command_does_not_take(self):
        """An option another command takes is refused (exit 2), before
        anything runs: `cutover --dry-run` must not cut over, `verify
        --repair --dry-run` must not repair. Oracle: the target and its
        state are never created."""
        conf = self.path("dst.conf")
        with open(conf, "w") as f:
            f.write("[target]\ndatabase = sqlite://%s\nstate = %s\ntenant = 1\n\n"
                    "[source]\nurl = http://127.0.0.1:1\n"
                    % (self.path("dst.db"), self.path("state")))
        for args, opt in ((["cutover", "--dry-run", "--then", "touch %s" % self.path("hook")],
                           "--dry-run"),
                          (["verify", "--repair", "--dry-run"], "--dry-run"),
                          (["sync", "--repair"], "--repair"),
                          (["status", "--force"], "--force"),
                          (["follow", "--interval", "1", "--then", "x"], "--then"),
                          (["keygen", "--out", self.path("k")], "--config")):
            cp = ft.run_dst(args + ["--config", conf])
            self.assertExit(cp, 2, "%s does not take %s" % (args[0], opt))
        for made in ("dst.db", "state", "hook", "k"):
            self.assertFalse(os.path.exists(self.path(made)), made)

    def test_target_replaced_after_the_copy(self):
        """The target database moved away (or dropped and made anew) after
        the copy: the next sync with changes pending refuses it (exit 5,
        saying what to do) instead of recreating its tables empty for the
        deltas alone; with the copy back in place, the sync goes on. Oracle:
        the tenant's rows in the source (assertTenantCopy)."""
        self.make_source(teams=2, posts_per_team=30)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync("--quiet")
            os.rename(self.dst_db, self.path("moved.db"))
            # nothing pending (the target is not opened) or changes pending: refused, and
            # no empty database made in its place
            for pending in (False, True):
                if pending:
                    ft.on_source(self.src_db, "UPDATE posts SET body = 'after the move'")
                cp = self.sync("--quiet", expect=None)
                self.assertExit(cp, 5, "the state records its copy", "fresh [target] state")
                self.assertFalse(os.path.exists(self.dst_db), "a target made anew")
            for made in (self.dst_db, self.dst_db + "-wal", self.dst_db + "-shm"):
                if os.path.exists(made):
                    os.remove(made)
            os.rename(self.path("moved.db"), self.dst_db)
            self.sync("--quiet")
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))

    def test_state_lost_after_the_copy(self):
        """The state directory lost (deleted, or its data.mdb emptied) after
        a copy: an emptied one is refused as damaged (exit 5); a new one
        copies again, warning that the target already holds the tenant and
        that what the source deleted meanwhile stays until verify --repair,
        which then makes the target equal. Oracle: the row deleted on the
        source, and the tenant's rows (assertTenantCopy)."""
        self.make_source(teams=2, posts_per_team=30)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync("--quiet")
            gone = ft.query(self.src_db, "SELECT min(p.id) FROM posts p JOIN channels c ON "
                                         "c.id = p.channel_id WHERE c.team_id = 1")[0][0]
            ft.on_source(self.src_db, "DELETE FROM reactions WHERE post_id = %d" % gone,
                         "DELETE FROM posts WHERE id = %d" % gone)
            with open(os.path.join(self.state, "data.mdb"), "w"):
                pass
            cp = self.sync("--quiet", expect=None)
            self.assertExit(cp, 5, "is damaged", "its data.mdb is empty")
            cp = ft.run_dst(["status", "--config", self.dst_conf])
            self.assertExit(cp, 5, "is damaged")
            # its first page overwritten: LMDB's own refusal, which follow does not retry
            with open(os.path.join(self.state, "data.mdb"), "wb") as f:
                f.write(b"\xa5" * 16384)
            cp = ft.run_dst(["follow", "--interval", "1", "--json", "--config", self.dst_conf],
                            timeout=30)
            self.assertEqual(cp.returncode, 5, cp.stderr)
            self.assertIn("the state is damaged", cp.stderr)
            last = json.loads(cp.stdout.strip().splitlines()[-1])
            self.assertEqual((last["ok"], last["final"], last["code"]), (False, True, "EDATA"))
            subprocess.run(["rm", "-rf", self.state], check=True)
            cp = self.sync()
            self.assertIn("target already holds tenant 1", cp.stderr)
            self.assertIn("verify --repair", cp.stderr)
            self.assertEqual(ft.query(self.dst_db, "SELECT count(*) FROM posts WHERE id = %d"
                                      % gone), [(1,)])
            cp = ft.run_dst(["verify", "--repair", "--config", self.dst_conf])
            self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))

    def test_state_pages_damaged(self):
        """Random bytes in the state's pages past LMDB's two meta pages (a
        disk's or a bad copy's damage). LMDB trusts its pages: with the
        pages' headers kept, status read garbage and exited 0; with whole
        pages random, some runs died of SIGSEGV, SIGBUS or an assertion. Now
        every open reads the whole state first, and each of status, sync and
        follow says the state is damaged (exit 5, one line) and writes
        nothing. Oracle: the exit status, and the target's rows unchanged."""
        self.make_source(teams=2, posts_per_team=30)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync("--quiet")
            good = self.path("good-state")
            subprocess.run(["cp", "-a", self.state, good], check=True)
            before = ft.db_dump(self.dst_db)
            ft.on_source(self.src_db, "UPDATE posts SET body = 'later' WHERE id IN (SELECT "
                         "p.id FROM posts p JOIN channels c ON c.id = p.channel_id WHERE "
                         "c.team_id = 1 LIMIT 3)")
            data = os.path.join(self.state, "data.mdb")
            size = os.path.getsize(data)
            page = 4096
            self.assertGreater(size, 3 * page)
            for seed in range(12):
                rnd = random.Random(seed)
                with open(os.path.join(good, "data.mdb"), "rb") as f:
                    raw = bytearray(f.read())
                keep = 16 if seed % 2 == 0 else 0  # the page header kept, or not
                for off in range(2 * page, size, page):
                    raw[off + keep:off + page] = bytes(rnd.randrange(256)
                                                       for _ in range(page - keep))
                with open(data, "wb") as f:
                    f.write(raw)
                for args in (["status"], ["sync", "--quiet"],
                             ["follow", "--quiet", "--interval", "1"]):
                    cp = ft.run_dst(args + ["--config", self.dst_conf], timeout=60)
                    self.assertExit(cp, 5, "is damaged", "restore it from a backup")
            self.assertUnchanged(before, self.dst_db, "the target")

    def test_passwords_in_urls_are_never_echoed(self):
        """A password in a PostgreSQL URL that libpq cannot parse was echoed
        whole in the error (libpq quotes the URL); one in [source] url was
        echoed when the source was out of reach, and kept in the state,
        where status showed it (probe). Now the first is said without the
        quoted text, the second refused (exit 2) before anything runs.
        Oracle: the password, looked for in every output and file."""
        secret = "hunter2-7c1e"
        self.make_source(teams=1, posts_per_team=5)
        for url in ("postgresql://alice:%s@[::1/app" % secret,
                    "postgresql://alice:%s%%ZZ@127.0.0.1:1/app" % secret):
            conf = ft.write_src_conf(self.path("bad-src.conf"), url)
            cp = ft.run_src(["scope", "--config", conf, "--tenant", "1"])
            self.assertExit(cp, 2, "invalid PostgreSQL URL")
            self.assertNotIn(secret, cp.stdout + cp.stderr)
        self.make_target("http://admin:%s@127.0.0.1:1" % secret, tenant=1)
        for args in (["sync"], ["status"], ["status", "--json"], ["verify"]):
            cp = ft.run_dst(args + ["--config", self.dst_conf])
            self.assertEqual(cp.returncode, 2, "%s: %s" % (args, cp.stderr))
            self.assertIn("[source] url holds a user name or password", cp.stderr)
            self.assertNotIn(secret, cp.stdout + cp.stderr)
        for root, _, files in os.walk(self.dir):
            for name in files:
                if name.endswith(".conf"):
                    continue
                with open(os.path.join(root, name), "rb") as f:
                    self.assertNotIn(secret.encode(), f.read(), name)

    def test_missing_tenant(self):
        conf = self.path("dst.conf")
        with open(conf, "w") as f:
            f.write("[target]\ndatabase = sqlite://%s\nstate = %s\n\n"
                    "[source]\nurl = http://127.0.0.1:1\n"
                    % (self.path("dst.db"), self.path("state")))
        cp = ft.run_dst(["sync", "--config", conf])
        self.assertExit(cp, 2, "tenant")
        self.assertFalse(os.path.exists(self.path("dst.db")))

    def test_unknown_tenant(self):
        self.make_source(teams=2, posts_per_team=20)
        # a target that already serves another tenant must stay as it is
        dst = sqlite3.connect(self.path("dst.db"))
        dst.execute("CREATE TABLE teams(id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
        dst.execute("INSERT INTO teams VALUES (9, 'Team Nine')")
        dst.commit()
        dst.close()
        before = ft.db_dump(self.path("dst.db"))
        with self.serve() as srv:
            self.make_target(srv.url, tenant=77)
            cp = self.sync("--quiet", expect=None)
            # verify says the same, and exits the same (README: exit 2)
            vcp = ft.run_dst(["verify", "--config", self.dst_conf])
            self.assertExit(vcp, 2, "check [target] tenant")
        self.assertExit(cp, 2, "tenant")
        # (without the temporary path: the test's own name says "unknown")
        self.assertRegex(cp.stderr.replace(self.dir, "DIR"),
                         r"\b77\b|not found|no such|unknown|does not exist",
                         "the error does not say that the tenant is not on the source")
        self.assertUnchanged(before, self.dst_db, "a sync of an unknown tenant")
        if os.path.exists(self.state):
            st = ft.status_json(self.dst_conf)
            self.assertIn(st["phase"], ("new",), st)

    def test_garbage_requests(self):
        self.make_source(teams=2, posts_per_team=20, auth=False)
        with self.serve() as srv:
            for name, valid in VALID.items():
                for i, body in enumerate(garbage(valid)):
                    status, resp = ft.http_post(srv.url, "/v1/" + name, body)
                    self.assertEqual(status, 400, "/v1/%s garbage #%d (%r...): HTTP %d %r"
                                     % (name, i, body[:40], status, resp[:200]))
                    self.assertTrue(srv.alive(), "server died on /v1/%s garbage #%d" % (name, i))
            self.assertEqual(ft.http_get(srv.url, "/healthz")[0], 200)
            status, resp = ft.http_post(srv.url, "/v1/manifest", ft.mp_pack(MANIFEST))
            self.assertEqual(status, 200, resp[:300])
            m = ft.mp_unpack(resp)
            names = [t["name"] for t in m["tables"]]
            self.assertEqual(sorted(names), sorted(ft.IN_SCOPE))
            # a sync still works after all that
            self.make_target(srv.url, tenant=1)
            self.sync()
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))

    def test_out_of_scope_snapshot(self):
        self.make_source(teams=2, posts_per_team=20, auth=False)
        with self.serve() as srv:
            for table in ("users", "audit_log", "_ferry_changes", "sqlite_schema", "nosuch",
                          "posts; DROP TABLE teams", "posts\"--"):
                status, resp = ft.http_post(srv.url, "/v1/snapshot",
                                            ft.mp_pack(dict(SNAPSHOT, table=table)))
                # Out of scope is "not found"; a name no table can have may
                # also be refused as malformed.
                allowed = (404,) if table in ("users", "audit_log") else (400, 404)
                self.assertIn(status, allowed, "snapshot of %r: HTTP %d" % (table, status))
                self.assertNotIn(b"@example.com", resp)
                self.assertNotIn(b"event 0 of team", resp)
                body = ft.mp_unpack(resp)
                self.assertIsInstance(body, dict)
                self.assertNotIn("sets", body)
            self.assertIn("teams", ft.table_names(self.src_db))
            # An in-scope snapshot carries only tenant 1's rows.
            status, resp = ft.http_post(srv.url, "/v1/snapshot",
                                        ft.mp_pack(dict(SNAPSHOT, limit=1000)))
            self.assertEqual(status, 200)
            batch = ft.mp_unpack(resp)
            got = set()
            for s in batch["sets"]:
                self.assertEqual(s["table"], "posts")
                k = s["cols"].index("id")
                got |= {row[k] for row in s["rows"]}
            want = {r[0][1] for r in ft.tenant_rows(self.src_db, "posts", 1)}
            self.assertEqual(got, want)
            self.assertTrue(srv.alive())

    def test_unauthenticated_refused(self):
        # With keys configured, a request without a session is refused
        # before its body is even decoded, and nothing leaks.
        self.make_source(teams=2, posts_per_team=20, auth=True)
        with self.serve() as srv:
            for name, valid in VALID.items():
                for body in (ft.mp_pack(valid), b"\xc1garbage"):
                    status, resp = ft.http_post(srv.url, "/v1/" + name, body)
                    self.assertEqual(status, 401, "/v1/%s without a session: HTTP %d %r"
                                     % (name, status, resp[:200]))
                    self.assertNotIn(b"@example.com", resp)
                    self.assertNotIn(b"team1-channel", resp)
            # and the authenticated agent still gets its tenant
            self.make_target(srv.url, tenant=1)
            self.sync()
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))

    def test_request_too_big(self):
        self.make_source(teams=1, posts_per_team=5, auth=False)
        with self.serve() as srv:
            body = ft.mp_pack(dict(MANIFEST, tenant="1" * (70 * 1024)))
            self.assertGreater(len(body), 64 * 1024)
            for name in VALID:
                status, _ = ft.http_post(srv.url, "/v1/" + name, body)
                self.assertIn(status, (400, 413), "/v1/%s with %d bytes: HTTP %d"
                              % (name, len(body), status))
            status, _ = ft.http_post(srv.url, "/v1/manifest", ft.mp_pack(MANIFEST))
            self.assertEqual(status, 200)

    def test_missing_database(self):
        missing = self.path("missing.db")
        conf = ft.write_src_conf(self.path("src.conf"), missing)
        for cmd in (["serve"], ["install"]):
            cp = ft.run_src(cmd + ["--config", conf], timeout=20)
            self.assertExit(cp, 2)
            self.assertFalse(os.path.exists(missing), "%s created the database" % cmd[0])


if __name__ == "__main__":
    ft.main()
