#!/usr/bin/env bash
# Recompiles PaymentChannel.sol and TestToken.sol into their committed JSON artifacts with the pinned solc-js
# (tests/node/chain, `npm ci` there first). `build.sh --check` only compares.
set -euo pipefail
exec node "$(dirname "$0")/build.js" "$@"
