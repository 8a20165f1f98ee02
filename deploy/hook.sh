#!/usr/bin/env bash
# Your deploy step. `python -m pipelines.deploy hook` runs this after verifying the production
# entry of models/registry.yaml, with:
#   CLOSEDLOOP_VERSION     e.g. v1.2.0
#   CLOSEDLOOP_MODEL_HASH  sha256 of model.safetensors
#   CLOSEDLOOP_MODEL_DIR   the verified model directory (model.safetensors, config.json, card)
# The default POSTs the version and hash to $DEPLOY_HOOK_URL when it is set (e.g. a serving
# platform's webhook that pulls the model from the DVC remote), and otherwise says so.
set -euo pipefail
if [[ -z "${DEPLOY_HOOK_URL:-}" ]]; then
  echo "deploy hook: DEPLOY_HOOK_URL is not set; nothing to call for ${CLOSEDLOOP_VERSION}"
  exit 0
fi
payload=$(printf '{"version": "%s", "model_hash": "%s"}' "$CLOSEDLOOP_VERSION" "$CLOSEDLOOP_MODEL_HASH")
response=$(curl --fail --silent --show-error --max-time 60 -X POST \
  -H 'Content-Type: application/json' --data "$payload" "$DEPLOY_HOOK_URL")
echo "deploy hook: notified for ${CLOSEDLOOP_VERSION} (response: ${response:0:200})"
