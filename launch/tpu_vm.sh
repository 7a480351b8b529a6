#!/usr/bin/env bash
# Drives a Cloud TPU VM slice with gcloud; `setup`, `run` and `stop` act on all
# workers (hosts) of the slice at once.
#
# Usage: launch/tpu_vm.sh [OPTIONS] COMMAND NAME [-- ARGS...]
#
# Commands:
#   create NAME --type=TYPE [--version=V] [--spot]
#       Create the slice, e.g. --type=v5litepod-16. The software version
#       defaults to the one Cloud TPU recommends for JAX on that TPU type.
#   setup NAME [--repo=URL [--ref=REF]]
#       Copy this checkout (tracked and untracked, not ignored files) into
#       ~/DIR on every worker, or with --repo clone URL there and check out
#       REF (default origin/HEAD; or e.g. origin/main, a tag, a commit); then
#       make a Python 3.11 virtualenv ~/DIR/.venv with uv and
#       `pip install -e . "jax[tpu]"` in it.
#   run NAME [--fg] -- MAIN_ARGS...
#       `python -m icl_iwl.main --multihost MAIN_ARGS` on every worker, from
#       ~/DIR, in the background with its output in ~/DIR/logs/DATE.log
#       (~/DIR/logs/latest.log links to it); --fg runs it in the foreground
#       (the output of all workers is streamed here, and tee'd to the log).
#   logs NAME [--worker=N]
#       Follow ~/DIR/logs/latest.log of worker N (default 0).
#   stop NAME
#       SIGTERM the running job on every worker: it checkpoints and exits.
#   ssh NAME [--worker=N] [-- COMMAND...]
#       An interactive shell on worker N (default 0), or COMMAND on worker N
#       (default: all workers).
#   delete NAME
#       Delete the slice (gcloud asks for confirmation).
#
# Options:
#   --zone=ZONE      Zone of the slice (default $TPU_ZONE, else gcloud's
#                    compute/zone property).
#   --project=ID     Project (default $TPU_PROJECT, else gcloud's project).
#   --dir=DIR        The repository on the workers, relative to the home
#                    directory (default icl_iwl).
#   --dry-run        Print the gcloud commands instead of running them.
#   -h, --help       Print this help.
#
# Example (a v5e slice of 16 chips, on several hosts):
#   launch/tpu_vm.sh create my-tpu --zone=us-west4-a --type=v5litepod-16
#   launch/tpu_vm.sh setup my-tpu --zone=us-west4-a
#   launch/tpu_vm.sh run my-tpu --zone=us-west4-a -- \
#       --config=configs/finetune.py:reversals --workdir=/mnt/shared/ft
#   launch/tpu_vm.sh logs my-tpu --zone=us-west4-a
#   launch/tpu_vm.sh delete my-tpu --zone=us-west4-a
# See docs/launch.md for the whole walk-through.

set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO_ROOT

usage() {
  sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

die() {
  echo "tpu_vm.sh: $*" >&2
  echo "Pass --help for usage." >&2
  exit 2
}

# One word quoted for a POSIX shell, exactly as Python's shlex.quote does.
quote() {
  if [[ $1 =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\"\'\"\'}"
  fi
}

# The words quoted and joined by spaces, like Python's shlex.join.
join() {
  local words=() word
  for word in "$@"; do
    words+=("$(quote "${word}")")
  done
  printf '%s' "${words[*]}"
}

# Runs `gcloud compute tpus tpu-vm ARGS`, or prints it with --dry-run.
tpu_vm() {
  local cmd=(gcloud compute tpus tpu-vm "$@")
  [[ -n ${zone} ]] && cmd+=("--zone=${zone}")
  [[ -n ${project} ]] && cmd+=("--project=${project}")
  if ((dry_run)); then
    join "${cmd[@]}"
    echo
  else
    "${cmd[@]}"
  fi
}

# The software version Cloud TPU recommends for JAX on an accelerator type.
default_version() {
  case "$1" in
    v6e-*) echo v2-alpha-tpuv6e ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
    v2-* | v3-* | v4-*) echo tpu-ubuntu2204-base ;;
    *) die "no default --version for --type=$1; pass --version." ;;
  esac
}

# The checkout's files as a tarball (deleted but tracked files left out).
pack() {
  local file
  git -C "${REPO_ROOT}" ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' file; do
      if [[ -e ${REPO_ROOT}/${file} ]]; then
        printf '%s\0' "${file}"
      fi
    done | tar -C "${REPO_ROOT}" --null -T - -czf "$1"
}

cmd_create() {
  [[ -n ${type} ]] || die "create needs --type, e.g. --type=v5litepod-16."
  local v
  v="${version:-$(default_version "${type}")}"  # set -e exits here if that fails.
  local flags=("--accelerator-type=${type}" "--version=${v}")
  ((spot)) && flags+=(--spot)
  tpu_vm create "${name}" "${flags[@]}"
}

cmd_setup() {
  local fetch
  if [[ -n ${repo} ]]; then
    fetch="if [ ! -d $(quote "${dir}")/.git ]; then git clone $(quote "${repo}") $(quote "${dir}"); fi"
    fetch+="; git -C $(quote "${dir}") fetch --quiet origin"
    fetch+="; git -C $(quote "${dir}") checkout --quiet --detach $(quote "${ref:-origin/HEAD}")"
  else
    [[ -z ${ref} ]] || die "--ref needs --repo."
    tarball="${TMPDIR:-/tmp}/icl_iwl_${name}.tar.gz"  # Global: the trap reads it.
    if ((dry_run)); then
      echo "# (the checkout packed into ${tarball})"
    else
      trap 'rm -f "${tarball}"' EXIT
      pack "${tarball}"
    fi
    tpu_vm scp "${tarball}" "${name}:icl_iwl.tar.gz" --worker=all
    fetch="mkdir -p $(quote "${dir}"); tar -xzf icl_iwl.tar.gz -C $(quote "${dir}"); rm icl_iwl.tar.gz"
  fi
  local install="python3 -m pip install --user --quiet uv; export PATH=\"\$HOME/.local/bin:\$PATH\""
  install+='; [ -x .venv/bin/python ] || uv venv --python 3.11 .venv'
  install+='; uv pip install --python .venv/bin/python -e . "jax[tpu]"'
  tpu_vm ssh "${name}" --worker=all \
    "--command=set -e; ${fetch}; cd $(quote "${dir}"); ${install}"
}

cmd_run() {
  ((${#rest[@]})) || die "run needs the arguments of icl_iwl.main after --."
  local log job
  log="cd $(quote "${dir}"); mkdir -p logs; log=logs/\$(date +%Y%m%d-%H%M%S).log"
  log+="; ln -sfn \"\${log#logs/}\" logs/latest.log"
  job=".venv/bin/python -m icl_iwl.main --multihost $(join "${rest[@]}")"
  if ((fg)); then
    tpu_vm ssh "${name}" --worker=all "--command=set -eo pipefail; ${log}; ${job} 2>&1 | tee \"\$log\""
  else
    tpu_vm ssh "${name}" --worker=all "--command=set -e; ${log}; nohup ${job} >\"\$log\" 2>&1 </dev/null & echo \"\$(hostname): \$PWD/\$log\""
  fi
}

cmd_logs() {
  tpu_vm ssh "${name}" "--worker=${worker:-0}" \
    "--command=tail -n 100 -F $(quote "${dir}")/logs/latest.log"
}

cmd_stop() {
  # [i] keeps pkill from matching the shell that runs this very command.
  tpu_vm ssh "${name}" --worker=all "--command=pkill -TERM -f '[i]cl_iwl.main' || true"
}

cmd_ssh() {
  if ((${#rest[@]})); then
    tpu_vm ssh "${name}" "--worker=${worker:-all}" "--command=${rest[*]}"
  else
    tpu_vm ssh "${name}" "--worker=${worker:-0}"
  fi
}

cmd_delete() {
  tpu_vm delete "${name}"
}

main() {
  zone="${TPU_ZONE:-}" project="${TPU_PROJECT:-}" dir=icl_iwl dry_run=0
  type='' version='' spot=0 repo='' ref='' fg=0 worker=''
  local words=()
  rest=()
  while (($#)); do
    case "$1" in
      -h | --help) usage; exit 0 ;;
      --dry-run) dry_run=1 ;;
      --spot) spot=1 ;;
      --fg) fg=1 ;;
      --zone=* | --project=* | --dir=* | --type=* | --version=* | --repo=* | --ref=* | --worker=*)
        local key="${1%%=*}"
        printf -v "${key#--}" '%s' "${1#*=}"
        ;;
      --zone | --project | --dir | --type | --version | --repo | --ref | --worker)
        (($# > 1)) || die "$1 needs a value."
        printf -v "${1#--}" '%s' "$2"
        shift
        ;;
      --) shift; rest=("$@"); break ;;
      -*) die "unknown option $1." ;;
      *) words+=("$1") ;;
    esac
    shift
  done
  ((${#words[@]} == 2)) || die "expected COMMAND NAME, got: ${words[*]:-nothing}."
  local command="${words[0]}"
  name="${words[1]}"
  case "${command}" in
    create | setup | run | logs | stop | ssh | delete) "cmd_${command}" ;;
    *) die "unknown command ${command}." ;;
  esac
}

main "$@"
