#!/bin/sh
# Validate templates/exchange.yml against GitLab's CI schema (check-jsonschema's
# vendor.gitlab-ci). A component file is two YAML documents (the spec header, then the
# jobs) and check-jsonschema reads only single-document files, so each document is
# checked on its own: the header as {spec: ...}, which the schema describes, and the jobs.
# The schema accepts any value under a hidden key (".name"), so the hidden job is checked
# a second time renamed to a visible job, which the schema does check.
#
# Usage: sh clients/test/validate-template.sh [TEMPLATE]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
template=${1:-$here/../../templates/exchange.yml}

command -v check-jsonschema >/dev/null 2>&1 || {
    echo "validate-template: check-jsonschema is missing (pip install check-jsonschema)" >&2
    exit 1
}
work=$(mktemp -d "${TMPDIR:-/tmp}/tokenmint-template.XXXXXX")
trap 'rm -rf -- "$work"' EXIT

separators=$(grep -c '^---$' "$template" || true)
[ "$separators" = 1 ] || {
    echo "validate-template: $template must have exactly one '---' line (it has $separators)" >&2
    exit 1
}
awk 'f == 0 && /^---$/ { f = 1; next } f == 0' "$template" >"$work/spec.yml"
awk 'f == 1; /^---$/ { f = 1 }' "$template" >"$work/jobs.yml"
grep -q '^spec:' "$work/spec.yml" || {
    echo "validate-template: the header document has no spec:" >&2
    exit 1
}
grep -q '^\.[A-Za-z0-9_-]*:$' "$work/jobs.yml" || {
    echo "validate-template: the jobs document has no hidden job" >&2
    exit 1
}
sed 's/^\.\([A-Za-z0-9_-]*\):$/\1:/' "$work/jobs.yml" >"$work/jobs-visible.yml"

for doc in spec jobs jobs-visible; do
    printf 'validate-template: %s (%s document): ' "$template" "$doc"
    check-jsonschema --builtin-schema vendor.gitlab-ci --data-transform gitlab-ci "$work/$doc.yml"
done
