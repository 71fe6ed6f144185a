#!/usr/bin/env bash
# bench/capture.sh - what change capture costs the application's writes on
# the source: the same writes into two copies of one database, one with
# `ferry-src install` and one without, in the same run, alternated.
#
#   bench/capture.sh [--pg | --unique] [ROWS]   (default 100000)
#
# --unique (SQLite): posts also has a UNIQUE index on body, on both
# databases, so that capture adds the triggers that see rows REPLACE
# deletes through it (capture.c, sqlite_replace_sql): the bulk UPDATE
# changes body (its BEFORE UPDATE trigger looks the new value up), the
# single-row UPDATEs do not.
#
# Each database holds bench/pgdata.sh's schema (teams, channels, posts,
# reactions; on SQLite the same tables) with ROWS posts already there. One
# round of writes, timed one by one: a bulk INSERT of ROWS new posts in one
# statement, a bulk UPDATE of them, 2,000 single-row UPDATEs each in its own
# transaction through one session (as an application writes), then a bulk
# DELETE of the new posts. Three rounds on each database, alternated; prints
# the medians, the ratio (with capture / without) and what capture adds per
# row. SQLite runs in WAL mode at synchronous=NORMAL, without
# PRAGMA foreign_keys, as applications run it by default. Needs a built
# tree (build/bin) or FERRY_BIN; --pg exits 77 without PostgreSQL.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${FERRY_BIN:-$here/build/bin}
pg=
unique=
case "${1:-}" in
--pg) pg=1 && shift ;;
--unique) unique=1 && shift ;;
esac
rows=${1:-100000}
singles=2000
rounds=3
work=$(mktemp -d "${TMPDIR:-/tmp}/ferry-bench-capture.XXXXXX")
cleanup() {
    if [ -n "$pg" ]; then "$here/scripts/pgcluster.sh" stop "$work/pg" >/dev/null 2>&1 || true; fi
    if [ -n "${FERRY_BENCH_KEEP:-}" ]; then echo "bench: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
[ -x "$bin/ferry-src" ] || { echo "bench: build first (cmake -S . -B build && cmake --build build)" >&2; exit 2; }

if [ -n "$pg" ]; then
    . "$here/bench/pgdata.sh"
    pg_bench_cluster "$here" "$work/pg" || exit $?
    plain=$("$here/scripts/pgcluster.sh" createdb "$work/pg" plain | tail -1)
    captured=$("$here/scripts/pgcluster.sh" createdb "$work/pg" captured | tail -1)
    pg_bench_schema "$plain" "$captured"
    pg_bench_data "$plain" "$rows"
    pg_bench_data "$captured" "$rows"
else
    plain=$work/plain.db
    captured=$work/captured.db
    python3 - "$here/bench" "$plain" "$captured" "$rows" "$unique" <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
import sqlitedata
for path in sys.argv[2:4]:
    sqlitedata.make(path, int(sys.argv[4]),
                    "CREATE UNIQUE INDEX posts_body ON posts(body)" if sys.argv[5] else None)
PY
fi

url=$captured
[ -n "$pg" ] || url=sqlite://$captured
cat >"$work/src.conf" <<CONF
[source]
database = $url
listen = 127.0.0.1:0
[scope]
root = teams
CONF
"$bin/ferry-src" install --config "$work/src.conf" >/dev/null

# one round on database $1: "insert update singles delete" seconds, one line
round() {
    if [ -n "$pg" ]; then
        python3 - "$1" "$rows" "$singles" "$pgbin/psql" <<'PY'
import subprocess, sys, time
url, rows, singles, psql = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
top = 10 * rows
def run(sql):
    t0 = time.perf_counter()
    subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url], input=sql.encode(),
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0
empty = min(run("SELECT 1;") for _ in range(3))  # psql's own start, taken off each
out = [run("INSERT INTO posts(id, channel_id, user_id, body, meta) SELECT i, 1 + i %% 60, "
           "i %% 97, 'new post ' || i, jsonb_build_object('n', i) "
           "FROM generate_series(%d, %d) i;" % (top + 1, top + rows))]
out.append(run("UPDATE posts SET body = body || ' (edited)' WHERE id > %d;" % top))
out.append(run("".join("UPDATE posts SET user_id = %d WHERE id = %d;\n" % (k % 97, top + 1 + k)
                       for k in range(singles))))
out.append(run("DELETE FROM posts WHERE id > %d;" % top))
print(" ".join("%.4f" % max(x - empty, 0) for x in out))
PY
    else
        python3 - "$1" "$rows" "$singles" <<'PY'
import sqlite3, sys, time
path, rows, singles = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
top = 10 * rows
db = sqlite3.connect(path, isolation_level=None)
db.execute("PRAGMA synchronous=NORMAL")
def timed(f):
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0
def one(sql, *args):
    return lambda: db.execute(sql, args)
out = [timed(one("""WITH RECURSIVE p(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM p WHERE i < ?)
INSERT INTO posts(id, channel_id, user_id, body, meta) SELECT i, 1 + i % 60, i % 97,
  'new post ' || i, '{"n": ' || i || '}' FROM p""", top + 1, top + rows))]
out.append(timed(one("UPDATE posts SET body = body || ' (edited)' WHERE id > ?", top)))
def singles_():
    for k in range(singles):
        db.execute("UPDATE posts SET user_id = ? WHERE id = ?", (k % 97, top + 1 + k))
out.append(timed(singles_))
out.append(timed(one("DELETE FROM posts WHERE id > ?", top)))
print(" ".join("%.4f" % x for x in out))
db.close()
PY
    fi
}

: >"$work/plain.times"
: >"$work/captured.times"
for r in $(seq "$rounds"); do
    round "$plain" >>"$work/plain.times"
    round "$captured" >>"$work/captured.times"
done

engine=SQLite
[ -n "$unique" ] && engine="SQLite, posts with a UNIQUE index on body"
[ -n "$pg" ] && engine=PostgreSQL
python3 - "$work/plain.times" "$work/captured.times" "$rows" "$singles" "$engine" <<'PY'
import os, sys
def load(p):
    return [list(map(float, l.split())) for l in open(p) if l.strip()]
plain, cap = load(sys.argv[1]), load(sys.argv[2])
rows, singles, engine = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
names = ["bulk INSERT of %d posts" % rows, "bulk UPDATE of them",
         "%d single-row UPDATEs, one a transaction" % singles, "bulk DELETE of them"]
per = [rows, rows, singles, rows]
med = lambda v: sorted(v)[len(v) // 2]
load1 = os.getloadavg()[0]
print("%s, %d posts there before, %d CPUs, load average %.2f at the end; medians of %d rounds"
      % (engine, rows, os.cpu_count(), load1, len(plain)))
print("%-44s %10s %10s %7s %14s" % ("", "without", "with", "ratio", "added per row"))
for i, n in enumerate(names):
    a = med([r[i] for r in plain])
    b = med([r[i] for r in cap])
    print("%-44s %8.3f s %8.3f s %6.2fx %11.1f us" % (n, a, b, b / a if a else 0,
                                                     (b - a) / per[i] * 1e6))
PY
