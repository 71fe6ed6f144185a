#!/usr/bin/env python3
"""ferry-src prune: the change log shrinks, a target at or above the prune
mark keeps converging, a target below it is refused with a one-line error
(exit 5) and nothing applied, and the newest entry always stays so seqs keep
growing."""

import os
import sqlite3
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402


def log_stats(db):
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT count(*), min(seq), max(seq) FROM _ferry_changes").fetchone()
    finally:
        conn.close()


def edit_posts(db, team, n, tag):
    conn = ft.source_conn(db)
    try:
        ids = [r[0] for r in conn.execute(
            "SELECT p.id FROM posts p JOIN channels c ON c.id = p.channel_id "
            "WHERE c.team_id = ? ORDER BY p.id LIMIT ?", (team, n))]
        conn.execute("BEGIN")
        for i in ids:
            conn.execute("UPDATE posts SET body = ? WHERE id = ?", ("%s %d" % (tag, i), i))
        conn.execute("COMMIT")
    finally:
        conn.close()


class PruneTest(ft.FerryTestCase):
    def prune(self, seq, expect=0):
        cp = ft.run_src(["prune", "--config", self.src_conf, str(seq)])
        self.assertEqual(cp.returncode, expect, cp.stderr)
        return cp

    def test_prune(self):
        self.make_source(teams=3, posts_per_team=100)
        with self.serve() as srv:
            # A lagging target of team 2, synced once, then left behind.
            self.make_target(srv.url, tenant=2, db=self.path("lag.db"))
            self.sync("--quiet")
            # its own state and config, out of the way of the next target's
            os.rename(self.state, self.path("lagstate"))
            lag_conf = self.path("lag.conf")
            with open(self.dst_conf) as f:
                text = f.read().replace(self.state, self.path("lagstate"))
            with open(lag_conf, "w") as f:
                f.write(text)
            lag_mark = ft.status_json(lag_conf)["hwm"]

            self.make_target(srv.url, tenant=1)
            self.sync("--quiet")
            edit_posts(self.src_db, 1, 30, "first")
            edit_posts(self.src_db, 2, 30, "first")
            self.sync("--quiet")
            mark = ft.status_json(self.dst_conf)["hwm"]
            self.assertGreater(mark, lag_mark)

            # Prune up to the team-1 target's mark: entries <= mark are gone.
            n_before = log_stats(self.src_db)[0]
            cp = self.prune(mark + 1)
            count, low, high = log_stats(self.src_db)
            self.assertLess(count, n_before)
            self.assertGreaterEqual(low, mark + 1)
            self.assertIn("pruned %d change-log entries" % (n_before - count), cp.stdout)

            # The team-1 target is at the mark: it keeps converging.
            edit_posts(self.src_db, 1, 20, "second")
            self.sync("--quiet")
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2, 3))

            # The lagging team-2 target is below the mark: refused, untouched.
            before = ft.db_dump(self.path("lag.db"))
            self.dst_conf = lag_conf
            self.dst_db = self.path("lag.db")
            cp = self.sync("--quiet", expect=5)
            self.assertOneLine(cp.stderr)
            self.assertIn("pruned", cp.stderr)
            self.assertUnchanged(before, self.path("lag.db"), "a sync refused after a prune")
            self.assertEqual(ft.status_json(lag_conf)["hwm"], lag_mark)

        # A SEQ past the head is a mistake that dropped every change no
        # target had applied: refused (probe). Pruning up to the head keeps
        # the newest entry; seqs keep growing.
        head = log_stats(self.src_db)[2]
        cp = self.prune(10 ** 12, expect=2)
        self.assertIn("is past the change log's head %d" % head, cp.stderr)
        self.assertEqual(log_stats(self.src_db)[2], head)
        self.prune(head + 1)
        count, low, high2 = log_stats(self.src_db)
        self.assertEqual(count, 1)
        self.assertEqual(low, high2)
        edit_posts(self.src_db, 1, 1, "third")
        self.assertGreater(log_stats(self.src_db)[2], high2)

        # Bad input: not a number, zero.
        self.assertIn("not a positive seq", self.prune("abc", expect=2).stderr)
        self.prune(0, expect=2)

    def test_prune_past_a_target_with_nothing_left(self):
        """A prune past a target's mark that leaves none of its tenant's
        changes after it (the newest entry, which prune keeps, is another
        tenant's): its sync is refused (exit 5) with nothing applied, not
        told that nothing is pending while the pruned change never arrives.
        Oracle: the source's own row and the target's, read with SQL."""
        self.make_source(teams=2, posts_per_team=20)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync("--quiet")
            mark = ft.status_json(self.dst_conf)["hwm"]
            edit_posts(self.src_db, 1, 1, "lost")
            edit_posts(self.src_db, 2, 1, "other")
            count, low, high = log_stats(self.src_db)
            self.assertGreater(high, mark + 1)
            self.prune(high)  # below the newest entry: team 1's edit goes
            before = ft.db_dump(self.dst_db)
            cp = self.sync("--quiet", expect=5)
            self.assertOneLine(cp.stderr)
            self.assertIn("pruned below seq %d, past this target's mark %d" % (high, mark),
                          cp.stderr)
            self.assertUnchanged(before, self.dst_db, "a sync refused after a prune")
            self.assertEqual(ft.status_json(self.dst_conf)["hwm"], mark)
            src = sqlite3.connect(self.src_db)
            try:
                body, = src.execute("SELECT p.body FROM posts p JOIN channels c ON "
                                    "c.id = p.channel_id WHERE c.team_id = 1 ORDER BY p.id "
                                    "LIMIT 1").fetchone()
            finally:
                src.close()
            self.assertTrue(body.startswith("lost"), body)

    def test_prune_without_install(self):
        """prune on a database ferry-src never installed into: a one-line
        configuration error that says so (exit 2), not SQLite's own."""
        self.make_source(teams=1, posts_per_team=5, install=False)
        cp = self.prune(5, expect=2)
        self.assertEqual(len(cp.stderr.strip().splitlines()), 1, cp.stderr)
        self.assertIn("ferry-src install has not run here", cp.stderr)
        self.assertNotIn("no such table", cp.stderr)

    def test_run_log_rotates(self):
        # runs.log beside the state keeps one older generation past 16 MB.
        self.make_source(teams=2, posts_per_team=20)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync("--quiet")
            log = os.path.join(self.state, "runs.log")
            with open(log, "ab") as f:
                f.write(b"#" * (17 << 20))
            self.sync("--quiet")
        self.assertGreater(os.path.getsize(log + ".1"), 17 << 20)
        with open(log) as f:
            lines = f.read().splitlines()
        self.assertTrue(lines and all(line.startswith("{") for line in lines), lines[:3])
        self.assertLess(os.path.getsize(log), 1 << 20)


if __name__ == "__main__":
    ft.main()
