# bench/pgdata.sh - the PostgreSQL benchmarks' cluster, schema and data,
# sourced by bench/pg.sh, bench/verify.sh --pg and bench/capture.sh --pg.
#
#   pg_bench_cluster HERE DIR  start a throw-away cluster in DIR
#                              (scripts/pgcluster.sh of the checkout HERE) with
#                              1 GB of shared buffers; sets pgbin and psql();
#                              returns pgcluster.sh's status (77: no server)
#   pg_bench_schema DB...     the tables (primary and foreign keys, a bigserial)
#   pg_bench_data DB TOTAL    three teams, 60 channels, TOTAL posts whose ids
#                             interleave the teams (team 1 gets 5 of every 7),
#                             a reaction on every fifth post

pg_bench_cluster() {
    local here=$1 dir=$2
    chmod 755 "$(dirname "$dir")" # the cluster may run as another user (pgcluster.sh as root)
    "$here/scripts/pgcluster.sh" start "$dir" >/dev/null || return $?
    pgbin=$("$here/scripts/pgcluster.sh" bindir)
    psql() { "$pgbin/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }
    # the test cluster's 32 MB of shared buffers would make both sides read the
    # tables through the kernel on every probe; a server holds its working set
    psql -d "$("$here/scripts/pgcluster.sh" url "$dir")" -c "ALTER SYSTEM SET shared_buffers = '1GB'"
    "$here/scripts/pgcluster.sh" stop "$dir" >/dev/null
    "$here/scripts/pgcluster.sh" start "$dir" >/dev/null
}

pg_bench_schema() {
    local schema="
CREATE TABLE teams (id bigint PRIMARY KEY, name text NOT NULL);
CREATE TABLE channels (id bigint PRIMARY KEY,
  team_id bigint NOT NULL REFERENCES teams(id) ON DELETE CASCADE, name text);
CREATE TABLE posts (id bigserial PRIMARY KEY,
  channel_id bigint NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
  user_id integer, body text, score numeric(12,4), weight double precision, flag boolean,
  meta jsonb, created timestamptz);
CREATE TABLE reactions (post_id bigint NOT NULL REFERENCES posts(id) ON DELETE CASCADE,
  emoji text NOT NULL, user_id integer NOT NULL, PRIMARY KEY (post_id, emoji, user_id));"
    local db
    for db in "$@"; do psql -d "$db" -c "$schema"; done
}

pg_bench_data() {
    local total=$2
    psql -d "$1" >/dev/null <<SQL
INSERT INTO teams SELECT t, 'team ' || t FROM generate_series(1, 3) t;
INSERT INTO channels SELECT c, 1 + (c - 1) % 3, 'channel ' || c FROM generate_series(1, 60) c;
INSERT INTO posts SELECT i,
  3 * (i % 20) + CASE WHEN i % 7 < 5 THEN 1 WHEN i % 7 = 5 THEN 2 ELSE 3 END,
  i % 97, 'post ' || i || ': lorem ipsum dolor sit amet, consectetur adipiscing elit',
  i * 0.25, i / 3.0, i % 2 = 0, jsonb_build_object('n', i, 'tag', 'x' || i % 10),
  timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second'
FROM generate_series(1, $total) i;
INSERT INTO reactions SELECT id, ':+1:', id % 97 FROM posts WHERE id % 5 = 0;
SELECT setval('posts_id_seq', $total);
VACUUM ANALYZE;
SQL
}
