# shellcheck shell=bash
# Sourced by scripts/course.sh and scripts/test.sh (or by you: `source scripts/env.sh`).
#
# Makes sure the course's virtual environment exists and is up to date, then puts it first on PATH:
#   1. creates ${VISLEARN_VENV:-$HOME/.cache/vislearn/venv} with `python3 -m venv` (installing
#      Debian's python3-venv first when it is missing and we may use apt without a password);
#   2. installs the course: `pip install -e ".[dev]"`, skipped when the venv's stamp file already
#      holds the sha256 of pyproject.toml (then only the fast `pip install -e . --no-deps`, which
#      also points the venv at this checkout);
#   3. installs Fashion-MNIST from Debian's dataset-fashion-mnist package when possible;
#      otherwise the course downloads it on first use.
# It never prompts (CI has no stdin) and works under `set -euo pipefail`. Settings:
#   VISLEARN_VENV    where the virtual environment lives
#   VISLEARN_PYTHON  the Python that creates it (default: python3; 3.10 or newer)
#   VISLEARN_NO_APT  set to 1 to never call apt-get

VISLEARN_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VISLEARN_VENV="${VISLEARN_VENV:-${HOME:-/root}/.cache/vislearn/venv}"
export VISLEARN_ROOT VISLEARN_VENV

_vislearn_say() { printf '[env] %s\n' "$*" >&2; }

# Run a command as root: directly when we are root, else through `sudo -n` (never asks for a
# password). Fails when neither is possible or apt is not wanted.
_vislearn_as_root() {
    if [ "${VISLEARN_NO_APT:-0}" = 1 ]; then return 1; fi
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        return 1
    fi
}

_vislearn_can_apt() {
    command -v apt-get >/dev/null 2>&1 && [ "${VISLEARN_NO_APT:-0}" != 1 ] \
        && { [ "$(id -u)" = 0 ] || { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }; }
}

# apt-get install that never prompts; runs `apt-get update` and retries once when it fails
# (a fresh container often has no package lists yet).
_vislearn_apt_install() {
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -y -q)
    _vislearn_as_root "${apt[@]}" install --no-install-recommends "$@" && return 0
    _vislearn_say "apt-get install $* failed; running apt-get update and trying again"
    _vislearn_as_root "${apt[@]}" update && _vislearn_as_root "${apt[@]}" install --no-install-recommends "$@"
}

_vislearn_sha256() {
    "$1" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$2"
}

_vislearn_make_venv() {
    local python="${VISLEARN_PYTHON:-python3}" venv="$VISLEARN_VENV"
    if ! command -v "$python" >/dev/null 2>&1; then
        _vislearn_say "error: $python not found; install Python 3.10 or newer (Debian/Ubuntu: apt-get install python3)"
        return 1
    fi
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
        _vislearn_say "error: vislearn needs Python 3.10 or newer; $python is $("$python" -V 2>&1)"
        return 1
    fi
    if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import pip' >/dev/null 2>&1; then
        return 0
    fi
    if [ -e "$venv" ] && [ ! -f "$venv/pyvenv.cfg" ]; then
        _vislearn_say "error: $venv exists but is not a virtual environment; set VISLEARN_VENV elsewhere"
        return 1
    fi
    [ -e "$venv" ] && { _vislearn_say "rebuilding broken virtual environment $venv"; rm -rf "$venv"; }
    _vislearn_say "creating virtual environment $venv"
    mkdir -p "$(dirname "$venv")" || return 1
    if "$python" -m venv "$venv"; then return 0; fi
    rm -rf "$venv"
    # Debian and Ubuntu ship venv's pip bootstrap (ensurepip) in a separate package.
    if _vislearn_can_apt; then
        local version
        version="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
        _vislearn_say "installing python3-venv with apt-get"
        _vislearn_apt_install python3-venv || _vislearn_apt_install "python${version}-venv" || return 1
        "$python" -m venv "$venv" && return 0
    fi
    _vislearn_say "error: cannot create a virtual environment; on Debian/Ubuntu: sudo apt-get install python3-venv"
    return 1
}

# True when `import vislearn` in the venv would load this checkout. Finds the package without
# importing it (that would import torch); -I: ignore the current folder.
_vislearn_linked() {
    "$1" -I -c 'import importlib.util, pathlib, sys
spec = importlib.util.find_spec("vislearn")
places = [pathlib.Path(p).resolve() for p in (spec.submodule_search_locations or [])] if spec else []
sys.exit(pathlib.Path(sys.argv[1]).resolve() / "vislearn" not in places)' "$VISLEARN_ROOT" >/dev/null 2>&1
}

_vislearn_install() {
    local py="$VISLEARN_VENV/bin/python" stamp="$VISLEARN_VENV/.vislearn-pyproject.sha256" want have=""
    want="$(_vislearn_sha256 "$py" "$VISLEARN_ROOT/pyproject.toml")" || return 1
    [ -f "$stamp" ] && have="$(cat "$stamp")"
    if [ "$want" = "$have" ]; then
        # Dependencies unchanged. Relink only when the venv points at another checkout (seconds).
        _vislearn_linked "$py" && return 0
        _vislearn_say "linking $VISLEARN_ROOT into $VISLEARN_VENV"
        "$py" -m pip install -q -e "$VISLEARN_ROOT" --no-deps || return 1
        return 0
    fi
    _vislearn_say "installing vislearn and its dependencies into $VISLEARN_VENV (first time: several minutes)"
    rm -f "$stamp"
    # shellcheck disable=SC2086  # the progress option is one word or nothing
    "$py" -m pip install -q ${CI:+--progress-bar off} -e "$VISLEARN_ROOT[dev]" || return 1
    printf '%s\n' "$want" >"$stamp"
}

_vislearn_data() {
    local dataset=/usr/share/datasets/fashion-mnist
    if [ -d "$dataset" ] || [ -n "${VISLEARN_DATA:-}" ]; then return 0; fi
    if _vislearn_can_apt; then
        _vislearn_say "installing Fashion-MNIST (Debian package dataset-fashion-mnist)"
        _vislearn_apt_install dataset-fashion-mnist && return 0
        _vislearn_say "could not install dataset-fashion-mnist; Fashion-MNIST will be downloaded on first use"
    else
        _vislearn_say "Fashion-MNIST will be downloaded on first use (or: sudo apt-get install dataset-fashion-mnist)"
    fi
    return 0
}

# Debian's chromium, for the real-browser tests (tests/browser/): installed with apt when missing and
# we may use apt without a password. Never downloads a browser build of its own.
vislearn_ensure_chromium() {
    local have
    for have in "${VISLEARN_CHROMIUM:-}" /usr/bin/chromium /usr/bin/chromium-browser; do
        [ -n "$have" ] && [ -x "$have" ] && return 0
    done
    if _vislearn_can_apt; then
        _vislearn_say "installing chromium (Debian package) for the browser tests"
        _vislearn_apt_install chromium && return 0
    fi
    _vislearn_say "chromium is not installed and apt is not available: the browser tests will skip"
    return 0
}

_vislearn_env() {
    _vislearn_make_venv || return 1
    _vislearn_install || return 1
    _vislearn_data || return 1
    case "${PATH:-}:" in
        "$VISLEARN_VENV/bin:"*) ;;  # already first
        *) PATH="$VISLEARN_VENV/bin${PATH:+:$PATH}" ;;
    esac
    VIRTUAL_ENV="$VISLEARN_VENV"
    export PATH VIRTUAL_ENV
}

if ! _vislearn_env; then
    _vislearn_say "error: setting up the course environment failed (see above)"
    return 1 2>/dev/null || exit 1  # `return` when sourced, `exit` when run as a script
fi
