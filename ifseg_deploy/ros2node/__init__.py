"""The ROS 2 segmentation node over plain DDS (``ifseg-deploy ros2``): ``dds`` (participants, QoS,
names and ros_discovery_info as ROS 2 expects them) and ``node`` (subscribe, segment the newest frame,
publish; categories changed live). Needs the ``ros`` extra."""
