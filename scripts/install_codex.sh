#!/usr/bin/env bash
# Install the pinned OpenAI Codex CLI into tools/codex/node_modules (never globally).
# Idempotent: does nothing when tools/codex/node_modules/.bin/codex already is that version.
# The tests drive this binary against a local fake model server (tests/fakes/).
set -euo pipefail
cd "$(dirname "$0")/../tools/codex"
version=$(sed -n 's/.*"@openai\/codex": *"\([^"]*\)".*/\1/p' package.json | head -n1)
codex=node_modules/.bin/codex

if [ -x "$codex" ] && [ "$("$codex" --version 2>/dev/null || true)" = "codex-cli $version" ]; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "install_codex: installing nodejs and npm (needs apt-get)"
  apt-get update -qq && apt-get install -y -qq nodejs npm
fi
echo "install_codex: installing @openai/codex $version into tools/codex"
npm ci --no-audit --no-fund --loglevel=error
installed=$("$codex" --version)
if [ "$installed" != "codex-cli $version" ]; then
  echo "install_codex: expected codex-cli $version, got: $installed" >&2
  exit 1
fi
echo "install_codex: $installed ready"
