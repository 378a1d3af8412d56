#!/usr/bin/env bash
# Pseudo-label a corpus: transcribe, then export the accepted segments as training data.
#   jobs/pseudo_label.sh s3://bucket/audio/ s3://bucket/labels/ [dotted.key=value ...]
# Writes OUTPUT/segments, OUTPUT/recordings, OUTPUT/export/nemo/manifest.jsonl, OUTPUT/export/lhotse/cuts.jsonl.gz
set -euo pipefail
input=$1; output=$2; shift 2
here=$(cd "$(dirname "$0")/.." && pwd)
scriptorium=${SCRIPTORIUM:-$here/.venv/bin/scriptorium}
"$scriptorium" run "$here/conf/local.yaml" "input.uri=$input" "output.uri=$output" "$@"
"$scriptorium" export "$output" --format nemo --to "$output/export/nemo"
"$scriptorium" export "$output" --format lhotse --to "$output/export/lhotse"
