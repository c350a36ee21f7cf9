#!/bin/sh
# Installs seng as a systemd service: the system user, /etc/seng and /var/lib/seng, the
# unit (packaging/systemd/seng.service) and a sample /etc/seng/seng.yaml. Idempotent: what
# already exists is left alone (an existing config file is never overwritten; the unit is
# rewritten only if it differs). Run as root.
#
#   scripts/install-service.sh [--dry-run] [--bin PATH] [--user NAME] [--root DIR]
#
#   --dry-run   print what would be done, change nothing
#   --bin PATH  the seng executable for ExecStart (default: `command -v seng`, else
#               /usr/local/bin/seng)
#   --user NAME service user (default seng; created as a system user if missing)
#   --root DIR  install below DIR instead of / (packaging, tests); the user must exist
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
unit_src="$here/packaging/systemd/seng.service"
config_src="$here/packaging/seng.yaml.example"
dry=0
bin=""
user=seng
root=""

usage() {
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry=1 ;;
    --bin) [ $# -ge 2 ] || usage; bin=$2; shift ;;
    --user) [ $# -ge 2 ] || usage; user=$2; shift ;;
    --root) [ $# -ge 2 ] || usage; root=$2; shift ;;
    -h|--help) usage ;;
    *) echo "install-service: unknown option $1" >&2; usage ;;
  esac
  shift
done

case "$user" in
  ''|*[!a-z0-9_-]*) echo "install-service: --user must be a plain user name" >&2; exit 2 ;;
esac
if [ -z "$bin" ]; then
  bin=$(command -v seng 2>/dev/null || echo /usr/local/bin/seng)
fi
case "$bin" in
  /*) ;;
  *) echo "install-service: --bin must be an absolute path" >&2; exit 2 ;;
esac

run() {
  echo "+ $*"
  if [ "$dry" -eq 0 ]; then "$@"; fi
}

if [ "$dry" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
  echo "install-service: run as root (or with --dry-run)" >&2
  exit 1
fi

# 1. The service user: a system account without login whose home is the state directory.
if id "$user" >/dev/null 2>&1; then
  echo "= user $user exists"
elif [ -n "$root" ]; then
  echo "install-service: user $user does not exist (--root does not create users)" >&2
  exit 1
else
  run useradd --system --user-group --home-dir /var/lib/seng --no-create-home \
    --shell /usr/sbin/nologin --comment "seng gateway" "$user"
fi
group=$(id -gn "$user" 2>/dev/null || echo "$user")

# 2. Directories: config readable by the service (root-owned, not writable by it); state
#    owned by it. /run/seng is made by systemd (RuntimeDirectory=) at every start.
ensure_dir() { # path owner group mode
  if [ -d "$1" ]; then
    echo "= $1 exists"
  else
    run install -d -o "$2" -g "$3" -m "$4" "$1"
  fi
}
ensure_dir "$root/etc/seng" root "$group" 0750
ensure_dir "$root/var/lib/seng" "$user" "$group" 0750
ensure_dir "$root/etc/systemd/system" root root 0755

# 3. The unit, with this installation's binary and user.
unit_dst="$root/etc/systemd/system/seng.service"
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
sed -e "s|^ExecStart=/usr/local/bin/seng |ExecStart=$bin |" \
  -e "s|^User=seng\$|User=$user|" -e "s|^Group=seng\$|Group=$group|" "$unit_src" >"$tmp"
if [ -f "$unit_dst" ] && cmp -s "$tmp" "$unit_dst"; then
  echo "= $unit_dst is up to date"
  changed=0
else
  run install -o root -g root -m 0644 "$tmp" "$unit_dst"
  changed=1
fi

# 4. A sample configuration, never over an existing one.
if [ -e "$root/etc/seng/seng.yaml" ]; then
  echo "= $root/etc/seng/seng.yaml exists (left as it is)"
else
  run install -o root -g "$group" -m 0640 "$config_src" "$root/etc/seng/seng.yaml"
fi

# 5. Tell systemd (only on a host booted with it, and only for the real root).
if [ "$changed" -eq 1 ] && [ -z "$root" ] && [ -d /run/systemd/system ]; then
  run systemctl daemon-reload
fi
echo "next: edit /etc/seng/seng.yaml, check it with \`seng config check /etc/seng/seng.yaml\`, then: systemctl enable --now seng"
