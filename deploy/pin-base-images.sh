#!/usr/bin/env bash
# Pins the Dockerfile's base images to the digests their tags point at now:
# every `ARG *_IMAGE=name:tag` (or an already pinned name:tag@sha256:...)
# becomes `ARG *_IMAGE=name:tag@sha256:<digest of the tag's manifest list>`.
#
#   deploy/pin-base-images.sh [Dockerfile]
#
# Needs `docker buildx` and registry access. Commit the result: a rebuild
# then uses the same base images until this is run again (e.g. for a Debian
# security update).
set -euo pipefail

dockerfile="${1:-Dockerfile}"
[ -f "$dockerfile" ] || { echo "no such file: $dockerfile" >&2; exit 1; }

digest_of() {
    docker buildx imagetools inspect "$1" --format '{{.Manifest.Digest}}'
}

out="$(mktemp "${dockerfile}.XXXXXX")"
trap 'rm -f "$out"' EXIT
pinned=0
while IFS= read -r line || [ -n "$line" ]; do
    if [[ "$line" =~ ^ARG\ ([A-Z_]+_IMAGE)=([^@[:space:]]+)(@sha256:[0-9a-f]{64})?$ ]]; then
        name="${BASH_REMATCH[1]}"
        image="${BASH_REMATCH[2]}"
        digest="$(digest_of "$image")"
        if ! [[ "$digest" =~ ^sha256:[0-9a-f]{64}$ ]]; then
            echo "$image: not a digest: '$digest'" >&2
            exit 1
        fi
        echo "$name=$image@$digest" >&2
        line="ARG $name=$image@$digest"
        pinned=$((pinned + 1))
    fi
    printf '%s\n' "$line"
done <"$dockerfile" >"$out"
if [ "$pinned" -eq 0 ]; then
    echo "$dockerfile: no ARG *_IMAGE= lines to pin" >&2
    exit 1
fi
chmod --reference="$dockerfile" "$out"
mv "$out" "$dockerfile"
trap - EXIT
