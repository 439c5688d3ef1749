#!/usr/bin/env bash
# Check the course the way CI does: lint, stripped notebooks, unit tests, every notebook under nbval,
# the series in batch with its report and website, then JupyterLab and the website in a real browser.
#
#   bash scripts/test.sh
#
# Steps run in order and the script stops at the first failing one. The notebooks run with the
# smoke preset (seconds each on 2 CPU cores): that proves the plumbing, not the science.
set -euo pipefail
# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$VISLEARN_ROOT"

_now() { printf '%s\n' "${EPOCHREALTIME:-$(date +%s)}"; }
_elapsed() { awk -v a="$1" -v b="$(_now)" 'BEGIN { printf "%.1f", b - a }'; }

# step NAME COMMAND...: print a header, run the command, print its wall time; stop on failure.
step() {
    local name="$1" start status=0
    shift
    printf '\n==> %s\n    $ %s\n' "$name" "$*"
    start="$(_now)"
    "$@" || status=$?
    if [ "$status" -ne 0 ]; then
        printf '<== FAILED: %s (exit %s) after %s s\n' "$name" "$status" "$(_elapsed "$start")"
        exit "$status"
    fi
    printf '<== ok: %s in %s s\n' "$name" "$(_elapsed "$start")"
}

shopt -s nullglob
notebooks=(notebooks/*.ipynb)
shopt -u nullglob

step "lint (ruff: library, tests, notebooks, notes, benchmarks)" ruff check vislearn tests notebooks notes benchmarks
if [ "${#notebooks[@]}" -gt 0 ]; then
    step "notebooks are stored without outputs (nbstripout --verify)" nbstripout --verify "${notebooks[@]}"
else
    printf '\n==> no notebooks yet: skipping nbstripout --verify\n'
fi
step "unit tests (pytest)" pytest tests -q --ignore=tests/browser
if [ "${#notebooks[@]}" -gt 0 ]; then
    step "notebooks under nbval, smoke preset" \
        env VISLEARN_PRESET=smoke VISLEARN_STATIC=1 VISLEARN_SOLUTIONS=1 pytest --nbval-lax --nbval-current-env notebooks/ -q -p no:cacheprovider
    run_dir="runs/ci-smoke-$(date +%Y%m%d-%H%M%S)"
    step "the series in batch (papermill runner), smoke preset" \
        vislearn run --preset smoke --out "$run_dir" --quiet
    step "the course as a website (vislearn site: Sphinx + myst-nb, offline)" vislearn site --run "$run_dir"
    step "browser dependencies (Debian's chromium)" vislearn_ensure_chromium
    step "JupyterLab and the website in a real browser (playwright + chromium)" \
        env VISLEARN_SITE="$run_dir/site" VISLEARN_BROWSER_OUT="$run_dir/browser" pytest tests/browser -q -p no:cacheprovider
else
    printf '\n==> no notebooks yet: skipping nbval\n'
fi
printf '\nall checks passed\n'
