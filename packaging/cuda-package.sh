# packaging/build.sh --gpu (sourced by it, with its options set): the GPU companion package
# moed-cuda, the variant "cuda" of daemon/Cargo.toml's package metadata. Its files are staged under
# $TARGET/release/package-root-cuda: lib/gpu (onnxruntime-gpu's library and providers), lib/cuda
# (NVIDIA's libraries, with --cuda-libs), doc (the wheels' licence texts).

build_cuda_package() {
  if [[ "$arch" != amd64 || "$native" != amd64 ]]; then
    echo "build.sh: --gpu builds an amd64 package on amd64 only (no onnxruntime-gpu is pinned for '$arch')" >&2
    exit 2
  fi
  command -v gzip >/dev/null || { echo "build.sh: gzip is missing; run tests/setup.sh" >&2; exit 1; }
  local tools_bin
  tools_bin="$("$repo/packaging/tools.sh")"
  export PATH="$tools_bin:$PATH"

  local root="$release/package-root-cuda" stage="$release/package-root-cuda.new" provisioned
  rm -rf "$stage"
  mkdir -p "$stage/lib/gpu" "$stage/doc"
  # Into an empty directory, as for moed: the wheels come from provision.sh's cache, checked again.
  echo "== packaging: onnxruntime-gpu ${gpu_flags[*]} (provision.sh --gpu)" >&2
  provisioned="$("$repo/packaging/onnxruntime/provision.sh" --gpu "${gpu_flags[@]}" "$stage/ort")"
  local ort_lib
  ort_lib="$(head -n 1 <<<"$provisioned")"
  # Only the versioned library (the name ORT_DYLIB_PATH in the drop-in gives) and the providers
  # ONNX Runtime loads from its own folder; no bare .so link, no stamps.
  mv "$ort_lib" "$stage/ort"/libonnxruntime_providers_*.so "$stage/lib/gpu/"
  local f
  for f in "$stage/ort/licenses"/* "$stage/ort/cuda/licenses"/*; do
    [[ -f "$f" ]] && mv "$f" "$stage/doc/"
  done
  if [[ -d "$stage/ort/cuda" ]]; then
    rm -rf "$stage/ort/cuda/licenses" "$stage/ort/cuda/.wheels-sha256"
    mv "$stage/ort/cuda" "$stage/lib/cuda"
  fi
  rm -rf "$stage/ort"
  gzip -9n "$stage/doc"/*ThirdPartyNotices.txt

  local dropin_lib
  dropin_lib="$(sed -n 's/^Environment=ORT_DYLIB_PATH=//p' "$repo/systemd/moed-cuda.conf")"
  if [[ "$dropin_lib" != "/usr/lib/moed/gpu/${ort_lib##*/}" ]]; then
    echo "build.sh: systemd/moed-cuda.conf points ORT_DYLIB_PATH at '$dropin_lib', the package holds /usr/lib/moed/gpu/${ort_lib##*/}" >&2
    exit 1
  fi
  rm -rf "$root"
  mv "$stage" "$root"

  mkdir -p "$deb_out" "$rpm_out"
  local deb_flags=() rpm_flags=()
  if ((fast)); then deb_flags=(--fast); rpm_flags=(--payload-compress gzip); fi
  echo "== packaging: cargo deb --variant cuda (revision $revision)" >&2
  (cd "$repo" && cargo deb --quiet -p moed --variant cuda --no-build --no-strip "${deb_flags[@]}" \
    --deb-revision "$revision" --output "$deb_out")
  if ((rpm)); then
    echo "== packaging: cargo generate-rpm --variant cuda (release $revision)" >&2
    (cd "$repo" && cargo generate-rpm -p daemon --variant cuda --target-dir "$target" "${rpm_flags[@]}" \
      --set-metadata "release = \"$revision\"" --output "$rpm_out") >&2
    ls -t "$rpm_out"/moed-cuda-*-"$revision".x86_64.rpm | head -n 1
  fi
}
