#!/usr/bin/env bash
# expect_error.sh REGEX COMMAND...: passes when COMMAND exits non-zero without crashing (no signal), its
# stderr matches REGEX (extended grep), and it wrote nothing into the working folder (bad input never
# leaves a results file behind; run it in an empty folder, as in_fresh_dir.sh does).
set -u
regex=$1; shift
before=$(ls -A)
err=$("$@" 2>&1 >/dev/null)
code=$?
if [ $code -eq 0 ]; then echo "expected a non-zero exit, got 0"; exit 1; fi
if [ $code -ge 128 ]; then echo "crashed with exit $code: $err"; exit 1; fi
if ! grep -Eq -- "$regex" <<<"$err"; then echo "stderr did not match /$regex/: $err"; exit 1; fi
after=$(ls -A)
if [ "$before" != "$after" ]; then echo "the failed command left files behind: $after"; exit 1; fi
echo "ok: exit $code: $err"
