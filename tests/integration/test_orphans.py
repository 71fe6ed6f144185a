#!/usr/bin/env python3
"""Rows written before their parent (SQLite without PRAGMA foreign_keys, as
SQLite applications run by default): captured once the parent arrives, in
the same transaction or a later one, down several levels, only for the
tenant the parent brings them into.

The oracle is ferrytest.tenant_rows(): SQL joins over the source, not
ferry's capture. Each case is checked by a delta sync after the initial
copy, so only the capture can bring the rows over (the copy reads the
scope itself).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402


def plain_conn(db):
    """The application's connection, without foreign key enforcement."""
    import sqlite3
    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    conn.execute("PRAGMA foreign_keys=OFF")
    return conn


class OrphanTest(ft.FerryTestCase):

    def copied(self, sql, *params):
        import sqlite3
        conn = sqlite3.connect(self.dst_db)
        try:
            return conn.execute(sql, params).fetchone()[0]
        finally:
            conn.close()

    def test_children_before_parents(self):
        self.make_source(teams=2, posts_per_team=20)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync("--quiet")
            conn = plain_conn(self.src_db)
            conn.execute("BEGIN")
            # one transaction: post and its reaction first, their channel last
            conn.execute("INSERT INTO posts(id, channel_id, body) VALUES (9001, 5001, 'early')")
            conn.execute("INSERT INTO reactions VALUES (9001, 'wave', 1)")
            conn.execute("INSERT INTO channels VALUES (5001, 1, 'late channel')")
            # three levels, bottom up: reaction, post, channel
            conn.execute("INSERT INTO reactions VALUES (9002, 'up', 2)")
            conn.execute("INSERT INTO posts(id, channel_id, body) VALUES (9002, 5002, 'mid')")
            conn.execute("INSERT INTO channels VALUES (5002, 1, 'top')")
            # another tenant's orphans: adopted by tenant 2, never sent to tenant 1
            conn.execute("INSERT INTO posts(id, channel_id, body) VALUES (9003, 5003, 'other')")
            conn.execute("INSERT INTO channels VALUES (5003, 2, 'team 2 channel')")
            # waiting for a parent that comes in a later transaction
            conn.execute("INSERT INTO posts(id, channel_id, body) VALUES (9004, 5004, 'waits')")
            conn.execute("INSERT INTO kinds(id, channel_id, v) VALUES (9004, 5004, 'waits too')")
            # and one whose parent never comes: in no tenant's scope
            conn.execute("INSERT INTO posts(id, channel_id, body) VALUES (9005, 5999, 'never')")
            conn.execute("COMMIT")
            self.sync("--quiet")
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))
            self.assertEqual(self.copied("SELECT count(*) FROM posts WHERE id IN "
                                         "(9001, 9002)"), 2)
            self.assertEqual(self.copied("SELECT count(*) FROM reactions WHERE post_id IN "
                                         "(9001, 9002)"), 2)
            self.assertEqual(self.copied("SELECT count(*) FROM posts WHERE id IN "
                                         "(9003, 9004, 9005)"), 0)

            conn.execute("INSERT INTO channels VALUES (5004, 1, 'came later')")
            self.sync("--quiet")
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))
            self.assertEqual(self.copied("SELECT count(*) FROM posts WHERE id = 9004"), 1)
            self.assertEqual(self.copied("SELECT count(*) FROM kinds WHERE id = 9004"), 1)

            # nothing is left waiting but the one whose parent never came
            waiting = conn.execute("SELECT ptbl, ctbl, p0 FROM _ferry_orphans "
                                   "ORDER BY 1, 2, 3").fetchall()
            self.assertEqual(waiting, [("channels", "posts", 5999)])
            conn.close()

    def test_orphans_present_at_install(self):
        """Rows already waiting for their parent when capture is installed."""
        self.make_source(teams=2, posts_per_team=20, install=False)
        conn = plain_conn(self.src_db)
        conn.execute("INSERT INTO posts(id, channel_id, body) VALUES (9101, 5101, 'before')")
        cp = ft.run_src(["install", "--config", self.src_conf])
        self.assertEqual(cp.returncode, 0, cp.stderr)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync("--quiet")
            self.assertEqual(self.copied("SELECT count(*) FROM posts WHERE id = 9101"), 0)
            conn.execute("INSERT INTO channels VALUES (5101, 1, 'parent at last')")
            self.sync("--quiet")
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))
            self.assertEqual(self.copied("SELECT count(*) FROM posts WHERE id = 9101"), 1)
        conn.close()

    def test_reinstall_notes_waiting_children_again(self):
        """A re-install (a new ferry's capture) notes the children still
        waiting from the data and drops notes no row waits on, such as the
        ones an older capture wrote in another form; the waiting child is
        still captured when its parent comes."""
        self.make_source(teams=2, posts_per_team=20)
        conn = plain_conn(self.src_db)
        conn.execute("INSERT INTO posts(id, channel_id, body) VALUES (9201, 5201, 'waits')")
        conn.execute("INSERT INTO _ferry_orphans(ptbl, ctbl, p0) VALUES "
                     "('channels', 'posts', '5201.0'), ('channels', 'posts', 5299)")
        cp = ft.run_src(["install", "--config", self.src_conf])
        self.assertEqual(cp.returncode, 0, cp.stderr)
        waiting = conn.execute("SELECT ptbl, ctbl, p0 FROM _ferry_orphans "
                               "ORDER BY 1, 2, 3").fetchall()
        self.assertEqual(waiting, [("channels", "posts", 5201)])
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync("--quiet")
            conn.execute("INSERT INTO channels VALUES (5201, 1, 'parent at last')")
            self.sync("--quiet")
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))
            self.assertEqual(self.copied("SELECT count(*) FROM posts WHERE id = 9201"), 1)
        conn.close()

    def test_keys_stored_as_text_and_integer(self):
        """SQLite compares a TEXT-affinity foreign key with an INTEGER
        primary key by value ('77' = 77): a child written before its parent
        with the key in either storage class is adopted when the parent
        comes, as the application's own join sees it. Oracle: the rows as
        written, the target's copy."""
        import sqlite3
        src = self.path("src.db")
        conn = sqlite3.connect(src, isolation_level=None)
        conn.executescript("""
CREATE TABLE teams(id INTEGER PRIMARY KEY, name TEXT);
CREATE TABLE channels(id INTEGER PRIMARY KEY, team_id INTEGER REFERENCES teams(id), name TEXT);
CREATE TABLE posts(id INTEGER PRIMARY KEY, channel_id TEXT REFERENCES channels(id), body TEXT);
INSERT INTO teams VALUES (1, 'one'), (2, 'two');
INSERT INTO channels VALUES (1, 1, 'c1');
INSERT INTO posts VALUES (1, '1', 'first');
-- the test config's exclude and [table tags] name these
CREATE TABLE audit_log(id INTEGER PRIMARY KEY);
CREATE TABLE tags(name TEXT PRIMARY KEY, team_ref INTEGER);
""")
        self.source_conf(src)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync("--quiet")
            conn.execute("INSERT INTO posts VALUES (10, '77', 'text key, before its channel')")
            conn.execute("INSERT INTO posts VALUES (11, 78, 'integer key, before its channel')")
            conn.execute("INSERT INTO posts VALUES (12, '79', 'another team')")
            self.assertEqual(conn.execute("SELECT typeof(channel_id) FROM posts WHERE id IN "
                                          "(10, 11) ORDER BY id").fetchall(),
                             [("text",), ("text",)])
            conn.execute("INSERT INTO channels VALUES (77, 1, 'late')")
            conn.execute("INSERT INTO channels VALUES ('78', 1, 'late, key written as text')")
            conn.execute("INSERT INTO channels VALUES (79, 2, 'late, other team')")
            self.sync("--quiet")
            self.assertEqual(self.copied("SELECT group_concat(id) FROM "
                                         "(SELECT id FROM posts ORDER BY id)"), "1,10,11")
            self.assertEqual(conn.execute("SELECT count(*) FROM _ferry_orphans").fetchone()[0], 0)
        conn.close()


if __name__ == "__main__":
    ft.main()
