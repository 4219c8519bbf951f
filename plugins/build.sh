#!/usr/bin/env bash
# Builds every plugin (reference plugins and hostile test fixtures) for wasm32-wasip2, release, into
# target/plugins/NAME.wasm (hostile fixtures as target/plugins/hostile-NAME.wasm), next to a copy
# of each plugin's manifest (NAME.toml).
#
# Plugins are built one at a time: each enables one kind feature of the SDK, and a joint build
# would unify those features.
#
#   plugins/build.sh            build all
#   plugins/build.sh topk ...   build the named crates only
#   plugins/build.sh --check    also check formatting, run clippy (-D warnings) per crate and the
#                               guest crates' own unit tests (on the host target)
set -euo pipefail

check=0
if [ "${1:-}" = "--check" ]; then
    check=1
    shift
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/target/plugins"
# A target directory of its own: the host build's lock is not contended, even from inside tests.
export CARGO_TARGET_DIR="$root/target/plugins-build"
mkdir -p "$out"

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    echo "plugins/build.sh: the wasm32-wasip2 target is missing; run: rustup target add wasm32-wasip2" >&2
    exit 1
fi

crates=("$@")
if [ ${#crates[@]} -eq 0 ]; then
    for dir in "$root"/plugins/*/ "$root"/plugins/hostile/*/; do
        [ -f "$dir/Cargo.toml" ] || continue
        name="$(basename "$dir")"
        case "$name" in host | sdk | wit) continue ;; esac
        crates+=("$name")
    done
fi

for name in "${crates[@]}"; do
    if [ -d "$root/plugins/hostile/$name" ]; then
        dir="$root/plugins/hostile/$name"
        dest="hostile-$name"
    else
        dir="$root/plugins/$name"
        dest="$name"
    fi
    (cd "$root/plugins" && nice -n 10 cargo build --quiet --release --target wasm32-wasip2 -p "$name")
    lib="${name//-/_}"
    cp "$CARGO_TARGET_DIR/wasm32-wasip2/release/$lib.wasm" "$out/$dest.wasm.tmp"
    mv "$out/$dest.wasm.tmp" "$out/$dest.wasm"
    if [ -f "$dir/plugin.toml" ]; then
        cp "$dir/plugin.toml" "$out/$dest.toml"
    fi
done
if [ $check = 1 ]; then
    (cd "$root/plugins" && cargo fmt --all --check)
    for name in moed-plugin-sdk "${crates[@]}"; do
        features=()
        # The SDK alone needs a kind to compile; gate covers the shared code and the routing rule.
        [ "$name" = moed-plugin-sdk ] && features=(--features gate)
        (cd "$root/plugins" && nice -n 10 cargo clippy --quiet --release --target wasm32-wasip2 -p "$name" "${features[@]}" -- -D warnings)
    done
    (cd "$root/plugins" && nice -n 10 cargo test --quiet -p pii-redact --lib && nice -n 10 cargo test --quiet -p input-check --lib && nice -n 10 cargo test --quiet -p sql-retrieval --lib)
fi
echo "plugins/build.sh: ${#crates[@]} plugin(s) in $out"
