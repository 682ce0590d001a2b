# Installs plug-controller under /opt/plug-controller, run by the unprivileged user plugctl.
user 'plugctl' do
  system true
  shell '/usr/sbin/nologin'
  home '/nonexistent'
end

%w(/opt/plug-controller /opt/plug-controller/bin).each do |d|
  directory d do
    owner 'root'
    group 'root'
    mode '0755'
  end
end

template '/opt/plug-controller/plug-controller.conf' do
  source 'plug-controller.conf.erb'
  owner 'root'
  group 'root'
  mode '0644'
  variables(port: node['plug_controller']['listen_port'])
end

cookbook_file '/opt/plug-controller/bin/plug-controller' do
  source 'plug-controller'
  owner 'root'
  group 'root'
  mode '0755'
end
