#!/usr/bin/env bash
# System packages the tests need beyond the virtualenv: Chromium (Debian's `chromium` package), for
# the headless browser test of the docs site's lineage graph (tests/test_docs_site.py).
# Installs it with apt-get when running as root on a machine that has apt-get (CI); otherwise says
# why and what to run, and exits 0: the browser test then skips, naming this script.
set -euo pipefail

for browser in chromium chromium-browser google-chrome; do
    if command -v "$browser" >/dev/null 2>&1; then
        echo "setup_test_deps: $("$browser" --version 2>/dev/null || echo "$browser") is installed"
        exit 0
    fi
done

if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup_test_deps: no apt-get on this machine; install Chromium yourself to run the" \
        "docs browser test (it is skipped without it)"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "setup_test_deps: not root, so Chromium is not installed; run" \
        "'sudo apt-get update && sudo apt-get install -y chromium' to run the docs browser test" \
        "(it is skipped without it)"
    exit 0
fi

echo "setup_test_deps: installing Chromium with apt-get (for the docs browser test)"
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null; then
    echo "setup_test_deps: apt-get could not install chromium (see its error above); the docs" \
        "browser test will be skipped"
    exit 0
fi
if command -v chromium >/dev/null 2>&1; then
    echo "setup_test_deps: $(chromium --version) installed"
else
    echo "setup_test_deps: apt-get finished but no chromium is on PATH; the docs browser test" \
        "will be skipped"
fi
