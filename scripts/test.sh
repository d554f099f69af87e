#!/usr/bin/env bash
# The whole test suite: installs the browser the web tests drive where it is
# missing (scripts/install-browser.sh), then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${FLOWFORM_SKIP_BROWSER:-0}" != "1" ]; then
  scripts/install-browser.sh
fi
cargo test --workspace "$@"
