#!/usr/bin/env bash
# client.sh: runs one sms-notify task with curl and jq, and prints the
# step's result.
#
#   client.sh TO TEXT [IDEMPOTENCY_KEY]
#
# It applies sms.yaml (a no-op when that version is already stored),
# starts a task (the idempotency key, default "sms-" plus the current
# time, makes a second run with the same key return the same task) and
# polls GetTask until the task ends. Exit status: 0 when it completed, 1
# when it ended otherwise, 2 on bad usage or a refused call.
#
#   TASKER_ADDR   the sidecar (default http://127.0.0.1:7420)
#   TASKER_TOKEN  an ACL token, when the cluster requires one
#   TASKER_WAIT   seconds to wait for the task to end (default 60)
set -euo pipefail

ADDR="${TASKER_ADDR:-http://127.0.0.1:7420}"
ADDR="${ADDR%/}"
WAIT="${TASKER_WAIT:-60}"
HERE="$(cd "$(dirname "$0")" && pwd)"

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
  echo "usage: client.sh TO TEXT [IDEMPOTENCY_KEY]" >&2
  exit 2
fi
[[ $WAIT =~ ^[0-9]+$ ]] || { echo "client.sh: TASKER_WAIT: want whole seconds, got \"$WAIT\"" >&2; exit 2; }
KEY="${3:-sms-$(date +%s%N)}"

# call METHOD BODY: a Connect unary call; prints the response, or the
# error's message on stderr and exits 2.
call() {
  local out status
  local auth=()
  [ -n "${TASKER_TOKEN:-}" ] && auth=(-H "Authorization: Bearer $TASKER_TOKEN")
  out=$(curl -sS --max-time 15 -w '\n%{http_code}' "${auth[@]}" \
    -H 'Content-Type: application/json' --data-binary "$2" "$ADDR/$1") || {
    echo "client.sh: $1: no answer from the sidecar at $ADDR (TASKER_ADDR)" >&2; exit 2; }
  status=${out##*$'\n'}
  out=${out%$'\n'*}
  if [ "$status" != 200 ]; then
    echo "client.sh: $1: HTTP $status: $(jq -r '"\(.code): \(.message)"' <<<"$out" 2>/dev/null || echo "$out")" >&2
    exit 2
  fi
  printf '%s\n' "$out"
}

call tasker.v1.WorkflowService/ApplyWorkflow "$(jq -Rsc '{manifest: .}' "$HERE/sms.yaml")" >/dev/null
input=$(jq -nc --arg to "$1" --arg text "$2" '{to: $to, text: $text}')
task=$(call tasker.v1.WorkflowService/StartTask "$(jq -nc --arg in "$input" --arg key "$KEY" \
  '{workflow: "sms-notify", input_json: $in, idempotency_key: $key}')" | jq -r .task.id)
echo "task $task (idempotency key $KEY)" >&2

deadline=$(( $(date +%s) + WAIT ))
while :; do
  got=$(call tasker.v1.WorkflowService/GetTask "$(jq -nc --arg id "$task" '{id: $id}')")
  state=$(jq -r .task.state <<<"$got")
  case "$state" in
    TASK_STATE_COMPLETE|TASK_STATE_RESOLVED_MANUALLY)
      # The result of the workflow's only step; result_json is JSON text.
      jq -c '.task.steps[] | select(.name == "send") | .resultJson | fromjson' <<<"$got"
      exit 0 ;;
    TASK_STATE_ERROR|TASK_STATE_CANCELLED)
      echo "client.sh: task $task ended in $state:" >&2
      jq -c '.task.steps[] | select(.lastError) | {step: .name, error: .lastError}' <<<"$got" >&2
      exit 1 ;;
  esac
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "client.sh: task $task still $state after ${WAIT}s; is a worker running (worker.sh)?" >&2
    exit 1
  fi
  sleep 0.2
done
