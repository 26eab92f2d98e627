#!/usr/bin/env bash
# One more segment of the continued recipe (`make train-continue`), run from a frozen copy of
# the committed code: a git worktree of HEAD under runs/code/<commit>, first on PYTHONPATH. A
# segment runs for hours in the background while the working tree is edited; a module the
# trainer imports late (the segmenter, at its first validation) must not be newer than the
# ones it imported at the start. The card's git_commit is then exactly the code that trained.
# DYCO_CODE_ROOT puts the copies elsewhere; DRY_RUN=1 prints where the packages import from and
# the training command, and trains nothing (tests/test_train_continue.py).
set -eo pipefail
cd "$(dirname "$0")/.."
source scripts/activate.sh  # before `set -u`: colcon's setup.bash reads unset variables
set -u
commit=$(git rev-parse HEAD)
code="${DYCO_CODE_ROOT:-$PWD/runs/code}/$commit"
git worktree prune  # worktrees of runs/ removed by hand
[ -d "$code" ] || git worktree add --detach "$code" "$commit" >/dev/null
export PYTHONPATH="$code/training:$code/dyco_perception:${PYTHONPATH:-}"
n=$(python -m dyco_training.ledger next)
out=runs/continue/segment_$n
resume=()
[ -f "$out/state.pt" ] && resume=(--resume "$out/state.pt")
train=(python -m dyco_training.cli_train --config config/train/continue.yaml --out "$out"
	--seed "$n" "${resume[@]}")
if [ "${DRY_RUN:-0}" = 1 ]; then
	python -c 'import dyco_perception, dyco_training; print(dyco_perception.__file__)
print(dyco_training.__file__)'
	echo "${train[*]}"
	exit 0
fi
"${train[@]}"
python -m dyco_training.ledger add --run "$out"
