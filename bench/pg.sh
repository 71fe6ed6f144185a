#!/usr/bin/env bash
# bench/pg.sh - ferry's initial copy of one big team PostgreSQL -> PostgreSQL
# against psql's COPY pipeline, in the same run, on the same data.
#
#   bench/pg.sh [ROWS]          (default 1000000 posts in the big team)
#
# One throw-away cluster (scripts/pgcluster.sh, unix socket, fsync off) holds
# the source and two empty targets with the same schema. The baseline copies
# the team table by table, parents first, with
#   psql -c "COPY (SELECT ... WHERE <scope>) TO STDOUT" | psql -c "COPY t FROM STDIN"
# and, like ferry's applier, with session_replication_role = replica on the
# target (no foreign-key triggers on either side). ferry runs as deployed:
# ferry-src serve and ferry-dst sync, authenticated, over loopback HTTP.
# Prints both times and the ratio, then a 1,000-row delta. Needs a built tree
# (build/bin) or FERRY_BIN. Exit 77 without PostgreSQL server binaries.
# FERRY_BENCH_KEEP=1 keeps the directory (cluster stopped; start it again with
# scripts/pgcluster.sh start DIR/pg); FERRY_BENCH_PGLOG=1 logs every statement
# of ferry's copy with its duration to DIR/pg/server.log (slower: not a figure).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${FERRY_BIN:-$here/build/bin}
rows=${1:-1000000}
work=$(mktemp -d "${TMPDIR:-/tmp}/ferry-bench-pg.XXXXXX")
srcpid=
cleanup() {
    [ -n "$srcpid" ] && kill "$srcpid" 2>/dev/null || true
    "$here/scripts/pgcluster.sh" stop "$work/pg" >/dev/null 2>&1 || true
    if [ -n "${FERRY_BENCH_KEEP:-}" ]; then echo "bench: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

[ -x "$bin/ferry-src" ] || { echo "bench: build first (cmake -S . -B build && cmake --build build)" >&2; exit 2; }
. "$here/bench/agents.sh"
. "$here/bench/pgdata.sh"
pg_bench_cluster "$here" "$work/pg" || exit $?
src=$("$here/scripts/pgcluster.sh" createdb "$work/pg" src | tail -1)
base=$("$here/scripts/pgcluster.sh" createdb "$work/pg" dst_base | tail -1)
dst=$("$here/scripts/pgcluster.sh" createdb "$work/pg" dst_ferry | tail -1)

pg_bench_schema "$src" "$base" "$dst"

total=$((rows * 7 / 5))
echo "bench: generating $total posts ($rows in team 1, interleaved with two smaller teams)"
pg_bench_data "$src" "$total"
scope_teams="id = 1"
scope_channels="team_id IN (SELECT id FROM teams WHERE id = 1)"
scope_posts="channel_id IN (SELECT id FROM channels WHERE team_id = 1)"
scope_reactions="post_id IN (SELECT id FROM posts WHERE $scope_posts)"
team_rows=$(psql -At -d "$src" -c "SELECT (SELECT count(*) FROM posts WHERE $scope_posts) + (SELECT count(*) FROM reactions WHERE $scope_reactions)")
echo "bench: team 1 has $team_rows posts and reactions"

bench_keys "$work" --bits 2048 2>/dev/null
bench_src_conf "$work" "$src"
bench_authorise "$work"
now() { date +%s.%N; }
elapsed() { python3 -c "print('%.3f' % ($2 - $1))"; }
t0=$(now)
"$bin/ferry-src" install --config "$work/src.conf" >/dev/null
t1=$(now)
install=$(elapsed "$t0" "$t1")

# Baseline: COPY out of the source, COPY into the target, table by table.
t0=$(now)
for t in teams channels posts reactions; do
    eval "pred=\$scope_$t"
    psql -d "$src" -c "COPY (SELECT * FROM $t WHERE $pred) TO STDOUT" |
        PGOPTIONS="-c session_replication_role=replica" psql -d "$base" -c "COPY $t FROM STDIN"
done
t1=$(now)
basetime=$(elapsed "$t0" "$t1")

bench_serve "$work"
bench_dst_conf "$work" "$dst"
if [ -n "${FERRY_BENCH_PGLOG:-}" ]; then
    psql -d "$src" -c "ALTER SYSTEM SET log_min_duration_statement = 0" -c "SELECT pg_reload_conf()" >/dev/null
    echo "bench: statements logged to $work/pg/server.log"
fi
t0=$(now)
/usr/bin/time -f "%M" -o "$work/dst.rss" "$bin/ferry-dst" sync --quiet --config "$work/dst.conf"
t1=$(now)
copy=$(elapsed "$t0" "$t1")
for t in teams channels posts reactions; do
    a=$(psql -At -d "$base" -c "SELECT count(*), md5(string_agg(x::text, '|' ORDER BY x::text)) FROM $t x")
    b=$(psql -At -d "$dst" -c "SELECT count(*), md5(string_agg(x::text, '|' ORDER BY x::text)) FROM $t x")
    [ "$a" = "$b" ] || { echo "bench: $t differs between the baseline and ferry: $a vs $b" >&2; exit 1; }
done

psql -d "$src" -c "UPDATE posts SET body = body || ' (edited)' WHERE id IN (SELECT id FROM posts WHERE $scope_posts ORDER BY id LIMIT 1000)"
t0=$(now)
"$bin/ferry-dst" sync --quiet --config "$work/dst.conf"
t1=$(now)
delta=$(elapsed "$t0" "$t1")
edited=$(psql -At -d "$dst" -c "SELECT count(*) FROM posts WHERE body LIKE '%(edited)'")
[ "$edited" = 1000 ] || { echo "bench: the delta brought $edited edited posts, not 1000" >&2; exit 1; }
src_rss=$(awk '/VmHWM/ {print $2}' "/proc/$srcpid/status")
dst_rss=$(cat "$work/dst.rss")

python3 - "$basetime" "$copy" "$delta" "$install" "$team_rows" "$src_rss" "$dst_rss" <<'PY'
import os, sys
base, copy, delta, install = map(float, sys.argv[1:5])
team, src_rss, dst_rss = map(int, sys.argv[5:8])
print("machine                        %d CPUs, load average %s" % (
    os.cpu_count(), " ".join(open("/proc/loadavg").read().split()[:3])))
print("rows in team 1                 %d (posts + reactions), identical on both targets" % team)
print("ferry-src install (backfill)   %.3f s" % install)
print("baseline psql COPY | COPY      %.3f s" % base)
print("ferry initial copy (sync)      %.3f s   ratio %.2fx (goal <= 1.3x, aim 1.1x)"
      % (copy, copy / base))
print("ferry 1,000-row delta (sync)   %.3f s" % delta)
print("peak RSS ferry-src / ferry-dst %.1f MB / %.1f MB" % (src_rss / 1024, dst_rss / 1024))
PY
