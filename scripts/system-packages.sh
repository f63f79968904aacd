#!/usr/bin/env bash
# Debian packages the lab uses when they are there: the real Fashion-MNIST (the quick demo, offline),
# Chromium (PNG/SVG/PDF figure export and the browser tests) and PostgreSQL (the cluster store; the tests start a
# throwaway server of their own). Installed when running as root with apt-get;
# otherwise the command to run is printed. With LAB_REQUIRE_SYSTEM=1 (CI) a failed install is an error.
set -u
pkgs=()
[ -d /usr/share/datasets/fashion-mnist ] || pkgs+=(dataset-fashion-mnist)
command -v chromium >/dev/null 2>&1 || pkgs+=(chromium)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || pkgs+=(postgresql)
[ ${#pkgs[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian packages: ${pkgs[*]}"
  if apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null; then
    exit 0
  fi
  echo "could not install ${pkgs[*]}" >&2
else
  echo "optional packages missing: ${pkgs[*]} (install with: sudo apt-get install ${pkgs[*]})" >&2
fi
[ "${LAB_REQUIRE_SYSTEM:-0}" = 1 ] && exit 1
exit 0
