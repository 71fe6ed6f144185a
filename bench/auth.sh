#!/usr/bin/env bash
# bench/auth.sh - what authentication costs: the handshake, and its share of
# the initial copy of a 200,000-row team (SQLite -> SQLite, loopback).
#
#   bench/auth.sh [ROWS] [N]     (default 200000 rows in the team, N = 50 handshakes)
#
# There is no unauthenticated path to compare with (ferry has none), so the
# cost is measured with ferry's own functions (bench/auth_bench.c, built here
# against the tree's libraries): the median of N complete handshakes (3072-
# and 2048-bit keys: two RSA-PSS signatures, two verifications, one RSA-OAEP
# wrap and unwrap), and the time both agents spend on the MACs of the copy
# (SHA-256 of every request and answer body, four HMACs per request) for the
# same number of requests and bytes the copy moved (read from the source's
# /metrics). The ratio is (handshake + MACs) / the authenticated copy time.
# Needs a built tree (build/bin and its libraries) or FERRY_BUILD=DIR.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${FERRY_BUILD:-$here/build}
bin=$build/bin
rows=${1:-200000}
n=${2:-50}
work=$(mktemp -d "${TMPDIR:-/tmp}/ferry-bench-auth.XXXXXX")
srcpid=
trap '[ -z "$srcpid" ] || kill "$srcpid" 2>/dev/null || true; [ -n "${FERRY_BENCH_KEEP:-}" ] || rm -rf "$work"' EXIT

[ -x "$bin/ferry-src" ] && [ -f "$build/libferry_common.a" ] || {
    echo "bench: build first (cmake -S . -B build && cmake --build build), or set FERRY_BUILD" >&2
    exit 2
}
. "$here/bench/agents.sh"
cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -I"$here" -o "$work/auth_bench" \
    "$here/bench/auth_bench.c" "$build/libferry_common.a" $(pkg-config --libs libcrypto) -lm

echo "bench: generating a team of $rows rows (posts + reactions) and two smaller teams in $work"
FERRY_HERE="$here" python3 - "$work/src.db" "$rows" <<'PY'
import importlib.util, os, sqlite3, sys
path, rows = sys.argv[1], int(sys.argv[2])
spec = importlib.util.spec_from_file_location(
    "sample_app", os.path.join(os.environ["FERRY_HERE"], "scripts", "sample_app.py"))
app = importlib.util.module_from_spec(spec)
spec.loader.exec_module(app)
db = sqlite3.connect(path)
db.executescript("PRAGMA journal_mode=WAL;" + app.SCHEMA)
db.execute("BEGIN")
db.executemany("INSERT INTO teams VALUES (?, ?)", [(t, "team %d" % t) for t in (1, 2, 3)])
db.executemany("INSERT INTO channels VALUES (?, ?, ?)",
               [(c, 1 + (c - 1) % 3, "channel %d" % c) for c in range(1, 61)])
# team 1: 5/6 of its rows are posts, 1/6 reactions; posts of the teams interleave
posts1 = rows * 5 // 6
db.execute("""
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
INSERT INTO posts(id, channel_id, user_id, body, score, data)
SELECT i, 3 * (i % 20) + CASE WHEN i % 6 < 4 THEN 1 WHEN i % 6 = 4 THEN 2 ELSE 3 END,
       NULL, printf('post %d: lorem ipsum dolor sit amet, consectetur adipiscing elit', i),
       i * 0.25, randomblob(16)
FROM n""", (posts1 * 6 // 4,))
db.execute("""
INSERT INTO reactions SELECT id, ':+1:', id % 97 FROM posts
WHERE channel_id IN (SELECT id FROM channels WHERE team_id = 1)
  AND rowid IN (SELECT rowid FROM posts WHERE channel_id IN
                (SELECT id FROM channels WHERE team_id = 1) ORDER BY id LIMIT ?)""",
           (rows - posts1,))
db.execute("COMMIT")
db.close()
PY
team_rows=$(sqlite3 "$work/src.db" "SELECT (SELECT count(*) FROM posts WHERE channel_id IN (SELECT id FROM channels WHERE team_id = 1)) + (SELECT count(*) FROM reactions WHERE post_id IN (SELECT p.id FROM posts p JOIN channels c ON c.id = p.channel_id WHERE c.team_id = 1))")

bench_keys "$work"
bench_src_conf "$work" "sqlite://$work/src.db" "exclude = audit_log"
bench_authorise "$work"
"$bin/ferry-src" install --config "$work/src.conf" >/dev/null
bench_serve "$work"
bench_dst_conf "$work" "sqlite://$work/dst.db"

now() { date +%s.%N; }
t0=$(now)
"$bin/ferry-dst" sync --quiet --config "$work/dst.conf"
t1=$(now)
metrics=$(curl -s "http://127.0.0.1:$port/metrics")
copied=$(sqlite3 "$work/dst.db" "SELECT (SELECT count(*) FROM posts) + (SELECT count(*) FROM reactions)")
reqs=$(echo "$metrics" | awk '/^ferry_requests_total\{endpoint="(manifest|snapshot|changes)"\}/ {s += $2} END {print s}')
bytes=$(echo "$metrics" | awk '/^ferry_bytes_served_total / {print $2}')
sessions=$(echo "$metrics" | awk '/^ferry_sessions_opened_total / {print $2}')

hs3072=$("$work/auth_bench" hs 3072 "$n")
hs2048=$("$work/auth_bench" hs 2048 "$n")
mac=$("$work/auth_bench" mac "$bytes" "$reqs")

python3 - "$t0" "$t1" "$hs3072" "$hs2048" "$mac" "$team_rows" "$copied" "$reqs" "$bytes" \
    "$sessions" "$n" <<'PY'
import sys
t0, t1, hs3, hs2, mac = map(float, sys.argv[1:6])
team, copied, reqs, nbytes, sessions, n = map(int, sys.argv[6:12])
copy = t1 - t0
cost = sessions * hs3 / 1000 + mac
print("rows in team 1                 %d (copied: %d)" % (team, copied))
print("handshake, 3072-bit keys       %.2f ms (median of %d)" % (hs3, n))
print("handshake, 2048-bit keys       %.2f ms (median of %d)" % (hs2, n))
print("authenticated copy             %.3f s (%d requests, %.1f MB of answers, %d session)"
      % (copy, reqs, nbytes / 1e6, sessions))
print("MACs of the copy, both agents  %.4f s" % mac)
print("authentication share           %.3f s of %.3f s = %.2f%% (target < 5%%)"
      % (cost, copy, 100 * cost / copy))
print("copy without it (estimate)     %.3f s; ratio with/without %.4f" % (copy - cost, copy / (copy - cost)))
PY
