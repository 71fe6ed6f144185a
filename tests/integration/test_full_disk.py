#!/usr/bin/env python3
"""A full disk on the target: ferry-dst stops with a one-line error and exit
status 5, the target database stays consistent with the copy progress the
state records (nothing half-committed), and once there is room again a rerun
converges to the source exactly.

The target database lives on a small tmpfs the test mounts itself (root
only); where mounting is not possible the test prints a loud SKIP and exits
77, which ctest reports as skipped, not passed.
"""

import os
import sqlite3
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402


def mount_tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    cp = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s" % size, "tmpfs", path],
                        capture_output=True, text=True)
    return cp.returncode == 0, cp.stderr.strip()


class FullDiskTest(ft.FerryTestCase):
    def setUp(self):
        super().setUp()
        self.disk = self.path("disk")
        ok, why = (False, "not root") if os.geteuid() != 0 else mount_tmpfs(self.disk, "600k")
        if not ok:
            sys.stderr.write("\n*** SKIP test_full_disk: cannot mount a tmpfs (%s) ***\n" % why)
            sys.exit(77)
        self.addCleanup(subprocess.run, ["umount", "-l", self.disk], capture_output=True)

    def test_full_disk_then_room(self):
        self.make_source(teams=2, posts_per_team=6000)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1, db=os.path.join(self.disk, "dst.db"))
            cp = self.sync("--quiet", expect=5)
            self.assertOneLine(cp.stderr)
            self.assertRegex(cp.stderr.lower(), r"disk|space|full")
            sys.stderr.write("\n[ferry-dst said: %s]\n" % cp.stderr.strip())

            # What is on the target is whole: a consistent database, every
            # table the state calls copied equals the oracle, and the others
            # hold only the tenant's rows (no partial or foreign row).
            dst = sqlite3.connect(self.dst_db)
            self.assertEqual(dst.execute("PRAGMA integrity_check").fetchone()[0], "ok")
            dst.close()
            st = ft.status_json(self.dst_conf)
            self.assertEqual(st["phase"], "copying", st)
            done = {t["table"] for t in st["tables"] if t["done"]}
            for t in ft.IN_SCOPE:
                if not os.path.exists(self.dst_db) or t not in ft.table_names(self.dst_db):
                    continue
                want = ft.tenant_rows(self.src_db, t, 1)
                have = ft.table_rows(self.dst_db, t)
                if t in done:
                    self.assertTableEqual(want, have, t)
                else:
                    self.assertTrue(set(have) <= set(want),
                                    "%s holds rows that are not tenant 1's" % t)
            last = max(st["runs"], key=lambda r: r["id"])
            self.assertEqual(last["code"], "ENOSPC", last)

            # Room again: the rerun resumes and converges.
            cp = subprocess.run(["mount", "-o", "remount,size=64m", self.disk],
                                capture_output=True, text=True)
            self.assertEqual(cp.returncode, 0, cp.stderr)
            self.sync("--quiet")
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))

    def test_full_disk_before_the_first_write(self):
        """A target on a disk already full when the sync opens it: one line
        that says the disk is full (exit 5, ENOSPC), not SQLite's 'disk I/O
        error'; with room again, the copy is made. Oracle: the tenant's
        rows (assertTenantCopy) and the run's code."""
        self.make_source(teams=2, posts_per_team=20)
        filler = os.path.join(self.disk, "filler")
        subprocess.run("head -c 2M /dev/zero > '%s'" % filler, shell=True, capture_output=True)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1, db=os.path.join(self.disk, "dst.db"))
            cp = self.sync("--quiet", expect=5)
            self.assertOneLine(cp.stderr)
            self.assertIn("disk full", cp.stderr)
            self.assertNotIn("I/O error", cp.stderr)
            os.remove(filler)
            for f in ("dst.db", "dst.db-wal", "dst.db-shm"):
                if os.path.exists(os.path.join(self.disk, f)):
                    os.remove(os.path.join(self.disk, f))
            self.sync("--quiet")
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))

    def test_read_only_target(self):
        """The target's file system read-only (remounted so; root ignores
        file modes): the sync stops with one line that names the file and
        what to do (exit 5), nothing applied; writable again, it goes on.
        Oracle: the tenant's rows (assertTenantCopy)."""
        self.make_source(teams=2, posts_per_team=50)
        with self.serve() as srv:
            self.make_target(srv.url, tenant=1, db=os.path.join(self.disk, "dst.db"))
            self.sync("--quiet")
            ft.on_source(self.src_db, "UPDATE posts SET body = 'while read-only'")
            cp = subprocess.run(["mount", "-o", "remount,ro", self.disk], capture_output=True,
                                text=True)
            self.assertEqual(cp.returncode, 0, cp.stderr)
            try:
                cp = self.sync("--quiet", expect=5)
            finally:
                subprocess.run(["mount", "-o", "remount,rw", self.disk], capture_output=True)
            self.assertOneLine(cp.stderr)
            self.assertRegex(cp.stderr.lower(), r"dst\.db.*(read-only|readonly)")
            self.assertIn("write access", cp.stderr)
            self.assertEqual(ft.query(self.dst_db, "SELECT count(*) FROM posts WHERE body = "
                                                   "'while read-only'"), [(0,)])
            self.sync("--quiet")
            self.assertTenantCopy(self.src_db, self.dst_db, 1, others=(2,))


if __name__ == "__main__":
    ft.main()
