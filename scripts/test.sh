#!/usr/bin/env bash
# test.sh - build ferry and run the whole test suite, twice:
#
#   1. build/       -DFERRY_WERROR=ON                 ctest -j2
#   2. build-asan/  -DFERRY_WERROR=ON -DFERRY_SANITIZE=ON (ASan + UBSan)  ctest -j2
#   3. build-fuzz/  CC=clang -DFERRY_FUZZ=ON (only when clang is installed):
#                   each libFuzzer target for FERRY_FUZZ_SECONDS (default 30)
#                   on a temporary copy of tests/fuzz/corpus/<target>/
#
# The last line is "N passed, N failed": the ctest results of both runs; a
# build that fails or a fuzz target that finds a crash adds one to "failed"
# too, so the exit status is 0 exactly when "failed" is 0.
#
# Environment: FERRY_FUZZ_SECONDS (30; 0 skips fuzzing), FERRY_TEST_JOBS (2).
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 2

jobs=${FERRY_TEST_JOBS:-2}
fuzz_seconds=${FERRY_FUZZ_SECONDS:-30}
passed=0
failed=0
build_failed=0

say() { printf '\n=== %s\n' "$*"; }

summary() {
    echo
    echo "$passed passed, $failed failed"
    if ((failed > 0)); then
        exit 1
    fi
    exit 0
}

# Configure and build into $1 with the remaining arguments to cmake.
# Returns nonzero (and counts a failure) when configuring fails; a failed
# build counts a failure and sets build_failed.
build() {
    local dir=$1
    shift
    say "build $dir ($*)"
    if ! cmake -S "$root" -B "$root/$dir" "$@" >"$root/$dir.configure.log" 2>&1; then
        cat "$root/$dir.configure.log"
        echo "test.sh: configure failed for $dir" >&2
        failed=$((failed + 1))
        return 1
    fi
    rm -f "$root/$dir.configure.log"
    # Keep going past a failing file, so that ctest can still run (and
    # report) everything else; the failed build itself counts as a failure.
    if ! cmake --build "$root/$dir" -j"$jobs" -- -k; then
        echo "test.sh: build failed for $dir" >&2
        failed=$((failed + 1))
        build_failed=1
    fi
}

# Run ctest in $1 and add its counts. ctest's own summary line is
# "100% tests passed, 0 tests failed out of 12"; without it (ctest itself
# broke) the run counts as one failure.
run_ctest() {
    local dir=$1 log="$root/$1/ctest.log" line total nfail rc
    say "ctest $dir"
    ctest --test-dir "$root/$dir" --output-on-failure -j"$jobs" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    line=$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -1)
    if [[ -n "$line" ]]; then
        nfail=$(sed -E 's/.* ([0-9]+) tests? failed out of.*/\1/' <<<"$line")
        total=$(sed -E 's/.* out of ([0-9]+).*/\1/' <<<"$line")
        passed=$((passed + total - nfail))
        failed=$((failed + nfail))
    elif grep -q 'No tests were found' "$log"; then
        echo "test.sh: no tests in $dir"
    elif ((rc != 0)); then
        echo "test.sh: ctest failed in $dir without a summary (exit $rc)" >&2
        failed=$((failed + 1))
    fi
}

# LeakSanitizer needs ptrace, which some containers forbid: probe it once
# and fall back to ASan without leak checking (and say so) when it cannot run.
lsan_works() {
    local tmp rc
    tmp=$(mktemp -d) || return 1
    printf 'int main(void) { return 0; }\n' >"$tmp/p.c"
    rc=1
    if cc -fsanitize=address -o "$tmp/p" "$tmp/p.c" 2>/dev/null; then
        ASAN_OPTIONS=detect_leaks=1 "$tmp/p" >/dev/null 2>&1
        rc=$?
    fi
    rm -rf "$tmp"
    return $rc
}

run_fuzz() {
    local dir="$root/build-fuzz" bin name corpus tmp rc found=0
    for bin in "$dir"/bin/fuzz_*; do
        [[ -x "$bin" && "$bin" != *_replay ]] || continue
        found=1
        name=$(basename "$bin")
        corpus="$root/tests/fuzz/corpus/$name"
        tmp=$(mktemp -d) || {
            failed=$((failed + 1))
            continue
        }
        # Fuzz a copy: new corpus entries must not land in the repository.
        if [[ -d "$corpus" ]]; then
            cp -R "$corpus/." "$tmp/"
        fi
        "$bin" -max_total_time="$fuzz_seconds" -timeout=25 -print_final_stats=1 \
            -artifact_prefix="$dir/" "$tmp" >"$dir/$name.log" 2>&1
        rc=$?
        rm -rf "$tmp"
        if ((rc == 0)); then
            printf 'fuzz %-30s ok   (%s)\n' "$name" \
                "$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$dir/$name.log" |
                    grep -Eo '[0-9]+$' | sed 's/$/ runs/')"
        else
            printf 'fuzz %-30s FAILED (exit %d), log %s:\n' "$name" "$rc" "$dir/$name.log"
            tail -40 "$dir/$name.log"
            failed=$((failed + 1))
        fi
    done
    if ((found == 0)); then
        echo "test.sh: no fuzz targets built, skipping"
    fi
}

say "dependencies"
if ! "$root/scripts/deps.sh"; then
    echo "test.sh: missing dependencies (see above)" >&2
    failed=$((failed + 1))
    summary
fi

# Style: the checked-in .clang-format is applied (counts as one test).
if command -v clang-format >/dev/null 2>&1; then
    say "format (clang-format --dry-run)"
    if git -C "$root" ls-files '*.c' '*.h' | (cd "$root" && xargs clang-format --dry-run -Werror); then
        echo "format: ok"
        passed=$((passed + 1))
    else
        echo "test.sh: run clang-format -i on the files above" >&2
        failed=$((failed + 1))
    fi
fi

if build build -DFERRY_WERROR=ON -DFERRY_SANITIZE=OFF -DFERRY_FUZZ=OFF; then
    run_ctest build
fi

if lsan_works; then
    leaks=1
else
    leaks=0
    echo "test.sh: LeakSanitizer cannot run here (ptrace?); leak checking is off"
fi

if build build-asan -DFERRY_WERROR=ON -DFERRY_SANITIZE=ON -DFERRY_FUZZ=OFF; then
    ASAN_OPTIONS="detect_leaks=$leaks" \
        UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
        run_ctest build-asan
fi

if [[ "$fuzz_seconds" == 0 ]]; then
    say "fuzz: skipped (FERRY_FUZZ_SECONDS=0)"
elif ! command -v clang >/dev/null 2>&1; then
    say "fuzz: skipped (clang is not installed; scripts/deps.sh --fuzz installs it)"
elif ! "$root/scripts/deps.sh" --fuzz; then
    say "fuzz: skipped (clang's libFuzzer runtime is missing; see the deps.sh message above)"
else
    build_failed=0
    if CC=clang build build-fuzz -DCMAKE_C_COMPILER=clang -DFERRY_FUZZ=ON -DFERRY_SANITIZE=ON &&
        ((build_failed == 0)); then
        say "fuzz (${fuzz_seconds}s per target)"
        ASAN_OPTIONS="detect_leaks=$leaks" UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
            run_fuzz
    fi
fi

summary
