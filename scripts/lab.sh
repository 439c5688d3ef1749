#!/usr/bin/env bash
# Open the course in JupyterLab, in the course's venv (created on first use, see scripts/env.sh).
#
#   bash scripts/lab.sh                  # JupyterLab on notebooks/, browser opens if there is one
#   bash scripts/lab.sh --no-browser     # options are passed on to `jupyter lab`
#
# As root (containers, classroom VMs) JupyterLab refuses to start without --allow-root; we add it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/env.sh
source "$root/scripts/env.sh"
extra=()
if [ "$(id -u)" = 0 ]; then
    extra+=(--allow-root)
fi
exec "${VISLEARN_JUPYTER:-jupyter}" lab "${extra[@]}" "$root/notebooks" "$@"   # VISLEARN_JUPYTER: tests
