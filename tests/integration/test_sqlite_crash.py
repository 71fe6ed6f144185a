#!/usr/bin/env python3
"""ferry-dst killed with SIGKILL in the middle of the bulk copy and in the
middle of a delta, then rerun: the target must equal the oracle exactly,
with nothing duplicated and nothing lost."""

import json
import os
import random
import signal
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402

BIG_POSTS = int(os.environ.get("FERRY_CRASH_POSTS", "100000"))


def kill_when(test, conf, log, cond, what, timeout=240):
    """Start a sync, poll status --json until cond(status) holds, SIGKILL the
    sync there. Returns the status seen at the kill."""
    proc = ft.start_dst(["sync", "--config", conf, "--quiet"], log)
    deadline = time.monotonic() + timeout
    seen = None
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            cp = ft.run_dst(["status", "--config", conf, "--json"], timeout=60)
            if cp.returncode == 0 and cp.stdout.strip():
                try:
                    st = json.loads(cp.stdout)
                except ValueError:
                    test.fail("status --json is not JSON: %r" % cp.stdout[:500])
                seen = st
                if cond(st):
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    return st
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with open(log, "rb") as f:
        out = f.read().decode(errors="replace")
    test.fail("never caught the sync %s before it ended (exit %s); last status: %r\nlog: %s"
              % (what, proc.returncode, seen, out[-3000:]))


class CrashTest(ft.FerryTestCase):

    def big_source(self):
        self.make_source(teams=2, posts_per_team=50, batch_rows=200, install=False)
        conn = ft.source_conn(self.src_db)
        try:
            conn.execute("BEGIN")
            ft.sample_app.add_posts(conn, random.Random(7), 1, BIG_POSTS)
            conn.execute("COMMIT")
        finally:
            conn.close()
        cp = ft.run_src(["install", "--config", self.src_conf])
        self.assertEqual(cp.returncode, 0, cp.stderr)

    def test_kill_during_bulk_copy(self):
        self.big_source()
        total = sum(len(ft.tenant_rows(self.src_db, t, 1)) for t in ft.IN_SCOPE)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)

            def mid_copy(st):
                tables = st.get("tables") or []
                return (any(t["rows"] > 0 for t in tables)
                        and not all(t["done"] for t in tables))

            st = kill_when(self, self.dst_conf, self.path("sync1.log"), mid_copy, "mid-copy")
            copied = sum(t["rows"] for t in st["tables"])
            self.assertLess(copied, total)
            # Whatever was committed before the kill stays consistent.
            self.assertTrue(os.path.exists(self.dst_db))
            partial = (len(ft.table_rows(self.dst_db, "posts"))
                       if "posts" in ft.table_names(self.dst_db) else 0)
            self.assertLess(partial, len(ft.tenant_rows(self.src_db, "posts", 1)),
                            "the copy was not interrupted: posts complete at the kill")
            # status names the copy's start head, and the first run's missing mark as none
            text = ft.run_dst(["status", "--config", self.dst_conf]).stdout
            head = ft.status_json(self.dst_conf)["start_head"]
            self.assertIn("phase copying, start head %d, mark %d\n" % (head, head), text)
            self.assertRegex(text, r"#1 sync +UNFINISHED .*mark none -> ")

            self.sync()
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))
            st = ft.status_json(self.dst_conf)
            self.assertEqual(st["phase"], "streaming")
            self.assertTrue(all(t["done"] for t in st["tables"]), st["tables"])
            resumed = max(st["runs"], key=lambda r: r["id"])
            self.assertEqual(resumed["code"], "OK", resumed)
            # A resumed copy redoes no finished work: it does not upsert
            # every row again.
            self.assertLess(resumed["upserted"], total, resumed)

    def test_kill_during_delta(self):
        self.big_source()
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync()
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))
            h0 = ft.status_json(self.dst_conf)["hwm"]

            self.churn(20000)
            conn = sqlite3.connect(self.src_db)
            head = conn.execute("SELECT max(seq) FROM _ferry_changes").fetchone()[0]
            conn.close()
            self.assertGreater(head, h0)

            def mid_delta(st):
                return h0 < st["hwm"] < head

            st = kill_when(self, self.dst_conf, self.path("sync2.log"), mid_delta, "mid-delta")
            self.assertLess(st["hwm"], head)
            self.sync()
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))
            # nothing new on the source: another run is a no-op
            before = ft.db_dump(self.dst_db)
            self.sync()
            self.assertUnchanged(before, self.dst_db, "a sync without source changes")

    def churn(self, n):
        """n changes on the source in many small transactions: updates,
        inserts (with reactions) and deletes in team 1, and some in team 2."""
        rng = random.Random(11)
        conn = ft.source_conn(self.src_db)
        try:
            p1 = [r[0] for r in conn.execute(
                "SELECT p.id FROM posts p JOIN channels c ON c.id = p.channel_id "
                "WHERE c.team_id = 1")]
            c1 = [r[0] for r in conn.execute("SELECT id FROM channels WHERE team_id = 1")]
            c2 = [r[0] for r in conn.execute("SELECT id FROM channels WHERE team_id = 2")]
            rng.shuffle(p1)
            done = 0
            while done < n:
                conn.execute("BEGIN")
                for _ in range(500):
                    r = rng.random()
                    if r < 0.4 and p1:
                        conn.execute("UPDATE posts SET body = ?, score = ? WHERE id = ?",
                                     ("edit %d" % done, rng.uniform(-1, 1), p1[-1 - done % 50]))
                    elif r < 0.7:
                        cur = conn.execute(
                            "INSERT INTO posts(channel_id, user_id, body, score, data) "
                            "VALUES (?, ?, ?, ?, ?)", (rng.choice(c1), rng.randint(1, 40),
                                                       "churn %d" % done, rng.random(),
                                                       rng.randbytes(8)))
                        conn.execute("INSERT INTO reactions(post_id, emoji, user_id) "
                                     "VALUES (?, 'eyes', ?)", (cur.lastrowid, rng.randint(1, 40)))
                    elif r < 0.85 and p1:
                        conn.execute("DELETE FROM posts WHERE id = ?", (p1.pop(),))
                    else:
                        conn.execute("INSERT INTO posts(channel_id, body) VALUES (?, 'team 2')",
                                     (rng.choice(c2),))
                    done += 1
                conn.execute("COMMIT")
        finally:
            conn.close()


if __name__ == "__main__":
    ft.main()
