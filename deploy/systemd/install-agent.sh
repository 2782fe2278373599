#!/bin/sh
# Installs the fedssl site agent as a systemd service on a bare-metal server.
#
#   sudo ./install-agent.sh --bundle fedssl-agent-bundle.tar.gz --data /srv/us-images \
#        --coordinator https://coordinator.example.org --token fse_...
#
# --bundle: a tarball of a built checkout with node_modules (docs/offline-install.md), or
#           --source DIR for an already unpacked one. Node.js >= 20.19 must be installed.
# --data:   the image folder (read-only for the agent); --token/--coordinator: enroll now
#           (leave out to enroll later as the fedssl user).
# Creates: user fedssl (no login), /opt/fedssl (code), /var/lib/fedssl-agent (home, 0700;
# keys 0600), /etc/fedssl/agent.env, and the fedssl-agent unit. Idempotent.
set -eu

PREFIX=/opt/fedssl
HOME_DIR=/var/lib/fedssl-agent
UNIT_DIR=/etc/systemd/system
BUNDLE=''
SOURCE=''
DATA=''
COORDINATOR=''
TOKEN=''
NODE=${NODE:-/usr/bin/node}
SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd)

die() { echo "install-agent: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --bundle) BUNDLE=$2; shift 2 ;;
    --source) SOURCE=$2; shift 2 ;;
    --data) DATA=$2; shift 2 ;;
    --coordinator) COORDINATOR=$2; shift 2 ;;
    --token) TOKEN=$2; shift 2 ;;
    --prefix) PREFIX=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

[ "$(id -u)" -eq 0 ] || die "run as root (it creates a user and a systemd unit)"
[ -n "$DATA" ] || die "--data DIR is required"
[ -d "$DATA" ] || die "--data $DATA is not a directory"
[ -x "$NODE" ] || die "Node.js not found at $NODE (set NODE=/path/to/node)"
"$NODE" -e 'const [a,b]=process.versions.node.split(".").map(Number);process.exit(a>20||(a===20&&b>=19)?0:1)' \
  || die "Node.js >= 20.19 is required, found $("$NODE" --version)"

# 1. A system user of its own, no shell, no login.
if ! id fedssl >/dev/null 2>&1; then
  useradd --system --user-group --home-dir "$HOME_DIR" --no-create-home --shell /usr/sbin/nologin fedssl
fi

# 2. Code under $PREFIX, owned by root (the agent cannot modify itself).
mkdir -p "$PREFIX"
if [ -n "$BUNDLE" ]; then
  tar -xzf "$BUNDLE" -C "$PREFIX" --no-same-owner
elif [ -n "$SOURCE" ]; then
  cp -R "$SOURCE"/. "$PREFIX"/
else
  die "--bundle FILE or --source DIR is required"
fi
[ -f "$PREFIX/site-agent/dist/cli/agent-cli.js" ] || die "$PREFIX/site-agent/dist/cli/agent-cli.js missing: is the bundle built?"
chown -R root:root "$PREFIX"
chmod -R go-w "$PREFIX"

# 3. Home: only the agent reads it (keys are written 0600 by `fedssl-agent init`).
install -d -o fedssl -g fedssl -m 0700 "$HOME_DIR"
install -d -o root -g root -m 0755 /etc/fedssl
[ -f /etc/fedssl/agent.env ] || install -o root -g fedssl -m 0640 /dev/null /etc/fedssl/agent.env

agent() { runuser -u fedssl -- "$NODE" "$PREFIX/site-agent/dist/cli/agent-cli.js" "$@"; }

if [ ! -f "$HOME_DIR/config.json" ]; then
  agent init --home "$HOME_DIR" --data "$DATA"
fi
if [ -n "$TOKEN" ]; then
  [ -n "$COORDINATOR" ] || die "--token needs --coordinator URL"
  agent enroll --home "$HOME_DIR" --coordinator "$COORDINATOR" --token "$TOKEN"
fi
# Keys and secrets: owner-only, whatever the umask was.
find "$HOME_DIR" -maxdepth 1 -type f \( -name '*key*' -o -name '*secret*' -o -name 'config.json' \) -exec chmod 0600 {} +

# 4. The unit (with the chosen prefix and node).
sed -e "s#/opt/fedssl#$PREFIX#g" -e "s#/usr/bin/node#$NODE#g" "$SCRIPT_DIR/fedssl-agent.service" > "$UNIT_DIR/fedssl-agent.service"
chmod 0644 "$UNIT_DIR/fedssl-agent.service"
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable fedssl-agent.service
  if grep -q coordinatorUrl "$HOME_DIR/config.json" 2>/dev/null; then
    systemctl restart fedssl-agent.service
    echo "fedssl-agent started: journalctl -u fedssl-agent -f"
  else
    echo "installed; enroll, then: systemctl start fedssl-agent"
  fi
else
  echo "installed $UNIT_DIR/fedssl-agent.service (systemd not running here; start it on the target host)"
fi
