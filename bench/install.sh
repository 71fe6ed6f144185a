#!/usr/bin/env bash
# bench/install.sh - how long the application's writes wait while
# `ferry-src install` runs on a live PostgreSQL database.
#
#   bench/install.sh [--sqlite [--again]] [ROWS]   (default 1400000 posts)
#
# One database with bench/pgdata.sh's schema and ROWS posts (a reaction on
# every fifth). pgbench runs WRITERS (3) clients of small write
# transactions (a post's score updated, a post inserted, a reaction added),
# first for 8 s with nothing else (the baseline), then again while
# `ferry-src install` runs, from 1 s after they start to its end. Prints,
# for both, the transactions, their rate, and their latencies (median, p99,
# max) from pgbench's per-transaction log, with the ratios; and install's
# wall time and the time of its steps (its log). Needs a built tree
# (build/bin) or FERRY_BIN; exits 77 without PostgreSQL.
#
# --sqlite: the same on a SQLite database (WAL, synchronous=NORMAL, the
# same tables): WRITERS Python threads, each its own connection with a
# busy_timeout of 30 s, run the same transaction (BEGIN IMMEDIATE) in a
# loop; a transaction's latency includes its wait for the write lock.
# --again: install once before the baseline, so that the install measured
# is one over an earlier install (it checks the key maps it keeps).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${FERRY_BIN:-$here/build/bin}
sqlite=
again=
if [ "${1:-}" = --sqlite ]; then
    sqlite=1
    shift
    if [ "${1:-}" = --again ]; then
        again=1
        shift
    fi
fi
rows=${1:-1400000}
writers=3
work=$(mktemp -d "${TMPDIR:-/tmp}/ferry-bench-install.XXXXXX")
cleanup() {
    [ -n "$sqlite" ] || "$here/scripts/pgcluster.sh" stop "$work/pg" >/dev/null 2>&1 || true
    if [ -n "${FERRY_BENCH_KEEP:-}" ]; then echo "bench: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
[ -x "$bin/ferry-src" ] || { echo "bench: build first (cmake -S . -B build && cmake --build build)" >&2; exit 2; }

# PostgreSQL: the database, pgbench's writers, install; sets t0 and t1 (its body is not
# indented: its here-documents end at the start of a line)
run_pg() {
. "$here/bench/pgdata.sh"
pg_bench_cluster "$here" "$work/pg" || exit $?
db=$("$here/scripts/pgcluster.sh" createdb "$work/pg" src | tail -1)
pg_bench_schema "$db"
pg_bench_data "$db" "$rows"
cat >"$work/src.conf" <<CONF
[source]
database = $db
listen = 127.0.0.1:0
[scope]
root = teams
CONF
cat >"$work/writes.sql" <<SQL
\set id random(1, $rows)
BEGIN;
UPDATE posts SET score = score + 1 WHERE id = :id;
INSERT INTO posts(channel_id, body) VALUES (1 + :id % 60, 'written during the bench');
INSERT INTO reactions VALUES (:id, ':w:', :client_id) ON CONFLICT DO NOTHING;
END;
SQL
chmod 644 "$work/writes.sql"

# pgbench for $2 seconds, its per-transaction log as $work/$1.*
writes() {
    (cd "$work" && "$pgbin/pgbench" -n -c "$writers" -j "$writers" -T "$2" -f writes.sql \
        --log --log-prefix="$1" "$db" >/dev/null 2>"$work/$1.err") || {
        cat "$work/$1.err" >&2
        return 1
    }
}

echo "bench: $rows posts, $writers writers; baseline 8 s" >&2
writes base 8
echo "bench: writers again, install 1 s after they start" >&2
writes during 30 &
wpid=$!
sleep 1
t0=$(date +%s.%N)
"$bin/ferry-src" install --config "$work/src.conf" 2>"$work/install.log"
t1=$(date +%s.%N)
wait "$wpid"
}

if [ -n "$sqlite" ]; then
    # the writers log each transaction as pgbench does (base.0, during.0): one report below
    python3 - "$work" "$rows" "$writers" "$bin/ferry-src" "$here/bench" "$again" <<'PY'
import os, sqlite3, subprocess, sys, threading, time
work, rows, writers, src = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
again = sys.argv[6]
sys.path.insert(0, sys.argv[5])
import sqlitedata
path = os.path.join(work, "src.db")
sqlitedata.make(path, rows)
conf = os.path.join(work, "src.conf")
with open(conf, "w") as f:
    f.write("[source]\ndatabase = sqlite://%s\nlisten = 127.0.0.1:0\n[scope]\nroot = teams\n"
            % path)

def writes(name, secs=None, during=None):
    """writers for secs, or until during() returns; their log as pgbench's in work/name.0"""
    out, stop = [], threading.Event()
    def writer(w):
        conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        conn.execute("PRAGMA synchronous=NORMAL")
        k = w
        while not stop.is_set():
            k += 7919
            pid = 1 + k % rows
            t0 = time.time()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE posts SET score = score + 1 WHERE id = ?", (pid,))
            conn.execute("INSERT INTO posts(channel_id, body) VALUES (?, "
                         "'written during the bench')", (1 + pid % 60,))
            conn.execute("INSERT OR IGNORE INTO reactions VALUES (?, ':w:', ?)", (pid, w))
            conn.execute("COMMIT")
            t1 = time.time()
            out.append((w, t1, t1 - t0))
        conn.close()
    ts = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for t in ts:
        t.start()
    if during:
        during()
    else:
        time.sleep(secs)
    stop.set()
    for t in ts:
        t.join()
    with open(os.path.join(work, name + ".0"), "w") as f:
        for i, (w, end, lat) in enumerate(out):
            f.write("%d %d %d 0 %d %d\n" % (w, i, lat * 1e6, int(end), (end % 1) * 1e6))

def install():
    time.sleep(1)
    with open(os.path.join(work, "install.log"), "w") as log:
        t0 = time.time()
        cp = subprocess.run([src, "install", "--config", conf], stderr=log,
                            stdout=subprocess.DEVNULL)
        t1 = time.time()
    if cp.returncode:
        sys.exit("bench: install failed, see " + os.path.join(work, "install.log"))
    with open(os.path.join(work, "install.time"), "w") as f:
        f.write("%.6f %.6f\n" % (t0, t1))

if again:
    subprocess.run([src, "install", "--config", conf], check=True, capture_output=True)
print("bench: %d posts, %d writers; baseline 8 s" % (rows, writers), file=sys.stderr)
writes("base", 8)
print("bench: writers again, install 1 s after they start", file=sys.stderr)
writes("during", during=install)
PY
    read -r t0 t1 <"$work/install.time"
else
    run_pg
fi

python3 - "$work" "$t0" "$t1" <<'PY'
import glob, os, sys
work, t0, t1 = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])

def lat(prefix, lo=None, hi=None):
    """latencies (ms) of the transactions that ended in [lo, hi]"""
    out = []
    for path in glob.glob(os.path.join(work, prefix + ".*")):
        if path.endswith(".err"):
            continue
        for line in open(path):
            f = line.split()
            end = int(f[4]) + int(f[5]) / 1e6
            if lo is not None and not lo <= end <= hi:
                continue
            out.append(int(f[2]) / 1000.0)
    return sorted(out)

def q(v, p):
    return v[min(len(v) - 1, int(p * len(v)))]

base = lat("base")
# the baseline's first and last second are pgbench starting and stopping
during = lat("during", t0, t1)
secs_base = 8.0
secs_during = t1 - t0
rows = [("baseline (nothing else)", base, secs_base), ("while install runs", during, secs_during)]
print("| writes | transactions | per second | median | p99 | max |")
print("|--------|-------------:|-----------:|-------:|----:|----:|")
for name, v, secs in rows:
    print("| %s | %d | %.0f | %.1f ms | %.1f ms | %.1f ms |"
          % (name, len(v), len(v) / secs, q(v, 0.5), q(v, 0.99), v[-1]))
print("ratio (install / baseline): rate %.2f, median %.2f, p99 %.2f, max %.2f"
      % ((len(during) / secs_during) / (len(base) / secs_base), q(during, 0.5) / q(base, 0.5),
         q(during, 0.99) / q(base, 0.99), during[-1] / base[-1]))
print("install: %.2f s wall" % (t1 - t0))
for line in open(os.path.join(work, "install.log")):
    if "install:" in line:
        print("  " + line.split("install: ", 1)[1].rstrip())
PY
