#!/usr/bin/env python3
"""PostgreSQL cuts identifiers at 63 bytes: two tables whose names share a
long prefix must still get capture objects (key maps, trigger functions,
freeze functions) of their own. Oracle: the source's rows, read with psql,
against the target's, read with sqlite3."""

import os
import sqlite3
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402
import test_pg  # noqa: E402

A = "customer_relationship_management_opportunity_line_items_north"
B = "customer_relationship_management_opportunity_line_items_south"

SCHEMA = """
CREATE TABLE teams (id bigint PRIMARY KEY, name text NOT NULL);
CREATE TABLE tags (name text PRIMARY KEY, team_ref bigint);
CREATE TABLE audit_log (id bigint);
CREATE TABLE %(a)s (id bigint PRIMARY KEY, team_id bigint NOT NULL REFERENCES teams(id),
                    note text);
CREATE TABLE %(b)s (code text PRIMARY KEY, team_id bigint NOT NULL REFERENCES teams(id),
                    qty integer);
INSERT INTO teams VALUES (1, 'one'), (2, 'two');
INSERT INTO %(a)s SELECT i, 1 + i %% 2, 'a' || i FROM generate_series(1, 40) i;
INSERT INTO %(b)s SELECT 'b' || i, 1 + i %% 2, i FROM generate_series(1, 40) i;
""" % {"a": A, "b": B}


class PgNamesTest(ft.FerryTestCase):

    def source_rows(self, table, cols):
        out = test_pg.psql(self.src_url, "SELECT %s FROM %s WHERE team_id = 1" % (cols, table))
        return sorted(tuple(line.split("|")) for line in out.splitlines())

    def target_rows(self, table, cols):
        db = sqlite3.connect(self.dst_db)
        try:
            return sorted(tuple(str(v) for v in r)
                          for r in db.execute('SELECT %s FROM "%s"' % (cols, table)))
        finally:
            db.close()

    def assertCopy(self):
        self.assertEqual(self.target_rows(A, "id, team_id, note"),
                         self.source_rows(A, "id, team_id, note"))
        self.assertEqual(self.target_rows(B, "code, team_id, qty"),
                         self.source_rows(B, "code, team_id, qty"))

    def test_long_table_names(self):
        self.assertEqual(len(A), len(B))
        self.assertGreater(len("_ferry_k_" + A), 63)
        self.src_url = test_pg.createdb("names")
        test_pg.psql(self.src_url, SCHEMA)
        self.source_conf(self.src_url)
        # one key map and one trigger function per table, every name within 63 bytes
        maps = test_pg.psql(self.src_url, "SELECT relname FROM pg_class WHERE relkind = 'r' "
                                          "AND relname LIKE '\\_ferry\\_k\\_customer%'").split()
        self.assertEqual(len(maps), 2, maps)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1)
            self.sync("--quiet")
            self.assertCopy()
            self.assertEqual(len(self.target_rows(A, "id")), 20)
            test_pg.psql(self.src_url, (
                "UPDATE %(a)s SET note = 'edited' WHERE id IN (1, 2, 3);"
                "UPDATE %(b)s SET qty = qty + 100 WHERE code IN ('b1', 'b2', 'b3');"
                "DELETE FROM %(b)s WHERE code = 'b5';"
                "INSERT INTO %(a)s VALUES (101, 1, 'new'), (102, 2, 'other');"
                "UPDATE %(a)s SET team_id = 2 WHERE id = 7;") % {"a": A, "b": B})
            self.sync("--quiet")
            self.assertCopy()
            self.assertIn(("101", "1", "new"), self.target_rows(A, "id, team_id, note"))
            self.assertNotIn("7", [r[0] for r in self.target_rows(A, "id")])
            # the freeze's functions are per table too: both tables refuse the frozen tenant
            cp = ft.run_src(["freeze", "--config", self.src_conf, "--tenant", "1"])
            self.assertEqual(cp.returncode, 0, cp.stderr)
            test_pg.psql(self.src_url, "UPDATE %s SET note = 'x' WHERE id = 2" % A, check=False)
            test_pg.psql(self.src_url, "UPDATE %s SET qty = 0 WHERE code = 'b2'" % B,
                         check=False)
            got = test_pg.psql(self.src_url, "SELECT note FROM %s WHERE id = 2; "
                                             "SELECT qty FROM %s WHERE code = 'b2'" % (A, B))
            self.assertEqual(got.split(), ["edited", "102"], "a frozen tenant's row changed")
            # tenant 2 keeps writing
            test_pg.psql(self.src_url, "UPDATE %s SET note = 'x' WHERE id = 1" % A)
            cp = ft.run_src(["unfreeze", "--config", self.src_conf, "--tenant", "1"])
            self.assertEqual(cp.returncode, 0, cp.stderr)
            test_pg.psql(self.src_url, "UPDATE %s SET qty = 7 WHERE code = 'b2'" % B)
            self.sync("--quiet")
            self.assertCopy()

    def test_long_table_names_pg_target(self):
        """The target's staging tables (deltas, resumed copies) are per table too."""
        self.src_url = test_pg.createdb("names_src")
        test_pg.psql(self.src_url, SCHEMA)
        self.source_conf(self.src_url, batch_rows=2)  # several delta batches a table
        dst_url = test_pg.createdb("names_dst")
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1, db=dst_url)
            self.sync("--quiet")
            test_pg.psql(self.src_url, (
                "UPDATE %(a)s SET note = 'edited' WHERE id IN (2, 4);"
                "UPDATE %(b)s SET qty = qty + 100 WHERE code IN ('b2', 'b4');"
                "DELETE FROM %(b)s WHERE code = 'b6';"
                "INSERT INTO %(a)s VALUES (104, 1, 'new');") % {"a": A, "b": B})
            self.sync("--quiet")
            for table, cols in ((A, "id, team_id, note"), (B, "code, team_id, qty")):
                want = test_pg.psql(self.src_url, "SELECT %s FROM %s WHERE team_id = 1 "
                                                  "ORDER BY 1" % (cols, table))
                got = test_pg.psql(dst_url, "SELECT %s FROM %s ORDER BY 1" % (cols, table))
                self.assertEqual(got, want, table)
            self.assertIn("104|1|new", got if table == A else test_pg.psql(
                dst_url, "SELECT id, team_id, note FROM %s WHERE id = 104" % A))


if __name__ == "__main__":
    test_pg.start_cluster()
    try:
        ft.main()
    finally:
        test_pg.stop_cluster()
