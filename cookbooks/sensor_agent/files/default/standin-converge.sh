#!/bin/sh
# TEST ONLY: what recipes/default.rb does, as shell, for scripts/standins/chef-client-standin
# (the real chef-client is not installable on test machines and converges the Ruby recipe).
# Prints one "changed: <resource>" line per resource it changed, like chef-client's resource count.
set -eu
BUILD_OK=1
version=${COOKBOOK_VERSION:-1.0.0}
[ "$BUILD_OK" = 1 ] || version="$version-broken"
changed() { echo "changed: $1"; }
for d in /opt/sensor-agent /opt/sensor-agent/bin; do
  [ -d "$d" ] || { install -d -m 0755 -o root -g root "$d"; changed "directory[$d]"; }
done
tmp=$(mktemp)
if [ "$BUILD_OK" = 1 ]; then run='. /opt/sensor-agent/sensor-agent.conf; while true; do [ -c "$device" ] && head -c 16 "$device" >/dev/null 2>&1; sleep "$interval"; done'
else run='echo "sensor-agent: this build is broken" >&2; exit 1'; fi
cat >"$tmp" <<BIN
#!/bin/sh
case "\$1" in
  --version) echo "sensor-agent $version" ;;
  --run) $run ;;
  *) echo "usage: sensor-agent --version|--run" >&2; exit 2 ;;
esac
BIN
if ! cmp -s "$tmp" /opt/sensor-agent/bin/sensor-agent; then
  install -m 0755 -o root -g root "$tmp" /opt/sensor-agent/bin/sensor-agent; changed "template[/opt/sensor-agent/bin/sensor-agent]"
fi
printf '# sensor-agent configuration (managed by Chef)\ndevice=/dev/ttyUSB0\ninterval=30\n' >"$tmp"
if ! cmp -s "$tmp" /opt/sensor-agent/sensor-agent.conf; then
  install -m 0644 -o root -g root "$tmp" /opt/sensor-agent/sensor-agent.conf; changed "template[/opt/sensor-agent/sensor-agent.conf]"
fi
printf '[Unit]\nDescription=Acme sensor-agent\n[Service]\nExecStart=/opt/sensor-agent/bin/sensor-agent --run\n[Install]\nWantedBy=multi-user.target\n' >"$tmp"
if ! cmp -s "$tmp" /etc/systemd/system/sensor-agent.service; then
  install -m 0644 "$tmp" /etc/systemd/system/sensor-agent.service; systemctl daemon-reload; changed "systemd_unit[sensor-agent.service]"
fi
rm -f "$tmp"
systemctl enable --quiet sensor-agent
systemctl restart sensor-agent || true
changed "service[sensor-agent]"
