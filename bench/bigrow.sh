#!/usr/bin/env bash
# bench/bigrow.sh - what one big row costs the agents (SQLite -> SQLite).
#
#   bench/bigrow.sh [MB]        (default 256: the big row's blob, in MB)
#
# A team of 20,000 posts (bench/sqlitedata.py) is copied into a fresh target
# twice in the same run: once as it is (the baseline), once with one more
# post carrying a blob of MB megabytes; then that blob is rewritten, 1,000
# other posts of the team are edited, and the changes come as a delta. Each step runs against a freshly started
# ferry-src, so that both agents' peak resident memory (VmHWM) is that of
# the step. Prints wall time and peak RSS of each agent per step, and what
# the big row added to each peak, as a multiple of its size.
# Needs a built tree (build/bin) or FERRY_BIN.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${FERRY_BIN:-$here/build/bin}
mb=${1:-256}
work=$(mktemp -d "${TMPDIR:-/tmp}/ferry-bench-bigrow.XXXXXX")
srcpid=
trap 'kill $srcpid 2>/dev/null || true; [ -n "${FERRY_BENCH_KEEP:-}" ] || rm -rf "$work"' EXIT

[ -x "$bin/ferry-src" ] || { echo "bench: build first (cmake -S . -B build && cmake --build build)" >&2; exit 2; }
. "$here/bench/agents.sh"
python3 "$here/bench/sqlitedata.py" "$work/src.db" 20000
bench_keys "$work"
bench_src_conf "$work" "sqlite://$work/src.db"
bench_authorise "$work"
"$bin/ferry-src" install --config "$work/src.conf" >/dev/null

# serve: a fresh ferry-src (its peak memory is then the next step's); dst.conf points at it
serve() {
    bench_serve "$work"
    bench_dst_conf "$work" "sqlite://$work/dst.db"
}
# step NAME [fresh]: one ferry-dst sync (into a fresh target with "fresh"); NAME.{wall,dst,src}
step() {
    local t0 t1
    serve
    if [ "${2:-}" = fresh ]; then rm -rf "$work/state" "$work"/dst.db*; fi
    t0=$(date +%s.%N)
    /usr/bin/time -f "%M" -o "$work/$1.dst" "$bin/ferry-dst" sync --quiet --config "$work/dst.conf"
    t1=$(date +%s.%N)
    python3 -c "print('%.3f' % ($t1 - $t0))" >"$work/$1.wall"
    awk '/^VmHWM/ {print $2}' "/proc/$srcpid/status" >"$work/$1.src"
}

step base fresh
# the big row first in key order, ahead of the small rows of its table
sqlite3 "$work/src.db" "INSERT INTO posts(id, channel_id, body) VALUES (0, 1, 'big');
UPDATE posts SET meta = randomblob($mb * 1048576) WHERE id = 0"
step copy fresh
# the delta: the big row rewritten among 1,000 small edits of the team's posts
sqlite3 "$work/src.db" "UPDATE posts SET meta = randomblob($mb * 1048576) WHERE id = 0;
UPDATE posts SET body = body || ' (edited)' WHERE id IN (SELECT id FROM posts WHERE channel_id IN
  (SELECT id FROM channels WHERE team_id = 1) AND id > 0 ORDER BY id LIMIT 1000)"
step delta
# the oracle: the blob arrived whole
want=$(sqlite3 "$work/src.db" "SELECT length(meta), hex(substr(meta, 1 + $mb * 524288, 16)) FROM posts WHERE id = 0")
got=$(sqlite3 "$work/dst.db" "SELECT length(meta), hex(substr(meta, 1 + $mb * 524288, 16)) FROM posts WHERE id = 0")
[ "$want" = "$got" ] || { echo "bench: the big row differs on the target ($got, expected $want)" >&2; exit 1; }
edited=$(sqlite3 "$work/dst.db" "SELECT count(*) FROM posts WHERE body LIKE '% (edited)'")
[ "$edited" = 1000 ] || { echo "bench: the delta brought $edited edited posts, not 1000" >&2; exit 1; }

python3 - "$work" "$mb" "$(nproc)" "$(cut -d' ' -f1 /proc/loadavg)" <<'PY'
import os, sys
work, mb, ncpu, load = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def f(step, what):
    return float(open(os.path.join(work, "%s.%s" % (step, what))).read())
print("one row of %d MB beside a team of 20,000 posts (%s CPUs, load %s)" % (mb, ncpu, load))
print("%-34s %8s %14s %14s" % ("", "wall", "ferry-dst RSS", "ferry-src RSS"))
for step, what in (("base", "copy without the big row"), ("copy", "copy with it"),
                   ("delta", "it rewritten + 1,000 edits, a delta")):
    print("%-34s %6.2f s %11.0f MB %11.0f MB" % (what, f(step, "wall"), f(step, "dst") / 1024,
                                                 f(step, "src") / 1024))
for step in ("copy", "delta"):
    print("%-34s ferry-dst +%.1fx, ferry-src +%.1fx the row's size" % (
        "peak RSS added, " + step, (f(step, "dst") - f("base", "dst")) / 1024 / mb,
        (f(step, "src") - f("base", "src")) / 1024 / mb))
PY
