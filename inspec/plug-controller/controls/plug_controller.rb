# Controls for the plug-controller vendor app, run by the gateway inside the vendor's container
# after the plug_controller recipe converged.
#
# Control IDs are referenced by validation policies (allow/deny lists): never rename or reuse
# one. To change what a control means, retire its ID and add a new one (see README.md).

control 'plug-controller-01' do
  impact 0.7
  title 'plug-controller is installed under /opt/plug-controller'
  desc 'The app and its binaries live in /opt/plug-controller, owned by root and not writable by others.'
  tag app: 'plug-controller'

  describe directory('/opt/plug-controller') do
    it { should exist }
    it { should be_directory }
    it { should be_owned_by 'root' }
    it { should_not be_writable.by('others') }
  end

  describe directory('/opt/plug-controller/bin') do
    it { should be_directory }
  end
end

control 'plug-controller-02' do
  impact 0.7
  title 'plug-controller runs as the system user plugctl'
  desc 'The service account plugctl exists, is a system account and cannot log in.'
  tag app: 'plug-controller'

  describe user('plugctl') do
    it { should exist }
    its('uid') { should cmp < 1000 }
    its('shell') { should match(%r{/(nologin|false)\z}) }
  end
end

control 'plug-controller-03' do
  impact 0.7
  title 'plug-controller configuration file sets listen_port'
  desc '/opt/plug-controller/plug-controller.conf is owned by root, mode 0644, and has a line `listen_port = <number>`.'
  tag app: 'plug-controller'

  describe file('/opt/plug-controller/plug-controller.conf') do
    it { should exist }
    it { should be_file }
    it { should be_owned_by 'root' }
    its('mode') { should cmp '0644' }
    its('content') { should match(/^\s*listen_port\s*=\s*\d+\s*$/) }
  end
end

control 'plug-controller-04' do
  impact 1.0
  title 'plug-controller binary runs and reports its version'
  desc '`/opt/plug-controller/bin/plug-controller --version` exits 0 and prints a version number.'
  tag app: 'plug-controller'

  describe file('/opt/plug-controller/bin/plug-controller') do
    it { should be_file }
    it { should be_executable }
  end

  describe command('/opt/plug-controller/bin/plug-controller --version') do
    its('exit_status') { should eq 0 }
    its('stdout') { should match(/\d+\.\d+\.\d+/) }
  end
end

control 'plug-controller-05' do
  impact 1.0
  title 'plug-controller service is enabled and running'
  desc 'The systemd unit plug-controller.service starts at boot and is active.'
  tag app: 'plug-controller'

  describe systemd_service('plug-controller') do
    it { should be_installed }
    it { should be_enabled }
    it { should be_running }
  end
end
