# The gateway owner's hardening of a vendor container, converged by iot-gateway-client with
# chef-client in local mode BEFORE the vendor's own run list (delivery.hardening, on by default).
# Equivalent to the Ansible role cookbooks/ansible/hardening/roles/iotgw_hardening; proven by
# inspec/hardening. Each resource names the Lynis test it answers.
# Test machines cannot install chef-client: there, files/default/standin-converge.sh renders this
# recipe as shell for scripts/standins/chef-client-standin.
cfg = node['iotgw_hardening']

# AUTH-9286, AUTH-9230, AUTH-9328
cfg['login_defs'].each do |key, value|
  ruby_block "login.defs #{key}" do
    block do
      f = Chef::Util::FileEdit.new('/etc/login.defs')
      f.search_file_replace_line(/^#?\s*#{key}\s/, "#{key}\t#{value}")
      f.insert_line_if_no_match(/^#{key}\s/, "#{key}\t#{value}")
      f.write_file
    end
    not_if { ::File.readlines('/etc/login.defs').any? { |l| l =~ /^#{key}\s+#{Regexp.escape(value)}\s*$/ } }
  end
end

# KRNL-5820
file '/etc/security/limits.d/iotgw-hardening.conf' do
  content "# managed by the gateway owner's hardening (iotgw_hardening)\n* hard core 0\n* soft core 0\n"
  mode '0644'
end
directory '/etc/systemd/coredump.conf.d'
file '/etc/systemd/coredump.conf.d/iotgw-hardening.conf' do
  content "# managed by the gateway owner's hardening (iotgw_hardening)\n[Coredump]\nStorage=none\nProcessSizeMax=0\n"
  mode '0644'
end

# SHLL-6220, KRNL-5820
file '/etc/profile.d/iotgw-hardening.sh' do
  content "# managed by the gateway owner's hardening (iotgw_hardening)\nTMOUT=900\nreadonly TMOUT\nexport TMOUT\nulimit -c 0\n"
  mode '0644'
end

# KRNL-6000: only the container's own network namespace's sysctls
file '/etc/sysctl.d/90-iotgw-hardening.conf' do
  content cfg['sysctls'].map { |k, v| "#{k} = #{v}\n" }.join
  mode '0644'
  notifies :run, 'execute[apply hardening sysctls]', :immediately
end
execute 'apply hardening sysctls' do
  command 'sysctl -e -p /etc/sysctl.d/90-iotgw-hardening.conf || true'
  action :nothing
end

# BANN-7126, BANN-7130
%w(/etc/issue /etc/issue.net).each do |path|
  file path do
    content cfg['banner']
    mode '0644'
  end
end

# USB-1000, STRG-1846, NETW-3200
directory '/etc/modprobe.d'
file '/etc/modprobe.d/iotgw-hardening.conf' do
  content <<~CONF
    # managed by the gateway owner's hardening (iotgw_hardening)
    install usb-storage /bin/false
    blacklist usb-storage
    blacklist firewire-core
    blacklist firewire-ohci
    install dccp /bin/false
    install sctp /bin/false
    install rds /bin/false
    install tipc /bin/false
  CONF
  mode '0644'
end

# PKGS-7392 and the audit/integrity tools Lynis looks for
directory '/etc/iotgw'
if cfg['install_packages']
  # the updates and packages below are written to the vendor's own disk quota: apt keeps its lists
  # compressed and no downloaded packages, about 90 MB less there
  file '/etc/apt/apt.conf.d/10iotgw-hardening' do
    content <<~CONF
      // managed by the gateway owner's hardening (iotgw_hardening)
      APT::Keep-Downloaded-Packages "false";
      Dir::Cache::srcpkgcache "";
      Acquire::GzipIndexes "true";
    CONF
    mode '0644'
  end
  apt_update 'hardening' do
    frequency 3600
    action :periodic
  end
  execute 'security updates' do
    command 'apt-get -y -o Dpkg::Options::=--force-confold upgrade'
    environment 'DEBIAN_FRONTEND' => 'noninteractive'
    only_if 'apt-get -s upgrade | grep -q "^Inst "'
  end
  package cfg['packages'] do
    options '--no-install-recommends'
  end
  # the idle base image masks the daily apt timers; unattended-upgrades needs them
  %w(apt-daily.timer apt-daily-upgrade.timer).each do |timer|
    systemd_unit timer do
      action [:unmask, :enable]
    end
  end
  file '/etc/default/sysstat' do
    content lazy { ::File.read('/etc/default/sysstat').sub(/^ENABLED=.*$/, 'ENABLED="true"') }
    only_if { ::File.exist?('/etc/default/sysstat') }
  end
end
file '/etc/iotgw/hardening-packages.list' do
  content cfg['install_packages'] ? cfg['packages'].map { |p| "#{p}\n" }.join : ''
  mode '0644'
end

# FILE-7524
%w(/root /etc/cron.d /etc/cron.daily /etc/cron.hourly /etc/cron.weekly /etc/cron.monthly).each do |dir|
  directory dir do
    mode '0700'
    only_if { ::File.directory?(dir) }
  end
end

# HRDN-7222
%w(as ld cc gcc g++ c++ clang).each do |tool|
  execute "restrict #{tool}" do
    command "chmod 0750 \"$(readlink -f \"$(command -v #{tool})\")\""
    only_if "command -v #{tool} && [ \"$(stat -c %a \"$(readlink -f \"$(command -v #{tool})\")\")\" != 750 ]"
  end
end
