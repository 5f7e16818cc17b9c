"""Live view pieces without ROS: the trajectory as a path, rate limiting, a Foxglove WebSocket
client (tests, benches, the screenshot) and rendering recorded channels to a PNG. The ROS side
(DDS subscriptions, the Foxglove server) is depth_ego_ros/ros/live_view.py."""
