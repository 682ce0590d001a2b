# Installs sensor-agent under /opt/sensor-agent and runs it as a systemd service.
version = node['sensor_agent']['version']

directory '/opt/sensor-agent' do
  owner 'root'
  group 'root'
  mode '0755'
end

directory '/opt/sensor-agent/bin' do
  owner 'root'
  group 'root'
  mode '0755'
end

template '/opt/sensor-agent/bin/sensor-agent' do
  source 'sensor-agent.sh.erb'
  owner 'root'
  group 'root'
  mode '0755'
  variables(version: version)
  notifies :restart, 'service[sensor-agent]'
end

template '/opt/sensor-agent/sensor-agent.conf' do
  source 'sensor-agent.conf.erb'
  owner 'root'
  group 'root'
  mode '0644'
  variables(device: node['sensor_agent']['device'], interval: node['sensor_agent']['interval_seconds'])
  notifies :restart, 'service[sensor-agent]'
end

systemd_unit 'sensor-agent.service' do
  content <<~UNIT
    [Unit]
    Description=Acme sensor-agent
    [Service]
    ExecStart=/opt/sensor-agent/bin/sensor-agent --run
    Restart=on-failure
    [Install]
    WantedBy=multi-user.target
  UNIT
  action [:create, :enable]
end

service 'sensor-agent' do
  action [:enable, :start]
end
