#!/usr/bin/env bash
# Runs the README's first-session block (the ```bash block after "## Using it") exactly as printed, in a
# temporary folder beside which `presets` points to this checkout's presets; fails on the first command
# that fails. Usage: bash .ci/readme_commands.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
ln -s "$root/presets" "$work/presets"
awk '/^## Using it/{seen=1} seen && /^```bash$/{on=1; next} on && /^```$/{exit} on' "$root/README.md" > "$work/commands.sh"
test -s "$work/commands.sh" || { echo "no command block after '## Using it' in README.md" >&2; exit 1; }
cd "$work"
echo "running the README's commands in $work:" >&2
bash -euo pipefail -x commands.sh
