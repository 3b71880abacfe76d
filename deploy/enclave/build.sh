#!/usr/bin/env bash
# Build the enclave image reproducibly, turn it into an EIF and print its PCRs
# (deploy/README.md, "2. Build and measure"). Run from anywhere in the repository
# on a Linux machine with Docker (buildx >= 0.13) and nitro-cli.
#
#   deploy/enclave/build.sh                 # build, measure, print PCR0-2
#   VERIFY=1 deploy/enclave/build.sh        # ... and build again from scratch: PCRs must match
#   SIGNING_KEY=release.key SIGNING_CERT=release.pem deploy/enclave/build.sh   # also PCR8
#
# Outputs in build/enclave/: shardkeep-<commit>.eif, shardkeep-<commit>.build.json
# (nitro-cli's output) and shardkeep-<commit>.pcrs.json (what clients pin and
# what deploy/kms/policy.py renders into the KMS key policy).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"

AWS_REGION=${AWS_REGION:-us-east-1}
PLATFORM=${PLATFORM:-linux/amd64}  # linux/arm64 for Graviton parents: different PCRs
OUT=${OUT:-build/enclave}

if [[ -z "${ALLOW_DIRTY:-}" ]] && ! git diff --quiet HEAD --; then
  echo "build.sh: the work tree has uncommitted changes; a release must build from a commit" >&2
  echo "          (ALLOW_DIRTY=1 to build anyway, for development only)" >&2
  exit 1
fi
for tool in docker nitro-cli python3; do
  command -v "$tool" >/dev/null || { echo "build.sh: $tool is not installed" >&2; exit 1; }
done

# The configuration is measured with the image: a release must pin its coordinators
# and name the sealing keys by ARN in the real account (not the example 111122223333).
if [[ -z "${ALLOW_DIRTY:-}" ]] && ! python3 -c '
import json, sys
config = json.load(open("deploy/enclave/enclave.json"))
keys = [config["kms"]["key_id"], *config["kms"].get("decrypt_key_ids", [])]
sys.exit(0 if config["coordinator_keys"] and config["nsm"]["mode"] == "nitro"
         and all(k.startswith("arn:") and ":111122223333:" not in k for k in keys) else 1)'; then
  echo "build.sh: deploy/enclave/enclave.json pins no coordinator key, is not nsm.mode nitro," >&2
  echo "          or names a KMS key by anything but an ARN in your account" >&2
  exit 1
fi

COMMIT=$(git rev-parse --short=12 HEAD)
# Every file time in the image is clamped to the commit time.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --pretty=%ct)}
mkdir -p "$OUT"

build_once() {
  local tag=$1 eif=$2 report=$3
  docker buildx build \
    --platform "$PLATFORM" \
    --no-cache \
    --build-arg SOURCE_DATE_EPOCH \
    --build-arg AWS_REGION="$AWS_REGION" \
    --file deploy/enclave/Dockerfile \
    --output "type=docker,name=$tag,rewrite-timestamp=true" \
    .
  local sign=()
  if [[ -n "${SIGNING_KEY:-}" ]]; then
    sign=(--private-key "$SIGNING_KEY" --signing-certificate "${SIGNING_CERT:?SIGNING_CERT is required with SIGNING_KEY}")
  fi
  nitro-cli build-enclave --docker-uri "$tag" --output-file "$eif" "${sign[@]}" >"$report"
}

IMAGE="shardkeep-enclave:$COMMIT"
EIF="$OUT/shardkeep-$COMMIT.eif"
REPORT="$OUT/shardkeep-$COMMIT.build.json"
PCRS="$OUT/shardkeep-$COMMIT.pcrs.json"

build_once "$IMAGE" "$EIF" "$REPORT"
python3 deploy/kms/policy.py pcrs "$REPORT" --commit "$COMMIT" --eif "$EIF" >"$PCRS"

if [[ -n "${VERIFY:-}" ]]; then
  build_once "$IMAGE-verify" "$OUT/verify.eif" "$OUT/verify.build.json"
  python3 deploy/kms/policy.py pcrs "$OUT/verify.build.json" --commit "$COMMIT" >"$OUT/verify.pcrs.json"
  python3 deploy/kms/policy.py same-pcrs "$PCRS" "$OUT/verify.pcrs.json"
  rm -f "$OUT/verify.eif" "$OUT/verify.build.json" "$OUT/verify.pcrs.json"
  echo "build.sh: a second build from scratch gave the same PCRs" >&2
fi

echo "EIF: $EIF"
cat "$PCRS"
