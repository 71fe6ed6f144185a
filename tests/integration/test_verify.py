#!/usr/bin/env python3
"""ferry-dst verify and verify --repair against the real agents, SQLite to
SQLite, PostgreSQL to PostgreSQL and across the two engines (rows hashed by
a C function in SQLite, in C or in SQL on PostgreSQL: the same numbers;
SipHash-1-3 under a key drawn for each verify, SHA-256 for a peer from
before it): an unchanged team is equal and nothing is touched; target rows
changed, deleted or added behind ferry's back, and a source row changed
with change capture bypassed, are each found with exactly their keys and
fixed by --repair; rows of another tenant on the same target are never
read, reported nor touched; a target table that is missing; masked
columns; the /v1/digest and /v1/rows endpoints over raw HTTP.

Oracles: the keys the test itself changed, and ferrytest.tenant_rows(),
hand-written SQL that never uses ferry's notion of scope.
"""

import hashlib
import json
import math
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402


def ids(db, sql, *params):
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute(sql, params)]
    finally:
        conn.close()


def execute(db, *statements):
    """Run statements ((sql, params) or sql) on db in one transaction, as an
    application (or an operator with a shell) would, behind ferry's back."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN IMMEDIATE")
        for st in statements:
            sql, params = (st, ()) if isinstance(st, str) else st
            conn.execute(sql, params)
        conn.execute("COMMIT")
    finally:
        conn.close()


def write_bypassing_capture(db, table, sql, params=()):
    """One statement on the source that change capture never sees: ferry's
    triggers on table are dropped for the statement and created again, in
    the same transaction."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    try:
        trig = conn.execute(
            "SELECT name, sql FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = ? "
            "AND name LIKE '\\_ferry\\_%' ESCAPE '\\'", (table,)).fetchall()
        if not trig:
            raise AssertionError("no ferry trigger on %s: is capture installed?" % table)
        conn.execute("BEGIN IMMEDIATE")
        for name, _ in trig:
            conn.execute('DROP TRIGGER "%s"' % name)
        cur = conn.execute(sql, params)
        if cur.rowcount != 1:
            raise AssertionError("bypassing write changed %d rows" % cur.rowcount)
        for _, text in trig:
            conn.execute(text)
        conn.execute("COMMIT")
    finally:
        conn.close()


def diff_set(report_diffs):
    """{(table, kind, ((col, value), ...))} of a report's difference list
    (a value shown as an object, {"blob_hex": ...}, as its sorted items)."""
    out = set()
    for d in report_diffs:
        out.add((d["table"], d["kind"], tuple(sorted(
            (c, tuple(sorted(v.items())) if isinstance(v, dict) else v)
            for c, v in d["key"].items()))))
    return out


def key(**cols):
    return tuple(sorted(cols.items()))


def last_runs(conf, kind):
    st = ft.status_json(conf)
    return sorted((r for r in st.get("runs", []) if r["kind"] == kind), key=lambda r: r["id"])


def siphash13(key, data):
    """SipHash-1-3 (the reference's output read little-endian), written out
    here as the paper gives it: the oracle of the keyed row hash."""
    mask = (1 << 64) - 1
    k0, k1 = struct.unpack("<QQ", key)
    v = [0x736f6d6570736575 ^ k0, 0x646f72616e646f6d ^ k1,
         0x6c7967656e657261 ^ k0, 0x7465646279746573 ^ k1]

    def rotl(x, b):
        return ((x << b) | (x >> (64 - b))) & mask

    def sipround():
        v[0] = (v[0] + v[1]) & mask
        v[1] = rotl(v[1], 13) ^ v[0]
        v[0] = rotl(v[0], 32)
        v[2] = (v[2] + v[3]) & mask
        v[3] = rotl(v[3], 16) ^ v[2]
        v[0] = (v[0] + v[3]) & mask
        v[3] = rotl(v[3], 21) ^ v[0]
        v[2] = (v[2] + v[1]) & mask
        v[1] = rotl(v[1], 17) ^ v[2]
        v[2] = rotl(v[2], 32)

    tail = len(data) & ~7
    for i in range(0, tail, 8):
        m = struct.unpack("<Q", data[i:i + 8])[0]
        v[3] ^= m
        sipround()
        v[0] ^= m
    b = (len(data) & 0xff) << 56 | int.from_bytes(data[tail:], "little")
    v[3] ^= b
    sipround()
    v[0] ^= b
    v[2] ^= 0xff
    for _ in range(3):
        sipround()
    return v[0] ^ v[1] ^ v[2] ^ v[3]


def row_encoding(values):
    """checksum.h's encoding of a row of SQLite values."""
    out = b""
    for x in values:
        if x is None:
            out += b"\x00"
        elif isinstance(x, int):
            out += b"\x01" + struct.pack(">q", x)
        elif isinstance(x, float):
            out += b"\x02" + struct.pack(">d", x)
        elif isinstance(x, str):
            out += b"\x03" + struct.pack(">Q", len(x.encode())) + x.encode()
        else:
            out += b"\x04" + struct.pack(">Q", len(x)) + bytes(x)
    return out


def as_int64(u):
    return u - (1 << 64) if u >= 1 << 63 else u


# The sample app's rows that PostgreSQL text cannot hold (NUL bytes,
# invalid UTF-8), left out of the SQLite sources copied to PostgreSQL, as
# test_pg leaves them out.
NOT_FOR_PG_TEXT = (
    "DELETE FROM kinds WHERE (typeof(v) = 'text' AND (instr(v, char(0)) > 0 "
    "OR CAST(v AS BLOB) = x'fffe')) OR (typeof(v) = 'blob' AND instr(v, x'00') > 0)",
    "DELETE FROM settings WHERE key = 'logo'")


class VerifyCase(ft.FerryTestCase):
    """Helpers: run verify, read its JSON, compare with the oracle."""

    def verify(self, *args, expect=None, conf=None):
        cp = ft.run_dst(["verify", "--config", conf or self.dst_conf] + list(args))
        if expect is not None:
            self.assertEqual(cp.returncode, expect,
                             "ferry-dst verify %s: exit %d, expected %d\nstdout: %s\nstderr: %s"
                             % (" ".join(args), cp.returncode, expect, cp.stdout[-4000:],
                                cp.stderr[-4000:]))
        return cp

    def verify_json(self, *args, expect=None, conf=None):
        cp = self.verify("--json", *args, expect=expect, conf=conf)
        try:
            return json.loads(cp.stdout)
        except ValueError as e:
            raise AssertionError("verify --json is not JSON (%s): %r" % (e, cp.stdout[-2000:]))

    def assertTenantEqual(self, tenant, dst_db=None):
        """The tenant's rows on the target are the oracle's rows on the source."""
        for t in ft.IN_SCOPE:
            self.assertTableEqual(ft.tenant_rows(self.src_db, t, tenant),
                                  ft.tenant_rows(dst_db or self.dst_db, t, tenant), t)

    def assertCounts(self, rep, oracle):
        """The report's source and target row counts of each table of oracle
        (table -> the tenant's rows, counted by SQL on the source)."""
        by_table = {t["table"]: t for t in rep["tables"]}
        for t, n in oracle.items():
            self.assertEqual((by_table[t]["source_rows"], by_table[t]["target_rows"]), (n, n), t)

    def assertEqualReport(self, rep, tenant):
        self.assertTrue(rep["equal"], rep)
        self.assertEqual(rep["differences"], [])
        names = [t["table"] for t in rep["tables"]]
        self.assertEqual(sorted(names), sorted(ft.IN_SCOPE))
        for t in rep["tables"]:
            n = len(ft.tenant_rows(self.src_db, t["table"], tenant))
            self.assertEqual((t["source_rows"], t["target_rows"]), (n, n), t)
            self.assertEqual(t["source_checksum"], t["target_checksum"], t)
            self.assertTrue(t["equal"], t)

    def second_tenant_on_target(self, url, tenant=2):
        """Sync tenant into the same target database with its own state and
        config (a target that hosts two teams); returns that config."""
        self.make_target(url, tenant=tenant)
        self.sync()
        state2 = self.path("state%s" % tenant)
        os.rename(self.state, state2)
        conf2 = self.path("dst%s.conf" % tenant)
        with open(self.dst_conf) as f:
            text = f.read()
        self.assertIn("state = %s\n" % os.path.abspath(self.state), text)
        with open(conf2, "w") as f:
            f.write(text.replace("state = %s\n" % os.path.abspath(self.state),
                                 "state = %s\n" % state2))
        os.unlink(self.dst_conf)
        return conf2



class VerifyTest(VerifyCase):
    """SQLite to SQLite, the sample app."""

    def test_unchanged_team_is_equal_and_untouched(self):
        self.make_source(teams=3, posts_per_team=200)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync()
            src_before = ft.db_dump(self.src_db)
            dst_before = ft.db_dump(self.dst_db)

            cp = self.verify(expect=0)
            self.assertIn("result: equal", cp.stdout)
            rep = self.verify_json(expect=0)
            self.assertEqualReport(rep, 1)
            self.assertIsNone(rep["repair"])
            self.assertEqual(rep["code"], "OK")

            # --repair on an equal team repairs nothing
            rep = self.verify_json("--repair", expect=0)
            self.assertEqualReport(rep, 1)
            self.assertIsNone(rep["repair"])

            self.assertUnchanged(dst_before, self.dst_db, "verify of an unchanged team")
            self.assertUnchanged(src_before, self.src_db, "verify (source side)")
            runs = last_runs(self.dst_conf, "verify")
            self.assertEqual([(r["code"], r["upserted"], r["deleted"]) for r in runs],
                             [("OK", 0, 0)] * 3, runs)

    def test_rows_without_a_key_are_reported(self):
        """SQLite lets a rowid table hold a NULL in a key that is not its
        INTEGER PRIMARY KEY. Such rows have no key to copy or repair them
        by: install warns of them, and verify counts the tenant's (in a
        table scoped by a predicate and in one scoped by a foreign key),
        and only the tenant's, as not equal (exit 1), with or without
        --repair, which writes nothing for them. Given keys, they come
        with the next sync and verify says equal. Oracle: SQL counts over
        the source, tenant by tenant."""
        self.make_source(teams=3, posts_per_team=20, install=False)
        ft.on_source(self.src_db,
                     "CREATE TABLE labels(code TEXT PRIMARY KEY, "
                     "channel_id INTEGER REFERENCES channels(id), note TEXT)",
                     "INSERT INTO labels SELECT 'l' || id, id, 'keyed' FROM channels",
                     "INSERT INTO labels SELECT NULL, id, 'no key' FROM channels "
                     "WHERE team_id IN (1, 2)",
                     "INSERT INTO tags VALUES (NULL, 1), (NULL, 1), (NULL, 2)")
        cp = ft.run_src(["install", "--config", self.src_conf])
        self.assertEqual(cp.returncode, 0, cp.stderr)
        for table in ("labels", "tags"):
            n = ft.query(self.src_db, "SELECT count(*) FROM %s WHERE %s IS NULL"
                         % (table, "code" if table == "labels" else "name"))[0][0]
            self.assertIn("%s has %d rows with a NULL in their primary key" % (table, n),
                          cp.stderr)
        unkeyed = {
            "labels": ft.query(self.src_db, "SELECT count(*) FROM labels l JOIN channels c "
                                            "ON c.id = l.channel_id WHERE c.team_id = 1 "
                                            "AND l.code IS NULL")[0][0],
            "tags": ft.query(self.src_db, "SELECT count(*) FROM tags WHERE team_ref = 1 "
                                          "AND name IS NULL")[0][0]}
        self.assertEqual(unkeyed["tags"], 2)
        self.assertGreater(unkeyed["labels"], 0)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync()
            for args in ((), ("--repair",)):
                rep = self.verify_json(*args, expect=1)
                self.assertFalse(rep["equal"])
                by_table = {t["table"]: t for t in rep["tables"]}
                for t in rep["tables"]:
                    self.assertEqual(t["unkeyed"], unkeyed.get(t["table"], 0), t)
                    self.assertEqual(t["equal"], t["table"] not in unkeyed, t)
                    self.assertEqual(t["missing"] + t["extra"] + t["differs"], 0, t)
                self.assertEqual(by_table["tags"]["source_rows"],
                                 ft.query(self.src_db, "SELECT count(*) FROM tags "
                                                       "WHERE team_ref = 1 AND name IS NOT "
                                                       "NULL")[0][0])
                if args:
                    self.assertEqual((rep["repair"] or {}).get("upserted", 0), 0)
            cp = self.verify(expect=1)
            self.assertIn("with a NULL in their primary key: ferry cannot copy them", cp.stdout)
            self.assertIn("NULL in their primary key on the source", cp.stderr)
            self.assertRegex(cp.stderr, r"\d+ rows of (labels|tags) \(and any other")
            # the table's line does not call it equal
            self.assertRegex(cp.stderr, r"verify tags: \d+ rows equal, %d more on the source "
                                        r"without a key" % unkeyed["tags"])
            self.assertNotRegex(cp.stderr, r"verify tags: \d+ rows, equal")
            ft.on_source(self.src_db, "UPDATE labels SET code = 'fixed' || rowid "
                                      "WHERE code IS NULL",
                         "UPDATE tags SET name = 'fixed' || rowid WHERE name IS NULL")
            self.sync()
            rep = self.verify_json(expect=0)
            self.assertTrue(rep["equal"])
            self.assertEqual(ft.query(self.dst_db, "SELECT count(*) FROM labels "
                                                   "WHERE note = 'no key'")[0][0],
                             unkeyed["labels"])
            self.assertEqual(ft.query(self.dst_db, "SELECT count(*) FROM tags "
                                                   "WHERE name LIKE 'fixed%'")[0][0], 2)

    def test_finds_and_repairs_exact_keys(self):
        self.make_source(teams=3, posts_per_team=200)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync()
            db = self.dst_db
            posts = ids(self.src_db, "SELECT p.id FROM posts p JOIN channels c "
                        "ON c.id = p.channel_id WHERE c.team_id = 1 AND NOT EXISTS "
                        "(SELECT 1 FROM reactions r WHERE r.post_id = p.id) ORDER BY p.id")
            chan = ids(self.src_db, "SELECT id FROM channels WHERE team_id = 1 ORDER BY id")[0]
            changed, deleted, bypassed = posts[3], posts[10], posts[20]
            reaction = sqlite3.connect(self.src_db).execute(
                "SELECT r.post_id, r.emoji, r.user_id FROM reactions r JOIN posts p "
                "ON p.id = r.post_id JOIN channels c ON c.id = p.channel_id "
                "WHERE c.team_id = 1 ORDER BY 1, 2, 3 LIMIT 1 OFFSET 7").fetchone()
            execute(db,
                    ("UPDATE posts SET body = 'tampered' WHERE id = ?", (changed,)),
                    ("DELETE FROM posts WHERE id = ?", (deleted,)),
                    ("INSERT INTO posts(id, channel_id, user_id, body, score, data) "
                     "VALUES (900500, ?, 1, 'extra', 1.5, NULL)", (chan,)),
                    ("DELETE FROM reactions WHERE post_id = ? AND emoji = ? AND user_id = ?",
                     reaction),
                    "UPDATE settings SET value = 'light' WHERE team_id = 1 AND key = 'theme'")
            write_bypassing_capture(self.src_db, "posts",
                                    "UPDATE posts SET score = 42.5, body = 'unseen' WHERE id = ?",
                                    (bypassed,))
            # The premise: a sync does not see the bypassing write.
            self.sync()
            self.assertNotEqual(
                [r for r in ft.tenant_rows(self.src_db, "posts", 1) if r[0][1] == bypassed],
                [r for r in ft.tenant_rows(db, "posts", 1) if r[0][1] == bypassed])
            expected = {
                ("posts", "differs", key(id=changed)),
                ("posts", "missing", key(id=deleted)),
                ("posts", "extra", key(id=900500)),
                ("posts", "differs", key(id=bypassed)),
                ("reactions", "missing", key(post_id=reaction[0], emoji=reaction[1],
                                             user_id=reaction[2])),
                ("settings", "differs", key(team_id=1, key="theme")),
            }
            before = ft.db_dump(db)

            rep = self.verify_json(expect=1)
            self.assertFalse(rep["equal"])
            self.assertEqual(rep["code"], "EMISMATCH")
            self.assertEqual(diff_set(rep["differences"]), expected)
            self.assertEqual(rep["differences_total"], len(expected))
            by_table = {t["table"]: t for t in rep["tables"]}
            self.assertEqual((by_table["posts"]["missing"], by_table["posts"]["extra"],
                              by_table["posts"]["differs"]), (1, 1, 2))
            for t in ("teams", "channels", "tags", "kinds"):
                self.assertTrue(by_table[t]["equal"], by_table[t])

            cp = self.verify(expect=1)
            for line in ("posts id=%d: differs" % changed,
                         "posts id=%d: missing on target" % deleted,
                         "posts id=900500: extra on target",
                         "posts id=%d: differs" % bypassed,
                         "reactions post_id=%d, emoji='%s', user_id=%d: missing on target"
                         % reaction,
                         "settings team_id=1, key='theme': differs"):
                self.assertIn(line, cp.stdout)
            self.assertIn("differences", cp.stderr)
            self.assertUnchanged(before, db, "verify without --repair")

            rep = self.verify_json("--repair", expect=0)
            self.assertTrue(rep["equal"], rep)
            self.assertEqual(diff_set(rep["differences"]), expected)
            self.assertEqual((rep["repair"]["upserted"], rep["repair"]["deleted"]), (5, 1))
            self.assertEqual(rep["repair"]["remaining"], [])
            self.assertTenantEqual(1)
            rep = self.verify_json(expect=0)
            self.assertEqualReport(rep, 1)

            runs = last_runs(self.dst_conf, "verify")
            self.assertEqual([(r["code"], r["upserted"], r["deleted"]) for r in runs],
                             [("EMISMATCH", 0, 0), ("EMISMATCH", 0, 0), ("OK", 5, 1),
                              ("OK", 0, 0)], runs)
            # and in the run log beside the state, the repair's writes with them
            with open(os.path.join(self.state, "runs.log")) as f:
                events = [json.loads(line) for line in f]
            vruns = [e["run"] for e in events if e["event"] == "start" and e["kind"] == "verify"]
            self.assertEqual([(e["code"], e["upserted"], e["deleted"]) for e in events
                              if e["event"] == "end" and e["run"] in vruns],
                             [(r["code"], r["upserted"], r["deleted"]) for r in runs])

    def test_column_the_target_lacks(self):
        """A column added on the source and not yet on the target: verify
        says so as sync does (exit 5), and lists the table as not compared,
        where it used to print the server's SQL error and the table as
        "0 rows equal"."""
        self.make_source(teams=2, posts_per_team=20)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync()
            execute(self.src_db, "ALTER TABLE posts ADD COLUMN note TEXT")
            cp = self.verify(expect=5)
            self.assertIn("target table posts has no column note, which the source has; add it "
                          "(ALTER TABLE posts ADD COLUMN note)", cp.stderr)
            self.assertNotIn("no such column", cp.stdout + cp.stderr)
            self.assertRegex(cp.stdout, r"(?m)^  posts +not compared$")
            self.assertNotRegex(cp.stdout, r"(?m)^  posts .*equal")
            rep = self.verify_json(expect=5)
            by_table = {t["table"]: t for t in rep["tables"]}
            self.assertEqual((by_table["posts"]["compared"], by_table["posts"]["equal"]),
                             (False, None))
            self.assertEqual((by_table["teams"]["compared"], by_table["teams"]["equal"]),
                             (True, True))
            self.assertEqual(rep["code"], "ESCHEMA")

    def test_repair_that_makes_orphans_the_tenants_again(self):
        """Posts deleted on the target behind ferry's back, foreign keys off,
        leave their reactions there as orphans, which are no tenant's, so
        verify does not see them. The repair brings the posts back, and with
        them the orphans that the source no longer has: now the tenant's,
        extra. One post's only reaction sits in a table that did not differ
        before the repair, the other's beside a reaction that did. --repair
        compares again the tables under the ones it wrote, and repairs
        again what its own writes made differ."""
        self.make_source(teams=2, posts_per_team=200)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync()
            with_one = sqlite3.connect(self.src_db).execute(
                "SELECT r.post_id, r.emoji, r.user_id FROM reactions r JOIN posts p "
                "ON p.id = r.post_id JOIN channels c ON c.id = p.channel_id "
                "WHERE c.team_id = 1 AND (SELECT count(*) FROM reactions x "
                "WHERE x.post_id = r.post_id) = 1 ORDER BY 1 LIMIT 2").fetchall()
            self.assertEqual(len(with_one), 2, "the sample app has posts with one reaction")
            (lone_post, *lone), (pair_post, *pair) = with_one
            # the second post gets a second reaction, synced
            execute(self.src_db, ("INSERT INTO reactions(post_id, emoji, user_id) "
                                  "VALUES (?, ':two:', 7)", (pair_post,)))
            self.sync()
            for post, reaction, written in ((lone_post, lone, 1), (pair_post, pair, 2)):
                # behind ferry's back on the target, foreign keys off: the post goes,
                # its reactions stay, orphaned
                execute(self.dst_db, ("DELETE FROM posts WHERE id = ?", (post,)))
                self.assertEqual(ft.query(self.dst_db, "SELECT count(*) FROM reactions "
                                          "WHERE post_id = ?", post)[0][0], written)
                # and on the source, capture bypassed: a reaction of it goes
                write_bypassing_capture(self.src_db, "reactions", "DELETE FROM reactions "
                                        "WHERE post_id = ? AND emoji = ? AND user_id = ?",
                                        (post, *reaction))

                rep = self.verify_json("--repair", expect=0)
                self.assertTrue(rep["equal"], rep)
                self.assertEqual(rep["repair"]["remaining"], [])
                # the post (and the pair's other reaction) written, the orphan deleted
                self.assertEqual((rep["repair"]["upserted"], rep["repair"]["deleted"]),
                                 (written, 1), rep)
                self.assertTenantEqual(1)
                self.assertEqual(ft.query(self.dst_db, "SELECT count(*) FROM reactions "
                                          "WHERE post_id = ?", post)[0][0], written - 1)
                self.assertEqualReport(self.verify_json(expect=0), 1)

    def test_spread_differences_one_split(self):
        """A SQLite source sends a big table's total in leaf-size ranges
        (up to 1,024): differences spread over it cost a leaf each, no
        second split (before: 32 ranges that all differed, split again)."""
        self.make_source(teams=2, posts_per_team=100)
        chan = ids(self.src_db, "SELECT id FROM channels WHERE team_id = 1 ORDER BY id")[0]
        execute(self.src_db, ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                              "WHERE i < 40000) INSERT INTO posts(id, channel_id, user_id, body, "
                              "score, data) SELECT 100000 + i, ?, 1, 'bulk ' || i, i / 4.0, NULL "
                              "FROM n", (chan,)))
        spread = [100000 + i for i in range(1000, 40001, 2000)]
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync()
            execute(self.dst_db, "UPDATE posts SET body = 'spread' WHERE id IN (%s)"
                    % ",".join(map(str, spread)))
            rep = self.verify_json(expect=1)
            self.assertEqual(diff_set(rep["differences"]),
                             {("posts", "differs", key(id=i)) for i in spread})
            # the manifest, each table's total (with its split), a leaf per difference
            self.assertLessEqual(rep["requests"], 1 + len(rep["tables"]) + len(spread), rep)
            rep = self.verify_json("--repair", expect=0)
            self.assertEqual(rep["repair"]["upserted"], len(spread))
            self.assertTenantEqual(1)

    def test_other_tenant_never_read_reported_nor_touched(self):
        self.make_source(teams=3, posts_per_team=150)
        with self.serve() as srv:
            conf2 = self.second_tenant_on_target(srv.url, tenant=2)
            self.make_target(srv.url, tenant=1)
            self.sync()
            db = self.dst_db
            self.assertTenantEqual(1)
            self.assertTenantEqual(2)
            p2 = [r[0][1] for r in ft.tenant_rows(db, "posts", 2)]
            c2 = [r[0][1] for r in ft.tenant_rows(db, "channels", 2)]
            # Tenant 2's rows on the target drift from its source.
            execute(db,
                    ("UPDATE posts SET body = 'team 2 local edit' WHERE id = ?", (p2[0],)),
                    ("DELETE FROM posts WHERE id = ?", (p2[1],)),
                    ("INSERT INTO posts(id, channel_id, body) VALUES (900900, ?, 'local')",
                     (c2[0],)),
                    "UPDATE teams SET name = 'Two, renamed here' WHERE id = 2",
                    "INSERT INTO tags(name, team_ref) VALUES ('local-2', 2)")
            before = ft.db_dump(db)
            rep = self.verify_json(expect=0)
            self.assertEqualReport(rep, 1)
            rep = self.verify_json("--repair", expect=0)
            self.assertIsNone(rep["repair"])
            self.assertUnchanged(before, db, "verify --repair of tenant 1 (tenant 2 drifted)")

            # A difference of tenant 1 is repaired; tenant 2's rows stay as they were. The
            # deleted post's reactions are left without a parent on the target: orphans
            # belong to no tenant, so they too are missing from tenant 1.
            p1 = [r[0][1] for r in ft.tenant_rows(db, "posts", 1)][0]
            orphans = sqlite3.connect(db).execute(
                "SELECT post_id, emoji, user_id FROM reactions WHERE post_id = ?", (p1,)).fetchall()
            self.assertGreater(len(orphans), 0, "the sample's first post has reactions")
            execute(db, ("DELETE FROM posts WHERE id = ?", (p1,)))
            t2_before = {t: ft.tenant_rows(db, t, 2) for t in ft.IN_SCOPE}
            rep = self.verify_json("--repair", expect=0)
            self.assertEqual(diff_set(rep["differences"]),
                             {("posts", "missing", key(id=p1))} |
                             {("reactions", "missing", key(post_id=a, emoji=b, user_id=c))
                              for a, b, c in orphans})
            self.assertTenantEqual(1)
            for t in ft.IN_SCOPE:
                self.assertEqual(ft.tenant_rows(db, t, 2), t2_before[t],
                                 "tenant 2's %s touched by tenant 1's repair" % t)

            # Tenant 2's own verify sees exactly its drift.
            rep = self.verify_json(conf=conf2, expect=1)
            self.assertEqual(diff_set(rep["differences"]), {
                ("posts", "differs", key(id=p2[0])),
                ("posts", "missing", key(id=p2[1])),
                ("posts", "extra", key(id=900900)),
                ("teams", "differs", key(id=2)),
                ("tags", "extra", key(name="local-2")),
            })

    def test_repair_meets_a_clash(self):
        """--repair when the target holds one of the tenant's rows for
        another tenant (a post moved there behind ferry's back): the clash
        is the result (exit 5), but the repair's deletes still go (an
        extra tag is gone; the repair stopped at its first clash and
        deleted nothing before), the JSON says it did not compare again and
        lists what it set out to fix (it listed nothing). The tables ferry
        made there refuse a NULL key (a text key took one, unseen by
        verify). Oracle: SQL over the target."""
        self.make_source(teams=2, posts_per_team=50)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync()
            db = self.dst_db
            p1 = [r[0][1] for r in ft.tenant_rows(db, "posts", 1)][0]
            execute(db, "INSERT INTO teams(id, name) VALUES (2, 'Team 2')",
                    "INSERT INTO channels(id, team_id, name) VALUES (900001, 2, 'x')",
                    "INSERT INTO tags(name, team_ref) VALUES ('extra-x', 1)",
                    ("UPDATE posts SET channel_id = 900001 WHERE id = ?", (p1,)))
            rep = self.verify_json("--repair", expect=5)
            self.assertIn(("tags", "extra", key(name="extra-x")), diff_set(rep["differences"]))
            self.assertIn(("posts", "missing", key(id=p1)), diff_set(rep["differences"]))
            self.assertEqual((rep["repair"]["deleted"], rep["repair"]["compared_again"]),
                             (1, False), rep["repair"])
            self.assertEqual(diff_set(rep["repair"]["remaining"]), diff_set(rep["differences"]))
            self.assertEqual(sqlite3.connect(db).execute(
                "SELECT count(*) FROM tags WHERE name = 'extra-x'").fetchone(), (0,))
            cp = self.verify("--repair", expect=5)
            self.assertIn("still differing after repair: some of the differences above",
                          cp.stdout)
            # the tables ferry makes on SQLite hold no NULL key, which verify could not see
            with self.assertRaises(sqlite3.IntegrityError):
                execute(db, "INSERT INTO tags(name, team_ref) VALUES (NULL, 1)")

    def test_missing_target_table_and_extra_children(self):
        self.make_source(teams=2, posts_per_team=100)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync()
            db = self.dst_db
            chan = ids(self.src_db, "SELECT id FROM channels WHERE team_id = 1 ORDER BY id")[0]
            # An extra channel of the tenant with an extra post and reaction under it.
            execute(db, "DROP TABLE tags",
                    ("INSERT INTO channels(id, team_id, name) VALUES (700000, 1, 'local')", ()),
                    "INSERT INTO posts(id, channel_id, body) VALUES (700001, 700000, 'local')",
                    "INSERT INTO reactions(post_id, emoji, user_id) VALUES (700001, 'x', 1)")
            rep = self.verify_json(expect=1)
            tags = {("tags", "missing", key(name="team1-tag%d" % i)) for i in range(5)}
            self.assertEqual(diff_set(rep["differences"]), tags | {
                ("channels", "extra", key(id=700000)),
                ("posts", "extra", key(id=700001)),
                ("reactions", "extra", key(post_id=700001, emoji="x", user_id=1)),
            })
            by_table = {t["table"]: t for t in rep["tables"]}
            self.assertEqual((by_table["tags"]["source_rows"], by_table["tags"]["target_rows"]),
                             (5, 0))
            rep = self.verify_json("--repair", expect=0)
            self.assertEqual((rep["repair"]["upserted"], rep["repair"]["deleted"]), (5, 3))
            self.assertTenantEqual(1)
            self.assertIn("tags", ft.table_names(db))
            self.assertEqual(ids(db, "SELECT count(*) FROM posts WHERE channel_id = ?", chan),
                             ids(self.src_db, "SELECT count(*) FROM posts WHERE channel_id = ?",
                                 chan))

    def test_masked_columns_verify(self):
        self.make_source(teams=2, posts_per_team=100)
        with open(self.src_conf, "a") as f:
            f.write("\n[mask]\nposts.body = 'post ' || id\n")
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync()
            bodies = ids(self.dst_db, "SELECT DISTINCT body FROM posts WHERE body NOT LIKE 'post %'")
            self.assertEqual(bodies, [], "mask not applied: the test's premise")
            self.verify_json(expect=0)
            p = ids(self.dst_db, "SELECT min(id) FROM posts")[0]
            execute(self.dst_db, ("UPDATE posts SET body = 'real body' WHERE id = ?", (p,)))
            rep = self.verify_json("--repair", expect=0)
            self.assertEqual(diff_set(rep["differences"]), {("posts", "differs", key(id=p))})
            self.assertEqual(ids(self.dst_db, "SELECT body FROM posts WHERE id = ?", p),
                             ["post %d" % p])

    def test_fresh_key_each_verify(self):
        """Rows are hashed under a key drawn for each verify: two verifies of
        the same rows report other checksums, each equal on both sides."""
        self.make_source(teams=2, posts_per_team=50)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync()
            first = self.verify_json(expect=0)
            second = self.verify_json(expect=0)
        self.assertEqualReport(first, 1)
        self.assertEqualReport(second, 1)
        sums = lambda rep: {t["table"]: t["source_checksum"] for t in rep["tables"]
                            if t["source_rows"]}
        self.assertEqual(set(sums(first)), set(sums(second)))
        for t in sums(first):
            self.assertNotEqual(sums(first)[t], sums(second)[t], t)

    def test_old_source_falls_back_to_sha256(self):
        """A source from before the keyed hash refuses the request's key: the
        target verifies with SHA-256 (the checksums are the rows' SHA-256,
        computed here), still finds a changed row, and says so once. The old
        source is FERRY_OLD_SRC, or built here from this repository's
        history (ferrytest.old_source)."""
        old = ft.old_source()
        self.make_source(teams=2, posts_per_team=50)
        new_src, ft.FERRY_SRC = ft.FERRY_SRC, old
        try:
            with self.serve() as srv:
                self.make_target(srv.url, tenant=1)
                self.sync()
                cp = self.verify("--json", expect=0)
                rep = json.loads(cp.stdout)
                self.assertEqualReport(rep, 1)
                self.assertEqual(cp.stderr.count("does not know the keyed row hash"), 1, cp.stderr)
                con = sqlite3.connect(self.src_db)
                rows = con.execute("SELECT * FROM channels WHERE team_id = 1").fetchall()
                con.close()
                want = sum(int.from_bytes(hashlib.sha256(row_encoding(r)).digest()[:8], "big")
                           for r in rows) % (1 << 64)
                got = [t["source_checksum"] for t in rep["tables"] if t["table"] == "channels"]
                self.assertEqual(got, ["%016x" % want])
                p = ids(self.dst_db, "SELECT id FROM posts ORDER BY id LIMIT 1 OFFSET 5")[0]
                execute(self.dst_db, ("UPDATE posts SET body = 'x' WHERE id = ?", (p,)))
                rep = self.verify_json(expect=1)
                self.assertEqual(diff_set(rep["differences"]), {("posts", "differs", key(id=p))})
        finally:
            ft.FERRY_SRC = new_src

    def test_verify_needs_the_source(self):
        self.make_source(teams=1, posts_per_team=10)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync()
        before = ft.db_dump(self.dst_db)
        cp = self.verify(expect=4)
        self.assertIn("source", cp.stderr)
        self.assertUnchanged(before, self.dst_db, "verify with the source down")
        runs = last_runs(self.dst_conf, "verify")
        self.assertEqual([r["code"] for r in runs], ["EUNREACHABLE"])


class DigestEndpointTest(ft.FerryTestCase):
    """POST /v1/digest and /v1/rows by hand: scoped to the tenant, strict."""

    def post(self, url, path, obj):
        st, body = ft.http_post(url, path, ft.mp_pack(obj))
        return st, ft.mp_unpack(body) if body else None

    def test_digest_and_rows(self):
        self.make_source(teams=3, posts_per_team=120, auth=False)
        with self.serve() as srv:
            for tenant in (1, 2):
                for t in ft.IN_SCOPE:
                    st, rep = self.post(srv.url, "/v1/digest",
                                        {"v": 1, "tenant": str(tenant), "table": t,
                                         "lo": None, "hi": None, "parts": 4})
                    self.assertEqual(st, 200, rep)
                    n = len(ft.tenant_rows(self.src_db, t, tenant))
                    self.assertEqual(sum(r[1] for r in rep["ranges"]), n, (tenant, t, rep))
                    self.assertEqual(len(rep["ranges"]), min(4, n))
            # One range per row: its first key is a key of the tenant, nothing else.
            st, rep = self.post(srv.url, "/v1/digest", {"v": 1, "tenant": "2", "table": "posts",
                                                        "lo": None, "hi": None, "parts": 1024})
            self.assertEqual(st, 200)
            self.assertEqual([r[0][0] for r in rep["ranges"]],
                             [r[0][1] for r in ft.tenant_rows(self.src_db, "posts", 2)])
            self.assertTrue(all(r[1] == 1 for r in rep["ranges"]))
            # Bounds: [lo, hi)
            keys = [r[0][1] for r in ft.tenant_rows(self.src_db, "posts", 1)]
            st, rep = self.post(srv.url, "/v1/digest",
                                {"v": 1, "tenant": "1", "table": "posts", "lo": [keys[10]],
                                 "hi": [keys[20]], "parts": 1024})
            self.assertEqual([r[0][0] for r in rep["ranges"]], keys[10:20])

            # rows: tenant 1's keys come back as rows, tenant 2's as tombstones only.
            mine = keys[:3]
            theirs = [r[0][1] for r in ft.tenant_rows(self.src_db, "posts", 2)][:3]
            st, batch = self.post(srv.url, "/v1/rows", {"v": 1, "tenant": "1", "table": "posts",
                                                        "keys": [[k] for k in mine + theirs]})
            self.assertEqual(st, 200, batch)
            sets = {(s["table"], s["op"]): s for s in batch["sets"]}
            self.assertEqual(set(sets), {("posts", "upsert"), ("posts", "delete")})
            self.assertEqual([r[0] for r in sets[("posts", "upsert")]["rows"]], mine)
            self.assertEqual(sorted(r[0] for r in sets[("posts", "delete")]["rows"]),
                             sorted(theirs))
            self.assertEqual(sets[("posts", "delete")]["cols"], ["id"])

            bad = [
                ("/v1/digest", {"v": 1, "tenant": "1", "table": "audit_log", "lo": None,
                                "hi": None, "parts": 1}, 404, "ENOTFOUND"),
                ("/v1/digest", {"v": 1, "tenant": "1", "table": "users", "lo": None,
                                "hi": None, "parts": 1}, 404, "ENOTFOUND"),
                ("/v1/digest", {"v": 1, "tenant": "999", "table": "posts", "lo": None,
                                "hi": None, "parts": 1}, 404, "ENOTFOUND"),
                ("/v1/digest", {"v": 1, "tenant": "1", "table": "posts", "lo": None,
                                "hi": None, "parts": 0}, 400, "EPROTO"),
                ("/v1/digest", {"v": 1, "tenant": "1", "table": "posts", "lo": None,
                                "hi": None, "parts": 1025}, 400, "EPROTO"),
                ("/v1/digest", {"v": 1, "tenant": "1", "table": "posts", "lo": [1, 2],
                                "hi": None, "parts": 2}, 400, "EDATA"),
                ("/v1/digest", {"v": 1, "tenant": "1", "table": "posts", "lo": None,
                                "hi": None, "parts": 2, "rows": True}, 400, "EPROTO"),
                ("/v1/rows", {"v": 1, "tenant": "1", "table": "posts", "keys": []}, 400,
                 "EPROTO"),
                ("/v1/rows", {"v": 1, "tenant": "1", "table": "posts",
                              "keys": [[1]] * 1001}, 400, "ETOOBIG"),
                ("/v1/rows", {"v": 1, "tenant": "1", "table": "reactions", "keys": [[1]]},
                 400, "EPROTO"),
                ("/v1/rows", {"v": 1, "tenant": "1", "table": "audit_log", "keys": [[1]]},
                 404, "ENOTFOUND"),
            ]
            for path, obj, status, code in bad:
                st, rep = self.post(srv.url, path, obj)
                self.assertEqual((st, rep.get("code") if isinstance(rep, dict) else rep),
                                 (status, code), (path, obj if len(str(obj)) < 300 else path))
            # still answering
            st, rep = self.post(srv.url, "/v1/digest", {"v": 1, "tenant": "1", "table": "teams",
                                                        "lo": None, "hi": None, "parts": 1})
            self.assertEqual((st, [r[0] for r in rep["ranges"]]), (200, [[1]]))

    def test_digest_reads_owners_anew(self):
        """A digest of all of posts keeps the keys it read with the source's
        connection, and a digest of reactions then checks its rows' owner
        against them instead of joining posts, while the database is as it
        was. After another connection moves posts (and with them their
        reactions) between teams and deletes one, the next reactions digest
        is the oracle's of the database as it is now, row by row (SQL and a
        hash computed here)."""
        self.make_source(teams=3, posts_per_team=150, auth=False)
        oracle = {
            "channels": "SELECT * FROM channels WHERE team_id = 1 ORDER BY id",
            "posts": "SELECT * FROM posts WHERE channel_id IN (SELECT id FROM channels WHERE"
                     " team_id = 1) ORDER BY id",
            "reactions": "SELECT * FROM reactions WHERE post_id IN (SELECT id FROM posts WHERE"
                         " channel_id IN (SELECT id FROM channels WHERE team_id = 1))"
                         " ORDER BY post_id, emoji, user_id",
        }
        npk = {"channels": 1, "posts": 1, "reactions": 3}

        def expect(srv, table):
            con = sqlite3.connect(self.src_db)
            rows = con.execute(oracle[table]).fetchall()
            con.close()
            self.assertTrue(0 < len(rows) <= 1024, len(rows))
            st, rep = self.post(srv.url, "/v1/digest", {"v": 1, "tenant": "1", "table": table,
                                                        "lo": None, "hi": None, "parts": 1024})
            self.assertEqual(st, 200, rep)
            got = [(tuple(r[0]), r[1], r[2]) for r in rep["ranges"]]
            want = [(tuple(r[:npk[table]]), 1,
                     as_int64(int.from_bytes(hashlib.sha256(row_encoding(r)).digest()[:8], "big")))
                    for r in rows]
            self.assertEqual(got, want, table)
            return got

        con = sqlite3.connect(self.src_db)
        with_reactions = lambda team: [r[0] for r in con.execute(
            "SELECT DISTINCT p.id FROM posts p JOIN channels c ON c.id = p.channel_id"
            " JOIN reactions r ON r.post_id = p.id WHERE c.team_id = ? ORDER BY p.id", (team,))]
        mine, theirs = with_reactions(1), with_reactions(2)
        other_channel = con.execute("SELECT min(id) FROM channels WHERE team_id = 2").fetchone()[0]
        my_channel = con.execute("SELECT min(id) FROM channels WHERE team_id = 1").fetchone()[0]
        con.close()
        self.assertTrue(len(mine) > 2 and theirs)
        with self.serve() as srv:
            expect(srv, "reactions")
            expect(srv, "posts")
            before = expect(srv, "reactions")
            con = sqlite3.connect(self.src_db)
            con.execute("UPDATE posts SET channel_id = ? WHERE id = ?", (other_channel, mine[0]))
            con.execute("DELETE FROM posts WHERE id = ?", (mine[1],))  # its reactions stay
            con.execute("UPDATE posts SET channel_id = ? WHERE id = ?", (my_channel, theirs[0]))
            con.commit()
            con.close()
            after = expect(srv, "reactions")
            self.assertNotEqual(after, before)
            self.assertEqual({k[0] for k, _, _ in after} - {k[0] for k, _, _ in before},
                             {theirs[0]})
            self.assertEqual({k[0] for k, _, _ in before} - {k[0] for k, _, _ in after},
                             {mine[0], mine[1]})
            expect(srv, "posts")
            expect(srv, "reactions")
            # posts by the keys of channels (kept by its digest), until a channel moves
            expect(srv, "channels")
            expect(srv, "posts")
            con = sqlite3.connect(self.src_db)
            moved = con.execute("SELECT channel_id FROM posts WHERE id = ?",
                                (mine[2],)).fetchone()[0]
            con.execute("UPDATE channels SET team_id = 2 WHERE id = ?", (moved,))
            con.commit()
            con.close()
            gone = {k[0] for k, _, _ in expect(srv, "posts")}
            self.assertNotIn(mine[2], gone)
            self.assertNotIn(mine[2], {k[0] for k, _, _ in expect(srv, "reactions")})
            expect(srv, "channels")
            expect(srv, "posts")
            expect(srv, "reactions")

    def test_digest_hash(self):
        """A digest names its row hash: none is SHA-256, "siphash-1-3" with a
        key of 16 bytes is SipHash under that key; each against a hash of
        the row computed here. Anything else is refused."""
        self.assertEqual(siphash13(bytes(range(16)), bytes(range(15))), 0xd320d86d2a519956)
        self.make_source(teams=2, posts_per_team=20, auth=False)
        con = sqlite3.connect(self.src_db)
        rows = con.execute("SELECT * FROM channels WHERE team_id = 1 ORDER BY id").fetchall()
        con.close()
        key = bytes(range(100, 116))
        base = {"v": 1, "tenant": "1", "table": "channels", "lo": None, "hi": None,
                "parts": 1024}
        with self.serve() as srv:
            st, rep = self.post(srv.url, "/v1/digest", base)
            self.assertEqual(st, 200, rep)
            self.assertEqual([r[2] for r in rep["ranges"]],
                             [as_int64(int.from_bytes(hashlib.sha256(row_encoding(r)).digest()[:8],
                                                      "big")) for r in rows])
            for k in (key, bytes(16)):
                st, rep = self.post(srv.url, "/v1/digest",
                                    dict(base, hash="siphash-1-3", hash_key=k))
                self.assertEqual(st, 200, rep)
                self.assertEqual([r[0][0] for r in rep["ranges"]], [r[0] for r in rows])
                self.assertEqual([r[2] for r in rep["ranges"]],
                                 [as_int64(siphash13(k, row_encoding(r))) for r in rows])
            for extra in ({"hash": "sha-1", "hash_key": key},
                          {"hash": "siphash-1-3", "hash_key": key[:15]},
                          {"hash": "siphash-1-3"}, {"hash_key": key},
                          {"hash": "siphash-1-3", "hash_key": "0123456789abcdef"}):
                st, rep = self.post(srv.url, "/v1/digest", dict(base, **extra))
                self.assertEqual((st, rep.get("code")), (400, "EPROTO"), extra)


# ---------------------------------------------------------------------------
# PostgreSQL to PostgreSQL, with test_pg's schema and data (every type, keys
# of type uuid, bytea, timestamptz and text pairs).

import test_pg as tp  # noqa: E402


class VerifyPgTest(VerifyCase):
    """verify and --repair PG->PG. The cluster is test_pg's (pgcluster.sh);
    without PostgreSQL server binaries the class is skipped, loudly."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        d = os.path.join(ft.FERRY_TEST_TMP, "pgcluster-verify-%d" % os.getpid())
        os.makedirs(ft.FERRY_TEST_TMP, exist_ok=True)
        cp = subprocess.run([tp.PGCLUSTER, "start", d], capture_output=True, text=True)
        if cp.returncode == 77:
            sys.stderr.write("\n%s\ntest_verify: SKIP PostgreSQL cases: no server binaries\n%s\n"
                             % ("*" * 72, "*" * 72))
            raise unittest.SkipTest("no PostgreSQL server binaries")
        if cp.returncode != 0:
            raise AssertionError("pgcluster.sh start: %s%s" % (cp.stdout, cp.stderr))
        bindir = subprocess.run([tp.PGCLUSTER, "bindir"], capture_output=True, text=True,
                                check=True).stdout.strip()
        tp.CLUSTER.update(dir=d, psql=os.path.join(bindir, "psql"), n=0)
        # rows hashed in SQL on PostgreSQL (checksum.c; off by default; SHA-256 only, so
        # only with a peer from before the keyed hash: verify's own digests are hashed in C)
        os.environ["FERRY_PG_HASH_IN_SQL"] = "1"

    @classmethod
    def tearDownClass(cls):
        os.environ.pop("FERRY_PG_HASH_IN_SQL", None)
        tp.stop_cluster()
        tp.CLUSTER.clear()
        super().tearDownClass()

    def pg_pair(self):
        """Source (installed) and an empty target with the same schema; serve() next."""
        self.src_url = tp.createdb("vsrc")
        tp.psql(self.src_url, tp.SCHEMA)
        tp.psql(self.src_url, tp.DATA)
        self.auth = True
        self.authorized = set()
        self.src_conf = ft.write_src_conf(
            self.path("src.conf"), self.src_url, identity=ft.test_key("src"),
            authorized_keys=self.path("authorized_keys"))
        open(self.path("authorized_keys"), "a").close()
        cp = ft.run_src(["install", "--config", self.src_conf])
        self.assertEqual(cp.returncode, 0, "ferry-src install: %s" % cp.stderr)
        self.dst_url = tp.createdb("vdst")
        tp.psql(self.dst_url, tp.SCHEMA)

    def assertPgTenantEqual(self, tenant=1):
        for t in tp.PG_TABLES:
            self.assertTableEqual(tp.pg_rows(self.src_url, t, tenant),
                                  tp.pg_rows(self.dst_url, t, tenant), t)

    def test_pg_verify_and_repair(self):
        self.pg_pair()
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1, db=self.dst_url)
            self.sync()
            self.assertPgTenantEqual()
            rep = self.verify_json(expect=0)
            self.assertTrue(rep["equal"], rep)
            self.assertCounts(rep, {t: len(tp.pg_rows(self.src_url, t, 1)) for t in tp.PG_TABLES})

            q = lambda url, sql: tp.psql(url, sql).strip()  # noqa: E731
            posts = q(self.src_url, "SELECT string_agg(p.id::text, ',' ORDER BY p.id) FROM posts p "
                      "JOIN channels c ON c.id = p.channel_id WHERE c.team_id = 1 AND NOT EXISTS "
                      "(SELECT 1 FROM reactions r WHERE r.post_id = p.id)").split(",")
            changed, deleted, bypassed = (int(posts[i]) for i in (1, 4, 7))
            chan = int(q(self.src_url, "SELECT min(id) FROM channels WHERE team_id = 1"))
            kind = q(self.src_url, "SELECT k.id FROM kinds k JOIN channels c ON c.id = k.channel_id "
                     "WHERE c.team_id = 1 ORDER BY k.id LIMIT 1")
            ev_chan, ev_at = q(self.src_url,
                               "SELECT e.channel_id, e.at FROM events e JOIN channels c "
                               "ON c.id = e.channel_id WHERE c.team_id = 1 ORDER BY 1, 2 "
                               "LIMIT 1").split("|")
            blob = q(self.src_url, "SELECT encode(k, 'hex') FROM blobs WHERE team_id = 1 "
                     "ORDER BY k LIMIT 1")
            tp.psql(self.dst_url, """
                UPDATE posts SET body = 'tampered' WHERE id = %d;
                DELETE FROM posts WHERE id = %d;
                INSERT INTO posts(id, channel_id, body) VALUES (900500, %d, 'extra');
                UPDATE kinds SET f8 = 1 WHERE id = '%s';
                DELETE FROM events WHERE channel_id = %s AND at = '%s';
                UPDATE blobs SET v = 'local' WHERE k = decode('%s', 'hex');
                UPDATE settings SET value = '"light"' WHERE team_id = 1 AND key = 'theme';
                """ % (changed, deleted, chan, kind, ev_chan, ev_at, blob))
            # A write capture never sees: ferry's triggers on posts disabled for the statement
            # (they fire ALWAYS, even for a replica session), in one transaction.
            trig = q(self.src_url, "SELECT string_agg(quote_ident(tgname), ',') FROM pg_trigger "
                     "WHERE tgrelid = 'posts'::regclass AND tgname LIKE '\\_ferry%'").split(",")
            self.assertTrue(trig and trig[0], "no ferry trigger on posts")
            tp.psql(self.src_url, "BEGIN; %s UPDATE posts SET score = 1.5, body = 'unseen' "
                    "WHERE id = %d; %s COMMIT;" % (
                        " ".join("ALTER TABLE posts DISABLE TRIGGER %s;" % t for t in trig),
                        bypassed,
                        " ".join("ALTER TABLE posts ENABLE ALWAYS TRIGGER %s;" % t for t in trig)))
            self.sync()
            self.assertNotEqual(q(self.src_url, "SELECT body FROM posts WHERE id = %d" % bypassed),
                                q(self.dst_url, "SELECT body FROM posts WHERE id = %d" % bypassed),
                                "the bypassing write reached the target: the premise fails")
            expected = {
                ("posts", "differs", key(id=changed)),
                ("posts", "missing", key(id=deleted)),
                ("posts", "extra", key(id=900500)),
                ("posts", "differs", key(id=bypassed)),
                ("kinds", "differs", key(id=kind)),
                ("events", "missing", key(channel_id=int(ev_chan), at=ev_at)),
                ("blobs", "differs", key(k=(("blob_hex", blob),))),
                ("settings", "differs", key(team_id=1, key="theme")),
            }
            rep = self.verify_json(expect=1)
            self.assertEqual(diff_set(rep["differences"]), expected)
            rep = self.verify_json("--repair", expect=0)
            self.assertEqual((rep["repair"]["upserted"], rep["repair"]["deleted"]), (7, 1))
            self.assertPgTenantEqual()
            self.assertTrue(self.verify_json(expect=0)["equal"])

    def test_pg_verify_warns_of_target_tables_never_analyzed(self):
        """A target table PostgreSQL never analyzed (copied by a ferry from
        before sync analyzed, or by a copy stopped before that) is named in
        verify's one warning; verify writes nothing, statistics neither;
        after ANALYZE it says nothing. Oracle: pg_class.reltuples."""
        self.pg_pair()
        names = ", ".join("'%s'" % t for t in tp.PG_TABLES)
        never = lambda: tp.psql(  # noqa: E731
            self.dst_url, "SELECT relname FROM pg_class WHERE reltuples < 0 AND relname IN (%s) "
                          "ORDER BY 1" % names).split()
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1, db=self.dst_url)
            self.sync()
            self.assertEqual(never(), [], "the copy left tables without statistics")
            # what a table never analyzed looks like: no statistics, reltuples -1
            tp.psql(self.dst_url, "DELETE FROM pg_statistic WHERE starelid = 'channels'::regclass;"
                                  "UPDATE pg_class SET reltuples = -1 "
                                  "WHERE oid = 'channels'::regclass")
            self.assertEqual(never(), ["channels"])
            cp = self.verify(expect=0)
            warned = [ln for ln in cp.stderr.splitlines() if "never analyzed" in ln]
            self.assertEqual(len(warned), 1, cp.stderr)
            self.assertIn('1 table never analyzed ("channels")', warned[0])
            self.assertIn("run ANALYZE", warned[0])
            self.assertEqual(never(), ["channels"], "verify wrote statistics")

            tp.psql(self.dst_url, "ANALYZE channels")
            self.assertEqual(never(), [])
            cp = self.verify(expect=0)
            self.assertNotIn("never analyzed", cp.stderr)

    def test_pg_spread_differences_one_split(self):
        """Differences spread over a big table cost one split of it and one
        leaf each: the first split makes ranges of leaf size (about 500
        rows), not 32 ranges that all differ and are split again. To a
        PostgreSQL target (the servers hash) and to a SQLite one (the
        agents hash)."""
        self.pg_pair()
        chan = int(tp.psql(self.src_url, "SELECT min(id) FROM channels WHERE team_id = 1"))
        tp.psql(self.src_url, "INSERT INTO posts(id, channel_id, body) SELECT 100000 + i, %d, "
                "'bulk ' || i FROM generate_series(1, 40000) i" % chan)
        # every 2,000th of the new posts, changed behind ferry's back
        spread = [100000 + i for i in range(1000, 40001, 2000)]
        for engine in ("postgresql", "sqlite"):
            with self.subTest(target=engine), self.serve() as srv:
                shutil.rmtree(self.path("state"), ignore_errors=True)
                if engine == "postgresql":
                    self.make_target(srv.url, tenant=1, db=self.dst_url)
                    change = lambda sql: tp.psql(self.dst_url, sql)  # noqa: E731
                else:
                    self.make_target(srv.url, tenant=1)
                    change = lambda sql: execute(self.dst_db, sql)  # noqa: E731
                self.sync()
                change("UPDATE posts SET body = 'spread' WHERE id IN (%s)"
                       % ",".join(map(str, spread)))
                rep = self.verify_json(expect=1)
                self.assertEqual(diff_set(rep["differences"]),
                                 {("posts", "differs", key(id=i)) for i in spread})
                # the manifest, each table's total, one split of posts, a leaf per difference
                # (before: a split into 32 ranges, then each of the 20 that differ split again)
                self.assertLessEqual(rep["requests"], 1 + len(rep["tables"]) + 1 + len(spread),
                                     rep)
                rep = self.verify_json("--repair", expect=0)
                self.assertEqual(rep["repair"]["upserted"], len(spread))
                self.assertTrue(self.verify_json(expect=0)["equal"])
        self.assertPgTenantEqual()
        conn = sqlite3.connect(self.dst_db)
        try:
            bodies = dict(conn.execute("SELECT id, body FROM posts WHERE id IN (%s)"
                                       % ",".join(map(str, spread))).fetchall())
        finally:
            conn.close()
        self.assertEqual(bodies, {i: "bulk %d" % (i - 100000) for i in spread})

    def team1_kind(self, where):
        """The id of the one kinds row of team 1 on the source where `where` holds."""
        ids_ = tp.psql(self.src_url, "SELECT k.id FROM kinds k JOIN channels c ON c.id = "
                       "k.channel_id WHERE c.team_id = 1 AND %s" % where).split()
        self.assertEqual(len(ids_), 1, "test_pg's data: %s" % where)
        return ids_[0]

    def test_pg_servers_hash_the_rows(self):
        """Between two PostgreSQL servers the servers hash the rows
        ("pg-record-1") unless --keyed-hash asks for SipHash in the agents.
        Values the server's equality takes for the same but whose text
        differs (-0 and 0, 0.10 and 0.1, '-1 day' and '-24 hours') are found
        either way, with exactly their keys, and repaired."""
        self.pg_pair()
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1, db=self.dst_url)
            self.sync()
            by_server = self.verify_json(expect=0)
            keyed = self.verify_json("--keyed-hash", expect=0)
            self.assertEqual({t["hash"] for t in by_server["tables"]}, {"pg-record-1"})
            self.assertEqual({t["hash"] for t in keyed["tables"]}, {"siphash-1-3"})
            self.assertCounts(by_server,
                              {t: len(tp.pg_rows(self.src_url, t, 1)) for t in tp.PG_TABLES})
            for a, b in zip(by_server["tables"], keyed["tables"]):
                if a["source_rows"]:
                    self.assertNotEqual(a["source_checksum"], b["source_checksum"], a["table"])

            zero = self.team1_kind("k.f8 = 0")
            day = self.team1_kind("k.iv = interval '-1 day'")
            tenth = self.team1_kind("k.n = 0.10")
            tp.psql(self.dst_url, "UPDATE kinds SET f8 = 0 WHERE id = '%s';"
                    "UPDATE kinds SET iv = '-24 hours' WHERE id = '%s';"
                    "UPDATE kinds SET n = 0.1 WHERE id = '%s';" % (zero, day, tenth))
            sql = "SELECT f8::text || iv::text || n::text FROM kinds WHERE id = '%s'"
            for k in (zero, day, tenth):
                self.assertNotEqual(tp.psql(self.src_url, sql % k), tp.psql(self.dst_url, sql % k),
                                    "the change left the text alone: the premise fails")
            expected = {("kinds", "differs", key(id=k)) for k in (zero, day, tenth)}
            for args in ((), ("--keyed-hash",)):
                rep = self.verify_json(*args, expect=1)
                self.assertEqual(diff_set(rep["differences"]), expected, args)
            rep = self.verify_json("--repair", expect=0)
            self.assertEqual((rep["repair"]["upserted"], rep["repair"]["deleted"]), (3, 0))
            self.assertPgTenantEqual()

    def test_pg_masked_table_falls_back_to_the_keyed_hash(self):
        """A source refuses "pg-record-1" for a table it masks (a mask's value
        need not have the stored type): that table is hashed with SipHash in
        the agents, the others by the servers, and a change is still found."""
        self.pg_pair()
        with open(self.src_conf, "a") as f:
            f.write("\n[mask]\nposts.body = 'post ' || id\n")
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1, db=self.dst_url)
            self.sync()
            cp = self.verify("--json", expect=0)
            hashes = {t["table"]: t["hash"] for t in json.loads(cp.stdout)["tables"]}
            self.assertEqual(hashes.pop("posts"), "siphash-1-3")
            self.assertEqual(set(hashes.values()), {"pg-record-1"})
            self.assertIn("masked columns", cp.stderr)
            p = int(tp.psql(self.dst_url, "SELECT min(p.id) FROM posts p JOIN channels c "
                            "ON c.id = p.channel_id WHERE c.team_id = 1"))
            tp.psql(self.dst_url, "UPDATE posts SET body = 'real body' WHERE id = %d" % p)
            rep = self.verify_json("--repair", expect=0)
            self.assertEqual(diff_set(rep["differences"]), {("posts", "differs", key(id=p))})
            self.assertEqual(tp.psql(self.dst_url,
                                     "SELECT body FROM posts WHERE id = %d" % p).strip(),
                             "post %d" % p)

    def test_pg_mask_failing_on_a_row_keeps_its_value_out_of_the_log(self):
        """A mask whose expression fails on one row (a cast of the real
        value): PostgreSQL's message quotes the value (`invalid input syntax
        for type integer: "<the body>"`), and ferry-src logged it (probe).
        The log keeps the message without the value; the target only hears
        of a database error. Oracle: the value, looked for in the log."""
        self.pg_pair()
        secret = "SECRET-BODY-not-a-number-51c7"
        p = int(tp.psql(self.src_url, "SELECT min(p.id) FROM posts p JOIN channels c "
                        "ON c.id = p.channel_id WHERE c.team_id = 1"))
        tp.psql(self.src_url, "UPDATE posts SET body = CASE WHEN id = %d THEN '%s' "
                "ELSE '7' END" % (p, secret))
        with open(self.src_conf, "a") as f:
            f.write("\n[mask]\nposts.body = (body::int + 1)::text\n")
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1, db=self.dst_url)
            cp = self.sync(expect=None)
            self.assertNotEqual(cp.returncode, 0, cp.stderr)
            self.assertNotIn(secret, cp.stderr)
            log = srv.log()
            self.assertIn("invalid input syntax for type integer (a value left out) "
                          "(SQLSTATE 22P02)", log)
            self.assertNotIn(secret, log)

    def test_pg_old_source_falls_back_to_sha256(self):
        """A PostgreSQL source from before the keyed hash refuses
        "pg-record-1", then SipHash: the target verifies with SHA-256, says
        so once, and still finds a changed row."""
        old = ft.old_source()
        new_src, ft.FERRY_SRC = ft.FERRY_SRC, old
        try:
            self.pg_pair()
            with self.serve() as srv:
                self.make_target(srv.url, tenant=1, db=self.dst_url)
                self.sync()
                cp = self.verify("--json", expect=0)
                self.assertEqual({t["hash"] for t in json.loads(cp.stdout)["tables"]},
                                 {"sha-256"})
                self.assertEqual(cp.stderr.count("does not know the keyed row hash"), 1, cp.stderr)
                p = int(tp.psql(self.dst_url, "SELECT min(p.id) FROM posts p JOIN channels c "
                                "ON c.id = p.channel_id WHERE c.team_id = 1"))
                tp.psql(self.dst_url, "UPDATE posts SET score = score + 1 WHERE id = %d" % p)
                rep = self.verify_json(expect=1)
                self.assertEqual(diff_set(rep["differences"]), {("posts", "differs", key(id=p))})
        finally:
            ft.FERRY_SRC = new_src

    def assertCrossEngineDiffs(self, change, table, first_ids, extra_id, chan):
        """change(sql) on the target: a changed, a deleted and an extra row of
        table are found with exactly their keys; --repair fixes them."""
        changed, deleted = first_ids[1], first_ids[4]
        change("UPDATE %s SET body = 'tampered' WHERE id = %d" % (table, changed))
        change("DELETE FROM %s WHERE id = %d" % (table, deleted))
        change("INSERT INTO %s(id, channel_id, body) VALUES (%d, %d, 'extra')"
               % (table, extra_id, chan))
        rep = self.verify_json(expect=1)
        self.assertEqual(diff_set(rep["differences"]), {
            (table, "differs", key(id=changed)),
            (table, "missing", key(id=deleted)),
            (table, "extra", key(id=extra_id)),
        })
        rep = self.verify_json("--repair", expect=0)
        self.assertEqual((rep["repair"]["upserted"], rep["repair"]["deleted"]), (2, 1))
        self.assertTrue(self.verify_json(expect=0)["equal"])

    def test_pg_to_sqlite_verify(self):
        """Hashes in SQL on the PostgreSQL source (in C for a table whose
        values the target stores otherwise), in C on the SQLite target: every
        type of test_pg's data verifies equal after a copy, -0 included
        (SQLite's REAL column keeps +0.0: the source hashes it so); a changed
        float is still found."""
        self.pg_pair()
        nzero = int(tp.psql(self.src_url, "SELECT count(*) FROM kinds k JOIN channels c ON "
                            "c.id = k.channel_id WHERE c.team_id = 1 AND "
                            "(f8::text = '-0' OR f4::text = '-0')").strip())
        self.assertGreater(nzero, 0, "test_pg's data has no -0 left: the test tests nothing")
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync()
            rep = self.verify_json(expect=0)
            self.assertTrue(rep["equal"], rep)
            self.assertCounts(rep, {t: len(tp.pg_rows(self.src_url, t, 1)) for t in tp.PG_TABLES})
            posts = [int(x) for x in tp.psql(
                self.src_url, "SELECT string_agg(p.id::text, ',' ORDER BY p.id) FROM posts p "
                "JOIN channels c ON c.id = p.channel_id WHERE c.team_id = 1 AND NOT EXISTS "
                "(SELECT 1 FROM reactions r WHERE r.post_id = p.id)").strip().split(",")]
            chan = int(tp.psql(self.src_url,
                               "SELECT min(id) FROM channels WHERE team_id = 1").strip())
            kid = tp.psql(self.src_url, "SELECT min(k.id::text) FROM kinds k JOIN channels c "
                          "ON c.id = k.channel_id WHERE c.team_id = 1 AND k.f8::text = '-0'"
                          ).strip()
            # the target really holds +0.0 where the source has -0 (the oracle: SQLite itself)
            conn = sqlite3.connect(self.dst_db)
            try:
                f8, kind = conn.execute("SELECT f8, typeof(f8) FROM kinds WHERE id = ?",
                                        (kid,)).fetchone()
            finally:
                conn.close()
            self.assertEqual((f8, math.copysign(1.0, f8), kind), (0.0, 1.0, "real"))
            # a real change in a coerced column is still found, by its key
            execute(self.dst_db, "UPDATE kinds SET f8 = 1.5 WHERE id = '%s'" % kid)
            rep = self.verify_json(expect=1)
            self.assertEqual(diff_set(rep["differences"]), {("kinds", "differs", key(id=kid))})
            self.assertTrue(self.verify_json("--repair", expect=0)["equal"])
            self.assertCrossEngineDiffs(lambda sql: execute(self.dst_db, sql), "posts", posts,
                                        900600, chan)

    def test_pg_to_sqlite_verify_affinities(self):
        """PostgreSQL into a SQLite table the operator made with other
        declared types: numeric and double values into NUMERIC, DECIMAL,
        INTEGER and REAL affinity, where SQLite stores numbers that are
        whole as integers and numeric text as numbers. The source hashes
        each value as SQLite stores it: equal after a copy; a real change
        in such a column is found by its key and repaired. Oracle: SQLite's
        own typeof() of the stored values."""
        self.pg_pair()
        tp.psql(self.src_url, "UPDATE posts SET score = 3, weight = 2.0 WHERE id = (SELECT "
                              "min(p.id) FROM posts p JOIN channels c ON c.id = p.channel_id "
                              "WHERE c.team_id = 1)")
        self.dst_db = self.path("dst.db")
        execute(self.dst_db, "CREATE TABLE posts(id INTEGER PRIMARY KEY, channel_id INTEGER, "
                             "user_id INTEGER, body TEXT, score DECIMAL(12,4), rating REAL, "
                             "weight NUMERIC, flag BOOLEAN, data BLOB, meta TEXT, doc TEXT, "
                             "uid TEXT, day DATE, at TEXT, ts DATETIME, tstz TEXT, tags TEXT, "
                             "nums TEXT, small INT)")
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1, db=self.dst_db)
            self.sync()
            kinds = dict(ft.query(self.dst_db, "SELECT typeof(score) || '/' || typeof(weight), "
                                              "count(*) FROM posts GROUP BY 1"))
            # the oracle: SQLite holds some of them as integers, some as reals
            self.assertGreater(kinds.get("integer/integer", 0), 0, kinds)
            self.assertGreater(sum(n for k, n in kinds.items() if k.startswith("real/")), 0,
                               kinds)
            rep = self.verify_json(expect=0)
            self.assertTrue(rep["equal"], rep)
            pid = ft.query(self.dst_db, "SELECT min(id) FROM posts WHERE typeof(score) = "
                                        "'real'")[0][0]
            execute(self.dst_db, "UPDATE posts SET score = score + 1 WHERE id = %d" % pid)
            rep = self.verify_json(expect=1)
            self.assertEqual(diff_set(rep["differences"]), {("posts", "differs", key(id=pid))})
            self.assertTrue(self.verify_json("--repair", expect=0)["equal"])

    def test_sqlite_to_pg_verify(self):
        """Hashes in SQL on a SQLite source (its C function), in SQL on the
        PostgreSQL target in tables ferry created: equal after a copy."""
        self.make_source(install=False)
        conn = ft.source_conn(self.src_db)
        for sql in NOT_FOR_PG_TEXT:
            conn.execute(sql)
        # an untyped column's integers, reals (-0.0 too) and blobs become text in
        # PostgreSQL: the source hashes them as that text, so they stay
        kept = conn.execute(
            "SELECT (SELECT count(*) FROM kinds WHERE typeof(v) IN ('integer', 'real', 'blob')),"
            " (SELECT count(*) FROM settings WHERE typeof(value) IN ('integer', 'real'))"
        ).fetchone()
        conn.close()
        self.assertTrue(kept[0] > 0 and kept[1] > 0, kept)
        cp = ft.run_src(["install", "--config", self.src_conf])
        self.assertEqual(cp.returncode, 0, "ferry-src install: %s" % cp.stderr)
        self.dst_url = tp.createdb("vxdst")
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1, db=self.dst_url)
            self.sync()
            rep = self.verify_json(expect=0)
            self.assertTrue(rep["equal"], rep)
            self.assertCounts(rep, {t: len(ft.tenant_rows(self.src_db, t, 1)) for t in ft.IN_SCOPE})
            posts = ids(self.src_db, "SELECT p.id FROM posts p JOIN channels c "
                        "ON c.id = p.channel_id WHERE c.team_id = 1 AND NOT EXISTS "
                        "(SELECT 1 FROM reactions r WHERE r.post_id = p.id) ORDER BY p.id")
            chan = ids(self.src_db, "SELECT min(id) FROM channels WHERE team_id = 1")[0]
            # the oracle: PostgreSQL holds those values as text
            self.assertEqual(tp.psql(self.dst_url, "SELECT value FROM settings WHERE team_id = 1"
                                     " AND key = 'max_upload'").strip(), str(25 << 20))
            self.assertEqual(tp.psql(self.dst_url, "SELECT pg_typeof(value) FROM settings"
                                     " WHERE team_id = 1 AND key = 'ratio'").strip(), "text")
            # a real change in such a column is still found, by its key
            tp.psql(self.dst_url, "UPDATE settings SET value = '26214401' WHERE team_id = 1 "
                                  "AND key = 'max_upload'")
            zid = ids(self.src_db, "SELECT k.id FROM kinds k JOIN channels c ON "
                      "c.id = k.channel_id WHERE c.team_id = 1 AND typeof(k.v) = 'real' "
                      "AND k.v = 0")[0]
            tp.psql(self.dst_url, "UPDATE kinds SET v = '0' WHERE id = %d" % zid)
            rep = self.verify_json(expect=1)
            self.assertEqual(diff_set(rep["differences"]), {
                ("settings", "differs", key(team_id=1, key="max_upload")),
                ("kinds", "differs", key(id=zid)),
            })
            self.assertTrue(self.verify_json("--repair", expect=0)["equal"])
            self.assertEqual(tp.psql(self.dst_url, "SELECT v FROM kinds WHERE id = %d"
                                     % zid).strip(), "-0")
            self.assertCrossEngineDiffs(lambda sql: tp.psql(self.dst_url, sql), "posts", posts,
                                        900700, chan)

    def typmods_pair(self):
        """A SQLite source with a prices table whose values a PostgreSQL
        target's numeric(p,s), real and character(n) columns store in
        another form, installed; the target with that table (self.dst_url).
        Returns the rows."""
        self.make_source(teams=2, posts_per_team=5, install=False)
        rows = [(1, 0.125, 0.123456789, "ab", 5), (2, -0.125, 0.1, "abcde", -12),
                (3, 2.5, 1.0000000596046448, "é", 0), (4, -0.001, -0.0, "", 7),
                (5, 9.995, 16777217, "x   ", None), (6, None, None, None, 1)]
        ft.on_source(self.src_db, *NOT_FOR_PG_TEXT,
                     "CREATE TABLE prices(id INTEGER PRIMARY KEY, channel_id INTEGER "
                     "REFERENCES channels(id), amount REAL, ratio REAL, code TEXT, qty INTEGER)",
                     *[("INSERT INTO prices VALUES (?, (SELECT min(id) FROM channels "
                        "WHERE team_id = 1), ?, ?, ?, ?)", r) for r in rows])
        cp = ft.run_src(["install", "--config", self.src_conf])
        self.assertEqual(cp.returncode, 0, "ferry-src install: %s" % cp.stderr)
        self.dst_url = tp.createdb("vtdst")
        tp.psql(self.dst_url, "CREATE TABLE prices(id bigint PRIMARY KEY, channel_id bigint, "
                              "amount numeric(10,2), ratio real, code character(5), "
                              "qty numeric(8,3))")
        return rows

    def test_sqlite_to_pg_verify_typmods(self):
        """A SQLite source's values into PostgreSQL columns that change
        them as they store them: numeric(p,s) rounds (half away from
        zero, then s digits), real keeps a float4, character(n) pads. The
        source hashes each value as the target stores it, so the copy
        verifies equal; a real change in each such column is found by its
        key and repaired. Oracle: PostgreSQL's own stored values (SQL)."""
        rows = self.typmods_pair()
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1, db=self.dst_url)
            self.sync()
            # the oracle: what PostgreSQL stored differs from what the source holds
            got = tp.psql(self.dst_url, "SELECT amount, ratio, '[' || code::text || ']', "
                                        "octet_length(code), qty FROM prices WHERE id = 1")
            self.assertEqual(got.strip(), "0.13|0.12345679|[ab]|5|5.000")
            rep = self.verify_json(expect=0)
            self.assertTrue(rep["equal"], rep)
            by_table = {t["table"]: t for t in rep["tables"]}
            self.assertEqual(by_table["prices"]["source_rows"], len(rows))
            # real changes, one per column, are found by their keys
            tp.psql(self.dst_url, "UPDATE prices SET amount = 0.12 WHERE id = 1; "
                                  "UPDATE prices SET ratio = 0.1000001 WHERE id = 2; "
                                  "UPDATE prices SET code = 'f' WHERE id = 3; "
                                  "UPDATE prices SET qty = 7.001 WHERE id = 4")
            rep = self.verify_json(expect=1)
            self.assertEqual(diff_set(rep["differences"]),
                             {("prices", "differs", key(id=i)) for i in (1, 2, 3, 4)})
            self.assertTrue(self.verify_json("--repair", expect=0)["equal"])
            self.assertEqual(tp.psql(self.dst_url, "SELECT string_agg(concat_ws('/', amount, "
                                                   "ratio, code::text, octet_length(code), qty), "
                                                   "';' ORDER BY id) FROM prices "
                                                   "WHERE id IN (1, 2, 3, 4)").strip(),
                             "0.13/0.12345679/ab/5/5.000;-0.13/0.1/abcde/5/-12.000;"
                             "2.50/1.0000001/é/6/0.000;0.00/0//5/7.000")

    def test_sqlite_to_pg_added_column_compared(self):
        """A column added after the copy on both sides, REAL with a DEFAULT
        on the SQLite source, numeric(10,2) with the DEFAULT that rounds to
        on the PostgreSQL target: the sync compares it, the source hashing
        its values as the target stores them, and copies nothing. Through
        a source from before that check (51e2e79), which refuses it, the
        next added column makes the table copied again. Oracle: a target
        row changed behind ferry's back stays (no copy), verify finds it;
        the copy through the old source overwrites it (SQL on the target)."""
        self.typmods_pair()
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1, db=self.dst_url)
            self.sync()
            ft.on_source(self.src_db, "ALTER TABLE prices ADD COLUMN fee REAL NOT NULL "
                                      "DEFAULT 0.125")
            tp.psql(self.dst_url, "ALTER TABLE prices ADD COLUMN fee numeric(10,2) NOT NULL "
                                  "DEFAULT 0.13; UPDATE prices SET code = 'zz' WHERE id = 2")
            cp = self.sync()
            self.assertIn("copy prices: not needed, the column fee of its 6 rows hold the "
                          "same values on both sides", cp.stderr)
            self.assertEqual(tp.psql(self.dst_url, "SELECT code FROM prices WHERE id = 2").strip(),
                             "zz")
            rep = self.verify_json(expect=1)
            self.assertEqual(diff_set(rep["differences"]), {("prices", "differs", key(id=2))})
        old = ft.old_source("51e2e79")
        new_src, ft.FERRY_SRC = ft.FERRY_SRC, old
        try:
            with self.serve() as srv:
                self.make_target(srv.url, tenant=1, db=self.dst_url)
                ft.on_source(self.src_db, "ALTER TABLE prices ADD COLUMN tip REAL NOT NULL "
                                          "DEFAULT 2")
                tp.psql(self.dst_url, "ALTER TABLE prices ADD COLUMN tip numeric(10,2) NOT NULL "
                                      "DEFAULT 2")
                cp = self.sync()
                self.assertRegex(cp.stderr, r"copy prices again: the column tip could not be "
                                            r"compared on both sides \(.*cols")
                self.assertIn("copy prices: again, for the columns added on the source",
                              cp.stderr)
                self.assertEqual(tp.psql(self.dst_url, "SELECT code FROM prices WHERE id = 2")
                                 .strip(), "abcde")
        finally:
            ft.FERRY_SRC = new_src

    def test_sqlite_to_pg_verify_typmods_old_source(self):
        """A source from before the numeric(p,s), real and character(n)
        coercions (51e2e79) refuses their codes: the target asks again
        without them and reports those rows as differences (exit 1), not
        an error, saying why once. Oracle: every prices row differs in
        such a column, every other table is equal."""
        old = ft.old_source("51e2e79")
        rows = self.typmods_pair()
        new_src, ft.FERRY_SRC = ft.FERRY_SRC, old
        try:
            with self.serve() as srv:
                self.make_target(srv.url, tenant=1, db=self.dst_url)
                self.sync()
                cp = self.verify("--json", expect=1)
                rep = json.loads(cp.stdout)
                self.assertEqual(diff_set(rep["differences"]),
                                 {("prices", "differs", key(id=r[0])) for r in rows})
                for t in rep["tables"]:
                    self.assertEqual(t["equal"], t["table"] != "prices", t)
                self.assertEqual(cp.stderr.count("does not know every coercion"), 1, cp.stderr)
        finally:
            ft.FERRY_SRC = new_src

if __name__ == "__main__":
    ft.main()
