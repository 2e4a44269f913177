"""PyTorch -> ONNX: the traced graph, its verification against PyTorch and the graph writer."""
