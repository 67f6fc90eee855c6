#!/usr/bin/env bash
# check_claims_notebook.sh TWINBED SOURCE_DIR: the claims ledger as a person reads it. Runs one claim
# (TGC-AR) into ./claims, checks that the CLI drew claims.png (notebooks/plot_claims.py), then executes
# notebooks/claims.ipynb headless against that claims.json and fails on any cell error. Exits 77 (skipped)
# only when matplotlib or Jupyter's nbconvert / ipykernel are not installed (scripts/install-deps.sh).
set -euo pipefail
tb=$1
src=$2
py=/usr/bin/python3

"$py" -c "import matplotlib" 2>/dev/null || { echo "skip: no matplotlib for $py (scripts/install-deps.sh)"; exit 77; }
"$py" -c "import nbconvert, nbformat, ipykernel" 2>/dev/null ||
  { echo "skip: no nbconvert / nbformat / ipykernel for $py (scripts/install-deps.sh)"; exit 77; }

"$tb" claims TGC-AR --dir "$src/experiments/claims" --out claims --no-train  # no 4-minute training in CI
test -s claims/claims.json
# The CLI hides the plot script's output: on failure run it again so the log says why.
signature=$(head -c 4 claims/claims.png 2>/dev/null | tail -c 3 || true)
if [ "$signature" != PNG ]; then
  echo "FAIL: twinbed claims drew no claims/claims.png; plot_claims.py says:" >&2
  "$py" "$src/notebooks/plot_claims.py" claims/claims.json claims/rerun.png >&2 || true
  exit 1
fi

# The notebook runs in its own folder (nbconvert's default); the ledger comes from this test's folder.
# Jupyter's runtime files and IPython's profile stay here too, out of $HOME.
export TWINBED_CLAIMS_JSON="$PWD/claims/claims.json"
export JUPYTER_RUNTIME_DIR="$PWD/jupyter-runtime" IPYTHONDIR="$PWD/ipython"
export PYDEVD_DISABLE_FILE_VALIDATION=1  # ipykernel's debugger warns about frozen modules otherwise
export PYTHONDONTWRITEBYTECODE=1  # importing notebooks/plot_claims.py leaves no __pycache__ in the source tree
"$py" -m nbconvert --to notebook --execute --ExecutePreprocessor.timeout=120 \
  --ExecutePreprocessor.kernel_name=python3 --output-dir "$PWD" --output claims.executed \
  "$src/notebooks/claims.ipynb"

# nbconvert stops at a cell error; check the executed copy all the same: every code cell ran, none left
# an error, the ledger plot is there and the claim's section was written.
"$py" - claims.executed.ipynb <<'EOF'
import json
import sys

nb = json.load(open(sys.argv[1]))
code = [c for c in nb["cells"] if c["cell_type"] == "code"]
problems = [f"code cell {i} did not run" for i, c in enumerate(code) if c.get("execution_count") is None]
problems += [f"code cell {i}: {o.get('ename')}: {o.get('evalue')}" for i, c in enumerate(code)
             for o in c.get("outputs", []) if o.get("output_type") == "error"]
outputs = [o for c in code for o in c.get("outputs", [])]
if not any("image/png" in o.get("data", {}) for o in outputs):
    problems.append("no plot (image/png) in the outputs")
text = json.dumps(outputs)
for expected in ("TGC-AR", "not reproduced", "Assumptions"):
    if expected not in text:
        problems.append(f"'{expected}' is nowhere in the outputs")
for p in problems:
    print("FAIL:", p, file=sys.stderr)
print(f"claims notebook: {len(code)} code cells ran, {len(outputs)} outputs")
sys.exit(1 if problems else 0)
EOF
