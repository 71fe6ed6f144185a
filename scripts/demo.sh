#!/usr/bin/env bash
# demo.sh - ferry end to end on one machine, in ./demo-run/ (recreated):
#
#   a sample chat application (3 teams) in SQLite  ->  keys  ->  ferry-src serve
#   ferry-dst sync of team 1 into an empty target  ->  counts, source vs target
#   changes on the source (insert, update, cascaded delete)  ->  sync again
#   ferry-dst status; the server is stopped on exit, whatever happens.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
run="$root/demo-run"
bin="$root/build/bin"
tenant=1
tables=(teams channels posts reactions settings kinds tags)
server_pid=

if [[ -t 1 ]]; then
    step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
else
    step() { printf '\n== %s\n' "$*"; }
fi

stop_server() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    server_pid=
}
trap stop_server EXIT
trap 'exit 130' INT TERM

# The rows of each table that belong to a team, by hand (not ferry's code).
tenant_where() {
    case "$1" in
    teams) echo "FROM teams t WHERE t.id = $tenant" ;;
    channels) echo "FROM channels t WHERE t.team_id = $tenant" ;;
    posts) echo "FROM posts t JOIN channels c ON c.id = t.channel_id WHERE c.team_id = $tenant" ;;
    reactions) echo "FROM reactions t JOIN posts p ON p.id = t.post_id JOIN channels c ON c.id = p.channel_id WHERE c.team_id = $tenant" ;;
    settings) echo "FROM settings t WHERE t.team_id = $tenant" ;;
    kinds) echo "FROM kinds t JOIN channels c ON c.id = t.channel_id WHERE c.team_id = $tenant" ;;
    tags) echo "FROM tags t WHERE t.team_ref = $tenant" ;;
    esac
}

src_count() { sqlite3 "$run/src.db" "SELECT count(*) $(tenant_where "$1")"; }
dst_count() {
    if [[ -f "$run/dst.db" ]] && [[ -n $(sqlite3 "$run/dst.db" \
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name = '$1'") ]]; then
        sqlite3 "$run/dst.db" "SELECT count(*) FROM \"$1\""
    else
        echo "-"
    fi
}

# Print source (team 1) vs target counts; with an argument, the previous
# target counts too, to show what moved. Returns 1 if any count differs.
declare -A last
counts() {
    local t s d same=0 delta
    printf '  %-10s %14s %8s %8s\n' table "source team $tenant" target moved
    for t in "${tables[@]}"; do
        s=$(src_count "$t")
        d=$(dst_count "$t")
        delta=
        if [[ -n "${last[$t]:-}" && "$d" != - && "${last[$t]}" != - ]]; then
            delta=$((d - ${last[$t]}))
            ((delta > 0)) && delta="+$delta"
        fi
        [[ "$s" == "$d" ]] || same=1
        printf '  %-10s %14s %8s %8s\n' "$t" "$s" "$d" "$delta"
        last[$t]=$d
    done
    return $same
}

step "dependencies and build"
"$root/scripts/deps.sh"
cmake -S "$root" -B "$root/build" -DFERRY_WERROR=ON >/dev/null
cmake --build "$root/build" -j2 --target ferry-src ferry-dst >/dev/null
echo "built $bin/ferry-src and $bin/ferry-dst"

rm -rf "$run"
mkdir -p "$run"
cd "$run"

step "a sample chat app: 3 teams, 200 posts each (demo-run/src.db)"
python3 "$root/scripts/sample_app.py" "$run/src.db" --teams 3 --posts-per-team 200
sqlite3 -column -header "$run/src.db" \
    "SELECT t.id AS team, t.name, (SELECT count(*) FROM channels c WHERE c.team_id = t.id) AS channels,
            (SELECT count(*) FROM posts p JOIN channels c ON c.id = p.channel_id
              WHERE c.team_id = t.id) AS posts FROM teams t"

step "keys: the source's, and the target's (authorised for team $tenant only)"
"$bin/ferry-src" keygen --out "$run/src.key"
"$bin/ferry-dst" keygen --out "$run/dst.key"
: >"$run/authorized_keys"

cat >"$run/src.conf" <<EOF
[source]
database = sqlite://$run/src.db
listen = 127.0.0.1:0
identity = $run/src.key
authorized_keys = $run/authorized_keys

[scope]
root = teams
exclude = audit_log

[table tags]
scope = tags.team_ref = :tenant
EOF

"$bin/ferry-src" keys add --config "$run/src.conf" --tenant "$tenant" "$run/dst.key.pub"

step "ferry-src install (change capture on the source)"
"$bin/ferry-src" install --config "$run/src.conf"

step "ferry-src scope --tenant $tenant"
"$bin/ferry-src" scope --config "$run/src.conf" --tenant "$tenant"

step "ferry-src serve (log: demo-run/src.log)"
"$bin/ferry-src" serve --config "$run/src.conf" 2>"$run/src.log" &
server_pid=$!
addr=
for _ in $(seq 100); do
    addr=$(sed -n 's/.*listening on \([0-9.]*:[0-9]*\).*/\1/p' "$run/src.log" | head -1)
    [[ -n "$addr" ]] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
        cat "$run/src.log" >&2
        echo "demo: ferry-src serve exited" >&2
        exit 1
    fi
    sleep 0.1
done
if [[ -z "$addr" ]]; then
    cat "$run/src.log" >&2
    echo "demo: ferry-src serve did not start listening within 10 s" >&2
    exit 1
fi
echo "listening on $addr"

cat >"$run/dst.conf" <<EOF
[target]
database = sqlite://$run/dst.db
state = $run/state
tenant = $tenant
identity = $run/dst.key

[source]
url = http://$addr
public_key = $run/src.key.pub
EOF

step "ferry-dst sync (team $tenant into an empty target, demo-run/dst.db)"
"$bin/ferry-dst" sync --config "$run/dst.conf"
counts || echo "  (counts differ)"

step "changes on the source"
channel=$(sqlite3 "$run/src.db" "SELECT max(id) FROM channels WHERE team_id = $tenant")
post=$(sqlite3 "$run/src.db" "SELECT min(p.id) FROM posts p JOIN channels c ON c.id = p.channel_id
                              WHERE c.team_id = $tenant AND c.id <> $channel")
cascade=$(sqlite3 "$run/src.db" "SELECT (SELECT count(*) FROM posts WHERE channel_id = $channel)
    || ' posts, ' || (SELECT count(*) FROM reactions r JOIN posts p ON p.id = r.post_id
                       WHERE p.channel_id = $channel)
    || ' reactions, ' || (SELECT count(*) FROM kinds WHERE channel_id = $channel) || ' kinds'")
sqlite3 "$run/src.db" <<EOF
PRAGMA foreign_keys = ON;
BEGIN;
INSERT INTO posts(channel_id, user_id, body, score)
  VALUES ((SELECT min(id) FROM channels WHERE team_id = $tenant), 1, 'hello from the demo', 4.5);
UPDATE posts SET body = 'edited by the demo' WHERE id = $post;
DELETE FROM channels WHERE id = $channel;
COMMIT;
EOF
echo "  inserted a post, edited post $post, deleted channel $channel (cascade: $cascade)"

step "ferry-dst sync (delta)"
"$bin/ferry-dst" sync --config "$run/dst.conf"
ok=0
counts || ok=1
echo
sqlite3 -column -header "$run/dst.db" \
    "SELECT id, channel_id, body FROM posts WHERE id = $post OR body = 'hello from the demo'"
echo "  channel $channel on the target: $(sqlite3 "$run/dst.db" \
    "SELECT count(*) FROM channels WHERE id = $channel") rows, its posts: $(sqlite3 "$run/dst.db" \
    "SELECT count(*) FROM posts WHERE channel_id = $channel")"

step "ferry-dst status"
"$bin/ferry-dst" status --config "$run/dst.conf"

step "stopping the server"
stop_server
if ((ok == 0)); then
    echo "demo: team $tenant on the target matches the source, table by table"
else
    echo "demo: counts differ between source and target (see above)" >&2
    exit 1
fi
