#!/usr/bin/env bash
# Browser tests of the operator console: Debian's Chromium driven through
# WebDriver (chromedriver, started by the test), on SQLite and PostgreSQL.
# Installs chromium and chromium-driver with apt-get when missing. Under CI the
# tests fail rather than skip when the browser cannot be had.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then
  echo "installing chromium and chromium-driver from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium chromium-driver >/dev/null
fi
chromium --version
chromedriver --version

# Absolute: the test runs with the console crate as its working directory.
target_dir=${CARGO_TARGET_DIR:-target}
case $target_dir in /*) ;; *) target_dir="$PWD/$target_dir" ;; esac
export IDEM_SCREENSHOT_DIR="${IDEM_SCREENSHOT_DIR:-$target_dir/console-screenshots}"
# One browser at a time: the tests share two cores with everything else.
cargo test -p idem-console --test browser -- --ignored --test-threads=1
echo "screenshots in $IDEM_SCREENSHOT_DIR"
ls -1 "$IDEM_SCREENSHOT_DIR"/*/ || true
