#!/usr/bin/env bash
# check_sweep_resume.sh TWINBED CONFIG DIR: a sweep writes one row per point, and a second run skips
# every point (resumes) and leaves the table as it was.
set -eu
tb=$1; config=$2; dir=$3
rm -rf "$dir"
"$tb" sweep "$config" --out "$dir" 2>"$dir.err1" || { cat "$dir.err1"; exit 1; }
rows=$(($(wc -l <"$dir/sweep.csv") - 1))
[ "$rows" -ge 2 ] || { echo "expected >= 2 rows, got $rows"; cat "$dir/sweep.csv"; exit 1; }
grep -q ",ok," "$dir/sweep.csv" || { echo "no ok row"; cat "$dir/sweep.csv"; exit 1; }
cp "$dir/sweep.csv" "$dir.first.csv"
"$tb" sweep "$config" --out "$dir" 2>"$dir.err2" || { cat "$dir.err2"; exit 1; }
grep -q "$rows already done" "$dir.err2" || { echo "second run did not skip the $rows points:"; cat "$dir.err2"; exit 1; }
grep -q "nothing to do" "$dir.err2" || { echo "second run ran points:"; cat "$dir.err2"; exit 1; }
cmp -s "$dir/sweep.csv" "$dir.first.csv" || { echo "table changed on resume"; exit 1; }
# Remove one row: only that point runs again.
head -n -1 "$dir.first.csv" >"$dir/sweep.csv"
"$tb" sweep "$config" --out "$dir" 2>"$dir.err3" || { cat "$dir.err3"; exit 1; }
grep -q "$((rows - 1)) already done" "$dir.err3" || { echo "third run:"; cat "$dir.err3"; exit 1; }
[ "$(wc -l <"$dir/sweep.csv")" -eq $((rows + 1)) ] || { echo "row not restored"; exit 1; }
echo "ok: $rows points, resumed"
