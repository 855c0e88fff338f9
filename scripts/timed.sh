#!/usr/bin/env bash
# timed.sh NAME COMMAND...: runs COMMAND and prints how long NAME took (CI has a time budget).
set -euo pipefail
name=$1; shift
start=$SECONDS
"$@"
echo "== $name: $((SECONDS - start)) s"
