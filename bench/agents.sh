# bench/agents.sh - the two agents on loopback as the benchmarks run them,
# sourced by bench/auth.sh, bench/bigrow.sh, bench/copy.sh, bench/pg.sh and
# bench/verify.sh. Each function takes the bench's directory WORK and runs
# the agents of $bin (the sourcing script's build/bin or FERRY_BIN).
#
#   bench_keys WORK [ARG...]      key pairs WORK/src.key and WORK/dst.key (and
#                                 their .pub), keygen ARGs added to both (e.g.
#                                 --bits 2048); an empty WORK/authorized_keys
#   bench_src_conf WORK DB [LINE...]
#                                 WORK/src.conf: the source database DB (a URL),
#                                 listening on 127.0.0.1, any port; scope root
#                                 teams, then each LINE (e.g. exclude = audit_log)
#   bench_authorise WORK          ferry-src keys add: tenant 1 is WORK/dst.key.pub
#   bench_serve WORK              ferry-src serve in the background (stopping the
#                                 one started before, if any), its log in
#                                 WORK/src.log; waits for it to listen (10 s at
#                                 most) and sets srcpid and port
#   bench_dst_conf WORK DB        WORK/dst.conf: the target database DB (a URL),
#                                 state WORK/state, tenant 1, the source at $port
# shellcheck shell=bash disable=SC2154

bench_keys() {
    local work=$1
    shift
    "$bin/ferry-src" keygen --out "$work/src.key" "$@" >/dev/null
    "$bin/ferry-dst" keygen --out "$work/dst.key" "$@" >/dev/null
    : >"$work/authorized_keys"
}

bench_src_conf() {
    local work=$1 db=$2
    shift 2
    {
        cat <<CONF
[source]
database = $db
listen = 127.0.0.1:0
identity = $work/src.key
authorized_keys = $work/authorized_keys
[scope]
root = teams
CONF
        if [ $# -gt 0 ]; then printf '%s\n' "$@"; fi
    } >"$work/src.conf"
}

bench_authorise() {
    "$bin/ferry-src" keys add --config "$1/src.conf" --tenant 1 "$1/dst.key.pub" >/dev/null
}

bench_serve() {
    local work=$1
    if [ -n "${srcpid:-}" ]; then
        kill "$srcpid"
        wait "$srcpid" 2>/dev/null || true
    fi
    # emptied first: the log of the one before must not be read as this one's
    : >"$work/src.log"
    "$bin/ferry-src" serve --config "$work/src.conf" 2>"$work/src.log" &
    srcpid=$!
    for _ in $(seq 100); do grep -q "listening on" "$work/src.log" && break; sleep 0.1; done
    port=$(sed -n 's/.*listening on [0-9.]*:\([0-9]*\).*/\1/p' "$work/src.log" | head -1)
}

bench_dst_conf() {
    cat >"$1/dst.conf" <<CONF
[target]
database = $2
state = $1/state
tenant = 1
identity = $1/dst.key
[source]
url = http://127.0.0.1:$port
public_key = $1/src.key.pub
CONF
}
