#!/usr/bin/env bash
# anyrun-collect.sh - ANY.RUN connector for Microsoft Sentinel: Live Response collection script
# for Linux and macOS endpoints (MDE RunScript, runs as root).
#
# Restores one detected (possibly quarantined) file into a private temporary folder, checks its
# hash, PUTs it to a blob-scoped SAS URL and prints exactly one result line as the LAST line:
#
#   ANYRUN_COLLECT_RESULT <base64url(JSON)>   JSON = {"status":..., "sha256":..., "size":..., "detail":...}
#
# status / exit code: uploaded 0, error 1, bad_args 2, not_found 3, restore_failed 4,
# hash_mismatch 5, upload_failed 6, tool_missing 7.
#
# The only argument is the opaque envelope built by shared/src/live-response/args.ts:
#   v1.<os>.<b64url(uploadUrl)>.<b64url(originalPath)>.<b64url(fileName)>.<sha256>.<sha1>.<md5>
# Nothing from it is evaluated, and neither the URL nor any part of its query is ever printed.
# Written for bash 3.2 (macOS) and later: no ${x,,}, no mapfile, no associative arrays.

# The cleanup and result functions run from the EXIT trap, which shellcheck cannot follow:
# shellcheck disable=SC2317
set -euo pipefail
umask 077
export LC_ALL=C

readonly MARKER="ANYRUN_COLLECT_RESULT"

status=""
detail=""
result_sha256=""
result_size=""
work_dir=""
exclusion_added=0

exit_code_for() {
  case "$1" in
    uploaded) echo 0 ;;
    bad_args) echo 2 ;;
    not_found) echo 3 ;;
    restore_failed) echo 4 ;;
    hash_mismatch) echo 5 ;;
    upload_failed) echo 6 ;;
    tool_missing) echo 7 ;;
    *) echo 1 ;;
  esac
}

b64url_encode() {
  base64 | tr -d '\n=' | tr '+/' '-_'
}

emit_result() {
  local json
  # detail is always one of this script's own fixed strings; keep it JSON-safe regardless.
  detail=$(printf '%s' "$detail" | tr -cd 'A-Za-z0-9 _.:-')
  json="{\"status\":\"${status}\""
  if [[ -n "$result_sha256" ]]; then json="${json},\"sha256\":\"${result_sha256}\""; fi
  if [[ -n "$result_size" ]]; then json="${json},\"size\":${result_size}"; fi
  if [[ -n "$detail" ]]; then json="${json},\"detail\":\"${detail}\""; fi
  json="${json}}"
  printf '%s %s\n' "$MARKER" "$(printf '%s' "$json" | b64url_encode)"
}

cleanup() {
  if [[ "$exclusion_added" -eq 1 ]]; then
    mdatp exclusion folder remove --path "$work_dir" >/dev/null 2>&1 || true
  fi
  if [[ -n "$work_dir" && -d "$work_dir" ]]; then
    rm -rf -- "$work_dir" || true
  fi
}

on_exit() {
  local rc
  set +e
  trap - EXIT
  cleanup
  if [[ -z "$status" ]]; then
    status="error"
    detail="unexpected failure"
    result_sha256=""
    result_size=""
  fi
  rc=$(exit_code_for "$status")
  emit_result
  exit "$rc"
}
trap on_exit EXIT
trap 'detail="interrupted"; status="error"; exit 1' INT TERM HUP

# finish STATUS DETAIL: record the outcome and leave (the EXIT trap prints the result line).
finish() {
  status="$1"
  detail="${2:-}"
  exit "$(exit_code_for "$status")"
}

step() {
  printf 'anyrun-collect: %s\n' "$1"
}

# ---------------------------------------------------------------------------------------------
# Tools

have() {
  command -v "$1" >/dev/null 2>&1
}

# file_hash ALGO FILE -> lowercase hex digest on stdout (reads the file on stdin, so no file name
# ever reaches the tool's output).
file_hash() {
  local algo="$1" file="$2" out=""
  case "$algo" in
    sha256)
      if have sha256sum; then out=$(sha256sum <"$file")
      elif have shasum; then out=$(shasum -a 256 <"$file")
      elif have openssl; then out=$(openssl dgst -sha256 <"$file"); out=${out##* }
      fi ;;
    sha1)
      if have sha1sum; then out=$(sha1sum <"$file")
      elif have shasum; then out=$(shasum -a 1 <"$file")
      elif have openssl; then out=$(openssl dgst -sha1 <"$file"); out=${out##* }
      fi ;;
    md5)
      if have md5sum; then out=$(md5sum <"$file")
      elif have md5; then out=$(md5 -q <"$file")
      elif have openssl; then out=$(openssl dgst -md5 <"$file"); out=${out##* }
      fi ;;
  esac
  out=${out%% *}
  out=$(printf '%s' "$out" | tr 'A-F' 'a-f')
  case "$algo" in
    sha256) [[ ${#out} -eq 64 ]] ;;
    sha1) [[ ${#out} -eq 40 ]] ;;
    md5) [[ ${#out} -eq 32 ]] ;;
  esac || return 1
  case "$out" in *[!0-9a-f]*) return 1 ;; esac
  printf '%s' "$out"
}

# ---------------------------------------------------------------------------------------------
# Argument envelope

b64url_decode() {
  local s="$1"
  s=$(printf '%s' "$s" | tr -- '-_' '+/')
  case $(( ${#s} % 4 )) in
    0) ;;
    2) s="${s}==" ;;
    3) s="${s}=" ;;
    *) return 1 ;;
  esac
  if printf 'QQ==' | base64 -d >/dev/null 2>&1; then
    printf '%s' "$s" | base64 -d 2>/dev/null
  else
    printf '%s' "$s" | base64 -D 2>/dev/null
  fi
}

# decode_field FIELD -> the decoded text on stdout; fails on bad base64, NUL bytes or empty text.
decode_field() {
  local field="$1" out nuls
  case "$field" in ''|*[!A-Za-z0-9_-]*) return 1 ;; esac
  nuls=$(b64url_decode "$field" | tr -cd '\000' | wc -c) || return 1
  [[ "${nuls//[[:space:]]/}" == "0" ]] || return 1
  # The trailing "x" keeps trailing newlines that command substitution would strip.
  out=$(b64url_decode "$field" && printf 'x') || return 1
  out="${out%x}"
  [[ -n "$out" ]] || return 1
  printf '%s' "$out"
}

valid_hex() { # VALUE LENGTH
  [[ -z "$1" ]] && return 0
  [[ ${#1} -eq "$2" ]] || return 1
  case "$1" in *[!0-9a-f]*) return 1 ;; esac
  return 0
}

if [[ $# -ne 1 ]]; then finish bad_args "expected exactly one argument"; fi
envelope="$1"
case "$envelope" in ''|*[!A-Za-z0-9._-]*) finish bad_args "envelope charset" ;; esac

fields=()
rest="${envelope}."
while [[ -n "$rest" ]]; do
  fields+=("${rest%%.*}")
  rest="${rest#*.}"
done
if [[ ${#fields[@]} -ne 8 ]]; then finish bad_args "envelope field count"; fi
if [[ "${fields[0]}" != "v1" ]]; then finish bad_args "envelope version"; fi
target_os="${fields[1]}"
case "$target_os" in linux|macos) ;; *) finish bad_args "envelope os" ;; esac
if ! upload_url=$(decode_field "${fields[2]}"); then finish bad_args "upload url encoding"; fi
if ! original_path=$(decode_field "${fields[3]}"); then finish bad_args "original path encoding"; fi
if ! file_name=$(decode_field "${fields[4]}"); then finish bad_args "file name encoding"; fi
expected_sha256="${fields[5]}"
expected_sha1="${fields[6]}"
expected_md5="${fields[7]}"
valid_hex "$expected_sha256" 64 || finish bad_args "sha256 format"
valid_hex "$expected_sha1" 40 || finish bad_args "sha1 format"
valid_hex "$expected_md5" 32 || finish bad_args "md5 format"

case "$upload_url" in
  https://*|http://*) ;;
  *) finish bad_args "upload url scheme" ;;
esac
# The URL goes to curl inside a quoted config line: printable ASCII only, no space, quote or backslash.
case "$upload_url" in
  *[![:print:]]*|*[[:space:]]*|*'"'*|*\\*) finish bad_args "upload url characters" ;;
esac
case "$original_path" in
  //*) finish bad_args "original path not absolute" ;;
  /*) ;;
  *) finish bad_args "original path not absolute" ;;
esac
case "/$original_path/" in
  */../*|*/./*) finish bad_args "original path has dot segments" ;;
esac
# Kernel pseudo-filesystems and the macOS network automount are not where a detected file lives.
case "$original_path" in
  /proc/*|/sys/*|/dev/*|/net/*) finish bad_args "original path is on a pseudo or network filesystem" ;;
esac
case "$file_name" in
  */*) finish bad_args "file name has a slash" ;;
esac

expected_algo=""
expected_value=""
if [[ -n "$expected_sha256" ]]; then expected_algo="sha256"; expected_value="$expected_sha256"
elif [[ -n "$expected_sha1" ]]; then expected_algo="sha1"; expected_value="$expected_sha1"
elif [[ -n "$expected_md5" ]]; then expected_algo="md5"; expected_value="$expected_md5"
fi

have curl || finish tool_missing "curl not found"
if ! probe=$(printf '' | file_hash sha256 /dev/stdin 2>/dev/null) || [[ -z "$probe" ]]; then
  finish tool_missing "no sha256 tool"
fi

# ---------------------------------------------------------------------------------------------
# Private work folder

if ! work_dir=$(mktemp -d "${TMPDIR:-/tmp}/anyrun-collect.XXXXXXXX"); then
  work_dir=""
  finish error "cannot create temp folder"
fi
chmod 700 "$work_dir"
restore_dir="${work_dir}/restore"
mkdir -m 700 "$restore_dir"
chosen="${work_dir}/upload.bin"
saw_candidate=0
saw_mismatch=0
mismatch_sha256=""
found_in_quarantine=0

# accept_candidate FILE: moves FILE to $chosen when it is a regular file and its hash matches.
accept_candidate() {
  local file="$1" actual
  [[ -f "$file" && ! -L "$file" ]] || return 1
  saw_candidate=1
  if [[ -n "$expected_algo" ]]; then
    if ! actual=$(file_hash "$expected_algo" "$file"); then finish tool_missing "no ${expected_algo} tool"; fi
    if [[ "$actual" != "$expected_value" ]]; then
      saw_mismatch=1
      mismatch_sha256=$(file_hash sha256 "$file") || mismatch_sha256=""
      return 1
    fi
  fi
  mv -f -- "$file" "$chosen"
}

# take_restored: picks the restored file out of $restore_dir (by hash when one was given, else the
# only file, else the one named like the evidence).
take_restored() {
  local f count=0 named=""
  while IFS= read -r -d '' f; do
    count=$((count + 1))
    if [[ -n "$expected_algo" ]]; then
      if accept_candidate "$f"; then return 0; fi
    elif [[ "${f##*/}" == "$file_name" ]]; then
      named="$f"
    fi
  done < <(find "$restore_dir" -type f -print0 2>/dev/null)
  [[ -z "$expected_algo" ]] || return 1
  if [[ -n "$named" ]]; then accept_candidate "$named"; return $?; fi
  if [[ "$count" -eq 1 ]]; then
    f=$(find "$restore_dir" -type f -print 2>/dev/null | head -n 1)
    accept_candidate "$f"
    return $?
  fi
  return 1
}

# threat_ids_for_path LIST-COMMAND...: ids of entries whose path is the original path. Reads the
# "Key: value" blocks of `mdatp threat list` / `mdatp threat quarantine list` as text only.
threat_ids_for_path() {
  local out line key value cur_id="" cur_path=""
  out=$(mdatp "$@" 2>/dev/null) || return 0
  while IFS= read -r line || [[ -n "$line" ]]; do
    line="${line%$'\r'}"
    if [[ -z "${line//[[:space:]]/}" ]]; then
      if [[ -n "$cur_id" && "$cur_path" == "$original_path" ]]; then printf '%s\n' "$cur_id"; fi
      cur_id=""; cur_path=""
      continue
    fi
    case "$line" in *:*) ;; *) continue ;; esac
    key="${line%%:*}"
    value="${line#*:}"
    key=$(printf '%s' "$key" | tr '[:upper:]' '[:lower:]' | sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//')
    value="${value#"${value%%[![:space:]]*}"}"
    value="${value%"${value##*[![:space:]]}"}"
    if [[ ${#value} -ge 2 && "${value:0:1}" == '"' && "${value: -1}" == '"' ]]; then
      value="${value:1:${#value}-2}"
    fi
    case "$key" in
      id|"threat id")
        if [[ -n "$cur_id" && "$cur_path" == "$original_path" ]]; then printf '%s\n' "$cur_id"; fi
        cur_path=""
        case "$value" in ''|*[!A-Za-z0-9_-]*) cur_id="" ;; *) cur_id="$value" ;; esac ;;
      path|"original path"|"file path")
        cur_path="$value" ;;
    esac
  done <<<"$out"
  if [[ -n "$cur_id" && "$cur_path" == "$original_path" ]]; then printf '%s\n' "$cur_id"; fi
  return 0
}

restore_from_quarantine() {
  local ids id seen=" "
  # Agents 101.23092.0012 and later: restore by original path.
  if mdatp threat quarantine restore threat-path --path "$original_path" --destination-path "$restore_dir" >/dev/null 2>&1; then
    found_in_quarantine=1
    step "restored by path"
    if take_restored; then return 0; fi
  fi
  # Otherwise find the threat id and restore by id (new syntax, then the pre-101.23092 one).
  ids="$(threat_ids_for_path threat quarantine list)
$(threat_ids_for_path threat list)"
  while IFS= read -r id; do
    [[ -n "$id" ]] || continue
    case "$seen" in *" $id "*) continue ;; esac
    seen="${seen}${id} "
    found_in_quarantine=1
    if mdatp threat quarantine restore threat-id --id "$id" --destination-path "$restore_dir" >/dev/null 2>&1; then
      step "restored by id"
      if take_restored; then return 0; fi
    elif mdatp threat quarantine restore --id "$id" --path "$restore_dir" >/dev/null 2>&1; then
      step "restored by id (legacy syntax)"
      if take_restored; then return 0; fi
    fi
  done <<<"$ids"
  return 1
}

# ---------------------------------------------------------------------------------------------
# Collect

collected=0
if [[ -f "$original_path" && ! -L "$original_path" ]]; then
  step "file present at its original path"
  if cp -- "$original_path" "${work_dir}/original.bin" && accept_candidate "${work_dir}/original.bin"; then
    collected=1
  fi
fi

if [[ "$collected" -eq 0 ]]; then
  if ! have mdatp; then
    if [[ "$saw_mismatch" -eq 1 ]]; then finish hash_mismatch "hash differs and mdatp not found"; fi
    finish tool_missing "mdatp not found"
  fi
  # Keep real-time protection off the restored copy while we hold it.
  if mdatp exclusion folder add --path "$work_dir" >/dev/null 2>&1; then exclusion_added=1; fi
  if restore_from_quarantine; then
    collected=1
  fi
fi

if [[ "$collected" -eq 0 ]]; then
  if [[ "$saw_mismatch" -eq 1 ]]; then
    # Report the SHA-256 of what was found, so the connector can tell a different file from a broken restore.
    result_sha256="$mismatch_sha256"
    finish hash_mismatch "${expected_algo} differs"
  fi
  if [[ "$found_in_quarantine" -eq 1 || "$saw_candidate" -eq 1 ]]; then
    finish restore_failed "restore produced no usable file"
  fi
  finish not_found "not at original path and not in quarantine"
fi

if ! result_sha256=$(file_hash sha256 "$chosen"); then result_sha256=""; finish tool_missing "no sha256 tool"; fi
size=$(wc -c <"$chosen")
result_size="${size//[[:space:]]/}"

# ---------------------------------------------------------------------------------------------
# Upload: the URL reaches curl on stdin (not on the command line, so `ps` cannot show it), and
# neither curl's error text nor the URL is printed.

step "uploading"
if http_code=$(curl -q --fail --silent --globoff --proto '=https,http' \
  --connect-timeout 30 --max-time 420 \
  --request PUT \
  --header 'x-ms-blob-type: BlockBlob' \
  --header 'x-ms-version: 2021-04-10' \
  --header 'Content-Type: application/octet-stream' \
  --header 'Expect:' \
  --upload-file "$chosen" \
  --output /dev/null --write-out '%{http_code}' \
  --config - 2>/dev/null <<EOF
url = "${upload_url}"
EOF
); then
  case "$http_code" in
    2[0-9][0-9]) finish uploaded "" ;;
    *) finish upload_failed "http ${http_code}" ;;
  esac
else
  curl_rc=$?
  http_code="${http_code:-000}"
  finish upload_failed "curl exit ${curl_rc} http ${http_code//[!0-9]/}"
fi
