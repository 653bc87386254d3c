#!/usr/bin/env bash
# Keeps the README's layout section true: every top-level directory, every tool, and every
# module of the crates (each entry of their src/, and of data-plane's dns/ and proxy/) must be
# named in it (as `name` or `name/`). A new module without a line there fails the test run.
set -euo pipefail
cd "$(dirname "$0")/.."
layout=$(sed -n '/^## Layout/,/^## Benchmarks/p' README.md)
missing=()
named() { grep -qE "(^|[^A-Za-z0-9_.-])$1(/|[^A-Za-z0-9_-]|$)" <<<"$layout"; }
for dir in $(git ls-files | cut -d/ -f1 | sort -u); do
  [ -d "$dir" ] || continue
  named "$dir" || missing+=("$dir/")
done
for tool in $(git ls-files tools | cut -d/ -f2 | sort -u); do
  named "${tool%.sh}" || named "$tool" || missing+=("tools/$tool")
done
for src in model/src runtime/src control-plane/src data-plane/src data-plane/src/dns \
  data-plane/src/proxy data-plane/src/proxy/http client-sdk/src cli/src; do
  [ -d "$src" ] || continue
  for entry in $(git ls-files "$src" | sed "s|^$src/||" | cut -d/ -f1 | sort -u); do
    name=${entry%.rs}
    case $name in lib | main | mod) continue ;; esac
    named "$name" || missing+=("$src/$entry")
  done
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "check-layout: README.md's Layout section does not name: ${missing[*]}" >&2
  exit 1
fi
echo "check-layout: the Layout section names every directory, tool and module"
