"""TensorRT: target profiles, the static operator check and the strongly typed engine build."""
