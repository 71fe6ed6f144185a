import os
import ferrytest as ft
import test_pg as T
from test_pg import psql, PG_TABLES
class X(T.PgTest):
    def test_pg_to_sqlite(self):
        self.pg_source()
        with self.serve() as srv:
            targets = {}
            for t in (1, 2, 3):
                self.make_target(srv.url, tenant=t, db=self.path("dst%d.db" % t))
                conf = ft.write_dst_conf(self.path("dst-%d.conf" % t), self.dst_db, self.path("state-%d" % t), t, srv.url, identity=ft.test_key("dst-%d" % t), public_key=ft.test_key("src") + ".pub")
                targets[t] = (conf, self.dst_db)
            self.random_workload(self.RANDOM_WRITES, targets, lambda rnd: {"t": rnd.randint(1, 3)})
            for t, (conf, db) in targets.items():
                self.assertPgToSqlite(self.src_url, db, t)
    def test_deferred_pg_to_sqlite(self):
        self.src_url = T.createdb("src")
        psql(self.src_url, T.CONF_TABLES + """
CREATE TABLE teams (id bigint PRIMARY KEY, name text NOT NULL);
CREATE TABLE docs (id numeric PRIMARY KEY, team_id bigint NOT NULL REFERENCES teams(id), title text);
CREATE TABLE pages (id bigint PRIMARY KEY, doc_id numeric NOT NULL REFERENCES docs(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED, body text);
CREATE SEQUENCE page_ids START 1000;
INSERT INTO teams VALUES (1, 'one'), (2, 'two'), (3, 'three');
INSERT INTO docs SELECT i, 1 + i % 3, 'doc' FROM generate_series(1, 30) i;
INSERT INTO pages SELECT i, 1 + i % 30, 'p' FROM generate_series(1, 200) i;
""")
        self.write_src(self.src_url)
        self.install()
        with self.serve() as srv:
            targets = {}
            for t in (1, 2, 3):
                self.make_target(srv.url, tenant=t, db=self.path("dst%d.db" % t))
                conf = ft.write_dst_conf(self.path("dst-%d.conf" % t), self.dst_db, self.path("state-%d" % t), t, srv.url, identity=ft.test_key("dst-%d" % t), public_key=ft.test_key("src") + ".pub")
                targets[t] = (conf, self.dst_db)
            self.random_workload(self.DEFERRED_WRITES, targets, lambda rnd: {"t": rnd.randint(1, 3), "d": rnd.randint(25, 60)})
            for t, (conf, db) in targets.items():
                want = psql(self.src_url, "SELECT p.id, p.doc_id::text FROM pages p JOIN docs d ON d.id = p.doc_id WHERE d.team_id = %d ORDER BY 1" % t).split()
                got = ["%d|%s" % r for r in ft.query(db, "SELECT id, doc_id FROM pages ORDER BY 1")]
                self.assertEqual(got, want, "team %d" % t)
if __name__ == "__main__":
    T.start_cluster()
    try:
        import unittest; unittest.main()
    finally:
        T.stop_cluster()
