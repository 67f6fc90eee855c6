#!/usr/bin/env bash
# check_results_folder.sh TWINBED CONFIG: a run into a folder another command holds fails cleanly and
# writes nothing; a temporary a killed writer left behind is removed by the next run; a sweep whose
# points all failed runs them again once the config is fixed (failed points are not "done").
set -u
tb=$1; config=$2; sweep=$3
fail() { echo "$*"; exit 1; }
mkdir out
# Held: flock(1) holds the folder's lock around a second twinbed, which must refuse. flock is util-linux's
# (scripts/install-deps.sh installs it): without it this check would pass having checked nothing.
command -v flock >/dev/null || fail "flock(1) is missing: install util-linux (scripts/install-deps.sh)"
err=$(flock out/.twinbed.lock "$tb" run "$config" --out out 2>&1 >/dev/null) && fail "a run into a held folder succeeded"
grep -q "another twinbed command is writing into out" <<<"$err" || fail "unexpected error: $err"
[ -z "$(ls out)" ] || fail "the refused run wrote: $(ls out)"
# A killed writer's temporary (a pid that does not run) goes; a live one's stays.
echo partial >out/.sim.json.tmp-999999999
echo partial >out/.trace.json.tmp-$$
"$tb" run "$config" --out out >/dev/null || fail "run failed"
[ ! -e out/.sim.json.tmp-999999999 ] || fail "a dead writer's temporary was left behind"
[ -e out/.trace.json.tmp-$$ ] || fail "a live writer's temporary was removed"
rm out/.trace.json.tmp-$$
# A sweep whose every point fails, then the config fixed: the points run again.
"$tb" sweep "$sweep" --out sweep 2>/dev/null && fail "a sweep of impossible points succeeded"
sed 's/"global_batch": 7/"global_batch": 8/' "$sweep" >fixed.json
out=$("$tb" sweep fixed.json --out sweep 2>&1) || fail "the fixed sweep failed: $out"
grep -q "0 already done" <<<"$out" || fail "failed points counted as done: $out"
[ "$(grep -c ',ok,' sweep/sweep.csv)" -eq 2 ] || fail "expected 2 ok rows: $(cat sweep/sweep.csv)"
echo "ok: held folders refused, stale temporaries removed, failed points rerun"
