#!/usr/bin/env bash
# The extension in a real VS Code: code-server (VS Code 1.100.3) + headless Chromium drive the .vsix
# against mole-lsp serving a tiny random model (vscode-extension/e2e/vscode.e2e.mjs says what it checks).
#
# Needs: node 20 + npm, Debian's chromium, ripgrep and libkrb5-dev (plus g++/make for node-gyp), and the
# project's .venv. code-server and playwright-core are installed once into $MOLE_E2E_TOOLS (default
# ~/.cache/mole-lsp-e2e); a rerun reuses them. Screenshots and logs go to $MOLE_E2E_ARTIFACTS (default: a
# temp folder, printed at the end and kept when the test fails).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

CODE_SERVER_VERSION=4.100.3   # the newest whose engines.node allows Node 20
PLAYWRIGHT_VERSION=1.65.1
RIPGREP_CACHE=vscode-ripgrep-cache-1.15.11  # what code-server's @vscode/ripgrep looks for
RIPGREP_TARBALL=ripgrep-v13.0.0-10-x86_64-unknown-linux-musl.tar.gz

tools=${MOLE_E2E_TOOLS:-$HOME/.cache/mole-lsp-e2e}
chromium=${MOLE_E2E_CHROMIUM:-/usr/bin/chromium}
python=${MOLE_E2E_PYTHON:-$repo/.venv/bin/python}

missing=()
[ -x "$chromium" ] || missing+=("chromium ($chromium)")
command -v rg >/dev/null || missing+=("ripgrep (rg)")
command -v npm >/dev/null || missing+=("npm")
[ -x "$python" ] || missing+=("the project's virtual environment ($python)")
if [ ${#missing[@]} -gt 0 ]; then
  echo "vscode-e2e: missing ${missing[*]} (Debian: apt-get install chromium ripgrep libkrb5-dev)" >&2
  exit 2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/mole-vscode-e2e.XXXXXX")
artifacts=${MOLE_E2E_ARTIFACTS:-$work/artifacts}
mkdir -p "$artifacts"
status=1
finish() {
  if [ "$status" = 0 ] && [ -z "${MOLE_E2E_ARTIFACTS:-}" ]; then rm -rf "$work"
  else echo "vscode-e2e: screenshots and logs in $artifacts"; fi
}
trap finish EXIT

echo "== tools: code-server $CODE_SERVER_VERSION, playwright-core $PLAYWRIGHT_VERSION (in $tools)"
stamp="code-server@$CODE_SERVER_VERSION playwright-core@$PLAYWRIGHT_VERSION"
if [ "$(cat "$tools/.installed" 2>/dev/null)" != "$stamp" ]; then
  rm -rf "$tools" && mkdir -p "$tools"
  printf '{"private": true}\n' >"$tools/package.json"
  # @vscode/ripgrep downloads rg unless its cache holds the archive: give it Debian's.
  rgtmp="$work/rg-tmp"
  mkdir -p "$rgtmp/$RIPGREP_CACHE"
  cp "$(command -v rg)" "$rgtmp/rg"
  tar -C "$rgtmp" -czf "$rgtmp/$RIPGREP_CACHE/$RIPGREP_TARBALL" rg
  # node-gyp builds node-pty, spdlog, kerberos and argon2 against the installed Node headers;
  # node-pty's postinstall runs `npx node-gyp` (npm_config_yes answers its prompt).
  (cd "$tools" && TMPDIR="$rgtmp" npm_config_nodedir=/usr npm_config_yes=true \
    npm install --unsafe-perm --no-audit --no-fund --loglevel=error \
    "code-server@$CODE_SERVER_VERSION" "playwright-core@$PLAYWRIGHT_VERSION")
  echo "$stamp" >"$tools/.installed"
fi

echo "== the .vsix"
(cd vscode-extension && { [ -d node_modules ] || npm ci --no-audit --no-fund; } && npm run --silent package >/dev/null)
vsix=$(ls -t "$repo"/vscode-extension/mole-lsp-*.vsix | head -n1)

echo "== the tiny world (random Llama + core and python packs)"
OMP_WAIT_POLICY=PASSIVE "$python" tests/e2e_world.py "$work/world" >"$work/world.json" 2>"$artifacts/world.log"

echo "== code-server + Chromium"
E2E_TOOLS=$tools E2E_VSIX=$vsix E2E_WORLD=$work/world.json E2E_WORK=$work E2E_ARTIFACTS=$artifacts \
  E2E_CHROMIUM=$chromium timeout 600 node vscode-extension/e2e/vscode.e2e.mjs
status=0
