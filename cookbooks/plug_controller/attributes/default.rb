default['plug_controller']['version'] = '1.0.0'
default['plug_controller']['listen_port'] = 8765
