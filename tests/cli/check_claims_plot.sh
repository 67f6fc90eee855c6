#!/usr/bin/env bash
# check_claims_plot.sh TWINBED DATA_DIR SOURCE_DIR: how `twinbed claims` draws claims.png.
#  1. An --out holding shell syntax is only a folder name: the plot script is started with an argument
#     vector, no shell, so "q'; touch pwned; '" gets the results and nothing is run.
#  2. A failed plot says why (here the script's own error, from a stand-in matplotlib that raises) and
#     leaves no claims.png: neither an earlier ledger's nor a half-written one.
#  3. --no-plot removes an earlier ledger's claims.png too.
#  4. plot_claims.draw writes atomically: a savefig failing half-way leaves the old file and no temporary;
#     an arithmetic check is labelled in its own unit (needs matplotlib; the step says so and passes
#     without it).
set -euo pipefail
tb=$1
data=$2
src=$3
py=/usr/bin/python3
fail() { echo "FAIL: $*" >&2; exit 1; }
claims() { "$tb" claims SYNTH-RATIO --dir "$data/claims" --no-train "$@"; }
has_matplotlib() { [ -x "$py" ] && "$py" -c "import matplotlib" 2>/dev/null; }

# 1. A quote in --out.
out="q'; touch pwned; '"
claims --out "$out" > table.txt 2> err.txt
test -s "$out/claims.json" || fail "no claims.json in the folder named by --out"
grep -q "SYNTH-RATIO" table.txt || fail "no table"
found=$(find . -name pwned)
[ -z "$found" ] || fail "--out ran a shell command: $found"
if has_matplotlib; then
  [ "$(head -c 4 "$out/claims.png" | tail -c 3)" = PNG ] || fail "no claims.png in '$out': $(cat err.txt)"
fi

# 2. A failing plot script: the reason is its own, and no old or partial claims.png stays.
mkdir -p stale fake/matplotlib
printf 'an earlier ledger' > stale/claims.png
echo 'raise RuntimeError("stand-in matplotlib, broken on purpose")' > fake/matplotlib/__init__.py
PYTHONPATH="$PWD/fake" claims --out stale > /dev/null 2> err.txt
if [ -x "$py" ]; then
  grep -q "no plot: plot_claims.py failed: exit status 1: RuntimeError: stand-in matplotlib, broken on purpose" err.txt ||
    fail "the plot's failure is not what the script said: $(cat err.txt)"
else
  grep -q "no plot: no $py" err.txt || fail "the missing $py is not named: $(cat err.txt)"
fi
[ ! -e stale/claims.png ] || fail "an earlier ledger's claims.png stayed beside new results"
[ -z "$(find stale -name '*.tmp-*')" ] || fail "a temporary file stayed: $(ls -A stale)"

# 3. --no-plot.
mkdir -p noplot
printf 'an earlier ledger' > noplot/claims.png
claims --out noplot --no-plot > /dev/null 2>&1
[ ! -e noplot/claims.png ] || fail "--no-plot left an earlier ledger's claims.png"

# 4. plot_claims.draw is atomic.
if ! has_matplotlib; then
  echo "step 4 skipped: no matplotlib for $py"
  exit 0
fi
PYTHONPATH="$src/notebooks" PYTHONDONTWRITEBYTECODE=1 "$py" - "$out/claims.json" <<'EOF'
import os
import sys

import plot_claims
from matplotlib.figure import Figure

data = plot_claims.load(sys.argv[1])
with open("old.png", "wb") as f:
    f.write(b"old")
real_savefig = Figure.savefig


def half_way(self, path, **kwargs):
    with open(path, "wb") as f:
        f.write(b"\x89PN")
    raise OSError("disk full, on purpose")


Figure.savefig = half_way
try:
    plot_claims.draw(data, "old.png")
    sys.exit("FAIL: draw did not raise")
except OSError:
    pass
Figure.savefig = real_savefig
left = [n for n in os.listdir(".") if ".tmp-" in n]
assert not left, f"FAIL: temporaries left: {left}"
assert open("old.png", "rb").read() == b"old", "FAIL: a failed draw changed old.png"
plot_claims.draw(data, "old.png")
assert open("old.png", "rb").read(4) == b"\x89PNG", "FAIL: draw did not replace old.png"
# An arithmetic check is labelled in its own unit (MOE-8's active-parameter ratio once read "1 %").
label = plot_claims._right_text({"reported": {"text": "41 %", "unit": "%"}, "arithmetic": 1, "arithmetic_unit": "×"})
assert label == "reported 41 %; check 1 ×", f"FAIL: {label!r}"
print("claims plot: argv without a shell, failures named, no stale or partial claims.png, checks in their unit")
EOF
