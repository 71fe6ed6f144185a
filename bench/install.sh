#!/usr/bin/env bash
# bench/install.sh - how long the application's writes wait while
# `ferry-src install` runs on a live PostgreSQL database.
#
#   bench/install.sh [ROWS]   (default 1400000 posts)
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
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${FERRY_BIN:-$here/build/bin}
rows=${1:-1400000}
writers=3
work=$(mktemp -d "${TMPDIR:-/tmp}/ferry-bench-install.XXXXXX")
cleanup() {
    "$here/scripts/pgcluster.sh" stop "$work/pg" >/dev/null 2>&1 || true
    if [ -n "${FERRY_BENCH_KEEP:-}" ]; then echo "bench: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
[ -x "$bin/ferry-src" ] || { echo "bench: build first (cmake -S . -B build && cmake --build build)" >&2; exit 2; }

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
