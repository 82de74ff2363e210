#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need, then checks
# formatting, lints and runs every test tier (unit, snapshot, real tools, CLI end to end), the
# AWS provider against moto's server and e-mail against a real SMTP server (both on loopback,
# started by the tests themselves).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
scripts/start-engine.sh

# Local images for the engine tests (no registry is reachable): a Debian root file system
# with the real nginx, MariaDB, Redis and PostgreSQL, plus health-check stand-ins. Cached by
# content, so a second run only checks that they are there.
export STACKBOX_CACHE_DIR="${STACKBOX_CACHE_DIR:-$HOME/.cache/stackbox}"
export STACKBOX_TEST_IMAGES="$STACKBOX_CACHE_DIR/test-images.toml"
tests/images/build.sh "$STACKBOX_TEST_IMAGES"

# Every tier runs here: a test whose tier lacks something (the engine, the images, a tool)
# fails instead of skipping, as it does under a plain `cargo test` (crates/stackbox-testkit).
export STACKBOX_REQUIRE_ALL_TIERS=1

# A target directory outside the clone survives between CI runs on the same machine.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/stackbox/target}"
export CARGO_TERM_COLOR=never
# Snapshots are checked, never rewritten, here: review changes with `cargo insta review`.
export INSTA_UPDATE=no

cargo fmt --all -- --check
# --all-features: the AWS provider (the binary's `aws` feature, off in the default build because
# the SDK takes minutes to compile) is linted and tested too, against moto's server.
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --all-features --locked 2>&1 | tee "$log"
# One plain closing line with the totals of every test binary (cargo's own last line is the
# doc-test run, which has no tests).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
