#!/usr/bin/env python3
"""Migration mode and cutover, SQLite to SQLite, with the real agents.

The application is played by Python's sqlite3 module on the source file: its
writes to a frozen tenant must fail with the error that names the migration,
and its writes to the other tenants must go on. The end state of a migration
is checked against the hand-written oracle of ferrytest.tenant_rows(), never
against ferry's own notion of scope.
"""

import atexit
import json
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402

FROZEN = "is frozen for migration by ferry; writes are refused until ferry-src unfreeze"


def team_channel(conn, team):
    return conn.execute("SELECT min(id) FROM channels WHERE team_id = ?", (team,)).fetchone()[0]


def team_post(conn, team):
    return conn.execute("SELECT min(p.id) FROM posts p JOIN channels c ON c.id = p.channel_id "
                        "WHERE c.team_id = ?", (team,)).fetchone()[0]


def try_sql(conn, sql, *params):
    """(True, None) when the statement ran, (False, message) when the
    database refused it."""
    try:
        conn.execute(sql, params)
        return True, None
    except sqlite3.DatabaseError as e:
        return False, str(e)


def app_writes(conn, team):
    """One insert, one update and one delete of the team's rows, as the
    application would: [(what, ok, message)]."""
    out = []
    ch = team_channel(conn, team)
    post = team_post(conn, team)
    out.append(("insert",) + try_sql(
        conn, "INSERT INTO posts(channel_id, user_id, body, score) VALUES (?, 2, 'app write', 1.5)",
        ch))
    out.append(("update",) + try_sql(conn, "UPDATE posts SET body = 'app edit' WHERE id = ?", post))
    out.append(("delete",) + try_sql(conn, "DELETE FROM posts WHERE id = ?", post))
    out.append(("insert settings",) + try_sql(
        conn, "INSERT OR REPLACE INTO settings(team_id, key, value) VALUES (?, 'k', 'v')", team))
    return out


class Writer(threading.Thread):
    """The application writing all the time: inserts, updates and deletes of
    posts in each of its teams, round robin. Every attempt is logged as
    (seq, team, ok, message)."""

    def __init__(self, db, teams, pause=0.003):
        super().__init__(daemon=True)
        self.db = db
        self.teams = teams
        self.pause = pause
        self.log = []
        self.stop = threading.Event()
        self.error = None

    def run(self):
        try:
            conn = ft.source_conn(self.db)
            rng = random.Random(5)
            chans = {t: [r[0] for r in conn.execute(
                "SELECT id FROM channels WHERE team_id = ?", (t,))] for t in self.teams}
            i = 0
            while not self.stop.is_set():
                for t in self.teams:
                    op = i % 3
                    if op == 0:
                        r = try_sql(conn, "INSERT INTO posts(channel_id, user_id, body, score) "
                                    "VALUES (?, ?, ?, ?)", rng.choice(chans[t]), rng.randint(1, 40),
                                    "writer %d in team %d" % (i, t), i / 7.0)
                    else:
                        post = conn.execute(
                            "SELECT p.id FROM posts p JOIN channels c ON c.id = p.channel_id "
                            "WHERE c.team_id = ? ORDER BY p.id LIMIT 1 OFFSET ?",
                            (t, rng.randint(0, 50))).fetchone()
                        if post is None:
                            continue
                        if op == 1:
                            r = try_sql(conn, "UPDATE posts SET body = ?, score = ? WHERE id = ?",
                                        "edited %d" % i, -i / 3.0, post[0])
                        else:
                            r = try_sql(conn, "DELETE FROM posts WHERE id = ?", post[0])
                    self.log.append((len(self.log), t) + r)
                i += 1
                time.sleep(self.pause)
            conn.close()
        except Exception as e:  # reported by the test, not lost in a thread
            self.error = e

    def attempts(self, team):
        return [e for e in self.log if e[1] == team]


class DropAfterFreeze:
    """A TCP relay in front of the source that goes away as soon as it has
    passed on the source's answer to POST /v1/freeze: the source is then
    frozen and unreachable, as when the network drops mid-cutover."""

    def __init__(self, host, port):
        self.target = (host, port)
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.url = "http://127.0.0.1:%d" % self.ls.getsockname()[1]
        self.socks = []
        self.froze = False
        self.dead = threading.Event()
        self.answered = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.dead.is_set():
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            if self.dead.is_set():
                c.close()
                return
            s = socket.create_connection(self.target)
            self.socks += [c, s]
            threading.Thread(target=self._up, args=(c, s), daemon=True).start()
            threading.Thread(target=self._down, args=(s, c), daemon=True).start()

    def _up(self, a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                if b"POST /v1/freeze " in d:
                    self.froze = True
                b.sendall(d)
        except OSError:
            pass

    def _down(self, a, b):
        pending = b""
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                if self.froze:
                    pending += d
                    head, sep, body = pending.partition(b"\r\n\r\n")
                    if sep:
                        length = 0
                        for line in head.split(b"\r\n"):
                            if line.lower().startswith(b"content-length:"):
                                length = int(line.split(b":", 1)[1])
                        if len(body) >= length:
                            # Nothing gets through once the answer is out:
                            # stop accepting before ferry-dst can read it.
                            self.dead.set()
                            self.ls.close()
                            b.sendall(d)
                            self.answered.set()
                            self.kill()
                            return
                b.sendall(d)
        except OSError:
            pass

    def kill(self):
        self.dead.set()
        try:
            self.ls.close()
        except OSError:
            pass
        for s in self.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


class CutoverTest(ft.FerryTestCase):

    def cutover(self, *args, expect=0, timeout=300):
        cp = ft.run_dst(["cutover", "--config", self.dst_conf] + list(args), timeout=timeout)
        if expect is not None:
            self.assertEqual(cp.returncode, expect, "ferry-dst cutover %s: exit %d, expected %d\n"
                             "stdout: %s\nstderr: %s" % (" ".join(args), cp.returncode, expect,
                                                        cp.stdout[-3000:], cp.stderr[-3000:]))
        return cp

    def assertFrozen(self, team, frozen=True):
        """The application's writes to team are refused (or accepted) by the
        source database itself."""
        conn = ft.source_conn(self.src_db)
        try:
            conn.execute("BEGIN")
            results = app_writes(conn, team)
            conn.execute("ROLLBACK")
        finally:
            conn.close()
        for what, ok, msg in results:
            if frozen:
                self.assertFalse(ok, "%s in frozen team %d was accepted" % (what, team))
                self.assertIn("tenant %d %s" % (team, FROZEN), msg)
            else:
                self.assertTrue(ok, "%s in team %d was refused: %s" % (what, team, msg))

    # -- freeze ---------------------------------------------------------------

    def test_freeze_refuses_writes_of_that_tenant_only(self):
        self.make_source(teams=3, posts_per_team=40)
        ft.on_source(self.src_db, "CREATE UNIQUE INDEX channels_name ON channels(name)",
                     "CREATE UNIQUE INDEX posts_pinned ON posts(user_id) WHERE body = 'pinned'")
        self.assertFrozen(1, frozen=False)
        before = ft.tenant_rows(self.src_db, "posts", 1)
        cp = ft.run_src(["freeze", "--config", self.src_conf, "--tenant", "1",
                         "--reason", "moving to self-hosted"])
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertIn("ferry-src unfreeze", cp.stdout)
        conn = ft.source_conn(self.src_db)
        try:
            ch, post = team_channel(conn, 1), team_post(conn, 1)
            for what, ok, msg in app_writes(conn, 1):
                self.assertFalse(ok, "%s in frozen team 1 was accepted" % what)
                self.assertIn("tenant 1 " + FROZEN, msg)
            # a row moved into or out of the frozen tenant is refused too
            ch2 = team_channel(conn, 2)
            self.assertEqual(try_sql(conn, "UPDATE posts SET channel_id = ? WHERE id = ?",
                                     ch2, post)[0], False)
            post2 = team_post(conn, 2)
            self.assertEqual(try_sql(conn, "UPDATE posts SET channel_id = ? WHERE id = ?",
                                     ch, post2)[0], False)
            # a scope predicate table ([table tags] scope) and the root row itself
            self.assertFalse(try_sql(conn, "INSERT INTO tags VALUES ('new-tag', 1)")[0])
            self.assertFalse(try_sql(conn, "DELETE FROM teams WHERE id = 1")[0])
            self.assertFalse(try_sql(conn, "DELETE FROM channels WHERE id = ?", ch)[0])
            # REPLACE deletes the rows in its way without a delete trigger:
            # another tenant's write that takes a frozen row's key or UNIQUE
            # value deleted that row (probe)
            name1 = conn.execute("SELECT name FROM channels WHERE id = ?", (ch,)).fetchone()[0]
            for sql, args in (
                    ("INSERT OR REPLACE INTO tags(name, team_ref) VALUES ('team1-tag0', 2)", ()),
                    ("UPDATE OR REPLACE posts SET id = ? WHERE id = ?", (post, post2)),
                    ("INSERT OR REPLACE INTO posts(id, channel_id, body) VALUES (?, ?, 'x')",
                     (post, ch2)),
                    ("INSERT OR REPLACE INTO channels(team_id, name) VALUES (2, ?)", (name1,)),
                    ("UPDATE OR REPLACE channels SET name = ? WHERE id = ?", (name1, ch2)),
                    ("INSERT INTO channels(team_id, name) VALUES (2, ?) ON CONFLICT DO "
                     "UPDATE SET team_id = 2", (name1,))):
                ok, msg = try_sql(conn, sql, *args)
                self.assertFalse(ok, sql)
                self.assertIn("tenant 1 " + FROZEN, msg)
            self.assertEqual(conn.execute("SELECT count(*) FROM tags WHERE name = 'team1-tag0' "
                                          "AND team_ref = 1").fetchone()[0], 1)
            # a partial UNIQUE index clashes only where its clause holds on
            # both rows: tenant 2's pinned post by a user of a tenant 1 post
            # is no clash (it was refused; probe)
            user = conn.execute("SELECT min(p.user_id) FROM posts p JOIN channels c ON c.id = "
                                "p.channel_id WHERE c.team_id = 1").fetchone()[0]
            self.assertIsNotNone(user)
            ok, msg = try_sql(conn, "INSERT INTO posts(channel_id, user_id, body) VALUES "
                              "(?, ?, 'pinned')", ch2, user)
            self.assertTrue(ok, msg)
            self.assertTrue(try_sql(conn, "UPDATE posts SET score = 1 WHERE body = 'pinned'")[0])
            # the other tenants write as before, the tables out of scope too
            for what, ok, msg in app_writes(conn, 2):
                self.assertTrue(ok, "%s in team 2 was refused: %s" % (what, msg))
            self.assertTrue(try_sql(conn, "INSERT INTO tags VALUES ('t3-tag', 3)")[0])
            self.assertTrue(try_sql(conn, "INSERT OR REPLACE INTO tags VALUES ('t3-tag', 2)")[0])
            self.assertTrue(try_sql(conn, "UPDATE OR REPLACE channels SET name = 'team2-x' "
                                    "WHERE id = ?", ch2)[0])
            self.assertTrue(try_sql(conn, "INSERT INTO audit_log(team_id, what) "
                                    "VALUES (1, 'login')")[0])
            self.assertTrue(try_sql(conn, "UPDATE users SET email = 'x@y' WHERE id = 1")[0])
        finally:
            conn.close()
        self.assertEqual(ft.tenant_rows(self.src_db, "posts", 1), before,
                         "a refused write changed the frozen tenant")
        # idempotent: freezing again keeps it frozen, and a missing tenant is an error
        self.assertEqual(ft.run_src(["freeze", "--config", self.src_conf,
                                     "--tenant", "1"]).returncode, 0)
        cp = ft.run_src(["freeze", "--config", self.src_conf, "--tenant", "99"])
        self.assertEqual(cp.returncode, 2, cp.stderr)  # README: a tenant that does not exist
        self.assertIn("tenant 99 not found", cp.stderr)
        for bad in ("abc", "1.0"):  # not a key of teams: the operator's input too (was 5)
            cp = ft.run_src(["freeze", "--config", self.src_conf, "--tenant", bad])
            self.assertEqual(cp.returncode, 2, cp.stderr)
            self.assertIn("is not an integer key of teams", cp.stderr)
        cp = ft.run_src(["unfreeze", "--config", self.src_conf, "--tenant", "1"])
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertFrozen(1, frozen=False)
        # nothing of the freeze is left behind while nothing is frozen
        conn = sqlite3.connect(self.src_db)
        try:
            left = conn.execute("SELECT count(*) FROM sqlite_schema WHERE type = 'trigger' "
                                "AND name LIKE '\\_ferry\\_frz%' ESCAPE '\\'").fetchone()[0]
        finally:
            conn.close()
        self.assertEqual(left, 0)

    def test_cutover_after_a_table_joined_the_scope(self):
        """The application creates a table under posts while ferry-src
        serves; install runs; the serve that kept running freezes (through
        ferry-dst cutover): the new table's writes for the tenant are
        refused too, and its rows reached the target. Oracle: the source."""
        self.make_source(teams=2, posts_per_team=20)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync("--quiet")
            ft.on_source(self.src_db, "CREATE TABLE pins(post_id INTEGER PRIMARY KEY "
                                      "REFERENCES posts(id), at TEXT)",
                         "INSERT INTO pins SELECT id, 'pinned' FROM posts")
            cp = ft.run_src(["install", "--config", self.src_conf])
            self.assertEqual(cp.returncode, 0, cp.stderr)
            self.cutover()
            self.assertFrozen(1)
            conn = ft.source_conn(self.src_db)
            try:
                post1, post2 = team_post(conn, 1), team_post(conn, 2)
                ok, msg = try_sql(conn, "UPDATE pins SET at = 'after' WHERE post_id = ?", post1)
                self.assertFalse(ok, "a write to the new table of the frozen tenant was accepted")
                self.assertIn("tenant 1 " + FROZEN, msg)
                self.assertTrue(try_sql(conn, "UPDATE pins SET at = 'after' WHERE post_id = ?",
                                        post2)[0])
            finally:
                conn.close()
            want = ft.query(self.src_db, ft.PINS_OF_TEAM_1)
            self.assertEqual(ft.query(self.dst_db, ft.PINS_ON_TARGET), want)
            self.assertGreater(len(want), 0)

    def test_freeze_survives_reinstall_and_uninstall_removes_it(self):
        self.make_source(teams=2, posts_per_team=20)
        self.assertEqual(ft.run_src(["freeze", "--config", self.src_conf,
                                     "--tenant", "2"]).returncode, 0)
        cp = ft.run_src(["install", "--config", self.src_conf])
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertFrozen(2)
        self.assertFrozen(1, frozen=False)
        cp = ft.run_src(["uninstall", "--config", self.src_conf])
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertFrozen(2, frozen=False)
        cp = ft.run_src(["freeze", "--config", self.src_conf, "--tenant", "2"])
        self.assertEqual(cp.returncode, 2, cp.stderr)
        self.assertIn("ferry-src install", cp.stderr)

    # -- the whole migration --------------------------------------------------

    def test_migration_story(self):
        self.make_source(teams=3, posts_per_team=1500, batch_rows=100)
        writer = Writer(self.src_db, (1, 2, 3))
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            writer.start()
            try:
                time.sleep(0.2)
                self.sync()                       # bulk copy while the writer writes
                for _ in range(3):                # several deltas
                    time.sleep(0.2)
                    self.sync()
                cp = self.cutover("--json", "--then", "echo hook for $FERRY_TENANT at $FERRY_HWM")
                n = len(writer.log)
                deadline = time.monotonic() + 10  # the writer keeps trying after the cutover
                while len(writer.log) < n + 60 and time.monotonic() < deadline:
                    time.sleep(0.05)
            finally:
                writer.stop.set()
                writer.join(30)
            self.assertIsNone(writer.error, "the writer thread failed: %r" % writer.error)
            report = json.loads(cp.stdout)
            self.assertTrue(report["ok"], report)
            self.assertEqual(report["step"], "done")
            self.assertIn("hook for 1 at", cp.stderr, "the hook's output goes to stderr")

            # verify on its own, with the source still frozen: equal
            v = ft.run_dst(["verify", "--config", self.dst_conf])
            self.assertEqual(v.returncode, 0, "verify after cutover: %s\n%s" % (v.stdout,
                                                                                v.stderr))
            # running it again is harmless
            again = self.cutover()
            self.assertIn("already done", again.stdout)
            # as JSON: the source was not asked, so whether it is frozen is not known
            again = json.loads(self.cutover("--json").stdout)
            self.assertEqual((again["ok"], again["already_done"], again["frozen"]),
                             (True, True, None), again)

        # the writer: refused on tenant 1 from the freeze on, never again accepted
        t1 = writer.attempts(1)
        refused = [e for e in t1 if not e[2]]
        self.assertGreater(len(refused), 0, "no write to tenant 1 was refused")
        for e in refused:
            self.assertIn("tenant 1 " + FROZEN, e[3])
        first = refused[0][0]
        late_ok = [e for e in t1 if e[2] and e[0] > first]
        self.assertEqual(late_ok, [], "tenant 1 accepted writes after the freeze")
        self.assertGreater(len([e for e in t1 if e[2]]), 0, "no write to tenant 1 before it")
        for team in (2, 3):
            others = writer.attempts(team)
            self.assertEqual([e for e in others if not e[2]], [],
                             "team %d was refused a write" % team)
            self.assertGreater(len([e for e in others if e[0] > first]), 0,
                               "team %d stopped writing during the freeze" % team)

        # the target equals the oracle, which the freeze holds still
        self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2, 3))
        tables = {t["table"]: t for t in report["tables"]}
        self.assertEqual(sorted(tables), sorted(ft.IN_SCOPE))
        for t in ft.IN_SCOPE:
            self.assertEqual(tables[t]["rows"], len(ft.tenant_rows(self.src_db, t, 1)), t)

        # the record in the state, and the run log beside it
        st = ft.status_json(self.dst_conf)
        self.assertTrue(st["cutover"]["done"], st)
        self.assertEqual(st["cutover"]["tables"], len(ft.IN_SCOPE))
        self.assertEqual(st["cutover"]["hwm"], report["hwm"])
        with open(os.path.join(self.state, "runs.log")) as f:
            events = [json.loads(line) for line in f]
        kinds = {e.get("kind") for e in events if e["event"] == "start"}
        self.assertIn("cutover", kinds)
        self.assertTrue(any(e["event"] == "table" and e["table"] == "posts" for e in events))
        self.assertEqual(events[-1]["event"], "end")

    # -- failures -------------------------------------------------------------

    def test_source_unreachable_mid_cutover(self):
        self.make_source(teams=2, posts_per_team=50)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync()
            proxy = DropAfterFreeze(srv.host, srv.port)
            with open(self.dst_conf) as f:
                conf = f.read()
            with open(self.dst_conf, "w") as f:
                f.write(conf.replace("url = %s" % srv.url, "url = %s" % proxy.url))
            cp = self.cutover(expect=None)
            self.assertTrue(proxy.answered.is_set(), "the freeze never went through the relay")
            self.assertEqual(cp.returncode, 4, "exit %d\n%s" % (cp.returncode, cp.stderr))
            self.assertIn("stopped at step delta", cp.stderr)
            self.assertIn("ferry-src unfreeze --config", cp.stderr)
            self.assertIn("--tenant 1", cp.stderr)
            self.assertIn("ferry-dst cutover --config %s" % self.dst_conf, cp.stderr)
            self.assertFrozen(1)                      # left frozen
            self.assertFrozen(2, frozen=False)
            self.assertIsNone(ft.status_json(self.dst_conf)["cutover"], "nothing recorded")
            # the retry, once the source is back in reach, finishes the job
            with open(self.dst_conf, "w") as f:
                f.write(conf)
            cp = self.cutover()
            self.assertIn("done", cp.stdout)
        self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))

    def test_failing_hook_fails_the_cutover(self):
        self.make_source(teams=2, posts_per_team=50)
        mark = self.path("hook-ran")
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync()
            cp = self.cutover("--then", "touch %s" % mark, "--then", "exit 3",
                              "--then", "touch %s.never" % mark, expect=None)
            self.assertEqual(cp.returncode, 5, cp.stderr)
            self.assertIn("hook 'exit 3' exited with status 3", cp.stderr)
            self.assertIn("ferry-src unfreeze --config", cp.stderr)
            self.assertTrue(os.path.exists(mark), "the first hook did not run")
            self.assertFalse(os.path.exists(mark + ".never"), "a hook after the failure ran")
            self.assertFrozen(1)
            st = ft.status_json(self.dst_conf)
            self.assertFalse(st["cutover"]["done"], "a cutover with a failed hook is not done")
            # recorded as failed at its hooks (its final delta is a run of its own)
            runs = {r["kind"]: r for r in sorted(st["runs"], key=lambda r: r["id"])}
            self.assertNotEqual(runs["cutover"]["code"], "OK", runs)
            self.assertIn("stopped at hooks: hook 'exit 3'", runs["cutover"]["msg"])
            self.assertEqual(runs["cutover-delta"]["code"], "OK", runs)
            with open(os.path.join(self.state, "runs.log")) as f:
                events = [json.loads(line) for line in f]
            ids = {e["run"] for e in events if e["event"] == "start" and e["kind"] == "cutover"}
            self.assertEqual([e["code"] for e in events if e["event"] == "end" and
                              e["run"] in ids], [runs["cutover"]["code"]])
            # the retry it prints runs the same hooks (without them a retry
            # would record the cutover done with none run)
            retry = [line.split("to retry:", 1)[1].strip() for line in cp.stderr.splitlines()
                     if "to retry:" in line]
            self.assertEqual(retry, ["ferry-dst cutover --config %s --then 'touch %s' --then "
                                     "'exit 3' --then 'touch %s.never'"
                                     % (self.dst_conf, mark, mark)])
            os.unlink(mark)
            again = subprocess.run(["sh", "-c", retry[0]], capture_output=True, text=True,
                                   timeout=120, env=dict(os.environ, PATH=ft.FERRY_BIN + ":" +
                                                         os.environ["PATH"]))
            self.assertEqual(again.returncode, 5, again.stderr)
            self.assertIn("hook 'exit 3' exited with status 3", again.stderr)
            self.assertTrue(os.path.exists(mark), "the retry did not run the first hook")
            # JSON report of a retry that fails the same way
            cp = self.cutover("--json", "--then", "false", expect=5)
            rep = json.loads(cp.stdout)
            self.assertFalse(rep["ok"])
            self.assertEqual(rep["step"], "hooks")
            self.assertEqual(rep["hooks"][0]["status"], 1)
            self.assertIn("--tenant 1", rep["unfreeze"])
            self.assertEqual(rep["retry"], "ferry-dst cutover --config %s --then false"
                             % self.dst_conf)
            # fixed: done, and the hook sees the tenant in its environment
            cp = self.cutover("--then", "echo tenant=$FERRY_TENANT >&2")
            self.assertIn("tenant=1", cp.stderr)
            st = ft.status_json(self.dst_conf)
            self.assertTrue(st["cutover"]["done"])
            last = max((r for r in st["runs"] if r["kind"] == "cutover"), key=lambda r: r["id"])
            self.assertEqual((last["code"], last["msg"][:5]), ("OK", "done:"), last)
        self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))

    def test_two_cutovers_at_once_run_the_hooks_once(self):
        """Two cutovers of one target started together: the second waited for
        the state while the first verified, recorded and ran the hooks, then
        did all of it again (the hooks ran twice; probe). It now finds the
        record the first made and says the cutover is done. Oracle: the
        hooks' own log, and the runs the state keeps."""
        self.make_source(teams=2, posts_per_team=300)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync("--quiet")
            hook = "echo ran >> %s; sleep 0.5" % self.path("hooks.txt")
            procs = [ft.start_dst(["cutover", "--config", self.dst_conf, "--then", hook],
                                  self.path("cut%d.log" % i)) for i in range(2)]
            codes = [p.wait(timeout=120) for p in procs]
            logs = []
            for i in range(2):
                with open(self.path("cut%d.log" % i)) as f:
                    logs.append(f.read())
            self.assertEqual(codes, [0, 0], logs)
            with open(self.path("hooks.txt")) as f:
                self.assertEqual(f.read().split(), ["ran"], logs)
            self.assertEqual(sum("is already done" in log for log in logs), 1, logs)
            runs = ft.status_json(self.dst_conf)["runs"]
            self.assertEqual(sum(r["kind"] == "cutover" and r["code"] == "OK" for r in runs), 1,
                             runs)
        self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))

    def test_nothing_syncs_over_a_live_target(self):
        """After a cutover the target is live: the application writes to it.
        A sync, a follow left running, or verify --repair wrote the source's
        rows over it (a row deleted on the source after an unfreeze went
        from the live target too; probe). They now refuse (exit 2) and say
        why; verify still compares, cutover --force still redoes it.
        Oracle: the live target's own write, by SQL."""
        self.make_source(teams=2, posts_per_team=30)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync("--quiet")
            self.cutover()
            post = ft.query(self.dst_db, "SELECT min(id) FROM posts")[0][0]
            ft.on_source(self.dst_db, "UPDATE posts SET body = 'written on the live target' "
                         "WHERE id = %d" % post)
            self.assertEqual(ft.run_src(["unfreeze", "--config", self.src_conf, "--tenant",
                                         "1"]).returncode, 0)
            ft.on_source(self.src_db, "DELETE FROM reactions WHERE post_id = %d" % post,
                         "DELETE FROM posts WHERE id = %d" % post)
            for args in (["sync"], ["follow", "--interval", "1"], ["verify", "--repair"]):
                cp = ft.run_dst(args + ["--quiet", "--config", self.dst_conf], timeout=60)
                self.assertEqual(cp.returncode, 2, "%s: %s" % (args, cp.stderr))
                self.assertIn("this target's cutover was done at", cp.stderr)
                self.assertIn("it is live", cp.stderr)
            self.assertEqual(ft.query(self.dst_db, "SELECT body FROM posts WHERE id = %d"
                                      % post), [("written on the live target",)])
            cp = ft.run_dst(["verify", "--quiet", "--config", self.dst_conf])
            self.assertEqual(cp.returncode, 1, cp.stdout + cp.stderr)
            cp = self.cutover()
            self.assertIn("is already done", cp.stdout)
            self.assertEqual(ft.query(self.dst_db, "SELECT count(*) FROM posts WHERE id = %d"
                                      % post), [(1,)])
            self.cutover("--force")
            self.assertEqual(ft.query(self.dst_db, "SELECT count(*) FROM posts WHERE id = %d"
                                      % post), [(0,)])

    def test_cutover_started_during_anothers_hooks_writes_nothing(self):
        """Cutover A runs its hooks (the target is live from then on);
        meanwhile the application writes a post on the target, the source's
        operator unfreezes and the post is written on the source too; a
        cutover B started then ran its final delta before it found A's
        record, and wrote the source's post over the target's (probe). B's
        delta is now refused as a sync's would be, and B says the cutover
        is done. Oracle: the target's row, by SQL."""
        self.make_source(teams=2, posts_per_team=30)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync("--quiet")
            started = self.path("hook-started")
            a = ft.start_dst(["cutover", "--config", self.dst_conf, "--then",
                              "touch %s; sleep 4" % started], self.path("cut-a.log"))
            deadline = time.monotonic() + 60
            while not os.path.exists(started):
                self.assertIsNone(a.poll(), "cutover A ended before its hook")
                self.assertLess(time.monotonic(), deadline, "A's hook did not start")
                time.sleep(0.05)
            post = ft.query(self.dst_db, "SELECT min(id) FROM posts")[0][0]
            ft.on_source(self.dst_db, "UPDATE posts SET body = 'the live target' WHERE id = %d"
                         % post)
            self.assertEqual(ft.run_src(["unfreeze", "--config", self.src_conf, "--tenant",
                                         "1"]).returncode, 0)
            ft.on_source(self.src_db, "UPDATE posts SET body = 'a late source write' WHERE "
                         "id = %d" % post)
            b = ft.start_dst(["cutover", "--config", self.dst_conf], self.path("cut-b.log"))
            codes = [a.wait(timeout=120), b.wait(timeout=120)]
            with open(self.path("cut-b.log")) as f:
                blog = f.read()
            self.assertEqual(codes, [0, 0], blog)
            self.assertIn("is already done", blog)
            self.assertEqual(ft.query(self.dst_db, "SELECT body FROM posts WHERE id = %d" % post),
                             [("the live target",)])

    def test_cutover_checks_the_target_before_freezing(self):
        """A typo in [target] database, or a damaged target file: the cutover
        froze the tenant (the application's writes refused) and then
        stopped (probe). It now reads the target first and stops before the
        freeze. Oracle: the application's writes on the source."""
        self.make_source(teams=2, posts_per_team=20)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync("--quiet")
            with open(self.dst_conf) as f:
                good = f.read()
            garbage = self.path("garbage.db")
            with open(garbage, "wb") as f:
                f.write(b"not a database at all " * 512)
            for db in (garbage, self.path("nodir/x.db")):
                with open(self.dst_conf, "w") as f:
                    f.write(good.replace(self.dst_db, db))
                cp = self.cutover(expect=None)
                self.assertIn(cp.returncode, (2, 5), cp.stderr)
                self.assertIn("the target database (nothing was frozen)", cp.stderr)
                self.assertFrozen(1, frozen=False)
            with open(self.dst_conf, "w") as f:
                f.write(good)
            self.cutover()
            self.assertFrozen(1)

    def test_cutover_waits_for_the_state_another_run_holds(self):
        """A follow's round holds the state when the cutover has frozen the
        source: the cutover waits for it (60 s at most) instead of stopping
        with the source frozen. The lock is held here by the test itself,
        for 1.5 s, as flock(2) does for ferry-dst."""
        import fcntl
        self.make_source(teams=2, posts_per_team=20)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync()
            lock = open(os.path.join(self.state, "ferry.lock"), "r+")
            self.addCleanup(lock.close)
            fcntl.flock(lock, fcntl.LOCK_EX)
            timer = threading.Timer(1.5, fcntl.flock, (lock, fcntl.LOCK_UN))
            timer.start()
            try:
                cp = self.cutover()
            finally:
                timer.cancel()
                fcntl.flock(lock, fcntl.LOCK_UN)
            self.assertIn("is in use by", cp.stderr)
            self.assertIn("waiting for it (60 s at most)", cp.stderr)
            self.assertEqual(ft.status_json(self.dst_conf)["cutover"]["done"], True)
        self.assertFrozen(1)

    def test_cutover_needs_a_copy(self):
        self.make_source(teams=2, posts_per_team=20)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            cp = self.cutover(expect=2)
            self.assertIn("run ferry-dst sync", cp.stderr)
        self.assertFrozen(1, frozen=False)


# ---------------------------------------------------------------------------
# PostgreSQL source (skipped, loudly, where no server binaries exist)

PGCLUSTER = os.path.join(ft.ROOT, "scripts", "pgcluster.sh")
_PG = {}

PG_SCHEMA = """
CREATE TABLE teams(id bigint PRIMARY KEY, name text NOT NULL);
CREATE TABLE users(id bigint PRIMARY KEY, email text UNIQUE);
CREATE TABLE channels(id bigserial PRIMARY KEY,
    team_id bigint NOT NULL REFERENCES teams(id) ON DELETE CASCADE, name text);
CREATE TABLE posts(id bigserial PRIMARY KEY,
    channel_id bigint NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    user_id bigint REFERENCES users(id), body text, score double precision);
CREATE TABLE tags(name text PRIMARY KEY, team_ref bigint);
CREATE TABLE audit_log(id bigserial PRIMARY KEY, team_id bigint, what text);
INSERT INTO teams VALUES (1, 'one'), (2, 'two'), (3, 'three');
INSERT INTO users SELECT g, 'u' || g || '@example.com' FROM generate_series(1, 20) g;
INSERT INTO channels(team_id, name) SELECT 1 + g % 3, 'c' || g FROM generate_series(1, 9) g;
INSERT INTO posts(channel_id, user_id, body, score)
    SELECT 1 + g % 9, 1 + g % 20, 'post ' || g, g / 7.0 FROM generate_series(1, 900) g;
INSERT INTO tags SELECT 'tag' || g, 1 + g % 3 FROM generate_series(1, 12) g;
"""


def pg_url(db):
    """A fresh database db in this process's test cluster (started once)."""
    if "dir" not in _PG:
        d = os.path.join(ft.FERRY_TEST_TMP, "pg-cutover-%d" % os.getpid())
        cp = subprocess.run([PGCLUSTER, "start", d], capture_output=True, text=True)
        if cp.returncode == 77:
            raise unittest.SkipTest("no PostgreSQL server binaries: %s" % cp.stderr.strip())
        if cp.returncode != 0:
            raise AssertionError("pgcluster.sh start failed: %s" % cp.stderr)
        _PG["dir"] = d

        def stop():
            # stopped and removed, as test_pg's clusters are: 50-80 MB a run otherwise
            subprocess.run([PGCLUSTER, "stop", d], capture_output=True)
            shutil.rmtree(d, ignore_errors=True)

        atexit.register(stop)
    cp = subprocess.run([PGCLUSTER, "createdb", _PG["dir"], db], capture_output=True, text=True)
    if cp.returncode != 0:
        raise AssertionError("pgcluster.sh createdb failed: %s" % cp.stderr)
    return cp.stdout.strip()


def psql(url, sql):
    """Run sql as the application would: (ok, stdout, stderr)."""
    cp = subprocess.run(["psql", url, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
                        capture_output=True, text=True, timeout=60)
    return cp.returncode == 0, cp.stdout, cp.stderr


class PgCutoverTest(CutoverTest):
    """The same story with a PostgreSQL source, psql as the application."""

    def make_pg_source(self, name):
        self.src_db = pg_url(name)
        ok, _, err = psql(self.src_db, PG_SCHEMA)
        self.assertTrue(ok, err)
        self.source_conf(self.src_db)

    def assertPgFrozen(self, team, frozen=True):
        for sql in ("INSERT INTO posts(channel_id, body) SELECT min(id), 'x' FROM channels "
                    "WHERE team_id = %d" % team,
                    "UPDATE posts SET body = 'y' WHERE channel_id IN "
                    "(SELECT id FROM channels WHERE team_id = %d)" % team,
                    "DELETE FROM posts WHERE id = (SELECT min(p.id) FROM posts p JOIN channels c "
                    "ON c.id = p.channel_id WHERE c.team_id = %d)" % team,
                    "INSERT INTO tags VALUES ('new%d', %d)" % (team, team)):
            ok, _, err = psql(self.src_db, "BEGIN; %s; ROLLBACK" % sql)
            if frozen:
                self.assertFalse(ok, "accepted in frozen team %d: %s" % (team, sql))
                self.assertIn("tenant %d %s" % (team, FROZEN), err)
            else:
                self.assertTrue(ok, "refused in team %d: %s: %s" % (team, sql, err))

    def open_transaction(self, url, sql, wrote=False):
        """psql holding a transaction open on url after sql (BEGIN ...; ...),
        returned once the source's pg_stat_activity shows it idle in it (with
        an xid when wrote). End it with .communicate("COMMIT;\n")."""
        proc = subprocess.Popen(["psql", url, "-X", "-q", "-v", "ON_ERROR_STOP=1"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        proc.stdin.write(sql + "\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 30
        while True:
            (n,), = self.pg_rows("SELECT count(*) FROM pg_stat_activity WHERE state = "
                                 "'idle in transaction'" +
                                 (" AND backend_xid IS NOT NULL" if wrote else ""))
            if int(n) > 0:
                return proc
            self.assertLess(time.monotonic(), deadline, "the transaction did not open")
            time.sleep(0.05)

    def pg_rows(self, sql):
        ok, out, err = psql(self.src_db, sql)
        self.assertTrue(ok, err)
        return sorted(tuple(line.split("|")) for line in out.splitlines())

    def test_pg_freeze_waits_for_writes_in_flight(self):
        self.make_pg_source("freeze_%d" % os.getpid())
        self.assertPgFrozen(1, frozen=False)
        # A transaction of tenant 1 that began before the freeze and commits after it asked.
        slow = subprocess.Popen(
            ["psql", self.src_db, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c",
             "BEGIN; INSERT INTO posts(channel_id, body) VALUES (1, 'in flight'); "
             "SELECT pg_sleep(1.5); COMMIT"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(0.3)
        t0 = time.monotonic()
        cp = ft.run_src(["freeze", "--config", self.src_conf, "--tenant", "1"])
        took = time.monotonic() - t0
        self.assertEqual(cp.returncode, 0, cp.stderr)
        _, slow_err = slow.communicate(timeout=30)
        self.assertEqual(slow.returncode, 0, slow_err)
        self.assertGreater(took, 0.8, "the freeze did not wait for the transaction in flight")
        head = int(cp.stdout.split("change log head ")[1].split(")")[0])
        (logged,), = self.pg_rows("SELECT max(seq) FROM _ferry_changes")
        self.assertEqual(head, int(logged), "the head left out the write in flight")
        self.assertPgFrozen(1)
        self.assertPgFrozen(2, frozen=False)
        cp = ft.run_src(["unfreeze", "--config", self.src_conf, "--tenant", "1"])
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertPgFrozen(1, frozen=False)

    def test_pg_freeze_refuses_moves_and_cascades(self):
        """PostgreSQL: beyond the plain writes, a row moved into or out of
        the frozen tenant, a cascading delete of its channel and the delete
        of its root row are refused, naming the tenant; the other tenants
        write as before, a replica session (a replication apply) is not
        refused, a tenant frozen across a re-install stays frozen, and
        unfreeze restores writes. Oracle: the rows as SQL counts them."""
        self.make_pg_source("freezemv_%d" % os.getpid())
        count = "SELECT count(*) FROM posts p JOIN channels c ON c.id = p.channel_id " \
                "WHERE c.team_id = 1"
        before = self.pg_rows(count)
        cp = ft.run_src(["freeze", "--config", self.src_conf, "--tenant", "1"])
        self.assertEqual(cp.returncode, 0, cp.stderr)
        c1 = "(SELECT min(id) FROM channels WHERE team_id = 1)"
        c2 = "(SELECT min(id) FROM channels WHERE team_id = 2)"
        p1 = "(SELECT min(p.id) FROM posts p JOIN channels c ON c.id = p.channel_id " \
             "WHERE c.team_id = 1)"
        p2 = "(SELECT min(p.id) FROM posts p JOIN channels c ON c.id = p.channel_id " \
             "WHERE c.team_id = 2)"
        for sql in ("UPDATE posts SET channel_id = %s WHERE id = %s" % (c2, p1),
                    "UPDATE posts SET channel_id = %s WHERE id = %s" % (c1, p2),
                    "UPDATE channels SET team_id = 2 WHERE id = %s" % c1,
                    "UPDATE channels SET team_id = 1 WHERE id = %s" % c2,
                    "DELETE FROM channels WHERE id = %s" % c1,
                    "DELETE FROM teams WHERE id = 1"):
            ok, _, err = psql(self.src_db, sql)
            self.assertFalse(ok, "accepted with tenant 1 frozen: %s" % sql)
            self.assertIn("tenant 1 %s" % FROZEN, err)
        self.assertEqual(self.pg_rows(count), before, "a refused write changed tenant 1")
        self.assertPgFrozen(2, frozen=False)
        ok, _, err = psql(self.src_db, "BEGIN; SET LOCAL session_replication_role = replica; "
                                       "UPDATE posts SET body = 'applied' WHERE id = %s; "
                                       "ROLLBACK" % p1)
        self.assertTrue(ok, "a replica session was refused: %s" % err)
        cp = ft.run_src(["install", "--config", self.src_conf])
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertPgFrozen(1)
        cp = ft.run_src(["unfreeze", "--config", self.src_conf, "--tenant", "1"])
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertPgFrozen(1, frozen=False)
        ok, _, err = psql(self.src_db, "UPDATE channels SET team_id = 2 WHERE id = %s" % c1)
        self.assertTrue(ok, err)

    def test_pg_freeze_over_http_keeps_serving_other_tenants(self):
        """A cutover's freeze waits for a transaction that began before it;
        meanwhile the same ferry-src serves another tenant's whole sync."""
        import ferryauth
        self.make_pg_source("freeze_http_%d" % os.getpid())
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync()
            identity2 = ft.test_key("dst-2")
            ferryauth.authorize(self.src_conf, 2, identity2)
            conf2 = ft.write_dst_conf(self.path("dst2.conf"), self.path("dst2.db"),
                                      self.path("state2"), 2, srv.url, identity=identity2,
                                      public_key=ft.test_key("src") + ".pub")
            # a reader that began before the freeze: it could still write with its snapshot
            slow = subprocess.Popen(["psql", self.src_db, "-X", "-q", "-v", "ON_ERROR_STOP=1"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            slow.stdin.write("BEGIN ISOLATION LEVEL REPEATABLE READ; "
                             "SELECT count(*) FROM posts;\n")
            slow.stdin.flush()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                (n,), = self.pg_rows("SELECT count(*) FROM pg_stat_activity "
                                     "WHERE state = 'idle in transaction'")
                if int(n) > 0:
                    break
                time.sleep(0.05)
            cut = ft.start_dst(["cutover", "--config", self.dst_conf], self.path("cutover.log"))
            try:
                while time.monotonic() < deadline and cut.poll() is None:
                    (n,), = self.pg_rows("SELECT count(*) FROM _ferry_frozen WHERE tenant = '1'")
                    if int(n) > 0:
                        break
                    time.sleep(0.05)
                self.assertIsNone(cut.poll(), "the cutover did not wait for the open transaction")
                # the freeze holds and waits: tenant 2 is served meanwhile
                cp = ft.run_dst(["sync", "--config", conf2], timeout=60)
                self.assertEqual(cp.returncode, 0, cp.stderr)
                self.assertIsNone(cut.poll(), "the freeze ended before the transaction did")
                want = self.pg_rows("SELECT p.id, p.body FROM posts p JOIN channels c "
                                    "ON c.id = p.channel_id WHERE c.team_id = 2")
                dst = sqlite3.connect(self.path("dst2.db"))
                try:
                    got = sorted(tuple(str(v) for v in r)
                                 for r in dst.execute("SELECT id, body FROM posts"))
                finally:
                    dst.close()
                self.assertGreater(len(want), 0)
                self.assertEqual(got, want)
                slow.communicate("COMMIT;\n", timeout=30)
                rc = cut.wait(timeout=120)
                with open(self.path("cutover.log")) as f:
                    self.assertEqual(rc, 0, f.read())
            finally:
                if cut.poll() is None:
                    cut.kill()
                    cut.wait()
                if slow.poll() is None:
                    slow.kill()
                    slow.communicate()
            self.assertPgFrozen(1)
            self.assertPgFrozen(2, frozen=False)

    def test_pg_unfreeze_while_the_freeze_waits(self):
        """ferry-src unfreeze while a cutover's freeze waits for a
        transaction in flight: the freeze answered "frozen" when the wait
        ended, and the cutover recorded done with the source writable
        (probe). Now the freeze says the tenant was unfrozen, the cutover
        stops (exit 5) without a record, and runs again. Oracles: the exit
        status, the state's record, and a write SQL tries."""
        self.make_pg_source("unfreeze_wait_%d" % os.getpid())
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync("--quiet")
            tx = self.open_transaction(self.src_db, "BEGIN; UPDATE posts SET body = 'in flight' "
                                       "WHERE id = (SELECT min(p.id) FROM posts p JOIN channels c "
                                       "ON c.id = p.channel_id WHERE c.team_id = 2);", wrote=True)
            try:
                cut = ft.start_dst(["cutover", "--config", self.dst_conf],
                                   self.path("cutover.log"))
                deadline = time.monotonic() + 30
                while self.pg_rows("SELECT count(*) FROM _ferry_frozen")[0][0] == "0":
                    self.assertLess(time.monotonic(), deadline, "the freeze did not come")
                    time.sleep(0.05)
                cp = ft.run_src(["unfreeze", "--config", self.src_conf, "--tenant", "1"])
                self.assertEqual(cp.returncode, 0, cp.stderr)
            finally:
                tx.communicate("COMMIT;\n", timeout=30)
            rc = cut.wait(timeout=120)
            with open(self.path("cutover.log")) as f:
                log = f.read()
            self.assertEqual(rc, 5, log)
            self.assertIn("tenant 1 was unfrozen (ferry-src unfreeze) while the freeze waited",
                          log)
            self.assertIsNone(ft.status_json(self.dst_conf).get("cutover"), log)
            self.assertPgFrozen(1, frozen=False)
            self.cutover()
            self.assertPgFrozen(1)

    def test_pg_freeze_wait_runs_out(self):
        """[source] freeze_wait = 2 and a transaction that began before the
        freeze held open: the cutover stops after about 2 s with exit 5 and
        the source's own reason (not "database error"), which does not say
        how many transactions run (they may be any tenant's; the source's
        log counts them); the freeze holds; once the transaction ends, the
        cutover runs again and completes. Oracles: the writes SQL tries and
        the exit statuses."""
        self.make_pg_source("freeze_wait_%d" % os.getpid())
        with open(self.src_conf) as f:
            text = f.read()
        with open(self.src_conf, "w") as f:
            f.write(text.replace("[source]\n", "[source]\nfreeze_wait = 2\n", 1))
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync()
            slow = self.open_transaction(self.src_db, "BEGIN ISOLATION LEVEL REPEATABLE READ; "
                                         "SELECT count(*) FROM posts;")
            try:
                t0 = time.monotonic()
                cp = ft.run_dst(["cutover", "--config", self.dst_conf], timeout=120)
                took = time.monotonic() - t0
                self.assertEqual(cp.returncode, 5, cp.stderr)
                self.assertIn("source: tenant 1 is frozen, but transactions that began before "
                              "the freeze are still running on the source after 2 s", cp.stderr)
                self.assertIn("freeze_wait", cp.stderr)
                self.assertIn("stopped at step freeze; the source stays frozen", cp.stderr)
                self.assertNotIn("database error", cp.stderr)
                self.assertNotRegex(cp.stderr, r"\d+ transactions")
                self.assertLess(took, 30, "the freeze waited past freeze_wait")
                self.assertGreaterEqual(took, 2.0, "the freeze waited less than freeze_wait")
                self.assertRegex(srv.log(), r"1 transactions that began before the freeze are "
                                 r"still running after 2 s")
                self.assertPgFrozen(1)
                self.assertPgFrozen(2, frozen=False)
                slow.communicate("COMMIT;\n", timeout=30)
            finally:
                if slow.poll() is None:
                    slow.kill()
                    slow.communicate()
            # a transaction that wrote in another database of the cluster
            # cannot write here: it blocked every freeze (probe); unfrozen
            # first, so that the cutover freezes (and waits) anew
            cp = ft.run_src(["unfreeze", "--config", self.src_conf, "--tenant", "1"])
            self.assertEqual(cp.returncode, 0, cp.stderr)
            other = pg_url("freeze_wait_other_%d" % os.getpid())
            slow = self.open_transaction(other, "BEGIN; CREATE TABLE held(x int); INSERT INTO "
                                         "held VALUES (1);", wrote=True)
            try:
                cp = ft.run_dst(["cutover", "--config", self.dst_conf], timeout=120)
                self.assertEqual(cp.returncode, 0, cp.stderr)
                self.assertPgFrozen(1)
            finally:
                slow.communicate("ROLLBACK;\n", timeout=30)

    def test_pg_cutover_waits_out_another_tenants_transaction(self):
        """Tenant 1's changes committed before the cutover; another tenant's
        transaction (A) in flight at the freeze, and one (Z) opened during
        the freeze's wait for A and held past it: the source serves changes
        only below Z until it ends, short of the freeze's head, so the
        cutover syncs its final delta again until it gets there (it stopped
        with 'was its change log reset?'). Oracle: exit 0, and tenant 1's
        posts on the target equal the source's."""
        self.make_pg_source("catchup_%d" % os.getpid())
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync("--quiet")
            ok, _, err = psql(self.src_db, "UPDATE posts SET body = 'before the cutover' WHERE "
                                           "channel_id IN (SELECT id FROM channels WHERE "
                                           "team_id = 1)")
            self.assertTrue(ok, err)
            other = ("BEGIN; UPDATE posts SET body = body WHERE id = (SELECT min(p.id) FROM "
                     "posts p JOIN channels c ON c.id = p.channel_id WHERE c.team_id = 2); "
                     "SELECT pg_sleep(%d); COMMIT;")
            a = subprocess.Popen(["psql", self.src_db, "-X", "-q", "-c", other % 3],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            time.sleep(0.5)
            cut = ft.start_dst(["cutover", "--config", self.dst_conf], self.path("cutover.log"))
            time.sleep(1.0)
            z = subprocess.Popen(["psql", self.src_db, "-X", "-q", "-c", other % 8],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                rc = cut.wait(timeout=120)
            finally:
                for proc in (a, z):
                    proc.communicate(timeout=60)
            with open(self.path("cutover.log")) as f:
                log = f.read()
            self.assertEqual(rc, 0, log)
            self.assertNotIn("change log reset", log)
            want = self.pg_rows("SELECT p.id, p.body FROM posts p JOIN channels c "
                                "ON c.id = p.channel_id WHERE c.team_id = 1")
            dst = sqlite3.connect(self.dst_db)
            try:
                got = sorted(tuple(str(v) for v in r)
                             for r in dst.execute("SELECT id, body FROM posts"))
            finally:
                dst.close()
            self.assertEqual(got, want)
            self.assertPgFrozen(1)

    def test_pg_migration_story(self):
        self.make_pg_source("story_%d" % os.getpid())
        log = []
        stop = threading.Event()

        def writer():
            i = 0
            while not stop.is_set():
                for team in (1, 2):
                    sql = ("INSERT INTO posts(channel_id, body) SELECT min(id), 'w%d' FROM "
                           "channels WHERE team_id = %d" % (i, team)) if i % 2 == 0 else (
                           "UPDATE posts SET body = 'e%d' WHERE id = (SELECT max(p.id) FROM "
                           "posts p JOIN channels c ON c.id = p.channel_id WHERE c.team_id = %d)"
                           % (i, team))
                    ok, _, err = psql(self.src_db, sql)
                    log.append((len(log), team, ok, err))
                i += 1

        th = threading.Thread(target=writer, daemon=True)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            th.start()
            try:
                self.sync()
                time.sleep(0.3)
                self.sync()
                cp = self.cutover("--json")
                n = len(log)
                deadline = time.monotonic() + 10
                while len(log) < n + 10 and time.monotonic() < deadline:
                    time.sleep(0.05)
            finally:
                stop.set()
                th.join(30)
            self.assertTrue(json.loads(cp.stdout)["ok"])
            v = ft.run_dst(["verify", "--config", self.dst_conf])
            self.assertEqual(v.returncode, 0, v.stdout + v.stderr)
        t1 = [e for e in log if e[1] == 1]
        refused = [e for e in t1 if not e[2]]
        self.assertGreater(len(refused), 0)
        for e in refused:
            self.assertIn("tenant 1 " + FROZEN, e[3])
        self.assertEqual([e for e in t1 if e[2] and e[0] > refused[0][0]], [])
        self.assertEqual([e for e in log if e[1] == 2 and not e[2]], [])
        # the oracle: the tenant's rows, read from the source with psql
        dst = sqlite3.connect(self.dst_db)
        try:
            for table, cols, where in (
                    ("posts", "p.id, p.body", "FROM posts p JOIN channels c ON c.id = p.channel_id "
                                              "WHERE c.team_id = 1"),
                    ("channels", "p.id, p.name", "FROM channels p WHERE p.team_id = 1"),
                    ("tags", "p.name, p.team_ref", "FROM tags p WHERE p.team_ref = 1")):
                want = self.pg_rows("SELECT %s %s" % (cols, where))
                got = sorted(tuple(str(v) for v in r) for r in dst.execute(
                    "SELECT %s FROM %s p" % (cols, table)))
                self.assertEqual(got, want, table)
        finally:
            dst.close()

    # the SQLite-only tests of the base class are not repeated here
    test_freeze_refuses_writes_of_that_tenant_only = None
    test_freeze_survives_reinstall_and_uninstall_removes_it = None
    test_migration_story = None
    test_source_unreachable_mid_cutover = None
    test_failing_hook_fails_the_cutover = None
    test_cutover_needs_a_copy = None


if __name__ == "__main__":
    ft.main()
