# Sourced by tools/ensure-tools.sh (and its test, xtask/tests/tools_heartbeat.rs).
#
# run_with_heartbeat LABEL COMMAND [ARGS...]: runs COMMAND in the background and, while it runs,
# prints "[tools] LABEL: still building (2m30s)" on stderr every $HEARTBEAT_SECONDS seconds
# (default 30), so no stretch of a cold build is silent for longer than that. Returns COMMAND's
# exit status.

HEARTBEAT_SECONDS=${HEARTBEAT_SECONDS:-30}

# 150 -> 2m30s, 42 -> 42s.
format_duration() {
  local s=$1
  if [ "$s" -ge 60 ]; then printf '%dm%02ds' $((s / 60)) $((s % 60)); else printf '%ds' "$s"; fi
}

run_with_heartbeat() {
  local label=$1; shift
  local start=$SECONDS last=$SECONDS pid status
  "$@" &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if [ $((SECONDS - last)) -ge "$HEARTBEAT_SECONDS" ] && kill -0 "$pid" 2>/dev/null; then
      printf '[tools] %s: still building (%s)\n' "$label" "$(format_duration $((SECONDS - start)))" >&2
      last=$SECONDS
    fi
  done
  status=0
  wait "$pid" || status=$?
  return "$status"
}
