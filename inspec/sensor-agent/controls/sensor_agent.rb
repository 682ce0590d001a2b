# Controls for the sensor-agent vendor app, run by the gateway inside the vendor's container
# after the sensor_agent recipe converged.
#
# Control IDs are referenced by validation policies (allow/deny lists): never rename or reuse
# one. To change what a control means, retire its ID and add a new one (see README.md).

control 'sensor-agent-01' do
  impact 0.7
  title 'sensor-agent is installed under /opt/sensor-agent'
  desc 'The app and its binaries live in /opt/sensor-agent, owned by root and not writable by others.'
  tag app: 'sensor-agent'

  describe directory('/opt/sensor-agent') do
    it { should exist }
    it { should be_directory }
    it { should be_owned_by 'root' }
    it { should_not be_writable.by('others') }
  end

  describe directory('/opt/sensor-agent/bin') do
    it { should be_directory }
  end
end

control 'sensor-agent-02' do
  impact 0.7
  title 'sensor-agent configuration file is in place with mode 0644'
  desc 'The recipe writes /opt/sensor-agent/sensor-agent.conf, owned by root, mode 0644.'
  tag app: 'sensor-agent'

  describe file('/opt/sensor-agent/sensor-agent.conf') do
    it { should exist }
    it { should be_file }
    it { should be_owned_by 'root' }
    its('mode') { should cmp '0644' }
  end
end

control 'sensor-agent-03' do
  impact 1.0
  title 'sensor-agent binary runs and reports its version'
  desc '`/opt/sensor-agent/bin/sensor-agent --version` exits 0 and prints a version number.'
  tag app: 'sensor-agent'

  describe file('/opt/sensor-agent/bin/sensor-agent') do
    it { should be_file }
    it { should be_executable }
  end

  describe command('/opt/sensor-agent/bin/sensor-agent --version') do
    its('exit_status') { should eq 0 }
    its('stdout') { should match(/\d+\.\d+\.\d+/) }
  end
end

control 'sensor-agent-04' do
  impact 1.0
  title 'sensor-agent service is enabled and running'
  desc 'The systemd unit sensor-agent.service starts at boot and is active.'
  tag app: 'sensor-agent'

  describe systemd_service('sensor-agent') do
    it { should be_installed }
    it { should be_enabled }
    it { should be_running }
  end
end
