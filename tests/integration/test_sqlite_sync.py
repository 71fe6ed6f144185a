#!/usr/bin/env python3
"""ferry-src + ferry-dst on loopback, SQLite to SQLite: bulk copy, deltas,
tenant moves, idempotence, dry-run, scope listing, status, install and
uninstall, a clash with another tenant already on the target (in the copy
and in deltas), and a run with nothing pending.

Every check compares with the hand-written oracle of ferrytest.tenant_rows().
"""

import json
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402


def ids(conn, sql, *params):
    return [r[0] for r in conn.execute(sql, params)]


def quiet_posts(conn, team):
    """Ids of team's posts without reactions (a delete cascades to nothing)."""
    return ids(conn, "SELECT p.id FROM posts p JOIN channels c ON c.id = p.channel_id "
                     "WHERE c.team_id = ? AND p.id NOT IN (SELECT post_id FROM reactions) "
                     "ORDER BY p.id", team)


def team_channels(conn, team):
    return ids(conn, "SELECT id FROM channels WHERE team_id = ? ORDER BY id", team)


def ferry_objects(db):
    conn = sqlite3.connect(db)
    try:
        return sorted(conn.execute(
            "SELECT type, name, tbl_name FROM sqlite_schema "
            "WHERE lower(name) LIKE '\\_ferry%' ESCAPE '\\' "
            "OR lower(tbl_name) LIKE '\\_ferry%' ESCAPE '\\'").fetchall())
    finally:
        conn.close()


def app_dump(db):
    """The application's own tables (no _ferry objects): content unchanged
    by install/uninstall."""
    d = ft.db_dump(db)
    # sqlite_sequence appears with the first AUTOINCREMENT table and cannot
    # be dropped; its _ferry rows are checked after uninstall.
    return {k: v for k, v in d["data"].items()
            if not k.lower().startswith("_ferry") and k != "sqlite_sequence"}


def last_run(status):
    runs = status.get("runs") or []
    if not runs:
        raise AssertionError("status has no runs: %r" % status)
    return max(runs, key=lambda r: r["id"])


class SyncTest(ft.FerryTestCase):

    def mutate(self, conn):
        """Inserts, updates and deletes in team 1 and team 2, including
        cascades, tenant moves and primary key changes. Returns what the
        test must then see (for its own sanity checks)."""
        c1 = team_channels(conn, 1)
        c2 = team_channels(conn, 2)
        p1 = ids(conn, "SELECT p.id FROM posts p JOIN channels c ON c.id = p.channel_id "
                       "WHERE c.team_id = 1 AND p.channel_id <> ? ORDER BY p.id", c1[1])
        p1_reacted = ids(conn, "SELECT DISTINCT post_id FROM reactions WHERE post_id IN (%s) "
                               "ORDER BY post_id" % ",".join(map(str, p1)))
        p1_quiet = [p for p in p1 if p not in set(p1_reacted)]
        p2 = ids(conn, "SELECT p.id FROM posts p JOIN channels c ON c.id = p.channel_id "
                       "WHERE c.team_id = 2 AND p.channel_id NOT IN (?, ?) ORDER BY p.id",
                 c2[0], c2[1])
        conn.execute("BEGIN")
        # --- team 1
        cur = conn.execute("INSERT INTO posts(channel_id, user_id, body, score, data) "
                           "VALUES (?, 3, 'new post \u2713', 2.5, x'00ff00')", (c1[0],))
        new_post = cur.lastrowid
        conn.execute("INSERT INTO reactions(post_id, emoji, user_id) VALUES (?, 'tada', 7)",
                     (new_post,))
        conn.execute("UPDATE posts SET body = 'edited', score = 1e-300, data = NULL "
                     "WHERE id = ?", (p1[0],))
        conn.execute("DELETE FROM posts WHERE id = ?", (p1_reacted[0],))  # reactions cascade
        conn.execute("DELETE FROM reactions WHERE post_id = ?", (p1_reacted[1],))
        conn.execute("UPDATE posts SET id = 900001 WHERE id = ?", (p1_quiet[0],))  # key change
        conn.execute("UPDATE settings SET value = 'now text' WHERE team_id = 1 "
                     "AND key = 'max_upload'")
        conn.execute("INSERT INTO settings(team_id, key, value) VALUES (1, 'new', x'00ff')")
        conn.execute("DELETE FROM settings WHERE team_id = 1 AND key = 'nothing'")
        conn.execute("UPDATE kinds SET v = -0.0 WHERE v IS NULL AND channel_id IN "
                     "(SELECT id FROM channels WHERE team_id = 1)")
        conn.execute("UPDATE teams SET name = 'Team One' WHERE id = 1")
        conn.execute("INSERT INTO tags(name, team_ref) VALUES ('team1-new', 1)")
        conn.execute("UPDATE tags SET team_ref = 2 WHERE name = 'team1-tag0'")  # leaves team 1
        conn.execute("UPDATE tags SET team_ref = 1 WHERE name = 'team2-tag0'")  # enters team 1
        conn.execute("UPDATE tags SET name = 'team1-renamed' WHERE name = 'team1-tag1'")
        conn.execute("DELETE FROM channels WHERE id = ?", (c1[1],))  # posts, reactions, kinds
        conn.execute("UPDATE channels SET team_id = 1 WHERE id = ?", (c2[0],))  # enters team 1
        # --- team 2 and out of scope: none of it may reach the target
        for i in range(5):
            conn.execute("INSERT INTO posts(channel_id, body) VALUES (?, ?)",
                         (c2[2], "team 2 post %d" % i))
        conn.execute("UPDATE posts SET body = 'team 2 edit' WHERE id = ?", (p2[0],))
        conn.execute("DELETE FROM posts WHERE id = ?", (p2[1],))
        conn.execute("DELETE FROM channels WHERE id = ?", (c2[1],))
        conn.execute("UPDATE teams SET name = 'Team Two' WHERE id = 2")
        conn.execute("INSERT INTO settings(team_id, key, value) VALUES (2, 'secret', 'x')")
        conn.execute("INSERT INTO audit_log(team_id, what) VALUES (1, 'audited')")
        conn.execute("UPDATE users SET email = 'changed@example.com' WHERE id = 3")
        conn.execute("COMMIT")
        return {"deleted_channel": c1[1], "moved_channel": c2[0], "new_post": new_post,
                "deleted_post": p1_reacted[0], "rekeyed_post": p1_quiet[0]}

    def test_sync_deltas_and_idempotence(self):
        self.make_source(teams=3, posts_per_team=200)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync()
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2, 3))

            conn = ft.source_conn(self.src_db)
            try:
                m = self.mutate(conn)
            finally:
                conn.close()
            # The oracle itself must see the changes the test means to make.
            posts = {r[0][1] for r in ft.tenant_rows(self.src_db, "posts", 1)}
            chans = {r[0][1] for r in ft.tenant_rows(self.src_db, "channels", 1)}
            tags = {r[0][1] for r in ft.tenant_rows(self.src_db, "tags", 1)}
            self.assertIn(m["moved_channel"], chans)
            self.assertNotIn(m["deleted_channel"], chans)
            self.assertIn(m["new_post"], posts)
            self.assertIn(900001, posts)
            self.assertNotIn(m["rekeyed_post"], posts)
            self.assertNotIn(b"team1-tag0", tags)
            self.assertIn(b"team2-tag0", tags)
            # The target still holds what must go, so the second sync has work.
            dst_posts = {r[0][1] for r in ft.table_rows(self.dst_db, "posts")}
            self.assertIn(m["deleted_post"], dst_posts)

            self.sync()
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2, 3))
            moved = [r for r in ft.table_rows(self.dst_db, "posts")
                     if r[1] == ("integer", m["moved_channel"])]
            self.assertGreater(len(moved), 0, "posts of the channel moved into team 1 missing")
            st = ft.status_json(self.dst_conf)
            run = last_run(st)
            self.assertGreater(run["upserted"], 0, run)
            self.assertGreater(run["deleted"], 0, run)

            # Nothing changed on the source: a third sync changes nothing.
            before = ft.db_dump(self.dst_db)
            self.sync()
            self.assertUnchanged(before, self.dst_db, "a sync without source changes")
            st = ft.status_json(self.dst_conf)
            run = last_run(st)
            self.assertEqual((run["kind"], run["code"], run["upserted"], run["deleted"]),
                             ("sync", "OK", 0, 0), run)
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2, 3))

    def test_replace_takes_rows_from_tenants(self):
        """SQLite's REPLACE conflict resolution deletes the row holding the
        key without firing its delete trigger (unless the application set
        recursive_triggers): INSERT OR REPLACE and UPDATE OR REPLACE that take
        a key from one tenant into another, and one that stays in the
        tenant. The tenant that lost the row loses it on its target too.
        Oracle: the tenant's rows in the source (assertTenantCopy)."""
        self.make_source(teams=3, posts_per_team=50)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync("--quiet")
            conn = ft.source_conn(self.src_db)
            try:
                quiet = quiet_posts(conn, 1)
                conn.execute("BEGIN")
                conn.execute("INSERT OR REPLACE INTO tags(name, team_ref) "
                             "VALUES ('team1-tag0', 2)")
                conn.execute("UPDATE OR REPLACE tags SET name = 'team1-tag1' "
                             "WHERE name = 'team2-tag1'")
                conn.execute("INSERT OR REPLACE INTO posts(id, channel_id, body) "
                             "VALUES (?, ?, 'taken by team 2')", (quiet[0], team_channels(conn, 2)[0]))
                conn.execute("INSERT OR REPLACE INTO settings(team_id, key, value) "
                             "VALUES (1, 'theme', 'replaced')")
                conn.execute("COMMIT")
                # the oracle sees what the test means: rows gone from team 1
                self.assertEqual(conn.execute("SELECT team_ref FROM tags WHERE name IN "
                                              "('team1-tag0', 'team1-tag1')").fetchall(),
                                 [(2,), (2,)])
            finally:
                conn.close()
            self.assertIn(("text", b"team1-tag1"), [r[0] for r in ft.table_rows(self.dst_db, "tags")])
            self.sync("--quiet")
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2, 3))

    def team_targets(self, url, teams):
        """A target (dst<team>.db, state-<team>) for each team: {team: conf}."""
        confs = {}
        for t in teams:
            self.make_target(url, tenant=t, db=self.path("dst%d.db" % t))
            confs[t] = ft.write_dst_conf(
                self.path("dst-%d.conf" % t), self.dst_db, self.path("state-%d" % t), t, url,
                identity=ft.test_key("dst-%d" % t), public_key=ft.test_key("src") + ".pub")
        return confs

    def sync_targets(self, confs):
        for conf in confs.values():
            cp = ft.run_dst(["sync", "--config", conf, "--quiet"])
            self.assertEqual(cp.returncode, 0, cp.stderr)

    def test_replace_through_another_unique_index(self):
        """REPLACE that deletes a row for holding a value of another UNIQUE
        index (not the primary key): the row goes without its delete trigger,
        and has a key other than the row that took its place. INSERT OR
        REPLACE and UPDATE OR REPLACE take channel names (a UNIQUE index) from
        team 1 into team 2, their posts going by cascade; a post replaced in
        its own channel through a partial, NOCASE index on two columns; a
        setting (a two-column key) taken into team 2; an
        INSERT OR IGNORE and a failed INSERT that delete nothing. Both teams'
        targets lose exactly the rows their team lost; a UNIQUE index made
        after install makes serve warn. Oracle: the tenants' rows in the
        source (assertTenantCopy), and verify."""
        self.make_source(teams=3, posts_per_team=30, install=False)
        ft.on_source(self.src_db, "CREATE UNIQUE INDEX channels_name ON channels(name)",
                     "CREATE UNIQUE INDEX posts_tagged ON posts(channel_id, body COLLATE NOCASE) "
                     "WHERE body LIKE 'u:%'",
                     "CREATE UNIQUE INDEX settings_slot ON settings(value) WHERE key = 'slot'",
                     "INSERT INTO settings VALUES (1, 'slot', 'blue')")
        cp = ft.run_src(["install", "--config", self.src_conf])
        self.assertEqual(cp.returncode, 0, cp.stderr)
        with self.serve() as srv:
            confs = self.team_targets(srv.url, (1, 2))

            conn = ft.source_conn(self.src_db)
            try:
                ch1 = team_channels(conn, 1)
                conn.execute("INSERT INTO posts(id, channel_id, body) VALUES (90001, ?, 'u:x')",
                             (ch1[2],))
                self.sync_targets(confs)
                gone = ids(conn, "SELECT count(*) FROM posts WHERE channel_id IN (?, ?)",
                           ch1[0], ch1[1])[0]
                self.assertGreater(gone, 0)
                conn.execute("BEGIN")
                conn.execute("INSERT OR REPLACE INTO channels(id, team_id, name) "
                             "VALUES (9001, 2, 'team1-channel0')")
                conn.execute("UPDATE OR REPLACE channels SET name = 'team1-channel1' "
                             "WHERE name = 'team2-channel1'")
                conn.execute("INSERT OR REPLACE INTO posts(id, channel_id, body) "
                             "VALUES (90002, ?, 'U:X')", (ch1[2],))
                # a two-column key (settings is WITHOUT ROWID)
                conn.execute("INSERT OR REPLACE INTO settings VALUES (2, 'slot', 'blue')")
                conn.execute("INSERT OR IGNORE INTO channels(id, team_id, name) "
                             "VALUES (9002, 3, 'team1-channel2')")
                with self.assertRaises(sqlite3.IntegrityError):
                    conn.execute("INSERT INTO channels(id, team_id, name) "
                                 "VALUES (9003, 3, 'team1-channel3')")
                # the table's next write looks at what the IGNORE left noted
                conn.execute("UPDATE channels SET name = name WHERE id = ?", (ch1[3],))
                conn.execute("COMMIT")
                # the oracle sees what the test means: rows gone from team 1
                self.assertEqual(ids(conn, "SELECT team_id FROM channels WHERE name IN "
                                           "('team1-channel0', 'team1-channel1', "
                                           "'team1-channel2', 'team1-channel3') ORDER BY name"),
                                 [2, 2, 1, 1])
                self.assertEqual(ids(conn, "SELECT id FROM posts WHERE body LIKE 'u:%'"), [90002])
                self.assertEqual(ids(conn, "SELECT team_id FROM settings WHERE key = 'slot'"), [2])
                self.assertEqual(ids(conn, "SELECT count(*) FROM posts WHERE channel_id IN "
                                           "(?, ?)", ch1[0], ch1[1]), [0])
            finally:
                conn.close()
            self.sync_targets(confs)
            for t, other in ((1, 2), (2, 1)):
                self.assertTenantCopy(self.src_db, self.path("dst%d.db" % t), t, others=(other, 3))
                cp = ft.run_dst(["verify", "--config", confs[t]])
                self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
            # nothing stays noted
            self.assertEqual(ft.query(self.src_db, "SELECT count(*) FROM _ferry_replacing"),
                             [(0,)])
            # a UNIQUE index the application makes after install
            ft.on_source(self.src_db, "CREATE UNIQUE INDEX teams_name ON teams(name)")
            self.sync_targets(confs)
        with open(self.path("src-%d.log" % self._nserve)) as f:
            log = f.read()
            self.assertIn("the UNIQUE indexes of teams changed since install", log)
            self.assertIn("run ferry-src install --config %s again" % self.src_conf, log)

    def test_column_added_while_serving(self):
        """The application adds a column while ferry-src serves, and fills
        it: the next sync stops with the schema error that names the column
        and says what to do (exit 5), nothing applied; once the target has
        the column, the sync brings the values and verify says equal. A
        source that kept serving its old idea of the table would have sent
        the rows without the column, and verify would have said equal. A
        column that ADD COLUMN fills with a DEFAULT (no row changed), added
        on the target without it: posts are copied again, the target's rows
        get the value. Added with the same DEFAULT on both sides: the sync
        compares that column and copies nothing.
        Oracle: the tenant's rows in the source (assertTenantCopy), a target
        row changed behind ferry's back that a copy would have overwritten."""
        self.make_source(teams=3, posts_per_team=250)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync("--quiet")
            ft.on_source(self.src_db, "ALTER TABLE posts ADD COLUMN note TEXT",
                         "UPDATE posts SET note = 'note ' || id WHERE id % 2 = 0")
            before = ft.db_dump(self.dst_db)
            cp = self.sync("--quiet", expect=5)
            self.assertOneLine(cp.stderr)
            self.assertIn("no column note", cp.stderr)
            self.assertIn("ALTER TABLE posts ADD COLUMN note", cp.stderr)
            self.assertUnchanged(before, self.dst_db, "a sync that stopped on the schema")
            with open(self.path("src-%d.log" % self._nserve)) as f:
                self.assertIn("table posts has a new column note", f.read())
            ft.on_source(self.dst_db, "ALTER TABLE posts ADD COLUMN note TEXT")
            self.sync("--quiet")
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2, 3))
            cp = ft.run_dst(["verify", "--config", self.dst_conf])
            self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
            # a column ADD COLUMN fills with its DEFAULT (no row changes): the
            # target, given the column as the error says, copies posts again
            ft.on_source(self.src_db, "ALTER TABLE posts ADD COLUMN pinned INTEGER NOT NULL "
                                      "DEFAULT 7")
            self.sync("--quiet", expect=5)
            ft.on_source(self.dst_db, "ALTER TABLE posts ADD COLUMN pinned INTEGER")
            cp = self.sync()
            self.assertIn("copy posts again: the column pinned differs between source and "
                          "target", cp.stderr)
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2, 3))
            self.assertEqual(ft.query(self.dst_db, "SELECT DISTINCT pinned FROM posts"), [(7,)])
            # the same column and DEFAULT on both sides (the application's
            # migration ran on each), values written since on the source: no
            # copy. A body changed on the target behind ferry's back stays
            # (a copy would have overwritten it), and verify finds it.
            ft.on_source(self.src_db, "ALTER TABLE posts ADD COLUMN stars INTEGER NOT NULL "
                                      "DEFAULT 3", "UPDATE posts SET stars = 5 WHERE id % 3 = 0")
            ft.on_source(self.dst_db, "ALTER TABLE posts ADD COLUMN stars INTEGER NOT NULL "
                                      "DEFAULT 3")
            odd = ft.query(self.dst_db, "SELECT min(id) FROM posts WHERE id % 3 = 1")[0][0]
            ft.on_source(self.dst_db, "UPDATE posts SET body = 'behind' WHERE id = %d" % odd)
            n = ft.query(self.src_db, "SELECT count(*) FROM posts p JOIN channels c ON "
                                      "c.id = p.channel_id WHERE c.team_id = 1")[0][0]
            cp = self.sync()
            self.assertIn("copy posts: not needed, the column stars of its %d rows hold the "
                          "same values on both sides (" % n, cp.stderr)
            self.assertEqual(ft.query(self.dst_db, "SELECT body FROM posts WHERE id = %d" % odd),
                             [("behind",)])
            self.assertEqual(ft.query(self.dst_db, "SELECT stars, count(*) FROM posts GROUP BY "
                                                   "1 ORDER BY 1"),
                             ft.query(self.src_db, "SELECT stars, count(*) FROM posts p JOIN "
                                                   "channels c ON c.id = p.channel_id WHERE "
                                                   "c.team_id = 1 GROUP BY 1 ORDER BY 1"))
            cp = ft.run_dst(["verify", "--config", self.dst_conf, "--repair"])
            self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
            self.assertRegex(cp.stdout + cp.stderr, r"repair: 1 rows? written")
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2, 3))
            # a few rows whose new column differs (written after the deltas, or
            # here): pulled again whole, then compared again; still no copy
            ft.on_source(self.src_db, "ALTER TABLE posts ADD COLUMN mood TEXT")
            ft.on_source(self.dst_db, "ALTER TABLE posts ADD COLUMN mood TEXT",
                         "UPDATE posts SET mood = 'odd', body = 'behind too' WHERE id IN "
                         "(SELECT id FROM posts WHERE id <> %d ORDER BY id LIMIT 2)" % odd,
                         "UPDATE posts SET body = 'behind' WHERE id = %d" % odd)
            cp = self.sync()
            self.assertIn("copy posts: not needed, the column mood of its %d rows hold the "
                          "same values on both sides once 2 rows that differed were pulled "
                          "again" % n, cp.stderr)
            self.assertEqual(ft.query(self.dst_db, "SELECT count(*) FROM posts WHERE mood IS "
                                                   "NOT NULL OR body = 'behind too'"), [(0,)])
            self.assertEqual(ft.query(self.dst_db, "SELECT body FROM posts WHERE id = %d" % odd),
                             [("behind",)])
            cp = ft.run_dst(["verify", "--config", self.dst_conf, "--repair"])
            self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2, 3))
            for db in (self.src_db, self.dst_db):
                ft.on_source(db, "ALTER TABLE posts DROP COLUMN stars",
                             "ALTER TABLE posts DROP COLUMN mood")
            # a column dropped and added again on the source only (a migration that
            # resets it): it comes last now, so it is seen as added; it differs, the
            # table is copied again and the target's rows get the new values
            ft.on_source(self.src_db, "ALTER TABLE posts DROP COLUMN score",
                         "ALTER TABLE posts ADD COLUMN score REAL DEFAULT 0.5")
            cp = self.sync()
            self.assertIn("copy posts again: the column score differs", cp.stderr)
            cols = "p.id, p.channel_id, p.user_id, p.body, p.score, p.data, p.note, p.pinned"
            self.assertEqual(ft.query(self.dst_db, "SELECT %s FROM posts p ORDER BY 1" % cols),
                             ft.query(self.src_db, "SELECT %s FROM posts p JOIN channels c ON "
                                                   "c.id = p.channel_id WHERE c.team_id = 1 "
                                                   "ORDER BY 1" % cols))
            self.assertEqual(ft.query(self.dst_db, "SELECT DISTINCT score FROM posts"), [(0.5,)])
            # the target's columns in the source's order again, for the oracle below
            ft.on_source(self.dst_db, "ALTER TABLE posts DROP COLUMN score",
                         "ALTER TABLE posts ADD COLUMN score REAL DEFAULT 0.5")
            self.sync("--quiet")
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2, 3))
            ft.on_source(self.src_db, "ALTER TABLE posts DROP COLUMN pinned")
            ft.on_source(self.dst_db, "ALTER TABLE posts DROP COLUMN pinned")
            # and a column the application drops
            ft.on_source(self.src_db, "ALTER TABLE posts DROP COLUMN note")
            ft.on_source(self.dst_db, "ALTER TABLE posts DROP COLUMN note")
            ft.on_source(self.src_db, "UPDATE posts SET body = 'after the drop' WHERE id % 5 = 0")
            self.sync("--quiet")
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2, 3))
            # a table that joins the scope: refused until install, then copied
            ft.on_source(self.src_db, "CREATE TABLE pins(post_id INTEGER PRIMARY KEY "
                                      "REFERENCES posts(id), at TEXT)",
                         "INSERT INTO pins SELECT id, 'pinned ' || id FROM posts")
            cp = self.sync("--quiet", expect=None)
            self.assertNotEqual(cp.returncode, 0)
        cp = ft.run_src(["install", "--config", self.src_conf])
        self.assertEqual(cp.returncode, 0, cp.stderr)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            cp = self.sync("--dry-run")
            self.assertRegex(cp.stdout, r"pins\s+\d+ rows  new to the scope: would be copied "
                                        r"\(table would be created\)")
            self.assertFalse("pins" in ft.table_names(self.dst_db), "a dry run created a table")
            self.sync("--quiet")
            want = ft.query(self.src_db, ft.PINS_OF_TEAM_1)
            self.assertEqual(ft.query(self.dst_db, ft.PINS_ON_TARGET), want)
            self.assertGreater(len(want), 0)
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2, 3))

    def test_rows_up_to_the_message_limit(self):
        """Rows travel whole in one message of up to [source] max_message
        (1024 MB unless set lower). Under a source's max_message of 64, a
        10 MB and a 60 MB row copy (the page ends before the second), and a
        70 MB row stops the deltas with an error that names the table, the
        limit and the setting, nothing after it applied; made smaller on
        the source, the next sync converges. With the default, a 70 MB
        and a 100 MB row come as deltas, verify finds them equal, and
        repairs both when they are changed on the target. A target whose own max_message is
        below a row refuses it the same way, naming its config, and
        converges once raised. Oracle: assertTenantCopy."""
        self.make_source(teams=2, posts_per_team=20)
        ch = ft.query(self.src_db, "SELECT min(id) FROM channels WHERE team_id = 1")[0][0]
        ft.on_source(self.src_db, ("INSERT INTO posts(id, channel_id, body) VALUES (?, ?, ?)",
                                   (900001, ch, "t" * (10 << 20))),
                     ("INSERT INTO posts(id, channel_id, body) VALUES (?, ?, ?)",
                      (900002, ch, "s" * (60 << 20))))
        ft.set_max_message(self.src_conf, 64)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync("--quiet")
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))
            ft.on_source(self.src_db, ("INSERT INTO posts(id, channel_id, body) VALUES (?, ?, ?)",
                                       (900003, ch, "w" * (70 << 20))),
                         "UPDATE teams SET name = 'after the big row' WHERE id = 1")
            mark = ft.status_json(self.dst_conf)["hwm"]
            cp = self.sync("--quiet", expect=5)
            self.assertOneLine(cp.stderr)
            self.assertIn("a row of posts", cp.stderr)
            self.assertIn("64 MB", cp.stderr)
            self.assertIn("max_message", cp.stderr)
            self.assertEqual(ft.status_json(self.dst_conf)["hwm"], mark)
            ft.on_source(self.src_db, "UPDATE posts SET body = 'made smaller' WHERE id = 900003")
            self.sync("--quiet")
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))
        ft.set_max_message(self.src_conf, None)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            ft.on_source(self.src_db, ("UPDATE posts SET body = ? WHERE id = 900003",
                                       ("w" * (70 << 20),)),
                         ("INSERT INTO posts(id, channel_id, body) VALUES (?, ?, ?)",
                          (900004, ch, "h" * (100 << 20))),
                         "UPDATE teams SET name = 'with the big rows' WHERE id = 1")
            self.sync("--quiet")
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))
            self.assertEqual(ft.query(self.dst_db, "SELECT length(body) FROM posts "
                                                   "WHERE id = 900004"), [(100 << 20,)])
            # verify hashes the big rows; one changed behind ferry's back comes back alone
            cp = ft.run_dst(["verify", "--config", self.dst_conf])
            self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
            ft.on_source(self.dst_db, "UPDATE posts SET body = 'changed' WHERE id IN "
                                      "(900003, 900004)")
            cp = ft.run_dst(["verify", "--repair", "--config", self.dst_conf])
            self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
            self.assertIn("2 rows written", cp.stdout)
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))
            ft.set_max_message(self.dst_conf, 64)
            ft.on_source(self.src_db, "UPDATE posts SET body = body || 'x' WHERE id = 900004")
            mark = ft.status_json(self.dst_conf)["hwm"]
            cp = self.sync("--quiet", expect=5)
            self.assertOneLine(cp.stderr)
            self.assertIn("max_message in %s" % self.dst_conf, cp.stderr)
            self.assertEqual(ft.status_json(self.dst_conf)["hwm"], mark)
            ft.set_max_message(self.dst_conf, 128)
            self.sync("--quiet")
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))

    # Writes of a random workload ({w}: the writer, {t}: a team): inserts,
    # updates, deletes, cascades, moves between tenants, key changes, upserts
    # and REPLACE (which deletes the row in the way without its trigger).
    RANDOM_WRITES = [
        "INSERT INTO posts(channel_id, body) SELECT id, 'w{w}' FROM channels "
        "ORDER BY random() LIMIT 1",
        "UPDATE posts SET body = 'w{w} ' || id WHERE id = (SELECT id FROM posts "
        "ORDER BY random() LIMIT 1)",
        "DELETE FROM posts WHERE id = (SELECT id FROM posts ORDER BY random() LIMIT 1)",
        "UPDATE channels SET team_id = {t} WHERE id = (SELECT id FROM channels "
        "ORDER BY random() LIMIT 1)",
        "UPDATE posts SET channel_id = (SELECT id FROM channels ORDER BY random() LIMIT 1) "
        "WHERE id = (SELECT id FROM posts ORDER BY random() LIMIT 1)",
        "UPDATE posts SET id = (SELECT max(id) + 1 FROM posts) WHERE id = (SELECT id FROM "
        "posts p WHERE NOT EXISTS (SELECT 1 FROM reactions r WHERE r.post_id = p.id) "
        "ORDER BY random() LIMIT 1)",
        "DELETE FROM channels WHERE id = (SELECT id FROM channels ORDER BY random() LIMIT 1)",
        "INSERT INTO channels(team_id, name) VALUES ({t}, 'w{w}')",
        "INSERT OR IGNORE INTO reactions SELECT id, 'e' || abs(random() % 5), 1 FROM posts "
        "ORDER BY random() LIMIT 1",
        "DELETE FROM reactions WHERE post_id = (SELECT post_id FROM reactions "
        "ORDER BY random() LIMIT 1)",
        "INSERT INTO settings VALUES ({t}, 'k' || abs(random() % 20), '1') "
        "ON CONFLICT (team_id, key) DO UPDATE SET value = '2'",
        "INSERT OR REPLACE INTO settings VALUES ({t}, 'k' || abs(random() % 20), '3')",
        "DELETE FROM settings WHERE (team_id, key) IN (SELECT team_id, key FROM settings "
        "ORDER BY random() LIMIT 1)",
        "UPDATE tags SET team_ref = {t} WHERE name = (SELECT name FROM tags "
        "ORDER BY random() LIMIT 1)",
        "INSERT OR REPLACE INTO tags VALUES ((SELECT name FROM tags ORDER BY random() "
        "LIMIT 1), {t})",
        "INSERT OR REPLACE INTO posts(id, channel_id, body) SELECT (SELECT id FROM posts p "
        "WHERE NOT EXISTS (SELECT 1 FROM reactions r WHERE r.post_id = p.id) "
        "ORDER BY random() LIMIT 1), id, 'replaced' FROM channels ORDER BY random() LIMIT 1",
    ]

    def bulk_source(self, bulk):
        """The sample source (not installed) with bulk more posts in team 3's
        first channel, a reaction on every fifth."""
        self.make_source(teams=3, posts_per_team=30, install=False)
        ft.on_source(self.src_db, (
            "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < ?) "
            "INSERT INTO posts(channel_id, body) SELECT (SELECT min(id) FROM channels "
            "WHERE team_id = 3), 'bulk ' || i FROM r", (bulk,)),
            "INSERT INTO reactions SELECT id, 'b', 1 FROM posts WHERE body LIKE 'bulk %' "
            "AND id % 5 = 0")

    def assertKeyMaps(self):
        """Every key map holds exactly its table's keys, each under the team
        ORACLE_FROM puts it in; nothing of the install left in between."""
        for table, (_, pk) in ft.TABLES.items():
            keys = ", ".join("t.\"%s\"" % c for c in pk)
            oracle = " UNION ALL ".join(
                "SELECT %s, %d %s" % (keys, tm, ft.ORACLE_FROM[table].replace(":tenant", str(tm)))
                for tm in (1, 2, 3))
            keymap = "SELECT %s, t._ferry_tenant FROM _ferry_k_%s t" % (keys, table)
            for a, b in ((oracle, keymap), (keymap, oracle)):
                self.assertEqual(ft.query(self.src_db, "SELECT count(*) FROM (SELECT * FROM "
                                          "(%s) EXCEPT SELECT * FROM (%s))" % (a, b)), [(0,)],
                                 "key map of %s" % table)
        self.assertNotIn("_ferry_installing", ft.table_names(self.src_db))

    def key_writes(self):
        """Small writes by key (posts written, added, deleted, moved between
        teams; channels moved with their posts, not the bulk one; reactions
        added), each a function of a random.Random: (SQL, parameters)."""
        top = ft.query(self.src_db, "SELECT max(id) FROM posts")[0][0]
        chans = [r[0] for r in ft.query(self.src_db, "SELECT id FROM channels WHERE id <> "
                                        "(SELECT min(id) FROM channels WHERE team_id = 3)")]
        return [
            lambda r: ("UPDATE posts SET body = 'written' WHERE id = ?", (r.randint(1, top),)),
            lambda r: ("INSERT INTO posts(channel_id, body) VALUES (?, 'new')",
                       (r.choice(chans),)),
            lambda r: ("DELETE FROM posts WHERE id = ?", (r.randint(1, top),)),
            lambda r: ("UPDATE posts SET channel_id = ? WHERE id = ?",
                       (r.choice(chans), r.randint(1, top))),
            lambda r: ("UPDATE channels SET team_id = ? WHERE id = ?",
                       (r.randint(1, 3), r.choice(chans))),
            lambda r: ("INSERT OR IGNORE INTO reactions SELECT id, 'w', 2 FROM posts WHERE id = ?",
                       (r.randint(1, top),)),
        ]

    def install_while_writing(self, writes, also=None):
        """ferry-src install while two connections run writes (and also(),
        when given, loops in a thread too): the writes go on (more than 20
        commit while install runs, and no time without a commit lasts a
        quarter of its run). install's CompletedProcess."""
        stop = threading.Event()
        commits, errors = [], []

        def writer(w):
            rnd = random.Random(w)
            conn = ft.source_conn(self.src_db)
            try:
                while not stop.is_set():
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute(*rnd.choice(writes)(rnd))
                    conn.execute("COMMIT")
                    commits.append(time.monotonic())
                    time.sleep(0.002)
            except sqlite3.Error as e:
                errors.append("writer %d: %s" % (w, e))
            finally:
                conn.close()

        def looper():
            while not stop.is_set():
                also()

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(2)]
        if also:
            threads.append(threading.Thread(target=looper))
        for t in threads:
            t.start()
        try:
            time.sleep(0.3)
            t0 = time.monotonic()
            cp = ft.run_src(["install", "--config", self.src_conf])
            t1 = time.monotonic()
        finally:
            stop.set()
            for t in threads:
                t.join()
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertEqual(errors, [])
        during = sorted(c for c in commits if t0 <= c <= t1)
        self.assertGreater(len(during), 20, "writes committed while install ran")
        gaps = [b - a for a, b in zip([t0] + during, during + [t1])]
        self.assertLess(max(gaps), (t1 - t0) / 4,
                        "writes stopped for %.2f s of install's %.2f s" % (max(gaps), t1 - t0))
        return cp

    def test_nullable_foreign_key_added_to_the_same_parent(self):
        """A migration adds posts.archive_channel_id REFERENCES channels, NULL
        for every post. SQLite lists the newest foreign key first, and the
        scope took the path through it: every post left the tenant, the sync
        deleted them from the target, and verify called that equal. The path
        stays through channel_id, whose column is NOT NULL. Oracle:
        ft.tenant_rows (the sample app's ownership by channel_id)."""
        self.make_source(teams=2, posts_per_team=30)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync()
            for db in (self.src_db, self.dst_db):
                conn = sqlite3.connect(db)
                conn.execute("ALTER TABLE posts ADD COLUMN archive_channel_id INTEGER "
                             "REFERENCES channels(id)")
                conn.commit()
                conn.close()
            conn = ft.source_conn(self.src_db)
            post = quiet_posts(conn, 1)[0]
            conn.execute("UPDATE posts SET body = 'after the migration' WHERE id = ?", (post,))
            conn.execute("INSERT INTO posts(channel_id, body) VALUES (?, 'new')",
                         (team_channels(conn, 1)[0],))
            conn.close()
            self.sync()
            cp = ft.run_src(["scope", "--config", self.src_conf, "--tenant", "1"])
            self.assertEqual(cp.returncode, 0, cp.stderr)
            self.assertRegex(cp.stdout, r"posts\b.*channel_id")
            self.assertNotRegex(cp.stdout, r"posts\b.*archive_channel_id")
        self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))

    def test_path_moved_or_key_renamed_after_install(self):
        """install notes each table's key and path; a foreign key added to a
        nearer parent (posts.team_id REFERENCES teams) moves posts' path,
        while the triggers still route by the old one: serve refuses until
        install runs again, and says so. A key column renamed (SQLite
        rewrites the triggers) needs nothing. Oracles: SQL, verify."""
        self.make_source(teams=2, posts_per_team=20)
        conn = ft.source_conn(self.src_db)
        conn.execute("CREATE TABLE notes(id INTEGER PRIMARY KEY, legacy TEXT, "
                     "channel_id INTEGER NOT NULL REFERENCES channels(id))")
        conn.execute("INSERT INTO notes SELECT id, 'old', id FROM channels")
        conn.close()
        cp = ft.run_src(["install", "--config", self.src_conf])
        self.assertEqual(cp.returncode, 0, cp.stderr)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync()
            # a column before the path's dropped, a key column renamed: SQLite
            # rewrites the triggers, nothing to refuse
            for db in (self.src_db, self.dst_db):
                conn = sqlite3.connect(db)
                conn.execute("ALTER TABLE notes DROP COLUMN legacy")
                conn.execute("ALTER TABLE reactions RENAME COLUMN emoji TO kind")
                conn.commit()
                conn.close()
            conn = ft.source_conn(self.src_db)
            conn.execute("INSERT INTO reactions(post_id, kind, user_id) SELECT min(id), 'new', 1 "
                         "FROM posts WHERE channel_id = ?", (team_channels(conn, 1)[0],))
            conn.close()
            self.sync()
            self.assertNotIn("changed since install", srv.log())
            self.assertEqual(ft.query(self.dst_db, "SELECT count(*) FROM reactions WHERE "
                                      "kind = 'new'")[0][0], 1)
            self.assertEqual(ft.query(self.dst_db, "SELECT count(*) FROM notes")[0][0],
                             ft.query(self.src_db, "SELECT count(*) FROM notes n JOIN channels "
                                      "c ON c.id = n.channel_id WHERE c.team_id = 1")[0][0])
            cp = ft.run_dst(["verify", "--config", self.dst_conf])
            self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        # the tags predicate only reflowed in the config: the same shape
        with open(self.src_conf) as f:
            conf = f.read()
        with open(self.src_conf, "w") as f:
            f.write(conf.replace("scope = tags.team_ref = :tenant",
                                 "scope =  tags.team_ref\t=   :tenant  "))
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync()
            self.assertNotIn("changed since install", srv.log())
            conn = ft.source_conn(self.src_db)
            conn.execute("ALTER TABLE posts ADD COLUMN team_id INTEGER REFERENCES teams(id)")
            conn.close()
            cp = self.sync(expect=2)
            self.assertIn("details in the ferry-src log", cp.stderr)
            self.assertIn("table posts: its key or path to the tenant changed since install "
                          "(capture routes by the old one); run ferry-src install again, then "
                          "ferry-dst verify --repair", srv.log())

    def test_second_nullable_key_to_the_parent_of_a_nullable_path(self):
        """notes reach channels by a nullable channel_id; a migration adds a
        second nullable key to channels, which SQLite lists first: the path
        moves to it, and the shape (key width, parent) stays the same. The
        triggers still route by channel_id, so the next sync deleted every
        note and verify said equal. serve now sees that the path's column is
        not the one its triggers name, and refuses until install. Oracle:
        the notes the tenant's channels hold, by SQL."""
        self.make_source(teams=2, posts_per_team=10)
        conn = ft.source_conn(self.src_db)
        conn.execute("CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT, "
                     "channel_id INTEGER REFERENCES channels(id))")
        conn.execute("INSERT INTO notes(body, channel_id) SELECT 'n', id FROM channels")
        conn.close()
        cp = ft.run_src(["install", "--config", self.src_conf])
        self.assertEqual(cp.returncode, 0, cp.stderr)
        owned = ("SELECT count(*) FROM notes n JOIN channels c ON c.id = n.channel_id "
                 "WHERE c.team_id = 1")
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync()
            want = ft.query(self.src_db, owned)[0][0]
            self.assertGreater(want, 0)
            self.assertEqual(ft.query(self.dst_db, "SELECT count(*) FROM notes")[0][0], want)
            for db in (self.src_db, self.dst_db):
                conn = sqlite3.connect(db)
                conn.execute("ALTER TABLE notes ADD COLUMN archive_channel_id INTEGER "
                             "REFERENCES channels(id)")
                conn.commit()
                conn.close()
            cp = self.sync(expect=2)
            self.assertIn("table notes: its key or path to the tenant changed since install",
                          srv.log())
            self.assertEqual(ft.query(self.dst_db, "SELECT count(*) FROM notes")[0][0], want)
        # install again: the path is archive_channel_id now (the first SQLite
        # lists), as the scope says; the sync follows it
        cp = ft.run_src(["install", "--config", self.src_conf])
        self.assertEqual(cp.returncode, 0, cp.stderr)
        cp = ft.run_src(["scope", "--config", self.src_conf, "--tenant", "1"])
        path = re.search(r"notes\b.*?(archive_channel_id|channel_id)", cp.stdout).group(1)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync()
            self.assertNotIn("changed since install", srv.log())
            self.assertEqual(ft.query(self.dst_db, "SELECT count(*) FROM notes")[0][0],
                             ft.query(self.src_db, owned.replace("n.channel_id",
                                                                 "n." + path))[0][0])

    def test_excluded_table_dropped(self):
        """The application drops audit_log, which src.conf excludes: every
        request failed (the exclude named a table that does not exist) until
        the config was edited. Now serve warns once and goes on; install
        and scope refuse it still. Oracle: the source's rows, by SQL."""
        self.make_source(teams=2, posts_per_team=20)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync()
            conn = ft.source_conn(self.src_db)
            conn.execute("DROP TABLE audit_log")
            post = quiet_posts(conn, 1)[0]
            conn.execute("UPDATE posts SET body = 'after the drop' WHERE id = ?", (post,))
            conn.close()
            self.sync()
            self.sync()
            self.assertEqual(srv.log().count("[scope] exclude names table audit_log, which "
                                             "does not exist"), 1, srv.log())
        self.assertEqual(ft.query(self.dst_db, "SELECT body FROM posts WHERE id = ?", post),
                         [("after the drop",)])
        self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))
        # install and scope, where the operator is, still refuse it: a
        # misspelt name would leave the table meant in the scope
        for cmd in (["install"], ["scope", "--tenant", "1"]):
            cp = ft.run_src(cmd + ["--config", self.src_conf])
            self.assertEqual(cp.returncode, 2, cp.stderr)
            self.assertIn("[scope] exclude names table audit_log, which does not exist",
                          cp.stderr)

    def test_table_of_the_scope_dropped(self):
        """The application drops reactions: posts' triggers still name it
        (they touch their children), so every write to posts fails until
        install. serve said only that reactions left the scope; now it
        refuses and says to run install, which makes posts writable again.
        Oracle: the application's own write, and assertTenantCopy."""
        self.make_source(teams=2, posts_per_team=20)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync()
            for db in (self.src_db, self.dst_db):
                conn = sqlite3.connect(db)
                conn.execute("DROP TABLE reactions")
                conn.commit()
                conn.close()
            cp = self.sync(expect=2)
            self.assertIn("details in the ferry-src log", cp.stderr)
            self.assertIn("table reactions, in the scope at install, is gone", srv.log())
            self.assertIn("run ferry-src install --config %s" % self.src_conf, srv.log())
        cp = ft.run_src(["install", "--config", self.src_conf])
        self.assertEqual(cp.returncode, 0, cp.stderr)
        conn = ft.source_conn(self.src_db)
        conn.execute("UPDATE posts SET body = 'after the drop' WHERE id = (SELECT min(p.id) "
                     "FROM posts p JOIN channels c ON c.id = p.channel_id WHERE c.team_id = 1)")
        conn.close()
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync()
        self.assertEqual(ft.query(self.dst_db, "SELECT count(*) FROM posts WHERE body = "
                                  "'after the drop'")[0][0], 1)

    def test_channel_moved_between_tenants_of_one_target(self):
        """Teams 1 and 2 mirrored into one SQLite target, a channel moved
        from team 1 to team 2: team 2's change batches (one change each)
        bring the channel's posts and kinds before the channel. They are not
        on the target (deleted there behind ferry's back, as an earlier round
        of team 1's sync may have), so team 2's upsert wrote them new under
        the channel the target still holds for team 1, and team 1's sync then
        deleted them as its own after team 2's mark had passed them: rows
        lost with every sync exiting 0. Now such an upsert is a clash until
        team 1 has taken the channel away. Oracles: ft.tenant_rows, verify."""
        self.make_source(teams=2, posts_per_team=40)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            conf = {1: self.dst_conf}
            import ferryauth
            ferryauth.authorize(self.src_conf, 2, ft.test_key("dst-2"))
            conf[2] = ft.write_dst_conf(self.path("dst-2.conf"), self.dst_db,
                                        self.path("state-2"), 2, srv.url,
                                        extra="batch_rows = 1\n",
                                        identity=ft.test_key("dst-2"),
                                        public_key=ft.test_key("src") + ".pub")

            def run(t):
                return ft.run_dst(["sync", "--quiet", "--config", conf[t]])

            for t in (1, 2):
                cp = run(t)
                self.assertEqual(cp.returncode, 0, cp.stderr)
            conn = ft.source_conn(self.src_db)
            chan = conn.execute("SELECT c.id FROM channels c JOIN posts p ON p.channel_id = c.id "
                                "WHERE c.team_id = 1 GROUP BY c.id ORDER BY count(*) DESC "
                                "LIMIT 1").fetchone()[0]
            conn.execute("UPDATE channels SET team_id = 2 WHERE id = ?", (chan,))
            conn.close()
            dst = sqlite3.connect(self.dst_db)
            dst.execute("DELETE FROM reactions WHERE post_id IN (SELECT id FROM posts "
                        "WHERE channel_id = ?)", (chan,))
            dst.execute("DELETE FROM posts WHERE channel_id = ?", (chan,))
            dst.execute("DELETE FROM kinds WHERE channel_id = ?", (chan,))
            dst.commit()
            dst.close()
            for t in (2, 1, 2, 1):
                run(t)
            for t in (1, 2):
                cp = run(t)
                self.assertEqual(cp.returncode, 0, cp.stderr)
            for t in (1, 2):
                for table in ft.IN_SCOPE:
                    self.assertEqual(sorted(ft.tenant_rows(self.dst_db, table, t)),
                                     sorted(ft.tenant_rows(self.src_db, table, t)),
                                     "%s of team %d" % (table, t))
                cp = ft.run_dst(["verify", "--config", conf[t]])
                self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)

    def test_install_again_while_targets_sync(self):
        """install over an earlier one, twice, while two connections write by
        key and three teams' targets sync in a loop against the running
        serve: the writes go on (install_while_writing), it checks the key
        maps it keeps rather than filling them anew, no sync fails, and
        after a last sync the key maps and every target match the source.
        Oracles: ORACLE_FROM's SQL, assertTenantCopy."""
        self.bulk_source(300000)
        writes = self.key_writes()
        cp = ft.run_src(["install", "--config", self.src_conf])
        self.assertEqual(cp.returncode, 0, cp.stderr)
        failed = []
        with self.serve() as srv:
            confs = self.team_targets(srv.url, (1, 2, 3))
            self.sync_targets(confs)

            def sync_once():
                for conf in confs.values():
                    cp = ft.run_dst(["sync", "--config", conf, "--quiet"])
                    if cp.returncode != 0:
                        failed.append(cp.stderr)

            for _ in range(2):
                cp = self.install_while_writing(writes, also=sync_once)
                self.assertIn("key map of posts checked in", cp.stderr)
            self.assertEqual(failed, [])
            self.sync_targets(confs)
            self.assertKeyMaps()
            for t in (1, 2, 3):
                self.assertTenantCopy(self.src_db, self.path("dst%d.db" % t), t,
                                      others=tuple(o for o in (1, 2, 3) if o != t))

    def test_install_again_mends_the_key_maps(self):
        """Writes the capture never saw (its triggers on posts dropped by
        hand): a post moved from team 1 to team 2, one deleted, one added.
        install over the earlier one finds the key map wrong there, logs a
        delete for the tenant each wrong entry names and the row for the
        tenant that holds it now, and mends the map: the two teams' targets
        then hold their teams' rows. Oracles: ORACLE_FROM's SQL,
        assertTenantCopy."""
        self.make_source(teams=3, posts_per_team=20)
        with self.serve() as srv:
            confs = self.team_targets(srv.url, (1, 2))
            self.sync_targets(confs)
            conn = ft.source_conn(self.src_db)
            try:
                moved, gone, edited = quiet_posts(conn, 1)[:3]
                for kind in "iud":
                    conn.execute("DROP TRIGGER _ferry_%s_posts" % kind)
                conn.execute("UPDATE posts SET channel_id = ? WHERE id = ?",
                             (team_channels(conn, 2)[0], moved))
                conn.execute("DELETE FROM posts WHERE id = ?", (gone,))
                conn.execute("INSERT INTO posts(channel_id, body) VALUES (?, 'unseen')",
                             (team_channels(conn, 1)[0],))
                conn.execute("UPDATE posts SET body = 'edited unseen' WHERE id = ?", (edited,))
            finally:
                conn.close()
            cp = ft.run_src(["install", "--config", self.src_conf])
            self.assertEqual(cp.returncode, 0, cp.stderr)
            # an update that left its row where it was is no key map's to see: said
            self.assertIn("install: table posts was in the scope and lost its capture triggers",
                          cp.stderr)
            self.assertIn("run ferry-dst verify --repair on each target", cp.stderr)
            self.assertNotIn("table channels", cp.stderr)
            self.assertKeyMaps()
            self.sync_targets(confs)
            self.assertNotEqual(ft.query(self.path("dst1.db"), "SELECT body FROM posts WHERE "
                                         "id = ?", edited)[0][0], "edited unseen")
            cp = ft.run_dst(["verify", "--config", confs[1], "--repair"])
            self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
            for t, other in ((1, 2), (2, 1)):
                self.assertTenantCopy(self.src_db, self.path("dst%d.db" % t), t,
                                      others=(other, 3))

    def test_install_while_the_application_writes(self):
        """A first install on a source of 600,000 more posts while two
        connections write by key (key_writes): the writes go on while
        install fills the key maps (install_while_writing; an install that
        holds the write lock while it fills them stops the writes for most
        of it), the key maps match the data, and
        three teams' targets copy and follow more writes. Oracles:
        ORACLE_FROM's SQL, assertTenantCopy."""
        self.bulk_source(600000)
        writes = self.key_writes()
        cp = self.install_while_writing(writes)
        self.assertIn("key map of posts filled in", cp.stderr)
        self.assertKeyMaps()
        with self.serve() as srv:
            confs = self.team_targets(srv.url, (1, 2, 3))
            self.sync_targets(confs)
            conn = ft.source_conn(self.src_db)
            try:
                rnd = random.Random(7)
                for _ in range(200):
                    conn.execute(*rnd.choice(writes)(rnd))
            finally:
                conn.close()
            self.sync_targets(confs)
            for t in (1, 2, 3):
                self.assertTenantCopy(self.src_db, self.path("dst%d.db" % t), t,
                                      others=tuple(o for o in (1, 2, 3) if o != t))

    def test_install_killed_while_it_fills_the_key_maps(self):
        """install SIGKILLed while it fills the key maps (its triggers are in):
        serve refuses to start (exit 2) and says install stopped half way,
        writes meanwhile go on; install run again fills
        the key maps to match the data and serve serves. Oracle:
        ORACLE_FROM's SQL."""
        self.bulk_source(300000)
        proc = subprocess.Popen([os.path.join(ft.FERRY_BIN, "ferry-src"), "install",
                                 "--config", self.src_conf], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while not ft.query(self.src_db, "SELECT count(*) FROM sqlite_schema WHERE name = "
                           "'_ferry_k_posts'")[0][0] or not ft.query(
                               self.src_db, "SELECT count(*) > 100 FROM _ferry_k_posts")[0][0]:
            self.assertLess(time.time(), deadline, "install filled no key map")
            self.assertIsNone(proc.poll(), "install ended before the test could stop it")
            time.sleep(0.005)
        proc.kill()
        proc.wait()
        self.assertLess(ft.query(self.src_db, "SELECT count(*) FROM _ferry_k_posts")[0][0],
                        ft.query(self.src_db, "SELECT count(*) FROM posts")[0][0])
        ft.on_source(self.src_db, "UPDATE posts SET body = 'while half installed' WHERE id = 1")
        cp = ft.run_src(["serve", "--config", self.src_conf])
        self.assertEqual(cp.returncode, 2, cp.stderr)
        self.assertIn("install is filling the key maps, or stopped half way", cp.stderr)
        cp = ft.run_src(["install", "--config", self.src_conf])
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertKeyMaps()
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync("--quiet")
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2, 3))

    def test_concurrent_random_writers(self):
        """Three connections write random transactions of the workload above
        (a tenth rolled back) while the three teams' targets sync again and
        again; after a last sync each holds exactly its team's rows (the
        build before REPLACE was captured failed here). FERRY_TEST_SEED
        repeats a run. Oracle: assertTenantCopy, team by team."""
        seed = int(os.environ.get("FERRY_TEST_SEED", "1"))
        self.make_source(teams=3, posts_per_team=60)
        with self.serve() as srv:
            confs = self.team_targets(srv.url, (1, 2, 3))

            def writer(w, errors):
                rnd = random.Random(seed * 100 + w)
                conn = ft.source_conn(self.src_db)
                try:
                    for _ in range(200):
                        conn.execute("BEGIN IMMEDIATE")
                        for _ in range(rnd.randint(1, 3)):
                            conn.execute(rnd.choice(self.RANDOM_WRITES).format(
                                w=w, t=rnd.randint(1, 3)))
                        conn.execute("COMMIT" if rnd.random() < 0.9 else "ROLLBACK")
                except sqlite3.Error as e:
                    errors.append("writer %d: %s" % (w, e))
                finally:
                    conn.close()

            self.sync_targets(confs)
            errors = []
            writers = [threading.Thread(target=writer, args=(w, errors)) for w in range(3)]
            for t in writers:
                t.start()
            while any(t.is_alive() for t in writers):
                self.sync_targets(confs)
            for t in writers:
                t.join()
            self.sync_targets(confs)
            self.assertEqual(errors, [])
            for t in (1, 2, 3):
                self.assertTenantCopy(self.src_db, self.path("dst%d.db" % t), t,
                                      others=tuple(o for o in (1, 2, 3) if o != t))

    def test_move_channel_out_of_tenant(self):
        # A channel that moves from team 1 to team 3 leaves team 1 with its
        # posts, reactions and kinds, though none of those rows changed.
        self.make_source(teams=3, posts_per_team=100)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync()
            conn = ft.source_conn(self.src_db)
            try:
                ch = team_channels(conn, 1)[0]
                conn.execute("UPDATE channels SET team_id = 3 WHERE id = ?", (ch,))
            finally:
                conn.close()
            self.assertIn(("integer", ch), [r[1] for r in ft.table_rows(self.dst_db, "posts")])
            self.sync()
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2, 3))

    def test_delta_owner_check(self):
        # A delta's upsert of a row that the target holds for another tenant
        # is a clash: nothing of the batch is committed and the mark stays;
        # a delete of such a row is skipped with a warning (the tenant does
        # not hold it, as the delete asks). A row the target holds without an
        # owner (its parent is not there) is the tenant's to overwrite or to
        # delete.
        # 128 posts change at once: the upserts run 16 rows a statement (a
        # clash must be seen in those, no row is left for the one-row upsert).
        self.make_source(teams=3, posts_per_team=300)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync("--quiet")
            conn = ft.source_conn(self.src_db)
            try:
                quiet = quiet_posts(conn, 1)
                gone = quiet[0]
                upd = ids(conn, "SELECT p.id FROM posts p JOIN channels c ON c.id = p.channel_id "
                                "WHERE c.team_id = 1 AND p.id <> ? ORDER BY p.id LIMIT 128", gone)
                self.assertEqual(len(upd), 128)
                conn.execute("UPDATE posts SET body = 'edited ' || id WHERE id IN (%s)"
                             % ",".join(map(str, upd)))
            finally:
                conn.close()
            marks = ",".join("?" * len(upd))

            def on_target(*stmts):
                dst = sqlite3.connect(self.dst_db)
                for sql, params in stmts:
                    dst.execute(sql, params)
                dst.commit()
                dst.close()

            def target_posts(pids):
                dst = sqlite3.connect(self.dst_db)
                try:
                    return dst.execute("SELECT id, channel_id, body FROM posts WHERE id IN (%s) "
                                       "ORDER BY id" % ",".join(map(str, pids))).fetchall()
                finally:
                    dst.close()

            # team 9 is on this target too, and holds all these posts there
            on_target(("INSERT INTO teams(id, name) VALUES (9, 'Team Nine')", ()),
                      ("INSERT INTO channels(id, team_id, name) VALUES (990, 9, 'nine')", ()),
                      ("UPDATE posts SET channel_id = 990 WHERE id IN (%s, ?)" % marks,
                       tuple(upd) + (gone,)))
            mark = ft.status_json(self.dst_conf)["hwm"]
            before = ft.db_dump(self.dst_db)
            cp = self.sync("--quiet", expect=5)
            named = re.search(r"\bposts\b.*\bid=(\d+)", cp.stderr)
            self.assertIsNotNone(named, cp.stderr)
            self.assertIn(int(named.group(1)), upd, cp.stderr)
            self.assertUnchanged(before, self.dst_db, "upserts that clash")
            self.assertEqual(ft.status_json(self.dst_conf)["hwm"], mark)

            # the posts' channel is not on the target: no owner, the delta overwrites them
            on_target(("UPDATE posts SET channel_id = 991 WHERE id IN (%s)" % marks, tuple(upd)))
            self.sync("--quiet")
            src = sqlite3.connect(self.src_db)
            want = src.execute("SELECT id, channel_id, body FROM posts WHERE id IN (%s) "
                               "ORDER BY id" % marks, upd).fetchall()
            src.close()
            self.assertEqual(target_posts(upd), want)
            self.assertEqual(want[0][2], "edited %d" % upd[0])
            self.assertGreater(ft.status_json(self.dst_conf)["hwm"], mark)

            conn = ft.source_conn(self.src_db)
            try:
                conn.execute("DELETE FROM posts WHERE id = ?", (gone,))
            finally:
                conn.close()
            mark = ft.status_json(self.dst_conf)["hwm"]
            held = target_posts([gone])
            self.assertEqual(held[0][1], 990)
            cp = self.sync("--quiet")
            self.assertRegex(cp.stderr, r"delete of posts \(id=%d\) skipped: the target holds "
                             r"that row for another tenant than 1" % gone)
            self.assertEqual(target_posts([gone]), held, "team 9's post was deleted")
            self.assertGreater(ft.status_json(self.dst_conf)["hwm"], mark)
            # an ownerless row (its channel not on the target) is the tenant's to delete
            lone = quiet[1]
            on_target(("UPDATE posts SET channel_id = 991 WHERE id = ?", (lone,)))
            conn = ft.source_conn(self.src_db)
            try:
                conn.execute("DELETE FROM posts WHERE id = ?", (lone,))
            finally:
                conn.close()
            self.sync("--quiet")
            self.assertEqual(target_posts([lone]), [], "the ownerless post was not deleted")

            on_target(("DELETE FROM posts WHERE channel_id = 990", ()),
                      ("DELETE FROM channels WHERE team_id = 9", ()),
                      ("DELETE FROM teams WHERE id = 9", ()))
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2, 3))

    def test_nothing_pending_leaves_the_target_alone(self):
        # The manifest says no change of the tenant is pending after the
        # mark: the run records itself and the source head it saw, and
        # writes nothing to the target (its file untouched). A target
        # database gone since the copy is refused, idle run or not, and not
        # created (a delta run opens an existing one, never with create).
        self.make_source(teams=2, posts_per_team=30)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync("--quiet")
            st0 = ft.status_json(self.dst_conf)
            ft.on_source(self.src_db, "UPDATE teams SET name = 'Team Two' WHERE id = 2")
            mtime = os.stat(self.dst_db).st_mtime_ns
            self.sync("--quiet")
            self.assertEqual(os.stat(self.dst_db).st_mtime_ns, mtime, "the target was written")
            st = ft.status_json(self.dst_conf)
            run = last_run(st)
            self.assertEqual((run["code"], run["upserted"], run["deleted"]), ("OK", 0, 0), run)
            self.assertEqual(st["hwm"], st0["hwm"])
            self.assertGreater(st["source_head"], st0["source_head"], "team 2's change is not seen")
            self.assertGreater(run["id"], last_run(st0)["id"])
            away = self.path("dst-away.db")
            os.rename(self.dst_db, away)
            for suffix in ("-wal", "-shm"):
                self.assertFalse(os.path.exists(self.dst_db + suffix))
            cp = self.sync("--quiet", expect=5)
            self.assertIn("is missing, but the state records its copy", cp.stderr)
            self.assertFalse(os.path.exists(self.dst_db), "the target database was created")
            self.assertEqual(ft.status_json(self.dst_conf)["hwm"], st0["hwm"])
            os.rename(away, self.dst_db)
            ft.on_source(self.src_db, "UPDATE teams SET name = 'Team One' WHERE id = 1")
            self.sync("--quiet")
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))
            self.assertGreater(ft.status_json(self.dst_conf)["hwm"], st["hwm"])
            # a table dropped from the target: refused by an idle run too,
            # not left unnoticed until the tenant next writes
            shutil.copy(self.dst_db, away)
            ft.on_source(self.dst_db, "DROP TABLE reactions")
            ft.on_source(self.src_db, "UPDATE teams SET name = 'Team 2' WHERE id = 2")
            cp = self.sync("--quiet", expect=5)
            self.assertIn("target table reactions is missing, but the state records its copy",
                          cp.stderr)
            shutil.copy(away, self.dst_db)
            self.sync("--quiet")

    def test_delta_with_the_source_down_is_a_failed_run(self):
        # A delta run records its start while the manifest is on its way: a
        # source that is down ends it as a failed run (exit 4), the mark and
        # the target unchanged; the next run with the source back converges.
        self.make_source(teams=2, posts_per_team=30)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync("--quiet")
        st0 = ft.status_json(self.dst_conf)
        before = ft.db_dump(self.dst_db)
        ft.on_source(self.src_db, "UPDATE posts SET body = 'while down' WHERE channel_id IN "
                     "(SELECT id FROM channels WHERE team_id = 1)")
        # the source's port is let go: a port held refusing stands for it
        # (another test's source could take the freed one meanwhile)
        port, holder = ft.refusing_port()
        try:
            self.make_target("http://127.0.0.1:%d" % port, tenant=1)
            self.sync("--quiet", expect=4, timeout=120)
        finally:
            holder.close()
        st = ft.status_json(self.dst_conf)
        run = last_run(st)
        self.assertGreater(run["id"], last_run(st0)["id"], "the failed run is not recorded")
        self.assertNotEqual(run["code"], "OK", run)
        self.assertTrue(run["msg"], run)
        self.assertEqual((run["upserted"], run["deleted"]), (0, 0), run)
        self.assertEqual(st["hwm"], st0["hwm"])
        self.assertUnchanged(before, self.dst_db, "a delta run with the source down")
        # the run log has it too, start and end, as the state does
        with open(os.path.join(self.state, "runs.log")) as f:
            events = [json.loads(line) for line in f]
        mine = [e for e in events if e.get("run") == run["id"]]
        self.assertEqual([e["event"] for e in mine], ["start", "error", "end"], events[-4:])
        self.assertEqual(mine[2]["code"], run["code"], mine)
        self.assertIn(run["msg"], json.dumps(mine[1]), mine)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync("--quiet")
        self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))

    def test_dry_run_changes_nothing(self):
        self.make_source(teams=3, posts_per_team=50)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            cp = self.sync("--dry-run")
            out = cp.stdout + cp.stderr
            for t in ft.IN_SCOPE:
                self.assertRegex(out, r"\b%s\b" % t, "dry-run does not name table %s" % t)
            if os.path.exists(self.dst_db):
                self.assertEqual(ft.table_names(self.dst_db), [],
                                 "dry-run created tables in the target")
            if os.path.exists(self.state):
                self.assertEqual(os.listdir(self.state), [], "dry-run wrote state")
            # and a real sync afterwards starts from scratch and is complete
            self.sync()
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2, 3))

    def test_scope_lists_tables_and_counts(self):
        self.make_source(teams=3, posts_per_team=120)
        for tenant in (1, 2):
            cp = ft.run_src(["scope", "--config", self.src_conf, "--tenant", str(tenant)])
            self.assertEqual(cp.returncode, 0, cp.stderr)
            lines = cp.stdout.splitlines()
            for t in ft.IN_SCOPE:
                n = len(ft.tenant_rows(self.src_db, t, tenant))
                hit = [l for l in lines if re.search(r"\b%s\b" % t, l)
                       and re.search(r"(?<![\w.])%d(?![\w.])" % n, l)]
                self.assertTrue(hit, "scope output has no line naming %s with %d rows:\n%s"
                                % (t, n, cp.stdout))
            for t in ft.OUT_OF_SCOPE:
                listed = [l for l in lines if re.search(r"\b%s\b" % t, l)
                          and not re.search(r"exclu|skip|not in scope|shared|unreach", l, re.I)]
                self.assertEqual(listed, [], "scope lists out-of-scope table %s:\n%s"
                                 % (t, cp.stdout))
        # a tenant the database does not have: the operator's mistake, exit 2
        cp = ft.run_src(["scope", "--config", self.src_conf, "--tenant", "99"])
        self.assertEqual(cp.returncode, 2, cp.stderr)
        self.assertIn("tenant 99 not found in teams; check --tenant", cp.stderr)
        self.assertEqual(cp.stdout, "")

    def test_status_json_after_sync(self):
        self.make_source(teams=3, posts_per_team=80)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            t0 = time.time()
            self.sync()
            st = ft.status_json(self.dst_conf)
        self.assertEqual(st["tenant"], "1")
        self.assertEqual(st["source"].rstrip("/"), srv.url)
        self.assertEqual(st["phase"], "streaming")
        self.assertIsInstance(st["start_head"], int)
        self.assertIsInstance(st["hwm"], int)
        self.assertGreaterEqual(st["hwm"], st["start_head"])
        self.assertLessEqual(abs(st["last_sync"] - t0), 120)
        tables = {t["table"]: t for t in st["tables"]}
        self.assertEqual(set(tables), set(ft.IN_SCOPE))
        total = 0
        for t in ft.IN_SCOPE:
            n = len(ft.tenant_rows(self.src_db, t, 1))
            total += n
            self.assertEqual((tables[t]["rows"], tables[t]["done"]), (n, True), t)
        runs = st["runs"]
        self.assertEqual(len(runs), 1, runs)
        run = runs[0]
        self.assertEqual((run["kind"], run["code"], run["upserted"], run["deleted"]),
                         ("sync", "OK", total, 0), run)
        self.assertLessEqual(run["started"], run["ended"])

    def test_install_twice_and_uninstall(self):
        self.make_source(teams=2, posts_per_team=30, install=False)
        data = app_dump(self.src_db)
        self.assertEqual(ferry_objects(self.src_db), [])
        for _ in range(2):
            cp = ft.run_src(["install", "--config", self.src_conf])
            self.assertEqual(cp.returncode, 0, cp.stderr)
            if _ == 0:
                first = ferry_objects(self.src_db)
        self.assertTrue(first, "install created no _ferry objects")
        self.assertEqual(ferry_objects(self.src_db), first, "second install changed the objects")
        self.assertEqual(app_dump(self.src_db), data, "install changed application data")
        # Capture works after the second install: a change still syncs.
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync()
            conn = ft.source_conn(self.src_db)
            conn.execute("UPDATE teams SET name = 'renamed' WHERE id = 1")
            conn.close()
            self.sync()
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))
        data = app_dump(self.src_db)
        cp = ft.run_src(["uninstall", "--config", self.src_conf])
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertEqual(ferry_objects(self.src_db), [], "uninstall left _ferry objects")
        self.assertEqual(app_dump(self.src_db), data, "uninstall changed application data")
        conn = sqlite3.connect(self.src_db)
        triggers = conn.execute("SELECT name FROM sqlite_schema WHERE type = 'trigger'").fetchall()
        conn.close()
        self.assertEqual(triggers, [], "uninstall left triggers")
        conn = sqlite3.connect(self.src_db)
        try:
            seq = conn.execute("SELECT name FROM sqlite_sequence "
                               "WHERE lower(name) LIKE '\\_ferry%' ESCAPE '\\'").fetchall()
        except sqlite3.OperationalError:
            seq = []  # no sqlite_sequence at all
        conn.close()
        self.assertEqual(seq, [], "uninstall left _ferry rows in sqlite_sequence")

    def test_serve_warns_of_an_older_install(self):
        """install records its capture version (_ferry_capture); serve warns,
        in one line that says what to run, when the database's capture was
        installed by an older ferry-src (a lower version, or none recorded),
        keeps serving, and is quiet after install runs again."""
        self.make_source(teams=2, posts_per_team=10)
        conn = sqlite3.connect(self.src_db)
        rows = conn.execute("SELECT version FROM _ferry_capture").fetchall()
        self.assertEqual(len(rows), 1, rows)
        self.assertGreaterEqual(rows[0][0], 2, "install's version: 2 since PostgreSQL's "
                                "triggers turned sequential scans off")
        conn.close()
        warning = "installed by an older ferry-src"
        with self.serve() as srv:
            self.assertNotIn(warning, srv.log())
        for older in ("UPDATE _ferry_capture SET version = 5",  # before the last SQLite change
                      "DROP TABLE _ferry_capture"):
            conn = sqlite3.connect(self.src_db)
            conn.execute(older)
            conn.commit()
            conn.close()
            with self.serve() as srv:
                self.make_target(srv.url, tenant=1)
                self.sync()
                lines = [ln for ln in srv.log().splitlines() if warning in ln]
                self.assertEqual(len(lines), 1, srv.log())
                self.assertIn("ferry-src install --config %s again" % self.src_conf, lines[0])
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))
        cp = ft.run_src(["install", "--config", self.src_conf])
        self.assertEqual(cp.returncode, 0, cp.stderr)
        with self.serve() as srv:
            self.assertNotIn(warning, srv.log())

    def test_clash_with_other_tenant(self):
        self.make_source(teams=3, posts_per_team=40)
        conn = sqlite3.connect(self.src_db)
        ddl = dict(conn.execute("SELECT name, sql FROM sqlite_schema WHERE type = 'table'"))
        clash = conn.execute("SELECT min(id) FROM channels WHERE team_id = 1").fetchone()[0]
        conn.close()
        # A target that already serves team 9, whose channel has the same id
        # as one of team 1's channels.
        dst = sqlite3.connect(self.path("dst.db"))
        for t in ft.IN_SCOPE:
            dst.execute(ddl[t])
        dst.execute("INSERT INTO teams(id, name) VALUES (9, 'Team Nine')")
        dst.execute("INSERT INTO channels(id, team_id, name) VALUES (?, 9, 'nine')", (clash,))
        dst.execute("INSERT INTO settings(team_id, key, value) VALUES (9, 'theme', 'light')")
        dst.commit()
        dst.close()
        before = ft.db_dump(self.path("dst.db"))
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            cp = self.sync("--quiet", expect=5)
        self.assertOneLine(cp.stderr)
        self.assertRegex(cp.stderr, r"\bchannels\b", "error does not name the table")
        self.assertRegex(cp.stderr, r"(?<!\d)%d(?!\d)" % clash, "error does not name the key")
        # The clash stops the run inside the channels batch: nothing of that
        # batch is committed and nothing of team 9 is touched. Batches that
        # committed before it hold only team 1's rows (teams, tags: parents
        # first), as DESIGN.md's "nothing of that batch is committed" says.
        after = ft.db_dump(self.dst_db)
        for t, rows in before.items():
            for row in rows:
                self.assertIn(row, after[t], "team 9's row in %s was changed or removed" % t)
        dst = sqlite3.connect(self.dst_db)
        self.assertEqual(dst.execute("SELECT id, team_id, name FROM channels").fetchall(),
                         [(clash, 9, "nine")], "channels of the refused batch were committed")
        for t in ("posts", "reactions", "kinds", "settings"):
            rows = dst.execute('SELECT count(*) FROM "%s"' % t).fetchone()[0]
            self.assertEqual(rows, 1 if t == "settings" else 0,
                             "%s was written after the clash stopped the run" % t)
        # The operator resolves the clash (team 9 leaves this target); a rerun
        # resumes and converges to the source's team 1 exactly.
        dst.execute("DELETE FROM settings WHERE team_id = 9")
        dst.execute("DELETE FROM channels WHERE team_id = 9")
        dst.execute("DELETE FROM teams WHERE id = 9")
        dst.commit()
        dst.close()
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync("--quiet")
        self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2, 3))


    def changes_requests(self, srv):
        status, text = ft.http_get(srv.url, "/metrics")
        self.assertEqual(status, 200)
        return int(re.search(r'(?m)^ferry_requests_total\{endpoint="changes"\} (\d+)$',
                             text.decode()).group(1))

    def edit_posts(self, n, what):
        conn = ft.source_conn(self.src_db)
        conn.execute("UPDATE posts SET body = ? WHERE id IN (SELECT p.id FROM posts p JOIN "
                     "channels c ON c.id = p.channel_id WHERE c.team_id = 1 ORDER BY p.id "
                     "LIMIT ?)", (what, n))
        conn.close()

    def test_first_batch_with_the_manifest(self):
        """A delta run gets its first change batch with the manifest: a delta
        of one batch asks for no batch of its own (the source's request
        count), one of three batches asks for two; both converge."""
        self.make_source(teams=2, posts_per_team=40, batch_rows=5)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync("--quiet")
            before = self.changes_requests(srv)
            self.edit_posts(3, "one batch")
            self.sync("--quiet")
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))
            self.assertEqual(self.changes_requests(srv), before)
            self.edit_posts(12, "three batches")
            self.sync("--quiet")
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))
            self.assertEqual(self.changes_requests(srv) - before, 2)
            # nothing pending: no batch at all
            self.sync("--quiet")
            self.assertEqual(self.changes_requests(srv) - before, 2)

    def test_source_from_before_the_first_batch(self):
        """A source from before the manifest carried the first change batch
        refuses the request's key: the target asks as it understands and
        applies the batches by their own requests."""
        old = ft.old_source()
        self.make_source(teams=2, posts_per_team=40, batch_rows=5)
        new_src, ft.FERRY_SRC = ft.FERRY_SRC, old
        try:
            with self.serve() as srv:
                self.make_target(srv.url, tenant=1)
                self.sync("--quiet")
                before = self.changes_requests(srv)
                self.edit_posts(12, "old source")
                self.sync("--quiet")
                self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))
                self.assertEqual(self.changes_requests(srv) - before, 3)
        finally:
            ft.FERRY_SRC = new_src

if __name__ == "__main__":
    ft.main()
