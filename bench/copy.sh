#!/usr/bin/env bash
# bench/copy.sh - ferry's initial copy of one big team (SQLite -> SQLite)
# against the in-process baseline, in the same run, on the same data.
#
#   bench/copy.sh [ROWS]        (default 1000000 rows in the big team)
#
# Prints: baseline time (sqlite3 ATTACH + INSERT ... SELECT ... WHERE scope)
# and ferry's copy time, medians of three runs of each, alternated, and the
# ratio; a 1,000-row delta (median of nine `ferry-dst sync` runs) and its
# share of the copy; peak RSS of each agent.
# Needs a built tree (build/bin) or FERRY_BIN.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${FERRY_BIN:-$here/build/bin}
rows=${1:-1000000}
work=$(mktemp -d "${TMPDIR:-/tmp}/ferry-bench.XXXXXX")
trap 'kill $srcpid 2>/dev/null || true; [ -n "${FERRY_BENCH_KEEP:-}" ] || rm -rf "$work"' EXIT
srcpid=

[ -x "$bin/ferry-src" ] || { echo "bench: build first (cmake -S . -B build && cmake --build build)" >&2; exit 2; }
. "$here/bench/agents.sh"
other=$((rows / 5))
echo "bench: generating a team of $rows posts (+ reactions) and two teams of $other posts in $work"
FERRY_HERE="$here" python3 - "$work/src.db" "$rows" "$other" <<'PY'
import importlib.util, os, sqlite3, sys
path, rows, other = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
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
# posts interleave teams: ids of the big team are not one contiguous range
db.execute("""
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
INSERT INTO posts(id, channel_id, user_id, body, score, data)
SELECT i, 3 * (i % 20) + CASE WHEN i % 7 < 5 THEN 1 WHEN i % 7 = 5 THEN 2 ELSE 3 END,
       NULL, printf('post %d: lorem ipsum dolor sit amet, consectetur adipiscing elit', i),
       i * 0.25, randomblob(16)
FROM n""", (rows * 7 // 5,))
db.execute("""
INSERT INTO reactions SELECT id, ':+1:', id % 97 FROM posts WHERE id % 5 = 0""")
db.execute("COMMIT")
db.close()
PY
scope_pred_posts='channel_id IN (SELECT id FROM channels WHERE team_id = 1)'
team_rows=$(sqlite3 "$work/src.db" "SELECT (SELECT count(*) FROM posts WHERE $scope_pred_posts) + (SELECT count(*) FROM reactions WHERE post_id IN (SELECT id FROM posts WHERE $scope_pred_posts))")
all_rows=$(sqlite3 "$work/src.db" "SELECT (SELECT count(*) FROM posts) + (SELECT count(*) FROM reactions)")
echo "bench: team 1 has $team_rows rows; the database $all_rows"

bench_keys "$work"
bench_src_conf "$work" "sqlite://$work/src.db" "exclude = audit_log"
"$bin/ferry-src" install --config "$work/src.conf" >/dev/null
bench_authorise "$work"

# The shell's own clock, read without a subshell: a `date` process would add
# its start-up (about a millisecond) to every interval, which matters for
# the delta.
elapsed() { python3 -c "print('%.4f' % ($2 - $1))"; }
# "median min max" of the arguments
median() { python3 -c "import sys; v = sorted(map(float, sys.argv[1:])); print('%.4f %.4f %.4f' % (v[len(v) // 2], v[0], v[-1]))" "$@"; }

# Baseline: the same rows, in-process, one transaction, no network, no
# checks; one run into a fresh base.db, printing its seconds.
baseline() {
    rm -f "$work"/base.db*
    local t0=${EPOCHREALTIME/,/.}
    sqlite3 "$work/base.db" >/dev/null <<SQL
PRAGMA journal_mode=WAL;
$schema
ATTACH '$work/src.db' AS s;
BEGIN;
INSERT INTO main.teams SELECT * FROM s.teams WHERE id = 1;
INSERT INTO main.channels SELECT * FROM s.channels WHERE team_id IN (SELECT id FROM s.teams WHERE id = 1);
INSERT INTO main.posts SELECT * FROM s.posts WHERE channel_id IN (SELECT id FROM s.channels WHERE team_id IN (SELECT id FROM s.teams WHERE id = 1));
INSERT INTO main.reactions SELECT * FROM s.reactions WHERE post_id IN (SELECT id FROM s.posts WHERE channel_id IN (SELECT id FROM s.channels WHERE team_id = 1));
COMMIT;
SQL
    local t1=${EPOCHREALTIME/,/.}
    elapsed "$t0" "$t1"
}

schema=$(sqlite3 "$work/src.db" "SELECT sql || ';' FROM sqlite_schema WHERE type = 'table' AND name IN ('teams', 'channels', 'posts', 'reactions')")

bench_serve "$work"
bench_dst_conf "$work" "sqlite://$work/dst.db"
# three baselines and three copies (each into a fresh target), alternated:
# one run of either swings by up to half on a shared virtual machine
bases=
copies=
for i in 1 2 3; do
    bases="$bases $(baseline)"
    rm -rf "$work"/dst.db* "$work/state"
    t0=${EPOCHREALTIME/,/.}
    /usr/bin/time -a -f "%M" -o "$work/dst.rss" "$bin/ferry-dst" sync --quiet --config "$work/dst.conf"
    t1=${EPOCHREALTIME/,/.}
    copies="$copies $(elapsed "$t0" "$t1")"
done
base=$(median $bases)
copy=$(median $copies)
copied=$(sqlite3 "$work/dst.db" "SELECT (SELECT count(*) FROM posts) + (SELECT count(*) FROM reactions)")

# Nine 1,000-row deltas (each a `ferry-dst sync` process, as cron would run
# it), each over other rows: the median is the figure, with the range (this
# VM's run-to-run noise is a few milliseconds, the size of the target).
deltas=
for i in 0 1 2 3 4 5 6 7 8; do
    sqlite3 "$work/src.db" "UPDATE posts SET body = body || ' (edited)' WHERE id IN (SELECT id FROM posts WHERE $scope_pred_posts LIMIT 1000 OFFSET $((i * 1000)))"
    t0=${EPOCHREALTIME/,/.}
    "$bin/ferry-dst" sync --quiet --config "$work/dst.conf"
    t1=${EPOCHREALTIME/,/.}
    deltas="$deltas $(elapsed "$t0" "$t1")"
done
# peak RSS of a delta process, in a run of its own (/usr/bin/time is a
# process too: it would count in the times above)
sqlite3 "$work/src.db" "UPDATE posts SET body = body || ' (edited)' WHERE id IN (SELECT id FROM posts WHERE $scope_pred_posts LIMIT 1000 OFFSET 9000)"
/usr/bin/time -f "%M" -o "$work/dst2.rss" "$bin/ferry-dst" sync --quiet --config "$work/dst.conf"
cat "$work/dst2.rss" >>"$work/dst.rss"
delta=$(median $deltas)
# The same 1,000-row delta inside a running follow (one process, one
# session): the run's own duration from runs.log, without process start and
# handshake. The delta above is the figure the target is about.
before=$(wc -l <"$work/state/runs.log")
"$bin/ferry-dst" follow --quiet --interval 1 --config "$work/dst.conf" 2>"$work/follow.log" &
followpid=$!
sleep 1.5
sqlite3 "$work/src.db" "UPDATE posts SET body = body || ' (again)' WHERE id IN (SELECT id FROM posts WHERE $scope_pred_posts LIMIT 1000)"
warm=
for _ in $(seq 100); do
    warm=$(python3 - "$work/state/runs.log" "$before" <<'PY'
import json, sys
for line in open(sys.argv[1]).readlines()[int(sys.argv[2]):]:
    e = json.loads(line)
    if e.get("event") == "end" and e.get("upserted") == 1000:
        print(e["secs"])
PY
)
    [ -n "$warm" ] && break
    sleep 0.1
done
kill "$followpid" 2>/dev/null || true
wait "$followpid" 2>/dev/null || true
warm=${warm:-nan}
src_rss=$(awk '/VmHWM/ {print $2}' "/proc/$srcpid/status")
dst_rss=$(sort -n "$work/dst.rss" | tail -1)

python3 - "$base" "$copy" "$delta" "$team_rows" "$copied" "$src_rss" "$dst_rss" "$warm" <<'PY'
import sys
base, bmin, bmax = map(float, sys.argv[1].split())
copy, cmin, cmax = map(float, sys.argv[2].split())
delta, dmin, dmax = map(float, sys.argv[3].split())
team, copied, src_rss, dst_rss = map(int, sys.argv[4:8])
warm = float(sys.argv[8].split()[-1]) if sys.argv[8] != "nan" else float("nan")
print("rows in team 1            %d (posts + reactions copied: %d)" % (team, copied))
print("baseline ATTACH+INSERT    %.3f s   (median of 3: %.3f-%.3f s)" % (base, bmin, bmax))
print("ferry initial copy        %.3f s   (median of 3: %.3f-%.3f s, alternated with the baseline)"
      % (copy, cmin, cmax))
print("  ratio                   %.2fx (target <= 2x, aim 1.3x)" % (copy / base))
print("ferry 1,000-row delta     %.3f s   %.2f%% of the copy (target < 1%%; median of 9 "
      "sync processes, %.3f-%.3f s)" % (delta, 100 * delta / copy, dmin, dmax))
print("  same, in a running follow %.3f s   %.2f%% of the copy (no process start, no handshake)"
      % (warm, 100 * warm / copy))
print("peak RSS ferry-src        %.1f MB (target < 64 MB)" % (src_rss / 1024))
print("peak RSS ferry-dst        %.1f MB (target < 64 MB)" % (dst_rss / 1024))
PY
