"""ROS 2 messages without a ROS install: the message types and their CDR (``msgs``), image messages to
arrays (``images``), bags as a frame source (``bag``), and the segmentation topics written to an MCAP
bag or served to Foxglove (``output``). Needs the ``ros`` extra (cyclonedds, rosbags, mcap,
mcap-ros2-support, foxglove-sdk); importing this package alone needs none of them."""
