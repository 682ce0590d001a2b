default['sensor_agent']['version'] = '1.0.0'
default['sensor_agent']['device'] = '/dev/ttyUSB0'
default['sensor_agent']['interval_seconds'] = 30
