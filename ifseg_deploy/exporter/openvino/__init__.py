"""ONNX -> OpenVINO IR folders, verified against PyTorch."""
