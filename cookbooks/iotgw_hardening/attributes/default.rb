# Same settings as the Ansible role cookbooks/ansible/hardening/roles/iotgw_hardening/defaults/main.yml.
# The gateway passes install_packages (delivery.hardening.packages) with --json-attributes.
default['iotgw_hardening']['install_packages'] = true
default['iotgw_hardening']['packages'] = %w(
  libpam-tmpdir libpam-passwdqc apt-listchanges debsums needrestart
  acct sysstat unattended-upgrades rkhunter aide
)
default['iotgw_hardening']['login_defs'] = {
  'PASS_MAX_DAYS' => '180', 'PASS_MIN_DAYS' => '1', 'PASS_WARN_AGE' => '14', 'UMASK' => '027',
  'SHA_CRYPT_MIN_ROUNDS' => '5000', 'SHA_CRYPT_MAX_ROUNDS' => '50000'
}
# forwarding first: changing it resets accept_redirects.
default['iotgw_hardening']['sysctls'] = {
  'net.ipv4.conf.all.forwarding' => 0,
  'net.ipv4.conf.all.log_martians' => 1, 'net.ipv4.conf.default.log_martians' => 1,
  'net.ipv4.conf.all.rp_filter' => 1, 'net.ipv4.conf.all.send_redirects' => 0,
  'net.ipv4.conf.default.send_redirects' => 0, 'net.ipv4.conf.all.accept_redirects' => 0,
  'net.ipv4.conf.default.accept_redirects' => 0, 'net.ipv4.conf.all.accept_source_route' => 0,
  'net.ipv4.conf.default.accept_source_route' => 0,
  'net.ipv6.conf.all.accept_redirects' => 0, 'net.ipv6.conf.default.accept_redirects' => 0
}
default['iotgw_hardening']['banner'] = "Authorized use only. This IoT gateway container is managed by the gateway owner; activity on it\n" \
                                      "is monitored and logged. Unauthorized access is prohibited and will be prosecuted.\n"
