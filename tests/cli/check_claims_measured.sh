#!/usr/bin/env bash
# check_claims_measured.sh TWINBED DATA_DIR: how `twinbed claims` gets the results its measured figures
# need (tests/data/claims_measured: a claim measured on a tiny one-rank training config, about a second).
#  1. Without results it trains the config once, with this same binary, says so on stderr, and fills the
#     measured column; the training's own output stays off stdout. One rank exchanges no gradients, so
#     the bytes figure is one the training run gave no figure for (0 over 0 bytes), said so.
#  2. Run again, it reuses results/claims-tiny/train.json: no training.
#  3. --retrain trains again; --json keeps stdout pure JSON while it does.
#  4. Results of another config (the config changed since) are not used: --no-train says "not measured
#     yet", and without it the config is trained again.
# Skipped (77) without Debian's fortunes, the corpus the config trains on (scripts/install-deps.sh).
set -euo pipefail
tb=$1
data=$2
fail() { echo "FAIL: $*" >&2; exit 1; }
[ -d /usr/share/games/fortunes ] || { echo "skip: no /usr/share/games/fortunes (scripts/install-deps.sh)"; exit 77; }
cp -r "$data/claims_measured" claims
claims() { "$tb" claims SYNTH-TRAIN --dir claims --no-plot "$@"; }

# 1. Trained first.
claims --out l1 > table.txt 2> err.txt || fail "claims failed: $(tail -3 err.txt)"
grep -q "^claims: training claims/train-tiny.json for the measured figures (about 1 minute; --no-train skips)" err.txt ||
  fail "no training line on stderr: $(head -3 err.txt)"
test -s results/claims-tiny/train.json || fail "the training wrote no results/claims-tiny/train.json"
grep -q "twinbed train" table.txt && fail "the training's output reached stdout: $(grep 'twinbed train' table.txt)"
grep -q "^SYNTH-TRAIN accuracy loss" table.txt || fail "no row: $(cat table.txt)"
grep -q "4 measured in training runs$" table.txt || fail "the figures were not measured: $(tail -1 table.txt)"
/usr/bin/python3 - l1/claims.json <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
figures = d["claims"][0]["figures"]
assert [f["measured"] is not None for f in figures] == [True, True, True, False, True], [f["measured"] for f in figures]
assert all(f["measured_at"].startswith("a 1-layer, 16-wide byte-level GPT") for f in figures), [f["measured_at"] for f in figures]
assert figures[0]["reason"].endswith(", not at the seed's scale"), figures[0]["reason"]
assert figures[3]["reason"].startswith("the training run gave no figure; tgc sends 0 B"), figures[3]["reason"]
runs = d["provenance"]["train_runs"]
assert len(runs) == 1 and runs[0]["config"].endswith("/claims/train-tiny.json"), runs
PY

# 2. Reused.
claims --out l2 > /dev/null 2> err.txt
grep -q "claims: training" err.txt && fail "current results were not reused: $(cat err.txt)"
cmp <(grep measured l1/claims.json) <(grep measured l2/claims.json) || fail "the reused results gave other figures"

# 3. --retrain, with --json.
claims --out l3 --retrain --json > l3.json 2> err.txt
grep -q "claims: training" err.txt || fail "--retrain did not train"
/usr/bin/python3 -c "import json, sys; json.load(open(sys.argv[1]))" l3.json || fail "--json's stdout is not JSON: $(head -3 l3.json)"

# 4. The config changed: its results are stale.
sed -i 's/"steps": 10,/"steps": 8,/' claims/train-tiny.json
claims --out l4 --no-train > table.txt 2> err.txt
grep -q "claims: training" err.txt && fail "--no-train trained"
grep -q "not measured yet: run \`twinbed train claims/train-tiny.json\` (about 1 minute), or \`twinbed claims\` without --no-train" l4/claims.md ||
  fail "stale results were used: $(grep accuracy l4/claims.md)"
claims --out l5 > table.txt 2> err.txt
grep -q "claims: training" err.txt || fail "stale results were not retrained"
grep -q "4 measured in training runs$" table.txt || fail "not measured after retraining: $(tail -1 table.txt)"
echo "claims measured: trained once, reused, retrained on --retrain and on a changed config, --no-train trains nothing"
