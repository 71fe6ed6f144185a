#!/usr/bin/env bash
# deps.sh - install the Debian packages ferry builds and tests with.
#
#   scripts/deps.sh          build + test dependencies
#   scripts/deps.sh --fuzz   also clang and its libFuzzer runtime
#
# Quiet and quick when everything is there (dpkg-query only). When something
# is missing: as root, apt-get update + install; otherwise print the exact
# command to run and exit 2.
set -euo pipefail

pkgs=(build-essential cmake pkg-config libevent-dev libcurl4-openssl-dev libssl-dev
      libmsgpack-dev liblmdb-dev libsqlite3-dev sqlite3 libinih-dev libpq-dev postgresql
      python3)

for arg in "$@"; do
    case "$arg" in
    --fuzz)
        # libFuzzer's runtime matches the installed clang (Debian 12: 14)
        ver=14
        if command -v clang >/dev/null 2>&1; then
            ver=$(clang -dumpversion | cut -d. -f1)
        fi
        pkgs+=(clang "libclang-rt-$ver-dev")
        ;;
    -h | --help)
        sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "deps.sh: unknown option '$arg' (try --fuzz)" >&2
        exit 2
        ;;
    esac
done

missing=()
for p in "${pkgs[@]}"; do
    # "ii " is installed; anything else (rc, un, not known) counts as missing.
    status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
    if [[ "$status" != ii* ]]; then
        missing+=("$p")
    fi
done

if ((${#missing[@]} == 0)); then
    exit 0
fi

cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y ${missing[*]}"
if [[ $(id -u) -ne 0 ]]; then
    echo "deps.sh: missing packages: ${missing[*]}" >&2
    echo "deps.sh: run as root: sudo sh -c '$cmd'" >&2
    exit 2
fi

echo "deps.sh: installing ${missing[*]}" >&2
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
