#!/usr/bin/env bash
# bench/verify.sh - verify of one big unchanged team against its initial
# copy, in the same run, on the same data (SQLite -> SQLite, or with --pg
# PostgreSQL -> PostgreSQL; authenticated as deployed).
#
#   bench/verify.sh [--pg] [ROWS]   (default 1000000 posts in the big team)
#
# Prints: the initial copy time, the time of `ferry-dst verify` of the
# unchanged team and its share of the copy (goal: under 25%), both medians
# of three copies into a fresh target each followed by a verify, then the time
# of a verify that finds 100 rows changed behind ferry's back (side by side
# in key order), of `verify --repair` fixing them, of a verify that finds
# 100 rows changed apart (every ~10,000th post), and of the syncs after a
# column added to posts with the same DEFAULT on both sides (compared, not
# copied) and without it on the target (compared, then copied again). Needs a built tree
# (build/bin) or FERRY_BIN.
# --pg: one throw-away cluster (scripts/pgcluster.sh, as bench/pg.sh: unix
# socket, fsync off, 1 GB of shared buffers) holds the source and the
# target, with bench/pg.sh's schema and data; exit 77 without PostgreSQL.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${FERRY_BIN:-$here/build/bin}
pg=
if [ "${1:-}" = --pg ]; then
    pg=1
    shift
fi
rows=${1:-1000000}
work=$(mktemp -d "${TMPDIR:-/tmp}/ferry-bench-verify.XXXXXX")
srcpid=
cleanup() {
    if [ -n "$srcpid" ]; then kill "$srcpid" 2>/dev/null || true; fi
    if [ -n "$pg" ]; then "$here/scripts/pgcluster.sh" stop "$work/pg" >/dev/null 2>&1 || true; fi
    [ -n "${FERRY_BENCH_KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

[ -x "$bin/ferry-src" ] || { echo "bench: build first (cmake -S . -B build && cmake --build build)" >&2; exit 2; }
. "$here/bench/agents.sh"
if [ -n "$pg" ]; then
    . "$here/bench/pgdata.sh"
    pg_bench_cluster "$here" "$work/pg" || exit $?
    src=$("$here/scripts/pgcluster.sh" createdb "$work/pg" src | tail -1)
    dst=$("$here/scripts/pgcluster.sh" createdb "$work/pg" dst | tail -1)
    pg_bench_schema "$src" "$dst"
    total=$((rows * 7 / 5))
    echo "bench: generating $total posts ($rows in team 1, interleaved with two smaller teams), PostgreSQL"
    pg_bench_data "$src" "$total"
    pred='channel_id IN (SELECT id FROM channels WHERE team_id = 1)'
    team_rows=$(psql -At -d "$src" -c "SELECT 1 + 20 + (SELECT count(*) FROM posts WHERE $pred) + (SELECT count(*) FROM reactions WHERE post_id IN (SELECT id FROM posts WHERE $pred))")
    echo "bench: team 1 has $team_rows rows"
    srcdb=$src
    dstdb=$dst
    change() { psql -d "$dst" -c "$1"; }
    srcchange() { psql -d "$src" -c "$1"; }
    query() { psql -At -d "$dst" -c "$1"; }
    exclude=
else
    echo "bench: generating a team of $rows posts (+ reactions) and two smaller teams in $work"
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
# 5 of every 7 posts are team 1's, interleaved with the other teams' ids
db.execute("""
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
INSERT INTO posts(id, channel_id, user_id, body, score, data)
SELECT i, 3 * (i % 20) + CASE WHEN i % 7 < 5 THEN 1 WHEN i % 7 = 5 THEN 2 ELSE 3 END,
       i % 40 + 1, printf('post %d: lorem ipsum dolor sit amet, consectetur adipiscing elit', i),
       i * 0.25, randomblob(16)
FROM n""", (rows * 7 // 5,))
db.execute("INSERT INTO reactions SELECT id, ':+1:', id % 97 FROM posts WHERE id % 5 = 0")
db.execute("COMMIT")
db.close()
PY
    pred='channel_id IN (SELECT id FROM channels WHERE team_id = 1)'
    team_rows=$(sqlite3 "$work/src.db" "SELECT 1 + 20 + (SELECT count(*) FROM posts WHERE $pred) + (SELECT count(*) FROM reactions WHERE post_id IN (SELECT id FROM posts WHERE $pred))")
    echo "bench: team 1 has $team_rows rows"
    srcdb=sqlite://$work/src.db
    dstdb=sqlite://$work/dst.db
    change() { sqlite3 "$work/dst.db" "$1"; }
    srcchange() { sqlite3 "$work/src.db" "$1"; }
    query() { sqlite3 "$work/dst.db" "$1"; }
    exclude="exclude = audit_log"
fi
bench_keys "$work"
bench_src_conf "$work" "$srcdb" "$exclude"
bench_authorise "$work"
"$bin/ferry-src" install --config "$work/src.conf" >/dev/null
bench_serve "$work"
bench_dst_conf "$work" "$dstdb"

hz=$(getconf CLK_TCK)
src_cpu() { awk -v hz="$hz" '{printf "%.3f", ($14 + $15) / hz}' "/proc/$srcpid/stat"; }
# run NAME ARGS...: ferry-dst ARGS; NAME.wall, NAME.cpu (both agents' user+sys), NAME.rc
run() {
    local name=$1 t0 t1 s0 s1 rc=0
    shift
    s0=$(src_cpu)
    t0=$(date +%s.%N)
    /usr/bin/time -f "%U %S" -o "$work/$name.time" "$bin/ferry-dst" "$@" >"$work/$name.out" \
        2>"$work/$name.err" || rc=$?
    t1=$(date +%s.%N)
    s1=$(src_cpu)
    echo "$rc" >"$work/$name.rc"
    python3 -c "print('%.3f' % ($t1 - $t0))" >"$work/$name.wall"
    awk -v s0="$s0" -v s1="$s1" 'END {printf "%.3f\n", $1 + $2 + s1 - s0}' "$work/$name.time" \
        >"$work/$name.cpu"
}
# a fresh target: its tables (PostgreSQL) or its file (SQLite), and the state
reset_target() {
    rm -rf "$work/state"
    if [ -n "$pg" ]; then
        psql -d "$dst" -c "DROP TABLE reactions, posts, channels, teams"
        pg_bench_schema "$dst"
    else
        rm -f "$work"/dst.db*
    fi
}
load=$(cut -d' ' -f1 /proc/loadavg)
# three copies, each into a fresh target and followed by a verify of the
# unchanged team: one run of either swings by up to half on a shared VM
for i in 1 2 3; do
    [ "$i" = 1 ] || reset_target
    run copy$i sync --quiet --config "$work/dst.conf"
    run verify$i verify --quiet --json --config "$work/dst.conf"
    [ "$(cat "$work/copy$i.rc")" = 0 ] && [ "$(cat "$work/verify$i.rc")" = 0 ] ||
        { echo "bench: copy or verify $i failed, see $work" >&2; exit 1; }
    mv "$work/verify$i.out" "$work/unchanged$i.out"
    for w in wall cpu; do mv "$work/verify$i.$w" "$work/unchanged$i.$w"; done
done
# 100 rows of the team changed behind ferry's back on the target
change "UPDATE posts SET body = 'changed' WHERE id IN (SELECT id FROM posts ORDER BY id LIMIT 100 OFFSET 1000)"
run verify2 verify --quiet --json --config "$work/dst.conf"
run verify3 verify --quiet --json --repair --config "$work/dst.conf"
# 100 rows changed behind ferry's back, spread over the team (every ~10,000th post)
apart="SELECT id FROM posts WHERE id % 9973 = 0 ORDER BY id LIMIT 100"
napart=$(query "SELECT count(*) FROM ($apart) AS a") # 100 in a team of a million posts
change "UPDATE posts SET body = 'spread' WHERE id IN ($apart)"
run verify4 verify --quiet --json --config "$work/dst.conf"
# a column the application adds: with the same DEFAULT on both sides the sync
# compares it and copies nothing; given on the target without it, the sync
# compares, then copies posts again
srcchange "ALTER TABLE posts ADD COLUMN stars integer NOT NULL DEFAULT 3"
change "ALTER TABLE posts ADD COLUMN stars integer NOT NULL DEFAULT 3"
run addsame sync --config "$work/dst.conf"
srcchange "ALTER TABLE posts ADD COLUMN pinned integer NOT NULL DEFAULT 7"
change "ALTER TABLE posts ADD COLUMN pinned integer"
run adddiff sync --config "$work/dst.conf"
grep -q "copy posts: not needed" "$work/addsame.err" &&
    grep -q "copy posts again: the column pinned differs" "$work/adddiff.err" ||
    { echo "bench: the added columns were not compared as expected, see $work" >&2; exit 1; }
for n in verify2:1 verify3:0 verify4:1 addsame:0 adddiff:0; do
    [ "$(cat "$work/${n%%:*}.rc")" = "${n##*:}" ] ||
        { echo "bench: ${n%%:*} exited $(cat "$work/${n%%:*}.rc"), expected ${n##*:}" >&2; exit 1; }
done

FERRY_BENCH_PG=$pg python3 - "$work" "$team_rows" "$load" "$(nproc)" "$napart" <<'PY'
import json, os, sys
work, team, load, ncpu, napart = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
def f(name, what):
    return float(open(os.path.join(work, "%s.%s" % (name, what))).read())
def med(name, what):
    v = sorted(f("%s%d" % (name, i), what) for i in (1, 2, 3))
    return v[1], v[0], v[2]
reps = [json.load(open(os.path.join(work, "unchanged%d.out" % i))) for i in (1, 2, 3)]
rep2 = json.load(open(os.path.join(work, "verify2.out")))
rep3 = json.load(open(os.path.join(work, "verify3.out")))
rep4 = json.load(open(os.path.join(work, "verify4.out")))
for rep in reps:
    assert rep["equal"] and sum(t["source_rows"] for t in rep["tables"]) == team, rep
assert rep2["differences_total"] == 100, rep2["differences_total"]
assert rep3["equal"] and rep3["repair"]["upserted"] == 100, rep3["repair"]
assert rep4["differences_total"] == napart, (rep4["differences_total"], napart)
(cw, cw0, cw1), (cc, _, _) = med("copy", "wall"), med("copy", "cpu")
(uw, uw0, uw1), (uc, _, _) = med("unchanged", "wall"), med("unchanged", "cpu")
print("rows in team 1                  %d   (%s CPUs, load average %s at the start)"
      % (team, ncpu, load))
print("                                wall        CPU (both agents)")
print("initial copy                    %7.3f s   %7.3f s   median of 3 (%.3f-%.3f s)"
      % (cw, cc, cw0, cw1))
print("%-31s %7.3f s   %7.3f s   %5.1f%% / %5.1f%% of the copy, %d requests; median of 3 "
      "(%.3f-%.3f s)" % ("verify, unchanged team", uw, uc, 100 * uw / cw, 100 * uc / cc,
                         reps[0]["requests"], uw0, uw1))
for name, what, r in (("verify2", "verify, 100 rows changed", rep2),
                      ("verify3", "verify --repair of those", rep3),
                      ("verify4", "verify, %d rows changed apart" % napart, rep4)):
    w, c = f(name, "wall"), f(name, "cpu")
    print("%-31s %7.3f s   %7.3f s   %5.1f%% / %5.1f%% of the copy, %d requests"
          % (what, w, c, 100 * w / cw, 100 * c / cc, r["requests"]))
for name, what in (("addsame", "column added, same DEFAULT"), ("adddiff", "column added, other")):
    w, c = f(name, "wall"), f(name, "cpu")
    print("%-31s %7.3f s   %7.3f s   %5.1f%% / %5.1f%% of the copy; sync: %s"
          % (what, w, c, 100 * w / cw, 100 * c / cc,
             "compared, nothing copied" if name == "addsame" else "compared, posts copied again"))
print("goal: verify of the unchanged team under 25%% of the copy%s"
      % (" (CPU: the agents only, not PostgreSQL)" if os.environ.get("FERRY_BENCH_PG") else ""))
PY
