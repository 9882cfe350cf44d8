#!/usr/bin/env bash
# worker.sh: a pull-mode Tasker worker in bash, with curl and jq only.
#
# It offers notifications.sms to its sidecar, then long-polls ClaimSteps
# and reports each step with CompleteStep or FailStep: the Connect unary
# protocol, plain HTTP POSTs of JSON (docs/sdk.md, "Pull mode over plain
# HTTP"). It stops cleanly on SIGTERM or SIGINT: the step in hand is
# finished and reported, the open long poll is abandoned.
#
#   TASKER_ADDR   the sidecar (default http://127.0.0.1:7420)
#   TASKER_TOKEN  an ACL token, when the cluster requires one
#   WORKER_ID     this worker's id (default sms-<host>-<pid>)
set -uo pipefail

ADDR="${TASKER_ADDR:-http://127.0.0.1:7420}"
ADDR="${ADDR%/}"
WORKER_ID="${WORKER_ID:-sms-$(hostname -s 2>/dev/null || echo host)-$$}"
CAPABILITY=notifications.sms

for tool in curl jq; do
  command -v "$tool" >/dev/null || { echo "worker.sh: $tool is required" >&2; exit 2; }
done

log() { printf '%s worker.sh %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }

# call METHOD BODY: POSTs BODY to a Connect unary method and prints the
# response. Returns 0 on HTTP 200; else prints the Connect error code (such
# as not_found) on stdout, logs the message and returns 1. A connection
# failure prints "unavailable".
call() {
  local out status
  local auth=()
  [ -n "${TASKER_TOKEN:-}" ] && auth=(-H "Authorization: Bearer $TASKER_TOKEN")
  # --max-time outlives the longest long poll (wait_for 20s) by a margin.
  out=$(curl -sS --max-time 30 -w '\n%{http_code}' "${auth[@]}" \
    -H 'Content-Type: application/json' --data-binary "$2" "$ADDR/$1" 2>&1) || {
    log "$1: ${out%$'\n'*}"; echo unavailable; return 1; }
  status=${out##*$'\n'}
  out=${out%$'\n'*}
  if [ "$status" = 200 ]; then
    printf '%s\n' "$out"
    return 0
  fi
  log "$1: HTTP $status: $(jq -r '.message // empty' <<<"$out" 2>/dev/null || echo "$out")"
  jq -r '.code // "unknown"' <<<"$out" 2>/dev/null || echo unknown
  return 1
}

# register offers the capability, retrying with backoff (up to 5s) while
# the sidecar is down or restarting. Registering again with the same
# worker id replaces the registration, so it is also how the worker comes
# back after its sidecar restarted.
register() {
  local body delay=0.2
  body=$(jq -nc --arg id "$WORKER_ID" --arg cap "$CAPABILITY" '{
    worker_id: $id,
    capabilities: [{
      name: $cap, version: "1.0.0", description: "Sends a text message",
      input_schema_json: ({type: "object", required: ["to", "text"],
        properties: {to: {type: "string"}, text: {type: "string"}}} | tojson),
      output_schema_json: ({type: "object", required: ["message_id", "to", "segments"],
        properties: {message_id: {type: "string"}, to: {type: "string"}, segments: {type: "integer"}}} | tojson),
      max_concurrency: 4
    }]}')
  until call tasker.v1.WorkerService/RegisterCapabilities "$body" >/dev/null; do
    [ -n "$STOP" ] && return 1
    sleep "$delay"
    delay=$(awk -v d="$delay" 'BEGIN { d *= 2; if (d > 5) d = 5; print d }')
  done
  log "registered $CAPABILITY as $WORKER_ID at $ADDR"
}

# handle runs one assignment (a JSON object from ClaimSteps) and reports
# it. The business logic: a message to an E.164 number is sent in 160
# character segments; any other number is a permanent invalid_number.
handle() {
  local asg=$1 task step attempt key input to text body
  task=$(jq -r '.taskId' <<<"$asg")
  step=$(jq -r '.step' <<<"$asg")
  attempt=$(jq -r '.attempt' <<<"$asg")
  key=$(jq -r '.idempotencyKey' <<<"$asg")
  input=$(jq -r '.inputJson' <<<"$asg")
  to=$(jq -r '.to // empty' <<<"$input")
  text=$(jq -r '.text // empty' <<<"$input")
  if ! [[ $to =~ ^\+[0-9]{6,15}$ ]]; then
    body=$(jq -nc --arg t "$task" --arg s "$step" --argjson a "$attempt" --arg w "$WORKER_ID" --arg to "$to" \
      '{task_id: $t, step: $s, attempt: $a, worker_id: $w, code: "invalid_number",
        message: "\($to | tojson) is not an E.164 number such as +447700900123", retryable: false}')
    call tasker.v1.WorkerService/FailStep "$body" >/dev/null && log "$task/$step attempt $attempt: invalid_number"
    return
  fi
  # The message id derives from the idempotency key, stable across
  # attempts: a provider that dedupes on it sends the message once.
  local id segments
  id="sms_$(printf '%s' "$key" | cksum | cut -d' ' -f1)"
  segments=$(( (${#text} + 159) / 160 ))
  [ "$segments" -lt 1 ] && segments=1
  body=$(jq -nc --arg t "$task" --arg s "$step" --argjson a "$attempt" --arg w "$WORKER_ID" \
    --arg id "$id" --arg to "$to" --argjson n "$segments" \
    '{task_id: $t, step: $s, attempt: $a, worker_id: $w,
      result_json: ({message_id: $id, to: $to, segments: $n} | tojson)}')
  call tasker.v1.WorkerService/CompleteStep "$body" >/dev/null && log "$task/$step attempt $attempt: sent $id"
}

STOP=""
CLAIM_PID=""
# On a signal, stop after the step in hand; a long poll in flight is
# abandoned (killed) rather than waited out. A step the sidecar handed
# to that poll just before is lost with it and retried after its timeout.
stop() {
  STOP=1
  [ -n "$CLAIM_PID" ] && kill "$CLAIM_PID" 2>/dev/null
}
trap stop TERM INT

register || exit 0
claim_body=$(jq -nc --arg id "$WORKER_ID" '{worker_id: $id, max_steps: 8, wait_for: "20s"}')
tmp=$(mktemp)
trap 'rm -f "$tmp" "$tmp.err"' EXIT
while [ -z "$STOP" ]; do
  # curl runs in the background, itself rather than in a subshell, so
  # that a signal interrupts `wait` at once and stop() can kill it.
  auth=()
  [ -n "${TASKER_TOKEN:-}" ] && auth=(-H "Authorization: Bearer $TASKER_TOKEN")
  curl -sS --max-time 30 -w '\n%{http_code}' "${auth[@]}" -H 'Content-Type: application/json' \
    --data-binary "$claim_body" "$ADDR/tasker.v1.WorkerService/ClaimSteps" >"$tmp" 2>"$tmp.err" &
  CLAIM_PID=$!
  wait "$CLAIM_PID"
  rc=$?
  CLAIM_PID=""
  [ -n "$STOP" ] && break
  status=$(tail -n 1 "$tmp")
  body=$(sed '$d' "$tmp")
  if [ "$rc" -ne 0 ] || [ "$status" != 200 ]; then
    if [ "$rc" -ne 0 ]; then
      log "ClaimSteps: $(cat "$tmp.err")"
    else
      log "ClaimSteps: HTTP $status: $(jq -r '.message // empty' <<<"$body" 2>/dev/null)"
    fi
    # not_found: the sidecar forgot us (it restarted); anything else: it
    # is down or refusing. Registering again retries with backoff.
    [ "$(jq -r '.code // empty' <<<"$body" 2>/dev/null)" = not_found ] || sleep 1
    register || break
    continue
  fi
  while IFS= read -r asg; do
    [ -n "$asg" ] && handle "$asg"
  done < <(jq -c '.assignments[]?' <<<"$body")
done
log "stopped"
exit 0
