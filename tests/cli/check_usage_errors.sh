#!/usr/bin/env bash
# check_usage_errors.sh TWINBED: bad flags and arguments, whether CLI11 or a twinbed validator finds
# them, are one line on stderr ("twinbed: error: ... (see `twinbed SUB --help`)"), exit 2, print nothing
# on stdout, and show a typed value quoted (a newline in it escaped). Numbers are decimal, exponents
# included, alike for every numeric flag: "--ranks 1e1" is 10 ranks (CLI11 refused it after the range
# check had passed it).
set -u
tb=$1
fail() { echo "FAIL: $*"; exit 1; }
# expect REGEX ARG...: twinbed ARG... fails as above, its error matching REGEX (extended grep).
expect() {
  local regex=$1; shift
  local out code
  out=$("$tb" "$@" 2>err.txt)
  code=$?
  [ "$code" -eq 2 ] || fail "twinbed $*: exit $code, not 2: $(cat err.txt)"
  [ "$(wc -l <err.txt)" -eq 1 ] || fail "twinbed $*: stderr is not one line: $(cat err.txt)"
  grep -Eq -- "$regex" err.txt || fail "twinbed $*: stderr does not match /$regex/: $(cat err.txt)"
  [ -z "$out" ] || fail "twinbed $*: printed on stdout: $out"
  echo "ok: $(cat err.txt)"
}
help='\(see `twinbed collectives --help`\)$'
expect '^twinbed: error: --ranks: expected an integer in 1\.\.1048576 \(written like 8 or 1e3\), got "1\\n2" '"$help" \
  collectives --ranks "$(printf '1\n2')"
expect '^twinbed: error: --ranks: expected an integer in 1\.\.1048576 .*, got "0" '"$help" collectives --ranks 0
expect '^twinbed: error: --ranks: expected an integer .*, got "1e400" ' collectives --ranks 1e400
expect '^twinbed: error: --factor: expected an integer in 2\.\.1048576 .*, got "2\.5" ' collectives --factor 2.5
expect '^twinbed: error: --root: expected an integer in 0\.\.1048575 .*, got "x" ' collectives --root x
expect '^twinbed: error: --bandwidth-GBps: expected a number in \[1e-6, 1e9\] \(written like 8, 0\.5 or 1e-3\), got "0x10" ' \
  collectives --bandwidth-GBps 0x10
expect '^twinbed: error: --latency-us: expected a number in \[0, 1e9\] .*, got "nan" ' collectives --latency-us nan
expect '^twinbed: error: --backend: expected one of sim, real, got "g\\tpu" ' collectives --backend "$(printf 'g\tpu')"
expect '^twinbed: error: The following argument was not expected: --nosuch '"$help" collectives --nosuch
expect '^twinbed: error: .*--ranks.* '"$help" collectives --ranks
expect '^twinbed: error: A subcommand is required \(see `twinbed --help`\)$'
expect '^twinbed: error: experiment is required \(see `twinbed run --help`\)$' run
expect '^twinbed: error: The following argument was not expected: b\.json \(see `twinbed run --help`\)$' run a.json b.json
# Exponents are numbers like any other, for integers and reals alike.
out=$("$tb" collectives --ranks 1e1 --root 0E0 --bandwidth-GBps 1.5e2 --latency-us 2e0 \
  --max-bytes 1K 2>&1) || fail "exponent forms refused: $out"
grep -q '^# 10 ranks on switch: 10 ranks (h100), 150 GB/s, 2 us$' <<<"$out" || fail "exponent forms misread: $out"
echo "ok: $(grep '^# 10 ranks' <<<"$out")"
