#!/usr/bin/env bash
# mailshift-demo-seed: appends a small demo mailbox (a few folders, ~20 messages with
# flags, an attachment, non-ASCII headers) to each account of the OLD demo server, over
# IMAP with curl. Run once by the `demo-seed` service of docker/compose.yaml; an account
# whose INBOX already holds mail is left alone, so running it again changes nothing.
#
#   SEED_HOST      IMAP server (default dovecot-old), plain IMAP on SEED_PORT (143)
#   SEED_ACCOUNTS  space-separated USER:PASSWORD pairs (demo passwords only)
#   SEED_DELIM     the server's hierarchy delimiter (default ".")
set -euo pipefail

host=${SEED_HOST:-dovecot-old}
port=${SEED_PORT:-143}
delim=${SEED_DELIM:-.}
accounts=${SEED_ACCOUNTS:-alice@demo.example:alice-old-DEMO-ONLY bob@demo.example:bob-old-DEMO-ONLY}
base="imap://$host:$port"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
netrc="$work/netrc"

# curl for one account; the password is read from a netrc file, not the command line.
imap() { curl --silent --show-error --netrc-file "$netrc" --connect-timeout 10 --max-time 60 "$@"; }

# Percent-encode a mailbox name for the URL path (spaces, mostly).
url_of() { local f=${1// /%20}; printf '%s/%s' "$base" "$f"; }

# One RFC 5322 message with CRLF line endings on stdout.
#   message FROM TO SUBJECT DATE BODY [MESSAGE-ID]
message() {
  local from=$1 to=$2 subject=$3 date=$4 body=$5 id=${6:-}
  {
    printf 'From: %s\nTo: %s\nSubject: %s\nDate: %s\n' "$from" "$to" "$subject" "$date"
    if [ -n "$id" ]; then printf 'Message-ID: <%s>\n' "$id"; fi
    printf 'MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n%s\n' "$body"
  } | sed 's/$/\r/'
}

# A message with a small base64 attachment.
with_attachment() {
  local from=$1 to=$2 subject=$3 date=$4 id=$5
  {
    printf 'From: %s\nTo: %s\nSubject: %s\nDate: %s\nMessage-ID: <%s>\n' "$from" "$to" "$subject" "$date" "$id"
    printf 'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="demo-boundary"\n\n'
    printf -- '--demo-boundary\nContent-Type: text/plain; charset=utf-8\n\nThe figures are attached.\n\n'
    printf -- '--demo-boundary\nContent-Type: text/csv; name="q3.csv"\nContent-Disposition: attachment; filename="q3.csv"\nContent-Transfer-Encoding: base64\n\n'
    printf 'month,revenue\njuly,1200\naugust,1350\nseptember,1500\n' | base64
    printf -- '--demo-boundary--\n'
  } | sed 's/$/\r/'
}

append() { # append FOLDER FILE
  imap --url "$(url_of "$1")" --upload-file "$2"
}

seed_account() {
  local user=$1 n=0
  local me=$user other="carol@partner.example" d=$delim
  # Folders (special-use ones exist already: the server creates them).
  for f in "Work" "Work${d}Clients" "Archive" "Archive${d}2024"; do
    imap --url "$base/" --request "CREATE \"$f\"" >/dev/null 2>&1 || true
  done

  local i
  for i in 1 2 3 4 5; do
    message "$other" "$me" "Demo message $i" "Mon, 0$i Sep 2025 09:1$i:00 +0200" \
      "Hello, this is demo message $i for $me." "inbox-$i.$user@demo.example" >"$work/m"
    append INBOX "$work/m"; n=$((n+1))
  done
  message "$other" "$me" "=?UTF-8?Q?R=C3=A9union_=C3=A0_Z=C3=BCrich?=" "Tue, 09 Sep 2025 14:00:00 +0200" \
    "Réunion à Zürich, 10 h — café offert. 会议" "utf8.$user@demo.example" >"$work/m"
  append INBOX "$work/m"; n=$((n+1))
  # No Message-ID at all: mailshift copies these byte for byte too.
  message "alerts@monitoring.example" "$me" "Disk usage 91% on mx1" "Wed, 10 Sep 2025 03:12:45 +0000" \
    "Automated alert without a Message-ID." >"$work/m"
  append INBOX "$work/m"; n=$((n+1))

  for i in 1 2 3; do
    message "$me" "$other" "Re: Demo message $i" "Mon, 0$i Sep 2025 10:0$i:00 +0200" \
      "Thanks, noted." "sent-$i.$user@demo.example" >"$work/m"
    append "Sent Items" "$work/m"; n=$((n+1))
  done
  for i in 1 2 3; do
    message "boss@demo.example" "$me" "Project plan, part $i" "Thu, 1$i Sep 2025 08:30:00 +0200" \
      "Part $i of the plan." "work-$i.$user@demo.example" >"$work/m"
    append "Work" "$work/m"; n=$((n+1))
  done
  with_attachment "$other" "$me" "Q3 figures" "Fri, 19 Sep 2025 16:45:00 +0200" "q3.$user@demo.example" >"$work/m"
  append "Work${d}Clients" "$work/m"; n=$((n+1))
  message "$other" "$me" "Contract renewal" "Mon, 22 Sep 2025 11:00:00 +0200" \
    "Please find the renewal terms below." "renewal.$user@demo.example" >"$work/m"
  append "Work${d}Clients" "$work/m"; n=$((n+1))
  for i in 1 2 3 4; do
    message "newsletter@shop.example" "$me" "Newsletter #$i (2024)" "Sat, 0$i Mar 2024 07:00:00 +0100" \
      "Old news, kept for the archive." "news-$i.$user@demo.example" >"$work/m"
    append "Archive${d}2024" "$work/m"; n=$((n+1))
  done
  message "$me" "$other" "Draft: ideas" "Tue, 23 Sep 2025 18:00:00 +0200" "Unfinished." >"$work/m"
  append "Drafts" "$work/m"; n=$((n+1))

  # Flags, so that the migration has something to preserve besides bodies. (curl
  # appends every message as \Seen: some are made unread again.)
  imap --url "$base/INBOX" --request 'STORE 4:* -FLAGS (\Seen)' >/dev/null || true
  # shellcheck disable=SC2016 # $Forwarded is an IMAP keyword, not a variable
  imap --url "$base/INBOX" --request 'STORE 2 +FLAGS (\Flagged $Forwarded)' >/dev/null || true
  imap --url "$base/Work" --request 'STORE 1 +FLAGS (\Answered Work)' >/dev/null || true
  imap --url "$base/Work" --request 'STORE 3 -FLAGS (\Seen)' >/dev/null || true
  imap --url "$(url_of "Work${d}Clients")" --request 'STORE 2 -FLAGS (\Seen)' >/dev/null || true
  imap --url "$base/Drafts" --request 'STORE 1 +FLAGS (\Draft)' >/dev/null || true

  echo "demo-seed: $user: appended $n messages to $host"
}

for account in $accounts; do
  user=${account%%:*}
  password=${account#*:}
  printf 'machine %s login %s password %s\n' "$host" "$user" "$password" >"$netrc"
  chmod 0600 "$netrc"
  status=$(imap --url "$base/" --request 'STATUS INBOX (MESSAGES)')
  existing=$(printf '%s\n' "$status" | sed -n 's/.*(MESSAGES \([0-9]*\)).*/\1/p')
  if [ "${existing:-0}" -gt 0 ]; then
    echo "demo-seed: $user: INBOX already holds $existing messages, nothing to do"
    continue
  fi
  seed_account "$user"
done
