# Sourced by scripts/run and scripts/test: make .venv and install the project into it.
# Reinstalls only when setup.cfg changed, so repeated runs start quickly.
# $1: the extras to install, e.g. "[test]" (may be empty).
set -euo pipefail
extras="${1:-}"
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "jangotw needs Python 3.11 or newer as python3" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  if ! python3 -m venv .venv 2>/dev/null; then
    rm -rf .venv
    # Debian ships venv separately.
    sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq python3-venv
    python3 -m venv .venv
  fi
fi
stamp=".venv/.installed${extras}"
if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  # compat mode keeps twisted/plugins/ visible to twistd (a default editable install hides it)
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extras}" \
      --config-settings editable_mode=compat
  touch "$stamp"
fi
