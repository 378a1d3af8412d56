#!/usr/bin/env bash
# Point every manifest at one new image reference, e.g.
#   infra/set-image.sh 123456789012.dkr.ecr.eu-west-1.amazonaws.com/scriptorium:0.1.0-cu130
# Rewrites infra/image.env and every occurrence of the old reference under infra/k8s/ (including the
# RayJob template held as text inside the nightly ConfigMap, which kustomize's `images:` cannot reach).
set -euo pipefail
new="${1:?usage: infra/set-image.sh REGISTRY/scriptorium:TAG}"
last="${new##*/}"   # the name:tag part (a registry may carry a :port)
if [[ "$last" != *:* || "$last" == *:latest ]]; then
  echo "refusing '$new': pin a tag (e.g. :0.1.0-cu130), never :latest or no tag" >&2; exit 2
fi
here="$(cd "$(dirname "$0")" && pwd)"
old="$(sed -n 's/^SCRIPTORIUM_IMAGE=//p' "$here/image.env")"
[ -n "$old" ] || { echo "no SCRIPTORIUM_IMAGE in $here/image.env" >&2; exit 1; }
grep -rl --include='*.yaml' -F "image: $old" "$here/k8s" | while read -r f; do
  sed -i "s|image: ${old}\$|image: ${new}|" "$f"
done
sed -i "s|^SCRIPTORIUM_IMAGE=.*|SCRIPTORIUM_IMAGE=${new}|" "$here/image.env"
echo "image: $old -> $new"
