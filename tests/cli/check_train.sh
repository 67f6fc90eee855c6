#!/usr/bin/env bash
# check_train.sh TWINBED CONFIG: `twinbed train` end to end on 2 ranks — exit 0, the summary printed, the
# results folder complete (config, train.json with every variant and its steps, CSVs, checkpoints of the
# variants without adapters), and a rerun bit-identical in everything but the wall times.
set -eu
tb=$1 config=$2
"$tb" train "$config" --out a --no-plot > a.txt 2> a.err
grep -q '^# twinbed train: tiny' a.txt
grep -q '^tgc ' a.txt
grep -q '# against the reference' a.txt
for f in config.json train.json steps.csv summary.csv checkpoints/baseline.bin checkpoints/tgc.bin; do test -s "a/$f"; done
test ! -e a/checkpoints/lora.bin
/usr/bin/python3 - a/train.json <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["format"] == "twinbed-train-1", d["format"]
names = [v["name"] for v in d["variants"]]
assert names == ["baseline", "tgc", "lora"], names
assert [len(v["steps"]) for v in d["variants"]] == [4, 4, 2]
base, tgc, lora = d["variants"]
assert tgc["mean_bytes_per_step"] < base["mean_bytes_per_step"], (tgc["mean_bytes_per_step"], base["mean_bytes_per_step"])
assert lora["trainable"] == 2 * (48 + 16), lora["trainable"]   # r·(d+k): rank 2 on qkv (48 x 16), one layer
assert {c["variant"] for c in d["comparisons"]} == {"tgc"}, d["comparisons"]   # lora has no full fine-tune here
assert d["provenance"]["ranks"] == 2
PY
"$tb" train "$config" --out b --no-plot > /dev/null 2>&1
# The same losses, accuracies and bytes on a rerun (every column but the wall times and peak memory).
cut -d, -f1-6,9,11- a/steps.csv > a.cut
cut -d, -f1-6,9,11- b/steps.csv > b.cut
cmp a.cut b.cut
cmp a/checkpoints/baseline.bin b/checkpoints/baseline.bin
echo ok
