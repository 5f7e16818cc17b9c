"""Bags in and out (rosbags), synthetic world, datasets of triplets. No rclpy."""
