#!/usr/bin/env bash
# Prints the tag `make image` gives the jobsched image, derived from the source so that every
# different tree gets a different tag (and a rebuilt image rolls the pods on `helm upgrade`,
# which a fixed tag such as `dev` with imagePullPolicy IfNotPresent never does):
#
#   git-<12-hex commit>                       clean work tree
#   git-<12-hex commit>-dirty-<12-hex hash>   uncommitted changes; the hash covers the diff
#                                             against HEAD and the untracked (not ignored) files
#   src-<12-hex hash>                         no git: a hash of the files of the build context
#
# The result is a valid image tag and Kubernetes label value (at most 45 characters).
set -euo pipefail
cd "$(dirname "$0")/../.."
# Read-only: `git status` must not refresh the index (nor take its lock) under a concurrent git.
export GIT_OPTIONAL_LOCKS=0

hash12() { sha256sum | cut -c1-12; }

if git rev-parse --verify -q HEAD >/dev/null 2>&1; then
  commit=$(git rev-parse --short=12 HEAD)
  if [ -z "$(git status --porcelain --untracked-files=normal 2>/dev/null)" ]; then
    echo "git-${commit}"
  else
    dirty=$(
      {
        git diff HEAD --binary
        git ls-files --others --exclude-standard -z | sort -z | xargs -0 -r sha256sum --
      } | hash12
    )
    echo "git-${commit}-dirty-${dirty}"
  fi
else
  src=$(
    find . -type f \
      -not -path './target/*' -not -path './.git/*' -not -path './.venv*' \
      -not -path './data/out/*' -not -name '*.db' -not -name '*.db-*' -print0 |
      sort -z | xargs -0 -r sha256sum -- | hash12
  )
  echo "src-${src}"
fi
