#!/usr/bin/env bash
# Installs LLVM 22 from Debian's apt (about 234 MB, 30 s) for `--features llvm`,
# and prints the variable the build needs: source it, or export it yourself.
#   bash scripts/install-llvm.sh && export LLVM_SYS_221_PREFIX=/usr/lib/llvm-22
set -euo pipefail
if [ ! -x /usr/lib/llvm-22/bin/llvm-config ]; then
  sudo_if_needed=""
  [ "$(id -u)" -ne 0 ] && sudo_if_needed="sudo"
  $sudo_if_needed apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_if_needed apt-get install -y -qq --no-install-recommends \
    llvm-22-dev libpolly-22-dev zlib1g-dev libzstd-dev >/dev/null
fi
/usr/lib/llvm-22/bin/llvm-config --version
echo "export LLVM_SYS_221_PREFIX=/usr/lib/llvm-22"
