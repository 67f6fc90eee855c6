#!/usr/bin/env bash
# expect_error.sh REGEX COMMAND...: passes when COMMAND exits non-zero without crashing (no signal)
# and its stderr matches REGEX (extended grep).
set -u
regex=$1; shift
err=$("$@" 2>&1 >/dev/null)
code=$?
if [ $code -eq 0 ]; then echo "expected a non-zero exit, got 0"; exit 1; fi
if [ $code -ge 128 ]; then echo "crashed with exit $code: $err"; exit 1; fi
if ! grep -Eq -- "$regex" <<<"$err"; then echo "stderr did not match /$regex/: $err"; exit 1; fi
echo "ok: exit $code: $err"
