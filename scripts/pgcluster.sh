#!/usr/bin/env bash
# pgcluster.sh - a throw-away PostgreSQL cluster for ferry's tests.
#
#   scripts/pgcluster.sh start DIR            initdb (first time) and start; prints the URL
#   scripts/pgcluster.sh stop DIR             stop (no error when not running)
#   scripts/pgcluster.sh url DIR [DB]         print the URL of database DB (default postgres)
#   scripts/pgcluster.sh createdb DIR DB      create DB when missing; prints its URL
#   scripts/pgcluster.sh status DIR           exit 0 when the cluster answers
#   scripts/pgcluster.sh bindir               print the server binaries' directory
#
# The server listens only on a unix socket (no TCP), trusts local connections
# and runs with fsync=off: it is for tests, never for data that matters. Its
# superuser is "ferrytest". As root, the server runs as the system user
# ferrytest (created when missing) because postgres refuses to run as root.
#
# Server binaries: $PG_BINDIR, else the newest /usr/lib/postgresql/*/bin, else
# initdb on PATH. Exit status 77 (the "skipped" code of ctest and automake)
# when there are none, so that callers can skip loudly.
set -euo pipefail

PGUSER_NAME=ferrytest
PORT=5432

die() {
    echo "pgcluster.sh: $*" >&2
    exit 1
}

usage() {
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

find_bindir() {
    local d
    if [[ -n "${PG_BINDIR:-}" ]]; then
        [[ -x "$PG_BINDIR/initdb" && -x "$PG_BINDIR/pg_ctl" ]] ||
            die "PG_BINDIR=$PG_BINDIR has no initdb/pg_ctl"
        echo "$PG_BINDIR"
        return
    fi
    d=$(printf "%s\n" /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    if [[ -n "$d" && -x "$d/initdb" && -x "$d/pg_ctl" && -x "$d/postgres" ]]; then
        echo "$d"
        return
    fi
    d=$(command -v initdb 2>/dev/null || true)
    if [[ -n "$d" ]]; then
        # a symlink on PATH (/usr/local/bin/initdb): the real directory has the rest
        d=$(dirname "$(readlink -f "$d")")
        if [[ -x "$d/pg_ctl" && -x "$d/postgres" ]]; then
            echo "$d"
            return
        fi
    fi
    cat >&2 <<'EOF'
pgcluster.sh: ************************************************************
pgcluster.sh: SKIP: no PostgreSQL server binaries (initdb, pg_ctl, postgres)
pgcluster.sh: looked in $PG_BINDIR, /usr/lib/postgresql/*/bin and PATH;
pgcluster.sh: install them with scripts/deps.sh (Debian package postgresql)
pgcluster.sh: ************************************************************
EOF
    exit 77
}

# Run a command as the cluster's owner: ourselves, or ferrytest when root.
as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u "$PGUSER_NAME" -- "$@"
    else
        "$@"
    fi
}

ensure_user() {
    [[ $(id -u) -eq 0 ]] || return 0
    if ! id -u "$PGUSER_NAME" >/dev/null 2>&1; then
        useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
            "$PGUSER_NAME" 2>/dev/null || id -u "$PGUSER_NAME" >/dev/null 2>&1 ||
            die "cannot create system user $PGUSER_NAME (useradd failed)"
    fi
}

# The socket path must fit in sun_path (107 bytes); a deep DIR gets its
# socket in a short directory under /tmp, recorded in DIR/sockdir.
sockdir_of() {
    if [[ -f "$DIR/sockdir" ]]; then
        cat "$DIR/sockdir"
    else
        echo "$DIR/sock"
    fi
}

url_of() {
    local db=${1:-postgres}
    echo "postgresql:///$db?host=$(sockdir_of)&port=$PORT&user=$PGUSER_NAME"
}

is_up() {
    [[ -d "$DIR/data" ]] || return 1
    "$BINDIR/pg_isready" -q -h "$(sockdir_of)" -p "$PORT" -U "$PGUSER_NAME" -d postgres -t 5 \
        >/dev/null 2>&1
}

# A postmaster.pid left by a killed server (or a reused pid, common in
# containers) makes pg_ctl refuse to start: remove it when the pid it names
# is not a postgres serving this data directory.
clear_stale_pid() {
    local pidfile="$DIR/data/postmaster.pid" pid
    [[ -f "$pidfile" ]] || return 0
    pid=$(head -n 1 "$pidfile" 2>/dev/null || true)
    if [[ "$pid" =~ ^[0-9]+$ ]] && [[ -r "/proc/$pid/cmdline" ]] &&
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$DIR/data"; then
        return 0
    fi
    echo "pgcluster.sh: removing stale $pidfile (pid ${pid:-?} is not a postgres of this cluster)" >&2
    rm -f "$pidfile" "$(sockdir_of)/.s.PGSQL.$PORT" "$(sockdir_of)/.s.PGSQL.$PORT.lock"
}

do_init() {
    local sock
    mkdir -p "$DIR"
    if [[ ! -f "$DIR/data/PG_VERSION" ]]; then
        rm -rf "$DIR/data"
        sock="$DIR/sock"
        if ((${#sock} > 90)); then
            sock=$(mktemp -d /tmp/ferrypg.XXXXXX)
            echo "$sock" >"$DIR/sockdir"
        fi
        mkdir -p "$sock"
        if [[ $(id -u) -eq 0 ]]; then
            chown -R "$PGUSER_NAME" "$DIR" "$sock"
            as_owner test -w "$DIR" ||
                die "user $PGUSER_NAME cannot write $DIR: make its parent directories searchable (chmod o+x)"
        fi
        as_owner "$BINDIR/initdb" -D "$DIR/data" -U "$PGUSER_NAME" --auth=trust -E UTF8 \
            --locale=C --no-sync >"$DIR/initdb.log" 2>&1 || {
            cat "$DIR/initdb.log" >&2
            die "initdb failed (log above, also in $DIR/initdb.log)"
        }
        cat >>"$DIR/data/postgresql.conf" <<EOF

# pgcluster.sh: a test cluster, fast and unsafe
listen_addresses = ''
unix_socket_directories = '$sock'
port = $PORT
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 100
shared_buffers = 32MB
max_prepared_transactions = 10
log_min_messages = warning
EOF
    fi
    mkdir -p "$(sockdir_of)"
    if [[ $(id -u) -eq 0 ]]; then
        chown "$PGUSER_NAME" "$(sockdir_of)"
    fi
}

# The server inherits every open descriptor of pg_ctl: close all but stdio, or
# it holds our lock (and any pipe of whoever called us) for its lifetime.
start_server() (
    local fd
    for fd in "/proc/$BASHPID/fd"/*; do
        fd=${fd##*/}
        if ((fd > 2)); then
            eval "exec $fd>&-"
        fi
    done
    as_owner "$BINDIR/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 start \
        </dev/null >/dev/null 2>&1
)

do_start() {
    if is_up; then
        return 0
    fi
    do_init
    clear_stale_pid
    if ! start_server; then
        # pg_ctl also fails when a concurrent start won the race: accept a live server.
        if is_up; then
            return 0
        fi
        tail -n 20 "$DIR/server.log" >&2 2>/dev/null || true
        die "cannot start the cluster in $DIR (server log above, in $DIR/server.log)"
    fi
    is_up || die "the cluster in $DIR started but does not answer on $(sockdir_of)"
}

do_stop() {
    [[ -d "$DIR/data" ]] || return 0
    if [[ -f "$DIR/data/postmaster.pid" ]]; then
        as_owner "$BINDIR/pg_ctl" -D "$DIR/data" -m fast -w -t 60 stop >/dev/null 2>&1 || true
    fi
    clear_stale_pid
    if [[ -f "$DIR/sockdir" ]]; then
        case $(cat "$DIR/sockdir") in
        /tmp/ferrypg.*) rm -rf "$(cat "$DIR/sockdir")" ;;
        esac
    fi
}

do_createdb() {
    local db=$1 exists
    [[ "$db" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "database name '$db': use letters, digits, _"
    exists=$("$BINDIR/psql" -X -At -d "$(url_of postgres)" \
        -c "SELECT 1 FROM pg_database WHERE datname = '$db'") ||
        die "cannot query the cluster in $DIR"
    if [[ "$exists" != 1 ]]; then
        # A concurrent createdb of the same name may win: recheck before failing.
        "$BINDIR/createdb" -h "$(sockdir_of)" -p "$PORT" -U "$PGUSER_NAME" "$db" 2>/dev/null ||
            [[ $("$BINDIR/psql" -X -At -d "$(url_of postgres)" \
                -c "SELECT 1 FROM pg_database WHERE datname = '$db'") == 1 ]] ||
            die "createdb $db failed"
    fi
}

cmd=${1:-}
if [[ "$cmd" == bindir ]]; then
    find_bindir
    exit 0
fi
[[ $# -ge 2 ]] || usage
DIR=$2
[[ "$DIR" == /* ]] || DIR="$(pwd)/$DIR"
DIR=${DIR%/}
BINDIR=$(find_bindir)

# One operation at a time per cluster: tests running in parallel may share it.
mkdir -p "$DIR"
exec 9>"$DIR/.lock"
flock 9

case "$cmd" in
start)
    ensure_user
    do_start
    url_of postgres
    ;;
stop)
    do_stop
    ;;
url)
    url_of "${3:-postgres}"
    ;;
createdb)
    [[ $# -ge 3 ]] || usage
    is_up || die "the cluster in $DIR is not running (run: $0 start $DIR)"
    do_createdb "$3"
    url_of "$3"
    ;;
status)
    is_up
    ;;
*)
    usage
    ;;
esac
