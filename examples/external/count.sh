#!/bin/sh
# An errand external command in plain sh: count to N, slowly.
# Input on stdin, e.g. {"to": 5}; result on stdout; events on stderr.
# (A real handler would parse its input with jq; sed keeps this example
# free of dependencies.)
set -eu

input=$(cat)
to=$(printf '%s' "$input" | sed -n 's/.*"to"[^0-9]*\([0-9][0-9]*\).*/\1/p')
if [ -z "$to" ]; then
    echo "input needs a number \"to\", e.g. {\"to\": 5}" >&2
    exit 2 # permanent
fi

i=0
while [ "$i" -lt "$to" ]; do
    i=$((i + 1))
    sleep 0.1
    fraction=$(awk -v i="$i" -v n="$to" 'BEGIN { print i / n }')
    echo "{\"progress\": $fraction, \"message\": \"counted $i of $to\"}" >&2
    echo "at $i" >&2 # a plain line: becomes a log event
done
printf '{"counted": %s}\n' "$to"
