#!/usr/bin/env bash
# Pseudo-label a corpus: transcribe, then export the accepted segments as training data.
# A thin wrapper over `scriptorium pseudo-label` (pipeline/pseudo_label.py); `--help` says how.
set -uo pipefail

usage() {
  cat <<'TEXT'
usage: jobs/pseudo_label.sh INPUT OUTPUT [dotted.key=value ...] [--to DEST] [--yes]

Transcribe INPUT (a folder, s3://bucket/prefix/ or a manifest.jsonl) into OUTPUT with conf/local.yaml
(SCRIPTORIUM_CONFIG=other.yaml for another preset), then write the accepted segments of the whole output
as OUTPUT/export/nemo/manifest.jsonl and OUTPUT/export/lhotse/cuts.jsonl.gz (or under --to DEST).

Rerunnable: a rerun transcribes only new, changed or failed files and replaces the labels, so they match
the output (and the rules of `scriptorium filter`). A rerun that would redo more than half of OUTPUT
(changed settings) asks first; --yes goes ahead. Exit codes: 0 labels written; 3 labels written, some
files failed (named in the output); 1 no labels; 2 wrong arguments, config or input (nothing written).
TEXT
}

case "${1:-}" in
  -h | --help) usage; exit 0 ;;
esac
if [ $# -lt 2 ] || [[ $1 == -* ]] || [[ $2 == -* ]]; then
  usage >&2
  exit 2
fi
input=$1
output=$2
shift 2
here=$(cd "$(dirname "$0")/.." && pwd)
config=${SCRIPTORIUM_CONFIG:-$here/conf/local.yaml}
scriptorium=${SCRIPTORIUM:-$here/.venv/bin/scriptorium}
if [ ! -x "$scriptorium" ]; then
  scriptorium=scriptorium # installed with pip: on the PATH
fi
exec "$scriptorium" pseudo-label "$config" "input.uri=$input" "output.uri=$output" "$@"
