#!/bin/sh
# Checks that every repository path a document names in backquotes exists: a word with a slash,
# no placeholder (<...>) and no wildcard. Usage: scripts/check-doc-paths.sh DOC.md [ROOT]
# (ROOT: the repository, default the parent of scripts/). Exit 1 listing the missing paths.
# The ctest docs_architecture_paths runs it on docs/architecture.md.
set -eu
doc=${1:?usage: check-doc-paths.sh DOC.md [ROOT]}
root=${2:-$(cd "$(dirname "$0")/.." && pwd)}
missing=0
checked=0
for p in $(grep -o '`[^` ]*/[^` ]*`' "$doc" | tr -d '`' | sort -u); do
    case $p in
    *'<'* | *'*'* | http*) continue ;;
    esac
    checked=$((checked + 1))
    if [ ! -e "$root/$p" ]; then
        echo "$doc names $p, which does not exist"
        missing=1
    fi
done
echo "$doc: $checked paths checked"
[ "$checked" -gt 0 ] || { echo "$doc: no paths found (is the file right?)"; exit 1; }
exit $missing
