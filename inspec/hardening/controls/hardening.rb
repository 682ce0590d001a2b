# Controls for the gateway owner's hardening (cookbooks/iotgw_hardening, the Ansible role
# cookbooks/ansible/hardening/roles/iotgw_hardening), run by the gateway inside each vendor
# container after every delivery (delivery.hardening.profile), so a vendor's converge that undoes
# them is rolled back. The Lynis test each one answers is in its tag.
#
# Control IDs are referenced by validation policies (allow/deny lists): never rename or reuse
# one. To change what a control means, retire its ID and add a new one (see README.md).

control 'hardening-01' do
  impact 0.7
  title 'Password ageing, hashing rounds and the default umask are set in login.defs'
  tag lynis: %w(AUTH-9286 AUTH-9230 AUTH-9328)

  describe file('/etc/login.defs') do
    its('content') { should match(/^PASS_MAX_DAYS\s+180$/) }
    its('content') { should match(/^PASS_MIN_DAYS\s+1$/) }
    its('content') { should match(/^UMASK\s+027$/) }
    its('content') { should match(/^SHA_CRYPT_MIN_ROUNDS\s+5000$/) }
  end
end

control 'hardening-02' do
  impact 0.7
  title 'No core dumps, from limits or from systemd'
  tag lynis: %w(KRNL-5820)

  describe file('/etc/security/limits.d/iotgw-hardening.conf') do
    its('content') { should match(/^\* hard core 0$/) }
  end

  describe file('/etc/systemd/coredump.conf.d/iotgw-hardening.conf') do
    its('content') { should match(/^Storage=none$/) }
    its('content') { should match(/^ProcessSizeMax=0$/) }
  end
end

control 'hardening-03' do
  impact 0.5
  title 'Idle shells time out after 15 minutes; login shells make no core dumps'
  tag lynis: %w(SHLL-6220 KRNL-5820)

  describe file('/etc/profile.d/iotgw-hardening.sh') do
    its('content') { should match(/^TMOUT=900$/) }
    its('content') { should match(/^readonly TMOUT$/) }
    its('content') { should match(/^ulimit -c 0$/) }
  end
end

control 'hardening-04' do
  impact 0.7
  title 'The container network namespace logs martians, filters reverse paths and ignores redirects'
  tag lynis: %w(KRNL-6000)

  describe file('/etc/sysctl.d/90-iotgw-hardening.conf') do
    its('content') { should match(/^net.ipv4.conf.all.log_martians = 1$/) }
  end

  describe command('sysctl -n net.ipv4.conf.all.log_martians net.ipv4.conf.all.send_redirects net.ipv4.conf.default.accept_redirects net.ipv4.conf.default.accept_source_route') do
    its('stdout') { should match(/\A1\n0\n0\n0\n\z/) }
  end
end

control 'hardening-05' do
  impact 0.3
  title 'Legal banners'
  tag lynis: %w(BANN-7126 BANN-7130)

  describe file('/etc/issue') do
    its('content') { should match(/Authorized use only/) }
  end

  describe file('/etc/issue.net') do
    its('content') { should match(/Authorized use only/) }
  end
end

control 'hardening-06' do
  impact 0.5
  title 'USB and FireWire storage and unused network protocols are never loaded'
  tag lynis: %w(USB-1000 STRG-1846 NETW-3200)

  describe file('/etc/modprobe.d/iotgw-hardening.conf') do
    its('content') { should match(/^install usb-storage \/bin\/false$/) }
    its('content') { should match(/^blacklist firewire-core$/) }
    its('content') { should match(/^install dccp \/bin\/false$/) }
    its('content') { should match(/^install tipc \/bin\/false$/) }
  end
end

control 'hardening-07' do
  impact 0.5
  title 'Every audit and integrity package the hardening ensured is installed'
  desc 'The list is written by the cookbook or role (empty when delivery.hardening.packages is false).'
  tag lynis: %w(PKGS-7370 PKGS-7394 DEB-0280 DEB-0811 DEB-0831 AUTH-9262 ACCT-9622 ACCT-9626 FINT-4350 HRDN-7230 PKGS-7420)

  describe file('/etc/iotgw/hardening-packages.list') do
    it { should exist }
  end

  describe command('for p in $(cat /etc/iotgw/hardening-packages.list); do dpkg -s "$p" 2>/dev/null | grep -q "^Status: install ok installed" || { echo "missing $p"; exit 1; }; done') do
    its('exit_status') { should eq 0 }
  end
end

control 'hardening-08' do
  impact 0.5
  title 'The home of root and the cron directories are for root only; compilers are restricted'
  tag lynis: %w(FILE-7524 HRDN-7222)

  describe directory('/root') do
    its('mode') { should cmp '0700' }
  end

  describe command('for d in /etc/cron.d /etc/cron.daily /etc/cron.hourly /etc/cron.weekly /etc/cron.monthly; do [ ! -d "$d" ] || [ "$(stat -c %a "$d")" = 700 ] || { echo "$d"; exit 1; }; done; for t in as ld cc gcc; do p=$(command -v "$t") || continue; [ "$(stat -c %a "$(readlink -f "$p")")" = 750 ] || { echo "$t"; exit 1; }; done') do
    its('exit_status') { should eq 0 }
  end
end
