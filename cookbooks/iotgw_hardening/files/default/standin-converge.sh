#!/bin/sh
# TEST ONLY: what recipes/default.rb does, as shell, for scripts/standins/chef-client-standin
# (the real chef-client is not installable on test machines and converges the Ruby recipe).
# Attributes arrive from --json-attributes as IOTGW_ATTR_<NAME> (the stand-in exports them).
# Prints one "changed: <resource>" line per resource it changed, like chef-client's resource count.
set -eu
changed() { echo "changed: $1"; }
put() { # put PATH MODE CONTENT
  tmp=$(mktemp)
  printf '%s' "$3" >"$tmp"
  if ! cmp -s "$tmp" "$1"; then install -D -m "$2" -o root -g root "$tmp" "$1"; changed "file[$1]"; fi
  rm -f "$tmp"
}
install_packages=${IOTGW_ATTR_INSTALL_PACKAGES:-true}
packages="libpam-tmpdir libpam-passwdqc apt-listchanges debsums needrestart acct sysstat unattended-upgrades rkhunter aide"

for kv in PASS_MAX_DAYS=180 PASS_MIN_DAYS=1 PASS_WARN_AGE=14 UMASK=027 SHA_CRYPT_MIN_ROUNDS=5000 SHA_CRYPT_MAX_ROUNDS=50000; do
  k=${kv%%=*} v=${kv#*=}
  grep -Eq "^$k[[:space:]]+$v[[:space:]]*\$" /etc/login.defs && continue
  if grep -Eq "^#?[[:space:]]*$k[[:space:]]" /etc/login.defs; then
    sed -i -E "s/^#?[[:space:]]*$k[[:space:]].*/$k\t$v/" /etc/login.defs
  else
    printf '%s\t%s\n' "$k" "$v" >>/etc/login.defs
  fi
  changed "ruby_block[login.defs $k]"
done
put /etc/security/limits.d/iotgw-hardening.conf 0644 "# managed by the gateway owner's hardening (iotgw_hardening)
* hard core 0
* soft core 0
"
put /etc/systemd/coredump.conf.d/iotgw-hardening.conf 0644 "# managed by the gateway owner's hardening (iotgw_hardening)
[Coredump]
Storage=none
ProcessSizeMax=0
"
put /etc/profile.d/iotgw-hardening.sh 0644 "# managed by the gateway owner's hardening (iotgw_hardening)
TMOUT=900
readonly TMOUT
export TMOUT
ulimit -c 0
"
sysctls="net.ipv4.conf.all.forwarding = 0
net.ipv4.conf.all.log_martians = 1
net.ipv4.conf.default.log_martians = 1
net.ipv4.conf.all.rp_filter = 1
net.ipv4.conf.all.send_redirects = 0
net.ipv4.conf.default.send_redirects = 0
net.ipv4.conf.all.accept_redirects = 0
net.ipv4.conf.default.accept_redirects = 0
net.ipv4.conf.all.accept_source_route = 0
net.ipv4.conf.default.accept_source_route = 0
net.ipv6.conf.all.accept_redirects = 0
net.ipv6.conf.default.accept_redirects = 0
"
before=$(cat /etc/sysctl.d/90-iotgw-hardening.conf 2>/dev/null || true)
put /etc/sysctl.d/90-iotgw-hardening.conf 0644 "$sysctls"
[ "$before" = "$(cat /etc/sysctl.d/90-iotgw-hardening.conf)" ] || sysctl -e -p /etc/sysctl.d/90-iotgw-hardening.conf >/dev/null 2>&1 || true
banner="Authorized use only. This IoT gateway container is managed by the gateway owner; activity on it
is monitored and logged. Unauthorized access is prohibited and will be prosecuted.
"
put /etc/issue 0644 "$banner"
put /etc/issue.net 0644 "$banner"
put /etc/modprobe.d/iotgw-hardening.conf 0644 "# managed by the gateway owner's hardening (iotgw_hardening)
install usb-storage /bin/false
blacklist usb-storage
blacklist firewire-core
blacklist firewire-ohci
install dccp /bin/false
install sctp /bin/false
install rds /bin/false
install tipc /bin/false
"
if [ "$install_packages" = true ]; then
  export DEBIAN_FRONTEND=noninteractive
  put /etc/apt/apt.conf.d/10iotgw-hardening 0644 "// managed by the gateway owner's hardening (iotgw_hardening)
APT::Keep-Downloaded-Packages \"false\";
Dir::Cache::srcpkgcache \"\";
Acquire::GzipIndexes \"true\";
"
  apt-get update -qq >/dev/null
  if apt-get -s upgrade | grep -q '^Inst '; then
    apt-get -y -qq -o Dpkg::Options::=--force-confold upgrade >/dev/null; changed "execute[security updates]"
  fi
  missing=""
  for p in $packages; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null; changed "package[$missing ]"
  fi
  for t in apt-daily.timer apt-daily-upgrade.timer; do
    systemctl is-enabled --quiet "$t" 2>/dev/null || { systemctl unmask --quiet "$t"; systemctl enable --quiet "$t"; changed "systemd_unit[$t]"; }
  done
  if [ -f /etc/default/sysstat ] && ! grep -q '^ENABLED="true"' /etc/default/sysstat; then
    sed -i 's/^ENABLED=.*/ENABLED="true"/' /etc/default/sysstat; changed "file[/etc/default/sysstat]"
  fi
  list=$(printf '%s\n' $packages)
  put /etc/iotgw/hardening-packages.list 0644 "$list
"
else
  put /etc/iotgw/hardening-packages.list 0644 ""
fi
for d in /root /etc/cron.d /etc/cron.daily /etc/cron.hourly /etc/cron.weekly /etc/cron.monthly; do
  [ -d "$d" ] || continue
  [ "$(stat -c %a "$d")" = 700 ] || { chmod 0700 "$d"; changed "directory[$d]"; }
done
for t in as ld cc gcc g++ c++ clang; do
  p=$(command -v "$t") || continue
  f=$(readlink -f "$p")
  [ "$(stat -c %a "$f")" = 750 ] || { chmod 0750 "$f"; changed "execute[restrict $t]"; }
done
