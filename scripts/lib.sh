# Shared by scripts/up and scripts/test: install what is missing on a fresh Debian/Ubuntu
# machine (as root, or with sudo), never assuming anything was installed by hand.

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  [ $# -gt 0 ] || return 0
  echo "==> installing system packages: $*"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_runtime_tools() {
  local pkgs=()
  command -v git >/dev/null || pkgs+=(git)
  command -v tmux >/dev/null || pkgs+=(tmux)
  command -v setsid >/dev/null || pkgs+=(util-linux)
  apt_install "${pkgs[@]}"
}

ensure_rust() {
  if ! command -v cargo >/dev/null; then
    echo "cargo is required (https://rustup.rs)" >&2
    exit 1
  fi
}
