#!/usr/bin/env bash
# Debian's chromium for the console's browser tests: Playwright drives it (it downloads no browser).
# Installs it with apt-get when it is missing (as root, or through passwordless sudo). Where that
# cannot be done the browser tests skip with the reason, except under AEGIS_REQUIRE_BROWSER=1 (CI).
set -uo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then exit 0; fi
if command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
  echo "ensure-chromium: installing Debian's chromium (apt-get install chromium)" >&2
  if $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
     || { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null; }; then
    exit 0
  fi
fi
echo "ensure-chromium: could not install chromium: the browser tests will skip (install it: apt-get install chromium)" >&2
exit 0
