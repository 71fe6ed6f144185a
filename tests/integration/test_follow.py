#!/usr/bin/env python3
"""Mirrors, SQLite to SQLite: follow until a signal, column masking on the
source, the operator's view (metrics, status lag, run log, progress lines).

Row checks use the hand-written oracle of ferrytest.tenant_rows().
"""

import json
import os
import re
import socket
import signal
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("timed out after %s s waiting for %s" % (timeout, what))


def row_exists(db, sql, *params):
    if not os.path.exists(db):
        return False
    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute(sql, params).fetchone() is not None
    except sqlite3.OperationalError:
        return False  # the table is not created yet
    finally:
        conn.close()


def read_text(path):
    with open(path, "rb") as f:
        return f.read().decode(errors="replace")


def files_bytes(*paths):
    """The raw bytes of every file at or under paths (a database, its WAL,
    a state directory)."""
    out = b""
    for p in paths:
        if os.path.isdir(p):
            for root, _, names in os.walk(p):
                for n in names:
                    with open(os.path.join(root, n), "rb") as f:
                        out += f.read()
        elif os.path.exists(p):
            with open(p, "rb") as f:
                out += f.read()
    return out


class FollowTest(ft.FerryTestCase):

    def start_follow(self, *args):
        self._nfollow = getattr(self, "_nfollow", 0) + 1
        self.follow_log = self.path("follow-%d.log" % self._nfollow)
        return ft.start_dst(["follow", "--config", self.dst_conf] + list(args), self.follow_log)

    def stop_follow(self, proc, timeout=10):
        """SIGTERM; asserts a prompt, clean exit. Returns the log."""
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except Exception:
            proc.kill()
            proc.wait()
            raise AssertionError("follow ignored SIGTERM for %s s" % timeout)
        took = time.monotonic() - t0
        with open(self.follow_log, "rb") as f:
            log = f.read().decode(errors="replace")
        bad = ft.sanitizer_report(log)
        self.assertIsNone(bad, log[-4000:])
        self.assertEqual(proc.returncode, 0, "follow exit %d:\n%s" % (proc.returncode,
                                                                     log[-4000:]))
        self.assertLess(took, timeout)
        return log

    def test_follow_mirrors_until_sigterm(self):
        self.make_source(teams=2, posts_per_team=100)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            proc = self.start_follow("--interval", "0.2")
            try:
                wait_for(lambda: "round 1:" in read_text(self.follow_log), 30,
                         "the first round (the copy)")
                conn = ft.source_conn(self.src_db)
                ch = conn.execute("SELECT min(id) FROM channels WHERE team_id = 1").fetchone()[0]
                pid = conn.execute("INSERT INTO posts(channel_id, user_id, body) "
                                   "VALUES (?, 1, 'followed')", (ch,)).lastrowid
                conn.execute("UPDATE settings SET value = 'light' WHERE team_id = 1 "
                             "AND key = 'theme'")
                conn.close()
                wait_for(lambda: row_exists(self.dst_db, "SELECT 1 FROM posts WHERE id = ? "
                                            "AND body = 'followed'", pid), 20,
                         "the new post on the target")
                wait_for(lambda: row_exists(self.dst_db, "SELECT 1 FROM settings WHERE "
                                            "team_id = 1 AND key = 'theme' AND "
                                            "value = 'light'"), 20, "the update on the target")
            finally:
                log = self.stop_follow(proc)
            self.assertRegex(log, r"lag \d+ s")
            self.assertIn("changes were behind", log)
            # consistent: a sync afterwards picks up from the mark, and equals the oracle
            conn = ft.source_conn(self.src_db)
            conn.execute("DELETE FROM posts WHERE id = ?", (pid,))
            conn.close()
            self.sync()
            st = ft.status_json(self.dst_conf)
            self.assertGreaterEqual(st["lag_seconds"], 0)
            self.assertGreater(st["source_seen"], 0)
            kinds = {r["kind"] for r in st["runs"]}
            self.assertIn("follow", kinds)
            self.assertFalse([r for r in st["runs"] if r["kind"] == "follow" and r["ended"] == 0],
                             "a follow run was left unfinished")
        self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))

    def test_follow_json_and_stop_during_the_copy(self):
        self.make_source(teams=2, posts_per_team=3000, batch_rows=50)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            proc = self.start_follow("--interval", "0.2", "--json")
            wait_for(lambda: row_exists(self.dst_db, "SELECT 1 FROM posts"), 30,
                     "the copy to begin")
            self.stop_follow(proc)
            # stopped between pages: the state resumes, nothing is lost or doubled
            st = ft.status_json(self.dst_conf)
            copying = [t for t in st["tables"] if not t["done"]]
            if copying:
                # the round cut short says so, as a JSON line of its own
                last = json.loads([ln for ln in read_text(self.follow_log).splitlines()
                                   if ln.startswith("{")][-1])
                self.assertEqual((last["ok"], last.get("stopped")), (True, True), last)
            self.sync()
            proc = self.start_follow("--interval", "0.1", "--json")
            wait_for(lambda: os.path.getsize(self.follow_log) > 0, 30, "a round report")
            time.sleep(0.3)
            self.stop_follow(proc)
            with open(self.follow_log) as f:
                rounds = [json.loads(line) for line in f if line.startswith("{")]
            self.assertGreater(len(rounds), 0)
            for r in rounds:
                self.assertTrue(r["ok"], r)
                self.assertEqual(r.get("pending", 0), 0, "nothing was written, nothing behind")
                self.assertGreaterEqual(r["lag_seconds"], 0)
        self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))
        # The copy was big enough to be stopped mid-way at least once in a while;
        # either way the end state above is exact.
        sys.stderr.write("[stopped with %d tables not copied yet] " % len(copying))

    def test_sync_stops_on_sigterm(self):
        """SIGTERM to a one-shot sync during its copy (systemd stopping the
        unit): it stops after the page being applied, says how to go on,
        exits 5 (EINTR), and the run is recorded as stopped, not left
        unfinished; the next sync resumes and the target is exact. Oracle:
        the run record, and the tenant's rows (assertTenantCopy)."""
        self.make_source(teams=2, posts_per_team=4000, batch_rows=50)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            log = self.path("sync.log")
            proc = ft.start_dst(["sync", "--config", self.dst_conf], log)
            wait_for(lambda: row_exists(self.dst_db, "SELECT 1 FROM posts"), 30,
                     "the copy to begin")
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=30)
            text = read_text(log)
            st = ft.status_json(self.dst_conf)
            if rc == 0:
                # the copy ended before the signal came: nothing to check here
                self.assertTrue(all(t["done"] for t in st["tables"]), st)
                sys.stderr.write("[the copy ended before SIGTERM] ")
            else:
                self.assertEqual(rc, 5, text)
                self.assertRegex(text, r"stopped (during the copy of \w+; sync again to "
                                       r"resume|between change batches; sync again)")
                run = max(st["runs"], key=lambda r: r["id"])
                self.assertEqual(run["code"], "EINTR", run)
                self.assertGreater(run["ended"], 0, run)
            self.sync()
        self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))

    def test_follow_keeps_going_while_the_source_is_away(self):
        self.make_source(teams=2, posts_per_team=30)
        # held until the source starts: a free port let go could be taken by
        # another test's source meanwhile, which refuses this target's key
        port, holder = ft.refusing_port()
        with open(self.src_conf) as f:
            conf = f.read()
        with open(self.src_conf, "w") as f:
            f.write(conf.replace("listen = 127.0.0.1:0", "listen = 127.0.0.1:%d" % port))
        self.make_target("http://127.0.0.1:%d" % port, tenant=1)
        proc = self.start_follow("--interval", "0.2")
        try:
            time.sleep(1.0)  # rounds fail: nobody listens
            self.assertIsNone(proc.poll(), "follow gave up on an unreachable source")
            holder.close()
            with self.serve():
                wait_for(lambda: re.search(r"round \d+: copied", read_text(self.follow_log)),
                         30, "the copy once the source is up")
        finally:
            holder.close()
            log = self.stop_follow(proc)
        self.assertIn("retrying in", log)
        self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))
        # the source away from the first round of a new follow: the lag it
        # reports is the state's (the last head seen), not unknown (-1)
        port, holder = ft.refusing_port()
        with open(self.dst_conf) as f:
            conf = re.sub(r"url = http://127.0.0.1:\d+", "url = http://127.0.0.1:%d" % port,
                          f.read())
        with open(self.dst_conf, "w") as f:
            f.write(conf)
        proc = self.start_follow("--interval", "0.2", "--json")
        try:
            wait_for(lambda: '"ok":false' in read_text(self.follow_log), 30, "a failed round")
        finally:
            holder.close()
            self.stop_follow(proc)
        rounds = [json.loads(line) for line in read_text(self.follow_log).splitlines()
                  if line.startswith("{")]
        self.assertFalse(rounds[0]["ok"], rounds)
        self.assertGreaterEqual(rounds[0]["lag_seconds"], 0, rounds)

    def test_follow_waits_while_another_run_holds_the_state(self):
        """Another ferry-dst run on the same state (a verify, a one-shot
        sync) holds its lock: follow's rounds meanwhile fail and are
        retried, where follow used to stop with exit 2. The lock is held
        here by the test itself, as flock(2) does for ferry-dst."""
        import fcntl
        self.make_source(teams=2, posts_per_team=30)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            proc = self.start_follow("--interval", "0.1")
            try:
                wait_for(lambda: "round 1:" in read_text(self.follow_log), 30,
                         "the first round (the copy)")
                with open(os.path.join(self.state, "ferry.lock"), "r+") as lock:
                    fcntl.flock(lock, fcntl.LOCK_EX)
                    try:
                        wait_for(lambda: "is in use by" in read_text(self.follow_log), 20,
                                 "a round that met the held state")
                        time.sleep(0.5)
                        self.assertIsNone(proc.poll(), "follow stopped at a held state")
                    finally:
                        fcntl.flock(lock, fcntl.LOCK_UN)
                conn = ft.source_conn(self.src_db)
                ch = conn.execute("SELECT min(id) FROM channels WHERE team_id = 1").fetchone()[0]
                pid = conn.execute("INSERT INTO posts(channel_id, user_id, body) "
                                   "VALUES (?, 1, 'after the lock')", (ch,)).lastrowid
                conn.close()
                wait_for(lambda: row_exists(self.dst_db, "SELECT 1 FROM posts WHERE id = ?",
                                            pid), 20, "the post written after the lock")
            finally:
                log = self.stop_follow(proc)
            self.assertIn("retrying in", log)
        self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))

    # -- masking ----------------------------------------------------------------

    def test_new_column_of_a_masked_table_waits_for_the_operator(self):
        """The application adds a column to a table that has [mask]s while
        ferry-src serves: the column is not served (no request is, the
        source log names the column and the two ways on) until serve is
        restarted; its value never reaches the target meanwhile (a new
        column of a table without masks is not held:
        test_sqlite_sync.test_column_added_while_serving). Oracle: the
        target's bytes, and the values the test wrote."""
        self.make_source(teams=2, posts_per_team=50)
        with open(self.src_conf, "a") as f:
            f.write("\n[mask]\nposts.body = 'redacted ' || id\n")
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync("--quiet")
            ft.on_source(self.src_db, "ALTER TABLE posts ADD COLUMN phone TEXT",
                         "UPDATE posts SET phone = 'PHONE-SECRET-' || id")
            for attempt in (1, 2):
                cp = self.sync("--quiet", expect=None)
                self.assertEqual(cp.returncode, 2, "attempt %d: %s" % (attempt, cp.stderr))
            with open(self.path("src-%d.log" % self._nserve)) as f:
                self.assertIn("table posts has a new column phone and [mask]s but none for it",
                              f.read())
            with open(self.dst_db, "rb") as f:
                self.assertNotIn(b"PHONE-SECRET", f.read())
        # the operator's decision: serve it as it is (a restart); the target adds it
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync("--quiet", expect=5)
            ft.on_source(self.dst_db, "ALTER TABLE posts ADD COLUMN phone TEXT")
            self.sync("--quiet")
            got = dict(ft.query(self.dst_db, "SELECT id, phone FROM posts"))
            self.assertGreater(len(got), 0)
            self.assertTrue(all(v == "PHONE-SECRET-%d" % k for k, v in got.items()))

    def test_new_table_of_a_masked_source_waits_for_the_operator(self):
        """With [mask]s in src.conf, a table that joins the scope (a new
        table, or on PostgreSQL a partition detached from a masked table)
        was served as it is once install ran (probe): it now waits for the
        operator as a new column of a masked table does. Oracle: the
        target's bytes, and the values the test wrote."""
        self.make_source(teams=2, posts_per_team=20)
        with open(self.src_conf, "a") as f:
            f.write("\n[mask]\nposts.body = 'redacted ' || id\n")
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync("--quiet")
            ft.on_source(self.src_db, "CREATE TABLE drafts(id INTEGER PRIMARY KEY, channel_id "
                         "INTEGER NOT NULL REFERENCES channels(id), body TEXT)",
                         "INSERT INTO drafts(channel_id, body) SELECT id, 'DRAFT-SECRET-' || id "
                         "FROM channels")
            cp = ft.run_src(["install", "--config", self.src_conf])
            self.assertEqual(cp.returncode, 0, cp.stderr)
            for attempt in (1, 2):
                cp = self.sync("--quiet", expect=None)
                self.assertEqual(cp.returncode, 2, "attempt %d: %s" % (attempt, cp.stderr))
            self.assertIn("table drafts joined the scope and there are [mask]s, none for it",
                          srv.log())
            with open(self.dst_db, "rb") as f:
                self.assertNotIn(b"DRAFT-SECRET", f.read())
        # the operator masks it too, and restarts serve
        with open(self.src_conf, "a") as f:
            f.write("drafts.body = NULL\n")
        ft.on_source(self.dst_db, "CREATE TABLE drafts(id INTEGER PRIMARY KEY, channel_id "
                     "INTEGER NOT NULL REFERENCES channels(id), body TEXT)")
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync("--quiet")
        want = ft.query(self.src_db, "SELECT d.id FROM drafts d JOIN channels c ON c.id = "
                        "d.channel_id WHERE c.team_id = 1 ORDER BY 1")
        self.assertGreater(len(want), 0)
        self.assertEqual(ft.query(self.dst_db, "SELECT id FROM drafts ORDER BY 1"), want)
        self.assertEqual(ft.query(self.dst_db, "SELECT count(*) FROM drafts WHERE body IS "
                                  "NOT NULL"), [(0,)])

    def test_masked_columns_never_leave_the_source(self):
        self.make_source(teams=2, posts_per_team=100)
        conn = ft.source_conn(self.src_db)
        ch = conn.execute("SELECT min(id) FROM channels WHERE team_id = 1").fetchone()[0]
        conn.execute("INSERT INTO posts(channel_id, user_id, body) VALUES (?, 1, "
                     "'SECRET-BODY-before-the-copy-4f1c')", (ch,))
        conn.close()
        with open(self.src_conf, "a") as f:
            f.write("\n[mask]\nposts.body = 'redacted ' || id\nsettings.value = NULL\n")
        real = [r[0] for r in sqlite3.connect(self.src_db).execute(
            "SELECT p.body FROM posts p JOIN channels c ON c.id = p.channel_id "
            "WHERE c.team_id = 1 AND length(p.body) >= 12")]
        self.assertGreater(len(real), 20)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync()
            conn = ft.source_conn(self.src_db)
            pid = conn.execute("INSERT INTO posts(channel_id, user_id, body) VALUES (?, 1, "
                               "'SECRET-BODY-in-a-delta-9a2e')", (ch,)).lastrowid
            conn.close()
            self.sync()
        real += ["SECRET-BODY-before-the-copy-4f1c", "SECRET-BODY-in-a-delta-9a2e"]
        dst = sqlite3.connect(self.dst_db)
        try:
            bodies = dst.execute("SELECT id, body FROM posts").fetchall()
            values = dst.execute("SELECT value FROM settings").fetchall()
        finally:
            dst.close()
        self.assertEqual(len(bodies), len(ft.tenant_rows(self.src_db, "posts", 1)))
        for i, body in bodies:
            self.assertEqual(body, "redacted %d" % i)
        self.assertIn((pid, "redacted %d" % pid), bodies)
        self.assertTrue(values and all(v == (None,) for v in values), values)
        raw = files_bytes(self.dst_db, self.dst_db + "-wal", self.state)
        leaked = [b for b in real if b.encode() in raw]
        self.assertEqual(leaked, [], "real values of a masked column reached the target")
        # unmasked columns still travel exactly
        for t in ("channels", "kinds", "reactions"):
            self.assertTableEqual(ft.tenant_rows(self.src_db, t, 1), ft.table_rows(self.dst_db, t),
                                  t)

    def test_mask_added_after_the_copy(self):
        """A [mask] added to src.conf once a mirror was copied, ferry-src
        restarted: the next sync finds the masked column's values differ
        from the source's (masked) ones and brings the table in step, so no
        real value stays on the mirror (they stayed until a verify
        --repair); the mask removed again, the real values come back. A
        few differing rows are pulled again, more copy the table again.
        Oracle: the target's rows against the mask's own formula and the
        source's values."""
        self.make_source(teams=2, posts_per_team=100)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync()
        with open(self.src_conf) as f:
            plain = f.read()
        with open(self.src_conf, "a") as f:
            f.write("\n[mask]\nposts.body = 'redacted ' || id\n")
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            cp = self.sync()
            self.assertIn("column body added on the source, or masked or unmasked there",
                          cp.stderr)
            dst = sqlite3.connect(self.dst_db)
            try:
                bodies = dst.execute("SELECT id, body FROM posts").fetchall()
            finally:
                dst.close()
            self.assertEqual(len(bodies), len(ft.tenant_rows(self.src_db, "posts", 1)))
            self.assertEqual([b for b in bodies if b[1] != "redacted %d" % b[0]], [])
            self.sync()  # in step: nothing more to do
            cp = ft.run_dst(["verify", "--config", self.dst_conf])
            self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        with open(self.src_conf, "w") as f:
            f.write(plain)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync()
        self.assertTableEqual(ft.tenant_rows(self.src_db, "posts", 1),
                              ft.table_rows(self.dst_db, "posts"), "posts unmasked again")

    def test_mask_naming_an_unknown_column_stops_serve(self):
        self.make_source(teams=1, posts_per_team=5)
        for bad, why in (("posts.nosuch = 'x'", "no column nosuch (dropped or renamed?); fix or "
                          "remove the [mask] line in "),
                         ("audit_log.what = 'x'", "not in the scope"),
                         ("posts.body = no_such_function(body)", "posts.body"),
                         # rows are addressed by key and owned by foreign key: not maskable
                         ("posts.id = id + 1000000", "id is in the table's primary key"),
                         ("posts.channel_id = 1", "channel_id is in a foreign key to the "
                                                  "scope")):
            with open(self.src_conf) as f:
                conf = f.read().split("\n[mask]")[0]
            with open(self.src_conf, "w") as f:
                f.write(conf + "\n[mask]\n" + bad + "\n")
            cp = ft.run_src(["serve", "--config", self.src_conf], timeout=30)
            self.assertEqual(cp.returncode, 2, "%s: exit %d %s" % (bad, cp.returncode, cp.stderr))
            self.assertIn(why, cp.stderr)
            self.assertNotIn("listening on", cp.stderr)

    def test_mask_of_a_column_a_foreign_key_references_stops_serve(self):
        """members.email is UNIQUE and masked; invites.member_email
        REFERENCES members(email), in the scope through its own team_id and
        logins.member_email with that key its only path: both carried the
        real address to the target (probe), and masking them is refused (a
        foreign key to the scope). serve now refuses the mask on the
        referenced column and says why. Oracle: nothing of the address in
        the target's files."""
        self.make_source(teams=2, posts_per_team=5)
        ft.on_source(self.src_db,
                     "CREATE TABLE members(id INTEGER PRIMARY KEY, team_id INTEGER NOT NULL "
                     "REFERENCES teams(id), email TEXT NOT NULL UNIQUE)",
                     "CREATE TABLE invites(id INTEGER PRIMARY KEY, team_id INTEGER NOT NULL "
                     "REFERENCES teams(id), member_email TEXT REFERENCES members(email))",
                     "CREATE TABLE logins(id INTEGER PRIMARY KEY, member_email TEXT NOT NULL "
                     "REFERENCES members(email))",
                     "INSERT INTO members VALUES (1, 1, 'alice@secret.example')",
                     "INSERT INTO invites VALUES (1, 1, 'alice@secret.example')",
                     "INSERT INTO logins VALUES (1, 'alice@secret.example')")
        with open(self.src_conf, "a") as f:
            f.write("\n[mask]\nmembers.email = 'user' || id || '@example.invalid'\n")
        cp = ft.run_src(["install", "--config", self.src_conf])
        self.assertEqual(cp.returncode, 0, cp.stderr)
        cp = ft.run_src(["serve", "--config", self.src_conf], timeout=30)
        self.assertEqual(cp.returncode, 2, cp.stderr)
        self.assertRegex(cp.stderr, r"\[mask\] members\.email: (invites|logins)\.member_email "
                         r"references it and would carry its value unmasked")
        self.assertNotIn("listening on", cp.stderr)
        # without the referencing keys, the mask is served and holds
        ft.on_source(self.src_db, "DROP TABLE invites", "DROP TABLE logins")
        cp = ft.run_src(["install", "--config", self.src_conf])
        self.assertEqual(cp.returncode, 0, cp.stderr)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync("--quiet")
        self.assertEqual(ft.query(self.dst_db, "SELECT email FROM members"),
                         [("user1@example.invalid",)])
        self.assertNotIn(b"secret.example", files_bytes(self.dst_db, self.dst_db + "-wal",
                                                         self.state))

    # -- the operator's view --------------------------------------------------

    def test_metrics_need_loopback_or_the_token(self):
        """/metrics tells which tenants migrate and how much they write
        (ferry_tenant_head per tenant): it was answered to anyone who could
        reach the port (probe). Without [source] metrics_token it answers
        loopback clients only; with one, only its bearer token. Oracle: the
        status codes, and the gauge of tenant 2's writes."""
        self.make_source(teams=2, posts_per_team=10)
        token = "t0ken-" + "9f" * 16
        with open(self.path("metrics.token"), "w") as f:
            f.write(token + "\n")
        # a non-loopback address of this machine, if it has one
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.connect(("192.0.2.1", 9))
            here = probe.getsockname()[0]
        except OSError:
            here = None
        finally:
            probe.close()
        with open(self.src_conf) as f:
            conf = f.read()
        with open(self.src_conf, "w") as f:
            f.write(conf.replace("listen = 127.0.0.1:0", "listen = 0.0.0.0:0"))
        with self.serve() as srv:
            port = srv.url.rsplit(":", 1)[1]
            status, body = ft.http_get("http://127.0.0.1:" + port, "/metrics")
            self.assertEqual(status, 200, body)
            self.assertIn(b"ferry_requests_total", body)
            if here and not here.startswith("127."):
                status, body = ft.http_get("http://%s:%s" % (here, port), "/metrics")
                self.assertEqual(status, 403, body)
                self.assertNotIn(b"ferry_tenant_head", body)
                self.assertIn(b"metrics_token", body)
        os.chmod(self.path("metrics.token"), 0o644)
        with open(self.src_conf) as f:
            conf = f.read()
        with open(self.src_conf, "w") as f:
            f.write(conf.replace("[source]\n", "[source]\nmetrics_token = %s\n"
                                 % self.path("metrics.token"), 1))
        cp = ft.run_src(["serve", "--config", self.src_conf], timeout=30)
        self.assertEqual(cp.returncode, 2, cp.stderr)
        self.assertIn("is readable by others; run chmod 600", cp.stderr)
        os.chmod(self.path("metrics.token"), 0o600)
        with self.serve() as srv:
            self.make_target(srv.url.replace("0.0.0.0", "127.0.0.1"), tenant=1)
            self.sync("--quiet")
            url = "http://127.0.0.1:" + srv.url.rsplit(":", 1)[1]
            for headers in ({}, {"Authorization": "Bearer wrong"},
                            {"Authorization": "Bearer " + token + "x"},
                            {"Authorization": token}):
                status, body = ft.http_get(url, "/metrics", headers=headers)
                self.assertEqual(status, 401, (headers, body))
                self.assertNotIn(b"ferry_tenant_head", body)
            for scheme in ("Bearer ", "bearer "):  # the scheme is case-insensitive (RFC 7235)
                status, body = ft.http_get(url, "/metrics",
                                           headers={"Authorization": scheme + token})
                self.assertEqual(status, 200, body)
            self.assertRegex(body.decode(), r'(?m)^ferry_tenant_head\{tenant="1"\} \d+$')
        self.assertNotIn(token, srv.log())

    def test_metrics_status_lag_and_run_log(self):
        self.make_source(teams=2, posts_per_team=60)
        secret = "METRICS-MUST-NOT-SHOW-7d3f"
        conn = ft.source_conn(self.src_db)
        ch = conn.execute("SELECT min(id) FROM channels WHERE team_id = 1").fetchone()[0]
        conn.execute("INSERT INTO posts(channel_id, user_id, body) VALUES (?, 1, ?)",
                     (ch, secret))
        conn.close()
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            cp = self.sync()
            self.assertRegex(cp.stderr, r"copy posts: \d+ rows in")  # plain lines, not a tty
            self.assertNotIn("\r", cp.stderr)
            conn = ft.source_conn(self.src_db)
            conn.execute("UPDATE posts SET score = 9 WHERE channel_id = ?", (ch,))
            conn.close()
            self.sync()
            status, body = ft.http_get(srv.url, "/metrics")
            self.assertEqual(status, 200)
            text = body.decode()
            served = int(re.search(r"^ferry_rows_served_total (\d+)$", text, re.M).group(1))
            self.assertGreater(served, 0)
            head = int(re.search(r'^ferry_tenant_head\{tenant="1"\} (\d+)$', text,
                                 re.M).group(1))
            hwm = int(re.search(r'^ferry_served_hwm\{tenant="1"\} (\d+)$', text, re.M).group(1))
            self.assertGreater(head, 0)
            self.assertLessEqual(hwm, head)
            self.assertRegex(text, r'(?m)^ferry_tenant_frozen\{tenant="1"\} 0$')
            self.assertNotIn(secret, text)
            for line in text.splitlines():
                if line.startswith("#"):
                    continue
                self.assertRegex(line, r'^[a-z_]+(\{[a-z]+="[^"]*"(,[a-z]+="[^"]*")*\})? '
                                       r'-?\d+(\.\d+)?$')
            q = ft.run_dst(["sync", "--config", self.dst_conf, "--quiet"])
            self.assertEqual(q.returncode, 0, q.stderr)
            self.assertEqual(q.stderr.strip(), "", "--quiet printed: %s" % q.stderr)
        st = ft.status_json(self.dst_conf)
        self.assertEqual(st["source_head"], head)
        self.assertLessEqual(st["lag_seconds"], 60)
        text = ft.run_dst(["status", "--config", self.dst_conf]).stdout
        self.assertRegex(text, r"lag: \d+ s")
        with open(os.path.join(self.state, "runs.log")) as f:
            events = [json.loads(line) for line in f]
        self.assertEqual([e["event"] for e in events if e["run"] == 1][0], "start")
        ends = [e for e in events if e["event"] == "end"]
        self.assertEqual(len(ends), 3)
        self.assertTrue(all(e["code"] == "OK" for e in ends))
        copied = {e["table"]: e["rows"] for e in events if e["event"] == "table"}
        for t in ft.IN_SCOPE:
            self.assertEqual(copied[t], len(ft.tenant_rows(self.src_db, t, 1)), t)
        with open(os.path.join(self.state, "runs.log"), "rb") as f:
            self.assertNotIn(secret.encode(), f.read())


if __name__ == "__main__":
    ft.main()
