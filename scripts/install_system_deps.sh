#!/usr/bin/env bash
# Installs whichever Debian packages of scripts/system-packages.txt are not installed yet; a no-op when all are.
# Where it cannot install (no apt-get, not root and no password-less sudo) it says what is missing and exits 0,
# and the tests that need a package skip locally (in CI, where CI is set, they fail instead).
# LYRIA_SKIP_SYSTEM_DEPS=1 turns it off.
set -euo pipefail
[[ "${LYRIA_SKIP_SYSTEM_DEPS:-0}" == 1 ]] && exit 0
list="$(dirname "$0")/system-packages.txt"

missing=()
while read -r package; do
    [[ -z "$package" ]] && continue
    # no pipe into `grep -q`: with pipefail, grep closing early could fail the check of an installed package
    status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
    [[ "$status" == *"ok installed" ]] || missing+=("$package")
done < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$list")
[[ ${#missing[@]} -eq 0 ]] && exit 0

if ! command -v apt-get >/dev/null; then
    echo "install_system_deps: no apt-get on this machine; missing: ${missing[*]}" >&2
    exit 0
fi
run=()
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        run=(sudo -n)
    else
        echo "install_system_deps: not root and no password-less sudo; missing: ${missing[*]}" >&2
        exit 0
    fi
fi

echo "install_system_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# A fresh machine may have no package lists yet: refresh them once when the first attempt fails.
if ! "${run[@]}" apt-get install -y -q "${missing[@]}" >/dev/null; then
    "${run[@]}" apt-get update -q >/dev/null || true  # offline: the second attempt below reports what is missing
    "${run[@]}" apt-get install -y -q "${missing[@]}" >/dev/null \
        || echo "install_system_deps: could not install ${missing[*]}" >&2
fi
