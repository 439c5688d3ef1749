#!/usr/bin/env bash
# Run the whole course (or some notebooks) and write a report: `vislearn run` in the course's venv.
#
#   bash scripts/course.sh                      # every notebook, preset auto (full on a GPU, else classroom)
#   bash scripts/course.sh 01 03 --preset smoke # two notebooks, quickly
#   bash scripts/course.sh --help               # all options
#
# The first run creates the virtual environment (see scripts/env.sh). Results go to
# runs/<date>-<time>-<preset>/ under the current folder; the last lines printed name the report.
set -euo pipefail
# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec vislearn run "$@"
