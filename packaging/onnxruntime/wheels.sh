# Helpers of provision.sh (sourced, not run): fetch a pinned wheel into the wheel cache, refuse it
# unless its SHA-256 is the pinned one, and copy shared libraries out of it.
#
# wheel_fetch CACHE PROJECT VERSION FILE SHA256 [INDEX_URL]
#   Makes CACHE/FILE the pinned wheel: taken from the cache when there, else downloaded with pip for
#   the platforms its file name is tagged with (from PyPI, or from INDEX_URL as an extra index). A file with another checksum is deleted and the
#   call fails, naming both checksums.
# wheel_extract WHEEL DEST MEMBER...
#   Copies each MEMBER (a path in the wheel; a trailing '*' takes every file below that folder whose
#   name holds '.so') into DEST, flat, under its own file name.

wheel_fetch() {
  local cache="$1" project="$2" version="$3" file="$4" sha="$5" index="${6:-}"
  mkdir -p "$cache"
  if [[ ! -f "$cache/$file" ]]; then
    local dl tags tag
    dl="$(mktemp -d)"
    local extra=()
    [[ -n "$index" ]] && extra=(--extra-index-url "$index")
    # The last dash-separated part of a wheel's name is its platform tags, joined by dots.
    tags="${file%.whl}"
    IFS=. read -ra tags <<<"${tags##*-}"
    for tag in "${tags[@]}"; do extra+=(--platform "$tag"); done
    if ! python3 -m pip download --quiet --no-deps --only-binary=:all: "${extra[@]}" \
      --python-version 3.11 --implementation cp \
      -d "$dl" "${project}==${version}" >&2; then
      rm -rf "$dl"
      echo "provision.sh: could not download ${project} ${version}" >&2
      return 1
    fi
    if [[ ! -f "$dl/$file" ]]; then
      echo "provision.sh: pip fetched $(ls "$dl"), not the pinned $file" >&2
      rm -rf "$dl"
      return 1
    fi
    mv "$dl/$file" "$cache/$file"
    rm -rf "$dl"
  fi
  local actual
  actual="$(sha256sum "$cache/$file" | cut -d' ' -f1)"
  if [[ "$actual" != "$sha" ]]; then
    echo "provision.sh: checksum mismatch for $file: expected $sha, got $actual" >&2
    rm -f "$cache/$file"
    return 1
  fi
}

wheel_extract() {
  local wheel="$1" dest="$2"
  shift 2
  mkdir -p "$dest"
  python3 - "$wheel" "$dest" "$@" <<'PY'
import os, shutil, sys, zipfile
wheel, dest, *members = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    names = z.namelist()
    for member in members:
        if member.endswith("*"):
            chosen = [n for n in names if n.startswith(member[:-1]) and ".so" in os.path.basename(n)]
        else:
            chosen = [n for n in names if n == member]
        if not chosen:
            sys.exit(f"provision.sh: {os.path.basename(wheel)} holds no {member}")
        for name in chosen:
            with z.open(name) as src, open(os.path.join(dest, os.path.basename(name)), "wb") as out:
                shutil.copyfileobj(src, out)
PY
}

# wheel_licenses WHEEL DEST
#   Copies the wheel's licence texts (its dist-info licence files, a package's LICENSE and
#   ThirdPartyNotices.txt) into DEST as <distribution>-<file name>: they go with the libraries.
wheel_licenses() {
  mkdir -p "$2"
  python3 - "$1" "$2" <<'PY'
import os, sys, zipfile
wheel, dest = sys.argv[1:]
dist = os.path.basename(wheel).split("-")[0]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if (".dist-info/" in name and base.upper().startswith("LICEN")) or (
            name.count("/") == 1 and base in ("LICENSE", "ThirdPartyNotices.txt")
        ):
            with open(os.path.join(dest, f"{dist}-{base}"), "wb") as out:
                out.write(z.read(name))
PY
}
