#!/usr/bin/env bash
# check_one_line_error.sh REGEX COMMAND...: like expect_error.sh, and the error is one line: a control
# character from the input (a newline in a string value) is printed escaped, never raw.
set -u
regex=$1; shift
err=$("$@" 2>&1 >/dev/null)
code=$?
if [ $code -eq 0 ] || [ $code -ge 128 ]; then echo "expected an error exit, got $code: $err"; exit 1; fi
lines=$(printf '%s\n' "$err" | wc -l)
if [ "$lines" -ne 1 ]; then echo "the error spans $lines lines: $err"; exit 1; fi
if ! grep -Eq -- "$regex" <<<"$err"; then echo "stderr did not match /$regex/: $err"; exit 1; fi
echo "ok: $err"
