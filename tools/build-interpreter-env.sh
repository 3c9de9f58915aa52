#!/usr/bin/env bash
# Builds the Code Interpreter's environment: a Python virtual environment with the common data
# libraries and the Deno runtime (JavaScript and TypeScript), which every interpreter session
# mounts read-only at this same path. Idempotent: an environment built from the same
# requirements is left alone. Prints the environment dir.
#
#   ENV/python/            the venv (bin/python3, bin/pip, bin/deno, numpy, pandas, ...)
#   ENV/mplconfig/         matplotlib's font cache, built once here so no session pays for it
#   ENV/.requirements-HASH stamp of the requirements it was built from
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ENV_DIR="${1:-$HOME/.cache/berth/interpreter}"
REQUIREMENTS="$HERE/interpreter/requirements.txt"
STAMP="$ENV_DIR/.requirements-$(sha256sum "$REQUIREMENTS" | cut -c1-16)"
if [ -e "$STAMP" ]; then echo "$ENV_DIR"; exit 0; fi

echo "building the Code Interpreter environment in $ENV_DIR" >&2
# Sessions run /usr/bin/python3 through the venv (the host's /usr is mounted in every sandbox).
/usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null || \
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null
rm -rf "$ENV_DIR.partial"
mkdir -p "$ENV_DIR.partial"
# Built in place of the final path: a venv's scripts name their interpreter by absolute path.
rm -rf "$ENV_DIR"
mv "$ENV_DIR.partial" "$ENV_DIR"
/usr/bin/python3 -m venv "$ENV_DIR/python"
"$ENV_DIR/python/bin/pip" install -q --disable-pip-version-check --no-warn-script-location \
  -r "$REQUIREMENTS" >&2
MPLCONFIGDIR="$ENV_DIR/mplconfig" MPLBACKEND=Agg "$ENV_DIR/python/bin/python" -c \
  'import matplotlib.pyplot as plt; plt.figure(); plt.plot([0, 1]); plt.savefig("/dev/null", format="png")'
"$ENV_DIR/python/bin/deno" --version >/dev/null
# Sessions must not be able to change it (it is shared by every session).
chmod -R a+rX,go-w "$ENV_DIR"
touch "$STAMP"
echo "$ENV_DIR"
