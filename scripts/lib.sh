# Sourced by the test scripts: what they share.

# built_product TAG PRODUCT [PATH]: PATH made absolute, or the product in `swift build`'s bin path;
# exits naming how to build it when it is not an executable there (the scripts do not build).
built_product() {
  local tag=$1 product=$2 path=${3:-}
  if [ -z "$path" ]; then
    command -v swift >/dev/null 2>&1 || export PATH=/opt/swift/usr/bin:$PATH
    path="$(swift build --show-bin-path)/$product"
  fi
  case $path in /*) ;; *) path=$PWD/$path ;; esac
  if [ ! -x "$path" ]; then
    echo "[$tag] no $product at $path: build it (swift build --product $product) or pass its path" >&2
    exit 1
  fi
  printf '%s\n' "$path"
}
