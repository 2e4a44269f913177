"""Export: ONNX graph (run-time vocabulary, parallel decoder), verification, TensorRT engines and target profiles."""
